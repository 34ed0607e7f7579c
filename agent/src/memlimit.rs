//! `limits.max_memory_mib`: when the agent's resident memory is over the cap, the
//! sources pause instead of the process growing — the file tailer stops reading (its
//! offsets stay put, the lines wait in the files), the journald source stops reading
//! (its cursor stays put), scrapes are skipped, and the local OTLP receiver answers
//! UNAVAILABLE / 503 with a retry delay, which OTLP senders retry. They resume once the
//! RSS is under the cap again. The exporter keeps draining the queue meanwhile.
//!
//! The state is `Stats::memory_over_limit` (1 while paused), so every source checks it
//! through the handle it already holds and `/metrics` shows it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// How often the RSS is read: a `/proc/self/statm` read costs microseconds, and half a
/// second is short next to how fast a backlog can grow the heap.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Whether the sources must pause now.
pub(crate) fn paused(stats: &Stats) -> bool {
    stats.memory_over_limit.get() > 0
}

/// One reading now (at start-up, before the sources run).
pub(crate) fn check(limit_bytes: u64, stats: &Stats) {
    if let Some(rss) = crate::selfmetrics::process_rss_bytes() {
        update(stats, rss, limit_bytes);
    }
}

/// Watches the RSS until cancelled.
pub(crate) async fn run(limit_bytes: u64, stats: Arc<Stats>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let Some(rss) = crate::selfmetrics::process_rss_bytes() else {
            continue;
        };
        update(&stats, rss, limit_bytes);
    }
}

/// One reading: pauses above the limit, resumes at or under it.
fn update(stats: &Stats, rss: u64, limit: u64) {
    let was = paused(stats);
    if !was && rss > limit {
        stats.memory_over_limit.set(1);
        stats.memory_pauses.add(1);
        tracing::warn!(
            rss_bytes = rss,
            limit_bytes = limit,
            "memory over limits.max_memory_mib: sources paused"
        );
    } else if was && rss <= limit {
        stats.memory_over_limit.set(0);
        tracing::info!(
            rss_bytes = rss,
            limit_bytes = limit,
            "memory under the limit again: sources resumed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_over_and_resumes_under_counting_each_pause() {
        let s = Stats::default();
        update(&s, 10, 100);
        assert!(!paused(&s));
        update(&s, 101, 100);
        assert!(paused(&s));
        update(&s, 150, 100);
        assert_eq!(s.memory_pauses.get(), 1, "one pause, however long");
        update(&s, 100, 100);
        assert!(!paused(&s));
        update(&s, 200, 100);
        assert_eq!(s.memory_pauses.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_below_the_process_pauses_at_once() {
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(1, stats.clone(), cancel.clone()));
        tokio::time::sleep(CHECK_INTERVAL * 2).await;
        assert!(paused(&stats));
        cancel.cancel();
        task.await.unwrap();
    }
}
