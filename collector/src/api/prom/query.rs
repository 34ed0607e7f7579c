//! `query`, `query_range`, `format_query`, `query_exemplars` and `status/buildinfo`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use vantage_storage::metrics::promql::{self, Engine, PromqlError, Value};
use vantage_storage::metrics::tsdb::TsdbQuerier;

use super::{Params, PromError, json, query_caller, success};
use crate::api::ApiState;
use crate::ingest::metrics::now_ms;
use crate::telemetry::{EndpointLabels, OutcomeLabels};

/// The Prometheus version whose API this one follows: Grafana enables features by it
/// (anything at or above 2.24 gets the full feature set), so it must be a real release.
pub(crate) const PROMETHEUS_API_VERSION: &str = "2.42.0";

/// The effective timeout: the request's `timeout`, capped by the configured one.
fn timeout(state: &ApiState, params: &Params) -> Result<Duration, PromError> {
    let configured = state.live.get().query_timeout;
    match params.get("timeout") {
        None => Ok(configured),
        Some(text) => {
            let ms = promql::parse_duration_ms(text)
                .map_err(|e| PromError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
            let asked = Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1));
            Ok(asked.min(configured))
        }
    }
}

/// Evaluates on a blocking thread, at most `max_concurrent_queries` at once (more wait
/// their turn, as with Prometheus's `--query.max-concurrency`).
async fn evaluate(
    state: &Arc<ApiState>,
    tenant: &str,
    endpoint: &'static str,
    run: impl FnOnce(&Engine, &TsdbQuerier) -> Result<Value, PromqlError> + Send + 'static,
) -> Result<Value, PromError> {
    let started = Instant::now();
    let _slot = state
        .query_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| PromError::bad_data("the collector is shutting down"))?;
    let querier = state.tsdb.querier(tenant);
    let engine = state.engine.clone();
    let result = crate::api::blocking("query evaluation", move || run(&engine, &querier)).await?;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.error_type(),
    };
    state
        .telemetry
        .promql_queries
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    state
        .telemetry
        .query_seconds
        .get_or_create(&EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
    result.map_err(|e| {
        if e.error_type() == "internal" {
            PromError::internal("query evaluation failed", &e)
        } else {
            e.into()
        }
    })
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, PromError> {
    params
        .get(name)
        .ok_or_else(|| PromError::bad_data(format!("invalid parameter {name:?}: missing")))
}

/// `GET|POST /api/v1/query`
pub(crate) async fn instant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let query = required(&params, "query")?.to_owned();
    let time = params.time_or("time", now_ms())?;
    let timeout = timeout(&state, &params)?;
    let value = evaluate(&state, &principal.tenant, "prom_query", move |engine, q| {
        engine.instant(q, &query, time, Some(timeout))
    })
    .await?;
    Ok(success(json::query_data(&value)))
}

/// `GET|POST /api/v1/query_range`
pub(crate) async fn range(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let query = required(&params, "query")?.to_owned();
    let start = params.time("start")?;
    let end = params.time("end")?;
    let step = promql::parse_duration_ms(required(&params, "step")?)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    // The engine refuses a reversed range, a step <= 0 and more than 11,000 points,
    // with Prometheus's messages, before it reads anything.
    let timeout = timeout(&state, &params)?;
    let value = evaluate(
        &state,
        &principal.tenant,
        "prom_query_range",
        move |engine, q| engine.range(q, &query, start, end, step, Some(timeout)),
    )
    .await?;
    Ok(success(json::query_data(&value)))
}

/// `GET|POST /api/v1/format_query`
pub(crate) async fn format(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    query_caller(&state, &headers)?;
    let formatted = promql::format_query(required(&params, "query")?)?;
    let mut out = String::new();
    json::string(&mut out, &formatted);
    Ok(success(out))
}

/// `GET|POST /api/v1/query_exemplars`: exemplars are not stored (OTLP exemplars are
/// dropped at mapping), so after checking the request like Prometheus, the answer is
/// always an empty list, which Grafana shows as "no exemplars".
pub(crate) async fn exemplars(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    query_caller(&state, &headers)?;
    let query = required(&params, "query")?;
    promql::format_query(query)?;
    params.time_or("start", 0)?;
    params.time_or("end", 0)?;
    Ok(success("[]".to_owned()))
}

/// `GET /api/v1/status/buildinfo`: a Prometheus version, so Grafana treats the
/// collector as Prometheus, and no `features` map (which would mark it as Mimir).
pub(crate) async fn buildinfo(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, PromError> {
    query_caller(&state, &headers)?;
    let data = serde_json::json!({
        "version": PROMETHEUS_API_VERSION,
        "revision": "vantage",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "vantageVersion": env!("CARGO_PKG_VERSION"),
    });
    Ok(success(data.to_string()).into_response())
}
