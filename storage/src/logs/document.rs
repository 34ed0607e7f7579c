//! Log documents that borrow from their batch's bytes instead of copying them.
//!
//! Tantivy indexes any [`Document`] in place: its indexing thread walks a document three
//! times (inverted index, columns, doc store) and then drops it. A `TantivyDocument`
//! costs a copy of every string and a `BTreeMap` per attribute object on the way in
//! and the frees on the way out (measured: malloc, free and memmove were a sixth of
//! the indexing thread). A [`LogDoc`] is a shared handle on the whole batch
//! ([`BatchDocs`]) plus the position of its record: values are read where they sit in
//! the encoded request (read in place by [`LogsRef`], not decoded), the resource object
//! is built once per `ResourceLogs`, and the stored envelopes of a batch sit in one
//! buffer.
//!
//! What is indexed is exactly what `LogFields::document` (the reference, kept for the
//! tests) writes: the same fields in the same order, objects with the same keys in the
//! same order (top-level attributes sorted by key, a repeated key keeping its last
//! value; nested lists as they came), numbers split from the rest the same way.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf};
use tantivy::schema::{Document, Field, OwnedValue, Value};
use vantage_proto::json::any_value_to_json;
use vantage_proto::logs_ref::{
    AnyValueRef, KeyValueRef, LogRecordRef, LogsRef, ResourceRef, ScopeRef, ValueRef,
};
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::KeyValue;
use yoke::Yoke;

use super::inflight::Permit;
use super::schema::{
    EnvelopeEncoder, LogFields, SERVICE_NAME_KEY, SchemaVersion, attributes_object, clamp_ns,
    id_words, split_numeric,
};

/// An encoded `ExportLogsServiceRequest` for [`super::LogIndexer::add_batch`] (as the
/// WAL holds it). Its documents borrow from its bytes until Tantivy has indexed them,
/// so they are moved in; a decoded request is encoded.
pub struct LogBatch(pub(crate) Bytes);

impl From<Bytes> for LogBatch {
    fn from(bytes: Bytes) -> Self {
        LogBatch(bytes)
    }
}

impl From<Vec<u8>> for LogBatch {
    fn from(bytes: Vec<u8>) -> Self {
        LogBatch(bytes.into())
    }
}

impl From<ExportLogsServiceRequest> for LogBatch {
    fn from(request: ExportLogsServiceRequest) -> Self {
        LogBatch(request.encode_to_vec().into())
    }
}

impl From<&ExportLogsServiceRequest> for LogBatch {
    fn from(request: &ExportLogsServiceRequest) -> Self {
        LogBatch(request.encode_to_vec().into())
    }
}

/// A batch's bytes with the request read from them. `Bytes` behind an `Arc`: yoke needs
/// a cart whose target stays put, and the WAL record's bytes are shared, not copied.
pub(crate) type BatchRequest = Yoke<LogsRef<'static>, Arc<Bytes>>;

/// Which part of an attribute value an object holds: numbers go to the
/// `_attributes_numeric` columns, everything else to the `attributes` terms (see
/// `split_numeric`); resource values and array elements are whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The whole value.
    All,
    /// Everything but numbers (numbers inside arrays included).
    Text,
    /// Integers and doubles only.
    Numeric,
}

/// What an attribute value holds on each side: `(text, numeric)`. A list holds what
/// its entries hold (an empty one nothing); anything not a number is text.
fn sides(value: Option<&AnyValueRef<'_>>) -> (bool, bool) {
    match value.and_then(|v| v.value.as_ref()) {
        Some(ValueRef::IntValue(_) | ValueRef::DoubleValue(_)) => (false, true),
        Some(ValueRef::KvlistValue(list)) => {
            let mut out = (false, false);
            for kv in list {
                let (t, n) = sides(kv.value.as_ref());
                out = (out.0 | t, out.1 | n);
                if out == (true, true) {
                    break;
                }
            }
            out
        }
        _ => (true, false),
    }
}

fn on_side(value: Option<&AnyValueRef<'_>>, side: Side) -> bool {
    match side {
        Side::All => true,
        Side::Text => sides(value).0,
        Side::Numeric => sides(value).1,
    }
}

/// Whether a value holds bytes anywhere: those are indexed as their hex form, a string
/// the request does not hold, so such attributes take the owned path.
fn has_bytes(value: Option<&AnyValueRef<'_>>) -> bool {
    match value.and_then(|v| v.value.as_ref()) {
        Some(ValueRef::BytesValue(_)) => true,
        Some(ValueRef::ArrayValue(a)) => a.iter().any(|v| has_bytes(Some(v))),
        Some(ValueRef::KvlistValue(l)) => l.iter().any(|kv| has_bytes(kv.value.as_ref())),
        _ => false,
    }
}

/// A value of a [`LogDoc`], borrowed from its batch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LogValue<'a> {
    Str(&'a str),
    U64(u64),
    I64(i64),
    Bytes(&'a [u8]),
    /// A record's top-level attributes as one object: `order` holds the positions of
    /// the attributes it has, by key, one per key.
    Attributes {
        attributes: &'a [KeyValueRef<'a>],
        order: &'a [u32],
        side: Side,
    },
    /// One attribute value, or the part of it on `side` (a missing value is null).
    Any(Option<&'a AnyValueRef<'a>>, Side),
    /// A value built once for many documents (resource objects) or for the rare
    /// attributes the borrowed form cannot express (bytes).
    Owned(&'a OwnedValue),
}

impl<'a> Value<'a> for LogValue<'a> {
    type ArrayIter = LogArrayIter<'a>;
    type ObjectIter = LogObjectIter<'a>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        match *self {
            LogValue::Str(s) => ReferenceValue::Leaf(ReferenceValueLeaf::Str(s)),
            LogValue::U64(v) => ReferenceValue::Leaf(ReferenceValueLeaf::U64(v)),
            LogValue::I64(v) => ReferenceValue::Leaf(ReferenceValueLeaf::I64(v)),
            LogValue::Bytes(b) => ReferenceValue::Leaf(ReferenceValueLeaf::Bytes(b)),
            LogValue::Attributes {
                attributes,
                order,
                side,
            } => ReferenceValue::Object(LogObjectIter::Top {
                attributes,
                order: order.iter(),
                side,
            }),
            LogValue::Any(value, side) => any_reference(value, side),
            LogValue::Owned(value) => owned_reference(value),
        }
    }
}

/// An attribute value as `owned_value` in the schema turns it into an `OwnedValue`.
fn any_reference<'a>(
    value: Option<&'a AnyValueRef<'a>>,
    side: Side,
) -> ReferenceValue<'a, LogValue<'a>> {
    let leaf = |l| ReferenceValue::Leaf(l);
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(ValueRef::StringValueStrindex(_)) => leaf(ReferenceValueLeaf::Null),
        Some(ValueRef::StringValue(s)) => leaf(ReferenceValueLeaf::Str(s)),
        Some(ValueRef::BoolValue(b)) => leaf(ReferenceValueLeaf::Bool(*b)),
        Some(ValueRef::IntValue(i)) => leaf(ReferenceValueLeaf::I64(*i)),
        Some(ValueRef::DoubleValue(d)) => leaf(ReferenceValueLeaf::F64(*d)),
        Some(ValueRef::ArrayValue(a)) => ReferenceValue::Array(LogArrayIter::Any(a.iter())),
        Some(ValueRef::KvlistValue(l)) => ReferenceValue::Object(LogObjectIter::Kv {
            entries: l.iter(),
            side,
        }),
        // `BatchBuilder::attributes` sends attributes with bytes the owned way.
        Some(ValueRef::BytesValue(_)) => {
            debug_assert!(false, "bytes attribute on the borrowed path");
            leaf(ReferenceValueLeaf::Null)
        }
    }
}

fn owned_reference(value: &OwnedValue) -> ReferenceValue<'_, LogValue<'_>> {
    match value {
        OwnedValue::Array(values) => ReferenceValue::Array(LogArrayIter::Owned(values.iter())),
        OwnedValue::Object(entries) => ReferenceValue::Object(LogObjectIter::Owned(entries.iter())),
        leaf => match Value::as_value(&leaf) {
            ReferenceValue::Leaf(l) => ReferenceValue::Leaf(l),
            // Arrays and objects are matched above.
            ReferenceValue::Array(_) | ReferenceValue::Object(_) => {
                ReferenceValue::Leaf(ReferenceValueLeaf::Null)
            }
        },
    }
}

/// Elements of an array value.
#[derive(Clone, Debug)]
pub(crate) enum LogArrayIter<'a> {
    Any(std::slice::Iter<'a, AnyValueRef<'a>>),
    Owned(std::slice::Iter<'a, OwnedValue>),
}

impl<'a> Iterator for LogArrayIter<'a> {
    type Item = LogValue<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            // Array elements are whole: `split_numeric` keeps numbers in arrays as text.
            LogArrayIter::Any(values) => values.next().map(|v| LogValue::Any(Some(v), Side::All)),
            LogArrayIter::Owned(values) => values.next().map(LogValue::Owned),
        }
    }
}

/// Entries of an object value.
#[derive(Clone, Debug)]
pub(crate) enum LogObjectIter<'a> {
    /// A record's attributes: see [`LogValue::Attributes`].
    Top {
        attributes: &'a [KeyValueRef<'a>],
        order: std::slice::Iter<'a, u32>,
        side: Side,
    },
    /// A nested list, in its order, repeated keys and all.
    Kv {
        entries: std::slice::Iter<'a, KeyValueRef<'a>>,
        side: Side,
    },
    Owned(std::slice::Iter<'a, (String, OwnedValue)>),
}

impl<'a> Iterator for LogObjectIter<'a> {
    type Item = (&'a str, LogValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            LogObjectIter::Top {
                attributes,
                order,
                side,
            } => {
                for &i in order.by_ref() {
                    let kv = &attributes[i as usize];
                    let value = kv.value.as_ref();
                    if on_side(value, *side) {
                        return Some((kv.key, LogValue::Any(value, *side)));
                    }
                }
                None
            }
            LogObjectIter::Kv { entries, side } => {
                for kv in entries.by_ref() {
                    let value = kv.value.as_ref();
                    if on_side(value, *side) {
                        return Some((kv.key, LogValue::Any(value, *side)));
                    }
                }
                None
            }
            LogObjectIter::Owned(entries) => entries
                .next()
                .map(|(k, v)| (k.as_str(), LogValue::Owned(v))),
        }
    }
}

/// How a record's attributes are indexed.
#[derive(Clone, Copy, Debug)]
enum RecordAttributes {
    /// None on either side.
    None,
    /// Read from the record: `order` is a range of [`BatchParts::order`].
    Borrowed {
        order: (u32, u32),
        text: bool,
        numeric: bool,
    },
    /// Built owned (attributes holding bytes): an index of [`BatchParts::owned`].
    Owned(u32),
}

/// What one document adds to its record: positions and the values computed once.
#[derive(Clone, Debug)]
struct RecordMeta {
    resource_logs: u32,
    scope_logs: u32,
    record: u32,
    version: SchemaVersion,
    time_ns: i64,
    /// `(bucket at [`BatchDocs::text`], hi, lo)`.
    trace: Option<(u32, u64, u64)>,
    /// `(bucket at [`BatchDocs::text`], id)`.
    span: Option<(u32, u64)>,
    /// A body that is not a string, as JSON text in [`BatchParts::text`].
    body_json: Option<(u32, u32)>,
    attributes: RecordAttributes,
    /// The stored record in [`BatchParts::envelopes`].
    envelope: (usize, usize),
}

/// What every record of one `ResourceLogs` shares.
#[derive(Debug, Default)]
struct ResourceMeta {
    /// Position of the attribute `service.name` is read from (the first of that key,
    /// when it is a string).
    service_name: Option<u32>,
    /// The `resource` object of each schema version (by [`version_slot`]); `None`
    /// inside when it is empty, `None` outside when no record needed it.
    objects: [Option<Option<OwnedValue>>; 2],
}

impl ResourceMeta {
    /// The `service.name` of `resource` (the one this meta was made for).
    fn service_name<'r>(&self, resource: &'r ResourceRef<'r>) -> Option<&'r str> {
        let kv = resource.attributes.get(self.service_name? as usize)?;
        match kv.value.as_ref()?.value.as_ref()? {
            ValueRef::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

/// V3 builds its resource object as V2 does.
fn version_slot(version: SchemaVersion) -> usize {
    match version {
        SchemaVersion::V1 => 0,
        SchemaVersion::V2 | SchemaVersion::V3 => 1,
    }
}

/// Everything the documents of one batch read: the request and what was computed
/// from it. Shared by its documents; freed when Tantivy has indexed the last one.
#[derive(Debug)]
pub(crate) struct BatchDocs {
    request: BatchRequest,
    lsn: u64,
    /// Field handles (the same in every schema version).
    fields: Arc<LogFields>,
    parts: BatchParts,
    /// The batch's slot among those in flight, freed with the batch.
    _slot: Permit,
}

/// What [`BatchBuilder`] computes from the records, and the documents read.
#[derive(Debug, Default)]
struct BatchParts {
    records: Vec<RecordMeta>,
    resources: Vec<ResourceMeta>,
    /// Attribute positions of the borrowed attribute objects.
    order: Vec<u32>,
    /// Id buckets and non-string bodies.
    text: String,
    /// Stored records, one after another.
    envelopes: Vec<u8>,
    /// `(text, numeric)` attribute objects built owned.
    owned: Vec<(Option<OwnedValue>, Option<OwnedValue>)>,
}

/// Builds a [`BatchDocs`] record by record while the request is borrowed.
pub(crate) struct BatchBuilder {
    lsn: u64,
    fields: Option<Arc<LogFields>>,
    parts: BatchParts,
}

impl BatchBuilder {
    /// A builder for batch `lsn` of `request`.
    pub(crate) fn new(lsn: u64, request: &LogsRef<'_>) -> Self {
        let resources = request
            .resource_logs
            .iter()
            .map(|rl| {
                let attributes = &rl.resource.attributes;
                // As `LogView::service_name` reads it: the first of the key, if a string.
                let service_name = attributes
                    .iter()
                    .position(|kv| kv.key == SERVICE_NAME_KEY)
                    .filter(|&i| {
                        matches!(
                            attributes[i].value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(ValueRef::StringValue(_))
                        )
                    })
                    .map(|i| i as u32);
                ResourceMeta {
                    service_name,
                    objects: [None, None],
                }
            })
            .collect();
        BatchBuilder {
            lsn,
            fields: None,
            parts: BatchParts {
                resources,
                ..BatchParts::default()
            },
        }
    }

    /// Adds the document of record `position` (`resource_logs`, `scope_logs`,
    /// `log_records` indices) in a partition of schema `fields`; `envelopes` is set to
    /// its resource and scope. Returns the document's number in the batch.
    pub(crate) fn add(
        &mut self,
        fields: &Arc<LogFields>,
        resource: &ResourceRef<'_>,
        record: &LogRecordRef<'_>,
        position: (usize, usize, usize),
        time_ns: i64,
        envelopes: &mut EnvelopeEncoder,
    ) -> u32 {
        if self.fields.is_none() {
            self.fields = Some(fields.clone());
        }
        let version = fields.version;
        let resource_meta = &mut self.parts.resources[position.0];
        let slot = version_slot(version);
        if resource_meta.objects[slot].is_none() {
            let service = resource_meta.service_name(resource);
            resource_meta.objects[slot] = Some(resource_object(resource, version, service));
        }
        let trace = (!record.trace_id.is_empty()).then(|| {
            let (bucket, hi, lo) = id_words(record.trace_id);
            (self.push_bucket(bucket, version), hi, lo)
        });
        let span = (!record.span_id.is_empty()).then(|| {
            let (bucket, hi, _) = id_words(record.span_id);
            (self.push_bucket(bucket, version), hi)
        });
        let body_json = match record.body.as_ref() {
            Some(body)
                if body.value.is_some()
                    && !matches!(body.value, Some(ValueRef::StringValue(_))) =>
            {
                let start = self.parts.text.len() as u32;
                self.parts
                    .text
                    .push_str(&any_value_to_json(&body.to_prost()).to_string());
                Some((start, self.parts.text.len() as u32))
            }
            _ => None,
        };
        let attributes = self.attributes(&record.attributes);
        let start = self.parts.envelopes.len();
        envelopes.encode_into(record, &mut self.parts.envelopes);
        let meta = RecordMeta {
            resource_logs: position.0 as u32,
            scope_logs: position.1 as u32,
            record: position.2 as u32,
            version,
            time_ns,
            trace,
            span,
            body_json,
            attributes,
            envelope: (start, self.parts.envelopes.len()),
        };
        self.parts.records.push(meta);
        (self.parts.records.len() - 1) as u32
    }

    /// Makes room for `bytes` more of stored records: a batch's would otherwise grow
    /// its buffer a dozen times, each growth a copy (measured: a sixth of the thread
    /// that adds batches).
    pub(crate) fn reserve_envelopes(&mut self, bytes: usize) {
        self.parts.envelopes.reserve(bytes);
    }

    /// The id bucket (the first [`SchemaVersion::id_bucket_len`] hex digits of two
    /// bytes) in `text`; returns where it starts.
    fn push_bucket(&mut self, bucket: [u8; 2], version: SchemaVersion) -> u32 {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let start = self.parts.text.len() as u32;
        let [a, b] = bucket;
        let digits = [a >> 4, a & 15, b >> 4, b & 15];
        for d in &digits[..version.id_bucket_len()] {
            self.parts.text.push(HEX[usize::from(*d)] as char);
        }
        start
    }

    /// How `attributes` are indexed: the positions of the last attribute of each key,
    /// sorted by key (what the reference's `BTreeMap` holds), and which sides have any.
    fn attributes(&mut self, attributes: &[KeyValueRef<'_>]) -> RecordAttributes {
        if attributes.is_empty() {
            return RecordAttributes::None;
        }
        let start = self.parts.order.len();
        self.parts.order.extend(0..attributes.len() as u32);
        let key = |i: u32| attributes[i as usize].key;
        self.parts.order[start..].sort_unstable_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
        // Keep the last of each run of one key.
        let mut kept = start;
        for r in start..self.parts.order.len() {
            let i = self.parts.order[r];
            let last_of_key = self
                .parts
                .order
                .get(r + 1)
                .is_none_or(|&next| key(next) != key(i));
            if last_of_key {
                self.parts.order[kept] = i;
                kept += 1;
            }
        }
        self.parts.order.truncate(kept);
        let (mut text, mut numeric, mut bytes) = (false, false, false);
        for &i in &self.parts.order[start..] {
            let value = attributes[i as usize].value.as_ref();
            let (t, n) = sides(value);
            text |= t;
            numeric |= n;
            bytes |= has_bytes(value);
        }
        if bytes {
            self.parts.order.truncate(start);
            let (text, numeric) = split_numeric(attributes_object(&to_prost(attributes)));
            let object = |map: std::collections::BTreeMap<String, OwnedValue>| {
                (!map.is_empty()).then(|| OwnedValue::from(map))
            };
            self.parts.owned.push((object(text), object(numeric)));
            return RecordAttributes::Owned((self.parts.owned.len() - 1) as u32);
        }
        if !text && !numeric {
            self.parts.order.truncate(start);
            return RecordAttributes::None;
        }
        RecordAttributes::Borrowed {
            order: (start as u32, self.parts.order.len() as u32),
            text,
            numeric,
        }
    }

    /// The batch, holding `request` (the one the builder was made with) and the slot
    /// `slot` takes; `None` when no record was added (then no slot is taken).
    pub(crate) fn finish<E>(
        self,
        request: BatchRequest,
        slot: impl FnOnce() -> Result<Permit, E>,
    ) -> Result<Option<Arc<BatchDocs>>, E> {
        let Some(fields) = self.fields else {
            return Ok(None);
        };
        Ok(Some(Arc::new(BatchDocs {
            request,
            lsn: self.lsn,
            fields,
            parts: self.parts,
            _slot: slot()?,
        })))
    }
}

/// Attributes as prost messages, for the objects built owned (resources, once per
/// `ResourceLogs`, and attributes holding bytes).
fn to_prost(attributes: &[KeyValueRef<'_>]) -> Vec<KeyValue> {
    attributes.iter().map(KeyValueRef::to_prost).collect()
}

/// The `resource` object of a partition of `version` (`None`: no field): as the
/// reference builds it, once per `ResourceLogs`.
fn resource_object(
    resource: &ResourceRef<'_>,
    version: SchemaVersion,
    service: Option<&str>,
) -> Option<OwnedValue> {
    if resource.attributes.is_empty() {
        return None;
    }
    let mut object = attributes_object(&to_prost(&resource.attributes));
    if version >= SchemaVersion::V2
        && let Some(service) = service
        && matches!(object.get(SERVICE_NAME_KEY), Some(OwnedValue::Str(s)) if s == service)
    {
        object.remove(SERVICE_NAME_KEY);
    }
    (!object.is_empty()).then(|| OwnedValue::from(object))
}

/// One log record as a Tantivy document: its batch and its number in it.
#[derive(Clone, Debug)]
pub(crate) struct LogDoc {
    batch: Arc<BatchDocs>,
    index: u32,
}

impl LogDoc {
    /// Document `index` of `batch` (as [`BatchBuilder::add`] numbered it).
    pub(crate) fn new(batch: Arc<BatchDocs>, index: u32) -> Self {
        LogDoc { batch, index }
    }
}

impl Document for LogDoc {
    type Value<'a> = LogValue<'a>;
    type FieldsValuesIter<'a> = LogDocFields<'a>;

    fn iter_fields_and_values(&self) -> Self::FieldsValuesIter<'_> {
        let batch = &*self.batch;
        let meta = &batch.parts.records[self.index as usize];
        let rl = &batch.request.get().resource_logs[meta.resource_logs as usize];
        let sl = &rl.scope_logs[meta.scope_logs as usize];
        LogDocFields {
            batch,
            meta,
            resource: &rl.resource,
            resource_meta: &batch.parts.resources[meta.resource_logs as usize],
            scope: &sl.scope,
            record: &sl.log_records[meta.record as usize],
            step: 0,
        }
    }
}

/// The fields of a [`LogDoc`] in the order the reference adds them.
pub(crate) struct LogDocFields<'a> {
    batch: &'a BatchDocs,
    meta: &'a RecordMeta,
    resource: &'a ResourceRef<'a>,
    resource_meta: &'a ResourceMeta,
    scope: &'a ScopeRef<'a>,
    record: &'a LogRecordRef<'a>,
    step: u8,
}

impl<'a> LogDocFields<'a> {
    fn text(&self, start: u32, end: u32) -> &'a str {
        &self.batch.parts.text[start as usize..end as usize]
    }

    fn bucket(&self, start: u32) -> &'a str {
        self.text(start, start + self.meta.version.id_bucket_len() as u32)
    }

    /// The value of step `step`, if the document has one.
    fn at(&self, step: u8) -> Option<(Field, LogValue<'a>)> {
        let f = &*self.batch.fields;
        let (m, r) = (self.meta, self.record);
        let some_str = |field, s: &'a str| (!s.is_empty()).then_some((field, LogValue::Str(s)));
        match step {
            0 => Some((f.timestamp, LogValue::I64(m.time_ns))),
            1 => Some((
                f.observed_timestamp,
                LogValue::I64(clamp_ns(r.observed_time_unix_nano)),
            )),
            2 => Some((f.lsn, LogValue::U64(self.batch.lsn))),
            3 => Some((
                f.severity_number,
                LogValue::I64(i64::from(r.severity_number)),
            )),
            4 => some_str(f.severity_text, r.severity_text),
            5 => match (m.body_json, r.body.as_ref().and_then(|b| b.value.as_ref())) {
                (Some((start, end)), _) => Some((f.body, LogValue::Str(self.text(start, end)))),
                (None, Some(ValueRef::StringValue(s))) => Some((f.body, LogValue::Str(s))),
                _ => None,
            },
            6 => self
                .resource_meta
                .service_name(self.resource)
                .map(|s| (f.service_name, LogValue::Str(s))),
            7 => m
                .trace
                .map(|(b, _, _)| (f.trace_bucket, LogValue::Str(self.bucket(b)))),
            8 => m.trace.map(|(_, hi, _)| (f.trace_hi, LogValue::U64(hi))),
            9 => m.trace.map(|(_, _, lo)| (f.trace_lo, LogValue::U64(lo))),
            10 => m
                .span
                .map(|(b, _)| (f.span_bucket, LogValue::Str(self.bucket(b)))),
            11 => m.span.map(|(_, id)| (f.span, LogValue::U64(id))),
            12 => self
                .attributes(Side::Numeric)
                .map(|v| (f.attributes_numeric, v)),
            13 => self.attributes(Side::Text).map(|v| (f.attributes, v)),
            14 => self.resource_meta.objects[version_slot(m.version)]
                .as_ref()
                .and_then(Option::as_ref)
                .map(|o| (f.resource, LogValue::Owned(o))),
            15 => some_str(f.scope_name, self.scope.name),
            16 => some_str(f.scope_version, self.scope.version),
            17 => some_str(f.event_name, r.event_name),
            18 => {
                let (start, end) = m.envelope;
                Some((
                    f.record,
                    LogValue::Bytes(&self.batch.parts.envelopes[start..end]),
                ))
            }
            _ => None,
        }
    }

    fn attributes(&self, side: Side) -> Option<LogValue<'a>> {
        match self.meta.attributes {
            RecordAttributes::None => None,
            RecordAttributes::Borrowed {
                order: (start, end),
                text,
                numeric,
            } => {
                let wanted = match side {
                    Side::Text => text,
                    Side::Numeric => numeric,
                    Side::All => true,
                };
                wanted.then(|| LogValue::Attributes {
                    attributes: &self.record.attributes,
                    order: &self.batch.parts.order[start as usize..end as usize],
                    side,
                })
            }
            RecordAttributes::Owned(i) => {
                let (text, numeric) = &self.batch.parts.owned[i as usize];
                let object = if side == Side::Numeric { numeric } else { text };
                object.as_ref().map(LogValue::Owned)
            }
        }
    }
}

/// Steps of [`LogDocFields::at`].
const STEPS: u8 = 19;

impl<'a> Iterator for LogDocFields<'a> {
    type Item = (Field, LogValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.step < STEPS {
            let step = self.step;
            self.step += 1;
            if let Some(item) = self.at(step) {
                return Some(item);
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use tantivy::TantivyDocument;
    use vantage_proto::logs::{EMPTY_RESOURCE, EMPTY_SCOPE, LogView};
    use vantage_proto::otlp::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValueList, any_value,
    };
    use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use vantage_proto::otlp::resource::v1::Resource;

    use super::super::schema::ReferenceEnvelopeEncoder;

    /// Keys that collide, nest through dots, or are empty.
    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("a.b".to_string()),
            Just("a.b.c".to_string()),
            Just(SERVICE_NAME_KEY.to_string()),
            Just(String::new()),
            "[a-c.]{0,4}",
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = Option<any_value::Value>> {
        use any_value::Value as V;
        prop_oneof![
            Just(None),
            prop_oneof![Just(String::new()), Just("ab".to_string()), ".{0,6}"]
                .prop_map(|s| Some(V::StringValue(s))),
            any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
            prop_oneof![Just(0i64), any::<i64>()].prop_map(|i| Some(V::IntValue(i))),
            prop_oneof![
                Just(f64::NAN),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(2.5),
                any::<f64>()
            ]
            .prop_map(|d| Some(V::DoubleValue(d))),
            prop_oneof![Just(vec![0xab]), prop::collection::vec(any::<u8>(), 0..3)]
                .prop_map(|b| Some(V::BytesValue(b))),
            any::<i32>().prop_map(|i| Some(V::StringValueStrindex(i))),
        ]
    }

    /// Attribute values: scalars, arrays and lists, nested a few levels.
    pub(crate) fn arb_value() -> impl Strategy<Value = AnyValue> {
        use any_value::Value as V;
        arb_leaf()
            .prop_map(|value| AnyValue { value })
            .prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                        value: Some(V::ArrayValue(ArrayValue { values }))
                    }),
                    prop::collection::vec((arb_key(), prop::option::of(inner)), 0..4).prop_map(
                        |entries| AnyValue {
                            value: Some(V::KvlistValue(KeyValueList {
                                values: entries.into_iter().map(kv).collect(),
                            })),
                        }
                    ),
                ]
            })
    }

    fn kv((key, value): (String, Option<AnyValue>)) -> KeyValue {
        KeyValue {
            key,
            value,
            ..Default::default()
        }
    }

    pub(crate) fn arb_attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec((arb_key(), prop::option::of(arb_value())), 0..max)
            .prop_map(|v| v.into_iter().map(kv).collect())
    }

    /// Resource attributes with `service.name` as a string, twice, as another type.
    fn arb_resource() -> impl Strategy<Value = Option<Resource>> {
        let service = prop_oneof![
            Just(None),
            Just(Some(any_value::Value::StringValue("ab".into()))),
            Just(Some(any_value::Value::StringValue("svc".into()))),
            Just(Some(any_value::Value::BytesValue(vec![0xab]))),
            Just(Some(any_value::Value::IntValue(7))),
        ];
        (
            prop::collection::vec(service, 0..3),
            arb_attributes(3),
            any::<bool>(),
        )
            .prop_map(|(services, mut attributes, none)| {
                if none {
                    return None;
                }
                for (i, value) in services.into_iter().enumerate() {
                    let at = i.min(attributes.len());
                    attributes.insert(
                        at,
                        KeyValue {
                            key: SERVICE_NAME_KEY.into(),
                            value: value.map(|value| AnyValue { value: Some(value) }),
                            ..Default::default()
                        },
                    );
                }
                Some(Resource {
                    attributes,
                    ..Default::default()
                })
            })
    }

    fn arb_body() -> impl Strategy<Value = Option<AnyValue>> {
        prop_oneof![
            Just(None),
            Just(Some(AnyValue { value: None })),
            ".{0,12}".prop_map(|s| Some(AnyValue {
                value: Some(any_value::Value::StringValue(s))
            })),
            arb_value().prop_map(Some),
        ]
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = LogRecord> {
        let time = prop_oneof![Just(0u64), Just(u64::MAX), 1u64..=i64::MAX as u64];
        let id = prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 16),
            prop::collection::vec(any::<u8>(), 8),
            prop::collection::vec(any::<u8>(), 0..20),
        ];
        (
            (time.clone(), time, any::<i32>(), "(|INFO|[a-z]{0,4})"),
            (arb_body(), arb_attributes(6), id.clone(), id, "(|ev)"),
        )
            .prop_map(
                |(
                    (time, observed, severity_number, severity_text),
                    (body, attributes, trace_id, span_id, event_name),
                )| LogRecord {
                    time_unix_nano: time,
                    observed_time_unix_nano: observed,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    trace_id,
                    span_id,
                    event_name,
                    ..Default::default()
                },
            )
    }

    fn arb_scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
        prop::option::of(
            ("(|lib)", "(|1.0)").prop_map(|(name, version)| InstrumentationScope {
                name,
                version,
                ..Default::default()
            }),
        )
    }

    pub(crate) fn arb_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope_logs = (arb_scope(), prop::collection::vec(arb_record(), 0..4)).prop_map(
            |(scope, log_records)| ScopeLogs {
                scope,
                log_records,
                schema_url: String::new(),
            },
        );
        let resource_logs = (arb_resource(), prop::collection::vec(scope_logs, 0..3)).prop_map(
            |(resource, scope_logs)| ResourceLogs {
                resource,
                scope_logs,
                schema_url: String::new(),
            },
        );
        prop::collection::vec(resource_logs, 0..3)
            .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    /// A document's fields and values in its order, as owned values; printed, so that
    /// NaN equals NaN and -0.0 differs from 0.0.
    fn canonical<D: Document>(doc: &D) -> String {
        let values: Vec<(u32, OwnedValue)> = doc
            .iter_fields_and_values()
            .map(|(field, value)| (field.field_id(), OwnedValue::from(value.as_value())))
            .collect();
        format!("{values:#?}")
    }

    /// The borrowed documents of `request` in partitions of `version` (every record in
    /// one partition), read from its encoding as the indexer reads a batch, with the
    /// reference document of each.
    fn both_ways(
        request: &ExportLogsServiceRequest,
        version: SchemaVersion,
        lsn: u64,
    ) -> Vec<(LogDoc, TantivyDocument)> {
        let fields = Arc::new(LogFields::for_version(version));
        let read =
            BatchRequest::try_attach_to_cart(Arc::new(Bytes::from(request.encode_to_vec())), |b| {
                LogsRef::decode(b)
            })
            .expect("prost's encoding is read in place");
        let logs = read.get();
        let mut builder = BatchBuilder::new(lsn, logs);
        let mut envelopes = EnvelopeEncoder::default();
        let mut reference_envelopes = ReferenceEnvelopeEncoder::default();
        let mut reference = Vec::new();
        for (i, (rl, rl_ref)) in request
            .resource_logs
            .iter()
            .zip(&logs.resource_logs)
            .enumerate()
        {
            let resource = rl.resource.as_ref().unwrap_or(&EMPTY_RESOURCE);
            envelopes.set_resource(&rl_ref.resource);
            reference_envelopes.set_resource(resource);
            for (j, (sl, sl_ref)) in rl.scope_logs.iter().zip(&rl_ref.scope_logs).enumerate() {
                let scope = sl.scope.as_ref().unwrap_or(&EMPTY_SCOPE);
                envelopes.set_scope(&sl_ref.scope);
                reference_envelopes.set_scope(scope);
                for (k, (record, record_ref)) in
                    sl.log_records.iter().zip(&sl_ref.log_records).enumerate()
                {
                    let view = LogView {
                        resource,
                        scope,
                        record,
                    };
                    let time_ns = clamp_ns(view.effective_time_unix_nano());
                    let n = builder.add(
                        &fields,
                        &rl_ref.resource,
                        record_ref,
                        (i, j, k),
                        time_ns,
                        &mut envelopes,
                    );
                    assert_eq!(n as usize, reference.len());
                    let envelope = reference_envelopes.encode(record);
                    reference.push(fields.document(&view, lsn, time_ns, envelope));
                }
            }
        }
        let batch = builder.finish(read, || {
            Arc::new(super::super::inflight::InFlight::default())
                .acquire(1, super::super::inflight::STALL_LIMIT)
        });
        let Some(batch) = batch.expect("a fresh bound has a free slot") else {
            assert!(reference.is_empty());
            return Vec::new();
        };
        reference
            .into_iter()
            .enumerate()
            .map(|(n, doc)| (LogDoc::new(batch.clone(), n as u32), doc))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn documents_equal_the_reference(request in arb_request(), lsn in any::<u64>()) {
            for version in SchemaVersion::ALL {
                for (doc, reference) in both_ways(&request, version, lsn) {
                    prop_assert_eq!(canonical(&doc), canonical(&reference), "{:?}", version);
                    // What Tantivy's default conversion makes of it, too.
                    let converted = doc.clone().into_tantivy_document();
                    prop_assert_eq!(canonical(&converted), canonical(&reference));
                }
            }
        }

        #[test]
        fn id_words_are_id_parts(id in prop::collection::vec(any::<u8>(), 0..20)) {
            let (bucket, hi, lo) = id_words(&id);
            let mut builder = BatchBuilder::new(0, &LogsRef::default());
            let (hex, want_hi, want_lo) = super::super::schema::id_parts(&id);
            for version in SchemaVersion::ALL {
                let at = builder.push_bucket(bucket, version) as usize;
                let len = version.id_bucket_len();
                prop_assert_eq!(&builder.parts.text[at..at + len], &hex[..len]);
            }
            prop_assert_eq!((hi, lo), (want_hi, want_lo));
        }
    }

    /// Documents carry the handles of whichever version's fields came first: the
    /// versions must number their fields alike.
    #[test]
    fn every_version_numbers_its_fields_alike() {
        let [v1, later @ ..] = SchemaVersion::ALL.map(LogFields::for_version);
        let names = |f: &LogFields| {
            f.schema
                .fields()
                .map(|(field, entry)| (field, entry.name().to_string()))
                .collect::<Vec<_>>()
        };
        for v in later {
            assert_eq!(names(&v1), names(&v));
            assert_eq!(
                (v1.resource, v1.attributes, v1.record, v1.severity_number),
                (v.resource, v.attributes, v.record, v.severity_number)
            );
        }
    }

    /// The cases the borrowed path must get right, spelled out.
    #[test]
    fn duplicate_keys_bytes_and_nesting_match_the_reference() {
        use any_value::Value as V;
        let val = |v| Some(AnyValue { value: Some(v) });
        let entry = |k: &str, v| kv((k.to_string(), v));
        let list = |entries: Vec<KeyValue>| V::KvlistValue(KeyValueList { values: entries });
        let record = |attributes| LogRecord {
            time_unix_nano: 5,
            attributes,
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        entry(SERVICE_NAME_KEY, val(V::StringValue("ab".into()))),
                        entry(SERVICE_NAME_KEY, val(V::BytesValue(vec![0xab]))),
                        entry("host", val(V::StringValue("h".into()))),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![
                        record(vec![
                            entry("b", val(V::IntValue(1))),
                            entry("a", val(V::StringValue("x".into()))),
                            entry("b", val(V::StringValue("last".into()))),
                            entry("a.b", val(V::DoubleValue(2.5))),
                            entry(
                                "n",
                                val(list(vec![
                                    entry("k", val(V::IntValue(1))),
                                    entry("k", val(V::StringValue("s".into()))),
                                    entry("e", val(list(vec![]))),
                                    entry("z", None),
                                ])),
                            ),
                            entry("empty", val(list(vec![]))),
                            entry(
                                "arr",
                                val(V::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(V::IntValue(3)),
                                    }],
                                })),
                            ),
                        ]),
                        record(vec![entry("bytes", val(V::BytesValue(vec![1, 2])))]),
                        record(vec![entry("only", val(list(vec![])))]),
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        for version in SchemaVersion::ALL {
            for (doc, reference) in both_ways(&request, version, 3) {
                assert_eq!(canonical(&doc), canonical(&reference), "{version:?}");
            }
        }
        // The first record's attributes are read in place, the second's built owned.
        let docs = both_ways(&request, SchemaVersion::V2, 3);
        assert!(matches!(
            docs[0].0.batch.parts.records[0].attributes,
            RecordAttributes::Borrowed {
                text: true,
                numeric: true,
                ..
            }
        ));
        assert!(matches!(
            docs[0].0.batch.parts.records[1].attributes,
            RecordAttributes::Owned(0)
        ));
        assert!(matches!(
            docs[0].0.batch.parts.records[2].attributes,
            RecordAttributes::None
        ));
    }
}
