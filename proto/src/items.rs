//! How many items an encoded OTLP request holds, read from its bytes without decoding
//! them: the agent's exporter sends queued requests as the bytes they were queued as, and
//! needs only how many log records, metrics or spans a batch holds (a self-metric) and
//! whether its framing is sound (an unreadable batch is skipped, not sent). Decoding a
//! megabyte batch into `LogRecord`s only to count them cost more than building it.
//!
//! The walk follows length-delimited fields along a path of field numbers and checks
//! every field it passes (tag, wire type, length within bounds) with the shared wire
//! reader; it does not look inside the leaves (a log record's own fields), which the
//! collector validates.

pub use crate::wire::Malformed;
use crate::wire::{LEN, Wire};

/// Field numbers from `ExportLogsServiceRequest` down to `LogRecord`: `resource_logs`
/// (1), `ResourceLogs.scope_logs` (2), `ScopeLogs.log_records` (2).
pub const LOG_RECORDS: &[u32] = &[1, 2, 2];
/// `ExportMetricsServiceRequest.resource_metrics` (1).
pub const RESOURCE_METRICS: &[u32] = &[1];
/// `ExportTraceServiceRequest.resource_spans` (1), `ResourceSpans.scope_spans` (2),
/// `ScopeSpans.spans` (2).
pub const SPANS: &[u32] = &[1, 2, 2];

const NOT_A_MESSAGE: Malformed = Malformed("a field on the item path is not length-delimited");

/// How many fields the path reaches: the length-delimited fields numbered `path[0]` in
/// `buf`, and within each of those the ones numbered `path[1]`, and so on; the last
/// number's fields are counted. Every message passed through is checked whole.
pub fn count(buf: &[u8], path: &[u32]) -> Result<u64, Malformed> {
    let Some((&want, rest)) = path.split_first() else {
        return Ok(0);
    };
    let mut wire = Wire::new(buf);
    let mut total = 0u64;
    while let Some((field, wire_type)) = wire.key()? {
        if field != u64::from(want) {
            wire.skip(wire_type)?;
            continue;
        }
        if wire_type != LEN {
            return Err(NOT_A_MESSAGE);
        }
        let item = wire.bytes()?;
        total += if rest.is_empty() {
            1
        } else {
            count(item, rest)?
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use crate::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use crate::otlp::resource::v1::Resource;
    use proptest::prelude::*;
    use prost::Message as _;

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
        let past_end = Err(Malformed("field runs past the end of its message"));
        // Field 1, length 5, but only 2 bytes follow.
        assert_eq!(count(&[0x0a, 5, 1, 2], LOG_RECORDS), past_end);
        // A truncated varint tag.
        assert_eq!(
            count(&[0x80], LOG_RECORDS),
            Err(Malformed("varint ends early"))
        );
        // Wire type 3 (group start) in a field off the path.
        assert_eq!(
            count(&[0x1b], LOG_RECORDS),
            Err(Malformed("unsupported wire type"))
        );
        // Field 0.
        assert_eq!(
            count(&[0x02, 0], LOG_RECORDS),
            Err(Malformed("field number 0"))
        );
        // resource_logs as a varint.
        assert_eq!(count(&[0x08, 1], LOG_RECORDS), Err(NOT_A_MESSAGE));
        // A fixed64 cut short.
        assert_eq!(count(&[0x11, 1, 2], LOG_RECORDS), past_end);
        // An error deep inside: a scope_logs whose log_records length overruns it.
        let mut inner = vec![0x12, 3, 0x12, 9, 0];
        let mut buf = vec![0x0a, inner.len() as u8];
        buf.append(&mut inner);
        assert_eq!(count(&buf, LOG_RECORDS), past_end);
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
