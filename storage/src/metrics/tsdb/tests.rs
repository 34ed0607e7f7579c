//! Store-level tests: admission, apply, queries across head and blocks, crash safety,
//! compaction, retention, label listing, concurrency, and the on-disk size.

use super::*;
use crate::metrics::stale_nan;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut v: Vec<(&str, &str)> = vec![(METRIC_NAME, name)];
    v.extend_from_slice(pairs);
    Labels::from_pairs(v)
}

fn series(l: &Labels, samples: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: l.clone(),
        samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
    }
}

fn batch(s: Vec<SeriesSamples>) -> MetricBatch {
    MetricBatch {
        series: s,
        metadata: Vec::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    db: Tsdb,
    lsn: u64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut TsdbOptions)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut o = TsdbOptions::new(dir.path().join("metrics"));
        f(&mut o);
        let path = o.dir.clone();
        Fixture {
            _dir: dir,
            path,
            db: Tsdb::open(o).unwrap(),
            lsn: 0,
        }
    }

    /// Admit then apply, as the collector does; returns the admission.
    /// Admit then apply, as the collector does; returns the admission. Odd calls take
    /// the owned path (admit, encode, decode, apply), even calls the borrowed one
    /// (admit_encode, apply_record); both admissions are computed every time and must
    /// agree byte for byte on the WAL payload.
    fn ingest(&mut self, tenant: &str, b: MetricBatch, now: i64) -> Admission {
        let pairs: Vec<Vec<(&str, &str)>> = b
            .series
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect()
            })
            .collect();
        let enc = self.db.admit_encode(
            tenant,
            pairs
                .iter()
                .zip(&b.series)
                .map(|(p, s)| (p.as_slice(), s.samples.as_slice())),
            &b.metadata,
            now,
        );
        let a = self.db.admit(tenant, b.clone(), now);
        let owned = encode_record(tenant, &a.accepted);
        let nothing = a.accepted.series.is_empty() && a.accepted.metadata.is_empty();
        assert_eq!(
            enc.record.as_deref(),
            (!nothing).then_some(owned.as_slice())
        );
        assert_eq!(enc.samples, a.accepted.sample_count() as u64);
        assert_eq!(
            (enc.admission.rejected(), &enc.admission.first_error),
            (a.rejected(), &a.first_error)
        );
        self.lsn += 1;
        if self.lsn % 2 == 1 {
            let (t, decoded) = decode_record(&owned).unwrap();
            self.db.apply(self.lsn, &t, &decoded);
        } else {
            self.db.apply_record(self.lsn, &owned).unwrap();
        }
        a
    }

    fn reopen(&mut self) {
        let o = TsdbOptions {
            dir: self.path.clone(),
            ..self.db.inner.opts.clone()
        };
        self.db = Tsdb::open(o).unwrap();
    }
}

fn read(
    db: &Tsdb,
    tenant: &str,
    matchers: &[Matcher],
    start: i64,
    end: i64,
) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let q = db.querier(tenant);
    let refs = q.series(matchers, start, end).unwrap();
    refs.iter()
        .map(|r| {
            let mut out = Vec::new();
            q.samples(r, start, end, &mut out).unwrap();
            (
                r.labels.clone(),
                out.iter().map(|s| (s.t, s.v.to_bits())).collect(),
            )
        })
        .collect()
}

fn all(db: &Tsdb, tenant: &str) -> Vec<(Labels, Vec<(i64, u64)>)> {
    read(db, tenant, &[], i64::MIN, i64::MAX)
}

#[test]
fn admit_rejects_each_kind_with_counts_and_a_message() {
    let mut f = Fixture::new();
    let now = T0 + 60 * MIN;
    let up = labels("up", &[("job", "a")]);
    f.ingest("t", batch(vec![series(&up, &[(now, 1.0)])]), now);
    let b = batch(vec![
        series(
            &up,
            &[
                (now - 20 * MIN, 1.0),
                (now, 2.0),
                (now + 20 * MIN, 1.0),
                (now + MIN, 3.0),
            ],
        ),
        series(
            &labels("old", &[]),
            &[(now - DEFAULT_RETENTION_MS - 1, 1.0)],
        ),
        series(&Labels::from_pairs([("job", "noname")]), &[(now, 1.0)]),
        series(
            &labels("bad", &[("1x", "v")]),
            &[(now, 1.0), (now + 1, 1.0)],
        ),
        series(&labels("bad", &[("__x", "v")]), &[(now, 1.0)]),
    ]);
    let a = f.db.admit("t", b, now);
    assert_eq!(a.out_of_order, 1);
    assert_eq!(a.duplicate, 1);
    assert_eq!(a.too_old, 1);
    assert_eq!(
        a.invalid,
        1 + 1 + 2 + 1,
        "future, no name, bad name x2, reserved"
    );
    assert_eq!(a.rejected(), 8);
    let msg = a.first_error.unwrap();
    assert!(
        msg.contains("up{job=\"a\"}") && msg.contains("out of order"),
        "{msg}"
    );
    // Only the in-window future-but-fine sample survives.
    assert_eq!(a.accepted.sample_count(), 1);
    assert_eq!(a.accepted.series[0].samples[0].t, now + MIN);
}

#[test]
fn identical_retry_is_silent_and_differing_duplicate_is_rejected() {
    let mut f = Fixture::new();
    let now = T0;
    let s = labels("m", &[]);
    let b = batch(vec![series(
        &s,
        &[(now - 2000, 1.0), (now - 1000, 2.0), (now, 3.0)],
    )]);
    f.ingest("t", b.clone(), now);
    let again = f.db.admit("t", b, now);
    assert_eq!(again.rejected(), 0);
    assert_eq!(again.accepted.sample_count(), 0, "retry stored nothing");
    let diff =
        f.db.admit("t", batch(vec![series(&s, &[(now - 1000, 9.0)])]), now);
    assert_eq!(diff.duplicate, 1);
    assert!(diff.first_error.unwrap().contains("different value"));
    // Within one batch too.
    let inb = f.db.admit(
        "t",
        batch(vec![series(
            &s,
            &[(now + 5, 1.0), (now + 5, 2.0), (now + 5, 1.0)],
        )]),
        now,
    );
    assert_eq!(inb.duplicate, 1);
    assert_eq!(inb.accepted.sample_count(), 1);
}

#[test]
fn out_of_order_within_window_is_read_back_sorted() {
    let mut f = Fixture::new();
    let s = labels("m", &[("i", "1")]);
    let now = T0 + 10 * MIN;
    let mut want = Vec::new();
    for i in (0..100).rev() {
        let t = now - i * 1000;
        if i % 3 == 0 {
            want.push((t, (i as f64).to_bits()));
            let a = f.ingest("t", batch(vec![series(&s, &[(t, i as f64)])]), now);
            assert_eq!(a.rejected(), 0);
        }
    }
    for i in 0..100 {
        let t = now - i * 1000;
        if i % 3 != 0 {
            want.push((t, (i as f64).to_bits()));
            let a = f.ingest("t", batch(vec![series(&s, &[(t, i as f64)])]), now);
            assert_eq!(a.rejected(), 0, "t={t}");
        }
    }
    want.sort();
    assert_eq!(all(&f.db, "t"), vec![(s.clone(), want.clone())]);
    f.db.flush().unwrap();
    assert_eq!(all(&f.db, "t"), vec![(s, want)]);
}

#[test]
fn apply_is_deterministic_for_racing_duplicates_later_wins() {
    let f = Fixture::new();
    let s = labels("m", &[]);
    // Both admitted before either applied (concurrent requests).
    let a1 = f.db.admit("t", batch(vec![series(&s, &[(T0, 1.0)])]), T0);
    let a2 = f.db.admit("t", batch(vec![series(&s, &[(T0, 2.0)])]), T0);
    f.db.apply(1, "t", &a1.accepted);
    f.db.apply(2, "t", &a2.accepted);
    assert_eq!(all(&f.db, "t")[0].1, vec![(T0, 2f64.to_bits())]);
    f.db.flush().unwrap();
    assert_eq!(all(&f.db, "t")[0].1, vec![(T0, 2f64.to_bits())]);
    // A later sample than what is in the block, same time: head wins.
    f.db.apply(3, "t", &batch(vec![series(&s, &[(T0, 3.0)])]));
    assert_eq!(all(&f.db, "t")[0].1, vec![(T0, 3f64.to_bits())]);
}

#[test]
fn series_limit_rejects_new_series_only() {
    let mut f = Fixture::with(|o| o.max_series_per_tenant = 2);
    let a = f.ingest(
        "t",
        batch(
            (0..3)
                .map(|i| series(&labels("m", &[("i", &i.to_string())]), &[(T0, 1.0)]))
                .collect(),
        ),
        T0,
    );
    assert_eq!(a.series_limit, 1);
    assert!(a.first_error.unwrap().contains("limit of 2"));
    // Existing series keep going; other tenants are not affected.
    let a = f.ingest(
        "t",
        batch(vec![series(&labels("m", &[("i", "0")]), &[(T0 + 1, 1.0)])]),
        T0,
    );
    assert_eq!(a.rejected(), 0);
    let a = f.ingest(
        "u",
        batch(vec![series(&labels("m", &[("i", "9")]), &[(T0, 1.0)])]),
        T0,
    );
    assert_eq!(a.rejected(), 0);
}

#[test]
fn special_values_round_trip_through_head_and_blocks() {
    let mut f = Fixture::new();
    let s = labels("m", &[]);
    let vals = [
        f64::NAN,
        stale_nan(),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1.5,
        f64::from_bits(0x7ff8_dead_beef_0001),
    ];
    let samples: Vec<(i64, f64)> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| (T0 + i as i64 * 1000, *v))
        .collect();
    f.ingest("t", batch(vec![series(&s, &samples)]), T0);
    let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
    assert_eq!(all(&f.db, "t")[0].1, want);
    f.db.flush().unwrap();
    f.reopen();
    assert_eq!(all(&f.db, "t")[0].1, want);
}

fn fill(f: &mut Fixture, tenant: &str, n_series: usize, start: i64, n: i64, step: i64) {
    for k in 0..n {
        let t = start + k * step;
        let b = batch(
            (0..n_series)
                .map(|i| {
                    series(
                        &labels(
                            if i % 2 == 0 { "a_total" } else { "b" },
                            &[("i", &i.to_string()), ("job", "j")],
                        ),
                        &[(t, (k * i as i64) as f64)],
                    )
                })
                .collect(),
        );
        let a = f.ingest(tenant, b, t);
        assert_eq!(a.rejected(), 0, "{:?}", a.first_error);
    }
}

#[test]
fn flush_then_query_returns_the_same_and_reopen_keeps_everything() {
    let mut f = Fixture::new();
    fill(&mut f, "t", 20, T0, 300, 15_000);
    f.db.apply(
        f.lsn + 1,
        "t",
        &MetricBatch {
            series: Vec::new(),
            metadata: vec![MetricMetadata {
                metric: "a".into(),
                kind: MetricType::Counter,
                help: "help".into(),
                unit: "bytes".into(),
            }],
        },
    );
    f.lsn += 1;
    let before = all(&f.db, "t");
    let sub_before = read(
        &f.db,
        "t",
        &[Matcher::equal("i", "3")],
        T0 + 100_000,
        T0 + 1_000_000,
    );
    assert_eq!(before.len(), 20);
    let lsn = f.db.flush().unwrap();
    assert_eq!(lsn, Some(f.lsn));
    assert_eq!(f.db.persisted_lsn(), f.lsn);
    assert_eq!(f.db.stats().blocks, 1);
    assert_eq!(all(&f.db, "t"), before);
    assert_eq!(
        read(
            &f.db,
            "t",
            &[Matcher::equal("i", "3")],
            T0 + 100_000,
            T0 + 1_000_000
        ),
        sub_before
    );
    f.reopen();
    assert_eq!(f.db.persisted_lsn(), f.lsn);
    assert_eq!(all(&f.db, "t"), before);
    assert_eq!(f.db.metadata("t", None)[0].kind, MetricType::Counter);
    assert_eq!(f.db.metadata("t", Some("a"))[0].unit, "bytes");
    assert!(f.db.metadata("t", Some("zzz")).is_empty());
}

#[test]
fn replay_after_crash_restores_the_head() {
    let mut f = Fixture::new();
    let mut wal: Vec<(u64, Vec<u8>)> = Vec::new();
    let s = labels("m", &[]);
    for k in 0..50 {
        let a = f.db.admit(
            "t",
            batch(vec![series(&s, &[(T0 + k * 1000, k as f64)])]),
            T0,
        );
        let rec = encode_record("t", &a.accepted);
        let lsn = k as u64 + 1;
        let (t, b) = decode_record(&rec).unwrap();
        f.db.apply(lsn, &t, &b);
        wal.push((lsn, rec));
        if k == 20 {
            f.db.flush().unwrap();
        }
    }
    let before = all(&f.db, "t");
    // kill -9: drop without flushing, then replay what the WAL holds past the checkpoint.
    f.reopen();
    assert_eq!(f.db.persisted_lsn(), 21);
    for (lsn, rec) in wal.iter().filter(|(l, _)| *l > f.db.persisted_lsn()) {
        let (t, b) = decode_record(rec).unwrap();
        f.db.apply(*lsn, &t, &b);
    }
    assert_eq!(all(&f.db, "t"), before);
}

#[test]
fn half_written_and_uncommitted_blocks_are_removed_on_open() {
    let mut f = Fixture::new();
    fill(&mut f, "t", 3, T0, 10, 1000);
    f.db.flush().unwrap();
    let tdir = f.path.join("t");
    fs::create_dir_all(tdir.join("b-00000000000000000099.tmp")).unwrap();
    fs::write(tdir.join("b-00000000000000000099.tmp/chunks"), b"partial").unwrap();
    // A complete block that no checkpoint commits (crash before the checkpoint rename).
    let committed = tdir.join(block_dir_name(0));
    let orphan = tdir.join(block_dir_name(7));
    fs::create_dir_all(&orphan).unwrap();
    for file in ["chunks", "index", "meta.json"] {
        fs::copy(committed.join(file), orphan.join(file)).unwrap();
    }
    let before = all(&f.db, "t");
    f.reopen();
    assert!(!tdir.join("b-00000000000000000099.tmp").exists());
    assert!(!orphan.exists());
    assert_eq!(f.db.stats().blocks, 1);
    assert_eq!(all(&f.db, "t"), before);
}

#[test]
fn corrupt_block_index_is_an_error_not_a_panic() {
    let mut f = Fixture::new();
    fill(&mut f, "t", 3, T0, 10, 1000);
    f.db.flush().unwrap();
    let ix = f.path.join("t").join(block_dir_name(0)).join("index");
    let mut bytes = fs::read(&ix).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&ix, bytes).unwrap();
    let o = TsdbOptions::new(f.path.clone());
    let err = Tsdb::open(o).unwrap_err();
    assert!(matches!(err, MetricsError::Corrupt { .. }), "{err}");
}

#[test]
fn compaction_merges_blocks_and_keeps_data() {
    let mut f = Fixture::with(|o| o.block_duration_ms = 10 * MIN);
    // Three cuts in one day window, plus an overlapping late write.
    for c in 0..3 {
        fill(&mut f, "t", 10, T0 + c * 30 * MIN, 20, 15_000);
        f.db.flush().unwrap();
    }
    let late = labels("late", &[]);
    f.ingest(
        "t",
        batch(vec![series(&late, &[(T0 + 1000, 7.0)])]),
        T0 + 1000,
    );
    f.db.flush().unwrap();
    assert_eq!(f.db.stats().blocks, 4);
    let before = all(&f.db, "t");
    let samples_before = f.db.stats().block_samples;
    f.db.maintain(T0 + 3 * 86_400_000).unwrap();
    let st = f.db.stats();
    assert!(st.blocks < 4, "blocks {}", st.blocks);
    assert_eq!(st.block_samples, samples_before);
    assert_eq!(all(&f.db, "t"), before);
    f.reopen();
    assert_eq!(all(&f.db, "t"), before);
    let dirs = fs::read_dir(f.path.join("t"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("b-")
        })
        .count();
    assert_eq!(
        dirs as u64,
        f.db.stats().blocks,
        "compacted sources unlinked"
    );
}

#[test]
fn compaction_dedupes_overlapping_blocks_by_precedence() {
    let f = Fixture::new();
    let s = labels("m", &[]);
    f.db.apply(
        1,
        "t",
        &batch(vec![series(&s, &[(T0, 1.0), (T0 + 1000, 1.0)])]),
    );
    f.db.flush().unwrap();
    f.db.apply(
        2,
        "t",
        &batch(vec![series(&s, &[(T0 + 1000, 2.0), (T0 + 2000, 2.0)])]),
    );
    f.db.flush().unwrap();
    let want = vec![
        (T0, 1f64.to_bits()),
        (T0 + 1000, 2f64.to_bits()),
        (T0 + 2000, 2f64.to_bits()),
    ];
    assert_eq!(all(&f.db, "t")[0].1, want);
    f.db.maintain(T0 + 10 * 86_400_000).unwrap();
    assert_eq!(f.db.stats().blocks, 1);
    assert_eq!(all(&f.db, "t")[0].1, want);
}

#[test]
fn retention_deletes_old_blocks() {
    let mut f = Fixture::with(|o| o.retention_ms = 86_400_000);
    fill(&mut f, "t", 2, T0, 10, 1000);
    f.db.flush().unwrap();
    fill(&mut f, "t", 2, T0 + 2 * 86_400_000, 10, 1000);
    f.db.flush().unwrap();
    f.db.maintain(T0 + 2 * 86_400_000 + 60_000).unwrap();
    assert_eq!(f.db.stats().blocks, 1);
    let got = all(&f.db, "t");
    assert!(
        got.iter()
            .all(|(_, s)| s.iter().all(|(t, _)| *t >= T0 + 2 * 86_400_000))
    );
    f.reopen();
    assert_eq!(f.db.stats().blocks, 1);
}

#[test]
fn maintain_cuts_when_the_head_spans_a_block_and_reports_the_lsn() {
    let mut f = Fixture::with(|o| o.block_duration_ms = 10 * MIN);
    fill(&mut f, "t", 5, T0, 30, 15_000);
    assert_eq!(
        f.db.maintain(T0 + 7 * MIN).unwrap(),
        None,
        "span 7.25 min: not due"
    );
    fill(&mut f, "t", 5, T0 + 30 * 15_000, 20, 15_000);
    assert_eq!(f.db.maintain(T0 + 12 * MIN).unwrap(), Some(f.lsn));
    assert_eq!(f.db.stats().blocks, 1);
    assert_eq!(f.db.maintain(T0 + 12 * MIN).unwrap(), None, "reported once");
}

#[test]
fn idle_series_leave_the_head_after_a_cut() {
    let mut f = Fixture::new();
    fill(&mut f, "t", 4, T0, 5, 1000);
    assert_eq!(f.db.stats().series, 4);
    f.db.flush().unwrap();
    f.db.cut(T0 + 60 * MIN).unwrap();
    assert_eq!(f.db.stats().series, 0);
    assert_eq!(all(&f.db, "t").len(), 4, "still in the block");
    // A querier created before the head changed finds its series again.
    let q = f.db.querier("t");
    let refs = q.series(&[], i64::MIN, i64::MAX).unwrap();
    fill(&mut f, "t", 4, T0 + 61 * MIN, 2, 1000);
    f.db.flush().unwrap();
    let mut out = Vec::new();
    q.samples(&refs[0], i64::MIN, i64::MAX, &mut out).unwrap();
    assert_eq!(out.len(), 7);
}

#[test]
fn label_names_and_values_follow_matchers_and_time() {
    let mut f = Fixture::new();
    let a = labels("m", &[("job", "api"), ("zone", "eu")]);
    let b = labels("m", &[("job", "web")]);
    let c = labels("n", &[("job", "db"), ("disk", "sda")]);
    f.ingest(
        "t",
        batch(vec![series(&a, &[(T0, 1.0)]), series(&c, &[(T0, 1.0)])]),
        T0,
    );
    f.db.flush().unwrap();
    f.ingest(
        "t",
        batch(vec![series(&b, &[(T0 + 86_400_000, 1.0)])]),
        T0 + 86_400_000,
    );
    let everything = (i64::MIN, i64::MAX);
    assert_eq!(
        f.db.label_names("t", &[], everything.0, everything.1)
            .unwrap(),
        vec!["__name__", "disk", "job", "zone"]
    );
    assert_eq!(
        f.db.label_names(
            "t",
            &[Matcher::equal(METRIC_NAME, "m")],
            everything.0,
            everything.1
        )
        .unwrap(),
        vec!["__name__", "job", "zone"]
    );
    assert_eq!(
        f.db.label_values("t", "job", &[], everything.0, everything.1)
            .unwrap(),
        vec!["api", "db", "web"]
    );
    let re = Matcher::new("job", MatchOp::RegexMatch, "a.*|w.*").unwrap();
    assert_eq!(
        f.db.label_values("t", "job", &[re], everything.0, everything.1)
            .unwrap(),
        vec!["api", "web"]
    );
    // Only the day after: the block is out of range.
    let day2 = (T0 + 86_000_000, T0 + 87_000_000);
    assert_eq!(
        f.db.label_values("t", "job", &[], day2.0, day2.1).unwrap(),
        vec!["web"]
    );
    assert_eq!(
        f.db.label_names("t", &[], day2.0, day2.1).unwrap(),
        vec!["__name__", "job"]
    );
    let absent = Matcher::equal("zone", "");
    assert_eq!(
        f.db.label_values("t", "job", &[absent], everything.0, everything.1)
            .unwrap(),
        vec!["db", "web"]
    );
    assert!(
        f.db.label_names("other", &[], everything.0, everything.1)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn matchers_select_across_head_and_blocks() {
    let mut f = Fixture::new();
    fill(&mut f, "t", 6, T0, 3, 1000);
    f.db.flush().unwrap();
    fill(&mut f, "t", 8, T0 + 10_000, 3, 1000);
    let m = |n: &str, op, v: &str| Matcher::new(n, op, v).unwrap();
    let names = |ms: &[Matcher]| -> Vec<String> {
        read(&f.db, "t", ms, i64::MIN, i64::MAX)
            .iter()
            .map(|(l, _)| l.get("i").unwrap().to_owned())
            .collect()
    };
    // Sorted by label set: a_total{i=even} before b{i=odd}.
    assert_eq!(
        names(&[m("i", MatchOp::RegexMatch, "[0-2]|7")]),
        vec!["0", "2", "1", "7"]
    );
    assert_eq!(
        names(&[
            m(METRIC_NAME, MatchOp::Equal, "b"),
            m("i", MatchOp::NotEqual, "1")
        ]),
        vec!["3", "5", "7"]
    );
    assert_eq!(
        names(&[m("i", MatchOp::RegexNoMatch, "[0-5]")]),
        vec!["6", "7"]
    );
    assert!(names(&[m("nope", MatchOp::RegexMatch, ".+")]).is_empty());
    assert_eq!(names(&[m("nope", MatchOp::Equal, "")]).len(), 8);
    // Series 0..5 have 6 samples (block + head), 6..7 only the head's 3.
    let got = read(
        &f.db,
        "t",
        &[m("i", MatchOp::Equal, "0")],
        i64::MIN,
        i64::MAX,
    );
    assert_eq!(got[0].1.len(), 6);
}

#[test]
fn concurrent_apply_and_queries() {
    let mut f = Fixture::with(|o| o.block_duration_ms = 60_000);
    fill(&mut f, "t", 10, T0, 1, 1000);
    let db = f.db.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let db = db.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let q = db.querier("t");
                let refs = q
                    .series(&[Matcher::equal("job", "j")], i64::MIN, i64::MAX)
                    .unwrap();
                for r in &refs {
                    let mut out = Vec::new();
                    q.samples(r, i64::MIN, i64::MAX, &mut out).unwrap();
                    assert!(out.windows(2).all(|w| w[0].t < w[1].t), "sorted and unique");
                    // Samples are contiguous from the first: none lost during cuts.
                    assert_eq!(out.first().map(|s| s.t), Some(T0));
                    assert_eq!(
                        out.last().map(|s| s.t),
                        Some(T0 + (out.len() as i64 - 1) * 1000)
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    for k in 1..400 {
        fill(&mut f, "t", 10, T0 + k * 1000, 1, 1000);
        if k % 50 == 0 {
            f.db.maintain(T0 + k * 1000).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(all(&f.db, "t")[0].1.len(), 400);
}

#[test]
fn tenants_are_isolated_and_odd_names_are_safe() {
    let mut f = Fixture::new();
    let s = labels("m", &[]);
    f.ingest("../evil", batch(vec![series(&s, &[(T0, 1.0)])]), T0);
    f.ingest("ok", batch(vec![series(&s, &[(T0, 2.0)])]), T0);
    f.db.flush().unwrap();
    assert!(f.path.join(format!("~{}", hex::encode("../evil"))).exists());
    f.reopen();
    assert_eq!(all(&f.db, "../evil")[0].1, vec![(T0, 1f64.to_bits())]);
    assert_eq!(all(&f.db, "ok")[0].1, vec![(T0, 2f64.to_bits())]);
    assert!(all(&f.db, "none").is_empty());
}

/// A node-exporter-like day: counters increasing by small integers, fixed-point
/// counters (cpu seconds), gauges constant or slowly changing, 15 s scrapes with
/// jitter. Prints bytes per sample on disk and head bytes per series.
#[test]
fn bytes_per_sample_on_realistic_data() {
    let mut f = Fixture::new();
    let (bps, head_per_series) = realistic_bytes_per_sample(&mut f.db, 500, 480);
    println!("bytes/sample on disk: {bps:.3}; head bytes/series (2 h): {head_per_series}");
    assert!(bps < 1.0, "{bps} bytes per sample");
}

/// Ingests `n_series` x `n_samples` realistic samples, flushes, and returns
/// (disk bytes per sample, head data bytes per series before the flush).
pub(crate) fn realistic_bytes_per_sample(
    db: &mut Tsdb,
    n_series: usize,
    n_samples: i64,
) -> (f64, u64) {
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let set: Vec<Labels> = (0..n_series)
        .map(|i| {
            labels(
                [
                    "node_cpu_seconds_total",
                    "node_network_receive_bytes_total",
                    "node_memory_free_bytes",
                    "node_load1",
                    "up",
                    "node_filesystem_avail_bytes",
                ][i % 6],
                &[
                    ("instance", &format!("host-{}:9100", i / 60)),
                    ("job", "node"),
                    ("i", &(i % 60).to_string()),
                ],
            )
        })
        .collect();
    let mut values: Vec<f64> = (0..n_series).map(|i| (i * 1000) as f64).collect();
    let mut lsn = 0;
    for k in 0..n_samples {
        let base = T0 + k * 15_000;
        let mut b = Vec::with_capacity(n_series);
        for (i, l) in set.iter().enumerate() {
            let t = base + (next() % 7) as i64 - 3 + (i as i64 % 50);
            let v = &mut values[i];
            match i % 6 {
                // cpu seconds in hundredths: an idle core gains ~15 s per 15 s scrape
                0 => *v = ((*v * 100.0).round() + 1490.0 + (next() % 20) as f64).round() / 100.0,
                1 => *v += (next() % 20) as f64,
                2 if next() % 10 == 0 => {
                    *v += 4096.0 * ((next() % 5) as f64 - 2.0);
                }
                3 if next() % 4 == 0 => {
                    *v = ((next() % 400) as f64) / 100.0;
                }
                4 => *v = 1.0,
                _ => {}
            }
            b.push(SeriesSamples {
                labels: l.clone(),
                samples: vec![Sample { t, v: *v }],
            });
        }
        lsn += 1;
        db.apply(lsn, "t", &batch(b));
    }
    let head = db.head_data_bytes() / n_series as u64;
    let head_total = db.stats().head_bytes / n_series as u64;
    db.flush().unwrap();
    let st = db.stats();
    (
        st.disk_bytes as f64 / st.block_samples as f64,
        head.max(head_total),
    )
}

#[test]
fn version_1_record_written_by_hand_applies_and_garbage_changes_nothing() {
    // A record as the code before the borrowed decoder wrote it, byte by byte:
    // version 1, tenant "t", one series {__name__="up", job="a"} with samples
    // (1000, 1.0) and (1015, 2.0), no metadata.
    let mut b = vec![1u8, 1, b't', 1, 2, 8];
    b.extend_from_slice(b"__name__");
    b.extend_from_slice(&[2, b'u', b'p', 3, b'j', b'o', b'b', 1, b'a', 2]);
    b.extend_from_slice(&[0xd0, 0x0f]); // zigzag(1000) = 2000
    b.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
    b.push(30); // zigzag(15)
    b.extend_from_slice(&2.0f64.to_bits().to_le_bytes());
    b.push(0);
    let want = batch(vec![series(
        &labels("up", &[("job", "a")]),
        &[(1000, 1.0), (1015, 2.0)],
    )]);
    assert_eq!(encode_record("t", &want), b);
    let f = Fixture::new();
    f.db.apply_record(1, &b).unwrap();
    assert_eq!(
        all(&f.db, "t"),
        vec![(
            labels("up", &[("job", "a")]),
            vec![(1000, 1.0f64.to_bits()), (1015, 2.0f64.to_bits())]
        )]
    );
    // Every truncation and a wrong version are errors that store nothing more.
    for cut in 0..b.len() {
        assert!(f.db.apply_record(2, &b[..cut]).is_err(), "cut at {cut}");
    }
    let mut v9 = b.clone();
    v9[0] = 9;
    assert!(f.db.apply_record(2, &v9).is_err());
    assert_eq!(all(&f.db, "t").len(), 1);
    assert_eq!(f.db.stats().head_samples, 2);
}

#[test]
fn admit_encode_refuses_unsorted_or_empty_borrowed_labels() {
    let f = Fixture::new();
    let smp = [Sample { t: T0, v: 1.0 }];
    let unsorted: &[(&str, &str)] = &[(METRIC_NAME, "up"), ("b", "1"), ("a", "2")];
    let repeated: &[(&str, &str)] = &[(METRIC_NAME, "up"), ("a", "1"), ("a", "2")];
    let empty: &[(&str, &str)] = &[(METRIC_NAME, "up"), ("a", "")];
    for l in [unsorted, repeated, empty] {
        let enc = f.db.admit_encode("t", [(l, &smp[..])].into_iter(), &[], T0);
        assert_eq!(enc.admission.invalid, 1, "{l:?}");
        assert!(enc.record.is_none());
        assert_eq!(enc.samples, 0);
    }
}
