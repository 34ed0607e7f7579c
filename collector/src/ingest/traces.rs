//! Spans: per-span validation (OTLP partial success) and the span store behind its
//! indexing thread (see [`super::index_thread`]).

use std::time::Duration;

use prost::Message as _;
use vantage_proto::logs::hex_id;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue};
use vantage_proto::otlp::trace::v1::Span;
use vantage_storage::traces::{TraceIndexer, TraceStoreError};

use super::index_thread::{AddError, Store};

/// Largest encoded attribute value (span, event, link or resource attribute). Bigger
/// values are almost always a mistake (a whole request body in a tag) and would make
/// every trace lookup that reads the span slow; Jaeger's and Tempo's defaults cut far
/// lower. The span carrying one is rejected, not silently truncated.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 64 * 1024;
/// Most events plus links on one span.
pub const MAX_EVENTS_AND_LINKS: usize = 1_000;

/// Limits applied to every span.
#[derive(Clone, Copy, Debug)]
pub struct SpanLimits {
    /// Most attributes on one span (the logs limit, `ingest.max_attributes_per_record`).
    pub max_attributes: usize,
    /// How far ahead of now a span may start.
    pub max_future_skew: Duration,
    /// How long ago a span may have ended (the trace retention).
    pub max_age: Duration,
}

/// Why a span was rejected; the string is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanReject {
    /// Trace id not 16 bytes, or all zero.
    InvalidTraceId,
    /// Span id not 8 bytes, or all zero; or a parent id that is not 8 bytes.
    InvalidSpanId,
    /// End time before start time, or no start time.
    InvalidTimes,
    /// Too many attributes, events or links.
    TooManyAttributes,
    /// An attribute value over [`MAX_ATTRIBUTE_VALUE_BYTES`].
    AttributeTooLarge,
    /// Start beyond the allowed future skew.
    TooFarInFuture,
    /// Ended before the retention period.
    TooOld,
}

impl SpanReject {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            SpanReject::InvalidTraceId => "invalid_trace_id",
            SpanReject::InvalidSpanId => "invalid_span_id",
            SpanReject::InvalidTimes => "end_before_start",
            SpanReject::TooManyAttributes => "too_many_attributes",
            SpanReject::AttributeTooLarge => "attribute_too_large",
            SpanReject::TooFarInFuture => "timestamp_in_future",
            SpanReject::TooOld => "timestamp_too_old",
        }
    }
}

/// Outcome of validating a trace batch.
#[derive(Debug, Default)]
pub struct SpanVerdict {
    /// Spans kept.
    pub accepted: u64,
    /// Rejections by reason, in first-seen order.
    pub rejected: Vec<(SpanReject, u64)>,
    /// First rejection, described for the partial-success message.
    pub first_problem: Option<String>,
    /// Whether validation changed the request in any way (a span dropped, an all-zero
    /// parent id cleared, an empty container removed). When it did not, the bytes the
    /// client sent are still an encoding of the request and go to the WAL as they are.
    pub changed: bool,
}

impl SpanVerdict {
    /// Total spans rejected.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn reject(&mut self, reason: SpanReject, n: u64, describe: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        if self.first_problem.is_none() {
            self.first_problem = Some(describe());
        }
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.rejected.push((reason, n)),
        }
    }

    /// The OTLP partial-success message: counts by reason and the first example.
    pub fn message(&self) -> String {
        if self.rejected.is_empty() {
            return String::new();
        }
        let counts: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{n} {}", r.label()))
            .collect();
        format!(
            "rejected {} spans ({}); first: {}",
            self.rejected_total(),
            counts.join(", "),
            self.first_problem.as_deref().unwrap_or("")
        )
    }
}

fn oversized(attributes: &[KeyValue]) -> Option<(&str, usize)> {
    attributes.iter().find_map(|kv| {
        let len = kv.value.as_ref().map_or(0, AnyValue::encoded_len);
        (len > MAX_ATTRIBUTE_VALUE_BYTES).then_some((kv.key.as_str(), len))
    })
}

fn check_span(span: &mut Span, limits: &SpanLimits, now_ns: u64) -> Option<(SpanReject, String)> {
    let hex = hex_id;
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|&b| b == 0) {
        return Some((
            SpanReject::InvalidTraceId,
            format!(
                "trace id {:?} is not 16 bytes or is all zero",
                hex(&span.trace_id)
            ),
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
        return Some((
            SpanReject::InvalidSpanId,
            format!(
                "span id {:?} is not 8 bytes or is all zero",
                hex(&span.span_id)
            ),
        ));
    }
    // An all-zero parent is how some SDKs write "no parent": stored as no parent.
    if span.parent_span_id.iter().all(|&b| b == 0) {
        span.parent_span_id.clear();
    } else if span.parent_span_id.len() != 8 {
        return Some((
            SpanReject::InvalidSpanId,
            format!(
                "parent span id {:?} is not 8 bytes",
                hex(&span.parent_span_id)
            ),
        ));
    }
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    if start == 0 {
        return Some((
            SpanReject::InvalidTimes,
            format!("span {} has no start time", hex(&span.span_id)),
        ));
    }
    if end < start {
        return Some((
            SpanReject::InvalidTimes,
            format!(
                "span {} ends ({end} ns) before it starts ({start} ns)",
                hex(&span.span_id)
            ),
        ));
    }
    if start > now_ns.saturating_add(limits.max_future_skew.as_nanos() as u64) {
        return Some((
            SpanReject::TooFarInFuture,
            format!(
                "span start {start} ns is more than {:?} in the future",
                limits.max_future_skew
            ),
        ));
    }
    if end < now_ns.saturating_sub(limits.max_age.as_nanos() as u64) {
        return Some((
            SpanReject::TooOld,
            format!(
                "span end {end} ns is older than the retention period of {:?}",
                limits.max_age
            ),
        ));
    }
    if span.attributes.len() > limits.max_attributes
        || span.events.len() + span.links.len() > MAX_EVENTS_AND_LINKS
    {
        return Some((
            SpanReject::TooManyAttributes,
            format!(
                "a span has {} attributes and {} events and links, over the limits of {} and {MAX_EVENTS_AND_LINKS}",
                span.attributes.len(),
                span.events.len() + span.links.len(),
                limits.max_attributes
            ),
        ));
    }
    let big = oversized(&span.attributes)
        .or_else(|| span.events.iter().find_map(|e| oversized(&e.attributes)))
        .or_else(|| span.links.iter().find_map(|l| oversized(&l.attributes)));
    if let Some((key, len)) = big {
        return Some((
            SpanReject::AttributeTooLarge,
            format!(
                "attribute {key:?} is {len} bytes, over the limit of {MAX_ATTRIBUTE_VALUE_BYTES}"
            ),
        ));
    }
    None
}

/// Validates the spans of a request in place: rejected spans are removed (and empty
/// scopes and resources with them), all-zero parent ids cleared.
/// [`SpanVerdict::changed`] says whether anything of this happened.
pub fn validate(
    request: &mut ExportTraceServiceRequest,
    limits: &SpanLimits,
    now_ns: u64,
) -> SpanVerdict {
    let mut verdict = SpanVerdict::default();
    let resources = request.resource_spans.len();
    for rs in &mut request.resource_spans {
        let scopes = rs.scope_spans.len();
        let resource_attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice());
        if let Some((key, len)) = resource_attrs.and_then(oversized) {
            let n = rs.scope_spans.iter().map(|ss| ss.spans.len() as u64).sum();
            let key = key.to_string();
            verdict.reject(SpanReject::AttributeTooLarge, n, || {
                format!("resource attribute {key:?} is {len} bytes, over the limit of {MAX_ATTRIBUTE_VALUE_BYTES}")
            });
            rs.scope_spans.clear();
            continue;
        }
        for ss in &mut rs.scope_spans {
            ss.spans.retain_mut(|span| {
                let parent_len = span.parent_span_id.len();
                let problem = check_span(span, limits, now_ns);
                verdict.changed |= span.parent_span_id.len() != parent_len;
                match problem {
                    Some((reason, text)) => {
                        verdict.reject(reason, 1, || text);
                        verdict.changed = true;
                        false
                    }
                    None => {
                        verdict.accepted += 1;
                        true
                    }
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        verdict.changed |= rs.scope_spans.len() != scopes;
    }
    request
        .resource_spans
        .retain(|rs| !rs.scope_spans.is_empty());
    verdict.changed |= request.resource_spans.len() != resources;
    verdict
}

impl Store for TraceIndexer {
    type Error = TraceStoreError;
    const SIGNAL: &'static str = "trace";

    fn add(
        &mut self,
        tenant: &str,
        lsn: u64,
        body: bytes::Bytes,
    ) -> Result<(), AddError<TraceStoreError>> {
        let request = ExportTraceServiceRequest::decode(body)
            .map_err(|e| AddError::Undecodable(e.to_string()))?;
        match self.add_batch(tenant, lsn, &request) {
            Ok(_) => Ok(()),
            // Checked at ingest: a bad name here was damaged on disk.
            Err(e @ TraceStoreError::InvalidTenant(_)) => Err(AddError::Undecodable(e.to_string())),
            Err(e) => Err(AddError::Store(e)),
        }
    }

    fn has_uncommitted(&self) -> bool {
        TraceIndexer::has_uncommitted(self)
    }

    fn commit(&mut self) -> Result<u64, TraceStoreError> {
        TraceIndexer::commit(self)
    }

    fn discard_uncommitted(&mut self) {
        TraceIndexer::discard_uncommitted(self);
    }

    fn checkpoint_lsn(&self) -> u64 {
        TraceIndexer::checkpoint_lsn(self)
    }

    fn num_docs(&self) -> u64 {
        self.store().num_docs()
    }

    fn set_retention_ns(&mut self, retention_ns: i64) {
        TraceIndexer::set_retention_ns(self, retention_ns);
    }

    fn apply_retention(&mut self, now_ns: i64) -> Result<usize, TraceStoreError> {
        TraceIndexer::apply_retention(self, now_ns)
    }

    fn close(self) -> Result<u64, TraceStoreError> {
        TraceIndexer::close(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::common::v1::any_value;
    use vantage_proto::otlp::resource::v1::Resource;
    use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn limits() -> SpanLimits {
        SpanLimits {
            max_attributes: 3,
            max_future_skew: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 86_400),
        }
    }

    fn good() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: NOW,
            end_time_unix_nano: NOW + 5,
            ..Default::default()
        }
    }

    fn req(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn big_value() -> KeyValue {
        KeyValue {
            key: "body".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    "x".repeat(MAX_ATTRIBUTE_VALUE_BYTES + 1),
                )),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_good_spans_and_names_each_bad_one() {
        let bad = |f: fn(&mut Span)| {
            let mut s = good();
            f(&mut s);
            s
        };
        let spans = vec![
            good(),
            bad(|s| s.trace_id = vec![1; 15]),
            bad(|s| s.trace_id = vec![0; 16]),
            bad(|s| s.span_id = vec![1; 9]),
            bad(|s| s.span_id = vec![0; 8]),
            bad(|s| s.parent_span_id = vec![1; 3]),
            bad(|s| s.end_time_unix_nano = s.start_time_unix_nano - 1),
            bad(|s| {
                s.start_time_unix_nano = u64::MAX - 10;
                s.end_time_unix_nano = u64::MAX;
            }),
            bad(|s| {
                s.start_time_unix_nano = 1;
                s.end_time_unix_nano = 2;
            }),
            bad(|s| s.attributes = vec![KeyValue::default(); 4]),
            bad(|s| s.attributes = vec![big_value()]),
            bad(|s| s.parent_span_id = vec![0; 8]),
        ];
        let mut r = req(None, spans);
        let v = validate(&mut r, &limits(), NOW);
        assert_eq!(v.accepted, 2);
        assert_eq!(v.rejected_total(), 10);
        let count = |reason| {
            v.rejected
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(count(SpanReject::InvalidTraceId), 2);
        assert_eq!(count(SpanReject::InvalidSpanId), 3);
        assert_eq!(count(SpanReject::InvalidTimes), 1);
        assert_eq!(count(SpanReject::TooFarInFuture), 1);
        assert_eq!(count(SpanReject::TooOld), 1);
        assert_eq!(count(SpanReject::TooManyAttributes), 1);
        assert_eq!(count(SpanReject::AttributeTooLarge), 1);
        let kept = &r.resource_spans[0].scope_spans[0].spans;
        assert_eq!(kept.len(), 2);
        assert!(
            kept[1].parent_span_id.is_empty(),
            "an all-zero parent means no parent"
        );
        let msg = v.message();
        assert!(msg.starts_with("rejected 10 spans"), "{msg}");
        assert!(msg.contains("2 invalid_trace_id"), "{msg}");
    }

    #[test]
    fn an_oversized_resource_attribute_rejects_its_spans() {
        let resource = Resource {
            attributes: vec![big_value()],
            ..Default::default()
        };
        let mut r = req(Some(resource), vec![good(), good()]);
        let v = validate(&mut r, &limits(), NOW);
        assert_eq!(v.accepted, 0);
        assert_eq!(v.rejected, vec![(SpanReject::AttributeTooLarge, 2)]);
        assert!(r.resource_spans.is_empty());
    }

    /// One span whose ids, parent and start time each fall inside or outside the limits.
    fn span() -> impl proptest::strategy::Strategy<Value = Span> {
        use proptest::prelude::*;
        let parent = prop_oneof![
            Just(vec![]),
            Just(vec![0; 8]),
            Just(vec![3; 8]),
            Just(vec![3; 5])
        ];
        let start = prop_oneof![Just(0), Just(NOW), Just(u64::MAX - 10), Just(1)];
        (parent, start, any::<bool>()).prop_map(|(parent_span_id, start, good_id)| Span {
            parent_span_id,
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(5),
            span_id: if good_id { vec![2; 8] } else { vec![0; 8] },
            ..good()
        })
    }

    proptest::proptest! {
        /// `changed` is what lets ingest store the client's bytes: it must be false
        /// exactly when the validated request equals the one received.
        #[test]
        fn changed_says_whether_the_request_changed(
            resources in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(proptest::collection::vec(span(), 0..4), 0..3)),
                0..3,
            )
        ) {
            let mut r = ExportTraceServiceRequest {
                resource_spans: resources
                    .into_iter()
                    .map(|(big, scopes)| ResourceSpans {
                        resource: big.then(|| Resource {
                            attributes: vec![big_value()],
                            ..Default::default()
                        }),
                        scope_spans: scopes
                            .into_iter()
                            .map(|spans| ScopeSpans { spans, ..Default::default() })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
            };
            let before = r.clone();
            let v = validate(&mut r, &limits(), NOW);
            proptest::prop_assert_eq!(v.changed, r != before);
        }
    }
}
