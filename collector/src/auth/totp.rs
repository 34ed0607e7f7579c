//! The TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, one step of
//! clock skew either way), as every authenticator app implements it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use totp_rs::{Builder, Totp};

/// Issuer shown in authenticator apps.
const ISSUER: &str = "Vantage";

fn totp(secret: &[u8]) -> Option<Totp> {
    Builder::new()
        .with_secret(secret.to_vec())
        .with_skew(1)
        .build()
        .ok()
}

/// The `otpauth://` URI an authenticator app reads (usually from a QR code).
pub fn provisioning_uri(secret: &[u8], username: &str) -> String {
    let base32 = base32_encode(secret);
    let label: String = format!("{ISSUER}:{username}")
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!(
        "otpauth://totp/{label}?secret={base32}&issuer={ISSUER}&algorithm=SHA1&digits=6&period=30"
    )
}

/// RFC 4648 base32 without padding, the form authenticator apps take.
pub fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Remembers the last step accepted per user, so a code is accepted once (RFC 6238
/// §5.2): a code seen over someone's shoulder cannot be replayed within its window.
#[derive(Debug, Default)]
pub struct TotpChecker {
    last_step: Mutex<HashMap<String, u64>>,
}

impl TotpChecker {
    /// Whether `code` is valid now for `secret`, and not a replay for `user_id`.
    pub fn check(&self, user_id: &str, secret: &[u8], code: &str) -> bool {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Some(totp) = totp(secret) else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let Some(step) = totp.check(code, now) else {
            return false;
        };
        let mut last = self.last_step.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(user_id) {
            Some(&seen) if seen >= step => false,
            _ => {
                last.insert(user_id.to_string(), step);
                true
            }
        }
    }
}

/// The code an authenticator shows now (tests and the CLI's self-check use it).
pub fn current_code(secret: &[u8]) -> Option<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    totp(secret).map(|t| t.generate(now).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector_and_replay() {
        // RFC 6238 appendix B, SHA1, T = 59 s: 94287082 (8 digits) -> 287082 for 6.
        let secret = b"12345678901234567890";
        let t = totp(secret).unwrap();
        assert_eq!(t.generate(59).to_string(), "287082");
        let checker = TotpChecker::default();
        let code = current_code(secret).unwrap();
        assert!(checker.check("u", secret, &code));
        assert!(!checker.check("u", secret, &code), "a code works once");
        assert!(!checker.check("u", secret, "12345"));
        assert!(!checker.check("u", secret, "abcdef"));
        assert!(!checker.check("u", secret, &"9".repeat(10_000)));
    }

    #[test]
    fn base32_and_uri() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        let uri = provisioning_uri(b"12345678901234567890", "al ice");
        assert!(
            uri.starts_with(
                "otpauth://totp/Vantage:al%20ice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&"
            ),
            "{uri}"
        );
    }
}
