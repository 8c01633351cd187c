//! The producer's delivery callbacks against a real broker: every message is answered once,
//! with the offset it was stored at and in send order per partition, or (after its retries)
//! with the error that refused it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shardline::client::{
    partition_for_key, Admin, ClientError, Cluster, Producer, ProducerConfig, RecordMetadata,
};
use shardline::protocol::{Acks, ErrorCode};

use crate::harness::{on_executor, Broker};

const PARTITIONS: u32 = 8;
const MESSAGES: usize = 3000;

type Outcomes = Rc<RefCell<Vec<(usize, Result<RecordMetadata, ClientError>)>>>;

#[test]
fn delivery_callbacks_answer_every_message_once_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let (outcomes, unknown_topic, unknown_called) = on_executor(move || async move {
        let cluster = Cluster::new(&address, "callback-test", true).unwrap();
        Admin::new(cluster.clone())
            .create_topic("callbacks", PARTITIONS, &[])
            .await
            .unwrap();
        // The default producer: batches leave when their linger runs out, never by a flush.
        let producer = Producer::new(cluster, ProducerConfig::default());
        let outcomes: Outcomes = Rc::default();
        for index in 0..MESSAGES {
            let key = format!("key-{}", index % 97);
            let answered = outcomes.clone();
            producer
                .send_with(
                    "callbacks",
                    Some(key.as_bytes()),
                    b"value",
                    move |outcome| answered.borrow_mut().push((index, outcome)),
                )
                .await
                .unwrap();
            if index % 500 == 0 {
                glommio::timer::sleep(Duration::from_millis(3)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while outcomes.borrow().len() < MESSAGES && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        // A topic that does not exist: refused at once, and the callback is never called.
        let called = Rc::new(RefCell::new(false));
        let flag = called.clone();
        let unknown = producer
            .send_with("no-such-topic", None, b"value", move |_| {
                *flag.borrow_mut() = true
            })
            .await;
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let outcomes = std::mem::take(&mut *outcomes.borrow_mut());
        let called = *called.borrow();
        (
            outcomes
                .into_iter()
                .map(|(index, outcome)| (index, outcome.map_err(|e| e.to_string())))
                .collect::<Vec<_>>(),
            unknown.map_err(|e| e.to_string()),
            called,
        )
    });
    assert_eq!(
        outcomes.len(),
        MESSAGES,
        "every message answered exactly once"
    );
    // Per partition, (send index, offset).
    let mut by_partition: BTreeMap<u32, Vec<(usize, u64)>> = BTreeMap::new();
    let mut seen = vec![false; MESSAGES];
    for (index, outcome) in &outcomes {
        assert!(!seen[*index], "message {index} answered twice");
        seen[*index] = true;
        let metadata = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("message {index}: {e}"));
        let key = format!("key-{}", index % 97);
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "message {index}"
        );
        by_partition
            .entry(metadata.partition)
            .or_default()
            .push((*index, metadata.offset));
    }
    for (partition, sent) in &mut by_partition {
        // In send order, the offsets run 0, 1, 2, ...: each message stored once, and in the
        // order it was sent (per-key order).
        sent.sort_unstable();
        let offsets: Vec<u64> = sent.iter().map(|(_, offset)| *offset).collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}: in send order, once each"
        );
    }
    assert!(
        unknown_topic
            .as_ref()
            .is_err_and(|e| e.contains("no-such-topic")),
        "{unknown_topic:?}"
    );
    assert!(!unknown_called, "a refused message's callback was called");
}

#[test]
fn a_refused_message_is_retried_then_answered_with_the_error_and_its_partition_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let outcomes = on_executor(move || async move {
        let cluster = Cluster::new(&address, "callback-refused-test", true).unwrap();
        // One broker cannot give acks=all two in-sync replicas.
        Admin::new(cluster.clone())
            .create_topic(
                "refused",
                2,
                &[("min.insync.replicas".to_string(), "2".to_string())],
            )
            .await
            .unwrap();
        // Retries, so that every refused batch goes through the retry path first; a window
        // of one batch per partition, so that a batch the retry path failed to give back
        // would hold its partition for good.
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig {
                acks: Acks::All,
                retries: 2,
                retry_backoff: Duration::from_millis(10),
                max_in_flight: 1,
                ..ProducerConfig::default()
            },
        );
        let outcomes: Outcomes = Rc::default();
        for index in 0..10usize {
            let answered = outcomes.clone();
            producer
                .send_with(
                    "refused",
                    Some(&index.to_le_bytes()),
                    b"never stored",
                    move |outcome| answered.borrow_mut().push((index, outcome)),
                )
                .await
                .unwrap();
        }
        producer.flush().await;
        let refused = std::mem::take(&mut *outcomes.borrow_mut());
        // The same partitions, once one replica is enough: the refused batches left their
        // partitions' windows, so these are sent and stored.
        Admin::new(cluster)
            .alter_configs(
                "refused",
                &[("min.insync.replicas".to_string(), "1".to_string())],
                &[],
            )
            .await
            .unwrap();
        let mut stored = Vec::new();
        for index in 0..10usize {
            let delivery = producer
                .send("refused", Some(&index.to_le_bytes()), b"stored")
                .await
                .unwrap();
            stored.push(delivery);
        }
        let stored = async {
            producer.flush().await;
            let mut offsets = Vec::new();
            for delivery in stored {
                offsets.push(delivery.wait().await.map(|m| m.offset));
            }
            Some(offsets)
        };
        let within = async {
            glommio::timer::sleep(Duration::from_secs(30)).await;
            None
        };
        let offsets = futures_lite::future::or(stored, within)
            .await
            .expect("the new messages were answered within 30 s: the windows were given back");
        let refused = refused
            .into_iter()
            .map(|(index, outcome)| (index, outcome.map(|m| m.offset)))
            .collect::<Vec<_>>();
        (refused, offsets)
    });
    let (outcomes, stored) = outcomes;
    assert!(
        stored.iter().all(Result::is_ok),
        "after the refusals the partitions took new messages: {stored:?}"
    );
    let mut answered: Vec<usize> = outcomes.iter().map(|(index, _)| *index).collect();
    answered.sort_unstable();
    assert_eq!(answered, (0..10).collect::<Vec<_>>(), "each answered once");
    for (index, outcome) in outcomes {
        match outcome {
            Err(ClientError::Broker { code, .. }) => {
                assert_eq!(code, ErrorCode::NotEnoughReplicas, "message {index}")
            }
            other => panic!("message {index} was answered with {other:?}"),
        }
    }
}

/// With the default retries, a producer rides out a refusal that lasts longer than ten
/// retries' backoff (2.75 s, the old default's whole budget): it keeps retrying until the
/// delivery timeout, so a leader election or a broker restart does not fail the batches
/// waiting for it. Here the broker refuses acks=all for 4 s (too few in-sync replicas), then
/// takes the messages.
#[test]
fn with_the_default_retries_a_producer_rides_out_a_refusal_longer_than_ten_retries() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let outcomes = on_executor(move || async move {
        let cluster = Cluster::new(&address, "ride-out-test", true).unwrap();
        let admin = Admin::new(cluster.clone());
        let min_insync =
            |replicas: &str| vec![("min.insync.replicas".to_string(), replicas.to_string())];
        admin
            .create_topic("waits", 2, &min_insync("2"))
            .await
            .unwrap();
        let producer = Producer::new(cluster, ProducerConfig::default());
        let mut deliveries = Vec::new();
        for index in 0..10usize {
            deliveries.push(
                producer
                    .send("waits", Some(&index.to_le_bytes()), b"stored late")
                    .await
                    .unwrap(),
            );
        }
        glommio::timer::sleep(Duration::from_secs(4)).await;
        admin
            .alter_configs("waits", &min_insync("1"), &[])
            .await
            .unwrap();
        let answered = async {
            let mut outcomes = Vec::new();
            for delivery in deliveries {
                outcomes.push(delivery.wait().await);
            }
            Some(outcomes)
        };
        let cap = async {
            glommio::timer::sleep(Duration::from_secs(60)).await;
            None
        };
        futures_lite::future::or(answered, cap)
            .await
            .expect("every message answered within 60 s")
    });
    for (index, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "message {index}: {outcome:?}");
    }
}

/// With its broker killed, a producer answers every message once the delivery timeout has
/// passed, however many retries are left: the batch being tried stops trying, and the
/// batches queued behind it fail without a try of their own. Before the timeout existed,
/// a producer left with retries tried each queued batch in turn (2.75 s of backoff each with
/// the defaults), and a load generator whose broker died was still draining 11 minutes later.
#[test]
fn with_its_broker_killed_a_producer_answers_every_message_after_the_delivery_timeout() {
    // 2,000 messages of 1 KiB on 4 partitions, in batches of 16 KiB.
    answered_after_broker_gone(Signal::SIGKILL, 4, 2000, 1024, 16 * 1024);
}

/// Tens of thousands of batches queued on one partition, expired together, are answered one
/// after another without the stack growing: each expired batch releases the next as it is
/// answered, and that chain once ran as recursion (glommio's `spawn_local` polls a task
/// right away), which overflowed the load generator's stack when its broker died. The
/// broker is stopped (`SIGSTOP`), so the first batch waits for its request's 5 s timeout,
/// past the 2 s delivery timeout of every batch queued behind it.
#[test]
fn a_producer_answers_tens_of_thousands_of_expired_batches_on_one_partition() {
    // Every message is a batch of its own (`batch_bytes` of 1).
    answered_after_broker_gone(Signal::SIGSTOP, 1, 30_000, 16, 1);
}

/// Stores 200 messages, sends the broker `signal` (`SIGKILL`, or `SIGSTOP` to leave requests
/// unanswered), queues `queued` messages of `value_bytes` on `partitions` partitions (one
/// batch in flight per partition, retries enough for hours, a delivery timeout of 2 s, a
/// request timeout of 5 s) and checks that each is answered exactly once, with a
/// delivery-timeout error, within a cap of 60 s.
fn answered_after_broker_gone(
    signal: Signal,
    partitions: u32,
    queued: usize,
    value_bytes: usize,
    batch_bytes: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), &[]);
    let address = broker.broker_arg();
    let pid = nix::unistd::Pid::from_raw(broker.pid().expect("the broker runs") as i32);
    let (before, after, waited) = on_executor(move || async move {
        let cluster = Cluster::new(&address, "delivery-timeout-test", true).unwrap();
        Admin::new(cluster.clone())
            .create_topic("gone", partitions, &[])
            .await
            .unwrap();
        let delivery_timeout = Duration::from_secs(2);
        let producer = Producer::new(
            cluster,
            ProducerConfig {
                // Retries enough for hours: only the delivery timeout can end the tries.
                retries: 1000,
                retry_backoff: Duration::from_millis(20),
                delivery_timeout,
                request_timeout: Duration::from_secs(5),
                batch_bytes,
                max_in_flight: 1,
                ..ProducerConfig::default()
            },
        );
        let value = vec![7u8; value_bytes];
        let mut before = Vec::new();
        for index in 0..200usize {
            before.push(
                producer
                    .send("gone", Some(&index.to_le_bytes()), &value)
                    .await
                    .unwrap(),
            );
        }
        producer.flush().await;
        let mut stored = 0;
        for delivery in before {
            stored += usize::from(delivery.wait().await.is_ok());
        }
        nix::sys::signal::kill(pid, signal).unwrap();
        let killed = Instant::now();
        let outcomes: Outcomes = Rc::default();
        for index in 0..queued {
            let answered = outcomes.clone();
            producer
                .send_with("gone", Some(&index.to_le_bytes()), &value, move |outcome| {
                    answered.borrow_mut().push((index, outcome))
                })
                .await
                .unwrap();
        }
        let cap = Duration::from_secs(60);
        while outcomes.borrow().len() < queued && killed.elapsed() < cap {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let after = std::mem::take(&mut *outcomes.borrow_mut());
        (stored, after, killed.elapsed())
    });
    broker.kill();
    assert_eq!(before, 200, "every message before the kill was stored");
    assert_eq!(
        after.len(),
        queued,
        "{} of {queued} messages answered {waited:?} after the kill",
        after.len()
    );
    let mut answered = vec![false; queued];
    for (index, outcome) in &after {
        assert!(!answered[*index], "message {index} answered twice");
        answered[*index] = true;
        match outcome {
            Err(ClientError::Timeout(message)) => {
                assert!(message.contains("delivery timeout"), "{message}")
            }
            other => panic!("message {index}: {other:?}"),
        }
    }
}
