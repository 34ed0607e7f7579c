//! The journald source end to end: journal files written by `systemd-journal-remote`
//! from export format, read by the real agent through libsystemd, searched on the real
//! collector.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ARRIVAL_TIMEOUT, Collector, Proc};
use serde_json::Value;

/// Debian's path of the tool (`make test-deps` installs `systemd-journal-remote`).
const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

struct Entry {
    message: String,
    unit: &'static str,
    priority: u8,
    pid: u32,
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Writes `entries` as a new journal file `dir/name.journal`; returns the realtime
/// timestamp of the first entry (the rest follow a microsecond apart).
fn write_journal(dir: &Path, name: &str, entries: &[Entry]) -> u64 {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: run `make test-deps` (Debian package systemd-journal-remote)"
    );
    let first = now_usec();
    let mut export = String::new();
    for (i, e) in entries.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE={}\nPRIORITY={}\n_SYSTEMD_UNIT={}\n_HOSTNAME=journal-host\nSYSLOG_IDENTIFIER=demo\n_PID={}\n\n",
            first + i as u64,
            first + i as u64,
            e.message,
            e.priority,
            e.unit,
            e.pid
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg("-o")
        .arg(dir.join(format!("{name}.journal")))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    first
}

fn config(dir: &Path, journal: &Path, collector: &Collector, journald: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {}\nexporter:\n  endpoint: http://{}\n  retry_initial_backoff: 100ms\n  retry_max_backoff: 1s\nhost_metrics:\n  enabled: false\njournald:\n  directory: {}\n  start_at: beginning\n{journald}",
            dir.join("state").display(),
            collector.grpc,
            journal.display()
        ),
    )
    .unwrap();
    path
}

/// Starts the agent on `config`; its health address.
fn start_agent(config: &Path, token: &str) -> (Proc, std::net::SocketAddr) {
    let mut c = Command::new(common::agent_bin());
    c.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json", "--health-listen", "127.0.0.1:0"])
        .args(["--otlp-grpc-listen", "off", "--otlp-http-listen", "off"])
        .env("VANTAGE_AGENT_TOKEN", token)
        .env("VANTAGE_AGENT_LOG", "info");
    let (proc, ready) = Proc::spawn(c);
    let health = ready["health"].as_str().unwrap().parse().unwrap();
    (proc, health)
}

async fn stat(health: std::net::SocketAddr, name: &str) -> u64 {
    let body = common::http_get(&format!("http://{health}/healthz"), None).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["stats"][name].as_u64().unwrap_or(0)
}

async fn wait_stat(health: std::net::SocketAddr, name: &str, want: u64, agent: &Proc) {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let v = stat(health, name).await;
        if v >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} = {v}, want {want}; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_arrive_with_their_fields_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let entry = |message: &str, unit, priority, pid| Entry {
        message: message.into(),
        unit,
        priority,
        pid,
    };
    let first = write_journal(
        &journal,
        "a",
        &[
            entry("jdkeep error from app", "app.service", 3, 41),
            entry("jdskip info from app", "app.service", 6, 42),
            entry("jdskip error from db", "db.service", 3, 43),
            entry("jdkeep warning from app", "app.service", 4, 44),
            entry("jdskip debug from app", "app.service", 7, 45),
        ],
    );
    let config = config(
        dir.path(),
        &journal,
        &collector,
        "  units: [app]\n  priority: warning\n  fields:\n    exclude: [_BOOT_ID]\n",
    );
    let (agent, health) = start_agent(&config, &collector.token);
    collector.wait_count("jdkeep", 2, None).await;
    // Entries written while the agent runs (a new journal file) arrive too.
    write_journal(
        &journal,
        "b",
        &[
            entry("jdkeep later crit", "app.service", 2, 46),
            entry("jdskip later notice", "app.service", 5, 47),
        ],
    );
    collector.wait_count("jdkeep", 3, None).await;
    wait_stat(health, "journald_entries_read", 3, &agent).await;
    assert_eq!(collector.count("jdskip").await, 0, "filtered out");

    let hits = collector.search("jdkeep", 10).await;
    let hits = hits["hits"].as_array().unwrap();
    let error = hits
        .iter()
        .find(|h| h["body"] == "jdkeep error from app")
        .unwrap_or_else(|| panic!("{hits:?}"));
    assert_eq!(error["attributes"]["_SYSTEMD_UNIT"], "app.service");
    assert_eq!(error["attributes"]["SYSLOG_IDENTIFIER"], "demo");
    assert_eq!(error["attributes"]["_PID"], "41");
    assert_eq!(error["attributes"]["_HOSTNAME"], "journal-host");
    assert!(error["attributes"]["_BOOT_ID"].is_null(), "excluded field");
    assert!(
        error["attributes"]["MESSAGE"].is_null(),
        "the body, not an attribute"
    );
    assert_eq!(error["severity_number"], 17);
    assert_eq!(error["severity_text"], "err");
    assert_eq!(error["time_unix_nano"], (first * 1000).to_string());
    assert_eq!(error["scope"]["name"], "vantage-agent/journald");
    let warn = hits
        .iter()
        .find(|h| h["body"] == "jdkeep warning from app")
        .unwrap();
    assert_eq!(warn["severity_number"], 13);
    assert_eq!(warn["time_unix_nano"], ((first + 3) * 1000).to_string());
    assert!(agent.terminate(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_cursor_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let batch = |from: u32, n: u32| -> Vec<Entry> {
        (from..from + n)
            .map(|i| Entry {
                message: format!("jdresume n{i}n"),
                unit: "app.service",
                priority: 6,
                pid: i,
            })
            .collect()
    };
    write_journal(&journal, "first", &batch(0, 60));
    let config = config(dir.path(), &journal, &collector, "");
    let (agent, health) = start_agent(&config, &collector.token);
    collector.wait_count("jdresume", 60, None).await;
    wait_stat(health, "log_records_sent", 60, &agent).await;
    assert!(agent.terminate());
    let cursor = std::fs::read_to_string(dir.path().join("state/journald_cursor")).unwrap();
    assert!(cursor.starts_with("s="), "a journal cursor: {cursor}");

    // Written while the agent is stopped: read after the restart, and only these.
    write_journal(&journal, "second", &batch(60, 25));
    let (agent, health) = start_agent(&config, &collector.token);
    collector.wait_count("jdresume", 85, None).await;
    wait_stat(health, "log_records_sent", 25, &agent).await;
    assert_eq!(stat(health, "journald_entries_read").await, 25);
    // And a kill -9 after more entries: the queue and cursor stay consistent.
    write_journal(&journal, "third", &batch(85, 15));
    collector.wait_count("jdresume", 100, None).await;
    wait_stat(health, "log_records_sent", 40, &agent).await;
    // The acknowledgement is persisted right after the send returns.
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.kill_9();
    let (agent, health) = start_agent(&config, &collector.token);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stat(health, "journald_entries_read").await,
        0,
        "nothing re-read"
    );
    assert_eq!(collector.count("jdresume").await, 100, "no duplicates");
    for i in [0, 59, 60, 84, 85, 99] {
        assert_eq!(collector.count(&format!("n{i}n")).await, 1, "entry {i}");
    }
    assert!(agent.terminate());
}
