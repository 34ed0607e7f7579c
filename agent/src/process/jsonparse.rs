//! JSON lines: a line that is a JSON object becomes attributes (nested objects flattened
//! with dots), and its severity, timestamp and message fields become the record's
//! severity, time and body. A line that is not a JSON object stays plain text (counted
//! by the caller), never dropped.
//!
//! Bounded: `serde_json` refuses nesting deeper than 128; flattening stops at
//! `max_depth` (deeper objects are kept as their JSON text) and at `max_attributes`
//! (the rest are dropped and counted in `vantage.json.dropped_attributes`).

use serde_json::{Map, Value};
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, SeverityNumber};

/// Nesting levels flattened into dotted keys; deeper objects stay JSON text.
pub(crate) const DEFAULT_MAX_DEPTH: usize = 8;
/// Attributes taken from one line: the collector's default per-record limit is 128.
pub(crate) const DEFAULT_MAX_ATTRIBUTES: usize = 100;
/// Field names tried for the severity when none is configured.
const SEVERITY_FIELDS: &[&str] = &["level", "severity", "lvl", "log.level"];
/// Field names tried for the timestamp when none is configured.
const TIMESTAMP_FIELDS: &[&str] = &["time", "timestamp", "ts", "@timestamp"];
/// Field names tried for the message when none is configured.
const MESSAGE_FIELDS: &[&str] = &["msg", "message"];

/// How JSON lines are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonConfig {
    pub(crate) severity_field: Option<String>,
    pub(crate) timestamp_field: Option<String>,
    pub(crate) message_field: Option<String>,
    pub(crate) max_depth: usize,
    pub(crate) max_attributes: usize,
}

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig {
            severity_field: None,
            timestamp_field: None,
            message_field: None,
            max_depth: DEFAULT_MAX_DEPTH,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
        }
    }
}

/// What parsing one line did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The line was a JSON object and was applied to the record.
    pub(crate) parsed: bool,
    /// Attributes left out over `max_attributes`.
    pub(crate) dropped_attributes: u64,
}

/// Parses `line` as a JSON object into `record` (body, severity, time, attributes
/// appended). On anything else the record is left as it is.
pub(crate) fn apply(line: &str, config: &JsonConfig, record: &mut LogRecord) -> Outcome {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return Outcome::default();
    }
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(trimmed) else {
        return Outcome::default();
    };
    let severity = take(&mut map, config.severity_field.as_deref(), SEVERITY_FIELDS);
    if let Some(v) = severity {
        let (number, text) = severity_of(&v);
        record.severity_number = number as i32;
        record.severity_text = text;
    }
    let timestamp = take(
        &mut map,
        config.timestamp_field.as_deref(),
        TIMESTAMP_FIELDS,
    );
    if let Some(v) = &timestamp {
        match time_of(v) {
            Some(ns) => record.time_unix_nano = ns,
            // Unreadable: keep it as an attribute rather than lose it.
            None => {
                map.insert("time".to_string(), v.clone());
            }
        }
    }
    if let Some(msg) = take(&mut map, config.message_field.as_deref(), MESSAGE_FIELDS) {
        record.body = Some(string_value(match msg {
            Value::String(s) => s,
            other => other.to_string(),
        }));
    }
    let mut out = Vec::new();
    let mut dropped = 0u64;
    flatten("", &map, 1, config, &mut out, &mut dropped);
    record.attributes.extend(out);
    Outcome {
        parsed: true,
        dropped_attributes: dropped,
    }
}

fn take(
    map: &mut Map<String, Value>,
    configured: Option<&str>,
    defaults: &[&str],
) -> Option<Value> {
    match configured {
        Some(name) => map.remove(name),
        None => defaults.iter().find_map(|name| map.remove(*name)),
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

fn flatten(
    prefix: &str,
    map: &Map<String, Value>,
    depth: usize,
    config: &JsonConfig,
    out: &mut Vec<KeyValue>,
    dropped: &mut u64,
) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            Value::Object(inner) if depth < config.max_depth => {
                flatten(&key, inner, depth + 1, config, out, dropped);
                continue;
            }
            Value::Null => continue,
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => any_value::Value::IntValue(i),
                None => match n.as_f64() {
                    Some(f) => any_value::Value::DoubleValue(f),
                    None => any_value::Value::StringValue(n.to_string()),
                },
            },
            Value::String(s) => any_value::Value::StringValue(s.clone()),
            // Arrays and objects past the depth limit: their JSON text.
            other => any_value::Value::StringValue(other.to_string()),
        };
        if out.len() >= config.max_attributes {
            *dropped += 1;
            continue;
        }
        out.push(KeyValue {
            key,
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    }
}

/// OTLP severity of a level field: names (any case, common abbreviations), syslog
/// keywords, and the numeric levels of pino/bunyan (10..60).
pub(crate) fn severity_of(v: &Value) -> (SeverityNumber, String) {
    match v {
        Value::Number(n) => {
            let level = n.as_f64().unwrap_or(0.0);
            let number = match level as i64 {
                ..=10 => SeverityNumber::Trace,
                11..=20 => SeverityNumber::Debug,
                21..=30 => SeverityNumber::Info,
                31..=40 => SeverityNumber::Warn,
                41..=50 => SeverityNumber::Error,
                _ => SeverityNumber::Fatal,
            };
            (number, n.to_string())
        }
        Value::String(s) => {
            let number = match s.trim().to_ascii_lowercase().as_str() {
                "trace" | "trc" | "finest" | "finer" => SeverityNumber::Trace,
                "debug" | "dbg" | "fine" | "config" => SeverityNumber::Debug,
                "info" | "inf" | "information" | "informational" | "notice" => SeverityNumber::Info,
                "warn" | "warning" | "wrn" => SeverityNumber::Warn,
                "error" | "err" | "eror" | "severe" => SeverityNumber::Error,
                "fatal" | "critical" | "crit" | "panic" | "alert" | "emerg" | "emergency"
                | "dpanic" => SeverityNumber::Fatal,
                _ => SeverityNumber::Unspecified,
            };
            (number, s.clone())
        }
        other => (SeverityNumber::Unspecified, other.to_string()),
    }
}

/// Nanoseconds since the epoch from an RFC 3339 string or an epoch number (seconds,
/// milliseconds, microseconds or nanoseconds, told apart by magnitude; fractional
/// seconds kept). `None` when unreadable or outside 1970..2262.
pub(crate) fn time_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => epoch_text(&n.to_string()).or_else(|| epoch_ns(n.as_f64()?, None)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            {
                return u64::try_from(t.unix_timestamp_nanos()).ok();
            }
            epoch_text(s).or_else(|| epoch_ns(s.parse().ok()?, None))
        }
        _ => None,
    }
}

/// Exact decimal reading of `123.456` epoch numbers (no float rounding of the
/// fraction); `None` for exponents, signs and anything else.
fn epoch_text(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    if whole == 0 {
        return None;
    }
    // Digits of the fraction that matter at this unit (s: 9, ms: 6, us: 3, ns: 0).
    let (scale, places) = match whole {
        0..100_000_000_000 => (1_000_000_000u64, 9usize),
        100_000_000_000..100_000_000_000_000 => (1_000_000, 6),
        100_000_000_000_000..100_000_000_000_000_000 => (1_000, 3),
        _ => (1, 0),
    };
    let mut frac_ns = 0u64;
    for (i, d) in frac.bytes().take(places).enumerate() {
        frac_ns += u64::from(d - b'0') * 10u64.pow((places - 1 - i) as u32);
    }
    whole.checked_mul(scale)?.checked_add(frac_ns)
}

fn epoch_ns(f: f64, exact: Option<u64>) -> Option<u64> {
    if !f.is_finite() || f <= 0.0 {
        return None;
    }
    // Thresholds: 1e11 s is the year 5138; 1e14 ms, 1e17 us likewise.
    let ns = if f < 1e11 {
        f * 1e9
    } else if f < 1e14 {
        f * 1e6
    } else if f < 1e17 {
        f * 1e3
    } else {
        // Integral nanoseconds: keep them exact when they fit in u64.
        return exact.or_else(|| (f < u64::MAX as f64).then_some(f as u64));
    };
    (ns < u64::MAX as f64).then_some(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn a_json_line_becomes_body_severity_time_and_flat_attributes() {
        let mut r = LogRecord::default();
        let out = apply(
            r#"{"level":"warn","ts":"2026-11-26T04:00:00.5Z","msg":"disk slow","http":{"status":503,"route":{"name":"/x"}},"ok":true,"ratio":0.5,"tags":["a","b"],"nothing":null}"#,
            &JsonConfig::default(),
            &mut r,
        );
        assert!(out.parsed);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.severity_text, "warn");
        assert_eq!(r.time_unix_nano, 1_795_665_600_500_000_000);
        assert_eq!(
            r.body.clone().unwrap().value,
            Some(any_value::Value::StringValue("disk slow".into()))
        );
        assert_eq!(
            attr(&r, "http.status"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr(&r, "http.route.name"),
            Some(&any_value::Value::StringValue("/x".into()))
        );
        assert_eq!(attr(&r, "ok"), Some(&any_value::Value::BoolValue(true)));
        assert_eq!(attr(&r, "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
        assert_eq!(
            attr(&r, "tags"),
            Some(&any_value::Value::StringValue(r#"["a","b"]"#.into()))
        );
        assert!(attr(&r, "nothing").is_none() && attr(&r, "msg").is_none());
    }

    #[test]
    fn configured_fields_and_epoch_units() {
        let config = JsonConfig {
            severity_field: Some("sev".into()),
            timestamp_field: Some("at".into()),
            message_field: Some("text".into()),
            ..Default::default()
        };
        for (at, want) in [
            ("1700000000", 1_700_000_000_000_000_000u64),
            ("1700000000.25", 1_700_000_000_250_000_000),
            ("1700000000123", 1_700_000_000_123_000_000),
            ("1700000000123456789", 1_700_000_000_123_456_789),
            ("\"2023-11-14T22:13:20+01:00\"", 1_699_996_400_000_000_000),
        ] {
            let mut r = LogRecord::default();
            let line = format!(r#"{{"sev":50,"at":{at},"text":{{"a":1}},"level":"x"}}"#);
            assert!(apply(&line, &config, &mut r).parsed);
            assert_eq!(r.time_unix_nano, want, "{at}");
            assert_eq!(r.severity_number, SeverityNumber::Error as i32);
            // The default names are ordinary attributes once others are configured.
            assert!(attr(&r, "level").is_some());
            assert_eq!(
                r.body.clone().unwrap().value,
                Some(any_value::Value::StringValue(r#"{"a":1}"#.into()))
            );
        }
    }

    #[test]
    fn hostile_lines_stay_plain_text() {
        let config = JsonConfig::default();
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let deep_obj = format!(r#"{{"a":{deep}}}"#);
        for line in [
            "not json",
            "{\"unterminated\": ",
            "[1,2,3]",
            "{\"n\": 1e999}",
            deep_obj.as_str(),
            "{\"a\": \"\u{FFFD}\u{FFFD}\"} trailing",
        ] {
            let mut r = LogRecord::default();
            assert!(!apply(line, &config, &mut r).parsed, "{line}");
            assert_eq!(r, LogRecord::default());
        }
        // Huge integers that fit no i64 become doubles, absurd times stay attributes.
        let mut r = LogRecord::default();
        assert!(
            apply(
                r#"{"big":184467440737095516150,"time":-5}"#,
                &config,
                &mut r
            )
            .parsed
        );
        assert!(matches!(
            attr(&r, "big"),
            Some(any_value::Value::DoubleValue(_))
        ));
        assert_eq!(r.time_unix_nano, 0);
        assert!(attr(&r, "time").is_some());
        // Invalid UTF-8 was replaced before parsing; the line still parses.
        let text = String::from_utf8_lossy(b"{\"k\":\"a\xff\xfeb\"}").into_owned();
        let mut r = LogRecord::default();
        assert!(apply(&text, &config, &mut r).parsed);
    }

    #[test]
    fn depth_and_attribute_count_are_bounded() {
        let config = JsonConfig {
            max_depth: 2,
            max_attributes: 3,
            ..Default::default()
        };
        let mut r = LogRecord::default();
        let out = apply(
            r#"{"a":{"b":{"c":1}},"d":1,"e":2,"f":3,"g":4}"#,
            &config,
            &mut r,
        );
        assert_eq!(r.attributes.len(), 3);
        assert_eq!(out.dropped_attributes, 2);
        assert_eq!(
            attr(&r, "a.b"),
            Some(&any_value::Value::StringValue(r#"{"c":1}"#.into()))
        );
    }

    fn json_tree() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            proptest::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    /// Counts the leaves a full flattening would produce.
    fn leaves(v: &Value) -> usize {
        match v {
            Value::Object(m) => m.values().map(leaves).sum(),
            Value::Null => 0,
            _ => 1,
        }
    }

    proptest! {
        /// Whatever the object: every leaf becomes exactly one dotted attribute (or is
        /// counted as dropped), keys are unique, and a leaf's value is found again by
        /// walking its dotted path.
        #[test]
        fn flattening_keeps_every_leaf_once(tree in proptest::collection::btree_map("[a-c]{1,2}", json_tree(), 0..5)) {
            let object = Value::Object(tree.into_iter().collect());
            let config = JsonConfig { max_depth: 16, max_attributes: 1000, message_field: Some("\u{0}".into()), severity_field: Some("\u{0}".into()), timestamp_field: Some("\u{0}".into()) };
            let mut r = LogRecord::default();
            let out = apply(&object.to_string(), &config, &mut r);
            prop_assert!(out.parsed);
            prop_assert_eq!(r.attributes.len() + out.dropped_attributes as usize, leaves(&object));
            let keys: std::collections::HashSet<_> = r.attributes.iter().map(|kv| kv.key.clone()).collect();
            prop_assert_eq!(keys.len(), r.attributes.len());
            for kv in &r.attributes {
                let mut at = &object;
                for part in kv.key.split('.') {
                    at = &at[part];
                }
                let got = kv.value.as_ref().and_then(|v| v.value.clone());
                let want = match at {
                    Value::Bool(b) => any_value::Value::BoolValue(*b),
                    Value::Number(n) => any_value::Value::IntValue(n.as_i64().unwrap()),
                    Value::String(s) => any_value::Value::StringValue(s.clone()),
                    other => return Err(TestCaseError::fail(format!("{other}"))),
                };
                prop_assert_eq!(got, Some(want));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(line in "\\PC{0,200}") {
            let mut r = LogRecord::default();
            let _ = apply(&line, &JsonConfig::default(), &mut r);
        }
    }
}
