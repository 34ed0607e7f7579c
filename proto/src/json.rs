//! OTLP values as plain JSON for the query API: ints stay ints, doubles stay doubles,
//! maps and arrays keep their shape. Only bytes change form (base64 strings).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::otlp::common::v1::{AnyValue, KeyValue, any_value};

/// Converts an OTLP value to JSON; an empty `AnyValue` becomes `null`.
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(v) => value_to_json(v),
    }
}

fn value_to_json(value: &any_value::Value) -> Value {
    match value {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::Number((*i).into()),
        // JSON has no NaN or infinity: keep them as the strings OTLP/JSON uses.
        any_value::Value::DoubleValue(d) => Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        any_value::Value::ArrayValue(a) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        any_value::Value::KvlistValue(kv) => attributes_to_json(&kv.values),
        any_value::Value::BytesValue(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // A string-table reference only means something inside a profiles dictionary.
        any_value::Value::StringValueStrindex(_) => Value::Null,
    }
}

/// Converts an attribute list to a JSON object; a repeated key keeps its last value.
pub fn attributes_to_json(attributes: &[KeyValue]) -> Value {
    let mut map = Map::with_capacity(attributes.len());
    for kv in attributes {
        let value = kv
            .value
            .as_ref()
            .map(any_value_to_json)
            .unwrap_or(Value::Null);
        map.insert(kv.key.clone(), value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn types_survive() {
        let attrs = vec![
            kv("i", any_value::Value::IntValue(i64::MAX)),
            kv("d", any_value::Value::DoubleValue(5.0)),
            kv("b", any_value::Value::BoolValue(true)),
            kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    }],
                }),
            ),
            kv(
                "m",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("x", any_value::Value::StringValue("y".into()))],
                }),
            ),
            kv("nan", any_value::Value::DoubleValue(f64::NAN)),
        ];
        let json = attributes_to_json(&attrs);
        assert_eq!(
            json.to_string(),
            r#"{"a":[1],"b":true,"d":5.0,"i":9223372036854775807,"m":{"x":"y"},"nan":"NaN"}"#
        );
    }
}
