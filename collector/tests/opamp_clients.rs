//! Third-party OpAMP clients against the real collector: the OpenTelemetry Python client
//! (`opentelemetry-opamp-client`, `collector/tests/python/opamp_client.py`) and Elastic's
//! Node client (`@elastic/opamp-client-node`, `collector/tests/node/opamp_client.js`)
//! register, receive the documents their labels select, report them applied, and show up
//! in `GET /api/v1/agents` as applied.
//!
//! Needs `python3` with `collector/tests/python/requirements.txt` and `node` with
//! `collector/tests/node/node_modules` (`make test-deps` installs both); without them the
//! tests fail with the command that installs them (they never skip).

mod common;
mod opamp_support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use common::*;
use opamp_support::*;

const BASE: &str = "logs:\n  files: [/var/log/app.log]\n";
const PROD: &str = "exporter:\n  endpoint: collector:4317\n";

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Runs a client script with the collector's OpAMP URL and `token`; returns its JSON line.
async fn run_client(mut command: tokio::process::Command, c: &Collector, token: &str) -> Value {
    command
        .env(
            "VANTAGE_OPAMP_URL",
            format!("http://{}/v1/opamp", c.addrs.api),
        )
        .env("VANTAGE_TOKEN", token)
        .env("OPAMP_ENV", "prod")
        .env("OPAMP_TIMEOUT_S", "40")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("the client finishes within 90 s")
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client failed ({}): {stdout}\n{stderr}\ncollector log:\n{}",
        output.status,
        c.log()
    );
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
}

async fn check_applied(c: &Collector, result: &Value, hostname: &str) {
    assert_eq!(
        result["names"],
        serde_json::json!(["base", "prod"]),
        "{result}"
    );
    assert_eq!(result["bodies"]["base"], BASE);
    assert_eq!(result["bodies"]["prod"], PROD);
    let hash = expected_hash(&[("base", BASE), ("prod", PROD)]);
    assert_eq!(result["config_hash"], hex::encode(&hash));
    let uid = result["instance_uid"].as_str().expect("uid");
    let entry = fleet_entry(c, c.token(), uid)
        .await
        .unwrap_or_else(|| panic!("{uid} listed in /api/v1/agents"));
    assert_eq!(entry["applied_config_hash"], hex::encode(&hash), "{entry}");
    assert_eq!(entry["config_status"], "applied", "{entry}");
    assert_eq!(entry["hostname"], hostname);
    assert_eq!(entry["enrolled"], false);
}

async fn setup(c: &Collector) -> String {
    create_config(c, c.token(), "base", "", BASE).await;
    create_config(c, c.token(), "prod", "env=prod", PROD).await;
    create_config(c, c.token(), "dev", "env=dev", "x: 1\n").await;
    new_key(c, &["ingest"], None).await
}

#[tokio::test]
async fn python_opamp_client_registers_applies_and_is_listed() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import opentelemetry._opamp.agent"])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "opentelemetry-opamp-client is not installed; run `make test-deps` \
         (or `python3 -m pip install -r collector/tests/python/requirements.txt`)"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let key = setup(&c).await;
    let mut command = tokio::process::Command::new("python3");
    command.arg(tests_dir().join("python/opamp_client.py"));
    let result = run_client(command, &c, &key).await;
    check_applied(&c, &result, "python-host").await;
}

#[tokio::test]
async fn node_opamp_client_registers_applies_and_is_listed() {
    let node_dir = tests_dir().join("node");
    assert!(
        node_dir
            .join("node_modules/@elastic/opamp-client-node")
            .exists(),
        "@elastic/opamp-client-node is not installed; run `make test-deps` \
         (or `npm install` in collector/tests/node)"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let key = setup(&c).await;
    let mut command = tokio::process::Command::new("node");
    command.arg("opamp_client.js").current_dir(&node_dir);
    let result = run_client(command, &c, &key).await;
    check_applied(&c, &result, "node-host").await;
}
