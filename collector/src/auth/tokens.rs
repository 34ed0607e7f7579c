//! Access tokens for people: short-lived JWTs (HS256) naming a session, issued at login
//! and refresh. The session is checked on every request as well, so the token's own
//! lifetime only bounds how long a copied token is useful, not how long a logout takes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The `iss` of every token, checked on the way back in.
const ISSUER: &str = "vantage";
/// Clock difference tolerated between issuing and checking (same process, so small).
const LEEWAY_SECS: u64 = 5;

/// What an access token says. Authorisation does not trust `tenant` or `role` from it:
/// they come from the session row, so changes apply at once; they are here for clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer, always `vantage`.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// Tenant at issue time.
    pub tenant: String,
    /// Role at issue time.
    pub role: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Signs and verifies access tokens with one HMAC key from the metadata store.
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the stored secret.
    pub fn new(kid: String, secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        TokenKeys {
            kid,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A signed token for the session, valid for `ttl`.
    pub fn issue(
        &self,
        user_id: &str,
        session_id: &str,
        tenant: &str,
        role: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            tenant: tenant.to_string(),
            role: role.to_string(),
            iat: now,
            exp: now + ttl.as_secs().max(1),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// The claims of a token with a valid signature that has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        // A bound before any parsing: a JWT of ours is a few hundred bytes.
        if token.len() > 4096 {
            return None;
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Whether a bearer value is shaped like a JWT (three base64url parts), as opposed to
/// an API key, so each goes to its own check.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let keys = TokenKeys::new("k1".into(), &[7u8; 32]);
        let token = keys
            .issue("u1", "s1", "default", "viewer", Duration::from_secs(60))
            .unwrap();
        assert!(looks_like_jwt(&token));
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        // Another key, a flipped byte, garbage, "alg: none": all refused.
        let other = TokenKeys::new("k2".into(), &[8u8; 32]);
        assert!(other.verify(&token).is_none());
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(keys.verify(&String::from_utf8(bytes).unwrap()).is_none());
        assert!(keys.verify("eyJ.a.b").is_none());
        assert!(keys.verify(&"eyJ".repeat(5000)).is_none());
        let unsigned = format!(
            "{}.{}.",
            base64url(r#"{"alg":"none","typ":"JWT"}"#),
            base64url(
                r#"{"iss":"vantage","sub":"u1","sid":"s1","tenant":"default","role":"admin","iat":1,"exp":99999999999}"#
            )
        );
        assert!(keys.verify(&unsigned).is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = TokenKeys::new("k1".into(), &[7u8; 32]);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "u".into(),
            sid: "s".into(),
            tenant: "default".into(),
            role: "admin".into(),
            iat: now - 120,
            exp: now - 60,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&token).is_none());
    }

    fn base64url(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
