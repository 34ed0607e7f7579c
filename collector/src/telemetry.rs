//! Self-telemetry: every metric the collector exports, named in one place so the
//! README's list can be checked against the code, rendered at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metric names (without the `_total` suffix the encoder adds to counters).
pub mod names {
    /// Records accepted and made durable, by signal.
    pub const INGEST_RECORDS: &str = "vantage_ingest_records";
    /// Request bytes (as received, decompressed) accepted, by signal.
    pub const INGEST_BYTES: &str = "vantage_ingest_bytes";
    /// Records rejected inside otherwise accepted requests, by signal and reason.
    pub const INGEST_REJECTED_RECORDS: &str = "vantage_ingest_rejected_records";
    /// Export requests by signal, protocol and outcome.
    pub const INGEST_REQUESTS: &str = "vantage_ingest_requests";
    /// Bytes of WAL segments on disk, by signal.
    pub const WAL_BYTES: &str = "vantage_wal_bytes";
    /// Groups of exports the WAL refused because a write or fsync failed, by signal.
    pub const WAL_WRITE_FAILURES: &str = "vantage_wal_write_failures";
    /// Duration of each WAL fsync (one per commit group).
    pub const WAL_FSYNC_SECONDS: &str = "vantage_wal_fsync_duration_seconds";
    /// Searchable log documents.
    pub const LOG_INDEX_DOCS: &str = "vantage_log_index_docs";
    /// Duration of each log index commit.
    pub const LOG_INDEX_COMMIT_SECONDS: &str = "vantage_log_index_commit_duration_seconds";
    /// Failures of the log indexing thread: undecodable batches, failed adds, commits and retries.
    pub const LOG_INDEX_ERRORS: &str = "vantage_log_index_errors";
    /// Due log index commits skipped because no one searched (see `freshness`).
    pub const LOG_INDEX_COMMITS_SKIPPED: &str = "vantage_log_index_commits_skipped";
    /// Query API request duration, by endpoint.
    pub const QUERY_SECONDS: &str = "vantage_query_duration_seconds";
    /// Whether WAL replay has finished and ingest is open (1) or not (0).
    pub const READY: &str = "vantage_ready";
    /// Series in the metrics store's in-memory head.
    pub const METRICS_HEAD_SERIES: &str = "vantage_metrics_head_series";
    /// Samples in the metrics store's in-memory head.
    pub const METRICS_HEAD_SAMPLES: &str = "vantage_metrics_head_samples";
    /// Blocks of the metrics store on disk.
    pub const METRICS_BLOCKS: &str = "vantage_metrics_blocks";
    /// Bytes of the metrics store's blocks on disk.
    pub const METRICS_DISK_BYTES: &str = "vantage_metrics_disk_bytes";
    /// Metric WAL records the store could not read back (corruption or a bug).
    pub const METRICS_APPLY_ERRORS: &str = "vantage_metrics_apply_errors";
    /// Duration of each metrics maintenance pass (head cut, compaction, retention).
    pub const METRICS_MAINTENANCE_SECONDS: &str = "vantage_metrics_maintenance_duration_seconds";
    /// PromQL queries by outcome (`ok` or the Prometheus error type).
    pub const PROMQL_QUERIES: &str = "vantage_promql_queries";
    /// Log searches by outcome: `ok`, `invalid` (a 400), `timeout`, `cancelled` (the
    /// client went away), `busy` (no slot within the timeout), `error`.
    pub const LOG_SEARCHES: &str = "vantage_log_searches";
    /// Log searches running now (at most `logs.max_concurrent_searches`).
    pub const LOG_SEARCHES_RUNNING: &str = "vantage_log_searches_running";
    /// Log searches waiting for a slot now.
    pub const LOG_SEARCHES_WAITING: &str = "vantage_log_searches_waiting";
    /// Live tails open now (all tenants).
    pub const LOG_TAILS_OPEN: &str = "vantage_log_tails_open";
    /// Searchable spans in the trace store.
    pub const TRACE_INDEX_SPANS: &str = "vantage_trace_index_spans";
    /// Duration of each trace index commit.
    pub const TRACE_INDEX_COMMIT_SECONDS: &str = "vantage_trace_index_commit_duration_seconds";
    /// Failures of the trace indexing thread (see `LOG_INDEX_ERRORS`).
    pub const TRACE_INDEX_ERRORS: &str = "vantage_trace_index_errors";
    /// Rule evaluations, by tenant and group (Prometheus's `prometheus_rule_evaluations_total`).
    pub const RULE_EVALUATIONS: &str = "vantage_rule_evaluations";
    /// Rule evaluations that failed (`prometheus_rule_evaluation_failures_total`).
    pub const RULE_EVALUATION_FAILURES: &str = "vantage_rule_evaluation_failures";
    /// Group evaluations skipped because the previous one overran the interval
    /// (`prometheus_rule_group_iterations_missed_total`).
    pub const RULE_GROUP_ITERATIONS_MISSED: &str = "vantage_rule_group_iterations_missed";
    /// Duration of the group's last evaluation (`prometheus_rule_group_last_duration_seconds`).
    pub const RULE_GROUP_LAST_DURATION_SECONDS: &str = "vantage_rule_group_last_duration_seconds";
    /// Exports answered as replays of a stored batch (`x-vantage-batch-id`), not ingested.
    pub const INGEST_DUPLICATE_BATCHES: &str = "vantage_ingest_duplicate_batches";
    /// Batch ids in the replay window, all tenants.
    pub const INGEST_DEDUP_IDS: &str = "vantage_ingest_dedup_ids";
}

/// Labels of rule-group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleGroupLabels {
    /// The tenant owning the group.
    pub tenant: String,
    /// `<file or namespace>;<group>`, as Prometheus's `rule_group` label.
    pub rule_group: String,
}

/// The rule evaluator's metrics.
pub struct RuleMetrics {
    /// See [`names::RULE_EVALUATIONS`].
    pub evaluations: Family<RuleGroupLabels, Counter>,
    /// See [`names::RULE_EVALUATION_FAILURES`].
    pub failures: Family<RuleGroupLabels, Counter>,
    /// See [`names::RULE_GROUP_ITERATIONS_MISSED`].
    pub iterations_missed: Family<RuleGroupLabels, Counter>,
    /// See [`names::RULE_GROUP_LAST_DURATION_SECONDS`].
    pub last_duration_seconds: Family<RuleGroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl RuleMetrics {
    fn register(registry: &mut Registry) -> RuleMetrics {
        let m = RuleMetrics {
            evaluations: Family::default(),
            failures: Family::default(),
            iterations_missed: Family::default(),
            last_duration_seconds: Family::default(),
        };
        registry.register(
            names::RULE_EVALUATIONS,
            "Rule evaluations",
            m.evaluations.clone(),
        );
        registry.register(
            names::RULE_EVALUATION_FAILURES,
            "Rule evaluations that failed",
            m.failures.clone(),
        );
        registry.register(
            names::RULE_GROUP_ITERATIONS_MISSED,
            "Rule group evaluations missed because the previous one overran",
            m.iterations_missed.clone(),
        );
        registry.register(
            names::RULE_GROUP_LAST_DURATION_SECONDS,
            "Duration of the last rule group evaluation",
            m.last_duration_seconds.clone(),
        );
        m
    }
}

/// Labels of PromQL query and log search counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, or what went wrong (PromQL: the Prometheus error type, `bad_data`,
    /// `timeout`, ...; log searches: see [`names::LOG_SEARCHES`]).
    pub outcome: &'static str,
}

/// Labels of per-signal metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// `logs`, `metrics` or `traces`.
    pub signal: &'static str,
}

/// Labels of rejected-record counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `logs`, `metrics` or `traces`.
    pub signal: &'static str,
    /// Short machine-readable reason.
    pub reason: &'static str,
}

/// Labels of export request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `logs`, `metrics` or `traces`.
    pub signal: &'static str,
    /// `grpc` or `http`.
    pub protocol: &'static str,
    /// `ok`, or the error code name.
    pub outcome: &'static str,
}

/// Labels of query latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The API route.
    pub endpoint: &'static str,
}

/// All of the collector's own metrics.
pub struct Telemetry {
    registry: Registry,
    /// See [`names::INGEST_RECORDS`].
    pub ingest_records: Family<SignalLabels, Counter>,
    /// See [`names::INGEST_BYTES`].
    pub ingest_bytes: Family<SignalLabels, Counter>,
    /// See [`names::INGEST_REJECTED_RECORDS`].
    pub rejected_records: Family<RejectLabels, Counter>,
    /// See [`names::INGEST_REQUESTS`].
    pub requests: Family<RequestLabels, Counter>,
    /// See [`names::WAL_BYTES`].
    pub wal_bytes: Family<SignalLabels, Gauge>,
    /// See [`names::WAL_WRITE_FAILURES`]; brought up to the WAL's own count at each scrape.
    pub wal_write_failures: Family<SignalLabels, Counter>,
    /// See [`names::WAL_FSYNC_SECONDS`].
    pub wal_fsync_seconds: Histogram,
    /// See [`names::LOG_INDEX_DOCS`].
    pub log_index_docs: Gauge,
    /// See [`names::LOG_INDEX_COMMIT_SECONDS`].
    pub log_index_commit_seconds: Histogram,
    /// See [`names::LOG_INDEX_ERRORS`].
    pub log_index_errors: Counter,
    /// See [`names::LOG_INDEX_COMMITS_SKIPPED`].
    pub log_index_commits_skipped: Counter,
    /// See [`names::QUERY_SECONDS`].
    pub query_seconds: Family<EndpointLabels, Histogram>,
    /// See [`names::METRICS_HEAD_SERIES`].
    pub metrics_head_series: Gauge,
    /// See [`names::METRICS_HEAD_SAMPLES`].
    pub metrics_head_samples: Gauge,
    /// See [`names::METRICS_BLOCKS`].
    pub metrics_blocks: Gauge,
    /// See [`names::METRICS_DISK_BYTES`].
    pub metrics_disk_bytes: Gauge,
    /// See [`names::METRICS_APPLY_ERRORS`].
    pub metrics_apply_errors: Counter,
    /// See [`names::METRICS_MAINTENANCE_SECONDS`].
    pub metrics_maintenance_seconds: Histogram,
    /// See [`names::PROMQL_QUERIES`].
    pub promql_queries: Family<OutcomeLabels, Counter>,
    /// See [`names::LOG_SEARCHES`].
    pub log_searches: Family<OutcomeLabels, Counter>,
    /// See [`names::LOG_SEARCHES_RUNNING`].
    pub log_searches_running: Gauge,
    /// See [`names::LOG_SEARCHES_WAITING`].
    pub log_searches_waiting: Gauge,
    /// See [`names::LOG_TAILS_OPEN`].
    pub log_tails_open: Gauge,
    /// See [`names::READY`].
    pub ready: Gauge,
    /// See [`names::TRACE_INDEX_SPANS`].
    pub trace_index_spans: Gauge,
    /// See [`names::TRACE_INDEX_COMMIT_SECONDS`].
    pub trace_index_commit_seconds: Histogram,
    /// See [`names::TRACE_INDEX_ERRORS`].
    pub trace_index_errors: Counter,
    /// Rule evaluation.
    pub rules: RuleMetrics,
    /// The notifier's metrics.
    pub notify: NotifyMetrics,
    /// Configuration reloads.
    pub config: ConfigMetrics,
    /// The OpAMP server's metrics.
    pub opamp: crate::opamp::metrics::OpampMetrics,
    /// Replay suppression (x-vantage-batch-id).
    pub dedup: crate::ingest::dedup::DedupMetrics,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Telemetry {
    /// What the log indexing thread records.
    pub fn log_index_meters(&self) -> crate::ingest::index_thread::Meters {
        crate::ingest::index_thread::Meters {
            errors: self.log_index_errors.clone(),
            commit_seconds: self.log_index_commit_seconds.clone(),
            docs: self.log_index_docs.clone(),
            commits_skipped: self.log_index_commits_skipped.clone(),
        }
    }

    /// What the trace indexing thread records.
    pub fn trace_index_meters(&self) -> crate::ingest::index_thread::Meters {
        crate::ingest::index_thread::Meters {
            errors: self.trace_index_errors.clone(),
            commit_seconds: self.trace_index_commit_seconds.clone(),
            docs: self.trace_index_spans.clone(),
            // The span store commits every interval; never counted.
            commits_skipped: Counter::default(),
        }
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let ingest_records = Family::<SignalLabels, Counter>::default();
        let ingest_bytes = Family::<SignalLabels, Counter>::default();
        let rejected_records = Family::<RejectLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let wal_bytes = Family::<SignalLabels, Gauge>::default();
        let wal_write_failures = Family::<SignalLabels, Counter>::default();
        let wal_fsync_seconds = latency_histogram();
        let log_index_docs = Gauge::default();
        let log_index_commit_seconds = latency_histogram();
        let log_index_errors = Counter::default();
        let log_index_commits_skipped = Counter::default();
        let query_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let ready = Gauge::default();
        let metrics_head_series = Gauge::default();
        let metrics_head_samples = Gauge::default();
        let metrics_blocks = Gauge::default();
        let metrics_disk_bytes = Gauge::default();
        let metrics_apply_errors = Counter::default();
        let metrics_maintenance_seconds = latency_histogram();
        let promql_queries = Family::<OutcomeLabels, Counter>::default();
        let log_searches = Family::<OutcomeLabels, Counter>::default();
        let log_searches_running = Gauge::default();
        let log_searches_waiting = Gauge::default();
        let log_tails_open = Gauge::default();
        let rules = RuleMetrics::register(&mut registry);
        registry.register(
            names::METRICS_HEAD_SERIES,
            "Series in the metrics head",
            metrics_head_series.clone(),
        );
        registry.register(
            names::METRICS_HEAD_SAMPLES,
            "Samples in the metrics head",
            metrics_head_samples.clone(),
        );
        registry.register(
            names::METRICS_BLOCKS,
            "Metrics blocks on disk",
            metrics_blocks.clone(),
        );
        registry.register(
            names::METRICS_DISK_BYTES,
            "Bytes of metrics blocks on disk",
            metrics_disk_bytes.clone(),
        );
        registry.register(
            names::METRICS_APPLY_ERRORS,
            "Metric WAL records that could not be applied",
            metrics_apply_errors.clone(),
        );
        registry.register(
            names::METRICS_MAINTENANCE_SECONDS,
            "Duration of metrics maintenance passes",
            metrics_maintenance_seconds.clone(),
        );
        registry.register(
            names::PROMQL_QUERIES,
            "PromQL queries by outcome",
            promql_queries.clone(),
        );
        registry.register(
            names::LOG_SEARCHES,
            "Log searches by outcome",
            log_searches.clone(),
        );
        registry.register(
            names::LOG_SEARCHES_RUNNING,
            "Log searches running",
            log_searches_running.clone(),
        );
        registry.register(
            names::LOG_SEARCHES_WAITING,
            "Log searches waiting for a slot",
            log_searches_waiting.clone(),
        );
        registry.register(
            names::LOG_TAILS_OPEN,
            "Live tails open",
            log_tails_open.clone(),
        );
        registry.register(
            names::INGEST_RECORDS,
            "Records accepted and made durable",
            ingest_records.clone(),
        );
        registry.register(
            names::INGEST_BYTES,
            "Request bytes accepted (decompressed)",
            ingest_bytes.clone(),
        );
        registry.register(
            names::INGEST_REJECTED_RECORDS,
            "Records rejected inside accepted requests",
            rejected_records.clone(),
        );
        registry.register(
            names::INGEST_REQUESTS,
            "Export requests by outcome",
            requests.clone(),
        );
        registry.register(
            names::WAL_BYTES,
            "Bytes of WAL segments on disk",
            wal_bytes.clone(),
        );
        registry.register(
            names::WAL_WRITE_FAILURES,
            "Groups of exports the WAL refused because a write or fsync failed (none acknowledged)",
            wal_write_failures.clone(),
        );
        registry.register(
            names::WAL_FSYNC_SECONDS,
            "Duration of WAL fsyncs",
            wal_fsync_seconds.clone(),
        );
        registry.register(
            names::LOG_INDEX_DOCS,
            "Searchable log documents",
            log_index_docs.clone(),
        );
        registry.register(
            names::LOG_INDEX_COMMIT_SECONDS,
            "Duration of log index commits",
            log_index_commit_seconds.clone(),
        );
        registry.register(
            names::LOG_INDEX_ERRORS,
            "Failures of the log indexer: batches it could not decode, failed adds and commits (a full disk), failed retries",
            log_index_errors.clone(),
        );
        registry.register(
            names::LOG_INDEX_COMMITS_SKIPPED,
            "Due log index commits skipped while no one searched (the WAL holds the records; the next search commits)",
            log_index_commits_skipped.clone(),
        );
        registry.register(
            names::QUERY_SECONDS,
            "Query API request duration",
            query_seconds.clone(),
        );
        registry.register(
            names::READY,
            "1 once WAL replay is done and ingest is open",
            ready.clone(),
        );
        let trace_index_spans = Gauge::default();
        let trace_index_commit_seconds = latency_histogram();
        let trace_index_errors = Counter::default();
        registry.register(
            names::TRACE_INDEX_SPANS,
            "Searchable spans",
            trace_index_spans.clone(),
        );
        registry.register(
            names::TRACE_INDEX_COMMIT_SECONDS,
            "Duration of trace index commits",
            trace_index_commit_seconds.clone(),
        );
        registry.register(
            names::TRACE_INDEX_ERRORS,
            "Failures of the trace indexer: batches it could not decode, failed adds and commits (a full disk), failed retries",
            trace_index_errors.clone(),
        );
        let notify = NotifyMetrics::register(&mut registry);
        let config = ConfigMetrics::register(&mut registry);
        let opamp = crate::opamp::metrics::OpampMetrics::register(&mut registry);
        let dedup = crate::ingest::dedup::DedupMetrics::register(&mut registry);
        Telemetry {
            config,
            dedup,
            notify,
            opamp,
            registry,
            ingest_records,
            ingest_bytes,
            rejected_records,
            requests,
            wal_bytes,
            wal_write_failures,
            wal_fsync_seconds,
            log_index_docs,
            log_index_commit_seconds,
            log_index_errors,
            log_index_commits_skipped,
            query_seconds,
            ready,
            metrics_head_series,
            metrics_head_samples,
            metrics_blocks,
            metrics_disk_bytes,
            metrics_apply_errors,
            metrics_maintenance_seconds,
            promql_queries,
            log_searches,
            log_searches_running,
            log_searches_waiting,
            log_tails_open,
            trace_index_spans,
            trace_index_commit_seconds,
            trace_index_errors,
            rules,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

// ---- Alerting: notifications -------------------------------------------------------

/// Names of the notifier's metrics.
pub mod notify_names {
    /// Notification attempts by integration type and outcome (`delivered`, `retried`,
    /// `failed`, `dropped`).
    pub const NOTIFICATIONS: &str = "vantage_notifications";
    /// Duration of each delivery attempt.
    pub const NOTIFICATION_LATENCY_SECONDS: &str = "vantage_notification_latency_seconds";
}

/// Labels of notification counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `webhook`, `email`, `slack`, `msteams`, `sms` or `alertmanager`.
    pub receiver_type: &'static str,
    /// `delivered`, `retried`, `failed` or `dropped`.
    pub outcome: &'static str,
}

/// The notifier's metrics.
pub struct NotifyMetrics {
    /// See [`notify_names::NOTIFICATIONS`].
    pub notifications: Family<NotificationLabels, Counter>,
    /// See [`notify_names::NOTIFICATION_LATENCY_SECONDS`].
    pub latency_seconds: Histogram,
}

impl NotifyMetrics {
    fn register(registry: &mut Registry) -> NotifyMetrics {
        let notifications = Family::<NotificationLabels, Counter>::default();
        // 1 ms to ~33 s: SMTP and chat webhooks are slow, timeouts are 15 s.
        let latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            notify_names::NOTIFICATIONS,
            "Notification attempts by integration type and outcome",
            notifications.clone(),
        );
        registry.register(
            notify_names::NOTIFICATION_LATENCY_SECONDS,
            "Duration of notification delivery attempts",
            latency_seconds.clone(),
        );
        NotifyMetrics {
            notifications,
            latency_seconds,
        }
    }
}

// ---- Configuration reloads ---------------------------------------------------------

/// Names of the reload metrics, as Prometheus names its own.
pub mod config_names {
    /// Reloads by result (`success`, `failure`).
    pub const CONFIG_RELOADS: &str = "vantage_config_reloads";
    /// Whether the last reload succeeded (1) or was refused (0)
    /// (`prometheus_config_last_reload_successful`).
    pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "vantage_config_last_reload_successful";
    /// When the configuration was last loaded successfully, start included
    /// (`prometheus_config_last_reload_success_timestamp_seconds`).
    pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
        "vantage_config_last_reload_success_timestamp_seconds";
}

/// Labels of reload counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The reload metrics.
pub struct ConfigMetrics {
    /// See [`config_names::CONFIG_RELOADS`].
    pub reloads: Family<ReloadLabels, Counter>,
    /// See [`config_names::CONFIG_LAST_RELOAD_SUCCESSFUL`].
    pub last_reload_successful: Gauge,
    /// See [`config_names::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP`].
    pub last_reload_success_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ConfigMetrics {
    fn register(registry: &mut Registry) -> ConfigMetrics {
        let m = ConfigMetrics {
            reloads: Family::default(),
            last_reload_successful: Gauge::default(),
            last_reload_success_timestamp_seconds: Gauge::default(),
        };
        registry.register(
            config_names::CONFIG_RELOADS,
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        registry.register(
            config_names::CONFIG_LAST_RELOAD_SUCCESSFUL,
            "Whether the last configuration reload succeeded",
            m.last_reload_successful.clone(),
        );
        registry.register(
            config_names::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
            "When the configuration was last loaded successfully",
            m.last_reload_success_timestamp_seconds.clone(),
        );
        m
    }
}
