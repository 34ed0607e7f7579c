//! Enrollment: on first start, an agent with an enrollment token (and no key) trades it
//! at the collector's `POST /api/v1/agents/enroll` for its own ingest key, which it keeps
//! in `<state_dir>/credential.json` (mode 0600) and uses from then on. Until that
//! succeeds the sources keep filling the disk queue; the exporter waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientTls, Enrollment};

/// What the collector issued.
#[derive(Serialize, Deserialize)]
struct Credential {
    agent_id: String,
    tenant: String,
    api_key: String,
}

fn credential_path(state_dir: &Path) -> PathBuf {
    state_dir.join("credential.json")
}

/// The saved key, if this agent enrolled before.
fn saved(state_dir: &Path) -> Option<Credential> {
    let text = std::fs::read_to_string(credential_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save(state_dir: &Path, credential: &Credential) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = credential_path(state_dir);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(serde_json::to_string(credential)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The host name as the resource's `host.name` gets it (see `resource::host_resource`).
fn hostname() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Why one attempt failed, and whether trying again can help.
enum Failure {
    /// The collector refused the token (revoked, expired, used up): retrying will not help.
    Refused(String),
    /// Unreachable, overloaded, or a transport error.
    Retry(String),
}

async fn attempt(enrollment: &Enrollment, tls: Option<&ClientTls>) -> Result<Credential, Failure> {
    let uri: hyper::Uri = format!("{}/api/v1/agents/enroll", enrollment.url)
        .parse()
        .map_err(|e| Failure::Refused(format!("enroll_url: {e}")))?;
    let host = uri.host().unwrap_or("localhost").to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let body = serde_json::json!({
        "token": enrollment.token.expose(),
        "hostname": hostname(),
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
    });
    let request = hyper::Request::post(uri.path())
        .header("host", &host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| Failure::Retry("connect timed out".into()))?
    .map_err(|e| Failure::Retry(format!("connect: {e}")))?;
    let response = if https {
        let config = crate::tlsclient::for_https(tls.unwrap_or(&ClientTls::default()))
            .map_err(|e| Failure::Refused(format!("{e:#}")))?;
        let name = tls
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| host.clone());
        let server_name = rustls_pki_types::ServerName::try_from(name)
            .map_err(|e| Failure::Refused(format!("server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| Failure::Retry(format!("tls: {e}")))?;
        send(stream, request).await?
    } else {
        send(tcp, request).await?
    };
    let (status, body) = response;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| Failure::Retry(format!("answer: {e}")));
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    if status.is_client_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS {
        Err(Failure::Refused(format!("{status}: {message}")))
    } else {
        Err(Failure::Retry(format!("{status}: {message}")))
    }
}

async fn send<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Retry(format!("http: {e}")))?;
    tokio::spawn(conn);
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| Failure::Retry("no answer within 30 s".into()))?
        .map_err(|e| Failure::Retry(format!("http: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Retry(format!("http body: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// The agent's key: saved from an earlier enrollment, or enrolled now (retrying with
/// backoff while the collector is unreachable). `None` when cancelled first; an error
/// when the collector refuses the token.
pub(crate) async fn credential(
    state_dir: &Path,
    enrollment: &Enrollment,
    tls: Option<&ClientTls>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<String>> {
    if let Some(c) = saved(state_dir) {
        tracing::info!(agent_id = %c.agent_id, tenant = %c.tenant, "using the key from an earlier enrollment");
        return Ok(Some(c.api_key));
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        match attempt(enrollment, tls).await {
            Ok(c) => {
                save(state_dir, &c)?;
                tracing::info!(agent_id = %c.agent_id, tenant = %c.tenant, "enrolled with the collector");
                return Ok(Some(c.api_key));
            }
            Err(Failure::Refused(why)) => {
                anyhow::bail!("the collector refused enrollment: {why}");
            }
            Err(Failure::Retry(why)) => {
                tracing::warn!(error = %why, retry_in_ms = backoff.as_millis() as u64, "enrollment failed; retrying");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
