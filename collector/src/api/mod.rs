//! The query API on `listen.api`: log search and live tail, the Prometheus HTTP API and
//! remote write, administration, self-telemetry and probes.

mod admin;
mod agents;
mod alertmanager;
mod audit;
pub mod catalog;
mod configs;
mod gateway;
mod jaeger;
mod login;
mod logs;
mod logs_tail;
pub mod prom;
pub mod render;
mod rules;
mod schemas;
mod secrets;
pub mod status_config;
mod subscriptions;
pub mod timeparse;
mod traces;
mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog::{Access, Catalog};
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
    /// Bounds log searches run at once (`logs.max_concurrent_searches`).
    pub log_search_slots: Arc<tokio::sync::Semaphore>,
    /// Live tails open per tenant (`logs.max_live_tails`).
    pub open_tails: Arc<logs_tail::OpenTails>,
    /// Failed-login counts, to slow password guessing.
    pub login_throttle: crate::auth::throttle::LoginThrottle,
    /// TOTP codes seen, so each works once.
    pub totp: crate::auth::totp::TotpChecker,
    /// Alerting and recording rules (evaluation state, API rule groups).
    pub rules: Arc<crate::alerting::rules::RulesManager>,
    /// The notifier behind the Alertmanager API (`None` until started).
    pub notifier: Option<Arc<crate::alerting::notify::Notifier>>,
    /// The configuration in effect (settings that change on reload are read here:
    /// `/metrics` protection, the query timeout, CORS origins, session lifetimes, the
    /// request-size limit).
    pub live: Arc<crate::reload::Live>,
    /// Reloads the configuration (`None` when started without a source).
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// Secrets for agent configurations (`None`: no secrets store).
    pub secrets: Option<Arc<crate::secrets::Secrets>>,
    /// The OpAMP server: agent state and configuration pushes.
    pub opamp: Arc<crate::opamp::OpampServer>,
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

    /// The JSON body, also sent where no status line is left to carry the error (a live
    /// tail's `error` event).
    pub(crate) fn body(&self) -> serde_json::Value {
        json!({"status": "error", "errorType": self.code.as_str(), "error": self.message})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.code.http_status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
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

/// Runs blocking work (SQLite and argon2, Tantivy searches, TSDB reads, PromQL evaluation)
/// on tokio's blocking pool: it must not stall the async workers, and a panic in it must become a 500
/// that names `task`, not a dropped connection. The call's own error is left to the caller
/// to map: `blocking("metadata store", f).await?.map_err(meta_error)?`.
pub(crate) async fn blocking<T: Send + 'static>(
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskFailed> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| TaskFailed { task, error })
}

/// Blocking work that did not finish (it panicked, or the runtime is shutting down). Each
/// API's error type words it; the panic itself goes to the log, not the client.
#[derive(Debug)]
pub(crate) struct TaskFailed {
    task: &'static str,
    error: tokio::task::JoinError,
}

impl From<TaskFailed> for ApiError {
    fn from(failed: TaskFailed) -> ApiError {
        tracing::error!(task = failed.task, error = %failed.error, "blocking task failed");
        ApiError::new(ErrorCode::Internal, format!("{} task failed", failed.task))
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
    let live = state.live.clone();
    let (routes, _operations) = catalog(Catalog::new()).finish();
    let routes = routes
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .with_state(state);
    gateway::wrap(routes, live)
}

/// Every route of the API, each with who may call it and what it does.
fn catalog(c: Catalog) -> Catalog {
    use axum::http::Method;
    use vantage_storage::meta::Scope;
    let (open, any) = (Access::Open, Access::Scope(Scope::Query));
    let (i, a) = (Access::Scope(Scope::Ingest), Access::Scope(Scope::Admin));
    let c = c
        .add(Method::GET, "/healthz", open, "probes", "alive", || async {
            "ok\n"
        })
        .produces("text/plain")
        .add(
            Method::GET,
            "/readyz",
            open,
            "probes",
            "ready (WAL replayed)",
            readyz,
        )
        .produces("text/plain")
        .add(
            Method::GET,
            "/metrics",
            open,
            "probes",
            "self-telemetry (query scope when auth.protect_metrics)",
            metrics,
        )
        .produces("application/openmetrics-text")
        .add(
            Method::GET,
            "/api/v1/logs/search",
            any,
            "logs",
            "search logs",
            logs::search,
        )
        .query::<logs::SearchParams>()
        .response::<schemas::LogSearchResult>()
        .add(
            Method::GET,
            "/api/v1/logs/tail",
            any,
            "logs",
            "follow new logs (server-sent events)",
            logs_tail::tail,
        )
        .query::<logs_tail::TailParams>()
        .produces("text/event-stream")
        .add(
            Method::GET,
            "/api/v1/keys",
            a,
            "keys and tenants",
            "list API keys",
            admin::list_keys,
        )
        .query::<admin::TenantParam>()
        .response::<schemas::KeyList>()
        .add(
            Method::POST,
            "/api/v1/keys",
            a,
            "keys and tenants",
            "create an API key (shown once)",
            admin::create_key,
        )
        .request::<admin::NewKey>()
        .response_status::<schemas::NewApiKeyJson>(StatusCode::CREATED)
        .add(
            Method::DELETE,
            "/api/v1/keys/{key_id}",
            a,
            "keys and tenants",
            "revoke an API key",
            admin::revoke_key,
        )
        .no_content()
        .add(
            Method::GET,
            "/api/v1/tenants",
            a,
            "keys and tenants",
            "list tenants",
            admin::list_tenants,
        )
        .response::<schemas::TenantList>()
        .add(
            Method::POST,
            "/api/v1/tenants",
            a,
            "keys and tenants",
            "create a tenant (admins of default)",
            admin::create_tenant,
        )
        .request::<admin::NewTenant>()
        .response_status::<schemas::TenantJson>(StatusCode::CREATED)
        .add(
            Method::POST,
            "/api/v1/auth/login",
            open,
            "people",
            "log in: password (and TOTP) for tokens",
            login::login,
        )
        .request::<login::Login>()
        .response::<schemas::TokenResponse>()
        .add(
            Method::POST,
            "/api/v1/auth/refresh",
            open,
            "people",
            "exchange a refresh token",
            login::refresh,
        )
        .request::<login::Refresh>()
        .response::<schemas::TokenResponse>()
        .add(
            Method::POST,
            "/api/v1/auth/logout",
            any,
            "people",
            "end the caller's session",
            login::logout,
        )
        .request::<subscriptions::Empty>()
        .no_content()
        .add(
            Method::GET,
            "/api/v1/auth/me",
            i,
            "people",
            "who the credential is (any scope)",
            login::me,
        )
        .response::<schemas::Me>()
        .add(
            Method::POST,
            "/api/v1/auth/password",
            any,
            "people",
            "change the caller's password",
            login::change_password,
        )
        .request::<login::ChangePassword>()
        .no_content()
        .add(
            Method::GET,
            "/api/v1/auth/sessions",
            any,
            "people",
            "the caller's sessions",
            login::list_sessions,
        )
        .response::<schemas::SessionList>()
        .add(
            Method::DELETE,
            "/api/v1/auth/sessions/{session_id}",
            any,
            "people",
            "end a session",
            login::revoke_session,
        )
        .no_content()
        .add(
            Method::POST,
            "/api/v1/auth/totp/enroll",
            any,
            "people",
            "start TOTP enrolment",
            login::totp_enroll,
        )
        .request::<subscriptions::Empty>()
        .response::<schemas::TotpEnrollment>()
        .add(
            Method::POST,
            "/api/v1/auth/totp/confirm",
            any,
            "people",
            "confirm TOTP with a code",
            login::totp_confirm,
        )
        .request::<login::TotpConfirm>()
        .response::<schemas::RecoveryCodes>()
        .add(
            Method::POST,
            "/api/v1/auth/totp/disable",
            any,
            "people",
            "turn TOTP off",
            login::totp_disable,
        )
        .request::<login::TotpDisable>()
        .no_content()
        .add(
            Method::GET,
            "/api/v1/users",
            a,
            "people",
            "list users",
            users::list,
        )
        .query::<admin::TenantParam>()
        .response::<schemas::UserList>()
        .add(
            Method::POST,
            "/api/v1/users",
            a,
            "people",
            "create a user",
            users::create,
        )
        .request::<users::NewUser>()
        .response_status::<schemas::UserJson>(StatusCode::CREATED)
        .add(
            Method::GET,
            "/api/v1/users/{user_id}",
            a,
            "people",
            "one user",
            users::get,
        )
        .response::<schemas::UserJson>()
        .add(
            Method::PATCH,
            "/api/v1/users/{user_id}",
            a,
            "people",
            "disable, enable, change role",
            users::patch,
        )
        .request::<users::Patch>()
        .response::<schemas::UserJson>()
        .add(
            Method::DELETE,
            "/api/v1/users/{user_id}",
            a,
            "people",
            "delete a user",
            users::delete,
        )
        .no_content()
        .add(
            Method::PUT,
            "/api/v1/users/{user_id}/tenants/{tenant}",
            a,
            "people",
            "give a role in a tenant",
            users::put_role,
        )
        .request::<users::RoleBody>()
        .response::<schemas::UserJson>()
        .add(
            Method::DELETE,
            "/api/v1/users/{user_id}/tenants/{tenant}",
            a,
            "people",
            "remove from a tenant",
            users::delete_role,
        )
        .response::<schemas::UserJson>()
        .add(
            Method::POST,
            "/api/v1/users/{user_id}/password",
            a,
            "people",
            "set a user's password",
            users::reset_password,
        )
        .request::<users::ResetPassword>()
        .no_content()
        .add(
            Method::GET,
            "/api/v1/audit",
            a,
            "people",
            "the audit log",
            audit::list,
        )
        .query::<audit::AuditParams>()
        .response::<schemas::AuditList>()
        .add(
            Method::GET,
            "/api/v1/enrollment-tokens",
            a,
            "agents",
            "list enrollment tokens",
            agents::list_tokens,
        )
        .response::<schemas::EnrollmentTokenList>()
        .add(
            Method::POST,
            "/api/v1/enrollment-tokens",
            a,
            "agents",
            "create an enrollment token (shown once)",
            agents::create_token,
        )
        .request::<agents::NewToken>()
        .response_status::<schemas::NewEnrollmentTokenJson>(StatusCode::CREATED)
        .add(
            Method::DELETE,
            "/api/v1/enrollment-tokens/{token_id}",
            a,
            "agents",
            "revoke an enrollment token",
            agents::revoke_token,
        )
        .no_content()
        .add(
            Method::GET,
            "/api/v1/agents",
            any,
            "agents",
            "the fleet",
            agents::list,
        )
        .response::<schemas::AgentList>()
        .add(
            Method::POST,
            "/api/v1/agents/enroll",
            open,
            "agents",
            "trade an enrollment token for an agent key",
            agents::enroll,
        )
        .request::<agents::Enroll>()
        .response_status::<schemas::EnrolledAgentJson>(StatusCode::CREATED)
        .add(
            Method::DELETE,
            "/api/v1/agents/{agent_id}",
            a,
            "agents",
            "revoke an agent",
            agents::revoke,
        )
        .response::<schemas::AgentJson>();
    let c = prom::routes(c);
    let c = traces::routes(c);
    let c = jaeger::routes(c);
    let c = rules::routes(c);
    let c = secrets::routes(c);
    let c = status_config::routes(c);
    let c = configs::routes(c);
    let c = subscriptions::routes(c);
    alertmanager::routes(c)
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
    if state.live.get().protect_metrics
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
        let stats = wal.stats();
        let labels = SignalLabels { signal };
        t.wal_bytes
            .get_or_create(&labels)
            .set(stats.disk_bytes as i64);
        let failures = t.wal_write_failures.get_or_create(&labels);
        failures.inc_by(stats.write_failures.saturating_sub(failures.get()));
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_panic_in_blocking_work_is_a_500_that_names_the_task_not_the_panic() {
        let failed = blocking("trace query", || -> u8 { panic!("secret detail") })
            .await
            .unwrap_err();
        let (status, json) = body(ApiError::from(failed).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["errorType"], "internal");
        assert_eq!(json["error"], "trace query task failed");

        let failed = blocking("metadata read", || -> u8 { panic!("secret detail") })
            .await
            .unwrap_err();
        let (status, json) = body(prom::PromError::from(failed).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["errorType"], "internal");
        assert_eq!(
            json["error"],
            "metadata read panicked; see the collector log"
        );
    }
}
