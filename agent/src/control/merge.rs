//! How a remote configuration becomes the effective one: the documents of the offer in
//! lexical key order deep-merged over the local tree (mappings merge, the later value
//! wins, sequences are replaced whole), the local file's pinned keys put back, then
//! `${env:NAME}` references replaced from the agent's environment. Pure functions.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};
use vantage_proto::config::env_scalar;

use crate::config::ConfigError;

/// Top-level keys a remote document may not set: where the agent keeps its state,
/// and how it is controlled (a server could otherwise cut itself off).
pub(crate) const FORBIDDEN_KEYS: &[&str] = &["state_dir", "control"];

/// Keys whose values stay text after expansion (a numeric token is still a token).
const TEXT_KEYS: &[&str] = &["token", "enrollment_token"];

/// Keys whose values the effective configuration report masks.
const SECRET_KEY_PARTS: &[&str] = &["token", "password", "secret", "api_key"];

/// What the effective configuration shows instead of a credential.
pub(crate) const MASK: &str = "<masked>";

/// Why a remote document cannot be merged.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MergeError {
    /// Not YAML.
    #[error("remote config document {doc:?}: not YAML: {message}")]
    Yaml { doc: String, message: String },
    /// YAML, but not a mapping of keys.
    #[error("remote config document {doc:?}: the top level must be a mapping of keys")]
    NotMapping { doc: String },
    /// Sets a key only the local file may set.
    #[error("remote config document {doc:?}: {key} may not be set remotely")]
    Forbidden { doc: String, key: String },
}

/// Merges `over` into `base`: mappings key by key (recursively), anything else
/// replaced by `over`'s value.
pub(crate) fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `local` with every document merged over it in lexical key order.
pub(crate) fn merge_documents(
    local: &Value,
    documents: &BTreeMap<String, Vec<u8>>,
) -> Result<Value, MergeError> {
    let mut merged = match local {
        Value::Mapping(_) => local.clone(),
        _ => Value::Mapping(Mapping::new()),
    };
    for (doc, body) in documents {
        let text = std::str::from_utf8(body).map_err(|e| MergeError::Yaml {
            doc: doc.clone(),
            message: format!("not UTF-8: {e}"),
        })?;
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| MergeError::Yaml {
            doc: doc.clone(),
            message: e.to_string(),
        })?;
        let value = match value {
            Value::Null => continue,
            v @ Value::Mapping(_) => v,
            _ => return Err(MergeError::NotMapping { doc: doc.clone() }),
        };
        if let Value::Mapping(m) = &value {
            for key in FORBIDDEN_KEYS {
                if m.contains_key(*key) {
                    return Err(MergeError::Forbidden {
                        doc: doc.clone(),
                        key: (*key).to_string(),
                    });
                }
            }
        }
        deep_merge(&mut merged, value);
    }
    Ok(merged)
}

fn get<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |node, key| match node {
        Value::Mapping(m) => m.get(key.as_str()),
        _ => None,
    })
}

fn remove(root: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for key in parents {
        match node {
            Value::Mapping(m) => match m.get_mut(key.as_str()) {
                Some(next) => node = next,
                None => return,
            },
            _ => return,
        }
    }
    if let Value::Mapping(m) = node {
        m.remove(last.as_str());
    }
}

/// Puts every pinned key back as the local tree has it (removed when the local tree
/// does not set it: the server cannot set a pinned key either).
pub(crate) fn apply_pins(merged: &mut Value, local: &Value, pinned: &[Vec<String>]) {
    for path in pinned {
        match get(local, path) {
            Some(v) => vantage_proto::config::set_path(merged, path, v.clone()),
            None => remove(merged, path),
        }
    }
}

/// Replaces `${env:NAME}` in every string value from `env`. A value that is exactly
/// one reference takes the variable's type (`8080` is a number, `true` a boolean), as
/// `VANTAGE_AGENT_*` overrides do, except for tokens. Unset variables, malformed
/// references and `${secret:NAME}` the collector did not replace are errors naming
/// the key path, all of them at once.
pub(crate) fn expand(
    mut root: Value,
    env: &BTreeMap<String, String>,
) -> Result<Value, ConfigError> {
    let mut errors = Vec::new();
    walk(&mut root, &mut String::new(), env, &mut errors);
    if errors.is_empty() {
        Ok(root)
    } else {
        Err(ConfigError(errors))
    }
}

fn walk(
    node: &mut Value,
    path: &mut String,
    env: &BTreeMap<String, String>,
    errors: &mut Vec<String>,
) {
    match node {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
                walk(v, path, env, errors);
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path, env, errors);
                path.truncate(len);
            }
        }
        Value::String(s) if s.contains("${") => {
            let leaf = path.rsplit('.').next().unwrap_or("");
            match substitute(s, env) {
                Ok((text, whole)) => {
                    *node = if whole && !TEXT_KEYS.contains(&leaf) {
                        env_scalar(&text)
                    } else {
                        Value::String(text)
                    };
                }
                Err(e) => errors.push(format!("{path}: {e}")),
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, env, errors),
        _ => {}
    }
}

/// The text with its references replaced, and whether it was exactly one reference.
fn substitute(s: &str, env: &BTreeMap<String, String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut refs = 0usize;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated reference in {s:?}"));
        };
        let inner = &after[..end];
        if let Some(name) = inner.strip_prefix("env:") {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("${{{inner}}}: {name:?} is not a variable name"));
            }
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    return Err(format!(
                        "${{env:{name}}}: environment variable {name} is not set"
                    ));
                }
            }
        } else if let Some(name) = inner.strip_prefix("secret:") {
            return Err(format!(
                "${{secret:{name}}}: secret {name} was not resolved by the collector (is it defined for this tenant?)"
            ));
        } else {
            // Not a reference of ours (a regex, a shell snippet): kept as written.
            out.push_str(&rest[at..at + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        refs += 1;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let whole =
        refs == 1 && s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
    Ok((out, whole))
}

/// The tree as YAML with every credential-like value masked, for `EffectiveConfig`.
pub(crate) fn masked_yaml(tree: &Value) -> String {
    let mut copy = tree.clone();
    mask(&mut copy);
    serde_yaml_ng::to_string(&copy).unwrap_or_default()
}

fn mask(node: &mut Value) {
    match node {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let secret = k.as_str().is_some_and(|k| {
                    let k = k.to_ascii_lowercase();
                    SECRET_KEY_PARTS.iter().any(|p| k.contains(p))
                });
                if secret && !matches!(v, Value::Null | Value::Mapping(_) | Value::Sequence(_)) {
                    *v = Value::String(MASK.to_string());
                } else {
                    mask(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(mask),
        Value::Tagged(t) => mask(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn docs(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn documents_merge_in_key_order_over_local_and_sequences_are_replaced() {
        let local = yaml(
            "exporter: {endpoint: 'http://a:4317', compression: gzip}\nfiles: {inputs: [{include: [/a]}]}\n",
        );
        // Inserted out of order: "10-..." sorts before "20-...".
        let d = docs(&[
            ("20-late", "exporter: {endpoint: 'http://late:4317'}\n"),
            (
                "10-early",
                "exporter: {endpoint: 'http://early:4317', batch_max_records: 5}\nfiles: {inputs: [{include: [/b]}, {include: [/c]}]}\n",
            ),
        ]);
        let m = merge_documents(&local, &d).unwrap();
        assert_eq!(
            m,
            yaml(
                "exporter: {endpoint: 'http://late:4317', compression: gzip, batch_max_records: 5}\nfiles: {inputs: [{include: [/b]}, {include: [/c]}]}\n"
            )
        );
    }

    #[test]
    fn empty_documents_change_nothing_and_bad_ones_are_named() {
        let local = yaml("log_format: json\n");
        assert_eq!(merge_documents(&local, &docs(&[("a", "")])).unwrap(), local);
        assert_eq!(
            merge_documents(&local, &docs(&[("a", "[1, 2]")])).unwrap_err(),
            MergeError::NotMapping { doc: "a".into() }
        );
        let e = merge_documents(&local, &docs(&[("x", "a: [")])).unwrap_err();
        assert!(
            matches!(&e, MergeError::Yaml { doc, .. } if doc == "x"),
            "{e}"
        );
        let e = merge_documents(
            &local,
            &BTreeMap::from([("bin".to_string(), vec![0xff, 0xfe])]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn forbidden_keys_are_refused_by_name() {
        for key in FORBIDDEN_KEYS {
            let e = merge_documents(&yaml("{}"), &docs(&[("base", &format!("{key}: x\n"))]))
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("remote config document \"base\": {key} may not be set remotely")
            );
        }
        // Nested keys of the same name are ordinary keys.
        assert!(merge_documents(&yaml("{}"), &docs(&[("a", "exporter: {control: 1}\n")])).is_ok());
    }

    #[test]
    fn pinned_keys_keep_the_local_value_or_stay_unset() {
        let local = yaml("exporter: {endpoint: 'http://local:4317'}\n");
        let mut m = merge_documents(
            &local,
            &docs(&[(
                "a",
                "exporter: {endpoint: 'http://evil:4317', token: t}\nhealth_listen: 'off'\n",
            )]),
        )
        .unwrap();
        let pins = vec![
            vec!["exporter".to_string(), "endpoint".to_string()],
            vec!["health_listen".to_string()],
            vec!["not".to_string(), "there".to_string()],
        ];
        apply_pins(&mut m, &local, &pins);
        assert_eq!(
            m,
            yaml("exporter: {endpoint: 'http://local:4317', token: t}\n")
        );
    }

    #[test]
    fn env_references_expand_with_types_and_errors_name_key_and_variable() {
        let env = BTreeMap::from([
            ("PORT".to_string(), "4317".to_string()),
            ("HOST".to_string(), "c".to_string()),
            ("TOK".to_string(), "123".to_string()),
        ]);
        let t = expand(
            yaml("exporter: {endpoint: 'http://${env:HOST}:${env:PORT}', token: '${env:TOK}', batch_max_records: '${env:PORT}'}\nx: ['a ${b} $${c}']\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            t,
            yaml(
                "exporter: {endpoint: 'http://c:4317', token: '123', batch_max_records: 4317}\nx: ['a ${b} $${c}']\n"
            )
        );
        let e = expand(
            yaml("a: {b: '${env:MISSING}'}\nc: ['${secret:db}']\nd: '${env:'\ne: '${env:1X}'\n"),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(
            e.0[0].starts_with("a.b: ${env:MISSING}") && e.0[0].contains("MISSING is not set"),
            "{e}"
        );
        assert!(
            e.0[1].starts_with("c[0]: ${secret:db}") && e.0[1].contains("not resolved"),
            "{e}"
        );
        assert!(e.0[2].starts_with("d: unterminated"), "{e}");
        assert!(e.0[3].starts_with("e: ${env:1X}"), "{e}");
    }

    #[test]
    fn credentials_are_masked_in_the_effective_config() {
        let text = masked_yaml(&yaml(
            "exporter: {token: s3cr3t, enrollment_token: vte_x, endpoint: 'http://c'}\nother: {db_password: p4ss}\n",
        ));
        assert!(
            !text.contains("s3cr3t") && !text.contains("vte_x") && !text.contains("p4ss"),
            "{text}"
        );
        assert!(text.contains("http://c") && text.contains(MASK), "{text}");
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(|i| Value::Number(i.into())),
            "[a-z]{0,4}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Sequence),
                proptest::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| {
                    Value::Mapping(m.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn merge_is_idempotent_and_the_later_document_wins(a in tree(), b in tree()) {
            let mut once = a.clone();
            deep_merge(&mut once, b.clone());
            let mut twice = once.clone();
            deep_merge(&mut twice, b.clone());
            prop_assert_eq!(&once, &twice);
            // Every leaf of b is in the result as b has it.
            fn leaves(v: &Value, path: Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
                match v {
                    Value::Mapping(m) if !m.is_empty() => for (k, v) in m {
                        let mut p = path.clone();
                        p.push(k.as_str().unwrap_or_default().to_string());
                        leaves(v, p, out);
                    },
                    other => out.push((path, other.clone())),
                }
            }
            let mut out = Vec::new();
            leaves(&b, Vec::new(), &mut out);
            for (path, v) in out {
                if matches!(v, Value::Mapping(_)) { continue; }
                prop_assert_eq!(get(&once, &path), Some(&v));
            }
        }

        #[test]
        fn pins_always_win(local in tree(), remote in tree(), pin in proptest::collection::vec("[a-c]", 1..3)) {
            let local = match local { v @ Value::Mapping(_) => v, _ => Value::Mapping(Mapping::new()) };
            let mut merged = local.clone();
            deep_merge(&mut merged, remote);
            if !matches!(merged, Value::Mapping(_)) { merged = Value::Mapping(Mapping::new()); }
            apply_pins(&mut merged, &local, std::slice::from_ref(&pin));
            match get(&local, &pin) {
                Some(v) => prop_assert_eq!(get(&merged, &pin), Some(v)),
                None => prop_assert_eq!(get(&merged, &pin), None),
            }
        }

        #[test]
        fn expansion_never_panics(s in "[a-z${}:_A-Z0-9]{0,24}") {
            let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
            let _ = expand(Value::String(s), &env);
        }
    }
}
