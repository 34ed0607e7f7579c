//! `GET /api/v1/status/config`: the effective configuration (defaults included, every
//! secret masked), when and from where it was loaded, and the last reload's result;
//! `POST /api/v1/status/config/reload` reloads it (see [`crate::reload`]).
//!
//! Masking happens twice, on purpose: [`render`] writes values the configuration types
//! know are secret (key material) as `<redacted>`, and [`mask`] then walks the whole
//! tree and redacts every value whose key name says secret (`password`, `token`,
//! `secret`, `*_key`, ...), so a secret added to the configuration later is masked even
//! if whoever added it forgot this page.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::Scope;

use super::audit::{Entry, RemoteAddr, record};
use super::catalog::{Access, Catalog};
use super::{ApiError, ApiState, authenticate};
use crate::config::{Config, LogFormat};
use crate::secrets::REDACTED;

use vantage_proto::config::format_duration as duration;

/// The effective configuration as a tree with the file's key names. Values the types
/// know to be secret are already `<redacted>`; [`mask`] catches the rest by name.
pub fn render(c: &Config) -> Value {
    let path = |p: &std::path::Path| p.display().to_string();
    json!({
        "data_dir": path(&c.data_dir),
        "log_format": match c.log_format { LogFormat::Text => "text", LogFormat::Json => "json" },
        "log_level": c.log_level,
        "listen": {
            "otlp_grpc": c.otlp_grpc.to_string(),
            "otlp_http": c.otlp_http.to_string(),
            "api": c.api.to_string(),
        },
        "ingest": {
            "max_request_bytes": c.max_request_bytes,
            "max_inflight_bytes": c.max_inflight_bytes,
            "max_attributes_per_record": c.max_attributes_per_record,
            "max_future_skew": duration(c.max_future_skew),
            "retry_after": duration(c.retry_after),
        },
        "wal": {"segment_max_bytes": c.wal_segment_max_bytes, "fsync": c.wal_fsync},
        "logs": {
            "commit_interval_ms": c.commit_interval.as_millis() as u64,
            "search_idle_after_ms": c.search_idle_after.as_millis() as u64,
            "idle_commit_interval_ms": c.idle_commit_interval.as_millis() as u64,
            "writer_heap_bytes": c.writer_heap_bytes,
            "indexing_threads": c.indexing_threads,
            "search_timeout": duration(c.log_search_timeout),
            "max_concurrent_searches": c.max_concurrent_searches,
            "max_live_tails": c.max_live_tails,
            "max_hits_bytes": c.max_hits_bytes,
        },
        "retention": {
            "logs": duration(c.retention_logs),
            "metrics": duration(c.retention_metrics),
            "traces": duration(c.retention_traces),
        },
        "auth": {
            "enabled": c.auth_enabled,
            "protect_metrics": c.protect_metrics,
            "access_token_ttl": duration(c.sessions.access_token_ttl),
            "session_ttl": duration(c.sessions.session_ttl),
            "session_max_age": duration(c.sessions.session_max_age),
        },
        "limits": {
            "ingest_bytes_per_second": c.rates.ingest_bytes_per_tenant,
            "ingest_bytes_per_second_per_key": c.rates.ingest_bytes_per_key,
            "query_requests_per_second": c.rates.queries_per_tenant,
            "query_requests_per_second_per_key": c.rates.queries_per_key,
        },
        "metrics": {
            "max_series_per_tenant": c.max_series_per_tenant,
            "out_of_order_window": duration(c.out_of_order_window),
            "query_timeout": duration(c.query_timeout),
            "max_samples_per_query": c.max_samples_per_query,
            "max_concurrent_queries": c.max_concurrent_queries,
        },
        "api": {"cors_allowed_origins": c.cors_allowed_origins},
        "alerting": {
            "rules_dir": c.alerting.rules_dir.as_deref().map(path),
            "alertmanager_config": c.alerting.alertmanager_config.as_deref().map(path),
            "external_url": c.alerting.external_url,
            "evaluation_interval": duration(c.alerting.evaluation_interval),
            "query_offset": duration(c.alerting.query_offset),
        },
        "tls": c.tls.as_ref().map(|t| json!({
            "cert_file": path(&t.cert_file),
            "key_file": path(&t.key_file),
            "client_ca_file": t.client_ca_file.as_deref().map(path),
        })),
        "secrets": {
            "key_file": c.secrets.key_file.as_deref().map(path),
            "key": c.secrets.key.as_ref().map(|_| REDACTED),
            "previous_key_files": c.secrets.previous_key_files.iter().map(|p| path(p)).collect::<Vec<_>>(),
            "without_tls": c.secrets_without_tls.as_str(),
        },
    })
}

/// Whether a key name says its value is secret. Names of files and directories (a
/// path is not the secret) and of lifetimes and sizes (`access_token_ttl`) are not.
pub fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const NOT_SECRET_SUFFIXES: &[&str] = &[
        "_file",
        "_files",
        "_dir",
        "_path",
        "_ttl",
        "_age",
        "_interval",
        "_ms",
        "_bytes",
        "_seconds",
        "_id",
    ];
    if NOT_SECRET_SUFFIXES.iter().any(|s| n.ends_with(s)) {
        return false;
    }
    const SECRET_WORDS: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private",
        "signing",
        "apikey",
        "api_key",
        "authorization",
        "bearer",
    ];
    n == "key" || n.ends_with("_key") || SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// Redacts, in place, every non-null value (scalar or list) under a secret-sounding
/// key, at any depth.
pub fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if v.is_object() {
                    mask(v);
                } else if !v.is_null() && is_secret_key(k) {
                    *v = Value::String(REDACTED.to_string());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// `?format=` of the status page.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FormatParam {
    format: Option<String>,
}

fn server_admin(state: &ApiState, headers: &HeaderMap) -> Result<crate::auth::Principal, ApiError> {
    let principal = authenticate(state, headers, Scope::Admin)?;
    if !principal.is_server_admin() {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "the collector's configuration is for admins of the default tenant",
        ));
    }
    Ok(principal)
}

/// The effective configuration, masked, as JSON or (`?format=yaml`) YAML.
pub(super) async fn get(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<FormatParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    server_admin(&state, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
    let mut config = render(&state.live.get());
    mask(&mut config);
    let mut body = json!({"config": config});
    if let Some(r) = &state.reloader {
        body["loaded_at"] = json!(r.loaded_at());
        body["loaded_from"] = r.source().describe();
        body["last_reload"] = json!(r.last());
    }
    match params.format.as_deref() {
        None | Some("json") => Ok(Json(body).into_response()),
        Some("yaml") => {
            let text = serde_yaml_ng::to_string(&body)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("yaml: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
        }
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("format: {other:?} is not json or yaml"),
        )),
    }
}

/// Reloads the configuration: 200 with what was applied and what needs a restart, or
/// 400 with why the file was refused (the running configuration stays).
pub(super) async fn reload(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    remote: RemoteAddr,
) -> Result<Response, ApiError> {
    let principal = server_admin(&state, &headers)?;
    let Some(reloader) = state.reloader.clone() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this collector was started without a reloadable configuration",
        ));
    };
    let outcome = reloader.reload("api").await;
    let ok = outcome.result == "success";
    record(
        &state,
        Some(&principal),
        None,
        &remote,
        Entry {
            action: "config.reload",
            target: None,
            outcome: if ok { "ok" } else { "failed" },
            detail: outcome.error.clone(),
        },
    )
    .await;
    if ok {
        Ok(Json(json!({"status": "success", "reload": outcome})).into_response())
    } else {
        let message = format!(
            "configuration refused, the running one stays: {}",
            outcome.error.as_deref().unwrap_or("")
        );
        Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({
                "status": "error",
                "errorType": ErrorCode::InvalidArgument.as_str(),
                "error": message,
                "reload": outcome,
            })),
        )
            .into_response())
    }
}

// The shapes of the JSON answers (built with `json!`), for the OpenAPI document.

/// One reload (`crate::reload::ReloadOutcome`).
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ReloadOutcomeJson {
    /// `success` or `failure`.
    result: String,
    /// `sighup` or `api`.
    trigger: String,
    at: String,
    /// Keys whose new value is in effect.
    applied: Vec<String>,
    /// Keys that changed in the file but keep their old value until a restart.
    restart_required: Vec<String>,
    error: Option<String>,
}

/// `GET /api/v1/status/config`.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct StatusConfigJson {
    /// The effective configuration, every secret `<redacted>`.
    config: serde_json::Map<String, Value>,
    loaded_at: Option<String>,
    /// Where the file, environment and flags came from.
    loaded_from: Option<Value>,
    last_reload: Option<ReloadOutcomeJson>,
}

/// `POST /api/v1/status/config/reload`.
#[allow(dead_code)]
#[derive(schemars::JsonSchema)]
struct ReloadJson {
    /// `success`.
    status: String,
    reload: ReloadOutcomeJson,
}

/// The status routes, for the catalog.
pub(super) fn routes(c: Catalog) -> Catalog {
    let admin = Access::Scope(Scope::Admin);
    c.add(
        Method::GET,
        "/api/v1/status/config",
        admin,
        "status",
        "the effective configuration, secrets masked (?format=yaml)",
        get,
    )
    .query::<FormatParam>()
    .response::<StatusConfigJson>()
    .add(
        Method::POST,
        "/api/v1/status/config/reload",
        admin,
        "status",
        "re-read the configuration file and apply what can change live",
        reload,
    )
    .request::<super::subscriptions::Empty>()
    .response::<ReloadJson>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn secret_names_are_masked_paths_and_lifetimes_are_not() {
        let mut v = json!({
            "smtp": {"auth_password": "p1", "auth_username": "u"},
            "webhook": {"bearer_token": "t1", "url": "http://x"},
            "signing_secret": "s1",
            "secrets": {"key": "k1", "key_file": "/etc/k", "previous_key_files": ["/a"]},
            "tls": {"key_file": "/tls.key", "private_key": "pk"},
            "auth": {"access_token_ttl": "15m", "api_key": "ak"},
            "list": [{"password": "p2"}],
            "nothing": {"token": null},
        });
        mask(&mut v);
        let text = v.to_string();
        for secret in ["p1", "t1", "s1", "k1", "pk", "ak", "p2"] {
            assert!(
                !text.contains(&format!("\"{secret}\"")),
                "{secret} leaked: {text}"
            );
        }
        assert_eq!(v["secrets"]["key_file"], "/etc/k");
        assert_eq!(v["tls"]["key_file"], "/tls.key");
        assert_eq!(v["auth"]["access_token_ttl"], "15m");
        assert_eq!(v["smtp"]["auth_username"], "u");
        assert!(v["nothing"]["token"].is_null());
    }

    #[test]
    fn the_key_material_is_redacted_by_type_too() {
        let env = [(
            "VANTAGE_SECRETS__KEY".to_string(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
        )]
        .into_iter()
        .collect();
        let c = Config::load(None, &env, &Default::default()).unwrap();
        let tree = render(&c);
        assert_eq!(tree["secrets"]["key"], REDACTED);
        assert!(!tree.to_string().contains("AAAAAAAA"));
        assert_eq!(tree["retention"]["logs"], "7d");
        assert_eq!(tree["metrics"]["query_timeout"], "2m");
        assert_eq!(tree["logs"]["search_timeout"], "1m");
        assert_eq!(tree["logs"]["max_concurrent_searches"], 4);
        assert_eq!(tree["logs"]["max_live_tails"], 10);
        assert_eq!(tree["logs"]["max_hits_bytes"], 16 << 20);
    }

    #[test]
    fn durations_render_in_the_largest_exact_unit() {
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration(Duration::ZERO), "0ms");
    }
}
