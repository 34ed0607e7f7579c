//! Agent configuration documents and the OpAMP fleet's state.
//!
//! A tenant has named config documents, each targeted at agents by a label selector
//! (`env=prod,role=web`). A document's versions are immutable and numbered 1, 2, 3, …;
//! a rollback is a new version copying an old body, so the history stays linear and
//! every change has an author and a message. A roll-out offers one version to a stable
//! percentage of the matching agents (chosen by a hash of document name and instance
//! uid, so agents already in stay in as the percentage grows); the rest keep the current
//! version. The agents' last reported state is kept here too, so the fleet view
//! survives a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use rusqlite::{OptionalExtension as _, Row, Transaction, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::{MetaError, MetaStore, from_nanos, to_nanos};

/// Largest config document body: far more than any agent configuration needs, small
/// enough that every agent's copy of every document stays cheap to hold and send.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Longest config message (the "commit message" of a version), in characters.
pub const MAX_CONFIG_MESSAGE_CHARS: usize = 1024;
/// Longest selector text: a handful of labels, never a program.
pub const MAX_SELECTOR_LEN: usize = 1024;
/// Lines compared exactly by [`unified_diff`]; beyond it (product of both sides) the
/// changed middle is shown as replaced wholesale, so a diff never costs more than this.
const MAX_DIFF_CELLS: usize = 4_000_000;
/// Lines of context around each change in a diff, as `diff -u`.
const DIFF_CONTEXT: usize = 3;

/// Whether `name` is a valid document name: `[a-z0-9][a-z0-9._-]{0,62}`. The name is
/// the key of the document's entry in the agent's config map, so it stays file-like.
pub fn valid_config_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

fn check_name(name: &str) -> Result<(), MetaError> {
    if valid_config_name(name) {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "config name {name:?}: must match [a-z0-9][a-z0-9._-]{{0,62}}"
        )))
    }
}

/// One term of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorTerm {
    /// The label name.
    pub key: String,
    /// The value compared against.
    pub value: String,
    /// `true` for `key=value`, `false` for `key!=value`.
    pub equals: bool,
}

/// A label selector: every term must hold. Empty selects every agent. `key!=value`
/// also holds when the agent has no such label (as in Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// The terms, in the order written.
    pub terms: Vec<SelectorTerm>,
}

fn label_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._/-:".contains(c)
}

impl Selector {
    /// Parses `env=prod,role!=db`; the error names the bad term and what is allowed.
    pub fn parse(text: &str) -> Result<Selector, MetaError> {
        if text.len() > MAX_SELECTOR_LEN {
            return Err(MetaError::Invalid(format!(
                "selector: longer than {MAX_SELECTOR_LEN} bytes"
            )));
        }
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let term = raw.trim();
            if term.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(MetaError::Invalid(format!(
                    "selector {text:?}: empty term between commas"
                )));
            }
            let (key, value, equals) = if let Some((k, v)) = term.split_once("!=") {
                (k.trim(), v.trim(), false)
            } else if let Some((k, v)) = term.split_once('=') {
                (k.trim(), v.trim().trim_start_matches('='), true)
            } else {
                return Err(MetaError::Invalid(format!(
                    "selector term {term:?}: expected key=value or key!=value"
                )));
            };
            if key.is_empty() || !key.chars().all(label_char_ok) {
                return Err(MetaError::Invalid(format!(
                    "selector term {term:?}: label name must be letters, digits and ._/-:"
                )));
            }
            if !value.chars().all(label_char_ok) {
                return Err(MetaError::Invalid(format!(
                    "selector term {term:?}: value must be letters, digits and ._/-:"
                )));
            }
            terms.push(SelectorTerm {
                key: key.to_string(),
                value: value.to_string(),
                equals,
            });
        }
        Ok(Selector { terms })
    }

    /// Whether an agent with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| {
            let have = labels.get(&t.key).map(String::as_str);
            if t.equals {
                have == Some(t.value.as_str())
            } else {
                have != Some(t.value.as_str())
            }
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.equals { "=" } else { "!=" };
            write!(f, "{}{op}{}", t.key, t.value)?;
        }
        Ok(())
    }
}

/// Whether the agent `instance_uid` (hex) is inside a `percent` roll-out of document
/// `name`: a stable hash, so the same agents stay in as the percentage grows.
pub fn in_rollout(name: &str, instance_uid: &str, percent: u8) -> bool {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(instance_uid.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 100 < u64::from(percent)
}

/// A roll-out in progress: `version` goes to `percent` % of the matching agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The version offered.
    pub version: u32,
    /// 1 to 99; 0 cancels and 100 makes the version current.
    pub percent: u8,
}

/// A config document, without its bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDoc {
    /// Its tenant.
    pub tenant: String,
    /// The document name (its key in the agent's config map).
    pub name: String,
    /// The selector text, normalised.
    pub selector: String,
    /// The version every matching agent gets (outside a roll-out).
    pub current_version: u32,
    /// The newest version number.
    pub latest_version: u32,
    /// A roll-out in progress.
    pub rollout: Option<Rollout>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change (version, roll-out or selector).
    pub updated_at: SystemTime,
}

/// One immutable version of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigVersion {
    /// 1, 2, 3, ...
    pub version: u32,
    /// The YAML text.
    pub body: String,
    /// Who: a user name or `key:<id>`.
    pub author: String,
    /// Why.
    pub message: String,
    /// When.
    pub created_at: SystemTime,
    /// SHA-256 of the body, hex.
    pub sha256: String,
}

/// What an agent may be given of one document: its selector, current body and the
/// roll-out candidate.
#[derive(Clone, Debug)]
pub struct ActiveConfig {
    /// Document name.
    pub name: String,
    /// Parsed selector.
    pub selector: Selector,
    /// The current version.
    pub current: ConfigVersion,
    /// A roll-out in progress and its version.
    pub rollout: Option<(Rollout, ConfigVersion)>,
}

impl ActiveConfig {
    /// The version agent `instance_uid` (hex) should run.
    pub fn version_for(&self, instance_uid: &str) -> &ConfigVersion {
        match &self.rollout {
            Some((r, v)) if in_rollout(&self.name, instance_uid, r.percent) => v,
            _ => &self.current,
        }
    }
}

/// An agent's last reported OpAMP state, persisted for the fleet view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpampAgentRecord {
    /// Instance uid, hex.
    pub instance_uid: String,
    /// Its tenant (from its credential).
    pub tenant: String,
    /// The API key that first presented this uid (empty with authentication off).
    pub key_id: String,
    /// Identifying and non-identifying attributes, JSON object of strings.
    pub description: String,
    /// AgentCapabilities bits.
    pub capabilities: u64,
    /// Hash of the config last offered (hex, empty: none).
    pub config_hash_sent: String,
    /// Hash the agent last reported (hex, empty: none).
    pub config_hash_applied: String,
    /// `applied`, `applying`, `failed` or `unset`.
    pub remote_status: String,
    /// The agent's error for a failed config.
    pub remote_error: String,
    /// Health as reported (`None`: not reported).
    pub healthy: Option<bool>,
    /// The health's last error or status text.
    pub health_status: String,
    /// The effective configuration the agent reported (bounded).
    pub effective_config: String,
    /// First contact.
    pub first_seen: SystemTime,
    /// Last contact.
    pub last_contact: SystemTime,
}

const DOC_COLUMNS: &str = "d.tenant, d.name, d.selector, d.current_version, \
    (SELECT MAX(version) FROM config_versions v WHERE v.tenant = d.tenant AND v.name = d.name), \
    d.rollout_version, d.rollout_percent, d.created_at, d.updated_at";
const VERSION_COLUMNS: &str = "version, body, author, message, created_at, sha256";
const AGENT_COLUMNS: &str = "instance_uid, tenant, key_id, description, capabilities, \
    config_hash_sent, config_hash_applied, remote_status, remote_error, healthy, health_status, \
    effective_config, first_seen, last_contact";

fn doc_from_row(row: &Row<'_>) -> rusqlite::Result<ConfigDoc> {
    let rv: Option<u32> = row.get(5)?;
    let rp: Option<u8> = row.get(6)?;
    Ok(ConfigDoc {
        tenant: row.get(0)?,
        name: row.get(1)?,
        selector: row.get(2)?,
        current_version: row.get(3)?,
        latest_version: row.get::<_, Option<u32>>(4)?.unwrap_or(0),
        rollout: rv
            .zip(rp)
            .map(|(version, percent)| Rollout { version, percent }),
        created_at: from_nanos(row.get(7)?),
        updated_at: from_nanos(row.get(8)?),
    })
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<ConfigVersion> {
    Ok(ConfigVersion {
        version: row.get(0)?,
        body: row.get(1)?,
        author: row.get(2)?,
        message: row.get(3)?,
        created_at: from_nanos(row.get(4)?),
        sha256: row.get(5)?,
    })
}

fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<OpampAgentRecord> {
    Ok(OpampAgentRecord {
        instance_uid: row.get(0)?,
        tenant: row.get(1)?,
        key_id: row.get(2)?,
        description: row.get(3)?,
        capabilities: row.get::<_, i64>(4)? as u64,
        config_hash_sent: row.get(5)?,
        config_hash_applied: row.get(6)?,
        remote_status: row.get(7)?,
        remote_error: row.get(8)?,
        healthy: row.get(9)?,
        health_status: row.get(10)?,
        effective_config: row.get(11)?,
        first_seen: from_nanos(row.get(12)?),
        last_contact: from_nanos(row.get(13)?),
    })
}

fn check_body(body: &str) -> Result<(), MetaError> {
    if body.len() > MAX_CONFIG_BYTES {
        return Err(MetaError::Invalid(format!(
            "config body: {} bytes, more than the limit of {MAX_CONFIG_BYTES}",
            body.len()
        )));
    }
    Ok(())
}

fn check_message(message: &str) -> Result<(), MetaError> {
    if message.chars().count() > MAX_CONFIG_MESSAGE_CHARS {
        return Err(MetaError::Invalid(format!(
            "message: longer than {MAX_CONFIG_MESSAGE_CHARS} characters"
        )));
    }
    Ok(())
}

fn sha256_hex(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// A unified diff of `old` and `new` by lines (`--- from`/`+++ to` headers, hunks with
/// three lines of context); empty when they are equal.
pub fn unified_diff(old: &str, new: &str, from: &str, to: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = diff_ops(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        return String::new();
    }
    let mut out = format!("--- {from}\n+++ {to}\n");
    // Group into hunks: runs of changes with up to 2*context equal lines between them.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut start = 0;
    while start < changed.len() {
        let mut end = start;
        while end + 1 < changed.len() && changed[end + 1] - changed[end] <= 2 * DIFF_CONTEXT + 1 {
            end += 1;
        }
        let lo = changed[start].saturating_sub(DIFF_CONTEXT);
        let hi = (changed[end] + DIFF_CONTEXT + 1).min(ops.len());
        let (mut a_start, mut b_start) = (None, None);
        let (mut a_len, mut b_len) = (0, 0);
        let mut body = String::new();
        for op in &ops[lo..hi] {
            match op {
                Op::Same(i, j) => {
                    a_start.get_or_insert(*i);
                    b_start.get_or_insert(*j);
                    a_len += 1;
                    b_len += 1;
                    body.push_str(&format!(" {}\n", a[*i]));
                }
                Op::Del(i, j) => {
                    a_start.get_or_insert(*i);
                    b_start.get_or_insert(*j);
                    a_len += 1;
                    body.push_str(&format!("-{}\n", a[*i]));
                }
                Op::Ins(i, j) => {
                    a_start.get_or_insert(*i);
                    b_start.get_or_insert(*j);
                    b_len += 1;
                    body.push_str(&format!("+{}\n", b[*j]));
                }
            }
        }
        let a_first = if a_len == 0 {
            a_start.unwrap_or(0)
        } else {
            a_start.unwrap_or(0) + 1
        };
        let b_first = if b_len == 0 {
            b_start.unwrap_or(0)
        } else {
            b_start.unwrap_or(0) + 1
        };
        out.push_str(&format!("@@ -{a_first},{a_len} +{b_first},{b_len} @@\n"));
        out.push_str(&body);
        start = end + 1;
    }
    out
}

/// One step of an edit script: indexes into the old and new line lists (for `Del`, the
/// new index is where the line would have been; for `Ins`, the old one).
#[derive(Clone, Copy, Debug)]
enum Op {
    Same(usize, usize),
    Del(usize, usize),
    Ins(usize, usize),
}

fn diff_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op> = (0..prefix).map(|i| Op::Same(i, i)).collect();
    if am.len().saturating_mul(bm.len()) <= MAX_DIFF_CELLS {
        // Longest common subsequence by dynamic programming, from the end.
        let (n, m) = (am.len(), bm.len());
        let mut table = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                table[i * (m + 1) + j] = if am[i] == bm[j] {
                    table[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    table[(i + 1) * (m + 1) + j].max(table[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push(Op::Same(prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if j < m && (i == n || table[i * (m + 1) + j + 1] > table[(i + 1) * (m + 1) + j])
            {
                ops.push(Op::Ins(prefix + i, prefix + j));
                j += 1;
            } else {
                ops.push(Op::Del(prefix + i, prefix + j));
                i += 1;
            }
        }
    } else {
        ops.extend((0..am.len()).map(|i| Op::Del(prefix + i, prefix)));
        ops.extend((0..bm.len()).map(|j| Op::Ins(prefix + am.len(), prefix + j)));
    }
    ops.extend((0..suffix).map(|k| Op::Same(a.len() - suffix + k, b.len() - suffix + k)));
    ops
}

fn load_doc(
    tx: &rusqlite::Connection,
    tenant: &str,
    name: &str,
) -> rusqlite::Result<Option<ConfigDoc>> {
    tx.query_row(
        &format!("SELECT {DOC_COLUMNS} FROM config_docs d WHERE d.tenant = ?1 AND d.name = ?2"),
        params![tenant, name],
        doc_from_row,
    )
    .optional()
}

fn load_version(
    tx: &rusqlite::Connection,
    tenant: &str,
    name: &str,
    version: u32,
) -> rusqlite::Result<Option<ConfigVersion>> {
    tx.query_row(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions WHERE tenant = ?1 AND name = ?2 AND version = ?3"
        ),
        params![tenant, name, version],
        version_from_row,
    )
    .optional()
}

fn not_found(tenant: &str, name: &str) -> MetaError {
    MetaError::NotFound(format!("config {name:?} in tenant {tenant:?}"))
}

impl MetaStore {
    fn config_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_version(
        &self,
        tx: &Transaction<'_>,
        tenant: &str,
        name: &str,
        body: &str,
        author: &str,
        message: &str,
        now: i64,
    ) -> Result<ConfigVersion, MetaError> {
        let next: u32 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM config_versions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO config_versions (tenant, name, version, body, author, message, created_at, sha256) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![tenant, name, next, body, author, message, now, sha256_hex(body)],
        )
        .map_err(|e| self.err(e))?;
        load_version(tx, tenant, name, next)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| not_found(tenant, name))
    }

    /// Creates document `name` with version 1 as its current version. The body's YAML is
    /// the caller's to validate; size, name and selector are checked here.
    pub fn create_config(
        &self,
        tenant: &str,
        name: &str,
        selector: &str,
        body: &str,
        author: &str,
        message: &str,
    ) -> Result<(ConfigDoc, ConfigVersion), MetaError> {
        check_name(name)?;
        check_body(body)?;
        check_message(message)?;
        let selector = Selector::parse(selector)?.to_string();
        let now = to_nanos(SystemTime::now(), "current time")?;
        self.config_tx(|tx| {
            if load_doc(tx, tenant, name).map_err(|e| self.err(e))?.is_some() {
                return Err(MetaError::Conflict(format!("config {name:?}")));
            }
            tx.execute(
                "INSERT INTO config_docs (tenant, name, selector, current_version, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                params![tenant, name, selector, now],
            )
            .map_err(|e| self.err(e))?;
            let version = self.insert_version(tx, tenant, name, body, author, message, now)?;
            let doc = load_doc(tx, tenant, name)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| not_found(tenant, name))?;
            Ok((doc, version))
        })
    }

    /// Adds a version; with `activate` it becomes current (ending any roll-out),
    /// otherwise it is only stored, for a roll-out. `selector` replaces the selector.
    #[allow(clippy::too_many_arguments)]
    pub fn put_config_version(
        &self,
        tenant: &str,
        name: &str,
        body: &str,
        author: &str,
        message: &str,
        selector: Option<&str>,
        activate: bool,
    ) -> Result<(ConfigDoc, ConfigVersion), MetaError> {
        check_body(body)?;
        check_message(message)?;
        let selector = selector
            .map(|s| Selector::parse(s).map(|s| s.to_string()))
            .transpose()?;
        let now = to_nanos(SystemTime::now(), "current time")?;
        self.config_tx(|tx| {
            if load_doc(tx, tenant, name).map_err(|e| self.err(e))?.is_none() {
                return Err(not_found(tenant, name));
            }
            let version = self.insert_version(tx, tenant, name, body, author, message, now)?;
            if activate {
                tx.execute(
                    "UPDATE config_docs SET current_version = ?3, rollout_version = NULL, \
                     rollout_percent = NULL, updated_at = ?4 WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name, version.version, now],
                )
                .map_err(|e| self.err(e))?;
            }
            if let Some(selector) = &selector {
                tx.execute(
                    "UPDATE config_docs SET selector = ?3, updated_at = ?4 WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name, selector, now],
                )
                .map_err(|e| self.err(e))?;
            }
            let doc = load_doc(tx, tenant, name)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| not_found(tenant, name))?;
            Ok((doc, version))
        })
    }

    /// Rolls back to `version`: a new version with its body becomes current.
    pub fn rollback_config(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
        author: &str,
        message: &str,
    ) -> Result<(ConfigDoc, ConfigVersion), MetaError> {
        let old = self.config_version(tenant, name, version)?;
        let message = if message.trim().is_empty() {
            format!("rollback to version {version}")
        } else {
            message.to_string()
        };
        self.put_config_version(tenant, name, &old.body, author, &message, None, true)
    }

    /// Starts, changes or ends a roll-out: `percent` 1–99 offers `version` to that share
    /// of the matching agents, 0 cancels the roll-out, 100 makes `version` current.
    pub fn set_config_rollout(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
        percent: u8,
    ) -> Result<ConfigDoc, MetaError> {
        if percent > 100 {
            return Err(MetaError::Invalid(format!(
                "percent {percent}: must be 0 to 100"
            )));
        }
        let now = to_nanos(SystemTime::now(), "current time")?;
        self.config_tx(|tx| {
            let doc = load_doc(tx, tenant, name)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| not_found(tenant, name))?;
            if load_version(tx, tenant, name, version)
                .map_err(|e| self.err(e))?
                .is_none()
            {
                return Err(MetaError::NotFound(format!(
                    "version {version} of config {name:?}"
                )));
            }
            let result = match percent {
                0 => tx.execute(
                    "UPDATE config_docs SET rollout_version = NULL, rollout_percent = NULL, updated_at = ?3 \
                     WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name, now],
                ),
                100 => tx.execute(
                    "UPDATE config_docs SET current_version = ?3, rollout_version = NULL, \
                     rollout_percent = NULL, updated_at = ?4 WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name, version, now],
                ),
                _ if version == doc.current_version => {
                    return Err(MetaError::Invalid(format!(
                        "version {version}: already the current version of config {name:?}"
                    )));
                }
                _ => tx.execute(
                    "UPDATE config_docs SET rollout_version = ?3, rollout_percent = ?4, updated_at = ?5 \
                     WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name, version, percent, now],
                ),
            };
            result.map_err(|e| self.err(e))?;
            load_doc(tx, tenant, name)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| not_found(tenant, name))
        })
    }

    /// Deletes a document and its history (the audit log keeps the record).
    pub fn delete_config(&self, tenant: &str, name: &str) -> Result<(), MetaError> {
        self.config_tx(|tx| {
            tx.execute(
                "DELETE FROM config_versions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(|e| self.err(e))?;
            let n = tx
                .execute(
                    "DELETE FROM config_docs WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )
                .map_err(|e| self.err(e))?;
            if n == 0 {
                return Err(not_found(tenant, name));
            }
            Ok(())
        })
    }

    /// One document.
    pub fn get_config(&self, tenant: &str, name: &str) -> Result<ConfigDoc, MetaError> {
        load_doc(&self.conn(), tenant, name)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| not_found(tenant, name))
    }

    /// The tenant's documents, by name.
    pub fn list_configs(&self, tenant: &str) -> Result<Vec<ConfigDoc>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DOC_COLUMNS} FROM config_docs d WHERE d.tenant = ?1 ORDER BY d.name"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([tenant], doc_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// Every version of a document, oldest first.
    pub fn config_versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<ConfigVersion>, MetaError> {
        let conn = self.conn();
        if load_doc(&conn, tenant, name)
            .map_err(|e| self.err(e))?
            .is_none()
        {
            return Err(not_found(tenant, name));
        }
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM config_versions WHERE tenant = ?1 AND name = ?2 ORDER BY version"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![tenant, name], version_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }

    /// One version of a document.
    pub fn config_version(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<ConfigVersion, MetaError> {
        load_version(&self.conn(), tenant, name, version)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| MetaError::NotFound(format!("version {version} of config {name:?}")))
    }

    /// What the tenant's agents may be given: each document's selector, current
    /// version and roll-out candidate, by name.
    pub fn active_configs(&self, tenant: &str) -> Result<Vec<ActiveConfig>, MetaError> {
        let docs = self.list_configs(tenant)?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let selector = Selector::parse(&doc.selector)?;
            let current = self.config_version(tenant, &doc.name, doc.current_version)?;
            let rollout = match doc.rollout {
                Some(r) => Some((r, self.config_version(tenant, &doc.name, r.version)?)),
                None => None,
            };
            out.push(ActiveConfig {
                name: doc.name,
                selector,
                current,
                rollout,
            });
        }
        Ok(out)
    }

    /// Writes agents' states in one transaction (the OpAMP server batches them).
    pub fn upsert_opamp_agents(&self, agents: &[OpampAgentRecord]) -> Result<(), MetaError> {
        if agents.is_empty() {
            return Ok(());
        }
        self.config_tx(|tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO opamp_agents ({AGENT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                     ON CONFLICT (instance_uid) DO UPDATE SET description = ?4, capabilities = ?5, \
                     config_hash_sent = ?6, config_hash_applied = ?7, remote_status = ?8, \
                     remote_error = ?9, healthy = ?10, health_status = ?11, effective_config = ?12, \
                     last_contact = ?14"
                ))
                .map_err(|e| self.err(e))?;
            for a in agents {
                stmt.execute(params![
                    a.instance_uid,
                    a.tenant,
                    a.key_id,
                    a.description,
                    a.capabilities as i64,
                    a.config_hash_sent,
                    a.config_hash_applied,
                    a.remote_status,
                    a.remote_error,
                    a.healthy,
                    a.health_status,
                    a.effective_config,
                    to_nanos(a.first_seen, "first contact")?,
                    to_nanos(a.last_contact, "last contact")?,
                ])
                .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    /// Persisted OpAMP agents of a tenant (all for `None`), by instance uid.
    pub fn list_opamp_agents(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<OpampAgentRecord>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {AGENT_COLUMNS} FROM opamp_agents WHERE ?1 IS NULL OR tenant = ?1 ORDER BY instance_uid"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([tenant], agent_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
        store.bootstrap().unwrap();
        (dir, store)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_parses_matches_and_names_errors() {
        let s = Selector::parse(" env=prod , role!=db").unwrap();
        assert_eq!(s.to_string(), "env=prod,role!=db");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "prod"), ("role", "web")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("role", "db")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        for bad in ["env", "env=prod,,role=web", "=x", "e nv=x", "env=a b"] {
            let err = Selector::parse(bad).unwrap_err().to_string();
            assert!(err.contains("selector"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["web", "0base", "a.b-c_d", &"a".repeat(63)] {
            assert!(valid_config_name(ok), "{ok}");
        }
        for bad in ["", "Web", "-x", ".x", "a/b", &"a".repeat(64), "é"] {
            assert!(!valid_config_name(bad), "{bad}");
        }
    }

    #[test]
    fn versions_rollback_rollout_and_delete() {
        let (_dir, s) = store();
        let (doc, v1) = s
            .create_config("default", "base", "env=prod", "a: 1\n", "user:ann", "first")
            .unwrap();
        assert_eq!((doc.current_version, v1.version), (1, 1));
        assert!(matches!(
            s.create_config("default", "base", "", "a: 1\n", "x", ""),
            Err(MetaError::Conflict(_))
        ));
        let (doc, v2) = s
            .put_config_version("default", "base", "a: 2\n", "user:ann", "two", None, true)
            .unwrap();
        assert_eq!((doc.current_version, v2.version), (2, 2));
        let (doc, v3) = s
            .put_config_version("default", "base", "a: 3\n", "key:x", "three", None, false)
            .unwrap();
        assert_eq!(
            (doc.current_version, doc.latest_version, v3.version),
            (2, 3, 3)
        );
        let doc = s.set_config_rollout("default", "base", 3, 50).unwrap();
        assert_eq!(
            doc.rollout,
            Some(Rollout {
                version: 3,
                percent: 50
            })
        );
        assert!(s.set_config_rollout("default", "base", 2, 50).is_err());
        assert!(s.set_config_rollout("default", "base", 9, 50).is_err());
        let doc = s.set_config_rollout("default", "base", 3, 100).unwrap();
        assert_eq!((doc.current_version, doc.rollout), (3, None));
        let (doc, v4) = s
            .rollback_config("default", "base", 1, "user:bob", "")
            .unwrap();
        assert_eq!((doc.current_version, v4.version), (4, 4));
        assert_eq!(v4.body, "a: 1\n");
        assert_eq!(v4.sha256, v1.sha256);
        assert_eq!(v4.message, "rollback to version 1");
        let history = s.config_versions("default", "base").unwrap();
        assert_eq!(
            history.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let active = s.active_configs("default").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].current.body, "a: 1\n");
        s.delete_config("default", "base").unwrap();
        assert!(matches!(
            s.get_config("default", "base"),
            Err(MetaError::NotFound(_))
        ));
        assert!(s.active_configs("default").unwrap().is_empty());
    }

    #[test]
    fn tenants_do_not_see_each_others_documents() {
        let (_dir, s) = store();
        s.create_tenant("other").unwrap();
        s.create_config("default", "base", "", "a: 1\n", "x", "")
            .unwrap();
        assert!(s.list_configs("other").unwrap().is_empty());
        assert!(s.get_config("other", "base").is_err());
        assert!(s.config_version("other", "base", 1).is_err());
        s.create_config("other", "base", "", "b: 1\n", "x", "")
            .unwrap();
        assert_eq!(
            s.active_configs("default").unwrap()[0].current.body,
            "a: 1\n"
        );
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let (_dir, s) = store();
        let big = "a".repeat(MAX_CONFIG_BYTES + 1);
        let err = s
            .create_config("default", "big", "", &big, "x", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
        let err = s
            .create_config("default", "Bad", "", "a: 1", "x", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config name"), "{err}");
        let err = s
            .create_config("default", "ok", "env", "a: 1", "x", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("selector"), "{err}");
    }

    #[test]
    fn rollout_membership_is_stable_and_grows() {
        let uids: Vec<String> = (0..1000).map(|i| format!("{i:032x}")).collect();
        let in_at = |p: u8| {
            uids.iter()
                .filter(|u| in_rollout("base", u, p))
                .cloned()
                .collect::<std::collections::HashSet<_>>()
        };
        let (ten, fifty) = (in_at(10), in_at(50));
        assert!(ten.is_subset(&fifty));
        assert!((400..600).contains(&fifty.len()), "{}", fifty.len());
        assert!(in_at(0).is_empty());
        assert_eq!(in_at(100).len(), 1000);
    }

    #[test]
    fn agent_state_round_trips() {
        let (_dir, s) = store();
        let now = from_nanos(to_nanos(SystemTime::now(), "now").unwrap());
        let mut rec = OpampAgentRecord {
            instance_uid: "00ff".into(),
            tenant: "default".into(),
            key_id: "abc".into(),
            description: "{}".into(),
            capabilities: 3,
            config_hash_sent: "aa".into(),
            config_hash_applied: String::new(),
            remote_status: "unset".into(),
            remote_error: String::new(),
            healthy: None,
            health_status: String::new(),
            effective_config: String::new(),
            first_seen: now,
            last_contact: now,
        };
        s.upsert_opamp_agents(std::slice::from_ref(&rec)).unwrap();
        rec.remote_status = "applied".into();
        rec.healthy = Some(true);
        s.upsert_opamp_agents(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(s.list_opamp_agents(Some("default")).unwrap(), vec![rec]);
        assert!(s.list_opamp_agents(Some("other")).unwrap().is_empty());
    }

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\n";
        let d = unified_diff(old, new, "v1", "v2");
        assert!(d.starts_with("--- v1\n+++ v2\n"), "{d}");
        assert!(d.contains("-d\n+D\n"), "{d}");
        assert!(d.contains("+i\n"), "{d}");
        assert!(unified_diff(old, old, "v1", "v1").is_empty());
        let d = unified_diff("", "x\n", "a", "b");
        assert!(d.contains("@@ -0,0 +1,1 @@\n+x\n"), "{d}");
    }

    proptest::proptest! {
        #[test]
        fn diff_applies_back(a in proptest::collection::vec("[abc]", 0..20), b in proptest::collection::vec("[abc]", 0..20)) {
            let (old, new) = (a.join("\n"), b.join("\n"));
            let d = unified_diff(&old, &new, "x", "y");
            // Rebuild both sides from the hunks plus the untouched lines.
            let minus = d.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count();
            let plus = d.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count();
            let ol: Vec<&str> = old.lines().collect();
            let nl: Vec<&str> = new.lines().collect();
            proptest::prop_assert_eq!(ol.len() - minus, nl.len() - plus);
            proptest::prop_assert_eq!(d.is_empty(), ol == nl);
        }
    }
}
