//! A real Prometheus for the compliance tests: the reference that Vantage's PromQL must
//! agree with. It runs from the Debian package (`make test-deps` installs it) on a free
//! 127.0.0.1 port, a temporary data directory and an empty scrape configuration, so it
//! holds exactly the samples a test gives it; it is killed when dropped.
//!
//! Data goes in by backfill: `promtool tsdb create-blocks-from openmetrics` writes
//! persistent blocks into the data directory before Prometheus starts. Remote write
//! would go through Prometheus's head, which refuses samples older than about an hour
//! before its newest one and out-of-order samples, so hours of history could not be
//! loaded that way; blocks present at start are always opened and queried.
//!
//! Also here: running `promtool query ...` against any server, and a tiny HTTP proxy
//! that adds an `Authorization` header, because promtool 2.42 can send headers only on
//! `query range` (no `--http.config.file` yet) and Vantage wants a bearer token.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Reply;

/// How long Prometheus may take from spawn to `/-/ready` (opening the blocks included).
pub(crate) const PROMETHEUS_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many fresh ports to try when the one picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// The bound on any one HTTP exchange or promtool run, so a hang fails the test.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `name` is an executable on `PATH`.
pub(crate) fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(name);
            candidate.is_file()
                && std::fs::metadata(&candidate).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt as _;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// Whether both `prometheus` and `promtool` are installed.
pub(crate) fn prometheus_installed() -> bool {
    on_path("prometheus") && on_path("promtool")
}

/// Decides whether a test that needs Prometheus runs: `true` when it is installed.
/// Without it, the test is skipped with a loud message on a developer machine, and
/// fails under CI (`CI` set), where `make test` installs it and its absence is a bug.
pub(crate) fn require_prometheus(test: &str) -> bool {
    if prometheus_installed() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: `prometheus` and `promtool` are not on PATH and CI is set; \
             `make test-deps` installs them (Debian package `prometheus`)"
        );
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests,
    // and a skip nobody sees is not loud.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPED {test}: `prometheus`/`promtool` are not installed.\n\
         !! Run `make test-deps` (apt-get install prometheus) to run it.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

/// A port that was free a moment ago (bound on :0 and released); the caller retries
/// when someone else takes it in between.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running Prometheus; killed when dropped, its data directory removed with it.
pub(crate) struct Prometheus {
    child: Child,
    /// Where its HTTP API listens.
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Prometheus {
    /// Backfills `openmetrics` (an OpenMetrics text ending in `# EOF`; each series'
    /// samples in time order) into a fresh data directory with promtool, then starts
    /// Prometheus on it and waits until it is ready.
    pub(crate) async fn start_with_openmetrics(openmetrics: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        let input = dir.path().join("backfill.om");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create the prometheus data dir");
        std::fs::write(&input, openmetrics).expect("write the openmetrics file");
        let out = tokio::process::Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&data)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(REQUEST_TIMEOUT, out)
            .await
            .expect("promtool backfill finishes within the timeout")
            .expect("run promtool tsdb create-blocks-from openmetrics");
        assert!(
            out.status.success(),
            "promtool backfill failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&input).expect("remove the openmetrics file");
        Self::start_on(dir, &[]).await
    }

    /// Starts an empty Prometheus that accepts remote write (`POST /api/v1/write`). Its
    /// head takes samples in time order and no older than about an hour before the
    /// newest it has, so history must arrive oldest first.
    pub(crate) async fn start_remote_write_receiver() -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        std::fs::create_dir_all(dir.path().join("data")).expect("create the data dir");
        Self::start_on(dir, &["--web.enable-remote-write-receiver"]).await
    }

    /// Starts Prometheus on `dir/data` with an empty scrape configuration.
    async fn start_on(dir: tempfile::TempDir, extra_args: &[&str]) -> Prometheus {
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "scrape_configs: []\n").expect("write prometheus.yml");
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match Self::spawn(&dir, &config, addr, extra_args).await {
                Ok((child, log)) => {
                    return Prometheus {
                        child,
                        addr,
                        log,
                        _dir: dir,
                        http: Client::builder(TokioExecutor::new()).build_http(),
                    };
                }
                Err((log, port_taken)) => {
                    last_log = log;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("prometheus did not start; its log:\n{last_log}");
    }

    /// One start attempt on `addr`; on failure, the log and whether the port was taken.
    async fn spawn(
        dir: &tempfile::TempDir,
        config: &Path,
        addr: SocketAddr,
        extra_args: &[&str],
    ) -> Result<(Child, Arc<Mutex<Vec<String>>>), (String, bool)> {
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // The data is hours old at most; the default 15 d keeps all of it, as Vantage.
            .arg("--storage.tsdb.retention.time=15d")
            .arg("--log.level=info")
            .args(extra_args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = log.clone();
            // Drains stderr for the whole life of the process so the pipe never fills.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let url = format!("http://{addr}/-/ready");
        let deadline = tokio::time::Instant::now() + PROMETHEUS_START_TIMEOUT;
        let joined = |log: &Arc<Mutex<Vec<String>>>| {
            log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Let the stderr thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let text = format!("exit {status}\n{}", joined(&log));
                let port_taken = text.contains("address already in use");
                return Err((text, port_taken));
            }
            let request = hyper::Request::get(&url)
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(2), client.request(request)).await
                && response.status() == StatusCode::OK
            {
                return Ok((child, log));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!(
                        "not ready within {PROMETHEUS_START_TIMEOUT:?}\n{}",
                        joined(&log)
                    ),
                    false,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its own log so far.
    pub(crate) fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// One HTTP request to its API; `path_and_query` starts with `/`.
    pub(crate) async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        http_request(
            &self.http,
            method,
            &format!("{}{path_and_query}", self.url()),
            headers,
            body.into(),
        )
        .await
    }
}

/// One bounded HTTP exchange, fully read.
pub(crate) async fn http_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body)).expect("valid request");
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("no answer to {url} within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("the body of {url} did not end within {REQUEST_TIMEOUT:?}"))
        .expect("read the response body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Runs `promtool query <args>` and returns its stdout, or its status and stderr as the
/// error (a failing query is a result to compare, not a test failure by itself).
pub(crate) async fn promtool_query(args: &[String]) -> Result<String, String> {
    let run = tokio::process::Command::new("promtool")
        .arg("query")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("promtool query {args:?} did not finish in time"))
        .expect("run promtool");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A local HTTP proxy that forwards every request to `upstream` with one header added
/// (an `Authorization`), so that tools which cannot send headers can talk to Vantage.
/// Stops when dropped.
pub(crate) struct HeaderProxy {
    /// Where the proxy listens.
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeaderProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeaderProxy {
    /// Starts a proxy on 127.0.0.1:0 to `upstream` (`http://host:port`) adding
    /// `name: value` to every request.
    pub(crate) async fn start(upstream: String, name: &'static str, value: String) -> HeaderProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let state = Arc::new((client, upstream, name, value));
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                let (client, upstream, name, value) = &*state;
                let (parts, body) = request.into_parts();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".to_string());
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut headers: Vec<(String, String)> = parts
                    .headers
                    .iter()
                    .filter(|(n, _)| *n != hyper::header::HOST)
                    .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                headers.push((name.to_string(), value.clone()));
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let reply = http_request(
                    client,
                    parts.method,
                    &format!("{upstream}{path}"),
                    &headers,
                    body,
                )
                .await;
                let mut response =
                    axum::response::Response::new(axum::body::Body::from(reply.body));
                *response.status_mut() = reply.status;
                for (n, v) in &reply.headers {
                    if n != hyper::header::CONTENT_LENGTH && n != hyper::header::TRANSFER_ENCODING {
                        response.headers_mut().append(n, v.clone());
                    }
                }
                response
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HeaderProxy { addr, task }
    }

    /// Its base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
