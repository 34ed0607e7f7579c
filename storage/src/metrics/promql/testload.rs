//! An interpreter for Prometheus's PromQL test-script format (`promql/testdata/*.test`)
//! so cases can be ported from Prometheus with their expected values:
//!
//! ```text
//! load 5m
//!   http_requests{job="api"} 0+10x10 _ stale 1 2
//! eval instant at 50m sum(http_requests)
//!   {} 100
//! eval_fail instant at 0m foo[
//! eval range from 0 to 10m step 5m rate(x[5m])
//!   {job="api"} 1 1 _
//! clear
//! ```

use std::time::Duration;

use super::{Engine, EngineOptions, MemQuerier, Value, parse_duration_ms};
use crate::metrics::{Labels, Sample, stale_nan};

/// A value of a series in load notation.
enum Item {
    Value(f64),
    Missing,
    Stale,
}

fn parse_number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad number {s:?}: {e}")),
    }
}

/// Expands `a+bxn`, `a-bxn`, `axn`, `_`, `_xn`, `stale`, plain numbers.
fn parse_items(text: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(Item::Missing);
            continue;
        }
        if tok == "stale" {
            out.push(Item::Stale);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad {tok}"))?;
            out.extend((0..n).map(|_| Item::Missing));
            continue;
        }
        if let Some((head, times)) = tok.rsplit_once('x') {
            let n: usize = times.parse().map_err(|_| format!("bad count in {tok}"))?;
            // Find the operator splitting start and increment (not a leading sign or
            // an exponent sign).
            let bytes = head.as_bytes();
            let mut split = None;
            for i in 1..bytes.len() {
                if (bytes[i] == b'+' || bytes[i] == b'-')
                    && bytes[i - 1] != b'e'
                    && bytes[i - 1] != b'E'
                {
                    split = Some(i);
                }
            }
            let (start, inc) = match split {
                Some(i) => {
                    let inc = parse_number(&head[i + 1..])?;
                    let inc = if bytes[i] == b'-' { -inc } else { inc };
                    (parse_number(&head[..i])?, inc)
                }
                None => (parse_number(head)?, 0.0),
            };
            for k in 0..=n {
                out.push(Item::Value(start + inc * k as f64));
            }
            continue;
        }
        out.push(Item::Value(parse_number(tok)?));
    }
    Ok(out)
}

/// Parses `name{a="b", c="d"}` or `{a="b"}` (a leading metric name is optional).
fn parse_labels(s: &str) -> Result<Labels, String> {
    let s = s.trim();
    let (name, rest) = match s.find('{') {
        Some(i) => (s[..i].trim(), &s[i..]),
        None => (s, ""),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.into()));
    }
    if !rest.is_empty() {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| format!("bad labels {s:?}"))?;
        let chars: Vec<char> = inner.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            while i < chars.len() && (chars[i] == ',' || chars[i].is_whitespace()) {
                i += 1;
            }
            if i >= chars.len() {
                break;
            }
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let lname: String = chars[start..i].iter().collect::<String>().trim().to_owned();
            i += 1; // '='
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1; // opening quote
            let mut value = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                    value.push(match chars[i] {
                        'n' => '\n',
                        c => c,
                    });
                } else {
                    value.push(chars[i]);
                }
                i += 1;
            }
            i += 1; // closing quote
            pairs.push((lname, value));
        }
    }
    Ok(Labels::from_pairs(pairs))
}

/// Splits `metric{...} rest` at the end of the label part.
fn split_series_line(line: &str) -> (&str, &str) {
    if let Some(close) = line.find('}')
        && line.find('{').is_some_and(|o| o < close)
    {
        return (&line[..=close], line[close + 1..].trim());
    }
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-9 * a.abs().max(b.abs()) || diff < 1e-12
}

/// Runs a test script; panics with the failing command and the reason.
pub(crate) fn run_script(script: &str) {
    run_script_with(script, EngineOptions::default());
}

pub(crate) fn run_script_with(script: &str, opts: EngineOptions) {
    let engine = Engine::new(opts);
    let mut q = MemQuerier::new();
    let lines: Vec<&str> = script.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "clear" {
            q = MemQuerier::new();
            continue;
        }
        if let Some(interval) = line.strip_prefix("load ") {
            let step = parse_duration_ms(interval.trim()).expect("load interval");
            while i < lines.len()
                && lines[i].starts_with([' ', '\t'])
                && !lines[i].trim().is_empty()
            {
                let (ls, vals) = split_series_line(lines[i].trim());
                let labels = parse_labels(ls).unwrap_or_else(|e| panic!("{e} in {}", lines[i]));
                let items = parse_items(vals).unwrap_or_else(|e| panic!("{e} in {}", lines[i]));
                let samples: Vec<Sample> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(k, it)| {
                        let t = k as i64 * step;
                        match it {
                            Item::Value(v) => Some(Sample { t, v: *v }),
                            Item::Stale => Some(Sample { t, v: stale_nan() }),
                            Item::Missing => None,
                        }
                    })
                    .collect();
                q.add(labels, samples);
                i += 1;
            }
            continue;
        }
        let mut expected: Vec<&str> = Vec::new();
        while i < lines.len() && lines[i].starts_with([' ', '\t']) && !lines[i].trim().is_empty() {
            expected.push(lines[i].trim());
            i += 1;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let ordered = cmd == "eval_ordered";
        let fail = cmd == "eval_fail";
        assert!(
            matches!(cmd, "eval" | "eval_ordered" | "eval_fail"),
            "unknown command {line}"
        );
        if let Some(r) = rest.strip_prefix("instant at ") {
            let (at, query) = r.split_once(' ').expect("query");
            let t = parse_duration_ms(at).expect("eval time");
            let res = engine.instant(&q, query, t, Some(Duration::from_secs(30)));
            if fail {
                assert!(res.is_err(), "expected failure: {line}, got {res:?}");
                continue;
            }
            let res = res.unwrap_or_else(|e| panic!("{line}: {e}"));
            check_instant(line, &res, &expected, ordered);
        } else if let Some(r) = rest.strip_prefix("range from ") {
            // range from <start> to <end> step <step> <query>
            let parts: Vec<&str> = r.splitn(6, ' ').collect();
            assert!(
                parts.len() == 6 && parts[1] == "to" && parts[3] == "step",
                "bad range line {line}"
            );
            let start = parse_duration_ms(parts[0]).expect("start");
            let end = parse_duration_ms(parts[2]).expect("end");
            let step = parse_duration_ms(parts[4]).expect("step");
            let res = engine.range(
                &q,
                parts[5],
                start,
                end,
                step,
                Some(Duration::from_secs(30)),
            );
            if fail {
                assert!(res.is_err(), "expected failure: {line}, got {res:?}");
                continue;
            }
            let res = res.unwrap_or_else(|e| panic!("{line}: {e}"));
            check_range(line, &res, &expected, start, step);
        } else {
            panic!("bad eval line {line}");
        }
    }
}

fn check_instant(line: &str, res: &Value, expected: &[&str], ordered: bool) {
    match res {
        Value::Scalar { v, .. } => {
            assert_eq!(
                expected.len(),
                1,
                "{line}: scalar result {v}, expected {expected:?}"
            );
            let want = parse_number(expected[0].trim()).expect("expected scalar");
            assert!(close(*v, want), "{line}: got {v}, want {want}");
        }
        Value::String { v, .. } => {
            assert_eq!(expected.len(), 1, "{line}");
            assert_eq!(expected[0].trim().trim_matches('"'), v, "{line}");
        }
        Value::Vector(got) => {
            assert_eq!(
                got.len(),
                expected.len(),
                "{line}: got {} elements {:?}, want {expected:?}",
                got.len(),
                got.iter()
                    .map(|s| format!("{} {}", s.labels, s.v))
                    .collect::<Vec<_>>()
            );
            for (k, e) in expected.iter().enumerate() {
                let (ls, val) = split_series_line(e);
                let want_l = parse_labels(ls).expect("expected labels");
                let want_v = parse_number(val).expect("expected value");
                let found = if ordered {
                    Some(&got[k]).filter(|g| g.labels == want_l)
                } else {
                    got.iter().find(|g| g.labels == want_l)
                };
                let g = found.unwrap_or_else(|| {
                    panic!(
                        "{line}: missing {want_l} (position {k}); got {:?}",
                        got.iter()
                            .map(|s| format!("{} {}", s.labels, s.v))
                            .collect::<Vec<_>>()
                    )
                });
                assert!(
                    close(g.v, want_v),
                    "{line}: {want_l} got {}, want {want_v}",
                    g.v
                );
            }
        }
        Value::Matrix(got) => {
            assert_eq!(got.len(), expected.len(), "{line}: got {got:?}");
            for e in expected {
                let (ls, vals) = split_series_line(e);
                let want_l = parse_labels(ls).expect("labels");
                let g = got
                    .iter()
                    .find(|g| g.labels == want_l)
                    .unwrap_or_else(|| panic!("{line}: missing {want_l}: got {got:?}"));
                // Expected as `value@t_ms` pairs.
                let want: Vec<(f64, i64)> = vals
                    .split_whitespace()
                    .map(|p| {
                        let (v, t) = p.split_once('@').expect("value@t");
                        (parse_number(v).expect("v"), t.parse().expect("t"))
                    })
                    .collect();
                assert_eq!(
                    g.samples.len(),
                    want.len(),
                    "{line}: {want_l} got {:?}",
                    g.samples
                );
                for (s, (v, t)) in g.samples.iter().zip(want) {
                    assert!(
                        s.t == t && close(s.v, v),
                        "{line}: {want_l} got {:?}",
                        g.samples
                    );
                }
            }
        }
    }
}

fn check_range(line: &str, res: &Value, expected: &[&str], start: i64, step: i64) {
    let Value::Matrix(got) = res else {
        panic!("{line}: range result {res:?}");
    };
    assert_eq!(
        got.len(),
        expected.len(),
        "{line}: got {:?}",
        got.iter()
            .map(|s| (s.labels.to_string(), s.samples.clone()))
            .collect::<Vec<_>>()
    );
    for (k, e) in expected.iter().enumerate() {
        let (ls, vals) = split_series_line(e);
        let want_l = parse_labels(ls).expect("labels");
        let g = &got[k];
        assert_eq!(
            g.labels, want_l,
            "{line}: series {k} (range results are sorted by labels)"
        );
        let items = parse_items(vals).expect("expected values");
        let want: Vec<Sample> = items
            .iter()
            .enumerate()
            .filter_map(|(j, it)| match it {
                Item::Value(v) => Some(Sample {
                    t: start + j as i64 * step,
                    v: *v,
                }),
                _ => None,
            })
            .collect();
        assert_eq!(
            g.samples.len(),
            want.len(),
            "{line}: {want_l} got {:?} want {want:?}",
            g.samples
        );
        for (s, w) in g.samples.iter().zip(&want) {
            assert!(
                s.t == w.t && close(s.v, w.v),
                "{line}: {want_l} got {:?} want {want:?}",
                g.samples
            );
        }
    }
}
