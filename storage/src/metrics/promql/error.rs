//! Errors of parsing and evaluating PromQL, classified the way Prometheus's HTTP API
//! reports them (`errorType`), so the collector's API can answer exactly as Prometheus.

use crate::metrics::MetricsError;

/// Why a query failed. The messages follow Prometheus's where practical, because
/// dashboards and users search for them.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    /// The query text does not parse (message from the parser, with position where
    /// the parser gives one).
    #[error("parse error: {0}")]
    Parse(String),
    /// A well-formed query that Vantage does not evaluate (native-histogram functions,
    /// experimental functions and syntax newer than Prometheus 2.42).
    #[error("{0} is not supported")]
    Unsupported(String),
    /// A query parameter or function argument is invalid (bad regex, bad label name,
    /// too many points per series, ...).
    #[error("{0}")]
    BadArgument(String),
    /// The query loads or materialises more samples than `max_samples`.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// Evaluation failed on the data (many-to-many matching, duplicate series, ...).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout.
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// Reading the store failed.
    #[error("{0}")]
    Storage(#[from] MetricsError),
}

impl PromqlError {
    /// The `errorType` Prometheus's API puts next to this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromqlError::Parse(_) | PromqlError::Unsupported(_) | PromqlError::BadArgument(_) => {
                "bad_data"
            }
            PromqlError::TooManySamples | PromqlError::Execution(_) => "execution",
            PromqlError::Timeout => "timeout",
            PromqlError::Storage(MetricsError::InvalidMatcher { .. }) => "bad_data",
            PromqlError::Storage(MetricsError::LimitExceeded(_)) => "execution",
            PromqlError::Storage(_) => "internal",
        }
    }

    pub(crate) fn exec(msg: impl Into<String>) -> PromqlError {
        PromqlError::Execution(msg.into())
    }

    pub(crate) fn bad(msg: impl Into<String>) -> PromqlError {
        PromqlError::BadArgument(msg.into())
    }

    pub(crate) fn duplicate_labelset() -> PromqlError {
        PromqlError::exec("vector cannot contain metrics with the same labelset")
    }
}
