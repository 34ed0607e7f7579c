//! Rule evaluation benchmark: 10,000 alerting rules over 100,000 series in the real
//! metrics store, evaluated with the collector's group evaluation (PromQL, alert states,
//! templates, `ALERTS` written back into the store). Reports wall time and CPU time per
//! cycle (all rules once), sequential on one thread, as the figure for one core.
//!
//! `cargo run --release -p vantage-benches --bin vantage-rules-bench -- --rules 10000 --series 100000`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use vantage_collector::alerting::rules::group::{self, CompiledGroup, EvalEnv, GroupRuntime};
use vantage_collector::alerting::rules::logrule::{LogCondition, LogCount};
use vantage_collector::alerting::rules::parse_rule_file;
use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples};
use vantage_storage::metrics::promql::{Engine, EngineOptions, Value};
use vantage_storage::metrics::tsdb::{Tsdb, TsdbOptions};

#[derive(Parser)]
struct Args {
    /// Alerting rules.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Series (each rule selects series / rules of them).
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Rules per group.
    #[arg(long, default_value_t = 100)]
    per_group: usize,
    /// Cycles to measure.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile_dir()?;
    let db = Tsdb::open(TsdbOptions::new(dir.join("metrics")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let lsn = AtomicU64::new(0);
    let shards = args.rules.max(1);
    // Load: every series gets samples 30 s apart over the last 5 minutes.
    let load_started = Instant::now();
    for chunk in (0..args.series).collect::<Vec<_>>().chunks(10_000) {
        let series = chunk
            .iter()
            .map(|&i| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", "bench_load".to_string()),
                    ("shard", format!("s{}", i % shards)),
                    ("instance", format!("host-{i}")),
                ]),
                samples: (0..10)
                    .map(|k| Sample {
                        t: now - 300_000 + k * 30_000,
                        v: ((i * 7919) % 1000) as f64 / 1000.0,
                    })
                    .collect(),
            })
            .collect();
        let batch = MetricBatch {
            series,
            metadata: vec![],
        };
        let a = db.admit("bench", batch, now);
        db.apply(
            lsn.fetch_add(1, Ordering::Relaxed) + 1,
            "bench",
            &a.accepted,
        );
    }
    eprintln!(
        "loaded {} series in {:.1}s",
        args.series,
        load_started.elapsed().as_secs_f64()
    );
    // Rules: one per shard, about 2% of each shard's series above the threshold.
    let mut yaml = String::from("groups:\n");
    for (i, shard) in (0..args.rules).enumerate() {
        if i % args.per_group == 0 {
            yaml.push_str(&format!(
                "  - name: g{}\n    interval: 1m\n    rules:\n",
                i / args.per_group
            ));
        }
        yaml.push_str(&format!(
            "      - alert: High{shard}\n        expr: bench_load{{shard=\"s{shard}\"}} > 0.98\n        for: 2m\n        labels:\n          severity: page\n        annotations:\n          summary: \"{{{{ $labels.instance }}}} at {{{{ $value | humanizePercentage }}}}\"\n"
        ));
    }
    let parse_started = Instant::now();
    let groups =
        parse_rule_file("bench.yml", &yaml, &|_| Ok(())).map_err(|e| anyhow::anyhow!("{e}"))?;
    let parse_s = parse_started.elapsed().as_secs_f64();
    let compiled: Vec<CompiledGroup> = groups
        .into_iter()
        .map(|g| CompiledGroup::new(g, 60_000))
        .collect();
    let mut runtimes: Vec<GroupRuntime> = compiled
        .iter()
        .map(|g| GroupRuntime::new(g, None, &BTreeMap::new()))
        .collect();
    let engine = Engine::new(EngineOptions::default());
    let pid = std::process::id();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut alerts_sent = 0usize;
    let mut written = 0usize;
    for cycle in 0..args.cycles {
        let ts = now + cycle as i64 * 60_000;
        let cpu0 = vantage_benches::procfs::cpu_seconds(pid)?;
        let started = Instant::now();
        for (g, rt) in compiled.iter().zip(runtimes.iter_mut()) {
            let querier = db.querier("bench");
            let query = |expr: &str, t: i64| -> Result<Vec<(Labels, f64)>, String> {
                match engine
                    .instant(&querier, expr, t, None)
                    .map_err(|e| e.to_string())?
                {
                    Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
                    Value::Scalar { v, .. } => Ok(vec![(Labels::new(), v)]),
                    _ => Err("not a vector".to_string()),
                }
            };
            let log_count =
                |_: &LogCondition, _: i64| -> Result<LogCount, String> { Ok(LogCount::default()) };
            let mut write = |batch: MetricBatch| -> Result<(), String> {
                written += batch.series.len();
                let a = db.admit("bench", batch, ts);
                db.apply(
                    lsn.fetch_add(1, Ordering::Relaxed) + 1,
                    "bench",
                    &a.accepted,
                );
                Ok(())
            };
            let out = group::evaluate_group(
                g,
                rt,
                EvalEnv {
                    ts_ms: ts,
                    query_ts_ms: ts,
                    resolve_delay_ms: 0,
                    resend_delay_ms: 60_000,
                    external_url: "http://bench",
                    query: &query,
                    log_count: &log_count,
                    write: &mut write,
                },
            );
            alerts_sent += out.alerts.len();
            if out.failures > 0 {
                anyhow::bail!("{} rules failed", out.failures);
            }
        }
        walls.push(started.elapsed().as_secs_f64());
        cpus.push(vantage_benches::procfs::cpu_seconds(pid)? - cpu0);
    }
    let firing: usize = runtimes
        .iter()
        .flat_map(|r| &r.rules)
        .map(|r| r.alerts.active.len())
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "rules": args.rules,
            "series": args.series,
            "groups": compiled.len(),
            "parse_validate_s": parse_s,
            "cycle_wall_s": walls,
            "cycle_cpu_s": cpus,
            "active_alerts": firing,
            "alerts_sent": alerts_sent,
            "series_written": written,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("vantage-rules-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
