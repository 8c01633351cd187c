//! The metrics endpoint: `GET /metrics` on `--metrics-listen`, served by the controller
//! shard's executor (no other runtime in the broker). Each scrape asks every shard for its
//! numbers over the mesh (one fan-out), encodes them (`crate::metrics`) and closes the
//! connection. Anything else gets 404 or 400; a client that does not finish its request
//! within `METRICS_REQUEST_TIMEOUT_MS` is dropped.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::context::ShardContext;
use super::partitions::PartitionKey;
use super::work::with_deadline;
use crate::constants::{
    METRICS_GROUP_LAG_TIMEOUT_MS, METRICS_REQUEST_BYTES_MAX, METRICS_REQUEST_TIMEOUT_MS,
};
use crate::metrics::histogram::{Histogram, HistogramSnapshot};
use crate::metrics::{BrokerStats, PartitionTraffic, ShardStats};
use crate::protocol::ApiKey;
use crate::shard::messages::{ShardHandler, ShardMessage};

/// How many responses waited, and how long in all.
type Delayed = (u64, Duration);

/// What a shard counts on its request path for the metrics. Owned by the shard.
#[derive(Default)]
pub struct ShardMetrics {
    request_latency: RefCell<BTreeMap<u16, (&'static str, Histogram)>>,
    traffic: RefCell<HashMap<PartitionKey, PartitionTraffic>>,
    pub connections_accepted: Cell<u64>,
    pub connections_refused: Cell<u64>,
    pub tls_handshakes_failed: Cell<u64>,
    pub authentications_failed: Cell<u64>,
    /// Responses delayed for a quota and the time they waited, by (entity, direction).
    throttled: RefCell<BTreeMap<(String, &'static str), Delayed>>,
}

impl ShardMetrics {
    /// A request of `api` (a wire api key) took `elapsed` to answer.
    pub fn request_done(&self, api: u16, elapsed: Duration) {
        let mut latency = self.request_latency.borrow_mut();
        let (_, histogram) = latency.entry(api).or_insert_with(|| {
            let name = ApiKey::from_u16(api).map_or("unknown", |key| key.name());
            (name, Histogram::latency())
        });
        histogram.record_duration(elapsed);
    }

    /// A share of a produce request: `messages` in `bytes` appended (0 when refused).
    pub fn produced(&self, key: PartitionKey, messages: u64, bytes: u64) {
        let mut traffic = self.traffic.borrow_mut();
        let entry = traffic.entry(key).or_default();
        entry.produce_requests += 1;
        entry.produce_messages += messages;
        entry.produce_bytes += bytes;
    }

    /// A client's fetch of one partition: `messages` in `bytes` returned.
    pub fn fetched(&self, key: PartitionKey, messages: u64, bytes: u64) {
        let mut traffic = self.traffic.borrow_mut();
        let entry = traffic.entry(key).or_default();
        entry.fetch_requests += 1;
        entry.fetch_messages += messages;
        entry.fetch_bytes += bytes;
    }

    /// A response of `entity` waited `delay` for its `direction` quota.
    pub fn throttled(&self, entity: &str, direction: &'static str, delay: Duration) {
        let mut throttled = self.throttled.borrow_mut();
        let entry = throttled
            .entry((entity.to_string(), direction))
            .or_insert((0, Duration::ZERO));
        entry.0 += 1;
        entry.1 += delay;
    }

    /// (entity, direction, responses delayed, seconds waited).
    pub fn throttling(&self) -> Vec<crate::metrics::Throttling> {
        self.throttled
            .borrow()
            .iter()
            .map(
                |((entity, direction), (responses, waited))| crate::metrics::Throttling {
                    entity: entity.clone(),
                    direction,
                    responses: *responses,
                    waited_seconds: waited.as_secs_f64(),
                },
            )
            .collect()
    }

    pub fn traffic(&self, key: PartitionKey) -> PartitionTraffic {
        self.traffic.borrow().get(&key).copied().unwrap_or_default()
    }

    pub fn request_latency(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        self.request_latency
            .borrow()
            .values()
            .map(|(name, histogram)| (*name, histogram.snapshot()))
            .collect()
    }
}

/// The broker-wide numbers, on the controller shard: memory, the catalogue's view of the
/// cluster, and the lag of the groups whose offsets `shards` hold.
async fn broker_stats(context: &ShardContext, shards: &[ShardStats]) -> BrokerStats {
    let catalog = context.catalog();
    let mut stats = BrokerStats {
        resident_bytes: resident_bytes().unwrap_or(0),
        io_memory_bytes: (context.io_memory_bytes * context.shard_count()) as u64,
        ..BrokerStats::default()
    };
    for topic in catalog.topics() {
        for partition in 0..topic.partitions {
            let Some(state) = topic.partition(partition) else {
                continue;
            };
            if state.in_sync.len() < state.replicas.len() {
                stats.under_replicated_partitions += 1;
            }
            let live_leader = state
                .leader
                .is_some_and(|l| catalog.broker(l).is_some_and(|b| !b.fenced));
            if !live_leader {
                stats.offline_partitions += 1;
            }
        }
    }
    let offsets: Vec<&crate::metrics::GroupOffset> =
        shards.iter().flat_map(|s| s.group_offsets.iter()).collect();
    let keys: Vec<(String, u32)> = offsets
        .iter()
        .map(|g| (g.topic.clone(), g.partition))
        .collect();
    let deadline = Instant::now() + Duration::from_millis(METRICS_GROUP_LAG_TIMEOUT_MS);
    let ends = with_deadline(
        deadline,
        super::groups::lookup_offsets(context, &keys, crate::protocol::OffsetSpec::Latest),
    )
    .await;
    if let Some(ends) = ends {
        for (group, end) in offsets.iter().zip(ends) {
            if let Some(end) = end {
                stats.group_lag.push((
                    group.group.clone(),
                    group.topic.clone(),
                    group.partition,
                    end.saturating_sub(group.committed),
                ));
            }
        }
    }
    stats
}

/// This process's resident memory, from `/proc/self/status` (`VmRSS`, in KiB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every shard's numbers, this one's included.
pub async fn gather(context: &ShardContext) -> Vec<ShardStats> {
    let others = context.mesh.others().map(|shard| (shard, ())).collect();
    let replies = context.mesh.call_each(others, ShardMessage::Stats).await;
    let mut shards: Vec<ShardStats> = replies
        .into_iter()
        .filter_map(|(_, reply)| reply.ok())
        .collect();
    shards.push(context.stats());
    shards.sort_by_key(|stats| stats.shard);
    shards
}

/// Reads the request head (up to the blank line), bounded in bytes and time.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS);
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > METRICS_REQUEST_BYTES_MAX {
            return None;
        }
        match with_deadline(deadline, stream.read(&mut chunk)).await {
            Some(Ok(count)) if count > 0 => head.extend_from_slice(&chunk[..count]),
            _ => return None,
        }
    }
    Some(head)
}

/// Answers one scrape (or refuses it) and closes the connection.
pub async fn answer(context: Rc<ShardContext>, mut stream: TcpStream) {
    let response = match read_head(&mut stream).await {
        None => response("400 Bad Request", "text/plain", "bad request\n".into()),
        Some(head) => {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let mut words = line.split(|&b| b == b' ');
            match (words.next(), words.next()) {
                (Some(b"GET"), Some(b"/metrics")) => {
                    let shards = gather(&context).await;
                    let broker = broker_stats(&context, &shards).await;
                    match crate::metrics::encode(&broker, &shards) {
                        Ok(text) => response(
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ),
                        Err(error) => response(
                            "500 Internal Server Error",
                            "text/plain",
                            format!("{error}\n"),
                        ),
                    }
                }
                (Some(_), Some(_)) => {
                    response("404 Not Found", "text/plain", "try /metrics\n".into())
                }
                _ => response("400 Bad Request", "text/plain", "bad request\n".into()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS);
    let _ = with_deadline(deadline, async {
        stream.write_all(&response).await?;
        stream.close().await
    })
    .await;
}

fn response(status: &str, content_type: &str, body: String) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}
