//! The OpenAPI document of the real binary: valid OpenAPI 3 (checked by Python's
//! `openapi-spec-validator`), every POST/PUT/PATCH with a request schema, every
//! operation with a documented success body (or a deliberate empty one), every `$ref`
//! resolved; and a bounded `schemathesis` run over the whole API with an admin key
//! that finds no server error.
//!
//! Missing tools fail the test with the command that installs them; nothing is skipped.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use common::*;

const INSTALL_HINT: &str = "run `make test-deps` (installs the Python packages of \
     collector/tests/python/requirements.txt, openapi-spec-validator and schemathesis \
     among them)";

/// Operations that answer success with an empty body on purpose: Alertmanager's API
/// answers these with an empty 200.
const EMPTY_OK: &[(&str, &str)] = &[
    ("post", "/api/v2/alerts"),
    ("delete", "/api/v2/silence/{id}"),
];

async fn document(c: &Collector) -> Value {
    let r = c.api_get("/api/openapi.json").await;
    assert_eq!(r.status, hyper::StatusCode::OK, "{}", r.text());
    r.json()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_and_every_body_has_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"));
    let doc = document(&c).await;
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run python3: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}\n{INSTALL_HINT}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let ops = operations(&doc);
    assert!(ops.len() > 80, "{} operations", ops.len());
    let mut missing = Vec::new();
    for (method, path, op) in &ops {
        if ["post", "put", "patch"].contains(&method.as_str()) {
            let content = op["requestBody"]["content"].as_object();
            let ok = content.is_some_and(|c| c.values().all(|m| m["schema"].is_object()));
            if !ok {
                missing.push(format!("{method} {path}: no request schema"));
            }
        }
        let responses = op["responses"].as_object().unwrap();
        let success: Vec<(&String, &Value)> = responses
            .iter()
            // 101: the WebSocket upgrade of OpAMP.
            .filter(|(code, _)| code.starts_with('2') || code.as_str() == "101")
            .collect();
        assert_eq!(success.len(), 1, "{method} {path}: one success response");
        let (code, body) = success[0];
        let json_schema = &body["content"]["application/json"]["schema"];
        let has_content = body["content"].is_object();
        if code == "204" || code == "101" || EMPTY_OK.contains(&(method.as_str(), path.as_str())) {
            assert!(!has_content, "{method} {path}: {code} with a body");
        } else if !has_content {
            missing.push(format!("{method} {path}: no {code} body documented"));
        } else if body["content"].get("application/json").is_some() && !json_schema.is_object() {
            missing.push(format!("{method} {path}: JSON {code} without a schema"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));

    // Every $ref resolves, and the subscription API's bodies are the derived types.
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    let create = &doc["paths"]["/api/v1/alerts/subscriptions"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateSubscription"
    );
    assert_eq!(
        schemas["CreateSubscription"]["required"],
        serde_json::json!(["receiver", "email"])
    );
    assert!(create["responses"]["201"]["content"]["application/json"].is_object());
    let silence = &schemas["PostableSilence"]["properties"];
    assert!(silence["matchers"].is_object() && silence["endsAt"].is_object());
    let search = &doc["paths"]["/api/v1/logs/search"]["get"]["parameters"];
    assert!(
        search
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "query" && p["in"] == "query"),
        "{search}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"));
    let base = format!("http://{}", c.addrs.api);
    let auth = format!("Authorization: Bearer {}", c.token());
    // Bounded: a few examples per operation. Left out: the live tail (it streams until
    // cancelled), remote write (protobuf, which schemathesis cannot generate; the
    // bad-input tests fuzz it), OpAMP (protobuf and a WebSocket upgrade; opamp_server.rs
    // sends it malformed messages), and revoking API keys (the run would revoke its own
    // key and test nothing but 401s after that).
    let run = tokio::process::Command::new("st")
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        .args(["--url", &base])
        .args(["-H", &auth])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "8"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "20"])
        .args(["--exclude-path", "/api/v1/logs/tail"])
        .args(["--exclude-path", "/api/v1/write"])
        .args(["--exclude-path", "/v1/opamp"])
        .args(["--exclude-operation-id", "delete_v1_keys_key_id"])
        .args(["--generation-database", "none"])
        .args(["--seed", "7"])
        .arg("--no-color")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis finished within 5 minutes")
        .unwrap_or_else(|e| panic!("cannot run st (schemathesis): {e}; {INSTALL_HINT}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}\ncollector log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert!(
        stdout.contains("Test cases:") && stdout.contains(" passed"),
        "schemathesis generated and ran test cases: {stdout}"
    );
}
