//! The body of every request and response: one rkyv struct each, one file per api.
//!
//! The structs are plain owned data (what `decode_*` returns and `encode_*` takes); rkyv
//! derives their archived forms, whose layouts are the wire format of version 0 of each api.
//! Each archived form has a `CheckArchived` impl with the semantic limits it must meet.

mod acls;
mod cluster;
mod configs;
mod error_response;
mod fetch;
mod groups;
mod handshake;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod quotas;
mod replica_fetch;
mod topics;
mod users;

pub use acls::{
    Acl, AclOperation, AlterAclsRequest, AlterAclsResponse, ArchivedAcl, DescribeAclsRequest,
    DescribeAclsResponse, ResourceKind,
};
pub use cluster::{
    DescribeClusterRequest, DescribeClusterResponse, ElectLeaderRequest, ElectLeaderResponse,
    NodeStatus, ReassignPartitionRequest, ReassignPartitionResponse,
};
pub use configs::{
    AlterConfigsRequest, AlterConfigsResponse, AlterConfigsResult, AlterTopicConfigs,
    ArchivedConfigEntry, ConfigEntry, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribedConfigEntry, TopicConfigs,
};
pub use error_response::ErrorResponse;
pub use fetch::{
    next_session_epoch, FetchPartition, FetchPartitionResponse, FetchRequest, FetchRequestV0,
    FetchResponse, FetchResponseV0, ForgottenPartition, IsolationLevel, SESSIONLESS_EPOCH,
};
pub use groups::{
    check_group_id, AssignmentStrategy, CommitOffset, CommitResult, CommittedOffset,
    DescribeGroupRequest, DescribeGroupResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupListing, GroupState, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, MemberDescription, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, PartitionLag, ResetOffsetsRequest,
    ResetOffsetsResponse, ResetResult, ResetTo, TopicPartitions,
};
pub use handshake::{ApiVersionRange, HandshakeRequest, HandshakeResponse};
pub use list_offsets::{
    ListOffsetsPartition, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetSpec,
};
pub use metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};
pub use produce::{
    Acks, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse,
};
pub use producer_id::{InitProducerIdRequest, InitProducerIdResponse};
pub use quotas::{
    AlterQuotasRequest, AlterQuotasResponse, DescribeQuotasRequest, DescribeQuotasResponse, Quota,
    QuotaEntity, QuotaEntityKind,
};
pub use replica_fetch::{
    EpochAnswer, EpochQuery, OffsetsForLeaderEpochRequest, OffsetsForLeaderEpochResponse,
    ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResponse,
};
pub use topics::{
    CreatableTopic, CreateTopicResult, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicResult, DeleteTopicsRequest, DeleteTopicsResponse,
};
pub use users::{
    AlterUsersRequest, AlterUsersResponse, DescribeUsersRequest, DescribeUsersResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, UserCredential, UserListing,
};

use super::api::ApiKey;

/// Declares the `Request` or `Response` enum, its `api_key`, and a `From` per body type.
macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident($body:ty),)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant($body),)*
        }

        impl $name {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $($name::$variant(_) => ApiKey::$variant,)*
                }
            }
        }

        $(
            impl From<$body> for $name {
                fn from(body: $body) -> $name {
                    $name::$variant(body)
                }
            }
        )*
    };
}

message_enum! {
    /// Any request, by api.
    Request {
        Handshake(HandshakeRequest),
        Metadata(MetadataRequest),
        Produce(ProduceRequest),
        Fetch(FetchRequest),
        ListOffsets(ListOffsetsRequest),
        CreateTopics(CreateTopicsRequest),
        DeleteTopics(DeleteTopicsRequest),
        DescribeConfigs(DescribeConfigsRequest),
        AlterConfigs(AlterConfigsRequest),
        InitProducerId(InitProducerIdRequest),
        FindCoordinator(FindCoordinatorRequest),
        JoinGroup(JoinGroupRequest),
        Heartbeat(HeartbeatRequest),
        LeaveGroup(LeaveGroupRequest),
        OffsetCommit(OffsetCommitRequest),
        OffsetFetch(OffsetFetchRequest),
        ListGroups(ListGroupsRequest),
        DescribeGroup(DescribeGroupRequest),
        ResetOffsets(ResetOffsetsRequest),
        ReplicaFetch(ReplicaFetchRequest),
        DescribeCluster(DescribeClusterRequest),
        ElectLeader(ElectLeaderRequest),
        OffsetsForLeaderEpoch(OffsetsForLeaderEpochRequest),
        ReassignPartition(ReassignPartitionRequest),
        AlterAcls(AlterAclsRequest),
        DescribeAcls(DescribeAclsRequest),
        SaslAuthenticate(SaslAuthenticateRequest),
        AlterUsers(AlterUsersRequest),
        DescribeUsers(DescribeUsersRequest),
        AlterQuotas(AlterQuotasRequest),
        DescribeQuotas(DescribeQuotasRequest),
    }
}

message_enum! {
    /// Any response, by api; `Error` answers a request that could not be decoded.
    Response {
        Handshake(HandshakeResponse),
        Metadata(MetadataResponse),
        Produce(ProduceResponse),
        Fetch(FetchResponse),
        ListOffsets(ListOffsetsResponse),
        CreateTopics(CreateTopicsResponse),
        DeleteTopics(DeleteTopicsResponse),
        DescribeConfigs(DescribeConfigsResponse),
        AlterConfigs(AlterConfigsResponse),
        InitProducerId(InitProducerIdResponse),
        FindCoordinator(FindCoordinatorResponse),
        JoinGroup(JoinGroupResponse),
        Heartbeat(HeartbeatResponse),
        LeaveGroup(LeaveGroupResponse),
        OffsetCommit(OffsetCommitResponse),
        OffsetFetch(OffsetFetchResponse),
        ListGroups(ListGroupsResponse),
        DescribeGroup(DescribeGroupResponse),
        ResetOffsets(ResetOffsetsResponse),
        ReplicaFetch(ReplicaFetchResponse),
        DescribeCluster(DescribeClusterResponse),
        ElectLeader(ElectLeaderResponse),
        OffsetsForLeaderEpoch(OffsetsForLeaderEpochResponse),
        ReassignPartition(ReassignPartitionResponse),
        AlterAcls(AlterAclsResponse),
        DescribeAcls(DescribeAclsResponse),
        SaslAuthenticate(SaslAuthenticateResponse),
        AlterUsers(AlterUsersResponse),
        DescribeUsers(DescribeUsersResponse),
        AlterQuotas(AlterQuotasResponse),
        DescribeQuotas(DescribeQuotasResponse),
        Error(ErrorResponse),
    }
}
