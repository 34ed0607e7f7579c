//! The native trace API: `GET /api/v1/traces/{trace_id}` (spans in tree order,
//! optionally with the trace's logs), `GET /api/v1/traces/search` (trace summaries) and
//! `GET /api/v1/traces/dependencies` (the service map).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_proto::json::attributes_to_json;
use vantage_proto::logs::hex_id;
use vantage_storage::logs::{LogQuery, SortOrder};
use vantage_storage::meta::Scope;
use vantage_storage::traces::{
    DependencyMap, MAX_SEARCH_LIMIT, MAX_TRACE_SPANS, StatusFilter, StoredSpan, Trace, TraceQuery,
    TraceQueryError, TraceStore, TraceSummary, parse_trace_id,
};

use super::timeparse::{format_time, parse_time};
use super::{ApiError, ApiState, blocking, render};
use crate::ingest::now_ns;
use crate::telemetry::EndpointLabels;

/// Traces a search returns when the request names no limit (Jaeger UI's default).
pub(super) const DEFAULT_LIMIT: usize = 20;
/// Time range searched when the request names no start: the last hour, like Grafana.
pub(super) const DEFAULT_RANGE_NS: i64 = 3_600 * 1_000_000_000;
/// Most log records `withLogs=true` adds to a trace.
const MAX_TRACE_LOGS: usize = 1_000;
/// How far around the trace's spans its logs are looked for (clock skew between hosts).
const LOG_WINDOW_NS: i64 = 3_600 * 1_000_000_000;

/// The trace routes.
pub(super) fn routes(c: super::catalog::Catalog) -> super::catalog::Catalog {
    use super::catalog::Access;
    use axum::http::Method;
    const T: &str = "traces";
    let q = Access::Scope(vantage_storage::meta::Scope::Query);
    c.add(
        Method::GET,
        "/api/v1/traces/search",
        q,
        T,
        "trace summaries matching filters",
        search,
    )
    .query::<SearchParams>()
    .response::<super::schemas::TraceSearchResult>()
    .add(
        Method::GET,
        "/api/v1/traces/dependencies",
        q,
        T,
        "the service map over a time range",
        dependencies,
    )
    .query::<DependencyParams>()
    .response::<super::schemas::Dependencies>()
    .add(
        Method::GET,
        "/api/v1/traces/{trace_id}",
        q,
        T,
        "one trace in tree order (withLogs=true adds its logs)",
        trace_by_id,
    )
    .query::<TraceParams>()
    .response::<super::schemas::TraceJson>()
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

pub(super) fn query_error(e: TraceQueryError) -> ApiError {
    match e {
        TraceQueryError::Internal(inner) => {
            tracing::error!(error = %inner, "trace query failed");
            ApiError::new(
                ErrorCode::Internal,
                "trace query failed; see the collector log",
            )
        }
        other => bad(other.to_string()),
    }
}

pub(super) fn observe(state: &ApiState, endpoint: &'static str, started: Instant) {
    state
        .telemetry
        .query_seconds
        .get_or_create(&EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
}

/// Parses a Go-style duration as Jaeger's UI sends it (`1.5s`, `100ms`, `250us`,
/// `1m30s`); a bare number is microseconds, Jaeger's unit. Returns nanoseconds.
pub(super) fn parse_go_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(us) = t.parse::<i64>() {
        return us
            .checked_mul(1_000)
            .filter(|v| *v >= 0)
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has no unit (use ns, us, ms, s, m or h)"))?;
        let (number, tail) = rest.split_at(split);
        let n: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3_600e9,
            _ => return Err(format!("{text:?} has unknown unit {unit:?}")),
        };
        total += n * scale;
        rest = next;
    }
    if !total.is_finite() || total > 9.2e18 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(total.round() as i64)
}

/// Parses `key=value` tag filters separated by spaces (logfmt: values may be quoted),
/// or a JSON object of strings as Jaeger's `tags` parameter is.
pub(super) fn parse_tags(text: &str) -> Result<Vec<(String, String)>, String> {
    let t = text.trim();
    if t.starts_with('{') {
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(t).map_err(|e| format!("tags is not a JSON object: {e}"))?;
        return map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                Value::Number(_) | Value::Bool(_) => Ok((k, v.to_string())),
                _ => Err(format!(
                    "tag {k:?}: values are strings, numbers or booleans"
                )),
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut chars = t.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        let mut has_equals = false;
        for c in chars.by_ref() {
            if c == '=' {
                has_equals = true;
                break;
            }
            key.push(c);
        }
        if !has_equals || key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("tags {text:?}: expected key=value pairs"));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err(format!("tags {text:?}: unterminated quote")),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| !c.is_whitespace()).collect()
        };
        out.push((key, value));
    }
}

/// A trace as JSON: its spans in tree order with everything they carry.
fn render_trace(trace: &Trace) -> Value {
    json!({
        "trace_id": hex_id(&trace.trace_id),
        "total_spans": trace.total_spans,
        "error_spans": trace.error_spans,
        "truncated": trace.truncated,
        "max_spans": MAX_TRACE_SPANS,
        "spans": trace.spans.iter().map(render_span).collect::<Vec<_>>(),
    })
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn render_span(s: &StoredSpan) -> Value {
    let sp = &s.span;
    let status = sp.status.clone().unwrap_or_default();
    json!({
        "trace_id": hex_id(&sp.trace_id),
        "span_id": hex_id(&sp.span_id),
        "parent_span_id": hex_id(&sp.parent_span_id),
        "depth": s.depth,
        "name": sp.name,
        "kind": kind_name(sp.kind),
        "service_name": s.service_name(),
        "start": format_time(i64::try_from(sp.start_time_unix_nano).unwrap_or(i64::MAX)),
        "start_time_unix_nano": sp.start_time_unix_nano.to_string(),
        "end_time_unix_nano": sp.end_time_unix_nano.to_string(),
        "duration_ns": sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano).to_string(),
        "status": {"code": status_name(status.code), "message": status.message},
        "attributes": attributes_to_json(&sp.attributes),
        "resource": attributes_to_json(&s.resource.attributes),
        "scope": {"name": s.scope.name, "version": s.scope.version},
        "trace_state": sp.trace_state,
        "flags": sp.flags,
        "events": sp.events.iter().map(|e| json!({
            "time_unix_nano": e.time_unix_nano.to_string(),
            "name": e.name,
            "attributes": attributes_to_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": sp.links.iter().map(|l| json!({
            "trace_id": hex_id(&l.trace_id),
            "span_id": hex_id(&l.span_id),
            "attributes": attributes_to_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "dropped_attributes_count": sp.dropped_attributes_count,
        "dropped_events_count": sp.dropped_events_count,
        "dropped_links_count": sp.dropped_links_count,
    })
}

pub(super) fn render_summary(s: &TraceSummary) -> Value {
    json!({
        "trace_id": hex_id(&s.trace_id),
        "root_service": s.root_service,
        "root_name": s.root_name,
        "start": format_time(s.start_ns),
        "start_time_unix_nano": s.start_ns.to_string(),
        "duration_ns": s.duration_ns.to_string(),
        "duration_ms": s.duration_ns as f64 / 1e6,
        "span_count": s.span_count,
        "error_count": s.error_count,
        "services": s.services,
    })
}

fn render_dependencies(d: &DependencyMap) -> Value {
    json!({
        "edges": d.edges.iter().map(|e| json!({
            "parent": e.parent,
            "child": e.child,
            "call_count": e.call_count,
            "error_count": e.error_count,
        })).collect::<Vec<_>>(),
        "spans_examined": d.spans_examined,
        "truncated": d.truncated,
    })
}

/// What a trace-store call is called in the error when it panics.
pub(super) const TRACE_QUERY: &str = "trace query";

/// A trace lookup for `tenant`; 400 on a malformed id, 404 when there is no such trace.
pub(super) async fn lookup(
    store: &TraceStore,
    tenant: String,
    id_text: &str,
) -> Result<Trace, ApiError> {
    let id = parse_trace_id(id_text).map_err(|e| bad(e.to_string()))?;
    let store = store.clone();
    blocking(TRACE_QUERY, move || store.get_trace(&tenant, &id))
        .await?
        .map_err(query_error)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "trace not found"))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TraceParams {
    #[serde(rename = "withLogs", default)]
    with_logs: bool,
}

async fn trace_by_id(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Path(trace_id): Path<String>,
    params: Result<Query<TraceParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let tenant = principal.tenant;
    let trace = lookup(&state.traces, tenant.clone(), &trace_id).await?;
    let mut body = render_trace(&trace);
    if params.with_logs {
        let first = trace
            .spans
            .iter()
            .map(|s| i64::try_from(s.span.start_time_unix_nano).unwrap_or(i64::MAX))
            .min()
            .unwrap_or(0);
        let last = trace
            .spans
            .iter()
            .map(|s| i64::try_from(s.span.end_time_unix_nano).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(first);
        let query = LogQuery {
            tenant,
            query: format!("trace_id:{}", hex_id(&trace.trace_id)),
            start_ns: first.saturating_sub(LOG_WINDOW_NS),
            end_ns: last.saturating_add(LOG_WINDOW_NS),
            limit: MAX_TRACE_LOGS,
            order: SortOrder::TimeAsc,
            histogram_interval_ns: None,
            after_lsn: None,
            // Past it, fewer logs than `logs_total`, as past `MAX_TRACE_LOGS`.
            max_hits_bytes: state.live.get().max_hits_bytes,
        };
        let logs = state.logs.clone();
        let result = blocking("log search", move || logs.search(&query))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "log search for a trace failed");
                ApiError::new(
                    ErrorCode::Internal,
                    "log search failed; see the collector log",
                )
            })?;
        body["logs"] = result.hits.iter().map(render::hit).collect();
        body["logs_total"] = json!(result.total);
    }
    observe(&state, "traces_get", started);
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchParams {
    service: Option<String>,
    operation: Option<String>,
    tags: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

fn time_range(start: Option<&str>, end: Option<&str>) -> Result<(i64, i64), ApiError> {
    let now = i64::try_from(now_ns()).unwrap_or(i64::MAX);
    let end = match end {
        Some(t) => parse_time(t, now).map_err(|e| bad(format!("end: {e}")))?,
        None => now,
    };
    let start = match start {
        Some(t) => parse_time(t, now).map_err(|e| bad(format!("start: {e}")))?,
        None => end.saturating_sub(DEFAULT_RANGE_NS),
    };
    Ok((start, end))
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn build_search(tenant: String, p: SearchParams) -> Result<TraceQuery, ApiError> {
    let (start, end) = time_range(p.start.as_deref(), p.end.as_deref())?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(bad(format!(
            "limit {limit} is not between 1 and {MAX_SEARCH_LIMIT}"
        )));
    }
    let duration = |name: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        nonempty(v)
            .map(|d| parse_go_duration(&d).map_err(|e| bad(format!("{name}: {e}"))))
            .transpose()
    };
    let status = match nonempty(p.status).as_deref() {
        None => None,
        Some("error") => Some(StatusFilter::Error),
        Some("ok") => Some(StatusFilter::Ok),
        Some("unset") => Some(StatusFilter::Unset),
        Some(other) => return Err(bad(format!("status {other:?} is not error, ok or unset"))),
    };
    Ok(TraceQuery {
        service: nonempty(p.service),
        operation: nonempty(p.operation),
        tags: match nonempty(p.tags) {
            Some(t) => parse_tags(&t).map_err(bad)?,
            None => Vec::new(),
        },
        min_duration_ns: duration("minDuration", p.min_duration)?,
        max_duration_ns: duration("maxDuration", p.max_duration)?,
        status,
        ..TraceQuery::new(tenant, start, end, limit)
    })
}

async fn search(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let query = build_search(principal.tenant, params)?;
    let limit = query.limit;
    let store = state.traces.clone();
    let summaries = blocking(TRACE_QUERY, move || store.search(&query))
        .await?
        .map_err(query_error)?;
    observe(&state, "traces_search", started);
    Ok(Json(json!({
        "traces": summaries.iter().map(render_summary).collect::<Vec<_>>(),
        "limit": limit,
    }))
    .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DependencyParams {
    start: Option<String>,
    end: Option<String>,
}

async fn dependencies(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<DependencyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let (start, end) = time_range(params.start.as_deref(), params.end.as_deref())?;
    let store = state.traces.clone();
    let tenant = principal.tenant;
    let map = blocking(TRACE_QUERY, move || store.dependencies(&tenant, start, end))
        .await?
        .map_err(query_error)?;
    observe(&state, "traces_dependencies", started);
    Ok(Json(render_dependencies(&map)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_go_duration("100ms").unwrap(), 100_000_000);
        assert_eq!(parse_go_duration("250us").unwrap(), 250_000);
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(
            parse_go_duration("7").unwrap(),
            7_000,
            "bare numbers are µs"
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5 parsecs").is_err());
        assert!(parse_go_duration("1e400s").is_err());
        assert!(parse_go_duration("-5").is_err());
        assert!(parse_go_duration("99999999999999h").is_err());
    }

    #[test]
    fn tag_filters_logfmt_and_json() {
        assert_eq!(
            parse_tags(r#"http.status_code=500 user="a b""#).unwrap(),
            vec![
                ("http.status_code".to_string(), "500".to_string()),
                ("user".to_string(), "a b".to_string())
            ]
        );
        assert_eq!(
            parse_tags(r#"{"error":"true","code":7}"#).unwrap(),
            vec![
                ("code".to_string(), "7".to_string()),
                ("error".to_string(), "true".to_string())
            ]
        );
        assert!(parse_tags("novalue").is_err());
        assert!(parse_tags("a=1 b").is_err());
        assert_eq!(parse_tags("empty=").unwrap()[0].1, "");
        assert!(parse_tags(r#"a="unterminated"#).is_err());
        assert!(parse_tags(r#"{"a":[1]}"#).is_err());
        assert!(parse_tags("{not json").is_err());
        assert!(parse_tags("   ").unwrap().is_empty());
    }
}
