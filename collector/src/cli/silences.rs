//! `vantage silences`: create, list and expire the notifier's silences through the
//! collector's Alertmanager API (`/api/v2/silences`), as `amtool silence` does.

use std::io::Write as _;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{HttpClient, call_json, url};
use crate::alerting::notify::matchers::{MatchOp, parse_matchers};
use crate::alerting::notify::now_wall_ms;
use crate::alerting::notify::payload::go_time;

#[derive(Debug, Subcommand)]
pub(super) enum SilencesCommand {
    /// Silence alerts matching every --matcher for --duration (admin scope).
    Create {
        /// A matcher such as 'alertname="DiskFull"' or 'instance=~"db-.*"' (repeat for several).
        #[arg(long = "matcher", required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 30m, 2h, 1d.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Why (required, as in Alertmanager).
        #[arg(long)]
        comment: String,
        /// Who [default: vantage-cli].
        #[arg(long, default_value = "vantage-cli")]
        author: String,
    },
    /// List silences (active and pending; --expired adds expired ones).
    List {
        /// Also show expired silences.
        #[arg(long)]
        expired: bool,
    },
    /// Expire a silence now (admin scope).
    Expire {
        /// The silence id.
        id: String,
    },
}

fn duration(text: &str) -> anyhow::Result<Duration> {
    vantage_proto::config::parse_duration(text).map_err(|e| anyhow::anyhow!("--duration: {e}"))
}

pub(super) async fn run(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: SilencesCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        SilencesCommand::Create {
            matchers,
            duration: d,
            comment,
            author,
        } => {
            let mut api = Vec::new();
            for text in &matchers {
                for m in parse_matchers(text).map_err(|e| anyhow::anyhow!("--matcher: {e}"))? {
                    api.push(json!({
                        "name": m.name,
                        "value": m.value,
                        "isRegex": matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
                        "isEqual": matches!(m.op, MatchOp::Equal | MatchOp::Regex),
                    }));
                }
            }
            let d = duration(&d)?;
            let now = now_wall_ms();
            let ends = now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
            let body = json!({
                "matchers": api,
                "startsAt": go_time(now),
                "endsAt": go_time(ends),
                "createdBy": author,
                "comment": comment,
            });
            let uri = url(base, "/api/v2/silences", &[])?;
            let answer = call_json(client, hyper::Method::POST, uri, token, Some(body)).await?;
            writeln!(out, "{}", answer["silenceID"].as_str().unwrap_or(""))?;
        }
        SilencesCommand::List { expired } => {
            let uri = url(base, "/api/v2/silences", &[])?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:<36} {:<8} {:<24} {:<16} {:<40} COMMENT",
                "ID", "STATE", "ENDS", "CREATED_BY", "MATCHERS"
            )?;
            for s in list.as_array().cloned().unwrap_or_default() {
                let state = s["status"]["state"].as_str().unwrap_or("");
                if state == "expired" && !expired {
                    continue;
                }
                let matchers: Vec<String> = s["matchers"]
                    .as_array()
                    .map(|a| a.iter().map(matcher_text).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<36} {:<8} {:<24} {:<16} {:<40} {}",
                    s["id"].as_str().unwrap_or(""),
                    state,
                    s["endsAt"].as_str().unwrap_or(""),
                    s["createdBy"].as_str().unwrap_or(""),
                    matchers.join(","),
                    s["comment"]
                        .as_str()
                        .unwrap_or("")
                        .replace(['\n', '\r'], " "),
                )?;
            }
        }
        SilencesCommand::Expire { id } => {
            let uri = url(base, &format!("/api/v2/silence/{id}"), &[])?;
            call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(out, "expired {id}")?;
        }
    }
    Ok(())
}

fn matcher_text(m: &Value) -> String {
    let op = match (
        m["isRegex"].as_bool().unwrap_or(false),
        m["isEqual"].as_bool().unwrap_or(true),
    ) {
        (false, true) => "=",
        (false, false) => "!=",
        (true, true) => "=~",
        (true, false) => "!~",
    };
    format!(
        "{}{op}{}",
        m["name"].as_str().unwrap_or(""),
        crate::alerting::notify::matchers::go_quote(m["value"].as_str().unwrap_or(""))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_print_as_written() {
        let m = json!({"name": "a", "value": "x|y", "isRegex": true, "isEqual": false});
        assert_eq!(matcher_text(&m), "a!~\"x|y\"");
        assert!(duration("2h").is_ok() && duration("2 hours").is_err());
    }
}
