//! Real node_exporter scrapes replayed as a fleet of hosts, for bytes-per-sample figures
//! that mean something: the synthetic mixes of [`crate::metrics`] decide how noisy every
//! value is, and a storage format can look good or bad on them at will.
//!
//! A capture is a directory of `scrape-<unix_ms>.prom.gz` files, each one gzipped
//! `/metrics` body of a node exporter, taken every 15 s (`benches/node-capture.sh`).
//! [`Capture::load`] parses them with the agent's exposition parser (the very code the
//! agent scrapes with, compiled in here rather than copied) and keeps the series present
//! in every scrape, with their values in scrape order.
//!
//! A [`CaptureFleet`] turns one capture into many hosts: host `h` has every captured
//! series, labelled `job="node"` and `instance="node-<h>:9100"` as Prometheus's scrape
//! loop would label them, and starts at its own offset into the capture (hosts are not
//! in lock step). When a host reaches the end of the capture it starts again from the
//! beginning ("wraps"), every counter shifted up so it keeps growing: after the last
//! captured value `v[n-1]` comes `v[n-1] + (v[1] - v[0])`, then the rest of the capture
//! shifted by the same amount, rounded back to the capture's own decimal places (so a
//! shifted `14956.53` stays the double nearest to a two-decimal number, as the exporter
//! would print it). A series is a counter when its type is not `gauge` and it never
//! decreases within the capture; gauges replay as captured.
//!
//! Timestamps ([`Stamps`]): either each scrape's own capture time (the file name, so the
//! capture's real spacing of 15,014–15,093 ms between scrapes, taken by a shell loop),
//! or the 15 s grid Prometheus's scrape loop records (its ticker, with timestamps within
//! `--scrape.timestamp-tolerance` of the slot snapped onto it). Each host gets its own
//! phase within the interval, as Prometheus spreads its targets.

#[path = "../../agent/src/exposition.rs"]
#[allow(dead_code, unreachable_pub)]
mod exposition;

use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};

use exposition::MetricType;

/// Largest capture body read, uncompressed: a node exporter serves ~100 KiB; more is not
/// a node exporter scrape.
const MAX_SCRAPE_BYTES: u64 = 64 * 1024 * 1024;

/// Most decimal places a counter is rounded back to after a wrap shift.
const MAX_DECIMALS: i32 = 9;

/// Why a capture could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A scrape body is not valid exposition text.
    #[error("{path}: {message}")]
    Parse {
        /// The scrape file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
    /// Fewer than two scrapes, or no series common to all of them.
    #[error("capture {dir} is unusable: {reason}")]
    Unusable {
        /// The capture directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One series of a capture.
#[derive(Clone, Debug)]
struct CapturedSeries {
    /// Name and labels as scraped (no `job` or `instance`), `__name__` included.
    labels: Vec<(String, String)>,
    /// One value per scrape.
    values: Vec<f64>,
    /// Added to the captured value per completed wrap (0 for gauges).
    wrap_shift: f64,
    /// Decimal places a shifted value is rounded to (`None`: not rounded).
    decimals: Option<i32>,
}

/// A loaded capture: scrape times and the series present in every scrape.
#[derive(Clone, Debug)]
pub struct Capture {
    times_ms: Vec<i64>,
    series: Vec<CapturedSeries>,
    /// Series seen in some scrapes but not all, left out.
    dropped: usize,
}

impl Capture {
    /// Reads every `scrape-<unix_ms>.prom.gz` of `dir`, in time order.
    pub fn load(dir: &Path) -> Result<Capture, CaptureError> {
        Capture::load_all(&[dir.to_path_buf()])
    }

    /// Reads the scrapes of several directories as one capture, in time order (captures
    /// of one exporter at different times; the series kept are those in every scrape).
    pub fn load_all(dirs: &[PathBuf]) -> Result<Capture, CaptureError> {
        let mut files: Vec<(i64, PathBuf)> = Vec::new();
        for dir in dirs {
            files.extend(scrape_files(dir)?);
        }
        files.sort();
        let mut scrapes = Vec::with_capacity(files.len());
        for (ms, path) in files {
            if let Some(parsed) = read_scrape(&path)? {
                scrapes.push((ms, parsed));
            }
        }
        let name = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        Capture::from_scrapes(Path::new(&name), scrapes)
    }

    /// Parses scrape bodies given in memory (for tests): `(unix_ms, text)` in time order.
    pub fn from_texts(texts: &[(i64, &str)]) -> Result<Capture, CaptureError> {
        let dir = PathBuf::from("<memory>");
        let mut scrapes = Vec::with_capacity(texts.len());
        for (ms, text) in texts {
            let parsed = exposition::parse(text).map_err(|e| CaptureError::Parse {
                path: dir.clone(),
                message: e.to_string(),
            })?;
            scrapes.push((*ms, parsed));
        }
        Capture::from_scrapes(&dir, scrapes)
    }

    fn from_scrapes(
        dir: &Path,
        scrapes: Vec<(i64, exposition::Exposition)>,
    ) -> Result<Capture, CaptureError> {
        let unusable = |reason: String| CaptureError::Unusable {
            dir: dir.to_path_buf(),
            reason,
        };
        if scrapes.len() < 2 {
            return Err(unusable(format!(
                "{} scrapes, at least 2 needed",
                scrapes.len()
            )));
        }
        let n = scrapes.len();
        type Key = Vec<(String, String)>;
        /// Per scrape: the value and its decimal places, if the series was there.
        type Column = Vec<Option<(f64, i32)>>;
        let mut index: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
        let mut series: Vec<(Key, bool, Column)> = Vec::new();
        for (k, (_, exp)) in scrapes.iter().enumerate() {
            for family in &exp.families {
                for s in &family.samples {
                    let mut key: Key = Vec::with_capacity(s.labels.len() + 1);
                    key.push(("__name__".to_owned(), s.name.clone()));
                    key.extend(s.labels.iter().cloned());
                    key.sort();
                    let i = *index.entry(key.clone()).or_insert_with(|| {
                        series.push((key, family.kind == MetricType::Gauge, vec![None; n]));
                        series.len() - 1
                    });
                    series[i].2[k] = Some((s.value, decimals_of(s.value)));
                }
            }
        }
        let total = series.len();
        let series: Vec<CapturedSeries> = series
            .into_iter()
            .filter_map(|(labels, gauge, values)| {
                let values: Option<Vec<(f64, i32)>> = values.into_iter().collect();
                let values = values?;
                // Rounded back only when every captured value was a short decimal.
                let decimals = if values.iter().all(|&(_, d)| d >= 0) {
                    values.iter().map(|&(_, d)| d).max()
                } else {
                    None
                };
                let values: Vec<f64> = values.into_iter().map(|(v, _)| v).collect();
                let monotonic =
                    values.iter().all(|v| v.is_finite()) && values.windows(2).all(|w| w[1] >= w[0]);
                let wrap_shift = if !gauge && monotonic {
                    values[n - 1] - values[0] + (values[1] - values[0])
                } else {
                    0.0
                };
                Some(CapturedSeries {
                    labels,
                    values,
                    wrap_shift,
                    decimals,
                })
            })
            .collect();
        if series.is_empty() {
            return Err(unusable("no series is in every scrape".into()));
        }
        Ok(Capture {
            times_ms: scrapes.iter().map(|(ms, _)| *ms).collect(),
            dropped: total - series.len(),
            series,
        })
    }

    /// Scrapes in the capture.
    pub fn scrapes(&self) -> usize {
        self.times_ms.len()
    }

    /// Series per host (those present in every scrape).
    pub fn series_per_host(&self) -> usize {
        self.series.len()
    }

    /// Series seen in some scrapes but not all, left out.
    pub fn dropped_series(&self) -> usize {
        self.dropped
    }

    /// Series replayed as counters (shifted at each wrap).
    pub fn counters(&self) -> usize {
        self.series.iter().filter(|s| s.wrap_shift != 0.0).count()
    }

    /// The capture time of position `j` of the endless replay: the capture's own times,
    /// each wrap shifted by the capture's span plus its first spacing.
    fn replay_time_ms(&self, j: u64) -> i64 {
        let n = self.times_ms.len() as u64;
        let period = self.times_ms[self.times_ms.len() - 1] - self.times_ms[0]
            + (self.times_ms[1] - self.times_ms[0]);
        self.times_ms[(j % n) as usize] + (j / n) as i64 * period
    }

    /// The value of series `s` at position `j` of the endless replay.
    fn replay_value(&self, s: usize, j: u64) -> f64 {
        let series = &self.series[s];
        let n = series.values.len() as u64;
        let v = series.values[(j % n) as usize];
        let wraps = j / n;
        if wraps == 0 || series.wrap_shift == 0.0 {
            return v;
        }
        let shifted = v + wraps as f64 * series.wrap_shift;
        match series.decimals {
            Some(d) => {
                let p = 10f64.powi(d);
                let m = (shifted * p).round();
                if m.abs() < 9_007_199_254_740_992.0 {
                    m / p
                } else {
                    shifted
                }
            }
            None => shifted,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + use<> {
    let path = path.to_path_buf();
    move |source| CaptureError::Io { path, source }
}

/// The `scrape-<unix_ms>.prom.gz` files of `dir` with their times.
fn scrape_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>, CaptureError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ms) = name
            .strip_prefix("scrape-")
            .and_then(|r| r.strip_suffix(".prom.gz"))
            .and_then(|ms| ms.parse::<i64>().ok())
        {
            files.push((ms, entry.path()));
        }
    }
    Ok(files)
}

/// One scrape file, parsed; `None` when it is empty or not a whole gzip stream yet (the
/// newest file of a capture still being written).
fn read_scrape(path: &Path) -> Result<Option<exposition::Exposition>, CaptureError> {
    let mut text = String::new();
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    if flate2::read::GzDecoder::new(file)
        .take(MAX_SCRAPE_BYTES)
        .read_to_string(&mut text)
        .is_err()
        || text.is_empty()
    {
        return Ok(None);
    }
    exposition::parse(&text)
        .map(Some)
        .map_err(|e| CaptureError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Decimal places of `v` as the exporter printed it: the fewest (up to
/// [`MAX_DECIMALS`]) at which `v` is the double nearest a decimal number; -1 when none.
fn decimals_of(v: f64) -> i32 {
    if !v.is_finite() {
        return -1;
    }
    (0..=MAX_DECIMALS)
        .find(|&d| {
            let p = 10f64.powi(d);
            let m = (v * p).round();
            m.abs() < 9_007_199_254_740_992.0 && (m / p).to_bits() == v.to_bits()
        })
        .unwrap_or(-1)
}

/// Which timestamps a [`CaptureFleet`] gives its samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stamps {
    /// On the interval grid, as Prometheus's scrape loop records a regular target.
    #[default]
    Aligned,
    /// Each scrape's own capture time (its file name).
    Capture,
}

impl FromStr for Stamps {
    type Err = String;

    fn from_str(s: &str) -> Result<Stamps, String> {
        match s {
            "aligned" => Ok(Stamps::Aligned),
            "capture" => Ok(Stamps::Capture),
            other => Err(format!("unknown timestamps {other:?} (aligned, capture)")),
        }
    }
}

impl Stamps {
    /// The name `FromStr` takes.
    pub fn name(self) -> &'static str {
        match self {
            Stamps::Aligned => "aligned",
            Stamps::Capture => "capture",
        }
    }
}

/// Many hosts replaying one capture; see the module documentation. Series `i` is series
/// `i % series_per_host` of host `i / series_per_host`.
#[derive(Clone, Debug)]
pub struct CaptureFleet {
    capture: Arc<Capture>,
    stamps: Stamps,
    start_ms: i64,
    interval_ms: i64,
    /// Per host: the capture position of its first scrape, and its phase in the interval.
    hosts: Vec<(u64, i64)>,
    /// Per series: `(labels, next scrape)`.
    series: Vec<(Labels, u64)>,
}

impl CaptureFleet {
    /// `hosts` hosts replaying `capture`, scrape `k` of host `h` at about
    /// `start_ms + phase(h) + k × interval_ms`; see [`CaptureFleet::span_ms`] for the
    /// latest time a number of scrapes reaches.
    pub fn new(
        capture: Arc<Capture>,
        hosts: usize,
        start_ms: i64,
        interval_ms: i64,
        stamps: Stamps,
    ) -> CaptureFleet {
        let n = capture.scrapes() as u64;
        let hosts: Vec<(u64, i64)> = (0..hosts as u64)
            .map(|h| {
                // Offsets spread evenly over the capture (a golden-ratio sequence), so
                // wraps happen at different times on different hosts.
                let offset = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % n;
                let phase = ((h.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as i64)
                    .rem_euclid(interval_ms.max(1));
                (offset, phase)
            })
            .collect();
        let per_host = capture.series_per_host();
        let mut series = Vec::with_capacity(hosts.len() * per_host);
        for h in 0..hosts.len() {
            let instance = format!("node-{h:04}:9100");
            for s in &capture.series {
                let pairs = s
                    .labels
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .chain([("job", "node"), ("instance", instance.as_str())]);
                series.push((Labels::from_pairs(pairs), 0));
            }
        }
        CaptureFleet {
            capture,
            stamps,
            start_ms,
            interval_ms,
            hosts,
            series,
        }
    }

    /// Number of series (hosts × series per host).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the fleet has no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Labels of series `i`.
    pub fn labels(&self, i: usize) -> &Labels {
        &self.series[i].0
    }

    /// How far after `start_ms` the last of `scrapes` scrapes of any host can be.
    pub fn span_ms(&self, scrapes: usize) -> i64 {
        let last = scrapes.saturating_sub(1) as u64;
        self.hosts
            .iter()
            .map(|&(offset, phase)| phase + self.elapsed_ms(offset, last))
            .max()
            .unwrap_or(0)
    }

    /// Time from a host's first scrape to its scrape `k`.
    fn elapsed_ms(&self, offset: u64, k: u64) -> i64 {
        match self.stamps {
            Stamps::Aligned => k as i64 * self.interval_ms,
            Stamps::Capture => {
                self.capture.replay_time_ms(offset + k) - self.capture.replay_time_ms(offset)
            }
        }
    }

    /// Sample `k` of series `i`.
    pub fn sample(&self, i: usize, k: u64) -> Sample {
        let per_host = self.capture.series_per_host();
        let (offset, phase) = self.hosts[i / per_host];
        Sample {
            t: self.start_ms + phase + self.elapsed_ms(offset, k),
            v: self.capture.replay_value(i % per_host, offset + k),
        }
    }

    /// The next `scrapes` samples of each series in `range`, as one batch.
    pub fn batch(&mut self, range: Range<usize>, scrapes: usize) -> MetricBatch {
        let mut out = Vec::with_capacity(range.len());
        for i in range {
            let first = self.series[i].1;
            self.series[i].1 += scrapes as u64;
            let samples = (first..first + scrapes as u64)
                .map(|k| self.sample(i, k))
                .collect();
            out.push(SeriesSamples {
                labels: self.series[i].0.clone(),
                samples,
            });
        }
        MetricBatch {
            series: out,
            metadata: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE_A: &str = "\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 14956.53
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 95.72
# TYPE node_load1 gauge
node_load1 1.22
# TYPE node_netstat_Tcp_CurrEstab untyped
node_netstat_Tcp_CurrEstab 4
node_netstat_Udp_InDatagrams 100
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile=\"0.5\"} 3.1e-05
go_gc_duration_seconds_sum 0.0123
go_gc_duration_seconds_count 7
# TYPE node_only_here gauge
node_only_here 1
";
    const SCRAPE_B: &str = "\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 14962.59
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 96.1
# TYPE node_load1 gauge
node_load1 1.1
# TYPE node_netstat_Tcp_CurrEstab untyped
node_netstat_Tcp_CurrEstab 2
node_netstat_Udp_InDatagrams 103
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile=\"0.5\"} 2.9e-05
go_gc_duration_seconds_sum 0.0125
go_gc_duration_seconds_count 8
";
    const SCRAPE_C: &str = "\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 14970.01
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 96.33
# TYPE node_load1 gauge
node_load1 0.98
# TYPE node_netstat_Tcp_CurrEstab untyped
node_netstat_Tcp_CurrEstab 3
node_netstat_Udp_InDatagrams 110
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile=\"0.5\"} 3.3e-05
go_gc_duration_seconds_sum 0.0131
go_gc_duration_seconds_count 9
";

    fn capture() -> Arc<Capture> {
        Arc::new(
            Capture::from_texts(&[
                (1_000_000, SCRAPE_A),
                (1_015_020, SCRAPE_B),
                (1_030_041, SCRAPE_C),
            ])
            .expect("capture parses"),
        )
    }

    fn find(fleet: &CaptureFleet, name: &str, host: usize) -> usize {
        (0..fleet.len())
            .find(|&i| {
                let l = &fleet.series[i].0;
                l.metric_name() == Some(name)
                    && l.get("mode") != Some("user")
                    && l.get("instance") == Some(format!("node-{host:04}:9100").as_str())
            })
            .expect("series present")
    }

    #[test]
    fn keeps_series_in_every_scrape_and_finds_counters() {
        let c = capture();
        assert_eq!(c.scrapes(), 3);
        // 2 cpu + load1 + CurrEstab + InDatagrams + quantile + sum + count.
        assert_eq!(c.series_per_host(), 8);
        assert_eq!(c.dropped_series(), 1);
        // cpu × 2, InDatagrams (untyped, monotonic), summary sum and count; not load1
        // (gauge), CurrEstab (goes down) or the quantile (goes down).
        assert_eq!(c.counters(), 5);
    }

    #[test]
    fn hosts_are_relabelled_and_counters_stay_monotonic_across_wraps() {
        let c = capture();
        let mut fleet = CaptureFleet::new(c.clone(), 3, 0, 15_000, Stamps::Aligned);
        assert_eq!(fleet.len(), 3 * 8);
        for (labels, _) in &fleet.series {
            assert_eq!(labels.get("job"), Some("node"));
            assert!(
                labels
                    .get("instance")
                    .is_some_and(|i| i.starts_with("node-"))
            );
        }
        let batch = fleet.batch(0..fleet.len(), 10);
        let by_labels = |name: &str, host: usize| {
            let i = find(&fleet, name, host);
            batch.series[i].samples.clone()
        };
        for host in 0..3 {
            let cpu = by_labels("node_cpu_seconds_total", host);
            assert!(cpu.windows(2).all(|w| w[1].v > w[0].v), "{cpu:?}");
            // Exactly two decimals, as the exporter prints CPU seconds.
            for s in &cpu {
                assert_eq!(decimals_of(s.v).clamp(0, 2), decimals_of(s.v), "{}", s.v);
            }
            // Timestamps on the grid, 15 s apart.
            assert!(cpu.windows(2).all(|w| w[1].t - w[0].t == 15_000));
            let count = by_labels("go_gc_duration_seconds_count", host);
            assert!(
                count.windows(2).all(|w| w[1].v == w[0].v + 1.0),
                "{count:?}"
            );
            // A gauge replays its captured values, wraps included.
            let load = by_labels("node_load1", host);
            assert!(load.iter().all(|s| [1.22, 1.1, 0.98].contains(&s.v)));
        }
        // Hosts start at different offsets into the capture.
        let firsts: std::collections::HashSet<u64> = (0..3)
            .map(|h| by_labels("node_load1", h)[0].v.to_bits())
            .collect();
        assert!(firsts.len() > 1);
    }

    #[test]
    fn batches_continue_where_the_last_one_stopped() {
        let c = capture();
        let mut whole = CaptureFleet::new(c.clone(), 2, 5_000, 15_000, Stamps::Capture);
        let mut parts = whole.clone();
        let all = whole.batch(0..whole.len(), 7);
        let a = parts.batch(0..parts.len(), 3);
        let b = parts.batch(0..parts.len(), 4);
        for i in 0..all.series.len() {
            let joined: Vec<Sample> = a.series[i]
                .samples
                .iter()
                .chain(&b.series[i].samples)
                .copied()
                .collect();
            assert_eq!(joined, all.series[i].samples);
            let t = &all.series[i].samples;
            assert!(t.windows(2).all(|w| w[1].t > w[0].t));
            assert!(t.iter().all(|s| s.t - 5_000 <= whole.span_ms(7)));
        }
    }

    #[test]
    fn capture_times_keep_their_real_spacing() {
        let c = capture();
        let fleet = CaptureFleet::new(c, 1, 0, 15_000, Stamps::Capture);
        let i = find(&fleet, "node_load1", 0);
        let gaps: Vec<i64> = (0..6)
            .map(|k| fleet.sample(i, k + 1).t - fleet.sample(i, k).t)
            .collect();
        // 15,020 and 15,021 within a pass; the wrap repeats the first spacing.
        assert!(
            gaps.iter().all(|g| [15_020, 15_021].contains(g)),
            "{gaps:?}"
        );
    }

    #[test]
    fn unusable_captures_are_reported() {
        assert!(matches!(
            Capture::from_texts(&[(0, SCRAPE_A)]),
            Err(CaptureError::Unusable { .. })
        ));
        assert!(matches!(
            Capture::from_texts(&[(0, SCRAPE_A), (1, "bad{ line")]),
            Err(CaptureError::Parse { .. })
        ));
        assert!(matches!(
            Capture::from_texts(&[(0, "a 1\n"), (1, "b 1\n")]),
            Err(CaptureError::Unusable { .. })
        ));
        assert!(Capture::load(Path::new("/nonexistent/capture")).is_err());
    }

    #[test]
    fn decimals_are_those_the_exporter_printed() {
        assert_eq!(decimals_of(14956.53), 2);
        assert_eq!(decimals_of(1.741744e6), 0);
        assert_eq!(decimals_of(27151.331000000002), -1);
        assert_eq!(decimals_of(f64::NAN), -1);
        assert_eq!(decimals_of(3.1e-05), 6);
    }
}
