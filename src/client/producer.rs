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
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

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

struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    reserved_bytes: u64,
}

struct Inner {
    cluster: Rc<Cluster>,
    config: ProducerConfig,
    open: RefCell<HashMap<(String, u32), OpenBatch>>,
    sticky: RefCell<HashMap<String, u32>>,
    buffer: Semaphore,
    /// One batch in flight per partition: keeps batches in order across retries.
    gates: RefCell<HashMap<(String, u32), Rc<Semaphore>>>,
    batches_in_flight: Cell<usize>,
    next_batch_id: Cell<u64>,
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
                open: RefCell::new(HashMap::new()),
                sticky: RefCell::new(HashMap::new()),
                buffer,
                gates: RefCell::new(HashMap::new()),
                batches_in_flight: Cell::new(0),
                next_batch_id: Cell::new(0),
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
        let partitions = inner.cluster.topic(topic).await?.partitions.len() as u32;
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
        let slot = (topic.to_string(), partition);
        let (previous, full, linger) = {
            let mut open = inner.open.borrow_mut();
            let would_overflow = open.get(&slot).is_some_and(|b| {
                !b.builder.is_empty()
                    && b.builder.estimated_bytes() + size > inner.config.batch_bytes
            });
            let previous = if would_overflow {
                open.remove(&slot)
            } else {
                None
            };
            let fresh = !open.contains_key(&slot);
            let batch = open.entry(slot.clone()).or_insert_with(|| {
                let id = inner.next_batch_id.get();
                inner.next_batch_id.set(id + 1);
                OpenBatch {
                    id,
                    builder: BatchBuilder::with_capacity(
                        inner.config.codec,
                        inner.config.batch_bytes.min(size * 4) + BATCH_HEADER_BYTES,
                    ),
                    waiters: Vec::new(),
                    reserved_bytes: 0,
                }
            });
            let pushed = batch.builder.push(crate::log::now_ms(), key, value, &[]);
            if let Err(error) = pushed {
                inner.buffer.signal(reserved);
                if batch.builder.is_empty() {
                    open.remove(&slot);
                }
                drop(open);
                if let Some(previous) = previous {
                    self.dispatch(slot, previous);
                }
                return Err(ClientError::InvalidInput(error.to_string()));
            }
            batch.waiters.push(waiter);
            batch.reserved_bytes += reserved;
            let linger = fresh.then_some(batch.id);
            let full = batch.builder.estimated_bytes() >= inner.config.batch_bytes;
            (previous, full.then(|| open.remove(&slot)).flatten(), linger)
        };
        // After `open` is released: glommio polls a spawned task at once, and a linger that
        // has already run out (a descheduled thread, or a zero linger) takes `open` itself.
        if let Some(id) = linger {
            self.schedule_linger(slot.clone(), id);
        }
        for batch in [previous, full].into_iter().flatten() {
            self.dispatch(slot.clone(), batch);
        }
        Ok(Delivery { receiver })
    }

    fn schedule_linger(&self, slot: (String, u32), id: u64) {
        let producer = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(producer.inner.config.linger).await;
            let batch = {
                let mut open = producer.inner.open.borrow_mut();
                match open.get(&slot) {
                    Some(batch) if batch.id == id => open.remove(&slot),
                    _ => None,
                }
            };
            if let Some(batch) = batch {
                producer.dispatch(slot, batch);
            }
        })
        .detach();
    }

    /// Sends a closed batch in the background (after the partition's previous batch).
    fn dispatch(&self, slot: (String, u32), batch: OpenBatch) {
        let inner = &self.inner;
        // Keyless messages move on to the next partition once a batch leaves.
        if let Some(sticky) = inner.sticky.borrow_mut().get_mut(&slot.0) {
            if *sticky == slot.1 {
                *sticky = sticky.wrapping_add(1);
            }
        }
        inner
            .batches_in_flight
            .set(inner.batches_in_flight.get() + 1);
        let gate = inner
            .gates
            .borrow_mut()
            .entry(slot.clone())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone();
        let producer = self.clone();
        glommio::spawn_local(async move {
            let _turn = gate.acquire_permit(1).await;
            let OpenBatch {
                builder,
                waiters,
                reserved_bytes,
                ..
            } = batch;
            let outcome = match builder.finish() {
                Ok(bytes) => producer.send_batch(&slot.0, slot.1, &bytes).await,
                Err(error) => Err(ClientError::InvalidInput(error.to_string())),
            };
            for (index, waiter) in waiters.into_iter().enumerate() {
                let result = outcome.clone().map(|base| RecordMetadata {
                    partition: slot.1,
                    offset: base + index as u64,
                });
                let _ = waiter.send(result);
            }
            producer.inner.buffer.signal(reserved_bytes);
            producer
                .inner
                .batches_in_flight
                .set(producer.inner.batches_in_flight.get() - 1);
        })
        .detach();
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
        let open: Vec<((String, u32), OpenBatch)> = self.inner.open.borrow_mut().drain().collect();
        for (slot, batch) in open {
            self.dispatch(slot, batch);
        }
        while self.inner.batches_in_flight.get() > 0 {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }
}
