//! Alertmanager's configuration format (`alertmanager.yml`, as Alertmanager 0.25 reads
//! it, plus `msteams_configs` from 0.26), parsed strictly (unknown keys are refused, as
//! Alertmanager refuses them) and validated into [`AmConfig`], with every error at once,
//! each naming its key path.
//!
//! Vantage-only keys (documented in the README): on `webhook_configs`,
//! `signing_secret` / `signing_secret_file` and `headers`; on a receiver,
//! `sms_configs` (an HTTP form post) and `alertmanager_configs` (forward to another
//! Alertmanager). Alertmanager features Vantage does not implement (other receiver
//! types, template files, time zones other than UTC) are refused with a message saying so,
//! never silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::matchers::{MatchOp, Matcher, matchers_string, parse_matchers, sort_matchers};
use super::template::Template;
use super::timeinterval::{NamedFile, TimeInterval};

/// Alertmanager's default `resolve_timeout`.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `group_wait`.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// Largest configuration accepted (file or API body).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Deepest route tree accepted; real trees are a few levels deep.
const MAX_ROUTE_DEPTH: usize = 32;

/// Every problem found in an Alertmanager configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid alertmanager configuration:\n  - {}", .0.join("\n  - "))]
pub struct AmConfigError(pub Vec<String>);

// ---------------------------------------------------------------- file structs

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    global: Option<GlobalFile>,
    #[serde(default)]
    route: Option<RouteFile>,
    #[serde(default)]
    receivers: Vec<ReceiverFile>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitFile>,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    mute_time_intervals: Vec<NamedFile>,
    #[serde(default)]
    time_intervals: Vec<NamedFile>,
}

// The settings of receiver types Vantage refuses are parsed (so a file that sets them
// globally is accepted, as they only matter to those receivers) but never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalFile {
    resolve_timeout: Option<String>,
    http_config: Option<HttpConfigFile>,
    smtp_from: Option<String>,
    smtp_hello: Option<String>,
    smtp_smarthost: Option<String>,
    smtp_auth_username: Option<String>,
    smtp_auth_password: Option<String>,
    smtp_auth_secret: Option<String>,
    smtp_auth_identity: Option<String>,
    smtp_require_tls: Option<bool>,
    slack_api_url: Option<String>,
    slack_api_url_file: Option<PathBuf>,
    // Settings of receiver types Vantage refuses; accepted here because they only
    // matter to those receivers.
    pagerduty_url: Option<Value>,
    opsgenie_api_url: Option<Value>,
    opsgenie_api_key: Option<Value>,
    opsgenie_api_key_file: Option<Value>,
    wechat_api_url: Option<Value>,
    wechat_api_secret: Option<Value>,
    wechat_api_corp_id: Option<Value>,
    victorops_api_url: Option<Value>,
    victorops_api_key: Option<Value>,
    victorops_api_key_file: Option<Value>,
    telegram_api_url: Option<Value>,
    webex_api_url: Option<Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfigFile {
    authorization: Option<AuthorizationFile>,
    basic_auth: Option<BasicAuthFile>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<TlsConfigFile>,
    follow_redirects: Option<bool>,
    enable_http2: Option<bool>,
    proxy_url: Option<String>,
    oauth2: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthFile {
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfigFile {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    min_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(rename = "continue", default)]
    continue_: bool,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(rename = "match", default)]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverFile {
    name: Option<String>,
    #[serde(default)]
    webhook_configs: Vec<WebhookFile>,
    #[serde(default)]
    email_configs: Vec<EmailFile>,
    #[serde(default)]
    slack_configs: Vec<SlackFile>,
    #[serde(default)]
    msteams_configs: Vec<TeamsFile>,
    // Vantage-only.
    #[serde(default)]
    sms_configs: Vec<SmsFile>,
    #[serde(default)]
    alertmanager_configs: Vec<ForwardFile>,
    // Alertmanager receiver types Vantage does not implement.
    pagerduty_configs: Option<Value>,
    opsgenie_configs: Option<Value>,
    wechat_configs: Option<Value>,
    pushover_configs: Option<Value>,
    victorops_configs: Option<Value>,
    sns_configs: Option<Value>,
    telegram_configs: Option<Value>,
    webex_configs: Option<Value>,
    discord_configs: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    send_resolved: Option<bool>,
    http_config: Option<HttpConfigFile>,
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    max_alerts: u64,
    // Vantage-only.
    signing_secret: Option<String>,
    signing_secret_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailFile {
    send_resolved: Option<bool>,
    to: Option<String>,
    from: Option<String>,
    hello: Option<String>,
    smarthost: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<String>,
    auth_secret: Option<String>,
    auth_identity: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    html: Option<String>,
    text: Option<String>,
    require_tls: Option<bool>,
    tls_config: Option<TlsConfigFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackFile {
    send_resolved: Option<bool>,
    http_config: Option<HttpConfigFile>,
    api_url: Option<String>,
    api_url_file: Option<PathBuf>,
    channel: Option<String>,
    username: Option<String>,
    color: Option<String>,
    title: Option<String>,
    title_link: Option<String>,
    pretext: Option<String>,
    text: Option<String>,
    footer: Option<String>,
    fallback: Option<String>,
    icon_emoji: Option<String>,
    icon_url: Option<String>,
    image_url: Option<String>,
    thumb_url: Option<String>,
    link_names: Option<bool>,
    short_fields: Option<bool>,
    mrkdwn_in: Option<Vec<String>>,
    callback_id: Option<String>,
    fields: Option<Value>,
    actions: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamsFile {
    send_resolved: Option<bool>,
    http_config: Option<HttpConfigFile>,
    webhook_url: Option<String>,
    webhook_url_file: Option<PathBuf>,
    title: Option<String>,
    summary: Option<String>,
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsFile {
    send_resolved: Option<bool>,
    http_config: Option<HttpConfigFile>,
    url: Option<String>,
    #[serde(default)]
    form: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardFile {
    http_config: Option<HttpConfigFile>,
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitFile {
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

// ---------------------------------------------------------------- typed config

/// A validated Alertmanager configuration.
#[derive(Debug)]
pub struct AmConfig {
    /// The text it was parsed from (returned by `GET /api/v2/status`).
    pub original: String,
    /// How long a posted alert without `endsAt` stays firing without an update.
    pub resolve_timeout: Duration,
    /// The routing tree.
    pub route: Route,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Receiver>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Named time intervals (`time_intervals` and `mute_time_intervals`).
    pub time_intervals: BTreeMap<String, Vec<TimeInterval>>,
    /// The `global.smtp_*` settings (with an empty `to`), when `smtp_from` and a valid
    /// `smtp_smarthost` are set: how people's own subscriptions are e-mailed.
    pub smtp: Option<EmailSettings>,
}

/// `group_by`: some labels, or every label (`...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// Group by these label names.
    Labels(Vec<String>),
    /// `['...']`: every alert is its own group.
    All,
}

/// One node of the routing tree with its inherited options resolved.
#[derive(Debug)]
pub struct Route {
    /// Alertmanager's route key (`{}/{severity="page"}`), the first half of group keys.
    pub key: String,
    /// The receiver alerts matching here go to.
    pub receiver: String,
    /// Grouping.
    pub group_by: GroupBy,
    /// Wait before the first notification of a new group.
    pub group_wait: Duration,
    /// Wait between notifications of a group whose alerts changed.
    pub group_interval: Duration,
    /// Wait before repeating an unchanged notification.
    pub repeat_interval: Duration,
    /// What an alert must match to enter this route.
    pub matchers: Vec<Matcher>,
    /// Keep looking at siblings after matching this route.
    pub continue_matching: bool,
    /// Names of the time intervals during which this route sends nothing.
    pub mute_time_intervals: Vec<String>,
    /// Names of the time intervals outside which this route sends nothing.
    pub active_time_intervals: Vec<String>,
    /// Child routes, in order.
    pub routes: Vec<Route>,
}

/// HTTP options of an integration, resolved (secret files read).
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// The whole `Authorization` header value, if any.
    pub authorization: Option<String>,
    /// Skip TLS certificate verification.
    pub insecure_skip_verify: bool,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Follow HTTP redirects (Alertmanager's default: yes).
    pub follow_redirects: bool,
}

/// A receiver: a name and its integrations.
#[derive(Debug)]
pub struct Receiver {
    /// Its name.
    pub name: String,
    /// What it sends to.
    pub integrations: Vec<std::sync::Arc<Integration>>,
}

/// One integration of a receiver (one entry of one `*_configs` list).
#[derive(Debug)]
pub struct Integration {
    /// The HTTP client, built at first use.
    pub client: std::sync::OnceLock<reqwest::Client>,
    /// `<type>/<index>`, stable while the configuration is.
    pub name: String,
    /// Whether resolved alerts are sent.
    pub send_resolved: bool,
    /// HTTP options (unused by e-mail).
    pub http: HttpOptions,
    /// The type and its settings.
    pub kind: IntegrationKind,
}

impl Integration {
    /// The type's name, as in `*_configs` and the metrics' `receiver_type` label.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            IntegrationKind::Webhook { .. } => "webhook",
            IntegrationKind::Email(_) => "email",
            IntegrationKind::Slack { .. } => "slack",
            IntegrationKind::MsTeams { .. } => "msteams",
            IntegrationKind::Sms { .. } => "sms",
            IntegrationKind::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// The integration types.
#[derive(Debug)]
pub enum IntegrationKind {
    /// Alertmanager webhook (payload version 4).
    Webhook {
        /// Where to POST.
        url: String,
        /// At most this many alerts per message (0 = all).
        max_alerts: u64,
        /// HMAC-SHA256 key (Vantage-only).
        signing_secret: Option<Vec<u8>>,
        /// Extra request headers (Vantage-only).
        headers: Vec<(String, String)>,
    },
    /// E-mail over SMTP.
    Email(EmailSettings),
    /// Slack-compatible incoming webhook.
    Slack {
        /// The incoming webhook URL.
        url: String,
        /// Channel override.
        channel: Option<String>,
        /// Username override.
        username: Option<String>,
        /// Emoji icon.
        icon_emoji: Option<String>,
        /// Icon URL.
        icon_url: Option<String>,
        /// Attachment colour (template).
        color: Option<Template>,
        /// Title (template).
        title: Option<Template>,
        /// Title link (template).
        title_link: Option<Template>,
        /// Pretext (template).
        pretext: Option<Template>,
        /// Text (template).
        text: Option<Template>,
        /// Footer (template).
        footer: Option<Template>,
        /// Fallback (template).
        fallback: Option<Template>,
    },
    /// Microsoft-Teams-compatible incoming webhook.
    MsTeams {
        /// The incoming webhook URL.
        url: String,
        /// Title (template).
        title: Option<Template>,
        /// Summary (template).
        summary: Option<Template>,
        /// Text (template).
        text: Option<Template>,
    },
    /// SMS through an HTTP form post (Vantage-only).
    Sms {
        /// Where to POST the form.
        url: String,
        /// Form fields, each a template.
        form: Vec<(String, Template)>,
    },
    /// Forward to another Alertmanager's `POST /api/v2/alerts` (Vantage-only).
    Alertmanager {
        /// The Alertmanager's base URL.
        url: String,
    },
}

/// E-mail settings with the `global.smtp_*` defaults applied.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Recipients (comma-separated, as in Alertmanager).
    pub to: String,
    /// Sender.
    pub from: String,
    /// EHLO name.
    pub hello: String,
    /// `host:port`; port 465 means TLS from the first byte.
    pub smarthost: String,
    /// SMTP AUTH user.
    pub auth_username: Option<String>,
    /// SMTP AUTH password.
    pub auth_password: Option<String>,
    /// Require STARTTLS (Alertmanager's default: yes).
    pub require_tls: bool,
    /// Skip certificate verification.
    pub insecure_skip_verify: bool,
    /// Extra headers; `Subject` (a template) overrides the default subject.
    pub headers: Vec<(String, Template)>,
    /// HTML body template.
    pub html: Option<Template>,
    /// Text body template.
    pub text: Option<Template>,
}

/// An inhibition rule.
#[derive(Debug)]
pub struct InhibitRule {
    /// What a firing alert must match to inhibit.
    pub source: Vec<Matcher>,
    /// What an alert must match to be inhibited.
    pub target: Vec<Matcher>,
    /// Labels that must be equal in source and target.
    pub equal: Vec<String>,
}

// ---------------------------------------------------------------- validation

/// Prometheus's duration syntax (`1h30m`, `90s`, `1d`, `0`), as Alertmanager reads it.
pub fn parse_prom_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration string".into());
    }
    let units: [(&str, u64); 8] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
        ("", 0),
    ];
    let mut rest = t;
    let mut total_ms: u64 = 0;
    let mut last_unit = 0usize;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("not a valid duration string: {text:?}"))?;
        if digits == 0 {
            return Err(format!("not a valid duration string: {text:?}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("not a valid duration string: {text:?}"))?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let unit = &after[..unit_len];
        let idx = units[..7]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| format!("not a valid duration string: {text:?}"))?;
        if idx < last_unit {
            return Err(format!("not a valid duration string: {text:?}"));
        }
        last_unit = idx + 1;
        total_ms = n
            .checked_mul(units[idx].1)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| format!("duration out of range: {text:?}"))?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

struct Checker<'a> {
    errors: Vec<String>,
    base_dir: Option<&'a Path>,
}

impl Checker<'_> {
    fn err(&mut self, path: &str, message: impl AsRef<str>) {
        self.errors.push(format!("{path}: {}", message.as_ref()));
    }

    fn duration(&mut self, path: &str, text: Option<&String>) -> Option<Duration> {
        let text = text?;
        match parse_prom_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn read_secret(&mut self, path: &str, file: &Path) -> Option<String> {
        let full = match (file.is_relative(), self.base_dir) {
            (true, Some(base)) => base.join(file),
            _ => file.to_path_buf(),
        };
        match std::fs::read_to_string(&full) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                self.err(path, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }

    fn url(&mut self, path: &str, url: Option<&String>) -> Option<String> {
        let url = url?;
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(url.clone())
            }
            Ok(_) => {
                self.err(path, format!("{url:?} is not an http or https URL"));
                None
            }
            Err(e) => {
                self.err(path, format!("invalid URL {url:?}: {e}"));
                None
            }
        }
    }

    fn url_or_file(
        &mut self,
        path: &str,
        key: &str,
        url: Option<&String>,
        file: Option<&PathBuf>,
        fallback: Option<&String>,
    ) -> Option<String> {
        match (url, file) {
            (Some(_), Some(_)) => {
                self.err(
                    path,
                    format!("at most one of {key} and {key}_file must be configured"),
                );
                None
            }
            (Some(u), None) => self.url(&format!("{path}.{key}"), Some(u)),
            (None, Some(f)) => {
                let text = self.read_secret(&format!("{path}.{key}_file"), f)?;
                self.url(&format!("{path}.{key}_file"), Some(&text))
            }
            (None, None) => match fallback {
                Some(u) => self.url(&format!("{path}.{key}"), Some(u)),
                None => {
                    self.err(
                        path,
                        format!("one of {key} or {key}_file must be configured"),
                    );
                    None
                }
            },
        }
    }

    fn template(&mut self, path: &str, text: Option<&String>) -> Option<Template> {
        let text = text?;
        match Template::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn http(
        &mut self,
        path: &str,
        own: Option<&HttpConfigFile>,
        global: &HttpOptions,
    ) -> HttpOptions {
        let Some(h) = own else {
            return global.clone();
        };
        let mut out = HttpOptions {
            follow_redirects: h.follow_redirects.unwrap_or(true),
            ..HttpOptions::default()
        };
        let mut auth_count = 0;
        if let Some(a) = &h.authorization {
            auth_count += 1;
            let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
            if kind.eq_ignore_ascii_case("basic") {
                self.err(
                    &format!("{path}.authorization.type"),
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
                );
            }
            let creds = match (&a.credentials, &a.credentials_file) {
                (Some(_), Some(_)) => {
                    self.err(
                        &format!("{path}.authorization"),
                        "at most one of credentials and credentials_file must be configured",
                    );
                    None
                }
                (Some(c), None) => Some(c.clone()),
                (None, Some(f)) => {
                    self.read_secret(&format!("{path}.authorization.credentials_file"), f)
                }
                (None, None) => None,
            };
            if let Some(c) = creds {
                out.authorization = Some(format!("{kind} {c}"));
            }
        }
        if let Some(b) = &h.basic_auth {
            auth_count += 1;
            let password = match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    self.err(
                        &format!("{path}.basic_auth"),
                        "at most one of basic_auth password & password_file must be configured",
                    );
                    None
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(f)) => self.read_secret(&format!("{path}.basic_auth.password_file"), f),
                (None, None) => Some(String::new()),
            };
            if let Some(p) = password {
                use base64::Engine as _;
                let user = b.username.clone().unwrap_or_default();
                out.authorization = Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"))
                ));
            }
        }
        if h.bearer_token.is_some() || h.bearer_token_file.is_some() {
            auth_count += 1;
            let token = match (&h.bearer_token, &h.bearer_token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(f)) => self.read_secret(&format!("{path}.bearer_token_file"), f),
                (None, None) => None,
            };
            out.authorization = token.map(|t| format!("Bearer {t}"));
        }
        if auth_count > 1 {
            self.err(
                path,
                "at most one of basic_auth, authorization and bearer_token must be configured",
            );
        }
        if let Some(tls) = &h.tls_config {
            self.tls(&format!("{path}.tls_config"), tls, &mut out);
        }
        if h.proxy_url.is_some() {
            self.err(&format!("{path}.proxy_url"), "not supported by Vantage");
        }
        if h.oauth2.is_some() {
            self.err(&format!("{path}.oauth2"), "not supported by Vantage");
        }
        let _ = h.enable_http2;
        out
    }

    fn tls(&mut self, path: &str, tls: &TlsConfigFile, out: &mut HttpOptions) {
        out.insecure_skip_verify = tls.insecure_skip_verify.unwrap_or(false);
        if let Some(ca) = &tls.ca_file {
            let full = match (ca.is_relative(), self.base_dir) {
                (true, Some(base)) => base.join(ca),
                _ => ca.clone(),
            };
            match std::fs::read(&full) {
                Ok(pem) => out.ca_pem = Some(pem),
                Err(e) => self.err(
                    &format!("{path}.ca_file"),
                    format!("cannot read {}: {e}", full.display()),
                ),
            }
        }
        for (key, set) in [
            ("cert_file", tls.cert_file.is_some()),
            ("key_file", tls.key_file.is_some()),
            ("server_name", tls.server_name.is_some()),
            ("min_version", tls.min_version.is_some()),
        ] {
            if set {
                self.err(&format!("{path}.{key}"), "not supported by Vantage");
            }
        }
    }

    /// Matchers from the old `match`/`match_re` maps and the new list; `keys` names
    /// those three keys for messages.
    fn matcher_list(
        &mut self,
        path: &str,
        eq: &BTreeMap<String, String>,
        re: &BTreeMap<String, String>,
        new: &[String],
        keys: [&str; 3],
    ) -> Vec<Matcher> {
        let [eq_key, re_key, new_key] = keys;
        let mut out = Vec::new();
        for (name, value) in eq {
            match Matcher::new(name, MatchOp::Equal, value) {
                Ok(m) => out.push(m),
                Err(e) => self.err(&format!("{path}.{eq_key}.{name}"), e.to_string()),
            }
        }
        for (name, value) in re {
            match Matcher::new(name, MatchOp::Regex, value) {
                Ok(m) => out.push(m),
                Err(e) => self.err(&format!("{path}.{re_key}.{name}"), e.to_string()),
            }
        }
        for (i, text) in new.iter().enumerate() {
            match parse_matchers(text) {
                Ok(ms) => out.extend(ms),
                Err(e) => self.err(&format!("{path}.{new_key}[{i}]"), e.to_string()),
            }
        }
        out
    }
}

struct Parent<'a> {
    key: Option<&'a str>,
    receiver: Option<&'a str>,
    group_by: GroupBy,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
}

fn build_route(
    c: &mut Checker<'_>,
    path: &str,
    r: &RouteFile,
    parent: &Parent<'_>,
    depth: usize,
) -> Route {
    if depth > MAX_ROUTE_DEPTH {
        c.err(
            path,
            format!("routes nested deeper than {MAX_ROUTE_DEPTH} levels"),
        );
    }
    let mut matchers = c.matcher_list(
        path,
        &r.match_eq,
        &r.match_re,
        &r.matchers,
        ["match", "match_re", "matchers"],
    );
    sort_matchers(&mut matchers);
    let own = matchers_string(&matchers);
    let key = match parent.key {
        Some(p) => format!("{p}/{own}"),
        None => own,
    };
    let group_by = match &r.group_by {
        None => parent.group_by.clone(),
        Some(list) => {
            let mut seen = BTreeSet::new();
            let mut all = false;
            for (i, l) in list.iter().enumerate() {
                if l == "..." {
                    all = true;
                } else if !super::matchers::valid_label_name(l) || l.contains(':') {
                    c.err(
                        &format!("{path}.group_by[{i}]"),
                        format!("invalid label name {l:?} in group_by list"),
                    );
                }
                if !seen.insert(l.as_str()) {
                    c.err(
                        &format!("{path}.group_by"),
                        format!("duplicated label {l:?} in group_by"),
                    );
                }
            }
            if all && list.len() > 1 {
                c.err(
                    &format!("{path}.group_by"),
                    "cannot have wildcard group_by (`...`) and other other labels at the same time",
                );
            }
            if all {
                GroupBy::All
            } else {
                GroupBy::Labels(list.clone())
            }
        }
    };
    let group_wait = c
        .duration(&format!("{path}.group_wait"), r.group_wait.as_ref())
        .unwrap_or(parent.group_wait);
    let group_interval = c
        .duration(&format!("{path}.group_interval"), r.group_interval.as_ref())
        .unwrap_or(parent.group_interval);
    let repeat_interval = c
        .duration(
            &format!("{path}.repeat_interval"),
            r.repeat_interval.as_ref(),
        )
        .unwrap_or(parent.repeat_interval);
    if group_interval.is_zero() {
        c.err(
            &format!("{path}.group_interval"),
            "group_interval cannot be zero",
        );
    }
    if repeat_interval.is_zero() {
        c.err(
            &format!("{path}.repeat_interval"),
            "repeat_interval cannot be zero",
        );
    }
    let receiver = r
        .receiver
        .clone()
        .or_else(|| parent.receiver.map(str::to_owned))
        .unwrap_or_default();
    let me = Parent {
        key: Some(&key),
        receiver: Some(&receiver),
        group_by: group_by.clone(),
        group_wait,
        group_interval,
        repeat_interval,
    };
    let routes = r
        .routes
        .iter()
        .enumerate()
        .map(|(i, child)| build_route(c, &format!("{path}.routes[{i}]"), child, &me, depth + 1))
        .collect();
    Route {
        key: key.clone(),
        receiver,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
        matchers,
        continue_matching: r.continue_,
        mute_time_intervals: r.mute_time_intervals.clone(),
        active_time_intervals: r.active_time_intervals.clone(),
        routes,
    }
}

fn route_receivers<'a>(route: &'a Route, path: &str, out: &mut Vec<(String, &'a str)>) {
    out.push((path.to_owned(), &route.receiver));
    for (i, r) in route.routes.iter().enumerate() {
        route_receivers(r, &format!("{path}.routes[{i}]"), out);
    }
}

fn route_intervals<'a>(route: &'a Route, path: &str, out: &mut Vec<(String, &'a str)>) {
    for n in &route.mute_time_intervals {
        out.push((format!("{path}.mute_time_intervals"), n));
    }
    for n in &route.active_time_intervals {
        out.push((format!("{path}.active_time_intervals"), n));
    }
    for (i, r) in route.routes.iter().enumerate() {
        route_intervals(r, &format!("{path}.routes[{i}]"), out);
    }
}

impl AmConfig {
    /// Whether a route with these interval names sends nothing at `now_ms`: inside a
    /// mute interval, or outside every active interval (when it has some).
    pub fn muted(&self, mute: &[String], active: &[String], now_ms: i64) -> bool {
        let inside = |name: &String| {
            self.time_intervals
                .get(name)
                .is_some_and(|list| list.iter().any(|t| t.contains(now_ms)))
        };
        mute.iter().any(inside) || (!active.is_empty() && !active.iter().any(inside))
    }

    /// Parses and validates `text`; `base_dir` resolves relative `*_file` paths (the
    /// configuration file's directory; `None` for API bodies, which then must use
    /// absolute paths).
    pub fn parse(text: &str, base_dir: Option<&Path>) -> Result<AmConfig, AmConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(AmConfigError(vec![format!(
                "configuration is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                text.len()
            )]));
        }
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| AmConfigError(vec![e.to_string()]))?
        };
        let mut c = Checker {
            errors: Vec::new(),
            base_dir,
        };
        let g = file.global.unwrap_or_default();
        let resolve_timeout = c
            .duration("global.resolve_timeout", g.resolve_timeout.as_ref())
            .unwrap_or(DEFAULT_RESOLVE_TIMEOUT);
        let global_http = match &g.http_config {
            Some(h) => c.http(
                "global.http_config",
                Some(h),
                &HttpOptions {
                    follow_redirects: true,
                    ..Default::default()
                },
            ),
            None => HttpOptions {
                follow_redirects: true,
                ..Default::default()
            },
        };
        let slack_global = match (&g.slack_api_url, &g.slack_api_url_file) {
            (Some(u), None) => Some(u.clone()),
            (None, Some(f)) => c.read_secret("global.slack_api_url_file", f),
            (Some(_), Some(_)) => {
                c.err(
                    "global",
                    "at most one of slack_api_url & slack_api_url_file must be configured",
                );
                None
            }
            (None, None) => None,
        };
        if g.smtp_auth_secret.is_some() || g.smtp_auth_identity.is_some() {
            c.err("global", "smtp_auth_secret and smtp_auth_identity are not supported by Vantage (use smtp_auth_username/smtp_auth_password)");
        }
        let mut time_intervals = BTreeMap::new();
        for (key, list) in [
            ("mute_time_intervals", &file.mute_time_intervals),
            ("time_intervals", &file.time_intervals),
        ] {
            for (i, named) in list.iter().enumerate() {
                let path = format!("{key}[{i}] ({})", named.name);
                if named.name.is_empty() {
                    c.err(&format!("{key}[{i}].name"), "missing name in time interval");
                    continue;
                }
                let parsed: Vec<TimeInterval> = named
                    .time_intervals
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        TimeInterval::parse(
                            &format!("{path}.time_intervals[{j}]"),
                            t,
                            &mut c.errors,
                        )
                    })
                    .collect();
                if time_intervals.insert(named.name.clone(), parsed).is_some() {
                    c.err(
                        &path,
                        format!("time interval {:?} is not unique", named.name),
                    );
                }
            }
        }
        if !file.templates.is_empty() {
            c.err("templates", "template files are not supported by Vantage (see the README for the template subset of title/text fields)");
        }

        let mut receivers = BTreeMap::new();
        for (i, r) in file.receivers.iter().enumerate() {
            let path = format!("receivers[{i}]");
            let Some(name) = r.name.clone().filter(|n| !n.is_empty()) else {
                c.err(&format!("{path}.name"), "missing name in receiver");
                continue;
            };
            let path = format!("receivers[{i}] ({name})");
            for (key, set) in [
                ("pagerduty_configs", r.pagerduty_configs.is_some()),
                ("opsgenie_configs", r.opsgenie_configs.is_some()),
                ("wechat_configs", r.wechat_configs.is_some()),
                ("pushover_configs", r.pushover_configs.is_some()),
                ("victorops_configs", r.victorops_configs.is_some()),
                ("sns_configs", r.sns_configs.is_some()),
                ("telegram_configs", r.telegram_configs.is_some()),
                ("webex_configs", r.webex_configs.is_some()),
                ("discord_configs", r.discord_configs.is_some()),
            ] {
                if set {
                    c.err(&format!("{path}.{key}"), "this receiver type is not supported by Vantage (supported: webhook, email, slack, msteams, sms, alertmanager)");
                }
            }
            let mut integrations = Vec::new();
            for (j, w) in r.webhook_configs.iter().enumerate() {
                let p = format!("{path}.webhook_configs[{j}]");
                let url = c.url_or_file(&p, "url", w.url.as_ref(), w.url_file.as_ref(), None);
                let secret = match (&w.signing_secret, &w.signing_secret_file) {
                    (Some(_), Some(_)) => {
                        c.err(&p, "at most one of signing_secret and signing_secret_file must be configured");
                        None
                    }
                    (Some(s), None) => Some(s.clone()),
                    (None, Some(f)) => c.read_secret(&format!("{p}.signing_secret_file"), f),
                    (None, None) => None,
                };
                if secret.as_ref().is_some_and(String::is_empty) {
                    c.err(&format!("{p}.signing_secret"), "must not be empty");
                }
                let mut headers = Vec::new();
                for (k, v) in &w.headers {
                    let ok_name = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
                    let ok_value = http::HeaderValue::from_str(v).is_ok();
                    if !ok_name || !ok_value {
                        c.err(&format!("{p}.headers.{k}"), "not a valid HTTP header");
                    } else if k.eq_ignore_ascii_case("content-type")
                        || k.to_ascii_lowercase().starts_with("x-vantage-")
                    {
                        c.err(&format!("{p}.headers.{k}"), "this header is set by Vantage");
                    } else {
                        headers.push((k.clone(), v.clone()));
                    }
                }
                let http = c.http(
                    &format!("{p}.http_config"),
                    w.http_config.as_ref(),
                    &global_http,
                );
                if let Some(url) = url {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("webhook/{j}"),
                        send_resolved: w.send_resolved.unwrap_or(true),
                        http,
                        kind: IntegrationKind::Webhook {
                            url,
                            max_alerts: w.max_alerts,
                            signing_secret: secret.map(String::into_bytes),
                            headers,
                        },
                    }));
                }
            }
            for (j, e) in r.email_configs.iter().enumerate() {
                let p = format!("{path}.email_configs[{j}]");
                let to = e.to.clone().filter(|t| !t.is_empty());
                if to.is_none() {
                    c.err(&format!("{p}.to"), "missing to address in email config");
                }
                let from = e.from.clone().or_else(|| g.smtp_from.clone());
                if from.is_none() {
                    c.err(&format!("{p}.from"), "no global SMTP from set");
                }
                let smarthost = e.smarthost.clone().or_else(|| g.smtp_smarthost.clone());
                match &smarthost {
                    None => c.err(&format!("{p}.smarthost"), "no global SMTP smarthost set"),
                    Some(h) => {
                        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                            !host.is_empty() && port.parse::<u16>().is_ok()
                        });
                        if !ok {
                            c.err(
                                &format!("{p}.smarthost"),
                                format!("address {h:?}: missing port in address"),
                            );
                        }
                    }
                }
                let mut headers = Vec::new();
                let mut seen = BTreeSet::new();
                for (k, v) in &e.headers {
                    let norm = k.to_ascii_lowercase();
                    if !seen.insert(norm) {
                        c.err(
                            &format!("{p}.headers"),
                            format!("duplicate header {k:?} in email config"),
                        );
                    }
                    if let Some(t) = c.template(&format!("{p}.headers.{k}"), Some(v)) {
                        headers.push((k.clone(), t));
                    }
                }
                let html = c.template(&format!("{p}.html"), e.html.as_ref());
                let text = c.template(&format!("{p}.text"), e.text.as_ref());
                let insecure = e
                    .tls_config
                    .as_ref()
                    .and_then(|t| t.insecure_skip_verify)
                    .unwrap_or(false);
                if let Some(tls) = &e.tls_config {
                    for (key, set) in [
                        ("ca_file", tls.ca_file.is_some()),
                        ("cert_file", tls.cert_file.is_some()),
                        ("key_file", tls.key_file.is_some()),
                        ("server_name", tls.server_name.is_some()),
                        ("min_version", tls.min_version.is_some()),
                    ] {
                        if set {
                            c.err(&format!("{p}.tls_config.{key}"), "not supported by Vantage");
                        }
                    }
                }
                if e.auth_secret.is_some() || e.auth_identity.is_some() {
                    // CRAM-MD5 (auth_secret) and PLAIN identities are not offered by lettre.
                    c.err(&p, "auth_secret and auth_identity are not supported by Vantage (use auth_username/auth_password)");
                }
                if let (Some(to), Some(from), Some(smarthost)) = (to, from, smarthost) {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("email/{j}"),
                        send_resolved: e.send_resolved.unwrap_or(false),
                        http: HttpOptions::default(),
                        kind: IntegrationKind::Email(EmailSettings {
                            to,
                            from,
                            hello: e
                                .hello
                                .clone()
                                .or_else(|| g.smtp_hello.clone())
                                .unwrap_or_else(|| "localhost".into()),
                            smarthost,
                            auth_username: e
                                .auth_username
                                .clone()
                                .or_else(|| g.smtp_auth_username.clone()),
                            auth_password: e
                                .auth_password
                                .clone()
                                .or_else(|| g.smtp_auth_password.clone()),
                            require_tls: e.require_tls.or(g.smtp_require_tls).unwrap_or(true),
                            insecure_skip_verify: insecure,
                            headers,
                            html,
                            text,
                        }),
                    }));
                }
            }
            for (j, s) in r.slack_configs.iter().enumerate() {
                let p = format!("{path}.slack_configs[{j}]");
                let url = match (&s.api_url, &s.api_url_file) {
                    (None, None) if slack_global.is_none() => {
                        c.err(&p, "no global Slack API URL set either inline or in a file");
                        None
                    }
                    _ => c.url_or_file(
                        &p,
                        "api_url",
                        s.api_url.as_ref(),
                        s.api_url_file.as_ref(),
                        slack_global.as_ref(),
                    ),
                };
                for (key, set) in [
                    ("fields", s.fields.is_some()),
                    ("actions", s.actions.is_some()),
                    ("callback_id", s.callback_id.is_some()),
                    ("image_url", s.image_url.is_some()),
                    ("thumb_url", s.thumb_url.is_some()),
                ] {
                    if set {
                        c.err(&format!("{p}.{key}"), "not supported by Vantage");
                    }
                }
                let _ = (&s.link_names, &s.short_fields, &s.mrkdwn_in);
                let http = c.http(
                    &format!("{p}.http_config"),
                    s.http_config.as_ref(),
                    &global_http,
                );
                let color = c.template(&format!("{p}.color"), s.color.as_ref());
                let title = c.template(&format!("{p}.title"), s.title.as_ref());
                let title_link = c.template(&format!("{p}.title_link"), s.title_link.as_ref());
                let pretext = c.template(&format!("{p}.pretext"), s.pretext.as_ref());
                let text = c.template(&format!("{p}.text"), s.text.as_ref());
                let footer = c.template(&format!("{p}.footer"), s.footer.as_ref());
                let fallback = c.template(&format!("{p}.fallback"), s.fallback.as_ref());
                if let Some(url) = url {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("slack/{j}"),
                        send_resolved: s.send_resolved.unwrap_or(false),
                        http,
                        kind: IntegrationKind::Slack {
                            url,
                            channel: s.channel.clone(),
                            username: s.username.clone(),
                            icon_emoji: s.icon_emoji.clone(),
                            icon_url: s.icon_url.clone(),
                            color,
                            title,
                            title_link,
                            pretext,
                            text,
                            footer,
                            fallback,
                        },
                    }));
                }
            }
            for (j, t) in r.msteams_configs.iter().enumerate() {
                let p = format!("{path}.msteams_configs[{j}]");
                let url = c.url_or_file(
                    &p,
                    "webhook_url",
                    t.webhook_url.as_ref(),
                    t.webhook_url_file.as_ref(),
                    None,
                );
                let http = c.http(
                    &format!("{p}.http_config"),
                    t.http_config.as_ref(),
                    &global_http,
                );
                let title = c.template(&format!("{p}.title"), t.title.as_ref());
                let summary = c.template(&format!("{p}.summary"), t.summary.as_ref());
                let text = c.template(&format!("{p}.text"), t.text.as_ref());
                if let Some(url) = url {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("msteams/{j}"),
                        send_resolved: t.send_resolved.unwrap_or(true),
                        http,
                        kind: IntegrationKind::MsTeams {
                            url,
                            title,
                            summary,
                            text,
                        },
                    }));
                }
            }
            for (j, s) in r.sms_configs.iter().enumerate() {
                let p = format!("{path}.sms_configs[{j}]");
                let url = c.url(&format!("{p}.url"), s.url.as_ref());
                if s.url.is_none() {
                    c.err(&format!("{p}.url"), "missing url in sms config");
                }
                if s.form.is_empty() {
                    c.err(&format!("{p}.form"), "missing form fields in sms config");
                }
                let mut form = Vec::new();
                for (k, v) in &s.form {
                    if let Some(t) = c.template(&format!("{p}.form.{k}"), Some(v)) {
                        form.push((k.clone(), t));
                    }
                }
                let http = c.http(
                    &format!("{p}.http_config"),
                    s.http_config.as_ref(),
                    &global_http,
                );
                if let Some(url) = url {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("sms/{j}"),
                        send_resolved: s.send_resolved.unwrap_or(false),
                        http,
                        kind: IntegrationKind::Sms { url, form },
                    }));
                }
            }
            for (j, a) in r.alertmanager_configs.iter().enumerate() {
                let p = format!("{path}.alertmanager_configs[{j}]");
                if a.url.is_none() {
                    c.err(&format!("{p}.url"), "missing url in alertmanager config");
                }
                let url = c.url(&format!("{p}.url"), a.url.as_ref());
                let http = c.http(
                    &format!("{p}.http_config"),
                    a.http_config.as_ref(),
                    &global_http,
                );
                if let Some(url) = url {
                    integrations.push(std::sync::Arc::new(Integration {
                        client: Default::default(),
                        name: format!("alertmanager/{j}"),
                        // The other Alertmanager must learn about resolutions.
                        send_resolved: true,
                        http,
                        kind: IntegrationKind::Alertmanager {
                            url: url.trim_end_matches('/').to_owned(),
                        },
                    }));
                }
            }
            if receivers.contains_key(&name) {
                c.err(
                    &path,
                    format!("notification config name {name:?} is not unique"),
                );
            }
            receivers.insert(name.clone(), Receiver { name, integrations });
        }

        let root_parent = Parent {
            key: None,
            receiver: None,
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
        };
        let route = match &file.route {
            None => {
                c.err("route", "no routes provided");
                build_route(&mut c, "route", &RouteFile::default(), &root_parent, 0)
            }
            Some(r) => {
                if r.receiver.as_deref().unwrap_or("").is_empty() {
                    c.err(
                        "route.receiver",
                        "root route must specify a default receiver",
                    );
                }
                if !r.matchers.is_empty() || !r.match_eq.is_empty() || !r.match_re.is_empty() {
                    c.err("route", "root route must not have any matchers");
                }
                if r.continue_ {
                    c.err("route.continue", "cannot have continue in root route");
                }
                build_route(&mut c, "route", r, &root_parent, 0)
            }
        };
        if let Some(r) = &file.route {
            if !r.mute_time_intervals.is_empty() {
                c.err(
                    "route.mute_time_intervals",
                    "root route must not have any mute time intervals",
                );
            }
            if !r.active_time_intervals.is_empty() {
                c.err(
                    "route.active_time_intervals",
                    "root route must not have any active time intervals",
                );
            }
        }
        let mut intervals_used = Vec::new();
        route_intervals(&route, "route", &mut intervals_used);
        for (path, name) in intervals_used {
            if !time_intervals.contains_key(name) {
                c.err(
                    &path,
                    format!("undefined time interval {name:?} used in route"),
                );
            }
        }
        let mut used = Vec::new();
        route_receivers(&route, "route", &mut used);
        for (path, name) in used {
            if !name.is_empty() && !receivers.contains_key(name) {
                c.err(
                    &format!("{path}.receiver"),
                    format!("undefined receiver {name:?} used in route"),
                );
            }
        }

        let mut inhibit_rules = Vec::new();
        for (i, r) in file.inhibit_rules.iter().enumerate() {
            let p = format!("inhibit_rules[{i}]");
            let source = c.matcher_list(
                &p,
                &r.source_match,
                &r.source_match_re,
                &r.source_matchers,
                ["source_match", "source_match_re", "source_matchers"],
            );
            let target = c.matcher_list(
                &p,
                &r.target_match,
                &r.target_match_re,
                &r.target_matchers,
                ["target_match", "target_match_re", "target_matchers"],
            );
            for (j, l) in r.equal.iter().enumerate() {
                if !super::matchers::valid_label_name(l) || l.contains(':') {
                    c.err(
                        &format!("{p}.equal[{j}]"),
                        format!("invalid label name {l:?}"),
                    );
                }
            }
            inhibit_rules.push(InhibitRule {
                source,
                target,
                equal: r.equal.clone(),
            });
        }

        if !c.errors.is_empty() {
            return Err(AmConfigError(c.errors));
        }
        let smtp = match (&g.smtp_from, &g.smtp_smarthost) {
            (Some(from), Some(smarthost))
                if smarthost
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Some(EmailSettings {
                    to: String::new(),
                    from: from.clone(),
                    hello: g.smtp_hello.clone().unwrap_or_else(|| "localhost".into()),
                    smarthost: smarthost.clone(),
                    auth_username: g.smtp_auth_username.clone(),
                    auth_password: g.smtp_auth_password.clone(),
                    require_tls: g.smtp_require_tls.unwrap_or(true),
                    insecure_skip_verify: false,
                    headers: Vec::new(),
                    html: None,
                    text: None,
                })
            }
            _ => None,
        };
        Ok(AmConfig {
            original: text.to_owned(),
            resolve_timeout,
            route,
            receivers,
            inhibit_rules,
            time_intervals,
            smtp,
        })
    }

    /// The configuration used when a tenant has none: every alert to a receiver
    /// with no integrations (alerts are visible in the API, nothing is sent).
    pub fn empty() -> AmConfig {
        let text = "route:\n  receiver: default\nreceivers:\n- name: default\n";
        match AmConfig::parse(text, None) {
            Ok(c) => c,
            // The literal above is valid; a failure here is a bug in the parser.
            Err(e) => panic!("built-in empty alertmanager configuration is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
global:
  resolve_timeout: 1m
  smtp_from: alerts@example.com
  smtp_smarthost: smtp.example.com:587
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 10s
  routes:
  - matchers: ['severity="page"', 'team=~"db|web"']
    receiver: mail
    repeat_interval: 1h
    continue: true
  - match: {service: checkout}
    match_re: {env: "prod|staging"}
    group_by: ['...']
receivers:
- name: hook
  webhook_configs:
  - url: http://127.0.0.1:9/hook
    signing_secret: s3cret
    headers: {X-Team: payments}
- name: mail
  email_configs:
  - to: oncall@example.com
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: [alertname]
"#;

    #[test]
    fn parses_and_inherits() {
        let c = AmConfig::parse(EXAMPLE, None).unwrap();
        assert_eq!(c.resolve_timeout, Duration::from_secs(60));
        assert_eq!(c.route.key, "{}");
        let page = &c.route.routes[0];
        assert_eq!(page.key, "{}/{severity=\"page\",team=~\"db|web\"}");
        assert_eq!(page.receiver, "mail");
        assert_eq!(page.group_by, GroupBy::Labels(vec!["alertname".into()]));
        assert_eq!(page.group_wait, Duration::from_secs(10), "inherited");
        assert_eq!(page.repeat_interval, Duration::from_secs(3600));
        assert!(page.continue_matching);
        let checkout = &c.route.routes[1];
        assert_eq!(checkout.receiver, "hook", "inherited");
        assert_eq!(checkout.group_by, GroupBy::All);
        assert_eq!(
            checkout.key,
            "{}/{env=~\"prod|staging\",service=\"checkout\"}"
        );
        match &c.receivers["mail"].integrations[0].kind {
            IntegrationKind::Email(e) => {
                assert_eq!(e.smarthost, "smtp.example.com:587");
                assert!(e.require_tls);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.inhibit_rules[0].equal, vec!["alertname".to_string()]);
    }

    #[test]
    fn reports_every_error_with_its_key() {
        let bad = r#"
route:
  receiver: nobody
  group_by: [a, a]
  group_interval: 0s
  routes:
  - matchers: ['a=~"("']
    repeat_interval: 5x
receivers:
- name: hook
  webhook_configs:
  - url: ftp://x
- name: hook
  email_configs:
  - {}
  pagerduty_configs: [{}]
"#;
        let e = AmConfig::parse(bad, None).unwrap_err().0;
        let all = e.join("\n");
        for needle in [
            "route.receiver: undefined receiver \"nobody\"",
            "duplicated label \"a\" in group_by",
            "group_interval cannot be zero",
            "route.routes[0].matchers[0]",
            "route.routes[0].repeat_interval",
            "webhook_configs[0].url",
            "is not unique",
            "missing to address",
            "no global SMTP from set",
            "pagerduty_configs: this receiver type is not supported",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let e = AmConfig::parse(
            "route:\n  receiver: a\n  recever: b\nreceivers:\n- name: a\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("recever") && text.contains("line 3"),
            "{text}"
        );
        assert!(AmConfig::parse("route:\n  receiver: a\nreceivers:\n- name: a\n  webhook_configs:\n  - url: http://x\n    bogus: 1\n", None).is_err());
    }

    #[test]
    fn time_intervals_mute_and_activate_routes() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/alertmanager/good/time-intervals.yml"
        ))
        .unwrap();
        let c = AmConfig::parse(&text, None).unwrap();
        let r = &c.route.routes[0];
        // 2026-11-25 is a Wednesday; 2026-11-28 a Saturday.
        let at = |s: &str| {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap();
            (t.unix_timestamp_nanos() / 1_000_000) as i64
        };
        assert!(!c.muted(
            &r.mute_time_intervals,
            &r.active_time_intervals,
            at("2026-11-25T10:00:00Z")
        ));
        assert!(
            c.muted(
                &r.mute_time_intervals,
                &r.active_time_intervals,
                at("2026-11-25T20:00:00Z")
            ),
            "outside business hours"
        );
        assert!(
            c.muted(
                &r.mute_time_intervals,
                &r.active_time_intervals,
                at("2026-11-28T10:00:00Z")
            ),
            "weekend"
        );
        assert!(
            c.muted(
                &r.mute_time_intervals,
                &r.active_time_intervals,
                at("2026-12-31T10:00:00Z")
            ),
            "last day of december"
        );
        assert!(!c.muted(&[], &[], at("2026-11-28T10:00:00Z")));
        let e = AmConfig::parse(
            "route:\n  receiver: a\n  mute_time_intervals: [x]\nreceivers:\n- name: a\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("root route must not have any mute time intervals"),
            "{e}"
        );
        assert!(e.contains("undefined time interval \"x\""), "{e}");
    }

    #[test]
    fn root_route_rules() {
        let e = AmConfig::parse("route:\n  matchers: [a=b]\nreceivers: []\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("root route must specify a default receiver"),
            "{e}"
        );
        assert!(e.contains("root route must not have any matchers"), "{e}");
        assert!(AmConfig::parse("", None).is_err(), "no route");
        let _ = AmConfig::empty();
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "(route|receiver|receivers|name|matchers|group_by|- |: |\\n|  |\\[|\\]|\\{|\\}|\"|=~|x|1s|\\.\\.\\.){0,60}") {
            let _ = AmConfig::parse(&text, None);
        }

        #[test]
        fn durations_never_panic(text in "[0-9a-z]{0,12}") {
            let _ = parse_prom_duration(&text);
        }
    }

    #[test]
    fn prom_durations() {
        assert_eq!(
            parse_prom_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_prom_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_prom_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_prom_duration("1d").unwrap(),
            Duration::from_secs(86400)
        );
        for bad in [
            "",
            "1",
            "m",
            "1m1h",
            "1x",
            "-1s",
            "1.5s",
            "99999999999999999999y",
        ] {
            assert!(parse_prom_duration(bad).is_err(), "{bad:?}");
        }
    }
}
