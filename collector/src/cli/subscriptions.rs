//! `vantage alerts`: a person's own subscriptions to the tenant's notification
//! receivers (`/api/v1/alerts/subscriptions`): subscribe an e-mail address, list, mute
//! for a while or until unmuted, unmute, unsubscribe. Needs a person's login
//! (`vantage login`), as subscriptions belong to people.

use std::io::Write as _;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{HttpClient, call_json, url};
use crate::alerting::notify::now_wall_ms;
use crate::alerting::notify::payload::go_time;

#[derive(Debug, Subcommand)]
pub(super) enum AlertsCommand {
    /// Subscribe your e-mail address to a receiver of your tenant.
    Subscribe {
        /// The receiver's name in the tenant's Alertmanager configuration.
        receiver: String,
        /// Where to send the e-mails.
        #[arg(long)]
        email: String,
        /// Only alerts matching this, e.g. 'severity="page"' (repeat for several).
        #[arg(long = "matcher")]
        matchers: Vec<String>,
    },
    /// Delete a subscription.
    Unsubscribe {
        /// The subscription id.
        id: String,
    },
    /// Mute a subscription: for a while (--for 2h) or until unmuted.
    Mute {
        /// The subscription id.
        id: String,
        /// How long, e.g. 30m, 8h, 2d [default: until unmuted].
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Unmute a subscription.
    Unmute {
        /// The subscription id.
        id: String,
    },
    /// List your subscriptions (--all: the tenant's, admins).
    Subscriptions {
        /// Every subscription of the tenant (admin).
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

fn mute_text(s: &Value) -> String {
    match (s["muted"].as_bool(), s["muted_until"].as_str()) {
        (Some(true), Some(until)) => format!("until {until}"),
        (Some(true), None) => "muted".into(),
        _ => "-".into(),
    }
}

/// Runs one `vantage alerts` command.
pub(super) async fn run(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: AlertsCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let path = "/api/v1/alerts/subscriptions";
    match command {
        AlertsCommand::Subscribe {
            receiver,
            email,
            matchers,
        } => {
            let body = json!({"receiver": receiver, "email": email, "matchers": matchers});
            let s = call_json(
                client,
                hyper::Method::POST,
                url(base, path, &[])?,
                token,
                Some(body),
            )
            .await?;
            writeln!(out, "{}", s["id"].as_str().unwrap_or(""))?;
        }
        AlertsCommand::Unsubscribe { id } => {
            let uri = url(base, &format!("{path}/{id}"), &[])?;
            call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(out, "unsubscribed {id}")?;
        }
        AlertsCommand::Mute { id, duration } => {
            let body = match duration {
                Some(d) => {
                    let d = vantage_proto::config::parse_duration(&d)
                        .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
                    let until = now_wall_ms()
                        .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
                    json!({ "until": go_time(until) })
                }
                None => json!({}),
            };
            let uri = url(base, &format!("{path}/{id}/mute"), &[])?;
            let s = call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
            writeln!(out, "muted {id} ({})", mute_text(&s))?;
        }
        AlertsCommand::Unmute { id } => {
            let uri = url(base, &format!("{path}/{id}/unmute"), &[])?;
            call_json(client, hyper::Method::POST, uri, token, Some(json!({}))).await?;
            writeln!(out, "unmuted {id}")?;
        }
        AlertsCommand::Subscriptions { all, json } => {
            let params = if all {
                vec![("all", "true".to_string())]
            } else {
                Vec::new()
            };
            let list = call_json(
                client,
                hyper::Method::GET,
                url(base, path, &params)?,
                token,
                None,
            )
            .await?;
            if json {
                writeln!(out, "{list}")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<32} {:<16} {:<16} {:<28} {:<32} MATCHERS",
                "ID", "RECEIVER", "USER", "EMAIL", "MUTED"
            )?;
            for s in list["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let matchers: Vec<&str> = s["matchers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<32} {:<16} {:<16} {:<28} {:<32} {}",
                    s["id"].as_str().unwrap_or(""),
                    s["receiver"].as_str().unwrap_or(""),
                    s["username"].as_str().unwrap_or(""),
                    s["email"].as_str().unwrap_or(""),
                    mute_text(&s),
                    matchers.join(",")
                )?;
            }
        }
    }
    Ok(())
}
