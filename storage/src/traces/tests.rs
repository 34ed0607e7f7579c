//! Behaviour of the span store through its public interface.

use std::path::Path;

use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::span::{Event, Link};
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

const DAY: i64 = 86_400 * 1_000_000_000;
const MS: i64 = 1_000_000;
const T0: i64 = 20_000 * DAY + 3_600 * 1_000_000_000;
const TRACE: [u8; 16] = [0xab; 16];

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn sid(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0, n]
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: [u8; 16],
    id: u8,
    parent: Option<u8>,
    name: &str,
    start: i64,
    dur_ms: i64,
    error: bool,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: sid(id),
        parent_span_id: parent.map(sid).unwrap_or_default(),
        name: name.into(),
        kind: if parent.is_none() { 2 } else { 3 },
        start_time_unix_nano: start as u64,
        end_time_unix_nano: (start + dur_ms * MS) as u64,
        attributes: vec![
            kv(
                "http.status_code",
                any_value::Value::IntValue(if error { 500 } else { 200 }),
            ),
            kv("http.method", s("GET")),
        ],
        events: vec![Event {
            time_unix_nano: start as u64 + 1,
            name: "cache miss".into(),
            attributes: vec![kv("key", s("user:1"))],
            dropped_attributes_count: 0,
        }],
        links: vec![Link {
            trace_id: vec![0x11; 16],
            span_id: sid(99),
            ..Default::default()
        }],
        status: Some(Status {
            code: if error { 2 } else { 1 },
            message: if error { "boom".into() } else { String::new() },
        }),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service)), kv("host.name", s("web-1"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("{service}-lib"),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn small(dir: &Path) -> TraceStoreOptions {
    TraceStoreOptions {
        writer_heap_bytes: 15_000_000,
        ..TraceStoreOptions::new(dir)
    }
}

/// frontend: root(1) -> backend: api(2) -> db: query(3), and backend: cache(4) that
/// fails; the db span arrives in its own batch, out of order, on the next day.
fn seeded(dir: &Path) -> (TraceStore, TraceIndexer) {
    let (store, mut ix) = open(small(dir)).unwrap();
    ix.add_batch(
        "default",
        1,
        &request(
            "backend",
            vec![
                span(TRACE, 4, Some(2), "cache", T0 + 50 * MS, 5, true),
                span(TRACE, 2, Some(1), "GET /api", T0 + 10 * MS, 80, false),
            ],
        ),
    )
    .unwrap();
    ix.add_batch(
        "default",
        2,
        &request(
            "frontend",
            vec![span(TRACE, 1, None, "GET /", T0, 100, false)],
        ),
    )
    .unwrap();
    ix.add_batch(
        "default",
        3,
        &request(
            "db",
            vec![span(TRACE, 3, Some(2), "SELECT", T0 + DAY, 1, false)],
        ),
    )
    .unwrap();
    assert_eq!(ix.commit().unwrap(), 3);
    (store, ix)
}

fn names(t: &Trace) -> Vec<(usize, String)> {
    t.spans
        .iter()
        .map(|s| (s.depth, s.span.name.clone()))
        .collect()
}

#[test]
fn a_trace_across_batches_and_days_comes_back_whole_in_tree_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    let t = store.get_trace("default", &TRACE).unwrap().unwrap();
    assert_eq!(t.total_spans, 4);
    assert_eq!(t.error_spans, 1);
    assert!(!t.truncated);
    assert_eq!(
        names(&t),
        vec![
            (0, "GET /".into()),
            (1, "GET /api".into()),
            (2, "cache".into()),
            (2, "SELECT".into())
        ]
    );
    // Everything is kept exactly: events, links, status, resource, scope.
    let cache = &t.spans[2];
    assert_eq!(cache.service_name(), "backend");
    assert_eq!(cache.scope.name, "backend-lib");
    assert_eq!(
        cache.span,
        span(TRACE, 4, Some(2), "cache", T0 + 50 * MS, 5, true)
    );
    let summary = t.summary();
    assert_eq!(summary.root_service, "frontend");
    assert_eq!(summary.root_name, "GET /");
    assert_eq!(summary.start_ns, T0);
    assert_eq!(summary.duration_ns, DAY + MS);
    assert_eq!(summary.span_count, 4);
    assert_eq!(summary.error_count, 1);
    assert_eq!(summary.services, vec!["backend", "db", "frontend"]);
    assert!(store.get_trace("default", &[0xac; 16]).unwrap().is_none());
    assert!(
        store.get_trace("other", &TRACE).unwrap().is_none(),
        "another tenant sees nothing"
    );
}

#[test]
fn search_by_service_operation_tags_duration_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    let other = [0xcd; 16];
    ix.add_batch(
        "default",
        4,
        &request(
            "frontend",
            vec![span(other, 1, None, "GET /home", T0 + 5 * MS, 3, false)],
        ),
    )
    .unwrap();
    ix.commit().unwrap();
    let q = || TraceQuery::new("default", T0 - DAY, T0 + 2 * DAY, 20);
    let ids = |q: TraceQuery| store.search_trace_ids(&q).unwrap();
    assert_eq!(ids(q()), vec![TRACE, other], "most recent match first");
    assert_eq!(
        ids(TraceQuery {
            service: Some("frontend".into()),
            ..q()
        }),
        vec![other, TRACE]
    );
    assert_eq!(
        ids(TraceQuery {
            operation: Some("cache".into()),
            ..q()
        }),
        vec![TRACE]
    );
    assert_eq!(
        ids(TraceQuery {
            tags: vec![("http.status_code".into(), "500".into())],
            ..q()
        }),
        vec![TRACE]
    );
    assert_eq!(
        ids(TraceQuery {
            tags: vec![("host.name".into(), "web-1".into())],
            service: Some("frontend".into()),
            ..q()
        })
        .len(),
        2,
        "resource attributes are tags too"
    );
    assert!(
        ids(TraceQuery {
            tags: vec![("http.method".into(), "get".into())],
            ..q()
        })
        .is_empty(),
        "values match exactly"
    );
    assert_eq!(
        ids(TraceQuery {
            min_duration_ns: Some(90 * MS),
            ..q()
        }),
        vec![TRACE]
    );
    assert_eq!(
        ids(TraceQuery {
            max_duration_ns: Some(4 * MS),
            service: Some("frontend".into()),
            ..q()
        }),
        vec![other]
    );
    assert_eq!(
        ids(TraceQuery {
            status: Some(StatusFilter::Error),
            ..q()
        }),
        vec![TRACE]
    );
    assert_eq!(
        ids(TraceQuery {
            kind: Some(2),
            ..q()
        })
        .len(),
        2
    );
    assert_eq!(ids(TraceQuery { limit: 1, ..q() }).len(), 1);
    let window = TraceQuery::new("default", T0 + DAY, T0 + 2 * DAY, 20);
    assert_eq!(ids(window), vec![TRACE], "a span in range finds its trace");
    assert!(
        store
            .search_trace_ids(&TraceQuery {
                limit: MAX_SEARCH_LIMIT + 1,
                ..q()
            })
            .is_err()
    );
    assert!(
        store
            .search_trace_ids(&TraceQuery::new("default", 5, 5, 1))
            .is_err()
    );
    let summaries = store.search(&q()).unwrap();
    assert_eq!(summaries[1].root_name, "GET /home");
    assert_eq!(summaries[1].span_count, 1);
}

#[test]
fn services_operations_and_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    assert_eq!(
        store.services("default").unwrap(),
        vec!["backend", "db", "frontend"]
    );
    assert!(store.services("other").unwrap().is_empty());
    let ops = store.operations("default", "backend", None).unwrap();
    assert_eq!(
        ops,
        vec![
            Operation {
                name: "GET /api".into(),
                kind: 3
            },
            Operation {
                name: "cache".into(),
                kind: 3
            }
        ]
    );
    assert_eq!(
        store.operations("default", "frontend", Some(2)).unwrap(),
        vec![Operation {
            name: "GET /".into(),
            kind: 2
        }]
    );
    assert!(
        store
            .operations("default", "frontend", Some(3))
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .operations("default", "front", None)
            .unwrap()
            .is_empty()
    );

    let deps = store
        .dependencies("default", T0 - DAY, T0 + 2 * DAY)
        .unwrap();
    let edges: Vec<(&str, &str, u64, u64)> = deps
        .edges
        .iter()
        .map(|e| {
            (
                e.parent.as_str(),
                e.child.as_str(),
                e.call_count,
                e.error_count,
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![("backend", "db", 1, 0), ("frontend", "backend", 1, 0)],
        "the cache span is backend -> backend: no edge"
    );
    assert_eq!(deps.spans_examined, 4);
    assert!(!deps.truncated);
    let first_day = store
        .dependencies("default", T0 - DAY, T0 + DAY / 2)
        .unwrap();
    assert_eq!(first_day.edges.len(), 1, "the db span is outside the range");
}

#[test]
fn replay_is_exactly_once_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, ix) = seeded(dir.path());
        assert_eq!(ix.close().unwrap(), 3);
    }
    let (store, mut ix) = open(small(dir.path())).unwrap();
    assert_eq!(ix.checkpoint_lsn(), 3);
    // Replaying batch 2 again (a WAL replay after a crash) adds nothing.
    let again = ix
        .add_batch(
            "default",
            2,
            &request(
                "frontend",
                vec![span(TRACE, 1, None, "GET /", T0, 100, false)],
            ),
        )
        .unwrap();
    assert_eq!(again.added, 0);
    assert_eq!(again.already_indexed, 1);
    ix.commit().unwrap();
    assert_eq!(store.count_spans("default").unwrap(), 4);
    assert_eq!(
        store
            .get_trace("default", &TRACE)
            .unwrap()
            .unwrap()
            .total_spans,
        4
    );
}

/// After a failed add or commit the indexing thread discards what is uncommitted and adds
/// the WAL after the checkpoint again.
#[test]
fn discarded_batches_added_again_are_indexed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    let other = [0xcd; 16];
    let batch = request(
        "frontend",
        vec![
            span(other, 1, None, "GET /retry", T0, 10, false),
            span(other, 2, Some(1), "next day", T0 + DAY, 10, false),
        ],
    );
    ix.add_batch("default", 4, &batch).unwrap();
    ix.discard_uncommitted();
    assert_eq!(ix.commit().unwrap(), 3, "nothing discarded is claimed");
    assert!(store.get_trace("default", &other).unwrap().is_none());
    let again = ix.add_batch("default", 4, &batch).unwrap();
    assert_eq!(again.added, 2);
    assert_eq!(ix.commit().unwrap(), 4);
    assert_eq!(store.count_spans("default").unwrap(), 6);
    let trace = store.get_trace("default", &other).unwrap().unwrap();
    assert_eq!(trace.total_spans, 2);
}

#[test]
fn big_traces_are_cut_at_the_limit_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = open(small(dir.path())).unwrap();
    let n = MAX_TRACE_SPANS + 5;
    let spans: Vec<Span> = (0..n)
        .map(|i| {
            let mut sp = span(TRACE, 1, Some(0), "child", T0 + i as i64, 1, false);
            sp.span_id = (i as u64 + 1).to_be_bytes().to_vec();
            sp.parent_span_id = if i == 0 {
                Vec::new()
            } else {
                1u64.to_be_bytes().to_vec()
            };
            sp.events.clear();
            sp.links.clear();
            sp
        })
        .collect();
    ix.add_batch("default", 1, &request("big", spans)).unwrap();
    ix.commit().unwrap();
    let t = store.get_trace("default", &TRACE).unwrap().unwrap();
    assert_eq!(t.total_spans, n as u64);
    assert_eq!(t.spans.len(), MAX_TRACE_SPANS);
    assert!(t.truncated);
    assert_eq!(t.spans[0].depth, 0);
    assert!(t.spans[1..].iter().all(|s| s.depth == 1));
}

/// Spans carrying megabytes each: a trace lookup stops before the span that would take
/// it past `MAX_TRACE_BYTES` and says so, and a search stops adding traces once past it.
#[test]
fn traces_of_large_spans_are_cut_at_their_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = open(small(dir.path())).unwrap();
    let pad = "x".repeat(4 << 20);
    let heavy = |trace: [u8; 16], n: usize, start: i64| -> Vec<Span> {
        (0..n)
            .map(|i| {
                let mut sp = span(trace, 1, None, "heavy", start + i as i64, 1, false);
                sp.span_id = (i as u64 + 1).to_be_bytes().to_vec();
                sp.attributes.push(kv("db.statement", s(&pad)));
                sp
            })
            .collect()
    };
    let (older, newer) = ([0x71; 16], [0x72; 16]);
    ix.add_batch("default", 1, &request("big", heavy(TRACE, 10, T0)))
        .unwrap();
    ix.add_batch("default", 2, &request("big", heavy(older, 5, T0 + 100)))
        .unwrap();
    ix.add_batch("default", 3, &request("big", heavy(newer, 5, T0 + 200)))
        .unwrap();
    ix.commit().unwrap();

    let t = store.get_trace("default", &TRACE).unwrap().unwrap();
    assert_eq!(t.total_spans, 10);
    assert_eq!(t.spans.len(), 7, "7 spans of 4 MiB fit in 32 MiB, 8 do not");
    assert!(t.truncated);
    assert!(t.stored_bytes <= MAX_TRACE_BYTES, "{}", t.stored_bytes);

    // Newest first: 20 MiB, then 40, past the limit: the oldest trace is not loaded.
    let found = store
        .search_traces(&TraceQuery::new("default", T0 - 1_000, T0 + 1_000, 10))
        .unwrap();
    let ids: Vec<[u8; 16]> = found.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, [newer, older]);
    assert!(found.iter().all(|t| !t.truncated));
}

#[test]
fn tree_order_handles_orphans_cycles_and_duplicates() {
    let mk = |id: u8, parent: Option<u8>, start: i64| StoredSpan {
        resource: Resource::default(),
        scope: InstrumentationScope::default(),
        span: span(TRACE, id, parent, &format!("s{id}"), start, 1, false),
        depth: 0,
    };
    // 5 and 6 are each other's parents; 7's parent never arrived; 8 repeats id 2.
    let spans = vec![
        mk(1, None, 0),
        mk(2, Some(1), 1),
        mk(5, Some(6), 2),
        mk(6, Some(5), 3),
        mk(3, Some(1), 4),
        mk(7, Some(42), 5),
        mk(2, Some(1), 6),
    ];
    let ordered = query::tree_order(spans);
    let got: Vec<(String, usize)> = ordered
        .iter()
        .map(|s| (s.span.name.clone(), s.depth))
        .collect();
    assert_eq!(ordered.len(), 7, "every span exactly once: {got:?}");
    assert_eq!(got[0], ("s1".into(), 0));
    assert_eq!(got[1], ("s2".into(), 1));
    assert!(got.contains(&("s7".into(), 0)), "an orphan is a root");
    assert!(got.iter().any(|(n, _)| n == "s5") && got.iter().any(|(n, _)| n == "s6"));
}

#[test]
fn retention_drops_old_days_and_bad_tenants_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    assert!(ix.add_batch("../x", 9, &request("a", vec![])).is_err());
    assert_eq!(store.num_partitions(), 2);
    let deleted = ix.apply_retention(T0 + DAY + DEFAULT_RETENTION_NS).unwrap();
    assert_eq!(deleted, 1);
    let t = store.get_trace("default", &TRACE).unwrap().unwrap();
    assert_eq!(t.total_spans, 1, "only the later day is left");
}

/// Not a pass/fail test: prints indexing throughput and trace-by-id latency for the
/// report. Run with `cargo test --release -p vantage-storage --lib traces::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_ingest_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = open(TraceStoreOptions::new(dir.path())).unwrap();
    let traces = 4_000u32;
    let per_trace = 50u32;
    let trace_id = |t: u32| {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&t.to_be_bytes());
        id[15] = 1;
        id
    };
    let started = std::time::Instant::now();
    let mut lsn = 0;
    for chunk in (0..traces).collect::<Vec<_>>().chunks(20) {
        lsn += 1;
        let spans: Vec<Span> = chunk
            .iter()
            .flat_map(|&t| {
                (0..per_trace).map(move |i| {
                    let mut sp = span(
                        trace_id(t),
                        1,
                        (i > 0).then_some(1),
                        "GET /api",
                        T0 + i64::from(t) * 1_000_000 + i64::from(i),
                        3,
                        i % 17 == 0,
                    );
                    sp.span_id = (u64::from(i) + 1).to_be_bytes().to_vec();
                    sp
                })
            })
            .collect();
        ix.add_batch("default", lsn, &request("bench", spans))
            .unwrap();
    }
    ix.commit().unwrap();
    let took = started.elapsed();
    let n = u64::from(traces * per_trace);
    println!(
        "indexed {n} spans in {:.2} s: {:.0} spans/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let mut lat = Vec::new();
    for t in (0..traces).step_by(7).take(500) {
        let s = std::time::Instant::now();
        let got = store.get_trace("default", &trace_id(t)).unwrap().unwrap();
        lat.push(s.elapsed());
        assert_eq!(got.total_spans, u64::from(per_trace));
    }
    lat.sort();
    println!(
        "trace by id ({per_trace} spans): p50 {:?} p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    let s = std::time::Instant::now();
    let deps = store.dependencies("default", T0 - DAY, T0 + DAY).unwrap();
    println!(
        "dependency map over {} spans: {:?}",
        deps.spans_examined,
        s.elapsed()
    );
}
