//! Delivery: each notification in its own task, so a slow or dead receiver never
//! delays another; bounded retries with exponential backoff; every attempt's outcome
//! in the delivery log (SQLite) and in the self-metrics.
//!
//! Webhook signatures: with a `signing_secret`, the request carries
//! `X-Vantage-Timestamp: <unix seconds>` and
//! `X-Vantage-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//! Binding the timestamp into the signed bytes lets a receiver refuse a captured
//! request replayed later (check that the timestamp is recent, e.g. within 5 minutes),
//! which a signature over the body alone cannot.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use vantage_storage::meta::{DeliveryStatus, MetaStore};

use super::config::{EmailSettings, HttpOptions, Integration, IntegrationKind};
use super::payload::{Data, postable_alerts, webhook_body};
use super::template::Template;
use crate::telemetry::{NotificationLabels, Telemetry};

/// Attempts per notification before it is marked failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Wait after the first failed attempt; doubles each time.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest one attempt may take (connect, send, answer) before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries running at once; beyond this a notification is failed at once (and
/// counted) rather than queued without bound.
pub const MAX_IN_FLIGHT: usize = 4096;
/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("Vantage/", env!("CARGO_PKG_VERSION"));

/// One notification to deliver.
pub struct Delivery {
    /// Its row in the notification log (`None` without a store).
    pub id: Option<i64>,
    /// The tenant, for logs.
    pub tenant: String,
    /// Where to.
    pub integration: Arc<Integration>,
    /// What.
    pub data: Data,
    /// Attempts made before (resuming after a restart).
    pub attempts_before: u32,
}

/// A failed attempt.
#[derive(Debug)]
pub struct SendError {
    message: String,
    retryable: bool,
}

impl SendError {
    fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: true,
        }
    }

    fn fatal(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Retry policy (a struct so tests can shorten it).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First backoff.
    pub first_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
            attempt_timeout: ATTEMPT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A notification as a tap sees it instead of sending it (tests, benchmarks).
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The integration's `<type>/<index>`.
    pub integration: String,
    /// What would have been sent.
    pub data: Data,
}

/// Starts delivery tasks.
#[derive(Clone)]
pub struct Deliverer {
    store: Option<Arc<MetaStore>>,
    telemetry: Arc<Telemetry>,
    in_flight: Arc<Semaphore>,
    policy: RetryPolicy,
    tap: Option<tokio::sync::mpsc::Sender<Tapped>>,
}

impl Deliverer {
    /// A deliverer recording into `store`.
    pub fn new(
        store: Option<Arc<MetaStore>>,
        telemetry: Arc<Telemetry>,
        policy: RetryPolicy,
    ) -> Deliverer {
        Deliverer {
            store,
            telemetry,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            policy,
            tap: None,
        }
    }

    /// Hands every notification to `tap` instead of sending it.
    pub fn with_tap(mut self, tap: tokio::sync::mpsc::Sender<Tapped>) -> Deliverer {
        self.tap = Some(tap);
        self
    }

    /// Starts delivering `d` in its own task.
    pub fn spawn(&self, d: Delivery) {
        let kind = d.integration.kind_name();
        if let Some(tap) = &self.tap {
            let tapped = Tapped {
                integration: d.integration.name.clone(),
                data: d.data,
            };
            if tap.try_send(tapped).is_err() {
                tracing::warn!("delivery tap full or closed");
            }
            self.record(d.id, DeliveryStatus::Delivered, 1, None);
            return;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(tenant = %d.tenant, integration = %d.integration.name, "too many deliveries in flight; notification dropped");
            self.count(kind, "dropped");
            self.record(
                d.id,
                DeliveryStatus::Failed,
                d.attempts_before,
                Some("too many deliveries in flight"),
            );
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            this.run(d).await;
        });
    }

    /// Marks a recorded notification with nothing to send (only resolved alerts and
    /// `send_resolved: false`) as done.
    pub fn nothing_to_send(&self, id: Option<i64>) {
        self.record(id, DeliveryStatus::Delivered, 0, None);
    }

    fn count(&self, receiver_type: &'static str, outcome: &'static str) {
        self.telemetry
            .notify
            .notifications
            .get_or_create(&NotificationLabels {
                receiver_type,
                outcome,
            })
            .inc();
    }

    fn record(&self, id: Option<i64>, status: DeliveryStatus, attempts: u32, error: Option<&str>) {
        let (Some(id), Some(store)) = (id, self.store.clone()) else {
            return;
        };
        let error = error.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            if let Err(e) =
                store.update_delivery(id, status, attempts, error.as_deref(), SystemTime::now())
            {
                tracing::warn!(id, error = %e, "cannot update the delivery log");
            }
        });
    }

    async fn run(&self, d: Delivery) {
        let kind = d.integration.kind_name();
        let mut attempts = d.attempts_before;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = match tokio::time::timeout(
                self.policy.attempt_timeout,
                send(&d.integration, &d.data),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(SendError::retry(format!(
                    "no answer within {} s",
                    self.policy.attempt_timeout.as_secs_f64()
                ))),
            };
            self.telemetry
                .notify
                .latency_seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    tracing::info!(tenant = %d.tenant, integration = %d.integration.name, group_key = %d.data.group_key, attempts, "notification delivered");
                    self.count(kind, "delivered");
                    self.record(d.id, DeliveryStatus::Delivered, attempts, None);
                    return;
                }
                Err(e) => {
                    let last = !e.retryable || attempts >= self.policy.max_attempts;
                    tracing::warn!(tenant = %d.tenant, integration = %d.integration.name, attempts, final_attempt = last, error = %e.message, "notification attempt failed");
                    if last {
                        self.count(kind, "failed");
                        self.record(d.id, DeliveryStatus::Failed, attempts, Some(&e.message));
                        return;
                    }
                    self.count(kind, "retried");
                    self.record(d.id, DeliveryStatus::Pending, attempts, Some(&e.message));
                    tokio::time::sleep(self.policy.backoff(attempts)).await;
                }
            }
        }
    }
}

/// The HMAC-SHA256 signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn client(i: &Integration) -> Result<reqwest::Client, SendError> {
    if let Some(c) = i.client.get() {
        return Ok(c.clone());
    }
    let c = build_client(&i.http).map_err(|e| SendError::fatal(format!("http client: {e}")))?;
    Ok(i.client.get_or_init(|| c).clone())
}

fn build_client(http: &HttpOptions) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(if http.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .danger_accept_invalid_certs(http.insecure_skip_verify);
    if let Some(pem) = &http.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
}

async fn post(
    i: &Integration,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(String, String)],
) -> Result<(), SendError> {
    let mut req = client(i)?
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type);
    if let Some(auth) = &i.http.authorization {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    for (k, v) in extra {
        req = req.header(k.as_str(), v.as_str());
    }
    let response = req
        .body(body)
        .send()
        .await
        .map_err(|e| SendError::retry(format!("POST {}: {e}", redact(url))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    let message = format!("POST {}: {status}: {text}", redact(url));
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(SendError::retry(message))
    } else {
        Err(SendError::fatal(message))
    }
}

/// URLs of chat webhooks carry their secret in the path: log only scheme and host.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "<url>".into(),
    }
}

fn render(t: &Option<Template>, data: &Data, default: impl FnOnce() -> String) -> String {
    match t {
        Some(t) => t.render(data, &Data::default_for),
        None => default(),
    }
}

async fn send(i: &Integration, data: &Data) -> Result<(), SendError> {
    match &i.kind {
        IntegrationKind::Webhook {
            url,
            max_alerts,
            signing_secret,
            headers,
        } => {
            let body = webhook_body(data, *max_alerts);
            let mut extra = headers.clone();
            if let Some(secret) = signing_secret {
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                extra.push(("X-Vantage-Timestamp".into(), ts.to_string()));
                extra.push(("X-Vantage-Signature".into(), signature(secret, ts, &body)));
            }
            post(i, url, "application/json", body, &extra).await
        }
        IntegrationKind::Slack {
            url,
            channel,
            username,
            icon_emoji,
            icon_url,
            color,
            title,
            title_link,
            pretext,
            text,
            footer,
            fallback,
        } => {
            let firing = data.status == "firing";
            let attachment = serde_json::json!({
                "title": render(title, data, || data.default_title()),
                "title_link": render(title_link, data, || data.external_url.clone()),
                "pretext": render(pretext, data, String::new),
                "text": render(text, data, || data.default_text()),
                "fallback": render(fallback, data, || data.default_title()),
                "color": render(color, data, || if firing { "danger".into() } else { "good".into() }),
                "footer": render(footer, data, String::new),
                "mrkdwn_in": ["fallback", "pretext", "text"],
            });
            let mut msg = serde_json::json!({ "attachments": [attachment] });
            for (k, v) in [
                ("channel", channel),
                ("username", username),
                ("icon_emoji", icon_emoji),
                ("icon_url", icon_url),
            ] {
                if let Some(v) = v {
                    msg[k] = serde_json::Value::String(v.clone());
                }
            }
            post(
                i,
                url,
                "application/json",
                msg.to_string().into_bytes(),
                &[],
            )
            .await
        }
        IntegrationKind::MsTeams {
            url,
            title,
            summary,
            text,
        } => {
            let firing = data.status == "firing";
            let title = render(title, data, || data.default_title());
            let msg = serde_json::json!({
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "themeColor": if firing { "8C1A1A" } else { "2DC72D" },
                "title": title,
                "summary": render(summary, data, || title.clone()),
                "text": render(text, data, || data.default_text()),
            });
            post(
                i,
                url,
                "application/json",
                msg.to_string().into_bytes(),
                &[],
            )
            .await
        }
        IntegrationKind::Sms { url, form } => {
            let fields: Vec<(String, String)> = form
                .iter()
                .map(|(k, t)| (k.clone(), t.render(data, &Data::default_for)))
                .collect();
            let body = serde_urlencoded::to_string(&fields)
                .map_err(|e| SendError::fatal(format!("form: {e}")))?;
            post(
                i,
                url,
                "application/x-www-form-urlencoded",
                body.into_bytes(),
                &[],
            )
            .await
        }
        IntegrationKind::Alertmanager { url } => {
            post(
                i,
                &format!("{url}/api/v2/alerts"),
                "application/json",
                postable_alerts(data),
                &[],
            )
            .await
        }
        IntegrationKind::Email(settings) => send_email(settings, data).await,
    }
}

async fn send_email(s: &EmailSettings, data: &Data) -> Result<(), SendError> {
    use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

    let (host, port) = s
        .smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| SendError::fatal(format!("smarthost {:?}: missing port", s.smarthost)))?;
    let header = |name: &str| {
        s.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, t)| t.render(data, &Data::default_for))
    };
    let subject = header("Subject").unwrap_or_else(|| data.default_title());
    let from_text = header("From").unwrap_or_else(|| s.from.clone());
    let to_text = header("To").unwrap_or_else(|| s.to.clone());
    let from: Mailbox = from_text
        .parse()
        .map_err(|e| SendError::fatal(format!("from {from_text:?}: {e}")))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for to in to_text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| SendError::fatal(format!("to {to:?}: {e}")))?;
        builder = builder.to(mailbox);
    }
    let text = s
        .text
        .as_ref()
        .map(|t| t.render(data, &Data::default_for))
        .unwrap_or_else(|| {
            format!(
                "{}\n\n{}\n\n{}\n",
                data.default_title(),
                data.default_text(),
                data.external_url
            )
        });
    let message = match &s.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            text,
            html.render(data, &Data::default_for),
        )),
        None => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        ),
    }
    .map_err(|e| SendError::fatal(format!("building the e-mail: {e}")))?;

    let params = || {
        TlsParameters::builder(host.to_owned())
            .dangerous_accept_invalid_certs(s.insecure_skip_verify)
            .build_rustls()
            .map_err(|e| SendError::fatal(format!("tls: {e}")))
    };
    let tls = if port == 465 {
        Tls::Wrapper(params()?)
    } else if s.require_tls {
        Tls::Required(params()?)
    } else {
        Tls::None
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .hello_name(ClientId::Domain(s.hello.clone()))
        .timeout(Some(ATTEMPT_TIMEOUT))
        .tls(tls);
    if let (Some(user), Some(pass)) = (&s.auth_username, &s.auth_password) {
        transport = transport.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    let transport = transport.build();
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(SendError::fatal(format!("smtp {}: {e}", s.smarthost))),
        Err(e) => Err(SendError::retry(format!("smtp {}: {e}", s.smarthost))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert_ne!(signature(b"key", 1, b"{}"), signature(b"key", 2, b"{}"));
        assert_ne!(signature(b"key", 1, b"{}"), signature(b"other", 1, b"{}"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(4));
        assert_eq!(p.backoff(40), MAX_BACKOFF);
    }
}
