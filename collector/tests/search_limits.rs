//! End to end: a log search gives up at its timeout with a 503 that says so (never a
//! partial answer), and at most `logs.max_concurrent_searches` run at once; one that
//! finds no free slot within its time is told to retry. Live tails are bounded per
//! tenant, end when their client leaves, and end with an `error` event when a poll fails.
//! The hits of a search or a tail poll hold at most `logs.max_hits_bytes` of records.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::{Method, StatusCode};
use prost::Message as _;
use serde_json::{Value, json};

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

/// The next named event of a live tail, `None` once the stream has ended; keep-alive
/// comments are skipped.
async fn next_tail_event(
    body: &mut hyper::body::Incoming,
    pending: &mut String,
) -> Option<(String, Value)> {
    use http_body_util::BodyExt as _;
    loop {
        if let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let data = serde_json::from_str(&data).expect("event data is JSON");
            return Some((name, data));
        }
        let frame = tokio::time::timeout(SEARCHABLE_TIMEOUT, body.frame())
            .await
            .expect("a tail event or the end of the stream in time")?
            .expect("a tail frame");
        if let Ok(data) = frame.into_data() {
            pending.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Polls `/metrics` until `vantage_log_tails_open` is `open`.
async fn wait_for_open_tails(c: &Collector, open: f64) {
    let reached = c
        .metric_reaches("vantage_log_tails_open", |v| v == open, SEARCHABLE_TIMEOUT)
        .await;
    assert!(
        reached,
        "vantage_log_tails_open never reached {open}:\n{}",
        c.metrics_text().await
    );
}

/// A tenant holds at most `logs.max_live_tails`; the next is refused with 429 and
/// Retry-After, and other tenants are not held back. A tail whose client went away is
/// closed even when its query never matches (it used to poll until shutdown), which
/// frees its place.
#[tokio::test]
async fn live_tails_are_bounded_per_tenant_and_end_when_their_client_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__MAX_LIVE_TAILS", "2")
        .start(dir.path());
    let first = c.open_tail("nothing-matches-this").await;
    let second = c.open_tail("nothing-matches-this").await;
    let refused = c.api_get("/api/v1/logs/tail?query=x").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text()
    );
    assert_eq!(
        refused.json()["error"],
        "this tenant has reached its limit of live tails (logs.max_live_tails: 2); close one or retry later"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("5"));

    let json_body = [("content-type", "application/json")];
    let reply = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &json_body,
            json!({"name": "team-b"}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let reply = c
        .api_request(
            Method::POST,
            "/api/v1/keys",
            &json_body,
            json!({"name": "b", "scopes": ["query"], "tenant": "team-b"}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let team_b = format!("Bearer {}", reply.json()["key"].as_str().expect("a key"));
    let other_tenant = c.open_tail_as(Some(&team_b), "x").await;
    wait_for_open_tails(&c, 3.0).await;

    drop(first);
    wait_for_open_tails(&c, 2.0).await;
    let third = c.open_tail("x").await;
    drop((second, third, other_tenant));
    wait_for_open_tails(&c, 0.0).await;
}

/// A poll that fails for a reason another poll would not cure ends the tail with an
/// `error` event carrying the API's error body (here: polls over records arriving faster
/// than a 1 ms `logs.search_timeout` lets a poll read them), and the CLI prints it and
/// exits non-zero instead of waiting forever.
#[tokio::test]
async fn a_tail_whose_poll_fails_ends_with_an_error_event_and_the_cli_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__SEARCH_TIMEOUT", "1ms")
        .start(dir.path());
    let mut tail = c.open_tail("bulk").await;
    let token = [("VANTAGE_TOKEN", c.token())];
    let cli = c.cli(&["logs", "tail", "bulk"], &token);
    let load = async {
        // Each poll reads what arrived since the last one: thousands of records, more
        // than 1 ms of reading.
        for b in 0..100 {
            let records = (0..1_000)
                .map(|i| log_record(&format!("bulk record {b} {i}"), vec![]))
                .collect();
            c.export_ok(logs_request("svc", records)).await;
        }
    };
    let read = async {
        let mut pending = String::new();
        let mut logs = 0;
        loop {
            match next_tail_event(&mut tail, &mut pending).await {
                Some((name, data)) if name == "error" => {
                    let end = next_tail_event(&mut tail, &mut pending).await;
                    assert!(end.is_none(), "the tail ended after its error: {end:?}");
                    return data;
                }
                Some((name, _)) => {
                    assert_eq!(name, "log");
                    logs += 1;
                }
                None => panic!("the tail ended without an error event after {logs} records"),
            }
        }
    };
    let (error, output, ()) = tokio::join!(read, cli, load);
    assert_eq!(error["status"], "error", "{error}");
    assert_eq!(error["errorType"], "timeout", "{error}");
    assert_eq!(
        error["error"],
        "the search did not finish within 1ms: narrow the time range or the query"
    );
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the live tail ended: the search did not finish within 1ms"),
        "{stderr}"
    );
    wait_for_open_tails(&c, 0.0).await;
}

/// A page whose records hold more than `logs.max_hits_bytes` is refused, saying how many
/// hits fit, rather than held in memory several times over or cut short unsaid; a tail
/// shows what fits of a batch and goes on.
#[tokio::test]
async fn hits_over_max_hits_bytes_are_refused_with_how_many_fit_and_tails_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__MAX_HITS_BYTES", "35000")
        .start(dir.path());
    let mut tail = c.open_tail("big").await;
    // Ten records of ~10 KB in one export.
    let records = (0..10)
        .map(|i| log_record(&format!("big {i} {}", "x".repeat(10_000)), vec![]))
        .collect();
    c.export_ok(logs_request("svc", records)).await;
    c.wait_for_total(&[("query", "big"), ("limit", "0")], 10)
        .await;

    let refused = c.search_raw(&[("query", "big"), ("limit", "10")]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert_eq!(
        refused.json()["error"],
        "the 10 hits asked for hold more than 35000 bytes of records (logs.max_hits_bytes); \
         the first 3 fit: ask for that many or fewer, or narrow the query"
    );
    let fits: Value = c
        .search(&[("query", "big"), ("limit", "3"), ("order", "asc")])
        .await;
    assert_eq!(fits["total"], 10);
    assert_eq!(fits["hits"].as_array().map(Vec::len), Some(3));

    // The batch alone fills a poll: the tail shows what fits of it and moves on to what
    // comes next (a live view, not an export).
    c.export_ok(logs_request(
        "svc",
        vec![log_record("big small one", vec![])],
    ))
    .await;
    let events = read_tail_until(&mut tail, "big small one").await;
    assert_eq!(events.len(), 4, "three of the batch, then the next record");
}
