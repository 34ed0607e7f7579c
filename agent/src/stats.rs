//! The agent's own counters, named in one place: `/healthz` reports them, the README
//! lists them, and the tests read them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter or gauge shared between tasks.
#[derive(Debug, Default)]
pub(crate) struct Value(AtomicU64);

impl Value {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Every self-metric of the agent.
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $($(#[doc = $doc])* pub(crate) $name: Value,)*
        }

        impl Stats {
            /// Name and value of every metric, in declaration order.
            pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.get()),)*]
            }
        }
    };
}

stats! {
    /// Files currently tailed (gauge).
    files_tailed,
    /// Lines (and pieces of over-long lines) read from files.
    lines_read,
    /// Pieces produced by cutting lines longer than `max_line_bytes`.
    lines_split,
    /// Lines that held invalid UTF-8 (kept, with U+FFFD).
    lines_invalid_utf8,
    /// Files found truncated (copytruncate) and re-read from the start.
    files_truncated,
    /// Files released after being rotated away or deleted.
    files_released,
    /// File read or checkpoint errors.
    file_errors,
    /// Host-metrics collections made.
    host_metrics_collections,
    /// Log batches acknowledged by the collector.
    log_batches_sent,
    /// Log records acknowledged by the collector.
    log_records_sent,
    /// Metric batches acknowledged by the collector.
    metric_batches_sent,
    /// Export attempts that failed and will be retried.
    export_retries,
    /// Batches the collector refused for good (dropped after logging).
    export_failed_batches,
    /// Records the collector rejected in a partial success.
    export_rejected_records,
    /// Bytes of the disk queue on disk (gauge).
    queue_bytes,
    /// Batches in the disk queue not yet acknowledged (gauge).
    queue_batches,
    /// Unsent batches deleted by the `drop_oldest` policy.
    queue_dropped_batches,
    /// Times a source had to wait for queue space under `block`.
    queue_full_waits,
    /// Receiver requests refused because the queue was full under `block`.
    queue_full_refusals,
    /// Batches the disk queue could not write (a full disk) that a source then waited
    /// to push again.
    queue_write_errors,
    /// Since when the disk queue has been unable to write a source's batch, Unix ms; 0:
    /// it writes (exported as the seconds since).
    queue_write_failing_since_unix_ms,
    /// When the oldest unacknowledged batch entered the disk queue, Unix ms; 0: empty
    /// (exported as its age in seconds).
    queue_oldest_unix_ms,
    /// Trace batches acknowledged by the collector.
    trace_batches_sent,
    /// OTLP requests the local receiver accepted (queued), all signals and protocols.
    receiver_requests_accepted,
    /// OTLP requests the local receiver refused (bad body, too large, queue full).
    receiver_requests_refused,
    /// Log records, data points and spans the local receiver queued.
    receiver_items_accepted,
    /// Scrapes made (successful or not).
    scrapes,
    /// Scrapes that failed (target down, timeout, bad body); their `up` is 0.
    scrapes_failed,
    /// Samples read from successful scrapes.
    scrape_samples,
    /// Journal entries read by the journald source.
    journald_entries_read,
    /// Journal open, read or cursor errors.
    journald_errors,
    /// Times the sources paused because RSS went over `limits.max_memory_mib`.
    memory_pauses,
    /// 1 while RSS is over `limits.max_memory_mib` (gauge).
    memory_over_limit,
    /// Records joined from more than one line by `multiline`.
    multiline_records,
    /// Multiline records flushed because they reached `max_lines` or `max_bytes`.
    multiline_flushed_full,
    /// Multiline records flushed after waiting `multiline.timeout`.
    multiline_flushed_timeout,
    /// Lines parsed as JSON objects (`parse: json`).
    json_lines_parsed,
    /// Lines under `parse: json` that were not a JSON object (kept as plain text).
    json_lines_invalid,
    /// JSON fields left out over `json_max_attributes`.
    json_attributes_dropped,
    /// Matches replaced by redaction rules.
    redactions,
    /// Records with at least one redaction.
    records_redacted,
}
