//! Every route of the API, taken from the OpenAPI document the collector serves (which
//! is built from the same table as its router, so a new route cannot escape): each one
//! that needs a credential refuses an absent, malformed, unknown, forged, expired and
//! revoked one with 401, and a valid one without its scope with 403; each open one
//! answers without a credential.

mod common;

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use common::*;

async fn key(c: &Collector, scopes: &[&str], expires_in: Option<&str>) -> (String, String) {
    let auth = bearer(c.token());
    let r = c
        .api_request(
            Method::POST,
            "/api/v1/keys",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json!({"name": "table", "scopes": scopes, "expires_in": expires_in}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let v = r.json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["key_id"].as_str().unwrap().to_string(),
    )
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "0123456789abcdef0123456789abcdef"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn send(
    c: &Collector,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
) -> StatusCode {
    let url = format!("http://{}{}", c.addrs.api, concrete(path));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    c.request_anonymous(method.clone(), &url, &headers, Bytes::new())
        .await
        .status
}

#[tokio::test]
async fn every_route_in_the_openapi_document_checks_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let doc = c.api_get("/api/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let page = c.api_get("/api/docs").await.text();

    let (ingest_only, _) = key(&c, &["ingest"], None).await;
    let (query_only, _) = key(&c, &["query"], None).await;
    let (expired, _) = key(&c, &["admin"], Some("1s")).await;
    let (revoked, revoked_id) = key(&c, &["admin"], None).await;
    let auth = bearer(c.token());
    let r = c
        .api_request(
            Method::DELETE,
            &format!("/api/v1/keys/{revoked_id}"),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJ2YW50YWdlIiwic3ViIjoidSIsInNpZCI6InMiLCJ0ZW5hbnQiOiJkZWZhdWx0Iiwicm9sZSI6ImFkbWluIiwiaWF0IjoxLCJleHAiOjk5OTk5OTk5OTl9.c2lnbmF0dXJl";
    let bad: Vec<(&str, Option<String>)> = vec![
        ("absent", None),
        ("not bearer", Some("Basic YWRtaW46YWRtaW4=".into())),
        ("malformed", Some("Bearer not-a-key".into())),
        (
            "unknown key",
            Some(bearer(&format!("vtg_000000000000_{}", "0".repeat(64)))),
        ),
        ("forged token", Some(bearer(forged))),
        ("expired key", Some(bearer(&expired))),
        ("revoked key", Some(bearer(&revoked))),
    ];

    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        assert!(
            page.contains(path.as_str()),
            "{path} missing from /api/docs"
        );
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_ascii_uppercase().parse().unwrap();
            let secured = op["security"] != json!([]);
            if !secured {
                let status = send(&c, &method, path, None).await;
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "open {method} {path} answered {status}"
                );
                continue;
            }
            checked += 1;
            for (what, authorization) in &bad {
                let status = send(&c, &method, path, authorization.as_deref()).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {what} credential"
                );
            }
            let scope = op["x-vantage-scope"]
                .as_str()
                .expect("a scope on every secured operation");
            if path == "/api/v1/auth/me" {
                continue; // any valid credential may ask who it is
            }
            let lacking: Vec<&str> = match scope {
                "ingest" => vec![&query_only],
                "query" => vec![&ingest_only],
                _ => vec![&ingest_only, &query_only],
            };
            for k in lacking {
                let status = send(&c, &method, path, Some(&bearer(k))).await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} needs {scope}"
                );
            }
        }
    }
    assert!(checked > 60, "only {checked} secured operations documented");
    for known in [
        "/api/v1/query",
        "/api/v1/traces/{trace_id}",
        "/api/v2/silences",
        "/api/v1/users/{user_id}",
        "/api/v1/rules/{namespace}",
    ] {
        assert!(paths.contains_key(known), "{known} is documented");
    }
    let _: Value = doc;
}
