//! Produce (api 2): record batches in, base offsets out.
//!
//! The batches are not in the body: they follow it, verbatim, in the frame trailer, so that
//! their bytes are never re-encoded (they go to the log as they came). The body lists one
//! entry per partition with `batch_bytes`, the number of trailer bytes that belong to it;
//! the entries' shares follow each other in the trailer, in order, and add up to exactly
//! the trailer length. Each share holds one or more whole batches (the broker validates them
//! with `record::validate`). A partition may be listed more than once; its shares are
//! appended in request order.
//!
//! Every produce request gets exactly one response, whatever `acks` says (with `acks = 0`
//! the broker answers as soon as the batches are accepted, before they are written), so
//! correlation ids and the in-flight window work the same for every request.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{BATCH_HEADER_BYTES, PARTITIONS_PER_REQUEST_MAX};

/// How durable a produced batch must be before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Acknowledged once accepted by the leader, before it is written (`0` on the wire).
    None,
    /// Acknowledged once durable on the leader, as its flush policy defines (`1`).
    Leader,
    /// Acknowledged once replicated to every in-sync replica (`-1`).
    All,
}

impl Acks {
    pub fn as_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    pub fn from_i8(value: i8) -> Option<Acks> {
        match value {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProduceRequest {
    /// `Acks::as_i8`: 0 none, 1 leader, -1 all; anything else is refused.
    pub acks: i8,
    /// How long the broker may wait for `acks` before answering `RequestTimedOut`.
    pub timeout_ms: u32,
    pub partitions: Vec<ProducePartition>,
}

impl ProduceRequest {
    /// The acks level; always `Some` for a decoded request.
    pub fn acks(&self) -> Option<Acks> {
        Acks::from_i8(self.acks)
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProducePartition {
    pub topic: String,
    pub partition: u32,
    /// Trailer bytes for this partition: one or more whole batches, at least one header long.
    pub batch_bytes: u32,
    /// The leader epoch the client believes in (`None`: not checked). An older one gets
    /// `FencedLeaderEpoch`, a newer one `UnknownLeaderEpoch`.
    pub leader_epoch: Option<u32>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProduceResponse {
    /// One entry per request entry, in request order.
    pub partitions: Vec<ProducePartitionResponse>,
    /// How long the client should wait before its next request (quotas); 0 if not throttled.
    pub throttle_ms: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProducePartitionResponse {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    /// Offset given to the first record of the first batch (meaningless on error).
    pub base_offset: u64,
    /// Append time the broker stamped when the topic uses log-append time, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: u64,
    /// Why it failed, for humans; empty on success.
    pub message: String,
}

impl CheckArchived for ArchivedProduceRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        let acks = self.acks;
        if Acks::from_i8(acks).is_none() {
            return Err(ProtocolError::InvalidValue {
                what: "acks",
                reason: format!("{acks} is not -1 (all), 0 (none) or 1 (leader)"),
            });
        }
        limits::count(
            "produce partitions",
            self.partitions.len(),
            PARTITIONS_PER_REQUEST_MAX,
        )?;
        for partition in self.partitions.iter() {
            limits::topic(&partition.topic)?;
            let batch_bytes = partition.batch_bytes.to_native();
            if (batch_bytes as usize) < BATCH_HEADER_BYTES {
                return Err(ProtocolError::InvalidValue {
                    what: "batch_bytes",
                    reason: format!(
                        "{}/{} claims {batch_bytes} bytes, less than one batch header",
                        partition.topic.as_str(),
                        partition.partition.to_native()
                    ),
                });
            }
        }
        Ok(())
    }

    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions
            .iter()
            .map(|partition| partition.batch_bytes.to_native())
    }
}

impl CheckArchived for ArchivedProduceResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count(
            "produce partitions",
            self.partitions.len(),
            PARTITIONS_PER_REQUEST_MAX,
        )?;
        for partition in self.partitions.iter() {
            limits::topic(&partition.topic)?;
            limits::message(&partition.message)?;
        }
        Ok(())
    }
}
