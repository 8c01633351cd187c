//! The Redis Streams driver: the `redis` crate on tokio. Partition `p` of the topic is the
//! stream key `<topic>:<p>` (`redis_stream_key`); producers XADD each message to the key
//! of `partition_for(key)` and take the reply as the acknowledgement. Consumers XREAD
//! their keys from the last entry present when they report ready, blocking up to the fetch
//! wait.
//!
//! Order: concurrent requests on a multiplexed connection do not keep the order in which
//! they were issued (seen as reordering under load), and per-key order is the promise
//! every system here is checked for. So each partition (stream key) of a producer has a
//! writer task that sends its XADDs as pipelines, one in flight at a time while the next
//! accumulates (at most `PIPELINE_MESSAGES_MAX`); the partitions' writers share the
//! connection, so up to one pipeline per partition is in flight.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::Sender;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::peer::{self, AckFuture, PeerConsumer, PeerProducer};
use super::{redis_stream_key, Driver};
use crate::args::Args;
use crate::consumer::ConsumerEvent;
use crate::producer::ProducerReport;
use crate::stats::{Live, Plan};

/// The stream entry's one field, holding the loadgen value.
const FIELD: &str = "v";
/// How long a command may wait for its reply (XADD under `appendfsync always` in an
/// overloaded open loop waits long; the loadgen measures that, it must not give up).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// XADDs one pipeline carries at most (small, so that the first of a pipeline does not
/// wait long for the reply of the last).
const PIPELINE_MESSAGES_MAX: usize = 64;
/// Entries one XREAD returns at most.
const READ_COUNT_MAX: usize = 4096;
/// The ID before every entry.
const ID_ZERO: &str = "0-0";

pub struct RedisDriver;

impl Driver for RedisDriver {
    fn ensure_topic(&self, args: &Args) -> Result<u32, String> {
        // Streams are made by their first XADD; this only checks that Redis answers.
        peer::block_on(async {
            let mut connection = connect(args).await?;
            redis::cmd("PING")
                .query_async::<Value>(&mut connection)
                .await
                .map_err(|e| format!("PING to Redis at {}: {e}", args.broker))
        })??;
        Ok(args.partitions)
    }

    fn spawn_producer(
        &self,
        plan: Plan,
        producer: u32,
        live: Arc<Live>,
        reports: Sender<ProducerReport>,
    ) -> JoinHandle<()> {
        peer::spawn_producer(plan, producer, live, reports, |plan| async move {
            let connection = connect(&plan.args).await?;
            let mut queues = Vec::new();
            for key in stream_keys(&plan.args.topic, 0..plan.partitions) {
                let (queue, inbox) = unbounded_channel();
                tokio::task::spawn_local(write_pipelines(connection.clone(), key, inbox));
                queues.push(queue);
            }
            Ok(RedisProducer { queues })
        })
    }

    fn spawn_consumer(
        &self,
        plan: Plan,
        consumer: u32,
        live: Arc<Live>,
        events: Sender<ConsumerEvent>,
    ) -> JoinHandle<()> {
        peer::spawn_consumer(
            plan,
            consumer,
            live,
            events,
            |plan, partitions| async move { RedisConsumer::connect(&plan.args, partitions).await },
        )
    }
}

fn stream_keys(topic: &str, partitions: impl IntoIterator<Item = u32>) -> Vec<String> {
    partitions
        .into_iter()
        .map(|p| redis_stream_key(topic, p))
        .collect()
}

async fn connect(args: &Args) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://{}/", args.broker))
        .map_err(|e| format!("Redis address {}: {e}", args.broker))?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("connecting to Redis at {}: {e}", args.broker))
}

/// One XADD waiting for its pipeline.
struct Pending {
    value: Vec<u8>,
    acknowledged: oneshot::Sender<Result<(), String>>,
}

struct RedisProducer {
    /// Per partition, its writer's queue.
    queues: Vec<UnboundedSender<Pending>>,
}

impl PeerProducer for RedisProducer {
    async fn send(
        &mut self,
        partition: u32,
        _key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<AckFuture, String> {
        let queue = self
            .queues
            .get(partition as usize)
            .ok_or_else(|| format!("no partition {partition}"))?;
        let (acknowledged, answer) = oneshot::channel();
        let pending = Pending {
            value: value.to_vec(),
            acknowledged,
        };
        queue
            .send(pending)
            .map_err(|_| "the Redis pipeline writer stopped".to_string())?;
        Ok(Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err("the Redis pipeline writer stopped".into()))
        }))
    }
}

/// One partition's writer task: what is queued goes out as one pipeline of XADDs to `key`
/// (up to `PIPELINE_MESSAGES_MAX`), in queue order; each message is answered with its
/// pipeline.
async fn write_pipelines(
    mut connection: MultiplexedConnection,
    key: String,
    mut inbox: UnboundedReceiver<Pending>,
) {
    let mut batch = Vec::with_capacity(PIPELINE_MESSAGES_MAX);
    while inbox.recv_many(&mut batch, PIPELINE_MESSAGES_MAX).await > 0 {
        let mut pipeline = redis::pipe();
        for pending in &batch {
            pipeline
                .cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(FIELD)
                .arg(&pending.value);
        }
        let outcome = pipeline
            .query_async::<Vec<Value>>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| format!("XADD pipeline: {e}"));
        for pending in batch.drain(..) {
            let _ = pending.acknowledged.send(outcome.clone());
        }
    }
}

/// A stream entry ID, `<ms>-<seq>`, as a comparable pair.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

struct RedisConsumer {
    connection: MultiplexedConnection,
    partitions: Vec<u32>,
    keys: Vec<String>,
    /// The last ID read, per key.
    last_ids: Vec<String>,
}

impl RedisConsumer {
    async fn connect(args: &Args, partitions: Vec<u32>) -> Result<RedisConsumer, String> {
        let mut connection = connect(args).await?;
        let keys = stream_keys(&args.topic, partitions.iter().copied());
        let mut last_ids = Vec::new();
        for key in &keys {
            last_ids.push(last_id(&mut connection, key).await?);
        }
        Ok(RedisConsumer {
            connection,
            partitions,
            keys,
            last_ids,
        })
    }
}

/// The ID of the last entry of `key` (`0-0` when empty or missing).
async fn last_id(connection: &mut MultiplexedConnection, key: &str) -> Result<String, String> {
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await
        .map_err(|e| format!("XREVRANGE {key}: {e}"))?;
    Ok(reply
        .ids
        .first()
        .map_or_else(|| ID_ZERO.to_string(), |entry| entry.id.clone()))
}

impl PeerConsumer for RedisConsumer {
    async fn poll(
        &mut self,
        wait: Duration,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), String> {
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT_MAX)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.keys)
            .arg(&self.last_ids);
        let reply: Option<StreamReadReply> = command
            .query_async(&mut self.connection)
            .await
            .map_err(|e| format!("XREAD: {e}"))?;
        let Some(reply) = reply else {
            return Ok(());
        };
        for stream in reply.keys {
            let index = self
                .keys
                .iter()
                .position(|key| *key == stream.key)
                .ok_or_else(|| format!("XREAD answered for unknown key {}", stream.key))?;
            let partition = self.partitions[index];
            for entry in stream.ids {
                match entry.map.get(FIELD) {
                    Some(Value::BulkString(bytes)) => observe(partition, bytes),
                    _ => observe(partition, &[]),
                }
                self.last_ids[index] = entry.id;
            }
        }
        Ok(())
    }

    async fn behind(&mut self) -> Result<Option<String>, String> {
        for (key, read) in self.keys.iter().zip(&self.last_ids) {
            let last = last_id(&mut self.connection, key).await?;
            if parse_id(&last) > parse_id(read) {
                return Ok(Some(format!("{key}: read up to {read}, last entry {last}")));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(parse_id("1700000000000-1") > parse_id("1700000000000-0"));
        assert!(parse_id("1700000000001-0") > parse_id("1700000000000-9"));
        assert_eq!(parse_id(ID_ZERO), Some((0, 0)));
        assert_eq!(parse_id("garbage"), None);
    }
}
