//! The producer: batches messages per partition (by size and linger time), sends each
//! partition's batches one at a time and in order (so per-key order holds even across
//! retries), retries retriable errors with backoff, and reports every message's outcome.
//!
//! Memory is bounded: `buffer_bytes` covers every message accepted and not yet
//! acknowledged; `send` waits while the buffer is full.
//!
//! Delivery is at least once: a batch whose response was lost (a broken connection) is sent
//! again and may then be stored twice. (Producer ids and sequences for exactly-once are
//! reserved in the batch header, not yet used.)

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use glommio::sync::Semaphore;

use super::cluster::Cluster;
use super::error::ClientError;
use super::partitioner::partition_for_key;
use crate::constants::BATCH_HEADER_BYTES;
use crate::protocol::{Acks, ErrorCode, ProducePartition, ProduceRequest, Request, Response};
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

/// One partition's queue. Batches leave one at a time, in order (so per-key order holds
/// across retries); the single sender takes full batches first, and the open batch once its
/// linger has run out. A batch is never closed just to wait behind another: while one is
/// in flight, the open batch keeps growing.
#[derive(Default)]
struct PartitionQueue {
    open: Option<Batch>,
    full: VecDeque<Batch>,
    sending: bool,
    /// Send the open batch at once, linger or not (flush).
    flush_requested: bool,
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
        Producer {
            inner: Rc::new(Inner {
                cluster,
                config,
                queues: RefCell::new(Queues::default()),
                sticky: RefCell::new(HashMap::new()),
                buffer,
                unanswered: Cell::new(0),
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
    fn next_ready(&self, slot: &(String, u32)) -> Option<Batch> {
        let mut queues = self.inner.queues.borrow_mut();
        let queue = queues.get_mut(&slot.0, slot.1)?;
        if let Some(full) = queue.full.pop_front() {
            return Some(full);
        }
        let lingered = queue.open.as_ref().is_some_and(|b| {
            queue.flush_requested || b.opened_at.elapsed() >= self.inner.config.linger
        });
        if lingered {
            queue.flush_requested = false;
            return queue.open.take();
        }
        queue.sending = false;
        None
    }

    async fn run_sender(&self, slot: (String, u32)) {
        while let Some(batch) = self.next_ready(&slot) {
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
            let outcome = match builder.finish() {
                Ok(bytes) => self.send_batch(&slot.0, slot.1, &bytes).await,
                Err(error) => Err(ClientError::InvalidInput(error.to_string())),
            };
            let answered = waiters.len();
            for (index, waiter) in waiters.into_iter().enumerate() {
                let result = outcome.clone().map(|base| RecordMetadata {
                    partition: slot.1,
                    offset: base + index as u64,
                });
                let _ = waiter.send(result);
            }
            self.inner.buffer.signal(reserved_bytes);
            self.inner
                .unanswered
                .set(self.inner.unanswered.get() - answered);
        }
    }

    /// Sends one batch, retrying retriable failures; returns its base offset.
    async fn send_batch(
        &self,
        topic: &str,
        partition: u32,
        bytes: &[u8],
    ) -> Result<u64, ClientError> {
        let config = &self.inner.config;
        let request = Request::Produce(ProduceRequest {
            acks: config.acks.as_i8(),
            timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
            partitions: vec![ProducePartition {
                topic: topic.to_string(),
                partition,
                batch_bytes: bytes.len() as u32,
            }],
        });
        let mut attempt = 0;
        loop {
            let result = async {
                let connection = self.inner.cluster.connection_for(topic, partition).await?;
                let response = connection.request(&request, &[bytes]).await?;
                match response.response {
                    Response::Produce(produce) => {
                        let entry = produce.partitions.into_iter().next().ok_or_else(|| {
                            ClientError::Protocol("empty produce response".into())
                        })?;
                        if entry.error == ErrorCode::None {
                            Ok(entry.base_offset)
                        } else {
                            Err(ClientError::from_code(entry.error, entry.message))
                        }
                    }
                    other => Err(ClientError::Protocol(format!(
                        "produce answered with {:?}",
                        other.api_key()
                    ))),
                }
            }
            .await;
            match result {
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
