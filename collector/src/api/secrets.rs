//! `/api/v1/secrets`: set, list and delete the caller's tenant's secrets, and rotate the
//! key (admins of the default tenant). There is deliberately no route that returns a
//! value: a secret goes out only inside a configuration sent to an agent of its tenant.
//! Setting or deleting one pushes the configuration again, at once, to the tenant's
//! connected agents whose bodies reference it (their expanded hash changes).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{Scope, SecretInfo};

use super::admin::{meta_error, time};
use super::audit::{Entry, RemoteAddr, record};
use super::catalog::{Access, Catalog};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::secrets::{MAX_VALUE_BYTES, SecretError, SecretValue};

/// Largest request body: the largest value, JSON-escaped (at most 6 bytes per byte),
/// and the braces around it.
const MAX_BODY_BYTES: usize = MAX_VALUE_BYTES * 6 + 64;

fn info_json(s: &SecretInfo) -> Value {
    json!({
        "name": s.name,
        "tenant": s.tenant,
        "key_id": s.key_id,
        "created_at": time(s.created_at),
        "updated_at": time(s.updated_at),
        "author": s.author,
    })
}

/// What a secrets-store call is called in the error when it panics.
const SECRETS_STORE: &str = "secrets store";

/// Maps a secrets error to the API; none of them carries a value.
pub(crate) fn secret_error(e: SecretError) -> ApiError {
    match e {
        SecretError::InvalidName(_)
        | SecretError::InvalidValue(_)
        | SecretError::Unterminated(_) => ApiError::new(ErrorCode::InvalidArgument, e.to_string()),
        SecretError::NotFound { .. } => ApiError::new(ErrorCode::NotFound, e.to_string()),
        SecretError::Store(m) => meta_error(m),
        SecretError::UnknownKey { .. } | SecretError::Decrypt { .. } | SecretError::Key { .. } => {
            tracing::error!(error = %e, "secrets key problem");
            ApiError::new(ErrorCode::Internal, e.to_string())
        }
    }
}

fn service(state: &ApiState) -> Result<Arc<crate::secrets::Secrets>, ApiError> {
    state.secrets.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "the secrets store is not configured on this collector",
        )
    })
}

/// Body of `PUT /api/v1/secrets/{name}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewValue {
    value: String,
}

/// Sets a secret of the caller's tenant.
pub(super) async fn put(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "request body: larger than {MAX_BODY_BYTES} bytes (values are at most {MAX_VALUE_BYTES} bytes)"
            ),
        ));
    }
    // serde's message may quote what it could not read; say where, never what.
    let new: NewValue = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "request body: must be {{\"value\": \"...\"}} ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let value = SecretValue::new(new.value);
    let secrets = service(&state)?;
    let (tenant, n, actor) = (principal.tenant.clone(), name.clone(), principal.actor());
    let result = blocking(SECRETS_STORE, move || {
        secrets.put(&tenant, &n, &value, &actor)
    })
    .await?;
    if result.is_ok() {
        // The agents given a body that references it get the new value now.
        state.opamp.secrets_changed(&principal.tenant).await;
    }
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "secret.set",
            target: Some(name.chars().take(crate::secrets::MAX_NAME_LEN).collect()),
            outcome,
            detail: None,
        },
    )
    .await;
    let info = result.map_err(secret_error)?;
    Ok((StatusCode::OK, Json(info_json(&info))).into_response())
}

/// Lists the caller's tenant's secrets: names, times, author, key id; never values.
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let secrets = service(&state)?;
    let tenant = principal.tenant.clone();
    let list = blocking(SECRETS_STORE, move || secrets.list(&tenant))
        .await?
        .map_err(secret_error)?;
    Ok(Json(json!({"secrets": list.iter().map(info_json).collect::<Vec<_>>()})).into_response())
}

/// Deletes a secret of the caller's tenant.
pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let secrets = service(&state)?;
    let (tenant, n) = (principal.tenant.clone(), name.clone());
    let result = blocking(SECRETS_STORE, move || secrets.delete(&tenant, &n)).await?;
    if result.is_ok() {
        // Bodies that still reference it no longer expand: those agents are sent
        // nothing and keep what they run (logged, counted as expand_failed).
        state.opamp.secrets_changed(&principal.tenant).await;
    }
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "secret.delete",
            target: Some(name.chars().take(crate::secrets::MAX_NAME_LEN).collect()),
            outcome: if result.is_ok() { "ok" } else { "failed" },
            detail: None,
        },
    )
    .await;
    result.map_err(secret_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Re-encrypts every tenant's secrets under the current key (admins of the default
/// tenant: the key is the collector's, not a tenant's).
pub(super) async fn rotate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    if !principal.is_server_admin() {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only admins of the default tenant rotate the secrets key",
        ));
    }
    let secrets = service(&state)?;
    let result = blocking(SECRETS_STORE, move || secrets.rotate()).await?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "secret.rotate",
            target: None,
            outcome: if result.is_ok() { "ok" } else { "failed" },
            detail: result.as_ref().ok().map(|r| {
                format!(
                    "key {}: {} re-encrypted, {} unchanged, {} failed",
                    r.key_id, r.reencrypted, r.unchanged, r.failed
                )
            }),
        },
    )
    .await;
    let report = result.map_err(secret_error)?;
    Ok(Json(json!(report)).into_response())
}

// The shapes of the JSON answers (built with `json!`), for the OpenAPI document.

/// A secret's metadata; the value is never returned.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct SecretInfoJson {
    name: String,
    tenant: String,
    /// The key the value is encrypted under.
    key_id: String,
    created_at: String,
    updated_at: String,
    /// `user:<name>` or `key:<id>`.
    author: String,
}

/// `GET /api/v1/secrets`.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct SecretList {
    secrets: Vec<SecretInfoJson>,
}

/// What a rotation did (`crate::secrets::RotationReport`).
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct RotationJson {
    key_id: String,
    reencrypted: u64,
    unchanged: u64,
    skipped: u64,
    failed: u64,
}

/// The secrets routes, for the catalog.
pub(super) fn routes(c: Catalog) -> Catalog {
    let edit = Access::Scope(Scope::Edit);
    c.add(
        Method::PUT,
        "/api/v1/secrets/{name}",
        edit,
        "secrets",
        "set a secret of the caller's tenant (the value is never returned)",
        put,
    )
    .request::<NewValue>()
    .response::<SecretInfoJson>()
    .add(
        Method::GET,
        "/api/v1/secrets",
        edit,
        "secrets",
        "list secrets: names, times, author, key id; never values",
        list,
    )
    .response::<SecretList>()
    .add(
        Method::DELETE,
        "/api/v1/secrets/{name}",
        edit,
        "secrets",
        "delete a secret",
        delete,
    )
    .no_content()
    .add(
        Method::POST,
        "/api/v1/secrets/rotate",
        Access::Scope(Scope::Admin),
        "secrets",
        "re-encrypt every secret under the current key (admins of default)",
        rotate,
    )
    .request::<super::subscriptions::Empty>()
    .response::<RotationJson>()
}
