//! The consumer: tracks a position per assigned partition, fetches from the shard that
//! owns each partition (one fetch per connection, all connections at once), fetches the
//! next round ahead while the caller processes this one, and hands out records that point
//! into the fetched buffers (no copy for uncompressed batches).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::admin::Admin;
use super::cluster::Cluster;
use super::error::ClientError;
use crate::protocol::{
    ErrorCode, FetchPartition, FetchRequest, IsolationLevel, OffsetSpec, Request, Response,
};
use crate::record::reader::records;
use crate::record::{BatchIter, RecordView};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(u64),
    /// The first batch at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// How a consumer fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch that has less than `min_bytes`.
    pub max_wait: Duration,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub partition_max_bytes: u32,
    /// Keep the next fetch in flight while the caller processes the current one.
    pub fetch_ahead: bool,
    /// Where to go when a position falls outside the log (retention deleted it).
    pub reset_to: StartFrom,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 16 * 1024 * 1024,
            partition_max_bytes: 2 * 1024 * 1024,
            fetch_ahead: true,
            reset_to: StartFrom::Earliest,
        }
    }
}

/// One partition's share of a fetch: whole batches, starting at or before `position`.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: u32,
    /// The first offset the consumer asked for (earlier records in the batches are skipped).
    pub position: u64,
    pub high_watermark: u64,
    pub batches: Bytes,
}

/// What one poll returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub partitions: Vec<FetchedPartition>,
}

impl Fetched {
    pub fn is_empty(&self) -> bool {
        self.partitions.iter().all(|p| p.batches.is_empty())
    }

    /// Calls `each` for every record at or past its partition's position, in offset order
    /// per partition. Keys and values borrow the fetched buffers.
    pub fn for_each(
        &self,
        mut each: impl FnMut(&str, u32, RecordView<'_>),
    ) -> Result<usize, ClientError> {
        let mut count = 0;
        let mut scratch = Vec::new();
        for part in &self.partitions {
            for item in BatchIter::new(&part.batches) {
                let (_, batch) =
                    item.map_err(|e| ClientError::Protocol(format!("fetched a bad batch: {e}")))?;
                let batch_records = records(batch, &mut scratch)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                for record in batch_records.iter().filter(|r| r.offset >= part.position) {
                    each(&part.topic, part.partition, record);
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

type Positions = BTreeMap<(String, u32), u64>;

/// A consumer of assigned partitions. Runs on a glommio executor.
pub struct Consumer {
    cluster: Rc<Cluster>,
    config: ConsumerConfig,
    positions: Positions,
    ahead: Option<(Positions, glommio::Task<Result<Fetched, ClientError>>)>,
    /// Counts fetch rounds, to rotate the order of partitions in requests.
    rounds: usize,
}

/// The offset after the last whole batch in `batches` (`position` when there is none).
fn next_position(batches: &Bytes, position: u64) -> u64 {
    let mut next = position;
    for (header, _) in BatchIter::new(batches).flatten() {
        next = next.max(header.next_offset());
    }
    next
}

/// One fetch per connection for every assigned partition. Each request lists its partitions
/// starting `rotation` places further along, so that when a response's byte budget leaves
/// some partitions out, it is not always the same ones.
async fn fetch_round(
    cluster: Rc<Cluster>,
    config: ConsumerConfig,
    positions: Positions,
    rotation: usize,
) -> Result<Fetched, ClientError> {
    let mut per_address: BTreeMap<std::net::SocketAddr, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, partition), &offset) in &positions {
        let (address, epoch) = cluster.leader_for(topic, *partition).await?;
        per_address
            .entry(address)
            .or_default()
            .push(FetchPartition {
                topic: topic.clone(),
                partition: *partition,
                fetch_offset: offset,
                partition_max_bytes: config.partition_max_bytes,
                leader_epoch: Some(epoch),
            });
    }
    for partitions in per_address.values_mut() {
        let len = partitions.len();
        partitions.rotate_left(rotation % len);
    }
    let requests = per_address.into_iter().map(|(address, partitions)| {
        let cluster = cluster.clone();
        let config = config.clone();
        async move {
            let connection = cluster.connection(address).await?;
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: config.min_bytes,
                max_bytes: config.max_bytes,
                isolation: IsolationLevel::HighWatermark,
                partitions,
            });
            // A broker holds a fetch at most `max_wait`; past it (and a margin) it is not
            // answering at all.
            let timeout = config.max_wait
                + std::time::Duration::from_millis(crate::constants::CLIENT_ANSWER_MARGIN_MS);
            connection.request_within(&request, &[], timeout).await
        }
    });
    let mut fetched = Fetched::default();
    for response in futures::future::join_all(requests).await {
        let response = response?;
        let shares = response.partition_batches.clone();
        let Response::Fetch(fetch) = response.response else {
            return Err(ClientError::Protocol(
                "fetch answered with another api".into(),
            ));
        };
        for (entry, batches) in fetch.partitions.into_iter().zip(shares) {
            if entry.error != ErrorCode::None {
                return Err(ClientError::from_code(
                    entry.error,
                    format!("{}/{}", entry.topic, entry.partition),
                ));
            }
            let position = positions[&(entry.topic.clone(), entry.partition)];
            fetched.partitions.push(FetchedPartition {
                topic: entry.topic,
                partition: entry.partition,
                position,
                high_watermark: entry.high_watermark,
                batches,
            });
        }
    }
    Ok(fetched)
}

impl Consumer {
    pub fn new(cluster: Rc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
            ahead: None,
            rounds: 0,
        }
    }

    async fn resolve(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<u64, ClientError> {
        let admin = Admin::new(self.cluster.clone());
        match start {
            StartFrom::Offset(offset) => Ok(offset),
            StartFrom::Earliest => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await
            }
            StartFrom::Latest => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await
            }
            StartFrom::Timestamp(ms) => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Timestamp(ms))
                    .await
            }
        }
    }

    /// Assigns partitions of a topic (all of them when `partitions` is `None`).
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: StartFrom,
    ) -> Result<(), ClientError> {
        let metadata = self.cluster.topic(topic).await?;
        let partitions =
            partitions.unwrap_or_else(|| metadata.partitions.iter().map(|p| p.partition).collect());
        for partition in partitions {
            let offset = self.resolve(topic, partition, start).await?;
            self.positions
                .insert((topic.to_string(), partition), offset);
        }
        self.ahead = None;
        Ok(())
    }

    /// Moves a partition's position (it must be assigned).
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: StartFrom,
    ) -> Result<(), ClientError> {
        let key = (topic.to_string(), partition);
        if !self.positions.contains_key(&key) {
            return Err(ClientError::InvalidInput(format!(
                "{topic}/{partition} is not assigned"
            )));
        }
        let offset = self.resolve(topic, partition, to).await?;
        self.positions.insert(key, offset);
        self.ahead = None;
        Ok(())
    }

    /// Stops consuming a partition (its position is forgotten).
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        if self
            .positions
            .remove(&(topic.to_string(), partition))
            .is_some()
        {
            self.ahead = None;
        }
    }

    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// Fetches the next records of every assigned partition (waiting up to `max_wait` when
    /// there are none) and advances the positions past them.
    pub async fn poll(&mut self) -> Result<Fetched, ClientError> {
        if self.positions.is_empty() {
            return Ok(Fetched::default());
        }
        let fetched = match self.ahead.take() {
            Some((positions, task)) if positions == self.positions => task.await,
            _ => {
                self.rounds += 1;
                fetch_round(
                    self.cluster.clone(),
                    self.config.clone(),
                    self.positions.clone(),
                    self.rounds,
                )
                .await
            }
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                message,
            }) => {
                // Some position fell outside its log: move every stale one and try again next poll.
                tracing::warn!(%message, "position out of range; resetting");
                let assigned: Vec<(String, u32)> = self.positions.keys().cloned().collect();
                let admin = Admin::new(self.cluster.clone());
                for (topic, partition) in assigned {
                    let start = admin
                        .list_offset(&topic, partition, OffsetSpec::Earliest)
                        .await?;
                    let end = admin
                        .list_offset(&topic, partition, OffsetSpec::Latest)
                        .await?;
                    let position = self.positions[&(topic.clone(), partition)];
                    if position < start || position > end {
                        let reset = self
                            .resolve(&topic, partition, self.config.reset_to)
                            .await?;
                        self.positions.insert((topic, partition), reset);
                    }
                }
                return Ok(Fetched::default());
            }
            Err(error) if error.is_retriable() => {
                // Leadership moved or a broker is away: learn where the partitions are now
                // and try again next poll.
                tracing::debug!(%error, "fetch failed; refreshing metadata");
                self.cluster.invalidate_metadata();
                glommio::timer::sleep(crate::constants::CONSUMER_RETRY_BACKOFF).await;
                return Ok(Fetched::default());
            }
            Err(error) => return Err(error),
        };
        for part in &fetched.partitions {
            let key = (part.topic.clone(), part.partition);
            let next = next_position(&part.batches, part.position);
            self.positions.insert(key, next);
        }
        if self.config.fetch_ahead {
            let positions = self.positions.clone();
            self.rounds += 1;
            let task = glommio::spawn_local(fetch_round(
                self.cluster.clone(),
                self.config.clone(),
                positions.clone(),
                self.rounds,
            ));
            self.ahead = Some((positions, task));
        }
        Ok(fetched)
    }
}
