//! `POST /api/v1/write`: Prometheus remote write 1.0 (snappy-compressed protobuf), so
//! Prometheus servers, Grafana Alloy and other senders can ship here.
//!
//! Answers as Prometheus's receiver does: `204` when everything was stored, `400` with
//! a message when the body is malformed or some samples were refused (senders do not
//! retry 4xx, and retrying would not help), `429`/`503` with `Retry-After` when ingest
//! is behind (senders retry those).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vantage_proto::ErrorCode;
use vantage_storage::meta::Scope;

use crate::api::{ApiError, ApiState, authenticate};

/// Handles one remote-write request.
pub(crate) async fn remote_write(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let principal = match authenticate(&state, &headers, Scope::Ingest) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "remote write bodies must be snappy-compressed (Content-Encoding: snappy)",
        )
        .into_response();
    }
    let max = state.live.get().max_request_bytes;
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("remote write body larger than {max} bytes"),
            )
            .into_response();
        }
    };
    match state.ingest.remote_write(&principal, &body).await {
        Ok(accepted) if accepted.rejected == 0 => StatusCode::NO_CONTENT.into_response(),
        Ok(accepted) => (
            StatusCode::BAD_REQUEST,
            format!(
                "{} samples rejected: {}\n",
                accepted.rejected, accepted.message
            ),
        )
            .into_response(),
        Err(e) => {
            let mut error = ApiError::new(e.code, e.message);
            error.retry_after = e.retry_after;
            error.into_response()
        }
    }
}
