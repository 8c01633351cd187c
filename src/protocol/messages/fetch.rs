//! Fetch (api 3): positions in, record batches out.
//!
//! As in produce, the batches travel verbatim in the frame trailer: the response body lists
//! one entry per partition with `batch_bytes`, that partition's share of the trailer, in
//! order, adding up to exactly the trailer length. A share holds whole batches as they are
//! in the log (the first may start before `fetch_offset`: the consumer skips records below
//! it). A partition with nothing to return has `batch_bytes = 0`.
//!
//! The broker keeps a response within `max_bytes` and each partition within
//! `partition_max_bytes`, except that the first batch of the first non-empty partition is
//! returned whole even if larger, so a consumer always makes progress; it never exceeds
//! `FRAME_TRAILER_BYTES_MAX`.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};

/// Which records a fetch may see.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum IsolationLevel {
    /// Records below the high watermark: replicated to every in-sync replica. (With no
    /// transactions yet, this is also read-committed.)
    HighWatermark,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchRequest {
    /// How long the broker may wait for `min_bytes` to be available.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available (0: answer at once).
    pub min_bytes: u32,
    /// The most trailer bytes the response should carry.
    pub max_bytes: u32,
    pub isolation: IsolationLevel,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    /// The first offset wanted.
    pub fetch_offset: u64,
    /// The most trailer bytes for this partition.
    pub partition_max_bytes: u32,
    /// The leader epoch the client believes in (`None`: not checked). An older one gets
    /// `FencedLeaderEpoch`, a newer one `UnknownLeaderEpoch`.
    pub leader_epoch: Option<u32>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchResponse {
    /// How long the client should wait before its next request (quotas); 0 if not throttled.
    pub throttle_ms: u32,
    /// One entry per request entry, in request order.
    pub partitions: Vec<FetchPartitionResponse>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchPartitionResponse {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    /// Offsets below this are replicated to every in-sync replica.
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Offsets below this are visible under read-committed isolation (= high watermark
    /// until transactions exist).
    pub last_stable_offset: u64,
    /// Trailer bytes for this partition: whole batches, possibly none.
    pub batch_bytes: u32,
}

impl CheckArchived for ArchivedFetchRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("fetch partitions", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedFetchResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("fetch partitions", &self.partitions, |p| &p.topic)
    }

    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions
            .iter()
            .map(|partition| partition.batch_bytes.to_native())
    }
}
