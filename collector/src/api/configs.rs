//! `/api/v1/configs`: agent configuration documents — list, create, new versions,
//! history, diff, rollback, roll-out, delete. Reads need `query`, writes `edit`; every
//! write is audited and pushed at once to the tenant's connected OpAMP agents.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{ConfigDoc, ConfigVersion, Scope, Selector, unified_diff};

use super::admin::{METADATA_STORE, TenantParam, meta_error, parse_body, target_tenant, time};
use super::audit::{Entry, RemoteAddr, record};
use super::catalog::{Access, Catalog};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::auth::Principal;

/// The routes, for the catalog.
pub(super) fn routes(c: Catalog) -> Catalog {
    let (q, e) = (Access::Scope(Scope::Query), Access::Scope(Scope::Edit));
    let i = Access::Scope(Scope::Ingest);
    let tag = "agent configuration";
    c.add(
        Method::POST,
        "/v1/opamp",
        i,
        tag,
        "OpAMP over plain HTTP: one AgentToServer in, one ServerToAgent out (protobuf)",
        crate::opamp::http,
    )
    .request_body(vantage_proto::opamp::CONTENT_TYPE)
    .produces(vantage_proto::opamp::CONTENT_TYPE)
    .add(
        Method::GET,
        "/v1/opamp",
        i,
        tag,
        "OpAMP over WebSocket (upgrade); frames are a 0 header byte and one message",
        crate::opamp::websocket,
    )
    .upgrade()
    .add(
        Method::GET,
        "/api/v1/configs",
        q,
        tag,
        "list config documents",
        list,
    )
    .query::<TenantParam>()
    .response::<ConfigList>()
    .add(
        Method::POST,
        "/api/v1/configs",
        e,
        tag,
        "create a config document",
        create,
    )
    .query::<TenantParam>()
    .request::<NewConfig>()
    .response_status::<ConfigWithVersion>(StatusCode::CREATED)
    .add(
        Method::GET,
        "/api/v1/configs/{name}",
        q,
        tag,
        "one document: current version, roll-out, matching agents",
        get,
    )
    .query::<TenantParam>()
    .response::<ConfigWithCurrent>()
    .add(
        Method::PUT,
        "/api/v1/configs/{name}",
        e,
        tag,
        "add a version (current unless activate is false)",
        put_version,
    )
    .query::<TenantParam>()
    .request::<NewVersion>()
    .response::<ConfigWithVersion>()
    .add(
        Method::DELETE,
        "/api/v1/configs/{name}",
        e,
        tag,
        "delete a document and its history",
        delete,
    )
    .query::<TenantParam>()
    .no_content()
    .add(
        Method::GET,
        "/api/v1/configs/{name}/versions",
        q,
        tag,
        "a document's versions",
        versions,
    )
    .query::<TenantParam>()
    .response::<VersionList>()
    .add(
        Method::GET,
        "/api/v1/configs/{name}/versions/{version}",
        q,
        tag,
        "one version with its body",
        version,
    )
    .query::<TenantParam>()
    .response::<VersionJson>()
    .add(
        Method::GET,
        "/api/v1/configs/{name}/diff",
        q,
        tag,
        "unified diff between versions ?from=&to=",
        diff,
    )
    .query::<DiffParams>()
    .response::<DiffJson>()
    .add(
        Method::POST,
        "/api/v1/configs/{name}/rollback",
        e,
        tag,
        "roll back: a new version copying an old one",
        rollback,
    )
    .query::<TenantParam>()
    .request::<RollbackBody>()
    .response::<ConfigWithVersion>()
    .add(
        Method::PUT,
        "/api/v1/configs/{name}/rollout",
        e,
        tag,
        "offer a version to a percentage of the matching agents",
        rollout,
    )
    .query::<TenantParam>()
    .request::<RolloutBody>()
    .response::<ConfigJson>()
}

/// Checks a document body: YAML that parses to a mapping.
pub(crate) fn validate_yaml(body: &str) -> Result<(), String> {
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(body) {
        Ok(serde_yaml_ng::Value::Mapping(_)) => Ok(()),
        Ok(serde_yaml_ng::Value::Null) => {
            Err("body: empty; a config document is a YAML mapping".into())
        }
        Ok(_) => Err(
            "body: a config document is a YAML mapping (key: value), not a scalar or a list".into(),
        ),
        Err(e) => Err(format!("body: not valid YAML: {e}")),
    }
}

fn check_body(body: &str) -> Result<(), ApiError> {
    if body.len() > vantage_storage::meta::MAX_CONFIG_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "body: {} bytes, more than the limit of {} bytes",
                body.len(),
                vantage_storage::meta::MAX_CONFIG_BYTES
            ),
        ));
    }
    validate_yaml(body).map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e))
}

fn author(p: &Principal) -> String {
    match (&p.user, &p.key_id) {
        (Some(u), _) => u.username.clone(),
        (None, Some(k)) => format!("key:{k}"),
        (None, None) => "anonymous".into(),
    }
}

fn version_json(v: &ConfigVersion, with_body: bool) -> Value {
    let mut out = json!({
        "version": v.version,
        "author": v.author,
        "message": v.message,
        "created_at": time(v.created_at),
        "sha256": v.sha256,
        "size_bytes": v.body.len(),
    });
    if with_body {
        out["body"] = Value::String(v.body.clone());
    }
    out
}

fn doc_json(state: &ApiState, d: &ConfigDoc) -> Value {
    let matching = Selector::parse(&d.selector)
        .map(|s| state.opamp.matching_agents(&d.tenant, &s))
        .unwrap_or_default();
    json!({
        "name": d.name,
        "tenant": d.tenant,
        "selector": d.selector,
        "current_version": d.current_version,
        "latest_version": d.latest_version,
        "rollout": d.rollout.map(|r| json!({"version": r.version, "percent": r.percent})),
        "created_at": time(d.created_at),
        "updated_at": time(d.updated_at),
        "matching_agents": matching.len(),
        "matching_instance_uids": matching,
    })
}

fn store(state: &ApiState) -> Arc<vantage_storage::meta::MetaStore> {
    state.opamp.store().clone()
}

type TenantQuery = Result<Query<TenantParam>, axum::extract::rejection::QueryRejection>;

fn tenant_of(principal: &Principal, params: TenantQuery) -> Result<String, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    target_tenant(principal, params.tenant)
}

/// After every write: push the change to the tenant's agents, then audit it. One place,
/// so no write can forget either.
async fn written(
    state: &ApiState,
    principal: &Principal,
    remote: &RemoteAddr,
    tenant: &str,
    action: &'static str,
    name: &str,
    detail: String,
) {
    state.opamp.config_changed(tenant).await;
    record(
        state,
        Some(principal),
        None,
        remote,
        Entry {
            action,
            target: Some(name.to_string()),
            outcome: "ok",
            detail: Some(detail),
        },
    )
    .await;
}

async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: TenantQuery,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let tenant = tenant_of(&principal, params)?;
    let s = store(&state);
    let docs = blocking(METADATA_STORE, move || s.list_configs(&tenant))
        .await?
        .map_err(meta_error)?;
    let docs: Vec<Value> = docs.iter().map(|d| doc_json(&state, d)).collect();
    Ok(Json(json!({"configs": docs})).into_response())
}

/// Body of `POST /api/v1/configs`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewConfig {
    name: String,
    #[serde(default)]
    selector: String,
    body: String,
    #[serde(default)]
    message: String,
}

async fn create(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    params: TenantQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let tenant = tenant_of(&principal, params)?;
    let new: NewConfig = parse_body(&body)?;
    check_body(&new.body)?;
    let (s, t, a) = (store(&state), tenant.clone(), author(&principal));
    let (name, selector, body, message) = (new.name, new.selector, new.body, new.message);
    let (doc, v) = blocking(METADATA_STORE, move || {
        s.create_config(&t, &name, &selector, &body, &a, &message)
    })
    .await?
    .map_err(meta_error)?;
    written(
        &state,
        &principal,
        &remote,
        &tenant,
        "config.create",
        &doc.name,
        format!("version 1, selector {:?}", doc.selector),
    )
    .await;
    let mut out = doc_json(&state, &doc);
    out["version"] = version_json(&v, false);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn get(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: TenantQuery,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let tenant = tenant_of(&principal, params)?;
    let s = store(&state);
    let (doc, current) = blocking(METADATA_STORE, move || {
        let doc = s.get_config(&tenant, &name)?;
        let current = s.config_version(&tenant, &name, doc.current_version)?;
        Ok::<_, vantage_storage::meta::MetaError>((doc, current))
    })
    .await?
    .map_err(meta_error)?;
    let mut out = doc_json(&state, &doc);
    out["current"] = version_json(&current, true);
    Ok(Json(out).into_response())
}

/// Body of `PUT /api/v1/configs/{name}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    body: String,
    #[serde(default)]
    message: String,
    selector: Option<String>,
    activate: Option<bool>,
}

async fn put_version(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    params: TenantQuery,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let tenant = tenant_of(&principal, params)?;
    let new: NewVersion = parse_body(&body)?;
    check_body(&new.body)?;
    let activate = new.activate.unwrap_or(true);
    let (s, t, a, n) = (
        store(&state),
        tenant.clone(),
        author(&principal),
        name.clone(),
    );
    let (doc, v) = blocking(METADATA_STORE, move || {
        s.put_config_version(
            &t,
            &n,
            &new.body,
            &a,
            &new.message,
            new.selector.as_deref(),
            activate,
        )
    })
    .await?
    .map_err(meta_error)?;
    written(
        &state,
        &principal,
        &remote,
        &tenant,
        "config.version",
        &name,
        format!("version {} (activate: {activate})", v.version),
    )
    .await;
    let mut out = doc_json(&state, &doc);
    out["version"] = version_json(&v, false);
    Ok(Json(out).into_response())
}

async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    params: TenantQuery,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let tenant = tenant_of(&principal, params)?;
    let (s, t, n) = (store(&state), tenant.clone(), name.clone());
    blocking(METADATA_STORE, move || s.delete_config(&t, &n))
        .await?
        .map_err(meta_error)?;
    written(
        &state,
        &principal,
        &remote,
        &tenant,
        "config.delete",
        &name,
        "deleted".into(),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn versions(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: TenantQuery,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let tenant = tenant_of(&principal, params)?;
    let s = store(&state);
    let list = blocking(METADATA_STORE, move || s.config_versions(&tenant, &name))
        .await?
        .map_err(meta_error)?;
    Ok(Json(json!({
        "versions": list.iter().map(|v| version_json(v, false)).collect::<Vec<_>>()
    }))
    .into_response())
}

async fn version(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: TenantQuery,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let tenant = tenant_of(&principal, params)?;
    let version = parse_version("version", &version)?;
    let s = store(&state);
    let v = blocking(METADATA_STORE, move || {
        s.config_version(&tenant, &name, version)
    })
    .await?
    .map_err(meta_error)?;
    Ok(Json(version_json(&v, true)).into_response())
}

fn parse_version(what: &str, text: &str) -> Result<u32, ApiError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("{what} {text:?}: a version number (1, 2, ...)"),
            )
        })
}

/// Query of the diff endpoint.
#[derive(Deserialize, schemars::JsonSchema)]
struct DiffParams {
    from: String,
    to: String,
    tenant: Option<String>,
}

async fn diff(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<DiffParams>, axum::extract::rejection::QueryRejection>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let tenant = target_tenant(&principal, params.tenant)?;
    let (from, to) = (
        parse_version("from", &params.from)?,
        parse_version("to", &params.to)?,
    );
    let s = store(&state);
    let n = name.clone();
    let (a, b) = blocking(METADATA_STORE, move || {
        Ok::<_, vantage_storage::meta::MetaError>((
            s.config_version(&tenant, &n, from)?,
            s.config_version(&tenant, &n, to)?,
        ))
    })
    .await?
    .map_err(meta_error)?;
    let text = unified_diff(
        &a.body,
        &b.body,
        &format!("{name} version {from}"),
        &format!("{name} version {to}"),
    );
    Ok(Json(json!({"from": from, "to": to, "diff": text})).into_response())
}

/// Body of the rollback endpoint.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u32,
    #[serde(default)]
    message: String,
}

async fn rollback(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    params: TenantQuery,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let tenant = tenant_of(&principal, params)?;
    let req: RollbackBody = parse_body(&body)?;
    let (s, t, a, n) = (
        store(&state),
        tenant.clone(),
        author(&principal),
        name.clone(),
    );
    let (doc, v) = blocking(METADATA_STORE, move || {
        s.rollback_config(&t, &n, req.version, &a, &req.message)
    })
    .await?
    .map_err(meta_error)?;
    written(
        &state,
        &principal,
        &remote,
        &tenant,
        "config.rollback",
        &name,
        format!("to version {} as version {}", req.version, v.version),
    )
    .await;
    let mut out = doc_json(&state, &doc);
    out["version"] = version_json(&v, false);
    Ok(Json(out).into_response())
}

/// Body of the roll-out endpoint.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    version: u32,
    percent: u8,
}

async fn rollout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
    params: TenantQuery,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let tenant = tenant_of(&principal, params)?;
    let req: RolloutBody = parse_body(&body)?;
    let (s, t, n) = (store(&state), tenant.clone(), name.clone());
    let doc = blocking(METADATA_STORE, move || {
        s.set_config_rollout(&t, &n, req.version, req.percent)
    })
    .await?
    .map_err(meta_error)?;
    written(
        &state,
        &principal,
        &remote,
        &tenant,
        "config.rollout",
        &name,
        format!("version {} to {}%", req.version, req.percent),
    )
    .await;
    Ok(Json(doc_json(&state, &doc)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_must_be_a_mapping() {
        assert!(validate_yaml("a: 1\nb: [x]\n").is_ok());
        for (bad, says) in [
            ("", "empty"),
            ("- a\n- b\n", "mapping"),
            ("just text", "mapping"),
            ("a: [1\n", "not valid YAML"),
        ] {
            let e = validate_yaml(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}

// The shapes of the JSON answers above (built with `json!` in `doc_json` and
// `version_json`), for the OpenAPI document; never built.

/// A version without its body (with `body` where a single version is asked for).
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct VersionJson {
    version: u32,
    /// A user name or `key:<id>`.
    author: String,
    message: String,
    created_at: String,
    sha256: String,
    size_bytes: u64,
    /// The YAML document (only for one version, and in `current`).
    body: Option<String>,
}

/// A roll-out in progress.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct RolloutJson {
    version: u32,
    percent: u8,
}

/// A config document.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ConfigJson {
    name: String,
    tenant: String,
    /// `key=value,key!=value`; empty selects every agent.
    selector: String,
    current_version: u32,
    latest_version: u32,
    rollout: Option<RolloutJson>,
    created_at: String,
    updated_at: String,
    matching_agents: u64,
    matching_instance_uids: Vec<String>,
}

/// A document with the version just written.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ConfigWithVersion {
    #[serde(flatten)]
    doc: ConfigJson,
    version: VersionJson,
}

/// A document with its current version and body.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ConfigWithCurrent {
    #[serde(flatten)]
    doc: ConfigJson,
    current: VersionJson,
}

/// `GET /api/v1/configs`.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ConfigList {
    configs: Vec<ConfigJson>,
}

/// `GET /api/v1/configs/{name}/versions`.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct VersionList {
    versions: Vec<VersionJson>,
}

/// A unified diff between two versions.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct DiffJson {
    from: u32,
    to: u32,
    diff: String,
}
