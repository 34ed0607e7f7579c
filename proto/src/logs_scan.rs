//! What the collector checks in an OTLP logs export, read from its protobuf bytes
//! without decoding it.
//!
//! Validation needs a few numbers per record (times, attribute count), yet decoding a
//! batch with prost builds every string and list of it, and the WAL then stores the
//! bytes as they came anyway. [`scan_export_logs`] walks the wire format instead,
//! borrowing everything. It is stricter than prost on purpose: it answers only for
//! bytes made of the fields it knows, in the wire types they are declared with, with
//! valid UTF-8 in every string, nested no deeper than [`MAX_DEPTH`]; anything else
//! (unknown or newer fields included) is `None`, and the caller decodes with prost as
//! before. So every message it answers for is one prost decodes, and the WAL never
//! holds bytes the indexer cannot read.

use crate::wire::{FIXED32, FIXED64, LEN, Malformed, VARINT, Wire};

/// Nesting of messages the scan follows (prost allows 100): deeper values go to prost.
pub const MAX_DEPTH: u32 = 32;

/// What validation reads from an export, over all its records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogsScan {
    /// Log records.
    pub records: u64,
    /// Smallest effective time (the record's time, else its observed time), in ns.
    pub min_time_ns: u64,
    /// Largest effective time, in ns.
    pub max_time_ns: u64,
    /// Most attributes on one record.
    pub max_attributes: usize,
    /// Whether a record has no observed time or a resource or scope has no records:
    /// validation would change such a request.
    pub incomplete: bool,
}

impl LogsScan {
    fn add_record(&mut self, time_ns: u64, observed_ns: u64, attributes: usize) {
        let t = if time_ns != 0 { time_ns } else { observed_ns };
        if self.records == 0 {
            self.min_time_ns = t;
            self.max_time_ns = t;
        } else {
            self.min_time_ns = self.min_time_ns.min(t);
            self.max_time_ns = self.max_time_ns.max(t);
        }
        self.records += 1;
        self.max_attributes = self.max_attributes.max(attributes);
        self.incomplete |= observed_ns == 0;
    }
}

/// Scans an `ExportLogsServiceRequest` encoded in `bytes`; `None` when the bytes hold
/// anything the scan does not vouch for (see the module), which prost then decides.
pub fn scan_export_logs(bytes: &[u8]) -> Option<LogsScan> {
    let mut scan = LogsScan::default();
    request(Wire::new(bytes), &mut scan).ok()?;
    Some(scan)
}

fn request(mut r: Wire<'_>, scan: &mut LogsScan) -> Walk {
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => resource_logs(r.message()?, scan)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

/// A field the scan does not know, or in another wire type than declared.
const NOT_VOUCHED: Malformed = Malformed("a field the scan does not vouch for");

type Walk = Result<(), Malformed>;

fn resource_logs(mut r: Wire<'_>, scan: &mut LogsScan) -> Walk {
    let mut scopes = 0u64;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => resource(r.message()?)?,
            (2, LEN) => {
                scope_logs(r.message()?, scan)?;
                scopes += 1;
            }
            (3, LEN) => r.skip_str()?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    scan.incomplete |= scopes == 0;
    Ok(())
}

fn resource(mut r: Wire<'_>) -> Walk {
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => key_value(r.message()?, 2)?,
            (2, VARINT) => r.skip(VARINT)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

fn scope_logs(mut r: Wire<'_>, scan: &mut LogsScan) -> Walk {
    let before = scan.records;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => scope(r.message()?)?,
            (2, LEN) => log_record(r.message()?, scan)?,
            (3, LEN) => r.skip_str()?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    scan.incomplete |= scan.records == before;
    Ok(())
}

fn scope(mut r: Wire<'_>) -> Walk {
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1 | 2, LEN) => r.skip_str()?,
            (3, LEN) => key_value(r.message()?, 4)?,
            (4, VARINT) => r.skip(VARINT)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

/// Nesting depth of a record's direct values: request, resource logs, scope logs,
/// record, then the value.
const RECORD_VALUE_DEPTH: u32 = 4;

fn log_record(mut r: Wire<'_>, scan: &mut LogsScan) -> Walk {
    let (mut time, mut observed, mut attributes) = (0u64, 0u64, 0usize);
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            // A repeated scalar field keeps its last value, as prost merges it.
            (1, FIXED64) => time = r.fixed64()?,
            (11, FIXED64) => observed = r.fixed64()?,
            (2 | 7, VARINT) | (8, FIXED32) | (9 | 10, LEN) => r.skip(wire)?,
            (3 | 12, LEN) => r.skip_str()?,
            (5, LEN) => any_value(r.message()?, RECORD_VALUE_DEPTH)?,
            (6, LEN) => {
                key_value(r.message()?, RECORD_VALUE_DEPTH)?;
                attributes += 1;
            }
            _ => return Err(NOT_VOUCHED),
        }
    }
    scan.add_record(time, observed, attributes);
    Ok(())
}

fn key_value(mut r: Wire<'_>, depth: u32) -> Walk {
    let depth = deeper(depth)?;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => r.skip_str()?,
            (2, LEN) => any_value(r.message()?, depth)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

fn any_value(mut r: Wire<'_>, depth: u32) -> Walk {
    let depth = deeper(depth)?;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => r.skip_str()?,
            (2 | 3, VARINT) | (4, FIXED64) | (7, LEN) => r.skip(wire)?,
            (5, LEN) => values(r.message()?, depth, any_value)?,
            (6, LEN) => values(r.message()?, depth, key_value)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

/// An `ArrayValue` or `KeyValueList`: field 1 repeated, each an `each`.
fn values(mut r: Wire<'_>, depth: u32, each: fn(Wire<'_>, u32) -> Walk) -> Walk {
    let depth = deeper(depth)?;
    while let Some((tag, wire)) = r.key()? {
        match (tag, wire) {
            (1, LEN) => each(r.message()?, depth)?,
            _ => return Err(NOT_VOUCHED),
        }
    }
    Ok(())
}

fn deeper(depth: u32) -> Result<u32, Malformed> {
    if depth < MAX_DEPTH {
        Ok(depth + 1)
    } else {
        Err(Malformed("nested deeper than the scan follows"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use crate::otlp::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
    };
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use crate::otlp::resource::v1::Resource;

    /// The scan of a decoded request, computed the plain way.
    fn expected(request: &ExportLogsServiceRequest) -> LogsScan {
        let mut scan = LogsScan::default();
        for rl in &request.resource_logs {
            scan.incomplete |= rl.scope_logs.is_empty();
            for sl in &rl.scope_logs {
                scan.incomplete |= sl.log_records.is_empty();
                for r in &sl.log_records {
                    scan.add_record(
                        r.time_unix_nano,
                        r.observed_time_unix_nano,
                        r.attributes.len(),
                    );
                }
            }
        }
        scan
    }

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn any_value_strategy() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(any_value::Value::StringValue),
            any::<bool>().prop_map(any_value::Value::BoolValue),
            any::<i64>().prop_map(any_value::Value::IntValue),
            any::<f64>().prop_map(any_value::Value::DoubleValue),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
        ]
        .prop_map(|v| AnyValue { value: Some(v) });
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| any_value::Value::ArrayValue(ArrayValue { values })),
                proptest::collection::vec(("[a-z.]{0,6}", inner), 0..4).prop_map(|kvs| {
                    any_value::Value::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, v)| KeyValue {
                                key,
                                value: Some(v),
                                ..Default::default()
                            })
                            .collect(),
                    })
                }),
            ]
            .prop_map(|v| AnyValue { value: Some(v) })
        })
    }

    fn record_strategy() -> impl Strategy<Value = LogRecord> {
        (
            prop_oneof![Just(0u64), any::<u64>()],
            prop_oneof![Just(0u64), any::<u64>()],
            any::<String>(),
            proptest::option::of(any_value_strategy()),
            proptest::collection::vec(("[a-z._]{0,8}", any_value_strategy()), 0..5),
            proptest::collection::vec(any::<u8>(), 0..17),
            any::<u32>(),
        )
            .prop_map(|(time, observed, severity, body, attributes, id, flags)| {
                LogRecord {
                    time_unix_nano: time,
                    observed_time_unix_nano: observed,
                    severity_number: (flags % 25) as i32,
                    severity_text: severity,
                    body,
                    attributes: attributes
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                    dropped_attributes_count: flags % 3,
                    flags,
                    trace_id: id.clone(),
                    span_id: id.into_iter().take(8).collect(),
                    event_name: String::new(),
                }
            })
    }

    /// Applies `edits` to `bytes`: at a position, a byte replaced (0), the rest cut (1)
    /// or a byte inserted (2).
    pub(crate) fn mutate(bytes: &mut Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) {
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
    }

    pub(crate) fn request_strategy() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope_logs = (
            proptest::option::of(("[a-z.]{0,10}", "[0-9.]{0,5}")),
            proptest::collection::vec(record_strategy(), 0..4),
        )
            .prop_map(|(scope, log_records)| ScopeLogs {
                scope: scope.map(|(name, version)| InstrumentationScope {
                    name,
                    version,
                    attributes: vec![kv("lib", any_value::Value::BoolValue(true))],
                    dropped_attributes_count: 1,
                }),
                log_records,
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            });
        let resource_logs = (
            proptest::collection::vec(("[a-z.]{1,10}", any::<String>()), 0..3),
            proptest::collection::vec(scope_logs, 0..3),
        )
            .prop_map(|(attributes, scope_logs)| ResourceLogs {
                resource: Some(Resource {
                    attributes: attributes
                        .into_iter()
                        .map(|(k, v)| kv(&k, any_value::Value::StringValue(v)))
                        .collect(),
                    ..Default::default()
                }),
                scope_logs,
                schema_url: String::new(),
            });
        proptest::collection::vec(resource_logs, 0..3)
            .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn scans_what_prost_encodes_as_the_decoded_request_reads(
            request in request_strategy()
        ) {
            let bytes = request.encode_to_vec();
            prop_assert_eq!(scan_export_logs(&bytes), Some(expected(&request)));
        }

        /// The property the WAL relies on: whatever the scan vouches for, prost decodes,
        /// and to a request with the same figures.
        #[test]
        fn vouches_only_for_bytes_prost_decodes(
            request in request_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = request.encode_to_vec();
            mutate(&mut bytes, edits);
            if let Some(scan) = scan_export_logs(&bytes) {
                let decoded = ExportLogsServiceRequest::decode(&bytes[..]);
                prop_assert!(decoded.is_ok(), "scanned but prost refuses: {:?}", decoded);
                prop_assert_eq!(scan, expected(&decoded.unwrap()));
            }
        }

        #[test]
        fn vouches_only_for_noise_prost_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(scan) = scan_export_logs(&bytes) {
                let decoded = ExportLogsServiceRequest::decode(&bytes[..]);
                prop_assert!(decoded.is_ok());
                prop_assert_eq!(scan, expected(&decoded.unwrap()));
            }
        }
    }

    /// `record` as the one record of a request with no resource or scope.
    pub(crate) fn one_record(record: LogRecord) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn figures_of_a_small_request() {
        let mut request = one_record(LogRecord {
            time_unix_nano: 5,
            observed_time_unix_nano: 9,
            attributes: vec![kv("a", any_value::Value::IntValue(1)); 3],
            ..Default::default()
        });
        request.resource_logs[0].scope_logs[0]
            .log_records
            .push(LogRecord {
                observed_time_unix_nano: 2,
                ..Default::default()
            });
        let scan = scan_export_logs(&request.encode_to_vec()).unwrap();
        assert_eq!(
            scan,
            LogsScan {
                records: 2,
                min_time_ns: 2,
                max_time_ns: 5,
                max_attributes: 3,
                incomplete: false,
            }
        );
        assert!(scan_export_logs(&[]).unwrap().records == 0);
    }

    #[test]
    fn what_validation_would_change_is_incomplete() {
        let no_observed = one_record(LogRecord {
            time_unix_nano: 5,
            ..Default::default()
        });
        let empty_scope = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs::default()],
                ..Default::default()
            }],
        };
        let empty_resource = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs::default()],
        };
        for request in [no_observed, empty_scope, empty_resource] {
            assert!(
                scan_export_logs(&request.encode_to_vec())
                    .unwrap()
                    .incomplete
            );
        }
    }

    #[test]
    fn leaves_to_prost_what_it_does_not_vouch_for() {
        let good = one_record(LogRecord {
            observed_time_unix_nano: 1,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("ok".into())),
            }),
            ..Default::default()
        })
        .encode_to_vec();
        assert!(scan_export_logs(&good).is_some());
        // Invalid UTF-8 in the body: prost refuses it too.
        let mut bad_utf8 = good.clone();
        let at = bad_utf8.windows(2).position(|w| w == b"ok").unwrap();
        bad_utf8[at] = 0xff;
        assert!(scan_export_logs(&bad_utf8).is_none());
        assert!(ExportLogsServiceRequest::decode(&bad_utf8[..]).is_err());
        // Truncated.
        assert!(scan_export_logs(&good[..good.len() - 1]).is_none());
        // An unknown field (prost would skip it): left to prost.
        let mut unknown = good.clone();
        unknown.extend_from_slice(&[(15 << 3) | VARINT, 1]);
        assert!(scan_export_logs(&unknown).is_none());
        assert!(ExportLogsServiceRequest::decode(&unknown[..]).is_ok());
        // A known field in another wire type.
        assert!(scan_export_logs(&[(1 << 3) | VARINT, 1]).is_none());
        // A string-table reference (profiles only): left to prost.
        let strindex = one_record(LogRecord {
            observed_time_unix_nano: 1,
            attributes: vec![KeyValue {
                key_strindex: 3,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(scan_export_logs(&strindex.encode_to_vec()).is_none());
    }

    #[test]
    fn deep_values_are_left_to_prost() {
        let mut value = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..40 {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let deep = one_record(LogRecord {
            observed_time_unix_nano: 1,
            body: Some(value),
            ..Default::default()
        })
        .encode_to_vec();
        assert!(scan_export_logs(&deep).is_none());
        assert!(ExportLogsServiceRequest::decode(&deep[..]).is_ok());
    }
}
