use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::logs_scan::tests::{mutate, one_record, request_strategy};
use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::common::v1::InstrumentationScope;
use crate::otlp::logs::v1::LogRecord;
use crate::otlp::resource::v1::Resource;

/// Checks that `read` holds what prost decodes from the same bytes: every field the
/// indexer reads, and the bytes of each resource, scope and record decoding to the
/// same messages.
fn assert_same(read: &LogsRef<'_>, decoded: &ExportLogsServiceRequest) {
    assert_eq!(read.resource_logs.len(), decoded.resource_logs.len());
    for (rl, want) in read.resource_logs.iter().zip(&decoded.resource_logs) {
        let resource = want.resource.clone().unwrap_or_default();
        assert_eq!(Resource::decode(rl.resource.raw).unwrap(), resource);
        let attributes: Vec<KeyValue> = rl
            .resource
            .attributes
            .iter()
            .map(KeyValueRef::to_prost)
            .collect();
        assert_eq!(attributes, resource.attributes);
        assert_eq!(rl.scope_logs.len(), want.scope_logs.len());
        for (sl, want) in rl.scope_logs.iter().zip(&want.scope_logs) {
            let scope = want.scope.clone().unwrap_or_default();
            assert_eq!(InstrumentationScope::decode(sl.scope.raw).unwrap(), scope);
            assert_eq!(
                (sl.scope.name, sl.scope.version),
                (&*scope.name, &*scope.version)
            );
            assert_eq!(sl.log_records.len(), want.log_records.len());
            for (r, want) in sl.log_records.iter().zip(&want.log_records) {
                assert_eq!(&LogRecord::decode(r.raw).unwrap(), want);
                let attributes: Vec<KeyValue> =
                    r.attributes.iter().map(KeyValueRef::to_prost).collect();
                let read = LogRecord {
                    time_unix_nano: r.time_unix_nano,
                    observed_time_unix_nano: r.observed_time_unix_nano,
                    severity_number: r.severity_number,
                    severity_text: r.severity_text.to_owned(),
                    body: r.body.as_ref().map(AnyValueRef::to_prost),
                    attributes,
                    dropped_attributes_count: want.dropped_attributes_count,
                    flags: want.flags,
                    trace_id: r.trace_id.to_vec(),
                    span_id: r.span_id.to_vec(),
                    event_name: r.event_name.to_owned(),
                };
                // Compared as bytes, so that NaN equals NaN.
                assert_eq!(read.encode_to_vec(), want.encode_to_vec());
            }
        }
    }
}

/// Field `tag` holding `inner` (an encoded message or bytes).
fn field(tag: u32, inner: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::bytes::encode(tag, &inner, &mut out);
    out
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn reads_what_prost_encodes_as_prost_decodes_it(request in request_strategy()) {
        let bytes = request.encode_to_vec();
        let read = LogsRef::decode(&bytes).expect("prost's own encoding is read");
        assert_same(&read, &request);
    }

    /// What the indexer relies on: whatever is read, prost decodes, and to the same
    /// request; nothing panics.
    #[test]
    fn reads_only_what_prost_decodes_alike(
        request in request_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = request.encode_to_vec();
        mutate(&mut bytes, edits);
        if let Ok(read) = LogsRef::decode(&bytes) {
            let decoded = ExportLogsServiceRequest::decode(&bytes[..]);
            prop_assert!(decoded.is_ok(), "read but prost refuses: {:?}", decoded);
            assert_same(&read, &decoded.unwrap());
        }
    }

    #[test]
    fn reads_only_noise_prost_decodes_alike(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(read) = LogsRef::decode(&bytes) {
            let decoded = ExportLogsServiceRequest::decode(&bytes[..]);
            prop_assert!(decoded.is_ok());
            assert_same(&read, &decoded.unwrap());
        }
    }
}

#[test]
fn profile_references_and_empty_values_are_read() {
    let request = one_record(LogRecord {
        body: Some(AnyValue { value: None }),
        attributes: vec![
            KeyValue {
                key_strindex: 3,
                ..Default::default()
            },
            KeyValue {
                key: "s".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValueStrindex(-2)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "none".into(),
                value: None,
                ..Default::default()
            },
        ],
        severity_number: -5,
        ..Default::default()
    });
    let bytes = request.encode_to_vec();
    let read = LogsRef::decode(&bytes).unwrap();
    assert_same(&read, &request);
    let record = &read.resource_logs[0].scope_logs[0].log_records[0];
    assert!(matches!(record.body, Some(AnyValueRef { value: None })));
    assert!(record.attributes[2].value.is_none());
}

#[test]
fn what_prost_merges_or_drops_is_refused() {
    let good = one_record(LogRecord {
        observed_time_unix_nano: 1,
        body: string("ok"),
        ..Default::default()
    })
    .encode_to_vec();
    assert!(LogsRef::decode(&good).is_ok());
    // An unknown field: prost drops it, a stored copy of the bytes would keep it.
    let mut unknown = good.clone();
    unknown.extend_from_slice(&[(15 << 3) | VARINT, 1]);
    assert!(LogsRef::decode(&unknown).is_err());
    assert!(ExportLogsServiceRequest::decode(&unknown[..]).is_ok());

    // A second body: prost merges the two.
    let body = |text: &str| {
        let mut field = Vec::new();
        prost::encoding::message::encode(5, &string(text).unwrap(), &mut field);
        field
    };
    let mut record = LogRecord {
        observed_time_unix_nano: 1,
        ..Default::default()
    }
    .encode_to_vec();
    record.extend(body("a"));
    record.extend(body("b"));
    let twice = field(1, field(2, field(2, record)));
    assert!(ExportLogsServiceRequest::decode(&twice[..]).is_ok());
    assert!(LogsRef::decode(&twice).is_err());

    // Two members of the oneof: prost keeps the last.
    let mut value = string("a").unwrap().encode_to_vec();
    value.extend([(3 << 3) | VARINT, 7]);
    let kv = field(2, value);
    assert!(KeyValue::decode(&kv[..]).is_ok());
    assert_eq!(key_value(Wire::new(&kv), 0).unwrap_err(), DIFFERS);

    // A known field in another wire type: prost refuses it too.
    assert!(LogsRef::decode(&[(1 << 3) | VARINT, 1]).is_err());
    // Invalid UTF-8.
    let mut bad_utf8 = good.clone();
    let at = bad_utf8.windows(2).position(|w| w == b"ok").unwrap();
    bad_utf8[at] = 0xff;
    assert!(LogsRef::decode(&bad_utf8).is_err());
    // Truncated.
    assert!(LogsRef::decode(&good[..good.len() - 1]).is_err());
}

#[test]
fn nesting_prost_reads_is_read_and_deeper_is_refused() {
    let nested = |levels: usize| {
        let mut value = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..levels {
            value = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        one_record(LogRecord {
            body: Some(value),
            ..Default::default()
        })
        .encode_to_vec()
    };
    // Each level is two messages (the value and its array).
    let deepest_prost_reads = (0..100)
        .rev()
        .find(|&n| ExportLogsServiceRequest::decode(&nested(n)[..]).is_ok())
        .unwrap();
    for n in [deepest_prost_reads, deepest_prost_reads + 1, 200] {
        let bytes = nested(n);
        assert_eq!(
            LogsRef::decode(&bytes).is_ok(),
            ExportLogsServiceRequest::decode(&bytes[..]).is_ok(),
            "{n} levels"
        );
    }
    assert!(LogsRef::decode(&nested(deepest_prost_reads)).is_ok());
}

#[test]
fn a_records_fields_come_back_as_encoded() {
    let record = LogRecord {
        time_unix_nano: 5,
        severity_text: "INFO".into(),
        body: string("hello"),
        attributes: vec![KeyValue {
            key: "k".into(),
            value: string("v"),
            ..Default::default()
        }],
        trace_id: vec![1; 16],
        event_name: "e".into(),
        ..Default::default()
    };
    let bytes = one_record(record.clone()).encode_to_vec();
    let read = LogsRef::decode(&bytes).unwrap();
    let r = &read.resource_logs[0].scope_logs[0].log_records[0];
    let tags: Vec<u64> = r.fields().map(|(tag, _)| tag).collect();
    assert_eq!(tags, [1, 3, 5, 6, 9, 12]);
    let joined: Vec<u8> = r.fields().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(joined, record.encode_to_vec());
}
