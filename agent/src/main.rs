//! `vantage-agent`: ships a host's metrics and log files to a Vantage collector over
//! OTLP/gRPC, through a disk queue, with end-to-end acknowledgement for files.

mod checkpoint;
mod config;
mod enroll;
mod export;
mod exposition;
mod health;
mod hostmetrics;
mod lines;
mod process;
mod queue;
mod receiver;
mod resource;
mod scrape;
mod stats;
mod tail;
mod tlsclient;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FlagOverrides, LogFormat};
use crate::stats::Stats;

/// How long shutdown waits for the tasks after cancelling them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("VANTAGE_AGENT_"))
            .collect();
        let overrides = FlagOverrides {
            collector: self.collector.clone(),
            token: self.token.clone(),
            tail: self.tail.clone(),
            state_dir: self.state_dir.clone(),
            host_metrics_interval: self.host_metrics_interval.clone(),
            health_listen: self.health_listen.clone(),
            log_format: self.log_format.clone(),
            otlp_grpc_listen: self.otlp_grpc_listen.clone(),
            otlp_http_listen: self.otlp_http_listen.clone(),
        };
        Config::load(self.config.as_deref(), &env, &overrides)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(flags) => match flags.load() {
            Ok(c) => {
                let addr = |a: Option<std::net::SocketAddr>| {
                    a.map(|a| a.to_string())
                        .unwrap_or_else(|| "off".to_string())
                };
                println!(
                    "configuration is valid: {} file input(s), host metrics {}, OTLP receiver grpc {} http {}, {} scrape target(s), exporting to {}",
                    c.inputs.len(),
                    match c.host_metrics_interval {
                        Some(d) => format!("every {d:?}"),
                        None => "off".to_string(),
                    },
                    addr(c.receiver.grpc),
                    addr(c.receiver.http),
                    c.scrape_targets.len(),
                    c.exporter.endpoint
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Run(flags) => {
            let config = match flags.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_logging(config.log_format);
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
            match runtime.block_on(run(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VANTAGE_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state dir {}", config.state_dir.display()))?;
    let stats = Arc::new(Stats::default());
    let cancel = CancellationToken::new();
    let consumer = {
        let (dir, max, policy, stats) = (
            config.state_dir.clone(),
            config.queue_max_bytes,
            config.queue_when_full,
            stats.clone(),
        );
        tokio::task::spawn_blocking(move || queue::DiskQueue::open(&dir, max, policy, stats))
            .await
            .context("queue open task")??
    };
    let queue = consumer.queue.clone();
    let resource = resource::host_resource(&config.resource_attributes);

    let health = match config.health_listen {
        Some(addr) => Some(
            health::serve(addr, stats.clone(), cancel.clone())
                .await
                .with_context(|| format!("cannot listen on {addr} for /healthz"))?,
        ),
        None => None,
    };

    let grpc_tls = config
        .exporter
        .tls
        .as_ref()
        .map(tlsclient::for_grpc)
        .transpose()
        .context("exporter.tls")?;
    // Without a key but with an enrollment token, the exporter starts once enrolled;
    // the sources below fill the disk queue meanwhile.
    let exporter = {
        let mut exporter_config = config.exporter.clone();
        let (state_dir, cancel, stats) = (config.state_dir.clone(), cancel.clone(), stats.clone());
        tokio::spawn(async move {
            if exporter_config.token.is_none()
                && let Some(enrollment) = exporter_config.enrollment.clone()
            {
                match enroll::credential(
                    &state_dir,
                    &enrollment,
                    exporter_config.tls.as_ref(),
                    &cancel,
                )
                .await
                {
                    Ok(Some(key)) => exporter_config.token = Some(config::Secret::new(key)),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "cannot enroll; nothing will be sent until the agent is given a token or a new enrollment token"
                        );
                        return;
                    }
                }
            }
            match export::Exporter::new(exporter_config, consumer, stats, grpc_tls) {
                Ok(exporter) => exporter.run(cancel).await,
                Err(e) => tracing::error!(error = %e, "exporter endpoint"),
            }
        })
    };

    let tailer = if config.inputs.is_empty() {
        None
    } else {
        let (c, q, s, r) = (
            config.clone(),
            queue.clone(),
            stats.clone(),
            resource.clone(),
        );
        let tailer = tokio::task::spawn_blocking(move || tail::Tailer::new(&c, q, s, r))
            .await
            .context("tailer start task")??;
        let rt = tokio::runtime::Handle::current();
        let token = cancel.clone();
        Some(
            std::thread::Builder::new()
                .name("file-tail".into())
                .spawn(move || tailer.run(rt, token))
                .context("cannot start the file-tail thread")?,
        )
    };

    let sink = Arc::new(
        receiver::Sink::new(queue.clone(), stats.clone(), resource.clone())
            .with_redaction(process::redact::Redactor::new(config.redact.clone())),
    );
    let max_request = config.receiver.max_request_bytes;
    let otlp_grpc = match config.receiver.grpc {
        Some(addr) => Some(
            receiver::grpc::serve(addr, sink.clone(), max_request, cancel.clone())
                .await
                .with_context(|| {
                    format!("cannot listen on {addr} for OTLP/gRPC (receivers.otlp.grpc; `off` disables it)")
                })?,
        ),
        None => None,
    };
    let otlp_http = match config.receiver.http {
        Some(addr) => Some(
            receiver::http::serve(addr, sink.clone(), max_request, cancel.clone())
                .await
                .with_context(|| {
                    format!("cannot listen on {addr} for OTLP/HTTP (receivers.otlp.http; `off` disables it)")
                })?,
        ),
        None => None,
    };
    drop(sink);

    let host = config.host_metrics_interval.map(|interval| {
        tokio::spawn(hostmetrics::run(
            interval,
            resource.clone(),
            queue.clone(),
            stats.clone(),
            cancel.clone(),
        ))
    });

    let scrapers: Vec<_> = config
        .scrape_targets
        .iter()
        .map(|t| {
            tokio::spawn(scrape::run(
                t.clone(),
                config.exporter.batch_max_bytes,
                queue.clone(),
                stats.clone(),
                cancel.clone(),
            ))
        })
        .collect();

    tracing::info!(
        collector = %config.exporter.endpoint,
        scrape_targets = config.scrape_targets.len(),
        health = health.as_ref().map(|(a, _)| a.to_string()).unwrap_or_else(|| "off".into()),
        otlp_grpc = otlp_grpc.as_ref().map(|(a, _)| a.to_string()).unwrap_or_else(|| "off".into()),
        otlp_http = otlp_http.as_ref().map(|(a, _)| a.to_string()).unwrap_or_else(|| "off".into()),
        file_inputs = config.inputs.len(),
        host_metrics_interval_ms = config.host_metrics_interval.map(|d| d.as_millis() as u64),
        state_dir = %config.state_dir.display(),
        "ready"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for (_, h) in [otlp_grpc, otlp_http].into_iter().flatten() {
        let _ = tokio::time::timeout_at(deadline, h).await;
    }
    let _ = tokio::time::timeout_at(deadline, exporter).await;
    if let Some(h) = host {
        let _ = tokio::time::timeout_at(deadline, h).await;
    }
    for h in scrapers {
        let _ = tokio::time::timeout_at(deadline, h).await;
    }
    if let Some((_, h)) = health {
        let _ = tokio::time::timeout_at(deadline, h).await;
    }
    if let Some(t) = tailer {
        // The tailer checks the token between files and polls; its appends finish fast.
        let joined = tokio::task::spawn_blocking(move || t.join());
        if tokio::time::timeout_at(deadline, joined).await.is_err() {
            tracing::warn!("file tailer still busy at the shutdown deadline");
        }
    }
    tokio::task::spawn_blocking(move || queue.shutdown_blocking())
        .await
        .context("queue shutdown task")?;
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
