//! Log rules: an alerting rule whose expression is exactly
//! `vantage_log_count{query="<log query>", window="5m"} <op> <number>`.
//!
//! The shape keeps a rule file valid for `promtool check rules` (it is ordinary PromQL
//! over a reserved metric name), while the evaluator counts matching log records in the
//! window instead of reading a series. Any other use of the reserved name is refused,
//! so a file never means something different here and in Prometheus by accident.

use promql_parser::parser::Expr;
use vantage_storage::logs::{LogQuery, LogStore, SortOrder};

/// The reserved metric name of log rules.
pub const LOG_METRIC: &str = "vantage_log_count";
/// Sample lines attached to a firing log alert.
pub const LOG_SAMPLE_LINES: usize = 5;
/// Most bytes of records read for the samples.
const SAMPLE_HITS_BYTES: usize = 1 << 20;
/// Longest sample line kept, in bytes; longer ones are cut (on a character boundary).
const MAX_SAMPLE_LINE_BYTES: usize = 512;

/// The comparison of a log rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

/// A parsed log rule condition.
#[derive(Clone, Debug, PartialEq)]
pub struct LogCondition {
    /// The log query (the log search language).
    pub query: String,
    /// The `window` label as written (`5m`).
    pub window: String,
    /// The window in milliseconds.
    pub window_ms: i64,
    /// The comparison.
    pub op: CmpOp,
    /// The number compared with.
    pub threshold: f64,
}

/// What one evaluation of a log condition found.
#[derive(Clone, Debug, Default)]
pub struct LogCount {
    /// Matching records in the window.
    pub count: u64,
    /// Up to [`LOG_SAMPLE_LINES`] bodies of the newest matches.
    pub samples: Vec<String>,
}

impl LogCondition {
    /// Whether `count` satisfies the condition.
    pub fn holds(&self, count: f64) -> bool {
        self.op.holds(count, self.threshold)
    }

    /// Counts matching records in `(at - window, at]` and takes the newest samples,
    /// giving up after `timeout` (the rules' `metrics.query_timeout`, as for PromQL).
    pub fn count(
        &self,
        store: &LogStore,
        tenant: &str,
        at_ms: i64,
        timeout: std::time::Duration,
    ) -> Result<LogCount, String> {
        let end_ns = at_ms.saturating_add(1).saturating_mul(1_000_000);
        let start_ns = end_ns.saturating_sub(self.window_ms.saturating_mul(1_000_000));
        let result = store
            .search_until(
                &LogQuery {
                    tenant: tenant.to_string(),
                    query: self.query.clone(),
                    start_ns,
                    end_ns,
                    limit: LOG_SAMPLE_LINES,
                    order: SortOrder::TimeDesc,
                    histogram_interval_ns: None,
                    after_lsn: None,
                    // A sample is one line of each record; the first always comes.
                    max_hits_bytes: SAMPLE_HITS_BYTES,
                },
                &vantage_storage::logs::Deadline::after(timeout),
            )
            .map_err(|e| e.to_string())?;
        let samples = result.hits.iter().map(sample_line).collect();
        Ok(LogCount {
            count: result.total,
            samples,
        })
    }
}

fn sample_line(hit: &vantage_storage::logs::LogHit) -> String {
    let Some(view) = vantage_proto::logs::envelope_records(&hit.envelope).next() else {
        return String::new();
    };
    let body = match view.record.body.as_ref() {
        Some(v) => match vantage_proto::json::any_value_to_json(v) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        },
        None => String::new(),
    };
    let mut line = body.replace('\n', " ");
    line.truncate(line.floor_char_boundary(MAX_SAMPLE_LINE_BYTES));
    line
}

/// Whether the expression names the reserved metric at all.
pub fn mentions_log_metric(expr: &str) -> bool {
    expr.contains(LOG_METRIC)
}

/// Parses the one accepted shape; anything else is refused with what is expected.
pub fn parse_condition(expr: &str) -> Result<LogCondition, String> {
    let shape = || {
        format!(
            "{LOG_METRIC} is reserved for log rules, whose expr must be exactly \
             {LOG_METRIC}{{query=\"<log query>\", window=\"<duration>\"}} <comparison> <number>"
        )
    };
    // The engine's parse: an expression too deep to take apart safely is refused.
    let parsed = vantage_storage::metrics::promql::parse(expr).map_err(|_| shape())?;
    let Expr::Binary(b) = parsed else {
        return Err(shape());
    };
    if !b.op.is_comparison_operator() || b.modifier.as_ref().is_some_and(|m| m.return_bool) {
        return Err(shape());
    }
    let (Expr::VectorSelector(vs), Expr::NumberLiteral(n)) = (&*b.lhs, &*b.rhs) else {
        return Err(shape());
    };
    if vs.name.as_deref() != Some(LOG_METRIC)
        || vs.offset.is_some()
        || vs.at.is_some()
        || !vs.matchers.or_matchers.is_empty()
    {
        return Err(shape());
    }
    let (mut query, mut window) = (None, None);
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(shape());
        }
        match m.name.as_str() {
            "query" if query.is_none() => query = Some(m.value.clone()),
            "window" if window.is_none() => window = Some(m.value.clone()),
            _ => return Err(shape()),
        }
    }
    let (Some(query), Some(window)) = (query, window) else {
        return Err(shape());
    };
    let window_ms = super::file::parse_duration_ms(&window)
        .map_err(|e| format!("{LOG_METRIC}: window {window:?}: {e}"))?;
    if window_ms <= 0 {
        return Err(format!("{LOG_METRIC}: window must be positive"));
    }
    let op = match b.op.to_string().as_str() {
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Ge,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        _ => return Err(shape()),
    };
    Ok(LogCondition {
        query,
        window,
        window_ms,
        op,
        threshold: n.val,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_shape_parses() {
        vantage_storage::metrics::promql::format_query("up").unwrap();
        let c = parse_condition(
            r#"vantage_log_count{query="severity_text:ERROR AND service.name:checkout", window="5m"} > 50"#,
        )
        .unwrap();
        assert_eq!(c.query, "severity_text:ERROR AND service.name:checkout");
        assert_eq!(c.window_ms, 300_000);
        assert_eq!(c.op, CmpOp::Gt);
        assert_eq!(c.threshold, 50.0);
        assert!(c.holds(51.0) && !c.holds(50.0));
        let c = parse_condition(r#"vantage_log_count{window="1m",query="x"} <= 0"#).unwrap();
        assert_eq!(c.op, CmpOp::Le);
    }

    #[test]
    fn other_shapes_are_refused_clearly() {
        for bad in [
            r#"vantage_log_count{query="x", window="5m"}"#,
            r#"sum(vantage_log_count{query="x", window="5m"}) > 1"#,
            r#"vantage_log_count{query="x"} > 1"#,
            r#"vantage_log_count{query=~"x", window="5m"} > 1"#,
            r#"vantage_log_count{query="x", window="5m", job="a"} > 1"#,
            r#"vantage_log_count{query="x", window="5m"} > bool 1"#,
            r#"vantage_log_count{query="x", window="5m"} offset 1m > 1"#,
            r#"vantage_log_count{query="x", window="5m"} + 1"#,
            r#"1 < vantage_log_count{query="x", window="5m"}"#,
            r#"vantage_log_count{query="x", window="five"} > 1"#,
            r#"vantage_log_count{query="x", window="0"} > 1"#,
        ] {
            let e = parse_condition(bad).unwrap_err();
            assert!(e.contains(LOG_METRIC), "{bad}: {e}");
        }
    }
}
