//! The producer's tables: each partition's queue of batches (the open one, the full ones
//! waiting, the window of those in flight, the idempotent sequence), by topic and partition.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::delivery::Waiter;
use super::InFlight;
use crate::record::BatchBuilder;

/// A partition's batch being filled (or full and waiting to leave), with its messages'
/// waiters and the buffer bytes they hold.
pub(super) struct Batch {
    pub(super) builder: BatchBuilder,
    pub(super) waiters: Vec<Waiter>,
    pub(super) reserved_bytes: u64,
    pub(super) opened_at: Instant,
}

/// A partition of a topic, as the producer's tables name it (the topic's name is shared, so
/// that naming a partition copies no string).
pub(super) type Slot = (Rc<str>, u32);

/// One partition's queue. Batches leave in order: full batches first, and the open batch once
/// its linger has run out. An idempotent producer keeps up to `PRODUCER_BATCHES_REMEMBERED`
/// batches in flight per partition (the broker refuses a batch that overtakes an earlier
/// one, and the client sends it again once the earlier ones have settled, so per-key order
/// holds across retries); a plain producer keeps one. A batch is never closed just to wait
/// behind another: while the window is full, the open batch keeps growing.
#[derive(Default)]
pub(super) struct PartitionQueue {
    pub(super) open: Option<Batch>,
    pub(super) full: VecDeque<Batch>,
    /// A task is waiting for the producer id to stamp this partition's next batch; later
    /// batches wait behind it, so that sequences follow the send order.
    pub(super) stamping: bool,
    /// Send the open batch at once, linger or not (flush).
    pub(super) flush_requested: bool,
    /// The idempotent sequence of the next batch's first message, and the producer id it
    /// counts for (a new id starts again at 0).
    pub(super) next_sequence: i32,
    pub(super) sequence_of: Option<i64>,
    /// Batches that left and are not answered for good.
    pub(super) in_flight: usize,
    /// Batches on their first try that wait for their leader to be looked up, in send
    /// order, and whether the partition's routing task is running. While it runs, later
    /// batches queue here too (`Producer::dispatch`), and the one task routes them one
    /// after another, so that no batch overtakes an earlier one on its way to the broker.
    pub(super) unrouted: VecDeque<InFlight>,
    pub(super) routing: bool,
    /// The bytes and messages of the batch that left last: the next one is sized by it.
    pub(super) last_batch: Option<(usize, usize)>,
    /// The index the next batch sent gets; batches below `settled_below` (and those in
    /// `settled_ahead`) have been answered for good.
    pub(super) next_index: u64,
    pub(super) settled_below: u64,
    pub(super) settled_ahead: std::collections::BTreeSet<u64>,
}

impl PartitionQueue {
    pub(super) fn settle(&mut self, index: u64) {
        self.settled_ahead.insert(index);
        while self.settled_ahead.remove(&self.settled_below) {
            self.settled_below += 1;
        }
    }

    /// The next batch that is ready to leave: a full one, else the open one once its linger
    /// has run out (or a flush asked for it). A batch that is not full leaves only when no
    /// other batch of the partition is in flight, or on a flush: a trickle of messages thus
    /// gathers into batches while one is in flight (as with a window of 1), and only a
    /// partition that fills batches pipelines them.
    pub(super) fn next_ready(&mut self, linger: Duration) -> Option<Batch> {
        if let Some(full) = self.full.pop_front() {
            return Some(full);
        }
        let alone = self.in_flight == 0;
        let lingered = self
            .open
            .as_ref()
            .is_some_and(|b| self.flush_requested || (alone && b.opened_at.elapsed() >= linger));
        if lingered {
            self.flush_requested = false;
            return self.open.take();
        }
        None
    }

    pub(super) fn has_waiting(&self) -> bool {
        self.open.is_some() || !self.full.is_empty()
    }
}

/// One topic's partition queues, and its name to hand out in slots.
struct TopicQueues {
    name: Rc<str>,
    partitions: FxHashMap<u32, PartitionQueue>,
}

/// Every partition's queue, by topic then partition, so that finding a queue for a message
/// allocates nothing (the topic name is copied once, when its first queue is made). The
/// maps hash with FxHash: they are looked up for every message, their keys are the
/// application's own topics and partitions, and SipHash cost a few percent of the
/// producer's thread.
#[derive(Default)]
pub(super) struct Queues {
    topics: FxHashMap<Rc<str>, TopicQueues>,
}

impl Queues {
    pub(super) fn get_mut(&mut self, slot: &Slot) -> Option<&mut PartitionQueue> {
        self.topics.get_mut(&*slot.0)?.partitions.get_mut(&slot.1)
    }

    /// The partition's queue, made if it is new, and its slot.
    pub(super) fn get_or_insert(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> (Slot, &mut PartitionQueue) {
        if !self.topics.contains_key(topic) {
            let name: Rc<str> = Rc::from(topic);
            let queues = TopicQueues {
                name: name.clone(),
                partitions: FxHashMap::default(),
            };
            self.topics.insert(name, queues);
        }
        let queues = self.topics.get_mut(topic).expect("inserted above");
        let slot = (queues.name.clone(), partition);
        (slot, queues.partitions.entry(partition).or_default())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut PartitionQueue> {
        self.topics
            .values_mut()
            .flat_map(|queues| queues.partitions.values_mut())
    }

    pub(super) fn slots(&self) -> Vec<Slot> {
        self.topics
            .values()
            .flat_map(|queues| queues.partitions.keys().map(|&p| (queues.name.clone(), p)))
            .collect()
    }
}
