//! Searches that give up: a deadline, and a flag raised when the asker has gone away.
//!
//! Tantivy runs a query to the end once it has started, and a broad query over weeks of
//! logs (`*` with a histogram, a common word) reads every matching document. Without a
//! bound, one such search holds a core for as long as it takes, and one whose client
//! has long disconnected still does. [`Deadline`] is checked while the query's documents
//! are read: at each segment, and every [`CHECK_EVERY_DOCS`] documents inside
//! one. A search that ran out of time or was cancelled returns an error, never partial
//! results presented as complete.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tantivy::query::{EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{COLLECT_BLOCK_BUFFER_LEN, DocId, DocSet, Score, SegmentReader, TERMINATED};

/// Documents read between two looks at the clock: microseconds of work, so the check
/// costs nothing measurable and a search overruns its deadline by well under a
/// millisecond once inside a segment.
const CHECK_EVERY_DOCS: i32 = 1024;

/// Why a search stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Its time ran out.
    Timeout,
    /// Its caller cancelled it (the client went away).
    Cancelled,
}

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const CANCELLED: u8 = 2;

struct State {
    at: Option<Instant>,
    budget: Duration,
    /// [`RUNNING`], or why the search must stop; set once, by whoever sees it first.
    stop: AtomicU8,
}

/// When a search must stop. Clones share the state: the API keeps one to cancel, the
/// search checks another.
#[derive(Clone)]
pub struct Deadline(Arc<State>);

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("budget", &self.0.budget)
            .field("stop", &self.stopped())
            .finish()
    }
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline::none()
    }
}

impl Deadline {
    /// No time limit; still cancellable.
    pub fn none() -> Self {
        Deadline(Arc::new(State {
            at: None,
            budget: Duration::MAX,
            stop: AtomicU8::new(RUNNING),
        }))
    }

    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline::starting(Instant::now(), budget)
    }

    /// `budget` from `start` (when the request arrived, so the wait for a search slot
    /// counts against it).
    pub fn starting(start: Instant, budget: Duration) -> Self {
        Deadline(Arc::new(State {
            at: start.checked_add(budget),
            budget,
            stop: AtomicU8::new(RUNNING),
        }))
    }

    /// The time the search was given ([`Duration::MAX`] without a limit).
    pub fn budget(&self) -> Duration {
        self.0.budget
    }

    /// Time left before the deadline (`None`: no limit).
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Tells the search to stop at its next check.
    pub fn cancel(&self) {
        let _ =
            self.0
                .stop
                .compare_exchange(RUNNING, CANCELLED, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Why the search must stop, if it must.
    pub fn stopped(&self) -> Option<Stop> {
        match self.0.stop.load(Ordering::Relaxed) {
            TIMED_OUT => Some(Stop::Timeout),
            CANCELLED => Some(Stop::Cancelled),
            _ => None,
        }
    }

    /// Looks at the clock: `Err` once the deadline has passed or the search was cancelled.
    pub fn check(&self) -> Result<(), Stop> {
        if let Some(stop) = self.stopped() {
            return Err(stop);
        }
        if self.0.at.is_some_and(|at| Instant::now() >= at) {
            let _ = self.0.stop.compare_exchange(
                RUNNING,
                TIMED_OUT,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return Err(self.stopped().unwrap_or(Stop::Timeout));
        }
        Ok(())
    }

    /// `query`, reading its documents only while this deadline holds. Once it stops
    /// matching early, [`Deadline::stopped`] says why and the result must be discarded.
    pub(crate) fn wrap(&self, query: Box<dyn Query>) -> Box<dyn Query> {
        Box::new(DeadlineQuery {
            inner: query,
            deadline: self.clone(),
        })
    }
}

/// Raises the cancel flag of a [`Deadline`] when dropped: held by a request handler, it
/// cancels the search when the client disconnects and the handler is dropped.
pub struct CancelOnDrop(pub Deadline);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[derive(Debug)]
struct DeadlineQuery {
    inner: Box<dyn Query>,
    deadline: Deadline,
}

impl Clone for DeadlineQuery {
    fn clone(&self) -> Self {
        DeadlineQuery {
            inner: self.inner.box_clone(),
            deadline: self.deadline.clone(),
        }
    }
}

impl Query for DeadlineQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(DeadlineWeight {
            inner: self.inner.weight(enable_scoring)?,
            deadline: self.deadline.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a tantivy::Term, bool)) {
        self.inner.query_terms(visitor);
    }
}

struct DeadlineWeight {
    inner: Box<dyn Weight>,
    deadline: Deadline,
}

// Only `scorer` (and `count`) are implemented: Tantivy's default `for_each*` read the
// documents through `scorer`, so every collector goes through `DeadlineScorer`.
impl Weight for DeadlineWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        if self.deadline.check().is_err() {
            return Ok(Box::new(EmptyScorer));
        }
        Ok(Box::new(DeadlineScorer {
            inner: self.inner.scorer(reader, boost)?,
            deadline: self.deadline.clone(),
            countdown: CHECK_EVERY_DOCS,
            stopped: false,
        }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }

    /// The inner query's count, checked per segment: terms and match-all count without
    /// reading their documents, which a count through the scorer would give up.
    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        if self.deadline.check().is_err() {
            return Ok(0);
        }
        self.inner.count(reader)
    }
}

/// The inner scorer until the deadline passes, then an exhausted one.
struct DeadlineScorer {
    inner: Box<dyn Scorer>,
    deadline: Deadline,
    /// Documents left to read until the next look at the clock.
    countdown: i32,
    stopped: bool,
}

impl DeadlineScorer {
    /// Whether to go on reading `docs` more documents; counts down to a look at the clock.
    fn go_on(&mut self, docs: i32) -> bool {
        if self.stopped {
            return false;
        }
        self.countdown -= docs;
        if self.countdown <= 0 {
            self.countdown = CHECK_EVERY_DOCS;
            if self.deadline.check().is_err() {
                self.stopped = true;
                return false;
            }
        }
        true
    }
}

impl DocSet for DeadlineScorer {
    fn advance(&mut self) -> DocId {
        if !self.go_on(1) {
            return TERMINATED;
        }
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if !self.go_on(1) {
            return TERMINATED;
        }
        self.inner.seek(target)
    }

    fn fill_buffer(&mut self, buffer: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN]) -> usize {
        if !self.go_on(COLLECT_BLOCK_BUFFER_LEN as i32) {
            return 0;
        }
        self.inner.fill_buffer(buffer)
    }

    fn doc(&self) -> DocId {
        if self.stopped {
            TERMINATED
        } else {
            self.inner.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for DeadlineScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
    use tantivy::query::{AllQuery, TermQuery};
    use tantivy::schema::{FAST, IndexRecordOption, STRING, Schema};
    use tantivy::{Index, IndexWriter, Order, TantivyDocument, Term};

    use super::*;

    const DOCS: u64 = 50_000;

    /// One segment of `DOCS` documents; every tenth has `kind:rare`.
    fn index() -> (Index, tantivy::schema::Field) {
        let mut b = Schema::builder();
        let n = b.add_u64_field("n", FAST);
        let kind = b.add_text_field("kind", STRING);
        let index = Index::create_in_ram(b.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 32_000_000).unwrap();
        for i in 0..DOCS {
            let mut doc = TantivyDocument::new();
            doc.add_u64(n, i);
            doc.add_text(kind, if i % 10 == 0 { "rare" } else { "common" });
            writer.add_document(doc).unwrap();
        }
        writer.commit().unwrap();
        (index, kind)
    }

    /// Counts what it is given, and cancels `deadline` after `cancel_after` documents.
    struct CancellingCount {
        deadline: Deadline,
        cancel_after: u64,
    }

    struct CancellingSegment {
        deadline: Deadline,
        cancel_after: u64,
        seen: u64,
    }

    impl Collector for CancellingCount {
        type Fruit = u64;
        type Child = CancellingSegment;

        fn for_segment(&self, _: u32, _: &SegmentReader) -> tantivy::Result<CancellingSegment> {
            Ok(CancellingSegment {
                deadline: self.deadline.clone(),
                cancel_after: self.cancel_after,
                seen: 0,
            })
        }

        fn requires_scoring(&self) -> bool {
            false
        }

        fn merge_fruits(&self, fruits: Vec<u64>) -> tantivy::Result<u64> {
            Ok(fruits.into_iter().sum())
        }
    }

    impl SegmentCollector for CancellingSegment {
        type Fruit = u64;

        fn collect(&mut self, _: DocId, _: Score) {
            self.seen += 1;
            if self.seen == self.cancel_after {
                self.deadline.cancel();
            }
        }

        fn harvest(self) -> u64 {
            self.seen
        }
    }

    #[test]
    fn a_search_within_its_time_finds_everything() {
        let (index, kind) = index();
        let searcher = index.reader().unwrap().searcher();
        let deadline = Deadline::after(Duration::from_secs(600));
        let all = deadline.wrap(Box::new(AllQuery));
        let rare = deadline.wrap(Box::new(TermQuery::new(
            Term::from_field_text(kind, "rare"),
            IndexRecordOption::Basic,
        )));
        assert_eq!(searcher.search(&all, &Count).unwrap(), DOCS as usize);
        assert_eq!(searcher.search(&rare, &Count).unwrap(), DOCS as usize / 10);
        let (count, top) = searcher
            .search(
                &rare,
                &(
                    Count,
                    TopDocs::with_limit(3).order_by_fast_field::<u64>("n", Order::Desc),
                ),
            )
            .unwrap();
        assert_eq!(count, DOCS as usize / 10);
        let newest: Vec<_> = top.into_iter().map(|(n, _)| n).collect();
        assert_eq!(newest, vec![Some(49_990), Some(49_980), Some(49_970)]);
        let never = CancellingCount {
            deadline: Deadline::none(),
            cancel_after: u64::MAX,
        };
        assert_eq!(searcher.search(&all, &never).unwrap(), DOCS);
        assert_eq!(deadline.stopped(), None);
    }

    #[test]
    fn a_cancelled_search_stops_inside_the_segment() {
        let (index, _) = index();
        let searcher = index.reader().unwrap().searcher();
        let deadline = Deadline::none();
        let all = deadline.wrap(Box::new(AllQuery));
        let collector = CancellingCount {
            deadline: deadline.clone(),
            cancel_after: 100,
        };
        let seen = searcher.search(&all, &collector).unwrap();
        // Stopped at the next look at the clock, long before the segment's end.
        assert!(
            (100..=100 + CHECK_EVERY_DOCS as u64 + 64).contains(&seen),
            "read {seen} documents after cancelling at 100"
        );
        assert_eq!(deadline.stopped(), Some(Stop::Cancelled));
        assert_eq!(deadline.check(), Err(Stop::Cancelled));
    }

    #[test]
    fn single_advances_are_counted_too() {
        let (index, _) = index();
        let searcher = index.reader().unwrap().searcher();
        let deadline = Deadline::none();
        let weight = deadline
            .wrap(Box::new(AllQuery))
            .weight(tantivy::query::EnableScoring::disabled_from_searcher(
                &searcher,
            ))
            .unwrap();
        let mut scorer = weight.scorer(searcher.segment_reader(0), 1.0).unwrap();
        let mut read = 0u64;
        while scorer.doc() != TERMINATED {
            read += 1;
            if read == 10 {
                deadline.cancel();
            }
            scorer.advance();
        }
        assert!(read <= 10 + CHECK_EVERY_DOCS as u64, "read {read}");
        assert_eq!(scorer.advance(), TERMINATED);
    }

    #[test]
    fn a_search_past_its_deadline_reads_nothing() {
        let (index, _) = index();
        let searcher = index.reader().unwrap().searcher();
        let deadline = Deadline::after(Duration::ZERO);
        let all = deadline.wrap(Box::new(AllQuery));
        let never = CancellingCount {
            deadline: Deadline::none(),
            cancel_after: u64::MAX,
        };
        assert_eq!(searcher.search(&all, &never).unwrap(), 0);
        assert_eq!(searcher.search(&all, &Count).unwrap(), 0);
        assert_eq!(deadline.stopped(), Some(Stop::Timeout));
        // A cancel after the timeout does not change why it stopped.
        deadline.cancel();
        assert_eq!(deadline.stopped(), Some(Stop::Timeout));
    }

    #[test]
    fn cancel_on_drop_cancels() {
        let deadline = Deadline::after(Duration::from_secs(60));
        assert!(
            deadline
                .remaining()
                .is_some_and(|left| left > Duration::from_secs(50))
        );
        drop(CancelOnDrop(deadline.clone()));
        assert_eq!(deadline.check(), Err(Stop::Cancelled));
        assert_eq!(Deadline::none().remaining(), None);
    }
}
