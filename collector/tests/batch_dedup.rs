//! End to end: replay suppression (DESIGN "Delivery"). An export carrying
//! `x-vantage-batch-id` that the collector already stored for the tenant is answered
//! with success and not stored again — over gRPC and HTTP, concurrently, across a
//! `kill -9`, and independently per tenant. Exports without the header are unchanged.

mod common;

use bytes::Bytes;
use futures::future::join_all;
use hyper::{Method, StatusCode};
use prost::Message as _;
use serde_json::json;
use tonic::metadata::MetadataValue;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

use common::*;

const HEADER: &str = "x-vantage-batch-id";

fn batch(marker: &str, n: usize) -> ExportLogsServiceRequest {
    let records = (0..n)
        .map(|i| {
            log_record(
                &format!("{marker} record {i}"),
                vec![kv_str("marker", marker)],
            )
        })
        .collect();
    logs_request("dedup", records)
}

/// Exports over gRPC with `auth` and, if given, the batch id; asserts success.
async fn send(
    c: &Collector,
    auth: Option<&str>,
    request: ExportLogsServiceRequest,
    id: Option<u128>,
) {
    let mut client = match auth {
        Some(a) => c.logs_client_with(Some(a)).await,
        None => c.logs_client().await,
    };
    let mut r = tonic::Request::new(request);
    if let Some(id) = id {
        let v: MetadataValue<_> = format!("{id:032x}").parse().unwrap();
        r.metadata_mut().insert(HEADER, v);
    }
    let response = client
        .export(r)
        .await
        .unwrap_or_else(|s| panic!("export failed: {s:?}; log:\n{}", c.log()))
        .into_inner();
    assert_eq!(response.partial_success, None);
}

async fn duplicates_counted(c: &Collector) -> f64 {
    metric_value(
        &c.metrics_text().await,
        "vantage_ingest_duplicate_batches_total",
        &[],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn the_same_batch_id_is_stored_once_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let id = 0x0123_4567_89ab_cdef_0011_2233_4455_6677u128;
    send(&c, None, batch("twice", 10), Some(id)).await;
    send(&c, None, batch("twice", 10), Some(id)).await;
    // The same id over OTLP/HTTP is the same batch too.
    let body = Bytes::from(batch("twice", 10).encode_to_vec());
    let hex = format!("{id:032x}");
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "application/x-protobuf"), (HEADER, &hex)],
            body.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Without the header, every export is ingested (SDKs do not send it).
    send(&c, None, batch("plain", 3), None).await;
    send(&c, None, batch("plain", 3), None).await;
    c.wait_for_query("attributes.marker:plain", 6).await;
    c.wait_for_query("attributes.marker:twice", 10).await;
    assert_eq!(duplicates_counted(&c).await, 2.0);
    // A malformed id is a clear client error, on both protocols.
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", "application/x-protobuf"), (HEADER, "xyz")],
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let mut client = c.logs_client().await;
    let mut r = tonic::Request::new(batch("bad", 1));
    r.metadata_mut().insert(HEADER, "12".parse().unwrap());
    let status = client.export(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Still exactly once after everything settled.
    c.wait_for_query("attributes.marker:twice", 10).await;
}

#[tokio::test]
async fn concurrent_duplicates_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let sends = (0..8u128).flat_map(|id| (0..4).map(move |_| id)).map(|id| {
        let c = &c;
        async move { send(c, None, batch(&format!("conc{id}"), 50), Some(1000 + id)).await }
    });
    join_all(sends).await;
    for id in 0..8 {
        c.wait_for_query(&format!("attributes.marker:conc{id}"), 50)
            .await;
    }
    assert_eq!(duplicates_counted(&c).await, 24.0);
}

#[tokio::test]
async fn a_replay_after_kill_9_is_not_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    // Some batches indexed and committed (their ids leave the WAL after the commit),
    // one acknowledged right before the crash (its id only in the WAL).
    for id in 0..5u128 {
        send(&c, None, batch(&format!("early{id}"), 20), Some(id + 1)).await;
    }
    c.wait_for_query("attributes.marker:early4", 20).await;
    // Let a commit and WAL truncation happen (the commit interval is 1 s by default).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    send(&c, None, batch("late", 20), Some(99)).await;
    c.kill_9();

    let c = Collector::start(dir.path());
    for id in 0..5u128 {
        send(&c, None, batch(&format!("early{id}"), 20), Some(id + 1)).await;
    }
    send(&c, None, batch("late", 20), Some(99)).await;
    assert_eq!(duplicates_counted(&c).await, 6.0, "{}", c.log());
    c.kill_9();
    // And once more, after a second crash with nothing new in between.
    let c = Collector::start(dir.path());
    send(&c, None, batch("late", 20), Some(99)).await;
    for id in 0..5 {
        c.wait_for_query(&format!("attributes.marker:early{id}"), 20)
            .await;
    }
    c.wait_for_query("attributes.marker:late", 20).await;
    assert_eq!(c.search(&[("query", "")]).await["total"], json!(120));
}

async fn tenant_key(c: &Collector, name: &str) -> String {
    let admin = bearer(c.token());
    let post = |path: &'static str, body: serde_json::Value| {
        let admin = admin.clone();
        async move {
            c.api_request(
                Method::POST,
                path,
                &[
                    ("authorization", &admin),
                    ("content-type", "application/json"),
                ],
                Bytes::from(body.to_string()),
            )
            .await
        }
    };
    let r = post("/api/v1/tenants", json!({"name": name})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = post(
        "/api/v1/keys",
        json!({"name": "admin", "scopes": ["admin"], "tenant": name}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tenants_with_the_same_id_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let blue = tenant_key(&c, "blue").await;
    let green = tenant_key(&c, "green").await;
    for _ in 0..2 {
        send(&c, Some(&bearer(&blue)), batch("shared", 7), Some(42)).await;
        send(&c, Some(&bearer(&green)), batch("shared", 7), Some(42)).await;
    }
    c.wait_for_total_as(&blue, &[("query", "attributes.marker:shared")], 7)
        .await;
    c.wait_for_total_as(&green, &[("query", "attributes.marker:shared")], 7)
        .await;
    assert_eq!(duplicates_counted(&c).await, 2.0);
}
