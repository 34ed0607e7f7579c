//! `vantage-agent-bench`: the agent's footprint and throughput, measured on the real
//! release binaries (issue 5, Performance). One figure per line on stdout; the method
//! and the figures of record are in `benches/RESULTS.md` ("Agent").
//!
//! - `idle`: the agent with host metrics every 10 s and 10 tailed files, each growing by
//!   one ~200-byte line a second, shipping to a real release collector; from 45 s after
//!   start (steady state, past the release of the start-up code pages): RSS (VmRSS
//!   sampled every second; VmHWM, the start-up peak, at the end) and CPU % of one core,
//!   plus the binary's size as built and stripped.
//! - `discovery`: agent CPU with N files matching the glob of which 10 grow, against
//!   10 files all growing at the same rate (alternated, `--rounds` times).
//! - `throughput`: a file of `--size-mb` of ~200-byte lines read from its start and
//!   shipped, to the acking sink in this process (isolates the agent) or to a real
//!   collector (`--collector`): lines/s, MB/s, agent CPU seconds per GB, peak RSS.
//! - `host-metrics`: the agent's collection cost per cycle (its hidden
//!   `bench-host-metrics` subcommand, and the running agent at a 100 ms interval) beside
//!   Debian's `prometheus-node-exporter` serving the same number of scrapes.
//! - `batch-ids`: the collector's CPU per record with and without `x-vantage-batch-id`
//!   (`vantage-loadgen --batch-ids`), alternated on fresh collectors.
//!
//! CPU is utime+stime from `/proc/<pid>/stat` (the machine is shared: wall-clock rates
//! move with the neighbours, CPU seconds much less).

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use vantage_benches::collector::Collector;
use vantage_benches::process::{ChildGuard, LogEcho, ReadyProcess, remove_vantage_env};
use vantage_benches::procfs::{cpu_seconds, loadavg, mib, status_bytes};

/// Body length of generated lines, as in the other log benchmarks.
const LINE_BODY_BYTES: usize = 200;
/// How long a process may take to print its `ready` line on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser, Debug)]
#[command(about = "Footprint and throughput of vantage-agent (see benches/RESULTS.md)")]
struct Cli {
    /// The agent binary (a release build).
    #[arg(long, global = true, default_value = "target/release/vantage-agent")]
    agent: PathBuf,
    /// Scratch directory (files, state, collector data); emptied per case.
    #[arg(long, global = true, default_value = "target/agent-bench")]
    work_dir: PathBuf,
    /// Also write the figures as one JSON object to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    case: Case,
}

#[derive(Subcommand, Debug)]
enum Case {
    /// Idle footprint: host metrics every 10 s, 10 files at 1 line/s each, to a collector.
    Idle {
        /// The collector binary (a release build).
        #[arg(long, default_value = "target/release/vantage-collector")]
        collector: PathBuf,
        /// Measurement window, after a 15 s warm-up.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Tailed files.
        #[arg(long, default_value_t = 10)]
        files: usize,
    },
    /// Discovery cost: N matching files of which 10 grow, against 10 files that grow.
    Discovery {
        /// Files matching the glob in the large case.
        #[arg(long, default_value_t = 10_000)]
        matching: usize,
        /// Files that grow, in both cases.
        #[arg(long, default_value_t = 10)]
        active: usize,
        /// Lines per second written to each growing file.
        #[arg(long, default_value_t = 10)]
        lines_per_s: u64,
        /// Measurement window per case, after the agent tracks every file.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Alternations of the two cases.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds between the agent tracking every file and the window: past a
        /// minute, quiet files are looked at every 5th poll.
        #[arg(long, default_value_t = 70)]
        warmup: u64,
    },
    /// Log tail throughput of one file read from its start.
    Throughput {
        /// Size of the file, in MB (10^6 bytes).
        #[arg(long, default_value_t = 1000)]
        size_mb: u64,
        /// Ship to this collector instead of the acking sink.
        #[arg(long)]
        collector: Option<PathBuf>,
    },
    /// Host-metrics collection cost per cycle against prometheus-node-exporter.
    HostMetrics {
        /// Collections by the agent and scrapes of node_exporter.
        #[arg(long, default_value_t = 200)]
        cycles: u64,
        /// The node_exporter binary.
        #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
        node_exporter: PathBuf,
        /// Seconds of the running agent at a 100 ms host-metrics interval.
        #[arg(long, default_value_t = 30)]
        running_seconds: u64,
    },
    /// Collector CPU per record with and without x-vantage-batch-id.
    BatchIds {
        /// The collector binary (a release build).
        #[arg(long, default_value = "target/release/vantage-collector")]
        collector: PathBuf,
        /// The load generator binary.
        #[arg(long, default_value = "target/release/vantage-loadgen")]
        loadgen: PathBuf,
        /// Records per run.
        #[arg(long, default_value_t = 300_000)]
        records: u64,
        /// Alternations of plain and with-ids runs.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// Prints one figure and keeps it for the JSON report.
struct Figures(serde_json::Map<String, Value>);

impl Figures {
    fn put(&mut self, key: &str, value: impl Into<Value>, unit: &str) {
        let value = value.into();
        match &value {
            Value::Number(n) if n.is_f64() => {
                println!("{key}: {:.4} {unit}", n.as_f64().unwrap_or(f64::NAN))
            }
            v => println!("{key}: {v} {unit}"),
        }
        self.0.insert(key.to_string(), value);
    }
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    std::fs::create_dir_all(&cli.work_dir)?;
    // The agent wants absolute globs and paths.
    cli.work_dir = std::fs::canonicalize(&cli.work_dir)?;
    let mut figures = Figures(serde_json::Map::new());
    std::fs::create_dir_all(&cli.work_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match &cli.case {
        Case::Idle {
            collector,
            seconds,
            files,
        } => idle(&cli, &mut figures, collector, *seconds, *files)?,
        Case::Discovery {
            matching,
            active,
            lines_per_s,
            seconds,
            rounds,
            warmup,
        } => discovery(
            &cli,
            &rt,
            &mut figures,
            (*matching, *active, *lines_per_s),
            (*warmup, *seconds),
            *rounds,
        )?,
        Case::Throughput { size_mb, collector } => {
            throughput(&cli, &rt, &mut figures, *size_mb, collector.as_deref())?
        }
        Case::HostMetrics {
            cycles,
            node_exporter,
            running_seconds,
        } => host_metrics(
            &cli,
            &rt,
            &mut figures,
            *cycles,
            node_exporter,
            *running_seconds,
        )?,
        Case::BatchIds {
            collector,
            loadgen,
            records,
            rounds,
        } => batch_ids(&cli, &mut figures, collector, loadgen, *records, *rounds)?,
    }
    if let Some(path) = &cli.json {
        let report = json!({
            "case": format!("{:?}", cli.case),
            "at_unix_s": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "load_average": loadavg(),
            "figures": Value::Object(figures.0),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Processes

/// How long a stopped agent or collector may take to exit before it is killed: the
/// figures are taken before the stop.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A release collector on a fresh data dir and ephemeral ports, with its admin key; as
/// for the agent, `VANTAGE_*` settings of this shell do not reach it.
fn start_collector(binary: &Path, data_dir: &Path) -> anyhow::Result<Collector> {
    Ok(Collector::builder(binary, data_dir)
        .isolated_env()
        .log_echo(LogEcho::WarningsAndPanics)
        .ready_timeout(START_TIMEOUT)
        .start()?)
}

/// What an agent run needs besides its files.
struct AgentRun<'a> {
    endpoint: &'a str,
    token: Option<&'a str>,
    include: &'a str,
    start_at: &'a str,
    host_interval: &'a str,
    receivers: bool,
}

/// Starts the agent on a fresh state dir with a configuration file written from `run`.
fn start_agent(cli: &Cli, dir: &Path, run: &AgentRun<'_>) -> anyhow::Result<ReadyProcess> {
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let receivers = if run.receivers {
        "{grpc: '127.0.0.1:0', http: '127.0.0.1:0'}"
    } else {
        "{grpc: 'off', http: 'off'}"
    };
    let host = if run.host_interval == "off" {
        "{enabled: false}".to_string()
    } else {
        format!("{{enabled: true, interval: {}}}", run.host_interval)
    };
    let token = run
        .token
        .map(|t| format!("  token: {t}\n"))
        .unwrap_or_default();
    let config = format!(
        "state_dir: {state}\nlog_format: json\nhealth_listen: 127.0.0.1:0\n\
         exporter:\n  endpoint: {endpoint}\n{token}\
         files:\n  inputs:\n    - include: ['{include}']\n      start_at: {start_at}\n\
         host_metrics: {host}\nreceivers: {{otlp: {receivers}}}\n",
        state = state.display(),
        endpoint = run.endpoint,
        include = run.include,
        start_at = run.start_at,
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, config)?;
    let mut c = Command::new(&cli.agent);
    c.arg("run").arg("--config").arg(&path);
    remove_vantage_env(&mut c);
    Ok(ReadyProcess::spawn(
        c,
        "agent",
        LogEcho::WarningsAndPanics,
        START_TIMEOUT,
    )?)
}

/// The agent's counters from `/healthz`.
fn agent_stats(agent: &ReadyProcess) -> anyhow::Result<Value> {
    let addr = agent.addr("health")?;
    let body = http_get(addr, "/healthz", false)?;
    let v: Value = serde_json::from_slice(&body).context("healthz is not JSON")?;
    Ok(v["stats"].clone())
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// A minimal HTTP/1.1 GET (loopback only); the body, de-chunked.
fn http_get(addr: SocketAddr, path: &str, gzip: bool) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    let body = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)?;
        if size == 0 || rest.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
        rest = &rest[(nl + 4 + size).min(rest.len())..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The acking sink

/// What the sink received.
#[derive(Default)]
struct SinkCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// An OTLP/gRPC endpoint that reads each request body, counts it and answers an empty
/// (valid) export response, without decompressing or decoding: the agent's cost alone.
fn start_sink(rt: &tokio::runtime::Runtime) -> anyhow::Result<(String, Arc<SinkCounters>)> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(SinkCounters::default());
    let shared = counters.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counters = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let counters = counters.clone();
                    async move { sink_answer(req, &counters).await }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .adaptive_window(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}"), counters))
}

type SinkBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn sink_answer(
    req: hyper::Request<hyper::body::Incoming>,
    counters: &SinkCounters,
) -> Result<hyper::Response<SinkBody>, hyper::Error> {
    let mut body = req.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
        }
    }
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    // An empty Export*ServiceResponse: flag 0, length 0.
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = hyper::Response::new(StreamBody::new(futures::stream::iter(frames)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// Lines

/// Deterministic ~200-byte log lines: the bodies of `vantage_benches::log_batch`.
struct Lines {
    next: u64,
    pool: Vec<String>,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            next: 0,
            pool: Vec::new(),
        }
    }

    /// The next line, newline included.
    fn line(&mut self) -> String {
        if self.pool.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let batch = vantage_benches::log_batch(1, self.next, 1000, LINE_BODY_BYTES, now);
            self.next += 1000;
            self.pool = batch
                .resource_logs
                .into_iter()
                .flat_map(|r| r.scope_logs)
                .flat_map(|s| s.log_records)
                .filter_map(|r| match r.body?.value? {
                    vantage_proto::otlp::common::v1::any_value::Value::StringValue(s) => Some(s),
                    _ => None,
                })
                .rev()
                .collect();
        }
        let mut l = self.pool.pop().unwrap_or_default();
        l.push('\n');
        l
    }
}

/// Appends `per_s` lines a second to each of `files` until `stop` is set.
fn trickle(
    files: Vec<PathBuf>,
    per_s: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut lines = Lines::new();
        let mut written = 0u64;
        let period = Duration::from_secs_f64(1.0 / per_s.max(1) as f64);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            for f in &files {
                if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(f) {
                    let _ = file.write_all(lines.line().as_bytes());
                    written += 1;
                }
            }
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        written
    })
}

/// Samples VmRSS every second for `seconds`; returns (max, last) in bytes.
fn watch_rss(pid: u32, seconds: u64) -> (u64, u64) {
    let (mut max, mut last) = (0, 0);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        if let Some(rss) = status_bytes(pid, "VmRSS:") {
            max = max.max(rss);
            last = rss;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    (max, last)
}

fn fresh_dir(path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Cases

fn idle(
    cli: &Cli,
    figures: &mut Figures,
    collector: &Path,
    seconds: u64,
    files: usize,
) -> anyhow::Result<()> {
    let dir = cli.work_dir.join("idle");
    fresh_dir(&dir)?;
    let built = std::fs::metadata(&cli.agent)?.len();
    let stripped_path = dir.join("vantage-agent.stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(&cli.agent)
        .status()
        .context("strip")?;
    if !status.success() {
        bail!("strip failed");
    }
    let stripped = std::fs::metadata(&stripped_path)?.len();
    figures.put("agent.binary_bytes_as_built", built, "bytes");
    figures.put("agent.binary_mib_stripped", mib(stripped), "MiB");
    let collector = start_collector(collector, &dir.join("collector"))?;
    let (grpc, token) = (collector.grpc_url(), collector.token().unwrap_or_default());
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| logs.join(format!("app-{i}.log")))
        .collect();
    for p in &paths {
        std::fs::write(p, b"")?;
    }
    let include = format!("{}/*.log", logs.display());
    let agent = start_agent(
        cli,
        &dir,
        &AgentRun {
            endpoint: &grpc,
            token: Some(token),
            include: &include,
            start_at: "end",
            host_interval: "10s",
            receivers: true,
        },
    )?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = trickle(paths, 1, stop.clone());
    // Steady state: past the agent's release of its start-up code pages (30 s after it
    // is ready); the start-up peak is VmHWM.
    std::thread::sleep(Duration::from_secs(45));
    let (cpu0, at0) = (cpu_seconds(agent.pid())?, Instant::now());
    let (rss_max, rss_last) = watch_rss(agent.pid(), seconds);
    let (cpu1, wall) = (cpu_seconds(agent.pid())?, at0.elapsed().as_secs_f64());
    let hwm = status_bytes(agent.pid(), "VmHWM:").unwrap_or(0);
    let anon = status_bytes(agent.pid(), "RssAnon:").unwrap_or(0);
    let stats = agent_stats(&agent)?;
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap_or(0);
    let collector_cpu = cpu_seconds(collector.pid())?;
    figures.put("idle.window_s", wall, "s");
    figures.put(
        "idle.agent_cpu_percent_of_one_core",
        (cpu1 - cpu0) / wall * 100.0,
        "%",
    );
    figures.put("idle.agent_cpu_s_in_window", cpu1 - cpu0, "s");
    figures.put("idle.agent_vmrss_max_mib", mib(rss_max), "MiB");
    figures.put("idle.agent_vmrss_last_mib", mib(rss_last), "MiB");
    figures.put("idle.agent_rss_anon_last_mib", mib(anon), "MiB");
    figures.put("idle.agent_vmhwm_mib", mib(hwm), "MiB");
    figures.put("idle.lines_written", written, "lines");
    figures.put(
        "idle.agent_log_records_sent",
        stat(&stats, "log_records_sent"),
        "records",
    );
    figures.put(
        "idle.agent_host_metrics_collections",
        stat(&stats, "host_metrics_collections"),
        "collections",
    );
    figures.put("idle.collector_cpu_s_total", collector_cpu, "s");
    agent.stop_within(STOP_GRACE);
    collector.stop_within(STOP_GRACE);
    Ok(())
}

fn discovery(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    figures: &mut Figures,
    (matching, active, lines_per_s): (usize, usize, u64),
    (warmup, seconds): (u64, u64),
    rounds: usize,
) -> anyhow::Result<()> {
    let (endpoint, _sink) = start_sink(rt)?;
    let mut per_case: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (case, total) in [active, matching].into_iter().enumerate() {
            let dir = cli.work_dir.join(format!("discovery-{total}"));
            fresh_dir(&dir)?;
            let logs = dir.join("logs");
            std::fs::create_dir_all(&logs)?;
            let mut growing = Vec::new();
            for i in 0..total {
                let p = logs.join(format!("app-{i:05}.log"));
                std::fs::write(&p, b"started\n")?;
                if i < active {
                    growing.push(p);
                }
            }
            let include = format!("{}/*.log", logs.display());
            let agent = start_agent(
                cli,
                &dir,
                &AgentRun {
                    endpoint: &endpoint,
                    token: None,
                    include: &include,
                    start_at: "end",
                    host_interval: "off",
                    receivers: false,
                },
            )?;
            let deadline = Instant::now() + Duration::from_secs(300);
            while stat(&agent_stats(&agent)?, "files_tailed") < total as u64 {
                if Instant::now() > deadline {
                    bail!("the agent did not pick up {total} files in 300 s");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = trickle(growing, lines_per_s, stop.clone());
            std::thread::sleep(Duration::from_secs(warmup));
            let (cpu0, at0) = (cpu_seconds(agent.pid())?, Instant::now());
            let sent0 = stat(&agent_stats(&agent)?, "log_records_sent");
            let (rss_max, _) = watch_rss(agent.pid(), seconds);
            let (cpu1, wall) = (cpu_seconds(agent.pid())?, at0.elapsed().as_secs_f64());
            let sent = stat(&agent_stats(&agent)?, "log_records_sent") - sent0;
            stop.store(true, Ordering::Relaxed);
            let _ = writer.join();
            let pct = (cpu1 - cpu0) / wall * 100.0;
            per_case[case].push(pct);
            let key = format!("discovery.round{round}.files_{total}");
            figures.put(&format!("{key}.agent_cpu_percent"), pct, "%");
            figures.put(&format!("{key}.records_sent_in_window"), sent, "records");
            figures.put(&format!("{key}.agent_vmrss_max_mib"), mib(rss_max), "MiB");
            agent.stop_within(STOP_GRACE);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (small, large) = (mean(&per_case[0]), mean(&per_case[1]));
    figures.put(
        &format!("discovery.mean_cpu_percent.files_{active}"),
        small,
        "%",
    );
    figures.put(
        &format!("discovery.mean_cpu_percent.files_{matching}"),
        large,
        "%",
    );
    figures.put("discovery.large_over_small", large / small.max(1e-9), "x");
    Ok(())
}

fn throughput(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    figures: &mut Figures,
    size_mb: u64,
    collector: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = cli.work_dir.join("throughput");
    fresh_dir(&dir)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let file = logs.join("big.log");
    let target = size_mb * 1_000_000;
    let (mut bytes, mut lines) = (0u64, 0u64);
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
        let mut generator = Lines::new();
        while bytes < target {
            let l = generator.line();
            w.write_all(l.as_bytes())?;
            bytes += l.len() as u64;
            lines += 1;
        }
        w.flush()?;
        // On disk before the agent starts: otherwise the agent's fsyncs wait behind
        // the writeback of this file (500 MB ran at 2 MB/s that way).
        w.get_ref().sync_all()?;
    }
    let (collector_proc, endpoint, token, sink) = match collector {
        Some(bin) => {
            let c = start_collector(bin, &dir.join("collector"))?;
            let (grpc, token) = (c.grpc_url(), c.token().map(str::to_string));
            (Some(c), grpc, token, None)
        }
        None => {
            let (endpoint, counters) = start_sink(rt)?;
            (None, endpoint, None, Some(counters))
        }
    };
    let include = format!("{}/*.log", logs.display());
    let started = Instant::now();
    let agent = start_agent(
        cli,
        &dir,
        &AgentRun {
            endpoint: &endpoint,
            token: token.as_deref(),
            include: &include,
            start_at: "beginning",
            host_interval: "off",
            receivers: false,
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut rss_max = 0;
    loop {
        let s = agent_stats(&agent)?;
        if let Some(rss) = status_bytes(agent.pid(), "VmRSS:") {
            rss_max = rss_max.max(rss);
        }
        if stat(&s, "log_records_sent") >= lines {
            break;
        }
        if Instant::now() > deadline {
            bail!("not all lines sent within an hour: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(agent.pid())?;
    let hwm = status_bytes(agent.pid(), "VmHWM:").unwrap_or(0);
    let stats = agent_stats(&agent)?;
    let sink_name = if collector.is_some() {
        "collector"
    } else {
        "acking sink"
    };
    println!(
        "# {size_mb} MB, {lines} lines of ~200 bytes, to the {sink_name}; times from the agent's start"
    );
    figures.put("throughput.file_bytes", bytes, "bytes");
    figures.put("throughput.lines", lines, "lines");
    figures.put("throughput.seconds", wall, "s");
    figures.put("throughput.lines_per_s", lines as f64 / wall, "lines/s");
    figures.put("throughput.mb_per_s", bytes as f64 / wall / 1e6, "MB/s");
    figures.put("throughput.agent_cpu_s", cpu, "s");
    figures.put(
        "throughput.agent_cpu_s_per_gb",
        cpu / (bytes as f64 / 1e9),
        "CPU-s/GB",
    );
    figures.put("throughput.agent_cores_busy", cpu / wall, "cores");
    figures.put(
        "throughput.agent_peak_rss_mib",
        mib(hwm.max(rss_max)),
        "MiB",
    );
    figures.put(
        "throughput.agent_log_batches_sent",
        stat(&stats, "log_batches_sent"),
        "batches",
    );
    if let Some(s) = &sink {
        figures.put(
            "throughput.wire_bytes",
            s.bytes.load(Ordering::Relaxed),
            "bytes (zstd, gRPC framed)",
        );
    }
    if let Some(c) = &collector_proc {
        figures.put("throughput.collector_cpu_s", cpu_seconds(c.pid())?, "s");
    }
    agent.stop_within(STOP_GRACE);
    if let Some(c) = collector_proc {
        c.stop_within(STOP_GRACE);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn host_metrics(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    figures: &mut Figures,
    cycles: u64,
    node_exporter: &Path,
    running_seconds: u64,
) -> anyhow::Result<()> {
    // 1. The collection alone, in the agent's own code.
    let out = Command::new(&cli.agent)
        .args(["bench-host-metrics", "--cycles", &cycles.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("vantage-agent bench-host-metrics")?;
    if !out.status.success() {
        bail!("vantage-agent bench-host-metrics failed");
    }
    let own: Value = serde_json::from_slice(&out.stdout).context("bench-host-metrics JSON")?;
    let agent_ms = own["cpu_ms_per_cycle"].as_f64().unwrap_or(f64::NAN);
    figures.put(
        "host_metrics.agent_collect_encode_cpu_ms_per_cycle",
        agent_ms,
        "ms",
    );
    figures.put(
        "host_metrics.agent_points_per_cycle",
        own["points"].clone(),
        "points",
    );
    figures.put(
        "host_metrics.agent_request_bytes",
        own["request_bytes"].clone(),
        "bytes",
    );

    // 2. node_exporter serving `cycles` scrapes: default collectors, then the subset
    //    that reports what the agent reports.
    let equivalent: &[&str] = &[
        "--collector.disable-defaults",
        "--collector.cpu",
        "--collector.loadavg",
        "--collector.meminfo",
        "--collector.filesystem",
        "--collector.netdev",
        "--collector.diskstats",
        "--collector.stat",
    ];
    let mut node_ms = Vec::new();
    for (name, extra) in [("default", &[][..]), ("equivalent", equivalent)] {
        let port = free_port()?;
        let child = Command::new(node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", node_exporter.display()))?;
        let child = ChildGuard::new(child, "node_exporter");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut up = false;
        for _ in 0..100 {
            if http_get(addr, "/metrics", false).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !up {
            bail!("node_exporter did not answer on {addr}");
        }
        for _ in 0..5 {
            http_get(addr, "/metrics", false)?;
        }
        let cpu0 = cpu_seconds(child.pid())?;
        let mut body_bytes = 0;
        let mut series = 0;
        for _ in 0..cycles {
            let body = http_get(addr, "/metrics", false)?;
            body_bytes = body.len();
            series = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty() && l[0] != b'#')
                .count();
        }
        let cpu1 = cpu_seconds(child.pid())?;
        let _ = child.kill();
        let ms = (cpu1 - cpu0) / cycles as f64 * 1e3;
        node_ms.push(ms);
        figures.put(
            &format!("host_metrics.node_exporter_{name}_cpu_ms_per_scrape"),
            ms,
            "ms",
        );
        figures.put(
            &format!("host_metrics.node_exporter_{name}_series"),
            series,
            "series",
        );
        figures.put(
            &format!("host_metrics.node_exporter_{name}_body_bytes"),
            body_bytes,
            "bytes",
        );
    }
    figures.put(
        "host_metrics.agent_over_node_exporter_default",
        agent_ms / node_ms[0],
        "x",
    );
    figures.put(
        "host_metrics.agent_over_node_exporter_equivalent",
        agent_ms / node_ms[1],
        "x",
    );

    // 3. The running agent at a 100 ms interval, shipping to the acking sink: the whole
    //    cycle (collect, encode, queue with fsync, export with zstd and gRPC).
    if running_seconds > 0 {
        let (endpoint, _sink) = start_sink(rt)?;
        let dir = cli.work_dir.join("host-metrics");
        fresh_dir(&dir)?;
        let include = format!("{}/none/*.log", dir.display());
        let agent = start_agent(
            cli,
            &dir,
            &AgentRun {
                endpoint: &endpoint,
                token: None,
                include: &include,
                start_at: "end",
                host_interval: "100ms",
                receivers: false,
            },
        )?;
        std::thread::sleep(Duration::from_secs(3));
        let (cpu0, n0) = (
            cpu_seconds(agent.pid())?,
            stat(&agent_stats(&agent)?, "host_metrics_collections"),
        );
        std::thread::sleep(Duration::from_secs(running_seconds));
        let (cpu1, n1) = (
            cpu_seconds(agent.pid())?,
            stat(&agent_stats(&agent)?, "host_metrics_collections"),
        );
        let ms = (cpu1 - cpu0) / (n1 - n0).max(1) as f64 * 1e3;
        figures.put("host_metrics.running_agent_cycles", n1 - n0, "cycles");
        figures.put("host_metrics.running_agent_cpu_ms_per_cycle", ms, "ms");
        figures.put(
            "host_metrics.running_agent_over_node_exporter_default",
            ms / node_ms[0],
            "x",
        );
        agent.stop_within(STOP_GRACE);
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn batch_ids(
    cli: &Cli,
    figures: &mut Figures,
    collector: &Path,
    loadgen: &Path,
    records: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let mut per_record: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rate: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, ids) in [false, true].into_iter().enumerate() {
            let data = cli.work_dir.join(format!("batch-ids-{round}-{i}"));
            let c = start_collector(collector, &data)?;
            let (grpc, token) = (c.grpc_url(), c.token().unwrap_or_default());
            let cpu0 = cpu_seconds(c.pid())?;
            let mut cmd = Command::new(loadgen);
            cmd.args(["--endpoint", &grpc, "--token", token, "--json"])
                .args(["--records", &records.to_string()])
                .args(["--pool-batches", "64", "--concurrency", "4"]);
            if ids {
                cmd.arg("--batch-ids");
            }
            let out = cmd.stderr(Stdio::inherit()).output().context("loadgen")?;
            let summary: Value =
                serde_json::from_slice(&out.stdout).context("loadgen printed no JSON")?;
            // Indexing continues after the last acknowledgement: wait until it settles.
            let mut before = cpu_seconds(c.pid())?;
            for _ in 0..30 {
                std::thread::sleep(Duration::from_secs(1));
                let now = cpu_seconds(c.pid())?;
                if now - before < 0.02 {
                    break;
                }
                before = now;
            }
            let cpu = cpu_seconds(c.pid())? - cpu0;
            let acked = summary["records_acked"].as_u64().unwrap_or(0).max(1) as f64;
            per_record[i].push(cpu / acked * 1e6);
            rate[i].push(summary["acked_records_per_s"].as_f64().unwrap_or(f64::NAN));
            c.stop_within(STOP_GRACE);
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    figures.put(
        "batch_ids.collector_cpu_us_per_record_plain",
        json!(per_record[0]),
        "µs",
    );
    figures.put(
        "batch_ids.collector_cpu_us_per_record_with_ids",
        json!(per_record[1]),
        "µs",
    );
    figures.put("batch_ids.records_per_s_plain", json!(rate[0]), "records/s");
    figures.put(
        "batch_ids.records_per_s_with_ids",
        json!(rate[1]),
        "records/s",
    );
    figures.put(
        "batch_ids.with_ids_over_plain_cpu",
        mean(&per_record[1]) / mean(&per_record[0]),
        "x",
    );
    Ok(())
}
