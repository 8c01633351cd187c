//! One group's membership: members, generations, target assignments and the handing over
//! of partitions. Pure state: the coordinator passes in the clock and the topics' partition
//! counts, so every rule here is tested without a broker.
//!
//! The rules:
//! - Every membership change (join, leave, removal after the session or rebalance timeout,
//!   a changed subscription, a changed partition count) bumps the generation and computes
//!   a new target assignment.
//! - A member is handed a partition of its target only once no other member may own it; a
//!   member keeps what it owns and is still its target. So no partition is owned by two
//!   members at once, even while a rebalance is under way.
//! - "May own" is conservative: everything handed to a member counts as owned by it from
//!   the moment it is handed, and a partition taken back still counts until the member
//!   reports, having acted on that very assignment (its `acked_assignment` is the latest
//!   `assignment_seq` it was sent), that it no longer owns it. A report about an older
//!   assignment only ever adds to what the member may own.
//! - Eager strategies (range, round-robin): a rebalance first takes every partition back
//!   from every member; the new targets are dealt once no member owns anything.
//! - Cooperative sticky: the new targets keep each member's previous partitions where
//!   balance allows; members keep fetching those throughout, only moved partitions pause.
//! - Static members (an instance id) that rejoin take their old place, target included,
//!   with no rebalance; the old member id is fenced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::assignor::{assign, MemberInput, Strategy, TopicPartition};
use crate::constants::GROUP_MEMBERS_MAX;
use crate::protocol::{ErrorCode, GroupState};

/// How many replaced static member ids a group remembers, to answer them `FencedInstanceId`.
const FENCED_MEMBER_IDS_MAX: usize = 64;

/// One member. Owned by its group.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub last_heartbeat: Instant,
    /// What the coordinator wants it to own.
    pub target: BTreeSet<TopicPartition>,
    /// What it last reported owning.
    pub owned: BTreeSet<TopicPartition>,
    /// What it may own (see the module doc): never handed to another member.
    pub may_own: BTreeSet<TopicPartition>,
    /// The assignment it was last sent, and that assignment's sequence number.
    pub handed: BTreeSet<TopicPartition>,
    pub handed_seq: u32,
    /// The last assignment it reported having acted on.
    pub acked_seq: u32,
    /// Since when it has been asked to give back partitions it may still own.
    pub revoke_asked_at: Option<Instant>,
}

impl Member {
    /// It owns exactly its target, and says so having acted on its latest assignment.
    fn settled(&self) -> bool {
        self.owned == self.target && self.handed == self.target && self.acked_seq == self.handed_seq
    }

    fn new(request: JoinRequest, member_id: String, now: Instant) -> Member {
        Member {
            member_id,
            instance_id: request.instance_id,
            client_id: request.client_id,
            topics: request.topics,
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            last_heartbeat: now,
            target: BTreeSet::new(),
            owned: BTreeSet::new(),
            may_own: BTreeSet::new(),
            handed: BTreeSet::new(),
            handed_seq: 0,
            acked_seq: 0,
            revoke_asked_at: None,
        }
    }
}

/// What a join asks for.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub strategy: Strategy,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// A refusal, as a wire code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    pub code: ErrorCode,
    pub message: String,
}

impl GroupError {
    fn new(code: ErrorCode, message: impl Into<String>) -> GroupError {
        GroupError {
            code,
            message: message.into(),
        }
    }
}

/// What a heartbeat is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub generation: u32,
    pub assignment: BTreeSet<TopicPartition>,
    /// Identifies `assignment`: the member echoes it once it has acted on it.
    pub assignment_seq: u32,
    pub settled: bool,
}

/// One consumer group. Owned by its coordinator's shard.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub generation: u32,
    /// The strategy of its members (`None` while empty).
    pub strategy: Option<Strategy>,
    pub members: BTreeMap<String, Member>,
    /// Eager rebalance under way: every member must give everything back first.
    pub revoking_all: bool,
    /// The partition counts the targets were computed with.
    partition_counts: BTreeMap<String, u32>,
    fenced_member_ids: VecDeque<String>,
}

impl Group {
    pub fn new(name: &str) -> Group {
        Group {
            name: name.to_string(),
            generation: 0,
            strategy: None,
            members: BTreeMap::new(),
            revoking_all: false,
            partition_counts: BTreeMap::new(),
            fenced_member_ids: VecDeque::new(),
        }
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.revoking_all || self.members.values().any(|m| !m.settled()) {
            GroupState::Rebalancing
        } else {
            GroupState::Stable
        }
    }

    /// Adds a member (or re-admits a known or static one). `new_member_id` is called when
    /// the member needs a fresh id. Returns its member id.
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String, GroupError> {
        if let Some(strategy) = self.strategy.filter(|_| !self.members.is_empty()) {
            if strategy != request.strategy {
                return Err(GroupError::new(
                    ErrorCode::InconsistentGroupProtocol,
                    format!(
                        "the group's members use {strategy:?}; this member asked for {:?}",
                        request.strategy
                    ),
                ));
            }
        }
        if !request.member_id.is_empty() {
            return self.rejoin_known(request, now, partition_counts);
        }
        if let Some(instance_id) = request.instance_id.clone() {
            let existing = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance_id.as_str()))
                .map(|m| m.member_id.clone());
            if let Some(old_id) = existing {
                return Ok(self.replace_static(
                    &old_id,
                    request,
                    now,
                    partition_counts,
                    new_member_id,
                ));
            }
        }
        if self.members.len() >= GROUP_MEMBERS_MAX {
            return Err(GroupError::new(
                ErrorCode::GroupMaxSizeReached,
                format!("the group has {GROUP_MEMBERS_MAX} members"),
            ));
        }
        let member_id = new_member_id();
        self.strategy = Some(request.strategy);
        self.members.insert(
            member_id.clone(),
            Member::new(request, member_id.clone(), now),
        );
        self.rebalance(partition_counts);
        Ok(member_id)
    }

    fn rejoin_known(
        &mut self,
        request: JoinRequest,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Result<String, GroupError> {
        let member = self.member_mut(&request.member_id)?;
        member.last_heartbeat = now;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        let changed = member.topics != request.topics;
        member.topics = request.topics;
        if changed {
            self.rebalance(partition_counts);
        }
        Ok(request.member_id)
    }

    /// A static member came back under a new member id: it takes the old one's place and
    /// target; the old id is fenced. No rebalance unless its subscription changed.
    fn replace_static(
        &mut self,
        old_id: &str,
        request: JoinRequest,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
        new_member_id: impl FnOnce() -> String,
    ) -> String {
        let old = self.members.remove(old_id).expect("found by instance id");
        self.remember_fenced(old.member_id.clone());
        let member_id = new_member_id();
        let changed = old.topics != request.topics;
        // The new process starts with nothing; it is handed its old target at once.
        let mut member = Member::new(request, member_id.clone(), now);
        member.target = old.target;
        self.members.insert(member_id.clone(), member);
        if changed {
            self.rebalance(partition_counts);
        }
        member_id
    }

    fn remember_fenced(&mut self, member_id: String) {
        if self.fenced_member_ids.len() == FENCED_MEMBER_IDS_MAX {
            self.fenced_member_ids.pop_front();
        }
        self.fenced_member_ids.push_back(member_id);
    }

    fn unknown_member(&self, member_id: &str) -> GroupError {
        if self.fenced_member_ids.iter().any(|id| id == member_id) {
            GroupError::new(
                ErrorCode::FencedInstanceId,
                format!("member {member_id} was replaced by a new member with its instance id"),
            )
        } else {
            GroupError::new(
                ErrorCode::UnknownMemberId,
                format!("{member_id} is not a member of group {}", self.name),
            )
        }
    }

    fn member_mut(&mut self, member_id: &str) -> Result<&mut Member, GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        Ok(self.members.get_mut(member_id).expect("checked"))
    }

    /// A member's heartbeat: records what it owns and answers what it should own.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: u32,
        owned: BTreeSet<TopicPartition>,
        acked_assignment: u32,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatOutcome, GroupError> {
        if generation > self.generation {
            return Err(GroupError::new(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {generation} is ahead of the group's {}",
                    self.generation
                ),
            ));
        }
        let member = self.member_mut(member_id)?;
        member.last_heartbeat = now;
        if acked_assignment == member.handed_seq {
            // It acted on the latest assignment: what it reports is all it may own.
            member.may_own = owned.clone();
        } else {
            member.may_own.extend(owned.iter().cloned());
        }
        member.owned = owned;
        member.acked_seq = acked_assignment;
        if self.topology_changed(partition_counts) {
            self.rebalance(partition_counts);
        }
        if self.revoking_all && self.members.values().all(|m| m.may_own.is_empty()) {
            self.revoking_all = false;
            self.compute_targets();
        }
        let assignment = self.handed_to(member_id);
        let member = self.members.get_mut(member_id).expect("checked above");
        if assignment != member.handed {
            member.handed = assignment.clone();
            member.handed_seq = member.handed_seq.wrapping_add(1);
        }
        member.may_own.extend(assignment.iter().cloned());
        if member.may_own.is_subset(&assignment) {
            member.revoke_asked_at = None;
        } else {
            member.revoke_asked_at.get_or_insert(now);
        }
        let settled = !self.revoking_all && assignment == member.target;
        Ok(HeartbeatOutcome {
            generation: self.generation,
            assignment,
            assignment_seq: member.handed_seq,
            settled,
        })
    }

    /// What `member_id` may own now: its target, less what another member may still own
    /// (nothing at all while an eager rebalance takes everything back).
    fn handed_to(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        if self.revoking_all {
            return BTreeSet::new();
        }
        let member = &self.members[member_id];
        member
            .target
            .iter()
            .filter(|tp| {
                self.members
                    .values()
                    .all(|other| other.member_id == member_id || !other.may_own.contains(*tp))
            })
            .cloned()
            .collect()
    }

    /// Removes a member at its own request.
    pub fn leave(
        &mut self,
        member_id: &str,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Result<(), GroupError> {
        self.member_mut(member_id)?;
        self.members.remove(member_id);
        self.rebalance(partition_counts);
        Ok(())
    }

    /// Removes members whose session expired, or who did not give back partitions within
    /// their rebalance timeout. Returns their ids.
    pub fn expire(
        &mut self,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let silent = now.saturating_duration_since(m.last_heartbeat) > m.session_timeout;
                let stuck = m
                    .revoke_asked_at
                    .is_some_and(|at| now.saturating_duration_since(at) > m.rebalance_timeout);
                silent || stuck
            })
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for member_id in &expired {
                self.members.remove(member_id);
            }
            self.rebalance(partition_counts);
        }
        expired
    }

    /// Whether the partition counts of subscribed topics differ from those the targets were
    /// computed with (a topic created, deleted, or given more partitions).
    fn topology_changed(&self, partition_counts: &BTreeMap<String, u32>) -> bool {
        self.subscribed_topics()
            .iter()
            .any(|topic| partition_counts.get(topic) != self.partition_counts.get(topic))
    }

    /// A new generation and new targets.
    fn rebalance(&mut self, partition_counts: &BTreeMap<String, u32>) {
        self.generation = self.generation.wrapping_add(1).max(1);
        let subscribed = self.subscribed_topics();
        self.partition_counts = partition_counts
            .iter()
            .filter(|(topic, _)| subscribed.contains(*topic))
            .map(|(topic, count)| (topic.clone(), *count))
            .collect();
        if self.members.is_empty() {
            self.strategy = None;
            self.revoking_all = false;
            return;
        }
        let eager = !matches!(self.strategy, Some(Strategy::CooperativeSticky));
        if eager {
            self.revoking_all = true;
            for member in self.members.values_mut() {
                member.target.clear();
            }
            if self.members.values().all(|m| m.may_own.is_empty()) {
                self.revoking_all = false;
                self.compute_targets();
            }
        } else {
            self.compute_targets();
        }
    }

    fn compute_targets(&mut self) {
        let strategy = self.strategy.unwrap_or(Strategy::CooperativeSticky);
        let targets = {
            let inputs: Vec<MemberInput<'_>> = self
                .members
                .values()
                .map(|m| MemberInput {
                    member_id: &m.member_id,
                    instance_id: m.instance_id.as_deref(),
                    topics: &m.topics,
                    previous: &m.target,
                })
                .collect();
            assign(strategy, &inputs, &self.partition_counts)
        };
        for (member_id, target) in targets {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.target = target;
            }
        }
    }

    /// Whether `member_id` at `generation` may commit an offset of this partition. An empty
    /// member id may commit only while the group has no members.
    pub fn check_commit(
        &self,
        member_id: &str,
        generation: u32,
        partition: &TopicPartition,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(GroupError::new(
                ErrorCode::UnknownMemberId,
                format!(
                    "group {} has members: commits must come from one of them",
                    self.name
                ),
            ));
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(self.unknown_member(member_id));
        };
        if generation > self.generation {
            return Err(GroupError::new(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {generation} is ahead of the group's {}",
                    self.generation
                ),
            ));
        }
        if member.may_own.contains(partition) || member.target.contains(partition) {
            return Ok(());
        }
        Err(GroupError::new(
            ErrorCode::PartitionNotAssigned,
            format!(
                "{}/{} is not assigned to member {member_id}",
                partition.0, partition.1
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
