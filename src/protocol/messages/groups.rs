//! Consumer-group apis (keys 20–28): finding a group's coordinator, membership (join,
//! heartbeat, leave), offsets (commit, fetch, reset) and inspection (list, describe).
//!
//! Membership follows the server-side model: a member joins with its subscription and
//! assignment strategy, then heartbeats. Each heartbeat reports the partitions the member
//! owns right now and is answered with the partitions it should own. The coordinator hands
//! a partition to a member only once no other member reports owning it, so a partition is
//! never owned by two members at once; a member told to give partitions back commits their
//! offsets, stops fetching them, and says so in its next heartbeat.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use super::list_offsets::OffsetSpec;
use crate::constants::{
    COMMIT_METADATA_BYTES_MAX, GROUPS_PER_RESPONSE_MAX, GROUP_MEMBERS_MAX, HOST_BYTES_MAX,
    INSTANCE_ID_BYTES_MAX, MEMBER_ID_BYTES_MAX, PARTITIONS_PER_REQUEST_MAX,
    PARTITIONS_PER_TOPIC_MAX, REBALANCE_TIMEOUT_MS_MAX, REBALANCE_TIMEOUT_MS_MIN,
    SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN, TOPICS_PER_REQUEST_MAX,
};

/// How a group spreads partitions over its members (the wire form of
/// `group::assignor::Strategy`).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum AssignmentStrategy {
    /// Eager: every rebalance takes every partition back, then deals contiguous ranges.
    Range,
    /// Eager: every rebalance takes every partition back, then deals them in turn.
    RoundRobin,
    /// Cooperative: members keep what they can; only moved partitions pause.
    CooperativeSticky,
}

/// Partitions of one topic.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

impl TopicPartitions {
    /// A set of (topic, partition) as per-topic lists, topics and partitions in order.
    pub fn from_set(set: &std::collections::BTreeSet<(String, u32)>) -> Vec<TopicPartitions> {
        let mut lists: Vec<TopicPartitions> = Vec::new();
        for (topic, partition) in set {
            match lists.last_mut() {
                Some(last) if &last.topic == topic => last.partitions.push(*partition),
                _ => lists.push(TopicPartitions {
                    topic: topic.clone(),
                    partitions: vec![*partition],
                }),
            }
        }
        lists
    }

    /// Per-topic lists as one set of (topic, partition).
    pub fn to_set(lists: &[TopicPartitions]) -> std::collections::BTreeSet<(String, u32)> {
        lists
            .iter()
            .flat_map(|entry| {
                entry
                    .partitions
                    .iter()
                    .map(|&partition| (entry.topic.clone(), partition))
            })
            .collect()
    }
}

/// FindCoordinator (api 20): where a group's coordinator runs.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FindCoordinatorRequest {
    pub group: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FindCoordinatorResponse {
    pub error: ErrorCode,
    pub broker_id: u32,
    pub host: String,
    /// The broker's main port (any shard forwards group requests to the coordinator).
    pub port: u16,
    /// The coordinator's shard and that shard's own port (0 if it has none).
    pub shard: u16,
    pub shard_port: u16,
}

/// JoinGroup (api 21): become a member (or rejoin with a known member id).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct JoinGroupRequest {
    pub group: String,
    /// Empty for a new member; a member rejoining after a restart of its own keeps its id.
    pub member_id: String,
    /// A static member's stable id: rejoining with it takes the old member's place (and its
    /// partitions) without a rebalance.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: Vec<String>,
    pub strategy: AssignmentStrategy,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct JoinGroupResponse {
    pub error: ErrorCode,
    pub message: String,
    pub member_id: String,
    pub generation: u32,
    /// How often the member must heartbeat.
    pub heartbeat_interval_ms: u32,
}

/// Heartbeat (api 22): "I am alive and own these partitions"; answered with the partitions
/// the member should own.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatRequest {
    pub group: String,
    pub member_id: String,
    /// The generation the member last heard of.
    pub generation: u32,
    /// What the member owns now.
    pub owned: Vec<TopicPartitions>,
    /// The `assignment_seq` of the last assignment the member acted on (0 before any):
    /// `owned` is exact only once it has acted on the latest one.
    pub acked_assignment: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponse {
    pub error: ErrorCode,
    pub message: String,
    pub generation: u32,
    /// What the member should own now: it gives back what is missing here and takes what
    /// is new. May be short of its target while other members give partitions back.
    pub assignment: Vec<TopicPartitions>,
    /// Identifies this assignment (per member, bumped when it changes).
    pub assignment_seq: u32,
    /// The assignment is the member's whole target: nothing more is coming this
    /// generation. While false, the member heartbeats again soon.
    pub settled: bool,
    pub heartbeat_interval_ms: u32,
}

/// LeaveGroup (api 23): leave at once (its partitions move without waiting for the session
/// timeout).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LeaveGroupRequest {
    pub group: String,
    pub member_id: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LeaveGroupResponse {
    pub error: ErrorCode,
    pub message: String,
}

/// One partition's offset to commit.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommitOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to consume (one past the last processed record).
    pub offset: u64,
    pub metadata: String,
}

/// OffsetCommit (api 24): store where a group has consumed up to. A member commits with its
/// member id and generation, and only for partitions it owns; with an empty member id the
/// commit is accepted only while the group has no members (a standalone consumer or tool).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetCommitRequest {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    pub offsets: Vec<CommitOffset>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommitResult {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetCommitResponse {
    /// A group-level refusal (unknown member, stale generation, storage failure); when set,
    /// nothing was committed.
    pub error: ErrorCode,
    pub message: String,
    /// One per requested offset, in request order.
    pub partitions: Vec<CommitResult>,
}

/// OffsetFetch (api 25): a group's committed offsets.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetFetchRequest {
    pub group: String,
    /// `None`: every partition the group has an offset for.
    pub partitions: Option<Vec<TopicPartitions>>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// `None` when the group has never committed this partition.
    pub offset: Option<u64>,
    pub metadata: String,
    pub commit_time_ms: i64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OffsetFetchResponse {
    pub error: ErrorCode,
    pub message: String,
    pub offsets: Vec<CommittedOffset>,
}

/// ListGroups (api 26): every group the broker coordinates.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ListGroupsRequest {}

/// A group's state as inspection shows it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum GroupState {
    /// No members (offsets may still be stored).
    Empty,
    /// Some member does not yet own its whole target assignment.
    Rebalancing,
    /// Every member owns exactly its target assignment.
    Stable,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupListing {
    pub group: String,
    pub state: GroupState,
    pub members: u32,
    pub strategy: Option<AssignmentStrategy>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ListGroupsResponse {
    pub error: ErrorCode,
    pub groups: Vec<GroupListing>,
}

/// DescribeGroup (api 27): a group's members, assignments, offsets and lag.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeGroupRequest {
    pub group: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: Vec<String>,
    /// What the coordinator wants the member to own.
    pub target: Vec<TopicPartitions>,
    /// What the member last reported owning.
    pub owned: Vec<TopicPartitions>,
    pub last_heartbeat_ms_ago: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    /// -1 when the partition is gone or could not be read.
    pub high_watermark: i64,
    /// `high_watermark - committed` (the whole partition when nothing is committed); -1 when
    /// unknown.
    pub lag: i64,
    /// The member that owns it, if any.
    pub owner: Option<String>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeGroupResponse {
    pub error: ErrorCode,
    pub message: String,
    pub group: String,
    pub state: GroupState,
    pub generation: u32,
    pub strategy: Option<AssignmentStrategy>,
    pub coordinator_shard: u16,
    pub members: Vec<MemberDescription>,
    pub partitions: Vec<PartitionLag>,
}

/// Where `ResetOffsets` moves a group's offsets.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub enum ResetTo {
    /// Earliest, latest or first at a time, as `ListOffsets` resolves them.
    Spec(OffsetSpec),
    /// An explicit offset (clamped to the partition's log start and high watermark).
    Offset(u64),
}

/// ResetOffsets (api 28): move a group's committed offsets of a topic. Only while the group
/// has no members.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResetOffsetsRequest {
    pub group: String,
    pub topic: String,
    /// `None`: every partition of the topic.
    pub partitions: Option<Vec<u32>>,
    pub to: ResetTo,
    /// Report the new offsets without storing them.
    pub dry_run: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResetResult {
    pub partition: u32,
    pub error: ErrorCode,
    pub offset: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResetOffsetsResponse {
    pub error: ErrorCode,
    pub message: String,
    pub partitions: Vec<ResetResult>,
}

// ---------------------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------------------

use rkyv::option::ArchivedOption;
use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;

/// A group id: 1 to `GROUP_ID_BYTES_MAX` bytes of `[a-zA-Z0-9._-]`.
pub fn check_group_id(group: &str) -> Result<(), ProtocolError> {
    use crate::constants::GROUP_ID_BYTES_MAX;
    if group.is_empty() {
        return Err(ProtocolError::InvalidGroupId(
            "the group id is empty".into(),
        ));
    }
    if group.len() > GROUP_ID_BYTES_MAX {
        return Err(ProtocolError::InvalidGroupId(format!(
            "{} bytes, more than {GROUP_ID_BYTES_MAX}",
            group.len()
        )));
    }
    let valid = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if let Some(index) = group.bytes().position(|byte| !valid(byte)) {
        return Err(ProtocolError::InvalidGroupId(format!(
            "byte {:#04x} at {index} is outside [a-zA-Z0-9._-]",
            group.as_bytes()[index]
        )));
    }
    Ok(())
}

fn group(value: &ArchivedString) -> Result<(), ProtocolError> {
    check_group_id(value.as_str())
}

fn member_id(value: &ArchivedString) -> Result<(), ProtocolError> {
    limits::string("member id", value, MEMBER_ID_BYTES_MAX)
}

fn instance_id(value: &ArchivedOption<ArchivedString>) -> Result<(), ProtocolError> {
    match value.as_ref() {
        Some(id) if id.is_empty() => Err(ProtocolError::InvalidValue {
            what: "instance id",
            reason: "empty (omit it instead)".into(),
        }),
        Some(id) => limits::string("instance id", id, INSTANCE_ID_BYTES_MAX),
        None => Ok(()),
    }
}

fn timeout(what: &'static str, value: u32, min_ms: u32, max_ms: u32) -> Result<(), ProtocolError> {
    if !(min_ms..=max_ms).contains(&value) {
        return Err(ProtocolError::InvalidTimeout {
            what,
            value_ms: value,
            min_ms,
            max_ms,
        });
    }
    Ok(())
}

/// Topic-partition lists: at most `TOPICS_PER_REQUEST_MAX` topics, valid names, at most
/// `PARTITIONS_PER_TOPIC_MAX` partitions per topic and `PARTITIONS_PER_REQUEST_MAX` in all.
fn topic_partitions(
    what: &'static str,
    list: &ArchivedVec<ArchivedTopicPartitions>,
) -> Result<(), ProtocolError> {
    limits::count(what, list.len(), TOPICS_PER_REQUEST_MAX)?;
    let mut total = 0usize;
    for entry in list.iter() {
        limits::topic(&entry.topic)?;
        limits::count(what, entry.partitions.len(), PARTITIONS_PER_TOPIC_MAX)?;
        total += entry.partitions.len();
    }
    limits::count(what, total, PARTITIONS_PER_REQUEST_MAX)
}

fn message(value: &ArchivedString) -> Result<(), ProtocolError> {
    limits::message(value)
}

impl CheckArchived for ArchivedFindCoordinatorRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)
    }
}

impl CheckArchived for ArchivedFindCoordinatorResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string("host", &self.host, HOST_BYTES_MAX)
    }
}

impl CheckArchived for ArchivedJoinGroupRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        member_id(&self.member_id)?;
        instance_id(&self.instance_id)?;
        limits::string(
            "client id",
            &self.client_id,
            crate::constants::CLIENT_ID_BYTES_MAX,
        )?;
        limits::topics(&self.topics, TOPICS_PER_REQUEST_MAX)?;
        timeout(
            "session timeout",
            self.session_timeout_ms.to_native(),
            SESSION_TIMEOUT_MS_MIN,
            SESSION_TIMEOUT_MS_MAX,
        )?;
        timeout(
            "rebalance timeout",
            self.rebalance_timeout_ms.to_native(),
            REBALANCE_TIMEOUT_MS_MIN,
            REBALANCE_TIMEOUT_MS_MAX,
        )
    }
}

impl CheckArchived for ArchivedJoinGroupResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        member_id(&self.member_id)
    }
}

impl CheckArchived for ArchivedHeartbeatRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        member_id(&self.member_id)?;
        topic_partitions("owned partitions", &self.owned)
    }
}

impl CheckArchived for ArchivedHeartbeatResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        topic_partitions("assignment", &self.assignment)
    }
}

impl CheckArchived for ArchivedLeaveGroupRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        member_id(&self.member_id)
    }
}

impl CheckArchived for ArchivedLeaveGroupResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)
    }
}

impl CheckArchived for ArchivedOffsetCommitRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        member_id(&self.member_id)?;
        limits::partition_list("committed offsets", &self.offsets, |o| &o.topic)?;
        self.offsets.iter().try_for_each(|offset| {
            limits::string(
                "commit metadata",
                &offset.metadata,
                COMMIT_METADATA_BYTES_MAX,
            )
        })
    }
}

impl CheckArchived for ArchivedOffsetCommitResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        limits::partition_list("commit results", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedOffsetFetchRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        match self.partitions.as_ref() {
            Some(list) => topic_partitions("offset fetch partitions", list),
            None => Ok(()),
        }
    }
}

impl CheckArchived for ArchivedOffsetFetchResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        limits::partition_list("committed offsets", &self.offsets, |o| &o.topic)?;
        self.offsets.iter().try_for_each(|offset| {
            limits::string(
                "commit metadata",
                &offset.metadata,
                COMMIT_METADATA_BYTES_MAX,
            )
        })
    }
}

impl CheckArchived for ArchivedListGroupsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl CheckArchived for ArchivedListGroupsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("groups", self.groups.len(), GROUPS_PER_RESPONSE_MAX)?;
        self.groups
            .iter()
            .try_for_each(|listing| group(&listing.group))
    }
}

impl CheckArchived for ArchivedDescribeGroupRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)
    }
}

impl CheckArchived for ArchivedDescribeGroupResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        limits::string(
            "group id",
            &self.group,
            crate::constants::GROUP_ID_BYTES_MAX,
        )?;
        limits::count("members", self.members.len(), GROUP_MEMBERS_MAX)?;
        for member in self.members.iter() {
            member_id(&member.member_id)?;
            instance_id(&member.instance_id)?;
            limits::topics(&member.topics, TOPICS_PER_REQUEST_MAX)?;
            topic_partitions("member target", &member.target)?;
            topic_partitions("member owned", &member.owned)?;
        }
        limits::partition_list("group partitions", &self.partitions, |p| &p.topic)
    }
}

impl CheckArchived for ArchivedResetOffsetsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        group(&self.group)?;
        limits::topic(&self.topic)?;
        match self.partitions.as_ref() {
            Some(list) => limits::count("reset partitions", list.len(), PARTITIONS_PER_TOPIC_MAX),
            None => Ok(()),
        }
    }
}

impl CheckArchived for ArchivedResetOffsetsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        message(&self.message)?;
        limits::count(
            "reset results",
            self.partitions.len(),
            PARTITIONS_PER_TOPIC_MAX,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_follow_the_topic_name_rules() {
        for good in ["g", "orders-readers", "a.b_c-D9"] {
            assert_eq!(check_group_id(good), Ok(()), "{good}");
        }
        let long = "g".repeat(crate::constants::GROUP_ID_BYTES_MAX + 1);
        for bad in ["", "a b", "x/y", "é", long.as_str()] {
            assert!(
                matches!(check_group_id(bad), Err(ProtocolError::InvalidGroupId(_))),
                "{bad}"
            );
        }
    }
}
