//! Managing people: `/api/v1/users`, admin scope. An admin manages the users of their
//! tenant; an admin of the default tenant manages everyone. Users outside the caller's
//! reach read as missing, not forbidden.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use vantage_proto::ErrorCode;
use vantage_storage::meta::{Role, Scope, User};

use super::admin::{METADATA_STORE, TenantParam, meta_error, parse_body, store, target_tenant};
use super::audit::{Entry, RemoteAddr, record};
use super::login::user_json;
use super::{ApiError, ApiState, authenticate, blocking};
use crate::auth::Principal;

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("role {text:?} is not one of admin, editor, viewer"),
        )
    })
}

/// The user, if the caller may manage them.
async fn reachable(
    state: &ApiState,
    principal: &Principal,
    user_id: &str,
) -> Result<User, ApiError> {
    let store = store(state)?.clone();
    let id = user_id.to_string();
    let user = blocking(METADATA_STORE, move || store.get_user(&id))
        .await?
        .ok();
    user.filter(|u| principal.is_server_admin() || u.role_in(&principal.tenant).is_some())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("user {user_id} not found")))
}

fn not_self(principal: &Principal, user: &User, what: &str) -> Result<(), ApiError> {
    if principal
        .user
        .as_ref()
        .is_some_and(|me| me.user_id == user.user_id)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "you cannot {what} yourself: ask another admin (this keeps a tenant from losing its last admin by accident)"
            ),
        ));
    }
    Ok(())
}

async fn audit_ok(
    state: &ApiState,
    principal: &Principal,
    remote: &RemoteAddr,
    action: &str,
    target: &str,
    detail: Option<String>,
) {
    record(
        state,
        Some(principal),
        None,
        remote,
        Entry {
            action,
            target: Some(target.to_string()),
            outcome: "ok",
            detail,
        },
    )
    .await;
}

/// Users with a role in the tenant (`?tenant=`, default the caller's).
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<TenantParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = target_tenant(&principal, params.tenant)?;
    let store = store(&state)?.clone();
    let users = blocking(METADATA_STORE, move || store.list_users(Some(&tenant)))
        .await?
        .map_err(meta_error)?;
    Ok(Json(json!({"users": users.iter().map(user_json).collect::<Vec<_>>()})).into_response())
}

/// Body of `POST /api/v1/users`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    username: String,
    password: String,
    role: String,
    tenant: Option<String>,
}

/// Creates a user with a role in a tenant.
pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let new: NewUser = parse_body(&body)?;
    let tenant = target_tenant(&principal, new.tenant)?;
    let role = parse_role(&new.role)?;
    let store = store(&state)?.clone();
    let (name, password, t) = (new.username.clone(), new.password, tenant.clone());
    let user = blocking(METADATA_STORE, move || {
        store.create_user(&name, &password, &t, role)
    })
    .await?
    .map_err(meta_error)?;
    audit_ok(
        &state,
        &principal,
        &remote,
        "user.create",
        &user.username,
        Some(format!("{role} in {tenant}")),
    )
    .await;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

/// One user.
pub(super) async fn get(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let user = reachable(&state, &principal, &user_id).await?;
    Ok(Json(user_json(&user)).into_response())
}

/// Body of `PATCH /api/v1/users/{id}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
    disabled: Option<bool>,
    role: Option<String>,
    tenant: Option<String>,
}

/// Disables or enables a user, or changes their role in a tenant (default: the caller's).
pub(super) async fn patch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let change: Patch = parse_body(&body)?;
    let mut user = reachable(&state, &principal, &user_id).await?;
    let store = store(&state)?.clone();
    if let Some(disabled) = change.disabled {
        if disabled {
            not_self(&principal, &user, "disable")?;
        }
        let (s, id) = (store.clone(), user.user_id.clone());
        user = blocking(METADATA_STORE, move || s.set_user_disabled(&id, disabled))
            .await?
            .map_err(meta_error)?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        audit_ok(&state, &principal, &remote, action, &user.username, None).await;
    }
    if let Some(role) = change.role {
        let role = parse_role(&role)?;
        let tenant = target_tenant(&principal, change.tenant)?;
        if role != Role::Admin {
            not_self(&principal, &user, "demote")?;
        }
        let (s, id, t) = (store.clone(), user.user_id.clone(), tenant.clone());
        user = blocking(METADATA_STORE, move || s.set_user_role(&id, &t, Some(role)))
            .await?
            .map_err(meta_error)?;
        audit_ok(
            &state,
            &principal,
            &remote,
            "user.role",
            &user.username,
            Some(format!("{role} in {tenant}")),
        )
        .await;
    }
    Ok(Json(user_json(&user)).into_response())
}

/// Deletes a user. A tenant admin may delete only users who belong to no other tenant
/// (remove their role instead, with `DELETE /api/v1/users/{id}/tenants/{tenant}`).
pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let user = reachable(&state, &principal, &user_id).await?;
    not_self(&principal, &user, "delete")?;
    if !principal.is_server_admin() && user.roles.iter().any(|(t, _)| *t != principal.tenant) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "this user belongs to other tenants too: remove their role here with DELETE /api/v1/users/{id}/tenants/{tenant}",
        ));
    }
    let store = store(&state)?.clone();
    let id = user.user_id.clone();
    blocking(METADATA_STORE, move || store.delete_user(&id))
        .await?
        .map_err(meta_error)?;
    audit_ok(
        &state,
        &principal,
        &remote,
        "user.delete",
        &user.username,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `PUT /api/v1/users/{id}/tenants/{tenant}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleBody {
    role: String,
}

/// Gives a user a role in a tenant (adding them to it).
pub(super) async fn put_role(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path((user_id, tenant)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let tenant = target_tenant(&principal, Some(tenant))?;
    let req: RoleBody = parse_body(&body)?;
    let role = parse_role(&req.role)?;
    // Adding someone to your tenant needs only that you can see them there, or that
    // you are a server admin; a tenant admin cannot look up arbitrary users.
    let user = reachable(&state, &principal, &user_id).await?;
    let store = store(&state)?.clone();
    let (id, t) = (user.user_id.clone(), tenant.clone());
    let user = blocking(METADATA_STORE, move || {
        store.set_user_role(&id, &t, Some(role))
    })
    .await?
    .map_err(meta_error)?;
    audit_ok(
        &state,
        &principal,
        &remote,
        "user.role",
        &user.username,
        Some(format!("{role} in {tenant}")),
    )
    .await;
    Ok(Json(user_json(&user)).into_response())
}

/// Removes a user's role in a tenant; their sessions there end.
pub(super) async fn delete_role(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path((user_id, tenant)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let tenant = target_tenant(&principal, Some(tenant))?;
    let user = reachable(&state, &principal, &user_id).await?;
    if tenant == principal.tenant {
        not_self(&principal, &user, "remove")?;
    }
    let store = store(&state)?.clone();
    let (id, t) = (user.user_id.clone(), tenant.clone());
    let user = blocking(METADATA_STORE, move || store.set_user_role(&id, &t, None))
        .await?
        .map_err(meta_error)?;
    audit_ok(
        &state,
        &principal,
        &remote,
        "user.role_remove",
        &user.username,
        Some(format!("from {tenant}")),
    )
    .await;
    Ok(Json(user_json(&user)).into_response())
}

/// Body of `POST /api/v1/users/{id}/password`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetPassword {
    password: String,
}

/// An admin sets a user's password; all of the user's sessions end.
pub(super) async fn reset_password(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let req: ResetPassword = parse_body(&body)?;
    let user = reachable(&state, &principal, &user_id).await?;
    let store = store(&state)?.clone();
    let id = user.user_id.clone();
    blocking(METADATA_STORE, move || {
        store.set_password(&id, &req.password, None)
    })
    .await?
    .map_err(meta_error)?;
    audit_ok(
        &state,
        &principal,
        &remote,
        "user.password_reset",
        &user.username,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
