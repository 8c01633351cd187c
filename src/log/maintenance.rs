//! Changes to a partition's segments other than appends: truncation (for replication's
//! divergent suffixes), retention by time and bytes, and close. Each holds the partition's
//! writer permit, so it never interleaves with a flush or a roll.

use super::error::MaintenanceError;
use super::flush::segment_file;
use super::io::{remove_files, sync_directory};
use super::partition::PartitionLog;
use super::read::with_indexes;
use super::recovery::scan_file;
use super::segment::{
    relative_offset, scan_batches, segment_path, ActiveSegment, ScanStop, LOG_SUFFIX,
    OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::constants::READ_BYTES_MAX;

/// Truncation history kept for durability waiters (see `State::truncated_since`).
const TRUNCATIONS_REMEMBERED: usize = 64;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: u64,
}

/// A new generation of the log, ending at `offset`: waiters for offsets past it learn they
/// were cut (`State::truncated_since`).
fn record_truncation(state: &mut super::partition::State, offset: u64) {
    state.generation += 1;
    state.layout_version += 1;
    let generation = state.generation;
    state.truncations.push_back((generation, offset));
    if state.truncations.len() > TRUNCATIONS_REMEMBERED {
        state.truncations.pop_front();
    }
}

impl PartitionLog {
    async fn remove_segment_files(&self, base_offset: u64) -> Result<(), MaintenanceError> {
        let partition = &self.inner;
        partition
            .shard
            .files
            .borrow_mut()
            .remove((partition.id, base_offset));
        let paths = [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .map(|suffix| segment_path(&partition.dir, base_offset, suffix));
        remove_files(paths.to_vec(), partition.shard.faults.as_deref()).await?;
        Ok(())
    }

    /// Removes every batch holding an offset at or above `offset`; the log then ends at the
    /// base offset of the batch that held `offset` (batches are never split). Returns the
    /// new log end offset. Crash-safe: later segments go first, then the holder is cut and
    /// synced, so a crash midway leaves a prefix of the old log.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, MaintenanceError> {
        let partition = &self.inner;
        let _one_at_a_time = partition
            .truncation
            .acquire_permit(1)
            .await
            .expect("truncation gate never closed");
        let check_range = |state: &super::partition::State| {
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(MaintenanceError::TruncateOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
                });
            }
            Ok(offset == state.next_offset)
        };
        if check_range(&partition.state.borrow())? {
            return Ok(offset);
        }
        // Write what is pending below the cut (pending batches above it are dropped); an
        // append that lands below the cut meanwhile is written by another round first.
        let (_writer, holder_base) = loop {
            self.flush().await?;
            // With a journal: replay must not bring back what this cuts. The cut record
            // follows every journaled batch of this log so far (all now in the segment).
            commit_cut(partition, offset).await?;
            let writer = partition
                .writer
                .acquire_permit(1)
                .await
                .expect("writer never closed");
            let mut state = partition.state.borrow_mut();
            state.check_open()?;
            if check_range(&state)? {
                return Ok(offset);
            }
            let mut dropped = false;
            while state
                .pending
                .back()
                .is_some_and(|b| b.base_offset >= offset)
            {
                let batch = state.pending.pop_back().expect("back checked");
                state.pending_bytes -= batch.bytes.len();
                dropped = true;
            }
            // A dropped batch may have been journaled after the cut record: go round again,
            // so that a later cut record follows it.
            if !state.pending.is_empty() || dropped {
                continue;
            }
            let holder_base = *state
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset within the log")
                .0;
            break (writer, holder_base);
        };
        let (cut_position, cut_offset) = self.find_batch_start(holder_base, offset).await?;

        let later: Vec<u64> = {
            let state = partition.state.borrow();
            state
                .segments
                .range(holder_base + 1..)
                .map(|(&b, _)| b)
                .rev()
                .collect()
        };
        for base in later {
            self.remove_segment_files(base).await?;
            let mut state = partition.state.borrow_mut();
            state.segments.remove(&base);
            state.layout_version += 1;
        }
        // A recovery point past the cut would make the cut look like damage, and the holder
        // becomes the active segment, so its index files would be stale: all three go.
        let stale = vec![
            super::checkpoint::path(&partition.dir),
            segment_path(&partition.dir, holder_base, OFFSET_INDEX_SUFFIX),
            segment_path(&partition.dir, holder_base, TIME_INDEX_SUFFIX),
        ];
        remove_files(stale, partition.shard.faults.as_deref()).await?;
        sync_directory(&partition.dir).await?;
        let file = segment_file(partition, holder_base).await?;
        file.truncate(cut_position).await?;
        let found = scan_file(&file, holder_base, cut_position).await?;
        // Space is reserved again by the next write.
        let preallocated_to = cut_position;
        file.sync().await?;
        drop(file);

        {
            let mut state = partition.state.borrow_mut();
            let segment = state
                .segments
                .get_mut(&holder_base)
                .expect("holder segment present");
            segment.size = cut_position;
            segment.next_offset = cut_offset;
            segment.max_timestamp_ms = found.max_timestamp_ms;
            segment.first_append_time_ms = found.first_append_time_ms;
            segment.active = Some(ActiveSegment {
                indexes: found.indexes,
                tail_page: found.tail_page,
                preallocated_to,
            });
            state.next_offset = cut_offset;
            state.written_offset = cut_offset;
            state.synced_offset = cut_offset;
            state.segment_synced_offset = cut_offset;
            state.producers.truncate_to(cut_offset);
            state.epochs.truncate_to(cut_offset);
            record_truncation(&mut state, cut_offset);
            partition
                .shard
                .cache
                .borrow_mut()
                .truncate_from(partition.id, cut_offset);
            state.wake_all();
        }
        // The cut segment was synced above: its new end is the recovery point, and the
        // producer state below the cut a safe point to rebuild from (a snapshot past the cut
        // would be ignored at the next open, costing a replay of the whole log).
        super::flush::write_recovery_point(partition).await?;
        super::idempotence::write_snapshot(partition, cut_offset).await?;
        Ok(cut_offset)
    }

    /// Empties the log and starts it again at `offset`, which must be past its end: for a
    /// follower whose leader no longer holds the offsets it would fetch next (the leader's
    /// log starts past them). Crash-safe: old segments go oldest first (a crash leaves a
    /// suffix of the old log, or an empty one), then the new empty segment is created.
    /// Producer state stays (it describes batches the leader held); the epoch cache is
    /// emptied (this log shares no epoch with anyone until it appends).
    pub async fn reset_to(&self, offset: u64) -> Result<u64, MaintenanceError> {
        let partition = &self.inner;
        let _one_at_a_time = partition
            .truncation
            .acquire_permit(1)
            .await
            .expect("truncation gate never closed");
        self.flush().await?;
        commit_cut(partition, 0).await?;
        let _writer = partition
            .writer
            .acquire_permit(1)
            .await
            .expect("writer never closed");
        let doomed: Vec<u64> = {
            let state = partition.state.borrow();
            state.check_open()?;
            if offset <= state.next_offset || !state.pending.is_empty() {
                return Err(MaintenanceError::TruncateOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
                });
            }
            state.segments.keys().copied().collect()
        };
        // The recovery point goes first: a crash between the removals must not leave a
        // point that describes segments no longer there.
        remove_files(
            vec![super::checkpoint::path(&partition.dir)],
            partition.shard.faults.as_deref(),
        )
        .await?;
        for base in doomed {
            self.remove_segment_files(base).await?;
            let mut state = partition.state.borrow_mut();
            state.segments.remove(&base);
            state.layout_version += 1;
        }
        let segment = super::flush::create_segment(partition, offset).await?;
        {
            let mut state = partition.state.borrow_mut();
            state.segments.insert(offset, segment);
            state.log_start_offset = offset;
            state.next_offset = offset;
            state.written_offset = offset;
            state.synced_offset = offset;
            state.segment_synced_offset = offset;
            state.epochs = super::epochs::EpochCache::default();
            state.producer_snapshot_at = None;
            record_truncation(&mut state, offset);
            let mut cache = partition.shard.cache.borrow_mut();
            cache.truncate_from(partition.id, 0);
            drop(cache);
            state.wake_all();
        }
        super::flush::write_recovery_point(partition).await?;
        super::idempotence::write_snapshot(partition, offset).await?;
        tracing::info!(dir = %partition.dir.display(), offset, "the log starts again at its leader's log start");
        Ok(offset)
    }

    /// The position and base offset of the batch holding `offset` in segment `base`.
    async fn find_batch_start(
        &self,
        base: u64,
        offset: u64,
    ) -> Result<(u64, u64), MaintenanceError> {
        let partition = &self.inner;
        if offset == base {
            return Ok((0, base));
        }
        let relative = relative_offset(base, offset);
        let mut position = with_indexes(partition, base, |indexes| {
            u64::from(indexes.offsets.lookup(relative))
        })
        .await
        .map_err(read_to_maintenance)?;
        let size = partition.state.borrow().segments[&base].size;
        let file = segment_file(partition, base).await?;
        let mut expected = None;
        loop {
            let window = (size - position).min(READ_BYTES_MAX as u64) as usize;
            let read = file.read_at(position, window).await?;
            let start = expected.unwrap_or_else(|| {
                crate::record::BatchHeader::decode(&read).map_or(base, |h| h.base_offset)
            });
            let mut holder = None;
            let scan = scan_batches(&read, position, start, |batch| {
                if holder.is_none() && batch.header.next_offset() > offset {
                    holder = Some((batch.position, batch.header.base_offset));
                }
            });
            if let Some(found) = holder {
                return Ok(found);
            }
            match scan.stop {
                ScanStop::Partial { .. } | ScanStop::End
                    if scan.valid_bytes > 0 && position + (scan.valid_bytes as u64) < size =>
                {
                    position += scan.valid_bytes as u64;
                    expected = Some(scan.next_offset);
                }
                ScanStop::Invalid(reason) => {
                    let path = partition.segment_path(base);
                    let position = position + scan.valid_bytes as u64;
                    return Err(MaintenanceError::Corrupt {
                        path,
                        position,
                        reason,
                    });
                }
                _ => return Ok((size, scan.next_offset)),
            }
        }
    }

    /// Deletes whole closed segments past the retention limits (never the active one) and
    /// advances the log start offset. Ages are measured on the shard's clock.
    pub async fn enforce_retention(&self) -> Result<RetentionOutcome, MaintenanceError> {
        let partition = &self.inner;
        let now_ms = partition.shard.clock.wall_ms();
        let _writer = partition
            .writer
            .acquire_permit(1)
            .await
            .expect("writer never closed");
        let doomed: Vec<(u64, u64)> = {
            let state = partition.state.borrow();
            if state.closed {
                return Err(MaintenanceError::Closed);
            }
            let config = partition.config.borrow().clone();
            let expired_before = config
                .retention_ms
                .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
            let mut total: u64 = state.segments.values().map(|s| s.size).sum();
            let closed_count = state.segments.len() - 1;
            let mut doomed = Vec::new();
            for segment in state.segments.values().take(closed_count) {
                let too_old = expired_before.is_some_and(|t| segment.max_timestamp_ms < t);
                let too_big = config
                    .retention_bytes
                    .is_some_and(|max| total - segment.size >= max);
                if !(too_old || too_big) {
                    break;
                }
                total -= segment.size;
                doomed.push((segment.base_offset, segment.size));
            }
            doomed
        };
        self.delete_segments(doomed).await
    }

    /// Deletes every closed segment that lies wholly below `offset` (its successor starts at
    /// or below it) and advances the log start offset: what a compacted log (the group
    /// offsets log after a snapshot) no longer needs. The active segment is never deleted.
    pub async fn delete_segments_below(
        &self,
        offset: u64,
    ) -> Result<RetentionOutcome, MaintenanceError> {
        let partition = &self.inner;
        let _writer = partition
            .writer
            .acquire_permit(1)
            .await
            .expect("writer never closed");
        let doomed: Vec<(u64, u64)> = {
            let state = partition.state.borrow();
            if state.closed {
                return Err(MaintenanceError::Closed);
            }
            let segments: Vec<(u64, u64)> = state
                .segments
                .values()
                .map(|s| (s.base_offset, s.size))
                .collect();
            segments
                .windows(2)
                .take_while(|pair| pair[1].0 <= offset)
                .map(|pair| pair[0])
                .collect()
        };
        self.delete_segments(doomed).await
    }

    /// Deletes these oldest closed segments, in order, advancing the log start offset.
    /// The caller holds the writer permit.
    async fn delete_segments(
        &self,
        doomed: Vec<(u64, u64)>,
    ) -> Result<RetentionOutcome, MaintenanceError> {
        let partition = &self.inner;
        let mut outcome = RetentionOutcome {
            log_start_offset: self.log_start_offset(),
            ..RetentionOutcome::default()
        };
        for (base, size) in doomed {
            {
                let mut state = partition.state.borrow_mut();
                state.segments.remove(&base);
                let start = *state
                    .segments
                    .keys()
                    .next()
                    .expect("the active segment remains");
                state.log_start_offset = start;
                state.layout_version += 1;
                partition
                    .shard
                    .cache
                    .borrow_mut()
                    .drop_below(partition.id, start);
                outcome.log_start_offset = start;
            }
            self.remove_segment_files(base).await?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += size;
        }
        if outcome.segments_deleted > 0 {
            sync_directory(&partition.dir).await?;
            tracing::info!(dir = %partition.dir.display(), ?outcome, "deleted segments");
        }
        Ok(outcome)
    }

    /// Writes and syncs everything, then closes: no more appends or reads; files released.
    pub async fn close(&self) -> Result<(), MaintenanceError> {
        let partition = &self.inner;
        let flushed = self.flush().await;
        let _writer = partition
            .writer
            .acquire_permit(1)
            .await
            .expect("writer never closed");
        // A successful flush has synced everything appended before it; appends that raced
        // the close are refused below (their waiters learn the log is closed).
        if flushed.is_ok() {
            super::flush::write_recovery_point(partition).await?;
            let end = partition.state.borrow().next_offset;
            super::idempotence::write_snapshot(partition, end).await?;
        }
        let mut state = partition.state.borrow_mut();
        state.closed = true;
        state.wake_all();
        partition
            .shard
            .files
            .borrow_mut()
            .remove_partition(partition.id);
        partition
            .shard
            .cache
            .borrow_mut()
            .remove_partition(partition.id);
        flushed.map_err(MaintenanceError::from)
    }
}

fn read_to_maintenance(error: super::error::ReadError) -> MaintenanceError {
    match error {
        super::error::ReadError::Io(io) => MaintenanceError::Io(io),
        super::error::ReadError::Corrupt {
            path,
            position,
            reason,
        } => MaintenanceError::Corrupt {
            path,
            position,
            reason,
        },
        super::error::ReadError::OffsetOutOfRange {
            offset,
            log_start,
            log_end,
        } => MaintenanceError::TruncateOutOfRange {
            offset,
            log_start,
            log_end,
        },
    }
}

/// Commits a cut record for `partition` to its shard's journal, if it has one: replay then
/// drops every batch journaled before it that holds an offset at or past `offset`.
async fn commit_cut(
    partition: &super::partition::Partition,
    offset: u64,
) -> Result<(), super::LogIoError> {
    if let Some(journal) = &partition.shard.journal {
        let number = journal.append_cut(&partition.dir, offset);
        journal.commit(number).await?;
    }
    Ok(())
}
