//! Reading the shape of an encoded OTLP request without decoding it: the exporter sends
//! queued requests as the bytes they were queued as, and needs only how many log records
//! a batch holds (a self-metric) and whether its framing is sound (an unreadable batch is
//! skipped, not sent). Decoding a megabyte batch into `LogRecord`s only to count them
//! cost more than building it.
//!
//! The walk follows length-delimited fields along a path of field numbers and checks
//! every field it passes (tag, wire type, length within bounds); it does not look inside
//! the leaves (a log record's own fields), which the collector validates.

/// Field numbers from `ExportLogsServiceRequest` down to `LogRecord`: `resource_logs`
/// (1), `ResourceLogs.scope_logs` (2), `ScopeLogs.log_records` (2).
pub(crate) const LOG_RECORDS: &[u32] = &[1, 2, 2];
/// `ExportMetricsServiceRequest.resource_metrics` (1).
pub(crate) const RESOURCE_METRICS: &[u32] = &[1];
/// `ExportTraceServiceRequest.resource_spans` (1), `ResourceSpans.scope_spans` (2),
/// `ScopeSpans.spans` (2).
pub(crate) const SPANS: &[u32] = &[1, 2, 2];

/// Malformed protobuf framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("truncated varint at byte {0}")]
    Varint(usize),
    #[error("field number 0 or unsupported wire type {wire_type} at byte {at}")]
    Tag { at: usize, wire_type: u8 },
    #[error("field at byte {at} runs {len} bytes past the end of its message")]
    Length { at: usize, len: u64 },
    #[error("field {field} at byte {at} is not length-delimited")]
    NotMessage { at: usize, field: u32 },
}

/// How many fields the path reaches: the length-delimited fields numbered `path[0]` in
/// `buf`, and within each of those the ones numbered `path[1]`, and so on; the last
/// number's fields are counted. Every message passed through is checked whole.
pub(crate) fn count(buf: &[u8], path: &[u32]) -> Result<u64, WireError> {
    let Some((&want, rest)) = path.split_first() else {
        return Ok(0);
    };
    let mut total = 0u64;
    let mut at = 0usize;
    while at < buf.len() {
        let field_at = at;
        let (tag, used) = varint(&buf[at..]).ok_or(WireError::Varint(at))?;
        at += used;
        let wire_type = (tag & 7) as u8;
        let field = (tag >> 3) as u32;
        if field == 0 || tag >> 3 > u64::from(u32::MAX >> 3) {
            return Err(WireError::Tag {
                at: field_at,
                wire_type,
            });
        }
        let skip = match wire_type {
            0 => {
                let (_, used) = varint(&buf[at..]).ok_or(WireError::Varint(at))?;
                used
            }
            1 => 8,
            2 => {
                let (len, used) = varint(&buf[at..]).ok_or(WireError::Varint(at))?;
                at += used;
                if len > (buf.len() - at) as u64 {
                    return Err(WireError::Length { at: field_at, len });
                }
                let len = len as usize;
                if field == want {
                    total += if rest.is_empty() {
                        1
                    } else {
                        count(&buf[at..at + len], rest)?
                    };
                }
                len
            }
            5 => 4,
            _ => {
                return Err(WireError::Tag {
                    at: field_at,
                    wire_type,
                });
            }
        };
        if wire_type != 2 && field == want {
            return Err(WireError::NotMessage {
                at: field_at,
                field,
            });
        }
        if skip > buf.len() - at {
            return Err(WireError::Length {
                at: field_at,
                len: skip as u64,
            });
        }
        at += skip;
    }
    Ok(total)
}

/// A base-128 varint at the start of `buf`: its value and length; `None` if truncated
/// or longer than ten bytes.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;
    use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use vantage_proto::otlp::resource::v1::Resource;

    fn record(body: &str, attrs: usize) -> LogRecord {
        LogRecord {
            time_unix_nano: 7,
            observed_time_unix_nano: 9,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body.to_string())),
            }),
            attributes: (0..attrs)
                .map(|i| KeyValue {
                    key: format!("k{i}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(i as i64)),
                    }),
                    ..Default::default()
                })
                .collect(),
            flags: 1,
            ..Default::default()
        }
    }

    fn request(shape: &[Vec<Vec<String>>]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: shape
                .iter()
                .map(|scopes| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "host.name".into(),
                            value: None,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: scopes
                        .iter()
                        .map(|bodies| ScopeLogs {
                            scope: Some(InstrumentationScope {
                                name: "s".into(),
                                ..Default::default()
                            }),
                            log_records: bodies
                                .iter()
                                .enumerate()
                                .map(|(i, b)| record(b, i % 3))
                                .collect(),
                            schema_url: "u".into(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    fn decoded_count(r: &ExportLogsServiceRequest) -> u64 {
        r.resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len() as u64)
            .sum()
    }

    #[test]
    fn counts_an_empty_request_and_a_tagless_one() {
        assert_eq!(count(&[], LOG_RECORDS), Ok(0));
        let empty = request(&[vec![vec![]]]).encode_to_vec();
        assert_eq!(count(&empty, LOG_RECORDS), Ok(0));
    }

    #[test]
    fn rejects_framing_errors() {
        // Field 1, length 5, but only 2 bytes follow.
        assert!(matches!(
            count(&[0x0a, 5, 1, 2], LOG_RECORDS),
            Err(WireError::Length { .. })
        ));
        // A truncated varint tag.
        assert_eq!(count(&[0x80], LOG_RECORDS), Err(WireError::Varint(0)));
        // Wire type 3 (group start).
        assert!(matches!(
            count(&[0x0b], LOG_RECORDS),
            Err(WireError::Tag { wire_type: 3, .. })
        ));
        // Field 0.
        assert!(matches!(
            count(&[0x02, 0], LOG_RECORDS),
            Err(WireError::Tag { .. })
        ));
        // resource_logs as a varint.
        assert!(matches!(
            count(&[0x08, 1], LOG_RECORDS),
            Err(WireError::NotMessage { field: 1, .. })
        ));
        // A fixed64 cut short.
        assert!(matches!(
            count(&[0x11, 1, 2], LOG_RECORDS),
            Err(WireError::Length { .. })
        ));
        // An error deep inside: a scope_logs whose log_records length overruns it.
        let mut inner = vec![0x12, 3, 0x12, 9, 0];
        let mut buf = vec![0x0a, inner.len() as u8];
        buf.append(&mut inner);
        assert!(matches!(
            count(&buf, LOG_RECORDS),
            Err(WireError::Length { .. })
        ));
    }

    proptest! {
        /// The walk counts what decoding counts, for any shape of request.
        #[test]
        fn counts_what_decoding_counts(
            shape in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::collection::vec("[ -~]{0,300}", 0..20),
                    0..4,
                ),
                0..4,
            ),
        ) {
            let r = request(&shape);
            let bytes = r.encode_to_vec();
            prop_assert_eq!(count(&bytes, LOG_RECORDS), Ok(decoded_count(&r)));
        }

        /// Garbage never panics, and whenever both the walk and prost accept it they
        /// agree on the count.
        #[test]
        fn garbage_is_refused_or_counted_right(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let walked = count(&data, LOG_RECORDS);
            let _ = count(&data, SPANS);
            let _ = count(&data, RESOURCE_METRICS);
            if let (Ok(n), Ok(r)) = (walked, ExportLogsServiceRequest::decode(&data[..])) {
                prop_assert_eq!(n, decoded_count(&r));
            }
        }

        /// A valid request cut anywhere is either refused or still counts no more records
        /// than it holds.
        #[test]
        fn truncation_never_overcounts(
            bodies in proptest::collection::vec("[a-z]{0,50}", 1..30),
            cut in any::<proptest::sample::Index>(),
        ) {
            let r = request(&[vec![bodies]]);
            let bytes = r.encode_to_vec();
            let at = cut.index(bytes.len());
            if let Ok(n) = count(&bytes[..at], LOG_RECORDS) {
                prop_assert!(n <= decoded_count(&r));
            }
        }
    }
}
