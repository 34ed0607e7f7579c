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
//!   dictionary, not one per commit, and searches open one segment. A segment much larger
//!   than the small ones beside it waits until they have grown (see `worth_merging`).
//!
//! [`LogStoreOptions::compact_quiet_after`]: super::LogStoreOptions::compact_quiet_after

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tantivy::index::{SegmentId, SegmentMeta};
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};
use tantivy::{FutureResult, Index, IndexWriter};

/// Segments of a size merged at once while a partition takes records. 16 instead of
/// Tantivy's 8: a record is merged about log16 instead of log8 times on its way to a
/// full-size segment (measured: a third less merge CPU), for up to 15 instead of 7
/// segments per size class between merges.
pub(crate) const MERGE_FACTOR: usize = 16;

/// Default quiet time after which a partition's small segments are merged into one.
pub const DEFAULT_COMPACT_QUIET_AFTER: Duration = Duration::from_secs(60);

/// The most records one merge may produce. Lucene's TieredMergePolicy caps merges the
/// same way (by the merged size). Tantivy's LogMergePolicy only stops merging segments
/// over 10 M, so a merge could take 16 segments just under 10 M (~160 M records) at rates
/// where the sizes fall so; one of 30 M held ~620 MiB more memory and 5.6 GiB more disk
/// for minutes in the soak. Of a merge over the cap only the largest segments that fit
/// under it are merged (see `first_run`), so the segments of a busy partition end at
/// 16–32 M records.
pub(crate) const MAX_MERGED_DOCS: u64 = 32_000_000;

/// Segments with more than this many documents are left out of a quiet compaction: they
/// are the merge policy's big merges already, and rewriting them would cost as much as
/// indexing them again. What is merged is the tail of small ones.
pub(crate) const COMPACT_BELOW_DOCS: u32 = 2_000_000;

/// A segment is left out of a quiet compaction while it holds more than this many times
/// the documents of the other small segments together.
const JOIN_RATIO: u64 = 2;

/// Which of the small segments `(id, documents)` to merge: all of them, less the largest
/// while it holds more than [`JOIN_RATIO`] times the rest. A partition that takes a few
/// records every few minutes would otherwise rewrite its whole compacted segment for each
/// one (once per quiet period, all day); this way a segment is rewritten only when the
/// merge grows it by half, so each record a logarithmic number of times. A burst's
/// commits (similar sizes, whatever the last one holds) are all merged.
fn worth_merging<I>(mut small: Vec<(I, u32)>) -> Vec<I> {
    small.sort_by_key(|&(_, docs)| docs);
    let mut rest: u64 = small.iter().map(|&(_, docs)| u64::from(docs)).sum();
    while small.len() >= 2 {
        let largest = u64::from(small[small.len() - 1].1);
        rest -= largest;
        if largest <= JOIN_RATIO * rest {
            break;
        }
        small.pop();
    }
    small.into_iter().map(|(id, _)| id).collect()
}

/// The merge policy of every partition writer.
pub(crate) fn merge_policy() -> Box<dyn MergePolicy> {
    let mut log = LogMergePolicy::default();
    log.set_min_num_segments(MERGE_FACTOR);
    // A segment over half the cap cannot be merged with one of its size under it.
    log.set_max_docs_before_merge((MAX_MERGED_DOCS / 2) as usize);
    Box::new(CappedMergePolicy { log })
}

/// Tantivy's LogMergePolicy (segments of a size, [`MERGE_FACTOR`] at a time) with each
/// merge it proposes cut to stay under [`MAX_MERGED_DOCS`].
#[derive(Debug)]
struct CappedMergePolicy {
    log: LogMergePolicy,
}

impl MergePolicy for CappedMergePolicy {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        let docs = |id: &SegmentId| {
            segments
                .iter()
                .find(|m| m.id() == *id)
                .map_or(0, |m| m.num_docs())
        };
        self.log
            .compute_merge_candidates(segments)
            .into_iter()
            .filter_map(|c| first_run(c.0.into_iter().map(|id| (id, docs(&id))).collect()))
            .map(MergeCandidate)
            .collect()
    }
}

/// Of one proposed merge `(id, documents)`, largest first: the leading segments that
/// hold at most [`MAX_MERGED_DOCS`] together, if that is two or more. Only one run, not
/// all of them: the merge threads run merges at once, and the soak measured 2 GiB of
/// anonymous memory when one level of 16 × ~5.8 M was split into four merges that ran
/// together. The rest of the level waits until it is full again.
fn first_run<I>(segments: Vec<(I, u32)>) -> Option<Vec<I>> {
    let mut run: Vec<I> = Vec::new();
    let mut run_docs = 0u64;
    for (id, docs) in segments {
        if !run.is_empty() && run_docs + u64::from(docs) > MAX_MERGED_DOCS {
            break;
        }
        run.push(id);
        run_docs += u64::from(docs);
    }
    (run.len() >= 2).then_some(run)
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
                .map(|m| (m.id(), m.num_docs()))
                .collect();
            let small = worth_merging(small);
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

#[cfg(test)]
mod tests {
    use tantivy::schema::Schema;

    use super::*;

    /// What the partition writers' policy merges among segments of these sizes: the
    /// sizes of each merge.
    fn policy_merges(sizes: &[u32]) -> Vec<Vec<u32>> {
        let index = Index::create_in_ram(Schema::builder().build());
        let metas: Vec<SegmentMeta> = sizes
            .iter()
            .map(|&docs| index.new_segment_meta(SegmentId::generate_random(), docs))
            .collect();
        let size_of = |id| metas.iter().find(|m| m.id() == id).map(|m| m.num_docs());
        merge_policy()
            .compute_merge_candidates(&metas)
            .into_iter()
            .map(|c| {
                let mut sizes: Vec<u32> = c.0.into_iter().filter_map(size_of).collect();
                sizes.sort_unstable();
                sizes
            })
            .collect()
    }

    #[test]
    fn segments_of_a_size_merge_sixteen_at_a_time() {
        assert!(policy_merges(&[75_000; 15]).is_empty());
        assert_eq!(policy_merges(&[75_000; 16]), vec![vec![75_000; 16]]);
        // The soak's largest: 16 of ~1.9 M into ~30 M, under the cap.
        assert_eq!(policy_merges(&[1_900_000; 16]), vec![vec![1_900_000; 16]]);
    }

    /// Tantivy's policy alone would merge these 16 into one of 80 M records: the largest
    /// that fit under the cap are merged, one merge at a time.
    #[test]
    fn of_a_merge_over_the_cap_the_largest_that_fit_are_merged() {
        assert_eq!(policy_merges(&[5_000_000; 16]), vec![vec![5_000_000; 6]]);
        let mut level = vec![7_000_000, 6_500_000];
        level.extend([5_800_000; 14]);
        assert_eq!(
            policy_merges(&level),
            vec![vec![5_800_000, 5_800_000, 5_800_000, 6_500_000, 7_000_000]]
        );
        assert_eq!(policy_merges(&[2_100_000; 16]), vec![vec![2_100_000; 15]]);
        for merge in policy_merges(&[9_999_999; 20]) {
            let docs: u64 = merge.iter().map(|&d| u64::from(d)).sum();
            assert!(merge.len() >= 2 && docs <= MAX_MERGED_DOCS, "{merge:?}");
        }
    }

    /// Segments of more than half the cap are final, and the small ones beside them
    /// still merge among themselves.
    #[test]
    fn segments_over_half_the_cap_are_merged_no_further() {
        let half = (MAX_MERGED_DOCS / 2) as u32;
        assert!(policy_merges(&[half + 1; 16]).is_empty());
        let mut sizes = vec![20_000_000; 20];
        sizes.extend([100_000; 16]);
        assert_eq!(policy_merges(&sizes), vec![vec![100_000; 16]]);
    }

    #[test]
    fn equal_segments_are_merged_together() {
        assert_eq!(worth_merging(vec![(1, 5), (2, 5), (3, 5)]), vec![1, 2, 3]);
        assert_eq!(
            worth_merging(vec![(1, 2), (2, 1), (3, 2), (4, 2)]),
            vec![2, 1, 3, 4]
        );
    }

    #[test]
    fn a_large_segment_waits_for_the_small_ones_to_grow() {
        // A compacted day and one new commit: nothing worth merging.
        assert_eq!(worth_merging(vec![(1, 100_000), (2, 3)]), vec![2]);
        // Three small ones merge among themselves; the large one stays out.
        assert_eq!(
            worth_merging(vec![(1, 100_000), (2, 3), (3, 3), (4, 3)]),
            vec![2, 3, 4]
        );
        // A burst's commits and the small last one: all of them.
        let burst: Vec<(u32, u32)> = (1..14).map(|i| (i, 75_000)).chain([(0, 5_000)]).collect();
        assert_eq!(worth_merging(burst), (0..14).collect::<Vec<u32>>());
        // Once they hold half as much as it does, it joins.
        assert_eq!(worth_merging(vec![(1, 100), (2, 50)]), vec![2, 1]);
        assert_eq!(worth_merging(vec![(1, 101), (2, 50)]), vec![2]);
    }

    /// One record every quiet period for a day: each record is rewritten a few times,
    /// not once per later quiet period.
    #[test]
    fn sporadic_records_are_rewritten_a_logarithmic_number_of_times() {
        let mut segments: Vec<u32> = Vec::new();
        let mut rewritten = 0u64;
        // Each quiet period's commit: a segment of one record, merged as the policy says
        // before the next arrives (the lint misses that `segments` changes in between).
        #[allow(clippy::same_item_push)]
        for _ in 0..1_000 {
            segments.push(1);
            let chosen = worth_merging(segments.iter().copied().enumerate().collect());
            if chosen.len() >= 2 {
                let merged: u32 = chosen.iter().map(|&i| segments[i]).sum();
                rewritten += u64::from(merged);
                let mut rest: Vec<u32> = segments
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !chosen.contains(i))
                    .map(|(_, &d)| d)
                    .collect();
                rest.push(merged);
                segments = rest;
            }
        }
        assert_eq!(segments.iter().sum::<u32>(), 1_000);
        // Merging everything each time would rewrite ~500,000 records; this ~8 per record.
        assert!(rewritten < 20_000, "rewritten {rewritten}");
        assert!(segments.len() <= 12, "{segments:?}");
    }
}
