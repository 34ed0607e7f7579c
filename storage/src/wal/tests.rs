use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use tempfile::TempDir;

use super::format::{self, HEADER_LEN, RECORD_HEADER_LEN, RecordReader, Step};
use super::segment::segment_path;
use super::*;

/// Deterministic payload of `len` bytes that differs per LSN-ish `seed`.
fn payload(seed: u64, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (seed as usize).wrapping_mul(31).wrapping_add(j) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn opts(dir: &Path) -> WalOptions {
    WalOptions::new(dir)
}

/// Options for tests about layout rather than durability: no fsync, tiny segments.
fn small_segments(dir: &Path) -> WalOptions {
    WalOptions {
        segment_max_bytes: 200,
        fsync: false,
        ..WalOptions::new(dir)
    }
}

fn read_all(wal: &Wal, from: Lsn) -> Vec<Durable> {
    wal.read_from(from)
        .expect("read_from")
        .collect::<Result<Vec<_>, _>>()
        .expect("records")
}

fn lsns(records: &[Durable]) -> Vec<Lsn> {
    records.iter().map(|r| r.lsn).collect()
}

fn segment_lsns(dir: &Path) -> Vec<Lsn> {
    segment::list_segments(dir)
        .expect("list")
        .into_iter()
        .map(|(lsn, _)| lsn)
        .collect()
}

async fn append_seq(wal: &Wal, seeds: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Lsn> {
    let mut out = Vec::new();
    for seed in seeds {
        out.push(wal.append(payload(seed, len)).await.expect("append"));
    }
    out
}

/// A closed log with segments 1 (lsn 1-2), 3 (3-4), 5 (5-6) and an empty active 7; each
/// payload is 100 bytes and equals `payload(lsn, 100)`.
async fn four_segment_log(dir: &Path) {
    let wal = Wal::open(small_segments(dir), None, None).expect("open");
    assert_eq!(
        append_seq(&wal, 1..=6, 100).await,
        (1..=6).collect::<Vec<_>>()
    );
    wal.shutdown().expect("shutdown");
    assert_eq!(segment_lsns(dir), vec![1, 3, 5, 7]);
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write fixture");
}

#[tokio::test]
async fn round_trip_and_lsn_continues_after_reopen() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.last_lsn(), 0);
    assert_eq!(wal.first_lsn(), None);
    assert!(read_all(&wal, 1).is_empty());

    let got = append_seq(&wal, 1..=50, 300).await;
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
    let records = read_all(&wal, 1);
    assert_eq!(lsns(&records), (1..=50).collect::<Vec<_>>());
    for r in &records {
        assert_eq!(r.payload, payload(r.lsn, 300));
    }
    assert_eq!(lsns(&read_all(&wal, 20)), (20..=50).collect::<Vec<_>>());
    assert_eq!(lsns(&read_all(&wal, 0)), (1..=50).collect::<Vec<_>>());
    assert!(read_all(&wal, 51).is_empty());
    assert_eq!(wal.first_lsn(), Some(1));
    assert_eq!(wal.last_lsn(), 50);
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 50);
    assert_eq!(stats.segments, 1);
    assert_eq!(
        stats.disk_bytes,
        HEADER_LEN + 50 * (RECORD_HEADER_LEN + 300)
    );
    wal.shutdown().unwrap();

    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.last_lsn(), 50);
    assert_eq!(wal.stats().records_appended, 0);
    assert_eq!(wal.append(payload(51, 7)).await.unwrap(), 51);
    let records = read_all(&wal, 1);
    assert_eq!(lsns(&records), (1..=51).collect::<Vec<_>>());
    assert_eq!(records[50].payload, payload(51, 7));
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn empty_payloads_are_records() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.append(Bytes::new()).await.unwrap(), 1);
    assert_eq!(wal.append(Bytes::new()).await.unwrap(), 2);
    wal.shutdown().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    let records = read_all(&wal, 1);
    assert_eq!(lsns(&records), vec![1, 2]);
    assert!(records.iter().all(|r| r.payload.is_empty()));
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn segments_rotate_and_lsns_stay_dense() {
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().segments, 4);
    assert_eq!(wal.last_lsn(), 6);
    assert_eq!(lsns(&read_all(&wal, 4)), vec![4, 5, 6]);
    // The empty active segment 7 takes the next append.
    assert_eq!(wal.append(payload(7, 100)).await.unwrap(), 7);
    assert_eq!(segment_lsns(dir.path()), vec![1, 3, 5, 7]);
    wal.shutdown().unwrap();
}

/// Runs `f` on a fresh current-thread runtime (for use inside proptest bodies).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random sizes and segment limits, written over two sessions, read back from any
    /// start after a reopen.
    #[test]
    fn reopen_reads_every_suffix(
        sizes in vec(0usize..64 * 1024, 1..24),
        segment_max_bytes in 1u64..150_000,
        split in 0usize..24,
        from in 0u64..28,
    ) {
        let dir = TempDir::new().unwrap();
        let options = WalOptions {
            segment_max_bytes,
            fsync: false,
            ..WalOptions::new(dir.path())
        };
        let split = split.min(sizes.len());
        block_on(async {
            for part in [&sizes[..split], &sizes[split..]] {
                let wal = Wal::open(options.clone(), None, None).unwrap();
                for &len in part {
                    let lsn = wal.last_lsn() + 1;
                    assert_eq!(wal.append(payload(lsn, len)).await.unwrap(), lsn);
                }
                wal.shutdown().unwrap();
            }
        });
        let wal = Wal::open(options, None, None).unwrap();
        let records = read_all(&wal, from);
        let expected: Vec<(Lsn, Bytes)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (i as u64 + 1, payload(i as u64 + 1, len)))
            .filter(|(lsn, _)| *lsn >= from)
            .collect();
        let got: Vec<(Lsn, Bytes)> = records.into_iter().map(|r| (r.lsn, r.payload)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(wal.last_lsn(), sizes.len() as u64);
        prop_assert_eq!(wal.stats().corrupt_records, 0);
        prop_assert_eq!(wal.stats().torn_tail_bytes, 0);
        wal.shutdown().unwrap();
    }

    /// Encoder and reader agree, and any prefix of a segment decodes to a prefix of the
    /// records followed by a clean end (at a boundary) or one bad record (inside one).
    #[test]
    fn encoded_records_decode_and_prefixes_stop_cleanly(
        payloads in vec(vec(any::<u8>(), 0..512), 0..16),
        first_lsn in 1u64..1_000_000,
        cut_frac in 0.0f64..=1.0,
        keep in any::<bool>(),
    ) {
        let mut bytes = format::encode_header(first_lsn).to_vec();
        let mut boundaries = vec![bytes.len() as u64];
        for (lsn, p) in (first_lsn..).zip(&payloads) {
            format::encode_record(&mut bytes, lsn, p);
            boundaries.push(bytes.len() as u64);
        }
        let full = bytes.len() as u64;
        let cut = HEADER_LEN + ((full - HEADER_LEN) as f64 * cut_frac) as u64;
        let mut reader = RecordReader::new(Cursor::new(&bytes[HEADER_LEN as usize..]), cut, first_lsn);
        let mut seen = 0usize;
        let end = loop {
            match reader.step(keep).unwrap() {
                Step::Record { lsn, payload } => {
                    prop_assert_eq!(lsn, first_lsn + seen as u64);
                    if keep {
                        prop_assert_eq!(payload.as_deref(), Some(&payloads[seen][..]));
                    } else {
                        prop_assert!(payload.is_none());
                    }
                    seen += 1;
                }
                Step::End => break None,
                Step::Bad { offset, .. } => break Some(offset),
            }
        };
        let complete = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
        prop_assert_eq!(seen, complete);
        prop_assert_eq!(reader.pos(), boundaries[complete]);
        if boundaries.contains(&cut) {
            prop_assert_eq!(end, None);
        } else {
            prop_assert_eq!(end, Some(boundaries[complete]));
        }
    }

    /// Arbitrary bytes after a valid header never panic the reader, and it never claims
    /// more valid bytes than exist.
    #[test]
    fn reader_survives_garbage(garbage in vec(any::<u8>(), 0..4096), keep in any::<bool>()) {
        let limit = HEADER_LEN + garbage.len() as u64;
        let mut reader = RecordReader::new(Cursor::new(&garbage[..]), limit, 1);
        for _ in 0..garbage.len() + 1 {
            match reader.step(keep) {
                Ok(Step::Record { .. }) => {}
                Ok(Step::End) | Ok(Step::Bad { .. }) | Err(_) => break,
            }
        }
        prop_assert!(reader.pos() <= limit);
    }

    /// Arbitrary headers are either accepted exactly as encoded or rejected.
    #[test]
    fn header_decoding_is_total(bytes in proptest::array::uniform24(any::<u8>()), lsn in 1u64..u64::MAX) {
        let _ = format::decode_header(&bytes);
        prop_assert_eq!(format::decode_header(&format::encode_header(lsn)), Ok(lsn));
    }
}

#[tokio::test]
async fn torn_tail_at_every_offset_of_the_last_record() {
    let source = TempDir::new().unwrap();
    let wal = Wal::open(opts(source.path()), None, None).unwrap();
    append_seq(&wal, 1..=5, 40).await;
    wal.shutdown().unwrap();
    let bytes = std::fs::read(segment_path(source.path(), 1)).unwrap();
    let last_start = bytes.len() - (RECORD_HEADER_LEN as usize + 40);

    for cut in last_start..bytes.len() {
        let dir = TempDir::new().unwrap();
        write_file(&segment_path(dir.path(), 1), &bytes[..cut]);
        let options = WalOptions {
            fsync: false,
            ..WalOptions::new(dir.path())
        };
        let wal = Wal::open(options.clone(), None, None).unwrap();
        assert_eq!(
            wal.stats().torn_tail_bytes,
            (cut - last_start) as u64,
            "cut {cut}"
        );
        assert_eq!(wal.last_lsn(), 4, "cut {cut}");
        let records = read_all(&wal, 1);
        assert_eq!(lsns(&records), vec![1, 2, 3, 4], "cut {cut}");
        assert!(records.iter().all(|r| r.payload == payload(r.lsn, 40)));
        assert_eq!(wal.append(payload(99, 3)).await.unwrap(), 5, "cut {cut}");
        wal.shutdown().unwrap();

        let wal = Wal::open(options, None, None).unwrap();
        assert_eq!(wal.stats().torn_tail_bytes, 0);
        let records = read_all(&wal, 1);
        assert_eq!(lsns(&records), vec![1, 2, 3, 4, 5]);
        assert_eq!(records[4].payload, payload(99, 3));
        wal.shutdown().unwrap();
    }
}

#[tokio::test]
async fn garbage_tail_is_cut_and_appends_continue() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    append_seq(&wal, 1..=3, 64).await;
    wal.shutdown().unwrap();
    let path = segment_path(dir.path(), 1);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend((0..777u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8));
    write_file(&path, &bytes);

    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().torn_tail_bytes, 777);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(wal.append(payload(4, 64)).await.unwrap(), 4);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 3, 4]);
    wal.shutdown().unwrap();
}

#[test]
fn garbage_file_is_refused_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let path = segment_path(dir.path(), 1);
    write_file(&path, &[0xA5; 1000]);
    match Wal::open(opts(dir.path()), None, None) {
        Err(WalError::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, 0);
            assert!(reason.contains("magic"), "{reason}");
        }
        other => panic!("expected a corrupt error, got {other:?}"),
    }
    // The file was left alone for an operator to look at.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0xA5; 1000]);
}

#[test]
fn other_version_and_misnamed_segments_are_refused() {
    let dir = TempDir::new().unwrap();
    let mut header = format::encode_header(1);
    header[8] = 9;
    let crc = crc32fast::hash(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    write_file(&segment_path(dir.path(), 1), &header);
    let err = Wal::open(opts(dir.path()), None, None).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");

    let dir = TempDir::new().unwrap();
    write_file(&segment_path(dir.path(), 5), &format::encode_header(4));
    let err = Wal::open(opts(dir.path()), None, None).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");

    let dir = TempDir::new().unwrap();
    write_file(&segment_path(dir.path(), 0), &format::encode_header(0));
    let err = Wal::open(opts(dir.path()), None, None).unwrap_err();
    assert!(err.to_string().contains("implausible"), "{err}");
}

#[tokio::test]
async fn unrelated_files_are_ignored() {
    let dir = TempDir::new().unwrap();
    write_file(&dir.path().join("notes.txt"), b"hello");
    write_file(&dir.path().join("12.wal"), b"not a segment name");
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.append(payload(1, 1)).await.unwrap(), 1);
    assert_eq!(wal.stats().segments, 1);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn zero_length_only_segment_gets_its_header_back() {
    let dir = TempDir::new().unwrap();
    write_file(&segment_path(dir.path(), 1), &[]);
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.last_lsn(), 0);
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(wal.append(payload(1, 10)).await.unwrap(), 1);
    wal.shutdown().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1]);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn zero_length_last_segment_after_rotation_keeps_the_lsn() {
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    // A crash right after creating segment 7, before its header reached the disk.
    write_file(&segment_path(dir.path(), 7), &[]);
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().corrupt_records, 0);
    assert_eq!(wal.last_lsn(), 6);
    assert_eq!(wal.append(payload(7, 100)).await.unwrap(), 7);
    assert_eq!(lsns(&read_all(&wal, 1)), (1..=7).collect::<Vec<_>>());
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn zero_length_older_segment_is_counted_and_skipped() {
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    write_file(&segment_path(dir.path(), 3), &[]);
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    let stats = wal.stats();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.missing_records, 2);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 5, 6]);
    assert_eq!(lsns(&read_all(&wal, 3)), vec![5, 6]);
    assert_eq!(wal.append(payload(7, 100)).await.unwrap(), 7);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn corrupt_record_in_older_segment_skips_the_rest_of_it() {
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let second_payload = (HEADER_LEN + 2 * RECORD_HEADER_LEN + 100) as usize;
    bytes[second_payload + 10] ^= 0xFF;
    write_file(&path, &bytes);

    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    let stats = wal.stats();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.missing_records, 1);
    assert_eq!(stats.torn_tail_bytes, 0);
    // Nothing was cut from an older segment: it is evidence, not a torn tail.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(wal.first_lsn(), Some(1));
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 3, 4, 5, 6]);
    assert_eq!(wal.append(payload(7, 100)).await.unwrap(), 7);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn huge_length_field_never_allocates_and_is_handled() {
    // In the last segment: a torn tail.
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    append_seq(&wal, 1..=3, 10).await;
    wal.shutdown().unwrap();
    let path = segment_path(dir.path(), 1);
    for len in [u32::MAX, MAX_RECORD_BYTES as u32, 1 << 30] {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&[7; 100]);
        write_file(&path, &bytes);
        let wal = Wal::open(opts(dir.path()), None, None).unwrap();
        assert_eq!(wal.stats().torn_tail_bytes, 116);
        assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 3]);
        wal.shutdown().unwrap();
    }

    // In an older segment: corruption, skipped.
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    let path = segment_path(dir.path(), 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER_LEN as usize..HEADER_LEN as usize + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    write_file(&path, &bytes);
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().corrupt_records, 1);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 5, 6]);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn lsn_continuity_between_segments_is_checked() {
    // A missing segment in the middle: opens, reports the gap.
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    std::fs::remove_file(segment_path(dir.path(), 3)).unwrap();
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().missing_records, 2);
    assert_eq!(wal.stats().corrupt_records, 0);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 5, 6]);
    wal.shutdown().unwrap();

    // Overlapping segments: the later one holds those LSNs (the earlier one was left
    // after a failed fsync whose refused records could not be cut off).
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    let mut bytes = format::encode_header(2).to_vec();
    format::encode_record(&mut bytes, 2, b"acknowledged");
    write_file(&segment_path(dir.path(), 2), &bytes);
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.stats().corrupt_records, 0);
    assert_eq!(wal.stats().missing_records, 0);
    let records = read_all(&wal, 1);
    assert_eq!(lsns(&records), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(records[0].payload, payload(1, 100));
    assert_eq!(records[1].payload, Bytes::from_static(b"acknowledged"));
    wal.shutdown().unwrap();
}

/// Makes the next `n` fsyncs of records fail as a dying disk's would.
fn fail_next_syncs(wal: &Wal, n: u64) {
    wal.inner
        .shared
        .injected_sync_failures
        .store(n, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_refuses_the_group_and_the_log_goes_on_in_a_new_segment() {
    let dir = TempDir::new().unwrap();
    let (sink, records) = std::sync::mpsc::sync_channel(64);
    let wal = Wal::open(opts(dir.path()), Some(sink), None).unwrap();
    let received = std::thread::spawn(move || records.iter().collect::<Vec<Durable>>());
    assert_eq!(append_seq(&wal, 1..=3, 50).await, vec![1, 2, 3]);

    fail_next_syncs(&wal, 1);
    let refused = wal
        .append(Bytes::from_static(b"refused"))
        .await
        .unwrap_err();
    assert!(matches!(refused, WalError::Io { .. }), "{refused:?}");
    // The refused record took no LSN; the next ones are durable in a new segment.
    assert_eq!(append_seq(&wal, 4..=5, 50).await, vec![4, 5]);
    assert_eq!(segment_lsns(dir.path()), vec![1, 4]);
    let stats = wal.stats();
    assert_eq!((stats.write_failures, stats.segments), (1, 2));
    let read = read_all(&wal, 1);
    assert_eq!(lsns(&read), vec![1, 2, 3, 4, 5]);
    assert!(
        read.iter()
            .all(|r| r.payload != Bytes::from_static(b"refused"))
    );
    // The left segment was cut back to its acknowledged records.
    let left = std::fs::metadata(segment_path(dir.path(), 1))
        .unwrap()
        .len();
    assert_eq!(left, HEADER_LEN + 3 * format::framed_len(50));
    tokio::task::spawn_blocking(move || wal.shutdown())
        .await
        .unwrap()
        .unwrap();
    let live: Vec<Lsn> = lsns(&received.join().unwrap());
    assert_eq!(
        live,
        vec![1, 2, 3, 4, 5],
        "the sink saw only durable records, once"
    );

    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    let stats = wal.stats();
    assert_eq!((stats.corrupt_records, stats.missing_records), (0, 0));
    let reopened = read_all(&wal, 1);
    assert_eq!(lsns(&reopened), vec![1, 2, 3, 4, 5]);
    for record in &reopened {
        assert_eq!(record.payload, payload(record.lsn, 50));
    }
    assert_eq!(wal.append(payload(6, 50)).await.unwrap(), 6);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn log_that_cannot_start_a_segment_refuses_appends_until_it_can() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(append_seq(&wal, 1..=2, 20).await, vec![1, 2]);
    // Something in the way of the next segment's name: it cannot be created.
    let blocker = segment_path(dir.path(), 3);
    std::fs::create_dir(&blocker).unwrap();
    fail_next_syncs(&wal, 1);
    for _ in 0..3 {
        let err = wal.append(payload(9, 20)).await.unwrap_err();
        assert!(matches!(err, WalError::Io { .. }), "{err:?}");
    }
    assert_eq!(wal.stats().write_failures, 3);
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(append_seq(&wal, 3..=4, 20).await, vec![3, 4]);
    assert_eq!(segment_lsns(dir.path()), vec![1, 3]);
    wal.shutdown().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    let read = read_all(&wal, 1);
    assert_eq!(lsns(&read), vec![1, 2, 3, 4]);
    assert!(read.iter().all(|r| r.payload == payload(r.lsn, 20)));
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn failed_fsync_of_a_segment_without_records_replaces_it() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    fail_next_syncs(&wal, 2);
    for _ in 0..2 {
        assert!(wal.append(payload(0, 10)).await.is_err());
    }
    assert_eq!(wal.append(payload(1, 10)).await.unwrap(), 1);
    assert_eq!(segment_lsns(dir.path()), vec![1]);
    assert_eq!(wal.stats().write_failures, 2);
    wal.shutdown().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    let read = read_all(&wal, 1);
    assert_eq!(lsns(&read), vec![1]);
    assert_eq!(read[0].payload, payload(1, 10));
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn bytes_left_after_the_records_of_a_left_segment_are_skipped_at_open() {
    // Segment 1 holds records 1-2 and then what a failed write left: half a record, or
    // a whole refused record with LSN 3, which segment 3 holds as acknowledged.
    for tail in [&b"\x07\x00\x00\x00garbage"[..], b"record"] {
        let dir = TempDir::new().unwrap();
        let mut first = format::encode_header(1).to_vec();
        format::encode_record(&mut first, 1, b"one");
        format::encode_record(&mut first, 2, b"two");
        if tail == b"record" {
            format::encode_record(&mut first, 3, b"refused");
        } else {
            first.extend_from_slice(tail);
        }
        write_file(&segment_path(dir.path(), 1), &first);
        let mut second = format::encode_header(3).to_vec();
        format::encode_record(&mut second, 3, b"three");
        write_file(&segment_path(dir.path(), 3), &second);

        let wal = Wal::open(opts(dir.path()), None, None).unwrap();
        let stats = wal.stats();
        assert_eq!((stats.corrupt_records, stats.missing_records), (0, 0));
        let read = read_all(&wal, 1);
        let payloads: Vec<&[u8]> = read.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(wal.append(Bytes::from_static(b"four")).await.unwrap(), 4);
        wal.shutdown().unwrap();
    }
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_appends() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new().unwrap();
    // A rendezvous sink that nobody reads yet holds the writer after its first group,
    // so the other appends are certainly queued together (no timing assumption).
    let (sink, records) = std::sync::mpsc::sync_channel(0);
    let wal = Wal::open(opts(dir.path()), Some(sink), None).unwrap();
    let (mut lsns, drain) = runtime.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.append(payload(i, 32)).await })
            })
            .collect();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let drain = std::thread::spawn(move || records.iter().map(|r| r.lsn).collect::<Vec<_>>());
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        (out, drain)
    });
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=200).collect::<Vec<_>>());
    let stats = wal.stats();
    assert_eq!(stats.records_appended, 200);
    assert!(stats.fsyncs < 200, "fsyncs {}", stats.fsyncs);
    assert_eq!(stats.fsyncs, stats.group_commits);
    wal.shutdown().unwrap();
    // The sink saw the same records, in LSN order.
    assert_eq!(drain.join().unwrap(), (1..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_receives_every_record_in_lsn_order() {
    let dir = TempDir::new().unwrap();
    let (sink, records) = std::sync::mpsc::sync_channel(4);
    let seen = Arc::new(AtomicUsize::new(0));
    let observer: SyncObserver = {
        let seen = seen.clone();
        Arc::new(move |_elapsed, count, bytes| {
            assert!(bytes >= count * RECORD_HEADER_LEN as usize);
            seen.fetch_add(count, Ordering::Relaxed);
        })
    };
    let wal = Wal::open(opts(dir.path()), Some(sink), Some(observer)).unwrap();
    let collector = std::thread::spawn(move || records.iter().collect::<Vec<Durable>>());
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { (i, wal.append(payload(i, 20)).await.unwrap()) })
        })
        .collect();
    let mut acked = std::collections::HashMap::new();
    for task in tasks {
        let (seed, lsn) = task.await.unwrap();
        acked.insert(lsn, seed);
    }
    tokio::task::spawn_blocking(move || wal.shutdown())
        .await
        .unwrap()
        .unwrap();
    let received = collector.join().unwrap();
    assert_eq!(lsns(&received), (1..=100).collect::<Vec<_>>());
    for record in &received {
        assert_eq!(record.payload, payload(acked[&record.lsn], 20));
    }
    assert_eq!(seen.load(Ordering::Relaxed), 100);
}

#[tokio::test]
async fn full_sink_holds_back_acks_until_drained() {
    let dir = TempDir::new().unwrap();
    let (sink, records) = std::sync::mpsc::sync_channel(1);
    let wal = Wal::open(opts(dir.path()), Some(sink), None).unwrap();
    assert_eq!(wal.append(payload(1, 8)).await.unwrap(), 1);

    let second = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append(payload(2, 8)).await }
    });
    // Real time on purpose: the writer is a plain thread. This only checks that the ack
    // has not arrived yet, which a slow machine cannot make fail.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "append was acknowledged past a full sink"
    );
    // Record 2 is already durable: the sink is fed only after the fsync.
    assert_eq!(wal.last_lsn(), 2);

    assert_eq!(records.recv().unwrap().lsn, 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(records.recv().unwrap().lsn, 2);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn disconnected_sink_does_not_stop_the_log() {
    let dir = TempDir::new().unwrap();
    let (sink, records) = std::sync::mpsc::sync_channel(8);
    drop(records);
    let wal = Wal::open(opts(dir.path()), Some(sink), None).unwrap();
    assert_eq!(append_seq(&wal, 1..=3, 5).await, vec![1, 2, 3]);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 3]);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn truncate_through_deletes_only_sealed_segments_fully_covered() {
    let dir = TempDir::new().unwrap();
    four_segment_log(dir.path()).await;
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    let segment_bytes = HEADER_LEN + 2 * (RECORD_HEADER_LEN + 100);

    assert_eq!(wal.truncate_through(0).unwrap(), 0);
    assert_eq!(wal.truncate_through(1).unwrap(), 0);
    assert_eq!(segment_lsns(dir.path()), vec![1, 3, 5, 7]);

    // Segment 3 holds lsn 4 > 3, so only segment 1 goes.
    assert_eq!(wal.truncate_through(3).unwrap(), segment_bytes);
    assert_eq!(segment_lsns(dir.path()), vec![3, 5, 7]);
    assert_eq!(wal.first_lsn(), Some(3));
    assert_eq!(lsns(&read_all(&wal, 1)), vec![3, 4, 5, 6]);
    assert_eq!(wal.stats().segments, 3);

    // Everything is committed: every sealed segment goes, the active one stays.
    assert_eq!(wal.truncate_through(1000).unwrap(), 2 * segment_bytes);
    assert_eq!(segment_lsns(dir.path()), vec![7]);
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(wal.last_lsn(), 6);
    assert!(read_all(&wal, 1).is_empty());
    assert_eq!(wal.stats().disk_bytes, HEADER_LEN);

    assert_eq!(wal.append(payload(7, 100)).await.unwrap(), 7);
    assert_eq!(wal.first_lsn(), Some(7));
    // The active segment is never deleted, even when fully covered.
    assert_eq!(wal.truncate_through(1000).unwrap(), 0);
    wal.shutdown().unwrap();

    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    assert_eq!(wal.first_lsn(), Some(7));
    assert_eq!(wal.stats().missing_records, 0);
    assert_eq!(lsns(&read_all(&wal, 1)), vec![7]);
    assert_eq!(wal.append(payload(8, 100)).await.unwrap(), 8);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn reader_stops_at_the_lsn_durable_when_it_was_created() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(small_segments(dir.path()), None, None).unwrap();
    append_seq(&wal, 1..=5, 100).await;
    let reader = wal.read_from(2).unwrap();
    append_seq(&wal, 6..=9, 100).await;
    let records: Vec<Durable> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(lsns(&records), vec![2, 3, 4, 5]);
    assert_eq!(lsns(&read_all(&wal, 2)), (2..=9).collect::<Vec<_>>());
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn too_large_payload_is_rejected_before_queueing() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    let huge = Bytes::from(vec![0u8; MAX_RECORD_BYTES + 1]);
    match wal.append(huge).await {
        Err(WalError::TooLarge { len, max }) => {
            assert_eq!(len, MAX_RECORD_BYTES + 1);
            assert_eq!(max, MAX_RECORD_BYTES);
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert_eq!(wal.append(payload(1, 1)).await.unwrap(), 1);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn second_writer_is_locked_out_and_shutdown_closes_clones() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert!(matches!(
        Wal::open(opts(dir.path()), None, None),
        Err(WalError::Locked { .. })
    ));
    let clone = wal.clone();
    assert_eq!(clone.append(payload(1, 1)).await.unwrap(), 1);
    wal.shutdown().unwrap();
    assert!(matches!(
        clone.append(payload(2, 1)).await,
        Err(WalError::Closed)
    ));
    drop(clone);
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.last_lsn(), 1);
    wal.shutdown().unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_writer() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(opts(dir.path()), None, None).unwrap();
    assert_eq!(wal.append(payload(1, 1)).await.unwrap(), 1);
    drop(wal);
    // The writer thread holds the directory lock until it has exited.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let wal = loop {
        match Wal::open(opts(dir.path()), None, None) {
            Ok(wal) => break wal,
            Err(WalError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("writer did not stop: {e}"),
        }
    };
    assert_eq!(wal.last_lsn(), 1);
    wal.shutdown().unwrap();
}

#[test]
fn invalid_options_are_named() {
    let dir = TempDir::new().unwrap();
    let zero_queue = WalOptions {
        queue_capacity: 0,
        ..WalOptions::new(dir.path())
    };
    assert!(matches!(
        Wal::open(zero_queue, None, None),
        Err(WalError::InvalidOption {
            name: "queue_capacity",
            ..
        })
    ));
    let zero_segment = WalOptions {
        segment_max_bytes: 0,
        ..WalOptions::new(dir.path())
    };
    assert!(matches!(
        Wal::open(zero_segment, None, None),
        Err(WalError::InvalidOption {
            name: "segment_max_bytes",
            ..
        })
    ));
}

#[test]
fn segment_names_round_trip() {
    let dir = PathBuf::from("/x");
    let path = segment_path(&dir, 42);
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        "00000000000000000042.wal"
    );
    assert_eq!(
        segment::parse_segment_name("00000000000000000042.wal"),
        Some(42)
    );
    assert_eq!(segment::parse_segment_name("42.wal"), None);
    assert_eq!(
        segment::parse_segment_name("0000000000000000004x.wal"),
        None
    );
    assert_eq!(
        segment::parse_segment_name("99999999999999999999.wal"),
        None
    );
}
