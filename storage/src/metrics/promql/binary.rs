//! Binary operators: arithmetic, comparisons (filtering or `bool`), set operators,
//! and vector matching (`on`, `ignoring`, `group_left`, `group_right`) with
//! Prometheus 2.42's label rules and errors.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::PromqlError;
use super::eval::{Collector, Evaluator, Grid, StepCursor, merge_same_labels};
use super::value::{RangeSeries, Val};
use crate::metrics::{Label, Labels, METRIC_NAME};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op, PromqlError> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => {
                return Err(PromqlError::Unsupported(format!(
                    "binary operator '{other}'"
                )));
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// `shouldDropMetricName` of 2.42: arithmetic except `atan2`.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Mod
        )
    }
}

/// `vectorElemBinop`: the value and whether a comparison keeps the element.
fn elem(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Pow => (l.powf(r), true),
        Op::Mod => (l % r, true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        Op::And | Op::Or | Op::Unless => (l, true),
    }
}

/// `scalarBinop`: comparisons give 1 or 0.
fn scalar_op(op: Op, l: f64, r: f64) -> f64 {
    let (v, keep) = elem(op, l, r);
    if op.is_comparison() {
        if keep { 1.0 } else { 0.0 }
    } else {
        v
    }
}

pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    b: &BinaryExpr,
    grid: &Grid,
) -> Result<Val, PromqlError> {
    let op = Op::parse(&b.op.to_string())?;
    if let Some(m) = &b.modifier
        && (m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
    {
        return Err(PromqlError::Unsupported("the fill modifier".into()));
    }
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&a, &b)| scalar_op(op, a, b))
                .collect(),
        )),
        (Val::Vector(v), Val::Scalar(s)) => Ok(Val::Vector(vector_scalar(
            op,
            v,
            &s,
            grid,
            false,
            return_bool,
        )?)),
        (Val::Scalar(s), Val::Vector(v)) => Ok(Val::Vector(vector_scalar(
            op,
            v,
            &s,
            grid,
            true,
            return_bool,
        )?)),
        (Val::Vector(l), Val::Vector(r)) => {
            let m = Matching::from_expr(b);
            Ok(Val::Vector(match op {
                Op::And | Op::Or | Op::Unless => set_op(ev, op, &l, &r, &m, grid)?,
                _ => vector_vector(ev, op, &l, &r, &m, return_bool, grid)?,
            }))
        }
        _ => Err(PromqlError::bad(
            "binary expression must contain only scalar and instant vector types",
        )),
    }
}

/// `VectorscalarBinop`, series by series.
fn vector_scalar(
    op: Op,
    v: Vec<RangeSeries>,
    s: &[f64],
    grid: &Grid,
    swap: bool,
    return_bool: bool,
) -> Result<Vec<RangeSeries>, PromqlError> {
    let mut out = Vec::with_capacity(v.len());
    for mut series in v {
        series.samples.retain_mut(|p| {
            let sv = s[grid.index(p.t)];
            let (lv, rv) = if swap { (sv, p.v) } else { (p.v, sv) };
            let (mut value, mut keep) = elem(op, lv, rv);
            if op.is_comparison() && swap {
                value = rv;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            p.v = value;
            keep
        });
        if series.samples.is_empty() {
            continue;
        }
        if op.drops_name() || return_bool {
            series.labels.remove(METRIC_NAME);
        }
        out.push(series);
    }
    merge_same_labels(out)
}

/// The matching clause of a vector-vector operation.
struct Matching {
    on: bool,
    labels: Vec<String>,
    card: Card,
    include: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

impl Matching {
    fn from_expr(b: &BinaryExpr) -> Matching {
        let mut m = Matching {
            on: false,
            labels: Vec::new(),
            card: Card::OneToOne,
            include: Vec::new(),
        };
        if let Some(modifier) = &b.modifier {
            match &modifier.matching {
                Some(LabelModifier::Include(l)) => {
                    m.on = true;
                    m.labels = l.labels.clone();
                }
                Some(LabelModifier::Exclude(l)) => m.labels = l.labels.clone(),
                None => {}
            }
            match &modifier.card {
                VectorMatchCardinality::ManyToOne(l) => {
                    m.card = Card::ManyToOne;
                    m.include = l.labels.clone();
                }
                VectorMatchCardinality::OneToMany(l) => {
                    m.card = Card::OneToMany;
                    m.include = l.labels.clone();
                }
                _ => {}
            }
        }
        m
    }

    /// The labels a series is matched on.
    fn signature(&self, l: &Labels) -> Labels {
        let kept: Vec<Label> = l
            .iter()
            .filter(|lb| {
                let listed = self.labels.contains(&lb.name);
                if self.on {
                    listed
                } else {
                    !listed && lb.name != METRIC_NAME
                }
            })
            .cloned()
            .collect();
        Labels::from_sorted(kept).unwrap_or_default()
    }
}

/// Interns the signatures of both sides: one id per distinct signature.
fn signatures(
    m: &Matching,
    l: &[RangeSeries],
    r: &[RangeSeries],
) -> (Vec<usize>, Vec<usize>, usize) {
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut id_of = |s: &RangeSeries| {
        let sig = m.signature(&s.labels);
        let next = ids.len();
        *ids.entry(sig).or_insert(next)
    };
    let ls: Vec<usize> = l.iter().map(&mut id_of).collect();
    let rs: Vec<usize> = r.iter().map(&mut id_of).collect();
    (ls, rs, ids.len())
}

/// `and`, `or`, `unless`, step by step.
fn set_op(
    ev: &mut Evaluator<'_>,
    op: Op,
    l: &[RangeSeries],
    r: &[RangeSeries],
    m: &Matching,
    grid: &Grid,
) -> Result<Vec<RangeSeries>, PromqlError> {
    let (lsig, rsig, nsig) = signatures(m, l, r);
    let mut out = Collector::default();
    let mut lslot: Vec<Option<usize>> = vec![None; l.len()];
    let mut rslot: Vec<Option<usize>> = vec![None; r.len()];
    let mut lcur = StepCursor::new(l);
    let mut rcur = StepCursor::new(r);
    let (mut lp, mut rp) = (Vec::new(), Vec::new());
    // Step stamp per signature: "seen on the other side at this step".
    let mut seen: Vec<usize> = vec![usize::MAX; nsig];
    for step in 0..grid.len() {
        ev.tick()?;
        let t = grid.t(step);
        lcur.at(l, t, &mut lp);
        rcur.at(r, t, &mut rp);
        let emit = |out: &mut Collector,
                    slots: &mut Vec<Option<usize>>,
                    side: &[RangeSeries],
                    i: usize,
                    v: f64| {
            let slot = *slots[i].get_or_insert_with(|| out.slot(&side[i].labels));
            out.push(slot, t, v)
        };
        match op {
            Op::And => {
                if lp.is_empty() || rp.is_empty() {
                    continue;
                }
                for &(ri, _) in &rp {
                    seen[rsig[ri]] = step;
                }
                for &(li, v) in &lp {
                    if seen[lsig[li]] == step {
                        emit(&mut out, &mut lslot, l, li, v)?;
                    }
                }
            }
            Op::Or => {
                for &(li, v) in &lp {
                    seen[lsig[li]] = step;
                    emit(&mut out, &mut lslot, l, li, v)?;
                }
                for &(ri, v) in &rp {
                    if lp.is_empty() || seen[rsig[ri]] != step {
                        emit(&mut out, &mut rslot, r, ri, v)?;
                    }
                }
            }
            _ => {
                if !rp.is_empty() {
                    for &(ri, _) in &rp {
                        seen[rsig[ri]] = step;
                    }
                }
                for &(li, v) in &lp {
                    if rp.is_empty() || seen[lsig[li]] != step {
                        emit(&mut out, &mut lslot, l, li, v)?;
                    }
                }
            }
        }
    }
    Ok(out.finish())
}

/// `VectorBinop`: arithmetic and comparisons between vectors, step by step.
fn vector_vector(
    ev: &mut Evaluator<'_>,
    op: Op,
    l: &[RangeSeries],
    r: &[RangeSeries],
    m: &Matching,
    return_bool: bool,
    grid: &Grid,
) -> Result<Vec<RangeSeries>, PromqlError> {
    // For one-to-many, swap sides and swap the values back when computing.
    let swapped = m.card == Card::OneToMany;
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let (msig, osig, nsig) = signatures(m, many, one);
    let mut out = Collector::default();
    let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::new();
    // Last (one-side series, slot) of each many-side series: usually the same pair
    // every step, which spares the map lookup.
    let mut last_pair: Vec<Option<(usize, usize)>> = vec![None; many.len()];
    let mut mcur = StepCursor::new(many);
    let mut ocur = StepCursor::new(one);
    let (mut mp, mut opts) = (Vec::new(), Vec::new());
    // Per signature: step stamp and the one-side element found at that step.
    let mut one_at: Vec<(usize, usize, f64)> = vec![(usize::MAX, 0, 0.0); nsig];
    let mut matched: Vec<usize> = vec![usize::MAX; nsig];
    let mut inserted: HashSet<(usize, usize)> = HashSet::new();
    for step in 0..grid.len() {
        ev.tick()?;
        let t = grid.t(step);
        mcur.at(many, t, &mut mp);
        ocur.at(one, t, &mut opts);
        if mp.is_empty() || opts.is_empty() {
            continue;
        }
        inserted.clear();
        for &(oi, v) in &opts {
            let sig = osig[oi];
            if one_at[sig].0 == step {
                let side = if swapped { "left" } else { "right" };
                let dup = &one[one_at[sig].1];
                return Err(PromqlError::exec(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    go_labels(&m.signature_for_message(&one[oi].labels)),
                    go_labels(&one[oi].labels),
                    go_labels(&dup.labels),
                )));
            }
            one_at[sig] = (step, oi, v);
        }
        for &(mi, mv) in &mp {
            let sig = msig[mi];
            if one_at[sig].0 != step {
                continue;
            }
            let (_, oi, ov) = one_at[sig];
            let (vl, vr) = if swapped { (ov, mv) } else { (mv, ov) };
            let (mut value, keep) = elem(op, vl, vr);
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let cached = last_pair[mi].filter(|&(o, _)| o == oi).map(|(_, s)| s);
            let slot = match cached.or_else(|| pair_slot.get(&(mi, oi)).copied()) {
                Some(s) => s,
                None => {
                    let mut labels = result_labels(op, &many[mi].labels, &one[oi].labels, m);
                    if return_bool {
                        labels.remove(METRIC_NAME);
                    }
                    let s = out.slot(&labels);
                    pair_slot.insert((mi, oi), s);
                    s
                }
            };
            last_pair[mi] = Some((oi, slot));
            if m.card == Card::OneToOne {
                if matched[sig] == step {
                    return Err(PromqlError::exec(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                    ));
                }
                matched[sig] = step;
            } else if !inserted.insert((sig, slot)) {
                return Err(PromqlError::exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                ));
            }
            out.push(slot, t, value)?;
        }
    }
    Ok(out.finish())
}

impl Matching {
    /// `MatchLabels` for the many-to-many error message.
    fn signature_for_message(&self, l: &Labels) -> Labels {
        self.signature(l)
    }
}

/// `resultMetric`: the labels of a vector-vector result element.
fn result_labels(op: Op, many: &Labels, one: &Labels, m: &Matching) -> Labels {
    let mut l = many.clone();
    if op.drops_name() {
        l.remove(METRIC_NAME);
    }
    if m.card == Card::OneToOne {
        if m.on {
            let kept: Vec<Label> = l
                .iter()
                .filter(|lb| m.labels.contains(&lb.name))
                .cloned()
                .collect();
            l = Labels::from_sorted(kept).unwrap_or_default();
        } else {
            for n in &m.labels {
                l.remove(n);
            }
        }
    }
    for n in &m.include {
        match one.get(n) {
            Some(v) => {
                let v = v.to_owned();
                l.set(n, &v);
            }
            None => l.remove(n),
        }
    }
    l
}

/// Go's `labels.Labels.String()`: `{a="1", b="2"}` with `__name__` as a plain label.
pub(crate) fn go_labels(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|lb| format!("{}={:?}", lb.name, lb.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}
