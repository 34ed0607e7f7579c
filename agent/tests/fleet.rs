//! The fleet end to end: real `vantage-agent` processes managed by the real collector's
//! own OpAMP server (`/v1/opamp` on its API listener, WebSocket and plain HTTP, plain
//! and over TLS). Configuration goes in through the collector's config API and the
//! `vantage` CLI; what the agents do is read back from the collector's log search and
//! its fleet view (`GET /api/v1/agents`), never from inside the agent.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use common::{Agent, Proc, append_lines, collector_bin, free_port};

/// How long a push, an apply and its report, or lines reaching the search may take on
/// a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A running collector and its API, plain or over TLS, called as the admin.
struct Collector {
    proc: Proc,
    grpc: SocketAddr,
    api: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    admin: String,
}

impl Collector {
    /// Starts the collector binary on `data`; with `pki`, every listener serves TLS
    /// with `pki/tls.crt` (signed by `pki/ca.crt`).
    fn start(data: &Path, pki: Option<&Path>) -> Collector {
        let mut c = Command::new(collector_bin());
        c.arg("--data-dir")
            .arg(data)
            .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
            .args(["--api", "127.0.0.1:0", "--log-format", "json"])
            .env("VANTAGE_LOG", "info");
        let tls = pki.map(|dir| {
            // Secrets go only over TLS here, so an agent that gets one proves it.
            c.env("VANTAGE_TLS__CERT_FILE", dir.join("tls.crt"))
                .env("VANTAGE_TLS__KEY_FILE", dir.join("tls.key"))
                .env("VANTAGE_SECRETS__WITHOUT_TLS", "refuse");
            client_tls(&dir.join("ca.crt"))
        });
        let (proc, ready) = Proc::spawn(c);
        let addr = |k: &str| ready[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
        let text = std::fs::read_to_string(data.join("initial-admin.txt")).expect("admin key");
        let admin = text
            .lines()
            .find_map(|l| l.strip_prefix("api_key: "))
            .expect("api_key line")
            .trim()
            .to_string();
        Collector {
            grpc: addr("otlp_grpc"),
            api: addr("api"),
            proc,
            tls,
            admin,
        }
    }

    /// One API request as the admin: status and JSON answer (text when not JSON).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let tcp = tokio::net::TcpStream::connect(self.api).await.unwrap();
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => Box::new(
                TlsConnector::from(config.clone())
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .unwrap(),
            ),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {}", self.admin));
        let bytes = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                serde_json::to_vec(&b).unwrap()
            }
            None => Vec::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, value)
    }

    /// A request that must succeed; its JSON answer.
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// A new API key with only the `ingest` scope: what an agent authenticates with.
    async fn ingest_key(&self) -> String {
        let answer = self
            .ok(
                "POST",
                "/api/v1/keys",
                Some(json!({"name": "fleet agents", "scopes": ["ingest"]})),
            )
            .await;
        answer["key"].as_str().expect("key text").to_string()
    }

    /// Every entry of the fleet view.
    async fn fleet(&self) -> Vec<Value> {
        let answer = self.ok("GET", "/api/v1/agents", None).await;
        answer["agents"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the fleet entry of `uid` satisfies `done`; returns it.
    async fn wait_entry(
        &self,
        uid: &str,
        what: &str,
        agent: Option<&Proc>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let entry = self
                .fleet()
                .await
                .into_iter()
                .find(|a| a["instance_uid"] == uid);
            if let Some(e) = entry.as_ref().filter(|e| done(e)) {
                return e.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent {uid}: not {what}; last entry: {entry:?}\nagent log:\n{}\ncollector log tail:\n{}",
                agent.map(Proc::log).unwrap_or_default(),
                tail(&self.proc.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hits of `word` in the last hour of logs.
    async fn count(&self, word: &str) -> u64 {
        let q = serde_urlencoded::to_string([("query", word), ("limit", "1"), ("start", "now-1h")])
            .unwrap();
        let answer = self
            .ok("GET", &format!("/api/v1/logs/search?{q}"), None)
            .await;
        answer["total"].as_u64().unwrap_or(0)
    }

    /// Waits until `word` has exactly `expected` hits.
    async fn wait_count(&self, word: &str, expected: u64, agent: &Proc) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let n = self.count(word).await;
            if n == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{word}: {n} hits, expected {expected}; agent log:\n{}\ncollector log tail:\n{}",
                agent.log(),
                tail(&self.proc.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A rustls client trusting `ca` only.
fn client_tls(ca: &Path) -> Arc<ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(ca).expect("a PEM CA"))
        .unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A CA, and a server certificate it signed for `localhost` and `127.0.0.1`, written to
/// `dir` as `ca.crt`, `tls.crt`, `tls.key`.
fn write_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fleet test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "collector");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

/// How one agent is set up.
struct AgentSpec<'a> {
    /// `exporter.endpoint`.
    exporter: String,
    /// Extra lines under `exporter:` (indented two spaces), e.g. `tls:`.
    exporter_extra: &'a str,
    /// `control.opamp.endpoint`.
    opamp: String,
    /// Extra lines under `control.opamp:` (indented four spaces).
    opamp_extra: &'a str,
    /// `control.opamp.labels`, as a YAML flow mapping.
    labels: &'a str,
}

/// Writes `<dir>/<name>.yaml` (state in `<dir>/<name>-state`): only the exporter and
/// the control section, host metrics off, 300 ms heartbeats; returns config and state.
fn agent_config(dir: &Path, name: &str, spec: &AgentSpec<'_>) -> (PathBuf, PathBuf) {
    let state = dir.join(format!("{name}-state"));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "state_dir: {state}\nexporter:\n  endpoint: {exporter}\n  retry_initial_backoff: 100ms\n  retry_max_backoff: 1s\n{exporter_extra}host_metrics: {{enabled: false}}\ncontrol:\n  opamp:\n    endpoint: {opamp}\n    heartbeat: 300ms\n    labels: {labels}\n{opamp_extra}",
            state = state.display(),
            exporter = spec.exporter,
            exporter_extra = spec.exporter_extra,
            opamp = spec.opamp,
            opamp_extra = spec.opamp_extra,
            labels = spec.labels,
        ),
    )
    .unwrap();
    (path, state)
}

fn start_agent(config: &Path, token: &str) -> Agent {
    Agent::start(&["--config", config.to_str().unwrap()], token)
}

/// The agent's instance uid as the collector names it (hex of the 16 saved bytes).
fn uid_of(state: &Path) -> String {
    let bytes = std::fs::read(state.join("opamp_instance_uid")).expect("instance uid file");
    assert_eq!(bytes.len(), 16);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config document that tails `glob` from the beginning.
fn files_doc(glob: &str) -> String {
    format!(
        "files:\n  poll_interval: 200ms\n  inputs:\n    - include: [\"{glob}\"]\n      start_at: beginning\n"
    )
}

/// The entry runs its desired configuration, which holds `doc` at `version`.
fn applied(doc: &str, version: u64) -> impl Fn(&Value) -> bool {
    let doc = doc.to_string();
    move |e: &Value| {
        e["config_status"] == "applied"
            && e["desired_config_versions"][&doc] == version
            && e["applied_config_hash"] == e["desired_config_hash"]
    }
}

fn ready_lines(agent: &Agent) -> usize {
    agent.proc.log().matches("\"message\":\"ready\"").count()
}

/// Push (CLI), refuse, roll back — one WebSocket agent, one process throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_agent_follows_a_push_refuses_a_bad_version_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("collector"), None);
    let token = c.ingest_key().await;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (config, state) = agent_config(
        dir.path(),
        "agent",
        &AgentSpec {
            exporter: format!("http://{}", c.grpc),
            exporter_extra: "",
            opamp: format!("ws://{}/v1/opamp", c.api),
            opamp_extra: "",
            labels: "{fleet: ws, role: web}",
        },
    );
    let agent = start_agent(&config, &token);
    let pid = agent.proc.pid();
    let uid = uid_of(&state);
    assert_eq!(agent.ready["file_inputs"], 0);
    // Registered with its labels, no document yet: it runs the (empty) desired config.
    let entry = c
        .wait_entry(&uid, "registered", Some(&agent.proc), |e| {
            e["config_status"] == "applied" && e["connected"] == true
        })
        .await;
    assert_eq!(entry["attributes"]["role"], "web", "{entry}");
    assert_eq!(entry["attributes"]["service.name"], "io.vantage.agent");

    // 1. `vantage config push` adds a tailed file: its lines become searchable, live.
    let file = logs.join("app.log");
    append_lines(&file, (0..20).map(|i| format!("fleetword line {i}")));
    let doc = dir.path().join("files.yaml");
    std::fs::write(&doc, files_doc(&format!("{}/*.log", logs.display()))).unwrap();
    let out = Command::new(agent_bin_sibling("vantage"))
        .args(["--url", &format!("http://{}", c.api), "config", "push"])
        .arg(&doc)
        .args([
            "--name",
            "files",
            "--selector",
            "fleet=ws",
            "-m",
            "tail app",
        ])
        .env("VANTAGE_TOKEN", &c.admin)
        .output()
        .expect("run the vantage CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v1 = c
        .wait_entry(&uid, "on version 1", Some(&agent.proc), applied("files", 1))
        .await;
    c.wait_count("fleetword", 20, &agent.proc).await;

    // 2. An invalid version is refused by the agent, which keeps the old one and says why.
    c.ok(
        "PUT",
        "/api/v1/configs/files",
        Some(json!({
            "body": "files:\n  inputs:\n    - include: [relative/*.log]\n",
            "message": "broken",
        })),
    )
    .await;
    let failed = c
        .wait_entry(&uid, "failed on version 2", Some(&agent.proc), |e| {
            e["config_status"] == "failed" && e["desired_config_versions"]["files"] == 2
        })
        .await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("files.inputs[0].include") && error.contains("must be an absolute path"),
        "{failed}"
    );
    assert_eq!(failed["remote_config_status"], "failed");
    append_lines(&file, (20..40).map(|i| format!("fleetword line {i}")));
    c.wait_count("fleetword", 40, &agent.proc).await;

    // 3. A rollback to version 1 (as version 3) is applied; the hash is version 1's.
    let answer = c
        .ok(
            "POST",
            "/api/v1/configs/files/rollback",
            Some(json!({"version": 1, "message": "back"})),
        )
        .await;
    assert_eq!(answer["version"]["version"], 3, "{answer}");
    let v3 = c
        .wait_entry(&uid, "on version 3", Some(&agent.proc), applied("files", 3))
        .await;
    assert_eq!(v3["applied_config_hash"], v1["applied_config_hash"]);
    assert!(v3["last_error"].is_null(), "{v3}");
    append_lines(&file, (40..60).map(|i| format!("fleetword line {i}")));
    c.wait_count("fleetword", 60, &agent.proc).await;

    // All of it in one process, started once.
    assert_eq!(agent.proc.pid(), pid);
    assert_eq!(ready_lines(&agent), 1, "{}", agent.proc.log());
}

/// The path of another binary of this workspace, beside the agent's.
fn agent_bin_sibling(name: &str) -> PathBuf {
    let path = common::agent_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p vantage-collector`",
        path.display()
    );
    path
}

/// 5. A plain-HTTP agent that is stopped while its document changes runs the new
/// version when it starts again (same instance uid, same fleet entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_agent_stopped_during_a_change_picks_it_up_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("collector"), None);
    let token = c.ingest_key().await;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (config, state) = agent_config(
        dir.path(),
        "agent",
        &AgentSpec {
            exporter: format!("http://{}", c.grpc),
            exporter_extra: "",
            opamp: format!("http://{}/v1/opamp", c.api),
            opamp_extra: "",
            labels: "{fleet: http}",
        },
    );
    c.ok(
        "POST",
        "/api/v1/configs",
        Some(json!({
            "name": "files",
            "selector": "fleet=http",
            "body": files_doc(&format!("{}/*.log", a.display())),
        })),
    )
    .await;
    append_lines(
        &a.join("one.log"),
        (0..10).map(|i| format!("awayword a {i}")),
    );
    append_lines(
        &b.join("two.log"),
        (0..10).map(|i| format!("awayword b {i}")),
    );
    let agent = start_agent(&config, &token);
    let uid = uid_of(&state);
    c.wait_entry(&uid, "on version 1", Some(&agent.proc), applied("files", 1))
        .await;
    c.wait_count("awayword", 10, &agent.proc).await;

    // Stopped: the fleet view says it is gone.
    assert!(agent.proc.terminate(), "clean exit");
    c.wait_entry(&uid, "disconnected", None, |e| e["connected"] == false)
        .await;

    // Version 2 tails the second directory too; nobody is there to take it.
    let both = format!(
        "files:\n  poll_interval: 200ms\n  inputs:\n    - include: [\"{}/*.log\", \"{}/*.log\"]\n      start_at: beginning\n",
        a.display(),
        b.display()
    );
    c.ok(
        "PUT",
        "/api/v1/configs/files",
        Some(json!({"body": both, "message": "both"})),
    )
    .await;
    let entry = c
        .fleet()
        .await
        .into_iter()
        .find(|e| e["instance_uid"] == uid.as_str())
        .unwrap();
    assert_eq!(entry["desired_config_versions"]["files"], 2, "{entry}");
    assert_eq!(entry["config_status"], "applying", "{entry}");

    // Started again: version 2 arrives, the second directory ships, nothing twice.
    let agent = start_agent(&config, &token);
    assert_eq!(uid_of(&state), uid, "same instance uid");
    c.wait_entry(&uid, "on version 2", Some(&agent.proc), applied("files", 2))
        .await;
    c.wait_count("awayword", 20, &agent.proc).await;
    assert_eq!(c.fleet().await.len(), 1, "one agent, one entry");
}

/// Instance uids chosen so that exactly `inside` of them fall inside a `percent`
/// roll-out of `doc` and the rest outside, by the collector's own rule
/// (`vantage_storage::meta::in_rollout`): ten agents with random uids would miss one
/// side entirely once in a few hundred runs.
fn rollout_uids(doc: &str, percent: u8, inside: usize, total: usize) -> Vec<[u8; 16]> {
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for n in 0u32.. {
        let mut uid = [0x5a; 16];
        uid[12..].copy_from_slice(&n.to_be_bytes());
        let hex: String = uid.iter().map(|b| format!("{b:02x}")).collect();
        let side = if vantage_storage::meta::in_rollout(doc, &hex, percent) {
            &mut yes
        } else {
            &mut no
        };
        side.push(uid);
        if yes.len() >= inside && no.len() >= total - inside {
            break;
        }
    }
    yes.truncate(inside);
    no.truncate(total - inside);
    yes.into_iter().chain(no).collect()
}

/// 4. A 50 % roll-out over ten real agents (five on WebSocket, five polling over HTTP)
/// reaches exactly the agents the fleet view names as desired, which are the ones the
/// collector's stable hash picks; 100 % then reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_rollout_over_ten_agents_reaches_the_ones_the_fleet_view_names() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("collector"), None);
    let token = c.ingest_key().await;
    let one = "resource_attributes: {wave: one}\n";
    let two = "resource_attributes: {wave: two}\n";
    c.ok(
        "POST",
        "/api/v1/configs",
        Some(json!({"name": "wave", "selector": "fleet=ten", "body": one})),
    )
    .await;
    c.ok(
        "PUT",
        "/api/v1/configs/wave",
        Some(json!({"body": two, "activate": false, "message": "candidate"})),
    )
    .await;
    let uids = rollout_uids("wave", 50, 5, 10);
    let mut agents = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        // Interleaved so each transport has agents on both sides of the roll-out.
        let scheme = if i % 2 == 0 { "ws" } else { "http" };
        let (config, state) = agent_config(
            dir.path(),
            &format!("agent{i}"),
            &AgentSpec {
                exporter: format!("http://{}", c.grpc),
                exporter_extra: "",
                opamp: format!("{scheme}://{}/v1/opamp", c.api),
                opamp_extra: "",
                labels: "{fleet: ten}",
            },
        );
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("opamp_instance_uid"), uid).unwrap();
        let agent = start_agent(&config, &token);
        assert_eq!(uid_of(&state), hex_of(uid));
        agents.push((hex_of(uid), agent));
    }
    for (uid, agent) in &agents {
        c.wait_entry(uid, "on version 1", Some(&agent.proc), applied("wave", 1))
            .await;
    }

    let answer = c
        .ok(
            "PUT",
            "/api/v1/configs/wave/rollout",
            Some(json!({"version": 2, "percent": 50})),
        )
        .await;
    assert_eq!(answer["rollout"]["percent"], 50, "{answer}");
    // Every agent settles on what the fleet view says it should run.
    for (uid, agent) in &agents {
        let settled = |e: &Value| {
            e["config_status"] == "applied" && e["applied_config_hash"] == e["desired_config_hash"]
        };
        c.wait_entry(uid, "settled", Some(&agent.proc), settled)
            .await;
    }
    // Re-read once all settled: a late push would have changed an early entry.
    let fleet = c.fleet().await;
    let got: BTreeSet<String> = fleet
        .iter()
        .filter(|e| e["desired_config_versions"]["wave"] == 2)
        .map(|e| e["instance_uid"].as_str().unwrap().to_string())
        .collect();
    let applied_two: BTreeSet<String> = fleet
        .iter()
        .filter(|e| {
            e["desired_config_versions"]["wave"] == 2
                && e["config_status"] == "applied"
                && e["applied_config_hash"] == e["desired_config_hash"]
        })
        .map(|e| e["instance_uid"].as_str().unwrap().to_string())
        .collect();
    let by_rule: BTreeSet<String> = agents
        .iter()
        .map(|(uid, _)| uid.clone())
        .filter(|uid| vantage_storage::meta::in_rollout("wave", uid, 50))
        .collect();
    assert!(
        (2..=8).contains(&got.len()),
        "a 50 % roll-out over ten agents gave {} of them version 2",
        got.len()
    );
    assert_eq!(got, by_rule, "the fleet view's desired set is the hash's");
    assert_eq!(applied_two, got, "exactly the desired agents run version 2");
    let hashes: BTreeSet<&str> = fleet
        .iter()
        .map(|e| e["applied_config_hash"].as_str().unwrap())
        .collect();
    assert_eq!(
        hashes.len(),
        2,
        "two configurations in the fleet: {fleet:?}"
    );
    assert_eq!(fleet.len(), 10);

    // 100 %: version 2 becomes current and every agent runs it; no one restarted.
    c.ok(
        "PUT",
        "/api/v1/configs/wave/rollout",
        Some(json!({"version": 2, "percent": 100})),
    )
    .await;
    for (uid, agent) in &agents {
        c.wait_entry(uid, "on version 2", Some(&agent.proc), applied("wave", 2))
            .await;
        assert_eq!(ready_lines(agent), 1, "{}", agent.proc.log());
    }
}

fn hex_of(uid: &[u8]) -> String {
    uid.iter().map(|b| format!("{b:02x}")).collect()
}

/// 6. OpAMP over TLS: one agent on `wss://` trusting the collector through the
/// exporter's CA (the exporter ships over TLS too), one on `https://` with its own
/// `control.opamp.tls.ca_file` while its exporter is plain, and one with neither,
/// which the collector's certificate does not convince.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reach_a_tls_collector_with_the_exporters_ca_or_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    write_pki(&pki);
    let ca = pki.join("ca.crt");
    let c = Collector::start(&dir.path().join("collector"), Some(&pki));
    let token = c.ingest_key().await;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    c.ok(
        "POST",
        "/api/v1/configs",
        Some(json!({
            "name": "files",
            "selector": "via=exporter",
            "body": files_doc(&format!("{}/*.log", logs.display())),
        })),
    )
    .await;
    // This one holds a secret: the collector refuses secrets without TLS, so its
    // being applied shows the value went over TLS.
    c.ok(
        "PUT",
        "/api/v1/secrets/team",
        Some(json!({"value": "payments"})),
    )
    .await;
    c.ok(
        "POST",
        "/api/v1/configs",
        Some(json!({"name": "own", "selector": "via=own", "body": "resource_attributes: {via: own, team: \"${secret:team}\"}\n"})),
    )
    .await;
    append_lines(
        &logs.join("app.log"),
        (0..15).map(|i| format!("tlsword {i}")),
    );

    // The exporter's TLS settings serve the OpAMP connection too.
    let exporter_tls = format!("  tls:\n    ca_file: {}\n", ca.display());
    let (config, state) = agent_config(
        dir.path(),
        "exporter-ca",
        &AgentSpec {
            exporter: format!("https://{}", c.grpc),
            exporter_extra: &exporter_tls,
            opamp: format!("wss://{}/v1/opamp", c.api),
            opamp_extra: "",
            labels: "{via: exporter}",
        },
    );
    let a = start_agent(&config, &token);
    let uid_a = uid_of(&state);

    // Its own CA under control.opamp.tls; the exporter points at a closed plain port.
    let opamp_tls = format!("    tls:\n      ca_file: {}\n", ca.display());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (config, state) = agent_config(
        dir.path(),
        "own-ca",
        &AgentSpec {
            exporter: dead.clone(),
            exporter_extra: "",
            opamp: format!("https://localhost:{}/v1/opamp", c.api.port()),
            opamp_extra: &opamp_tls,
            labels: "{via: own}",
        },
    );
    let b = start_agent(&config, &token);
    let uid_b = uid_of(&state);

    // No CA at all: the system's roots do not know the test CA.
    let (config, state) = agent_config(
        dir.path(),
        "no-ca",
        &AgentSpec {
            exporter: dead,
            exporter_extra: "",
            opamp: format!("wss://{}/v1/opamp", c.api),
            opamp_extra: "",
            labels: "{via: none}",
        },
    );
    let none = start_agent(&config, &token);
    let uid_none = uid_of(&state);

    c.wait_entry(
        &uid_a,
        "on files v1 over wss",
        Some(&a.proc),
        applied("files", 1),
    )
    .await;
    c.wait_count("tlsword", 15, &a.proc).await;
    c.wait_entry(
        &uid_b,
        "on own v1 over https",
        Some(&b.proc),
        applied("own", 1),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(none.proc.log().contains("cannot reach the opamp server")
        && none.proc.log().contains("TLS with"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no TLS failure logged:\n{}",
            none.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.fleet()
            .await
            .iter()
            .all(|e| e["instance_uid"] != uid_none.as_str()),
        "an agent that does not trust the collector never registers"
    );
}
