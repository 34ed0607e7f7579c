//! Alerting and recording rules: Prometheus rule files and API rule groups
//! (`file`, `manager`), Go-template annotations (`template`, `gofmt`), log rules
//! (`logrule`), alert states (`state`) and one group's evaluation (`group`).
//!
//! Never: send a pending alert; send an unchanged alert more often than the resend
//! delay; lose `for` timers or the last-sent time across a restart; read or write
//! another tenant's data.

pub mod file;
mod gofmt;
pub mod group;
pub mod logrule;
pub mod manager;
pub mod state;
pub mod template;

pub use file::{RuleFileError, RuleGroup, parse_rule_file};
pub use manager::{GroupKey, GroupView, RulesApiError, RulesDeps, RulesManager, RulesOptions};

/// An alert's value as Prometheus's API prints it (`strconv.FormatFloat(v, 'e', -1,
/// 64)`: `1e+00`, `1.5e+00`).
pub fn prom_value(v: f64) -> String {
    if !v.is_finite() {
        return gofmt::format_g(v, None);
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let e: i64 = exp.parse().unwrap_or(0);
            format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}
