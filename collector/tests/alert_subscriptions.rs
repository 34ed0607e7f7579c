//! People's own subscriptions to notification receivers, end to end: the real collector
//! binary, alerts entered through its Alertmanager API, a real HTTP receiver for the
//! webhook and a real SMTP server (Python `aiosmtpd`, collector/tests/python/smtp_sink.py)
//! for the subscribers' e-mails.
//!
//! Missing tools fail the test with the command that installs them; nothing is skipped.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use common::*;

const INSTALL_HINT: &str = "run `make test-deps` (installs the Python packages of \
     collector/tests/python/requirements.txt, aiosmtpd among them)";
/// How long a notification may take to arrive before a test fails: group_wait is 1 s;
/// the rest is margin for a loaded 2-core machine.
const ARRIVAL: Duration = Duration::from_secs(60);
const JSON: &str = "application/json";

/// A webhook receiver on 127.0.0.1:0 handing over each payload's group key and status.
async fn webhook() -> (std::net::SocketAddr, mpsc::Receiver<(String, String)>) {
    let (tx, rx) = mpsc::channel(1024);
    let app = Router::new().fallback(move |req: Request| {
        let tx = tx.clone();
        async move {
            let body = axum::body::to_bytes(req.into_body(), 16 << 20)
                .await
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = tx
                .send((
                    v["groupKey"].as_str().unwrap_or("").to_string(),
                    v["status"].as_str().unwrap_or("").to_string(),
                ))
                .await;
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// Waits for the webhook notification of group `alertname` with `status`.
async fn hook_until(rx: &mut mpsc::Receiver<(String, String)>, alertname: &str, status: &str) {
    let want = format!("alertname=\"{alertname}\"");
    loop {
        let (key, got) = tokio::time::timeout(ARRIVAL, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook for {alertname} ({status}) within {ARRIVAL:?}"))
            .expect("receiver running");
        if key.contains(&want) && got == status {
            return;
        }
    }
}

/// The SMTP sink: its process and its stdout, one JSON line per message.
struct Sink {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Sink {
    async fn start() -> Sink {
        let script = format!("{}/tests/python/smtp_sink.py", env!("CARGO_MANIFEST_DIR"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = tokio::process::Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}; {INSTALL_HINT}"));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        match tokio::time::timeout(ARRIVAL, lines.next_line()).await {
            Ok(Ok(Some(l))) if l.starts_with("ready") => {}
            other => panic!("the SMTP sink did not start ({other:?}); {INSTALL_HINT}"),
        }
        Sink {
            _child: child,
            lines,
            port,
        }
    }

    /// The next e-mail: (recipients, raw message).
    async fn next(&mut self, what: &str) -> (Value, String) {
        let line = tokio::time::timeout(ARRIVAL, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no e-mail ({what}) within {ARRIVAL:?}"))
            .unwrap()
            .expect("sink running");
        let mail: Value = serde_json::from_str(&line).unwrap();
        (
            mail["rcpt_tos"].clone(),
            mail["data"].as_str().unwrap_or("").to_string(),
        )
    }
}

fn config(hook: std::net::SocketAddr, smtp_port: u16) -> String {
    format!(
        r#"
global:
  smtp_from: vantage@example.com
  smtp_smarthost: 127.0.0.1:{smtp_port}
  smtp_require_tls: false
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: http://{hook}/hook
- name: quiet
"#
    )
}

fn start(dir: &Path, config_file: &Path) -> Collector {
    Collector::builder()
        .env(
            "VANTAGE_ALERTING__ALERTMANAGER_CONFIG",
            config_file.to_str().unwrap(),
        )
        .start(dir)
}

fn rfc3339(offset_s: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn alert(name: &str, severity: &str, resolved: bool) -> Value {
    json!({
        "labels": {"alertname": name, "severity": severity},
        "annotations": {"summary": format!("{name} is broken")},
        "startsAt": rfc3339(-60),
        "endsAt": if resolved { rfc3339(-1) } else { rfc3339(3600) },
    })
}

async fn post_alerts(c: &Collector, alerts: Value) {
    let r = c
        .api_request(
            Method::POST,
            "/api/v2/alerts",
            &[("content-type", JSON)],
            alerts.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// A request with `token` (`None`: the harness's admin key).
async fn call(
    c: &Collector,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Value,
) -> Reply {
    let auth = token.map(bearer);
    let mut headers = vec![("content-type", JSON)];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    c.api_request(method, path, &headers, body).await
}

/// Creates a user with `role` in `tenant` and logs them in; returns their access token.
async fn person(c: &Collector, name: &str, role: &str, tenant: &str) -> String {
    let password = format!("{name} password 123");
    let r = call(
        c,
        None,
        Method::POST,
        "/api/v1/users",
        json!({"username": name, "password": password, "role": role, "tenant": tenant}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = call(
        c,
        None,
        Method::POST,
        "/api/v1/auth/login",
        json!({"username": name, "password": password}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// The delivery log's integrations for groups whose key contains `alertname`.
async fn logged(c: &Collector, alertname: &str) -> Vec<String> {
    let r = c.api_get("/api/v1/notifications?limit=1000").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let want = format!("alertname=\"{alertname}\"");
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["groupKey"].as_str().unwrap_or("").contains(&want))
        .map(|n| n["integration"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_is_mailed_alongside_the_webhook_unless_muted_and_never_twice() {
    let mut sink = Sink::start().await;
    let (hook, mut rx) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(&cfg, config(hook, sink.port)).unwrap();
    let data = dir.path().join("data");
    let c = start(&data, &cfg);
    let sam = person(&c, "sam", "viewer", "default").await;

    // Subscriptions belong to people, name a receiver of the tenant and a real address.
    let path = "/api/v1/alerts/subscriptions";
    let body =
        json!({"receiver": "hook", "email": "sam@example.com", "matchers": ["severity=\"page\""]});
    let r = call(&c, None, Method::POST, path, body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "an API key: {}", r.text());
    let r = call(
        &c,
        Some(&sam),
        Method::POST,
        path,
        json!({"receiver": "nope", "email": "sam@example.com"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    for bad in [
        json!({"receiver": "hook", "email": "not-an-address"}),
        json!({"receiver": "hook", "email": "sam@example.com", "matchers": ["severity=~\"(\""]}),
        json!({"receiver": "hook", "email": "sam@example.com", "extra": 1}),
    ] {
        let r = call(&c, Some(&sam), Method::POST, path, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
    }
    let r = call(&c, Some(&sam), Method::POST, path, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sub = r.json();
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["muted"], false);
    assert_eq!(sub["username"], "sam");

    // A paging alert: the webhook and sam's e-mail.
    post_alerts(&c, json!([alert("PageA", "page", false)])).await;
    hook_until(&mut rx, "PageA", "firing").await;
    let (to, mail) = sink.next("PageA").await;
    assert_eq!(to, json!(["sam@example.com"]));
    assert!(mail.contains("PageA"), "{mail}");
    assert!(mail.contains("PageA is broken"), "{mail}");

    // Not for sam's matchers: the webhook only.
    post_alerts(&c, json!([alert("InfoB", "info", false)])).await;
    hook_until(&mut rx, "InfoB", "firing").await;

    // Muted: the webhook still fires (and resolves), sam gets nothing.
    let r = call(
        &c,
        Some(&sam),
        Method::POST,
        &format!("{path}/{id}/mute"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["muted"], true);
    assert!(r.json()["muted_until"].is_null());
    post_alerts(&c, json!([alert("PageC", "page", false)])).await;
    hook_until(&mut rx, "PageC", "firing").await;
    post_alerts(&c, json!([alert("PageC", "page", true)])).await;
    hook_until(&mut rx, "PageC", "resolved").await;
    let r = call(
        &c,
        Some(&sam),
        Method::POST,
        &format!("{path}/{id}/unmute"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["muted"], false);
    post_alerts(&c, json!([alert("PageD", "page", false)])).await;
    hook_until(&mut rx, "PageD", "firing").await;
    let (_, mail) = sink.next("PageD").await;
    assert!(
        mail.contains("PageD") && !mail.contains("PageC"),
        "the first e-mail after the mute is PageD's: {mail}"
    );
    let sub_name = format!("subscription/{id}");
    assert!(logged(&c, "PageA").await.contains(&sub_name));
    assert!(!logged(&c, "InfoB").await.contains(&sub_name));
    assert!(!logged(&c, "PageC").await.contains(&sub_name));
    assert!(logged(&c, "PageD").await.contains(&sub_name));

    // A restart sends neither the webhook nor the e-mail of PageA again.
    let (status, log) = c.terminate().await;
    assert!(status.success(), "{log}");
    let c = start(&data, &cfg);
    post_alerts(
        &c,
        json!([alert("PageA", "page", false), alert("PageE", "page", false)]),
    )
    .await;
    let (_, mail) = sink.next("PageE").await;
    assert!(
        mail.contains("PageE") && !mail.contains("PageA"),
        "re-sent after restart: {mail}"
    );
    post_alerts(&c, json!([alert("PageF", "page", false)])).await;
    let (_, mail) = sink.next("PageF").await;
    assert!(
        mail.contains("PageF") && !mail.contains("PageA"),
        "re-sent after restart: {mail}"
    );
    let a: Vec<String> = logged(&c, "PageA").await;
    assert_eq!(
        a.iter().filter(|i| **i == sub_name).count(),
        1,
        "one e-mail of PageA in the log: {a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_stay_with_their_owner_and_tenant_and_the_cli_manages_them() {
    let (hook, _rx) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    // No SMTP server is needed: nothing fires here.
    std::fs::write(&cfg, config(hook, 9)).unwrap();
    let c = start(&dir.path().join("data"), &cfg);
    let r = call(
        &c,
        None,
        Method::POST,
        "/api/v1/tenants",
        json!({"name": "acme"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sam = person(&c, "sam", "viewer", "default").await;
    let vic = person(&c, "vic", "viewer", "default").await;
    let ann = person(&c, "ann", "admin", "acme").await;

    // The CLI with sam's login token.
    let env = [("VANTAGE_TOKEN", sam.as_str())];
    let out = c
        .cli(
            &[
                "alerts",
                "subscribe",
                "hook",
                "--email",
                "sam@example.com",
                "--matcher",
                "severity=\"page\"",
            ],
            &env,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 32, "{id:?}");
    let out = c.cli(&["alerts", "mute", &id, "--for", "2h"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.cli(&["alerts", "subscriptions"], &env).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&id) && text.contains("until "), "{text}");
    let out = c.cli(&["alerts", "unmute", &id], &env).await;
    assert!(out.status.success());

    let path = "/api/v1/alerts/subscriptions";
    // Another tenant's admin: the receiver is not theirs, the subscription invisible.
    let r = call(
        &c,
        Some(&ann),
        Method::POST,
        path,
        json!({"receiver": "hook", "email": "ann@example.com"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    for (who, token) in [("ann of acme", &ann), ("vic, another viewer", &vic)] {
        for (method, p) in [
            (Method::POST, format!("{path}/{id}/mute")),
            (Method::POST, format!("{path}/{id}/unmute")),
            (Method::DELETE, format!("{path}/{id}")),
        ] {
            let r = call(&c, Some(token), method, &p, Value::Null).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{who} {p}: {}", r.text());
        }
    }
    let r = call(
        &c,
        Some(&ann),
        Method::GET,
        &format!("{path}?all=true"),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["subscriptions"], json!([]), "{}", r.text());
    let r = call(&c, Some(&vic), Method::GET, path, Value::Null).await;
    assert_eq!(r.json()["subscriptions"], json!([]));
    let r = call(
        &c,
        Some(&vic),
        Method::GET,
        &format!("{path}?all=true"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // The tenant's admin key sees and manages every subscription of the tenant.
    let r = call(
        &c,
        None,
        Method::GET,
        &format!("{path}?all=true"),
        Value::Null,
    )
    .await;
    let list = r.json()["subscriptions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["matchers"], json!(["severity=\"page\""]));
    let r = call(
        &c,
        Some(&sam),
        Method::POST,
        &format!("{path}/{id}/mute"),
        json!({"until": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "past: {}", r.text());

    let out = c.cli(&["alerts", "unsubscribe", &id], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = call(&c, Some(&sam), Method::GET, path, Value::Null).await;
    assert_eq!(r.json()["subscriptions"], json!([]));
}
