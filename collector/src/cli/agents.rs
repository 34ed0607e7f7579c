//! `vantage agents ...` and `vantage enrollment ...`: the fleet and its enrollment tokens.

use std::io::Write as _;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{HttpClient, call_json, url};

/// The fleet.
#[derive(Debug, Subcommand)]
pub(super) enum AgentsCommand {
    /// List agents: host, version, labels, remote configuration (state, desired and
    /// applied versions, last error), connected, last contact, key status.
    List {
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
        /// Print the API's JSON (every field of `GET /api/v1/agents`).
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: its key is refused from its next request on.
    Revoke {
        /// The agent id.
        agent_id: String,
    },
}

/// Enrollment tokens (admin).
#[derive(Debug, Subcommand)]
pub(super) enum EnrollmentCommand {
    /// Create a token; printed once.
    Create {
        /// What it is for.
        name: String,
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime, e.g. 7d.
        #[arg(long, default_value = "7d")]
        expires_in: String,
        /// Agents it may enroll [default: unlimited until expiry].
        #[arg(long)]
        max_uses: Option<u32>,
    },
    /// List tokens.
    List {
        /// Tenant [default: the caller's].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token (agents enrolled with it keep working).
    Revoke {
        /// The token id.
        token_id: String,
    },
}

fn tenant_params(tenant: Option<String>) -> Vec<(&'static str, String)> {
    tenant.map(|t| ("tenant", t)).into_iter().collect()
}

/// `vantage agents ...`.
pub(super) async fn agents(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: AgentsCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        AgentsCommand::List { tenant, json } => {
            let uri = url(base, "/api/v1/agents", &tenant_params(tenant))?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                let agents = list["agents"].as_array().cloned().unwrap_or_default();
                out.write_all(super::fleet::table(&agents).as_bytes())?;
            }
        }
        AgentsCommand::Revoke { agent_id } => {
            let uri = url(base, &format!("/api/v1/agents/{agent_id}"), &[])?;
            let a = call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(
                out,
                "revoked {} ({})",
                agent_id,
                a["hostname"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// `vantage enrollment ...`.
pub(super) async fn enrollment(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: EnrollmentCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        EnrollmentCommand::Create {
            name,
            tenant,
            expires_in,
            max_uses,
        } => {
            let uri = url(base, "/api/v1/enrollment-tokens", &[])?;
            let body = json!({"name": name, "tenant": tenant, "expires_in": expires_in, "max_uses": max_uses});
            let t = call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
            writeln!(out, "token_id:   {}", t["token_id"].as_str().unwrap_or(""))?;
            writeln!(out, "tenant:     {}", t["tenant"].as_str().unwrap_or(""))?;
            writeln!(
                out,
                "expires_at: {}",
                t["expires_at"].as_str().unwrap_or("never")
            )?;
            writeln!(out, "token:      {}", t["token"].as_str().unwrap_or(""))?;
            writeln!(
                out,
                "-- shown only now; give it to `vantage-agent` as enrollment_token"
            )?;
        }
        EnrollmentCommand::List { tenant } => {
            let uri = url(base, "/api/v1/enrollment-tokens", &tenant_params(tenant))?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:<14} {:<12} {:<20} {:<11} {:<31} STATE",
                "TOKEN_ID", "TENANT", "NAME", "USES", "EXPIRES"
            )?;
            for t in list["tokens"].as_array().cloned().unwrap_or_default() {
                let uses = match &t["max_uses"] {
                    Value::Number(max) => format!("{}/{max}", t["uses"]),
                    _ => t["uses"].to_string(),
                };
                writeln!(
                    out,
                    "{:<14} {:<12} {:<20} {:<11} {:<31} {}",
                    t["token_id"].as_str().unwrap_or(""),
                    t["tenant"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    uses,
                    t["expires_at"].as_str().unwrap_or("never"),
                    if t["revoked_at"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    }
                )?;
            }
        }
        EnrollmentCommand::Revoke { token_id } => {
            let uri = url(base, &format!("/api/v1/enrollment-tokens/{token_id}"), &[])?;
            call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(out, "revoked {token_id}")?;
        }
    }
    Ok(())
}
