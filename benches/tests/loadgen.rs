//! Runs the `vantage-loadgen` binary against an in-process OTLP logs server on a real
//! socket and checks its summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use vantage_benches::record_count;
use vantage_proto::otlp::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

/// Refuses the first request with RESOURCE_EXHAUSTED and a pushback delay, then accepts
/// everything but one record per request.
#[derive(Default)]
struct MockState {
    requests: AtomicU64,
    records: AtomicU64,
    unauthorized: AtomicU64,
}

struct MockCollector(Arc<MockState>);

#[tonic::async_trait]
impl LogsService for MockCollector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        if request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            != Some(b"Bearer s3cret")
        {
            self.0.unauthorized.fetch_add(1, Ordering::Relaxed);
            return Err(Status::unauthenticated("missing or wrong token"));
        }
        if self.0.requests.fetch_add(1, Ordering::Relaxed) == 0 {
            let mut status = Status::resource_exhausted("queue full");
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", "20".parse().unwrap());
            return Err(status);
        }
        let records = record_count(request.get_ref()) as u64;
        self.0.records.fetch_add(records, Ordering::Relaxed);
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 1,
                error_message: "one record too old".to_owned(),
            }),
        }))
    }
}

async fn start_mock() -> (String, Arc<MockState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let mock = Arc::new(MockState::default());
    let service = LogsServiceServer::new(MockCollector(Arc::clone(&mock)))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (endpoint, mock)
}

async fn loadgen(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_vantage-loadgen"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("loadgen did not stop by itself")
        .unwrap()
}

#[tokio::test]
async fn sends_every_record_retries_backpressure_and_reports_json() {
    let (endpoint, mock) = start_mock().await;
    let output = loadgen(&[
        "--endpoint",
        &endpoint,
        "--records",
        "5500",
        "--batch-size",
        "1000",
        "--concurrency",
        "2",
        "--compression",
        "gzip",
        "--token",
        "s3cret",
        "--json",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(!stderr.contains("s3cret"));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Six batches (the last of 500), one refused once and retried, one record
    // rejected in each accepted request.
    assert_eq!(summary["records_sent"], 5_500);
    assert_eq!(summary["requests_ok"], 6);
    assert_eq!(summary["records_rejected"], 6);
    assert_eq!(summary["records_acked"], 5_494);
    assert_eq!(summary["records_failed"], 0);
    assert_eq!(summary["resource_exhausted"], 1);
    assert_eq!(summary["retries"], 1);
    assert_eq!(
        summary["requests_failed_by_code"]["RESOURCE_EXHAUSTED"]["requests"],
        1
    );
    assert_eq!(summary["latency_ms"]["count"], 6);
    assert!(summary["acked_raw_mb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(mock.records.load(Ordering::Relaxed), 5_500);
    assert_eq!(mock.unauthorized.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn stops_at_the_duration_cap_and_fails_when_nothing_succeeds() {
    let (endpoint, mock) = start_mock().await;
    // No token: every request is UNAUTHENTICATED, which is not retried.
    let output = loadgen(&[
        "--endpoint",
        &endpoint,
        "--records",
        "100000000",
        "--batch-size",
        "100",
        "--duration-s",
        "1",
        "--rate",
        "2000",
        "--json",
    ])
    .await;
    assert!(!output.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["requests_ok"], 0);
    let failed = summary["requests_failed_by_code"]["UNAUTHENTICATED"]["requests"]
        .as_u64()
        .unwrap();
    // 20 batches per second, paced, for one second.
    assert!((15..=25).contains(&failed), "{failed} requests");
    assert_eq!(summary["records_failed"], failed * 100);
    assert_eq!(mock.unauthorized.load(Ordering::Relaxed), failed);
}

#[tokio::test]
async fn reports_a_connection_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let output = loadgen(&["--endpoint", &endpoint, "--records", "10"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("connecting to"));
}
