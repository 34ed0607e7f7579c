//! Prometheus rule files (`groups:` of alerting and recording rules), accepted and
//! refused as Prometheus 2.42's `promtool check rules` does, with every problem of a
//! file reported at once with its line.
//!
//! The YAML is read with serde (unknown fields, wrong types and duplicate keys are
//! errors with a position, as yaml.v3's strict decoder makes them in Prometheus); the
//! checks after that follow `rulefmt.RuleNode.Validate`. Their positions come from a
//! second, targeted pass: `locate` walks the document to the node a problem is about
//! and lets the YAML deserializer report where that node starts.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::logrule::{self, LogCondition};
use super::template::Template;

/// One problem in a rule file: where (1-based line and column, when known) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the node the problem is about.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong, in Prometheus's words where Prometheus has them.
    pub message: String,
}

/// Why a rule file (or an API rule group) was refused: every problem found in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RuleFileError {
    /// The file (or `namespace` for API rules).
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for RuleFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, p.message)?,
                (Some(l), None) => write!(f, "{}:{l}: {}", self.file, p.message)?,
                _ => write!(f, "{}: {}", self.file, p.message)?,
            }
        }
        Ok(())
    }
}

/// A validated rule group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleGroup {
    /// Unique within its file.
    pub name: String,
    /// Evaluation interval as written (`30s`); `None` = the configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Most alerts (alerting rule) or series (recording rule) one rule may produce;
    /// 0 = no limit. Over the limit, the rule's evaluation fails, as in Prometheus.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// The rules, evaluated in this order.
    pub rules: Vec<Rule>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl RuleGroup {
    /// The interval in milliseconds, if the group sets one (`0` means "default").
    pub fn interval_ms(&self) -> Option<i64> {
        self.interval
            .as_deref()
            .and_then(|s| parse_duration_ms(s).ok())
            .filter(|ms| *ms > 0)
    }
}

/// One rule, as written plus what validation derived from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// Recording rule: the series name to write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Alerting rule: the alert name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The PromQL expression.
    pub expr: String,
    /// `for` as written.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// `keep_firing_for` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Labels added to the output (alert labels are templates).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Alert annotations (templates).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// For a log rule (`vantage_log_count{...} > N`), the parsed condition.
    #[serde(skip)]
    pub log: Option<LogCondition>,
}

impl Rule {
    /// `for` in milliseconds (0 when absent).
    pub fn for_ms(&self) -> i64 {
        self.for_
            .as_deref()
            .and_then(|s| parse_duration_ms(s).ok())
            .unwrap_or(0)
    }

    /// `keep_firing_for` in milliseconds (0 when absent).
    pub fn keep_firing_for_ms(&self) -> i64 {
        self.keep_firing_for
            .as_deref()
            .and_then(|s| parse_duration_ms(s).ok())
            .unwrap_or(0)
    }

    /// The alert or record name.
    pub fn name(&self) -> &str {
        self.alert
            .as_deref()
            .or(self.record.as_deref())
            .unwrap_or("")
    }
}

/// Parses Prometheus's `model.Duration` (`1h30m`, `90s`, `0`; units y w d h m s ms,
/// largest first, integers only) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration string".to_string());
    }
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("not a valid duration string: {s:?}");
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let (mut i, mut total, mut next) = (0usize, 0i64, 0usize);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let n: i64 = s[start..i].parse().map_err(|_| bad())?;
        let u_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[u_start..i];
        let pos = UNITS[next..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(bad)?;
        let (_, ms) = UNITS[next + pos];
        next += pos + 1;
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_string())?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------
// The YAML as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Option<Vec<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default, deserialize_with = "scalar")]
    name: String,
    #[serde(default, deserialize_with = "opt_scalar")]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    rules: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, deserialize_with = "scalar")]
    record: String,
    #[serde(default, deserialize_with = "scalar")]
    alert: String,
    #[serde(default, deserialize_with = "scalar")]
    expr: String,
    #[serde(default, rename = "for", deserialize_with = "opt_scalar")]
    for_: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: Option<StrMap>,
    #[serde(default)]
    annotations: Option<StrMap>,
}

/// A YAML scalar read as text, as yaml.v3 decodes any scalar into a Go string.
struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(super::gofmt::format_g(v, None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(ScalarVisitor)
}

fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(ScalarVisitor).map(Some)
}

/// A string-to-string map that refuses duplicate keys (yaml.v3 does).
struct StrMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrMap, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<StrMap, E> {
                Ok(StrMap(BTreeMap::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrMap, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key_seed(ScalarSeed)? {
                    let v = map.next_value_seed(ScalarSeed)?;
                    if out.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format!(
                            "mapping key {k:?} already defined"
                        )));
                    }
                }
                Ok(StrMap(out))
            }
        }
        d.deserialize_any(V)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

// ---------------------------------------------------------------------------------
// Locating nodes.

/// One step of a path into the document.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

const PROBE: &str = "\u{0}vantage-probe";

struct Probe<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! probe_scalar {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _v: $t) -> Result<(), E> {
            if self.0.is_empty() { Err(E::custom(PROBE)) } else { Ok(()) }
        })*
    };
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    probe_scalar!(visit_str: &str, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_bool: bool);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(PROBE))
        } else {
            Ok(())
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(PROBE));
        };
        while let Some(k) = map.next_key_seed(ScalarSeed)? {
            if &k == want {
                return map.next_value_seed(Probe(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(PROBE));
        };
        let mut i = 0;
        loop {
            if i == *want {
                seq.next_element_seed(Probe(rest))?;
                return Ok(());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Where the node at `path` starts in the first document of `text`.
fn locate(text: &str, path: &[Seg]) -> (Option<usize>, Option<usize>) {
    let Some(doc) = serde_yaml_ng::Deserializer::from_str(text).next() else {
        return (None, None);
    };
    match Probe(path).deserialize(doc) {
        Err(e) if e.to_string().contains(PROBE) => match e.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        },
        _ => (None, None),
    }
}

/// The field of serde's "duplicate field `x`" message.
fn duplicate_field(message: &str) -> Option<&str> {
    let rest = message.split("duplicate field `").nth(1)?;
    rest.split('`').next()
}

/// The line of the second `key:` at `column` from line `from` on (both 1-based).
fn second_key_line(text: &str, from: usize, column: usize, key: &str) -> Option<usize> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let Some(rest) = line.get(column.saturating_sub(1)..) else {
            continue;
        };
        if rest.starts_with(key) && rest[key.len()..].trim_start().starts_with(':') {
            seen += 1;
            if seen == 2 {
                return Some(i + 1);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------
// Validation.

/// What validation needs from outside: whether a log query parses.
pub type LogQueryCheck<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// Parses and validates a rule file. `file` names it in messages. Every problem is
/// reported, each with its line where the YAML has one.
pub fn parse_rule_file(
    file: &str,
    text: &str,
    check_log_query: LogQueryCheck<'_>,
) -> Result<Vec<RuleGroup>, RuleFileError> {
    let fail = |problems| RuleFileError {
        file: file.to_string(),
        problems,
    };
    // yaml.v3's Decoder reads the first document only; an empty file has no groups.
    let raw = match serde_yaml_ng::Deserializer::from_str(text).next() {
        None => return Ok(Vec::new()),
        Some(doc) => match Option::<RawFile>::deserialize(doc) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                let loc = e.location();
                let message = e.to_string();
                // serde_yaml_ng appends " at line X column Y"; keep the reason only.
                let message = match message.find(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                let mut line = loc.as_ref().map(|l| l.line());
                let mut column = loc.as_ref().map(|l| l.column());
                // serde names a duplicate field at its mapping; point at the repeat,
                // as yaml.v3 does.
                if let (Some(l), Some(c), Some(key)) = (line, column, duplicate_field(&message))
                    && let Some(repeat) = second_key_line(text, l, c, key)
                {
                    line = Some(repeat);
                    column = Some(c);
                }
                return Err(fail(vec![Problem {
                    line,
                    column,
                    message,
                }]));
            }
        },
    };
    let mut problems: Vec<(Vec<Seg>, String)> = Vec::new();
    let mut groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (gi, g) in raw.groups.unwrap_or_default().into_iter().enumerate() {
        let gpath = vec![Seg::Key("groups".into()), Seg::Index(gi)];
        if g.name.is_empty() {
            problems.push((gpath.clone(), "Groupname must not be empty".to_string()));
        }
        if !seen.insert(g.name.clone()) {
            problems.push((
                gpath.clone(),
                format!("groupname: {:?} is repeated in the same file", g.name),
            ));
        }
        if let Some(i) = &g.interval
            && let Err(e) = parse_duration_ms(i)
        {
            let mut p = gpath.clone();
            p.push(Seg::Key("interval".into()));
            problems.push((p, e));
        }
        let mut rules = Vec::new();
        for (ri, r) in g.rules.unwrap_or_default().into_iter().enumerate() {
            let mut rpath = gpath.clone();
            rpath.push(Seg::Key("rules".into()));
            rpath.push(Seg::Index(ri));
            let name = if r.alert.is_empty() {
                &r.record
            } else {
                &r.alert
            };
            let prefix = format!("group {:?}, rule {}, {:?}: ", g.name, ri + 1, name);
            let mut push = |field: Option<&str>, key: Option<&str>, msg: String| {
                let mut p = rpath.clone();
                if let Some(f) = field {
                    p.push(Seg::Key(f.to_string()));
                }
                if let Some(k) = key {
                    p.push(Seg::Key(k.to_string()));
                }
                problems.push((p, format!("{prefix}{msg}")));
            };
            let rule = validate_rule(r, &mut push, check_log_query);
            if let Some(rule) = rule {
                rules.push(rule);
            }
        }
        groups.push(RuleGroup {
            name: g.name,
            interval: g.interval,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    if problems.is_empty() {
        return Ok(groups);
    }
    Err(fail(
        problems
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = locate(text, &path);
                Problem {
                    line,
                    column,
                    message,
                }
            })
            .collect(),
    ))
}

/// Receives a rule's problems: the field and key they are about, and the reason.
type ProblemSink<'a> = &'a mut dyn FnMut(Option<&str>, Option<&str>, String);

fn validate_rule(
    r: RawRule,
    push: ProblemSink<'_>,
    check_log_query: LogQueryCheck<'_>,
) -> Option<Rule> {
    let mut ok = true;
    let mut bad = |field: Option<&str>, key: Option<&str>, msg: String| {
        push(field, key, msg);
        ok = false;
    };
    if !r.record.is_empty() && !r.alert.is_empty() {
        bad(
            Some("record"),
            None,
            "only one of 'record' and 'alert' must be set".into(),
        );
    }
    if r.record.is_empty() && r.alert.is_empty() {
        bad(None, None, "one of 'record' or 'alert' must be set".into());
    }
    if r.expr.is_empty() {
        bad(None, None, "field 'expr' must be set in rule".into());
    } else if let Err(e) = vantage_storage::metrics::promql::format_query(&r.expr) {
        bad(
            Some("expr"),
            None,
            format!("could not parse expression: {e}"),
        );
    }
    let labels = r.labels.map(|m| m.0).unwrap_or_default();
    let annotations = r.annotations.map(|m| m.0).unwrap_or_default();
    for (field, value) in [("for", &r.for_), ("keep_firing_for", &r.keep_firing_for)] {
        if let Some(v) = value
            && let Err(e) = parse_duration_ms(v)
        {
            bad(Some(field), None, e);
        }
    }
    let nonzero = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|s| parse_duration_ms(s).is_ok_and(|ms| ms != 0))
    };
    if !r.record.is_empty() {
        if !annotations.is_empty() {
            bad(
                Some("record"),
                None,
                "invalid field 'annotations' in recording rule".into(),
            );
        }
        if nonzero(&r.for_) {
            bad(
                Some("record"),
                None,
                "invalid field 'for' in recording rule".into(),
            );
        }
        if nonzero(&r.keep_firing_for) {
            bad(
                Some("record"),
                None,
                "invalid field 'keep_firing_for' in recording rule".into(),
            );
        }
        if !vantage_proto::prom::names::is_valid_metric_name(&r.record) {
            bad(
                Some("record"),
                None,
                format!("invalid recording rule name: {}", r.record),
            );
        }
    }
    for k in labels.keys() {
        if !vantage_proto::prom::names::is_valid_label_name(k) || k == "__name__" {
            bad(Some("labels"), Some(k), format!("invalid label name: {k}"));
        }
    }
    for k in annotations.keys() {
        if !vantage_proto::prom::names::is_valid_label_name(k) {
            bad(
                Some("annotations"),
                Some(k),
                format!("invalid annotation name: {k}"),
            );
        }
    }
    if !r.alert.is_empty() {
        let tname = format!("__alert_{}", r.alert);
        for (k, v) in &labels {
            if let Err(e) = Template::parse(&tname, v) {
                bad(Some("labels"), Some(k), format!("label {k:?}: {e}"));
            }
        }
        for (k, v) in &annotations {
            if let Err(e) = Template::parse(&tname, v) {
                bad(
                    Some("annotations"),
                    Some(k),
                    format!("annotation {k:?}: {e}"),
                );
            }
        }
    }
    let mut log = None;
    if logrule::mentions_log_metric(&r.expr) {
        if !r.record.is_empty() {
            bad(
                Some("expr"),
                None,
                format!(
                    "{} is reserved for log rules, which must be alerting rules",
                    logrule::LOG_METRIC
                ),
            );
        } else {
            match logrule::parse_condition(&r.expr) {
                Ok(c) => match check_log_query(&c.query) {
                    Ok(()) => log = Some(c),
                    Err(e) => bad(
                        Some("expr"),
                        None,
                        format!("invalid log query {:?}: {e}", c.query),
                    ),
                },
                Err(e) => bad(Some("expr"), None, e),
            }
        }
    }
    if !ok {
        return None;
    }
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Some(Rule {
        record: opt(r.record),
        alert: opt(r.alert),
        expr: r.expr,
        for_: r.for_,
        keep_firing_for: r.keep_firing_for,
        labels,
        annotations,
        log,
    })
}

/// Renders groups as a rule file (`groups: [...]`), for the API's YAML answers.
pub fn to_yaml(groups: &[RuleGroup]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        groups: &'a [RuleGroup],
    }
    serde_yaml_ng::to_string(&Out { groups }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_log_check(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn parse(text: &str) -> Result<Vec<RuleGroup>, RuleFileError> {
        parse_rule_file("f.yml", text, &no_log_check)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_file_parses() {
        let g = parse(
            "groups:\n  - name: g\n    interval: 30s\n    limit: 10\n    rules:\n      - alert: High\n        expr: up > 1\n        for: 1m\n        keep_firing_for: 5m\n        labels: {severity: page}\n        annotations:\n          summary: '{{ $labels.instance }} is {{ $value | humanize }}'\n      - record: job:up:sum\n        expr: sum by (job) (up)\n",
        )
        .unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].interval_ms(), Some(30_000));
        assert_eq!(g[0].limit, 10);
        assert_eq!(g[0].rules[0].for_ms(), 60_000);
        assert_eq!(g[0].rules[0].keep_firing_for_ms(), 300_000);
        assert_eq!(g[0].rules[1].record.as_deref(), Some("job:up:sum"));
        // Round trip through the YAML the API returns.
        let again = parse(&to_yaml(&g)).unwrap();
        assert_eq!(again, g);
    }

    #[test]
    fn empty_and_scalar_forms_are_accepted_like_yaml_v3() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
        assert!(parse("groups:\n").unwrap().is_empty());
        let g = parse("groups:\n- name: g\n  rules:\n  - record: a\n    expr: 5\n  - alert: b\n    expr: up\n    annotations: {x: 5}\n").unwrap();
        assert_eq!(g[0].rules[0].expr, "5");
        assert_eq!(g[0].rules[1].annotations["x"], "5");
    }

    #[test]
    fn problems_carry_lines_and_prometheus_reasons() {
        let e = error(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        severity: page\n",
        );
        assert!(e.starts_with("f.yml:6:"), "{e}");
        assert!(e.contains("severity"), "{e}");
        let e = error(
            "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: up\n  - name: g\n    rules:\n      - record: a:c\n        expr: up\n",
        );
        assert_eq!(
            e,
            "f.yml:6:5: groupname: \"g\" is repeated in the same file"
        );
        let e = error("groups:\n  - name: g\n    rules:\n      - record: 1abc\n        expr: up\n");
        assert_eq!(
            e,
            "f.yml:4:17: group \"g\", rule 1, \"1abc\": invalid recording rule name: 1abc"
        );
        let e = error(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          summary: \"{{ $labels.instance \"\n",
        );
        assert_eq!(
            e,
            "f.yml:7:20: group \"g\", rule 1, \"A\": annotation \"summary\": template: __alert_A:1: unclosed action"
        );
        let e = error("groups:\n  - name: g\n    rules:\n      - expr: up\n");
        assert!(e.contains("one of 'record' or 'alert' must be set"), "{e}");
        let e = error("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(up\n");
        assert!(
            e.starts_with("f.yml:5:15: group \"g\", rule 1, \"A\": could not parse expression"),
            "{e}"
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let e = parse("groups:\n- name: ''\n  rules:\n  - record: a\n    alert: b\n    expr: up\n  - alert: c\n    expr: up\n    labels: {bad-name: x}\n    for: 5\n").unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
    }

    #[test]
    fn durations_are_prometheus_model_durations() {
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("1.5m").is_err());
        assert!(parse_duration_ms("1m1h").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999y").is_err());
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_are_refused_with_a_line() {
        let e = error("groups:\n  - name: g\n    name: h\n    rules: []\n");
        assert!(e.starts_with("f.yml:"), "{e}");
        let e = error(
            "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    labels:\n      x: 1\n      x: 2\n",
        );
        assert!(e.contains("already defined"), "{e}");
        let e = error("groups:\n  - name: g\n   rules: [\n");
        assert!(e.starts_with("f.yml:"), "{e}");
    }
}
