//! People logging in: `/api/v1/auth/*` — login (password, then TOTP if enrolled), token
//! refresh with rotation, logout, the caller's own sessions, password change and TOTP
//! enrolment. Failed logins are slowed (see [`crate::auth::throttle`]) and audited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{
    LoginRejection, MetaStore, Scope, Session, SessionGrant, SessionRejection, User,
};

use super::admin::{METADATA_STORE, meta_error, parse_body, store, time};
use super::audit::{Entry, RemoteAddr, record};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::auth::{Principal, UserIdentity, totp};

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

fn throttled(wait: Duration) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::ResourceExhausted,
        "too many failed logins; wait before trying again",
    );
    e.retry_after = Some(wait.max(Duration::from_secs(1)));
    e
}

/// The person behind a request, or 400 for API keys (which have no session).
fn person(principal: &Principal) -> Result<&UserIdentity, ApiError> {
    principal.user.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            "this endpoint is for people logged in with an access token, not API keys",
        )
    })
}

pub(super) fn user_json(u: &User) -> Value {
    json!({
        "user_id": u.user_id,
        "username": u.username,
        "disabled": u.disabled,
        "totp_enabled": u.totp_enabled,
        "created_at": time(u.created_at),
        "password_changed_at": time(u.password_changed_at),
        "roles": u.roles.iter().map(|(t, r)| json!({"tenant": t, "role": r.as_str()})).collect::<Vec<_>>(),
    })
}

fn session_json(s: &Session, current: Option<&str>) -> Value {
    json!({
        "session_id": s.session_id,
        "tenant": s.tenant,
        "created_at": time(s.created_at),
        "refreshed_at": time(s.refreshed_at),
        "expires_at": time(s.expires_at),
        "revoked_at": s.revoked_at.map(time),
        "remote_addr": s.remote_addr,
        "user_agent": s.user_agent,
        "current": current == Some(s.session_id.as_str()),
    })
}

fn token_response(
    state: &ApiState,
    grant: &SessionGrant,
    refresh_token: String,
) -> Result<Response, ApiError> {
    let (access, ttl) = state
        .auth
        .issue_access_token(grant, state.live.get().sessions.access_token_ttl)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "refresh_token": refresh_token,
        "session_id": grant.session_id,
        "tenant": grant.tenant,
        "role": grant.role.as_str(),
        "user": {"user_id": grant.user_id, "username": grant.username},
    });
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    username: String,
    password: String,
    tenant: Option<String>,
    totp_code: Option<String>,
    recovery_code: Option<String>,
}

/// Password (and second factor) in, access and refresh tokens out.
pub(super) async fn login(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?.clone();
    let login: Login = parse_body(&body)?;
    let user_key = format!("user:{}", login.username.to_ascii_lowercase());
    let mut keys = vec![user_key.clone()];
    if let Some(addr) = &remote.0 {
        keys.push(format!("addr:{addr}"));
    }
    let target = Some(login.username.chars().take(64).collect::<String>());
    let failed = |detail: &str| Entry {
        action: "auth.login",
        target: target.clone(),
        outcome: "failed",
        detail: Some(detail.to_string()),
    };
    let wait = state.login_throttle.wait(&keys, Instant::now());
    if !wait.is_zero() {
        record(
            &state,
            None,
            None,
            &remote,
            Entry {
                outcome: "denied",
                ..failed("throttled")
            },
        )
        .await;
        return Err(throttled(wait));
    }
    let (name, password) = (login.username.clone(), login.password);
    let checked = {
        let store = store.clone();
        blocking(METADATA_STORE, move || {
            store.verify_password(&name, &password)
        })
        .await?
    };
    let user = match checked {
        Ok(user) => user,
        Err(LoginRejection::Unavailable) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "login check unavailable; retry",
            ));
        }
        Err(rejection) => {
            state.login_throttle.failed(&keys, Instant::now());
            record(&state, None, None, &remote, failed(&rejection.to_string())).await;
            return Err(unauthenticated(rejection.to_string()));
        }
    };
    let tenant = match login.tenant {
        Some(t) if user.role_in(&t).is_some() => t,
        Some(t) => {
            state.login_throttle.failed(&keys, Instant::now());
            record(
                &state,
                None,
                Some(&t),
                &remote,
                failed("not a member of the tenant"),
            )
            .await;
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("user is not a member of tenant {t:?}"),
            ));
        }
        None => match user.roles.as_slice() {
            [(only, _)] => only.clone(),
            roles if user.role_in(crate::auth::BOOTSTRAP_TENANT).is_some() => {
                let _ = roles;
                crate::auth::BOOTSTRAP_TENANT.to_string()
            }
            [] => {
                record(&state, None, None, &remote, failed("member of no tenant")).await;
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    "user is not a member of any tenant",
                ));
            }
            roles => {
                let names: Vec<&str> = roles.iter().map(|(t, _)| t.as_str()).collect();
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "user belongs to tenants {}: say which with \"tenant\"",
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    if user.totp_enabled {
        let second =
            second_factor(&state, &store, &user, login.totp_code, login.recovery_code).await?;
        if let Err(why) = second {
            state.login_throttle.failed(&keys, Instant::now());
            record(&state, None, Some(&tenant), &remote, failed(why)).await;
            return Err(unauthenticated(why));
        }
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let sessions = state.live.get().sessions;
    let ttl = sessions.session_ttl.min(sessions.session_max_age);
    let (session, refresh) = {
        let (store, user_id, tenant, addr) = (
            store.clone(),
            user.user_id.clone(),
            tenant.clone(),
            remote.0.clone(),
        );
        blocking(METADATA_STORE, move || {
            store.create_session(
                &user_id,
                &tenant,
                ttl,
                addr.as_deref(),
                user_agent.as_deref(),
            )
        })
        .await?
        .map_err(meta_error)?
    };
    let grant = {
        let (store, sid) = (store.clone(), session.session_id.clone());
        blocking(METADATA_STORE, move || {
            store.check_session(&sid, std::time::SystemTime::now())
        })
        .await?
        .map_err(|e| unauthenticated(e.to_string()))?
    };
    state.login_throttle.succeeded(&user_key);
    let principal = crate::auth::principal_of(grant.clone());
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "auth.login",
            target,
            outcome: "ok",
            detail: Some(format!("session {}", grant.session_id)),
        },
    )
    .await;
    tracing::info!(user = %grant.username, tenant = %grant.tenant, session_id = %grant.session_id, "login");
    token_response(&state, &grant, refresh)
}

/// Checks the TOTP code or a recovery code; `Ok(Err(reason))` for a wrong one.
async fn second_factor(
    state: &ApiState,
    store: &Arc<MetaStore>,
    user: &User,
    totp_code: Option<String>,
    recovery_code: Option<String>,
) -> Result<Result<(), &'static str>, ApiError> {
    match (totp_code, recovery_code) {
        (Some(code), _) => {
            let (store2, id) = (store.clone(), user.user_id.clone());
            let secret = blocking(METADATA_STORE, move || store2.totp_secret(&id))
                .await?
                .map_err(meta_error)?;
            let ok = secret.is_some_and(|(secret, enabled)| {
                enabled && state.totp.check(&user.user_id, &secret, &code)
            });
            Ok(if ok {
                Ok(())
            } else {
                Err("wrong or reused TOTP code")
            })
        }
        (None, Some(code)) => {
            let (store2, id) = (store.clone(), user.user_id.clone());
            let ok = blocking(METADATA_STORE, move || store2.use_recovery_code(&id, &code))
                .await?
                .map_err(meta_error)?;
            Ok(if ok {
                Ok(())
            } else {
                Err("unknown or used recovery code")
            })
        }
        (None, None) => Ok(Err(
            "second factor required: send totp_code (or a recovery_code)",
        )),
    }
}

/// Body of `POST /api/v1/auth/refresh`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Refresh {
    refresh_token: String,
}

/// A refresh token in, a new access token and a new refresh token out (the old one
/// stops working; presenting it again ends the session).
pub(super) async fn refresh(
    State(state): State<Arc<ApiState>>,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?.clone();
    let req: Refresh = parse_body(&body)?;
    let sessions = state.live.get().sessions;
    let (ttl, max_age) = (sessions.session_ttl, sessions.session_max_age);
    let result = blocking(METADATA_STORE, move || {
        store.refresh_session(&req.refresh_token, ttl, max_age)
    })
    .await?;
    match result {
        Ok((grant, refresh)) => token_response(&state, &grant, refresh),
        Err(SessionRejection::Unavailable) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "session check unavailable; retry",
        )),
        Err(rejection) => {
            if rejection == SessionRejection::Reused {
                record(
                    &state,
                    None,
                    None,
                    &remote,
                    Entry {
                        action: "auth.refresh",
                        target: None,
                        outcome: "denied",
                        detail: Some(rejection.to_string()),
                    },
                )
                .await;
            }
            Err(unauthenticated(rejection.to_string()))
        }
    }
}

/// Ends the caller's session: its access and refresh tokens stop working at once.
pub(super) async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let sid = person(&principal)?.session_id.clone();
    let store = store(&state)?.clone();
    let sid2 = sid.clone();
    blocking(METADATA_STORE, move || store.revoke_session(&sid2))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "auth.logout",
            target: Some(sid),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Who the credential belongs to.
pub(super) async fn me(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = state
        .auth
        .identify(header)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let scopes: Vec<&str> = principal.scopes.iter().map(|s| s.as_str()).collect();
    let mut body = json!({
        "tenant": principal.tenant,
        "scopes": scopes,
        "key_id": principal.key_id,
    });
    if let Some(u) = &principal.user {
        body["user"] = json!({
            "user_id": u.user_id,
            "username": u.username,
            "role": u.role.as_str(),
            "session_id": u.session_id,
        });
    }
    Ok(Json(body).into_response())
}

/// The caller's sessions (last week's, revoked ones included).
pub(super) async fn list_sessions(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?.clone();
    let store = store(&state)?.clone();
    let uid = me.user_id.clone();
    let sessions = blocking(METADATA_STORE, move || store.list_sessions(&uid))
        .await?
        .map_err(meta_error)?;
    let items: Vec<Value> = sessions
        .iter()
        .map(|s| session_json(s, Some(&me.session_id)))
        .collect();
    Ok(Json(json!({"sessions": items})).into_response())
}

/// Ends one of the caller's sessions (or, for an admin, any session in their tenant).
pub(super) async fn revoke_session(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let store = store(&state)?.clone();
    let sid = session_id.clone();
    let found = {
        let store = store.clone();
        blocking(METADATA_STORE, move || store.get_session(&sid)).await?
    };
    let allowed = found.as_ref().is_ok_and(|s| {
        principal
            .user
            .as_ref()
            .is_some_and(|u| u.user_id == s.user_id)
            || (principal.has(Scope::Admin)
                && (s.tenant == principal.tenant || principal.is_server_admin()))
    });
    if !allowed {
        // Someone else's session reads as missing, not forbidden.
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("session {session_id} not found"),
        ));
    }
    let sid = session_id.clone();
    blocking(METADATA_STORE, move || store.revoke_session(&sid))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "session.revoke",
            target: Some(session_id),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /api/v1/auth/password`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// The caller changes their own password; their other sessions end.
pub(super) async fn change_password(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?.clone();
    let req: ChangePassword = parse_body(&body)?;
    let store = store(&state)?.clone();
    let (s, name, current) = (store.clone(), me.username.clone(), req.current_password);
    if blocking(METADATA_STORE, move || s.verify_password(&name, &current))
        .await?
        .is_err()
    {
        state.login_throttle.failed(
            &[format!("user:{}", me.username.to_ascii_lowercase())],
            Instant::now(),
        );
        record(
            &state,
            Some(&principal),
            None,
            &remote,
            Entry {
                action: "user.password",
                target: Some(me.username.clone()),
                outcome: "failed",
                detail: Some("wrong current password".into()),
            },
        )
        .await;
        return Err(unauthenticated("current password is wrong"));
    }
    let (uid, sid, new) = (me.user_id.clone(), me.session_id.clone(), req.new_password);
    blocking(METADATA_STORE, move || {
        store.set_password(&uid, &new, Some(&sid))
    })
    .await?
    .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "user.password",
            target: Some(me.username),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Starts TOTP enrolment: a new secret and its `otpauth://` URI for an authenticator.
pub(super) async fn totp_enroll(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?.clone();
    let store = store(&state)?.clone();
    let uid = me.user_id.clone();
    let secret = blocking(METADATA_STORE, move || store.totp_begin(&uid))
        .await?
        .map_err(meta_error)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "secret": totp::base32_encode(&secret),
            "otpauth_uri": totp::provisioning_uri(&secret, &me.username),
        })),
    )
        .into_response())
}

/// Body of `POST /api/v1/auth/totp/confirm`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpConfirm {
    code: String,
}

/// Completes enrolment with a code from the authenticator; returns the recovery codes,
/// shown once.
pub(super) async fn totp_confirm(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?.clone();
    let req: TotpConfirm = parse_body(&body)?;
    let store = store(&state)?.clone();
    let (s, uid) = (store.clone(), me.user_id.clone());
    let pending = blocking(METADATA_STORE, move || s.totp_secret(&uid))
        .await?
        .map_err(meta_error)?;
    let Some((secret, false)) = pending else {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "no TOTP enrolment is pending: POST /api/v1/auth/totp/enroll first",
        ));
    };
    if !state.totp.check(&me.user_id, &secret, &req.code) {
        return Err(ApiError::new(ErrorCode::InvalidArgument, "wrong TOTP code"));
    }
    let uid = me.user_id.clone();
    let codes = blocking(METADATA_STORE, move || store.totp_enable(&uid))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "user.totp_enable",
            target: Some(me.username),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"recovery_codes": codes})),
    )
        .into_response())
}

/// Body of `POST /api/v1/auth/totp/disable`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpDisable {
    password: String,
}

/// Turns the caller's second factor off (their password is asked again).
pub(super) async fn totp_disable(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?.clone();
    let req: TotpDisable = parse_body(&body)?;
    let store = store(&state)?.clone();
    let (s, name) = (store.clone(), me.username.clone());
    if blocking(METADATA_STORE, move || {
        s.verify_password(&name, &req.password)
    })
    .await?
    .is_err()
    {
        return Err(unauthenticated("password is wrong"));
    }
    let uid = me.user_id.clone();
    blocking(METADATA_STORE, move || store.totp_disable(&uid))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "user.totp_disable",
            target: Some(me.username),
            outcome: "ok",
            detail: None,
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
