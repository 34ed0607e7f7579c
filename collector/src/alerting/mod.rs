//! Alerting: rule files and API rules → the evaluator (`rules`) → the notifier
//! (`notify`: routing, grouping, silences, inhibition, receivers, delivery).
//!
//! The two halves meet at one bounded channel of [`AlertBatch`]es, with the semantics
//! Prometheus uses towards Alertmanager (`POST /api/v2/alerts`): the evaluator sends
//! every active alert after each evaluation (at most once per resend delay when nothing
//! changed), a firing alert carries an `ends_at` a few intervals ahead so it resolves by
//! itself if the evaluator stops, and a resolved alert is sent with `ends_at` set to when
//! it resolved. So the notifier behaves as Alertmanager does, and forwarding to an
//! external Alertmanager is a copy of the same alerts.
//!
//! ```text
//! rules (per tenant, per group interval) --AlertBatch--> channel (ALERT_CHANNEL_BATCHES)
//!     --> notifier: inhibit, silence, route, group --> receivers (each its own task)
//! ```

pub mod notify;
pub mod rules;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Batches the evaluator may queue before it waits for the notifier: far more than
/// one cycle of every group produces, so a full channel means a stuck notifier.
pub const ALERT_CHANNEL_BATCHES: usize = 1024;

/// One alert as Alertmanager's API v2 models it (`postableAlert`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Identity of the alert: `alertname`, the rule's labels and the series' labels.
    pub labels: BTreeMap<String, String>,
    /// Templated annotations (`summary`, `description`, ...). A log rule adds sample
    /// log lines here under [`LOG_SAMPLES_ANNOTATION`].
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing, milliseconds since the epoch.
    pub starts_at_ms: i64,
    /// Firing: a time a few evaluation intervals ahead (the alert resolves by itself if
    /// no update arrives by then). Resolved: when it resolved.
    pub ends_at_ms: i64,
    /// Link back to the rule's expression in the query API.
    pub generator_url: String,
}

/// The annotation that carries a log rule's sample lines (newline-separated, newest
/// first), so notifications show what matched.
pub const LOG_SAMPLES_ANNOTATION: &str = "log_samples";

impl Alert {
    /// Whether the alert has resolved as of `now_ms`.
    pub fn is_resolved(&self, now_ms: i64) -> bool {
        self.ends_at_ms <= now_ms
    }
}

/// Alerts of one tenant, sent together after one group evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertBatch {
    /// The tenant whose rules produced the alerts; routing uses that tenant's config.
    pub tenant: String,
    /// The alerts, firing and resolved.
    pub alerts: Vec<Alert>,
}
