//! Agent → collector end to end, with the real binaries over real sockets.

mod common;

use std::time::Duration;

use common::{Agent, Collector, SmallDisk, append_lines, free_port, noise, write_config};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn endpoint(c: &Collector) -> String {
    format!("http://{}", c.grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_are_searchable_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    append_lines(
        &file,
        (0..50).map(|i| format!("before start e2eword line {i}")),
    );
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &endpoint(&collector),
        "      attributes:\n        team: core\n",
    );
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    append_lines(
        &file,
        (50..100).map(|i| format!("after start e2eword line {i}")),
    );
    collector.wait_count("e2eword", 100, Some(&agent)).await;
    let hit = &collector.search("e2eword", 1).await["hits"][0];
    assert_eq!(
        hit["attributes"]["log.file.path"],
        file.display().to_string()
    );
    assert_eq!(hit["attributes"]["log.file.name"], "app.log");
    assert_eq!(hit["attributes"]["team"], "core");
    assert!(hit["resource"]["host.name"].is_string(), "{hit}");
    assert!(hit["resource"]["os.type"] == "linux", "{hit}");
    assert!(agent.stat("log_records_sent").await >= 100);
    assert!(agent.proc.terminate(), "clean exit on SIGTERM");
}

/// The host's disk fills under the agent's state directory: the queue cannot write, and
/// the sources wait with their positions where they were instead of stopping (they used
/// to stop until a restart). Once there is room every line arrives, once, and host
/// metrics go on, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_pauses_the_sources_and_loses_nothing_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let disk = SmallDisk::mount(&state, "8m");
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &state,
        &endpoint(&collector),
        "",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let with_host_metrics = text.replace("enabled: false", "enabled: true\n  interval: 1s");
    std::fs::write(&config, with_host_metrics).unwrap();
    let agent = Agent::start_on_small_disk(
        &disk,
        &["--config", config.to_str().unwrap()],
        &collector.token,
    );
    let file = logs.join("app.log");
    append_lines(&file, (0..100).map(|i| format!("fulldisk before {i}")));
    collector
        .wait_count("fulldisk AND before", 100, Some(&agent))
        .await;

    disk.fill();
    append_lines(
        &file,
        noise(7, 2_000)
            .iter()
            .enumerate()
            .map(|(i, line)| format!("fulldisk during {i} {line}")),
    );
    agent.wait_stat("queue_write_errors", 2).await;
    // Still running (`stats` requires status ok), and the refused batch is not sent.
    let during = collector.count("fulldisk AND during").await;
    assert!(during < 2_000, "the refused batch cannot have been sent");
    let metric_batches = agent.stat("metric_batches_sent").await;
    assert!(agent.stat("queue_write_failing_since_unix_ms").await > 0);

    disk.empty_filler();
    collector
        .wait_count("fulldisk AND during", 2_000, Some(&agent))
        .await;
    agent
        .wait_stat("metric_batches_sent", metric_batches + 2)
        .await;
    let log = agent.proc.log();
    for source in ["files", "host_metrics"] {
        assert!(
            log.contains("the disk queue takes batches again; the source goes on")
                && log.contains(&format!("\"source\":\"{source}\"")),
            "{source} went on:\n{log}"
        );
    }
    assert!(!log.contains("stopping host metrics"), "{log}");
    assert_eq!(agent.stat("queue_write_failing_since_unix_ms").await, 0);
    assert!(!log.contains("file tailing stopped"), "{log}");
    assert!(agent.proc.terminate(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_are_queryable_on_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let state = dir.path().join("state");
    let agent = Agent::start(
        &[
            "--collector",
            &endpoint(&collector),
            "--state-dir",
            state.to_str().unwrap(),
            "--host-metrics-interval",
            "1s",
        ],
        &collector.token,
    );
    agent.wait_stat("metric_batches_sent", 2).await;
    assert_eq!(agent.stat("export_failed_batches").await, 0);
    assert_eq!(agent.stat("export_rejected_records").await, 0);
    assert!(
        !agent.proc.log().contains(&collector.token),
        "the token is never logged"
    );

    // The host's metrics answer PromQL under their Prometheus names.
    let query = serde_urlencoded::to_string([(
        "query",
        r#"count by (__name__) ({__name__=~"system_.+"})"#,
    )])
    .unwrap();
    let url = format!("http://{}/api/v1/query?{query}", collector.api);
    let body: serde_json::Value =
        serde_json::from_slice(&common::http_get(&url, Some(&collector.token)).await).unwrap();
    let names: Vec<&str> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["__name__"].as_str().unwrap())
        .collect();
    for expected in [
        "system_cpu_time_seconds_total",
        "system_memory_usage_bytes",
        "system_network_io_bytes_total",
        "system_filesystem_usage_bytes",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let query = serde_urlencoded::to_string([(
        "query",
        "sum by (cpu_mode) (rate(system_cpu_time_seconds_total[1m]))",
    )])
    .unwrap();
    let url = format!("http://{}/api/v1/query?{query}", collector.api);
    let body: serde_json::Value =
        serde_json::from_slice(&common::http_get(&url, Some(&collector.token)).await).unwrap();
    assert!(
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["metric"]["cpu_mode"] == "user"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_and_copytruncate_delivers_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &endpoint(&collector),
        "",
    );
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    let line = |i: usize| format!("rotword {i:06} {}", "x".repeat(150));
    // Rename rotation while writing: chunks of lines a few ms apart, the rename between
    // two chunks, and the writer still appending to the renamed file before it
    // "reopens" (as a daemon does until it gets its SIGHUP).
    let mut n = 0;
    for round in 0..3 {
        for _ in 0..20 {
            append_lines(&file, (n..n + 100).map(line));
            n += 100;
            std::thread::sleep(Duration::from_millis(30));
        }
        let rotated = logs.join(format!("app.log.{round}"));
        std::fs::rename(&file, &rotated).unwrap();
        append_lines(&rotated, (n..n + 10).map(line));
        n += 10;
    }
    append_lines(&file, (n..n + 500).map(line));
    n += 500;
    collector
        .wait_count("rotword", n as u64, Some(&agent))
        .await;
    // Copytruncate: the copy is not tailed; lines after the truncation are read from 0.
    for _ in 0..2 {
        std::fs::copy(&file, logs.join("app.log.copy")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(0)
            .unwrap();
        append_lines(&file, (n..n + 700).map(line));
        n += 700;
        collector
            .wait_count("rotword", n as u64, Some(&agent))
            .await;
    }
    // Nothing arrives twice later on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(collector.count("rotword").await, n as u64);
    assert!(agent.stat("files_truncated").await >= 2);
    assert!(
        agent.stat("files_released").await >= 3,
        "rotated files are released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_collector_then_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("collector");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &format!("http://127.0.0.1:{port}"),
        "",
    );
    // The collector has never run: the agent must keep running and queue. The token is
    // made by the collector's first start, so the agent gets it from a first, short run.
    let first = Collector::start(&data, port);
    let token = first.token.clone();
    first.proc.kill_9();
    let mut agent = Agent::start(&["--config", config.to_str().unwrap()], &token);
    let before_ms = unix_ms();
    append_lines(&file, (0..300).map(|i| format!("outword {i}")));
    agent.wait_stat("export_retries", 1).await;
    agent.wait_stat("queue_batches", 1).await;
    assert!(agent.proc.is_running());
    // The queue's oldest batch: queued after `before_ms`, and its age on /metrics counts
    // at least the wait below (the collector is down, nothing leaves the queue).
    let oldest = agent.stat("queue_oldest_unix_ms").await;
    assert!((before_ms..=unix_ms()).contains(&oldest), "{oldest}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = common::http_get(&format!("http://{}/metrics", agent.health), None).await;
    let age: f64 = String::from_utf8_lossy(&page)
        .lines()
        .find_map(|l| l.strip_prefix("vantage_agent_queue_oldest_age_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the queue age on /metrics");
    assert!(age >= 1.5, "{age}");
    let collector = Collector::start(&data, port);
    collector.wait_count("outword", 300, Some(&agent)).await;
    // Drained: the age is back to 0 (the acknowledgement follows the export).
    let deadline = tokio::time::Instant::now() + common::ARRIVAL_TIMEOUT;
    while agent.stat("queue_oldest_unix_ms").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second outage while lines keep coming.
    collector.proc.kill_9();
    append_lines(&file, (300..600).map(|i| format!("outword {i}")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    append_lines(&file, (600..900).map(|i| format!("outword {i}")));
    let collector = Collector::start(&data, port);
    collector.wait_count("outword", 900, Some(&agent)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        collector.count("outword").await,
        900,
        "each line exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_9_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &endpoint(&collector),
        "",
    );
    let total = 6000usize;
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            for chunk in 0..60 {
                append_lines(
                    &file,
                    (chunk * 100..chunk * 100 + 100)
                        .map(|i| format!("killword n{i} {}", "y".repeat(100))),
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for _ in 0..4 {
        let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
        tokio::time::sleep(Duration::from_millis(700)).await;
        agent.proc.kill_9();
    }
    writer.join().unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    // No loss: every numbered line is found at least once.
    let deadline = tokio::time::Instant::now() + common::ARRIVAL_TIMEOUT;
    loop {
        if collector.count("killword").await >= total as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lines missing; agent log:\n{}",
            agent.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = collector.search("killword", 10_000).await;
    let mut seen = std::collections::HashMap::<String, u32>::new();
    for h in hits["hits"].as_array().unwrap() {
        let body = h["body"].as_str().unwrap();
        let n = body.split_whitespace().nth(1).unwrap().to_string();
        *seen.entry(n).or_default() += 1;
    }
    let missing: Vec<usize> = (0..total)
        .filter(|i| !seen.contains_key(&format!("n{i}")))
        .collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    // At-least-once: duplicates only from a kill between the collector's ack and the
    // agent's acked_lsn write (no collector-side batch dedup yet). Reported, not hidden.
    eprintln!("agent kill -9 x4: {total} lines, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_survived_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &endpoint(&collector),
        "",
    );
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    // Binary garbage.
    let garbage: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(logs.join("garbage.log"), &garbage).unwrap();
    append_lines(&logs.join("garbage.log"), ["garbageword end".to_string()]);
    // A 20 MB line, then a normal one.
    let long = logs.join("long.log");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&long).unwrap();
        let chunk = "longword ".repeat(1000);
        let mut written = 0;
        while written < 20_000_000 {
            f.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len();
        }
        f.write_all(b"\nafterlongword ok\n").unwrap();
    }
    // A file deleted while being read: deleted once the agent has opened it.
    let doomed = logs.join("doomed.log");
    append_lines(&doomed, (0..200_000).map(|i| format!("doomedword {i}")));
    let deadline = tokio::time::Instant::now() + common::ARRIVAL_TIMEOUT;
    while !agent.proc.log().contains("doomed.log") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "doomed.log never tailed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&doomed).unwrap();
    collector.wait_count("afterlongword", 1, Some(&agent)).await;
    collector.wait_count("garbageword", 1, Some(&agent)).await;
    let stats = agent.stats().await;
    assert!(stats["lines_split"].as_u64().unwrap() >= 19, "{stats}");
    assert!(stats["lines_invalid_utf8"].as_u64().unwrap() > 0, "{stats}");
    agent.wait_stat("files_released", 1).await;
    assert_eq!(agent.stat("export_failed_batches").await, 0);
    assert_eq!(
        agent.stat("files_tailed").await,
        2,
        "the deleted file is let go"
    );
}

#[test]
fn invalid_config_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "exporter:\n  endpoint: http://c:4317\n  compression: brotli\nqueue:\n  when_full: panic\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::agent_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exporter.compression (line 3)"), "{err}");
    assert!(err.contains("queue.when_full (line 5)"), "{err}");
    std::fs::write(&path, "exporter:\n  endpont: x\n").unwrap();
    let out = std::process::Command::new(common::agent_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("endpont") && err.contains("line 2"), "{err}");
}

/// The text log as systemd or a redirect sees it: stderr is a pipe, so it must carry no
/// colour codes (journald would store them as `\x1b[2m` noise).
#[test]
fn text_log_to_a_pipe_has_no_colour_codes() {
    let state = tempfile::tempdir().unwrap();
    // Killed after two seconds: by then it has logged its start and a failed export.
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "2"])
        .arg(common::agent_bin())
        .args(["run", "--collector", "http://127.0.0.1:1", "--state-dir"])
        .arg(state.path())
        .args(["--log-format", "text", "--health-listen", "127.0.0.1:0"])
        .args(["--otlp-grpc-listen", "off", "--otlp-http-listen", "off"])
        .env("VANTAGE_AGENT_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(" ready "), "{log}");
    assert!(log.contains("export failed"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
}
