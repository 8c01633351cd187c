//! Api keys, the versions this build speaks, and version negotiation.
//!
//! Every frame names its api (a `u16` key) and that api's version. Each api's body layout is
//! fixed per version: a change to a body is a new version, and a broker keeps decoding every
//! version in its range. The handshake (api 0) exchanges the ranges; each side then uses the
//! highest version both support (`negotiate`). Handshake version 0 is never dropped, so a
//! client can always start a conversation.
//!
//! Key ranges:
//!
//! ```text
//!  0 ..=  8   data plane and topic admin (below)
//!  9 ..= 19   reserved: further data-plane and admin apis
//! 20 ..= 28   consumer groups (find coordinator, join, heartbeat, leave, offset commit,
//!             offset fetch, list, describe, reset offsets)
//! 29 ..= 39   reserved: further group apis
//! 40 ..= 59   reserved: replication and cluster (follower fetch, leader epochs, controller)
//! 0xFFFF      ErrorResponse: a response-only key, never a request
//! ```

use std::fmt;

use super::messages::ApiVersionRange;

/// Which request or response a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ApiKey {
    /// Client id and supported versions in, broker id and supported versions out.
    Handshake = 0,
    /// Brokers, shards, topics, partitions and leaders.
    Metadata = 1,
    /// Record batches in (in the frame trailer), base offsets out.
    Produce = 2,
    /// Positions in, record batches out (in the frame trailer).
    Fetch = 3,
    /// Earliest, latest or by-timestamp offsets of partitions.
    ListOffsets = 4,
    CreateTopics = 5,
    DeleteTopics = 6,
    DescribeConfigs = 7,
    AlterConfigs = 8,
    /// A new idempotent producer id and epoch.
    InitProducerId = 9,
    /// Which broker and shard coordinate a consumer group.
    FindCoordinator = 20,
    /// Become a member of a consumer group.
    JoinGroup = 21,
    /// A member's liveness and owned partitions in, its assignment out.
    Heartbeat = 22,
    /// Leave a group at once.
    LeaveGroup = 23,
    /// Store a group's consumed offsets.
    OffsetCommit = 24,
    /// A group's committed offsets.
    OffsetFetch = 25,
    /// Every group this broker coordinates.
    ListGroups = 26,
    /// A group's members, assignments, offsets and lag.
    DescribeGroup = 27,
    /// Move an empty group's offsets (earliest, latest, time, offset).
    ResetOffsets = 28,
    /// A follower's fetch from the leader shard (batches out in the trailer, like Fetch).
    ReplicaFetch = 40,
    /// The controller quorum and the brokers' liveness.
    DescribeCluster = 41,
    /// Move a partition's leadership to another in-sync replica.
    ElectLeader = 42,
    /// Where a follower's last leader epoch ends on the leader (truncation after failover).
    OffsetsForLeaderEpoch = 43,
    /// Move a partition's replicas to other brokers.
    ReassignPartition = 44,
    /// Add and remove access rules (through the controller).
    AlterAcls = 45,
    /// The access rules.
    DescribeAcls = 46,
    /// One step of a SCRAM-SHA-256 exchange.
    SaslAuthenticate = 47,
    /// Store and remove users' salted credentials (through the controller).
    AlterUsers = 48,
    /// The users.
    DescribeUsers = 49,
    /// Set or remove byte-rate quotas (through the controller).
    AlterQuotas = 50,
    /// The quotas.
    DescribeQuotas = 51,
    /// The answer to a request that could not be decoded (unknown api, unsupported version,
    /// invalid body): an `ErrorResponse` with the request's correlation id. Response-only.
    Error = 0xFFFF,
}

impl ApiKey {
    /// Every api a client may send, in key order.
    pub const REQUESTS: [ApiKey; 31] = [
        ApiKey::Handshake,
        ApiKey::Metadata,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::DescribeConfigs,
        ApiKey::AlterConfigs,
        ApiKey::InitProducerId,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroup,
        ApiKey::ResetOffsets,
        ApiKey::ReplicaFetch,
        ApiKey::DescribeCluster,
        ApiKey::ElectLeader,
        ApiKey::OffsetsForLeaderEpoch,
        ApiKey::ReassignPartition,
        ApiKey::AlterAcls,
        ApiKey::DescribeAcls,
        ApiKey::SaslAuthenticate,
        ApiKey::AlterUsers,
        ApiKey::DescribeUsers,
        ApiKey::AlterQuotas,
        ApiKey::DescribeQuotas,
    ];

    /// The key with this wire value, if this build knows it (including the response-only
    /// `Error`).
    pub fn from_u16(value: u16) -> Option<ApiKey> {
        if value == ApiKey::Error as u16 {
            return Some(ApiKey::Error);
        }
        ApiKey::REQUESTS
            .iter()
            .find(|api| api.as_u16() == value)
            .copied()
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether a client may send this api (everything but `Error`).
    pub fn is_request(self) -> bool {
        self != ApiKey::Error
    }

    /// The versions of this api this build encodes and decodes.
    pub fn versions(self) -> VersionRange {
        match self {
            ApiKey::Handshake
            | ApiKey::Metadata
            | ApiKey::Produce
            | ApiKey::ListOffsets
            | ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::DescribeConfigs
            | ApiKey::AlterConfigs
            | ApiKey::InitProducerId
            | ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
            | ApiKey::ResetOffsets
            | ApiKey::ReplicaFetch
            | ApiKey::DescribeCluster
            | ApiKey::ElectLeader
            | ApiKey::OffsetsForLeaderEpoch
            | ApiKey::ReassignPartition
            | ApiKey::AlterAcls
            | ApiKey::DescribeAcls
            | ApiKey::SaslAuthenticate
            | ApiKey::AlterUsers
            | ApiKey::DescribeUsers
            | ApiKey::AlterQuotas
            | ApiKey::DescribeQuotas
            | ApiKey::Error => VersionRange { min: 0, max: 0 },
            // 1 added fetch sessions (`messages::fetch`).
            ApiKey::Fetch => VersionRange { min: 0, max: 1 },
        }
    }

    /// Whether requests of this api carry record batches in the frame trailer.
    pub fn request_has_trailer(self) -> bool {
        self == ApiKey::Produce
    }

    /// Whether responses of this api carry record batches in the frame trailer.
    pub fn response_has_trailer(self) -> bool {
        matches!(self, ApiKey::Fetch | ApiKey::ReplicaFetch)
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiKey::Handshake => "Handshake",
            ApiKey::Metadata => "Metadata",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::CreateTopics => "CreateTopics",
            ApiKey::DeleteTopics => "DeleteTopics",
            ApiKey::DescribeConfigs => "DescribeConfigs",
            ApiKey::AlterConfigs => "AlterConfigs",
            ApiKey::InitProducerId => "InitProducerId",
            ApiKey::FindCoordinator => "FindCoordinator",
            ApiKey::JoinGroup => "JoinGroup",
            ApiKey::Heartbeat => "Heartbeat",
            ApiKey::LeaveGroup => "LeaveGroup",
            ApiKey::OffsetCommit => "OffsetCommit",
            ApiKey::OffsetFetch => "OffsetFetch",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::DescribeGroup => "DescribeGroup",
            ApiKey::ResetOffsets => "ResetOffsets",
            ApiKey::ReplicaFetch => "ReplicaFetch",
            ApiKey::DescribeCluster => "DescribeCluster",
            ApiKey::ElectLeader => "ElectLeader",
            ApiKey::OffsetsForLeaderEpoch => "OffsetsForLeaderEpoch",
            ApiKey::ReassignPartition => "ReassignPartition",
            ApiKey::AlterAcls => "AlterAcls",
            ApiKey::DescribeAcls => "DescribeAcls",
            ApiKey::SaslAuthenticate => "SaslAuthenticate",
            ApiKey::AlterUsers => "AlterUsers",
            ApiKey::DescribeUsers => "DescribeUsers",
            ApiKey::AlterQuotas => "AlterQuotas",
            ApiKey::DescribeQuotas => "DescribeQuotas",
            ApiKey::Error => "Error",
        }
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An inclusive range of versions of one api.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub min: u16,
    pub max: u16,
}

impl VersionRange {
    pub fn contains(self, version: u16) -> bool {
        self.min <= version && version <= self.max
    }

    /// The highest version in both ranges, if they overlap.
    pub fn highest_common(self, other: VersionRange) -> Option<u16> {
        let max = self.max.min(other.max);
        let min = self.min.max(other.min);
        (min <= max).then_some(max)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// The version ranges this build supports, one per request api: what a handshake announces.
pub fn supported_apis() -> Vec<ApiVersionRange> {
    ApiKey::REQUESTS
        .iter()
        .map(|&api| ApiVersionRange::new(api, api.versions()))
        .collect()
}

/// The version to use for each api both sides support. Built by `negotiate`; owned by one
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedVersions {
    /// Indexed like `ApiKey::REQUESTS`.
    versions: [Option<u16>; ApiKey::REQUESTS.len()],
}

impl NegotiatedVersions {
    /// The version to send `api` at, or `None` if the peer supports no version this build
    /// speaks (or `api` is `Error`, which is never negotiated).
    pub fn version(&self, api: ApiKey) -> Option<u16> {
        let index = ApiKey::REQUESTS.iter().position(|&known| known == api)?;
        self.versions[index]
    }
}

/// For every request api, the highest version in both `ours` and `theirs`. Entries for api
/// keys this build does not know, and ranges with `min > max`, are ignored; if an api is
/// listed twice, its first entry counts.
pub fn negotiate(ours: &[ApiVersionRange], theirs: &[ApiVersionRange]) -> NegotiatedVersions {
    let find = |ranges: &[ApiVersionRange], api: ApiKey| {
        ranges
            .iter()
            .find(|range| range.api_key == api.as_u16())
            .map(|range| range.range())
            .filter(|range| range.min <= range.max)
    };
    let mut versions = [None; ApiKey::REQUESTS.len()];
    for (slot, &api) in versions.iter_mut().zip(ApiKey::REQUESTS.iter()) {
        *slot = match (find(ours, api), find(theirs, api)) {
            (Some(ours), Some(theirs)) => ours.highest_common(theirs),
            _ => None,
        };
    }
    NegotiatedVersions { versions }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(api: ApiKey, min: u16, max: u16) -> ApiVersionRange {
        ApiVersionRange {
            api_key: api.as_u16(),
            min_version: min,
            max_version: max,
        }
    }

    #[test]
    fn keys_round_trip_and_request_keys_are_dense() {
        for (index, api) in ApiKey::REQUESTS.iter().enumerate() {
            let expected = match index {
                0..=9 => index,
                10..=18 => index - 10 + 20,
                _ => index - 19 + 40,
            };
            assert_eq!(api.as_u16() as usize, expected);
            assert_eq!(ApiKey::from_u16(api.as_u16()), Some(*api));
            assert!(api.is_request());
            assert!(api.versions().contains(0), "{api}: version 0 is kept");
        }
        assert_eq!(ApiKey::from_u16(0xFFFF), Some(ApiKey::Error));
        assert!(!ApiKey::Error.is_request());
        assert_eq!(ApiKey::from_u16(10), None);
        assert_eq!(ApiKey::from_u16(19), None);
        assert_eq!(ApiKey::from_u16(29), None);
    }

    #[test]
    fn highest_common_version_is_chosen() {
        let a = VersionRange { min: 1, max: 5 };
        assert_eq!(a.highest_common(VersionRange { min: 3, max: 9 }), Some(5));
        assert_eq!(a.highest_common(VersionRange { min: 0, max: 2 }), Some(2));
        assert_eq!(a.highest_common(VersionRange { min: 5, max: 5 }), Some(5));
        assert_eq!(a.highest_common(VersionRange { min: 6, max: 9 }), None);
        assert_eq!(a.highest_common(VersionRange { min: 0, max: 0 }), None);
    }

    #[test]
    fn negotiation_picks_the_highest_common_version_per_api() {
        let ours = [
            range(ApiKey::Handshake, 0, 3),
            range(ApiKey::Produce, 0, 2),
            range(ApiKey::Fetch, 2, 4),
            range(ApiKey::Metadata, 0, 1),
        ];
        let theirs = [
            range(ApiKey::Handshake, 0, 1),
            range(ApiKey::Produce, 1, 7),
            range(ApiKey::Fetch, 0, 1),
            range(ApiKey::Metadata, 1, 0), // min > max: ignored
            ApiVersionRange {
                api_key: 33,
                min_version: 0,
                max_version: 9,
            },
            range(ApiKey::Produce, 0, 0), // duplicate: the first entry counts
        ];
        let negotiated = negotiate(&ours, &theirs);
        assert_eq!(negotiated.version(ApiKey::Handshake), Some(1));
        assert_eq!(negotiated.version(ApiKey::Produce), Some(2));
        assert_eq!(negotiated.version(ApiKey::Fetch), None);
        assert_eq!(negotiated.version(ApiKey::Metadata), None);
        assert_eq!(negotiated.version(ApiKey::ListOffsets), None);
        assert_eq!(negotiated.version(ApiKey::Error), None);
    }

    #[test]
    fn this_build_negotiates_every_api_with_itself() {
        let negotiated = negotiate(&supported_apis(), &supported_apis());
        for api in ApiKey::REQUESTS {
            assert_eq!(negotiated.version(api), Some(api.versions().max), "{api}");
        }
    }
}
