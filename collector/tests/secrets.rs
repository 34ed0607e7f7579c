//! Secrets from the outside: stored encrypted (the database file never holds the
//! plaintext), never returned by the API (list, audit, errors) nor logged, confined to
//! their tenant, refused when malformed, and re-encrypted by a key rotation after which
//! the old key is no longer needed.

mod common;

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use common::*;

const PLAIN: &str = "correct-horse-battery-staple-4711";

async fn call(c: &Collector, key: &str, method: Method, path: &str, body: Bytes) -> Reply {
    let auth = bearer(key);
    c.api_request(
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

async fn put(c: &Collector, key: &str, name: &str, value: &str) -> Reply {
    call(
        c,
        key,
        Method::PUT,
        &format!("/api/v1/secrets/{name}"),
        Bytes::from(json!({ "value": value }).to_string()),
    )
    .await
}

async fn list(c: &Collector, key: &str) -> Reply {
    call(c, key, Method::GET, "/api/v1/secrets", Bytes::new()).await
}

async fn rotate(c: &Collector, key: &str) -> Reply {
    call(c, key, Method::POST, "/api/v1/secrets/rotate", Bytes::new()).await
}

/// A tenant and a key with `scopes` in it, made by the bootstrap admin.
async fn tenant_key(c: &Collector, tenant: &str, scopes: &[&str]) -> String {
    let r = call(
        c,
        c.token(),
        Method::POST,
        "/api/v1/tenants",
        Bytes::from(json!({ "name": tenant }).to_string()),
    )
    .await;
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
        "{}",
        r.text()
    );
    let r = call(
        c,
        c.token(),
        Method::POST,
        "/api/v1/keys",
        Bytes::from(json!({"name": "k", "scopes": scopes, "tenant": tenant}).to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

/// Every byte of the metadata database, its WAL included.
fn database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(b) = std::fs::read(data_dir.join(format!("meta.db{suffix}"))) {
            all.extend(b);
        }
    }
    assert!(!all.is_empty(), "the metadata database exists");
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn write_key(path: &Path, byte: u8) {
    std::fs::write(
        path,
        base64::engine::general_purpose::STANDARD.encode([byte; 32]),
    )
    .unwrap();
}

#[tokio::test]
async fn the_plaintext_is_never_stored_returned_audited_or_logged() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let key_file = dir.path().join("secrets.key");
    assert!(key_file.exists(), "a key is generated on first start");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        c.log().contains("generated a secrets key"),
        "the log says where the key is"
    );

    let r = put(&c, c.token(), "db_password", PLAIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!r.text().contains(PLAIN));
    assert_eq!(r.json()["name"], "db_password");
    // Replace it, so the old value would be in the WAL too if it were ever plain.
    let r = put(&c, c.token(), "db_password", &format!("{PLAIN}-v2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = list(&c, c.token()).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.json()["secrets"].as_array().cloned().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["name"], "db_password");
    assert!(item["key_id"].as_str().unwrap().len() == 16, "{item}");
    assert!(item["author"].as_str().unwrap().starts_with("key:"));
    assert!(item.get("value").is_none());
    assert!(!r.text().contains(PLAIN));

    // No route reads a value back.
    let r = call(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/secrets/db_password",
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert!(!r.text().contains(PLAIN));

    // Errors do not echo values.
    let r = put(&c, c.token(), "bad%20name!", PLAIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text().contains(PLAIN), "{}", r.text());
    let r = call(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/secrets/x",
        Bytes::from(format!("{{\"value\": \"{PLAIN}\", \"extra\": 1}}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text().contains(PLAIN), "{}", r.text());
    let r = call(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/secrets/x",
        Bytes::from(format!("{{\"value\": \"{PLAIN}\"")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text().contains(PLAIN), "{}", r.text());

    let r = call(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/audit?action=secret.",
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let audit = r.json();
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .or_else(|| audit["data"].as_array())
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"secret.set"), "{audit}");
    assert!(!r.text().contains(PLAIN));

    let r = call(
        &c,
        c.token(),
        Method::DELETE,
        "/api/v1/secrets/db_password",
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(
        &c,
        c.token(),
        Method::DELETE,
        "/api/v1/secrets/db_password",
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = put(&c, c.token(), "kept", PLAIN).await;
    assert_eq!(r.status, StatusCode::OK);
    let bytes = database_bytes(dir.path());
    assert!(contains(&bytes, "kept"), "names are stored in clear");
    assert!(
        !contains(&bytes, PLAIN),
        "the plaintext is not in the database"
    );
    assert!(!c.log().contains(PLAIN), "nor in the log");
    let (status, log) = c.terminate().await;
    assert!(status.success());
    assert!(!log.contains(PLAIN));
    assert!(
        !contains(&database_bytes(dir.path()), PLAIN),
        "nor after the WAL is checkpointed"
    );
}

#[tokio::test]
async fn a_tenant_sees_and_changes_only_its_own_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let a = tenant_key(&c, "team-a", &["edit"]).await;
    let b = tenant_key(&c, "team-b", &["edit"]).await;
    let b_query = tenant_key(&c, "team-b", &["query"]).await;
    assert_eq!(
        put(&c, &a, "shared_name", PLAIN).await.status,
        StatusCode::OK
    );

    let r = list(&c, &b).await;
    assert_eq!(r.json()["secrets"], json!([]), "{}", r.text());
    let r = call(
        &c,
        &b,
        Method::DELETE,
        "/api/v1/secrets/shared_name",
        Bytes::new(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "B cannot delete A's secret"
    );
    assert_eq!(
        put(&c, &b, "shared_name", "b-value").await.status,
        StatusCode::OK
    );
    let r = list(&c, &a).await;
    let items = r.json()["secrets"].as_array().cloned().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["tenant"], "team-a");
    assert!(items[0]["author"].as_str().unwrap().starts_with("key:"));

    // Reading secrets' names needs edit; query is not enough, nor is rotation for a
    // tenant admin of another tenant.
    assert_eq!(list(&c, &b_query).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        put(&c, &b_query, "x", "y").await.status,
        StatusCode::FORBIDDEN
    );
    let b_admin = tenant_key(&c, "team-b", &["admin"]).await;
    assert_eq!(rotate(&c, &b_admin).await.status, StatusCode::FORBIDDEN);
    assert_eq!(list(&c, "vtg_nope").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_names_values_and_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let long_name = "n".repeat(129);
    for name in ["1abc", "a%20b", "a%7Db", "%C3%A9", long_name.as_str()] {
        let r = put(&c, c.token(), name, "v").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.text());
        assert!(r.text().contains("secret name"), "{}", r.text());
    }
    let r = put(&c, c.token(), "ok", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(&c, c.token(), "ok", &"x".repeat(64 * 1024 + 1)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("65536"), "{}", r.text());
    let r = put(&c, c.token(), "ok", "nul\u{0}byte").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let huge = Bytes::from(vec![b' '; 1024 * 1024]);
    let r = call(&c, c.token(), Method::PUT, "/api/v1/secrets/ok", huge).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    for body in ["", "[]", "{\"value\": 5}", "{\"valu\": \"x\"}", "\u{ff}"] {
        let r = call(
            &c,
            c.token(),
            Method::PUT,
            "/api/v1/secrets/ok",
            Bytes::from(body.to_string()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {}", r.text());
    }
    assert_eq!(
        list(&c, c.token()).await.json()["secrets"],
        json!([]),
        "nothing was stored"
    );
    // The largest allowed value, with characters JSON must escape, is accepted.
    let big = "\"".repeat(64 * 1024);
    assert_eq!(put(&c, c.token(), "big", &big).await.status, StatusCode::OK);
    c.assert_still_serves("badsecrets").await;
}

#[tokio::test]
async fn rotation_reencrypts_and_then_the_old_key_is_not_needed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (k1, k2, k3) = (
        keys.path().join("k1"),
        keys.path().join("k2"),
        keys.path().join("k3"),
    );
    write_key(&k1, 1);
    write_key(&k2, 2);
    write_key(&k3, 3);
    let k1s = k1.display().to_string();
    let k2s = k2.display().to_string();
    let k3s = k3.display().to_string();

    let c = Collector::builder()
        .env("VANTAGE_SECRETS__KEY_FILE", &k1s)
        .start(dir.path());
    assert!(
        !dir.path().join("secrets.key").exists(),
        "a configured key: none generated"
    );
    let a = tenant_key(&c, "team-a", &["edit"]).await;
    assert_eq!(put(&c, c.token(), "one", "v1").await.status, StatusCode::OK);
    assert_eq!(put(&c, &a, "two", "v2").await.status, StatusCode::OK);
    let old_id = list(&c, c.token()).await.json()["secrets"][0]["key_id"].clone();
    c.terminate().await;

    // New current key, the old one kept for decryption.
    let c = Collector::builder()
        .env("VANTAGE_SECRETS__KEY_FILE", &k2s)
        .env("VANTAGE_SECRETS__PREVIOUS_KEY_FILES", &k1s)
        .start(dir.path());
    let r = rotate(&c, c.token()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let report = r.json();
    assert_eq!(report["reencrypted"], 2, "{report}");
    assert_eq!(report["failed"], 0);
    let new_id = report["key_id"].clone();
    assert_ne!(new_id, old_id);
    for key in [c.token(), a.as_str()] {
        for s in list(&c, key).await.json()["secrets"].as_array().unwrap() {
            assert_eq!(s["key_id"], new_id, "{s}");
        }
    }
    let audit = call(
        &c,
        c.token(),
        Method::GET,
        "/api/v1/audit?action=secret.rotate",
        Bytes::new(),
    )
    .await;
    assert!(audit.text().contains("2 re-encrypted"), "{}", audit.text());
    c.terminate().await;

    // k1 is gone: k2 alone must open every value (a rotation to k3 decrypts them all).
    std::fs::remove_file(&k1).unwrap();
    let c = Collector::builder()
        .env("VANTAGE_SECRETS__KEY_FILE", &k3s)
        .env("VANTAGE_SECRETS__PREVIOUS_KEY_FILES", &k2s)
        .start(dir.path());
    let report = rotate(&c, c.token()).await.json();
    assert_eq!(report["reencrypted"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    c.terminate().await;

    // The wrong key: a clear error naming the secret and the key, no panic, and the
    // collector keeps serving.
    let c = Collector::builder()
        .env("VANTAGE_SECRETS__KEY_FILE", &k2s)
        .start(dir.path());
    let r = rotate(&c, c.token()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["failed"], 2, "{}", r.text());
    let log = c.log();
    assert!(
        log.contains("secret not rotated") && log.contains("neither secrets.key_file"),
        "{log}"
    );
    assert!(!log.contains("panicked"));
    c.assert_still_serves("wrongkey").await;
}

#[tokio::test]
async fn an_unusable_key_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("short.key");
    std::fs::write(&bad, "dG9vIHNob3J0").unwrap();
    let err = Collector::builder()
        .env("VANTAGE_SECRETS__KEY_FILE", &bad.display().to_string())
        .try_start(&dir.path().join("data"))
        .err()
        .expect("a short key refuses the start");
    assert!(err.contains("short.key") && err.contains("32"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let err = Collector::builder()
        .env("VANTAGE_SECRETS__KEY", "not base64 at all!")
        .try_start(&dir.path().join("data2"))
        .err()
        .expect("a bad key variable refuses the start");
    assert!(err.contains("secrets.key"), "{err}");
    assert!(
        !err.contains("not base64 at all"),
        "the key is not echoed: {err}"
    );
}

#[tokio::test]
async fn the_cli_reads_the_value_from_stdin_lists_deletes_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let url = format!("http://{}", c.addrs.api);
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut command = tokio::process::Command::new(cli_bin());
        command
            .arg("--url")
            .arg(&url)
            .arg("--token")
            .arg(c.token())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let stdin = stdin.map(str::to_string);
        async move {
            let mut child = command.spawn().expect("run the vantage CLI");
            if let Some(text) = stdin {
                let mut pipe = child.stdin.take().unwrap();
                pipe.write_all(text.as_bytes()).await.unwrap();
                drop(pipe);
            }
            child.wait_with_output().await.unwrap()
        }
    };
    let out = run(
        &["secrets", "set", "smtp_pass"],
        Some(&format!("{PLAIN}\n")),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("set smtp_pass"), "{printed}");
    assert!(!printed.contains(PLAIN));
    let out = run(&["secrets", "set", "empty"], None).await;
    assert!(!out.status.success(), "no value on stdin is refused");
    let out = run(&["secrets", "list"], None).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("smtp_pass") && !text.contains(PLAIN),
        "{text}"
    );
    let out = run(&["secrets", "rotate"], None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 re-encrypted, 1 already current"),
        "{out:?}"
    );
    let out = run(&["secrets", "delete", "smtp_pass"], None).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(&["secrets", "delete", "smtp_pass"], None).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    assert_eq!(
        list(&c, c.token()).await.json()["secrets"],
        Value::Array(vec![])
    );
}
