//! The agent's own telemetry and service commands with the real binaries: `/metrics`
//! scraped (by a test client and by the agent itself, into the collector), `status`
//! against a running agent, and the memory cap pausing the sources.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ARRIVAL_TIMEOUT, Collector, Proc, append_lines, free_port, http_get, http_post};
use serde_json::Value;

/// The value of the series `name{labels}` (exactly as the page writes it) on a text page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

fn start_agent(config: &Path, token: &str) -> Proc {
    let mut c = Command::new(common::agent_bin());
    c.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json"])
        .env("VANTAGE_AGENT_TOKEN", token)
        .env("VANTAGE_AGENT_LOG", "info");
    Proc::spawn(c).0
}

async fn metrics(health: SocketAddr) -> String {
    String::from_utf8(
        http_get(&format!("http://{health}/metrics"), None)
            .await
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_page_counts_what_the_agent_did_and_reaches_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append_lines(&logs.join("a.log"), (0..40).map(|i| format!("smword {i}")));
    let port = free_port();
    let config = dir.path().join("agent.yaml");
    // The agent scrapes its own /metrics: its self-telemetry reaches the collector as
    // metrics, through the same path as any exporter's.
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nhealth_listen: 127.0.0.1:{port}\nexporter:\n  endpoint: http://{}\n  retry_initial_backoff: 100ms\nreceivers:\n  otlp:\n    grpc: \"off\"\n    http: \"off\"\nhost_metrics:\n  enabled: false\nfiles:\n  poll_interval: 200ms\n  inputs:\n    - include: [\"{}/*.log\"]\n      start_at: beginning\nscrape_configs:\n  - job_name: vantage-agent\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n",
            dir.path().join("state").display(),
            collector.grpc,
            logs.display()
        ),
    )
    .unwrap();
    let agent = start_agent(&config, &collector.token);
    let health: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    collector.wait_count("smword", 40, None).await;

    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let page = loop {
        let page = metrics(health).await;
        let sent = value(&page, "vantage_agent_records_sent_total{signal=\"logs\"}");
        if sent.is_some_and(|v| v >= 40.0)
            && page.contains("vantage_agent_scrape_up{job=\"vantage-agent\"")
        {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "page:\n{page}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        value(
            &page,
            "vantage_agent_records_read_total{source=\"file\",signal=\"logs\"}"
        ),
        Some(40.0),
        "{page}"
    );
    assert_eq!(value(&page, "vantage_agent_files_tailed"), Some(1.0));
    assert!(
        value(
            &page,
            "vantage_agent_export_duration_seconds_count{signal=\"logs\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{page}"
    );
    assert!(
        value(&page, "vantage_agent_bytes_sent_total{signal=\"logs\"}").is_some_and(|v| v > 0.0)
    );
    assert!(value(&page, "vantage_agent_last_export_timestamp_seconds").is_some_and(|v| v > 1e9));
    let rss = value(&page, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1e6 && rss < 1e9, "rss {rss}");
    assert!(value(&page, "process_cpu_seconds_total").is_some());
    assert!(page.contains("# TYPE vantage_agent_queue_batches gauge"));
    assert!(page.ends_with("# EOF\n"));
    // The collector stores what the agent scraped from itself.
    let series = common::promql(&collector, "vantage_agent_files_tailed").await;
    let series = if series.is_empty() {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let s = common::promql(&collector, "vantage_agent_files_tailed").await;
            if !s.is_empty() {
                break s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no self-metrics on the collector; agent log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    } else {
        series
    };
    assert_eq!(series[0]["metric"]["job"], "vantage-agent");

    // `status` reads the same agent through its configuration.
    let out = Command::new(common::agent_bin())
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["running"], true);
    assert_eq!(report["collector"], format!("http://{}", collector.grpc));
    assert_eq!(report["sources"]["files"]["tailed"], 1);
    assert!(report["sources"]["files"]["lines_read"].as_u64().unwrap() >= 40);
    assert!(report["last_export_age_seconds"].is_u64(), "{report}");
    assert!(report["queue"]["batches"].is_u64());
    let targets = report["sources"]["scrape"]["targets"].as_array().unwrap();
    assert_eq!(targets[0]["job"], "vantage-agent");
    assert_eq!(targets[0]["up"], true);
    let text = Command::new(common::agent_bin())
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("agent:       running"), "{text}");
    assert!(text.contains("files:       1 tailed"), "{text}");
    assert!(agent.terminate());
    // Stopped: exit 3, and the text says so.
    let out = Command::new(common::agent_bin())
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not answering"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_memory_cap_sources_pause_and_the_receiver_pushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append_lines(&logs.join("a.log"), (0..10).map(|i| format!("capword {i}")));
    let (port, http) = (free_port(), free_port());
    let config = dir.path().join("agent.yaml");
    // 1 MiB: below any process's RSS, so the cap holds from the first check on.
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nhealth_listen: 127.0.0.1:{port}\nexporter:\n  endpoint: http://127.0.0.1:{}\nreceivers:\n  otlp:\n    grpc: \"off\"\n    http: 127.0.0.1:{http}\nhost_metrics:\n  enabled: false\nlimits:\n  max_memory_mib: 1\nfiles:\n  poll_interval: 200ms\n  inputs:\n    - include: [\"{}/*.log\"]\n      start_at: beginning\n",
            dir.path().join("state").display(),
            free_port(),
            logs.display()
        ),
    )
    .unwrap();
    let agent = start_agent(&config, "unused");
    let health: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    let page = loop {
        let page = metrics(health).await;
        if value(&page, "vantage_agent_memory_over_limit") == Some(1.0) {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value(&page, "vantage_agent_memory_pauses_total"), Some(1.0));
    // An OTLP/HTTP export is refused with 503 and a retry delay.
    let (status, headers, _) = http_post(
        &format!("http://127.0.0.1:{http}/v1/logs"),
        &[("content-type", "application/json")],
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    // The file stays unread while paused (poll interval 200 ms: many polls pass).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let page = metrics(health).await;
    assert_eq!(
        value(
            &page,
            "vantage_agent_records_read_total{source=\"file\",signal=\"logs\"}"
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "vantage_agent_receiver_requests_total{outcome=\"refused\"}"
        ),
        Some(1.0)
    );
    assert!(agent.terminate());
}
