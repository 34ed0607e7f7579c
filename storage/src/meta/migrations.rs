//! Versioned schema migrations for the metadata database.
//!
//! The schema grows by appending to [`MIGRATIONS`]; users, agents, rules, configs and
//! the audit log will arrive the same way. The rules that keep every database on one
//! path from empty to current:
//!
//! - Versions are 1, 2, 3, … with no gaps, in order (a unit test checks this).
//! - A released migration is never edited or removed: databases in the field already
//!   ran it. Fix mistakes with a new migration.
//! - Each migration runs in its own `IMMEDIATE` transaction together with the insert of
//!   its row in `schema_migrations`, so a crash leaves either both or neither, and a
//!   second process opening the same file waits instead of applying it twice.
//! - `PRAGMA foreign_keys` cannot change inside a transaction, so a migration that
//!   rebuilds a table uses SQLite's documented create-copy-drop-rename procedure; the
//!   runner checks `PRAGMA foreign_key_check` before it commits.
//! - A database whose newest applied version is unknown to this build was written by a
//!   newer Vantage and is refused rather than used with a schema we do not understand.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tracing::info;

use super::{MetaError, to_nanos};

/// One step of the schema, applied at most once per database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Position in the sequence, starting at 1.
    pub(crate) version: u32,
    /// Short name, recorded next to the version so an operator can read the history.
    pub(crate) name: &'static str,
    /// The statements, run with `execute_batch` inside the migration's transaction.
    pub(crate) sql: &'static str,
}

/// Every migration this build knows, oldest first. Append only.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tenants_and_api_keys",
        sql: "
        CREATE TABLE tenants (
            name TEXT NOT NULL PRIMARY KEY,
            created_at INTEGER NOT NULL
        ) STRICT;
        -- Tenant names become directory names; refuse two that differ only in case so
        -- they cannot collide on a case-insensitive file system.
        CREATE UNIQUE INDEX tenants_name_nocase ON tenants (name COLLATE NOCASE);

        CREATE TABLE api_keys (
            key_id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE RESTRICT,
            name TEXT NOT NULL,
            -- Comma-separated scope names, e.g. 'ingest,query'.
            scopes TEXT NOT NULL,
            -- SHA-256 of the 32 secret bytes; the secret itself is never stored.
            secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            revoked_at INTEGER,
            last_used_at INTEGER
        ) STRICT;
        CREATE INDEX api_keys_tenant ON api_keys (tenant);
    ",
    },
    Migration {
        version: 2,
        name: "users_sessions_audit",
        sql: "
        CREATE TABLE users (
            user_id TEXT NOT NULL PRIMARY KEY,
            username TEXT NOT NULL,
            -- argon2id PHC string; the password itself is never stored.
            password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
            created_at INTEGER NOT NULL,
            password_changed_at INTEGER NOT NULL,
            -- The TOTP shared secret (RFC 6238) while enrolling or enrolled.
            totp_secret BLOB,
            totp_enabled INTEGER NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1))
        ) STRICT;
        CREATE UNIQUE INDEX users_username_nocase ON users (username COLLATE NOCASE);

        CREATE TABLE user_roles (
            user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE RESTRICT,
            role TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
            PRIMARY KEY (user_id, tenant)
        ) STRICT;
        CREATE INDEX user_roles_tenant ON user_roles (tenant);

        CREATE TABLE sessions (
            session_id TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE RESTRICT,
            -- SHA-256 of the current refresh secret, and of the one it replaced: a
            -- replaced secret presented again means it was stolen, and ends the session.
            refresh_sha256 BLOB NOT NULL CHECK (length(refresh_sha256) = 32),
            previous_sha256 BLOB,
            created_at INTEGER NOT NULL,
            refreshed_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER,
            remote_addr TEXT,
            user_agent TEXT
        ) STRICT;
        CREATE INDEX sessions_user ON sessions (user_id);

        CREATE TABLE recovery_codes (
            user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            code_sha256 BLOB NOT NULL CHECK (length(code_sha256) = 32),
            used_at INTEGER,
            PRIMARY KEY (user_id, code_sha256)
        ) STRICT;

        -- Keys that sign access tokens (HMAC-SHA256); the newest signs, all verify.
        CREATE TABLE signing_keys (
            kid TEXT NOT NULL PRIMARY KEY,
            secret BLOB NOT NULL CHECK (length(secret) = 32),
            created_at INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            tenant TEXT,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            outcome TEXT NOT NULL,
            remote_addr TEXT,
            detail TEXT
        ) STRICT;
        CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at);
    ",
    },
    Migration {
        version: 3,
        name: "agent_enrollment",
        sql: "
        CREATE TABLE enrollment_tokens (
            token_id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE RESTRICT,
            name TEXT NOT NULL,
            secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
            created_at INTEGER NOT NULL,
            expires_at INTEGER,
            max_uses INTEGER,
            uses INTEGER NOT NULL DEFAULT 0,
            revoked_at INTEGER
        ) STRICT;
        CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens (tenant);

        -- An enrolled agent and the ingest key it was issued; revoking the agent
        -- revokes the key.
        CREATE TABLE agents (
            agent_id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE RESTRICT,
            hostname TEXT NOT NULL,
            version TEXT NOT NULL,
            os TEXT NOT NULL,
            key_id TEXT NOT NULL REFERENCES api_keys (key_id) ON DELETE RESTRICT,
            enrolled_with TEXT NOT NULL,
            enrolled_at INTEGER NOT NULL,
            revoked_at INTEGER
        ) STRICT;
        CREATE INDEX agents_tenant ON agents (tenant);
        CREATE UNIQUE INDEX agents_key ON agents (key_id);
    ",
    },
    Migration {
        version: 4,
        name: "alert_rules_and_state",
        sql: "
        -- Rule groups managed through the API (files stay files), one row per group,
        -- kept as the validated YAML of the group.
        CREATE TABLE rule_groups (
            tenant TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            yaml TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, namespace, name)
        ) STRICT;

        -- The alerts of one alerting rule (JSON), so a restart neither resets `for`
        -- timers nor re-sends what was sent. group_key is `<file or namespace>;<group>`,
        -- rule_key the rule's name and expression.
        CREATE TABLE alert_state (
            tenant TEXT NOT NULL,
            group_key TEXT NOT NULL,
            rule_key TEXT NOT NULL,
            alerts TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, group_key, rule_key)
        ) STRICT;
    ",
    },
    Migration {
        version: 5,
        name: "alert_notifications",
        sql: "
        -- The notification log: one row per notification of one alert group to one
        -- integration of a receiver, written before the notification is sent. Its
        -- firing/resolved sets are what deduplication compares against; its status is
        -- the delivery log. No foreign key on tenant: with authentication off the
        -- tenants table is empty.
        CREATE TABLE alert_notifications (
            id INTEGER NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            group_key TEXT NOT NULL,
            receiver TEXT NOT NULL,
            -- '<type>/<index>' within the receiver, e.g. 'webhook/0'.
            integration TEXT NOT NULL,
            receiver_type TEXT NOT NULL,
            -- Sorted, comma-separated alert fingerprints.
            firing TEXT NOT NULL,
            resolved TEXT NOT NULL,
            -- What is sent (JSON), so a delivery interrupted by a restart resumes.
            content TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL,
            last_error TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX alert_notifications_key
            ON alert_notifications (tenant, group_key, receiver, integration, id);
        CREATE INDEX alert_notifications_status ON alert_notifications (status);

        CREATE TABLE alert_silences (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            -- JSON array of {name, value, isRegex, isEqual}, as Alertmanager's API.
            matchers TEXT NOT NULL,
            starts_at INTEGER NOT NULL,
            ends_at INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            comment TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX alert_silences_tenant ON alert_silences (tenant, ends_at);

        -- Alertmanager configurations set through the API, per tenant (YAML text).
        CREATE TABLE alertmanager_configs (
            tenant TEXT NOT NULL PRIMARY KEY,
            yaml TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 6,
        name: "encrypted_secrets",
        sql: "
        -- Named secrets per tenant, for ${secret:NAME} in agent configurations. Only
        -- ciphertext is stored (XChaCha20-Poly1305, encrypted by the collector), with
        -- the id of the key that encrypted it and its 24-byte nonce. No foreign key on
        -- tenant: with authentication off the tenants table is empty.
        CREATE TABLE secrets (
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            key_id TEXT NOT NULL,
            nonce BLOB NOT NULL CHECK (length(nonce) = 24),
            ciphertext BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            -- Who last set it: user:<name> or key:<id>.
            author TEXT NOT NULL,
            PRIMARY KEY (tenant, name)
        ) STRICT;
        CREATE INDEX secrets_key_id ON secrets (key_id);
        ",
    },
    Migration {
        version: 7,
        name: "agent_configs_and_opamp_agents",
        sql: "
        -- Named agent configuration documents per tenant, targeted by a label selector.
        -- No foreign key on tenant: with authentication off the tenants table is empty.
        CREATE TABLE config_docs (
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            selector TEXT NOT NULL,
            current_version INTEGER NOT NULL,
            -- A roll-out in progress: this version goes to rollout_percent % of agents.
            rollout_version INTEGER,
            rollout_percent INTEGER CHECK (rollout_percent BETWEEN 1 AND 99),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, name)
        ) STRICT;

        -- Immutable versions; a rollback appends a copy.
        CREATE TABLE config_versions (
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            body TEXT NOT NULL,
            author TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (tenant, name, version)
        ) STRICT;

        -- The last state each OpAMP agent reported; the instance uid is bound to the
        -- key that first presented it.
        CREATE TABLE opamp_agents (
            instance_uid TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            key_id TEXT NOT NULL,
            description TEXT NOT NULL,
            capabilities INTEGER NOT NULL,
            config_hash_sent TEXT NOT NULL,
            config_hash_applied TEXT NOT NULL,
            remote_status TEXT NOT NULL,
            remote_error TEXT NOT NULL,
            healthy INTEGER,
            health_status TEXT NOT NULL,
            effective_config TEXT NOT NULL,
            first_seen INTEGER NOT NULL,
            last_contact INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX opamp_agents_tenant ON opamp_agents (tenant);
        ",
    },
    Migration {
        version: 8,
        name: "alert_subscriptions",
        sql: "
        -- People's own subscriptions to a tenant's notification receivers: an e-mail
        -- to them whenever the receiver is notified (of alerts matching their extra
        -- matchers), unless muted. Their notifications go to alert_notifications with
        -- integration 'subscription/<id>'.
        CREATE TABLE alert_subscriptions (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            username TEXT NOT NULL,
            receiver TEXT NOT NULL,
            -- JSON array of matcher strings in Alertmanager's syntax.
            matchers TEXT NOT NULL,
            email TEXT NOT NULL,
            muted INTEGER NOT NULL CHECK (muted IN (0, 1)),
            -- With muted = 1: the end of the mute, or NULL for until unmuted.
            muted_until INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX alert_subscriptions_tenant ON alert_subscriptions (tenant, user_id);
    ",
    },
];

/// The schema version a fully migrated database has with this build.
pub(crate) const fn latest_version(migrations: &[Migration]) -> u32 {
    match migrations {
        [.., last] => last.version,
        [] => 0,
    }
}

/// The newest version recorded in `schema_migrations`, 0 for a fresh database.
pub(crate) fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )
}

/// Brings the database at `path` up to the last of `migrations`, one transaction per
/// migration, and returns the resulting version.
pub(crate) fn run(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<u32, MetaError> {
    let sqlite = |source| MetaError::sqlite(path, source);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER NOT NULL PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT;",
    )
    .map_err(sqlite)?;

    let supported = latest_version(migrations);
    for migration in migrations {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        // Read inside the write transaction: another process may have migrated the
        // file between our open and this point.
        let found = current_version(&tx).map_err(sqlite)?;
        if found > supported {
            return Err(MetaError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        let applied: Option<u32> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [migration.version],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite)?;
        if applied.is_some() {
            continue;
        }
        let failed = |reason: String| MetaError::Migration {
            path: path.to_path_buf(),
            version: migration.version,
            name: migration.name,
            reason,
        };
        tx.execute_batch(migration.sql)
            .map_err(|e| failed(e.to_string()))?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(table) = dangling {
            return Err(failed(format!(
                "rows in table {table} violate a foreign key"
            )));
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![
                migration.version,
                migration.name,
                to_nanos(SystemTime::now(), "applied_at")?
            ],
        )
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        info!(
            path = %path.display(),
            version = migration.version,
            name = migration.name,
            "applied metadata schema migration"
        );
    }

    // Also covers a database already at the newest version we know, where the loop
    // above skipped everything, and a build with no migrations at all.
    let found = current_version(conn).map_err(sqlite)?;
    if found > supported {
        return Err(MetaError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(found)
}
