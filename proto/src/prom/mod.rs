//! The Prometheus data model as Vantage stores it: label sets, samples, metric
//! metadata, and the batch that crosses from the receivers (OTLP, remote write) through
//! the WAL into the metrics store.
//!
//! Times are **milliseconds** since the epoch here, as in Prometheus: PromQL semantics
//! (lookback, step alignment, `timestamp()`) are defined in milliseconds, and OTLP's
//! nanoseconds are converted once, at the mapping.

use std::fmt;

pub mod delta;
mod exphist;
pub mod names;
pub mod otlp;
pub mod remote;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Bit pattern of Prometheus's staleness marker: a NaN that means "this series ended
/// here" rather than a value. Any other NaN is an ordinary sample value.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (and not just any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One label: a name and a non-empty value (an empty value means "absent" in
/// Prometheus, so such labels are dropped when a set is built).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name, `[a-zA-Z_][a-zA-Z0-9_]*` after mapping.
    pub name: String,
    /// Label value, any UTF-8, never empty.
    pub value: String,
}

/// A label set identifying one series: sorted by name, names unique, no empty values.
/// Includes `__name__`. The invariants are kept by every constructor, so two equal
/// sets always compare and hash equal.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// An empty set.
    pub fn new() -> Labels {
        Labels(Vec::new())
    }

    /// Builds a set from pairs in any order. Empty values are dropped; for a repeated
    /// name the last pair wins (as when an attribute overrides a resource attribute).
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Labels
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .collect();
        // Stable sort keeps input order among equal names, so "last wins" holds.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        out.retain(|l| !l.value.is_empty());
        Labels(out)
    }

    /// Builds a set from labels already sorted by name with unique names and non-empty
    /// values; returns `None` when they are not.
    pub fn from_sorted(labels: Vec<Label>) -> Option<Labels> {
        let ok = labels.windows(2).all(|w| w[0].name < w[1].name)
            && labels.iter().all(|l| !l.value.is_empty());
        ok.then_some(Labels(labels))
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value`, or removes it when `value` is empty.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value.to_owned(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(
                i,
                Label {
                    name: name.to_owned(),
                    value: value.to_owned(),
                },
            ),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a slice in name order.
    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// Consumes the set into its sorted labels.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Prometheus's notation: `name{a="x", b="y"}` (values escaped as Go's `%q` does for
/// the common cases: backslash, quote and newline).
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        f.write_str(name)?;
        let rest: Vec<&Label> = self.0.iter().filter(|l| l.name != METRIC_NAME).collect();
        if rest.is_empty() && !name.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"", l.name)?;
            for c in l.value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One sample: a time in milliseconds and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value; may be NaN, ±Inf, or the staleness marker ([`is_stale`]).
    pub v: f64,
}

/// Samples of one series, in any order (the store sorts and checks them).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    /// The series' label set, `__name__` included.
    pub labels: Labels,
    /// Its samples.
    pub samples: Vec<Sample>,
}

impl SeriesSamples {
    /// Copies a series out of a borrowed view (a remote-write body or a WAL record) whose
    /// labels are already sorted and unique; an unsorted set becomes empty, as the views
    /// refuse those before they get here.
    pub fn from_borrowed(labels: &[(&str, &str)], samples: &[Sample]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_sorted(
                labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: (*n).to_owned(),
                        value: (*v).to_owned(),
                    })
                    .collect(),
            )
            .unwrap_or_default(),
            samples: samples.to_vec(),
        }
    }
}

/// Prometheus metric types, as `/api/v1/metadata` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// A monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Classic histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// Summary (`{quantile}`, `_sum`, `_count`).
    Summary,
    /// Type not known (e.g. remote write without metadata).
    Unknown,
}

impl MetricType {
    /// The lowercase name Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Unknown => "unknown",
        }
    }

    /// Parses the lowercase name; anything else is `Unknown`.
    pub fn parse(s: &str) -> MetricType {
        match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            _ => MetricType::Unknown,
        }
    }
}

/// Metadata of one metric family, served by `/api/v1/metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetricMetadata {
    /// The family name (for a histogram, without `_bucket`/`_sum`/`_count`).
    pub metric: String,
    /// Its type.
    pub kind: MetricType,
    /// Help text (the OTLP description).
    pub help: String,
    /// Unit as Prometheus spells it (`seconds`, `bytes`, or empty).
    pub unit: String,
}

/// What one export contributes to the metrics store: series with samples and the
/// metadata of their families. This is what is written to the metrics WAL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricBatch {
    /// Series and their samples.
    pub series: Vec<SeriesSamples>,
    /// Family metadata seen in the export.
    pub metadata: Vec<MetricMetadata>,
}

impl MetricBatch {
    /// Total number of samples in the batch.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_dedups_last_wins_and_drops_empty() {
        let l = Labels::from_pairs([("b", "1"), ("a", "x"), ("b", "2"), ("c", "")]);
        let names: Vec<_> = l
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "x"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        l.set("instance", "h:1");
        l.set("job", "");
        assert_eq!(l.to_string(), r#"up{instance="h:1"}"#);
        l.remove("instance");
        assert_eq!(l.to_string(), "up");
    }

    #[test]
    fn display_escapes_values() {
        let l = Labels::from_pairs([("__name__", "m"), ("a", "q\"\\\n")]);
        assert_eq!(l.to_string(), r#"m{a="q\"\\\n"}"#);
        assert_eq!(Labels::from_pairs([("a", "1")]).to_string(), r#"{a="1"}"#);
    }

    #[test]
    fn from_sorted_checks_invariants() {
        let ok = vec![
            Label {
                name: "a".into(),
                value: "1".into(),
            },
            Label {
                name: "b".into(),
                value: "2".into(),
            },
        ];
        assert!(Labels::from_sorted(ok.clone()).is_some());
        let mut bad = ok;
        bad.reverse();
        assert!(Labels::from_sorted(bad).is_none());
    }

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(is_stale(stale_nan()));
        assert!(!is_stale(f64::NAN));
        assert!(stale_nan().is_nan());
    }
}
