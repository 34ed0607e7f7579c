//! Agent configuration: a YAML file, then `VANTAGE_AGENT_*` environment variables, then
//! command-line flags, each overriding the one before, validated into [`Config`].
//!
//! Environment variables map to keys by path: `VANTAGE_AGENT_STATE_DIR` sets
//! `state_dir`, `VANTAGE_AGENT_EXPORTER__ENDPOINT` sets `exporter.endpoint` (a double
//! underscore steps into a section); `VANTAGE_AGENT_TOKEN` is short for
//! `exporter.token`. The process environment is read by `main` and passed in as a map,
//! so tests never touch it. Every problem is reported at once, each with its key path
//! and, when the value came from the file, its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
pub(crate) use vantage_proto::config::parse_duration;
use vantage_proto::config::{env_scalar, set_path};

/// Where checkpoints and the disk queue live when installed as a service.
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/vantage-agent";
/// The collector on this host, OTLP/gRPC's registered port.
pub(crate) const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";
/// The OpenTelemetry Collector's health_check extension port, so probes written for it work.
pub(crate) const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:13133";
/// Records per export request: the OTel batch processor's default send size.
pub(crate) const DEFAULT_BATCH_MAX_RECORDS: usize = 8192;
/// Compression level of batches: the fastest. The agent's CPU on the host it watches is
/// the scarce resource; zstd 1 still takes log text to a fraction of its size (level 3,
/// tonic's, cost about half the agent's CPU at full tail throughput).
pub(crate) const DEFAULT_COMPRESSION_LEVEL: i32 = 1;
/// Bytes per export request: far below the collector's 16 MiB request limit.
pub(crate) const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Request deadline: a healthy collector answers within milliseconds.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
/// First retry delay (the OTLP exporters' default initial interval is 5 s; shorter
/// recovers faster after a collector restart, jitter spreads the herd).
pub(crate) const DEFAULT_RETRY_INITIAL: &str = "500ms";
/// Longest retry delay: the OTLP exporters' default max interval.
pub(crate) const DEFAULT_RETRY_MAX: &str = "30s";
/// Disk queue cap: a day of a busy host's logs, and bounded.
pub(crate) const DEFAULT_QUEUE_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// The smallest useful queue: a few segments of a few batches.
pub(crate) const MIN_QUEUE_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// How often the globs are expanded and files checked for growth: one stat per file per
/// second is cheap even for thousands of files, and no per-file watcher is needed.
pub(crate) const DEFAULT_POLL_INTERVAL: &str = "1s";
/// How long a rotated-away or deleted file is kept open after it last grew, for a writer
/// that has not reopened yet (Fluent Bit's `rotate_wait` is 5 s).
pub(crate) const DEFAULT_ROTATE_WAIT: &str = "5s";
/// Longest line kept whole: the OTel filelog receiver's `max_log_size` default.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// Host metrics cadence: the and the OTel hostmetrics examples' default.
pub(crate) const DEFAULT_HOST_METRICS_INTERVAL: &str = "10s";

/// The local OTLP/gRPC receiver: the port every OTel SDK exports to by default, on
/// loopback only, so applications on the host need no configuration.
pub(crate) const DEFAULT_OTLP_GRPC_LISTEN: &str = "127.0.0.1:4317";
/// The local OTLP/HTTP receiver: the SDKs' default HTTP port, loopback only.
pub(crate) const DEFAULT_OTLP_HTTP_LISTEN: &str = "127.0.0.1:4318";
/// Largest OTLP request the receiver takes (after decompression): the collector's limit,
/// so whatever the agent queues the collector accepts.
pub(crate) const DEFAULT_RECEIVER_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Prometheus's default `scrape_interval`.
pub(crate) const DEFAULT_SCRAPE_INTERVAL: &str = "1m";
/// Prometheus's default `scrape_timeout`.
pub(crate) const DEFAULT_SCRAPE_TIMEOUT: &str = "10s";
/// Prometheus's default `metrics_path`.
pub(crate) const DEFAULT_METRICS_PATH: &str = "/metrics";
/// Largest scrape body: 16 MiB is about fifty node_exporter pages and covers big
/// kube-state-metrics ones, while a runaway exporter cannot make the agent hold more
/// than that per target (Prometheus's default is unlimited; the agent must stay small).
pub(crate) const DEFAULT_SCRAPE_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// The smallest memory cap accepted. A cap under the agent's own idle footprint (about
/// 10 MiB) keeps the sources paused for good; it is allowed, for tests of the pause.
pub(crate) const MIN_MAX_MEMORY_MIB: u64 = 1;

/// Top-level keys an environment variable may set; `VANTAGE_AGENT_TOKEN` is the exception.
const TOP_LEVEL_KEYS: &[&str] = &[
    "state_dir",
    "log_format",
    "health_listen",
    "resource_attributes",
    "exporter",
    "queue",
    "files",
    "host_metrics",
    "receivers",
    "scrape_configs",
    "journald",
    "limits",
    "control",
    "redact",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    log_format: Option<String>,
    health_listen: Option<String>,
    resource_attributes: BTreeMap<String, String>,
    exporter: ExporterFile,
    queue: QueueFile,
    files: FilesFile,
    host_metrics: HostMetricsFile,
    receivers: ReceiversFile,
    scrape_configs: Vec<ScrapeFile>,
    journald: Option<crate::journald::JournaldFile>,
    limits: LimitsFile,
    /// Remote configuration over OpAMP (see `control`).
    control: Option<crate::control::ControlFile>,
    /// Redaction rules applied to every file input (before the input's own).
    redact: Vec<crate::process::RedactFile>,
}

/// `limits:` — what the agent may take from the host.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsFile {
    max_memory_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ReceiversFile {
    otlp: OtlpReceiverFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OtlpReceiverFile {
    grpc: Option<String>,
    http: Option<String>,
    max_request_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScrapeFile {
    job_name: Option<String>,
    scrape_interval: Option<String>,
    scrape_timeout: Option<String>,
    metrics_path: Option<String>,
    scheme: Option<String>,
    honor_labels: Option<bool>,
    params: BTreeMap<String, Vec<String>>,
    body_size_limit_bytes: Option<usize>,
    static_configs: Vec<StaticFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StaticFile {
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExporterFile {
    endpoint: Option<String>,
    token: Option<String>,
    enrollment_token: Option<String>,
    enroll_url: Option<String>,
    tls: ExporterTlsFile,
    compression: Option<String>,
    compression_level: Option<i32>,
    batch_max_records: Option<usize>,
    batch_max_bytes: Option<usize>,
    request_timeout: Option<String>,
    retry_initial_backoff: Option<String>,
    retry_max_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExporterTlsFile {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QueueFile {
    max_bytes: Option<u64>,
    when_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilesFile {
    poll_interval: Option<String>,
    rotate_wait: Option<String>,
    inputs: Vec<InputFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct InputFile {
    include: Vec<String>,
    exclude: Vec<String>,
    start_at: Option<String>,
    encoding: Option<String>,
    max_line_bytes: Option<usize>,
    attributes: BTreeMap<String, String>,
    // Log processing (see `process`): multiline joining, JSON lines, redaction.
    multiline: Option<crate::process::MultilineFile>,
    parse: Option<String>,
    severity_field: Option<String>,
    timestamp_field: Option<String>,
    message_field: Option<String>,
    json_max_depth: Option<usize>,
    json_max_attributes: Option<usize>,
    redact: Vec<crate::process::RedactFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HostMetricsFile {
    enabled: Option<bool>,
    interval: Option<String>,
}

/// A credential that must never reach a log line: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret obtained at run time (an enrolled key).
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the agent writes its own log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers (and the tests).
    Json,
}

/// Compression of export requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Best ratio per CPU for log text; the default.
    Zstd,
    /// For collectors that only speak gzip.
    Gzip,
    /// Plain; for local collectors where CPU matters more than bytes.
    None,
}

/// What the disk queue does when it reaches its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FullPolicy {
    /// Sources pause (file offsets stay put) until the collector drains the queue.
    Block,
    /// The oldest queue segment is deleted, its records counted as dropped.
    DropOldest,
}

/// Where a file first seen at start-up is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// From the first byte.
    Beginning,
    /// From its current end (only new lines); files created later are always read whole.
    End,
}

/// How the bytes of a line become text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8; invalid sequences become U+FFFD and the line is counted.
    Utf8,
    /// ISO-8859-1: every byte is one character, so nothing is invalid.
    Latin1,
}

/// Export settings.
#[derive(Clone, Debug)]
pub(crate) struct ExporterConfig {
    /// `http://host:port` of the collector's OTLP/gRPC listener.
    pub(crate) endpoint: String,
    /// Bearer token sent with every request.
    pub(crate) token: Option<Secret>,
    pub(crate) compression: Compression,
    /// Level of `compression` (zstd 1..=22, gzip 0..=9), applied once per batch as it
    /// enters the queue.
    pub(crate) compression_level: i32,
    pub(crate) batch_max_records: usize,
    pub(crate) batch_max_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    /// TLS towards the collector (`https://` endpoints).
    pub(crate) tls: Option<ClientTls>,
    /// Enrollment, when the agent has no token yet.
    pub(crate) enrollment: Option<Enrollment>,
}

/// How the agent verifies the collector, and proves itself with a client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientTls {
    /// PEM CA certificates to trust; `None`: the system's trust store.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for collectors that require them.
    pub(crate) identity: Option<(PathBuf, PathBuf)>,
    /// The name the collector's certificate must carry, when not the endpoint's host.
    pub(crate) server_name: Option<String>,
}

/// A one-time enrollment: the token is traded for the agent's own key, kept in the
/// state directory.
#[derive(Clone, Debug)]
pub(crate) struct Enrollment {
    /// The `vte_...` token.
    pub(crate) token: Secret,
    /// The collector's API base URL (`https://collector:7070`).
    pub(crate) url: String,
}

/// One group of tailed files.
#[derive(Clone, Debug)]
pub(crate) struct FileInput {
    pub(crate) include: Vec<glob::Pattern>,
    pub(crate) exclude: Vec<glob::Pattern>,
    pub(crate) start_at: StartAt,
    pub(crate) encoding: Encoding,
    pub(crate) max_line_bytes: usize,
    pub(crate) attributes: BTreeMap<String, String>,
    /// Multiline joining, JSON parsing and redaction of this input's records.
    pub(crate) processing: crate::process::Processing,
}

/// The local OTLP receiver.
#[derive(Clone, Debug)]
pub(crate) struct ReceiverConfig {
    /// `None`: no gRPC listener.
    pub(crate) grpc: Option<SocketAddr>,
    /// `None`: no HTTP listener.
    pub(crate) http: Option<SocketAddr>,
    pub(crate) max_request_bytes: usize,
}

/// One scraped target, with everything its scrape loop needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScrapeTarget {
    pub(crate) job: String,
    /// `host:port`, which is also the `instance` label.
    pub(crate) address: String,
    /// `http://host:port/path?params`.
    pub(crate) url: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) honor_labels: bool,
    pub(crate) body_limit: usize,
    /// The static config's `labels`, added to every series of the target.
    pub(crate) labels: BTreeMap<String, String>,
}

/// The validated configuration the agent runs with.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) state_dir: PathBuf,
    pub(crate) log_format: LogFormat,
    /// `None`: no health endpoint.
    pub(crate) health_listen: Option<SocketAddr>,
    pub(crate) resource_attributes: BTreeMap<String, String>,
    pub(crate) exporter: ExporterConfig,
    pub(crate) queue_max_bytes: u64,
    pub(crate) queue_when_full: FullPolicy,
    pub(crate) poll_interval: Duration,
    pub(crate) rotate_wait: Duration,
    pub(crate) inputs: Vec<FileInput>,
    /// `None`: host metrics off.
    pub(crate) host_metrics_interval: Option<Duration>,
    pub(crate) receiver: ReceiverConfig,
    pub(crate) scrape_targets: Vec<ScrapeTarget>,
    /// The journald source; `None`: off (no `journald:` section).
    pub(crate) journald: Option<crate::journald::JournaldConfig>,
    /// RSS above which the sources pause; `None`: no cap.
    pub(crate) max_memory_bytes: Option<u64>,
    /// `None`: no OpAMP client; the local configuration is all there is.
    pub(crate) control: Option<crate::control::ControlConfig>,
    /// The global `redact:` rules (file inputs hold them too, first in their own list).
    pub(crate) redact: Vec<crate::process::redact::Rule>,
}

/// Values given on the command line; `None`/empty leaves the file/environment value.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagOverrides {
    pub(crate) collector: Option<String>,
    pub(crate) token: Option<String>,
    /// Each `--tail GLOB`; together they form one more input.
    pub(crate) tail: Vec<String>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) host_metrics_interval: Option<String>,
    pub(crate) health_listen: Option<String>,
    pub(crate) log_format: Option<String>,
    /// `receivers.otlp.grpc`: an address or `off`.
    pub(crate) otlp_grpc_listen: Option<String>,
    /// `receivers.otlp.http`: an address or `off`.
    pub(crate) otlp_http_listen: Option<String>,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub(crate) struct ConfigError(pub(crate) Vec<String>);

impl Config {
    /// Builds the configuration from an optional file, the environment map and flags.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "`run` and `check-config` go through `layers` + `from_tree`"
        )
    )]
    pub(crate) fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let (root, text) = Config::layers(file, env, flags)?;
        Config::from_tree(crate::control::expand(root, env)?, &text)
    }

    /// The local tree (file, then `VANTAGE_AGENT_*` variables, then flags) before
    /// validation, with the file's text for line numbers: the base a remote
    /// configuration is merged over.
    pub(crate) fn layers(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<(Value, String), ConfigError> {
        let mut text = String::new();
        let mut root = match file {
            Some(path) => {
                text = std::fs::read_to_string(path).map_err(|e| {
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
            let Some(rest) = name.strip_prefix("VANTAGE_AGENT_") else {
                continue;
            };
            let path: Vec<String> = if rest == "TOKEN" {
                vec!["exporter".into(), "token".into()]
            } else {
                rest.to_ascii_lowercase()
                    .split("__")
                    .map(str::to_string)
                    .collect()
            };
            if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
                continue;
            }
            let value = if path == ["exporter", "token"] {
                Value::String(value.clone())
            } else {
                env_scalar(value)
            };
            set_path(&mut root, &path, value);
        }
        let flag = |root: &mut Value, path: &[&str], v: &Option<String>| {
            if let Some(v) = v {
                let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                set_path(root, &path, Value::String(v.clone()));
            }
        };
        flag(&mut root, &["exporter", "endpoint"], &flags.collector);
        flag(&mut root, &["exporter", "token"], &flags.token);
        flag(
            &mut root,
            &["state_dir"],
            &flags.state_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag(&mut root, &["health_listen"], &flags.health_listen);
        flag(&mut root, &["log_format"], &flags.log_format);
        flag(
            &mut root,
            &["receivers", "otlp", "grpc"],
            &flags.otlp_grpc_listen,
        );
        flag(
            &mut root,
            &["receivers", "otlp", "http"],
            &flags.otlp_http_listen,
        );
        if let Some(interval) = &flags.host_metrics_interval {
            if interval == "off" {
                let path = vec!["host_metrics".to_string(), "enabled".to_string()];
                set_path(&mut root, &path, Value::Bool(false));
            } else {
                flag(
                    &mut root,
                    &["host_metrics", "interval"],
                    &Some(interval.clone()),
                );
            }
        }
        if !flags.tail.is_empty() {
            let mut input = Mapping::new();
            input.insert(
                Value::String("include".into()),
                Value::Sequence(flags.tail.iter().cloned().map(Value::String).collect()),
            );
            push_input(&mut root, Value::Mapping(input));
        }
        Ok((root, text))
    }

    /// Validates a configuration tree, the same checks for a local file and for a
    /// merged remote configuration; `text` (may be empty) gives values their lines.
    pub(crate) fn from_tree(root: Value, text: &str) -> Result<Config, ConfigError> {
        let parsed: FileConfig = serde_yaml_ng::from_value(root).map_err(|e| {
            ConfigError(vec![format!(
                "after VANTAGE_AGENT_* variables, flags and remote configuration: {e}"
            )])
        })?;
        validate(parsed, text)
    }
}

fn push_input(root: &mut Value, input: Value) {
    let files = ["files".to_string(), "inputs".to_string()];
    let Value::Mapping(map) = root else { return };
    let files_node = map
        .entry(Value::String(files[0].clone()))
        .or_insert(Value::Mapping(Mapping::new()));
    if !matches!(files_node, Value::Mapping(_)) {
        *files_node = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(files_map) = files_node else {
        return;
    };
    let inputs = files_map
        .entry(Value::String(files[1].clone()))
        .or_insert(Value::Sequence(Vec::new()));
    if !matches!(inputs, Value::Sequence(_)) {
        *inputs = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(seq) = inputs {
        seq.push(input);
    }
}

/// One step of a key path: a mapping key or a sequence index.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The 1-based line of a key path in block-style YAML `text`, if the file holds it.
/// Good enough to point at the line of a value the file set; values from the
/// environment or flags are not in the file and get no line.
fn line_of(text: &str, path: &[Step<'_>]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut min_indent = 0usize;
    let mut found = None;
    for step in path {
        let mut hit = None;
        let mut seen_items = 0usize;
        // The indent of this list's own items: dashes of nested lists do not count.
        let mut list_indent: Option<usize> = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if indent < min_indent && i > from {
                break;
            }
            match step {
                Step::Key(key) => {
                    let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
                    if body.starts_with(&format!("{key}:")) {
                        hit = Some((i, indent + (trimmed.len() - body.len())));
                        break;
                    }
                }
                Step::Index(n) => {
                    if (trimmed.starts_with("- ") || trimmed == "-")
                        && *list_indent.get_or_insert(indent) == indent
                    {
                        if seen_items == *n {
                            hit = Some((i, indent + 2));
                            break;
                        }
                        seen_items += 1;
                    }
                }
            }
        }
        let (i, indent) = hit?;
        found = Some(i + 1);
        // A list item's first key sits on the dash line itself.
        from = if matches!(step, Step::Index(_)) {
            i
        } else {
            i + 1
        };
        min_indent = indent;
    }
    found
}

/// `key (line N)` when the file holds the key, else `key`.
fn at(text: &str, key: &str, path: &[Step<'_>]) -> String {
    match line_of(text, path) {
        Some(line) => format!("{key} (line {line})"),
        None => key.to_string(),
    }
}

fn validate(f: FileConfig, text: &str) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let mut duration = |key: &str, path: &[Step<'_>], value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        match parse_duration(&value) {
            Ok(d) if d > Duration::ZERO => d,
            Ok(_) => {
                errors.push(format!("{}: must be more than 0", at(text, key, path)));
                Duration::from_secs(1)
            }
            Err(e) => {
                errors.push(format!("{}: {e}", at(text, key, path)));
                Duration::from_secs(1)
            }
        }
    };
    use Step::{Index, Key};
    let request_timeout = duration(
        "exporter.request_timeout",
        &[Key("exporter"), Key("request_timeout")],
        f.exporter.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
    );
    let retry_initial = duration(
        "exporter.retry_initial_backoff",
        &[Key("exporter"), Key("retry_initial_backoff")],
        f.exporter.retry_initial_backoff,
        DEFAULT_RETRY_INITIAL,
    );
    let retry_max = duration(
        "exporter.retry_max_backoff",
        &[Key("exporter"), Key("retry_max_backoff")],
        f.exporter.retry_max_backoff,
        DEFAULT_RETRY_MAX,
    );
    let poll_interval = duration(
        "files.poll_interval",
        &[Key("files"), Key("poll_interval")],
        f.files.poll_interval,
        DEFAULT_POLL_INTERVAL,
    );
    let rotate_wait = duration(
        "files.rotate_wait",
        &[Key("files"), Key("rotate_wait")],
        f.files.rotate_wait,
        DEFAULT_ROTATE_WAIT,
    );
    let host_interval = duration(
        "host_metrics.interval",
        &[Key("host_metrics"), Key("interval")],
        f.host_metrics.interval,
        DEFAULT_HOST_METRICS_INTERVAL,
    );
    let log_format = match f.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push(format!(
                "{}: {other:?} is not one of text, json",
                at(text, "log_format", &[Key("log_format")])
            ));
            LogFormat::Text
        }
    };
    let health_listen = match f.health_listen.as_deref() {
        Some("off") => None,
        other => {
            let text_value = other.unwrap_or(DEFAULT_HEALTH_LISTEN);
            match text_value.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(format!(
                        "{}: {text_value:?} is not a socket address (host:port) or off: {e}",
                        at(text, "health_listen", &[Key("health_listen")])
                    ));
                    None
                }
            }
        }
    };
    let endpoint = f
        .exporter
        .endpoint
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let endpoint_ok = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        && endpoint
            .parse::<http_uri::Uri>()
            .map(|u| u.host().is_some())
            .unwrap_or(false);
    if !endpoint_ok {
        errors.push(format!(
            "{}: {endpoint:?} is not an http://host:port URL",
            at(
                text,
                "exporter.endpoint",
                &[Key("exporter"), Key("endpoint")]
            )
        ));
    }
    let tls_file = f.exporter.tls;
    let tls_key = |k: &'static str| {
        at(
            text,
            &format!("exporter.tls.{k}"),
            &[Key("exporter"), Key("tls"), Key(k)],
        )
    };
    let tls = if endpoint.starts_with("https://") {
        let identity = match (tls_file.cert_file, tls_file.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                errors.push(format!(
                    "{}: cert_file and key_file go together",
                    tls_key("cert_file")
                ));
                None
            }
        };
        Some(ClientTls {
            ca_file: tls_file.ca_file,
            identity,
            server_name: tls_file.server_name,
        })
    } else {
        if tls_file.ca_file.is_some() || tls_file.cert_file.is_some() || tls_file.key_file.is_some()
        {
            errors.push(format!(
                "{}: TLS settings need an https:// exporter.endpoint",
                tls_key("ca_file")
            ));
        }
        None
    };
    let enrollment = match (
        f.exporter.enrollment_token.filter(|t| !t.is_empty()),
        f.exporter.enroll_url,
    ) {
        (None, _) => None,
        (Some(token), Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(Enrollment {
                token: Secret(token),
                url: url.trim_end_matches('/').to_string(),
            })
        }
        (Some(_), url) => {
            errors.push(format!(
                "{}: enrollment needs the collector's API URL, e.g. https://collector:7070 (got {url:?})",
                at(text, "exporter.enroll_url", &[Key("exporter"), Key("enroll_url")])
            ));
            None
        }
    };
    let compression = match f.exporter.compression.as_deref() {
        None | Some("zstd") => Compression::Zstd,
        Some("gzip") => Compression::Gzip,
        Some("none") => Compression::None,
        Some(other) => {
            errors.push(format!(
                "{}: {other:?} is not one of zstd, gzip, none",
                at(
                    text,
                    "exporter.compression",
                    &[Key("exporter"), Key("compression")]
                )
            ));
            Compression::Zstd
        }
    };
    let compression_level = f
        .exporter
        .compression_level
        .unwrap_or(DEFAULT_COMPRESSION_LEVEL);
    let levels = match compression {
        Compression::Zstd => 1..=22,
        Compression::Gzip => 0..=9,
        Compression::None => i32::MIN..=i32::MAX,
    };
    if !levels.contains(&compression_level) {
        errors.push(format!(
            "{}: {compression_level} is not a {} level ({}..={})",
            at(
                text,
                "exporter.compression_level",
                &[Key("exporter"), Key("compression_level")]
            ),
            if compression == Compression::Gzip {
                "gzip"
            } else {
                "zstd"
            },
            levels.start(),
            levels.end()
        ));
    }
    let batch_max_records = f
        .exporter
        .batch_max_records
        .unwrap_or(DEFAULT_BATCH_MAX_RECORDS);
    if batch_max_records == 0 {
        errors.push(format!(
            "{}: must be at least 1",
            at(
                text,
                "exporter.batch_max_records",
                &[Key("exporter"), Key("batch_max_records")]
            )
        ));
    }
    let batch_max_bytes = f
        .exporter
        .batch_max_bytes
        .unwrap_or(DEFAULT_BATCH_MAX_BYTES);
    if !(1024..=8 * 1024 * 1024).contains(&batch_max_bytes) {
        errors.push(format!(
            "{}: must be between 1024 and 8388608 (the collector takes 16 MiB requests)",
            at(
                text,
                "exporter.batch_max_bytes",
                &[Key("exporter"), Key("batch_max_bytes")]
            )
        ));
    }
    let token = f.exporter.token.filter(|t| !t.is_empty()).map(Secret);
    if let Some(t) = &token
        && t.0.bytes().any(|b| !(0x20..0x7f).contains(&b))
    {
        errors.push(format!(
            "{}: must be printable ASCII (it is sent as a header)",
            at(text, "exporter.token", &[Key("exporter"), Key("token")])
        ));
    }
    let queue_max_bytes = f.queue.max_bytes.unwrap_or(DEFAULT_QUEUE_MAX_BYTES);
    if queue_max_bytes < MIN_QUEUE_MAX_BYTES {
        errors.push(format!(
            "{}: must be at least {MIN_QUEUE_MAX_BYTES}",
            at(text, "queue.max_bytes", &[Key("queue"), Key("max_bytes")])
        ));
    }
    let queue_when_full = match f.queue.when_full.as_deref() {
        None | Some("block") => FullPolicy::Block,
        Some("drop_oldest") => FullPolicy::DropOldest,
        Some(other) => {
            errors.push(format!(
                "{}: {other:?} is not one of block, drop_oldest",
                at(text, "queue.when_full", &[Key("queue"), Key("when_full")])
            ));
            FullPolicy::Block
        }
    };
    let global_redact = crate::process::redact_rules(
        &f.redact,
        &|i| at(text, &format!("redact[{i}]"), &[Key("redact"), Index(i)]),
        &mut errors,
    );
    let mut inputs = Vec::new();
    for (i, input) in f.files.inputs.into_iter().enumerate() {
        let key = |name: &str| format!("files.inputs[{i}].{name}");
        let path = |name: &'static str| [Key("files"), Key("inputs"), Index(i), Key(name)];
        let mut patterns = |name: &'static str, list: &[String]| -> Vec<glob::Pattern> {
            list.iter()
                .filter_map(|p| match glob::Pattern::new(p) {
                    Ok(pattern) if Path::new(p).is_absolute() => Some(pattern),
                    Ok(_) => {
                        errors.push(format!(
                            "{}: {p:?} must be an absolute path",
                            at(text, &key(name), &path(name))
                        ));
                        None
                    }
                    Err(e) => {
                        errors.push(format!(
                            "{}: {p:?} is not a glob: {e}",
                            at(text, &key(name), &path(name))
                        ));
                        None
                    }
                })
                .collect()
        };
        let include = patterns("include", &input.include);
        let exclude = patterns("exclude", &input.exclude);
        if input.include.is_empty() {
            errors.push(format!(
                "{}: at least one glob is needed",
                at(
                    text,
                    &key("include"),
                    &[Key("files"), Key("inputs"), Index(i)]
                )
            ));
        }
        let start_at = match input.start_at.as_deref() {
            None | Some("end") => StartAt::End,
            Some("beginning") => StartAt::Beginning,
            Some(other) => {
                errors.push(format!(
                    "{}: {other:?} is not one of beginning, end",
                    at(text, &key("start_at"), &path("start_at"))
                ));
                StartAt::End
            }
        };
        let encoding = match input.encoding.as_deref() {
            None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
            Some("latin1") | Some("iso-8859-1") => Encoding::Latin1,
            Some(other) => {
                errors.push(format!(
                    "{}: {other:?} is not one of utf-8, latin1",
                    at(text, &key("encoding"), &path("encoding"))
                ));
                Encoding::Utf8
            }
        };
        let max_line_bytes = input.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
        if !(16..=batch_max_bytes.max(1024)).contains(&max_line_bytes) {
            errors.push(format!(
                "{}: must be between 16 and exporter.batch_max_bytes ({batch_max_bytes})",
                at(text, &key("max_line_bytes"), &path("max_line_bytes"))
            ));
        }
        let processing = crate::process::build(
            crate::process::InputProcessingFile {
                multiline: input.multiline,
                parse: input.parse,
                severity_field: input.severity_field,
                timestamp_field: input.timestamp_field,
                message_field: input.message_field,
                json_max_depth: input.json_max_depth,
                json_max_attributes: input.json_max_attributes,
                redact: input.redact,
            },
            &global_redact,
            max_line_bytes,
            &|name| {
                let first = name.split(['.', '[']).next().unwrap_or(name);
                at(
                    text,
                    &key(name),
                    &[Key("files"), Key("inputs"), Index(i), Key(first)],
                )
            },
            &mut errors,
        );
        inputs.push(FileInput {
            include,
            exclude,
            start_at,
            encoding,
            max_line_bytes,
            attributes: input.attributes,
            processing,
        });
    }
    let mut listen =
        |key: &'static str, value: Option<String>, default: &str| match value.as_deref() {
            Some("off") => None,
            other => {
                let v = other.unwrap_or(default);
                match v.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        errors.push(format!(
                            "{}: {v:?} is not a socket address (host:port) or off: {e}",
                            at(
                                text,
                                &format!("receivers.otlp.{key}"),
                                &[Key("receivers"), Key("otlp"), Key(key)]
                            )
                        ));
                        None
                    }
                }
            }
        };
    let receiver = ReceiverConfig {
        grpc: listen("grpc", f.receivers.otlp.grpc, DEFAULT_OTLP_GRPC_LISTEN),
        http: listen("http", f.receivers.otlp.http, DEFAULT_OTLP_HTTP_LISTEN),
        max_request_bytes: f
            .receivers
            .otlp
            .max_request_bytes
            .unwrap_or(DEFAULT_RECEIVER_MAX_REQUEST_BYTES),
    };
    if !(1024..=256 * 1024 * 1024).contains(&receiver.max_request_bytes) {
        errors.push(format!(
            "{}: must be between 1024 and 268435456",
            at(
                text,
                "receivers.otlp.max_request_bytes",
                &[Key("receivers"), Key("otlp"), Key("max_request_bytes")]
            )
        ));
    }
    let scrape_targets = scrape_targets(f.scrape_configs, text, &mut errors);
    let journald = f.journald.and_then(|j| {
        let at_key =
            |k: &'static str| at(text, &format!("journald.{k}"), &[Key("journald"), Key(k)]);
        crate::journald::validate(j, &at_key, &mut errors)
    });
    let max_memory_bytes = match f.limits.max_memory_mib {
        None => None,
        Some(mib) if (MIN_MAX_MEMORY_MIB..=1024 * 1024).contains(&mib) => Some(mib << 20),
        Some(_) => {
            errors.push(format!(
                "{}: must be between {MIN_MAX_MEMORY_MIB} and 1048576",
                at(
                    text,
                    "limits.max_memory_mib",
                    &[Key("limits"), Key("max_memory_mib")]
                )
            ));
            None
        }
    };
    let control = f
        .control
        .and_then(|c| crate::control::ControlConfig::validate(c, &mut errors));
    if !errors.is_empty() {
        return Err(ConfigError(errors));
    }
    Ok(Config {
        redact: global_redact,
        receiver,
        scrape_targets,
        journald,
        max_memory_bytes,
        control,
        state_dir: f
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        log_format,
        health_listen,
        resource_attributes: f.resource_attributes,
        exporter: ExporterConfig {
            endpoint,
            token,
            compression,
            compression_level,
            batch_max_records,
            batch_max_bytes,
            request_timeout,
            retry_initial,
            retry_max: retry_max.max(retry_initial),
            tls,
            enrollment,
        },
        queue_max_bytes,
        queue_when_full,
        poll_interval,
        rotate_wait,
        inputs,
        host_metrics_interval: if f.host_metrics.enabled.unwrap_or(true) {
            Some(host_interval)
        } else {
            None
        },
    })
}

/// Validates `scrape_configs` into one [`ScrapeTarget`] per target, Prometheus's rules:
/// unique job names, `scrape_timeout` not above `scrape_interval`, label names valid and
/// not reserved (`__`), targets as `host:port`.
fn scrape_targets(
    configs: Vec<ScrapeFile>,
    text: &str,
    errors: &mut Vec<String>,
) -> Vec<ScrapeTarget> {
    use Step::{Index, Key};
    let mut out = Vec::new();
    let mut jobs = std::collections::BTreeSet::new();
    for (i, c) in configs.into_iter().enumerate() {
        let key = |name: &str| format!("scrape_configs[{i}].{name}");
        let path = |name: &'static str| [Key("scrape_configs"), Index(i), Key(name)];
        let here = |name: &'static str| at(text, &key(name), &path(name));
        let job = match c.job_name {
            Some(j) if !j.is_empty() => {
                if !jobs.insert(j.clone()) {
                    errors.push(format!("{}: {j:?} is used twice", here("job_name")));
                }
                j
            }
            _ => {
                errors.push(format!(
                    "{}: is required",
                    at(text, &key("job_name"), &[Key("scrape_configs"), Index(i)])
                ));
                String::new()
            }
        };
        let mut duration = |name: &'static str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_string());
            match parse_duration(&value) {
                Ok(d) if d > Duration::ZERO => d,
                Ok(_) => {
                    errors.push(format!("{}: must be more than 0", here(name)));
                    Duration::from_secs(1)
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", here(name)));
                    Duration::from_secs(1)
                }
            }
        };
        let interval = duration(
            "scrape_interval",
            c.scrape_interval,
            DEFAULT_SCRAPE_INTERVAL,
        );
        let timeout_set = c.scrape_timeout.is_some();
        let mut timeout = duration("scrape_timeout", c.scrape_timeout, DEFAULT_SCRAPE_TIMEOUT);
        if timeout > interval {
            if timeout_set {
                errors.push(format!(
                    "{}: must not be longer than scrape_interval ({interval:?})",
                    here("scrape_timeout")
                ));
            } else {
                // Prometheus: the default timeout shrinks to a shorter interval.
                timeout = interval;
            }
        }
        let metrics_path = c
            .metrics_path
            .unwrap_or_else(|| DEFAULT_METRICS_PATH.to_string());
        if !metrics_path.starts_with('/') || metrics_path.contains(['?', '#', ' ']) {
            errors.push(format!(
                "{}: {metrics_path:?} must be a path starting with / (put query parameters in params)",
                here("metrics_path")
            ));
        }
        match c.scheme.as_deref() {
            None | Some("http") => {}
            Some("https") => errors.push(format!(
                "{}: https is not supported by this agent yet; use http",
                here("scheme")
            )),
            Some(other) => errors.push(format!("{}: {other:?} is not http", here("scheme"))),
        }
        let query = if c.params.is_empty() {
            String::new()
        } else {
            let pairs: Vec<(&str, &str)> = c
                .params
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
                .collect();
            match serde_urlencoded::to_string(&pairs) {
                Ok(q) => format!("?{q}"),
                Err(e) => {
                    errors.push(format!("{}: {e}", here("params")));
                    String::new()
                }
            }
        };
        let body_limit = c
            .body_size_limit_bytes
            .unwrap_or(DEFAULT_SCRAPE_BODY_LIMIT_BYTES);
        if !(1024..=256 * 1024 * 1024).contains(&body_limit) {
            errors.push(format!(
                "{}: must be between 1024 and 268435456",
                here("body_size_limit_bytes")
            ));
        }
        if c.static_configs.is_empty() {
            errors.push(format!(
                "{}: at least one static config with targets is needed",
                at(
                    text,
                    &key("static_configs"),
                    &[Key("scrape_configs"), Index(i)]
                )
            ));
        }
        for (j, sc) in c.static_configs.into_iter().enumerate() {
            let skey = |name: &str| format!("scrape_configs[{i}].static_configs[{j}].{name}");
            let spath = |name: &'static str| {
                [
                    Key("scrape_configs"),
                    Index(i),
                    Key("static_configs"),
                    Index(j),
                    Key(name),
                ]
            };
            for name in sc.labels.keys() {
                if !vantage_proto::prom::names::is_valid_label_name(name) || name.starts_with("__")
                {
                    errors.push(format!(
                        "{}: {name:?} is not a valid label name (letters, digits, _; not starting with __)",
                        at(text, &skey("labels"), &spath("labels"))
                    ));
                }
            }
            if sc.targets.is_empty() {
                errors.push(format!(
                    "{}: at least one target is needed",
                    at(text, &skey("targets"), &spath("targets"))
                ));
            }
            for target in sc.targets {
                let ok = target
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                    && !target.contains(['/', '?', '#', ' ', '@']);
                if !ok {
                    errors.push(format!(
                        "{}: {target:?} is not host:port",
                        at(text, &skey("targets"), &spath("targets"))
                    ));
                    continue;
                }
                out.push(ScrapeTarget {
                    job: job.clone(),
                    url: format!("http://{target}{metrics_path}{query}"),
                    address: target,
                    interval,
                    timeout,
                    honor_labels: c.honor_labels.unwrap_or(false),
                    body_limit,
                    labels: sc.labels.clone(),
                });
            }
        }
    }
    out
}

/// The `http` crate's URI type, named for what it checks here.
mod http_uri {
    pub(crate) use tonic::codegen::http::Uri;
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

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &BTreeMap::new(), &FlagOverrides::default())
    }

    #[test]
    fn defaults_without_any_input() {
        let c = Config::load(None, &BTreeMap::new(), &FlagOverrides::default()).unwrap();
        assert_eq!(c.exporter.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.exporter.compression, Compression::Zstd);
        assert_eq!(c.exporter.compression_level, 1);
        assert_eq!(c.queue_max_bytes, 1 << 30);
        assert_eq!(c.queue_when_full, FullPolicy::Block);
        assert_eq!(c.host_metrics_interval, Some(Duration::from_secs(10)));
        assert_eq!(c.health_listen.unwrap().port(), 13133);
        assert!(c.inputs.is_empty());
        assert!(c.exporter.token.is_none());
    }

    #[test]
    fn quick_start_flags_and_token_from_env() {
        let flags = FlagOverrides {
            collector: Some("http://10.0.0.1:4317".into()),
            tail: vec!["/var/log/*.log".into(), "/srv/app/*.log".into()],
            state_dir: Some("/tmp/s".into()),
            host_metrics_interval: Some("2s".into()),
            ..Default::default()
        };
        let c = Config::load(None, &env(&[("VANTAGE_AGENT_TOKEN", "123")]), &flags).unwrap();
        assert_eq!(c.exporter.endpoint, "http://10.0.0.1:4317");
        assert_eq!(
            c.exporter.token.as_ref().unwrap().expose(),
            "123",
            "kept as text"
        );
        assert_eq!(c.inputs.len(), 1);
        assert_eq!(c.inputs[0].include.len(), 2);
        assert_eq!(c.inputs[0].start_at, StartAt::End);
        assert_eq!(c.host_metrics_interval, Some(Duration::from_secs(2)));
        let off = FlagOverrides {
            host_metrics_interval: Some("off".into()),
            ..Default::default()
        };
        assert!(
            Config::load(None, &BTreeMap::new(), &off)
                .unwrap()
                .host_metrics_interval
                .is_none()
        );
    }

    #[test]
    fn the_token_never_prints() {
        let flags = FlagOverrides {
            token: Some("s3cr3t-value".into()),
            ..Default::default()
        };
        let c = Config::load(None, &BTreeMap::new(), &flags).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_file_with_every_section() {
        let c = load_text(
            "state_dir: /s\nresource_attributes:\n  deployment.environment: prod\nexporter:\n  endpoint: http://c:4317\n  compression: gzip\nqueue:\n  max_bytes: 8388608\n  when_full: drop_oldest\nfiles:\n  poll_interval: 250ms\n  inputs:\n    - include: [/var/log/*.log]\n      exclude: [/var/log/secret.log]\n      start_at: beginning\n      encoding: latin1\n      attributes:\n        team: core\nhost_metrics:\n  enabled: false\n",
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert_eq!(c.exporter.compression, Compression::Gzip);
        assert_eq!(c.queue_when_full, FullPolicy::DropOldest);
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.inputs[0].encoding, Encoding::Latin1);
        assert_eq!(c.inputs[0].start_at, StartAt::Beginning);
        assert_eq!(c.inputs[0].attributes["team"], "core");
        assert!(c.host_metrics_interval.is_none());
    }

    #[test]
    fn compression_levels_are_checked_per_algorithm() {
        let c = load_text("exporter:\n  compression: gzip\n  compression_level: 9\n").unwrap();
        assert_eq!(
            (c.exporter.compression, c.exporter.compression_level),
            (Compression::Gzip, 9)
        );
        let c = load_text("exporter:\n  compression_level: 19\n").unwrap();
        assert_eq!(
            (c.exporter.compression, c.exporter.compression_level),
            (Compression::Zstd, 19)
        );
        for (text, line) in [
            (
                "exporter:\n  compression: gzip\n  compression_level: 10\n",
                "line 3",
            ),
            ("exporter:\n  compression_level: 0\n", "line 2"),
            ("exporter:\n  compression_level: 23\n", "line 2"),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(
                err.contains("exporter.compression_level") && err.contains(line),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let err = load_text("exporter:\n  endpoint: http://c:4317\n  compresion: zstd\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("compresion") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn all_errors_at_once_with_paths_and_lines() {
        let err = load_text(
            "log_format: xml\nexporter:\n  endpoint: nope\n  request_timeout: 10 seconds\nfiles:\n  inputs:\n    - include: [/var/log/*.log]\n    - include: [relative/*.log]\n      encoding: utf-16\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.0.len(), 5, "{msg}");
        assert!(msg.contains("log_format (line 1)"), "{msg}");
        assert!(msg.contains("exporter.endpoint (line 3)"), "{msg}");
        assert!(msg.contains("exporter.request_timeout (line 4)"), "{msg}");
        assert!(msg.contains("files.inputs[1].include (line 8)"), "{msg}");
        assert!(msg.contains("files.inputs[1].encoding (line 9)"), "{msg}");
    }

    #[test]
    fn env_overrides_by_path() {
        let e = env(&[
            ("VANTAGE_AGENT_QUEUE__MAX_BYTES", "16777216"),
            ("VANTAGE_AGENT_HEALTH_LISTEN", "off"),
            ("VANTAGE_DATA_DIR", "/collectors/not/ours"),
        ]);
        let c = Config::load(None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(c.queue_max_bytes, 16 * 1024 * 1024);
        assert!(c.health_listen.is_none());
    }

    #[test]
    fn receiver_defaults_off_and_flags() {
        let c = Config::load(None, &BTreeMap::new(), &FlagOverrides::default()).unwrap();
        assert_eq!(c.receiver.grpc.unwrap().to_string(), "127.0.0.1:4317");
        assert_eq!(c.receiver.http.unwrap().to_string(), "127.0.0.1:4318");
        assert_eq!(c.receiver.max_request_bytes, 16 << 20);
        assert!(c.scrape_targets.is_empty());
        let flags = FlagOverrides {
            otlp_grpc_listen: Some("off".into()),
            otlp_http_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = Config::load(None, &BTreeMap::new(), &flags).unwrap();
        assert!(c.receiver.grpc.is_none());
        assert_eq!(c.receiver.http.unwrap().port(), 0);
        let e = env(&[("VANTAGE_AGENT_RECEIVERS__OTLP__HTTP", "off")]);
        let c = Config::load(None, &e, &FlagOverrides::default()).unwrap();
        assert!(c.receiver.http.is_none());
        let err = load_text("receivers:\n  otlp:\n    grpc: localhost\n").unwrap_err();
        assert!(
            err.to_string().contains("receivers.otlp.grpc (line 3)"),
            "{err}"
        );
    }

    #[test]
    fn scrape_configs_as_prometheus_writes_them() {
        let c = load_text(
            "scrape_configs:\n  - job_name: node\n    scrape_interval: 15s\n    params:\n      module: [a, b]\n    static_configs:\n      - targets: [\"127.0.0.1:9100\", \"10.0.0.2:9100\"]\n        labels:\n          env: prod\n  - job_name: fast\n    scrape_interval: 5s\n    metrics_path: /m\n    honor_labels: true\n    static_configs:\n      - targets: [\"h:1\"]\n",
        )
        .unwrap();
        let t = &c.scrape_targets;
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].job, "node");
        assert_eq!(t[0].address, "127.0.0.1:9100");
        assert_eq!(t[0].url, "http://127.0.0.1:9100/metrics?module=a&module=b");
        assert_eq!(t[0].interval, Duration::from_secs(15));
        assert_eq!(t[0].timeout, Duration::from_secs(10));
        assert_eq!(t[0].labels["env"], "prod");
        assert!(!t[0].honor_labels);
        assert_eq!(t[2].url, "http://h:1/m");
        assert_eq!(
            t[2].timeout,
            Duration::from_secs(5),
            "default shrinks to the interval"
        );
        assert!(t[2].honor_labels);
        assert_eq!(t[2].body_limit, DEFAULT_SCRAPE_BODY_LIMIT_BYTES);
    }

    #[test]
    fn scrape_config_errors_name_key_and_line() {
        let err = load_text(
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n    scheme: https\n    static_configs:\n      - targets: [\"nohost\"]\n        labels:\n          __x: y\n  - job_name: a\n    static_configs: []\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.0.len(), 6, "{msg}");
        assert!(
            msg.contains("scrape_configs[0].scrape_timeout (line 4)"),
            "{msg}"
        );
        assert!(msg.contains("scrape_configs[0].scheme (line 5)"), "{msg}");
        assert!(
            msg.contains("scrape_configs[0].static_configs[0].targets (line 7)"),
            "{msg}"
        );
        assert!(
            msg.contains("scrape_configs[0].static_configs[0].labels (line 8)"),
            "{msg}"
        );
        assert!(
            msg.contains("scrape_configs[1].job_name (line 10)"),
            "{msg}"
        );
        assert!(msg.contains("scrape_configs[1].static_configs"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
