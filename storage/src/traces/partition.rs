//! One time partition of one tenant's spans: a Tantivy index in its own directory.
//!
//! Partitions are a day long (UTC), so retention drops whole directories and a search
//! opens only the days its time range touches.

use std::path::{Path, PathBuf};

use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, ReloadPolicy};

use super::TraceStoreError;
use super::schema::TraceFields;

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
            start_ns: time_ns.div_euclid(PARTITION_NS) * PARTITION_NS,
        }
    }

    pub(crate) fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(PARTITION_NS)
    }

    /// `<root>/<tenant>/<day number>`: tenant names are restricted to a safe alphabet
    /// by `valid_tenant`, so they can be directory names as they are.
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

/// The read side of a partition, shared with queries.
#[derive(Clone)]
pub(crate) struct PartitionReader {
    pub(crate) key: PartitionKey,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
}

/// Doc store block size; see [`settings`].
const DOCSTORE_BLOCK_BYTES: usize = 64 * 1024;

fn settings() -> IndexSettings {
    IndexSettings {
        // The log index's doc store settings (measured there): zstd level 3 in 64 KiB
        // blocks. Spans of one trace usually arrive together, so a trace's envelopes
        // share a few blocks and a lookup decompresses few of them.
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: DOCSTORE_BLOCK_BYTES,
        ..IndexSettings::default()
    }
}

/// Opens a partition's index, creating it if `create` is set and it does not exist.
pub(crate) fn open(
    root: &Path,
    key: &PartitionKey,
    fields: &TraceFields,
) -> Result<(PartitionReader, u64), TraceStoreError> {
    let dir = key.dir(root);
    std::fs::create_dir_all(&dir).map_err(|source| TraceStoreError::Io {
        path: dir.clone(),
        source,
    })?;
    let tantivy_err = |source: tantivy::TantivyError| TraceStoreError::Index {
        path: dir.clone(),
        source,
    };
    let mmap = MmapDirectory::open(&dir).map_err(|e| TraceStoreError::Index {
        path: dir.clone(),
        source: e.into(),
    })?;
    let index = Index::builder()
        .schema(fields.schema.clone())
        .settings(settings())
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
}
