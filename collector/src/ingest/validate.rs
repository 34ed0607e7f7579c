//! What the collector refuses inside an otherwise well-formed batch, record by record,
//! so one bad record never costs the good ones (OTLP partial success).

use std::time::Duration;

use vantage_proto::logs_scan::LogsScan;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

/// Limits applied to every record.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most attributes on one record.
    pub max_attributes: usize,
    /// How far ahead of now a timestamp may be.
    pub max_future_skew: Duration,
    /// How old a record may be (the retention period: older data would be deleted at once).
    pub max_age: Duration,
}

/// Why a record was rejected; the string is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too many attributes.
    TooManyAttributes,
    /// Timestamp beyond the allowed future skew.
    TooFarInFuture,
    /// Timestamp older than retention.
    TooOld,
}

impl Reject {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reject::TooManyAttributes => "too_many_attributes",
            Reject::TooFarInFuture => "timestamp_in_future",
            Reject::TooOld => "timestamp_too_old",
        }
    }
}

/// Outcome of validating a batch.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Records kept.
    pub accepted: u64,
    /// Rejections by reason, in first-seen order.
    pub rejected: Vec<(Reject, u64)>,
    /// First rejection, described for the partial-success message.
    pub first_problem: Option<String>,
    /// Whether validation changed the request in any way (a record dropped or given a
    /// time, an empty container removed). When it did not, the bytes the client sent
    /// are still an encoding of the request and go to the WAL as they are.
    pub changed: bool,
}

impl Verdict {
    /// Total records rejected.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn reject(&mut self, reason: Reject, describe: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(describe());
        }
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }

    /// The OTLP partial-success message: counts by reason and the first example.
    pub fn message(&self) -> String {
        if self.rejected.is_empty() {
            return String::new();
        }
        let counts: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{n} {}", r.label()))
            .collect();
        format!(
            "rejected {} ({}); first: {}",
            self.rejected_total(),
            counts.join(", "),
            self.first_problem.as_deref().unwrap_or("")
        )
    }
}

/// What [`logs`] would do to the request `scan` describes, without decoding it: `Some`
/// with the number of records when it would keep every record and change nothing (so
/// the bytes can go to the WAL as they came), `None` when it would reject or change
/// something or there is no record (then the request is decoded and validated).
pub fn logs_unchanged(scan: &LogsScan, limits: &Limits, now_ns: u64) -> Option<u64> {
    let (oldest, future) = window(limits, now_ns);
    let unchanged = scan.records > 0
        && !scan.incomplete
        && scan.max_attributes <= limits.max_attributes
        && scan.min_time_ns >= oldest
        && scan.max_time_ns <= future;
    unchanged.then_some(scan.records)
}

/// The oldest and the latest record time accepted at `now_ns`.
fn window(limits: &Limits, now_ns: u64) -> (u64, u64) {
    (
        now_ns.saturating_sub(limits.max_age.as_nanos() as u64),
        now_ns.saturating_add(limits.max_future_skew.as_nanos() as u64),
    )
}

/// Validates the log records of a request in place: rejected records are removed (and
/// scopes and resources left without records with them), and records without an
/// observed time get `observed_time_unix_nano = now` (the OTLP data model: the observed
/// time is when the collector first saw it). [`Verdict::changed`] says whether anything
/// of this happened.
pub fn logs(request: &mut ExportLogsServiceRequest, limits: &Limits, now_ns: u64) -> Verdict {
    let mut verdict = Verdict::default();
    let (oldest, future) = window(limits, now_ns);
    let resources = request.resource_logs.len();
    for rl in &mut request.resource_logs {
        let scopes = rl.scope_logs.len();
        for sl in &mut rl.scope_logs {
            sl.log_records.retain_mut(|r| {
                if r.observed_time_unix_nano == 0 {
                    r.observed_time_unix_nano = now_ns;
                    verdict.changed = true;
                }
                let t = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let problem = if r.attributes.len() > limits.max_attributes {
                    Some((
                        Reject::TooManyAttributes,
                        format!(
                            "a record has {} attributes, over the limit of {}",
                            r.attributes.len(),
                            limits.max_attributes
                        ),
                    ))
                } else if t > future {
                    Some((
                        Reject::TooFarInFuture,
                        format!(
                            "timestamp {t} ns is more than {:?} in the future",
                            limits.max_future_skew
                        ),
                    ))
                } else if t < oldest {
                    Some((
                        Reject::TooOld,
                        format!(
                            "timestamp {t} ns is older than the retention period of {:?}",
                            limits.max_age
                        ),
                    ))
                } else {
                    None
                };
                match problem {
                    Some((reason, text)) => {
                        verdict.reject(reason, || text);
                        verdict.changed = true;
                        false
                    }
                    None => {
                        verdict.accepted += 1;
                        true
                    }
                }
            });
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        verdict.changed |= rl.scope_logs.len() != scopes;
    }
    request.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    verdict.changed |= request.resource_logs.len() != resources;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::common::v1::KeyValue;
    use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn limits() -> Limits {
        Limits {
            max_attributes: 3,
            max_future_skew: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 86_400),
        }
    }

    fn req(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn keeps_good_records_and_names_the_bad() {
        let ok = LogRecord {
            time_unix_nano: NOW,
            ..Default::default()
        };
        let no_time = LogRecord::default();
        let future = LogRecord {
            time_unix_nano: u64::MAX,
            ..Default::default()
        };
        let old = LogRecord {
            time_unix_nano: 1,
            ..Default::default()
        };
        let attrs = LogRecord {
            time_unix_nano: NOW,
            attributes: vec![KeyValue::default(); 4],
            ..Default::default()
        };
        let mut r = req(vec![ok, no_time, future, old, attrs]);
        let v = logs(&mut r, &limits(), NOW);
        assert_eq!(v.accepted, 2);
        assert_eq!(v.rejected_total(), 3);
        let kept = &r.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(kept.len(), 2);
        assert_eq!(
            kept[1].observed_time_unix_nano, NOW,
            "a record without time gets one"
        );
        let msg = v.message();
        assert!(
            msg.contains("1 timestamp_in_future") && msg.contains("1 too_many_attributes"),
            "{msg}"
        );
    }

    #[test]
    fn empty_containers_are_dropped() {
        let mut r = req(vec![LogRecord {
            time_unix_nano: 1,
            ..Default::default()
        }]);
        let v = logs(&mut r, &limits(), NOW);
        assert_eq!(v.accepted, 0);
        assert!(r.resource_logs.is_empty());
    }

    #[test]
    fn a_clean_request_is_unchanged_and_says_so() {
        let record = LogRecord {
            time_unix_nano: NOW,
            observed_time_unix_nano: NOW,
            ..Default::default()
        };
        let mut r = req(vec![record.clone(), record]);
        let before = r.clone();
        let v = logs(&mut r, &limits(), NOW);
        assert!(!v.changed);
        assert_eq!(r, before);
        let mut no_observed = req(vec![LogRecord {
            time_unix_nano: NOW,
            ..Default::default()
        }]);
        assert!(
            logs(&mut no_observed, &limits(), NOW).changed,
            "an observed time filled in is a change"
        );
    }

    /// One record whose time, observed time and attribute count each fall inside or
    /// outside the limits.
    fn record() -> impl proptest::strategy::Strategy<Value = LogRecord> {
        use proptest::prelude::*;
        let time = prop_oneof![Just(0), Just(NOW), Just(1), Just(u64::MAX), Just(NOW - 1)];
        (time.clone(), time, 0usize..5).prop_map(|(t, observed, attrs)| LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: observed,
            attributes: vec![KeyValue::default(); attrs],
            ..Default::default()
        })
    }

    fn request() -> impl proptest::strategy::Strategy<Value = ExportLogsServiceRequest> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        let scope = vec(record(), 0..4).prop_map(|log_records| ScopeLogs {
            log_records,
            ..Default::default()
        });
        let resource = vec(scope, 0..3).prop_map(|scope_logs| ResourceLogs {
            scope_logs,
            ..Default::default()
        });
        vec(resource, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    proptest::proptest! {
        /// `changed` is what lets ingest store the client's bytes: it must be false
        /// exactly when the validated request equals the one received.
        #[test]
        fn changed_says_whether_the_request_changed(mut r in request()) {
            let before = r.clone();
            let v = logs(&mut r, &limits(), NOW);
            proptest::prop_assert_eq!(v.changed, r != before);
        }

        /// The scan of the bytes lets them through unvalidated exactly when validation
        /// would reject nothing and change nothing, with the same record count.
        #[test]
        fn the_scan_passes_exactly_what_validation_keeps_as_it_is(mut r in request()) {
            use prost::Message as _;
            let scan = vantage_proto::logs_scan::scan_export_logs(&r.encode_to_vec())
                .expect("prost's encoding is scanned");
            let fast = logs_unchanged(&scan, &limits(), NOW);
            let v = logs(&mut r, &limits(), NOW);
            let kept_as_is = !v.changed && v.rejected_total() == 0 && v.accepted > 0;
            proptest::prop_assert_eq!(fast, kept_as_is.then_some(v.accepted));
        }
    }
}
