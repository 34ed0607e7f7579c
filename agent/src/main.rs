//! `vantage-agent`: ships a host's metrics and log files to a Vantage collector over
//! OTLP/gRPC, through a disk queue, with end-to-end acknowledgement for files.

mod checkpoint;
mod checkpoint_store;
mod config;
mod control;
mod dirwatch;
mod enroll;
mod export;
mod exposition;
mod globscan;
mod health;
mod hostmetrics;
mod journald;
mod lines;
mod logbatch;
mod memlimit;
mod process;
mod queue;
mod rawgrpc;
mod receiver;
mod resource;
mod runtime;
mod scrape;
mod selfmetrics;
mod service;
mod startup_pages;
mod stats;
mod tail;
mod tlsclient;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_yaml_ng::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FlagOverrides, LogFormat};
use crate::runtime::{Applied, Runtime};

/// The Vantage agent: host metrics and log files, shipped to the collector.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the agent until SIGTERM or Ctrl-C.
    Run(Flags),
    /// Validates the configuration (file, VANTAGE_AGENT_* variables, flags) and exits:
    /// 0 when valid, 2 with every problem listed otherwise.
    CheckConfig(Flags),
    /// Installs the agent as a systemd service: binary, unit, /etc/vantage-agent/agent.yaml
    /// (0600), state dir, user; then enables and starts it when systemd runs.
    Install(service::InstallArgs),
    /// Stops and removes the service (the config and state stay unless --purge).
    Uninstall(service::UninstallArgs),
    /// Whether the agent runs, where it sends, its last export, queue and sources.
    Status(service::StatusArgs),
    /// Benchmark hook (benches/RESULTS.md, "Agent"): collects host metrics N times and
    /// prints the CPU time per collection as JSON.
    #[command(hide = true)]
    BenchHostMetrics {
        /// Collections to time.
        #[arg(long, default_value_t = 200)]
        cycles: u64,
    },
}

#[derive(Args, Debug)]
struct Flags {
    /// YAML configuration file (see the README for every key).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Collector OTLP/gRPC endpoint, e.g. http://collector:4317.
    #[arg(long)]
    collector: Option<String>,
    /// Bearer token for the collector (prefer VANTAGE_AGENT_TOKEN: flags show in `ps`).
    #[arg(long)]
    token: Option<String>,
    /// Tail files matching this absolute glob (repeatable).
    #[arg(long = "tail", value_name = "GLOB")]
    tail: Vec<String>,
    /// Directory for checkpoints and the disk queue.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Host metrics interval (e.g. 10s), or `off`.
    #[arg(long)]
    host_metrics_interval: Option<String>,
    /// Address of the /healthz endpoint, or `off`.
    #[arg(long)]
    health_listen: Option<String>,
    /// Own log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Local OTLP/gRPC receiver address (default 127.0.0.1:4317), or `off`.
    #[arg(long)]
    otlp_grpc_listen: Option<String>,
    /// Local OTLP/HTTP receiver address (default 127.0.0.1:4318), or `off`.
    #[arg(long)]
    otlp_http_listen: Option<String>,
}

impl Flags {
    fn load(&self) -> Result<Config, config::ConfigError> {
        Ok(self.load_tree()?.0.config)
    }

    /// The validated local configuration, its unexpanded tree (the base of remote
    /// configurations) and the process environment (`VANTAGE_AGENT_*`, `${env:}`).
    fn load_tree(&self) -> Result<(Applied, Value, BTreeMap<String, String>), config::ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let overrides = self.overrides();
        let (local, text) = Config::layers(self.config.as_deref(), &env, &overrides)?;
        let tree = control::expand(local.clone(), &env)?;
        let config = Config::from_tree(tree.clone(), &text)?;
        Ok((Applied { config, tree }, local, env))
    }

    fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            collector: self.collector.clone(),
            token: self.token.clone(),
            tail: self.tail.clone(),
            state_dir: self.state_dir.clone(),
            host_metrics_interval: self.host_metrics_interval.clone(),
            health_listen: self.health_listen.clone(),
            log_format: self.log_format.clone(),
            otlp_grpc_listen: self.otlp_grpc_listen.clone(),
            otlp_http_listen: self.otlp_http_listen.clone(),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Install(a) => service::install(&a),
        Command::Uninstall(a) => service::uninstall(&a),
        Command::Status(a) => service::status(&a),
        Command::BenchHostMetrics { cycles } => hostmetrics::bench(cycles),
        Command::CheckConfig(flags) => match flags.load() {
            Ok(c) => {
                let addr = |a: Option<std::net::SocketAddr>| {
                    a.map(|a| a.to_string())
                        .unwrap_or_else(|| "off".to_string())
                };
                println!(
                    "configuration is valid: {} file input(s), host metrics {}, OTLP receiver grpc {} http {}, {} scrape target(s), exporting to {}, remote configuration {}",
                    c.inputs.len(),
                    match c.host_metrics_interval {
                        Some(d) => format!("every {d:?}"),
                        None => "off".to_string(),
                    },
                    addr(c.receiver.grpc),
                    addr(c.receiver.http),
                    c.scrape_targets.len(),
                    c.exporter.endpoint,
                    match &c.control {
                        Some(control) => format!("from {}", control.endpoint.url),
                        None => "off".to_string(),
                    }
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Run(flags) => {
            let loaded = match flags.load_tree() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_logging(loaded.0.config.log_format);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(4)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(loaded)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// Colour codes only on a terminal: under systemd they would reach journald as
/// `\x1b[2m` noise. `NO_COLOR` turns them off on a terminal too.
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANTAGE_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Starts the agent (with the last remote configuration, if one was saved), serves
/// the OpAMP client when `control` is set, and shuts down on SIGTERM or Ctrl-C.
async fn run(
    (local, local_tree, env): (Applied, Value, BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let control = match local.config.control.clone() {
        Some(control) => {
            // `control.opamp.tls` when given, else the exporter's TLS settings.
            let tls = control
                .tls
                .clone()
                .or_else(|| local.config.exporter.tls.clone())
                .unwrap_or_default();
            let ctx = control::client::Context {
                control,
                local_tree,
                env,
                state_dir: local.config.state_dir.clone(),
                tls,
            };
            Some(control::client::Agent::prepare(ctx, local.clone())?)
        }
        None => None,
    };
    let (mut rt, agent) = match control {
        None => (Runtime::start(local).await?, None),
        Some((mut agent, applied)) => {
            let remote = applied.tree != local.tree;
            match Runtime::start(applied).await {
                Ok(rt) => (rt, Some(agent)),
                Err(e) if remote => {
                    let error = format!("{e:#}");
                    tracing::warn!(error = %error, "the saved remote configuration does not start; running the local one");
                    agent.start_failed(error, &local.tree);
                    (Runtime::start(local).await?, Some(agent))
                }
                Err(e) => return Err(e),
            }
        }
    };
    let c = &rt.current().config;
    let [health, otlp_grpc, otlp_http] = rt
        .addresses()
        .map(|(_, a)| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));
    tracing::info!(
        collector = %c.exporter.endpoint,
        scrape_targets = c.scrape_targets.len(),
        health = %health,
        otlp_grpc = %otlp_grpc,
        otlp_http = %otlp_http,
        file_inputs = c.inputs.len(),
        host_metrics_interval_ms = c.host_metrics_interval.map(|d| d.as_millis() as u64),
        state_dir = %c.state_dir.display(),
        opamp = c.control.as_ref().map(|c| c.endpoint.url.as_str()).unwrap_or("off"),
        pid = std::process::id(),
        "ready"
    );
    tokio::spawn(startup_pages::release_later(stop.clone()));
    match agent {
        Some(agent) => {
            let signal = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                signal.cancel();
            });
            agent.run(&mut rt, stop).await;
        }
        None => shutdown_signal().await,
    }
    tracing::info!("shutting down");
    rt.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
