//! Log processing and delivery end to end, real agent and real collector: a Java stack
//! trace arrives as one record, a JSON line with its attributes, severity and own
//! timestamp, a card number never reaches the collector; and with a collector that
//! answers too late for the agent (so the agent retries batches the collector stored)
//! and restarts mid-stream, every line arrives exactly once.

mod common;

use std::time::Duration;

use common::{Agent, Collector, append_lines, free_port, write_config};

fn endpoint(c: &Collector) -> String {
    format!("http://{}", c.grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_traces_json_lines_and_redaction_reach_the_collector_processed() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let java = logs.join("java.log");
    let json = logs.join("app.json");
    // The JSON input: severity, own timestamp (five minutes ago), message, nested
    // fields, and a card number inside a string attribute.
    let config_extra = format!(
        "      multiline:\n        start: '^\\d{{4}}-\\d\\d-\\d\\d '\n        timeout: 500ms\n    - include: [\"{}\"]\n      start_at: beginning\n      parse: json\n      redact: [credit_card]\n",
        json.display()
    );
    let config = write_config(
        dir.path(),
        &java.display().to_string(),
        &dir.path().join("state"),
        &endpoint(&collector),
        &config_extra,
    );
    // Global redaction too: the card in the Java input is redacted by it.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("redact:\n  - credit_card\n  - {{pattern: 'secret=\\w+', replacement: 'secret=***'}}\n{text}")).unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    append_lines(
        &java,
        [
            "2026-11-26 04:00:00 ERROR javaword request failed card 4111 1111 1111 1111 secret=hunter2",
            "java.lang.IllegalStateException: boom",
            "\tat com.example.Service.handle(Service.java:42)",
            "\tat com.example.Server.run(Server.java:7)",
            "Caused by: java.io.IOException: disk",
            "\t... 2 more",
            "2026-11-26 04:00:01 INFO javaword next request",
        ]
        .map(String::from),
    );
    let five_minutes_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let ts = five_minutes_ago
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    append_lines(
        &json,
        [
            format!(
                r#"{{"level":"error","time":"{ts}","msg":"jsonword payment declined","http":{{"status":502,"route":"/pay"}},"card":"5500 0000 0000 0004","user":"ann"}}"#
            ),
            "jsonword this line is not json {".to_string(),
        ],
    );

    // Two Java records: the trace (6 lines) and the next one, flushed by the timeout.
    collector.wait_count("javaword", 2, Some(&agent)).await;
    let hits = collector
        .search("javaword AND IllegalStateException", 5)
        .await;
    assert_eq!(hits["total"], 1, "{hits}");
    let body = hits["hits"][0]["body"].as_str().unwrap().to_string();
    assert_eq!(body.lines().count(), 6, "{body}");
    assert!(body.contains("Server.java:7") && body.contains("... 2 more"));
    assert!(!body.contains("4111"), "card redacted: {body}");
    assert!(body.contains("[REDACTED:credit_card]") && body.contains("secret=***"));

    collector.wait_count("jsonword", 2, Some(&agent)).await;
    let hits = collector.search("jsonword AND declined", 5).await;
    let hit = &hits["hits"][0];
    assert_eq!(hit["body"], "jsonword payment declined", "{hit}");
    assert_eq!(hit["severity_number"], 17);
    assert_eq!(hit["severity_text"], "error");
    let want_ns = five_minutes_ago.unix_timestamp_nanos() as u64;
    assert_eq!(
        hit["time_unix_nano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        want_ns
    );
    assert_eq!(hit["attributes"]["http.status"], 502);
    assert_eq!(hit["attributes"]["http.route"], "/pay");
    assert_eq!(hit["attributes"]["user"], "ann");
    assert_eq!(hit["attributes"]["card"], "[REDACTED:credit_card]");
    // The line that is not JSON is kept as plain text.
    let hits = collector.search("jsonword AND \"not json\"", 5).await;
    assert_eq!(hits["total"], 1, "{hits}");
    // No card number anywhere on the collector.
    for q in ["4111", "\"5500 0000 0000 0004\"", "5500", "hunter2"] {
        assert_eq!(collector.count(q).await, 0, "{q} reached the collector");
    }
    let stats = agent.stats().await;
    assert_eq!(stats["multiline_records"], 1, "{stats}");
    assert_eq!(stats["json_lines_parsed"], 1);
    assert_eq!(stats["json_lines_invalid"], 1);
    assert_eq!(stats["records_redacted"], 2);
    assert_eq!(stats["redactions"], 3);
    assert!(agent.proc.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_and_a_collector_restart_deliver_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("collector");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    let collector = Collector::start(&data, port);
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &dir.path().join("state"),
        &format!("http://127.0.0.1:{port}"),
        "",
    );
    // A deadline shorter than the collector's fsync of a large batch: the agent gives up
    // on requests the collector then stores, and sends them again with the same id.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  retry_initial_backoff: 100ms\n",
        "  retry_initial_backoff: 50ms\n  request_timeout: 150ms\n  batch_max_records: 2000\n",
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    let pad = "x".repeat(150);
    append_lines(&file, (0..6000).map(|i| format!("onceword {i} {pad}")));
    agent.wait_stat("log_records_sent", 1).await;
    // A crash mid-stream, more lines while it is down, then back.
    collector.proc.kill_9();
    append_lines(&file, (6000..12000).map(|i| format!("onceword {i} {pad}")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let collector = Collector::start(&data, port);
    collector.wait_count("onceword", 12_000, Some(&agent)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        collector.count("onceword").await,
        12_000,
        "each line exactly once"
    );
    let retries = agent.stat("export_retries").await;
    assert!(retries > 0, "the agent retried");
    eprintln!(
        "export retries {retries}, duplicates dropped by the restarted collector: {:?}",
        common::http_get(
            &format!("http://{}/metrics", collector.api),
            Some(&collector.token)
        )
        .await
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .find(|l| l.starts_with("vantage_ingest_duplicate_batches_total"))
    );
}
