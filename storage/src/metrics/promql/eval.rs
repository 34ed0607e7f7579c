//! The evaluator core: the step grid, selectors (instant and range), subqueries,
//! limits and the dispatch to operators and functions.
//!
//! Every instant-vector expression evaluates to a matrix over the grid (series with a
//! point at each step where they have a value), as Prometheus's range evaluation does;
//! an instant query is a grid of one step.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, UNIX_EPOCH};

use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::value::{RangeSeries, Val, Value};
use super::{DEFAULT_SUBQUERY_STEP_MS, EngineOptions, InstantSample, PromqlError};
use crate::metrics::{Labels, METRIC_NAME, MatchOp, Matcher, Querier, Sample, is_stale};

/// How often (in ticks: series or steps) the deadline is checked.
const DEADLINE_CHECK_EVERY: u32 = 64;

/// The evaluation times: `start`, `start + step`, ... up to `end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Grid {
    /// Number of steps.
    pub(crate) fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.step + 1) as usize
        }
    }

    /// Time of step `i`.
    pub(crate) fn t(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// Step index of a time on the grid.
    pub(crate) fn index(&self, t: i64) -> usize {
        ((t - self.start) / self.step) as usize
    }
}

/// Where the window of a range argument lies for an evaluation step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows {
    /// Width, ms.
    pub(crate) range_ms: i64,
    /// `offset`, ms.
    pub(crate) offset_ms: i64,
    /// `@` time, ms, if any.
    pub(crate) at: Option<i64>,
}

impl Windows {
    /// `[start, end]` (both inclusive, as in Prometheus 2.x) for step time `t`.
    pub(crate) fn bounds(&self, t: i64) -> (i64, i64) {
        let end = self.at.unwrap_or(t) - self.offset_ms;
        (end - self.range_ms, end)
    }
}

/// Moves two cursors over time-sorted samples so that `samples[lo..hi]` is the window
/// `[start, end]`; windows must not move backwards.
#[derive(Default)]
pub(crate) struct WindowCursor {
    lo: usize,
    hi: usize,
}

impl WindowCursor {
    pub(crate) fn window<'s>(
        &mut self,
        samples: &'s [Sample],
        start: i64,
        end: i64,
    ) -> &'s [Sample] {
        while self.lo < samples.len() && samples[self.lo].t < start {
            self.lo += 1;
        }
        if self.hi < self.lo {
            self.hi = self.lo;
        }
        while self.hi < samples.len() && samples[self.hi].t <= end {
            self.hi += 1;
        }
        &samples[self.lo..self.hi]
    }
}

/// What [`Evaluator::range_series`] calls for each series: labels, samples, windows.
pub(crate) type SeriesVisitor<'f> =
    dyn FnMut(Labels, &[Sample], &Windows) -> Result<(), PromqlError> + 'f;

/// One query's evaluation state.
pub(crate) struct Evaluator<'a> {
    q: &'a dyn Querier,
    pub(crate) opts: &'a EngineOptions,
    deadline: Option<Instant>,
    /// Query start and end, for `@ start()` and `@ end()`.
    query_start: i64,
    query_end: i64,
    /// Points held by finished sub-expressions (approximately what Prometheus counts
    /// as samples in memory).
    live: usize,
    ticks: u32,
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        q: &'a dyn Querier,
        opts: &'a EngineOptions,
        deadline: Option<Instant>,
        query_start: i64,
        query_end: i64,
    ) -> Evaluator<'a> {
        Evaluator {
            q,
            opts,
            deadline,
            query_start,
            query_end,
            live: 0,
            ticks: 0,
        }
    }

    /// An instant query.
    pub(crate) fn instant(&mut self, expr: &Expr, t: i64) -> Result<Value, PromqlError> {
        let grid = Grid {
            start: t,
            end: t,
            step: 1,
        };
        if expr.value_type() == ValueType::Matrix {
            let mut out = Vec::new();
            let mut held = 0usize;
            let max = self.opts.max_samples;
            self.range_series(unwrap_parens(expr), &grid, &mut |labels, samples, win| {
                let (start, end) = win.bounds(t);
                let mut cur = WindowCursor::default();
                let w = cur.window(samples, start, end);
                if !w.is_empty() {
                    held += w.len();
                    if held > max {
                        return Err(PromqlError::TooManySamples);
                    }
                    out.push(RangeSeries {
                        labels,
                        samples: w.to_vec(),
                    });
                }
                Ok(())
            })?;
            return Ok(Value::Matrix(out));
        }
        Ok(match self.eval(expr, &grid)? {
            Val::Scalar(v) => Value::Scalar {
                t,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::Str(s) => Value::String { t, v: s },
            Val::Vector(m) => Value::Vector(
                m.into_iter()
                    .filter_map(|s| {
                        s.samples.first().map(|p| InstantSample {
                            labels: s.labels,
                            t,
                            v: p.v,
                        })
                    })
                    .collect(),
            ),
        })
    }

    /// A range query.
    pub(crate) fn range(
        &mut self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Value, PromqlError> {
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            other => {
                let name = match other {
                    ValueType::Matrix => "range vector",
                    ValueType::String => "string",
                    _ => "unknown",
                };
                return Err(PromqlError::bad(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let grid = Grid { start, end, step };
        Ok(match self.eval(expr, &grid)? {
            Val::Scalar(v) => Value::Matrix(vec![RangeSeries {
                labels: Labels::new(),
                samples: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Sample { t: grid.t(i), v })
                    .collect(),
            }]),
            Val::Vector(mut m) => {
                m.retain(|s| !s.samples.is_empty());
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(m)
            }
            Val::Str(_) => return Err(PromqlError::bad("string result in a range query")),
        })
    }

    /// Checks the deadline every few calls.
    pub(crate) fn tick(&mut self) -> Result<(), PromqlError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(DEADLINE_CHECK_EVERY)
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(PromqlError::Timeout);
        }
        Ok(())
    }

    /// Fails when holding `extra` more samples would pass the limit.
    pub(crate) fn check_samples(&self, extra: usize) -> Result<(), PromqlError> {
        if self.live.saturating_add(extra) > self.opts.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    /// How many more samples the query may hold.
    pub(crate) fn remaining_samples(&self) -> usize {
        self.opts.max_samples.saturating_sub(self.live)
    }

    /// Evaluates an expression of scalar, string or instant-vector type over `grid`.
    pub(crate) fn eval(&mut self, expr: &Expr, grid: &Grid) -> Result<Val, PromqlError> {
        self.tick()?;
        let before = self.live;
        let v = match expr {
            Expr::NumberLiteral(n) => Val::Scalar(vec![n.val; grid.len()]),
            Expr::StringLiteral(s) => Val::Str(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, grid)?,
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Val::Scalar(v)
                }
                Val::Vector(mut m) => {
                    for s in &mut m {
                        s.labels.remove(METRIC_NAME);
                        s.samples.iter_mut().for_each(|p| p.v = -p.v);
                    }
                    check_unique(&m)?;
                    Val::Vector(m)
                }
                _ => return Err(PromqlError::bad("unary minus on a non-numeric expression")),
            },
            Expr::VectorSelector(vs) => Val::Vector(self.vector_selector(vs, grid, false)?),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                return Err(PromqlError::bad(
                    "a range vector is only allowed as a function argument or as a whole instant query",
                ));
            }
            Expr::Aggregate(a) => Val::Vector(super::aggregate::eval(self, a, grid)?),
            Expr::Binary(b) => super::binary::eval(self, b, grid)?,
            Expr::Call(c) => super::functions::eval_call(self, c, grid)?,
            Expr::Extension(_) => {
                return Err(PromqlError::Unsupported("extension expression".into()));
            }
        };
        self.live = before + v.points();
        if self.live > self.opts.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(v)
    }

    /// Evaluates an expression that must be scalar, one value per step.
    pub(crate) fn eval_scalar(
        &mut self,
        expr: &Expr,
        grid: &Grid,
    ) -> Result<Vec<f64>, PromqlError> {
        match self.eval(expr, grid)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(PromqlError::bad(format!("expected a scalar, got {expr}"))),
        }
    }

    /// Evaluates an expression that must be an instant vector.
    pub(crate) fn eval_vector(
        &mut self,
        expr: &Expr,
        grid: &Grid,
    ) -> Result<Vec<RangeSeries>, PromqlError> {
        match self.eval(expr, grid)? {
            Val::Vector(m) => Ok(m),
            _ => Err(PromqlError::bad(format!(
                "expected an instant vector, got {expr}"
            ))),
        }
    }

    /// Resolves an `@` modifier to ms.
    pub(crate) fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(st)) => Some(match st.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            }),
        }
    }

    /// An instant vector selector: per series, the latest sample within the lookback
    /// of each step (none if it is a staleness marker). With `timestamps`, the value is
    /// the sample's time in seconds (for `timestamp()`).
    pub(crate) fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: &Grid,
        timestamps: bool,
    ) -> Result<Vec<RangeSeries>, PromqlError> {
        let matchers = selector_matchers(vs)?;
        let n = grid.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let offset = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let lookback = self.opts.lookback_ms;
        let (first_ref, last_ref) = match at {
            Some(a) => (a - offset, a - offset),
            None => (grid.start - offset, grid.end - offset),
        };
        let mint = first_ref - lookback;
        let series = self.q.series(&matchers, mint, last_ref)?;
        let mut out = Vec::new();
        let mut raw = Vec::new();
        let mut held = 0usize;
        for s in series {
            self.tick()?;
            raw.clear();
            self.q.samples(&s, mint, last_ref, &mut raw)?;
            self.check_samples(held + raw.len())?;
            let mut points = Vec::new();
            let mut j = 0usize;
            for i in 0..n {
                let t = grid.t(i);
                let r = at.unwrap_or(t) - offset;
                while j < raw.len() && raw[j].t <= r {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let smp = raw[j - 1];
                if smp.t < r - lookback || is_stale(smp.v) {
                    continue;
                }
                let v = if timestamps {
                    smp.t as f64 / 1000.0
                } else {
                    smp.v
                };
                points.push(Sample { t, v });
            }
            held += points.len();
            if !points.is_empty() {
                out.push(RangeSeries {
                    labels: s.labels,
                    samples: points,
                });
            }
        }
        Ok(out)
    }

    /// Feeds `f` each series of a range-vector expression (a matrix selector or a
    /// subquery) with its samples over all windows of `grid`, one series at a time,
    /// staleness markers removed. Returns where the windows lie.
    pub(crate) fn range_series(
        &mut self,
        expr: &Expr,
        grid: &Grid,
        f: &mut SeriesVisitor<'_>,
    ) -> Result<Windows, PromqlError> {
        match unwrap_parens(expr) {
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let matchers = selector_matchers(vs)?;
                let win = Windows {
                    range_ms: ms.range.as_millis() as i64,
                    offset_ms: offset_ms(&vs.offset),
                    at: self.at_ms(&vs.at),
                };
                if grid.len() == 0 {
                    return Ok(win);
                }
                let (mint, _) = win.bounds(grid.start);
                let (_, maxt) = win.bounds(grid.end);
                let series = self.q.series(&matchers, mint, maxt)?;
                let mut raw = Vec::new();
                for s in series {
                    self.tick()?;
                    raw.clear();
                    self.q.samples(&s, mint, maxt, &mut raw)?;
                    self.check_samples(raw.len())?;
                    raw.retain(|p| !is_stale(p.v));
                    if raw.is_empty() {
                        continue;
                    }
                    f(s.labels, &raw, &win)?;
                }
                Ok(win)
            }
            Expr::Subquery(sq) => {
                let win = Windows {
                    range_ms: sq.range.as_millis() as i64,
                    offset_ms: offset_ms(&sq.offset),
                    at: self.at_ms(&sq.at),
                };
                let inner = self.subquery_grid(sq, &win, grid);
                let before = self.live;
                let m = self.eval_vector(&sq.expr, &inner)?;
                for s in m {
                    self.tick()?;
                    f(s.labels, &s.samples, &win)?;
                }
                self.live = before;
                Ok(win)
            }
            other => Err(PromqlError::bad(format!(
                "expected a range vector, got {other}"
            ))),
        }
    }

    /// The inner grid of a subquery: its step (or the default), starting at the first
    /// multiple of the step at or after the earliest window start, as Prometheus aligns.
    fn subquery_grid(&self, sq: &SubqueryExpr, win: &Windows, outer: &Grid) -> Grid {
        let step = sq
            .step
            .map(|d| d.as_millis() as i64)
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
        let (first_start, _) = win.bounds(outer.start);
        let (_, last_end) = win.bounds(outer.end);
        let mut start = step * (first_start / step);
        if start < first_start {
            start += step;
        }
        Grid {
            start,
            end: last_end,
            step,
        }
    }
}

/// Strips parentheses.
pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// The offset in ms (negative for `offset -5m`).
pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

/// The selector's matchers in the store's type, the metric name as `__name__=`.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromqlError::Unsupported(
            "`or` between label matchers".into(),
        ));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(Matcher::equal(METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            ParserMatchOp::Equal => MatchOp::Equal,
            ParserMatchOp::NotEqual => MatchOp::NotEqual,
            ParserMatchOp::Re(_) => MatchOp::RegexMatch,
            ParserMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        out.push(Matcher::new(m.name.clone(), op, m.value.clone())?);
    }
    if out.iter().all(|m| m.matches_empty()) {
        return Err(PromqlError::Parse(
            "vector selector must contain at least one non-empty matcher".into(),
        ));
    }
    Ok(out)
}

/// Fails if two series have the same label set (Prometheus's check after functions
/// over range vectors and unary minus).
pub(crate) fn check_unique(m: &[RangeSeries]) -> Result<(), PromqlError> {
    let mut seen = HashSet::with_capacity(m.len());
    for s in m {
        if !seen.insert(&s.labels) {
            return Err(PromqlError::duplicate_labelset());
        }
    }
    Ok(())
}

/// Merges series with equal label sets (after labels were changed series by series);
/// two of them with a point at the same step is Prometheus's duplicate-labelset
/// error. Keeps the order of first appearance.
pub(crate) fn merge_same_labels(m: Vec<RangeSeries>) -> Result<Vec<RangeSeries>, PromqlError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(m.len());
    let mut dup = false;
    for (i, s) in m.iter().enumerate() {
        if index.insert(s.labels.clone(), i).is_some() {
            dup = true;
        }
    }
    if !dup {
        return Ok(m);
    }
    index.clear();
    let mut out: Vec<RangeSeries> = Vec::new();
    for s in m {
        match index.get(&s.labels) {
            Some(&i) => {
                let a = std::mem::take(&mut out[i].samples);
                out[i].samples = merge_points(a, s.samples)?;
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn merge_points(a: Vec<Sample>, b: Vec<Sample>) -> Result<Vec<Sample>, PromqlError> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].t.cmp(&b[j].t) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => return Err(PromqlError::duplicate_labelset()),
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    Ok(out)
}

/// Builds a result matrix step by step: a slot per output label set, and the
/// duplicate check Prometheus makes when two results of one step share labels.
#[derive(Default)]
pub(crate) struct Collector {
    series: Vec<RangeSeries>,
    index: HashMap<Labels, usize>,
}

impl Collector {
    /// The slot of a label set, created on first use.
    pub(crate) fn slot(&mut self, labels: &Labels) -> usize {
        if let Some(&i) = self.index.get(labels) {
            return i;
        }
        let i = self.series.len();
        self.index.insert(labels.clone(), i);
        self.series.push(RangeSeries {
            labels: labels.clone(),
            samples: Vec::new(),
        });
        i
    }

    /// Adds a point at step time `t`.
    pub(crate) fn push(&mut self, slot: usize, t: i64, v: f64) -> Result<(), PromqlError> {
        let s = &mut self.series[slot].samples;
        if s.last().is_some_and(|p| p.t == t) {
            return Err(PromqlError::duplicate_labelset());
        }
        s.push(Sample { t, v });
        Ok(())
    }

    /// The series that got points, in order of creation.
    pub(crate) fn finish(self) -> Vec<RangeSeries> {
        self.series
            .into_iter()
            .filter(|s| !s.samples.is_empty())
            .collect()
    }
}

/// Walks the steps of a matrix: `at(t)` yields, for each series in order, its value at
/// step time `t` if it has one. Steps must be visited in increasing time.
pub(crate) struct StepCursor {
    pos: Vec<usize>,
}

impl StepCursor {
    pub(crate) fn new(m: &[RangeSeries]) -> StepCursor {
        StepCursor {
            pos: vec![0; m.len()],
        }
    }

    /// Fills `out` with `(series index, value)` of the series present at `t`.
    pub(crate) fn at(&mut self, m: &[RangeSeries], t: i64, out: &mut Vec<(usize, f64)>) {
        out.clear();
        for (i, s) in m.iter().enumerate() {
            let p = &mut self.pos[i];
            while *p < s.samples.len() && s.samples[*p].t < t {
                *p += 1;
            }
            if *p < s.samples.len() && s.samples[*p].t == t {
                out.push((i, s.samples[*p].v));
                *p += 1;
            }
        }
    }
}
