//! The log's errors: one narrow enum per operation, each IO error with its context.

use std::io;
use std::path::{Path, PathBuf};

use crate::record::BatchError;

/// An IO failure, with the operation, the file and the byte offset it concerned.
/// Cloneable so that a fenced partition can hand the same cause to every waiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} {path} at byte {offset}: {message}")]
pub struct LogIoError {
    pub operation: &'static str,
    pub path: PathBuf,
    pub offset: u64,
    pub kind: io::ErrorKind,
    pub message: String,
}

impl LogIoError {
    pub fn new(operation: &'static str, path: &Path, offset: u64, error: io::Error) -> Self {
        LogIoError {
            operation,
            path: path.to_path_buf(),
            offset,
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

/// Why an append (or a wait for its durability) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// An earlier write or fsync failed; the partition accepts nothing more until reopened.
    #[error("partition is fenced after an earlier IO failure: {0}")]
    Fenced(LogIoError),
    #[error("partition log is closed")]
    Closed,
    /// The batch was appended but removed by a truncation before it became durable.
    #[error("offset {offset} was truncated before it became durable (log end is now {log_end})")]
    Truncated { offset: u64, log_end: u64 },
    /// An idempotent producer's batch was refused (out of sequence, fenced, malformed).
    #[error(transparent)]
    Producer(#[from] super::producers::ProducerStateError),
    /// A replicated batch does not start where the log ends (a follower appends the
    /// leader's batches exactly in order).
    #[error("a replicated batch starts at {got}, the log ends at {expected}")]
    NotContiguous { expected: u64, got: u64 },
    /// This replica's role does not allow the append (it stopped leading at that epoch,
    /// or follows another leader now).
    #[error("this replica may not append at epoch {epoch} ({fence:?})")]
    NotAllowed {
        fence: super::partition::AppendFence,
        epoch: u32,
    },
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error(transparent)]
    Io(#[from] LogIoError),
    #[error("corrupt batch in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: BatchError,
    },
}

/// Why a partition log could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] LogIoError),
    #[error("bad log configuration: {0}")]
    BadConfig(String),
    #[error("log directory {path} is inconsistent: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
}

/// Why truncation, retention, a flush or a close failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Io(#[from] LogIoError),
    #[error("partition is fenced after an earlier IO failure: {0}")]
    Fenced(LogIoError),
    #[error("partition log is closed")]
    Closed,
    #[error("cannot truncate to offset {offset}: the log holds [{log_start}, {log_end})")]
    TruncateOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("corrupt batch in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: BatchError,
    },
    /// A follower's cut for a leader this replica no longer follows.
    #[error("this replica no longer follows the leader of epoch {epoch} ({fence})")]
    NotFollowing { fence: String, epoch: u32 },
}

impl From<AppendError> for MaintenanceError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Fenced(io) => MaintenanceError::Fenced(io),
            // Flushes and closes append nothing, so no producer check can refuse them.
            AppendError::Closed
            | AppendError::Truncated { .. }
            | AppendError::Producer(_)
            | AppendError::NotContiguous { .. }
            | AppendError::NotAllowed { .. } => MaintenanceError::Closed,
        }
    }
}
