//! The servers a benchmark starts (the collector, the agent, Prometheus, node_exporter),
//! held so that none outlives the benchmark.
//!
//! A benchmark that fails half-way returns with `?`; a server it started and did not
//! stop would keep running, and the next run would measure next to it on the same
//! cores. So every child here is killed (SIGKILL) and reaped when its handle is dropped,
//! unless it was stopped first. [`ReadyProcess`] adds what the Vantage binaries share:
//! JSON logs on stderr, drained for the life of the process, and a `ready` line that
//! carries the addresses they bound.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Log lines printed before `ready` that a failed start quotes: enough for the error
/// that stopped it (a bad flag, a port in use), not a whole replay log.
const LOG_LINES_KEPT_BEFORE_READY: usize = 20;

/// Why a child could not be started, did not get ready, or could not be stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be executed (not built, wrong path).
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program as given.
        program: PathBuf,
        /// What `exec` said.
        #[source]
        source: std::io::Error,
    },
    /// The process closed its stderr (exited) before its `ready` line.
    #[error("{name} exited before it was ready{}", quoted(log))]
    ExitedBeforeReady {
        /// The process's name in messages.
        name: String,
        /// Its last log lines.
        log: Vec<String>,
    },
    /// No `ready` line within the time allowed.
    #[error("{name} printed no ready line within {timeout:?}{}", quoted(log))]
    NotReady {
        /// The process's name in messages.
        name: String,
        /// The time allowed.
        timeout: Duration,
        /// Its last log lines.
        log: Vec<String>,
    },
    /// The `ready` line has no such address, or not one that parses.
    #[error("no {key} address in the ready line of {name}: {ready}")]
    Address {
        /// The process's name in messages.
        name: String,
        /// The field of the ready line.
        key: String,
        /// The whole ready line.
        ready: Value,
    },
    /// Signalling or waiting for the process failed.
    #[error("cannot stop {name}")]
    Stop {
        /// The process's name in messages.
        name: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

fn quoted(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; its last log lines:\n{}", log.join("\n"))
    }
}

/// A child process that is killed and reaped when dropped, unless stopped first: the
/// guarantee that a failed benchmark leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Takes charge of `child`; `name` names it in errors.
    pub fn new(child: Child, name: &str) -> ChildGuard {
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }

    /// The process id, for `/proc` (see [`crate::procfs`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited: readiness loops that poll a server
    /// check it to fail at once instead of at their deadline.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGTERM, then wait as long as it takes: a graceful stop, after which the data
    /// directory holds what the server commits and merges on shutdown.
    pub fn stop(mut self) -> Result<(), ProcessError> {
        self.terminate()?;
        self.child
            .wait()
            .map_err(|source| self.stop_error(source))?;
        Ok(())
    }

    /// SIGTERM, then wait up to `grace`; a process still running then is killed (when
    /// `self` drops). For runs whose figures are taken before the stop.
    pub fn stop_within(mut self, grace: Duration) {
        let _ = self.terminate();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL and wait: a crash, no shutdown code runs.
    pub fn kill(mut self) -> Result<(), ProcessError> {
        self.child
            .kill()
            .map_err(|source| self.stop_error(source))?;
        self.child
            .wait()
            .map_err(|source| self.stop_error(source))?;
        Ok(())
    }

    /// Sends SIGTERM. Through `kill(1)`: std only sends SIGKILL, and this crate has no
    /// unsafe code for `libc::kill`. The child is not reaped yet, so its pid is still
    /// its own.
    fn terminate(&mut self) -> Result<(), ProcessError> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|source| self.stop_error(source))?;
        Ok(())
    }

    fn stop_error(&self, source: std::io::Error) -> ProcessError {
        ProcessError::Stop {
            name: self.name.clone(),
            source,
        }
    }
}

impl Drop for ChildGuard {
    /// SIGKILL, not SIGTERM: a benchmark that got here without stopping its server
    /// failed, has nothing to save, and must not wait on a shutdown that may hang.
    /// Killing an already reaped child is a no-op in std, never a signal to a reused pid.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which lines of a server's log the benchmark prints on its own stderr (the log is
/// always read, so the pipe never fills). Each benchmark keeps the echo it always had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEcho {
    /// None: runs that overload the server on purpose would print its refusals by the
    /// thousand.
    Quiet,
    /// WARN and ERROR lines after the `ready` line, as `<name>: <line>`.
    Warnings,
    /// WARN and ERROR lines and lines that are not JSON (a panic's message), from the
    /// start, as `[<name>] <line>`.
    WarningsAndPanics,
}

impl LogEcho {
    fn print(self, name: &str, line: &str, json: Option<&Value>, after_ready: bool) {
        let problem = json.is_some_and(|v| v["level"] == "WARN" || v["level"] == "ERROR");
        match self {
            LogEcho::Quiet => {}
            LogEcho::Warnings if problem && after_ready => eprintln!("{name}: {line}"),
            LogEcho::Warnings => {}
            LogEcho::WarningsAndPanics if problem || json.is_none() => {
                eprintln!("[{name}] {line}")
            }
            LogEcho::WarningsAndPanics => {}
        }
    }
}

/// A Vantage binary started with JSON logs on stderr, past its `ready` line; killed and
/// reaped when dropped (see [`ChildGuard`]).
#[derive(Debug)]
pub struct ReadyProcess {
    guard: ChildGuard,
    ready: Value,
    ready_after: Duration,
}

impl ReadyProcess {
    /// Spawns `command` (stdin and stdout on /dev/null, stderr read here) and waits up to
    /// `timeout` for its `ready` line; `name` names it in errors and echoed lines. The
    /// log is drained on a thread for the life of the process.
    pub fn spawn(
        mut command: Command,
        name: &str,
        echo: LogEcho,
        timeout: Duration,
    ) -> Result<ReadyProcess, ProcessError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: PathBuf::from(command.get_program()),
            source,
        })?;
        let stderr = child.stderr.take();
        let guard = ChildGuard::new(child, name);
        let before_ready = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        match stderr {
            Some(stderr) => {
                let (name, before_ready) = (name.to_string(), before_ready.clone());
                std::thread::spawn(move || read_log(stderr, &name, echo, ready_tx, &before_ready));
            }
            // Not with a piped stderr; would read as an exit before ready.
            None => drop(ready_tx),
        }
        let log = || -> Vec<String> {
            let lines = before_ready.lock().unwrap_or_else(PoisonError::into_inner);
            lines.iter().cloned().collect()
        };
        let ready = match ready_rx.recv_timeout(timeout) {
            Ok(ready) => ready,
            // The reader ends (dropping the sender) when the log closes.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ProcessError::ExitedBeforeReady {
                    name: name.to_string(),
                    log: log(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(ProcessError::NotReady {
                    name: name.to_string(),
                    timeout,
                    log: log(),
                });
            }
        };
        Ok(ReadyProcess {
            guard,
            ready,
            ready_after: started.elapsed(),
        })
    }

    /// The process id, for `/proc` (see [`crate::procfs`]).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The address the `ready` line gives under `key` (`"api"`, `"health"`, ...): the
    /// port really bound when the process was told to listen on port 0.
    pub fn addr(&self, key: &str) -> Result<SocketAddr, ProcessError> {
        self.ready[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ProcessError::Address {
                name: self.guard.name.clone(),
                key: key.to_string(),
                ready: self.ready.clone(),
            })
    }

    /// Wall time from spawn to the `ready` line: start-up (or, on a kept data
    /// directory, recovery) time.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// See [`ChildGuard::stop`].
    pub fn stop(self) -> Result<(), ProcessError> {
        self.guard.stop()
    }

    /// See [`ChildGuard::stop_within`].
    pub fn stop_within(self, grace: Duration) {
        self.guard.stop_within(grace)
    }

    /// See [`ChildGuard::kill`].
    pub fn kill(self) -> Result<(), ProcessError> {
        self.guard.kill()
    }
}

/// Reads the log to its end: sends the `ready` line, keeps the last lines before it for
/// a failed start's error, echoes what `echo` asks for. Bytes that are not UTF-8 are
/// replaced, not a reason to stop reading: a pipe nobody reads blocks the server.
fn read_log(
    stderr: ChildStderr,
    name: &str,
    echo: LogEcho,
    ready_tx: mpsc::SyncSender<Value>,
    before_ready: &Mutex<VecDeque<String>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    let mut ready_tx = Some(ready_tx);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        let json = serde_json::from_str::<Value>(line).ok();
        if let Some(tx) = &ready_tx {
            match &json {
                Some(ready) if ready["message"] == "ready" => {
                    let _ = tx.send(ready.clone());
                    ready_tx = None;
                    continue;
                }
                _ => {
                    let mut kept = before_ready.lock().unwrap_or_else(PoisonError::into_inner);
                    if kept.len() == LOG_LINES_KEPT_BEFORE_READY {
                        kept.pop_front();
                    }
                    kept.push_back(line.to_string());
                }
            }
        }
        echo.print(name, line, json.as_ref(), ready_tx.is_none());
    }
}

/// Removes every `VANTAGE_*` variable of this process's environment from `command`'s, so
/// a setting left in the shell cannot change what a run measures.
pub fn remove_vantage_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VANTAGE_") {
            command.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const QUICK: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn the_ready_line_gives_the_addresses_and_dropping_kills() {
        let process = ReadyProcess::spawn(
            sh(r#"echo starting >&2; echo '{"message":"ready","api":"127.0.0.1:4318"}' >&2; exec sleep 30"#),
            "server",
            LogEcho::Quiet,
            QUICK,
        )
        .unwrap();
        assert_eq!(
            process.addr("api").unwrap(),
            "127.0.0.1:4318".parse().unwrap()
        );
        assert!(matches!(
            process.addr("health"),
            Err(ProcessError::Address { .. })
        ));
        let pid = process.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(process);
        // Killed and reaped: the pid is gone (unless already reused, which takes a
        // full turn of the pid space).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn an_exit_before_ready_quotes_the_log() {
        let err = ReadyProcess::spawn(
            sh("echo 'error: unexpected argument' >&2; exit 2"),
            "server",
            LogEcho::Quiet,
            QUICK,
        )
        .unwrap_err();
        match err {
            ProcessError::ExitedBeforeReady { log, .. } => {
                assert_eq!(log, ["error: unexpected argument"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_ready_line_in_time_is_an_error() {
        let started = Instant::now();
        let err = ReadyProcess::spawn(
            sh("exec sleep 30"),
            "server",
            LogEcho::Quiet,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, ProcessError::NotReady { .. }), "{err:?}");
        assert!(started.elapsed() < QUICK);
    }

    #[test]
    fn stop_waits_for_the_exit() {
        let process = ReadyProcess::spawn(
            sh(r#"echo '{"message":"ready"}' >&2; exec sleep 30"#),
            "server",
            LogEcho::Quiet,
            QUICK,
        )
        .unwrap();
        let pid = process.pid();
        process.stop().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
