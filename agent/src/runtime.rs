//! The running agent: the disk queue, the exporter and every source, each with its own
//! cancellation token, so a new configuration is applied without restarting the
//! process. `apply` compares the new configuration with the running one and restarts
//! only what changed; the disk queue and the file checkpoints stay, so nothing
//! acknowledged is lost and nothing checkpointed is read twice:
//!
//! - exporter settings: the old exporter is stopped between two batches (an unsent
//!   batch stays in the queue, the acknowledged position is on disk) and a new one
//!   starts from the acknowledged position. The queue's in-memory hand-off channel is
//!   relayed to whichever exporter runs.
//! - files: the file source is one thread for all inputs (one checkpoint file); when
//!   any input changes it stops after flushing its batch and checkpoint, and a new one
//!   resumes every file from the checkpoint.
//! - host metrics, each scrape target, each OTLP listener and `/healthz`: restarted
//!   only when their own settings change; a new listener address is bound before the
//!   old one is closed, so a bind failure fails the apply with nothing changed.
//!
//! The disk queue's size and policy, the state directory and the log format are fixed
//! for the life of the process: a change is refused with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::FutureExt as _;
use serde_yaml_ng::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vantage_proto::otlp::resource::v1::Resource;

use crate::config::{Config, ExporterConfig, ScrapeTarget, Secret};
use crate::queue::{Consumer, DiskQueue, Queued};
use crate::stats::Stats;
use crate::{
    enroll, export, health, hostmetrics, journald, memlimit, receiver, resource, scrape, tail,
    tlsclient,
};

/// How long shutdown waits for the tasks after cancelling them.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Batches the relay hands to the current exporter without a disk read; when it is
/// full the exporter reads them from disk, so nothing is lost.
const RELAY_CAPACITY: usize = 64;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A running async part: its token, its task, when it started.
struct Task {
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<Option<String>>,
    started_ns: u64,
}

impl Task {
    fn spawn<F>(parent: &CancellationToken, f: impl FnOnce(CancellationToken) -> F) -> Task
    where
        F: std::future::Future<Output = Option<String>> + Send + 'static,
    {
        let cancel = parent.child_token();
        Task {
            handle: tokio::spawn(f(cancel.clone())),
            cancel,
            started_ns: now_ns(),
        }
    }

    /// Cancels and waits until `deadline`; then aborts, so an old exporter can never
    /// run beside its replacement (an aborted send is simply sent again: the batch
    /// was not acknowledged).
    async fn stop(self, deadline: tokio::time::Instant) {
        self.cancel.cancel();
        let mut handle = self.handle;
        if tokio::time::timeout_at(deadline, &mut handle)
            .await
            .is_err()
        {
            tracing::warn!("a task did not stop within the grace period; aborting it");
            handle.abort();
            let _ = handle.await;
        }
    }
}

/// A listener (OTLP gRPC/HTTP, `/healthz`) and the settings it was started with.
struct Listener {
    /// The configured address and whatever else requires a restart when changed.
    settings: (SocketAddr, usize, Vec<(String, String)>),
    bound: SocketAddr,
    task: Task,
}

/// The file source's thread.
struct Tailer {
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    /// What requires a restart when changed: the `files` subtree, batch sizes, resource.
    settings: Value,
    started_ns: u64,
}

impl Tailer {
    async fn stop(self) {
        self.cancel.cancel();
        // Not bounded by the grace: a second tailer must not start while this one
        // could still write the checkpoint file. Its appends finish fast.
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// Forwards the queue's hand-off channel to the exporter of the moment.
struct Relay {
    current: Arc<Mutex<Option<mpsc::Sender<Queued>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn new(mut hot: mpsc::Receiver<Queued>) -> Relay {
        let current: Arc<Mutex<Option<mpsc::Sender<Queued>>>> = Arc::default();
        let shared = current.clone();
        let task = tokio::spawn(async move {
            while let Some(q) = hot.recv().await {
                let tx = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(tx) = tx {
                    // Full or gone: the exporter reads this batch from disk instead.
                    let _ = tx.try_send(q);
                }
            }
        });
        Relay { current, task }
    }

    /// A new receiving end for a new exporter; the previous one is closed.
    fn attach(&self) -> mpsc::Receiver<Queued> {
        let (tx, rx) = mpsc::channel(RELAY_CAPACITY);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }
}

/// One source's health, for OpAMP's `ComponentHealth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceHealth {
    pub(crate) name: String,
    /// `None`: running; `Some(error)`: failed to start or stopped.
    pub(crate) error: Option<String>,
    pub(crate) started_ns: u64,
}

/// The journald source's thread, restarted when its settings change.
struct Journal {
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    settings: String,
    started_ns: u64,
}

impl Journal {
    async fn stop(self) {
        self.cancel.cancel();
        // It wakes from its journal wait within half a second; like the tailer, a second
        // reader must not start on the same cursor while this one still runs.
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// What the journald source depends on: a change to any of it restarts the source.
fn journal_settings(c: &Config) -> Option<String> {
    c.journald.as_ref().map(|j| {
        format!(
            "{j:?}|{}|{}|{:?}",
            c.exporter.batch_max_records,
            c.exporter.batch_max_bytes,
            resource_key(c)
        )
    })
}

/// The configuration running now, with the tree it was validated from.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    pub(crate) config: Config,
    pub(crate) tree: Value,
}

/// The agent's parts, restartable one by one.
pub(crate) struct Runtime {
    stats: Arc<Stats>,
    queue: DiskQueue,
    root: CancellationToken,
    relay: Relay,
    /// The exporter's credential once known (configured or enrolled): the OpAMP client
    /// authenticates with it.
    credential: Arc<Mutex<Option<Secret>>>,
    current: Applied,
    resource: Resource,
    sink: Arc<receiver::Sink>,
    exporter: Task,
    tailer: Option<Tailer>,
    journal: Option<Journal>,
    /// The RSS watcher behind `limits.max_memory_mib`, with its limit.
    memory: Option<(u64, Task)>,
    host: Option<(Duration, Task)>,
    scrapers: Vec<(ScrapeTarget, usize, Task)>,
    grpc: Option<Listener>,
    http: Option<Listener>,
    health: Option<Listener>,
    /// Sources that failed to start or stopped on their own, with their error.
    failed: BTreeMap<String, (String, u64)>,
}

fn resource_key(c: &Config) -> Vec<(String, String)> {
    c.resource_attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn tailer_settings(a: &Applied) -> Value {
    let mut m = serde_yaml_ng::Mapping::new();
    let tree = |k: &str| match &a.tree {
        Value::Mapping(t) => t.get(k).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    m.insert("files".into(), tree("files"));
    m.insert("resource_attributes".into(), tree("resource_attributes"));
    m.insert(
        "batch".into(),
        Value::Sequence(vec![
            (a.config.exporter.batch_max_records as u64).into(),
            (a.config.exporter.batch_max_bytes as u64).into(),
        ]),
    );
    Value::Mapping(m)
}

fn exporter_key(e: &ExporterConfig) -> String {
    // Debug masks the token; compare it separately.
    format!(
        "{e:?}|{}|{}",
        e.token.as_ref().map(Secret::expose).unwrap_or(""),
        e.enrollment
            .as_ref()
            .map(|en| en.token.expose())
            .unwrap_or("")
    )
}

impl Runtime {
    /// Opens the queue and starts everything `applied` asks for. A listener that
    /// cannot bind fails the start, as before remote configuration existed.
    pub(crate) async fn start(applied: Applied) -> anyhow::Result<Runtime> {
        let config = &applied.config;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state dir {}", config.state_dir.display()))?;
        let stats = Arc::new(Stats::default());
        let root = CancellationToken::new();
        let consumer = {
            let (dir, max, policy, stats) = (
                config.state_dir.clone(),
                config.queue_max_bytes,
                config.queue_when_full,
                stats.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::queue::DiskQueue::open(&dir, max, policy, stats)
            })
            .await
            .context("queue open task")??
        };
        let queue = consumer.queue.clone();
        queue.set_codec(crate::queue::BatchCodec::from_config(
            config.exporter.compression,
            config.exporter.compression_level,
        ));
        let relay = Relay::new(consumer.hot);
        let resource = resource::host_resource(&config.resource_attributes);
        let sink = Arc::new(
            receiver::Sink::new(queue.clone(), stats.clone(), resource.clone())
                .with_redaction(crate::process::redact::Redactor::new(config.redact.clone())),
        );
        let credential = Arc::new(Mutex::new(config.exporter.token.clone()));
        let grpc_tls = config
            .exporter
            .tls
            .as_ref()
            .map(tlsclient::for_grpc)
            .transpose()
            .context("exporter.tls")?;
        let mut rt = Runtime {
            exporter: Task::spawn(&root, |_| async { None }),
            stats,
            queue,
            relay,
            credential,
            resource,
            sink,
            tailer: None,
            journal: None,
            memory: None,
            host: None,
            scrapers: Vec::new(),
            grpc: None,
            http: None,
            health: None,
            failed: BTreeMap::new(),
            current: applied.clone(),
            root,
        };
        rt.exporter = rt.spawn_exporter(config.exporter.clone(), grpc_tls);
        // Before any source starts, so that a process already over the cap reads nothing.
        rt.memory = config.max_memory_bytes.map(|l| (l, rt.spawn_memory(l)));
        rt.health = match config.health_listen {
            Some(addr) => Some(
                rt.start_health(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for /healthz"))?,
            ),
            None => None,
        };
        rt.grpc = match config.receiver.grpc {
            Some(addr) => Some(rt.start_receiver(true, addr, config.receiver.max_request_bytes).await.with_context(|| {
                format!("cannot listen on {addr} for OTLP/gRPC (receivers.otlp.grpc; `off` disables it)")
            })?),
            None => None,
        };
        rt.http = match config.receiver.http {
            Some(addr) => Some(rt.start_receiver(false, addr, config.receiver.max_request_bytes).await.with_context(|| {
                format!("cannot listen on {addr} for OTLP/HTTP (receivers.otlp.http; `off` disables it)")
            })?),
            None => None,
        };
        rt.start_tailer(&applied).await;
        rt.start_journal(config);
        rt.host = config.host_metrics_interval.map(|i| (i, rt.spawn_host(i)));
        for t in &config.scrape_targets {
            let task = rt.spawn_scraper(t.clone(), config.exporter.batch_max_bytes);
            rt.scrapers
                .push((t.clone(), config.exporter.batch_max_bytes, task));
        }
        Ok(rt)
    }

    /// The configuration running now.
    pub(crate) fn current(&self) -> &Applied {
        &self.current
    }

    /// The exporter's credential, once configured or enrolled.
    pub(crate) fn credential(&self) -> Option<Secret> {
        self.credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bound addresses of the local listeners, for the start-up log line.
    pub(crate) fn addresses(&self) -> [(&'static str, Option<SocketAddr>); 3] {
        [
            ("health", self.health.as_ref().map(|l| l.bound)),
            ("otlp_grpc", self.grpc.as_ref().map(|l| l.bound)),
            ("otlp_http", self.http.as_ref().map(|l| l.bound)),
        ]
    }

    fn spawn_exporter(
        &self,
        mut config: ExporterConfig,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Task {
        let consumer = Consumer {
            queue: self.queue.clone(),
            hot: self.relay.attach(),
        };
        let (state_dir, stats, credential) = (
            self.current.config.state_dir.clone(),
            self.stats.clone(),
            self.credential.clone(),
        );
        Task::spawn(&self.root, move |cancel| async move {
            // Without a key but with an enrollment token, the exporter starts once
            // enrolled; the sources fill the disk queue meanwhile.
            if config.token.is_none()
                && let Some(enrollment) = config.enrollment.clone()
            {
                match enroll::credential(&state_dir, &enrollment, config.tls.as_ref(), &cancel)
                    .await
                {
                    Ok(Some(key)) => config.token = Some(Secret::new(key)),
                    Ok(None) => return None,
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(error = %error, "cannot enroll; nothing will be sent until the agent is given a token or a new enrollment token");
                        return Some(error);
                    }
                }
            }
            *credential.lock().unwrap_or_else(PoisonError::into_inner) = config.token.clone();
            match export::Exporter::new(config, consumer, stats, tls) {
                Ok(exporter) => {
                    exporter.run(cancel).await;
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "exporter endpoint");
                    Some(format!("exporter endpoint: {e}"))
                }
            }
        })
    }

    async fn start_health(&self, addr: SocketAddr) -> std::io::Result<Listener> {
        let cancel = self.root.child_token();
        let (bound, handle) = health::serve(addr, self.stats.clone(), cancel.clone()).await?;
        Ok(Listener {
            settings: (addr, 0, Vec::new()),
            bound,
            task: Task {
                cancel,
                handle: tokio::spawn(async move { handle.await.err().map(|e| e.to_string()) }),
                started_ns: now_ns(),
            },
        })
    }

    async fn start_receiver(
        &self,
        grpc: bool,
        addr: SocketAddr,
        max: usize,
    ) -> std::io::Result<Listener> {
        let cancel = self.root.child_token();
        let (bound, handle) = if grpc {
            receiver::grpc::serve(addr, self.sink.clone(), max, cancel.clone()).await?
        } else {
            receiver::http::serve(addr, self.sink.clone(), max, cancel.clone()).await?
        };
        Ok(Listener {
            settings: (addr, max, resource_key(&self.current.config)),
            bound,
            task: Task {
                cancel,
                handle: tokio::spawn(async move { handle.await.err().map(|e| e.to_string()) }),
                started_ns: now_ns(),
            },
        })
    }

    async fn start_tailer(&mut self, applied: &Applied) {
        self.failed.remove("files");
        if applied.config.inputs.is_empty() {
            return;
        }
        let (c, q, s, r) = (
            applied.config.clone(),
            self.queue.clone(),
            self.stats.clone(),
            self.resource.clone(),
        );
        let made = tokio::task::spawn_blocking(move || tail::Tailer::new(&c, q, s, r)).await;
        let tailer = match made {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return self.fail("files", e.to_string()),
            Err(e) => return self.fail("files", format!("start task: {e}")),
        };
        let cancel = self.root.child_token();
        let (rt, token) = (tokio::runtime::Handle::current(), cancel.clone());
        match std::thread::Builder::new()
            .name("file-tail".into())
            .spawn(move || tailer.run(rt, token))
        {
            Ok(thread) => {
                self.tailer = Some(Tailer {
                    cancel,
                    thread,
                    settings: tailer_settings(applied),
                    started_ns: now_ns(),
                })
            }
            Err(e) => self.fail("files", format!("cannot start the file-tail thread: {e}")),
        }
    }

    fn start_journal(&mut self, config: &Config) {
        self.failed.remove("journald");
        let (Some(j), Some(settings)) = (config.journald.clone(), journal_settings(config)) else {
            return;
        };
        let cancel = self.root.child_token();
        let source = journald::Source {
            config: j,
            state_dir: config.state_dir.clone(),
            queue: self.queue.clone(),
            stats: self.stats.clone(),
            resource: self.resource.clone(),
            batch_max_records: config.exporter.batch_max_records,
            batch_max_bytes: config.exporter.batch_max_bytes,
        };
        match journald::spawn(source, tokio::runtime::Handle::current(), cancel.clone()) {
            Ok(thread) => {
                self.journal = Some(Journal {
                    cancel,
                    thread,
                    settings,
                    started_ns: now_ns(),
                })
            }
            Err(e) => self.fail("journald", format!("cannot start the journald thread: {e}")),
        }
    }

    fn spawn_memory(&self, limit: u64) -> Task {
        memlimit::check(limit, &self.stats);
        let s = self.stats.clone();
        Task::spawn(&self.root, move |cancel| async move {
            memlimit::run(limit, s, cancel).await;
            None
        })
    }

    fn fail(&mut self, name: &str, error: String) {
        tracing::error!(source = name, error = %error, "source failed to start");
        self.failed.insert(name.to_string(), (error, now_ns()));
    }

    fn spawn_host(&self, interval: Duration) -> Task {
        let (r, q, s) = (
            self.resource.clone(),
            self.queue.clone(),
            self.stats.clone(),
        );
        Task::spawn(&self.root, move |cancel| async move {
            hostmetrics::run(interval, r, q, s, cancel).await;
            None
        })
    }

    fn spawn_scraper(&self, target: ScrapeTarget, batch_max_bytes: usize) -> Task {
        let (q, s) = (self.queue.clone(), self.stats.clone());
        Task::spawn(&self.root, move |cancel| async move {
            scrape::run(target, batch_max_bytes, q, s, cancel).await;
            None
        })
    }

    /// Applies `next` in place (see the module doc). On `Err` the running
    /// configuration is unchanged.
    pub(crate) async fn apply(&mut self, next: Applied) -> Result<(), String> {
        let (old, new) = (&self.current.config, &next.config);
        let mut fixed = Vec::new();
        if old.state_dir != new.state_dir {
            fixed.push("state_dir");
        }
        if old.queue_max_bytes != new.queue_max_bytes {
            fixed.push("queue.max_bytes");
        }
        if old.queue_when_full != new.queue_when_full {
            fixed.push("queue.when_full");
        }
        if old.log_format != new.log_format {
            fixed.push("log_format");
        }
        // The receivers' sink holds the global rules; file inputs carry them too.
        if format!("{:?}", old.redact) != format!("{:?}", new.redact) {
            fixed.push("redact");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "{} cannot change while the agent runs; change it in the local file and restart",
                fixed.join(", ")
            ));
        }
        // Everything that can fail, before anything changes.
        let exporter_changed = exporter_key(&old.exporter) != exporter_key(&new.exporter);
        let grpc_tls = if exporter_changed {
            new.exporter
                .tls
                .as_ref()
                .map(tlsclient::for_grpc)
                .transpose()
                .map_err(|e| format!("exporter.tls: {e:#}"))?
        } else {
            None
        };
        let resource_changed = old.resource_attributes != new.resource_attributes;
        let want = |addr: Option<SocketAddr>, max: usize| addr.map(|a| (a, max, resource_key(new)));
        let want_grpc = want(new.receiver.grpc, new.receiver.max_request_bytes);
        let want_http = want(new.receiver.http, new.receiver.max_request_bytes);
        let want_health = new.health_listen.map(|a| (a, 0, Vec::new()));
        // The new configuration's resource and sink, used by whatever (re)starts.
        let (old_resource, old_sink) = (self.resource.clone(), self.sink.clone());
        if resource_changed {
            self.resource = resource::host_resource(&new.resource_attributes);
            self.sink = Arc::new(receiver::Sink::new(
                self.queue.clone(),
                self.stats.clone(),
                self.resource.clone(),
            ));
        }
        let previous = std::mem::replace(&mut self.current, next.clone());
        let mut fresh: Vec<(usize, Listener)> = Vec::new();
        let mut bind_error = None;
        for (i, (running, wanted)) in [
            (&self.grpc, &want_grpc),
            (&self.http, &want_http),
            (&self.health, &want_health),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(wanted) = wanted else { continue };
            let same_addr = running.as_ref().is_some_and(|l| l.settings.0 == wanted.0);
            if running.as_ref().is_some_and(|l| &l.settings == wanted) || same_addr {
                continue;
            }
            let started = match i {
                0 => self.start_receiver(true, wanted.0, wanted.1).await,
                1 => self.start_receiver(false, wanted.0, wanted.1).await,
                _ => self.start_health(wanted.0).await,
            };
            match started {
                Ok(l) => fresh.push((i, l)),
                Err(e) => {
                    let key = [
                        "receivers.otlp.grpc",
                        "receivers.otlp.http",
                        "health_listen",
                    ][i];
                    bind_error = Some(format!("{key}: cannot listen on {}: {e}", wanted.0));
                    break;
                }
            }
        }
        if let Some(e) = bind_error {
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            for (_, l) in fresh {
                l.task.stop(deadline).await;
            }
            self.current = previous;
            self.resource = old_resource;
            self.sink = old_sink;
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut changed: Vec<&str> = Vec::new();
        // The exporter first: a file source stopping below may wait for queue room.
        if exporter_changed {
            let old_exporter = std::mem::replace(
                &mut self.exporter,
                Task::spawn(&self.root, |_| async { None }),
            );
            old_exporter.stop(deadline).await;
            self.failed.remove("exporter");
            self.exporter = self.spawn_exporter(new.exporter.clone(), grpc_tls);
            changed.push("exporter");
        }
        // Listeners: swap in the ones bound above, restart same-address changes.
        let mut slots = [self.grpc.take(), self.http.take(), self.health.take()];
        let wanted = [want_grpc, want_http, want_health];
        let mut fresh: BTreeMap<usize, Listener> = fresh.into_iter().collect();
        for i in 0..3 {
            let name = ["receiver.otlp.grpc", "receiver.otlp.http", "health"][i];
            if let Some(l) = fresh.remove(&i) {
                if let Some(old) = slots[i].take() {
                    old.task.stop(deadline).await;
                }
                slots[i] = Some(l);
                changed.push(name);
                continue;
            }
            match (&slots[i], &wanted[i]) {
                (Some(l), Some(w)) if &l.settings == w => {}
                (None, None) => {}
                (Some(_), None) => {
                    if let Some(old) = slots[i].take() {
                        old.task.stop(deadline).await;
                    }
                    changed.push(name);
                }
                (_, Some(w)) => {
                    // Same address, other settings: it must close before it rebinds.
                    if let Some(old) = slots[i].take() {
                        old.task.stop(deadline).await;
                    }
                    let started = match i {
                        0 => self.start_receiver(true, w.0, w.1).await,
                        1 => self.start_receiver(false, w.0, w.1).await,
                        _ => self.start_health(w.0).await,
                    };
                    match started {
                        Ok(l) => {
                            self.failed.remove(name);
                            slots[i] = Some(l);
                        }
                        Err(e) => self.fail(name, format!("cannot listen on {}: {e}", w.0)),
                    }
                    changed.push(name);
                }
            }
        }
        let [grpc, http, health] = slots;
        (self.grpc, self.http, self.health) = (grpc, http, health);
        // Files.
        let new_settings = tailer_settings(&next);
        let tailer_same = match &self.tailer {
            Some(t) => t.settings == new_settings && !next.config.inputs.is_empty(),
            None => next.config.inputs.is_empty(),
        };
        if next.config.inputs.is_empty() {
            self.failed.remove("files");
        }
        if !tailer_same {
            if let Some(t) = self.tailer.take() {
                t.stop().await;
            }
            self.start_tailer(&next).await;
            changed.push("files");
        }
        // journald.
        let journal_now = self.journal.as_ref().map(|j| j.settings.clone());
        if journal_now != journal_settings(new) {
            if let Some(j) = self.journal.take() {
                j.stop().await;
            }
            self.start_journal(new);
            changed.push("journald");
        }
        // The memory cap; a removed cap must not leave the sources paused.
        if self.memory.as_ref().map(|(l, _)| *l) != new.max_memory_bytes {
            if let Some((_, t)) = self.memory.take() {
                t.stop(deadline).await;
            }
            self.stats.memory_over_limit.set(0);
            self.memory = new.max_memory_bytes.map(|l| (l, self.spawn_memory(l)));
            changed.push("limits");
        }
        // Host metrics.
        let host_same = match (&self.host, new.host_metrics_interval) {
            (Some((i, _)), Some(n)) => *i == n && !resource_changed,
            (None, None) => true,
            _ => false,
        };
        if !host_same {
            if let Some((_, t)) = self.host.take() {
                t.stop(deadline).await;
            }
            self.host = new.host_metrics_interval.map(|i| (i, self.spawn_host(i)));
            changed.push("host_metrics");
        }
        // Scrape targets: unchanged ones keep running.
        let mut keep = Vec::new();
        for (target, batch, task) in std::mem::take(&mut self.scrapers) {
            if batch == new.exporter.batch_max_bytes && new.scrape_targets.contains(&target) {
                keep.push((target, batch, task));
            } else {
                task.stop(deadline).await;
                changed.push("scrape_configs");
            }
        }
        for t in &new.scrape_targets {
            if !keep.iter().any(|(k, _, _)| k == t) {
                let task = self.spawn_scraper(t.clone(), new.exporter.batch_max_bytes);
                keep.push((t.clone(), new.exporter.batch_max_bytes, task));
                changed.push("scrape_configs");
            }
        }
        self.scrapers = keep;
        changed.dedup();
        tracing::info!(changed = ?changed, "configuration applied");
        Ok(())
    }

    /// Every source with its state; finished tasks that were not asked to stop are
    /// reported failed.
    pub(crate) fn health(&mut self) -> Vec<SourceHealth> {
        let mut out = Vec::new();
        let mut check =
            |name: String, task: &mut Task, failed: &mut BTreeMap<String, (String, u64)>| {
                if task.handle.is_finished()
                    && !task.cancel.is_cancelled()
                    && !failed.contains_key(&name)
                {
                    let error = (&mut task.handle)
                        .now_or_never()
                        .and_then(|r| r.unwrap_or_else(|e| Some(e.to_string())))
                        .unwrap_or_else(|| "stopped".to_string());
                    failed.insert(name.clone(), (error, now_ns()));
                }
                out.push(SourceHealth {
                    error: failed.get(&name).map(|(e, _)| e.clone()),
                    started_ns: task.started_ns,
                    name,
                });
            };
        check("exporter".into(), &mut self.exporter, &mut self.failed);
        if let Some((_, t)) = &mut self.host {
            check("host_metrics".into(), t, &mut self.failed);
        }
        for (target, _, t) in &mut self.scrapers {
            check(
                format!("scrape/{}/{}", target.job, target.address),
                t,
                &mut self.failed,
            );
        }
        for (name, l) in [
            ("receiver.otlp.grpc", &mut self.grpc),
            ("receiver.otlp.http", &mut self.http),
            ("health", &mut self.health),
        ] {
            if let Some(l) = l {
                check(name.into(), &mut l.task, &mut self.failed);
            }
        }
        if let Some(j) = &self.journal {
            let error = (j.thread.is_finished() && !j.cancel.is_cancelled())
                .then(|| "the journald source stopped (see the agent log)".to_string());
            out.push(SourceHealth {
                name: "journald".into(),
                error,
                started_ns: j.started_ns,
            });
        }
        if let Some(t) = &self.tailer {
            let error = if t.thread.is_finished() && !t.cancel.is_cancelled() {
                Some("file tailing stopped (see the agent log)".to_string())
            } else {
                None
            };
            out.push(SourceHealth {
                name: "files".into(),
                error,
                started_ns: t.started_ns,
            });
        }
        for (name, (error, at)) in &self.failed {
            if !out.iter().any(|h| &h.name == name) {
                out.push(SourceHealth {
                    name: name.clone(),
                    error: Some(error.clone()),
                    started_ns: *at,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Cancels everything, waits up to the grace period, closes the queue.
    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        self.root.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for l in [self.grpc, self.http].into_iter().flatten() {
            l.task.stop(deadline).await;
        }
        self.exporter.stop(deadline).await;
        if let Some((_, t)) = self.host {
            t.stop(deadline).await;
        }
        for (_, _, t) in self.scrapers {
            t.stop(deadline).await;
        }
        if let Some(l) = self.health {
            l.task.stop(deadline).await;
        }
        if let Some(t) = self.tailer {
            // The tailer checks the token between files and polls; its appends finish fast.
            if tokio::time::timeout_at(deadline, t.stop()).await.is_err() {
                tracing::warn!("file tailer still busy at the shutdown deadline");
            }
        }
        if let Some(j) = self.journal
            && tokio::time::timeout_at(deadline, j.stop()).await.is_err()
        {
            tracing::warn!("journald source still busy at the shutdown deadline");
        }
        if let Some((_, t)) = self.memory {
            t.stop(deadline).await;
        }
        self.relay.task.abort();
        drop(self.sink);
        let queue = self.queue;
        tokio::task::spawn_blocking(move || queue.shutdown_blocking())
            .await
            .context("queue shutdown task")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(state: &std::path::Path, extra: &str) -> Applied {
        let text = format!(
            "state_dir: {}\nhealth_listen: 'off'\nreceivers: {{otlp: {{grpc: 'off', http: 'off'}}}}\nhost_metrics: {{enabled: false}}\nexporter: {{endpoint: 'http://127.0.0.1:9'}}\nqueue: {{max_bytes: 8388608}}\n",
            state.display()
        );
        let mut tree: Value = serde_yaml_ng::from_str(&text).unwrap();
        if let Value::Mapping(m) = &mut tree
            && let Ok(Value::Mapping(more)) = serde_yaml_ng::from_str::<Value>(extra)
        {
            for (k, v) in more {
                m.insert(k, v);
            }
        }
        let config = Config::from_tree(tree.clone(), "").unwrap();
        Applied { config, tree }
    }

    #[tokio::test]
    async fn fixed_keys_and_unbindable_listeners_fail_with_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::start(applied(dir.path(), "")).await.unwrap();
        let err = rt
            .apply(applied(dir.path(), "log_format: json\n"))
            .await
            .unwrap_err();
        assert!(err.contains("log_format cannot change"), "{err}");
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let err = rt
            .apply(applied(
                dir.path(),
                &format!("receivers: {{otlp: {{grpc: 'off', http: '127.0.0.1:{port}'}}}}\n"),
            ))
            .await
            .unwrap_err();
        assert!(
            err.starts_with("receivers.otlp.http: cannot listen on"),
            "{err}"
        );
        assert!(rt.current().config.receiver.http.is_none());
        assert!(rt.addresses()[2].1.is_none());
        // A free address applies, and shows as a healthy source.
        rt.apply(applied(
            dir.path(),
            "receivers: {otlp: {grpc: 'off', http: '127.0.0.1:0'}}\n",
        ))
        .await
        .unwrap();
        assert!(rt.addresses()[2].1.is_some());
        let health = rt.health();
        let http = health
            .iter()
            .find(|h| h.name == "receiver.otlp.http")
            .unwrap();
        assert!(http.error.is_none(), "{health:?}");
        rt.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn unchanged_sources_keep_running_and_removed_ones_stop() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let files = format!(
            "files: {{poll_interval: 100ms, inputs: [{{include: ['{}/*.log']}}]}}\nhost_metrics: {{enabled: true, interval: 1h}}\n",
            logs.display()
        );
        let mut rt = Runtime::start(applied(dir.path(), &files)).await.unwrap();
        let started = |rt: &mut Runtime, name: &str| {
            rt.health()
                .into_iter()
                .find(|h| h.name == name)
                .map(|h| h.started_ns)
        };
        let files_started = started(&mut rt, "files").unwrap();
        let host_started = started(&mut rt, "host_metrics").unwrap();
        // Only the exporter changes: the file source and host metrics are untouched.
        let mut next = applied(dir.path(), &files);
        next.config.exporter.compression = crate::config::Compression::None;
        rt.apply(next).await.unwrap();
        assert_eq!(started(&mut rt, "files"), Some(files_started));
        assert_eq!(started(&mut rt, "host_metrics"), Some(host_started));
        // Inputs removed: the file source stops; host metrics still untouched.
        rt.apply(applied(
            dir.path(),
            "host_metrics: {enabled: true, interval: 1h}\n",
        ))
        .await
        .unwrap();
        assert_eq!(started(&mut rt, "files"), None);
        assert_eq!(started(&mut rt, "host_metrics"), Some(host_started));
        rt.shutdown().await.unwrap();
    }
}
