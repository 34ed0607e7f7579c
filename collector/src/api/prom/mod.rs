//! The Prometheus HTTP API on the API listener, with Prometheus's envelope, status codes
//! and error types, so Grafana's Prometheus data source and `promtool` work unchanged:
//! `query`, `query_range`, `series`, `labels`, `label/<name>/values`, `metadata`,
//! `query_exemplars`, `status/buildinfo`, `format_query`, and remote write at `write`.
//!
//! Every endpoint takes GET query strings and form-encoded POST bodies (Grafana's
//! default), merged as Go's `ParseForm` does.

mod json;
mod meta;
mod params;
mod query;
mod write;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use vantage_proto::ErrorCode;
use vantage_storage::meta::Scope;
use vantage_storage::metrics::promql::PromqlError;

use super::catalog::{Access, Catalog};
use super::{ApiState, authenticate, charge_query};
use crate::auth::Principal;
use axum::http::Method;

pub(crate) use params::Params;

/// The Prometheus API's routes.
pub(crate) fn routes(c: Catalog) -> Catalog {
    const T: &str = "metrics (Prometheus API)";
    let q = Access::Scope(Scope::Query);
    c.add(
        Method::GET,
        "/api/v1/query",
        q,
        T,
        "PromQL instant query",
        query::instant,
    )
    .query::<super::schemas::InstantQuery>().response::<super::schemas::PromResponse<super::schemas::QueryData>>()
    .add(
        Method::POST,
        "/api/v1/query",
        q,
        T,
        "PromQL instant query (form body)",
        query::instant,
    )
    .request_as::<super::schemas::InstantQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<super::schemas::QueryData>>()
    .add(
        Method::GET,
        "/api/v1/query_range",
        q,
        T,
        "PromQL range query",
        query::range,
    )
    .query::<super::schemas::RangeQuery>().response::<super::schemas::PromResponse<super::schemas::QueryData>>()
    .add(
        Method::POST,
        "/api/v1/query_range",
        q,
        T,
        "PromQL range query (form body)",
        query::range,
    )
    .request_as::<super::schemas::RangeQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<super::schemas::QueryData>>()
    .add(
        Method::GET,
        "/api/v1/format_query",
        q,
        T,
        "format a PromQL expression",
        query::format,
    )
    .query::<super::schemas::FormatQuery>().response::<super::schemas::PromResponse<String>>()
    .add(
        Method::POST,
        "/api/v1/format_query",
        q,
        T,
        "format a PromQL expression (form body)",
        query::format,
    )
    .request_as::<super::schemas::FormatQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<String>>()
    .add(
        Method::GET,
        "/api/v1/query_exemplars",
        q,
        T,
        "exemplars (always empty)",
        query::exemplars,
    )
    .query::<super::schemas::ExemplarQuery>().response::<super::schemas::PromResponse<Vec<serde_json::Value>>>()
    .add(
        Method::POST,
        "/api/v1/query_exemplars",
        q,
        T,
        "exemplars (always empty)",
        query::exemplars,
    )
    .request_as::<super::schemas::ExemplarQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<Vec<serde_json::Value>>>()
    .add(
        Method::GET,
        "/api/v1/status/buildinfo",
        q,
        T,
        "the Prometheus version this API follows",
        query::buildinfo,
    )
    .response::<super::schemas::PromResponse<std::collections::BTreeMap<String, String>>>()
    .add(
        Method::GET,
        "/api/v1/series",
        q,
        T,
        "series matching selectors",
        meta::series,
    )
    .query::<super::schemas::SeriesQuery>().response::<super::schemas::PromResponse<Vec<std::collections::BTreeMap<String, String>>>>()
    .add(
        Method::POST,
        "/api/v1/series",
        q,
        T,
        "series matching selectors (form body)",
        meta::series,
    )
    .request_as::<super::schemas::SeriesQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<Vec<std::collections::BTreeMap<String, String>>>>()
    .add(
        Method::GET,
        "/api/v1/labels",
        q,
        T,
        "label names",
        meta::labels,
    )
    .query::<super::schemas::SeriesQuery>().response::<super::schemas::PromResponse<Vec<String>>>()
    .add(
        Method::POST,
        "/api/v1/labels",
        q,
        T,
        "label names (form body)",
        meta::labels,
    )
    .request_as::<super::schemas::SeriesQuery>("application/x-www-form-urlencoded").response::<super::schemas::PromResponse<Vec<String>>>()
    .add(
        Method::GET,
        "/api/v1/label/{name}/values",
        q,
        T,
        "values of a label",
        meta::label_values,
    )
    .query::<super::schemas::SeriesQuery>().response::<super::schemas::PromResponse<Vec<String>>>()
    .add(
        Method::GET,
        "/api/v1/metadata",
        q,
        T,
        "metric metadata",
        meta::metadata,
    )
    .query::<super::schemas::MetadataQuery>().response::<super::schemas::PromResponse<std::collections::BTreeMap<String, Vec<serde_json::Value>>>>()
    .add(
        Method::POST,
        "/api/v1/write",
        Access::Scope(Scope::Ingest),
        T,
        "Prometheus remote write 1.0",
        write::remote_write,
    )
    .request_body("application/x-protobuf").no_content()
}

/// An error in Prometheus's shape: `{"status":"error","errorType":"bad_data","error":"..."}`
/// with the status code Prometheus uses for that type.
#[derive(Debug)]
pub(crate) struct PromError {
    error_type: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
}

impl PromError {
    /// `bad_data` (400): the request is wrong.
    pub(crate) fn bad_data(message: impl Into<String>) -> PromError {
        PromError {
            error_type: "bad_data",
            message: message.into(),
            retry_after: None,
        }
    }

    /// `internal` (500): our fault; the details go to the log, not the client.
    pub(crate) fn internal(context: &str, error: &dyn std::fmt::Display) -> PromError {
        tracing::error!(%error, "{context}");
        PromError {
            error_type: "internal",
            message: format!("{context}; see the collector log"),
            retry_after: None,
        }
    }

    fn status(&self) -> StatusCode {
        match self.error_type {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "canceled" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "too_many_requests" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<PromqlError> for PromError {
    fn from(e: PromqlError) -> PromError {
        PromError {
            error_type: e.error_type(),
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<super::TaskFailed> for PromError {
    fn from(failed: super::TaskFailed) -> PromError {
        PromError::internal(&format!("{} panicked", failed.task), &failed.error)
    }
}

impl From<super::ApiError> for PromError {
    fn from(e: super::ApiError) -> PromError {
        let error_type = match e.code {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "forbidden",
            ErrorCode::ResourceExhausted => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidArgument => "bad_data",
            ErrorCode::NotFound => "not_found",
            _ => "internal",
        };
        PromError {
            error_type,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.error_type,
            "error": self.message,
        });
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(wait) = self.retry_after
            && let Ok(v) =
                header::HeaderValue::from_str(&wait.as_secs_f64().ceil().max(1.0).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.error_type == "unauthenticated" {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A success envelope around already-encoded JSON `data`.
pub(crate) fn success(data: String) -> Response {
    let mut body = String::with_capacity(data.len() + 32);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(&data);
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A success envelope with Prometheus's `warnings` list (omitted when empty).
pub(crate) fn success_with_warnings(data: String, warnings: &[&str]) -> Response {
    if warnings.is_empty() {
        return success(data);
    }
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(&data);
    body.push_str(r#","warnings":["#);
    for (i, w) in warnings.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        json::string(&mut body, w);
    }
    body.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Authenticates a query-scope caller and charges the query to its rate limits.
pub(crate) fn query_caller(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, PromError> {
    let principal = authenticate(state, headers, Scope::Query)?;
    charge_query(state, &principal)?;
    Ok(principal)
}
