//! People's own subscriptions to the tenant's notification receivers:
//! `/api/v1/alerts/subscriptions`.
//!
//! A logged-in person (an access token; the `query` scope is enough, it concerns only
//! themselves) subscribes their e-mail address to a receiver of their tenant, optionally
//! narrowed by matchers, and mutes, unmutes, lists and deletes their subscriptions.
//! Admins list and manage every subscription of their tenant. Another person's or
//! another tenant's subscription reads as missing.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vantage_proto::ErrorCode;
use vantage_storage::meta::{Mute, Scope};

use super::admin::parse_body;
use super::alertmanager::{notifier, notify_error};
use super::catalog::{Access, Catalog};
use super::timeparse::format_time;
use super::{ApiError, ApiState, authenticate};
use crate::alerting::notify::subscribe::{NewSubscription, Subscription};
use crate::auth::{Principal, UserIdentity};

/// The routes of this module.
pub(super) fn routes(c: Catalog) -> Catalog {
    use axum::http::Method;
    const T: &str = "alerting: subscriptions";
    let q = Access::Scope(Scope::Query);
    c.add(
        Method::GET,
        "/api/v1/alerts/subscriptions",
        q,
        T,
        "the caller's subscriptions (admins: ?all=true for the tenant's)",
        list,
    )
    .response::<SubscriptionList>()
    .add(
        Method::POST,
        "/api/v1/alerts/subscriptions",
        q,
        T,
        "subscribe the caller's e-mail to a receiver (access token of a person)",
        create,
    )
    .request::<CreateSubscription>()
    .response_status::<SubscriptionJson>(StatusCode::CREATED)
    .add(
        Method::DELETE,
        "/api/v1/alerts/subscriptions/{subscription_id}",
        q,
        T,
        "delete a subscription (its owner or an admin)",
        delete,
    )
    .response::<Deleted>()
    .add(
        Method::POST,
        "/api/v1/alerts/subscriptions/{subscription_id}/mute",
        q,
        T,
        "mute a subscription until a time, or indefinitely",
        mute,
    )
    .request::<MuteRequest>()
    .response::<SubscriptionJson>()
    .add(
        Method::POST,
        "/api/v1/alerts/subscriptions/{subscription_id}/unmute",
        q,
        T,
        "unmute a subscription",
        unmute,
    )
    .request::<Empty>()
    .response::<SubscriptionJson>()
}

/// Body of `POST /api/v1/alerts/subscriptions`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateSubscription {
    /// A receiver's name in the tenant's Alertmanager configuration.
    receiver: String,
    /// Extra matchers in Alertmanager's syntax (`severity="page"`); an alert must
    /// match all of them to be e-mailed. None: every alert the receiver gets.
    #[serde(default)]
    matchers: Vec<String>,
    /// Where to send the e-mails.
    email: String,
}

/// Body of `POST .../mute`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MuteRequest {
    /// RFC 3339 end of the mute; absent: until unmuted.
    #[serde(default)]
    until: Option<String>,
}

/// An empty JSON object (or no body at all).
#[derive(Deserialize, Serialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

/// One subscription.
#[derive(Serialize, JsonSchema)]
pub(super) struct SubscriptionJson {
    /// Its id.
    id: String,
    /// The receiver it follows.
    receiver: String,
    /// Extra matchers.
    matchers: Vec<String>,
    /// Where its e-mails go.
    email: String,
    /// The subscriber's user id.
    user_id: String,
    /// The subscriber's login name.
    username: String,
    /// Whether it is muted now.
    muted: bool,
    /// The end of the mute (RFC 3339); null while not muted or muted indefinitely.
    muted_until: Option<String>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
}

/// `GET /api/v1/alerts/subscriptions`.
#[derive(Serialize, JsonSchema)]
pub(super) struct SubscriptionList {
    /// The subscriptions, oldest first.
    subscriptions: Vec<SubscriptionJson>,
}

/// The answer of a deletion.
#[derive(Serialize, JsonSchema)]
pub(super) struct Deleted {
    /// Always `success`.
    status: String,
}

/// `?all=`.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct ListParams {
    #[serde(default)]
    all: Option<bool>,
}

fn rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    format_time(ns)
}

fn to_json(s: &Subscription) -> SubscriptionJson {
    let r = &s.row;
    SubscriptionJson {
        id: r.id.clone(),
        receiver: r.receiver.clone(),
        matchers: r.matchers.clone(),
        email: r.email.clone(),
        user_id: r.user_id.clone(),
        username: r.username.clone(),
        muted: r.mute.active(SystemTime::now()),
        muted_until: match r.mute {
            Mute::Until(t) => Some(rfc3339(t)),
            Mute::Off | Mute::Indefinitely => None,
        },
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

fn person(principal: &Principal) -> Result<&UserIdentity, ApiError> {
    principal.user.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PermissionDenied,
            "subscriptions belong to people: use the access token of a login (vantage login), not an API key",
        )
    })
}

/// The subscription `id` of the caller's tenant, if the caller owns it or is an admin.
fn reachable(
    state: &ApiState,
    principal: &Principal,
    id: &str,
) -> Result<Arc<Subscription>, ApiError> {
    let me = principal.user.as_ref().map(|u| u.user_id.as_str());
    notifier(state)?
        .subscriptions(&principal.tenant)
        .into_iter()
        .find(|s| s.row.id == id)
        .filter(|s| principal.has(Scope::Admin) || me == Some(s.row.user_id.as_str()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("subscription {id:?} not found"),
            )
        })
}

async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let all = params.all.unwrap_or(false);
    if all && !principal.has(Scope::Admin) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only admins list every subscription of the tenant",
        ));
    }
    // An admin key has no person behind it: it sees the tenant's subscriptions.
    let mine = match (&principal.user, all) {
        (_, true) => None,
        (Some(u), false) => Some(u.user_id.clone()),
        (None, false) if principal.has(Scope::Admin) => None,
        (None, false) => {
            person(&principal)?;
            None
        }
    };
    let list = notifier(&state)?
        .subscriptions(&principal.tenant)
        .iter()
        .filter(|s| mine.as_ref().is_none_or(|m| *m == s.row.user_id))
        .map(|s| to_json(s))
        .collect();
    Ok(Json(SubscriptionList {
        subscriptions: list,
    })
    .into_response())
}

async fn create(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let me = person(&principal)?;
    let new: CreateSubscription = parse_body(&body)?;
    let sub = notifier(&state)?
        .subscribe(
            &principal.tenant,
            &me.user_id,
            &me.username,
            NewSubscription {
                receiver: new.receiver,
                matchers: new.matchers,
                email: new.email,
            },
        )
        .await
        .map_err(notify_error)?;
    Ok((StatusCode::CREATED, Json(to_json(&sub))).into_response())
}

async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    reachable(&state, &principal, &id)?;
    notifier(&state)?
        .unsubscribe(&principal.tenant, &id)
        .await
        .map_err(notify_error)?;
    Ok(Json(Deleted {
        status: "success".into(),
    })
    .into_response())
}

fn parse_until(text: &str) -> Result<SystemTime, ApiError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("until {text:?}: not an RFC 3339 time: {e}"),
            )
        })?;
    let nanos = u64::try_from(t.unix_timestamp_nanos())
        .ok()
        .filter(|n| *n < (i64::MAX as u64))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("until {text:?}: out of range"),
            )
        })?;
    let until = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
    if until <= SystemTime::now() {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("until {text:?} is in the past"),
        ));
    }
    Ok(until)
}

async fn mute(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    let req: MuteRequest = if body.is_empty() {
        MuteRequest::default()
    } else {
        parse_body(&body)?
    };
    let mute = match req.until.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Mute::Until(parse_until(u)?),
        None => Mute::Indefinitely,
    };
    set_mute(&state, &principal, &id, mute).await
}

async fn unmute(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, Scope::Query)?;
    if !body.is_empty() {
        let _: Empty = parse_body(&body)?;
    }
    set_mute(&state, &principal, &id, Mute::Off).await
}

async fn set_mute(
    state: &ApiState,
    principal: &Principal,
    id: &str,
    mute: Mute,
) -> Result<Response, ApiError> {
    reachable(state, principal, id)?;
    let sub = notifier(state)?
        .set_mute(&principal.tenant, id, mute)
        .await
        .map_err(notify_error)?;
    tracing::info!(tenant = %principal.tenant, subscription = %id, muted = sub.row.mute != Mute::Off, by = %principal.actor(), "subscription mute changed");
    Ok(Json(to_json(&sub)).into_response())
}
