//! Processing of file log records between the line splitter and the disk queue:
//! multiline joining, JSON parsing, redaction. Configured per input (and redaction
//! also globally); see the README's Agent section for the keys.
//!
//! ```text
//! splitter --lines--> multiline assembler --records--> JSON parse --> redact --> batch
//! ```
//! Everything here runs before the record is queued: a redacted secret is never on
//! the agent's disk, and the checkpoint of a file never passes a record still being
//! assembled.

pub(crate) mod jsonparse;
pub(crate) mod multiline;
pub(crate) mod redact;

use std::time::Duration;

use serde::Deserialize;
use vantage_proto::otlp::common::v1::any_value;
use vantage_proto::otlp::logs::v1::LogRecord;

use crate::stats::Stats;
use jsonparse::JsonConfig;
use multiline::{Mode, MultilineConfig};
use redact::{Redactor, Rule};

/// What one input does to its records.
#[derive(Clone, Debug, Default)]
pub(crate) struct Processing {
    pub(crate) multiline: Option<MultilineConfig>,
    pub(crate) json: Option<JsonConfig>,
    /// The global rules, then the input's.
    pub(crate) redact: Redactor,
}

impl Processing {
    /// Applies JSON parsing of the body (when configured) and redaction to a record;
    /// counts what it did.
    pub(crate) fn apply(&self, record: &mut LogRecord, stats: &Stats) {
        if let Some(json) = &self.json {
            let text = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            let out = jsonparse::apply(&text, json, record);
            if out.parsed {
                stats.json_lines_parsed.add(1);
            } else {
                stats.json_lines_invalid.add(1);
            }
            stats.json_attributes_dropped.add(out.dropped_attributes);
        }
        if !self.redact.is_empty() {
            let n = self.redact.redact_record(record);
            if n > 0 {
                stats.redactions.add(n);
                stats.records_redacted.add(1);
            }
        }
    }
}

/// `multiline:` of an input, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MultilineFile {
    start: Option<String>,
    #[serde(rename = "continue")]
    continue_: Option<String>,
    timeout: Option<String>,
    max_lines: Option<usize>,
    max_bytes: Option<usize>,
}

/// One `redact:` entry: a built-in's name, or `{pattern, replacement}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RedactFile {
    Builtin(String),
    Rule(RuleFile),
}

/// A user redaction rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    pattern: String,
    #[serde(default = "default_replacement")]
    replacement: String,
}

/// What a match becomes when the rule names no replacement.
fn default_replacement() -> String {
    "[REDACTED]".to_string()
}

/// The processing keys of one input, as written (fields of `files.inputs[i]`).
#[derive(Debug, Default)]
pub(crate) struct InputProcessingFile {
    pub(crate) multiline: Option<MultilineFile>,
    pub(crate) parse: Option<String>,
    pub(crate) severity_field: Option<String>,
    pub(crate) timestamp_field: Option<String>,
    pub(crate) message_field: Option<String>,
    pub(crate) json_max_depth: Option<usize>,
    pub(crate) json_max_attributes: Option<usize>,
    pub(crate) redact: Vec<RedactFile>,
}

/// Compiles `redact:` entries; `here(i)` names entry `i` in an error.
pub(crate) fn redact_rules(
    entries: &[RedactFile],
    here: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) -> Vec<Rule> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let rule = match e {
                RedactFile::Builtin(name) => Rule::builtin(name),
                RedactFile::Rule(r) => Rule::pattern(&r.pattern, &r.replacement),
            };
            rule.map_err(|err| errors.push(format!("{}: {err}", here(i))))
                .ok()
        })
        .collect()
}

/// Validates one input's processing keys. `here(key)` names a key (with its line) in
/// an error; `global` are the top-level redaction rules, applied first.
pub(crate) fn build(
    f: InputProcessingFile,
    global: &[Rule],
    max_line_bytes: usize,
    here: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> Processing {
    let multiline = f.multiline.and_then(|m| {
        let mut regex =
            |key: &str, p: &str| match regex::RegexBuilder::new(p).size_limit(1 << 20).build() {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(format!("{}: invalid pattern: {e}", here(key)));
                    None
                }
            };
        let mode = match (&m.start, &m.continue_) {
            (Some(p), None) => regex("multiline.start", p).map(Mode::Start),
            (None, Some(p)) => regex("multiline.continue", p).map(Mode::Continue),
            _ => {
                errors.push(format!(
                    "{}: exactly one of start, continue is needed",
                    here("multiline")
                ));
                None
            }
        };
        let timeout = match crate::config::parse_duration(
            m.timeout.as_deref().unwrap_or(multiline::DEFAULT_TIMEOUT),
        ) {
            Ok(d) if d > Duration::ZERO => d,
            Ok(_) => {
                errors.push(format!(
                    "{}: must be more than 0",
                    here("multiline.timeout")
                ));
                Duration::from_secs(1)
            }
            Err(e) => {
                errors.push(format!("{}: {e}", here("multiline.timeout")));
                Duration::from_secs(1)
            }
        };
        let max_lines = m.max_lines.unwrap_or(multiline::DEFAULT_MAX_LINES);
        if max_lines == 0 {
            errors.push(format!(
                "{}: must be at least 1",
                here("multiline.max_lines")
            ));
        }
        let max_bytes = m.max_bytes.unwrap_or(max_line_bytes);
        if !(16..=max_line_bytes).contains(&max_bytes) {
            errors.push(format!(
                "{}: must be between 16 and max_line_bytes ({max_line_bytes})",
                here("multiline.max_bytes")
            ));
        }
        Some(MultilineConfig {
            mode: mode?,
            timeout,
            max_lines: max_lines.max(1),
            max_bytes,
        })
    });
    let json_keys = f.severity_field.is_some()
        || f.timestamp_field.is_some()
        || f.message_field.is_some()
        || f.json_max_depth.is_some()
        || f.json_max_attributes.is_some();
    let json = match f.parse.as_deref() {
        Some("json") => {
            let max_depth = f.json_max_depth.unwrap_or(jsonparse::DEFAULT_MAX_DEPTH);
            let max_attributes = f
                .json_max_attributes
                .unwrap_or(jsonparse::DEFAULT_MAX_ATTRIBUTES);
            if !(1..=32).contains(&max_depth) {
                errors.push(format!(
                    "{}: must be between 1 and 32",
                    here("json_max_depth")
                ));
            }
            if !(1..=1000).contains(&max_attributes) {
                errors.push(format!(
                    "{}: must be between 1 and 1000",
                    here("json_max_attributes")
                ));
            }
            Some(JsonConfig {
                severity_field: f.severity_field,
                timestamp_field: f.timestamp_field,
                message_field: f.message_field,
                max_depth,
                max_attributes,
            })
        }
        None | Some("none") => {
            if json_keys {
                errors.push(format!(
                    "{}: severity_field, timestamp_field, message_field and json_* need `parse: json`",
                    here("parse")
                ));
            }
            None
        }
        Some(other) => {
            errors.push(format!(
                "{}: {other:?} is not one of json, none",
                here("parse")
            ));
            None
        }
    };
    let mut rules = global.to_vec();
    rules.extend(redact_rules(
        &f.redact,
        &|i| here(&format!("redact[{i}]")),
        errors,
    ));
    Processing {
        multiline,
        json,
        redact: Redactor::new(rules),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{Config, ConfigError, FlagOverrides};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &BTreeMap::new(), &FlagOverrides::default())
    }

    #[test]
    fn processing_keys_are_read_and_global_rules_come_first() {
        let c = load(
            r#"
redact:
  - email
files:
  inputs:
    - include: ["/var/log/*.log"]
      multiline:
        continue: '^\s+at '
        timeout: 250ms
        max_lines: 50
      parse: json
      message_field: text
      redact:
        - credit_card
        - {pattern: 'k=\d+'}
"#,
        )
        .unwrap();
        let p = &c.inputs[0].processing;
        let m = p.multiline.as_ref().unwrap();
        assert!(matches!(m.mode, super::Mode::Continue(_)));
        assert_eq!(m.timeout, std::time::Duration::from_millis(250));
        assert_eq!((m.max_lines, m.max_bytes), (50, 1024 * 1024));
        assert_eq!(
            p.json.as_ref().unwrap().message_field.as_deref(),
            Some("text")
        );
        let mut s = "a@b.io k=12 4111111111111111".to_string();
        assert_eq!(p.redact.redact_str(&mut s), 3);
        assert_eq!(s, "[REDACTED:email] [REDACTED] [REDACTED:credit_card]");
        assert_eq!(c.redact.len(), 1);
    }

    #[test]
    fn every_processing_mistake_is_reported_with_its_key() {
        let err = load(
            r#"
redact:
  - nosuch
files:
  inputs:
    - include: ["/x/*.log"]
      multiline:
        start: '('
        continue: 'x'
      parse: yaml
      severity_field: lvl
      redact:
        - {pattern: '(unclosed'}
"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "redact[0] (line 3): \"nosuch\" is not a built-in",
            "files.inputs[0].multiline (line 7): exactly one of start, continue",
            "files.inputs[0].parse (line 10): \"yaml\" is not one of json, none",
            "files.inputs[0].redact[0] (line 12): invalid pattern",
        ] {
            assert!(err.contains(want), "{want:?} missing in:\n{err}");
        }
        let err = load(
            "files:\n  inputs:\n    - include: [\"/x\"]\n      severity_field: lvl\n      multiline: {start: x, max_bytes: 2000000}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("need `parse: json`"), "{err}");
        assert!(err.contains("multiline.max_bytes"), "{err}");
    }
}
