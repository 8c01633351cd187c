//! The producer: batches messages per partition (by size and linger time), keeps each
//! partition's batches in order (so per-key order holds even across retries), retries
//! retriable errors with backoff, and reports every message's outcome. Batches that leave
//! for the same broker at about the same time share one produce request (`outbox`).
//!
//! Memory is bounded: `buffer_bytes` covers every message accepted and not yet
//! acknowledged; `send` waits while the buffer is full.
//!
//! The producer is idempotent by default: the broker hands out a producer id, every batch
//! carries its partition's sequence, and a batch sent again after a lost answer is
//! recognised and stored once. Without idempotence delivery is at least once: such a
//! batch may be stored twice.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::sync::Semaphore;

use super::cluster::Cluster;
use super::error::ClientError;
use super::outbox::Outbox;
use super::partitioner::partition_for_key;
use crate::constants::{
    BATCH_HEADER_BYTES, PRODUCER_BATCHES_REMEMBERED, PRODUCER_PREDECESSOR_POLL_MS,
};
use crate::protocol::{Acks, ErrorCode, InitProducerIdRequest, Request, Response};
use crate::record::{BatchBuilder, Codec};

/// Bytes a record adds to a batch beyond its key and value (rkyv framing, deltas).
const RECORD_OVERHEAD_BYTES: usize = 48;

/// How a producer batches, acknowledges and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more messages before it is sent.
    pub linger: Duration,
    /// A batch is sent once it reaches this size.
    pub batch_bytes: usize,
    /// Messages accepted but not yet acknowledged, in bytes; `send` waits beyond it.
    pub buffer_bytes: usize,
    /// How long the broker may take to acknowledge.
    pub request_timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub codec: Codec,
    /// Idempotent: the broker hands out a producer id, every batch carries it and its
    /// per-partition sequence, and a retried batch is stored once.
    pub idempotent: bool,
    /// Batches in flight per partition at once: 1 to `PRODUCER_BATCHES_REMEMBERED` when
    /// idempotent (the broker recognises retries of its last 5 batches), always 1 when not
    /// (so that a retry cannot reorder).
    pub max_in_flight: usize,
    /// The clock message timestamps are read from.
    pub clock: crate::clock::ClockRef,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(1),
            batch_bytes: 256 * 1024,
            buffer_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retries: 10,
            retry_backoff: Duration::from_millis(50),
            codec: Codec::None,
            idempotent: true,
            max_in_flight: PRODUCER_BATCHES_REMEMBERED,
            clock: crate::clock::system(),
        }
    }
}

/// Where an acknowledged message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
}

type Waiter = oneshot::Sender<Result<RecordMetadata, ClientError>>;

struct Batch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    reserved_bytes: u64,
    opened_at: Instant,
}

/// One partition's queue. Batches leave in order: the single sender takes full batches
/// first, and the open batch once its linger has run out. An idempotent producer keeps up to
/// `PRODUCER_BATCHES_REMEMBERED` batches in flight per partition (the broker refuses a batch
/// that overtakes an earlier one, and the client sends it again once the earlier ones have
/// settled, so per-key order holds across retries); a plain producer keeps one. A batch is
/// never closed just to wait behind another: while the window is full, the open batch keeps
/// growing.
#[derive(Default)]
struct PartitionQueue {
    open: Option<Batch>,
    full: VecDeque<Batch>,
    sending: bool,
    /// Send the open batch at once, linger or not (flush).
    flush_requested: bool,
    /// The idempotent sequence of the next batch's first message, and the producer id it
    /// counts for (a new id starts again at 0).
    next_sequence: i32,
    sequence_of: Option<i64>,
    /// Batches in flight at once (created with the queue's first batch).
    window: Option<Rc<Semaphore>>,
    /// The index the next batch sent gets; batches below `settled_below` (and those in
    /// `settled_ahead`) have been answered for good.
    next_index: u64,
    settled_below: u64,
    settled_ahead: std::collections::BTreeSet<u64>,
}

impl PartitionQueue {
    fn settle(&mut self, index: u64) {
        self.settled_ahead.insert(index);
        while self.settled_ahead.remove(&self.settled_below) {
            self.settled_below += 1;
        }
    }
}

/// Every partition's queue, by topic then partition, so that finding a queue for a message
/// allocates nothing (the topic name is copied once, when its first queue is made).
#[derive(Default)]
struct Queues {
    topics: HashMap<String, HashMap<u32, PartitionQueue>>,
}

impl Queues {
    fn get_mut(&mut self, topic: &str, partition: u32) -> Option<&mut PartitionQueue> {
        self.topics.get_mut(topic)?.get_mut(&partition)
    }

    fn get_or_insert(&mut self, topic: &str, partition: u32) -> &mut PartitionQueue {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::new());
        }
        self.topics
            .get_mut(topic)
            .expect("inserted above")
            .entry(partition)
            .or_default()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut PartitionQueue> {
        self.topics.values_mut().flat_map(HashMap::values_mut)
    }

    fn slots(&self) -> Vec<(String, u32)> {
        self.topics
            .iter()
            .flat_map(|(topic, queues)| queues.keys().map(move |&p| (topic.clone(), p)))
            .collect()
    }
}

struct Inner {
    cluster: Rc<Cluster>,
    config: ProducerConfig,
    queues: RefCell<Queues>,
    sticky: RefCell<HashMap<String, u32>>,
    buffer: Semaphore,
    /// Messages accepted and not yet answered.
    unanswered: Cell<usize>,
    /// The idempotent producer id and epoch, once the broker handed them out; cleared when
    /// a batch failed for good (its sequence may or may not be in the log), so that the
    /// next batch starts afresh under a new id.
    identity: RefCell<Option<(i64, i16)>>,
    /// Held while asking the broker for an identity (one request, not one per partition).
    identity_gate: Semaphore,
    /// Gathers the batches leaving for one broker into one request.
    outbox: Rc<Outbox>,
}

/// A producer; clones share it. Runs on a glommio executor.
#[derive(Clone)]
pub struct Producer {
    inner: Rc<Inner>,
}

/// The outcome of one message, once the broker has acknowledged (or refused) it.
pub struct Delivery {
    receiver: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Delivery {
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.receiver.await.unwrap_or_else(|_| {
            Err(ClientError::Disconnected(
                "producer dropped the message".into(),
            ))
        })
    }
}

impl Producer {
    pub fn new(cluster: Rc<Cluster>, config: ProducerConfig) -> Producer {
        let buffer = Semaphore::new(config.buffer_bytes as u64);
        let outbox = Rc::new(Outbox::new(
            cluster.clone(),
            config.acks.as_i8(),
            config.request_timeout,
            Duration::from_millis(crate::constants::CLIENT_ANSWER_MARGIN_MS),
        ));
        Producer {
            inner: Rc::new(Inner {
                outbox,
                cluster,
                config,
                queues: RefCell::new(Queues::default()),
                sticky: RefCell::new(HashMap::new()),
                buffer,
                unanswered: Cell::new(0),
                identity: RefCell::new(None),
                identity_gate: Semaphore::new(1),
            }),
        }
    }

    /// Queues one message; resolves at once unless the buffer is full. The returned
    /// `Delivery` resolves when the broker acknowledges the message under `acks`.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Delivery, ClientError> {
        let inner = &self.inner;
        let partitions = inner.cluster.partition_count(topic).await?;
        if partitions == 0 {
            return Err(ClientError::UnknownTopic(topic.to_string()));
        }
        let partition = match key {
            Some(key) => partition_for_key(key, partitions),
            None => {
                *inner
                    .sticky
                    .borrow_mut()
                    .entry(topic.to_string())
                    .or_insert(0)
                    % partitions
            }
        };
        let size = key.map_or(0, <[u8]>::len) + value.len() + RECORD_OVERHEAD_BYTES;
        let reserved = (size as u64).min(inner.config.buffer_bytes as u64);
        inner
            .buffer
            .acquire(reserved)
            .await
            .map_err(|_| ClientError::Disconnected("producer closed".into()))?;
        let (waiter, receiver) = oneshot::channel();
        let (new_batch, ready) = {
            let mut queues = inner.queues.borrow_mut();
            let queue = queues.get_or_insert(topic, partition);
            let overflows = queue.open.as_ref().is_some_and(|b| {
                !b.builder.is_empty()
                    && b.builder.estimated_bytes() + size > inner.config.batch_bytes
            });
            if overflows {
                let full = queue.open.take().expect("checked");
                queue.full.push_back(full);
            }
            let new_batch = queue.open.is_none();
            let batch = queue.open.get_or_insert_with(|| Batch {
                builder: BatchBuilder::with_capacity(
                    inner.config.codec,
                    inner.config.batch_bytes.min(size * 4) + BATCH_HEADER_BYTES,
                ),
                waiters: Vec::new(),
                reserved_bytes: 0,
                opened_at: Instant::now(),
            });
            if let Err(error) = batch
                .builder
                .push(inner.config.clock.wall_ms(), key, value, &[])
            {
                inner.buffer.signal(reserved);
                if batch.builder.is_empty() {
                    queue.open = None;
                }
                return Err(ClientError::InvalidInput(error.to_string()));
            }
            batch.waiters.push(waiter);
            batch.reserved_bytes += reserved;
            if batch.builder.estimated_bytes() >= inner.config.batch_bytes {
                let full = queue.open.take().expect("just pushed");
                queue.full.push_back(full);
            }
            (new_batch, !queue.full.is_empty())
        };
        inner.unanswered.set(inner.unanswered.get() + 1);
        // After the table is released: glommio polls a spawned task at once.
        if new_batch {
            self.schedule_linger((topic.to_string(), partition));
        }
        if ready {
            self.start_sender((topic.to_string(), partition));
        }
        Ok(Delivery { receiver })
    }

    fn schedule_linger(&self, slot: (String, u32)) {
        let producer = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(producer.inner.config.linger).await;
            producer.start_sender(slot);
        })
        .detach();
    }

    /// Starts the partition's sender unless it is already running.
    fn start_sender(&self, slot: (String, u32)) {
        {
            let mut queues = self.inner.queues.borrow_mut();
            let Some(queue) = queues.get_mut(&slot.0, slot.1) else {
                return;
            };
            if queue.sending {
                return;
            }
            queue.sending = true;
        }
        let producer = self.clone();
        glommio::spawn_local(async move { producer.run_sender(slot).await }).detach();
    }

    /// Takes the next batch that is ready to leave: a full one, else the open one once its
    /// linger has run out (or a flush asked for it).
    /// Full batches use the whole window; a batch that is not full leaves only when no
    /// other batch of the partition is in flight (`alone`), or on a flush. A trickle of
    /// messages thus gathers into batches while one is in flight (as with a window of 1),
    /// and only a partition that fills batches pipelines them.
    fn next_ready(&self, slot: &(String, u32), alone: bool) -> Option<Batch> {
        let mut queues = self.inner.queues.borrow_mut();
        let queue = queues.get_mut(&slot.0, slot.1)?;
        if let Some(full) = queue.full.pop_front() {
            return Some(full);
        }
        let lingered = queue.open.as_ref().is_some_and(|b| {
            queue.flush_requested || (alone && b.opened_at.elapsed() >= self.inner.config.linger)
        });
        if lingered {
            queue.flush_requested = false;
            return queue.open.take();
        }
        queue.sending = false;
        None
    }

    /// The partition's in-flight window and its size.
    fn window(&self, slot: &(String, u32)) -> (Rc<Semaphore>, u64) {
        let config = &self.inner.config;
        let in_flight = if config.idempotent {
            config.max_in_flight.clamp(1, PRODUCER_BATCHES_REMEMBERED)
        } else {
            1
        };
        let mut queues = self.inner.queues.borrow_mut();
        let queue = queues.get_or_insert(&slot.0, slot.1);
        let window = queue
            .window
            .get_or_insert_with(|| Rc::new(Semaphore::new(in_flight as u64)))
            .clone();
        (window, in_flight as u64)
    }

    async fn run_sender(&self, slot: (String, u32)) {
        let (window, size) = self.window(&slot);
        loop {
            // A place in the window first, then the batch: while the window is full the
            // open batch keeps growing.
            let Ok(permit) = window.acquire_static_permit(1).await else {
                return;
            };
            let alone = window.available() + 1 == size;
            let Some(batch) = self.next_ready(&slot, alone) else {
                return;
            };
            // Keyless messages move on to the next partition once a batch leaves.
            if let Some(sticky) = self.inner.sticky.borrow_mut().get_mut(&slot.0) {
                if *sticky == slot.1 {
                    *sticky = sticky.wrapping_add(1);
                }
            }
            let Batch {
                builder,
                waiters,
                reserved_bytes,
                ..
            } = batch;
            // Sequences and indexes are given here, in send order.
            let stamped = self.stamp_producer(&slot, builder).await;
            let index = {
                let mut queues = self.inner.queues.borrow_mut();
                let queue = queues.get_or_insert(&slot.0, slot.1);
                queue.next_index += 1;
                queue.next_index - 1
            };
            let producer = self.clone();
            let slot = slot.clone();
            glommio::spawn_local(async move {
                let outcome = match stamped.and_then(|b| {
                    b.finish()
                        .map_err(|error| ClientError::InvalidInput(error.to_string()))
                }) {
                    Ok(bytes) => producer.send_batch(&slot, index, bytes.freeze()).await,
                    Err(error) => Err(error),
                };
                producer.answer(&slot, index, outcome, waiters, reserved_bytes);
                drop(permit);
                // A batch that waited for this one to be alone in flight may leave now.
                let waiting = producer
                    .inner
                    .queues
                    .borrow_mut()
                    .get_mut(&slot.0, slot.1)
                    .is_some_and(|queue| queue.open.is_some() || !queue.full.is_empty());
                if waiting {
                    producer.start_sender(slot);
                }
            })
            .detach();
        }
    }

    /// Answers a batch's messages and marks the batch settled.
    fn answer(
        &self,
        slot: &(String, u32),
        index: u64,
        outcome: Result<u64, ClientError>,
        waiters: Vec<Waiter>,
        reserved_bytes: u64,
    ) {
        if outcome.is_err() && self.inner.config.idempotent {
            // The batch may or may not be in the log: its sequence cannot be reused, and
            // the next one must not depend on it. Start afresh under a new id.
            self.inner.identity.borrow_mut().take();
        }
        if let Some(queue) = self.inner.queues.borrow_mut().get_mut(&slot.0, slot.1) {
            queue.settle(index);
        }
        let answered = waiters.len();
        for (position, waiter) in waiters.into_iter().enumerate() {
            let result = outcome.clone().map(|base| RecordMetadata {
                partition: slot.1,
                offset: base + position as u64,
            });
            let _ = waiter.send(result);
        }
        self.inner.buffer.signal(reserved_bytes);
        self.inner
            .unanswered
            .set(self.inner.unanswered.get() - answered);
    }

    /// Whether a batch sent before `index` on this partition is still unanswered.
    fn earlier_unsettled(&self, slot: &(String, u32), index: u64) -> bool {
        self.inner
            .queues
            .borrow_mut()
            .get_mut(&slot.0, slot.1)
            .is_some_and(|queue| queue.settled_below < index)
    }

    /// The idempotent producer id and epoch, asked of the broker once.
    async fn identity(&self) -> Result<(i64, i16), ClientError> {
        if let Some(identity) = *self.inner.identity.borrow() {
            return Ok(identity);
        }
        let _gate = self
            .inner
            .identity_gate
            .acquire_permit(1)
            .await
            .map_err(|_| ClientError::Disconnected("producer closed".into()))?;
        if let Some(identity) = *self.inner.identity.borrow() {
            return Ok(identity);
        }
        let request = Request::InitProducerId(InitProducerIdRequest {
            client_id: "shardline-producer".into(),
        });
        let config = &self.inner.config;
        let mut attempt = 0;
        let identity = loop {
            let result = async {
                let answer = self
                    .inner
                    .cluster
                    .request_any(&request, config.request_timeout)
                    .await?;
                match answer.response {
                    Response::InitProducerId(answer) if answer.error == ErrorCode::None => {
                        Ok((answer.producer_id, answer.producer_epoch))
                    }
                    Response::InitProducerId(answer) => {
                        Err(ClientError::from_code(answer.error, answer.message))
                    }
                    other => Err(ClientError::Protocol(format!(
                        "init producer id answered with {:?}",
                        other.api_key()
                    ))),
                }
            }
            .await;
            match result {
                Err(error) if error.is_retriable() && attempt < config.retries => {
                    attempt += 1;
                    glommio::timer::sleep(config.retry_backoff * attempt).await;
                }
                other => break other?,
            }
        };
        *self.inner.identity.borrow_mut() = Some(identity);
        Ok(identity)
    }

    /// Gives a batch its producer id, epoch and the partition's next sequence (idempotent
    /// producers only). Called by the partition's single sender, in send order.
    async fn stamp_producer(
        &self,
        slot: &(String, u32),
        builder: BatchBuilder,
    ) -> Result<BatchBuilder, ClientError> {
        if !self.inner.config.idempotent {
            return Ok(builder);
        }
        let (producer_id, epoch) = self.identity().await?;
        let mut queues = self.inner.queues.borrow_mut();
        let queue = queues.get_or_insert(&slot.0, slot.1);
        if queue.sequence_of != Some(producer_id) {
            queue.sequence_of = Some(producer_id);
            queue.next_sequence = 0;
        }
        let base_sequence = queue.next_sequence;
        let count = i64::from(builder.record_count());
        queue.next_sequence =
            ((i64::from(base_sequence) + count) % (i64::from(i32::MAX) + 1)) as i32;
        Ok(builder.with_producer(producer_id, epoch, base_sequence))
    }

    /// Sends one batch, retrying retriable failures; returns its base offset. A batch the
    /// broker refuses as out of sequence while earlier ones are still unanswered overtook
    /// them: it is sent again once they have all settled.
    async fn send_batch(
        &self,
        slot: &(String, u32),
        index: u64,
        batch: Bytes,
    ) -> Result<u64, ClientError> {
        let (topic, partition) = (slot.0.as_str(), slot.1);
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            let result = async {
                let (address, epoch) = self.inner.cluster.leader_for(topic, partition).await?;
                self.inner
                    .outbox
                    .send(address, epoch, topic, partition, batch.clone())
                    .await
            }
            .await;
            match result {
                Err(ClientError::Broker {
                    code: ErrorCode::OutOfOrderSequence,
                    ..
                }) if attempt < config.retries && self.earlier_unsettled(slot, index) => {
                    attempt += 1;
                    while self.earlier_unsettled(slot, index) {
                        glommio::timer::sleep(Duration::from_millis(PRODUCER_PREDECESSOR_POLL_MS))
                            .await;
                    }
                }
                Err(error) if error.is_retriable() && attempt < config.retries => {
                    attempt += 1;
                    glommio::timer::sleep(config.retry_backoff * attempt).await;
                    let _ = self.inner.cluster.refresh_metadata().await;
                }
                other => return other,
            }
        }
    }

    /// Sends every open batch now and waits until every message sent so far is answered.
    pub async fn flush(&self) {
        let slots: Vec<(String, u32)> = {
            let mut queues = self.inner.queues.borrow_mut();
            for queue in queues.values_mut() {
                queue.flush_requested = queue.open.is_some();
            }
            queues.slots()
        };
        for slot in slots {
            self.start_sender(slot);
        }
        while self.inner.unanswered.get() > 0 {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }
}
