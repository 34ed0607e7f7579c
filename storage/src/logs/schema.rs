//! The log index schema, its tokenizers, and how an OTLP record becomes a document.

use std::collections::BTreeMap;

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer, TokenizerManager};
use tantivy::{TantivyDocument, schema::OwnedValue};
use vantage_proto::json::any_value_to_json;
use vantage_proto::logs::{LogView, hex_id};
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::LogRecord;
use vantage_proto::otlp::resource::v1::Resource;

/// Tokenizer for exact, case-insensitive keywords (severity text).
pub(crate) const LOWERCASE_KEYWORD: &str = "keyword_lowercase";

/// Field names as users write them in queries.
pub mod names {
    /// Event time in ns since the epoch (the record's time, else its observed time).
    pub const TIMESTAMP: &str = "timestamp";
    /// Observed time in ns since the epoch.
    pub const OBSERVED_TIMESTAMP: &str = "observed_timestamp";
    /// WAL sequence number of the batch the record came in (drives live tail).
    pub const LSN: &str = "lsn";
    /// OTLP severity number (1..24).
    pub const SEVERITY_NUMBER: &str = "severity_number";
    /// Severity text, matched case-insensitively.
    pub const SEVERITY_TEXT: &str = "severity_text";
    /// Full-text body; the default field of a query.
    pub const BODY: &str = "body";
    /// The resource's `service.name`, as a keyword (a field name with a dot parses as is).
    pub const SERVICE_NAME: &str = "service.name";
    /// Trace id as lower-case hex. Not a field: queries on it are rewritten to the
    /// bucket term and id columns below (see `search::rewrite`).
    pub const TRACE_ID: &str = "trace_id";
    /// Span id as lower-case hex; rewritten like `trace_id`.
    pub const SPAN_ID: &str = "span_id";
    /// First two bytes of the trace id, as a keyword: narrows a lookup to ~1/65536 of
    /// the documents before the exact columns are read.
    pub const TRACE_BUCKET: &str = "_trace_bucket";
    /// Trace id bytes 0..8 as a big-endian u64 column.
    pub const TRACE_HI: &str = "_trace_hi";
    /// Trace id bytes 8..16 as a big-endian u64 column.
    pub const TRACE_LO: &str = "_trace_lo";
    /// First two bytes of the span id, as a keyword.
    pub const SPAN_BUCKET: &str = "_span_bucket";
    /// Span id as a big-endian u64 column.
    pub const SPAN: &str = "_span";
    /// Log record attributes, searchable as `attributes.<key>`.
    pub const ATTRIBUTES: &str = "attributes";
    /// The numeric attributes, as columns only (not terms): queries on
    /// `attributes.<key>` with numbers are rewritten to them (see `search::rewrite`).
    pub const ATTRIBUTES_NUMERIC: &str = "_attributes_numeric";
    /// Resource attributes, searchable as `resource.<key>`.
    pub const RESOURCE: &str = "resource";
    /// Instrumentation scope name.
    pub const SCOPE_NAME: &str = "scope.name";
    /// Instrumentation scope version.
    pub const SCOPE_VERSION: &str = "scope.version";
    /// OTLP event name.
    pub const EVENT_NAME: &str = "event_name";
    /// The exact record (protobuf envelope); the only stored field.
    pub const RECORD: &str = "record";
}

/// Handles to every field of the log schema.
#[derive(Clone, Debug)]
pub(crate) struct LogFields {
    pub(crate) schema: Schema,
    pub(crate) timestamp: Field,
    pub(crate) observed_timestamp: Field,
    pub(crate) lsn: Field,
    pub(crate) severity_number: Field,
    pub(crate) severity_text: Field,
    pub(crate) body: Field,
    pub(crate) service_name: Field,
    pub(crate) trace_bucket: Field,
    pub(crate) trace_hi: Field,
    pub(crate) trace_lo: Field,
    pub(crate) span_bucket: Field,
    pub(crate) span: Field,
    pub(crate) attributes: Field,
    pub(crate) attributes_numeric: Field,
    pub(crate) resource: Field,
    pub(crate) scope_name: Field,
    pub(crate) scope_version: Field,
    pub(crate) event_name: Field,
    pub(crate) record: Field,
}

impl LogFields {
    pub(crate) fn new() -> Self {
        let mut b = Schema::builder();
        // Keywords match whole values and are never scored, so they need no field norms
        // (a byte per document and field saved).
        let keyword = |tokenizer: &str| {
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::Basic)
        };
        let keyword_text =
            |tokenizer: &str| TextOptions::default().set_indexing_options(keyword(tokenizer));
        // Raw tokens: attribute values match exactly, as an SRE filtering on
        // `attributes.http.method:GET` expects; dots in keys are paths.
        let keyword_json = || {
            JsonObjectOptions::default()
                .set_indexing_options(keyword("raw"))
                .set_expand_dots_enabled()
        };
        // Near-unique per record: an inverted index of them would be a term per document.
        // Columnar only; range filters and sorting read the column.
        let timestamp = b.add_i64_field(names::TIMESTAMP, FAST);
        let observed_timestamp = b.add_i64_field(names::OBSERVED_TIMESTAMP, FAST);
        let lsn = b.add_u64_field(names::LSN, FAST);
        let severity_number = b.add_i64_field(names::SEVERITY_NUMBER, INDEXED | FAST);
        let severity_text = b.add_text_field(names::SEVERITY_TEXT, keyword_text(LOWERCASE_KEYWORD));
        let body = b.add_text_field(
            names::BODY,
            TextOptions::default().set_indexing_options(
                // Positions for phrases; no norms, since hits are ordered by time, never
                // by relevance score.
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_fieldnorms(false)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let service_name = b.add_text_field(names::SERVICE_NAME, keyword_text("raw"));
        // Ids are unique per trace or span: as terms they cost a fifth of all indexing
        // CPU (measured). A two-byte bucket term plus exact columns costs almost nothing
        // to write and still finds an id without scanning.
        let trace_bucket = b.add_text_field(names::TRACE_BUCKET, keyword_text("raw"));
        let trace_hi = b.add_u64_field(names::TRACE_HI, FAST);
        let trace_lo = b.add_u64_field(names::TRACE_LO, FAST);
        let span_bucket = b.add_text_field(names::SPAN_BUCKET, keyword_text("raw"));
        let span = b.add_u64_field(names::SPAN, FAST);
        let attributes = b.add_json_field(names::ATTRIBUTES, keyword_json());
        // Columns of the numeric attributes only, for ranges. Making `attributes` itself
        // fast would also build a column of every string value: measured, 12 % more
        // indexing CPU and 5 % more disk for nothing a query uses.
        let attributes_numeric = b.add_json_field(
            names::ATTRIBUTES_NUMERIC,
            JsonObjectOptions::default()
                .set_fast("raw")
                .set_expand_dots_enabled(),
        );
        let resource = b.add_json_field(names::RESOURCE, keyword_json());
        let scope_name = b.add_text_field(names::SCOPE_NAME, keyword_text("raw"));
        let scope_version = b.add_text_field(names::SCOPE_VERSION, keyword_text("raw"));
        let event_name = b.add_text_field(names::EVENT_NAME, keyword_text("raw"));
        let record = b.add_bytes_field(names::RECORD, STORED);
        LogFields {
            schema: b.build(),
            timestamp,
            observed_timestamp,
            lsn,
            severity_number,
            severity_text,
            body,
            service_name,
            trace_bucket,
            trace_hi,
            trace_lo,
            span_bucket,
            span,
            attributes,
            attributes_numeric,
            resource,
            scope_name,
            scope_version,
            event_name,
            record,
        }
    }

    /// Builds the document for one record. `time_ns` is the effective event time;
    /// `envelope` encodes the record with its resource and scope ([`EnvelopeEncoder`]).
    pub(crate) fn document(
        &self,
        view: &LogView<'_>,
        lsn: u64,
        time_ns: i64,
        envelope: &[u8],
    ) -> TantivyDocument {
        let r = view.record;
        let mut doc = TantivyDocument::new();
        doc.add_i64(self.timestamp, time_ns);
        doc.add_i64(self.observed_timestamp, clamp_ns(r.observed_time_unix_nano));
        doc.add_u64(self.lsn, lsn);
        doc.add_i64(self.severity_number, i64::from(r.severity_number));
        if !r.severity_text.is_empty() {
            doc.add_text(self.severity_text, &r.severity_text);
        }
        if let Some(body) = &r.body {
            match &body.value {
                Some(any_value::Value::StringValue(s)) => doc.add_text(self.body, s),
                Some(_) => doc.add_text(self.body, any_value_to_json(body).to_string()),
                None => {}
            }
        }
        if let Some(service) = view.service_name() {
            doc.add_text(self.service_name, service);
        }
        if !r.trace_id.is_empty() {
            let (bucket, hi, lo) = id_parts(&r.trace_id);
            doc.add_text(self.trace_bucket, bucket);
            doc.add_u64(self.trace_hi, hi);
            doc.add_u64(self.trace_lo, lo);
        }
        if !r.span_id.is_empty() {
            let (bucket, hi, _) = id_parts(&r.span_id);
            doc.add_text(self.span_bucket, bucket);
            doc.add_u64(self.span, hi);
        }
        if !r.attributes.is_empty() {
            // Numbers go to columns only: as terms, measured-unique values like durations
            // cost as much as the ids did; queries on them are rewritten to the columns.
            let (text, numeric) = split_numeric(attributes_object(&r.attributes));
            if !numeric.is_empty() {
                doc.add_object(self.attributes_numeric, numeric);
            }
            if !text.is_empty() {
                doc.add_object(self.attributes, text);
            }
        }
        if !view.resource.attributes.is_empty() {
            doc.add_object(self.resource, attributes_object(&view.resource.attributes));
        }
        if !view.scope.name.is_empty() {
            doc.add_text(self.scope_name, &view.scope.name);
        }
        if !view.scope.version.is_empty() {
            doc.add_text(self.scope_version, &view.scope.version);
        }
        if !r.event_name.is_empty() {
            doc.add_text(self.event_name, &r.event_name);
        }
        doc.add_bytes(self.record, envelope);
        doc
    }
}

/// Encodes stored envelopes (a `ResourceLogs` holding one record, the same bytes as
/// [`LogView::to_envelope`]) without re-encoding the shared resource and scope for every
/// record: protobuf messages concatenate, so their encoded fields are kept and reused.
#[derive(Default)]
pub(crate) struct EnvelopeEncoder {
    /// `ResourceLogs.resource` as encoded field bytes.
    resource_field: Vec<u8>,
    /// `ScopeLogs.scope` as encoded field bytes.
    scope_field: Vec<u8>,
    record: Vec<u8>,
    out: Vec<u8>,
}

impl EnvelopeEncoder {
    /// Sets the resource of the records that follow.
    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        self.resource_field.clear();
        prost::encoding::message::encode(1, resource, &mut self.resource_field);
    }

    /// Sets the scope of the records that follow.
    pub(crate) fn set_scope(&mut self, scope: &InstrumentationScope) {
        self.scope_field.clear();
        prost::encoding::message::encode(1, scope, &mut self.scope_field);
    }

    /// The envelope of one record under the current resource and scope.
    pub(crate) fn encode(&mut self, record: &LogRecord) -> &[u8] {
        use prost::encoding::{WireType, encode_key, encode_varint};
        self.record.clear();
        prost::encoding::message::encode(2, record, &mut self.record);
        let scope_logs_len = self.scope_field.len() + self.record.len();
        self.out.clear();
        self.out.extend_from_slice(&self.resource_field);
        encode_key(2, WireType::LengthDelimited, &mut self.out);
        encode_varint(scope_logs_len as u64, &mut self.out);
        self.out.extend_from_slice(&self.scope_field);
        self.out.extend_from_slice(&self.record);
        &self.out
    }
}

/// An id as (bucket, first 8 bytes, next 8 bytes): the bucket is the hex of its first two
/// bytes; the words are big-endian, zero-padded (ids are 16 or 8 bytes by the OTLP
/// spec; anything else is padded or cut the same way at query time).
pub(crate) fn id_parts(id: &[u8]) -> (String, u64, u64) {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id[..n]);
    let hi = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    (hex_id(&bytes[..2]), hi, lo)
}

/// Registers the tokenizers the schema names; Tantivy does not persist them.
pub(crate) fn register_tokenizers(manager: &TokenizerManager) {
    manager.register(
        LOWERCASE_KEYWORD,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .build(),
    );
}

/// Nanoseconds as i64, saturating (validation keeps real data far from the edge).
pub(crate) fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn attributes_object(attributes: &[KeyValue]) -> BTreeMap<String, OwnedValue> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .map(owned_value)
                .unwrap_or(OwnedValue::Null);
            (kv.key.clone(), value)
        })
        .collect()
}

/// Splits an attribute object into its numeric leaves and everything else, keeping
/// nested maps on both sides. Numbers inside arrays stay with the text side.
fn split_numeric(
    object: BTreeMap<String, OwnedValue>,
) -> (BTreeMap<String, OwnedValue>, BTreeMap<String, OwnedValue>) {
    fn split(value: OwnedValue) -> (Option<OwnedValue>, Option<OwnedValue>) {
        match value {
            v @ (OwnedValue::I64(_) | OwnedValue::F64(_)) => (None, Some(v)),
            OwnedValue::Object(entries) => {
                let (mut text, mut numeric) = (Vec::new(), Vec::new());
                for (k, v) in entries {
                    let (t, n) = split(v);
                    if let Some(t) = t {
                        text.push((k.clone(), t));
                    }
                    if let Some(n) = n {
                        numeric.push((k, n));
                    }
                }
                (
                    (!text.is_empty()).then_some(OwnedValue::Object(text)),
                    (!numeric.is_empty()).then_some(OwnedValue::Object(numeric)),
                )
            }
            other => (Some(other), None),
        }
    }
    let (mut text, mut numeric) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in object {
        let (t, n) = split(v);
        if let Some(t) = t {
            text.insert(k.clone(), t);
        }
        if let Some(n) = n {
            numeric.insert(k, n);
        }
    }
    (text, numeric)
}

fn owned_value(value: &AnyValue) -> OwnedValue {
    match &value.value {
        None => OwnedValue::Null,
        Some(any_value::Value::StringValue(s)) => OwnedValue::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => OwnedValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => OwnedValue::I64(*i),
        Some(any_value::Value::DoubleValue(d)) => OwnedValue::F64(*d),
        Some(any_value::Value::ArrayValue(a)) => {
            OwnedValue::Array(a.values.iter().map(owned_value).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => OwnedValue::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .map(owned_value)
                        .unwrap_or(OwnedValue::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        // Bytes are indexed by their hex form so they can be matched at all.
        Some(any_value::Value::BytesValue(b)) => OwnedValue::Str(hex::encode(b)),
        Some(any_value::Value::StringValueStrindex(_)) => OwnedValue::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::logs::records;
    use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use vantage_proto::otlp::logs::v1::{ResourceLogs, ScopeLogs};

    #[test]
    fn envelopes_match_the_reference_encoding() {
        let kv = |k: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(k.repeat(3))),
            }),
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name")],
                    ..Default::default()
                }),
                scope_logs: vec![
                    ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "s".into(),
                            ..Default::default()
                        }),
                        log_records: vec![
                            LogRecord {
                                time_unix_nano: 1,
                                attributes: vec![kv("a")],
                                ..Default::default()
                            },
                            LogRecord::default(),
                        ],
                        schema_url: String::new(),
                    },
                    ScopeLogs {
                        scope: None,
                        log_records: vec![LogRecord::default()],
                        schema_url: String::new(),
                    },
                ],
                schema_url: String::new(),
            }],
        };
        let mut enc = EnvelopeEncoder::default();
        let mut n = 0;
        for rl in &request.resource_logs {
            enc.set_resource(rl.resource.as_ref().unwrap());
            for sl in &rl.scope_logs {
                enc.set_scope(
                    sl.scope
                        .as_ref()
                        .unwrap_or(&InstrumentationScope::default()),
                );
                for r in &sl.log_records {
                    let view = records(&request).nth(n).unwrap();
                    assert_eq!(enc.encode(r), view.to_envelope().as_slice());
                    n += 1;
                }
            }
        }
        assert_eq!(n, 3);
    }
}
