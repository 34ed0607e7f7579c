//! An OTLP logs export read in place: every string and byte field borrows from the
//! encoded request.
//!
//! The log indexer reads each batch back from the WAL. Decoding it with prost built
//! every string and list of it, about ten allocations a record, only for Tantivy to read
//! them once and free them (measured: the decode was 58 % of the `log-indexer` thread at
//! saturation). [`LogsRef::decode`] builds the same tree with borrowed strings, one list
//! of attributes a record, and keeps the bytes of each resource, scope and record, so
//! that the stored form of a record is copied from them instead of encoded again.
//!
//! What it accepts, prost decodes, to the same request (proptests check both on mutated
//! bytes). It refuses (an error, never a panic) what prost refuses, and what prost would
//! read differently from a plain walk: an unknown field (prost drops it), a singular
//! message field or a oneof set twice (prost merges them). A caller then decodes with
//! prost and encodes the result again, which leaves none of those. Fields the indexer
//! does not read (schema URLs, entity references, scope attributes) are checked as prost
//! checks them and carried in the resource's and scope's bytes.

use yoke::Yokeable;

use crate::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
use crate::wire::{FIXED32, FIXED64, LEN, Malformed, VARINT, Wire};

/// Nesting of messages below the request that is followed: prost's limit, so that the
/// two refuse the same requests.
pub const MAX_DEPTH: u32 = 100;

/// What [`LogsRef::decode`] refuses: a field or repetition prost reads differently from
/// a plain walk. Not malformed; decode with prost instead.
const DIFFERS: Malformed = Malformed("a field prost would merge or drop");

/// An `ExportLogsServiceRequest` borrowing from its bytes.
#[derive(Debug, Default, Yokeable)]
pub struct LogsRef<'a> {
    /// `resource_logs`, in order.
    pub resource_logs: Vec<ResourceLogsRef<'a>>,
}

/// A `ResourceLogs`.
#[derive(Debug, Default)]
pub struct ResourceLogsRef<'a> {
    /// The resource (empty when the request has none, as prost's default).
    pub resource: ResourceRef<'a>,
    /// `scope_logs`, in order.
    pub scope_logs: Vec<ScopeLogsRef<'a>>,
}

/// A `Resource`.
#[derive(Debug, Default)]
pub struct ResourceRef<'a> {
    /// `attributes`, in order.
    pub attributes: Vec<KeyValueRef<'a>>,
    /// The encoded message (empty when absent): what a stored record copies.
    pub raw: &'a [u8],
}

/// A `ScopeLogs`.
#[derive(Debug, Default)]
pub struct ScopeLogsRef<'a> {
    /// The instrumentation scope (empty when absent).
    pub scope: ScopeRef<'a>,
    /// `log_records`, in order.
    pub log_records: Vec<LogRecordRef<'a>>,
}

/// An `InstrumentationScope`: the parts the index reads, and its bytes.
#[derive(Debug, Default)]
pub struct ScopeRef<'a> {
    /// `name`.
    pub name: &'a str,
    /// `version`.
    pub version: &'a str,
    /// The encoded message (empty when absent).
    pub raw: &'a [u8],
}

/// A `LogRecord`.
#[derive(Debug, Default)]
pub struct LogRecordRef<'a> {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`.
    pub observed_time_unix_nano: u64,
    /// `severity_number`.
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: &'a str,
    /// `body`.
    pub body: Option<AnyValueRef<'a>>,
    /// `attributes`, in order.
    pub attributes: Vec<KeyValueRef<'a>>,
    /// `trace_id`.
    pub trace_id: &'a [u8],
    /// `span_id`.
    pub span_id: &'a [u8],
    /// `event_name`.
    pub event_name: &'a str,
    /// The encoded message: [`Self::fields`] walks it.
    pub raw: &'a [u8],
}

/// A `KeyValue`.
#[derive(Debug, Default)]
pub struct KeyValueRef<'a> {
    /// `key`.
    pub key: &'a str,
    /// `value`.
    pub value: Option<AnyValueRef<'a>>,
    /// `key_strindex` (profiles only).
    pub key_strindex: i32,
}

/// An `AnyValue`: `value` is `None` for a message with no field set.
#[derive(Debug, Default)]
pub struct AnyValueRef<'a> {
    /// The oneof.
    pub value: Option<ValueRef<'a>>,
}

/// `any_value::Value`.
#[derive(Debug)]
pub enum ValueRef<'a> {
    /// `string_value`.
    StringValue(&'a str),
    /// `bool_value`.
    BoolValue(bool),
    /// `int_value`.
    IntValue(i64),
    /// `double_value`.
    DoubleValue(f64),
    /// `array_value`'s values.
    ArrayValue(Vec<AnyValueRef<'a>>),
    /// `kvlist_value`'s values.
    KvlistValue(Vec<KeyValueRef<'a>>),
    /// `bytes_value`.
    BytesValue(&'a [u8]),
    /// `string_value_strindex` (profiles only).
    StringValueStrindex(i32),
}

impl<'a> LogsRef<'a> {
    /// Reads an encoded `ExportLogsServiceRequest`; an error when the bytes are not one,
    /// or hold something prost would read differently (see the module).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Malformed> {
        let mut r = Wire::new(bytes);
        let mut out = LogsRef::default();
        while let Some((tag, wire)) = r.key()? {
            match (tag, wire) {
                (1, LEN) => out.resource_logs.push(resource_logs(r.message()?)?),
                _ => return Err(DIFFERS),
            }
        }
        Ok(out)
    }
}

impl<'a> LogRecordRef<'a> {
    /// The record's fields as encoded, each with its key: `(field number, bytes)`.
    pub fn fields(&self) -> RawFields<'a> {
        RawFields {
            wire: Wire::new(self.raw),
        }
    }
}

/// Fields of a message [`LogsRef::decode`] accepted, as their bytes.
pub struct RawFields<'a> {
    wire: Wire<'a>,
}

impl<'a> Iterator for RawFields<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.wire.rest();
        // The message was walked whole when it was decoded, so neither step can fail;
        // debug builds (every test) check that rather than end the walk quietly.
        let key = self.wire.key();
        debug_assert!(key.is_ok(), "a decoded record's key no longer reads");
        let (tag, wire) = key.ok()??;
        let skipped = self.wire.skip(wire);
        debug_assert!(
            skipped.is_ok(),
            "a decoded record's field {tag} no longer skips"
        );
        skipped.ok()?;
        let used = start.len() - self.wire.rest().len();
        Some((tag, &start[..used]))
    }
}

fn resource_logs(mut r: Wire<'_>) -> Result<ResourceLogsRef<'_>, Malformed> {
    let mut out = ResourceLogsRef::default();
    let mut resource_seen = false;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => {
                once(&mut resource_seen)?;
                out.resource = resource(r.bytes()?)?;
            }
            (2, LEN) => out.scope_logs.push(scope_logs(r.message()?)?),
            (3, LEN) => r.skip_str()?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

fn resource(raw: &[u8]) -> Result<ResourceRef<'_>, Malformed> {
    let mut r = Wire::new(raw);
    let mut attributes = Vec::new();
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => attributes.push(key_value(r.message()?, RESOURCE_DEPTH)?),
            (2, VARINT) => r.skip(VARINT)?,
            // `entity_refs`: checked, and carried in `raw`.
            (3, LEN) => entity_ref(r.message()?)?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(ResourceRef { attributes, raw })
}

fn scope_logs(mut r: Wire<'_>) -> Result<ScopeLogsRef<'_>, Malformed> {
    let mut out = ScopeLogsRef::default();
    let mut scope_seen = false;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => {
                once(&mut scope_seen)?;
                out.scope = scope(r.bytes()?)?;
            }
            (2, LEN) => out.log_records.push(log_record(r.bytes()?)?),
            (3, LEN) => r.skip_str()?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

fn scope(raw: &[u8]) -> Result<ScopeRef<'_>, Malformed> {
    let mut r = Wire::new(raw);
    let mut out = ScopeRef {
        raw,
        ..ScopeRef::default()
    };
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => out.name = r.str()?,
            (2, LEN) => out.version = r.str()?,
            // Attributes: checked, and carried in `raw`.
            (3, LEN) => drop(key_value(r.message()?, SCOPE_DEPTH)?),
            (4, VARINT) => r.skip(VARINT)?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

/// Nesting of a resource's attributes below the request: resource logs, resource, then
/// the attribute.
const RESOURCE_DEPTH: u32 = 2;

/// Nesting of a scope (and of a record) below the request: resource logs, scope logs,
/// then the scope.
const SCOPE_DEPTH: u32 = 3;

/// Nesting of a record's direct values below the request: resource logs, scope logs,
/// record, then the value.
const RECORD_VALUE_DEPTH: u32 = 3;

/// An `EntityRef`, checked as prost reads it: four string fields.
fn entity_ref(mut r: Wire<'_>) -> Result<(), Malformed> {
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1..=4, LEN) => r.skip_str()?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(())
}

fn log_record(raw: &[u8]) -> Result<LogRecordRef<'_>, Malformed> {
    let mut r = Wire::new(raw);
    let mut out = LogRecordRef {
        raw,
        ..LogRecordRef::default()
    };
    while let Some((tag, wire)) = r.key()? {
        // A repeated scalar or string keeps its last value, as prost merges it.
        match (tag, wire) {
            (1, FIXED64) => out.time_unix_nano = r.fixed64()?,
            (2, VARINT) => out.severity_number = r.varint()? as i32,
            (3, LEN) => out.severity_text = r.str()?,
            (5, LEN) => {
                if out.body.is_some() {
                    return Err(DIFFERS);
                }
                out.body = Some(any_value(r.message()?, RECORD_VALUE_DEPTH)?);
            }
            (6, LEN) => out
                .attributes
                .push(key_value(r.message()?, RECORD_VALUE_DEPTH)?),
            (7, VARINT) => r.skip(VARINT)?,
            (8, FIXED32) => drop(r.fixed32()?),
            (9, LEN) => out.trace_id = r.bytes()?,
            (10, LEN) => out.span_id = r.bytes()?,
            (11, FIXED64) => out.observed_time_unix_nano = r.fixed64()?,
            (12, LEN) => out.event_name = r.str()?,
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

fn key_value(mut r: Wire<'_>, depth: u32) -> Result<KeyValueRef<'_>, Malformed> {
    let depth = deeper(depth)?;
    let mut out = KeyValueRef::default();
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => out.key = r.str()?,
            (2, LEN) => {
                if out.value.is_some() {
                    return Err(DIFFERS);
                }
                out.value = Some(any_value(r.message()?, depth)?);
            }
            (3, VARINT) => out.key_strindex = r.varint()? as i32,
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

fn any_value(mut r: Wire<'_>, depth: u32) -> Result<AnyValueRef<'_>, Malformed> {
    let depth = deeper(depth)?;
    let mut value = None;
    while let Some((tag, wire)) = r.key()? {
        let v = match (tag, wire) {
            (1, LEN) => ValueRef::StringValue(r.str()?),
            (2, VARINT) => ValueRef::BoolValue(r.varint()? != 0),
            (3, VARINT) => ValueRef::IntValue(r.varint()? as i64),
            (4, FIXED64) => ValueRef::DoubleValue(f64::from_bits(r.fixed64()?)),
            (5, LEN) => ValueRef::ArrayValue(list(r.message()?, depth, any_value)?),
            (6, LEN) => ValueRef::KvlistValue(list(r.message()?, depth, key_value)?),
            (7, LEN) => ValueRef::BytesValue(r.bytes()?),
            (8, VARINT) => ValueRef::StringValueStrindex(r.varint()? as i32),
            _ => return Err(DIFFERS),
        };
        // prost replaces one member of a oneof with another, and merges a list into a
        // list: set once, both agree.
        if value.replace(v).is_some() {
            return Err(DIFFERS);
        }
    }
    Ok(AnyValueRef { value })
}

/// An `ArrayValue` or `KeyValueList`: field 1 repeated, each read by `each`.
fn list<'a, T>(
    mut r: Wire<'a>,
    depth: u32,
    each: fn(Wire<'a>, u32) -> Result<T, Malformed>,
) -> Result<Vec<T>, Malformed> {
    let depth = deeper(depth)?;
    let mut out = Vec::new();
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => out.push(each(r.message()?, depth)?),
            _ => return Err(DIFFERS),
        }
    }
    Ok(out)
}

fn once(seen: &mut bool) -> Result<(), Malformed> {
    if std::mem::replace(seen, true) {
        Err(DIFFERS)
    } else {
        Ok(())
    }
}

fn deeper(depth: u32) -> Result<u32, Malformed> {
    if depth < MAX_DEPTH {
        Ok(depth + 1)
    } else {
        Err(Malformed("nested deeper than 100 messages"))
    }
}

impl KeyValueRef<'_> {
    /// The prost message, for the rare values the indexer builds owned.
    pub fn to_prost(&self) -> KeyValue {
        KeyValue {
            key: self.key.to_owned(),
            value: self.value.as_ref().map(AnyValueRef::to_prost),
            key_strindex: self.key_strindex,
        }
    }
}

impl AnyValueRef<'_> {
    /// The prost message, for the rare values the indexer builds owned.
    pub fn to_prost(&self) -> AnyValue {
        use any_value::Value as V;
        let value = self.value.as_ref().map(|v| match v {
            ValueRef::StringValue(s) => V::StringValue((*s).to_owned()),
            ValueRef::BoolValue(b) => V::BoolValue(*b),
            ValueRef::IntValue(i) => V::IntValue(*i),
            ValueRef::DoubleValue(d) => V::DoubleValue(*d),
            ValueRef::ArrayValue(values) => V::ArrayValue(ArrayValue {
                values: values.iter().map(AnyValueRef::to_prost).collect(),
            }),
            ValueRef::KvlistValue(values) => V::KvlistValue(KeyValueList {
                values: values.iter().map(KeyValueRef::to_prost).collect(),
            }),
            ValueRef::BytesValue(b) => V::BytesValue(b.to_vec()),
            ValueRef::StringValueStrindex(i) => V::StringValueStrindex(*i),
        });
        AnyValue { value }
    }
}

#[cfg(test)]
mod tests;
