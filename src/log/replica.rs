//! What replication needs of a partition log: appending the leader's batches as they are
//! (offsets, epochs and append times already stamped), and the high watermark.
//!
//! The high watermark is the lowest of what this replica holds durably (under its flush
//! policy) and the cap replication sets (`set_high_watermark_cap`): on a leader, the lowest
//! offset every other in-sync replica holds; on a follower, the leader's high watermark.
//! A partition without other replicas has no cap, and its high watermark is what it holds.

use bytes::Bytes;

use super::error::AppendError;
use super::partition::{AppendFence, AppendInfo, PartitionLog, State};
use crate::record::ValidatedBatch;

fn high_watermark_of(state: &State, syncs: bool) -> u64 {
    let held = if syncs {
        state.synced_offset
    } else {
        state.written_offset
    };
    state.high_watermark_cap.map_or(held, |cap| held.min(cap))
}

impl PartitionLog {
    /// Appends a batch from the leader exactly as it is: it must start where this log ends.
    /// Idempotent producers' state follows the batch headers, as on the leader.
    /// `leader_epoch` is the epoch of the leader it came from: the log must follow it.
    pub async fn append_replicated(
        &self,
        batch: ValidatedBatch,
        leader_epoch: u32,
    ) -> Result<AppendInfo, AppendError> {
        self.wait_for_space(batch.len()).await?;
        let header = *batch.header();
        let mut state = self.inner.state.borrow_mut();
        state.check_open()?;
        if !matches!(state.fence, AppendFence::Open)
            && state.fence != AppendFence::Follower(leader_epoch)
        {
            return Err(AppendError::NotAllowed {
                fence: state.fence,
                epoch: leader_epoch,
            });
        }
        if header.base_offset != state.next_offset {
            return Err(AppendError::NotContiguous {
                expected: state.next_offset,
                got: header.base_offset,
            });
        }
        let base_offset = header.base_offset;
        let next_offset = base_offset + u64::from(header.record_count);
        state.next_offset = next_offset;
        if !state.epochs.note(header.leader_epoch, base_offset) {
            tracing::warn!(dir = %self.dir().display(), epoch = header.leader_epoch, base_offset, "a replicated batch of an older epoch than the last");
        }
        if header.producer_id >= 0 {
            if let Err(error) = state.producers.record(
                &header,
                base_offset,
                header.append_time_ms,
                header.append_time_ms,
            ) {
                tracing::warn!(dir = %self.dir().display(), %error, "a replicated batch's producer state did not follow");
            }
        }
        let bytes: Bytes = batch.into_bytes().freeze();
        self.enqueue(state, base_offset, next_offset, bytes);
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            append_time_ms: header.append_time_ms,
            duplicate: false,
        })
    }

    /// Sets who may append (replication, as this replica's role changes).
    pub fn set_fence(&self, fence: AppendFence) {
        let mut state = self.inner.state.borrow_mut();
        state.fence = fence;
        state.wake_all();
    }

    pub fn fence(&self) -> AppendFence {
        self.inner.state.borrow().fence
    }

    /// The epoch appends are stamped with here: the leader epoch when leading, 0 for a
    /// log outside replication (`None` when this replica may not append).
    pub fn appending_epoch(&self) -> Option<u32> {
        match self.inner.state.borrow().fence {
            AppendFence::Open => Some(0),
            AppendFence::Leader(epoch) => Some(epoch),
            AppendFence::Follower(_) | AppendFence::Closed => None,
        }
    }

    /// Wakes whoever waits on the log (to look again at something outside it).
    pub fn wake_waiters(&self) {
        self.inner.state.borrow_mut().wake_all();
    }

    /// Replication's cap on the high watermark (`None`: never set on this log yet).
    pub fn high_watermark_cap(&self) -> Option<u64> {
        self.inner.state.borrow().high_watermark_cap
    }

    /// Registers `waker` to be woken at the log's next change (a write, a sync, a fence).
    /// Returns the log's change count: while `change_count` still says so, the waker is
    /// registered (a task watching many logs need not register again on those).
    pub fn wake_on_change(&self, waker: &std::task::Waker) -> u64 {
        let mut state = self.inner.state.borrow_mut();
        state.add_waiter(waker);
        state.wakes
    }

    /// How many times the log woke its waiters (see `wake_on_change`).
    pub fn change_count(&self) -> u64 {
        self.inner.state.borrow().wakes
    }

    /// Cuts the log at `offset` for a follower of the leader of `leader_epoch`: refused
    /// when the log no longer follows it (a newer session owns the log).
    pub async fn truncate_following(
        &self,
        offset: u64,
        leader_epoch: u32,
    ) -> Result<u64, crate::log::MaintenanceError> {
        self.check_following(leader_epoch)?;
        self.truncate_to(offset).await
    }

    /// Empties the log and starts it at `offset` for a follower of the leader of
    /// `leader_epoch` (see `reset_to`); refused like `truncate_following`.
    pub async fn reset_following(
        &self,
        offset: u64,
        leader_epoch: u32,
    ) -> Result<u64, crate::log::MaintenanceError> {
        self.check_following(leader_epoch)?;
        self.reset_to(offset).await
    }

    fn check_following(&self, leader_epoch: u32) -> Result<(), crate::log::MaintenanceError> {
        let fence = self.fence();
        if fence != AppendFence::Open && fence != AppendFence::Follower(leader_epoch) {
            return Err(crate::log::MaintenanceError::NotFollowing {
                fence: format!("{fence:?}"),
                epoch: leader_epoch,
            });
        }
        Ok(())
    }

    /// Offsets below this are held by every in-sync replica: consumers read below it.
    pub fn high_watermark(&self) -> u64 {
        let syncs = self.inner.config.borrow().flush.syncs();
        high_watermark_of(&self.inner.state.borrow(), syncs)
    }

    /// Sets replication's cap on the high watermark (`None`: no other replicas) and wakes
    /// whoever waits on it.
    pub fn set_high_watermark_cap(&self, cap: Option<u64>) {
        let mut state = self.inner.state.borrow_mut();
        if state.high_watermark_cap != cap {
            state.high_watermark_cap = cap;
            state.wake_all();
        }
    }

    /// Waits until the high watermark passes `offset` (`acks=all`, consumers' long polls).
    pub async fn wait_high_watermark(&self, offset: u64) -> Result<(), AppendError> {
        let syncs = self.inner.config.borrow().flush.syncs();
        self.wait_for(offset, move |state| high_watermark_of(state, syncs))
            .await
    }

    /// Waits until the log ends past `offset` (a leader's long poll for a follower).
    pub async fn wait_appended(&self, offset: u64) -> Result<(), AppendError> {
        self.wait_for(offset, |state| state.next_offset).await
    }
}
