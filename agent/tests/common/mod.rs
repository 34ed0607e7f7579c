//! Harness of the agent's end-to-end tests: starts the real `vantage-collector` (built by
//! the same `cargo test --workspace`, found next to the agent binary) and the real
//! `vantage-agent` on 127.0.0.1, and talks to both over real sockets.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[path = "../../../collector/tests/common/small_disk.rs"]
mod small_disk;
pub(crate) use small_disk::SmallDisk;

/// Start-up of either binary, WAL replay included, on a loaded machine.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long lines may take to become searchable: agent poll (1 s) + export + the
/// collector's 1 s commit, with a wide margin for a loaded 2-core machine.
pub(crate) const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vantage-agent"))
}

/// The collector binary of this workspace, beside the agent's.
pub(crate) fn collector_bin() -> PathBuf {
    let path = agent_bin().with_file_name("vantage-collector");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p vantage-collector` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A child process whose stderr (JSON log lines) is collected; killed when dropped.
pub(crate) struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `command` and waits for its `ready` JSON line; returns it.
    pub(crate) fn spawn(mut command: Command) -> (Proc, Value) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("VANTAGE_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "ready"
                    {
                        let _ = tx.send(v);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let proc = Proc { child, log };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(ready) => (proc, ready),
            Err(_) => panic!("no ready line; log:\n{}", proc.log()),
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit; returns whether it exited 0.
    pub(crate) fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("did not exit after SIGTERM; log:\n{}", self.log());
    }

    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A running collector.
pub(crate) struct Collector {
    pub(crate) proc: Proc,
    pub(crate) grpc: SocketAddr,
    pub(crate) api: SocketAddr,
    pub(crate) token: String,
}

impl Collector {
    /// Starts a collector on `data_dir`; `grpc_port` 0 picks a free port.
    pub(crate) fn start(data_dir: &Path, grpc_port: u16) -> Collector {
        let mut c = Command::new(collector_bin());
        c.arg("--data-dir")
            .arg(data_dir)
            .args(["--otlp-grpc", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http", "127.0.0.1:0"])
            .args(["--api", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("VANTAGE_LOG", "info");
        let (proc, ready) = Proc::spawn(c);
        let addr = |k: &str| ready[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
        let text = std::fs::read_to_string(data_dir.join("initial-admin.txt")).expect("admin key");
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix("api_key: "))
            .expect("api_key line")
            .trim()
            .to_string();
        Collector {
            grpc: addr("otlp_grpc"),
            api: addr("api"),
            token,
            proc,
        }
    }

    /// `GET /api/v1/logs/search` with `query`; the JSON answer.
    pub(crate) async fn search(&self, query: &str, limit: usize) -> Value {
        let q = serde_urlencoded::to_string([
            ("query", query),
            ("limit", &limit.to_string()),
            ("start", "now-1h"),
        ])
        .unwrap();
        let url = format!("http://{}/api/v1/logs/search?{q}", self.api);
        let body = http_get(&url, Some(&self.token)).await;
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "search answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// Total hits of `query`.
    pub(crate) async fn count(&self, query: &str) -> u64 {
        self.search(query, 1).await["total"].as_u64().unwrap_or(0)
    }

    /// Waits until `query` has exactly `expected` hits (fails at the deadline with the
    /// last total).
    pub(crate) async fn wait_count(&self, query: &str, expected: u64, agent: Option<&Agent>) {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let n = self.count(query).await;
            if n == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let agent_log = agent.map(|a| a.proc.log()).unwrap_or_default();
                panic!(
                    "{query}: {n} hits, expected {expected}; agent log:\n{agent_log}\ncollector log tail:\n{}",
                    tail(&self.proc.log(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running agent.
pub(crate) struct Agent {
    pub(crate) proc: Proc,
    pub(crate) health: SocketAddr,
    /// The `ready` log line (listener addresses, `off` for those not running).
    pub(crate) ready: Value,
}

impl Agent {
    /// Starts `vantage-agent run` with `args` (plus JSON logs and a health port), the
    /// token in `VANTAGE_AGENT_TOKEN`. The local OTLP receivers are off unless `args`
    /// name them (their default ports would collide between tests running at once).
    pub(crate) fn start(args: &[&str], token: &str) -> Agent {
        Agent::start_command(Command::new(agent_bin()), args, token)
    }

    /// [`Agent::start`] with its state on `disk` (the state directory must be the disk's).
    pub(crate) fn start_on_small_disk(disk: &SmallDisk, args: &[&str], token: &str) -> Agent {
        Agent::start_command(disk.in_namespace(agent_bin()), args, token)
    }

    /// [`Agent::start`] through `c`, a command that runs the agent binary.
    fn start_command(mut c: Command, args: &[&str], token: &str) -> Agent {
        c.arg("run")
            .args(args)
            .args(["--log-format", "json", "--health-listen", "127.0.0.1:0"])
            .env("VANTAGE_AGENT_TOKEN", token)
            .env("VANTAGE_AGENT_LOG", "info");
        for flag in ["--otlp-grpc-listen", "--otlp-http-listen"] {
            if !args.contains(&flag) {
                c.args([flag, "off"]);
            }
        }
        let (proc, ready) = Proc::spawn(c);
        let health = ready["health"].as_str().unwrap().parse().unwrap();
        Agent {
            proc,
            health,
            ready,
        }
    }

    /// The bound address of the local OTLP/gRPC (`"otlp_grpc"`) or HTTP (`"otlp_http"`)
    /// receiver.
    pub(crate) fn listener(&self, key: &str) -> SocketAddr {
        self.ready[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the ready line: {}", self.ready))
    }

    /// The counters of `/healthz`.
    pub(crate) async fn stats(&self) -> Value {
        let body = http_get(&format!("http://{}/healthz", self.health), None).await;
        let v: Value = serde_json::from_slice(&body).expect("healthz JSON");
        assert_eq!(v["status"], "ok");
        v["stats"].clone()
    }

    pub(crate) async fn stat(&self, name: &str) -> u64 {
        self.stats().await[name].as_u64().unwrap_or(0)
    }

    /// Waits until counter `name` reaches at least `min`.
    pub(crate) async fn wait_stat(&self, name: &str, min: u64) {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let v = self.stat(name).await;
            if v >= min {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{name} = {v}, expected >= {min}; agent log:\n{}",
                    self.proc.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A GET over a fresh connection; panics unless 200.
pub(crate) async fn http_get(url: &str, token: Option<&str>) -> Bytes {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "GET {url}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// `n` lines of 1,024 pseudo-random hex digits (xorshift from `seed`): text that does not
/// compress much.
pub(crate) fn noise(seed: u64, n: usize) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect()
        })
        .collect()
}

/// A free 127.0.0.1 port (bound then released) below the kernel's ephemeral range.
/// Tests keep these ports across a collector's restart, and a port from the ephemeral
/// range can be handed to any `bind(0)` in between: CI once saw the agent's own health
/// listener take the stopped collector's port, and the agent export to itself.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    let span = u64::from(ephemeral_start.saturating_sub(LOWEST).max(1));
    // Parallel tests (and test binaries) start their search at different points.
    let start = u64::from(std::process::id()) * 7_919 + NEXT.fetch_add(389, Ordering::Relaxed);
    (0..span)
        .map(|i| LOWEST + ((start + i) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
}

/// An agent config tailing `glob` from the beginning, host metrics off, short rotate
/// wait so tests do not idle.
pub(crate) fn write_config(
    dir: &Path,
    glob: &str,
    state: &Path,
    collector: &str,
    extra_input: &str,
) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {}\nexporter:\n  endpoint: {collector}\n  retry_initial_backoff: 100ms\n  retry_max_backoff: 1s\nfiles:\n  poll_interval: 200ms\n  rotate_wait: 2s\n  inputs:\n    - include: [\"{glob}\"]\n      start_at: beginning\n{extra_input}host_metrics:\n  enabled: false\n",
            state.display()
        ),
    )
    .unwrap();
    path
}

/// Appends `lines` to `path` (created if missing), one write per line.
pub(crate) fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

/// A PromQL instant query against the collector; the `data.result` array.
pub(crate) async fn promql(collector: &Collector, query: &str) -> Vec<Value> {
    let q = serde_urlencoded::to_string([("query", query)]).unwrap();
    let url = format!("http://{}/api/v1/query?{q}", collector.api);
    let body: Value =
        serde_json::from_slice(&http_get(&url, Some(&collector.token)).await).unwrap();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `query` returns at least one series; returns the result.
pub(crate) async fn wait_promql(collector: &Collector, query: &str, agent: &Agent) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let result = promql(collector, query).await;
        if !result.is_empty() {
            return result;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{query}: no series; agent log:\n{}\ncollector log tail:\n{}",
                agent.proc.log(),
                tail(&collector.proc.log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A POST over a fresh connection; status, headers and body, whatever the status.
pub(crate) async fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}
