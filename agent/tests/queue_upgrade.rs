//! Queue compatibility across an agent upgrade, against the real collector: batches left
//! in the disk queue by older agents (uncompressed, envelope versions 1 and 3) are sent
//! and searchable after the upgrade, replays of one batch id are stored once, and batches
//! compressed at enqueue (version 4) arrive intact beside freshly tailed lines.

mod common;

use bytes::Bytes;
use common::{Agent, Collector, append_lines, write_config};
use prost::Message as _;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, any_value};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_storage::wal::{Wal, WalOptions};

/// An encoded logs request of `n` lines `"{word} {i}"`.
fn request(word: &str, n: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: now,
                        observed_time_unix_nano: now,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("{word} {i}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// No file positions (the `u32` count 0 of the position list).
const NO_POSITIONS: [u8; 4] = [0; 4];
const LOGS: u8 = 1;

/// Version 1: `1 | kind | positions | request`.
fn v1(request: &[u8]) -> Bytes {
    let mut out = vec![1, LOGS];
    out.extend_from_slice(&NO_POSITIONS);
    out.extend_from_slice(request);
    Bytes::from(out)
}

/// Version 3: `3 | kind | id | enqueued ms | positions | request`.
fn v3(id: u128, request: &[u8]) -> Bytes {
    let mut out = vec![3, LOGS];
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    out.extend_from_slice(&NO_POSITIONS);
    out.extend_from_slice(request);
    Bytes::from(out)
}

/// Version 4: `4 | kind | id | enqueued ms | stored (1: zstd) | items | raw bytes |
/// positions | compressed request`.
fn v4_zstd(id: u128, request: &[u8], items: u64) -> Bytes {
    let mut out = vec![4, LOGS];
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    out.push(1);
    out.extend_from_slice(&items.to_le_bytes());
    out.extend_from_slice(&(request.len() as u64).to_le_bytes());
    out.extend_from_slice(&NO_POSITIONS);
    out.extend_from_slice(&zstd::encode_all(request, 1).unwrap());
    Bytes::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_batches_of_every_version_arrive_once_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("collector"), 0);
    let state = dir.path().join("state");
    // The queue an older agent left behind (plus version-4 records, as this one writes).
    {
        let wal = Wal::open(WalOptions::new(state.join("queue")), None, None).unwrap();
        let old = request("upgradeword", 40);
        for payload in [
            v3(0xAAAA, &old),
            // The same batch again (an older agent resent it before a crash).
            v3(0xAAAA, &old),
            v1(&request("oldestword", 10)),
            v4_zstd(0xBBBB, &request("zstdword", 25), 25),
            v4_zstd(0xBBBB, &request("zstdword", 25), 25),
        ] {
            wal.append(payload).await.unwrap();
        }
        tokio::task::spawn_blocking(move || wal.shutdown().unwrap())
            .await
            .unwrap();
    }
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("app.log");
    append_lines(&file, (0..30).map(|i| format!("freshword line {i}")));
    let config = write_config(
        dir.path(),
        &format!("{}/*.log", logs.display()),
        &state,
        &format!("http://{}", collector.grpc),
        "",
    );
    let agent = Agent::start(&["--config", config.to_str().unwrap()], &collector.token);
    collector.wait_count("freshword", 30, Some(&agent)).await;
    collector.wait_count("upgradeword", 40, Some(&agent)).await;
    collector.wait_count("oldestword", 10, Some(&agent)).await;
    collector.wait_count("zstdword", 25, Some(&agent)).await;
    // Everything queued was sent (the replays too: the collector answers them with
    // success) and the replays were not stored twice.
    agent
        .wait_stat("log_records_sent", 40 + 40 + 10 + 25 + 25 + 30)
        .await;
    // Intact: every line of the old batch, once.
    let hits = collector.search("upgradeword", 100).await;
    let mut bodies: Vec<String> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["body"].as_str().unwrap().to_string())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("upgradeword {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    for (word, n) in [
        ("upgradeword", 40),
        ("oldestword", 10),
        ("zstdword", 25),
        ("freshword", 30),
    ] {
        assert_eq!(collector.count(word).await, n, "{word}");
    }
    assert_eq!(agent.stat("export_failed_batches").await, 0);
    assert!(agent.proc.terminate(), "clean exit on SIGTERM");
}
