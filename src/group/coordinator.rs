//! A shard's group coordinator: the groups whose offsets partition this shard owns, and
//! those partitions of the offsets log.
//!
//! Placement: a group's offsets live in partition `crc32c(group) % OFFSETS_PARTITIONS` of
//! the offsets log, and its coordinator is the shard that owns that partition (placed like
//! any partition, by `shard_of`). The coordinator knows nothing of the network; the server
//! hands it decoded requests, the clock and the topics' partition counts.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::assignor::{Strategy, TopicPartition};
use super::membership::{Group, GroupError, JoinRequest};
use super::offsets::OffsetRecord;
use super::offsets_log::OffsetLog;
use super::request::{CoordinatorError, OffsetLogError};
use crate::clock::ClockRef;
use crate::constants::{GROUPS_PER_SHARD_MAX, HEARTBEATS_PER_SESSION, HEARTBEAT_INTERVAL_MS_MAX};
use crate::log::PartitionLog;
use crate::protocol::{
    AssignmentStrategy, CommitResult, CommittedOffset, ErrorCode, GroupListing, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    MemberDescription, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicPartitions,
};
use crate::shard::Ownership;

fn offsets_partition(group: &str) -> u32 {
    Ownership::offsets_partition(group)
}

pub fn strategy_from_wire(strategy: AssignmentStrategy) -> Strategy {
    match strategy {
        AssignmentStrategy::Range => Strategy::Range,
        AssignmentStrategy::RoundRobin => Strategy::RoundRobin,
        AssignmentStrategy::CooperativeSticky => Strategy::CooperativeSticky,
    }
}

pub fn strategy_to_wire(strategy: Strategy) -> AssignmentStrategy {
    match strategy {
        Strategy::Range => AssignmentStrategy::Range,
        Strategy::RoundRobin => AssignmentStrategy::RoundRobin,
        Strategy::CooperativeSticky => AssignmentStrategy::CooperativeSticky,
    }
}

/// Owned by one shard.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    logs: RefCell<BTreeMap<u32, Rc<OffsetLog>>>,
    loaded: Cell<bool>,
    next_member: Cell<u64>,
    /// Makes member ids unique across broker restarts.
    member_id_prefix: String,
    /// Sessions, timeouts and commit times are read from it.
    clock: ClockRef,
}

impl Coordinator {
    pub fn new(shard_id: usize, clock: ClockRef) -> Coordinator {
        let started = clock.wall_ms();
        Coordinator {
            clock,
            groups: RefCell::new(HashMap::new()),
            logs: RefCell::new(BTreeMap::new()),
            loaded: Cell::new(false),
            next_member: Cell::new(0),
            member_id_prefix: format!("{:x}-{shard_id}", started),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.get()
    }

    /// Takes over partition `partition` of the offsets log, which this shard now leads:
    /// replays it into the offset table. Groups of that partition are coordinated here
    /// from now on (members join again: membership is not in the log).
    pub async fn adopt(&self, partition: u32, log: PartitionLog) -> Result<(), OffsetLogError> {
        let started = Instant::now();
        self.abandon(partition);
        let (log, stats) = OffsetLog::adopt(log).await?;
        if stats.skipped > 0 {
            tracing::warn!(partition, skipped = stats.skipped, "offset records skipped");
        }
        self.logs.borrow_mut().insert(partition, Rc::new(log));
        tracing::info!(partition, entries = stats.entries, elapsed = ?started.elapsed(), "coordinating the groups of an offsets partition");
        Ok(())
    }

    /// Gives up partition `partition` of the offsets log (another broker leads it now):
    /// its groups are forgotten here.
    pub fn abandon(&self, partition: u32) {
        if self.logs.borrow_mut().remove(&partition).is_some() {
            self.groups
                .borrow_mut()
                .retain(|name, _| offsets_partition(name) != partition);
            tracing::info!(partition, "no longer coordinating an offsets partition");
        }
    }

    /// Whether this shard coordinates `group` (leads its offsets partition).
    pub fn coordinates(&self, group: &str) -> bool {
        self.log_for(group).is_some()
    }

    /// The shard has applied its first catalogue: it knows what it coordinates.
    pub fn mark_loaded(&self) {
        self.loaded.set(true);
    }

    fn log_for(&self, group: &str) -> Option<Rc<OffsetLog>> {
        self.logs.borrow().get(&offsets_partition(group)).cloned()
    }

    fn new_member_id(&self) -> String {
        let next = self.next_member.get() + 1;
        self.next_member.set(next);
        format!("m-{}-{next}", self.member_id_prefix)
    }

    fn heartbeat_interval_ms(session_timeout_ms: u32) -> u32 {
        (session_timeout_ms / HEARTBEATS_PER_SESSION).clamp(1, HEARTBEAT_INTERVAL_MS_MAX)
    }

    pub fn join(
        &self,
        request: JoinGroupRequest,
        counts: &BTreeMap<String, u32>,
    ) -> JoinGroupResponse {
        let refused = |error: GroupError| JoinGroupResponse {
            error: error.code,
            message: error.message,
            member_id: String::new(),
            generation: 0,
            heartbeat_interval_ms: 0,
        };
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(&request.group) && groups.len() >= GROUPS_PER_SHARD_MAX {
            return refused(GroupError {
                code: ErrorCode::Backpressure,
                message: format!("this coordinator holds {GROUPS_PER_SHARD_MAX} groups"),
            });
        }
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(&request.group));
        let join = JoinRequest {
            member_id: request.member_id,
            instance_id: request.instance_id,
            client_id: request.client_id,
            topics: request.topics.into_iter().collect(),
            strategy: strategy_from_wire(request.strategy),
            session_timeout: Duration::from_millis(u64::from(request.session_timeout_ms)),
            rebalance_timeout: Duration::from_millis(u64::from(request.rebalance_timeout_ms)),
        };
        match group.join(join, self.clock.now(), counts, || self.new_member_id()) {
            Ok(member_id) => {
                tracing::info!(group = %request.group, %member_id, generation = group.generation, members = group.members.len(), "member joined");
                JoinGroupResponse {
                    error: ErrorCode::None,
                    message: String::new(),
                    member_id,
                    generation: group.generation,
                    heartbeat_interval_ms: Self::heartbeat_interval_ms(request.session_timeout_ms),
                }
            }
            Err(error) => refused(error),
        }
    }

    pub fn heartbeat(
        &self,
        request: HeartbeatRequest,
        counts: &BTreeMap<String, u32>,
    ) -> HeartbeatResponse {
        let refused = |error: GroupError| HeartbeatResponse {
            error: error.code,
            message: error.message,
            generation: 0,
            assignment: Vec::new(),
            assignment_seq: 0,
            settled: false,
            heartbeat_interval_ms: 0,
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.group) else {
            return refused(GroupError {
                code: ErrorCode::UnknownMemberId,
                message: format!("group {} has no members", request.group),
            });
        };
        let owned = TopicPartitions::to_set(&request.owned);
        let session_ms = group
            .members
            .get(&request.member_id)
            .map(|m| m.session_timeout.as_millis() as u32)
            .unwrap_or(0);
        match group.heartbeat(
            &request.member_id,
            request.generation,
            owned,
            request.acked_assignment,
            self.clock.now(),
            counts,
        ) {
            Ok(outcome) => HeartbeatResponse {
                error: ErrorCode::None,
                message: String::new(),
                generation: outcome.generation,
                assignment: TopicPartitions::from_set(&outcome.assignment),
                assignment_seq: outcome.assignment_seq,
                settled: outcome.settled,
                heartbeat_interval_ms: Self::heartbeat_interval_ms(session_ms),
            },
            Err(error) => refused(error),
        }
    }

    pub fn leave(
        &self,
        request: LeaveGroupRequest,
        counts: &BTreeMap<String, u32>,
    ) -> LeaveGroupResponse {
        let mut groups = self.groups.borrow_mut();
        let result = match groups.get_mut(&request.group) {
            Some(group) => group.leave(&request.member_id, counts),
            None => Err(GroupError {
                code: ErrorCode::UnknownMemberId,
                message: format!("group {} has no members", request.group),
            }),
        };
        match result {
            Ok(()) => {
                tracing::info!(group = %request.group, member_id = %request.member_id, "member left");
                LeaveGroupResponse {
                    error: ErrorCode::None,
                    message: String::new(),
                }
            }
            Err(error) => LeaveGroupResponse {
                error: error.code,
                message: error.message,
            },
        }
    }

    /// Removes members past their timeouts, in every group; drops groups with neither
    /// members nor offsets. `counts_of` gives the partition counts of a set of topics.
    pub fn sweep(&self, counts_of: impl Fn(&BTreeSet<String>) -> BTreeMap<String, u32>) {
        let now = self.clock.now();
        let mut groups = self.groups.borrow_mut();
        for group in groups.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let counts = counts_of(&group.subscribed_topics());
            for member_id in group.expire(now, &counts) {
                tracing::info!(group = %group.name, %member_id, generation = group.generation, "member removed: session or rebalance timeout");
            }
        }
        let logs = self.logs.borrow();
        groups.retain(|name, group| {
            !group.members.is_empty()
                || logs
                    .get(&offsets_partition(name))
                    .is_some_and(|log| log.table().contains_group(name))
        });
    }

    /// Checks a commit against the group (fencing), writes the accepted offsets durably,
    /// then answers. A group-level refusal commits nothing.
    /// `counts` has the partition count of every existing topic the request names.
    pub async fn commit(
        &self,
        request: OffsetCommitRequest,
        counts: &BTreeMap<String, u32>,
    ) -> OffsetCommitResponse {
        let refused = |code: ErrorCode, message: String| OffsetCommitResponse {
            error: code,
            message,
            partitions: Vec::new(),
        };
        let Some(log) = self.log_for(&request.group) else {
            return refused(
                ErrorCode::NotCoordinator,
                "this shard does not coordinate the group".into(),
            );
        };
        let mut results = Vec::with_capacity(request.offsets.len());
        let mut records = Vec::new();
        {
            let groups = self.groups.borrow();
            let group = groups.get(&request.group);
            if group.is_none() && !request.member_id.is_empty() {
                return refused(
                    ErrorCode::UnknownMemberId,
                    format!("group {} has no members", request.group),
                );
            }
            let table = log.table();
            let new_group = group.is_none() && !table.contains_group(&request.group);
            if new_group && table.group_count() + groups.len() >= GROUPS_PER_SHARD_MAX {
                return refused(
                    ErrorCode::Backpressure,
                    format!("this coordinator holds {GROUPS_PER_SHARD_MAX} groups"),
                );
            }
            drop(table);
            let now_ms = self.clock.wall_ms();
            for offset in &request.offsets {
                let key = (offset.topic.clone(), offset.partition);
                let exists = counts
                    .get(&offset.topic)
                    .is_some_and(|&count| offset.partition < count);
                let checked = match group {
                    _ if !exists => Err(GroupError {
                        code: ErrorCode::UnknownTopicOrPartition,
                        message: format!("no partition {}/{}", offset.topic, offset.partition),
                    }),
                    Some(group) => group.check_commit(&request.member_id, request.generation, &key),
                    None => Ok(()),
                };
                let error = match checked {
                    Ok(()) => {
                        records.push(OffsetRecord {
                            group: request.group.clone(),
                            topic: offset.topic.clone(),
                            partition: offset.partition,
                            offset: offset.offset,
                            metadata: offset.metadata.clone(),
                            commit_time_ms: now_ms,
                        });
                        ErrorCode::None
                    }
                    Err(error)
                        if matches!(
                            error.code,
                            ErrorCode::UnknownMemberId
                                | ErrorCode::FencedInstanceId
                                | ErrorCode::IllegalGeneration
                        ) =>
                    {
                        return refused(error.code, error.message);
                    }
                    Err(error) => error.code,
                };
                results.push(CommitResult {
                    topic: offset.topic.clone(),
                    partition: offset.partition,
                    error,
                });
            }
        }
        if let Err(error) = log.commit(records).await {
            tracing::warn!(group = %request.group, %error, "offset commit failed");
            return refused(ErrorCode::StorageError, error.to_string());
        }
        if log.snapshot_due() {
            glommio::spawn_local(async move {
                if let Err(error) = log.snapshot().await {
                    tracing::warn!(%error, "offsets snapshot failed");
                }
            })
            .detach();
        }
        OffsetCommitResponse {
            error: ErrorCode::None,
            message: String::new(),
            partitions: results,
        }
    }

    pub fn fetch_offsets(&self, request: OffsetFetchRequest) -> OffsetFetchResponse {
        let Some(log) = self.log_for(&request.group) else {
            return OffsetFetchResponse {
                error: ErrorCode::NotCoordinator,
                message: "this shard does not coordinate the group".into(),
                offsets: Vec::new(),
            };
        };
        let table = log.table();
        let entry = |topic: &str, partition: u32| {
            let committed = table.get(&request.group, topic, partition);
            CommittedOffset {
                topic: topic.to_string(),
                partition,
                offset: committed.map(|c| c.offset),
                metadata: committed.map(|c| c.metadata.clone()).unwrap_or_default(),
                commit_time_ms: committed.map(|c| c.commit_time_ms).unwrap_or(-1),
            }
        };
        let offsets = match &request.partitions {
            Some(lists) => TopicPartitions::to_set(lists)
                .iter()
                .map(|(topic, partition)| entry(topic, *partition))
                .collect(),
            None => table
                .group(&request.group)
                .map(|all| {
                    all.keys()
                        .map(|(topic, partition)| entry(topic, *partition))
                        .collect()
                })
                .unwrap_or_default(),
        };
        OffsetFetchResponse {
            error: ErrorCode::None,
            message: String::new(),
            offsets,
        }
    }

    /// Every group this shard coordinates (members, or stored offsets).
    pub fn list(&self) -> Vec<GroupListing> {
        let groups = self.groups.borrow();
        let mut names: BTreeSet<String> = groups.keys().cloned().collect();
        for log in self.logs.borrow().values() {
            names.extend(log.table().groups().cloned());
        }
        names
            .into_iter()
            .map(|name| match groups.get(&name) {
                Some(group) => GroupListing {
                    state: group.state(),
                    members: group.members.len() as u32,
                    strategy: group.strategy.map(strategy_to_wire),
                    group: name,
                },
                None => GroupListing {
                    group: name,
                    state: crate::protocol::GroupState::Empty,
                    members: 0,
                    strategy: None,
                },
            })
            .collect()
    }

    /// A group's membership and committed offsets (the server adds high watermarks).
    pub fn describe(&self, group_name: &str) -> Option<GroupSnapshot> {
        let groups = self.groups.borrow();
        let group = groups.get(group_name);
        let committed: BTreeMap<TopicPartition, u64> = self
            .log_for(group_name)
            .and_then(|log| {
                log.table().group(group_name).map(|all| {
                    all.iter()
                        .map(|(key, committed)| (key.clone(), committed.offset))
                        .collect()
                })
            })
            .unwrap_or_default();
        if group.is_none() && committed.is_empty() {
            return None;
        }
        let now = Instant::now();
        let members = group
            .map(|group| {
                group
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        target: TopicPartitions::from_set(&m.target),
                        owned: TopicPartitions::from_set(&m.owned),
                        last_heartbeat_ms_ago: now
                            .saturating_duration_since(m.last_heartbeat)
                            .as_millis() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let owners: BTreeMap<TopicPartition, String> = group
            .map(|group| {
                group
                    .members
                    .values()
                    .flat_map(|m| m.owned.iter().map(|tp| (tp.clone(), m.member_id.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupSnapshot {
            state: group
                .map(Group::state)
                .unwrap_or(crate::protocol::GroupState::Empty),
            generation: group.map(|g| g.generation).unwrap_or(0),
            strategy: group.and_then(|g| g.strategy).map(strategy_to_wire),
            subscribed: group.map(Group::subscribed_topics).unwrap_or_default(),
            members,
            committed,
            owners,
        })
    }

    /// The topics a group's members subscribe to (none for an unknown group).
    pub fn subscribed_topics(&self, group: &str) -> BTreeSet<String> {
        self.groups
            .borrow()
            .get(group)
            .map(Group::subscribed_topics)
            .unwrap_or_default()
    }

    /// Whether a group has members (offsets may be reset only while it has none).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .borrow()
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Stores offsets for a group without members (a reset). The caller checked emptiness;
    /// it is checked again here, after any wait, before anything is written.
    pub async fn store_reset(
        &self,
        group: &str,
        records: Vec<OffsetRecord>,
    ) -> Result<(), CoordinatorError> {
        if self.has_members(group) {
            return Err(CoordinatorError::GroupNotEmpty {
                group: group.to_string(),
            });
        }
        let log = self
            .log_for(group)
            .ok_or_else(|| CoordinatorError::NotCoordinator {
                group: group.to_string(),
            })?;
        log.commit(records)
            .await
            .map_err(|source| CoordinatorError::Storage {
                group: group.to_string(),
                source,
            })
    }

    /// Every group this shard coordinates, or why it cannot say yet.
    pub fn list_if_loaded(&self) -> Result<Vec<GroupListing>, CoordinatorError> {
        if !self.is_loaded() {
            return Err(CoordinatorError::Loading);
        }
        Ok(self.list())
    }

    /// The clock the coordinator reads.
    pub fn clock(&self) -> &ClockRef {
        &self.clock
    }

    /// Forgets every group; the offsets logs are partitions of the shard and close with
    /// them.
    pub async fn close(&self) -> Result<(), CoordinatorError> {
        self.logs.borrow_mut().clear();
        self.groups.borrow_mut().clear();
        Ok(())
    }
}

/// What `describe` knows of a group on the coordinator.
#[derive(Debug)]
pub struct GroupSnapshot {
    pub state: crate::protocol::GroupState,
    pub generation: u32,
    pub strategy: Option<AssignmentStrategy>,
    pub subscribed: BTreeSet<String>,
    pub members: Vec<MemberDescription>,
    pub committed: BTreeMap<TopicPartition, u64>,
    pub owners: BTreeMap<TopicPartition, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// Sessions are measured on the coordinator's clock: a test moves it past a member's
    /// session timeout instead of waiting, and the sweeper removes the member.
    #[test]
    fn a_member_silent_past_its_session_on_the_coordinator_s_clock_is_removed() {
        let clock = ManualClock::new();
        let coordinator = Coordinator::new(0, clock.clone());
        let counts: BTreeMap<String, u32> = [("orders".to_string(), 4)].into();
        let joined = coordinator.join(
            JoinGroupRequest {
                group: "billing".into(),
                member_id: String::new(),
                instance_id: None,
                client_id: "test".into(),
                topics: vec!["orders".into()],
                strategy: AssignmentStrategy::CooperativeSticky,
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
            },
            &counts,
        );
        assert_eq!(joined.error, ErrorCode::None, "{joined:?}");
        clock.advance(Duration::from_secs(9));
        coordinator.sweep(|_| counts.clone());
        assert!(coordinator.has_members("billing"), "within its session");
        clock.advance(Duration::from_secs(2));
        coordinator.sweep(|_| counts.clone());
        assert!(!coordinator.has_members("billing"), "past its session");
    }
}
