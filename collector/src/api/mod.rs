//! The query API on `listen.api`: log search and live tail, the Prometheus HTTP API and
//! remote write, administration, self-telemetry and probes.

mod admin;
mod agents;
mod alertmanager;
mod audit;
mod gateway;
mod jaeger;
mod login;
mod logs;
pub mod prom;
pub mod render;
mod rules;
pub mod timeparse;
mod traces;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use vantage_proto::ErrorCode;
use vantage_storage::logs::LogStore;

use crate::auth::{Auth, Principal};
use crate::ingest::Ingest;
use crate::telemetry::{SignalLabels, Telemetry};

/// What every API handler can reach.
pub struct ApiState {
    /// Log search.
    pub logs: LogStore,
    /// Traces: by id, search, services, dependencies.
    pub traces: vantage_storage::traces::TraceStore,
    /// The ingest path (for WAL positions and sizes).
    pub ingest: Arc<Ingest>,
    /// Credentials.
    pub auth: Arc<Auth>,
    /// Own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Set once WAL replay has finished.
    pub ready: AtomicBool,
    /// Whether `/metrics` needs a query key.
    pub protect_metrics: bool,
    /// Query rate limits.
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// Cancelled at shutdown: long-lived responses (live tails) end so the server can stop.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The metrics store.
    pub tsdb: vantage_storage::metrics::tsdb::Tsdb,
    /// PromQL evaluation.
    pub engine: Arc<vantage_storage::metrics::promql::Engine>,
    /// Bounds PromQL queries evaluated at once.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Longest a PromQL query may run.
    pub query_timeout: std::time::Duration,
    /// Largest remote-write body, compressed and decompressed.
    pub max_request_bytes: usize,
    /// Origins allowed cross-origin access (CORS).
    pub cors_allowed_origins: Vec<String>,
    /// Failed-login counts, to slow password guessing.
    pub login_throttle: crate::auth::throttle::LoginThrottle,
    /// TOTP codes seen, so each works once.
    pub totp: crate::auth::totp::TotpChecker,
    /// Session lifetimes.
    pub sessions: crate::config::SessionConfig,
    /// Alerting and recording rules (evaluation state, API rule groups).
    pub rules: Arc<crate::alerting::rules::RulesManager>,
    /// The notifier behind the Alertmanager API (`None` until started).
    pub notifier: Option<Arc<crate::alerting::notify::Notifier>>,
}

/// An API error: a code and a message, rendered as
/// `{"status":"error","errorType":"...","error":"..."}` like Prometheus's API.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"status": "error", "errorType": self.code.as_str(), "error": self.message});
        let mut response = (
            self.code.http_status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(wait) = self.retry_after
            && let Ok(v) =
                axum::http::HeaderValue::from_str(&wait.as_secs_f64().ceil().max(1.0).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Charges one query to the caller's rate limits.
pub(crate) fn charge_query(state: &ApiState, principal: &Principal) -> Result<(), ApiError> {
    state.limiter.query(principal).map_err(|wait| ApiError {
        code: ErrorCode::ResourceExhausted,
        message: "query rate limit of this tenant or key exceeded".into(),
        retry_after: Some(wait),
    })
}

/// The caller of an API request, who must hold `scope`.
pub(crate) fn authenticate(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
    scope: vantage_storage::meta::Scope,
) -> Result<Principal, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .auth
        .check(header, scope)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))
}

/// All API routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let origins = state.cors_allowed_origins.clone();
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/logs/search", get(logs::search))
        .route("/api/v1/logs/tail", get(logs::tail))
        .route(
            "/api/v1/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/api/v1/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route(
            "/api/v1/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route("/api/v1/auth/login", post(login::login))
        .route("/api/v1/auth/refresh", post(login::refresh))
        .route("/api/v1/auth/logout", post(login::logout))
        .route("/api/v1/auth/me", get(login::me))
        .route("/api/v1/auth/password", post(login::change_password))
        .route("/api/v1/auth/sessions", get(login::list_sessions))
        .route(
            "/api/v1/auth/sessions/{session_id}",
            axum::routing::delete(login::revoke_session),
        )
        .route("/api/v1/auth/totp/enroll", post(login::totp_enroll))
        .route("/api/v1/auth/totp/confirm", post(login::totp_confirm))
        .route("/api/v1/auth/totp/disable", post(login::totp_disable))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{user_id}",
            get(users::get).patch(users::patch).delete(users::delete),
        )
        .route(
            "/api/v1/users/{user_id}/tenants/{tenant}",
            axum::routing::put(users::put_role).delete(users::delete_role),
        )
        .route(
            "/api/v1/users/{user_id}/password",
            post(users::reset_password),
        )
        .route("/api/v1/audit", get(audit::list))
        .route(
            "/api/v1/enrollment-tokens",
            get(agents::list_tokens).post(agents::create_token),
        )
        .route(
            "/api/v1/enrollment-tokens/{token_id}",
            axum::routing::delete(agents::revoke_token),
        )
        .route("/api/v1/agents", get(agents::list))
        .route("/api/v1/agents/enroll", post(agents::enroll))
        .route(
            "/api/v1/agents/{agent_id}",
            axum::routing::delete(agents::revoke),
        )
        .merge(prom::routes())
        .merge(traces::routes())
        .merge(jaeger::routes())
        .merge(rules::routes())
        .merge(alertmanager::routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .with_state(state);
    gateway::wrap(routes, &origins)
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "replaying the write-ahead log\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<ApiState>>, headers: axum::http::HeaderMap) -> Response {
    if state.protect_metrics
        && let Err(e) = authenticate(&state, &headers, vantage_storage::meta::Scope::Query)
    {
        return e.into_response();
    }
    let t = &state.telemetry;
    let wals = state.ingest.wals();
    for (signal, wal) in [
        ("logs", &wals.logs),
        ("metrics", &wals.metrics),
        ("traces", &wals.traces),
    ] {
        t.wal_bytes
            .get_or_create(&SignalLabels { signal })
            .set(wal.stats().disk_bytes as i64);
    }
    t.ready.set(i64::from(state.ready.load(Ordering::SeqCst)));
    let stats = state.tsdb.stats();
    t.metrics_head_series.set(stats.series as i64);
    t.metrics_head_samples.set(stats.head_samples as i64);
    t.metrics_blocks.set(stats.blocks as i64);
    t.metrics_disk_bytes.set(stats.disk_bytes as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode(),
    )
        .into_response()
}
