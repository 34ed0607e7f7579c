//! The log index schema, its tokenizers, and how an OTLP record becomes a document.

use std::collections::BTreeMap;

#[cfg(test)]
use tantivy::TantivyDocument;
use tantivy::schema::OwnedValue;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::TokenizerManager;
#[cfg(test)]
use vantage_proto::json::any_value_to_json;
#[cfg(test)]
use vantage_proto::logs::LogView;
use vantage_proto::logs::{decode_envelope, hex_id};
use vantage_proto::logs_ref::{KeyValueRef, LogRecordRef, ResourceRef, ScopeRef, ValueRef};
#[cfg(test)]
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
#[cfg(test)]
use vantage_proto::otlp::logs::v1::LogRecord;
use vantage_proto::otlp::logs::v1::ResourceLogs;
#[cfg(test)]
use vantage_proto::otlp::resource::v1::Resource;

/// The resource attribute the `service.name` field holds (when it is a string).
pub(crate) const SERVICE_NAME_KEY: &str = "service.name";

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
    /// The exact record (a protobuf envelope, compact: see `STORED_COMPACT`); the only
    /// stored field.
    pub const RECORD: &str = "record";
}

/// Versions of the log schema. Each partition keeps the schema it was created with
/// (Tantivy stores it in the partition's `meta.json`; the version is also written to
/// [`SCHEMA_VERSION_FILE`]), so partitions of an older version stay searchable and take
/// late records in their own layout. Every version has the same fields in the same
/// order; they differ in what is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SchemaVersion {
    /// Up to session 6 (no version file): `severity_number` is a term and a column, and
    /// the resource JSON holds `service.name` again next to the `service.name` field.
    V1,
    /// `severity_number` is a column only (its equality and range queries read the
    /// column; ranges already did), and a string `service.name` is indexed once, in the
    /// `service.name` field, not again in the resource JSON (`resource.service.name`
    /// queries are rewritten to ask both). Two fewer terms per record.
    V2,
    /// As V2, but a trace or span id's bucket term is the hex of its first 12 bits (4,096
    /// buckets), not 16: a 1 s segment of 100 k records held ~35 k distinct terms of
    /// each, nearly one per id; 12 bits cost ~4 % less indexing and merging CPU
    /// (measured in-process). A lookup reads 16 times more column values per bucket: at
    /// most 2,400 in a 10 M-record day, 244 k in a billion, under a millisecond.
    V3,
}

impl SchemaVersion {
    /// The version new partitions are created with.
    pub(crate) const CURRENT: SchemaVersion = SchemaVersion::V3;

    /// Every version this code reads, oldest first.
    pub(crate) const ALL: [SchemaVersion; 3] =
        [SchemaVersion::V1, SchemaVersion::V2, SchemaVersion::V3];

    /// The number written to [`SCHEMA_VERSION_FILE`].
    pub(crate) fn number(self) -> u32 {
        match self {
            SchemaVersion::V1 => 1,
            SchemaVersion::V2 => 2,
            SchemaVersion::V3 => 3,
        }
    }

    /// Hex digits of an id's bucket term: its first 16 bits up to V2, 12 since V3.
    pub(crate) fn id_bucket_len(self) -> usize {
        match self {
            SchemaVersion::V1 | SchemaVersion::V2 => 4,
            SchemaVersion::V3 => 3,
        }
    }

    /// The version of a number read from [`SCHEMA_VERSION_FILE`].
    pub(crate) fn from_number(n: u32) -> Option<Self> {
        SchemaVersion::ALL.into_iter().find(|v| v.number() == n)
    }
}

/// File in a partition directory naming its schema version (decimal). Partitions
/// created before schema versions existed have none and are version 1.
pub(crate) const SCHEMA_VERSION_FILE: &str = "vantage-schema-version";

/// Handles to every field of the log schema.
#[derive(Clone, Debug)]
pub(crate) struct LogFields {
    pub(crate) version: SchemaVersion,
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
    /// The fields of schema `version`.
    pub(crate) fn for_version(version: SchemaVersion) -> Self {
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
        // 24 values: as a term it was one more posting per record for queries the column
        // answers (Tantivy runs ranges on fast fields from the column; equality is
        // rewritten to a one-value range, see `search::rewrite`).
        let severity_number = match version {
            SchemaVersion::V1 => b.add_i64_field(names::SEVERITY_NUMBER, INDEXED | FAST),
            SchemaVersion::V2 | SchemaVersion::V3 => b.add_i64_field(names::SEVERITY_NUMBER, FAST),
        };
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
            version,
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

    /// Builds the document for one record as a `TantivyDocument`. `time_ns` is the
    /// effective event time; `envelope` encodes the record with its resource and scope
    /// ([`EnvelopeEncoder`]). The reference for `document::LogDoc`, which indexes the
    /// same values without copying them: tests check that the two agree.
    #[cfg(test)]
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
            doc.add_text(self.trace_bucket, &bucket[..self.version.id_bucket_len()]);
            doc.add_u64(self.trace_hi, hi);
            doc.add_u64(self.trace_lo, lo);
        }
        if !r.span_id.is_empty() {
            let (bucket, hi, _) = id_parts(&r.span_id);
            doc.add_text(self.span_bucket, &bucket[..self.version.id_bucket_len()]);
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
            let mut resource = attributes_object(&view.resource.attributes);
            // Version 2 indexes the service name once, in `service.name`: the resource
            // JSON leaves it out when it is that same string (with duplicate keys the
            // JSON holds the last value and the field the first; then both stay).
            if self.version >= SchemaVersion::V2
                && let Some(service) = view.service_name()
                && matches!(resource.get(SERVICE_NAME_KEY), Some(OwnedValue::Str(s)) if s == service)
            {
                resource.remove(SERVICE_NAME_KEY);
            }
            if !resource.is_empty() {
                doc.add_object(self.resource, resource);
            }
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

/// First byte of a stored record in the first compact form (up to session 7): then the
/// left-out flags and a `ResourceLogs` envelope holding the one record. Still read; no
/// longer written. A stored record beginning with neither this nor [`STORED_SHARED_FIRST`]
/// is a plain `ResourceLogs` envelope as the first versions wrote it: those always begin
/// with the resource field's key (0x0a), so the three never collide.
pub(crate) const STORED_COMPACT: u8 = 0x02;

/// First byte of a stored record in the current form ([`EnvelopeEncoder`]): the resource
/// and scope first, each behind its length, then the left-out flags and the record's own
/// fields. Every record of a batch then begins with the same bytes, which zstd stores as
/// one match; the first form split them with the varying lengths of the envelope's
/// nested messages (measured: 3.5 bytes a record less in the doc store).
pub(crate) const STORED_SHARED_FIRST: u8 = 0x03;

/// Which parts of a compact stored record were left out because a column holds them
/// exactly: the flags byte of either compact form.
pub(crate) mod left_out {
    /// `time_unix_nano`: the `timestamp` column.
    pub(crate) const TIME: u8 = 1;
    /// `observed_time_unix_nano`: the `observed_timestamp` column.
    pub(crate) const OBSERVED: u8 = 2;
    /// A 16-byte `trace_id`: the `_trace_hi` and `_trace_lo` columns.
    pub(crate) const TRACE_ID: u8 = 4;
    /// An 8-byte `span_id`: the `_span` column.
    pub(crate) const SPAN_ID: u8 = 8;
    /// Double values of attributes, each held exactly by its `_attributes_numeric.<key>`
    /// column ([`STORED_SHARED_FIRST`](super::STORED_SHARED_FIRST) form only): after the flags, a varint count and
    /// the varint position of each such attribute, which is stored with its key only.
    pub(crate) const DOUBLES: u8 = 16;
}

/// Attributes of a record looked at for doubles to leave out: the check is quadratic,
/// and records with more attributes than this are rare and keep their values.
const MAX_ATTRIBUTES_FOR_DOUBLES: usize = 32;

/// What [`doubles_to_leave_out`] reads of an attribute: the borrowed form the indexer
/// reads and the prost form of the tests' reference.
pub(crate) trait DoubleAttribute {
    /// The key.
    fn key(&self) -> &str;
    /// `key_strindex` (profiles only).
    fn key_strindex(&self) -> i32;
    /// The value, when it is a double.
    fn double(&self) -> Option<f64>;
}

impl DoubleAttribute for KeyValueRef<'_> {
    fn key(&self) -> &str {
        self.key
    }

    fn key_strindex(&self) -> i32 {
        self.key_strindex
    }

    fn double(&self) -> Option<f64> {
        match self.value.as_ref()?.value.as_ref()? {
            ValueRef::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }
}

#[cfg(test)]
impl DoubleAttribute for KeyValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn key_strindex(&self) -> i32 {
        self.key_strindex
    }

    fn double(&self) -> Option<f64> {
        match self.value.as_ref()?.value.as_ref()? {
            any_value::Value::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }
}

/// Positions of the attributes of `attributes` whose values the stored record may
/// leave out because the `_attributes_numeric.<key>` column of the document holds them
/// exactly: finite non-zero doubles (a column of any double is a double column, and
/// the column keeps the bits) at the top level, under a key that is a plain dotted
/// path no other attribute shares or extends (so no other value lands in that column:
/// keys are paths, dots expanded) and with no other part set.
fn doubles_to_leave_out<A: DoubleAttribute>(attributes: &[A], out: &mut Vec<usize>) {
    out.clear();
    if attributes.len() > MAX_ATTRIBUTES_FOR_DOUBLES {
        return;
    }
    let plain_path = |key: &str| {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let extends = |long: &str, short: &str| {
        long.len() > short.len() && long.starts_with(short) && long.as_bytes()[short.len()] == b'.'
    };
    for (i, kv) in attributes.iter().enumerate() {
        let Some(d) = kv.double() else {
            continue;
        };
        let key = kv.key();
        if !d.is_finite() || d == 0.0 || !plain_path(key) {
            continue;
        }
        // No other part set (`key_strindex`, profiles only): the key alone is stored.
        if kv.key_strindex() != 0 {
            continue;
        }
        let shared = attributes.iter().enumerate().any(|(j, other)| {
            j != i && (other.key() == key || extends(other.key(), key) || extends(key, other.key()))
        });
        if !shared {
            out.push(i);
        }
    }
}

/// Appends field `tag` holding the encoded message `message`, as prost encodes an
/// embedded message.
fn encode_message_bytes(tag: u32, message: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(message.len() as u64, out);
    out.extend_from_slice(message);
}

/// Encodes stored records in the [`STORED_SHARED_FIRST`] form:
/// `[0x03][len][resource field][len][scope field][left-out flags][record fields]`, the
/// record without the timestamps and ids the columns already hold exactly (random ids
/// and nanosecond times are the part zstd cannot shrink: ~20 bytes a record). The shared
/// resource and scope are copied once per batch and reused as bytes, and a record's
/// fields are copied as they were encoded: for what prost encodes, byte for byte what
/// encoding the decoded record gives (the tests' [`ReferenceEnvelopeEncoder`]).
#[derive(Default)]
pub(crate) struct EnvelopeEncoder {
    /// `[len][ResourceLogs.resource as an encoded field][len][ScopeLogs.scope as an
    /// encoded field]`: the bytes every record under them begins with (after the tag).
    shared: Vec<u8>,
    /// `ResourceLogs.resource` as encoded field bytes.
    resource_field: Vec<u8>,
    /// `ScopeLogs.scope` as encoded field bytes.
    scope_field: Vec<u8>,
    /// Positions of the attributes whose doubles the current record leaves out.
    doubles: Vec<usize>,
}

impl EnvelopeEncoder {
    /// Sets the resource of the records that follow.
    pub(crate) fn set_resource(&mut self, resource: &ResourceRef<'_>) {
        self.resource_field.clear();
        encode_message_bytes(1, resource.raw, &mut self.resource_field);
        self.shared = shared_prefix(&self.resource_field, &self.scope_field);
    }

    /// Sets the scope of the records that follow.
    pub(crate) fn set_scope(&mut self, scope: &ScopeRef<'_>) {
        self.scope_field.clear();
        encode_message_bytes(1, scope.raw, &mut self.scope_field);
        self.shared = shared_prefix(&self.resource_field, &self.scope_field);
    }

    /// About how many bytes the stored forms of `records` take under the current
    /// resource and scope: room to reserve.
    pub(crate) fn stored_len(&self, records: &[LogRecordRef<'_>]) -> usize {
        // The first byte, the flags and up to four varints of left-out doubles.
        let per_record = self.shared.len() + 2 + 8;
        records.iter().map(|r| per_record + r.raw.len()).sum()
    }

    /// Appends the stored form of one record under the current resource and scope to
    /// `out` (a batch keeps all of its stored records in one buffer).
    pub(crate) fn encode_into(&mut self, record: &LogRecordRef<'_>, out: &mut Vec<u8>) {
        let flags = left_out_flags(
            record.time_unix_nano,
            record.observed_time_unix_nano,
            record.trace_id.len(),
            record.span_id.len(),
        );
        doubles_to_leave_out(&record.attributes, &mut self.doubles);
        let flags = begin_stored(&self.shared, flags, &self.doubles, out);
        let mut attribute = 0;
        for (tag, field) in record.fields() {
            let left_out = match tag {
                1 => flags & left_out::TIME != 0,
                9 => flags & left_out::TRACE_ID != 0,
                10 => flags & left_out::SPAN_ID != 0,
                11 => flags & left_out::OBSERVED != 0,
                6 => {
                    attribute += 1;
                    if self.doubles.contains(&(attribute - 1)) {
                        // Only the key: `doubles_to_leave_out` saw that nothing else is set.
                        encode_key_only(record.attributes[attribute - 1].key, out);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            };
            if !left_out {
                out.extend_from_slice(field);
            }
        }
    }
}

/// `KeyValue { key }` as `LogRecord.attributes` (field 6), as prost encodes it.
fn encode_key_only(key: &str, out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    encode_key(6, WireType::LengthDelimited, out);
    encode_varint(
        (1 + encoded_len_varint(key.len() as u64) + key.len()) as u64,
        out,
    );
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(key.len() as u64, out);
    out.extend_from_slice(key.as_bytes());
}

/// `[len][resource field][len][scope field]`.
fn shared_prefix(resource_field: &[u8], scope_field: &[u8]) -> Vec<u8> {
    use prost::encoding::encode_varint;
    let mut shared = Vec::with_capacity(resource_field.len() + scope_field.len() + 8);
    encode_varint(resource_field.len() as u64, &mut shared);
    shared.extend_from_slice(resource_field);
    encode_varint(scope_field.len() as u64, &mut shared);
    shared.extend_from_slice(scope_field);
    shared
}

/// Appends a stored record's first byte, the shared prefix, the flags and the left-out
/// doubles; returns the flags.
fn begin_stored(shared: &[u8], mut flags: u8, doubles: &[usize], out: &mut Vec<u8>) -> u8 {
    use prost::encoding::encode_varint;
    if !doubles.is_empty() {
        flags |= left_out::DOUBLES;
    }
    out.push(STORED_SHARED_FIRST);
    out.extend_from_slice(shared);
    out.push(flags);
    if !doubles.is_empty() {
        encode_varint(doubles.len() as u64, out);
        for &i in doubles {
            encode_varint(i as u64, out);
        }
    }
    flags
}

/// [`EnvelopeEncoder`] on prost messages, encoding every field: the reference its
/// copies are checked against.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct ReferenceEnvelopeEncoder {
    resource_field: Vec<u8>,
    scope_field: Vec<u8>,
    doubles: Vec<usize>,
    out: Vec<u8>,
}

#[cfg(test)]
impl ReferenceEnvelopeEncoder {
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

    /// The stored form of one record under the current resource and scope.
    pub(crate) fn encode(&mut self, record: &LogRecord) -> &[u8] {
        let flags = left_out_flags(
            record.time_unix_nano,
            record.observed_time_unix_nano,
            record.trace_id.len(),
            record.span_id.len(),
        );
        doubles_to_leave_out(&record.attributes, &mut self.doubles);
        self.out.clear();
        let shared = shared_prefix(&self.resource_field, &self.scope_field);
        let flags = begin_stored(&shared, flags, &self.doubles, &mut self.out);
        encode_record_fields(record, flags, &self.doubles, &mut self.out);
        &self.out
    }
}

/// What the columns hold exactly of a record with these times and id lengths: see
/// `LogFields::document`.
fn left_out_flags(time_ns: u64, observed_ns: u64, trace_id_len: usize, span_id_len: usize) -> u8 {
    let mut flags = 0u8;
    if time_ns != 0 && i64::try_from(time_ns).is_ok() {
        flags |= left_out::TIME;
    }
    if observed_ns != 0 && i64::try_from(observed_ns).is_ok() {
        flags |= left_out::OBSERVED;
    }
    if trace_id_len == 16 {
        flags |= left_out::TRACE_ID;
    }
    if span_id_len == 8 {
        flags |= left_out::SPAN_ID;
    }
    flags
}

/// The first compact form ([`STORED_COMPACT`]), as session 7 wrote it: tests check that
/// records in it still read.
#[cfg(test)]
pub(crate) fn encode_first_compact(
    resource: &Resource,
    scope: &InstrumentationScope,
    record: &LogRecord,
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let flags = left_out_flags(
        record.time_unix_nano,
        record.observed_time_unix_nano,
        record.trace_id.len(),
        record.span_id.len(),
    );
    let mut record_field = Vec::new();
    encode_record(record, flags, &mut Vec::new(), &mut record_field);
    let mut scope_field = Vec::new();
    prost::encoding::message::encode(1, scope, &mut scope_field);
    let mut out = vec![STORED_COMPACT, flags];
    prost::encoding::message::encode(1, resource, &mut out);
    encode_key(2, WireType::LengthDelimited, &mut out);
    encode_varint((scope_field.len() + record_field.len()) as u64, &mut out);
    out.extend_from_slice(&scope_field);
    out.extend_from_slice(&record_field);
    out
}

/// `ScopeLogs.log_records` (field 2) holding `record` without the parts `flags` leaves
/// out; with no flags, byte for byte what prost encodes (fields in tag order).
#[cfg(test)]
fn encode_record(record: &LogRecord, flags: u8, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    scratch.clear();
    encode_record_fields(record, flags, &[], scratch);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
}

/// The fields of `record` (the message's body, no key or length) without the parts
/// `flags` leaves out and without the values of the attributes at `doubles`, appended
/// to `b`.
#[cfg(test)]
fn encode_record_fields(record: &LogRecord, flags: u8, doubles: &[usize], b: &mut Vec<u8>) {
    use prost::encoding::{bytes, fixed32, fixed64, int32, message, string, uint32};
    // Destructured so that a field added to the message fails to compile here.
    let LogRecord {
        time_unix_nano,
        observed_time_unix_nano,
        severity_number,
        severity_text,
        body,
        attributes,
        dropped_attributes_count,
        flags: trace_flags,
        trace_id,
        span_id,
        event_name,
    } = record;
    if *time_unix_nano != 0 && flags & left_out::TIME == 0 {
        fixed64::encode(1, time_unix_nano, b);
    }
    if *severity_number != 0 {
        int32::encode(2, severity_number, b);
    }
    if !severity_text.is_empty() {
        string::encode(3, severity_text, b);
    }
    if let Some(body) = body {
        message::encode(5, body, b);
    }
    for (i, kv) in attributes.iter().enumerate() {
        if doubles.contains(&i) {
            // Only the key: `doubles_to_leave_out` saw that nothing else is set.
            message::encode(
                6,
                &KeyValue {
                    key: kv.key.clone(),
                    ..Default::default()
                },
                b,
            );
        } else {
            message::encode(6, kv, b);
        }
    }
    if *dropped_attributes_count != 0 {
        uint32::encode(7, dropped_attributes_count, b);
    }
    if *trace_flags != 0 {
        fixed32::encode(8, trace_flags, b);
    }
    if !trace_id.is_empty() && flags & left_out::TRACE_ID == 0 {
        bytes::encode(9, trace_id, b);
    }
    if !span_id.is_empty() && flags & left_out::SPAN_ID == 0 {
        bytes::encode(10, span_id, b);
    }
    if *observed_time_unix_nano != 0 && flags & left_out::OBSERVED == 0 {
        fixed64::encode(11, observed_time_unix_nano, b);
    }
    if !event_name.is_empty() {
        string::encode(12, event_name, b);
    }
}

/// The column values a compact stored record may have left out, read only when its
/// flags say so.
pub(crate) trait LeftOutColumns {
    /// The `timestamp` column.
    fn time_ns(&self) -> Option<i64>;
    /// The `observed_timestamp` column.
    fn observed_ns(&self) -> Option<i64>;
    /// The `_trace_hi` and `_trace_lo` columns.
    fn trace(&self) -> Option<(u64, u64)>;
    /// The `_span` column.
    fn span(&self) -> Option<u64>;
    /// The double column `_attributes_numeric.<key>`.
    fn attribute_f64(&self, key: &str) -> Option<f64>;
}

/// Decodes a stored record, any form, putting back what a compact form left out.
pub(crate) fn decode_stored(
    stored: &[u8],
    columns: &dyn LeftOutColumns,
) -> Result<ResourceLogs, StoredRecordError> {
    let mut doubles = Vec::new();
    let (flags, mut out) = match stored.split_first() {
        Some((&STORED_COMPACT, rest)) => {
            let (&flags, envelope) = rest.split_first().ok_or(StoredRecordError::Truncated)?;
            if flags & left_out::DOUBLES != 0 {
                return Err(StoredRecordError::BadLeftOut);
            }
            (flags, decode_envelope(envelope)?)
        }
        Some((&STORED_SHARED_FIRST, rest)) => decode_shared_first(rest, &mut doubles)?,
        _ => return Ok(decode_envelope(stored)?),
    };
    let record = out
        .scope_logs
        .first_mut()
        .and_then(|sl| sl.log_records.first_mut())
        .ok_or(StoredRecordError::NoRecord)?;
    let missing = |what: &'static str| StoredRecordError::MissingColumn(what);
    if flags & left_out::TIME != 0 {
        let t = columns.time_ns().ok_or(missing(names::TIMESTAMP))?;
        record.time_unix_nano = u64::try_from(t).map_err(|_| missing(names::TIMESTAMP))?;
    }
    if flags & left_out::OBSERVED != 0 {
        let t = columns
            .observed_ns()
            .ok_or(missing(names::OBSERVED_TIMESTAMP))?;
        record.observed_time_unix_nano =
            u64::try_from(t).map_err(|_| missing(names::OBSERVED_TIMESTAMP))?;
    }
    if flags & left_out::TRACE_ID != 0 {
        let (hi, lo) = columns.trace().ok_or(missing(names::TRACE_HI))?;
        let mut id = Vec::with_capacity(16);
        id.extend_from_slice(&hi.to_be_bytes());
        id.extend_from_slice(&lo.to_be_bytes());
        record.trace_id = id;
    }
    if flags & left_out::SPAN_ID != 0 {
        record.span_id = columns
            .span()
            .ok_or(missing(names::SPAN))?
            .to_be_bytes()
            .to_vec();
    }
    for i in doubles {
        let kv = record
            .attributes
            .get_mut(i)
            .filter(|kv| kv.value.is_none())
            .ok_or(StoredRecordError::BadLeftOut)?;
        let d = columns
            .attribute_f64(&kv.key)
            .ok_or(missing(names::ATTRIBUTES_NUMERIC))?;
        kv.value = Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(d)),
        });
    }
    Ok(out)
}

/// The flags and envelope of a [`STORED_SHARED_FIRST`] record (after its first byte),
/// and in `doubles` the positions of the attributes whose values it left out: the
/// envelope is put together as the plain form would have encoded it and decoded.
fn decode_shared_first(
    bytes: &[u8],
    doubles: &mut Vec<usize>,
) -> Result<(u8, ResourceLogs), StoredRecordError> {
    use prost::encoding::{WireType, decode_varint, encode_key, encode_varint};
    let mut rest = bytes;
    let part = |rest: &mut &[u8]| -> Result<usize, StoredRecordError> {
        let len = decode_varint(rest)?;
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or(StoredRecordError::Truncated)
    };
    let resource_len = part(&mut rest)?;
    let (resource_field, after) = rest.split_at(resource_len);
    rest = after;
    let scope_len = part(&mut rest)?;
    let (scope_field, after) = rest.split_at(scope_len);
    let (&flags, mut fields) = after.split_first().ok_or(StoredRecordError::Truncated)?;
    if flags & left_out::DOUBLES != 0 {
        let n = decode_varint(&mut fields)?;
        if n == 0 || n > MAX_ATTRIBUTES_FOR_DOUBLES as u64 {
            return Err(StoredRecordError::BadLeftOut);
        }
        for _ in 0..n {
            let i = decode_varint(&mut fields)?;
            if i >= MAX_ATTRIBUTES_FOR_DOUBLES as u64 {
                return Err(StoredRecordError::BadLeftOut);
            }
            doubles.push(i as usize);
        }
    }
    let mut record_field = Vec::with_capacity(fields.len() + 6);
    encode_key(2, WireType::LengthDelimited, &mut record_field);
    encode_varint(fields.len() as u64, &mut record_field);
    record_field.extend_from_slice(fields);
    let mut envelope = Vec::with_capacity(bytes.len() + 12);
    envelope.extend_from_slice(resource_field);
    encode_key(2, WireType::LengthDelimited, &mut envelope);
    encode_varint(
        (scope_field.len() + record_field.len()) as u64,
        &mut envelope,
    );
    envelope.extend_from_slice(scope_field);
    envelope.extend_from_slice(&record_field);
    Ok((flags, decode_envelope(&envelope)?))
}

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredRecordError {
    /// Not a protobuf envelope.
    #[error("stored record does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The compact header ends early.
    #[error("stored record is truncated")]
    Truncated,
    /// The envelope holds no record.
    #[error("stored envelope holds no record")]
    NoRecord,
    /// The list of left-out attribute values does not fit the record.
    #[error("stored record's left-out attribute values do not fit its attributes")]
    BadLeftOut,
    /// A column the record left out has no value for it.
    #[error("stored record left out {0}, but the column has no value for it")]
    MissingColumn(&'static str),
}

/// An id as (bucket, first 8 bytes, next 8 bytes): the bucket is the hex of its first two
/// bytes (a partition's bucket term is the first [`SchemaVersion::id_bucket_len`] digits
/// of it); the words are big-endian, zero-padded (ids are 16 or 8 bytes by the OTLP
/// spec; anything else is padded or cut the same way at query time).
pub(crate) fn id_parts(id: &[u8]) -> (String, u64, u64) {
    let (bucket, hi, lo) = id_words(id);
    (hex_id(&bucket), hi, lo)
}

/// [`id_parts`] with the bucket's two bytes as they are (indexing writes their hex
/// without allocating).
pub(crate) fn id_words(id: &[u8]) -> ([u8; 2], u64, u64) {
    let mut bytes = [0u8; 16];
    let n = id.len().min(16);
    bytes[..n].copy_from_slice(&id[..n]);
    let hi = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    ([bytes[0], bytes[1]], hi, lo)
}

/// Registers the tokenizers the schema names; Tantivy does not persist them.
pub(crate) fn register_tokenizers(manager: &TokenizerManager) {
    // Replaces Tantivy's `default` (the body's) with the same tokens made in one pass.
    manager.register("default", super::tokenizer::BodyTokenizer::default());
    manager.register(crate::keyword::RAW, crate::keyword::raw());
    manager.register(LOWERCASE_KEYWORD, crate::keyword::raw_lowercase());
}

/// Nanoseconds as i64, saturating (validation keeps real data far from the edge).
pub(crate) fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

pub(crate) fn attributes_object(attributes: &[KeyValue]) -> BTreeMap<String, OwnedValue> {
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
pub(crate) fn split_numeric(
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
    use proptest::prelude::*;
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
        let mut enc = ReferenceEnvelopeEncoder::default();
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
                    let reference = view.to_envelope();
                    let stored = enc.encode(r).to_vec();
                    assert_eq!(
                        decode_stored(&stored, &DocColumns::of(r)).unwrap(),
                        decode_envelope(&reference).unwrap()
                    );
                    // The first compact form still reads the same.
                    let view_resource = rl.resource.as_ref().unwrap();
                    let first = encode_first_compact(
                        view_resource,
                        sl.scope
                            .as_ref()
                            .unwrap_or(&InstrumentationScope::default()),
                        r,
                    );
                    if first[1] == 0 {
                        // Nothing left out: the reference encoding behind the header.
                        assert_eq!(&first[2..], reference.as_slice());
                    }
                    assert_eq!(
                        decode_stored(&first, &DocColumns::of(r)).unwrap(),
                        decode_envelope(&reference).unwrap()
                    );
                    n += 1;
                }
            }
        }
        assert_eq!(n, 3);
    }

    /// The columns `LogFields::document` writes for `view`.
    struct DocColumns {
        time_ns: i64,
        observed_ns: i64,
        trace: Option<(u64, u64)>,
        span: Option<u64>,
        attributes: Vec<KeyValue>,
    }

    impl DocColumns {
        fn of(record: &LogRecord) -> Self {
            let effective = if record.time_unix_nano != 0 {
                record.time_unix_nano
            } else {
                record.observed_time_unix_nano
            };
            let id = |id: &[u8]| (!id.is_empty()).then(|| id_parts(id));
            DocColumns {
                time_ns: clamp_ns(effective),
                observed_ns: clamp_ns(record.observed_time_unix_nano),
                trace: id(&record.trace_id).map(|(_, hi, lo)| (hi, lo)),
                span: id(&record.span_id).map(|(_, hi, _)| hi),
                attributes: record.attributes.clone(),
            }
        }
    }

    impl LeftOutColumns for DocColumns {
        fn time_ns(&self) -> Option<i64> {
            Some(self.time_ns)
        }
        fn observed_ns(&self) -> Option<i64> {
            Some(self.observed_ns)
        }
        fn trace(&self) -> Option<(u64, u64)> {
            self.trace
        }
        fn span(&self) -> Option<u64> {
            self.span
        }
        fn attribute_f64(&self, key: &str) -> Option<f64> {
            self.attributes.iter().rev().find_map(|kv| match &kv.value {
                Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(d)),
                }) if kv.key == key => Some(*d),
                _ => None,
            })
        }
    }

    struct NoColumns;

    impl LeftOutColumns for NoColumns {
        fn time_ns(&self) -> Option<i64> {
            None
        }
        fn observed_ns(&self) -> Option<i64> {
            None
        }
        fn trace(&self) -> Option<(u64, u64)> {
            None
        }
        fn span(&self) -> Option<u64> {
            None
        }
        fn attribute_f64(&self, _key: &str) -> Option<f64> {
            None
        }
    }

    fn arb_record() -> impl Strategy<Value = LogRecord> {
        let time = prop_oneof![Just(0u64), any::<u64>(), 1u64..=i64::MAX as u64];
        let id = |max: usize| prop::collection::vec(any::<u8>(), 0..=max);
        (
            (time.clone(), time, any::<i32>(), ".{0,8}", ".{0,40}"),
            (
                prop::collection::vec(
                    (
                        "[a-z.]{1,8}",
                        prop_oneof![
                            any::<i64>().prop_map(any_value::Value::IntValue),
                            any::<f64>().prop_map(any_value::Value::DoubleValue),
                        ],
                    ),
                    0..4,
                ),
                any::<u32>(),
                any::<u32>(),
                prop_oneof![id(20), prop::collection::vec(any::<u8>(), 16)],
                prop_oneof![id(10), prop::collection::vec(any::<u8>(), 8)],
                ".{0,8}",
            ),
        )
            .prop_map(
                |(
                    (time, observed, severity, severity_text, body),
                    (attrs, dropped, flags, trace_id, span_id, event_name),
                )| LogRecord {
                    time_unix_nano: time,
                    observed_time_unix_nano: observed,
                    severity_number: severity,
                    severity_text,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body)),
                    }),
                    attributes: attrs
                        .into_iter()
                        .map(|(k, v)| KeyValue {
                            key: k,
                            value: Some(AnyValue { value: Some(v) }),
                            ..Default::default()
                        })
                        .collect(),
                    dropped_attributes_count: dropped,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                },
            )
    }

    proptest! {
        #[test]
        fn compact_records_round_trip_exactly(record in arb_record()) {
            let resource = Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("s".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let scope = InstrumentationScope { name: "lib".into(), ..Default::default() };
            let view = LogView { resource: &resource, scope: &scope, record: &record };
            let mut enc = ReferenceEnvelopeEncoder::default();
            enc.set_resource(&resource);
            enc.set_scope(&scope);
            let stored = enc.encode(&record).to_vec();
            prop_assert_eq!(stored[0], STORED_SHARED_FIRST);
            // Compared as encodings: a NaN double is not equal to itself.
            fn bytes(m: &impl prost::Message) -> Vec<u8> {
                m.encode_to_vec()
            }
            let back = decode_stored(&stored, &DocColumns::of(&record)).unwrap();
            prop_assert_eq!(bytes(&back), view.to_envelope());
            // What session 7 stored reads the same.
            let first = encode_first_compact(&resource, &scope, &record);
            prop_assert_eq!(first[0], STORED_COMPACT);
            prop_assert_eq!(bytes(&decode_stored(&first, &DocColumns::of(&record)).unwrap()), bytes(&back));
            // The plain envelope older versions stored still reads as it is.
            let old = decode_stored(&view.to_envelope(), &NoColumns).unwrap();
            prop_assert_eq!(bytes(&old.scope_logs[0].log_records[0]), bytes(&record));
        }

        #[test]
        fn nothing_left_out_is_prost_encoding(record in arb_record()) {
            let mut ours = Vec::new();
            encode_record(&record, 0, &mut Vec::new(), &mut ours);
            let mut reference = Vec::new();
            prost::encoding::message::encode(2, &record, &mut reference);
            prop_assert_eq!(ours, reference);
        }

        #[test]
        fn hostile_stored_bytes_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut compact = vec![STORED_COMPACT];
            compact.extend_from_slice(&bytes);
            let _ = decode_stored(&compact, &NoColumns);
            let mut shared_first = vec![STORED_SHARED_FIRST];
            shared_first.extend_from_slice(&bytes);
            let _ = decode_stored(&shared_first, &NoColumns);
            let _ = decode_stored(&bytes, &NoColumns);
        }
    }

    #[test]
    fn only_doubles_no_other_value_shares_a_column_with_are_left_out() {
        let kv = |k: &str, v: any_value::Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let d = any_value::Value::DoubleValue;
        let attributes = vec![
            kv("duration_ms", d(12.5)),                              // 0: left out
            kv("http.status_code", any_value::Value::IntValue(200)), // ints stay
            kv("a", d(1.5)),                                         // 2: "a.b" extends it
            kv("a.b", d(2.5)),                                       // 3
            kv("twice", d(1.0)),                                     // 4, 5: the key twice
            kv("twice", d(2.0)),
            kv("nan", d(f64::NAN)), // 6: not finite
            kv("zero", d(-0.0)),    // 7: zero
            kv("odd key", d(3.5)),  // 8: not a plain path
            kv("x..y", d(3.5)),     // 9
            kv("w.v", d(4.5)),      // 10: left out
            KeyValue {
                key_strindex: 7, // 11: a part the key-only form would lose
                ..kv("indexed", d(5.5))
            },
        ];
        let mut out = Vec::new();
        doubles_to_leave_out(&attributes, &mut out);
        assert_eq!(out, vec![0, 10]);
        let mut many = attributes.clone();
        many.resize(
            MAX_ATTRIBUTES_FOR_DOUBLES + 1,
            kv("pad", any_value::Value::IntValue(1)),
        );
        doubles_to_leave_out(&many, &mut out);
        assert!(out.is_empty());
        // Stored with the keys only, put back from the column.
        let record = LogRecord {
            attributes,
            ..Default::default()
        };
        let mut enc = ReferenceEnvelopeEncoder::default();
        enc.set_resource(&Resource::default());
        enc.set_scope(&InstrumentationScope::default());
        let stored = enc.encode(&record).to_vec();
        // Tag, two empty parts behind their lengths (3 bytes each), then the flags.
        assert_eq!(stored[7], left_out::DOUBLES);
        assert_eq!(&stored[8..11], &[2, 0, 10]);
        let back = decode_stored(&stored, &DocColumns::of(&record)).unwrap();
        let back = &back.scope_logs[0].log_records[0];
        assert_eq!(back.attributes.len(), record.attributes.len());
        for (a, b) in back.attributes.iter().zip(&record.attributes) {
            // NaN is not equal to itself: compare the encodings.
            assert_eq!(
                prost::Message::encode_to_vec(a),
                prost::Message::encode_to_vec(b)
            );
        }
        assert!(matches!(
            decode_stored(&stored, &NoColumns),
            Err(StoredRecordError::MissingColumn(_))
        ));
        // A position past the attributes, or one whose value is there, is refused.
        for bad in [[1u8, 11], [1, 1]] {
            let mut forged = stored[..8].to_vec();
            forged.extend_from_slice(&bad);
            forged.extend_from_slice(&stored[11..]);
            assert!(matches!(
                decode_stored(&forged, &DocColumns::of(&record)),
                Err(StoredRecordError::BadLeftOut)
            ));
        }
    }

    #[test]
    fn compact_record_without_its_columns_is_an_error() {
        let record = LogRecord {
            time_unix_nano: 5,
            trace_id: vec![1; 16],
            ..Default::default()
        };
        let mut enc = ReferenceEnvelopeEncoder::default();
        enc.set_resource(&Resource::default());
        enc.set_scope(&InstrumentationScope::default());
        let stored = enc.encode(&record).to_vec();
        // Tag, two empty parts behind their lengths (3 bytes each), then the flags.
        assert_eq!(stored[7], left_out::TIME | left_out::TRACE_ID);
        assert!(matches!(
            decode_stored(&stored, &NoColumns),
            Err(StoredRecordError::MissingColumn(_))
        ));
        for cut in 1..8 {
            assert!(matches!(
                decode_stored(&stored[..cut], &NoColumns),
                Err(StoredRecordError::Truncated | StoredRecordError::Decode(_))
            ));
        }
        let first = encode_first_compact(
            &Resource::default(),
            &InstrumentationScope::default(),
            &record,
        );
        assert!(matches!(
            decode_stored(&first, &NoColumns),
            Err(StoredRecordError::MissingColumn(_))
        ));
        assert!(matches!(
            decode_stored(&[STORED_COMPACT], &NoColumns),
            Err(StoredRecordError::Truncated)
        ));
        assert!(matches!(
            decode_stored(&[STORED_COMPACT, 0], &NoColumns),
            Err(StoredRecordError::NoRecord)
        ));
    }
}
