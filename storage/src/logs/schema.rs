//! The log index schema, its tokenizers, and how an OTLP record becomes a document.

use std::collections::BTreeMap;

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer, TokenizerManager};
use tantivy::{TantivyDocument, schema::OwnedValue};
use vantage_proto::json::any_value_to_json;
use vantage_proto::logs::{LogView, hex_id};
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};

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
    /// `service.name` lives under this JSON field so that `service.name:x` parses as is.
    pub const SERVICE: &str = "service";
    /// Trace id as lower-case hex.
    pub const TRACE_ID: &str = "trace_id";
    /// Span id as lower-case hex.
    pub const SPAN_ID: &str = "span_id";
    /// Log record attributes, searchable as `attributes.<key>`.
    pub const ATTRIBUTES: &str = "attributes";
    /// Resource attributes, searchable as `resource.<key>`.
    pub const RESOURCE: &str = "resource";
    /// Instrumentation scope: `scope.name`, `scope.version`.
    pub const SCOPE: &str = "scope";
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
    pub(crate) service: Field,
    pub(crate) trace_id: Field,
    pub(crate) span_id: Field,
    pub(crate) attributes: Field,
    pub(crate) resource: Field,
    pub(crate) scope: Field,
    pub(crate) event_name: Field,
    pub(crate) record: Field,
}

impl LogFields {
    pub(crate) fn new() -> Self {
        let mut b = Schema::builder();
        let keyword_json = || {
            // Raw tokens: attribute values match exactly, as an SRE filtering on
            // `attributes.http.method:GET` expects; dots in keys are paths.
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_expand_dots_enabled()
        };
        let timestamp = b.add_i64_field(names::TIMESTAMP, INDEXED | FAST);
        let observed_timestamp = b.add_i64_field(names::OBSERVED_TIMESTAMP, INDEXED | FAST);
        let lsn = b.add_u64_field(names::LSN, INDEXED | FAST);
        let severity_number = b.add_i64_field(names::SEVERITY_NUMBER, INDEXED | FAST);
        let severity_text = b.add_text_field(
            names::SEVERITY_TEXT,
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(LOWERCASE_KEYWORD)
                    .set_index_option(IndexRecordOption::Basic),
            ),
        );
        let body = b.add_text_field(
            names::BODY,
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let service = b.add_json_field(names::SERVICE, keyword_json());
        let trace_id = b.add_text_field(names::TRACE_ID, STRING);
        let span_id = b.add_text_field(names::SPAN_ID, STRING);
        // Fast too, so numeric ranges (`attributes.http.status_code:[500 TO 599]`) work.
        let attributes = b.add_json_field(names::ATTRIBUTES, keyword_json().set_fast("raw"));
        let resource = b.add_json_field(names::RESOURCE, keyword_json());
        let scope = b.add_json_field(names::SCOPE, keyword_json());
        let event_name = b.add_text_field(names::EVENT_NAME, STRING);
        let record = b.add_bytes_field(names::RECORD, STORED);
        LogFields {
            schema: b.build(),
            timestamp,
            observed_timestamp,
            lsn,
            severity_number,
            severity_text,
            body,
            service,
            trace_id,
            span_id,
            attributes,
            resource,
            scope,
            event_name,
            record,
        }
    }

    /// Builds the document for one record. `time_ns` is the effective event time.
    pub(crate) fn document(&self, view: &LogView<'_>, lsn: u64, time_ns: i64) -> TantivyDocument {
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
            let mut obj = BTreeMap::new();
            obj.insert("name".to_string(), OwnedValue::Str(service.to_string()));
            doc.add_object(self.service, obj);
        }
        if !r.trace_id.is_empty() {
            doc.add_text(self.trace_id, hex_id(&r.trace_id));
        }
        if !r.span_id.is_empty() {
            doc.add_text(self.span_id, hex_id(&r.span_id));
        }
        if !r.attributes.is_empty() {
            doc.add_object(self.attributes, attributes_object(&r.attributes));
        }
        if !view.resource.attributes.is_empty() {
            doc.add_object(self.resource, attributes_object(&view.resource.attributes));
        }
        if !view.scope.name.is_empty() || !view.scope.version.is_empty() {
            let mut obj = BTreeMap::new();
            obj.insert("name".to_string(), OwnedValue::Str(view.scope.name.clone()));
            obj.insert(
                "version".to_string(),
                OwnedValue::Str(view.scope.version.clone()),
            );
            doc.add_object(self.scope, obj);
        }
        if !r.event_name.is_empty() {
            doc.add_text(self.event_name, &r.event_name);
        }
        doc.add_bytes(self.record, &view.to_envelope());
        doc
    }
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
