//! End to end: an agent enrolls with a token from the initial-admin file and gets its
//! own ingest key; the fleet list shows it with its last contact; revoking it refuses
//! its next export; tokens expire by uses; every enrollment is audited.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use common::*;

const JSON: &str = "application/json";

async fn call(
    c: &Collector,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Value,
) -> Reply {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    match token {
        Some(t) => {
            let auth = bearer(t);
            c.api_request(
                method,
                path,
                &[("authorization", &auth), ("content-type", JSON)],
                body,
            )
            .await
        }
        None => {
            let url = format!("http://{}{path}", c.addrs.api);
            c.request_anonymous(method, &url, &[("content-type", JSON)], body)
                .await
        }
    }
}

async fn enroll(c: &Collector, token: &str, hostname: &str) -> Reply {
    call(
        c,
        None,
        Method::POST,
        "/api/v1/agents/enroll",
        json!({"token": token, "hostname": hostname, "version": "0.1.0", "os": "linux"}),
    )
    .await
}

#[tokio::test]
async fn agents_enroll_are_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let file = std::fs::read_to_string(c.data_dir().join(INITIAL_ADMIN_FILE)).unwrap();
    let token = file
        .lines()
        .find_map(|l| l.strip_prefix("enrollment_token: "))
        .expect("the first start writes an enrollment token")
        .to_string();
    assert!(!c.log().contains(&token), "the token is never logged");

    let r = enroll(&c, &token, "web-1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let agent = r.json();
    let key = agent["api_key"].as_str().unwrap().to_string();
    assert_eq!(agent["tenant"], "default");
    assert_eq!(agent["status"], "active");

    // The agent's key sends, and only sends.
    let mut logs = c.logs_client_with(Some(&bearer(&key))).await;
    logs.export(logs_request(
        "web",
        vec![log_record("from an enrolled agent", vec![])],
    ))
    .await
    .expect("export with the enrolled key");
    let r = call(
        &c,
        Some(&key),
        Method::GET,
        "/api/v1/query?query=1",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The fleet view: host, version, last contact.
    let fleet = call(
        &c,
        Some(c.token()),
        Method::GET,
        "/api/v1/agents",
        Value::Null,
    )
    .await
    .json();
    let listed = &fleet["agents"][0];
    assert_eq!(listed["hostname"], "web-1");
    assert_eq!(listed["version"], "0.1.0");
    assert!(listed["last_seen_at"].is_string(), "{fleet}");

    // Revoked: the next export is refused.
    let path = format!("/api/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let r = call(&c, Some(c.token()), Method::DELETE, &path, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "revoked");
    let refused = logs
        .export(logs_request(
            "web",
            vec![log_record("after revocation", vec![])],
        ))
        .await
        .expect_err("a revoked agent is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A token for another tenant, limited to one use.
    let r = call(
        &c,
        Some(c.token()),
        Method::POST,
        "/api/v1/tenants",
        json!({"name": "acme"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(
        &c,
        Some(c.token()),
        Method::POST,
        "/api/v1/enrollment-tokens",
        json!({"name": "acme web", "tenant": "acme", "max_uses": 1, "expires_in": "1h"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let acme_token = r.json()["token"].as_str().unwrap().to_string();
    let r = enroll(&c, &acme_token, "acme-1").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["tenant"], "acme");
    let r = enroll(&c, &acme_token, "acme-2").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("used up"), "{}", r.text());
    // Tenant default's admin sees default's agents by default; acme's on request.
    let fleet = call(
        &c,
        Some(c.token()),
        Method::GET,
        "/api/v1/agents?tenant=acme",
        Value::Null,
    )
    .await
    .json();
    assert_eq!(fleet["agents"].as_array().unwrap().len(), 1);

    // Malformed enrollments.
    for body in [
        json!({"token": "vte_nope", "hostname": "h", "version": "v", "os": "o"}),
        json!({"token": token.replace('a', "b"), "hostname": "h", "version": "v", "os": "o"}),
    ] {
        let r = call(&c, None, Method::POST, "/api/v1/agents/enroll", body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    for body in [
        json!({"token": token}),
        json!({"token": token, "hostname": "", "version": "v", "os": "o"}),
        json!({"token": token, "hostname": "x".repeat(1000), "version": "v", "os": "o"}),
    ] {
        let r = call(&c, None, Method::POST, "/api/v1/agents/enroll", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }

    // All of it is in the audit log.
    let audit = call(
        &c,
        Some(c.token()),
        Method::GET,
        "/api/v1/audit?tenant=*&action=agent.",
        Value::Null,
    )
    .await
    .json();
    let outcomes: Vec<(String, String)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("agent.enroll".into(), "ok".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("agent.enroll".into(), "failed".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("agent.revoke".into(), "ok".into())),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn cli_makes_tokens_and_lists_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let env = [("VANTAGE_TOKEN", c.token())];
    let out = c
        .cli(
            &[
                "enrollment",
                "create",
                "ci fleet",
                "--max-uses",
                "3",
                "--expires-in",
                "1d",
            ],
            &env,
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(str::trim)
        .expect("token line")
        .to_string();
    assert_eq!(
        enroll(&c, &token, "ci-runner-7").await.status,
        StatusCode::CREATED
    );
    let out = c.cli(&["enrollment", "list"], &env).await;
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("ci fleet") && list.contains("1/3"), "{list}");
    let out = c.cli(&["agents", "list"], &env).await;
    let fleet = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        fleet.contains("ci-runner-7") && fleet.contains("active"),
        "{fleet}"
    );
    let id = fleet
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let out = c.cli(&["agents", "revoke", &id], &env).await;
    assert!(out.status.success(), "{out:?}");
    let out = c.cli(&["agents", "list"], &env).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
}
