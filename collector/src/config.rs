//! Collector configuration: a YAML file, then `VANTAGE_*` environment variables, then
//! command-line flags, each overriding the one before, validated into [`Config`].
//!
//! Environment variables map to keys by path: `VANTAGE_DATA_DIR` sets `data_dir`,
//! `VANTAGE_LISTEN__OTLP_GRPC` sets `listen.otlp_grpc` (a double underscore steps into a
//! section). The process environment is read by `main` and passed in as a map, so tests
//! never touch it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
pub use vantage_proto::config::parse_duration;
use vantage_proto::config::{env_scalar, set_path};

/// Where data lives by default: beside the working directory, so a first run needs no setup.
pub const DEFAULT_DATA_DIR: &str = "vantage-data";
/// OTLP/gRPC's registered port.
pub const DEFAULT_OTLP_GRPC: &str = "0.0.0.0:4317";
/// OTLP/HTTP's registered port.
pub const DEFAULT_OTLP_HTTP: &str = "0.0.0.0:4318";
/// The query API.
pub const DEFAULT_API: &str = "0.0.0.0:7070";
/// OTLP exporters send batches well under this; the OTel Collector's default is similar.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Requests being made durable at once, in bytes: the memory ceiling of the ingest path.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 128 * 1024 * 1024;
/// More attributes than this on one record is a bug upstream, not data (OTel SDKs cap at 128).
pub const DEFAULT_MAX_ATTRIBUTES: usize = 1024;
/// How far ahead of our clock a record may be stamped; Loki's grace period is the same.
pub const DEFAULT_MAX_FUTURE_SKEW: &str = "10m";
/// What clients are told to wait when ingest is behind.
pub const DEFAULT_RETRY_AFTER: &str = "1s";
/// Commit cadence of the log index: the freshness promise is 2 s, commits every 1 s.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1000;
/// Without a search for this long the log index is search-idle (Elasticsearch's
/// default for `index.search.idle.after`): commits wait for a search or the idle interval.
pub const DEFAULT_SEARCH_IDLE_AFTER_MS: u64 = 30_000;
/// Commit cadence of a search-idle log index: bounds the WAL kept and replayed after a
/// crash (10 s of records) while sparing 9 of 10 commits and their merges.
pub const DEFAULT_IDLE_COMMIT_INTERVAL_MS: u64 = 10_000;
/// Logs are kept a week by default.
pub const DEFAULT_RETENTION_LOGS: &str = "7d";
/// WAL segment size: big enough to make rotation rare, small enough to free disk promptly.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Metrics are kept 15 days by default, as Prometheus keeps them.
pub const DEFAULT_RETENTION_METRICS: &str = "15d";
/// Series one tenant may have in the head: generous for a team, but a label explosion
/// (a request id as a label) stops here instead of eating the machine.
pub const DEFAULT_MAX_SERIES_PER_TENANT: usize = 2_000_000;
/// Samples older than a series' newest by up to this much are still accepted: enough for
/// an agent's retries and batching, small enough to keep the head's out-of-order buffer small.
pub const DEFAULT_OUT_OF_ORDER_WINDOW: &str = "10m";
/// Prometheus's default `--query.timeout`.
pub const DEFAULT_QUERY_TIMEOUT: &str = "2m";
/// Loki's default `querier.query_timeout`: a log search that takes longer asks too much
/// (a week of `*`); narrowing it is the answer, not holding a core for minutes.
pub const DEFAULT_LOG_SEARCH_TIMEOUT: &str = "1m";
/// Log searches run at once (Loki's `querier.max_concurrent` default). A search is
/// one thread reading the index; more at once would take the cores indexing needs.
pub const DEFAULT_MAX_CONCURRENT_SEARCHES: usize = 4;
/// Live tails per tenant (Loki's `max_concurrent_tail_requests` is 10).
pub const DEFAULT_MAX_LIVE_TAILS: usize = 10;
/// Queries evaluated at once; more wait. Evaluation is CPU-bound, so a few per core.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 8;
/// Access tokens of people: the usual OAuth lifetime.
pub const DEFAULT_ACCESS_TOKEN_TTL: &str = "15m";
/// A login session lasts this long past its last refresh (Grafana's default inactive
/// lifetime is 7 days).
pub const DEFAULT_SESSION_TTL: &str = "7d";
/// And never longer than this after the login itself (Grafana's default is 30 days).
pub const DEFAULT_SESSION_MAX_AGE: &str = "30d";
/// Traces are kept a week by default, as Jaeger and Tempo deployments commonly do.
pub const DEFAULT_RETENTION_TRACES: &str = "7d";
/// Prometheus's default `global.evaluation_interval`, used by rule groups without one.
pub const DEFAULT_EVALUATION_INTERVAL: &str = "1m";
/// Rules query `now - query_offset`: data an agent sends late (batching, retries, a
/// short disk-queue catch-up) is in by then, so it neither resolves nor delays alerts.
pub const DEFAULT_QUERY_OFFSET: &str = "30s";

/// Top-level keys an environment variable may set; other `VANTAGE_*` variables (the CLI's
/// `VANTAGE_URL`, say) are not the collector's and are ignored.
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "log_format",
    "listen",
    "ingest",
    "wal",
    "logs",
    "retention",
    "auth",
    "limits",
    "metrics",
    "api",
    "alerting",
    "tls",
    "secrets",
    "log_level",
];

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    log_format: Option<String>,
    listen: ListenFile,
    ingest: IngestFile,
    wal: WalFile,
    logs: LogsFile,
    retention: RetentionFile,
    auth: AuthFile,
    limits: LimitsFile,
    metrics: MetricsFile,
    api: ApiFile,
    alerting: AlertingFile,
    tls: TlsFile,
    secrets: SecretsFile,
    log_level: Option<String>,
}

/// `secrets:` — where the key that encrypts `${secret:NAME}` values comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SecretsFile {
    key_file: Option<PathBuf>,
    /// Base64 of 32 bytes; meant for `VANTAGE_SECRETS__KEY`, not for the file.
    key: Option<String>,
    /// A YAML list, or one comma-separated string (how an environment variable says it).
    previous_key_files: Option<Value>,
    without_tls: Option<crate::secrets::WithoutTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AlertingFile {
    rules_dir: Option<PathBuf>,
    alertmanager_config: Option<PathBuf>,
    external_url: Option<String>,
    evaluation_interval: Option<String>,
    query_offset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApiFile {
    /// A YAML list, or one comma-separated string (how an environment variable says it).
    cors_allowed_origins: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsFile {
    max_series_per_tenant: Option<usize>,
    out_of_order_window: Option<String>,
    query_timeout: Option<String>,
    max_samples_per_query: Option<usize>,
    max_concurrent_queries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsFile {
    ingest_bytes_per_second: Option<u64>,
    ingest_bytes_per_second_per_key: Option<u64>,
    query_requests_per_second: Option<u64>,
    query_requests_per_second_per_key: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuthFile {
    enabled: Option<bool>,
    protect_metrics: Option<bool>,
    access_token_ttl: Option<String>,
    session_ttl: Option<String>,
    session_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ListenFile {
    otlp_grpc: Option<String>,
    otlp_http: Option<String>,
    api: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IngestFile {
    max_request_bytes: Option<usize>,
    max_inflight_bytes: Option<usize>,
    max_attributes_per_record: Option<usize>,
    max_future_skew: Option<String>,
    retry_after: Option<String>,
    /// Batch ids remembered per tenant for replay suppression.
    dedup_max_ids: Option<usize>,
    /// How long a batch id is remembered.
    dedup_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WalFile {
    segment_max_bytes: Option<u64>,
    fsync: Option<bool>,
}

/// Two indexing threads where there are two CPUs: one Tantivy thread tops out near
/// 100 k records/s, and on the 2-core bench machine two take 20 % more (10 M records,
/// 122 k against 102 k records/s) for 4 % more CPU per record at saturation and ~14 %
/// more below it (50 k records/s: more, smaller segments to merge). Capped at two: more
/// were not measured (the bench machine has two cores), and each splits every second's
/// segment further.
fn default_indexing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogsFile {
    commit_interval_ms: Option<u64>,
    search_idle_after_ms: Option<u64>,
    idle_commit_interval_ms: Option<u64>,
    writer_heap_bytes: Option<usize>,
    indexing_threads: Option<usize>,
    search_timeout: Option<String>,
    max_concurrent_searches: Option<usize>,
    max_live_tails: Option<usize>,
    max_hits_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetentionFile {
    logs: Option<String>,
    metrics: Option<String>,
    traces: Option<String>,
}

/// How the collector writes its own log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers (and the tests).
    Json,
}

/// The validated configuration the collector runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Root of all on-disk state.
    pub data_dir: PathBuf,
    /// Own log format.
    pub log_format: LogFormat,
    /// OTLP/gRPC listen address.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http: SocketAddr,
    /// Query API listen address.
    pub api: SocketAddr,
    /// Largest request body accepted (compressed and decompressed).
    pub max_request_bytes: usize,
    /// Memory budget for requests waiting for their fsync.
    pub max_inflight_bytes: usize,
    /// Attributes allowed on one record.
    pub max_attributes_per_record: usize,
    /// How far in the future a record's time may be.
    pub max_future_skew: Duration,
    /// Delay suggested to clients that are throttled.
    pub retry_after: Duration,
    /// Batch ids remembered per tenant (`ingest.dedup_max_ids`).
    pub dedup_max_ids: usize,
    /// How long a batch id is remembered (`ingest.dedup_max_age`).
    pub dedup_max_age: Duration,
    /// WAL segment size.
    pub wal_segment_max_bytes: u64,
    /// Whether the WAL fsyncs (off only for benchmarks of other parts).
    pub wal_fsync: bool,
    /// Log index commit cadence.
    pub commit_interval: Duration,
    /// Without a search for this long, log index commits are skipped until a search
    /// asks for one or `idle_commit_interval` passes; zero: never idle.
    pub search_idle_after: Duration,
    /// Log index commit cadence while no one searches.
    pub idle_commit_interval: Duration,
    /// Tantivy writer heap per open partition (default 96 MiB per indexing thread).
    pub writer_heap_bytes: usize,
    /// Tantivy indexing threads (default two, one on a one-CPU machine).
    pub indexing_threads: usize,
    /// Longest a log search may take, waiting for a slot included (a request's
    /// `timeout` can only shorten it).
    pub log_search_timeout: Duration,
    /// Log searches run at once; more wait their turn.
    pub max_concurrent_searches: usize,
    /// Live tails one tenant may hold open; more are refused with 429.
    pub max_live_tails: usize,
    /// Most bytes of records one search's hits (or one tail poll's) may hold.
    pub max_hits_bytes: usize,
    /// How long logs are kept.
    pub retention_logs: Duration,
    /// Whether requests must carry a credential (off only with `--insecure-no-auth`).
    pub auth_enabled: bool,
    /// Whether `/metrics` needs a key with the query scope (open by default, as
    /// Prometheus exporters are).
    pub protect_metrics: bool,
    /// Rate limits per tenant and per key (0 = unlimited).
    pub rates: crate::ratelimit::Rates,
    /// Lifetimes of people's access tokens and sessions.
    pub sessions: SessionConfig,
    /// How long metric samples are kept.
    pub retention_metrics: Duration,
    /// Series limit per tenant.
    pub max_series_per_tenant: usize,
    /// How far behind a series' newest sample a sample may arrive.
    pub out_of_order_window: Duration,
    /// Longest a PromQL query may run (a request's `timeout` can only shorten it).
    pub query_timeout: Duration,
    /// Samples one PromQL query may load (`None`: the engine's default).
    pub max_samples_per_query: Option<usize>,
    /// PromQL queries evaluated at once.
    pub max_concurrent_queries: usize,
    /// Browser origins allowed to call the API cross-origin (CORS); empty = none.
    pub cors_allowed_origins: Vec<String>,
    /// How long spans are kept.
    pub retention_traces: Duration,
    /// Alert and recording rules, notification routing.
    pub alerting: AlertingConfig,
    /// TLS on every listener, when configured.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The key of the secrets store.
    pub secrets: crate::secrets::SecretsConfig,
    /// Which agents may be sent expanded secrets over a connection without TLS.
    pub secrets_without_tls: crate::secrets::WithoutTls,
    /// The collector's own log filter (`info`, `vantage_collector=debug,info`, ...);
    /// `None`: `VANTAGE_LOG`, else `info`. Changes on reload.
    pub log_level: Option<String>,
}

/// How long people stay logged in.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// A session ends this long after its last refresh.
    pub session_ttl: Duration,
    /// A session ends this long after login, refreshed or not.
    pub session_max_age: Duration,
}

/// Where rules and notification routing come from.
#[derive(Clone, Debug)]
pub struct AlertingConfig {
    /// Prometheus rule files (`*.yml`, `*.yaml`) for tenant `default`; a subdirectory
    /// named after a tenant holds that tenant's files. Reloaded on change.
    pub rules_dir: Option<PathBuf>,
    /// An Alertmanager configuration file (`alertmanager.yml`) for tenant `default`;
    /// other tenants set theirs through the API.
    pub alertmanager_config: Option<PathBuf>,
    /// The URL people reach this collector at, for links in notifications
    /// (Prometheus's `--web.external-url`); `None` = derived from the API address.
    pub external_url: Option<String>,
    /// Interval of rule groups that do not set their own.
    pub evaluation_interval: Duration,
    /// Rules evaluate at `now - query_offset`, and a firing alert whose series is gone
    /// keeps firing at least this long, so late data causes no flaps.
    pub query_offset: Duration,
}

/// Values given on the command line; `None` leaves the file/environment value.
#[derive(Clone, Debug, Default)]
pub struct FlagOverrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--otlp-grpc`
    pub otlp_grpc: Option<String>,
    /// `--otlp-http`
    pub otlp_http: Option<String>,
    /// `--api`
    pub api: Option<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--insecure-no-auth`
    pub insecure_no_auth: bool,
    /// `--rules-dir`
    pub rules_dir: Option<PathBuf>,
    /// `--alertmanager-config`
    pub alertmanager_config: Option<PathBuf>,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Builds the configuration from an optional file, the `VANTAGE_*` variables and flags.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(vec![format!("cannot read {}: {e}", path.display())])
                })?;
                // Deserialize the text itself first: its errors carry line and column.
                serde_yaml_ng::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
                match serde_yaml_ng::from_str::<Value>(&text) {
                    Ok(Value::Null) => Value::Mapping(Mapping::new()),
                    Ok(v) => v,
                    Err(e) => return Err(ConfigError(vec![format!("{}: {e}", path.display())])),
                }
            }
            None => Value::Mapping(Mapping::new()),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("VANTAGE_") else {
                continue;
            };
            let path: Vec<String> = rest
                .to_ascii_lowercase()
                .split("__")
                .map(str::to_string)
                .collect();
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
                continue;
            }
            set_path(&mut root, &path, env_scalar(value));
        }
        let flag = |root: &mut Value, path: &[&str], v: &Option<String>| {
            if let Some(v) = v {
                let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                set_path(root, &path, Value::String(v.clone()));
            }
        };
        flag(
            &mut root,
            &["data_dir"],
            &flags.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag(&mut root, &["listen", "otlp_grpc"], &flags.otlp_grpc);
        flag(&mut root, &["listen", "otlp_http"], &flags.otlp_http);
        flag(&mut root, &["listen", "api"], &flags.api);
        flag(&mut root, &["log_format"], &flags.log_format);
        flag(
            &mut root,
            &["alerting", "rules_dir"],
            &flags.rules_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag(
            &mut root,
            &["alerting", "alertmanager_config"],
            &flags
                .alertmanager_config
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        if flags.insecure_no_auth {
            let path = vec!["auth".to_string(), "enabled".to_string()];
            set_path(&mut root, &path, Value::Bool(false));
        }
        let parsed: FileConfig = serde_yaml_ng::from_value(root)
            .map_err(|e| ConfigError(vec![format!("after VANTAGE_* variables and flags: {e}")]))?;
        validate(parsed)
    }
}

fn validate(f: FileConfig) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let mut addr = |key: &str, value: Option<String>, default: &str| -> SocketAddr {
        let text = value.unwrap_or_else(|| default.to_string());
        text.parse().unwrap_or_else(|e| {
            errors.push(format!(
                "{key}: {text:?} is not a socket address (host:port): {e}"
            ));
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    };
    let otlp_grpc = addr("listen.otlp_grpc", f.listen.otlp_grpc, DEFAULT_OTLP_GRPC);
    let otlp_http = addr("listen.otlp_http", f.listen.otlp_http, DEFAULT_OTLP_HTTP);
    let api = addr("listen.api", f.listen.api, DEFAULT_API);
    let mut duration = |key: &str, value: Option<String>, default: &str| -> Duration {
        let text = value.unwrap_or_else(|| default.to_string());
        parse_duration(&text).unwrap_or_else(|e| {
            errors.push(format!("{key}: {e}"));
            Duration::ZERO
        })
    };
    let max_future_skew = duration(
        "ingest.max_future_skew",
        f.ingest.max_future_skew,
        DEFAULT_MAX_FUTURE_SKEW,
    );
    let retry_after = duration(
        "ingest.retry_after",
        f.ingest.retry_after,
        DEFAULT_RETRY_AFTER,
    );
    let dedup_max_age = duration(
        "ingest.dedup_max_age",
        f.ingest.dedup_max_age,
        crate::ingest::dedup::DEFAULT_MAX_AGE,
    );
    let dedup_max_ids = f
        .ingest
        .dedup_max_ids
        .unwrap_or(crate::ingest::dedup::DEFAULT_MAX_IDS);
    let retention_logs = duration("retention.logs", f.retention.logs, DEFAULT_RETENTION_LOGS);
    let retention_metrics = duration(
        "retention.metrics",
        f.retention.metrics,
        DEFAULT_RETENTION_METRICS,
    );
    let out_of_order_window = duration(
        "metrics.out_of_order_window",
        f.metrics.out_of_order_window,
        DEFAULT_OUT_OF_ORDER_WINDOW,
    );
    let log_search_timeout = duration(
        "logs.search_timeout",
        f.logs.search_timeout,
        DEFAULT_LOG_SEARCH_TIMEOUT,
    );
    let query_timeout = duration(
        "metrics.query_timeout",
        f.metrics.query_timeout,
        DEFAULT_QUERY_TIMEOUT,
    );
    let retention_traces = duration(
        "retention.traces",
        f.retention.traces,
        DEFAULT_RETENTION_TRACES,
    );
    let access_token_ttl = duration(
        "auth.access_token_ttl",
        f.auth.access_token_ttl,
        DEFAULT_ACCESS_TOKEN_TTL,
    );
    let session_ttl = duration("auth.session_ttl", f.auth.session_ttl, DEFAULT_SESSION_TTL);
    let session_max_age = duration(
        "auth.session_max_age",
        f.auth.session_max_age,
        DEFAULT_SESSION_MAX_AGE,
    );
    let evaluation_interval = duration(
        "alerting.evaluation_interval",
        f.alerting.evaluation_interval,
        DEFAULT_EVALUATION_INTERVAL,
    );
    let query_offset = duration(
        "alerting.query_offset",
        f.alerting.query_offset,
        DEFAULT_QUERY_OFFSET,
    );
    let log_format = match f.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push(format!("log_format: {other:?} is not one of text, json"));
            LogFormat::Text
        }
    };
    let max_request_bytes = f
        .ingest
        .max_request_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
    if max_request_bytes < 1024 {
        errors.push("ingest.max_request_bytes: must be at least 1024".to_string());
    }
    let max_inflight_bytes = f
        .ingest
        .max_inflight_bytes
        .unwrap_or(DEFAULT_MAX_INFLIGHT_BYTES);
    if max_inflight_bytes < max_request_bytes {
        errors.push(format!(
            "ingest.max_inflight_bytes: {max_inflight_bytes} is below ingest.max_request_bytes ({max_request_bytes}); one request must fit"
        ));
    }
    let indexing_threads = f
        .logs
        .indexing_threads
        .unwrap_or_else(default_indexing_threads);
    let writer_heap_bytes = f
        .logs
        .writer_heap_bytes
        .unwrap_or(vantage_storage::logs::DEFAULT_WRITER_HEAP_BYTES * indexing_threads.max(1));
    if indexing_threads == 0 || writer_heap_bytes / indexing_threads.max(1) < 15_000_000 {
        errors.push("logs.writer_heap_bytes: Tantivy needs at least 15 MB per indexing thread, and at least one thread".to_string());
    }
    let commit_interval_ms = f
        .logs
        .commit_interval_ms
        .unwrap_or(DEFAULT_COMMIT_INTERVAL_MS);
    if commit_interval_ms == 0 || commit_interval_ms > 60_000 {
        errors.push("logs.commit_interval_ms: must be between 1 and 60000".to_string());
    }
    let search_idle_after_ms = f
        .logs
        .search_idle_after_ms
        .unwrap_or(DEFAULT_SEARCH_IDLE_AFTER_MS);
    let idle_commit_interval_ms = f
        .logs
        .idle_commit_interval_ms
        .unwrap_or(DEFAULT_IDLE_COMMIT_INTERVAL_MS.max(commit_interval_ms));
    if idle_commit_interval_ms < commit_interval_ms || idle_commit_interval_ms > 300_000 {
        errors.push(format!(
            "logs.idle_commit_interval_ms: must be between logs.commit_interval_ms ({commit_interval_ms}) and 300000"
        ));
    }
    // A value that did not parse was reported above as ZERO; do not report it twice.
    if retention_logs != Duration::ZERO && retention_logs < Duration::from_secs(86_400) {
        errors.push(
            "retention.logs: partitions are a day long, so retention must be at least 1d"
                .to_string(),
        );
    }
    if retention_metrics != Duration::ZERO && retention_metrics < Duration::from_secs(3_600) {
        errors.push("retention.metrics: must be at least 1h".to_string());
    }
    if retention_traces != Duration::ZERO && retention_traces < Duration::from_secs(86_400) {
        errors.push(
            "retention.traces: partitions are a day long, so retention must be at least 1d"
                .to_string(),
        );
    }
    if access_token_ttl != Duration::ZERO
        && !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&access_token_ttl)
    {
        errors.push("auth.access_token_ttl: must be between 10s and 1d".to_string());
    }
    if session_ttl != Duration::ZERO
        && session_max_age != Duration::ZERO
        && session_ttl > session_max_age
    {
        errors.push("auth.session_ttl: must not exceed auth.session_max_age".to_string());
    }
    if evaluation_interval != Duration::ZERO && evaluation_interval < Duration::from_secs(1) {
        errors.push("alerting.evaluation_interval: must be at least 1s".to_string());
    }
    if let Some(url) = &f.alerting.external_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.push(format!(
            "alerting.external_url: {url:?} is not an http:// or https:// URL"
        ));
    }
    let max_concurrent_queries = f
        .metrics
        .max_concurrent_queries
        .unwrap_or(DEFAULT_MAX_CONCURRENT_QUERIES);
    if max_concurrent_queries == 0 {
        errors.push("metrics.max_concurrent_queries: must be at least 1".to_string());
    }
    let max_concurrent_searches = f
        .logs
        .max_concurrent_searches
        .unwrap_or(DEFAULT_MAX_CONCURRENT_SEARCHES);
    if max_concurrent_searches == 0 {
        errors.push("logs.max_concurrent_searches: must be at least 1".to_string());
    }
    let max_live_tails = f.logs.max_live_tails.unwrap_or(DEFAULT_MAX_LIVE_TAILS);
    if max_live_tails == 0 {
        errors.push("logs.max_live_tails: must be at least 1".to_string());
    }
    let max_hits_bytes = f
        .logs
        .max_hits_bytes
        .unwrap_or(vantage_storage::logs::DEFAULT_MAX_HITS_BYTES);
    if max_hits_bytes == 0 {
        errors.push("logs.max_hits_bytes: must be at least 1".to_string());
    }
    let cors_allowed_origins = cors_origins(f.api.cors_allowed_origins, &mut errors);
    let tls = match (f.tls.cert_file, f.tls.key_file, f.tls.client_ca_file) {
        (None, None, None) => None,
        (Some(cert_file), Some(key_file), client_ca_file) => Some(crate::tls::TlsFiles {
            cert_file,
            key_file,
            client_ca_file,
        }),
        _ => {
            errors.push(
                "tls: cert_file and key_file go together (client_ca_file needs both)".to_string(),
            );
            None
        }
    };
    let secrets = crate::secrets::SecretsConfig::validate(
        f.secrets.key_file,
        f.secrets.key,
        f.secrets.previous_key_files,
        &mut errors,
    );
    if let Some(level) = &f.log_level
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
    {
        errors.push(format!("log_level: {level:?} is not a log filter: {e}"));
    }
    if !errors.is_empty() {
        return Err(ConfigError(errors));
    }
    Ok(Config {
        secrets,
        secrets_without_tls: f.secrets.without_tls.unwrap_or_default(),
        log_level: f.log_level,
        data_dir: f
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        log_format,
        otlp_grpc,
        otlp_http,
        api,
        max_request_bytes,
        max_inflight_bytes,
        max_attributes_per_record: f
            .ingest
            .max_attributes_per_record
            .unwrap_or(DEFAULT_MAX_ATTRIBUTES),
        max_future_skew,
        retry_after,
        dedup_max_ids,
        dedup_max_age,
        wal_segment_max_bytes: f.wal.segment_max_bytes.unwrap_or(DEFAULT_WAL_SEGMENT_BYTES),
        wal_fsync: f.wal.fsync.unwrap_or(true),
        commit_interval: Duration::from_millis(commit_interval_ms),
        search_idle_after: Duration::from_millis(search_idle_after_ms),
        idle_commit_interval: Duration::from_millis(idle_commit_interval_ms),
        writer_heap_bytes,
        indexing_threads,
        log_search_timeout,
        max_concurrent_searches,
        max_live_tails,
        max_hits_bytes,
        retention_logs,
        auth_enabled: f.auth.enabled.unwrap_or(true),
        protect_metrics: f.auth.protect_metrics.unwrap_or(false),
        // Unlimited unless configured: one team's collector needs no quota by default.
        rates: crate::ratelimit::Rates {
            ingest_bytes_per_tenant: f.limits.ingest_bytes_per_second.unwrap_or(0),
            ingest_bytes_per_key: f.limits.ingest_bytes_per_second_per_key.unwrap_or(0),
            queries_per_tenant: f.limits.query_requests_per_second.unwrap_or(0),
            queries_per_key: f.limits.query_requests_per_second_per_key.unwrap_or(0),
        },
        sessions: SessionConfig {
            access_token_ttl,
            session_ttl,
            session_max_age,
        },
        retention_metrics,
        max_series_per_tenant: f
            .metrics
            .max_series_per_tenant
            .unwrap_or(DEFAULT_MAX_SERIES_PER_TENANT),
        out_of_order_window,
        query_timeout,
        max_samples_per_query: f.metrics.max_samples_per_query,
        max_concurrent_queries,
        cors_allowed_origins,
        retention_traces,
        tls,
        alerting: AlertingConfig {
            rules_dir: f.alerting.rules_dir,
            alertmanager_config: f.alerting.alertmanager_config,
            external_url: f
                .alerting
                .external_url
                .map(|u| u.trim_end_matches('/').to_string()),
            evaluation_interval,
            query_offset,
        },
    })
}

/// Origins as a browser sends them (`https://grafana.example.com:3000`): a scheme, a
/// host, an optional port, nothing else; `*` is refused, because an API that takes
/// bearer tokens should name the pages allowed to use them.
fn cors_origins(value: Option<Value>, errors: &mut Vec<String>) -> Vec<String> {
    let items: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Sequence(seq)) => seq
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => format!("{other:?}"),
            })
            .collect(),
        Some(other) => {
            errors.push(format!(
                "api.cors_allowed_origins: expected a list of origins, got {other:?}"
            ));
            return Vec::new();
        }
    };
    for origin in &items {
        let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', '*', ' '])
        });
        if !valid {
            errors.push(format!(
                "api.cors_allowed_origins: {origin:?} is not an origin like https://grafana.example.com"
            ));
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_any_input() {
        let c = Config::load(None, &BTreeMap::new(), &FlagOverrides::default()).unwrap();
        assert_eq!(c.otlp_grpc.port(), 4317);
        assert_eq!(c.otlp_http.port(), 4318);
        assert_eq!(c.api.port(), 7070);
        assert_eq!(c.max_request_bytes, 16 * 1024 * 1024);
        assert_eq!(c.retention_logs, Duration::from_secs(7 * 86_400));
        assert!(c.wal_fsync);
        assert!(c.auth_enabled, "secure by default");
    }

    #[test]
    fn auth_is_switched_off_only_on_request() {
        let flags = FlagOverrides {
            insecure_no_auth: true,
            ..Default::default()
        };
        assert!(
            !Config::load(None, &BTreeMap::new(), &flags)
                .unwrap()
                .auth_enabled
        );
        let e = env(&[("VANTAGE_AUTH__ENABLED", "false")]);
        assert!(
            !Config::load(None, &e, &FlagOverrides::default())
                .unwrap()
                .auth_enabled
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "data_dir: /from/file\nlisten:\n  otlp_grpc: 127.0.0.1:1\n  api: 127.0.0.1:2\nwal:\n  fsync: true\n",
        )
        .unwrap();
        let e = env(&[
            ("VANTAGE_LISTEN__API", "127.0.0.1:3"),
            ("VANTAGE_WAL__FSYNC", "false"),
            ("VANTAGE_URL", "http://not-the-collectors"),
        ]);
        let flags = FlagOverrides {
            otlp_grpc: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = Config::load(Some(&path), &e, &flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.otlp_grpc.port(), 0, "flag beats file");
        assert_eq!(c.api.port(), 3, "env beats file");
        assert!(!c.wal_fsync, "env values keep their YAML type");
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "listen:\n  api: 127.0.0.1:2\n  otlp_grcp: x\n").unwrap();
        let err =
            Config::load(Some(&path), &BTreeMap::new(), &FlagOverrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("otlp_grcp") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn all_errors_at_once() {
        let e = env(&[
            ("VANTAGE_LISTEN__API", "nope"),
            ("VANTAGE_RETENTION__LOGS", "7 days"),
            ("VANTAGE_LOG_FORMAT", "xml"),
        ]);
        let err = Config::load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.to_string().contains("listen.api"));
        assert!(err.to_string().contains("retention.logs"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
