//! The table `vantage agents list` prints: one line per agent of `GET /api/v1/agents`,
//! so a lagging or failing agent shows at a glance next to the healthy ones. Kept apart
//! from the HTTP call so the layout is tested without a collector.

use serde_json::Value;

/// Longest last error shown; the whole text is in `--json`.
const ERROR_CHARS: usize = 48;
/// Longest label list shown (`k=v,k=v`).
const LABEL_CHARS: usize = 32;
/// Characters of an instance uid or config hash shown where no agent id or versions are.
const SHORT_HEX: usize = 12;

/// Column names, in order; the last column is not padded.
const HEADER: [&str; 11] = [
    "ID",
    "HOST",
    "VERSION",
    "LABELS",
    "CONFIG",
    "DESIRED",
    "APPLIED",
    "CONNECTED",
    "LAST_CONTACT",
    "STATUS",
    "LAST_ERROR",
];

/// The whole table, header included, each column as wide as its widest cell.
pub(super) fn table(agents: &[Value]) -> String {
    let rows: Vec<[String; 11]> = std::iter::once(HEADER.map(str::to_string))
        .chain(agents.iter().map(row))
        .collect();
    let mut widths = [0usize; 11];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 1;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// Up to `max` characters of `s`, with `…` when cut; one line (newlines become spaces).
fn truncate(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The agent's own labels: its description attributes without a dot in the key (the
/// OpenTelemetry ones — `host.name`, `os.type`, `service.*` — have a column or are
/// noise here), as `k=v,k=v` in key order.
fn labels(a: &Value) -> String {
    let Some(attrs) = a["attributes"].as_object() else {
        return "-".into();
    };
    let mut pairs: Vec<String> = attrs
        .iter()
        .filter(|(k, _)| !k.contains('.'))
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        return "-".into();
    }
    truncate(&pairs.join(","), LABEL_CHARS)
}

/// Desired document versions as `name@v,name@v`; `-` when the server computed none.
fn desired(a: &Value) -> String {
    let versions: Vec<String> = a["desired_config_versions"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}@{v}")).collect())
        .unwrap_or_default();
    if versions.is_empty() {
        match text(&a["desired_config_hash"]) {
            // A configuration of no documents (no selector matches).
            Some(_) => "(none)".into(),
            None => "-".into(),
        }
    } else {
        versions.join(",")
    }
}

/// What the agent reports running: the desired versions when its hash is the desired
/// one, else the start of the hash it applied; `-` when it reported nothing.
fn applied(a: &Value, desired: &str) -> String {
    match (
        text(&a["applied_config_hash"]),
        text(&a["desired_config_hash"]),
    ) {
        (Some(applied), Some(want)) if applied == want => desired.to_string(),
        (Some(applied), _) => applied.chars().take(SHORT_HEX).collect(),
        (None, _) => "-".into(),
    }
}

fn row(a: &Value) -> [String; 11] {
    let id = text(&a["agent_id"])
        .map(str::to_string)
        .or_else(|| text(&a["instance_uid"]).map(|u| u.chars().take(SHORT_HEX).collect()))
        .unwrap_or_else(|| "-".into());
    let host = text(&a["hostname"]).unwrap_or("-").to_string();
    let version = text(&a["version"]).unwrap_or("-").to_string();
    let desired = desired(a);
    let applied = applied(a, &desired);
    let config = text(&a["config_status"]).unwrap_or("unknown").to_string();
    let connected = if a["connected"].as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    };
    // OpAMP's last message, else the key's last use (agents that export but do not
    // speak OpAMP).
    let contact = text(&a["last_contact"])
        .or_else(|| text(&a["last_seen_at"]))
        .unwrap_or("never")
        .to_string();
    let status = text(&a["status"]).unwrap_or("-").to_string();
    let error = text(&a["last_error"])
        .map(|e| truncate(e, ERROR_CHARS))
        .unwrap_or_else(|| "-".into());
    [
        id,
        host,
        version,
        labels(a),
        config,
        desired,
        applied,
        connected.to_string(),
        contact,
        status,
        error,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opamp_agent(status: &str, applied: Option<&str>, error: Option<&str>) -> Value {
        json!({
            "agent_id": null, "hostname": "web-1", "version": "0.1.0", "status": "active",
            "instance_uid": "0123456789abcdef0123456789abcdef",
            "attributes": {"env": "prod", "role": "web", "host.name": "web-1", "cores": 4},
            "desired_config_hash": "aaaabbbbccccdddd", "desired_config_versions": {"base": 3, "web": 1},
            "applied_config_hash": applied, "config_status": status, "last_error": error,
            "connected": true, "last_contact": "2026-11-26T08:00:00Z",
        })
    }

    #[test]
    fn columns_line_up_and_show_the_config_state() {
        let agents = [
            opamp_agent("applied", Some("aaaabbbbccccdddd"), None),
            opamp_agent(
                "failed",
                Some("eeeeffff00001111"),
                Some("unknown key logs.files"),
            ),
        ];
        let out = table(&agents);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID "));
        // Every column starts at the same offset on every line.
        fn from<'a>(header: &str, line: &'a str, col: &str) -> &'a str {
            &line[header.find(col).unwrap()..]
        }
        assert!(from(lines[0], lines[1], "CONFIG").starts_with("applied "));
        assert!(from(lines[0], lines[2], "CONFIG").starts_with("failed "));
        assert!(
            lines[1].contains(" base@3,web@1 base@3,web@1 yes "),
            "{out}"
        );
        assert!(
            lines[2].contains(" base@3,web@1 eeeeffff0000 yes "),
            "{out}"
        );
        assert!(lines[1].contains(" cores=4,env=prod,role=web "), "{out}");
        assert!(lines[1].starts_with("0123456789ab "), "uid prefix: {out}");
        assert!(lines[1].ends_with(" active -"), "{out}");
        assert!(
            lines[2].ends_with(" active unknown key logs.files"),
            "{out}"
        );
    }

    #[test]
    fn long_errors_and_labels_are_cut_and_missing_fields_show_a_dash() {
        let long = format!("line one\nline two {}", "x".repeat(200));
        let mut a = opamp_agent("failed", None, Some(&long));
        a["attributes"] = json!({"team": "a".repeat(100)});
        let out = table(&[a]);
        let line = out.lines().nth(1).unwrap();
        let error = line.rsplit("active ").next().unwrap();
        assert_eq!(error.chars().count(), ERROR_CHARS);
        assert!(error.starts_with("line one line two") && error.ends_with('…'));
        assert!(line.contains(&format!("team={}…", "a".repeat(LABEL_CHARS - 6))));
        assert_eq!(out.lines().count(), 2, "one line per agent");
        // An enrolled agent that never spoke OpAMP.
        let out = table(&[json!({
            "agent_id": "ag_1", "hostname": "h", "version": "0.1.0", "status": "revoked",
            "instance_uid": null, "desired_config_hash": null, "desired_config_versions": {},
            "applied_config_hash": null, "config_status": "unknown", "last_error": null,
            "last_contact": null, "last_seen_at": "2026-11-26T07:00:00Z", "connected": false,
        })]);
        let line = out.lines().nth(1).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "ag_1",
                "h",
                "0.1.0",
                "-",
                "unknown",
                "-",
                "-",
                "no",
                "2026-11-26T07:00:00Z",
                "revoked",
                "-"
            ]
        );
    }

    #[test]
    fn hostile_fields_do_not_break_the_table() {
        // Wrong types everywhere: printed as dashes, never a panic.
        let out = table(&[json!({
            "agent_id": 5, "hostname": ["x"], "attributes": "no", "desired_config_versions": [1],
            "last_error": {"a": 1}, "connected": "yes",
        })]);
        assert_eq!(out.lines().count(), 2);
        assert!(out.lines().nth(1).unwrap().contains(" no "));
    }
}
