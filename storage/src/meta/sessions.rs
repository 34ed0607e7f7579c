//! Login sessions: one row per login, holding the digest of a rotating refresh secret,
//! and the keys that sign the short-lived access tokens issued within it.
//!
//! Access tokens are checked against their session on every request (one indexed read,
//! like an API key), so logout, revocation, disabling a user and changing their role take
//! effect at once instead of when the token expires.

use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::keys::digests_match;
use super::users::Role;
use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Prefix of refresh tokens, so a leaked one is recognisable (secret scanners) and never
/// confused with an API key (`vtg_`).
pub const REFRESH_PREFIX: &str = "vtr_";
const SESSION_ID_BYTES: usize = 8;
const REFRESH_SECRET_BYTES: usize = 32;

/// A login session as listed: never its refresh secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Random id (16 hex characters), the `sid` of its access tokens.
    pub session_id: String,
    /// Whose session.
    pub user_id: String,
    /// The tenant the session acts in.
    pub tenant: String,
    /// Login time.
    pub created_at: SystemTime,
    /// Last refresh (or the login).
    pub refreshed_at: SystemTime,
    /// When the refresh token stops working unless refreshed before.
    pub expires_at: SystemTime,
    /// Set by logout, revocation, password change or a reused refresh token.
    pub revoked_at: Option<SystemTime>,
    /// The client's address at login.
    pub remote_addr: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
}

/// What a live session grants right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionGrant {
    /// The session.
    pub session_id: String,
    /// The user.
    pub user_id: String,
    /// The user's login name.
    pub username: String,
    /// The tenant.
    pub tenant: String,
    /// The user's current role in the tenant.
    pub role: Role,
}

/// Why a session (or a refresh token) is not accepted. Coarse on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRejection {
    /// Malformed, unknown, or a wrong secret.
    #[error("invalid session")]
    Unknown,
    /// Logged out or revoked.
    #[error("session revoked")]
    Revoked,
    /// Past its expiry.
    #[error("session expired")]
    Expired,
    /// A refresh token that was already exchanged was presented again: it was copied.
    /// The session is revoked.
    #[error("refresh token reused; the session has been revoked")]
    Reused,
    /// The user is disabled or no longer has a role in the session's tenant.
    #[error("user is disabled or no longer a member of this tenant")]
    NoAccess,
    /// The store failed (logged).
    #[error("metadata store unavailable to check the session")]
    Unavailable,
}

/// user id, user name, tenant, expiry, revocation, user disabled, role in the tenant.
type SessionRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    bool,
    Option<String>,
);

const SESSION_COLUMNS: &str = "session_id, user_id, tenant, created_at, refreshed_at, \
     expires_at, revoked_at, remote_addr, user_agent";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        session_id: row.get(0)?,
        user_id: row.get(1)?,
        tenant: row.get(2)?,
        created_at: from_nanos(row.get(3)?),
        refreshed_at: from_nanos(row.get(4)?),
        expires_at: from_nanos(row.get(5)?),
        revoked_at: row.get::<_, Option<i64>>(6)?.map(from_nanos),
        remote_addr: row.get(7)?,
        user_agent: row.get(8)?,
    })
}

fn new_secret() -> Result<([u8; REFRESH_SECRET_BYTES], [u8; 32]), MetaError> {
    let mut secret = [0u8; REFRESH_SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|reason| MetaError::Random { reason })?;
    let digest: [u8; 32] = Sha256::digest(secret).into();
    Ok((secret, digest))
}

/// `vtr_<session id>_<secret>` split into its parts and the secret's digest.
fn parse_refresh(text: &str) -> Option<(String, [u8; 32])> {
    let rest = text.trim().strip_prefix(REFRESH_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != SESSION_ID_BYTES * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let secret = hex::decode(secret).ok()?;
    if secret.len() != REFRESH_SECRET_BYTES {
        return None;
    }
    Some((id.to_ascii_lowercase(), Sha256::digest(&secret).into()))
}

fn unavailable(e: impl std::fmt::Display) -> SessionRejection {
    tracing::error!(error = %e, "metadata store failed while checking a session");
    SessionRejection::Unavailable
}

impl MetaStore {
    /// Opens a session for a user who just proved who they are; returns it and the
    /// refresh token text (shown once).
    pub fn create_session(
        &self,
        user_id: &str,
        tenant: &str,
        ttl: Duration,
        remote_addr: Option<&str>,
        user_agent: Option<&str>,
    ) -> Result<(Session, String), MetaError> {
        let mut id = [0u8; SESSION_ID_BYTES];
        getrandom::fill(&mut id).map_err(|reason| MetaError::Random { reason })?;
        let session_id = hex::encode(id);
        let (secret, digest) = new_secret()?;
        let now = SystemTime::now();
        let expires = now + ttl;
        let user_agent = user_agent.map(|ua| ua.chars().take(256).collect::<String>());
        self.conn()
            .execute(
                "INSERT INTO sessions (session_id, user_id, tenant, refresh_sha256, created_at, \
                 refreshed_at, expires_at, remote_addr, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
                params![
                    session_id,
                    user_id,
                    tenant,
                    digest.as_slice(),
                    to_nanos(now, "current time")?,
                    to_nanos(expires, "session expiry")?,
                    remote_addr,
                    user_agent
                ],
            )
            .map_err(|e| self.err(e))?;
        let text = format!("{REFRESH_PREFIX}{session_id}_{}", hex::encode(secret));
        Ok((self.get_session(&session_id)?, text))
    }

    /// A session by id.
    pub fn get_session(&self, session_id: &str) -> Result<Session, MetaError> {
        self.conn()
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1"),
                [session_id],
                session_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("session {session_id:?}")))
    }

    /// The sessions of a user, newest first (revoked and expired ones of the last
    /// week included, so a user can see what happened).
    pub fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>, MetaError> {
        let week_ago = to_nanos(
            SystemTime::now() - Duration::from_secs(7 * 86_400),
            "current time",
        )?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND expires_at > ?2 \
                 ORDER BY created_at DESC LIMIT 1000"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![user_id, week_ago], session_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Ends a session (logout, or revocation by its user or an admin).
    pub fn revoke_session(&self, session_id: &str) -> Result<(), MetaError> {
        let now = to_nanos(SystemTime::now(), "current time")?;
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE session_id = ?1",
                params![session_id, now],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("session {session_id:?}")));
        }
        Ok(())
    }

    /// What an access token of `session_id` may do now: refused when the session was
    /// revoked or expired, the user disabled, or the user's role in the tenant removed.
    pub fn check_session(
        &self,
        session_id: &str,
        now: SystemTime,
    ) -> Result<SessionGrant, SessionRejection> {
        let now = to_nanos(now, "current time").map_err(unavailable)?;
        let conn = self.conn();
        let row: Option<SessionRow> = conn
            .prepare_cached(
                "SELECT s.user_id, u.username, s.tenant, s.expires_at, s.revoked_at, u.disabled, r.role \
                 FROM sessions s JOIN users u ON u.user_id = s.user_id \
                 LEFT JOIN user_roles r ON r.user_id = s.user_id AND r.tenant = s.tenant \
                 WHERE s.session_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([session_id], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                })
                .optional()
            })
            .map_err(unavailable)?;
        let (user_id, username, tenant, expires_at, revoked_at, disabled, role) =
            row.ok_or(SessionRejection::Unknown)?;
        if revoked_at.is_some() {
            return Err(SessionRejection::Revoked);
        }
        if expires_at <= now {
            return Err(SessionRejection::Expired);
        }
        let role: Role = match (disabled, role) {
            (false, Some(role)) => role.parse().map_err(unavailable)?,
            _ => return Err(SessionRejection::NoAccess),
        };
        Ok(SessionGrant {
            session_id: session_id.to_string(),
            user_id,
            username,
            tenant,
            role,
        })
    }

    /// Exchanges a refresh token for a new one (the old one stops working) and extends
    /// the session by `ttl`, but never beyond `max_age` after login. Presenting the
    /// token this one replaced revokes the session: one of the two copies was stolen.
    pub fn refresh_session(
        &self,
        refresh_text: &str,
        ttl: Duration,
        max_age: Duration,
    ) -> Result<(SessionGrant, String), SessionRejection> {
        let (session_id, presented) =
            parse_refresh(refresh_text).ok_or(SessionRejection::Unknown)?;
        let now = SystemTime::now();
        {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let row: Option<(Vec<u8>, Option<Vec<u8>>, i64)> = tx
                .query_row(
                    "SELECT refresh_sha256, previous_sha256, created_at FROM sessions \
                     WHERE session_id = ?1",
                    [&session_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let (current, previous, created_at) = row.ok_or(SessionRejection::Unknown)?;
            if !digests_match(&current, &presented) {
                if previous.is_some_and(|p| digests_match(&p, &presented)) {
                    tx.execute(
                        "UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE session_id = ?1",
                        params![session_id, to_nanos(now, "current time").map_err(unavailable)?],
                    )
                    .map_err(unavailable)?;
                    tx.commit().map_err(unavailable)?;
                    tracing::warn!(session_id = %session_id, "refresh token reused; session revoked");
                    return Err(SessionRejection::Reused);
                }
                return Err(SessionRejection::Unknown);
            }
            drop(tx);
            drop(conn);
            // Revoked, expired, disabled and role checks are the access checks.
            self.check_session(&session_id, now)?;
            let (secret, digest) = new_secret().map_err(unavailable)?;
            let limit = from_nanos(created_at) + max_age;
            let expires = (now + ttl).min(limit);
            let conn = self.conn();
            let changed = conn
                .execute(
                    "UPDATE sessions SET previous_sha256 = refresh_sha256, refresh_sha256 = ?2, \
                 refreshed_at = ?3, expires_at = ?4 WHERE session_id = ?1 AND refresh_sha256 = ?5",
                    params![
                        session_id,
                        digest.as_slice(),
                        to_nanos(now, "current time").map_err(unavailable)?,
                        to_nanos(expires, "session expiry").map_err(unavailable)?,
                        presented.as_slice()
                    ],
                )
                .map_err(unavailable)?;
            drop(conn);
            if changed == 0 {
                // A concurrent refresh with the same token won the race.
                return Err(SessionRejection::Unknown);
            }
            let grant = self.check_session(&session_id, now)?;
            let text = format!("{REFRESH_PREFIX}{session_id}_{}", hex::encode(secret));
            Ok((grant, text))
        }
    }

    /// The key that signs new access tokens, created on first use: `(kid, secret)`.
    pub fn signing_key(&self) -> Result<(String, Vec<u8>), MetaError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let newest: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT kid, secret FROM signing_keys ORDER BY created_at DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(key) = newest {
            return Ok(key);
        }
        let mut kid = [0u8; 6];
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut kid).map_err(|reason| MetaError::Random { reason })?;
        getrandom::fill(&mut secret).map_err(|reason| MetaError::Random { reason })?;
        let kid = hex::encode(kid);
        tx.execute(
            "INSERT INTO signing_keys (kid, secret, created_at) VALUES (?1, ?2, ?3)",
            params![kid, secret, to_nanos(SystemTime::now(), "current time")?],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((kid, secret))
    }
}
