//! Agent enrollment: an admin makes an enrollment token (per tenant, expiring, limited
//! uses); an agent presents it once and receives its own ingest key; agents are listed
//! with host, version and last contact, and revoking one revokes its key, so it is
//! refused from its next request on.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};

use super::keys::{self, NewKey, digests_match};
use super::{MetaError, MetaStore, Scope, from_nanos, insert_api_key, tenant_exists, to_nanos};

/// Prefix of enrollment tokens: recognisable, and never accepted as an API key.
pub const ENROLLMENT_PREFIX: &str = "vte_";
/// Longest host name, version or OS string an agent may report.
const MAX_FIELD: usize = 255;

/// An enrollment token as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id (12 hex characters).
    pub token_id: String,
    /// The tenant enrolled agents belong to.
    pub tenant: String,
    /// What it is for.
    pub name: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// After this, refused.
    pub expires_at: Option<SystemTime>,
    /// Enrollments allowed; `None` = unlimited until expiry.
    pub max_uses: Option<u32>,
    /// Enrollments so far.
    pub uses: u32,
    /// Set when revoked.
    pub revoked_at: Option<SystemTime>,
}

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Random id (16 hex characters).
    pub agent_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Host name it reported.
    pub hostname: String,
    /// Agent version it reported.
    pub version: String,
    /// Operating system it reported.
    pub os: String,
    /// The id of the ingest key it was issued.
    pub key_id: String,
    /// The enrollment token it used.
    pub enrolled_with: String,
    /// Enrollment time.
    pub enrolled_at: SystemTime,
    /// Its key's last recorded use (about once a minute): its last contact.
    pub last_seen_at: Option<SystemTime>,
    /// Set when revoked.
    pub revoked_at: Option<SystemTime>,
}

/// Why an enrollment was refused; coarse like [`super::KeyRejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRejection {
    /// Malformed, unknown, or a wrong secret.
    #[error("invalid enrollment token")]
    Unknown,
    /// Revoked.
    #[error("enrollment token revoked")]
    Revoked,
    /// Past its expiry.
    #[error("enrollment token expired")]
    Expired,
    /// All its uses are spent.
    #[error("enrollment token used up")]
    UsedUp,
    /// A reported field is empty, too long or has control characters.
    #[error("hostname, version and os must be 1 to 255 printable characters")]
    BadField,
    /// The store failed (logged).
    #[error("metadata store unavailable to enroll the agent")]
    Unavailable,
}

const TOKEN_COLUMNS: &str =
    "token_id, tenant, name, created_at, expires_at, max_uses, uses, revoked_at";
const AGENT_COLUMNS: &str = "a.agent_id, a.tenant, a.hostname, a.version, a.os, a.key_id, \
     a.enrolled_with, a.enrolled_at, k.last_used_at, a.revoked_at";

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        token_id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        created_at: from_nanos(row.get(3)?),
        expires_at: row.get::<_, Option<i64>>(4)?.map(from_nanos),
        max_uses: row.get(5)?,
        uses: row.get(6)?,
        revoked_at: row.get::<_, Option<i64>>(7)?.map(from_nanos),
    })
}

fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        agent_id: row.get(0)?,
        tenant: row.get(1)?,
        hostname: row.get(2)?,
        version: row.get(3)?,
        os: row.get(4)?,
        key_id: row.get(5)?,
        enrolled_with: row.get(6)?,
        enrolled_at: from_nanos(row.get(7)?),
        last_seen_at: row.get::<_, Option<i64>>(8)?.map(from_nanos),
        revoked_at: row.get::<_, Option<i64>>(9)?.map(from_nanos),
    })
}

fn field_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_FIELD && !s.chars().any(char::is_control)
}

fn unavailable(e: impl std::fmt::Display) -> EnrollRejection {
    tracing::error!(error = %e, "metadata store failed during agent enrollment");
    EnrollRejection::Unavailable
}

impl MetaStore {
    /// Creates an enrollment token; returns it and its text (shown once).
    pub fn create_enrollment_token(
        &self,
        tenant: &str,
        name: &str,
        ttl: Option<Duration>,
        max_uses: Option<u32>,
    ) -> Result<(EnrollmentToken, String), MetaError> {
        if !field_ok(name) {
            return Err(MetaError::Invalid(format!(
                "enrollment token name {name:?}: 1 to {MAX_FIELD} printable characters"
            )));
        }
        if max_uses == Some(0) {
            return Err(MetaError::Invalid("max_uses: must be at least 1".into()));
        }
        let now = SystemTime::now();
        let expires = ttl.map(|d| to_nanos(now + d, "expiry")).transpose()?;
        let new = NewKey::generate_with_prefix(ENROLLMENT_PREFIX)?;
        let conn = self.conn();
        if !tenant_exists(&conn, tenant).map_err(|e| self.err(e))? {
            return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
        }
        conn.execute(
            "INSERT INTO enrollment_tokens (token_id, tenant, name, secret_sha256, created_at, expires_at, max_uses) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.key_id,
                tenant,
                name,
                new.secret_sha256.as_slice(),
                to_nanos(now, "current time")?,
                expires,
                max_uses
            ],
        )
        .map_err(|e| self.err(e))?;
        let token = conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_id = ?1"),
                [&new.key_id],
                token_from_row,
            )
            .map_err(|e| self.err(e))?;
        Ok((token, new.text))
    }

    /// Enrollment tokens of a tenant (all for `None`), newest first.
    pub fn list_enrollment_tokens(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<EnrollmentToken>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE ?1 IS NULL OR tenant = ?1 \
                 ORDER BY created_at DESC"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([tenant], token_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Revokes an enrollment token; agents already enrolled with it keep working.
    pub fn revoke_enrollment_token(&self, token_id: &str) -> Result<(), MetaError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE token_id = ?1",
                params![token_id, to_nanos(SystemTime::now(), "current time")?],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!(
                "enrollment token {token_id:?}"
            )));
        }
        Ok(())
    }

    /// Spends one use of an enrollment token and registers the agent, with a new
    /// ingest key for its tenant; returns the agent and the key text (shown once).
    pub fn enroll_agent(
        &self,
        token_text: &str,
        hostname: &str,
        version: &str,
        os: &str,
    ) -> Result<(Agent, String), EnrollRejection> {
        if ![hostname, version, os].iter().all(|f| field_ok(f)) {
            return Err(EnrollRejection::BadField);
        }
        let parsed = keys::parse_with_prefix(ENROLLMENT_PREFIX, token_text.trim())
            .ok_or(EnrollRejection::Unknown)?;
        let now = SystemTime::now();
        let now_ns = to_nanos(now, "current time").map_err(unavailable)?;
        let mut agent_id = [0u8; 8];
        getrandom::fill(&mut agent_id).map_err(unavailable)?;
        let agent_id = hex::encode(agent_id);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let row: Option<(Vec<u8>, EnrollmentToken)> = tx
            .query_row(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, secret_sha256 FROM enrollment_tokens WHERE token_id = ?1"
                ),
                [parsed.key_id],
                |row| Ok((row.get(8)?, token_from_row(row)?)),
            )
            .optional()
            .map_err(unavailable)?;
        let Some((digest, token)) = row else {
            return Err(EnrollRejection::Unknown);
        };
        if !digests_match(&digest, &parsed.secret_sha256) {
            return Err(EnrollRejection::Unknown);
        }
        if token.revoked_at.is_some() {
            return Err(EnrollRejection::Revoked);
        }
        if token.expires_at.is_some_and(|t| t <= now) {
            return Err(EnrollRejection::Expired);
        }
        if token.max_uses.is_some_and(|max| token.uses >= max) {
            return Err(EnrollRejection::UsedUp);
        }
        tx.execute(
            "UPDATE enrollment_tokens SET uses = uses + 1 WHERE token_id = ?1",
            [&token.token_id],
        )
        .map_err(unavailable)?;
        let name = format!("agent {hostname}");
        let name: String = name.chars().take(super::MAX_KEY_NAME_LEN).collect();
        let (key, text) = insert_api_key(
            &tx,
            &self.path,
            &token.tenant,
            &name,
            &[Scope::Ingest],
            None,
        )
        .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO agents (agent_id, tenant, hostname, version, os, key_id, enrolled_with, enrolled_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![agent_id, token.tenant, hostname, version, os, key.key_id, token.token_id, now_ns],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        drop(conn);
        let agent = self.get_agent(&agent_id).map_err(unavailable)?;
        Ok((agent, text))
    }

    /// An agent by id.
    pub fn get_agent(&self, agent_id: &str) -> Result<Agent, MetaError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents a JOIN api_keys k ON k.key_id = a.key_id \
                     WHERE a.agent_id = ?1"
                ),
                [agent_id],
                agent_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("agent {agent_id:?}")))
    }

    /// Agents of a tenant (all for `None`), by host name.
    pub fn list_agents(&self, tenant: Option<&str>) -> Result<Vec<Agent>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {AGENT_COLUMNS} FROM agents a JOIN api_keys k ON k.key_id = a.key_id \
                 WHERE ?1 IS NULL OR a.tenant = ?1 ORDER BY a.hostname, a.enrolled_at"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([tenant], agent_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Revokes an agent and its key: its next request is refused.
    pub fn revoke_agent(&self, agent_id: &str) -> Result<Agent, MetaError> {
        let now = to_nanos(SystemTime::now(), "current time")?;
        {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let key_id: Option<String> = tx
                .query_row(
                    "SELECT key_id FROM agents WHERE agent_id = ?1",
                    [agent_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let key_id =
                key_id.ok_or_else(|| MetaError::NotFound(format!("agent {agent_id:?}")))?;
            tx.execute(
                "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1",
                params![agent_id, now],
            )
            .map_err(|e| self.err(e))?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE key_id = ?1",
                params![key_id, now],
            )
            .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
        }
        self.get_agent(agent_id)
    }
}
