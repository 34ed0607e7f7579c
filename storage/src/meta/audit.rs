//! The audit log: who changed what, and every failed login, append-only, queryable by
//! admins. Written in the same database as what it describes, so an action and its
//! record are as durable as each other.

use std::time::SystemTime;

use rusqlite::params;

use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Longest stored `detail`, in characters: enough for a reason, never a request body.
const MAX_DETAIL_CHARS: usize = 1024;
/// Most records one query returns.
pub const MAX_AUDIT_LIMIT: usize = 10_000;

/// One audited event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The tenant acted on (`None` for events before a tenant is known, such as a
    /// failed login of an unknown user).
    pub tenant: Option<String>,
    /// Who: `user:<name>`, `key:<id>`, or `anonymous`.
    pub actor: String,
    /// What, as `noun.verb`: `user.create`, `key.revoke`, `auth.login`, ...
    pub action: String,
    /// The object acted on (user name, key id, rule group, ...).
    pub target: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// The client's address.
    pub remote_addr: Option<String>,
    /// A short reason or summary; never a secret.
    pub detail: Option<String>,
}

/// A stored event with its sequence number and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing id, for paging.
    pub id: i64,
    /// When it happened.
    pub at: SystemTime,
    /// The event.
    pub event: AuditEvent,
}

/// Which records to return, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this tenant's events (`None`: all, for server admins).
    pub tenant: Option<String>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only this action, or actions starting with it when it ends in `.` (`user.`).
    pub action: Option<String>,
    /// Only events with an id below this one (the next page).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

impl MetaStore {
    /// Appends an event.
    pub fn append_audit(&self, event: &AuditEvent) -> Result<(), MetaError> {
        let detail = event
            .detail
            .as_ref()
            .map(|d| d.chars().take(MAX_DETAIL_CHARS).collect::<String>());
        self.conn()
            .execute(
                "INSERT INTO audit_log (at, tenant, actor, action, target, outcome, remote_addr, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    to_nanos(SystemTime::now(), "current time")?,
                    event.tenant,
                    event.actor,
                    event.action,
                    event.target,
                    event.outcome,
                    event.remote_addr,
                    detail
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Events matching `q`, newest first.
    pub fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, MetaError> {
        let limit = q.limit.clamp(1, MAX_AUDIT_LIMIT);
        let since = q.since.map(|t| to_nanos(t, "since")).transpose()?;
        let (action_eq, action_prefix) = match &q.action {
            Some(a) if a.ends_with('.') => (None, Some(format!("{a}%"))),
            Some(a) => (Some(a.clone()), None),
            None => (None, None),
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, tenant, actor, action, target, outcome, remote_addr, detail \
                 FROM audit_log \
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR at >= ?2) \
                 AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR action LIKE ?4) \
                 AND (?5 IS NULL OR id < ?5) \
                 ORDER BY id DESC LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(
            params![
                q.tenant,
                since,
                action_eq,
                action_prefix,
                q.before_id,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(AuditRecord {
                    id: row.get(0)?,
                    at: from_nanos(row.get(1)?),
                    event: AuditEvent {
                        tenant: row.get(2)?,
                        actor: row.get(3)?,
                        action: row.get(4)?,
                        target: row.get(5)?,
                        outcome: row.get(6)?,
                        remote_addr: row.get(7)?,
                        detail: row.get(8)?,
                    },
                })
            },
        )
        .map_err(|e| self.err(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| self.err(e))
    }
}
