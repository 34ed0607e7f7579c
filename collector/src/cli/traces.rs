//! `vantage traces get ID` (a text waterfall of one trace) and `vantage traces search`.

use std::io::Write as _;

use clap::Subcommand;
use serde_json::Value;

use super::{HttpClient, call_json, url};

/// Width of the waterfall's bar column, in characters.
const BAR_WIDTH: usize = 40;

#[derive(Debug, Subcommand)]
pub(super) enum TracesCommand {
    /// Show one trace as a waterfall: every span in tree order, indented by depth, with a
    /// bar for when it ran.
    Get {
        /// The trace id (32 hex digits).
        trace_id: String,
        /// Also list the trace's log records.
        #[arg(long)]
        with_logs: bool,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Find traces with a span matching every filter, most recent first.
    Search {
        /// The span's service.
        #[arg(long)]
        service: Option<String>,
        /// The span's name.
        #[arg(long)]
        operation: Option<String>,
        /// Attribute filters, `key=value` separated by spaces.
        #[arg(long)]
        tags: Option<String>,
        /// Shortest span, e.g. 100ms.
        #[arg(long)]
        min_duration: Option<String>,
        /// Longest span, e.g. 2s.
        #[arg(long)]
        max_duration: Option<String>,
        /// error, ok or unset.
        #[arg(long)]
        status: Option<String>,
        /// How far back to search, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Most traces to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: TracesCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        TracesCommand::Get {
            trace_id,
            with_logs,
            json,
        } => {
            let params: Vec<(&str, String)> = if with_logs {
                vec![("withLogs", "true".into())]
            } else {
                Vec::new()
            };
            let uri = url(base, &format!("/api/v1/traces/{trace_id}"), &params)?;
            let trace = call_json(client, hyper::Method::GET, uri, token, None).await?;
            if json {
                writeln!(out, "{trace}")?;
                return Ok(());
            }
            for line in waterfall(&trace, BAR_WIDTH) {
                writeln!(out, "{line}")?;
            }
            for log in trace["logs"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "log {} {} {} {}",
                    log["timestamp"].as_str().unwrap_or(""),
                    log["span_id"].as_str().unwrap_or(""),
                    super::severity_label(log),
                    log["body"]
                )?;
            }
        }
        TracesCommand::Search {
            service,
            operation,
            tags,
            min_duration,
            max_duration,
            status,
            since,
            limit,
            json,
        } => {
            let mut params = vec![
                ("start", format!("now-{since}")),
                ("limit", limit.to_string()),
            ];
            for (name, value) in [
                ("service", service),
                ("operation", operation),
                ("tags", tags),
                ("minDuration", min_duration),
                ("maxDuration", max_duration),
                ("status", status),
            ] {
                if let Some(v) = value {
                    params.push((name, v));
                }
            }
            let uri = url(base, "/api/v1/traces/search", &params)?;
            let found = call_json(client, hyper::Method::GET, uri, token, None).await?;
            if json {
                writeln!(out, "{found}")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<32} {:<30} {:>12} {:>6} {:>6}  ROOT",
                "TRACE_ID", "START", "DURATION_MS", "SPANS", "ERRORS"
            )?;
            let traces = found["traces"].as_array().cloned().unwrap_or_default();
            for t in &traces {
                writeln!(
                    out,
                    "{:<32} {:<30} {:>12.3} {:>6} {:>6}  {}: {}",
                    t["trace_id"].as_str().unwrap_or(""),
                    t["start"].as_str().unwrap_or(""),
                    t["duration_ms"].as_f64().unwrap_or(0.0),
                    t["span_count"],
                    t["error_count"],
                    t["root_service"].as_str().unwrap_or(""),
                    t["root_name"].as_str().unwrap_or(""),
                )?;
            }
            writeln!(out, "-- {} traces", traces.len())?;
        }
    }
    Ok(())
}

fn ns(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The lines of a waterfall: a header, then one line per span (offset and duration in
/// ms, a bar scaled to the trace, then service and name indented by depth; `!` marks an
/// error).
fn waterfall(trace: &Value, width: usize) -> Vec<String> {
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let start = spans
        .iter()
        .map(|s| ns(&s["start_time_unix_nano"]))
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| ns(&s["end_time_unix_nano"]))
        .max()
        .unwrap_or(start);
    let total = end.saturating_sub(start).max(1);
    let mut lines = vec![format!(
        "trace {}: {} spans{}, {:.3} ms",
        trace["trace_id"].as_str().unwrap_or(""),
        trace["total_spans"],
        if trace["truncated"] == Value::Bool(true) {
            format!(" (showing the first {})", spans.len())
        } else {
            String::new()
        },
        total as f64 / 1e6
    )];
    lines.push(format!(
        "{:>12} {:>12}  {:<width$}  SPAN",
        "OFFSET_MS", "DURATION_MS", "",
    ));
    for s in &spans {
        let (s_start, s_end) = (ns(&s["start_time_unix_nano"]), ns(&s["end_time_unix_nano"]));
        let from =
            ((s_start.saturating_sub(start)) as u128 * width as u128 / total as u128) as usize;
        let to = ((s_end.saturating_sub(start)) as u128 * width as u128 / total as u128) as usize;
        let from = from.min(width.saturating_sub(1));
        let len = to.saturating_sub(from).max(1).min(width - from);
        let bar = format!("{}{}", " ".repeat(from), "#".repeat(len));
        let depth = s["depth"].as_u64().unwrap_or(0) as usize;
        let error = if s["status"]["code"] == "error" {
            " !"
        } else {
            ""
        };
        lines.push(format!(
            "{:>12.3} {:>12.3}  {:<width$}  {}{}: {}{}",
            s_start.saturating_sub(start) as f64 / 1e6,
            s_end.saturating_sub(s_start) as f64 / 1e6,
            bar,
            "  ".repeat(depth.min(40)),
            s["service_name"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            error,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn waterfall_scales_bars_and_indents_children() {
        let trace = json!({
            "trace_id": "ab",
            "total_spans": 2,
            "truncated": false,
            "spans": [
                {"start_time_unix_nano": "1000000000", "end_time_unix_nano": "1010000000",
                 "depth": 0, "service_name": "web", "name": "GET /", "status": {"code": "unset"}},
                {"start_time_unix_nano": "1005000000", "end_time_unix_nano": "1010000000",
                 "depth": 1, "service_name": "db", "name": "SELECT", "status": {"code": "error"}},
            ]
        });
        let lines = waterfall(&trace, 10);
        assert_eq!(lines[0], "trace ab: 2 spans, 10.000 ms");
        assert!(lines[2].contains("##########  web: GET /"), "{}", lines[2]);
        assert!(
            lines[3].contains("     #####    db: SELECT !"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].starts_with("       5.000        5.000"),
            "{}",
            lines[3]
        );
        // Nothing panics on an empty or malformed answer.
        assert_eq!(waterfall(&json!({}), 10).len(), 2);
    }
}
