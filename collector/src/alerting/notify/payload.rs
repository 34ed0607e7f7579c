//! What a notification carries ([`Data`], Alertmanager's template data) and the bodies
//! made from it: the webhook payload version 4 byte for byte as Alertmanager 0.25
//! writes it (Go's `encoding/json`: struct field order, sorted maps, `<>&` escaped,
//! RFC 3339 times with trailing zeros cut, a final newline), Slack and Teams messages,
//! and the alert fingerprint (FNV-1a over the sorted labels, as `prometheus/common`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alerting::Alert;

/// Go's zero `time.Time` in RFC 3339: what Alertmanager writes as `endsAt` of a firing
/// alert.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyAlert {
    /// The alert as received.
    pub alert: Alert,
    /// Its fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Whether it had resolved when the notification was made.
    pub resolved: bool,
}

/// The notification's data, as Alertmanager's template `Data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The receiver's name.
    pub receiver: String,
    /// `firing` if any alert fires, else `resolved`.
    pub status: String,
    /// The alerts, sorted as Alertmanager sorts them (by labels).
    pub alerts: Vec<NotifyAlert>,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert has with the same value.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert has with the same value.
    pub common_annotations: BTreeMap<String, String>,
    /// Link to the collector.
    pub external_url: String,
    /// The aggregation group's key.
    pub group_key: String,
}

impl Data {
    /// Builds the data for `alerts` (firing and resolved, already filtered).
    pub fn new(
        receiver: &str,
        group_key: &str,
        group_labels: BTreeMap<String, String>,
        mut alerts: Vec<NotifyAlert>,
        external_url: &str,
    ) -> Data {
        alerts.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
        let status = if alerts.iter().any(|a| !a.resolved) {
            "firing"
        } else {
            "resolved"
        };
        let common = |get: fn(&Alert) -> &BTreeMap<String, String>| {
            let mut it = alerts.iter();
            let mut common = it.next().map(|a| get(&a.alert).clone()).unwrap_or_default();
            for a in it {
                let m = get(&a.alert);
                common.retain(|k, v| m.get(k) == Some(v));
            }
            common
        };
        let common_labels = common(|a| &a.labels);
        let common_annotations = common(|a| &a.annotations);
        Data {
            receiver: receiver.to_owned(),
            status: status.to_owned(),
            alerts,
            group_labels,
            common_labels,
            common_annotations,
            external_url: external_url.to_owned(),
            group_key: group_key.to_owned(),
        }
    }

    /// How many alerts fire.
    pub fn firing_count(&self) -> usize {
        self.alerts.iter().filter(|a| !a.resolved).count()
    }

    /// The same data with resolved alerts left out (for `send_resolved: false`), or
    /// `None` when nothing would remain.
    pub fn without_resolved(&self) -> Option<Data> {
        let alerts: Vec<NotifyAlert> = self
            .alerts
            .iter()
            .filter(|a| !a.resolved)
            .cloned()
            .collect();
        if alerts.is_empty() {
            return None;
        }
        Some(Data::new(
            &self.receiver,
            &self.group_key,
            self.group_labels.clone(),
            alerts,
            &self.external_url,
        ))
    }

    /// `[FIRING:2] HighErrorRate (checkout critical)`: Alertmanager's default subject
    /// and title shape.
    pub fn default_title(&self) -> String {
        let mut t = format!("[{}", self.status.to_ascii_uppercase());
        if self.status == "firing" {
            t.push_str(&format!(":{}", self.firing_count()));
        }
        t.push_str("] ");
        let mut parts: Vec<&str> = self.group_labels.values().map(String::as_str).collect();
        if parts.is_empty() {
            parts = self.common_labels.values().map(String::as_str).collect();
        }
        t.push_str(&parts.join(" "));
        t
    }

    /// One line per alert: its summary (or description, or labels), firing first.
    pub fn default_text(&self) -> String {
        let mut lines = Vec::new();
        for a in self
            .alerts
            .iter()
            .filter(|a| !a.resolved)
            .chain(self.alerts.iter().filter(|a| a.resolved))
        {
            let what = a
                .alert
                .annotations
                .get("summary")
                .or_else(|| a.alert.annotations.get("description"))
                .cloned()
                .unwrap_or_else(|| labels_string(&a.alert.labels));
            let state = if a.resolved { "resolved" } else { "firing" };
            lines.push(format!("- [{state}] {what}"));
        }
        lines.join("\n")
    }

    /// What `{{ template "<name>" . }}` of an Alertmanager default template gives.
    pub fn default_for(name: &str, data: &Data) -> String {
        if name.ends_with(".title") || name.ends_with(".subject") || name.ends_with(".summary") {
            data.default_title()
        } else if name.ends_with(".titlelink") || name.ends_with(".title_link") {
            data.external_url.clone()
        } else if name.ends_with(".username") {
            "Vantage".into()
        } else if name.ends_with(".text") || name.ends_with(".html") || name.ends_with(".fallback")
        {
            format!("{}\n{}", data.default_title(), data.default_text())
        } else {
            String::new()
        }
    }
}

/// Model's `LabelSet.String()`: `{a="1", b="2"}`, sorted, Go-quoted.
pub fn labels_string(labels: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", super::matchers::go_quote(v)))
        .collect();
    parts.sort();
    format!("{{{}}}", parts.join(", "))
}

/// The alert fingerprint Alertmanager and Prometheus use: FNV-1a 64 over the sorted
/// label names and values, each followed by the byte 0xff.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Go's `time.RFC3339Nano` of a UTC time given in milliseconds since the epoch
/// (`2026-11-25T19:27:47.432Z`; trailing zeros of the fraction cut).
pub fn go_time(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return ZERO_TIME.into();
    };
    let frac = t.nanosecond();
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if frac > 0 {
        let digits = format!("{frac:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings; these
/// characters cannot occur outside strings in JSON, so replacing them everywhere is
/// exact.
pub fn go_json_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookMessage<'a> {
    receiver: &'a str,
    status: &'a str,
    alerts: Vec<WebhookAlert<'a>>,
    group_labels: &'a BTreeMap<String, String>,
    common_labels: &'a BTreeMap<String, String>,
    common_annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

/// The webhook body, version 4, exactly as Alertmanager encodes it; `max_alerts` 0
/// sends every alert.
pub fn webhook_body(data: &Data, max_alerts: u64) -> Vec<u8> {
    let total = data.alerts.len() as u64;
    let keep = if max_alerts > 0 && total > max_alerts {
        max_alerts as usize
    } else {
        data.alerts.len()
    };
    let alerts = data.alerts[..keep]
        .iter()
        .map(|a| WebhookAlert {
            status: if a.resolved { "resolved" } else { "firing" },
            labels: &a.alert.labels,
            annotations: &a.alert.annotations,
            starts_at: go_time(a.alert.starts_at_ms),
            ends_at: if a.resolved {
                go_time(a.alert.ends_at_ms)
            } else {
                ZERO_TIME.into()
            },
            generator_url: &a.alert.generator_url,
            fingerprint: &a.fingerprint,
        })
        .collect();
    let message = WebhookMessage {
        receiver: &data.receiver,
        status: &data.status,
        alerts,
        group_labels: &data.group_labels,
        common_labels: &data.common_labels,
        common_annotations: &data.common_annotations,
        external_url: &data.external_url,
        version: "4",
        group_key: &data.group_key,
        truncated_alerts: total - keep as u64,
    };
    // Serialising plain maps and strings cannot fail.
    let json = serde_json::to_string(&message).unwrap_or_default();
    let mut out = go_json_escape(&json).into_bytes();
    out.push(b'\n');
    out
}

/// Alertmanager API v2 postable alerts, for forwarding: the alerts as received.
pub fn postable_alerts(data: &Data) -> Vec<u8> {
    let alerts: Vec<serde_json::Value> = data
        .alerts
        .iter()
        .map(|a| {
            json!({
                "labels": a.alert.labels,
                "annotations": a.alert.annotations,
                "startsAt": go_time(a.alert.starts_at_ms),
                "endsAt": go_time(a.alert.ends_at_ms),
                "generatorURL": a.alert.generator_url,
            })
        })
        .collect();
    serde_json::Value::Array(alerts).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/tests/alertmanager/webhook-v4-{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn rfc3339_ms(s: &str) -> i64 {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Rebuilds the fixtures from their alerts and compares byte for byte with Go's
    /// compact encoding of the same document (key order included).
    #[test]
    fn webhook_body_matches_the_alertmanager_fixtures() {
        for name in ["firing", "resolved"] {
            let want = fixture(name);
            let a = &want["alerts"][0];
            let labels: BTreeMap<String, String> =
                serde_json::from_value(a["labels"].clone()).unwrap();
            assert_eq!(
                fingerprint(&labels),
                a["fingerprint"].as_str().unwrap(),
                "fingerprint"
            );
            let resolved = name == "resolved";
            // The fixture's times have microseconds; ours are milliseconds, so compare
            // times separately and the rest byte for byte.
            let alert = Alert {
                labels: labels.clone(),
                annotations: serde_json::from_value(a["annotations"].clone()).unwrap(),
                starts_at_ms: rfc3339_ms(a["startsAt"].as_str().unwrap()),
                ends_at_ms: if resolved {
                    rfc3339_ms(a["endsAt"].as_str().unwrap())
                } else {
                    i64::MAX
                },
                generator_url: a["generatorURL"].as_str().unwrap().into(),
            };
            let data = Data::new(
                "hook",
                want["groupKey"].as_str().unwrap(),
                serde_json::from_value(want["groupLabels"].clone()).unwrap(),
                vec![NotifyAlert {
                    fingerprint: fingerprint(&labels),
                    alert,
                    resolved,
                }],
                want["externalURL"].as_str().unwrap(),
            );
            let body = webhook_body(&data, 0);
            assert_eq!(
                body.last(),
                Some(&b'\n'),
                "Go's Encoder ends with a newline"
            );
            let mut got: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut want = want.clone();
            for v in [&mut got, &mut want] {
                v["alerts"][0]["startsAt"] = json!("T");
                if resolved {
                    v["alerts"][0]["endsAt"] = json!("T");
                }
            }
            assert_eq!(got, want);
            // Key order as Go writes the structs (serde_json::Value sorts, so check text).
            let text = String::from_utf8(body).unwrap();
            let order = [
                "\"receiver\"",
                "\"status\"",
                "\"alerts\"",
                "\"groupLabels\"",
                "\"commonLabels\"",
                "\"commonAnnotations\"",
                "\"externalURL\"",
                "\"version\"",
                "\"groupKey\"",
                "\"truncatedAlerts\"",
            ];
            let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
            assert!(text.contains("\"endsAt\":\"0001-01-01T00:00:00Z\"") != resolved);
        }
    }

    #[test]
    fn go_encoding_details() {
        assert_eq!(go_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(go_time(1_764_098_867_430), "2025-11-25T19:27:47.43Z");
        assert_eq!(
            go_json_escape("{\"a\":\"<b>&\"}"),
            "{\"a\":\"\\u003cb\\u003e\\u0026\"}"
        );
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let mut l = BTreeMap::new();
        l.insert("b".to_string(), "x\"y".to_string());
        l.insert("a".to_string(), "1".to_string());
        assert_eq!(labels_string(&l), "{a=\"1\", b=\"x\\\"y\"}");
    }

    #[test]
    fn truncation_and_common_labels() {
        let mk = |i: i64, sev: &str| {
            let mut labels = BTreeMap::new();
            labels.insert("alertname".into(), "A".into());
            labels.insert("i".into(), i.to_string());
            labels.insert("severity".into(), sev.into());
            NotifyAlert {
                fingerprint: fingerprint(&labels),
                alert: Alert {
                    labels,
                    annotations: BTreeMap::new(),
                    starts_at_ms: 0,
                    ends_at_ms: 1,
                    generator_url: String::new(),
                },
                resolved: i == 2,
            }
        };
        let data = Data::new(
            "r",
            "k",
            BTreeMap::new(),
            vec![mk(2, "page"), mk(1, "page"), mk(3, "warn")],
            "http://x",
        );
        assert_eq!(data.status, "firing");
        assert_eq!(data.common_labels.len(), 1);
        assert_eq!(data.alerts[0].alert.labels["i"], "1", "sorted by labels");
        let v: serde_json::Value = serde_json::from_slice(&webhook_body(&data, 2)).unwrap();
        assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(data.without_resolved().unwrap().alerts.len(), 2);
        assert_eq!(data.default_title(), "[FIRING:2] A");
    }
}
