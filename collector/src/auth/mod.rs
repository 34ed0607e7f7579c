//! Who is asking: every OTLP export and API request carries `Authorization: Bearer`
//! with an API key (agents, scripts) or a person's access token (after login); either,
//! verified against the metadata store, names the tenant and the scopes. The tenant
//! never comes from anything else the client sends.

pub mod throttle;
pub mod tokens;
pub mod totp;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vantage_proto::ErrorCode;
use vantage_storage::meta::{
    KeyRejection, MetaError, MetaStore, Role, Scope, SessionGrant, SessionRejection,
};

/// The tenant created at first start; its admins administer the whole collector.
pub const BOOTSTRAP_TENANT: &str = "default";
/// Name of the file the first start writes the admin key to.
pub const INITIAL_ADMIN_FILE: &str = "initial-admin.txt";
/// `last_used_at` is written at most this often per key, so verification stays a read.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Access tokens live 15 minutes, the usual OAuth figure. The session is checked on
/// every request anyway (logout is immediate), so this only sets how often a client
/// refreshes, and how long a token copied from a live session stays useful.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The tenant all of the request's data belongs to.
    pub tenant: String,
    /// What the credential may do.
    pub scopes: Vec<Scope>,
    /// The API key's id (None for people and when authentication is disabled).
    pub key_id: Option<String>,
    /// The person, when the credential is a login session's access token.
    pub user: Option<UserIdentity>,
}

/// A logged-in person behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    /// Stable user id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// The session the access token belongs to.
    pub session_id: String,
    /// The role in the principal's tenant.
    pub role: Role,
}

impl Principal {
    /// Whether the principal holds `scope` (`admin` implies every scope, `edit` implies
    /// `query`).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s.allows(scope))
    }

    /// An admin of the bootstrap tenant: may manage every tenant.
    pub fn is_server_admin(&self) -> bool {
        self.tenant == BOOTSTRAP_TENANT && self.has(Scope::Admin)
    }

    /// Who, for the audit log: `user:<name>`, `key:<id>` or `anonymous`.
    pub fn actor(&self) -> String {
        match (&self.user, &self.key_id) {
            (Some(u), _) => format!("user:{}", u.username),
            (None, Some(k)) => format!("key:{k}"),
            (None, None) => "anonymous".to_string(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing credential: send Authorization: Bearer <api key or access token>")]
    Missing,
    /// The credential is not a valid, live key.
    #[error("{0}")]
    Rejected(&'static str),
    /// Valid credential, insufficient scope.
    #[error("this credential lacks the {0} scope")]
    Forbidden(&'static str),
    /// The metadata store failed; details are in the log. Retryable: a good key must
    /// not look bad to its client because the database hiccuped.
    #[error("credential check is unavailable; retry")]
    Internal,
}

impl AuthError {
    /// The error code this maps to (401 / 403 / 500, UNAUTHENTICATED / PERMISSION_DENIED).
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing | AuthError::Rejected(_) => ErrorCode::Unauthenticated,
            AuthError::Forbidden(_) => ErrorCode::PermissionDenied,
            AuthError::Internal => ErrorCode::Unavailable,
        }
    }
}

enum Mode {
    /// `--insecure-no-auth`: every caller is an admin of the bootstrap tenant.
    Disabled,
    Keys(Arc<MetaStore>),
}

/// Verifies credentials.
pub struct Auth {
    mode: Mode,
    touched: Mutex<HashMap<String, Instant>>,
    /// Access-token keys, loaded from the store on first use.
    token_keys: std::sync::OnceLock<tokens::TokenKeys>,
}

impl Auth {
    /// Authentication against the metadata store.
    pub fn with_store(store: Arc<MetaStore>) -> Self {
        Auth {
            mode: Mode::Keys(store),
            touched: Mutex::new(HashMap::new()),
            token_keys: std::sync::OnceLock::new(),
        }
    }

    /// No authentication at all (`--insecure-no-auth`).
    pub fn disabled() -> Self {
        Auth {
            mode: Mode::Disabled,
            touched: Mutex::new(HashMap::new()),
            token_keys: std::sync::OnceLock::new(),
        }
    }

    /// The metadata store, when authentication is on.
    pub fn store(&self) -> Option<&Arc<MetaStore>> {
        match &self.mode {
            Mode::Keys(store) => Some(store),
            Mode::Disabled => None,
        }
    }

    /// Authenticates the value of an `Authorization` header and checks `needed`.
    ///
    /// The key lookup is one indexed SQLite read and a SHA-256 of 32 bytes — a few
    /// microseconds — so it runs inline rather than on the blocking pool.
    pub fn check(
        &self,
        authorization: Option<&str>,
        needed: Scope,
    ) -> Result<Principal, AuthError> {
        let principal = self.identify(authorization)?;
        if !principal.has(needed) {
            return Err(AuthError::Forbidden(needed.as_str()));
        }
        Ok(principal)
    }

    /// Who the credential belongs to, whatever its scopes (`/api/v1/auth/me`); every
    /// other caller wants [`Auth::check`].
    pub fn identify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let principal = match &self.mode {
            Mode::Disabled => Principal {
                tenant: BOOTSTRAP_TENANT.to_string(),
                scopes: vec![Scope::Admin],
                key_id: None,
                user: None,
            },
            Mode::Keys(store) => {
                let token = authorization
                    .and_then(|h| {
                        let (scheme, rest) = h.trim().split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    })
                    .filter(|t| !t.is_empty())
                    .ok_or(AuthError::Missing)?;
                if tokens::looks_like_jwt(token) {
                    return self.check_access_token(store, token);
                }
                let key = store
                    .verify_api_key(token, SystemTime::now())
                    .map_err(|r| match r {
                        KeyRejection::Revoked => AuthError::Rejected("credential revoked"),
                        KeyRejection::Expired => AuthError::Rejected("credential expired"),
                        KeyRejection::Malformed | KeyRejection::Unknown => {
                            AuthError::Rejected("invalid credential")
                        }
                        // The store failed (and logged why): not the client's fault.
                        KeyRejection::Unavailable => AuthError::Internal,
                    })?;
                self.touch(store, &key.key_id);
                Principal {
                    tenant: key.tenant,
                    scopes: key.scopes,
                    key_id: Some(key.key_id),
                    user: None,
                }
            }
        };
        Ok(principal)
    }

    fn keys(&self, store: &MetaStore) -> Result<&tokens::TokenKeys, AuthError> {
        if let Some(keys) = self.token_keys.get() {
            return Ok(keys);
        }
        let (kid, secret) = store.signing_key().map_err(|e| {
            tracing::error!(error = %e, "cannot load the access-token signing key");
            AuthError::Internal
        })?;
        Ok(self
            .token_keys
            .get_or_init(|| tokens::TokenKeys::new(kid, &secret)))
    }

    /// A person's access token: a valid signature, then the session it names must be
    /// live and the user still a member of its tenant.
    fn check_access_token(&self, store: &MetaStore, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .keys(store)?
            .verify(token)
            .ok_or(AuthError::Rejected("invalid or expired access token"))?;
        let grant = store
            .check_session(&claims.sid, SystemTime::now())
            .map_err(|r| match r {
                SessionRejection::Unavailable => AuthError::Internal,
                SessionRejection::Revoked => {
                    AuthError::Rejected("session ended (logged out or revoked)")
                }
                SessionRejection::Expired => AuthError::Rejected("session expired; log in again"),
                SessionRejection::NoAccess => {
                    AuthError::Rejected("user is disabled or no longer a member of this tenant")
                }
                SessionRejection::Unknown | SessionRejection::Reused => {
                    AuthError::Rejected("invalid or expired access token")
                }
            })?;
        if grant.user_id != claims.sub {
            return Err(AuthError::Rejected("invalid or expired access token"));
        }
        Ok(principal_of(grant))
    }

    /// Signs an access token for a session, valid for `ttl` (`auth.access_token_ttl` as
    /// it is now: it changes on reload); `(token, lifetime)`.
    pub fn issue_access_token(
        &self,
        grant: &SessionGrant,
        ttl: Duration,
    ) -> Result<(String, Duration), AuthError> {
        let Mode::Keys(store) = &self.mode else {
            return Err(AuthError::Rejected(
                "there are no logins while authentication is off (--insecure-no-auth)",
            ));
        };
        let token = self
            .keys(store)?
            .issue(
                &grant.user_id,
                &grant.session_id,
                &grant.tenant,
                grant.role.as_str(),
                ttl,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "cannot sign an access token");
                AuthError::Internal
            })?;
        Ok((token, ttl))
    }

    fn touch(&self, store: &MetaStore, key_id: &str) {
        let now = Instant::now();
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched
                .get(key_id)
                .is_some_and(|t| now.duration_since(*t) < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(key_id.to_string(), now);
        }
        if let Err(e) = store.touch_api_key(key_id, SystemTime::now()) {
            tracing::warn!(key_id, error = %e, "could not record api key use");
        }
    }
}

/// The principal of a live session: the role's scopes in the session's tenant.
pub fn principal_of(grant: SessionGrant) -> Principal {
    Principal {
        tenant: grant.tenant,
        scopes: grant.role.scopes(),
        key_id: None,
        user: Some(UserIdentity {
            user_id: grant.user_id,
            username: grant.username,
            session_id: grant.session_id,
            role: grant.role,
        }),
    }
}

/// Opens the metadata store and, on first start, creates the bootstrap tenant and admin
/// key, writing the key to `<data_dir>/initial-admin.txt` (mode 0600). The secret is
/// never logged; the log says where the file is.
pub fn open_and_bootstrap(data_dir: &Path) -> anyhow::Result<Arc<MetaStore>> {
    let store = MetaStore::open(&data_dir.join("meta.db"))?;
    let path = data_dir.join(INITIAL_ADMIN_FILE);
    let created = store.bootstrap_with(|key| {
        // Written (and fsynced) before the key is committed: whatever happens, the key
        // that ends up in the store is the one in the file. A file left from an earlier
        // store (whose database is gone) holds a dead key and is replaced.
        write_secret_file(
            &path,
            &format!("tenant: {BOOTSTRAP_TENANT}\napi_key: {key}\n"),
        )
        .map_err(|source| MetaError::Io {
            path: path.clone(),
            source,
        })
    })?;
    if created.is_some() {
        tracing::warn!(
            path = %path.display(),
            "first start: created tenant default and an admin api key; the key is in this file, readable only by this user; keep it safe and delete the file once stored elsewhere"
        );
    }
    bootstrap_admin_user(&store, &path)?;
    if created.is_some() {
        bootstrap_enrollment_token(&store, &path)?;
    }
    Ok(Arc::new(store))
}

/// The first enrollment token lets agents of tenant `default` enroll: 30 days, 1,000
/// agents, then the operator makes their own.
fn bootstrap_enrollment_token(store: &MetaStore, path: &Path) -> anyhow::Result<()> {
    let (token, text) = store.create_enrollment_token(
        BOOTSTRAP_TENANT,
        "initial",
        Some(Duration::from_secs(30 * 86_400)),
        Some(1000),
    )?;
    let mut contents = std::fs::read_to_string(path).unwrap_or_default();
    contents.push_str(&format!("enrollment_token: {text}\n"));
    write_secret_file(path, &contents)?;
    tracing::info!(token_id = %token.token_id, "created an agent enrollment token for tenant default (30 days, 1000 agents); it is in the initial-admin file");
    Ok(())
}

/// The login name of the first user.
pub const INITIAL_ADMIN_USER: &str = "admin";

/// When no user exists yet (first start, or a data directory from before users
/// existed), creates `admin`, an admin of the default tenant, with a random password
/// added to the initial-admin file. The file is written first: a crash in between
/// leaves a password that does not work yet, and the next start makes a new one.
fn bootstrap_admin_user(store: &MetaStore, path: &Path) -> anyhow::Result<()> {
    if !store.list_users(None)?.is_empty() {
        return Ok(());
    }
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    use base64::Engine as _;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut text: String = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("admin_user:") && !l.starts_with("admin_password:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "admin_user: {INITIAL_ADMIN_USER}\nadmin_password: {password}\n"
    ));
    write_secret_file(path, &text)?;
    store.create_user(INITIAL_ADMIN_USER, &password, BOOTSTRAP_TENANT, Role::Admin)?;
    tracing::warn!(
        path = %path.display(),
        user = INITIAL_ADMIN_USER,
        "created the first user, an admin of tenant default; the password is in this file, readable only by this user; log in and change it"
    );
    Ok(())
}

/// Writes a file only the owner can read, atomically (temporary file, fsync, rename).
pub(crate) fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_writes_a_private_file_once_and_keys_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_and_bootstrap(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(INITIAL_ADMIN_FILE)).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("api_key: "))
            .unwrap()
            .to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(INITIAL_ADMIN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(store);
        // A second start neither rewrites nor fails.
        let store = open_and_bootstrap(dir.path()).unwrap();
        let auth = Auth::with_store(store);
        let p = auth
            .check(Some(&format!("Bearer {key}")), Scope::Query)
            .unwrap();
        assert_eq!(p.tenant, "default");
        assert!(p.is_server_admin());
        assert_eq!(auth.check(None, Scope::Query), Err(AuthError::Missing));
        assert_eq!(
            auth.check(Some("Basic abc"), Scope::Query),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check(Some("Bearer vtg_000000000000_00"), Scope::Query),
            Err(AuthError::Rejected("invalid credential"))
        );
    }

    #[test]
    fn scopes_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_and_bootstrap(dir.path()).unwrap();
        let (_, ingest) = store
            .create_api_key("default", "agent", &[Scope::Ingest], None)
            .unwrap();
        let auth = Auth::with_store(store);
        let bearer = format!("bearer {ingest}");
        assert!(auth.check(Some(&bearer), Scope::Ingest).is_ok());
        assert_eq!(
            auth.check(Some(&bearer), Scope::Query),
            Err(AuthError::Forbidden("query"))
        );
        assert_eq!(
            AuthError::Forbidden("query").code(),
            ErrorCode::PermissionDenied
        );
        let open = Auth::disabled();
        assert!(open.check(None, Scope::Admin).is_ok());
    }
}
