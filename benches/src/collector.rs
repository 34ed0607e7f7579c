//! The release collector as the end-to-end benchmarks run it: on a data directory of
//! their own (fresh unless told otherwise), on ephemeral 127.0.0.1 ports, with JSON
//! logs; its real addresses come from its `ready` line and its admin key from the
//! `initial-admin.txt` its first start writes. One launcher, so every benchmark starts
//! the collector the same way and none leaves one running when it fails half-way
//! (the [`Collector`] is killed when dropped).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use vantage_benches::collector::Collector;
//!
//! let c = Collector::builder("target/release/vantage-collector", "target/bench/data")
//!     .env("VANTAGE_LOGS__INDEXING_THREADS", "2")
//!     .start()?;
//! println!("OTLP/gRPC at {}, pid {}", c.grpc_url(), c.pid());
//! c.stop()?;
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use vantage_collector::auth::INITIAL_ADMIN_FILE;

use crate::process::{LogEcho, ProcessError, ReadyProcess, remove_vantage_env};

/// How long a collector may take from spawn to its `ready` line. A fresh one is ready
/// in well under a second; a restart replays its WAL first (the metrics crash phase),
/// seconds on a loaded 2-core machine. Ten minutes only bounds a start that hangs.
pub const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Every listener on an ephemeral loopback port: runs never collide with each other or
/// with a collector someone else runs, and the ports used are read from `ready`.
const EPHEMERAL: &str = "127.0.0.1:0";

/// Why a collector could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// Spawning it, its `ready` line or its addresses.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The admin key file could not be read after `ready`.
    #[error("cannot read the admin key from {}", path.display())]
    AdminKeyFile {
        /// `<data-dir>/initial-admin.txt`.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The admin key file has no `api_key:` line.
    #[error("no api_key in {}", path.display())]
    NoAdminKey {
        /// `<data-dir>/initial-admin.txt`.
        path: PathBuf,
    },
}

/// How to start a collector; [`Collector::builder`] makes one, [`CollectorBuilder::start`]
/// starts it.
#[derive(Debug)]
#[must_use = "a builder does nothing until start() is called"]
pub struct CollectorBuilder {
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    auth: bool,
    fresh: bool,
    isolated_env: bool,
    echo: LogEcho,
    ready_timeout: Duration,
}

impl CollectorBuilder {
    /// One more command-line argument, after the data dir, listener and log flags (a
    /// config file such as `--alertmanager-config`, then its path).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// One setting through its environment variable, e.g.
    /// `("VANTAGE_LOGS__INDEXING_THREADS", "2")`: what a benchmark varies.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts it with `--insecure-no-auth`: no admin key is read and
    /// [`Collector::token`] is `None` (the A/B of what authentication costs).
    pub fn insecure_no_auth(mut self) -> Self {
        self.auth = false;
        self
    }

    /// Starts it on the data directory as it is, instead of deleting it first: a
    /// restart, to measure recovery.
    pub fn keep_data_dir(mut self) -> Self {
        self.fresh = false;
        self
    }

    /// Leaves this process's `VANTAGE_*` variables out of the collector's environment
    /// (only [`CollectorBuilder::env`] settings apply); by default it inherits them, so
    /// a setting can be tried from the shell.
    pub fn isolated_env(mut self) -> Self {
        self.isolated_env = true;
        self
    }

    /// Which of the collector's log lines to print (default: none).
    pub fn log_echo(mut self, echo: LogEcho) -> Self {
        self.echo = echo;
        self
    }

    /// How long to wait for `ready` (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Prepares the data directory, starts the collector and waits for its `ready`
    /// line; reads the admin key unless started with `--insecure-no-auth`. On any
    /// error the process is already killed.
    pub fn start(self) -> Result<Collector, CollectorError> {
        if self.fresh {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        std::fs::create_dir_all(&self.data_dir).map_err(|source| CollectorError::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--otlp-grpc", EPHEMERAL, "--otlp-http", EPHEMERAL])
            .args(["--api", EPHEMERAL, "--log-format", "json"]);
        if !self.auth {
            command.arg("--insecure-no-auth");
        }
        command.args(&self.args);
        if self.isolated_env {
            remove_vantage_env(&mut command);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process = ReadyProcess::spawn(command, "collector", self.echo, self.ready_timeout)?;
        let otlp_grpc = process.addr("otlp_grpc")?;
        let otlp_http = process.addr("otlp_http")?;
        let api = process.addr("api")?;
        let token = if self.auth {
            Some(read_admin_key(&self.data_dir)?)
        } else {
            None
        };
        Ok(Collector {
            process,
            otlp_grpc,
            otlp_http,
            api,
            token,
            data_dir: self.data_dir,
        })
    }
}

/// The admin key the collector's first start wrote to `<data_dir>/initial-admin.txt`
/// (a restart on the same directory finds it there too).
fn read_admin_key(data_dir: &Path) -> Result<String, CollectorError> {
    let path = data_dir.join(INITIAL_ADMIN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| CollectorError::AdminKeyFile {
        path: path.clone(),
        source,
    })?;
    admin_key_of(&text)
        .map(str::to_string)
        .ok_or(CollectorError::NoAdminKey { path })
}

/// The key of the `api_key: ` line of an `initial-admin.txt`.
fn admin_key_of(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("api_key: "))
        .map(str::trim)
}

/// A running collector started by [`CollectorBuilder::start`]: its addresses, admin key
/// and process. Killed (SIGKILL) and reaped when dropped without [`Collector::stop`], so
/// a benchmark that fails half-way leaves no collector running.
#[derive(Debug)]
pub struct Collector {
    process: ReadyProcess,
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
    api: SocketAddr,
    token: Option<String>,
    data_dir: PathBuf,
}

impl Collector {
    /// How to start the collector `binary` (a release build) on `data_dir`; the
    /// defaults: authentication on, the directory deleted first, the environment
    /// inherited, the log not echoed.
    pub fn builder(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> CollectorBuilder {
        CollectorBuilder {
            binary: binary.into(),
            data_dir: data_dir.into(),
            args: Vec::new(),
            env: Vec::new(),
            auth: true,
            fresh: true,
            isolated_env: false,
            echo: LogEcho::Quiet,
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// The process id, for its CPU time and memory in `/proc` (see [`crate::procfs`]).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The OTLP/gRPC listener it bound.
    pub fn otlp_grpc(&self) -> SocketAddr {
        self.otlp_grpc
    }

    /// The OTLP/gRPC endpoint as a URL (`http://127.0.0.1:<port>`), as gRPC clients and
    /// `vantage-loadgen --endpoint` take it.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }

    /// The OTLP/HTTP listener it bound.
    pub fn otlp_http(&self) -> SocketAddr {
        self.otlp_http
    }

    /// The API listener it bound (search, `/metrics`, Alertmanager, OpAMP).
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// The API as a base URL (`http://127.0.0.1:<port>`), for HTTP clients.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The admin key of tenant `default`, for `Authorization: Bearer`; `None` when
    /// started with `--insecure-no-auth`.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A GET on its API with the admin key, over a fresh HTTP/1.1 connection (as a
    /// dashboard's first call): the status and the body, de-chunked. Hand-written, so a
    /// loopback GET in a benchmark needs no HTTP client stack in the measured numbers.
    pub fn get(&self, path_and_query: &str) -> anyhow::Result<(u16, String)> {
        let addr = self.api;
        let mut stream = TcpStream::connect(addr)?;
        write!(
            stream,
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token().unwrap_or_default()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }

    /// The data directory it runs on, to measure (and delete) after the stop.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Wall time from spawn to `ready`: start-up, or WAL replay on a kept data directory.
    pub fn ready_after(&self) -> Duration {
        self.process.ready_after()
    }

    /// SIGTERM and wait as long as it takes: a graceful stop commits, flushes and
    /// finishes merges, so the data directory then holds what stays on disk.
    pub fn stop(self) -> Result<(), ProcessError> {
        self.process.stop()
    }

    /// SIGTERM, then wait up to `grace`; killed if still running then.
    pub fn stop_within(self, grace: Duration) {
        self.process.stop_within(grace)
    }

    /// SIGKILL and wait: a crash, to measure recovery on restart.
    pub fn kill(self) -> Result<(), ProcessError> {
        self.process.kill()
    }
}

/// Status and body of a whole HTTP/1.1 response (the connection closed after it).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no HTTP status")?
        .parse()
        .context("HTTP status is not a number")?;
    let body = &raw[end + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Undoes `Transfer-Encoding: chunked` on bytes (chunk sizes count bytes, not
/// characters); stops at the last chunk or at anything malformed.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).unwrap_or("");
        // Chunk extensions (`1a;name=value`) are allowed and ignored.
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, "{}".to_string()));
        // "é" is two bytes: chunk sizes are bytes.
        let chunked = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4;x=y\r\n{\"é\r\n3\r\n\": \r\n3\r\n1}\n\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked.as_bytes()).unwrap(),
            (400, "{\"é\": 1}\n".to_string())
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n").is_err(),
            "no header end"
        );
        assert!(parse_response(b"garbage\r\n\r\n").is_err(), "no status");
    }

    #[test]
    fn malformed_chunks_stop_the_body_instead_of_panicking() {
        assert_eq!(dechunk(b"zz\r\nabc"), b"");
        assert_eq!(dechunk(b"5\r\nab"), b"", "chunk cut short");
        assert_eq!(dechunk(b"2\r\nab\r\nq\r\n"), b"ab");
        assert_eq!(dechunk(b""), b"");
    }

    #[test]
    fn the_admin_key_is_the_api_key_line() {
        let text = "tenant: default\napi_key: vtk_abc123 \n";
        assert_eq!(admin_key_of(text), Some("vtk_abc123"));
        assert_eq!(admin_key_of("tenant: default\n"), None);
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_and_the_data_dir_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("stale"), b"x").unwrap();
        let err = Collector::builder(dir.path().join("no-such-collector"), &data)
            .start()
            .unwrap_err();
        assert!(
            matches!(err, CollectorError::Process(ProcessError::Spawn { .. })),
            "{err:?}"
        );
        assert!(data.is_dir() && !data.join("stale").exists());
    }
}
