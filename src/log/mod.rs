//! The partition log: a segmented, append-only, direct-IO write-ahead log per partition,
//! and the per-shard resources its partitions share.
//!
//! Pieces, one file each: `segment` (files, naming, the batch scanner), `index` (sparse
//! offset and time indexes), `io` (the one seam to the disk), `partition` (state and the
//! append path), `flush` (group commit: the writer task, segment roll), `read` (reads by
//! offset and timestamp), `recovery` (open: scan, truncate, rebuild), `maintenance`
//! (truncation, retention, close), `cache` (recent batches), `files` (open-file budget),
//! `shard` (what a shard's partitions share).
//!
//! The log knows record batches (`crate::record`) and files; it knows no network.
//!
//! # Durability, per flush policy
//!
//! `append` assigns offsets at once; `wait_durable` resolves when the batch is as durable as
//! the partition's [`FlushPolicy`] makes it:
//!
//! | policy | written to the segment (O_DIRECT) | `fdatasync` | `wait_durable` means |
//! |---|---|---|---|
//! | `every-batch` | as soon as the writer is free | after every write | on stable storage |
//! | `bytes` | when `bytes` are pending, or `max_delay_us` after the first | after every write | on stable storage |
//! | `interval` | every `interval_us`, or sooner when a full write (1 MiB) is pending | after every write | on stable storage |
//! | `never` | `write_delay_us` after the first pending byte, or when 1 MiB is pending | only at segment roll and close | in the device (survives `kill -9` of the broker, not a power loss) |
//!
//! Concurrent appends share writes and syncs (group commit): while one write and sync are in
//! flight, new batches gather and go out together in the next one.

pub mod cache;
pub mod checkpoint;
pub mod epochs;
mod error;
pub mod files;
mod flush;
pub mod idempotence;
pub mod index;
pub mod io;
pub mod journal;
mod maintenance;
mod partition;
pub mod producers;
mod read;
mod recovery;
mod replica;
mod rounds;
pub mod segment;
mod shard;

use std::time::Duration;

pub use error::{AppendError, LogIoError, MaintenanceError, OpenError, ReadError};
pub use io::FaultPlan;
pub use maintenance::RetentionOutcome;
pub use partition::{AppendFence, AppendInfo, IoStats, PartitionLog};
pub use read::{ReadBatches, ReadChunk};
pub use shard::{LogShard, LogShardSnapshot, ShardLogConfig};

use crate::constants::{
    PARTITION_PENDING_BYTES_MAX, RETENTION_MS_DEFAULT, SEGMENT_AGE_MS_DEFAULT,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_PREALLOCATE_BYTES,
    WRITE_BYTES_MAX,
};

/// When appended batches are written and synced. See the module doc for guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum FlushPolicy {
    /// Write and fdatasync after every batch; concurrent batches share one.
    EveryBatch,
    /// Write and fdatasync once `bytes` are pending, or `max_delay_us` after the first.
    Bytes { bytes: u64, max_delay_us: u64 },
    /// Write and fdatasync every `interval_us` while data is pending.
    Interval { interval_us: u64 },
    /// Write behind without fdatasync; replication (or nothing) carries durability.
    Never { write_delay_us: u64 },
}

impl FlushPolicy {
    /// Whether every write is followed by an fdatasync.
    pub fn syncs(&self) -> bool {
        !matches!(self, FlushPolicy::Never { .. })
    }

    /// Pending bytes at which a write starts at once. Never above half the pending bound,
    /// so that appends waiting for room always get a write started.
    pub(crate) fn bytes_trigger(&self) -> usize {
        let trigger = match *self {
            FlushPolicy::EveryBatch => 0,
            FlushPolicy::Bytes { bytes, .. } => usize::try_from(bytes).unwrap_or(usize::MAX),
            FlushPolicy::Interval { .. } | FlushPolicy::Never { .. } => WRITE_BYTES_MAX,
        };
        trigger.min(PARTITION_PENDING_BYTES_MAX / 2)
    }

    /// How long the first pending byte may wait for a write.
    pub(crate) fn delay(&self) -> Duration {
        match *self {
            FlushPolicy::EveryBatch => Duration::ZERO,
            FlushPolicy::Bytes {
                max_delay_us: us, ..
            }
            | FlushPolicy::Interval { interval_us: us }
            | FlushPolicy::Never { write_delay_us: us } => Duration::from_micros(us),
        }
    }
}

/// The configuration of one partition's log (topic configuration, in broker terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The active segment rolls before it would pass this size.
    pub segment_bytes: u64,
    /// The active segment rolls once its first batch is this old.
    pub segment_age_ms: u64,
    /// Closed segments whose newest timestamp is older than this are deleted (`None`: keep).
    pub retention_ms: Option<u64>,
    /// Oldest closed segments are deleted while the log is larger than this (`None`: keep).
    pub retention_bytes: Option<u64>,
    pub flush: FlushPolicy,
    /// Space reserved ahead of the writer in one allocation.
    pub preallocate_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_age_ms: SEGMENT_AGE_MS_DEFAULT,
            retention_ms: Some(RETENTION_MS_DEFAULT),
            retention_bytes: None,
            flush: FlushPolicy::Interval { interval_us: 1000 },
            preallocate_bytes: SEGMENT_PREALLOCATE_BYTES,
        }
    }
}

impl LogConfig {
    /// Checks the configuration; every problem is a message for the operator.
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |message: String| Err(OpenError::BadConfig(message));
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes {} is outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            ));
        }
        if self.segment_age_ms == 0 {
            return bad("segment_age_ms must be positive".into());
        }
        if self.preallocate_bytes % crate::constants::IO_ALIGNMENT_BYTES != 0 {
            return bad(format!(
                "preallocate_bytes {} is not a multiple of {}",
                self.preallocate_bytes,
                crate::constants::IO_ALIGNMENT_BYTES
            ));
        }
        match self.flush {
            FlushPolicy::Bytes { bytes: 0, .. } => bad("flush bytes must be positive".into()),
            FlushPolicy::Interval { interval_us: 0 } => {
                bad("flush interval_us must be positive (use every-batch)".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
