//! Which system the load generator drives, behind one interface, so that every system is
//! timed the same way: the same payload header (producer, sequence, intended send time),
//! the same open-loop schedule, the same HDR histograms and the same loss, duplicate and
//! order checks. A driver only creates the topic and starts producer and consumer threads
//! that hand back the common reports (`ProducerReport`, `ConsumerEvent`).
//!
//! - `shardline` (always built): the project's own client on glommio executors.
//! - `kafka`, `nats`, `redis` (cargo feature `peers`): each peer's standard Rust client
//!   (rdkafka, async-nats, redis) on tokio current-thread runtimes of their own; the
//!   schedule itself runs on a plain thread beside them (see `peer.rs`).
//!
//! The peer layout (which subject or stream key a partition is), the acks mapping and the
//! client settings stated in the report are plain functions here, so they are tested
//! without the peer clients being built.

pub mod shardline;

#[cfg(feature = "peers")]
mod kafka;
#[cfg(feature = "peers")]
mod nats;
#[cfg(feature = "peers")]
mod peer;
#[cfg(feature = "peers")]
mod redis;

use std::sync::Arc;
use std::thread::JoinHandle;

use clap::ValueEnum;
use crossbeam::channel::Sender;

use crate::args::{AcksArg, Args};
use crate::consumer::ConsumerEvent;
use crate::producer::ProducerReport;
use crate::stats::{Live, Plan};

/// Messages a Kafka producer client may queue before `send` waits (librdkafka's
/// `queue.buffering.max.messages`); an open loop past the peer's rate grows this queue,
/// and its wait is counted from the intended send time like any other.
pub const KAFKA_QUEUE_MESSAGES_MAX: u64 = 1_000_000;
/// librdkafka's `queue.buffering.max.kbytes` (1 GiB).
pub const KAFKA_QUEUE_KIB_MAX: u64 = 1024 * 1024;
/// How long a Kafka broker may hold a fetch with nothing new (as the shardline consumer's
/// default, `FETCH_WAIT_MAX_MS`).
pub const KAFKA_FETCH_WAIT_MS: u64 = 100;
const MICROS_PER_MILLI: f64 = 1_000.0;

/// The systems `--system` accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum System {
    #[default]
    Shardline,
    Kafka,
    Nats,
    Redis,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Shardline => "shardline",
            System::Kafka => "kafka",
            System::Nats => "nats",
            System::Redis => "redis",
        }
    }
}

/// One system's way to set a run up and to start its producers and consumers.
pub trait Driver {
    /// Creates the topic (Kafka topic, JetStream stream; nothing for Redis) when missing;
    /// returns its partition count.
    fn ensure_topic(&self, args: &Args) -> Result<u32, String>;

    /// Starts producer `producer`'s thread(s); its report arrives on `reports`.
    fn spawn_producer(
        &self,
        plan: Plan,
        producer: u32,
        live: Arc<Live>,
        reports: Sender<ProducerReport>,
    ) -> JoinHandle<()>;

    /// The log end of every topic-partition of the run (topic-major, as
    /// `topics::topic_partitions`); for `--consumer-group` runs.
    fn log_ends(&self, _plan: &Plan) -> Result<Vec<u64>, String> {
        Err("reading log ends needs --system shardline".into())
    }

    /// Waits until the run's consumer group has every consumer as a member and is stable
    /// (each member owns exactly what the coordinator wants it to own).
    fn wait_group_stable(&self, _plan: &Plan) -> Result<(), String> {
        Err("consumer groups need --system shardline".into())
    }

    /// Starts consumer `consumer`'s thread; it reads the partitions
    /// `p % consumers == consumer` from their end at the start of the run.
    fn spawn_consumer(
        &self,
        plan: Plan,
        consumer: u32,
        live: Arc<Live>,
        events: Sender<ConsumerEvent>,
    ) -> JoinHandle<()>;
}

/// The driver of `system`; peers need the `peers` feature.
pub fn driver(system: System) -> Result<Box<dyn Driver>, String> {
    match system {
        System::Shardline => Ok(Box::new(shardline::ShardlineDriver)),
        #[cfg(feature = "peers")]
        System::Kafka => Ok(Box::new(kafka::KafkaDriver)),
        #[cfg(feature = "peers")]
        System::Nats => Ok(Box::new(nats::NatsDriver)),
        #[cfg(feature = "peers")]
        System::Redis => Ok(Box::new(redis::RedisDriver)),
        #[cfg(not(feature = "peers"))]
        peer => Err(format!(
            "--system {} needs the peer drivers, which this binary was built without: \
             rebuild with `cargo build --release -p shardline-loadgen --features peers` \
             (or `cargo build --release --workspace --features shardline-loadgen/peers`)",
            peer.name()
        )),
    }
}

/// The systems this binary has a driver for, in `--system`'s order (shardline always; the
/// peers only with the `peers` feature).
pub fn built_systems() -> Vec<System> {
    System::value_variants()
        .iter()
        .copied()
        .filter(|&system| driver(system).is_ok())
        .collect()
}

/// The client settings a run uses on `args.system`, as (name, value) pairs: the Kafka
/// driver configures librdkafka from exactly these, and the report prints them. An
/// `--acks` the system cannot honour is an error.
pub fn client_settings(args: &Args) -> Result<Vec<(&'static str, String)>, String> {
    let config = args.producer_config();
    let linger_ms = config.linger.as_micros() as f64 / MICROS_PER_MILLI;
    match args.system {
        System::Shardline => Ok(vec![
            ("acks", format!("{:?}", args.acks).to_lowercase()),
            ("linger_ms", linger_ms.to_string()),
            ("batch_bytes", config.batch_bytes.to_string()),
            ("shard_routing", args.shard_routing().to_string()),
            ("fetch_min_bytes", args.fetch_min_bytes.to_string()),
            ("fetch_max_wait_ms", args.fetch_max_wait_ms.to_string()),
        ]),
        System::Kafka => {
            let acks = match args.acks {
                AcksArg::None => "0",
                AcksArg::Leader => "1",
                AcksArg::All => "all",
            };
            Ok(vec![
                ("acks", acks.to_string()),
                // Idempotence keeps retried batches from doubling or reordering; it
                // needs acks=all.
                (
                    "enable.idempotence",
                    (args.acks == AcksArg::All).to_string(),
                ),
                ("linger.ms", linger_ms.to_string()),
                ("batch.size", config.batch_bytes.to_string()),
                ("compression.type", "none".to_string()),
                // TCP_NODELAY, as the Java client and shardline's client use.
                ("socket.nagle.disable", "true".to_string()),
                (
                    "queue.buffering.max.messages",
                    KAFKA_QUEUE_MESSAGES_MAX.to_string(),
                ),
                (
                    "queue.buffering.max.kbytes",
                    KAFKA_QUEUE_KIB_MAX.to_string(),
                ),
                ("fetch.wait.max.ms", KAFKA_FETCH_WAIT_MS.to_string()),
            ])
        }
        System::Nats => match args.acks {
            AcksArg::None => Err("--system nats: JetStream acknowledges every publish; \
                 use --acks leader or all (both wait for the PubAck)"
                .into()),
            AcksArg::Leader | AcksArg::All => Ok(vec![
                (
                    "publish",
                    "JetStream publish, acknowledged by the stream's PubAck (stored by the \
                     one server)"
                        .to_string(),
                ),
                (
                    "stream",
                    "file storage, 1 replica, one subject per partition".into(),
                ),
            ]),
        },
        System::Redis => match args.acks {
            AcksArg::None => Err("--system redis: every XADD has a reply; use --acks \
                 leader or all (both wait for it)"
                .into()),
            AcksArg::Leader | AcksArg::All => Ok(vec![
                (
                    "publish",
                    "XADD per message; per partition, sent in order as pipelines (one in \
                     flight, the next accumulating, at most 64 XADDs); each reply is the \
                     acknowledgement"
                        .to_string(),
                ),
                ("stream", "one stream key per partition".into()),
            ]),
        },
    }
}

/// The partition a peer without its own partitioner (NATS, Redis) puts a message in: a
/// stable hash (FNV-1a, 32 bits) of the key, or round-robin by sequence without a key.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn partition_for(key: Option<&[u8]>, sequence: u64, partitions: u32) -> u32 {
    assert!(partitions > 0, "no partitions");
    match key {
        Some(key) => fnv1a_32(key) % partitions,
        None => (sequence % u64::from(partitions)) as u32,
    }
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811C_9DC5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// The NATS subject of a partition: `<topic>.<partition>`; the stream is named after the
/// topic and takes `<topic>.*`.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn nats_subject(topic: &str, partition: u32) -> String {
    format!("{topic}.{partition}")
}

/// The partition of a NATS subject made by `nats_subject`.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn nats_partition(subject: &str) -> Option<u32> {
    subject.rsplit_once('.')?.1.parse().ok()
}

/// The Redis stream key of a partition: `<topic>:<partition>`.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn redis_stream_key(topic: &str, partition: u32) -> String {
    format!("{topic}:{partition}")
}

/// Whether a topic name is usable as a JetStream stream name and subject prefix (no
/// whitespace, `.`, `*`, `>`, path separators).
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn nats_topic_ok(topic: &str) -> bool {
    !topic.is_empty()
        && topic
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut all = vec!["shardline-loadgen"];
        all.extend_from_slice(extra);
        Args::parse_from(all)
    }

    fn setting<'a>(settings: &'a [(&'static str, String)], name: &str) -> &'a str {
        settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {settings:?}"))
    }

    #[test]
    fn kafka_acks_map_to_librdkafka_and_idempotence_needs_acks_all() {
        let all = client_settings(&args(&["--system", "kafka", "--acks", "all"])).expect("ok");
        assert_eq!(setting(&all, "acks"), "all");
        assert_eq!(setting(&all, "enable.idempotence"), "true");
        assert_eq!(setting(&all, "linger.ms"), "1");
        assert_eq!(setting(&all, "batch.size"), "262144");
        let leader =
            client_settings(&args(&["--system", "kafka", "--acks", "leader"])).expect("ok");
        assert_eq!(setting(&leader, "acks"), "1");
        assert_eq!(setting(&leader, "enable.idempotence"), "false");
        let none = client_settings(&args(&["--system", "kafka", "--acks", "none"])).expect("ok");
        assert_eq!(setting(&none, "acks"), "0");
        let tuned = client_settings(&args(&[
            "--system",
            "kafka",
            "--linger-us",
            "500",
            "--batch-bytes",
            "65536",
        ]))
        .expect("ok");
        assert_eq!(setting(&tuned, "linger.ms"), "0.5");
        assert_eq!(setting(&tuned, "batch.size"), "65536");
    }

    #[test]
    fn nats_and_redis_refuse_acks_none_and_state_what_an_ack_is() {
        for system in ["nats", "redis"] {
            let error = client_settings(&args(&["--system", system, "--acks", "none"]))
                .expect_err("acks none");
            assert!(error.contains(system), "{error}");
            let settings = client_settings(&args(&["--system", system])).expect("acks all");
            assert!(
                setting(&settings, "publish").contains("ack"),
                "{settings:?}"
            );
        }
        let shardline = client_settings(&args(&[])).expect("default system");
        assert_eq!(setting(&shardline, "acks"), "all");
    }

    #[test]
    fn the_built_systems_are_shardline_and_the_peers_only_with_the_feature() {
        let built = built_systems();
        if cfg!(feature = "peers") {
            assert_eq!(
                built,
                [
                    System::Shardline,
                    System::Kafka,
                    System::Nats,
                    System::Redis
                ]
            );
        } else {
            assert_eq!(built, [System::Shardline]);
        }
    }

    #[test]
    fn peers_without_the_feature_say_how_to_rebuild() {
        assert!(driver(System::Shardline).is_ok());
        if cfg!(feature = "peers") {
            return;
        }
        for system in [System::Kafka, System::Nats, System::Redis] {
            let Err(error) = driver(system) else {
                panic!("{system:?} built without the peers feature");
            };
            assert!(error.contains("--features peers"), "{error}");
            assert!(error.contains(system.name()), "{error}");
        }
    }

    #[test]
    fn keyed_messages_keep_their_partition_and_keyless_ones_rotate() {
        let key = b"key-42".as_slice();
        let first = partition_for(Some(key), 0, 8);
        assert!((0..100).all(|sequence| partition_for(Some(key), sequence, 8) == first));
        let spread: std::collections::HashSet<u32> = (0..1024)
            .map(|k| partition_for(Some(format!("key-{k}").as_bytes()), 0, 8))
            .collect();
        assert_eq!(spread.len(), 8, "1024 keys reach every partition");
        let keyless: Vec<u32> = (0..5).map(|s| partition_for(None, s, 3)).collect();
        assert_eq!(keyless, [0, 1, 2, 0, 1]);
        // FNV-1a test vectors.
        assert_eq!(fnv1a_32(b""), 0x811C_9DC5);
        assert_eq!(fnv1a_32(b"a"), 0xE40C_292C);
    }

    #[test]
    fn peer_names_round_trip_and_bad_topics_are_refused() {
        assert_eq!(nats_subject("quick", 7), "quick.7");
        assert_eq!(nats_partition(&nats_subject("quick", 7)), Some(7));
        assert_eq!(nats_partition("quick"), None);
        assert_eq!(redis_stream_key("quick", 3), "quick:3");
        assert!(nats_topic_ok("peers-quick_1"));
        for bad in ["", "a.b", "a*", "a>", "a b", "a/b"] {
            assert!(!nats_topic_ok(bad), "{bad}");
        }
    }
}
