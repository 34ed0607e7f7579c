//! Silences as Alertmanager's API v2 models them: matchers (`=`, `!=`, `=~`, `!~`), a
//! time range, who and why. Active while `startsAt <= now < endsAt`; expiring sets
//! `endsAt` to now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matchers::{MatchOp, Matcher, matches_all};
use super::payload::go_time;

/// Most matchers one silence may have.
pub const MAX_SILENCE_MATCHERS: usize = 64;
/// Longest `createdBy` and `comment`, in bytes.
pub const MAX_SILENCE_TEXT: usize = 4096;

/// A matcher as the API writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiMatcher {
    /// Label name.
    pub name: String,
    /// Value or regex.
    pub value: String,
    /// Regex operator.
    pub is_regex: bool,
    /// Equality (true) or its negation; absent means true, as in Alertmanager.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence of one tenant.
#[derive(Clone, Debug)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// The API form of its matchers.
    pub api_matchers: Vec<ApiMatcher>,
    /// Compiled matchers.
    pub matchers: Vec<Matcher>,
    /// Start, ms since the epoch.
    pub starts_at_ms: i64,
    /// End, ms since the epoch.
    pub ends_at_ms: i64,
    /// Author.
    pub created_by: String,
    /// Reason.
    pub comment: String,
    /// Last change, ms since the epoch.
    pub updated_at_ms: i64,
}

/// `expired`, `active` or `pending`.
pub fn state(s: &Silence, now_ms: i64) -> &'static str {
    if s.ends_at_ms <= now_ms {
        "expired"
    } else if s.starts_at_ms <= now_ms {
        "active"
    } else {
        "pending"
    }
}

impl Silence {
    /// Compiles API matchers; the error says which is wrong.
    pub fn compile(api: &[ApiMatcher]) -> Result<Vec<Matcher>, String> {
        if api.is_empty() {
            return Err("at least one matcher is needed".into());
        }
        if api.len() > MAX_SILENCE_MATCHERS {
            return Err(format!("more than {MAX_SILENCE_MATCHERS} matchers"));
        }
        let compiled: Vec<Matcher> = api
            .iter()
            .map(|m| {
                let op = match (m.is_regex, m.is_equal) {
                    (false, true) => MatchOp::Equal,
                    (false, false) => MatchOp::NotEqual,
                    (true, true) => MatchOp::Regex,
                    (true, false) => MatchOp::NotRegex,
                };
                Matcher::new(&m.name, op, &m.value).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        // Alertmanager refuses silences that would match every alert.
        if compiled.iter().all(|m| m.matches_value("")) {
            return Err("at least one matcher must not match the empty string".into());
        }
        Ok(compiled)
    }

    /// Whether the silence mutes `labels` at `now_ms`.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        state(self, now_ms) == "active" && matches_all(&self.matchers, labels)
    }

    /// The API's `gettableSilence`.
    pub fn to_json(&self, now_ms: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": {"state": state(self, now_ms)},
            "updatedAt": go_time(self.updated_at_ms),
            "matchers": self.api_matchers,
            "startsAt": go_time(self.starts_at_ms),
            "endsAt": go_time(self.ends_at_ms),
            "createdBy": self.created_by,
            "comment": self.comment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> ApiMatcher {
        ApiMatcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    #[test]
    fn silences_match_and_expire() {
        let matchers = vec![
            m("alertname", "X", false, true),
            m("env", "dev|test", true, false),
        ];
        let s = Silence {
            id: "1".into(),
            matchers: Silence::compile(&matchers).unwrap(),
            api_matchers: matchers,
            starts_at_ms: 100,
            ends_at_ms: 200,
            created_by: "me".into(),
            comment: "c".into(),
            updated_at_ms: 100,
        };
        let mut l = BTreeMap::new();
        l.insert("alertname".to_string(), "X".to_string());
        l.insert("env".to_string(), "prod".to_string());
        assert!(s.mutes(&l, 150));
        assert!(!s.mutes(&l, 99), "pending");
        assert!(!s.mutes(&l, 200), "expired");
        l.insert("env".to_string(), "dev".to_string());
        assert!(!s.mutes(&l, 150));
        assert_eq!(state(&s, 250), "expired");
    }

    #[test]
    fn refuses_silences_matching_everything() {
        assert!(Silence::compile(&[]).is_err());
        assert!(Silence::compile(&[m("a", ".*", true, true)]).is_err());
        assert!(Silence::compile(&[m("a", "", false, true)]).is_err());
        assert!(Silence::compile(&[m("a", "(", true, true)]).is_err());
        assert!(Silence::compile(&[m("1bad", "x", false, true)]).is_err());
    }
}
