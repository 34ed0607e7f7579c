//! The Jaeger query HTTP API (what Jaeger's UI and Grafana's Jaeger data source call),
//! answering in Jaeger's JSON model: every response is the `structuredResponse`
//! `{"data": ..., "total": n, "limit": 0, "offset": 0, "errors": null}`, traces are
//! `{traceID, spans, processes, warnings}`, times are microseconds.
//!
//! OTLP spans are translated the way Jaeger's own OTLP translator does: the parent
//! becomes a `CHILD_OF` reference and links `FOLLOWS_FROM`; kind, status and scope
//! become the `span.kind`, `otel.status_code`, `error`, `otel.status_description`,
//! `otel.scope.name` and `otel.scope.version` tags; events become logs with an `event`
//! field; each distinct resource becomes a process.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_proto::json::any_value_to_json;
use vantage_proto::logs::hex_id;
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vantage_storage::meta::Scope;
use vantage_storage::traces::{MAX_SEARCH_LIMIT, Trace, TraceQuery};

use super::traces::{
    DEFAULT_LIMIT, DEFAULT_RANGE_NS, TRACE_QUERY, lookup, observe, parse_go_duration, parse_tags,
    query_error,
};
use super::{ApiError, ApiState, TaskFailed, blocking};
use crate::ingest::now_ns;

/// The Jaeger routes.
pub(super) fn routes(c: super::catalog::Catalog) -> super::catalog::Catalog {
    use super::catalog::Access;
    use axum::http::Method;
    const T: &str = "traces (Jaeger query API)";
    let q = Access::Scope(vantage_storage::meta::Scope::Query);
    c.add(
        Method::GET,
        "/api/services",
        q,
        T,
        "services with spans",
        services,
    )
    .response::<super::schemas::JaegerResponse>()
    .add(
        Method::GET,
        "/api/services/{service}/operations",
        q,
        T,
        "a service's operations",
        service_operations,
    )
    .response::<super::schemas::JaegerResponse>()
    .add(
        Method::GET,
        "/api/operations",
        q,
        T,
        "operations with their span kind",
        operations,
    )
    .query::<OperationsParams>()
    .response::<super::schemas::JaegerResponse>()
    .add(
        Method::GET,
        "/api/traces",
        q,
        T,
        "search traces",
        find_traces,
    )
    .query::<FindParams>()
    .response::<super::schemas::JaegerResponse>()
    .add(
        Method::GET,
        "/api/traces/{trace_id}",
        q,
        T,
        "one trace",
        trace_by_id,
    )
    .response::<super::schemas::JaegerResponse>()
    .add(
        Method::GET,
        "/api/dependencies",
        q,
        T,
        "service dependency edges",
        dependencies,
    )
    .query::<DependencyParams>()
    .response::<super::schemas::JaegerResponse>()
}

/// Jaeger's `structuredResponse` around `data`.
fn structured(data: Value, total: usize) -> Response {
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
        .into_response()
}

/// An error in Jaeger's shape: `errors: [{code, msg}]` with the HTTP status.
struct JaegerError(ApiError);

impl From<ApiError> for JaegerError {
    fn from(e: ApiError) -> Self {
        JaegerError(e)
    }
}

impl From<TaskFailed> for JaegerError {
    fn from(failed: TaskFailed) -> Self {
        JaegerError(failed.into())
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let e = self.0;
        if matches!(
            e.code,
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::ResourceExhausted
        ) {
            // Keep the WWW-Authenticate and Retry-After headers of the native error.
            return e.into_response();
        }
        let status = e.code.http_status();
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": e.message}],
        });
        (status, Json(body)).into_response()
    }
}

fn bad(message: impl Into<String>) -> JaegerError {
    JaegerError(ApiError::new(ErrorCode::InvalidArgument, message))
}

fn kind_name(kind: i32) -> Option<&'static str> {
    match kind {
        1 => Some("internal"),
        2 => Some("server"),
        3 => Some("client"),
        4 => Some("producer"),
        5 => Some("consumer"),
        _ => None,
    }
}

fn kind_number(name: &str) -> Option<i32> {
    match name {
        "internal" => Some(1),
        "server" => Some(2),
        "client" => Some(3),
        "producer" => Some(4),
        "consumer" => Some(5),
        "unspecified" => Some(0),
        _ => None,
    }
}

/// One Jaeger tag `{key, type, value}`.
fn tag(key: &str, value: &AnyValue) -> Value {
    let (ty, v) = match &value.value {
        Some(any_value::Value::StringValue(s)) => ("string", json!(s)),
        Some(any_value::Value::BoolValue(b)) => ("bool", json!(b)),
        Some(any_value::Value::IntValue(i)) => ("int64", json!(i)),
        Some(any_value::Value::DoubleValue(d)) => ("float64", json!(d)),
        Some(any_value::Value::BytesValue(b)) => ("binary", json!(hex_id(b))),
        Some(_) => ("string", json!(any_value_to_json(value).to_string())),
        None => ("string", json!("")),
    };
    json!({"key": key, "type": ty, "value": v})
}

fn str_tag(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

fn tags(attributes: &[KeyValue]) -> Vec<Value> {
    attributes
        .iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref().unwrap_or(&AnyValue::default())))
        .collect()
}

fn micros(ns: u64) -> u64 {
    ns / 1_000
}

/// A trace in Jaeger's model.
fn jaeger_trace(trace: &Trace) -> Value {
    let trace_id = hex_id(&trace.trace_id);
    // One process per distinct resource, numbered in order of first appearance.
    let mut processes: Vec<(&[KeyValue], String)> = Vec::new();
    let mut spans = Vec::with_capacity(trace.spans.len());
    for s in &trace.spans {
        let attrs = s.resource.attributes.as_slice();
        let pid = match processes.iter().position(|(a, _)| *a == attrs) {
            Some(i) => format!("p{}", i + 1),
            None => {
                processes.push((attrs, s.service_name().to_string()));
                format!("p{}", processes.len())
            }
        };
        let sp = &s.span;
        let mut references = Vec::new();
        if !sp.parent_span_id.is_empty() {
            references.push(json!({
                "refType": "CHILD_OF",
                "traceID": trace_id,
                "spanID": hex_id(&sp.parent_span_id),
            }));
        }
        for link in &sp.links {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": hex_id(&link.trace_id),
                "spanID": hex_id(&link.span_id),
            }));
        }
        let mut span_tags = tags(&sp.attributes);
        if let Some(kind) = kind_name(sp.kind) {
            span_tags.push(str_tag("span.kind", kind));
        }
        if let Some(status) = &sp.status {
            match status.code {
                1 => span_tags.push(str_tag("otel.status_code", "OK")),
                2 => {
                    span_tags.push(str_tag("otel.status_code", "ERROR"));
                    span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
                }
                _ => {}
            }
            if !status.message.is_empty() {
                span_tags.push(str_tag("otel.status_description", &status.message));
            }
        }
        if !s.scope.name.is_empty() {
            span_tags.push(str_tag("otel.scope.name", &s.scope.name));
        }
        if !s.scope.version.is_empty() {
            span_tags.push(str_tag("otel.scope.version", &s.scope.version));
        }
        let logs: Vec<Value> = sp
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![str_tag("event", &e.name)];
                fields.extend(tags(&e.attributes));
                json!({"timestamp": micros(e.time_unix_nano), "fields": fields})
            })
            .collect();
        spans.push(json!({
            "traceID": trace_id,
            "spanID": hex_id(&sp.span_id),
            "operationName": sp.name,
            "references": references,
            "flags": sp.flags,
            "startTime": micros(sp.start_time_unix_nano),
            "duration": micros(sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano)),
            "tags": span_tags,
            "logs": logs,
            "processID": pid,
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, (attrs, service))| {
            let process_tags: Vec<Value> = attrs
                .iter()
                .filter(|kv| kv.key != "service.name")
                .map(|kv| tag(&kv.key, kv.value.as_ref().unwrap_or(&AnyValue::default())))
                .collect();
            (
                format!("p{}", i + 1),
                json!({"serviceName": service, "tags": process_tags}),
            )
        })
        .collect();
    let warnings = trace.truncated.then(|| {
        vec![format!(
            "trace has {} spans; only the first {} by start time are shown",
            trace.total_spans,
            trace.spans.len()
        )]
    });
    json!({
        "traceID": trace_id,
        "spans": spans,
        "processes": processes,
        "warnings": warnings,
    })
}

async fn services(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let store = state.traces.clone();
    let names = blocking(TRACE_QUERY, move || store.services(&principal.tenant))
        .await?
        .map_err(query_error)?;
    observe(&state, "jaeger_services", started);
    let n = names.len();
    Ok(structured(json!(names), n))
}

async fn service_operations(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let store = state.traces.clone();
    let ops = blocking(TRACE_QUERY, move || {
        store.operations(&principal.tenant, &service, None)
    })
    .await?
    .map_err(query_error)?;
    let mut names: Vec<String> = ops.into_iter().map(|o| o.name).collect();
    names.dedup();
    observe(&state, "jaeger_operations", started);
    let n = names.len();
    Ok(structured(json!(names), n))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct OperationsParams {
    service: Option<String>,
    #[serde(rename = "spanKind")]
    span_kind: Option<String>,
}

async fn operations(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<OperationsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let service = params
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("parameter 'service' is required"))?;
    let kind = match params.span_kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(kind_number(k).ok_or_else(|| {
            bad(format!(
                "spanKind {k:?} is not one of server, client, producer, consumer, internal"
            ))
        })?),
    };
    let store = state.traces.clone();
    let ops = blocking(TRACE_QUERY, move || {
        store.operations(&principal.tenant, &service, kind)
    })
    .await?
    .map_err(query_error)?;
    observe(&state, "jaeger_operations", started);
    let data: Vec<Value> = ops
        .iter()
        .map(|o| json!({"name": o.name, "spanKind": kind_name(o.kind).unwrap_or("")}))
        .collect();
    let n = data.len();
    Ok(structured(json!(data), n))
}

async fn trace_by_id(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Path(trace_id): Path<String>,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let trace = lookup(&state.traces, principal.tenant, &trace_id).await?;
    observe(&state, "jaeger_trace", started);
    Ok(structured(json!([jaeger_trace(&trace)]), 1))
}

/// `/api/traces` parameters; unknown ones (Grafana and the UI send a few) are ignored,
/// as Jaeger does.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct FindParams {
    service: Option<String>,
    operation: Option<String>,
    tags: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    lookback: Option<String>,
}

fn parse_micros(name: &str, v: &str) -> Result<i64, JaegerError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .and_then(|us| us.checked_mul(1_000))
        .ok_or_else(|| bad(format!("{name} {v:?} is not microseconds since the epoch")))
}

fn build_find(tenant: String, p: FindParams) -> Result<TraceQuery, JaegerError> {
    let now = i64::try_from(now_ns()).unwrap_or(i64::MAX);
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let end = match nonempty(p.end) {
        Some(v) => parse_micros("end", &v)?,
        None => now,
    };
    let start = match nonempty(p.start) {
        Some(v) => parse_micros("start", &v)?,
        None => {
            let lookback = match nonempty(p.lookback).filter(|l| l != "custom") {
                Some(l) => parse_go_duration(&l).map_err(|e| bad(format!("lookback: {e}")))?,
                None => DEFAULT_RANGE_NS,
            };
            end.saturating_sub(lookback)
        }
    };
    let limit = match nonempty(p.limit) {
        Some(l) => l
            .trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("limit {l:?} is not a number")))?,
        None => DEFAULT_LIMIT,
    };
    // Jaeger treats 0 as "the default"; more than the store allows is capped.
    let limit = if limit == 0 {
        DEFAULT_LIMIT
    } else {
        limit.min(MAX_SEARCH_LIMIT)
    };
    let duration = |name: &str, v: Option<String>| -> Result<Option<i64>, JaegerError> {
        nonempty(v)
            .map(|d| parse_go_duration(&d).map_err(|e| bad(format!("{name}: {e}"))))
            .transpose()
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
        ..TraceQuery::new(tenant, start, end, limit)
    })
}

async fn find_traces(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<FindParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let query = build_find(principal.tenant, params)?;
    let store = state.traces.clone();
    let traces = blocking(TRACE_QUERY, move || store.search_traces(&query))
        .await?
        .map_err(query_error)?;
    observe(&state, "jaeger_find_traces", started);
    let data: Vec<Value> = traces.iter().map(jaeger_trace).collect();
    let n = data.len();
    Ok(structured(json!(data), n))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct DependencyParams {
    #[serde(rename = "endTs")]
    end_ts: Option<String>,
    lookback: Option<String>,
}

async fn dependencies(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<DependencyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, JaegerError> {
    let started = Instant::now();
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let millis = |name: &str, v: &str| -> Result<i64, JaegerError> {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .and_then(|ms| ms.checked_mul(1_000_000))
            .ok_or_else(|| bad(format!("{name} {v:?} is not milliseconds")))
    };
    let end = match params.end_ts.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => millis("endTs", v)?,
        None => i64::try_from(now_ns()).unwrap_or(i64::MAX),
    };
    let lookback = match params.lookback.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => millis("lookback", v)?,
        None => 86_400_000 * 1_000_000,
    };
    let start = end.saturating_sub(lookback);
    if start >= end {
        return Err(bad("lookback must be positive"));
    }
    let store = state.traces.clone();
    let tenant = principal.tenant;
    let map = blocking(TRACE_QUERY, move || store.dependencies(&tenant, start, end))
        .await?
        .map_err(query_error)?;
    observe(&state, "jaeger_dependencies", started);
    let data: Vec<Value> = map
        .edges
        .iter()
        .map(|e| json!({"parent": e.parent, "child": e.child, "callCount": e.call_count}))
        .collect();
    let n = data.len();
    Ok(structured(json!(data), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::common::v1::InstrumentationScope;
    use vantage_proto::otlp::resource::v1::Resource;
    use vantage_proto::otlp::trace::v1::span::Event;
    use vantage_proto::otlp::trace::v1::{Span, Status};
    use vantage_storage::traces::StoredSpan;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn spans_translate_like_jaegers_otlp_translator() {
        let resource = |svc: &str| Resource {
            attributes: vec![
                kv("service.name", any_value::Value::StringValue(svc.into())),
                kv("host.name", any_value::Value::StringValue("h".into())),
            ],
            ..Default::default()
        };
        let span = |id: u8, parent: Option<u8>| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("op{id}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_123_456_789,
            end_time_unix_nano: 1_700_000_000_125_456_789,
            attributes: vec![kv("http.status_code", any_value::Value::IntValue(500))],
            events: vec![Event {
                time_unix_nano: 1_700_000_000_124_000_000,
                name: "retry".into(),
                ..Default::default()
            }],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        };
        let stored = |svc: &str, id: u8, parent: Option<u8>| StoredSpan {
            resource: resource(svc),
            scope: InstrumentationScope {
                name: "lib".into(),
                ..Default::default()
            },
            span: span(id, parent),
            depth: 0,
        };
        let trace = Trace {
            trace_id: [0xab; 16],
            spans: vec![
                stored("a", 1, None),
                stored("b", 2, Some(1)),
                stored("a", 3, Some(2)),
            ],
            total_spans: 3,
            error_spans: 3,
            truncated: false,
            stored_bytes: 0,
        };
        let j = jaeger_trace(&trace);
        assert_eq!(j["traceID"], "ab".repeat(16));
        assert_eq!(j["processes"]["p1"]["serviceName"], "a");
        assert_eq!(j["processes"]["p2"]["serviceName"], "b");
        assert_eq!(
            j["processes"]["p1"]["tags"],
            json!([{"key": "host.name", "type": "string", "value": "h"}])
        );
        let s1 = &j["spans"][1];
        assert_eq!(s1["processID"], "p2");
        assert_eq!(s1["spanID"], "02".repeat(8));
        assert_eq!(s1["operationName"], "op2");
        assert_eq!(s1["startTime"], 1_700_000_000_123_456u64);
        assert_eq!(s1["duration"], 2_000);
        assert_eq!(
            s1["references"],
            json!([{"refType": "CHILD_OF", "traceID": "ab".repeat(16), "spanID": "01".repeat(8)}])
        );
        assert_eq!(j["spans"][2]["processID"], "p1");
        assert_eq!(j["spans"][0]["references"], json!([]));
        let tags = s1["tags"].as_array().unwrap();
        assert!(tags.contains(&json!({"key": "http.status_code", "type": "int64", "value": 500})));
        assert!(tags.contains(&json!({"key": "span.kind", "type": "string", "value": "client"})));
        assert!(tags.contains(&json!({"key": "error", "type": "bool", "value": true})));
        assert!(tags.contains(
            &json!({"key": "otel.status_description", "type": "string", "value": "boom"})
        ));
        assert_eq!(
            s1["logs"],
            json!([{"timestamp": 1_700_000_000_124_000u64, "fields": [{"key": "event", "type": "string", "value": "retry"}]}])
        );
        assert_eq!(j["warnings"], Value::Null);
    }

    #[test]
    fn find_parameters() {
        let p = |q: &str| -> FindParams { serde_urlencoded::from_str(q).unwrap() };
        let q = build_find(
            "t".into(),
            p("service=a&operation=&tags=%7B%22error%22%3A%22true%22%7D&minDuration=1.5ms&start=1000&end=2000&limit=0"),
        )
        .ok()
        .unwrap();
        assert_eq!(q.service.as_deref(), Some("a"));
        assert_eq!(q.operation, None);
        assert_eq!(q.tags, vec![("error".to_string(), "true".to_string())]);
        assert_eq!(q.min_duration_ns, Some(1_500_000));
        assert_eq!((q.start_ns, q.end_ns), (1_000_000, 2_000_000));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert!(build_find("t".into(), p("start=abc")).is_err());
        assert!(build_find("t".into(), p("lookback=2x")).is_err());
        let q = build_find("t".into(), p("lookback=2h&end=10000000000"))
            .ok()
            .unwrap();
        assert_eq!(q.end_ns - q.start_ns, 7_200_000_000_000);
    }
}
