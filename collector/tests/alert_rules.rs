//! End to end: alerting and recording rules in the real collector. Rule files are
//! checked against the real `promtool check rules`; metrics and logs go in over remote
//! write and OTLP, and `/api/v1/alerts`, `/api/v1/rules` and PromQL show the result;
//! state survives a restart; the rules API round-trips and validates; tenants stay apart.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};

use common::*;

/// How long a rule outcome may take to show: a few 1 s evaluations on a loaded machine.
const RULE_TIMEOUT: Duration = Duration::from_secs(30);

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules")
}

fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// A collector with a rules directory, evaluating at `now` (no query offset).
fn start_with_rules(data: &Path, rules: &Path) -> Collector {
    Collector::builder()
        .env("VANTAGE_ALERTING__RULES_DIR", &rules.display().to_string())
        .env("VANTAGE_ALERTING__QUERY_OFFSET", "0s")
        .env("VANTAGE_ALERTING__EVALUATION_INTERVAL", "1s")
        .start(data)
}

async fn remote_write(c: &Collector, name: &str, labels: &[(&str, &str)], v: f64) {
    let mut pairs = vec![("__name__", name)];
    pairs.extend_from_slice(labels);
    let batch = MetricBatch {
        series: vec![SeriesSamples {
            labels: Labels::from_pairs(pairs),
            samples: vec![Sample { t: now_ms(), v }],
        }],
        metadata: vec![],
    };
    let body = vantage_proto::prom::remote::encode_write_request(&batch).expect("encodable");
    let r = c
        .api_request(
            Method::POST,
            "/api/v1/write",
            &[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

fn data(r: &Reply) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "success", "{v}");
    v["data"].clone()
}

async fn alerts(c: &Collector, token: Option<&str>) -> Vec<Value> {
    let headers: Vec<(&str, String)> = token
        .map(|t| ("authorization", t.to_string()))
        .into_iter()
        .collect();
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c
        .api_request(Method::GET, "/api/v1/alerts", &h, Bytes::new())
        .await;
    data(&r)["alerts"].as_array().cloned().unwrap_or_default()
}

/// Polls until `check` returns `Some`, or fails with `what` and the log.
async fn wait_for<T, F, Fut>(c: &Collector, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + RULE_TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; collector log:\n{}", c.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn instant(c: &Collector, query: &str) -> Vec<Value> {
    let q = serde_urlencoded::to_string([("query", query)]).unwrap();
    let r = c.api_get(&format!("/api/v1/query?{q}")).await;
    data(&r)["result"].as_array().cloned().unwrap_or_default()
}

const LOAD_RULES: &str = r#"groups:
  - name: load
    interval: 1s
    rules:
      - alert: HighLoad
        expr: vantage_test_load > 10
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "load {{ $value | humanize }} on {{ $labels.instance }}"
      - record: job:vantage_test_load:sum
        expr: sum by (job) (vantage_test_load)
"#;

#[tokio::test]
async fn promtool_and_vantage_agree_on_rule_files() {
    let have_promtool = common::prometheus::on_path("promtool");
    if !have_promtool {
        eprintln!("SKIPPED: promtool is not installed (make test-deps installs it)");
    }
    for (dir, good) in [("good", true), ("bad", false)] {
        let mut n = 0;
        for entry in std::fs::read_dir(rules_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let ours = vantage_collector::alerting::rules::parse_rule_file(
                &path.display().to_string(),
                &text,
                &|_| Ok(()),
            );
            assert_eq!(
                ours.is_ok(),
                good,
                "{}: vantage says {ours:?}",
                path.display()
            );
            if let Err(e) = &ours {
                let msg = e.to_string();
                eprintln!("{msg}");
                assert!(msg.starts_with(&path.display().to_string()), "{msg}");
                assert!(
                    e.problems.iter().all(|p| p.line.is_some()),
                    "every problem has a line: {msg}"
                );
            }
            if !have_promtool {
                continue;
            }
            let out = std::process::Command::new("promtool")
                .args(["check", "rules"])
                .arg(&path)
                .output()
                .expect("run promtool");
            let text_out = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.status.success(),
                good,
                "{}: promtool says {text_out}",
                path.display()
            );
            // Where promtool names a line, it is the line Vantage names.
            // (YAML syntax errors excepted: yaml.v3 points at the start of the context.)
            if let (Some(line), Err(e), false) = (
                promtool_line(&text_out),
                &ours,
                text_out.contains("did not find expected"),
            ) {
                let lines: Vec<usize> = e.problems.iter().filter_map(|p| p.line).collect();
                assert!(
                    lines.contains(&line),
                    "{}: promtool points at line {line}, vantage at {lines:?}\n{text_out}\n{e}",
                    path.display()
                );
            }
        }
        assert!(n >= 5, "{dir} has examples");
    }
    // Log rules of the wrong shape: valid PromQL for promtool, refused by Vantage
    // because the reserved metric would mean something else (documented difference).
    for entry in std::fs::read_dir(rules_dir().join("vantage_only")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let e = vantage_collector::alerting::rules::parse_rule_file("f.yml", &text, &|_| Ok(()))
            .unwrap_err();
        assert!(e.to_string().contains("vantage_log_count"), "{e}");
    }
}

/// The first `N:M:` or `line N:` in promtool's output.
fn promtool_line(text: &str) -> Option<usize> {
    {
        for word in text.split_whitespace() {
            let w = word.trim_end_matches(':');
            if let Some((l, c)) = w.split_once(':')
                && !l.is_empty()
                && l.chars().all(|ch| ch.is_ascii_digit())
                && c.chars().all(|ch| ch.is_ascii_digit())
                && !c.is_empty()
            {
                let line: usize = l.parse().ok()?;
                if line > 0 {
                    return Some(line);
                }
            }
        }
        let i = text.find("line ")?;
        text[i + 5..]
            .split(|ch: char| !ch.is_ascii_digit())
            .next()?
            .parse()
            .ok()
            .filter(|l| *l > 0)
    }
}

#[tokio::test]
async fn threshold_crossing_goes_pending_then_firing_and_everything_is_queryable() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("load.yml"), LOAD_RULES).unwrap();
    let c = start_with_rules(data_dir.path(), rules.path());
    remote_write(
        &c,
        "vantage_test_load",
        &[("instance", "h1"), ("job", "node")],
        50.0,
    )
    .await;

    let pending = wait_for(&c, "a pending alert", || async {
        alerts(&c, None)
            .await
            .into_iter()
            .find(|a| a["state"] == "pending")
    })
    .await;
    assert_eq!(pending["labels"]["alertname"], "HighLoad");
    assert_eq!(pending["labels"]["severity"], "page");
    assert_eq!(pending["annotations"]["summary"], "load 50 on h1");
    assert_eq!(pending["value"], "5e+01");
    let firing = wait_for(&c, "the alert firing", || async {
        alerts(&c, None)
            .await
            .into_iter()
            .find(|a| a["state"] == "firing")
    })
    .await;
    assert_eq!(
        firing["activeAt"], pending["activeAt"],
        "the for timer kept its start"
    );

    // ALERTS and the recording rule's series are ordinary series.
    let series = wait_for(&c, "ALERTS firing", || async {
        let r = instant(&c, r#"ALERTS{alertname="HighLoad", alertstate="firing"}"#).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(series[0]["metric"]["instance"], "h1");
    assert_eq!(series[0]["value"][1], "1");
    let recorded = wait_for(&c, "the recorded series", || async {
        let r = instant(&c, "job:vantage_test_load:sum").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(recorded[0]["metric"]["job"], "node");
    assert_eq!(recorded[0]["value"][1], "50");
    assert!(!instant(&c, "ALERTS_FOR_STATE").await.is_empty());

    // Prometheus's rules listing.
    let d = data(&c.api_get("/api/v1/rules").await);
    let group = &d["groups"][0];
    assert_eq!(group["name"], "load");
    assert_eq!(group["interval"], json!(1.0));
    assert!(group["file"].as_str().unwrap().ends_with("load.yml"));
    let alerting = &group["rules"][0];
    assert_eq!(alerting["type"], "alerting");
    assert_eq!(alerting["state"], "firing");
    assert_eq!(alerting["duration"], json!(2.0));
    assert_eq!(alerting["health"], "ok");
    assert_eq!(alerting["alerts"][0]["state"], "firing");
    assert_eq!(group["rules"][1]["type"], "recording");
    let only_record = data(&c.api_get("/api/v1/rules?type=record").await);
    assert_eq!(
        only_record["groups"][0]["rules"].as_array().unwrap().len(),
        1
    );
    let bad = c.api_get("/api/v1/rules?type=nonsense").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Self-metrics, named as Prometheus names them with our prefix.
    let metrics = c.metrics_text().await;
    assert!(
        metrics.contains("vantage_rule_evaluations_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vantage_rule_group_last_duration_seconds{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vantage_rule_evaluation_failures_total{"),
        "{metrics}"
    );

    // A restart keeps activeAt and the firing state (no reset of the for timer).
    let (status, _) = c.terminate().await;
    assert!(status.success());
    let c = start_with_rules(data_dir.path(), rules.path());
    let after = alerts(&c, None).await;
    let restored = after
        .iter()
        .find(|a| a["labels"]["alertname"] == "HighLoad")
        .unwrap_or_else(|| panic!("restored alert missing: {after:?}\n{}", c.log()));
    assert_eq!(restored["state"], "firing");
    assert_eq!(restored["activeAt"], pending["activeAt"]);
    // And evaluation continues on the restored state.
    remote_write(
        &c,
        "vantage_test_load",
        &[("instance", "h1"), ("job", "node")],
        60.0,
    )
    .await;
    wait_for(&c, "the alert still firing after restart", || async {
        alerts(&c, None)
            .await
            .into_iter()
            .find(|a| a["state"] == "firing" && a["value"] == "6e+01")
    })
    .await;
}

#[tokio::test]
async fn a_log_rule_fires_from_log_records_with_samples() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("logs.yml"),
        r#"groups:
  - name: logs
    interval: 1s
    rules:
      - alert: CheckoutErrors
        expr: vantage_log_count{query="severity_text:ERROR AND service.name:checkout", window="5m"} > 2
        annotations:
          summary: "{{ $value }} errors"
"#,
    )
    .unwrap();
    let c = start_with_rules(data_dir.path(), rules.path());
    let mut records = Vec::new();
    for i in 0..3 {
        let mut r = log_record(&format!("payment failed #{i}"), vec![]);
        r.severity_text = "ERROR".to_string();
        r.severity_number = 17;
        records.push(r);
    }
    records.push(log_record("all fine", vec![]));
    c.export_ok(logs_request("checkout", records)).await;
    let a = wait_for(&c, "the log alert", || async {
        alerts(&c, None)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "CheckoutErrors" && a["state"] == "firing")
    })
    .await;
    assert_eq!(a["annotations"]["summary"], "3 errors");
    let samples = a["annotations"]["log_samples"].as_str().unwrap();
    assert_eq!(samples.lines().count(), 3, "{samples}");
    assert!(samples.contains("payment failed"), "{samples}");
    assert!(!samples.contains("all fine"), "{samples}");
}

#[tokio::test]
async fn bad_rule_files_are_refused_with_file_and_line_and_good_rules_keep_running() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let good = rules.path().join("load.yml");
    std::fs::write(&good, LOAD_RULES).unwrap();
    std::fs::write(
        rules.path().join("broken.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(up\n",
    )
    .unwrap();
    let c = start_with_rules(data_dir.path(), rules.path());
    let refused = c.log_events("rule file refused; its previous rules keep running");
    assert_eq!(refused.len(), 1, "{}", c.log());
    let error = refused[0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("broken.yml:5:15: group \"g\", rule 1, \"A\": could not parse expression"),
        "{error}"
    );
    let d = data(&c.api_get("/api/v1/rules").await);
    assert_eq!(d["groups"].as_array().unwrap().len(), 1, "{d}");

    // The good file breaks: its rules keep running. Then it is fixed with a change:
    // the change is picked up.
    std::fs::write(
        &good,
        "groups:\n  - name: load\n    rules:\n      - record: 1bad\n        expr: up\n",
    )
    .unwrap();
    wait_for(&c, "the refusal of the edited file", || async {
        (c.log_events("rule file refused; its previous rules keep running")
            .len()
            >= 2)
            .then_some(())
    })
    .await;
    let d = data(&c.api_get("/api/v1/rules").await);
    assert_eq!(
        d["groups"][0]["rules"].as_array().unwrap().len(),
        2,
        "old rules still there: {d}"
    );
    std::fs::write(
        &good,
        "groups:\n  - name: load\n    rules:\n      - record: only_one\n        expr: vector(1)\n",
    )
    .unwrap();
    wait_for(&c, "the fixed file", || async {
        let d = data(&c.api_get("/api/v1/rules").await);
        (d["groups"][0]["rules"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rules_api_round_trip_validation_auth_and_tenant_isolation() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::create_dir(rules.path().join("blue")).unwrap();
    std::fs::write(rules.path().join("blue").join("blue.yml"), "groups:\n  - name: blue_file\n    rules:\n      - record: blue_one\n        expr: vector(1)\n").unwrap();
    let c = start_with_rules(data_dir.path(), rules.path());

    let body = "name: api_group\ninterval: 1s\nrules:\n  - alert: Always\n    expr: vector(1)\n    labels:\n      severity: info\n";
    let post = |ns: &str, body: &str, auth: Option<String>| {
        let path = format!("/api/v1/rules/{ns}");
        let body = body.to_string();
        let c = &c;
        async move {
            let mut headers = vec![("content-type", "application/yaml".to_string())];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.api_request(Method::POST, &path, &h, body).await
        }
    };
    let r = post("team-a", body, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let r = c.api_get("/api/v1/rules/team-a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let yaml = r.text();
    assert!(
        yaml.contains("team-a:")
            && yaml.contains("name: api_group")
            && yaml.contains("alert: Always"),
        "{yaml}"
    );
    let r = c.api_get("/api/v1/rules/team-a/api_group").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().starts_with("name: api_group"), "{}", r.text());
    // It runs: the alert fires (for 0s).
    wait_for(&c, "the api rule's alert", || async {
        alerts(&c, None)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "Always")
    })
    .await;
    let d = data(&c.api_get("/api/v1/rules").await);
    assert!(
        d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["file"] == "team-a" && g["name"] == "api_group"),
        "{d}"
    );

    // Validated exactly like files, with the line in the body.
    let r = post(
        "team-a",
        "name: x\nrules:\n  - alert: A\n    expr: sum(up\n",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("team-a:4:") && msg.contains("could not parse expression"),
        "{msg}"
    );
    let r = post(
        "team-a",
        "name: x\nrules:\n  - alert: A\n    expr: up\n    bogus: 1\n",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"].as_str().unwrap().contains("team-a:5:"),
        "{}",
        r.text()
    );
    let r = post("team-a", "rules: []\n", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nesting that once overflowed a stack and aborted the collector: a template of
    // 5,000 `if`s, an expression 3,000 calls deep. Each is refused, and the rule above
    // goes on (checked below with the other tenant's view).
    let ifs = format!(
        "{}x{}",
        "{{ if true }}".repeat(5_000),
        "{{ end }}".repeat(5_000)
    );
    let deep_template = format!(
        "name: x\nrules:\n  - alert: A\n    expr: vector(1)\n    annotations:\n      summary: '{ifs}'\n"
    );
    let r = post("team-a", &deep_template, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("template nests more than 100 levels deep"),
        "{msg}"
    );
    let calls = format!("{}vector(1){}", "abs(".repeat(3_000), ")".repeat(3_000));
    let deep_expr = format!("name: x\nrules:\n  - alert: A\n    expr: {calls}\n");
    let r = post("team-a", &deep_expr, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("over the maximum of 128"), "{msg}");

    // Another tenant: its own file groups and API groups; nothing crosses.
    let created = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &[("content-type", "application/json")],
            json!({"name": "blue"}).to_string(),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text());
    let key = |scopes: &[&str]| {
        let body = json!({"tenant": "blue", "name": "k", "scopes": scopes}).to_string();
        let c = &c;
        async move {
            let r = c
                .api_request(
                    Method::POST,
                    "/api/v1/keys",
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
            assert!(r.status.is_success(), "{}", r.text());
            bearer(r.json()["key"].as_str().unwrap())
        }
    };
    let blue_query = key(&["query"]).await;
    let blue_admin = key(&["admin"]).await;
    let r = post("team-a", body, Some(blue_query.clone())).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a query key cannot change rules"
    );
    let r = post(
        "blue-ns",
        "name: blue_api\nrules:\n  - record: blue_two\n    expr: vector(2)\n",
        Some(blue_admin.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let r = c
        .api_request(
            Method::GET,
            "/api/v1/rules",
            &[("authorization", &blue_query)],
            Bytes::new(),
        )
        .await;
    let blue_groups: Vec<String> = data(&r)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(blue_groups.len(), 2, "{blue_groups:?}");
    assert!(
        blue_groups.contains(&"blue_file".to_string())
            && blue_groups.contains(&"blue_api".to_string())
    );
    let d = data(&c.api_get("/api/v1/rules").await);
    assert!(
        d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| !g["name"].as_str().unwrap().starts_with("blue")),
        "{d}"
    );
    let r = c
        .api_request(
            Method::GET,
            "/api/v1/rules/team-a",
            &[("authorization", &blue_query)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(alerts(&c, Some(&blue_query)).await.is_empty());

    // Delete: gone from the API and from evaluation.
    let r = c
        .api_request(
            Method::DELETE,
            "/api/v1/rules/team-a/api_group",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(
        c.api_get("/api/v1/rules/team-a").await.status,
        StatusCode::NOT_FOUND
    );
    let r = c
        .api_request(
            Method::DELETE,
            "/api/v1/rules/team-a/api_group",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let d = data(&c.api_get("/api/v1/rules").await);
    assert!(d["groups"].as_array().unwrap().is_empty(), "{d}");
}
