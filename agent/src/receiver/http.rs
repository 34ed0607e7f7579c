//! The local OTLP/HTTP listener: `POST /v1/logs`, `/v1/metrics`, `/v1/traces`, protobuf
//! or OTLP/JSON, optional gzip, decoded by the same rules as the collector's
//! ([`vantage_proto::otlp_http`]); errors as `google.rpc.Status` in the request's
//! encoding, 429 with `Retry-After` when the queue is full.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use vantage_proto::ErrorCode;
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vantage_proto::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vantage_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use vantage_proto::otlp_http::{self, Encoding};

use super::{Refusal, Sink};

struct Receiver {
    sink: Arc<Sink>,
    max_request_bytes: usize,
}

fn refuse(r: Refusal, encoding: Encoding) -> Response {
    let body = otlp_http::status_body(encoding, r.code, &r.message);
    let mut response = (
        r.code.http_status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(delay) = r.retry_after {
        let secs = delay.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// Reads (bounded), decompresses and decodes a body.
async fn decode<T: Message + Default + DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(T, Encoding), Response> {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    let encoding = otlp_http::encoding_of(header_str(header::CONTENT_TYPE))
        .map_err(|e| refuse(Refusal::new(e.code, e.message), Encoding::Json))?;
    let fail = |e: otlp_http::BodyError| refuse(Refusal::new(e.code, e.message), encoding);
    let raw = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(fail(otlp_http::BodyError::too_large(limit)));
        }
        Err(e) => {
            return Err(refuse(
                Refusal::new(
                    ErrorCode::InvalidArgument,
                    format!("request body could not be read: {e}"),
                ),
                encoding,
            ));
        }
    };
    let body =
        otlp_http::decompress(header_str(header::CONTENT_ENCODING), &raw, limit).map_err(fail)?;
    drop(raw);
    let message = otlp_http::decode_message(encoding, &body).map_err(fail)?;
    Ok((message, encoding))
}

fn respond<T: Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match otlp_http::encode_message(encoding, message) {
        Ok(body) => ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One signal's handler: permit, decode, queue, answer.
macro_rules! handler {
    ($name:ident, $req:ty, $resp:expr, $method:ident) => {
        async fn $name(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
            let Ok(_permit) = r.sink.inflight.clone().acquire_owned().await else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let (request, encoding) =
                match decode::<$req>(&headers, body, r.max_request_bytes).await {
                    Ok(decoded) => decoded,
                    Err(response) => {
                        r.sink.refused();
                        return response;
                    }
                };
            match r.sink.$method(request).await {
                Ok(()) => respond(encoding, &$resp),
                Err(refusal) => refuse(refusal, encoding),
            }
        }
    };
}

handler!(
    logs,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse {
        partial_success: None
    },
    logs
);
handler!(
    metrics,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse {
        partial_success: None
    },
    metrics
);
handler!(
    traces,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse {
        partial_success: None
    },
    traces
);

/// The routes, for [`serve`] and the unit tests.
fn router(sink: Arc<Sink>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .route("/v1/traces", post(traces))
        .with_state(Arc::new(Receiver {
            sink,
            max_request_bytes,
        }))
}

/// Binds `addr` and serves until cancelled; returns the bound address (port 0 picks one).
pub(crate) async fn serve(
    addr: SocketAddr,
    sink: Arc<Sink>,
    max_request_bytes: usize,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(sink, max_request_bytes);
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "otlp http receiver stopped");
        }
    });
    Ok((bound, handle))
}
