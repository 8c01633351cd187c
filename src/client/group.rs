//! A consumer in a group: joins, heartbeats in the background, consumes the partitions the
//! coordinator hands it, commits offsets (on an interval, or when asked) and gives
//! partitions back when asked — committing them first, so the next owner starts where this
//! one stopped.
//!
//! Delivery is at least once: a record is committed only after the poll that returned it
//! is followed by another poll (or an explicit commit), so a crash re-delivers what was
//! processed but not yet committed, never skips.
//!
//! The heartbeat task and the consumer share one `Membership` (same executor, `RefCell`).
//! The heartbeat task only records what the coordinator wants; `poll` does the giving back
//! and taking on, so a partition changes hands only between two polls.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::consumer::{Consumer, ConsumerConfig, Fetched, StartFrom};
use super::error::ClientError;
use crate::protocol::{
    AssignmentStrategy, CommitOffset, ErrorCode, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, Request,
    Response, TopicPartitions,
};

/// A topic and partition.
pub type TopicPartition = (String, u32);

/// How often the heartbeat task looks at the shared state.
const HEARTBEAT_TICK: Duration = Duration::from_millis(5);
/// How soon to heartbeat again while the assignment is not settled.
const UNSETTLED_RETRY: Duration = Duration::from_millis(50);
/// The pause after a failed heartbeat or join before the next try.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Attempts at the first join while the coordinator moves or loads.
const JOIN_ATTEMPTS: u32 = 100;
/// How long `poll` waits for an assignment when the member owns nothing.
const IDLE_POLL_WAIT: Duration = Duration::from_millis(50);

/// How a group consumer behaves.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub strategy: AssignmentStrategy,
    /// A static member's stable id (it gets its partitions back after a restart within the
    /// session timeout, without a rebalance).
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Commit every this often from `poll` (and before giving partitions back, and on
    /// close); `None` commits only when `commit` is called.
    pub auto_commit: Option<Duration>,
    /// Where a partition without a committed offset starts.
    pub start_from: StartFrom,
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    pub fn new(group: &str, topics: &[&str]) -> GroupConfig {
        GroupConfig {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            strategy: AssignmentStrategy::CooperativeSticky,
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            auto_commit: Some(Duration::from_secs(1)),
            start_from: StartFrom::Earliest,
            consumer: ConsumerConfig {
                max_wait: Duration::from_millis(200),
                ..ConsumerConfig::default()
            },
        }
    }
}

/// A change of what this member owns, for the caller to log or check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipChange {
    pub generation: u32,
    pub owned: BTreeSet<TopicPartition>,
    pub at: std::time::SystemTime,
}

/// What the heartbeat task and the consumer share.
#[derive(Debug, Default)]
struct Membership {
    member_id: String,
    generation: u32,
    /// What the coordinator last said this member should own, and at which generation.
    assignment: BTreeSet<TopicPartition>,
    assignment_generation: u32,
    assignment_seq: u32,
    /// The `assignment_seq` that `owned` was last reconciled to.
    acked_assignment: u32,
    settled: bool,
    /// What the consumer owns now (reported in every heartbeat).
    owned: BTreeSet<TopicPartition>,
    /// `owned` changed since the last heartbeat: send one now.
    owned_changed: bool,
    heartbeat_interval: Duration,
    /// The member was removed: its partitions may already be someone else's, so they are
    /// dropped without committing, and it joins again.
    lost: bool,
    /// A fatal error (fenced): `poll` returns it.
    fatal: Option<ClientError>,
    stopped: bool,
}

/// A consumer in a group. Runs on a glommio executor.
pub struct GroupConsumer {
    link: Rc<CoordinatorLink>,
    config: GroupConfig,
    consumer: Consumer,
    membership: Rc<RefCell<Membership>>,
    heartbeats: Option<glommio::Task<()>>,
    committed: BTreeMap<TopicPartition, u64>,
    last_commit: Instant,
    changes: Vec<OwnershipChange>,
}

/// The address of the group's coordinator shard (its own port when shard-aware), or the
/// bootstrap address, which forwards.
pub(crate) async fn coordinator_address(
    cluster: &Cluster,
    group: &str,
) -> Result<SocketAddr, ClientError> {
    let request = Request::FindCoordinator(FindCoordinatorRequest {
        group: group.to_string(),
    });
    let timeout = std::time::Duration::from_millis(crate::constants::CLIENT_METADATA_TIMEOUT_MS);
    let response = cluster.request_any(&request, timeout).await?.response;
    let Response::FindCoordinator(found) = response else {
        return Err(ClientError::Protocol(
            "find coordinator: unexpected response".into(),
        ));
    };
    if found.error != ErrorCode::None {
        return Err(ClientError::from_code(found.error, "find coordinator"));
    }
    let port = if cluster.shard_aware() && found.shard_port != 0 {
        found.shard_port
    } else {
        found.port
    };
    let resolved = (found.host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    match resolved {
        Some(address) => Ok(address),
        // The bootstrap IP stands in for a host this client cannot resolve.
        None => Ok(SocketAddr::new(cluster.bootstrap()[0].ip(), port)),
    }
}

/// The way to a group's coordinator: its address, looked up once and again after a
/// failure. Shared by a consumer and its heartbeat task.
struct CoordinatorLink {
    cluster: Rc<Cluster>,
    group: String,
    address: RefCell<Option<SocketAddr>>,
}

impl CoordinatorLink {
    /// Sends a request to the group's coordinator. A failed send forgets the address, so
    /// the next call looks it up again.
    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let known = *self.address.borrow();
        let address = match known {
            Some(address) => address,
            None => {
                let address = coordinator_address(&self.cluster, &self.group).await?;
                *self.address.borrow_mut() = Some(address);
                address
            }
        };
        let result = async {
            let connection = self.cluster.connection(address).await?;
            Ok(connection.request(&request, &[]).await?.response)
        }
        .await;
        let moved = match &result {
            Err(_) => true,
            Ok(response) => group_response_error(response).is_some_and(|code| {
                matches!(
                    code,
                    ErrorCode::NotCoordinator | ErrorCode::CoordinatorLoading
                )
            }),
        };
        if moved {
            // The coordinator moved (or is not there yet): look it up again next time.
            *self.address.borrow_mut() = None;
        }
        result
    }
}

/// The error code a group response carries, if any.
fn group_response_error(response: &Response) -> Option<ErrorCode> {
    let code = match response {
        Response::JoinGroup(r) => r.error,
        Response::Heartbeat(r) => r.error,
        Response::LeaveGroup(r) => r.error,
        Response::OffsetCommit(r) => r.error,
        Response::OffsetFetch(r) => r.error,
        Response::DescribeGroup(r) => r.error,
        Response::ResetOffsets(r) => r.error,
        Response::Error(r) => r.error,
        _ => return None,
    };
    (code != ErrorCode::None).then_some(code)
}

async fn join(
    link: &CoordinatorLink,
    config: &GroupConfig,
    member_id: &str,
) -> Result<(String, u32, Duration), ClientError> {
    let request = Request::JoinGroup(JoinGroupRequest {
        group: config.group.clone(),
        member_id: member_id.to_string(),
        instance_id: config.instance_id.clone(),
        client_id: "shardline-group-consumer".into(),
        topics: config.topics.clone(),
        strategy: config.strategy,
        session_timeout_ms: u32::try_from(config.session_timeout.as_millis()).unwrap_or(u32::MAX),
        rebalance_timeout_ms: u32::try_from(config.rebalance_timeout.as_millis())
            .unwrap_or(u32::MAX),
    });
    match link.call(request).await? {
        Response::JoinGroup(joined) if joined.error == ErrorCode::None => Ok((
            joined.member_id,
            joined.generation,
            Duration::from_millis(u64::from(joined.heartbeat_interval_ms.max(1))),
        )),
        Response::JoinGroup(joined) => Err(ClientError::from_code(joined.error, joined.message)),
        Response::Error(error) => Err(ClientError::from_code(error.error, error.message)),
        other => Err(ClientError::Protocol(format!(
            "join answered with {:?}",
            other.api_key()
        ))),
    }
}

impl GroupConsumer {
    /// Joins the group and starts heartbeating. Partitions arrive with the next polls.
    pub async fn join(
        cluster: Rc<Cluster>,
        config: GroupConfig,
    ) -> Result<GroupConsumer, ClientError> {
        if config.topics.is_empty() {
            return Err(ClientError::InvalidInput(
                "a group consumer needs topics".into(),
            ));
        }
        let link = Rc::new(CoordinatorLink {
            cluster: cluster.clone(),
            group: config.group.clone(),
            address: RefCell::new(None),
        });
        // The coordinator may be moving or still loading: retry for a while.
        let mut attempt = 0;
        let (member_id, generation, interval) = loop {
            match join(&link, &config, "").await {
                Err(error) if error.is_retriable() && attempt < JOIN_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(%error, attempt, "join refused; retrying");
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                }
                other => break other?,
            }
        };
        tracing::info!(group = %config.group, %member_id, generation, "joined");
        let membership = Rc::new(RefCell::new(Membership {
            member_id,
            generation,
            heartbeat_interval: interval,
            owned_changed: true,
            ..Membership::default()
        }));
        let heartbeats = glommio::spawn_local(heartbeat_loop(
            link.clone(),
            config.clone(),
            membership.clone(),
        ));
        Ok(GroupConsumer {
            consumer: Consumer::new(cluster, config.consumer.clone()),
            link,
            config,
            membership,
            heartbeats: Some(heartbeats),
            committed: BTreeMap::new(),
            last_commit: Instant::now(),
            changes: Vec::new(),
        })
    }

    pub fn member_id(&self) -> String {
        self.membership.borrow().member_id.clone()
    }

    pub fn generation(&self) -> u32 {
        self.membership.borrow().generation
    }

    /// The partitions this member consumes now.
    pub fn owned(&self) -> BTreeSet<TopicPartition> {
        self.membership.borrow().owned.clone()
    }

    /// Ownership changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<OwnershipChange> {
        std::mem::take(&mut self.changes)
    }

    /// Gives back and takes on partitions as the coordinator asked, commits if due, then
    /// fetches from what this member owns.
    pub async fn poll(&mut self) -> Result<Fetched, ClientError> {
        if let Some(error) = self.membership.borrow().fatal.clone() {
            return Err(error);
        }
        self.reconcile().await?;
        if let Some(interval) = self.config.auto_commit {
            if self.last_commit.elapsed() >= interval {
                if let Err(error) = self.commit().await {
                    tracing::warn!(%error, "auto-commit failed");
                }
            }
        }
        if self.membership.borrow().owned.is_empty() {
            glommio::timer::sleep(IDLE_POLL_WAIT).await;
            return Ok(Fetched::default());
        }
        self.consumer.poll().await
    }

    async fn reconcile(&mut self) -> Result<(), ClientError> {
        let (lost, assignment, generation, seq, owned) = {
            let mut membership = self.membership.borrow_mut();
            let lost = std::mem::take(&mut membership.lost);
            (
                lost,
                membership.assignment.clone(),
                membership.assignment_generation,
                membership.assignment_seq,
                membership.owned.clone(),
            )
        };
        if lost {
            for (topic, partition) in &owned {
                self.consumer.unassign(topic, *partition);
                self.committed.remove(&(topic.clone(), *partition));
            }
            self.set_owned(BTreeSet::new(), generation, 0);
            return Ok(());
        }
        let revoked: BTreeSet<TopicPartition> = owned.difference(&assignment).cloned().collect();
        let added: BTreeSet<TopicPartition> = assignment.difference(&owned).cloned().collect();
        if revoked.is_empty() && added.is_empty() {
            self.set_owned(owned, generation, seq);
            return Ok(());
        }
        if !revoked.is_empty() {
            if self.config.auto_commit.is_some() {
                if let Err(error) = self.commit_partitions(&revoked).await {
                    tracing::warn!(%error, "commit before giving partitions back failed");
                }
            }
            for (topic, partition) in &revoked {
                self.consumer.unassign(topic, *partition);
                self.committed.remove(&(topic.clone(), *partition));
            }
        }
        let mut now_owned: BTreeSet<TopicPartition> = owned.difference(&revoked).cloned().collect();
        if !added.is_empty() {
            let starts = self.committed_offsets(&added).await?;
            for (tp, committed) in starts {
                let start = committed
                    .map(StartFrom::Offset)
                    .unwrap_or(self.config.start_from);
                self.consumer.assign(&tp.0, Some(vec![tp.1]), start).await?;
                if let Some(position) = self.consumer.position(&tp.0, tp.1) {
                    self.committed.insert(tp.clone(), position);
                }
                now_owned.insert(tp);
            }
        }
        self.set_owned(now_owned, generation, seq);
        Ok(())
    }

    /// Records what this member owns, having acted on assignment `seq`.
    fn set_owned(&mut self, owned: BTreeSet<TopicPartition>, generation: u32, seq: u32) {
        let mut membership = self.membership.borrow_mut();
        if membership.acked_assignment != seq {
            membership.acked_assignment = seq;
            membership.owned_changed = true;
        }
        if membership.owned == owned {
            return;
        }
        membership.owned = owned.clone();
        membership.owned_changed = true;
        self.changes.push(OwnershipChange {
            generation,
            owned,
            at: std::time::SystemTime::now(),
        });
    }

    async fn committed_offsets(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Option<u64>)>, ClientError> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: self.config.group.clone(),
            partitions: Some(TopicPartitions::from_set(partitions)),
        });
        match self.link.call(request).await? {
            Response::OffsetFetch(fetched) if fetched.error == ErrorCode::None => Ok(fetched
                .offsets
                .into_iter()
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect()),
            Response::OffsetFetch(fetched) => {
                Err(ClientError::from_code(fetched.error, fetched.message))
            }
            Response::Error(error) => Err(ClientError::from_code(error.error, error.message)),
            other => Err(ClientError::Protocol(format!(
                "offset fetch answered with {:?}",
                other.api_key()
            ))),
        }
    }

    /// Sets where an owned partition continues (and what the next commit stores): for a
    /// caller that stopped part-way through what a poll returned.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), ClientError> {
        self.consumer
            .seek(topic, partition, StartFrom::Offset(offset))
            .await
    }

    /// Commits the position of every owned partition that moved since its last commit.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let owned = self.membership.borrow().owned.clone();
        self.commit_partitions(&owned).await
    }

    async fn commit_partitions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        let mut offsets = Vec::new();
        for (topic, partition) in partitions {
            let Some(position) = self.consumer.position(topic, *partition) else {
                continue;
            };
            if self.committed.get(&(topic.clone(), *partition)) == Some(&position) {
                continue;
            }
            offsets.push(CommitOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: position,
                metadata: String::new(),
            });
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, generation) = {
            let membership = self.membership.borrow();
            (membership.member_id.clone(), membership.generation)
        };
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: self.config.group.clone(),
            member_id,
            generation,
            offsets: offsets.clone(),
        });
        let response = self.link.call(request).await?;
        let results = match response {
            Response::OffsetCommit(committed) if committed.error == ErrorCode::None => {
                committed.partitions
            }
            Response::OffsetCommit(committed) => {
                return Err(ClientError::from_code(committed.error, committed.message))
            }
            Response::Error(error) => {
                return Err(ClientError::from_code(error.error, error.message))
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "offset commit answered with {:?}",
                    other.api_key()
                )))
            }
        };
        let mut refused = Vec::new();
        for (offset, result) in offsets.iter().zip(results) {
            if result.error == ErrorCode::None {
                self.committed
                    .insert((offset.topic.clone(), offset.partition), offset.offset);
            } else {
                refused.push(format!(
                    "{}/{}: {}",
                    offset.topic, offset.partition, result.error
                ));
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ClientError::from_code(
                ErrorCode::PartitionNotAssigned,
                refused.join(", "),
            ))
        }
    }

    /// Commits (with auto-commit), stops heartbeating and leaves the group, so its
    /// partitions move at once. A static member does not leave: it keeps its place for the
    /// session timeout, so a restart gets its partitions back without a rebalance.
    /// The member consumes nothing afterwards (its last ownership change, to nothing, is
    /// in `take_changes`).
    pub async fn close(&mut self) -> Result<(), ClientError> {
        let commit = if self.config.auto_commit.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        let (owned, generation, seq) = {
            let mut membership = self.membership.borrow_mut();
            membership.stopped = true;
            (
                membership.owned.clone(),
                membership.assignment_generation,
                membership.acked_assignment,
            )
        };
        for (topic, partition) in &owned {
            self.consumer.unassign(topic, *partition);
        }
        self.set_owned(BTreeSet::new(), generation, seq);
        if let Some(task) = self.heartbeats.take() {
            task.await;
        }
        if self.config.instance_id.is_none() {
            let member_id = self.member_id();
            let request = Request::LeaveGroup(LeaveGroupRequest {
                group: self.config.group.clone(),
                member_id,
            });
            match self.link.call(request).await? {
                Response::LeaveGroup(left) if left.error != ErrorCode::None => {
                    return Err(ClientError::from_code(left.error, left.message));
                }
                _ => {}
            }
        }
        commit
    }
}

/// Heartbeats on the interval, at once when what the member owns changed, and soon while
/// the assignment is not settled. Joins again when the coordinator forgot the member.
async fn heartbeat_loop(
    link: Rc<CoordinatorLink>,
    config: GroupConfig,
    membership: Rc<RefCell<Membership>>,
) {
    let mut last_sent: Option<Instant> = None;
    loop {
        let due = {
            let state = membership.borrow();
            if state.stopped || state.fatal.is_some() {
                return;
            }
            let wait = if state.settled {
                state.heartbeat_interval
            } else {
                UNSETTLED_RETRY.min(state.heartbeat_interval)
            };
            state.owned_changed || last_sent.is_none_or(|at| at.elapsed() >= wait)
        };
        if !due {
            glommio::timer::sleep(HEARTBEAT_TICK).await;
            continue;
        }
        let request = {
            let mut state = membership.borrow_mut();
            state.owned_changed = false;
            HeartbeatRequest {
                group: config.group.clone(),
                member_id: state.member_id.clone(),
                generation: state.generation,
                owned: TopicPartitions::from_set(&state.owned),
                acked_assignment: state.acked_assignment,
            }
        };
        last_sent = Some(Instant::now());
        match link.call(Request::Heartbeat(request)).await {
            Ok(Response::Heartbeat(beat)) if beat.error == ErrorCode::None => {
                let mut state = membership.borrow_mut();
                state.generation = beat.generation;
                state.assignment = TopicPartitions::to_set(&beat.assignment);
                state.assignment_generation = beat.generation;
                state.assignment_seq = beat.assignment_seq;
                state.settled = beat.settled;
                state.heartbeat_interval =
                    Duration::from_millis(u64::from(beat.heartbeat_interval_ms.max(1)));
            }
            Ok(Response::Heartbeat(beat)) => {
                on_refusal(&link, &config, &membership, beat.error, beat.message).await
            }
            Ok(Response::Error(error)) => {
                on_refusal(&link, &config, &membership, error.error, error.message).await
            }
            Ok(other) => {
                tracing::warn!(api = ?other.api_key(), "heartbeat answered with another api");
                glommio::timer::sleep(RETRY_BACKOFF).await;
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed; retrying");
                glommio::timer::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

async fn on_refusal(
    link: &CoordinatorLink,
    config: &GroupConfig,
    membership: &Rc<RefCell<Membership>>,
    code: ErrorCode,
    message: String,
) {
    match code {
        ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration => {
            tracing::warn!(group = %config.group, %message, "removed from the group; joining again");
            {
                let mut state = membership.borrow_mut();
                state.lost = true;
                state.assignment.clear();
                state.assignment_seq = 0;
                state.acked_assignment = 0;
                state.settled = false;
            }
            match join(link, config, "").await {
                Ok((member_id, generation, interval)) => {
                    let mut state = membership.borrow_mut();
                    state.member_id = member_id;
                    state.generation = generation;
                    state.heartbeat_interval = interval;
                    state.owned_changed = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "joining again failed; retrying");
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                }
            }
        }
        ErrorCode::FencedInstanceId
        | ErrorCode::InconsistentGroupProtocol
        | ErrorCode::InvalidGroupId => {
            membership.borrow_mut().fatal = Some(ClientError::from_code(code, message));
        }
        _ => {
            tracing::warn!(%code, %message, "heartbeat refused; retrying");
            glommio::timer::sleep(RETRY_BACKOFF).await;
        }
    }
}
