//! Shapes of the JSON bodies that handlers build by hand (with `json!`, or by writing
//! Prometheus's envelope around already-encoded data) rather than by serializing a
//! type: each is described here by a type deriving `JsonSchema`, field for field, so the
//! OpenAPI document lists their fields. The request types, and the responses handlers do
//! serialize from a type, are documented from those types themselves.
//!
//! These types are never built: they exist for their schemas (hence `dead_code`).
//! Times are RFC 3339 strings; `Option` fields are `null` when unset.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde_json::Value;

// ------------------------------------------------------------------ keys and tenants

/// An API key (its secret is never shown again).
#[derive(JsonSchema)]
pub(super) struct ApiKeyJson {
    key_id: String,
    tenant: String,
    name: String,
    /// `ingest`, `query`, `edit`, `admin`.
    scopes: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

/// A new API key: the key and, once, its secret.
#[derive(JsonSchema)]
pub(super) struct NewApiKeyJson {
    #[serde(flatten)]
    key: ApiKeyJson,
    /// The credential to send as `Authorization: Bearer`; shown only now.
    #[serde(rename = "key")]
    secret: String,
}

/// `GET /api/v1/keys`.
#[derive(JsonSchema)]
pub(super) struct KeyList {
    keys: Vec<ApiKeyJson>,
}

/// A tenant.
#[derive(JsonSchema)]
pub(super) struct TenantJson {
    name: String,
    created_at: String,
}

/// `GET /api/v1/tenants`.
#[derive(JsonSchema)]
pub(super) struct TenantList {
    tenants: Vec<TenantJson>,
}

// ------------------------------------------------------------------ people

/// A role in a tenant.
#[derive(JsonSchema)]
pub(super) struct RoleJson {
    tenant: String,
    /// `admin`, `editor` or `viewer`.
    role: String,
}

/// A user (never their password or TOTP secret).
#[derive(JsonSchema)]
pub(super) struct UserJson {
    user_id: String,
    username: String,
    disabled: bool,
    totp_enabled: bool,
    created_at: String,
    password_changed_at: String,
    roles: Vec<RoleJson>,
}

/// `GET /api/v1/users`.
#[derive(JsonSchema)]
pub(super) struct UserList {
    users: Vec<UserJson>,
}

/// Who a token belongs to.
#[derive(JsonSchema)]
pub(super) struct TokenUser {
    user_id: String,
    username: String,
}

/// Tokens of a login or a refresh (`Cache-Control: no-store`).
#[derive(JsonSchema)]
pub(super) struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds the access token lives.
    expires_in: u64,
    refresh_token: String,
    session_id: String,
    tenant: String,
    role: String,
    user: TokenUser,
}

/// The person behind a login token.
#[derive(JsonSchema)]
pub(super) struct MeUser {
    user_id: String,
    username: String,
    role: String,
    session_id: String,
}

/// `GET /api/v1/auth/me`.
#[derive(JsonSchema)]
pub(super) struct Me {
    tenant: String,
    scopes: Vec<String>,
    /// The API key's id; null for a login.
    key_id: Option<String>,
    /// Present for a login's access token.
    user: Option<MeUser>,
}

/// A login session.
#[derive(JsonSchema)]
pub(super) struct SessionJson {
    session_id: String,
    tenant: String,
    created_at: String,
    refreshed_at: String,
    expires_at: String,
    revoked_at: Option<String>,
    remote_addr: Option<String>,
    user_agent: Option<String>,
    /// Whether the request came with this session's token.
    current: bool,
}

/// `GET /api/v1/auth/sessions`.
#[derive(JsonSchema)]
pub(super) struct SessionList {
    sessions: Vec<SessionJson>,
}

/// TOTP enrolment: the shared secret (base32) and the URI for an authenticator app.
#[derive(JsonSchema)]
pub(super) struct TotpEnrollment {
    secret: String,
    otpauth_uri: String,
}

/// Recovery codes, shown once.
#[derive(JsonSchema)]
pub(super) struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

/// One audit record.
#[derive(JsonSchema)]
pub(super) struct AuditRecordJson {
    id: i64,
    time: String,
    tenant: Option<String>,
    /// `user:<name>`, `key:<id>`, `enrollment:<id>` or `anonymous`.
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    remote_addr: Option<String>,
    detail: Option<String>,
}

/// `GET /api/v1/audit`.
#[derive(JsonSchema)]
pub(super) struct AuditList {
    records: Vec<AuditRecordJson>,
}

// ------------------------------------------------------------------ agents

/// An enrollment token (its secret is never shown again).
#[derive(JsonSchema)]
pub(super) struct EnrollmentTokenJson {
    token_id: String,
    tenant: String,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    max_uses: Option<u32>,
    uses: u32,
    revoked_at: Option<String>,
}

/// A new enrollment token and, once, its secret.
#[derive(JsonSchema)]
pub(super) struct NewEnrollmentTokenJson {
    #[serde(flatten)]
    token: EnrollmentTokenJson,
    /// What agents enroll with; shown only now.
    #[serde(rename = "token")]
    secret: String,
}

/// `GET /api/v1/enrollment-tokens`.
#[derive(JsonSchema)]
pub(super) struct EnrollmentTokenList {
    tokens: Vec<EnrollmentTokenJson>,
}

/// An agent.
#[derive(JsonSchema)]
pub(super) struct AgentJson {
    agent_id: String,
    tenant: String,
    hostname: String,
    version: String,
    os: String,
    key_id: String,
    enrolled_with: Option<String>,
    enrolled_at: String,
    last_seen_at: Option<String>,
    seconds_since_last_seen: Option<u64>,
    /// `active` or `revoked`.
    status: String,
    revoked_at: Option<String>,
}

/// An agent just enrolled, with its own ingest key (shown once).
#[derive(JsonSchema)]
pub(super) struct EnrolledAgentJson {
    #[serde(flatten)]
    agent: AgentJson,
    api_key: String,
}

/// `GET /api/v1/agents`.
#[derive(JsonSchema)]
pub(super) struct AgentList {
    agents: Vec<AgentJson>,
}

// ------------------------------------------------------------------ logs and traces

/// A histogram bucket of a log search.
#[derive(JsonSchema)]
pub(super) struct HistogramBucket {
    start: String,
    /// Nanoseconds, as a decimal string.
    start_unix_nano: String,
    count: u64,
}

/// A log search's result.
#[derive(JsonSchema)]
pub(super) struct LogSearchResult {
    /// Matching records in the range (the hits are the first `limit`).
    total: u64,
    took_ms: f64,
    /// The records: time, body, severity, attributes, resource, trace ids.
    hits: Vec<BTreeMap<String, Value>>,
    /// With `histogram=<interval>`: counts per interval.
    histogram: Option<Vec<HistogramBucket>>,
}

/// A trace with its spans in tree order.
#[derive(JsonSchema)]
pub(super) struct TraceJson {
    trace_id: String,
    total_spans: u64,
    error_spans: u64,
    truncated: bool,
    max_spans: u64,
    /// Each span: ids, depth, name, kind, service_name, times, status, attributes,
    /// resource, scope, events, links, dropped counts.
    spans: Vec<BTreeMap<String, Value>>,
    /// With `withLogs=true`: the trace's log records.
    logs: Option<Vec<BTreeMap<String, Value>>>,
    logs_total: Option<u64>,
}

/// A trace found by a search.
#[derive(JsonSchema)]
pub(super) struct TraceSummaryJson {
    trace_id: String,
    root_service: String,
    root_name: String,
    start: String,
    start_time_unix_nano: String,
    duration_ns: String,
    duration_ms: f64,
    span_count: u64,
    error_count: u64,
    services: Vec<String>,
}

/// `GET /api/v1/traces`.
#[derive(JsonSchema)]
pub(super) struct TraceSearchResult {
    traces: Vec<TraceSummaryJson>,
    limit: u64,
}

/// A service-to-service edge.
#[derive(JsonSchema)]
pub(super) struct DependencyEdge {
    parent: String,
    child: String,
    call_count: u64,
    error_count: u64,
}

/// `GET /api/v1/traces/dependencies`.
#[derive(JsonSchema)]
pub(super) struct Dependencies {
    edges: Vec<DependencyEdge>,
    spans_examined: u64,
    truncated: bool,
}

/// Jaeger's query API envelope (`data` is what the endpoint lists: service names,
/// operations, traces, dependency links).
#[derive(JsonSchema)]
pub(super) struct JaegerResponse {
    data: Value,
    total: u64,
    limit: u64,
    offset: u64,
    errors: Option<Vec<Value>>,
}

// ------------------------------------------------------------------ Prometheus API

/// Prometheus's success envelope (`data` is as in Prometheus's HTTP API).
#[derive(JsonSchema)]
pub(super) struct PromResponse<T> {
    /// `success`.
    status: String,
    data: T,
    warnings: Option<Vec<String>>,
}

/// A PromQL query result: `resultType` and `result` as Prometheus gives them.
#[derive(JsonSchema)]
pub(super) struct QueryData {
    /// `vector`, `matrix`, `scalar` or `string`.
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// Instant query parameters (query string or form body).
#[derive(JsonSchema)]
pub(super) struct InstantQuery {
    /// PromQL.
    query: String,
    /// Evaluation time: RFC 3339 or Unix seconds; default now.
    time: Option<String>,
    /// Longest the query may run, e.g. `30s`.
    timeout: Option<String>,
}

/// Range query parameters (query string or form body).
#[derive(JsonSchema)]
pub(super) struct RangeQuery {
    /// PromQL.
    query: String,
    /// RFC 3339 or Unix seconds.
    start: String,
    /// RFC 3339 or Unix seconds.
    end: String,
    /// Step, a duration (`15s`) or seconds.
    step: String,
    timeout: Option<String>,
}

/// `format_query` parameters.
#[derive(JsonSchema)]
pub(super) struct FormatQuery {
    /// PromQL.
    query: String,
}

/// Series and label selection parameters (query string or form body).
#[derive(JsonSchema)]
pub(super) struct SeriesQuery {
    /// Series selectors; repeat the key for several.
    #[serde(rename = "match[]")]
    matches: Option<Vec<String>>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u64>,
}

/// `query_exemplars` parameters.
#[derive(JsonSchema)]
pub(super) struct ExemplarQuery {
    query: String,
    start: Option<String>,
    end: Option<String>,
}

/// `metadata` parameters.
#[derive(JsonSchema)]
pub(super) struct MetadataQuery {
    metric: Option<String>,
    limit: Option<u64>,
}

// ------------------------------------------------------------------ Alertmanager API

/// A receiver's name.
#[derive(JsonSchema)]
pub(super) struct ReceiverName {
    name: String,
}

/// An alert's pipeline state.
#[derive(JsonSchema)]
pub(super) struct AlertStatus {
    /// `active` or `suppressed`.
    state: String,
    #[serde(rename = "silencedBy")]
    silenced_by: Vec<String>,
    #[serde(rename = "inhibitedBy")]
    inhibited_by: Vec<String>,
}

/// Alertmanager's `gettableAlert`.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GettableAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    updated_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
    receivers: Vec<ReceiverName>,
    status: AlertStatus,
}

/// A silence's state.
#[derive(JsonSchema)]
pub(super) struct SilenceStatus {
    /// `pending`, `active` or `expired`.
    state: String,
}

/// Alertmanager's `gettableSilence`.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GettableSilence {
    id: String,
    status: SilenceStatus,
    updated_at: String,
    matchers: Vec<crate::alerting::notify::silence::ApiMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

/// The id of a saved silence.
#[derive(JsonSchema)]
pub(super) struct SilenceId {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

/// The configuration as loaded.
#[derive(JsonSchema)]
pub(super) struct AmConfigText {
    /// The YAML text.
    original: String,
}

/// Alertmanager's `alertmanagerStatus` (no cluster: `disabled`).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AmStatus {
    cluster: Value,
    config: AmConfigText,
    uptime: String,
    version_info: BTreeMap<String, String>,
}

/// One entry of the delivery log.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct NotificationJson {
    id: i64,
    group_key: String,
    receiver: String,
    /// `<type>/<index>` of the receiver, or `subscription/<id>`.
    integration: String,
    receiver_type: String,
    /// `pending`, `delivered` or `failed`.
    status: String,
    attempts: u32,
    last_error: Option<String>,
    /// How many alerts fired in it.
    firing: u64,
    /// How many had resolved.
    resolved: u64,
    created_at: String,
    updated_at: String,
}

/// `GET /api/v1/notifications`.
#[derive(JsonSchema)]
pub(super) struct NotificationList {
    /// `success`.
    status: String,
    data: Vec<NotificationJson>,
}

/// `{"status": "success"}`.
#[derive(JsonSchema)]
pub(super) struct StatusOnly {
    status: String,
}

/// Prometheus's envelope with no data (rule changes answer 202 with it).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Accepted {
    status: String,
    data: Option<Value>,
    error_type: String,
    error: String,
}
