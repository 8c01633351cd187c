//! Fetch sessions against a real broker: an incremental fetch answers only partitions with
//! news (whether this shard leads them or another does), a long poll on a session wakes
//! for new data, epochs are enforced, and the consumer keeps delivering every message once
//! and in order when its sessions are dropped and started again.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use shardline::client::{
    partition_for_key, Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartFrom,
};
use shardline::protocol::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, IsolationLevel, Request, Response,
};

use shardline::client::connection::Connection;

use crate::harness::{on_executor, Broker};

const PARTITIONS: u32 = 16;

/// A key that lands on `partition` of a `PARTITIONS`-partition topic.
fn key_for(partition: u32) -> Vec<u8> {
    (0..)
        .map(|n| format!("key-{n}"))
        .find(|key| partition_for_key(key.as_bytes(), PARTITIONS) == partition)
        .unwrap()
        .into_bytes()
}

async fn produce_to(producer: &Producer, partitions: &[u32]) {
    let mut deliveries = Vec::new();
    for &partition in partitions {
        let key = key_for(partition);
        let delivery = producer.send("news", Some(&key), b"value").await.unwrap();
        deliveries.push(delivery);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.wait().await.unwrap();
    }
}

fn request(session_id: u32, epoch: u32, positions: &[(u32, u64)], max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        isolation: IsolationLevel::HighWatermark,
        partitions: positions
            .iter()
            .map(|&(partition, offset)| FetchPartition {
                topic: "news".into(),
                partition,
                fetch_offset: offset,
                partition_max_bytes: 1 << 20,
                leader_epoch: None,
            })
            .collect(),
        session_id,
        session_epoch: epoch,
        forgotten: Vec::new(),
    })
}

/// Sends a fetch and returns the answer with, per answered partition, its batch bytes.
async fn fetch(connection: &Connection, request: &Request) -> (FetchResponse, Vec<(u32, u32)>) {
    // Generous against a broker that would hold the fetch until its deadline.
    let decoded = connection
        .request_within(request, &[], Duration::from_secs(15))
        .await
        .unwrap();
    let Response::Fetch(response) = decoded.response else {
        panic!("a fetch answered with {:?}", decoded.response)
    };
    let answered = response
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error, ErrorCode::None, "{p:?}");
            (p.partition, p.batch_bytes)
        })
        .collect();
    (response, answered)
}

/// A shard-aware client of the broker at `address`, and the topic "news" created there.
async fn news_topic(address: &str, client_id: &str) -> Rc<Cluster> {
    let cluster = Cluster::new(address, client_id, true).unwrap();
    Admin::new(cluster.clone())
        .create_topic("news", PARTITIONS, &[])
        .await
        .unwrap();
    cluster
}

#[test]
fn an_incremental_fetch_answers_only_partitions_with_news() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = news_topic(&address, "test-sessions").await;
        let producer = Producer::new(cluster.clone(), ProducerConfig::default());
        let all: Vec<u32> = (0..PARTITIONS).collect();
        produce_to(&producer, &all).await;
        // Partition 0's shard: the partitions it leads are looked at in place, the others
        // (on the other shard) are routed there.
        let connection = cluster.connection_for("news", 0).await.unwrap();

        // A full fetch that opens a session answers every partition.
        let at_start: Vec<(u32, u64)> = all.iter().map(|&p| (p, 0)).collect();
        let (opened, answered) = fetch(&connection, &request(0, 0, &at_start, 0)).await;
        let id = opened.session_id;
        assert_ne!(id, 0, "the broker opened a session");
        assert_eq!(answered.len(), PARTITIONS as usize);
        assert!(answered.iter().all(|&(_, bytes)| bytes > 0), "{answered:?}");

        // Every position moved past the one message: nothing is new anywhere.
        let moved: Vec<(u32, u64)> = all.iter().map(|&p| (p, 1)).collect();
        let (quiet, answered) = fetch(&connection, &request(id, 1, &moved, 0)).await;
        assert_eq!(quiet.session_id, id);
        assert_eq!(answered, Vec::new(), "nothing changed, nothing answered");

        // New data on two partitions: the next request lists nothing, and the answer
        // names exactly those two, with their batches.
        produce_to(&producer, &[3, 12]).await;
        let (_, answered) = fetch(&connection, &request(id, 2, &[], 0)).await;
        let mut named: Vec<u32> = answered.iter().map(|&(p, _)| p).collect();
        named.sort_unstable();
        assert_eq!(named, vec![3, 12]);
        assert!(answered.iter().all(|&(_, bytes)| bytes > 0));

        // A long poll on the session wakes for new data on a partition nobody listed in
        // the request: once for one this shard leads (watched in place), once for one the
        // other shard leads (waited on there). It may wait 30 s; the answer must come well
        // before the 15 s the client allows.
        let topic = cluster.topic("news").await.unwrap();
        let shard_of = |partition: u32| topic.partitions[partition as usize].shard;
        let here = (1..PARTITIONS)
            .find(|&p| shard_of(p) == shard_of(0) && p != 3 && p != 12)
            .unwrap();
        let there = (1..PARTITIONS)
            .find(|&p| shard_of(p) != shard_of(0) && p != 3 && p != 12)
            .unwrap();
        let mut listed = vec![(3, 2), (12, 2)];
        for (epoch, partition) in [(3, here), (4, there)] {
            let poll = request(id, epoch, &listed, 30_000);
            let waiting = {
                let connection = connection.clone();
                glommio::spawn_local(async move { fetch(&connection, &poll).await })
            };
            glommio::timer::sleep(Duration::from_millis(300)).await;
            produce_to(&producer, &[partition]).await;
            let (_, answered) = waiting.await;
            let named: Vec<u32> = answered.iter().map(|&(p, _)| p).collect();
            assert_eq!(named, vec![partition], "epoch {epoch}");
            assert!(answered[0].1 > 0);
            listed = vec![(partition, 2)];
        }

        // The same epoch again is refused and closes the session; after that it is gone.
        let (replayed, answered) = fetch(&connection, &request(id, 4, &[], 0)).await;
        assert_eq!(replayed.error, ErrorCode::InvalidFetchSessionEpoch);
        assert!(answered.is_empty());
        let (gone, _) = fetch(&connection, &request(id, 5, &[], 0)).await;
        assert_eq!(gone.error, ErrorCode::FetchSessionNotFound);
    });
}

/// Everything produced, consumed by a consumer whose fetch-ahead is abandoned again and
/// again (every seek drops the round in flight and its session), arrives once and in order.
#[test]
fn a_consumer_whose_sessions_are_abandoned_still_reads_everything_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = news_topic(&address, "test-session-consumer").await;
        let producer = Rc::new(Producer::new(cluster.clone(), ProducerConfig::default()));
        let rounds = 20u32;
        let mut consumer = Consumer::new(
            cluster.clone(),
            ConsumerConfig {
                max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign("news", None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for round in 0..rounds {
            let partitions: Vec<u32> = (0..PARTITIONS).filter(|p| (p + round) % 3 != 0).collect();
            produce_to(&producer, &partitions).await;
            for _ in 0..3 {
                let fetched = consumer.poll().await.unwrap();
                fetched
                    .for_each(|_, partition, record| {
                        seen.entry(partition).or_default().push(record.offset);
                    })
                    .unwrap();
            }
            if round % 4 == 1 {
                // Seeking a partition to where it is drops the fetch in flight: its
                // session is in doubt and starts over.
                let position = consumer.position("news", 5).unwrap();
                consumer
                    .seek("news", 5, StartFrom::Offset(position))
                    .await
                    .unwrap();
            }
        }
        // Drain what is left.
        let expected: u64 = (0..rounds)
            .map(|round| (0..PARTITIONS).filter(|p| (p + round) % 3 != 0).count() as u64)
            .sum();
        for _ in 0..50 {
            let total: usize = seen.values().map(Vec::len).sum();
            if total as u64 >= expected {
                break;
            }
            let fetched = consumer.poll().await.unwrap();
            fetched
                .for_each(|_, partition, record| {
                    seen.entry(partition).or_default().push(record.offset);
                })
                .unwrap();
        }
        for partition in 0..PARTITIONS {
            let produced = (0..rounds)
                .filter(|round| (partition + round) % 3 != 0)
                .count() as u64;
            let offsets = seen.remove(&partition).unwrap_or_default();
            let wanted: Vec<u64> = (0..produced).collect();
            assert_eq!(
                offsets, wanted,
                "partition {partition}: each offset once, in order"
            );
        }
    });
}
