//! Reloading the collector's own configuration while it runs: on `SIGHUP` and on
//! `POST /api/v1/status/config/reload` the file, the `VANTAGE_*` variables captured at
//! start and the flags are layered again exactly as at start ([`ConfigSource`]).
//!
//! A configuration that does not parse or validate is refused as a whole and the
//! running one stays; so is one whose Alertmanager configuration file does not read
//! or validate. Otherwise the settings that can change live are taken (rate limits,
//! CORS origins, the query timeout, session and access-token lifetimes, `/metrics`
//! protection, the log filter, the secrets keys, retention, request-size and record
//! limits, every `alerting.*` setting; rule files and the Alertmanager file are
//! re-read), and every other change is reported as `restart_required` and keeps its old
//! value. The effective configuration is one `Arc<Config>` swapped whole ([`Live`]): a
//! request sees the old one or the new one, never half of each. Components that do not
//! read [`Live`] per use are told ([`ReloadTargets`]). Established connections are not
//! touched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, FlagOverrides};
use crate::telemetry::{ReloadLabels, Telemetry};

/// Where the configuration came from at start, so a reload layers it the same way.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// `--config`.
    pub file: Option<PathBuf>,
    /// The `VANTAGE_*` variables as they were at start (a process cannot see its
    /// environment change, so these stay).
    pub env: BTreeMap<String, String>,
    /// The command-line flags.
    pub flags: FlagOverrides,
}

impl ConfigSource {
    /// Loads and validates the configuration (blocking: reads the file).
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), &self.env, &self.flags)
    }

    /// Where from, for the status page: the file, and the names (never the values) of
    /// the variables and flags that were given.
    pub fn describe(&self) -> Value {
        let f = &self.flags;
        let flags: Vec<&str> = [
            ("--data-dir", f.data_dir.is_some()),
            ("--otlp-grpc", f.otlp_grpc.is_some()),
            ("--otlp-http", f.otlp_http.is_some()),
            ("--api", f.api.is_some()),
            ("--log-format", f.log_format.is_some()),
            ("--insecure-no-auth", f.insecure_no_auth),
            ("--rules-dir", f.rules_dir.is_some()),
            ("--alertmanager-config", f.alertmanager_config.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        serde_json::json!({
            "file": self.file.as_ref().map(|p| p.display().to_string()),
            "env": self.env.keys().collect::<Vec<_>>(),
            "flags": flags,
        })
    }
}

/// The configuration in effect, swapped whole on reload.
#[derive(Debug)]
pub struct Live {
    config: RwLock<Arc<Config>>,
}

impl Live {
    /// Starts with `config`.
    pub fn new(config: Config) -> Self {
        Live {
            config: RwLock::new(Arc::new(config)),
        }
    }

    /// The configuration now; hold the `Arc` for a whole request to see one version.
    pub fn get(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, config: Config) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }
}

/// What one reload did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// `success` or `failure`.
    pub result: &'static str,
    /// `sighup` or `api`.
    pub trigger: &'static str,
    /// When (RFC 3339).
    pub at: String,
    /// Keys whose new value is in effect.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their old value until a restart.
    pub restart_required: Vec<String>,
    /// Why the configuration was refused (for `failure`).
    pub error: Option<String>,
}

/// Sets the collector's log filter (installed by `main`, which owns the subscriber).
pub type LogFilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_FILTER: std::sync::OnceLock<LogFilterSetter> = std::sync::OnceLock::new();

/// Lets reloads change the log filter; `main` calls this once after installing the
/// subscriber. Without it, `log_level` changes take effect at the next start.
pub fn set_log_filter_setter(setter: LogFilterSetter) {
    let _ = LOG_FILTER.set(setter);
}

/// What a reload acts on besides the configuration itself.
pub struct ReloadTargets {
    /// Rate limits.
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Rule files are re-read on reload, with the new `alerting.*` settings.
    pub rules: Option<Arc<crate::alerting::rules::RulesManager>>,
    /// Keys are re-read on reload (a rotation needs no restart).
    pub secrets: Option<Arc<crate::secrets::Secrets>>,
    /// Its retention changes on reload (blocks go at the next maintenance pass).
    pub tsdb: vantage_storage::metrics::tsdb::Tsdb,
    /// Its `alerting.alertmanager_config` file is re-read on reload.
    pub notifier: Arc<crate::alerting::notify::Notifier>,
    /// The link in notifications when `alerting.external_url` is not set (derived from
    /// the API address at start).
    pub default_external_url: String,
}

/// Reloads the configuration; one reload at a time.
pub struct Reloader {
    source: ConfigSource,
    live: Arc<Live>,
    loaded_at: Mutex<SystemTime>,
    last: Mutex<Option<ReloadOutcome>>,
    targets: ReloadTargets,
    telemetry: Arc<Telemetry>,
    serial: tokio::sync::Mutex<()>,
}

fn rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    crate::api::timeparse::format_time(ns)
}

/// The old configuration with every live setting taken from `new`: what is in effect
/// after a reload. The list of what may change live is this function.
///
/// Everything else waits for a restart, because it is baked into something opened or
/// bound at start: listen addresses and TLS files (the sockets and their acceptors; the
/// certificate *contents* are re-read by the TLS watcher anyway), `data_dir`, WAL
/// segment size and fsync (open segment files), the Tantivy writer heap, threads and
/// commit cadence (the indexing threads' writers), `ingest.max_inflight_bytes` (the
/// admission semaphore is sized at start; shrinking it would have to wait for the
/// requests holding it), the batch-id window (`ingest.dedup_*`: the journal is opened
/// with it), the series limit, out-of-order window, sample limit and query slots (the
/// TSDB's and the PromQL engine's options at open) and log search slots (a semaphore
/// sized at start), `auth.enabled` (the credential
/// store is opened or not), and `log_format` (the installed subscriber's formatter).
fn merge_live(old: &Config, new: &Config) -> Config {
    let mut effective = old.clone();
    effective.rates = new.rates;
    effective.cors_allowed_origins = new.cors_allowed_origins.clone();
    effective.query_timeout = new.query_timeout;
    effective.log_search_timeout = new.log_search_timeout;
    // Read when a tail opens; tails already open stay.
    effective.max_live_tails = new.max_live_tails;
    // Read per search.
    effective.max_hits_bytes = new.max_hits_bytes;
    effective.sessions = new.sessions;
    effective.protect_metrics = new.protect_metrics;
    effective.log_level = new.log_level.clone();
    effective.secrets = new.secrets.clone();
    // Read per OpAMP message by the transport.
    effective.secrets_without_tls = new.secrets_without_tls;
    // Read per request by the ingest path and the receivers.
    effective.max_request_bytes = new.max_request_bytes;
    effective.max_attributes_per_record = new.max_attributes_per_record;
    effective.max_future_skew = new.max_future_skew;
    effective.retry_after = new.retry_after;
    // The indexing threads and the TSDB maintenance read these at their next pass.
    effective.retention_logs = new.retention_logs;
    effective.retention_metrics = new.retention_metrics;
    effective.retention_traces = new.retention_traces;
    // The rules manager and the notifier are told (see `Reloader::reload`).
    effective.alerting = new.alerting.clone();
    effective
}

/// Leaf paths (`limits.query_requests_per_second`) where `a` and `b` differ.
pub(crate) fn changed_paths(a: &Value, b: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &path,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

impl Reloader {
    /// A reloader of `live`, loaded from `source`.
    pub fn new(
        source: ConfigSource,
        live: Arc<Live>,
        targets: ReloadTargets,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let now = SystemTime::now();
        telemetry.config.last_reload_successful.set(1);
        telemetry.config.last_reload_success_timestamp_seconds.set(
            now.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        Reloader {
            source,
            live,
            loaded_at: Mutex::new(now),
            last: Mutex::new(None),
            targets,
            telemetry,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in effect.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Where the configuration comes from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// When the configuration in effect was loaded.
    pub fn loaded_at(&self) -> String {
        rfc3339(
            *self
                .loaded_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The last reload's outcome, if there was one.
    pub fn last(&self) -> Option<ReloadOutcome> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn finish(&self, outcome: ReloadOutcome) -> ReloadOutcome {
        let c = &self.telemetry.config;
        c.reloads
            .get_or_create(&ReloadLabels {
                result: outcome.result,
            })
            .inc();
        if outcome.result == "success" {
            c.last_reload_successful.set(1);
            c.last_reload_success_timestamp_seconds.set(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            tracing::info!(
                trigger = outcome.trigger,
                applied = ?outcome.applied,
                restart_required = ?outcome.restart_required,
                "configuration reloaded"
            );
        } else {
            c.last_reload_successful.set(0);
            tracing::error!(
                trigger = outcome.trigger,
                error = outcome.error.as_deref().unwrap_or(""),
                "configuration reload refused; the running configuration stays"
            );
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome.clone());
        outcome
    }

    /// Re-reads the configuration and applies what can change live.
    pub async fn reload(&self, trigger: &'static str) -> ReloadOutcome {
        let _one_at_a_time = self.serial.lock().await;
        let failure = |error: String| ReloadOutcome {
            result: "failure",
            trigger,
            at: rfc3339(SystemTime::now()),
            applied: Vec::new(),
            restart_required: Vec::new(),
            error: Some(error),
        };
        let old = self.live.get();
        let source = self.source.clone();
        let secrets = self.targets.secrets.clone();
        let data_dir = old.data_dir.clone();
        // Loading reads files (config, keys, the Alertmanager file): off the async
        // workers. Any of them bad refuses the whole reload.
        let loaded = tokio::task::spawn_blocking(move || {
            let new = source.load().map_err(|e| e.to_string())?;
            let keys = match secrets {
                Some(_) => Some(
                    crate::secrets::KeyRing::load(&new.secrets, &data_dir)
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            let am = match &new.alerting.alertmanager_config {
                Some(path) => {
                    let (config, text) = crate::alerting::notify::load_config_file(path)?;
                    Some((path.clone(), text, config))
                }
                None => None,
            };
            Ok::<_, String>((new, keys, am))
        })
        .await;
        let (new, keys, am) = match loaded {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return self.finish(failure(e)),
            Err(e) => return self.finish(failure(format!("reload task failed: {e}"))),
        };
        let effective = merge_live(&old, &new);
        let (old_tree, eff_tree, new_tree) = (
            crate::api::status_config::render(&old),
            crate::api::status_config::render(&effective),
            crate::api::status_config::render(&new),
        );
        let mut applied = changed_paths(&old_tree, &eff_tree);
        if old.secrets.key != effective.secrets.key && !applied.iter().any(|p| p == "secrets.key") {
            applied.push("secrets.key".into());
        }
        // The Alertmanager file's contents count as a change of the setting naming it.
        let notifier = &self.targets.notifier;
        let am_changed =
            notifier.file_config_differs(am.as_ref().map(|(p, t, _)| (p.as_path(), t.as_str())));
        if am_changed && !applied.iter().any(|p| p == "alerting.alertmanager_config") {
            applied.push("alerting.alertmanager_config".into());
        }
        let restart_required = changed_paths(&eff_tree, &new_tree);
        if effective.log_level != old.log_level
            && let Some(set) = LOG_FILTER.get()
        {
            let filter = effective
                .log_level
                .clone()
                .or_else(|| self.source.env.get("VANTAGE_LOG").cloned())
                .unwrap_or_else(|| "info".to_string());
            if let Err(e) = set(&filter) {
                tracing::warn!(filter = %filter, error = %e, "log filter not changed");
            }
        }
        self.targets.limiter.set_rates(effective.rates);
        if let (Some(secrets), Some(keys)) = (&self.targets.secrets, keys) {
            secrets.set_keys(keys);
        }
        self.targets.tsdb.set_retention_ms(
            i64::try_from(effective.retention_metrics.as_millis()).unwrap_or(i64::MAX),
        );
        let external_url = effective
            .alerting
            .external_url
            .clone()
            .unwrap_or_else(|| self.targets.default_external_url.clone());
        notifier.set_external_url(external_url.clone());
        if am_changed && let Err(e) = notifier.set_file_config(am).await {
            tracing::warn!(error = %e, "alertmanager configuration not changed");
        }
        if let Some(rules) = &self.targets.rules {
            let mut options = rules.options();
            options.rules_dir = effective.alerting.rules_dir.clone();
            options.default_interval = effective.alerting.evaluation_interval;
            options.query_offset = effective.alerting.query_offset;
            options.query_timeout = effective.query_timeout;
            options.external_url = external_url;
            rules.set_options(options);
        }
        self.live.set(effective);
        *self
            .loaded_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = SystemTime::now();
        if let Some(rules) = self.targets.rules.clone() {
            // Rule files are polled anyway; a reload re-reads them now, from the new
            // directory, and restarts groups whose interval changed.
            let _ = tokio::task::spawn_blocking(move || rules.resync()).await;
        }
        self.finish(ReloadOutcome {
            result: "success",
            trigger,
            at: rfc3339(SystemTime::now()),
            applied,
            restart_required,
            error: None,
        })
    }
}

/// Reloads on every `SIGHUP` until `shutdown`.
pub fn spawn_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        // Registered here, before returning, so a SIGHUP from now on reloads instead of
        // taking the default action (terminating the process).
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the API only");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    got = hup.recv() => {
                        if got.is_none() {
                            break;
                        }
                        reloader.reload("sighup").await;
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (reloader, shutdown);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(Some(&path), &BTreeMap::new(), &FlagOverrides::default()).unwrap()
    }

    #[test]
    fn live_settings_are_taken_and_the_rest_waits_for_a_restart() {
        let old = load("limits:\n  query_requests_per_second: 5\nlisten:\n  api: 127.0.0.1:7070\n");
        let new = load(concat!(
            "limits:\n  query_requests_per_second: 1\nlisten:\n  api: 127.0.0.1:7071\n",
            "retention:\n  logs: 9d\n  metrics: 2h\n  traces: 3d\n",
            "ingest:\n  max_request_bytes: 4096\n  max_inflight_bytes: 8192\n",
            "alerting:\n  evaluation_interval: 5s\n  rules_dir: /r\n",
            "auth:\n  access_token_ttl: 1m\n",
            "wal:\n  segment_max_bytes: 1048576\n",
            "logs:\n  search_timeout: 20s\n  max_concurrent_searches: 2\n  max_live_tails: 3\n  max_hits_bytes: 65536\n",
        ));
        let eff = merge_live(&old, &new);
        assert_eq!(eff.rates.queries_per_tenant, 1);
        assert_eq!(eff.api.port(), 7070);
        assert_eq!(eff.max_request_bytes, 4096);
        assert_eq!(eff.max_inflight_bytes, old.max_inflight_bytes);
        let render = crate::api::status_config::render;
        assert_eq!(
            changed_paths(&render(&old), &render(&eff)),
            vec![
                "alerting.evaluation_interval",
                "alerting.rules_dir",
                "auth.access_token_ttl",
                "ingest.max_request_bytes",
                "limits.query_requests_per_second",
                "logs.max_hits_bytes",
                "logs.max_live_tails",
                "logs.search_timeout",
                "retention.logs",
                "retention.metrics",
                "retention.traces",
            ]
        );
        assert_eq!(
            changed_paths(&render(&eff), &render(&new)),
            vec![
                "ingest.max_inflight_bytes",
                "listen.api",
                "logs.max_concurrent_searches",
                "wal.segment_max_bytes"
            ]
        );
    }

    #[test]
    fn changed_paths_walks_nested_objects() {
        let a = serde_json::json!({"a": {"b": 1, "c": [1]}, "d": null});
        let b = serde_json::json!({"a": {"b": 1, "c": [2]}, "e": 1});
        assert_eq!(changed_paths(&a, &b), vec!["a.c", "e"]);
    }
}
