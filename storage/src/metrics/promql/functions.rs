//! PromQL functions with Prometheus 2.42's semantics: the range-vector family
//! (`rate` with its extrapolation, `*_over_time`, `deriv`, ...), the instant-vector
//! ones (math, clamping, rounding, dates, labels, `histogram_quantile`) and where
//! each drops the metric name.

use std::collections::HashMap;
use std::sync::Once;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Call, Expr, Function, register_extra_functions};

use super::PromqlError;
use super::eval::{
    Collector, Evaluator, Grid, StepCursor, WindowCursor, check_unique, merge_same_labels,
    selector_matchers, unwrap_parens,
};
use super::quantile::{Bucket, bucket_quantile, quantile};
use super::value::{RangeSeries, Val};
use crate::metrics::{Labels, METRIC_NAME, MatchOp, Sample};
use vantage_proto::prom::names::is_valid_label_name;

/// Functions of Prometheus 2.42 that the parser crate no longer knows.
pub(crate) fn register_legacy_functions() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means it is already registered (or built in): nothing to do.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

pub(crate) fn eval_call(ev: &mut Evaluator<'_>, c: &Call, grid: &Grid) -> Result<Val, PromqlError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| unwrap_parens(a)).collect();
    if let Some(kind) = RangeFn::parse(name) {
        return range_function(ev, kind, &args, grid);
    }
    if let Some(f) = simple_fn(name) {
        let v = ev.eval_vector(args[0], grid)?;
        return map_values(v, grid, |_, x| Some(f(x)));
    }
    if let Some(f) = date_fn(name) {
        if args.is_empty() {
            let m = vec![RangeSeries {
                labels: Labels::new(),
                samples: (0..grid.len())
                    .map(|i| {
                        let t = grid.t(i);
                        Sample {
                            t,
                            v: f(t.div_euclid(1000)),
                        }
                    })
                    .collect(),
            }];
            return Ok(Val::Vector(m));
        }
        let v = ev.eval_vector(args[0], grid)?;
        return map_values(v, grid, |_, x| Some(f(x as i64)));
    }
    match name {
        "time" => Ok(Val::Scalar(
            (0..grid.len()).map(|i| grid.t(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; grid.len()])),
        "vector" => {
            let s = ev.eval_scalar(args[0], grid)?;
            Ok(Val::Vector(vec![RangeSeries {
                labels: Labels::new(),
                samples: s
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Sample { t: grid.t(i), v })
                    .collect(),
            }]))
        }
        "scalar" => {
            let m = ev.eval_vector(args[0], grid)?;
            let mut cursor = StepCursor::new(&m);
            let mut present = Vec::new();
            let mut out = Vec::with_capacity(grid.len());
            for i in 0..grid.len() {
                cursor.at(&m, grid.t(i), &mut present);
                out.push(if present.len() == 1 {
                    present[0].1
                } else {
                    f64::NAN
                });
            }
            Ok(Val::Scalar(out))
        }
        "timestamp" => {
            let v = match args[0] {
                Expr::VectorSelector(vs) => ev.vector_selector(vs, grid, true)?,
                other => {
                    let mut m = ev.eval_vector(other, grid)?;
                    for s in &mut m {
                        s.samples.iter_mut().for_each(|p| p.v = p.t as f64 / 1000.0);
                    }
                    m
                }
            };
            map_values(v, grid, |_, x| Some(x))
        }
        "absent" => {
            let m = ev.eval_vector(args[0], grid)?;
            let labels = absent_labels(args[0]);
            let mut cursor = StepCursor::new(&m);
            let mut present = Vec::new();
            let mut samples = Vec::new();
            for i in 0..grid.len() {
                let t = grid.t(i);
                cursor.at(&m, t, &mut present);
                if present.is_empty() {
                    samples.push(Sample { t, v: 1.0 });
                }
            }
            Ok(Val::Vector(if samples.is_empty() {
                Vec::new()
            } else {
                vec![RangeSeries { labels, samples }]
            }))
        }
        "sort" | "sort_desc" => {
            let mut m = ev.eval_vector(args[0], grid)?;
            if grid.len() == 1 {
                let desc = name == "sort_desc";
                let key = |s: &RangeSeries| s.samples.first().map_or(f64::NAN, |p| p.v);
                m.sort_by(|a, b| {
                    let (x, y) = (key(a), key(b));
                    x.is_nan().cmp(&y.is_nan()).then_with(|| {
                        if desc {
                            y.total_cmp(&x)
                        } else {
                            x.total_cmp(&y)
                        }
                    })
                });
            }
            Ok(Val::Vector(m))
        }
        "round" => {
            let to_nearest = match args.get(1) {
                Some(a) => Some(ev.eval_scalar(a, grid)?),
                None => None,
            };
            let v = ev.eval_vector(args[0], grid)?;
            map_values(v, grid, |i, x| {
                let n = to_nearest.as_ref().map_or(1.0, |s| s[i]);
                let inv = 1.0 / n;
                Some((x * inv + 0.5).floor() / inv)
            })
        }
        "clamp" => {
            let min = ev.eval_scalar(args[1], grid)?;
            let max = ev.eval_scalar(args[2], grid)?;
            let v = ev.eval_vector(args[0], grid)?;
            map_values(v, grid, |i, x| {
                (max[i] >= min[i] || max[i].is_nan() || min[i].is_nan())
                    .then(|| go_max(min[i], go_min(max[i], x)))
            })
        }
        "clamp_min" => {
            let min = ev.eval_scalar(args[1], grid)?;
            let v = ev.eval_vector(args[0], grid)?;
            map_values(v, grid, |i, x| Some(go_max(min[i], x)))
        }
        "clamp_max" => {
            let max = ev.eval_scalar(args[1], grid)?;
            let v = ev.eval_vector(args[0], grid)?;
            map_values(v, grid, |i, x| Some(go_min(max[i], x)))
        }
        "histogram_quantile" => histogram_quantile(ev, &args, grid),
        "label_replace" => label_replace(ev, &args, grid),
        "label_join" => label_join(ev, &args, grid),
        "absent_over_time" => absent_over_time(ev, args[0], grid),
        other => Err(PromqlError::Unsupported(format!("function \"{other}\""))),
    }
}

/// Applies `f(step, value)` to every point (dropping points where it returns
/// `None`), drops the metric name, merges series that now share labels.
fn map_values(
    mut m: Vec<RangeSeries>,
    grid: &Grid,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Result<Val, PromqlError> {
    for s in &mut m {
        s.labels.remove(METRIC_NAME);
        s.samples.retain_mut(|p| match f(grid.index(p.t), p.v) {
            Some(v) => {
                p.v = v;
                true
            }
            None => false,
        });
    }
    m.retain(|s| !s.samples.is_empty());
    Ok(Val::Vector(merge_same_labels(m)?))
}

/// Go's `math.Min`: NaN wins, -0 is below +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Go's `math.Max`: NaN wins, +0 is above -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_positive() { a } else { b }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Instant-vector functions of one value.
fn simple_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "sgn" => |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// Date functions of a Unix time in seconds (UTC).
fn date_fn(name: &str) -> Option<fn(i64) -> f64> {
    Some(match name {
        "minute" => |t| (t.rem_euclid(86_400) % 3600 / 60) as f64,
        "hour" => |t| (t.rem_euclid(86_400) / 3600) as f64,
        "day_of_week" => |t| (t.div_euclid(86_400) + 4).rem_euclid(7) as f64,
        "day_of_month" => |t| civil(t).2 as f64,
        "day_of_year" => |t| {
            let days = t.div_euclid(86_400);
            let (y, _, _) = civil(t);
            (days - days_from_civil(y, 1, 1) + 1) as f64
        },
        "month" => |t| civil(t).1 as f64,
        "year" => |t| civil(t).0 as f64,
        "days_in_month" => |t| {
            let (y, m, _) = civil(t);
            days_in_month(y, m) as f64
        },
        _ => return None,
    })
}

/// (year, month, day) of a Unix time in seconds, proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil(t: i64) -> (i64, u32, u32) {
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since the epoch of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Functions over a range vector, one output point per window.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Resets,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    QuantileOverTime,
    StddevOverTime,
    StdvarOverTime,
    PresentOverTime,
    HoltWinters,
}

impl RangeFn {
    fn parse(name: &str) -> Option<RangeFn> {
        Some(match name {
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "irate" => RangeFn::Irate,
            "idelta" => RangeFn::Idelta,
            "deriv" => RangeFn::Deriv,
            "predict_linear" => RangeFn::PredictLinear,
            "resets" => RangeFn::Resets,
            "changes" => RangeFn::Changes,
            "avg_over_time" => RangeFn::AvgOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "quantile_over_time" => RangeFn::QuantileOverTime,
            "stddev_over_time" => RangeFn::StddevOverTime,
            "stdvar_over_time" => RangeFn::StdvarOverTime,
            "present_over_time" => RangeFn::PresentOverTime,
            "holt_winters" => RangeFn::HoltWinters,
            _ => return None,
        })
    }
}

/// Evaluates a range-vector function series by series: the series' samples are read,
/// every step's window is computed, and the samples are dropped.
fn range_function(
    ev: &mut Evaluator<'_>,
    kind: RangeFn,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Val, PromqlError> {
    let matrix_arg = if kind == RangeFn::QuantileOverTime {
        1
    } else {
        0
    };
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != matrix_arg {
            scalars.push(ev.eval_scalar(a, grid)?);
        }
    }
    if kind == RangeFn::HoltWinters {
        for (&sf, &tf) in scalars[0].iter().zip(&scalars[1]) {
            if sf <= 0.0 || sf >= 1.0 {
                return Err(PromqlError::exec(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(PromqlError::exec(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
        }
    }
    let n = grid.len();
    let budget = ev.remaining_samples();
    let mut held = 0usize;
    let mut out: Vec<RangeSeries> = Vec::new();
    ev.range_series(args[matrix_arg], grid, &mut |mut labels, samples, win| {
        let mut cur = WindowCursor::default();
        let mut points = Vec::new();
        for i in 0..n {
            let t = grid.t(i);
            let (start, end) = win.bounds(t);
            let w = cur.window(samples, start, end);
            if w.is_empty() {
                continue;
            }
            let arg = |k: usize| scalars.get(k).map_or(f64::NAN, |s| s[i]);
            let v = match kind {
                RangeFn::Rate => extrapolated_rate(w, start, end, win.range_ms, true, true),
                RangeFn::Increase => extrapolated_rate(w, start, end, win.range_ms, true, false),
                RangeFn::Delta => extrapolated_rate(w, start, end, win.range_ms, false, false),
                RangeFn::Irate => instant_value(w, true),
                RangeFn::Idelta => instant_value(w, false),
                RangeFn::Deriv => (w.len() >= 2).then(|| linear_regression(w, w[0].t).0),
                RangeFn::PredictLinear => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, t);
                    slope * arg(0) + intercept
                }),
                RangeFn::Resets => Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64),
                RangeFn::Changes => Some(
                    w.windows(2)
                        .filter(|p| p[1].v != p[0].v && !(p[1].v.is_nan() && p[0].v.is_nan()))
                        .count() as f64,
                ),
                RangeFn::AvgOverTime => Some(avg_over_time(w)),
                RangeFn::MinOverTime => Some(
                    w.iter()
                        .fold(w[0].v, |m, p| if p.v < m || m.is_nan() { p.v } else { m }),
                ),
                RangeFn::MaxOverTime => Some(
                    w.iter()
                        .fold(w[0].v, |m, p| if p.v > m || m.is_nan() { p.v } else { m }),
                ),
                RangeFn::SumOverTime => {
                    let (mut sum, mut c) = (0.0, 0.0);
                    for p in w {
                        (sum, c) = kahan_inc(p.v, sum, c);
                    }
                    Some(if sum.is_infinite() { sum } else { sum + c })
                }
                RangeFn::CountOverTime => Some(w.len() as f64),
                RangeFn::LastOverTime => Some(w[w.len() - 1].v),
                RangeFn::QuantileOverTime => {
                    let mut vals: Vec<f64> = w.iter().map(|p| p.v).collect();
                    Some(quantile(arg(0), &mut vals))
                }
                RangeFn::StddevOverTime => Some(stdvar_over_time(w).sqrt()),
                RangeFn::StdvarOverTime => Some(stdvar_over_time(w)),
                RangeFn::PresentOverTime => Some(1.0),
                RangeFn::HoltWinters => holt_winters(w, arg(0), arg(1)),
            };
            if let Some(v) = v {
                points.push(Sample { t, v });
            }
        }
        if points.is_empty() {
            return Ok(());
        }
        held += points.len();
        if held > budget {
            return Err(PromqlError::TooManySamples);
        }
        if kind != RangeFn::LastOverTime {
            labels.remove(METRIC_NAME);
        }
        out.push(RangeSeries {
            labels,
            samples: points,
        });
        Ok(())
    })?;
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

/// `extrapolatedRate` of Prometheus 2.42 for `rate`, `increase` and `delta`.
fn extrapolated_rate(
    w: &[Sample],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.v - first.v;
    if is_counter {
        let mut prev = first.v;
        for p in &w[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let mut duration_to_start = (first.t - range_start) as f64 / 1000.0;
    let duration_to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let avg_between = sampled_interval / (w.len() - 1) as f64;
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let duration_to_zero = sampled_interval * (first.v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut extrapolate_to = sampled_interval;
    extrapolate_to += if duration_to_start < threshold {
        duration_to_start
    } else {
        avg_between / 2.0
    };
    extrapolate_to += if duration_to_end < threshold {
        duration_to_end
    } else {
        avg_between / 2.0
    };
    let mut factor = extrapolate_to / sampled_interval;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `instantValue`: `irate` and `idelta` from the last two samples.
fn instant_value(w: &[Sample], is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let last = w[w.len() - 1];
    let prev = w[w.len() - 2];
    let mut v = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Neumaier-compensated addition, as Prometheus's `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn avg_over_time(w: &[Sample]) -> f64 {
    let (mut mean, mut c, mut count) = (0.0f64, 0.0f64, 0.0f64);
    for p in w {
        count += 1.0;
        if mean.is_infinite() {
            if p.v.is_infinite() && (mean > 0.0) == (p.v > 0.0) {
                continue;
            }
            if !p.v.is_infinite() && !p.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(p.v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

fn stdvar_over_time(w: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for p in w {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares fit; slope per second and the intercept at `intercept_t`.
fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0f64, 0.0, 0.0, 0.0);
    let init_y = w[0].v;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Double exponential smoothing as Prometheus 2.42's `holt_winters`.
fn holt_winters(w: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0f64, w[0].v);
    let mut b = w[1].v - w[0].v;
    for (i, p) in w.iter().enumerate().skip(1) {
        let x = sf * p.v;
        // calcTrendValue(i-1, ...)
        b = if i - 1 == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        };
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Labels `absent()` and `absent_over_time()` give their result: the `=` matchers of
/// a plain selector argument (a label matched twice is left out).
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let Ok(matchers) = selector_matchers(vs) else {
        return Labels::new();
    };
    let mut labels = Labels::new();
    let mut has: Vec<&str> = Vec::new();
    for m in &matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if m.op == MatchOp::Equal && !has.contains(&m.name.as_str()) {
            labels.set(&m.name, &m.value);
            has.push(&m.name);
        } else {
            labels.remove(&m.name);
        }
    }
    labels
}

/// `absent_over_time`: 1 at the steps where no series has a sample in its window.
fn absent_over_time(ev: &mut Evaluator<'_>, arg: &Expr, grid: &Grid) -> Result<Val, PromqlError> {
    let n = grid.len();
    let mut found = vec![false; n];
    ev.range_series(arg, grid, &mut |_, samples, win| {
        let mut cur = WindowCursor::default();
        for (i, f) in found.iter_mut().enumerate() {
            let (start, end) = win.bounds(grid.t(i));
            if !cur.window(samples, start, end).is_empty() {
                *f = true;
            }
        }
        Ok(())
    })?;
    let samples: Vec<Sample> = (0..n)
        .filter(|&i| !found[i])
        .map(|i| Sample {
            t: grid.t(i),
            v: 1.0,
        })
        .collect();
    Ok(Val::Vector(if samples.is_empty() {
        Vec::new()
    } else {
        vec![RangeSeries {
            labels: absent_labels(arg),
            samples,
        }]
    }))
}

/// `histogram_quantile` over classic buckets (series with an `le` label), grouped by
/// all other labels; the result drops `le` and the metric name.
fn histogram_quantile(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    grid: &Grid,
) -> Result<Val, PromqlError> {
    let q = ev.eval_scalar(args[0], grid)?;
    let m = ev.eval_vector(args[1], grid)?;
    // Per input series: its group (labels without `le`) and bucket bound.
    let mut group_ids: HashMap<Labels, usize> = HashMap::new();
    let mut group_out: Vec<Labels> = Vec::new();
    let mut series_info: Vec<Option<(usize, f64)>> = Vec::with_capacity(m.len());
    for s in &m {
        let Some(le) = s.labels.get("le").and_then(parse_go_float) else {
            series_info.push(None);
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let next = group_out.len();
        let g = *group_ids.entry(key.clone()).or_insert_with(|| {
            let mut out = key;
            out.remove(METRIC_NAME);
            group_out.push(out);
            next
        });
        series_info.push(Some((g, le)));
    }
    let mut buckets: Vec<Vec<Bucket>> = vec![Vec::new(); group_out.len()];
    let mut slots: Vec<Option<usize>> = vec![None; group_out.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut out = Collector::default();
    let mut cursor = StepCursor::new(&m);
    let mut present = Vec::new();
    for (step, &qv) in q.iter().enumerate().take(grid.len()) {
        ev.tick()?;
        let t = grid.t(step);
        cursor.at(&m, t, &mut present);
        order.clear();
        for &(si, v) in &present {
            if let Some((g, le)) = series_info[si] {
                if buckets[g].is_empty() {
                    order.push(g);
                }
                buckets[g].push(Bucket {
                    upper_bound: le,
                    count: v,
                });
            }
        }
        for &g in &order {
            let v = bucket_quantile(qv, &mut buckets[g]);
            buckets[g].clear();
            let slot = *slots[g].get_or_insert_with(|| out.slot(&group_out[g]));
            out.push(slot, t, v)?;
        }
    }
    Ok(Val::Vector(out.finish()))
}

/// Go's `strconv.ParseFloat` for label values such as `le="+Inf"`.
fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "+inf" | "Inf" | "inf" | "+Infinity" | "Infinity" => Some(f64::INFINITY),
        "-Inf" | "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// A string argument (the parser guarantees a string literal).
fn string_arg(e: &Expr) -> Result<&str, PromqlError> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(&s.val),
        other => Err(PromqlError::bad(format!(
            "expected a string literal, got {other}"
        ))),
    }
}

fn label_replace(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Val, PromqlError> {
    let dst = string_arg(args[1])?;
    let repl = string_arg(args[2])?;
    let src = string_arg(args[3])?;
    let pattern = string_arg(args[4])?;
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
        PromqlError::exec(format!(
            "invalid regular expression in label_replace(): {pattern}"
        ))
    })?;
    if !is_valid_label_name(dst) {
        return Err(PromqlError::exec(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut m = ev.eval_vector(args[0], grid)?;
    for s in &mut m {
        let value = s.labels.get(src).unwrap_or("").to_owned();
        if let Some(caps) = re.captures(&value) {
            let mut res = String::new();
            caps.expand(repl, &mut res);
            s.labels.set(dst, &res);
        }
    }
    Ok(Val::Vector(merge_same_labels(m)?))
}

fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Val, PromqlError> {
    let dst = string_arg(args[1])?;
    let sep = string_arg(args[2])?;
    let mut srcs = Vec::new();
    for a in &args[3..] {
        let s = string_arg(a)?;
        if !is_valid_label_name(s) {
            return Err(PromqlError::exec(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
        srcs.push(s);
    }
    if !is_valid_label_name(dst) {
        return Err(PromqlError::exec(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut m = ev.eval_vector(args[0], grid)?;
    for s in &mut m {
        let joined = srcs
            .iter()
            .map(|n| s.labels.get(n).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(sep);
        s.labels.set(dst, &joined);
    }
    Ok(Val::Vector(merge_same_labels(m)?))
}
