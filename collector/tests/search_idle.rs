//! End to end: search-idle commits. While no one searches, the log index skips its
//! commits (the WAL holds the records); the first search asks for one and sees every
//! record, and while someone searches the index commits every interval again.

mod common;

use common::*;

const SKIPPED: &str = "vantage_log_index_commits_skipped_total";
const DOCS: &str = "vantage_log_index_docs";

async fn export(c: &Collector, word: &str, n: usize) {
    let records = (0..n)
        .map(|i| log_record(&format!("{word} record {i}"), vec![]))
        .collect();
    c.export_ok(logs_request(word, records)).await;
}

async fn metric(c: &Collector, name: &str) -> f64 {
    metric_value(&c.metrics_text().await, name, &[]).unwrap_or(0.0)
}

#[tokio::test]
async fn an_unsearched_index_skips_commits_and_the_first_search_sees_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    export(&c, "idle", 5).await;
    // No search yet: the commits that fall due are skipped (`/metrics` is no search).
    c.wait_for_metric_above(SKIPPED, 0.0).await;
    assert_eq!(metric(&c, DOCS).await, 0.0, "nothing committed yet");

    // One search, no polling: it asks for the commit and waits for it.
    let result = c.search(&[("query", "idle")]).await;
    assert_eq!(result["total"], 5, "{result}");
    assert_eq!(metric(&c, DOCS).await, 5.0);

    // Someone searched: the next records are committed within the interval, unasked.
    let skipped = metric(&c, SKIPPED).await;
    export(&c, "busy", 3).await;
    c.wait_for_metric_above(DOCS, 7.0).await;
    assert_eq!(
        metric(&c, SKIPPED).await,
        skipped,
        "no commit skipped while busy"
    );
}

#[tokio::test]
async fn an_idle_index_still_commits_every_idle_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__IDLE_COMMIT_INTERVAL_MS", "2000")
        .start(dir.path());
    export(&c, "unwatched", 4).await;
    // Committed without a search, after skipping the commits due before.
    c.wait_for_metric_above(DOCS, 3.0).await;
    assert!(metric(&c, SKIPPED).await >= 1.0);
}

#[tokio::test]
async fn search_idle_after_zero_commits_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LOGS__SEARCH_IDLE_AFTER_MS", "0")
        .start(dir.path());
    export(&c, "eager", 4).await;
    c.wait_for_metric_above(DOCS, 3.0).await;
    assert_eq!(metric(&c, SKIPPED).await, 0.0);
    let config = c.api_get("/api/v1/status/config").await.json();
    assert_eq!(
        config["config"]["logs"]["search_idle_after_ms"], 0,
        "the effective setting is shown: {config}"
    );
}
