//! How a partition's segments are merged: while it takes records, and once it is quiet.
//!
//! Every commit (each second under load) leaves a new segment per indexing thread, and
//! merging them back is a sixth of the collector's CPU under sustained ingest. Two
//! choices keep that down without leaving a partition in many pieces:
//! - while records arrive, merge only when [`MERGE_FACTOR`] segments of a size have
//!   piled up (Tantivy's default is 8): each record is rewritten fewer times;
//! - once a partition has taken nothing for [`LogStoreOptions::compact_quiet_after`]
//!   (yesterday's partition after midnight, a tenant that went quiet), its small segments
//!   are merged into one, so what stays on disk for the retention period has one term
//!   dictionary, not one per commit, and searches open one segment.
//!
//! [`LogStoreOptions::compact_quiet_after`]: super::LogStoreOptions::compact_quiet_after

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tantivy::index::SegmentMeta;
use tantivy::indexer::{LogMergePolicy, MergePolicy};
use tantivy::{FutureResult, Index, IndexWriter};

/// Segments of a size merged at once while a partition takes records. 16 instead of
/// Tantivy's 8: a record is merged about log16 instead of log8 times on its way to a
/// full-size segment (measured: a third less merge CPU), for up to 15 instead of 7
/// segments per size class between merges.
pub(crate) const MERGE_FACTOR: usize = 16;

/// Default quiet time after which a partition's small segments are merged into one.
pub const DEFAULT_COMPACT_QUIET_AFTER: Duration = Duration::from_secs(60);

/// Segments with at least this many documents are left out of a quiet compaction: they
/// are the merge policy's big merges already, and rewriting them would cost as much as
/// indexing them again. What is merged is the tail of small ones.
pub(crate) const COMPACT_BELOW_DOCS: u32 = 2_000_000;

/// The merge policy of every partition writer.
pub(crate) fn merge_policy() -> Box<dyn MergePolicy> {
    let mut policy = LogMergePolicy::default();
    policy.set_min_num_segments(MERGE_FACTOR);
    Box::new(policy)
}

/// Where a partition writer is in its quiet compaction.
#[derive(Default)]
pub(crate) enum Compaction {
    /// Records arrived since the last compaction (or none was needed yet).
    #[default]
    Waiting,
    /// A merge of the small segments runs on Tantivy's merge threads.
    Merging(FutureResult<Option<SegmentMeta>>),
    /// Compacted, or nothing to compact; stays so until records arrive.
    Done,
}

/// What [`step`] did, for the caller to act on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to do now.
    Idle,
    /// A merge of this many segments was started.
    Started(usize),
    /// The merge finished: the partition's reader must reload to see it (and to let go
    /// of the files of the segments it replaced).
    Finished,
}

/// Advances the quiet compaction of one partition writer whose last record arrived at
/// `last_added` and whose records are all committed.
pub(crate) fn step(
    state: &mut Compaction,
    index: &Index,
    writer: &mut IndexWriter<impl tantivy::Document>,
    last_added: Instant,
    quiet_after: Duration,
    now: Instant,
) -> tantivy::Result<Step> {
    match state {
        Compaction::Done => Ok(Step::Idle),
        Compaction::Waiting => {
            if now.saturating_duration_since(last_added) < quiet_after {
                return Ok(Step::Idle);
            }
            let small: Vec<_> = index
                .searchable_segment_metas()?
                .into_iter()
                .filter(|m| m.num_docs() < COMPACT_BELOW_DOCS)
                .map(|m| m.id())
                .collect();
            if small.len() < 2 {
                *state = Compaction::Done;
                return Ok(Step::Idle);
            }
            *state = Compaction::Merging(writer.merge(&small));
            Ok(Step::Started(small.len()))
        }
        Compaction::Merging(merge) => {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(merge).poll(&mut cx) {
                Poll::Pending => Ok(Step::Idle),
                Poll::Ready(result) => {
                    // Failed or not, no retry before records arrive again: a merge that
                    // failed once (a policy merge took one of its segments) is not
                    // worth a loop; the partition stays searchable either way.
                    *state = Compaction::Done;
                    result.map(|_| Step::Finished)
                }
            }
        }
    }
}
