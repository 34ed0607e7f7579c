//! `GET /healthz` on a local address: 200 with the agent's counters as JSON, so a probe
//! (systemd, Kubernetes, a test) sees both liveness and what the agent is doing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Binds `addr` and serves until cancelled; returns the bound address (port 0 picks one).
pub(crate) async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(stats);
    let handle = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "health endpoint stopped");
        }
    });
    Ok((bound, handle))
}

/// The self-metrics in the Prometheus text format (OpenMetrics-compatible).
async fn metrics(State(stats): State<Arc<Stats>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::selfmetrics::render(&stats),
    )
}

async fn healthz(State(stats): State<Arc<Stats>>) -> Json<Value> {
    let counters: Map<String, Value> = stats
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let targets: Vec<Value> = crate::selfmetrics::scrape_targets()
        .into_iter()
        .map(|(job, instance, up)| json!({ "job": job, "instance": instance, "up": up }))
        .collect();
    Json(json!({
        "status": "ok",
        "stats": counters,
        "last_export_unix_ms": crate::selfmetrics::last_export_unix_ms(),
        "scrape_targets": targets,
    }))
}
