//! The collector's own configuration reloaded while it runs (SIGHUP and the API):
//! open connections keep working, a new rate limit takes effect, a broken file is
//! refused whole, settings that cannot change live are reported, and the effective
//! configuration at `/api/v1/status/config` never shows a secret.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tonic::transport::Endpoint;
use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;

use common::*;

/// How long a reload triggered by a signal may take to show in the log.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

const LISTEN: &str =
    "listen:\n  otlp_grpc: 127.0.0.1:0\n  otlp_http: 127.0.0.1:0\n  api: 127.0.0.1:0\n";

fn write_config(path: &std::path::Path, extra: &str) {
    std::fs::write(path, format!("{LISTEN}{extra}")).unwrap();
}

/// Waits until the log has `n` events with `message`.
async fn wait_for_log(c: &Collector, message: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + RELOAD_TIMEOUT;
    loop {
        let events = c.log_events(message);
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {n}x {message:?} in the log:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reload(c: &Collector) -> Reply {
    c.api_request(
        Method::POST,
        "/api/v1/status/config/reload",
        &[],
        Bytes::new(),
    )
    .await
}

async fn status(c: &Collector) -> Value {
    let r = c.api_get("/api/v1/status/config").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

/// A GET on a hand-driven HTTP/1.1 connection; fails if the connection was closed.
async fn http_get(
    http: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    auth: &str,
    path: &str,
) -> (StatusCode, String) {
    http.ready()
        .await
        .expect("the keep-alive connection is open");
    let req = hyper::Request::get(path)
        .header("host", "collector")
        .header("authorization", auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = http
        .send_request(req)
        .await
        .expect("request on the same connection");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn connections_survive_sighup_and_a_new_rate_limit_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));

    // One gRPC connection, counted: the connector runs once per TCP connection.
    let connects = Arc::new(AtomicUsize::new(0));
    let grpc_addr = c.addrs.grpc;
    let counter = connects.clone();
    let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: hyper::Uri| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let tcp = tokio::net::TcpStream::connect(grpc_addr).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tcp))
            }
        }))
        .await
        .expect("connect to the OTLP/gRPC port");
    let token: tonic::metadata::MetadataValue<_> = bearer(c.token()).parse().unwrap();
    let mut grpc =
        LogsServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        });
    // One HTTP/1.1 keep-alive connection to the API, driven by hand: if the server
    // closed it, the next request on it fails.
    let tcp = tokio::net::TcpStream::connect(c.addrs.api).await.unwrap();
    let (mut http, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    let auth = bearer(c.token());
    for i in 0..3 {
        grpc.export(logs_request(
            "reload",
            vec![log_record(&format!("before-{i}"), vec![])],
        ))
        .await
        .expect("export before the reload");
        assert_eq!(
            http_get(&mut http, &auth, "/api/v1/secrets").await.0,
            StatusCode::OK
        );
    }
    // Unlimited so far: a burst of searches passes.
    for _ in 0..5 {
        assert_eq!(c.search_raw(&[("query", "")]).await.status, StatusCode::OK);
    }

    write_config(&file, "limits:\n  query_requests_per_second: 1\n");
    c.signal("HUP");
    let events = wait_for_log(&c, "configuration reloaded", 1).await;
    assert_eq!(events[0]["trigger"], "sighup", "{}", events[0]);

    for i in 0..3 {
        grpc.export(logs_request(
            "reload",
            vec![log_record(&format!("after-{i}"), vec![])],
        ))
        .await
        .expect("export on the same gRPC connection after SIGHUP");
        let (status, body) = http_get(&mut http, &auth, "/api/v1/status/config").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "the gRPC connection was never re-made"
    );
    assert!(
        !conn_task.is_finished(),
        "the HTTP/1.1 connection is still open"
    );

    // The new limit: 1 query per second; a burst of five meets a 429 with Retry-After.
    let mut limited = None;
    for _ in 0..5 {
        let r = c.search_raw(&[("query", "")]).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the reloaded rate limit applies");
    assert!(limited.header("retry-after").is_some());

    let (_, body) = http_get(&mut http, &auth, "/api/v1/status/config").await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["config"]["limits"]["query_requests_per_second"], 1);
    assert_eq!(s["last_reload"]["result"], "success");
    assert_eq!(
        s["last_reload"]["applied"],
        serde_json::json!(["limits.query_requests_per_second"])
    );
    let metrics = c.metrics_text().await;
    assert_eq!(
        metric(&metrics, "vantage_config_reloads_total{result=\"success\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "vantage_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "vantage_config_last_reload_success_timestamp_seconds"
        )
        .unwrap()
            > 1.0e9
    );
}

#[tokio::test]
async fn a_broken_file_is_refused_whole_and_the_old_config_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "metrics:\n  query_timeout: 30s\n");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));

    // Not YAML at all.
    std::fs::write(&file, "listen: [\n").unwrap();
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let body = r.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("configuration refused"),
        "{body}"
    );
    assert_eq!(body["reload"]["result"], "failure");

    // Valid YAML, one good change and one invalid value: nothing is applied.
    write_config(
        &file,
        "metrics:\n  query_timeout: 5s\nretention:\n  logs: 1h\nlimits:\n  query_requests_per_sec: 1\n",
    );
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("query_requests_per_sec"), "{error}");
    c.signal("HUP");
    let refused = wait_for_log(
        &c,
        "configuration reload refused; the running configuration stays",
        3,
    )
    .await;
    assert_eq!(refused[2]["trigger"], "sighup");

    let s = status(&c).await;
    assert_eq!(
        s["config"]["metrics"]["query_timeout"], "30s",
        "the old value stays"
    );
    assert_eq!(s["last_reload"]["result"], "failure");
    let metrics = c.metrics_text().await;
    assert_eq!(
        metric(&metrics, "vantage_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "vantage_config_reloads_total{result=\"failure\"}"),
        Some(3.0)
    );
    c.assert_still_serves("refused").await;

    // Fixed: accepted.
    write_config(&file, "metrics:\n  query_timeout: 5s\n");
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(status(&c).await["config"]["metrics"]["query_timeout"], "5s");
    assert_eq!(
        metric(
            &c.metrics_text().await,
            "vantage_config_last_reload_successful"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn settings_that_cannot_change_live_are_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    std::fs::write(
        &file,
        "listen:\n  otlp_grpc: 127.0.0.1:0\n  otlp_http: 127.0.0.1:0\n  api: 127.0.0.1:1\nwal:\n  segment_max_bytes: 1048576\napi:\n  cors_allowed_origins: [\"https://grafana.example.com\"]\n",
    )
    .unwrap();
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let outcome = &r.json()["reload"];
    assert_eq!(
        outcome["restart_required"],
        serde_json::json!(["listen.api", "wal.segment_max_bytes"]),
        "{outcome}"
    );
    assert_eq!(
        outcome["applied"],
        serde_json::json!(["api.cors_allowed_origins"])
    );
    let s = status(&c).await;
    assert_eq!(
        s["config"]["listen"]["api"], "127.0.0.1:0",
        "the old address stays"
    );
    assert_eq!(s["config"]["wal"]["segment_max_bytes"], 64 * 1024 * 1024);
    // The new CORS origin is served at once.
    let r = c
        .api_request(
            Method::GET,
            "/healthz",
            &[("origin", "https://grafana.example.com")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://grafana.example.com")
    );
    let r = c
        .api_request(
            Method::GET,
            "/healthz",
            &[("origin", "https://evil.example")],
            Bytes::new(),
        )
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
    let events = c.log_events("configuration reloaded");
    assert_eq!(events.len(), 1);
    assert!(
        events[0]["restart_required"]
            .as_str()
            .unwrap()
            .contains("listen.api")
    );
}

#[tokio::test]
async fn the_effective_config_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    // A key written in the file (allowed, though the key file is the better place).
    let key = "c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5YWI=";
    write_config(&file, &format!("secrets:\n  key: {key}\n"));
    let c = Collector::builder()
        .config_file(&file)
        .env("VANTAGE_LIMITS__QUERY_REQUESTS_PER_SECOND", "1000")
        .start(&dir.path().join("data"));
    let r = c.api_get("/api/v1/status/config").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!r.text().contains(key), "{}", r.text());
    let s = r.json();
    assert_eq!(s["config"]["secrets"]["key"], "<redacted>");
    assert_eq!(s["config"]["limits"]["query_requests_per_second"], 1000);
    assert_eq!(
        s["config"]["retention"]["metrics"], "15d",
        "defaults are shown"
    );
    assert_eq!(s["loaded_from"]["file"], file.display().to_string());
    assert_eq!(
        s["loaded_from"]["env"],
        serde_json::json!(["VANTAGE_LIMITS__QUERY_REQUESTS_PER_SECOND", "VANTAGE_LOG"])
    );
    assert!(s["loaded_at"].as_str().unwrap().starts_with("20"));
    let r = c.api_get("/api/v1/status/config?format=yaml").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/yaml")
    );
    assert!(
        r.text().contains("query_requests_per_second: 1000"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains(key));
    assert_eq!(
        c.api_get("/api/v1/status/config?format=xml").await.status,
        StatusCode::BAD_REQUEST
    );

    // A changed key, reloaded: reported, still masked, never logged.
    let key2 = "b3RoZXIta2V5LW1hdGVyaWFsLTAxMjM0NTY3ODlhYmM=";
    write_config(&file, &format!("secrets:\n  key: {key2}\n"));
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("secrets.key") && !r.text().contains(key2));
    assert!(
        !c.api_get("/api/v1/status/config")
            .await
            .text()
            .contains(key2)
    );
    let log = c.log();
    assert!(!log.contains(key) && !log.contains(key2));

    // Admins of the default tenant only.
    let r = c
        .api_request(
            Method::POST,
            "/api/v1/keys",
            &[("content-type", "application/json")],
            Bytes::from(r#"{"name":"q","scopes":["query"]}"#),
        )
        .await;
    let query_key = r.json()["key"].as_str().unwrap().to_string();
    let auth = bearer(&query_key);
    let r = c
        .api_request(
            Method::GET,
            "/api/v1/status/config",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .api_request(
            Method::POST,
            "/api/v1/status/config/reload",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// The reload's outcome from `POST /api/v1/status/config/reload`, which must succeed.
async fn reload_ok(c: &Collector) -> Value {
    let r = reload(c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["reload"].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// An OTLP/JSON logs body of about `bytes` bytes.
fn json_logs_body(bytes: usize) -> String {
    let text = "x".repeat(bytes);
    serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": (now_ns() - 1_000_000_000).to_string(),
        "body": {"stringValue": text},
    }]}]}]})
    .to_string()
}

#[tokio::test]
async fn request_limits_and_the_access_token_lifetime_apply_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    let auth = bearer(c.token());
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let body = json_logs_body(8 * 1024);
    let r = c.post_otlp("/v1/logs", &headers, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let login = || async {
        let text = std::fs::read_to_string(c.data_dir().join(INITIAL_ADMIN_FILE)).unwrap();
        let password = text
            .lines()
            .find_map(|l| l.strip_prefix("admin_password: "))
            .expect("admin_password line")
            .to_string();
        let url = format!("http://{}/api/v1/auth/login", c.addrs.api);
        let r = c
            .request_anonymous(
                Method::POST,
                &url,
                &[("content-type", "application/json")],
                serde_json::json!({"username": "admin", "password": password}).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["expires_in"].as_u64().unwrap()
    };
    assert_eq!(login().await, 15 * 60, "the default lifetime");

    write_config(
        &file,
        "ingest:\n  max_request_bytes: 4096\n  max_attributes_per_record: 1\nauth:\n  access_token_ttl: 1m\n",
    );
    let outcome = reload_ok(&c).await;
    assert_eq!(
        strings(&outcome["applied"]),
        [
            "auth.access_token_ttl",
            "ingest.max_attributes_per_record",
            "ingest.max_request_bytes"
        ],
        "{outcome}"
    );
    assert_eq!(outcome["restart_required"], serde_json::json!([]));

    // OTLP/HTTP: the body that passed is now too large.
    let r = c.post_otlp("/v1/logs", &headers, body.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    // OTLP/gRPC: its decoder's limit is the one at start; the ingest path checks the
    // new one, so the same record is refused there too, as not retryable.
    let big = logs_request("reload", vec![log_record(&"y".repeat(8 * 1024), vec![])]);
    let e = c
        .logs_client()
        .await
        .export(big)
        .await
        .expect_err("over the reloaded limit");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("ingest.max_request_bytes"), "{e:?}");
    // Remote write reads the same limit.
    let r = c
        .api_request(
            Method::POST,
            "/api/v1/write",
            &[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
            ],
            vec![0u8; 8 * 1024],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    // The record limits: a second attribute is now one too many.
    let two = logs_request(
        "reload",
        vec![log_record("two", vec![kv_str("a", "1"), kv_str("b", "2")])],
    );
    let partial = c
        .logs_client()
        .await
        .export(two)
        .await
        .expect("accepted with a rejection")
        .into_inner()
        .partial_success
        .expect("the record is rejected");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    // A small request still passes, and people's tokens get the new lifetime.
    let r = c.post_otlp("/v1/logs", &headers, json_logs_body(100)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(login().await, 60);
    let s = status(&c).await;
    assert_eq!(s["config"]["ingest"]["max_request_bytes"], 4096);
    assert_eq!(s["config"]["auth"]["access_token_ttl"], "1m");
}

#[tokio::test]
async fn shorter_log_retention_drops_an_old_partition_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    let old_record = |marker: &str| {
        let mut r = log_record("from three days ago", vec![kv_str("marker", marker)]);
        r.time_unix_nano = now_ns() - 3 * 86_400 * 1_000_000_000;
        r.observed_time_unix_nano = r.time_unix_nano;
        r
    };
    c.export_ok(logs_request("retention", vec![old_record("old1")]))
        .await;
    let week = [("query", "attributes.marker:old1"), ("start", "now-6d")];
    c.wait_for_total(&week, 1).await;

    write_config(
        &file,
        "retention:\n  logs: 1d\n  traces: 2d\n  metrics: 12h\n",
    );
    c.signal("HUP");
    let events = wait_for_log(&c, "configuration reloaded", 1).await;
    let applied = events[0]["applied"].as_str().unwrap().to_string();
    for key in ["retention.logs", "retention.metrics", "retention.traces"] {
        assert!(applied.contains(key), "{applied}");
    }
    assert_eq!(events[0]["restart_required"], "[]", "{}", events[0]);
    // The sweeper notices the change at its next pass (about a second), not in ten
    // minutes: the partition from three days ago is gone.
    wait_for_log(&c, "log partition past retention deleted", 1).await;
    c.wait_for_total(&week, 0).await;
    // And records that old are now refused at the door.
    let partial = c
        .logs_client()
        .await
        .export(logs_request("retention", vec![old_record("old2")]))
        .await
        .expect("accepted with a rejection")
        .into_inner()
        .partial_success
        .expect("the old record is rejected");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("timestamp_too_old"),
        "{partial:?}"
    );
    let s = status(&c).await;
    assert_eq!(s["config"]["retention"]["logs"], "1d");
    assert_eq!(s["config"]["retention"]["metrics"], "12h");
    c.assert_still_serves("retention").await;
}

/// A webhook sink on 127.0.0.1:0: the path of every POST it gets, with its body.
async fn webhook_sink() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<(String, Value)>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = tx.send((path, json)).await;
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// Waits for a notification about `alertname`; returns the path it was posted to.
async fn notified(
    rx: &mut tokio::sync::mpsc::Receiver<(String, Value)>,
    alertname: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no notification for {alertname} within 60 s"))
            .expect("the sink runs");
        if got.1["commonLabels"]["alertname"] == alertname {
            return got.0;
        }
    }
}

fn alertmanager_yaml(sink: std::net::SocketAddr, path: &str) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: http://{sink}{path}\n"
    )
}

async fn post_alert(c: &Collector, alertname: &str) {
    let body = serde_json::json!([{
        "labels": {"alertname": alertname},
        "annotations": {"summary": "reload test"},
    }]);
    let r = c
        .api_request(
            Method::POST,
            "/api/v2/alerts",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// `(file, group name, interval in seconds)` of the default tenant's rule groups.
async fn rule_groups(c: &Collector) -> Vec<(String, String, f64)> {
    let r = c.api_get("/api/v1/rules").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["file"].as_str().unwrap().to_string(),
                g["name"].as_str().unwrap().to_string(),
                g["interval"].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn wait_for_groups(c: &Collector, want: &[(&str, f64)]) {
    let deadline = tokio::time::Instant::now() + RELOAD_TIMEOUT;
    loop {
        let got = rule_groups(c).await;
        let names: Vec<(&str, f64)> = got.iter().map(|(_, n, i)| (n.as_str(), *i)).collect();
        if names == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rule groups {names:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn alerting_settings_and_the_alertmanager_file_apply_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut notifications) = webhook_sink().await;
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(&am, alertmanager_yaml(sink, "/first")).unwrap();
    let (rules_a, rules_b) = (dir.path().join("rules-a"), dir.path().join("rules-b"));
    std::fs::create_dir_all(&rules_a).unwrap();
    std::fs::create_dir_all(&rules_b).unwrap();
    let group = |name: &str| {
        format!(
            "groups:\n  - name: {name}\n    rules:\n      - record: {name}_one\n        expr: vector(1)\n"
        )
    };
    std::fs::write(rules_a.join("a.yml"), group("group_a")).unwrap();
    std::fs::write(rules_b.join("b.yml"), group("group_b")).unwrap();
    let file = dir.path().join("collector.yaml");
    let alerting = |rules: &std::path::Path, interval: &str| {
        format!(
            "alerting:\n  alertmanager_config: {}\n  rules_dir: {}\n  evaluation_interval: {interval}\n  external_url: https://vantage.example.com\n",
            am.display(),
            rules.display()
        )
    };
    write_config(&file, &alerting(&rules_a, "1m"));
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    wait_for_groups(&c, &[("group_a", 60.0)]).await;
    post_alert(&c, "BeforeReload").await;
    assert_eq!(notified(&mut notifications, "BeforeReload").await, "/first");

    // A new route in the same file, a new rules directory and a new default interval.
    std::fs::write(&am, alertmanager_yaml(sink, "/second")).unwrap();
    write_config(&file, &alerting(&rules_b, "7s"));
    c.signal("HUP");
    let events = wait_for_log(&c, "configuration reloaded", 1).await;
    let applied = events[0]["applied"].as_str().unwrap().to_string();
    for key in [
        "alerting.alertmanager_config",
        "alerting.evaluation_interval",
        "alerting.rules_dir",
    ] {
        assert!(applied.contains(key), "{applied}");
    }
    assert_eq!(events[0]["restart_required"], "[]", "{}", events[0]);
    wait_for_groups(&c, &[("group_b", 7.0)]).await;
    post_alert(&c, "AfterReload").await;
    assert_eq!(notified(&mut notifications, "AfterReload").await, "/second");

    // Only the file's contents changed: that is reported under the key naming it.
    std::fs::write(&am, alertmanager_yaml(sink, "/third")).unwrap();
    let outcome = reload_ok(&c).await;
    assert_eq!(
        outcome["applied"],
        serde_json::json!(["alerting.alertmanager_config"]),
        "{outcome}"
    );
    post_alert(&c, "ContentsOnly").await;
    assert_eq!(notified(&mut notifications, "ContentsOnly").await, "/third");

    // A broken Alertmanager file refuses the whole reload, the interval change with it.
    std::fs::write(&am, "route:\n  receiver: nobody\nreceivers: []\n").unwrap();
    write_config(&file, &alerting(&rules_b, "9s"));
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("alertmanager.yml"), "{}", r.text());
    let s = status(&c).await;
    assert_eq!(s["config"]["alerting"]["evaluation_interval"], "7s");
    assert_eq!(rule_groups(&c).await[0].2, 7.0);
    post_alert(&c, "AfterRefusal").await;
    assert_eq!(notified(&mut notifications, "AfterRefusal").await, "/third");
}

/// `POST /api/v1/write` of one sample of series `aged` at `t_ms`.
async fn write_aged(c: &Collector, t_ms: i64) -> Reply {
    use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};
    let batch = MetricBatch {
        series: vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "aged"), ("job", "reload")]),
            samples: vec![Sample { t: t_ms, v: 1.0 }],
        }],
        metadata: vec![],
    };
    let body = vantage_proto::prom::remote::encode_write_request(&batch).unwrap();
    c.api_request(
        Method::POST,
        "/api/v1/write",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
        body,
    )
    .await
}

/// Polls `/metrics` until `vantage_metrics_blocks` is `want`.
async fn wait_for_blocks(c: &Collector, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let text = c.metrics_text().await;
        if metric_value(&text, "vantage_metrics_blocks", &[]) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "vantage_metrics_blocks never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn shorter_metrics_retention_drops_old_blocks_at_the_next_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    write_config(&file, "");
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    let three_hours_ago = (now_ns() / 1_000_000) as i64 - 3 * 3_600_000;
    let r = write_aged(&c, three_hours_ago).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // A head older than the block span is cut into a block at the next maintenance.
    wait_for_blocks(&c, 1.0).await;
    // A second after the sample (the query time is in whole seconds).
    let at = format!("{}", three_hours_ago / 1000 + 1);
    let query = format!("/api/v1/query?query=aged&time={at}");
    let found = c.api_get(&query).await.json();
    assert_eq!(
        found["data"]["result"].as_array().unwrap().len(),
        1,
        "{found}"
    );

    write_config(&file, "retention:\n  metrics: 1h\n");
    let outcome = reload_ok(&c).await;
    assert_eq!(outcome["applied"], serde_json::json!(["retention.metrics"]));
    // Admission uses the new value at once ...
    let r = write_aged(&c, three_hours_ago + 1_000).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // ... and the next maintenance pass deletes the block.
    wait_for_blocks(&c, 0.0).await;
    let gone = c.api_get(&query).await.json();
    assert_eq!(gone["data"]["result"], serde_json::json!([]), "{gone}");
}
