//! API key text: scopes, generation, parsing and hashing.
//!
//! A key reads `vtg_<key_id>_<secret>`: the prefix lets secret scanners recognise a
//! leaked key, the key id (12 lowercase hex characters, not secret) finds the row in
//! one indexed lookup, and the secret (32 random bytes as 64 lowercase hex characters)
//! is what proves possession. Only SHA-256 of the secret bytes is stored: with 256 bits
//! of entropy a fast hash is enough, unlike passwords that need argon2.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::MetaError;

/// The prefix every Vantage API key text starts with.
pub const KEY_PREFIX: &str = "vtg_";
/// Length of the key id in hex characters (6 random bytes).
pub const KEY_ID_LEN: usize = 12;
/// Length of the secret in hex characters (32 random bytes).
pub const SECRET_LEN: usize = 64;
const KEY_ID_BYTES: usize = KEY_ID_LEN / 2;
const SECRET_BYTES: usize = SECRET_LEN / 2;

/// What an API key allows. Kept small on purpose: the collector checks one scope per
/// endpoint, and [`Scope::Admin`] grants everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Send telemetry (OTLP, the agent protocol).
    Ingest,
    /// Read telemetry back (search, dashboards).
    Query,
    /// Change what the tenant runs: alert and recording rules, silences, notification
    /// routing, agent configurations. Implies `query` (an editor reads what it edits).
    Edit,
    /// Manage tenants, users and keys; implies every other scope.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are stored.
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Query, Scope::Edit, Scope::Admin];

    /// The stable lowercase name, as stored in the database and accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Edit => "edit",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` is enough for an operation that needs `needed`: equal
    /// scopes match, admin matches everything, and edit matches query.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed || (self == Scope::Edit && needed == Scope::Query)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = MetaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                MetaError::Invalid(format!(
                    "unknown scope {s:?} (expected ingest, query, edit or admin)"
                ))
            })
    }
}

/// Sorted, de-duplicated scopes, so that equal sets are stored and compared equally.
pub(crate) fn normalize_scopes(scopes: &[Scope]) -> Vec<Scope> {
    let mut scopes = scopes.to_vec();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// The stored form of a scope set: names joined by commas.
pub(crate) fn scopes_to_column(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses the stored form back; `None` if it names a scope this build does not know.
pub(crate) fn scopes_from_column(column: &str) -> Option<Vec<Scope>> {
    column
        .split(',')
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<Scope>>>()
        .map(|scopes| normalize_scopes(&scopes))
}

/// A freshly generated key. Holds the secret, so its `Debug` is written by hand.
pub(crate) struct NewKey {
    pub(crate) key_id: String,
    pub(crate) secret_sha256: [u8; 32],
    /// The full `vtg_<key_id>_<secret>` text, handed to the caller exactly once.
    pub(crate) text: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.key_id)
            .field("text", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl NewKey {
    /// Draws a key id and a secret from the operating system's random source.
    pub(crate) fn generate() -> Result<NewKey, MetaError> {
        Self::generate_with_prefix(KEY_PREFIX)
    }

    /// The same shape under another prefix (enrollment tokens are `vte_`), so each
    /// kind of secret is recognisable and never accepted as another.
    pub(crate) fn generate_with_prefix(prefix: &str) -> Result<NewKey, MetaError> {
        let mut id = [0u8; KEY_ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id).map_err(|reason| MetaError::Random { reason })?;
        getrandom::fill(&mut secret).map_err(|reason| MetaError::Random { reason })?;
        let key_id = hex::encode(id);
        let text = format!("{prefix}{key_id}_{}", hex::encode(secret));
        Ok(NewKey {
            key_id,
            secret_sha256: digest(&secret),
            text,
        })
    }
}

/// A presented key text split into its parts. Holds the secret's digest, not the
/// secret, but its `Debug` still shows only the key id.
pub(crate) struct ParsedKey<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) secret_sha256: [u8; 32],
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Splits `vtg_<key_id>_<secret>` and hashes the secret; `None` unless both parts are
/// exactly the lowercase hex of the right length. Works on bytes only, so arbitrary
/// (non-ASCII) input cannot hit a char-boundary panic.
pub(crate) fn parse(presented: &str) -> Option<ParsedKey<'_>> {
    parse_with_prefix(KEY_PREFIX, presented)
}

/// [`parse`] for a secret of the same shape under another prefix.
pub(crate) fn parse_with_prefix<'a>(prefix: &str, presented: &'a str) -> Option<ParsedKey<'a>> {
    let rest = presented.strip_prefix(prefix)?;
    let (key_id, secret_hex) = rest.split_once('_')?;
    if key_id.len() != KEY_ID_LEN || !is_lower_hex(key_id) {
        return None;
    }
    if secret_hex.len() != SECRET_LEN || !is_lower_hex(secret_hex) {
        return None;
    }
    let mut secret = [0u8; SECRET_BYTES];
    hex::decode_to_slice(secret_hex, &mut secret).ok()?;
    Some(ParsedKey {
        key_id,
        secret_sha256: digest(&secret),
    })
}

/// Whether `key_id` has the shape of a key id; lets callers refuse garbage before a
/// database lookup.
pub(crate) fn valid_key_id(key_id: &str) -> bool {
    key_id.len() == KEY_ID_LEN && is_lower_hex(key_id)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Compares two digests without an early exit, so response time does not tell an
/// attacker how many leading bytes of a guess were right.
pub(crate) fn digests_match(stored: &[u8], presented: &[u8; 32]) -> bool {
    stored.ct_eq(presented.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses_back_to_its_digest() {
        let key = NewKey::generate().unwrap();
        let parsed = parse(&key.text).unwrap();
        assert_eq!(parsed.key_id, key.key_id);
        assert_eq!(parsed.secret_sha256, key.secret_sha256);
        assert!(!format!("{key:?}").contains(&key.text[KEY_PREFIX.len() + KEY_ID_LEN..]));
        assert!(!format!("{parsed:?}").contains("secret"));
    }

    #[test]
    fn parse_rejects_wrong_shapes() {
        let id = "0123456789ab";
        let secret = "cd".repeat(32);
        assert!(parse(&format!("vtg_{id}_{secret}")).is_some());
        for bad in [
            String::new(),
            "vtg_".to_owned(),
            "vtg__".to_owned(),
            format!("vtg_{id}"),
            format!("vtg_{id}_"),
            format!("vtg_{id}_{}", &secret[1..]),
            format!("vtg_{id}_{secret}00"),
            format!("vtg_{id}_{}", secret.to_uppercase()),
            format!("vtg_{}_{secret}", id.to_uppercase()),
            format!("VTG_{id}_{secret}"),
            format!("vtg_{id}x_{secret}"),
            format!("vtg_{id}_{secret}\n"),
            format!("vtg_{id}_é{}", &secret[2..]),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("Admin".parse::<Scope>().is_err());
        assert_eq!(
            scopes_from_column(&scopes_to_column(&[Scope::Admin, Scope::Ingest])),
            Some(vec![Scope::Ingest, Scope::Admin])
        );
        assert_eq!(scopes_from_column("ingest,superuser"), None);
    }
}
