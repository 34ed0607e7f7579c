//! `vantage-metrics-e2e`: the end-to-end metrics benchmark of the release collector
//! against a real Prometheus, on the same remote-write stream in the same run.
//!
//! Phases, each run for Prometheus and then for Vantage (a server that is not available
//! is skipped and reported as such):
//! 1. **Ingest** — a fresh server takes `--series` active series over remote write,
//!    one sample per series per scrape (as Prometheus's own sender forwards them), in
//!    bodies of `--samples-per-body` samples, `--connections` requests in flight. Warm-up
//!    scrapes create the series; the measured scrapes give samples/s and samples per
//!    CPU-second of the server (utime+stime from /proc), then RSS per active series.
//! 2. **Crash recovery** — the server is killed (SIGKILL) and restarted on the same data
//!    directory: time until it is ready and its peak RSS (VmHWM) while replaying its WAL,
//!    against the steady-state RSS before the kill.
//! 3. **History and queries** — a fresh server takes `--query-hours` of history of
//!    `--query-series` series (scrape order, several samples per series per body); then a
//!    corpus of PromQL range queries over the last 1 h and the whole range runs against
//!    both servers alternately, `--query-reps` times each, and their answers are compared.
//! 4. **Storage** — after a graceful stop, bytes on disk per sample: Vantage's `metrics/`
//!    directory over the samples sent; Prometheus's persisted blocks over the samples
//!    their `meta.json` counts (its head stays in the WAL and is not counted).
//!
//! `--mix node-exporter --capture-dir DIR` (with `--skip-ingest`) replaces the generated
//! data of phases 3 and 4 by real node_exporter scrapes replayed on `--hosts` hosts
//! (`vantage_benches::nodecap`); `--storage-only` skips the query corpus.
//!
//! Every figure goes to stdout as one `name value` line and into the JSON report.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};
use vantage_benches::collector::Collector;
use vantage_benches::metrics::{Fleet, Mix};
use vantage_benches::nodecap::{Capture, CaptureFleet, Stamps};
use vantage_benches::process::ChildGuard;
use vantage_benches::procfs::{
    cpu_seconds, dir_bytes, encode_query, mib, percentile, status_bytes,
};
use vantage_proto::prom::remote::encode_write_request;

/// End-to-end metrics benchmark: Vantage against Prometheus.
#[derive(Debug, Parser)]
struct Args {
    /// The collector binary (a release build).
    #[arg(long, default_value = "target/release/vantage-collector")]
    collector: PathBuf,
    /// The Prometheus binary (2.42 from Debian's `prometheus` package here).
    #[arg(long, default_value = "prometheus")]
    prometheus: PathBuf,
    /// Skip the Vantage side (e.g. before its remote-write receiver exists).
    #[arg(long)]
    skip_vantage: bool,
    /// Skip the Prometheus side.
    #[arg(long)]
    skip_prometheus: bool,
    /// Active series in the ingest phase.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Scrapes sent before measuring (the first creates the series).
    #[arg(long, default_value_t = 2)]
    warmup_scrapes: usize,
    /// Scrapes measured in the ingest phase.
    #[arg(long, default_value_t = 60)]
    scrapes: usize,
    /// Scrape interval of the generated data, seconds.
    #[arg(long, default_value_t = 15)]
    interval_s: i64,
    /// Samples per remote-write body (Prometheus's default max_samples_per_send).
    #[arg(long, default_value_t = 2000)]
    samples_per_body: usize,
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Series of the query data set.
    #[arg(long, default_value_t = 10_000)]
    query_series: usize,
    /// Hours of history of the query data set.
    #[arg(long, default_value_t = 24)]
    query_hours: i64,
    /// Samples per series per body when loading history.
    #[arg(long, default_value_t = 10)]
    history_samples_per_series: usize,
    /// Timed runs of each query on each server.
    #[arg(long, default_value_t = 20)]
    query_reps: usize,
    /// Skip the query and storage phases.
    #[arg(long)]
    skip_queries: bool,
    /// Skip the ingest and crash phases.
    #[arg(long)]
    skip_ingest: bool,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sample mix: `noisy` (the stress mix), `realistic` (node-exporter-like as
    /// Prometheus's scrape loop records it; see `vantage_benches::metrics::Mix`), or
    /// `node-exporter` (real scrapes from `--capture-dir`, history and storage only).
    #[arg(long, default_value = "noisy")]
    mix: MixArg,
    /// Directory of `scrape-<unix_ms>.prom.gz` node_exporter scrapes, for
    /// `--mix node-exporter` (`benches/node-capture.sh` makes one). Repeat it to join
    /// captures of the same exporter into one longer pass (in time order).
    #[arg(long)]
    capture_dir: Vec<PathBuf>,
    /// Scrapes of history per series, instead of `--query-hours` worth.
    #[arg(long)]
    history_scrapes: Option<usize>,
    /// Hosts replaying the capture (`--mix node-exporter`); replaces `--query-series`.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Timestamps of the replayed scrapes: `aligned` (the interval grid, as Prometheus's
    /// scrape loop records them) or `capture` (each scrape's own capture time).
    #[arg(long, default_value = "aligned")]
    timestamps: Stamps,
    /// Skip the query corpus of phase 3 (history and storage only).
    #[arg(long)]
    storage_only: bool,
    /// Instead of the phases: write `--query-hours` of the node-exporter mix straight
    /// into in-process Vantage stores (no server, no Prometheus), cut every 2 h of data
    /// time as a live head is, and report block bytes per sample for the whole mix, for
    /// its timestamps alone (every value 0), and per metric family group.
    #[arg(long)]
    breakdown: bool,
    /// Where data directories go (deleted after each phase).
    #[arg(long, default_value = "target/metrics-e2e")]
    work_dir: PathBuf,
    /// The JSON report.
    #[arg(long, default_value = "target/metrics-e2e/report.json")]
    out: PathBuf,
}

/// What `--mix` names: a generated mix, or real scrapes.
#[derive(Debug, Clone, Copy)]
enum MixArg {
    Generated(Mix),
    NodeExporter,
}

impl std::str::FromStr for MixArg {
    type Err = String;

    fn from_str(s: &str) -> Result<MixArg, String> {
        match s {
            "node-exporter" => Ok(MixArg::NodeExporter),
            other => other
                .parse::<Mix>()
                .map(MixArg::Generated)
                .map_err(|e| format!("{e} or node-exporter")),
        }
    }
}

impl MixArg {
    fn name(self) -> &'static str {
        match self {
            MixArg::Generated(m) => m.name(),
            MixArg::NodeExporter => "node-exporter",
        }
    }

    /// The generated mix, for the phases real scrapes do not feed.
    fn generated(self) -> Mix {
        match self {
            MixArg::Generated(m) => m,
            MixArg::NodeExporter => Mix::Realistic,
        }
    }
}

/// Where history samples come from.
enum Source {
    Generated(Fleet),
    Capture(CaptureFleet),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Generated(f) => f.len(),
            Source::Capture(f) => f.len(),
        }
    }

    fn batch(
        &mut self,
        range: std::ops::Range<usize>,
        scrapes: usize,
    ) -> vantage_proto::prom::MetricBatch {
        match self {
            Source::Generated(f) => f.batch(range, scrapes),
            Source::Capture(f) => f.batch(range, scrapes),
        }
    }
}

/// The two servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prometheus,
    Vantage,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Vantage => "vantage",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ports and clocks

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------
// Servers

/// A running server: its process, HTTP base URL, bearer token and data directory.
struct Server {
    kind: Kind,
    process: ServerProcess,
    pid: u32,
    base: String,
    token: Option<String>,
    data_dir: PathBuf,
    /// Wall time from spawn until the server answered as ready.
    ready_after: Duration,
}

/// The process behind a [`Server`]; either kind is killed when dropped, so a run that
/// fails half-way leaves neither server running.
enum ServerProcess {
    Prometheus(ChildGuard),
    Vantage(Collector),
}

impl Server {
    fn start(args: &Args, kind: Kind, data_dir: &Path, fresh: bool) -> anyhow::Result<Server> {
        match kind {
            Kind::Prometheus => {
                if fresh {
                    let _ = std::fs::remove_dir_all(data_dir);
                }
                std::fs::create_dir_all(data_dir)?;
                Self::start_prometheus(args, data_dir)
            }
            Kind::Vantage => Self::start_vantage(args, data_dir, fresh),
        }
    }

    fn start_prometheus(args: &Args, data_dir: &Path) -> anyhow::Result<Server> {
        let config = args.work_dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
        let port = free_port()?;
        let t0 = Instant::now();
        let mut child = Command::new(&args.prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=30d")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", args.prometheus.display()))?;
        let stderr = child.stderr.take();
        let mut child = ChildGuard::new(child, "prometheus");
        let stderr = stderr.context("no stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("level=error") {
                    eprintln!("prometheus: {line}");
                }
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok((200, _)) = blocking_get(&format!("{base}/-/ready"), None) {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("prometheus exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 600 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Server {
            kind: Kind::Prometheus,
            pid: child.pid(),
            process: ServerProcess::Prometheus(child),
            base,
            token: None,
            data_dir: data_dir.to_path_buf(),
            ready_after: t0.elapsed(),
        })
    }

    /// The collector on `data_dir`: emptied first when `fresh`, else a restart on
    /// what is there.
    fn start_vantage(args: &Args, data_dir: &Path, fresh: bool) -> anyhow::Result<Server> {
        let mut builder = Collector::builder(&args.collector, data_dir);
        if !fresh {
            builder = builder.keep_data_dir();
        }
        let collector = builder.start()?;
        Ok(Server {
            kind: Kind::Vantage,
            pid: collector.pid(),
            base: collector.api_url(),
            token: collector.token().map(str::to_string),
            data_dir: data_dir.to_path_buf(),
            ready_after: collector.ready_after(),
            process: ServerProcess::Vantage(collector),
        })
    }

    fn cpu_s(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid)
    }

    /// SIGTERM and wait: a graceful stop (Vantage flushes its head into blocks).
    fn stop(self) -> anyhow::Result<()> {
        match self.process {
            ServerProcess::Prometheus(child) => child.stop()?,
            ServerProcess::Vantage(collector) => collector.stop()?,
        }
        Ok(())
    }

    /// SIGKILL and wait: a crash.
    fn kill(self) -> anyhow::Result<()> {
        match self.process {
            ServerProcess::Prometheus(child) => child.kill()?,
            ServerProcess::Vantage(collector) => collector.kill()?,
        }
        Ok(())
    }
}

/// A minimal blocking HTTP/1.1 GET for readiness checks, before the async client runs.
fn blocking_get(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").context("not http")?;
    let (addr, path) = rest.split_once('/').context("no path")?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no http header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_string()))
}

// ---------------------------------------------------------------------------------------
// Sending

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One pre-encoded remote-write request.
#[derive(Clone)]
struct Body {
    data: Bytes,
    samples: u64,
    /// The series group; a group always goes through the same connection, so its
    /// samples arrive in order (Prometheus's sender shards by series the same way).
    group: usize,
}

/// What one stream of requests achieved.
#[derive(Debug, Default)]
struct SendStats {
    bodies_ok: u64,
    samples_ok: u64,
    samples_failed: u64,
    body_bytes: u64,
    first_error: Option<String>,
    wall_s: f64,
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// Sends every body of the shards, one connection per shard, each taking its next body
/// only after the previous one was answered (closed loop).
async fn send_all(client: &HttpClient, server: &Server, shards: Vec<Receiver<Body>>) -> SendStats {
    let ok = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let uri = format!("{}/api/v1/write", server.base);
    let token = server.token.clone();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(shards.len());
    for mut source in shards {
        let (ok, bodies, failed, bytes, first_error) = (
            ok.clone(),
            bodies.clone(),
            failed.clone(),
            bytes.clone(),
            first_error.clone(),
        );
        let (client, uri, token) = (client.clone(), uri.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = source.recv().await else {
                    break;
                };
                bytes.fetch_add(body.data.len() as u64, Ordering::Relaxed);
                let mut req = hyper::Request::post(&uri)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0");
                if let Some(t) = &token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let outcome = match req.body(Full::new(body.data)) {
                    Ok(req) => match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if status.is_success() {
                                Ok(())
                            } else {
                                Err(format!(
                                    "{status}: {}",
                                    String::from_utf8_lossy(&text[..text.len().min(300)])
                                ))
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(body.samples, Ordering::Relaxed);
                        bodies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(body.samples, Ordering::Relaxed);
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    SendStats {
        bodies_ok: bodies.load(Ordering::Relaxed),
        samples_ok: ok.load(Ordering::Relaxed),
        samples_failed: failed.load(Ordering::Relaxed),
        body_bytes: bytes.load(Ordering::Relaxed),
        first_error,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

type Receiver<T> = tokio::sync::mpsc::Receiver<T>;
type Sender<T> = tokio::sync::mpsc::Sender<T>;

/// One bounded channel per connection. A full channel blocks the producer, which keeps
/// the shards within a few bodies of each other (and so within Prometheus's in-order
/// window of an hour).
fn shards(connections: usize) -> (Vec<Sender<Body>>, Vec<Receiver<Body>>) {
    (0..connections.max(1))
        .map(|_| tokio::sync::mpsc::channel(16))
        .unzip()
}

/// Shards fed from pre-encoded bodies.
fn feed(
    bodies: Arc<Vec<Body>>,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Vec<Receiver<Body>> {
    let (tx, rx) = shards(connections);
    std::thread::spawn(move || {
        for b in &bodies[range] {
            if tx[b.group % tx.len()].blocking_send(b.clone()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Remote-write bodies of `scrapes` scrapes of `fleet`: for each scrape, the series in
/// groups of `samples_per_body`, one sample each.
fn encode_scrapes(
    fleet: &mut Fleet,
    scrapes: usize,
    samples_per_body: usize,
) -> anyhow::Result<Vec<Body>> {
    let n = fleet.len();
    let mut out = Vec::with_capacity(scrapes * n.div_ceil(samples_per_body));
    for _ in 0..scrapes {
        for (group, start) in (0..n).step_by(samples_per_body).enumerate() {
            let batch = fleet.batch(start..(start + samples_per_body).min(n), 1);
            out.push(Body {
                group,
                samples: batch.sample_count() as u64,
                data: Bytes::from(encode_write_request(&batch)?),
            });
        }
    }
    Ok(out)
}

/// History of `fleet` generated on a thread, `per_series` scrapes of a group of series
/// per body, windows of scrapes in time order.
fn history(
    mut fleet: Source,
    scrapes: usize,
    per_series: usize,
    samples_per_body: usize,
    connections: usize,
) -> Vec<Receiver<Body>> {
    let (tx, rx) = shards(connections);
    std::thread::spawn(move || {
        let n = fleet.len();
        let group = (samples_per_body / per_series).max(1);
        let mut done = 0;
        while done < scrapes {
            let window = per_series.min(scrapes - done);
            for (g, start) in (0..n).step_by(group).enumerate() {
                let batch = fleet.batch(start..(start + group).min(n), window);
                let data = match encode_write_request(&batch) {
                    Ok(data) => data,
                    Err(e) => {
                        eprintln!("history stops: {e}");
                        return;
                    }
                };
                let body = Body {
                    group: g,
                    samples: batch.sample_count() as u64,
                    data: Bytes::from(data),
                };
                if tx[g % tx.len()].blocking_send(body).is_err() {
                    return;
                }
            }
            done += window;
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------
// Report

/// Figures as flat `phase.server.name` keys: each printed as one line when recorded,
/// and the whole map written as JSON after every phase.
struct Report {
    out: PathBuf,
    figures: Map<String, Value>,
}

impl Report {
    fn put(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let shown = match &value {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.3}")
                }
            }
            v => v.to_string(),
        };
        println!("{key} {shown}");
        self.figures.insert(key.to_owned(), value);
    }

    fn save(&self, settings: &Value) -> anyhow::Result<()> {
        if let Some(dir) = self.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let doc = json!({
            "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "settings": settings,
            "figures": self.figures,
        });
        std::fs::write(&self.out, serde_json::to_string_pretty(&doc)?)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Phases

/// Phases 1 and 2 for one server.
fn ingest(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    bodies: &Arc<Vec<Body>>,
    warmup_bodies: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let k = kind.name();
    let dir = args.work_dir.join(format!("ingest-{k}"));
    let server = Server::start(args, kind, &dir, true)?;
    let client = client();
    let rss_empty = status_bytes(server.pid, "VmRSS:").unwrap_or(0);

    let warm = rt.block_on(send_all(
        &client,
        &server,
        feed(bodies.clone(), 0..warmup_bodies, args.connections),
    ));
    if warm.samples_failed > 0 {
        bail!(
            "{k}: {} warm-up samples failed, first error: {:?}",
            warm.samples_failed,
            warm.first_error
        );
    }
    let cpu0 = server.cpu_s()?;
    let stats = rt.block_on(send_all(
        &client,
        &server,
        feed(
            bodies.clone(),
            warmup_bodies..bodies.len(),
            args.connections,
        ),
    ));
    let cpu = server.cpu_s()? - cpu0;
    if stats.samples_failed > 0 {
        eprintln!(
            "{k}: {} samples failed, first error: {:?}",
            stats.samples_failed, stats.first_error
        );
    }
    let samples = stats.samples_ok as f64;
    report.put(&format!("ingest.{k}.samples"), stats.samples_ok);
    report.put(&format!("ingest.{k}.samples_failed"), stats.samples_failed);
    report.put(&format!("ingest.{k}.requests"), stats.bodies_ok);
    report.put(&format!("ingest.{k}.wall_s"), stats.wall_s);
    report.put(&format!("ingest.{k}.samples_per_s"), samples / stats.wall_s);
    report.put(&format!("ingest.{k}.cpu_s"), cpu);
    report.put(&format!("ingest.{k}.samples_per_cpu_s"), samples / cpu);
    report.put(&format!("ingest.{k}.cpu_cores_used"), cpu / stats.wall_s);
    report.put(
        &format!("ingest.{k}.wire_bytes_per_sample"),
        stats.body_bytes as f64 / (stats.samples_ok + stats.samples_failed).max(1) as f64,
    );

    // Let background work (GC, head chunk mmapping) settle, then read memory.
    std::thread::sleep(Duration::from_secs(5));
    let rss = status_bytes(server.pid, "VmRSS:").unwrap_or(0);
    let anon = status_bytes(server.pid, "RssAnon:").unwrap_or(0);
    let series = args.series as f64;
    report.put(&format!("memory.{k}.rss_empty_mib"), mib(rss_empty));
    report.put(&format!("memory.{k}.rss_after_ingest_mib"), mib(rss));
    report.put(&format!("memory.{k}.anon_after_ingest_mib"), mib(anon));
    report.put(
        &format!("memory.{k}.peak_rss_mib"),
        mib(status_bytes(server.pid, "VmHWM:").unwrap_or(0)),
    );
    report.put(
        &format!("memory.{k}.rss_bytes_per_series"),
        rss as f64 / series,
    );
    report.put(
        &format!("memory.{k}.rss_above_empty_bytes_per_series"),
        rss.saturating_sub(rss_empty) as f64 / series,
    );

    // Phase 2: crash and replay.
    server.kill()?;
    let restarted = Server::start(args, kind, &dir, false)?;
    let ready_s = restarted.ready_after.as_secs_f64();
    // The high-water mark at ready covers WAL replay alone; the one read after the
    // `count` query below also holds that query's memory (100 k label sets).
    let hwm_at_ready = status_bytes(restarted.pid, "VmHWM:").unwrap_or(0);
    report.put(
        &format!("crash.{k}.peak_rss_at_ready_mib"),
        mib(hwm_at_ready),
    );
    report.put(
        &format!("crash.{k}.peak_at_ready_over_steady_rss"),
        hwm_at_ready as f64 / rss.max(1) as f64,
    );
    // Ready may come before the WAL is replayed: also wait until every series answers.
    let client = client;
    let t0 = Instant::now();
    let expected = args.series as f64;
    // Just after the last scrape, so the lookback sees it.
    let at_ms = run_end_ms(args) + 1000;
    let mut queryable_s = f64::NAN;
    while t0.elapsed() < Duration::from_secs(300) {
        let q = "count({job=~\"node|api\"})";
        if let Ok(v) = rt.block_on(instant_value(&client, &restarted, q, at_ms))
            && v >= expected
        {
            queryable_s = ready_s + t0.elapsed().as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.put(&format!("crash.{k}.ready_after_restart_s"), ready_s);
    report.put(
        &format!("crash.{k}.all_series_queryable_after_s"),
        queryable_s,
    );
    report.put(
        &format!("crash.{k}.replay_peak_rss_mib"),
        mib(status_bytes(restarted.pid, "VmHWM:").unwrap_or(0)),
    );
    report.put(
        &format!("crash.{k}.replay_peak_over_steady_rss"),
        status_bytes(restarted.pid, "VmHWM:").unwrap_or(0) as f64 / rss.max(1) as f64,
    );
    restarted.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Data sets end here: a minute before the run started, on a whole interval.
fn run_end_ms(args: &Args) -> i64 {
    static END: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let interval = args.interval_s * 1000;
    *END.get_or_init(|| (now_ms() - 60_000) / interval * interval)
}

async fn get_json(
    client: &HttpClient,
    server: &Server,
    path_and_query: &str,
) -> anyhow::Result<Value> {
    let mut req = hyper::Request::get(format!("{}{path_and_query}", server.base));
    if let Some(t) = &server.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client.request(req.body(Full::new(Bytes::new()))?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "{} answered {status}: {}",
            server.kind.name(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The single value of an instant query's first result.
async fn instant_value(
    client: &HttpClient,
    server: &Server,
    q: &str,
    at_ms: i64,
) -> anyhow::Result<f64> {
    let v = get_json(
        client,
        server,
        &format!(
            "/api/v1/query?query={}&time={:.3}",
            encode_query(q),
            at_ms as f64 / 1000.0
        ),
    )
    .await?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("no value")
}

/// The query corpus: (class, PromQL).
fn corpus() -> Vec<(&'static str, &'static str)> {
    vec![
        // rate() drops the metric name, so one selector over all families would give
        // duplicate label sets: the widest single family of the mix instead.
        ("rate_sum", "sum(rate(node_cpu_seconds_total[5m]))"),
        (
            "sum_by",
            "sum by (instance) (rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))",
        ),
        (
            "histogram_quantile",
            "histogram_quantile(0.99, sum by (le, handler) (rate(http_request_duration_seconds_bucket[5m])))",
        ),
        (
            "topk",
            "topk(5, sum by (instance, device) (rate(node_network_receive_bytes_total[5m])))",
        ),
    ]
}

/// A digest of a matrix result, to check both servers answered the same: series count,
/// points, and the sum of all values.
fn digest(v: &Value) -> (usize, usize, f64) {
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let mut points = 0;
    let mut sum = 0.0;
    for s in &result {
        for p in s["values"].as_array().into_iter().flatten() {
            points += 1;
            if let Some(x) = p[1].as_str().and_then(|x| x.parse::<f64>().ok())
                && x.is_finite()
            {
                sum += x;
            }
        }
    }
    (result.len(), points, sum)
}

/// Phases 3 and 4.
fn queries(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    kinds: &[Kind],
    capture: Option<&Arc<Capture>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let interval_ms = args.interval_s * 1000;
    let scrapes = history_scrapes(args);
    let end_ms = run_end_ms(args);
    let mut start_ms = end_ms - (scrapes as i64 - 1) * interval_ms;
    let fleet = |start_ms: i64| match capture {
        Some(c) => Source::Capture(CaptureFleet::new(
            c.clone(),
            args.hosts,
            start_ms,
            interval_ms,
            args.timestamps,
        )),
        None => Source::Generated(Fleet::with_mix(
            args.seed,
            args.query_series,
            start_ms,
            interval_ms,
            args.mix.generated(),
        )),
    };
    if let Source::Capture(f) = fleet(0) {
        // Every host's last scrape ends by `end_ms`.
        start_ms = end_ms - f.span_ms(scrapes);
        report.put("history.series", f.len());
    }
    let client = client();
    let mut servers = Vec::new();
    for &kind in kinds {
        let k = kind.name();
        let server = Server::start(args, kind, &args.work_dir.join(format!("query-{k}")), true)?;
        let fleet = fleet(start_ms);
        let cpu0 = server.cpu_s()?;
        let stats = rt.block_on(send_all(
            &client,
            &server,
            history(
                fleet,
                scrapes,
                args.history_samples_per_series,
                args.samples_per_body,
                args.connections,
            ),
        ));
        let cpu = server.cpu_s()? - cpu0;
        if stats.samples_failed > 0 {
            eprintln!(
                "{k}: {} history samples failed, first error: {:?}",
                stats.samples_failed, stats.first_error
            );
        }
        report.put(&format!("history.{k}.samples"), stats.samples_ok);
        report.put(&format!("history.{k}.samples_failed"), stats.samples_failed);
        report.put(
            &format!("history.{k}.samples_per_s"),
            stats.samples_ok as f64 / stats.wall_s,
        );
        report.put(
            &format!("history.{k}.samples_per_cpu_s"),
            stats.samples_ok as f64 / cpu,
        );
        report.put(
            &format!("history.{k}.rss_mib"),
            mib(status_bytes(server.pid, "VmRSS:").unwrap_or(0)),
        );
        servers.push((server, stats.samples_ok));
    }
    // Let Prometheus finish compacting the head into blocks before timing queries.
    for (server, _) in &servers {
        if server.kind == Kind::Prometheus {
            wait_blocks_settled(&server.data_dir);
        }
    }

    let ranges = [
        ("1h".to_owned(), 3_600_000i64),
        (format!("{}h", args.query_hours), end_ms - start_ms),
    ];
    let mut answers: Map<String, Value> = Map::new();
    let corpus = if args.storage_only {
        Vec::new()
    } else {
        corpus()
    };
    for (class, q) in corpus {
        for (range_name, range_ms) in &ranges {
            let range_ms = *range_ms;
            // About 240 points per series, as a dashboard panel asks for.
            let step_s = ((range_ms / 240) as f64 / 1000.0).max(args.interval_s as f64);
            let path = format!(
                "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={step_s}",
                encode_query(q),
                (end_ms - range_ms) as f64 / 1000.0,
                end_ms as f64 / 1000.0
            );
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
            // One untimed run each, then alternate so drift hits both alike.
            for (server, _) in &servers {
                let v = rt.block_on(get_json(&client, server, &path))?;
                let (series, points, sum) = digest(&v);
                answers.insert(
                    format!("{class}.{range_name}.{}", server.kind.name()),
                    json!({"series": series, "points": points, "sum": sum}),
                );
            }
            for _ in 0..args.query_reps {
                for (i, (server, _)) in servers.iter().enumerate() {
                    let t = Instant::now();
                    rt.block_on(get_json(&client, server, &path))?;
                    times[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            for (i, (server, _)) in servers.iter().enumerate() {
                let k = server.kind.name();
                times[i].sort_by(f64::total_cmp);
                report.put(
                    &format!("query.{class}.{range_name}.{k}.p50_ms"),
                    percentile(&times[i], 0.5),
                );
                report.put(
                    &format!("query.{class}.{range_name}.{k}.p90_ms"),
                    percentile(&times[i], 0.9),
                );
            }
            if servers.len() == 2 {
                let p = |i: usize| percentile(&times[i], 0.5);
                report.put(
                    &format!("query.{class}.{range_name}.p50_vantage_over_prometheus"),
                    p(1) / p(0),
                );
                let a = &answers[&format!("{class}.{range_name}.prometheus")];
                let b = &answers[&format!("{class}.{range_name}.vantage")];
                let same = a["series"] == b["series"]
                    && a["points"] == b["points"]
                    && (a["sum"].as_f64().unwrap_or(0.0) - b["sum"].as_f64().unwrap_or(0.0)).abs()
                        <= 1e-6 * a["sum"].as_f64().unwrap_or(0.0).abs().max(1.0);
                report.put(&format!("query.{class}.{range_name}.answers_agree"), same);
            }
        }
    }
    report
        .figures
        .insert("query.answers".to_owned(), Value::Object(answers));

    // Phase 4: storage after a graceful stop.
    for (server, samples) in servers {
        let k = server.kind.name();
        let dir = server.data_dir.clone();
        server.stop()?;
        match k {
            "prometheus" => {
                let blocks = prometheus_blocks(&dir);
                report.put("storage.prometheus.blocks", blocks.count);
                report.put("storage.prometheus.block_samples", blocks.samples);
                report.put("storage.prometheus.block_series", blocks.series);
                report.put(
                    "storage.prometheus.block_bytes_per_sample",
                    blocks.bytes as f64 / blocks.samples.max(1) as f64,
                );
                report.put(
                    "storage.prometheus.chunk_bytes_per_sample",
                    blocks.chunk_bytes as f64 / blocks.samples.max(1) as f64,
                );
                report.put("storage.prometheus.wal_bytes", dir_bytes(&dir.join("wal")));
                report.put(
                    "storage.prometheus.head_chunks_bytes",
                    dir_bytes(&dir.join("chunks_head")),
                );
                report.put(
                    "storage.prometheus.total_dir_bytes_per_sample",
                    dir_bytes(&dir) as f64 / samples.max(1) as f64,
                );
            }
            _ => {
                let metrics = dir_bytes(&dir.join("metrics"));
                report.put("storage.vantage.metrics_dir_bytes", metrics);
                let files = vantage_block_files(&dir.join("metrics"));
                report.put("storage.vantage.blocks", files.count);
                for (name, bytes) in [("index", files.index), ("chunks", files.chunks)] {
                    report.put(&format!("storage.vantage.{name}_bytes"), bytes);
                    report.put(
                        &format!("storage.vantage.{name}_bytes_per_sample"),
                        bytes as f64 / samples.max(1) as f64,
                    );
                }
                report.put(
                    "storage.vantage.bytes_per_sample",
                    metrics as f64 / samples.max(1) as f64,
                );
                report.put("storage.vantage.wal_bytes", dir_bytes(&dir.join("wal")));
                report.put(
                    "storage.vantage.total_dir_bytes_per_sample",
                    dir_bytes(&dir) as f64 / samples.max(1) as f64,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[derive(Default)]
struct Blocks {
    count: u64,
    samples: u64,
    series: u64,
    bytes: u64,
    chunk_bytes: u64,
}

/// Prometheus's persisted blocks: the directories with a `meta.json`.
fn prometheus_blocks(dir: &Path) -> Blocks {
    let mut out = Blocks::default();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = std::fs::read_to_string(entry.path().join("meta.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_str::<Value>(&meta) else {
            continue;
        };
        out.count += 1;
        out.samples += meta["stats"]["numSamples"].as_u64().unwrap_or(0);
        out.series += meta["stats"]["numSeries"].as_u64().unwrap_or(0);
        out.bytes += dir_bytes(&entry.path());
        out.chunk_bytes += dir_bytes(&entry.path().join("chunks"));
    }
    out
}

/// Vantage's blocks (`<tenant>/b-<seq>/`): how many, and their index and chunks bytes.
#[derive(Default)]
struct VantageBlocks {
    count: u64,
    index: u64,
    chunks: u64,
}

fn vantage_block_files(metrics: &Path) -> VantageBlocks {
    let mut out = VantageBlocks::default();
    let entries = |d: &Path| std::fs::read_dir(d).into_iter().flatten().flatten();
    for tenant in entries(metrics) {
        for block in entries(&tenant.path()) {
            let name = block.file_name().to_string_lossy().into_owned();
            if !name.starts_with("b-") || name.ends_with(".tmp") {
                continue;
            }
            out.count += 1;
            let size = |f: &str| std::fs::metadata(block.path().join(f)).map_or(0, |m| m.len());
            out.index += size("index");
            out.chunks += size("chunks");
        }
    }
    out
}

/// Waits until Prometheus's set of blocks has not changed for 10 s (at most 3 minutes):
/// its head compaction runs in the background after the appends that triggered it.
fn wait_blocks_settled(dir: &Path) {
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = names();
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let now = names();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Whether the collector binary exists and its API takes remote write (a 404 means the
/// receiver is not built in yet).
fn vantage_available(args: &Args) -> anyhow::Result<bool> {
    if !args.collector.exists() {
        return Ok(false);
    }
    let dir = args.work_dir.join("probe-vantage");
    let server = Server::start(args, Kind::Vantage, &dir, true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = client();
    let body = Body {
        data: Bytes::from(encode_write_request(
            &Fleet::new(args.seed, 1, now_ms(), 15_000).batch(0..1, 1),
        )?),
        samples: 1,
        group: 0,
    };
    let (tx, rx) = shards(1);
    tx[0].try_send(body)?;
    drop(tx);
    let stats = rt.block_on(send_all(&client, &server, rx));
    server.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    if stats.samples_ok == 1 {
        return Ok(true);
    }
    eprintln!(
        "vantage does not take remote write: {:?}",
        stats.first_error
    );
    Ok(false)
}

/// Scrapes of history per series.
fn history_scrapes(args: &Args) -> usize {
    args.history_scrapes
        .unwrap_or((args.query_hours * 3_600 / args.interval_s.max(1)) as usize)
}

/// The group a metric name is reported under: its first two `_` words (`node_cpu`,
/// `go_memstats`, `node_network`, ...).
fn family_group(name: &str) -> String {
    name.splitn(3, '_').take(2).collect::<Vec<_>>().join("_")
}

/// `--breakdown`: where Vantage's block bytes go on the node-exporter mix.
fn breakdown(args: &Args, capture: &Arc<Capture>, report: &mut Report) -> anyhow::Result<()> {
    use vantage_storage::metrics::tsdb::{Tsdb, TsdbOptions};
    let interval_ms = args.interval_s * 1000;
    let scrapes = history_scrapes(args);
    let probe = CaptureFleet::new(capture.clone(), args.hosts, 0, interval_ms, args.timestamps);
    let start_ms = run_end_ms(args) - probe.span_ms(scrapes);
    let mut fleet = CaptureFleet::new(
        capture.clone(),
        args.hosts,
        start_ms,
        interval_ms,
        args.timestamps,
    );
    let n = fleet.len();
    let root = args.work_dir.join("breakdown");
    let _ = std::fs::remove_dir_all(&root);
    let open =
        |name: &str| -> anyhow::Result<Tsdb> { Ok(Tsdb::open(TsdbOptions::new(root.join(name)))?) };
    let groups: Vec<String> = {
        let mut g: Vec<String> = (0..n)
            .map(|i| family_group(fleet.labels(i).metric_name().unwrap_or("")))
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let group_of: Vec<usize> = (0..n)
        .map(|i| {
            let g = family_group(fleet.labels(i).metric_name().unwrap_or(""));
            groups.binary_search(&g).unwrap_or(0)
        })
        .collect();
    let all = open("all")?;
    let times_only = open("times-only")?;
    let per_group: Vec<Tsdb> = groups
        .iter()
        .map(|g| open(&format!("group-{g}")))
        .collect::<anyhow::Result<_>>()?;
    let window = 40;
    let mut done = 0;
    let mut lsn = 0;
    while done < scrapes {
        let w = window.min(scrapes - done);
        let batch = fleet.batch(0..n, w);
        lsn += 1;
        all.apply(lsn, "bench", &batch);
        let mut zeroed = batch.clone();
        for s in &mut zeroed.series {
            for x in &mut s.samples {
                x.v = 0.0;
            }
        }
        times_only.apply(lsn, "bench", &zeroed);
        let mut split: Vec<vantage_proto::prom::MetricBatch> =
            vec![vantage_proto::prom::MetricBatch::default(); groups.len()];
        let now = batch
            .series
            .iter()
            .filter_map(|s| s.samples.last().map(|x| x.t))
            .max()
            .unwrap_or(0)
            + 1;
        for (i, s) in batch.series.into_iter().enumerate() {
            split[group_of[i]].series.push(s);
        }
        for (db, b) in per_group.iter().zip(&split) {
            db.apply(lsn, "bench", b);
        }
        for db in per_group.iter().chain([&all, &times_only]) {
            db.maintain(now)?;
        }
        done += w;
    }
    for db in per_group.iter().chain([&all, &times_only]) {
        db.flush()?;
    }
    let samples = (n * scrapes) as f64;
    let mut put = |name: &str, dir: &str, samples: f64| {
        let files = vantage_block_files(&root.join(dir));
        report.put(&format!("breakdown.{name}.samples"), samples);
        report.put(&format!("breakdown.{name}.blocks"), files.count);
        report.put(
            &format!("breakdown.{name}.index_bytes_per_sample"),
            files.index as f64 / samples.max(1.0),
        );
        report.put(
            &format!("breakdown.{name}.chunks_bytes_per_sample"),
            files.chunks as f64 / samples.max(1.0),
        );
        report.put(&format!("breakdown.{name}.chunks_bytes"), files.chunks);
    };
    put("all", "all", samples);
    put("times_only", "times-only", samples);
    for (gi, g) in groups.iter().enumerate() {
        let count = group_of.iter().filter(|&&x| x == gi).count();
        put(
            &format!("group.{g}"),
            &format!("group-{g}"),
            (count * scrapes) as f64,
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let settings = json!({
        "series": args.series, "warmup_scrapes": args.warmup_scrapes, "scrapes": args.scrapes,
        "interval_s": args.interval_s, "samples_per_body": args.samples_per_body,
        "connections": args.connections, "query_series": args.query_series,
        "query_hours": args.query_hours, "history_samples_per_series": args.history_samples_per_series,
        "query_reps": args.query_reps, "seed": args.seed, "mix": args.mix.name(),
        "capture_dir": args.capture_dir, "hosts": args.hosts,
        "timestamps": args.timestamps.name(), "storage_only": args.storage_only,
    });
    let mut report = Report {
        out: args.out.clone(),
        figures: Map::new(),
    };
    let capture = match (args.mix, &args.capture_dir[..]) {
        (MixArg::NodeExporter, [_, ..]) => {
            if !args.skip_ingest && !args.breakdown {
                bail!("--mix node-exporter feeds the history phase only: add --skip-ingest");
            }
            let c = Capture::load_all(&args.capture_dir)?;
            report.put("capture.scrapes", c.scrapes());
            report.put("capture.series_per_host", c.series_per_host());
            report.put("capture.dropped_series", c.dropped_series());
            report.put("capture.counters", c.counters());
            Some(Arc::new(c))
        }
        (MixArg::NodeExporter, []) => bail!("--mix node-exporter needs --capture-dir"),
        (MixArg::Generated(_), _) => None,
    };
    if args.breakdown {
        let capture = capture.context("--breakdown needs --mix node-exporter")?;
        breakdown(&args, &capture, &mut report)?;
        report.save(&settings)?;
        return Ok(());
    }
    let mut kinds = Vec::new();
    if !args.skip_prometheus {
        kinds.push(Kind::Prometheus);
    }
    if !args.skip_vantage {
        if vantage_available(&args)? {
            kinds.push(Kind::Vantage);
        } else {
            report.put("vantage.available", false);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    if !args.skip_ingest {
        eprintln!("== encoding the ingest stream");
        let interval_ms = args.interval_s * 1000;
        let total = args.warmup_scrapes + args.scrapes;
        let start_ms = run_end_ms(&args) - (total as i64 - 1) * interval_ms;
        let mut fleet = Fleet::with_mix(
            args.seed,
            args.series,
            start_ms,
            interval_ms,
            args.mix.generated(),
        );
        let t0 = Instant::now();
        let bodies = Arc::new(encode_scrapes(&mut fleet, total, args.samples_per_body)?);
        let warmup_bodies = args.warmup_scrapes * args.series.div_ceil(args.samples_per_body);
        let bytes: usize = bodies.iter().map(|b| b.data.len()).sum();
        eprintln!(
            "   {} bodies, {:.0} MiB, {:.1} s",
            bodies.len(),
            mib(bytes as u64),
            t0.elapsed().as_secs_f64()
        );
        for &kind in &kinds {
            eprintln!("== ingest and crash recovery: {}", kind.name());
            ingest(&args, &rt, kind, &bodies, warmup_bodies, &mut report)?;
            report.save(&settings)?;
        }
        if let [_, _] = kinds[..] {
            let r = |k: &str| {
                report.figures[&format!("ingest.{k}.samples_per_cpu_s")]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            };
            report.put(
                "ingest.vantage_over_prometheus_samples_per_cpu_s",
                r("vantage") / r("prometheus"),
            );
        }
    }
    if !args.skip_queries {
        eprintln!("== history, queries and storage");
        queries(&args, &rt, &kinds, capture.as_ref(), &mut report)?;
        report.save(&settings)?;
    }
    report.save(&settings)?;
    eprintln!("report: {}", args.out.display());
    Ok(())
}
