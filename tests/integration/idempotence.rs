//! Idempotent producers: a retried batch is stored once, out-of-order and fenced batches
//! are refused, and the broker still recognises a retry after `kill -9` and a restart.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardline::client::{
    Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom,
};
use shardline::protocol::{
    Acks, ErrorCode, InitProducerIdRequest, ListOffsetsPartition, ListOffsetsRequest, OffsetSpec,
    ProducePartition, ProduceRequest, Request, Response,
};
use shardline::record::{BatchBuilder, Codec};

use crate::harness::{on_executor, profile_file, Broker};

/// Messages the retrying producer sends.
const RETRIED_MESSAGES: usize = 300;

/// Every value of a topic, read from the start until `expected` arrived (or 60 s).
fn consume_values(broker: &str, topic: &str, expected: usize) -> Vec<(u32, u64, String)> {
    let (broker, topic) = (broker.to_string(), topic.to_string());
    on_executor(move || async move {
        let cluster = Cluster::new(&broker, "idempotence-consumer", true).unwrap();
        let mut consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign(&topic, None, StartFrom::Earliest)
            .await
            .unwrap();
        let mut values = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Read past `expected` for a moment too: duplicates would come after it.
        let mut quiet_polls = 0;
        while Instant::now() < deadline && (values.len() < expected || quiet_polls < 5) {
            let fetched = consumer.poll().await.unwrap();
            let before = values.len();
            fetched
                .for_each(|_, partition, record| {
                    let value = String::from_utf8(record.value.to_vec()).unwrap();
                    values.push((partition, record.offset, value));
                })
                .unwrap();
            quiet_polls = if values.len() == before {
                quiet_polls + 1
            } else {
                0
            };
        }
        values
    })
}

/// The broker answers slower than the producer's request timeout (its flush interval is
/// longer), so every batch times out on the broker and is sent again, up to three times.
/// Each message is still stored exactly once, in order.
#[test]
fn produces_retried_after_their_request_timed_out_are_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = profile_file(
        dir.path(),
        "slow-flush",
        "[storage]\nflush = { mode = \"interval\", interval_us = 2500000 }\n",
    );
    let mut broker = Broker::start(
        &dir.path().join("data"),
        &["--profile", profile.to_str().unwrap()],
    );
    let address = broker.broker_arg();
    let sent = {
        let address = address.clone();
        on_executor(move || async move {
            let cluster = Cluster::new(&address, "idempotence-test", true).unwrap();
            Admin::new(cluster.clone())
                .create_topic("retried", 2, &[])
                .await
                .unwrap();
            let producer = Producer::new(
                cluster,
                ProducerConfig {
                    acks: Acks::All,
                    request_timeout: Duration::from_millis(1000),
                    retry_backoff: Duration::from_millis(20),
                    ..ProducerConfig::default()
                },
            );
            let mut deliveries = Vec::new();
            for sequence in 0..RETRIED_MESSAGES {
                let key = format!("key-{}", sequence % 7);
                let value = format!("message-{sequence}");
                deliveries.push(
                    producer
                        .send("retried", Some(key.as_bytes()), value.as_bytes())
                        .await
                        .unwrap(),
                );
                if sequence % 100 == 99 {
                    // Batches leave at different moments, so some retries overlap others.
                    glommio::timer::sleep(Duration::from_millis(700)).await;
                }
            }
            producer.flush().await;
            for delivery in deliveries {
                delivery.wait().await.expect("every message acknowledged");
            }
            RETRIED_MESSAGES
        })
    };
    let log = broker.log();
    assert!(
        log.contains("was not acknowledged within"),
        "the broker timed produces out, so the producer retried:\n{log}"
    );
    let values = consume_values(&address, "retried", sent);
    let mut seen = BTreeMap::new();
    for (partition, offset, value) in &values {
        if let Some(first) = seen.insert(value.clone(), (*partition, *offset)) {
            panic!("{value} stored twice: at {first:?} and at ({partition}, {offset})");
        }
    }
    assert_eq!(values.len(), sent, "every message once");
    // Per partition, offsets are dense and messages keep their send order.
    let mut per_partition: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    for (partition, offset, value) in values {
        let sequence: usize = value["message-".len()..].parse().unwrap();
        per_partition
            .entry(partition)
            .or_default()
            .push((offset, sequence));
    }
    for (partition, entries) in per_partition {
        for (index, (offset, _)) in entries.iter().enumerate() {
            assert_eq!(*offset, index as u64, "partition {partition} is dense");
        }
        assert!(
            entries.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {partition} keeps send order"
        );
    }
    assert!(broker.stop());
}

/// A batch of `count` records stamped with producer fields.
pub(super) fn idempotent_batch(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    count: usize,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Codec::None).with_producer(producer_id, epoch, sequence);
    for index in 0..count {
        let value = format!("p{producer_id}-e{epoch}-s{}", sequence as usize + index);
        builder.push(1, None, value.as_bytes(), &[]).unwrap();
    }
    builder.finish().unwrap().to_vec()
}

/// Sends one batch to partition 0 of `topic`; returns the error code and base offset.
pub(super) async fn produce_raw(
    cluster: &Rc<Cluster>,
    topic: &str,
    batch: &[u8],
) -> (ErrorCode, u64) {
    let request = Request::Produce(ProduceRequest {
        acks: Acks::All.as_i8(),
        timeout_ms: 10_000,
        partitions: vec![ProducePartition {
            topic: topic.to_string(),
            partition: 0,
            batch_bytes: batch.len() as u32,
            leader_epoch: None,
        }],
    });
    let connection = cluster.connection_for(topic, 0).await.unwrap();
    match connection
        .request(&request, &[batch])
        .await
        .unwrap()
        .response
    {
        Response::Produce(response) => {
            let entry = &response.partitions[0];
            (entry.error, entry.base_offset)
        }
        other => panic!("produce answered with {other:?}"),
    }
}

pub(super) async fn log_end(cluster: &Rc<Cluster>, topic: &str) -> u64 {
    let request = Request::ListOffsets(ListOffsetsRequest {
        partitions: vec![ListOffsetsPartition {
            topic: topic.to_string(),
            partition: 0,
            spec: OffsetSpec::Latest,
        }],
    });
    let connection = cluster.connection_for(topic, 0).await.unwrap();
    match connection.request(&request, &[]).await.unwrap().response {
        Response::ListOffsets(response) => response.partitions[0].offset,
        other => panic!("list offsets answered with {other:?}"),
    }
}

/// What the broker answers to each step, run on a fresh client.
fn against(broker: &Broker, steps: Vec<(&'static str, Vec<u8>)>) -> Vec<(ErrorCode, u64)> {
    let address = broker.broker_arg();
    on_executor(move || async move {
        let cluster = Cluster::new(&address, "idempotence-raw", true).unwrap();
        let mut answers = Vec::new();
        for (_, batch) in &steps {
            answers.push(produce_raw(&cluster, "idem", batch).await);
        }
        answers.push((ErrorCode::None, log_end(&cluster, "idem").await));
        answers
    })
}

#[test]
fn retries_are_recognised_gaps_and_stale_epochs_refused_and_state_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let producer_id = on_executor(move || async move {
        let cluster = Cluster::new(&address, "idempotence-raw", true).unwrap();
        Admin::new(cluster.clone())
            .create_topic("idem", 1, &[])
            .await
            .unwrap();
        let connection = cluster.any_connection().await.unwrap();
        let request = Request::InitProducerId(InitProducerIdRequest {
            client_id: "test".into(),
        });
        match connection.request(&request, &[]).await.unwrap().response {
            Response::InitProducerId(answer) => {
                assert_eq!(answer.error, ErrorCode::None, "{answer:?}");
                assert_eq!(answer.producer_epoch, 0);
                answer.producer_id
            }
            other => panic!("init producer id answered with {other:?}"),
        }
    });
    let first = idempotent_batch(producer_id, 0, 0, 3);
    let answers = against(
        &broker,
        vec![
            ("first", first.clone()),
            ("its retry", first.clone()),
            ("a gap", idempotent_batch(producer_id, 0, 10, 2)),
            ("next", idempotent_batch(producer_id, 0, 3, 2)),
            ("new epoch", idempotent_batch(producer_id, 1, 0, 1)),
            ("stale epoch", idempotent_batch(producer_id, 0, 5, 1)),
        ],
    );
    assert_eq!(
        answers,
        vec![
            (ErrorCode::None, 0),
            (ErrorCode::None, 0),
            (ErrorCode::OutOfOrderSequence, 0),
            (ErrorCode::None, 3),
            (ErrorCode::None, 5),
            (ErrorCode::ProducerFenced, 0),
            (ErrorCode::None, 6),
        ],
        "first, retry, gap, next, new epoch, stale epoch, log end"
    );

    // kill -9: no snapshot was written; the state comes back from the log's batch headers.
    broker.kill();
    broker.restart();
    let answers = against(
        &broker,
        vec![
            (
                "retry of the last batch",
                idempotent_batch(producer_id, 1, 0, 1),
            ),
            (
                "a gap in the new epoch",
                idempotent_batch(producer_id, 1, 5, 1),
            ),
            ("stale epoch", idempotent_batch(producer_id, 0, 5, 1)),
        ],
    );
    assert_eq!(
        answers,
        vec![
            (ErrorCode::None, 5),
            (ErrorCode::OutOfOrderSequence, 0),
            (ErrorCode::ProducerFenced, 0),
            (ErrorCode::None, 6),
        ],
        "after kill -9: the last batch is recognised, its sequence and epoch remembered"
    );

    // A graceful stop writes a snapshot; the restart rebuilds from it.
    assert!(broker.stop());
    assert!(dir
        .path()
        .join("topics")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|topic| topic.path().join("0/producers.snapshot").exists()));
    broker.restart();
    let answers = against(
        &broker,
        vec![
            ("retry again", idempotent_batch(producer_id, 1, 0, 1)),
            ("next", idempotent_batch(producer_id, 1, 1, 1)),
        ],
    );
    assert_eq!(
        answers,
        vec![
            (ErrorCode::None, 5),
            (ErrorCode::None, 6),
            (ErrorCode::None, 7)
        ]
    );
    assert!(broker.stop());
}
