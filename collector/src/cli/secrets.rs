//! `vantage secrets ...`: set (the value from stdin, never from the command line, where
//! `ps` and shell history would see it), list, delete, and rotate the key.

use std::io::{Read as _, Write as _};

use clap::Subcommand;
use serde_json::json;

use super::{HttpClient, call_json, url};

/// Secrets for `${secret:NAME}` in agent configurations.
#[derive(Debug, Subcommand)]
pub(super) enum SecretsCommand {
    /// Set a secret of the caller's tenant; the value is read from stdin (one trailing
    /// newline is dropped), e.g. `vantage secrets set db_password < file`.
    Set {
        /// Letters, digits, '_', '-' and '.', starting with a letter or '_'.
        name: String,
    },
    /// List secrets: names, times, author, key id (never values).
    List,
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
    },
    /// Re-encrypt every secret under the current key (admins of default); then the keys
    /// in secrets.previous_key_files can be removed.
    Rotate,
}

/// Reads the value: all of stdin, without the newline `echo` or an editor adds.
fn read_value() -> anyhow::Result<String> {
    let mut value = String::new();
    std::io::stdin()
        .take((crate::secrets::MAX_VALUE_BYTES + 2) as u64)
        .read_to_string(&mut value)
        .map_err(|e| anyhow::anyhow!("reading the value from stdin: {e}"))?;
    if let Some(stripped) = value.strip_suffix('\n') {
        value.truncate(stripped.strip_suffix('\r').unwrap_or(stripped).len());
    }
    if value.is_empty() {
        anyhow::bail!("no value on stdin: pipe it in, e.g. `vantage secrets set NAME < file`");
    }
    Ok(value)
}

/// `vantage secrets ...`.
pub(super) async fn secrets(
    client: &HttpClient,
    base: &str,
    token: Option<&str>,
    command: SecretsCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        SecretsCommand::Set { name } => {
            let value = read_value()?;
            let path = format!("/api/v1/secrets/{}", urlencode(&name));
            let uri = url(base, &path, &[])?;
            let info = call_json(
                client,
                hyper::Method::PUT,
                uri,
                token,
                Some(json!({"value": value})),
            )
            .await?;
            writeln!(
                out,
                "set {} (key {})",
                info["name"].as_str().unwrap_or(&name),
                info["key_id"].as_str().unwrap_or("?")
            )?;
        }
        SecretsCommand::List => {
            let uri = url(base, "/api/v1/secrets", &[])?;
            let list = call_json(client, hyper::Method::GET, uri, token, None).await?;
            writeln!(
                out,
                "{:<32} {:<17} {:<31} AUTHOR",
                "NAME", "KEY_ID", "UPDATED_AT"
            )?;
            for s in list["secrets"].as_array().cloned().unwrap_or_default() {
                writeln!(
                    out,
                    "{:<32} {:<17} {:<31} {}",
                    s["name"].as_str().unwrap_or(""),
                    s["key_id"].as_str().unwrap_or(""),
                    s["updated_at"].as_str().unwrap_or(""),
                    s["author"].as_str().unwrap_or("")
                )?;
            }
        }
        SecretsCommand::Delete { name } => {
            let path = format!("/api/v1/secrets/{}", urlencode(&name));
            let uri = url(base, &path, &[])?;
            call_json(client, hyper::Method::DELETE, uri, token, None).await?;
            writeln!(out, "deleted {name}")?;
        }
        SecretsCommand::Rotate => {
            let uri = url(base, "/api/v1/secrets/rotate", &[])?;
            let r = call_json(client, hyper::Method::POST, uri, token, None).await?;
            writeln!(
                out,
                "key {}: {} re-encrypted, {} already current, {} skipped, {} failed",
                r["key_id"].as_str().unwrap_or("?"),
                r["reencrypted"],
                r["unchanged"],
                r["skipped"],
                r["failed"]
            )?;
            if r["failed"].as_u64().unwrap_or(0) > 0 {
                anyhow::bail!("some secrets could not be decrypted; see the collector log");
            }
        }
    }
    Ok(())
}

/// A path segment, percent-encoded (names are checked by the server; this keeps a bad
/// one from changing the path).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
