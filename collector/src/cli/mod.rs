//! The `vantage` command-line client: log search and live tail against the query API,
//! as a readable table or as JSON.

mod agents;
mod config;
mod fleet;
mod people;
mod secrets;
mod silences;
mod subscriptions;
mod traces;

use std::io::Write as _;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Vantage command-line client.
#[derive(Debug, Parser)]
#[command(name = "vantage", version)]
struct Cli {
    /// Base URL of the collector's query API.
    #[arg(
        long,
        global = true,
        env = "VANTAGE_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    url: String,
    /// API key sent as `Authorization: Bearer` (the first start writes an admin key to
    /// <data-dir>/initial-admin.txt) [default: the access token of `vantage login`].
    #[arg(long, global = true, env = "VANTAGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Search and follow logs.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Manage API keys (admin scope).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage tenants (admins of the default tenant).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Log in as a person (password from VANTAGE_PASSWORD or stdin); later commands
    /// without --token use this login.
    Login {
        /// Login name.
        #[arg(long = "user")]
        username: String,
        /// Tenant, for a user of several.
        #[arg(long)]
        tenant: Option<String>,
        /// The current TOTP code, when a second factor is enrolled.
        #[arg(long)]
        totp: Option<String>,
    },
    /// End the saved login.
    Logout,
    /// Manage users (admin).
    Users {
        #[command(subcommand)]
        command: people::UsersCommand,
    },
    /// The agent fleet: list and revoke agents.
    Agents {
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// Agent enrollment tokens (admin).
    Enrollment {
        #[command(subcommand)]
        command: agents::EnrollmentCommand,
    },
    /// Agent configuration documents: list, show, history, diff, push, rollback, rollout.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Read the audit log (admin), newest first.
    Audit {
        /// Only this action, or a prefix ending in '.', e.g. user.
        #[arg(long)]
        action: Option<String>,
        /// Only records since, e.g. now-1h or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Tenant [default: the caller's; * for all, admins of default].
        #[arg(long)]
        tenant: Option<String>,
        /// Most records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look up a trace (a text waterfall) and search traces.
    Traces {
        #[command(subcommand)]
        command: traces::TracesCommand,
    },
    /// Silence alerts: create, list, expire.
    Silences {
        #[command(subcommand)]
        command: silences::SilencesCommand,
    },
    /// Secrets for ${secret:NAME} in agent configurations: set (value from stdin),
    /// list, delete, rotate.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Your own alert subscriptions: subscribe, unsubscribe, mute, unmute, list.
    Alerts {
        #[command(subcommand)]
        command: subscriptions::AlertsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// A name saying what the key is for.
        name: String,
        /// ingest, query or admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Tenant of the key [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, e.g. 90d [default: no expiry].
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Tenant whose keys to list [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key: it is refused from its next request on.
    Revoke {
        /// The key id (the part after `vtg_`, before the second `_`).
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Letters, digits, `-` and `_`, at most 64.
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
enum LogsCommand {
    /// Search logs, newest first (query syntax: see the README's "Log queries").
    Search {
        /// The query, e.g. 'severity_text:error AND service.name:checkout'; empty matches all.
        #[arg(default_value = "")]
        query: String,
        /// How far back to search, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Start time instead of --since (RFC 3339, Unix seconds, or now-<duration>).
        #[arg(long)]
        start: Option<String>,
        /// End time [default: now].
        #[arg(long)]
        end: Option<String>,
        /// Most hits to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// asc (oldest first) or desc (newest first).
        #[arg(long, default_value = "desc")]
        order: String,
        /// Give up after this long, e.g. 10s [default: the collector's logs.search_timeout].
        #[arg(long)]
        timeout: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow new logs as they arrive (Ctrl-C to stop).
    Tail {
        /// Only records matching this query.
        #[arg(default_value = "")]
        query: String,
        /// Print one JSON object per record instead of a line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vantage: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vantage: {e}");
            1
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

fn url(base: &str, path: &str, params: &[(&str, String)]) -> anyhow::Result<hyper::Uri> {
    let query = serde_urlencoded::to_string(params)?;
    let sep = if query.is_empty() { "" } else { "?" };
    let text = format!("{}{path}{sep}{query}", base.trim_end_matches('/'));
    text.parse()
        .map_err(|e| anyhow::anyhow!("bad --url {base:?}: {e}"))
}

/// One API call; the token, if any, goes in the Authorization header.
async fn call(
    client: &HttpClient,
    method: hyper::Method,
    uri: hyper::Uri,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let shown = uri.to_string();
    let mut request = hyper::Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            Full::new(bytes::Bytes::from(json.to_string()))
        }
        None => Full::new(bytes::Bytes::new()),
    };
    client
        .request(request.body(body)?)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {shown}: {e}"))
}

/// Calls the API and returns its JSON answer, or the API's error message.
async fn call_json(
    client: &HttpClient,
    method: hyper::Method,
    uri: hyper::Uri,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let response = call(client, method, uri, token, body).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(api_error(status, &bytes));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// An answer of the API that is not a success, kept typed so that `run` can tell a 401
/// from other failures.
#[derive(Debug)]
struct ApiError {
    status: hyper::StatusCode,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

fn api_error(status: hyper::StatusCode, body: &[u8]) -> anyhow::Error {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ApiError { status, message }.into()
}

/// A 401 to a command that sent no credential says where one comes from: a first-time
/// user has an API key in `initial-admin.txt` and has not told the CLI yet.
fn with_credential_hint(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<ApiError>() {
        Some(e) if e.status == hyper::StatusCode::UNAUTHORIZED => anyhow::anyhow!(
            "{e} (no credential was sent: pass --token or set VANTAGE_TOKEN to an API key, \
             e.g. the one in <data-dir>/initial-admin.txt, or run `vantage login`)"
        ),
        _ => error,
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // Without --token, a saved `vantage login` for this URL is the credential.
    if cli.token.is_none() && !matches!(cli.command, Command::Login { .. }) {
        cli.token = people::saved_token(&client, &cli.url).await;
    }
    let anonymous =
        cli.token.is_none() && !matches!(cli.command, Command::Login { .. } | Command::Logout);
    dispatch(&client, cli).await.map_err(|e| {
        if anonymous {
            with_credential_hint(e)
        } else {
            e
        }
    })
}

/// Runs one command with the credential `run` settled on.
async fn dispatch(client: &HttpClient, cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Login {
            username,
            tenant,
            totp,
        } => people::login(client, &cli.url, username, tenant, totp).await,
        Command::Logout => people::logout(client, &cli.url).await,
        Command::Agents { command } => {
            agents::agents(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Enrollment { command } => {
            agents::enrollment(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Secrets { command } => {
            secrets::secrets(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Config { command } => {
            config::run(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Users { command } => {
            people::users(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Audit {
            action,
            since,
            tenant,
            limit,
            json,
        } => {
            let mut params = vec![("limit", limit.to_string())];
            params.extend(action.map(|a| ("action", a)));
            params.extend(since.map(|s| ("since", s)));
            params.extend(tenant.map(|t| ("tenant", t)));
            people::audit(client, &cli.url, cli.token.as_deref(), params, json).await
        }
        Command::Traces { command } => {
            traces::run(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Logs {
            command:
                LogsCommand::Search {
                    query,
                    since,
                    start,
                    end,
                    limit,
                    order,
                    timeout,
                    json,
                },
        } => {
            let start = start.unwrap_or_else(|| format!("now-{since}"));
            let mut params = vec![
                ("query", query),
                ("start", start),
                ("limit", limit.to_string()),
                ("order", order),
            ];
            if let Some(end) = end {
                params.push(("end", end));
            }
            if let Some(timeout) = timeout {
                params.push(("timeout", timeout));
            }
            let uri = url(&cli.url, "/api/v1/logs/search", &params)?;
            let response =
                call(client, hyper::Method::GET, uri, cli.token.as_deref(), None).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(api_error(status, &body));
            }
            if json {
                println!("{}", String::from_utf8_lossy(&body));
                return Ok(());
            }
            let result: Value = serde_json::from_slice(&body)?;
            let hits = result["hits"].as_array().cloned().unwrap_or_default();
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<30} {:<8} {:<20} BODY",
                "TIME", "SEVERITY", "SERVICE"
            )?;
            for hit in &hits {
                writeln!(out, "{}", line(hit))?;
            }
            writeln!(
                out,
                "-- {} of {} matching records",
                hits.len(),
                result["total"]
            )?;
            Ok(())
        }
        Command::Logs {
            command: LogsCommand::Tail { query, json },
        } => {
            let uri = url(&cli.url, "/api/v1/logs/tail", &[("query", query)])?;
            let response =
                call(client, hyper::Method::GET, uri, cli.token.as_deref(), None).await?;
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let bytes = body.collect().await?.to_bytes();
                return Err(api_error(status, &bytes));
            }
            let mut pending = Vec::new();
            // The `event:` field of the event being read; a blank line ends an event.
            let mut event = String::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&raw);
                    let text = text.trim_end();
                    if text.is_empty() {
                        event.clear();
                        continue;
                    }
                    if let Some(name) = text.strip_prefix("event:") {
                        event = name.trim_start().to_owned();
                        continue;
                    }
                    let Some(data) = text.strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim_start();
                    if event == "error" {
                        // The tail has ended; the collector says why.
                        let message = serde_json::from_str::<Value>(data)
                            .ok()
                            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                            .unwrap_or_else(|| data.to_owned());
                        anyhow::bail!("the live tail ended: {message}");
                    }
                    let mut out = std::io::stdout().lock();
                    if json {
                        writeln!(out, "{data}")?;
                    } else if let Ok(hit) = serde_json::from_str::<Value>(data) {
                        writeln!(out, "{}", line(&hit))?;
                    }
                    out.flush()?;
                }
            }
            // The collector ends a tail only at shutdown: a silent exit 0 would read as
            // "nothing more to see" to a script or a person watching.
            anyhow::bail!("the collector closed the live tail (it is stopping or restarting)")
        }
        Command::Keys { command } => {
            let token = cli.token.as_deref();
            let mut out = std::io::stdout().lock();
            match command {
                KeysCommand::Create {
                    name,
                    scopes,
                    tenant,
                    expires_in,
                } => {
                    let body = serde_json::json!({
                        "name": name, "scopes": scopes, "tenant": tenant, "expires_in": expires_in,
                    });
                    let uri = url(&cli.url, "/api/v1/keys", &[])?;
                    let key =
                        call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
                    writeln!(out, "key_id:  {}", key["key_id"].as_str().unwrap_or(""))?;
                    writeln!(out, "tenant:  {}", key["tenant"].as_str().unwrap_or(""))?;
                    writeln!(out, "scopes:  {}", key["scopes"])?;
                    writeln!(out, "key:     {}", key["key"].as_str().unwrap_or(""))?;
                    writeln!(
                        out,
                        "-- the key is shown only now; store it in a secret manager"
                    )?;
                }
                KeysCommand::List { tenant } => {
                    let params: Vec<(&str, String)> =
                        tenant.map(|t| ("tenant", t)).into_iter().collect();
                    let uri = url(&cli.url, "/api/v1/keys", &params)?;
                    let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
                    writeln!(
                        out,
                        "{:<14} {:<12} {:<24} {:<22} STATE",
                        "KEY_ID", "TENANT", "NAME", "SCOPES"
                    )?;
                    for k in list["keys"].as_array().cloned().unwrap_or_default() {
                        let scopes: Vec<&str> = k["scopes"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        let state = if !k["revoked_at"].is_null() {
                            "revoked"
                        } else {
                            "active"
                        };
                        writeln!(
                            out,
                            "{:<14} {:<12} {:<24} {:<22} {}",
                            k["key_id"].as_str().unwrap_or(""),
                            k["tenant"].as_str().unwrap_or(""),
                            k["name"].as_str().unwrap_or(""),
                            scopes.join(","),
                            state
                        )?;
                    }
                }
                KeysCommand::Revoke { key_id } => {
                    let uri = url(&cli.url, &format!("/api/v1/keys/{key_id}"), &[])?;
                    call_json(client, hyper::Method::DELETE, uri, token, None).await?;
                    writeln!(out, "revoked {key_id}")?;
                }
            }
            Ok(())
        }
        Command::Silences { command } => {
            silences::run(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Alerts { command } => {
            subscriptions::run(client, &cli.url, cli.token.as_deref(), command).await
        }
        Command::Tenants { command } => {
            let token = cli.token.as_deref();
            let mut out = std::io::stdout().lock();
            let uri = url(&cli.url, "/api/v1/tenants", &[])?;
            match command {
                TenantsCommand::Create { name } => {
                    let body = serde_json::json!({ "name": name });
                    let t = call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
                    writeln!(out, "created tenant {}", t["name"].as_str().unwrap_or(""))?;
                }
                TenantsCommand::List => {
                    let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
                    for t in list["tenants"].as_array().cloned().unwrap_or_default() {
                        writeln!(out, "{}", t["name"].as_str().unwrap_or(""))?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// One record as a table line: time, severity, service, body on one line.
fn line(hit: &Value) -> String {
    let body = match &hit["body"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let body: String = body.replace(['\n', '\r'], " ");
    format!(
        "{:<30} {:<8} {:<20} {}",
        hit["timestamp"].as_str().unwrap_or(""),
        severity_label(hit),
        hit["service_name"].as_str().unwrap_or("-"),
        body
    )
}

/// A log hit's severity as every table of the CLI shows it: its text, else the OTLP short
/// name of its number (`INFO`, `WARN2`), for records sent with a number and no text (many
/// loggers' bridges), since a bare `9` means nothing to a reader. Neither is `-`, as a
/// missing service is; a number outside the enum stays a number.
pub(super) fn severity_label(hit: &Value) -> String {
    use vantage_proto::otlp::logs::v1::SeverityNumber;
    if let Some(text) = hit["severity_text"].as_str().filter(|s| !s.is_empty()) {
        return text.to_string();
    }
    match hit["severity_number"].as_i64() {
        None | Some(0) => "-".to_string(),
        Some(n) => i32::try_from(n)
            .ok()
            .and_then(|n| SeverityNumber::try_from(n).ok())
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("SEVERITY_NUMBER_")
                    .to_string()
            })
            .unwrap_or_else(|| n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_without_text_is_named_from_its_number() {
        let named = |text: &str, number: Value| {
            let l = line(&serde_json::json!({"severity_text": text, "severity_number": number}));
            l.split_whitespace().next().unwrap_or_default().to_string()
        };
        assert_eq!(named("", serde_json::json!(9)), "INFO");
        assert_eq!(named("", serde_json::json!(14)), "WARN2");
        assert_eq!(named("", serde_json::json!(24)), "FATAL4");
        assert_eq!(named("", serde_json::json!(0)), "-");
        assert_eq!(named("", serde_json::json!(99)), "99");
        assert_eq!(named("", Value::Null), "-");
        assert_eq!(named("Warning", serde_json::json!(13)), "Warning");
    }

    #[test]
    fn table_lines_are_single_lines() {
        let hit = serde_json::json!({
            "timestamp": "2026-11-25T20:00:00Z", "severity_text": "ERROR",
            "service_name": "checkout", "body": "two\nlines"
        });
        let l = line(&hit);
        assert!(!l.contains('\n'));
        assert!(l.contains("ERROR") && l.contains("checkout") && l.contains("two lines"));
    }

    #[test]
    fn urls_are_encoded() {
        let u = url(
            "http://h:1/",
            "/api/v1/logs/search",
            &[("query", "a AND \"b c\"".into())],
        )
        .unwrap();
        assert_eq!(
            u.to_string(),
            "http://h:1/api/v1/logs/search?query=a+AND+%22b+c%22"
        );
    }
}
