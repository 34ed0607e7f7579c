//! The resource every batch carries: which host sent it, by the OpenTelemetry resource
//! semantic conventions, plus the configured static attributes.

use std::collections::BTreeMap;

use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vantage_proto::otlp::resource::v1::Resource;

/// A string attribute.
pub(crate) fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// `host.arch` values as the conventions spell them.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

/// The host's resource: `host.name`, `host.id` (from `/etc/machine-id`, as the
/// conventions recommend on Linux), `os.type`, `host.arch`, then `extra` (which may
/// override any of them).
pub(crate) fn host_resource(extra: &BTreeMap<String, String>) -> Resource {
    let mut attrs = BTreeMap::new();
    if let Some(name) = sysinfo::System::host_name().ok().filter(|n| !n.is_empty()) {
        attrs.insert("host.name".to_string(), name);
    }
    let id = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !id.is_empty() {
        attrs.insert("host.id".to_string(), id);
    }
    attrs.insert("os.type".to_string(), std::env::consts::OS.to_string());
    attrs.insert("host.arch".to_string(), arch().to_string());
    for (k, v) in extra {
        attrs.insert(k.clone(), v.clone());
    }
    Resource {
        attributes: attrs.into_iter().map(|(k, v)| kv(&k, v)).collect(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_attributes_and_overrides() {
        let extra = BTreeMap::from([
            ("deployment.environment".to_string(), "prod".to_string()),
            ("host.name".to_string(), "override".to_string()),
        ]);
        let r = host_resource(&extra);
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
        };
        assert_eq!(get("host.name"), kv("x", "override").value);
        assert_eq!(get("os.type"), kv("x", "linux").value);
        assert!(get("host.arch").is_some());
        assert_eq!(get("deployment.environment"), kv("x", "prod").value);
    }
}
