//! The systemd journal as a log source, read through libsystemd's own API (see
//! [`sys`]), never by running `journalctl`.
//!
//! Runs on its own thread (the journal calls block) and hands batches to the async
//! queue with `Handle::block_on`, as the file tailer does, with the same end-to-end
//! guarantee: a batch is appended to the disk queue (fsync) and *held*, the cursor of
//! its last entry is written atomically to `state_dir/journald_cursor`, then the batch
//! is released to the exporter; the queue deletes it only once the collector
//! acknowledged it. The cursor also travels in the batch itself (scope attribute
//! `journald.cursor`), so a crash between the queue append and the cursor write is
//! repaired at start-up from the unacknowledged batches: no entry is lost or re-sent.
//!
//! `MESSAGE` becomes the body, `PRIORITY` the severity (the OpenTelemetry syslog
//! mapping), the entry's realtime timestamp the record's time, and every other field
//! (`_SYSTEMD_UNIT`, `_HOSTNAME`, `SYSLOG_IDENTIFIER`, `_PID`, ...) an attribute under
//! its journal name, filtered by `fields.include` / `fields.exclude`.

pub(crate) mod sys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::resource::v1::Resource;

use crate::checkpoint;
use crate::config::StartAt;
use crate::queue::{DiskQueue, Envelope, Kind, QueueError};
use crate::resource::kv;
use crate::stats::Stats;
use sys::{Journal, JournalError, Wake};

/// Instrumentation scope of journal records; the repair looks for it in the queue.
const SCOPE: &str = "vantage-agent/journald";
/// Scope attribute carrying the cursor of a batch's last entry.
const CURSOR_ATTRIBUTE: &str = "journald.cursor";
/// Name of the cursor file in the state directory.
pub(crate) const CURSOR_FILE: &str = "journald_cursor";
/// How long one `sd_journal_wait` blocks: the bound on noticing cancellation.
const WAIT: Duration = Duration::from_millis(500);
/// Longest field value kept whole (journald's own default threshold is 64 KiB; a
/// message up to the file source's default line limit is kept).
const MAX_FIELD_BYTES: usize = 1024 * 1024;
/// Syslog priority names in order, 0 (emerg) to 7 (debug), as `journalctl -p` takes them.
const PRIORITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The `journald:` section of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JournaldFile {
    enabled: Option<bool>,
    directory: Option<PathBuf>,
    units: Vec<String>,
    priority: Option<String>,
    start_at: Option<String>,
    fields: FieldsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FieldsFile {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// The validated journald source settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JournaldConfig {
    /// A directory of journal files; `None`: the local system journal.
    pub(crate) directory: Option<PathBuf>,
    /// `_SYSTEMD_UNIT` values to keep (any of them); empty: all units.
    pub(crate) units: Vec<String>,
    /// Keep entries of this priority and more severe (0..=7); `None`: all.
    pub(crate) max_priority: Option<u8>,
    /// Where to start without a saved cursor.
    pub(crate) start_at: StartAt,
    /// Only these fields become attributes (empty: all).
    pub(crate) include: Vec<String>,
    /// These fields never become attributes.
    pub(crate) exclude: Vec<String>,
}

/// Validates the section; `at(key)` names the key with its line for messages.
pub(crate) fn validate(
    f: JournaldFile,
    at: &dyn Fn(&'static str) -> String,
    errors: &mut Vec<String>,
) -> Option<JournaldConfig> {
    if f.enabled == Some(false) {
        return None;
    }
    let max_priority = match f.priority.as_deref() {
        None => None,
        Some(p) => match parse_priority(p) {
            Some(n) => Some(n),
            None => {
                errors.push(format!(
                    "{}: {p:?} is not a priority (0-7 or one of {})",
                    at("priority"),
                    PRIORITY_NAMES.join(", ")
                ));
                None
            }
        },
    };
    let start_at = match f.start_at.as_deref() {
        None | Some("end") => StartAt::End,
        Some("beginning") => StartAt::Beginning,
        Some(other) => {
            errors.push(format!(
                "{}: {other:?} is not one of beginning, end",
                at("start_at")
            ));
            StartAt::End
        }
    };
    let mut units = Vec::new();
    for u in f.units {
        if u.is_empty() || u.contains(['=', '/', '\0', ' ']) {
            errors.push(format!("{}: {u:?} is not a unit name", at("units")));
        } else if u.contains('.') {
            units.push(u);
        } else {
            // As `journalctl -u nginx` does.
            units.push(format!("{u}.service"));
        }
    }
    if let Some(d) = &f.directory
        && !d.is_absolute()
    {
        errors.push(format!(
            "{}: {} must be an absolute path",
            at("directory"),
            d.display()
        ));
    }
    for (key, list) in [("fields", &f.fields.include), ("fields", &f.fields.exclude)] {
        for name in list {
            if name.is_empty() || name.contains(['=', '\0']) {
                errors.push(format!("{}: {name:?} is not a field name", at(key)));
            }
        }
    }
    Some(JournaldConfig {
        directory: f.directory,
        units,
        max_priority,
        start_at,
        include: f.fields.include,
        exclude: f.fields.exclude,
    })
}

fn parse_priority(p: &str) -> Option<u8> {
    if let Ok(n) = p.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    let p = p.to_ascii_lowercase();
    let alias = match p.as_str() {
        "error" => "err",
        "warn" => "warning",
        "critical" => "crit",
        "emergency" | "panic" => "emerg",
        other => other,
    };
    PRIORITY_NAMES
        .iter()
        .position(|n| *n == alias)
        .map(|i| i as u8)
}

/// OTLP severity number and text of a syslog priority (the OpenTelemetry log data
/// model's syslog mapping).
fn severity(priority: u8) -> (i32, &'static str) {
    let number = match priority {
        0 => 21, // FATAL
        1 => 19, // ERROR3
        2 => 18, // ERROR2
        3 => 17, // ERROR
        4 => 13, // WARN
        5 => 10, // INFO2
        6 => 9,  // INFO
        _ => 5,  // DEBUG
    };
    (number, PRIORITY_NAMES[priority.min(7) as usize])
}

/// What stops the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournaldError {
    #[error("journald: {0}")]
    Journal(#[from] JournalError),
    #[error("journald: {0}")]
    Queue(#[from] QueueError),
}

/// Everything the source needs, moved onto its thread.
pub(crate) struct Source {
    pub(crate) config: JournaldConfig,
    pub(crate) state_dir: PathBuf,
    pub(crate) queue: DiskQueue,
    pub(crate) stats: Arc<Stats>,
    pub(crate) resource: Resource,
    pub(crate) batch_max_records: usize,
    pub(crate) batch_max_bytes: usize,
}

/// Starts the source on its own thread.
pub(crate) fn spawn(
    source: Source,
    rt: tokio::runtime::Handle,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("journald".into())
        .spawn(move || {
            let stats = source.stats.clone();
            match source.run(&rt, &cancel) {
                // Stopped while waiting for room in the queue: the cursor did not move.
                Ok(()) | Err(JournaldError::Queue(QueueError::Cancelled)) => {}
                Err(e) => {
                    stats.journald_errors.add(1);
                    tracing::error!(error = %e, "journald source stopped");
                }
            }
        })
}

#[derive(Default)]
struct Batch {
    records: Vec<LogRecord>,
    bytes: usize,
    cursor: Option<String>,
}

impl Source {
    fn run(
        self,
        rt: &tokio::runtime::Handle,
        cancel: &CancellationToken,
    ) -> Result<(), JournaldError> {
        let cursor_path = self.state_dir.join(CURSOR_FILE);
        let saved = self.saved_cursor(&cursor_path)?;
        let mut journal = Journal::open(self.config.directory.as_deref())?;
        journal.set_data_threshold(MAX_FIELD_BYTES)?;
        for unit in &self.config.units {
            journal.add_match(&format!("_SYSTEMD_UNIT={unit}"))?;
        }
        if let Some(max) = self.config.max_priority {
            for p in 0..=max {
                journal.add_match(&format!("PRIORITY={p}"))?;
            }
        }
        // True while the journal stands on an entry not yet read.
        let mut pending = self.position(&mut journal, saved.as_deref())?;
        tracing::info!(
            directory = ?self.config.directory,
            units = ?self.config.units,
            max_priority = ?self.config.max_priority,
            resumed = saved.is_some(),
            "reading the journal"
        );
        while !cancel.is_cancelled() {
            if crate::memlimit::paused(&self.stats) {
                // Over limits.max_memory_mib: read nothing; the cursor stays put.
                std::thread::sleep(WAIT);
                continue;
            }
            let mut batch = Batch::default();
            let mut full = false;
            while std::mem::take(&mut pending) || journal.next()? {
                self.read_entry(&mut journal, &mut batch)?;
                if batch.records.len() >= self.batch_max_records
                    || batch.bytes >= self.batch_max_bytes
                {
                    full = true;
                    break;
                }
            }
            if !batch.records.is_empty() {
                self.flush(batch, &cursor_path, rt, cancel)?;
            }
            if !full && journal.wait(WAIT.as_micros() as u64)? == Wake::Nop {
                // Nothing new; loop to check cancellation.
            }
        }
        Ok(())
    }

    /// The cursor to resume from: the last journal batch still in the queue (its cursor
    /// file write may have been cut short), else the cursor file.
    fn saved_cursor(&self, path: &Path) -> Result<Option<String>, JournaldError> {
        if let Some(c) = last_queued_cursor(&self.queue)? {
            return Ok(Some(c));
        }
        match checkpoint_read(path) {
            Ok(c) => Ok(c),
            Err(e) => {
                self.stats.journald_errors.add(1);
                tracing::warn!(path = %path.display(), error = %e, "journald cursor unreadable; starting per start_at");
                Ok(None)
            }
        }
    }

    /// Places the journal after the saved cursor, or per `start_at`; true when it now
    /// stands on an entry that must be read before calling `next`.
    fn position(&self, journal: &mut Journal, saved: Option<&str>) -> Result<bool, JournaldError> {
        if let Some(cursor) = saved {
            match journal.seek_cursor(cursor) {
                Ok(()) => {
                    // On the saved entry: it was sent, `next` goes on from it. Elsewhere
                    // (the entry is gone, or the filters changed): the entry it landed
                    // on is the first unsent one.
                    let landed = journal.next()?;
                    return Ok(landed && !journal.test_cursor(cursor)?);
                }
                Err(e) => {
                    self.stats.journald_errors.add(1);
                    tracing::warn!(error = %e, "saved journald cursor refused; starting per start_at");
                }
            }
        }
        match self.config.start_at {
            StartAt::Beginning => journal.seek_head()?,
            StartAt::End => journal.seek_end()?,
        }
        Ok(false)
    }

    fn read_entry(&self, journal: &mut Journal, batch: &mut Batch) -> Result<(), JournaldError> {
        let time_ns = journal.realtime_usec()?.saturating_mul(1000);
        let mut body = None;
        let mut priority = None;
        let mut attributes = Vec::new();
        let mut bytes = 64;
        journal.fields(|data| {
            let Some(eq) = data.iter().position(|b| *b == b'=') else {
                return;
            };
            let (name, value) = (&data[..eq], &data[eq + 1..]);
            let Ok(name) = std::str::from_utf8(name) else {
                return;
            };
            bytes += data.len();
            match name {
                "MESSAGE" => body = Some(String::from_utf8_lossy(value).into_owned()),
                "PRIORITY" => {
                    priority = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u8>().ok())
                        .filter(|p| *p <= 7);
                }
                _ if name.starts_with("__") => {}
                _ if self.keep(name) => {
                    attributes.push(kv(name, String::from_utf8_lossy(value).into_owned()));
                }
                _ => {}
            }
        })?;
        let cursor = journal.cursor()?;
        let (severity_number, severity_text) = match priority {
            Some(p) => {
                let (n, t) = severity(p);
                (n, t.to_string())
            }
            None => (0, String::new()),
        };
        batch.bytes += bytes;
        batch.records.push(LogRecord {
            time_unix_nano: time_ns,
            observed_time_unix_nano: crate::tail::now_ns(),
            severity_number,
            severity_text,
            body: body.map(|b| AnyValue {
                value: Some(any_value::Value::StringValue(b)),
            }),
            attributes,
            ..Default::default()
        });
        batch.cursor = Some(cursor);
        Ok(())
    }

    fn keep(&self, field: &str) -> bool {
        (self.config.include.is_empty() || self.config.include.iter().any(|f| f == field))
            && !self.config.exclude.iter().any(|f| f == field)
    }

    /// Queue append (fsync, held), cursor file, release: the cursor on disk never runs
    /// ahead of the queue.
    fn flush(
        &self,
        batch: Batch,
        cursor_path: &Path,
        rt: &tokio::runtime::Handle,
        cancel: &CancellationToken,
    ) -> Result<(), JournaldError> {
        let count = batch.records.len() as u64;
        let cursor = batch.cursor.unwrap_or_default();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        attributes: vec![kv(CURSOR_ATTRIBUTE, cursor.clone())],
                        dropped_attributes_count: 0,
                    }),
                    log_records: batch.records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        let lsn = rt.block_on(self.queue.push_patiently(
            "journald",
            cancel,
            Kind::Logs,
            &[],
            &request,
            true,
        ))?;
        self.stats.journald_entries_read.add(count);
        if let Err(e) = checkpoint::write_atomic(cursor_path, cursor.as_bytes()) {
            self.stats.journald_errors.add(1);
            tracing::warn!(error = %e, "journald cursor write failed; the queue keeps the cursor");
        }
        self.queue.release(lsn);
        Ok(())
    }
}

/// The saved cursor file's text; `None` when there is none yet.
fn checkpoint_read(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Batches read from the queue per step of the start-up repair.
const REPAIR_READ_BATCHES: usize = 256;
/// Bytes read from the queue per step of the start-up repair.
const REPAIR_READ_BYTES: usize = 32 << 20;

/// The cursor carried by the newest unacknowledged journal batch in the queue.
/// Blocking.
fn last_queued_cursor(queue: &DiskQueue) -> Result<Option<String>, QueueError> {
    let mut from = queue.acked() + 1;
    let mut last = None;
    loop {
        let records = queue.read_blocking(from, REPAIR_READ_BATCHES, REPAIR_READ_BYTES)?;
        let Some(end) = records.last().map(|r| r.lsn) else {
            return Ok(last);
        };
        for record in records {
            let Ok(envelope) = Envelope::decode(&record.payload) else {
                continue;
            };
            if envelope.kind != Kind::Logs || !contains(&envelope.request, SCOPE.as_bytes()) {
                continue;
            }
            if let Some(c) = batch_cursor(&envelope.request) {
                last = Some(c);
            }
        }
        from = end + 1;
    }
}

/// The `journald.cursor` scope attribute of an encoded journal batch.
fn batch_cursor(request: &[u8]) -> Option<String> {
    let request = ExportLogsServiceRequest::decode(request).ok()?;
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .filter_map(|s| s.scope.as_ref())
        .filter(|s| s.name == SCOPE)
        .flat_map(|s| &s.attributes)
        .filter(|a| a.key == CURSOR_ATTRIBUTE)
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .next_back()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Option<JournaldConfig>, Vec<String>) {
        let f: JournaldFile = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let c = validate(f, &|k| format!("journald.{k}"), &mut errors);
        (c, errors)
    }

    #[test]
    fn priorities_by_name_and_number() {
        assert_eq!(parse_priority("warning"), Some(4));
        assert_eq!(parse_priority("WARN"), Some(4));
        assert_eq!(parse_priority("err"), Some(3));
        assert_eq!(parse_priority("error"), Some(3));
        assert_eq!(parse_priority("7"), Some(7));
        assert_eq!(parse_priority("8"), None);
        assert_eq!(parse_priority("loud"), None);
        assert_eq!(severity(4), (13, "warning"));
        assert_eq!(severity(0), (21, "emerg"));
        assert_eq!(severity(7), (5, "debug"));
    }

    #[test]
    fn section_validation() {
        let (c, e) = check(
            "units: [nginx, ssh.service]\npriority: warning\nfields:\n  exclude: [_CMDLINE]\n",
        );
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.units, ["nginx.service", "ssh.service"]);
        assert_eq!(c.max_priority, Some(4));
        assert_eq!(c.start_at, StartAt::End);
        let (_, e) = check("directory: rel\npriority: loud\nstart_at: now\nunits: [\"a=b\"]\n");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("journald.priority")));
        assert!(check("enabled: false\n").0.is_none());
    }

    #[test]
    fn the_cursor_rides_in_the_batch() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.into(),
                        attributes: vec![kv(CURSOR_ATTRIBUTE, "s=1;i=2")],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        assert!(contains(&request, SCOPE.as_bytes()));
        assert_eq!(batch_cursor(&request).as_deref(), Some("s=1;i=2"));
        assert_eq!(batch_cursor(b"\xff\xff garbage"), None);
    }
}
