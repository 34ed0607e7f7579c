//! Errors of the write-ahead log.

use std::path::PathBuf;

/// Everything that can go wrong in the write-ahead log. Each variant names the file or
/// option involved so an operator can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A system call on a log file or directory failed.
    #[error("wal i/o error on {path}: {source}")]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A segment holds bytes that are not a valid log: a foreign file, an unsupported
    /// version, a bad checksum or broken LSN order.
    #[error("wal segment {path} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the first bad byte (0 for a bad file header).
        offset: u64,
        /// What was wrong there.
        reason: String,
    },
    /// The log was shut down, or its writer thread is gone.
    #[error("wal is closed")]
    Closed,
    /// A payload is larger than one record may be.
    #[error("wal record of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length of the rejected payload.
        len: usize,
        /// The limit, [`super::MAX_RECORD_BYTES`].
        max: usize,
    },
    /// Another `Wal` (in this or another process) has the directory open.
    #[error("wal directory {path} is locked by another writer")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An option of [`super::WalOptions`] has a value the log cannot work with.
    #[error("invalid wal option {name}: {reason}")]
    InvalidOption {
        /// Field name in `WalOptions`.
        name: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// The writer thread panicked; records queued at that moment were not acknowledged.
    #[error("wal writer thread panicked")]
    WriterPanicked,
}

impl WalError {
    /// Builds an [`WalError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a [`WalError::Corrupt`].
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy of this error for another waiter of the same failed group: `io::Error` is
    /// not `Clone`, so the kind and message are carried over.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            WalError::Io { path, source } => WalError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => WalError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            WalError::Closed => WalError::Closed,
            WalError::TooLarge { len, max } => WalError::TooLarge {
                len: *len,
                max: *max,
            },
            WalError::Locked { path } => WalError::Locked { path: path.clone() },
            WalError::InvalidOption { name, reason } => WalError::InvalidOption {
                name,
                reason: reason.clone(),
            },
            WalError::WriterPanicked => WalError::WriterPanicked,
        }
    }
}
