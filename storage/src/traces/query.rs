//! Reading the span store: a trace by id (tree order), trace search, services and
//! operations (term dictionary walks), and the service dependency map.
//!
//! Every read is bounded: a trace returns at most [`MAX_TRACE_SPANS`] spans, a search
//! looks at the [`MAX_SEARCH_SPANS`] most recent matching spans, and the dependency map
//! at the [`MAX_DEPENDENCY_SPANS`] most recent spans of its range.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use prost::Message as _;
use tantivy::collector::{Count, TopDocs};
use tantivy::columnar::Column;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, Span};

use super::TraceStore;
use super::partition::PartitionReader;
use super::schema::{self, STATUS_ERROR, names, operation_term, trace_id_bytes};

/// Most spans one trace lookup returns (the earliest by start time). A bigger trace
/// comes back with its first spans and `truncated` set: a trace of more spans than this
/// is beyond what a waterfall view can show anyway.
pub const MAX_TRACE_SPANS: usize = 10_000;
/// Most traces one search returns.
pub const MAX_SEARCH_LIMIT: usize = 1_000;
/// Matching spans a search looks at, most recent first, to find its traces: a search
/// whose matches belong to fewer than `limit` traces among these returns fewer.
pub const MAX_SEARCH_SPANS: usize = 20_000;
/// Most spans one search returns over all its traces (and so holds in memory): a search
/// stops adding traces once this many spans are in hand (it always returns at least
/// one), so `limit` traces of `MAX_TRACE_SPANS` each cannot all be loaded at once.
pub const MAX_SEARCH_RESULT_SPANS: usize = 100_000;
/// Most bytes of stored spans one trace lookup returns (its first spans, `truncated`
/// set), and one search over all its traces (it stops adding traces past it, and always
/// returns at least one): spans carrying SQL statements or payloads would otherwise be
/// held in memory several times over while they are decoded and rendered.
pub const MAX_TRACE_BYTES: usize = 32 << 20;
/// Spans the dependency map reads per request, most recent first (columns only, no doc
/// store); with `truncated` set when the range holds more.
pub const MAX_DEPENDENCY_SPANS: usize = 200_000;

/// One stored span with its resource and scope, exactly as received.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSpan {
    /// The resource the span came from.
    pub resource: Resource,
    /// Its instrumentation scope.
    pub scope: InstrumentationScope,
    /// The span.
    pub span: Span,
    /// Depth in the trace tree (0 for roots); set by a trace lookup.
    pub depth: usize,
}

impl StoredSpan {
    /// The emitting service.
    pub fn service_name(&self) -> &str {
        schema::service_name(&self.resource)
    }

    fn decode(bytes: &[u8]) -> Result<Self, tantivy::TantivyError> {
        let envelope = ResourceSpans::decode(bytes).map_err(|e| {
            tantivy::TantivyError::InternalError(format!("stored span does not decode: {e}"))
        })?;
        let resource = envelope.resource.unwrap_or_default();
        let Some(ss) = envelope.scope_spans.into_iter().next() else {
            return Err(tantivy::TantivyError::InternalError(
                "stored span envelope holds no span".into(),
            ));
        };
        let scope = ss.scope.unwrap_or_default();
        let Some(span) = ss.spans.into_iter().next() else {
            return Err(tantivy::TantivyError::InternalError(
                "stored span envelope holds no span".into(),
            ));
        };
        Ok(StoredSpan {
            resource,
            scope,
            span,
            depth: 0,
        })
    }
}

/// A whole trace (or its first [`MAX_TRACE_SPANS`] spans).
#[derive(Clone, Debug)]
pub struct Trace {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// Spans in tree order: parents before children, siblings by start time; spans
    /// whose parent is missing are roots.
    pub spans: Vec<StoredSpan>,
    /// Spans stored for the trace, returned or not.
    pub total_spans: u64,
    /// Spans with status error, returned or not.
    pub error_spans: u64,
    /// Whether `spans` holds fewer than `total_spans`.
    pub truncated: bool,
    /// Bytes of the stored form of `spans`, for [`MAX_TRACE_BYTES`].
    pub stored_bytes: usize,
}

/// What a trace search returns per trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSummary {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// Service of the root span (the earliest span without a parent in the trace, else
    /// the earliest span).
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest start, ns.
    pub start_ns: i64,
    /// Latest end minus earliest start, ns.
    pub duration_ns: i64,
    /// Spans stored for the trace.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Services in the trace, sorted.
    pub services: Vec<String>,
}

impl Trace {
    /// The summary of this trace.
    pub fn summary(&self) -> TraceSummary {
        let start = self
            .spans
            .iter()
            .map(|s| schema::clamp_ns(s.span.start_time_unix_nano))
            .min()
            .unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| schema::clamp_ns(s.span.end_time_unix_nano))
            .max()
            .unwrap_or(start);
        let root = self
            .spans
            .iter()
            .filter(|s| s.depth == 0 && s.span.parent_span_id.iter().all(|&b| b == 0))
            .min_by_key(|s| s.span.start_time_unix_nano)
            .or_else(|| {
                self.spans
                    .iter()
                    .min_by_key(|s| s.span.start_time_unix_nano)
            });
        let services: BTreeSet<&str> = self.spans.iter().map(StoredSpan::service_name).collect();
        TraceSummary {
            trace_id: self.trace_id,
            root_service: root
                .map(|s| s.service_name().to_string())
                .unwrap_or_default(),
            root_name: root.map(|s| s.span.name.clone()).unwrap_or_default(),
            start_ns: start,
            duration_ns: end.saturating_sub(start).max(0),
            span_count: self.total_spans,
            error_count: self.error_spans,
            services: services.into_iter().map(str::to_string).collect(),
        }
    }
}

/// Which status a search wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// Status unset (code 0).
    Unset,
    /// Status ok (code 1).
    Ok,
    /// Status error (code 2).
    Error,
}

impl StatusFilter {
    fn code(self) -> i64 {
        match self {
            StatusFilter::Unset => 0,
            StatusFilter::Ok => 1,
            StatusFilter::Error => 2,
        }
    }
}

/// A trace search: traces with at least one span matching every condition.
#[derive(Clone, Debug)]
pub struct TraceQuery {
    /// Tenant whose partitions are searched; nothing else is ever opened.
    pub tenant: String,
    /// The span's service.
    pub service: Option<String>,
    /// The span's name.
    pub operation: Option<String>,
    /// The span's kind (OTLP number).
    pub kind: Option<i32>,
    /// Span or resource attributes, each `key` with exactly `value` (text form).
    pub tags: Vec<(String, String)>,
    /// Shortest span duration, ns (inclusive).
    pub min_duration_ns: Option<i64>,
    /// Longest span duration, ns (inclusive).
    pub max_duration_ns: Option<i64>,
    /// The span's status.
    pub status: Option<StatusFilter>,
    /// Span start at or after, ns.
    pub start_ns: i64,
    /// Span start before, ns.
    pub end_ns: i64,
    /// Most traces to return (1..=MAX_SEARCH_LIMIT), most recent first.
    pub limit: usize,
}

impl TraceQuery {
    /// A search of everything of `tenant` in `[start_ns, end_ns)`.
    pub fn new(tenant: impl Into<String>, start_ns: i64, end_ns: i64, limit: usize) -> Self {
        TraceQuery {
            tenant: tenant.into(),
            service: None,
            operation: None,
            kind: None,
            tags: Vec::new(),
            min_duration_ns: None,
            max_duration_ns: None,
            status: None,
            start_ns,
            end_ns,
            limit,
        }
    }
}

/// One operation of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// OTLP span kind number.
    pub kind: i32,
}

/// One edge of the service map: spans of `child` whose parent span is of `parent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyEdge {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Child spans under a parent of the other service.
    pub call_count: u64,
    /// Of those, spans with status error.
    pub error_count: u64,
}

/// The service map of a time range.
#[derive(Clone, Debug, Default)]
pub struct DependencyMap {
    /// Edges, sorted by parent then child.
    pub edges: Vec<DependencyEdge>,
    /// Spans read.
    pub spans_examined: u64,
    /// Whether the range held more than [`MAX_DEPENDENCY_SPANS`] spans (the oldest were
    /// not read).
    pub truncated: bool,
}

/// Why a trace query failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceQueryError {
    /// A parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// The index failed; details go to the log, not to the client.
    #[error("trace index failure: {0}")]
    Internal(#[from] tantivy::TantivyError),
}

impl TraceStore {
    fn all_readers(&self, tenant: &str) -> Vec<PartitionReader> {
        self.readers_for(tenant, i64::MIN, i64::MAX)
    }

    /// All spans of one trace of `tenant`, in tree order; `None` when there are none.
    pub fn get_trace(
        &self,
        tenant: &str,
        trace_id: &[u8; 16],
    ) -> Result<Option<Trace>, TraceQueryError> {
        let fields = &self.shared.fields;
        let id_term = || {
            TermQuery::new(
                Term::from_field_text(fields.trace_id, &hex::encode(trace_id)),
                IndexRecordOption::Basic,
            )
        };
        let errors = BooleanQuery::new(vec![
            (Occur::Must, Box::new(id_term()) as Box<dyn Query>),
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_i64(fields.status_code, i64::from(STATUS_ERROR)),
                    IndexRecordOption::Basic,
                )),
            ),
        ]);
        let mut total = 0u64;
        let mut error_spans = 0u64;
        let mut candidates: Vec<(i64, usize, DocAddress)> = Vec::new();
        let readers = self.all_readers(tenant);
        let searchers: Vec<Searcher> = readers.iter().map(|r| r.reader.searcher()).collect();
        for (pi, searcher) in searchers.iter().enumerate() {
            let top = TopDocs::with_limit(MAX_TRACE_SPANS)
                .order_by_fast_field::<i64>(names::START, Order::Asc);
            let (count, docs) = searcher.search(&id_term(), &(Count, top))?;
            total += count as u64;
            if count > 0 {
                error_spans += searcher.search(&errors, &Count)? as u64;
            }
            candidates.extend(docs.into_iter().map(|(k, d)| (k.unwrap_or(0), pi, d)));
        }
        if total == 0 {
            return Ok(None);
        }
        candidates.sort_by_key(|c| c.0);
        candidates.truncate(MAX_TRACE_SPANS);
        let mut spans = Vec::with_capacity(candidates.len());
        let mut stored_bytes = 0usize;
        for (_, pi, address) in candidates {
            let (span, bytes) = self.load(&searchers[pi], address)?;
            if !spans.is_empty() && stored_bytes.saturating_add(bytes) > MAX_TRACE_BYTES {
                break;
            }
            stored_bytes += bytes;
            spans.push(span);
        }
        let truncated = (spans.len() as u64) < total;
        Ok(Some(Trace {
            trace_id: *trace_id,
            spans: tree_order(spans),
            total_spans: total,
            error_spans,
            truncated,
            stored_bytes,
        }))
    }

    /// The span at `address`, and the size of its stored form.
    fn load(
        &self,
        searcher: &Searcher,
        address: DocAddress,
    ) -> Result<(StoredSpan, usize), tantivy::TantivyError> {
        let doc: TantivyDocument = searcher.doc(address)?;
        let bytes = doc
            .get_first(self.shared.fields.record)
            .and_then(|v| v.as_bytes())
            .unwrap_or_default();
        Ok((StoredSpan::decode(bytes)?, bytes.len()))
    }

    fn search_query(&self, q: &TraceQuery) -> Box<dyn Query> {
        let f = &self.shared.fields;
        let term =
            |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.start, q.start_ns)),
                Bound::Excluded(Term::from_field_i64(f.start, q.end_ns)),
            )),
        )];
        if let Some(s) = &q.service {
            clauses.push((Occur::Must, term(Term::from_field_text(f.service_name, s))));
        }
        if let Some(o) = &q.operation {
            clauses.push((Occur::Must, term(Term::from_field_text(f.name, o))));
        }
        if let Some(k) = q.kind {
            clauses.push((
                Occur::Must,
                term(Term::from_field_i64(f.kind, i64::from(k))),
            ));
        }
        for (k, v) in &q.tags {
            clauses.push((
                Occur::Must,
                term(Term::from_field_text(f.tag, &format!("{k}={v}"))),
            ));
        }
        if let Some(s) = q.status {
            clauses.push((
                Occur::Must,
                term(Term::from_field_i64(f.status_code, s.code())),
            ));
        }
        if q.min_duration_ns.is_some() || q.max_duration_ns.is_some() {
            let bound = |v: Option<i64>| match v {
                Some(v) => Bound::Included(Term::from_field_i64(f.duration, v)),
                None => Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(q.min_duration_ns),
                    bound(q.max_duration_ns),
                )),
            ));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// Ids of the traces with a span matching `q`, most recent match first.
    pub fn search_trace_ids(&self, q: &TraceQuery) -> Result<Vec<[u8; 16]>, TraceQueryError> {
        if q.limit == 0 || q.limit > MAX_SEARCH_LIMIT {
            return Err(TraceQueryError::BadParameter(format!(
                "limit {} is not between 1 and {MAX_SEARCH_LIMIT}",
                q.limit
            )));
        }
        if q.end_ns <= q.start_ns {
            return Err(TraceQueryError::BadParameter(
                "end must be after start".into(),
            ));
        }
        if let (Some(min), Some(max)) = (q.min_duration_ns, q.max_duration_ns)
            && min > max
        {
            return Err(TraceQueryError::BadParameter(
                "minDuration is over maxDuration".into(),
            ));
        }
        let query = self.search_query(q);
        // (start, trace) of the most recent matching spans of every partition.
        let mut hits: Vec<(i64, [u8; 16])> = Vec::new();
        // Partitions are disjoint days of span start: newest first, each taking what is
        // left of the budget, gives exactly the most recent matches overall.
        for reader in self
            .readers_for(&q.tenant, q.start_ns, q.end_ns)
            .iter()
            .rev()
        {
            let budget = MAX_SEARCH_SPANS.saturating_sub(hits.len());
            if budget == 0 {
                break;
            }
            let searcher = reader.reader.searcher();
            let top =
                TopDocs::with_limit(budget).order_by_fast_field::<i64>(names::START, Order::Desc);
            let docs = searcher.search(&query, &top)?;
            let mut columns: HashMap<u32, (Column<u64>, Column<u64>)> = HashMap::new();
            for (start, address) in docs {
                let (hi, lo) = match columns.entry(address.segment_ord) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let ff = searcher.segment_reader(address.segment_ord).fast_fields();
                        e.insert((ff.u64(names::TRACE_HI)?, ff.u64(names::TRACE_LO)?))
                    }
                };
                let id = trace_id_bytes(
                    hi.first(address.doc_id).unwrap_or(0),
                    lo.first(address.doc_id).unwrap_or(0),
                );
                hits.push((start.unwrap_or(0), id));
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        let mut seen = BTreeSet::new();
        let mut ids = Vec::new();
        for (_, id) in hits.into_iter().take(MAX_SEARCH_SPANS) {
            if seen.insert(id) {
                ids.push(id);
                if ids.len() == q.limit {
                    break;
                }
            }
        }
        Ok(ids)
    }

    /// The traces matching `q`, whole (each bounded by [`MAX_TRACE_SPANS`] and
    /// [`MAX_TRACE_BYTES`], all of them together by [`MAX_SEARCH_RESULT_SPANS`] and
    /// [`MAX_TRACE_BYTES`]).
    pub fn search_traces(&self, q: &TraceQuery) -> Result<Vec<Trace>, TraceQueryError> {
        let mut traces = Vec::new();
        let (mut spans, mut bytes) = (0usize, 0usize);
        for id in self.search_trace_ids(q)? {
            if spans >= MAX_SEARCH_RESULT_SPANS || bytes >= MAX_TRACE_BYTES {
                break;
            }
            if let Some(t) = self.get_trace(&q.tenant, &id)? {
                spans += t.spans.len();
                bytes += t.stored_bytes;
                traces.push(t);
            }
        }
        Ok(traces)
    }

    /// Summaries of the traces matching `q`.
    pub fn search(&self, q: &TraceQuery) -> Result<Vec<TraceSummary>, TraceQueryError> {
        Ok(self.search_traces(q)?.iter().map(Trace::summary).collect())
    }

    /// Every service of `tenant` with spans in the store, sorted.
    pub fn services(&self, tenant: &str) -> Result<Vec<String>, TraceQueryError> {
        let mut out = BTreeSet::new();
        for reader in self.all_readers(tenant) {
            let searcher = reader.reader.searcher();
            for segment in searcher.segment_readers() {
                let index = segment.inverted_index(self.shared.fields.service_name)?;
                let mut stream = index.terms().stream().map_err(io_err)?;
                while stream.advance() {
                    out.insert(String::from_utf8_lossy(stream.key()).into_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every operation (span name and kind) of `service`, sorted; only those of `kind`
    /// when given.
    pub fn operations(
        &self,
        tenant: &str,
        service: &str,
        kind: Option<i32>,
    ) -> Result<Vec<Operation>, TraceQueryError> {
        let prefix = match kind {
            Some(k) => format!("{service}\0{k}\0"),
            None => format!("{service}\0"),
        };
        let mut upper = prefix.clone().into_bytes();
        // The prefix ends in \0; the next byte value bounds every term that starts with it.
        if let Some(last) = upper.last_mut() {
            *last = 1;
        }
        let mut out = BTreeSet::new();
        for reader in self.all_readers(tenant) {
            let searcher = reader.reader.searcher();
            for segment in searcher.segment_readers() {
                let index = segment.inverted_index(self.shared.fields.operation)?;
                let mut stream = index
                    .terms()
                    .range()
                    .ge(prefix.as_bytes())
                    .lt(&upper)
                    .into_stream()
                    .map_err(io_err)?;
                while stream.advance() {
                    let term = String::from_utf8_lossy(stream.key());
                    let rest = &term[service.len() + 1..];
                    if let Some((k, name)) = rest.split_once('\0')
                        && let Ok(kind) = k.parse()
                    {
                        out.insert(Operation {
                            name: name.to_string(),
                            kind,
                        });
                    }
                }
            }
        }
        debug_assert!(
            out.iter()
                .all(|o| operation_term(service, o.kind, &o.name).starts_with(&prefix))
        );
        Ok(out.into_iter().collect())
    }

    /// The service map of spans that start in `[start_ns, end_ns)`: for every span whose
    /// parent span is among those read and belongs to another service, one call from the
    /// parent's service to the span's. Computed at query time from columns (no doc store)
    /// over at most [`MAX_DEPENDENCY_SPANS`] spans, the most recent.
    pub fn dependencies(
        &self,
        tenant: &str,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<DependencyMap, TraceQueryError> {
        if end_ns <= start_ns {
            return Err(TraceQueryError::BadParameter(
                "end must be after start".into(),
            ));
        }
        let f = &self.shared.fields;
        let query = RangeQuery::new(
            Bound::Included(Term::from_field_i64(f.start, start_ns)),
            Bound::Excluded(Term::from_field_i64(f.start, end_ns)),
        );
        struct Row {
            start: i64,
            trace: (u64, u64),
            span: u64,
            parent: u64,
            service: u32,
            error: bool,
        }
        let mut services: Vec<String> = Vec::new();
        let mut service_ids: HashMap<String, u32> = HashMap::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut total = 0u64;
        // Newest partition first, each taking what is left of the budget (partitions are
        // disjoint days), so at most MAX_DEPENDENCY_SPANS rows are ever held.
        for reader in self.readers_for(tenant, start_ns, end_ns).iter().rev() {
            let searcher = reader.reader.searcher();
            let budget = MAX_DEPENDENCY_SPANS.saturating_sub(rows.len());
            if budget == 0 {
                total += searcher.search(&query, &Count)? as u64;
                continue;
            }
            let top =
                TopDocs::with_limit(budget).order_by_fast_field::<i64>(names::START, Order::Desc);
            let (count, docs) = searcher.search(&query, &(Count, top))?;
            total += count as u64;
            let mut cols = HashMap::new();
            let mut name = String::new();
            for (start, address) in docs {
                let (hi, lo, span, parent, status, service) = match cols.entry(address.segment_ord)
                {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let ff = searcher.segment_reader(address.segment_ord).fast_fields();
                        e.insert((
                            ff.u64(names::TRACE_HI)?,
                            ff.u64(names::TRACE_LO)?,
                            ff.u64(names::SPAN)?,
                            ff.u64(names::PARENT)?,
                            ff.i64(names::STATUS_CODE)?,
                            ff.str(names::SERVICE_NAME)?,
                        ))
                    }
                };
                let doc = address.doc_id;
                name.clear();
                if let Some(col) = service
                    && let Some(ord) = col.term_ords(doc).next()
                {
                    col.ord_to_str(ord, &mut name).map_err(io_err)?;
                }
                let next = services.len() as u32;
                let service = *service_ids.entry(name.clone()).or_insert_with(|| {
                    services.push(name.clone());
                    next
                });
                rows.push(Row {
                    start: start.unwrap_or(0),
                    trace: (hi.first(doc).unwrap_or(0), lo.first(doc).unwrap_or(0)),
                    span: span.first(doc).unwrap_or(0),
                    parent: parent.first(doc).unwrap_or(0),
                    service,
                    error: status.first(doc) == Some(i64::from(STATUS_ERROR)),
                });
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.start));
        rows.truncate(MAX_DEPENDENCY_SPANS);
        let by_span: HashMap<((u64, u64), u64), u32> = rows
            .iter()
            .map(|r| ((r.trace, r.span), r.service))
            .collect();
        let mut edges: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
        for r in &rows {
            if r.parent == 0 {
                continue;
            }
            if let Some(&parent_service) = by_span.get(&(r.trace, r.parent))
                && parent_service != r.service
            {
                let e = edges.entry((parent_service, r.service)).or_default();
                e.0 += 1;
                e.1 += u64::from(r.error);
            }
        }
        let mut edges: Vec<DependencyEdge> = edges
            .into_iter()
            .map(|((p, c), (calls, errors))| DependencyEdge {
                parent: services[p as usize].clone(),
                child: services[c as usize].clone(),
                call_count: calls,
                error_count: errors,
            })
            .collect();
        edges.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        Ok(DependencyMap {
            edges,
            spans_examined: rows.len() as u64,
            truncated: total > rows.len() as u64,
        })
    }

    /// Spans stored for `tenant` (all partitions), for tests and statistics.
    pub fn count_spans(&self, tenant: &str) -> Result<u64, TraceQueryError> {
        let mut n = 0u64;
        for reader in self.all_readers(tenant) {
            n += reader.reader.searcher().search(&AllQuery, &Count)? as u64;
        }
        Ok(n)
    }
}

fn io_err(e: std::io::Error) -> tantivy::TantivyError {
    tantivy::TantivyError::from(e)
}

/// Orders spans (sorted by start time) as a tree: depth-first, parents before children,
/// siblings by start time. Spans whose parent is absent (a root, or a parent not
/// received or cut off) are roots; spans in a parent cycle are appended as roots too,
/// so every span comes back exactly once.
pub(crate) fn tree_order(spans: Vec<StoredSpan>) -> Vec<StoredSpan> {
    let n = spans.len();
    let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(n);
    for (i, s) in spans.iter().enumerate() {
        index.entry(s.span.span_id.as_slice()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match index.get(s.span.parent_span_id.as_slice()) {
            Some(&p) if p != i && !s.span.parent_span_id.is_empty() => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    let walk = |root: usize, order: &mut Vec<(usize, usize)>, visited: &mut Vec<bool>| {
        let mut stack = vec![(root, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            order.push((i, depth));
            // Children are in start order; push them reversed so the earliest pops first.
            for &c in children[i].iter().rev() {
                stack.push((c, depth + 1));
            }
        }
    };
    for &r in &roots {
        walk(r, &mut order, &mut visited);
    }
    for i in 0..n {
        if !visited[i] {
            walk(i, &mut order, &mut visited);
        }
    }
    let mut slots: Vec<Option<StoredSpan>> = spans.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(i, depth)| {
            slots[i].take().map(|mut s| {
                s.depth = depth;
                s
            })
        })
        .collect()
}
