//! The subset of Alertmanager's Go templates that title/text fields support: literal
//! text, and these actions on the notification's data —
//!
//! - `{{ .Status }}`, `{{ .Receiver }}`, `{{ .ExternalURL }}`, `{{ .GroupKey }}`
//! - `{{ .GroupLabels.NAME }}`, `{{ .CommonLabels.NAME }}`, `{{ .CommonAnnotations.NAME }}`
//! - `{{ len .Alerts }}`, `{{ len .Alerts.Firing }}`, `{{ len .Alerts.Resolved }}`
//!   (and the piped forms `{{ .Alerts.Firing | len }}`)
//! - `{{ template "NAME" . }}` of any of Alertmanager's default templates
//!   (`slack.default.title`, `email.default.subject`, ...): Vantage's default text for
//!   that field.
//!
//! Anything else is refused when the configuration is loaded, naming the action, so a
//! configuration never renders differently than its author expects without a word.
//! `{{-`/`-}}` trim whitespace as in Go.

use super::payload::Data;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Status,
    Receiver,
    ExternalUrl,
    GroupKey,
    GroupLabel(String),
    CommonLabel(String),
    CommonAnnotation(String),
    AlertCount,
    FiringCount,
    ResolvedCount,
    Default(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a default template renders, given the template's name.
pub type Defaults<'a> = &'a dyn Fn(&str, &Data) -> String;

impl Template {
    /// Parses `text`; the error names the unsupported action.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let mut literal = rest[..start].to_owned();
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed action in template {text:?}"))?;
            let mut action = &after[..end];
            let mut next = &after[end + 2..];
            if let Some(a) = action.strip_prefix('-') {
                action = a;
                literal = literal.trim_end().to_owned();
            }
            if let Some(a) = action.strip_suffix('-') {
                action = a;
                next = next.trim_start();
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(literal));
            }
            pieces.push(parse_action(action.trim())?);
            rest = next;
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// Renders with `data`; `defaults` renders `{{ template "..." . }}`.
    pub fn render(&self, data: &Data, defaults: Defaults<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Status => out.push_str(&data.status),
                Piece::Receiver => out.push_str(&data.receiver),
                Piece::ExternalUrl => out.push_str(&data.external_url),
                Piece::GroupKey => out.push_str(&data.group_key),
                Piece::GroupLabel(n) => {
                    out.push_str(data.group_labels.get(n).map_or("", String::as_str))
                }
                Piece::CommonLabel(n) => {
                    out.push_str(data.common_labels.get(n).map_or("", String::as_str))
                }
                Piece::CommonAnnotation(n) => {
                    out.push_str(data.common_annotations.get(n).map_or("", String::as_str))
                }
                Piece::AlertCount => out.push_str(&data.alerts.len().to_string()),
                Piece::FiringCount => out.push_str(&data.firing_count().to_string()),
                Piece::ResolvedCount => {
                    out.push_str(&(data.alerts.len() - data.firing_count()).to_string())
                }
                Piece::Default(name) => out.push_str(&defaults(name, data)),
            }
        }
        out
    }
}

fn parse_action(action: &str) -> Result<Piece, String> {
    let simple = match action {
        ".Status" => Some(Piece::Status),
        ".Receiver" => Some(Piece::Receiver),
        ".ExternalURL" => Some(Piece::ExternalUrl),
        ".GroupKey" => Some(Piece::GroupKey),
        "len .Alerts" | ".Alerts | len" => Some(Piece::AlertCount),
        "len .Alerts.Firing" | ".Alerts.Firing | len" => Some(Piece::FiringCount),
        "len .Alerts.Resolved" | ".Alerts.Resolved | len" => Some(Piece::ResolvedCount),
        _ => None,
    };
    if let Some(p) = simple {
        return Ok(p);
    }
    let field = |prefix: &str| {
        action
            .strip_prefix(prefix)
            .filter(|n| super::matchers::valid_label_name(n))
            .map(str::to_owned)
    };
    if let Some(n) = field(".GroupLabels.") {
        return Ok(Piece::GroupLabel(n));
    }
    if let Some(n) = field(".CommonLabels.") {
        return Ok(Piece::CommonLabel(n));
    }
    if let Some(n) = field(".CommonAnnotations.") {
        return Ok(Piece::CommonAnnotation(n));
    }
    if let Some(rest) = action.strip_prefix("template ") {
        let rest = rest.trim();
        if let Some(name) = rest
            .strip_suffix('.')
            .map(str::trim)
            .and_then(|n| n.strip_prefix('"'))
            .and_then(|n| n.strip_suffix('"'))
            && name.contains(".default.")
        {
            return Ok(Piece::Default(name.to_owned()));
        }
    }
    Err(format!(
        "template action {{{{ {action} }}}} is not supported by Vantage (supported: .Status, \
         .Receiver, .ExternalURL, .GroupKey, .GroupLabels.NAME, .CommonLabels.NAME, \
         .CommonAnnotations.NAME, len .Alerts[.Firing|.Resolved], template \"*.default.*\" .)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "(\\{\\{|\\}\\}|-| |\\.Status|\\.CommonLabels\\.|len|\\||x|template|\"){0,30}") {
            let _ = Template::parse(&text);
        }
    }

    #[test]
    fn parses_the_subset_and_refuses_the_rest() {
        let t = Template::parse(
            "[{{ .Status }}] {{ .CommonLabels.alertname }} ({{ len .Alerts.Firing }}){{- \"x\" -}}",
        );
        assert!(t.is_err(), "a string literal action is not in the subset");
        let t = Template::parse(
            "[{{ .Status }}] {{ .GroupLabels.alertname }} ({{ .Alerts.Firing | len }})",
        )
        .unwrap();
        assert_eq!(t.pieces.len(), 7);
        assert!(Template::parse("{{ range .Alerts }}x{{ end }}").is_err());
        assert!(Template::parse("{{ .Status").is_err());
        assert!(Template::parse("{{ template \"slack.default.title\" . }}").is_ok());
        assert!(Template::parse("{{ template \"mine\" . }}").is_err());
        assert_eq!(
            Template::parse("a {{- .Status -}} b").unwrap().pieces.len(),
            3
        );
    }
}
