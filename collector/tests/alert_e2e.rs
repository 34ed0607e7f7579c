//! Alerting end to end, every part real: metrics sent over OTLP/gRPC cross a rule's
//! threshold, the evaluator fires, the embedded Alertmanager routes the alert, and a
//! real HTTP receiver in the test gets the signed v4 webhook — then the resolution.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;

use common::*;

const SECRET: &str = "e2e-signing-secret";

async fn receiver() -> (SocketAddr, mpsc::Receiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::channel(64);
    let app = Router::new().fallback(move |req: Request| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let _ = tx.send((parts.headers, body)).await;
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

fn gauge(value: f64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "checkout"),
                    kv_str("service.instance.id", "pod-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope::default()),
                metrics: vec![Metric {
                    name: "queue_depth".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns(),
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn verify(headers: &HeaderMap, body: &[u8]) {
    let ts = headers["x-vantage-timestamp"].to_str().unwrap();
    let sig = headers["x-vantage-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_metrics_cross_a_threshold_and_a_signed_webhook_fires_then_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut rx) = receiver().await;
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("queue.yml"),
        "groups:\n- name: queue\n  interval: 1s\n  rules:\n  - alert: QueueBacklog\n    expr: queue_depth > 100\n    labels:\n      severity: page\n    annotations:\n      summary: 'queue of {{ $labels.job }} is {{ $value }} deep'\n",
    )
    .unwrap();
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: http://{addr}/alerts\n    signing_secret: {SECRET}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let c = Collector::builder()
        .env("VANTAGE_ALERTING__RULES_DIR", rules.to_str().unwrap())
        .env(
            "VANTAGE_ALERTING__ALERTMANAGER_CONFIG",
            am.to_str().unwrap(),
        )
        .env("VANTAGE_ALERTING__QUERY_OFFSET", "0s")
        .start(&data);
    let mut metrics = MetricsServiceClient::new(c.grpc_channel().await);

    // Below the threshold: nothing is sent.
    metrics.export(gauge(5.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(rx.try_recv().is_err(), "no alert below the threshold");

    // Over it: the webhook arrives, signed, in Alertmanager's v4 shape.
    metrics.export(gauge(250.0)).await.unwrap();
    let crossed = Instant::now();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("firing webhook within 30 s")
        .unwrap();
    let latency = crossed.elapsed();
    println!("threshold crossed -> webhook received: {latency:?} (evaluation interval 1 s)");
    // The bound is one evaluation interval plus 1 s; one more second of slack
    // for a shared 2-core machine.
    assert!(latency < Duration::from_secs(3), "webhook took {latency:?}");
    verify(&headers, &body);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "hook");
    let alert = &v["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "QueueBacklog");
    assert_eq!(alert["labels"]["job"], "checkout");
    assert_eq!(alert["labels"]["instance"], "pod-1");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(
        alert["annotations"]["summary"],
        "queue of checkout is 250 deep"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/graph?g0.expr="),
        "{v}"
    );

    // Back under: the resolution follows.
    metrics.export(gauge(3.0)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (headers, body) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("resolved webhook within 30 s")
            .unwrap();
        verify(&headers, &body);
        let v: Value = serde_json::from_slice(&body).unwrap();
        if v["status"] == "resolved" {
            assert_eq!(v["alerts"][0]["status"], "resolved");
            assert_ne!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
            break;
        }
    }
}
