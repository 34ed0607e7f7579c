//! Selecting series by label matchers over an inverted index (label=value -> roaring
//! postings), the same algorithm as Prometheus's `PostingsForMatchers`:
//!
//! - a matcher that does not match `""` selects the union of the postings of the label
//!   values it matches (an `=` is one direct lookup; a regex is evaluated once per
//!   distinct value of the label, never per series);
//! - a matcher that matches `""` also selects series without the label, so it is
//!   applied by set difference: remove the series whose value it rejects;
//! - the positive sets are intersected smallest first; with none, start from all series.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;

use super::{MatchOp, Matcher};

/// An inverted index a selection can run over (head or block).
pub(crate) trait Postings {
    /// Every series.
    fn all(&self) -> RoaringBitmap;
    /// Series with `name="value"`.
    fn exact(&self, name: &str, value: &str) -> RoaringBitmap;
    /// Union of the series whose value of `name` satisfies `pred` (called once per
    /// distinct value).
    fn union_where(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> RoaringBitmap;
}

/// The series of `p` that satisfy every matcher.
pub(crate) fn select(p: &dyn Postings, matchers: &[Matcher]) -> RoaringBitmap {
    let mut positive: Vec<RoaringBitmap> = Vec::new();
    let mut negative: Vec<RoaringBitmap> = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            // Remove the series whose (present) value the matcher rejects.
            let rejected = match m.op {
                MatchOp::NotEqual => p.exact(&m.name, &m.value),
                _ => p.union_where(&m.name, &mut |v| !m.matches(v)),
            };
            negative.push(rejected);
        } else {
            let set = match m.op {
                MatchOp::Equal => p.exact(&m.name, &m.value),
                _ => p.union_where(&m.name, &mut |v| m.matches(v)),
            };
            if set.is_empty() {
                return RoaringBitmap::new();
            }
            positive.push(set);
        }
    }
    positive.sort_by_key(|b| b.len());
    let mut it = positive.into_iter();
    let mut result = match it.next() {
        Some(first) => first,
        None => p.all(),
    };
    for b in it {
        result &= b;
        if result.is_empty() {
            return result;
        }
    }
    for b in negative {
        result -= b;
    }
    result
}

/// The head's in-memory inverted index. Keys are the interned strings the series'
/// label sets share, so each distinct name and value is stored once.
#[derive(Default)]
pub(crate) struct MemPostings {
    pub(crate) by_name: HashMap<Arc<str>, HashMap<Arc<str>, RoaringBitmap>>,
    pub(crate) all: RoaringBitmap,
}

impl MemPostings {
    /// Interns a label pair and adds `id` to its postings; returns the shared strings.
    pub(crate) fn add(&mut self, name: &str, value: &str, id: u32) -> (Arc<str>, Arc<str>) {
        let name_key = match self.by_name.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                self.by_name.insert(k.clone(), HashMap::new());
                k
            }
        };
        let values = self.by_name.entry(name_key.clone()).or_default();
        let value_key = match values.get_key_value(value) {
            Some((k, _)) => k.clone(),
            None => Arc::from(value),
        };
        values.entry(value_key.clone()).or_default().insert(id);
        (name_key, value_key)
    }

    /// Removes `id` from a pair's postings, dropping entries that become empty.
    pub(crate) fn remove(&mut self, name: &str, value: &str, id: u32) {
        if let Some(values) = self.by_name.get_mut(name) {
            if let Some(b) = values.get_mut(value) {
                b.remove(id);
                if b.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.by_name.remove(name);
            }
        }
    }
}

impl Postings for MemPostings {
    fn all(&self) -> RoaringBitmap {
        self.all.clone()
    }

    fn exact(&self, name: &str, value: &str) -> RoaringBitmap {
        self.by_name
            .get(name)
            .and_then(|v| v.get(value))
            .cloned()
            .unwrap_or_default()
    }

    fn union_where(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        if let Some(values) = self.by_name.get(name) {
            for (v, b) in values {
                if pred(v) {
                    out |= b;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Labels;
    use proptest::prelude::*;

    fn build(sets: &[Labels]) -> MemPostings {
        let mut p = MemPostings::default();
        for (i, l) in sets.iter().enumerate() {
            for lab in l {
                p.add(&lab.name, &lab.value, i as u32);
            }
            p.all.insert(i as u32);
        }
        p
    }

    fn matcher_strategy() -> impl Strategy<Value = Matcher> {
        let op = prop_oneof![
            Just(MatchOp::Equal),
            Just(MatchOp::NotEqual),
            Just(MatchOp::RegexMatch),
            Just(MatchOp::RegexNoMatch)
        ];
        let value = prop_oneof![
            Just(String::new()),
            "[abc]{1,2}",
            Just("a.*".to_owned()),
            Just(".*".to_owned()),
            Just(".+".to_owned()),
            Just("a|b|".to_owned()),
            Just("c?".to_owned()),
        ];
        ("[xyz]", op, value).prop_map(|(n, op, v)| Matcher::new(n, op, v).expect("valid regex"))
    }

    proptest! {
        #[test]
        fn select_agrees_with_brute_force(
            sets in proptest::collection::vec(
                proptest::collection::btree_map("[xyz]", "[abc]{1,2}", 0..3).prop_map(Labels::from_pairs),
                0..30),
            matchers in proptest::collection::vec(matcher_strategy(), 0..4),
        ) {
            let p = build(&sets);
            let got: Vec<u32> = select(&p, &matchers).iter().collect();
            let want: Vec<u32> = sets.iter().enumerate()
                .filter(|(_, l)| matchers.iter().all(|m| m.matches_labels(l)))
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn removing_the_last_series_drops_the_entries() {
        let mut p = MemPostings::default();
        p.add("job", "api", 1);
        p.add("job", "web", 2);
        p.remove("job", "api", 1);
        assert!(p.exact("job", "api").is_empty());
        p.remove("job", "web", 2);
        assert!(p.by_name.is_empty());
    }
}
