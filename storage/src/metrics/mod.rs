//! The metrics engine: an embedded time-series store ([`tsdb`]) and a PromQL evaluator
//! ([`promql`]) that reads it only through the [`Querier`] trait, so the two can be
//! tested apart and the evaluator can run over anything that yields series.
//!
//! The data model (label sets, samples, batches) is `vantage_proto::prom`; times are
//! milliseconds since the epoch throughout.

pub mod promql;
pub mod tsdb;

use std::path::PathBuf;

pub use vantage_proto::prom::{
    Label, Labels, METRIC_NAME, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples,
    is_stale, stale_nan,
};

/// Errors of the metrics store and of reading it.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file operation failed.
    #[error("metrics store i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A block or record on disk is not what was written.
    #[error("corrupt metrics data in {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A label matcher's regular expression does not compile.
    #[error("invalid matcher {name}{op}{value:?}: {reason}")]
    InvalidMatcher {
        /// Label name.
        name: String,
        /// Operator as written.
        op: &'static str,
        /// The pattern.
        value: String,
        /// Why it does not compile.
        reason: String,
    },
    /// A configured limit was reached (series per tenant, samples per query, ...).
    #[error("{0}")]
    LimitExceeded(String),
}

impl MetricsError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> MetricsError {
        MetricsError::Io {
            path: path.into(),
            source,
        }
    }
}

/// How a [`Matcher`] compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored, RE2 syntax as in Prometheus)
    RegexMatch,
    /// `!~`
    RegexNoMatch,
}

impl MatchOp {
    /// The operator as PromQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }
}

/// A label matcher as in a PromQL selector. A label that a series lacks has the value
/// `""` for matching, so `{a=""}` selects series without `a`, as in Prometheus.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or pattern as written.
    pub value: String,
    /// The compiled, anchored pattern for the regex operators.
    re: Option<regex::Regex>,
}

impl Matcher {
    /// Builds a matcher; the regex operators compile `^(?:value)$`, where `.` does not
    /// match a newline, as in Prometheus 2.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Matcher, MetricsError> {
        let name = name.into();
        let value = value.into();
        let re = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    MetricsError::InvalidMatcher {
                        name: name.clone(),
                        op: op.as_str(),
                        value: value.clone(),
                        reason: e.to_string(),
                    }
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            re,
        })
    }

    /// Shorthand for an `=` matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// Whether `value` (`""` for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::RegexMatch => self.re.as_ref().is_some_and(|re| re.is_match(value)),
            MatchOp::RegexNoMatch => !self.re.as_ref().is_some_and(|re| re.is_match(value)),
        }
    }

    /// Whether the matcher accepts the empty value, i.e. also selects series that lack
    /// the label. Such matchers cannot be answered from postings of the label alone.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Whether a label set satisfies the matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// One series found by [`Querier::series`]: its labels and a handle that only the
/// querier that returned it understands.
#[derive(Clone, Debug)]
pub struct SeriesRef {
    /// The series' label set.
    pub labels: Labels,
    /// Opaque to callers; passed back to [`Querier::samples`].
    pub handle: u64,
}

/// Read access to one tenant's series over a time range: what the PromQL evaluator
/// needs from a store. Split into `series` then `samples` so an evaluator can decode
/// one series at a time instead of holding every sample of a query in memory.
pub trait Querier: Send + Sync {
    /// Series matching every matcher that may have samples in `[start, end]` (ms,
    /// inclusive), sorted by label set.
    fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesRef>, MetricsError>;

    /// Appends to `out` the samples of `series` with `start <= t <= end`, sorted by
    /// time, one per timestamp (staleness markers included).
    fn samples(
        &self,
        series: &SeriesRef,
        start: i64,
        end: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), MetricsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matchers_are_anchored_and_absent_is_empty() {
        let m = Matcher::new("job", MatchOp::RegexMatch, "api|web").unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("api2"));
        assert!(!m.matches(""));
        let l = Labels::from_pairs([("job", "web")]);
        assert!(m.matches_labels(&l));
        let absent = Matcher::equal("team", "");
        assert!(absent.matches_labels(&l));
        assert!(absent.matches_empty());
        let nre = Matcher::new("job", MatchOp::RegexNoMatch, "a.*").unwrap();
        assert!(nre.matches(""));
        assert!(!nre.matches("api"));
    }

    #[test]
    fn bad_regex_is_a_clear_error() {
        let err = Matcher::new("job", MatchOp::RegexMatch, "(").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid matcher job=~\"(\""),
            "{err}"
        );
    }
}
