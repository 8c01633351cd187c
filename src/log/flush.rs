//! The writer of one partition: group commit, direct-IO writes, segment roll.
//!
//! One flusher task runs per partition while it has pending batches. Once its policy makes
//! it due, it joins its shard's next flush round (`super::rounds`); then it takes every
//! pending batch, lays them after the active segment's data, rewrites the partial last IO
//! page in front of them, writes the whole span as aligned chunks (submitted together),
//! waits until every partition of the round has written, fdatasyncs if the policy says so,
//! and only then advances the written/synced offsets and wakes the waiters. Batches
//! appended during a round go out together in the next one.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::try_join_all;

use super::cache::CachedBatch;
use super::error::LogIoError;
use super::io::{sync_directory, write_small_file, SegmentFile};
use super::partition::{Partition, PendingBatch};
use super::segment::{
    segment_path, ActiveSegment, Segment, SegmentIndexes, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::constants::{IO_ALIGNMENT_BYTES, PREALLOCATE_STEP_MIN_BYTES, WRITE_BYTES_MAX};
use crate::constants::{JOURNALED_WRITE_BYTES, JOURNAL_BYPASS_BYTES};
use crate::constants::{RECOVERY_POINT_INTERVAL_MS, SLOW_FLUSH_ROUND_MS};
use crate::record::BatchHeader;

fn align_down(value: u64) -> u64 {
    value - value % IO_ALIGNMENT_BYTES
}

fn align_up(value: u64) -> u64 {
    value.div_ceil(IO_ALIGNMENT_BYTES) * IO_ALIGNMENT_BYTES
}

/// How far to reserve space when a write reaches `write_to`: ahead by as much as the segment
/// already holds (doubling), from `PREALLOCATE_STEP_MIN_BYTES` up to `step_max`, so ten
/// thousand small partitions do not each reserve the full step.
fn preallocation_target(write_to: u64, step_max: u64) -> u64 {
    let step = write_to.clamp(
        PREALLOCATE_STEP_MIN_BYTES.min(step_max),
        step_max.max(IO_ALIGNMENT_BYTES),
    );
    align_up(write_to + step)
}

/// What the flusher does next.
enum Step {
    Wait(Instant),
    /// Write every pending batch, and sync if the policy or a flush request says so.
    Round,
    /// Hand the batches not yet journaled to the shard journal.
    Journal(Rc<super::journal::Journal>),
    /// Write journaled batches to the segment (no sync: the journal holds them).
    WriteJournaled,
}

/// The flusher task: runs while the partition has work, then exits.
pub(super) async fn run_flusher(partition: Rc<Partition>) {
    loop {
        let step = {
            let mut state = partition.state.borrow_mut();
            let has_work = !state.pending.is_empty() || state.sync_requested;
            if !has_work || state.fenced.is_some() || state.closed {
                state.flusher_running = false;
                state.flush_now = false;
                state.wake_all();
                return;
            }
            next_step(&partition, &state)
        };
        let result = match step {
            Step::Wait(deadline) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if !remaining.is_zero() {
                    futures_lite::future::or(kicked(&partition), glommio::timer::sleep(remaining))
                        .await;
                }
                continue;
            }
            Step::Round => flush_round(&partition, RoundKind::Policy).await,
            Step::Journal(journal) => journal_round(&partition, &journal).await,
            Step::WriteJournaled => flush_round(&partition, RoundKind::Journaled).await,
        };
        if let Err(error) = result {
            partition.fence(error);
        }
    }
}

fn next_step(partition: &Partition, state: &super::partition::State) -> Step {
    let policy = partition.config.borrow().flush;
    let now = Instant::now();
    let journal = match &partition.shard.journal {
        Some(journal) if policy.syncs() && !state.sync_requested => journal.clone(),
        _ => {
            let due_now = state.flush_now || state.pending_bytes >= policy.bytes_trigger();
            let started = state.first_pending_at.unwrap_or(now);
            return if due_now || started + policy.delay() <= now {
                Step::Round
            } else {
                Step::Wait(started + policy.delay())
            };
        }
    };
    // Pending batches past the synced (journaled) offset are not journaled yet; the ones
    // before it are journaled but not yet written to the segment.
    let unjournaled: usize = state
        .pending
        .iter()
        .rev()
        .take_while(|b| b.next_offset > state.synced_offset)
        .map(|b| b.bytes.len())
        .sum();
    let unwritten = state.pending_bytes - unjournaled;
    // A partition with much to write is served better by its own write and sync: the
    // journal would write its bytes twice, and its per-file cost is small per byte.
    if unjournaled >= JOURNAL_BYPASS_BYTES {
        return Step::Round;
    }
    let journal_at = (unjournaled > 0).then(|| {
        if unjournaled >= policy.bytes_trigger() {
            now
        } else {
            state.first_pending_at.unwrap_or(now) + policy.delay()
        }
    });
    let write_at = (unwritten > 0).then(|| {
        if unwritten >= JOURNALED_WRITE_BYTES {
            now
        } else {
            state.first_journaled_at.unwrap_or(now) + journal.segment_write_delay()
        }
    });
    match (journal_at, write_at) {
        (Some(at), _) if at <= now => Step::Journal(journal),
        (_, Some(at)) if at <= now => Step::WriteJournaled,
        (Some(a), Some(b)) => Step::Wait(a.min(b)),
        (Some(at), None) | (None, Some(at)) => Step::Wait(at),
        (None, None) => Step::Wait(now + journal.segment_write_delay()),
    }
}

/// Hands the batches not yet journaled to the shard journal, waits for its commit, and
/// counts them durable.
async fn journal_round(
    partition: &Rc<Partition>,
    journal: &Rc<super::journal::Journal>,
) -> Result<(), LogIoError> {
    let (number, end, generation) = {
        let mut state = partition.state.borrow_mut();
        state.flush_now = false;
        state.first_pending_at = None;
        let synced = state.synced_offset;
        let from = state.pending.partition_point(|b| b.next_offset <= synced);
        let batches: Vec<PendingBatch> = state.pending.range(from..).cloned().collect();
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let end = last.next_offset;
        (journal.append(partition, &batches), end, state.generation)
    };
    let started = Instant::now();
    journal.commit(number).await?;
    partition
        .shard
        .metrics
        .sync_latency
        .record_duration(started.elapsed());
    let mut state = partition.state.borrow_mut();
    // A truncation meanwhile set the offsets itself (and its cut record follows these
    // batches in the journal).
    if state.generation == generation && end > state.synced_offset {
        state.synced_offset = end.min(state.next_offset);
        state.io_stats.journal_commits += 1;
    }
    if state.first_journaled_at.is_none() && state.written_offset < state.synced_offset {
        state.first_journaled_at = Some(Instant::now());
    }
    state.wake_all();
    Ok(())
}

/// Writes and fdatasyncs everything pending of `partition` to its segment (a journal
/// checkpoint). A closed partition was flushed when it closed.
pub(super) async fn write_and_sync_all(partition: &Partition) -> Result<(), LogIoError> {
    {
        let state = partition.state.borrow();
        if let Some(error) = &state.fenced {
            return Err(error.clone());
        }
        if state.closed {
            return Ok(());
        }
    }
    flush_round(partition, RoundKind::Checkpoint).await
}

/// Resolves the next time an append or a flush request wakes the flusher.
async fn kicked(partition: &Partition) {
    let mut registered = false;
    poll_fn(|cx| {
        let mut state = partition.state.borrow_mut();
        if registered && state.flusher_waker.is_none() {
            return Poll::Ready(());
        }
        state.flusher_waker = Some(cx.waker().clone());
        registered = true;
        Poll::Pending
    })
    .await
}

/// Which batches a flush round writes, and whether it syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundKind {
    /// Every pending batch; sync per policy or flush request (in the shard's flush round).
    Policy,
    /// Every pending batch, synced (a journal checkpoint; outside the shard's rounds).
    Checkpoint,
    /// The journaled batches only, not synced (the journal holds them durably).
    Journaled,
}

/// One round: write pending batches, sync per `kind`, publish the new offsets. A policy
/// round is the partition's share of its shard's flush round (`super::rounds`): it starts
/// with the shard's next round, and syncs once every partition in it has written.
async fn flush_round(partition: &Partition, kind: RoundKind) -> Result<(), LogIoError> {
    let _writer = partition
        .writer
        .acquire_permit(1)
        .await
        .expect("writer semaphore is never closed");
    let mut ticket = match kind {
        RoundKind::Policy => Some(partition.shard.rounds.enter().await),
        RoundKind::Checkpoint | RoundKind::Journaled => None,
    };
    let (batches, sync) = {
        let mut state = partition.state.borrow_mut();
        if state.closed && kind != RoundKind::Policy {
            return Ok(());
        }
        let batches: Vec<PendingBatch> = match kind {
            RoundKind::Journaled => {
                let synced = state.synced_offset;
                state
                    .pending
                    .iter()
                    .take_while(|b| b.next_offset <= synced)
                    .cloned()
                    .collect()
            }
            RoundKind::Policy | RoundKind::Checkpoint => {
                state.flush_now = false;
                state.first_pending_at = None;
                state.pending.iter().cloned().collect()
            }
        };
        let sync = match kind {
            RoundKind::Policy => {
                let sync = partition.config.borrow().flush.syncs() || state.sync_requested;
                state.sync_requested = false;
                sync
            }
            RoundKind::Checkpoint => {
                state.sync_requested = false;
                true
            }
            RoundKind::Journaled => false,
        };
        (batches, sync)
    };
    let started = Instant::now();
    if !batches.is_empty() {
        write_batches(partition, &batches).await?;
    }
    let mut timings = RoundTimings {
        wrote: started.elapsed(),
        ..RoundTimings::default()
    };
    let written_offset = batches.last().map(|b| b.next_offset);
    if let Some(ticket) = ticket.as_mut() {
        ticket.wrote().await;
    }
    if sync {
        let needs_sync = {
            let state = partition.state.borrow();
            written_offset.is_some() || state.segment_synced_offset < state.written_offset
        };
        if needs_sync {
            let file = active_file(partition).await?;
            timings.opened = Some(started.elapsed());
            file.sync().await?;
            timings.synced = Some(started.elapsed());
            partition.state.borrow_mut().io_stats.syncs += 1;
        }
    }
    let due = publish_round(partition, &batches, written_offset, sync);
    drop(ticket);
    if due {
        write_recovery_point(partition).await?;
    }
    let metrics = &partition.shard.metrics;
    if !batches.is_empty() {
        metrics.write_latency.record_duration(timings.wrote);
        let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        metrics.flush_round_bytes.record(bytes as u64);
    }
    if let (Some(opened), Some(synced)) = (timings.opened, timings.synced) {
        metrics
            .sync_latency
            .record_duration(synced.saturating_sub(opened));
    }
    watch_round(partition, started, &timings);
    Ok(())
}

/// When each step of a flush round ended, from its start.
#[derive(Debug, Default)]
struct RoundTimings {
    wrote: Duration,
    opened: Option<Duration>,
    synced: Option<Duration>,
}

/// The shard's watchdog over flush rounds: a round slower than `SLOW_FLUSH_ROUND_MS` is
/// counted in the partition's IO stats and logged with where its time went.
fn watch_round(partition: &Partition, started: Instant, timings: &RoundTimings) {
    let total = started.elapsed();
    if total >= Duration::from_millis(SLOW_FLUSH_ROUND_MS) {
        partition.state.borrow_mut().io_stats.slow_rounds += 1;
        tracing::warn!(
            dir = %partition.dir.display(),
            wrote = ?timings.wrote,
            opened_file = ?timings.opened,
            synced = ?timings.synced,
            ?total,
            "slow flush round"
        );
    }
}

/// After a round's IO: moves its batches from pending to the cache, advances the written and
/// synced offsets, wakes waiters. Returns whether the recovery point is due.
fn publish_round(
    partition: &Partition,
    batches: &[PendingBatch],
    written_offset: Option<u64>,
    sync: bool,
) -> bool {
    let mut state = partition.state.borrow_mut();
    if let Some(written_offset) = written_offset {
        state.io_stats.write_rounds += 1;
        let mut cache = partition.shard.cache.borrow_mut();
        for _ in 0..batches.len() {
            let batch = state
                .pending
                .pop_front()
                .expect("flushed batches are still pending");
            state.pending_bytes -= batch.bytes.len();
            cache.insert(
                partition.id,
                CachedBatch {
                    base_offset: batch.base_offset,
                    next_offset: batch.next_offset,
                    bytes: batch.bytes,
                },
            );
        }
        state.written_offset = written_offset;
    }
    if sync {
        // A journal commit may have counted more durable meanwhile.
        state.segment_synced_offset = state.written_offset;
        state.synced_offset = state.synced_offset.max(state.written_offset);
    }
    if state.written_offset >= state.synced_offset {
        state.first_journaled_at = None;
    }
    state.wake_all();
    sync && state
        .recovery_point_written_at
        .is_none_or(|at| at.elapsed() >= Duration::from_millis(RECOVERY_POINT_INTERVAL_MS))
}

/// Records how far the active segment is synced (call only right after a sync, and
/// holding no segment file: the write takes one of the shard's open-file slots).
pub(super) async fn write_recovery_point(partition: &Partition) -> Result<(), LogIoError> {
    let _slot = super::files::acquire_slot(&partition.shard.files).await;
    let point = {
        let mut state = partition.state.borrow_mut();
        state.recovery_point_written_at = Some(Instant::now());
        let active = state.active();
        super::checkpoint::RecoveryPoint {
            segment_base: active.base_offset,
            position: active.size,
            next_offset: active.next_offset,
        }
    };
    super::io::overwrite_small_file(
        &super::checkpoint::path(&partition.dir),
        point.encode(),
        true,
    )
    .await
}

/// The active segment's file, opened again if the shard's file budget evicted it.
pub(super) async fn active_file(partition: &Partition) -> Result<SegmentFile, LogIoError> {
    let base = partition.state.borrow().active().base_offset;
    segment_file(partition, base).await
}

/// A segment's file from the shard's open-file table, opening it on a miss.
pub(super) async fn segment_file(
    partition: &Partition,
    base_offset: u64,
) -> Result<SegmentFile, LogIoError> {
    let key = (partition.id, base_offset);
    if let Some(file) = partition.shard.files.borrow_mut().get(key) {
        return Ok(file);
    }
    let slot = super::files::acquire_slot(&partition.shard.files).await;
    // Another task may have opened it while this one waited for a slot.
    if let Some(file) = partition.shard.files.borrow_mut().get(key) {
        return Ok(file);
    }
    let file = SegmentFile::open(
        &partition.segment_path(base_offset),
        partition.shard.faults.clone(),
        Some(slot),
    )
    .await?;
    partition.shard.files.borrow_mut().insert(key, file.clone());
    Ok(file)
}

/// Writes `batches` after the active segment's data, rolling segments as needed.
async fn write_batches(partition: &Partition, batches: &[PendingBatch]) -> Result<(), LogIoError> {
    let mut next = 0;
    while next < batches.len() {
        let first_length = batches[next].bytes.len() as u64;
        if must_roll(partition, first_length) {
            roll(partition, batches[next].base_offset).await?;
        }
        let room = {
            let state = partition.state.borrow();
            let segment_bytes = partition.config.borrow().segment_bytes;
            segment_bytes.saturating_sub(state.active().size)
        };
        // Take batches while they fit (a lone batch always goes, into an empty segment).
        let mut end = next + 1;
        let mut span = first_length;
        while end < batches.len() && span + batches[end].bytes.len() as u64 <= room {
            span += batches[end].bytes.len() as u64;
            end += 1;
        }
        write_run(partition, &batches[next..end]).await?;
        next = end;
    }
    Ok(())
}

fn must_roll(partition: &Partition, next_batch_bytes: u64) -> bool {
    let state = partition.state.borrow();
    let active = state.active();
    if active.is_empty() {
        return false;
    }
    let full = active.size + next_batch_bytes > partition.config.borrow().segment_bytes;
    let age_ms = active.first_append_time_ms.map_or(0, |first| {
        partition.shard.clock.wall_ms().saturating_sub(first)
    });
    full || age_ms >= i64::try_from(partition.config.borrow().segment_age_ms).unwrap_or(i64::MAX)
}

/// Writes a run of batches that fits in the active segment, in aligned chunks.
async fn write_run(partition: &Partition, run: &[PendingBatch]) -> Result<(), LogIoError> {
    let file = active_file(partition).await?;
    let (start, tail_page_bytes, preallocated_to) = {
        let state = partition.state.borrow();
        let active = state.active();
        let writer = active.active.as_ref().expect("the last segment is active");
        (active.size, writer.tail_page.len(), writer.preallocated_to)
    };
    let run_bytes: u64 = run.iter().map(|b| b.bytes.len() as u64).sum();
    let end = start + run_bytes;
    let write_from = align_down(start);
    assert_eq!(
        write_from + tail_page_bytes as u64,
        start,
        "tail page out of step"
    );
    let write_to = align_up(end);
    let mut new_preallocated_to = preallocated_to;
    if write_to > preallocated_to {
        new_preallocated_to =
            preallocation_target(write_to, partition.config.borrow().preallocate_bytes);
        file.preallocate(new_preallocated_to).await?;
    }

    // Lay out [tail page | batches | zero padding] as chunks of at most WRITE_BYTES_MAX. The
    // rewritten tail page is a chunk of its own: it lies in the part of the file already
    // written and the rest in preallocated (unwritten) space, and a direct write spanning
    // both is no "overwrite" to ext4, which then needs the inode lock exclusively; io_uring
    // punts such a write to a worker thread, which on a busy CPU waits a scheduler tick.
    // Only the holder of the partition's writer permit (this task) changes the tail page, so
    // it is still the one checked above, though the preallocation may have awaited since.
    let (writes, new_tail) = {
        let state = partition.state.borrow();
        let tail_page = &state
            .active()
            .active
            .as_ref()
            .expect("the last segment is active")
            .tail_page;
        assert_eq!(
            tail_page.len(),
            tail_page_bytes,
            "tail page changed under the writer"
        );
        let new_tail = last_partial_page(tail_page, run, end);
        let mut writes = Vec::new();
        let tail_page_end = (!tail_page.is_empty()).then_some(write_from + IO_ALIGNMENT_BYTES);
        let mut sources = std::iter::once(tail_page.as_slice())
            .chain(run.iter().map(|b| b.bytes.as_ref()))
            .peekable();
        let mut source_at = 0usize;
        let mut chunk_start = write_from;
        while chunk_start < write_to {
            let chunk_end = match tail_page_end {
                Some(end) if chunk_start < end => end,
                _ => chunk_start + WRITE_BYTES_MAX as u64,
            };
            let chunk_length = (chunk_end.min(write_to) - chunk_start) as usize;
            let mut buffer = file.alloc_buffer(chunk_length);
            let out = buffer.as_bytes_mut();
            let mut filled = 0usize;
            while filled < chunk_length {
                let Some(source) = sources.peek() else { break };
                let take = (source.len() - source_at).min(chunk_length - filled);
                out[filled..filled + take].copy_from_slice(&source[source_at..source_at + take]);
                filled += take;
                source_at += take;
                if source_at == source.len() {
                    sources.next();
                    source_at = 0;
                }
            }
            out[filled..].fill(0);
            writes.push(file.write_at(buffer, chunk_start));
            chunk_start += chunk_length as u64;
        }
        (writes, new_tail)
    };
    let write_count = writes.len() as u64;
    try_join_all(writes).await?;

    let mut state = partition.state.borrow_mut();
    state.io_stats.writes += write_count;
    state.io_stats.bytes_written += write_to - write_from;
    let active = state.active_mut();
    for batch in run {
        let header = BatchHeader::decode(&batch.bytes).expect("pending batches are whole");
        active.on_batch(&header);
    }
    assert_eq!(active.size, end, "segment size out of step after a write");
    let writer = active.active.as_mut().expect("the last segment is active");
    writer.tail_page = new_tail;
    writer.preallocated_to = new_preallocated_to;
    Ok(())
}

/// The bytes of the partial page that ends at `end` (empty when `end` is aligned): the last
/// `end % 4096` bytes of `tail_page` followed by the run's batches. One allocation, the
/// page itself.
fn last_partial_page(tail_page: &[u8], run: &[PendingBatch], end: u64) -> Vec<u8> {
    let keep = (end - align_down(end)) as usize;
    let mut page = vec![0u8; keep];
    // Fill from the back: the last batch's end first, then earlier ones, then the old page.
    let mut need = keep;
    let sources = std::iter::once(tail_page)
        .chain(run.iter().map(|b| b.bytes.as_ref()))
        .rev();
    for source in sources {
        if need == 0 {
            break;
        }
        let take = need.min(source.len());
        page[need - take..need].copy_from_slice(&source[source.len() - take..]);
        need -= take;
    }
    assert_eq!(need, 0, "the run holds at least the partial page");
    page
}

/// Closes the active segment (sync, trim to its data, write its indexes) and starts a new
/// active segment at `new_base_offset`.
pub(super) async fn roll(partition: &Partition, new_base_offset: u64) -> Result<(), LogIoError> {
    close_active_segment(partition).await?;
    let segment = create_segment(partition, new_base_offset).await?;
    {
        let mut state = partition.state.borrow_mut();
        state.segments.insert(new_base_offset, segment);
        state.io_stats.segments_rolled += 1;
    }
    // Everything below the new segment is written and synced: the producer state it left
    // is a safe point to rebuild from.
    super::idempotence::write_snapshot(partition, new_base_offset).await
}

/// Makes the active segment a closed one: synced, trimmed to its data, indexes on disk.
pub(super) async fn close_active_segment(partition: &Partition) -> Result<(), LogIoError> {
    let file = active_file(partition).await?;
    let (base, size, next_offset, max_timestamp_ms, mut indexes) = {
        let state = partition.state.borrow();
        let active = state.active();
        let writer = active.active.as_ref().expect("the last segment is active");
        let indexes = writer.indexes.clone();
        (
            active.base_offset,
            active.size,
            active.next_offset,
            active.max_timestamp_ms,
            indexes,
        )
    };
    file.sync().await?;
    file.truncate(size).await?;
    file.sync().await?;
    if size > 0 {
        // Seal the time index with the segment's maximum, so that reopening it knows it.
        let last_relative = super::segment::relative_offset(base, next_offset - 1);
        indexes.times.seal(max_timestamp_ms, last_relative);
    }
    let offset_index_path = segment_path(&partition.dir, base, OFFSET_INDEX_SUFFIX);
    write_small_file(&offset_index_path, indexes.offsets.encode(base, size)).await?;
    let time_index_path = segment_path(&partition.dir, base, TIME_INDEX_SUFFIX);
    write_small_file(&time_index_path, indexes.times.encode(base, size)).await?;
    let mut state = partition.state.borrow_mut();
    state.active_mut().active = None;
    Ok(())
}

/// Creates an empty segment file at `base_offset` and makes its name durable.
pub(super) async fn create_segment(
    partition: &Partition,
    base_offset: u64,
) -> Result<Segment, LogIoError> {
    let path = partition.segment_path(base_offset);
    let slot = super::files::acquire_slot(&partition.shard.files).await;
    let file = SegmentFile::create(&path, partition.shard.faults.clone(), Some(slot)).await?;
    sync_directory(&partition.dir).await?;
    partition
        .shard
        .files
        .borrow_mut()
        .insert((partition.id, base_offset), file);
    Ok(Segment {
        base_offset,
        size: 0,
        next_offset: base_offset,
        max_timestamp_ms: i64::MIN,
        first_append_time_ms: None,
        active: Some(ActiveSegment {
            indexes: SegmentIndexes::default(),
            tail_page: Vec::new(),
            // Nothing is reserved until the first write: an idle partition costs no space.
            preallocated_to: 0,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_grows_with_the_segment_up_to_the_step() {
        let step_max = 16 * 1024 * 1024;
        // A small partition reserves a little ahead, not the whole step.
        assert_eq!(
            preallocation_target(4096, step_max),
            4096 + PREALLOCATE_STEP_MIN_BYTES
        );
        // A growing one doubles.
        assert_eq!(preallocation_target(1 << 20, step_max), 2 << 20);
        // A big one reserves the step.
        assert_eq!(
            preallocation_target(1 << 30, step_max),
            (1 << 30) + step_max
        );
        // Always aligned and past the write.
        for write_to in [1u64, 4095, 4097, 123_457, 99_999_999] {
            let target = preallocation_target(write_to, step_max);
            assert!(target > write_to && target % IO_ALIGNMENT_BYTES == 0);
        }
        // A step smaller than the minimum is honoured.
        assert_eq!(preallocation_target(8192, 4096), 12288);
    }

    /// The new tail page is the last `end % 4096` bytes of the old page followed by the run,
    /// taken from however many batches (and the old page) it spans.
    #[test]
    fn the_last_partial_page_spans_batches_and_the_old_page() {
        let batch = |fill: u8, length: usize| PendingBatch {
            base_offset: 0,
            next_offset: 1,
            bytes: bytes::Bytes::from(vec![fill; length]),
        };
        let page = IO_ALIGNMENT_BYTES as usize;
        // Everything together, as the file would hold it from the page's start.
        let joined = |old: &[u8], run: &[PendingBatch]| -> Vec<u8> {
            let mut all = old.to_vec();
            for b in run {
                all.extend_from_slice(&b.bytes);
            }
            all
        };
        let cases: Vec<(Vec<u8>, Vec<PendingBatch>)> = vec![
            // Old page plus small batches that stay within one page.
            (vec![7; 100], vec![batch(1, 10), batch(2, 20)]),
            // No old page; the batches cross a page boundary.
            (Vec::new(), vec![batch(1, page - 5), batch(2, 30)]),
            // The partial page lies inside the last batch alone.
            (vec![7; 200], vec![batch(1, 3 * page + 17)]),
            // Many small batches after an old page, ending past one page.
            (vec![7; page - 1], (0..9).map(|i| batch(i, 3)).collect()),
        ];
        for (old, run) in cases {
            let all = joined(&old, &run);
            // The old page starts at a page boundary; `end` is its offset plus everything.
            let start = 10 * IO_ALIGNMENT_BYTES;
            let end = start + all.len() as u64;
            let keep = (end % IO_ALIGNMENT_BYTES) as usize;
            let expected = all[all.len() - keep..].to_vec();
            assert_eq!(last_partial_page(&old, &run, end), expected);
        }
        // An aligned end leaves no partial page.
        let run = vec![batch(3, page - 100)];
        assert!(last_partial_page(&[7; 100], &run, 11 * IO_ALIGNMENT_BYTES).is_empty());
    }
}
