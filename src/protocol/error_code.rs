//! Wire error codes: what went wrong, in one `u16` a client can act on.
//!
//! Every response that can fail carries an `ErrorCode` (per partition or per topic where the
//! request names several). On the wire it is a plain little-endian `u16`, so a response from a
//! newer broker with a code this build does not know still decodes: the unknown value reads as
//! `ErrorCode::Unknown`.
//!
//! The values are explicit and permanent. A retired code is never reused: its number stays
//! reserved here (as a comment) so that old clients never misread a new meaning.

use std::fmt;

use rkyv::primitive::ArchivedU16;
use rkyv::rancor::Fallible;
use rkyv::{Archive, Deserialize, Place, Serialize};

/// Why a request, or one topic or partition in it, failed. `None` means it did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An error the broker has no better code for (or a code this build does not know).
    /// Not retriable.
    Unknown = 1,
    /// A record batch failed validation (length, checksum, header fields or body). Not
    /// retriable: the same bytes will fail again.
    CorruptBatch = 2,
    /// The topic or partition does not exist (on this broker). Not retriable as such: the
    /// client should refresh its metadata and decide (the topic may be being created).
    UnknownTopicOrPartition = 3,
    /// The request is malformed: its body failed validation or breaks a protocol limit. Not
    /// retriable.
    InvalidRequest = 4,
    /// The frame is larger than `FRAME_BYTES_MAX`, or its body larger than `BODY_BYTES_MAX`.
    /// Not retriable; the connection is closed after this error.
    FrameTooLarge = 5,
    /// A record batch is larger than `BATCH_BYTES_MAX`. Not retriable.
    BatchTooLarge = 6,
    /// The api key is unknown to this broker. Not retriable.
    UnsupportedApi = 7,
    /// The api is known but not at this version. Not retriable: negotiate versions (handshake).
    UnsupportedVersion = 8,
    /// A topic with this name exists already. Not retriable.
    TopicAlreadyExists = 9,
    /// The topic name is empty, too long, `.` or `..`, or has a character outside
    /// `[a-zA-Z0-9._-]`. Not retriable.
    InvalidTopicName = 10,
    /// The partition count is 0 or above `PARTITIONS_PER_TOPIC_MAX`. Not retriable.
    InvalidPartitionCount = 11,
    /// A configuration key is unknown, or its value is invalid or too long. Not retriable.
    InvalidConfig = 12,
    /// The fetch offset is below the log start offset or above the log end offset. Not
    /// retriable: the consumer must reset its position (ListOffsets).
    OffsetOutOfRange = 13,
    /// The partition is fenced after a failed write or fsync on this broker: it accepts and
    /// serves nothing until an operator intervenes or leadership moves. Not retriable here.
    StorageError = 14,
    /// This broker is not the leader (or follower) of the partition. Retriable after a
    /// metadata refresh.
    NotLeaderOrFollower = 15,
    /// The request did not complete within its timeout (for example `acks = all` waiting for
    /// replicas). Retriable; a produce retried after this may be appended twice unless
    /// idempotence is in use.
    RequestTimedOut = 16,
    /// Fewer in-sync replicas than the topic requires for `acks = all`. Retriable.
    NotEnoughReplicas = 17,
    /// The broker is shutting down and accepts no new work. Retriable (on another broker or
    /// after it restarts).
    BrokerShuttingDown = 18,
    /// A queue or buffer on the broker is full. Retriable after a back-off.
    Backpressure = 19,
    /// The partition is owned by another shard than the one this connection reached.
    /// Retriable: refresh metadata (`shard`, `shard_ports`) and send to the owning shard.
    WrongShard = 20,
    /// The topic is being deleted; a topic of the same name cannot be created or used until
    /// the deletion completes. Retriable after a back-off.
    TopicDeletionInProgress = 21,
    /// The replication factor is above `REPLICAS_PER_PARTITION_MAX` or above the number of
    /// brokers. Not retriable.
    InvalidReplicationFactor = 22,
    /// The member id is not (or no longer) a member of the group: it left, was removed after
    /// its session timeout, or the coordinator restarted. Not retriable as is: join again.
    UnknownMemberId = 23,
    /// The request names a generation the group is not at (a fenced, stale member). Not
    /// retriable as is: heartbeat (or join) to learn the current generation.
    IllegalGeneration = 24,
    /// The operation needs a group without members (resetting offsets). Not retriable until
    /// the members leave.
    GroupNotEmpty = 25,
    /// The group id is empty, too long or has characters outside `[a-zA-Z0-9._-]`.
    InvalidGroupId = 26,
    /// The coordinator is still loading the group's offsets after a restart. Retriable.
    CoordinatorLoading = 27,
    /// A session or rebalance timeout outside the broker's allowed range. Not retriable.
    InvalidSessionTimeout = 28,
    /// A member committed an offset for a partition that is not assigned to it (a zombie after
    /// a rebalance moved the partition). Not retriable: heartbeat to learn the assignment.
    PartitionNotAssigned = 29,
    /// The group has `GROUP_MEMBERS_MAX` members. Not retriable.
    GroupMaxSizeReached = 30,
    /// Another process joined with this member's static instance id, which fenced this one.
    /// Not retriable.
    FencedInstanceId = 31,
    /// The member asked for another assignment strategy than the group's members use. Not
    /// retriable.
    InconsistentGroupProtocol = 32,
    /// An idempotent producer's batch does not follow its previous one on the partition (a
    /// sequence was skipped or repeated out of order). Not retriable as such: the producer
    /// must resend from its first unacknowledged batch.
    OutOfOrderSequence = 33,
    /// An idempotent producer's epoch is older than the partition has seen: another
    /// producer with the same id took over. Not retriable.
    ProducerFenced = 34,
    /// A batch's producer fields are malformed (a negative sequence or epoch with a producer
    /// id, or a sequence range no batch can have). Not retriable.
    InvalidProducerFields = 35,
    /// The controller voter asked does not lead the controller's Raft group (an election
    /// is under way, or another voter leads). Retriable: the broker forwards to the leader
    /// and retries while leadership settles.
    NotController = 36,
    /// The request names an older leader epoch than the partition is at: the sender's
    /// view of leadership is stale. Retriable after a metadata refresh.
    FencedLeaderEpoch = 37,
    /// This broker (or shard) does not coordinate the group: the partition of the offsets
    /// log that holds it is led elsewhere (or leadership just moved). Retriable: find the
    /// coordinator again.
    NotCoordinator = 38,
    /// The request names a newer leader epoch than this broker knows: its own view is
    /// behind (a catalogue change on its way). Retriable after a short wait.
    UnknownLeaderEpoch = 39,
    /// The principal may not do this to the topic (authorization is on and no rule allows
    /// it). Not retriable: the request had no effect.
    TopicAuthorizationFailed = 40,
    /// The principal may not do this to the group.
    GroupAuthorizationFailed = 41,
    /// The principal may not do this to the cluster (an administrative request).
    ClusterAuthorizationFailed = 42,
    /// The SCRAM exchange failed: a wrong password or an unknown user (the broker does not
    /// say which), or a malformed message. The connection is closed.
    SaslAuthenticationFailed = 43,
    /// The broker requires authentication (`--sasl`) and this connection has not
    /// authenticated: only Handshake and SaslAuthenticate are answered. Closed after.
    AuthenticationRequired = 44,
    /// A leader asked to add a replica to the in-sync set that the controller does not
    /// count as alive (fenced, or unknown). Not retriable as such: the change had no effect.
    IneligibleReplica = 45,
    /// A fetch named a session this connection does not have (it was never opened, was
    /// closed, or was evicted to make room). Retriable: start again with a full fetch.
    FetchSessionNotFound = 46,
    /// A fetch carried another epoch than its session expects next (a request was lost or
    /// sent twice). The session is closed. Retriable: start again with a full fetch.
    InvalidFetchSessionEpoch = 47,
    // Next free value: 48. Retired values (never reuse): none yet.
}

impl ErrorCode {
    /// Every code, in value order.
    pub const ALL: [ErrorCode; 48] = [
        ErrorCode::None,
        ErrorCode::Unknown,
        ErrorCode::CorruptBatch,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidRequest,
        ErrorCode::FrameTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::UnsupportedApi,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidPartitionCount,
        ErrorCode::InvalidConfig,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::StorageError,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::Backpressure,
        ErrorCode::WrongShard,
        ErrorCode::TopicDeletionInProgress,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::UnknownMemberId,
        ErrorCode::IllegalGeneration,
        ErrorCode::GroupNotEmpty,
        ErrorCode::InvalidGroupId,
        ErrorCode::CoordinatorLoading,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::PartitionNotAssigned,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced,
        ErrorCode::InvalidProducerFields,
        ErrorCode::NotController,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::NotCoordinator,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::SaslAuthenticationFailed,
        ErrorCode::AuthenticationRequired,
        ErrorCode::IneligibleReplica,
        ErrorCode::FetchSessionNotFound,
        ErrorCode::InvalidFetchSessionEpoch,
    ];

    /// The code with this wire value, if this build knows it.
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(value)).copied()
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }

    /// Whether the same request may succeed if retried (possibly after a metadata refresh or
    /// a back-off).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::BrokerShuttingDown
                | ErrorCode::Backpressure
                | ErrorCode::WrongShard
                | ErrorCode::TopicDeletionInProgress
                | ErrorCode::CoordinatorLoading
                | ErrorCode::NotController
                | ErrorCode::NotCoordinator
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::FetchSessionNotFound
                | ErrorCode::InvalidFetchSessionEpoch
        )
    }

    /// A stable name, the variant's own.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "None",
            ErrorCode::Unknown => "Unknown",
            ErrorCode::CorruptBatch => "CorruptBatch",
            ErrorCode::UnknownTopicOrPartition => "UnknownTopicOrPartition",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::BatchTooLarge => "BatchTooLarge",
            ErrorCode::UnsupportedApi => "UnsupportedApi",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::TopicAlreadyExists => "TopicAlreadyExists",
            ErrorCode::InvalidTopicName => "InvalidTopicName",
            ErrorCode::InvalidPartitionCount => "InvalidPartitionCount",
            ErrorCode::InvalidConfig => "InvalidConfig",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::StorageError => "StorageError",
            ErrorCode::NotLeaderOrFollower => "NotLeaderOrFollower",
            ErrorCode::RequestTimedOut => "RequestTimedOut",
            ErrorCode::NotEnoughReplicas => "NotEnoughReplicas",
            ErrorCode::BrokerShuttingDown => "BrokerShuttingDown",
            ErrorCode::Backpressure => "Backpressure",
            ErrorCode::WrongShard => "WrongShard",
            ErrorCode::TopicDeletionInProgress => "TopicDeletionInProgress",
            ErrorCode::InvalidReplicationFactor => "InvalidReplicationFactor",
            ErrorCode::UnknownMemberId => "UnknownMemberId",
            ErrorCode::IllegalGeneration => "IllegalGeneration",
            ErrorCode::GroupNotEmpty => "GroupNotEmpty",
            ErrorCode::InvalidGroupId => "InvalidGroupId",
            ErrorCode::CoordinatorLoading => "CoordinatorLoading",
            ErrorCode::InvalidSessionTimeout => "InvalidSessionTimeout",
            ErrorCode::PartitionNotAssigned => "PartitionNotAssigned",
            ErrorCode::GroupMaxSizeReached => "GroupMaxSizeReached",
            ErrorCode::FencedInstanceId => "FencedInstanceId",
            ErrorCode::InconsistentGroupProtocol => "InconsistentGroupProtocol",
            ErrorCode::OutOfOrderSequence => "OutOfOrderSequence",
            ErrorCode::ProducerFenced => "ProducerFenced",
            ErrorCode::InvalidProducerFields => "InvalidProducerFields",
            ErrorCode::NotController => "NotController",
            ErrorCode::FencedLeaderEpoch => "FencedLeaderEpoch",
            ErrorCode::NotCoordinator => "NotCoordinator",
            ErrorCode::UnknownLeaderEpoch => "UnknownLeaderEpoch",
            ErrorCode::TopicAuthorizationFailed => "TopicAuthorizationFailed",
            ErrorCode::GroupAuthorizationFailed => "GroupAuthorizationFailed",
            ErrorCode::ClusterAuthorizationFailed => "ClusterAuthorizationFailed",
            ErrorCode::SaslAuthenticationFailed => "SaslAuthenticationFailed",
            ErrorCode::AuthenticationRequired => "AuthenticationRequired",
            ErrorCode::IneligibleReplica => "IneligibleReplica",
            ErrorCode::FetchSessionNotFound => "FetchSessionNotFound",
            ErrorCode::InvalidFetchSessionEpoch => "InvalidFetchSessionEpoch",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

// On the wire an error code is its `u16` value, not an rkyv enum (whose check would refuse
// codes added after this build): decoding maps an unknown value to `Unknown`.
impl Archive for ErrorCode {
    type Archived = ArchivedU16;
    type Resolver = ();

    fn resolve(&self, resolver: (), out: Place<Self::Archived>) {
        self.as_u16().resolve(resolver, out);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for ErrorCode {
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

impl<D: Fallible + ?Sized> Deserialize<ErrorCode, D> for ArchivedU16 {
    fn deserialize(&self, _: &mut D) -> Result<ErrorCode, D::Error> {
        Ok(ErrorCode::from_u16(self.to_native()).unwrap_or(ErrorCode::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dense_explicit_and_round_trip() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u16() as usize, index, "{code:?}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(*code));
            assert_eq!(code.to_string(), format!("{} ({index})", code.name()));
        }
        assert_eq!(ErrorCode::from_u16(ErrorCode::ALL.len() as u16), None);
        assert_eq!(ErrorCode::from_u16(u16::MAX), None);
    }

    #[test]
    fn the_documented_codes_are_retriable_and_no_others() {
        let retriable: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|code| code.is_retriable())
            .collect();
        assert_eq!(
            retriable,
            [
                ErrorCode::NotLeaderOrFollower,
                ErrorCode::RequestTimedOut,
                ErrorCode::NotEnoughReplicas,
                ErrorCode::BrokerShuttingDown,
                ErrorCode::Backpressure,
                ErrorCode::WrongShard,
                ErrorCode::TopicDeletionInProgress,
                ErrorCode::CoordinatorLoading,
                ErrorCode::NotController,
                ErrorCode::FencedLeaderEpoch,
                ErrorCode::NotCoordinator,
                ErrorCode::UnknownLeaderEpoch,
                ErrorCode::FetchSessionNotFound,
                ErrorCode::InvalidFetchSessionEpoch,
            ]
        );
    }

    #[test]
    fn unknown_wire_values_decode_as_unknown() {
        let wire = ArchivedU16::from_native(999);
        let code: ErrorCode =
            rkyv::deserialize::<ErrorCode, rkyv::rancor::Error>(&wire).expect("infallible");
        assert_eq!(code, ErrorCode::Unknown);
    }
}
