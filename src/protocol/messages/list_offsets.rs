//! ListOffsets (api 4): the earliest, latest or first-at-a-time offset of partitions, for a
//! consumer choosing where to start.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};

/// Which offset to look up.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next visible record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this time (ms since the
    /// epoch); the high watermark if there is none.
    Timestamp(i64),
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ListOffsetsRequest {
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ListOffsetsPartition {
    pub topic: String,
    pub partition: u32,
    pub spec: OffsetSpec,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ListOffsetsResponse {
    /// One entry per request entry, in request order.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ListOffsetsPartitionResponse {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub offset: u64,
    /// Timestamp of the record at `offset` for a `Timestamp` lookup that found one, else -1.
    pub timestamp_ms: i64,
}

impl CheckArchived for ArchivedListOffsetsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("list-offsets partitions", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedListOffsetsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("list-offsets partitions", &self.partitions, |p| &p.topic)
    }
}
