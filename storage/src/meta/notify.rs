//! What the notifier persists: the notification log (which is also the delivery log),
//! silences, and the Alertmanager configurations tenants set through the API.
//!
//! A notification is recorded here *before* it is sent, so after a crash or a retry the
//! notifier knows it already owes (or has made) that notification and never sends it
//! twice; the latest row per group, receiver and integration is the deduplication state
//! restored at start, as Alertmanager's `nflog` is.

use std::str::FromStr;
use std::time::SystemTime;

use rusqlite::{OptionalExtension as _, Row, params};

use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Where a notification's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Recorded, not yet delivered (being tried, or to resume at start).
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Every attempt failed; it will not be retried.
    Failed,
}

impl DeliveryStatus {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = MetaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(MetaError::Invalid(format!(
                "delivery status {s:?} (expected pending, delivered or failed)"
            ))),
        }
    }
}

/// A notification about to be sent.
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// The tenant whose alerts these are.
    pub tenant: String,
    /// The aggregation group, as Alertmanager writes it (`{}:{alertname="X"}`).
    pub group_key: String,
    /// The receiver's name.
    pub receiver: String,
    /// `<type>/<index>` within the receiver.
    pub integration: String,
    /// `webhook`, `email`, `slack`, `msteams`, `sms` or `alertmanager`.
    pub receiver_type: String,
    /// Fingerprints of the firing alerts, sorted.
    pub firing: Vec<String>,
    /// Fingerprints of the resolved alerts, sorted.
    pub resolved: Vec<String>,
    /// What is sent, as JSON, so an interrupted delivery can resume.
    pub content: String,
    /// When it was decided.
    pub at: SystemTime,
}

/// One row of the notification (and delivery) log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    /// Row id, increasing.
    pub id: i64,
    /// The tenant.
    pub tenant: String,
    /// The aggregation group.
    pub group_key: String,
    /// The receiver's name.
    pub receiver: String,
    /// `<type>/<index>` within the receiver.
    pub integration: String,
    /// The integration's type.
    pub receiver_type: String,
    /// Fingerprints of the firing alerts, sorted.
    pub firing: Vec<String>,
    /// Fingerprints of the resolved alerts, sorted.
    pub resolved: Vec<String>,
    /// What is sent, as JSON.
    pub content: String,
    /// Delivery state.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When it was recorded.
    pub created_at: SystemTime,
    /// When its status last changed.
    pub updated_at: SystemTime,
}

/// A silence as stored; `matchers` is the API's JSON array, kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SilenceRow {
    /// Random id (UUID text).
    pub id: String,
    /// The tenant whose alerts it silences.
    pub tenant: String,
    /// JSON array of `{name, value, isRegex, isEqual}`.
    pub matchers: String,
    /// When it starts.
    pub starts_at: SystemTime,
    /// When it ends (expiring sets this to now).
    pub ends_at: SystemTime,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Last change.
    pub updated_at: SystemTime,
}

const NOTIFICATION_COLUMNS: &str = "id, tenant, group_key, receiver, integration, receiver_type, \
     firing, resolved, content, status, attempts, last_error, created_at, updated_at";
const SILENCE_COLUMNS: &str =
    "id, tenant, matchers, starts_at, ends_at, created_by, comment, updated_at";

/// Most rows one listing returns, whatever the caller asks.
pub const MAX_NOTIFICATION_LIST: usize = 10_000;

fn join(fps: &[String]) -> String {
    fps.join(",")
}

fn split(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_owned).collect()
    }
}

fn notification_from_row(row: &Row<'_>) -> rusqlite::Result<NotificationRow> {
    let status: String = row.get(9)?;
    let status = DeliveryStatus::from_str(&status).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(NotificationRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        group_key: row.get(2)?,
        receiver: row.get(3)?,
        integration: row.get(4)?,
        receiver_type: row.get(5)?,
        firing: split(&row.get::<_, String>(6)?),
        resolved: split(&row.get::<_, String>(7)?),
        content: row.get(8)?,
        status,
        attempts: row.get(10)?,
        last_error: row.get(11)?,
        created_at: from_nanos(row.get(12)?),
        updated_at: from_nanos(row.get(13)?),
    })
}

fn silence_from_row(row: &Row<'_>) -> rusqlite::Result<SilenceRow> {
    Ok(SilenceRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        matchers: row.get(2)?,
        starts_at: from_nanos(row.get(3)?),
        ends_at: from_nanos(row.get(4)?),
        created_by: row.get(5)?,
        comment: row.get(6)?,
        updated_at: from_nanos(row.get(7)?),
    })
}

impl MetaStore {
    /// Records notifications (one per integration) as pending, in one transaction,
    /// and returns their row ids in the same order. Called before anything is sent.
    pub fn record_notifications(
        &self,
        notifications: &[NewNotification],
    ) -> Result<Vec<i64>, MetaError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut ids = Vec::with_capacity(notifications.len());
        for n in notifications {
            let at = to_nanos(n.at, "notification time")?;
            tx.execute(
                "INSERT INTO alert_notifications (tenant, group_key, receiver, integration, \
                 receiver_type, firing, resolved, content, status, attempts, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?9)",
                params![
                    n.tenant,
                    n.group_key,
                    n.receiver,
                    n.integration,
                    n.receiver_type,
                    join(&n.firing),
                    join(&n.resolved),
                    n.content,
                    at
                ],
            )
            .map_err(|e| self.err(e))?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// Updates a notification's delivery state after an attempt.
    pub fn update_delivery(
        &self,
        id: i64,
        status: DeliveryStatus,
        attempts: u32,
        last_error: Option<&str>,
        at: SystemTime,
    ) -> Result<(), MetaError> {
        let at = to_nanos(at, "delivery time")?;
        let changed = self
            .conn()
            .execute(
                "UPDATE alert_notifications SET status = ?2, attempts = ?3, last_error = ?4, \
                 updated_at = ?5 WHERE id = ?1",
                params![id, status.as_str(), attempts, last_error, at],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("notification {id}")));
        }
        Ok(())
    }

    /// The newest notification per tenant, group, receiver and integration: the
    /// deduplication state the notifier restores at start.
    pub fn latest_notifications(&self) -> Result<Vec<NotificationRow>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM alert_notifications WHERE id IN \
                 (SELECT MAX(id) FROM alert_notifications \
                  GROUP BY tenant, group_key, receiver, integration)"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], notification_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Notifications still pending (a restart interrupted their delivery), oldest first.
    pub fn pending_notifications(&self) -> Result<Vec<NotificationRow>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM alert_notifications \
                 WHERE status = 'pending' ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], notification_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// The delivery log of one tenant, newest first, optionally of one receiver and
    /// one status; at most `limit` (capped at [`MAX_NOTIFICATION_LIST`]) rows.
    pub fn list_notifications(
        &self,
        tenant: &str,
        receiver: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, MetaError> {
        let limit = i64::try_from(limit.min(MAX_NOTIFICATION_LIST)).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM alert_notifications \
                 WHERE tenant = ?1 AND (?2 IS NULL OR receiver = ?2) \
                 AND (?3 IS NULL OR status = ?3) ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(
            params![tenant, receiver, status.map(DeliveryStatus::as_str), limit],
            notification_from_row,
        )
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Creates or replaces a silence (same id and tenant). A silence of another
    /// tenant with this id is [`MetaError::NotFound`], so ids never cross tenants.
    pub fn upsert_silence(&self, silence: &SilenceRow) -> Result<(), MetaError> {
        let conn = self.conn();
        let owner: Option<String> = conn
            .query_row(
                "SELECT tenant FROM alert_silences WHERE id = ?1",
                [&silence.id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if owner.is_some_and(|t| t != silence.tenant) {
            return Err(MetaError::NotFound(format!("silence {:?}", silence.id)));
        }
        conn.execute(
            "INSERT INTO alert_silences (id, tenant, matchers, starts_at, ends_at, created_by, \
             comment, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (id) DO UPDATE SET matchers = ?3, starts_at = ?4, ends_at = ?5, \
             created_by = ?6, comment = ?7, updated_at = ?8",
            params![
                silence.id,
                silence.tenant,
                silence.matchers,
                to_nanos(silence.starts_at, "silence start")?,
                to_nanos(silence.ends_at, "silence end")?,
                silence.created_by,
                silence.comment,
                to_nanos(silence.updated_at, "silence update time")?
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every silence of every tenant (the notifier's cache is filled from this).
    pub fn all_silences(&self) -> Result<Vec<SilenceRow>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM alert_silences ORDER BY tenant, starts_at, id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([], silence_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// One silence of one tenant.
    pub fn get_silence(&self, tenant: &str, id: &str) -> Result<SilenceRow, MetaError> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {SILENCE_COLUMNS} FROM alert_silences WHERE id = ?1 AND tenant = ?2"),
            params![id, tenant],
            silence_from_row,
        )
        .optional()
        .map_err(|e| self.err(e))?
        .ok_or_else(|| MetaError::NotFound(format!("silence {id:?}")))
    }

    /// Stores a tenant's Alertmanager configuration (already validated by the caller).
    pub fn set_alertmanager_config(
        &self,
        tenant: &str,
        yaml: &str,
        at: SystemTime,
    ) -> Result<(), MetaError> {
        self.conn()
            .execute(
                "INSERT INTO alertmanager_configs (tenant, yaml, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant) DO UPDATE SET yaml = ?2, updated_at = ?3",
                params![tenant, yaml, to_nanos(at, "config time")?],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every tenant's stored Alertmanager configuration, as `(tenant, yaml)`.
    pub fn alertmanager_configs(&self) -> Result<Vec<(String, String)>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT tenant, yaml FROM alertmanager_configs ORDER BY tenant")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
        (dir, store)
    }

    fn notification(group: &str, firing: &[&str]) -> NewNotification {
        NewNotification {
            tenant: "t1".into(),
            group_key: group.into(),
            receiver: "hook".into(),
            integration: "webhook/0".into(),
            receiver_type: "webhook".into(),
            firing: firing.iter().map(|s| s.to_string()).collect(),
            resolved: vec![],
            content: "{}".into(),
            at: SystemTime::now(),
        }
    }

    #[test]
    fn latest_notification_per_group_is_the_dedup_state() {
        let (_dir, store) = store();
        store
            .record_notifications(&[notification("g1", &["a"])])
            .unwrap();
        let ids = store
            .record_notifications(&[notification("g1", &["a", "b"]), notification("g2", &[])])
            .unwrap();
        let mut latest = store.latest_notifications().unwrap();
        latest.sort_by_key(|n| n.id);
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].firing, vec!["a".to_string(), "b".to_string()]);
        assert!(latest[1].firing.is_empty());
        assert_eq!(store.pending_notifications().unwrap().len(), 3);
        store
            .update_delivery(
                ids[0],
                DeliveryStatus::Failed,
                3,
                Some("boom"),
                SystemTime::now(),
            )
            .unwrap();
        let failed = store
            .list_notifications("t1", Some("hook"), Some(DeliveryStatus::Failed), 10)
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].last_error.as_deref(), Some("boom"));
        assert_eq!(failed[0].attempts, 3);
        assert!(
            store
                .list_notifications("t2", None, None, 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .update_delivery(999, DeliveryStatus::Delivered, 1, None, SystemTime::now())
                .is_err()
        );
    }

    #[test]
    fn silence_ids_do_not_cross_tenants() {
        let (_dir, store) = store();
        let now = SystemTime::now();
        let mut s = SilenceRow {
            id: "s1".into(),
            tenant: "t1".into(),
            matchers: "[]".into(),
            starts_at: now,
            ends_at: now + Duration::from_secs(60),
            created_by: "me".into(),
            comment: "c".into(),
            updated_at: now,
        };
        store.upsert_silence(&s).unwrap();
        assert!(store.get_silence("t2", "s1").is_err());
        s.tenant = "t2".into();
        assert!(matches!(
            store.upsert_silence(&s),
            Err(MetaError::NotFound(_))
        ));
        s.tenant = "t1".into();
        s.comment = "changed".into();
        store.upsert_silence(&s).unwrap();
        assert_eq!(store.get_silence("t1", "s1").unwrap().comment, "changed");
        assert_eq!(store.all_silences().unwrap().len(), 1);
    }

    #[test]
    fn configs_are_per_tenant() {
        let (_dir, store) = store();
        store
            .set_alertmanager_config("a", "x", SystemTime::now())
            .unwrap();
        store
            .set_alertmanager_config("a", "y", SystemTime::now())
            .unwrap();
        store
            .set_alertmanager_config("b", "z", SystemTime::now())
            .unwrap();
        assert_eq!(
            store.alertmanager_configs().unwrap(),
            vec![("a".into(), "y".into()), ("b".into(), "z".into())]
        );
    }
}
