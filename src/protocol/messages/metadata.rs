//! Metadata (api 1): which brokers exist, how many shards each runs and on which ports, and
//! for each topic its partitions with their leader broker, owning shard and leader epoch.
//!
//! `shard` and `shard_ports` make routing shard-aware: a client that connects straight to
//! `shard_ports[shard]` of the leader broker reaches the core that owns the partition, and
//! the request needs no cross-shard hop. A partition sent to any other shard of the leader
//! is forwarded or answered with `WrongShard`.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use super::configs::ConfigEntry;
use crate::constants::{
    BROKERS_PER_RESPONSE_MAX, HOST_BYTES_MAX, PARTITIONS_PER_REQUEST_MAX, PARTITIONS_PER_TOPIC_MAX,
    REPLICAS_PER_PARTITION_MAX, SHARDS_PER_BROKER_MAX, TOPICS_PER_REQUEST_MAX,
};

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MetadataRequest {
    /// The topics to describe; `None` means all of them, `Some(vec![])` none (brokers only).
    /// A requested topic that does not exist comes back with `UnknownTopicOrPartition`.
    pub topics: Option<Vec<String>>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerMetadata>,
    /// Shards of the broker that answered (each broker's own count is its
    /// `shard_ports.len()`).
    pub shard_count: u16,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BrokerMetadata {
    pub broker_id: u32,
    pub host: String,
    /// The broker's main listener (any shard; requests are forwarded to the owner).
    pub port: u16,
    /// One listener per shard, indexed by shard: `shard_ports[s]` reaches shard `s` directly.
    /// Empty if the broker has no per-shard listeners.
    pub shard_ports: Vec<u16>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicMetadata {
    pub name: String,
    /// `UnknownTopicOrPartition` for a requested topic that does not exist (then
    /// `partitions` is empty), `TopicDeletionInProgress`, ...
    pub error: ErrorCode,
    pub partitions: Vec<PartitionMetadata>,
    /// A summary of the topic's configuration: the entries that differ from the defaults
    /// (DescribeConfigs lists every entry).
    pub configs: Vec<ConfigEntry>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PartitionMetadata {
    pub partition: u32,
    pub error: ErrorCode,
    /// The leader's broker id; `None` while the partition has no leader.
    pub leader_broker: Option<u32>,
    /// The shard of the leader broker that owns this partition.
    pub shard: u16,
    /// Bumped on every leader change; fences requests aimed at an old leader.
    pub leader_epoch: u32,
    /// Broker ids of every replica, leader included.
    pub replicas: Vec<u32>,
    /// Broker ids of the replicas in sync with the leader.
    pub in_sync_replicas: Vec<u32>,
}

impl CheckArchived for ArchivedMetadataRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        match self.topics.as_ref() {
            Some(names) => limits::topics(names, TOPICS_PER_REQUEST_MAX),
            None => Ok(()),
        }
    }
}

impl CheckArchived for ArchivedMetadataResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("broker list", self.brokers.len(), BROKERS_PER_RESPONSE_MAX)?;
        for broker in self.brokers.iter() {
            limits::string("broker host", &broker.host, HOST_BYTES_MAX)?;
            limits::count(
                "broker shard ports",
                broker.shard_ports.len(),
                SHARDS_PER_BROKER_MAX,
            )?;
        }
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        let mut partition_count = 0;
        for topic in self.topics.iter() {
            limits::topic(&topic.name)?;
            limits::count(
                "topic partitions",
                topic.partitions.len(),
                PARTITIONS_PER_TOPIC_MAX,
            )?;
            partition_count += topic.partitions.len();
            limits::count(
                "partitions in the response",
                partition_count,
                PARTITIONS_PER_REQUEST_MAX,
            )?;
            for partition in topic.partitions.iter() {
                limits::count(
                    "partition replicas",
                    partition.replicas.len(),
                    REPLICAS_PER_PARTITION_MAX,
                )?;
                limits::count(
                    "partition in-sync replicas",
                    partition.in_sync_replicas.len(),
                    REPLICAS_PER_PARTITION_MAX,
                )?;
            }
            limits::config_entries(&topic.configs)?;
        }
        Ok(())
    }
}
