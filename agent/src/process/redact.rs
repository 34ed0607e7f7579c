//! Redaction: regex rules and named presets applied to log bodies and string attributes
//! before a record is queued, so a secret never reaches the disk queue or the network.
//!
//! Patterns use the `regex` crate, whose matching is linear in the input whatever the
//! pattern (no backtracking), so a hostile line cannot stall the tailer. User patterns are
//! compiled with a size limit, so a pathological one fails at configuration time instead.

use regex::{Captures, Regex, RegexBuilder};
use vantage_proto::otlp::common::v1::{AnyValue, any_value};
use vantage_proto::otlp::logs::v1::LogRecord;

/// Largest compiled program of a user pattern: generous for real rules, and a pattern
/// that explodes (`(a{1000}){1000}`) is refused when the configuration is loaded.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The named presets, for error messages and the README.
pub(crate) const BUILTINS: &[&str] = &[
    "credit_card",
    "email",
    "bearer_token",
    "aws_access_key",
    "password_assignment",
    "ipv4",
];

#[derive(Clone, Debug)]
enum Replace {
    /// `$1`-style expansion of a fixed replacement.
    Text(String),
    /// Card-shaped digit runs are replaced only when they pass the Luhn check.
    Luhn,
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    regex: Regex,
    replace: Replace,
}

/// Why a rule cannot be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuleError {
    #[error("{0:?} is not a built-in redaction (one of {list})", list = BUILTINS.join(", "))]
    UnknownBuiltin(String),
    #[error("invalid pattern: {0}")]
    Pattern(#[from] regex::Error),
}

impl Rule {
    /// A user rule: every match of `pattern` becomes `replacement` (`$1` refers to groups).
    pub(crate) fn pattern(pattern: &str, replacement: &str) -> Result<Rule, RuleError> {
        let regex = RegexBuilder::new(pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()?;
        Ok(Rule {
            regex,
            replace: Replace::Text(replacement.to_string()),
        })
    }

    /// A named preset.
    pub(crate) fn builtin(name: &str) -> Result<Rule, RuleError> {
        let (pattern, replace) = match name {
            // 13 to 19 digits, optionally grouped by spaces or dashes; Luhn decides.
            "credit_card" => (r"\b\d(?:[ -]?\d){12,18}\b", Replace::Luhn),
            "email" => (
                r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}\b",
                Replace::Text("[REDACTED:email]".into()),
            ),
            "bearer_token" => (
                r"(?i)\b(bearer)\s+[a-z0-9\-._~+/]+=*",
                Replace::Text("$1 [REDACTED]".into()),
            ),
            "aws_access_key" => (
                r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b",
                Replace::Text("[REDACTED:aws_access_key]".into()),
            ),
            "password_assignment" => (
                r#"(?i)\b(password|passwd|pwd|secret|api[_\-]?key|access[_\-]?token)(["']?\s*[=:]\s*["']?)([^\s,;&"']+)"#,
                Replace::Text("$1$2[REDACTED]".into()),
            ),
            "ipv4" => (
                r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
                Replace::Text("[REDACTED:ipv4]".into()),
            ),
            other => return Err(RuleError::UnknownBuiltin(other.to_string())),
        };
        Ok(Rule {
            regex: Regex::new(pattern)?,
            replace,
        })
    }

    /// Applies the rule; returns the new text and how many matches were replaced.
    fn apply(&self, text: &str) -> Option<(String, u64)> {
        if !self.regex.is_match(text) {
            return None;
        }
        let mut n = 0u64;
        let out = self.regex.replace_all(text, |caps: &Captures<'_>| {
            let whole = caps.get(0).map(|m| m.as_str()).unwrap_or_default();
            match &self.replace {
                Replace::Luhn => redact_cards(whole, &mut n),
                Replace::Text(t) => {
                    n += 1;
                    let mut s = String::new();
                    caps.expand(t, &mut s);
                    s
                }
            }
        });
        (n > 0).then(|| (out.into_owned(), n))
    }
}

/// Replaces, in a run of digit groups the card pattern matched, every span of whole
/// groups with 13 to 19 digits that passes the Luhn check (the run may join a card to
/// a number written next to it: `id 12 4111 1111 1111 1111`).
fn redact_cards(run: &str, n: &mut u64) -> String {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, c) in run.char_indices() {
        if c.is_ascii_digit() {
            match groups.last_mut() {
                Some(g) if g.1 == i => g.1 = i + 1,
                _ => groups.push((i, i + 1)),
            }
        }
    }
    for i in 0..groups.len() {
        for j in (i..groups.len()).rev() {
            let span = &run[groups[i].0..groups[j].1];
            let digits = span.bytes().filter(u8::is_ascii_digit).count();
            if (13..=19).contains(&digits) && luhn(span) {
                *n += 1;
                let rest = redact_cards(&run[groups[j].1..], n);
                return format!("{}[REDACTED:credit_card]{rest}", &run[..groups[i].0]);
            }
        }
    }
    run.to_string()
}

/// True when the digits of `s` (separators ignored) pass the Luhn checksum.
pub(crate) fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An ordered list of rules (the global ones, then the source's).
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    rules: Vec<Rule>,
}

impl Redactor {
    /// Rules applied in order.
    pub(crate) fn new(rules: Vec<Rule>) -> Redactor {
        Redactor { rules }
    }

    /// Whether there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Redacts one string in place; returns the number of replacements.
    pub(crate) fn redact_str(&self, text: &mut String) -> u64 {
        let mut total = 0;
        for rule in &self.rules {
            if let Some((out, n)) = rule.apply(text) {
                *text = out;
                total += n;
            }
        }
        total
    }

    /// Redacts a record's body and string attributes (nested values included); returns
    /// the number of replacements.
    pub(crate) fn redact_record(&self, record: &mut LogRecord) -> u64 {
        if self.rules.is_empty() {
            return 0;
        }
        let mut n = 0;
        if let Some(body) = &mut record.body {
            n += self.redact_value(body, 0);
        }
        for kv in &mut record.attributes {
            if let Some(v) = &mut kv.value {
                n += self.redact_value(v, 0);
            }
        }
        n
    }

    fn redact_value(&self, value: &mut AnyValue, depth: usize) -> u64 {
        // OTLP values nest; the decoder already bounds depth, this is a second guard.
        if depth > 64 {
            return 0;
        }
        match &mut value.value {
            Some(any_value::Value::StringValue(s)) => self.redact_str(s),
            Some(any_value::Value::ArrayValue(a)) => a
                .values
                .iter_mut()
                .map(|v| self.redact_value(v, depth + 1))
                .sum(),
            Some(any_value::Value::KvlistValue(l)) => l
                .values
                .iter_mut()
                .filter_map(|kv| kv.value.as_mut())
                .map(|v| self.redact_value(v, depth + 1))
                .sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(BUILTINS.iter().map(|b| Rule::builtin(b).unwrap()).collect())
    }

    fn redact(r: &Redactor, s: &str) -> (String, u64) {
        let mut t = s.to_string();
        let n = r.redact_str(&mut t);
        (t, n)
    }

    #[test]
    fn luhn_check() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234"));
    }

    #[test]
    fn presets_redact_what_they_name_and_leave_the_rest() {
        let r = all();
        let (t, n) = redact(&r, "paid with 4111 1111 1111 1111 ok");
        assert_eq!(t, "paid with [REDACTED:credit_card] ok");
        assert_eq!(n, 1);
        // Not a card: fails Luhn (an order id), stays.
        let (t, n) = redact(&r, "order 4111111111111112 shipped");
        assert_eq!((t.as_str(), n), ("order 4111111111111112 shipped", 0));
        // A number right before the card joins the pattern's run; the card is found in it.
        let (t, n) = redact(&r, "k=12 4111111111111111 and 5500-0000-0000-0004");
        assert_eq!(t, "k=12 [REDACTED:credit_card] and [REDACTED:credit_card]");
        assert_eq!(n, 2);
        let (t, _) = redact(&r, "mail bob.smith+x@example.co.uk now");
        assert_eq!(t, "mail [REDACTED:email] now");
        let (t, _) = redact(&r, "Authorization: Bearer abc.def-ghi_123==");
        assert_eq!(t, "Authorization: Bearer [REDACTED]");
        let (t, _) = redact(&r, "key AKIAIOSFODNN7EXAMPLE used");
        assert_eq!(t, "key [REDACTED:aws_access_key] used");
        let (t, _) = redact(&r, "login password=hunter2 user=x");
        assert_eq!(t, "login password=[REDACTED] user=x");
        let (t, _) = redact(&r, r#"{"password": "s3cr3t", "a":1}"#);
        assert_eq!(t, r#"{"password": "[REDACTED]", "a":1}"#);
        let (t, _) = redact(&r, "from 10.0.0.255 to 999.1.1.1");
        assert_eq!(t, "from [REDACTED:ipv4] to 999.1.1.1");
    }

    #[test]
    fn user_rules_expand_groups_and_bad_patterns_are_refused() {
        let r = Redactor::new(vec![Rule::pattern(r"user=(\w)\w*", "user=$1***").unwrap()]);
        assert_eq!(redact(&r, "user=alice user=bob").0, "user=a*** user=b***");
        assert!(matches!(
            Rule::pattern("(unclosed", "x"),
            Err(RuleError::Pattern(_))
        ));
        assert!(matches!(
            Rule::pattern("(a{1000}){1000}", "x"),
            Err(RuleError::Pattern(_))
        ));
        assert!(matches!(
            Rule::builtin("nope"),
            Err(RuleError::UnknownBuiltin(_))
        ));
    }

    #[test]
    fn catastrophic_input_is_linear() {
        // `(a+)+$` backtracks exponentially elsewhere; the regex crate runs it in linear
        // time, so this finishes at once instead of never.
        let r = Redactor::new(vec![Rule::pattern("(a+)+$", "x").unwrap()]);
        let mut line = "a".repeat(100_000);
        line.push('!');
        let (_, n) = redact(&r, &line);
        assert_eq!(n, 0, "no run of a's reaches the end");
        let r = all();
        let hostile = "1 ".repeat(50_000) + &"@a.".repeat(30_000);
        let _ = redact(&r, &hostile);
    }

    #[test]
    fn records_are_redacted_in_body_and_nested_attributes() {
        use vantage_proto::otlp::common::v1::{ArrayValue, KeyValue};
        let s = |v: &str| AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        };
        let mut rec = LogRecord {
            body: Some(s("card 4111111111111111")),
            attributes: vec![
                KeyValue {
                    key: "user.email".into(),
                    value: Some(s("a@b.io")),
                    ..Default::default()
                },
                KeyValue {
                    key: "list".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![s("x@y.org"), s("fine")],
                        })),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(all().redact_record(&mut rec), 3);
        let text = format!("{rec:?}");
        assert!(!text.contains("4111111111111111") && !text.contains("a@b.io"));
        assert!(text.contains("fine"));
    }
}
