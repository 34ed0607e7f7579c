//! End to end: people. The first start creates user `admin` with a random password in
//! the private initial-admin file; logging in gives a short-lived access token and a
//! rotating refresh token; roles decide what a person may do in each tenant; logout,
//! disabling and role removal take effect at the next request; TOTP adds a second
//! factor; failed logins are slowed and, like every admin action, audited.

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
    let body: Bytes = if body.is_null() {
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

fn admin_password(c: &Collector) -> String {
    let text = std::fs::read_to_string(c.data_dir().join(INITIAL_ADMIN_FILE)).unwrap();
    assert!(text.contains("admin_user: admin\n"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("admin_password: "))
        .expect("admin_password line")
        .to_string()
}

async fn login(c: &Collector, body: Value) -> Reply {
    call(c, None, Method::POST, "/api/v1/auth/login", body).await
}

/// Logs in and returns (access token, refresh token).
async fn login_ok(c: &Collector, username: &str, password: &str) -> (String, String) {
    let r = login(c, json!({"username": username, "password": password})).await;
    assert_eq!(r.status, StatusCode::OK, "login {username}: {}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn create_user(c: &Collector, admin: &str, body: Value) -> Value {
    let r = call(c, Some(admin), Method::POST, "/api/v1/users", body.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "create user {body}: {}",
        r.text()
    );
    r.json()
}

async fn audit(c: &Collector, token: &str, query: &str) -> Vec<Value> {
    let r = call(
        c,
        Some(token),
        Method::GET,
        &format!("/api/v1/audit?{query}"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn bootstrap_admin_logs_in_and_roles_limit_what_people_do() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let password = admin_password(&c);
    assert!(!c.log().contains(&password), "the password is never logged");
    let (admin, _) = login_ok(&c, "admin", &password).await;

    // The access token works like a key of the admin's role.
    let me = call(
        &c,
        Some(&admin),
        Method::GET,
        "/api/v1/auth/me",
        Value::Null,
    )
    .await
    .json();
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["user"]["role"], "admin");
    assert_eq!(me["tenant"], "default");

    let viewer = create_user(
        &c,
        &admin,
        json!({"username": "vera", "password": "viewer password 1", "role": "viewer"}),
    )
    .await;
    assert_eq!(
        viewer["roles"],
        json!([{"tenant": "default", "role": "viewer"}])
    );
    assert!(viewer.get("password_hash").is_none());
    create_user(
        &c,
        &admin,
        json!({"username": "ed", "password": "editor password 1", "role": "editor"}),
    )
    .await;
    let (vera, _) = login_ok(&c, "vera", "viewer password 1").await;
    let (ed, _) = login_ok(&c, "ed", "editor password 1").await;

    // A viewer queries; cannot manage users or keys, cannot ingest.
    let q = call(
        &c,
        Some(&vera),
        Method::GET,
        "/api/v1/query?query=1",
        Value::Null,
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    for (method, path, body) in [
        (Method::GET, "/api/v1/users", Value::Null),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "x", "scopes": ["query"]}),
        ),
        (Method::GET, "/api/v1/audit", Value::Null),
    ] {
        let r = call(&c, Some(&vera), method, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "viewer {path}: {}",
            r.text()
        );
    }
    let otlp = c
        .post_otlp(
            "/v1/logs",
            &[("authorization", &bearer(&vera)), ("content-type", JSON)],
            Bytes::from_static(br#"{"resourceLogs":[]}"#),
        )
        .await;
    assert_eq!(otlp.status, StatusCode::FORBIDDEN, "{}", otlp.text());
    // An editor holds the edit scope, not admin.
    let me = call(&c, Some(&ed), Method::GET, "/api/v1/auth/me", Value::Null)
        .await
        .json();
    assert_eq!(me["scopes"], json!(["query", "edit"]));
    let r = call(&c, Some(&ed), Method::GET, "/api/v1/users", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Role changes apply to live tokens at once.
    let r = call(
        &c,
        Some(&admin),
        Method::PATCH,
        &format!("/api/v1/users/{}", viewer["user_id"].as_str().unwrap()),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = call(&c, Some(&vera), Method::GET, "/api/v1/users", Value::Null).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "promoted without a new login: {}",
        r.text()
    );

    // Disabling ends sessions at once; the admin cannot disable themselves.
    let r = call(
        &c,
        Some(&admin),
        Method::PATCH,
        &format!("/api/v1/users/{}", viewer["user_id"].as_str().unwrap()),
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &c,
        Some(&vera),
        Method::GET,
        "/api/v1/query?query=1",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = login(
        &c,
        json!({"username": "vera", "password": "viewer password 1"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let admin_id = me_id(&c, &admin).await;
    let r = call(
        &c,
        Some(&admin),
        Method::PATCH,
        &format!("/api/v1/users/{admin_id}"),
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // Every admin action is in the audit log.
    let records = audit(&c, &admin, "action=user.").await;
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in ["user.create", "user.role", "user.disable"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    assert!(records.iter().all(|r| r["actor"] == "user:admin"));
    assert!(records.iter().all(|r| r["remote_addr"] == "127.0.0.1"));
}

async fn me_id(c: &Collector, token: &str) -> String {
    call(c, Some(token), Method::GET, "/api/v1/auth/me", Value::Null)
        .await
        .json()["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn refresh_rotates_logout_revokes_and_sessions_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let password = admin_password(&c);
    let (access, refresh) = login_ok(&c, "admin", &password).await;

    let r = call(
        &c,
        None,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let (access2, refresh2) = (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_ne!(refresh, refresh2);
    // Both access tokens of the session work until logout.
    for t in [&access, &access2] {
        assert_eq!(
            call(&c, Some(t), Method::GET, "/api/v1/auth/me", Value::Null)
                .await
                .status,
            StatusCode::OK
        );
    }
    let sessions = call(
        &c,
        Some(&access2),
        Method::GET,
        "/api/v1/auth/sessions",
        Value::Null,
    )
    .await
    .json();
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[0]["remote_addr"], "127.0.0.1");

    let r = call(
        &c,
        Some(&access2),
        Method::POST,
        "/api/v1/auth/logout",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for t in [&access, &access2] {
        let r = call(&c, Some(t), Method::GET, "/api/v1/auth/me", Value::Null).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "after logout: {}",
            r.text()
        );
        assert!(r.text().contains("session ended"), "{}", r.text());
    }
    let r = call(
        &c,
        None,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A reused refresh token ends its session.
    let (_, refresh) = login_ok(&c, "admin", &password).await;
    let r = call(
        &c,
        None,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    let new_access = r.json()["access_token"].as_str().unwrap().to_string();
    let r = call(
        &c,
        None,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("reused"), "{}", r.text());
    let r = call(
        &c,
        Some(&new_access),
        Method::GET,
        "/api/v1/auth/me",
        Value::Null,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the whole session ended"
    );

    // Malformed and forged tokens.
    let forged = {
        let mut parts: Vec<String> = new_access.split('.').map(str::to_string).collect();
        parts[2] = "AAAA".into();
        parts.join(".")
    };
    for bad in [
        forged.as_str(),
        "eyJhbGciOiJub25lIn0.e30.",
        "eyJ.x.y",
        "not-a-token",
    ] {
        let r = call(&c, Some(bad), Method::GET, "/api/v1/auth/me", Value::Null).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}: {}", r.text());
    }
    for body in [
        json!({}),
        json!({"refresh_token": 5}),
        json!({"refresh_token": "x", "extra": 1}),
    ] {
        let r = call(&c, None, Method::POST, "/api/v1/auth/refresh", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    }
    let url = format!("http://{}/api/v1/auth/login", c.addrs.api);
    let r = c
        .request_anonymous(
            Method::POST,
            &url,
            &[("content-type", JSON)],
            Bytes::from_static(b"{not json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn failed_logins_are_slowed_audited_and_do_not_reveal_names() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let password = admin_password(&c);
    let unknown = login(
        &c,
        json!({"username": "nobody", "password": "whatever password"}),
    )
    .await;
    let wrong = login(
        &c,
        json!({"username": "admin", "password": "wrong password!!"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.json()["error"],
        wrong.json()["error"],
        "same answer for both"
    );
    // Three more failures make five: the next attempt, even with the right password,
    // must wait.
    for _ in 0..3 {
        let r = login(
            &c,
            json!({"username": "admin", "password": "wrong password!!"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = login(&c, json!({"username": "admin", "password": password})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    // The API key still works for the admin meanwhile; the audit log has the story.
    let records = audit(&c, c.token(), "action=auth.login&tenant=*").await;
    let failed = records.iter().filter(|r| r["outcome"] == "failed").count();
    let denied = records.iter().filter(|r| r["outcome"] == "denied").count();
    assert_eq!((failed, denied), (5, 1), "{records:?}");
    assert!(records.iter().any(|r| r["target"] == "nobody"));
    assert!(
        !serde_json::to_string(&records)
            .unwrap()
            .contains("wrong password")
    );
    // Wait out the delay (1 s after the 5th failure) and log in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = login(&c, json!({"username": "admin", "password": password})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn totp_second_factor_and_recovery_codes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin_pw = admin_password(&c);
    let (admin, _) = login_ok(&c, "admin", &admin_pw).await;
    create_user(
        &c,
        &admin,
        json!({"username": "tess", "password": "tess password 1", "role": "viewer"}),
    )
    .await;
    let (tess, _) = login_ok(&c, "tess", "tess password 1").await;

    let enroll = call(
        &c,
        Some(&tess),
        Method::POST,
        "/api/v1/auth/totp/enroll",
        Value::Null,
    )
    .await;
    assert_eq!(enroll.status, StatusCode::OK, "{}", enroll.text());
    let enroll = enroll.json();
    let secret_b32 = enroll["secret"].as_str().unwrap().to_string();
    assert!(
        enroll["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Vantage:tess?secret=")
    );
    let secret = base32_decode(&secret_b32);
    let r = call(
        &c,
        Some(&tess),
        Method::POST,
        "/api/v1/auth/totp/confirm",
        json!({"code": "000000"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let code = vantage_collector::auth::totp::current_code(&secret).unwrap();
    let r = call(
        &c,
        Some(&tess),
        Method::POST,
        "/api/v1/auth/totp/confirm",
        json!({"code": code}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recovery: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Password alone is no longer enough.
    let r = login(
        &c,
        json!({"username": "tess", "password": "tess password 1"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("second factor required"), "{}", r.text());
    // The code used for confirmation cannot be replayed.
    let r = login(
        &c,
        json!({"username": "tess", "password": "tess password 1", "totp_code": code}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "replayed code: {}",
        r.text()
    );
    // A recovery code works once.
    let r = login(
        &c,
        json!({"username": "tess", "password": "tess password 1", "recovery_code": recovery[0]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = login(
        &c,
        json!({"username": "tess", "password": "tess password 1", "recovery_code": recovery[0]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn tenant_users_see_only_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let admin_pw = admin_password(&c);
    let (admin, _) = login_ok(&c, "admin", &admin_pw).await;
    let r = call(
        &c,
        Some(&admin),
        Method::POST,
        "/api/v1/tenants",
        json!({"name": "acme"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    create_user(&c, &admin, json!({"username": "ann", "password": "ann password 12", "role": "admin", "tenant": "acme"})).await;
    let bob = create_user(
        &c,
        &admin,
        json!({"username": "bob", "password": "bob password 12", "role": "viewer"}),
    )
    .await;
    let (ann, _) = login_ok(&c, "ann", "ann password 12").await;
    let me = call(&c, Some(&ann), Method::GET, "/api/v1/auth/me", Value::Null)
        .await
        .json();
    assert_eq!(me["tenant"], "acme");

    // ann administers acme only: default's users are invisible, not forbidden.
    let users = call(&c, Some(&ann), Method::GET, "/api/v1/users", Value::Null)
        .await
        .json();
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann"]);
    let bob_path = format!("/api/v1/users/{}", bob["user_id"].as_str().unwrap());
    for method in [Method::GET, Method::DELETE] {
        let r = call(&c, Some(&ann), method, &bob_path, Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    }
    let r = call(
        &c,
        Some(&ann),
        Method::GET,
        "/api/v1/users?tenant=default",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &c,
        Some(&ann),
        Method::GET,
        "/api/v1/audit?tenant=*",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Logs written to default are not searchable by acme's admin.
    c.export_ok(logs_request(
        "svc",
        vec![log_record("default-only-marker", vec![])],
    ))
    .await;
    c.wait_for_query("default-only-marker", 1).await;
    let hits = c.search_as(&ann, &[("query", "default-only-marker")]).await;
    assert_eq!(hits["total"], 0, "{hits}");

    // bob joins acme as a viewer: now he must say which tenant at login.
    let r = call(
        &c,
        Some(&admin),
        Method::PUT,
        &format!("{bob_path}/tenants/acme"),
        json!({"role": "viewer"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = login(
        &c,
        json!({"username": "bob", "password": "bob password 12", "tenant": "acme"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["tenant"], "acme");
    let r = login(
        &c,
        json!({"username": "bob", "password": "bob password 12", "tenant": "nope"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cli_logs_in_manages_users_reads_the_audit_log_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let password = admin_password(&c);
    let config_dir = home.path().join("cfg").display().to_string();
    let env = |extra: &[(&'static str, String)]| {
        let mut v = vec![
            ("VANTAGE_CONFIG_DIR", config_dir.clone()),
            ("HOME", home.path().display().to_string()),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let run = |args: Vec<&'static str>, env: Vec<(&'static str, String)>| {
        let c = &c;
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.cli(&args, &env).await
        }
    };
    let out = run(
        vec!["login", "--user", "admin"],
        env(&[("VANTAGE_PASSWORD", "wrong password!!".into())]),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    let out = run(
        vec!["login", "--user", "admin"],
        env(&[("VANTAGE_PASSWORD", password.clone())]),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("logged in as admin (admin in tenant default)"),
        "{stdout}"
    );
    let session_file = home.path().join("cfg/session.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&session_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = run(
        vec!["users", "create", "carl", "--role", "editor"],
        env(&[("VANTAGE_NEW_PASSWORD", "carl password 1".into())]),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let out = run(vec!["users", "list"], env(&[])).await;
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        listing.contains("carl") && listing.contains("default:editor"),
        "{listing}"
    );
    let out = run(vec!["audit", "--action", "user."], env(&[])).await;
    let audit = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        audit.contains("user.create") && audit.contains("user:admin"),
        "{audit}"
    );

    let out = run(vec!["logout"], env(&[])).await;
    assert!(out.status.success(), "{out:?}");
    assert!(!session_file.exists());
    let out = run(vec!["users", "list"], env(&[])).await;
    assert!(!out.status.success(), "no credential after logout: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
}
