//! The one place the store maps files into memory.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::MetricsError;

/// Maps a block file read-only. An empty file maps to an empty slice without `mmap`
/// (which refuses zero-length mappings).
#[allow(unsafe_code)]
pub(crate) fn map_file(path: &Path) -> Result<Option<Mmap>, MetricsError> {
    let file = File::open(path).map_err(|e| MetricsError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| MetricsError::io(path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: memmap2 is unsafe because another process or thread could modify or
    // truncate the file while it is mapped, which would be undefined behaviour for a
    // `&[u8]`. Block files are written in a temporary directory, fsynced, and renamed
    // into place; after that nothing in Vantage ever opens them for writing again: they
    // are only read and finally unlinked (unlinking keeps the mapping valid). The data
    // directory belongs to the collector, so no other writer is expected.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| MetricsError::io(path, e))?;
    Ok(Some(map))
}
