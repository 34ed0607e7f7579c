//! The notifier: an embedded Alertmanager. Alerts arrive as [`AlertBatch`]es from the
//! rule evaluator and from `POST /api/v2/alerts`; the [`dispatch`]er routes, groups,
//! inhibits, silences and deduplicates them per tenant with the tenant's Alertmanager
//! configuration ([`config`]); [`deliver`] sends each notification in its own task.
//! The notification log, silences and API-set configurations live in the metadata
//! database, so a restart neither forgets a silence nor repeats a notification.

pub mod config;
pub mod deliver;
pub mod dispatch;
pub mod matchers;
pub mod payload;
pub mod silence;
pub mod subscribe;
pub mod template;
pub mod timeinterval;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vantage_storage::meta::{DeliveryStatus, MetaError, MetaStore, NotificationRow, SilenceRow};

use self::config::AmConfig;
use self::deliver::{Deliverer, Delivery, RetryPolicy};
use self::dispatch::{AlertState, Command, Dispatcher};
use self::payload::Data;
use self::silence::{ApiMatcher, Silence};
use crate::alerting::{Alert, AlertBatch};
use crate::telemetry::Telemetry;

/// Commands the API may queue for the dispatcher (config changes, alert listings).
const COMMAND_QUEUE: usize = 64;

/// Milliseconds since the epoch, now.
pub fn now_wall_ms() -> i64 {
    dispatch::ms_of(SystemTime::now())
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Failures of notifier operations, mapped to API errors by the caller.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request was refused; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The named silence does not exist (for this tenant).
    #[error("{0} not found")]
    NotFound(String),
    /// The operation conflicts with how the collector is configured.
    #[error("{0}")]
    Conflict(String),
    /// The metadata store failed.
    #[error("notification store: {0}")]
    Store(#[from] MetaError),
    /// The dispatcher has stopped (shutdown).
    #[error("the notifier is shutting down")]
    Unavailable,
}

/// State the dispatcher and the API share: configurations and silences per tenant.
pub struct Shared {
    configs: RwLock<HashMap<String, Arc<AmConfig>>>,
    empty: Arc<AmConfig>,
    silences: RwLock<HashMap<String, Vec<Arc<Silence>>>>,
    subscriptions: RwLock<HashMap<String, Vec<Arc<subscribe::Subscription>>>>,
    /// Link to the collector in notifications (changes on reload).
    external_url: RwLock<String>,
}

impl Shared {
    /// Link to the collector in notifications, as configured now.
    pub fn external_url(&self) -> String {
        self.external_url
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A tenant's configuration (the built-in empty one when it has none).
    pub fn config(&self, tenant: &str) -> Arc<AmConfig> {
        self.configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }

    /// A tenant's silences, expired ones included.
    pub fn silences(&self, tenant: &str) -> Vec<Arc<Silence>> {
        self.silences
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// A tenant's subscriptions, muted ones included.
    pub fn subscriptions(&self, tenant: &str) -> Vec<Arc<subscribe::Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }
}

/// How to start the notifier.
pub struct NotifierOptions {
    /// The metadata database (`None`: nothing persists; tests only).
    pub store: Option<Arc<MetaStore>>,
    /// The `alertmanager.yml` of tenant `default`.
    pub default_config_file: Option<std::path::PathBuf>,
    /// Link to the collector in notifications.
    pub external_url: String,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Delivery retries.
    pub retry: RetryPolicy,
}

/// The handle the API uses.
pub struct Notifier {
    shared: Arc<Shared>,
    store: Option<Arc<MetaStore>>,
    commands: mpsc::Sender<Command>,
    alerts: mpsc::Sender<AlertBatch>,
    /// The file tenant `default`'s configuration comes from and the text last loaded
    /// from it (`None`: it is set through the API); changes on reload.
    file_config: std::sync::Mutex<Option<(std::path::PathBuf, String)>>,
    started_at: SystemTime,
}

/// Reads and validates an Alertmanager configuration file (blocking); `(config, text)`.
/// Relative paths inside it (templates, password files) are taken from its directory.
pub fn load_config_file(path: &Path) -> Result<(AmConfig, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read alertmanager configuration {}: {e}",
            path.display()
        )
    })?;
    let config = AmConfig::parse(
        &text,
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .or(Some(Path::new("."))),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config, text))
}

/// A silence as posted to the API.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    /// Set to update an existing silence.
    #[serde(default)]
    pub id: Option<String>,
    /// The matchers.
    pub matchers: Vec<ApiMatcher>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Author.
    pub created_by: String,
    /// Reason.
    pub comment: String,
}

fn parse_time(what: &str, text: &str) -> Result<i64, NotifyError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| NotifyError::Invalid(format!("{what} {text:?}: not an RFC 3339 time: {e}")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| NotifyError::Invalid(format!("{what} {text:?}: out of range")))
}

fn silence_from_row(row: &SilenceRow) -> Option<Silence> {
    let api: Vec<ApiMatcher> = serde_json::from_str(&row.matchers).ok()?;
    let matchers = Silence::compile(&api).ok()?;
    Some(Silence {
        id: row.id.clone(),
        api_matchers: api,
        matchers,
        starts_at_ms: dispatch::ms_of(row.starts_at),
        ends_at_ms: dispatch::ms_of(row.ends_at),
        created_by: row.created_by.clone(),
        comment: row.comment.clone(),
        updated_at_ms: dispatch::ms_of(row.updated_at),
    })
}

fn new_silence_id() -> Result<String, NotifyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| NotifyError::Invalid(format!("random source: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

impl Notifier {
    /// Loads configurations and silences, restores the notification log, resumes
    /// deliveries a restart interrupted, and starts the dispatcher on `alerts_rx`.
    /// `alerts_tx` is the sending half of the same channel (for the API).
    pub fn start(
        options: NotifierOptions,
        alerts_tx: mpsc::Sender<AlertBatch>,
        alerts_rx: mpsc::Receiver<AlertBatch>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Arc<Notifier>, tokio::task::JoinHandle<()>)> {
        let mut configs = HashMap::new();
        if let Some(store) = &options.store {
            for (tenant, yaml) in store.alertmanager_configs()? {
                match AmConfig::parse(&yaml, None) {
                    Ok(c) => {
                        configs.insert(tenant, Arc::new(c));
                    }
                    Err(e) => {
                        tracing::error!(tenant = %tenant, error = %e, "stored alertmanager configuration no longer valid; tenant uses none")
                    }
                }
            }
        }
        let mut file_config = None;
        if let Some(path) = &options.default_config_file {
            let (config, text) = load_config_file(path).map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(path = %path.display(), receivers = config.receivers.len(), "loaded alertmanager configuration for tenant default");
            configs.insert(
                vantage_storage::meta::DEFAULT_TENANT.to_owned(),
                Arc::new(config),
            );
            file_config = Some((path.clone(), text));
        }
        let mut silences: HashMap<String, Vec<Arc<Silence>>> = HashMap::new();
        if let Some(store) = &options.store {
            for row in store.all_silences()? {
                match silence_from_row(&row) {
                    Some(s) => silences
                        .entry(row.tenant.clone())
                        .or_default()
                        .push(Arc::new(s)),
                    None => tracing::warn!(id = %row.id, "stored silence unreadable; ignored"),
                }
            }
        }
        let mut subscriptions: HashMap<String, Vec<Arc<subscribe::Subscription>>> = HashMap::new();
        if let Some(store) = &options.store {
            for (tenant, s) in subscribe::load(store.all_subscriptions()?) {
                subscriptions.entry(tenant).or_default().push(s);
            }
        }
        let shared = Arc::new(Shared {
            configs: RwLock::new(configs),
            empty: Arc::new(AmConfig::empty()),
            silences: RwLock::new(silences),
            subscriptions: RwLock::new(subscriptions),
            external_url: RwLock::new(options.external_url),
        });
        let deliverer = Deliverer::new(options.store.clone(), options.telemetry, options.retry);
        if let Some(store) = &options.store {
            for row in store.pending_notifications()? {
                resume(&shared, &deliverer, store, row);
            }
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let dispatcher = Dispatcher::new(shared.clone(), options.store.clone(), deliverer);
        let task = tokio::spawn(dispatcher.run(alerts_rx, commands_rx, shutdown));
        let notifier = Notifier {
            shared,
            store: options.store,
            commands: commands_tx,
            alerts: alerts_tx,
            file_config: std::sync::Mutex::new(file_config),
            started_at: SystemTime::now(),
        };
        Ok((Arc::new(notifier), task))
    }

    /// The sending half of the alert channel: the rule evaluator sends its
    /// [`AlertBatch`]es here.
    pub fn alert_sender(&self) -> mpsc::Sender<AlertBatch> {
        self.alerts.clone()
    }

    /// When the notifier started (for `GET /api/v2/status`).
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// A tenant's configuration.
    pub fn config(&self, tenant: &str) -> Arc<AmConfig> {
        self.shared.config(tenant)
    }

    /// Queues alerts of `tenant` for the dispatcher; waits while the queue is full.
    pub async fn post_alerts(&self, tenant: &str, alerts: Vec<Alert>) -> Result<(), NotifyError> {
        self.alerts
            .send(AlertBatch {
                tenant: tenant.to_owned(),
                alerts,
            })
            .await
            .map_err(|_| NotifyError::Unavailable)
    }

    /// The tenant's alerts with their pipeline state.
    pub async fn alerts(&self, tenant: &str) -> Result<Vec<AlertState>, NotifyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Alerts {
                tenant: tenant.to_owned(),
                reply,
            })
            .await
            .map_err(|_| NotifyError::Unavailable)?;
        rx.await.map_err(|_| NotifyError::Unavailable)
    }

    /// Validates and stores a tenant's configuration, then regroups its alerts.
    pub async fn set_config(&self, tenant: &str, yaml: String) -> Result<(), NotifyError> {
        let file_configured = self
            .file_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if file_configured && tenant == vantage_storage::meta::DEFAULT_TENANT {
            return Err(NotifyError::Conflict(
                "tenant default's alertmanager configuration comes from the file given by --alertmanager-config; edit that file".into(),
            ));
        }
        let config =
            AmConfig::parse(&yaml, None).map_err(|e| NotifyError::Invalid(e.to_string()))?;
        if let Some(store) = self.store.clone() {
            let t = tenant.to_owned();
            tokio::task::spawn_blocking(move || {
                store.set_alertmanager_config(&t, &yaml, SystemTime::now())
            })
            .await
            .map_err(|_| NotifyError::Unavailable)??;
        }
        self.shared
            .configs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_owned(), Arc::new(config));
        self.commands
            .send(Command::ConfigChanged {
                tenant: tenant.to_owned(),
            })
            .await
            .map_err(|_| NotifyError::Unavailable)?;
        tracing::info!(tenant = %tenant, "alertmanager configuration updated");
        Ok(())
    }

    /// Whether `loaded` (a file and its text, or none) differs from the file
    /// configuration in effect: a reload applies and reports only a change.
    pub fn file_config_differs(&self, loaded: Option<(&Path, &str)>) -> bool {
        let current = self
            .file_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|(p, t)| (p.as_path(), t.as_str())) != loaded
    }

    /// Takes a new configuration of tenant `default` from its file (a reload; validated
    /// by [`load_config_file`] before), or, with `None`, goes back to the one set
    /// through the API, if any. Its alerts are regrouped; the notification log stays,
    /// so nothing is sent twice.
    pub async fn set_file_config(
        &self,
        loaded: Option<(std::path::PathBuf, String, AmConfig)>,
    ) -> Result<(), NotifyError> {
        let tenant = vantage_storage::meta::DEFAULT_TENANT;
        let config = match loaded {
            Some((path, text, config)) => {
                tracing::info!(path = %path.display(), receivers = config.receivers.len(), "alertmanager configuration of tenant default reloaded");
                *self
                    .file_config
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((path, text));
                Some(config)
            }
            None => {
                *self
                    .file_config
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                let stored = match self.store.clone() {
                    Some(store) => {
                        tokio::task::spawn_blocking(move || store.alertmanager_configs())
                            .await
                            .map_err(|_| NotifyError::Unavailable)??
                    }
                    None => Vec::new(),
                };
                stored
                    .into_iter()
                    .find(|(t, _)| t == tenant)
                    .and_then(|(_, yaml)| AmConfig::parse(&yaml, None).ok())
            }
        };
        {
            let mut configs = self
                .shared
                .configs
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            match config {
                Some(c) => configs.insert(tenant.to_owned(), Arc::new(c)),
                None => configs.remove(tenant),
            };
        }
        self.commands
            .send(Command::ConfigChanged {
                tenant: tenant.to_owned(),
            })
            .await
            .map_err(|_| NotifyError::Unavailable)
    }

    /// Changes the link to the collector in notifications (a reload).
    pub fn set_external_url(&self, url: String) {
        *self
            .shared
            .external_url
            .write()
            .unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// The tenant's silences.
    pub fn silences(&self, tenant: &str) -> Vec<Arc<Silence>> {
        self.shared.silences(tenant)
    }

    /// Creates (or, with an id, replaces) a silence; returns its id.
    pub async fn put_silence(
        &self,
        tenant: &str,
        p: PostableSilence,
    ) -> Result<String, NotifyError> {
        let matchers = Silence::compile(&p.matchers)
            .map_err(|e| NotifyError::Invalid(format!("matchers: {e}")))?;
        let starts = parse_time("startsAt", &p.starts_at)?;
        let ends = parse_time("endsAt", &p.ends_at)?;
        if ends < starts {
            return Err(NotifyError::Invalid("endsAt is before startsAt".into()));
        }
        let now = now_wall_ms();
        if ends <= now {
            return Err(NotifyError::Invalid("endsAt is in the past".into()));
        }
        if p.created_by.len() > silence::MAX_SILENCE_TEXT
            || p.comment.len() > silence::MAX_SILENCE_TEXT
        {
            return Err(NotifyError::Invalid(format!(
                "createdBy and comment are limited to {} bytes",
                silence::MAX_SILENCE_TEXT
            )));
        }
        if p.created_by.is_empty() {
            return Err(NotifyError::Invalid("createdBy is empty".into()));
        }
        if p.comment.is_empty() {
            return Err(NotifyError::Invalid("comment is empty".into()));
        }
        let id = match p.id.filter(|i| !i.is_empty()) {
            Some(id) => {
                if !self.silences(tenant).iter().any(|s| s.id == id) {
                    return Err(NotifyError::NotFound(format!("silence {id:?}")));
                }
                id
            }
            None => new_silence_id()?,
        };
        let silence = Silence {
            id: id.clone(),
            api_matchers: p.matchers,
            matchers,
            starts_at_ms: starts,
            ends_at_ms: ends,
            created_by: p.created_by,
            comment: p.comment,
            updated_at_ms: now,
        };
        self.save_silence(tenant, silence).await?;
        Ok(id)
    }

    /// Expires a silence now.
    pub async fn expire_silence(&self, tenant: &str, id: &str) -> Result<(), NotifyError> {
        let current = self
            .silences(tenant)
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| NotifyError::NotFound(format!("silence {id:?}")))?;
        let now = now_wall_ms();
        let mut s = (*current).clone();
        if s.ends_at_ms <= now {
            return Ok(());
        }
        s.ends_at_ms = now;
        s.starts_at_ms = s.starts_at_ms.min(now);
        s.updated_at_ms = now;
        self.save_silence(tenant, s).await
    }

    async fn save_silence(&self, tenant: &str, s: Silence) -> Result<(), NotifyError> {
        if let Some(store) = self.store.clone() {
            let row = SilenceRow {
                id: s.id.clone(),
                tenant: tenant.to_owned(),
                matchers: serde_json::to_string(&s.api_matchers)
                    .map_err(|e| NotifyError::Invalid(e.to_string()))?,
                starts_at: system_time(s.starts_at_ms),
                ends_at: system_time(s.ends_at_ms),
                created_by: s.created_by.clone(),
                comment: s.comment.clone(),
                updated_at: system_time(s.updated_at_ms),
            };
            tokio::task::spawn_blocking(move || store.upsert_silence(&row))
                .await
                .map_err(|_| NotifyError::Unavailable)??;
        }
        let mut all = self
            .shared
            .silences
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = all.entry(tenant.to_owned()).or_default();
        list.retain(|x| x.id != s.id);
        list.push(Arc::new(s));
        Ok(())
    }

    /// The tenant's delivery log, newest first.
    pub async fn notifications(
        &self,
        tenant: &str,
        receiver: Option<String>,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, NotifyError> {
        let Some(store) = self.store.clone() else {
            return Ok(Vec::new());
        };
        let t = tenant.to_owned();
        Ok(tokio::task::spawn_blocking(move || {
            store.list_notifications(&t, receiver.as_deref(), status, limit)
        })
        .await
        .map_err(|_| NotifyError::Unavailable)??)
    }
}

/// Restarts the delivery of a notification a restart interrupted.
fn resume(shared: &Shared, deliverer: &Deliverer, store: &MetaStore, row: NotificationRow) {
    let config = shared.config(&row.tenant);
    let integration = match row.integration.strip_prefix(subscribe::INTEGRATION_PREFIX) {
        Some(id) => shared
            .subscriptions(&row.tenant)
            .into_iter()
            .find(|s| s.row.id == id)
            .zip(config.smtp.as_ref())
            .map(|(s, smtp)| s.integration(smtp)),
        None => config
            .receivers
            .get(&row.receiver)
            .and_then(|r| r.integrations.iter().find(|i| i.name == row.integration))
            .cloned(),
    };
    let data: Option<Data> = serde_json::from_str(&row.content).ok();
    match (integration, data) {
        (Some(integration), Some(data)) => {
            tracing::info!(tenant = %row.tenant, integration = %row.integration, group_key = %row.group_key, "resuming an interrupted notification");
            deliverer.spawn(Delivery {
                id: Some(row.id),
                tenant: row.tenant,
                integration,
                data,
                attempts_before: row.attempts,
            });
        }
        _ => {
            let reason = "receiver no longer configured; not resumed after restart";
            if let Err(e) = store.update_delivery(
                row.id,
                DeliveryStatus::Failed,
                row.attempts,
                Some(reason),
                SystemTime::now(),
            ) {
                tracing::warn!(error = %e, "cannot update the delivery log");
            }
        }
    }
}

#[cfg(test)]
mod tests;
