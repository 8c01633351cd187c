//! ReplicaFetch (api 40): a follower broker's shard fetches the partitions it follows from
//! the leader broker's owning shard, and tells the leader how far it has got.
//!
//! A follower sends one request for all the partitions it follows from one leader shard
//! (its replica-fetch session). For each, `fetch_offset` is its log end and
//! `durable_offset` what it holds durably under its flush policy: the leader moves the
//! high watermark with them. The answer is an ordinary `FetchResponse` (api 40's response
//! body), its trailer the leader's batches exactly as stored, from `fetch_offset` up to the
//! leader's log end (not just the high watermark: a follower must hold what is not yet
//! acknowledged). `high_watermark` is the leader's.
//!
//! A partition the broker does not lead, or leads at another epoch, comes back with
//! `NotLeaderOrFollower` or `FencedLeaderEpoch` and no batches; a replica id outside the
//! partition's replicas with `NotLeaderOrFollower` too. Nothing about the partition
//! changes.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::limits::{self, CheckArchived};

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaFetchRequest {
    /// The follower's broker id.
    pub replica: u32,
    pub max_wait_ms: u32,
    pub max_bytes: u32,
    pub partitions: Vec<ReplicaFetchPartition>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaFetchPartition {
    pub topic: String,
    pub partition: u32,
    /// The leader epoch the follower follows.
    pub leader_epoch: u32,
    /// The follower's log end offset: the first offset it wants.
    pub fetch_offset: u64,
    /// Offsets below this are durable on the follower.
    pub durable_offset: u64,
    pub partition_max_bytes: u32,
}

impl CheckArchived for ArchivedReplicaFetchRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("replica fetch partitions", &self.partitions, |p| &p.topic)?;
        for partition in self.partitions.iter() {
            if partition.durable_offset.to_native() > partition.fetch_offset.to_native() {
                return Err(ProtocolError::InvalidValue {
                    what: "replica fetch durable offset",
                    reason: format!(
                        "{}/{}: durable offset {} above the fetch offset {}",
                        partition.topic,
                        partition.partition,
                        partition.durable_offset,
                        partition.fetch_offset
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The leader's answer: one entry per request entry, in request order, with the batches of
/// each in the trailer (as in `FetchResponse`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaFetchResponse {
    pub partitions: Vec<super::fetch::FetchPartitionResponse>,
}

impl CheckArchived for ArchivedReplicaFetchResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("replica fetch partitions", &self.partitions, |p| &p.topic)
    }

    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions
            .iter()
            .map(|partition| partition.batch_bytes.to_native())
    }
}

/// OffsetsForLeaderEpoch (api 43): before a follower fetches a partition from a new
/// leader, it asks where its own last epoch ends on the leader, and cuts its log there
/// (see `crate::log::epochs`). Sent to the leader's owning shard, like ReplicaFetch.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetsForLeaderEpochRequest {
    /// The follower's broker id.
    pub replica: u32,
    pub partitions: Vec<EpochQuery>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EpochQuery {
    pub topic: String,
    pub partition: u32,
    /// The leader epoch the follower follows (a leader at another epoch refuses).
    pub leader_epoch: u32,
    /// The epoch of the follower's last batch.
    pub epoch: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetsForLeaderEpochResponse {
    /// One per query, in request order.
    pub partitions: Vec<EpochAnswer>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct EpochAnswer {
    pub topic: String,
    pub partition: u32,
    pub error: super::super::ErrorCode,
    /// The leader's largest epoch at or below the one asked about (`None`: it holds no
    /// epoch that old).
    pub epoch: Option<u32>,
    /// Where that epoch ends on the leader (the start of its first epoch when `epoch` is
    /// `None`).
    pub end_offset: u64,
}

impl CheckArchived for ArchivedOffsetsForLeaderEpochRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("leader epoch queries", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedOffsetsForLeaderEpochResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("leader epoch answers", &self.partitions, |p| &p.topic)
    }
}
