//! `GET /api/v1/logs/tail`: new records as Server-Sent Events.
//!
//! A tail is a search repeated every [`TAIL_POLL`] for what arrived since the last one.
//! Each poll is a search like any other: it waits for one of the
//! `logs.max_concurrent_searches` slots and stops at `logs.search_timeout`, so tails
//! cannot run more searches at once than the collector allows. A tenant holds at most
//! `logs.max_live_tails` of them (Loki's `max_concurrent_tail_requests`, per tenant as
//! there). A tail ends when its client goes away, at shutdown, or with an `error` event
//! when a poll fails for a reason that another poll would not cure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use vantage_proto::ErrorCode;
use vantage_storage::logs::{Deadline, LogQuery, SortOrder};
use vantage_storage::meta::Scope;

use super::logs::{Counted, bad, bounded_search, query_error};
use super::{ApiError, ApiState, render};

/// How often a live tail looks for new records; with 1 s commits, a record shows up in
/// the tail at most ~1.5 s after its acknowledgement.
const TAIL_POLL: Duration = Duration::from_millis(500);
/// Most records one tail poll sends.
const TAIL_BATCH: usize = 1_000;
/// How long a client that hit the limit is asked to wait before trying again.
const TAIL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Query-string parameters of a tail.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TailParams {
    #[serde(default)]
    query: String,
}

/// Live tails open, per tenant.
#[derive(Debug, Default)]
pub struct OpenTails(Mutex<HashMap<String, usize>>);

impl OpenTails {
    /// One more tail for `tenant`, or `None` when it already holds `max`. The tail counts
    /// (and `gauge` with it) until the returned guard is dropped.
    fn open(self: &Arc<Self>, tenant: &str, max: usize, gauge: &Gauge) -> Option<OpenTail> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(tenant.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        gauge.inc();
        Some(OpenTail {
            tails: self.clone(),
            tenant: tenant.to_owned(),
            gauge: gauge.clone(),
        })
    }
}

/// A tail counted in [`OpenTails`] while it lives.
struct OpenTail {
    tails: Arc<OpenTails>,
    tenant: String,
    gauge: Gauge,
}

impl Drop for OpenTail {
    fn drop(&mut self) {
        let mut open = self.tails.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
        self.gauge.dec();
    }
}

pub(super) async fn tail(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let principal = super::authenticate(&state, &headers, Scope::Query)?;
    super::charge_query(&state, &principal)?;
    let tenant = principal.tenant;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    // Reject a bad query now, with a 400, rather than inside the stream.
    state.logs.parse_query(&params.query).map_err(query_error)?;
    let max = state.live.get().max_live_tails;
    let Some(open) = state
        .open_tails
        .open(&tenant, max, &state.telemetry.log_tails_open)
    else {
        let mut e = ApiError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "this tenant has reached its limit of live tails \
                 (logs.max_live_tails: {max}); close one or retry later"
            ),
        );
        e.retry_after = Some(TAIL_RETRY_AFTER);
        return Err(e);
    };
    let mut cursor = state.ingest.wals().logs.last_lsn();
    let text = params.query;
    let stream = async_stream(move |tx| async move {
        let _open = open;
        let mut interval = tokio::time::interval(TAIL_POLL);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                // Without this, a tail whose query matches nothing would poll on after
                // its client left: it only finds out when a send fails.
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
            }
            let query = LogQuery {
                tenant: tenant.clone(),
                query: text.clone(),
                start_ns: i64::MIN,
                end_ns: i64::MAX,
                limit: TAIL_BATCH,
                order: SortOrder::ArrivalAsc,
                histogram_interval_ns: None,
                after_lsn: Some(cursor),
                max_hits_bytes: state.live.get().max_hits_bytes,
            };
            let timeout = state.live.get().log_search_timeout;
            let deadline = Deadline::starting(Instant::now(), timeout);
            let polled = tokio::select! {
                polled = bounded_search(&state, query, deadline, Counted::No) => polled,
                _ = tx.closed() => return,
            };
            let result = match polled {
                Ok(result) => result,
                // No search slot came free in time: the next poll picks up where this
                // one would have.
                Err(e) if e.retry_after.is_some() => continue,
                Err(e) => {
                    tracing::warn!(error = %e.message, "live tail ended by a failed poll");
                    let event = Event::default().event("error").data(e.body().to_string());
                    let _ = tx.send(Ok(event)).await;
                    return;
                }
            };
            // LSNs are per batch: when a poll fills up (its count or `logs.max_hits_bytes`)
            // in the middle of a batch, hold that batch back for the next poll (unless it
            // alone fills the poll, in which case the rest of it is skipped: a live view,
            // not an export).
            let hits = &result.hits;
            let full = hits.len() == TAIL_BATCH || result.cut_at_max_bytes;
            let mut upto = hits.len();
            if full && hits[0].lsn != hits[hits.len() - 1].lsn {
                let last = hits[hits.len() - 1].lsn;
                upto = hits
                    .iter()
                    .position(|h| h.lsn == last)
                    .unwrap_or(hits.len());
            }
            for hit in &hits[..upto] {
                cursor = cursor.max(hit.lsn);
                let event = Event::default()
                    .event("log")
                    .data(render::hit(hit).to_string());
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a task through a small bounded channel; the task stops when the
/// client goes away (the receiver is dropped).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_holds_at_most_its_tails_and_a_closed_one_frees_its_place() {
        let tails = Arc::new(OpenTails::default());
        let gauge = Gauge::default();
        let a1 = tails.open("a", 2, &gauge).expect("first");
        let a2 = tails.open("a", 2, &gauge).expect("second");
        assert!(tails.open("a", 2, &gauge).is_none(), "a third is refused");
        let b = tails
            .open("b", 2, &gauge)
            .expect("another tenant is not held back");
        assert_eq!(gauge.get(), 3);
        drop(a1);
        let a3 = tails.open("a", 2, &gauge).expect("room again");
        drop((a2, a3, b));
        assert_eq!(gauge.get(), 0);
        assert!(
            tails.0.lock().unwrap().is_empty(),
            "no tenant is remembered once its tails are closed"
        );
    }
}
