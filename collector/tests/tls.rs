//! End to end: TLS on every listener from certificate files made by a test CA, client
//! certificates required on the OTLP ports when a client CA is configured, and a renewed
//! certificate served without a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;

use common::*;

/// A CA and what it signed, as PEM text.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate and key signed by `ca`: (cert PEM, key PEM, cert DER).
fn leaf(ca: &Ca, name: &str, sans: &[&str]) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 request over TLS; `Err` when the connection or handshake fails. Also
/// returns the server's leaf certificate.
async fn https(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Result<(StatusCode, String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        sender.send_request(request.body(Full::new(Bytes::from_static(body))).unwrap()),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), leaf))
}

#[tokio::test]
async fn every_listener_speaks_tls_and_otlp_ports_require_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test ca");
    let (server_cert, server_key, server_der) = leaf(&ca, "collector", &["localhost", "127.0.0.1"]);
    let (agent_cert, agent_key, _) = leaf(&ca, "agent-1", &["agent-1"]);
    let rogue = new_ca("rogue ca");
    let (rogue_cert, rogue_key, _) = leaf(&rogue, "agent-x", &["agent-x"]);
    let path = |name: &str| pki.path().join(name).display().to_string();
    std::fs::write(path("tls.crt"), &server_cert).unwrap();
    std::fs::write(path("tls.key"), &server_key).unwrap();
    std::fs::write(path("ca.crt"), &ca.cert_pem).unwrap();
    let c = Collector::builder()
        .env("VANTAGE_TLS__CERT_FILE", &path("tls.crt"))
        .env("VANTAGE_TLS__KEY_FILE", &path("tls.key"))
        .env("VANTAGE_TLS__CLIENT_CA_FILE", &path("ca.crt"))
        .start(dir.path());
    let auth = bearer(c.token());

    // The API: server certificate only (browsers and Grafana have no client certificate).
    let no_identity = client_config(&ca.cert_pem, None);
    let (status, body, leaf_der) = https(
        c.addrs.api,
        no_identity.clone(),
        Method::GET,
        "/api/v1/auth/me",
        &[("authorization", &auth)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(leaf_der, server_der, "the configured certificate is served");
    // Plain HTTP to a TLS port gets no HTTP answer.
    assert!(!plain_http_answers(c.addrs.api).await);

    // OTLP/HTTP: with the CA's client certificate, accepted; without one, or with one
    // from another CA, the connection is refused.
    let json_logs = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"over tls"}}]}]}]}"#;
    let with_agent = client_config(&ca.cert_pem, Some((&agent_cert, &agent_key)));
    let (status, body, _) = https(
        c.addrs.http,
        with_agent,
        Method::POST,
        "/v1/logs",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json_logs,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    for config in [
        no_identity,
        client_config(&ca.cert_pem, Some((&rogue_cert, &rogue_key))),
    ] {
        let r = https(
            c.addrs.http,
            config,
            Method::POST,
            "/v1/logs",
            &[("authorization", &auth)],
            json_logs,
        )
        .await;
        assert!(
            r.is_err(),
            "accepted without a valid client certificate: {r:?}"
        );
    }

    // OTLP/gRPC the same way, through tonic's TLS client as an agent would.
    let grpc = |identity: Option<(&str, &str)>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca.cert_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let endpoint = Channel::from_shared(format!("https://{}", c.addrs.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        async move { endpoint.connect().await }
    };
    let channel = grpc(Some((&agent_cert, &agent_key)))
        .await
        .expect("mTLS connect");
    let token: tonic::metadata::MetadataValue<_> = auth.parse().unwrap();
    let mut client =
        LogsServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        });
    client
        .export(logs_request(
            "svc",
            vec![log_record("grpc over mtls", vec![])],
        ))
        .await
        .expect("export over mTLS");
    let refused = match grpc(None).await {
        Err(_) => true,
        Ok(channel) => LogsServiceClient::new(channel)
            .export(logs_request("svc", vec![log_record("no cert", vec![])]))
            .await
            .is_err(),
    };
    assert!(refused, "gRPC without a client certificate must fail");

    // Both exports are searchable through the TLS API.
    let api = client_config(&ca.cert_pem, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = https(
            c.addrs.api,
            api.clone(),
            Method::GET,
            "/api/v1/logs/search?query=over",
            &[("authorization", &auth)],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let total = serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"].as_u64();
        if total == Some(2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not searchable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a plain-text HTTP request to `addr` gets an HTTP answer.
async fn plain_http_answers(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    buf[..n].starts_with(b"HTTP/")
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test ca");
    let (cert1, key1, der1) = leaf(&ca, "collector-1", &["localhost"]);
    let path = |name: &str| pki.path().join(name).display().to_string();
    std::fs::write(path("tls.crt"), &cert1).unwrap();
    std::fs::write(path("tls.key"), &key1).unwrap();
    let c = Collector::builder()
        .env("VANTAGE_TLS__CERT_FILE", &path("tls.crt"))
        .env("VANTAGE_TLS__KEY_FILE", &path("tls.key"))
        .start(dir.path());
    let config = client_config(&ca.cert_pem, None);
    let served = || async {
        https(
            c.addrs.api,
            config.clone(),
            Method::GET,
            "/healthz",
            &[],
            b"",
        )
        .await
        .unwrap()
        .2
    };
    assert_eq!(served().await, der1);

    // A broken file (half-written renewal) keeps the old certificate.
    std::fs::write(path("tls.crt"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c
        .log_events("tls files changed but cannot be used; keeping the previous certificate")
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bad file not noticed: {}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(served().await, der1);

    // The renewed pair is served to new connections.
    let (cert2, key2, der2) = leaf(&ca, "collector-2", &["localhost"]);
    std::fs::write(path("tls.key"), &key2).unwrap();
    std::fs::write(path("tls.crt"), &cert2).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if served().await == der2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "renewal not picked up: {}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn missing_or_mismatched_tls_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = new_ca("vantage test ca");
    let (cert, _, _) = leaf(&ca, "a", &["localhost"]);
    let (_, other_key, _) = leaf(&ca, "b", &["localhost"]);
    let path = |name: &str| pki.path().join(name).display().to_string();
    std::fs::write(path("tls.crt"), &cert).unwrap();
    std::fs::write(path("other.key"), &other_key).unwrap();
    let missing = Collector::builder()
        .env("VANTAGE_TLS__CERT_FILE", &path("tls.crt"))
        .env("VANTAGE_TLS__KEY_FILE", &path("nope.key"))
        .try_start(dir.path())
        .err()
        .expect("a missing key file stops the start");
    assert!(missing.contains("nope.key"), "{missing}");
    let mismatched = Collector::builder()
        .env("VANTAGE_TLS__CERT_FILE", &path("tls.crt"))
        .env("VANTAGE_TLS__KEY_FILE", &path("other.key"))
        .try_start(dir.path())
        .err()
        .expect("a key that does not match the certificate stops the start");
    assert!(mismatched.contains("tls.crt"), "{mismatched}");
    let half = Collector::builder()
        .env("VANTAGE_TLS__CERT_FILE", &path("tls.crt"))
        .try_start(dir.path())
        .err()
        .expect("a certificate without a key is a configuration error");
    assert!(
        half.contains("tls: cert_file and key_file go together"),
        "{half}"
    );
}
