//! OTLP/HTTP: `POST /v1/logs`, `/v1/metrics`, `/v1/traces` with protobuf or JSON bodies,
//! optional gzip, a size limit checked both before and after decompression (so a gzip
//! bomb costs at most the limit), and errors as `google.rpc.Status` in the request's
//! own encoding, as the OTLP specification says.

use std::io::Read as _;
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
use crate::ingest::{Accepted, Ingest, IngestError, Signal};
use crate::telemetry::{RequestLabels, Telemetry};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

struct Receiver {
    ingest: Arc<Ingest>,
    auth: Arc<Auth>,
    telemetry: Arc<Telemetry>,
    max_request_bytes: usize,
}

/// The encoding of a request, which is also the encoding of its response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// An error answer: status, message, retry delay, in the request's encoding.
struct Failure {
    error: IngestError,
    encoding: Encoding,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.error.code.http_status();
        let rpc = tonic_types::pb::Status {
            code: self.error.code.grpc_code() as i32,
            message: self.error.message.clone(),
            details: Vec::new(),
        };
        let mut response = match self.encoding {
            Encoding::Protobuf => (
                status,
                [(header::CONTENT_TYPE, PROTOBUF)],
                rpc.encode_to_vec(),
            )
                .into_response(),
            Encoding::Json => (
                status,
                [(header::CONTENT_TYPE, JSON)],
                serde_json::json!({"code": rpc.code, "message": rpc.message}).to_string(),
            )
                .into_response(),
        };
        if let Some(delay) = self.error.retry_after {
            let secs = delay.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Routes for the OTLP/HTTP listener.
pub fn router(
    ingest: Arc<Ingest>,
    auth: Arc<Auth>,
    telemetry: Arc<Telemetry>,
    max_request_bytes: usize,
) -> Router {
    let state = Arc::new(Receiver {
        ingest,
        auth,
        telemetry,
        max_request_bytes,
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

/// Reads, size-checks, decompresses and decodes a request body.
async fn decode<T: Message + Default + DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(T, usize, Encoding), Failure> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match mime.as_str() {
        PROTOBUF => Encoding::Protobuf,
        JSON => Encoding::Json,
        _ => {
            return Err(fail(
                ErrorCode::UnsupportedMediaType,
                format!("content-type {content_type:?} is not supported: use {PROTOBUF} or {JSON}"),
                Encoding::Json,
            ));
        }
    };
    let raw = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(fail(
                ErrorCode::PayloadTooLarge,
                format!("request body is over the limit of {limit} bytes"),
                encoding,
            ));
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
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let body: Vec<u8> = match content_encoding.as_str() {
        "" | "identity" => raw.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            if let Err(e) = decoder.read_to_end(&mut out) {
                return Err(fail(
                    ErrorCode::InvalidArgument,
                    format!("gzip body does not decompress: {e}"),
                    encoding,
                ));
            }
            if out.len() > limit {
                return Err(fail(
                    ErrorCode::PayloadTooLarge,
                    format!("decompressed body is over the limit of {limit} bytes"),
                    encoding,
                ));
            }
            out
        }
        other => {
            return Err(fail(
                ErrorCode::UnsupportedMediaType,
                format!("content-encoding {other:?} is not supported: use gzip or none"),
                encoding,
            ));
        }
    };
    let size = body.len();
    let message = match encoding {
        Encoding::Protobuf => T::decode(&body[..]).map_err(|e| {
            fail(
                ErrorCode::InvalidArgument,
                format!("body is not a valid OTLP protobuf message: {e}"),
                encoding,
            )
        })?,
        Encoding::Json => serde_json::from_slice(&body).map_err(|e| {
            fail(
                ErrorCode::InvalidArgument,
                format!("body is not valid OTLP/JSON: {e}"),
                encoding,
            )
        })?,
    };
    Ok((message, size, encoding))
}

fn respond<T: Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => {
            ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
        }
        Encoding::Json => match serde_json::to_value(message) {
            Ok(mut value) => {
                // An absent partial success is `{}`, not `{"partialSuccess": null}`.
                if let Some(map) = value.as_object_mut() {
                    map.retain(|_, v| !v.is_null());
                }
                ([(header::CONTENT_TYPE, JSON)], value.to_string()).into_response()
            }
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
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
    let (request, size, encoding) =
        match decode::<ExportLogsServiceRequest>(&headers, body, r.max_request_bytes).await {
            Ok(decoded) => decoded,
            Err(failure) => {
                r.count(Signal::Logs, failure.error.code.as_str());
                return failure.into_response();
            }
        };
    let result = r.ingest.export_logs(&principal, request, size).await;
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
    let (request, size, encoding) =
        match decode::<ExportMetricsServiceRequest>(&headers, body, r.max_request_bytes).await {
            Ok(decoded) => decoded,
            Err(failure) => {
                r.count(Signal::Metrics, failure.error.code.as_str());
                return failure.into_response();
            }
        };
    let result = r.ingest.export_metrics(&principal, request, size).await;
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
    let (request, size, encoding) =
        match decode::<ExportTraceServiceRequest>(&headers, body, r.max_request_bytes).await {
            Ok(decoded) => decoded,
            Err(failure) => {
                r.count(Signal::Traces, failure.error.code.as_str());
                return failure.into_response();
            }
        };
    let result = r.ingest.export_traces(&principal, request, size).await;
    r.finish(Signal::Traces, encoding, result, |accepted| {
        ExportTraceServiceResponse {
            partial_success: accepted.traces_partial_success(),
        }
    })
}
