//! OTLP/gRPC: the Logs, Metrics and Trace services, gzip and zstd request compression,
//! a decoded-size limit, and RetryInfo on overload as the OTLP specification asks.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use vantage_proto::otlp::collector::logs::v1::logs_service_server;
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vantage_proto::otlp::collector::metrics::v1::metrics_service_server;
use vantage_proto::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vantage_proto::otlp::collector::trace::v1::trace_service_server;
use vantage_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use vantage_storage::meta::Scope;

use super::keep_bytes::KeepBytesCodec;
use crate::auth::{Auth, Principal};
use crate::ingest::{Accepted, Ingest, IngestError, Received, Signal};
use crate::telemetry::{RequestLabels, Telemetry};

/// Tonic refuses an oversized message before any handler runs, with OUT_OF_RANGE (over
/// the limit) or RESOURCE_EXHAUSTED without retry details (over it once decompressed).
/// OTLP exporters retry both codes, but such a request can never succeed: answer
/// INVALID_ARGUMENT, like HTTP's 413. Our own RESOURCE_EXHAUSTED always carries RetryInfo
/// (`grpc-status-details-bin`), which is how the two are told apart.
pub fn oversize_is_invalid(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    const OUT_OF_RANGE: &str = "11";
    const RESOURCE_EXHAUSTED: &str = "8";
    let headers = response.headers_mut();
    let remap = match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some(OUT_OF_RANGE) => true,
        Some(RESOURCE_EXHAUSTED) => !headers.contains_key("grpc-status-details-bin"),
        _ => false,
    };
    if remap {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
    }
    response
}

/// The caller that [`AuthLayer`] authenticated.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing credential"))
}

/// The signal an OTLP gRPC path belongs to.
fn signal_of(path: &str) -> Option<Signal> {
    if path.starts_with("/opentelemetry.proto.collector.logs.") {
        Some(Signal::Logs)
    } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
        Some(Signal::Metrics)
    } else if path.starts_with("/opentelemetry.proto.collector.trace.") {
        Some(Signal::Traces)
    } else {
        None
    }
}

/// Authenticates every gRPC call from its headers before tonic reads, decompresses or
/// decodes a byte of the message, and hands the [`Principal`] to the service in the
/// request's extensions. A refused call costs a header lookup, not a decode.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
    telemetry: Arc<Telemetry>,
}

impl AuthLayer {
    /// Checks calls against `auth`, counting refusals in `telemetry`.
    pub fn new(auth: Arc<Auth>, telemetry: Arc<Telemetry>) -> Self {
        AuthLayer { auth, telemetry }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the OTLP services.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.layer.auth.check(header, Scope::Ingest) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(e) => {
                if let Some(signal) = signal_of(request.uri().path()) {
                    self.layer
                        .telemetry
                        .requests
                        .get_or_create(&RequestLabels {
                            signal: signal.as_str(),
                            protocol: "grpc",
                            outcome: e.code().as_str(),
                        })
                        .inc();
                }
                let status = Status::new(e.code().grpc_code(), e.to_string());
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The three OTLP services over one ingest path.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
    telemetry: Arc<Telemetry>,
}

/// The `x-vantage-batch-id` metadata, when present: 32 hex digits, else INVALID_ARGUMENT.
fn batch_id<T>(request: &Request<T>) -> Result<Option<u128>, Status> {
    let Some(value) = request
        .metadata()
        .get(crate::ingest::dedup::BATCH_ID_HEADER)
    else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(crate::ingest::dedup::parse_batch_id)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("x-vantage-batch-id must be 32 hex digits"))
}

fn to_status(e: IngestError) -> Status {
    let code = e.code.grpc_code();
    match e.retry_after {
        Some(delay) => {
            Status::with_error_details(code, e.message, ErrorDetails::with_retry_info(Some(delay)))
        }
        None => Status::new(code, e.message),
    }
}

impl OtlpGrpc {
    /// Services over `ingest`.
    pub fn new(ingest: Arc<Ingest>, telemetry: Arc<Telemetry>) -> Self {
        OtlpGrpc { ingest, telemetry }
    }

    fn record<T>(&self, signal: Signal, result: &Result<T, IngestError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.telemetry
            .requests
            .get_or_create(&RequestLabels {
                signal: signal.as_str(),
                protocol: "grpc",
                outcome,
            })
            .inc();
    }

    /// Tonic routes for all three services with compression and the size limit applied.
    /// Each is served with [`KeepBytesCodec`], so ingest gets the bytes of the request
    /// (the generated `*ServiceServer`s decode with a codec that drops them).
    pub fn routes(self, max_request_bytes: usize) -> tonic::service::Routes {
        tonic::service::Routes::new(ExportRoute::<LogsExport>::new(
            self.clone(),
            max_request_bytes,
        ))
        .add_service(ExportRoute::<MetricsExport>::new(
            self.clone(),
            max_request_bytes,
        ))
        .add_service(ExportRoute::<TracesExport>::new(self, max_request_bytes))
    }
}

/// One OTLP `Export` method: its names, messages and handler.
trait ExportMethod: Send + Sync + 'static {
    /// The gRPC service name (the route prefix).
    const SERVICE: &'static str;
    /// The one method path of the service.
    const PATH: &'static str;
    /// The request message.
    type Request: prost::Message + Default + Send + 'static;
    /// The response message.
    type Response: prost::Message + Send + 'static;

    /// The signal, for the request counters.
    const SIGNAL: Signal;

    /// Makes one export durable (the signal's `Ingest::export_*`).
    fn ingest<'a>(
        ingest: &'a Ingest,
        principal: &'a Principal,
        received: Received<Self::Request>,
        batch_id: Option<u128>,
    ) -> BoxFuture<'a, Result<Accepted, IngestError>>;

    /// The response to an accepted export (its partial success).
    fn response(accepted: Accepted) -> Self::Response;
}

/// Handles one export of method `M`: credential, batch id, ingest, counters.
async fn export<M: ExportMethod>(
    grpc: OtlpGrpc,
    request: Request<bytes::Bytes>,
) -> Result<Response<M::Response>, Status> {
    let principal = principal(&request)?;
    let batch_id = batch_id(&request)?;
    let received = Received::Protobuf(request.into_inner());
    let result = M::ingest(&grpc.ingest, &principal, received, batch_id).await;
    grpc.record(M::SIGNAL, &result);
    let accepted = result.map_err(to_status)?;
    Ok(Response::new(M::response(accepted)))
}

/// The route of one OTLP service, as tonic's generated server would build it (gzip and
/// zstd accepted, the decoded-size limit, UNIMPLEMENTED for any other method), but
/// reading requests with [`KeepBytesCodec`].
struct ExportRoute<M> {
    grpc: OtlpGrpc,
    max_request_bytes: usize,
    method: PhantomData<fn() -> M>,
}

impl<M> ExportRoute<M> {
    fn new(grpc: OtlpGrpc, max_request_bytes: usize) -> Self {
        ExportRoute {
            grpc,
            max_request_bytes,
            method: PhantomData,
        }
    }
}

impl<M> Clone for ExportRoute<M> {
    fn clone(&self) -> Self {
        ExportRoute::new(self.grpc.clone(), self.max_request_bytes)
    }
}

impl<M: ExportMethod> tonic::server::NamedService for ExportRoute<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M: ExportMethod> tower::Service<http::Request<tonic::body::Body>> for ExportRoute<M> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != M::PATH {
            let status = Status::unimplemented(format!("{} has no such method", M::SERVICE));
            return Box::pin(futures::future::ready(Ok(status.into_http())));
        }
        let grpc = self.grpc.clone();
        let mut server = tonic::server::Grpc::new(KeepBytesCodec::<M::Response>::default())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(self.max_request_bytes);
        Box::pin(async move {
            let handler = tower::service_fn(move |r| Box::pin(export::<M>(grpc.clone(), r)));
            Ok(server.unary(handler, request).await)
        })
    }
}

/// `opentelemetry.proto.collector.logs.v1.LogsService/Export`.
struct LogsExport;

impl ExportMethod for LogsExport {
    const SERVICE: &'static str = logs_service_server::SERVICE_NAME;
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;

    const SIGNAL: Signal = Signal::Logs;

    fn ingest<'a>(
        ingest: &'a Ingest,
        principal: &'a Principal,
        received: Received<Self::Request>,
        batch_id: Option<u128>,
    ) -> BoxFuture<'a, Result<Accepted, IngestError>> {
        Box::pin(ingest.export_logs(principal, received, batch_id))
    }

    fn response(accepted: Accepted) -> Self::Response {
        Self::Response {
            partial_success: accepted.logs_partial_success(),
        }
    }
}

/// `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`.
struct MetricsExport;

impl ExportMethod for MetricsExport {
    const SERVICE: &'static str = metrics_service_server::SERVICE_NAME;
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;

    const SIGNAL: Signal = Signal::Metrics;

    fn ingest<'a>(
        ingest: &'a Ingest,
        principal: &'a Principal,
        received: Received<Self::Request>,
        batch_id: Option<u128>,
    ) -> BoxFuture<'a, Result<Accepted, IngestError>> {
        Box::pin(ingest.export_metrics(principal, received, batch_id))
    }

    fn response(accepted: Accepted) -> Self::Response {
        Self::Response {
            partial_success: accepted.metrics_partial_success(),
        }
    }
}

/// `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
struct TracesExport;

impl ExportMethod for TracesExport {
    const SERVICE: &'static str = trace_service_server::SERVICE_NAME;
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;

    const SIGNAL: Signal = Signal::Traces;

    fn ingest<'a>(
        ingest: &'a Ingest,
        principal: &'a Principal,
        received: Received<Self::Request>,
        batch_id: Option<u128>,
    ) -> BoxFuture<'a, Result<Accepted, IngestError>> {
        Box::pin(ingest.export_traces(principal, received, batch_id))
    }

    fn response(accepted: Accepted) -> Self::Response {
        Self::Response {
            partial_success: accepted.traces_partial_success(),
        }
    }
}
