//! The local OTLP/gRPC listener: the three OTLP services, gzip and zstd requests, the
//! size limit, and `RESOURCE_EXHAUSTED` with `RetryInfo` when the queue is full.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
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

use super::{Refusal, Sink};

/// Tonic refuses an oversized message before the handler, with OUT_OF_RANGE or a
/// RESOURCE_EXHAUSTED without retry details; OTLP exporters would retry both forever.
/// Such a request can never succeed, so it becomes INVALID_ARGUMENT (as the collector
/// answers). Our own RESOURCE_EXHAUSTED always carries RetryInfo, which tells them apart.
fn oversize_is_invalid(
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

/// The `http` crate as tonic re-exports it.
mod http {
    pub(super) use tonic::codegen::http::*;
}

fn to_status(r: Refusal) -> Status {
    let code = r.code.grpc_code();
    match r.retry_after {
        Some(delay) => {
            Status::with_error_details(code, r.message, ErrorDetails::with_retry_info(Some(delay)))
        }
        None => Status::new(code, r.message),
    }
}

#[derive(Clone)]
struct Local(Arc<Sink>);

#[tonic::async_trait]
impl LogsService for Local {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.logs(request.into_inner()).await.map_err(to_status)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Local {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0
            .metrics(request.into_inner())
            .await
            .map_err(to_status)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Local {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0
            .traces(request.into_inner())
            .await
            .map_err(to_status)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
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
    let inflight = sink.inflight.clone();
    let local = Local(sink);
    let logs = LogsServiceServer::new(local.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_request_bytes);
    let metrics = MetricsServiceServer::new(local.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_request_bytes);
    let traces = TraceServiceServer::new(local)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max_request_bytes);
    let routes = tonic::service::Routes::new(logs)
        .add_service(metrics)
        .add_service(traces);
    let handle = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
                inflight,
            ))
            .layer(tower::util::MapResponseLayer::new(oversize_is_invalid))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                cancel.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "otlp grpc receiver stopped");
        }
    });
    Ok((bound, handle))
}
