//! `GET /api/v1/logs/search`, and the bounded search a live tail's polls share with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::logs::{
    CancelOnDrop, Deadline, LogQuery, LogQueryError, LogSearchResult, MAX_LIMIT, SortOrder,
};

use super::timeparse::{format_time, parse_time};
use super::{ApiError, ApiState, render};
use crate::config::parse_duration;
use vantage_storage::meta::Scope;

use crate::ingest::now_ns;
use crate::telemetry::{EndpointLabels, OutcomeLabels};

/// Hits returned when the request names no limit.
const DEFAULT_LIMIT: usize = 100;
/// Time range searched when the request names no start: the last hour, like Grafana.
const DEFAULT_RANGE_NS: i64 = 3_600 * 1_000_000_000;

/// Query-string parameters of a search.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchParams {
    #[serde(default)]
    query: String,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
    histogram: Option<String>,
    timeout: Option<String>,
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

pub(super) fn query_error(e: LogQueryError) -> ApiError {
    match e {
        LogQueryError::Internal(inner) => {
            tracing::error!(error = %inner, "log search failed");
            ApiError::new(
                ErrorCode::Internal,
                "log search failed; see the collector log",
            )
        }
        e @ LogQueryError::Timeout(_) => ApiError::new(ErrorCode::Timeout, e.to_string()),
        // No one is left to read it.
        e @ LogQueryError::Cancelled => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        other => bad(other.to_string()),
    }
}

/// The label of a search's outcome in `vantage_log_searches_total`.
fn outcome(result: &Result<LogSearchResult, LogQueryError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(LogQueryError::Timeout(_)) => "timeout",
        Err(LogQueryError::Cancelled) => "cancelled",
        Err(LogQueryError::Internal(_)) => "error",
        Err(
            LogQueryError::Parse { .. }
            | LogQueryError::TooComplex(_)
            | LogQueryError::Invalid(_)
            | LogQueryError::BadParameter(_),
        ) => "invalid",
    }
}

/// The search's time: the request's `timeout`, capped by `logs.search_timeout`.
fn search_timeout(state: &ApiState, asked: Option<&str>) -> Result<Duration, ApiError> {
    let configured = state.live.get().log_search_timeout;
    let Some(text) = asked else {
        return Ok(configured);
    };
    let asked = parse_duration(text).map_err(|e| bad(format!("timeout: {e}")))?;
    if asked.is_zero() {
        return Err(bad("timeout: must be more than zero"));
    }
    Ok(asked.min(configured))
}

/// Counts a gauge up while alive.
struct Occupying(prometheus_client::metrics::gauge::Gauge);

impl Occupying {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Occupying(gauge.clone())
    }
}

impl Drop for Occupying {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which searches `vantage_log_searches_total` counts: the search endpoint's, not a live
/// tail's twice-a-second polls.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    Yes,
    No,
}

/// Runs `query` once one of the `logs.max_concurrent_searches` slots is free, on a
/// blocking thread, until `deadline`. Waiting for the slot counts against the deadline;
/// the slot is held until the search has stopped, so a search whose client went away
/// (dropping this future cancels it) still counts until it has.
pub(super) async fn bounded_search(
    state: &Arc<ApiState>,
    query: LogQuery,
    deadline: Deadline,
    counted: Counted,
) -> Result<LogSearchResult, ApiError> {
    let telemetry = state.telemetry.clone();
    let count = move |outcome: &'static str| {
        if counted == Counted::Yes {
            telemetry
                .log_searches
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    };
    let slot = {
        let _waiting = Occupying::new(&state.telemetry.log_searches_waiting);
        let acquire = state.log_search_slots.clone().acquire_owned();
        let acquired = match deadline.remaining() {
            Some(left) => tokio::time::timeout(left, acquire).await,
            None => Ok(acquire.await),
        };
        match acquired {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the collector is shutting down",
                ));
            }
            Err(_) => {
                count("busy");
                let mut e = ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "no search slot came free within the search's {}: {} searches are running \
                         (logs.max_concurrent_searches); retry later",
                        vantage_proto::config::format_duration(deadline.budget()),
                        state.live.get().max_concurrent_searches,
                    ),
                );
                e.retry_after = Some(Duration::from_secs(1));
                return Err(e);
            }
        }
    };
    // Dropped with this future: when the client goes away, or after the search ended
    // (cancelling a finished search changes nothing).
    let _cancel = CancelOnDrop(deadline.clone());
    let store = state.logs.clone();
    let running = state.telemetry.log_searches_running.clone();
    let result = super::blocking("search", move || {
        let _slot = slot;
        let _running = Occupying::new(&running);
        let result = store.search_until(&query, &deadline);
        count(outcome(&result));
        result
    })
    .await?;
    result.map_err(query_error)
}

fn build_query(
    tenant: String,
    p: SearchParams,
    max_hits_bytes: usize,
) -> Result<LogQuery, ApiError> {
    let now = i64::try_from(now_ns()).unwrap_or(i64::MAX);
    let end = match &p.end {
        Some(t) => parse_time(t, now).map_err(|e| bad(format!("end: {e}")))?,
        None => now,
    };
    let start = match &p.start {
        Some(t) => parse_time(t, now).map_err(|e| bad(format!("start: {e}")))?,
        None => end.saturating_sub(DEFAULT_RANGE_NS),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(bad(format!(
            "limit {limit} is over the maximum of {MAX_LIMIT}"
        )));
    }
    let order = match p.order.as_deref() {
        None | Some("desc") => SortOrder::TimeDesc,
        Some("asc") => SortOrder::TimeAsc,
        Some(other) => return Err(bad(format!("order {other:?} is not asc or desc"))),
    };
    let histogram_interval_ns = match &p.histogram {
        Some(h) => Some(
            parse_duration(h)
                .map_err(|e| bad(format!("histogram: {e}")))
                .and_then(|d| {
                    i64::try_from(d.as_nanos()).map_err(|_| bad("histogram: interval too long"))
                })?,
        ),
        None => None,
    };
    Ok(LogQuery {
        tenant,
        query: p.query,
        start_ns: start,
        end_ns: end,
        limit,
        order,
        histogram_interval_ns,
        after_lsn: None,
        max_hits_bytes,
    })
}

/// `n` bytes as people read them in a message: `16 MiB`, `64 KiB`, `1000 bytes`.
fn format_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn render_result(result: &LogSearchResult, took: Duration) -> Value {
    let mut body = json!({
        "total": result.total,
        "took_ms": took.as_secs_f64() * 1e3,
        "hits": result.hits.iter().map(render::hit).collect::<Vec<_>>(),
    });
    if let Some(h) = &result.histogram {
        body["histogram"] = h
            .iter()
            .map(|b| json!({"start": format_time(b.start_ns), "start_unix_nano": b.start_ns.to_string(), "count": b.count}))
            .collect();
    }
    body
}

pub(super) async fn search(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let timeout = search_timeout(&state, params.timeout.as_deref())?;
    let max_hits_bytes = state.live.get().max_hits_bytes;
    let query = build_query(principal.tenant, params, max_hits_bytes)?;
    let limit = query.limit;
    let deadline = Deadline::starting(started, timeout);
    let result = bounded_search(&state, query, deadline, Counted::Yes).await?;
    if result.cut_at_max_bytes {
        // No partial page: the client would take it for all there is up to `limit`.
        return Err(bad(format!(
            "the {limit} hits asked for hold more than {} of records (logs.max_hits_bytes); \
             the first {} fit: ask for that many or fewer, or narrow the query",
            format_bytes(max_hits_bytes),
            result.hits.len()
        )));
    }
    let took = started.elapsed();
    state
        .telemetry
        .query_seconds
        .get_or_create(&EndpointLabels {
            endpoint: "logs_search",
        })
        .observe(took.as_secs_f64());
    Ok(Json(render_result(&result, took)).into_response())
}
