//! Aggregation operators (`sum`, `avg`, `topk`, ... with `by`/`without`), step by step
//! with Prometheus 2.42's algorithms: incremental mean for `avg`, Welford for
//! `stddev`/`stdvar`, its heap for `topk`/`bottomk`, so results agree to the last bits
//! in all but pathological cases.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::PromqlError;
use super::eval::{Collector, Evaluator, Grid, StepCursor};
use super::quantile::quantile;
use super::value::{RangeSeries, Val};
use crate::metrics::{Label, Labels, METRIC_NAME};
use vantage_proto::prom::names::is_valid_label_name;

/// The aggregation operators Prometheus 2.42 has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
}

impl Op {
    fn parse(name: &str) -> Result<Op, PromqlError> {
        Ok(match name {
            "sum" => Op::Sum,
            "avg" => Op::Avg,
            "count" => Op::Count,
            "min" => Op::Min,
            "max" => Op::Max,
            "group" => Op::Group,
            "stddev" => Op::Stddev,
            "stdvar" => Op::Stdvar,
            "topk" => Op::Topk,
            "bottomk" => Op::Bottomk,
            "quantile" => Op::Quantile,
            "count_values" => Op::CountValues,
            other => {
                return Err(PromqlError::Unsupported(format!(
                    "aggregation operator '{other}'"
                )));
            }
        })
    }
}

/// Per-group state of one step.
#[derive(Clone, Default)]
struct Acc {
    value: f64,
    mean: f64,
    count: u64,
    /// (input series, value): the heap of topk/bottomk, the values of quantile.
    heap: Vec<(usize, f64)>,
}

pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    grid: &Grid,
) -> Result<Vec<RangeSeries>, PromqlError> {
    let op = Op::parse(&a.op.to_string())?;
    let (grouping, without): (Vec<String>, bool) = match &a.modifier {
        None => (Vec::new(), false),
        Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
        Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
    };
    let mut param_scalar: Option<Vec<f64>> = None;
    let mut param_str: Option<String> = None;
    if let Some(p) = &a.param {
        match ev.eval(p, grid)? {
            Val::Scalar(v) => param_scalar = Some(v),
            Val::Str(s) => param_str = Some(s),
            _ => {
                return Err(PromqlError::bad(
                    "aggregation parameter must be a scalar or string",
                ));
            }
        }
    }
    let input = ev.eval_vector(&a.expr, grid)?;
    if op == Op::CountValues {
        let label = param_str.unwrap_or_default();
        return count_values(ev, &input, grid, &grouping, without, &label);
    }

    // Group of each input series, interned.
    let mut group_index: HashMap<Labels, usize> = HashMap::new();
    let mut group_labels: Vec<Labels> = Vec::new();
    let series_group: Vec<usize> = input
        .iter()
        .map(|s| {
            let g = group_of(&s.labels, &grouping, without);
            let next = group_labels.len();
            *group_index.entry(g.clone()).or_insert_with(|| {
                group_labels.push(g);
                next
            })
        })
        .collect();

    let mut accs: Vec<Acc> = vec![Acc::default(); group_labels.len()];
    let mut active: Vec<bool> = vec![false; group_labels.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut group_slot: Vec<Option<usize>> = vec![None; group_labels.len()];
    let mut series_slot: Vec<Option<usize>> = vec![None; input.len()];
    let mut out = Collector::default();
    let mut cursor = StepCursor::new(&input);
    let mut present = Vec::new();

    for step in 0..grid.len() {
        ev.tick()?;
        let t = grid.t(step);
        cursor.at(&input, t, &mut present);
        if present.is_empty() {
            continue;
        }
        let mut k: i64 = 0;
        let mut q = f64::NAN;
        match op {
            Op::Topk | Op::Bottomk => {
                let f = param_scalar.as_ref().map_or(f64::NAN, |p| p[step]);
                if !(f <= i64::MAX as f64 && f >= i64::MIN as f64) {
                    return Err(PromqlError::exec(format!(
                        "Scalar value {} overflows int64",
                        go_float(f)
                    )));
                }
                k = f as i64;
                if k < 1 {
                    continue;
                }
            }
            Op::Quantile => q = param_scalar.as_ref().map_or(f64::NAN, |p| p[step]),
            _ => {}
        }
        order.clear();
        for &(si, v) in &present {
            let g = series_group[si];
            let acc = &mut accs[g];
            if !active[g] {
                active[g] = true;
                order.push(g);
                *acc = Acc {
                    value: v,
                    mean: v,
                    count: 1,
                    heap: std::mem::take(&mut acc.heap),
                };
                acc.heap.clear();
                match op {
                    Op::Stddev | Op::Stdvar => acc.value = 0.0,
                    Op::Topk | Op::Bottomk | Op::Quantile => acc.heap.push((si, v)),
                    Op::Group => acc.value = 1.0,
                    _ => {}
                }
                continue;
            }
            match op {
                Op::Sum => acc.value += v,
                Op::Avg => {
                    acc.count += 1;
                    if acc.mean.is_infinite() {
                        if v.is_infinite() && (acc.mean > 0.0) == (v > 0.0) {
                            continue;
                        }
                        if !v.is_infinite() && !v.is_nan() {
                            continue;
                        }
                    }
                    let c = acc.count as f64;
                    acc.mean += v / c - acc.mean / c;
                }
                Op::Group => {}
                Op::Max => {
                    if acc.value < v || acc.value.is_nan() {
                        acc.value = v;
                    }
                }
                Op::Min => {
                    if acc.value > v || acc.value.is_nan() {
                        acc.value = v;
                    }
                }
                Op::Count | Op::CountValues => acc.count += 1,
                Op::Stddev | Op::Stdvar => {
                    acc.count += 1;
                    let delta = v - acc.mean;
                    acc.mean += delta / acc.count as f64;
                    acc.value += delta * (v - acc.mean);
                }
                Op::Topk => {
                    let h = &mut acc.heap;
                    if (h.len() as i64) < k || h[0].1 < v || h[0].1.is_nan() {
                        if h.len() as i64 == k {
                            if k == 1 {
                                h[0] = (si, v);
                                continue;
                            }
                            heap_pop(h, topk_less);
                        }
                        heap_push(h, (si, v), topk_less);
                    }
                }
                Op::Bottomk => {
                    let h = &mut acc.heap;
                    if (h.len() as i64) < k || h[0].1 > v || h[0].1.is_nan() {
                        if h.len() as i64 == k {
                            if k == 1 {
                                h[0] = (si, v);
                                continue;
                            }
                            heap_pop(h, bottomk_less);
                        }
                        heap_push(h, (si, v), bottomk_less);
                    }
                }
                Op::Quantile => acc.heap.push((si, v)),
            }
        }
        for &g in &order {
            active[g] = false;
            let acc = &mut accs[g];
            let value = match op {
                Op::Avg => acc.mean,
                Op::Count | Op::CountValues => acc.count as f64,
                Op::Stdvar => acc.value / acc.count as f64,
                Op::Stddev => (acc.value / acc.count as f64).sqrt(),
                Op::Quantile => {
                    let mut vals: Vec<f64> = acc.heap.iter().map(|&(_, v)| v).collect();
                    quantile(q, &mut vals)
                }
                Op::Topk | Op::Bottomk => {
                    let mut h = std::mem::take(&mut acc.heap);
                    // Highest first for topk, lowest first for bottomk, NaN last.
                    h.sort_by(|a, b| {
                        let an = a.1.is_nan();
                        let bn = b.1.is_nan();
                        an.cmp(&bn).then_with(|| {
                            if op == Op::Topk {
                                b.1.total_cmp(&a.1)
                            } else {
                                a.1.total_cmp(&b.1)
                            }
                        })
                    });
                    for &(si, v) in &h {
                        let slot = match series_slot[si] {
                            Some(s) => s,
                            None => {
                                let s = out.slot(&input[si].labels);
                                series_slot[si] = Some(s);
                                s
                            }
                        };
                        out.push(slot, t, v)?;
                    }
                    acc.heap = h;
                    continue;
                }
                _ => acc.value,
            };
            let slot = match group_slot[g] {
                Some(s) => s,
                None => {
                    let s = out.slot(&group_labels[g]);
                    group_slot[g] = Some(s);
                    s
                }
            };
            out.push(slot, t, value)?;
        }
    }
    Ok(out.finish())
}

/// `count_values`: the value becomes a label, so groups are found per step.
fn count_values(
    ev: &mut Evaluator<'_>,
    input: &[RangeSeries],
    grid: &Grid,
    grouping: &[String],
    without: bool,
    label: &str,
) -> Result<Vec<RangeSeries>, PromqlError> {
    if !is_valid_label_name(label) {
        return Err(PromqlError::exec(format!("invalid label name {label:?}")));
    }
    let mut grouping = grouping.to_vec();
    if !without {
        grouping.push(label.to_owned());
    }
    let mut out = Collector::default();
    let mut cursor = StepCursor::new(input);
    let mut present = Vec::new();
    let mut counts: Vec<(Labels, u64)> = Vec::new();
    let mut idx: HashMap<Labels, usize> = HashMap::new();
    for step in 0..grid.len() {
        ev.tick()?;
        let t = grid.t(step);
        cursor.at(input, t, &mut present);
        counts.clear();
        idx.clear();
        for &(si, v) in &present {
            let mut l = input[si].labels.clone();
            l.set(label, &go_float(v));
            let g = group_of(&l, &grouping, without);
            match idx.get(&g) {
                Some(&i) => counts[i].1 += 1,
                None => {
                    idx.insert(g.clone(), counts.len());
                    counts.push((g, 1));
                }
            }
        }
        for (g, c) in &counts {
            let slot = out.slot(g);
            out.push(slot, t, *c as f64)?;
        }
    }
    Ok(out.finish())
}

/// The output labels of the group a series falls in.
pub(crate) fn group_of(l: &Labels, grouping: &[String], without: bool) -> Labels {
    let kept: Vec<Label> = l
        .iter()
        .filter(|lb| {
            let listed = grouping.contains(&lb.name);
            if without {
                !listed && lb.name != METRIC_NAME
            } else {
                listed
            }
        })
        .cloned()
        .collect();
    Labels::from_sorted(kept).unwrap_or_default()
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `vectorByValueHeap.Less`: NaN first, then ascending.
fn topk_less(a: f64, b: f64) -> bool {
    a.is_nan() || a < b
}

/// `vectorByReverseValueHeap.Less`: NaN first, then descending.
fn bottomk_less(a: f64, b: f64) -> bool {
    a.is_nan() || a > b
}

/// Go's `container/heap` Push, so ties are evicted as in Prometheus.
fn heap_push(h: &mut Vec<(usize, f64)>, x: (usize, f64), less: fn(f64, f64) -> bool) {
    h.push(x);
    let mut j = h.len() - 1;
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(h[j].1, h[i].1) {
            break;
        }
        h.swap(i, j);
        j = i;
    }
}

/// Go's `container/heap` Pop.
fn heap_pop(h: &mut Vec<(usize, f64)>, less: fn(f64, f64) -> bool) {
    let n = h.len() - 1;
    h.swap(0, n);
    let mut i = 0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= n {
            break;
        }
        let mut j = j1;
        if j1 + 1 < n && less(h[j1 + 1].1, h[j1].1) {
            j = j1 + 1;
        }
        if !less(h[j].1, h[i].1) {
            break;
        }
        h.swap(i, j);
        i = j;
    }
    h.pop();
}
