//! `vantage-agent install`, `uninstall` and `status`: the agent as a systemd service
//! without a package manager.
//!
//! `install` lays out what the `.deb` lays out — the unit (the packaged one, with
//! `ExecStart` pointing at the installed binary), `/etc/vantage-agent/agent.yaml`
//! (mode 0600: it holds the token), the state directory, the service user — then runs
//! `systemctl daemon-reload` and `systemctl enable --now` when systemd is running, and
//! otherwise says what to run. Everything goes under `--root` (tests, image builds),
//! where users are not created and systemctl is not called. Running it again with the
//! same settings changes nothing; a config that differs from what it would write is
//! kept unless `--force`.
//!
//! `status` asks the running agent's `/healthz` (address from the config file) and
//! systemd, and prints the answer as text or JSON.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

/// The unit the package ships; `install` writes it with its own `ExecStart` binary.
pub(crate) const UNIT: &str = include_str!("../../packaging/systemd/vantage-agent.service");
/// The binary path written in the packaged unit.
const PACKAGED_BIN: &str = "/usr/bin/vantage-agent";
/// Service and unit name.
const SERVICE: &str = "vantage-agent";
/// Where `install` puts the binary when it is not already installed there (the
/// package's /usr/bin belongs to dpkg).
const DEFAULT_BIN: &str = "/usr/local/bin/vantage-agent";
/// The unit directory for locally installed units.
const UNIT_DIR: &str = "etc/systemd/system";
/// The configuration file of a service install.
pub(crate) const CONFIG_PATH: &str = "/etc/vantage-agent/agent.yaml";
/// How long `status` waits for the health endpoint.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Flags of `vantage-agent install`.
#[derive(Args, Debug)]
pub(crate) struct InstallArgs {
    /// Collector OTLP/gRPC endpoint, e.g. https://collector.example:4317.
    #[arg(long)]
    collector: String,
    /// Agent key for the collector (written to the 0600 config file). Prefer
    /// VANTAGE_AGENT_TOKEN: flags show in `ps`.
    #[arg(long, env = "VANTAGE_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// One-time enrollment token instead of a key: the agent trades it for its own key
    /// at first start.
    #[arg(long, env = "VANTAGE_AGENT_ENROLLMENT_TOKEN", hide_env_values = true)]
    enrollment_token: Option<String>,
    /// The collector's API URL for enrollment, e.g. https://collector.example:7070.
    #[arg(long)]
    enroll_url: Option<String>,
    /// Log files to tail (absolute globs, repeatable) [default: /var/log/*.log].
    #[arg(long = "tail", value_name = "GLOB")]
    tail: Vec<String>,
    /// Do not read the systemd journal.
    #[arg(long)]
    no_journald: bool,
    /// Prefix for every path written (image building, tests); no user is created and
    /// systemctl is not run.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Where the binary goes (copied from this one unless it is already there).
    #[arg(long, default_value = DEFAULT_BIN)]
    bin: PathBuf,
    /// Overwrite a configuration file that differs from the one install would write.
    #[arg(long)]
    force: bool,
    /// Write the files but neither enable nor start the service.
    #[arg(long)]
    no_start: bool,
}

/// Flags of `vantage-agent uninstall`.
#[derive(Args, Debug)]
pub(crate) struct UninstallArgs {
    /// The prefix given to install.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Also delete the configuration and the state directory (queue, checkpoints,
    /// enrolled key).
    #[arg(long)]
    purge: bool,
}

/// Flags of `vantage-agent status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The agent's configuration file, for its health address and collector.
    #[arg(long, short = 'c', default_value = CONFIG_PATH)]
    config: PathBuf,
    /// The health endpoint's address, overriding the configuration's.
    #[arg(long)]
    health: Option<SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What install or uninstall failed at, naming the path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} differs from what install would write; it was kept (use --force to overwrite it)")]
    ConfigChanged(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
    move |source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `root` joined with an absolute path.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// What a step did, for the summary.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Writes `data` to `path` with `mode` unless it already holds exactly that.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<Change, ServiceError> {
    let change = match std::fs::read(path) {
        Ok(old) if old == data => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io(path))?;
            return Ok(Change::Unchanged);
        }
        Ok(_) => Change::Updated,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::Created,
        Err(e) => return Err(io(path)(e)),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(change)
}

/// The unit with `ExecStart` on `bin`.
fn unit_for(bin: &Path) -> String {
    UNIT.replace(PACKAGED_BIN, &bin.display().to_string())
}

/// YAML double-quoted scalar (JSON strings are valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The configuration file install writes.
fn config_for(a: &InstallArgs) -> Result<String, ServiceError> {
    if !(a.collector.starts_with("http://") || a.collector.starts_with("https://")) {
        return Err(ServiceError::Invalid(format!(
            "--collector {:?} must be an http:// or https:// URL",
            a.collector
        )));
    }
    let mut out = String::from(
        "# Written by `vantage-agent install`; every key is described in the README.\n",
    );
    out.push_str("state_dir: /var/lib/vantage-agent\n");
    out.push_str(&format!(
        "exporter:\n  endpoint: {}\n",
        quoted(&a.collector)
    ));
    match (&a.token, &a.enrollment_token, &a.enroll_url) {
        (Some(t), None, _) if !t.is_empty() => {
            out.push_str(&format!("  token: {}\n", quoted(t)));
        }
        (None, Some(t), Some(url)) if !t.is_empty() => {
            out.push_str(&format!(
                "  enrollment_token: {}\n  enroll_url: {}\n",
                quoted(t),
                quoted(url)
            ));
        }
        (None, Some(_), None) => {
            return Err(ServiceError::Invalid(
                "--enrollment-token needs --enroll-url (the collector's API URL)".into(),
            ));
        }
        _ => {
            return Err(ServiceError::Invalid(
                "give exactly one of --token and --enrollment-token".into(),
            ));
        }
    }
    let globs = if a.tail.is_empty() {
        vec!["/var/log/*.log".to_string()]
    } else {
        a.tail.clone()
    };
    out.push_str("files:\n  inputs:\n    - include: [");
    out.push_str(
        &globs
            .iter()
            .map(|g| quoted(g))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str("]\n");
    if !a.no_journald {
        out.push_str("journald:\n  priority: info\n");
    }
    Ok(out)
}

/// Whether systemd is PID 1 here (sd_booted(3)'s test).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn run(cmd: &[&str]) -> Result<(), ServiceError> {
    let output =
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .map_err(|e| ServiceError::Command {
                command: cmd.join(" "),
                detail: e.to_string(),
            })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ServiceError::Command {
            command: cmd.join(" "),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Creates the system user (as the package's postinst does) when missing.
fn ensure_user() -> Result<(), ServiceError> {
    if Command::new("id")
        .arg(SERVICE)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    run(&[
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/var/lib/vantage-agent",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE,
    ])?;
    for group in ["adm", "systemd-journal"] {
        // Group membership is what grants read access to logs; a missing group is fine.
        let _ = run(&["usermod", "--append", "--groups", group, SERVICE]);
    }
    Ok(())
}

/// `vantage-agent install`.
pub(crate) fn install(a: &InstallArgs) -> ExitCode {
    match install_inner(a) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("install failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install_inner(a: &InstallArgs) -> Result<Vec<String>, ServiceError> {
    if !a.bin.is_absolute() {
        return Err(ServiceError::Invalid(format!(
            "--bin {} must be absolute",
            a.bin.display()
        )));
    }
    let config = config_for(a)?;
    let real_root = a.root == Path::new("/");
    let mut report = Vec::new();
    // The configuration first: a refusal must leave everything else untouched.
    let config_path = under(&a.root, CONFIG_PATH);
    match std::fs::read_to_string(&config_path) {
        Ok(old) if old != config && !a.force => {
            return Err(ServiceError::ConfigChanged(config_path));
        }
        _ => {}
    }
    if real_root {
        ensure_user()?;
    }
    let bin_path = under(&a.root, &a.bin.display().to_string());
    let me = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let same = std::fs::canonicalize(&bin_path).ok() == std::fs::canonicalize(&me).ok();
    if same {
        report.push(format!("binary      {} (in place)", bin_path.display()));
    } else {
        let data = std::fs::read(&me).map_err(io(&me))?;
        let c = write_file(&bin_path, &data, 0o755)?;
        report.push(format!("binary      {} {c}", bin_path.display()));
    }
    let c = write_file(&config_path, config.as_bytes(), 0o600)?;
    report.push(format!(
        "config      {} {c} (mode 0600)",
        config_path.display()
    ));
    let state = under(&a.root, crate::config::DEFAULT_STATE_DIR);
    std::fs::create_dir_all(&state).map_err(io(&state))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).map_err(io(&state))?;
    report.push(format!("state dir   {}", state.display()));
    if real_root {
        for path in [&config_path, &state] {
            run(&[
                "chown",
                &format!("{SERVICE}:{SERVICE}"),
                &path.display().to_string(),
            ])?;
        }
    }
    let unit_path = under(&a.root, &format!("{UNIT_DIR}/{SERVICE}.service"));
    let c = write_file(&unit_path, unit_for(&a.bin).as_bytes(), 0o644)?;
    report.push(format!("unit        {} {c}", unit_path.display()));
    let enable = ["systemctl", "enable", "--now", SERVICE];
    if a.no_start {
        report.push(format!(
            "not started (--no-start); run: systemctl daemon-reload && {}",
            enable.join(" ")
        ));
    } else if real_root && systemd_running() {
        run(&["systemctl", "daemon-reload"])?;
        run(&enable)?;
        report.push(format!("service     {SERVICE} enabled and started"));
    } else {
        report.push(format!(
            "systemd is not running here (or --root was given); on the target host run: systemctl daemon-reload && {}",
            enable.join(" ")
        ));
    }
    Ok(report)
}

/// `vantage-agent uninstall`.
pub(crate) fn uninstall(a: &UninstallArgs) -> ExitCode {
    match uninstall_inner(a) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uninstall failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn uninstall_inner(a: &UninstallArgs) -> Result<Vec<String>, ServiceError> {
    let real_root = a.root == Path::new("/");
    let mut report = Vec::new();
    if real_root && systemd_running() {
        // Not installed or already stopped is fine.
        let _ = run(&["systemctl", "disable", "--now", SERVICE]);
        report.push(format!("service     {SERVICE} stopped and disabled"));
    }
    let unit_path = under(&a.root, &format!("{UNIT_DIR}/{SERVICE}.service"));
    remove(&unit_path, &mut report)?;
    if real_root && systemd_running() {
        run(&["systemctl", "daemon-reload"])?;
    }
    if a.purge {
        remove(&under(&a.root, CONFIG_PATH), &mut report)?;
        let state = under(&a.root, crate::config::DEFAULT_STATE_DIR);
        match std::fs::remove_dir_all(&state) {
            Ok(()) => report.push(format!("removed     {}", state.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&state)(e)),
        }
    } else {
        report.push(format!(
            "kept        {} and {} (--purge deletes them)",
            under(&a.root, CONFIG_PATH).display(),
            under(&a.root, crate::config::DEFAULT_STATE_DIR).display()
        ));
    }
    Ok(report)
}

fn remove(path: &Path, report: &mut Vec<String>) -> Result<(), ServiceError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            report.push(format!("removed     {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// `GET /healthz` over a plain HTTP/1.0 connection: the endpoint is local and the
/// command needs no runtime.
fn fetch_health(addr: SocketAddr) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, STATUS_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(STATUS_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(4 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no HTTP answer".to_string())?;
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1).is_none_or(|c| c != "200") {
        return Err(format!(
            "answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))
}

fn service_state() -> String {
    if !systemd_running() {
        return "unknown (systemd is not running)".into();
    }
    match Command::new("systemctl")
        .args(["is-active", SERVICE])
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The status report as JSON (the text form is printed from it).
fn status_report(a: &StatusArgs) -> Value {
    let config = crate::config::Config::load(
        Some(&a.config).filter(|p| p.exists()).map(PathBuf::as_path),
        &Default::default(),
        &Default::default(),
    );
    let (endpoint, health_addr, config_error) = match &config {
        Ok(c) => (Some(c.exporter.endpoint.clone()), c.health_listen, None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let health_addr = a.health.or(health_addr);
    let health = match health_addr {
        Some(addr) => fetch_health(addr),
        None => Err("health_listen is off in the configuration".into()),
    };
    let now_ms = crate::tail::now_ns() / 1_000_000;
    let mut out = json!({
        "service": service_state(),
        "config": a.config.display().to_string(),
        "collector": endpoint,
        "health": health_addr.map(|a| a.to_string()),
        "running": health.is_ok(),
    });
    if let Some(e) = config_error {
        out["config_error"] = json!(e);
    }
    match health {
        Err(e) => out["health_error"] = json!(e),
        Ok(h) => {
            let s = &h["stats"];
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            let last = h["last_export_unix_ms"].as_u64().unwrap_or(0);
            out["last_export_unix_ms"] = json!(last);
            out["last_export_age_seconds"] = if last == 0 {
                Value::Null
            } else {
                json!(now_ms.saturating_sub(last) / 1000)
            };
            let oldest = n("queue_oldest_unix_ms");
            let failing = n("queue_write_failing_since_unix_ms");
            out["queue"] = json!({
                "batches": n("queue_batches"),
                "bytes": n("queue_bytes"),
                // How far behind the collector is: what an operator asks first in an outage.
                "oldest_age_seconds": (oldest > 0).then(|| now_ms.saturating_sub(oldest) / 1000),
                // The sources wait while the queue cannot write (a full disk).
                "write_failing_seconds": (failing > 0).then(|| now_ms.saturating_sub(failing) / 1000),
            });
            out["sources"] = json!({
                "files": { "tailed": n("files_tailed"), "lines_read": n("lines_read"), "errors": n("file_errors") },
                "journald": { "entries_read": n("journald_entries_read"), "errors": n("journald_errors") },
                "host_metrics": { "collections": n("host_metrics_collections") },
                "otlp_receiver": { "accepted": n("receiver_requests_accepted"), "refused": n("receiver_requests_refused") },
                "scrape": { "scrapes": n("scrapes"), "failed": n("scrapes_failed"), "targets": h["scrape_targets"].clone() },
            });
            out["memory_paused"] = json!(n("memory_over_limit") > 0);
        }
    }
    out
}

fn text(report: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    out.push_str(&format!("service:     {}\n", s(&report["service"])));
    out.push_str(&format!("config:      {}\n", s(&report["config"])));
    if let Some(e) = report["config_error"].as_str() {
        out.push_str(&format!("             {e}\n"));
    }
    out.push_str(&format!("collector:   {}\n", s(&report["collector"])));
    match report["health_error"].as_str() {
        Some(e) => {
            out.push_str(&format!(
                "agent:       not answering on {} ({e})\n",
                s(&report["health"])
            ));
            return out;
        }
        None => out.push_str(&format!(
            "agent:       running (health {})\n",
            s(&report["health"])
        )),
    }
    out.push_str(&format!(
        "last export: {}\n",
        match report["last_export_age_seconds"].as_u64() {
            Some(age) => format!("{age} s ago"),
            None => "none yet".into(),
        }
    ));
    out.push_str(&format!(
        "queue:       {} batches, {} bytes{}\n",
        report["queue"]["batches"],
        report["queue"]["bytes"],
        match report["queue"]["oldest_age_seconds"].as_u64() {
            Some(age) => format!(", oldest queued {age} s ago"),
            None => String::new(),
        }
    ));
    if let Some(failing) = report["queue"]["write_failing_seconds"].as_u64() {
        out.push_str(&format!(
            "             cannot write for {failing} s (is the disk full?); sources wait, see the agent log\n"
        ));
    }
    let src = &report["sources"];
    out.push_str(&format!(
        "files:       {} tailed, {} lines read, {} errors\n",
        src["files"]["tailed"], src["files"]["lines_read"], src["files"]["errors"]
    ));
    out.push_str(&format!(
        "journald:    {} entries read, {} errors\n",
        src["journald"]["entries_read"], src["journald"]["errors"]
    ));
    out.push_str(&format!(
        "host metrics: {} collections\n",
        src["host_metrics"]["collections"]
    ));
    out.push_str(&format!(
        "otlp:        {} requests accepted, {} refused\n",
        src["otlp_receiver"]["accepted"], src["otlp_receiver"]["refused"]
    ));
    for t in src["scrape"]["targets"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "scrape:      {} {} {}\n",
            s(&t["job"]),
            s(&t["instance"]),
            if t["up"] == true { "up" } else { "down" }
        ));
    }
    if report["memory_paused"] == true {
        out.push_str("memory:      over limits.max_memory_mib; sources paused\n");
    }
    out
}

/// `vantage-agent status`: exit 0 when the agent answers, 3 (LSB "not running")
/// otherwise.
pub(crate) fn status(a: &StatusArgs) -> ExitCode {
    let report = status_report(a);
    if a.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    if report["running"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: &Path) -> InstallArgs {
        InstallArgs {
            collector: "https://collector.example:4317".into(),
            token: Some("vak_secret\"quote".into()),
            enrollment_token: None,
            enroll_url: None,
            tail: vec![],
            no_journald: false,
            root: root.to_path_buf(),
            bin: PathBuf::from("/opt/vantage/bin/vantage-agent"),
            force: false,
            no_start: false,
        }
    }

    #[test]
    fn install_lays_out_unit_config_and_state_then_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        let report = install_inner(&a).unwrap();
        let cfg = dir.path().join("etc/vantage-agent/agent.yaml");
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The written config loads, with the token intact.
        let c = crate::config::Config::load(Some(&cfg), &Default::default(), &Default::default())
            .unwrap();
        assert_eq!(c.exporter.endpoint, "https://collector.example:4317");
        assert_eq!(c.exporter.token.unwrap().expose(), "vak_secret\"quote");
        assert!(c.journald.is_some());
        assert_eq!(c.inputs.len(), 1);
        let unit =
            std::fs::read_to_string(dir.path().join("etc/systemd/system/vantage-agent.service"))
                .unwrap();
        assert!(
            unit.contains("ExecStart=/opt/vantage/bin/vantage-agent run --config /etc/vantage-agent/agent.yaml"),
            "{unit}"
        );
        assert!(unit.contains("ProtectSystem=strict"));
        let bin = dir.path().join("opt/vantage/bin/vantage-agent");
        assert_eq!(
            std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(dir.path().join("var/lib/vantage-agent").is_dir());
        assert!(report.iter().any(|l| l.contains("systemctl enable --now")));
        // Again: nothing changes.
        let again = install_inner(&a).unwrap();
        assert!(
            again
                .iter()
                .filter(|l| l.starts_with("config")
                    || l.starts_with("unit")
                    || l.starts_with("binary"))
                .all(|l| l.contains("unchanged")),
            "{again:?}"
        );
    }

    #[test]
    fn a_changed_config_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        install_inner(&args(dir.path())).unwrap();
        let cfg = dir.path().join("etc/vantage-agent/agent.yaml");
        std::fs::write(&cfg, "exporter:\n  endpoint: http://edited:4317\n").unwrap();
        let mut a = args(dir.path());
        a.collector = "https://other:4317".into();
        let err = install_inner(&a).unwrap_err();
        assert!(matches!(err, ServiceError::ConfigChanged(_)), "{err}");
        assert!(err.to_string().contains("--force"));
        assert!(
            std::fs::read_to_string(&cfg)
                .unwrap()
                .contains("http://edited")
        );
        a.force = true;
        install_inner(&a).unwrap();
        assert!(
            std::fs::read_to_string(&cfg)
                .unwrap()
                .contains("https://other:4317")
        );
    }

    #[test]
    fn enrollment_and_bad_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.token = None;
        a.enrollment_token = Some("vte_abc".into());
        assert!(matches!(
            install_inner(&a),
            Err(ServiceError::Invalid(m)) if m.contains("--enroll-url")
        ));
        a.enroll_url = Some("https://collector.example:7070".into());
        a.no_journald = true;
        install_inner(&a).unwrap();
        let cfg = dir.path().join("etc/vantage-agent/agent.yaml");
        let c = crate::config::Config::load(Some(&cfg), &Default::default(), &Default::default())
            .unwrap();
        assert!(c.exporter.enrollment.is_some());
        assert!(c.journald.is_none());
        let mut b = args(dir.path());
        b.collector = "collector:4317".into();
        assert!(matches!(install_inner(&b), Err(ServiceError::Invalid(_))));
        let mut b = args(dir.path());
        b.bin = "relative".into();
        assert!(matches!(install_inner(&b), Err(ServiceError::Invalid(_))));
    }

    #[test]
    fn uninstall_keeps_config_unless_purge() {
        let dir = tempfile::tempdir().unwrap();
        install_inner(&args(dir.path())).unwrap();
        let u = UninstallArgs {
            root: dir.path().to_path_buf(),
            purge: false,
        };
        uninstall_inner(&u).unwrap();
        assert!(
            !dir.path()
                .join("etc/systemd/system/vantage-agent.service")
                .exists()
        );
        assert!(dir.path().join("etc/vantage-agent/agent.yaml").exists());
        let u = UninstallArgs {
            root: dir.path().to_path_buf(),
            purge: true,
        };
        uninstall_inner(&u).unwrap();
        assert!(!dir.path().join("etc/vantage-agent/agent.yaml").exists());
        assert!(!dir.path().join("var/lib/vantage-agent").exists());
        // Nothing left to remove is not an error.
        uninstall_inner(&u).unwrap();
    }

    #[test]
    fn status_of_an_agent_that_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let report = status_report(&StatusArgs {
            config: dir.path().join("missing.yaml"),
            health: Some(port),
            json: true,
        });
        assert_eq!(report["running"], false);
        assert!(report["health_error"].is_string());
        assert!(text(&report).contains("not answering"));
    }

    #[test]
    fn status_text_says_how_old_the_queue_is() {
        let mut report = json!({
            "service": "active", "config": "/etc/vantage-agent/agent.yaml",
            "collector": "http://c:4317", "health": "127.0.0.1:13133",
            "last_export_age_seconds": 3,
            "queue": {"batches": 12, "bytes": 4096, "oldest_age_seconds": 95},
            "sources": {},
        });
        assert!(
            text(&report).contains("queue:       12 batches, 4096 bytes, oldest queued 95 s ago\n"),
            "{}",
            text(&report)
        );
        report["queue"] = json!({"batches": 0, "bytes": 0, "oldest_age_seconds": null});
        assert!(text(&report).contains("queue:       0 batches, 0 bytes\n"));
        assert!(!text(&report).contains("cannot write"), "{}", text(&report));
        report["queue"]["write_failing_seconds"] = json!(42);
        assert!(
            text(&report)
                .contains("queue:       0 batches, 0 bytes\n             cannot write for 42 s"),
            "{}",
            text(&report)
        );
    }
}
