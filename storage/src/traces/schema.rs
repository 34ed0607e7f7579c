//! The span index schema, how an OTLP span becomes a document, the stored envelope,
//! and trace/span id parsing.

use tantivy::TantivyDocument;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, any_value};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::Span;

/// Field names of the span index.
pub mod names {
    /// Trace id as 32 lower-case hex digits: an exact term, so trace-by-id is one term
    /// lookup per partition. Unlike log records, spans share their trace id with their
    /// siblings, so the term costs one posting list per trace, not per document.
    pub const TRACE_ID: &str = "trace_id";
    /// Trace id bytes 0..8, big-endian, as a column: groups search hits into traces
    /// without reading the doc store.
    pub const TRACE_HI: &str = "_trace_hi";
    /// Trace id bytes 8..16, big-endian, as a column.
    pub const TRACE_LO: &str = "_trace_lo";
    /// Span id as 16 hex digits (exact term).
    pub const SPAN_ID: &str = "span_id";
    /// Span id as a big-endian u64 column (dependency map).
    pub const SPAN: &str = "_span";
    /// Parent span id as a big-endian u64 column; 0 for a root span.
    pub const PARENT: &str = "_parent";
    /// Parent span id as 16 hex digits (exact term); absent for a root span.
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    /// The resource's `service.name` (exact term and string column).
    pub const SERVICE_NAME: &str = "service.name";
    /// Span name, i.e. the operation (exact term).
    pub const NAME: &str = "name";
    /// `service \0 kind \0 name`: one term per operation of a service, so the
    /// operations of a service are a prefix walk of the term dictionary, not a scan.
    pub const OPERATION: &str = "_operation";
    /// OTLP span kind number (0..=5).
    pub const KIND: &str = "kind";
    /// Start time, ns since the epoch (column).
    pub const START: &str = "start_time_unix_nano";
    /// End time, ns since the epoch (column).
    pub const END: &str = "end_time_unix_nano";
    /// End minus start, ns (column).
    pub const DURATION: &str = "duration_ns";
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub const STATUS_CODE: &str = "status_code";
    /// `key=value` for every span and resource attribute (values as their text form):
    /// tag search matches keys and exact values.
    pub const TAG: &str = "_tag";
    /// WAL sequence number of the batch the span came in.
    pub const LSN: &str = "lsn";
    /// The exact span with its resource and scope (protobuf envelope); the only stored
    /// field.
    pub const RECORD: &str = "record";
}

/// Longest `key=value` tag term indexed. Longer ones stay in the stored span but are not
/// searchable: tags are for matching short values (ids, codes, names), and Tantivy
/// refuses terms past 64 KiB.
pub const MAX_TAG_TERM_BYTES: usize = 1024;

/// OTLP status code of a failed span.
pub const STATUS_ERROR: i32 = 2;

/// Handles to every field of the span schema.
#[derive(Clone, Debug)]
pub(crate) struct TraceFields {
    pub(crate) schema: Schema,
    pub(crate) trace_id: Field,
    pub(crate) trace_hi: Field,
    pub(crate) trace_lo: Field,
    pub(crate) span_id: Field,
    pub(crate) span: Field,
    pub(crate) parent: Field,
    pub(crate) parent_span_id: Field,
    pub(crate) service_name: Field,
    pub(crate) name: Field,
    pub(crate) operation: Field,
    pub(crate) kind: Field,
    pub(crate) start: Field,
    pub(crate) end: Field,
    pub(crate) duration: Field,
    pub(crate) status_code: Field,
    pub(crate) tag: Field,
    pub(crate) lsn: Field,
    pub(crate) record: Field,
}

impl TraceFields {
    pub(crate) fn new() -> Self {
        let mut b = Schema::builder();
        // Exact keywords, never scored: no norms, no frequencies.
        let keyword = || {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_fieldnorms(false)
                    .set_index_option(IndexRecordOption::Basic),
            )
        };
        let trace_id = b.add_text_field(names::TRACE_ID, keyword());
        let trace_hi = b.add_u64_field(names::TRACE_HI, FAST);
        let trace_lo = b.add_u64_field(names::TRACE_LO, FAST);
        let span_id = b.add_text_field(names::SPAN_ID, keyword());
        let span = b.add_u64_field(names::SPAN, FAST);
        let parent = b.add_u64_field(names::PARENT, FAST);
        let parent_span_id = b.add_text_field(names::PARENT_SPAN_ID, keyword());
        let service_name = b.add_text_field(names::SERVICE_NAME, keyword().set_fast("raw"));
        let name = b.add_text_field(names::NAME, keyword());
        let operation = b.add_text_field(names::OPERATION, keyword());
        let kind = b.add_i64_field(names::KIND, INDEXED | FAST);
        let start = b.add_i64_field(names::START, FAST);
        let end = b.add_i64_field(names::END, FAST);
        let duration = b.add_i64_field(names::DURATION, FAST);
        let status_code = b.add_i64_field(names::STATUS_CODE, INDEXED | FAST);
        let tag = b.add_text_field(names::TAG, keyword());
        let lsn = b.add_u64_field(names::LSN, FAST);
        let record = b.add_bytes_field(names::RECORD, STORED);
        TraceFields {
            schema: b.build(),
            trace_id,
            trace_hi,
            trace_lo,
            span_id,
            span,
            parent,
            parent_span_id,
            service_name,
            name,
            operation,
            kind,
            start,
            end,
            duration,
            status_code,
            tag,
            lsn,
            record,
        }
    }

    /// Builds the document of one span; `envelope` is its stored form
    /// ([`EnvelopeEncoder`]).
    pub(crate) fn document(
        &self,
        resource: &Resource,
        service: &str,
        span: &Span,
        lsn: u64,
        envelope: &[u8],
    ) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        let (hi, lo) = trace_words(&span.trace_id);
        doc.add_text(self.trace_id, hex::encode(&span.trace_id));
        doc.add_u64(self.trace_hi, hi);
        doc.add_u64(self.trace_lo, lo);
        doc.add_text(self.span_id, hex::encode(&span.span_id));
        doc.add_u64(self.span, span_word(&span.span_id));
        let parent = span_word(&span.parent_span_id);
        doc.add_u64(self.parent, parent);
        if parent != 0 {
            doc.add_text(self.parent_span_id, hex::encode(&span.parent_span_id));
        }
        doc.add_text(self.service_name, service);
        doc.add_text(self.name, &span.name);
        doc.add_text(
            self.operation,
            operation_term(service, span.kind, &span.name),
        );
        doc.add_i64(self.kind, i64::from(span.kind));
        let (start, end) = (
            clamp_ns(span.start_time_unix_nano),
            clamp_ns(span.end_time_unix_nano),
        );
        doc.add_i64(self.start, start);
        doc.add_i64(self.end, end);
        doc.add_i64(self.duration, end.saturating_sub(start).max(0));
        let status = span.status.as_ref().map_or(0, |s| s.code);
        doc.add_i64(self.status_code, i64::from(status));
        for kv in resource.attributes.iter().chain(&span.attributes) {
            if let Some(term) = tag_term(&kv.key, kv.value.as_ref()) {
                doc.add_text(self.tag, term);
            }
        }
        doc.add_u64(self.lsn, lsn);
        doc.add_bytes(self.record, envelope);
        doc
    }
}

/// The `_operation` term of a span.
pub(crate) fn operation_term(service: &str, kind: i32, name: &str) -> String {
    format!("{service}\0{kind}\0{name}")
}

/// The `key=value` term of an attribute, if it is short enough to index.
pub(crate) fn tag_term(key: &str, value: Option<&AnyValue>) -> Option<String> {
    let term = format!("{key}={}", value.map(tag_value).unwrap_or_default());
    (term.len() <= MAX_TAG_TERM_BYTES).then_some(term)
}

/// The text an attribute value is matched as: strings as they are, numbers and booleans
/// as Jaeger and Tempo print them, bytes as hex, arrays and maps as JSON.
pub fn tag_value(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(_) => vantage_proto::json::any_value_to_json(value).to_string(),
    }
}

/// Encodes stored envelopes (a `ResourceSpans` holding one scope and one span) without
/// re-encoding the shared resource and scope for every span: protobuf messages
/// concatenate, so their encoded fields are kept and reused.
#[derive(Default)]
pub(crate) struct EnvelopeEncoder {
    resource_field: Vec<u8>,
    scope_field: Vec<u8>,
    span: Vec<u8>,
    out: Vec<u8>,
}

impl EnvelopeEncoder {
    /// Sets the resource of the spans that follow.
    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        self.resource_field.clear();
        prost::encoding::message::encode(1, resource, &mut self.resource_field);
    }

    /// Sets the scope of the spans that follow.
    pub(crate) fn set_scope(&mut self, scope: &InstrumentationScope) {
        self.scope_field.clear();
        prost::encoding::message::encode(1, scope, &mut self.scope_field);
    }

    /// The envelope of one span under the current resource and scope.
    pub(crate) fn encode(&mut self, span: &Span) -> &[u8] {
        use prost::encoding::{WireType, encode_key, encode_varint};
        self.span.clear();
        prost::encoding::message::encode(2, span, &mut self.span);
        let scope_spans_len = self.scope_field.len() + self.span.len();
        self.out.clear();
        self.out.extend_from_slice(&self.resource_field);
        encode_key(2, WireType::LengthDelimited, &mut self.out);
        encode_varint(scope_spans_len as u64, &mut self.out);
        self.out.extend_from_slice(&self.scope_field);
        self.out.extend_from_slice(&self.span);
        &self.out
    }
}

/// A trace id as its two big-endian words (ids are 16 bytes after validation; anything
/// else is zero-padded or cut the same way at query time).
pub(crate) fn trace_words(id: &[u8]) -> (u64, u64) {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id[..n]);
    (
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
    )
}

/// A span id as a big-endian word; 0 when absent.
pub(crate) fn span_word(id: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id[..n]);
    u64::from_be_bytes(bytes)
}

/// Nanoseconds as i64, saturating (validation keeps real data far from the edge).
pub(crate) fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Why a trace id in a request cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdError {
    /// Not 1 to 32 hex digits.
    #[error("trace id {0:?} is not 1 to 32 hex digits")]
    Malformed(String),
    /// All zero: OTLP's "no trace".
    #[error("trace id {0:?} is all zero, which means no trace")]
    Zero(String),
}

/// Parses a trace id: up to 32 hex digits, left-padded with zeros (Jaeger prints 64-bit
/// ids as 16 digits and drops leading zeros), never all zero.
pub fn parse_trace_id(text: &str) -> Result<[u8; 16], TraceIdError> {
    let t = text.trim();
    if t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TraceIdError::Malformed(text.to_string()));
    }
    let padded = format!("{t:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(padded, &mut id).map_err(|_| TraceIdError::Malformed(text.to_string()))?;
    if id == [0u8; 16] {
        return Err(TraceIdError::Zero(text.to_string()));
    }
    Ok(id)
}

/// The id of a trace as its two words, back to bytes.
pub(crate) fn trace_id_bytes(hi: u64, lo: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hi.to_be_bytes());
    id[8..].copy_from_slice(&lo.to_be_bytes());
    id
}

/// `service.name` of a resource, or the OTel SDK default for a missing one.
pub fn service_name(resource: &Resource) -> &str {
    vantage_proto::logs::string_attribute(&resource.attributes, vantage_proto::logs::SERVICE_NAME)
        .unwrap_or(UNKNOWN_SERVICE)
}

/// What the OTel SDKs call a service without `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;
    use vantage_proto::otlp::common::v1::KeyValue;
    use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};

    fn reference(resource: &Resource, scope: &InstrumentationScope, span: &Span) -> Vec<u8> {
        ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope.clone()),
                spans: vec![span.clone()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
        .encode_to_vec()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    proptest! {
        #[test]
        fn envelopes_match_the_reference_encoding(
            service in ".{0,20}",
            scope_name in ".{0,10}",
            names in proptest::collection::vec(".{0,30}", 1..5),
            start in any::<u64>(),
            attrs in proptest::collection::vec(("[a-z.]{1,10}", ".{0,20}"), 0..4),
        ) {
            let resource = Resource { attributes: vec![kv("service.name", &service)], ..Default::default() };
            let scope = InstrumentationScope { name: scope_name, ..Default::default() };
            let mut enc = EnvelopeEncoder::default();
            enc.set_resource(&resource);
            enc.set_scope(&scope);
            for name in names {
                let span = Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name,
                    start_time_unix_nano: start,
                    attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                    ..Default::default()
                };
                let encoded = enc.encode(&span).to_vec();
                prop_assert_eq!(&encoded, &reference(&resource, &scope, &span));
                let back = ResourceSpans::decode(encoded.as_slice()).unwrap();
                prop_assert_eq!(&back.scope_spans[0].spans[0], &span);
            }
        }

        #[test]
        fn trace_ids_round_trip_through_hex(id in any::<[u8; 16]>()) {
            prop_assume!(id != [0u8; 16]);
            prop_assert_eq!(parse_trace_id(&hex::encode(id)).unwrap(), id);
            let (hi, lo) = trace_words(&id);
            prop_assert_eq!(trace_id_bytes(hi, lo), id);
        }

        #[test]
        fn trace_id_parsing_never_panics(text in ".{0,40}") {
            let _ = parse_trace_id(&text);
        }
    }

    #[test]
    fn malformed_trace_ids_are_refused() {
        assert!(matches!(
            parse_trace_id(""),
            Err(TraceIdError::Malformed(_))
        ));
        assert!(matches!(
            parse_trace_id("xyz"),
            Err(TraceIdError::Malformed(_))
        ));
        assert!(matches!(
            parse_trace_id(&"a".repeat(33)),
            Err(TraceIdError::Malformed(_))
        ));
        assert!(matches!(
            parse_trace_id("+1"),
            Err(TraceIdError::Malformed(_))
        ));
        assert!(matches!(
            parse_trace_id("é"),
            Err(TraceIdError::Malformed(_))
        ));
        assert!(matches!(
            parse_trace_id(&"0".repeat(32)),
            Err(TraceIdError::Zero(_))
        ));
        let short = parse_trace_id("abc").unwrap();
        assert_eq!(hex::encode(short), format!("{:0>32}", "abc"));
    }

    #[test]
    fn tags_are_key_equals_text_value_and_bounded() {
        let int = AnyValue {
            value: Some(any_value::Value::IntValue(200)),
        };
        assert_eq!(
            tag_term("http.status_code", Some(&int)).as_deref(),
            Some("http.status_code=200")
        );
        let long = AnyValue {
            value: Some(any_value::Value::StringValue(
                "x".repeat(MAX_TAG_TERM_BYTES),
            )),
        };
        assert_eq!(tag_term("k", Some(&long)), None);
        assert_eq!(span_word(&[]), 0);
        assert_eq!(span_word(&[0, 0, 0, 0, 0, 0, 0, 1]), 1);
    }
}
