//! `GET /metrics`: the agent's own telemetry in the Prometheus text format, so the
//! collector (or any Prometheus) can scrape the agent like every other exporter.
//!
//! The flat counters of [`Stats`] are the source of truth (`/healthz` shows the same
//! numbers); [`METRICS`] names each of them once, with its type and labels, so the
//! README's list can be checked against this table. A counter added to `Stats` without
//! a row here is still exported, as a gauge named `vantage_agent_<field>`. What `Stats`
//! cannot hold (histograms, per-target figures) lives in [`Extra`], fed by one-line
//! hooks at the places that know it; process RSS and CPU come from `/proc/self`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stats::Stats;

/// Label set of every family here: few labels, known at the call site.
type Labels = Vec<(String, String)>;
/// A gauge of seconds (the queue age).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Whether a [`Stats`] field only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
    /// The field holds a Unix time in milliseconds (0: none); exported as a gauge of the
    /// seconds since then (0 when none), computed when the page is rendered so the age
    /// grows between the events that set the time.
    AgeSince,
}

/// One `Stats` field as a Prometheus series: family name (without `_total`; the encoder
/// adds it to counters), help, type and constant labels.
struct Row {
    stat: &'static str,
    name: &'static str,
    help: &'static str,
    ty: Type,
    labels: &'static [(&'static str, &'static str)],
}

const fn row(
    stat: &'static str,
    name: &'static str,
    help: &'static str,
    ty: Type,
    labels: &'static [(&'static str, &'static str)],
) -> Row {
    Row {
        stat,
        name,
        help,
        ty,
        labels,
    }
}

use Type::{AgeSince as A, Counter as C, Gauge as G};

const READ: &str = "Records read by a source (log lines, samples, OTLP items, journal entries)";
const BATCHES_SENT: &str = "Batches acknowledged by the collector";
const RECEIVER: &str = "Requests to the local OTLP receiver";

/// Every exported name of the agent, the one place they are defined.
const METRICS: &[Row] = &[
    row(
        "lines_read",
        "vantage_agent_records_read",
        READ,
        C,
        &[("source", "file"), ("signal", "logs")],
    ),
    row(
        "scrape_samples",
        "vantage_agent_records_read",
        READ,
        C,
        &[("source", "scrape"), ("signal", "metrics")],
    ),
    row(
        "receiver_items_accepted",
        "vantage_agent_records_read",
        READ,
        C,
        &[("source", "otlp"), ("signal", "all")],
    ),
    row(
        "journald_entries_read",
        "vantage_agent_records_read",
        READ,
        C,
        &[("source", "journald"), ("signal", "logs")],
    ),
    row(
        "log_records_sent",
        "vantage_agent_records_sent",
        "Log records acknowledged by the collector",
        C,
        &[("signal", "logs")],
    ),
    row(
        "log_batches_sent",
        "vantage_agent_batches_sent",
        BATCHES_SENT,
        C,
        &[("signal", "logs")],
    ),
    row(
        "metric_batches_sent",
        "vantage_agent_batches_sent",
        BATCHES_SENT,
        C,
        &[("signal", "metrics")],
    ),
    row(
        "trace_batches_sent",
        "vantage_agent_batches_sent",
        BATCHES_SENT,
        C,
        &[("signal", "traces")],
    ),
    row(
        "export_failed_batches",
        "vantage_agent_batches_failed",
        "Batches the collector refused for good (dropped after logging)",
        C,
        &[],
    ),
    row(
        "export_rejected_records",
        "vantage_agent_records_rejected",
        "Records the collector rejected in a partial success",
        C,
        &[],
    ),
    row(
        "export_retries",
        "vantage_agent_export_retries",
        "Export attempts that failed and were retried",
        C,
        &[],
    ),
    row(
        "queue_dropped_batches",
        "vantage_agent_batches_dropped",
        "Unsent batches deleted from the disk queue by the drop_oldest policy",
        C,
        &[("reason", "queue_full")],
    ),
    row(
        "queue_bytes",
        "vantage_agent_queue_bytes",
        "Bytes of the disk queue on disk",
        G,
        &[],
    ),
    row(
        "queue_batches",
        "vantage_agent_queue_batches",
        "Batches in the disk queue not yet acknowledged",
        G,
        &[],
    ),
    row(
        "queue_oldest_unix_ms",
        "vantage_agent_queue_oldest_age_seconds",
        "Age of the oldest disk-queue batch not yet acknowledged (0: queue empty)",
        A,
        &[],
    ),
    row(
        "queue_full_waits",
        "vantage_agent_queue_full_waits",
        "Times a source waited for disk-queue space under the block policy",
        C,
        &[],
    ),
    row(
        "queue_full_refusals",
        "vantage_agent_queue_full_refusals",
        "Local OTLP requests refused because the disk queue was full",
        C,
        &[],
    ),
    row(
        "queue_write_errors",
        "vantage_agent_queue_write_errors",
        "Batches the disk queue could not write (a full disk); the source waited and tried again",
        C,
        &[],
    ),
    row(
        "queue_write_failing_since_unix_ms",
        "vantage_agent_queue_write_failing_seconds",
        "How long the disk queue has been unable to write a source's batch, a full disk (0: it writes)",
        A,
        &[],
    ),
    row(
        "files_tailed",
        "vantage_agent_files_tailed",
        "Files currently tailed",
        G,
        &[],
    ),
    row(
        "files_released",
        "vantage_agent_file_rotations",
        "Files released after being rotated away (renamed) or deleted",
        C,
        &[],
    ),
    row(
        "files_truncated",
        "vantage_agent_file_truncations",
        "Files found truncated (copytruncate) and read again from the start",
        C,
        &[],
    ),
    row(
        "lines_split",
        "vantage_agent_lines_split",
        "Pieces produced by cutting lines longer than max_line_bytes",
        C,
        &[],
    ),
    row(
        "lines_invalid_utf8",
        "vantage_agent_lines_invalid_utf8",
        "Lines that held invalid UTF-8 (kept, with U+FFFD)",
        C,
        &[],
    ),
    row(
        "file_errors",
        "vantage_agent_source_errors",
        "Read, checkpoint or cursor errors of a source",
        C,
        &[("source", "file")],
    ),
    row(
        "journald_errors",
        "vantage_agent_source_errors",
        "Read, checkpoint or cursor errors of a source",
        C,
        &[("source", "journald")],
    ),
    row(
        "host_metrics_collections",
        "vantage_agent_host_metrics_collections",
        "Host-metrics collections made",
        C,
        &[],
    ),
    row(
        "receiver_requests_accepted",
        "vantage_agent_receiver_requests",
        RECEIVER,
        C,
        &[("outcome", "accepted")],
    ),
    row(
        "receiver_requests_refused",
        "vantage_agent_receiver_requests",
        RECEIVER,
        C,
        &[("outcome", "refused")],
    ),
    row(
        "scrapes",
        "vantage_agent_scrapes",
        "Scrapes made, successful or not",
        C,
        &[],
    ),
    row(
        "scrapes_failed",
        "vantage_agent_scrapes_failed",
        "Scrapes that failed (target down, timeout, bad body)",
        C,
        &[],
    ),
    row(
        "memory_pauses",
        "vantage_agent_memory_pauses",
        "Times the sources paused because RSS was over limits.max_memory_mib",
        C,
        &[],
    ),
    row(
        "memory_over_limit",
        "vantage_agent_memory_over_limit",
        "1 while RSS is over limits.max_memory_mib and the sources are paused",
        G,
        &[],
    ),
    row(
        "multiline_records",
        "vantage_agent_multiline_records",
        "Records joined from more than one line by multiline",
        C,
        &[],
    ),
    row(
        "multiline_flushed_full",
        "vantage_agent_multiline_flushed",
        "Multiline records flushed before their end was seen",
        C,
        &[("reason", "full")],
    ),
    row(
        "multiline_flushed_timeout",
        "vantage_agent_multiline_flushed",
        "Multiline records flushed before their end was seen",
        C,
        &[("reason", "timeout")],
    ),
    row(
        "json_lines_parsed",
        "vantage_agent_json_lines",
        "Lines under parse: json, by whether they were a JSON object",
        C,
        &[("result", "parsed")],
    ),
    row(
        "json_lines_invalid",
        "vantage_agent_json_lines",
        "Lines under parse: json, by whether they were a JSON object",
        C,
        &[("result", "invalid")],
    ),
    row(
        "json_attributes_dropped",
        "vantage_agent_json_attributes_dropped",
        "JSON fields left out over json_max_attributes",
        C,
        &[],
    ),
    row(
        "redactions",
        "vantage_agent_redactions",
        "Matches replaced by redaction rules",
        C,
        &[],
    ),
    row(
        "records_redacted",
        "vantage_agent_records_redacted",
        "Records with at least one redaction",
        C,
        &[],
    ),
];

/// Figures that do not fit a flat counter, fed by hooks in the exporter and scraper.
pub(crate) struct Extra {
    export_duration: Family<Labels, Histogram>,
    bytes_sent: Family<Labels, Counter>,
    scrape_up: Family<Labels, Gauge>,
    scrape_duration: Family<Labels, Gauge<f64, AtomicU64>>,
    last_export_ms: AtomicU64,
}

fn export_histogram() -> Histogram {
    // 1 ms to ~16 s: a local collector answers in milliseconds, a far one under load in
    // seconds; the request timeout is 10 s by default.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Process-wide: the exporter and the scrape loops report here without threading a
/// handle through every constructor.
static EXTRA: LazyLock<Extra> = LazyLock::new(|| Extra {
    export_duration: Family::new_with_constructor(export_histogram),
    bytes_sent: Family::default(),
    scrape_up: Family::default(),
    scrape_duration: Family::default(),
    last_export_ms: AtomicU64::new(0),
});

/// One acknowledged export: its round-trip time and request size, per signal.
pub(crate) fn export_acknowledged(signal: &str, seconds: f64, bytes: u64) {
    let labels = vec![("signal".to_string(), signal.to_string())];
    EXTRA
        .export_duration
        .get_or_create(&labels)
        .observe(seconds);
    EXTRA.bytes_sent.get_or_create(&labels).inc_by(bytes);
    EXTRA
        .last_export_ms
        .store(crate::tail::now_ns() / 1_000_000, Ordering::Relaxed);
}

/// Milliseconds since the epoch of the last acknowledged export; 0: none yet.
pub(crate) fn last_export_unix_ms() -> u64 {
    EXTRA.last_export_ms.load(Ordering::Relaxed)
}

/// One scrape of a target: whether it answered, and how long it took.
pub(crate) fn scrape_observed(job: &str, instance: &str, up: bool, seconds: f64) {
    let labels = vec![
        ("job".to_string(), job.to_string()),
        ("instance".to_string(), instance.to_string()),
    ];
    EXTRA.scrape_up.get_or_create(&labels).set(i64::from(up));
    EXTRA.scrape_duration.get_or_create(&labels).set(seconds);
}

/// `(job, instance, up)` of every target scraped so far, for `/healthz`.
pub(crate) fn scrape_targets() -> Vec<(String, String, bool)> {
    // Family has no iterator; the text encoding is the public view of it.
    let mut registry = Registry::default();
    registry.register("up", "", EXTRA.scrape_up.clone());
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        return Vec::new();
    }
    parse_targets(&text)
}

fn parse_targets(text: &str) -> Vec<(String, String, bool)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("up{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            let get = |k: &str| {
                let start = labels.find(&format!("{k}=\""))? + k.len() + 2;
                let end = labels[start..].find('"')? + start;
                Some(labels[start..end].to_string())
            };
            Some((get("job")?, get("instance")?, value.trim() == "1"))
        })
        .collect()
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub(crate) fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// User plus system CPU time of this process in seconds, from `/proc/self/stat`.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64)
}

/// Seconds from `since_ms` (Unix ms, 0: nothing) to `now_ms`; never negative, so a clock
/// stepped back shows 0 rather than a negative age.
fn age_seconds(since_ms: u64, now_ms: u64) -> f64 {
    if since_ms == 0 {
        return 0.0;
    }
    now_ms.saturating_sub(since_ms) as f64 / 1000.0
}

/// Whether `name` is fed by one row only.
fn single(name: &str) -> bool {
    METRICS.iter().filter(|r| r.name == name).count() == 1
}

/// The whole `/metrics` page.
pub(crate) fn render(stats: &Stats) -> String {
    let mut registry = Registry::default();
    let values: BTreeMap<&str, u64> = stats.snapshot().into_iter().collect();
    let mut counters: BTreeMap<&str, (&str, Family<Labels, Counter>)> = BTreeMap::new();
    let mut gauges: BTreeMap<&str, (&str, Family<Labels, Gauge>)> = BTreeMap::new();
    let mut ages: BTreeMap<&str, (&str, Family<Labels, FloatGauge>)> = BTreeMap::new();
    let now_ms = crate::tail::now_ns() / 1_000_000;
    for r in METRICS {
        let Some(&v) = values.get(r.stat) else {
            continue;
        };
        let labels: Labels = r
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match r.ty {
            Type::Counter => {
                let (_, f) = counters
                    .entry(r.name)
                    .or_insert((r.help, Family::default()));
                f.get_or_create(&labels).inc_by(v);
            }
            Type::Gauge => {
                let (_, f) = gauges.entry(r.name).or_insert((r.help, Family::default()));
                f.get_or_create(&labels).set(v.min(i64::MAX as u64) as i64);
            }
            Type::AgeSince => {
                let (_, f) = ages.entry(r.name).or_insert((r.help, Family::default()));
                f.get_or_create(&labels).set(age_seconds(v, now_ms));
            }
        }
    }
    let mut unmapped = Vec::new();
    for (stat, v) in &values {
        if !METRICS.iter().any(|r| r.stat == *stat) {
            let g: Gauge = Gauge::default();
            g.set((*v).min(i64::MAX as u64) as i64);
            unmapped.push((format!("vantage_agent_{stat}"), g));
        }
    }
    // A family whose only series has no labels is written as a plain metric
    // (`name 3`, not `name{} 3`).
    for (name, (help, f)) in counters {
        let value = single(name)
            .then(|| f.get(&Vec::new()).map(|c| c.get()))
            .flatten();
        match value {
            Some(v) => {
                let plain: Counter = Counter::default();
                plain.inc_by(v);
                registry.register(name, help, plain);
            }
            _ => registry.register(name, help, f),
        }
    }
    for (name, (help, f)) in gauges {
        let value = single(name)
            .then(|| f.get(&Vec::new()).map(|g| g.get()))
            .flatten();
        match value {
            Some(v) => {
                let plain: Gauge = Gauge::default();
                plain.set(v);
                registry.register(name, help, plain);
            }
            _ => registry.register(name, help, f),
        }
    }
    for (name, (help, f)) in ages {
        let value = single(name)
            .then(|| f.get(&Vec::new()).map(|g| g.get()))
            .flatten();
        match value {
            Some(v) => {
                let plain: FloatGauge = Gauge::default();
                plain.set(v);
                registry.register(name, help, plain);
            }
            _ => registry.register(name, help, f),
        }
    }
    for (name, g) in unmapped {
        registry.register(name, "Agent counter (see stats.rs)", g);
    }
    registry.register(
        "vantage_agent_export_duration_seconds",
        "Round-trip time of acknowledged export requests",
        EXTRA.export_duration.clone(),
    );
    registry.register(
        "vantage_agent_bytes_sent",
        "Request bytes (before compression) acknowledged by the collector",
        EXTRA.bytes_sent.clone(),
    );
    let last: Gauge<f64, AtomicU64> = Gauge::default();
    last.set(last_export_unix_ms() as f64 / 1000.0);
    registry.register(
        "vantage_agent_last_export_timestamp_seconds",
        "When the collector last acknowledged a batch (0: not yet)",
        last,
    );
    registry.register(
        "vantage_agent_scrape_up",
        "1 when the last scrape of the target succeeded",
        EXTRA.scrape_up.clone(),
    );
    registry.register(
        "vantage_agent_scrape_duration_seconds",
        "Duration of the last scrape of the target",
        EXTRA.scrape_duration.clone(),
    );
    if let Some(rss) = process_rss_bytes() {
        let g: Gauge = Gauge::default();
        g.set(rss.min(i64::MAX as u64) as i64);
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            g,
        );
    }
    if let Some(cpu) = process_cpu_seconds() {
        // A counter reading taken from the kernel: a float gauge holds it exactly, and
        // the name keeps the standard suffix Prometheus's client libraries use.
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(cpu);
        registry.register(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
            g,
        );
    }
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        tracing::warn!(error = %e, "self-metrics encoding failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stats_field_has_a_row_and_rows_name_real_fields() {
        let stats = Stats::default();
        let fields: Vec<&str> = stats.snapshot().into_iter().map(|(k, _)| k).collect();
        for r in METRICS {
            assert!(
                fields.contains(&r.stat),
                "{} maps a field Stats lacks",
                r.stat
            );
            assert!(r.name.starts_with("vantage_agent_"), "{}", r.name);
        }
        let missing: Vec<&&str> = fields
            .iter()
            .filter(|f| !METRICS.iter().any(|r| r.stat == **f))
            .collect();
        assert!(
            missing.is_empty(),
            "add rows (and README lines) for {missing:?}"
        );
    }

    #[test]
    fn rows_of_one_family_agree_on_type_and_label_names() {
        for a in METRICS {
            for b in METRICS.iter().filter(|b| b.name == a.name) {
                assert_eq!(a.ty, b.ty, "{}", a.name);
                let names = |r: &Row| r.labels.iter().map(|(k, _)| *k).collect::<Vec<_>>();
                assert_eq!(names(a), names(b), "{}", a.name);
            }
        }
        // No two rows of a family with the same labels: the values would be summed.
        for (i, a) in METRICS.iter().enumerate() {
            for b in &METRICS[i + 1..] {
                assert!(
                    !(a.name == b.name && a.labels == b.labels),
                    "{} {:?} twice",
                    a.name,
                    a.labels
                );
            }
        }
    }

    #[test]
    fn render_shows_values_types_labels_and_the_process() {
        let stats = Stats::default();
        stats.lines_read.add(7);
        stats.scrape_samples.add(3);
        stats.queue_batches.set(5);
        stats.receiver_requests_refused.add(2);
        let text = render(&stats);
        assert!(
            text.contains("# TYPE vantage_agent_records_read counter"),
            "{text}"
        );
        assert!(
            text.contains("vantage_agent_records_read_total{source=\"file\",signal=\"logs\"} 7"),
            "{text}"
        );
        assert!(
            text.contains(
                "vantage_agent_records_read_total{source=\"scrape\",signal=\"metrics\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE vantage_agent_queue_batches gauge"));
        assert!(text.contains("vantage_agent_queue_batches 5"), "{text}");
        assert!(text.contains("vantage_agent_receiver_requests_total{outcome=\"refused\"} 2"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One HELP/TYPE per family even though several rows feed it.
        assert_eq!(
            text.matches("# TYPE vantage_agent_records_read ").count(),
            1
        );
    }

    fn value_of(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len() + 1..].trim().parse().unwrap()
    }

    #[test]
    fn the_queue_age_is_zero_when_empty_and_grows_from_the_oldest_time() {
        let stats = Stats::default();
        let name = "vantage_agent_queue_oldest_age_seconds";
        let text = render(&stats);
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{text}");
        assert_eq!(value_of(&text, name), 0.0);
        let now_ms = crate::tail::now_ns() / 1_000_000;
        stats.queue_oldest_unix_ms.set(now_ms - 90_000);
        let age = value_of(&render(&stats), name);
        // At least the 90 s set; the render happens later than `now_ms`, never earlier.
        assert!((90.0..90.0 + 3600.0).contains(&age), "{age}");
        assert_eq!(age_seconds(0, now_ms), 0.0);
        assert_eq!(
            age_seconds(now_ms + 5_000, now_ms),
            0.0,
            "clock stepped back"
        );
        assert_eq!(age_seconds(1_500, 4_000), 2.5);
    }

    #[test]
    fn hooks_reach_the_page_and_the_target_list() {
        export_acknowledged("logs", 0.004, 1000);
        scrape_observed("selfmetrics-test", "127.0.0.1:1", false, 0.25);
        let text = render(&Stats::default());
        assert!(
            text.contains(
                "vantage_agent_export_duration_seconds_bucket{le=\"0.004\",signal=\"logs\"}"
            ) || text.contains("vantage_agent_export_duration_seconds_count{signal=\"logs\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "vantage_agent_scrape_up{job=\"selfmetrics-test\",instance=\"127.0.0.1:1\"} 0"
            ),
            "{text}"
        );
        assert!(last_export_unix_ms() > 0);
        let targets = scrape_targets();
        assert!(
            targets.contains(&(
                "selfmetrics-test".to_string(),
                "127.0.0.1:1".to_string(),
                false
            )),
            "{targets:?}"
        );
    }

    #[test]
    fn target_parsing_survives_odd_lines() {
        assert!(parse_targets("up{job=\"a\"} 1\nup{\n{} 1\n").is_empty());
        assert_eq!(
            parse_targets("up{job=\"a\",instance=\"h:1\"} 1\n"),
            vec![("a".into(), "h:1".into(), true)]
        );
    }
}
