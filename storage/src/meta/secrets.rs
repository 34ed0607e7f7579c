//! Named secrets per tenant, stored as ciphertext only. The store never sees a key or a
//! plaintext: the collector encrypts (XChaCha20-Poly1305, associated data binding tenant,
//! name and key id) and hands over the nonce, the ciphertext and the id of the key it
//! used, so a stolen database file reveals names and times, never values.

use std::time::SystemTime;

use rusqlite::{OptionalExtension as _, params};

use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Length of the XChaCha20 nonce every stored value carries.
pub const SECRET_NONCE_LEN: usize = 24;

/// A secret as listed: everything but the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretInfo {
    /// The tenant owning it.
    pub tenant: String,
    /// Its name, as referenced by `${secret:NAME}`.
    pub name: String,
    /// Id of the key that encrypted the current value.
    pub key_id: String,
    /// When it was first set.
    pub created_at: SystemTime,
    /// When its value last changed (or was re-encrypted by a rotation).
    pub updated_at: SystemTime,
    /// Who last set it: `user:<name>` or `key:<id>`.
    pub author: String,
}

/// A secret with its ciphertext, for decryption and re-encryption.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Names, times, key id.
    pub info: SecretInfo,
    /// The 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("info", &self.info)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "tenant, name, key_id, created_at, updated_at, author, nonce, ciphertext";

fn stored_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSecret> {
    Ok(StoredSecret {
        info: SecretInfo {
            tenant: row.get(0)?,
            name: row.get(1)?,
            key_id: row.get(2)?,
            created_at: from_nanos(row.get(3)?),
            updated_at: from_nanos(row.get(4)?),
            author: row.get(5)?,
        },
        nonce: row.get(6)?,
        ciphertext: row.get(7)?,
    })
}

fn check_nonce(nonce: &[u8]) -> Result<(), MetaError> {
    if nonce.len() == SECRET_NONCE_LEN {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "secret nonce: must be {SECRET_NONCE_LEN} bytes, got {}",
            nonce.len()
        )))
    }
}

impl MetaStore {
    /// Creates or replaces a secret's value (ciphertext); the creation time is kept on
    /// replacement. Returns the stored row's description.
    pub fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        author: &str,
    ) -> Result<SecretInfo, MetaError> {
        check_nonce(nonce)?;
        let now = to_nanos(SystemTime::now(), "current time")?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO secrets (tenant, name, key_id, nonce, ciphertext, created_at, updated_at, author) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) \
             ON CONFLICT (tenant, name) DO UPDATE SET key_id = excluded.key_id, \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at, author = excluded.author",
            params![tenant, name, key_id, nonce, ciphertext, now, author],
        )
        .map_err(|e| self.err(e))?;
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM secrets WHERE tenant = ?1 AND name = ?2"),
            params![tenant, name],
            stored_from_row,
        )
        .map(|s| s.info)
        .map_err(|e| self.err(e))
    }

    /// One secret with its ciphertext, if it exists.
    pub fn get_secret(&self, tenant: &str, name: &str) -> Result<Option<StoredSecret>, MetaError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM secrets WHERE tenant = ?1 AND name = ?2"),
                params![tenant, name],
                stored_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The secrets of one tenant (or of all), by tenant and name, without ciphertext.
    pub fn list_secrets(&self, tenant: Option<&str>) -> Result<Vec<SecretInfo>, MetaError> {
        Ok(self
            .secrets_with_values(tenant)?
            .into_iter()
            .map(|s| s.info)
            .collect())
    }

    /// The secrets of one tenant (or of all) with their ciphertext: what a key rotation
    /// re-encrypts.
    pub fn secrets_with_values(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredSecret>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM secrets WHERE ?1 IS NULL OR tenant = ?1 \
                 ORDER BY tenant, name"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![tenant], stored_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Deletes a secret; `false` when there was none.
    pub fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, MetaError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Replaces a value's ciphertext with one under another key, only if the value is
    /// still the one that was read (`old_nonce`): a value set meanwhile is newer and is
    /// left alone. Returns whether the row was replaced. The author is kept: a rotation
    /// changes no value.
    pub fn reencrypt_secret(
        &self,
        tenant: &str,
        name: &str,
        old_nonce: &[u8],
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, MetaError> {
        check_nonce(nonce)?;
        let now = to_nanos(SystemTime::now(), "current time")?;
        let n = self
            .conn()
            .execute(
                "UPDATE secrets SET key_id = ?4, nonce = ?5, ciphertext = ?6, updated_at = ?7 \
                 WHERE tenant = ?1 AND name = ?2 AND nonce = ?3",
                params![tenant, name, old_nonce, key_id, nonce, ciphertext, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn put_replace_list_delete() {
        let (_dir, s) = store();
        let first = s
            .put_secret("a", "db", "k1", &[1; 24], b"ct1", "key:x")
            .unwrap();
        let second = s
            .put_secret("a", "db", "k2", &[2; 24], b"ct2", "user:bob")
            .unwrap();
        assert_eq!(second.created_at, first.created_at, "creation time kept");
        assert_eq!(second.key_id, "k2");
        assert_eq!(second.author, "user:bob");
        s.put_secret("b", "db", "k1", &[3; 24], b"ct3", "key:y")
            .unwrap();
        assert_eq!(s.list_secrets(Some("a")).unwrap().len(), 1);
        assert_eq!(s.list_secrets(None).unwrap().len(), 2);
        let got = s.get_secret("a", "db").unwrap().unwrap();
        assert_eq!(got.ciphertext, b"ct2");
        assert!(!format!("{got:?}").contains("ct2"));
        assert!(s.delete_secret("a", "db").unwrap());
        assert!(!s.delete_secret("a", "db").unwrap());
        assert!(s.get_secret("a", "db").unwrap().is_none());
        assert!(
            s.get_secret("b", "db").unwrap().is_some(),
            "other tenant kept"
        );
    }

    #[test]
    fn reencrypt_only_the_value_that_was_read() {
        let (_dir, s) = store();
        s.put_secret("a", "x", "k1", &[1; 24], b"old", "key:x")
            .unwrap();
        assert!(
            !s.reencrypt_secret("a", "x", &[9; 24], "k2", &[2; 24], b"new")
                .unwrap(),
            "a stale read does not overwrite"
        );
        assert!(
            s.reencrypt_secret("a", "x", &[1; 24], "k2", &[2; 24], b"new")
                .unwrap()
        );
        let got = s.get_secret("a", "x").unwrap().unwrap();
        assert_eq!(
            (got.info.key_id.as_str(), got.ciphertext.as_slice()),
            ("k2", &b"new"[..])
        );
    }

    #[test]
    fn a_nonce_of_the_wrong_length_is_refused() {
        let (_dir, s) = store();
        assert!(matches!(
            s.put_secret("a", "x", "k", &[1; 12], b"c", "a"),
            Err(MetaError::Invalid(_))
        ));
    }
}
