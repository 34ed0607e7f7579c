//! `vantage agents list` through the real binary against OpAMP agents in different
//! configuration states, and the collector's per-state gauge that says the same: a
//! failing or lagging agent is visible at a glance and as a self-metric.

mod common;
mod opamp_support;

use std::time::Duration;

use serde_json::Value;
use vantage_proto::opamp::RemoteConfigStatuses;

use common::*;
use opamp_support::*;

const BASE: &str = "logs:\n  files: [/var/log/app.log]\n";
const ERROR: &str =
    "unknown key logs.files: expected one of files, journald, receivers, scrape_configs, limits";

#[tokio::test]
async fn agents_list_shows_config_state_versions_and_errors_and_the_gauge_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "base", "env=prod", BASE).await;
    let ingest = new_key(&c, &["ingest"], None).await;

    // web-1 applies what it was given; web-2 fails on it.
    let mut good = SimAgent::new(41, &[("env", "prod"), ("host.name", "web-1")]);
    let (_, reply) = http_send(&c, &ingest, &good.full_state(None)).await;
    let hash = reply.remote_config.expect("a remote config").config_hash;
    http_send(
        &c,
        &ingest,
        &good.status(&hash, RemoteConfigStatuses::Applied, ""),
    )
    .await;
    let mut bad = SimAgent::new(42, &[("env", "prod"), ("host.name", "web-2")]);
    http_send(&c, &ingest, &bad.full_state(None)).await;
    http_send(
        &c,
        &ingest,
        &bad.status(&hash, RemoteConfigStatuses::Failed, ERROR),
    )
    .await;

    let env = [("VANTAGE_TOKEN", c.token())];
    let out = c.cli(&["agents", "list"], &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "header and two agents: {text}");
    for column in [
        "ID",
        "HOST",
        "LABELS",
        "CONFIG",
        "DESIRED",
        "APPLIED",
        "CONNECTED",
        "LAST_CONTACT",
        "LAST_ERROR",
    ] {
        assert!(
            lines[0].split_whitespace().any(|c| c == column),
            "{column}: {text}"
        );
    }
    let row = |host: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(host))
            .unwrap_or_else(|| panic!("no {host}: {text}"))
            .split_whitespace()
            .collect()
    };
    let web1 = row("web-1");
    assert_eq!(web1[0], &good.uid_hex()[..12]);
    assert_eq!(web1[3], "env=prod", "labels without the host.name: {text}");
    assert_eq!(web1[4..8], ["applied", "base@1", "base@1", "yes"], "{text}");
    assert!(web1[8].starts_with("20"), "a time: {text}");
    assert_eq!(web1[9..], ["active", "-"], "{text}");
    let web2 = row("web-2");
    // The desired hash is applied but fails: the same versions, state failed.
    assert_eq!(web2[4..8], ["failed", "base@1", "base@1", "yes"], "{text}");
    let error_at = lines[0].find("LAST_ERROR").unwrap();
    let line2 = lines.iter().find(|l| l.contains("web-2")).unwrap();
    let shown = &line2[line2.char_indices().nth(error_at).unwrap().0..];
    assert!(
        shown.starts_with("unknown key logs.files") && shown.ends_with('…'),
        "cut to one short line: {shown:?}"
    );
    assert!(shown.chars().count() < ERROR.len());

    // --json: the API's fields, the whole error.
    let out = c.cli(&["agents", "list", "--json"], &env).await;
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    let failed = agents
        .iter()
        .find(|a| a["instance_uid"] == bad.uid_hex())
        .unwrap();
    assert_eq!(failed["config_status"], "failed");
    assert_eq!(failed["last_error"], ERROR);
    assert_eq!(failed["applied_config_hash"], hex::encode(&hash));
    assert_eq!(failed["desired_config_versions"]["base"], 1);

    // The gauge: refreshed once a second by the server's maintenance task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let failed = metric(&c, "vantage_opamp_agents_by_config_state{state=\"failed\"}").await;
        let applied = metric(
            &c,
            "vantage_opamp_agents_by_config_state{state=\"applied\"}",
        )
        .await;
        if (failed, applied) == (1.0, 1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed {failed}, applied {applied}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(
            &c,
            "vantage_opamp_agents_by_config_state{state=\"lagging\"}"
        )
        .await,
        0.0
    );
}
