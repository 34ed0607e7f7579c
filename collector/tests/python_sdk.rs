//! End to end with the real OpenTelemetry Python SDK: `collector/tests/python/send_logs.py` logs
//! through Python's `logging` bridge, a LoggerProvider with a BatchLogRecordProcessor and
//! the OTLP log exporter (gRPC or HTTP/protobuf, plain or gzip); the records must be
//! searchable with their attributes, resource, scope and trace context intact. The script
//! authenticates the way an SDK user would: the API key in the exporter's headers.
//!
//! Needs `python3` with the packages of `collector/tests/python/requirements.txt`; without them
//! the tests fail with the command that installs them (they never skip).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use common::*;

const INSTALL_HINT: &str = "run the README's test command, `make test`, which installs them \
     (or by hand, from the workspace root: `python3 -m pip install -r collector/tests/python/requirements.txt`)";

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// A `python3` command with no OTEL_* settings from the outer environment.
fn python() -> tokio::process::Command {
    let mut command = tokio::process::Command::new("python3");
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
    command.kill_on_drop(true);
    command
}

/// Fails with the install command if python3 or the SDK packages are missing.
async fn require_python_sdk() {
    let output = python()
        .args([
            "-c",
            "import opentelemetry.sdk._logs, opentelemetry.sdk.trace, \
             opentelemetry.exporter.otlp.proto.grpc._log_exporter, \
             opentelemetry.exporter.otlp.proto.http._log_exporter",
        ])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("python3 cannot be run ({e}); it and the OpenTelemetry packages are needed: {INSTALL_HINT}")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the OpenTelemetry Python SDK is not installed ({}); {INSTALL_HINT}",
        stderr.trim().lines().last().unwrap_or("")
    );
}

/// Runs `send_logs.py` with `token` as the exporter's bearer token and returns what it
/// reports having sent.
async fn send_logs(
    protocol: &str,
    endpoint: &str,
    run_id: &str,
    compression: &str,
    token: &str,
) -> Value {
    require_python_sdk().await;
    let script = python_dir().join("send_logs.py");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        python()
            .arg(&script)
            .args(["--protocol", protocol, "--endpoint", endpoint])
            .args(["--run-id", run_id, "--compression", compression])
            .args(["--token", token])
            .output(),
    )
    .await
    .expect("send_logs.py finishes within 120 s")
    .expect("run send_logs.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "send_logs.py is missing packages: {stderr}; {INSTALL_HINT}"
    );
    assert!(
        output.status.success(),
        "send_logs.py failed ({:?}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("send_logs.py prints one JSON object ({e}): {stdout}"));
    assert_eq!(report["exported"], json!(3), "{report}");
    report
}

fn hit_of_step<'a>(result: &'a Value, step: &str) -> &'a Value {
    hits(result)
        .iter()
        .find(|h| h["attributes"]["step"] == step)
        .unwrap_or_else(|| panic!("no record with step {step}: {result}"))
}

async fn python_sdk_logs_are_searchable(protocol: &str, compression: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let endpoint = match protocol {
        "grpc" => format!("http://{}", c.addrs.grpc),
        _ => format!("http://{}/v1/logs", c.addrs.http),
    };
    let run_id = format!("run{protocol}{compression}{}", std::process::id());
    let report = send_logs(protocol, &endpoint, &run_id, compression, c.token()).await;
    let service = format!("py-e2e-{protocol}");
    assert_eq!(report["service_name"], json!(service));

    let result = c
        .wait_for_query(&format!("attributes.run_id:{run_id}"), 3)
        .await;
    let now = now_ns();
    for hit in hits(&result) {
        assert_eq!(hit["service_name"], json!(service), "{hit}");
        assert_eq!(hit["resource"]["service.name"], json!(service));
        assert_eq!(hit["resource"]["run.id"], json!(run_id));
        assert_eq!(hit["resource"]["telemetry.sdk.language"], json!("python"));
        assert_eq!(
            hit["scope"]["name"], report["logger_name"],
            "scope = logger"
        );
        let t: u64 = hit["time_unix_nano"].as_str().unwrap().parse().unwrap();
        assert!(
            t.abs_diff(now) < 300 * 1_000_000_000,
            "the SDK's timestamp is kept: {t} vs now {now}"
        );
        assert_eq!(hit["attributes"]["code.function.name"], json!("main"));
        assert!(hit["attributes"]["code.line.number"].is_i64(), "{hit}");
    }

    let hello = hit_of_step(&result, "hello");
    assert_eq!(hello["body"], json!(format!("python sdk hello {run_id}")));
    assert_eq!(hello["severity_number"], json!(9));
    assert_eq!(hello["severity_text"], json!("INFO"));
    assert_eq!(hello["attributes"]["user.id"], json!(42), "int stays int");
    assert_eq!(hello["attributes"]["ratio"], json!(0.5));
    assert_eq!(hello["attributes"]["flag"], json!(true));
    assert_eq!(hello["trace_id"], json!(""), "logged outside any span");

    let in_span = hit_of_step(&result, "span");
    assert_eq!(
        in_span["body"],
        json!(format!("python sdk inside span {run_id}"))
    );
    assert_eq!(in_span["severity_number"], json!(17));
    assert_eq!(in_span["severity_text"], json!("ERROR"));
    assert_eq!(in_span["attributes"]["order.id"], json!(1001));
    assert_eq!(
        in_span["trace_id"], report["trace_id"],
        "the span's trace id"
    );
    assert_eq!(in_span["span_id"], report["span_id"], "the span's span id");
    assert_eq!(
        in_span["flags"].as_u64().unwrap() & 1,
        1,
        "sampled flag: {in_span}"
    );

    let failure = hit_of_step(&result, "exception");
    assert_eq!(failure["severity_text"], json!("ERROR"));
    assert_eq!(failure["attributes"]["exception.type"], json!("ValueError"));
    assert_eq!(
        failure["attributes"]["exception.message"],
        json!("card declined")
    );
    assert!(
        failure["attributes"]["exception.stacktrace"]
            .as_str()
            .unwrap()
            .contains("ValueError: card declined")
    );

    // The SDK's ids and resource are searchable too.
    let trace_id = report["trace_id"].as_str().unwrap();
    let by_trace = c
        .search(&[("query", &format!("trace_id:{trace_id}"))])
        .await;
    assert_eq!(by_trace["total"], json!(1));
    let by_service = c
        .search(&[(
            "query",
            &format!("service.name:{service} AND resource.run.id:{run_id}"),
        )])
        .await;
    assert_eq!(by_service["total"], json!(3));
    let errors = c
        .search(&[(
            "query",
            &format!("attributes.run_id:{run_id} AND severity_text:error"),
        )])
        .await;
    assert_eq!(errors["total"], json!(2));
}

#[tokio::test]
async fn python_sdk_logs_over_grpc_are_searchable() {
    python_sdk_logs_are_searchable("grpc", "none").await;
}

#[tokio::test]
async fn python_sdk_logs_over_grpc_gzip_are_searchable() {
    python_sdk_logs_are_searchable("grpc", "gzip").await;
}

#[tokio::test]
async fn python_sdk_logs_over_http_protobuf_are_searchable() {
    python_sdk_logs_are_searchable("http", "none").await;
}

#[tokio::test]
async fn python_sdk_logs_over_http_protobuf_gzip_are_searchable() {
    python_sdk_logs_are_searchable("http", "gzip").await;
}

/// One value of an instant PromQL query that must return exactly one series.
async fn promql_one(c: &Collector, query: &str) -> (Value, f64) {
    let q = serde_urlencoded::to_string([("query", query)]).expect("encodable");
    let reply = c.api_get(&format!("/api/v1/query?{q}")).await;
    let body = reply.json();
    assert_eq!(body["status"], "success", "{query}: {body}");
    let result = body["data"]["result"].as_array().expect("a vector");
    assert_eq!(result.len(), 1, "{query}: one series expected: {body}");
    let value = result[0]["value"][1].as_str().unwrap().parse().unwrap();
    (result[0]["metric"].clone(), value)
}

/// The SDK's four instrument kinds arrive with the names and labels the README's mapping
/// promises, and answer PromQL.
async fn python_sdk_metrics_are_queryable(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let endpoint = match protocol {
        "grpc" => format!("http://{}", c.addrs.grpc),
        _ => format!("http://{}/v1/metrics", c.addrs.http),
    };
    let run_id = format!("m{protocol}{}", std::process::id());
    require_python_sdk().await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        python()
            .arg(python_dir().join("send_metrics.py"))
            .args(["--protocol", protocol, "--endpoint", &endpoint])
            .args(["--run-id", &run_id, "--token", c.token()])
            .output(),
    )
    .await
    .expect("send_metrics.py finishes within 120 s")
    .expect("run send_metrics.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "send_metrics.py failed ({:?}): {stderr}",
        output.status
    );
    let job = format!("py-metrics-{protocol}");
    let sel = format!(r#"job="{job}",instance="{run_id}",region="eu",run_id="{run_id}""#);

    let (labels, orders) = promql_one(&c, &format!("app_orders_total{{{sel}}}")).await;
    assert_eq!(orders, 7.0);
    assert_eq!(labels["otel_scope_name"], "vantage.e2e.meter", "{labels}");
    assert_eq!(labels["otel_scope_version"], "1.2.3", "{labels}");
    let (_, depth) = promql_one(&c, &format!("app_queue_depth{{{sel}}}")).await;
    assert_eq!(depth, 7.0, "up-down counter as a gauge");
    let (_, count) = promql_one(&c, &format!("app_request_duration_seconds_count{{{sel}}}")).await;
    assert_eq!(count, 4.0);
    let (_, sum) = promql_one(&c, &format!("app_request_duration_seconds_sum{{{sel}}}")).await;
    assert!((sum - 2.222).abs() < 1e-9, "{sum}");
    let (_, le) = promql_one(
        &c,
        &format!(r#"app_request_duration_seconds_bucket{{{sel},le="+Inf"}}"#),
    )
    .await;
    assert_eq!(le, 4.0);
    let (_, median) = promql_one(
        &c,
        &format!("histogram_quantile(0.5, app_request_duration_seconds_bucket{{{sel}}})"),
    )
    .await;
    // The SDK's default bounds (0, 5, 10, 25, ...) put all four values in (0, 5]:
    // linear interpolation puts the median half way, as Prometheus would.
    assert_eq!(median, 2.5, "median over the SDK's default buckets");
    let (_, temperature) = promql_one(&c, &format!("app_temperature_celsius{{{sel}}}")).await;
    assert_eq!(temperature, 21.5);
    let (info, _) = promql_one(
        &c,
        &format!(r#"target_info{{job="{job}",instance="{run_id}"}}"#),
    )
    .await;
    assert_eq!(info["host_name"], "e2e-host", "{info}");
    assert_eq!(info["telemetry_sdk_language"], "python", "{info}");

    let meta = c.api_get("/api/v1/metadata").await.json();
    assert_eq!(
        meta["data"]["app_orders_total"][0]["type"], "counter",
        "{meta}"
    );
    assert_eq!(meta["data"]["app_orders_total"][0]["help"], "Orders placed");
    assert_eq!(
        meta["data"]["app_request_duration_seconds"][0]["type"],
        "histogram"
    );
    assert_eq!(
        meta["data"]["app_request_duration_seconds"][0]["unit"],
        "seconds"
    );
    assert_eq!(meta["data"]["app_temperature_celsius"][0]["type"], "gauge");
}

#[tokio::test]
async fn python_sdk_metrics_over_grpc_are_queryable() {
    python_sdk_metrics_are_queryable("grpc").await;
}

#[tokio::test]
async fn python_sdk_metrics_over_http_protobuf_are_queryable() {
    python_sdk_metrics_are_queryable("http").await;
}
