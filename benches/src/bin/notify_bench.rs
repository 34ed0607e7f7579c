//! Notification throughput benchmark: the real release collector's embedded
//! Alertmanager, fed through `POST /api/v2/alerts`, delivering to a webhook receiver
//! that runs in this process.
//!
//! Each run starts a fresh collector whose `alertmanager.yml` groups by a label with
//! `--groups` values (`group_wait`/`group_interval` short) and routes everything to the
//! in-process receiver. `--groups × --alerts-per-group` alerts are posted in batches of
//! `--batch`, interleaved over the groups (every batch touches many groups), with
//! `--connections` requests in flight. Every alert carries its post time (wall clock, ms)
//! as an annotation; the receiver answers 200 (after `--slow-ms` in the slow run) and
//! records, for every alert it sees for the first time, arrival − post time. A run ends
//! when the receiver has seen every alert, or after `--timeout-s`.
//!
//! Reports, per run: alerts accepted per second by the API, notifications and alerts
//! per second end to end (first post → receiver saw every alert), delivery latency
//! p50/p99, collector CPU-seconds and peak RSS. One JSON object per run on stdout.
//!
//! `cargo run --release -p vantage-benches --bin vantage-notify-bench`

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use vantage_benches::collector::Collector;
use vantage_benches::process::LogEcho;
use vantage_benches::procfs::{cpu_seconds, mib, percentile, status_bytes};

/// Notification throughput of the embedded Alertmanager.
#[derive(Debug, Parser)]
struct Args {
    /// The collector binary (a release build).
    #[arg(long, default_value = "target/release/vantage-collector")]
    collector: PathBuf,
    /// Distinct values of the `group_by` label: notification groups.
    #[arg(long, default_value_t = 2_000)]
    groups: usize,
    /// Alerts in each group.
    #[arg(long, default_value_t = 10)]
    alerts_per_group: usize,
    /// Alerts per `POST /api/v2/alerts` request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Route `group_wait`, milliseconds.
    #[arg(long, default_value_t = 1_000)]
    group_wait_ms: u64,
    /// Route `group_interval`, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    group_interval_ms: u64,
    /// The receiver's delay before answering, in the second (slow) run; 0 skips it.
    #[arg(long, default_value_t = 200)]
    slow_ms: u64,
    /// A run gives up this long after its first post.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Where data directories go (deleted after each run).
    #[arg(long, default_value = "target/notify-bench")]
    work_dir: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------
// Receiver

/// What the webhook receiver saw, shared with its connection tasks.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    alerts_in_payloads: AtomicU64,
    bad_payloads: AtomicU64,
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    /// `(group, instance)` of every alert seen at least once.
    alerts: HashSet<(String, String)>,
    groups: HashSet<String>,
    /// Arrival − post time of each alert's first sighting, ms.
    latencies_ms: Vec<f64>,
    /// When the last new alert / new group was first seen.
    last_new_alert: Option<Instant>,
    last_new_group: Option<Instant>,
}

impl Seen {
    fn record(&self, body: &[u8]) {
        let arrived = now_ms();
        let at = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            self.bad_payloads.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(alerts) = v["alerts"].as_array() else {
            self.bad_payloads.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.alerts_in_payloads
            .fetch_add(alerts.len() as u64, Ordering::Relaxed);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for a in alerts {
            let (Some(group), Some(instance)) = (
                a["labels"]["group"].as_str(),
                a["labels"]["instance"].as_str(),
            ) else {
                self.bad_payloads.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if inner
                .alerts
                .insert((group.to_string(), instance.to_string()))
            {
                inner.last_new_alert = Some(at);
                if let Some(posted) = a["annotations"]["posted_ms"]
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    inner.latencies_ms.push((arrived - posted) as f64);
                }
                if inner.groups.insert(group.to_string()) {
                    inner.last_new_group = Some(at);
                }
            }
        }
    }

    fn alerts_seen(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.alerts.len())
    }
}

/// Serves `POST /` on 127.0.0.1:0: records the payload, waits `delay`, answers 200.
async fn start_receiver(seen: Arc<Seen>, delay: Duration) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        seen.record(&body);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// Collector

fn am_config(args: &Args, receiver: SocketAddr) -> String {
    format!(
        "route:\n  receiver: bench\n  group_by: [group]\n  group_wait: {}ms\n  group_interval: {}ms\n  repeat_interval: 1h\nreceivers:\n  - name: bench\n    webhook_configs:\n      - url: http://{receiver}/\n        send_resolved: false\n",
        args.group_wait_ms, args.group_interval_ms
    )
}

// ---------------------------------------------------------------------------------------
// Posting

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Alert `i` of the run: groups interleaved, so consecutive alerts are in different groups.
fn alert(i: usize, groups: usize, posted_ms: i64) -> Value {
    json!({
        "labels": {
            "alertname": "NotifyBench",
            "group": format!("g{}", i % groups),
            "instance": format!("i{}", i / groups),
            "severity": "page",
        },
        "annotations": {
            "summary": "notification benchmark alert",
            "posted_ms": posted_ms.to_string(),
        },
        "generatorURL": "http://bench/graph",
    })
}

/// What the posting side achieved.
#[derive(Debug, Default)]
struct PostStats {
    requests: u64,
    accepted: u64,
    failed_requests: u64,
    first_error: Option<String>,
    wall_s: f64,
}

async fn post_all(args: &Args, client: &HttpClient, collector: &Collector) -> PostStats {
    let total = args.groups * args.alerts_per_group;
    let next = Arc::new(AtomicU64::new(0));
    let batches = total.div_ceil(args.batch.max(1)) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let next = next.clone();
        let client = client.clone();
        let uri = format!("{}/api/v2/alerts", collector.api_url());
        let auth = format!("Bearer {}", collector.token().unwrap_or_default());
        let (groups, batch) = (args.groups, args.batch.max(1));
        tasks.push(tokio::spawn(async move {
            let mut stats = PostStats::default();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let from = b as usize * batch;
                let to = (from + batch).min(total);
                let posted = now_ms();
                let body: Vec<Value> = (from..to).map(|i| alert(i, groups, posted)).collect();
                let Ok(body) = serde_json::to_vec(&body) else {
                    continue;
                };
                let req = hyper::Request::post(&uri)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)));
                let Ok(req) = req else { continue };
                stats.requests += 1;
                match client.request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        stats.accepted += (to - from) as u64;
                    }
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp
                            .into_body()
                            .collect()
                            .await
                            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                            .unwrap_or_default();
                        stats.failed_requests += 1;
                        stats.first_error.get_or_insert(format!("{status}: {text}"));
                    }
                    Err(e) => {
                        stats.failed_requests += 1;
                        stats.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            stats
        }));
    }
    let mut all = PostStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.requests += s.requests;
            all.accepted += s.accepted;
            all.failed_requests += s.failed_requests;
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
    }
    all.wall_s = started.elapsed().as_secs_f64();
    all
}

// ---------------------------------------------------------------------------------------
// A run

async fn run(args: &Args, name: &str, delay: Duration) -> anyhow::Result<Value> {
    let seen = Arc::new(Seen::default());
    let receiver = start_receiver(seen.clone(), delay).await?;
    let dir = args.work_dir.join(name);
    std::fs::create_dir_all(&args.work_dir)?;
    let config_path = args.work_dir.join(format!("{name}-alertmanager.yml"));
    std::fs::write(&config_path, am_config(args, receiver))?;
    let collector = {
        let (binary, dir, cfg) = (args.collector.clone(), dir.clone(), config_path.clone());
        tokio::task::spawn_blocking(move || {
            Collector::builder(binary, dir)
                .arg("--alertmanager-config")
                .arg(cfg)
                .log_echo(LogEcho::Warnings)
                .start()
        })
        .await??
    };
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let total = args.groups * args.alerts_per_group;
    let cpu0 = cpu_seconds(collector.pid())?;
    let started = Instant::now();
    let posted = post_all(args, &client, &collector).await;
    let deadline = started + Duration::from_secs(args.timeout_s);
    while seen.alerts_seen() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = seen.alerts_seen() >= total;
    // Settle: a moment for notifications still in flight (the slow receiver's) to land.
    tokio::time::sleep(Duration::from_millis(500 + delay.as_millis() as u64)).await;
    let cpu_s = cpu_seconds(collector.pid())? - cpu0;
    let peak_rss = status_bytes(collector.pid(), "VmHWM:").unwrap_or(0);
    collector.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let requests = seen.requests.load(Ordering::Relaxed);
    let in_payloads = seen.alerts_in_payloads.load(Ordering::Relaxed);
    let inner = seen
        .inner
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    let mut lat = inner.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let since = |t: Option<Instant>| t.map(|t| t.duration_since(started).as_secs_f64());
    let e2e_s = since(inner.last_new_alert).unwrap_or(f64::NAN);
    Ok(json!({
        "run": name,
        "receiver_delay_ms": delay.as_millis() as u64,
        "groups": args.groups,
        "alerts": total,
        "batch": args.batch,
        "connections": args.connections,
        "group_wait_ms": args.group_wait_ms,
        "group_interval_ms": args.group_interval_ms,
        "post_requests": posted.requests,
        "post_failed_requests": posted.failed_requests,
        "post_first_error": posted.first_error,
        "post_wall_s": posted.wall_s,
        "alerts_accepted": posted.accepted,
        "alerts_accepted_per_s": posted.accepted as f64 / posted.wall_s,
        "complete": done,
        "alerts_seen": inner.alerts.len(),
        "groups_seen": inner.groups.len(),
        "all_groups_seen_s": since(inner.last_new_group),
        "all_alerts_seen_s": e2e_s,
        "notifications": requests,
        "alerts_in_notifications": in_payloads,
        "bad_payloads": seen.bad_payloads.load(Ordering::Relaxed),
        "notifications_per_s_e2e": requests as f64 / e2e_s,
        "alerts_per_s_e2e": inner.alerts.len() as f64 / e2e_s,
        "latency_ms_p50": percentile(&lat, 0.5),
        "latency_ms_p99": percentile(&lat, 0.99),
        "latency_ms_max": lat.last().copied().unwrap_or(f64::NAN),
        "collector_cpu_s": cpu_s,
        "collector_peak_rss_mib": mib(peak_rss),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.collector.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p vantage-collector",
            args.collector.display()
        );
    }
    let mut runs = vec![("fast", Duration::ZERO)];
    if args.slow_ms > 0 {
        runs.push(("slow", Duration::from_millis(args.slow_ms)));
    }
    for (name, delay) in runs {
        let report = run(&args, name, delay).await?;
        println!("{report}");
    }
    Ok(())
}
