//! End to end: traces. The real OpenTelemetry Python SDK sends a trace across two
//! services; it comes back by id as a tree, through the native API and the Jaeger query
//! API in Jaeger's shapes, and the service map has the edge. Spans of one trace sent in
//! separate requests, out of order and across a restart, assemble; `kill -9` after the
//! acknowledgement loses nothing; bad spans are rejected one by one with a partial
//! success; a huge trace comes back cut at the documented limit, saying so; another
//! tenant sees nothing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use vantage_proto::logs::hex_id;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use vantage_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use common::*;

const MS: u64 = 1_000_000;
/// The store's limit on spans returned per trace (`MAX_TRACE_SPANS`).
const MAX_TRACE_SPANS: u64 = 10_000;

fn span(trace: [u8; 16], id: u64, parent: u64, name: &str, start: u64, dur_ms: u64) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ms * MS,
        attributes: vec![kv_str("test", "traces")],
        status: Some(Status::default()),
        ..Default::default()
    }
}

fn traces_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

async fn export(c: &Collector, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let mut client =
        TraceServiceClient::new(c.grpc_channel().await).max_encoding_message_size(64 * 1024 * 1024);
    client
        .export(request)
        .await
        .unwrap_or_else(|s| panic!("trace export failed: {s:?}\n{}", c.log()))
        .into_inner()
}

async fn export_ok(c: &Collector, request: ExportTraceServiceRequest) {
    let response = export(c, request).await;
    assert!(
        response
            .partial_success
            .as_ref()
            .is_none_or(|p| p.rejected_spans == 0),
        "no span may be rejected: {response:?}"
    );
}

/// Polls `GET /api/v1/traces/{id}` until it holds `spans` spans.
async fn wait_for_trace(c: &Collector, trace_id: &str, spans: u64) -> Value {
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    loop {
        let reply = c.api_get(&format!("/api/v1/traces/{trace_id}")).await;
        if reply.status == StatusCode::OK && reply.json()["total_spans"] == json!(spans) {
            return reply.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace_id} did not reach {spans} spans in time: {} {}\n{}",
            reply.status,
            reply.text(),
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn span_names(trace: &Value) -> Vec<(u64, String)> {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            (
                s["depth"].as_u64().expect("depth"),
                s["name"].as_str().expect("name").to_string(),
            )
        })
        .collect()
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Runs `send_traces.py`; fails with the install command when the SDK is missing.
async fn send_python_trace(c: &Collector, protocol: &str, run_id: &str) -> Value {
    let endpoint = match protocol {
        "grpc" => format!("http://{}", c.addrs.grpc),
        _ => format!("http://{}/v1/traces", c.addrs.http),
    };
    let mut command = tokio::process::Command::new("python3");
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    command.kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command
            .arg(python_dir().join("send_traces.py"))
            .args(["--protocol", protocol, "--endpoint", &endpoint])
            .args(["--run-id", run_id, "--token", c.token()])
            .output(),
    )
    .await
    .expect("send_traces.py finishes within 120 s")
    .expect(
        "python3 runs (install: python3 -m pip install -r collector/tests/python/requirements.txt)",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "send_traces.py failed ({:?}); if the SDK is missing: python3 -m pip install -r \
         collector/tests/python/requirements.txt\n{stderr}\ncollector log:\n{}",
        output.status.code(),
        c.log()
    );
    serde_json::from_slice(&output.stdout).expect("send_traces.py prints JSON")
}

#[tokio::test]
async fn python_sdk_trace_across_two_services_comes_back_whole_and_in_jaeger_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    for protocol in ["grpc", "http"] {
        let sent = send_python_trace(&c, protocol, &format!("run-{protocol}")).await;
        let trace_id = sent["trace_id"].as_str().expect("trace id").to_string();
        let trace = wait_for_trace(&c, &trace_id, 4).await;
        assert_eq!(
            span_names(&trace),
            vec![
                (0, "GET /checkout".to_string()),
                (1, "call backend".to_string()),
                (2, "POST /charge".to_string()),
                (3, "SELECT payments".to_string()),
            ],
            "{protocol}: the tree across both services: {trace}"
        );
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans[0]["service_name"], "py-frontend");
        assert_eq!(spans[0]["parent_span_id"], "");
        assert_eq!(spans[2]["service_name"], "py-backend");
        assert_eq!(spans[2]["parent_span_id"], spans[1]["span_id"]);
        assert_eq!(spans[2]["kind"], "server");
        assert_eq!(spans[3]["status"]["code"], "error");
        assert_eq!(spans[3]["status"]["message"], "card declined");
        assert_eq!(spans[3]["events"][0]["name"], "exception");
        assert_eq!(spans[2]["attributes"]["http.status_code"], 500);
        assert_eq!(
            spans[0]["resource"]["run.id"],
            json!(format!("run-{protocol}"))
        );
        assert_eq!(trace["truncated"], false);
        // Every span the SDK reported is there with its parent.
        for s in sent["spans"].as_array().unwrap() {
            assert!(
                spans.iter().any(|t| t["span_id"] == s["span_id"]
                    && t["parent_span_id"] == s["parent_span_id"]
                    && t["service_name"] == s["service"]),
                "{s} in {trace}"
            );
        }

        // Native search: summaries.
        let found = c
            .api_get("/api/v1/traces/search?service=py-backend&status=error&start=now-1h")
            .await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.text());
        let summary = found.json()["traces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == json!(trace_id))
            .cloned()
            .unwrap_or_else(|| panic!("search finds {trace_id}: {}", found.text()));
        assert_eq!(summary["root_service"], "py-frontend");
        assert_eq!(summary["root_name"], "GET /checkout");
        assert_eq!(summary["span_count"], 4);
        assert_eq!(summary["error_count"], 1);

        // Jaeger: the trace by id.
        let j = c.api_get(&format!("/api/traces/{trace_id}")).await;
        assert_eq!(j.status, StatusCode::OK, "{}", j.text());
        let j = j.json();
        assert_eq!(j["total"], 1);
        assert_eq!(j["limit"], 0);
        assert_eq!(j["offset"], 0);
        assert_eq!(j["errors"], Value::Null);
        let jt = &j["data"][0];
        assert_eq!(jt["traceID"], json!(trace_id));
        let jspans = jt["spans"].as_array().unwrap();
        assert_eq!(jspans.len(), 4);
        let processes = jt["processes"].as_object().unwrap();
        let mut services: Vec<&str> = processes
            .values()
            .map(|p| p["serviceName"].as_str().unwrap())
            .collect();
        services.sort();
        assert_eq!(services, vec!["py-backend", "py-frontend"]);
        let charge = jspans
            .iter()
            .find(|s| s["operationName"] == "POST /charge")
            .unwrap();
        assert_eq!(
            processes[charge["processID"].as_str().unwrap()]["serviceName"],
            "py-backend"
        );
        assert_eq!(charge["references"][0]["refType"], "CHILD_OF");
        assert_eq!(charge["references"][0]["spanID"], spans[1]["span_id"]);
        assert!(charge["startTime"].as_u64().unwrap() > 1_600_000_000_000_000);
        assert!(charge["duration"].is_u64());
        assert!(
            charge["tags"]
                .as_array()
                .unwrap()
                .contains(&json!({"key": "span.kind", "type": "string", "value": "server"}))
        );

        // Jaeger: search with tags as JSON, in microseconds.
        let end_us = now_ns() / 1_000 + 60_000_000;
        let start_us = end_us - 3_600_000_000;
        let query = serde_urlencoded::to_string([
            ("service", "py-backend"),
            ("tags", r#"{"http.status_code":"500"}"#),
            ("start", &start_us.to_string()),
            ("end", &end_us.to_string()),
            ("limit", "20"),
        ])
        .unwrap();
        let found = c.api_get(&format!("/api/traces?{query}")).await.json();
        assert!(
            found["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["traceID"] == json!(trace_id)
                    && t["spans"].as_array().unwrap().len() == 4),
            "jaeger search finds the whole trace: {found}"
        );
        let none = c
            .api_get(&format!(
                "/api/traces?service=py-backend&minDuration=1h&start={start_us}&end={end_us}"
            ))
            .await
            .json();
        assert_eq!(none["data"], json!([]), "no span lasts an hour");
    }

    // Jaeger: services and operations.
    let services = c.api_get("/api/services").await.json();
    assert_eq!(services["data"], json!(["py-backend", "py-frontend"]));
    assert_eq!(services["total"], 2);
    let ops = c
        .api_get("/api/services/py-backend/operations")
        .await
        .json();
    assert_eq!(ops["data"], json!(["POST /charge", "SELECT payments"]));
    let ops = c
        .api_get("/api/operations?service=py-backend&spanKind=server")
        .await
        .json();
    assert_eq!(
        ops["data"],
        json!([{"name": "POST /charge", "spanKind": "server"}])
    );

    // The service map, both ways.
    let end_ms = now_ns() / MS + 60_000;
    let deps = c
        .api_get(&format!(
            "/api/dependencies?endTs={end_ms}&lookback=3600000"
        ))
        .await
        .json();
    assert_eq!(
        deps["data"],
        json!([{"parent": "py-frontend", "child": "py-backend", "callCount": 2}]),
        "one call per run: {deps}"
    );
    let native = c
        .api_get("/api/v1/traces/dependencies?start=now-1h")
        .await
        .json();
    assert_eq!(
        native["edges"],
        json!([{"parent": "py-frontend", "child": "py-backend", "call_count": 2, "error_count": 0}])
    );
    assert_eq!(native["truncated"], false);
}

#[tokio::test]
async fn spans_out_of_order_across_a_restart_and_a_kill_9_assemble_whole() {
    let dir = tempfile::tempdir().unwrap();
    let trace = [0x5a; 16];
    let trace_hex = hex_id(&trace);
    let t0 = now_ns() - 60_000 * MS;
    let c = Collector::start(dir.path());
    // The grandchildren first, each in its own request, then a child.
    export_ok(
        &c,
        traces_request("db", vec![span(trace, 4, 2, "query b", t0 + 30 * MS, 5)]),
    )
    .await;
    export_ok(
        &c,
        traces_request("db", vec![span(trace, 3, 2, "query a", t0 + 20 * MS, 5)]),
    )
    .await;
    export_ok(
        &c,
        traces_request("api", vec![span(trace, 2, 1, "handle", t0 + 10 * MS, 50)]),
    )
    .await;
    let partial = wait_for_trace(&c, &trace_hex, 3).await;
    assert_eq!(
        span_names(&partial),
        vec![
            (0, "handle".to_string()),
            (1, "query a".to_string()),
            (1, "query b".to_string())
        ],
        "without its parent the child is a root"
    );
    let (status, log) = c.terminate().await;
    assert!(status.success(), "clean stop: {log}");

    // The root after the restart.
    let c = Collector::start(dir.path());
    export_ok(
        &c,
        traces_request("web", vec![span(trace, 1, 0, "GET /", t0, 100)]),
    )
    .await;
    let whole = wait_for_trace(&c, &trace_hex, 4).await;
    assert_eq!(
        span_names(&whole),
        vec![
            (0, "GET /".to_string()),
            (1, "handle".to_string()),
            (2, "query a".to_string()),
            (2, "query b".to_string())
        ]
    );

    // Acknowledged, then killed before the indexer could commit: replay brings it back.
    export_ok(
        &c,
        traces_request("cache", vec![span(trace, 5, 2, "get", t0 + 40 * MS, 1)]),
    )
    .await;
    let more: Vec<Span> = (100..600)
        .map(|i| span(trace, i, 1, "fanout", t0 + i * MS, 1))
        .collect();
    export_ok(&c, traces_request("worker", more)).await;
    c.kill_9();
    let c = Collector::start(dir.path());
    let after = c.api_get(&format!("/api/v1/traces/{trace_hex}")).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
    assert_eq!(
        after.json()["total_spans"],
        505,
        "ready means replayed: every acknowledged span, once\n{}",
        c.log()
    );
    let events = c.log_events("wal replayed into the trace store");
    assert_eq!(events.len(), 1, "{}", c.log());
}

#[tokio::test]
async fn bad_spans_are_rejected_one_by_one_with_a_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let trace = [0x77; 16];
    let now = now_ns();
    let good = span(trace, 1, 0, "good", now, 1);
    let mut short_trace = span(trace, 2, 0, "short trace id", now, 1);
    short_trace.trace_id = vec![1; 8];
    let mut zero_trace = span(trace, 3, 0, "zero trace id", now, 1);
    zero_trace.trace_id = vec![0; 16];
    let mut zero_span = span(trace, 4, 0, "zero span id", now, 1);
    zero_span.span_id = vec![0; 8];
    let mut long_span = span(trace, 5, 0, "long span id", now, 1);
    long_span.span_id = vec![5; 16];
    let mut backwards = span(trace, 6, 0, "end before start", now, 1);
    backwards.end_time_unix_nano = now - 1;
    let mut huge = span(trace, 7, 0, "1 MB attribute", now, 1);
    huge.attributes
        .push(kv_str("blob", &"x".repeat(1024 * 1024)));
    let response = export(
        &c,
        traces_request(
            "bad",
            vec![
                good,
                short_trace,
                zero_trace,
                zero_span,
                long_span,
                backwards,
                huge,
            ],
        ),
    )
    .await;
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 6, "{partial:?}");
    for reason in [
        "2 invalid_trace_id",
        "2 invalid_span_id",
        "1 end_before_start",
        "1 attribute_too_large",
    ] {
        assert!(
            partial.error_message.contains(reason),
            "{reason} in {:?}",
            partial.error_message
        );
    }
    let trace_json = wait_for_trace(&c, &hex_id(&trace), 1).await;
    assert_eq!(span_names(&trace_json), vec![(0, "good".to_string())]);
    let metrics = c.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vantage_ingest_rejected_records_total",
            &[("signal", "traces"), ("reason", "invalid_trace_id")]
        ),
        Some(2.0),
        "{metrics}"
    );

    // Malformed and unknown ids at the API.
    for bad in ["xyz", &"a".repeat(33), &"0".repeat(32)] {
        let reply = c.api_get(&format!("/api/v1/traces/{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.text()
        );
        let reply = c.api_get(&format!("/api/traces/{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["errors"][0]["code"], 400);
    }
    let unknown = c
        .api_get(&format!("/api/v1/traces/{}", "12".repeat(16)))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let unknown = c.api_get(&format!("/api/traces/{}", "12".repeat(16))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["errors"][0]["code"], 404);
    let bad_search = c.api_get("/api/v1/traces/search?minDuration=fast").await;
    assert_eq!(bad_search.status, StatusCode::BAD_REQUEST);
    let bad_search = c.api_get("/api/v1/traces/search?limit=100000").await;
    assert_eq!(bad_search.status, StatusCode::BAD_REQUEST);

    // An empty request and one whose every span is bad still answer.
    assert!(
        export(&c, traces_request("bad", vec![]))
            .await
            .partial_success
            .is_none()
    );
    c.assert_still_serves("after-bad-spans").await;
}

#[tokio::test]
async fn a_trace_of_100k_spans_returns_the_first_10000_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let trace = [0x42; 16];
    let t0 = now_ns() - 600_000 * MS;
    let total: u64 = 100_000;
    for batch in 0..10u64 {
        let spans = (0..10_000u64)
            .map(|i| {
                let n = batch * 10_000 + i + 1;
                span(trace, n, if n == 1 { 0 } else { 1 }, "s", t0 + n * 1_000, 1)
            })
            .collect();
        export_ok(&c, traces_request("big", spans)).await;
    }
    let trace_json = wait_for_trace(&c, &hex_id(&trace), total).await;
    assert_eq!(trace_json["truncated"], true);
    assert_eq!(trace_json["max_spans"], MAX_TRACE_SPANS);
    let spans = trace_json["spans"].as_array().unwrap();
    assert_eq!(spans.len() as u64, MAX_TRACE_SPANS);
    assert_eq!(
        spans[0]["span_id"],
        hex_id(&1u64.to_be_bytes()),
        "the earliest first"
    );
    let jaeger = c
        .api_get(&format!("/api/traces/{}", hex_id(&trace)))
        .await
        .json();
    let warning = jaeger["data"][0]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(warning.contains("100000 spans"), "{jaeger:.200}");
}

#[tokio::test]
async fn another_tenant_cannot_see_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let trace = [0x31; 16];
    export_ok(
        &c,
        traces_request("secret", vec![span(trace, 1, 0, "private", now_ns(), 1)]),
    )
    .await;
    wait_for_trace(&c, &hex_id(&trace), 1).await;

    let auth = bearer(c.token());
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let created = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &headers,
            json!({"name": "other"}).to_string(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let key = c
        .api_request(
            Method::POST,
            "/api/v1/keys",
            &headers,
            json!({"name": "o", "scopes": ["query"], "tenant": "other"}).to_string(),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text());
    let other = bearer(key.json()["key"].as_str().unwrap());
    let as_other = |path: String| {
        let other = other.clone();
        let c = &c;
        async move {
            c.api_request(Method::GET, &path, &[("authorization", &other)], "")
                .await
        }
    };
    let id_hex = hex_id(&trace);
    assert_eq!(
        as_other(format!("/api/v1/traces/{id_hex}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_other(format!("/api/traces/{id_hex}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_other("/api/services".into()).await.json()["data"],
        json!([])
    );
    let search = as_other("/api/v1/traces/search?start=now-1h".into())
        .await
        .json();
    assert_eq!(search["traces"], json!([]));
    let deps = as_other("/api/v1/traces/dependencies?start=now-1h".into())
        .await
        .json();
    assert_eq!(deps["spans_examined"], 0);
    // And without a credential, nothing at all.
    let anonymous = c
        .request_anonymous(
            Method::GET,
            &format!("http://{}/api/traces/{id_hex}", c.addrs.api),
            &[],
            "",
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn red_metrics_reach_promql_and_the_cli_and_trace_logs_work() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let trace = [0x64; 16];
    let id = hex_id(&trace);
    let now = now_ns() - 5_000 * MS;
    let root = span(trace, 1, 0, "GET /cart", now, 40);
    let mut failed = span(trace, 2, 1, "load cart", now + 5 * MS, 20);
    failed.status = Some(Status {
        code: 2,
        message: "db down".into(),
    });
    export_ok(&c, traces_request("shop", vec![root, failed])).await;
    let mut log = log_record("cart load failed", vec![kv_str("step", "load")]);
    log.trace_id = trace.to_vec();
    log.span_id = 2u64.to_be_bytes().to_vec();
    c.export_ok(logs_request("shop", vec![log])).await;
    c.wait_for_query(&format!("trace_id:{id}"), 1).await;
    wait_for_trace(&c, &id, 2).await;

    // The trace's logs on request.
    let with_logs = c
        .api_get(&format!("/api/v1/traces/{id}?withLogs=true"))
        .await
        .json();
    assert_eq!(
        with_logs["logs"][0]["body"], "cart load failed",
        "{with_logs}"
    );
    assert_eq!(with_logs["logs"][0]["span_id"], hex_id(&2u64.to_be_bytes()));
    let without = c.api_get(&format!("/api/v1/traces/{id}")).await.json();
    assert!(without.get("logs").is_none());

    // The waterfall.
    let token = c.token().to_string();
    let out = c
        .cli(&["traces", "get", &id], &[("VANTAGE_TOKEN", &token)])
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("trace {id}: 2 spans")),
        "{text}"
    );
    assert!(lines[2].ends_with("shop: GET /cart"), "{text}");
    assert!(lines[3].ends_with("  shop: load cart !"), "{text}");
    let out = c
        .cli(
            &["traces", "search", "--service", "shop", "--status", "error"],
            &[("VANTAGE_TOKEN", &token)],
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&id) && text.contains("shop: GET /cart"),
        "{text}"
    );
    assert!(text.contains("-- 1 traces"), "{text}");

    // RED metrics: written every 15 s into the metrics store, read back with PromQL.
    let query = serde_urlencoded::to_string([(
        "query",
        r#"sum by (status_code) (traces_spanmetrics_calls_total{service="shop"})"#,
    )])
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let result = loop {
        let reply = c.api_get(&format!("/api/v1/query?{query}")).await.json();
        if reply["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
        {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "span metrics never reached PromQL: {reply}\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut by_status: Vec<(String, String)> = result["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["status_code"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_status.sort();
    assert_eq!(
        by_status,
        vec![
            ("STATUS_CODE_ERROR".to_string(), "1".to_string()),
            ("STATUS_CODE_UNSET".to_string(), "1".to_string())
        ]
    );
    let bucket = serde_urlencoded::to_string([(
        "query",
        r#"traces_spanmetrics_duration_seconds_bucket{service="shop",span_name="GET /cart",le="0.05"}"#,
    )])
    .unwrap();
    let reply = c.api_get(&format!("/api/v1/query?{bucket}")).await.json();
    assert_eq!(
        reply["data"]["result"][0]["value"][1], "1",
        "40 ms is under 50 ms: {reply}"
    );
}

/// Batch `b` of 20 spans of one trace, each with a 4 KB attribute that does not compress,
/// so a small disk fills after a few thousand spans.
fn bulky_spans(trace: [u8; 16], b: u64, start: u64) -> ExportTraceServiceRequest {
    let spans = (0..20)
        .map(|i| {
            let id = b * 20 + i + 1;
            let mut s = span(trace, id, 0, "fill", start, 1);
            s.attributes
                .push(kv_str("pad", &incompressible_words(id, 256)));
            s
        })
        .collect();
    traces_request("fulldisk", spans)
}

/// A span whose name, service and an attribute are longer than Tantivy's longest term
/// (65,530 bytes) but within what ingest takes (a value of at most 64 KiB with its
/// framing): it is stored whole and found by its trace id, and the collector does not
/// log a warning per span (Tantivy did, for each such value).
#[tokio::test]
async fn values_past_the_term_limit_are_kept_whole_and_not_logged_per_span() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let mut client = TraceServiceClient::new(c.grpc_channel().await);
    let trace = [0x5c; 16];
    let long = "n".repeat(65_532);
    let mut s = span(trace, 1, 0, &long, now_ns() - 1_000 * MS, 1);
    s.attributes.push(kv_str("payload", &long));
    let response = client
        .export(traces_request(&long, vec![s]))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(response.partial_success, None, "nothing refused");
    let found = wait_for_trace(&c, &hex_id(&trace), 1).await;
    let span = &found["spans"][0];
    assert_eq!(span["name"].as_str().map(str::len), Some(65_532));
    assert!(
        found.to_string().matches(&long).count() >= 3,
        "the name, the service and the attribute come back whole"
    );
    let log = c.log();
    assert!(
        !log.contains("MAX_TOKEN_LEN"),
        "{}",
        &log[..log.len().min(4_000)]
    );
}

/// Exports `request` again every 200 ms until it is acknowledged; panics after
/// [`SEARCHABLE_TIMEOUT`].
async fn export_once_there_is_room(
    c: &Collector,
    client: &mut TraceServiceClient<GrpcChannel>,
    request: ExportTraceServiceRequest,
) {
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    while let Err(status) = client.export(request.clone()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused with room: {status:?}\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A full disk, for spans: exports are refused as UNAVAILABLE, the span store fails and
/// says so, and once there is room every acknowledged span is found, once, without a
/// restart.
#[tokio::test]
async fn a_full_disk_refuses_span_exports_and_loses_none_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "24m");
    let c = Collector::builder()
        .insecure_no_auth()
        .on_small_disk(&disk)
        .env("VANTAGE_WAL__SEGMENT_MAX_BYTES", "4194304")
        .start(dir.path());
    let mut client = TraceServiceClient::new(c.grpc_channel().await);
    let trace = [0x7a; 16];
    let start = now_ns() - 1_000 * MS;
    let mut acked = 0u64;
    let refused = loop {
        assert!(acked < 2_000, "the disk never filled:\n{}", c.log());
        match client.export(bulky_spans(trace, acked, start)).await {
            Ok(_) => acked += 1,
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // The span store fails only if it has spans left to commit once the disk is full. What
    // the refused write left can hold its last commit, or that commit can land just before
    // the refusal with nothing after it: so the test takes the last bytes, and if the store
    // had nothing left to commit, gives it room for one more batch and then takes that room.
    for attempt in 1.. {
        disk.fill();
        if c.metric_reaches(
            "vantage_trace_index_errors_total",
            |v| v > 0.0,
            Duration::from_secs(5),
        )
        .await
        {
            break;
        }
        assert!(attempt < 5, "the span store never failed:\n{}", c.log());
        disk.empty_filler();
        disk.resize(&format!("{}m", 24 + attempt));
        export_once_there_is_room(&c, &mut client, bulky_spans(trace, acked, start)).await;
        acked += 1;
    }

    disk.resize("512m");
    for _ in 0..3 {
        export_once_there_is_room(&c, &mut client, bulky_spans(trace, acked, start)).await;
        acked += 1;
    }
    let spans = acked * 20;
    assert!(spans <= MAX_TRACE_SPANS, "{spans} spans fit one answer");
    let found = wait_for_trace(&c, &hex_id(&trace), spans).await;
    let mut ids: Vec<&str> = found["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["span_id"].as_str().expect("span_id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, spans, "every span, once");
    let recovered = c.log_events("index recovered; the wal since its last commit is indexed");
    assert!(
        recovered.iter().any(|e| e["signal"] == "trace"),
        "{}",
        c.log()
    );
}
