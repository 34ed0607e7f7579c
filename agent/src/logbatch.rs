//! The log records of a batch being built, kept encoded: each record is encoded into the
//! batch's buffer as it is made and dropped at once, and the request is assembled around
//! those bytes when the batch is flushed. Keeping thousands of `LogRecord`s until the
//! flush and encoding them as one message cost a length pass per nesting level over
//! every record, and freeing them all afterwards (a fifth of the tailer's CPU).

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, message};
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::logs::v1::LogRecord;
use vantage_proto::otlp::resource::v1::Resource;

/// `ScopeLogs.log_records`.
const LOG_RECORDS_FIELD: u32 = 2;

/// Encoded `LogRecord`s, each framed as a `ScopeLogs.log_records` field.
#[derive(Debug, Default)]
pub(crate) struct EncodedRecords {
    buf: Vec<u8>,
    count: usize,
}

impl EncodedRecords {
    /// Encodes one record into the batch.
    pub(crate) fn push(&mut self, record: LogRecord) {
        message::encode(LOG_RECORDS_FIELD, &record, &mut self.buf);
        self.count += 1;
    }

    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded `ExportLogsServiceRequest` with one `ResourceLogs` (the resource) and
    /// one `ScopeLogs` (the scope) holding the records in push order: the bytes prost
    /// writes for that message.
    pub(crate) fn into_request(self, resource: &Resource, scope: &InstrumentationScope) -> Vec<u8> {
        let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let scope_len = scope.encoded_len();
        let scope_logs_len = field(scope_len) + self.buf.len();
        let resource_len = resource.encoded_len();
        let resource_logs_len = field(resource_len) + field(scope_logs_len);
        let mut out = Vec::with_capacity(field(resource_logs_len));
        // ExportLogsServiceRequest.resource_logs (1)
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_logs_len as u64, &mut out);
        // ResourceLogs.resource (1)
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_len as u64, &mut out);
        resource.encode_raw(&mut out);
        // ResourceLogs.scope_logs (2)
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_logs_len as u64, &mut out);
        // ScopeLogs.scope (1)
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(scope_len as u64, &mut out);
        scope.encode_raw(&mut out);
        // ScopeLogs.log_records (2), already framed
        out.extend_from_slice(&self.buf);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    use vantage_proto::otlp::logs::v1::{ResourceLogs, ScopeLogs};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn record(body: &str, observed: u64, severity: i32, attrs: &[(String, String)]) -> LogRecord {
        LogRecord {
            observed_time_unix_nano: observed,
            severity_number: severity,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.into())),
            }),
            attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        }
    }

    proptest! {
        /// The assembled request is byte for byte what prost encodes for the same
        /// message, and decodes to the records pushed, in order.
        #[test]
        fn the_request_is_what_prost_encodes(
            bodies in proptest::collection::vec(("\\PC{0,400}", any::<u64>(), 0i32..25), 0..60),
            attrs in proptest::collection::vec(("[a-z.]{1,20}", "\\PC{0,40}"), 0..4),
            resource_attrs in proptest::collection::vec(("[a-z.]{1,20}", "\\PC{0,40}"), 0..6),
            scope_name in "[a-z/-]{0,30}",
        ) {
            let resource = Resource {
                attributes: resource_attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            };
            let scope = InstrumentationScope {
                name: scope_name,
                version: "1.2.3".into(),
                ..Default::default()
            };
            let records: Vec<LogRecord> = bodies
                .iter()
                .map(|(b, t, s)| record(b, *t, *s, &attrs))
                .collect();
            let mut encoded = EncodedRecords::default();
            for r in records.clone() {
                encoded.push(r);
            }
            prop_assert_eq!(encoded.len(), records.len());
            prop_assert_eq!(encoded.is_empty(), records.is_empty());
            let expected = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: records,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let bytes = encoded.into_request(&resource, &scope);
            prop_assert_eq!(&bytes, &expected.encode_to_vec());
            prop_assert_eq!(ExportLogsServiceRequest::decode(&bytes[..]).unwrap(), expected);
        }
    }

    #[test]
    fn an_empty_batch_is_a_request_with_no_records() {
        let bytes = EncodedRecords::default()
            .into_request(&Resource::default(), &InstrumentationScope::default());
        let decoded = ExportLogsServiceRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.resource_logs.len(), 1);
        assert!(
            decoded.resource_logs[0].scope_logs[0]
                .log_records
                .is_empty()
        );
    }
}
