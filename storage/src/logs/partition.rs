//! One time partition of one tenant's logs: a Tantivy index in its own directory.
//!
//! Partitions are a day long (UTC), so retention drops whole directories and a search
//! opens only the days its time range touches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, ReloadPolicy};

use super::schema::{LogFields, SCHEMA_VERSION_FILE, SchemaVersion, register_tokenizers};
use super::{DocStoreOptions, LogStoreError};

/// Length of a partition: one UTC day.
pub(crate) const PARTITION_NS: i64 = 86_400 * 1_000_000_000;

/// Identifies a partition: tenant and first nanosecond of its day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartitionKey {
    pub(crate) tenant: String,
    pub(crate) start_ns: i64,
}

impl PartitionKey {
    pub(crate) fn for_time(tenant: &str, time_ns: i64) -> Self {
        PartitionKey {
            tenant: tenant.to_string(),
            start_ns: Self::start_for(time_ns),
        }
    }

    /// The start of the day partition holding `time_ns`.
    pub(crate) fn start_for(time_ns: i64) -> i64 {
        time_ns.div_euclid(PARTITION_NS) * PARTITION_NS
    }

    pub(crate) fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(PARTITION_NS)
    }

    /// `<root>/<tenant>/<day number>`: tenant names are restricted to a safe alphabet
    /// by [`valid_tenant`], so they can be directory names as they are.
    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.tenant)
            .join(format!("day-{}", self.start_ns.div_euclid(PARTITION_NS)))
    }

    /// Parses a partition directory name back into its start time.
    pub(crate) fn parse_day_dir(name: &str) -> Option<i64> {
        let day: i64 = name.strip_prefix("day-")?.parse().ok()?;
        day.checked_mul(PARTITION_NS)
    }
}

/// Tenant names become directory names: keep them to a safe alphabet.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The read side of a partition, shared with queries.
#[derive(Clone)]
pub(crate) struct PartitionReader {
    pub(crate) key: PartitionKey,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    /// The fields of the schema this partition was created with: its documents are
    /// built, and its queries parsed, with these.
    pub(crate) fields: Arc<LogFields>,
}

/// Default doc store block size; see [`settings`].
pub(crate) const DOCSTORE_BLOCK_BYTES: usize = 128 * 1024;
/// Default doc store zstd level; see [`settings`].
pub(crate) const DOCSTORE_ZSTD_LEVEL: i32 = 3;

fn settings(docstore: &DocStoreOptions) -> IndexSettings {
    IndexSettings {
        // Stored records are half the index. zstd level 3 in 128 KiB blocks: measured
        // (`vantage-e2e --only-indexer`), 64 KiB blocks cost 2.4 % more index bytes for no
        // less CPU, and 16 KiB blocks ~10 % more bytes and ~15 % more indexing CPU;
        // 512 KiB blocks or levels 5-7 save 3-5 % more bytes for 15-35 % more CPU. One
        // hit costs a 128 KiB decompression (~100 µs), shared by the hits in its block.
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(docstore.zstd_level),
        }),
        docstore_blocksize: docstore.block_bytes,
        ..IndexSettings::default()
    }
}

/// Opens a partition's index, creating it with schema `new_version` if it does not
/// exist. An existing partition keeps the schema it was created with: its version comes
/// from [`SCHEMA_VERSION_FILE`] (none: version 1, written before versions existed) and
/// must match the schema in its `meta.json`.
pub(crate) fn open(
    root: &Path,
    key: &PartitionKey,
    versions: &[Arc<LogFields>],
    new_version: SchemaVersion,
    docstore: &DocStoreOptions,
) -> Result<(PartitionReader, u64), LogStoreError> {
    let dir = key.dir(root);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogStoreError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tantivy_err = |source: tantivy::TantivyError| LogStoreError::Index {
        path: dir.clone(),
        source,
    };
    let mmap = MmapDirectory::open(&dir).map_err(|e| LogStoreError::Index {
        path: dir.clone(),
        source: e.into(),
    })?;
    let exists = Index::exists(&mmap).map_err(|e| tantivy_err(e.into()))?;
    let version_path = dir.join(SCHEMA_VERSION_FILE);
    let version = match std::fs::read_to_string(&version_path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(SchemaVersion::from_number)
            .ok_or_else(|| LogStoreError::UnknownSchemaVersion {
                path: version_path.clone(),
                found: text.trim().chars().take(32).collect(),
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let version = if exists {
                SchemaVersion::V1
            } else {
                new_version
            };
            // Before the index, so that an index never exists without its version.
            super::write_atomic(&version_path, version.number().to_string().as_bytes())
                .map_err(io_err(&version_path))?;
            version
        }
        Err(source) => {
            return Err(LogStoreError::Io {
                path: version_path,
                source,
            });
        }
    };
    let fields = versions
        .iter()
        .find(|f| f.version == version)
        .cloned()
        .unwrap_or_else(|| Arc::new(LogFields::for_version(version)));
    let tokenizers = tantivy::tokenizer::TokenizerManager::default();
    register_tokenizers(&tokenizers);
    // `open_or_create` refuses an index whose stored schema differs from the one given.
    let index = Index::builder()
        .schema(fields.schema.clone())
        .settings(settings(docstore))
        .tokenizers(tokenizers)
        .open_or_create(mmap)
        .map_err(tantivy_err)?;
    let committed_lsn = index
        .load_metas()
        .map_err(tantivy_err)?
        .payload
        .as_deref()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(tantivy_err)?;
    Ok((
        PartitionReader {
            key: key.clone(),
            index,
            reader,
            fields,
        },
        committed_lsn,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_whole_days() {
        let k = PartitionKey::for_time("default", PARTITION_NS + 5);
        assert_eq!(k.start_ns, PARTITION_NS);
        assert_eq!(k.end_ns(), 2 * PARTITION_NS);
        let neg = PartitionKey::for_time("default", -1);
        assert_eq!(neg.start_ns, -PARTITION_NS);
        let name = k
            .dir(Path::new("/x"))
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(PartitionKey::parse_day_dir(&name), Some(PARTITION_NS));
        assert!(PartitionKey::parse_day_dir("day-x").is_none());
    }

    #[test]
    fn tenant_names_are_safe_paths() {
        assert!(valid_tenant("default"));
        assert!(valid_tenant("team-a_1"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("../etc"));
        assert!(!valid_tenant("a/b"));
        assert!(!valid_tenant(&"x".repeat(65)));
    }
}
