//! One day partition of one tenant's logs (see `crate::partitioned`): a Tantivy index
//! in its own directory, with the schema version it was created with.

use std::path::Path;
use std::sync::Arc;

use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings};

use super::schema::{LogFields, SCHEMA_VERSION_FILE, SchemaVersion, register_tokenizers};
use super::{DocStoreOptions, LogStoreError};
use crate::partitioned::{Partition, PartitionKey, reader_and_lsn, write_atomic};

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

impl Partition for PartitionReader {
    fn key(&self) -> &PartitionKey {
        &self.key
    }

    fn index(&self) -> &Index {
        &self.index
    }

    fn reader(&self) -> &IndexReader {
        &self.reader
    }
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
            write_atomic(&version_path, version.number().to_string().as_bytes())
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
    let (reader, committed_lsn) = reader_and_lsn(&index).map_err(tantivy_err)?;
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
