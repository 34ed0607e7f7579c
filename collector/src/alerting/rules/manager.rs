//! The rules manager: which groups exist (rule files in `alerting.rules_dir`, API
//! groups in the metadata store), one task per group evaluating on its interval, the
//! alert state persisted after each evaluation that changed it and restored at start.
//!
//! ```text
//! rules_dir (polled every 2 s) ─┐
//!                               ├─► desired groups ─► sync: start / replace / stop tasks
//! API (meta store rule_groups) ─┘
//! group task (interval) ─► spawn_blocking: PromQL / log counts, states, templates,
//!     write_generated (recording output, ALERTS), persist changed states
//!   ─► AlertBatch ─► channel (ALERT_CHANNEL_BATCHES) ─► notifier
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vantage_proto::prom::Labels;
use vantage_storage::logs::LogStore;
use vantage_storage::meta::MetaStore;
use vantage_storage::metrics::promql::{Engine, Value};
use vantage_storage::metrics::tsdb::Tsdb;

use super::file::{self, RuleFileError, RuleGroup};
use super::group::{self, CompiledGroup, EvalEnv, GroupRuntime};
use super::state::ActiveAlert;
use crate::alerting::AlertBatch;
use crate::ingest::Ingest;
use crate::telemetry::{RuleGroupLabels, Telemetry};

/// How often the rules directory is checked for changes.
pub const RULES_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Prometheus's `--rules.alert.resend-delay` default.
pub const RESEND_DELAY: Duration = Duration::from_secs(60);
/// The tenant of rule files directly in the rules directory.
pub const DEFAULT_TENANT: &str = "default";
/// Largest rule file or API group body read, in bytes: rule files are small.
pub const MAX_RULE_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What the manager needs to run.
pub struct RulesDeps {
    /// The metrics store rules query.
    pub tsdb: Tsdb,
    /// PromQL evaluation.
    pub engine: Arc<Engine>,
    /// Log counts for log rules.
    pub logs: LogStore,
    /// Where recording-rule output and `ALERTS` go.
    pub ingest: Arc<Ingest>,
    /// API rule groups and alert state.
    pub meta: Arc<MetaStore>,
    /// Alerts for the notifier.
    pub alerts: mpsc::Sender<AlertBatch>,
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Settings at start; [`RulesManager::set_options`] replaces them (a reload).
    pub options: RulesOptions,
}

/// Settings of rule evaluation.
#[derive(Clone, Debug)]
pub struct RulesOptions {
    /// Rule files; `None` = API rules only.
    pub rules_dir: Option<PathBuf>,
    /// Interval of groups that set none.
    pub default_interval: Duration,
    /// Queries run at `now - query_offset`, and a firing alert whose series is gone
    /// keeps firing for at least this long (late data, see the README).
    pub query_offset: Duration,
    /// Base URL of links in alerts.
    pub external_url: String,
    /// Resend delay of unchanged alerts.
    pub resend_delay: Duration,
    /// Longest a rule's query may run.
    pub query_timeout: Duration,
}

/// Where a group comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A rule file.
    File,
    /// The rules API.
    Api,
}

/// The identity of a running group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Owner.
    pub tenant: String,
    /// The file path, or the API namespace.
    pub file: String,
    /// The group name.
    pub name: String,
    /// File or API.
    pub origin: Origin,
}

impl GroupKey {
    /// `<file>;<group>`, Prometheus's name for a group (and the persistence key).
    pub fn persist_key(&self) -> String {
        match self.origin {
            Origin::File => format!("{};{}", self.file, self.name),
            Origin::Api => format!("api:{};{}", self.file, self.name),
        }
    }
}

/// A running group as the API sees it.
#[derive(Clone)]
pub struct GroupView {
    /// Identity.
    pub key: GroupKey,
    /// The rules.
    pub spec: Arc<CompiledGroup>,
    /// The latest state.
    pub runtime: Arc<Mutex<GroupRuntime>>,
}

struct Running {
    spec: Arc<CompiledGroup>,
    runtime: Arc<Mutex<GroupRuntime>>,
    cancel: CancellationToken,
}

/// A rule file's (mtime, size), tenant and the groups of its last good version.
type ScannedFile = ((SystemTime, u64), String, Vec<RuleGroup>);

#[derive(Default)]
struct FileScan {
    /// Per file: (mtime, size) and the groups of its last good version.
    files: BTreeMap<PathBuf, ScannedFile>,
    /// Whether an unreadable rules directory was reported (once, not every poll).
    dir_error_reported: bool,
}

/// Errors of the rules API.
#[derive(Debug, thiserror::Error)]
pub enum RulesApiError {
    /// The group does not validate; the message has the line and reason.
    #[error("{0}")]
    Invalid(String),
    /// No such namespace or group.
    #[error("{0}")]
    NotFound(String),
    /// The metadata store failed.
    #[error("rule storage failed: {0}")]
    Store(#[from] vantage_storage::meta::MetaError),
}

/// Loads, runs and reloads rule groups.
pub struct RulesManager {
    deps: RulesDeps,
    /// The settings in effect (`deps.options` until a reload replaces them).
    options: std::sync::RwLock<RulesOptions>,
    groups: Mutex<BTreeMap<GroupKey, Running>>,
    scan: Mutex<FileScan>,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RulesManager {
    /// A manager; nothing runs until [`RulesManager::start`].
    pub fn new(deps: RulesDeps, shutdown: CancellationToken) -> Arc<RulesManager> {
        Arc::new(RulesManager {
            options: std::sync::RwLock::new(deps.options.clone()),
            deps,
            groups: Mutex::new(BTreeMap::new()),
            scan: Mutex::new(FileScan::default()),
            shutdown,
        })
    }

    /// The settings in effect.
    pub fn options(&self) -> RulesOptions {
        self.options
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the settings (a configuration reload). The next evaluation of every
    /// group uses the new offset, timeout and URL; call [`RulesManager::resync`] after
    /// it so a new rules directory is read and groups whose interval changed restart.
    pub fn set_options(&self, options: RulesOptions) {
        *self.options.write().unwrap_or_else(PoisonError::into_inner) = options;
    }

    /// Loads every group and starts evaluating; then watches the rules directory.
    /// Call once ingest is open (rule output is written through it).
    pub async fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || this.resync()).await;
        if let Err(e) = loaded {
            tracing::warn!(error = %e, "initial rule load failed");
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RULES_POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = this.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if this.options().rules_dir.is_some() {
                    let t = this.clone();
                    let _ = tokio::task::spawn_blocking(move || t.resync()).await;
                }
            }
            for r in lock(&this.groups).values() {
                r.cancel.cancel();
            }
        })
    }

    /// Checks a YAML text as a rule file (the same validation as files and the API).
    pub fn validate_file(&self, file: &str, text: &str) -> Result<Vec<RuleGroup>, RuleFileError> {
        let logs = self.deps.logs.clone();
        let check = move |q: &str| logs.parse_query(q).map(|_| ()).map_err(|e| e.to_string());
        file::parse_rule_file(file, text, &check)
    }

    /// Every group of `tenant`, sorted by file and name, as Prometheus lists them.
    pub fn groups_of(&self, tenant: &str) -> Vec<GroupView> {
        lock(&self.groups)
            .iter()
            .filter(|(k, _)| k.tenant == tenant)
            .map(|(k, r)| GroupView {
                key: k.clone(),
                spec: r.spec.clone(),
                runtime: r.runtime.clone(),
            })
            .collect()
    }

    /// API groups of a tenant by namespace (one namespace, or all).
    pub fn api_groups(
        &self,
        tenant: &str,
        namespace: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<RuleGroup>>, RulesApiError> {
        let mut out: BTreeMap<String, Vec<RuleGroup>> = BTreeMap::new();
        for g in self.deps.meta.list_rule_groups(Some(tenant))? {
            if namespace.is_some_and(|n| n != g.namespace) {
                continue;
            }
            match self.parse_api_group(&g.namespace, &g.yaml) {
                Ok(group) => out.entry(g.namespace.clone()).or_default().push(group),
                Err(e) => {
                    tracing::warn!(tenant, namespace = %g.namespace, error = %e, "stored rule group no longer validates")
                }
            }
        }
        Ok(out)
    }

    /// Validates one group (a Cortex/Mimir ruler body: `name`, `interval`, `rules`)
    /// exactly as a rule file's group; problems are reported with their line in the
    /// body.
    pub fn parse_api_group(&self, namespace: &str, body: &str) -> Result<RuleGroup, RulesApiError> {
        // As the single item of a file's `groups`, so every check is the file's; the
        // wrapper adds two lines and two columns, taken off again below.
        let mut wrapped = String::from("groups:\n-\n");
        for line in body.lines() {
            wrapped.push_str("  ");
            wrapped.push_str(line);
            wrapped.push('\n');
        }
        let groups = self.validate_file(namespace, &wrapped).map_err(|mut e| {
            for p in &mut e.problems {
                p.line = p.line.map(|l| l.saturating_sub(2).max(1));
                p.column = p.column.map(|c| c.saturating_sub(2).max(1));
            }
            RulesApiError::Invalid(e.to_string())
        })?;
        let mut groups = groups.into_iter();
        match (groups.next(), groups.next()) {
            (Some(g), None) if !g.name.is_empty() => Ok(g),
            _ => Err(RulesApiError::Invalid(format!(
                "{namespace}: the body must be one rule group with a name"
            ))),
        }
    }

    /// Creates or replaces an API group (blocking: call from `spawn_blocking`).
    pub fn put_api_group(
        self: &Arc<Self>,
        tenant: &str,
        namespace: &str,
        body: &str,
    ) -> Result<RuleGroup, RulesApiError> {
        let group = self.parse_api_group(namespace, body)?;
        let yaml = serde_yaml_ng::to_string(&group).unwrap_or_default();
        self.deps
            .meta
            .put_rule_group(tenant, namespace, &group.name, &yaml)?;
        tracing::info!(tenant, namespace, group = %group.name, "rule group stored");
        self.resync();
        Ok(group)
    }

    /// Deletes an API group, or a whole namespace (blocking).
    pub fn delete_api_groups(
        self: &Arc<Self>,
        tenant: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(), RulesApiError> {
        let n = self.deps.meta.delete_rule_groups(tenant, namespace, name)?;
        if n == 0 {
            return Err(RulesApiError::NotFound(match name {
                Some(g) => format!("rule group {g:?} not found in namespace {namespace:?}"),
                None => format!("namespace {namespace:?} not found"),
            }));
        }
        tracing::info!(
            tenant,
            namespace,
            group = name.unwrap_or("*"),
            "rule groups deleted"
        );
        self.resync();
        Ok(())
    }

    /// Recomputes the wanted groups and starts, replaces or stops tasks (blocking).
    pub fn resync(self: &Arc<Self>) {
        let options = self.options();
        let mut desired: BTreeMap<GroupKey, RuleGroup> = BTreeMap::new();
        if let Some(dir) = options.rules_dir.clone() {
            for (path, tenant, groups) in self.scan_files(&dir) {
                for g in groups {
                    desired.insert(
                        GroupKey {
                            tenant: tenant.clone(),
                            file: path.clone(),
                            name: g.name.clone(),
                            origin: Origin::File,
                        },
                        g,
                    );
                }
            }
        }
        match self.deps.meta.list_rule_groups(None) {
            Ok(stored) => {
                for s in stored {
                    match self.parse_api_group(&s.namespace, &s.yaml) {
                        Ok(g) => {
                            desired.insert(
                                GroupKey {
                                    tenant: s.tenant,
                                    file: s.namespace,
                                    name: g.name.clone(),
                                    origin: Origin::Api,
                                },
                                g,
                            );
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stored rule group no longer validates; skipped")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read api rule groups; keeping the running ones");
                for (k, r) in lock(&self.groups).iter() {
                    if k.origin == Origin::Api {
                        desired.insert(k.clone(), r.spec.group.clone());
                    }
                }
            }
        }
        let default_ms = options.default_interval.as_millis() as i64;
        let mut groups = lock(&self.groups);
        let gone: Vec<GroupKey> = groups
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(r) = groups.remove(&k) {
                r.cancel.cancel();
                tracing::info!(tenant = %k.tenant, file = %k.file, group = %k.name, "rule group removed");
                if let Err(e) = self
                    .deps
                    .meta
                    .delete_alert_state(&k.tenant, &k.persist_key())
                {
                    tracing::warn!(error = %e, "cannot forget alert state of a removed group");
                }
            }
        }
        for (k, g) in desired {
            let existing = groups.get(&k);
            // Unchanged, and on the same interval (the default one may have changed).
            let interval_ms = g.interval_ms().unwrap_or(default_ms).max(1);
            if existing.is_some_and(|r| r.spec.group == g && r.spec.interval_ms == interval_ms) {
                continue;
            }
            let spec = Arc::new(CompiledGroup::new(g, default_ms));
            let runtime = match existing {
                Some(old) => {
                    old.cancel.cancel();
                    let prev = lock(&old.runtime).clone();
                    GroupRuntime::new(&spec, Some((&old.spec, &prev)), &BTreeMap::new())
                }
                None => GroupRuntime::new(&spec, None, &self.restore(&k)),
            };
            let running = Running {
                spec: spec.clone(),
                runtime: Arc::new(Mutex::new(runtime)),
                cancel: self.shutdown.child_token(),
            };
            tracing::info!(tenant = %k.tenant, file = %k.file, group = %k.name, rules = spec.rules.len(), interval_ms = spec.interval_ms, "rule group loaded");
            let task = GroupTask {
                manager: self.clone(),
                key: k.clone(),
                spec,
                runtime: running.runtime.clone(),
                cancel: running.cancel.clone(),
            };
            tokio::runtime::Handle::current().spawn(task.run());
            groups.insert(k, running);
        }
    }

    fn restore(&self, key: &GroupKey) -> BTreeMap<String, Vec<ActiveAlert>> {
        match self.deps.meta.load_alert_state(&key.tenant, &key.persist_key()) {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(rule, json)| match serde_json::from_str(&json) {
                    Ok(alerts) => Some((rule, alerts)),
                    Err(e) => {
                        tracing::warn!(group = %key.name, error = %e, "unreadable saved alert state; starting fresh");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::warn!(group = %key.name, error = %e, "cannot read saved alert state; starting fresh");
                BTreeMap::new()
            }
        }
    }

    /// The rule files and their groups: changed files are re-read; a file that no
    /// longer validates keeps its last good groups, and the problem is logged.
    fn scan_files(&self, dir: &Path) -> Vec<(String, String, Vec<RuleGroup>)> {
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        let is_rule_file = |p: &Path| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yml" || e == "yaml")
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            let mut scan = lock(&self.scan);
            if !scan.dir_error_reported {
                tracing::warn!(dir = %dir.display(), "cannot read the rules directory; keeping the rules loaded from it");
                scan.dir_error_reported = true;
            }
            return scan
                .files
                .iter()
                .map(|(p, (_, t, g))| (p.display().to_string(), t.clone(), g.clone()))
                .collect();
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let Some(tenant) = p.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !vantage_storage::logs::valid_tenant(tenant) {
                    continue;
                }
                if let Ok(sub) = std::fs::read_dir(&p) {
                    for f in sub.flatten() {
                        if f.path().is_file() && is_rule_file(&f.path()) {
                            found.push((f.path(), tenant.to_string()));
                        }
                    }
                }
            } else if is_rule_file(&p) {
                found.push((p, DEFAULT_TENANT.to_string()));
            }
        }
        found.sort();
        let mut scan = lock(&self.scan);
        scan.dir_error_reported = false;
        scan.files.retain(|p, _| found.iter().any(|(f, _)| f == p));
        for (path, tenant) in &found {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let stamp = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
            if scan.files.get(path).is_some_and(|(s, _, _)| *s == stamp) {
                continue;
            }
            let name = path.display().to_string();
            let text = if meta.len() > MAX_RULE_FILE_BYTES {
                Err(format!("{name}: larger than {MAX_RULE_FILE_BYTES} bytes"))
            } else {
                std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))
            };
            let parsed =
                text.and_then(|t| self.validate_file(&name, &t).map_err(|e| e.to_string()));
            match parsed {
                Ok(groups) => {
                    tracing::info!(file = %name, tenant = %tenant, groups = groups.len(), "rule file loaded");
                    scan.files
                        .insert(path.clone(), (stamp, tenant.clone(), groups));
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "rule file refused; its previous rules keep running");
                    // Remember the stamp so the same bad version is reported once,
                    // keeping the last good groups (none if it never was good).
                    let keep = scan
                        .files
                        .remove(path)
                        .map(|(_, _, g)| g)
                        .unwrap_or_default();
                    scan.files
                        .insert(path.clone(), (stamp, tenant.clone(), keep));
                }
            }
        }
        scan.files
            .iter()
            .map(|(p, (_, t, g))| (p.display().to_string(), t.clone(), g.clone()))
            .collect()
    }
}

struct GroupTask {
    manager: Arc<RulesManager>,
    key: GroupKey,
    spec: Arc<CompiledGroup>,
    runtime: Arc<Mutex<GroupRuntime>>,
    cancel: CancellationToken,
}

impl GroupTask {
    async fn run(self) {
        let interval = Duration::from_millis(self.spec.interval_ms.max(1) as u64);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let labels = RuleGroupLabels {
            tenant: self.key.tenant.clone(),
            rule_group: format!("{};{}", self.key.file, self.key.name),
        };
        let t = &self.manager.deps.telemetry.rules;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let started = tokio::time::Instant::now();
            let batch = self.evaluate().await;
            if let Some((outcome, alerts)) = batch {
                t.evaluations.get_or_create(&labels).inc_by(outcome.0);
                t.failures.get_or_create(&labels).inc_by(outcome.1);
                if !alerts.is_empty() {
                    let batch = AlertBatch {
                        tenant: self.key.tenant.clone(),
                        alerts,
                    };
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        sent = self.manager.deps.alerts.send(batch) => {
                            if sent.is_err() {
                                tracing::debug!("alert channel closed");
                            }
                        }
                    }
                }
            }
            let took = started.elapsed();
            t.last_duration_seconds
                .get_or_create(&labels)
                .set(took.as_secs_f64());
            let missed = (took.as_millis() / interval.as_millis().max(1)) as u64;
            if missed > 0 {
                t.iterations_missed.get_or_create(&labels).inc_by(missed);
                tracing::warn!(group = %self.key.name, took_ms = took.as_millis() as u64, interval_ms = interval.as_millis() as u64, "rule group evaluation took longer than its interval");
            }
        }
    }

    /// One evaluation on a blocking thread; returns (evaluations, failures) and the
    /// alerts to send.
    async fn evaluate(&self) -> Option<((u64, u64), Vec<crate::alerting::Alert>)> {
        let deps = &self.manager.deps;
        let opts = self.manager.options();
        let tsdb = deps.tsdb.clone();
        let engine = deps.engine.clone();
        let logs = deps.logs.clone();
        let ingest = deps.ingest.clone();
        let meta = deps.meta.clone();
        let key = self.key.clone();
        let spec = self.spec.clone();
        let runtime = self.runtime.clone();
        let handle = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let ts = wall_ms();
            let offset = opts.query_offset.as_millis() as i64;
            let querier = tsdb.querier(&key.tenant);
            let query = |expr: &str, t: i64| -> Result<Vec<(Labels, f64)>, String> {
                match engine
                    .instant(&querier, expr, t, Some(opts.query_timeout))
                    .map_err(|e| e.to_string())?
                {
                    Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
                    Value::Scalar { v, .. } => Ok(vec![(Labels::new(), v)]),
                    _ => Err("rule result is not a vector or scalar".to_string()),
                }
            };
            let log_count = |c: &super::logrule::LogCondition, t: i64| {
                c.count(&logs, &key.tenant, t, opts.query_timeout)
            };
            let tenant = key.tenant.clone();
            let mut write = |batch| {
                handle
                    .block_on(ingest.write_generated(&tenant, batch))
                    .map(|_| ())
                    .map_err(|e| e.message)
            };
            let mut rt = lock(&runtime).clone();
            let outcome = group::evaluate_group(
                &spec,
                &mut rt,
                EvalEnv {
                    ts_ms: ts,
                    query_ts_ms: ts - offset,
                    resolve_delay_ms: offset,
                    resend_delay_ms: opts.resend_delay.as_millis() as i64,
                    external_url: &opts.external_url,
                    query: &query,
                    log_count: &log_count,
                    write: &mut write,
                },
            );
            // Recorded before anything is sent, so a restart never sends twice.
            for &i in &outcome.changed {
                let (Some(rule), Some(st)) = (spec.rules.get(i), rt.rules.get(i)) else {
                    continue;
                };
                let json = if st.alerts.active.is_empty() {
                    None
                } else {
                    serde_json::to_string(&st.alerts.sorted()).ok()
                };
                if let Err(e) = meta.save_alert_state(
                    &key.tenant,
                    &key.persist_key(),
                    &rule.key,
                    json.as_deref(),
                ) {
                    tracing::warn!(group = %key.name, error = %e, "cannot save alert state");
                }
            }
            *lock(&runtime) = rt;
            ((outcome.evaluations, outcome.failures), outcome.alerts)
        })
        .await;
        match joined {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(group = %self.key.name, error = %e, "rule group evaluation panicked");
                None
            }
        }
    }
}
