//! `series`, `labels`, `label/<name>/values` and `metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use vantage_proto::prom::names::is_valid_label_name;
use vantage_storage::metrics::promql;
use vantage_storage::metrics::{Matcher, MetricsError, Querier};

use super::params::{MAX_TIME_MS, MIN_TIME_MS};
use super::{Params, PromError, json, query_caller, success, success_with_warnings};
use crate::api::{ApiState, blocking};

/// Parses a `match[]` series selector into matchers (the evaluator's own parsing).
fn parse_selector(text: &str) -> Result<Vec<Matcher>, PromError> {
    promql::parse_selector(text)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"match[]\": {e}")))
}

/// The `match[]` selectors of a request (none means "all series").
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, PromError> {
    params
        .all("match[]")
        .into_iter()
        .map(parse_selector)
        .collect()
}

fn range(params: &Params) -> Result<(i64, i64), PromError> {
    Ok((
        params.time_or("start", MIN_TIME_MS)?,
        params.time_or("end", MAX_TIME_MS)?,
    ))
}

/// The `limit` parameter of `series`, `labels` and `label values` (Prometheus 2.49+,
/// which Grafana sends): at most that many results, with a warning when cut.
fn limit(params: &Params) -> Result<usize, PromError> {
    match params.get("limit") {
        None => Ok(usize::MAX),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Ok(_) => Err(PromError::bad_data(
                "invalid parameter \"limit\": limit must be positive",
            )),
            Err(_) => Err(PromError::bad_data(format!(
                "invalid parameter \"limit\": {text:?} is not a number"
            ))),
        },
    }
}

/// Cuts `items` to `limit`, returning the warnings Prometheus would send.
fn truncate<T>(items: &mut Vec<T>, limit: usize) -> Vec<&'static str> {
    if items.len() > limit {
        items.truncate(limit);
        vec!["results truncated due to limit"]
    } else {
        Vec::new()
    }
}

fn strings(values: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::string(&mut out, &v);
    }
    out.push(']');
    out
}

/// What a metadata read is called in the error when it panics.
const METADATA_READ: &str = "metadata read";

/// A metadata read that failed: the detail goes to the log, not the client.
fn read_failed(e: MetricsError) -> PromError {
    PromError::internal("metadata read failed", &e)
}

/// `GET|POST /api/v1/series`
pub(crate) async fn series(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let sets = selectors(&params)?;
    if sets.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = range(&params)?;
    let limit = limit(&params)?;
    let querier = state.tsdb.querier(&principal.tenant);
    let found = blocking(METADATA_READ, move || {
        let mut all = BTreeSet::new();
        for matchers in &sets {
            for s in querier.series(matchers, start, end)? {
                all.insert(s.labels);
            }
        }
        Ok(all.into_iter().collect::<Vec<_>>())
    })
    .await?
    .map_err(read_failed)?;
    let mut found = found;
    let warnings = truncate(&mut found, limit);
    let mut out = String::from("[");
    for (i, l) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::labels(&mut out, l);
    }
    out.push(']');
    Ok(success_with_warnings(out, &warnings))
}

/// `GET|POST /api/v1/labels`
pub(crate) async fn labels(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let sets = selectors(&params)?;
    let (start, end) = range(&params)?;
    let limit = limit(&params)?;
    let tsdb = state.tsdb.clone();
    let mut names = blocking(METADATA_READ, move || {
        if sets.is_empty() {
            return tsdb.label_names(&principal.tenant, &[], start, end);
        }
        let mut all = BTreeSet::new();
        for matchers in &sets {
            all.extend(tsdb.label_names(&principal.tenant, matchers, start, end)?);
        }
        Ok(all.into_iter().collect())
    })
    .await?
    .map_err(read_failed)?;
    let warnings = truncate(&mut names, limit);
    Ok(success_with_warnings(strings(names), &warnings))
}

/// `GET /api/v1/label/<name>/values`
pub(crate) async fn label_values(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    if !is_valid_label_name(&name) {
        return Err(PromError::bad_data(format!("invalid label name: {name:?}")));
    }
    let sets = selectors(&params)?;
    let (start, end) = range(&params)?;
    let limit = limit(&params)?;
    let tsdb = state.tsdb.clone();
    let mut values = blocking(METADATA_READ, move || {
        if sets.is_empty() {
            return tsdb.label_values(&principal.tenant, &name, &[], start, end);
        }
        let mut all = BTreeSet::new();
        for matchers in &sets {
            all.extend(tsdb.label_values(&principal.tenant, &name, matchers, start, end)?);
        }
        Ok(all.into_iter().collect())
    })
    .await?
    .map_err(read_failed)?;
    let warnings = truncate(&mut values, limit);
    Ok(success_with_warnings(strings(values), &warnings))
}

/// `GET /api/v1/metadata`
pub(crate) async fn metadata(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, PromError> {
    let principal = query_caller(&state, &headers)?;
    let limit = match params.get("limit") {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| PromError::bad_data("limit must be a number"))?,
        )
        .filter(|l| *l >= 0)
        .map(|l| l as usize),
    };
    let metric = params.get("metric").map(str::to_owned);
    let mut families: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for m in state.tsdb.metadata(&principal.tenant, metric.as_deref()) {
        families
            .entry(m.metric)
            .or_default()
            .push(serde_json::json!({
                "type": m.kind.as_str(),
                "help": m.help,
                "unit": m.unit,
            }));
    }
    if let Some(limit) = limit {
        families = families.into_iter().take(limit).collect();
    }
    Ok(success(
        serde_json::to_string(&families).unwrap_or_else(|_| "{}".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_storage::metrics::METRIC_NAME;

    #[test]
    fn selectors_parse_like_prometheus() {
        let m = parse_selector(r#"up{job=~"api|web",env!="dev"}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, METRIC_NAME);
        assert!(m[1].matches("api") && !m[1].matches("apix"));
        assert!(parse_selector(r#"{job=""}"#).is_err());
        assert!(parse_selector("rate(up[5m])").is_err());
        assert!(parse_selector("up offset 5m").is_err());
        assert!(parse_selector("{").is_err());
    }
}
