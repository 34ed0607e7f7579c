//! `vantage-collector`: receives OTLP, stores it durably, indexes logs, answers queries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use vantage_collector::config::{Config, FlagOverrides, LogFormat};

/// mimalloc, not glibc's malloc: ingest allocates and frees a decoded request's strings
/// on one thread and Tantivy's buffers on another, and glibc's free paths
/// (`_int_free`, `malloc_consolidate`) were a third of the request threads' CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Vantage collector.
///
/// Receives OpenTelemetry logs, metrics and traces over OTLP (gRPC on 4317, HTTP on
/// 4318), makes every accepted batch durable in a write-ahead log before answering,
/// indexes logs for search, and serves the query API on 7070.
///
/// Settings come from the YAML file given with --config, then from VANTAGE_*
/// environment variables (VANTAGE_DATA_DIR, VANTAGE_LISTEN__API, ...: a double
/// underscore steps into a section), then from these flags.
#[derive(Debug, Parser)]
#[command(name = "vantage-collector", version)]
struct Args {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the write-ahead log and indexes [default: ./vantage-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address; port 0 picks a free port [default: 0.0.0.0:4317].
    #[arg(long, value_name = "ADDR")]
    otlp_grpc: Option<String>,
    /// OTLP/HTTP listen address [default: 0.0.0.0:4318].
    #[arg(long, value_name = "ADDR")]
    otlp_http: Option<String>,
    /// Query API listen address [default: 0.0.0.0:7070].
    #[arg(long, value_name = "ADDR")]
    api: Option<String>,
    /// Format of the collector's own log: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Accept every request without a credential, all into tenant `default`. For local
    /// experiments only: anyone who can reach the ports can read and write everything.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Directory of Prometheus rule files for tenant `default` (a subdirectory per other
    /// tenant); reloaded when a file changes.
    #[arg(long, value_name = "DIR")]
    rules_dir: Option<PathBuf>,
    /// Alertmanager configuration file (routes, receivers, inhibit rules) for tenant
    /// `default`.
    #[arg(long, value_name = "FILE")]
    alertmanager_config: Option<PathBuf>,
}

/// The log filter: `log_level` from the configuration, else `VANTAGE_LOG`, else info.
/// A configuration reload can change it (see `vantage_collector::reload`).
fn init_logging(format: LogFormat, log_level: Option<&str>) {
    let filter = log_level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_env("VANTAGE_LOG").ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder;
            let handle = builder.reload_handle();
            builder.init();
            vantage_collector::reload::set_log_filter_setter(Box::new(move |text: &str| {
                let filter =
                    tracing_subscriber::EnvFilter::try_new(text).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }));
        }};
    }
    match format {
        LogFormat::Json => install!(builder.json().flatten_event(true).with_filter_reloading()),
        LogFormat::Text => install!(builder.with_filter_reloading()),
    }
}

/// Colour codes only on a terminal: under systemd, in a container or redirected to a file
/// they reach journald and log shippers as `\x1b[2m` noise. `NO_COLOR` turns them off
/// on a terminal too.
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    token.cancel();
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("VANTAGE_"))
        .collect();
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        otlp_grpc: args.otlp_grpc,
        otlp_http: args.otlp_http,
        api: args.api,
        log_format: args.log_format,
        insecure_no_auth: args.insecure_no_auth,
        rules_dir: args.rules_dir,
        alertmanager_config: args.alertmanager_config,
    };
    let source = vantage_collector::reload::ConfigSource {
        file: args.config.clone(),
        env: env.clone(),
        flags: flags.clone(),
    };
    let config = match Config::load(args.config.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vantage-collector: {e}");
            std::process::exit(2);
        }
    };
    init_logging(config.log_format, config.log_level.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Queries are parsed and evaluated on these threads: the stack their depth
        // limits are measured against (see `promql::MAX_QUERY_DEPTH`).
        .thread_stack_size(vantage_storage::metrics::promql::QUERY_STACK_BYTES)
        .build()?;
    let result = runtime.block_on(async {
        let token = CancellationToken::new();
        tokio::spawn(shutdown_signal(token.clone()));
        vantage_collector::server::run(config, Some(source), token, |_| {}).await
    });
    // Whatever is still running after the grace period (it was logged) must not keep the
    // process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
