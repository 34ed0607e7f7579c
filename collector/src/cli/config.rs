//! `vantage config ...`: the agent configuration documents (see `/api/v1/configs`).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::{HttpClient, api_error, call, call_json, url};

/// Agent configuration documents.
#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
    /// List documents with selector, current version, roll-out and matching agents.
    List,
    /// Show a document's current version (or --version N) with its body.
    Show {
        /// Document name.
        name: String,
        /// A version other than the current one.
        #[arg(long)]
        version: Option<u32>,
    },
    /// A document's versions: author, time, message.
    History {
        /// Document name.
        name: String,
    },
    /// Unified diff between two versions.
    Diff {
        /// Document name.
        name: String,
        /// Old version.
        #[arg(long)]
        from: u32,
        /// New version.
        #[arg(long)]
        to: u32,
    },
    /// Upload FILE as a new version of document --name (created when new).
    Push {
        /// The YAML file.
        file: PathBuf,
        /// Document name.
        #[arg(long)]
        name: String,
        /// Label selector, e.g. env=prod,role=web [default: every agent; when the
        /// document exists, its selector is kept].
        #[arg(long)]
        selector: Option<String>,
        /// Why.
        #[arg(short = 'm', long = "message", default_value = "")]
        message: String,
        /// Store the version without making it current (for a roll-out).
        #[arg(long)]
        no_activate: bool,
    },
    /// Roll back to an old version (a new version copying it).
    Rollback {
        /// Document name.
        name: String,
        /// The version to return to.
        #[arg(long)]
        version: u32,
        /// Why.
        #[arg(short = 'm', long = "message", default_value = "")]
        message: String,
    },
    /// Offer a version to a percentage of the matching agents (0 cancels, 100 makes it
    /// current).
    Rollout {
        /// Document name.
        name: String,
        /// The version.
        #[arg(long)]
        version: u32,
        /// 0 to 100.
        #[arg(long)]
        percent: u8,
    },
    /// Delete a document and its history.
    Delete {
        /// Document name.
        name: String,
    },
}

fn path(name: &str, rest: &str) -> String {
    format!("/api/v1/configs/{name}{rest}")
}

fn rollout_text(doc: &Value) -> String {
    match doc.get("rollout") {
        Some(r) if !r.is_null() => format!("v{} to {}%", r["version"], r["percent"]),
        _ => "-".into(),
    }
}

/// `vantage config ...`.
pub(super) async fn run(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: ConfigCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        ConfigCommand::List => {
            let uri = url(base, "/api/v1/configs", &[])?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:<24} {:<30} {:>7} {:<14} AGENTS",
                "NAME", "SELECTOR", "VERSION", "ROLLOUT"
            )?;
            for d in list["configs"].as_array().cloned().unwrap_or_default() {
                writeln!(
                    out,
                    "{:<24} {:<30} {:>7} {:<14} {}",
                    d["name"].as_str().unwrap_or(""),
                    d["selector"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("(all)"),
                    d["current_version"],
                    rollout_text(&d),
                    d["matching_agents"]
                )?;
            }
        }
        ConfigCommand::Show { name, version } => {
            let (uri, body) = match version {
                Some(v) => {
                    let uri = url(base, &path(&name, &format!("/versions/{v}")), &[])?;
                    let v = call_json(client, hyper::Method::GET, uri, token, None).await?;
                    writeln!(out, "# {name} version {}", v["version"])?;
                    (None, v)
                }
                None => (Some(url(base, &path(&name, ""), &[])?), Value::Null),
            };
            let version = match uri {
                Some(uri) => {
                    let d = call_json(client, hyper::Method::GET, uri, token, None).await?;
                    writeln!(
                        out,
                        "# {name} version {} (selector {:?}, roll-out {}, {} matching agents)",
                        d["current_version"],
                        d["selector"].as_str().unwrap_or(""),
                        rollout_text(&d),
                        d["matching_agents"]
                    )?;
                    d["current"].clone()
                }
                None => body,
            };
            writeln!(
                out,
                "# by {} at {}: {}",
                version["author"].as_str().unwrap_or(""),
                version["created_at"].as_str().unwrap_or(""),
                version["message"].as_str().unwrap_or("")
            )?;
            write!(out, "{}", version["body"].as_str().unwrap_or(""))?;
        }
        ConfigCommand::History { name } => {
            let uri = url(base, &path(&name, "/versions"), &[])?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:>7} {:<31} {:<24} MESSAGE",
                "VERSION", "CREATED_AT", "AUTHOR"
            )?;
            for v in list["versions"].as_array().cloned().unwrap_or_default() {
                writeln!(
                    out,
                    "{:>7} {:<31} {:<24} {}",
                    v["version"],
                    v["created_at"].as_str().unwrap_or(""),
                    v["author"].as_str().unwrap_or(""),
                    v["message"].as_str().unwrap_or("")
                )?;
            }
        }
        ConfigCommand::Diff { name, from, to } => {
            let params = [("from", from.to_string()), ("to", to.to_string())];
            let uri = url(base, &path(&name, "/diff"), &params)?;
            let d = call_json(client, hyper::Method::GET, uri, token, None).await?;
            write!(out, "{}", d["diff"].as_str().unwrap_or(""))?;
        }
        ConfigCommand::Push {
            file,
            name,
            selector,
            message,
            no_activate,
        } => {
            let body = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let put = json!({
                "body": body, "message": message, "selector": selector, "activate": !no_activate,
            });
            let uri = url(base, &path(&name, ""), &[])?;
            let response = call(client, hyper::Method::PUT, uri, token, Some(put)).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            let doc: Value = if status == hyper::StatusCode::NOT_FOUND {
                let create = json!({
                    "name": name, "selector": selector.unwrap_or_default(),
                    "body": body, "message": message,
                });
                let uri = url(base, "/api/v1/configs", &[])?;
                call_json(client, hyper::Method::POST, uri, token, Some(create)).await?
            } else if status.is_success() {
                serde_json::from_slice(&bytes)?
            } else {
                return Err(api_error(status, &bytes));
            };
            writeln!(
                out,
                "{name}: version {} stored; current version {}; {} matching agents",
                doc["version"]["version"], doc["current_version"], doc["matching_agents"]
            )?;
        }
        ConfigCommand::Rollback {
            name,
            version,
            message,
        } => {
            let uri = url(base, &path(&name, "/rollback"), &[])?;
            let body = json!({"version": version, "message": message});
            let doc = call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
            writeln!(
                out,
                "{name}: rolled back to version {version} as version {}",
                doc["current_version"]
            )?;
        }
        ConfigCommand::Rollout {
            name,
            version,
            percent,
        } => {
            let uri = url(base, &path(&name, "/rollout"), &[])?;
            let body = json!({"version": version, "percent": percent});
            let doc = call_json(client, hyper::Method::PUT, uri, token, Some(body)).await?;
            writeln!(
                out,
                "{name}: current version {}, roll-out {}",
                doc["current_version"],
                rollout_text(&doc)
            )?;
        }
        ConfigCommand::Delete { name } => {
            let uri = url(base, &path(&name, ""), &[])?;
            call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(out, "deleted {name}")?;
        }
    }
    Ok(())
}
