//! One day partition of one tenant's spans (see `crate::partitioned`): a Tantivy index
//! in its own directory.

use std::path::Path;

use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings};

use super::TraceStoreError;
use super::schema::TraceFields;
use crate::partitioned::{Partition, PartitionKey, reader_and_lsn};

/// The read side of a partition, shared with queries.
#[derive(Clone)]
pub(crate) struct PartitionReader {
    pub(crate) key: PartitionKey,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
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

/// Opens a partition's index, creating it if it does not exist.
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
        .tokenizers(crate::keyword::tokenizers())
        .open_or_create(mmap)
        .map_err(tantivy_err)?;
    let (reader, committed_lsn) = reader_and_lsn(&index).map_err(tantivy_err)?;
    Ok((
        PartitionReader {
            key: key.clone(),
            index,
            reader,
        },
        committed_lsn,
    ))
}
