//! End to end: per-tenant rate limits on ingest bytes and queries answer 429 /
//! RESOURCE_EXHAUSTED with a retry delay, and leave other tenants alone.

mod common;

use hyper::{Method, StatusCode};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Code;

use common::*;

/// Creates `tenant` and a key in it with ingest and query scopes; returns the key.
async fn tenant_key(c: &Collector, tenant: &str) -> String {
    let reply = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &[],
            json!({ "name": tenant }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = json!({"name": "k", "scopes": ["ingest", "query"], "tenant": tenant});
    let reply = c
        .api_request(Method::POST, "/api/v1/keys", &[], body.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["key"].as_str().unwrap().to_string()
}

fn batch(word: &str, records: usize) -> Vec<u8> {
    let records = (0..records)
        .map(|i| log_record(&format!("{word} record {i} {}", "x".repeat(100)), vec![]))
        .collect();
    logs_request("svc", records).encode_to_vec()
}

#[tokio::test]
async fn ingest_over_the_tenant_rate_is_refused_with_a_delay_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LIMITS__INGEST_BYTES_PER_SECOND", "2000")
        .start(dir.path());
    let other = tenant_key(&c, "other").await;
    let body = batch("limited", 20); // ~3 KB: one request empties the second's budget
    assert!(body.len() > 2000);
    let protobuf = [("content-type", "application/x-protobuf")];

    let first = c.post_otlp("/v1/logs", &protobuf, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = c.post_otlp("/v1/logs", &protobuf, body.clone()).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text()
    );
    let retry: u64 = second
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "about a second of debt: {retry}");

    let status = c
        .logs_client()
        .await
        .export(logs_request(
            "svc",
            vec![log_record("limited grpc", vec![])],
        ))
        .await
        .expect_err("still over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        !status.details().is_empty(),
        "RetryInfo travels in the status details"
    );

    let auth = bearer(&other);
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("authorization", auth.as_str()),
    ];
    let theirs = c
        .post_otlp("/v1/logs", &headers, batch("unlimited", 20))
        .await;
    assert_eq!(
        theirs.status,
        StatusCode::OK,
        "another tenant has its own budget: {}",
        theirs.text()
    );

    // After the advertised delay the tenant may send again.
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    let later = c.post_otlp("/v1/logs", &protobuf, batch("later", 1)).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.text());
    c.wait_for_query("limited", 20).await;
}

#[tokio::test]
async fn queries_over_the_tenant_rate_get_429_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_LIMITS__QUERY_REQUESTS_PER_SECOND", "1")
        .start(dir.path());
    let other = tenant_key(&c, "other").await;
    let first = c.search_raw(&[("query", "")]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = c.search_raw(&[("query", "")]).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text()
    );
    assert!(second.header("retry-after").is_some());
    let body: Value = second.json();
    assert_eq!(body["errorType"], "resource_exhausted");
    let theirs: Value = c.search_as(&other, &[("query", "")]).await;
    assert_eq!(
        theirs["total"], 0,
        "another tenant's queries are not limited by this one"
    );
    // Admin endpoints are not queries.
    let keys = c.api_get("/api/v1/keys").await;
    assert_eq!(keys.status, StatusCode::OK);
}
