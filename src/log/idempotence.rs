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

use std::path::{Path, PathBuf};

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
        below.encode_snapshot(offset)
    };
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
        let (mut offset, mut table) = snapshot.unwrap_or((start, ProducerStateTable::new()));
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
                    if header.base_offset < offset || header.producer_id < 0 {
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
        state.producer_snapshot_at = snapshot_at.filter(|&at| at == end);
        Ok(())
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
