//! OTLP logs as the storage layer sees them: one record at a time, with its resource
//! and scope, plus the compact envelope each stored record is kept in.

use prost::Message as _;

use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::common::v1::{InstrumentationScope, KeyValue, any_value};
use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::otlp::resource::v1::Resource;

/// The resource attribute that names the emitting service (OTel semantic conventions).
pub const SERVICE_NAME: &str = "service.name";

/// One log record with the resource and scope it was sent under.
#[derive(Clone, Copy, Debug)]
pub struct LogView<'a> {
    /// The resource the record came from; empty if the sender sent none.
    pub resource: &'a Resource,
    /// The instrumentation scope; empty if the sender sent none.
    pub scope: &'a InstrumentationScope,
    /// The record itself.
    pub record: &'a LogRecord,
}

/// Stands in for a missing resource.
pub static EMPTY_RESOURCE: Resource = Resource {
    attributes: Vec::new(),
    dropped_attributes_count: 0,
    entity_refs: Vec::new(),
};

/// Stands in for a missing scope.
pub static EMPTY_SCOPE: InstrumentationScope = InstrumentationScope {
    name: String::new(),
    version: String::new(),
    attributes: Vec::new(),
    dropped_attributes_count: 0,
};

impl<'a> LogView<'a> {
    /// The record's time: its own timestamp, else the observed time (OTLP says a zero
    /// timestamp means unknown).
    pub fn effective_time_unix_nano(&self) -> u64 {
        if self.record.time_unix_nano != 0 {
            self.record.time_unix_nano
        } else {
            self.record.observed_time_unix_nano
        }
    }

    /// `service.name` from the resource, if it is a string.
    pub fn service_name(&self) -> Option<&'a str> {
        string_attribute(&self.resource.attributes, SERVICE_NAME)
    }

    /// Encodes the record with its resource and scope as one self-contained message, the
    /// form a stored log record is kept in (exact: every value round-trips).
    pub fn to_envelope(&self) -> Vec<u8> {
        envelope(self.resource, self.scope, self.record).encode_to_vec()
    }
}

fn envelope(resource: &Resource, scope: &InstrumentationScope, record: &LogRecord) -> ResourceLogs {
    ResourceLogs {
        resource: Some(resource.clone()),
        scope_logs: vec![ScopeLogs {
            scope: Some(scope.clone()),
            log_records: vec![record.clone()],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// Decodes an envelope written by [`LogView::to_envelope`].
pub fn decode_envelope(bytes: &[u8]) -> Result<ResourceLogs, prost::DecodeError> {
    ResourceLogs::decode(bytes)
}

/// Every record of an export request, in order.
pub fn records(request: &ExportLogsServiceRequest) -> impl Iterator<Item = LogView<'_>> {
    request.resource_logs.iter().flat_map(|rl| {
        let resource = rl.resource.as_ref().unwrap_or(&EMPTY_RESOURCE);
        rl.scope_logs.iter().flat_map(move |sl| {
            let scope = sl.scope.as_ref().unwrap_or(&EMPTY_SCOPE);
            sl.log_records.iter().map(move |record| LogView {
                resource,
                scope,
                record,
            })
        })
    })
}

/// The records of one stored envelope (normally exactly one).
pub fn envelope_records(envelope: &ResourceLogs) -> impl Iterator<Item = LogView<'_>> {
    let resource = envelope.resource.as_ref().unwrap_or(&EMPTY_RESOURCE);
    envelope.scope_logs.iter().flat_map(move |sl| {
        let scope = sl.scope.as_ref().unwrap_or(&EMPTY_SCOPE);
        sl.log_records.iter().map(move |record| LogView {
            resource,
            scope,
            record,
        })
    })
}

/// Number of log records in a request.
pub fn record_count(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|rl| rl.scope_logs.iter())
        .map(|sl| sl.log_records.len())
        .sum()
}

/// The string value of `key` in an attribute list.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Lower-case hex of a trace or span id; empty when the id is absent.
pub fn hex_id(id: &[u8]) -> String {
    hex::encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::v1::AnyValue;

    fn request() -> ExportLogsServiceRequest {
        let service = KeyValue {
            key: SERVICE_NAME.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("checkout".into())),
            }),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![service],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![
                        LogRecord {
                            time_unix_nano: 5,
                            ..Default::default()
                        },
                        LogRecord {
                            observed_time_unix_nano: 7,
                            ..Default::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn flattens_and_round_trips_envelopes() {
        let req = request();
        assert_eq!(record_count(&req), 2);
        let views: Vec<_> = records(&req).collect();
        assert_eq!(views[0].effective_time_unix_nano(), 5);
        assert_eq!(views[1].effective_time_unix_nano(), 7);
        assert_eq!(views[1].service_name(), Some("checkout"));
        let env = decode_envelope(&views[1].to_envelope()).unwrap();
        let back: Vec<_> = envelope_records(&env).collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].record, views[1].record);
        assert_eq!(back[0].service_name(), Some("checkout"));
    }
}
