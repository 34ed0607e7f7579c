use std::time::Duration;

use crate::metrics::promql::testload::run_script_with;
use crate::metrics::promql::{Engine, EngineOptions, MemQuerier, PromqlError, Value, format_query};
use crate::metrics::{Labels, Matcher, MetricsError, Querier, Sample, SeriesRef};

fn querier(series: usize, samples: i64) -> MemQuerier {
    let mut q = MemQuerier::new();
    for i in 0..series {
        q.add(
            Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]),
            (0..samples).map(|k| Sample {
                t: k * 15_000,
                v: k as f64,
            }),
        );
    }
    q
}

fn engine() -> Engine {
    Engine::new(EngineOptions::default())
}

#[test]
fn value_types_of_instant_queries() {
    let q = querier(2, 10);
    let e = engine();
    assert_eq!(
        e.instant(&q, "1 + 2", 5_000, None).unwrap(),
        Value::Scalar { t: 5_000, v: 3.0 }
    );
    assert_eq!(
        e.instant(&q, r#""hello""#, 5_000, None).unwrap(),
        Value::String {
            t: 5_000,
            v: "hello".into()
        }
    );
    let Value::Vector(v) = e.instant(&q, "m", 30_000, None).unwrap() else {
        panic!("vector expected");
    };
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|s| s.t == 30_000 && s.v == 2.0));
    let Value::Matrix(m) = e.instant(&q, "m[30s]", 30_000, None).unwrap() else {
        panic!("matrix expected");
    };
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].samples.len(), 3, "closed window [0, 30s]");
}

#[test]
fn range_query_grid_sorting_and_scalar_results() {
    let q = querier(3, 100);
    let e = engine();
    let Value::Matrix(m) = e.range(&q, "m", 0, 60_000, 20_000, None).unwrap() else {
        panic!("matrix expected");
    };
    assert_eq!(m.len(), 3);
    assert!(m.windows(2).all(|w| w[0].labels < w[1].labels));
    let times: Vec<i64> = m[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(times, vec![0, 20_000, 40_000, 60_000]);
    // 0..=50s at 20s: 0, 20, 40 (end is not a step).
    let Value::Matrix(m) = e.range(&q, "time()", 0, 50_000, 20_000, None).unwrap() else {
        panic!("matrix expected");
    };
    assert_eq!(m.len(), 1);
    assert!(m[0].labels.is_empty());
    assert_eq!(
        m[0].samples,
        vec![
            Sample { t: 0, v: 0.0 },
            Sample { t: 20_000, v: 20.0 },
            Sample { t: 40_000, v: 40.0 }
        ]
    );
}

#[test]
fn range_query_refuses_range_vectors_and_too_many_points() {
    let q = querier(1, 10);
    let e = engine();
    let err = e.range(&q, "m[5m]", 0, 60_000, 15_000, None).unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
    assert!(err.to_string().contains("range vector"), "{err}");
    let err = e.range(&q, "m", 0, 11_001 * 1000, 1000, None).unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
    assert_eq!(
        err.to_string(),
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    assert!(e.range(&q, "m", 0, 11_000 * 1000, 1000, None).is_ok());
    assert_eq!(
        e.range(&q, "m", 0, 10, 0, None).unwrap_err().error_type(),
        "bad_data"
    );
    assert_eq!(
        e.range(&q, "m", 10, 0, 1, None).unwrap_err().error_type(),
        "bad_data"
    );
}

#[test]
fn parse_errors_unknown_functions_and_unsupported_features() {
    let q = querier(1, 10);
    let e = engine();
    for (query, needle) in [
        ("sum(m", "parse error"),
        ("foo{", "parse error"),
        ("nonexistent_function(m)", "parse error"),
        (r#"{job=~".*"}"#, "non-empty matcher"),
        ("1 == 1", "parse error"),
    ] {
        let err = e.instant(&q, query, 0, None).unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{query}: {err}");
        assert!(err.to_string().contains(needle), "{query}: {err}");
    }
    for query in [
        "histogram_count(m)",
        "histogram_sum(m)",
        "first_over_time(m[5m])",
        "sort_by_label(m, \"i\")",
        "limitk(1, m)",
        "mad_over_time(m[5m])",
    ] {
        let err = e.instant(&q, query, 0, None).unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{query}: {err}");
        assert!(
            matches!(err, PromqlError::Unsupported(_) | PromqlError::Parse(_)),
            "{query}: {err}"
        );
    }
}

#[test]
fn many_to_many_and_duplicate_labelsets_are_execution_errors() {
    let q = querier(2, 10);
    let e = engine();
    let err = e.instant(&q, "m + on() m", 60_000, None).unwrap_err();
    assert_eq!(err.error_type(), "execution");
    assert!(
        err.to_string()
            .contains("many-to-many matching not allowed"),
        "{err}"
    );
    let mut q2 = querier(1, 10);
    q2.add(
        Labels::from_pairs([("__name__", "n"), ("i", "0")]),
        [Sample { t: 0, v: 1.0 }],
    );
    let err = e.instant(&q2, r#"rate({__name__=~"m|n"}[5m])"#, 60_000, None);
    // n has one sample only, so rate() drops it: no collision.
    assert!(err.is_ok());
    let err = e
        .instant(&q2, r#"abs({__name__=~"m|n"})"#, 60_000, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    assert_eq!(err.error_type(), "execution");
}

#[test]
fn too_many_samples_is_an_execution_error() {
    let q = querier(10, 100);
    let opts = EngineOptions {
        max_samples: 500,
        ..EngineOptions::default()
    };
    let e = Engine::new(opts.clone());
    let err = e.instant(&q, "m[30m]", 1_500_000, None).unwrap_err();
    assert_eq!(err.error_type(), "execution");
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    let err = e.range(&q, "m", 0, 1_500_000, 15_000, None).unwrap_err();
    assert!(matches!(err, PromqlError::TooManySamples), "{err}");
    // Within the limit it works.
    assert!(e.instant(&q, "sum(m)", 1_500_000, None).is_ok());
    run_script_with(
        "load 1m\n  a 1+1x100\neval_fail instant at 100m count_over_time(a[100m])\n",
        EngineOptions {
            max_samples: 50,
            ..EngineOptions::default()
        },
    );
}

/// A querier that takes its time, to make the deadline pass mid-query.
struct Slow(MemQuerier);

impl Querier for Slow {
    fn series(&self, m: &[Matcher], s: i64, e: i64) -> Result<Vec<SeriesRef>, MetricsError> {
        self.0.series(m, s, e)
    }
    fn samples(
        &self,
        r: &SeriesRef,
        s: i64,
        e: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), MetricsError> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.samples(r, s, e, out)
    }
}

#[test]
fn deadline_gives_timeout() {
    let q = Slow(querier(200, 10));
    let e = engine();
    let err = e
        .instant(&q, "sum(m)", 60_000, Some(Duration::from_millis(1)))
        .unwrap_err();
    assert!(matches!(err, PromqlError::Timeout), "{err}");
    assert_eq!(err.error_type(), "timeout");
    assert_eq!(err.to_string(), "query timed out in expression evaluation");
}

#[test]
fn storage_errors_are_internal() {
    struct Broken;
    impl Querier for Broken {
        fn series(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<SeriesRef>, MetricsError> {
            Err(MetricsError::Corrupt {
                path: "x".into(),
                reason: "bad block".into(),
            })
        }
        fn samples(
            &self,
            _: &SeriesRef,
            _: i64,
            _: i64,
            _: &mut Vec<Sample>,
        ) -> Result<(), MetricsError> {
            Ok(())
        }
    }
    let err = engine().instant(&Broken, "up", 0, None).unwrap_err();
    assert_eq!(err.error_type(), "internal");
    let err = engine()
        .instant(&MemQuerier::new(), "up{a=~\"(\"}", 0, None)
        .unwrap_err();
    assert_eq!(err.error_type(), "bad_data", "{err}");
}

#[test]
fn format_query_prettifies() {
    assert_eq!(
        format_query("sum(rate(foo[5m])) by (job)").unwrap(),
        "sum by (job) (rate(foo[5m]))"
    );
    assert!(format_query("sum(").is_err());
    let long = format_query(
        "sum by (job, instance) (rate(http_requests_total{job=\"api-server\", handler=\"/api/v1/query\"}[5m])) / ignoring(code) group_left sum by (job, instance) (rate(http_requests_total[5m]))",
    )
    .unwrap();
    assert!(long.contains('\n'), "{long}");
}

#[test]
fn mem_querier_filters_by_matchers_and_time() {
    let q = querier(3, 4);
    let refs = q.series(&[Matcher::equal("i", "1")], 0, 100_000).unwrap();
    assert_eq!(refs.len(), 1);
    let mut out = Vec::new();
    q.samples(&refs[0], 15_000, 30_000, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert!(
        q.series(&[Matcher::equal("i", "1")], 100_000, 200_000)
            .unwrap()
            .is_empty()
    );
}

/// Runs `f` on a thread with the stack the collector parses and evaluates queries on
/// (its runtime's workers and blocking pool), not a test thread's.
fn on_query_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let stack = crate::metrics::promql::QUERY_STACK_BYTES;
    crate::deep_stack::on_deep_stack("test", stack, f).expect("a test thread")
}

fn parse_error(result: Result<Value, PromqlError>) -> String {
    match result {
        Err(PromqlError::Parse(message)) => message,
        other => panic!("parse error expected, got {other:?}"),
    }
}

#[test]
fn queries_twice_as_deep_as_the_limit_evaluate_in_a_debug_build() {
    use crate::metrics::promql::MAX_QUERY_DEPTH;
    let q = querier(2, 10);
    let e = engine();
    // Each shape at exactly the limit through the engine, and at twice the limit through
    // the evaluator alone: the margin the limit keeps on the collector's stack.
    let at = MAX_QUERY_DEPTH;
    let chain = vec!["1"; at].join("+");
    let v = on_query_stack(|| e.instant(&q, &chain, 5_000, None)).unwrap();
    assert_eq!(
        v,
        Value::Scalar {
            t: 5_000,
            v: at as f64
        }
    );
    let pretty = on_query_stack(|| format_query(&chain)).unwrap();
    assert_eq!(pretty.matches('+').count(), at - 1);
    let shapes = |d: usize| {
        vec![
            vec!["m"; d].join(" + on(i) group_left "),
            format!("{}m{}", "sum by (i) (".repeat(d - 1), ")".repeat(d - 1)),
            format!("{}m{}", "abs(".repeat(d - 1), ")".repeat(d - 1)),
            format!(
                "{}m{}",
                "label_replace(".repeat(d - 1),
                r#", "a", "$1", "i", "(.*)")"#.repeat(d - 1)
            ),
            format!(
                "{}m{}",
                "max_over_time((".repeat(d / 3),
                ")[1m:15s])".repeat(d / 3)
            ),
        ]
    };
    for shape in shapes(at) {
        let Value::Matrix(m) = on_query_stack(|| e.range(&q, &shape, 0, 60_000, 15_000, None))
            .unwrap_or_else(|err| panic!("{}: {err}", &shape[..40]))
        else {
            panic!("matrix expected");
        };
        assert!(!m.is_empty(), "{}", &shape[..40]);
    }
    for shape in shapes(2 * at) {
        let expr = promql_parser::parser::parse(&shape).unwrap();
        assert!(
            super::super::depth::depth(&expr) >= 2 * at - 2,
            "{}",
            &shape[..40]
        );
        on_query_stack(|| {
            let mut ev = super::super::eval::Evaluator::new(&q, e.options(), None, 0, 60_000);
            ev.range(&expr, 0, 60_000, 15_000).map(|_| ())
        })
        .unwrap_or_else(|err| panic!("{}: {err}", &shape[..40]));
    }
}

#[test]
fn deeper_or_longer_queries_are_refused_before_they_are_evaluated() {
    use crate::metrics::promql::{MAX_QUERY_BYTES, MAX_QUERY_DEPTH};
    let q = querier(1, 10);
    let e = engine();
    let over = vec!["1"; MAX_QUERY_DEPTH + 1].join("+");
    assert!(over.len() < 4 * 1024, "refused on the caller's thread");
    let message = parse_error(on_query_stack(|| e.instant(&q, &over, 0, None)));
    assert_eq!(
        message,
        format!(
            "the query nests {} expressions deep, over the maximum of {MAX_QUERY_DEPTH}",
            MAX_QUERY_DEPTH + 1
        )
    );
    // What aborted the collector: 6,000 levels; the rest up to the longest query, each
    // parsed on the deep-stack thread.
    for hostile in [
        vec!["1"; 6_000].join("+"),
        vec!["1"; MAX_QUERY_BYTES / 2].join("+"),
        format!("{}1{}", "(".repeat(8_000), ")".repeat(8_000)),
        format!("{}up{}", "abs(".repeat(3_000), ")".repeat(3_000)),
    ] {
        assert!(hostile.len() <= MAX_QUERY_BYTES);
        let message = parse_error(on_query_stack(|| e.instant(&q, &hostile, 0, None)));
        assert!(message.contains("over the maximum of 128"), "{message}");
        let message = parse_error(on_query_stack(|| {
            e.range(&q, &hostile, 0, 60_000, 15_000, None)
        }));
        assert!(message.contains("over the maximum of 128"), "{message}");
    }
    // The parser folds a run of signs into the number: long, not deep.
    let signs = "-".repeat(MAX_QUERY_BYTES - 1) + "1";
    let v = on_query_stack(|| e.instant(&q, &signs, 0, None)).unwrap();
    assert_eq!(v, Value::Scalar { t: 0, v: -1.0 });
    let long = "m or ".repeat(MAX_QUERY_BYTES / 5) + "vector(1)";
    let message = parse_error(on_query_stack(|| e.instant(&q, &long, 0, None)));
    assert_eq!(
        message,
        format!(
            "the query is {} bytes long, over the maximum of {MAX_QUERY_BYTES}",
            long.len()
        )
    );
    // A long flat query under the cap is not deep: 1,500 label values in one regex.
    let values = (0..1_500)
        .map(|i| format!("v{i}"))
        .collect::<Vec<_>>()
        .join("|");
    let flat = format!("m{{i=~\"{values}\"}}");
    assert!(flat.len() > 4 * 1024);
    assert!(on_query_stack(|| e.instant(&q, &flat, 30_000, None)).is_ok());
}
