//! The `vantage` command-line client: log search and live tail against the query API,
//! as a readable table or as JSON.

use std::io::Write as _;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Empty};
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

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

fn url(base: &str, path: &str, params: &[(&str, String)]) -> anyhow::Result<hyper::Uri> {
    let query = serde_urlencoded::to_string(params)?;
    let text = format!("{}{path}?{query}", base.trim_end_matches('/'));
    text.parse()
        .map_err(|e| anyhow::anyhow!("bad --url {base:?}: {e}"))
}

async fn get(
    client: &HttpClient,
    uri: hyper::Uri,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let shown = uri.to_string();
    client
        .get(uri)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {shown}: {e}"))
}

fn api_error(status: hyper::StatusCode, body: &[u8]) -> anyhow::Error {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("{status}: {message}")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    match cli.command {
        Command::Logs {
            command:
                LogsCommand::Search {
                    query,
                    since,
                    start,
                    end,
                    limit,
                    order,
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
            let response = get(&client, url(&cli.url, "/api/v1/logs/search", &params)?).await?;
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
            let response = get(
                &client,
                url(&cli.url, "/api/v1/logs/tail", &[("query", query)])?,
            )
            .await?;
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let bytes = body.collect().await?.to_bytes();
                return Err(api_error(status, &bytes));
            }
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&raw);
                    let Some(data) = text.trim_end().strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim_start();
                    let mut out = std::io::stdout().lock();
                    if json {
                        writeln!(out, "{data}")?;
                    } else if let Ok(hit) = serde_json::from_str::<Value>(data) {
                        writeln!(out, "{}", line(&hit))?;
                    }
                    out.flush()?;
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
    let severity = hit["severity_text"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| hit["severity_number"].to_string());
    format!(
        "{:<30} {:<8} {:<20} {}",
        hit["timestamp"].as_str().unwrap_or(""),
        severity,
        hit["service_name"].as_str().unwrap_or("-"),
        body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
