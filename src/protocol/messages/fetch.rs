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
//!
//! **Fetch sessions (version 1).** A consumer that fetches many partitions again and again
//! need not list them all every time. `session_id` and `session_epoch` say what a request
//! is:
//!
//! | `session_id` | `session_epoch` | the request |
//! |---|---|---|
//! | 0 | `SESSIONLESS_EPOCH` | a full fetch, no session (what version 0 always is) |
//! | 0 | 0 | a full fetch that opens a session of its partitions |
//! | S | 0 | closes session S, then as above |
//! | S | `SESSIONLESS_EPOCH` | closes session S, then a full fetch with no session |
//! | S | n | an incremental fetch on session S; n is the session's next epoch |
//!
//! A session belongs to the connection that opened it and ends with it. The answer to an
//! opening request names the session (`session_id`, 0 when the broker declined to open
//! one: the fetch is still answered in full) and lists every partition; its epoch counts
//! as 0, so the first incremental request carries epoch 1, the next 2, and so on (after
//! `u32::MAX - 1` comes 1 again).
//!
//! An incremental request lists only the partitions that are new to the session or whose
//! position, byte limit or leader epoch changed, and names in `forgotten` those it no
//! longer wants. The broker fetches every partition in the session, and its answer lists
//! only partitions with batches, with an error, or whose high watermark or log start offset
//! changed since the session last reported them. An unknown session is answered with the
//! top-level error `FetchSessionNotFound`, a wrong epoch with `InvalidFetchSessionEpoch`
//! (which closes the session); either way the answer lists no partitions, and the client
//! starts again with a full fetch.

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
    /// In a full fetch every partition wanted; in an incremental one those new to the
    /// session or changed.
    pub partitions: Vec<FetchPartition>,
    /// The session this request uses (0: none). See the module doc.
    pub session_id: u32,
    pub session_epoch: u32,
    /// Partitions an incremental request drops from its session.
    pub forgotten: Vec<ForgottenPartition>,
}

/// `session_epoch` of a request that uses no session.
pub const SESSIONLESS_EPOCH: u32 = u32::MAX;

/// The epoch after `epoch` in a session: 1, 2, ..., `u32::MAX - 1`, then 1 again (0 opens a
/// session and `SESSIONLESS_EPOCH` uses none).
pub fn next_session_epoch(epoch: u32) -> u32 {
    if epoch >= SESSIONLESS_EPOCH - 1 {
        1
    } else {
        epoch + 1
    }
}

impl FetchRequest {
    /// Whether this request carries anything version 0 cannot say.
    pub fn uses_session(&self) -> bool {
        self.session_id != 0
            || self.session_epoch != SESSIONLESS_EPOCH
            || !self.forgotten.is_empty()
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct ForgottenPartition {
    pub topic: String,
    pub partition: u32,
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
    /// A full fetch: one entry per request entry, in request order. An incremental one:
    /// the session's partitions that have batches, an error or news (see the module doc).
    pub partitions: Vec<FetchPartitionResponse>,
    /// `FetchSessionNotFound` or `InvalidFetchSessionEpoch` for a session that could not be
    /// used (then there are no partitions); otherwise `None`.
    pub error: ErrorCode,
    /// The session this answer belongs to (0: none).
    pub session_id: u32,
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

impl FetchPartitionResponse {
    /// An answer for a partition that carries no batches and no offsets: an error (or
    /// `ErrorCode::None`, for the caller to fill in).
    pub fn without_data(topic: String, partition: u32, error: ErrorCode) -> Self {
        FetchPartitionResponse {
            topic,
            partition,
            error,
            high_watermark: 0,
            log_start_offset: 0,
            last_stable_offset: 0,
            batch_bytes: 0,
        }
    }
}

impl CheckArchived for ArchivedFetchRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("fetch partitions", &self.partitions, |p| &p.topic)?;
        limits::partition_list("forgotten partitions", &self.forgotten, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedFetchResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        check_answers(&self.partitions)
    }

    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        batch_lengths(&self.partitions)
    }
}

/// The checks on a fetch answer's partitions (both versions).
fn check_answers(
    partitions: &rkyv::vec::ArchivedVec<ArchivedFetchPartitionResponse>,
) -> Result<(), ProtocolError> {
    limits::partition_list("fetch partitions", partitions, |p| &p.topic)
}

/// Each answered partition's share of the trailer (both versions).
fn batch_lengths(
    partitions: &rkyv::vec::ArchivedVec<ArchivedFetchPartitionResponse>,
) -> impl Iterator<Item = u32> + '_ {
    partitions
        .iter()
        .map(|partition| partition.batch_bytes.to_native())
}

/// Fetch version 0's request: version 1 without a session.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchRequestV0 {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub isolation: IsolationLevel,
    pub partitions: Vec<FetchPartition>,
}

/// Fetch version 0's response: version 1 without a session or a top-level error.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FetchResponseV0 {
    pub throttle_ms: u32,
    pub partitions: Vec<FetchPartitionResponse>,
}

impl From<FetchRequestV0> for FetchRequest {
    fn from(v0: FetchRequestV0) -> FetchRequest {
        FetchRequest {
            max_wait_ms: v0.max_wait_ms,
            min_bytes: v0.min_bytes,
            max_bytes: v0.max_bytes,
            isolation: v0.isolation,
            partitions: v0.partitions,
            session_id: 0,
            session_epoch: SESSIONLESS_EPOCH,
            forgotten: Vec::new(),
        }
    }
}

impl TryFrom<&FetchRequest> for FetchRequestV0 {
    type Error = ProtocolError;

    /// Fails for a request that uses a session, which version 0 cannot carry.
    fn try_from(request: &FetchRequest) -> Result<FetchRequestV0, ProtocolError> {
        if request.uses_session() {
            return Err(ProtocolError::InvalidValue {
                what: "fetch session",
                reason: "fetch version 0 has no sessions".into(),
            });
        }
        Ok(FetchRequestV0 {
            max_wait_ms: request.max_wait_ms,
            min_bytes: request.min_bytes,
            max_bytes: request.max_bytes,
            isolation: request.isolation,
            partitions: request.partitions.clone(),
        })
    }
}

impl From<FetchResponseV0> for FetchResponse {
    fn from(v0: FetchResponseV0) -> FetchResponse {
        FetchResponse {
            throttle_ms: v0.throttle_ms,
            partitions: v0.partitions,
            error: ErrorCode::None,
            session_id: 0,
        }
    }
}

impl TryFrom<&FetchResponse> for FetchResponseV0 {
    type Error = ProtocolError;

    /// Fails for an answer with a session or a top-level error.
    fn try_from(response: &FetchResponse) -> Result<FetchResponseV0, ProtocolError> {
        if response.session_id != 0 || response.error != ErrorCode::None {
            return Err(ProtocolError::InvalidValue {
                what: "fetch session",
                reason: "fetch version 0 has no sessions".into(),
            });
        }
        Ok(FetchResponseV0 {
            throttle_ms: response.throttle_ms,
            partitions: response.partitions.clone(),
        })
    }
}

impl CheckArchived for ArchivedFetchRequestV0 {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::partition_list("fetch partitions", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedFetchResponseV0 {
    fn check(&self) -> Result<(), ProtocolError> {
        check_answers(&self.partitions)
    }

    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        batch_lengths(&self.partitions)
    }
}
