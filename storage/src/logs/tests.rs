//! Behaviour of the log store through its public interface.

use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::resource::v1::Resource;

use super::*;

const DAY: i64 = 86_400 * 1_000_000_000;
const T0: i64 = 20_000 * DAY + 3_600 * 1_000_000_000;

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

fn record(t: i64, severity: &str, body: &str, status: i64) -> LogRecord {
    LogRecord {
        time_unix_nano: t as u64,
        observed_time_unix_nano: t as u64 + 1,
        severity_text: severity.into(),
        severity_number: if severity == "ERROR" { 17 } else { 9 },
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes: vec![
            kv("http.status_code", any_value::Value::IntValue(status)),
            kv("http.method", s("GET")),
            kv("ratio", any_value::Value::DoubleValue(5.0)),
            kv(
                "nested",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", s("deep"))],
                }),
            ),
        ],
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        ..Default::default()
    }
}

fn request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service)), kv("host.name", s("web-1"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: (service == "checkout").then(|| InstrumentationScope {
                    name: "checkout-lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn query(text: &str) -> LogQuery {
    LogQuery {
        tenant: "default".into(),
        query: text.into(),
        start_ns: T0 - DAY,
        end_ns: T0 + 2 * DAY,
        limit: 100,
        order: SortOrder::TimeAsc,
        histogram_interval_ns: None,
        after_lsn: None,
    }
}

fn small(dir: &Path) -> LogStoreOptions {
    LogStoreOptions {
        writer_heap_bytes: 15_000_000,
        ..LogStoreOptions::new(dir)
    }
}

fn seeded(dir: &Path) -> (LogStore, LogIndexer) {
    let (store, mut indexer) = open(small(dir)).unwrap();
    let batch = request(
        "checkout",
        vec![
            record(T0, "INFO", "user logged in from berlin", 200),
            record(
                T0 + 1_000,
                "ERROR",
                "payment gateway timeout after 30s",
                500,
            ),
            record(T0 + 2_000, "error", "database connection refused", 503),
        ],
    );
    indexer.add_batch("default", 1, &batch).unwrap();
    let other = request(
        "cart",
        vec![record(T0 + DAY, "INFO", "cart emptied by user", 200)],
    );
    indexer.add_batch("default", 2, &other).unwrap();
    assert_eq!(indexer.commit().unwrap(), 2);
    (store, indexer)
}

fn bodies(r: &LogSearchResult) -> Vec<String> {
    r.hits
        .iter()
        .map(|h| {
            let rec = &h.envelope.scope_logs[0].log_records[0];
            match rec.body.as_ref().unwrap().value.as_ref().unwrap() {
                any_value::Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn terms_phrases_fields_and_booleans() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    let n = |q: &str| store.search(&query(q)).unwrap().total;
    assert_eq!(n(""), 4);
    assert_eq!(n("timeout"), 1);
    assert_eq!(n("\"gateway timeout\""), 1);
    assert_eq!(n("\"timeout gateway\""), 0);
    assert_eq!(n("user"), 2);
    assert_eq!(n("user berlin"), 1, "terms are ANDed by default");
    assert_eq!(n("berlin OR refused"), 2);
    assert_eq!(n("user -berlin"), 1);
    assert_eq!(n("user NOT berlin"), 1);
    assert_eq!(n("user AND NOT berlin"), 1);
    assert_eq!(n("NOT user"), 2);
    assert_eq!(n("-user"), 2);
    assert_eq!(n("(timeout OR refused) AND NOT gateway"), 1);
    assert_eq!(
        n("severity_text:error"),
        2,
        "severity text is case-insensitive"
    );
    assert_eq!(n("severity_text:ERROR"), 2);
    assert_eq!(n("severity_number:[17 TO 24]"), 1);
    assert_eq!(n("service.name:checkout"), 3);
    assert_eq!(n("service.name:cart"), 1);
    assert_eq!(n("resource.host.name:web-1"), 4);
    assert_eq!(n("attributes.http.method:GET"), 4);
    assert_eq!(n("attributes.http.status_code:500"), 1);
    assert_eq!(n("attributes.http.status_code:[500 TO 599]"), 2);
    assert_eq!(n("attributes.http.status_code:{500 TO *}"), 1);
    assert_eq!(n("attributes.ratio:[4.5 TO 5.5]"), 4);
    assert_eq!(n("attributes.http.status_code:* AND timeout"), 1);
    assert_eq!(n("attributes.ratio:5.0"), 4);
    assert_eq!(n("attributes.ratio:5"), 4);
    assert_eq!(
        n("attributes.http.status_code:500 OR attributes.http.status_code:503"),
        2
    );
    assert_eq!(
        n("attributes.http.status_code:500 AND attributes.http.method:GET"),
        1
    );
    assert_eq!(n("NOT attributes.http.status_code:200"), 2);
    assert_eq!(n(&format!("span_id:{}", "cd".repeat(8))), 4);
    assert_eq!(n(&format!("trace_id:{}", "ab".repeat(15) + "ac")), 0);
    assert_eq!(n(&format!("trace_id:{} AND timeout", "ab".repeat(16))), 1);
    assert!(store.search(&query("trace_id:xyz")).is_err());
    assert!(
        store
            .search(&query(&format!("trace_id:{}", "ab".repeat(17))))
            .is_err()
    );
    assert!(
        store
            .search(&query("attributes.http.method:[A TO Z]"))
            .is_err()
    );
    assert_eq!(n("attributes.nested.inner:deep"), 4);
    assert_eq!(n("scope.name:checkout-lib"), 3);
    assert_eq!(n("scope.version:1.2"), 3);
    assert_eq!(n(&format!("trace_id:{}", "ab".repeat(16))), 4);
    assert_eq!(n("service.name:checkout AND severity_text:error"), 2);
}

#[test]
fn values_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    let r = store.search(&query("timeout")).unwrap();
    let hit = &r.hits[0];
    assert_eq!(hit.time_ns, T0 + 1_000);
    assert_eq!(hit.lsn, 1);
    let rec = &hit.envelope.scope_logs[0].log_records[0];
    assert_eq!(
        rec,
        &record(
            T0 + 1_000,
            "ERROR",
            "payment gateway timeout after 30s",
            500
        )
    );
    let service = vantage_proto::logs::string_attribute(
        &hit.envelope.resource.as_ref().unwrap().attributes,
        "service.name",
    );
    assert_eq!(service, Some("checkout"));
}

#[test]
fn order_limit_and_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    let mut q = query("");
    q.order = SortOrder::TimeDesc;
    q.limit = 2;
    let r = store.search(&q).unwrap();
    assert_eq!(r.total, 4);
    assert_eq!(
        bodies(&r),
        vec!["cart emptied by user", "database connection refused"]
    );
    q.order = SortOrder::TimeAsc;
    assert_eq!(
        bodies(&store.search(&q).unwrap())[0],
        "user logged in from berlin"
    );
    q.start_ns = T0 + 1_000;
    q.end_ns = T0 + 2_000;
    q.limit = 10;
    let r = store.search(&q).unwrap();
    assert_eq!(
        bodies(&r),
        vec!["payment gateway timeout after 30s"],
        "start inclusive, end exclusive"
    );
    q.limit = MAX_LIMIT + 1;
    assert!(matches!(
        store.search(&q),
        Err(LogQueryError::BadParameter(_))
    ));
}

#[test]
fn histogram_counts_per_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    let mut q = query("");
    q.start_ns = T0;
    q.end_ns = T0 + DAY + 1;
    q.histogram_interval_ns = Some(DAY / 2);
    let h = store.search(&q).unwrap().histogram.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].start_ns, T0.div_euclid(DAY / 2) * (DAY / 2));
    assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 4);
    assert_eq!(h[0].count, 3);
    q.histogram_interval_ns = Some(1);
    assert!(matches!(
        store.search(&q),
        Err(LogQueryError::BadParameter(_))
    ));
}

#[test]
fn parse_errors_name_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _ix) = seeded(dir.path());
    match store.search(&query("body:(unclosed AND")) {
        Err(LogQueryError::Parse { position, message }) => {
            assert!(
                position <= "body:(unclosed AND".len(),
                "{position} {message}"
            );
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(store.search(&query("nosuchfield:x")).is_err());
}

#[test]
fn tenants_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    ix.add_batch(
        "team-b",
        3,
        &request("b", vec![record(T0, "INFO", "secret of b", 200)]),
    )
    .unwrap();
    ix.commit().unwrap();
    assert_eq!(store.search(&query("secret")).unwrap().total, 0);
    let mut q = query("secret");
    q.tenant = "team-b".into();
    assert_eq!(store.search(&q).unwrap().total, 1);
    assert!(ix.add_batch("../x", 4, &request("b", vec![])).is_err());
}

#[test]
fn replay_after_reopen_adds_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_s, ix) = seeded(dir.path());
        ix.close().unwrap();
    }
    let (store, mut ix) = open(small(dir.path())).unwrap();
    assert_eq!(ix.checkpoint_lsn(), 2);
    // The WAL replays batch 2 (e.g. the checkpoint file was lost): skipped.
    let again = request(
        "cart",
        vec![record(T0 + DAY, "INFO", "cart emptied by user", 200)],
    );
    let out = ix.add_batch("default", 2, &again).unwrap();
    assert_eq!(
        out,
        AddOutcome {
            added: 0,
            already_indexed: 1
        }
    );
    ix.add_batch(
        "default",
        3,
        &request("cart", vec![record(T0 + DAY, "INFO", "new", 1)]),
    )
    .unwrap();
    ix.commit().unwrap();
    assert_eq!(store.search(&query("")).unwrap().total, 5);
}

#[test]
fn uncommitted_documents_are_invisible_and_tail_follows_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    ix.add_batch(
        "default",
        3,
        &request("cart", vec![record(T0, "INFO", "late arrival", 1)]),
    )
    .unwrap();
    assert_eq!(store.search(&query("late")).unwrap().total, 0);
    ix.commit().unwrap();
    let mut q = query("");
    q.order = SortOrder::ArrivalAsc;
    q.after_lsn = Some(1);
    let r = store.search(&q).unwrap();
    assert_eq!(r.hits.iter().map(|h| h.lsn).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn retention_drops_whole_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ix) = seeded(dir.path());
    assert_eq!(store.num_partitions(), 2);
    // Now is far enough that only the first day is past a week.
    let now = T0 + 8 * DAY;
    assert_eq!(ix.apply_retention(now).unwrap(), 1);
    assert_eq!(store.num_partitions(), 1);
    assert_eq!(store.search(&query("")).unwrap().total, 1);
    drop(ix);
    let (store, _ix) = open(small(dir.path())).unwrap();
    assert_eq!(store.num_partitions(), 1);
}

#[test]
fn a_batch_over_more_days_than_open_writers_replays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |lsn: i64| {
        request(
            "cart",
            (0..4)
                .map(|d| record(T0 + d * DAY, "INFO", &format!("b{lsn} d{d}"), 200))
                .collect(),
        )
    };
    {
        let (_s, mut ix) = open(small(dir.path())).unwrap();
        ix.add_batch("default", 1, &batch(1)).unwrap();
        ix.commit().unwrap();
        // Four days, two writer slots: partitions are closed (committed) mid-batch.
        ix.add_batch("default", 2, &batch(2)).unwrap();
        // Crash: nothing else committed.
    }
    let (store, mut ix) = open(small(dir.path())).unwrap();
    assert_eq!(ix.checkpoint_lsn(), 1);
    ix.add_batch("default", 2, &batch(2)).unwrap();
    ix.commit().unwrap();
    let mut q = query("");
    q.end_ns = T0 + 5 * DAY;
    let r2 = store.search(&q).unwrap();
    assert_eq!(r2.total, 8, "{:?}", bodies(&r2));
    let mut seen = bodies(&r2);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);
}

/// Partitions written before stored records became compact hold plain envelopes; after an
/// upgrade the same day's partition gets compact ones too. Both read back exactly.
#[test]
fn plain_envelopes_of_older_versions_still_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let old = request(
        "checkout",
        vec![record(T0, "INFO", "written by an older version", 200)],
    );
    {
        let (store, mut indexer) = open(small(dir.path())).unwrap();
        let view = vantage_proto::logs::records(&old).next().unwrap();
        let doc = store
            .shared
            .fields
            .document(&view, 1, T0, &view.to_envelope());
        let key = PartitionKey::for_time("default", T0);
        let w = indexer.writer_for(&key, 1, &[]).unwrap();
        w.writer.add_document(doc).unwrap();
        w.dirty = true;
        indexer.last_added_lsn = 1;
        assert_eq!(indexer.close().unwrap(), 1);
    }
    let (store, mut indexer) = open(small(dir.path())).unwrap();
    let new = request(
        "checkout",
        vec![record(T0 + 5, "INFO", "written after the upgrade", 200)],
    );
    indexer.add_batch("default", 2, &new).unwrap();
    indexer.commit().unwrap();
    let r = store.search(&query("written")).unwrap();
    assert_eq!(r.total, 2);
    let mut got: Vec<LogRecord> = r
        .hits
        .iter()
        .map(|h| h.envelope.scope_logs[0].log_records[0].clone())
        .collect();
    got.sort_by_key(|r| r.time_unix_nano);
    let want = vec![
        old.resource_logs[0].scope_logs[0].log_records[0].clone(),
        new.resource_logs[0].scope_logs[0].log_records[0].clone(),
    ];
    assert_eq!(got, want);
}

/// New partitions take the configured doc store compression; existing ones keep theirs.
#[test]
fn doc_store_options_apply_to_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small(dir.path());
    opts.docstore = DocStoreOptions {
        zstd_level: 5,
        block_bytes: 32 * 1024,
    };
    {
        let (store, mut indexer) = open(opts.clone()).unwrap();
        let batch = request("checkout", vec![record(T0, "INFO", "first day", 200)]);
        indexer.add_batch("default", 1, &batch).unwrap();
        indexer.close().unwrap();
        let settings = store.readers_for("default", T0, T0 + 1)[0]
            .index
            .settings()
            .clone();
        assert_eq!(settings.docstore_blocksize, 32 * 1024);
    }
    opts.docstore = DocStoreOptions::default();
    let (store, mut indexer) = open(opts).unwrap();
    let batch = request("checkout", vec![record(T0 + DAY, "INFO", "next day", 200)]);
    indexer.add_batch("default", 2, &batch).unwrap();
    indexer.commit().unwrap();
    let block = |t: i64| {
        store.readers_for("default", t, t + 1)[0]
            .index
            .settings()
            .docstore_blocksize
    };
    assert_eq!(
        block(T0),
        32 * 1024,
        "an existing partition keeps its settings"
    );
    assert_eq!(block(T0 + DAY), DocStoreOptions::default().block_bytes);
    assert_eq!(store.search(&query("day")).unwrap().total, 2);
}
