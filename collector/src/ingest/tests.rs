//! What the WAL holds for an export: the validated request, whether its bytes are the
//! client's own (nothing changed) or encoded again (validation dropped or changed
//! something).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use bytes::Bytes;
use prost::Message as _;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use vantage_storage::metrics::tsdb::{Tsdb, TsdbOptions};
use vantage_storage::wal::{Durable, Wal, WalOptions};

use super::{Ingest, Received, Wals, now_ns, payload, traces, validate};
use crate::auth::Principal;
use crate::config::{Config, FlagOverrides};
use crate::ratelimit::RateLimiter;
use crate::telemetry::Telemetry;

/// An open ingest path over WALs in `dir`, with the logs' and traces' durable records.
struct Harness {
    ingest: Ingest,
    logs: Receiver<Durable>,
    traces: Receiver<Durable>,
    config: Config,
}

fn harness(dir: &std::path::Path) -> Harness {
    let config = Config::load(None, &BTreeMap::new(), &FlagOverrides::default())
        .expect("the default configuration loads");
    let (logs_tx, logs) = sync_channel(16);
    let (traces_tx, traces) = sync_channel(16);
    let wal = |name: &str, sink| {
        let mut opts = WalOptions::new(dir.join(name));
        opts.fsync = false;
        Wal::open(opts, sink, None).expect("wal opens")
    };
    let wals = Wals {
        logs: wal("logs", Some(logs_tx)),
        metrics: wal("metrics", None),
        traces: wal("traces", Some(traces_tx)),
    };
    let tsdb = Tsdb::open(TsdbOptions::new(dir.join("tsdb"))).expect("tsdb opens");
    let ingest = Ingest::new(
        wals,
        tsdb,
        Arc::new(crate::reload::Live::new(config.clone())),
        Arc::new(RateLimiter::new(config.rates)),
        Arc::new(Telemetry::new()),
    );
    ingest.open();
    Harness {
        ingest,
        logs,
        traces,
        config,
    }
}

fn principal() -> Principal {
    Principal {
        tenant: "acme".into(),
        scopes: vec![],
        key_id: None,
        user: None,
    }
}

fn record(time: u64, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        attributes: vec![KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(7)),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `request` encoded, then a field this schema does not have (number 1000, varint 1):
/// what a newer client may send.
fn with_unknown_field(request: &impl prost::Message) -> Bytes {
    let mut bytes = request.encode_to_vec();
    bytes.extend_from_slice(&[0xc0, 0x3e, 0x01]);
    Bytes::from(bytes)
}

/// The body of the one WAL record the export wrote, checked for tenant and batch id.
fn wal_body(durable: &Receiver<Durable>, batch_id: Option<u128>) -> Bytes {
    let record = durable.recv().expect("the export wrote a WAL record");
    let framed = payload::decode_framed(&record.payload).expect("the record is framed");
    assert_eq!(framed.tenant, "acme");
    assert_eq!(framed.batch_id, batch_id);
    Bytes::copy_from_slice(framed.body)
}

#[tokio::test]
async fn an_unchanged_logs_export_is_stored_as_the_client_sent_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();
    let request = logs_request(vec![record(now, "a"), record(now, "b")]);
    let bytes = with_unknown_field(&request);
    let accepted = h
        .ingest
        .export_logs(&principal(), Received::Protobuf(bytes.clone()), Some(42))
        .await
        .unwrap();
    assert_eq!(accepted.rejected, 0);
    let body = wal_body(&h.logs, Some(42));
    assert_eq!(body, bytes, "the client's bytes, unknown field and all");
    assert_eq!(ExportLogsServiceRequest::decode(body).unwrap(), request);
}

#[tokio::test]
async fn a_partly_rejected_logs_export_is_stored_as_validated() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();
    let mut no_observed = record(now, "no observed time");
    no_observed.observed_time_unix_nano = 0;
    let request = logs_request(vec![record(now, "kept"), record(1, "too old"), no_observed]);
    let bytes = with_unknown_field(&request);
    let accepted = h
        .ingest
        .export_logs(&principal(), Received::Protobuf(bytes), None)
        .await
        .unwrap();
    assert_eq!(accepted.rejected, 1);
    let body = wal_body(&h.logs, None);
    let stored = ExportLogsServiceRequest::decode(body).unwrap();
    let kept = &stored.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0], record(now, "kept"));
    assert_ne!(kept[1].observed_time_unix_nano, 0, "given an observed time");
    // Exactly what validation made of the request (its `now` aside).
    let mut validated = request;
    let limits = validate::Limits {
        max_attributes: h.config.max_attributes_per_record,
        max_future_skew: h.config.max_future_skew,
        max_age: h.config.retention_logs,
    };
    validate::logs(&mut validated, &limits, kept[1].observed_time_unix_nano);
    assert_eq!(stored, validated);
}

#[tokio::test]
async fn a_logs_export_without_its_bytes_is_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();
    let request = logs_request(vec![record(now, "from json")]);
    h.ingest
        .export_logs(
            &principal(),
            Received::Decoded {
                request: request.clone(),
                size: 10,
            },
            None,
        )
        .await
        .unwrap();
    let body = wal_body(&h.logs, None);
    assert_eq!(ExportLogsServiceRequest::decode(body).unwrap(), request);
}

/// Undecoded bytes (how gRPC hands over a logs export) that validation keeps as they
/// are: stored as they came, with the records counted.
#[tokio::test]
async fn clean_undecoded_logs_bytes_are_stored_without_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();
    let request = logs_request(vec![record(now, "a"), record(now, "b"), record(now, "c")]);
    let bytes = Bytes::from(request.encode_to_vec());
    let accepted = h
        .ingest
        .export_logs(&principal(), Received::Protobuf(bytes.clone()), Some(7))
        .await
        .unwrap();
    assert_eq!((accepted.rejected, accepted.message.as_str()), (0, ""));
    assert_eq!(wal_body(&h.logs, Some(7)), bytes);
    let counted = h
        .ingest
        .telemetry
        .ingest_records
        .get_or_create(&crate::telemetry::SignalLabels { signal: "logs" })
        .get();
    assert_eq!(counted, 3);
}

/// Undecoded bytes the scan does not vouch for (an unknown field) or that validation
/// changes (a record too old, one without an observed time) take the decoding path:
/// the same outcome as decoded ones.
#[tokio::test]
async fn undecoded_logs_bytes_validation_must_change_are_decoded_first() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();
    let clean = logs_request(vec![record(now, "kept")]);
    let unknown = with_unknown_field(&clean);
    h.ingest
        .export_logs(&principal(), Received::Protobuf(unknown.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        wal_body(&h.logs, None),
        unknown,
        "unchanged: still its bytes"
    );

    let mut no_observed = record(now, "no observed time");
    no_observed.observed_time_unix_nano = 0;
    let mixed = logs_request(vec![record(now, "kept"), record(1, "too old"), no_observed]);
    let accepted = h
        .ingest
        .export_logs(
            &principal(),
            Received::Protobuf(Bytes::from(mixed.encode_to_vec())),
            None,
        )
        .await
        .unwrap();
    assert_eq!(accepted.rejected, 1);
    assert!(
        accepted.message.contains("timestamp_too_old"),
        "{}",
        accepted.message
    );
    let stored = ExportLogsServiceRequest::decode(wal_body(&h.logs, None)).unwrap();
    let kept = &stored.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(kept.len(), 2);
    assert_ne!(kept[1].observed_time_unix_nano, 0, "given an observed time");
}

#[tokio::test]
async fn undecodable_logs_bytes_are_the_clients_error_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let mut bytes = logs_request(vec![record(now_ns(), "x")]).encode_to_vec();
    bytes.truncate(bytes.len() - 1);
    let error = h
        .ingest
        .export_logs(&principal(), Received::Protobuf(Bytes::from(bytes)), None)
        .await
        .unwrap_err();
    assert_eq!(error.code, vantage_proto::ErrorCode::InvalidArgument);
    assert!(
        error.message.contains("not valid protobuf"),
        "{}",
        error.message
    );
    assert!(h.logs.try_recv().is_err(), "nothing reached the WAL");
}

fn span(parent: Vec<u8>, start: u64) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: parent,
        name: "op".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 5,
        ..Default::default()
    }
}

fn traces_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn traces_exports_are_stored_as_sent_or_as_validated() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let now = now_ns();

    let clean = traces_request(vec![span(vec![3; 8], now), span(vec![], now)]);
    let bytes = with_unknown_field(&clean);
    let accepted = h
        .ingest
        .export_traces(&principal(), Received::Protobuf(bytes.clone()), None)
        .await
        .unwrap();
    assert_eq!(accepted.rejected, 0);
    assert_eq!(wal_body(&h.traces, None), bytes);

    // An all-zero parent is cleared and a span without start time dropped.
    let mixed = traces_request(vec![span(vec![0; 8], now), span(vec![], 0)]);
    let bytes = with_unknown_field(&mixed);
    let accepted = h
        .ingest
        .export_traces(&principal(), Received::Protobuf(bytes), None)
        .await
        .unwrap();
    assert_eq!(accepted.rejected, 1);
    let stored = ExportTraceServiceRequest::decode(wal_body(&h.traces, None)).unwrap();
    let mut validated = mixed;
    let limits = traces::SpanLimits {
        max_attributes: h.config.max_attributes_per_record,
        max_future_skew: h.config.max_future_skew,
        max_age: h.config.retention_traces,
    };
    traces::validate(&mut validated, &limits, now);
    assert_eq!(stored, validated);
    assert!(
        stored.resource_spans[0].scope_spans[0].spans[0]
            .parent_span_id
            .is_empty()
    );
}

#[test]
fn long_reject_messages_keep_their_start_and_their_reason() {
    let short = "series up{job=\"a\"}: out of order".to_string();
    assert_eq!(super::cut_middle(short.clone(), 1024), short);
    let long = format!(
        "series m{{big=\"{}\"}}: value of label \"big\" is 100000 bytes, more than 16384",
        "é".repeat(50_000)
    );
    let cut = super::cut_middle(long.clone(), 1024);
    assert!(cut.len() <= 1024 + 40, "{}", cut.len());
    assert!(cut.starts_with("series m{big=\""), "{cut}");
    assert!(cut.ends_with("bytes, more than 16384"), "{cut}");
    // The kept start and end are the message's, and the count is what lies between.
    let parts: Vec<&str> = cut.split(" … ").collect();
    assert_eq!(parts.len(), 3, "{cut}");
    assert!(long.starts_with(parts[0]) && long.ends_with(parts[2]));
    assert_eq!(
        parts[1],
        format!(
            "({} bytes cut)",
            long.len() - parts[0].len() - parts[2].len()
        )
    );
}
