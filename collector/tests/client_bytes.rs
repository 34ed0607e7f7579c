//! End to end: an export that validation leaves as it is goes to the WAL as the bytes the
//! client sent, fields this collector does not know included. Those bytes must index,
//! search and replay after `kill -9` exactly like a re-encoded request, over gRPC (plain
//! and gzip) and OTLP/HTTP protobuf; a partly rejected export still stores only what
//! validation kept.

mod common;

use hyper::StatusCode;
use prost::Message as _;
use serde_json::json;
use tonic::codec::CompressionEncoding;
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};

use common::*;

/// A field number no OTLP message uses, as a varint field with value 1.
const UNKNOWN_FIELD: [u8; 3] = [0xc0, 0x3e, 0x01];

/// `tag(field, LEN) | varint len | payload`.
fn len_field(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// `request` (one resource, one scope) encoded by hand with an unknown field appended to
/// every record, the scope, the resource and the request itself.
fn with_unknown_fields(request: &ExportLogsServiceRequest) -> Vec<u8> {
    let rl = &request.resource_logs[0];
    let sl = &rl.scope_logs[0];
    let mut scope = Vec::new();
    if let Some(s) = &sl.scope {
        scope.extend(len_field(1, &s.encode_to_vec()));
    }
    for record in &sl.log_records {
        let mut r = record.encode_to_vec();
        r.extend_from_slice(&UNKNOWN_FIELD);
        scope.extend(len_field(2, &r));
    }
    scope.extend_from_slice(&UNKNOWN_FIELD);
    let mut resource = Vec::new();
    if let Some(r) = &rl.resource {
        resource.extend(len_field(1, &r.encode_to_vec()));
    }
    resource.extend(len_field(2, &scope));
    resource.extend_from_slice(&UNKNOWN_FIELD);
    let mut out = len_field(1, &resource);
    out.extend_from_slice(&UNKNOWN_FIELD);
    assert_eq!(
        ExportLogsServiceRequest::decode(out.as_slice()).expect("still decodes"),
        *request,
        "the unknown fields are skipped on decode"
    );
    out
}

fn records(tag: &str, n: i64) -> ExportLogsServiceRequest {
    logs_request(
        "client-bytes",
        (0..n)
            .map(|i| {
                log_record(
                    &format!("client bytes {tag} {i}"),
                    vec![kv_str("tag", tag), kv_int("i", i)],
                )
            })
            .collect(),
    )
}

#[tokio::test]
async fn client_bytes_index_search_and_replay_like_encoded_ones() {
    let dir = tempfile::tempdir().unwrap();
    // No commit before the crash: everything must come back from the WAL.
    let c = CollectorBuilder::default()
        .env("VANTAGE_LOGS__COMMIT_INTERVAL_MS", "60000")
        .start(dir.path());

    // gRPC, uncompressed, unknown fields at every level: stored as sent.
    let (code, message) = c
        .raw_grpc_export(
            Some(&bearer(c.token())),
            &with_unknown_fields(&records("raw", 3)),
        )
        .await;
    assert_eq!(code, 0, "{message}");

    // gRPC with gzip: the decompressed bytes are stored.
    let response = c
        .logs_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(records("gzip", 4))
        .await
        .expect("gzip export accepted")
        .into_inner();
    assert_eq!(response.partial_success, None);

    // OTLP/HTTP protobuf with unknown fields.
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[
                ("content-type", "application/x-protobuf"),
                ("authorization", &bearer(c.token())),
            ],
            with_unknown_fields(&records("http", 2)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    // Partly rejected over both protocols: one record too old, one without an observed
    // time (given one), so the request is encoded again without the rejected record.
    let mut partial = records("partial", 3);
    let recs = &mut partial.resource_logs[0].scope_logs[0].log_records;
    recs[1].time_unix_nano = 1;
    recs[1].observed_time_unix_nano = 1;
    recs[2].observed_time_unix_nano = 0;
    let (code, message) = c
        .raw_grpc_export(Some(&bearer(c.token())), &with_unknown_fields(&partial))
        .await;
    assert_eq!(code, 0, "{message}");
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[
                ("content-type", "application/x-protobuf"),
                ("authorization", &bearer(c.token())),
            ],
            with_unknown_fields(&partial),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let answer = ExportLogsServiceResponse::decode(reply.body.as_ref()).unwrap();
    assert_eq!(
        answer.partial_success.map(|p| p.rejected_log_records),
        Some(1)
    );

    // Killed before the index commits: all of it is replayed from the WAL records.
    c.kill_9();
    let c = Collector::start(dir.path());
    let replayed = c.log_events("wal replayed into the log index");
    assert_eq!(
        replayed.first().map(|e| e["batches"].clone()),
        Some(json!(5)),
        "five accepted exports replayed:\n{}",
        c.log()
    );
    // Ready means replayed: everything is searchable at once.
    for (tag, n) in [("raw", 3), ("gzip", 4), ("http", 2), ("partial", 4)] {
        let result = c
            .search(&[
                ("query", &format!("attributes.tag:{tag}")),
                ("limit", "100"),
            ])
            .await;
        assert_eq!(
            result["total"],
            json!(n),
            "{tag}: every accepted record once; collector log:\n{}",
            c.log()
        );
    }
    let observed = c
        .search(&[("query", "attributes.tag:partial AND attributes.i:2")])
        .await;
    assert_eq!(observed["total"], json!(2));
    assert!(
        hits(&observed).iter().all(|h| h["observed_time_unix_nano"]
            .as_str()
            .is_some_and(|t| t != "0")),
        "the filled-in observed time is what was stored: {observed}"
    );
    c.assert_still_serves("client-bytes").await;
}
