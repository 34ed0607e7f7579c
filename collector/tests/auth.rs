//! End to end: authentication, scopes and tenants, against the real binary on real
//! sockets. The first start writes an admin key to a private file; every OTLP export and
//! API request (probes and `/metrics` aside) needs a live key; the key alone decides the
//! tenant, so tenants never see each other's records; scopes separate writers, readers
//! and admins; revocation and expiry take effect at the next request; the CLI manages
//! keys and tenants; `--insecure-no-auth` turns it all off, loudly.

mod common;

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Code;
use vantage_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;

use common::*;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Whether `text` has the shape `vtg_<12 lowercase hex>_<64 lowercase hex>`.
fn is_key_text(text: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    text.strip_prefix("vtg_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, secret)| hex(id, 12) && hex(secret, 64))
}

/// The key id inside a key text.
fn key_id_of(text: &str) -> &str {
    &text["vtg_".len().."vtg_".len() + 12]
}

/// A request to the query API with `token` as the credential.
async fn api_as(
    c: &Collector,
    token: &str,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> Reply {
    let authorization = bearer(token);
    c.api_request(
        method,
        path,
        &[("authorization", &authorization), ("content-type", JSON)],
        body,
    )
    .await
}

/// An API key made through `POST /api/v1/keys`.
struct Key {
    id: String,
    text: String,
    /// The whole 201 answer.
    answer: Value,
}

/// `POST /api/v1/keys` as `admin`, which must answer 201 with the secret.
async fn create_key(c: &Collector, admin: &str, request: Value) -> Key {
    let reply = api_as(c, admin, Method::POST, "/api/v1/keys", request.to_string()).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "create key {request}: {}",
        reply.text()
    );
    let answer = reply.json();
    let text = answer["key"]
        .as_str()
        .unwrap_or_else(|| panic!("the 201 carries the key: {answer}"))
        .to_string();
    assert!(is_key_text(&text), "key text shape: {text:?}");
    let id = answer["key_id"].as_str().expect("a key_id").to_string();
    assert_eq!(
        key_id_of(&text),
        id,
        "the key id is inside the key: {answer}"
    );
    for field in [
        "tenant",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ] {
        assert!(answer.get(field).is_some(), "{field} in {answer}");
    }
    Key { id, text, answer }
}

/// `POST /api/v1/tenants` as `admin`, which must answer 201.
async fn create_tenant(c: &Collector, admin: &str, name: &str) {
    let reply = api_as(
        c,
        admin,
        Method::POST,
        "/api/v1/tenants",
        json!({ "name": name }).to_string(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "create tenant {name}: {}",
        reply.text()
    );
    assert_eq!(reply.json()["name"], json!(name));
}

/// `GET /api/v1/keys[?tenant=]` as `admin`; the keys, asserted to hold no secret.
async fn list_keys(c: &Collector, admin: &str, tenant: Option<&str>) -> Vec<Value> {
    let path = match tenant {
        Some(t) => format!("/api/v1/keys?tenant={t}"),
        None => "/api/v1/keys".to_string(),
    };
    let reply = api_as(c, admin, Method::GET, &path, Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    let keys = reply.json()["keys"]
        .as_array()
        .expect("keys is an array")
        .clone();
    for key in &keys {
        assert!(
            key.get("key").is_none(),
            "a listed key has no secret: {key}"
        );
        assert!(
            !key.to_string().contains("vtg_"),
            "no key text in a list: {key}"
        );
    }
    keys
}

/// One key of a list, by id.
fn find_key<'a>(keys: &'a [Value], id: &str) -> &'a Value {
    keys.iter()
        .find(|k| k["key_id"] == id)
        .unwrap_or_else(|| panic!("key {id} not listed: {keys:?}"))
}

/// `DELETE /api/v1/keys/{id}` as `admin`.
async fn revoke(c: &Collector, admin: &str, id: &str) -> Reply {
    api_as(
        c,
        admin,
        Method::DELETE,
        &format!("/api/v1/keys/{id}"),
        Bytes::new(),
    )
    .await
}

/// An OTLP/JSON logs request with one record whose body is `body`, stamped one second
/// ago, with `resource` attributes besides `service.name`.
fn json_logs(service: &str, body: &str, resource: &[(&str, &str)]) -> String {
    let mut attributes = vec![json!({"key": "service.name", "value": {"stringValue": service}})];
    attributes.extend(
        resource
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})),
    );
    json!({"resourceLogs": [{
        "resource": {"attributes": attributes},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": (now_ns() - 1_000_000_000).to_string(),
            "severityNumber": 9,
            "body": {"stringValue": body}
        }]}]
    }]})
    .to_string()
}

/// A gRPC logs export of one record with body `body`, carrying `authorization`.
async fn grpc_export(
    c: &Collector,
    authorization: Option<&str>,
    body: &str,
) -> Result<(), tonic::Status> {
    let request = logs_request("auth", vec![log_record(body, vec![])]);
    c.logs_client_with(authorization)
        .await
        .export(request)
        .await
        .map(|_| ())
}

/// An OTLP/HTTP logs export in JSON of one record with body `body`, with `token`.
async fn http_export(c: &Collector, token: &str, body: &str) -> Reply {
    let authorization = bearer(token);
    c.post_otlp(
        "/v1/logs",
        &[("content-type", JSON), ("authorization", &authorization)],
        json_logs("auth", body, &[]),
    )
    .await
}

/// The `google.rpc.Status` of an OTLP/HTTP error answer, in either encoding.
fn otlp_status(reply: &Reply) -> (i32, String) {
    match reply.header("content-type").as_deref() {
        Some(PROTOBUF) => {
            let status = tonic_types::pb::Status::decode(reply.body.clone()).unwrap_or_else(|e| {
                panic!("error body is not a google.rpc.Status ({e}): {reply:?}")
            });
            (status.code, status.message)
        }
        Some(JSON) => {
            let status = reply.json();
            let code = status["code"]
                .as_i64()
                .unwrap_or_else(|| panic!("{status}"));
            let message = status["message"].as_str().unwrap_or_default().to_string();
            (code as i32, message)
        }
        other => panic!("OTLP/HTTP error with content-type {other:?}: {reply:?}"),
    }
}

/// Asserts a query API refusal: `status`, the error type and a message starting with
/// `message`; returns a description of what is wrong, if anything.
fn api_refusal(
    reply: &Reply,
    status: StatusCode,
    error_type: &str,
    message: &[&str],
) -> Option<String> {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let error = body["error"].as_str().unwrap_or_default();
    let www = reply.header("www-authenticate").unwrap_or_default();
    let ok = reply.status == status
        && body["status"] == "error"
        && body["errorType"] == error_type
        && message.iter().any(|m| error.starts_with(m))
        && (status != StatusCode::UNAUTHORIZED || www.starts_with("Bearer"));
    (!ok).then(|| format!("{} www-authenticate={www:?} {}", reply.status, reply.text()))
}

/// Asserts an OTLP/HTTP refusal: `status`, the answer in the request's encoding, the
/// gRPC `code` and a message starting with `message`; returns what is wrong, if anything.
fn otlp_refusal(
    reply: &Reply,
    content_type: &str,
    status: StatusCode,
    code: Code,
    message: &[&str],
) -> Option<String> {
    let www = reply.header("www-authenticate").unwrap_or_default();
    let same_encoding = reply.header("content-type").as_deref() == Some(content_type);
    let (got_code, got_message) = if same_encoding {
        otlp_status(reply)
    } else {
        (-1, String::new())
    };
    let ok = reply.status == status
        && same_encoding
        && got_code == code as i32
        && message.iter().any(|m| got_message.starts_with(m))
        && (status != StatusCode::UNAUTHORIZED || www.starts_with("Bearer"));
    (!ok).then(|| {
        format!(
            "{} content-type={:?} www-authenticate={www:?} code={got_code} message={got_message:?}",
            reply.status,
            reply.header("content-type")
        )
    })
}

/// Asserts a gRPC refusal with `code` and a message starting with `message`.
fn grpc_refusal<T>(
    result: Result<T, tonic::Status>,
    code: Code,
    message: &[&str],
) -> Option<String> {
    match result {
        Ok(_) => Some("accepted".to_string()),
        Err(status)
            if status.code() == code && message.iter().any(|m| status.message().starts_with(m)) =>
        {
            None
        }
        Err(status) => Some(format!("{status:?}")),
    }
}

#[tokio::test]
async fn first_start_writes_a_private_admin_key_file_once_and_never_logs_the_key() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INITIAL_ADMIN_FILE);
    let c = Collector::start(dir.path());
    let first = std::fs::read_to_string(&path).expect("the first start writes the file");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "five lines:\n{first}");
    assert!(lines[4].starts_with("enrollment_token: vte_"), "{first}");
    assert_eq!(lines[0], "tenant: default");
    assert_eq!(lines[2], "admin_user: admin");
    let password = lines[3]
        .strip_prefix("admin_password: ")
        .unwrap_or_else(|| panic!("fourth line is the admin password: {first}"));
    assert!(password.len() >= 20, "a long random password: {password:?}");
    let key = lines[1]
        .strip_prefix("api_key: ")
        .unwrap_or_else(|| panic!("second line is the key: {first}"));
    assert!(is_key_text(key), "{key:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only: {mode:o}");

    // The key is a server admin of tenant default: it can do everything.
    let tenants = api_as(&c, key, Method::GET, "/api/v1/tenants", Bytes::new()).await;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.text());
    let names: Vec<String> = tenants.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["default"], "the first start creates tenant default");
    let keys = list_keys(&c, key, None).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["key_id"], json!(key_id_of(key)));
    assert_eq!(keys[0]["tenant"], json!("default"));
    assert_eq!(keys[0]["scopes"], json!(["admin"]));
    c.export_ok(logs_request(
        "boot",
        vec![log_record("first start", vec![])],
    ))
    .await;
    c.wait_for_query("first", 1).await;
    // A refused key goes through the log path of refusals too.
    let wrong = format!("vtg_{}_{}", key_id_of(key), "0".repeat(64));
    let refused = api_as(&c, &wrong, Method::GET, "/api/v1/keys", Bytes::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let secret = &key["vtg_".len() + 13..];
    let log = c.log();
    assert!(
        !log.contains(secret),
        "the key's secret never reaches the log:\n{log}"
    );
    assert!(
        log.contains(&path.display().to_string()),
        "the log says where the key is:\n{log}"
    );

    let (status, log) = c.terminate().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains(secret), "{log}");

    let c = Collector::start(dir.path());
    let second = std::fs::read_to_string(&path).unwrap();
    assert_eq!(second, first, "a later start does not rewrite the file");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(c.token(), key);
    assert_eq!(c.search(&[("query", "first")]).await["total"], json!(1));
    assert_eq!(
        list_keys(&c, key, None).await.len(),
        1,
        "a later start mints no second admin key"
    );
    assert!(!c.log().contains(secret), "{}", c.log());
    let password = first
        .lines()
        .nth(3)
        .unwrap()
        .trim_start_matches("admin_password: ");
    assert!(!c.log().contains(password), "{}", c.log());
}

#[tokio::test]
async fn a_stale_initial_admin_file_does_not_lock_the_operator_out() {
    use std::os::unix::fs::PermissionsExt as _;

    // Left over from an earlier installation whose meta.db is gone (a reset, a restore
    // of only the data): its key is not in the new store.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INITIAL_ADMIN_FILE);
    let stale = format!("vtg_000000000000_{}", "ab".repeat(32));
    std::fs::write(&path, format!("tenant: default\napi_key: {stale}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let c = match Collector::builder().try_start(dir.path()) {
        Ok(c) => c,
        Err(log) => {
            // Refusing to overwrite is fine if the operator is told which file is in
            // the way, and a start after moving it away mints a key they can use.
            assert!(
                log.contains(&path.display().to_string()),
                "a failed start names the file in the way:\n{log}"
            );
            std::fs::rename(&path, dir.path().join("stale-admin.txt")).unwrap();
            Collector::builder()
                .try_start(dir.path())
                .unwrap_or_else(|e| panic!("the start after moving the stale file: {e}"))
        }
    };
    assert_ne!(c.token(), stale, "the file holds a key of this store");
    let reply = c.search_raw(&[("query", "")]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the key in {} works: {}",
        path.display(),
        reply.text()
    );
}

/// The credentials every protected endpoint must refuse, with the messages allowed.
struct BadCredential {
    what: &'static str,
    authorization: Option<String>,
    messages: &'static [&'static str],
}

const MISSING_OR_INVALID: &[&str] = &["missing credential", "invalid credential"];

#[tokio::test]
async fn every_protected_endpoint_refuses_missing_malformed_unknown_revoked_and_expired_credentials()
 {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin = c.token().to_string();

    let expiring_created = tokio::time::Instant::now();
    let expiring = create_key(
        &c,
        &admin,
        json!({"name": "short-lived", "scopes": ["admin"], "expires_in": "2s"}),
    )
    .await;
    assert!(
        expiring.answer["expires_at"].is_string(),
        "{}",
        expiring.answer
    );
    // Before its expiry the key works, so the refusals below are the expiry's doing.
    let early = api_as(
        &c,
        &expiring.text,
        Method::GET,
        "/api/v1/keys",
        Bytes::new(),
    )
    .await;
    assert_eq!(early.status, StatusCode::OK, "{}", early.text());

    let revoked = create_key(&c, &admin, json!({"name": "revoked", "scopes": ["admin"]})).await;
    assert!(revoked.answer["expires_at"].is_null(), "{}", revoked.answer);
    assert_eq!(
        revoke(&c, &admin, &revoked.id).await.status,
        StatusCode::NO_CONTENT
    );

    let bad = [
        BadCredential {
            what: "absent",
            authorization: None,
            messages: &["missing credential"],
        },
        BadCredential {
            what: "basic",
            authorization: Some("Basic x".to_string()),
            messages: MISSING_OR_INVALID,
        },
        BadCredential {
            what: "bearer without token",
            authorization: Some("Bearer".to_string()),
            messages: MISSING_OR_INVALID,
        },
        BadCredential {
            what: "bearer garbage",
            authorization: Some("Bearer garbage".to_string()),
            messages: MISSING_OR_INVALID,
        },
        BadCredential {
            what: "unknown key id",
            authorization: Some(bearer(&format!("vtg_000000000000_{}", "ab".repeat(32)))),
            messages: &["invalid credential"],
        },
        BadCredential {
            // Reads exactly like an unknown id: nothing tells that the id exists.
            what: "wrong secret for a real key id",
            authorization: Some(bearer(&format!(
                "vtg_{}_{}",
                key_id_of(&admin),
                "0".repeat(64)
            ))),
            messages: &["invalid credential"],
        },
        BadCredential {
            what: "revoked",
            authorization: Some(bearer(&revoked.text)),
            messages: &["credential revoked"],
        },
        BadCredential {
            what: "expired",
            authorization: Some(bearer(&expiring.text)),
            messages: &["credential expired"],
        },
    ];
    tokio::time::sleep_until(expiring_created + Duration::from_secs(3)).await;

    // Bodies that would succeed for an admin, so only the credential can refuse them.
    let api_routes: [(Method, &str, String); 7] = [
        (Method::GET, "/api/v1/logs/search?query=x", String::new()),
        (Method::GET, "/api/v1/logs/tail?query=x", String::new()),
        (Method::GET, "/api/v1/keys", String::new()),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "intruder", "scopes": ["admin"]}).to_string(),
        ),
        (
            Method::DELETE,
            &format!("/api/v1/keys/{}", key_id_of(&admin)),
            String::new(),
        ),
        (Method::GET, "/api/v1/tenants", String::new()),
        (
            Method::POST,
            "/api/v1/tenants",
            json!({"name": "intruder"}).to_string(),
        ),
    ];
    let logs = logs_request("intruder", vec![log_record("intruder", vec![])]);
    let otlp_bodies: [(&str, &str, Vec<u8>); 6] = [
        ("/v1/logs", PROTOBUF, logs.encode_to_vec()),
        (
            "/v1/logs",
            JSON,
            json_logs("intruder", "intruder", &[]).into_bytes(),
        ),
        (
            "/v1/metrics",
            PROTOBUF,
            ExportMetricsServiceRequest::default().encode_to_vec(),
        ),
        ("/v1/metrics", JSON, b"{}".to_vec()),
        (
            "/v1/traces",
            PROTOBUF,
            ExportTraceServiceRequest::default().encode_to_vec(),
        ),
        ("/v1/traces", JSON, b"{}".to_vec()),
    ];

    let mut wrong = Vec::new();
    for credential in &bad {
        let mut headers = vec![("content-type", JSON)];
        if let Some(value) = &credential.authorization {
            headers.push(("authorization", value));
        }
        for (method, path, body) in &api_routes {
            let url = format!("http://{}{path}", c.addrs.api);
            let reply = c
                .request_anonymous(method.clone(), &url, &headers, body.clone())
                .await;
            let problem = api_refusal(
                &reply,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                credential.messages,
            );
            if let Some(problem) = problem {
                wrong.push(format!("{}: {method} {path}: {problem}", credential.what));
            }
        }
        for (path, content_type, body) in &otlp_bodies {
            let mut headers = vec![("content-type", *content_type)];
            if let Some(value) = &credential.authorization {
                headers.push(("authorization", value));
            }
            let url = format!("http://{}{path}", c.addrs.http);
            let reply = c
                .request_anonymous(Method::POST, &url, &headers, body.clone())
                .await;
            let problem = otlp_refusal(
                &reply,
                content_type,
                StatusCode::UNAUTHORIZED,
                Code::Unauthenticated,
                credential.messages,
            );
            if let Some(problem) = problem {
                wrong.push(format!(
                    "{}: POST {path} ({content_type}): {problem}",
                    credential.what
                ));
            }
        }
        let channel = c
            .grpc_channel_with(credential.authorization.as_deref())
            .await;
        let answers = [
            (
                "gRPC Logs/Export",
                grpc_refusal(
                    LogsServiceClient::new(channel.clone())
                        .export(logs.clone())
                        .await,
                    Code::Unauthenticated,
                    credential.messages,
                ),
            ),
            (
                "gRPC Metrics/Export",
                grpc_refusal(
                    MetricsServiceClient::new(channel.clone())
                        .export(ExportMetricsServiceRequest::default())
                        .await,
                    Code::Unauthenticated,
                    credential.messages,
                ),
            ),
            (
                "gRPC Trace/Export",
                grpc_refusal(
                    TraceServiceClient::new(channel)
                        .export(ExportTraceServiceRequest::default())
                        .await,
                    Code::Unauthenticated,
                    credential.messages,
                ),
            ),
        ];
        for (what, problem) in answers {
            if let Some(problem) = problem {
                wrong.push(format!("{}: {what}: {problem}", credential.what));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as unauthenticated:\n{}",
        wrong.join("\n")
    );

    // Probes and self-metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("http://{}{path}", c.addrs.api);
        let reply = c
            .request_anonymous(Method::GET, &url, &[], Bytes::new())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }

    // Nothing the refused requests carried had any effect.
    let text = c.metrics_text().await;
    for signal in ["logs", "metrics", "traces"] {
        assert_eq!(
            metric_value(&text, "vantage_ingest_records_total", &[("signal", signal)])
                .unwrap_or(0.0),
            0.0,
            "{signal}: no record was taken:\n{text}"
        );
        for (protocol, refusals) in [("http", 2.0 * bad.len() as f64), ("grpc", bad.len() as f64)] {
            assert_eq!(
                metric_value(
                    &text,
                    "vantage_ingest_requests_total",
                    &[
                        ("signal", signal),
                        ("protocol", protocol),
                        ("outcome", "unauthenticated")
                    ]
                ),
                Some(refusals),
                "{signal} over {protocol}: every refusal is counted:\n{text}"
            );
        }
    }
    let tenants = api_as(&c, &admin, Method::GET, "/api/v1/tenants", Bytes::new()).await;
    assert_eq!(
        tenants.json()["tenants"].as_array().unwrap().len(),
        1,
        "{}",
        tenants.text()
    );
    let keys = list_keys(&c, &admin, None).await;
    assert!(keys.iter().all(|k| k["name"] != "intruder"), "{keys:?}");
    assert!(
        find_key(&keys, key_id_of(&admin))["revoked_at"].is_null(),
        "the admin key was not revoked by the refused DELETEs"
    );

    // The control: the same endpoints take a live key (the scheme in any case).
    let good = format!("bearer {admin}");
    for path in [
        "/api/v1/logs/search?query=x",
        "/api/v1/keys",
        "/api/v1/tenants",
    ] {
        let url = format!("http://{}{path}", c.addrs.api);
        let reply = c
            .request_anonymous(Method::GET, &url, &[("authorization", &good)], Bytes::new())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    drop(c.open_tail_as(Some(&good), "x").await);
    for (path, content_type, body) in &otlp_bodies {
        let url = format!("http://{}{path}", c.addrs.http);
        let headers = [("content-type", *content_type), ("authorization", &good)];
        let reply = c
            .request_anonymous(Method::POST, &url, &headers, body.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    let channel = c.grpc_channel_with(Some(&good)).await;
    LogsServiceClient::new(channel.clone())
        .export(logs.clone())
        .await
        .expect("gRPC logs with a live key");
    MetricsServiceClient::new(channel.clone())
        .export(ExportMetricsServiceRequest::default())
        .await
        .expect("gRPC metrics with a live key");
    TraceServiceClient::new(channel)
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("gRPC traces with a live key");
    c.wait_for_query("intruder", 3).await;
}

#[tokio::test]
async fn credentials_are_checked_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_INGEST__MAX_REQUEST_BYTES", "1024")
        .start(dir.path());
    // Bodies that would each earn a 400, 413 or 415 get a 401 without a credential.
    let garbage = b"\xff\x00 certainly not protobuf".to_vec();
    let cases = [
        (
            "garbage protobuf",
            vec![("content-type", PROTOBUF)],
            garbage.clone(),
        ),
        (
            "garbage json",
            vec![("content-type", JSON)],
            b"{\"resourceLogs\": [".to_vec(),
        ),
        (
            "unsupported content-type",
            vec![("content-type", "text/plain")],
            garbage.clone(),
        ),
        (
            "fake gzip",
            vec![("content-type", PROTOBUF), ("content-encoding", "gzip")],
            garbage.clone(),
        ),
        (
            "over the size limit",
            vec![("content-type", PROTOBUF)],
            vec![b'x'; 4000],
        ),
    ];
    for (what, headers, body) in cases {
        let url = format!("http://{}/v1/logs", c.addrs.http);
        let reply = c
            .request_anonymous(Method::POST, &url, &headers, body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text()
        );
    }
    // The admin API: a broken body is a 400 for an admin, a 401 for anyone else.
    for path in ["/api/v1/keys", "/api/v1/tenants"] {
        let url = format!("http://{}{path}", c.addrs.api);
        let reply = c
            .request_anonymous(Method::POST, &url, &[("content-type", JSON)], "{not json")
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {}",
            reply.text()
        );
        let reply = api_as(&c, c.token(), Method::POST, path, "{not json").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn grpc_credentials_are_checked_before_the_message_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_INGEST__MAX_REQUEST_BYTES", "1024")
        .start(dir.path());
    let mut wrong = Vec::new();
    let garbage = b"\xff\x00 certainly not protobuf".to_vec();
    for (what, message) in [("undecodable", garbage), ("oversized", vec![b'x'; 4000])] {
        let (code, message) = c.raw_grpc_export(None, &message).await;
        if code != Code::Unauthenticated as i32 {
            wrong.push(format!("{what}: grpc-status {code} {message:?}"));
        }
    }
    // The same with a well-formed but oversized request from a real client.
    let big = logs_request("big", vec![log_record(&"x".repeat(4000), vec![])]);
    let answer = c.logs_client_with(None).await.export(big).await;
    if let Some(problem) = grpc_refusal(answer, Code::Unauthenticated, &["missing credential"]) {
        wrong.push(format!("oversized, tonic client: {problem}"));
    }
    assert!(
        wrong.is_empty(),
        "anonymous gRPC calls were looked at before being refused:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn scopes_separate_writers_readers_and_admins() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin = c.token().to_string();
    let ingest = create_key(&c, &admin, json!({"name": "agents", "scopes": ["ingest"]})).await;
    assert_eq!(ingest.answer["scopes"], json!(["ingest"]));
    assert_eq!(
        ingest.answer["tenant"],
        json!("default"),
        "the caller's tenant"
    );
    let query = create_key(&c, &admin, json!({"name": "grafana", "scopes": ["query"]})).await;
    let ingest_auth = bearer(&ingest.text);
    let query_auth = bearer(&query.text);

    // Ingest: exports over gRPC and HTTP (both encodings) are accepted.
    grpc_export(&c, Some(&ingest_auth), "scoped grpc")
        .await
        .expect("an ingest key exports over gRPC");
    let reply = http_export(&c, &ingest.text, "scoped json").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", PROTOBUF), ("authorization", &ingest_auth)],
            logs_request("auth", vec![log_record("scoped protobuf", vec![])]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let metrics = MetricsServiceClient::new(c.grpc_channel_with(Some(&ingest_auth)).await)
        .export(ExportMetricsServiceRequest::default())
        .await;
    assert!(metrics.is_ok(), "{metrics:?}");

    // ... but it reads nothing and administers nothing.
    let admin_routes = [
        (Method::GET, "/api/v1/keys", String::new()),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "escalate", "scopes": ["admin"]}).to_string(),
        ),
        (
            Method::DELETE,
            &format!("/api/v1/keys/{}", query.id),
            String::new(),
        ),
        (Method::GET, "/api/v1/tenants", String::new()),
        (
            Method::POST,
            "/api/v1/tenants",
            json!({"name": "mine"}).to_string(),
        ),
    ];
    let mut wrong = Vec::new();
    for (path, message) in [
        (
            "/api/v1/logs/search?query=scoped",
            "this credential lacks the query scope",
        ),
        (
            "/api/v1/logs/tail?query=scoped",
            "this credential lacks the query scope",
        ),
    ] {
        let reply = api_as(&c, &ingest.text, Method::GET, path, Bytes::new()).await;
        if let Some(p) = api_refusal(
            &reply,
            StatusCode::FORBIDDEN,
            "permission_denied",
            &[message],
        ) {
            wrong.push(format!("ingest key: GET {path}: {p}"));
        }
    }
    for (token, who) in [(&ingest.text, "ingest key"), (&query.text, "query key")] {
        for (method, path, body) in &admin_routes {
            let reply = api_as(&c, token, method.clone(), path, body.clone()).await;
            let problem = api_refusal(
                &reply,
                StatusCode::FORBIDDEN,
                "permission_denied",
                &["this credential lacks the admin scope"],
            );
            if let Some(p) = problem {
                wrong.push(format!("{who}: {method} {path}: {p}"));
            }
        }
    }

    // Query: searches and tails, but exports nothing.
    let found = c
        .wait_for_total_as(&query.text, &[("query", "scoped")], 3)
        .await;
    assert_eq!(hits(&found).len(), 3, "{found}");
    let _tail = c.open_tail_as(Some(&query_auth), "scoped").await;
    let lacks_ingest = &["this credential lacks the ingest scope"];
    for (content_type, body) in [
        (
            PROTOBUF,
            logs_request("auth", vec![log_record("scoped refused", vec![])]).encode_to_vec(),
        ),
        (JSON, json_logs("auth", "scoped refused", &[]).into_bytes()),
    ] {
        let reply = c
            .post_otlp(
                "/v1/logs",
                &[
                    ("content-type", content_type),
                    ("authorization", &query_auth),
                ],
                body,
            )
            .await;
        let problem = otlp_refusal(
            &reply,
            content_type,
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            lacks_ingest,
        );
        if let Some(p) = problem {
            wrong.push(format!("query key: POST /v1/logs ({content_type}): {p}"));
        }
    }
    let channel = c.grpc_channel_with(Some(&query_auth)).await;
    let grpc = [
        (
            "logs",
            grpc_refusal(
                LogsServiceClient::new(channel.clone())
                    .export(logs_request(
                        "auth",
                        vec![log_record("scoped refused", vec![])],
                    ))
                    .await,
                Code::PermissionDenied,
                lacks_ingest,
            ),
        ),
        (
            "metrics",
            grpc_refusal(
                MetricsServiceClient::new(channel.clone())
                    .export(ExportMetricsServiceRequest::default())
                    .await,
                Code::PermissionDenied,
                lacks_ingest,
            ),
        ),
        (
            "traces",
            grpc_refusal(
                TraceServiceClient::new(channel)
                    .export(ExportTraceServiceRequest::default())
                    .await,
                Code::PermissionDenied,
                lacks_ingest,
            ),
        ),
    ];
    for (signal, problem) in grpc {
        if let Some(p) = problem {
            wrong.push(format!("query key: gRPC {signal} export: {p}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "scopes not enforced:\n{}",
        wrong.join("\n")
    );

    // Admin implies both.
    c.export_ok(logs_request(
        "auth",
        vec![log_record("scoped admin", vec![])],
    ))
    .await;
    c.wait_for_query("scoped", 4).await;
    let _tail = c.open_tail("scoped").await;
    assert_eq!(list_keys(&c, &admin, None).await.len(), 3);
    // The refused exports left nothing behind.
    assert_eq!(c.search(&[("query", "refused")]).await["total"], json!(0));

    // Scopes are checked when a key is made.
    for scopes in [json!(["superuser"]), json!([])] {
        let reply = api_as(
            &c,
            &admin,
            Method::POST,
            "/api/v1/keys",
            json!({"name": "odd", "scopes": scopes}).to_string(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{scopes}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["errorType"], json!("invalid_argument"));
    }
}

#[tokio::test]
async fn tenants_see_only_their_own_records_whatever_else_the_client_sends() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin = c.token().to_string();
    create_tenant(&c, &admin, "team-a").await;
    create_tenant(&c, &admin, "team-b").await;
    let a = create_key(
        &c,
        &admin,
        json!({"name": "a", "scopes": ["ingest", "query"], "tenant": "team-a"}),
    )
    .await;
    let b = create_key(
        &c,
        &admin,
        json!({"name": "b", "scopes": ["query", "ingest"], "tenant": "team-b"}),
    )
    .await;
    assert_eq!(a.answer["tenant"], json!("team-a"));
    assert_eq!(b.answer["tenant"], json!("team-b"));
    assert_eq!(b.answer["scopes"], json!(["ingest", "query"]));
    let b_auth = bearer(&b.text);

    // team-a over gRPC; team-b over OTLP/JSON, naming team-a every way a client might.
    grpc_export(&c, Some(&bearer(&a.text)), "isolation markeralpha")
        .await
        .expect("team-a exports");
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[
                ("content-type", JSON),
                ("authorization", &b_auth),
                ("x-scope-orgid", "team-a"),
                ("x-vantage-tenant", "team-a"),
                ("tenant", "team-a"),
            ],
            json_logs(
                "svc-b",
                "isolation markerbravo",
                &[("tenant", "team-a"), ("vantage.tenant", "team-a")],
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // Wait until both are indexed before judging what each one sees.
    let seen_by_a = c
        .wait_for_total_as(&a.text, &[("query", "isolation")], 1)
        .await;
    let seen_by_b = c
        .wait_for_total_as(&b.text, &[("query", "isolation")], 1)
        .await;
    let bodies = |result: &Value| -> Vec<String> {
        hits(result).iter().map(|h| h["body"].to_string()).collect()
    };
    assert_eq!(bodies(&seen_by_a), ["\"isolation markeralpha\""]);
    assert_eq!(bodies(&seen_by_b), ["\"isolation markerbravo\""]);
    for (token, theirs) in [(&a.text, "markerbravo"), (&b.text, "markeralpha")] {
        assert_eq!(
            c.search_as(token, &[("query", theirs)]).await["total"],
            json!(0)
        );
        let everything = c.search_as(token, &[("query", ""), ("start", "0")]).await;
        assert_eq!(
            everything["total"],
            json!(1),
            "the total counts only its own: {everything}"
        );
        let histogram = c
            .search_as(token, &[("query", ""), ("histogram", "1m")])
            .await;
        let counted: u64 = histogram["histogram"]
            .as_array()
            .expect("a histogram")
            .iter()
            .map(|bucket| bucket["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 1, "the histogram counts only its own: {histogram}");
    }
    // Asking for another tenant in the query string does not reach it.
    let reply = c
        .search_raw_with(
            &[("query", "isolation"), ("tenant", "team-b")],
            &[("authorization", &bearer(&a.text))],
        )
        .await;
    if reply.status == StatusCode::OK {
        assert_eq!(bodies(&reply.json()), ["\"isolation markeralpha\""]);
    } else {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    }
    // The default tenant's admin is in another tenant: it sees neither.
    assert_eq!(
        c.search(&[("query", "isolation"), ("start", "0")]).await["total"],
        json!(0)
    );

    // team-a's tail never shows team-b's record: team-b's is acknowledged and indexed
    // before team-a's, so a leaking tail would show it first.
    let mut tail = c.open_tail_as(Some(&bearer(&a.text)), "isolation").await;
    let reply = c
        .post_otlp(
            "/v1/logs",
            &[("content-type", JSON), ("authorization", &b_auth)],
            json_logs("svc-b", "isolation tailbravo", &[]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    c.wait_for_total_as(&b.text, &[("query", "tailbravo")], 1)
        .await;
    grpc_export(&c, Some(&bearer(&a.text)), "isolation tailalpha")
        .await
        .expect("team-a exports");
    let events = read_tail_until(&mut tail, "tailalpha").await;
    assert!(
        events.iter().all(|e| !e.to_string().contains("bravo")),
        "team-a's tail showed team-b's record: {events:?}"
    );
}

#[tokio::test]
async fn a_tenant_admin_manages_only_its_own_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let server_admin = c.token().to_string();
    create_tenant(&c, &server_admin, "team-a").await;
    create_tenant(&c, &server_admin, "team-b").await;

    // Tenant names: unique, and only the characters a directory name can safely hold.
    let reply = api_as(
        &c,
        &server_admin,
        Method::POST,
        "/api/v1/tenants",
        json!({"name": "team-a"}).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert_eq!(reply.json()["errorType"], json!("already_exists"));
    let reply = api_as(
        &c,
        &server_admin,
        Method::POST,
        "/api/v1/tenants",
        json!({"name": "TEAM-A"}).to_string(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "names differing only in case would collide as directories: {}",
        reply.text()
    );
    for name in ["", "../etc", "team a", "é", &"x".repeat(65)] {
        let reply = api_as(
            &c,
            &server_admin,
            Method::POST,
            "/api/v1/tenants",
            json!({ "name": name }).to_string(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name:?}: {}",
            reply.text()
        );
    }
    let tenants = api_as(
        &c,
        &server_admin,
        Method::GET,
        "/api/v1/tenants",
        Bytes::new(),
    )
    .await;
    let mut names: Vec<String> = tenants.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["created_at"].is_string(), "{t}");
            t["name"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["default", "team-a", "team-b"]);

    let a_admin = create_key(
        &c,
        &server_admin,
        json!({"name": "a-admin", "scopes": ["admin"], "tenant": "team-a"}),
    )
    .await;
    let b_ingest = create_key(
        &c,
        &server_admin,
        json!({"name": "b-agents", "scopes": ["ingest"], "tenant": "team-b"}),
    )
    .await;

    // Within team-a, its admin creates and lists keys...
    let own = create_key(
        &c,
        &a_admin.text,
        json!({"name": "a-agents", "scopes": ["ingest"]}),
    )
    .await;
    assert_eq!(
        own.answer["tenant"],
        json!("team-a"),
        "the caller's tenant by default"
    );
    let explicit = create_key(
        &c,
        &a_admin.text,
        json!({"name": "a-grafana", "scopes": ["query"], "tenant": "team-a"}),
    )
    .await;
    let keys = list_keys(&c, &a_admin.text, None).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k["tenant"] == "team-a"), "{keys:?}");
    find_key(&keys, &own.id);
    let own_keys = list_keys(&c, &a_admin.text, Some("team-a")).await;
    assert_eq!(own_keys.len(), 3);

    // ... but nothing outside it.
    let refusals = [
        (
            Method::POST,
            "/api/v1/keys".to_string(),
            json!({"name": "sneaky", "scopes": ["ingest"], "tenant": "team-b"}).to_string(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/keys".to_string(),
            json!({"name": "sneaky", "scopes": ["admin"], "tenant": "default"}).to_string(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/keys?tenant=team-b".to_string(),
            String::new(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/tenants".to_string(),
            String::new(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/tenants".to_string(),
            json!({"name": "team-c"}).to_string(),
            StatusCode::FORBIDDEN,
        ),
        // Another tenant's key is reported missing, not forbidden.
        (
            Method::DELETE,
            format!("/api/v1/keys/{}", b_ingest.id),
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{}", key_id_of(&server_admin)),
            String::new(),
            StatusCode::NOT_FOUND,
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, status) in refusals {
        let reply = api_as(&c, &a_admin.text, method.clone(), &path, body.clone()).await;
        let error_type = if status == StatusCode::FORBIDDEN {
            "permission_denied"
        } else {
            "not_found"
        };
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.status != status || body["errorType"] != error_type {
            wrong.push(format!(
                "{method} {path}: {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "a team-a admin reached outside team-a:\n{}",
        wrong.join("\n")
    );
    let reply = http_export(&c, &b_ingest.text, "b still works").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "team-b's key survived: {}",
        reply.text()
    );
    assert!(
        find_key(
            &list_keys(&c, &server_admin, Some("team-b")).await,
            &b_ingest.id
        )["revoked_at"]
            .is_null()
    );

    // Its admin revokes team-a's own keys.
    assert_eq!(
        revoke(&c, &a_admin.text, &explicit.id).await.status,
        StatusCode::NO_CONTENT
    );

    // The server admin manages every tenant; its own list is its own tenant's.
    let default_keys = list_keys(&c, &server_admin, None).await;
    assert!(
        default_keys.iter().all(|k| k["tenant"] == "default"),
        "{default_keys:?}"
    );
    let b_keys = list_keys(&c, &server_admin, Some("team-b")).await;
    assert_eq!(b_keys.len(), 1);
    assert_eq!(b_keys[0]["name"], json!("b-agents"));
    assert_eq!(
        revoke(&c, &server_admin, &b_ingest.id).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = http_export(&c, &b_ingest.text, "b revoked").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin = c.token().to_string();
    let key = create_key(&c, &admin, json!({"name": "agent", "scopes": ["ingest"]})).await;
    assert!(key.answer["revoked_at"].is_null() && key.answer["last_used_at"].is_null());
    let auth = bearer(&key.text);

    // One gRPC connection, kept across the revocation.
    let mut client = c.logs_client_with(Some(&auth)).await;
    client
        .export(logs_request(
            "agent",
            vec![log_record("revocation before grpc", vec![])],
        ))
        .await
        .expect("accepted before the revocation");
    let reply = http_export(&c, &key.text, "revocation before http").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let listed = list_keys(&c, &admin, None).await;
    assert!(
        find_key(&listed, &key.id)["last_used_at"].is_string(),
        "use is recorded: {listed:?}"
    );

    let reply = revoke(&c, &admin, &key.id).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert!(reply.body.is_empty());

    let status = client
        .export(logs_request(
            "agent",
            vec![log_record("revocation after grpc", vec![])],
        ))
        .await
        .expect_err("refused right after the revocation");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "credential revoked");
    let reply = http_export(&c, &key.text, "revocation after http").await;
    let problem = otlp_refusal(
        &reply,
        JSON,
        StatusCode::UNAUTHORIZED,
        Code::Unauthenticated,
        &["credential revoked"],
    );
    assert_eq!(problem, None);
    assert!(
        find_key(&list_keys(&c, &admin, None).await, &key.id)["revoked_at"].is_string(),
        "the list shows the revocation"
    );
    // What it sent before stays; nothing after.
    c.wait_for_query("revocation", 2).await;
    assert_eq!(c.search(&[("query", "after")]).await["total"], json!(0));
    let reply = revoke(&c, &admin, "ffffffffffff").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
}

/// A CLI run that must succeed; returns its stdout.
async fn cli_ok(c: &Collector, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = c.cli(args, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "vantage {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A CLI run that must fail; returns its stderr.
async fn cli_err(c: &Collector, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = c.cli(args, env).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "vantage {args:?} should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The value of a `name: value` line of CLI output.
fn cli_field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name}: line in:\n{stdout}"))
}

#[tokio::test]
async fn cli_manages_tenants_and_keys_with_a_token_and_reports_a_401_without() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin = c.token().to_string();
    let t = ["--token", admin.as_str()];

    let out = cli_ok(
        &c,
        &[&t[..], &["tenants", "create", "team-cli"]].concat(),
        &[],
    )
    .await;
    assert!(out.contains("team-cli"), "{out}");
    let err = cli_err(
        &c,
        &[&t[..], &["tenants", "create", "team-cli"]].concat(),
        &[],
    )
    .await;
    assert!(err.contains("409"), "an existing tenant: {err}");
    let out = cli_ok(&c, &[&t[..], &["tenants", "list"]].concat(), &[]).await;
    let listed: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        listed.contains(&"default") && listed.contains(&"team-cli"),
        "{out}"
    );

    let out = cli_ok(
        &c,
        &[
            &t[..],
            &[
                "keys",
                "create",
                "agents",
                "--scope",
                "ingest",
                "--scope",
                "query",
                "--tenant",
                "team-cli",
                "--expires-in",
                "30d",
            ],
        ]
        .concat(),
        &[],
    )
    .await;
    let key_id = cli_field(&out, "key_id").to_string();
    let key = cli_field(&out, "key").to_string();
    assert!(is_key_text(&key), "{out}");
    assert_eq!(key_id_of(&key), key_id);
    // The new key works in its tenant.
    let reply = http_export(&c, &key, "from the cli key").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    c.wait_for_total_as(&key, &[("query", "cli")], 1).await;
    assert_eq!(
        c.search(&[("query", "cli")]).await["total"],
        json!(0),
        "not in default"
    );

    // Listed, without its secret; VANTAGE_TOKEN works as --token does.
    let list = cli_ok(
        &c,
        &["keys", "list", "--tenant", "team-cli"],
        &[("VANTAGE_TOKEN", &admin)],
    )
    .await;
    let line = list
        .lines()
        .find(|l| l.contains(&key_id))
        .unwrap_or_else(|| panic!("{key_id} listed:\n{list}"));
    for field in ["team-cli", "agents", "ingest,query", "active"] {
        assert!(line.contains(field), "{field} in {line:?}");
    }
    assert!(
        !list.contains(&key[key.len() - 64..]),
        "no secret listed:\n{list}"
    );
    let own = cli_ok(&c, &[&t[..], &["keys", "list"]].concat(), &[]).await;
    assert!(
        !own.contains(&key_id),
        "the caller's tenant by default:\n{own}"
    );

    let out = cli_ok(&c, &[&t[..], &["keys", "revoke", &key_id]].concat(), &[]).await;
    assert!(out.contains(&key_id), "{out}");
    let list = cli_ok(
        &c,
        &[&t[..], &["keys", "list", "--tenant", "team-cli"]].concat(),
        &[],
    )
    .await;
    let line = list.lines().find(|l| l.contains(&key_id)).unwrap();
    assert!(line.contains("revoked"), "{line:?}");
    let reply = http_export(&c, &key, "after revoke").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());

    // Without a token, or with a bad one, every command reports the API's 401.
    for args in [
        &["keys", "list"][..],
        &["keys", "create", "x", "--scope", "ingest"],
        &["keys", "revoke", &key_id],
        &["tenants", "list"],
        &["tenants", "create", "team-x"],
        &["logs", "search", "cli", "--since", "1h"],
        &["logs", "tail", "cli"],
    ] {
        // Without one, the CLI also says where a credential comes from.
        let err = cli_err(&c, args, &[]).await;
        assert!(
            err.contains("401")
                && err.contains("missing credential")
                && err.contains("VANTAGE_TOKEN")
                && err.contains("initial-admin.txt"),
            "{args:?}: {err}"
        );
        let err = cli_err(&c, &[&["--token", "garbage"][..], args].concat(), &[]).await;
        assert!(
            err.contains("401")
                && err.contains("invalid credential")
                && !err.contains("no credential was sent"),
            "{args:?} with a bad token: {err}"
        );
    }
    let tenants = cli_ok(&c, &[&t[..], &["tenants", "list"]].concat(), &[]).await;
    assert!(!tenants.contains("team-x"), "{tenants}");
}

#[tokio::test]
async fn insecure_no_auth_accepts_anonymous_requests_into_tenant_default_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder().insecure_no_auth().start(dir.path());
    let warning = c
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("--insecure-no-auth"))
        })
        .unwrap_or_else(|| panic!("a warning names --insecure-no-auth:\n{}", c.log()));
    assert_eq!(warning["level"], json!("WARN"), "{warning}");

    grpc_export(&c, None, "open door grpc")
        .await
        .expect("an anonymous gRPC export is accepted");
    let url = format!("http://{}/v1/logs", c.addrs.http);
    let reply = c
        .request_anonymous(
            Method::POST,
            &url,
            &[("content-type", JSON)],
            json_logs("open", "open door http", &[]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    c.wait_for_query("door", 2).await;
    // An open tail holds up shutdown (see crash.rs), so it is closed before the restart.
    drop(c.open_tail_as(None, "door").await);
    // A credential, even a bad one, changes nothing.
    let reply = c
        .search_raw_with(&[("query", "door")], &[("authorization", "Bearer garbage")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["total"], json!(2));

    // With authentication back on, the default tenant's admin finds both records there.
    let (status, log) = c.terminate().await;
    assert!(status.success(), "{log}");
    let c = Collector::start(dir.path());
    assert_eq!(c.search(&[("query", "door")]).await["total"], json!(2));
    assert!(
        !c.log().contains("insecure-no-auth"),
        "no warning when authentication is on:\n{}",
        c.log()
    );
    let url = format!("http://{}/api/v1/logs/search?query=door", c.addrs.api);
    let reply = c
        .request_anonymous(Method::GET, &url, &[], Bytes::new())
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
}

#[tokio::test]
async fn metrics_can_be_put_behind_a_query_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_AUTH__PROTECT_METRICS", "true")
        .start(dir.path());
    let url = format!("http://{}/metrics", c.addrs.api);
    let anonymous = c.request_anonymous(Method::GET, &url, &[], "").await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text()
    );
    let with_key = c.request(Method::GET, &url, &[], "").await;
    assert_eq!(with_key.status, StatusCode::OK);
    assert!(with_key.text().contains("vantage_ready"));
    // Probes stay open whatever the setting.
    for probe in ["healthz", "readyz"] {
        let url = format!("http://{}/{probe}", c.addrs.api);
        let reply = c.request_anonymous(Method::GET, &url, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{probe}");
    }
}
