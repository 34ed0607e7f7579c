//! End to end: hostile and broken input to the OTLP receivers and the query API gets a
//! precise error (or a partial success naming the rejected records), and the collector
//! goes on serving afterwards.

mod common;

use std::io::Write as _;

use hyper::StatusCode;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::logs::v1::LogRecord;

use common::*;

/// Commits more often than the default so the canary checks are quick.
fn start(dir: &std::path::Path) -> Collector {
    Collector::builder()
        .env("VANTAGE_LOGS__COMMIT_INTERVAL_MS", "200")
        .start(dir)
}

/// Deterministic noise (a 64-bit LCG), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 56) as u8
        })
        .collect()
}

/// A protobuf length-delimited field.
fn len_field(field: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128, "one-byte varint lengths only");
    let mut out = vec![(field << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// An ExportLogsServiceRequest, encoded by hand, with one record whose string body holds
/// `body` as raw bytes (so it can be invalid UTF-8, which no encoder would produce).
fn request_with_raw_string_body(body: &[u8]) -> Vec<u8> {
    let any_value = len_field(1, body); // AnyValue.string_value = 1
    let record = len_field(5, &any_value); // LogRecord.body = 5
    let scope_logs = len_field(2, &record); // ScopeLogs.log_records = 2
    let resource_logs = len_field(2, &scope_logs); // ResourceLogs.scope_logs = 2
    len_field(1, &resource_logs) // ExportLogsServiceRequest.resource_logs = 1
}

/// The `google.rpc.Status` in an OTLP/HTTP protobuf error answer.
fn rpc_status(reply: &Reply) -> tonic_types::pb::Status {
    tonic_types::pb::Status::decode(reply.body.clone())
        .unwrap_or_else(|e| panic!("error body is not a google.rpc.Status ({e}): {reply:?}"))
}

/// Asserts an OTLP/HTTP protobuf error: status, `google.rpc.Status` body with code and a
/// message containing every one of `words`.
fn assert_protobuf_error(reply: &Reply, status: StatusCode, words: &[&str]) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/x-protobuf"),
        "errors come in the request's encoding"
    );
    let rpc = rpc_status(reply);
    assert_eq!(rpc.code, Code::InvalidArgument as i32, "{rpc:?}");
    for word in words {
        assert!(
            rpc.message.contains(word),
            "message names the problem ({word}): {:?}",
            rpc.message
        );
    }
}

async fn post_protobuf(c: &Collector, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut all = vec![("content-type", "application/x-protobuf")];
    all.extend_from_slice(headers);
    c.post_otlp("/v1/logs", &all, body).await
}

#[tokio::test]
async fn malformed_and_truncated_protobuf_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    for seed in [1u64, 2, 3] {
        let reply = post_protobuf(&c, &[], noise(4096, seed)).await;
        assert_protobuf_error(&reply, StatusCode::BAD_REQUEST, &["protobuf"]);
    }
    let whole = logs_request(
        "trunc",
        vec![log_record("a complete record", vec![kv_str("k", "v")])],
    )
    .encode_to_vec();
    let reply = post_protobuf(&c, &[], whole[..whole.len() - 7].to_vec()).await;
    assert_protobuf_error(&reply, StatusCode::BAD_REQUEST, &["protobuf"]);
    let text = c.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "vantage_ingest_requests_total",
            &[
                ("signal", "logs"),
                ("protocol", "http"),
                ("outcome", "invalid_argument")
            ]
        ),
        Some(4.0),
        "{text}"
    );
    c.assert_still_serves("malformed").await;
    let all = c.search(&[("query", "")]).await;
    assert_eq!(
        all["total"],
        json!(1),
        "nothing from the bad bodies was stored"
    );
}

#[tokio::test]
async fn invalid_utf8_in_a_protobuf_string_gets_400() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    // The same hand-made framing with valid UTF-8 is accepted: the framing is right,
    // so the 400 below is about the bytes of the string.
    let reply = post_protobuf(&c, &[], request_with_raw_string_body(b"fine utf8")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = post_protobuf(
        &c,
        &[],
        request_with_raw_string_body(&[b'o', b'k', 0xff, 0xfe, 0xc3]),
    )
    .await;
    assert_protobuf_error(&reply, StatusCode::BAD_REQUEST, &["UTF-8"]);
    c.wait_for_query("fine", 1).await;
    c.assert_still_serves("utf8").await;
}

#[tokio::test]
async fn unsupported_content_type_and_encoding_get_415() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let body = logs_request("ct", vec![log_record("wrong type", vec![])]).encode_to_vec();
    for content_type in ["text/plain", "application/grpc", ""] {
        let headers: Vec<(&str, &str)> = if content_type.is_empty() {
            Vec::new()
        } else {
            vec![("content-type", content_type)]
        };
        let reply = c.post_otlp("/v1/logs", &headers, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {}",
            reply.text()
        );
        let status = reply.json();
        assert_eq!(
            status["code"],
            json!(Code::InvalidArgument as i32),
            "{status}"
        );
        assert!(
            status["message"].as_str().unwrap().contains("content-type"),
            "{status}"
        );
    }
    let reply = post_protobuf(&c, &[("content-encoding", "br")], body.clone()).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let rpc = rpc_status(&reply);
    assert!(rpc.message.contains("content-encoding"), "{rpc:?}");
    // Content-Type parameters and case do not matter.
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "Application/X-Protobuf; charset=binary")],
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    c.assert_still_serves("ctype").await;
}

#[tokio::test]
async fn gzip_bomb_gets_413_and_fake_gzip_gets_400() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    // 100 MB of zeros, about 100 KB gzipped: small on the wire, far over the 16 MiB
    // default once inflated.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 16 << 20, "the bomb itself is under the limit");
    let reply = post_protobuf(&c, &[("content-encoding", "gzip")], bomb).await;
    assert_protobuf_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, &["limit"]);

    let reply = post_protobuf(
        &c,
        &[("content-encoding", "gzip")],
        b"this is not gzip at all".to_vec(),
    )
    .await;
    assert_protobuf_error(&reply, StatusCode::BAD_REQUEST, &["gzip"]);
    // Gzip of garbage decompresses but does not decode.
    let reply = post_protobuf(&c, &[("content-encoding", "gzip")], gzip(&noise(512, 9))).await;
    assert_protobuf_error(&reply, StatusCode::BAD_REQUEST, &["protobuf"]);
    c.assert_still_serves("gzip").await;
}

#[tokio::test]
async fn bad_otlp_json_gets_400_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let record = |trace_id: &str| {
        json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
            "timeUnixNano": (now_ns() - 1_000_000_000).to_string(),
            "body": {"stringValue": "json with ids"},
            "traceId": trace_id
        }]}]}]})
        .to_string()
    };
    for body in [
        record("zz8efff798038103d269b633813fc60c"),
        record("5b8efff798038103d269b633813fc60"), // odd length
        "{\"resourceLogs\": [".to_string(),
        "[1, 2, 3]".to_string(),
        json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]})
            .to_string(),
    ] {
        let reply = c
            .post_otlp(
                "/v1/logs",
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/json")
        );
        let status = reply.json();
        assert_eq!(status["code"], json!(3), "{status}");
        assert!(
            status["message"].as_str().unwrap().contains("OTLP/JSON"),
            "{status}"
        );
    }
    let good = record("5b8efff798038103d269b633813fc60c");
    let reply = c
        .post_otlp("/v1/logs", &[("content-type", "application/json")], good)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    c.wait_for_query("trace_id:5b8efff798038103d269b633813fc60c", 1)
        .await;
    c.assert_still_serves("json").await;
}

/// Year 2500 in ns since the epoch (still fits in u64).
const YEAR_2500_NS: u64 = 16_725_225_600 * 1_000_000_000;

#[tokio::test]
async fn absurd_timestamps_are_rejected_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let now = now_ns();
    let rec = |case: &str, time: u64, observed: u64| LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed,
        body: Some(any_str("timestamps")),
        attributes: vec![kv_str("ts", case)],
        ..Default::default()
    };
    let request = logs_request(
        "clock",
        vec![
            rec("good", now - 1_000_000_000, 0),
            rec("year2500", YEAR_2500_NS, 0),
            rec("epoch1ns", 1, 0),
            rec("none", 0, 0),
            rec("oldobserved", 0, now - 30 * 86_400 * 1_000_000_000),
            rec("soon", now + 300 * 1_000_000_000, 0),
        ],
    );
    let response = c
        .logs_client()
        .await
        .export(request)
        .await
        .expect("a batch with bad records is still accepted")
        .into_inner();
    let partial = response
        .partial_success
        .expect("rejections are reported as partial success");
    assert_eq!(partial.rejected_log_records, 3, "{partial:?}");
    for word in ["timestamp_in_future", "timestamp_too_old", "rejected 3"] {
        assert!(partial.error_message.contains(word), "{partial:?}");
    }

    // The three good ones are stored; "soon" (5 minutes ahead, inside the allowed skew)
    // needs a search window that reaches into the future.
    let start = (now - 3_600 * 1_000_000_000).to_string();
    let end = (now + 3_600 * 1_000_000_000).to_string();
    let result = c
        .wait_for_total(
            &[("query", "timestamps"), ("start", &start), ("end", &end)],
            3,
        )
        .await;
    let mut cases: Vec<&str> = hits(&result)
        .iter()
        .map(|h| h["attributes"]["ts"].as_str().unwrap())
        .collect();
    cases.sort_unstable();
    assert_eq!(cases, ["good", "none", "soon"]);
    let none = hits(&result)
        .iter()
        .find(|h| h["attributes"]["ts"] == "none")
        .unwrap();
    assert_eq!(none["time_unix_nano"], json!("0"));
    let observed: u64 = none["observed_time_unix_nano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        observed.abs_diff(now) < 120 * 1_000_000_000,
        "a record with no time gets observed = now: {observed} vs {now}"
    );
    // Nothing anywhere in the representable range holds the rejected ones.
    let everything = c
        .search(&[
            ("query", "timestamps"),
            ("start", "0"),
            ("end", "2262-01-01T00:00:00Z"),
        ])
        .await;
    assert_eq!(everything["total"], json!(3));

    // The same over OTLP/JSON: partialSuccess in JSON.
    let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": YEAR_2500_NS.to_string(), "body": {"stringValue": "json future"}},
        {"timeUnixNano": (now - 1_000_000_000).to_string(), "body": {"stringValue": "json present"}}
    ]}]}]});
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    let rejected = &answer["partialSuccess"]["rejectedLogRecords"];
    assert!(rejected == 1 || rejected == "1", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("timestamp_in_future"),
        "{answer}"
    );

    let text = c.metrics_text().await;
    let rejected = |reason: &str| {
        metric_value(
            &text,
            "vantage_ingest_rejected_records_total",
            &[("signal", "logs"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("timestamp_in_future"), Some(2.0), "{text}");
    assert_eq!(rejected("timestamp_too_old"), Some(2.0), "{text}");
    c.assert_still_serves("timestamps").await;
}

#[tokio::test]
async fn too_many_attributes_are_rejected_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let attrs = |case: &str, n: usize| {
        let mut v = vec![kv_str("case", case)];
        v.extend((1..n).map(|i| kv_int(&format!("a{i}"), i as i64)));
        v
    };
    let request = logs_request(
        "wide",
        vec![
            log_record("wide record", attrs("tenthousand", 10_000)),
            log_record("wide record", attrs("atlimit", 1024)),
            log_record("wide record", attrs("overlimit", 1025)),
            log_record("wide record", attrs("narrow", 1)),
        ],
    );
    let response = c
        .logs_client()
        .await
        .export(request)
        .await
        .expect("accepted with rejections")
        .into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 2, "{partial:?}");
    assert!(
        partial.error_message.contains("too_many_attributes")
            && partial.error_message.contains("10000")
            && partial.error_message.contains("1024"),
        "names the count and the limit: {partial:?}"
    );
    let result = c.wait_for_query("wide", 2).await;
    let mut cases: Vec<&str> = hits(&result)
        .iter()
        .map(|h| h["attributes"]["case"].as_str().unwrap())
        .collect();
    cases.sort_unstable();
    assert_eq!(cases, ["atlimit", "narrow"]);
    let at_limit = hits(&result)
        .iter()
        .find(|h| h["attributes"]["case"] == "atlimit")
        .unwrap();
    assert_eq!(at_limit["attributes"].as_object().unwrap().len(), 1024);
    assert_eq!(at_limit["attributes"]["a1023"], json!(1023));
    c.assert_still_serves("attrs").await;
}

/// Values longer than Tantivy indexes (65,530 bytes) as an attribute, the service and
/// the severity: the records are kept whole and found by their other fields, and the
/// collector does not log a warning per record (it did, through Tantivy, at ingest rate).
#[tokio::test]
async fn values_past_the_term_limit_are_kept_whole_and_not_logged_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let long = "v".repeat(70_000);
    let records = (0..20)
        .map(|i| {
            let mut r = log_record(
                &format!("longvalue {i}"),
                vec![kv_str("payload", &long), kv_str("case", "longvalue")],
            );
            r.severity_text = "E".repeat(70_000);
            r
        })
        .collect();
    c.export_ok(logs_request(&"s".repeat(70_000), records))
        .await;
    let result = c.wait_for_query("attributes.case:longvalue", 20).await;
    let hit = &hits(&result)[0];
    assert_eq!(
        hit["attributes"]["payload"].as_str().map(str::len),
        Some(70_000)
    );
    assert_eq!(hit["service_name"].as_str().map(str::len), Some(70_000));
    assert_eq!(hit["severity_text"].as_str().map(str::len), Some(70_000));
    c.assert_still_serves("longvalue").await;
    let log = c.log();
    assert!(
        !log.contains("MAX_TOKEN_LEN"),
        "{}",
        &log[..log.len().min(4_000)]
    );
}

/// A request whose encoding is about `bytes` long.
fn request_of_size(bytes: usize) -> ExportLogsServiceRequest {
    logs_request("big", vec![log_record(&"x".repeat(bytes), vec![])])
}

fn start_with_small_limit(dir: &std::path::Path) -> Collector {
    Collector::builder()
        .env("VANTAGE_LOGS__COMMIT_INTERVAL_MS", "200")
        .env("VANTAGE_INGEST__MAX_REQUEST_BYTES", "1024")
        .start(dir)
}

#[tokio::test]
async fn oversized_requests_get_413_over_http_and_an_error_status_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_small_limit(dir.path());
    let big = request_of_size(4000).encode_to_vec();
    let reply = post_protobuf(&c, &[], big.clone()).await;
    assert_protobuf_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, &["1024"]);
    // Small once compressed, over the limit once inflated.
    let packed = gzip(&big);
    assert!(packed.len() < 1024);
    let reply = post_protobuf(&c, &[("content-encoding", "gzip")], packed).await;
    assert_protobuf_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, &["limit"]);
    // JSON errors stay JSON.
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "application/json")],
            format!(
                "{{\"resourceLogs\": [], \"pad\": \"{}\"}}",
                "y".repeat(4000)
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], json!(3));

    let mut client = c.logs_client().await;
    for (what, compressed) in [("plain", false), ("gzip", true)] {
        let mut attempt = client.clone();
        if compressed {
            attempt = attempt.send_compressed(CompressionEncoding::Gzip);
        }
        let status = attempt
            .export(request_of_size(4000))
            .await
            .expect_err("over the limit");
        assert!(
            !matches!(status.code(), Code::Ok | Code::Unknown | Code::Unavailable),
            "{what}: an error status from the server, not a broken connection: {status:?}"
        );
        assert!(
            status.message().contains("1024"),
            "{what}: names the limit: {status:?}"
        );
    }
    // The same connection still works.
    let ok = client
        .export(logs_request(
            "big",
            vec![log_record("small enough", vec![])],
        ))
        .await
        .expect("a small export on the same channel");
    assert_eq!(ok.into_inner().partial_success, None);
    c.wait_for_query("small", 1).await;
    c.assert_still_serves("oversized").await;
}

#[tokio::test]
async fn oversized_grpc_requests_are_not_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_small_limit(dir.path());
    let client = c.logs_client().await;
    let mut answers = Vec::new();
    for (what, compressed) in [("plain", false), ("gzip", true)] {
        let mut attempt = client.clone();
        if compressed {
            attempt = attempt.send_compressed(CompressionEncoding::Gzip);
        }
        let status = attempt
            .export(request_of_size(4000))
            .await
            .expect_err("over the limit");
        answers.push((what, status.code(), status.message().to_string()));
    }
    assert!(
        answers
            .iter()
            .all(|(_, code, _)| *code == Code::InvalidArgument),
        "OTLP exporters retry OUT_OF_RANGE and RESOURCE_EXHAUSTED; got {answers:?}"
    );
}

/// Sends one raw gRPC message to the logs Export method with the harness's token.
async fn raw_grpc_export(c: &Collector, message: &[u8]) -> (i32, String) {
    c.raw_grpc_export(Some(&bearer(c.token())), message).await
}

#[tokio::test]
async fn undecodable_grpc_messages_get_an_error_status() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    // Sanity: a valid message through the same raw path is accepted.
    let (code, message) = raw_grpc_export(
        &c,
        &logs_request("raw", vec![log_record("raw grpc ok", vec![])]).encode_to_vec(),
    )
    .await;
    assert_eq!(code, 0, "{message}");
    for (what, bytes) in [
        ("noise", noise(2048, 4)),
        ("invalid utf-8", request_with_raw_string_body(&[0xff, 0xfe])),
    ] {
        let (code, message) = raw_grpc_export(&c, &bytes).await;
        assert_eq!(
            code,
            Code::InvalidArgument as i32,
            "{what}: INVALID_ARGUMENT (not retried), got {message:?}"
        );
        // grpc-message is percent-encoded on the wire.
        assert!(
            message.replace("%20", " ").contains("not valid protobuf"),
            "{what}: {message:?}"
        );
    }
    c.wait_for_query("raw", 1).await;
    c.assert_still_serves("rawgrpc").await;
}

/// Asserts a query API error: 400 with the Prometheus-style JSON body.
fn assert_api_error(reply: &Reply, words: &[&str]) -> Value {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], json!("error"), "{body}");
    assert_eq!(body["errorType"], json!("invalid_argument"), "{body}");
    let error = body["error"].as_str().expect("an error message");
    for word in words {
        assert!(error.contains(word), "{word:?} in {error:?}");
    }
    body
}

#[tokio::test]
async fn bad_search_requests_get_400_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    c.assert_still_serves("before").await;
    for query in ["body:(", "\"unclosed phrase", "a AND (b OR"] {
        let reply = c.search_raw(&[("query", query)]).await;
        let body = assert_api_error(&reply, &["query does not parse at position"]);
        assert!(body["error"].as_str().unwrap().contains("position"));
    }
    let reply = c.search_raw(&[("query", "nosuchfield:x")]).await;
    assert_api_error(&reply, &["nosuchfield"]);
    let reply = c.search_raw(&[("limit", "20000")]).await;
    assert_api_error(&reply, &["limit", "10000"]);
    let reply = c.search_raw(&[("limit", "10000")]).await;
    assert_eq!(reply.status, StatusCode::OK, "the maximum itself is fine");
    let reply = c.search_raw(&[("limit", "-1")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let reply = c.search_raw(&[("start", "yesterday")]).await;
    assert_api_error(&reply, &["start"]);
    let reply = c.search_raw(&[("end", "now+1h")]).await;
    assert_api_error(&reply, &["end"]);
    let reply = c
        .search_raw(&[("start", "now-1h"), ("end", "now-2h")])
        .await;
    assert_api_error(&reply, &["end must be after start"]);
    let reply = c.search_raw(&[("foo", "1")]).await;
    assert_api_error(&reply, &["foo"]);
    let reply = c.search_raw(&[("order", "sideways")]).await;
    assert_api_error(&reply, &["order"]);
    let reply = c.search_raw(&[("histogram", "1ms")]).await;
    assert_api_error(&reply, &["buckets"]);
    let reply = c.search_raw(&[("histogram", "often")]).await;
    assert_api_error(&reply, &["histogram"]);
    let reply = c.api_get("/api/v1/logs/tail?query=%22open").await;
    assert_api_error(&reply, &["position"]);
    c.assert_still_serves("after").await;
}

/// Queries that once aborted the whole collector with a stack overflow: a log query of
/// 4,000 `NOT`s and a PromQL chain of 6,000 `+` (16 and 12 KB). Now each gets a 400
/// naming the limit, through every endpoint that parses one, and the collector serves on.
#[tokio::test]
async fn queries_nested_too_deep_get_400_and_the_collector_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    c.assert_still_serves("before").await;
    let nots = "NOT ".repeat(4_000) + "a";
    let reply = c.search_raw(&[("query", &nots)]).await;
    assert_api_error(
        &reply,
        &[
            "query too complex: it nests 4001 levels deep",
            "over the maximum of 64",
        ],
    );
    let groups = "(".repeat(5_000) + "a";
    let reply = c.search_raw(&[("query", &groups)]).await;
    assert_api_error(
        &reply,
        &["query too complex: it has 5000 groups and NOTs, over the maximum of 4096"],
    );
    let tail = format!(
        "/api/v1/logs/tail?{}",
        serde_urlencoded::to_string([("query", &nots)]).unwrap()
    );
    assert_api_error(&c.api_get(&tail).await, &["over the maximum of 64"]);
    // As deep as allowed is a query like any other: 63 nested alternatives, 64 levels.
    let deepest = format!(
        "{}attributes.canary:canary-before{}",
        "(nothing OR ".repeat(63),
        ")".repeat(63)
    );
    let reply = c.search_raw(&[("query", &deepest)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["total"], json!(1));
    let deeper = format!("(nothing OR {deepest})");
    assert_api_error(
        &c.search_raw(&[("query", &deeper)]).await,
        &["nests 65 levels deep"],
    );

    let chain = vec!["1"; 6_000].join("+");
    let get = format!(
        "/api/v1/query?{}",
        serde_urlencoded::to_string([("query", &chain)]).unwrap()
    );
    let reply = c.api_get(&get).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["errorType"], json!("bad_data"), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("nests 6000 expressions deep, over the maximum of 128"),
        "{error}"
    );
    // A form body as long as allowed, parsed on the deep-stack thread.
    let long = vec!["1"; 8_000].join("+");
    for (path, extra) in [
        ("/api/v1/query", ""),
        ("/api/v1/query_range", "&start=0&end=60&step=15"),
    ] {
        let form = serde_urlencoded::to_string([("query", &long)]).unwrap() + extra;
        let reply = c
            .api_request(
                hyper::Method::POST,
                path,
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text()
        );
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("nests 8000 expressions deep"),
            "{path}: {error}"
        );
    }
    let huge = "up or ".repeat(3_000) + "up";
    let form = serde_urlencoded::to_string([("query", &huge)]).unwrap();
    let reply = c
        .api_request(
            hyper::Method::POST,
            "/api/v1/query",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("18002 bytes long, over the maximum of 16384"),
        "{error}"
    );
    let reply = c.api_get("/api/v1/query?query=1%2B2").await;
    assert_eq!(
        reply.json()["data"]["result"][1],
        json!("3"),
        "{}",
        reply.text()
    );
    c.assert_still_serves("after").await;
}

#[tokio::test]
async fn overload_gets_429_with_retry_after_and_resource_exhausted_with_retry_info() {
    use tonic_types::StatusExt as _;

    let dir = tempfile::tempdir().unwrap();
    // An in-flight budget of one small request: a second request that arrives while the
    // first waits for its fsync is turned away.
    let c = Collector::builder()
        .env("VANTAGE_LOGS__COMMIT_INTERVAL_MS", "200")
        .env("VANTAGE_INGEST__MAX_REQUEST_BYTES", "1024")
        .env("VANTAGE_INGEST__MAX_INFLIGHT_BYTES", "1024")
        .env("VANTAGE_INGEST__RETRY_AFTER", "3s")
        .start(dir.path());
    let request = || logs_request("load", vec![log_record(&"z".repeat(600), vec![])]);
    let body = request().encode_to_vec();
    assert!(body.len() < 1024);

    // Bursts of concurrent exports until each protocol has been turned away once;
    // bounded, so a machine too fast to overlap two requests fails instead of hanging.
    let client = c.logs_client().await;
    let mut http_throttled = None;
    let mut grpc_throttled = None;
    for _ in 0..50 {
        if http_throttled.is_some() && grpc_throttled.is_some() {
            break;
        }
        let http = (0..16).map(|_| post_protobuf(&c, &[], body.clone()));
        let grpc = (0..16).map(|_| {
            let mut client = client.clone();
            async move { client.export(request()).await }
        });
        let (http, grpc) = tokio::join!(
            futures::future::join_all(http),
            futures::future::join_all(grpc)
        );
        for reply in http {
            match reply.status {
                StatusCode::OK => {}
                StatusCode::TOO_MANY_REQUESTS => http_throttled = Some(reply),
                other => panic!("unexpected {other}: {}", reply.text()),
            }
        }
        for answer in grpc {
            match answer {
                Ok(_) => {}
                Err(status) if status.code() == Code::ResourceExhausted => {
                    grpc_throttled = Some(status)
                }
                Err(status) => panic!("unexpected {status:?}"),
            }
        }
    }
    let reply = http_throttled.expect("some HTTP export was throttled");
    assert_eq!(
        reply.header("retry-after").as_deref(),
        Some("3"),
        "{reply:?}"
    );
    let rpc = rpc_status(&reply);
    assert_eq!(rpc.code, Code::ResourceExhausted as i32, "{rpc:?}");
    let status = grpc_throttled.expect("some gRPC export was throttled");
    let retry = status
        .get_details_retry_info()
        .unwrap_or_else(|| panic!("RESOURCE_EXHAUSTED carries RetryInfo: {status:?}"));
    assert_eq!(
        retry.retry_delay,
        Some(std::time::Duration::from_secs(3)),
        "{status:?}"
    );
    let text = c.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "vantage_ingest_requests_total",
            &[
                ("signal", "logs"),
                ("protocol", "http"),
                ("outcome", "resource_exhausted")
            ]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    c.assert_still_serves("overload").await;
}
