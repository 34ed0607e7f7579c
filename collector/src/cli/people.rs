//! `vantage login`, `logout`, `users ...` and `audit`: people and the audit log from the
//! command line. A login is kept in a private file (`~/.config/vantage/session.json`,
//! mode 0600) and used by every other command when no `--token` is given, refreshed when
//! its access token is about to expire.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HttpClient, call_json, url};

/// User management (admin).
#[derive(Debug, Subcommand)]
pub(super) enum UsersCommand {
    /// List the users of a tenant.
    List {
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create a user; the password is read from VANTAGE_NEW_PASSWORD or stdin.
    Create {
        /// Login name.
        username: String,
        /// admin, editor or viewer.
        #[arg(long)]
        role: String,
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Disable a user: they cannot log in and their sessions end.
    Disable {
        /// The user id (see `users list`).
        user_id: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user id.
        user_id: String,
    },
    /// Give a user a role in a tenant (adding them to it).
    SetRole {
        /// The user id.
        user_id: String,
        /// admin, editor or viewer.
        role: String,
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a user from a tenant.
    RemoveRole {
        /// The user id.
        user_id: String,
        /// The tenant.
        tenant: String,
    },
    /// Set a user's password (read from VANTAGE_NEW_PASSWORD or stdin); their sessions end.
    ResetPassword {
        /// The user id.
        user_id: String,
    },
    /// Delete a user.
    Delete {
        /// The user id.
        user_id: String,
    },
}

/// A saved login.
#[derive(Debug, Serialize, Deserialize)]
struct SavedSession {
    url: String,
    access_token: String,
    refresh_token: String,
    /// Seconds since the epoch when the access token expires.
    expires_at: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where the login is kept: `$VANTAGE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/vantage`, else
/// `~/.config/vantage`.
fn session_path() -> Option<PathBuf> {
    let dir = std::env::var_os("VANTAGE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("vantage")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/vantage")))?;
    Some(dir.join("session.json"))
}

fn save(session: &SavedSession) -> anyhow::Result<PathBuf> {
    let path = session_path().ok_or_else(|| anyhow::anyhow!("no HOME to keep the login in"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::auth::write_secret_file(&path, &serde_json::to_string_pretty(session)?)?;
    Ok(path)
}

fn load(base: &str) -> Option<SavedSession> {
    let text = std::fs::read_to_string(session_path()?).ok()?;
    let saved: SavedSession = serde_json::from_str(&text).ok()?;
    (saved.url.trim_end_matches('/') == base.trim_end_matches('/')).then_some(saved)
}

fn from_answer(base: &str, answer: &Value) -> anyhow::Result<SavedSession> {
    let text = |k: &str| {
        answer[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("the login answer has no {k}"))
    };
    Ok(SavedSession {
        url: base.to_string(),
        access_token: text("access_token")?,
        refresh_token: text("refresh_token")?,
        expires_at: now_secs() + answer["expires_in"].as_u64().unwrap_or(0),
    })
}

/// The access token of a saved login for `base`, refreshed first when it expires within
/// 30 s; `None` when there is no saved login (or it can no longer be refreshed).
pub(super) async fn saved_token(client: &HttpClient, base: &str) -> Option<String> {
    let saved = load(base)?;
    if saved.expires_at > now_secs() + 30 {
        return Some(saved.access_token);
    }
    let uri = url(base, "/api/v1/auth/refresh", &[]).ok()?;
    let body = json!({"refresh_token": saved.refresh_token});
    match call_json(client, hyper::Method::POST, uri, None, Some(body)).await {
        Ok(answer) => {
            let fresh = from_answer(base, &answer).ok()?;
            let token = fresh.access_token.clone();
            let _ = save(&fresh);
            Some(token)
        }
        Err(e) => {
            eprintln!("vantage: the saved login could not be refreshed ({e}); run `vantage login`");
            None
        }
    }
}

/// A secret from an environment variable or the first line of stdin.
fn read_secret(variable: &str, what: &str) -> anyhow::Result<String> {
    if let Ok(value) = std::env::var(variable) {
        return Ok(value);
    }
    eprint!("{what}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']).to_string();
    if line.is_empty() {
        anyhow::bail!("no {what} given (set {variable} or type it on stdin)");
    }
    Ok(line)
}

/// `vantage login`: asks for the password (VANTAGE_PASSWORD or stdin), saves the login.
pub(super) async fn login(
    client: &HttpClient,
    base: &str,
    username: String,
    tenant: Option<String>,
    totp_code: Option<String>,
) -> anyhow::Result<()> {
    let password = read_secret("VANTAGE_PASSWORD", "password")?;
    let uri = url(base, "/api/v1/auth/login", &[])?;
    let body = json!({"username": username, "password": password, "tenant": tenant, "totp_code": totp_code});
    let answer = call_json(client, hyper::Method::POST, uri, None, Some(body)).await?;
    let path = save(&from_answer(base, &answer)?)?;
    println!(
        "logged in as {} ({} in tenant {}); session kept in {}",
        answer["user"]["username"].as_str().unwrap_or(""),
        answer["role"].as_str().unwrap_or(""),
        answer["tenant"].as_str().unwrap_or(""),
        path.display()
    );
    Ok(())
}

/// `vantage logout`: ends the session on the server and forgets it here.
pub(super) async fn logout(client: &HttpClient, base: &str) -> anyhow::Result<()> {
    let Some(token) = saved_token(client, base).await else {
        println!("not logged in to {base}");
        return Ok(());
    };
    let uri = url(base, "/api/v1/auth/logout", &[])?;
    let result = call_json(client, hyper::Method::POST, uri, Some(&token), None).await;
    if let Some(path) = session_path() {
        let _ = std::fs::remove_file(path);
    }
    result?;
    println!("logged out");
    Ok(())
}

/// `vantage users ...`.
pub(super) async fn users(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: UsersCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let (method, path, body) = match command {
        UsersCommand::List { tenant } => {
            let params: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            let uri = url(base, "/api/v1/users", &params)?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:<18} {:<20} {:<9} {:<5} ROLES",
                "USER_ID", "USERNAME", "STATE", "TOTP"
            )?;
            for u in list["users"].as_array().cloned().unwrap_or_default() {
                let roles: Vec<String> = u["roles"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                format!(
                                    "{}:{}",
                                    r["tenant"].as_str().unwrap_or(""),
                                    r["role"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<18} {:<20} {:<9} {:<5} {}",
                    u["user_id"].as_str().unwrap_or(""),
                    u["username"].as_str().unwrap_or(""),
                    if u["disabled"] == true {
                        "disabled"
                    } else {
                        "active"
                    },
                    if u["totp_enabled"] == true {
                        "yes"
                    } else {
                        "no"
                    },
                    roles.join(",")
                )?;
            }
            return Ok(());
        }
        UsersCommand::Create {
            username,
            role,
            tenant,
        } => {
            let password = read_secret("VANTAGE_NEW_PASSWORD", "new user's password")?;
            (
                hyper::Method::POST,
                "/api/v1/users".to_string(),
                Some(
                    json!({"username": username, "password": password, "role": role, "tenant": tenant}),
                ),
            )
        }
        UsersCommand::Disable { user_id } => (
            hyper::Method::PATCH,
            format!("/api/v1/users/{user_id}"),
            Some(json!({"disabled": true})),
        ),
        UsersCommand::Enable { user_id } => (
            hyper::Method::PATCH,
            format!("/api/v1/users/{user_id}"),
            Some(json!({"disabled": false})),
        ),
        UsersCommand::SetRole {
            user_id,
            role,
            tenant,
        } => match tenant {
            Some(t) => (
                hyper::Method::PUT,
                format!("/api/v1/users/{user_id}/tenants/{t}"),
                Some(json!({"role": role})),
            ),
            None => (
                hyper::Method::PATCH,
                format!("/api/v1/users/{user_id}"),
                Some(json!({"role": role})),
            ),
        },
        UsersCommand::RemoveRole { user_id, tenant } => (
            hyper::Method::DELETE,
            format!("/api/v1/users/{user_id}/tenants/{tenant}"),
            None,
        ),
        UsersCommand::ResetPassword { user_id } => {
            let password = read_secret("VANTAGE_NEW_PASSWORD", "new password")?;
            (
                hyper::Method::POST,
                format!("/api/v1/users/{user_id}/password"),
                Some(json!({"password": password})),
            )
        }
        UsersCommand::Delete { user_id } => (
            hyper::Method::DELETE,
            format!("/api/v1/users/{user_id}"),
            None,
        ),
    };
    let uri = url(base, &path, &[])?;
    let answer = call_json(client, method, uri, token, body).await?;
    if answer.is_null() {
        writeln!(out, "done")?;
    } else {
        writeln!(
            out,
            "{} {} {}",
            answer["user_id"].as_str().unwrap_or(""),
            answer["username"].as_str().unwrap_or(""),
            answer["roles"]
        )?;
    }
    Ok(())
}

/// `vantage audit`: the audit log, newest first.
pub(super) async fn audit(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    params: Vec<(&'static str, String)>,
    json_out: bool,
) -> anyhow::Result<()> {
    let uri = url(base, "/api/v1/audit", &params)?;
    let answer = call_json(client, hyper::Method::GET, uri, token, None).await?;
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<31} {:<10} {:<22} {:<18} {:<8} {:<16} DETAIL",
        "TIME", "TENANT", "ACTOR", "ACTION", "OUTCOME", "TARGET"
    )?;
    for r in answer["records"].as_array().cloned().unwrap_or_default() {
        writeln!(
            out,
            "{:<31} {:<10} {:<22} {:<18} {:<8} {:<16} {}",
            r["time"].as_str().unwrap_or(""),
            r["tenant"].as_str().unwrap_or("-"),
            r["actor"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or("-"),
            r["detail"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
