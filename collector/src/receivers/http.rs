//! OTLP/HTTP: `POST /v1/logs`, `/v1/metrics`, `/v1/traces` with protobuf or JSON bodies,
//! optional gzip, a size limit checked both before and after decompression (so a gzip
//! bomb costs at most the limit), and errors as `google.rpc.Status` in the request's
//! own encoding, as the OTLP specification says.

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

use vantage_storage::meta::Scope;

use crate::auth::{Auth, Principal};
use crate::ingest::{Accepted, Ingest, IngestError, Received, Signal};
use crate::telemetry::{RequestLabels, Telemetry};

use vantage_proto::otlp_http::{self, Encoding, PROTOBUF};

struct Receiver {
    ingest: Arc<Ingest>,
    auth: Arc<Auth>,
    telemetry: Arc<Telemetry>,
}

/// The `x-vantage-batch-id` header, when present: 32 hex digits, else a clear 400.
fn batch_id(headers: &HeaderMap) -> Result<Option<u128>, IngestError> {
    let Some(value) = headers.get(crate::ingest::dedup::BATCH_ID_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(crate::ingest::dedup::parse_batch_id)
        .map(Some)
        .ok_or_else(|| {
            IngestError::new(
                ErrorCode::InvalidArgument,
                "x-vantage-batch-id must be 32 hex digits",
            )
        })
}

/// An error answer: status, message, retry delay, in the request's encoding.
struct Failure {
    error: IngestError,
    encoding: Encoding,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.error.code.http_status();
        let body = otlp_http::status_body(self.encoding, self.error.code, &self.error.message);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, self.encoding.content_type())],
            body,
        )
            .into_response();
        if let Some(delay) = self.error.retry_after {
            let secs = delay.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Routes for the OTLP/HTTP listener; the body limit is `ingest.max_request_bytes` as
/// it is when each request arrives (it changes on reload).
pub fn router(ingest: Arc<Ingest>, auth: Arc<Auth>, telemetry: Arc<Telemetry>) -> Router {
    let state = Arc::new(Receiver {
        ingest,
        auth,
        telemetry,
    });
    Router::new()
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .route("/v1/traces", post(traces))
        .with_state(state)
}

fn fail(code: ErrorCode, message: impl Into<String>, encoding: Encoding) -> Failure {
    Failure {
        error: IngestError::new(code, message),
        encoding,
    }
}

/// Reads and size-checks a request body and decompresses it with the shared
/// [`vantage_proto::otlp_http`] rules. Protobuf is left to ingest to decode, as over gRPC
/// (see [`Received`]); OTLP/JSON is decoded here.
async fn read<T: Message + Default + DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Received<T>, Encoding), Failure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = otlp_http::encoding_of(content_type)
        .map_err(|e| fail(e.code, e.message, Encoding::Json))?;
    let raw = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let e = otlp_http::BodyError::too_large(limit);
            return Err(fail(e.code, e.message, encoding));
        }
        Err(e) => {
            return Err(fail(
                ErrorCode::InvalidArgument,
                format!("request body could not be read: {e}"),
                encoding,
            ));
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let body = otlp_http::decompress(content_encoding, &raw, limit)
        .map_err(|e| fail(e.code, e.message, encoding))?;
    drop(raw);
    let received = match encoding {
        Encoding::Protobuf => Received::Protobuf(bytes::Bytes::from(body)),
        Encoding::Json => Received::Decoded {
            request: otlp_http::decode_message(encoding, &body)
                .map_err(|e| fail(e.code, e.message, encoding))?,
            size: body.len(),
        },
    };
    Ok((received, encoding))
}

fn respond<T: Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match otlp_http::encode_message(encoding, message) {
        Ok(body) => ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl Receiver {
    /// The caller, who must hold the ingest scope; checked before the body is read.
    fn authenticate(
        &self,
        signal: Signal,
        headers: &HeaderMap,
    ) -> Result<Principal, Box<Response>> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.check(header, Scope::Ingest).map_err(|e| {
            self.count(signal, e.code().as_str());
            let is_protobuf = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with(PROTOBUF));
            let mut response = Failure {
                error: IngestError::new(e.code(), e.to_string()),
                encoding: if is_protobuf {
                    Encoding::Protobuf
                } else {
                    Encoding::Json
                },
            }
            .into_response();
            if e.code() == ErrorCode::Unauthenticated {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Box::new(response)
        })
    }

    fn count(&self, signal: Signal, outcome: &'static str) {
        self.telemetry
            .requests
            .get_or_create(&RequestLabels {
                signal: signal.as_str(),
                protocol: "http",
                outcome,
            })
            .inc();
    }

    fn finish<R>(
        &self,
        signal: Signal,
        encoding: Encoding,
        result: Result<Accepted, IngestError>,
        build: impl FnOnce(Accepted) -> R,
    ) -> Response
    where
        R: Message + Serialize,
    {
        match result {
            Ok(accepted) => {
                self.count(signal, "ok");
                respond(encoding, &build(accepted))
            }
            Err(error) => {
                self.count(signal, error.code.as_str());
                Failure { error, encoding }.into_response()
            }
        }
    }
}

async fn logs(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let principal = match r.authenticate(Signal::Logs, &headers) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let (received, encoding) = match read::<ExportLogsServiceRequest>(
        &headers,
        body,
        r.ingest.max_request_bytes(),
    )
    .await
    {
        Ok(read) => read,
        Err(failure) => {
            r.count(Signal::Logs, failure.error.code.as_str());
            return failure.into_response();
        }
    };
    let batch_id = match batch_id(&headers) {
        Ok(id) => id,
        Err(error) => {
            r.count(Signal::Logs, error.code.as_str());
            return Failure { error, encoding }.into_response();
        }
    };
    let result = r.ingest.export_logs(&principal, received, batch_id).await;
    r.finish(Signal::Logs, encoding, result, |a| {
        ExportLogsServiceResponse {
            partial_success: a.logs_partial_success(),
        }
    })
}

async fn metrics(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let principal = match r.authenticate(Signal::Metrics, &headers) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let (received, encoding) =
        match read::<ExportMetricsServiceRequest>(&headers, body, r.ingest.max_request_bytes())
            .await
        {
            Ok(read) => read,
            Err(failure) => {
                r.count(Signal::Metrics, failure.error.code.as_str());
                return failure.into_response();
            }
        };
    let batch_id = match batch_id(&headers) {
        Ok(id) => id,
        Err(error) => {
            r.count(Signal::Metrics, error.code.as_str());
            return Failure { error, encoding }.into_response();
        }
    };
    let result = r
        .ingest
        .export_metrics(&principal, received, batch_id)
        .await;
    r.finish(Signal::Metrics, encoding, result, |a| {
        ExportMetricsServiceResponse {
            partial_success: a.metrics_partial_success(),
        }
    })
}

async fn traces(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let principal = match r.authenticate(Signal::Traces, &headers) {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let (received, encoding) =
        match read::<ExportTraceServiceRequest>(&headers, body, r.ingest.max_request_bytes()).await
        {
            Ok(read) => read,
            Err(failure) => {
                r.count(Signal::Traces, failure.error.code.as_str());
                return failure.into_response();
            }
        };
    let batch_id = match batch_id(&headers) {
        Ok(id) => id,
        Err(error) => {
            r.count(Signal::Traces, error.code.as_str());
            return Failure { error, encoding }.into_response();
        }
    };
    let result = r.ingest.export_traces(&principal, received, batch_id).await;
    r.finish(Signal::Traces, encoding, result, |accepted| {
        ExportTraceServiceResponse {
            partial_success: accepted.traces_partial_success(),
        }
    })
}
