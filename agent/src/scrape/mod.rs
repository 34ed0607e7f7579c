//! Prometheus scraping: one task per target, each on its own interval, fetching the
//! text exposition over HTTP (bounded body, per-scrape timeout), parsing it on the
//! blocking pool, converting it to OTLP ([`convert`]) and queueing it like any other
//! source. A failing target is a logged warning and `up 0`, never an error of the agent.

pub(crate) mod convert;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::config::ScrapeTarget;
use crate::exposition::{self, Exposition};
use crate::queue::{DiskQueue, Kind, QueueError};
use crate::stats::Stats;

/// The Accept header Prometheus sends for the text format; OpenMetrics is not asked for
/// (the parser reads 0.0.4), and exporters fall back to text.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
/// Warn on the first failure of a target, then every this many consecutive ones.
const WARN_EVERY: u64 = 10;
/// Longest wait before a target's first scrape: spreads targets apart like Prometheus's
/// offset, short enough that a new target shows up quickly.
const MAX_START_OFFSET: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScrapeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("body: {0}")]
    Body(String),
    #[error("parse error: {0}")]
    Parse(#[from] exposition::ParseError),
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Fetches and parses one scrape.
async fn scrape_once(
    client: &HttpClient,
    target: &ScrapeTarget,
) -> Result<Exposition, ScrapeError> {
    let request = hyper::Request::get(&target.url)
        .header(hyper::header::ACCEPT, ACCEPT)
        .header(hyper::header::ACCEPT_ENCODING, "gzip")
        .header(
            hyper::header::USER_AGENT,
            concat!("vantage-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", target.timeout.as_secs_f64()),
        )
        .body(Empty::new())
        .map_err(|e| ScrapeError::Request(e.to_string()))?;
    let fetch = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| ScrapeError::Request(format!("{e:#}")))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let encoding = response
            .headers()
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match Limited::new(response.into_body(), target.body_limit)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ScrapeError::TooLarge(target.body_limit));
            }
            Err(e) => return Err(ScrapeError::Body(e.to_string())),
        };
        Ok((encoding, body))
    };
    let (encoding, body) = tokio::time::timeout(target.timeout, fetch)
        .await
        .map_err(|_| ScrapeError::Timeout(target.timeout))??;
    let limit = target.body_limit;
    tokio::task::spawn_blocking(move || -> Result<Exposition, ScrapeError> {
        let text = vantage_proto::otlp_http::decompress(&encoding, &body, limit).map_err(|e| {
            if e.code == vantage_proto::ErrorCode::PayloadTooLarge {
                ScrapeError::TooLarge(limit)
            } else {
                ScrapeError::Body(e.message)
            }
        })?;
        let text = String::from_utf8(text).map_err(|e| {
            ScrapeError::Body(format!(
                "not UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Ok(exposition::parse(&text)?)
    })
    .await
    .map_err(|e| ScrapeError::Body(format!("parse task failed: {e}")))?
}

/// Scrapes `target` every interval until cancelled.
pub(crate) async fn run(
    target: ScrapeTarget,
    batch_max_bytes: usize,
    queue: DiskQueue,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let offset = MAX_START_OFFSET
        .min(target.interval)
        .mul_f64(fastrand::f64());
    tokio::select! {
        () = tokio::time::sleep(offset) => {}
        () = cancel.cancelled() => return,
    }
    let start_ns = now_ns();
    let mut ticker = tokio::time::interval(target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        if crate::memlimit::paused(&stats) {
            // Over limits.max_memory_mib: this scrape is skipped, not queued.
            continue;
        }
        let began = tokio::time::Instant::now();
        let scrape_ns = now_ns();
        let result = tokio::select! {
            r = scrape_once(&client, &target) => r,
            () = cancel.cancelled() => return,
        };
        let duration = began.elapsed().as_secs_f64();
        stats.scrapes.add(1);
        let (exposition, report) = match result {
            Ok(e) => {
                if failures > 0 {
                    tracing::info!(job = %target.job, target = %target.url, failures, "scrape target is back");
                }
                failures = 0;
                let samples = e.sample_count() as u64;
                stats.scrape_samples.add(samples);
                if e.duplicates > 0 {
                    tracing::debug!(job = %target.job, target = %target.url, duplicates = e.duplicates, "scrape had duplicate samples; kept the first of each");
                }
                (
                    Some(e),
                    convert::Report {
                        up: true,
                        duration_seconds: duration,
                        samples,
                    },
                )
            }
            Err(e) => {
                stats.scrapes_failed.add(1);
                if failures.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(job = %target.job, target = %target.url, error = %e, consecutive_failures = failures + 1, "scrape failed");
                }
                failures += 1;
                (
                    None,
                    convert::Report {
                        up: false,
                        duration_seconds: duration,
                        samples: 0,
                    },
                )
            }
        };
        crate::selfmetrics::scrape_observed(
            &target.job,
            &target.address,
            report.up,
            report.duration_seconds,
        );
        let t = target.clone();
        let converted = tokio::task::spawn_blocking(move || {
            let c = convert::convert(
                exposition.as_ref(),
                &t,
                report,
                start_ns,
                scrape_ns,
                batch_max_bytes,
            );
            let bodies: Vec<Vec<u8>> = c.requests.iter().map(|r| r.encode_to_vec()).collect();
            (bodies, c.invalid)
        })
        .await;
        let Ok((bodies, invalid)) = converted else {
            tracing::error!(job = %target.job, "scrape conversion panicked; stopping this target");
            return;
        };
        if invalid > 0 {
            tracing::debug!(job = %target.job, target = %target.url, invalid, "histogram or summary series dropped as invalid");
        }
        for body in bodies {
            // While the queue cannot write (a full disk), this scrape waits and the
            // next ones are not taken.
            tokio::select! {
                pushed = queue.push_patiently("scrape", &cancel, Kind::Metrics, &[], &body, false) => {
                    match pushed {
                        Ok(_) | Err(QueueError::Cancelled) => {}
                        Err(e) => {
                            tracing::error!(job = %target.job, error = %e, "cannot queue scraped metrics; stopping this target");
                            return;
                        }
                    }
                }
                () = cancel.cancelled() => return,
            }
        }
    }
}
