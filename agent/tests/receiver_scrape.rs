//! The agent's local OTLP receiver and Prometheus scraping, end to end: real agent and
//! collector binaries, applications played by tonic and hyper clients, scrape targets
//! by the collector's own `/metrics`, a small test server and a port nobody listens on.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{Agent, Collector, free_port, http_post, noise, promql, wait_promql};
use prost::Message as _;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service)],
        ..Default::default()
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn logs(service: &str, bodies: &[String]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: bodies
                    .iter()
                    .map(|b| LogRecord {
                        time_unix_nano: now_ns(),
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(b.clone())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gauge(service: &str, name: &str, value: f64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns(),
                            value: Some(number_data_point::Value::AsDouble(value)),
                            attributes: vec![kv("queue", "main")],
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn spans(service: &str, n: u8) -> ExportTraceServiceRequest {
    let t = now_ns();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("op-{i}"),
                        kind: 2,
                        start_time_unix_nano: t,
                        end_time_unix_nano: t + 1_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The collector's `vantage_ingest_records_total{signal=...}`.
async fn ingested(collector: &Collector, signal: &str) -> u64 {
    let body = common::http_get(&format!("http://{}/metrics", collector.api), None).await;
    let text = String::from_utf8_lossy(&body).to_string();
    let prefix = format!("vantage_ingest_records_total{{signal=\"{signal}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_ingested(collector: &Collector, signal: &str, min: u64, agent: &Agent) {
    let deadline = tokio::time::Instant::now() + common::ARRIVAL_TIMEOUT;
    loop {
        let n = ingested(collector, signal).await;
        if n >= min {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{signal}: {n} records ingested, expected >= {min}; agent log:\n{}",
                agent.proc.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn receiver_args<'a>(collector: &'a str, state: &'a str) -> Vec<&'a str> {
    vec![
        "--collector",
        collector,
        "--state-dir",
        state,
        "--host-metrics-interval",
        "off",
        "--otlp-grpc-listen",
        "127.0.0.1:0",
        "--otlp-http-listen",
        "127.0.0.1:0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_otlp_over_grpc_and_http_reaches_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let endpoint = format!("http://{}", collector.grpc);
    let state = dir.path().join("state");
    let agent = Agent::start(
        &receiver_args(&endpoint, state.to_str().unwrap()),
        &collector.token,
    );
    let grpc = format!("http://{}", agent.listener("otlp_grpc"));
    let http = agent.listener("otlp_http");

    // gRPC, as an SDK with its default endpoint would send (gzip on).
    let mut logs_client = LogsServiceClient::connect(grpc.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let bodies: Vec<String> = (0..5).map(|i| format!("grpcappword {i}")).collect();
    logs_client
        .export(logs("shopgrpc", &bodies))
        .await
        .expect("logs accepted");
    MetricsServiceClient::connect(grpc.clone())
        .await
        .unwrap()
        .export(gauge("shopgrpc", "app_queue_depth", 7.0))
        .await
        .expect("metrics accepted");
    TraceServiceClient::connect(grpc)
        .await
        .unwrap()
        .export(spans("shopgrpc", 3))
        .await
        .expect("spans accepted");

    // HTTP: JSON logs, gzip protobuf metrics, JSON traces with hex ids.
    let json_logs = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"shophttp"}}}}]}},"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","body":{{"stringValue":"httpappword one"}}}},{{"timeUnixNano":"{}","body":{{"stringValue":"httpappword two"}}}}]}}]}}]}}"#,
        now_ns(),
        now_ns()
    );
    let (status, headers, body) = http_post(
        &format!("http://{http}/v1/logs"),
        &[("content-type", "application/json")],
        json_logs.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(&body[..], b"{}");
    let (status, _, body) = http_post(
        &format!("http://{http}/v1/metrics"),
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        gzip(&gauge("shophttp", "app_queue_depth", 9.0).encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json_spans = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"shophttp"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"{t}","endTimeUnixNano":"{t}"}},{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"db","kind":3,"startTimeUnixNano":"{t}","endTimeUnixNano":"{t}"}}]}}]}}]}}"#,
        t = now_ns()
    );
    let (status, _, body) = http_post(
        &format!("http://{http}/v1/traces"),
        &[("content-type", "application/json")],
        json_spans.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    collector.wait_count("grpcappword", 5, Some(&agent)).await;
    collector.wait_count("httpappword", 2, Some(&agent)).await;
    let hit = &collector.search("httpappword", 1).await["hits"][0];
    assert_eq!(hit["resource"]["service.name"], "shophttp", "{hit}");
    assert!(
        hit["resource"]["host.name"].is_string(),
        "host attributes added: {hit}"
    );

    let result = wait_promql(&collector, r#"app_queue_depth{job="shopgrpc"}"#, &agent).await;
    assert_eq!(result[0]["value"][1], "7");
    assert_eq!(result[0]["metric"]["queue"], "main");
    let result = wait_promql(&collector, r#"app_queue_depth{job="shophttp"}"#, &agent).await;
    assert_eq!(result[0]["value"][1], "9");

    wait_ingested(&collector, "traces", 5, &agent).await;
    agent.wait_stat("trace_batches_sent", 2).await;
    assert_eq!(
        agent.stat("receiver_items_accepted").await,
        5 + 1 + 3 + 2 + 1 + 2
    );
    assert_eq!(agent.stat("receiver_requests_refused").await, 0);
    assert!(agent.proc.terminate(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_accepts_while_the_collector_is_down_and_delivers_later() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("collector");
    // A first, short run of the collector makes the token.
    let first = Collector::start(&data, port);
    let token = first.token.clone();
    first.proc.kill_9();
    let endpoint = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("state");
    let agent = Agent::start(&receiver_args(&endpoint, state.to_str().unwrap()), &token);
    let grpc = format!("http://{}", agent.listener("otlp_grpc"));
    let http = agent.listener("otlp_http");
    let mut client = LogsServiceClient::connect(grpc).await.unwrap();
    for batch in 0..10 {
        let bodies: Vec<String> = (0..10).map(|i| format!("downword {batch} {i}")).collect();
        client
            .export(logs("offline", &bodies))
            .await
            .expect("queued");
    }
    let (status, _, body) = http_post(
        &format!("http://{http}/v1/traces"),
        &[("content-type", "application/x-protobuf")],
        spans("offline", 4).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    agent.wait_stat("export_retries", 1).await;
    assert!(agent.stat("queue_batches").await >= 11);

    let collector = Collector::start(&data, port);
    collector.wait_count("downword", 100, Some(&agent)).await;
    wait_ingested(&collector, "traces", 4, &agent).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(collector.count("downword").await, 100, "each record once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_the_receiver_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nexporter:\n  endpoint: http://127.0.0.1:{}\nhost_metrics:\n  enabled: false\nreceivers:\n  otlp:\n    max_request_bytes: 4096\n",
            dir.path().join("state").display(),
            free_port()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
        ],
        "t",
    );
    let url = |path: &str| format!("http://{}{path}", agent.listener("otlp_http"));
    let pb = [("content-type", "application/x-protobuf")];
    let js = [("content-type", "application/json")];

    // Malformed protobuf: 400 with a google.rpc.Status naming the problem.
    let (status, headers, body) = http_post(&url("/v1/logs"), &pb, vec![0xff; 64]).await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let rpc = tonic_types::pb::Status::decode(&body[..]).unwrap();
    assert_eq!(rpc.code, tonic::Code::InvalidArgument as i32);
    assert!(
        rpc.message.contains("not a valid OTLP protobuf"),
        "{}",
        rpc.message
    );

    // Malformed JSON, and JSON with a bad trace id.
    let (status, _, body) = http_post(
        &url("/v1/metrics"),
        &js,
        b"{\"resourceMetrics\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not valid OTLP/JSON"),
        "{v}"
    );
    let bad_id =
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz","spanId":"00"}]}]}]}"#;
    let (status, _, _) = http_post(&url("/v1/traces"), &js, bad_id.to_vec()).await;
    assert_eq!(status, 400);

    // Wrong content type, unknown content encoding.
    let (status, _, body) = http_post(
        &url("/v1/logs"),
        &[("content-type", "text/plain")],
        b"hi".to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = http_post(
        &url("/v1/logs"),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 415);

    // Oversized, raw and after decompression (a gzip bomb).
    let (status, _, body) = http_post(&url("/v1/logs"), &pb, vec![0; 8192]).await;
    assert_eq!(status, 413);
    let rpc = tonic_types::pb::Status::decode(&body[..]).unwrap();
    assert!(rpc.message.contains("4096"), "{}", rpc.message);
    let bomb = gzip(&vec![b' '; 1 << 20]);
    let (status, _, _) = http_post(
        &url("/v1/logs"),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        bomb,
    )
    .await;
    assert_eq!(status, 413);

    // Oversized over gRPC: INVALID_ARGUMENT, which exporters do not retry.
    let mut client = LogsServiceClient::connect(format!("http://{}", agent.listener("otlp_grpc")))
        .await
        .unwrap();
    let big: Vec<String> = (0..10)
        .map(|i| format!("{i}{}", "x".repeat(1000)))
        .collect();
    let err = client.export(logs("big", &big)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Unknown path.
    let (status, _, _) = http_post(&url("/v1/other"), &js, b"{}".to_vec()).await;
    assert_eq!(status, 404);

    // Nothing reached the queue, every refusal was counted, the agent is fine.
    assert_eq!(agent.stat("queue_batches").await, 0);
    assert!(agent.stat("receiver_requests_refused").await >= 7);
    let (status, _, _) = http_post(&url("/v1/logs"), &js, b"{}".to_vec()).await;
    assert_eq!(status, 200, "an empty export succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_resource_exhausted_with_a_retry_delay() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nexporter:\n  endpoint: http://127.0.0.1:{}\nhost_metrics:\n  enabled: false\nqueue:\n  max_bytes: 4194304\n  when_full: block\n",
            dir.path().join("state").display(),
            free_port()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
        ],
        "t",
    );
    let url = format!("http://{}/v1/logs", agent.listener("otlp_http"));
    // 512 KiB requests against a 4 MiB queue whose collector never answers. The queue
    // counts batches as stored, compressed: the lines are hex noise, which zstd can only
    // halve, so the queue fills.
    let body = logs("filler", &noise(1, 512)).encode_to_vec();
    let mut refused = None;
    for i in 0..40 {
        let (status, headers, answer) = http_post(
            &url,
            &[("content-type", "application/x-protobuf")],
            body.clone(),
        )
        .await;
        match status {
            200 => continue,
            429 => {
                assert!(headers.contains_key("retry-after"), "{headers:?}");
                let rpc = tonic_types::pb::Status::decode(&answer[..]).unwrap();
                assert_eq!(rpc.code, tonic::Code::ResourceExhausted as i32);
                refused = Some(i);
                break;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&answer)),
        }
    }
    let accepted = refused.expect("the queue fills up");
    assert!(accepted >= 4, "accepted {accepted} before refusing");
    // gRPC says RESOURCE_EXHAUSTED with RetryInfo, which OTLP exporters honour.
    let mut client = LogsServiceClient::connect(format!("http://{}", agent.listener("otlp_grpc")))
        .await
        .unwrap();
    let err = client
        .export(logs("filler", &noise(2, 512)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    use tonic_types::StatusExt as _;
    assert!(err.get_details_retry_info().is_some(), "{err:?}");
    assert!(agent.stat("queue_full_refusals").await >= 2);
    assert!(agent.stat("queue_bytes").await <= 4 * 1024 * 1024);
}

/// Serves `body` as `text/plain; version=0.0.4` on every GET, until dropped.
async fn serve_text(body: &'static str) -> std::net::SocketAddr {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/custom",
        get(move || async move { ([("content-type", "text/plain; version=0.0.4")], body) }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

const EXPORTER: &str = r#"# HELP shop_request_seconds Request latency.
# TYPE shop_request_seconds histogram
shop_request_seconds_bucket{route="/buy",le="0.1"} 3
shop_request_seconds_bucket{route="/buy",le="1"} 7
shop_request_seconds_bucket{route="/buy",le="+Inf"} 8
shop_request_seconds_sum{route="/buy"} 4.5
shop_request_seconds_count{route="/buy"} 8
# TYPE shop_orders_total counter
shop_orders_total{job="theirs"} 42
# TYPE shop_rpc_seconds summary
shop_rpc_seconds{quantile="0.5"} 0.2
shop_rpc_seconds_sum 12
shop_rpc_seconds_count 40
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_series_are_queryable_with_job_and_instance_and_a_dead_target_is_up_0() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let exporter = serve_text(EXPORTER).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nexporter:\n  endpoint: http://{grpc}\nhost_metrics:\n  enabled: false\nscrape_configs:\n  - job_name: vantage\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{api}\"]\n        labels:\n          team: core\n  - job_name: shop\n    scrape_interval: 1s\n    metrics_path: /custom\n    static_configs:\n      - targets: [\"{exporter}\"]\n  - job_name: dead\n    scrape_interval: 1s\n    scrape_timeout: 500ms\n    static_configs:\n      - targets: [\"{dead}\"]\n",
            state = dir.path().join("state").display(),
            grpc = collector.grpc,
            api = collector.api,
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);

    // The collector's own OpenMetrics page, under job and instance.
    let api = collector.api.to_string();
    let q = format!(
        r#"vantage_ingest_records_total{{job="vantage",instance="{api}",signal="metrics"}}"#
    );
    let result = wait_promql(&collector, &q, &agent).await;
    assert_eq!(result[0]["metric"]["team"], "core", "{result:?}");
    let up = wait_promql(&collector, r#"up{job="vantage"}"#, &agent).await;
    assert_eq!(up[0]["value"][1], "1");
    assert_eq!(up[0]["metric"]["instance"], api.as_str());
    let n = wait_promql(
        &collector,
        r#"scrape_samples_scraped{job="vantage"}"#,
        &agent,
    )
    .await;
    assert!(
        n[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 10.0,
        "{n:?}"
    );

    // A histogram, a counter whose own job label is kept as exported_job, a summary.
    let exporter = exporter.to_string();
    let b = wait_promql(
        &collector,
        r#"shop_request_seconds_bucket{job="shop",le="1"}"#,
        &agent,
    )
    .await;
    assert_eq!(b[0]["value"][1], "7");
    assert_eq!(b[0]["metric"]["instance"], exporter.as_str());
    assert_eq!(b[0]["metric"]["route"], "/buy");
    let inf = promql(
        &collector,
        r#"shop_request_seconds_bucket{job="shop",le="+Inf"}"#,
    )
    .await;
    assert_eq!(inf[0]["value"][1], "8");
    let q = promql(
        &collector,
        r#"histogram_quantile(0.5, shop_request_seconds_bucket{job="shop"})"#,
    )
    .await;
    assert_eq!(q.len(), 1, "{q:?}");
    let c = wait_promql(&collector, r#"shop_orders_total{job="shop"}"#, &agent).await;
    assert_eq!(c[0]["value"][1], "42");
    assert_eq!(c[0]["metric"]["exported_job"], "theirs");
    let s = wait_promql(
        &collector,
        r#"shop_rpc_seconds{job="shop",quantile="0.5"}"#,
        &agent,
    )
    .await;
    assert_eq!(s[0]["value"][1], "0.2");
    let s = promql(&collector, r#"shop_rpc_seconds_count{job="shop"}"#).await;
    assert_eq!(s[0]["value"][1], "40");

    // The dead target: up 0, a warning, and the agent carries on.
    let dead_up = wait_promql(&collector, r#"up{job="dead"}"#, &agent).await;
    assert_eq!(dead_up[0]["value"][1], "0");
    assert_eq!(dead_up[0]["metric"]["instance"], dead.as_str());
    agent.wait_stat("scrapes_failed", 2).await;
    assert!(agent.proc.log().contains("scrape failed"));
    assert!(agent.proc.terminate(), "clean exit on SIGTERM");
}

/// Runs the collector tests' `send_logs.py` (the real OpenTelemetry Python SDK and its
/// OTLP log exporter) against `endpoint`; panics unless every export succeeded.
async fn python_send_logs(protocol: &str, endpoint: &str, run_id: &str) {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../collector/tests/python/send_logs.py");
    let mut command = tokio::process::Command::new("python3");
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    let output = command
        .arg(script)
        .args([
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--run-id",
            run_id,
        ])
        .args(["--compression", "gzip"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "send_logs.py failed ({:?}; exit 3 means: python3 -m pip install -r collector/tests/python/requirements.txt): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_to_the_agent_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let endpoint = format!("http://{}", collector.grpc);
    let state = dir.path().join("state");
    let agent = Agent::start(
        &receiver_args(&endpoint, state.to_str().unwrap()),
        &collector.token,
    );
    let pid = std::process::id();
    let grpc_run = format!("agentgrpc{pid}");
    let http_run = format!("agenthttp{pid}");
    python_send_logs(
        "grpc",
        &format!("http://{}", agent.listener("otlp_grpc")),
        &grpc_run,
    )
    .await;
    python_send_logs(
        "http",
        &format!("http://{}/v1/logs", agent.listener("otlp_http")),
        &http_run,
    )
    .await;
    for run in [&grpc_run, &http_run] {
        collector
            .wait_count(&format!("attributes.run_id:{run}"), 3, Some(&agent))
            .await;
    }
    let hit = &collector
        .search(
            &format!("attributes.run_id:{grpc_run} AND attributes.step:span"),
            1,
        )
        .await["hits"][0];
    assert_eq!(hit["resource"]["telemetry.sdk.language"], "python", "{hit}");
    assert!(hit["resource"]["host.name"].is_string(), "{hit}");
    assert_eq!(hit["trace_id"].as_str().map(str::len), Some(32), "{hit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_servers_own_metrics_are_scraped() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(&prom_config, "global:\n  scrape_interval: 1h\n").unwrap();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the prometheus binary (Debian package prometheus)");
    let target = format!("127.0.0.1:{prom_port}");
    // Scraped before it listens, the first scrape fails and `up` starts at 0.
    wait_ready(&target, &mut prometheus).await;
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nexporter:\n  endpoint: http://{grpc}\nhost_metrics:\n  enabled: false\nscrape_configs:\n  - job_name: prometheus\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n",
            state = dir.path().join("state").display(),
            grpc = collector.grpc,
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    let q = format!(r#"prometheus_build_info{{job="prometheus",instance="{target}"}}"#);
    let info = wait_promql(&collector, &q, &agent).await;
    assert!(
        info[0]["metric"]["version"]
            .as_str()
            .unwrap()
            .starts_with("2."),
        "{info:?}"
    );
    // A histogram, a summary and a counter of a real exporter, under their own names.
    let q =
        format!(r#"count(prometheus_http_request_duration_seconds_bucket{{instance="{target}"}})"#);
    let buckets = wait_promql(&collector, &q, &agent).await;
    assert!(
        buckets[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 5,
        "{buckets:?}"
    );
    wait_promql(
        &collector,
        r#"go_gc_duration_seconds{job="prometheus",quantile="0.5"}"#,
        &agent,
    )
    .await;
    wait_promql(
        &collector,
        r#"process_cpu_seconds_total{job="prometheus"}"#,
        &agent,
    )
    .await;
    let up = wait_promql(&collector, r#"up{job="prometheus"}"#, &agent).await;
    assert_eq!(up[0]["value"][1], "1");
    assert_eq!(
        agent.stat("scrapes_failed").await,
        0,
        "{}",
        agent.proc.log()
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

/// Waits until the Prometheus at `addr` answers `/-/ready` with 200 (60 s at most).
async fn wait_ready(addr: &str, prometheus: &mut std::process::Child) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await {
            let mut reply = Vec::new();
            if conn
                .write_all(b"GET /-/ready HTTP/1.0\r\n\r\n")
                .await
                .is_ok()
                && conn.read_to_end(&mut reply).await.is_ok()
                && reply.starts_with(b"HTTP/1.0 200")
            {
                return;
            }
        }
        assert!(
            prometheus.try_wait().unwrap().is_none(),
            "prometheus exited before it was ready"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus not ready on {addr} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
