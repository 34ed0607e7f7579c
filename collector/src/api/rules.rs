//! Rules and alerts over HTTP: Prometheus's `GET /api/v1/rules` and `GET /api/v1/alerts`
//! (the JSON Grafana lists), and a Cortex/Mimir-ruler-style API for rule groups kept
//! in the metadata store: `GET|POST /api/v1/rules/{namespace}`,
//! `GET|DELETE /api/v1/rules/{namespace}/{group}`, `DELETE /api/v1/rules/{namespace}`.
//! Reading needs the `query` scope, changing rules `admin`; everything is the caller's
//! tenant only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vantage_proto::ErrorCode;
use vantage_storage::meta::Scope;

use super::prom::{Params, PromError, query_caller, success};
use super::{ApiError, ApiState, authenticate, blocking};
use crate::alerting::rules::group::Health;
use crate::alerting::rules::state::{ActiveAlert, AlertState};
use crate::alerting::rules::{GroupView, RulesApiError};

/// Largest rule group body accepted by `POST /api/v1/rules/{namespace}`.
const MAX_GROUP_BODY_BYTES: usize = 1024 * 1024;

/// The routes.
pub(crate) fn routes(c: super::catalog::Catalog) -> super::catalog::Catalog {
    use super::catalog::Access;
    use axum::http::Method;
    const T: &str = "alerting: rules";
    let (q, e) = (Access::Scope(Scope::Query), Access::Scope(Scope::Edit));
    c.add(
        Method::GET,
        "/api/v1/rules",
        q,
        T,
        "rule groups and their state (Prometheus's shape)",
        prom_rules,
    )
    .response::<super::schemas::PromResponse<RulesData<'static>>>()
    .add(
        Method::GET,
        "/api/v1/alerts",
        q,
        T,
        "active alerts (Prometheus's shape)",
        prom_alerts,
    )
    .response::<super::schemas::PromResponse<AlertsData<'static>>>()
    .add(
        Method::GET,
        "/api/v1/rules/{namespace}",
        q,
        T,
        "a namespace's API rule groups (YAML)",
        get_namespace,
    )
    .produces("application/yaml")
    .add(
        Method::POST,
        "/api/v1/rules/{namespace}",
        e,
        T,
        "create or replace a rule group (YAML body)",
        post_group,
    )
    .request_body("application/yaml")
    .response_status::<super::schemas::Accepted>(StatusCode::ACCEPTED)
    .add(
        Method::DELETE,
        "/api/v1/rules/{namespace}",
        e,
        T,
        "delete a namespace's groups",
        delete_namespace,
    )
    .response_status::<super::schemas::Accepted>(StatusCode::ACCEPTED)
    .add(
        Method::GET,
        "/api/v1/rules/{namespace}/{group}",
        q,
        T,
        "one API rule group (YAML)",
        get_group,
    )
    .produces("application/yaml")
    .add(
        Method::DELETE,
        "/api/v1/rules/{namespace}/{group}",
        e,
        T,
        "delete one rule group",
        delete_group,
    )
    .response_status::<super::schemas::Accepted>(StatusCode::ACCEPTED)
}

/// Go's `time.Time` JSON (RFC 3339 with nanoseconds, trailing zeros dropped); the
/// zero time for "never".
fn go_time(ms: i64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    super::timeparse::format_time(ms.saturating_mul(1_000_000))
}

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct ApiAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    state: &'static str,
    #[serde(rename = "activeAt")]
    active_at: String,
    value: String,
}

fn api_alert(a: &ActiveAlert) -> ApiAlert<'_> {
    ApiAlert {
        labels: &a.labels,
        annotations: &a.annotations,
        state: a.state.as_str(),
        active_at: go_time(a.active_at_ms),
        value: crate::alerting::rules::prom_value(a.value),
    }
}

#[derive(Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(super) enum ApiRule<'a> {
    Alerting {
        state: &'static str,
        name: &'a str,
        query: &'a str,
        duration: f64,
        #[serde(rename = "keepFiringFor")]
        keep_firing_for: f64,
        labels: &'a BTreeMap<String, String>,
        annotations: &'a BTreeMap<String, String>,
        alerts: Vec<ApiAlert<'a>>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "str::is_empty")]
        last_error: &'a str,
        #[serde(rename = "evaluationTime")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Recording {
        name: &'a str,
        query: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: &'a BTreeMap<String, String>,
        health: &'static str,
        #[serde(rename = "lastError", skip_serializing_if = "str::is_empty")]
        last_error: &'a str,
        #[serde(rename = "evaluationTime")]
        evaluation_time: f64,
        #[serde(rename = "lastEvaluation")]
        last_evaluation: String,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct ApiGroup<'a> {
    name: &'a str,
    file: &'a str,
    rules: Vec<ApiRule<'a>>,
    interval: f64,
    limit: i64,
    #[serde(rename = "evaluationTime")]
    evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    last_evaluation: String,
}

/// `data` of `GET /api/v1/rules`.
#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct RulesData<'a> {
    groups: Vec<ApiGroup<'a>>,
}

/// `data` of `GET /api/v1/alerts`.
#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct AlertsData<'a> {
    alerts: Vec<ApiAlert<'a>>,
}

fn rules_of(
    state: &ApiState,
    tenant: &str,
) -> Vec<(GroupView, crate::alerting::rules::group::GroupRuntime)> {
    state
        .rules
        .groups_of(tenant)
        .into_iter()
        .map(|v| {
            let rt = v
                .runtime
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            (v, rt)
        })
        .collect()
}

/// `GET /api/v1/rules`: every group of the caller's tenant, Prometheus 2.42's JSON;
/// `type=alert|record`, `rule_name[]`, `rule_group[]` and `file[]` filter.
async fn prom_rules(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let typ = params.get("type").unwrap_or("").to_lowercase();
    if !typ.is_empty() && typ != "alert" && typ != "record" {
        return Err(PromError::bad_data(format!("not supported value {typ:?}")));
    }
    let names = params.all("rule_name[]");
    let group_names = params.all("rule_group[]");
    let files = params.all("file[]");
    let filtered =
        !typ.is_empty() || !names.is_empty() || !group_names.is_empty() || !files.is_empty();
    let views = rules_of(&state, &principal.tenant);
    let mut groups = Vec::new();
    let default_rt = crate::alerting::rules::group::RuleRuntime::default();
    for (v, rt) in &views {
        if !group_names.is_empty() && !group_names.contains(&v.key.name.as_str()) {
            continue;
        }
        if !files.is_empty() && !files.contains(&v.key.file.as_str()) {
            continue;
        }
        let mut rules = Vec::new();
        for (i, r) in v.spec.rules.iter().enumerate() {
            if !names.is_empty() && !names.contains(&r.rule.name()) {
                continue;
            }
            let st = rt.rules.get(i).unwrap_or(&default_rt);
            let health = st.health.as_str();
            if r.rule.alert.is_some() {
                if typ == "record" {
                    continue;
                }
                let alerts: Vec<ApiAlert<'_>> = st
                    .alerts
                    .sorted()
                    .into_iter()
                    .filter(|a| a.state != AlertState::Inactive)
                    .map(api_alert)
                    .collect();
                rules.push(ApiRule::Alerting {
                    state: st.alerts.rule_state().as_str(),
                    name: r.rule.name(),
                    query: &r.rule.expr,
                    duration: r.rule.for_ms() as f64 / 1000.0,
                    keep_firing_for: r.rule.keep_firing_for_ms() as f64 / 1000.0,
                    labels: &r.rule.labels,
                    annotations: &r.rule.annotations,
                    alerts,
                    health,
                    last_error: &st.last_error,
                    evaluation_time: st.evaluation_seconds,
                    last_evaluation: go_time(st.last_evaluation_ms),
                    kind: "alerting",
                });
            } else {
                if typ == "alert" {
                    continue;
                }
                rules.push(ApiRule::Recording {
                    name: r.rule.name(),
                    query: &r.rule.expr,
                    labels: &r.rule.labels,
                    health: if st.health == Health::Unknown {
                        "unknown"
                    } else {
                        health
                    },
                    last_error: &st.last_error,
                    evaluation_time: st.evaluation_seconds,
                    last_evaluation: go_time(st.last_evaluation_ms),
                    kind: "recording",
                });
            }
        }
        if filtered && rules.is_empty() {
            continue;
        }
        groups.push(ApiGroup {
            name: &v.key.name,
            file: &v.key.file,
            rules,
            interval: v.spec.interval_ms as f64 / 1000.0,
            limit: v.spec.group.limit,
            evaluation_time: rt.evaluation_seconds,
            last_evaluation: go_time(rt.last_evaluation_ms),
        });
    }
    Ok(success(
        serde_json::to_string(&RulesData { groups }).unwrap_or_default(),
    ))
}

/// `GET /api/v1/alerts`: the caller's pending and firing alerts.
async fn prom_alerts(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let views = rules_of(&state, &principal.tenant);
    let alerts: Vec<ApiAlert<'_>> = views
        .iter()
        .flat_map(|(_, rt)| rt.rules.iter())
        .flat_map(|r| r.alerts.sorted())
        .filter(|a| a.state != AlertState::Inactive)
        .map(api_alert)
        .collect();
    Ok(success(
        serde_json::to_string(&AlertsData { alerts }).unwrap_or_default(),
    ))
}

fn rules_error(e: RulesApiError) -> ApiError {
    match e {
        RulesApiError::Invalid(m) => ApiError::new(ErrorCode::InvalidArgument, m),
        RulesApiError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
        RulesApiError::Store(e) => {
            tracing::warn!(error = %e, "rule storage failed");
            ApiError::new(ErrorCode::Unavailable, "rule storage is unavailable")
        }
    }
}

fn yaml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"success","data":null,"errorType":"","error":""}"#,
    )
        .into_response()
}

/// What a rule-store call is called in the error when it panics.
const RULE_STORAGE: &str = "rule storage";

/// `GET /api/v1/rules/{namespace}`: the namespace's groups as YAML
/// (`<namespace>: [groups]`).
async fn get_namespace(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let rules = state.rules.clone();
    let ns = namespace.clone();
    let groups = blocking(RULE_STORAGE, move || {
        rules.api_groups(&principal.tenant, Some(&ns))
    })
    .await?
    .map_err(rules_error)?;
    if groups.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "no rule groups found"));
    }
    Ok(yaml(serde_yaml_ng::to_string(&groups).unwrap_or_default()))
}

/// `GET /api/v1/rules/{namespace}/{group}`: one group as YAML.
async fn get_group(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((namespace, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let rules = state.rules.clone();
    let ns = namespace.clone();
    let groups = blocking(RULE_STORAGE, move || {
        rules.api_groups(&principal.tenant, Some(&ns))
    })
    .await?
    .map_err(rules_error)?;
    let found = groups
        .get(&namespace)
        .and_then(|gs| gs.iter().find(|g| g.name == group));
    match found {
        Some(g) => Ok(yaml(serde_yaml_ng::to_string(g).unwrap_or_default())),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "rule group does not exist",
        )),
    }
}

/// `POST /api/v1/rules/{namespace}`: creates or replaces the group in the body,
/// validated exactly as a rule file's group.
async fn post_group(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    if body.len() > MAX_GROUP_BODY_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("rule group body over {MAX_GROUP_BODY_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "rule group body is not UTF-8"))?;
    if namespace.is_empty() || namespace.len() > 256 || namespace.contains(['/', ';', '\0']) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "invalid namespace",
        ));
    }
    let rules = state.rules.clone();
    blocking(RULE_STORAGE, move || {
        rules.put_api_group(&principal.tenant, &namespace, &text)
    })
    .await?
    .map_err(rules_error)?;
    Ok(accepted())
}

/// `DELETE /api/v1/rules/{namespace}/{group}`.
async fn delete_group(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((namespace, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let rules = state.rules.clone();
    blocking(RULE_STORAGE, move || {
        rules.delete_api_groups(&principal.tenant, &namespace, Some(&group))
    })
    .await?
    .map_err(rules_error)?;
    Ok(accepted())
}

/// `DELETE /api/v1/rules/{namespace}`: every group of the namespace.
async fn delete_namespace(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let rules = state.rules.clone();
    blocking(RULE_STORAGE, move || {
        rules.delete_api_groups(&principal.tenant, &namespace, None)
    })
    .await?
    .map_err(rules_error)?;
    Ok(accepted())
}
