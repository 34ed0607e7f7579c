//! OTLP/gRPC: the Logs, Metrics and Trace services, gzip and zstd request compression,
//! a decoded-size limit, and RetryInfo on overload as the OTLP specification asks.

use std::sync::Arc;

use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use vantage_proto::otlp::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vantage_proto::otlp::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use vantage_proto::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vantage_proto::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use vantage_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::ingest::{DEFAULT_TENANT, Ingest, IngestError, Signal};
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

/// The three OTLP services over one ingest path.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
    telemetry: Arc<Telemetry>,
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
    pub fn routes(self, max_request_bytes: usize) -> tonic::service::Routes {
        let logs = LogsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max_request_bytes);
        let metrics = MetricsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max_request_bytes);
        let traces = TraceServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max_request_bytes);
        tonic::service::Routes::new(logs)
            .add_service(metrics)
            .add_service(traces)
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let result = self.ingest.export_logs(DEFAULT_TENANT, request, size).await;
        self.record(Signal::Logs, &result);
        let accepted = result.map_err(to_status)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: accepted.logs_partial_success(),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let result = self
            .ingest
            .export_metrics(DEFAULT_TENANT, request, size)
            .await;
        self.record(Signal::Metrics, &result);
        result.map_err(to_status)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let result = self
            .ingest
            .export_traces(DEFAULT_TENANT, request, size)
            .await;
        self.record(Signal::Traces, &result);
        result.map_err(to_status)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
