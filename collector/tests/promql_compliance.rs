//! PromQL compliance: the corpus in `tests/promql/queries.txt` runs against the real
//! collector and against a real Prometheus (the Debian package, 2.42) holding the same
//! samples, and every answer must agree — result type, label sets, values (1e-9
//! relative), order where PromQL defines one, and the error type when Prometheus
//! refuses. `promtool query` must print the same against both servers too.
//!
//! The data is generated from a fixed seed, three hours at 15 s ending a few minutes
//! before the test runs (inside Vantage's retention and out-of-order window). Prometheus
//! gets it by backfill (promtool writes blocks before it starts; see
//! `common::prometheus`), Vantage by remote write, in time order.
//!
//! Every mismatch is reported at once, with a passed/failed count per query.
//!
//! Skipped loudly when `prometheus`/`promtool` are missing, unless `CI` is set (then it
//! fails). `PROMQL_COMPLIANCE_TARGET=prometheus` compares with a second Prometheus fed by
//! the same remote write instead of Vantage: a check of the corpus and of the harness.
//! `PROMQL_COMPLIANCE_DUMP=1` prints what Prometheus answers to every query.
//!
//! Run alone: `cargo test -p vantage-collector --test promql_compliance`.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use futures::StreamExt as _;
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};

use common::prometheus::{HeaderProxy, Prometheus, http_request, promtool_query};
use common::*;

/// The corpus: one query per line, `#` comments.
const CORPUS: &str = include_str!("promql/queries.txt");
/// Seed of the data generator: the same samples on every run.
const SEED: u64 = 0x5eed_2024_0003;
/// Scrape interval of the regular series, ms.
const STEP_MS: i64 = 15_000;
/// How much history is generated, ms.
const SPAN_MS: i64 = 3 * 3_600_000;
/// The data ends this long before "now rounded down to the minute", so every query
/// time, including a few minutes past the end, is in the past.
const END_BEFORE_NOW_MS: i64 = 5 * 60_000;
/// Samples per remote-write request: one time slice of every series.
const WRITE_SLICE_MS: i64 = 10 * 60_000;
/// Queries in flight per server.
const PARALLEL: usize = 4;
/// Relative tolerance of float comparison.
const REL_TOLERANCE: f64 = 1e-9;
/// Absolute tolerance, for values that cancel to about zero in a different order.
const ABS_TOLERANCE: f64 = 1e-12;

// ---------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------

/// splitmix64: a tiny deterministic generator (no dependency, same stream everywhere).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// The generated samples and their time span.
struct Dataset {
    /// Time of the first regular sample, ms.
    start: i64,
    /// Time of the last regular sample, ms.
    end: i64,
    series: Vec<SeriesSamples>,
}

impl Dataset {
    fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// A progress line on the process's stderr, shown even when the test passes (libtest
/// captures `eprintln!`).
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Builds the data set ending at `end` (ms); see the header of `queries.txt` for its
/// shape.
fn generate(end: i64) -> Dataset {
    let start = end - SPAN_MS;
    let steps = SPAN_MS / STEP_MS; // samples at k = 0..=steps
    let at = |k: i64| start + k * STEP_MS;
    let mut rng = Rng(SEED);
    let mut series = Vec::new();
    let mut push = |pairs: &[(&str, &str)], samples: Vec<Sample>| {
        series.push(SeriesSamples {
            labels: labels(pairs),
            samples,
        });
    };

    // Request counters; api-2 and web-1 restart (reset) once; api-3 scrapes with ms
    // jitter.
    let api = ["api-1:8080", "api-2:8080", "api-3:8080"];
    for instance in api {
        for (method, handler) in [("GET", "/api/v1/users"), ("POST", "/api/v2/orders")] {
            for status in ["200", "500"] {
                let base = if status == "200" { 40 } else { 3 };
                let mut v = 0.0;
                let mut samples = Vec::new();
                for k in 0..=steps {
                    if instance == "api-2:8080" && k == 300 {
                        v = 0.0;
                    }
                    v += rng.below(base) as f64;
                    let jitter = if instance == "api-3:8080" {
                        rng.range(-3_000, 3_000)
                    } else {
                        0
                    };
                    samples.push(Sample {
                        t: at(k) + jitter,
                        v,
                    });
                }
                push(
                    &[
                        ("__name__", "http_requests_total"),
                        ("job", "api"),
                        ("instance", instance),
                        ("method", method),
                        ("status", status),
                        ("handler", handler),
                    ],
                    samples,
                );
            }
        }
    }
    for instance in ["web-1:80", "web-2:80"] {
        for status in ["200", "404"] {
            let base = if status == "200" { 25 } else { 5 };
            let mut v = 100.0;
            let mut samples = Vec::new();
            for k in 0..=steps {
                if instance == "web-1:80" && k == 500 {
                    v = 2.0;
                }
                v += rng.below(base) as f64;
                samples.push(Sample { t: at(k), v });
            }
            push(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "web"),
                    ("instance", instance),
                    ("method", "GET"),
                    ("status", status),
                    ("handler", "/index.html"),
                ],
                samples,
            );
        }
    }

    // Node metrics; node-2 appears one hour in.
    let nodes = ["node-1:9100", "node-2:9100"];
    let first_k = |instance: &str| if instance == "node-2:9100" { 240 } else { 0 };
    for instance in nodes {
        for cpu in ["0", "1"] {
            for (mode, share) in [("idle", 0.7), ("user", 0.2), ("system", 0.1)] {
                let mut v = 1000.0 * share;
                let mut samples = Vec::new();
                for k in first_k(instance)..=steps {
                    v += 15.0 * share + rng.below(100) as f64 / 128.0;
                    samples.push(Sample { t: at(k), v });
                }
                push(
                    &[
                        ("__name__", "node_cpu_seconds_total"),
                        ("job", "node"),
                        ("instance", instance),
                        ("cpu", cpu),
                        ("mode", mode),
                    ],
                    samples,
                );
            }
        }
        let mut v = 2_000_000_000.0;
        let mut samples = Vec::new();
        for k in first_k(instance)..=steps {
            v += (rng.range(-1_000, 900) * 4096) as f64;
            samples.push(Sample { t: at(k), v });
        }
        push(
            &[
                ("__name__", "node_memory_free_bytes"),
                ("job", "node"),
                ("instance", instance),
            ],
            samples,
        );
        for (device, mountpoint) in [
            ("sda1", "/"),
            ("sdb1", "/var/lib/data"),
            ("nvme0n1p1", "/home"),
        ] {
            let mut v = 50_000_000_000.0;
            let mut samples = Vec::new();
            for k in first_k(instance)..=steps {
                v += (rng.below(64) * 1_048_576) as f64;
                samples.push(Sample { t: at(k), v });
            }
            push(
                &[
                    ("__name__", "disk_used_bytes"),
                    ("job", "node"),
                    ("instance", instance),
                    ("device", device),
                    ("mountpoint", mountpoint),
                ],
                samples,
            );
        }
    }
    // Info metrics for joins; node_info exists from the start for both nodes.
    let ones = |from: i64| {
        (from..=steps)
            .map(|k| Sample { t: at(k), v: 1.0 })
            .collect()
    };
    push(
        &[
            ("__name__", "node_info"),
            ("job", "node"),
            ("instance", "node-1:9100"),
            ("os", "linux"),
            ("kernel", "5.15.0"),
            ("env", "prod-eu-1"),
        ],
        ones(0),
    );
    push(
        &[
            ("__name__", "node_info"),
            ("job", "node"),
            ("instance", "node-2:9100"),
            ("os", "linux"),
            ("kernel", "6.1.0"),
            ("env", "staging"),
        ],
        ones(0),
    );
    for (instance, version) in [
        ("api-1:8080", "1.2.3"),
        ("api-2:8080", "1.2.3"),
        ("api-3:8080", "1.3.0-rc.1"),
    ] {
        push(
            &[
                ("__name__", "build_info"),
                ("job", "api"),
                ("instance", instance),
                ("version", version),
                ("goversion", "go1.21.5"),
            ],
            ones(0),
        );
    }

    // Temperatures: negative values in quarter degrees; "west" reports at irregular
    // intervals with ms jitter.
    for location in ["north", "south", "east", "west"] {
        let mut v = -4.0;
        let mut samples = Vec::new();
        if location == "west" {
            let mut t = start + 1_234;
            while t <= end {
                v = (v + rng.range(-8, 8) as f64 / 4.0).clamp(-20.0, 15.0);
                samples.push(Sample { t, v });
                t += rng.range(5_000, 45_000);
            }
        } else {
            for k in 0..=steps {
                v = (v + rng.range(-6, 6) as f64 / 4.0).clamp(-20.0, 15.0);
                samples.push(Sample { t: at(k), v });
            }
        }
        push(
            &[
                ("__name__", "temperature_celsius"),
                ("job", "sensors"),
                ("instance", "sensor-1:9300"),
                ("location", location),
            ],
            samples,
        );
    }

    // Queue depths: worker-1/high has gaps longer than the 5 m lookback; worker-2/low
    // reports at irregular intervals.
    let gaps = [
        (start + 60 * 60_000, start + 80 * 60_000),
        (start + 130 * 60_000, start + 137 * 60_000),
    ];
    for instance in ["worker-1:9200", "worker-2:9200"] {
        for queue in ["high", "low"] {
            let mut samples = Vec::new();
            if instance == "worker-2:9200" && queue == "low" {
                let mut t = start + 789;
                while t <= end {
                    samples.push(Sample {
                        t,
                        v: rng.below(101) as f64,
                    });
                    t += rng.range(1_000, 60_000);
                }
            } else {
                for k in 0..=steps {
                    let t = at(k);
                    let in_gap = instance == "worker-1:9200"
                        && queue == "high"
                        && gaps.iter().any(|(a, b)| (*a..*b).contains(&t));
                    let v = rng.below(101) as f64;
                    if !in_gap {
                        samples.push(Sample { t, v });
                    }
                }
            }
            push(
                &[
                    ("__name__", "queue_depth"),
                    ("job", "worker"),
                    ("instance", instance),
                    ("queue", queue),
                ],
                samples,
            );
        }
    }

    // NaN and infinities.
    for (kind, value) in [
        ("nan", f64::NAN),
        ("pos_inf", f64::INFINITY),
        ("neg_inf", f64::NEG_INFINITY),
    ] {
        let samples = (0..=steps).map(|k| Sample { t: at(k), v: value }).collect();
        push(
            &[
                ("__name__", "special_values"),
                ("job", "special"),
                ("kind", kind),
            ],
            samples,
        );
    }
    let mixed = (0..=steps)
        .map(|k| {
            let v = if k % 17 == 5 {
                f64::NAN
            } else if k % 29 == 3 {
                f64::INFINITY
            } else {
                (k % 40) as f64 - 12.5
            };
            Sample { t: at(k), v }
        })
        .collect();
    push(
        &[
            ("__name__", "special_values"),
            ("job", "special"),
            ("kind", "mixed"),
        ],
        mixed,
    );

    // A classic histogram per instance and handler; api-2 restarts with its counters.
    let bounds = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    let les = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for instance in api {
        for handler in ["/api/v1/users", "/api/v2/orders"] {
            // Share of observations per bucket (the last is above 2.5 s).
            let weights: [u64; 7] = if handler == "/api/v1/users" {
                [30, 25, 20, 12, 8, 4, 1]
            } else {
                [5, 10, 20, 25, 20, 15, 5]
            };
            let total_weight: u64 = weights.iter().sum();
            let mut buckets = [0.0f64; 7];
            let mut sum = 0.0;
            let mut series_of: Vec<Vec<Sample>> = vec![Vec::new(); 9];
            for k in 0..=steps {
                if instance == "api-2:8080" && k == 300 {
                    buckets = [0.0; 7];
                    sum = 0.0;
                }
                let n = rng.below(30);
                for _ in 0..n {
                    let mut pick = rng.below(total_weight);
                    let mut bucket = 0;
                    while pick >= weights[bucket] {
                        pick -= weights[bucket];
                        bucket += 1;
                    }
                    // Non-cumulative count, made cumulative below.
                    buckets[bucket] += 1.0;
                    sum += if bucket < bounds.len() {
                        bounds[bucket] * 0.75
                    } else {
                        4.0
                    };
                }
                let t = at(k);
                let mut cumulative = 0.0;
                for (i, b) in buckets.iter().enumerate() {
                    cumulative += b;
                    series_of[i].push(Sample { t, v: cumulative });
                }
                series_of[7].push(Sample { t, v: sum });
                series_of[8].push(Sample { t, v: cumulative });
            }
            let base = |name: &'static str| {
                vec![
                    ("__name__", name),
                    ("job", "api"),
                    ("instance", instance),
                    ("handler", handler),
                ]
            };
            let mut per = series_of.into_iter();
            for le in les {
                let mut pairs = base("request_duration_seconds_bucket");
                pairs.push(("le", le));
                push(&pairs, per.next().expect("one series per bucket"));
            }
            push(
                &base("request_duration_seconds_sum"),
                per.next().expect("sum"),
            );
            push(
                &base("request_duration_seconds_count"),
                per.next().expect("count"),
            );
        }
    }

    // up: 0 while api-3 is down; node-2 from when it appears; legacy stays 0 after its
    // counter ends.
    let legacy_end_k = steps - 240;
    let mut up_targets: Vec<(&str, &str, i64)> = Vec::new();
    for instance in api {
        up_targets.push(("api", instance, 0));
    }
    for instance in ["web-1:80", "web-2:80"] {
        up_targets.push(("web", instance, 0));
    }
    for instance in nodes {
        up_targets.push(("node", instance, first_k(instance)));
    }
    for instance in ["worker-1:9200", "worker-2:9200"] {
        up_targets.push(("worker", instance, 0));
    }
    up_targets.push(("legacy", "old-1:7000", 0));
    for (job, instance, from) in up_targets {
        let samples = (from..=steps)
            .map(|k| {
                let down = (instance == "api-3:8080" && (400..440).contains(&k))
                    || (job == "legacy" && k > legacy_end_k);
                Sample {
                    t: at(k),
                    v: if down { 0.0 } else { 1.0 },
                }
            })
            .collect();
        push(
            &[("__name__", "up"), ("job", job), ("instance", instance)],
            samples,
        );
    }

    // A batch job reporting every 10 minutes: longer than the lookback.
    let batch = (0..=SPAN_MS / 600_000)
        .map(|i| {
            let t = start + 30_000 + i * 600_000;
            Sample {
                t,
                v: (t / 1000) as f64,
            }
        })
        .filter(|s| s.t <= end)
        .collect();
    push(
        &[
            ("__name__", "batch_last_success_timestamp_seconds"),
            ("job", "batch"),
            ("instance", "batch-1:9400"),
        ],
        batch,
    );

    // A counter that stops one hour before the end.
    let mut v = 0.0;
    let legacy = (0..=legacy_end_k)
        .map(|k| {
            v += rng.below(10) as f64;
            Sample { t: at(k), v }
        })
        .collect();
    push(
        &[
            ("__name__", "legacy_requests_total"),
            ("job", "legacy"),
            ("instance", "old-1:7000"),
        ],
        legacy,
    );

    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Dataset { start, end, series }
}

/// The data set as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`:
/// no TYPE lines (every family "unknown", so any name is allowed), each series' samples
/// together and in time order, families contiguous (series are sorted by labels,
/// `__name__` first).
fn openmetrics(data: &Dataset) -> String {
    let mut out = String::new();
    for s in &data.series {
        let name = s.labels.metric_name().expect("every series has a name");
        let mut head = format!("{name}{{");
        let mut first = true;
        for l in s.labels.iter().filter(|l| l.name != "__name__") {
            if !first {
                head.push(',');
            }
            first = false;
            let value = l
                .value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(head, "{}=\"{value}\"", l.name);
        }
        head.push('}');
        for sample in &s.samples {
            let v = if sample.v.is_nan() {
                "NaN".to_string()
            } else if sample.v == f64::INFINITY {
                "+Inf".to_string()
            } else if sample.v == f64::NEG_INFINITY {
                "-Inf".to_string()
            } else {
                format!("{}", sample.v)
            };
            let _ = writeln!(
                out,
                "{head} {v} {}.{:03}",
                sample.t.div_euclid(1000),
                sample.t.rem_euclid(1000)
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The data set cut into remote-write batches of [`WRITE_SLICE_MS`], oldest first, so
/// every series arrives in time order.
fn write_batches(data: &Dataset) -> Vec<MetricBatch> {
    let mut batches = Vec::new();
    let mut from = data.start - WRITE_SLICE_MS; // jittered samples may precede start
    while from <= data.end + WRITE_SLICE_MS {
        let to = from + WRITE_SLICE_MS;
        let series: Vec<SeriesSamples> = data
            .series
            .iter()
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .samples
                    .iter()
                    .copied()
                    .filter(|x| (from..to).contains(&x.t))
                    .collect();
                (!samples.is_empty()).then(|| SeriesSamples {
                    labels: s.labels.clone(),
                    samples,
                })
            })
            .collect();
        if !series.is_empty() {
            batches.push(MetricBatch {
                series,
                metadata: Vec::new(),
            });
        }
        from = to;
    }
    batches
}

// ---------------------------------------------------------------------------------
// The corpus and where it is evaluated
// ---------------------------------------------------------------------------------

/// What Prometheus is expected to do with a corpus line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Non-empty somewhere.
    Data,
    /// Empty at every evaluation.
    Empty,
    /// An error at some evaluation, and no data at any (a many-to-many match fails only
    /// where there are series to match).
    Error,
}

struct Query {
    line: usize,
    expr: String,
    expect: Expect,
}

fn corpus() -> Vec<Query> {
    CORPUS
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                return None;
            }
            let (expect, expr) = if let Some(rest) = text.strip_prefix("error:") {
                (Expect::Error, rest.trim())
            } else if let Some(rest) = text.strip_prefix("empty:") {
                (Expect::Empty, rest.trim())
            } else {
                (Expect::Data, text)
            };
            Some(Query {
                line: i + 1,
                expr: expr.to_string(),
                expect,
            })
        })
        .collect()
}

/// One evaluation of a query: an instant query at `time`, or a range query.
#[derive(Clone, Debug)]
enum Eval {
    Instant {
        name: &'static str,
        time: i64,
    },
    Range {
        name: &'static str,
        start: i64,
        end: i64,
        step_ms: i64,
    },
}

impl Eval {
    fn describe(&self) -> String {
        match self {
            Eval::Instant { name, time } => format!("instant {name} (time={})", secs(*time)),
            Eval::Range {
                name,
                start,
                end,
                step_ms,
            } => format!(
                "range {name} (start={} end={} step={})",
                secs(*start),
                secs(*end),
                secs(*step_ms)
            ),
        }
    }
}

/// Milliseconds as the seconds string the API takes.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn evaluations(data: &Dataset) -> Vec<Eval> {
    let (s, e) = (data.start, data.end);
    let min = 60_000;
    vec![
        Eval::Instant {
            name: "before the data",
            time: s - 10 * min,
        },
        Eval::Instant {
            name: "just after the start",
            time: s + 2 * min + 30_000,
        },
        Eval::Instant {
            name: "inside a queue_depth gap",
            time: s + 72 * min,
        },
        Eval::Instant {
            name: "mid-data, odd ms",
            time: s + 5_432_123,
        },
        Eval::Instant {
            name: "at the last sample",
            time: e,
        },
        Eval::Instant {
            name: "4 m after the end (lookback)",
            time: e + 4 * min,
        },
        Eval::Range {
            name: "starting before the data, step 37 s",
            start: s - 30 * min,
            end: s + 60 * min,
            step_ms: 37_000,
        },
        Eval::Range {
            name: "whole span, step 2 m",
            start: s,
            end: e,
            step_ms: 120_000,
        },
        Eval::Range {
            name: "last 20 m and past the end, step 15 s",
            start: e - 20 * min,
            end: e + 5 * min,
            step_ms: 15_000,
        },
    ]
}

// ---------------------------------------------------------------------------------
// Asking a server
// ---------------------------------------------------------------------------------

/// A server speaking the Prometheus HTTP API.
struct Server {
    name: &'static str,
    base: String,
    authorization: Option<String>,
    http: Client<HttpConnector, http_body_util::Full<Bytes>>,
}

impl Server {
    fn new(name: &'static str, base: String, authorization: Option<String>) -> Server {
        Server {
            name,
            base,
            authorization,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Reply {
        let query = serde_urlencoded::to_string(params).expect("encodable parameters");
        let mut headers = Vec::new();
        if let Some(a) = &self.authorization {
            headers.push(("authorization", a.as_str()));
        }
        http_request(
            &self.http,
            Method::GET,
            &format!("{}{path}?{query}", self.base),
            &headers,
            Bytes::new(),
        )
        .await
    }

    async fn post_form(&self, path: &str, params: &[(&str, String)]) -> Reply {
        let body = serde_urlencoded::to_string(params).expect("encodable parameters");
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = &self.authorization {
            headers.push(("authorization", a.as_str()));
        }
        http_request(
            &self.http,
            Method::POST,
            &format!("{}{path}", self.base),
            &headers,
            Bytes::from(body),
        )
        .await
    }

    /// Instant queries by GET, range queries by form POST: both forms get exercised.
    async fn eval(&self, expr: &str, eval: &Eval) -> Outcome {
        let reply = match eval {
            Eval::Instant { time, .. } => {
                self.get(
                    "/api/v1/query",
                    &[("query", expr.to_string()), ("time", secs(*time))],
                )
                .await
            }
            Eval::Range {
                start,
                end,
                step_ms,
                ..
            } => {
                self.post_form(
                    "/api/v1/query_range",
                    &[
                        ("query", expr.to_string()),
                        ("start", secs(*start)),
                        ("end", secs(*end)),
                        ("step", secs(*step_ms)),
                    ],
                )
                .await
            }
        };
        Outcome::parse(&reply)
    }
}

// ---------------------------------------------------------------------------------
// Answers and their comparison
// ---------------------------------------------------------------------------------

type LabelSet = BTreeMap<String, String>;

#[derive(Debug, Clone)]
enum Data {
    Vector(Vec<(LabelSet, i64, f64)>),
    Matrix(Vec<(LabelSet, Vec<(i64, f64)>)>),
    Scalar(i64, f64),
    Str(i64, String),
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok(Data),
    Error {
        error_type: String,
        error: String,
    },
    /// Not a Prometheus API answer at all.
    Invalid(String),
}

fn parse_float(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

fn parse_time(v: &Value) -> Option<i64> {
    Some((v.as_f64()? * 1000.0).round() as i64)
}

fn parse_point(v: &Value) -> Option<(i64, f64)> {
    Some((parse_time(v.get(0)?)?, parse_float(v.get(1)?)?))
}

fn parse_labels(v: &Value) -> Option<LabelSet> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

impl Outcome {
    fn parse(reply: &Reply) -> Outcome {
        let text = || {
            let mut t = reply.text();
            t.truncate(300);
            format!("HTTP {}: {t}", reply.status)
        };
        let Ok(json) = serde_json::from_slice::<Value>(&reply.body) else {
            return Outcome::Invalid(text());
        };
        if json["status"] == "error" {
            return Outcome::Error {
                error_type: json["errorType"].as_str().unwrap_or("").to_string(),
                error: json["error"].as_str().unwrap_or("").to_string(),
            };
        }
        if json["status"] != "success" || reply.status != StatusCode::OK {
            return Outcome::Invalid(text());
        }
        let data = &json["data"];
        let result = &data["result"];
        let parsed = match data["resultType"].as_str() {
            Some("vector") => result.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|item| {
                        let (t, v) = parse_point(&item["value"])?;
                        Some((parse_labels(&item["metric"])?, t, v))
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(Data::Vector)
            }),
            Some("matrix") => result.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|item| {
                        let points = item["values"]
                            .as_array()?
                            .iter()
                            .map(parse_point)
                            .collect::<Option<Vec<_>>>()?;
                        Some((parse_labels(&item["metric"])?, points))
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(Data::Matrix)
            }),
            Some("scalar") => parse_point(result).map(|(t, v)| Data::Scalar(t, v)),
            Some("string") => (|| {
                Some(Data::Str(
                    parse_time(result.get(0)?)?,
                    result.get(1)?.as_str()?.to_string(),
                ))
            })(),
            _ => None,
        };
        match parsed {
            Some(data) => Outcome::Ok(data),
            None => Outcome::Invalid(format!("malformed data: {}", text())),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Outcome::Ok(Data::Vector(v)) => v.is_empty(),
            Outcome::Ok(Data::Matrix(m)) => m.is_empty(),
            _ => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok(Data::Vector(_)) => "vector",
            Outcome::Ok(Data::Matrix(_)) => "matrix",
            Outcome::Ok(Data::Scalar(..)) => "scalar",
            Outcome::Ok(Data::Str(..)) => "string",
            Outcome::Error { .. } => "error",
            Outcome::Invalid(_) => "invalid answer",
        }
    }
}

fn same_float(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    let d = (a - b).abs();
    d <= REL_TOLERANCE * a.abs().max(b.abs()) || d <= ABS_TOLERANCE
}

fn show_labels(l: &LabelSet) -> String {
    let name = l.get("__name__").map(String::as_str).unwrap_or("");
    let rest: Vec<String> = l
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

fn show_set(set: &[&LabelSet]) -> String {
    let shown: Vec<String> = set.iter().take(5).map(|l| show_labels(l)).collect();
    let more = if set.len() > 5 {
        format!(" and {} more", set.len() - 5)
    } else {
        String::new()
    };
    format!("[{}]{more}", shown.join(", "))
}

/// The first difference between Prometheus's answer and the other's, if any.
/// `ordered`: PromQL defines the order of this answer — a range query's matrix (sorted
/// by label set) or an instant query whose outer function is `sort`/`sort_desc` (the
/// order of the values matters; series with equal values may come in any order).
/// Otherwise vectors and matrices compare as sets of series.
fn compare(expected: &Outcome, got: &Outcome, ordered: bool) -> Option<String> {
    match (expected, got) {
        (Outcome::Error { error_type: e, .. }, Outcome::Error { error_type: g, .. }) => {
            (e != g).then(|| format!("errorType: expected {e:?}, got {g:?}"))
        }
        (Outcome::Error { error_type, error }, other) => Some(format!(
            "expected an error ({error_type}: {error}), got {}",
            describe_outcome(other)
        )),
        (Outcome::Ok(_), Outcome::Error { error_type, error }) => Some(format!(
            "expected {}, got an error ({error_type}: {error})",
            expected.kind()
        )),
        (_, Outcome::Invalid(text)) => Some(format!(
            "expected {}, got no API answer: {text}",
            expected.kind()
        )),
        (Outcome::Invalid(text), _) => Some(format!("Prometheus gave no API answer: {text}")),
        (Outcome::Ok(e), Outcome::Ok(g)) => compare_data(e, g, ordered),
    }
}

/// One word per answer, for `PROMQL_COMPLIANCE_DUMP`.
fn short(o: &Outcome) -> String {
    match o {
        Outcome::Ok(Data::Vector(v)) => format!("v{}", v.len()),
        Outcome::Ok(Data::Matrix(m)) => format!("m{}", m.len()),
        Outcome::Ok(Data::Scalar(_, v)) => format!("s{v}"),
        Outcome::Ok(Data::Str(..)) => "str".to_string(),
        Outcome::Error { error_type, .. } => format!("E:{error_type}"),
        Outcome::Invalid(_) => "invalid".to_string(),
    }
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok(Data::Vector(v)) => format!("a vector of {}", v.len()),
        Outcome::Ok(Data::Matrix(m)) => format!("a matrix of {}", m.len()),
        Outcome::Ok(Data::Scalar(_, v)) => format!("scalar {v}"),
        Outcome::Ok(Data::Str(_, s)) => format!("string {s:?}"),
        Outcome::Error { error_type, error } => format!("error {error_type}: {error}"),
        Outcome::Invalid(text) => format!("no API answer: {text}"),
    }
}

fn compare_points(e: &[(i64, f64)], g: &[(i64, f64)]) -> Option<String> {
    if e.len() != g.len() {
        let first_missing = e
            .iter()
            .find(|(t, _)| !g.iter().any(|(gt, _)| gt == t))
            .map(|(t, _)| format!("; first expected point missing: t={}", secs(*t)))
            .unwrap_or_default();
        let first_extra = g
            .iter()
            .find(|(t, _)| !e.iter().any(|(et, _)| et == t))
            .map(|(t, _)| format!("; first unexpected point: t={}", secs(*t)))
            .unwrap_or_default();
        return Some(format!(
            "{} points expected, got {}{first_missing}{first_extra}",
            e.len(),
            g.len()
        ));
    }
    e.iter().zip(g).find_map(|((et, ev), (gt, gv))| {
        if et != gt {
            Some(format!(
                "point time: expected {}, got {}",
                secs(*et),
                secs(*gt)
            ))
        } else if !same_float(*ev, *gv) {
            Some(format!("at t={}: expected {ev}, got {gv}", secs(*et)))
        } else {
            None
        }
    })
}

fn compare_data(expected: &Data, got: &Data, ordered: bool) -> Option<String> {
    match (expected, got) {
        (Data::Scalar(et, ev), Data::Scalar(gt, gv)) => {
            compare_points(&[(*et, *ev)], &[(*gt, *gv)])
        }
        (Data::Str(et, ev), Data::Str(gt, gv)) => {
            (et != gt || ev != gv).then(|| format!("expected string {ev:?}@{et}, got {gv:?}@{gt}"))
        }
        (Data::Vector(e), Data::Vector(g)) => {
            if let Some(d) = compare_label_sets(
                &e.iter().map(|(l, ..)| l).collect::<Vec<_>>(),
                &g.iter().map(|(l, ..)| l).collect::<Vec<_>>(),
            ) {
                return Some(d);
            }
            if ordered {
                for (i, ((el, _, ev), (gl, _, gv))) in e.iter().zip(g).enumerate() {
                    if !same_float(*ev, *gv) {
                        return Some(format!(
                            "order: element {i} expected {} = {ev}, got {} = {gv}",
                            show_labels(el),
                            show_labels(gl)
                        ));
                    }
                }
            }
            let mut e: Vec<_> = e.iter().collect();
            let mut g: Vec<_> = g.iter().collect();
            e.sort_by(|a, b| a.0.cmp(&b.0));
            g.sort_by(|a, b| a.0.cmp(&b.0));
            e.iter().zip(&g).find_map(|((l, et, ev), (_, gt, gv))| {
                compare_points(&[(*et, *ev)], &[(*gt, *gv)])
                    .map(|d| format!("series {}: {d}", show_labels(l)))
            })
        }
        (Data::Matrix(e), Data::Matrix(g)) => {
            if let Some(d) = compare_label_sets(
                &e.iter().map(|(l, _)| l).collect::<Vec<_>>(),
                &g.iter().map(|(l, _)| l).collect::<Vec<_>>(),
            ) {
                return Some(d);
            }
            // Prometheus sorts range-query matrices by label set; the same order is
            // required there.
            if ordered && let Some(i) = e.iter().zip(g).position(|((el, _), (gl, _))| el != gl) {
                return Some(format!(
                    "series order: position {i} expected {}, got {}",
                    show_labels(&e[i].0),
                    show_labels(&g[i].0)
                ));
            }
            let mut e: Vec<_> = e.iter().collect();
            let mut g: Vec<_> = g.iter().collect();
            e.sort_by(|a, b| a.0.cmp(&b.0));
            g.sort_by(|a, b| a.0.cmp(&b.0));
            e.iter().zip(&g).find_map(|((l, ep), (_, gp))| {
                compare_points(ep, gp).map(|d| format!("series {}: {d}", show_labels(l)))
            })
        }
        _ => Some(format!(
            "result type: expected {}, got {}",
            describe_outcome(&Outcome::Ok(expected.clone())),
            describe_outcome(&Outcome::Ok(got.clone()))
        )),
    }
}

fn compare_label_sets(e: &[&LabelSet], g: &[&LabelSet]) -> Option<String> {
    let missing: Vec<&LabelSet> = e.iter().copied().filter(|l| !g.contains(l)).collect();
    let extra: Vec<&LabelSet> = g.iter().copied().filter(|l| !e.contains(l)).collect();
    if missing.is_empty() && extra.is_empty() && e.len() == g.len() {
        return None;
    }
    Some(format!(
        "series: expected {}, got {}; missing {}; unexpected {}",
        e.len(),
        g.len(),
        show_set(&missing),
        show_set(&extra)
    ))
}

/// Whether the query's result order is defined by PromQL.
fn is_ordered(expr: &str) -> bool {
    let e = expr.trim_start();
    e.starts_with("sort(") || e.starts_with("sort_desc(")
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_match_prometheus() {
    if !common::prometheus::require_prometheus("promql_compliance") {
        return;
    }
    let now = now_ns() as i64 / 1_000_000;
    let end = now - now.rem_euclid(60_000) - END_BEFORE_NOW_MS;
    let data = generate(end);
    let queries = corpus();
    assert!(
        queries.len() >= 180,
        "the corpus has {} queries",
        queries.len()
    );
    let evals = evaluations(&data);

    let prometheus = Prometheus::start_with_openmetrics(&openmetrics(&data)).await;
    let reference = Server::new("prometheus", prometheus.url(), None);
    wait_for_all_samples(&reference, &data)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Prometheus does not hold the backfilled data: {e}\nits log:\n{}",
                prometheus.log()
            )
        });

    // The other side: Vantage, or a second Prometheus fed by remote write when checking
    // the corpus and the harness.
    let dir = tempfile::tempdir().expect("temp dir");
    let (collector, receiver);
    let target = match std::env::var("PROMQL_COMPLIANCE_TARGET").as_deref() {
        Ok("prometheus") => {
            say("PROMQL_COMPLIANCE_TARGET=prometheus: comparing with a second Prometheus");
            receiver = Prometheus::start_remote_write_receiver().await;
            Server::new("prometheus (remote write)", receiver.url(), None)
        }
        _ => {
            collector = Collector::start(dir.path());
            Server::new(
                "vantage",
                format!("http://{}", collector.addrs.api),
                Some(bearer(collector.token())),
            )
        }
    };
    // A refused write is reported with everything else rather than stopping here.
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = remote_write(&target, &data).await {
        problems.push(format!("{}: {e}", target.name));
    }
    if let Err(e) = wait_for_all_samples(&target, &data).await {
        problems.push(format!(
            "{} does not hold all the samples written: {e}",
            target.name
        ));
    }

    // Every (query, evaluation) on both servers, a few in flight at a time.
    let jobs: Vec<(usize, usize)> = (0..queries.len())
        .flat_map(|q| (0..evals.len()).map(move |e| (q, e)))
        .collect();
    let answers: Vec<(usize, usize, Outcome, Outcome)> = futures::stream::iter(jobs)
        .map(|(q, e)| {
            let (reference, target, queries, evals) = (&reference, &target, &queries, &evals);
            async move {
                let expected = reference.eval(&queries[q].expr, &evals[e]).await;
                let got = target.eval(&queries[q].expr, &evals[e]).await;
                (q, e, expected, got)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut by_query: Vec<Vec<Option<(Outcome, Outcome)>>> =
        vec![vec![None; evals.len()]; queries.len()];
    for (q, e, expected, got) in answers {
        by_query[q][e] = Some((expected, got));
    }

    // The corpus must mean something on Prometheus; then Vantage must agree with it.
    let mut corpus_problems = Vec::new();
    let mut failed_queries = 0;
    let mut failed_evals = 0;
    let mut nonempty_evals = 0;
    for (query, answers) in queries.iter().zip(&by_query) {
        let answers: Vec<&(Outcome, Outcome)> = answers
            .iter()
            .map(|a| a.as_ref().expect("every evaluation ran"))
            .collect();
        let expected: Vec<&Outcome> = answers.iter().map(|(e, _)| e).collect();
        let where_ = format!("queries.txt:{} `{}`", query.line, query.expr);
        if let Some(bad) = expected.iter().find(|o| matches!(o, Outcome::Invalid(_))) {
            corpus_problems.push(format!("{where_}: {}", describe_outcome(bad)));
        }
        match query.expect {
            Expect::Error => {
                let data = expected
                    .iter()
                    .position(|o| !o.is_empty() && !matches!(o, Outcome::Error { .. }));
                if let Some(i) = data {
                    corpus_problems.push(format!(
                        "{where_}: marked error, but Prometheus answered {} at {}",
                        describe_outcome(expected[i]),
                        evals[i].describe()
                    ));
                } else if !expected.iter().any(|o| matches!(o, Outcome::Error { .. })) {
                    corpus_problems.push(format!(
                        "{where_}: marked error, but Prometheus never refuses it"
                    ));
                }
            }
            Expect::Empty => {
                if let Some(i) = expected.iter().position(|o| !o.is_empty()) {
                    corpus_problems.push(format!(
                        "{where_}: marked empty, but Prometheus answered {} at {}",
                        describe_outcome(expected[i]),
                        evals[i].describe()
                    ));
                }
            }
            Expect::Data => {
                if expected
                    .iter()
                    .all(|o| o.is_empty() || matches!(o, Outcome::Error { .. }))
                {
                    corpus_problems.push(format!(
                        "{where_}: Prometheus returns nothing at every evaluation; such a query proves nothing (mark it `empty: ` if that is the point)"
                    ));
                }
            }
        }
        if std::env::var_os("PROMQL_COMPLIANCE_DUMP").is_some() {
            let shown: Vec<String> = expected.iter().map(|o| short(o)).collect();
            say(&format!("{where_}: {}", shown.join(" | ")));
        }
        nonempty_evals += expected
            .iter()
            .filter(|o| matches!(o, Outcome::Ok(_)) && !o.is_empty())
            .count();

        let mut failures = Vec::new();
        for (eval, (expected, got)) in evals.iter().zip(&answers) {
            let ordered = match eval {
                Eval::Range { .. } => true,
                Eval::Instant { .. } => is_ordered(&query.expr),
            };
            if let Some(diff) = compare(expected, got, ordered) {
                failures.push(format!("    at {}: {diff}", eval.describe()));
            }
        }
        if !failures.is_empty() {
            failed_queries += 1;
            failed_evals += failures.len();
            problems.push(format!("{where_}\n{}", failures.join("\n")));
        }
    }
    let total_evals = queries.len() * evals.len();
    say(&format!(
        "promql compliance vs {}: {} queries x {} evaluations; {} queries passed, {failed_queries} failed ({failed_evals} of {total_evals} evaluations); {nonempty_evals} evaluations non-empty on Prometheus",
        target.name,
        queries.len(),
        evals.len(),
        queries.len() - failed_queries,
    ));
    assert!(
        corpus_problems.is_empty(),
        "the corpus is wrong about Prometheus ({} problems):\n{}",
        corpus_problems.len(),
        corpus_problems.join("\n")
    );

    // The metadata endpoints and promtool.
    problems.extend(compare_metadata_endpoints(&reference, &target, &data).await);
    let proxy = HeaderProxy::start(
        target.base.clone(),
        "authorization",
        target
            .authorization
            .clone()
            .unwrap_or_else(|| "Bearer unused".to_string()),
    )
    .await;
    problems.extend(compare_promtool(&reference.base, &proxy.url(), &data).await);

    assert!(
        problems.is_empty(),
        "{} disagrees with Prometheus: {failed_queries} of {} queries failed ({failed_evals} of {total_evals} evaluations), {} other problems\n\n{}",
        target.name,
        queries.len(),
        problems.len() - failed_queries,
        problems.join("\n\n")
    );
}

/// Waits until `server` answers with every generated sample: per metric name, the
/// number of series and of samples over the whole span (per name, because
/// `count_over_time` drops the name and series of different names would collide).
/// Returns what it last saw if that never happens.
async fn wait_for_all_samples(server: &Server, data: &Dataset) -> Result<(), String> {
    let mut expected: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for s in &data.series {
        let e = expected
            .entry(s.labels.metric_name().expect("named"))
            .or_default();
        e.0 += 1.0;
        e.1 += s.samples.len() as f64;
    }
    let window = format!("{}ms", SPAN_MS + 3_600_000);
    let time = secs(data.end + 60_000);
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT * 2;
    loop {
        let mut wrong = Vec::new();
        for (name, want) in &expected {
            let mut seen = Vec::new();
            for q in [
                format!("count(count_over_time({name}[{window}]))"),
                format!("sum(count_over_time({name}[{window}]))"),
            ] {
                let reply = server
                    .get(
                        "/api/v1/query",
                        &[("query", q.clone()), ("time", time.clone())],
                    )
                    .await;
                if reply.status == StatusCode::NOT_FOUND {
                    return Err(format!("{q} answered 404: {}", reply.text()));
                }
                seen.push(match Outcome::parse(&reply) {
                    Outcome::Ok(Data::Vector(v)) if v.len() == 1 => Some(v[0].2),
                    other => {
                        wrong.push(format!("{q}: {}", describe_outcome(&other)));
                        None
                    }
                });
            }
            if seen != [Some(want.0), Some(want.1)] {
                wrong.push(format!(
                    "{name}: expected {} series and {} samples, saw {seen:?}",
                    want.0, want.1
                ));
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(wrong.join("; "));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Sends the data set by Prometheus remote write 1.0, oldest slice first, so each
/// series arrives in time order; every request must be accepted.
async fn remote_write(server: &Server, data: &Dataset) -> Result<(), String> {
    for batch in write_batches(data) {
        let body = vantage_proto::prom::remote::encode_write_request(&batch)
            .map_err(|e| format!("cannot encode a remote-write request: {e}"))?;
        let mut headers = vec![
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        if let Some(a) = &server.authorization {
            headers.push(("authorization", a.as_str()));
        }
        let reply = http_request(
            &server.http,
            Method::POST,
            &format!("{}/api/v1/write", server.base),
            &headers,
            Bytes::from(body),
        )
        .await;
        if !reply.status.is_success() {
            return Err(format!(
                "remote write of {} samples refused: {} {}",
                batch.sample_count(),
                reply.status,
                reply.text()
            ));
        }
    }
    Ok(())
}

/// `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values` must answer
/// the same data (series compared as sets, names and values as sorted lists).
async fn compare_metadata_endpoints(
    reference: &Server,
    target: &Server,
    data: &Dataset,
) -> Vec<String> {
    let start = secs(data.start - 3_600_000);
    let end = secs(data.end + 600_000);
    let window = |mut p: Vec<(&'static str, String)>| {
        p.push(("start", start.clone()));
        p.push(("end", end.clone()));
        p
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "/api/v1/series",
            window(vec![("match[]", "up".to_string())]),
        ),
        (
            "/api/v1/series",
            window(vec![
                ("match[]", "node_info".to_string()),
                ("match[]", "{job=\"worker\", queue=~\"h.*\"}".to_string()),
            ]),
        ),
        (
            "/api/v1/series",
            window(vec![(
                "match[]",
                "{__name__=~\"request_duration.*\", le=\"+Inf\"}".to_string(),
            )]),
        ),
        ("/api/v1/labels", window(vec![])),
        (
            "/api/v1/labels",
            window(vec![("match[]", "node_info".to_string())]),
        ),
        ("/api/v1/label/job/values", window(vec![])),
        ("/api/v1/label/__name__/values", window(vec![])),
        (
            "/api/v1/label/instance/values",
            window(vec![("match[]", "up{job=\"api\"}".to_string())]),
        ),
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, params) in cases {
        let e = reference.get(path, &params).await;
        let g = target.get(path, &params).await;
        let normal = |r: &Reply| -> Option<Vec<String>> {
            let json: Value = serde_json::from_slice(&r.body).ok()?;
            if json["status"] != "success" {
                return None;
            }
            let mut items: Vec<String> = json["data"]
                .as_array()?
                .iter()
                .map(|v| {
                    // Series objects: canonical (sorted) form, so key order is irrelevant.
                    parse_labels(v)
                        .map(|l| format!("{l:?}"))
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            if path == "/api/v1/series" {
                items.sort();
            }
            Some(items)
        };
        let expected = normal(&e)
            .unwrap_or_else(|| panic!("Prometheus failed {path} {params:?}: {}", e.text()));
        assert!(
            !expected.is_empty(),
            "{path} {params:?} is empty on Prometheus"
        );
        checked += 1;
        match normal(&g) {
            Some(got) if got == expected => {}
            Some(got) => problems.push(format!(
                "{path} {params:?}: expected {expected:?}\n  got {got:?}"
            )),
            None => problems.push(format!(
                "{path} {params:?}: expected {} items, got {} {}",
                expected.len(),
                g.status,
                g.text()
            )),
        }
    }
    say(&format!(
        "metadata endpoints: {checked} compared, {} differ",
        problems.len()
    ));
    problems
}

/// `promtool query instant|range|series|labels` against both servers must print the
/// same. Queries are chosen so their output order is defined and their values exact.
async fn compare_promtool(reference: &str, target: &str, data: &Dataset) -> Vec<String> {
    let (s, e) = (data.start, data.end);
    let mid = secs(s + 5_432_123);
    let cases: Vec<Vec<String>> = vec![
        vec![
            "instant".into(),
            "--time".into(),
            secs(e),
            "{server}".into(),
            "sort_desc(sum by (job) (up))".into(),
        ],
        vec![
            "instant".into(),
            "--time".into(),
            mid.clone(),
            "{server}".into(),
            "temperature_celsius{location=\"west\"}".into(),
        ],
        vec![
            "instant".into(),
            "--time".into(),
            mid.clone(),
            "{server}".into(),
            "sort(queue_depth{queue=\"high\"})".into(),
        ],
        vec![
            "instant".into(),
            "--time".into(),
            mid,
            "{server}".into(),
            "count(up) * 2".into(),
        ],
        vec![
            "range".into(),
            "--start".into(),
            secs(s),
            "--end".into(),
            secs(e),
            "--step".into(),
            "10m".into(),
            "{server}".into(),
            "sum by (instance) (queue_depth)".into(),
        ],
        vec![
            "range".into(),
            "--start".into(),
            secs(e - 3_600_000),
            "--end".into(),
            secs(e),
            "--step".into(),
            "7m".into(),
            "{server}".into(),
            "node_memory_free_bytes".into(),
        ],
        vec![
            "series".into(),
            "--match".into(),
            "up".into(),
            "--match".into(),
            "node_info".into(),
            "--start".into(),
            secs(s),
            "--end".into(),
            secs(e),
            "{server}".into(),
        ],
        vec!["labels".into(), "{server}".into(), "job".into()],
        vec![
            "labels".into(),
            "--start".into(),
            secs(s),
            "--end".into(),
            secs(e),
            "{server}".into(),
            "instance".into(),
        ],
    ];
    let mut problems = Vec::new();
    let checked = cases.len();
    for case in cases {
        let with = |server: &str| -> Vec<String> {
            case.iter()
                .map(|a| {
                    if a == "{server}" {
                        server.to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect()
        };
        let expected = promtool_query(&with(reference)).await.unwrap_or_else(|e| {
            panic!(
                "promtool query {:?} against Prometheus failed: {e}",
                with(reference)
            )
        });
        assert!(
            !expected.trim().is_empty(),
            "promtool query {case:?} prints nothing against Prometheus"
        );
        let got = promtool_query(&with(target)).await;
        if got.as_deref() != Ok(expected.as_str()) {
            problems.push(format!(
                "promtool query {case:?}:\n  Prometheus printed:\n{expected}\n  the target: {got:?}"
            ));
        }
    }
    say(&format!(
        "promtool: {checked} commands compared, {} differ",
        problems.len()
    ));
    problems
}

// ---------------------------------------------------------------------------------
// The comparison itself must be right, or the suite proves nothing.
// ---------------------------------------------------------------------------------

#[test]
fn floats_compare_with_tolerance_nan_and_infinities() {
    assert!(same_float(1.0, 1.0 + 1e-12));
    assert!(!same_float(1.0, 1.0 + 1e-6));
    assert!(same_float(f64::NAN, f64::NAN));
    assert!(!same_float(f64::NAN, 0.0));
    assert!(same_float(f64::INFINITY, f64::INFINITY));
    assert!(!same_float(f64::INFINITY, f64::NEG_INFINITY));
    assert!(!same_float(f64::INFINITY, f64::MAX));
    assert!(same_float(0.0, -0.0));
    assert_eq!(parse_float(&Value::from("+Inf")), Some(f64::INFINITY));
    assert_eq!(parse_float(&Value::from("-Inf")), Some(f64::NEG_INFINITY));
    assert!(parse_float(&Value::from("NaN")).is_some_and(f64::is_nan));
    assert_eq!(parse_float(&Value::from("1e-3")), Some(0.001));
    assert_eq!(parse_float(&Value::from(1.0)), None, "values are strings");
}

fn reply(body: &str) -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: hyper::HeaderMap::new(),
        body: Bytes::from(body.to_string()),
    }
}

#[test]
fn vectors_compare_as_sets_unless_sorted() {
    let a = Outcome::parse(&reply(
        r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"a":"1"},"value":[10.5,"1"]},{"metric":{"a":"2"},"value":[10.5,"2"]}]}}"#,
    ));
    let b = Outcome::parse(&reply(
        r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"a":"2"},"value":[10.5,"2"]},{"metric":{"a":"1"},"value":[10.5,"1"]}]}}"#,
    ));
    assert!(compare(&a, &b, false).is_none());
    assert!(compare(&a, &b, true).is_some_and(|d| d.contains("order")));
    let c = Outcome::parse(&reply(
        r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"a":"1"},"value":[10.5,"1"]},{"metric":{"a":"3"},"value":[10.5,"2"]}]}}"#,
    ));
    let d = compare(&a, &c, false).expect("different label sets differ");
    assert!(d.contains("missing") && d.contains("a=\"2\""), "{d}");
    let e = Outcome::parse(&reply(
        r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"a":"1"},"value":[10.5,"1"]},{"metric":{"a":"2"},"value":[10.501,"2"]}]}}"#,
    ));
    assert!(compare(&a, &e, false).is_some_and(|d| d.contains("point time")));
}

#[test]
fn matrices_compare_in_order_and_errors_by_type() {
    let m = |order: &str| {
        Outcome::parse(&reply(&format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{order}]}}}}"#
        )))
    };
    let x = r#"{"metric":{"a":"1"},"values":[[1,"NaN"],[2,"+Inf"]]}"#;
    let y = r#"{"metric":{"a":"2"},"values":[[1,"3"]]}"#;
    let y2 = r#"{"metric":{"a":"2"},"values":[[1,"3"],[2,"4"]]}"#;
    assert!(compare(&m(&format!("{x},{y}")), &m(&format!("{x},{y}")), true).is_none());
    assert!(
        compare(&m(&format!("{x},{y}")), &m(&format!("{y},{x}")), true)
            .is_some_and(|d| d.contains("series order"))
    );
    // An instant query's matrix has no defined order.
    assert!(compare(&m(&format!("{x},{y}")), &m(&format!("{y},{x}")), false).is_none());
    assert!(
        compare(&m(&format!("{x},{y}")), &m(&format!("{x},{y2}")), true)
            .is_some_and(|d| d.contains("points expected"))
    );
    let err = |t: &str| {
        Outcome::parse(&Reply {
            status: StatusCode::BAD_REQUEST,
            headers: hyper::HeaderMap::new(),
            body: Bytes::from(format!(
                r#"{{"status":"error","errorType":"{t}","error":"boom"}}"#
            )),
        })
    };
    assert!(compare(&err("bad_data"), &err("bad_data"), false).is_none());
    assert!(compare(&err("bad_data"), &err("execution"), false).is_some());
    assert!(compare(&err("bad_data"), &m(x), false).is_some());
    assert!(compare(&m(x), &err("bad_data"), false).is_some());
    let not_api = Outcome::parse(&Reply {
        status: StatusCode::NOT_FOUND,
        headers: hyper::HeaderMap::new(),
        body: Bytes::from("not found"),
    });
    assert!(compare(&m(x), &not_api, false).is_some_and(|d| d.contains("no API answer")));
}

#[test]
fn the_data_is_deterministic_and_in_time_order() {
    let a = generate(1_700_000_000_000);
    let b = generate(1_700_000_000_000);
    // Debug text, so that NaN samples compare equal.
    assert!(format!("{:?}", a.series) == format!("{:?}", b.series));
    assert!(a.series.len() > 100, "{} series", a.series.len());
    for s in &a.series {
        assert!(
            s.samples.windows(2).all(|w| w[0].t < w[1].t),
            "{} is not in time order",
            s.labels
        );
    }
    // Remote write batches keep every sample, each series in time order across them.
    let batches = write_batches(&a);
    let total: usize = batches.iter().map(MetricBatch::sample_count).sum();
    assert_eq!(total, a.sample_count());
    let text = openmetrics(&a);
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(text.lines().count(), a.sample_count() + 1);
    assert!(text.contains(" NaN ") && text.contains(" +Inf ") && text.contains(" -Inf "));
}
