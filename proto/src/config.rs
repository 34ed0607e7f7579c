//! The configuration syntax the collector and the agent share, so one operator learns
//! it once: durations (`500ms`, `30s`, `10m`, `2h`, `7d`, `1w`) and environment
//! overrides that set a YAML key by its path (`VANTAGE_LISTEN__API` -> `listen.api`).
//! Pure functions: reading files and the environment stays with the binaries.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

/// Parses `500ms`, `30s`, `10m`, `2h`, `7d`, `1w` (one whole number, one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h, d or w)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3_600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use ms, s, m, h, d or w)"
            ));
        }
    };
    d.ok_or_else(|| format!("{text:?} is too long"))
}

/// A duration as [`parse_duration`] reads it, in the largest exact unit (`30s`, `15m`,
/// `7d`, `250ms`): how the configuration and messages about it name one.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// An environment value read as YAML (so `false` and `42` keep their types), else a
/// string.
pub fn env_scalar(text: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// Sets the key at `path` in `root`, creating (or replacing non-mapping values with)
/// mappings on the way.
pub fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for (i, key) in path.iter().enumerate() {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!("made a mapping above")
        };
        let key = Value::String(key.clone());
        if i == path.len() - 1 {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert(Value::Mapping(Mapping::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_keep_yaml_types_and_paths_nest() {
        assert_eq!(env_scalar("false"), Value::Bool(false));
        assert_eq!(
            env_scalar("42"),
            serde_yaml_ng::from_str::<Value>("42").unwrap()
        );
        assert_eq!(env_scalar("a,b"), Value::String("a,b".into()));
        let mut root = Value::Mapping(Mapping::new());
        set_path(
            &mut root,
            &["listen".into(), "api".into()],
            env_scalar("127.0.0.1:1"),
        );
        assert_eq!(root["listen"]["api"], Value::String("127.0.0.1:1".into()));
    }
}
