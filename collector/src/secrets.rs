//! Secrets for agent configurations: named values per tenant, referenced as
//! `${secret:NAME}` in a configuration and replaced by [`Secrets::expand`] only when the
//! configuration is sent to an agent of that tenant.
//!
//! Values are encrypted at rest with XChaCha20-Poly1305: a random 24-byte nonce per
//! value, and associated data binding tenant, name and key id, so a ciphertext copied to
//! another tenant's or name's row does not decrypt. The 32-byte key comes from
//! `secrets.key_file`, or `VANTAGE_SECRETS__KEY` (base64); without either, the first start
//! generates `<data-dir>/secrets.key` (mode 0600). A key beside the database protects
//! against a leaked database or backup of it alone, not against someone who can read the
//! data directory: keep the key file elsewhere for that. Rotation: the old key goes to
//! `secrets.previous_key_files` (decrypt only), [`Secrets::rotate`] re-encrypts every
//! value under the current key, and then the old key can go.
//!
//! A value never reaches a log, an error, `Debug` output or an API response: it lives
//! in a [`SecretValue`], whose `Debug` prints `<redacted>`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use vantage_storage::meta::{MetaError, MetaStore, SecretInfo, StoredSecret};

/// Name of the generated key file in the data directory.
pub const KEY_FILE_NAME: &str = "secrets.key";
/// Key length of XChaCha20-Poly1305.
pub const KEY_LEN: usize = 32;
/// Nonce length of XChaCha20: long enough to draw at random without fear of reuse.
pub const NONCE_LEN: usize = 24;
/// Longest secret name: a readable identifier, not a payload.
pub const MAX_NAME_LEN: usize = 128;
/// Largest value: a certificate chain or a service-account JSON fits; a file does not.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// What every redacted value reads as.
pub const REDACTED: &str = "<redacted>";
/// Domain separation of the key id digest and of the associated data.
const KEY_ID_CONTEXT: &[u8] = b"vantage-secrets-key-id-v1\0";
const AAD_CONTEXT: &[u8] = b"vantage-secret-v1\0";

/// A secret's plaintext. `Debug` and `Display` print `<redacted>`; the text is reached
/// only through [`SecretValue::expose`], so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a plaintext.
    pub fn new(text: String) -> Self {
        SecretValue(text)
    }

    /// The plaintext, for the one place that needs it (the configuration sent to an agent).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// What went wrong with a secret; never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The name breaks the naming rule.
    #[error(
        "secret name {0:?}: must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '_', '-' and '.', starting with a letter or '_'"
    )]
    InvalidName(String),
    /// The value is empty, too large or has a NUL byte.
    #[error("secret value: {0}")]
    InvalidValue(String),
    /// A reference names a secret the tenant does not have.
    #[error("secret {name:?} is not set for tenant {tenant:?}")]
    NotFound {
        /// The tenant.
        tenant: String,
        /// The missing name.
        name: String,
    },
    /// A `${secret:` without its closing brace.
    #[error("unterminated ${{secret:...}} reference at byte {0}")]
    Unterminated(usize),
    /// The value was encrypted with a key that is not configured.
    #[error(
        "secret {name:?} of tenant {tenant:?} is encrypted with key {key_id}, which is neither secrets.key_file nor one of secrets.previous_key_files"
    )]
    UnknownKey {
        /// The tenant.
        tenant: String,
        /// The secret.
        name: String,
        /// The key id stored with it.
        key_id: String,
    },
    /// Authentication of the ciphertext failed: the key is wrong or the row was altered
    /// (or copied from another tenant or name).
    #[error(
        "secret {name:?} of tenant {tenant:?} does not decrypt with key {key_id}: wrong key, or the stored value was altered"
    )]
    Decrypt {
        /// The tenant.
        tenant: String,
        /// The secret.
        name: String,
        /// The key id used.
        key_id: String,
    },
    /// A key file or the key variable is unusable.
    #[error("secrets key {source_name}: {reason}")]
    Key {
        /// The file, or `VANTAGE_SECRETS__KEY`.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] MetaError),
}

/// Where the key comes from, as configured (`secrets:` in the file).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretsConfig {
    /// The current key's file (32 raw bytes, or their base64).
    pub key_file: Option<PathBuf>,
    /// The current key itself, base64 (from `VANTAGE_SECRETS__KEY`).
    pub key: Option<SecretValue>,
    /// Older keys, used only to decrypt values not yet rotated.
    pub previous_key_files: Vec<PathBuf>,
}

impl fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("key_file", &self.key_file)
            .field("key", &self.key.as_ref().map(|_| REDACTED))
            .field("previous_key_files", &self.previous_key_files)
            .finish()
    }
}

impl SecretsConfig {
    /// Checks the `secrets:` section, appending problems to `errors` (config loading
    /// reports all problems at once).
    pub fn validate(
        key_file: Option<PathBuf>,
        key: Option<String>,
        previous_key_files: Option<serde_yaml_ng::Value>,
        errors: &mut Vec<String>,
    ) -> SecretsConfig {
        use serde_yaml_ng::Value;
        let previous_key_files = match previous_key_files {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            Some(Value::Sequence(items)) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(PathBuf::from(s)),
                    other => {
                        errors.push(format!(
                            "secrets.previous_key_files: {other:?} is not a file path"
                        ));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                errors.push(format!(
                    "secrets.previous_key_files: expected a list of files, got {other:?}"
                ));
                Vec::new()
            }
        };
        if key_file.is_some() && key.is_some() {
            errors.push(
                "secrets: set secrets.key_file or VANTAGE_SECRETS__KEY, not both".to_string(),
            );
        }
        if let Some(k) = &key
            && let Err(reason) = decode_key(k.trim().as_bytes())
        {
            errors.push(format!("secrets.key: {reason}"));
        }
        SecretsConfig {
            key_file,
            key: key.map(SecretValue::new),
            previous_key_files,
        }
    }
}

/// `secrets.without_tls`: whether an agent whose OpAMP connection has no TLS may be sent
/// a configuration with its `${secret:NAME}` values filled in. Without TLS the value
/// would cross the network in clear text, so by default only an agent on this host
/// (a loopback peer) gets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithoutTls {
    /// Only agents connecting from a loopback address.
    #[default]
    Loopback,
    /// No agent: secrets travel only over TLS.
    Refuse,
    /// Every agent: TLS ends at a proxy in front of the collector.
    Allow,
}

impl WithoutTls {
    /// The name in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            WithoutTls::Loopback => "loopback",
            WithoutTls::Refuse => "refuse",
            WithoutTls::Allow => "allow",
        }
    }

    /// May secrets be sent to `peer` over this connection?
    pub fn permits(self, tls: bool, peer: Option<std::net::IpAddr>) -> bool {
        tls || match self {
            WithoutTls::Allow => true,
            WithoutTls::Refuse => false,
            WithoutTls::Loopback => peer.is_some_and(|ip| match ip {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
                std::net::IpAddr::V4(v4) => v4.is_loopback(),
            }),
        }
    }
}

/// One 32-byte key and its id (a digest of it: it names the key in the database and the
/// API without revealing it).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut h = Sha256::new();
        h.update(KEY_ID_CONTEXT);
        h.update(bytes);
        let digest = h.finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// The key's id (16 hex characters).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// 32 raw bytes, or their base64 (standard alphabet, padding optional, whitespace
/// around it ignored).
fn decode_key(raw: &[u8]) -> Result<[u8; KEY_LEN], String> {
    if raw.len() == KEY_LEN {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(raw);
        return Ok(key);
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("must be {KEY_LEN} bytes, or their base64"))?
        .trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| format!("must be {KEY_LEN} bytes, or their base64"))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes; {KEY_LEN} are needed", bytes.len()))
}

fn read_key_file(path: &Path) -> Result<MasterKey, SecretError> {
    let err = |reason: String| SecretError::Key {
        source_name: path.display().to_string(),
        reason,
    };
    let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "secrets key file is readable by group or others; chmod 600 it");
        }
    }
    decode_key(&raw)
        .map(|k| MasterKey::from_bytes(&k))
        .map_err(err)
}

/// Creates `path` with a new random key (base64, one line), mode 0600; never
/// overwrites.
fn generate_key_file(path: &Path) -> Result<(), SecretError> {
    let err = |reason: String| SecretError::Key {
        source_name: path.display().to_string(),
        reason,
    };
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| err(format!("random number generator: {e}")))?;
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    use std::io::Write as _;
    let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The current key (encrypts and decrypts) and the previous ones (decrypt only).
#[derive(Clone, Debug)]
pub struct KeyRing {
    current: MasterKey,
    previous: Vec<MasterKey>,
    /// Where the current key came from, for the log and the status page.
    pub source: String,
}

impl KeyRing {
    /// Loads the keys as configured; without a configured key, uses (and on first start
    /// creates) `<data_dir>/secrets.key`.
    pub fn load(config: &SecretsConfig, data_dir: &Path) -> Result<KeyRing, SecretError> {
        let (current, source) = if let Some(text) = &config.key {
            let key =
                decode_key(text.expose().trim().as_bytes()).map_err(|reason| SecretError::Key {
                    source_name: "VANTAGE_SECRETS__KEY".into(),
                    reason,
                })?;
            (
                MasterKey::from_bytes(&key),
                "VANTAGE_SECRETS__KEY".to_string(),
            )
        } else if let Some(path) = &config.key_file {
            (read_key_file(path)?, path.display().to_string())
        } else {
            let path = data_dir.join(KEY_FILE_NAME);
            if !path.exists() {
                generate_key_file(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    "generated a secrets key beside the data; it protects a copied database, not a copied data directory: move it elsewhere and set secrets.key_file"
                );
            }
            (read_key_file(&path)?, path.display().to_string())
        };
        let mut previous = Vec::new();
        for path in &config.previous_key_files {
            let key = read_key_file(path)?;
            if key.id != current.id && !previous.iter().any(|p: &MasterKey| p.id == key.id) {
                previous.push(key);
            }
        }
        tracing::info!(key_id = %current.id, source = %source, previous_keys = previous.len(), "secrets key loaded");
        Ok(KeyRing {
            current,
            previous,
            source,
        })
    }

    /// A ring of given keys (tests, tools).
    pub fn from_keys(current: MasterKey, previous: Vec<MasterKey>) -> KeyRing {
        KeyRing {
            current,
            previous,
            source: "memory".into(),
        }
    }

    /// The id of the key new values are encrypted with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

fn aad(tenant: &str, name: &str, key_id: &str) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(AAD_CONTEXT.len() + tenant.len() + name.len() + key_id.len() + 2);
    v.extend_from_slice(AAD_CONTEXT);
    v.extend_from_slice(tenant.as_bytes());
    v.push(0);
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(key_id.as_bytes());
    v
}

/// A sealed value: what the store keeps.
struct Sealed {
    key_id: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

fn seal(
    key: &MasterKey,
    tenant: &str,
    name: &str,
    value: &SecretValue,
) -> Result<Sealed, SecretError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SecretError::Key {
        source_name: key.id.clone(),
        reason: format!("random number generator: {e}"),
    })?;
    let ciphertext = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: value.expose().as_bytes(),
                aad: &aad(tenant, name, &key.id),
            },
        )
        .map_err(|_| SecretError::Key {
            source_name: key.id.clone(),
            reason: "encryption failed".into(),
        })?;
    Ok(Sealed {
        key_id: key.id.clone(),
        nonce,
        ciphertext,
    })
}

fn open(ring: &KeyRing, stored: &StoredSecret) -> Result<SecretValue, SecretError> {
    let info = &stored.info;
    let key = ring
        .find(&info.key_id)
        .ok_or_else(|| SecretError::UnknownKey {
            tenant: info.tenant.clone(),
            name: info.name.clone(),
            key_id: info.key_id.clone(),
        })?;
    let decrypt_err = || SecretError::Decrypt {
        tenant: info.tenant.clone(),
        name: info.name.clone(),
        key_id: info.key_id.clone(),
    };
    if stored.nonce.len() != NONCE_LEN {
        return Err(decrypt_err());
    }
    let plain = key
        .cipher
        .decrypt(
            XNonce::from_slice(&stored.nonce),
            Payload {
                msg: &stored.ciphertext,
                aad: &aad(&info.tenant, &info.name, &info.key_id),
            },
        )
        .map_err(|_| decrypt_err())?;
    String::from_utf8(plain)
        .map(SecretValue::new)
        .map_err(|_| decrypt_err())
}

/// Whether `name` may name a secret: an identifier (`db_password`, `smtp.pass`,
/// `token-2`), so it reads unambiguously inside `${secret:...}`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn check_name(name: &str) -> Result<(), SecretError> {
    if valid_name(name) {
        Ok(())
    } else {
        // The refused name is echoed shortened: it is not a value, but it is input.
        Err(SecretError::InvalidName(
            name.chars().take(MAX_NAME_LEN).collect(),
        ))
    }
}

fn check_value(value: &SecretValue) -> Result<(), SecretError> {
    let v = value.expose();
    if v.is_empty() {
        return Err(SecretError::InvalidValue("must not be empty".into()));
    }
    if v.len() > MAX_VALUE_BYTES {
        return Err(SecretError::InvalidValue(format!(
            "{} bytes is more than the limit of {MAX_VALUE_BYTES}",
            v.len()
        )));
    }
    if v.contains('\0') {
        return Err(SecretError::InvalidValue(
            "must not contain a NUL byte".into(),
        ));
    }
    Ok(())
}

/// What a rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// The key everything is now under.
    pub key_id: String,
    /// Values re-encrypted.
    pub reencrypted: usize,
    /// Values already under the current key.
    pub unchanged: usize,
    /// Values set while the rotation ran (already under the current key).
    pub skipped: usize,
    /// Values no configured key decrypts (named in the log; they stay as they are).
    pub failed: usize,
}

/// Decrypted values, and a counter of changes so that a read that began before a
/// change does not put the old value back.
#[derive(Default)]
struct ValueCache {
    generation: u64,
    values: HashMap<(String, String), SecretValue>,
}

/// The secrets service: stores, lists, deletes and expands secrets of every tenant.
pub struct Secrets {
    store: Arc<MetaStore>,
    keys: RwLock<Arc<KeyRing>>,
    /// Decrypted values by (tenant, name), dropped on every change: expanding a
    /// configuration for many agents decrypts each secret once.
    cache: Mutex<ValueCache>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("key_id", &self.keys().current_id())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The service over `store` with `keys`.
    pub fn new(store: Arc<MetaStore>, keys: KeyRing) -> Self {
        Secrets {
            store,
            keys: RwLock::new(Arc::new(keys)),
            cache: Mutex::new(ValueCache::default()),
        }
    }

    /// Loads the keys per `config` (see [`KeyRing::load`]) and builds the service.
    pub fn open(
        store: Arc<MetaStore>,
        config: &SecretsConfig,
        data_dir: &Path,
    ) -> Result<Self, SecretError> {
        Ok(Self::new(store, KeyRing::load(config, data_dir)?))
    }

    /// The keys in use.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the keys (a configuration reload); decrypted values are forgotten.
    pub fn set_keys(&self, keys: KeyRing) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.invalidate();
    }

    fn invalidate(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.generation += 1;
        cache.values.clear();
    }

    /// Sets a secret (creates or replaces), encrypted under the current key. Blocking
    /// (SQLite): call from `spawn_blocking`.
    pub fn put(
        &self,
        tenant: &str,
        name: &str,
        value: &SecretValue,
        author: &str,
    ) -> Result<SecretInfo, SecretError> {
        check_name(name)?;
        check_value(value)?;
        let keys = self.keys();
        let sealed = seal(&keys.current, tenant, name, value)?;
        let info = self.store.put_secret(
            tenant,
            name,
            &sealed.key_id,
            &sealed.nonce,
            &sealed.ciphertext,
            author,
        )?;
        self.invalidate();
        tracing::info!(tenant = %tenant, name = %name, key_id = %sealed.key_id, "secret set");
        Ok(info)
    }

    /// The tenant's secrets (names, times, author, key id; never values).
    pub fn list(&self, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self.store.list_secrets(Some(tenant))?)
    }

    /// Deletes a secret; [`SecretError::NotFound`] when there is none.
    pub fn delete(&self, tenant: &str, name: &str) -> Result<(), SecretError> {
        check_name(name)?;
        if !self.store.delete_secret(tenant, name)? {
            return Err(SecretError::NotFound {
                tenant: tenant.into(),
                name: name.into(),
            });
        }
        self.invalidate();
        tracing::info!(tenant = %tenant, name = %name, "secret deleted");
        Ok(())
    }

    /// One decrypted value (cached). Blocking on a cache miss.
    pub fn get(&self, tenant: &str, name: &str) -> Result<SecretValue, SecretError> {
        check_name(name)?;
        let cache_key = (tenant.to_string(), name.to_string());
        let generation = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = cache.values.get(&cache_key) {
                return Ok(v.clone());
            }
            cache.generation
        };
        let stored = self
            .store
            .get_secret(tenant, name)?
            .ok_or_else(|| SecretError::NotFound {
                tenant: tenant.into(),
                name: name.into(),
            })?;
        let value = open(&self.keys(), &stored)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // A value read before a change must not outlive it.
        if cache.generation == generation {
            cache.values.insert(cache_key, value.clone());
        }
        Ok(value)
    }

    /// Replaces every `${secret:NAME}` in `text` with the tenant's value of NAME;
    /// `$${secret:NAME}` stands for the literal `${secret:NAME}`. Anything else (such
    /// as the agent's own `${env:NAME}`) is left alone. A missing name is an error
    /// naming it. Values are inserted as they are, never expanded again. Blocking on a
    /// cache miss (SQLite).
    pub fn expand(&self, tenant: &str, text: &str) -> Result<String, SecretError> {
        const OPEN: &str = "${secret:";
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut offset = 0;
        while let Some(at) = rest.find(OPEN) {
            let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
            if escaped {
                // `$${secret:` -> the literal `${secret:`; the name is copied as is.
                out.push_str(&rest[..at - 1]);
                out.push_str(OPEN);
                rest = &rest[at + OPEN.len()..];
                offset += at + OPEN.len();
                continue;
            }
            out.push_str(&rest[..at]);
            let after = &rest[at + OPEN.len()..];
            let end = after
                .find('}')
                .ok_or(SecretError::Unterminated(offset + at))?;
            let name = &after[..end];
            let value = self.get(tenant, name)?;
            out.push_str(value.expose());
            let consumed = at + OPEN.len() + end + 1;
            rest = &rest[consumed..];
            offset += consumed;
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Re-encrypts every value of every tenant under the current key. Values that no
    /// configured key opens are counted and logged (by name), and left as they are.
    pub fn rotate(&self) -> Result<RotationReport, SecretError> {
        let keys = self.keys();
        let mut report = RotationReport {
            key_id: keys.current_id().to_string(),
            ..Default::default()
        };
        for stored in self.store.secrets_with_values(None)? {
            let info = &stored.info;
            if info.key_id == keys.current.id {
                report.unchanged += 1;
                continue;
            }
            let value = match open(&keys, &stored) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(tenant = %info.tenant, name = %info.name, error = %e, "secret not rotated");
                    report.failed += 1;
                    continue;
                }
            };
            let sealed = seal(&keys.current, &info.tenant, &info.name, &value)?;
            if self.store.reencrypt_secret(
                &info.tenant,
                &info.name,
                &stored.nonce,
                &sealed.key_id,
                &sealed.nonce,
                &sealed.ciphertext,
            )? {
                report.reencrypted += 1;
            } else {
                report.skipped += 1;
            }
        }
        self.invalidate();
        tracing::info!(
            key_id = %report.key_id,
            reencrypted = report.reencrypted,
            unchanged = report.unchanged,
            skipped = report.skipped,
            failed = report.failed,
            "secrets rotated"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "hunter2-very-secret-value";

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; KEY_LEN])
    }

    fn service(ring: KeyRing) -> (tempfile::TempDir, Arc<MetaStore>, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(&dir.path().join("meta.db")).unwrap());
        let secrets = Secrets::new(store.clone(), ring);
        (dir, store, secrets)
    }

    fn value(s: &str) -> SecretValue {
        SecretValue::new(s.to_string())
    }

    #[test]
    fn secrets_travel_without_tls_only_as_configured() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mapped = Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
        let remote = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)));
        let v6_local = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let d = WithoutTls::default();
        assert_eq!(d, WithoutTls::Loopback);
        assert!(d.permits(false, local) && d.permits(false, mapped) && d.permits(false, v6_local));
        assert!(!d.permits(false, remote) && !d.permits(false, None));
        assert!(d.permits(true, remote), "TLS always may");
        assert!(!WithoutTls::Refuse.permits(false, local));
        assert!(WithoutTls::Refuse.permits(true, None));
        assert!(WithoutTls::Allow.permits(false, remote));
    }

    #[test]
    fn expand_replaces_escapes_and_names_what_is_missing() {
        let (_d, _s, secrets) = service(KeyRing::from_keys(key(1), vec![]));
        secrets.put("a", "db", &value(PLAIN), "key:x").unwrap();
        secrets
            .put("a", "user.name", &value("bob"), "key:x")
            .unwrap();
        let out = secrets
            .expand(
                "a",
                "dsn: ${secret:user.name}:${secret:db}@h, keep $${secret:db} and ${env:HOME}",
            )
            .unwrap();
        assert_eq!(
            out,
            format!("dsn: bob:{PLAIN}@h, keep ${{secret:db}} and ${{env:HOME}}")
        );
        let err = secrets.expand("a", "x ${secret:nope} y").unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
        assert!(matches!(
            secrets.expand("a", "x ${secret:db"),
            Err(SecretError::Unterminated(2))
        ));
        assert!(matches!(
            secrets.expand("a", "${secret:bad name}"),
            Err(SecretError::InvalidName(_))
        ));
        assert_eq!(secrets.expand("a", "no refs").unwrap(), "no refs");
        assert_eq!(secrets.expand("a", "").unwrap(), "");
    }

    #[test]
    fn values_never_show_in_debug_or_errors() {
        let v = value(PLAIN);
        assert_eq!(format!("{v:?} {v}"), "<redacted> <redacted>");
        let cfg = SecretsConfig {
            key: Some(value(PLAIN)),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains(PLAIN));
        let (_d, _s, secrets) = service(KeyRing::from_keys(key(1), vec![]));
        let e = secrets
            .put("a", "x", &value(&"a".repeat(MAX_VALUE_BYTES + 1)), "k")
            .unwrap_err();
        assert!(matches!(e, SecretError::InvalidValue(_)));
        assert!(secrets.put("a", "x", &value(""), "k").is_err());
        assert!(secrets.put("a", "x", &value("a\0b"), "k").is_err());
    }

    #[test]
    fn names() {
        for good in ["a", "_x", "db.password", "A-1_b", &"n".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "1a",
            "-a",
            "a b",
            "a}",
            "a$",
            "é",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_stored_bytes_do_not_hold_the_plaintext() {
        let (_d, store, secrets) = service(KeyRing::from_keys(key(1), vec![]));
        secrets.put("a", "db", &value(PLAIN), "key:x").unwrap();
        let row = store.get_secret("a", "db").unwrap().unwrap();
        assert!(
            !row.ciphertext
                .windows(PLAIN.len())
                .any(|w| w == PLAIN.as_bytes())
        );
        assert_eq!(row.ciphertext.len(), PLAIN.len() + 16, "tag appended");
    }

    #[test]
    fn a_ciphertext_moved_to_another_tenant_or_name_does_not_open() {
        let (_d, store, secrets) = service(KeyRing::from_keys(key(1), vec![]));
        secrets.put("a", "db", &value(PLAIN), "key:x").unwrap();
        let row = store.get_secret("a", "db").unwrap().unwrap();
        for (tenant, name) in [("b", "db"), ("a", "db2")] {
            store
                .put_secret(
                    tenant,
                    name,
                    &row.info.key_id,
                    &row.nonce,
                    &row.ciphertext,
                    "evil",
                )
                .unwrap();
            assert!(matches!(
                secrets.get(tenant, name),
                Err(SecretError::Decrypt { .. })
            ));
        }
        assert!(matches!(
            secrets.expand("b", "${secret:db}"),
            Err(SecretError::Decrypt { .. })
        ));
        assert_eq!(secrets.get("a", "db").unwrap().expose(), PLAIN);
    }

    #[test]
    fn a_wrong_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(&dir.path().join("meta.db")).unwrap());
        Secrets::new(store.clone(), KeyRing::from_keys(key(1), vec![]))
            .put("a", "db", &value(PLAIN), "k")
            .unwrap();
        let other = Secrets::new(store.clone(), KeyRing::from_keys(key(2), vec![]));
        let err = other.get("a", "db").unwrap_err();
        assert!(matches!(err, SecretError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains(key(1).id()));
        // Same key id stored but different key bytes (a tampered key_id column): decrypt error.
        let row = store.get_secret("a", "db").unwrap().unwrap();
        store
            .put_secret("a", "db", key(2).id(), &row.nonce, &row.ciphertext, "k")
            .unwrap();
        assert!(matches!(
            other.get("a", "db"),
            Err(SecretError::Decrypt { .. })
        ));
    }

    #[test]
    fn rotation_moves_every_value_to_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(&dir.path().join("meta.db")).unwrap());
        let old = Secrets::new(store.clone(), KeyRing::from_keys(key(1), vec![]));
        old.put("a", "one", &value("v1"), "k").unwrap();
        old.put("b", "two", &value("v2"), "k").unwrap();
        let both = Secrets::new(store.clone(), KeyRing::from_keys(key(2), vec![key(1)]));
        assert_eq!(
            both.get("a", "one").unwrap().expose(),
            "v1",
            "old key decrypts"
        );
        both.put("a", "three", &value("v3"), "k").unwrap();
        let report = both.rotate().unwrap();
        assert_eq!(
            (report.reencrypted, report.unchanged, report.failed),
            (2, 1, 0)
        );
        let new_only = Secrets::new(store.clone(), KeyRing::from_keys(key(2), vec![]));
        assert_eq!(new_only.get("a", "one").unwrap().expose(), "v1");
        assert_eq!(new_only.get("b", "two").unwrap().expose(), "v2");
        assert_eq!(new_only.rotate().unwrap().unchanged, 3);
    }

    #[test]
    fn the_cache_follows_changes() {
        let (_d, _s, secrets) = service(KeyRing::from_keys(key(1), vec![]));
        secrets.put("a", "x", &value("one"), "k").unwrap();
        assert_eq!(secrets.expand("a", "${secret:x}").unwrap(), "one");
        secrets.put("a", "x", &value("two"), "k").unwrap();
        assert_eq!(secrets.expand("a", "${secret:x}").unwrap(), "two");
        secrets.delete("a", "x").unwrap();
        assert!(matches!(
            secrets.expand("a", "${secret:x}"),
            Err(SecretError::NotFound { .. })
        ));
        assert!(matches!(
            secrets.delete("a", "x"),
            Err(SecretError::NotFound { .. })
        ));
    }

    proptest::proptest! {
        // Each case opens a database: 64 cases keep this test to seconds.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Text without a reference comes back unchanged; any text at all expands or
        /// fails with an error, never a panic, and never with the value in the error.
        #[test]
        fn expand_is_identity_without_references_and_never_panics(
            text in "[a-z${}:$ \\n]{0,64}",
            plain in "[^$]{0,64}",
        ) {
            let (_d, _s, secrets) = service(KeyRing::from_keys(key(1), vec![]));
            secrets.put("a", "x", &value(PLAIN), "k").unwrap();
            if !plain.contains("${secret:") {
                proptest::prop_assert_eq!(secrets.expand("a", &plain).unwrap(), plain.clone());
            }
            match secrets.expand("a", &text) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(!e.to_string().contains(PLAIN)),
            }
            let with_ref = format!("{text}${{secret:x}}");
            if let Ok(out) = secrets.expand("a", &with_ref) {
                proptest::prop_assert!(out.contains(PLAIN) || text.ends_with('$'));
            }
        }
    }

    #[test]
    fn key_files_generated_raw_and_base64() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load(&SecretsConfig::default(), dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = KeyRing::load(&SecretsConfig::default(), dir.path()).unwrap();
        assert_eq!(
            ring.current_id(),
            again.current_id(),
            "generated once, then reused"
        );
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [7u8; KEY_LEN]).unwrap();
        let cfg = SecretsConfig {
            key_file: Some(raw),
            ..Default::default()
        };
        assert_eq!(
            KeyRing::load(&cfg, dir.path()).unwrap().current_id(),
            key(7).id()
        );
        let env = SecretsConfig {
            key: Some(value(
                &base64::engine::general_purpose::STANDARD.encode([7u8; KEY_LEN]),
            )),
            ..Default::default()
        };
        assert_eq!(
            KeyRing::load(&env, dir.path()).unwrap().current_id(),
            key(7).id()
        );
        let short = dir.path().join("short.key");
        std::fs::write(&short, "c2hvcnQ=\n").unwrap();
        let cfg = SecretsConfig {
            key_file: Some(short),
            ..Default::default()
        };
        let err = KeyRing::load(&cfg, dir.path()).unwrap_err().to_string();
        assert!(err.contains("short.key") && err.contains("32"), "{err}");
    }
}
