//! End to end: a log search gives up at its timeout with a 503 that says so (never a
//! partial answer), and at most `logs.max_concurrent_searches` run at once; one that
//! finds no free slot within its time is told to retry.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use prost::Message as _;
use serde_json::Value;

use common::*;

const RECORDS: usize = 20_000;

/// `RECORDS` records with the word `bulk`, in batches of 1,000; waits until all are
/// searchable.
async fn fill(c: &Collector) {
    let protobuf = [("content-type", "application/x-protobuf")];
    for b in 0..RECORDS / 1_000 {
        let records = (0..1_000)
            .map(|i| log_record(&format!("bulk record {b} {i} gateway timeout"), vec![]))
            .collect();
        let reply = c
            .post_otlp(
                "/v1/logs",
                &protobuf,
                logs_request("svc", records).encode_to_vec(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    c.wait_for_query("bulk", RECORDS as u64).await;
}

/// Every record, newest 10,000 with their documents, and a per-second histogram: the
/// most one search may ask for.
const HEAVY: [(&str, &str); 4] = [
    ("query", ""),
    ("limit", "10000"),
    ("histogram", "1s"),
    ("start", "now-1h"),
];

fn with_timeout(timeout: &str) -> Vec<(&str, &str)> {
    let mut params = HEAVY.to_vec();
    params.push(("timeout", timeout));
    params
}

#[tokio::test]
async fn a_search_past_its_timeout_is_a_503_that_says_so_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder().start(dir.path());
    fill(&c).await;

    let full: Value = c.search(&HEAVY).await;
    assert_eq!(full["total"], RECORDS as u64);
    assert_eq!(full["hits"].as_array().unwrap().len(), 10_000);

    // Reading 20,000 records and 10,000 documents takes far longer than a millisecond.
    let late = c.search_raw(&with_timeout("1ms")).await;
    assert_eq!(
        late.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        late.text()
    );
    let body: Value = late.json();
    assert_eq!(body["errorType"], "timeout", "{body}");
    assert_eq!(
        body["error"],
        "the search did not finish within 1ms: narrow the time range or the query"
    );
    assert!(body.get("hits").is_none(), "no partial answer: {body}");

    // A request's timeout can shorten the configured one, not say nothing.
    for bad in ["0s", "soon", "5"] {
        let reply = c.search_raw(&with_timeout(bad)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.text()
        );
        assert!(reply.text().contains("timeout"), "{}", reply.text());
    }
    let roomy: Value = c.search(&with_timeout("10m")).await;
    assert_eq!(roomy["total"], RECORDS as u64);

    // The CLI passes its --timeout and prints the API's answer.
    let token = c.token().to_string();
    let env = [("VANTAGE_TOKEN", token.as_str())];
    let out = c
        .cli(
            &["logs", "search", "", "--limit", "10000", "--timeout", "1ms"],
            &env,
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("did not finish within 1ms"),
        "{stderr}"
    );
    let out = c
        .cli(
            &["logs", "search", "bulk", "--limit", "1", "--timeout", "1m"],
            &env,
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-- 1 of 20000 matching records"),
        "{stdout}"
    );

    let text = c.metrics_text().await;
    let searches =
        |outcome| metric_value(&text, "vantage_log_searches_total", &[("outcome", outcome)]);
    assert_eq!(searches("timeout"), Some(2.0), "{text}");
    assert!(searches("ok").is_some_and(|n| n >= 3.0), "{text}");
    assert_eq!(
        metric_value(&text, "vantage_log_searches_running", &[]),
        Some(0.0)
    );
    c.assert_still_serves("after-timeout").await;
}

#[tokio::test]
async fn a_search_that_finds_no_free_slot_in_time_is_told_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__MAX_CONCURRENT_SEARCHES", "1")
        .env("VANTAGE_LOGS__SEARCH_TIMEOUT", "5m")
        .start(dir.path());
    fill(&c).await;

    // One heavy search after another holds the only slot; a short search sent meanwhile
    // waits for it and gives up when its time runs out.
    let busy = AtomicBool::new(true);
    let hog = async {
        while busy.load(Ordering::Relaxed) {
            let reply = c.search_raw(&HEAVY).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
    };
    let probe = async {
        let mut seen = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let reply = c
                .search_raw(&[("query", "bulk"), ("limit", "1"), ("timeout", "50ms")])
                .await;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE
                && reply.json()["errorType"] == "unavailable"
            {
                seen = Some(reply);
                break;
            }
        }
        busy.store(false, Ordering::Relaxed);
        seen
    };
    let ((), refused) = tokio::join!(hog, probe);
    let refused = refused.expect("a search found the only slot taken");
    assert_eq!(
        refused.json()["error"],
        "no search slot came free within the search's 50ms: 1 searches are running \
         (logs.max_concurrent_searches); retry later"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));

    let text = c.metrics_text().await;
    assert!(
        metric_value(&text, "vantage_log_searches_total", &[("outcome", "busy")])
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Once the slot is free, a search runs.
    let found: Value = c
        .search(&[("query", "bulk"), ("limit", "1"), ("timeout", "30s")])
        .await;
    assert_eq!(found["total"], RECORDS as u64);
}

#[tokio::test]
async fn a_search_whose_client_goes_away_stops_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__MAX_CONCURRENT_SEARCHES", "1")
        .start(dir.path());
    fill(&c).await;
    let cancelled = |text: &str| {
        metric_value(
            text,
            "vantage_log_searches_total",
            &[("outcome", "cancelled")],
        )
        .unwrap_or(0.0)
    };
    // The client gives up long before a search of everything can finish.
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    loop {
        let gave_up = tokio::time::timeout(Duration::from_millis(20), c.search_raw(&HEAVY)).await;
        assert!(gave_up.is_err(), "the search finished within 20 ms");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = c.metrics_text().await;
        if cancelled(&text) >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no search was cancelled:\n{text}"
        );
    }
    // Its only slot is free again: the next search runs.
    let found: Value = c
        .search(&[("query", "bulk"), ("limit", "1"), ("timeout", "30s")])
        .await;
    assert_eq!(found["total"], RECORDS as u64);
    let text = c.metrics_text().await;
    assert_eq!(
        metric_value(&text, "vantage_log_searches_running", &[]),
        Some(0.0),
        "{text}"
    );
}
