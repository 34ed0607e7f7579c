//! Remote configuration end to end: the real agent binary and a real collector, driven
//! by a minimal OpAMP server written here (axum + `vantage_proto::opamp`, both
//! transports), until the collector's own OpAMP server is wired in.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{Collector, Proc, append_lines};
use prost::Message as _;
use vantage_proto::opamp::{
    AgentConfigFile, AgentConfigMap, AgentRemoteConfig, AgentToServer, RemoteConfigStatuses,
    ServerToAgent,
};

/// How long an offer may take to be applied and reported.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct PeerState {
    offer: Option<AgentRemoteConfig>,
    received: Vec<AgentToServer>,
    /// Authorization headers seen, to check the agent authenticates.
    auth: Vec<String>,
}

/// A minimal OpAMP server: records every message, answers each with the current offer
/// while the agent has not reported its hash.
#[derive(Clone, Default)]
struct Peer(Arc<Mutex<PeerState>>);

impl Peer {
    fn answer(&self, msg: AgentToServer) -> ServerToAgent {
        let mut s = self.0.lock().unwrap();
        let reported = s
            .received
            .iter()
            .rev()
            .find_map(|m| m.remote_config_status.as_ref())
            .map(|st| st.last_remote_config_hash.clone());
        let uid = msg.instance_uid.clone();
        s.received.push(msg);
        let remote_config = s
            .offer
            .clone()
            .filter(|o| reported.as_ref() != Some(&o.config_hash));
        ServerToAgent {
            instance_uid: uid,
            remote_config,
            capabilities: 3,
            ..Default::default()
        }
    }

    fn offer(&self, hash: &str, docs: &[(&str, &str)]) -> Vec<u8> {
        let config_hash = hash.as_bytes().to_vec();
        self.0.lock().unwrap().offer = Some(AgentRemoteConfig {
            config: Some(AgentConfigMap {
                config_map: docs
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            AgentConfigFile {
                                body: v.as_bytes().to_vec(),
                                content_type: "text/yaml".into(),
                            },
                        )
                    })
                    .collect(),
            }),
            config_hash: config_hash.clone(),
        });
        config_hash
    }

    fn messages(&self) -> Vec<AgentToServer> {
        self.0.lock().unwrap().received.clone()
    }

    /// Waits for a status report of `hash` with `status`; returns the message.
    async fn wait_status(
        &self,
        hash: &[u8],
        status: RemoteConfigStatuses,
        agent: &Proc,
    ) -> AgentToServer {
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        loop {
            if let Some(m) = self.messages().into_iter().rev().find(|m| {
                m.remote_config_status
                    .as_ref()
                    .is_some_and(|s| s.last_remote_config_hash == hash && s.status == status as i32)
            }) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {status:?} status for {}; agent log:\n{}",
                String::from_utf8_lossy(hash),
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last effective configuration the agent reported.
    fn effective(&self) -> String {
        self.messages()
            .iter()
            .rev()
            .find_map(|m| m.effective_config.as_ref())
            .and_then(|e| e.config_map.as_ref())
            .map(|m| String::from_utf8_lossy(&m.config_map[""].body).into_owned())
            .unwrap_or_default()
    }

    async fn serve(self) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let app = Router::new()
            .route("/v1/opamp", get(upgrade).post(opamp))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, task)
    }
}

fn record_auth(peer: &Peer, headers: &HeaderMap) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    peer.0.lock().unwrap().auth.push(auth);
}

async fn upgrade(
    State(peer): State<Peer>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    record_auth(&peer, &headers);
    ws.on_upgrade(move |socket| session(peer, socket))
}

async fn opamp(
    State(peer): State<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    record_auth(&peer, &headers);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let Ok(msg) = AgentToServer::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    (
        [("content-type", "application/x-protobuf")],
        peer.answer(msg).encode_to_vec(),
    )
        .into_response()
}

async fn session(peer: Peer, mut socket: WebSocket) {
    while let Some(Ok(frame)) = socket.recv().await {
        let Message::Binary(b) = frame else { continue };
        assert_eq!(b[0], 0, "varint header 0");
        let msg = AgentToServer::decode(&b[1..]).expect("AgentToServer");
        let disconnect = msg.agent_disconnect.is_some();
        let mut out = vec![0u8];
        out.extend(peer.answer(msg).encode_to_vec());
        if disconnect || socket.send(Message::Binary(out.into())).await.is_err() {
            return;
        }
    }
}

/// Starts the agent with `config`, extra environment, JSON logs, the collector token.
fn start_agent(config: &Path, token: &str, env: &[(&str, &str)]) -> (Proc, serde_json::Value) {
    let mut c = Command::new(common::agent_bin());
    c.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--log-format",
        "json",
    ])
    .env("VANTAGE_AGENT_TOKEN", token)
    .env("VANTAGE_AGENT_LOG", "info");
    for (k, v) in env {
        c.env(k, v);
    }
    Proc::spawn(c)
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A config with only the exporter and the control section, every local listener off.
fn base_config(state: &Path, exporter: &str, opamp: &str, extra: &str) -> String {
    format!(
        "state_dir: {}\nhealth_listen: 'off'\nreceivers: {{otlp: {{grpc: 'off', http: 'off'}}}}\nexporter:\n  endpoint: {exporter}\n  retry_initial_backoff: 100ms\n  retry_max_backoff: 1s\nhost_metrics: {{enabled: false}}\ncontrol:\n  opamp:\n    endpoint: {opamp}\n    heartbeat: 300ms\n    labels: {{env: test, role: web}}\n  pinned: [exporter.endpoint]\n{extra}",
        state.display()
    )
}

fn files_doc(glob: &str) -> String {
    format!(
        "files:\n  poll_interval: 200ms\n  inputs:\n    - include: [\"{glob}\"]\n      start_at: beginning\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_offers_add_a_file_live_refuse_bad_configs_and_keep_pins() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let peer = Peer::default();
    let (addr, _server) = peer.clone().serve().await;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = write(
        dir.path(),
        &base_config(
            &dir.path().join("state"),
            &format!("http://{}", collector.grpc),
            &format!("ws://{addr}/v1/opamp"),
            "",
        ),
    );
    let (agent, ready) = start_agent(
        &config,
        &collector.token,
        &[("CTL_LOGS", logs.to_str().unwrap())],
    );
    let pid = agent.pid();
    assert_eq!(ready["file_inputs"], 0);

    // The first message describes the agent.
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    while peer.messages().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &peer.messages()[0];
    assert_eq!(first.instance_uid.len(), 16);
    assert_eq!(first.capabilities, 0x1 | 0x2 | 0x4 | 0x800 | 0x1000);
    let d = first
        .agent_description
        .as_ref()
        .expect("description in the first message");
    let attr = |kvs: &[vantage_proto::opamp::KeyValue], k: &str| {
        kvs.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
            .map(|v| match v {
                vantage_proto::opamp::any_value::Value::StringValue(s) => s,
                other => format!("{other:?}"),
            })
    };
    assert_eq!(
        attr(&d.identifying_attributes, "service.name").as_deref(),
        Some("io.vantage.agent")
    );
    assert_eq!(
        attr(&d.non_identifying_attributes, "role").as_deref(),
        Some("web")
    );
    assert!(attr(&d.non_identifying_attributes, "host.name").is_some());
    assert_eq!(
        peer.0.lock().unwrap().auth[0],
        format!("Bearer {}", collector.token)
    );

    // An offer that adds a tailed file (path from the agent's environment) applies live.
    let file = logs.join("app.log");
    append_lines(&file, (0..20).map(|i| format!("ctlword first {i}")));
    let hash = peer.offer("v1", &[("10-files", &files_doc("${env:CTL_LOGS}/*.log"))]);
    let applied = peer
        .wait_status(&hash, RemoteConfigStatuses::Applied, &agent)
        .await;
    collector.wait_count("ctlword", 20, None).await;
    let effective = peer.effective();
    assert!(
        effective.contains(&format!("{}/*.log", logs.display())),
        "{effective}"
    );
    assert!(
        !effective.contains(&collector.token),
        "token masked: {effective}"
    );
    assert!(applied.health.is_some() || peer.messages().iter().any(|m| m.health.is_some()));
    let health = peer
        .messages()
        .iter()
        .rev()
        .find_map(|m| m.health.clone())
        .unwrap();
    assert!(
        health
            .component_health_map
            .get("files")
            .is_some_and(|h| h.healthy),
        "{health:?}"
    );

    // An invalid offer is refused with the exact error; the file keeps shipping.
    let bad = peer.offer(
        "v2",
        &[(
            "10-files",
            "files:\n  inputs:\n    - include: [relative/*.log]\n",
        )],
    );
    let failed = peer
        .wait_status(&bad, RemoteConfigStatuses::Failed, &agent)
        .await;
    let error = &failed.remote_config_status.unwrap().error_message;
    assert!(
        error.contains("files.inputs[0].include") && error.contains("must be an absolute path"),
        "{error}"
    );
    let missing = peer.offer(
        "v3",
        &[("a", "resource_attributes: {team: '${env:CTL_NOT_SET}'}\n")],
    );
    let failed = peer
        .wait_status(&missing, RemoteConfigStatuses::Failed, &agent)
        .await;
    assert!(
        failed
            .remote_config_status
            .unwrap()
            .error_message
            .contains("CTL_NOT_SET")
    );
    let forbidden = peer.offer("v4", &[("a", "state_dir: /tmp/elsewhere\n")]);
    let failed = peer
        .wait_status(&forbidden, RemoteConfigStatuses::Failed, &agent)
        .await;
    assert!(
        failed
            .remote_config_status
            .unwrap()
            .error_message
            .contains("state_dir may not be set remotely")
    );
    append_lines(&file, (20..40).map(|i| format!("ctlword first {i}")));
    collector.wait_count("ctlword", 40, None).await;

    // A pinned key is not overridden: the exporter stays on the collector.
    let doc = format!(
        "{}exporter:\n  endpoint: http://127.0.0.1:9\n",
        files_doc("${env:CTL_LOGS}/*.log")
    );
    let pinned = peer.offer("v5", &[("10-files", &doc)]);
    peer.wait_status(&pinned, RemoteConfigStatuses::Applied, &agent)
        .await;
    assert!(
        peer.effective()
            .contains(&format!("http://{}", collector.grpc)),
        "{}",
        peer.effective()
    );
    append_lines(&file, (40..60).map(|i| format!("ctlword first {i}")));
    collector.wait_count("ctlword", 60, None).await;

    // All of it without a restart: one process, one start-up.
    assert_eq!(agent.pid(), pid);
    assert_eq!(
        agent.log().matches("\"message\":\"ready\"").count(),
        1,
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains(&collector.token),
        "the token is never logged"
    );
    assert!(agent.terminate(), "clean exit");
    assert!(
        peer.messages().iter().any(|m| m.agent_disconnect.is_some()),
        "agent_disconnect on shutdown"
    );
    // Sequence numbers increase by one.
    let seqs: Vec<u64> = peer.messages().iter().map(|m| m.sequence_num).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporter_change_keeps_the_queue_and_a_restart_runs_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let peer = Peer::default();
    let (addr, server) = peer.clone().serve().await;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    let state = dir.path().join("state");
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    // No pin on the exporter here; the file is local, the exporter points nowhere.
    let text = base_config(
        &state,
        &dead,
        &format!("http://{addr}/v1/opamp"),
        &files_doc(&format!("{}/*.log", logs.display())),
    )
    .replace("  pinned: [exporter.endpoint]\n", "")
    .replace("health_listen: 'off'", "health_listen: 127.0.0.1:0");
    let config = write(dir.path(), &text);
    let (agent, ready) = start_agent(&config, &collector.token, &[]);
    let pid = agent.pid();
    append_lines(&file, (0..30).map(|i| format!("queueword {i}")));
    // The lines wait in the disk queue while the exporter cannot reach anything.
    let healthz = format!("http://{}/healthz", ready["health"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&common::http_get(&healthz, None).await).unwrap();
        if v["stats"]["lines_read"].as_u64() == Some(30)
            && v["stats"]["queue_batches"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lines not queued: {v}; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(collector.count("queueword").await, 0);

    let doc = format!("exporter:\n  endpoint: http://{}\n", collector.grpc);
    let hash = peer.offer("exp-1", &[("exporter", &doc)]);
    peer.wait_status(&hash, RemoteConfigStatuses::Applied, &agent)
        .await;
    collector.wait_count("queueword", 30, None).await;
    append_lines(&file, (30..40).map(|i| format!("queueword {i}")));
    collector.wait_count("queueword", 40, None).await;
    assert_eq!(agent.pid(), pid);
    let uid = peer.messages()[0].instance_uid.clone();
    assert!(agent.terminate(), "clean exit");
    assert!(peer.messages().last().unwrap().agent_disconnect.is_some());

    // The server is gone; the restarted agent runs the last good remote config (the
    // exporter towards the collector), and keeps its instance uid.
    server.abort();
    let _ = server.await;
    let (agent, _) = start_agent(&config, &collector.token, &[]);
    append_lines(&file, (40..50).map(|i| format!("queueword {i}")));
    collector.wait_count("queueword", 50, None).await;
    assert_eq!(
        std::fs::read(state.join("opamp_instance_uid")).unwrap(),
        uid
    );
    assert!(agent.terminate());
}
