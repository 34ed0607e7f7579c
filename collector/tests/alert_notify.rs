//! The notifier end to end with real parts: the real collector binary, alerts entered
//! through its Alertmanager API (`POST /api/v2/alerts`), a real HTTP receiver in the
//! test, a real SMTP server (Python `aiosmtpd`), a real Alertmanager
//! (`/usr/bin/prometheus-alertmanager`) and `amtool check-config`.
//!
//! Missing tools fail the test with the command that installs them (`make test-deps`);
//! nothing is skipped.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac as _};
use hyper::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use common::*;

const INSTALL_HINT: &str = "run `make test-deps` (installs Debian's prometheus-alertmanager, \
     which provides prometheus-alertmanager and amtool, and the Python packages of \
     collector/tests/python/requirements.txt, aiosmtpd among them)";
/// How long a notification may take to arrive before a test fails: group_wait is 1 s
/// here; the rest is margin for a loaded 2-core machine.
const ARRIVAL: Duration = Duration::from_secs(60);
const SECRET: &str = "topsecret";

/// One request the test receiver got.
#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// A webhook receiver on 127.0.0.1:0: every POST is recorded, except to `/hang`, which
/// never answers.
async fn receiver() -> (SocketAddr, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(1024);
    let app = Router::new()
        .route(
            "/hang",
            axum::routing::post(|| async {
                std::future::pending::<()>().await;
                StatusCode::OK
            }),
        )
        .fallback(move |req: Request| {
            let tx = tx.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                let _ = tx
                    .send(Received {
                        path: parts.uri.path().to_string(),
                        headers: parts.headers,
                        body,
                    })
                    .await;
                StatusCode::OK
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

async fn next(rx: &mut mpsc::Receiver<Received>, what: &str) -> Received {
    tokio::time::timeout(ARRIVAL, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no notification ({what}) within {ARRIVAL:?}"))
        .expect("receiver running")
}

/// Receives until a notification whose group key contains `key` arrives; returns it
/// and everything received before it.
async fn until_group(rx: &mut mpsc::Receiver<Received>, key: &str) -> (Received, Vec<Received>) {
    let mut before = Vec::new();
    loop {
        let r = next(rx, key).await;
        if r.json()["groupKey"].as_str().unwrap_or("").contains(key) {
            return (r, before);
        }
        before.push(r);
    }
}

fn config(addr: SocketAddr) -> String {
    format!(
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
  - matchers: [test="repeat"]
    receiver: hook
    repeat_interval: 3s
  - matchers: [test="hang"]
    receiver: hang
    continue: true
  - matchers: [test="hang"]
    receiver: hook
receivers:
- name: hook
  webhook_configs:
  - url: http://{addr}/hook
    signing_secret: {SECRET}
    headers:
      X-Team: payments
    http_config:
      authorization:
        credentials: tok
- name: hang
  webhook_configs:
  - url: http://{addr}/hang
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: [alertname]
"#
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_with(dir: &Path, config_file: &Path) -> Collector {
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

fn alert(labels: Value, resolved: bool) -> Value {
    json!({
        "labels": labels,
        "annotations": {"summary": "something <broke> & more"},
        "startsAt": rfc3339(-60),
        "endsAt": if resolved { rfc3339(-1) } else { rfc3339(3600) },
        "generatorURL": "http://prometheus/graph?g0.expr=up",
    })
}

async fn post_alerts(c: &Collector, alerts: Value) {
    let r = c
        .api_request(
            Method::POST,
            "/api/v2/alerts",
            &[("content-type", "application/json")],
            alerts.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

fn verify_signature(r: &Received) {
    let ts = r.headers["x-vantage-timestamp"].to_str().unwrap();
    let sig = r.headers["x-vantage-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, want, "signature over timestamp.body");
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts.parse::<i64>().unwrap();
    assert!((-5..300).contains(&age), "timestamp is current: {age}");
}

fn fixture_keys(name: &str) -> (Vec<String>, Vec<String>) {
    let path = format!(
        "{}/tests/alertmanager/webhook-v4-{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    keys(&v)
}

fn keys(v: &Value) -> (Vec<String>, Vec<String>) {
    let top = v.as_object().unwrap().keys().cloned().collect();
    let alert = v["alerts"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    (top, alert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_a_signed_v4_payload_then_the_resolution() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(addr));
    let c = start_with(&dir.path().join("data"), &cfg);
    let labels =
        json!({"alertname": "HighErrorRate", "service": "checkout", "severity": "critical"});
    post_alerts(&c, json!([alert(labels.clone(), false)])).await;

    let r = next(&mut rx, "firing").await;
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-team"], "payments");
    assert_eq!(r.headers["authorization"], "Bearer tok");
    verify_signature(&r);
    let body = r.json();
    assert_eq!(
        keys(&body),
        fixture_keys("firing"),
        "same fields as Alertmanager's payload"
    );
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["groupKey"], "{}:{alertname=\"HighErrorRate\"}");
    assert_eq!(body["groupLabels"], json!({"alertname": "HighErrorRate"}));
    assert_eq!(body["commonLabels"], labels);
    assert_eq!(body["truncatedAlerts"], 0);
    assert_eq!(body["externalURL"], format!("http://{}", c.addrs.api));
    let a = &body["alerts"][0];
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["status"], "firing");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("\\u003cbroke\\u003e \\u0026"),
        "escaped as Go does: {text}"
    );
    assert!(text.ends_with("}\n"));

    post_alerts(&c, json!([alert(labels.clone(), true)])).await;
    let r = next(&mut rx, "resolved").await;
    verify_signature(&r);
    let body = r.json();
    assert_eq!(keys(&body), fixture_keys("resolved"));
    assert_eq!(body["status"], "resolved");
    assert_ne!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // The delivery log and the self-metrics saw both (the log is updated once the
    // receiver has answered, so wait for it).
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    let rows = loop {
        let log = c
            .api_get("/api/v1/notifications?receiver=hook&status=delivered&limit=10")
            .await;
        assert_eq!(log.status, StatusCode::OK, "{}", log.text());
        let rows = log.json()["data"].as_array().unwrap().clone();
        if rows.len() >= 2 {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows[0]["receiverType"], "webhook");
    assert_eq!(rows[0]["resolved"], 1, "newest first");
    assert!(rows.iter().all(|r| r["attempts"] == 1));
    let metrics = c.metrics_text().await;
    let delivered = metric_value(
        &metrics,
        "vantage_notifications_total",
        &[("receiver_type", "webhook"), ("outcome", "delivered")],
    );
    assert!(delivered.unwrap_or(0.0) >= 2.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_batches_and_repeat_interval_repeats() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(addr));
    let c = start_with(&dir.path().join("data"), &cfg);
    let alerts: Vec<Value> = (1..=3)
        .map(|i| {
            alert(
                json!({"alertname": "Grouped", "test": "repeat", "instance": format!("host-{i}")}),
                false,
            )
        })
        .collect();
    post_alerts(&c, Value::Array(alerts)).await;
    let first = next(&mut rx, "group").await.json();
    assert_eq!(
        first["alerts"].as_array().unwrap().len(),
        3,
        "one notification for the group"
    );
    let fps = |v: &Value| -> Vec<String> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["fingerprint"].as_str().unwrap().to_string())
            .collect()
    };
    // Nothing changed: the next one is the repeat (repeat_interval 3s), same alerts.
    let again = next(&mut rx, "repeat").await.json();
    assert_eq!(fps(&again), fps(&first));
    assert_eq!(again["groupKey"], first["groupKey"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_suppress_inhibition_holds_back_and_the_cli_manages_silences() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(addr));
    let c = start_with(&dir.path().join("data"), &cfg);
    let token = c.token().to_string();
    let env = [("VANTAGE_TOKEN", token.as_str())];

    let out = c
        .cli(
            &[
                "silences",
                "create",
                "--matcher",
                "alertname=\"Muted\"",
                "--duration",
                "2h",
                "--comment",
                "maintenance",
            ],
            &env,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id:?}");
    let out = c.cli(&["silences", "list"], &env).await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains(&id)
            && listing.contains("active")
            && listing.contains("alertname=\"Muted\""),
        "{listing}"
    );

    post_alerts(
        &c,
        json!([
            alert(json!({"alertname": "Muted", "instance": "a"}), false),
            alert(
                json!({"alertname": "Disk", "severity": "critical", "instance": "a"}),
                false
            ),
            alert(
                json!({"alertname": "Disk", "severity": "warning", "instance": "b"}),
                false
            ),
            alert(json!({"alertname": "Control"}), false),
        ]),
    )
    .await;
    let (disk, mut seen) = until_group(&mut rx, "Disk").await;
    let severities: Vec<String> = disk.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["severity"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        severities,
        vec!["critical".to_string()],
        "the warning is inhibited"
    );
    // A later marker proves the silenced group's flush (due with the others) is done.
    post_alerts(&c, json!([alert(json!({"alertname": "Marker"}), false)])).await;
    let (_, more) = until_group(&mut rx, "Marker").await;
    seen.extend(more);
    assert!(
        seen.iter()
            .all(|r| !r.json()["groupKey"].as_str().unwrap().contains("Muted")),
        "the silenced alert was not notified"
    );

    let muted = c
        .api_get("/api/v2/alerts?filter=alertname%3D%22Muted%22")
        .await
        .json();
    assert_eq!(muted[0]["status"]["state"], "suppressed");
    assert_eq!(muted[0]["status"]["silencedBy"], json!([id]));
    let warning = c
        .api_get("/api/v2/alerts?filter=severity%3D%22warning%22")
        .await
        .json();
    assert_eq!(
        warning[0]["status"]["inhibitedBy"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let active_only = c
        .api_get("/api/v2/alerts?silenced=false&inhibited=false")
        .await
        .json();
    let names: Vec<&str> = active_only
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"Muted") && names.contains(&"Control"),
        "{names:?}"
    );

    let out = c.cli(&["silences", "expire", &id], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (muted, _) = until_group(&mut rx, "Muted").await;
    assert_eq!(
        muted.json()["alerts"][0]["labels"]["alertname"],
        "Muted",
        "notified once the silence expired"
    );
    let silence = c.api_get(&format!("/api/v2/silence/{id}")).await.json();
    assert_eq!(silence["status"]["state"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_another() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(addr));
    let c = start_with(&dir.path().join("data"), &cfg);
    post_alerts(
        &c,
        json!([alert(json!({"alertname": "Slow", "test": "hang"}), false)]),
    )
    .await;
    let r = next(&mut rx, "hook while hang hangs").await;
    assert_eq!(r.path, "/hook");
    // The hanging delivery is still pending in the delivery log (its attempt has a
    // 15 s timeout, then retries).
    let log = c
        .api_get("/api/v1/notifications?receiver=hang")
        .await
        .json();
    assert_eq!(log["data"][0]["status"], "pending", "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_send_again() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &config(addr));
    let data = dir.path().join("data");
    let c = start_with(&data, &cfg);
    let a = alert(json!({"alertname": "Persistent"}), false);
    post_alerts(&c, json!([a.clone()])).await;
    let (first, _) = until_group(&mut rx, "Persistent").await;
    assert_eq!(first.json()["status"], "firing");
    let (status, log) = c.terminate().await;
    assert!(status.success(), "{log}");

    let c = start_with(&data, &cfg);
    // The evaluator (or Prometheus) resends the same firing alert after the restart.
    post_alerts(
        &c,
        json!([a, alert(json!({"alertname": "AfterRestart"}), false)]),
    )
    .await;
    let (_, before) = until_group(&mut rx, "AfterRestart").await;
    post_alerts(&c, json!([alert(json!({"alertname": "Marker"}), false)])).await;
    let (_, more) = until_group(&mut rx, "Marker").await;
    let all: Vec<String> = before
        .iter()
        .chain(more.iter())
        .map(|r| r.json()["groupKey"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !all.iter().any(|k| k.contains("Persistent")),
        "re-sent after restart: {all:?}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_arrives_at_a_real_smtp_server() {
    let script = format!("{}/tests/python/smtp_sink.py", env!("CARGO_MANIFEST_DIR"));
    let port = free_port();
    let mut sink = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}; {INSTALL_HINT}"));
    let mut lines = tokio::io::BufReader::new(sink.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(ARRIVAL, lines.next_line()).await;
    match ready {
        Ok(Ok(Some(l))) if l.starts_with("ready") => {}
        other => {
            let mut err = String::new();
            if let Some(mut e) = sink.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err)).await;
            }
            panic!("the SMTP sink did not start ({other:?}): {err}\n{INSTALL_HINT}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
global:
  smtp_from: vantage@example.com
  smtp_smarthost: 127.0.0.1:{port}
  smtp_require_tls: false
route:
  receiver: mail
  group_wait: 1s
  group_interval: 1s
receivers:
- name: mail
  email_configs:
  - to: oncall@example.com
    headers:
      Subject: 'Vantage [{{{{ .Status }}}}] {{{{ .CommonLabels.alertname }}}}'
"#
        ),
    );
    let c = start_with(&dir.path().join("data"), &cfg);
    post_alerts(&c, json!([alert(json!({"alertname": "MailMe"}), false)])).await;
    let line = tokio::time::timeout(ARRIVAL, lines.next_line())
        .await
        .expect("an e-mail within the deadline")
        .unwrap()
        .unwrap();
    let mail: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(mail["mail_from"], "vantage@example.com");
    assert_eq!(mail["rcpt_tos"], json!(["oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: Vantage [firing] MailMe"), "{data}");
    assert!(data.contains("something <broke> & more"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_forwarded_to_a_real_alertmanager_appear_there() {
    let bin = "/usr/bin/prometheus-alertmanager";
    assert!(Path::new(bin).exists(), "{bin} is missing; {INSTALL_HINT}");
    let dir = tempfile::tempdir().unwrap();
    let am_cfg = dir.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        "route:\n  receiver: blackhole\nreceivers:\n- name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let cluster = free_port();
    let mut am = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", am_cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; {INSTALL_HINT}"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cfg = write_config(
        dir.path(),
        &format!(
            "route:\n  receiver: am\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n- name: am\n  alertmanager_configs:\n  - url: {base}\n"
        ),
    );
    let c = start_with(&dir.path().join("data"), &cfg);
    post_alerts(
        &c,
        json!([alert(json!({"alertname": "Forwarded", "job": "x"}), false)]),
    )
    .await;
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let text = http
            .get(format!("{base}/api/v2/alerts"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let alerts: Value = serde_json::from_str(&text).unwrap();
        if let Some(a) = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "Forwarded")
        {
            assert_eq!(a["annotations"]["summary"], "something <broke> & more");
            assert_eq!(a["labels"]["job"], "x");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the alert never reached alertmanager: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = am.kill().await;
}

/// Removes the keys only Vantage reads, so amtool judges the rest.
fn strip_vantage_keys(text: &str) -> String {
    let mut v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).unwrap_or(serde_yaml_ng::Value::Null);
    if let Some(receivers) = v.get_mut("receivers").and_then(|r| r.as_sequence_mut()) {
        for r in receivers {
            if let Some(m) = r.as_mapping_mut() {
                for k in ["sms_configs", "alertmanager_configs", "msteams_configs"] {
                    m.remove(k);
                }
                if let Some(hooks) = m
                    .get_mut("webhook_configs")
                    .and_then(|w| w.as_sequence_mut())
                {
                    for h in hooks {
                        if let Some(h) = h.as_mapping_mut() {
                            for k in ["signing_secret", "signing_secret_file", "headers"] {
                                h.remove(k);
                            }
                        }
                    }
                }
            }
        }
    }
    serde_yaml_ng::to_string(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_and_vantage_agree_on_the_example_configs() {
    let amtool = "/usr/bin/amtool";
    assert!(
        Path::new(amtool).exists(),
        "{amtool} is missing; {INSTALL_HINT}"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/alertmanager");
    let mut checked = 0;
    for (sub, want_ok) in [("good", true), ("bad", false)] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let stripped = dir.path().join("stripped.yml");
            std::fs::write(&stripped, strip_vantage_keys(&text)).unwrap();
            let out = std::process::Command::new(amtool)
                .arg("check-config")
                .arg(&stripped)
                .output()
                .unwrap();
            let amtool_ok = out.status.success();
            let r = c
                .api_request(
                    Method::PUT,
                    "/api/v1/alertmanager/config",
                    &[("content-type", "application/yaml")],
                    text.clone(),
                )
                .await;
            let vantage_ok = r.status == StatusCode::OK;
            assert_eq!(
                amtool_ok,
                want_ok,
                "amtool on {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(
                vantage_ok,
                want_ok,
                "vantage on {}: {} {}",
                file.display(),
                r.status,
                r.text()
            );
            if !want_ok {
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10);
    // The last good config applied is served back, and amtool can read the status.
    let good = std::fs::read_to_string(root.join("good/minimal.yml")).unwrap();
    let r = c
        .api_request(
            Method::PUT,
            "/api/v1/alertmanager/config",
            &[],
            good.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.api_get("/api/v1/alertmanager/config").await.text(), good);
    let status = c.api_get("/api/v2/status").await.json();
    assert_eq!(status["config"]["original"], good);
    assert_eq!(status["cluster"]["status"], "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_alerts_and_other_tenants_silences() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"));
    for bad in [
        json!([{"labels": {}}]),
        json!([{"labels": {"1bad": "x"}}]),
        json!([{"labels": {"a": "b"}, "startsAt": "yesterday"}]),
        json!([{"labels": {"a": "b"}, "startsAt": rfc3339(0), "endsAt": rfc3339(-100)}]),
        json!({"labels": {"a": "b"}}),
    ] {
        let r = c
            .api_request(Method::POST, "/api/v2/alerts", &[], bad.to_string())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
    }
    let r = c
        .request_anonymous(
            Method::POST,
            &format!("http://{}/api/v2/alerts", c.addrs.api),
            &[],
            "[]",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let silence = json!({
        "matchers": [{"name": "alertname", "value": "X", "isRegex": false, "isEqual": true}],
        "startsAt": rfc3339(0), "endsAt": rfc3339(3600), "createdBy": "t", "comment": "c",
    });
    let r = c
        .api_request(Method::POST, "/api/v2/silences", &[], silence.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()["silenceID"].as_str().unwrap().to_string();
    // Another tenant's admin cannot see or expire it.
    let created = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &[],
            json!({"name": "other"}).to_string(),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text());
    let key = c
        .api_request(
            Method::POST,
            "/api/v1/keys",
            &[],
            json!({"name": "o", "scopes": ["admin"], "tenant": "other"}).to_string(),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = bearer(&key);
    let r = c
        .api_request(
            Method::GET,
            &format!("/api/v2/silence/{id}"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c
        .api_request(
            Method::DELETE,
            &format!("/api/v2/silence/{id}"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let list = c
        .api_request(
            Method::GET,
            "/api/v2/silences",
            &[("authorization", &auth)],
            "",
        )
        .await
        .json();
    assert_eq!(list, json!([]));
    // A silence matching everything is refused, as Alertmanager refuses it.
    let all = json!({
        "matchers": [{"name": "a", "value": ".*", "isRegex": true, "isEqual": true}],
        "startsAt": rfc3339(0), "endsAt": rfc3339(3600), "createdBy": "t", "comment": "c",
    });
    let r = c
        .api_request(Method::POST, "/api/v2/silences", &[], all.to_string())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = c
        .api_request(Method::PUT, "/api/v1/alertmanager/config", &[], "route: [")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_teams_and_sms_receive_what_their_webhooks_accept() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
receivers:
- name: chat
  slack_configs:
  - api_url: http://{addr}/slack
    channel: '#ops'
    title: '{{{{ template "slack.default.title" . }}}}'
    text: 'Summary: {{{{ .CommonAnnotations.summary }}}}'
  msteams_configs:
  - webhook_url: http://{addr}/teams
  sms_configs:
  - url: http://{addr}/sms
    http_config:
      basic_auth: {{username: AC1, password: token}}
    form:
      To: "+15550100"
      Body: '[{{{{ .Status }}}}] {{{{ .GroupLabels.alertname }}}}: {{{{ len .Alerts.Firing }}}} firing'
"#
        ),
    );
    let c = start_with(&dir.path().join("data"), &cfg);
    post_alerts(
        &c,
        json!([alert(
            json!({"alertname": "Chatty", "instance": "a"}),
            false
        )]),
    )
    .await;
    let mut by_path = std::collections::BTreeMap::new();
    while by_path.len() < 3 {
        let r = next(&mut rx, "slack, teams and sms").await;
        by_path.insert(r.path.clone(), r);
    }
    let slack = by_path["/slack"].json();
    assert_eq!(slack["channel"], "#ops");
    assert_eq!(slack["attachments"][0]["title"], "[FIRING:1] Chatty");
    assert_eq!(
        slack["attachments"][0]["text"],
        "Summary: something <broke> & more"
    );
    assert_eq!(slack["attachments"][0]["color"], "danger");
    let teams = by_path["/teams"].json();
    assert_eq!(teams["@type"], "MessageCard");
    assert_eq!(teams["title"], "[FIRING:1] Chatty");
    assert!(
        teams["text"]
            .as_str()
            .unwrap()
            .contains("something <broke> & more")
    );
    let sms = &by_path["/sms"];
    assert_eq!(
        sms.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(sms.headers["authorization"], "Basic QUMxOnRva2Vu");
    let form: std::collections::BTreeMap<String, String> =
        serde_urlencoded::from_bytes(&sms.body).unwrap();
    assert_eq!(form["To"], "+15550100");
    assert_eq!(form["Body"], "[firing] Chatty: 1 firing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_alertmanager_file_stops_the_start_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "route:\n  receiver: nobody\n  group_interval: 0s\nreceivers:\n- name: hook\n",
    );
    let result = Collector::builder()
        .env(
            "VANTAGE_ALERTING__ALERTMANAGER_CONFIG",
            cfg.to_str().unwrap(),
        )
        .try_start(&dir.path().join("data"));
    let Err(message) = result else {
        panic!("the collector started with an invalid alertmanager.yml");
    };
    assert!(message.contains("undefined receiver"), "{message}");
    assert!(
        message.contains("group_interval cannot be zero"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_uses_vantage_as_its_alertmanager() {
    let amtool = "/usr/bin/amtool";
    assert!(
        Path::new(amtool).exists(),
        "{amtool} is missing; {INSTALL_HINT}"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"));
    let http_config = dir.path().join("http.yml");
    std::fs::write(
        &http_config,
        format!("authorization:\n  credentials: {}\n", c.token()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(amtool)
            .arg(format!("--alertmanager.url=http://{}", c.addrs.api))
            .arg(format!("--http.config.file={}", http_config.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "amtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let id = run(&[
        "silence",
        "add",
        "alertname=Foo",
        "--comment=maintenance",
        "--duration=1h",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    assert!(run(&["silence", "query"]).contains(id));
    run(&["alert", "add", "alertname=Bar", "severity=page"]);
    assert!(run(&["alert", "query"]).contains("Bar"));
    run(&["silence", "expire", id]);
    assert!(
        !run(&["silence", "query"]).contains(id),
        "expired silences are not listed by default"
    );
    assert!(run(&["config", "show"]).contains("receiver: default"));
}
