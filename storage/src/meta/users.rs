//! People: users with an argon2id password, a role per tenant they belong to, and an
//! optional TOTP second factor with one-time recovery codes.
//!
//! The store checks passwords itself (as it checks API keys), so a password hash never
//! leaves it. Checking costs one argon2id derivation (~19 MiB, tens of milliseconds) on
//! purpose: call it from `spawn_blocking`. An unknown user name costs the same as a
//! wrong password, so timing does not tell which names exist.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use rusqlite::{Connection, OptionalExtension as _, Row, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::keys::digests_match;
use super::{MetaError, MetaStore, Scope, from_nanos, to_nanos};

/// Shortest password accepted: NIST SP 800-63B's minimum for user-chosen secrets is 8;
/// an observability back end holds production data, so a little more.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted, in bytes: argon2 hashes any length, but a megabyte
/// "password" is a denial-of-service attempt, not a secret.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest user name in bytes.
pub const MAX_USERNAME_LEN: usize = 64;
/// Recovery codes issued when TOTP is enabled; each works once.
pub const RECOVERY_CODES: usize = 10;

/// What a user may do in one tenant, as Grafana's organisation roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Read telemetry, rules and alerts.
    Viewer,
    /// Also change rules, silences, notification routing and agent configurations.
    Editor,
    /// Also manage users, keys and the tenant.
    Admin,
}

impl Role {
    /// The stored and accepted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// The scopes a session with this role holds: the one permission model behind keys
    /// and people alike. A role never includes `ingest`: people query, agents send.
    pub fn scopes(self) -> Vec<Scope> {
        match self {
            Role::Viewer => vec![Scope::Query],
            Role::Editor => vec![Scope::Query, Scope::Edit],
            Role::Admin => vec![Scope::Admin],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = MetaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(MetaError::Invalid(format!(
                "role {other:?} (expected admin, editor or viewer)"
            ))),
        }
    }
}

/// A user as listed: never the password hash or the TOTP secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Stable random id (16 hex characters); names can be reused after deletion.
    pub user_id: String,
    /// The login name, unique ignoring case.
    pub username: String,
    /// A disabled user cannot log in, and its sessions stop working.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: SystemTime,
    /// When the password last changed.
    pub password_changed_at: SystemTime,
    /// Whether logins need a TOTP code (or a recovery code).
    pub totp_enabled: bool,
    /// The tenants the user belongs to, with the role in each, sorted by tenant.
    pub roles: Vec<(String, Role)>,
}

impl User {
    /// The user's role in `tenant`, if a member.
    pub fn role_in(&self, tenant: &str) -> Option<Role> {
        self.roles
            .iter()
            .find(|(t, _)| t == tenant)
            .map(|(_, role)| *role)
    }
}

/// Why a login's password check failed. Deliberately coarse, like [`super::KeyRejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRejection {
    /// Unknown user name or wrong password: the caller cannot tell which.
    #[error("invalid user name or password")]
    BadCredentials,
    /// The password was right but the user is disabled.
    #[error("user is disabled")]
    Disabled,
    /// The store failed (logged); not the client's fault.
    #[error("metadata store unavailable to check the login")]
    Unavailable,
}

const USER_COLUMNS: &str =
    "user_id, username, disabled, created_at, password_changed_at, totp_enabled";

fn hasher() -> Argon2<'static> {
    // argon2id v19, m = 19 MiB, t = 2, p = 1: OWASP's recommended minimum, and the
    // parameters are recorded in each hash, so raising them later needs no migration.
    Argon2::default()
}

/// A hash of a random password, verified against when the user name is unknown, so
/// that case costs one derivation too.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hasher()
            .hash_password(b"vantage-unknown-user-dummy-password")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Checks a new password against the length rules.
pub fn check_password(password: &str) -> Result<(), MetaError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(MetaError::Invalid(format!(
            "password: must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes long"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, MetaError> {
    check_password(password)?;
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| MetaError::Invalid(format!("password could not be hashed: {e}")))
}

fn password_matches(hash: &str, password: &str) -> bool {
    password.len() <= MAX_PASSWORD_LEN
        && hasher().verify_password(password.as_bytes(), hash).is_ok()
}

fn check_username(name: &str) -> Result<(), MetaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "user name {name:?}: must be 1 to {MAX_USERNAME_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-' and '@'"
        )))
    }
}

fn random_hex(bytes: usize) -> Result<String, MetaError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|reason| MetaError::Random { reason })?;
    Ok(hex::encode(buf))
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        user_id: row.get(0)?,
        username: row.get(1)?,
        disabled: row.get(2)?,
        created_at: from_nanos(row.get(3)?),
        password_changed_at: from_nanos(row.get(4)?),
        totp_enabled: row.get(5)?,
        roles: Vec::new(),
    })
}

fn load_roles(conn: &Connection, user: &mut User) -> rusqlite::Result<()> {
    let mut stmt = conn
        .prepare_cached("SELECT tenant, role FROM user_roles WHERE user_id = ?1 ORDER BY tenant")?;
    let rows = stmt.query_map([&user.user_id], |row| {
        let role: String = row.get(1)?;
        Ok((row.get::<_, String>(0)?, role))
    })?;
    user.roles.clear();
    for row in rows {
        let (tenant, role) = row?;
        // The CHECK constraint keeps other values out.
        if let Ok(role) = role.parse() {
            user.roles.push((tenant, role));
        }
    }
    Ok(())
}

fn load_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<User>> {
    let mut user = conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"),
            [user_id],
            user_from_row,
        )
        .optional()?;
    if let Some(user) = user.as_mut() {
        load_roles(conn, user)?;
    }
    Ok(user)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl MetaStore {
    /// Creates a user with a role in `tenant`. The user name must be free (ignoring
    /// case) and the tenant must exist.
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        tenant: &str,
        role: Role,
    ) -> Result<User, MetaError> {
        check_username(username)?;
        let hash = hash_password(password)?;
        let user_id = random_hex(8)?;
        let now = to_nanos(SystemTime::now(), "current time")?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if !super::tenant_exists(&tx, tenant).map_err(|e| self.err(e))? {
            return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
        }
        let taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1 COLLATE NOCASE)",
                [username],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))?;
        if taken {
            return Err(MetaError::Conflict(format!(
                "user {username:?} (names are unique ignoring case)"
            )));
        }
        tx.execute(
            "INSERT INTO users (user_id, username, password_hash, created_at, password_changed_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![user_id, username, hash, now],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO user_roles (user_id, tenant, role) VALUES (?1, ?2, ?3)",
            params![user_id, tenant, role.as_str()],
        )
        .map_err(|e| self.err(e))?;
        let user = load_user(&tx, &user_id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("user {user_id:?}")))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(user)
    }

    /// A user by id.
    pub fn get_user(&self, user_id: &str) -> Result<User, MetaError> {
        load_user(&self.conn(), user_id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("user {user_id:?}")))
    }

    /// A user by login name (ignoring case).
    pub fn find_user(&self, username: &str) -> Result<User, MetaError> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "SELECT user_id FROM users WHERE username = ?1 COLLATE NOCASE",
                [username],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let id = id.ok_or_else(|| MetaError::NotFound(format!("user {username:?}")))?;
        load_user(&conn, &id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("user {username:?}")))
    }

    /// Users with a role in `tenant` (all users for `None`), by name.
    pub fn list_users(&self, tenant: Option<&str>) -> Result<Vec<User>, MetaError> {
        let conn = self.conn();
        let ids: Vec<String> = {
            let (sql, args): (&str, Vec<&str>) = match tenant {
                Some(t) => (
                    "SELECT u.user_id FROM users u JOIN user_roles r ON r.user_id = u.user_id \
                     WHERE r.tenant = ?1 ORDER BY u.username COLLATE NOCASE",
                    vec![t],
                ),
                None => (
                    "SELECT user_id FROM users ORDER BY username COLLATE NOCASE",
                    vec![],
                ),
            };
            let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
            stmt.query_map(rusqlite::params_from_iter(args), |row| row.get(0))
                .map_err(|e| self.err(e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err(e))?
        };
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(user) = load_user(&conn, &id).map_err(|e| self.err(e))? {
                users.push(user);
            }
        }
        Ok(users)
    }

    /// Sets (or with `None` removes) the user's role in `tenant`.
    pub fn set_user_role(
        &self,
        user_id: &str,
        tenant: &str,
        role: Option<Role>,
    ) -> Result<User, MetaError> {
        let conn = self.conn();
        if load_user(&conn, user_id)
            .map_err(|e| self.err(e))?
            .is_none()
        {
            return Err(MetaError::NotFound(format!("user {user_id:?}")));
        }
        match role {
            Some(role) => {
                if !super::tenant_exists(&conn, tenant).map_err(|e| self.err(e))? {
                    return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
                }
                conn.execute(
                    "INSERT INTO user_roles (user_id, tenant, role) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (user_id, tenant) DO UPDATE SET role = excluded.role",
                    params![user_id, tenant, role.as_str()],
                )
                .map_err(|e| self.err(e))?;
            }
            None => {
                conn.execute(
                    "DELETE FROM user_roles WHERE user_id = ?1 AND tenant = ?2",
                    params![user_id, tenant],
                )
                .map_err(|e| self.err(e))?;
                // Sessions in a tenant the user left end with the membership.
                conn.execute(
                    "UPDATE sessions SET revoked_at = ?3 \
                     WHERE user_id = ?1 AND tenant = ?2 AND revoked_at IS NULL",
                    params![
                        user_id,
                        tenant,
                        to_nanos(SystemTime::now(), "current time")?
                    ],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        load_user(&conn, user_id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("user {user_id:?}")))
    }

    /// Disables or re-enables a user; disabling ends every session at once.
    pub fn set_user_disabled(&self, user_id: &str, disabled: bool) -> Result<User, MetaError> {
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE users SET disabled = ?2 WHERE user_id = ?1",
                params![user_id, disabled],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("user {user_id:?}")));
        }
        if disabled {
            revoke_sessions_of(&conn, user_id).map_err(|e| self.err(e))?;
        }
        load_user(&conn, user_id)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("user {user_id:?}")))
    }

    /// Deletes a user, their roles, sessions and recovery codes.
    pub fn delete_user(&self, user_id: &str) -> Result<(), MetaError> {
        let changed = self
            .conn()
            .execute("DELETE FROM users WHERE user_id = ?1", [user_id])
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("user {user_id:?}")));
        }
        Ok(())
    }

    /// Replaces a user's password and ends all of their sessions except `keep_session`
    /// (the one changing its own password stays logged in).
    pub fn set_password(
        &self,
        user_id: &str,
        password: &str,
        keep_session: Option<&str>,
    ) -> Result<(), MetaError> {
        let hash = hash_password(password)?;
        let now = to_nanos(SystemTime::now(), "current time")?;
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE user_id = ?1",
                params![user_id, hash, now],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!("user {user_id:?}")));
        }
        conn.execute(
            "UPDATE sessions SET revoked_at = ?2 \
             WHERE user_id = ?1 AND revoked_at IS NULL AND session_id IS NOT ?3",
            params![user_id, now, keep_session],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Checks a user name and password. Costs one argon2id derivation whether or not
    /// the user exists.
    pub fn verify_password(&self, username: &str, password: &str) -> Result<User, LoginRejection> {
        let found: Option<(String, String)> = {
            let conn = self.conn();
            conn.query_row(
                "SELECT user_id, password_hash FROM users WHERE username = ?1 COLLATE NOCASE",
                [username],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| {
                tracing::error!(error = %e, "metadata store failed while checking a login");
                LoginRejection::Unavailable
            })?
        };
        // The derivation runs without the connection lock: logins must not stall
        // every API key check behind them.
        let Some((user_id, hash)) = found else {
            let _ = password_matches(dummy_hash(), password);
            return Err(LoginRejection::BadCredentials);
        };
        if !password_matches(&hash, password) {
            return Err(LoginRejection::BadCredentials);
        }
        let user = self.get_user(&user_id).map_err(|e| {
            tracing::error!(error = %e, "metadata store failed while loading a user");
            LoginRejection::Unavailable
        })?;
        if user.disabled {
            return Err(LoginRejection::Disabled);
        }
        Ok(user)
    }

    /// Starts TOTP enrolment: stores a fresh secret (not yet required at login) and
    /// returns it for the authenticator app.
    pub fn totp_begin(&self, user_id: &str) -> Result<Vec<u8>, MetaError> {
        let mut secret = vec![0u8; 20];
        getrandom::fill(&mut secret).map_err(|reason| MetaError::Random { reason })?;
        let changed = self
            .conn()
            .execute(
                "UPDATE users SET totp_secret = ?2 WHERE user_id = ?1 AND totp_enabled = 0",
                params![user_id, secret],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::Conflict(format!(
                "TOTP for user {user_id:?} (disable it first, or the user does not exist)"
            )));
        }
        Ok(secret)
    }

    /// The user's TOTP secret and whether it is required at login.
    pub fn totp_secret(&self, user_id: &str) -> Result<Option<(Vec<u8>, bool)>, MetaError> {
        let row: Option<(Option<Vec<u8>>, bool)> = self
            .conn()
            .query_row(
                "SELECT totp_secret, totp_enabled FROM users WHERE user_id = ?1",
                [user_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let (secret, enabled) =
            row.ok_or_else(|| MetaError::NotFound(format!("user {user_id:?}")))?;
        Ok(secret.map(|s| (s, enabled)))
    }

    /// Makes TOTP required (after the caller checked a code against the pending
    /// secret) and returns fresh recovery codes, shown once.
    pub fn totp_enable(&self, user_id: &str) -> Result<Vec<String>, MetaError> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let hex = random_hex(5)?;
            codes.push(format!("{}-{}", &hex[..5], &hex[5..]));
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let changed = tx
            .execute(
                "UPDATE users SET totp_enabled = 1 WHERE user_id = ?1 AND totp_secret IS NOT NULL",
                [user_id],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(MetaError::NotFound(format!(
                "pending TOTP enrolment of user {user_id:?}"
            )));
        }
        tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])
            .map_err(|e| self.err(e))?;
        for code in &codes {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, code_sha256) VALUES (?1, ?2)",
                params![user_id, digest(code).as_slice()],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(codes)
    }

    /// Turns TOTP off and forgets the secret and the recovery codes.
    pub fn totp_disable(&self, user_id: &str) -> Result<(), MetaError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE users SET totp_enabled = 0, totp_secret = NULL WHERE user_id = ?1",
            [user_id],
        )
        .map_err(|e| self.err(e))?;
        conn.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Spends a recovery code: true once per code, false for an unknown or used one.
    pub fn use_recovery_code(&self, user_id: &str, code: &str) -> Result<bool, MetaError> {
        let presented = digest(code.trim());
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT code_sha256 FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL",
            )
            .map_err(|e| self.err(e))?;
        let stored: Vec<Vec<u8>> = stmt
            .query_map([user_id], |row| row.get(0))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        // Compare against every unused code in constant time each.
        let Some(hit) = stored.into_iter().find(|s| digests_match(s, &presented)) else {
            return Ok(false);
        };
        conn.execute(
            "UPDATE recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND code_sha256 = ?2",
            params![user_id, hit, to_nanos(SystemTime::now(), "current time")?],
        )
        .map_err(|e| self.err(e))?;
        Ok(true)
    }
}

pub(super) fn revoke_sessions_of(conn: &Connection, user_id: &str) -> rusqlite::Result<usize> {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    conn.execute(
        "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![user_id, now],
    )
}
