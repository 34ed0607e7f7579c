//! JSON encoding of PromQL results exactly as Prometheus writes them: times as Unix
//! seconds with millisecond fraction (`1435781451.781`), sample values as strings
//! (`"1"`, `"NaN"`, `"+Inf"`), label sets as objects in name order. Written by hand
//! because a range query can return millions of points and this is the hot path.

use std::fmt::Write as _;

use vantage_storage::metrics::Labels;
use vantage_storage::metrics::promql::Value;

/// Appends a JSON string literal.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a label set as an object.
pub(crate) fn labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &l.name);
        out.push(':');
        string(out, &l.value);
    }
    out.push('}');
}

/// Appends a millisecond time as Prometheus's `MarshalTimestamp` does.
pub(crate) fn timestamp(out: &mut String, t: i64) {
    let mut t = i128::from(t);
    if t < 0 {
        out.push('-');
        t = -t;
    }
    let _ = write!(out, "{}", t / 1000);
    let fraction = t % 1000;
    if fraction != 0 {
        let _ = write!(out, ".{fraction:03}");
    }
}

/// Formats a sample value as Go's `strconv.FormatFloat(v, 'f', -1, 64)`, which is
/// what Prometheus sends: shortest round-trip digits, never an exponent.
pub(crate) fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// Appends `[t,"v"]`.
fn point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    timestamp(out, t);
    out.push_str(",\"");
    out.push_str(&float(v));
    out.push_str("\"]");
}

/// The `data` object of a query response: `{"resultType":...,"result":...}`.
pub(crate) fn query_data(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    match value {
        Value::Scalar { t, v } => {
            out.push_str(r#"{"resultType":"scalar","result":"#);
            point(&mut out, *t, *v);
        }
        Value::String { t, v } => {
            out.push_str(r#"{"resultType":"string","result":["#);
            timestamp(&mut out, *t);
            out.push(',');
            string(&mut out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                point(&mut out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push_str(r#"{"resultType":"matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, p) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point(&mut out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_storage::metrics::Sample;
    use vantage_storage::metrics::promql::{InstantSample, RangeSeries};

    #[test]
    fn timestamps_match_prometheus() {
        let cases = [
            (1_435_781_451_781, "1435781451.781"),
            (1_435_781_451_000, "1435781451"),
            (1_435_781_451_780, "1435781451.780"),
            (1_435_781_451_005, "1435781451.005"),
            (-1_500, "-1.500"),
            (0, "0"),
        ];
        for (t, want) in cases {
            let mut s = String::new();
            timestamp(&mut s, t);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn floats_match_go_format_f() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(1e21), "1000000000000000000000");
        assert_eq!(float(1.5e-7), "0.00000015");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn vector_and_matrix_shapes() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        let v = Value::Vector(vec![InstantSample {
            labels: l.clone(),
            t: 1_000,
            v: 1.0,
        }]);
        assert_eq!(
            query_data(&v),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1,"1"]}]}"#
        );
        let m = Value::Matrix(vec![RangeSeries {
            labels: l,
            samples: vec![
                Sample { t: 1_000, v: 1.0 },
                Sample {
                    t: 2_500,
                    v: f64::NAN,
                },
            ],
        }]);
        let json: serde_json::Value = serde_json::from_str(&query_data(&m)).unwrap();
        assert_eq!(json["result"][0]["values"][1][0], serde_json::json!(2.5));
        assert_eq!(json["result"][0]["values"][1][1], "NaN");
        let s = Value::Scalar { t: 1, v: 2.0 };
        assert_eq!(
            query_data(&s),
            r#"{"resultType":"scalar","result":[0.001,"2"]}"#
        );
    }
}
