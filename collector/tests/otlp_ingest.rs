//! End to end: OTLP in (gRPC and HTTP, every encoding and compression the collector
//! accepts), search, tail and the CLI out, against the real binary on real sockets.

mod common;

use std::time::Duration;

use hyper::StatusCode;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::codec::CompressionEncoding;
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

use common::*;

const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
];
const TRACE_ID_HEX: &str = "5b8efff798038103d269b633813fc60c";
const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];
const SPAN_ID_HEX: &str = "eee19b7ec3c1b174";

/// A record carrying every kind of attribute value and every record field.
fn rich_record(case: &str, time_ns: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: time_ns,
        observed_time_unix_nano: time_ns + 1_000,
        severity_number: 17,
        severity_text: "ERROR".to_string(),
        body: Some(any_str(&format!("payment failed for order {case}"))),
        attributes: vec![
            kv_str("case", case),
            kv_int("int", 42),
            kv_int("big", i64::MAX),
            kv("double", any_double(5.0)),
            kv("bool", any_bool(true)),
            kv(
                "map",
                any_map(vec![
                    kv_str("k", "v"),
                    kv("inner", any_map(vec![kv_int("n", 7)])),
                ]),
            ),
            kv(
                "array",
                any_array(vec![any_str("a"), any_int(1), any_bool(false)]),
            ),
            kv("bytes", any_bytes(&[0xde, 0xad, 0xbe, 0xef])),
        ],
        dropped_attributes_count: 3,
        flags: 1,
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        event_name: "payment.failed".to_string(),
    }
}

/// A request around [`rich_record`] with a full resource and scope.
fn rich_request(case: &str, time_ns: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "checkout"),
                    kv_str("host.name", "web-1"),
                    kv_int("replica", 3),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "payments".to_string(),
                    version: "2.1.0".to_string(),
                    attributes: vec![kv_str("scope.attr", "s")],
                    ..Default::default()
                }),
                log_records: vec![rich_record(case, time_ns)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Checks every field of a hit made from [`rich_request`].
fn assert_rich_hit(hit: &Value, case: &str, time_ns: u64) {
    assert_eq!(hit["time_unix_nano"], json!(time_ns.to_string()), "{hit}");
    assert_eq!(
        hit["observed_time_unix_nano"],
        json!((time_ns + 1_000).to_string())
    );
    let ts = hit["timestamp"].as_str().expect("timestamp is a string");
    assert!(
        ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
        "RFC 3339 timestamp: {ts}"
    );
    assert_eq!(hit["severity_number"], json!(17));
    assert_eq!(hit["severity_text"], json!("ERROR"));
    assert_eq!(
        hit["body"],
        json!(format!("payment failed for order {case}"))
    );
    let attrs = &hit["attributes"];
    assert_eq!(attrs["case"], json!(case));
    assert!(
        attrs["int"].is_i64(),
        "an int stays an int: {}",
        attrs["int"]
    );
    assert_eq!(attrs["int"], json!(42));
    assert_eq!(attrs["big"], json!(i64::MAX), "int64 survives exactly");
    assert!(
        attrs["double"].is_f64(),
        "a double stays a double: {}",
        attrs["double"]
    );
    assert_eq!(attrs["double"].as_f64(), Some(5.0));
    assert!(
        hit.to_string().contains("\"double\":5.0"),
        "5.0 is rendered as 5.0: {hit}"
    );
    assert_eq!(attrs["bool"], json!(true));
    assert_eq!(attrs["map"], json!({"k": "v", "inner": {"n": 7}}));
    assert_eq!(attrs["array"], json!(["a", 1, false]));
    assert_eq!(attrs["bytes"], json!("3q2+7w=="), "bytes are base64");
    assert_eq!(
        hit["resource"],
        json!({"service.name": "checkout", "host.name": "web-1", "replica": 3})
    );
    assert_eq!(hit["service_name"], json!("checkout"));
    assert_eq!(
        hit["scope"],
        json!({"name": "payments", "version": "2.1.0", "attributes": {"scope.attr": "s"}})
    );
    assert_eq!(hit["trace_id"], json!(TRACE_ID_HEX));
    assert_eq!(hit["span_id"], json!(SPAN_ID_HEX));
    assert_eq!(hit["flags"], json!(1));
    assert_eq!(hit["event_name"], json!("payment.failed"));
    assert_eq!(hit["dropped_attributes_count"], json!(3));
}

async fn assert_only_hit_is_rich(c: &Collector, case: &str, time_ns: u64) {
    let result = c
        .wait_for_query(&format!("attributes.case:{case}"), 1)
        .await;
    assert_rich_hit(&hits(&result)[0], case, time_ns);
}

#[tokio::test]
async fn grpc_logs_plain_gzip_and_zstd_are_searchable_with_every_field_intact() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let t = now_ns() - 5_000_000_000;
    let cases = [
        ("plain", None),
        ("gzip", Some(CompressionEncoding::Gzip)),
        ("zstd", Some(CompressionEncoding::Zstd)),
    ];
    for (case, compression) in cases {
        let mut client = c.logs_client().await;
        if let Some(encoding) = compression {
            client = client.send_compressed(encoding);
        }
        let acked = tokio::time::Instant::now();
        let response = client
            .export(rich_request(case, t))
            .await
            .unwrap_or_else(|s| panic!("{case} export failed: {s:?}"))
            .into_inner();
        assert_eq!(response.partial_success, None, "{case}: nothing rejected");
        assert_only_hit_is_rich(&c, case, t).await;
        assert!(
            acked.elapsed() < Duration::from_secs(10),
            "{case}: searchable {:?} after the ack; the promise is ~1-2 s",
            acked.elapsed()
        );
    }
    // A map body stays a JSON object.
    let mut record = log_record("", vec![kv_str("case", "mapbody")]);
    record.body = Some(any_map(vec![
        kv_str("event", "login"),
        kv_int("attempt", 2),
    ]));
    c.export_ok(logs_request("auth", vec![record])).await;
    let result = c.wait_for_query("attributes.case:mapbody", 1).await;
    assert_eq!(
        hits(&result)[0]["body"],
        json!({"event": "login", "attempt": 2})
    );
    let all = c.search(&[("query", "")]).await;
    assert_eq!(all["total"], json!(4), "each export stored exactly once");
}

#[tokio::test]
async fn http_protobuf_plain_and_gzip_are_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let t = now_ns() - 3_000_000_000;
    for (case, gzipped) in [("httpplain", false), ("httpgzip", true)] {
        let mut body = rich_request(case, t).encode_to_vec();
        let mut headers = vec![("content-type", "application/x-protobuf")];
        if gzipped {
            body = gzip(&body);
            headers.push(("content-encoding", "gzip"));
        }
        let reply = c.post_otlp("/v1/logs", &headers, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/x-protobuf"),
            "{case}: the answer is in the request's encoding"
        );
        let response = ExportLogsServiceResponse::decode(reply.body.clone())
            .expect("the answer is an ExportLogsServiceResponse");
        assert_eq!(response.partial_success, None, "{case}: nothing rejected");
        assert_only_hit_is_rich(&c, case, t).await;
    }
}

#[tokio::test]
async fn http_json_written_by_hand_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let t = now_ns() - 2_000_000_000;
    // OTLP/JSON as the specification writes it: hex ids, int64 as strings, enums as ints.
    let body = json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "json-svc"}},
                {"key": "host.name", "value": {"stringValue": "web-9"}}
            ]},
            "scopeLogs": [{
                "scope": {"name": "json-scope", "version": "0.1"},
                "logRecords": [{
                    "timeUnixNano": t.to_string(),
                    "observedTimeUnixNano": t.to_string(),
                    "severityNumber": 13,
                    "severityText": "WARN",
                    "body": {"stringValue": "disk almost full"},
                    "attributes": [
                        {"key": "case", "value": {"stringValue": "json"}},
                        {"key": "count", "value": {"intValue": "42"}},
                        {"key": "ratio", "value": {"doubleValue": 0.25}},
                        {"key": "ok", "value": {"boolValue": false}},
                        {"key": "raw", "value": {"bytesValue": "3q2+7w=="}},
                        {"key": "list", "value": {"arrayValue": {"values": [
                            {"stringValue": "x"}, {"intValue": "7"}
                        ]}}}
                    ],
                    "traceId": TRACE_ID_HEX,
                    "spanId": SPAN_ID_HEX,
                    "flags": 1,
                    "unknownFieldsAreIgnored": true
                }]
            }]
        }]
    });
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let answer = reply.json();
    assert!(answer.is_object(), "{answer}");
    assert!(
        answer.get("partialSuccess").is_none_or(|p| p
            .get("rejectedLogRecords")
            .is_none_or(|n| n == 0 || n == "0")),
        "nothing rejected: {answer}"
    );
    let result = c.wait_for_query("attributes.case:json", 1).await;
    let hit = &hits(&result)[0];
    assert_eq!(hit["time_unix_nano"], json!(t.to_string()));
    assert_eq!(hit["severity_number"], json!(13));
    assert_eq!(hit["severity_text"], json!("WARN"));
    assert_eq!(hit["body"], json!("disk almost full"));
    assert_eq!(hit["attributes"]["count"], json!(42), "string int64 -> int");
    assert_eq!(hit["attributes"]["ratio"], json!(0.25));
    assert_eq!(hit["attributes"]["ok"], json!(false));
    assert_eq!(hit["attributes"]["raw"], json!("3q2+7w=="));
    assert_eq!(hit["attributes"]["list"], json!(["x", 7]));
    assert_eq!(hit["trace_id"], json!(TRACE_ID_HEX));
    assert_eq!(hit["span_id"], json!(SPAN_ID_HEX));
    assert_eq!(hit["service_name"], json!("json-svc"));
    assert_eq!(hit["resource"]["host.name"], json!("web-9"));
    assert_eq!(hit["scope"]["name"], json!("json-scope"));
    // The same record is found by its hex trace id.
    let by_trace = c
        .search(&[("query", &format!("trace_id:{TRACE_ID_HEX}"))])
        .await;
    assert_eq!(by_trace["total"], json!(1));
}

fn gauge_request(points: usize) -> ExportMetricsServiceRequest {
    let t = now_ns();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "metrics-svc")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".to_string(),
                    unit: "1".to_string(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..points)
                            .map(|i| NumberDataPoint {
                                attributes: vec![kv_int("queue", i as i64)],
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsInt(i as i64)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn spans_request(spans: usize) -> ExportTraceServiceRequest {
    let t = now_ns();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "traces-svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: TRACE_ID.to_vec(),
                        span_id: vec![1, 2, 3, 4, 5, 6, 7, i as u8],
                        name: format!("op-{i}"),
                        kind: 2,
                        start_time_unix_nano: t - 1_000_000,
                        end_time_unix_nano: t,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn metrics_and_traces_exports_are_acknowledged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let before = c.metrics_text().await;
    let wal = |text: &str, signal: &str| {
        metric_value(text, "vantage_wal_bytes", &[("signal", signal)]).unwrap_or(0.0)
    };

    let channel = c.grpc_channel().await;
    let metrics = MetricsServiceClient::new(channel.clone())
        .export(gauge_request(2))
        .await
        .expect("gRPC metrics export")
        .into_inner();
    assert_eq!(metrics.partial_success, None);
    let traces = TraceServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .export(spans_request(3))
        .await
        .expect("gRPC traces export")
        .into_inner();
    assert_eq!(traces.partial_success, None);

    let reply = c
        .post_otlp(
            "/v1/metrics",
            &[("content-type", "application/x-protobuf")],
            gauge_request(1).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let span_json = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "traces-svc"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
            "traceId": TRACE_ID_HEX, "spanId": SPAN_ID_HEX, "name": "GET /",
            "kind": 2, "startTimeUnixNano": (now_ns() - 1_000).to_string(),
            "endTimeUnixNano": now_ns().to_string(), "status": {}
        }]}]
    }]});
    let reply = c
        .post_otlp(
            "/v1/traces",
            &[("content-type", "application/json")],
            span_json.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.json().is_object());

    let text = c.metrics_text().await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics:\n{text}"))
    };
    assert_eq!(
        value("vantage_ingest_records_total", &[("signal", "metrics")]),
        3.0
    );
    assert_eq!(
        value("vantage_ingest_records_total", &[("signal", "traces")]),
        4.0
    );
    for (signal, protocol) in [
        ("metrics", "grpc"),
        ("metrics", "http"),
        ("traces", "grpc"),
        ("traces", "http"),
    ] {
        assert_eq!(
            value(
                "vantage_ingest_requests_total",
                &[
                    ("signal", signal),
                    ("protocol", protocol),
                    ("outcome", "ok")
                ]
            ),
            1.0,
            "{signal} over {protocol}"
        );
    }
    for signal in ["metrics", "traces"] {
        assert!(
            wal(&text, signal) > wal(&before, signal),
            "the {signal} WAL grew: {} -> {}",
            wal(&before, signal),
            wal(&text, signal)
        );
    }
    assert_eq!(
        metric_value(&text, "vantage_ingest_records_total", &[("signal", "logs")]).unwrap_or(0.0),
        0.0,
        "metrics and traces are not counted as logs"
    );
}

/// Five records that differ in every searchable field.
fn query_corpus() -> ExportLogsServiceRequest {
    let now = now_ns();
    let other_trace = [7u8; 16];
    #[allow(clippy::type_complexity)]
    let rows: [(
        &str,
        i32,
        &str,
        &str,
        i64,
        Option<&str>,
        &str,
        &str,
        &str,
        &[u8],
    ); 5] = [
        (
            "checkout",
            17,
            "ERROR",
            "payment timeout while charging card",
            500,
            Some("POST"),
            "web-1",
            "payments",
            "payment.failed",
            &TRACE_ID,
        ),
        (
            "checkout",
            13,
            "WARN",
            "connection refused by upstream",
            503,
            Some("GET"),
            "web-2",
            "payments",
            "",
            &[],
        ),
        (
            "frontend",
            9,
            "INFO",
            "refused connection attempt logged",
            200,
            Some("GET"),
            "web-1",
            "http",
            "",
            &[],
        ),
        (
            "frontend",
            17,
            "error",
            "timeout contacting backend",
            504,
            None,
            "web-2",
            "http",
            "backend.timeout",
            &[],
        ),
        (
            "frontend",
            5,
            "DEBUG",
            "cache hit",
            404,
            None,
            "web-3",
            "cache",
            "",
            &other_trace,
        ),
    ];
    let resource_logs = rows
        .iter()
        .enumerate()
        .map(
            |(i, &(service, sev, sev_text, body, status, method, host, scope, event, trace))| {
                let mut attributes = vec![kv_int("http.status_code", status)];
                if let Some(m) = method {
                    attributes.push(kv_str("http.method", m));
                }
                let t = now - (i as u64 + 1) * 1_000_000_000;
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![
                            kv_str("service.name", service),
                            kv_str("host.name", host),
                        ],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: scope.to_string(),
                            ..Default::default()
                        }),
                        log_records: vec![LogRecord {
                            time_unix_nano: t,
                            severity_number: sev,
                            severity_text: sev_text.to_string(),
                            body: Some(any_str(body)),
                            attributes,
                            trace_id: trace.to_vec(),
                            span_id: if trace.is_empty() {
                                Vec::new()
                            } else {
                                SPAN_ID.to_vec()
                            },
                            event_name: event.to_string(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            },
        )
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

#[tokio::test]
async fn query_syntax_selects_the_right_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    c.export_ok(query_corpus()).await;
    c.wait_for_query("", 5).await;
    let cases: &[(&str, u64)] = &[
        ("", 5),
        ("*", 5),
        ("timeout", 2),
        ("payment timeout", 1),
        ("\"connection refused\"", 1),
        ("connection refused", 2),
        ("connection AND refused", 2),
        ("timeout OR refused", 4),
        ("timeout -payment", 1),
        ("timeout AND NOT payment", 1),
        ("NOT timeout", 3),
        ("-timeout", 3),
        ("severity_text:error", 2),
        ("severity_text:ERROR", 2),
        ("severity_text:Warn", 1),
        ("severity_number:17", 2),
        ("severity_number:[13 TO 24]", 3),
        ("service.name:checkout", 2),
        ("service.name:frontend AND severity_text:error", 1),
        (&format!("trace_id:{TRACE_ID_HEX}"), 1),
        (&format!("span_id:{SPAN_ID_HEX}"), 2),
        ("attributes.http.status_code:500", 1),
        ("attributes.http.status_code:[500 TO 599]", 3),
        ("attributes.http.method:GET", 2),
        ("attributes.http.method:GET AND service.name:checkout", 1),
        ("resource.host.name:web-1", 2),
        ("scope.name:payments", 2),
        ("event_name:payment.failed", 1),
        ("(timeout OR refused) AND service.name:frontend", 2),
    ];
    let mut wrong = Vec::new();
    for (query, expected) in cases {
        let result = c.search(&[("query", query)]).await;
        let total = result["total"].as_u64().expect("total is a number");
        if total != *expected {
            wrong.push(format!("{query:?}: total {total}, expected {expected}"));
        }
        assert_eq!(
            hits(&result).len() as u64,
            total.min(100),
            "{query}: hits up to the default limit"
        );
    }
    assert!(
        wrong.is_empty(),
        "queries with wrong counts:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn histogram_buckets_sum_to_total_and_land_where_the_records_are() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    const MINUTE: u64 = 60_000_000_000;
    let start = (now_ns() - 30 * MINUTE) / MINUTE * MINUTE;
    let end = start + 20 * MINUTE;
    // Records per minute bucket, plus one just before the range that must not count.
    let minutes = [0u64, 0, 0, 3, 7, 7, 19];
    let mut records: Vec<LogRecord> = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = log_record("histogram", vec![kv_int("i", i as i64)]);
            r.time_unix_nano = start + m * MINUTE + (i as u64 + 1) * 1_000_000_000;
            r
        })
        .collect();
    let mut outside = log_record("histogram", vec![]);
    outside.time_unix_nano = start - 1;
    records.push(outside);
    c.export_ok(logs_request("hist", records)).await;
    c.wait_for_query("histogram", 8).await;

    let (s, e) = (start.to_string(), end.to_string());
    let result = c
        .search(&[
            ("query", "histogram"),
            ("start", &s),
            ("end", &e),
            ("histogram", "1m"),
        ])
        .await;
    assert_eq!(result["total"], json!(7), "the record before start is out");
    let buckets = result["histogram"]
        .as_array()
        .expect("histogram is asked for");
    assert!(
        buckets.len() >= 20,
        "one bucket per minute: {}",
        buckets.len()
    );
    let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(sum, 7, "buckets sum to the total");
    for (i, bucket) in buckets.iter().enumerate() {
        let bucket_start = start + i as u64 * MINUTE;
        assert_eq!(bucket["start_unix_nano"], json!(bucket_start.to_string()));
        assert!(bucket["start"].as_str().unwrap().ends_with('Z'), "{bucket}");
        let expected = minutes.iter().filter(|&&m| m == i as u64).count() as u64;
        assert_eq!(bucket["count"], json!(expected), "bucket {i}: {bucket}");
    }
    // Unix seconds and RFC 3339 mean the same range.
    let secs_start = (start / 1_000_000_000).to_string();
    let secs_end = (end / 1_000_000_000).to_string();
    let by_secs = c
        .search(&[
            ("query", "histogram"),
            ("start", &secs_start),
            ("end", &secs_end),
        ])
        .await;
    assert_eq!(by_secs["total"], json!(7));
    let first_bucket = buckets[0]["start"].as_str().unwrap().to_string();
    let by_rfc = c
        .search(&[
            ("query", "histogram"),
            ("start", &first_bucket),
            ("end", "now"),
        ])
        .await;
    assert_eq!(by_rfc["total"], json!(7));
}

#[tokio::test]
async fn order_asc_and_desc_sort_by_time_and_limit_keeps_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let now = now_ns();
    // Sent out of order on purpose.
    let ages = [30u64, 10, 50, 20, 40];
    let records = ages
        .iter()
        .map(|age| {
            let mut r = log_record("ordered", vec![kv_int("age", *age as i64)]);
            r.time_unix_nano = now - age * 1_000_000_000;
            r
        })
        .collect();
    c.export_ok(logs_request("order", records)).await;
    c.wait_for_query("ordered", 5).await;
    let ages_of = |result: &Value| -> Vec<i64> {
        hits(result)
            .iter()
            .map(|h| h["attributes"]["age"].as_i64().unwrap())
            .collect()
    };
    let asc = c.search(&[("query", "ordered"), ("order", "asc")]).await;
    assert_eq!(ages_of(&asc), vec![50, 40, 30, 20, 10], "oldest first");
    let desc = c.search(&[("query", "ordered"), ("order", "desc")]).await;
    assert_eq!(ages_of(&desc), vec![10, 20, 30, 40, 50], "newest first");
    let default = c.search(&[("query", "ordered")]).await;
    assert_eq!(ages_of(&default), ages_of(&desc), "desc is the default");
    let two = c
        .search(&[("query", "ordered"), ("order", "asc"), ("limit", "2")])
        .await;
    assert_eq!(ages_of(&two), vec![50, 40]);
    assert_eq!(
        two["total"],
        json!(5),
        "total counts all matches, not the page"
    );
    let times: Vec<u64> = hits(&desc)
        .iter()
        .map(|h| h["time_unix_nano"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
}

#[tokio::test]
async fn search_merges_day_partitions_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    const DAY: u64 = 86_400_000_000_000;
    let now = now_ns();
    // Days apart, so each record lands in its own daily partition; sent out of order.
    let days_ago = [1u64, 3, 0, 2];
    let records = days_ago
        .iter()
        .map(|d| {
            let mut r = log_record("spanning days", vec![kv_int("days_ago", *d as i64)]);
            r.time_unix_nano = now - d * DAY - 1_000_000_000;
            r
        })
        .collect();
    c.export_ok(logs_request("days", records)).await;
    let params = |order: &'static str, limit: &'static str| {
        [
            ("query", "spanning"),
            ("start", "now-5d"),
            ("order", order),
            ("limit", limit),
        ]
    };
    c.wait_for_total(&params("asc", "100"), 4).await;
    let days = |result: &Value| -> Vec<i64> {
        hits(result)
            .iter()
            .map(|h| h["attributes"]["days_ago"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(days(&c.search(&params("asc", "100")).await), [3, 2, 1, 0]);
    assert_eq!(days(&c.search(&params("desc", "100")).await), [0, 1, 2, 3]);
    let page = c.search(&params("desc", "2")).await;
    assert_eq!(days(&page), [0, 1], "the newest across all partitions");
    assert_eq!(page["total"], json!(4));
    // The default window (the last hour) opens only today's partition.
    assert_eq!(c.search(&[("query", "spanning")]).await["total"], json!(1));
    let two_days = c
        .search(&[
            ("query", "spanning"),
            ("start", "now-50h"),
            ("end", "now-20h"),
        ])
        .await;
    assert_eq!(days(&two_days), [1, 2]);
}

#[tokio::test]
async fn tail_streams_records_acknowledged_after_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    c.export_ok(logs_request(
        "tail",
        vec![log_record("tailed before", vec![kv_str("when", "before")])],
    ))
    .await;
    c.wait_for_query("tailed", 1).await;

    let mut body = c.open_tail("tailed").await;
    c.export_ok(logs_request(
        "tail",
        vec![
            log_record("not matching", vec![kv_str("when", "after")]),
            log_record("tailed after", vec![kv_str("when", "after")]),
        ],
    ))
    .await;
    let events = read_tail_until(&mut body, "tailed after").await;
    assert!(
        events.iter().all(|e| e["attributes"]["when"] == "after"),
        "records acknowledged before the tail opened are not replayed: {events:?}"
    );
    assert!(
        events.iter().all(|e| e["body"] != "not matching"),
        "the tail applies its query: {events:?}"
    );
    let hit = events.last().unwrap();
    assert_eq!(hit["service_name"], json!("tail"));
    assert_eq!(hit["severity_text"], json!("INFO"));

    // A bad tail query is refused up front.
    let reply = c.api_get("/api/v1/logs/tail?query=body%3A%28").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
}

#[tokio::test]
async fn cli_search_prints_a_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let mut record = log_record("card declined by issuer", vec![kv_str("case", "cli")]);
    record.severity_number = 17;
    record.severity_text = "ERROR".to_string();
    c.export_ok(logs_request("checkout", vec![record])).await;
    c.wait_for_query("attributes.case:cli", 1).await;
    let url = format!("http://{}", c.addrs.api);
    let token = c.token();

    let run = |args: Vec<String>| async move {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(cli_bin())
                .args(&args)
                .env_remove("VANTAGE_URL")
                .env_remove("VANTAGE_TOKEN")
                .output(),
        )
        .await
        .expect("the CLI finishes within 30 s")
        .expect("run the CLI");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "vantage {args:?} failed: {stderr}{stdout}"
        );
        stdout
    };
    let base = |json: bool| {
        let mut args: Vec<String> = [
            "--url",
            &url,
            "--token",
            token,
            "logs",
            "search",
            "attributes.case:cli",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--since".to_string(), "1h".to_string()]);
        if json {
            args.push("--json".to_string());
        }
        args
    };

    let table = run(base(false)).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "header, one record, footer:\n{table}");
    for column in ["TIME", "SEVERITY", "SERVICE", "BODY"] {
        assert!(lines[0].contains(column), "header has {column}: {table}");
    }
    for field in ["ERROR", "checkout", "card declined by issuer"] {
        assert!(
            lines[1].contains(field),
            "the record line has {field}: {table}"
        );
    }
    assert_eq!(lines[2], "-- 1 of 1 matching records");

    let json_out = run(base(true)).await;
    let parsed: Value = serde_json::from_str(json_out.trim()).expect("--json prints JSON");
    assert_eq!(parsed["total"], json!(1));
    assert_eq!(parsed["hits"][0]["body"], json!("card declined by issuer"));
    assert_eq!(parsed["hits"][0]["attributes"]["case"], json!("cli"));

    // A query error is reported with the API's message and a failing exit code.
    let output = tokio::process::Command::new(cli_bin())
        .args(["--url", &url, "--token", token, "logs", "search", "body:("])
        .env_remove("VANTAGE_TOKEN")
        .output()
        .await
        .expect("run the CLI");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("position"), "{stderr}");
}

#[tokio::test]
async fn cli_tail_streams_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let url = format!("http://{}", c.addrs.api);
    let mut child = tokio::process::Command::new(cli_bin())
        .args([
            "--url",
            &url,
            "--token",
            c.token(),
            "logs",
            "tail",
            "attributes.case:clitail",
            "--json",
        ])
        .env_remove("VANTAGE_URL")
        .env_remove("VANTAGE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start vantage logs tail");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));

    // The tail only shows records acknowledged after it connected, and connecting takes
    // a moment: keep sending until one shows up.
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    let mut sent = 0;
    let line = loop {
        sent += 1;
        c.export_ok(logs_request(
            "tailsvc",
            vec![log_record(
                &format!("cli tail record {sent}"),
                vec![kv_str("case", "clitail")],
            )],
        ))
        .await;
        match tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
            Ok(line) => break line.expect("read the CLI's output"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("vantage logs tail printed nothing within {SEARCHABLE_TIMEOUT:?}"),
        }
    };
    let line = line.expect("the CLI printed a line");
    let hit: Value = serde_json::from_str(&line).expect("--json prints one JSON hit a line");
    assert_eq!(hit["attributes"]["case"], json!("clitail"));
    assert_eq!(hit["service_name"], json!("tailsvc"));
    assert!(hit["body"].as_str().unwrap().starts_with("cli tail record"));
    child.kill().await.expect("stop the tail");
}

#[tokio::test]
async fn probes_and_self_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let health = c.api_get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = c.api_get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    let missing = c.api_get("/no/such/endpoint").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let records = (0..7)
        .map(|i| log_record(&format!("metric record {i}"), vec![]))
        .collect();
    c.export_ok(logs_request("metered", records)).await;
    c.wait_for_query("metric", 7).await;

    // The index-docs gauge is set just after the commit that made the records
    // searchable: wait for it (bounded), then read everything from that one scrape.
    let mut reply = c.api_get("/metrics").await;
    for _ in 0..200 {
        if metric_value(&reply.text(), "vantage_log_index_docs", &[]) == Some(7.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        reply = c.api_get("/metrics").await;
    }
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = reply.text();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in /metrics:\n{text}"))
    };
    assert_eq!(value("vantage_ready", &[]), 1.0);
    assert_eq!(
        value("vantage_ingest_records_total", &[("signal", "logs")]),
        7.0
    );
    assert_eq!(
        value(
            "vantage_ingest_requests_total",
            &[("signal", "logs"), ("protocol", "grpc"), ("outcome", "ok")]
        ),
        1.0
    );
    assert!(value("vantage_wal_bytes", &[("signal", "logs")]) > 0.0);
    assert!(value("vantage_wal_fsync_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(value("vantage_log_index_docs", &[]), 7.0);
    assert!(
        value(
            "vantage_query_duration_seconds_count",
            &[("endpoint", "logs_search")]
        ) >= 1.0
    );
}

/// The text log as systemd, a container runtime or a redirect sees it: stderr is a pipe,
/// so it must carry no colour codes (journald would store them as `\x1b[2m` noise).
#[test]
fn text_log_to_a_pipe_has_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(collector_bin());
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
        .args(["--api", "127.0.0.1:0", "--log-format", "text"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("VANTAGE_") || key == "NO_COLOR" {
            command.env_remove(key);
        }
    }
    let mut child = command.env("VANTAGE_LOG", "info").spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let ready = line.contains(" ready ");
            let _ = tx.send(line);
            if ready {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let ready = line.contains(" ready ");
        lines.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(
        lines.last().is_some_and(|l| l.contains(" ready ")),
        "no ready line: {log}"
    );
    assert!(lines.len() > 1, "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
    assert!(log.contains("INFO"), "{log}");
}
