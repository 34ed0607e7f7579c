//! OpAMP test clients written here from the specification (plain HTTP and WebSocket),
//! and helpers for config documents, shared by the opamp and config tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use hyper::{Method, StatusCode};
use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use vantage_proto::opamp::{
    AgentCapabilities, AgentDescription, AgentToServer, AnyValue, KeyValue, RemoteConfigStatus,
    RemoteConfigStatuses, ServerToAgent, any_value,
};

use crate::common::{Collector, Reply, bearer};

/// How long a test waits for an OpAMP answer or push.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The capabilities of the test agents: status, remote config, its status, effective
/// config, health.
pub(crate) const CAPS: u64 = AgentCapabilities::ReportsStatus as u64
    | AgentCapabilities::AcceptsRemoteConfig as u64
    | AgentCapabilities::ReportsRemoteConfig as u64
    | AgentCapabilities::ReportsEffectiveConfig as u64
    | AgentCapabilities::ReportsHealth as u64;

/// The config hash as the server defines it: SHA-256 over (name, body) pairs in name
/// order, each length-prefixed with 8 big-endian bytes. Written again here, so a change
/// of the server's definition fails the tests.
pub(crate) fn expected_hash(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for (name, body) in sorted {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((body.len() as u64).to_be_bytes());
        h.update(body.as_bytes());
    }
    h.finalize().to_vec()
}

/// A description with `labels` as non-identifying attributes and a service name.
pub(crate) fn description(labels: &[(&str, &str)]) -> AgentDescription {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
    };
    AgentDescription {
        identifying_attributes: vec![kv("service.name", "test-agent")],
        non_identifying_attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
    }
}

/// One simulated agent's identity and sequence counter.
pub(crate) struct SimAgent {
    pub(crate) uid: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) labels: Vec<(String, String)>,
}

impl SimAgent {
    /// Agent number `n`: its uid is the first 16 bytes of SHA-256(`agent-<n>`), as
    /// scattered as real random uids but the same on every run.
    pub(crate) fn new(n: u8, labels: &[(&str, &str)]) -> SimAgent {
        let uid = Sha256::digest(format!("agent-{n}").as_bytes())[..16].to_vec();
        SimAgent {
            uid,
            seq: 0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub(crate) fn uid_hex(&self) -> String {
        hex::encode(&self.uid)
    }

    fn next(&mut self) -> AgentToServer {
        self.seq += 1;
        AgentToServer {
            instance_uid: self.uid.clone(),
            sequence_num: self.seq,
            capabilities: CAPS,
            ..Default::default()
        }
    }

    /// The first message: everything.
    pub(crate) fn full_state(&mut self, last_hash: Option<&[u8]>) -> AgentToServer {
        let desc = {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            description(&labels)
        };
        let mut msg = self.next();
        msg.agent_description = Some(desc);
        msg.health = Some(vantage_proto::opamp::ComponentHealth {
            healthy: true,
            status: "running".into(),
            ..Default::default()
        });
        if let Some(hash) = last_hash {
            msg.remote_config_status = Some(RemoteConfigStatus {
                last_remote_config_hash: hash.to_vec(),
                status: RemoteConfigStatuses::Applied as i32,
                error_message: String::new(),
            });
        }
        msg
    }

    /// A heartbeat: identity and capabilities only.
    pub(crate) fn heartbeat(&mut self) -> AgentToServer {
        self.next()
    }

    /// A remote-config status report.
    pub(crate) fn status(
        &mut self,
        hash: &[u8],
        status: RemoteConfigStatuses,
        error: &str,
    ) -> AgentToServer {
        let mut msg = self.next();
        msg.remote_config_status = Some(RemoteConfigStatus {
            last_remote_config_hash: hash.to_vec(),
            status: status as i32,
            error_message: error.to_string(),
        });
        msg
    }

    /// The last message before going away.
    pub(crate) fn disconnect(&mut self) -> AgentToServer {
        let mut msg = self.next();
        msg.agent_disconnect = Some(Default::default());
        msg
    }
}

/// The bodies of a remote config, by document name.
pub(crate) fn bodies(reply: &ServerToAgent) -> Option<BTreeMap<String, String>> {
    let rc = reply.remote_config.as_ref()?;
    Some(
        rc.config
            .as_ref()
            .map(|m| {
                m.config_map
                    .iter()
                    .map(|(k, v)| {
                        assert_eq!(v.content_type, "text/yaml", "content type of {k}");
                        (k.clone(), String::from_utf8_lossy(&v.body).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// `POST /v1/opamp` with `msg`; returns the status and the decoded answer.
pub(crate) async fn http_send(
    c: &Collector,
    token: &str,
    msg: &AgentToServer,
) -> (StatusCode, ServerToAgent) {
    let reply = http_raw(c, token, &[], msg.encode_to_vec()).await;
    decode_reply(reply)
}

/// `POST /v1/opamp` with a raw body and extra headers.
pub(crate) async fn http_raw(
    c: &Collector,
    token: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let auth = bearer(token);
    let mut all = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/x-protobuf"),
    ];
    all.extend_from_slice(headers);
    c.api_request(Method::POST, "/v1/opamp", &all, Bytes::from(body))
        .await
}

/// The status and decoded `ServerToAgent` of an answer (panics if it is not one).
pub(crate) fn decode_reply(reply: Reply) -> (StatusCode, ServerToAgent) {
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/x-protobuf"),
        "opamp answer ({}): {}",
        reply.status,
        reply.text()
    );
    let msg = ServerToAgent::decode(reply.body.as_ref()).expect("a ServerToAgent");
    (reply.status, msg)
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket OpAMP connection.
pub(crate) struct WsConn {
    pub(crate) stream: WsStream,
}

impl WsConn {
    /// Connects with `token` as the bearer credential.
    pub(crate) async fn connect(c: &Collector, token: &str) -> WsConn {
        Self::try_connect(c, token)
            .await
            .unwrap_or_else(|e| panic!("websocket connect: {e}"))
    }

    /// Connects, returning the handshake error (e.g. 401/403) instead of panicking.
    pub(crate) async fn try_connect(
        c: &Collector,
        token: &str,
    ) -> Result<WsConn, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{}/v1/opamp", c.addrs.api)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            bearer(token).parse().expect("header value"),
        );
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsConn { stream })
    }

    /// Sends one message with the 0 header byte.
    pub(crate) async fn send(&mut self, msg: &AgentToServer) {
        let mut frame = vec![0u8];
        frame.extend(msg.encode_to_vec());
        self.send_raw(frame).await;
    }

    /// Sends one binary frame as is.
    pub(crate) async fn send_raw(&mut self, frame: Vec<u8>) {
        self.stream
            .send(WsMessage::Binary(frame.into()))
            .await
            .expect("websocket send");
    }

    /// Sends one binary frame; the server may cut the connection while it is sent.
    pub(crate) async fn try_send_raw(&mut self, frame: Vec<u8>) -> bool {
        self.stream
            .send(WsMessage::Binary(frame.into()))
            .await
            .is_ok()
    }

    /// The next message from the server, or `None` when the connection closed.
    pub(crate) async fn recv(&mut self) -> Option<ServerToAgent> {
        loop {
            let next = tokio::time::timeout(ANSWER_TIMEOUT, self.stream.next())
                .await
                .expect("a websocket message within the timeout");
            match next {
                Some(Ok(WsMessage::Binary(data))) => {
                    assert_eq!(data.first(), Some(&0u8), "header byte");
                    return Some(ServerToAgent::decode(&data[1..]).expect("a ServerToAgent"));
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected websocket message {other:?}"),
            }
        }
    }

    /// Sends `msg` and returns the answer.
    pub(crate) async fn call(&mut self, msg: &AgentToServer) -> ServerToAgent {
        self.send(msg).await;
        self.recv().await.expect("an answer")
    }
}

/// A JSON API call with `token`.
pub(crate) async fn api(
    c: &Collector,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let auth = bearer(token);
    c.api_request(
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()),
    )
    .await
}

/// Creates config document `name`; panics unless 201.
pub(crate) async fn create_config(
    c: &Collector,
    token: &str,
    name: &str,
    selector: &str,
    body: &str,
) -> Value {
    let r = api(
        c,
        token,
        Method::POST,
        "/api/v1/configs",
        Some(json!({"name": name, "selector": selector, "body": body, "message": "first"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "create {name}: {}", r.text());
    r.json()
}

/// Adds a version; panics unless 200.
pub(crate) async fn put_config(
    c: &Collector,
    token: &str,
    name: &str,
    body: &str,
    activate: bool,
) -> Value {
    let r = api(
        c,
        token,
        Method::PUT,
        &format!("/api/v1/configs/{name}"),
        Some(json!({"body": body, "message": "change", "activate": activate})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "put {name}: {}", r.text());
    r.json()
}

/// A new key of the harness's tenant (or `tenant`) with `scopes`.
pub(crate) async fn new_key(c: &Collector, scopes: &[&str], tenant: Option<&str>) -> String {
    let r = api(
        c,
        c.token(),
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": format!("test {scopes:?}"), "scopes": scopes, "tenant": tenant})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["key"].as_str().expect("key text").to_string()
}

/// Creates tenant `name`.
pub(crate) async fn new_tenant(c: &Collector, name: &str) {
    let r = api(
        c,
        c.token(),
        Method::POST,
        "/api/v1/tenants",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// The fleet entry of instance `uid`, if listed.
pub(crate) async fn fleet_entry(c: &Collector, token: &str, uid: &str) -> Option<Value> {
    let r = api(c, token, Method::GET, "/api/v1/agents", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|a| a["instance_uid"].as_str() == Some(uid))
}

/// The value of a counter or gauge line in `/metrics` (0 when absent).
pub(crate) async fn metric(c: &Collector, line_prefix: &str) -> f64 {
    let r = c.api_get("/metrics").await;
    r.text()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
