//! The PromQL evaluator: parses with `promql-parser` and evaluates over any
//! [`Querier`], with the semantics of Prometheus 2.42 (lookback, staleness, `offset`
//! and `@`, subqueries, extrapolated rates, vector matching, aggregation algorithms),
//! so Grafana and alert rules get the numbers they would get from Prometheus.
//!
//! Evaluation is series by series where the data allows it: a selector reads one
//! series' samples, turns them into points at the evaluation steps and drops them
//! before reading the next, so raw samples of a whole query are never held at once.
//! Operators that combine series (aggregations, vector matching) then work step by
//! step over those points.

mod aggregate;
mod binary;
mod depth;
mod duration;
mod error;
mod eval;
mod functions;
mod memquerier;
mod quantile;
mod value;

#[cfg(test)]
mod testload;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use depth::{MAX_QUERY_BYTES, MAX_QUERY_DEPTH, QUERY_STACK_BYTES};
pub use duration::parse_duration_ms;
pub use error::PromqlError;
pub use memquerier::MemQuerier;
pub use value::{InstantSample, RangeSeries, Value};

use crate::metrics::Querier;

/// Prometheus's default lookback: how far back an instant selector looks for the
/// latest sample (`--query.lookback-delta`).
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Prometheus's `--query.max-samples` default: the most samples one query may hold in
/// memory at once, so one query cannot exhaust the collector's memory.
pub const DEFAULT_MAX_SAMPLES: usize = 50_000_000;
/// Prometheus's range-query resolution limit: more points per series than this is a
/// mistake (a step far too small for the range), refused before any work is done.
pub const DEFAULT_MAX_POINTS_PER_SERIES: usize = 11_000;
/// Step of a subquery written without one (`expr[1h:]`): Prometheus uses the global
/// evaluation interval, whose default is one minute.
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// Limits and defaults of query evaluation.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample, in ms.
    pub lookback_ms: i64,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Most points per series a range query may ask for.
    pub max_points_per_series: usize,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            lookback_ms: DEFAULT_LOOKBACK_MS,
            max_samples: DEFAULT_MAX_SAMPLES,
            max_points_per_series: DEFAULT_MAX_POINTS_PER_SERIES,
        }
    }
}

/// Evaluates PromQL queries. Holds only options, so one engine serves every tenant
/// and thread; the data comes with each call as a [`Querier`].
#[derive(Clone, Debug)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// An engine with the given limits.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at one instant (`/api/v1/query`). A range-vector expression
    /// yields a [`Value::Matrix`] of raw samples, as in Prometheus.
    pub fn instant(
        &self,
        q: &dyn Querier,
        query: &str,
        time_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<Value, PromqlError> {
        let expr = parse(query)?;
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut ev = eval::Evaluator::new(q, &self.opts, deadline, time_ms, time_ms);
        ev.instant(&expr, time_ms)
    }

    /// Evaluates `query` at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`
    /// (`/api/v1/query_range`); the result is a matrix sorted by label set, or an
    /// error for expressions that are not scalars or instant vectors.
    pub fn range(
        &self,
        q: &dyn Querier,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<Value, PromqlError> {
        if step_ms <= 0 {
            return Err(PromqlError::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(PromqlError::bad(
                "end timestamp must not be before start time",
            ));
        }
        let points = (end_ms - start_ms) / step_ms;
        if points > self.opts.max_points_per_series as i64 {
            return Err(PromqlError::bad(format!(
                "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                thousands(self.opts.max_points_per_series)
            )));
        }
        let expr = parse(query)?;
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut ev = eval::Evaluator::new(q, &self.opts, deadline, start_ms, end_ms);
        ev.range(&expr, start_ms, end_ms, step_ms)
    }
}

/// Formats `query` the way Prometheus's `/api/v1/format_query` does: parsed and
/// printed back, split over lines where it is long.
pub fn format_query(query: &str) -> Result<String, PromqlError> {
    Ok(parse(query)?.prettify())
}

/// Parses a series selector as the Prometheus API's `match[]` takes it (`up{job="api"}`,
/// `{__name__=~"x.*"}`): no functions, `offset` or `@`, and at least one matcher that
/// does not match the empty string.
pub fn parse_selector(text: &str) -> Result<Vec<crate::metrics::Matcher>, PromqlError> {
    match parse(text)? {
        promql_parser::parser::Expr::VectorSelector(vs)
            if vs.offset.is_none() && vs.at.is_none() =>
        {
            eval::selector_matchers(&vs)
        }
        _ => Err(PromqlError::Parse(format!(
            "{text:?} is not a plain series selector"
        ))),
    }
}

/// Parses a query as the engine does, for callers that read its shape themselves (log
/// alert rules): registering the 2.42 functions the parser crate lacks, and refusing a
/// query too long or too deep to handle safely (see [`depth`]).
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, PromqlError> {
    functions::register_legacy_functions();
    depth::parse_bounded(query, |query| {
        promql_parser::parser::parse(query).map_err(PromqlError::Parse)
    })
}

/// `11000` -> `11,000`, as Go's `%d` with Prometheus's message has it.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
