//! What the OpAMP client keeps in the state directory: the instance uid (generated
//! once, so the collector sees the same agent across restarts) and the last remote
//! configuration that applied, so a restart while the collector is unreachable runs
//! it. Both written atomically (temporary file, fsync, rename).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use vantage_proto::opamp::AgentRemoteConfig;

/// The instance uid's file: 16 raw bytes.
pub(crate) const INSTANCE_UID_FILE: &str = "opamp_instance_uid";
/// The last applied remote configuration: an `AgentRemoteConfig` protobuf with a
/// CRC32 after it.
pub(crate) const REMOTE_CONFIG_FILE: &str = "opamp_remote_config";

/// Failures to read or write the control state.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A UUID v7: 48 bits of Unix milliseconds, version 7, variant 10, random bits.
pub(crate) fn new_uuid_v7() -> [u8; 16] {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    for byte in &mut b[6..] {
        *byte = fastrand::u8(..);
    }
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    b
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The saved instance uid, or a new one saved now. An unreadable file (wrong length)
/// is replaced: the collector then sees a new agent, which is the honest outcome.
pub(crate) fn instance_uid(state_dir: &Path) -> Result<[u8; 16], StateError> {
    let path = state_dir.join(INSTANCE_UID_FILE);
    match std::fs::read(&path) {
        Ok(b) if b.len() == 16 => {
            let mut uid = [0u8; 16];
            uid.copy_from_slice(&b);
            return Ok(uid);
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "instance uid unreadable; making a new one")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(StateError::Read { path, source }),
    }
    let uid = new_uuid_v7();
    write_atomic(&path, &uid)?;
    Ok(uid)
}

/// Replaces the saved instance uid (the server assigned a new one).
pub(crate) fn save_instance_uid(state_dir: &Path, uid: &[u8; 16]) -> Result<(), StateError> {
    write_atomic(&state_dir.join(INSTANCE_UID_FILE), uid)
}

/// Saves the remote configuration that applied.
pub(crate) fn save_remote_config(
    state_dir: &Path,
    config: &AgentRemoteConfig,
) -> Result<(), StateError> {
    let mut bytes = config.encode_to_vec();
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomic(&state_dir.join(REMOTE_CONFIG_FILE), &bytes)
}

/// The saved remote configuration; `None` when there is none or it is damaged
/// (logged: the agent then runs its local configuration until the server answers).
pub(crate) fn load_remote_config(state_dir: &Path) -> Option<AgentRemoteConfig> {
    let path = state_dir.join(REMOTE_CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the saved remote config");
            return None;
        }
    };
    let decoded = (bytes.len() >= 4)
        .then(|| bytes.split_at(bytes.len() - 4))
        .filter(|(body, crc)| crc32fast::hash(body).to_le_bytes() == **crc)
        .and_then(|(body, _)| AgentRemoteConfig::decode(body).ok());
    if decoded.is_none() {
        tracing::warn!(path = %path.display(), "saved remote config damaged; ignoring it");
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::opamp::{AgentConfigFile, AgentConfigMap};

    #[test]
    fn uuid_v7_layout() {
        let a = new_uuid_v7();
        assert_eq!(a[6] >> 4, 7);
        assert_eq!(a[8] >> 6, 0b10);
        assert_ne!(a, new_uuid_v7());
    }

    #[test]
    fn instance_uid_is_stable_and_replaceable() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance_uid(dir.path()).unwrap();
        assert_eq!(instance_uid(dir.path()).unwrap(), a);
        save_instance_uid(dir.path(), &[3; 16]).unwrap();
        assert_eq!(instance_uid(dir.path()).unwrap(), [3; 16]);
        std::fs::write(dir.path().join(INSTANCE_UID_FILE), b"short").unwrap();
        assert_ne!(instance_uid(dir.path()).unwrap(), [3; 16]);
    }

    #[test]
    fn remote_config_round_trips_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_remote_config(dir.path()).is_none());
        let rc = AgentRemoteConfig {
            config: Some(AgentConfigMap {
                config_map: [(
                    "a".to_string(),
                    AgentConfigFile {
                        body: b"host_metrics: {enabled: false}\n".to_vec(),
                        content_type: "text/yaml".into(),
                    },
                )]
                .into(),
            }),
            config_hash: vec![1, 2, 3],
        };
        save_remote_config(dir.path(), &rc).unwrap();
        assert_eq!(load_remote_config(dir.path()).unwrap(), rc);
        let path = dir.path().join(REMOTE_CONFIG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load_remote_config(dir.path()).is_none());
        std::fs::write(&path, b"x").unwrap();
        assert!(load_remote_config(dir.path()).is_none());
    }
}
