//! The OpAMP client: identity and description, capabilities, sequence numbers, full
//! state on every new connection and when the server asks (`ReportFullState`), only
//! what changed otherwise (the specification's rule against message loops), heartbeats
//! (WebSocket) or polls (HTTP) every `heartbeat`, remote configuration offers applied
//! through the runtime with their status reported, `agent_disconnect` on shutdown, the
//! server's `new_instance_uid` adopted, error responses and 429/503 honoured, and
//! reconnection with jittered, capped backoff.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_yaml_ng::Value;
use tokio_util::sync::CancellationToken;
use vantage_proto::opamp::{
    AgentCapabilities, AgentConfigFile, AgentConfigMap, AgentDescription, AgentDisconnect,
    AgentRemoteConfig, AgentToServer, AnyValue, ComponentHealth, EffectiveConfig, KeyValue,
    RemoteConfigStatus, RemoteConfigStatuses, ServerErrorResponseType, ServerToAgent,
    ServerToAgentFlags, any_value, server_error_response,
};

use super::transport::{self, TransportError, WsSession};
use super::{ControlConfig, Transport, effective_tree, merge, state};
use crate::config::{ClientTls, Config, ConfigError};
use crate::runtime::{Applied, Runtime, SourceHealth};

/// `service.name` of the agent description: the reverse domain name the OpAMP
/// specification asks for.
pub(crate) const SERVICE_NAME: &str = "io.vantage.agent";
/// Key of the single document in the reported `EffectiveConfig`.
pub(crate) const EFFECTIVE_CONFIG_KEY: &str = "";
/// Content type of configuration documents, both directions.
pub(crate) const YAML: &str = "text/yaml";
/// First reconnection delay; doubles per failure.
const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest reconnection delay: an agent notices a returning collector within a minute.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest wait a server's retry-after may impose.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);
/// Messages sent back to back over HTTP before waiting a poll interval, so a server
/// that keeps asking for full state cannot make the agent spin.
const MAX_IMMEDIATE_SENDS: u32 = 3;

/// The capabilities this agent has, sent in every message.
pub(crate) const CAPABILITIES: u64 = AgentCapabilities::ReportsStatus as u64
    | AgentCapabilities::AcceptsRemoteConfig as u64
    | AgentCapabilities::ReportsEffectiveConfig as u64
    | AgentCapabilities::ReportsHealth as u64
    | AgentCapabilities::ReportsRemoteConfig as u64;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// What the client needs besides the runtime.
pub(crate) struct Context {
    pub(crate) control: ControlConfig,
    /// The local tree (file, variables, flags), before `${env:}` expansion: the base
    /// every remote configuration is merged over.
    pub(crate) local_tree: Value,
    /// The whole process environment, for `${env:NAME}`.
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) state_dir: PathBuf,
    /// TLS towards the collector's API listener: the exporter's settings.
    pub(crate) tls: ClientTls,
}

/// The protocol state of the agent.
pub(crate) struct Agent {
    ctx: Context,
    uid: [u8; 16],
    seq: u64,
    description: AgentDescription,
    status: RemoteConfigStatus,
    effective: EffectiveConfig,
    last_health: Option<ComponentHealth>,
    full_state: bool,
    status_dirty: bool,
    effective_dirty: bool,
}

/// What the loop does after a server message.
#[derive(Debug, PartialEq)]
enum Next {
    /// Nothing to say until the next heartbeat.
    Wait,
    /// Something changed: report it now.
    SendNow,
    /// The server is unavailable: wait this long, then reconnect (or poll).
    RetryAfter(Duration),
}

fn description(uid: &[u8; 16], labels: &BTreeMap<String, String>) -> AgentDescription {
    let host = sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let mut non_identifying = vec![
        kv("host.name", &host),
        kv("os.type", std::env::consts::OS),
        kv("host.arch", std::env::consts::ARCH),
    ];
    non_identifying.extend(labels.iter().map(|(k, v)| kv(k, v)));
    AgentDescription {
        identifying_attributes: vec![
            kv("service.name", SERVICE_NAME),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv("service.instance.id", &uuid_text(uid)),
        ],
        non_identifying_attributes: non_identifying,
    }
}

/// The documents of an offer, by key.
fn documents(rc: &AgentRemoteConfig) -> BTreeMap<String, Vec<u8>> {
    rc.config
        .as_ref()
        .map(|m| {
            m.config_map
                .iter()
                .map(|(k, f)| (k.clone(), f.body.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Validates an offer into the configuration to run, exactly as `check-config` would.
fn validate_offer(ctx: &Context, rc: &AgentRemoteConfig) -> Result<Applied, ConfigError> {
    let tree = effective_tree(
        &ctx.local_tree,
        &documents(rc),
        &ctx.control.pinned,
        &ctx.env,
    )?;
    let config = Config::from_tree(tree.clone(), "")?;
    Ok(Applied { config, tree })
}

fn effective(tree: &Value) -> EffectiveConfig {
    EffectiveConfig {
        config_map: Some(AgentConfigMap {
            config_map: [(
                EFFECTIVE_CONFIG_KEY.to_string(),
                AgentConfigFile {
                    body: merge::masked_yaml(tree).into_bytes(),
                    content_type: YAML.to_string(),
                },
            )]
            .into(),
        }),
    }
}

/// `ComponentHealth` of the agent: one entry per source.
pub(crate) fn component_health(sources: &[SourceHealth], start_ns: u64) -> ComponentHealth {
    let mut map = std::collections::HashMap::new();
    let mut first_error = None;
    for s in sources {
        if let (Some(e), None) = (&s.error, &first_error) {
            first_error = Some(format!("{}: {e}", s.name));
        }
        map.insert(
            s.name.clone(),
            ComponentHealth {
                healthy: s.error.is_none(),
                start_time_unix_nano: s.started_ns,
                last_error: s.error.clone().unwrap_or_default(),
                status: if s.error.is_none() {
                    "running"
                } else {
                    "failed"
                }
                .to_string(),
                status_time_unix_nano: s.started_ns,
                component_health_map: Default::default(),
            },
        );
    }
    ComponentHealth {
        healthy: first_error.is_none(),
        start_time_unix_nano: start_ns,
        status: if first_error.is_none() {
            "running"
        } else {
            "degraded"
        }
        .to_string(),
        last_error: first_error.unwrap_or_default(),
        status_time_unix_nano: start_ns,
        component_health_map: map,
    }
}

impl Agent {
    /// Loads the instance uid and the saved remote configuration, and decides what to
    /// start with: the saved remote configuration merged over `local` when it still
    /// validates, else `local` (with the failure reported once connected).
    pub(crate) fn prepare(ctx: Context, local: Applied) -> anyhow::Result<(Agent, Applied)> {
        std::fs::create_dir_all(&ctx.state_dir)?;
        let uid = state::instance_uid(&ctx.state_dir)?;
        let mut status = RemoteConfigStatus::default();
        let mut applied = local;
        if let Some(rc) = state::load_remote_config(&ctx.state_dir) {
            status.last_remote_config_hash = rc.config_hash.clone();
            match validate_offer(&ctx, &rc) {
                Ok(a) => {
                    tracing::info!(
                        "running the last remote configuration until the collector answers"
                    );
                    status.status = RemoteConfigStatuses::Applied as i32;
                    applied = a;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saved remote configuration no longer valid; running the local one");
                    status.status = RemoteConfigStatuses::Failed as i32;
                    status.error_message = e.to_string();
                }
            }
        }
        let agent = Agent {
            description: description(&uid, &ctx.control.labels),
            effective: effective(&applied.tree),
            uid,
            seq: 0,
            status,
            last_health: None,
            full_state: true,
            status_dirty: true,
            effective_dirty: true,
            ctx,
        };
        Ok((agent, applied))
    }

    /// The start-up runtime failed with the saved remote configuration: report it.
    pub(crate) fn start_failed(&mut self, error: String, local_tree: &Value) {
        self.status.status = RemoteConfigStatuses::Failed as i32;
        self.status.error_message = error;
        self.effective = effective(local_tree);
    }

    /// The next message: everything after a (re)connection or when asked, otherwise
    /// only what changed.
    fn message(&mut self, rt: &mut Runtime, start_ns: u64) -> AgentToServer {
        self.seq += 1;
        let health = component_health(&rt.health(), start_ns);
        let mut msg = AgentToServer {
            instance_uid: self.uid.to_vec(),
            sequence_num: self.seq,
            capabilities: CAPABILITIES,
            ..Default::default()
        };
        let full = std::mem::take(&mut self.full_state);
        if full {
            msg.agent_description = Some(self.description.clone());
        }
        if full || self.status_dirty {
            msg.remote_config_status = Some(self.status.clone());
        }
        if full || self.effective_dirty {
            msg.effective_config = Some(self.effective.clone());
        }
        if full || self.last_health.as_ref() != Some(&health) {
            msg.health = Some(health.clone());
        }
        self.status_dirty = false;
        self.effective_dirty = false;
        self.last_health = Some(health);
        msg
    }

    /// A message did not reach the server: the next one carries the full state.
    fn unsent(&mut self) {
        self.full_state = true;
    }

    async fn handle(&mut self, msg: ServerToAgent, rt: &mut Runtime, attempt: &mut u32) -> Next {
        if let Some(err) = msg.error_response {
            let retry = err
                .details
                .map(|server_error_response::Details::RetryInfo(r)| {
                    Duration::from_nanos(r.retry_after_nanoseconds)
                });
            tracing::warn!(error = %err.error_message, kind = err.r#type, "opamp server answered with an error");
            if err.r#type == ServerErrorResponseType::Unavailable as i32 {
                *attempt += 1;
                let wait = retry
                    .unwrap_or_else(|| crate::export::backoff(*attempt, RETRY_INITIAL, RETRY_MAX));
                return Next::RetryAfter(wait.min(RETRY_AFTER_MAX));
            }
            // BadRequest / Unknown: the specification says not to retry that message;
            // the next heartbeat carries the full state again.
            self.full_state = true;
            return Next::Wait;
        }
        let mut next = Next::Wait;
        if let Some(id) = msg.agent_identification
            && let Ok(uid) = <[u8; 16]>::try_from(id.new_instance_uid.as_slice())
            && uid != self.uid
        {
            tracing::info!(instance_uid = %uuid_text(&uid), "the server assigned a new instance uid");
            if let Err(e) = state::save_instance_uid(&self.ctx.state_dir, &uid) {
                tracing::warn!(error = %e, "cannot save the new instance uid");
            }
            self.uid = uid;
            self.description = description(&uid, &self.ctx.control.labels);
            self.full_state = true;
            next = Next::SendNow;
        }
        if msg.flags & ServerToAgentFlags::ReportFullState as u64 != 0 {
            self.full_state = true;
            next = Next::SendNow;
        }
        if let Some(rc) = msg.remote_config
            && self.offer(rc, rt).await
        {
            next = Next::SendNow;
        }
        next
    }

    /// Applies an offer unless it is the one last handled; true when the status changed.
    async fn offer(&mut self, rc: AgentRemoteConfig, rt: &mut Runtime) -> bool {
        if rc.config_hash == self.status.last_remote_config_hash
            && self.status.status != RemoteConfigStatuses::Unset as i32
        {
            return false;
        }
        if rc.config.is_none() {
            // A hash without a body: nothing to apply.
            return false;
        }
        let hash_text: String = rc
            .config_hash
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let outcome = match validate_offer(&self.ctx, &rc) {
            Ok(applied) => {
                let tree = applied.tree.clone();
                match rt.apply(applied).await {
                    Ok(()) => Ok(tree),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        self.status.last_remote_config_hash = rc.config_hash.clone();
        match outcome {
            Ok(tree) => {
                tracing::info!(hash = %hash_text, "remote configuration applied");
                // Restarting the pipelines ran start-up code again.
                tokio::spawn(crate::startup_pages::release_later(CancellationToken::new()));
                if let Err(e) = state::save_remote_config(&self.ctx.state_dir, &rc) {
                    tracing::warn!(error = %e, "cannot save the remote configuration; a restart runs the previous one");
                }
                self.status.status = RemoteConfigStatuses::Applied as i32;
                self.status.error_message.clear();
                self.effective = effective(&tree);
                self.effective_dirty = true;
            }
            Err(e) => {
                tracing::warn!(hash = %hash_text, error = %e, "remote configuration refused; the previous one keeps running");
                self.status.status = RemoteConfigStatuses::Failed as i32;
                self.status.error_message = e;
            }
        }
        self.status_dirty = true;
        true
    }

    fn disconnect_message(&mut self) -> AgentToServer {
        self.seq += 1;
        AgentToServer {
            instance_uid: self.uid.to_vec(),
            sequence_num: self.seq,
            capabilities: CAPABILITIES,
            agent_disconnect: Some(AgentDisconnect {}),
            ..Default::default()
        }
    }

    /// Talks to the server until `stop` is cancelled; then says goodbye.
    pub(crate) async fn run(mut self, rt: &mut Runtime, stop: CancellationToken) {
        let start_ns = now_ns();
        let endpoint = self.ctx.control.endpoint.clone();
        tracing::info!(endpoint = %endpoint.url, instance_uid = %uuid_text(&self.uid), "opamp client starting");
        match endpoint.transport {
            Transport::WebSocket => self.run_ws(rt, &stop, start_ns).await,
            Transport::Http => self.run_http(rt, &stop, start_ns).await,
        }
    }

    async fn pause(stop: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = stop.cancelled() => false,
        }
    }

    async fn run_ws(&mut self, rt: &mut Runtime, stop: &CancellationToken, start_ns: u64) {
        let ep = self.ctx.control.endpoint.clone();
        let heartbeat = self.ctx.control.heartbeat;
        let mut attempt = 0u32;
        loop {
            let credential = rt.credential();
            let connected = tokio::select! {
                c = WsSession::connect(&ep, &self.ctx.tls, credential.as_ref()) => c,
                () = stop.cancelled() => return,
            };
            let mut session = match connected {
                Ok(s) => s,
                Err(e) => {
                    attempt += 1;
                    let wait = wait_for(&e, attempt);
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(endpoint = %ep.url, error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "cannot reach the opamp server");
                    }
                    if !Self::pause(stop, wait).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!(endpoint = %ep.url, "connected to the opamp server");
            self.full_state = true;
            let mut ticker = tokio::time::interval(heartbeat);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once: the first message carries the full state.
            let (error, wait): (TransportError, Option<Duration>) = loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        let bye = self.disconnect_message();
                        let _ = tokio::time::timeout(Duration::from_secs(2), session.send(&bye)).await;
                        session.close().await;
                        return;
                    }
                    _ = ticker.tick() => {
                        let msg = self.message(rt, start_ns);
                        if let Err(e) = session.send(&msg).await {
                            self.unsent();
                            break (e, None);
                        }
                    }
                    received = session.recv() => {
                        let msg = match received {
                            Ok(m) => m,
                            Err(e) => { break (e, None); }
                        };
                        attempt = 0;
                        match self.handle(msg, rt, &mut attempt).await {
                            Next::Wait => {}
                            Next::SendNow => {
                                let msg = self.message(rt, start_ns);
                                if let Err(e) = session.send(&msg).await {
                                    self.unsent();
                                    break (e, None);
                                }
                            }
                            Next::RetryAfter(d) => {
                                break (TransportError::Closed, Some(d));
                            }
                        }
                    }
                }
            };
            attempt += 1;
            let wait = wait.unwrap_or_else(|| wait_for(&error, attempt));
            tracing::warn!(endpoint = %ep.url, error = %error, retry_in_ms = wait.as_millis() as u64, "opamp connection lost");
            session.close().await;
            if !Self::pause(stop, wait).await {
                return;
            }
        }
    }

    async fn run_http(&mut self, rt: &mut Runtime, stop: &CancellationToken, start_ns: u64) {
        let ep = self.ctx.control.endpoint.clone();
        let heartbeat = self.ctx.control.heartbeat;
        let mut attempt = 0u32;
        let mut immediate = 0u32;
        loop {
            let msg = self.message(rt, start_ns);
            let credential = rt.credential();
            let answer = tokio::select! {
                a = transport::post(&ep, &self.ctx.tls, credential.as_ref(), &msg) => a,
                () = stop.cancelled() => break,
            };
            let wait = match answer {
                Ok(reply) => {
                    attempt = 0;
                    match self.handle(reply, rt, &mut attempt).await {
                        Next::SendNow if immediate < MAX_IMMEDIATE_SENDS => {
                            immediate += 1;
                            continue;
                        }
                        Next::RetryAfter(d) => {
                            self.unsent();
                            d
                        }
                        _ => heartbeat,
                    }
                }
                Err(e) => {
                    self.unsent();
                    attempt += 1;
                    let wait = wait_for(&e, attempt);
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(endpoint = %ep.url, error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "opamp exchange failed");
                    }
                    wait
                }
            };
            immediate = 0;
            if !Self::pause(stop, wait).await {
                break;
            }
        }
        let bye = self.disconnect_message();
        let credential = rt.credential();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            transport::post(&ep, &self.ctx.tls, credential.as_ref(), &bye),
        )
        .await;
    }
}

/// How long to wait after a failed exchange: the server's retry-after when it gave
/// one, else the backoff.
fn wait_for(e: &TransportError, attempt: u32) -> Duration {
    let backoff = crate::export::backoff(attempt, RETRY_INITIAL, RETRY_MAX);
    match e {
        TransportError::Busy {
            retry_after: Some(d),
            ..
        } => (*d).min(RETRY_AFTER_MAX),
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_the_promised_ones() {
        assert_eq!(CAPABILITIES, 0x1 | 0x2 | 0x4 | 0x800 | 0x1000);
    }

    #[test]
    fn description_identifies_the_agent() {
        let d = description(
            &[0xab; 16],
            &BTreeMap::from([("env".to_string(), "prod".to_string())]),
        );
        let keys = |v: &[KeyValue]| v.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(&d.identifying_attributes),
            ["service.name", "service.version", "service.instance.id"]
        );
        assert_eq!(
            keys(&d.non_identifying_attributes),
            ["host.name", "os.type", "host.arch", "env"]
        );
        assert_eq!(
            d.identifying_attributes[2].value,
            kv("x", "abababab-abab-abab-abab-abababababab").value
        );
    }

    #[test]
    fn health_names_the_failing_source() {
        let h = component_health(
            &[
                SourceHealth {
                    name: "exporter".into(),
                    error: None,
                    started_ns: 1,
                },
                SourceHealth {
                    name: "receiver.otlp.grpc".into(),
                    error: Some("address in use".into()),
                    started_ns: 2,
                },
            ],
            0,
        );
        assert!(!h.healthy);
        assert_eq!(h.last_error, "receiver.otlp.grpc: address in use");
        assert!(h.component_health_map["exporter"].healthy);
        assert_eq!(
            h.component_health_map["receiver.otlp.grpc"].last_error,
            "address in use"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let busy = |s| TransportError::Busy {
            status: 503,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(wait_for(&busy(7), 1), Duration::from_secs(7));
        assert_eq!(wait_for(&busy(100_000), 1), RETRY_AFTER_MAX);
        for attempt in 1..30 {
            assert!(wait_for(&TransportError::Closed, attempt) <= RETRY_MAX);
        }
    }
}
