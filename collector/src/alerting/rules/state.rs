//! The state of one alerting rule's alerts, with Prometheus 2.42's transitions
//! (`rules/alerting.go`): inactive → pending → firing, `for` and `keep_firing_for`,
//! resolved alerts kept 15 minutes so Alertmanager hears they resolved, and the
//! resend rule (`needsSending`).
//!
//! Every time is an explicit argument (ms since the epoch), so the machine is a pure
//! function of its inputs and its tests need no clock.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::alerting::Alert;

/// How long a resolved alert is still sent to the notifier (Prometheus's
/// `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Resolved (kept for a while so the resolution is notified).
    Inactive,
    /// Condition true, waiting for `for`.
    Pending,
    /// Firing.
    Firing,
}

impl AlertState {
    /// The name Prometheus's API and the `alertstate` label use.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule: its identity, content and timers. Serialised as is into the
/// metadata store, so a restart resumes it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Identity: the series' labels without `__name__`, the rule's labels, `alertname`.
    pub labels: BTreeMap<String, String>,
    /// Expanded annotations of the latest evaluation.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// The expression's value at the latest evaluation.
    pub value: f64,
    /// When the condition started being true (the `for` timer's start).
    pub active_at_ms: i64,
    /// When it started firing (0 = never).
    pub fired_at_ms: i64,
    /// When it resolved (0 = not resolved).
    pub resolved_at_ms: i64,
    /// When it was last sent to the notifier (0 = never).
    pub last_sent_at_ms: i64,
    /// `ends_at` of the last firing send.
    pub valid_until_ms: i64,
    /// When the condition stopped being true while `keep_firing_for` holds it (0 = not).
    pub keep_firing_since_ms: i64,
}

/// An alert the latest evaluation produced, before it meets the state.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Identity labels.
    pub labels: BTreeMap<String, String>,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// The alerts of one alerting rule, by identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertingState {
    /// Every alert not yet forgotten, firing, pending or recently resolved.
    pub active: HashMap<BTreeMap<String, String>, ActiveAlert>,
}

impl AlertingState {
    /// Applies one evaluation's results at `ts_ms`. `hold_ms` is `for`. An error
    /// (the limit) clears the alerts, as Prometheus does.
    pub fn apply(
        &mut self,
        results: Vec<Candidate>,
        ts_ms: i64,
        hold_ms: i64,
        keep_firing_for_ms: i64,
        limit: i64,
    ) -> Result<(), String> {
        let mut seen: HashMap<BTreeMap<String, String>, Candidate> = HashMap::new();
        for c in results {
            if seen.contains_key(&c.labels) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .to_string(),
                );
            }
            seen.insert(c.labels.clone(), c);
        }
        for (labels, c) in &seen {
            match self.active.get_mut(labels) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = c.value;
                    a.annotations = c.annotations.clone();
                }
                _ => {
                    self.active.insert(
                        labels.clone(),
                        ActiveAlert {
                            labels: labels.clone(),
                            annotations: c.annotations.clone(),
                            state: AlertState::Pending,
                            value: c.value,
                            active_at_ms: ts_ms,
                            fired_at_ms: 0,
                            resolved_at_ms: 0,
                            last_sent_at_ms: 0,
                            valid_until_ms: 0,
                            keep_firing_since_ms: 0,
                        },
                    );
                }
            }
        }
        let mut active_pending = 0usize;
        let mut forget = Vec::new();
        for (key, a) in self.active.iter_mut() {
            if !seen.contains_key(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_firing_for_ms > 0 {
                    if a.keep_firing_since_ms == 0 {
                        a.keep_firing_since_ms = ts_ms;
                    }
                    if ts_ms - a.keep_firing_since_ms < keep_firing_for_ms {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at_ms != 0 && ts_ms - a.resolved_at_ms > RESOLVED_RETENTION_MS)
                {
                    forget.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = ts_ms;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since_ms = 0;
            }
            active_pending += 1;
            if a.state == AlertState::Pending && ts_ms - a.active_at_ms >= hold_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = ts_ms;
            }
        }
        for k in forget {
            self.active.remove(&k);
        }
        if limit > 0 && active_pending as i64 > limit {
            self.active.clear();
            return Err(format!(
                "exceeded limit of {limit} with {active_pending} alerts"
            ));
        }
        Ok(())
    }

    /// The rule's state: the most advanced of its alerts.
    pub fn rule_state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Alerts due to be sent at `ts_ms` (Prometheus's `needsSending`), marked sent.
    /// A firing alert's `ends_at` is `ts + 4 × max(interval, resend delay)`; a resolved
    /// one's is when it resolved.
    pub fn due(
        &mut self,
        ts_ms: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
        generator_url: &str,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if a.state == AlertState::Pending {
                continue;
            }
            let resolved_since_sent = a.resolved_at_ms > a.last_sent_at_ms;
            let never_sent = a.last_sent_at_ms == 0;
            if !(resolved_since_sent || never_sent || a.last_sent_at_ms + resend_delay_ms < ts_ms) {
                continue;
            }
            a.last_sent_at_ms = ts_ms;
            a.valid_until_ms = ts_ms + 4 * resend_delay_ms.max(interval_ms);
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: a.fired_at_ms,
                ends_at_ms: if a.resolved_at_ms != 0 {
                    a.resolved_at_ms
                } else {
                    a.valid_until_ms
                },
                generator_url: generator_url.to_string(),
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Alerts in a stable order (by labels), for the API and for persistence.
    pub fn sorted(&self) -> Vec<&ActiveAlert> {
        let mut v: Vec<&ActiveAlert> = self.active.values().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// What must survive a restart: identities, states and timers (values and
    /// annotations are recomputed by the next evaluation). Persisting only when this
    /// changes keeps a steady firing alert from writing on every evaluation.
    pub fn timers(&self) -> Vec<(&BTreeMap<String, String>, AlertState, [i64; 6])> {
        let mut v: Vec<_> = self
            .active
            .values()
            .map(|a| {
                (
                    &a.labels,
                    a.state,
                    [
                        a.active_at_ms,
                        a.fired_at_ms,
                        a.resolved_at_ms,
                        a.last_sent_at_ms,
                        a.valid_until_ms,
                        a.keep_firing_since_ms,
                    ],
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Restores persisted alerts.
    pub fn restore(alerts: Vec<ActiveAlert>) -> AlertingState {
        AlertingState {
            active: alerts.into_iter().map(|a| (a.labels.clone(), a)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(instance: &str, value: f64) -> Candidate {
        Candidate {
            labels: [
                ("alertname".to_string(), "High".to_string()),
                ("instance".to_string(), instance.to_string()),
            ]
            .into(),
            annotations: BTreeMap::new(),
            value,
        }
    }

    fn state_of(s: &AlertingState, instance: &str) -> Option<AlertState> {
        s.active
            .values()
            .find(|a| a.labels["instance"] == instance)
            .map(|a| a.state)
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved_and_forgotten() {
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 5.0)], 1_000, 2_000, 0, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Pending));
        assert!(
            s.due(1_000, 60_000, 1_000, "").is_empty(),
            "pending is never sent"
        );
        s.apply(vec![cand("a", 6.0)], 2_000, 2_000, 0, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Pending));
        s.apply(vec![cand("a", 7.0)], 3_000, 2_000, 0, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Firing));
        let sent = s.due(3_000, 60_000, 1_000, "u");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at_ms, 3_000);
        assert_eq!(sent[0].ends_at_ms, 3_000 + 4 * 60_000);
        // Unchanged: not resent before the resend delay has passed.
        s.apply(vec![cand("a", 7.0)], 4_000, 2_000, 0, 0).unwrap();
        assert!(s.due(4_000, 60_000, 1_000, "u").is_empty());
        s.apply(vec![cand("a", 7.0)], 63_001, 2_000, 0, 0).unwrap();
        assert_eq!(s.due(63_001, 60_000, 1_000, "u").len(), 1);
        // Gone: resolved at once, sent with ends_at = resolve time.
        s.apply(vec![], 64_000, 2_000, 0, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Inactive));
        let sent = s.due(64_000, 60_000, 1_000, "u");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at_ms, 64_000);
        // Resent while resolved, until 15 minutes have passed; then forgotten.
        s.apply(vec![], 125_000, 2_000, 0, 0).unwrap();
        assert_eq!(s.due(125_000, 60_000, 1_000, "u").len(), 1);
        s.apply(vec![], 64_000 + RESOLVED_RETENTION_MS + 1, 2_000, 0, 0)
            .unwrap();
        assert!(s.active.is_empty());
    }

    #[test]
    fn pending_that_disappears_is_dropped_without_notification() {
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 1.0)], 0, 10_000, 0, 0).unwrap();
        s.apply(vec![], 1_000, 10_000, 0, 0).unwrap();
        assert!(s.active.is_empty());
    }

    #[test]
    fn for_zero_fires_at_once() {
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 1.0)], 0, 0, 0, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Firing));
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 1.0)], 0, 0, 5_000, 0).unwrap();
        s.apply(vec![], 1_000, 0, 5_000, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Firing));
        s.apply(vec![], 5_999, 0, 5_000, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Firing));
        // Back before the end: the timer resets.
        s.apply(vec![cand("a", 1.0)], 6_000, 0, 5_000, 0).unwrap();
        s.apply(vec![], 7_000, 0, 5_000, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Firing));
        s.apply(vec![], 12_000, 0, 5_000, 0).unwrap();
        assert_eq!(state_of(&s, "a"), Some(AlertState::Inactive));
    }

    #[test]
    fn a_resolved_alert_that_returns_starts_over() {
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 1.0)], 0, 1_000, 0, 0).unwrap();
        s.apply(vec![cand("a", 1.0)], 1_000, 1_000, 0, 0).unwrap();
        s.apply(vec![], 2_000, 1_000, 0, 0).unwrap();
        s.apply(vec![cand("a", 1.0)], 3_000, 1_000, 0, 0).unwrap();
        let a = s.active.values().next().unwrap();
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.active_at_ms, 3_000);
    }

    #[test]
    fn limit_and_duplicate_labelsets_fail_the_evaluation() {
        let mut s = AlertingState::default();
        let e = s
            .apply(vec![cand("a", 1.0), cand("b", 1.0)], 0, 0, 0, 1)
            .unwrap_err();
        assert_eq!(e, "exceeded limit of 1 with 2 alerts");
        assert!(s.active.is_empty());
        let e = s
            .apply(vec![cand("a", 1.0), cand("a", 2.0)], 0, 0, 0, 0)
            .unwrap_err();
        assert!(e.contains("same labelset"));
    }

    #[test]
    fn restored_state_is_not_resent_before_its_resend_time() {
        let t0 = 1_700_000_000_000;
        let mut s = AlertingState::default();
        s.apply(vec![cand("a", 1.0)], t0, 0, 0, 0).unwrap();
        assert_eq!(s.due(t0, 60_000, 1_000, "").len(), 1);
        let saved: Vec<ActiveAlert> = s.sorted().into_iter().cloned().collect();
        let json = serde_json::to_string(&saved).unwrap();
        let mut r = AlertingState::restore(serde_json::from_str(&json).unwrap());
        assert_eq!(r, s);
        r.apply(vec![cand("a", 1.0)], t0 + 10_000, 0, 0, 0).unwrap();
        assert!(r.due(t0 + 10_000, 60_000, 1_000, "").is_empty());
        let a = r.active.values().next().unwrap();
        assert_eq!((a.active_at_ms, a.state), (t0, AlertState::Firing));
        // Once the resend delay has passed, it is sent again.
        r.apply(vec![cand("a", 1.0)], t0 + 60_001, 0, 0, 0).unwrap();
        assert_eq!(r.due(t0 + 60_001, 60_000, 1_000, "").len(), 1);
    }
}
