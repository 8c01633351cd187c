//! Idempotent producers: the state one partition keeps per producer id, so that a retried
//! batch is appended once and a batch that skips or repeats sequences is refused.
//!
//! A batch is idempotent when its header carries a producer id (`producer_id >= 0`); one
//! with `producer_id == -1` passes every check untouched. Each idempotent batch names its
//! producer's epoch and the sequence of its first record; its records take the sequences
//! `base_sequence ..= base_sequence + last_offset_delta`, wrapping from `i32::MAX` to 0.
//!
//! # Admission rules (`ProducerStateTable::check`)
//!
//! | producer state | batch | answer |
//! |---|---|---|
//! | unknown (new, expired, evicted) | sequence 0 | `Append` |
//! | unknown (new, expired, evicted) | sequence > 0 | `OutOfOrderSequence` (expected 0) |
//! | known, batch epoch lower | any | `ProducerFenced` |
//! | known, batch epoch higher | sequence 0 | `Append` (forgets the old epoch's batches) |
//! | known, batch epoch higher | sequence > 0 | `OutOfOrderSequence` (expected 0) |
//! | same epoch | exactly the range of a remembered batch | `Duplicate` with its offsets |
//! | same epoch, no remembered batch (truncated) | any sequence | `Append` |
//! | same epoch | starts right after the newest batch | `Append` |
//! | same epoch | anything else (gap, older batch, partial overlap) | `OutOfOrderSequence` |
//!
//! Malformed producer fields (a negative sequence or epoch with a producer id, a producer
//! id below -1, a range longer than any batch) are `InvalidSequence` and its siblings.
//!
//! `record` applies a batch once it is in the log. It trusts the log: it accepts whatever
//! `check` admitted, and anything a follower or a recovery replay finds, adopting the
//! batch's epoch and starting the producer's batches afresh when the batch does not follow
//! them (as an unknown producer's batch would have been admitted).
//!
//! The state is rebuilt at restart from a snapshot (`snapshot`) plus a replay through
//! `record` of the log above the snapshot's offset.

mod snapshot;

use std::collections::{HashMap, VecDeque};

pub use snapshot::{SnapshotError, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

use crate::constants::{
    BATCH_RECORDS_MAX, PRODUCERS_PER_PARTITION_MAX, PRODUCER_BATCHES_REMEMBERED,
};
use crate::record::BatchHeader;

/// What `check` decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A new batch, in sequence (or not idempotent): append it, then `record` it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets, append
    /// nothing.
    Duplicate {
        base_offset: u64,
        last_offset: u64,
        append_time_ms: i64,
    },
}

/// Why a batch was refused, or could not be recorded. Operating errors: the batch came
/// from outside (a producer, a leader, the log on disk).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    #[error("producer {producer_id} epoch {received} is fenced: the partition has seen epoch {current_epoch}")]
    ProducerFenced {
        producer_id: i64,
        current_epoch: i16,
        received: i16,
    },
    #[error(
        "producer {producer_id} epoch {epoch}: expected sequence {expected}, received {received}"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        received: i32,
    },
    #[error("producer {producer_id} epoch {epoch}: invalid sequence range from {base_sequence} over last offset delta {last_offset_delta}")]
    InvalidSequence {
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        last_offset_delta: u32,
    },
    #[error("producer {producer_id}: invalid epoch {epoch} (must be at least 0)")]
    InvalidEpoch { producer_id: i64, epoch: i16 },
    #[error("invalid producer id {producer_id} (-1 means none, others must be at least 0)")]
    InvalidProducerId { producer_id: i64 },
    #[error("producer {producer_id}: batch at offset {base_offset} with last offset delta {last_offset_delta} passes the largest offset")]
    OffsetOverflow {
        producer_id: i64,
        base_offset: u64,
        last_offset_delta: u32,
    },
}

/// One batch a producer appended, remembered to answer its retries. Plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RememberedBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub append_time_ms: i64,
}

/// What one partition knows of one producer. Owned by its `ProducerStateTable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    epoch: i16,
    /// Oldest first; at most `PRODUCER_BATCHES_REMEMBERED`, each following the one before.
    batches: VecDeque<RememberedBatch>,
    last_active_ms: i64,
}

/// The idempotent-producer state of one partition. Owned by the shard that owns the
/// partition; no IO, no clock of its own (`now_ms` is passed in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerState>,
}

/// The producer fields of one idempotent batch, checked for form.
#[derive(Debug, Clone, Copy)]
struct SequencedBatch {
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
    last_offset_delta: u32,
}

/// The sequence `delta` places after `sequence`, in the space [0, i32::MAX] that wraps to 0.
fn sequence_add(sequence: i32, delta: u32) -> i32 {
    assert!(sequence >= 0, "sequence {sequence} is negative");
    let space = i64::from(i32::MAX) + 1;
    let sum = (i64::from(sequence) + i64::from(delta)) % space;
    i32::try_from(sum).expect("a sum modulo 2^31 fits an i32")
}

impl SequencedBatch {
    /// The batch's producer fields; `None` when it is not idempotent (`producer_id == -1`).
    fn of(header: &BatchHeader) -> Result<Option<SequencedBatch>, ProducerStateError> {
        let producer_id = header.producer_id;
        let epoch = header.producer_epoch;
        match producer_id {
            -1 => return Ok(None),
            id if id < -1 => return Err(ProducerStateError::InvalidProducerId { producer_id }),
            _ => {}
        }
        if epoch < 0 {
            return Err(ProducerStateError::InvalidEpoch { producer_id, epoch });
        }
        let last_offset_delta = header.last_offset_delta;
        if header.base_sequence < 0 || last_offset_delta >= BATCH_RECORDS_MAX {
            return Err(ProducerStateError::InvalidSequence {
                producer_id,
                epoch,
                base_sequence: header.base_sequence,
                last_offset_delta,
            });
        }
        Ok(Some(SequencedBatch {
            producer_id,
            epoch,
            first_sequence: header.base_sequence,
            last_sequence: sequence_add(header.base_sequence, last_offset_delta),
            last_offset_delta,
        }))
    }

    fn out_of_order(&self, expected: i32) -> ProducerStateError {
        ProducerStateError::OutOfOrderSequence {
            producer_id: self.producer_id,
            epoch: self.epoch,
            expected,
            received: self.first_sequence,
        }
    }
}

impl ProducerState {
    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &RememberedBatch> + '_ {
        self.batches.iter()
    }

    /// When the producer last appended (the `now_ms` of its latest `record`).
    pub fn last_active_ms(&self) -> i64 {
        self.last_active_ms
    }

    /// The sequence its next batch must start with; `None` when any sequence is accepted
    /// (no batch remembered in this epoch).
    pub fn next_sequence(&self) -> Option<i32> {
        let newest = self.batches.back()?;
        Some(sequence_add(newest.last_sequence, 1))
    }

    fn admit(&self, batch: &SequencedBatch) -> Result<Admission, ProducerStateError> {
        if batch.epoch < self.epoch {
            return Err(ProducerStateError::ProducerFenced {
                producer_id: batch.producer_id,
                current_epoch: self.epoch,
                received: batch.epoch,
            });
        }
        if batch.epoch > self.epoch {
            return match batch.first_sequence {
                0 => Ok(Admission::Append),
                _ => Err(batch.out_of_order(0)),
            };
        }
        let retried = self.batches.iter().find(|remembered| {
            remembered.first_sequence == batch.first_sequence
                && remembered.last_sequence == batch.last_sequence
        });
        if let Some(original) = retried {
            return Ok(Admission::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                append_time_ms: original.append_time_ms,
            });
        }
        // A range starting at the expected sequence cannot overlap a remembered batch
        // (`constants` asserts the remembered span plus one batch stays below 2^31), so a
        // partial overlap always lands in the out-of-order arm.
        match self.next_sequence() {
            None => Ok(Admission::Append),
            Some(expected) if expected == batch.first_sequence => Ok(Admission::Append),
            Some(expected) => Err(batch.out_of_order(expected)),
        }
    }

    /// Appends `batch` as the newest, starting afresh when its epoch differs or it does not
    /// follow the newest remembered batch.
    fn apply(&mut self, epoch: i16, batch: RememberedBatch, now_ms: i64) {
        let follows = self
            .next_sequence()
            .is_none_or(|expected| expected == batch.first_sequence);
        if epoch != self.epoch || !follows {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_active_ms = now_ms;
    }
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// The number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn producer(&self, producer_id: i64) -> Option<&ProducerState> {
        self.producers.get(&producer_id)
    }

    /// Decides whether a batch from a producer is appended, answered as a duplicate, or
    /// refused. Changes nothing: `record` the batch once it is appended.
    pub fn check(&self, header: &BatchHeader) -> Result<Admission, ProducerStateError> {
        let Some(batch) = SequencedBatch::of(header)? else {
            return Ok(Admission::Append);
        };
        match self.producers.get(&batch.producer_id) {
            // A producer this partition does not know starts at sequence 0: a later batch of
            // a new producer that overtook its first one (a reordering between the client and
            // the log) must not be taken, or the first could never follow it.
            None if batch.first_sequence == 0 => Ok(Admission::Append),
            None => Err(ProducerStateError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                expected: 0,
                received: batch.first_sequence,
            }),
            Some(state) => state.admit(&batch),
        }
    }

    /// Records a batch that is now in the log at `base_offset`. Used by the leader after an
    /// append, by followers and by recovery replay; it never refuses a batch for its epoch or
    /// sequence (the log is the truth), only for malformed producer fields.
    pub fn record(
        &mut self,
        header: &BatchHeader,
        base_offset: u64,
        append_time_ms: i64,
        now_ms: i64,
    ) -> Result<(), ProducerStateError> {
        let Some(batch) = SequencedBatch::of(header)? else {
            return Ok(());
        };
        let last_offset = base_offset
            .checked_add(u64::from(batch.last_offset_delta))
            .ok_or(ProducerStateError::OffsetOverflow {
                producer_id: batch.producer_id,
                base_offset,
                last_offset_delta: batch.last_offset_delta,
            })?;
        let remembered = RememberedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
            last_offset,
            append_time_ms,
        };
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.evict_least_recently_active();
        }
        let state = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerState {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_REMEMBERED),
                last_active_ms: now_ms,
            });
        state.apply(batch.epoch, remembered, now_ms);
        Ok(())
    }

    /// Forgets the producer that was active least recently (ties: the lowest id). A scan,
    /// done only when a new producer arrives at a full table; appends of known producers
    /// pay nothing for it.
    fn evict_least_recently_active(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(id, state)| (state.last_active_ms, **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Drops the producers idle for longer than `idle_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, state| now_ms.saturating_sub(state.last_active_ms) <= idle_ms);
        before - self.producers.len()
    }

    /// Forgets every remembered batch that reaches `offset` or beyond: the log was
    /// truncated to end at `offset`. A producer left without batches keeps its epoch and
    /// may continue with any sequence.
    pub fn truncate_to(&mut self, offset: u64) {
        for state in self.producers.values_mut() {
            state.batches.retain(|batch| batch.last_offset < offset);
        }
    }

    /// Encodes the table as a snapshot covering the log below `up_to_offset` (diagram in
    /// `snapshot`).
    pub fn encode_snapshot(&self, up_to_offset: u64) -> Vec<u8> {
        snapshot::encode(self, up_to_offset)
    }

    /// Decodes a snapshot: the offset it covers the log up to, and the table.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, ProducerStateTable), SnapshotError> {
        snapshot::decode(bytes)
    }
}

#[cfg(test)]
mod tests;
