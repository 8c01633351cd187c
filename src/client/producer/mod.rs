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
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::sync::Semaphore;
use rustc_hash::FxHashMap;

mod delivery;
mod queue;

pub use delivery::Delivery;
use delivery::{Callback, Incoming, Waiter};
use queue::{Batch, Queues, Slot};

use super::cluster::Cluster;
use super::error::ClientError;
use super::outbox::{Outbox, Ticket};
use super::partitioner::partition_for_key;
use crate::constants::{
    BATCH_HEADER_BYTES, PRODUCER_BATCHES_REMEMBERED, PRODUCER_DELIVERY_TIMEOUT_S_DEFAULT,
    PRODUCER_PREDECESSOR_POLL_MS,
};
use crate::protocol::{Acks, ErrorCode, InitProducerIdRequest, Request, Response};
use crate::record::{BatchBuilder, Codec};

/// Bytes a record adds to a batch beyond its key and value (rkyv framing, deltas).
const RECORD_OVERHEAD_BYTES: usize = 48;

/// Spare capacity a closed batch may keep beyond twice its length before it is copied into
/// a buffer of its own size (a batch sized like a larger one before it).
const BATCH_SLACK_BYTES: usize = 4096;

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
    /// Tries after the first, at most. By default as many as the delivery timeout allows
    /// (as Kafka's producer): a leader election or a broker's restart that takes longer than
    /// a few retries' backoff must not fail the batches waiting for it.
    pub retries: u32,
    /// The wait before the n-th retry is n times this, up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long a message may take to be acknowledged, from when its batch opened, retries
    /// included. Past it, a try that fails is not followed by another, and a batch still
    /// waiting to leave fails without being sent: both answer `ClientError::Timeout`. So
    /// a producer whose brokers are gone answers its backlog within about this long,
    /// instead of trying every batch in turn. At least `request_timeout` is sensible.
    pub delivery_timeout: Duration,
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

impl ProducerConfig {
    /// When the delivery timeout of a batch opened at `opened_at` runs out. A timeout too
    /// long for the clock (`Duration::MAX`, to retry for good) means a century from then.
    fn deadline_from(&self, opened_at: Instant) -> Instant {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        opened_at
            .checked_add(self.delivery_timeout)
            .or_else(|| opened_at.checked_add(CENTURY))
            .unwrap_or(opened_at)
    }

    /// The wait before retry number `attempt` (from 1).
    fn backoff(&self, attempt: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(attempt)
            .min(self.retry_backoff_max)
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(1),
            batch_bytes: 256 * 1024,
            buffer_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(PRODUCER_DELIVERY_TIMEOUT_S_DEFAULT),
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

/// A batch that left its queue and is not answered for good yet.
struct InFlight {
    slot: Slot,
    /// Its place in the partition's send order.
    index: u64,
    bytes: Bytes,
    waiters: Vec<Waiter>,
    reserved_bytes: u64,
    /// Tries after the first.
    attempt: u32,
    /// When its delivery timeout runs out (`Producer::delivery_deadline`).
    deadline: Instant,
    /// It took a sequence of its partition (idempotent): failing for good, it leaves a gap
    /// the next batch must not be sent after under the same producer id.
    sequenced: bool,
}

/// A batch in a produce request: the outbox settles it with the batch's outcome.
struct Sent {
    producer: Producer,
    batch: InFlight,
}

impl Ticket for Sent {
    fn settle(self, outcome: Result<u64, ClientError>) {
        self.producer.settle(self.batch, outcome);
    }
}

struct Inner {
    cluster: Rc<Cluster>,
    config: ProducerConfig,
    /// Batches in flight per partition at most (see `ProducerConfig::max_in_flight`).
    window: usize,
    queues: RefCell<Queues>,
    sticky: RefCell<FxHashMap<String, u32>>,
    buffer: Semaphore,
    /// Messages accepted and not yet answered.
    unanswered: Cell<usize>,
    /// Open batches by when their linger runs out (linger is one duration, so that is the
    /// order they opened in), and whether the task that sends them then is running.
    lingering: RefCell<VecDeque<(Instant, Slot)>>,
    linger_running: Cell<bool>,
    /// Partitions to pump, and whether a `pump` is draining them: a pump reached from
    /// inside another (a batch answered as it leaves releases the next) only adds its
    /// partition here, so the stack stays flat however many batches answer in a row.
    to_pump: RefCell<VecDeque<Slot>>,
    pumping: Cell<bool>,
    /// The idempotent producer id and epoch, once the broker handed them out; cleared when
    /// a batch failed for good (its sequence may or may not be in the log), so that the
    /// next batch starts afresh under a new id.
    identity: RefCell<Option<(i64, i16)>>,
    /// Held while asking the broker for an identity (one request, not one per partition).
    identity_gate: Semaphore,
    /// Gathers the batches leaving for one broker into one request.
    outbox: Rc<Outbox<Sent>>,
}

/// A producer; clones share it. Runs on a glommio executor.
///
/// How a batch travels: `send` adds the message to its partition's open batch. A batch
/// leaves when it is full, or when its linger runs out (one task per producer watches the
/// lingering batches), or on `flush`; leaving is a plain call that stamps the batch's
/// sequence and hands it to the outbox, which gathers the batches leaving for one broker into
/// one request. That request's task settles each batch: its messages are answered, and the
/// partition's next batch may leave. Only a retry, or a batch waiting for the producer id,
/// gets a task of its own; batches waiting for their leader to be looked up share one task
/// per partition; a batch that cannot be closed, or that expired before it left, is
/// answered with the error as it leaves.
#[derive(Clone)]
pub struct Producer {
    inner: Rc<Inner>,
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
        let window = if config.idempotent {
            config.max_in_flight.clamp(1, PRODUCER_BATCHES_REMEMBERED)
        } else {
            1
        };
        Producer {
            inner: Rc::new(Inner {
                outbox,
                cluster,
                config,
                window,
                queues: RefCell::new(Queues::default()),
                sticky: RefCell::new(FxHashMap::default()),
                buffer,
                unanswered: Cell::new(0),
                lingering: RefCell::new(VecDeque::new()),
                linger_running: Cell::new(false),
                to_pump: RefCell::new(VecDeque::new()),
                pumping: Cell::new(false),
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
        let (sender, receiver) = oneshot::channel();
        self.accept(topic, key, value, Incoming::Channel(sender))
            .await?;
        Ok(Delivery { receiver })
    }

    /// Queues one message, as `send`, and calls `on_delivery` with its outcome once the
    /// broker has acknowledged (or refused) it. The callback runs on the producer's executor,
    /// inside the producer's own work: it must be quick and must not wait. When `send_with`
    /// returns an error, or is dropped before it returns, the callback is not called.
    pub async fn send_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        on_delivery: impl FnOnce(Result<RecordMetadata, ClientError>) + 'static,
    ) -> Result<(), ClientError> {
        self.accept(topic, key, value, Incoming::Callback(Box::new(on_delivery)))
            .await
    }

    /// Adds a message to its partition's open batch; `waiter` learns its outcome.
    async fn accept(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        incoming: Incoming,
    ) -> Result<(), ClientError> {
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
        let (slot, new_batch, ready) = {
            let mut queues = inner.queues.borrow_mut();
            let (slot, queue) = queues.get_or_insert(topic, partition);
            let overflows = queue.open.as_ref().is_some_and(|b| {
                !b.builder.is_empty()
                    && b.builder.estimated_bytes() + size > inner.config.batch_bytes
            });
            if overflows {
                let full = queue.open.take().expect("checked");
                queue.full.push_back(full);
            }
            let new_batch = queue.open.is_none();
            // Sized like the partition's last batch (a quarter more), so that it is rarely
            // copied as it grows.
            let (bytes_hint, messages_hint) = match queue.last_batch {
                Some((bytes, messages)) => (bytes + bytes / 4, messages + messages / 4),
                None => (size * 4, 4),
            };
            let batch = queue.open.get_or_insert_with(|| Batch {
                builder: BatchBuilder::with_capacity(
                    inner.config.codec,
                    inner.config.batch_bytes.min(bytes_hint) + BATCH_HEADER_BYTES,
                )
                .with_growth_limit(
                    inner.config.batch_bytes + BATCH_HEADER_BYTES + BATCH_SLACK_BYTES,
                ),
                waiters: Vec::with_capacity(messages_hint),
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
            batch.waiters.push(match incoming {
                Incoming::Channel(sender) => Waiter::Channel(sender),
                Incoming::Callback(callback) => Waiter::Callback(Callback(Some(callback))),
            });
            batch.reserved_bytes += reserved;
            let opened_at = batch.opened_at;
            if batch.builder.estimated_bytes() >= inner.config.batch_bytes {
                let full = queue.open.take().expect("just pushed");
                queue.full.push_back(full);
            }
            let new_batch = new_batch.then_some(opened_at);
            (slot, new_batch, !queue.full.is_empty())
        };
        inner.unanswered.set(inner.unanswered.get() + 1);
        // After the table is released: sending may answer messages, which calls back.
        if let Some(opened_at) = new_batch {
            self.linger(opened_at + inner.config.linger, slot.clone());
        }
        if ready {
            self.pump(&slot);
        }
        Ok(())
    }

    /// Sends the partition's batch at `at` once its linger has run out. One task per
    /// producer sleeps until the earliest such time; it ends when none is left.
    fn linger(&self, at: Instant, slot: Slot) {
        self.inner.lingering.borrow_mut().push_back((at, slot));
        if self.inner.linger_running.replace(true) {
            return;
        }
        let producer = self.clone();
        glommio::spawn_local(async move {
            loop {
                let next = producer.inner.lingering.borrow().front().map(|(at, _)| *at);
                match next {
                    None => break,
                    Some(at) if at > Instant::now() => {
                        glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                    }
                    Some(_) => {
                        let lingered = producer.inner.lingering.borrow_mut().pop_front();
                        if let Some((_, slot)) = lingered {
                            producer.pump(&slot);
                        }
                    }
                }
            }
            producer.inner.linger_running.set(false);
        })
        .detach();
    }

    /// Sends the partition's batches that are ready to leave, as far as its window allows.
    /// Called when a batch fills, when a linger runs out, when a batch is settled, on flush.
    ///
    /// Sending a batch can answer it on the spot (it expired, or its leader is known to be
    /// missing), and answering a batch pumps its partition again. Pumped from inside a
    /// pump, the partition only joins `to_pump`, and the outermost pump drains it: the
    /// chain runs as a loop, not as recursion. (glommio's `spawn_local` polls the new task
    /// right away, inside its caller, so a task does not break the chain: tens of
    /// thousands of queued batches expiring together once overflowed the stack.)
    fn pump(&self, slot: &Slot) {
        self.inner.to_pump.borrow_mut().push_back(slot.clone());
        if self.inner.pumping.replace(true) {
            return;
        }
        // Cleared however the loop ends: a delivery callback that panics must not leave
        // every later pump only queueing.
        struct Pumping<'a>(&'a Cell<bool>);
        impl Drop for Pumping<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _pumping = Pumping(&self.inner.pumping);
        loop {
            let next = self.inner.to_pump.borrow_mut().pop_front();
            let Some(slot) = next else { break };
            self.pump_partition(&slot);
        }
    }

    /// `pump`'s work for one partition.
    fn pump_partition(&self, slot: &Slot) {
        let inner = &self.inner;
        loop {
            let batch = {
                let mut queues = inner.queues.borrow_mut();
                let Some(queue) = queues.get_mut(slot) else {
                    return;
                };
                assert!(
                    queue.in_flight <= inner.window,
                    "{} in flight",
                    queue.in_flight
                );
                if queue.stamping || queue.in_flight >= inner.window {
                    return;
                }
                let Some(batch) = queue.next_ready(inner.config.linger) else {
                    return;
                };
                queue.in_flight += 1;
                queue.last_batch = Some((batch.builder.estimated_bytes(), batch.waiters.len()));
                batch
            };
            // Keyless messages move on to the next partition once a batch leaves.
            if let Some(sticky) = inner.sticky.borrow_mut().get_mut(&*slot.0) {
                if *sticky == slot.1 {
                    *sticky = sticky.wrapping_add(1);
                }
            }
            let identity = *inner.identity.borrow();
            // A batch past its delivery timeout fails in `launch` without a try, so it
            // needs no identity (and does not wait for one from a broker that is gone).
            let deadline = self.delivery_deadline(batch.opened_at);
            if !inner.config.idempotent || identity.is_some() || Instant::now() >= deadline {
                self.launch(slot, batch, Ok(identity));
                continue;
            }
            // The producer id is not known yet: this batch waits for it, and the partition's
            // later batches wait behind this one.
            if let Some(queue) = inner.queues.borrow_mut().get_mut(slot) {
                queue.stamping = true;
            }
            let producer = self.clone();
            let slot = slot.clone();
            glommio::spawn_local(async move {
                let identity = producer.identity(deadline).await.map(Some);
                producer.launch(&slot, batch, identity);
                if let Some(queue) = producer.inner.queues.borrow_mut().get_mut(&slot) {
                    queue.stamping = false;
                }
                producer.pump(&slot);
            })
            .detach();
            return;
        }
    }

    /// Sends a batch that left its queue: stamps the producer id and the partition's next
    /// sequence (`identity`, when idempotent), gives it its index in send order, and hands
    /// it to the outbox. Called in send order, one batch at a time per partition.
    fn launch(&self, slot: &Slot, batch: Batch, identity: Result<Option<(i64, i16)>, ClientError>) {
        let Batch {
            builder,
            waiters,
            reserved_bytes,
            opened_at,
        } = batch;
        let deadline = self.delivery_deadline(opened_at);
        let expired = Instant::now() >= deadline;
        let sequenced = !expired && matches!(identity, Ok(Some(_)));
        // A batch that waited past its delivery timeout (its partition's earlier batches
        // took that long) is answered without a try, and takes no sequence.
        let identity = if expired {
            Err(ClientError::Timeout(format!(
                "not sent within the delivery timeout of {:?}",
                self.inner.config.delivery_timeout
            )))
        } else {
            identity
        };
        let finished = identity.and_then(|identity| {
            let builder = match identity {
                Some(identity) => self.stamp(slot, builder, identity),
                None => builder,
            };
            builder
                .finish()
                .map_err(|error| ClientError::InvalidInput(error.to_string()))
        });
        let index = {
            let mut queues = self.inner.queues.borrow_mut();
            let queue = queues.get_mut(slot).expect("a batch leaving has its queue");
            queue.next_index += 1;
            queue.next_index - 1
        };
        let mut batch = InFlight {
            slot: slot.clone(),
            index,
            bytes: Bytes::new(),
            waiters,
            reserved_bytes,
            attempt: 0,
            deadline,
            sequenced,
        };
        match finished {
            Ok(bytes) => {
                // A batch sized for more than came (`last_batch`) keeps its length, not its
                // capacity, while in flight: `buffer_bytes` counts only messages.
                batch.bytes = if bytes.capacity() > 2 * bytes.len() + BATCH_SLACK_BYTES {
                    Bytes::copy_from_slice(&bytes)
                } else {
                    bytes.freeze()
                };
                self.dispatch(batch);
            }
            // Answered now: the partition's next batch, which this releases, leaves from the
            // outermost `pump` (see there), not from inside this call.
            Err(error) => self.finish(batch, Err(error)),
        }
    }

    /// When the delivery timeout of a batch opened at `opened_at` runs out.
    fn delivery_deadline(&self, opened_at: Instant) -> Instant {
        self.inner.config.deadline_from(opened_at)
    }

    /// Gives a batch its producer id, epoch and the partition's next sequence.
    fn stamp(&self, slot: &Slot, builder: BatchBuilder, identity: (i64, i16)) -> BatchBuilder {
        let (producer_id, epoch) = identity;
        let mut queues = self.inner.queues.borrow_mut();
        let queue = queues.get_mut(slot).expect("a batch leaving has its queue");
        if queue.sequence_of != Some(producer_id) {
            queue.sequence_of = Some(producer_id);
            queue.next_sequence = 0;
        }
        let base_sequence = queue.next_sequence;
        let count = i64::from(builder.record_count());
        queue.next_sequence =
            ((i64::from(base_sequence) + count) % (i64::from(i32::MAX) + 1)) as i32;
        builder.with_producer(producer_id, epoch, base_sequence)
    }

    /// Hands a batch to the outbox for its partition's leader. When the leader is not known
    /// yet, or earlier batches of the partition are still waiting for theirs, the batch
    /// joins the partition's `unrouted` queue, and one task per partition looks up the
    /// leader for each in turn. (One task, not one per batch: a task spawned later could
    /// find the leader cached, and glommio runs a new task right away, so it would send
    /// its batch ahead of an earlier one still waiting.)
    fn dispatch(&self, batch: InFlight) {
        let slot = batch.slot.clone();
        let cached = {
            let mut queues = self.inner.queues.borrow_mut();
            let queue = queues
                .get_mut(&slot)
                .expect("a batch leaving has its queue");
            let cached = if queue.routing {
                None
            } else {
                self.inner.cluster.cached_leader(&slot.0, slot.1)
            };
            match cached {
                Some(leader) => Some((leader, batch)),
                None => {
                    queue.unrouted.push_back(batch);
                    if queue.routing {
                        return;
                    }
                    queue.routing = true;
                    None
                }
            }
        };
        if let Some(((address, epoch), batch)) = cached {
            self.enqueue(address, epoch, batch);
            return;
        }
        let producer = self.clone();
        glommio::spawn_local(async move {
            loop {
                let next = producer
                    .inner
                    .queues
                    .borrow_mut()
                    .get_mut(&slot)
                    .and_then(|queue| {
                        let next = queue.unrouted.pop_front();
                        queue.routing = next.is_some();
                        next
                    });
                let Some(batch) = next else { break };
                // Lookups of a partition go one after another, and one against brokers that
                // are gone takes seconds: a batch whose turn comes past its delivery
                // timeout is answered without one.
                if Instant::now() >= batch.deadline {
                    let timeout = producer.inner.config.delivery_timeout;
                    producer.finish(
                        batch,
                        Err(ClientError::Timeout(format!(
                            "no leader found within the delivery timeout of {timeout:?}"
                        ))),
                    );
                    continue;
                }
                producer.route(batch).await;
            }
        })
        .detach();
    }

    /// Looks up the batch's leader and hands it to the outbox, or settles it with the error.
    async fn route(&self, batch: InFlight) {
        let (topic, partition) = (&*batch.slot.0, batch.slot.1);
        match self.inner.cluster.leader_for(topic, partition).await {
            Ok((address, epoch)) => self.enqueue(address, epoch, batch),
            Err(error) => self.settle(batch, Err(error)),
        }
    }

    fn enqueue(&self, address: SocketAddr, epoch: u32, batch: InFlight) {
        let topic = batch.slot.0.clone();
        let partition = batch.slot.1;
        let bytes = batch.bytes.clone();
        let ticket = Sent {
            producer: self.clone(),
            batch,
        };
        self.inner
            .outbox
            .enqueue(address, epoch, &topic, partition, bytes, ticket);
    }

    /// A try of a batch is over: answers it, or sends it again (retriable errors, with
    /// backoff; a batch the broker refused as out of sequence while earlier ones are still
    /// unanswered overtook them, and goes again once they have all settled). Called from a
    /// task: the request's, the batch's retry, or its partition's routing task; the last
    /// may run inside `pump` (glommio polls a new task right away), which `pump` allows for.
    fn settle(&self, mut batch: InFlight, outcome: Result<u64, ClientError>) {
        let config = &self.inner.config;
        let error = match outcome {
            Ok(_) => return self.finish(batch, outcome),
            Err(error) => error,
        };
        if batch.attempt >= config.retries {
            return self.finish(batch, Err(error));
        }
        let left = batch.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let timeout = config.delivery_timeout;
            return self.finish(
                batch,
                Err(ClientError::Timeout(format!(
                    "not acknowledged within the delivery timeout of {timeout:?} (last try: {error})"
                ))),
            );
        }
        let overtook = matches!(
            error,
            ClientError::Broker {
                code: ErrorCode::OutOfOrderSequence,
                ..
            }
        ) && self.earlier_unsettled(&batch.slot, batch.index);
        if !overtook && !error.is_retriable() {
            return self.finish(batch, Err(error));
        }
        batch.attempt += 1;
        let producer = self.clone();
        glommio::spawn_local(async move {
            if overtook {
                while producer.earlier_unsettled(&batch.slot, batch.index) {
                    glommio::timer::sleep(Duration::from_millis(PRODUCER_PREDECESSOR_POLL_MS))
                        .await;
                }
            } else {
                // The try after the backoff still comes before the delivery timeout runs out.
                let backoff = producer.inner.config.backoff(batch.attempt).min(left);
                glommio::timer::sleep(backoff).await;
                let _ = producer.inner.cluster.refresh_metadata().await;
            }
            producer.route(batch).await;
        })
        .detach();
    }

    /// Answers a batch's messages for good, and lets the partition's next batch leave.
    fn finish(&self, batch: InFlight, outcome: Result<u64, ClientError>) {
        let inner = &self.inner;
        if outcome.is_err() && inner.config.idempotent && batch.sequenced {
            // The batch may or may not be in the log: its sequence cannot be reused, and
            // the next one must not depend on it. Start afresh under a new id. (A batch
            // that expired before it left took no sequence, and leaves no gap.)
            inner.identity.borrow_mut().take();
        }
        let waiting = {
            let mut queues = inner.queues.borrow_mut();
            let queue = queues
                .get_mut(&batch.slot)
                .expect("a batch in flight keeps its queue");
            assert!(queue.in_flight > 0, "batch {} settled twice", batch.index);
            queue.settle(batch.index);
            queue.in_flight -= 1;
            queue.has_waiting()
        };
        let answered = batch.waiters.len();
        for (position, waiter) in batch.waiters.into_iter().enumerate() {
            let result = outcome.clone().map(|base| RecordMetadata {
                partition: batch.slot.1,
                offset: base + position as u64,
            });
            waiter.answer(result);
        }
        inner.buffer.signal(batch.reserved_bytes);
        inner.unanswered.set(inner.unanswered.get() - answered);
        if waiting {
            self.pump(&batch.slot);
        }
    }

    /// Whether a batch sent before `index` on this partition is still unanswered.
    fn earlier_unsettled(&self, slot: &Slot, index: u64) -> bool {
        self.inner
            .queues
            .borrow_mut()
            .get_mut(slot)
            .is_some_and(|queue| queue.settled_below < index)
    }

    /// The idempotent producer id and epoch, asked of the broker once.
    async fn identity(&self, deadline: Instant) -> Result<(i64, i16), ClientError> {
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
        let timed_out = |last: Option<&ClientError>| {
            let timeout = config.delivery_timeout;
            ClientError::Timeout(match last {
                Some(error) => format!(
                    "no producer id within the delivery timeout of {timeout:?} (last try: {error})"
                ),
                None => format!("no producer id within the delivery timeout of {timeout:?}"),
            })
        };
        // The batch waiting for it is past its delivery timeout (another batch's request,
        // ahead of it at the gate, took that long): no request of its own.
        if Instant::now() >= deadline {
            return Err(timed_out(None));
        }
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
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(timed_out(Some(&error)));
                    }
                    attempt += 1;
                    glommio::timer::sleep(config.backoff(attempt).min(left)).await;
                }
                other => break other?,
            }
        };
        *self.inner.identity.borrow_mut() = Some(identity);
        Ok(identity)
    }

    /// Sends every open batch now and waits until every message sent so far is answered.
    pub async fn flush(&self) {
        let slots: Vec<Slot> = {
            let mut queues = self.inner.queues.borrow_mut();
            for queue in queues.values_mut() {
                queue.flush_requested = queue.open.is_some();
            }
            queues.slots()
        };
        for slot in slots {
            self.pump(&slot);
        }
        while self.inner.unanswered.get() > 0 {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_backoff_grows_with_the_attempt_up_to_its_cap() {
        let config = ProducerConfig::default();
        assert_eq!(config.backoff(1), Duration::from_millis(50));
        assert_eq!(config.backoff(10), Duration::from_millis(500));
        assert_eq!(config.backoff(20), Duration::from_secs(1));
        assert_eq!(config.backoff(21), Duration::from_secs(1));
        // Unbounded retries: the multiplication saturates instead of overflowing.
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(1));
        assert_eq!(
            config.retries,
            u32::MAX,
            "retries end with the delivery timeout"
        );
    }

    #[test]
    fn a_delivery_timeout_too_long_for_the_clock_is_a_century_not_a_panic() {
        let now = Instant::now();
        let default = ProducerConfig::default();
        assert_eq!(default.deadline_from(now), now + Duration::from_secs(120));
        let forever = ProducerConfig {
            delivery_timeout: Duration::MAX,
            ..ProducerConfig::default()
        };
        let deadline = forever.deadline_from(now);
        assert!(deadline > now + Duration::from_secs(99 * 365 * 24 * 3600));
    }
}
