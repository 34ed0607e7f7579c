//! TLS on the collector's listeners (rustls, ring): certificate files re-read when they
//! change, so a renewed certificate (cert-manager, certbot) is served without a
//! restart, and optional client-certificate verification for the OTLP ports (agents).
//!
//! Handshakes run in their own tasks (at most [`MAX_HANDSHAKES`] at once, each within
//! [`HANDSHAKE_TIMEOUT`]), so a client that connects and says nothing cannot hold up
//! the accept loop; finished connections reach the server through a small bounded
//! channel.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once per listener; more connections wait in the
/// kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 1024;
/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Where the certificate, key and (optionally) client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; set, the OTLP ports
    /// refuse clients without such a certificate.
    pub client_ca_file: Option<PathBuf>,
}

/// A TLS file problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (mismatch, unsupported key type).
    #[error("TLS configuration from {cert} and {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, verify_clients: bool, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| file_err(&files.key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_err = |reason: String| TlsError::Config {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?;
    let builder = match (&files.client_ca_file, verify_clients) {
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| file_err(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| config_err(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Size and modification time of each file: what "changed" means for a reload.
fn stamp(files: &TlsFiles) -> Vec<Option<(u64, SystemTime)>> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    })
    .collect()
}

/// A server configuration that follows its files.
pub struct ReloadingConfig {
    files: TlsFiles,
    verify_clients: bool,
    alpn: Vec<&'static [u8]>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Vec<Option<(u64, SystemTime)>>>,
    name: &'static str,
}

impl ReloadingConfig {
    /// Loads the files now (an error here stops start-up). `verify_clients` asks for
    /// client certificates when a client CA is configured; `alpn` lists the protocols
    /// offered (`h2` for gRPC, `h2` and `http/1.1` for HTTP).
    pub fn load(
        name: &'static str,
        files: &TlsFiles,
        verify_clients: bool,
        alpn: &[&'static [u8]],
    ) -> Result<Arc<Self>, TlsError> {
        let stamp = stamp(files);
        let config = build(files, verify_clients, alpn)?;
        Ok(Arc::new(ReloadingConfig {
            files: files.clone(),
            verify_clients,
            alpn: alpn.to_vec(),
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
            name,
        }))
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files if any changed; a bad new file keeps the old configuration
    /// (and is logged), so a half-written renewal never takes the port down.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return false;
            }
            *last = now;
        }
        match build(&self.files, self.verify_clients, &self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                tracing::info!(listener = self.name, cert = %self.files.cert_file.display(), "tls certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(listener = self.name, error = %e, "tls files changed but cannot be used; keeping the previous certificate");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_INTERVAL`] until `shutdown`.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        });
    }
}

/// A listener that hands out connections whose TLS handshake has completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with the configuration's current certificate.
    pub fn new(tcp: TcpListener, config: Arc<ReloadingConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(listener = config.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = TlsAcceptor::from(config.current());
                let tx = tx.clone();
                let name = config.name;
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "tls handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "tls handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
        use futures::StreamExt as _;
        tokio_stream::wrappers::ReceiverStream::new(self.ready).map(|(tls, _)| Ok(tls))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
