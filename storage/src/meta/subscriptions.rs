//! Personal subscriptions to notification routes: a person of a tenant asks for an
//! e-mail of their own whenever the notifier notifies one of the tenant's receivers
//! (optionally only for alerts matching extra matchers), and may mute that for a while.
//!
//! Rows only; the notifier keeps them in memory and decides who gets what. A
//! subscription belongs to one user and one tenant and goes when the user does
//! (`ON DELETE CASCADE`); its notifications live in the notification log like every
//! other notification, under the integration name `subscription/<id>`.

use std::time::SystemTime;

use rusqlite::{OptionalExtension as _, Row, params};

use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Most subscriptions one user may hold in one tenant; a guard against a script
/// subscribing in a loop, far above what a person keeps.
pub const MAX_SUBSCRIPTIONS_PER_USER: usize = 100;

/// Whether a subscription's e-mails are held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mute {
    /// E-mails are sent.
    Off,
    /// Nothing is sent before this time.
    Until(SystemTime),
    /// Nothing is sent until unmuted.
    Indefinitely,
}

impl Mute {
    /// Whether the subscription is muted at `now`.
    pub fn active(&self, now: SystemTime) -> bool {
        match self {
            Mute::Off => false,
            Mute::Until(t) => *t > now,
            Mute::Indefinitely => true,
        }
    }
}

/// One stored subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Random id (32 hex digits).
    pub id: String,
    /// The tenant whose receiver it follows.
    pub tenant: String,
    /// The subscriber.
    pub user_id: String,
    /// The subscriber's login name when it was created (for admins' listings).
    pub username: String,
    /// The receiver's name in the tenant's Alertmanager configuration.
    pub receiver: String,
    /// Extra matchers in Alertmanager's syntax (`severity="page"`), all of which an
    /// alert must match to be included; empty: every alert of the notification.
    pub matchers: Vec<String>,
    /// Where the e-mails go.
    pub email: String,
    /// Muting.
    pub mute: Mute,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
}

const COLUMNS: &str = "id, tenant, user_id, username, receiver, matchers, email, muted, \
     muted_until, created_at, updated_at";

fn mute_columns(mute: Mute) -> Result<(i64, Option<i64>), MetaError> {
    Ok(match mute {
        Mute::Off => (0, None),
        Mute::Until(t) => (1, Some(to_nanos(t, "mute end")?)),
        Mute::Indefinitely => (1, None),
    })
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<SubscriptionRow> {
    let matchers: String = row.get(5)?;
    let matchers: Vec<String> = serde_json::from_str(&matchers).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
    })?;
    let muted: i64 = row.get(7)?;
    let until: Option<i64> = row.get(8)?;
    let mute = match (muted, until) {
        (0, _) => Mute::Off,
        (_, Some(t)) => Mute::Until(from_nanos(t)),
        (_, None) => Mute::Indefinitely,
    };
    Ok(SubscriptionRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        user_id: row.get(2)?,
        username: row.get(3)?,
        receiver: row.get(4)?,
        matchers,
        email: row.get(6)?,
        mute,
        created_at: from_nanos(row.get(9)?),
        updated_at: from_nanos(row.get(10)?),
    })
}

impl MetaStore {
    /// Stores a new subscription. More than [`MAX_SUBSCRIPTIONS_PER_USER`] of one user
    /// in one tenant: [`MetaError::Invalid`]; an unknown user: [`MetaError::NotFound`].
    pub fn create_subscription(&self, s: &SubscriptionRow) -> Result<(), MetaError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let count: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM alert_subscriptions WHERE tenant = ?1 AND user_id = ?2",
                params![s.tenant, s.user_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_SUBSCRIPTIONS_PER_USER {
            return Err(MetaError::Invalid(format!(
                "a user holds at most {MAX_SUBSCRIPTIONS_PER_USER} subscriptions per tenant"
            )));
        }
        let user: Option<String> = tx
            .query_row(
                "SELECT user_id FROM users WHERE user_id = ?1",
                [&s.user_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if user.is_none() {
            return Err(MetaError::NotFound(format!("user {:?}", s.user_id)));
        }
        let (muted, until) = mute_columns(s.mute)?;
        let matchers = serde_json::to_string(&s.matchers)
            .map_err(|e| MetaError::Invalid(format!("matchers: {e}")))?;
        tx.execute(
            "INSERT INTO alert_subscriptions (id, tenant, user_id, username, receiver, matchers, \
             email, muted, muted_until, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                s.id,
                s.tenant,
                s.user_id,
                s.username,
                s.receiver,
                matchers,
                s.email,
                muted,
                until,
                to_nanos(s.created_at, "subscription time")?,
                to_nanos(s.updated_at, "subscription time")?
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sets a subscription's muting. Another tenant's id: [`MetaError::NotFound`].
    pub fn set_subscription_mute(
        &self,
        tenant: &str,
        id: &str,
        mute: Mute,
        at: SystemTime,
    ) -> Result<SubscriptionRow, MetaError> {
        let (muted, until) = mute_columns(mute)?;
        let changed = self
            .conn()
            .execute(
                "UPDATE alert_subscriptions SET muted = ?3, muted_until = ?4, updated_at = ?5 \
                 WHERE id = ?1 AND tenant = ?2",
                params![id, tenant, muted, until, to_nanos(at, "update time")?],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("subscription {id:?}")));
        }
        self.get_subscription(tenant, id)
    }

    /// Deletes a subscription. Another tenant's id: [`MetaError::NotFound`].
    pub fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), MetaError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM alert_subscriptions WHERE id = ?1 AND tenant = ?2",
                params![id, tenant],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("subscription {id:?}")));
        }
        Ok(())
    }

    /// One subscription of one tenant.
    pub fn get_subscription(&self, tenant: &str, id: &str) -> Result<SubscriptionRow, MetaError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM alert_subscriptions WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("subscription {id:?}")))
    }

    /// Every subscription of every tenant (the notifier's cache is filled from this).
    pub fn all_subscriptions(&self) -> Result<Vec<SubscriptionRow>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alert_subscriptions ORDER BY tenant, created_at, id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::meta::Role;

    fn store_with_user() -> (tempfile::TempDir, MetaStore, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
        store.bootstrap().unwrap();
        let user = store
            .create_user("sam", "sam password 123", "default", Role::Viewer)
            .unwrap();
        (dir, store, user.user_id)
    }

    fn row(id: &str, user_id: &str) -> SubscriptionRow {
        let now = SystemTime::now();
        SubscriptionRow {
            id: id.into(),
            tenant: "default".into(),
            user_id: user_id.into(),
            username: "sam".into(),
            receiver: "hook".into(),
            matchers: vec!["severity=\"page\"".into()],
            email: "sam@example.com".into(),
            mute: Mute::Off,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn subscriptions_mute_round_trip_and_stay_in_their_tenant() {
        let (_dir, store, user) = store_with_user();
        store.create_subscription(&row("s1", &user)).unwrap();
        let until = SystemTime::now() + Duration::from_secs(600);
        let got = store
            .set_subscription_mute("default", "s1", Mute::Until(until), SystemTime::now())
            .unwrap();
        assert!(matches!(got.mute, Mute::Until(_)));
        assert!(got.mute.active(SystemTime::now()));
        assert!(!got.mute.active(until + Duration::from_secs(1)));
        assert_eq!(got.matchers, vec!["severity=\"page\"".to_string()]);
        let got = store
            .set_subscription_mute("default", "s1", Mute::Indefinitely, SystemTime::now())
            .unwrap();
        assert_eq!(got.mute, Mute::Indefinitely);
        assert!(matches!(
            store.set_subscription_mute("other", "s1", Mute::Off, SystemTime::now()),
            Err(MetaError::NotFound(_))
        ));
        assert!(matches!(
            store.delete_subscription("other", "s1"),
            Err(MetaError::NotFound(_))
        ));
        assert!(store.get_subscription("other", "s1").is_err());
        assert_eq!(store.all_subscriptions().unwrap().len(), 1);
        store.delete_subscription("default", "s1").unwrap();
        assert!(store.all_subscriptions().unwrap().is_empty());
    }

    #[test]
    fn unknown_users_and_too_many_subscriptions_are_refused() {
        let (_dir, store, user) = store_with_user();
        assert!(matches!(
            store.create_subscription(&row("x", "nobody")),
            Err(MetaError::NotFound(_))
        ));
        for i in 0..MAX_SUBSCRIPTIONS_PER_USER {
            store
                .create_subscription(&row(&format!("s{i}"), &user))
                .unwrap();
        }
        assert!(matches!(
            store.create_subscription(&row("one-more", &user)),
            Err(MetaError::Invalid(_))
        ));
    }

    #[test]
    fn deleting_the_user_deletes_their_subscriptions() {
        let (_dir, store, user) = store_with_user();
        store.create_subscription(&row("s1", &user)).unwrap();
        store.delete_user(&user).unwrap();
        assert!(store.all_subscriptions().unwrap().is_empty());
    }
}
