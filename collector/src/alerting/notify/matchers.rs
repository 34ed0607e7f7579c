//! Label matchers as Alertmanager 0.25 writes them: the new syntax
//! (`alertname="X"`, `{severity=~"crit|page", team!="db"}`) used by `matchers`,
//! `source_matchers`, `target_matchers`, amtool and the CLI, and the old `match` /
//! `match_re` maps. Regexes are anchored (`^(?:re)$`) as Alertmanager anchors them.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// Longest matcher text accepted, so hostile input cannot make parsing expensive.
pub const MAX_MATCHER_TEXT: usize = 16 * 1024;
/// Compiled regex size limit: far above any real matcher, far below a memory problem.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The four comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One matcher; an absent label matches as the empty string, as in Alertmanager.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// The value or regex source as written (unanchored).
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

/// Why a matcher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// The text does not follow `name op value`.
    #[error("bad matcher {text:?}: {reason}")]
    Syntax {
        /// The offending text (cut to 100 characters).
        text: String,
        /// What is wrong.
        reason: String,
    },
}

fn syntax(text: &str, reason: impl Into<String>) -> MatcherError {
    MatcherError::Syntax {
        text: text.chars().take(100).collect(),
        reason: reason.into(),
    }
}

impl Matcher {
    /// A matcher from its parts; a regex operator compiles (anchored) `value`.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if !valid_label_name(name) {
            return Err(syntax(
                name,
                "label names are letters, digits, '_' and ':' and do not start with a digit",
            ));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| syntax(value, format!("invalid regex: {e}")))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether `value` (the label's value, `""` when absent) satisfies the matcher.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the label set satisfies the matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

impl fmt::Display for Matcher {
    /// `name<op>"value"` with Go's `%q` quoting, as Alertmanager prints matchers (route
    /// keys, and so group keys, contain this text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.name,
            self.op.as_str(),
            go_quote(&self.value)
        )
    }
}

/// Whether every matcher matches.
pub fn matches_all(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// `{a="1",b=~"x"}`: Alertmanager's `Matchers.String()` (sorted by the caller).
pub fn matchers_string(matchers: &[Matcher]) -> String {
    let parts: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

/// Sorts as Alertmanager's `Matchers.Less`: by name, then value, then operator.
pub fn sort_matchers(matchers: &mut [Matcher]) {
    matchers.sort_by(|a, b| {
        (a.name.as_str(), a.value.as_str(), a.op).cmp(&(b.name.as_str(), b.value.as_str(), b.op))
    });
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*` (Alertmanager also allows `:`
/// in matcher names, so do we).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses one matcher in the new syntax: `name op value`, the value quoted
/// (`"..."` with `\"`, `\\`, `\n` escapes) or bare (trimmed).
pub fn parse_matcher(text: &str) -> Result<Matcher, MatcherError> {
    let mut list = parse_matchers(text)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        n => Err(syntax(text, format!("expected one matcher, found {n}"))),
    }
}

/// Parses a list of matchers, optionally in braces, separated by commas:
/// `{alertname="X", severity=~"crit|page"}` or `alertname=X,job!=db`.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    if text.len() > MAX_MATCHER_TEXT {
        return Err(syntax(
            text,
            format!("longer than {MAX_MATCHER_TEXT} bytes"),
        ));
    }
    let mut s = text.trim();
    if let Some(inner) = s.strip_prefix('{') {
        s = inner
            .strip_suffix('}')
            .ok_or_else(|| syntax(text, "'{' without a closing '}'"))?
            .trim();
    } else if s.ends_with('}') {
        return Err(syntax(text, "'}' without an opening '{'"));
    }
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.trim().is_empty() {
        let (matcher, after) = parse_one(text, rest)?;
        out.push(matcher);
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r,
            None if after.is_empty() => "",
            None => return Err(syntax(text, format!("expected ',' before {after:?}"))),
        };
    }
    if out.is_empty() {
        return Err(syntax(text, "no matcher"));
    }
    Ok(out)
}

fn parse_one<'a>(whole: &str, s: &'a str) -> Result<(Matcher, &'a str), MatcherError> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if name.is_empty() {
        return Err(syntax(whole, "expected a label name"));
    }
    let s = s[name_end..].trim_start();
    let (op, s) = if let Some(r) = s.strip_prefix("=~") {
        (MatchOp::Regex, r)
    } else if let Some(r) = s.strip_prefix("!~") {
        (MatchOp::NotRegex, r)
    } else if let Some(r) = s.strip_prefix("!=") {
        (MatchOp::NotEqual, r)
    } else if let Some(r) = s.strip_prefix('=') {
        (MatchOp::Equal, r)
    } else {
        return Err(syntax(
            whole,
            format!("expected one of =, !=, =~, !~ after {name:?}"),
        ));
    };
    let s = s.trim_start();
    let (value, rest) = if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    // Regex escapes such as \d pass through unchanged.
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(syntax(whole, "unterminated escape")),
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| syntax(whole, "unterminated quoted value"))?;
        (value, &quoted[end..])
    } else {
        let end = s.find([',', '"']).unwrap_or(s.len());
        if s[end..].starts_with('"') {
            return Err(syntax(whole, "a quote inside an unquoted value"));
        }
        (s[..end].trim_end().to_owned(), &s[end..])
    };
    Ok((Matcher::new(name, op, &value)?, rest))
}

/// Go's `strconv.Quote`: `"..."` with `\"`, `\\`, control characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_new_syntax() {
        let ms =
            parse_matchers(r#"{alertname="High, \"quoted\"", severity=~"crit|page", team!=db}"#)
                .unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].value, "High, \"quoted\"");
        assert_eq!(ms[1].op, MatchOp::Regex);
        assert_eq!(ms[2].op, MatchOp::NotEqual);
        assert_eq!(ms[2].value, "db");
        let l = labels(&[
            ("alertname", "High, \"quoted\""),
            ("severity", "page"),
            ("team", "web"),
        ]);
        assert!(matches_all(&ms, &l));
        assert!(
            !ms[1].matches(&labels(&[("severity", "pager")])),
            "anchored"
        );
        assert_eq!(ms[0].to_string(), r#"alertname="High, \"quoted\"""#);
        let m = parse_matcher("job !~ \"\"").unwrap();
        assert!(m.matches(&labels(&[("job", "x")])));
        assert!(!m.matches(&labels(&[])), "absent label is empty");
    }

    #[test]
    fn refuses_bad_and_hostile_input() {
        for bad in [
            "",
            "{}",
            "{a=\"b\"",
            "a=\"b\"}",
            "=x",
            "1a=b",
            "a=\"unterminated",
            "a=\"x\\",
            "a=~\"(\"",
            "a=b c\"d",
            "a=\"b\" c=\"d\"",
            "a<b",
        ] {
            assert!(parse_matchers(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("a=\"{}\"", "x".repeat(MAX_MATCHER_TEXT));
        assert!(parse_matchers(&long).is_err());
        // As in Alertmanager, an unquoted value is everything up to the next comma.
        assert_eq!(parse_matcher("a==~b").unwrap().value, "=~b");
        // A regex whose compiled form is huge is refused, not built.
        assert!(parse_matcher("a=~\"(((a{100}){100}){100})\"").is_err());
        assert!(parse_matcher("a=b").is_ok());
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = parse_matchers(&s);
        }

        #[test]
        fn printed_matchers_parse_back(name in "[a-z_][a-z0-9_]{0,10}", value in "[a-zA-Z0-9 ,{}=!~\"._-]{0,20}") {
            let m = Matcher::new(&name, MatchOp::Equal, &value).unwrap();
            let back = parse_matcher(&m.to_string()).unwrap();
            prop_assert_eq!(back, m);
        }
    }
}
