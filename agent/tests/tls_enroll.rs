//! End to end: an agent with only an enrollment token enrolls over HTTPS, keeps its key,
//! and ships host metrics over OTLP/gRPC with TLS and a client certificate to a
//! collector that requires one; a restart reuses the saved key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use common::*;

fn pki(dir: &std::path::Path) -> (String, Arc<ClientConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server_cert, server_key) = leaf("collector", vec!["localhost".into(), "127.0.0.1".into()]);
    let (agent_cert, agent_key) = leaf("agent", vec!["agent".into()]);
    for (name, text) in [
        ("ca.crt", ca_cert.pem()),
        ("tls.crt", server_cert),
        ("tls.key", server_key),
        ("agent.crt", agent_cert),
        ("agent.key", agent_key),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), Arc::new(config))
}

/// GET over HTTPS with the admin key; the JSON answer.
async fn https_get(
    api: std::net::SocketAddr,
    tls: &Arc<ClientConfig>,
    path: &str,
    token: &str,
) -> Value {
    let tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let stream = TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_enrolled_agent_ships_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pki");
    std::fs::create_dir_all(&certs).unwrap();
    let (_ca, api_tls) = pki(&certs);
    let data = dir.path().join("collector");
    let mut c = std::process::Command::new(collector_bin());
    c.arg("--data-dir")
        .arg(&data)
        .args([
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .env("VANTAGE_LOG", "info")
        .env("VANTAGE_TLS__CERT_FILE", certs.join("tls.crt"))
        .env("VANTAGE_TLS__KEY_FILE", certs.join("tls.key"))
        .env("VANTAGE_TLS__CLIENT_CA_FILE", certs.join("ca.crt"));
    let (collector, ready) = Proc::spawn(c);
    let grpc = ready["otlp_grpc"].as_str().unwrap().to_string();
    let api: std::net::SocketAddr = ready["api"].as_str().unwrap().parse().unwrap();
    let admin = std::fs::read_to_string(data.join("initial-admin.txt")).unwrap();
    let line = |k: &str| {
        admin
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    let (admin_key, enrollment) = (line("api_key: "), line("enrollment_token: "));

    let state = dir.path().join("agent");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nexporter:\n  endpoint: https://{grpc}\n  enrollment_token: {enrollment}\n  enroll_url: https://{api}\n  retry_initial_backoff: 100ms\n  tls:\n    ca_file: {ca}\n    cert_file: {cert}\n    key_file: {key}\nhost_metrics:\n  enabled: true\n  interval: 1s\n",
            state = state.display(),
            ca = certs.join("ca.crt").display(),
            cert = certs.join("agent.crt").display(),
            key = certs.join("agent.key").display(),
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let agent = Agent::start(&["--config", &config_arg], "");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    loop {
        let fleet = https_get(api, &api_tls, "/api/v1/agents", &admin_key).await;
        let q = https_get(
            api,
            &api_tls,
            "/api/v1/query?query=count(system_memory_usage_bytes)",
            &admin_key,
        )
        .await;
        let enrolled = fleet["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["hostname"] == hostname.as_str()));
        let has_metrics = q["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        if enrolled && has_metrics {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent did not enroll and deliver: fleet {fleet}, query {q}\nagent log:\n{}\ncollector log:\n{}",
            agent.proc.log(),
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let credential = state.join("credential.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&credential).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        !agent.proc.log().contains(&enrollment),
        "the token is never logged"
    );
    // A restart uses the saved key: still one agent enrolled.
    assert!(agent.proc.terminate());
    let agent = Agent::start(&["--config", &config_arg], "");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !agent
        .proc
        .log()
        .contains("using the key from an earlier enrollment")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            agent.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fleet = https_get(api, &api_tls, "/api/v1/agents", &admin_key).await;
    assert_eq!(fleet["agents"].as_array().unwrap().len(), 1, "{fleet}");
}
