//! One evaluation of one rule group: rules in order, recording output written before
//! the next rule runs (so later rules see it, as in Prometheus), alert states moved,
//! `ALERTS` / `ALERTS_FOR_STATE` written, stale markers for series that disappeared,
//! and the alerts due for the notifier collected.
//!
//! The data comes in through closures (a PromQL instant query, a log count, a writer),
//! so the same code runs on the real stores in the collector and on an in-memory
//! querier in the tests.

use std::collections::{BTreeMap, HashSet};

use vantage_proto::prom::{Labels, MetricBatch, Sample, SeriesSamples, stale_nan};

use super::file::{Rule, RuleGroup};
use super::logrule::{LogCondition, LogCount};
use super::state::{ActiveAlert, AlertState, AlertingState, Candidate};
use super::template::{AlertData, QuerySample, Template};
use crate::alerting::{Alert, LOG_SAMPLES_ANNOTATION};

/// The metric name of the alert series.
pub const ALERTS_METRIC: &str = "ALERTS";
/// The metric name of the `for`-state series.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

/// A rule with its templates parsed once.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// The rule as validated.
    pub rule: Rule,
    /// A key that stays the same while the rule does (its name and expression), for
    /// persisted state.
    pub key: String,
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
}

/// A group ready to run.
#[derive(Clone, Debug)]
pub struct CompiledGroup {
    /// The group as validated.
    pub group: RuleGroup,
    /// Its evaluation interval, ms.
    pub interval_ms: i64,
    /// Its rules.
    pub rules: Vec<CompiledRule>,
}

impl CompiledGroup {
    /// Compiles a validated group; `default_interval_ms` applies when it sets none.
    pub fn new(group: RuleGroup, default_interval_ms: i64) -> CompiledGroup {
        let interval_ms = group.interval_ms().unwrap_or(default_interval_ms).max(1);
        let rules = group
            .rules
            .iter()
            .map(|r| {
                let tname = format!("__alert_{}", r.name());
                let compile = |m: &BTreeMap<String, String>| {
                    m.iter()
                        .filter_map(|(k, v)| {
                            // Validation parsed them already; a failure here cannot
                            // happen, and would only drop the one template.
                            Template::parse(&tname, v).ok().map(|t| (k.clone(), t))
                        })
                        .collect::<Vec<_>>()
                };
                let is_alert = r.alert.is_some();
                CompiledRule {
                    key: format!("{}\n{}", r.name(), r.expr),
                    labels: if is_alert {
                        compile(&r.labels)
                    } else {
                        Vec::new()
                    },
                    annotations: compile(&r.annotations),
                    rule: r.clone(),
                }
            })
            .collect();
        CompiledGroup {
            group,
            interval_ms,
            rules,
        }
    }
}

/// Whether the last evaluation of a rule worked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    #[default]
    Unknown,
    /// Evaluated without error.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// The name Prometheus's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// What is known about one rule between evaluations.
#[derive(Clone, Debug, Default)]
pub struct RuleRuntime {
    /// Last outcome.
    pub health: Health,
    /// The last error, empty when healthy.
    pub last_error: String,
    /// When it last ran, ms (0 = never).
    pub last_evaluation_ms: i64,
    /// How long it took, seconds.
    pub evaluation_seconds: f64,
    /// Its alerts (alerting rules).
    pub alerts: AlertingState,
    /// Series it wrote last time, for stale markers when they disappear.
    pub prev_series: HashSet<Labels>,
}

/// What is known about one group between evaluations.
#[derive(Clone, Debug, Default)]
pub struct GroupRuntime {
    /// Per rule, in the group's order.
    pub rules: Vec<RuleRuntime>,
    /// When the group last ran, ms (0 = never).
    pub last_evaluation_ms: i64,
    /// How long that took, seconds.
    pub evaluation_seconds: f64,
}

impl GroupRuntime {
    /// A runtime for `group`, taking over the alerts of `previous` for rules with the
    /// same key (a reload does not reset `for` timers) and then of `restored`.
    pub fn new(
        group: &CompiledGroup,
        previous: Option<(&CompiledGroup, &GroupRuntime)>,
        restored: &BTreeMap<String, Vec<ActiveAlert>>,
    ) -> GroupRuntime {
        let rules = group
            .rules
            .iter()
            .map(|r| {
                if let Some((pg, prt)) = previous
                    && let Some(i) = pg.rules.iter().position(|p| p.key == r.key)
                    && let Some(old) = prt.rules.get(i)
                {
                    return old.clone();
                }
                let mut rt = RuleRuntime::default();
                if let Some(alerts) = restored.get(&r.key) {
                    rt.alerts = AlertingState::restore(alerts.clone());
                }
                rt
            })
            .collect();
        GroupRuntime {
            rules,
            last_evaluation_ms: previous.map_or(0, |(_, p)| p.last_evaluation_ms),
            evaluation_seconds: previous.map_or(0.0, |(_, p)| p.evaluation_seconds),
        }
    }
}

/// Runs a PromQL instant query at a time and returns the samples.
pub type QueryFn<'a> = &'a dyn Fn(&str, i64) -> Result<Vec<(Labels, f64)>, String>;
/// Counts log records for a log rule at a time.
pub type LogCountFn<'a> = &'a dyn Fn(&LogCondition, i64) -> Result<LogCount, String>;
/// Writes generated series.
pub type WriteFn<'a> = &'a mut dyn FnMut(MetricBatch) -> Result<(), String>;

/// The inputs of one evaluation.
pub struct EvalEnv<'a> {
    /// Wall-clock time of the evaluation, ms: alert timers use it.
    pub ts_ms: i64,
    /// The time queries run at and series are written at: `ts_ms` minus the query
    /// offset (late data).
    pub query_ts_ms: i64,
    /// How long a firing alert whose series is gone keeps firing at least: the query
    /// offset, so data that is merely late does not resolve it.
    pub resolve_delay_ms: i64,
    /// Resend delay for unchanged alerts.
    pub resend_delay_ms: i64,
    /// Base of generator URLs (the external URL).
    pub external_url: &'a str,
    /// PromQL.
    pub query: QueryFn<'a>,
    /// Log counts.
    pub log_count: LogCountFn<'a>,
    /// The writer of generated series.
    pub write: WriteFn<'a>,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub struct EvalOutcome {
    /// Alerts to send, firing and resolved.
    pub alerts: Vec<Alert>,
    /// Indexes of rules whose alert state changed (to persist).
    pub changed: Vec<usize>,
    /// Rules evaluated.
    pub evaluations: u64,
    /// Rules that failed.
    pub failures: u64,
}

/// Evaluates every rule of the group once, in order.
pub fn evaluate_group(
    group: &CompiledGroup,
    rt: &mut GroupRuntime,
    env: EvalEnv<'_>,
) -> EvalOutcome {
    let started = std::time::Instant::now();
    let mut out = EvalOutcome::default();
    let mut pending = MetricBatch::default();
    let mut pending_recorded = false;
    if rt.rules.len() != group.rules.len() {
        rt.rules
            .resize_with(group.rules.len(), RuleRuntime::default);
    }
    for (i, (rule, st)) in group.rules.iter().zip(rt.rules.iter_mut()).enumerate() {
        if pending_recorded {
            flush(env.write, &mut pending);
            pending_recorded = false;
        }
        let rule_started = std::time::Instant::now();
        out.evaluations += 1;
        let before = st.alerts.clone();
        let result = if rule.rule.record.is_some() {
            record(group, rule, &env).inspect(|_| pending_recorded = true)
        } else {
            alert(group, rule, st, &env)
        };
        st.last_evaluation_ms = env.ts_ms;
        match result {
            Ok(series) => {
                st.health = Health::Ok;
                st.last_error.clear();
                let now: HashSet<Labels> = series.iter().map(|s| s.labels.clone()).collect();
                for gone in st.prev_series.difference(&now) {
                    pending.series.push(SeriesSamples {
                        labels: gone.clone(),
                        samples: vec![Sample {
                            t: env.query_ts_ms,
                            v: stale_nan(),
                        }],
                    });
                }
                st.prev_series = now;
                pending.series.extend(series);
            }
            Err(e) => {
                st.health = Health::Err;
                st.last_error = e;
                out.failures += 1;
            }
        }
        if rule.rule.alert.is_some() {
            let url = generator_url(env.external_url, &rule.rule.expr);
            out.alerts.extend(st.alerts.due(
                env.ts_ms,
                env.resend_delay_ms,
                group.interval_ms,
                &url,
            ));
            if st.alerts.timers() != before.timers() {
                out.changed.push(i);
            }
        }
        st.evaluation_seconds = rule_started.elapsed().as_secs_f64();
    }
    flush(env.write, &mut pending);
    rt.last_evaluation_ms = env.ts_ms;
    rt.evaluation_seconds = started.elapsed().as_secs_f64();
    out
}

fn flush(write: WriteFn<'_>, pending: &mut MetricBatch) {
    if pending.series.is_empty() {
        return;
    }
    if let Err(e) = write(std::mem::take(pending)) {
        tracing::warn!(error = %e, "writing rule output failed");
    }
}

/// `<external url>/graph?g0.expr=...&g0.tab=1`, as Prometheus links alerts.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let q = serde_urlencoded::to_string([("g0.expr", expr)]).unwrap_or_default();
    format!("{external_url}/graph?{q}&g0.tab=1")
}

fn record(
    group: &CompiledGroup,
    rule: &CompiledRule,
    env: &EvalEnv<'_>,
) -> Result<Vec<SeriesSamples>, String> {
    let name = rule.rule.record.as_deref().unwrap_or_default();
    let samples = (env.query)(&rule.rule.expr, env.query_ts_ms)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(samples.len());
    for (mut labels, v) in samples {
        labels.set("__name__", name);
        for (k, val) in &rule.rule.labels {
            labels.set(k, val);
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels"
                    .to_string(),
            );
        }
        out.push(SeriesSamples {
            labels,
            samples: vec![Sample {
                t: env.query_ts_ms,
                v,
            }],
        });
    }
    if group.group.limit > 0 && out.len() as i64 > group.group.limit {
        return Err(format!(
            "exceeded limit of {} with {} series",
            group.group.limit,
            out.len()
        ));
    }
    Ok(out)
}

fn alert(
    group: &CompiledGroup,
    rule: &CompiledRule,
    st: &mut RuleRuntime,
    env: &EvalEnv<'_>,
) -> Result<Vec<SeriesSamples>, String> {
    let name = rule.rule.alert.as_deref().unwrap_or_default();
    let (samples, log_samples) = match &rule.rule.log {
        Some(cond) => {
            let counted = (env.log_count)(cond, env.query_ts_ms)?;
            let count = counted.count as f64;
            if cond.holds(count) {
                let labels = Labels::from_pairs([
                    ("query", cond.query.as_str()),
                    ("window", cond.window.as_str()),
                ]);
                (vec![(labels, count)], Some(counted.samples))
            } else {
                (Vec::new(), None)
            }
        }
        None => ((env.query)(&rule.rule.expr, env.query_ts_ms)?, None),
    };
    let template_query = |q: &str| -> Result<Vec<QuerySample>, String> {
        (env.query)(q, env.query_ts_ms).map(|v| {
            v.into_iter()
                .map(|(l, value)| QuerySample {
                    labels: l
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    value,
                })
                .collect()
        })
    };
    let mut candidates = Vec::with_capacity(samples.len());
    for (labels, value) in samples {
        let data = AlertData {
            labels: labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
            external_labels: BTreeMap::new(),
            external_url: env.external_url.to_string(),
            value,
        };
        let mut identity: BTreeMap<String, String> = data
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, t) in &rule.labels {
            let v = t.expand(&data, Some(&template_query));
            if v.is_empty() {
                identity.remove(k);
            } else {
                identity.insert(k.clone(), v);
            }
        }
        identity.insert("alertname".to_string(), name.to_string());
        let mut annotations: BTreeMap<String, String> = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(&data, Some(&template_query))))
            .collect();
        if let Some(lines) = &log_samples {
            annotations.insert(LOG_SAMPLES_ANNOTATION.to_string(), lines.join("\n"));
        }
        candidates.push(Candidate {
            labels: identity,
            annotations,
            value,
        });
    }
    let keep_firing_for_ms = rule.rule.keep_firing_for_ms().max(env.resolve_delay_ms);
    st.alerts.apply(
        candidates,
        env.ts_ms,
        rule.rule.for_ms(),
        keep_firing_for_ms,
        group.group.limit,
    )?;
    let mut series = Vec::new();
    for a in st.alerts.active.values() {
        if a.state == AlertState::Inactive {
            continue;
        }
        let mut l = Labels::from_pairs(a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        l.set("__name__", ALERTS_METRIC);
        l.set("alertstate", a.state.as_str());
        series.push(SeriesSamples {
            labels: l,
            samples: vec![Sample {
                t: env.query_ts_ms,
                v: 1.0,
            }],
        });
        let mut f = Labels::from_pairs(a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        f.set("__name__", ALERTS_FOR_STATE_METRIC);
        series.push(SeriesSamples {
            labels: f,
            samples: vec![Sample {
                t: env.query_ts_ms,
                v: (a.active_at_ms / 1000) as f64,
            }],
        });
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::rules::file::parse_rule_file;
    use vantage_storage::metrics::promql::{Engine, EngineOptions, MemQuerier, Value};

    fn compile(text: &str) -> CompiledGroup {
        let groups = parse_rule_file("t.yml", text, &|_| Ok(())).unwrap();
        CompiledGroup::new(groups.into_iter().next().unwrap(), 1000)
    }

    struct World {
        q: MemQuerier,
        written: Vec<MetricBatch>,
    }

    impl World {
        fn eval(&mut self, g: &CompiledGroup, rt: &mut GroupRuntime, ts: i64) -> EvalOutcome {
            let engine = Engine::new(EngineOptions::default());
            let q = self.q.clone();
            let query = move |expr: &str, t: i64| -> Result<Vec<(Labels, f64)>, String> {
                match engine
                    .instant(&q, expr, t, None)
                    .map_err(|e| e.to_string())?
                {
                    Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
                    Value::Scalar { v, .. } => Ok(vec![(Labels::new(), v)]),
                    _ => Err("rule result is not a vector or scalar".to_string()),
                }
            };
            let log_count = |_: &LogCondition, _: i64| -> Result<LogCount, String> {
                Ok(LogCount {
                    count: 7,
                    samples: vec!["boom".to_string()],
                })
            };
            let written = &mut self.written;
            let mut write = |b: MetricBatch| -> Result<(), String> {
                written.push(b);
                Ok(())
            };
            evaluate_group(
                g,
                rt,
                EvalEnv {
                    ts_ms: ts,
                    query_ts_ms: ts,
                    resolve_delay_ms: 0,
                    resend_delay_ms: 60_000,
                    external_url: "http://v",
                    query: &query,
                    log_count: &log_count,
                    write: &mut write,
                },
            )
        }

        fn series_named(&self, name: &str) -> Vec<&SeriesSamples> {
            self.written
                .iter()
                .flat_map(|b| &b.series)
                .filter(|s| s.labels.metric_name() == Some(name))
                .collect()
        }
    }

    fn gauge(q: &mut MemQuerier, instance: &str, points: &[(i64, f64)]) {
        q.add(
            Labels::from_pairs([("__name__", "load"), ("instance", instance)]),
            points.iter().map(|&(t, v)| Sample { t, v }),
        );
    }

    #[test]
    fn alerting_rule_fires_renders_and_writes_alerts_series() {
        let g = compile(
            "groups:\n- name: g\n  rules:\n  - alert: HighLoad\n    expr: load > 1\n    for: 2s\n    labels: {severity: page, where: '{{ $labels.instance }}'}\n    annotations: {summary: 'load {{ $value | humanize }} on {{ $labels.instance }}'}\n",
        );
        let mut w = World {
            q: MemQuerier::new(),
            written: Vec::new(),
        };
        gauge(
            &mut w.q,
            "a",
            &[(0, 5.0), (1000, 5.0), (2000, 5.0), (3000, 5.0)],
        );
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        let o = w.eval(&g, &mut rt, 0);
        assert!(o.alerts.is_empty());
        assert_eq!(o.changed, vec![0]);
        assert_eq!(rt.rules[0].alerts.rule_state(), AlertState::Pending);
        let alerts = w.series_named("ALERTS");
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].labels.get("alertstate"), Some("pending"));
        assert_eq!(alerts[0].labels.get("where"), Some("a"));
        w.eval(&g, &mut rt, 1000);
        let o = w.eval(&g, &mut rt, 2000);
        assert_eq!(o.alerts.len(), 1);
        let a = &o.alerts[0];
        assert_eq!(a.labels["alertname"], "HighLoad");
        assert_eq!(a.labels["severity"], "page");
        assert_eq!(a.annotations["summary"], "load 5 on a");
        assert_eq!(a.starts_at_ms, 2000);
        assert!(a.generator_url.starts_with("http://v/graph?g0.expr=load"));
        let for_state = w.series_named("ALERTS_FOR_STATE");
        assert_eq!(for_state.last().unwrap().samples[0].v, 0.0);
        // The series goes stale: the alert resolves and ALERTS gets stale markers.
        w.q = MemQuerier::new();
        let o = w.eval(&g, &mut rt, 4000);
        assert_eq!(o.alerts.len(), 1);
        assert_eq!(o.alerts[0].ends_at_ms, 4000);
        let last = w.written.last().unwrap();
        assert!(
            last.series
                .iter()
                .all(|s| vantage_proto::prom::is_stale(s.samples[0].v))
        );
    }

    #[test]
    fn recording_rules_write_series_later_rules_can_read_and_mark_stale() {
        let g = compile(
            "groups:\n- name: g\n  rules:\n  - record: job:load:sum\n    expr: sum(load)\n    labels: {team: a}\n  - record: job:load:double\n    expr: job:load:sum * 2\n",
        );
        let mut w = World {
            q: MemQuerier::new(),
            written: Vec::new(),
        };
        gauge(&mut w.q, "a", &[(0, 1.0)]);
        gauge(&mut w.q, "b", &[(0, 2.0)]);
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        w.eval(&g, &mut rt, 0);
        let sum = w.series_named("job:load:sum");
        assert_eq!(sum.len(), 1);
        assert_eq!(sum[0].samples[0].v, 3.0);
        assert_eq!(sum[0].labels.get("team"), Some("a"));
        // The writes went out before the second rule ran (this querier does not see
        // them, so the second rule finds nothing: the write order is what is checked).
        assert_eq!(w.written.len(), 1);
        assert_eq!(rt.rules[1].health, Health::Ok);
        // Input gone: the recorded series gets a stale marker.
        w.q = MemQuerier::new();
        w.eval(&g, &mut rt, 600_000);
        let stale = w.series_named("job:load:sum");
        assert!(vantage_proto::prom::is_stale(
            stale.last().unwrap().samples[0].v
        ));
    }

    #[test]
    fn failures_are_counted_and_recorded_as_health() {
        let g =
            compile("groups:\n- name: g\n  limit: 1\n  rules:\n  - record: r\n    expr: load\n");
        let mut w = World {
            q: MemQuerier::new(),
            written: Vec::new(),
        };
        gauge(&mut w.q, "a", &[(0, 1.0)]);
        gauge(&mut w.q, "b", &[(0, 1.0)]);
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        let o = w.eval(&g, &mut rt, 0);
        assert_eq!(o.failures, 1);
        assert_eq!(rt.rules[0].health, Health::Err);
        assert_eq!(rt.rules[0].last_error, "exceeded limit of 1 with 2 series");
    }

    #[test]
    fn log_rules_attach_samples() {
        let g = compile(
            "groups:\n- name: g\n  rules:\n  - alert: Errors\n    expr: vantage_log_count{query=\"severity_text:ERROR\", window=\"5m\"} > 5\n    annotations: {summary: '{{ $value }} errors'}\n",
        );
        let mut w = World {
            q: MemQuerier::new(),
            written: Vec::new(),
        };
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        let o = w.eval(&g, &mut rt, 0);
        assert_eq!(o.alerts.len(), 1);
        assert_eq!(o.alerts[0].annotations["summary"], "7 errors");
        assert_eq!(o.alerts[0].annotations[LOG_SAMPLES_ANNOTATION], "boom");
        assert_eq!(o.alerts[0].labels["query"], "severity_text:ERROR");
    }

    #[test]
    fn a_gap_shorter_than_the_query_offset_does_not_resolve() {
        let g = compile("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: load > 1\n");
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        let mut written = Vec::new();
        let engine = Engine::new(EngineOptions::default());
        let mut run = |q: &MemQuerier, ts: i64, rt: &mut GroupRuntime| {
            let query = |expr: &str, t: i64| -> Result<Vec<(Labels, f64)>, String> {
                match engine
                    .instant(q, expr, t, None)
                    .map_err(|e| e.to_string())?
                {
                    Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
                    _ => Ok(Vec::new()),
                }
            };
            let log_count = |_: &LogCondition, _: i64| Ok(LogCount::default());
            let mut write = |b: MetricBatch| -> Result<(), String> {
                written.push(b);
                Ok(())
            };
            evaluate_group(
                &g,
                rt,
                EvalEnv {
                    ts_ms: ts,
                    query_ts_ms: ts - 30_000,
                    resolve_delay_ms: 30_000,
                    resend_delay_ms: 60_000,
                    external_url: "",
                    query: &query,
                    log_count: &log_count,
                    write: &mut write,
                },
            )
        };
        let mut q = MemQuerier::new();
        gauge(&mut q, "a", &[(0, 5.0)]);
        // Evaluated at 30 s, the query sees t = 0: the sample is in.
        run(&q, 30_000, &mut rt);
        assert_eq!(rt.rules[0].alerts.rule_state(), AlertState::Firing);
        // The agent goes quiet past the lookback: the series is missing, but for less
        // than the offset the alert keeps firing (no resolve/fire flap).
        let empty = MemQuerier::new();
        let o = run(&empty, 400_000, &mut rt);
        assert_eq!(rt.rules[0].alerts.rule_state(), AlertState::Firing);
        assert!(o.alerts.iter().all(|a| a.ends_at_ms > 400_000));
        run(&empty, 420_000, &mut rt);
        assert_eq!(rt.rules[0].alerts.rule_state(), AlertState::Firing);
        // Missing for longer than the offset: resolved.
        run(&empty, 431_000, &mut rt);
        assert_eq!(rt.rules[0].alerts.rule_state(), AlertState::Inactive);
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_rules() {
        let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: load > 1\n    for: 1h\n";
        let g = compile(text);
        let mut w = World {
            q: MemQuerier::new(),
            written: Vec::new(),
        };
        gauge(&mut w.q, "a", &[(0, 5.0)]);
        let mut rt = GroupRuntime::new(&g, None, &BTreeMap::new());
        w.eval(&g, &mut rt, 0);
        let g2 = compile(&format!("{text}  - record: extra\n    expr: load\n"));
        let rt2 = GroupRuntime::new(&g2, Some((&g, &rt)), &BTreeMap::new());
        assert_eq!(rt2.rules[0].alerts, rt.rules[0].alerts);
        assert!(rt2.rules[1].alerts.active.is_empty());
    }
}
