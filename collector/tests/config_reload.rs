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
        "listen:\n  otlp_grpc: 127.0.0.1:0\n  otlp_http: 127.0.0.1:0\n  api: 127.0.0.1:1\nretention:\n  logs: 9d\napi:\n  cors_allowed_origins: [\"https://grafana.example.com\"]\n",
    )
    .unwrap();
    let r = reload(&c).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let outcome = &r.json()["reload"];
    assert_eq!(
        outcome["restart_required"],
        serde_json::json!(["listen.api", "retention.logs"]),
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
    assert_eq!(s["config"]["retention"]["logs"], "7d");
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
