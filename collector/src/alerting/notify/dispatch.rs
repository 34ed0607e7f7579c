//! The dispatcher: Alertmanager's notification pipeline, per tenant.
//!
//! ```text
//! AlertBatch ─► merge into the tenant's alerts (by fingerprint) ─► route (matchers,
//!   continue) ─► aggregation group per route and group_by labels
//! group timer (group_wait, then group_interval) ─► inhibit ─► silence ─► per integration:
//!   dedup against the notification log (changed firing/resolved set, or
//!   repeat_interval passed) ─► record in SQLite ─► delivery task
//! ```
//!
//! One task owns all of this state, so there are no locks on it; deliveries run in
//! tasks of their own ([`super::deliver`]) and never hold the dispatcher up. Timers are
//! `tokio::time`, and "now" is the wall clock at start plus tokio's elapsed time, so
//! tests run on paused time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vantage_storage::meta::{MetaStore, NewNotification};

use super::config::{AmConfig, GroupBy, InhibitRule, Integration, Route};
use super::deliver::{Deliverer, Delivery};
use super::matchers::matches_all;
use super::payload::{Data, NotifyAlert, fingerprint, labels_string};
use super::silence::Silence;
use super::{Shared, now_wall_ms};
use crate::alerting::{Alert, AlertBatch};

/// Most alerts one tenant may hold; more are refused (counted in the log), so a
/// label explosion cannot take the collector's memory.
pub const MAX_ALERTS_PER_TENANT: usize = 100_000;

/// A clock that is the wall clock at start plus tokio's elapsed time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall0_ms: i64,
    inst0: Instant,
}

impl Clock {
    /// Starts now.
    pub fn new() -> Clock {
        Clock {
            wall0_ms: now_wall_ms(),
            inst0: Instant::now(),
        }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.wall0_ms + i64::try_from(self.inst0.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
    }

    fn instant_after_ms(&self, now: Instant, ms: i64) -> Instant {
        now + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What the API asks the dispatcher.
pub enum Command {
    /// A tenant's configuration changed: rebuild its groups.
    ConfigChanged {
        /// The tenant.
        tenant: String,
    },
    /// The alerts of a tenant with their state, for `GET /api/v2/alerts`.
    Alerts {
        /// The tenant.
        tenant: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<AlertState>>,
    },
}

/// An alert with what the pipeline decides about it now.
#[derive(Clone, Debug)]
pub struct AlertState {
    /// The alert.
    pub alert: Alert,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Last update, ms since the epoch.
    pub updated_at_ms: i64,
    /// Receivers its routes lead to.
    pub receivers: Vec<String>,
    /// Ids of active silences muting it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of alerts inhibiting it.
    pub inhibited_by: Vec<String>,
    /// Whether it has resolved.
    pub resolved: bool,
}

#[derive(Clone, Debug)]
struct StoredAlert {
    alert: Alert,
    updated_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupId {
    route: Vec<usize>,
    labels: BTreeMap<String, String>,
}

struct AggrGroup {
    key: String,
    mute: Vec<String>,
    active: Vec<String>,
    receiver: String,
    labels: BTreeMap<String, String>,
    group_interval: Duration,
    repeat_interval: Duration,
    alerts: BTreeMap<String, Alert>,
    next_flush: Instant,
    has_flushed: bool,
}

/// What the notification log remembers per group, receiver and integration.
#[derive(Clone, Debug, Default)]
pub struct LogEntry {
    /// Fingerprints firing when last notified.
    pub firing: BTreeSet<String>,
    /// Fingerprints resolved when last notified.
    pub resolved: BTreeSet<String>,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

type LogKey = (String, String, String, String);

/// One notification a flush decided to make, not yet recorded.
struct Planned {
    log_key: LogKey,
    integration: Arc<Integration>,
    /// `None`: nothing to send (only resolved alerts, `send_resolved: false`).
    to_send: Option<Data>,
    firing: BTreeSet<String>,
    resolved: BTreeSet<String>,
}

impl Planned {
    fn row(&self, at: SystemTime) -> NewNotification {
        NewNotification {
            tenant: self.log_key.0.clone(),
            group_key: self.log_key.1.clone(),
            receiver: self.log_key.2.clone(),
            integration: self.log_key.3.clone(),
            receiver_type: self.integration.kind_name().to_owned(),
            firing: self.firing.iter().cloned().collect(),
            resolved: self.resolved.iter().cloned().collect(),
            content: self
                .to_send
                .as_ref()
                .and_then(|d| serde_json::to_string(d).ok())
                .unwrap_or_default(),
            at,
        }
    }
}

/// What flushing one group decided.
struct FlushPlan {
    tenant: String,
    id: GroupId,
    planned: Vec<Planned>,
    resolved_in_group: Vec<(String, Alert)>,
}

/// The firing and the resolved fingerprints of a notification's alerts.
fn fingerprint_sets(alerts: &[NotifyAlert]) -> (BTreeSet<String>, BTreeSet<String>) {
    let firing = alerts
        .iter()
        .filter(|a| !a.resolved)
        .map(|a| a.fingerprint.clone())
        .collect();
    let resolved = alerts
        .iter()
        .filter(|a| a.resolved)
        .map(|a| a.fingerprint.clone())
        .collect();
    (firing, resolved)
}

#[derive(Default)]
struct TenantState {
    config: Option<Arc<AmConfig>>,
    alerts: HashMap<String, StoredAlert>,
    groups: BTreeMap<GroupId, AggrGroup>,
}

/// The dispatcher's state and loop.
pub struct Dispatcher {
    shared: Arc<Shared>,
    store: Option<Arc<MetaStore>>,
    deliverer: Deliverer,
    clock: Clock,
    tenants: HashMap<String, TenantState>,
    nflog: HashMap<LogKey, LogEntry>,
}

/// Alertmanager's `needsUpdate`: whether a group's current firing/resolved sets must
/// be notified given the last notification.
pub fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat: Duration,
    now_ms: i64,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    let repeat_ms = i64::try_from(repeat.as_millis()).unwrap_or(i64::MAX);
    entry.at_ms < now_ms.saturating_sub(repeat_ms)
}

/// The routes an alert's labels lead to, as index paths into the tree, in order.
pub fn match_routes(route: &Route, labels: &BTreeMap<String, String>) -> Vec<Vec<usize>> {
    fn walk(
        route: &Route,
        labels: &BTreeMap<String, String>,
        path: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) -> bool {
        if !matches_all(&route.matchers, labels) {
            return false;
        }
        let before = out.len();
        for (i, child) in route.routes.iter().enumerate() {
            path.push(i);
            let matched = walk(child, labels, path, out);
            path.pop();
            if matched && !child.continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(path.clone());
        }
        true
    }
    let mut out = Vec::new();
    walk(route, labels, &mut Vec::new(), &mut out);
    out
}

fn route_at<'a>(root: &'a Route, path: &[usize]) -> Option<&'a Route> {
    let mut r = root;
    for &i in path {
        r = r.routes.get(i)?;
    }
    Some(r)
}

/// Fingerprints of the firing alerts that inhibit `labels` (Alertmanager's
/// inhibitor: an alert matching both sides does not inhibit one matching both).
fn inhibited_by(
    rules: &[InhibitRule],
    labels: &BTreeMap<String, String>,
    firing: &[(&String, &Alert)],
) -> Vec<String> {
    let mut out = Vec::new();
    for rule in rules {
        if !matches_all(&rule.target, labels) {
            continue;
        }
        let two_sided = matches_all(&rule.source, labels);
        for (fp, source) in firing {
            if !matches_all(&rule.source, &source.labels) {
                continue;
            }
            if two_sided && matches_all(&rule.target, &source.labels) {
                continue;
            }
            let equal = rule
                .equal
                .iter()
                .all(|l| source.labels.get(l) == labels.get(l));
            if equal && !out.contains(*fp) {
                out.push((*fp).clone());
            }
        }
    }
    out
}

impl Dispatcher {
    /// A dispatcher with the notification log restored from `store`.
    pub fn new(
        shared: Arc<Shared>,
        store: Option<Arc<MetaStore>>,
        deliverer: Deliverer,
    ) -> Dispatcher {
        let mut nflog = HashMap::new();
        if let Some(store) = &store {
            match store.latest_notifications() {
                Ok(rows) => {
                    for r in rows {
                        let at_ms = r
                            .created_at
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        nflog.insert(
                            (r.tenant, r.group_key, r.receiver, r.integration),
                            LogEntry {
                                firing: r.firing.into_iter().collect(),
                                resolved: r.resolved.into_iter().collect(),
                                at_ms,
                            },
                        );
                    }
                    tracing::info!(entries = nflog.len(), "restored the notification log");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the notification log; notifications may repeat")
                }
            }
        }
        Dispatcher {
            shared,
            store,
            deliverer,
            clock: Clock::new(),
            tenants: HashMap::new(),
            nflog,
        }
    }

    /// Runs until `shutdown` or until both channels close.
    pub async fn run(
        mut self,
        mut alerts: mpsc::Receiver<AlertBatch>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut alerts_open = true;
        loop {
            let next = self.next_flush();
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                batch = alerts.recv(), if alerts_open => match batch {
                    Some(batch) => self.ingest(batch),
                    None => alerts_open = false,
                },
                () = sleep => self.flush_due().await,
            }
        }
        tracing::info!("alert dispatcher stopped");
    }

    fn next_flush(&self) -> Option<Instant> {
        self.tenants
            .values()
            .flat_map(|t| t.groups.values().map(|g| g.next_flush))
            .min()
    }

    fn config(&self, tenant: &str) -> Arc<AmConfig> {
        self.shared.config(tenant)
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::ConfigChanged { tenant } => self.refresh_config(&tenant),
            Command::Alerts { tenant, reply } => {
                let _ = reply.send(self.alert_states(&tenant));
            }
        }
    }

    /// Picks up a changed configuration of `tenant`: its groups are rebuilt from its
    /// alerts (the notification log stays, so nothing is sent twice).
    fn refresh_config(&mut self, tenant: &str) {
        let config = self.config(tenant);
        let state = self.tenants.entry(tenant.to_owned()).or_default();
        if state
            .config
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &config))
        {
            return;
        }
        state.config = Some(config);
        state.groups.clear();
        let alerts: Vec<Alert> = state.alerts.values().map(|s| s.alert.clone()).collect();
        for a in alerts {
            self.route_alert(tenant, a);
        }
    }

    /// Merges a batch into the tenant's alerts and routes each alert.
    pub fn ingest(&mut self, batch: AlertBatch) {
        let now = self.clock.now_ms();
        self.refresh_config(&batch.tenant);
        let Some(state) = self.tenants.get_mut(&batch.tenant) else {
            return;
        };
        let mut routed = Vec::with_capacity(batch.alerts.len());
        let mut refused = 0usize;
        for mut alert in batch.alerts {
            let fp = fingerprint(&alert.labels);
            if let Some(old) = state.alerts.get(&fp) {
                let o = &old.alert;
                // Alertmanager's provider merges overlapping updates and keeps the
                // earliest start.
                let overlaps = (alert.ends_at_ms > o.starts_at_ms
                    && alert.ends_at_ms < o.ends_at_ms)
                    || (alert.starts_at_ms > o.starts_at_ms && alert.starts_at_ms < o.ends_at_ms);
                if overlaps {
                    alert.starts_at_ms = alert.starts_at_ms.min(o.starts_at_ms);
                }
            } else if state.alerts.len() >= MAX_ALERTS_PER_TENANT {
                refused += 1;
                continue;
            }
            state.alerts.insert(
                fp,
                StoredAlert {
                    alert: alert.clone(),
                    updated_at_ms: now,
                },
            );
            routed.push(alert);
        }
        if refused > 0 {
            tracing::warn!(tenant = %batch.tenant, refused, limit = MAX_ALERTS_PER_TENANT, "alerts refused: tenant holds too many");
        }
        for alert in routed {
            self.route_alert(&batch.tenant, alert);
        }
    }

    fn route_alert(&mut self, tenant: &str, alert: Alert) {
        let now = Instant::now();
        let now_ms = self.clock.now_ms();
        let clock = self.clock;
        let Some(state) = self.tenants.get_mut(tenant) else {
            return;
        };
        let Some(config) = state.config.clone() else {
            return;
        };
        let fp = fingerprint(&alert.labels);
        for path in match_routes(&config.route, &alert.labels) {
            let Some(route) = route_at(&config.route, &path) else {
                continue;
            };
            let labels: BTreeMap<String, String> = match &route.group_by {
                GroupBy::All => alert.labels.clone(),
                GroupBy::Labels(names) => names
                    .iter()
                    .filter_map(|n| alert.labels.get(n).map(|v| (n.clone(), v.clone())))
                    .collect(),
            };
            let id = GroupId {
                route: path,
                labels: labels.clone(),
            };
            let group = state.groups.entry(id).or_insert_with(|| AggrGroup {
                key: format!("{}:{}", route.key, labels_string(&labels)),
                mute: route.mute_time_intervals.clone(),
                active: route.active_time_intervals.clone(),
                receiver: route.receiver.clone(),
                labels,
                group_interval: route.group_interval,
                repeat_interval: route.repeat_interval,
                alerts: BTreeMap::new(),
                next_flush: now + route.group_wait,
                has_flushed: false,
            });
            let wait_ms = i64::try_from(route.group_wait.as_millis()).unwrap_or(i64::MAX);
            if !group.has_flushed && alert.starts_at_ms.saturating_add(wait_ms) < now_ms {
                // An old alert in a new group: notify without waiting, as Alertmanager.
                group.next_flush = clock.instant_after_ms(now, 0);
            }
            group.alerts.insert(fp.clone(), alert.clone());
        }
    }

    /// Flushes every group whose timer is due. What the groups of one tick will send is
    /// recorded in the notification log in one transaction (one fsync, not one per
    /// group), before any of it is sent.
    pub async fn flush_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, GroupId)> = self
            .tenants
            .iter()
            .flat_map(|(t, s)| {
                s.groups
                    .iter()
                    .filter(|(_, g)| g.next_flush <= now)
                    .map(|(id, _)| (t.clone(), id.clone()))
            })
            .collect();
        let now_ms = self.clock.now_ms();
        let plans: Vec<FlushPlan> = due
            .into_iter()
            .filter_map(|(tenant, id)| self.plan(tenant, id, now_ms))
            .collect();
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
        let rows: Vec<NewNotification> = plans
            .iter()
            .flat_map(|p| p.planned.iter().map(|d| d.row(at)))
            .collect();
        let ids: Vec<Option<i64>> = match (&self.store, rows.is_empty()) {
            (Some(store), false) => {
                let store = store.clone();
                let count = rows.len();
                // Recorded before anything is sent: a crash from here on cannot lead
                // to a second notification of the same sets.
                match tokio::task::spawn_blocking(move || store.record_notifications(&rows)).await {
                    Ok(Ok(ids)) => ids.into_iter().map(Some).collect(),
                    Ok(Err(e)) => {
                        // Nothing is sent and nothing forgotten: the groups try again
                        // at their next group_interval.
                        tracing::error!(notifications = count, error = %e, "cannot record notifications; not sending them");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "notification log task failed");
                        return;
                    }
                }
            }
            _ => vec![None; rows.len()],
        };
        let mut ids = ids.into_iter();
        for plan in plans {
            for d in plan.planned {
                let id = ids.next().flatten();
                self.nflog.insert(
                    d.log_key.clone(),
                    LogEntry {
                        firing: d.firing,
                        resolved: d.resolved,
                        at_ms: now_ms,
                    },
                );
                match d.to_send {
                    Some(data) => self.deliverer.spawn(Delivery {
                        id,
                        tenant: d.log_key.0,
                        integration: d.integration,
                        data,
                        attempts_before: 0,
                    }),
                    None => self.deliverer.nothing_to_send(id),
                }
            }
            self.drop_resolved(&plan.tenant, &plan.id, plan.resolved_in_group);
        }
    }

    /// Decides what flushing one group sends (to the receiver's integrations and to
    /// its subscribers) without recording or sending it; `None` when the group is gone.
    fn plan(&mut self, tenant: String, id: GroupId, now_ms: i64) -> Option<FlushPlan> {
        let external_url = self.shared.external_url();
        let silences = self.shared.silences(&tenant);
        let subscriptions = self.shared.subscriptions(&tenant);
        let state = self.tenants.get_mut(&tenant)?;
        let config = state.config.clone()?;
        let group = state.groups.get_mut(&id)?;
        group.next_flush = Instant::now() + group.group_interval;
        group.has_flushed = true;
        if group.alerts.is_empty() {
            state.groups.remove(&id);
            return None;
        }
        let firing_all: Vec<(&String, &Alert)> = state
            .alerts
            .iter()
            .filter(|(_, s)| !s.alert.is_resolved(now_ms))
            .map(|(fp, s)| (fp, &s.alert))
            .collect();
        let mut notify = Vec::new();
        for (fp, alert) in &group.alerts {
            if !inhibited_by(&config.inhibit_rules, &alert.labels, &firing_all).is_empty() {
                continue;
            }
            if silences.iter().any(|s| s.mutes(&alert.labels, now_ms)) {
                continue;
            }
            notify.push(NotifyAlert {
                alert: alert.clone(),
                fingerprint: fp.clone(),
                resolved: alert.is_resolved(now_ms),
            });
        }
        let resolved_in_group: Vec<(String, Alert)> = group
            .alerts
            .iter()
            .filter(|(_, a)| a.is_resolved(now_ms))
            .map(|(fp, a)| (fp.clone(), a.clone()))
            .collect();
        if config.muted(&group.mute, &group.active, now_ms) {
            // Alertmanager's time-mute stage: nothing is sent and nothing logged.
            notify.clear();
        }
        let (key, receiver_name, group_labels, repeat) = (
            group.key.clone(),
            group.receiver.clone(),
            group.labels.clone(),
            group.repeat_interval,
        );
        drop(firing_all);

        let mut planned = Vec::new();
        if !notify.is_empty() {
            let (firing, resolved) = fingerprint_sets(&notify);
            let log_key = |integration: String| {
                (
                    tenant.clone(),
                    key.clone(),
                    receiver_name.clone(),
                    integration,
                )
            };
            if let Some(receiver) = config.receivers.get(&receiver_name) {
                let data = Data::new(
                    &receiver_name,
                    &key,
                    group_labels.clone(),
                    notify.clone(),
                    &external_url,
                );
                for integration in &receiver.integrations {
                    let log_key = log_key(integration.name.clone());
                    if !needs_update(
                        self.nflog.get(&log_key),
                        &firing,
                        &resolved,
                        integration.send_resolved,
                        repeat,
                        now_ms,
                    ) {
                        continue;
                    }
                    let to_send = if integration.send_resolved {
                        Some(data.clone())
                    } else {
                        data.without_resolved()
                    };
                    planned.push(Planned {
                        log_key,
                        integration: integration.clone(),
                        to_send,
                        firing: firing.clone(),
                        resolved: resolved.clone(),
                    });
                }
            }
            // People's own subscriptions to this receiver: each its own integration,
            // deduplicated against its own last notification, of the alerts it wants.
            let subscribers = subscriptions
                .iter()
                .filter(|s| s.row.receiver == receiver_name && !s.muted(now_ms));
            for sub in subscribers {
                let Some(smtp) = &config.smtp else {
                    tracing::debug!(tenant = %tenant, subscription = %sub.row.id, "no global smtp settings; subscription not notified");
                    continue;
                };
                let mine: Vec<NotifyAlert> = notify
                    .iter()
                    .filter(|a| sub.wants(&a.alert.labels))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let (firing, resolved) = fingerprint_sets(&mine);
                let log_key = log_key(sub.integration_name());
                if !needs_update(
                    self.nflog.get(&log_key),
                    &firing,
                    &resolved,
                    true,
                    repeat,
                    now_ms,
                ) {
                    continue;
                }
                let data = Data::new(
                    &receiver_name,
                    &key,
                    group_labels.clone(),
                    mine,
                    &external_url,
                );
                planned.push(Planned {
                    log_key,
                    integration: sub.integration(smtp),
                    to_send: Some(data),
                    firing,
                    resolved,
                });
            }
        }
        Some(FlushPlan {
            tenant,
            id,
            planned,
            resolved_in_group,
        })
    }

    /// Resolved alerts have been dealt with: drops them from the group and, when no
    /// other group holds them, from the tenant.
    fn drop_resolved(
        &mut self,
        tenant: &str,
        id: &GroupId,
        resolved_in_group: Vec<(String, Alert)>,
    ) {
        let Some(state) = self.tenants.get_mut(tenant) else {
            return;
        };
        if let Some(group) = state.groups.get_mut(id) {
            for (fp, a) in &resolved_in_group {
                if group.alerts.get(fp) == Some(a) {
                    group.alerts.remove(fp);
                }
            }
            if group.alerts.is_empty() {
                state.groups.remove(id);
            }
        }
        for (fp, a) in resolved_in_group {
            let held = state.groups.values().any(|g| g.alerts.contains_key(&fp));
            if !held && state.alerts.get(&fp).is_some_and(|s| s.alert == a) {
                state.alerts.remove(&fp);
            }
        }
    }

    fn alert_states(&self, tenant: &str) -> Vec<AlertState> {
        let now_ms = self.clock.now_ms();
        let Some(state) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let config = self.config(tenant);
        let silences = self.shared.silences(tenant);
        let firing_all: Vec<(&String, &Alert)> = state
            .alerts
            .iter()
            .filter(|(_, s)| !s.alert.is_resolved(now_ms))
            .map(|(fp, s)| (fp, &s.alert))
            .collect();
        let mut out: Vec<AlertState> = state
            .alerts
            .iter()
            .map(|(fp, s)| {
                let mut receivers: Vec<String> = match_routes(&config.route, &s.alert.labels)
                    .iter()
                    .filter_map(|p| route_at(&config.route, p).map(|r| r.receiver.clone()))
                    .collect();
                receivers.dedup();
                AlertState {
                    alert: s.alert.clone(),
                    fingerprint: fp.clone(),
                    updated_at_ms: s.updated_at_ms,
                    receivers,
                    silenced_by: silences
                        .iter()
                        .filter(|x| x.mutes(&s.alert.labels, now_ms))
                        .map(|x| x.id.clone())
                        .collect(),
                    inhibited_by: inhibited_by(&config.inhibit_rules, &s.alert.labels, &firing_all),
                    resolved: s.alert.is_resolved(now_ms),
                }
            })
            .collect();
        out.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
        out
    }
}

/// The silences of a tenant, shared with the API.
pub type SilenceList = Vec<Arc<Silence>>;

/// Wall time of a `SystemTime`, ms since the epoch.
pub fn ms_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
