//! End to end: what wraps every API response. Cross-origin access is refused unless
//! `api.cors_allowed_origins` names the origin; security headers are on every answer,
//! refusals included; a bad origin list stops the start with a message naming the key.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use common::*;

const GRAFANA: &str = "https://grafana.example.com";

/// A CORS preflight for a GET with a bearer token, from `origin`.
async fn preflight(c: &Collector, origin: &str) -> Reply {
    c.request_anonymous(
        Method::OPTIONS,
        &format!("http://{}/api/v1/query", c.addrs.api),
        &[
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
        Bytes::new(),
    )
    .await
}

fn assert_security_headers(r: &Reply) {
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|v| v.contains("frame-ancestors 'none'")),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn no_origin_is_allowed_by_default_and_headers_are_always_there() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let r = preflight(&c, GRAFANA).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "{:?}",
        r.headers
    );
    let r = c
        .api_request(
            Method::GET,
            "/api/v1/query?query=1",
            &[("origin", GRAFANA)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_security_headers(&r);
    // Refusals carry them too, and say nothing about the internals.
    let r = c
        .request_anonymous(
            Method::GET,
            &format!("http://{}/api/v1/query?query=1", c.addrs.api),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_security_headers(&r);
    let r = c.api_get("/no/such/endpoint").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_security_headers(&r);
}

#[tokio::test]
async fn configured_origins_and_only_those_get_cors() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env(
            "VANTAGE_API__CORS_ALLOWED_ORIGINS",
            &format!("{GRAFANA}, http://localhost:3000"),
        )
        .start(dir.path());
    let r = preflight(&c, GRAFANA).await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(GRAFANA)
    );
    assert!(
        r.header("access-control-allow-headers")
            .is_some_and(|v| v.to_ascii_lowercase().contains("authorization")),
        "{:?}",
        r.headers
    );
    let r = c
        .api_request(
            Method::GET,
            "/api/v1/query?query=1",
            &[("origin", GRAFANA)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(GRAFANA)
    );
    let r = preflight(&c, "https://evil.example.com").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_wildcard_or_malformed_origin_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = match Collector::builder()
        .env("VANTAGE_API__CORS_ALLOWED_ORIGINS", "*")
        .try_start(dir.path())
    {
        Ok(_) => panic!("the collector started with a wildcard origin"),
        Err(e) => e,
    };
    assert!(err.contains("api.cors_allowed_origins"), "{err}");
}
