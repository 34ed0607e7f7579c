//! Log hits as JSON: every field of the record, values in their own types, times both
//! as RFC 3339 (for people) and as nanosecond strings (exact, as in OTLP/JSON).

use serde_json::{Value, json};
use vantage_proto::json::{any_value_to_json, attributes_to_json};
use vantage_proto::logs::{envelope_records, hex_id};
use vantage_storage::logs::LogHit;

use super::timeparse::format_time;

/// Renders one hit.
pub fn hit(hit: &LogHit) -> Value {
    let Some(view) = envelope_records(&hit.envelope).next() else {
        return Value::Null;
    };
    let r = view.record;
    json!({
        "timestamp": format_time(hit.time_ns),
        "time_unix_nano": r.time_unix_nano.to_string(),
        "observed_time_unix_nano": r.observed_time_unix_nano.to_string(),
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": r.body.as_ref().map(any_value_to_json).unwrap_or(Value::Null),
        "attributes": attributes_to_json(&r.attributes),
        "resource": attributes_to_json(&view.resource.attributes),
        "scope": {
            "name": view.scope.name,
            "version": view.scope.version,
            "attributes": attributes_to_json(&view.scope.attributes),
        },
        "service_name": view.service_name(),
        "trace_id": hex_id(&r.trace_id),
        "span_id": hex_id(&r.span_id),
        "flags": r.flags,
        "event_name": r.event_name,
        "dropped_attributes_count": r.dropped_attributes_count,
    })
}
