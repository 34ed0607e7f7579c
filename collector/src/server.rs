//! Start-up and shutdown of the collector, in the order the durability contract needs:
//! API first (so `/readyz` can say "not yet"), then WAL replay into the log index, then
//! the OTLP listeners, then ready. Shutdown runs it backwards under one grace deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vantage_storage::logs::LogStoreOptions;
use vantage_storage::metrics::promql::{Engine, EngineOptions};
use vantage_storage::metrics::tsdb::{Tsdb, TsdbOptions};
use vantage_storage::wal::{Wal, WalOptions};

use crate::api::{self, ApiState};
use crate::auth::{self, Auth};
use crate::config::Config;
use crate::ingest::index_thread::IndexThread;
use crate::ingest::{Ingest, Wals, indexer, metrics};
use crate::ratelimit::RateLimiter;
use crate::receivers;
use crate::telemetry::Telemetry;
use crate::tls::{ReloadingConfig, TlsListener};

/// Durable batches waiting for the log indexer; when full, the WAL writer waits, acks
/// slow down, and admission starts answering RESOURCE_EXHAUSTED.
const INDEXER_QUEUE_BATCHES: usize = 64;
/// How long in-flight work may take to finish at shutdown before it is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Durable metric records waiting for the applier: a few fsync groups' worth; when full,
/// the WAL writer waits, and so do the receivers.
const METRICS_QUEUE_RECORDS: usize = 64;

fn engine_options(config: &Config) -> EngineOptions {
    let mut opts = EngineOptions::default();
    if let Some(max) = config.max_samples_per_query {
        opts.max_samples = max;
    }
    opts
}

/// The addresses the collector actually bound (useful with port 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// Query API.
    pub api: SocketAddr,
}

/// A bound listener, plain TCP or TLS.
enum Incoming {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Incoming {
    fn new(listener: TcpListener, tls: Option<&Arc<ReloadingConfig>>) -> std::io::Result<Self> {
        Ok(match tls {
            Some(config) => Incoming::Tls(TlsListener::new(listener, config.clone())?),
            None => Incoming::Plain(listener),
        })
    }
}

/// The TLS configuration of each listener, each following the certificate files.
struct TlsSetup {
    grpc: Arc<ReloadingConfig>,
    http: Arc<ReloadingConfig>,
    api: Arc<ReloadingConfig>,
}

impl TlsSetup {
    /// Loads the files once per listener (ALPN differs: gRPC is HTTP/2 only) and starts
    /// watching them. Client certificates, when a client CA is configured, are asked for
    /// on the OTLP ports only: the API serves browsers and Grafana.
    fn load(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Option<Self>> {
        let Some(files) = &config.tls else {
            return Ok(None);
        };
        let setup = TlsSetup {
            grpc: ReloadingConfig::load("otlp-grpc", files, true, &[b"h2"])?,
            http: ReloadingConfig::load("otlp-http", files, true, &[b"h2", b"http/1.1"])?,
            api: ReloadingConfig::load("api", files, false, &[b"h2", b"http/1.1"])?,
        };
        for c in [&setup.grpc, &setup.http, &setup.api] {
            c.spawn_watch(shutdown.clone());
        }
        tracing::info!(
            cert = %files.cert_file.display(),
            client_certificates = files.client_ca_file.is_some(),
            "tls on every listener"
        );
        Ok(Some(setup))
    }
}

async fn bind(addr: SocketAddr, protocol: &'static str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {protocol}"))?;
    let local = listener.local_addr()?;
    tracing::info!(protocol, addr = %local, "listening");
    Ok(listener)
}

fn open_wal(
    config: &Config,
    signal: &str,
    sink: Option<std::sync::mpsc::SyncSender<vantage_storage::wal::Durable>>,
    telemetry: &Arc<Telemetry>,
) -> anyhow::Result<Wal> {
    let mut opts = WalOptions::new(config.data_dir.join("wal").join(signal));
    opts.segment_max_bytes = config.wal_segment_max_bytes;
    opts.fsync = config.wal_fsync;
    let t = telemetry.clone();
    let observer: vantage_storage::wal::SyncObserver = Arc::new(move |took, _records, _bytes| {
        t.wal_fsync_seconds.observe(took.as_secs_f64());
    });
    Wal::open(opts, sink, Some(observer))
        .with_context(|| format!("cannot open the {signal} write-ahead log"))
}

/// Runs the collector until `shutdown` is cancelled. `on_bound` is told the real
/// addresses once every listener is up. With a `source`, the configuration can be
/// reloaded (SIGHUP, `POST /api/v1/status/config/reload`).
pub async fn run(
    config: Config,
    source: Option<crate::reload::ConfigSource>,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    tracing::info!(data_dir = %config.data_dir.display(), "starting vantage collector");
    let telemetry = Arc::new(Telemetry::new());
    let auth = if config.auth_enabled {
        Arc::new(Auth::with_store(auth::open_and_bootstrap(
            &config.data_dir,
        )?))
    } else {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who reaches these ports can read and write all data; for local experiments only"
        );
        Arc::new(Auth::disabled())
    };

    let mut log_opts = LogStoreOptions::new(config.data_dir.join("logs"));
    log_opts.writer_heap_bytes = config.writer_heap_bytes;
    log_opts.indexing_threads = config.indexing_threads;
    log_opts.retention_ns = i64::try_from(config.retention_logs.as_nanos()).unwrap_or(i64::MAX);
    log_opts.search_idle_after = config.search_idle_after;
    let (log_store, log_indexer) =
        vantage_storage::logs::open(log_opts).context("cannot open the log index")?;

    let mut tsdb_opts = TsdbOptions::new(config.data_dir.join("metrics"));
    tsdb_opts.retention_ms =
        i64::try_from(config.retention_metrics.as_millis()).unwrap_or(i64::MAX);
    tsdb_opts.ooo_window_ms =
        i64::try_from(config.out_of_order_window.as_millis()).unwrap_or(i64::MAX);
    tsdb_opts.max_series_per_tenant = config.max_series_per_tenant;
    let tsdb = tokio::task::spawn_blocking(move || Tsdb::open(tsdb_opts))
        .await?
        .context("cannot open the metrics store")?;

    // Traces: the span store and its indexer channel (same capacity as the logs').
    let mut trace_opts =
        vantage_storage::traces::TraceStoreOptions::new(config.data_dir.join("traces"));
    trace_opts.indexing_threads = config.indexing_threads;
    trace_opts.retention_ns = i64::try_from(config.retention_traces.as_nanos()).unwrap_or(i64::MAX);
    let (trace_store, trace_indexer) =
        vantage_storage::traces::open(trace_opts).context("cannot open the trace store")?;
    let (traces_tx, traces_rx) = std::sync::mpsc::sync_channel(INDEXER_QUEUE_BATCHES);

    let (durable_tx, durable_rx) = std::sync::mpsc::sync_channel(INDEXER_QUEUE_BATCHES);
    let (metrics_tx, metrics_rx) = std::sync::mpsc::sync_channel(METRICS_QUEUE_RECORDS);
    let wals = Wals {
        logs: open_wal(&config, "logs", Some(durable_tx), &telemetry)?,
        metrics: open_wal(&config, "metrics", Some(metrics_tx), &telemetry)?,
        traces: open_wal(&config, "traces", Some(traces_tx), &telemetry)?,
    };
    let traces_wal = wals.traces.clone();
    let logs_wal = wals.logs.clone();
    let metrics_wal = wals.metrics.clone();
    // The configuration in effect; what changes on reload is read from it.
    let live = Arc::new(crate::reload::Live::new(config.clone()));
    let limiter = Arc::new(RateLimiter::new(config.rates));
    let ingest = Ingest::new(
        wals,
        tsdb.clone(),
        live.clone(),
        limiter.clone(),
        telemetry.clone(),
    );
    // Replay suppression (x-vantage-batch-id): the window of stored batch ids.
    let dedup = {
        let (dir, metrics) = (config.data_dir.join("dedup"), telemetry.dedup.clone());
        let (max_ids, max_age) = (config.dedup_max_ids, config.dedup_max_age);
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::ingest::dedup::Dedup::open(&dir, max_ids, max_age, metrics)
            })
            .await??,
        )
    };
    let dedup_sync = dedup
        .clone()
        .spawn_sync(Duration::from_secs(1), shutdown.clone());
    let ingest = Arc::new(ingest.with_dedup(dedup.clone()));

    // Alert rules: the evaluator, and the channel to the notifier (drained here until
    // the notifier exists).
    let meta = match auth.store() {
        Some(store) => store.clone(),
        None => Arc::new(
            vantage_storage::meta::MetaStore::open(&config.data_dir.join("meta.db"))
                .context("cannot open the metadata store")?,
        ),
    };
    let engine = Arc::new(Engine::new(engine_options(&config)));
    // The API listener is bound first: its address is the default external URL in
    // notifications.
    let tls = TlsSetup::load(&config, &shutdown)?;
    let api_listener = bind(config.api, "api").await?;
    let api_addr = api_listener.local_addr()?;
    let api_incoming = Incoming::new(api_listener, tls.as_ref().map(|t| &t.api))?;
    let default_external_url = {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{api_addr}")
    };
    let external_url = config
        .alerting
        .external_url
        .clone()
        .unwrap_or_else(|| default_external_url.clone());
    // Alerting: the evaluator sends into the channel, the notifier (an embedded
    // Alertmanager) receives; `POST /api/v2/alerts` feeds the same channel.
    let (alerts_tx, alerts_rx) = tokio::sync::mpsc::channel(crate::alerting::ALERT_CHANNEL_BATCHES);
    let (notifier, notifier_task) = crate::alerting::notify::Notifier::start(
        crate::alerting::notify::NotifierOptions {
            store: Some(meta.clone()),
            default_config_file: config.alerting.alertmanager_config.clone(),
            external_url: external_url.clone(),
            telemetry: telemetry.clone(),
            retry: Default::default(),
        },
        alerts_tx.clone(),
        alerts_rx,
        shutdown.clone(),
    )?;
    let rules = crate::alerting::rules::RulesManager::new(
        crate::alerting::rules::RulesDeps {
            tsdb: tsdb.clone(),
            engine: engine.clone(),
            logs: log_store.clone(),
            ingest: ingest.clone(),
            meta: meta.clone(),
            alerts: alerts_tx,
            telemetry: telemetry.clone(),
            options: crate::alerting::rules::RulesOptions {
                rules_dir: config.alerting.rules_dir.clone(),
                default_interval: config.alerting.evaluation_interval,
                query_offset: config.alerting.query_offset,
                external_url,
                resend_delay: crate::alerting::rules::manager::RESEND_DELAY,
                query_timeout: config.query_timeout,
            },
        },
        shutdown.clone(),
    );

    // Secrets and configuration reload.
    let secrets = Arc::new(
        crate::secrets::Secrets::open(meta.clone(), &config.secrets, &config.data_dir)
            .context("cannot load the secrets key")?,
    );
    // OpAMP: agent state from the metadata store, written back in batches; documents'
    // `${secret:NAME}` expanded per agent tenant.
    let opamp = Arc::new(
        crate::opamp::OpampServer::open(meta.clone(), telemetry.clone(), Some(secrets.clone()))
            .context("cannot load the opamp agents")?,
    );
    let opamp_task = opamp.spawn_maintenance(shutdown.clone());
    let reloader = source.map(|source| {
        Arc::new(crate::reload::Reloader::new(
            source,
            live.clone(),
            crate::reload::ReloadTargets {
                limiter: limiter.clone(),
                rules: Some(rules.clone()),
                secrets: Some(secrets.clone()),
                tsdb: tsdb.clone(),
                notifier: notifier.clone(),
                default_external_url,
            },
            telemetry.clone(),
        ))
    });
    if let Some(r) = &reloader {
        crate::reload::spawn_sighup(r.clone(), shutdown.clone());
    }
    let api_state = Arc::new(ApiState {
        logs: log_store.clone(),
        traces: trace_store.clone(),
        ingest: ingest.clone(),
        auth: auth.clone(),
        telemetry: telemetry.clone(),
        ready: Default::default(),
        limiter,
        shutdown: shutdown.clone(),
        tsdb: tsdb.clone(),
        engine,
        query_slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_queries)),
        log_search_slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_searches)),
        open_tails: Default::default(),
        login_throttle: Default::default(),
        totp: Default::default(),
        rules: rules.clone(),
        notifier: Some(notifier),
        live: live.clone(),
        reloader,
        secrets: Some(secrets),
        opamp,
    });
    let api_task = tokio::spawn({
        let shutdown = shutdown.clone();
        let router = api::router(api_state.clone());
        async move {
            // Connection info gives handlers the client address, for the audit log and
            // the login throttle.
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            match api_incoming {
                Incoming::Tls(listener) => {
                    use axum::serve::ListenerExt as _;
                    axum::serve(listener.tap_io(|_| {}), app)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
                Incoming::Plain(listener) => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
            }
        }
    });

    let (log_thread, replayed) = IndexThread::new(
        log_indexer,
        logs_wal,
        telemetry.log_index_meters(),
        Some(dedup.clone()),
    )
    .search_idle(log_store.freshness().clone(), config.idle_commit_interval)
    .replay_blocking()
    .await?;
    // A failed replay was logged; the thread retries it (see `index_thread`).
    if let Some(batches) = replayed {
        tracing::info!(
            batches,
            docs = log_store.num_docs(),
            "wal replayed into the log index"
        );
    }
    let (replay_tsdb, replay_wal, replay_telemetry) =
        (tsdb.clone(), metrics_wal.clone(), telemetry.clone());
    let replay_applied = ingest.metrics_applied();
    let replayed = tokio::task::spawn_blocking(move || {
        metrics::replay(
            &replay_tsdb,
            &replay_wal,
            &replay_applied,
            &replay_telemetry,
        )
    })
    .await?
    .context("metrics wal replay failed")?;
    tracing::info!(
        records = replayed,
        series = tsdb.stats().series,
        "wal replayed into the metrics store"
    );
    let applier_thread = metrics::spawn_applier(
        tsdb.clone(),
        metrics_rx,
        ingest.metrics_applied(),
        telemetry.clone(),
    )?;
    let maintenance_task = metrics::spawn_maintenance(
        tsdb.clone(),
        metrics_wal.clone(),
        telemetry.clone(),
        shutdown.clone(),
    );
    let indexer_thread = log_thread.spawn(
        durable_rx,
        config.commit_interval,
        indexer::RetentionSweep::new(live.clone(), |c| c.retention_logs),
    )?;
    // Traces: replay the WAL into the span store, then index as batches become durable.
    let (trace_thread, replayed) = IndexThread::new(
        trace_indexer,
        traces_wal,
        telemetry.trace_index_meters(),
        Some(dedup.clone()),
    )
    .replay_blocking()
    .await?;
    if let Some(batches) = replayed {
        tracing::info!(
            batches,
            spans = trace_store.num_docs(),
            "wal replayed into the trace store"
        );
    }
    let trace_indexer_thread = trace_thread.spawn(
        traces_rx,
        config.commit_interval,
        indexer::RetentionSweep::new(live.clone(), |c| c.retention_traces),
    )?;

    let grpc_listener = bind(config.otlp_grpc, "otlp-grpc").await?;
    let http_listener = bind(config.otlp_http, "otlp-http").await?;
    let bound = Bound {
        otlp_grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        api: api_addr,
    };
    let grpc_incoming = Incoming::new(grpc_listener, tls.as_ref().map(|t| &t.grpc))?;
    let http_incoming = Incoming::new(http_listener, tls.as_ref().map(|t| &t.http))?;
    let grpc_task = tokio::spawn({
        let routes = receivers::grpc::OtlpGrpc::new(ingest.clone(), telemetry.clone())
            .routes(config.max_request_bytes);
        let auth_layer = receivers::grpc::AuthLayer::new(auth.clone(), telemetry.clone());
        let shutdown = shutdown.clone();
        async move {
            let router = tonic::transport::Server::builder()
                .layer(tower::util::MapResponseLayer::new(
                    receivers::grpc::oversize_is_invalid,
                ))
                .layer(auth_layer)
                .add_routes(routes);
            match grpc_incoming {
                Incoming::Tls(listener) => {
                    router
                        .serve_with_incoming_shutdown(
                            listener.into_stream(),
                            shutdown.cancelled_owned(),
                        )
                        .await
                }
                Incoming::Plain(listener) => {
                    router
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            shutdown.cancelled_owned(),
                        )
                        .await
                }
            }
        }
    });
    let http_task = tokio::spawn({
        let router = receivers::http::router(ingest.clone(), auth.clone(), telemetry.clone());
        let shutdown = shutdown.clone();
        async move {
            match http_incoming {
                Incoming::Tls(listener) => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
                Incoming::Plain(listener) => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
            }
        }
    });

    ingest.open();
    let span_metrics_task =
        crate::ingest::spanmetrics::spawn_flusher(ingest.clone(), shutdown.clone());
    let rules_task = rules.start().await;
    api_state.ready.store(true, Ordering::SeqCst);
    tracing::info!(otlp_grpc = %bound.otlp_grpc, otlp_http = %bound.otlp_http, api = %bound.api, "ready");
    on_bound(bound);

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let _ = rules_task.await;
    let _ = opamp_task.await;
    drop(rules);
    let _ = notifier_task.await;
    api_state.ready.store(false, Ordering::SeqCst);
    ingest.close();
    let servers = async {
        let (g, h, a) = tokio::join!(grpc_task, http_task, api_task);
        if let Ok(Err(e)) = g {
            tracing::warn!(error = %e, "otlp grpc server stopped with an error");
        }
        if let Ok(Err(e)) = h {
            tracing::warn!(error = %e, "otlp http server stopped with an error");
        }
        if let Ok(Err(e)) = a {
            tracing::warn!(error = %e, "api server stopped with an error");
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, servers).await.is_err() {
        tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "servers did not stop in time; closing anyway"
        );
    }
    // Dropping the last WAL handles stops the writers; the logs writer's sink then closes
    // and the indexer commits what it has and exits.
    drop(api_state);
    let closing = ingest.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || closing.shutdown()).await {
        tracing::warn!(error = %e, "wal shutdown task failed; the wal will be replayed at start");
    }
    let joined = tokio::task::spawn_blocking(move || indexer_thread.join());
    match tokio::time::timeout(SHUTDOWN_GRACE, joined).await {
        Ok(Ok(Ok(()))) => {}
        _ => {
            tracing::warn!("log indexer did not finish in time; the wal will be replayed at start")
        }
    }
    // The span counters are in memory only: nothing to save, so the flusher just stops.
    span_metrics_task.abort();
    let joined = tokio::task::spawn_blocking(move || trace_indexer_thread.join());
    if !matches!(
        tokio::time::timeout(SHUTDOWN_GRACE, joined).await,
        Ok(Ok(Ok(())))
    ) {
        tracing::warn!("trace indexer did not finish in time; the wal will be replayed at start");
    }
    let _ = maintenance_task.await;
    let flushed = tokio::task::spawn_blocking(move || {
        if applier_thread.join().is_ok() {
            metrics::flush_at_shutdown(&tsdb, &metrics_wal);
        }
    });
    if tokio::time::timeout(SHUTDOWN_GRACE, flushed).await.is_err() {
        tracing::warn!("metrics flush did not finish in time; the wal will be replayed at start");
    }
    let _ = dedup_sync.await;
    if let Err(e) = tokio::task::spawn_blocking(move || dedup.sync()).await? {
        tracing::warn!(error = %e, "batch id journal sync failed at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}
