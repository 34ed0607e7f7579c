//! The OpAMP server: agents connect out to `/v1/opamp` on the API listener (plain
//! HTTP polls or a WebSocket), describe themselves, report health and the state of
//! their remote configuration, and receive the configuration documents of their
//! tenant whose selectors match their labels.
//!
//! The agent's configuration is one `AgentConfigMap` with one entry per matching
//! document (key = document name, `text/yaml`); the agent merges them in lexical key
//! order. Its `config_hash` is SHA-256 over the sorted (name, body) pairs, so an agent
//! that reports the hash it runs tells the server whether it is up to date. A change
//! (new version, rollback, roll-out, delete, or a new value of a secret a body
//! references) is pushed at once to every WebSocket agent whose desired hash changed;
//! plain-HTTP agents get it in the answer to their next poll, and an agent that was
//! away gets it when it comes back (its reported hash differs). Bodies are expanded
//! once per change of the tenant's documents or secrets (module `docs`), not per message.
//! A configuration holding a secret's value is withheld from an agent whose connection
//! has no TLS unless `secrets.without_tls` permits it (by default: loopback peers only);
//! the fleet view shows that agent `failed` with the reason.
//!
//! State lives in memory (one mutex, short critical sections, no await inside) and is
//! written to the metadata store in batches once a second, so the fleet view survives
//! a restart without a database write per heartbeat.

mod docs;
pub mod metrics;
mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use vantage_proto::opamp::{
    AgentCapabilities, AgentConfigFile, AgentConfigMap, AgentIdentification, AgentRemoteConfig,
    AgentToServer, AgentToServerFlags, RemoteConfigStatuses, RetryInfo, ServerCapabilities,
    ServerErrorResponse, ServerErrorResponseType, ServerToAgent, ServerToAgentFlags, any_value,
    server_error_response,
};
use vantage_storage::meta::{MetaStore, OpampAgentRecord, Selector};

use crate::auth::Principal;
use crate::telemetry::Telemetry;
use docs::{DocCache, TenantDocs};

pub(crate) use transport::{http, websocket};

/// Largest OpAMP message accepted, compressed or not: a full state report with an
/// effective config of a few hundred KiB fits; anything bigger is not an agent.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Messages waiting to be written to one WebSocket; a push that finds the queue full
/// is skipped (the agent gets the config in the answer to its next heartbeat).
pub const SEND_QUEUE: usize = 16;
/// WebSocket connections one tenant may hold: far above a real fleet per collector,
/// low enough that one tenant cannot exhaust the process.
pub const MAX_CONNECTIONS_PER_TENANT: usize = 10_000;
/// An agent whose applied configuration differs from its desired one for longer than
/// this is "lagging".
pub const LAGGING_AFTER: Duration = Duration::from_secs(60);
/// A plain-HTTP agent counts as connected this long after its last poll.
const HTTP_CONNECTED_FOR: Duration = Duration::from_secs(120);
/// Longest effective configuration kept for the fleet view.
const MAX_EFFECTIVE_CONFIG_BYTES: usize = 64 * 1024;
/// Longest instance uid accepted (the specification's are 16 bytes).
const MAX_INSTANCE_UID_BYTES: usize = 32;
/// How often dirty agent states are written and the gauges refreshed.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The content type of every config map entry.
pub const YAML_CONTENT_TYPE: &str = "text/yaml";

/// The capabilities this server announces.
const SERVER_CAPABILITIES: u64 = ServerCapabilities::AcceptsStatus as u64
    | ServerCapabilities::OffersRemoteConfig as u64
    | ServerCapabilities::AcceptsEffectiveConfig as u64;

/// The configuration one agent should run.
#[derive(Clone, Debug)]
struct Desired {
    hash: Vec<u8>,
    /// Document name -> version number.
    versions: BTreeMap<String, u32>,
    map: AgentConfigMap,
}

/// Where the answer to an agent's message goes, and whether the server may push.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A plain-HTTP poll: the answer is the response.
    Http,
    /// A WebSocket: `id` tells connections apart, `tx` is its bounded send queue.
    Ws {
        id: u64,
        tx: mpsc::Sender<ServerToAgent>,
    },
}

struct AgentState {
    record: OpampAgentRecord,
    labels: BTreeMap<String, String>,
    last_seq: Option<u64>,
    desired: Option<Desired>,
    /// When the desired hash last changed (for "lagging").
    desired_since: SystemTime,
    /// The open WebSocket, if any.
    ws: Option<(u64, mpsc::Sender<ServerToAgent>)>,
    /// The hash last offered on the open WebSocket.
    offered_on_ws: Option<Vec<u8>>,
    /// It sent `agent_disconnect` or its WebSocket closed: not connected until its next
    /// message, however recent its last contact.
    gone: bool,
    /// Its last message came over a connection that may carry secrets; `None` until it
    /// talks to this process (restored from the store).
    secure: Option<bool>,
    /// Why its configuration is withheld (it would carry a secret without TLS).
    withheld: Option<String>,
}

impl AgentState {
    fn accepts_remote_config(&self) -> bool {
        self.record.capabilities & AgentCapabilities::AcceptsRemoteConfig as u64 != 0
    }

    fn connected(&self, now: SystemTime) -> bool {
        self.ws.is_some()
            || (!self.gone
                && now
                    .duration_since(self.record.last_contact)
                    .is_ok_and(|d| d < HTTP_CONNECTED_FOR))
    }

    /// `applied`, `applying`, `failed`, `lagging` or `none`.
    fn config_state(&self, now: SystemTime) -> &'static str {
        if !self.accepts_remote_config() {
            return "none";
        }
        if self.withheld.is_some() {
            return "failed";
        }
        let desired = self
            .desired
            .as_ref()
            .map(|d| hex::encode(&d.hash))
            .unwrap_or_default();
        let applied = self.record.config_hash_applied == desired;
        match self.record.remote_status.as_str() {
            "applied" if applied => "applied",
            "failed" if applied => "failed",
            _ if now
                .duration_since(self.desired_since)
                .is_ok_and(|d| d > LAGGING_AFTER) =>
            {
                "lagging"
            }
            _ => "applying",
        }
    }
}

#[derive(Default)]
struct Inner {
    agents: HashMap<String, AgentState>,
    dirty: HashSet<String>,
    ws_per_tenant: HashMap<String, usize>,
    next_conn_id: u64,
}

/// Why an agent is sent no configuration.
enum Withheld {
    /// A body references a secret that cannot be read.
    Unexpandable,
    /// A body holds a secret and the connection has no TLS (the reason, for the fleet view).
    NeedsTls(String),
}

/// Why a message was refused; becomes an `error_response`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpampError {
    /// The instance uid is missing or too long.
    #[error("instance_uid must be 1 to {MAX_INSTANCE_UID_BYTES} bytes, got {0}")]
    BadInstanceUid(usize),
    /// The uid is bound to another credential.
    #[error("instance_uid {0} belongs to another credential")]
    UidConflict(String),
    /// The configuration could not be loaded.
    #[error("configuration unavailable; retry")]
    Unavailable,
}

impl OpampError {
    fn reason(&self) -> &'static str {
        match self {
            OpampError::BadInstanceUid(_) => "bad_instance_uid",
            OpampError::UidConflict(_) => "uid_conflict",
            OpampError::Unavailable => "unavailable",
        }
    }
}

/// A `ServerToAgent` carrying only an error.
pub(crate) fn error_response(
    instance_uid: Vec<u8>,
    kind: ServerErrorResponseType,
    message: impl Into<String>,
) -> ServerToAgent {
    let retry = (kind == ServerErrorResponseType::Unavailable).then_some(
        server_error_response::Details::RetryInfo(RetryInfo {
            retry_after_nanoseconds: 5_000_000_000,
        }),
    );
    ServerToAgent {
        instance_uid,
        error_response: Some(ServerErrorResponse {
            r#type: kind as i32,
            error_message: message.into(),
            details: retry,
        }),
        capabilities: SERVER_CAPABILITIES,
        ..Default::default()
    }
}

/// Turns a stored document body into what an agent of `tenant` receives. Every body an
/// agent gets goes through here and nowhere else: the collector's secrets
/// (`${secret:NAME}`, decrypted for this tenant only) are expanded here, so the stored
/// documents and the API never hold a plaintext secret. The tenant is the agent's
/// credential's, never what the agent says about itself.
pub(crate) fn expand_for_agent(
    secrets: Option<&crate::secrets::Secrets>,
    tenant: &str,
    body: &str,
) -> Result<String, String> {
    match secrets {
        // Decrypted values are cached: a store read only on the first use after a change.
        Some(secrets) => secrets.expand(tenant, body).map_err(|e| e.to_string()),
        None => Ok(body.to_string()),
    }
}

/// SHA-256 over the (name, body) pairs in name order, each length-prefixed (8 bytes,
/// big-endian) so no two different maps hash alike.
pub fn config_hash<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut sorted: Vec<(&str, &[u8])> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, body) in sorted {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((body.len() as u64).to_be_bytes());
        h.update(body);
    }
    h.finalize().to_vec()
}

/// An agent's labels: every string-valued (or scalar) identifying and non-identifying
/// attribute of its description, the identifying ones winning on a clash.
fn labels_of(description: &vantage_proto::opamp::AgentDescription) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kv in description
        .non_identifying_attributes
        .iter()
        .chain(&description.identifying_attributes)
    {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            Some(any_value::Value::BoolValue(b)) => b.to_string(),
            Some(any_value::Value::IntValue(i)) => i.to_string(),
            Some(any_value::Value::DoubleValue(d)) => d.to_string(),
            _ => continue,
        };
        out.insert(
            kv.key.chars().take(256).collect(),
            value.chars().take(1024).collect(),
        );
    }
    out
}

fn status_name(status: i32) -> &'static str {
    match RemoteConfigStatuses::try_from(status) {
        Ok(RemoteConfigStatuses::Applied) => "applied",
        Ok(RemoteConfigStatuses::Applying) => "applying",
        Ok(RemoteConfigStatuses::Failed) => "failed",
        _ => "unset",
    }
}

fn new_instance_uid() -> Vec<u8> {
    // UUID v7: 48 bits of milliseconds, then random bits with version and variant.
    let mut uid = [0u8; 16];
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    uid[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    if getrandom::fill(&mut uid[6..]).is_err() {
        // Time alone still makes a distinct uid for a distinct request in practice.
        tracing::warn!("random source failed while generating an instance uid");
    }
    uid[6] = (uid[6] & 0x0f) | 0x70;
    uid[8] = (uid[8] & 0x3f) | 0x80;
    uid.to_vec()
}

/// One agent as the fleet view shows it.
#[derive(Clone, Debug)]
pub struct FleetEntry {
    /// The persisted state.
    pub record: OpampAgentRecord,
    /// Desired config hash, hex (empty: nothing computed yet).
    pub desired_hash: String,
    /// Desired document versions.
    pub desired_versions: BTreeMap<String, u32>,
    /// `applied`, `applying`, `failed`, `lagging` or `none`.
    pub config_state: &'static str,
    /// Open WebSocket or a recent poll.
    pub connected: bool,
}

impl FleetEntry {
    /// The entry as JSON fields for `GET /api/v1/agents`.
    pub fn json(&self) -> Value {
        let r = &self.record;
        json!({
            "instance_uid": r.instance_uid,
            "desired_config_hash": (!self.desired_hash.is_empty()).then_some(&self.desired_hash),
            "desired_config_versions": self.desired_versions,
            "applied_config_hash": (!r.config_hash_applied.is_empty()).then_some(&r.config_hash_applied),
            "config_status": self.config_state,
            "remote_config_status": r.remote_status,
            "last_error": (!r.remote_error.is_empty()).then_some(&r.remote_error),
            "healthy": r.healthy,
            "health_status": (!r.health_status.is_empty()).then_some(&r.health_status),
            "capabilities": r.capabilities,
            "attributes": serde_json::from_str::<Value>(&r.description).unwrap_or(Value::Null),
            "last_contact": crate::api::timeparse::format_time(
                r.last_contact.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
            ),
            "connected": self.connected,
        })
    }
}

/// The OpAMP server: agent state, configuration cache and open connections.
pub struct OpampServer {
    store: Arc<MetaStore>,
    telemetry: Arc<Telemetry>,
    inner: Mutex<Inner>,
    /// Per tenant: its documents and their bodies as agents receive them.
    configs: DocCache,
    /// `${secret:NAME}` in documents is expanded with these (None: left as written).
    secrets: Option<Arc<crate::secrets::Secrets>>,
}

impl std::fmt::Debug for OpampServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpampServer").finish_non_exhaustive()
    }
}

impl OpampServer {
    /// The server, with every agent the store remembers (blocking: call at start-up).
    pub fn open(
        store: Arc<MetaStore>,
        telemetry: Arc<Telemetry>,
        secrets: Option<Arc<crate::secrets::Secrets>>,
    ) -> Result<OpampServer, vantage_storage::meta::MetaError> {
        let mut inner = Inner::default();
        let now = SystemTime::now();
        for record in store.list_opamp_agents(None)? {
            let labels = serde_json::from_str::<BTreeMap<String, String>>(&record.description)
                .unwrap_or_default();
            inner.agents.insert(
                record.instance_uid.clone(),
                AgentState {
                    record,
                    labels,
                    last_seq: None,
                    desired: None,
                    desired_since: now,
                    ws: None,
                    offered_on_ws: None,
                    gone: false,
                    secure: None,
                    withheld: None,
                },
            );
        }
        Ok(OpampServer {
            store,
            telemetry,
            inner: Mutex::new(inner),
            configs: DocCache::default(),
            secrets,
        })
    }

    /// The metadata store holding the documents and the agents' state.
    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn metrics(&self) -> &metrics::OpampMetrics {
        &self.telemetry.opamp
    }

    /// The tenant's current documents with expanded bodies, from the cache or the store.
    async fn active(&self, tenant: &str) -> Result<Arc<TenantDocs>, OpampError> {
        let generation = match self.configs.get(tenant) {
            Ok(found) => return Ok(found),
            Err(generation) => generation,
        };
        let (store, secrets, t) = (self.store.clone(), self.secrets.clone(), tenant.to_string());
        let loaded = tokio::task::spawn_blocking(move || {
            TenantDocs::load(&store, secrets.as_deref(), &t)
        })
        .await
        .map_err(|_| OpampError::Unavailable)?
        .map_err(|e| {
            tracing::error!(tenant = %tenant, error = %e, "cannot load agent configurations");
            OpampError::Unavailable
        })?;
        let loaded = Arc::new(loaded);
        self.configs.insert(tenant, generation, loaded.clone());
        Ok(loaded)
    }

    /// The configuration agent `uid` with `labels` should run, or why it gets none
    /// (it keeps what it has). `secure`: its connection may carry secrets.
    fn desired_for(
        &self,
        uid: &str,
        labels: &BTreeMap<String, String>,
        docs: &TenantDocs,
        secure: bool,
    ) -> Result<Desired, Withheld> {
        let mut versions = BTreeMap::new();
        let mut map = HashMap::new();
        for doc in docs.docs.iter().filter(|d| d.selector.matches(labels)) {
            let version = doc.version_for(uid);
            let body = match docs.body(&doc.name, version.version) {
                Some(Ok(body)) => body.clone(),
                // A missing secret; logged when the documents were loaded.
                _ => {
                    self.metrics().error("expand_failed");
                    return Err(Withheld::Unexpandable);
                }
            };
            if !secure && docs.has_secrets(&doc.name, version.version) {
                self.metrics().error("secrets_need_tls");
                return Err(Withheld::NeedsTls(format!(
                    "configuration {} version {} holds secrets and this agent's connection has no TLS; \
                     connect with wss:// or https:// (or see secrets.without_tls)",
                    doc.name, version.version
                )));
            }
            versions.insert(doc.name.clone(), version.version);
            map.insert(
                doc.name.clone(),
                AgentConfigFile {
                    body: body.into_bytes(),
                    content_type: YAML_CONTENT_TYPE.to_string(),
                },
            );
        }
        let hash = config_hash(map.iter().map(|(k, v)| (k.as_str(), v.body.as_slice())));
        Ok(Desired {
            hash,
            versions,
            map: AgentConfigMap { config_map: map },
        })
    }

    /// Handles one message from an agent and returns the answer.
    /// `secure`: the connection may carry secrets (TLS, or `secrets.without_tls` permits).
    pub(crate) async fn handle(
        &self,
        principal: &Principal,
        msg: AgentToServer,
        conn: &Conn,
        secure: bool,
    ) -> ServerToAgent {
        let instance_uid = msg.instance_uid.clone();
        match self.handle_inner(principal, msg, conn, secure).await {
            Ok(reply) => reply,
            Err(e) => {
                self.metrics().error(e.reason());
                tracing::warn!(
                    tenant = %principal.tenant,
                    key_id = principal.key_id.as_deref().unwrap_or(""),
                    instance_uid = %hex::encode(&instance_uid),
                    error = %e,
                    "refused an opamp message"
                );
                let kind = match e {
                    OpampError::Unavailable => ServerErrorResponseType::Unavailable,
                    _ => ServerErrorResponseType::BadRequest,
                };
                error_response(instance_uid, kind, e.to_string())
            }
        }
    }

    async fn handle_inner(
        &self,
        principal: &Principal,
        msg: AgentToServer,
        conn: &Conn,
        secure: bool,
    ) -> Result<ServerToAgent, OpampError> {
        let uid_len = msg.instance_uid.len();
        if uid_len == 0 || uid_len > MAX_INSTANCE_UID_BYTES {
            return Err(OpampError::BadInstanceUid(uid_len));
        }
        let tenant = principal.tenant.as_str();
        let key_id = principal.key_id.clone().unwrap_or_default();
        let docs = self.active(tenant).await?;
        let mut reply = ServerToAgent {
            instance_uid: msg.instance_uid.clone(),
            capabilities: SERVER_CAPABILITIES,
            ..Default::default()
        };
        let mut uid = hex::encode(&msg.instance_uid);
        let now = SystemTime::now();
        let mut inner = self.inner();
        if let Some(existing) = inner.agents.get(&uid)
            && (existing.record.key_id != key_id || existing.record.tenant != tenant)
        {
            return Err(OpampError::UidConflict(uid));
        }
        if msg.flags & AgentToServerFlags::RequestInstanceUid as u64 != 0 {
            let new = new_instance_uid();
            uid = hex::encode(&new);
            reply.agent_identification = Some(AgentIdentification {
                new_instance_uid: new,
            });
        }
        let is_new = !inner.agents.contains_key(&uid);
        let state = inner
            .agents
            .entry(uid.clone())
            .or_insert_with(|| AgentState {
                record: OpampAgentRecord {
                    instance_uid: uid.clone(),
                    tenant: tenant.to_string(),
                    key_id: key_id.clone(),
                    description: "{}".into(),
                    capabilities: 0,
                    config_hash_sent: String::new(),
                    config_hash_applied: String::new(),
                    remote_status: "unset".into(),
                    remote_error: String::new(),
                    healthy: None,
                    health_status: String::new(),
                    effective_config: String::new(),
                    first_seen: now,
                    last_contact: now,
                },
                labels: BTreeMap::new(),
                last_seq: None,
                desired: None,
                desired_since: now,
                ws: None,
                offered_on_ws: None,
                gone: false,
                secure: None,
                withheld: None,
            });
        if is_new {
            tracing::info!(tenant = %tenant, instance_uid = %uid, "opamp agent connected for the first time");
        }
        // Sequence numbers: a gap, or a first message without a description (we lost
        // our state or never had it), asks for the full state — unless this message
        // carries the description, i.e. is a full state already (an agent restarted).
        let gap = msg.agent_description.is_none()
            && state
                .last_seq
                .is_none_or(|last| msg.sequence_num != last.wrapping_add(1));
        if gap {
            reply.flags |= ServerToAgentFlags::ReportFullState as u64;
        }
        state.last_seq = Some(msg.sequence_num);
        state.record.last_contact = now;
        state.record.capabilities = msg.capabilities;
        if let Some(description) = &msg.agent_description {
            state.labels = labels_of(description);
            state.record.description =
                serde_json::to_string(&state.labels).unwrap_or_else(|_| "{}".into());
        }
        if let Some(health) = &msg.health {
            state.record.healthy = Some(health.healthy);
            state.record.health_status = if health.last_error.is_empty() {
                health.status.clone()
            } else {
                health.last_error.clone()
            };
        }
        if let Some(effective) = &msg.effective_config {
            let mut text = String::new();
            if let Some(map) = &effective.config_map {
                let mut names: Vec<&String> = map.config_map.keys().collect();
                names.sort();
                for name in names {
                    text.push_str(&format!("# {name}\n"));
                    text.push_str(&String::from_utf8_lossy(&map.config_map[name].body));
                    text.push('\n');
                }
            }
            text.truncate(text.floor_char_boundary(MAX_EFFECTIVE_CONFIG_BYTES));
            state.record.effective_config = text;
        }
        if let Some(status) = &msg.remote_config_status {
            state.record.config_hash_applied = hex::encode(&status.last_remote_config_hash);
            state.record.remote_status = status_name(status.status).to_string();
            state.record.remote_error = status.error_message.chars().take(4096).collect();
        }
        match conn {
            Conn::Ws { id, tx } => {
                if state.ws.as_ref().is_none_or(|(known, _)| known != id) {
                    state.ws = Some((*id, tx.clone()));
                    state.offered_on_ws = None;
                }
            }
            Conn::Http => {}
        }
        state.gone = msg.agent_disconnect.is_some();
        state.secure = Some(secure);
        if state.gone {
            state.ws = None;
            state.offered_on_ws = None;
        }
        // The configuration it should run, and whether to offer it.
        let labels = state.labels.clone();
        let desired = self.desired_for(&uid, &labels, &docs, secure);
        let state = inner.agents.get_mut(&uid).ok_or(OpampError::Unavailable)?;
        let desired = withhold(state, &uid, tenant, desired);
        if let Some(desired) = desired {
            if state.desired.as_ref().map(|d| &d.hash) != Some(&desired.hash) {
                state.desired_since = now;
            }
            // What the agent last said it runs (this message, or an earlier one unless
            // this is a full state without a status: then it has nothing).
            let forgot = msg.agent_description.is_some() && msg.remote_config_status.is_none();
            let agent_has =
                !forgot && state.record.config_hash_applied == hex::encode(&desired.hash);
            let already_offered = matches!(conn, Conn::Ws { .. })
                && state.offered_on_ws.as_ref() == Some(&desired.hash)
                && !gap;
            if state.accepts_remote_config() && !agent_has && !already_offered {
                reply.remote_config = Some(AgentRemoteConfig {
                    config: Some(desired.map.clone()),
                    config_hash: desired.hash.clone(),
                });
                state.record.config_hash_sent = hex::encode(&desired.hash);
                if matches!(conn, Conn::Ws { .. }) {
                    state.offered_on_ws = Some(desired.hash.clone());
                }
                self.metrics().config_pushes.inc();
            }
            state.desired = Some(desired);
        }
        inner.dirty.insert(uid);
        Ok(reply)
    }

    /// A WebSocket connection opens for `tenant`: its id, or `None` when the tenant
    /// already holds [`MAX_CONNECTIONS_PER_TENANT`].
    pub(crate) fn open_connection(&self, tenant: &str) -> Option<u64> {
        let mut inner = self.inner();
        let count = inner.ws_per_tenant.entry(tenant.to_string()).or_default();
        if *count >= MAX_CONNECTIONS_PER_TENANT {
            return None;
        }
        *count += 1;
        inner.next_conn_id += 1;
        Some(inner.next_conn_id)
    }

    /// A WebSocket connection closed: its agents can no longer be pushed to.
    pub(crate) fn close_connection(&self, tenant: &str, id: u64) {
        let mut inner = self.inner();
        if let Some(count) = inner.ws_per_tenant.get_mut(tenant) {
            *count = count.saturating_sub(1);
        }
        for state in inner.agents.values_mut() {
            if state.ws.as_ref().is_some_and(|(known, _)| *known == id) {
                state.ws = None;
                state.offered_on_ws = None;
                state.gone = true;
            }
        }
    }

    /// The tenant's documents changed: reload them and push the new configuration to
    /// every WebSocket agent whose desired configuration changed.
    pub async fn config_changed(&self, tenant: &str) {
        self.configs.invalidate(tenant);
        self.push_changes(tenant, "document").await;
    }

    /// A secret of the tenant was set or deleted: the bodies that reference it expand
    /// differently, so the agents given one of them get the new configuration now, not
    /// at their next message. Agents whose bodies do not reference it see the same hash
    /// and get nothing; other tenants are not looked at.
    pub async fn secrets_changed(&self, tenant: &str) {
        self.configs.invalidate(tenant);
        self.push_changes(tenant, "secret").await;
    }

    /// Recomputes the desired configuration of the tenant's agents and pushes it to
    /// the WebSocket agents whose desired hash changed.
    async fn push_changes(&self, tenant: &str, why: &'static str) {
        let docs = match self.active(tenant).await {
            Ok(docs) => docs,
            Err(_) => return,
        };
        let now = SystemTime::now();
        let mut pushed = 0u64;
        let mut inner = self.inner();
        let uids: Vec<String> = inner
            .agents
            .iter()
            .filter(|(_, s)| s.record.tenant == tenant)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in uids {
            // One not heard from since start is sent nothing before it talks, and then
            // its connection decides: until then it is not "withheld".
            let Some((labels, secure)) = inner
                .agents
                .get(&uid)
                .map(|s| (s.labels.clone(), s.secure.unwrap_or(true)))
            else {
                continue;
            };
            let desired = self.desired_for(&uid, &labels, &docs, secure);
            let Some(state) = inner.agents.get_mut(&uid) else {
                continue;
            };
            let Some(desired) = withhold(state, &uid, tenant, desired) else {
                continue;
            };
            if state.desired.as_ref().map(|d| &d.hash) == Some(&desired.hash) {
                continue;
            }
            state.desired_since = now;
            if state.accepts_remote_config()
                && let Some((_, tx)) = &state.ws
            {
                let msg = ServerToAgent {
                    instance_uid: hex::decode(&uid).unwrap_or_default(),
                    remote_config: Some(AgentRemoteConfig {
                        config: Some(desired.map.clone()),
                        config_hash: desired.hash.clone(),
                    }),
                    capabilities: SERVER_CAPABILITIES,
                    ..Default::default()
                };
                match tx.try_send(msg) {
                    Ok(()) => {
                        state.offered_on_ws = Some(desired.hash.clone());
                        state.record.config_hash_sent = hex::encode(&desired.hash);
                        pushed += 1;
                        inner.dirty.insert(uid.clone());
                    }
                    Err(_) => {
                        // Full or closed: the next heartbeat's answer carries it.
                        self.metrics().error("send_queue_full");
                    }
                }
            }
            if let Some(state) = inner.agents.get_mut(&uid) {
                state.desired = Some(desired);
            }
        }
        drop(inner);
        self.metrics().config_pushes.inc_by(pushed);
        tracing::info!(tenant = %tenant, pushed, cause = why, "agent configuration changed");
    }

    /// Instance uids of the tenant's known agents that `selector` matches.
    pub fn matching_agents(&self, tenant: &str, selector: &Selector) -> Vec<String> {
        let inner = self.inner();
        let mut out: Vec<String> = inner
            .agents
            .iter()
            .filter(|(_, s)| s.record.tenant == tenant && selector.matches(&s.labels))
            .map(|(uid, _)| uid.clone())
            .collect();
        out.sort();
        out
    }

    /// The tenant's OpAMP agents, by instance uid.
    pub fn fleet(&self, tenant: &str) -> Vec<FleetEntry> {
        let now = SystemTime::now();
        let inner = self.inner();
        let mut out: Vec<FleetEntry> = inner
            .agents
            .values()
            .filter(|s| s.record.tenant == tenant)
            .map(|s| FleetEntry {
                record: match &s.withheld {
                    Some(reason) => OpampAgentRecord {
                        remote_error: reason.clone(),
                        ..s.record.clone()
                    },
                    None => s.record.clone(),
                },
                desired_hash: s
                    .desired
                    .as_ref()
                    .map(|d| hex::encode(&d.hash))
                    .unwrap_or_default(),
                desired_versions: s
                    .desired
                    .as_ref()
                    .map(|d| d.versions.clone())
                    .unwrap_or_default(),
                config_state: s.config_state(now),
                connected: s.connected(now),
            })
            .collect();
        out.sort_by(|a, b| a.record.instance_uid.cmp(&b.record.instance_uid));
        out
    }

    /// Writes dirty agent states once a second and refreshes the gauges, until
    /// `shutdown`; then writes what is left.
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = shutdown.cancelled() => true,
                };
                server.flush().await;
                if stop {
                    break;
                }
            }
        })
    }

    async fn flush(&self) {
        let now = SystemTime::now();
        let (records, connected, states) = {
            let mut inner = self.inner();
            let dirty: Vec<String> = inner.dirty.drain().collect();
            let records: Vec<OpampAgentRecord> = dirty
                .iter()
                .filter_map(|uid| inner.agents.get(uid).map(|s| s.record.clone()))
                .collect();
            let mut states: HashMap<&'static str, i64> = HashMap::new();
            let mut connected = 0;
            for s in inner.agents.values() {
                if s.connected(now) {
                    connected += 1;
                }
                *states.entry(s.config_state(now)).or_default() += 1;
            }
            (records, connected, states)
        };
        let m = self.metrics();
        m.agents_connected.set(connected);
        for state in ["applied", "applying", "failed", "lagging", "none"] {
            m.agents_by_state
                .get_or_create(&metrics::ConfigStateLabels { state })
                .set(states.get(state).copied().unwrap_or(0));
        }
        if records.is_empty() {
            return;
        }
        let store = self.store.clone();
        let n = records.len();
        match tokio::task::spawn_blocking(move || store.upsert_opamp_agents(&records)).await {
            Ok(Ok(())) => tracing::debug!(agents = n, "persisted opamp agent states"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot persist opamp agent states"),
            Err(e) => tracing::error!(error = %e, "opamp persist task failed"),
        }
    }
}

/// Decodes one `AgentToServer` (size already bounded by the transport).
/// Records on `state` whether its configuration is withheld, logging when that starts;
/// the configuration to offer, if any.
fn withhold(
    state: &mut AgentState,
    uid: &str,
    tenant: &str,
    desired: Result<Desired, Withheld>,
) -> Option<Desired> {
    match desired {
        Ok(desired) => {
            state.withheld = None;
            Some(desired)
        }
        Err(Withheld::Unexpandable) => None,
        Err(Withheld::NeedsTls(reason)) => {
            if state.withheld.is_none() {
                tracing::warn!(tenant = %tenant, instance_uid = %uid, reason = %reason, "configuration withheld from an agent");
            }
            state.withheld = Some(reason);
            None
        }
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<AgentToServer, prost::DecodeError> {
    AgentToServer::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_order_independent_and_unambiguous() {
        let a = config_hash([("a", b"x".as_slice()), ("b", b"y".as_slice())]);
        let b = config_hash([("b", b"y".as_slice()), ("a", b"x".as_slice())]);
        assert_eq!(a, b);
        let c = config_hash([("a", b"xb".as_slice())]);
        let d = config_hash([("a", b"x".as_slice()), ("b", b"".as_slice())]);
        assert_ne!(c, d);
        assert_eq!(config_hash([]), Sha256::digest(b"").to_vec());
    }

    #[test]
    fn labels_take_scalars_and_identifying_wins() {
        use vantage_proto::opamp::{AgentDescription, AnyValue, KeyValue};
        let kv = |k: &str, v: any_value::Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
        };
        let d = AgentDescription {
            identifying_attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue("a".into()),
            )],
            non_identifying_attributes: vec![
                kv("service.name", any_value::Value::StringValue("b".into())),
                kv("cores", any_value::Value::IntValue(4)),
                kv("blob", any_value::Value::BytesValue(vec![1])),
            ],
        };
        let l = labels_of(&d);
        assert_eq!(l["service.name"], "a");
        assert_eq!(l["cores"], "4");
        assert!(!l.contains_key("blob"));
    }

    #[test]
    fn new_uids_are_v7_and_distinct() {
        let (a, b) = (new_instance_uid(), new_instance_uid());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 7);
    }
}
