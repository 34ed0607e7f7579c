//! `/api/v1/configs` and `vantage config ...` against the real collector: history with
//! authors and messages, diff, rollback, validation with errors that name the problem,
//! selectors that match nothing, the audit log.

mod common;
mod opamp_support;

use hyper::{Method, StatusCode};
use serde_json::json;

use common::*;
use opamp_support::*;

#[tokio::test]
async fn history_diff_rollback_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let created = create_config(&c, c.token(), "base", "env=prod", "a: 1\nb: 2\nc: 3\n").await;
    assert_eq!(created["current_version"], 1);
    assert_eq!(created["matching_agents"], 0, "no agent yet");
    put_config(&c, c.token(), "base", "a: 1\nb: 20\nc: 3\nd: 4\n", true).await;

    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/configs/base/versions",
        None,
    )
    .await;
    let versions = r.json()["versions"].as_array().cloned().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["message"], "first");
    assert!(
        versions[1]["author"].as_str().unwrap().starts_with("key:"),
        "author is the key: {}",
        versions[1]
    );
    assert!(versions[0].get("body").is_none(), "the list omits bodies");

    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/configs/base/diff?from=1&to=2",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let diff = r.json()["diff"].as_str().unwrap().to_string();
    assert!(
        diff.contains("--- base version 1\n+++ base version 2\n"),
        "{diff}"
    );
    assert!(diff.contains("-b: 2\n+b: 20\n"), "{diff}");
    assert!(diff.contains("+d: 4\n"), "{diff}");
    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/configs/base/diff?from=1&to=9",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/configs/base/diff?from=x&to=1",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = api(
        &c,
        c.token(),
        Method::POST,
        "/api/v1/configs/base/rollback",
        Some(json!({"version": 1, "message": "b=20 broke parsing"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["current_version"], 3);
    let r = api(&c, c.token(), Method::GET, "/api/v1/configs/base", None).await;
    let doc = r.json();
    assert_eq!(doc["current"]["body"], "a: 1\nb: 2\nc: 3\n");
    assert_eq!(doc["current"]["message"], "b=20 broke parsing");
    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/configs/base/versions/2",
        None,
    )
    .await;
    assert_eq!(
        r.json()["body"],
        "a: 1\nb: 20\nc: 3\nd: 4\n",
        "history is kept"
    );

    let r = api(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/audit?action=config.",
        None,
    )
    .await;
    let actions: Vec<String> = r.json()["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_string))
        .collect();
    for want in ["config.create", "config.version", "config.rollback"] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} audited: {actions:?} ({})",
            r.text()
        );
    }
}

#[tokio::test]
async fn bad_documents_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let cases = [
        (json!({"name": "x", "body": "a: [1\n"}), "not valid YAML"),
        (json!({"name": "x", "body": "- a\n- b\n"}), "mapping"),
        (json!({"name": "x", "body": ""}), "empty"),
        (json!({"name": "Bad Name", "body": "a: 1"}), "config name"),
        (
            json!({"name": "x", "selector": "env", "body": "a: 1"}),
            "selector",
        ),
        (
            json!({"name": "x", "selector": "env=a b", "body": "a: 1"}),
            "selector",
        ),
        (
            json!({"name": "x", "body": format!("a: \"{}\"\n", "x".repeat(300 * 1024))}),
            "limit",
        ),
        (
            json!({"name": "x", "body": "a: 1", "extra": 1}),
            "unknown field",
        ),
    ];
    for (body, says) in cases {
        let r = api(
            &c,
            c.token(),
            Method::POST,
            "/api/v1/configs",
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert!(
            r.text().contains(says),
            "{body}: {} should say {says}",
            r.text()
        );
    }
    // A selector matching nothing is accepted, and says so.
    let doc = create_config(&c, c.token(), "nobody", "env=nowhere", "a: 1\n").await;
    assert_eq!(doc["matching_agents"], 0);
    // Duplicates conflict; unknown documents are 404.
    let r = api(
        &c,
        c.token(),
        Method::POST,
        "/api/v1/configs",
        Some(json!({"name": "nobody", "body": "a: 1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = api(&c, c.token(), Method::GET, "/api/v1/configs/missing", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/configs/nobody/rollout",
        Some(json!({"version": 1, "percent": 50})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "current version cannot roll out: {}",
        r.text()
    );
    let r = api(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/configs/nobody/rollout",
        Some(json!({"version": 1, "percent": 101})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The OpenAPI document lists the routes with their scopes.
    let r = c.api_get("/api/openapi.json").await;
    let doc = r.json();
    assert_eq!(
        doc["paths"]["/api/v1/configs"]["post"]["x-vantage-scope"],
        "edit"
    );
    assert_eq!(
        doc["paths"]["/api/v1/configs"]["get"]["x-vantage-scope"],
        "query"
    );
    assert_eq!(
        doc["paths"]["/v1/opamp"]["post"]["x-vantage-scope"],
        "ingest"
    );
}

#[tokio::test]
async fn cli_pushes_lists_diffs_rolls_back_and_rolls_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let env = [("VANTAGE_TOKEN", c.token())];
    let file = dir.path().join("base.yaml");
    std::fs::write(&file, "a: 1\n").unwrap();
    let f = file.to_str().unwrap();
    let out = c
        .cli(
            &[
                "config",
                "push",
                f,
                "--name",
                "base",
                "--selector",
                "env=prod",
                "-m",
                "first",
            ],
            &env,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, "a: 2\n").unwrap();
    let out = c
        .cli(
            &["config", "push", f, "--name", "base", "-m", "second"],
            &env,
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("version 2"), "{text}");

    let out = c.cli(&["config", "list"], &env).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("base") && text.contains("env=prod"), "{text}");
    let out = c.cli(&["config", "history", "base"], &env).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first") && text.contains("second"), "{text}");
    let out = c
        .cli(
            &["config", "diff", "base", "--from", "1", "--to", "2"],
            &env,
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-a: 1\n+a: 2\n"), "{text}");
    let out = c
        .cli(
            &["config", "rollback", "base", "--version", "1", "-m", "undo"],
            &env,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.cli(&["config", "show", "base"], &env).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("version 3") && text.ends_with("a: 1\n"),
        "{text}"
    );
    let out = c
        .cli(
            &[
                "config",
                "rollout",
                "base",
                "--version",
                "2",
                "--percent",
                "25",
            ],
            &env,
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("v2 to 25%"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An invalid file is refused with the reason.
    std::fs::write(&file, "- not\n- a mapping\n").unwrap();
    let out = c
        .cli(&["config", "push", f, "--name", "base", "-m", "bad"], &env)
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mapping"));
}
