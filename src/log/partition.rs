//! One partition's log: its state, the append path and waits for durability.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use glommio::sync::Semaphore;

use super::cache::PartitionId;
use super::error::{AppendError, LogIoError, OpenError};
use super::producers::{Admission, ProducerStateTable};
use super::segment::{segment_path, Segment, LOG_SUFFIX};
use super::shard::ShardResources;
use super::LogConfig;
use crate::constants::PARTITION_PENDING_BYTES_MAX;
use crate::record::header::{stamp, TimestampType};
use crate::record::ValidatedBatch;

/// Offsets given to an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub append_time_ms: i64,
    /// The batch was an idempotent producer's retry of one already in the log: nothing
    /// was appended, and these are the original's offsets.
    pub duplicate: bool,
}

/// Counts of the IO a partition's writer issued, for group-commit evidence and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Flush rounds that wrote at least one batch.
    pub write_rounds: u64,
    /// Direct-IO writes issued (a round issues one per chunk).
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub segments_rolled: u64,
    /// Journal commits that made this partition's batches durable.
    pub journal_commits: u64,
    /// Flush rounds slower than `SLOW_FLUSH_ROUND_MS` (the watchdog's count).
    pub slow_rounds: u64,
}

/// A stamped batch that is appended but not yet written to its segment.
#[derive(Debug, Clone)]
pub(super) struct PendingBatch {
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: Bytes,
}

pub(super) struct State {
    /// By base offset; the last one is the active segment.
    pub segments: BTreeMap<u64, Segment>,
    pub log_start_offset: u64,
    /// The offset the next appended record gets (log end offset).
    pub next_offset: u64,
    /// Every offset below this is written to its segment file.
    pub written_offset: u64,
    /// Every offset below this is durable: written and fdatasynced in its segment, or
    /// committed to the shard journal (`super::journal`). The high watermark's bound.
    pub synced_offset: u64,
    /// Every offset below this is written and fdatasynced in its segment file (equal to
    /// `synced_offset` without a journal; behind it while journaled batches are unwritten).
    pub segment_synced_offset: u64,
    /// With a journal: when the oldest batch that is journaled but not yet written to its
    /// segment was journaled.
    pub first_journaled_at: Option<Instant>,
    /// Appended, not yet written; `[written_offset, next_offset)`.
    pub pending: VecDeque<PendingBatch>,
    pub pending_bytes: usize,
    /// When the oldest pending batch was appended.
    pub first_pending_at: Option<Instant>,
    pub flusher_running: bool,
    /// The flusher should write (and sync) now, whatever the policy's triggers say.
    pub flush_now: bool,
    pub sync_requested: bool,
    pub flusher_waker: Option<Waker>,
    /// Tasks waiting for written/synced offsets or for space; all re-check when woken.
    pub waiters: Vec<Waker>,
    /// How many times `waiters` were woken (and emptied): a waiter that saw this count
    /// unchanged is still registered.
    pub wakes: u64,
    /// Appends waiting for space, in arrival order: space goes to the front one first, so
    /// appends to a partition land in the order they were called.
    pub space_queue: VecDeque<u64>,
    pub next_space_ticket: u64,
    /// Idempotent producers' last batches (see `super::idempotence`).
    pub producers: ProducerStateTable,
    /// The offset of the producer snapshot on disk, when it is known to hold the table as
    /// it stands (nothing appended since): a close then need not write it again.
    pub producer_snapshot_at: Option<u64>,
    /// Where each leader epoch's batches start (see `super::epochs`).
    pub epochs: super::epochs::EpochCache,
    /// Who may append (see `AppendFence`).
    pub fence: AppendFence,
    pub fenced: Option<LogIoError>,
    pub closed: bool,
    /// Bumped by every truncation, so a durability waiter that raced one can tell.
    pub generation: u64,
    /// Bumped by every removal or cut of a segment, so a read that raced one retries.
    pub layout_version: u64,
    /// Recent truncations as (generation after it, offset cut back to), oldest first.
    pub truncations: VecDeque<(u64, u64)>,
    pub io_stats: IoStats,
    /// Replication's bound on the high watermark: on a leader, the lowest offset every
    /// other in-sync replica holds; on a follower, the leader's high watermark. `None`
    /// when the partition has no other replicas (its high watermark is what it holds).
    pub high_watermark_cap: Option<u64>,
    /// When the recovery point was last written (see `checkpoint`).
    pub recovery_point_written_at: Option<Instant>,
}

/// Who may append to a log, set by replication as roles change and checked under the
/// same borrow that assigns offsets: an append that waited (for space) while this replica
/// stopped leading, or a follower session for an old leader still delivering, is refused
/// instead of appending where the new leader has other batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendFence {
    /// Anyone (a log outside replication: tests, tools).
    #[default]
    Open,
    /// Appends stamped with this leader epoch.
    Leader(u32),
    /// Replicated appends from the leader of this epoch.
    Follower(u32),
    /// Nobody (a leader not yet registered, a replica without a leader).
    Closed,
}

impl State {
    pub fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Registers a task to be woken on the next change, once: a future polled again and
    /// again before anything changes (a long-lived waiter on an idle partition) must not
    /// pile up clones of its waker, each of which holds a reference to its task.
    pub fn add_waiter(&mut self, waker: &Waker) {
        if !self.waiters.iter().any(|known| known.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
    }

    pub fn wake_all(&mut self) {
        self.wakes += 1;
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    pub fn wake_flusher(&mut self) {
        if let Some(waker) = self.flusher_waker.take() {
            waker.wake();
        }
    }

    /// The lowest offset cut back to by truncations after `generation`; `Some(0)` when
    /// that history is no longer kept (the caller must assume the worst).
    pub fn truncated_since(&self, generation: u64) -> Option<u64> {
        if generation == self.generation {
            return None;
        }
        let oldest_kept = self.truncations.front().map_or(u64::MAX, |&(g, _)| g);
        if generation + 1 < oldest_kept {
            return Some(0);
        }
        self.truncations
            .iter()
            .filter(|&&(g, _)| g > generation)
            .map(|&(_, cut)| cut)
            .min()
    }

    pub fn check_open(&self) -> Result<(), AppendError> {
        if let Some(error) = &self.fenced {
            return Err(AppendError::Fenced(error.clone()));
        }
        if self.closed {
            return Err(AppendError::Closed);
        }
        Ok(())
    }
}

pub(super) struct Partition {
    pub id: PartitionId,
    pub dir: PathBuf,
    /// Replaced whole by `reconfigure` (a topic config change applies without a restart).
    pub config: RefCell<LogConfig>,
    pub shard: Rc<ShardResources>,
    pub state: RefCell<State>,
    /// Held by whoever changes segments: the flusher, roll, truncation, retention, close.
    pub writer: Semaphore,
    /// Held by a truncation from start to end: two never interleave.
    pub truncation: Semaphore,
}

/// An append's place in the queue for space; leaving the queue without being admitted (the
/// append was cancelled, or the log closed) gives the place up to the ones behind it.
struct SpaceTicket<'a> {
    log: &'a PartitionLog,
    ticket: u64,
    admitted: Cell<bool>,
}

impl Drop for SpaceTicket<'_> {
    fn drop(&mut self) {
        if !self.admitted.get() {
            let mut state = self.log.inner.state.borrow_mut();
            state.space_queue.retain(|&t| t != self.ticket);
            state.wake_all();
        }
    }
}

/// A handle to one partition's log. Owned by one shard; clones share the log.
#[derive(Clone)]
pub struct PartitionLog {
    pub(super) inner: Rc<Partition>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartitionLog({})", self.inner.dir.display())
    }
}

impl Partition {
    pub fn segment_path(&self, base_offset: u64) -> PathBuf {
        segment_path(&self.dir, base_offset, LOG_SUFFIX)
    }
}

impl PartitionLog {
    pub(super) async fn open(
        shard: Rc<ShardResources>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<PartitionLog, OpenError> {
        config.validate()?;
        let id = shard.allocate_partition_id();
        let state = super::recovery::recover(&shard, id, dir).await?;
        let log = PartitionLog {
            inner: Rc::new(Partition {
                id,
                dir: dir.to_path_buf(),
                config: RefCell::new(config),
                shard,
                state: RefCell::new(state),
                writer: Semaphore::new(1),
                truncation: Semaphore::new(1),
            }),
        };
        log.rebuild_producers().await?;
        Ok(log)
    }

    /// The clock of the shard that owns this log.
    pub fn clock(&self) -> &crate::clock::ClockRef {
        &self.inner.shard.clock
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Applies a new configuration at once: the next flush round uses its flush policy, the
    /// next append its segment size and age, the next retention run its limits.
    pub fn reconfigure(&self, config: LogConfig) -> Result<(), OpenError> {
        config.validate()?;
        if *self.inner.config.borrow() == config {
            return Ok(());
        }
        *self.inner.config.borrow_mut() = config;
        self.inner.state.borrow_mut().wake_flusher();
        Ok(())
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.inner.state.borrow().log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// Every offset below this is durable under the flush policy (see the module doc).
    /// Appended bytes not yet written to the segment file.
    pub fn pending_bytes(&self) -> usize {
        self.inner.state.borrow().pending_bytes
    }

    pub fn durable_offset(&self) -> u64 {
        let state = self.inner.state.borrow();
        if self.inner.config.borrow().flush.syncs() {
            state.synced_offset
        } else {
            state.written_offset
        }
    }

    /// The error that fenced this partition, if one did.
    /// A one-line picture of the writer's state, for a diagnostic log line.
    pub fn writer_state(&self) -> String {
        let state = self.inner.state.borrow();
        format!(
            "next {} written {} synced {} pending {} batches / {} bytes, oldest pending {:?} ago, flusher running {}, flush now {}, writer permits {}, waiters {}",
            state.next_offset,
            state.written_offset,
            state.synced_offset,
            state.pending.len(),
            state.pending_bytes,
            state.first_pending_at.map(|at| at.elapsed()),
            state.flusher_running,
            state.flush_now,
            self.inner.writer.available(),
            state.waiters.len(),
        )
    }

    pub fn fenced(&self) -> Option<LogIoError> {
        self.inner.state.borrow().fenced.clone()
    }

    /// What the writer has done so far.
    pub fn io_stats(&self) -> IoStats {
        self.inner.state.borrow().io_stats
    }

    /// Number of segments (closed and active).
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.size)
            .sum()
    }

    /// Appends a validated batch: stamps its base offset, leader epoch and append time in
    /// place and queues it for the writer. Returns its offsets at once; waits only when the
    /// partition's pending bytes are at their bound (backpressure).
    pub async fn append(
        &self,
        batch: ValidatedBatch,
        leader_epoch: u32,
    ) -> Result<AppendInfo, AppendError> {
        let length = batch.len();
        self.wait_for_space(length).await?;
        let header = *batch.header();
        let mut state = self.inner.state.borrow_mut();
        state.check_open()?;
        if !matches!(state.fence, AppendFence::Open)
            && state.fence != AppendFence::Leader(leader_epoch)
        {
            return Err(AppendError::NotAllowed {
                fence: state.fence,
                epoch: leader_epoch,
            });
        }
        let idempotent = header.producer_id >= 0;
        if idempotent {
            match state
                .producers
                .check(&header)
                .map_err(AppendError::Producer)?
            {
                Admission::Append => {}
                Admission::Duplicate {
                    base_offset,
                    last_offset,
                    append_time_ms,
                } => {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        append_time_ms,
                        duplicate: true,
                    })
                }
            }
        }
        let base_offset = state.next_offset;
        let append_time_ms = self.inner.shard.clock.wall_ms();
        let mut bytes = batch.into_bytes();
        stamp(&mut bytes, base_offset, leader_epoch, append_time_ms);
        let next_offset = base_offset + u64::from(header.record_count);
        debug_assert!(header.timestamp_type() == TimestampType::Create || append_time_ms > 0);
        state.next_offset = next_offset;
        state.epochs.note(leader_epoch, base_offset);
        if idempotent {
            let recorded =
                state
                    .producers
                    .record(&header, base_offset, append_time_ms, append_time_ms);
            assert!(recorded.is_ok(), "an admitted batch records: {recorded:?}");
        }
        self.enqueue(state, base_offset, next_offset, bytes.freeze());
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            append_time_ms,
            duplicate: false,
        })
    }

    /// Queues a stamped batch for the writer (starting it if idle).
    pub(super) fn enqueue(
        &self,
        mut state: std::cell::RefMut<'_, State>,
        base_offset: u64,
        next_offset: u64,
        bytes: Bytes,
    ) {
        state.pending_bytes += bytes.len();
        state.pending.push_back(PendingBatch {
            base_offset,
            next_offset,
            bytes,
        });
        let first = state.first_pending_at.is_none();
        state.first_pending_at.get_or_insert_with(Instant::now);
        let start_flusher = !state.flusher_running;
        if start_flusher {
            state.flusher_running = true;
        } else if first || state.pending_bytes >= self.inner.config.borrow().flush.bytes_trigger() {
            // The first batch since the last round sets the flusher's deadline (a flusher
            // kept alive by journaled batches sleeps until their segment write otherwise).
            state.wake_flusher();
        }
        drop(state);
        if start_flusher {
            self.inner
                .shard
                .spawn_flusher(super::flush::run_flusher(self.inner.clone()));
        }
    }

    /// Whether an append of `length` bytes would be admitted at once (nothing waits before
    /// it and the pending bytes leave room): the caller need not arm a timeout for it.
    pub fn has_room_for(&self, length: usize) -> bool {
        let state = self.inner.state.borrow();
        state.space_queue.is_empty()
            && (state.pending_bytes == 0
                || state.pending_bytes + length <= PARTITION_PENDING_BYTES_MAX)
    }

    /// Waits until the pending bytes leave room for `length`, behind every append that
    /// began waiting earlier (first come, first served: a small append never overtakes a
    /// large one that waits, so appends keep their call order).
    pub(super) async fn wait_for_space(&self, length: usize) -> Result<(), AppendError> {
        let room = |state: &State| {
            state.pending_bytes == 0 || state.pending_bytes + length <= PARTITION_PENDING_BYTES_MAX
        };
        let ticket = {
            let mut state = self.inner.state.borrow_mut();
            state.check_open()?;
            if state.space_queue.is_empty() && room(&state) {
                return Ok(());
            }
            let ticket = state.next_space_ticket;
            state.next_space_ticket += 1;
            state.space_queue.push_back(ticket);
            ticket
        };
        let place = SpaceTicket {
            log: self,
            ticket,
            admitted: Cell::new(false),
        };
        poll_fn(|cx| {
            let mut state = self.inner.state.borrow_mut();
            state.check_open()?;
            if state.space_queue.front() == Some(&ticket) && room(&state) {
                state.space_queue.pop_front();
                place.admitted.set(true);
                // The next in line may fit too.
                state.wake_all();
                return Poll::Ready(Ok(()));
            }
            state.add_waiter(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until every offset up to and including `offset` is durable under the flush
    /// policy. Fails if the partition is fenced first, or if a truncation removed the offset.
    pub async fn wait_durable(&self, offset: u64) -> Result<(), AppendError> {
        let syncs = self.inner.config.borrow().flush.syncs();
        self.wait_for(offset, move |state| {
            if syncs {
                state.synced_offset
            } else {
                state.written_offset
            }
        })
        .await
    }

    /// Waits until every offset up to and including `offset` is written to its segment file
    /// (in the device: it survives the process being killed, whatever the flush policy).
    pub async fn wait_written(&self, offset: u64) -> Result<(), AppendError> {
        self.wait_for(offset, |state| state.written_offset).await
    }

    /// Every offset below this is written to its segment file.
    pub fn written_offset(&self) -> u64 {
        self.inner.state.borrow().written_offset
    }

    /// Writes and fdatasyncs everything appended so far to its segment, whatever the policy
    /// (journaled batches too), and waits.
    pub async fn flush(&self) -> Result<(), AppendError> {
        let last = {
            let mut state = self.inner.state.borrow_mut();
            state.check_open()?;
            if state.segment_synced_offset == state.next_offset {
                return Ok(());
            }
            state.flush_now = true;
            state.sync_requested = true;
            let start_flusher = !state.flusher_running;
            state.flusher_running = true;
            state.wake_flusher();
            let last = state.next_offset - 1;
            drop(state);
            if start_flusher {
                self.inner
                    .shard
                    .spawn_flusher(super::flush::run_flusher(self.inner.clone()));
            }
            last
        };
        self.wait_for(last, |state| state.segment_synced_offset)
            .await
    }

    /// Waits until `reached(state) > offset`, failing on a fence, a close, or a truncation
    /// (after the wait began) that removed `offset`.
    pub(super) async fn wait_for(
        &self,
        offset: u64,
        reached: impl Fn(&State) -> u64,
    ) -> Result<(), AppendError> {
        let generation = self.inner.state.borrow().generation;
        poll_fn(|cx| {
            let mut state = self.inner.state.borrow_mut();
            if let Some(cut) = state.truncated_since(generation) {
                if offset >= cut {
                    let log_end = state.next_offset;
                    return Poll::Ready(Err(AppendError::Truncated { offset, log_end }));
                }
            }
            if offset < reached(&state) {
                return Poll::Ready(Ok(()));
            }
            state.check_open()?;
            state.add_waiter(cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl Partition {
    /// Fences the partition after a failed write or sync: nothing more is accepted and every
    /// waiter learns the cause.
    pub fn fence(&self, error: LogIoError) {
        tracing::error!(dir = %self.dir.display(), %error, "partition fenced after IO failure");
        let mut state = self.state.borrow_mut();
        if state.fenced.is_none() {
            state.fenced = Some(error);
        }
        state.wake_all();
    }
}
