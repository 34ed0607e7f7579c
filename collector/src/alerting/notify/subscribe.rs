//! People's own subscriptions to a tenant's receivers: whenever the dispatcher notifies
//! a receiver about a group, each unmuted subscriber of that receiver whose extra
//! matchers select at least one of the group's alerts also gets an e-mail of those
//! alerts, sent through the tenant's `global.smtp_*` settings.
//!
//! A subscription is one more integration of the receiver as far as the notification
//! log is concerned (`subscription/<id>`): recorded before it is sent, deduplicated
//! against its own last notification, resumed after a restart, listed in the delivery
//! log. Its e-mails are delivered in tasks of their own like every notification, so a
//! slow SMTP server never holds up the receiver's webhook.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_storage::meta::{Mute, SubscriptionRow};

use super::config::{EmailSettings, HttpOptions, Integration, IntegrationKind};
use super::matchers::{Matcher, matches_all, parse_matchers};
use super::{Notifier, NotifyError};

/// Prefix of a subscription's integration name in the notification log.
pub const INTEGRATION_PREFIX: &str = "subscription/";
/// Longest e-mail address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Most extra matchers one subscription may carry.
pub const MAX_MATCHERS: usize = 32;

/// A subscription with its matchers compiled.
#[derive(Debug)]
pub struct Subscription {
    /// As stored.
    pub row: SubscriptionRow,
    /// `row.matchers`, parsed.
    pub matchers: Vec<Matcher>,
}

impl Subscription {
    fn compile(row: SubscriptionRow) -> Result<Subscription, NotifyError> {
        let mut matchers = Vec::new();
        for m in &row.matchers {
            matchers.extend(
                parse_matchers(m).map_err(|e| NotifyError::Invalid(format!("matchers: {e}")))?,
            );
        }
        Ok(Subscription { row, matchers })
    }

    /// Whether its e-mails are held back at `now_ms`.
    pub fn muted(&self, now_ms: i64) -> bool {
        self.row.mute.active(system_time(now_ms))
    }

    /// Whether an alert with `labels` is one it wants.
    pub fn wants(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        matches_all(&self.matchers, labels)
    }

    /// Its name in the notification log.
    pub fn integration_name(&self) -> String {
        format!("{INTEGRATION_PREFIX}{}", self.row.id)
    }

    /// The e-mail integration that delivers to it with the tenant's SMTP settings.
    pub fn integration(&self, smtp: &EmailSettings) -> Arc<Integration> {
        Arc::new(Integration {
            client: Default::default(),
            name: self.integration_name(),
            send_resolved: true,
            http: HttpOptions::default(),
            kind: IntegrationKind::Email(EmailSettings {
                to: self.row.email.clone(),
                ..smtp.clone()
            }),
        })
    }
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Compiles stored rows; an unreadable one is logged and left out.
pub(super) fn load(rows: Vec<SubscriptionRow>) -> Vec<(String, Arc<Subscription>)> {
    rows.into_iter()
        .filter_map(|row| {
            let (id, tenant) = (row.id.clone(), row.tenant.clone());
            match Subscription::compile(row) {
                Ok(s) => Some((tenant, Arc::new(s))),
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "stored subscription unreadable; ignored");
                    None
                }
            }
        })
        .collect()
}

/// Checks an e-mail address as SMTP will need it.
fn check_email(email: &str) -> Result<(), NotifyError> {
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return Err(NotifyError::Invalid(format!(
            "email must have 1 to {MAX_EMAIL_LEN} bytes"
        )));
    }
    email
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| NotifyError::Invalid(format!("email {email:?}: {e}")))
}

/// A refusal of the store is the caller's error; anything else the store's.
fn meta_error(e: vantage_storage::meta::MetaError) -> NotifyError {
    use vantage_storage::meta::MetaError;
    match e {
        MetaError::NotFound(what) => NotifyError::NotFound(what),
        MetaError::Invalid(why) => NotifyError::Invalid(why),
        other => NotifyError::Store(other),
    }
}

fn new_id() -> Result<String, NotifyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| NotifyError::Invalid(format!("random source: {e}")))?;
    Ok(hex::encode(b))
}

/// What a person asks for when subscribing.
pub struct NewSubscription {
    /// The receiver's name in the tenant's configuration.
    pub receiver: String,
    /// Extra matchers, Alertmanager syntax.
    pub matchers: Vec<String>,
    /// Where to.
    pub email: String,
}

impl Notifier {
    fn store_or_refuse(&self) -> Result<Arc<vantage_storage::meta::MetaStore>, NotifyError> {
        self.store.clone().ok_or_else(|| {
            NotifyError::Conflict(
                "subscriptions need the metadata store (authentication is off)".into(),
            )
        })
    }

    /// Subscribes `user_id` of `tenant` to one of the tenant's receivers.
    pub async fn subscribe(
        &self,
        tenant: &str,
        user_id: &str,
        username: &str,
        new: NewSubscription,
    ) -> Result<Arc<Subscription>, NotifyError> {
        let config = self.shared.config(tenant);
        if !config.receivers.contains_key(&new.receiver) {
            return Err(NotifyError::NotFound(format!(
                "receiver {:?}",
                new.receiver
            )));
        }
        if config.smtp.is_none() {
            return Err(NotifyError::Invalid(
                "this tenant's alertmanager configuration sets no global smtp_from and smtp_smarthost; subscriptions are e-mailed through them".into(),
            ));
        }
        check_email(&new.email)?;
        if new.matchers.len() > MAX_MATCHERS {
            return Err(NotifyError::Invalid(format!(
                "at most {MAX_MATCHERS} matchers"
            )));
        }
        let now = SystemTime::now();
        let row = SubscriptionRow {
            id: new_id()?,
            tenant: tenant.to_owned(),
            user_id: user_id.to_owned(),
            username: username.to_owned(),
            receiver: new.receiver,
            matchers: new.matchers,
            email: new.email,
            mute: Mute::Off,
            created_at: now,
            updated_at: now,
        };
        let sub = Arc::new(Subscription::compile(row)?);
        let store = self.store_or_refuse()?;
        let stored = sub.row.clone();
        tokio::task::spawn_blocking(move || store.create_subscription(&stored))
            .await
            .map_err(|_| NotifyError::Unavailable)?
            .map_err(meta_error)?;
        self.cache(tenant, sub.clone());
        tracing::info!(tenant = %tenant, subscription = %sub.row.id, receiver = %sub.row.receiver, "subscription created");
        Ok(sub)
    }

    fn cache(&self, tenant: &str, sub: Arc<Subscription>) {
        let mut all = self
            .shared
            .subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = all.entry(tenant.to_owned()).or_default();
        list.retain(|s| s.row.id != sub.row.id);
        list.push(sub);
    }

    /// The tenant's subscriptions, oldest first.
    pub fn subscriptions(&self, tenant: &str) -> Vec<Arc<Subscription>> {
        self.shared.subscriptions(tenant)
    }

    /// Mutes (`Mute::Until`, `Mute::Indefinitely`) or unmutes (`Mute::Off`) one.
    pub async fn set_mute(
        &self,
        tenant: &str,
        id: &str,
        mute: Mute,
    ) -> Result<Arc<Subscription>, NotifyError> {
        let store = self.store_or_refuse()?;
        let (t, i) = (tenant.to_owned(), id.to_owned());
        let row = tokio::task::spawn_blocking(move || {
            store.set_subscription_mute(&t, &i, mute, SystemTime::now())
        })
        .await
        .map_err(|_| NotifyError::Unavailable)?
        .map_err(meta_error)?;
        let sub = Arc::new(Subscription::compile(row)?);
        self.cache(tenant, sub.clone());
        Ok(sub)
    }

    /// Deletes one.
    pub async fn unsubscribe(&self, tenant: &str, id: &str) -> Result<(), NotifyError> {
        let store = self.store_or_refuse()?;
        let (t, i) = (tenant.to_owned(), id.to_owned());
        tokio::task::spawn_blocking(move || store.delete_subscription(&t, &i))
            .await
            .map_err(|_| NotifyError::Unavailable)?
            .map_err(meta_error)?;
        if let Some(list) = self
            .shared
            .subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(tenant)
        {
            list.retain(|s| s.row.id != id);
        }
        tracing::info!(tenant = %tenant, subscription = %id, "subscription deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(matchers: &[&str], mute: Mute) -> Subscription {
        Subscription::compile(SubscriptionRow {
            id: "abc".into(),
            tenant: "t".into(),
            user_id: "u".into(),
            username: "sam".into(),
            receiver: "hook".into(),
            matchers: matchers.iter().map(|s| s.to_string()).collect(),
            email: "sam@example.com".into(),
            mute,
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
        })
        .unwrap()
    }

    #[test]
    fn matchers_select_and_mutes_expire() {
        let s = sub(&["severity=\"page\"", "team=~\"pay.*\""], Mute::Off);
        let labels = |sev: &str| {
            [("severity", sev), ("team", "payments")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.wants(&labels("page")));
        assert!(!s.wants(&labels("info")));
        assert!(!s.muted(1_000));
        let until = sub(&[], Mute::Until(UNIX_EPOCH + Duration::from_secs(10)));
        assert!(until.muted(9_999));
        assert!(!until.muted(10_000));
        assert!(sub(&[], Mute::Indefinitely).muted(i64::MAX / 2));
        assert_eq!(s.integration_name(), "subscription/abc");
    }

    #[test]
    fn bad_matchers_and_addresses_are_refused() {
        let mut row = sub(&[], Mute::Off).row;
        row.matchers = vec!["severity=~\"(\"".into()];
        assert!(Subscription::compile(row).is_err());
        for bad in ["", "no-at-sign", "a@", "@b", &"x".repeat(300)] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        check_email("oncall+vantage@example.com").unwrap();
    }
}
