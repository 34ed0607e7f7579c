//! The metadata store: the collector's tenants and API keys, in one embedded SQLite
//! database that later also holds users, agents, rules, configs and the audit log.
//!
//! Every collector request carries `Authorization: Bearer <api key>`; the collector
//! calls [`MetaStore::verify_api_key`], and the key decides the tenant and the scopes.
//! Keys are high-entropy random secrets, so only their SHA-256 digest is stored (as
//! GitHub does for tokens) and compared in constant time; the key text is returned once
//! at creation and never appears in a log or in `Debug` output.
//!
//! The schema changes only through the versioned migrations in `migrations`, each
//! applied once, in its own transaction, and recorded in `schema_migrations`. A
//! database written by a newer build is refused rather than misread.
//!
//! All calls are short and synchronous behind one mutex: call them from
//! `spawn_blocking` or at start-up, never directly on an async worker.

mod agents;
mod audit;
mod configs;
mod keys;
mod migrations;
mod notify;
mod rules;
mod secrets;
mod sessions;
mod subscriptions;
mod users;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension as _, Row, TransactionBehavior, params};
use tracing::{debug, error, info, warn};

pub use agents::{Agent, ENROLLMENT_PREFIX, EnrollRejection, EnrollmentToken};
pub use audit::{AuditEvent, AuditQuery, AuditRecord, MAX_AUDIT_LIMIT};
pub use configs::{
    ActiveConfig, ConfigDoc, ConfigVersion, MAX_CONFIG_BYTES, MAX_CONFIG_MESSAGE_CHARS,
    MAX_SELECTOR_LEN, OpampAgentRecord, Rollout, Selector, SelectorTerm, in_rollout, unified_diff,
    valid_config_name,
};
pub use keys::{KEY_ID_LEN, KEY_PREFIX, SECRET_LEN, Scope};
pub use sessions::{REFRESH_PREFIX, Session, SessionGrant, SessionRejection};
pub use users::{
    LoginRejection, MAX_PASSWORD_LEN, MAX_USERNAME_LEN, MIN_PASSWORD_LEN, RECOVERY_CODES, Role,
    User, check_password,
};

pub use notify::{
    DeliveryStatus, MAX_NOTIFICATION_LIST, NewNotification, NotificationRow, SilenceRow,
};
pub use rules::StoredRuleGroup;
pub use secrets::{SECRET_NONCE_LEN, SecretInfo, StoredSecret};
pub use subscriptions::{MAX_SUBSCRIPTIONS_PER_USER, Mute, SubscriptionRow};

use crate::logs::valid_tenant;

/// The tenant [`MetaStore::bootstrap`] creates on first start.
pub const DEFAULT_TENANT: &str = "default";
/// The name of the admin key [`MetaStore::bootstrap`] creates on first start.
pub const INITIAL_ADMIN_KEY_NAME: &str = "initial-admin";
/// Longest API key name in bytes: room for a description, short enough for a table.
pub const MAX_KEY_NAME_LEN: usize = 128;
/// How long a statement waits for another connection's write lock (an admin command
/// run against the same file) before failing: writes here take milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at drawing an unused key id; 48 random bits collide essentially never,
/// so more than one retry means something else is wrong.
const KEY_ID_ATTEMPTS: usize = 3;

const KEY_COLUMNS: &str =
    "key_id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at";

/// The schema version of a database fully migrated by this build; a database with a
/// higher one is refused.
pub const SCHEMA_VERSION: u32 = migrations::latest_version(migrations::MIGRATIONS);

/// Failures of the metadata store, naming the database, tenant or key involved.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Creating the database's directory, or a file written with it, failed.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed on the database file.
    #[error("metadata database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The named tenant or API key does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named tenant already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// An argument was refused; the message names it and says what is allowed.
    #[error("invalid {0}")]
    Invalid(String),
    /// The database was migrated by a newer Vantage; using it could corrupt it.
    #[error(
        "metadata database {path} has schema version {found}, newer than version {supported} \
         that this build supports; run the newer vantage or restore a backup"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The newest version recorded in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A schema migration failed; it was rolled back and not recorded.
    #[error("metadata database {path}: schema migration {version} ({name}) failed: {reason}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The operating system's random source failed while generating a key.
    #[error("operating system random number generator failed: {reason}")]
    Random {
        /// The cause.
        reason: getrandom::Error,
    },
}

impl MetaError {
    fn sqlite(path: &Path, source: rusqlite::Error) -> MetaError {
        MetaError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a presented API key was refused. Deliberately coarse: a wrong secret reads as
/// [`KeyRejection::Unknown`], so a caller cannot learn that a key id exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    /// Not of the form `vtg_<12 hex>_<64 hex>`.
    #[error("api key is malformed")]
    Malformed,
    /// No key with this id, or the secret does not match.
    #[error("api key is not known")]
    Unknown,
    /// The key was revoked.
    #[error("api key was revoked")]
    Revoked,
    /// The key's expiry time has passed.
    #[error("api key has expired")]
    Expired,
    /// The store could not be read; the key may be fine, so the caller should answer
    /// "unavailable" (503) rather than "unauthorized" (401). The cause is logged.
    #[error("metadata store unavailable to check the api key")]
    Unavailable,
}

/// A tenant: the unit of data isolation, named as its data directories are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant name, valid per [`valid_tenant`].
    pub name: String,
    /// When the tenant was created.
    pub created_at: SystemTime,
}

/// An API key as stored, without its secret or the secret's digest, so it can be
/// listed, logged and returned by admin endpoints freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The public part of the key text, 12 lowercase hex characters.
    pub key_id: String,
    /// The tenant whose data the key reads and writes.
    pub tenant: String,
    /// A human label, e.g. what the key is for.
    pub name: String,
    /// What the key allows; sorted and without duplicates.
    pub scopes: Vec<Scope>,
    /// When the key was created.
    pub created_at: SystemTime,
    /// When the key stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// The last use the collector recorded (at most about once a minute).
    pub last_used_at: Option<SystemTime>,
}

impl ApiKey {
    /// Whether the key may perform an operation needing `needed`; admin allows all.
    pub fn has_scope(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|held| held.allows(needed))
    }
}

/// The metadata database. One connection behind a mutex: every operation is a few
/// indexed statements, so contention is negligible and SQLite's single writer is
/// respected without a pool.
pub struct MetaStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MetaStore {
    /// Opens or creates the database file at `path` (creating its parent directory),
    /// switches it to WAL so verification reads never wait for a writer, turns foreign
    /// keys on and applies pending migrations. A database from a newer build is refused
    /// with [`MetaError::NewerSchema`].
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        Self::open_with(path, migrations::MIGRATIONS)
    }

    fn open_with(
        path: &Path,
        migrations: &[migrations::Migration],
    ) -> Result<MetaStore, MetaError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| MetaError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        restrict_permissions(path)?;
        let sqlite = |source| MetaError::sqlite(path, source);
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let journal_mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(sqlite)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            warn!(
                path = %path.display(),
                journal_mode = %journal_mode,
                "metadata database could not switch to wal journal mode"
            );
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;
        let version = migrations::run(&mut conn, path, migrations)?;
        info!(path = %path.display(), schema_version = version, "opened metadata store");
        Ok(MetaStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file, for messages and for the caller's own bookkeeping.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest migration recorded in the database.
    pub fn schema_version(&self) -> Result<u32, MetaError> {
        migrations::current_version(&self.conn()).map_err(|e| self.err(e))
    }

    /// Creates a tenant. Names follow [`valid_tenant`] because they become directory
    /// names; names differing only in case conflict, for case-insensitive file systems.
    pub fn create_tenant(&self, name: &str) -> Result<Tenant, MetaError> {
        check_tenant_name(name)?;
        let tenant = insert_tenant(&self.conn(), &self.path, name)?;
        info!(tenant = %name, "created tenant");
        Ok(tenant)
    }

    /// All tenants, by name.
    pub fn list_tenants(&self) -> Result<Vec<Tenant>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, created_at FROM tenants ORDER BY name")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |row| {
            Ok(Tenant {
                name: row.get(0)?,
                created_at: from_nanos(row.get(1)?),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Whether a tenant of exactly this name exists.
    pub fn tenant_exists(&self, name: &str) -> Result<bool, MetaError> {
        if !valid_tenant(name) {
            return Ok(false);
        }
        tenant_exists(&self.conn(), name).map_err(|e| self.err(e))
    }

    /// Creates a key for `tenant` and returns it with its full text
    /// `vtg_<key_id>_<secret>`, which is shown exactly once: only a digest is kept.
    /// Unknown tenant: [`MetaError::NotFound`]; no scopes: [`MetaError::Invalid`].
    pub fn create_api_key(
        &self,
        tenant: &str,
        name: &str,
        scopes: &[Scope],
        expires_at: Option<SystemTime>,
    ) -> Result<(ApiKey, String), MetaError> {
        check_tenant_name(tenant)?;
        let (key, text) =
            insert_api_key(&self.conn(), &self.path, tenant, name, scopes, expires_at)?;
        info!(
            tenant = %key.tenant,
            key_id = %key.key_id,
            name = %key.name,
            scopes = %keys::scopes_to_column(&key.scopes),
            "created api key"
        );
        Ok((key, text))
    }

    /// The keys of one tenant (unknown tenant: [`MetaError::NotFound`]) or of all, by
    /// tenant then creation time. Never includes a secret or its digest.
    pub fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, MetaError> {
        let conn = self.conn();
        let rows = match tenant {
            Some(tenant) => {
                if !valid_tenant(tenant)
                    || !tenant_exists(&conn, tenant).map_err(|e| self.err(e))?
                {
                    return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
                }
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 \
                         ORDER BY created_at, key_id"
                    ))
                    .map_err(|e| self.err(e))?;
                stmt.query_map([tenant], api_key_from_row)
                    .and_then(|rows| rows.collect())
            }
            None => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY tenant, created_at, key_id"
                    ))
                    .map_err(|e| self.err(e))?;
                stmt.query_map([], api_key_from_row)
                    .and_then(|rows| rows.collect())
            }
        };
        rows.map_err(|e| self.err(e))
    }

    /// Revokes a key now; it is refused from then on. Revoking a revoked key is a
    /// no-op that keeps the first revocation time. Unknown: [`MetaError::NotFound`].
    pub fn revoke_api_key(&self, key_id: &str) -> Result<(), MetaError> {
        let now = to_nanos(SystemTime::now(), "current time")?;
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                params![key_id, now],
            )
            .map_err(|e| self.err(e))?;
        if changed > 0 {
            info!(key_id = %key_id, "revoked api key");
            return Ok(());
        }
        if key_exists(&conn, key_id).map_err(|e| self.err(e))? {
            debug!(key_id = %key_id, "api key already revoked");
            Ok(())
        } else {
            Err(MetaError::NotFound(format!("api key {key_id:?}")))
        }
    }

    /// Verifies a presented key text at time `now`: parses it, loads the row by key
    /// id, compares the secret's SHA-256 with the stored digest in constant time, then
    /// checks revocation and expiry. The secret is checked first, so revoked or expired
    /// is only ever told to someone holding the real key.
    pub fn verify_api_key(&self, presented: &str, now: SystemTime) -> Result<ApiKey, KeyRejection> {
        let Some(parsed) = keys::parse(presented) else {
            debug!(len = presented.len(), "rejected malformed api key");
            return Err(KeyRejection::Malformed);
        };
        // The secret was hashed during parsing, before the lookup, so an unknown id and
        // a wrong secret cost about the same and timing does not reveal which ids exist.
        let found = {
            let conn = self.conn();
            load_key_with_digest(&conn, parsed.key_id)
        };
        let (key, stored_digest) = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                debug!(key_id = %parsed.key_id, "rejected api key with unknown id");
                return Err(KeyRejection::Unknown);
            }
            Err(e) => {
                error!(
                    path = %self.path.display(),
                    key_id = %parsed.key_id,
                    error = %e,
                    "api key lookup failed"
                );
                return Err(KeyRejection::Unavailable);
            }
        };
        if !keys::digests_match(&stored_digest, &parsed.secret_sha256) {
            debug!(key_id = %key.key_id, "rejected api key with wrong secret");
            return Err(KeyRejection::Unknown);
        }
        if key.revoked_at.is_some() {
            debug!(key_id = %key.key_id, tenant = %key.tenant, "rejected revoked api key");
            return Err(KeyRejection::Revoked);
        }
        if key.expires_at.is_some_and(|expires_at| now >= expires_at) {
            debug!(key_id = %key.key_id, tenant = %key.tenant, "rejected expired api key");
            return Err(KeyRejection::Expired);
        }
        Ok(key)
    }

    /// Records that a key was used at `at`. The collector calls this at most once a
    /// minute per key, so verification itself never writes. Never moves the time
    /// backwards. Unknown key: [`MetaError::NotFound`].
    pub fn touch_api_key(&self, key_id: &str, at: SystemTime) -> Result<(), MetaError> {
        let at = to_nanos(at, "last use time")?;
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE api_keys SET last_used_at = ?2 \
                 WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![key_id, at],
            )
            .map_err(|e| self.err(e))?;
        if changed > 0 || key_exists(&conn, key_id).map_err(|e| self.err(e))? {
            Ok(())
        } else {
            Err(MetaError::NotFound(format!("api key {key_id:?}")))
        }
    }

    /// First start: when there are no tenants yet, creates tenant
    /// [`DEFAULT_TENANT`] and an admin key named [`INITIAL_ADMIN_KEY_NAME`] in one
    /// transaction and returns the key text for the caller to write to a file. Every
    /// later call returns `None`, so a restart never mints a second admin key.
    pub fn bootstrap(&self) -> Result<Option<String>, MetaError> {
        self.bootstrap_with(|_| Ok(()))
    }

    /// [`MetaStore::bootstrap`], handing the new key to `persist` inside the transaction,
    /// before it commits: if `persist` fails (or the process dies before it returns), the
    /// store stays unbootstrapped and the next start tries again, so a key the operator
    /// never received can never be the only admin key.
    pub fn bootstrap_with(
        &self,
        persist: impl FnOnce(&str) -> Result<(), MetaError>,
    ) -> Result<Option<String>, MetaError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let tenants: i64 = tx
            .query_row("SELECT COUNT(*) FROM tenants", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        if tenants > 0 {
            debug!(tenants, "metadata store already bootstrapped");
            return Ok(None);
        }
        insert_tenant(&tx, &self.path, DEFAULT_TENANT)?;
        let (key, text) = insert_api_key(
            &tx,
            &self.path,
            DEFAULT_TENANT,
            INITIAL_ADMIN_KEY_NAME,
            &[Scope::Admin],
            None,
        )?;
        persist(&text)?;
        tx.commit().map_err(|e| self.err(e))?;
        info!(
            tenant = DEFAULT_TENANT,
            key_id = %key.key_id,
            "bootstrapped metadata store with an initial admin api key"
        );
        Ok(Some(text))
    }

    /// The connection. A panic while it was held cannot leave SQLite inconsistent (an
    /// open transaction rolls back when dropped), so a poisoned lock is recovered.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> MetaError {
        MetaError::sqlite(&self.path, source)
    }
}

/// The database holds password hashes, TOTP secrets and the key that signs access
/// tokens, so only its owner may read it: created 0600, and an existing file with wider
/// permissions is narrowed (SQLite gives its `-wal` and `-shm` files the database's mode).
fn restrict_permissions(path: &Path) -> Result<(), MetaError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let io = |source| MetaError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                    warn!(path = %path.display(), "metadata database was readable by others; narrowed to 0600");
                }
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", path.display()));
                    if std::fs::metadata(&side).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                        std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
                            .map_err(io)?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

fn check_tenant_name(name: &str) -> Result<(), MetaError> {
    if valid_tenant(name) {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "tenant name {name:?}: must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

fn check_key_name(name: &str) -> Result<(), MetaError> {
    if name.trim().is_empty() || name.len() > MAX_KEY_NAME_LEN || name.chars().any(char::is_control)
    {
        Err(MetaError::Invalid(format!(
            "api key name {name:?}: must be 1 to {MAX_KEY_NAME_LEN} bytes, not blank, \
             without control characters"
        )))
    } else {
        Ok(())
    }
}

fn insert_tenant(conn: &Connection, path: &Path, name: &str) -> Result<Tenant, MetaError> {
    let created_at = SystemTime::now();
    match conn.execute(
        "INSERT INTO tenants (name, created_at) VALUES (?1, ?2)",
        params![name, to_nanos(created_at, "current time")?],
    ) {
        Ok(_) => Ok(Tenant {
            name: name.to_owned(),
            created_at,
        }),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Err(
            MetaError::Conflict(format!("tenant {name:?} (names are unique ignoring case)")),
        ),
        Err(e) => Err(MetaError::sqlite(path, e)),
    }
}

pub(crate) fn insert_api_key(
    conn: &Connection,
    path: &Path,
    tenant: &str,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<SystemTime>,
) -> Result<(ApiKey, String), MetaError> {
    check_key_name(name)?;
    let scopes = keys::normalize_scopes(scopes);
    if scopes.is_empty() {
        return Err(MetaError::Invalid(format!(
            "scopes for api key {name:?}: at least one is needed"
        )));
    }
    let expires_nanos = expires_at.map(|t| to_nanos(t, "expiry time")).transpose()?;
    if !tenant_exists(conn, tenant).map_err(|e| MetaError::sqlite(path, e))? {
        return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
    }
    let created_at = SystemTime::now();
    let created_nanos = to_nanos(created_at, "current time")?;
    let scopes_column = keys::scopes_to_column(&scopes);
    for _ in 0..KEY_ID_ATTEMPTS {
        let new = keys::NewKey::generate()?;
        let inserted = conn.execute(
            "INSERT INTO api_keys \
             (key_id, tenant, name, scopes, secret_sha256, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.key_id,
                tenant,
                name,
                scopes_column,
                new.secret_sha256.as_slice(),
                created_nanos,
                expires_nanos
            ],
        );
        match inserted {
            Ok(_) => {
                let key = ApiKey {
                    key_id: new.key_id,
                    tenant: tenant.to_owned(),
                    name: name.to_owned(),
                    scopes,
                    created_at,
                    expires_at,
                    revoked_at: None,
                    last_used_at: None,
                };
                return Ok((key, new.text));
            }
            Err(e)
                if e.sqlite_extended_error_code()
                    == Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
            {
                warn!(key_id = %new.key_id, "api key id collision, drawing another");
            }
            Err(e)
                if e.sqlite_extended_error_code()
                    == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) =>
            {
                return Err(MetaError::NotFound(format!("tenant {tenant:?}")));
            }
            Err(e) => return Err(MetaError::sqlite(path, e)),
        }
    }
    Err(MetaError::Conflict(format!(
        "api key id ({KEY_ID_ATTEMPTS} random ids in a row)"
    )))
}

pub(crate) fn tenant_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE name = ?1)",
        [name],
        |row| row.get(0),
    )
}

fn key_exists(conn: &Connection, key_id: &str) -> rusqlite::Result<bool> {
    if !keys::valid_key_id(key_id) {
        return Ok(false);
    }
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_id = ?1)",
        [key_id],
        |row| row.get(0),
    )
}

fn load_key_with_digest(
    conn: &Connection,
    key_id: &str,
) -> rusqlite::Result<Option<(ApiKey, Vec<u8>)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = ?1"
    ))?;
    stmt.query_row([key_id], |row| Ok((api_key_from_row(row)?, row.get(8)?)))
        .optional()
}

fn api_key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes_column: String = row.get(3)?;
    let scopes = keys::scopes_from_column(&scopes_column).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            Type::Text,
            format!("unknown scope in {scopes_column:?}").into(),
        )
    })?;
    Ok(ApiKey {
        key_id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        scopes,
        created_at: from_nanos(row.get(4)?),
        expires_at: row.get::<_, Option<i64>>(5)?.map(from_nanos),
        revoked_at: row.get::<_, Option<i64>>(6)?.map(from_nanos),
        last_used_at: row.get::<_, Option<i64>>(7)?.map(from_nanos),
    })
}

/// Unix nanoseconds, the stored form of every time; `what` names the value in the
/// error for times outside the years 1677 to 2262 that an i64 covers.
pub(crate) fn to_nanos(t: SystemTime, what: &str) -> Result<i64, MetaError> {
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        Err(before) => i64::try_from(before.duration().as_nanos()).ok().map(|n| -n),
    };
    nanos.ok_or_else(|| {
        MetaError::Invalid(format!(
            "{what} {t:?}: must lie between the years 1677 and 2262"
        ))
    })
}

pub(crate) fn from_nanos(nanos: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod users_tests;
