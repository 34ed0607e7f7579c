//! Agents: enrollment tokens (admin), the enrollment call an agent makes with one
//! (no other credential), the fleet list, and revocation.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{Agent, EnrollRejection, EnrollmentToken, Scope};

use super::admin::{
    METADATA_STORE, TenantParam, meta_error, parse_body, store, target_tenant, time,
};
use super::audit::{Entry, RemoteAddr, record};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::config::parse_duration;

/// Enrollment tokens live a week unless asked otherwise: long enough for a rollout,
/// short enough that a token pasted into a ticket stops working.
const DEFAULT_TOKEN_TTL: &str = "7d";

fn token_json(t: &EnrollmentToken) -> Value {
    json!({
        "token_id": t.token_id,
        "tenant": t.tenant,
        "name": t.name,
        "created_at": time(t.created_at),
        "expires_at": t.expires_at.map(time),
        "max_uses": t.max_uses,
        "uses": t.uses,
        "revoked_at": t.revoked_at.map(time),
    })
}

fn agent_json(a: &Agent) -> Value {
    let seconds_since = a
        .last_seen_at
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    json!({
        "agent_id": a.agent_id,
        "tenant": a.tenant,
        "hostname": a.hostname,
        "version": a.version,
        "os": a.os,
        "key_id": a.key_id,
        "enrolled_with": a.enrolled_with,
        "enrolled_at": time(a.enrolled_at),
        "last_seen_at": a.last_seen_at.map(time),
        "seconds_since_last_seen": seconds_since,
        "status": if a.revoked_at.is_some() { "revoked" } else { "active" },
        "revoked_at": a.revoked_at.map(time),
    })
}

/// Body of `POST /api/v1/enrollment-tokens`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    tenant: Option<String>,
    expires_in: Option<String>,
    max_uses: Option<u32>,
}

/// Creates an enrollment token (shown once).
pub(super) async fn create_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let new: NewToken = parse_body(&body)?;
    let tenant = target_tenant(&principal, new.tenant)?;
    let ttl = parse_duration(new.expires_in.as_deref().unwrap_or(DEFAULT_TOKEN_TTL))
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("expires_in: {e}")))?;
    let store = store(&state)?.clone();
    let (name, t) = (new.name, tenant.clone());
    let (token, text) = blocking(METADATA_STORE, move || {
        store.create_enrollment_token(&t, &name, Some(ttl), new.max_uses)
    })
    .await?
    .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "enrollment_token.create",
            target: Some(token.token_id.clone()),
            outcome: "ok",
            detail: Some(format!("{:?} for {tenant}", token.name)),
        },
    )
    .await;
    let mut body = token_json(&token);
    body["token"] = Value::String(text);
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Lists enrollment tokens.
pub(super) async fn list_tokens(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<TenantParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = target_tenant(&principal, params.tenant)?;
    let store = store(&state)?.clone();
    let tokens = blocking(METADATA_STORE, move || {
        store.list_enrollment_tokens(Some(&tenant))
    })
    .await?
    .map_err(meta_error)?;
    Ok(Json(json!({"tokens": tokens.iter().map(token_json).collect::<Vec<_>>()})).into_response())
}

/// Revokes an enrollment token (enrolled agents keep working).
pub(super) async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(token_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let store = store(&state)?.clone();
    let s = store.clone();
    let owner = blocking(METADATA_STORE, move || s.list_enrollment_tokens(None))
        .await?
        .map_err(meta_error)?
        .into_iter()
        .find(|t| t.token_id == token_id)
        .map(|t| t.tenant)
        .filter(|t| *t == principal.tenant || principal.is_server_admin())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("enrollment token {token_id} not found"),
            )
        })?;
    let id = token_id.clone();
    blocking(METADATA_STORE, move || store.revoke_enrollment_token(&id))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "enrollment_token.revoke",
            target: Some(token_id),
            outcome: "ok",
            detail: Some(format!("in {owner}")),
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /api/v1/agents/enroll`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Enroll {
    token: String,
    hostname: String,
    version: String,
    os: String,
}

/// An agent trades an enrollment token for its own ingest key. The token is the
/// credential, so this endpoint takes no `Authorization` header.
pub(super) async fn enroll(
    State(state): State<Arc<ApiState>>,
    remote: RemoteAddr,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?.clone();
    let req: Enroll = parse_body(&body)?;
    let token_id = req
        .token
        .strip_prefix(vantage_storage::meta::ENROLLMENT_PREFIX)
        .and_then(|r| r.split_once('_'))
        .map(|(id, _)| id.chars().take(12).collect::<String>());
    let hostname = req.hostname.chars().take(255).collect::<String>();
    let result = blocking(METADATA_STORE, move || {
        store.enroll_agent(&req.token, &req.hostname, &req.version, &req.os)
    })
    .await?;
    let actor = format!("enrollment:{}", token_id.as_deref().unwrap_or("?"));
    match result {
        Ok((agent, key)) => {
            record(
                &state,
                None,
                Some(&agent.tenant),
                &remote,
                Entry {
                    action: "agent.enroll",
                    target: Some(agent.agent_id.clone()),
                    outcome: "ok",
                    detail: Some(format!("{} ({actor})", agent.hostname)),
                },
            )
            .await;
            tracing::info!(agent_id = %agent.agent_id, tenant = %agent.tenant, hostname = %agent.hostname, "agent enrolled");
            let mut body = agent_json(&agent);
            body["api_key"] = Value::String(key);
            Ok((
                StatusCode::CREATED,
                [(header::CACHE_CONTROL, "no-store")],
                Json(body),
            )
                .into_response())
        }
        Err(EnrollRejection::Unavailable) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "enrollment unavailable; retry",
        )),
        Err(EnrollRejection::BadField) => Err(ApiError::new(
            ErrorCode::InvalidArgument,
            EnrollRejection::BadField.to_string(),
        )),
        Err(rejection) => {
            record(
                &state,
                None,
                None,
                &remote,
                Entry {
                    action: "agent.enroll",
                    target: Some(hostname),
                    outcome: "failed",
                    detail: Some(format!("{rejection} ({actor})")),
                },
            )
            .await;
            Err(ApiError::new(
                ErrorCode::Unauthenticated,
                rejection.to_string(),
            ))
        }
    }
}

/// The fleet: every agent of the tenant with host, version and last contact.
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<TenantParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = target_tenant(&principal, params.tenant)?;
    // Enrolled agents need the key store; with authentication off only OpAMP agents exist.
    let agents = match state.auth.store() {
        Some(store) => {
            let (store, t) = (store.clone(), tenant.clone());
            blocking(METADATA_STORE, move || store.list_agents(Some(&t)))
                .await?
                .map_err(meta_error)?
        }
        None => Vec::new(),
    };
    let fleet = state.opamp.fleet(&tenant);
    Ok(Json(json!({"agents": fleet_json(&agents, &fleet)})).into_response())
}

/// Enrolled agents with their OpAMP state (the most recently seen instance using the
/// agent's key), then OpAMP agents that were not enrolled (third-party clients with an
/// API key), listed with `agent_id: null` and their host name from `host.name`.
fn fleet_json(agents: &[Agent], fleet: &[crate::opamp::FleetEntry]) -> Vec<Value> {
    let mut out = Vec::with_capacity(agents.len() + fleet.len());
    let mut used = std::collections::HashSet::new();
    for a in agents {
        let mut v = agent_json(a);
        v["enrolled"] = Value::Bool(true);
        let entry = fleet
            .iter()
            .filter(|f| f.record.key_id == a.key_id)
            .max_by_key(|f| f.record.last_contact);
        for f in fleet.iter().filter(|f| f.record.key_id == a.key_id) {
            used.insert(f.record.instance_uid.clone());
        }
        merge_opamp(&mut v, entry);
        out.push(v);
    }
    for f in fleet
        .iter()
        .filter(|f| !used.contains(&f.record.instance_uid))
    {
        let attrs: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&f.record.description).unwrap_or_default();
        let mut v = json!({
            "agent_id": null,
            "tenant": f.record.tenant,
            "hostname": attrs.get("host.name").cloned().unwrap_or_default(),
            "version": attrs.get("service.version").cloned().unwrap_or_default(),
            "os": attrs.get("os.type").cloned().unwrap_or_default(),
            "key_id": f.record.key_id,
            "enrolled": false,
            "status": "active",
        });
        merge_opamp(&mut v, Some(f));
        out.push(v);
    }
    out
}

fn merge_opamp(v: &mut Value, entry: Option<&crate::opamp::FleetEntry>) {
    let extra = match entry {
        Some(f) => f.json(),
        None => json!({
            "instance_uid": null, "desired_config_hash": null, "desired_config_versions": {},
            "applied_config_hash": null, "config_status": "unknown", "last_error": null,
            "last_contact": null, "connected": false,
        }),
    };
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        for (k, val) in extra {
            obj.entry(k).or_insert(val);
        }
    }
}

/// Revokes an agent: its key is refused from its next request on.
pub(super) async fn revoke(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let store = store(&state)?.clone();
    let (s, id) = (store.clone(), agent_id.clone());
    let agent = blocking(METADATA_STORE, move || s.get_agent(&id))
        .await?
        .ok()
        .filter(|a| a.tenant == principal.tenant || principal.is_server_admin())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("agent {agent_id} not found")))?;
    let id = agent.agent_id.clone();
    let agent = blocking(METADATA_STORE, move || store.revoke_agent(&id))
        .await?
        .map_err(meta_error)?;
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "agent.revoke",
            target: Some(agent.agent_id.clone()),
            outcome: "ok",
            detail: Some(agent.hostname.clone()),
        },
    )
    .await;
    Ok(Json(agent_json(&agent)).into_response())
}
