//! The audit trail of the API: every administrative change and every failed login,
//! recorded before the response leaves, and `GET /api/v1/audit` for admins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use vantage_proto::ErrorCode;
use vantage_storage::meta::{AuditEvent, AuditQuery, MAX_AUDIT_LIMIT, Scope};

use super::admin::{METADATA_STORE, meta_error, store};
use super::timeparse::{format_time, parse_time};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::auth::Principal;

/// The client's address, when the server was started with connection info (always, in
/// the collector; a router used without it records none).
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteAddr(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RemoteAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}

/// What happened, for [`record`].
pub(crate) struct Entry<'a> {
    pub(crate) action: &'a str,
    pub(crate) target: Option<String>,
    pub(crate) outcome: &'a str,
    pub(crate) detail: Option<String>,
}

/// Records an event by `principal` (or an anonymous caller in `tenant`). A failure to
/// write is logged, not returned: the action already happened, and refusing the response
/// would hide that from the caller.
pub(crate) async fn record(
    state: &ApiState,
    principal: Option<&Principal>,
    tenant: Option<&str>,
    remote: &RemoteAddr,
    entry: Entry<'_>,
) {
    let Some(store) = state.auth.store().cloned() else {
        return;
    };
    let event = AuditEvent {
        tenant: principal
            .map(|p| p.tenant.clone())
            .or_else(|| tenant.map(str::to_string)),
        actor: principal.map_or_else(|| "anonymous".to_string(), Principal::actor),
        action: entry.action.to_string(),
        target: entry.target,
        outcome: entry.outcome.to_string(),
        remote_addr: remote.0.clone(),
        detail: entry.detail,
    };
    let action = event.action.clone();
    match tokio::task::spawn_blocking(move || store.append_audit(&event)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(action = %action, error = %e, "audit record not written"),
        Err(e) => tracing::error!(action = %action, error = %e, "audit record task failed"),
    }
}

/// `GET /api/v1/audit` parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    tenant: Option<String>,
    since: Option<String>,
    action: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// Lists audit records, newest first: an admin sees their tenant's, an admin of the
/// default tenant any tenant's (`tenant=*` for all).
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<axum::extract::Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let axum::extract::Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = match params.tenant {
        Some(t) if t == "*" && principal.is_server_admin() => None,
        Some(t) if t == principal.tenant || principal.is_server_admin() => Some(t),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "only admins of the default tenant read other tenants' audit records",
            ));
        }
        None => Some(principal.tenant.clone()),
    };
    let since = params
        .since
        .as_deref()
        .map(|s| {
            parse_time(s, crate::ingest::now_ns() as i64)
                .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64))
                .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("since: {e}")))
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("limit: must be 1 to {MAX_AUDIT_LIMIT}"),
        ));
    }
    let query = AuditQuery {
        tenant,
        since,
        action: params.action,
        before_id: params.before,
        limit,
    };
    let store = store(&state)?.clone();
    let records = blocking(METADATA_STORE, move || store.list_audit(&query))
        .await?
        .map_err(meta_error)?;
    let items: Vec<_> = records
        .iter()
        .map(|r| {
            let ns =
                r.at.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
            json!({
                "id": r.id,
                "time": format_time(ns),
                "tenant": r.event.tenant,
                "actor": r.event.actor,
                "action": r.event.action,
                "target": r.event.target,
                "outcome": r.event.outcome,
                "remote_addr": r.event.remote_addr,
                "detail": r.event.detail,
            })
        })
        .collect();
    Ok(Json(json!({"records": items})).into_response())
}
