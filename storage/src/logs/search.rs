//! Log search: query parsing with positions in errors, time-range filtering across
//! partitions, sorted hits, total counts and a count histogram.

use std::ops::Bound;
use std::time::Duration;

use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::columnar::Column;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::query_grammar::{
    Delimiter, Occur as GrammarOccur, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral,
};
use tantivy::schema::Value as _;
use tantivy::{DocAddress, DocId, Order, Score, SegmentReader, TantivyDocument, Term};
use vantage_proto::otlp::logs::v1::ResourceLogs;

use super::LogStore;
use super::deadline::{Deadline, Stop};
use super::schema::{LeftOutColumns, LogFields, SchemaVersion, decode_stored, id_parts, names};

/// Most hits one search may return; deeper paging narrows the time range instead.
pub const MAX_LIMIT: usize = 10_000;

/// The default of [`LogQuery::max_hits_bytes`] (`logs.max_hits_bytes`): 10,000 records
/// of 1.6 KiB, or 1,000 stack traces of 16 KiB.
pub const DEFAULT_MAX_HITS_BYTES: usize = 16 << 20;
/// Most histogram buckets one search may ask for.
pub const MAX_BUCKETS: i64 = 10_000;
/// Longest a search on a search-idle store waits for the commit it asked for: a commit
/// takes well under a second; a failing index is not waited for longer than this.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Order of the returned hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOrder {
    /// Oldest first.
    TimeAsc,
    /// Newest first (the default for search).
    TimeDesc,
    /// Arrival order (live tail).
    ArrivalAsc,
}

/// One log search.
#[derive(Clone, Debug)]
pub struct LogQuery {
    /// Tenant whose partitions are searched; nothing else is ever opened.
    pub tenant: String,
    /// Query in the Tantivy query language; empty matches everything.
    pub query: String,
    /// Inclusive start, ns since the epoch.
    pub start_ns: i64,
    /// Exclusive end, ns since the epoch.
    pub end_ns: i64,
    /// Hits to return (1..=MAX_LIMIT).
    pub limit: usize,
    /// Hit order.
    pub order: SortOrder,
    /// Bucket width of the count histogram, if one is wanted.
    pub histogram_interval_ns: Option<i64>,
    /// Only records that arrived in a WAL batch after this LSN (live tail).
    pub after_lsn: Option<u64>,
    /// Most bytes of stored records the hits may hold (the first hit always fits): a
    /// page of 10,000 stack traces would otherwise be held in memory several times over
    /// while it is decoded and rendered.
    pub max_hits_bytes: usize,
}

/// One matching record.
#[derive(Clone, Debug)]
pub struct LogHit {
    /// WAL LSN of the batch it arrived in.
    pub lsn: u64,
    /// Effective event time, ns.
    pub time_ns: i64,
    /// The exact record with its resource and scope.
    pub envelope: ResourceLogs,
}

/// Count of matches in `[start_ns, start_ns + interval)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramBucket {
    /// Bucket start, ns.
    pub start_ns: i64,
    /// Matching records in the bucket.
    pub count: u64,
}

/// Result of a search.
#[derive(Clone, Debug, Default)]
pub struct LogSearchResult {
    /// All matches in the time range, not just those returned.
    pub total: u64,
    /// Up to `limit` hits in the requested order.
    pub hits: Vec<LogHit>,
    /// The hits stop short of `limit` because the next one would have taken them past
    /// `max_hits_bytes`.
    pub cut_at_max_bytes: bool,
    /// Count per bucket over `[start, end)`, when asked for.
    pub histogram: Option<Vec<HistogramBucket>>,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum LogQueryError {
    /// The query text does not parse; `position` is a character offset into it.
    #[error("query does not parse at position {position}: {message}")]
    Parse {
        /// Character offset of the problem.
        position: usize,
        /// What the parser says.
        message: String,
    },
    /// The query nests too deep or holds too many groups to be run safely (see the
    /// `query_depth` module); not a syntax error, so it has no position.
    #[error("query too complex: {0}")]
    TooComplex(String),
    /// The query parses but names something invalid (unknown field, bad value).
    #[error("invalid query: {0}")]
    Invalid(String),
    /// A parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// The search ran out of the time it was given (see [`LogStore::search_until`]).
    #[error(
        "the search did not finish within {}: narrow the time range or the query",
        vantage_proto::config::format_duration(*.0)
    )]
    Timeout(Duration),
    /// The caller cancelled the search (its client went away).
    #[error("the search was cancelled")]
    Cancelled,
    /// The index failed; details go to the log, not to the client.
    #[error("log index failure: {0}")]
    Internal(tantivy::TantivyError),
}

/// The result of one Tantivy search under `deadline`. A search stopped inside Tantivy
/// ends its segments early: what it collected is incomplete, so it is an error even
/// though Tantivy returned it.
fn finished<T>(result: tantivy::Result<T>, deadline: &Deadline) -> Result<T, LogQueryError> {
    let value = result?;
    match deadline.stopped() {
        Some(stop) => Err(LogQueryError::stopped(stop, deadline)),
        None => Ok(value),
    }
}

impl LogQueryError {
    fn stopped(stop: Stop, deadline: &Deadline) -> Self {
        match stop {
            Stop::Timeout => LogQueryError::Timeout(deadline.budget()),
            Stop::Cancelled => LogQueryError::Cancelled,
        }
    }
}

impl LogStore {
    /// Parses a query the way [`LogStore::search`] does, to validate it early.
    pub fn parse_query(&self, text: &str) -> Result<Box<dyn Query>, LogQueryError> {
        self.parse_query_for(self.current_fields()?, text)
    }

    /// The schema new partitions are created with.
    fn current_fields(&self) -> Result<&LogFields, LogQueryError> {
        self.shared
            .versions
            .iter()
            .find(|f| f.version == self.shared.new_version)
            .map(|f| &**f)
            .ok_or_else(|| LogQueryError::Invalid("no schema for new partitions".into()))
    }

    /// Parses a query against one schema version (every partition's own).
    fn parse_query_for(
        &self,
        fields: &LogFields,
        text: &str,
    ) -> Result<Box<dyn Query>, LogQueryError> {
        if text.trim().is_empty() || text.trim() == "*" {
            return Ok(Box::new(AllQuery));
        }
        let mut parser = QueryParser::new(
            fields.schema.clone(),
            vec![fields.body],
            self.shared.tokenizers.clone(),
        );
        // `error timeout` means both, as in Quickwit and most log tools.
        parser.set_conjunction_by_default();
        let ast = super::query_depth::parse_bounded(text, |text| {
            tantivy::query_grammar::parse_query(text).map_err(|_| {
                let (_, errors) = tantivy::query_grammar::parse_query_lenient(text);
                let (position, message) = errors
                    .first()
                    .map(|e| (e.pos, e.message.clone()))
                    .unwrap_or((0, "syntax error".to_string()));
                LogQueryError::Parse { position, message }
            })
        })?;
        parser
            .build_query_from_user_input_ast(rewrite(hoist_negations(ast))?)
            .map_err(|e| LogQueryError::Invalid(e.to_string()))
    }

    /// Runs a search over the tenant's partitions that overlap the time range.
    pub fn search(&self, q: &LogQuery) -> Result<LogSearchResult, LogQueryError> {
        self.search_until(q, &Deadline::none())
    }

    /// [`LogStore::search`] that gives up with [`LogQueryError::Timeout`] once `deadline`
    /// passes, or [`LogQueryError::Cancelled`] once it is cancelled: checked before
    /// each partition, segment and phase, and every thousand or so documents read.
    pub fn search_until(
        &self,
        q: &LogQuery,
        deadline: &Deadline,
    ) -> Result<LogSearchResult, LogQueryError> {
        let check = || {
            deadline
                .check()
                .map_err(|stop| LogQueryError::stopped(stop, deadline))
        };
        if q.limit > MAX_LIMIT {
            return Err(LogQueryError::BadParameter(format!(
                "limit {} is over the maximum of {MAX_LIMIT}",
                q.limit
            )));
        }
        if q.end_ns <= q.start_ns {
            return Err(LogQueryError::BadParameter(
                "end must be after start".to_string(),
            ));
        }
        // After the checks: a refused query is not a search that needs fresh data.
        let commit_wait = deadline
            .remaining()
            .map_or(COMMIT_WAIT, |left| left.min(COMMIT_WAIT));
        self.shared.freshness.before_search(commit_wait);
        let histogram = match q.histogram_interval_ns {
            Some(interval) if interval <= 0 => {
                return Err(LogQueryError::BadParameter(
                    "histogram interval must be positive".to_string(),
                ));
            }
            Some(interval) => {
                let buckets = (q.end_ns - q.start_ns).div_euclid(interval) + 1;
                if buckets > MAX_BUCKETS {
                    return Err(LogQueryError::BadParameter(format!(
                        "histogram would have {buckets} buckets, over the maximum of {MAX_BUCKETS}: widen the interval"
                    )));
                }
                Some(HistogramCollector {
                    origin: q.start_ns.div_euclid(interval) * interval,
                    interval,
                    buckets: usize::try_from(buckets).unwrap_or(0),
                })
            }
            None => None,
        };
        // Every query form means the same in every schema version (`rewrite`), but each
        // partition's query is built against its own schema; parsed once per version.
        let mut queries: Vec<(SchemaVersion, Box<dyn Query>)> = Vec::new();
        let current = self.current_fields()?;
        let parsed = self.parse_query_for(current, &q.query)?;
        queries.push((
            current.version,
            self.filtered_query(q, current, parsed, deadline)?,
        ));
        check()?;
        let mut total = 0u64;
        let mut counts = histogram.as_ref().map(|h| vec![0u64; h.buckets]);
        // (sort key, partition, doc) for every partition's top candidates.
        let mut candidates: Vec<(i128, usize, DocAddress)> = Vec::new();
        let readers = self.readers_for(&q.tenant, q.start_ns, q.end_ns);
        let searchers: Vec<_> = readers.iter().map(|r| r.reader.searcher()).collect();
        for (pi, searcher) in searchers.iter().enumerate() {
            let fields = &readers[pi].fields;
            let qi = match queries.iter().position(|(v, _)| *v == fields.version) {
                Some(qi) => qi,
                None => {
                    let parsed = self.parse_query_for(fields, &q.query)?;
                    let query = self.filtered_query(q, fields, parsed, deadline)?;
                    queries.push((fields.version, query));
                    queries.len() - 1
                }
            };
            let query = &queries[qi].1;
            if q.limit > 0 {
                let top = match q.order {
                    SortOrder::TimeAsc | SortOrder::TimeDesc => {
                        let order = if q.order == SortOrder::TimeAsc {
                            Order::Asc
                        } else {
                            Order::Desc
                        };
                        let collector = TopDocs::with_limit(q.limit)
                            .order_by_fast_field::<i64>(names::TIMESTAMP, order);
                        let (count, docs) =
                            finished(searcher.search(query, &(Count, collector)), deadline)?;
                        total += count as u64;
                        docs.into_iter()
                            .map(|(k, d)| (i128::from(k.unwrap_or(0)), d))
                            .collect::<Vec<_>>()
                    }
                    SortOrder::ArrivalAsc => {
                        let collector = TopDocs::with_limit(q.limit)
                            .order_by_fast_field::<u64>(names::LSN, Order::Asc);
                        let (count, docs) =
                            finished(searcher.search(query, &(Count, collector)), deadline)?;
                        total += count as u64;
                        docs.into_iter()
                            .map(|(k, d)| (i128::from(k.unwrap_or(0)), d))
                            .collect::<Vec<_>>()
                    }
                };
                candidates.extend(top.into_iter().map(|(k, d)| (k, pi, d)));
            } else {
                total += finished(searcher.search(query, &Count), deadline)? as u64;
            }
            if let (Some(h), Some(counts)) = (&histogram, counts.as_mut()) {
                for (c, n) in counts
                    .iter_mut()
                    .zip(finished(searcher.search(query, h), deadline)?)
                {
                    *c += n;
                }
            }
        }
        match q.order {
            SortOrder::TimeDesc => candidates.sort_by_key(|c| std::cmp::Reverse(c.0)),
            _ => candidates.sort_by_key(|c| c.0),
        }
        candidates.truncate(q.limit);
        let mut hits = Vec::with_capacity(candidates.len());
        let mut hits_bytes = 0usize;
        let mut cut_at_max_bytes = false;
        for (i, (_, pi, address)) in candidates.into_iter().enumerate() {
            // Each hit may read and decompress a doc store block.
            if i % 64 == 0 {
                check()?;
            }
            let searcher = &searchers[pi];
            let fields = &readers[pi].fields;
            let doc: TantivyDocument = searcher.doc(address)?;
            let segment = searcher.segment_reader(address.segment_ord);
            let ff = segment.fast_fields();
            let time_column = ff.i64(names::TIMESTAMP)?.first(address.doc_id);
            let time_ns = time_column.unwrap_or(0);
            let lsn = ff.u64(names::LSN)?.first(address.doc_id).unwrap_or(0);
            let bytes = doc
                .get_first(fields.record)
                .and_then(|v| v.as_bytes())
                .unwrap_or_default();
            // The stored form is the record's own bytes (compressed only by the block),
            // so it is what decoding and rendering will multiply.
            if !hits.is_empty() && hits_bytes.saturating_add(bytes.len()) > q.max_hits_bytes {
                cut_at_max_bytes = true;
                break;
            }
            hits_bytes += bytes.len();
            let columns = HitColumns {
                fast: ff,
                doc: address.doc_id,
                time_ns: time_column,
            };
            let envelope = decode_stored(bytes, &columns)
                .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
            hits.push(LogHit {
                lsn,
                time_ns,
                envelope,
            });
        }
        let histogram = histogram.zip(counts).map(|(h, counts)| {
            counts
                .into_iter()
                .enumerate()
                .map(|(i, count)| HistogramBucket {
                    start_ns: h.origin + i as i64 * h.interval,
                    count,
                })
                .collect()
        });
        Ok(LogSearchResult {
            total,
            hits,
            cut_at_max_bytes,
            histogram,
        })
    }

    /// `parsed` limited to the time range (and LSNs) of `q`, in schema `fields`, read only
    /// while `deadline` holds.
    fn filtered_query(
        &self,
        q: &LogQuery,
        fields: &LogFields,
        parsed: Box<dyn Query>,
        deadline: &Deadline,
    ) -> Result<Box<dyn Query>, LogQueryError> {
        let time = RangeQuery::new(
            Bound::Included(Term::from_field_i64(fields.timestamp, q.start_ns)),
            Bound::Excluded(Term::from_field_i64(fields.timestamp, q.end_ns)),
        );
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, parsed), (Occur::Must, Box::new(time))];
        if let Some(after) = q.after_lsn {
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Excluded(Term::from_field_u64(fields.lsn, after)),
                    Bound::Unbounded,
                )),
            ));
        }
        Ok(deadline.wrap(Box::new(BooleanQuery::new(clauses))))
    }
}

/// The columns of one hit, for what its stored record left out.
struct HitColumns<'a> {
    fast: &'a tantivy::fastfield::FastFieldReaders,
    doc: DocId,
    time_ns: Option<i64>,
}

impl HitColumns<'_> {
    fn u64_of(&self, name: &str) -> Option<u64> {
        self.fast.u64(name).ok()?.first(self.doc)
    }
}

impl LeftOutColumns for HitColumns<'_> {
    fn time_ns(&self) -> Option<i64> {
        self.time_ns
    }

    fn observed_ns(&self) -> Option<i64> {
        self.fast
            .i64(names::OBSERVED_TIMESTAMP)
            .ok()?
            .first(self.doc)
    }

    fn trace(&self) -> Option<(u64, u64)> {
        Some((self.u64_of(names::TRACE_HI)?, self.u64_of(names::TRACE_LO)?))
    }

    fn span(&self) -> Option<u64> {
        self.u64_of(names::SPAN)
    }

    fn attribute_f64(&self, key: &str) -> Option<f64> {
        let name = format!("{}.{key}", names::ATTRIBUTES_NUMERIC);
        self.fast.column_opt::<f64>(&name).ok()??.first(self.doc)
    }
}

fn leaf(leaf: UserInputLeaf) -> UserInputAst {
    UserInputAst::Leaf(Box::new(leaf))
}

fn must_all(parts: Vec<UserInputAst>) -> UserInputAst {
    UserInputAst::Clause(
        parts
            .into_iter()
            .map(|p| (Some(GrammarOccur::Must), p))
            .collect(),
    )
}

fn exact_u64(field: &str, value: u64) -> UserInputAst {
    leaf(UserInputLeaf::Range {
        field: Some(field.to_string()),
        lower: UserInputBound::Inclusive(value.to_string()),
        upper: UserInputBound::Inclusive(value.to_string()),
    })
}

fn keyword(field: &str, value: String) -> UserInputAst {
    leaf(UserInputLeaf::Literal(UserInputLiteral {
        field_name: Some(field.to_string()),
        phrase: value,
        delimiter: Delimiter::None,
        slop: 0,
        prefix: false,
    }))
}

/// `trace_id:<hex>` / `span_id:<hex>` as the bucket term and the exact id columns.
fn id_lookup(field: &str, text: &str) -> Result<UserInputAst, LogQueryError> {
    let max = if field == names::TRACE_ID { 16 } else { 8 };
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= max)
        .ok_or_else(|| {
            LogQueryError::Invalid(format!(
                "{field}:{text}: an id is up to {} hex digits",
                2 * max
            ))
        })?;
    let (bucket, hi, lo) = id_parts(&bytes);
    // Every version's bucket width: a partition holds only its own version's, so asking
    // them all keeps this rewrite the same for every version.
    let mut widths = SchemaVersion::ALL
        .map(SchemaVersion::id_bucket_len)
        .to_vec();
    widths.sort_unstable();
    widths.dedup();
    let buckets = |field: &str| {
        UserInputAst::Clause(
            widths
                .iter()
                .map(|&len| {
                    let term = keyword(field, bucket[..len].to_string());
                    (Some(GrammarOccur::Should), term)
                })
                .collect(),
        )
    };
    Ok(if field == names::TRACE_ID {
        must_all(vec![
            buckets(names::TRACE_BUCKET),
            exact_u64(names::TRACE_HI, hi),
            exact_u64(names::TRACE_LO, lo),
        ])
    } else {
        must_all(vec![
            buckets(names::SPAN_BUCKET),
            exact_u64(names::SPAN, hi),
        ])
    })
}

/// `resource.service.name` as a query names it.
const RESOURCE_SERVICE_NAME: &str = "resource.service.name";

fn leaf_field(leaf: &UserInputLeaf) -> Option<&str> {
    match leaf {
        UserInputLeaf::Literal(lit) => lit.field_name.as_deref(),
        UserInputLeaf::Range { field, .. }
        | UserInputLeaf::Set { field, .. }
        | UserInputLeaf::Regex { field, .. } => field.as_deref(),
        UserInputLeaf::Exists { field } => Some(field),
        UserInputLeaf::All => None,
    }
}

/// The same leaf on another field; `None` for leaves that stay as they are (`*`, `:*`:
/// existence needs a column, which neither field has).
fn with_field(leaf: UserInputLeaf, field: &str) -> Option<UserInputLeaf> {
    let field = Some(field.to_string());
    Some(match leaf {
        UserInputLeaf::Literal(mut lit) => {
            lit.field_name = field;
            UserInputLeaf::Literal(lit)
        }
        UserInputLeaf::Range { lower, upper, .. } => UserInputLeaf::Range {
            field,
            lower,
            upper,
        },
        UserInputLeaf::Set { elements, .. } => UserInputLeaf::Set { field, elements },
        UserInputLeaf::Regex { pattern, .. } => UserInputLeaf::Regex { field, pattern },
        UserInputLeaf::Exists { .. } | UserInputLeaf::All => return None,
    })
}

/// Maps the fields people write onto how they are stored: severity numbers to their
/// column, `resource.service.name` to the `service.name` field as well, ids to their
/// bucket term and columns, and numbers on `attributes.<key>` (exact values, ranges,
/// existence) to the numeric attribute columns. A numeric-looking literal still matches
/// string values too. The result means the same in every schema version.
fn rewrite(ast: UserInputAst) -> Result<UserInputAst, LogQueryError> {
    let numeric_path = |field: Option<&str>| -> Option<String> {
        let rest = field?.strip_prefix(names::ATTRIBUTES)?.strip_prefix('.')?;
        Some(format!("{}.{rest}", names::ATTRIBUTES_NUMERIC))
    };
    Ok(match ast {
        UserInputAst::Clause(clauses) => UserInputAst::Clause(
            clauses
                .into_iter()
                .map(|(o, sub)| rewrite(sub).map(|sub| (o, sub)))
                .collect::<Result<_, _>>()?,
        ),
        UserInputAst::Boost(inner, boost) => UserInputAst::Boost(Box::new(rewrite(*inner)?), boost),
        UserInputAst::Leaf(l) => match *l {
            UserInputLeaf::Literal(lit)
                if matches!(
                    lit.field_name.as_deref(),
                    Some(names::TRACE_ID | names::SPAN_ID)
                ) =>
            {
                id_lookup(lit.field_name.as_deref().unwrap_or_default(), &lit.phrase)?
            }
            UserInputLeaf::Literal(lit)
                if numeric_path(lit.field_name.as_deref()).is_some()
                    && lit.phrase.trim().parse::<f64>().is_ok() =>
            {
                let value = lit.phrase.trim().to_string();
                let column = leaf(UserInputLeaf::Range {
                    field: numeric_path(lit.field_name.as_deref()),
                    lower: UserInputBound::Inclusive(value.clone()),
                    upper: UserInputBound::Inclusive(value),
                });
                UserInputAst::Clause(vec![
                    (
                        Some(GrammarOccur::Should),
                        leaf(UserInputLeaf::Literal(lit)),
                    ),
                    (Some(GrammarOccur::Should), column),
                ])
            }
            UserInputLeaf::Range {
                field,
                lower,
                upper,
            } if numeric_path(field.as_deref()).is_some() => {
                let numeric = |b: &UserInputBound| match b {
                    UserInputBound::Inclusive(v) | UserInputBound::Exclusive(v) => {
                        v.parse::<f64>().is_ok()
                    }
                    UserInputBound::Unbounded => true,
                };
                if !numeric(&lower) || !numeric(&upper) {
                    return Err(LogQueryError::Invalid(format!(
                        "range on {}: attribute ranges compare numbers only",
                        field.unwrap_or_default()
                    )));
                }
                leaf(UserInputLeaf::Range {
                    field: numeric_path(field.as_deref()),
                    lower,
                    upper,
                })
            }
            // A column only since schema version 2: equality is the one-value range.
            UserInputLeaf::Literal(lit)
                if lit.field_name.as_deref() == Some(names::SEVERITY_NUMBER) && !lit.prefix =>
            {
                let value = lit.phrase.trim().to_string();
                leaf(UserInputLeaf::Range {
                    field: lit.field_name,
                    lower: UserInputBound::Inclusive(value.clone()),
                    upper: UserInputBound::Inclusive(value),
                })
            }
            UserInputLeaf::Set { field, elements }
                if field.as_deref() == Some(names::SEVERITY_NUMBER) =>
            {
                UserInputAst::Clause(
                    elements
                        .into_iter()
                        .map(|v| {
                            let one = leaf(UserInputLeaf::Range {
                                field: field.clone(),
                                lower: UserInputBound::Inclusive(v.clone()),
                                upper: UserInputBound::Inclusive(v),
                            });
                            (Some(GrammarOccur::Should), one)
                        })
                        .collect(),
                )
            }
            // Since schema version 2 a string service name is indexed only in the
            // `service.name` field, not again in the resource JSON: ask both.
            l if leaf_field(&l) == Some(RESOURCE_SERVICE_NAME) => {
                match with_field(l.clone(), names::SERVICE_NAME) {
                    Some(service) => UserInputAst::Clause(vec![
                        (Some(GrammarOccur::Should), leaf(service)),
                        (Some(GrammarOccur::Should), leaf(l)),
                    ]),
                    None => leaf(l),
                }
            }
            UserInputLeaf::Exists { field } if numeric_path(Some(&field)).is_some() => {
                leaf(UserInputLeaf::Exists {
                    field: numeric_path(Some(&field)).unwrap_or_default(),
                })
            }
            other => leaf(other),
        },
    })
}

/// Makes negations mean what people mean by them. Tantivy reads `a AND NOT b` as
/// `+a +(-b)`, where the inner clause has nothing to subtract from and matches nothing;
/// lifting `-b` one level gives `+a -b`. A query of negations only gets an implicit
/// "everything" to subtract from.
fn hoist_negations(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut out: Vec<(Option<GrammarOccur>, UserInputAst)> = clauses
                .into_iter()
                .map(|(occur, sub)| match (occur, hoist_negations(sub)) {
                    (None | Some(GrammarOccur::Must), UserInputAst::Clause(mut inner))
                        if inner.len() == 1 && inner[0].0 == Some(GrammarOccur::MustNot) =>
                    {
                        inner.pop().expect("one clause")
                    }
                    (occur, sub) => (occur, sub),
                })
                .collect();
            if !out.is_empty() && out.iter().all(|(o, _)| *o == Some(GrammarOccur::MustNot)) {
                out.push((
                    Some(GrammarOccur::Must),
                    UserInputAst::Leaf(Box::new(UserInputLeaf::All)),
                ));
            }
            UserInputAst::Clause(out)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(hoist_negations(*inner)), boost)
        }
        leaf => leaf,
    }
}

impl From<tantivy::TantivyError> for LogQueryError {
    fn from(e: tantivy::TantivyError) -> Self {
        match e {
            // Raised while executing a query that is well-formed but not supported.
            tantivy::TantivyError::InvalidArgument(msg) => LogQueryError::Invalid(msg),
            other => LogQueryError::Internal(other),
        }
    }
}

/// Counts matches per fixed-width time bucket, reading the timestamp fast field.
struct HistogramCollector {
    origin: i64,
    interval: i64,
    buckets: usize,
}

struct HistogramSegment {
    column: Column<i64>,
    origin: i64,
    interval: i64,
    counts: Vec<u64>,
}

impl Collector for HistogramCollector {
    type Fruit = Vec<u64>;
    type Child = HistogramSegment;

    fn for_segment(&self, _ord: u32, segment: &SegmentReader) -> tantivy::Result<HistogramSegment> {
        Ok(HistogramSegment {
            column: segment.fast_fields().i64(names::TIMESTAMP)?,
            origin: self.origin,
            interval: self.interval,
            counts: vec![0; self.buckets],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut total = vec![0u64; self.buckets];
        for fruit in fruits {
            for (t, n) in total.iter_mut().zip(fruit) {
                *t += n;
            }
        }
        Ok(total)
    }
}

impl SegmentCollector for HistogramSegment {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(ts) = self.column.first(doc) {
            let i = (ts - self.origin).div_euclid(self.interval);
            if let Some(c) = usize::try_from(i).ok().and_then(|i| self.counts.get_mut(i)) {
                *c += 1;
            }
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}
