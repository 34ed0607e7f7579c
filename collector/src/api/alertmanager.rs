//! Alertmanager's API v2 on the collector's API port, so Prometheus, Grafana and
//! `amtool` can use Vantage as their Alertmanager, and Vantage's own notification
//! endpoints:
//!
//! | endpoint | scope |
//! |---|---|
//! | `POST /api/v2/alerts` | ingest |
//! | `GET /api/v2/alerts`, `GET /api/v2/silences`, `GET /api/v2/silence/{id}`, `GET /api/v2/status`, `GET /api/v2/receivers` | query |
//! | `POST /api/v2/silences`, `DELETE /api/v2/silence/{id}` | admin |
//! | `GET /api/v1/notifications?receiver=&status=&limit=` | query |
//! | `GET`/`PUT /api/v1/alertmanager/config` (YAML) | admin |
//!
//! The tenant is always the credential's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{DeliveryStatus, NotificationRow, Scope};

use super::{ApiError, ApiState, authenticate};
use crate::alerting::Alert;
use crate::alerting::notify::matchers::{matches_all, parse_matchers, valid_label_name};
use crate::alerting::notify::payload::go_time;
use crate::alerting::notify::{NotifyError, PostableSilence, now_wall_ms};

/// Most alerts one `POST /api/v2/alerts` may carry.
pub(super) const MAX_POSTED_ALERTS: usize = 10_000;
/// Default and largest `limit` of `GET /api/v1/notifications`.
const DEFAULT_NOTIFICATION_LIMIT: usize = 100;

/// The routes of this module.
pub(super) fn routes(c: super::catalog::Catalog) -> super::catalog::Catalog {
    use super::catalog::Access;
    use axum::http::Method;
    const T: &str = "alerting: notifications (Alertmanager API v2)";
    let (i, q, e, a) = (
        Access::Scope(Scope::Ingest),
        Access::Scope(Scope::Query),
        Access::Scope(Scope::Edit),
        Access::Scope(Scope::Admin),
    );
    c.add(
        Method::GET,
        "/api/v2/alerts",
        q,
        T,
        "alerts, with silenced/inhibited state",
        get_alerts,
    )
    .response::<Vec<super::schemas::GettableAlert>>()
    .add(
        Method::POST,
        "/api/v2/alerts",
        i,
        T,
        "post alerts (as Prometheus does)",
        post_alerts,
    )
    .request::<Vec<PostableAlert>>()
    .add(
        Method::GET,
        "/api/v2/silences",
        q,
        T,
        "silences",
        get_silences,
    )
    .response::<Vec<super::schemas::GettableSilence>>()
    .add(
        Method::POST,
        "/api/v2/silences",
        e,
        T,
        "create or update a silence",
        post_silence,
    )
    .request::<crate::alerting::notify::PostableSilence>()
    .response::<super::schemas::SilenceId>()
    .add(
        Method::GET,
        "/api/v2/silence/{id}",
        q,
        T,
        "one silence",
        get_silence,
    )
    .response::<super::schemas::GettableSilence>()
    .add(
        Method::DELETE,
        "/api/v2/silence/{id}",
        e,
        T,
        "expire a silence",
        delete_silence,
    )
    .add(
        Method::GET,
        "/api/v2/status",
        q,
        T,
        "status, as amtool reads it",
        status,
    )
    .response::<super::schemas::AmStatus>()
    .add(
        Method::GET,
        "/api/v2/receivers",
        q,
        T,
        "receiver names",
        receivers,
    )
    .response::<Vec<super::schemas::ReceiverName>>()
    .add(
        Method::GET,
        "/api/v1/notifications",
        q,
        T,
        "the delivery log",
        notifications,
    )
    .query::<NotificationsQuery>()
    .response::<super::schemas::NotificationList>()
    .add(
        Method::GET,
        "/api/v1/alertmanager/config",
        a,
        T,
        "the tenant's Alertmanager configuration",
        get_config,
    )
    .produces("application/yaml")
    .add(
        Method::PUT,
        "/api/v1/alertmanager/config",
        a,
        T,
        "replace it (YAML body, validated)",
        put_config,
    )
    .request_body("application/yaml")
    .response::<super::schemas::StatusOnly>()
}

pub(super) fn notifier(state: &ApiState) -> Result<&crate::alerting::notify::Notifier, ApiError> {
    state
        .notifier
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the notifier is not running"))
}

pub(super) fn notify_error(e: NotifyError) -> ApiError {
    match e {
        NotifyError::Invalid(m) => ApiError::new(ErrorCode::InvalidArgument, m),
        NotifyError::NotFound(m) => ApiError::new(ErrorCode::NotFound, format!("{m} not found")),
        NotifyError::Conflict(m) => ApiError::new(ErrorCode::AlreadyExists, m),
        NotifyError::Store(e) => {
            tracing::error!(error = %e, "notification store failed");
            ApiError::new(
                ErrorCode::Internal,
                "notification store failed; see the collector log",
            )
        }
        NotifyError::Unavailable => {
            ApiError::new(ErrorCode::Unavailable, "the notifier is shutting down")
        }
    }
}

async fn read_body(
    state: &ApiState,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let max = state.live.get().max_request_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body larger than {max} bytes"),
        )
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

fn parse_ms(what: &str, i: usize, text: &Option<String>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("alerts[{i}].{what} {text:?}: {e}"),
            )
        })?;
    // Go's zero time means "not set", as in Alertmanager.
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some(
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
    ))
}

async fn post_alerts(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Ingest)?;
    let notifier = notifier(&state)?;
    let body = read_body(&state, body).await?;
    let posted: Vec<PostableAlert> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("request body: {e}")))?;
    if posted.len() > MAX_POSTED_ALERTS {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{} alerts in one request; at most {MAX_POSTED_ALERTS}",
                posted.len()
            ),
        ));
    }
    let now = now_wall_ms();
    let resolve_ms = i64::try_from(
        notifier
            .config(&principal.tenant)
            .resolve_timeout
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let mut alerts = Vec::with_capacity(posted.len());
    for (i, p) in posted.into_iter().enumerate() {
        if p.labels.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("alerts[{i}]: at least one label pair required"),
            ));
        }
        for (name, value) in &p.labels {
            if !valid_label_name(name) || name.contains(':') {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("alerts[{i}]: invalid label name {name:?}"),
                ));
            }
            if value.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("alerts[{i}]: label {name:?} has an empty value"),
                ));
            }
        }
        let starts = parse_ms("startsAt", i, &p.starts_at)?;
        let ends = parse_ms("endsAt", i, &p.ends_at)?;
        // Alertmanager's defaults: no start = now (or the end, if given); no end =
        // now + resolve_timeout, renewed by every resend.
        let starts_at_ms = starts.or(ends).unwrap_or(now);
        let ends_at_ms = ends.unwrap_or_else(|| now.saturating_add(resolve_ms));
        if ends_at_ms < starts_at_ms {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("alerts[{i}]: start time must be before end time"),
            ));
        }
        alerts.push(Alert {
            labels: p.labels,
            annotations: p.annotations,
            starts_at_ms,
            ends_at_ms,
            generator_url: p.generator_url.unwrap_or_default(),
        });
    }
    notifier
        .post_alerts(&principal.tenant, alerts)
        .await
        .map_err(notify_error)?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize, Default)]
struct AlertsQuery {
    #[serde(default)]
    filter: Vec<String>,
    active: Option<bool>,
    silenced: Option<bool>,
    inhibited: Option<bool>,
    unprocessed: Option<bool>,
    receiver: Option<String>,
}

fn filters(list: &[String]) -> Result<Vec<crate::alerting::notify::matchers::Matcher>, ApiError> {
    let mut out = Vec::new();
    for f in list {
        out.extend(
            parse_matchers(f)
                .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("filter: {e}")))?,
        );
    }
    Ok(out)
}

/// Parses a query string allowing repeated `filter=` keys.
fn alerts_query(raw: Option<&str>) -> Result<AlertsQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("query: {e}")))?;
    let mut q = AlertsQuery::default();
    let flag = |k: &str, v: &str| -> Result<bool, ApiError> {
        v.parse::<bool>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("{k}: {v:?} is not true or false"),
            )
        })
    };
    for (k, v) in pairs {
        match k.as_str() {
            "filter" => q.filter.push(v),
            "active" => q.active = Some(flag(&k, &v)?),
            "silenced" => q.silenced = Some(flag(&k, &v)?),
            "inhibited" => q.inhibited = Some(flag(&k, &v)?),
            "unprocessed" => q.unprocessed = Some(flag(&k, &v)?),
            "receiver" => q.receiver = Some(v),
            _ => {}
        }
    }
    Ok(q)
}

async fn get_alerts(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let q = alerts_query(uri.query())?;
    let matchers = filters(&q.filter)?;
    let receiver_re = match &q.receiver {
        Some(r) => Some(
            regex::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("receiver: {e}")))?,
        ),
        None => None,
    };
    let states = notifier
        .alerts(&principal.tenant)
        .await
        .map_err(notify_error)?;
    let mut out = Vec::new();
    for s in states {
        if s.resolved || !matches_all(&matchers, &s.alert.labels) {
            continue;
        }
        let silenced = !s.silenced_by.is_empty();
        let inhibited = !s.inhibited_by.is_empty();
        let active = !silenced && !inhibited;
        if (!q.silenced.unwrap_or(true) && silenced)
            || (!q.inhibited.unwrap_or(true) && inhibited)
            || (!q.active.unwrap_or(true) && active)
        {
            continue;
        }
        let _ = q.unprocessed;
        if let Some(re) = &receiver_re
            && !s.receivers.iter().any(|r| re.is_match(r))
        {
            continue;
        }
        out.push(json!({
            "labels": s.alert.labels,
            "annotations": s.alert.annotations,
            "startsAt": go_time(s.alert.starts_at_ms),
            "endsAt": go_time(s.alert.ends_at_ms),
            "updatedAt": go_time(s.updated_at_ms),
            "generatorURL": s.alert.generator_url,
            "fingerprint": s.fingerprint,
            "receivers": s.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
            "status": {
                "state": if active { "active" } else { "suppressed" },
                "silencedBy": s.silenced_by,
                "inhibitedBy": s.inhibited_by,
            },
        }));
    }
    Ok(axum::Json(Value::Array(out)).into_response())
}

async fn get_silences(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let q = alerts_query(uri.query())?;
    let matchers = filters(&q.filter)?;
    let now = now_wall_ms();
    let mut list = notifier.silences(&principal.tenant);
    list.sort_by_key(|s| (s.ends_at_ms <= now, s.starts_at_ms));
    let out: Vec<Value> = list
        .iter()
        .filter(|s| {
            // A filter keeps silences having a matcher equal to each filter matcher,
            // as Alertmanager does.
            matchers.iter().all(|f| s.matchers.iter().any(|m| m == f))
        })
        .map(|s| s.to_json(now))
        .collect();
    Ok(axum::Json(Value::Array(out)).into_response())
}

async fn post_silence(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let notifier = notifier(&state)?;
    let body = read_body(&state, body).await?;
    let p: PostableSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("request body: {e}")))?;
    let id = notifier
        .put_silence(&principal.tenant, p)
        .await
        .map_err(notify_error)?;
    tracing::info!(tenant = %principal.tenant, silence = %id, by = ?principal.key_id, "silence saved");
    Ok(axum::Json(json!({ "silenceID": id })).into_response())
}

async fn get_silence(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let s = notifier
        .silences(&principal.tenant)
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("silence {id:?} not found")))?;
    Ok(axum::Json(s.to_json(now_wall_ms())).into_response())
}

async fn delete_silence(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Edit)?;
    let notifier = notifier(&state)?;
    notifier
        .expire_silence(&principal.tenant, &id)
        .await
        .map_err(notify_error)?;
    tracing::info!(tenant = %principal.tenant, silence = %id, by = ?principal.key_id, "silence expired");
    Ok(StatusCode::OK.into_response())
}

async fn status(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let config = notifier.config(&principal.tenant);
    let started = notifier
        .started_at()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Ok(axum::Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": config.original},
        "uptime": go_time(started),
        "versionInfo": {
            "branch": "", "buildDate": "", "buildUser": "", "goVersion": "",
            "revision": "", "version": concat!("vantage-", env!("CARGO_PKG_VERSION")),
        },
    }))
    .into_response())
}

async fn receivers(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let config = notifier.config(&principal.tenant);
    let list: Vec<Value> = config
        .receivers
        .keys()
        .map(|n| json!({"name": n}))
        .collect();
    Ok(axum::Json(Value::Array(list)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
struct NotificationsQuery {
    receiver: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

fn notification_json(n: &NotificationRow) -> Value {
    let ms = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    json!({
        "id": n.id,
        "groupKey": n.group_key,
        "receiver": n.receiver,
        "integration": n.integration,
        "receiverType": n.receiver_type,
        "status": n.status.as_str(),
        "attempts": n.attempts,
        "lastError": n.last_error,
        "firing": n.firing.len(),
        "resolved": n.resolved.len(),
        "createdAt": go_time(ms(n.created_at)),
        "updatedAt": go_time(ms(n.updated_at)),
    })
}

async fn notifications(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<NotificationsQuery>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let notifier = notifier(&state)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<DeliveryStatus>()
                .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(DEFAULT_NOTIFICATION_LIMIT);
    let rows = notifier
        .notifications(
            &principal.tenant,
            q.receiver.filter(|r| !r.is_empty()),
            status,
            limit,
        )
        .await
        .map_err(notify_error)?;
    Ok(axum::Json(json!({
        "status": "success",
        "data": rows.iter().map(notification_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn get_config(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let notifier = notifier(&state)?;
    let config = notifier.config(&principal.tenant);
    Ok((
        [(header::CONTENT_TYPE, "application/yaml")],
        config.original.clone(),
    )
        .into_response())
}

async fn put_config(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Admin)?;
    let notifier = notifier(&state)?;
    let body = read_body(&state, body).await?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "configuration is not UTF-8"))?;
    notifier
        .set_config(&principal.tenant, text)
        .await
        .map_err(notify_error)?;
    tracing::info!(tenant = %principal.tenant, by = ?principal.key_id, "alertmanager configuration replaced");
    Ok(axum::Json(json!({"status": "success"})).into_response())
}
