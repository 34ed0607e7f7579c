//! A parser for the Prometheus text exposition format 0.0.4, written for outside input:
//! every error names its line, nothing panics, nothing is unbounded beyond the body the
//! caller already limited.
//!
//! Written here rather than taken from crates.io: the parsers there (`prometheus-parse`,
//! `prom_text_format_parser`, `prometheus-exposition-format-rs`, `openmetrics-parser`)
//! are single-release or unmaintained, report no line numbers, and either accept
//! malformed label sets silently or reject valid ones; this one follows Prometheus's own
//! `textparse` rules (which is what a target is tested against).
//!
//! Rules: `# HELP name text` (escapes `\\` and `\n`) and `# TYPE name type` start a
//! family; other `#` lines are comments. A sample is `name{labels} value [timestamp_ms]`;
//! label values escape `\\`, `\"` and `\n`, and any other escape is an error, as in
//! Prometheus. Values follow Go's `ParseFloat` (`+Inf`, `-Inf`, `NaN`, exponents).
//! Samples of a histogram (`_bucket` with `le`, `_sum`, `_count`) and of a summary
//! (with `quantile`, `_sum`, `_count`) join their family; a sample without a
//! preceding `TYPE` forms an untyped family. The whole scrape fails on the first error,
//! as Prometheus fails it; a sample repeated with the same name and labels keeps its
//! first value and is counted in [`Exposition::duplicates`].
//!
//! OpenMetrics bodies (what `prometheus-client` and the collector's own `/metrics`
//! serve whatever the `Accept` header says) are read too, as far as they share the
//! text format: a counter family `x` takes `x_total` samples, `_created` samples are
//! dropped (counted in [`Exposition::created`]), `unknown` is untyped, `info` takes
//! `x_info`, `# EOF` and `# UNIT` are comments, and an exemplar (` # {...} v`) after a
//! value is ignored. Timestamps are read as 0.0.4 milliseconds.

use std::collections::HashSet;

/// Longest line accepted. Prometheus has no limit, but a line this long is a broken
/// exporter, and refusing it keeps one label value from becoming the agent's memory.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most labels on one sample; Prometheus's `label_limit` is unlimited by default, but
/// more than this is an attack or a bug.
pub(crate) const MAX_LABELS: usize = 256;

/// The type a `# TYPE` line declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// The full sample name (`x_bucket`, `x_sum` ... for histograms).
    pub(crate) name: String,
    /// Labels in line order, unescaped, names unique.
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
    /// Milliseconds since the epoch, when the line has one.
    pub(crate) timestamp_ms: Option<i64>,
}

/// A metric family: its `TYPE`, `HELP` and samples.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Family {
    pub(crate) name: String,
    pub(crate) kind: MetricType,
    pub(crate) help: Option<String>,
    pub(crate) samples: Vec<Sample>,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Exposition {
    pub(crate) families: Vec<Family>,
    /// Samples dropped because an earlier one had the same name and labels.
    pub(crate) duplicates: u64,
    /// OpenMetrics `_created` samples dropped.
    pub(crate) created: u64,
}

impl Exposition {
    /// Samples kept, all families.
    pub(crate) fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// A parse failure, naming the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A float as Go's `strconv.ParseFloat` reads it for the exposition format.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also takes "infinity" and "nan" spelled otherwise; Go takes those too, but
    // digits are all that remain to check here.
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Which family a sample name belongs to, given the current family.
fn belongs(current: &Family, sample: &str) -> bool {
    if sample == current.name {
        // A histogram's bare name is an error reported by the caller, with its line.
        return true;
    }
    let Some(suffix) = sample.strip_prefix(current.name.as_str()) else {
        return false;
    };
    match current.kind {
        MetricType::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count" | "_created"),
        MetricType::Summary => matches!(suffix, "_sum" | "_count" | "_created"),
        MetricType::Counter => matches!(suffix, "_total" | "_created"),
        MetricType::Untyped => suffix == "_info",
        MetricType::Gauge => false,
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn token(&mut self) -> &'a [u8] {
        self.take_while(|c| c != b' ' && c != b'\t')
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Reads a quoted label value after its opening quote, unescaping.
fn label_value(c: &mut Cursor<'_>) -> Result<String, String> {
    let mut out = Vec::new();
    loop {
        match c.peek() {
            None => return Err("unterminated label value (missing closing quote)".into()),
            Some(b'"') => {
                c.i += 1;
                return utf8(&out, "label value");
            }
            Some(b'\\') => {
                c.i += 1;
                match c.peek() {
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'"') => out.push(b'"'),
                    Some(b'n') => out.push(b'\n'),
                    Some(other) => {
                        return Err(format!(
                            "invalid escape sequence \\{} in label value",
                            char::from(other).escape_default()
                        ));
                    }
                    None => return Err("unterminated label value (missing closing quote)".into()),
                }
                c.i += 1;
            }
            Some(b) => {
                out.push(b);
                c.i += 1;
            }
        }
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut c = Cursor {
        s: line.as_bytes(),
        i: 0,
    };
    if !c.peek().is_some_and(is_name_start) {
        return Err(format!(
            "expected a metric name, found {:?}",
            line.chars().next().unwrap_or(' ')
        ));
    }
    let name = utf8(c.take_while(is_name_char), "metric name")?;
    c.skip_blank();
    let mut labels: Vec<(String, String)> = Vec::new();
    if c.peek() == Some(b'{') {
        c.i += 1;
        loop {
            c.skip_blank();
            match c.peek() {
                Some(b'}') => {
                    c.i += 1;
                    break;
                }
                Some(b) if is_label_start(b) => {}
                Some(b) => {
                    return Err(format!(
                        "expected a label name or '}}', found {:?}",
                        char::from(b)
                    ));
                }
                None => return Err("unterminated label set (missing '}')".into()),
            }
            let lname = utf8(c.take_while(is_label_char), "label name")?;
            c.skip_blank();
            if c.peek() != Some(b'=') {
                return Err(format!("expected '=' after label name {lname:?}"));
            }
            c.i += 1;
            c.skip_blank();
            if c.peek() != Some(b'"') {
                return Err(format!(
                    "expected '\"' to open the value of label {lname:?}"
                ));
            }
            c.i += 1;
            let value = label_value(&mut c)?;
            if labels.iter().any(|(n, _)| *n == lname) {
                return Err(format!("duplicate label name {lname:?}"));
            }
            if lname == "__name__" {
                return Err("label name \"__name__\" is reserved".into());
            }
            if labels.len() >= MAX_LABELS {
                return Err(format!("more than {MAX_LABELS} labels"));
            }
            labels.push((lname, value));
            c.skip_blank();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b'}') => {}
                Some(b) => {
                    return Err(format!(
                        "expected ',' or '}}' after a label value, found {:?}",
                        char::from(b)
                    ));
                }
                None => return Err("unterminated label set (missing '}')".into()),
            }
        }
    }
    c.skip_blank();
    let value_text = utf8(c.token(), "value")?;
    if value_text.is_empty() {
        return Err(format!("sample {name:?} has no value"));
    }
    let value =
        parse_float(&value_text).ok_or_else(|| format!("value {value_text:?} is not a number"))?;
    c.skip_blank();
    let timestamp_ms = if c.peek().is_some() && c.peek() != Some(b'#') {
        let t = utf8(c.token(), "timestamp")?;
        let ts = t
            .parse::<i64>()
            .map_err(|_| format!("timestamp {t:?} is not an integer (milliseconds)"))?;
        c.skip_blank();
        if c.peek().is_some() && c.peek() != Some(b'#') {
            return Err("unexpected text after the timestamp".into());
        }
        Some(ts)
    } else {
        None
    };
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Parses a whole scrape body.
pub(crate) fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut typed: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line_no = n + 1;
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        if raw.len() > MAX_LINE_BYTES {
            return Err(err(format!(
                "line is {} bytes, over the limit of {MAX_LINE_BYTES}",
                raw.len()
            )));
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.trim_end().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            let (keyword, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let rest = rest.trim_start_matches([' ', '\t']);
            let (name, arg) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if name.is_empty()
                || !name.bytes().next().is_some_and(is_name_start)
                || !name.bytes().all(is_name_char)
            {
                return Err(err(format!(
                    "{keyword} line has an invalid metric name {name:?}"
                )));
            }
            let new_family = out.families.last().is_none_or(|f| f.name != name);
            if keyword == "TYPE" {
                let kind = match arg.trim() {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "summary" => MetricType::Summary,
                    "untyped" | "unknown" | "info" | "stateset" => MetricType::Untyped,
                    other => return Err(err(format!("unknown metric type {other:?}"))),
                };
                if !typed.insert(name.to_string()) {
                    return Err(err(format!("second TYPE line for metric {name:?}")));
                }
                if !new_family && out.families.last().is_some_and(|f| !f.samples.is_empty()) {
                    return Err(err(format!("TYPE line for {name:?} after its samples")));
                }
                if new_family {
                    out.families.push(Family {
                        name: name.to_string(),
                        kind,
                        help: None,
                        samples: Vec::new(),
                    });
                } else if let Some(f) = out.families.last_mut() {
                    f.kind = kind;
                }
            } else {
                if !helped.insert(name.to_string()) {
                    return Err(err(format!("second HELP line for metric {name:?}")));
                }
                let mut help = String::with_capacity(arg.len());
                let mut chars = arg.chars();
                while let Some(ch) = chars.next() {
                    if ch == '\\' {
                        match chars.next() {
                            Some('n') => help.push('\n'),
                            Some('\\') => help.push('\\'),
                            Some(other) => {
                                help.push('\\');
                                help.push(other);
                            }
                            None => help.push('\\'),
                        }
                    } else {
                        help.push(ch);
                    }
                }
                if new_family {
                    out.families.push(Family {
                        name: name.to_string(),
                        kind: MetricType::Untyped,
                        help: Some(help),
                        samples: Vec::new(),
                    });
                } else if let Some(f) = out.families.last_mut() {
                    f.help = Some(help);
                }
            }
            continue;
        }
        let sample = parse_sample(line.trim_end_matches([' ', '\t'])).map_err(err)?;
        let joins = out
            .families
            .last()
            .is_some_and(|f| belongs(f, &sample.name));
        if !joins {
            if typed.contains(&sample.name) {
                return Err(err(format!(
                    "samples of {:?} are not together with its TYPE line",
                    sample.name
                )));
            }
            out.families.push(Family {
                name: sample.name.clone(),
                kind: MetricType::Untyped,
                help: None,
                samples: Vec::new(),
            });
        }
        let Some(family) = out.families.last_mut() else {
            continue;
        };
        match family.kind {
            MetricType::Histogram if sample.name.ends_with("_bucket") => {
                match label(&sample, "le").map(parse_float) {
                    Some(Some(le)) if !le.is_nan() => {}
                    Some(_) => return Err(err("bucket with an invalid \"le\" label".into())),
                    None => return Err(err("histogram bucket without an \"le\" label".into())),
                }
            }
            MetricType::Histogram if sample.name == family.name => {
                return Err(err(format!(
                    "histogram {:?} sample without _bucket, _sum or _count",
                    family.name
                )));
            }
            MetricType::Summary if sample.name == family.name => {
                match label(&sample, "quantile").map(parse_float) {
                    Some(Some(q)) if (0.0..=1.0).contains(&q) => {}
                    Some(_) => return Err(err("invalid \"quantile\" label".into())),
                    None => {
                        return Err(err("summary sample without a \"quantile\" label".into()));
                    }
                }
            }
            _ => {}
        }
        if family.name != sample.name && sample.name.ends_with("_created") {
            out.created += 1;
            continue;
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !seen.insert((sample.name.clone(), key_labels)) {
            out.duplicates += 1;
            continue;
        }
        family.samples.push(sample);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 2.5e+06
node_cpu_seconds_total{cpu="0",mode="user"} 1234.5 1700000000000
# HELP http_request_duration_seconds A histogram.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# A plain comment
metric_without_type_or_help{path="C:\\DIR\\FILE.TXT",err="Cannot find file:\n\"FILE.TXT\""} -Inf
"#;

    #[test]
    fn the_format_documents_example_parses_into_families() {
        let e = parse(NODE).unwrap();
        let names: Vec<(&str, MetricType, usize)> = e
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples.len()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("node_cpu_seconds_total", MetricType::Counter, 2),
                ("http_request_duration_seconds", MetricType::Histogram, 5),
                ("rpc_duration_seconds", MetricType::Summary, 4),
                ("metric_without_type_or_help", MetricType::Untyped, 1),
            ]
        );
        let f = &e.families[0];
        assert_eq!(
            f.help.as_deref(),
            Some("Seconds the CPUs spent in each mode.")
        );
        assert_eq!(f.samples[0].value, 2.5e6);
        assert_eq!(f.samples[1].timestamp_ms, Some(1_700_000_000_000));
        assert!(e.families[2].samples[1].value.is_nan());
        let last = &e.families[3].samples[0];
        assert_eq!(last.value, f64::NEG_INFINITY);
        assert_eq!(last.labels[0].1, r"C:\DIR\FILE.TXT");
        assert_eq!(last.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(e.sample_count(), 12);
    }

    #[test]
    fn openmetrics_bodies_read_as_the_collector_serves_them() {
        let text = "# HELP reqs Requests.\n# TYPE reqs counter\n# UNIT reqs requests\nreqs_total{signal=\"logs\"} 5 # {trace_id=\"ab\"} 1.0\nreqs_created{signal=\"logs\"} 1.7e9\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# TYPE u unknown\nu 2\n# EOF\n";
        let e = parse(text).unwrap();
        assert_eq!(e.created, 1);
        let f = &e.families[0];
        assert_eq!((f.name.as_str(), f.kind), ("reqs", MetricType::Counter));
        assert_eq!(f.samples.len(), 1);
        assert_eq!(f.samples[0].name, "reqs_total");
        assert_eq!(f.samples[0].value, 5.0);
        assert_eq!(e.families[1].samples[0].name, "build_info");
        assert_eq!(e.families[2].kind, MetricType::Untyped);
    }

    #[test]
    fn spacing_trailing_commas_and_crlf_are_accepted() {
        let e = parse("a { x = \"1\" , y=\"2\", } 3 \r\n\n   b 4\t\n").unwrap();
        assert_eq!(e.families[0].samples[0].labels.len(), 2);
        assert_eq!(e.families[1].samples[0].value, 4.0);
        assert_eq!(
            parse("a{} 1").unwrap().families[0].samples[0].labels,
            vec![]
        );
    }

    fn line_of_error(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.line, e.message)
    }

    #[test]
    fn hostile_input_errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("ok 1\nbad{a=\"x} 1\n", 2, "unterminated label value"),
            ("x{a=\"1\",a=\"2\"} 1", 1, "duplicate label name"),
            ("x{a=\"\\q\"} 1", 1, "invalid escape"),
            ("x 1\n\ny one", 3, "not a number"),
            ("x 1 12.5", 1, "timestamp"),
            ("x 1 2 3", 1, "after the timestamp"),
            ("x", 1, "has no value"),
            ("x{a=1} 2", 1, "to open the value"),
            ("x{a=\"1\" b=\"2\"} 2", 1, "expected ',' or '}'"),
            ("x{1a=\"1\"} 2", 1, "expected a label name"),
            ("x{a=\"1\"", 1, "unterminated label set"),
            ("{a=\"1\"} 2", 1, "expected a metric name"),
            ("# TYPE x bogus", 1, "unknown metric type"),
            ("# TYPE x counter\n# TYPE x counter", 2, "second TYPE"),
            ("# TYPE h histogram\nh_bucket 1", 2, "without an \"le\""),
            (
                "# TYPE h histogram\nh_bucket{le=\"x\"} 1",
                2,
                "invalid \"le\"",
            ),
            ("# TYPE s summary\ns 1", 2, "without a \"quantile\""),
            ("# TYPE a counter\na 1\nb 2\na 3", 4, "not together"),
            ("x{__name__=\"y\"} 1", 1, "reserved"),
            ("# TYPE 9x counter", 1, "invalid metric name"),
            ("x 0x10", 1, "not a number"),
        ];
        for (text, line, needle) in cases {
            let (l, m) = line_of_error(text);
            assert_eq!(l, *line, "{text:?}: {m}");
            assert!(m.contains(needle), "{text:?}: {m}");
        }
    }

    #[test]
    fn huge_lines_and_label_floods_are_refused() {
        let long = format!("x{{a=\"{}\"}} 1\n", "v".repeat(MAX_LINE_BYTES));
        assert!(parse(&long).unwrap_err().message.contains("over the limit"));
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=\"v\"")).collect();
        let flood = format!("x{{{}}} 1", labels.join(","));
        assert!(parse(&flood).unwrap_err().message.contains("more than"));
    }

    #[test]
    fn duplicates_keep_the_first_and_are_counted() {
        let e = parse("x{a=\"1\",b=\"2\"} 1\nx{b=\"2\",a=\"1\"} 2\nx{a=\"2\"} 3").unwrap();
        assert_eq!(e.duplicates, 1);
        assert_eq!(e.families[0].samples.len(), 2);
        assert_eq!(e.families[0].samples[0].value, 1.0);
    }

    #[test]
    fn floats_as_go_reads_them() {
        for (s, v) in [
            ("1", 1.0),
            ("-2.5", -2.5),
            ("1e3", 1000.0),
            (".5", 0.5),
            ("+3", 3.0),
        ] {
            assert_eq!(parse_float(s), Some(v), "{s}");
        }
        assert_eq!(parse_float("+Inf"), Some(f64::INFINITY));
        assert!(parse_float("NaN").unwrap().is_nan());
        for bad in ["", "abc", "1_000", "0x1p3", "infinity1"] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    fn label_value_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z\"\\\\\n é]{0,12}").unwrap()
    }

    fn escape(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    proptest! {
        /// Whatever is written with the format's escaping reads back the same.
        #[test]
        fn written_samples_read_back(
            name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
            labels in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", label_value_strategy(), 0..5),
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
            ts in proptest::option::of(any::<i64>()),
        ) {
            prop_assume!(!labels.contains_key("__name__"));
            let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let mut line = format!("{name}{{{}}} {value:?}", set.join(","));
            if let Some(t) = ts {
                line.push_str(&format!(" {t}"));
            }
            let e = parse(&line).unwrap();
            let s = &e.families[0].samples[0];
            prop_assert_eq!(&s.name, &name);
            prop_assert_eq!(s.labels.clone(), labels.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(s.value, value);
            prop_assert_eq!(s.timestamp_ms, ts);
        }

        #[test]
        fn garbage_never_panics(text in "[a-z{}=\",# \\\\\n0-9.+]{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&String::from_utf8_lossy(&data));
        }
    }
}
