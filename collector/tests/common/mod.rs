//! The harness of the end-to-end tests: starts the real `vantage-collector` binary on
//! ephemeral 127.0.0.1 ports, talks to it over real sockets (hyper for HTTP, tonic for
//! gRPC), builds OTLP payloads, and waits for conditions with deadlines instead of
//! sleeping.
//!
//! Authentication is on, as it is by default: after the `ready` line the harness reads the
//! admin key the first start wrote to `<data-dir>/initial-admin.txt`, and every HTTP
//! request, tail and gRPC client it makes carries `authorization: Bearer <that key>`
//! unless the caller says otherwise.
//!
//! Every test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod prometheus;
mod small_disk;

pub(crate) use small_disk::SmallDisk;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use vantage_proto::otlp::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vantage_proto::otlp::resource::v1::Resource;

/// How long the collector may take from spawn to its `ready` line (WAL replay included).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an acknowledged record may take to become searchable before a test fails.
/// The promise is ~1-2 s; the margin absorbs a loaded 2-core machine.
pub(crate) const SEARCHABLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped collector may take to exit.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The file in the data directory where the first start writes the admin key.
pub(crate) const INITIAL_ADMIN_FILE: &str = "initial-admin.txt";

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// `words` pseudo-random 16-hex-digit words from `seed` (xorshift), space-separated:
/// distinct per seed and close to incompressible, so a few records fill a small disk.
pub(crate) fn incompressible_words(seed: u64, words: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let words: Vec<String> = (0..words)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect();
    words.join(" ")
}

/// The path of a binary of this package, built by cargo for the integration tests.
pub(crate) fn collector_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vantage-collector")
}

/// The `vantage` CLI.
pub(crate) fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vantage")
}

/// The addresses a running collector reported in its `ready` line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addrs {
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) api: SocketAddr,
}

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as text (lossy), for messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The value of an `Authorization` header carrying `token`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Puts one fixed `authorization` value on every gRPC request, or nothing.
#[derive(Clone, Debug)]
pub(crate) struct Authorization(Option<MetadataValue<Ascii>>);

impl Interceptor for Authorization {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC channel whose requests carry an `authorization` value (see [`Authorization`]).
pub(crate) type GrpcChannel = InterceptedService<Channel, Authorization>;
/// The OTLP logs client the tests use.
pub(crate) type LogsClient = LogsServiceClient<GrpcChannel>;

/// Starts collectors with settings; `VANTAGE_*` environment variables are the config.
#[derive(Debug, Default)]
pub(crate) struct CollectorBuilder {
    env: Vec<(String, String)>,
    insecure_no_auth: bool,
    /// `--config FILE`; the file then sets the listen addresses (no `--otlp-*`/`--api`).
    config_file: Option<PathBuf>,
    /// The process holding the mount namespace of a [`SmallDisk`] to start in.
    small_disk: Option<u32>,
}

impl CollectorBuilder {
    /// Sets one configuration key through its environment variable, e.g.
    /// `("VANTAGE_INGEST__MAX_REQUEST_BYTES", "1024")`.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts with `--insecure-no-auth`: no credential is needed and none is sent.
    pub(crate) fn insecure_no_auth(mut self) -> Self {
        self.insecure_no_auth = true;
        self
    }

    /// Runs the collector on `disk` (its data directory must be the disk's directory).
    pub(crate) fn on_small_disk(mut self, disk: &SmallDisk) -> Self {
        self.small_disk = Some(disk.holder_pid());
        self
    }

    /// Starts a collector on `data_dir` and waits for its `ready` line.
    pub(crate) fn start(&self, data_dir: &Path) -> Collector {
        self.try_start(data_dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`CollectorBuilder::start`], returning the exit status and log instead of
    /// panicking when the collector does not get to `ready`.
    pub(crate) fn try_start(&self, data_dir: &Path) -> Result<Collector, String> {
        let mut command = match &self.small_disk {
            None => Command::new(collector_bin()),
            Some(holder) => small_disk::in_namespace_of(*holder, collector_bin()),
        };
        command.arg("--data-dir").arg(data_dir);
        match &self.config_file {
            Some(file) => command.arg("--config").arg(file),
            None => command
                .args(["--otlp-grpc", "127.0.0.1:0"])
                .args(["--otlp-http", "127.0.0.1:0"])
                .args(["--api", "127.0.0.1:0"]),
        };
        command
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.insecure_no_auth {
            command.arg("--insecure-no-auth");
        }
        // The outer environment must not change what is being tested.
        for (key, _) in std::env::vars() {
            if key.starts_with("VANTAGE_") {
                command.env_remove(key);
            }
        }
        command.env("VANTAGE_LOG", "info");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", collector_bin()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let log = log.clone();
            // Drains stderr for the whole life of the process so the pipe never fills.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addrs) = parse_ready(&line) {
                        let _ = ready_tx.send(addrs);
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let addrs = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(addrs) => addrs,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let lines = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                return Err(format!(
                    "collector did not report ready ({e}); exit: {status:?}; its log:\n{lines}"
                ));
            }
        };
        let mut collector = Collector {
            child,
            addrs,
            log,
            data_dir: data_dir.to_path_buf(),
            token: None,
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        if !self.insecure_no_auth {
            collector.token = Some(collector.read_admin_key());
        }
        Ok(collector)
    }
}

/// The `api_key: ` line of an `initial-admin.txt`.
pub(crate) fn admin_key_of(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("api_key: "))
        .map(str::trim)
}

fn parse_ready(line: &str) -> Option<Addrs> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "ready" {
        return None;
    }
    let addr = |key: &str| v[key].as_str()?.parse::<SocketAddr>().ok();
    Some(Addrs {
        grpc: addr("otlp_grpc")?,
        http: addr("otlp_http")?,
        api: addr("api")?,
    })
}

/// A running `vantage-collector` process; killed when dropped.
pub(crate) struct Collector {
    child: Child,
    pub(crate) addrs: Addrs,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: PathBuf,
    /// The admin key of tenant `default`; `None` with `--insecure-no-auth`.
    token: Option<String>,
    http: HttpClient,
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Collector {
    /// Starts a collector with default settings on `data_dir`.
    pub(crate) fn start(data_dir: &Path) -> Collector {
        CollectorBuilder::default().start(data_dir)
    }

    /// Settings for the next start.
    pub(crate) fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }

    /// The collector's own log so far, one JSON object per line.
    pub(crate) fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The collector's own log lines whose `message` is `message`, parsed.
    pub(crate) fn log_events(&self, message: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory it runs on.
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin key of tenant `default` (from `initial-admin.txt`), which the harness
    /// sends unless told otherwise. Panics for a collector started with
    /// `--insecure-no-auth`, which has none.
    pub(crate) fn token(&self) -> &str {
        self.token
            .as_deref()
            .expect("a collector started with --insecure-no-auth has no token")
    }

    fn read_admin_key(&self) -> String {
        let path = self.data_dir.join(INITIAL_ADMIN_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} after ready ({e}); collector log:\n{}",
                path.display(),
                self.log()
            )
        });
        admin_key_of(&text)
            .unwrap_or_else(|| panic!("no api_key line in {}:\n{text}", path.display()))
            .to_string()
    }

    /// The `authorization` value the harness sends by default, if any.
    fn own_authorization(&self) -> Option<String> {
        self.token.as_deref().map(bearer)
    }

    /// `kill -9`: no shutdown code runs. Returns once the process is gone.
    pub(crate) fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL the collector");
        let status = self.child.wait().expect("reap the collector");
        assert!(!status.success(), "a SIGKILLed process cannot exit 0");
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status and log.
    pub(crate) async fn terminate(mut self) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the collector") {
                // Let the stderr thread take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status, self.log());
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "collector did not exit within {EXIT_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A gRPC logs client on a fresh connection, sending the harness's token.
    pub(crate) async fn logs_client(&self) -> LogsClient {
        LogsServiceClient::new(self.grpc_channel().await)
    }

    /// A gRPC logs client on a fresh connection whose requests carry `authorization`
    /// verbatim as metadata (`None`: no credential at all).
    pub(crate) async fn logs_client_with(&self, authorization: Option<&str>) -> LogsClient {
        LogsServiceClient::new(self.grpc_channel_with(authorization).await)
    }

    /// A gRPC channel sending the harness's token, for the metrics and trace clients.
    pub(crate) async fn grpc_channel(&self) -> GrpcChannel {
        let authorization = self.own_authorization();
        self.grpc_channel_with(authorization.as_deref()).await
    }

    /// A gRPC channel whose requests carry `authorization` verbatim (`None`: nothing).
    pub(crate) async fn grpc_channel_with(&self, authorization: Option<&str>) -> GrpcChannel {
        let channel = Channel::from_shared(format!("http://{}", self.addrs.grpc))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the OTLP/gRPC port");
        let value = authorization.map(|a| {
            a.parse()
                .unwrap_or_else(|e| panic!("{a:?} is not ASCII metadata: {e}"))
        });
        InterceptedService::new(channel, Authorization(value))
    }

    /// Sends one raw gRPC frame (flag 0, big-endian length, `message`, which need not be
    /// valid) to the logs Export method over HTTP/2, with `authorization` verbatim
    /// (`None`: no credential), and returns the grpc-status (from headers or trailers)
    /// and grpc-message.
    pub(crate) async fn raw_grpc_export(
        &self,
        authorization: Option<&str>,
        message: &[u8],
    ) -> (i32, String) {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        let mut request = hyper::Request::post(format!(
            "http://{}/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            self.addrs.grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = request
            .body(Full::new(Bytes::from(frame)))
            .expect("valid request");
        let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
            .await
            .expect("a gRPC answer within 60 s")
            .expect("an HTTP/2 answer");
        assert_eq!(response.status(), StatusCode::OK, "gRPC answers in-band");
        let headers = response.headers().clone();
        let collected =
            tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
                .await
                .expect("the gRPC body ends within 60 s")
                .expect("read the body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let get = |name: &str| {
            trailers
                .get(name)
                .or_else(|| headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = get("grpc-status")
            .expect("a grpc-status")
            .parse()
            .expect("a numeric grpc-status");
        (code, get("grpc-message").unwrap_or_default())
    }

    /// Exports logs over gRPC and asserts that every record was accepted.
    pub(crate) async fn export_ok(&self, request: ExportLogsServiceRequest) {
        let response = self
            .logs_client()
            .await
            .export(request)
            .await
            .unwrap_or_else(|s| panic!("export failed: {s:?}; log:\n{}", self.log()))
            .into_inner();
        assert!(
            response
                .partial_success
                .is_none_or(|p| p.rejected_log_records == 0),
            "no record may be rejected"
        );
    }

    /// One HTTP request carrying the harness's token, unless `headers` has an
    /// `authorization` of its own.
    pub(crate) async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let own = self.own_authorization();
        let headers = with_authorization(headers, own.as_deref());
        self.request_anonymous(method, url, &headers, body).await
    }

    /// One HTTP request with exactly `headers`: no credential unless one is among them.
    pub(crate) async fn request_anonymous(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.into())).expect("valid request");
        let response = tokio::time::timeout(Duration::from_secs(60), self.http.request(request))
            .await
            .unwrap_or_else(|_| panic!("no answer to {url} within 60 s"))
            .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}; log:\n{}", self.log()));
        let status = response.status();
        let headers = response.headers().clone();
        // Bounded too: an endpoint that should have refused but streams (a tail) would
        // otherwise hang the test.
        let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("the body of {url} ({status}) did not end within 60 s"))
            .expect("read the response body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Opens a live tail (`GET /api/v1/logs/tail`) with the harness's token and returns
    /// its streaming body once the response headers have arrived.
    pub(crate) async fn open_tail(&self, query: &str) -> hyper::body::Incoming {
        let own = self.own_authorization();
        self.open_tail_as(own.as_deref(), query).await
    }

    /// [`Collector::open_tail`] with `authorization` verbatim (`None`: no credential).
    pub(crate) async fn open_tail_as(
        &self,
        authorization: Option<&str>,
        query: &str,
    ) -> hyper::body::Incoming {
        let query = serde_urlencoded::to_string([("query", query)]).expect("encodable");
        let url = format!("http://{}/api/v1/logs/tail?{query}", self.addrs.api);
        let mut request = hyper::Request::get(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .expect("tail answers within 30 s")
            .expect("tail request");
        assert_eq!(response.status(), StatusCode::OK, "tail status");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "tail is server-sent events, got {content_type:?}"
        );
        response.into_body()
    }

    /// `POST` to the OTLP/HTTP port.
    pub(crate) async fn post_otlp(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let url = format!("http://{}{path}", self.addrs.http);
        self.request(Method::POST, &url, headers, body).await
    }

    /// `GET` on the query API; `path_and_query` starts with `/`.
    pub(crate) async fn api_get(&self, path_and_query: &str) -> Reply {
        self.api_request(Method::GET, path_and_query, &[], Bytes::new())
            .await
    }

    /// A request to the query API carrying the harness's token unless `headers` has an
    /// `authorization`; `path_and_query` starts with `/`.
    pub(crate) async fn api_request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let url = format!("http://{}{path_and_query}", self.addrs.api);
        self.request(method, &url, headers, body).await
    }

    /// Runs the `vantage` CLI against this collector's API (`--url` is added; the
    /// outer `VANTAGE_*` environment is not passed on) and returns its output.
    pub(crate) async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut command = tokio::process::Command::new(cli_bin());
        command
            .arg("--url")
            .arg(format!("http://{}", self.addrs.api))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("VANTAGE_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .unwrap_or_else(|_| panic!("vantage {args:?} did not finish within 30 s"))
            .expect("run the vantage CLI")
    }

    /// A log search with raw parameters.
    pub(crate) async fn search_raw(&self, params: &[(&str, &str)]) -> Reply {
        self.search_raw_with(params, &[]).await
    }

    /// A log search with raw parameters and extra headers (an `authorization` among them
    /// replaces the harness's token).
    pub(crate) async fn search_raw_with(
        &self,
        params: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let query = serde_urlencoded::to_string(params).expect("encodable parameters");
        let url = format!("http://{}/api/v1/logs/search?{query}", self.addrs.api);
        self.request(Method::GET, &url, headers, Bytes::new()).await
    }

    /// A log search that must succeed; returns the JSON answer.
    pub(crate) async fn search(&self, params: &[(&str, &str)]) -> Value {
        self.search_with(params, &[]).await
    }

    /// A log search with `token` instead of the harness's; must succeed.
    pub(crate) async fn search_as(&self, token: &str, params: &[(&str, &str)]) -> Value {
        self.search_with(params, &[("authorization", &bearer(token))])
            .await
    }

    async fn search_with(&self, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
        let reply = self.search_raw_with(params, headers).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "search {params:?} failed: {}",
            reply.text()
        );
        reply.json()
    }

    /// Polls a search until its `total` equals `expected`; returns that answer. Fails
    /// with the last answer and the collector's log at the deadline.
    pub(crate) async fn wait_for_total(&self, params: &[(&str, &str)], expected: u64) -> Value {
        self.wait_for_total_with(params, &[], expected, SEARCHABLE_TIMEOUT)
            .await
    }

    /// [`Collector::wait_for_total`] with its own deadline, for waits that are not a
    /// fresh record's (re-indexing everything after an index failure).
    pub(crate) async fn wait_for_total_within(
        &self,
        params: &[(&str, &str)],
        expected: u64,
        timeout: Duration,
    ) -> Value {
        self.wait_for_total_with(params, &[], expected, timeout)
            .await
    }

    /// [`Collector::wait_for_total`] searching with `token`.
    pub(crate) async fn wait_for_total_as(
        &self,
        token: &str,
        params: &[(&str, &str)],
        expected: u64,
    ) -> Value {
        let authorization = bearer(token);
        let headers = [("authorization", authorization.as_str())];
        self.wait_for_total_with(params, &headers, expected, SEARCHABLE_TIMEOUT)
            .await
    }

    async fn wait_for_total_with(
        &self,
        params: &[(&str, &str)],
        headers: &[(&str, &str)],
        expected: u64,
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let result = self.search_with(params, headers).await;
            if result["total"].as_u64() == Some(expected) {
                return result;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "search {params:?} did not reach total {expected} within {timeout:?}; last total {}; collector log:\n{}",
                    result["total"],
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `query` (searched over the default last hour) has `expected` hits.
    pub(crate) async fn wait_for_query(&self, query: &str, expected: u64) -> Value {
        self.wait_for_total(&[("query", query)], expected).await
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        let reply = self.api_get("/metrics").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.text()
    }

    /// Polls `/metrics` until the unlabelled series `name` is above `floor`; panics with
    /// the collector's log after [`SEARCHABLE_TIMEOUT`].
    pub(crate) async fn wait_for_metric_above(&self, name: &str, floor: f64) {
        if !self
            .metric_reaches(name, |v| v > floor, SEARCHABLE_TIMEOUT)
            .await
        {
            panic!(
                "{name} never went above {floor}:\n{}\n{}",
                self.metrics_text().await,
                self.log()
            );
        }
    }

    /// Polls `/metrics` for up to `timeout` until the unlabelled series `name` has a value
    /// `ok` accepts: whether it got there, for tests that act when it does not.
    pub(crate) async fn metric_reaches(
        &self,
        name: &str,
        ok: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.metrics_text().await;
            if metric_value(&text, name, &[]).is_some_and(&ok) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Proves the collector still works: a fresh record is acknowledged over gRPC and
    /// becomes searchable.
    pub(crate) async fn assert_still_serves(&self, tag: &str) {
        let marker = format!("canary-{tag}");
        self.export_ok(logs_request(
            "canary",
            vec![log_record("still serving", vec![kv_str("canary", &marker)])],
        ))
        .await;
        self.wait_for_query(&format!("attributes.canary:{marker}"), 1)
            .await;
    }
}

/// `headers` plus `authorization: <default>` when `headers` has no authorization and
/// there is a default.
fn with_authorization<'a>(
    headers: &[(&'a str, &'a str)],
    default: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    let has_own = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    if let Some(value) = default.filter(|_| !has_own) {
        all.push(("authorization", value));
    }
    all
}

/// Reads server-sent events from a tail until one carries `marker`, or fails at the
/// deadline. Returns every `data:` payload seen.
pub(crate) async fn read_tail_until(body: &mut hyper::body::Incoming, marker: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + SEARCHABLE_TIMEOUT;
    let mut pending = String::new();
    let mut events = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no tail event with {marker} in time; got {events:?}"))
            .expect("the tail stream stays open")
            .expect("a tail frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let mut name = "";
            let mut payload = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    payload.push_str(v.trim_start());
                }
            }
            if payload.is_empty() {
                continue; // keep-alive comment
            }
            assert_eq!(name, "log", "tail events are named log: {event}");
            let hit: Value = serde_json::from_str(&payload).expect("tail data is a JSON hit");
            let found = hit.to_string().contains(marker);
            events.push(hit);
            if found {
                return events;
            }
        }
    }
}

/// A value from the `/metrics` text: the sample named `name` whose labels include all of
/// `labels`; `None` if there is no such sample.
pub(crate) fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let pairs: Vec<(&str, &str)> = series_labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|want| pairs.contains(want))
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// A string value.
pub(crate) fn any_str(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// An int value.
pub(crate) fn any_int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

/// A double value.
pub(crate) fn any_double(d: f64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::DoubleValue(d)),
    }
}

/// A bool value.
pub(crate) fn any_bool(b: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(b)),
    }
}

/// A bytes value.
pub(crate) fn any_bytes(b: &[u8]) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BytesValue(b.to_vec())),
    }
}

/// An array value.
pub(crate) fn any_array(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
    }
}

/// A map value.
pub(crate) fn any_map(values: Vec<KeyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
    }
}

/// An attribute.
pub(crate) fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// A string attribute.
pub(crate) fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_str(value))
}

/// An int attribute.
pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_int(value))
}

/// An INFO record stamped one second ago with a string body.
pub(crate) fn log_record(body: &str, attributes: Vec<KeyValue>) -> LogRecord {
    let t = now_ns() - 1_000_000_000;
    LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: t,
        severity_number: 9,
        severity_text: "INFO".to_string(),
        body: Some(any_str(body)),
        attributes,
        ..Default::default()
    }
}

/// A request with one resource (`service.name` = `service`) and one scope ("e2e").
pub(crate) fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "e2e".to_string(),
                    version: "1.0.0".to_string(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Gzips bytes.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// Hits of a search answer.
pub(crate) fn hits(result: &Value) -> &Vec<Value> {
    result["hits"].as_array().expect("hits is an array")
}

impl CollectorBuilder {
    /// Starts with `--config file` instead of the listen flags: the file must set
    /// `listen.otlp_grpc`, `listen.otlp_http` and `listen.api` (port 0 is fine), so a
    /// test can change them and reload.
    pub(crate) fn config_file(mut self, file: &Path) -> Self {
        self.config_file = Some(file.to_path_buf());
        self
    }
}

impl Collector {
    /// Sends a signal (`"HUP"`, `"TERM"`) to the collector with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}
