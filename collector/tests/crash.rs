//! End to end: the durability contract. Whatever the collector acknowledged survives a
//! `kill -9` and is searchable exactly once after the restart (WAL replay plus the index
//! checkpoint), across repeated crashes; a SIGTERM shutdown keeps everything and leaves
//! nothing to replay.

mod common;

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::{Value, json};
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

use common::*;

const RECORDS_PER_BATCH: u64 = 200;
const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// Batch `batch` of round `round`: records with unique `uid`s.
fn batch(round: i64, batch: u64) -> ExportLogsServiceRequest {
    let records = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let uid = batch * RECORDS_PER_BATCH + i;
            log_record(
                &format!("crash record {uid}"),
                vec![
                    kv_int("uid", uid as i64),
                    kv_int("batch", batch as i64),
                    kv_int("round", round),
                ],
            )
        })
        .collect();
    logs_request("crash", records)
}

/// Sends `batches` concurrently over one HTTP/2 channel; returns once every one is acked.
async fn send_batches(c: &Collector, round: i64, batches: std::ops::Range<u64>) {
    let client = c.logs_client().await;
    let sends = batches.map(|b| {
        let mut client = client.clone();
        async move {
            let response = client
                .export(batch(round, b))
                .await
                .unwrap_or_else(|s| panic!("batch {b} of round {round} failed: {s:?}"))
                .into_inner();
            assert_eq!(
                response.partial_success, None,
                "batch {b}: nothing rejected"
            );
        }
    });
    join_all(sends).await;
}

/// The `uid`s of every record of `round`, asserting none appears twice.
async fn uids_of_round(c: &Collector, round: i64, expected: u64) -> BTreeSet<u64> {
    let query = format!("attributes.round:{round}");
    let result = c
        .search(&[("query", &query), ("limit", "10000"), ("start", "now-2h")])
        .await;
    assert_eq!(
        result["total"],
        json!(expected),
        "round {round}: every acknowledged record, once; collector log:\n{}",
        c.log()
    );
    let uids: Vec<u64> = hits(&result)
        .iter()
        .map(|h| h["attributes"]["uid"].as_u64().expect("uid is an int"))
        .collect();
    let unique: BTreeSet<u64> = uids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        uids.len(),
        "round {round}: {} records are duplicates",
        uids.len() - unique.len()
    );
    unique
}

/// How many WAL batches the collector said it replayed at start.
fn replayed_batches(c: &Collector) -> u64 {
    let events = c.log_events("wal replayed into the log index");
    assert_eq!(events.len(), 1, "one replay per start:\n{}", c.log());
    events[0]["batches"].as_u64().expect("batches is a number")
}

#[tokio::test]
async fn kill_9_right_after_the_acks_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();

    // Round 1: 50 batches of 200. Half of them first, until some are indexed and
    // committed, so the crash leaves the index holding part of what the WAL holds.
    let c = Collector::start(dir.path());
    send_batches(&c, 1, 0..25).await;
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    while c.search(&[("query", "attributes.round:1")]).await["total"] == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing indexed in time:\n{}",
            c.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    send_batches(&c, 1, 25..50).await;
    c.kill_9();

    let c = Collector::start(dir.path());
    assert!(
        replayed_batches(&c) > 0,
        "the crash left acknowledged batches for replay to index"
    );
    // Ready means replayed: everything is searchable at once, no waiting.
    let uids = uids_of_round(&c, 1, 10_000).await;
    assert_eq!(uids, (0..10_000).collect::<BTreeSet<_>>(), "every uid");

    // Round 2 on the restarted collector, then a second crash.
    send_batches(&c, 2, 50..60).await;
    c.kill_9();

    let c = Collector::start(dir.path());
    assert!(replayed_batches(&c) > 0);
    let uids = uids_of_round(&c, 1, 10_000).await;
    assert_eq!(uids.len(), 10_000, "round 1 is not indexed a second time");
    let uids = uids_of_round(&c, 2, 2_000).await;
    assert_eq!(uids, (10_000..12_000).collect::<BTreeSet<_>>());
    assert_eq!(c.search(&[("query", "")]).await["total"], json!(12_000));

    // And the restarted collector still takes new data.
    c.assert_still_serves("after-crashes").await;
}

#[tokio::test]
async fn sigterm_commits_everything_and_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    send_batches(&c, 1, 0..5).await;
    // Stop at once: the index has not had its periodic commit for all of these yet.
    let (status, log) = c.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status:?}:\n{log}");
    assert!(log.contains("\"message\":\"stopped\""), "{log}");

    let c = Collector::start(dir.path());
    assert_eq!(
        replayed_batches(&c),
        0,
        "a graceful stop commits the index, so there is nothing to replay"
    );
    let uids = uids_of_round(&c, 1, 1_000).await;
    assert_eq!(uids, (0..1_000).collect::<BTreeSet<_>>());
    let ready = c.api_get("/readyz").await;
    assert_eq!(ready.status, hyper::StatusCode::OK);
    c.assert_still_serves("after-sigterm").await;
}

/// One record per UTC day for `days` days back, in one batch.
fn batch_across_days(days: u64) -> ExportLogsServiceRequest {
    let now = now_ns();
    let records = (0..days)
        .map(|d| {
            let mut r = log_record(
                &format!("day {d}"),
                vec![kv_int("uid", d as i64), kv_str("case", "days")],
            );
            r.time_unix_nano = now - d * DAY_NS - 1_000_000_000;
            r
        })
        .collect();
    logs_request("backfill", records)
}

async fn count_days_records(c: &Collector) -> Value {
    c.search(&[
        ("query", "attributes.case:days"),
        ("start", "now-5d"),
        ("limit", "100"),
    ])
    .await
}

#[tokio::test]
async fn records_spanning_several_days_survive_sigterm_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    c.export_ok(batch_across_days(2)).await;
    c.wait_for_total(&[("query", "attributes.case:days"), ("start", "now-5d")], 2)
        .await;
    c.kill_9();
    let c = Collector::start(dir.path());
    let result = count_days_records(&c).await;
    assert_eq!(result["total"], json!(2), "{result}");
    let (status, _) = c.terminate().await;
    assert!(status.success());
    let c = Collector::start(dir.path());
    assert_eq!(count_days_records(&c).await["total"], json!(2));
}

#[tokio::test]
async fn kill_9_after_a_batch_spanning_three_days_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No periodic commit during the test: the only commit is the one the indexer makes
    // when it runs out of open writers (2) and evicts the least recently used.
    let c = Collector::builder()
        .env("VANTAGE_LOGS__COMMIT_INTERVAL_MS", "60000")
        .start(dir.path());
    c.export_ok(batch_across_days(3)).await;
    // Today's record becomes searchable through that eviction commit.
    c.wait_for_total(&[("query", "attributes.case:days"), ("start", "now-5d")], 1)
        .await;
    c.kill_9();

    let c = Collector::start(dir.path());
    let result = count_days_records(&c).await;
    let uids: Vec<u64> = hits(&result)
        .iter()
        .map(|h| h["attributes"]["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        result["total"],
        json!(3),
        "each of the 3 records once; uids found: {uids:?}"
    );
}

/// A connected tail (raw, and `vantage logs tail`) must not turn a SIGTERM into a hang
/// or an unclean stop; the CLI says the collector closed it and exits non-zero.
#[tokio::test]
async fn sigterm_with_an_open_tail_still_stops_promptly_and_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    send_batches(&c, 1, 0..2).await;
    let tail = c.open_tail("").await;
    let mut cli = tokio::process::Command::new(cli_bin());
    cli.arg("--url")
        .arg(format!("http://{}", c.addrs.api))
        .args(["logs", "tail", ""])
        .env("VANTAGE_TOKEN", c.token())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let cli = tokio::time::timeout(std::time::Duration::from_secs(30), cli.output());
    let stop = async move {
        // Both tails connected, or the test stops here instead of hanging.
        let connected = c
            .metric_reaches("vantage_log_tails_open", |v| v == 2.0, SEARCHABLE_TIMEOUT)
            .await;
        assert!(connected, "the CLI's tail never connected");
        let asked = tokio::time::Instant::now();
        let stopped = c.terminate().await;
        (stopped, asked.elapsed())
    };
    let (cli, ((status, log), took)) = tokio::join!(cli, stop);
    let cli = cli
        .expect("the CLI ends with the collector")
        .expect("run the CLI");
    drop(tail);
    assert!(!cli.status.success(), "{cli:?}");
    assert!(
        String::from_utf8_lossy(&cli.stderr)
            .contains("the collector closed the live tail (it is stopping or restarting)"),
        "{cli:?}"
    );
    assert!(status.success(), "SIGTERM exits 0, got {status:?}:\n{log}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "a tail client must not hold up shutdown: {took:?}:\n{log}"
    );
    assert!(!log.contains("servers did not stop in time"), "{log}");
    let c = Collector::start(dir.path());
    assert_eq!(
        replayed_batches(&c),
        0,
        "a graceful stop leaves nothing to replay"
    );
    uids_of_round(&c, 1, 2 * RECORDS_PER_BATCH).await;
}

/// A record of `DISK_BATCH` per batch with a 2 KB body that does not compress, so a
/// small disk fills after a few thousand records.
const DISK_BATCH: u64 = 50;

fn bulky_batch(batch: u64) -> ExportLogsServiceRequest {
    let records = (0..DISK_BATCH)
        .map(|i| {
            let uid = batch * DISK_BATCH + i;
            log_record(
                &format!("fulldisk {}", incompressible_words(uid, 120)),
                vec![kv_int("uid", uid as i64), kv_str("case", "fulldisk")],
            )
        })
        .collect();
    logs_request("fulldisk", records)
}

/// The failure line of a failing index.
const INDEX_FAILED: &str =
    "index failed; what it had not committed stays in the wal and is indexed again on retry";

/// A collector with room for a few thousand bulky records.
fn on_small_disk(disk: &SmallDisk) -> CollectorBuilder {
    Collector::builder()
        .insecure_no_auth()
        .on_small_disk(disk)
        .env("VANTAGE_WAL__SEGMENT_MAX_BYTES", "4194304")
        // One page of up to 10,000 records of 2 KB checks every uid: past the default 16 MiB.
        .env("VANTAGE_LOGS__MAX_HITS_BYTES", "67108864")
}

/// Exports bulky batches until one is refused, which must be a retryable refusal;
/// returns the acknowledged batch numbers.
async fn export_until_refused(c: &Collector, client: &mut LogsClient) -> Vec<u64> {
    let mut acked: Vec<u64> = Vec::new();
    let refused = loop {
        let b = acked.len() as u64;
        assert!(b < 2_000, "the disk never filled:\n{}", c.log());
        match client.export(bulky_batch(b)).await {
            Ok(_) => acked.push(b),
            Err(status) => break status,
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "a full disk is a retryable refusal: {refused:?}"
    );
    assert!(refused.message().contains("durable"), "{refused:?}");
    acked
}

/// Exports the next bulky batch, retrying while it is refused (as OTel SDKs retry
/// UNAVAILABLE), and records it.
async fn export_with_room(c: &Collector, client: &mut LogsClient, acked: &mut Vec<u64>) {
    let b = acked.len() as u64;
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    while let Err(status) = client.export(bulky_batch(b)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused with room: {status:?}\n{}",
            c.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    acked.push(b);
}

/// Every record of the `batches` acknowledged bulky batches is searchable, once, and the
/// index said it recovered.
async fn assert_every_bulky_record_once(c: &Collector, batches: usize) {
    let expected = batches as u64 * DISK_BATCH;
    let query = [("query", "attributes.case:fulldisk"), ("start", "now-2h")];
    // Every acknowledged record is indexed again after the failure: on a loaded machine a
    // debug build takes longer than a fresh record's wait.
    let result = c
        .wait_for_total_within(&query, expected, std::time::Duration::from_secs(60))
        .await;
    assert_eq!(result["total"], json!(expected));
    assert!(expected <= 10_000, "one page holds them all: {expected}");
    let page = c.search(&[query[0], query[1], ("limit", "10000")]).await;
    let uids: Vec<u64> = hits(&page)
        .iter()
        .map(|h| h["attributes"]["uid"].as_u64().expect("uid is an int"))
        .collect();
    let unique: BTreeSet<u64> = uids.iter().copied().collect();
    assert_eq!(unique.len(), uids.len(), "no record twice");
    assert_eq!(
        unique,
        (0..expected).collect::<BTreeSet<_>>(),
        "every uid, once"
    );
    assert!(
        !c.log_events("index recovered; the wal since its last commit is indexed")
            .is_empty(),
        "{}",
        c.log()
    );
}

/// A full disk: exports are refused as UNAVAILABLE (retryable) instead of acknowledged,
/// the failing index keeps what it committed searchable, and once there is room again,
/// exports are taken and every acknowledged record becomes searchable exactly once,
/// without a restart.
#[tokio::test]
async fn a_full_disk_refuses_exports_and_loses_nothing_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "24m");
    let c = on_small_disk(&disk).start(dir.path());
    let mut client = c.logs_client().await;
    let mut acked = export_until_refused(&c, &mut client).await;
    let refused_groups = metric_value(
        &c.metrics_text().await,
        "vantage_wal_write_failures_total",
        &[("signal", "logs")],
    );
    assert!(
        refused_groups.is_some_and(|n| n >= 1.0),
        "the refused writes are counted: {refused_groups:?}"
    );

    // The index's commits need room too: it fails, and says so.
    c.wait_for_metric_above("vantage_log_index_errors_total", 0.0)
        .await;
    let free = c
        .log_events(INDEX_FAILED)
        .first()
        .and_then(|e| e["disk_free_bytes"].as_u64())
        .unwrap_or_else(|| panic!("the failure names the free space:\n{}", c.log()));
    assert!(free < 1 << 20, "the disk was full: {free} bytes free");
    let during = c
        .search_raw(&[("query", "attributes.case:fulldisk"), ("start", "now-2h")])
        .await;
    assert_eq!(during.status, hyper::StatusCode::OK, "{}", during.text());

    disk.resize("512m");
    for _ in 0..5 {
        export_with_room(&c, &mut client, &mut acked).await;
    }
    assert_every_bulky_record_once(&c, acked.len()).await;
}

/// A restart while the disk is still full: the collector starts anyway (it used to exit
/// on the failed WAL replay), answers searches from what it had committed, takes
/// exports again once there is room, and then indexes everything acknowledged before
/// the crash and after it, once.
#[tokio::test]
async fn a_restart_on_a_full_disk_serves_searches_and_indexes_the_wal_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "24m");
    let builder = on_small_disk(&disk);
    let c = builder.start(dir.path());
    let mut acked = export_until_refused(&c, &mut c.logs_client().await).await;
    // Failed, the index holds less than the WAL: the restart has something to replay.
    c.wait_for_metric_above("vantage_log_index_errors_total", 0.0)
        .await;
    c.kill_9();
    // Whatever the killed writers held is not given back: the disk stays full.
    disk.fill();

    let c = builder
        .try_start(dir.path())
        .unwrap_or_else(|e| panic!("no start on a full disk: {e}"));
    let replay_failed = c
        .log_events(INDEX_FAILED)
        .into_iter()
        .find(|e| e["what"] == "replay")
        .unwrap_or_else(|| panic!("the failed replay is logged:\n{}", c.log()));
    assert_eq!(replay_failed["signal"], "log", "{replay_failed}");
    let during = c
        .search_raw(&[("query", "attributes.case:fulldisk"), ("start", "now-2h")])
        .await;
    assert_eq!(during.status, hyper::StatusCode::OK, "{}", during.text());
    let committed = during.json()["total"].as_u64().expect("a total");
    assert!(
        committed < acked.len() as u64 * DISK_BATCH,
        "the test needs records left to replay: {committed} of {} committed",
        acked.len() as u64 * DISK_BATCH
    );

    disk.resize("512m");
    let mut client = c.logs_client().await;
    for _ in 0..3 {
        export_with_room(&c, &mut client, &mut acked).await;
    }
    assert_every_bulky_record_once(&c, acked.len()).await;
}
