//! Idempotent producers in the log: each partition keeps a `producers::ProducerStateTable`
//! in its state. An append checks and records the batch's producer fields under the same
//! borrow that assigns its offsets, so two copies of one batch racing each other are
//! appended once. The table is snapshotted to `producers.snapshot` when a segment rolls and
//! when the log closes, and rebuilt on open from that snapshot plus the headers of the
//! batches after it (the whole log only when no usable snapshot exists).
//!
//! A snapshot taken at offset `n` holds only what batches below `n` left in the table, so a
//! crash that loses unwritten batches above `n` leaves nothing in it that the log does not
//! hold. A snapshot whose offset lies past the recovered log end (or below its start) is
//! ignored.
//!
//! The leader-epoch cache (`super::epochs`) is saved beside the snapshot, at the same
//! offset, and rebuilt by the same replay.

use std::path::{Path, PathBuf};

use super::epochs::EpochCache;
use super::error::{LogIoError, OpenError};
use super::io::{read_small_file, write_small_file};
use super::partition::{Partition, PartitionLog};
use super::producers::ProducerStateTable;
use crate::constants::LOG_REPLAY_READ_BYTES;
use crate::record::BatchIter;

/// The snapshot file in a partition directory.
pub const PRODUCER_SNAPSHOT_FILE: &str = "producers.snapshot";

pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(PRODUCER_SNAPSHOT_FILE)
}

/// Writes the table as it stood below `offset` (every batch below it is in the log).
pub(super) async fn write_snapshot(partition: &Partition, offset: u64) -> Result<(), LogIoError> {
    let bytes = {
        let state = partition.state.borrow();
        if state.producer_snapshot_at == Some(offset) {
            return Ok(());
        }
        let mut below = state.producers.clone();
        below.truncate_to(offset);
        let mut epochs = state.epochs.clone();
        epochs.truncate_to(offset);
        (below.encode_snapshot(offset), epochs.encode(offset))
    };
    let (bytes, epochs) = bytes;
    write_small_file(&super::epochs::path(&partition.dir), epochs).await?;
    write_small_file(&snapshot_path(&partition.dir), bytes).await?;
    let mut state = partition.state.borrow_mut();
    // Current only while nothing was appended past it meanwhile.
    state.producer_snapshot_at = (state.next_offset == offset).then_some(offset);
    Ok(())
}

impl PartitionLog {
    /// Rebuilds the producer table after recovery: the snapshot, then every batch header
    /// from the snapshot's offset to the log end.
    pub(super) async fn rebuild_producers(&self) -> Result<(), OpenError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let path = snapshot_path(self.dir());
        let snapshot = read_small_file(&path)?.and_then(|bytes| {
            match ProducerStateTable::decode_snapshot(&bytes) {
                Ok((offset, table)) if (start..=end).contains(&offset) => Some((offset, table)),
                Ok((offset, _)) => {
                    tracing::info!(path = %path.display(), offset, start, end, "producer snapshot is outside the log: replaying the log");
                    None
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "producer snapshot unreadable: replaying the log");
                    None
                }
            }
        });
        let snapshot_at = snapshot.as_ref().map(|(offset, _)| *offset);
        let (producers_from, mut table) = snapshot.unwrap_or((start, ProducerStateTable::new()));
        let (epochs_from, mut epochs) = self.saved_epochs(start, end);
        let mut offset = producers_from.min(epochs_from);
        let now_ms = self.clock().wall_ms();
        let inconsistent = |reason: String| OpenError::Inconsistent {
            path: self.dir().to_path_buf(),
            reason,
        };
        while offset < end {
            let read = self
                .read(offset, LOG_REPLAY_READ_BYTES, end)
                .await
                .map_err(|e| inconsistent(format!("replaying producer state at {offset}: {e}")))?;
            if read.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                for item in BatchIter::new(chunk) {
                    let (header, _) = item.map_err(|e| {
                        inconsistent(format!("replaying producer state at {offset}: {e}"))
                    })?;
                    if header.base_offset < offset {
                        continue;
                    }
                    if header.base_offset >= epochs_from {
                        epochs.note(header.leader_epoch, header.base_offset);
                    }
                    if header.base_offset < producers_from || header.producer_id < 0 {
                        continue;
                    }
                    if let Err(error) =
                        table.record(&header, header.base_offset, header.append_time_ms, now_ms)
                    {
                        tracing::warn!(offset = header.base_offset, %error, "a batch's producer fields were not recorded");
                    }
                }
            }
            assert!(read.next_offset > offset, "replay makes progress");
            offset = read.next_offset;
        }
        let mut state = self.inner.state.borrow_mut();
        state.producers = table;
        state.epochs = epochs;
        state.producer_snapshot_at = snapshot_at.filter(|&at| at == end);
        Ok(())
    }

    /// The leader-epoch cache as saved, and the offset it holds up to (the log start and
    /// an empty cache when there is no usable one).
    fn saved_epochs(&self, start: u64, end: u64) -> (u64, EpochCache) {
        let path = super::epochs::path(self.dir());
        let saved = match read_small_file(&path) {
            Ok(Some(bytes)) => EpochCache::decode(&bytes),
            Ok(None) => return (start, EpochCache::default()),
            Err(error) => Err(error.to_string()),
        };
        match saved {
            Ok((upto, cache)) if (start..=end).contains(&upto) => (upto, cache),
            Ok((upto, _)) => {
                tracing::info!(path = %path.display(), upto, start, end, "leader epochs are outside the log: replaying the log");
                (start, EpochCache::default())
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "leader epochs unreadable: replaying the log");
                (start, EpochCache::default())
            }
        }
    }

    /// The epoch of the last batch in the log.
    pub fn last_epoch(&self) -> Option<u32> {
        self.inner.state.borrow().epochs.last_epoch()
    }

    /// The largest epoch at or below `epoch` this log holds, and where it ends here.
    pub fn end_of_epoch(&self, epoch: u32) -> (Option<u32>, u64) {
        let state = self.inner.state.borrow();
        state.epochs.end_of(epoch, state.next_offset)
    }

    /// The leader-epoch cache (for reconciling with a leader).
    pub fn epochs(&self) -> EpochCache {
        self.inner.state.borrow().epochs.clone()
    }

    /// Drops producers idle for longer than `idle_ms`; returns how many.
    pub fn expire_producers(&self, idle_ms: i64) -> usize {
        let now_ms = self.clock().wall_ms();
        self.inner
            .state
            .borrow_mut()
            .producers
            .expire(now_ms, idle_ms)
    }

    /// Producers this partition remembers.
    pub fn producer_count(&self) -> usize {
        self.inner.state.borrow().producers.len()
    }
}
