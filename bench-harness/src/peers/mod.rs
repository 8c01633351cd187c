//! Peer brokers measured beside shardline: Apache Kafka (KRaft, jars from Maven Central;
//! one combined broker and controller, or a cluster of three replicating every partition),
//! NATS JetStream (Debian's `nats-server`, file storage) and Redis Streams (Debian's
//! `redis-server`, append-only file). They are installed by
//! `bench-harness/peers/install.sh`; the harness starts each on loopback, on free ports,
//! with its data in a temporary directory, and stops it after the run (`process`).
//!
//! Each peer runs in a *durability class* that shardline is compared in:
//!
//! | class | what an acknowledgement means | shardline | Kafka (1 node, and 3 nodes) | NATS 2.9 | Redis |
//! |---|---|---|---|---|---|
//! | `fsync` | on stable storage (fsync before the ack) | `acks=all`, a profile that fdatasyncs before acking | `log.flush.interval.messages=1` (on every node) | not available | `appendfsync always` |
//! | `no-fsync` | written to the OS or device, not synced: survives `kill -9`, not power loss | `acks=leader` | default (no flush) | default (sync every 2 min) | `appendfsync everysec` |
//!
//! The 3-node Kafka (`kafka-cluster`) adds replication on top of its class: replication
//! factor 3, `min.insync.replicas=2`, producers with `acks=all`, so an acknowledged
//! message is also on every in-sync replica (at least 2).
//!
//! NATS JetStream's `sync_interval: always` arrived in nats-server 2.10; Debian's 2.9.10
//! refuses the field, so NATS has no fsync-class run (the report says so).

mod kafka;
mod kafka_topic;
mod nats;
mod process;
pub mod producer_perf;
mod redis;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::process_group::spawn_logged;
use crate::scenario::ClusterSpec;
pub use kafka::{java_and_classpath, KAFKA_VERSION_DEFAULT};

/// Creates `topic` (one replica per partition) on the one-node Kafka at `bootstrap`, for a
/// client that does not create its topics (Kafka's own tools); waits until every partition
/// has its leader. The tool's commands and output go to `log_path`.
pub fn create_kafka_topic(
    install: &PeerInstall,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    log_path: &std::path::Path,
) -> Result<String, String> {
    let one = kafka::Replication {
        factor: 1,
        min_insync_replicas: 1,
    };
    kafka_topic::create_replicated_topic(install, bootstrap, topic, partitions, one, log_path)
}
pub use process::PeerProcess;
use process::{find_program, NodeLaunch};

/// The peer brokers the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// One Kafka node, topics of one replica.
    Kafka,
    /// Three Kafka nodes, topics of three replicas, two of them in sync for `acks=all`.
    KafkaCluster,
    Nats,
    Redis,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Peer::Kafka, Peer::KafkaCluster, Peer::Nats, Peer::Redis];

    /// The name in scenarios, `--peers` and the report.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Kafka => "kafka",
            Peer::KafkaCluster => "kafka-cluster",
            Peer::Nats => "nats",
            Peer::Redis => "redis",
        }
    }

    /// The loadgen's `--system` for this peer.
    pub fn system(self) -> &'static str {
        match self {
            Peer::Kafka | Peer::KafkaCluster => "kafka",
            Peer::Nats => "nats",
            Peer::Redis => "redis",
        }
    }

    pub fn is_kafka(self) -> bool {
        self.system() == "kafka"
    }

    /// A peer that replicates, as the shardline cluster of the same shape: its nodes, its
    /// topics' replication factor and `min.insync.replicas` (`None`: one node).
    pub fn cluster_spec(self) -> Option<ClusterSpec> {
        match self {
            Peer::KafkaCluster => Some(ClusterSpec {
                brokers: kafka::CLUSTER_NODES as u32,
                replication_factor: kafka::CLUSTER_REPLICATION_FACTOR as u16,
                min_insync_replicas: kafka::CLUSTER_MIN_INSYNC_REPLICAS as u16,
            }),
            Peer::Kafka | Peer::Nats | Peer::Redis => None,
        }
    }

    pub fn parse(name: &str) -> Result<Peer, String> {
        Peer::ALL
            .into_iter()
            .find(|peer| peer.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Peer::ALL.iter().map(|peer| peer.name()).collect();
                format!("no peer '{name}' ({})", names.join(", "))
            })
    }

    /// How a Kafka peer is deployed, for the report (`None` for the other peers).
    pub fn kafka_deployment(self, kafka_version: &str) -> Option<String> {
        match self {
            Peer::Kafka => Some(format!(
                "Kafka {kafka_version}, KRaft, one combined broker and controller"
            )),
            Peer::KafkaCluster => Some(format!(
                "Kafka {kafka_version}, KRaft, {} brokers, replication factor {}, acks=all, \
                 min.insync.replicas={} (each node a combined broker and controller, all {} \
                 voters of the metadata quorum)",
                kafka::CLUSTER_NODES,
                kafka::CLUSTER_REPLICATION_FACTOR,
                kafka::CLUSTER_MIN_INSYNC_REPLICAS,
                kafka::CLUSTER_NODES,
            )),
            Peer::Nats | Peer::Redis => None,
        }
    }
}

/// What an acknowledgement means, in every system of a comparison alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// On stable storage: fsync (or fdatasync) before the acknowledgement.
    Fsync,
    /// Written to the OS (or, for shardline's O_DIRECT, the device) and not synced:
    /// survives a process crash, not a power loss.
    NoFsync,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::NoFsync => "no-fsync",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Durability::Fsync => "acknowledged once on stable storage (fsync before the ack)",
            Durability::NoFsync => {
                "acknowledged once written, not synced: survives kill -9, not power loss"
            }
        }
    }
}

/// The server settings by which `peer` meets `durability`, or why it cannot.
pub fn peer_setting(peer: Peer, durability: Durability) -> Result<String, String> {
    match (peer, durability) {
        (Peer::Kafka, Durability::Fsync) => Ok(
            "Kafka (KRaft): log.flush.interval.messages=1 (fsync every append before the \
             response), producer acks=all, 1 replica"
                .into(),
        ),
        (Peer::Kafka, Durability::NoFsync) => Ok(
            "Kafka (KRaft): default flush (page cache, no fsync), producer acks=all, 1 replica"
                .into(),
        ),
        (Peer::KafkaCluster, Durability::Fsync) => Ok(format!(
            "Kafka (KRaft), {}: log.flush.interval.messages=1 on every node (each replica \
             fsyncs each append; acks=all answers once every in-sync replica, at least {}, \
             has appended it)",
            cluster_replication(),
            kafka::CLUSTER_MIN_INSYNC_REPLICAS
        )),
        (Peer::KafkaCluster, Durability::NoFsync) => Ok(format!(
            "Kafka (KRaft), {}: default flush (page cache, no fsync; acks=all answers once \
             every in-sync replica, at least {}, has written it to its log)",
            cluster_replication(),
            kafka::CLUSTER_MIN_INSYNC_REPLICAS
        )),
        (Peer::Nats, Durability::Fsync) => Err(
            "nats-server 2.9.10 (Debian) has no fsync-per-write setting: `sync_interval: \
             always` arrived in 2.10 and 2.9 refuses the field"
                .into(),
        ),
        (Peer::Nats, Durability::NoFsync) => Ok(
            "nats-server 2.9.10: JetStream file storage, 1 replica, server's default sync \
             (fsync every 2 min, none before the PubAck)"
                .into(),
        ),
        (Peer::Redis, Durability::Fsync) => Ok(
            "redis-server: appendonly yes, appendfsync always (AOF fsynced before replies), \
             no RDB snapshots"
                .into(),
        ),
        (Peer::Redis, Durability::NoFsync) => Ok(
            "redis-server: appendonly yes, appendfsync everysec (AOF written before \
             replies, fsynced once a second), no RDB snapshots"
                .into(),
        ),
    }
}

/// The `kafka-cluster` peer's replication, as its settings state it.
fn cluster_replication() -> String {
    format!(
        "{} brokers, replication factor {}, min.insync.replicas={}, producer acks=all",
        kafka::CLUSTER_NODES,
        kafka::CLUSTER_REPLICATION_FACTOR,
        kafka::CLUSTER_MIN_INSYNC_REPLICAS
    )
}

/// Where a peer's installation is expected (Kafka's jars; the others are on PATH).
#[derive(Debug, Clone)]
pub struct PeerInstall {
    pub kafka_version: String,
    pub cache_dir: PathBuf,
}

impl PeerInstall {
    /// `$SHARDLINE_BENCH_CACHE`, else `$XDG_CACHE_HOME/shardline-bench`, else
    /// `~/.cache/shardline-bench` (as install.sh).
    pub fn from_env(kafka_version: &str) -> PeerInstall {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let cache_dir = var("SHARDLINE_BENCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("shardline-bench")))
            .or_else(|| var("HOME").map(|d| PathBuf::from(d).join(".cache/shardline-bench")))
            .unwrap_or_else(|| PathBuf::from(".cache/shardline-bench"));
        PeerInstall {
            kafka_version: kafka_version.to_string(),
            cache_dir,
        }
    }

    /// Whether `peer`'s server is installed (Kafka: `java` and the jars of this version;
    /// the others: their program on PATH), else how to install it.
    pub fn check(&self, peer: Peer) -> Result<(), String> {
        match peer {
            Peer::Kafka | Peer::KafkaCluster => kafka::java_and_classpath(self).map(drop),
            Peer::Nats => find_program("nats-server").map(drop),
            Peer::Redis => find_program("redis-server").map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_states_its_setting_or_why_it_has_none() {
        for peer in Peer::ALL {
            assert_eq!(Peer::parse(peer.name()), Ok(peer));
            let no_fsync = peer_setting(peer, Durability::NoFsync).expect("every peer");
            assert!(!no_fsync.is_empty());
        }
        let kafka = peer_setting(Peer::Kafka, Durability::Fsync).expect("kafka");
        assert!(kafka.contains("log.flush.interval.messages=1"), "{kafka}");
        let redis = peer_setting(Peer::Redis, Durability::Fsync).expect("redis");
        assert!(redis.contains("appendfsync always"), "{redis}");
        let nats = peer_setting(Peer::Nats, Durability::Fsync).expect_err("2.9 cannot");
        assert!(nats.contains("2.10"), "{nats}");
        assert!(Peer::parse("pulsar").is_err());
    }

    #[test]
    fn a_missing_kafka_install_is_found_before_anything_starts() {
        let install = PeerInstall {
            kafka_version: "4.1.1".into(),
            cache_dir: PathBuf::from("/nonexistent"),
        };
        for peer in [Peer::Kafka, Peer::KafkaCluster] {
            let error = install.check(peer).expect_err("not installed");
            assert!(error.contains("install.sh kafka"), "{error}");
        }
    }

    #[test]
    fn durability_classes_serialize_as_their_names() {
        for durability in [Durability::Fsync, Durability::NoFsync] {
            let json = serde_json::to_value(durability).expect("serializes");
            assert_eq!(json, serde_json::json!(durability.name()));
        }
    }

    #[test]
    fn kafka_cluster_is_a_kafka_peer_that_replicates_three_times() {
        let cluster = Peer::parse("kafka-cluster").expect("known");
        assert_eq!(cluster, Peer::KafkaCluster);
        assert_eq!((cluster.system(), cluster.is_kafka()), ("kafka", true));
        assert_eq!(
            serde_json::to_value(cluster).expect("serializes"),
            serde_json::json!("kafka-cluster")
        );
        for class in [Durability::Fsync, Durability::NoFsync] {
            let setting = peer_setting(cluster, class).expect("both classes");
            assert!(
                setting.contains(
                    "3 brokers, replication factor 3, min.insync.replicas=2, producer acks=all"
                ),
                "{setting}"
            );
            assert_eq!(
                setting.contains("log.flush.interval.messages=1"),
                class == Durability::Fsync,
                "{setting}"
            );
        }
        let deployment = cluster.kafka_deployment("4.1.1").expect("a Kafka peer");
        assert!(
            deployment.starts_with(
                "Kafka 4.1.1, KRaft, 3 brokers, replication factor 3, acks=all, \
                 min.insync.replicas=2"
            ),
            "{deployment}"
        );
        assert!(Peer::Redis.kafka_deployment("4.1.1").is_none());
        assert_eq!(
            cluster.cluster_spec(),
            Some(ClusterSpec {
                brokers: 3,
                replication_factor: 3,
                min_insync_replicas: 2
            })
        );
        for single in [Peer::Kafka, Peer::Nats, Peer::Redis] {
            assert_eq!(single.cluster_spec(), None, "{single:?}");
        }
        let error = Peer::parse("kafka-clusters").expect_err("unknown");
        assert!(
            error.contains("kafka, kafka-cluster, nats, redis"),
            "{error}"
        );
    }
}
