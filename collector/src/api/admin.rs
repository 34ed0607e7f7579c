//! Tenants and API keys: `/api/v1/tenants` and `/api/v1/keys`, admin scope only.
//!
//! An admin key manages its own tenant's keys; an admin of the bootstrap tenant
//! (`default`) manages every tenant, like a Grafana server admin.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{ApiKey, MetaError, MetaStore, Scope};

use super::audit::{Entry, RemoteAddr, record};
use super::timeparse::format_time;
use super::{ApiError, ApiState, authenticate};
use crate::auth::Principal;
use crate::config::parse_duration;

/// What a metadata-store call is called in the error when it panics.
pub(super) const METADATA_STORE: &str = "metadata store";

pub(super) fn meta_error(e: MetaError) -> ApiError {
    match e {
        MetaError::NotFound(what) => {
            ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
        }
        MetaError::Conflict(what) => {
            ApiError::new(ErrorCode::AlreadyExists, format!("{what} exists already"))
        }
        MetaError::Invalid(why) => ApiError::new(ErrorCode::InvalidArgument, why),
        other => {
            tracing::error!(error = %other, "metadata store failed");
            ApiError::new(
                ErrorCode::Internal,
                "metadata store failed; see the collector log",
            )
        }
    }
}

pub(super) fn store(state: &ApiState) -> Result<&Arc<MetaStore>, ApiError> {
    state.auth.store().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            "tenants and keys do not exist while authentication is off (--insecure-no-auth)",
        )
    })
}

pub(super) fn time(t: SystemTime) -> Value {
    let ns = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Value::String(format_time(ns))
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "key_id": k.key_id,
        "tenant": k.tenant,
        "name": k.name,
        "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created_at": time(k.created_at),
        "expires_at": k.expires_at.map(time),
        "revoked_at": k.revoked_at.map(time),
        "last_used_at": k.last_used_at.map(time),
    })
}

/// The tenant an admin request acts on: its own, or any for a server admin.
pub(super) fn target_tenant(
    principal: &Principal,
    asked: Option<String>,
) -> Result<String, ApiError> {
    match asked {
        Some(t) if t != principal.tenant && !principal.is_server_admin() => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only admins of the default tenant manage other tenants",
        )),
        Some(t) => Ok(t),
        None => Ok(principal.tenant.clone()),
    }
}

/// `?tenant=` of the key list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantParam {
    pub(super) tenant: Option<String>,
}

pub(super) async fn list_keys(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<TenantParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = target_tenant(&principal, params.tenant)?;
    let keys = store(&state)?
        .list_api_keys(Some(&tenant))
        .map_err(meta_error)?;
    Ok(Json(json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()})).into_response())
}

/// Body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    name: String,
    scopes: Vec<String>,
    tenant: Option<String>,
    /// Lifetime such as `30d`; none = no expiry.
    expires_in: Option<String>,
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("request body: {e}")))
}

pub(super) async fn create_key(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let new: NewKey = parse_body(&body)?;
    let tenant = target_tenant(&principal, new.tenant)?;
    let scopes = new
        .scopes
        .iter()
        .map(|s| {
            s.parse::<Scope>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("scope {s:?} is not one of ingest, query, edit, admin"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let expires_at = match new.expires_in.as_deref() {
        Some(text) => Some(
            SystemTime::now()
                + parse_duration(text).map_err(|e| {
                    ApiError::new(ErrorCode::InvalidArgument, format!("expires_in: {e}"))
                })?,
        ),
        None => None,
    };
    let (key, secret) = store(&state)?
        .create_api_key(&tenant, &new.name, &scopes, expires_at)
        .map_err(meta_error)?;
    tracing::info!(key_id = %key.key_id, tenant = %key.tenant, by = %principal.actor(), "api key created");
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "key.create",
            target: Some(key.key_id.clone()),
            outcome: "ok",
            detail: Some(format!(
                "{:?} in {} with {}",
                key.name,
                key.tenant,
                scopes.join(",")
            )),
        },
    )
    .await;
    let mut body = key_json(&key);
    body["key"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn revoke_key(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let store = store(&state)?;
    let owner = store
        .list_api_keys(None)
        .map_err(meta_error)?
        .into_iter()
        .find(|k| k.key_id == key_id)
        .map(|k| k.tenant)
        // Another tenant's key is reported as missing, not as forbidden.
        .filter(|t| *t == principal.tenant || principal.is_server_admin())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("api key {key_id} not found")))?;
    store.revoke_api_key(&key_id).map_err(meta_error)?;
    tracing::info!(%key_id, tenant = %owner, by = %principal.actor(), "api key revoked");
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "key.revoke",
            target: Some(key_id.clone()),
            outcome: "ok",
            detail: Some(format!("in {owner}")),
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_tenants(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    if !principal.is_server_admin() {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only admins of the default tenant list tenants",
        ));
    }
    let tenants = store(&state)?.list_tenants().map_err(meta_error)?;
    let list: Vec<Value> = tenants
        .iter()
        .map(|t| json!({"name": t.name, "created_at": time(t.created_at)}))
        .collect();
    Ok(Json(json!({"tenants": list})).into_response())
}

/// Body of `POST /api/v1/tenants`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    name: String,
}

pub(super) async fn create_tenant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    if !principal.is_server_admin() {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only admins of the default tenant create tenants",
        ));
    }
    let new: NewTenant = parse_body(&body)?;
    let tenant = store(&state)?
        .create_tenant(&new.name)
        .map_err(meta_error)?;
    tracing::info!(tenant = %tenant.name, by = %principal.actor(), "tenant created");
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "tenant.create",
            target: Some(tenant.name.clone()),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": tenant.name, "created_at": time(tenant.created_at)})),
    )
        .into_response())
}
