//! The cluster's metadata: the state machine the controller's Raft log drives.
//!
//! Every change is one [`MetadataEvent`] — a broker registered or fenced, a topic created
//! (with its replicas placed), deleted or reconfigured, a partition's leader or in-sync set
//! changed, producer ids reserved. The controller proposes events to its Raft group
//! (`super::raft`); once an event is committed, every voter applies it to its
//! [`MetadataImage`] in log order, so every voter holds the same image. Events are rkyv
//! archives, read back with checked access (from the network and the disk alike).
//!
//! `apply` is deterministic and total: an event that no longer fits the image (a topic
//! deleted meanwhile, say) changes nothing, and never fails half-way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rkyv::{Archive, Deserialize, Serialize};

use super::topic_config::{ConfigError, TopicConfig};

/// Gives a partition whose leader is gone (fenced, or none) a new leader: the first live
/// replica of its in-sync set, which then drops the old leader; else the first live
/// eligible replica (see `PartitionState::eligible`), alone in the in-sync set; else,
/// with `unclean.leader.election.enable`, the first live replica, alone; else none. The
/// in-sync set a partition keeps without a leader is its last one: only those replicas
/// (and the eligible ones) hold every acknowledged write, and the first of them to return
/// leads. Any change bumps the leader epoch.
fn elect(state: &mut PartitionState, live: &BTreeSet<u32>, config: &TopicConfig) {
    let old = state.leader;
    let first_live = |among: &[u32]| {
        state
            .replicas
            .iter()
            .copied()
            .find(|b| live.contains(b) && among.contains(b))
    };
    let min_in_sync = config.min_insync_replicas;
    match first_live(&state.in_sync) {
        Some(leader) => {
            state.leader = Some(leader);
            if let Some(old) = old.filter(|&old| old != leader) {
                let kept = state
                    .in_sync
                    .iter()
                    .copied()
                    .filter(|&b| b != old)
                    .collect();
                state.set_in_sync(kept, min_in_sync);
            }
        }
        None => match (first_live(&state.eligible), first_live(&state.replicas)) {
            (Some(leader), _) => {
                state.leader = Some(leader);
                state.set_in_sync(vec![leader], min_in_sync);
            }
            (None, Some(leader)) if config.unclean_leader_election => {
                state.leader = Some(leader);
                state.in_sync = vec![leader];
                state.eligible.clear();
            }
            _ => state.leader = None,
        },
    }
    if state.leader != old {
        state.leader_epoch += 1;
    }
}

/// The longest topic name.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: u32 = 10_000;

/// A configuration entry as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub key: String,
    pub value: String,
}

/// One change to the metadata, as stored in the controller's log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataEvent {
    TopicCreated {
        name: String,
        topic_id: u64,
        partitions: u32,
        config: Vec<StoredEntry>,
        created_ms: i64,
        /// The replicas of each partition (broker ids, the first the preferred leader).
        replicas: Vec<Vec<u32>>,
    },
    TopicDeleted {
        name: String,
        topic_id: u64,
    },
    TopicConfigReplaced {
        name: String,
        topic_id: u64,
        config: Vec<StoredEntry>,
    },
    /// Producer ids below `next` are handed out (or reserved): never hand them out again.
    ProducerIdsReserved {
        next: u64,
    },
    /// A broker announced itself (or its addresses changed, or it restarted: a new
    /// `incarnation`). A restarted broker may have lost what it had not synced, so the
    /// partitions it leads move to a new leader epoch (it leads them again there, and its
    /// followers cut what it no longer holds).
    BrokerRegistered {
        broker: u32,
        host: String,
        port: u16,
        shard_ports: Vec<u16>,
        incarnation: u64,
    },
    /// A broker stopped (or resumed) heartbeating the controller. Fencing moves the
    /// leadership of the partitions it leads to a live in-sync replica (`elect`); a broker
    /// that returns takes the partitions left without a leader whose in-sync set holds it.
    BrokerFenced {
        broker: u32,
        fenced: bool,
    },
    /// A partition's leader, leader epoch or in-sync set changed.
    PartitionChanged {
        topic_id: u64,
        partition: u32,
        leader: Option<u32>,
        leader_epoch: u32,
        in_sync: Vec<u32>,
    },
    /// Topic ids below `next` are used: a snapshot carries this, as ids are never reused.
    TopicIdsUsed {
        next: u64,
    },
    /// As `PartitionChanged`, only if the partition is still at `expected_epoch` when the
    /// event applies (the controller checked it against its image; a controller leader
    /// new to its term may propose before it has applied everything committed before it,
    /// and a change checked against a stale image must not apply).
    PartitionAltered {
        topic_id: u64,
        partition: u32,
        expected_epoch: u32,
        leader: Option<u32>,
        leader_epoch: u32,
        in_sync: Vec<u32>,
    },
    /// A partition starts moving to the replicas `target`: those not yet replicas join
    /// (as followers that catch up); the old ones stay until `ReassignmentCompleted`.
    ReassignmentStarted {
        topic_id: u64,
        partition: u32,
        target: Vec<u32>,
    },
    /// Every replica of the target is in sync: the replicas become the target, the
    /// others leave, and a leader outside the target hands over to one inside it.
    ReassignmentCompleted {
        topic_id: u64,
        partition: u32,
    },
    /// A partition's eligible replicas (see `PartitionState::eligible`): written only in
    /// snapshots, as every other change derives them.
    PartitionEligible {
        topic_id: u64,
        partition: u32,
        eligible: Vec<u32>,
    },
    /// A user's SCRAM credential stored (new or replaced).
    UserUpserted {
        credential: crate::protocol::UserCredential,
    },
    UserDeleted {
        name: String,
    },
    /// A quota set (both limits `None`: removed).
    QuotaSet {
        quota: crate::protocol::Quota,
    },
    /// Access rules added and removed (checked and normalized by the controller).
    AclsAltered {
        add: Vec<crate::protocol::Acl>,
        remove: Vec<crate::protocol::Acl>,
    },
}

/// Where one partition's replicas are and who leads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Broker ids; the first is the preferred leader.
    pub replicas: Vec<u32>,
    pub leader: Option<u32>,
    /// Bumped with every leader change.
    pub leader_epoch: u32,
    /// The replicas caught up with the leader (the leader included).
    pub in_sync: Vec<u32>,
    /// Eligible leader replicas (in the spirit of Kafka's KIP-966): replicas that left
    /// the in-sync set while it was below `min.insync.replicas`. The high watermark
    /// stands still below that size, so they hold every acknowledged write, and may lead
    /// cleanly when no in-sync replica is live. Emptied once the in-sync set is back at
    /// `min.insync.replicas`.
    pub eligible: Vec<u32>,
    /// The replicas a reassignment moves the partition to, while it runs.
    pub target: Option<Vec<u32>>,
}

impl PartitionState {
    /// Takes a new in-sync set, keeping the eligible replicas in step.
    fn set_in_sync(&mut self, in_sync: Vec<u32>, min_in_sync: u64) {
        if in_sync.len() as u64 >= min_in_sync {
            self.eligible.clear();
        } else {
            for gone in self.in_sync.iter().filter(|b| !in_sync.contains(b)) {
                if !self.eligible.contains(gone) {
                    self.eligible.push(*gone);
                }
            }
            self.eligible.retain(|b| !in_sync.contains(b));
        }
        self.in_sync = in_sync;
    }
}

/// A broker as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    pub broker: u32,
    pub host: String,
    pub port: u16,
    pub shard_ports: Vec<u16>,
    /// It stopped heartbeating: it leads nothing and gets no new replicas.
    pub fenced: bool,
    /// Which run of the broker registered last (a new one at every start).
    pub incarnation: u64,
}

/// A topic as the catalogue knows it. Plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    /// Unique for the broker's lifetime, never reused: a topic deleted and created again
    /// gets new partition directories.
    pub topic_id: u64,
    pub partitions: u32,
    pub config: TopicConfig,
    pub created_ms: i64,
    /// One entry per partition.
    pub placement: Vec<PartitionState>,
}

impl TopicSpec {
    /// The replication factor (replicas of partition 0; every partition has as many).
    pub fn replication_factor(&self) -> usize {
        self.placement.first().map_or(1, |p| p.replicas.len())
    }

    /// Partition `partition`'s placement, if it exists.
    pub fn partition(&self, partition: u32) -> Option<&PartitionState> {
        self.placement.get(partition as usize)
    }

    /// The directory of one of the topic's partitions under `data_dir`.
    pub fn partition_dir(&self, data_dir: &Path, partition: u32) -> std::path::PathBuf {
        data_dir
            .join("topics")
            .join(format!("{}.{}", self.name, self.topic_id))
            .join(partition.to_string())
    }

    /// The directory of all the topic's partitions under `data_dir`.
    pub fn topic_dir(&self, data_dir: &Path) -> std::path::PathBuf {
        data_dir
            .join("topics")
            .join(format!("{}.{}", self.name, self.topic_id))
    }
}

/// Why a catalogue change was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{0}' does not exist")]
    NotFound(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partition count {0}: must be within 1..={TOPIC_PARTITIONS_MAX}")]
    InvalidPartitions(u32),
    #[error("replication factor {factor} needs as many live brokers; {live} are live")]
    InvalidReplicationFactor { factor: u32, live: usize },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("metadata storage failed: {0}")]
    Storage(String),
}

/// Why the catalogue could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("opening the metadata log: {0}")]
    Open(String),
    #[error("metadata log is corrupt at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("closing the metadata log: {0}")]
    Close(String),
}

/// Checks a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`, not starting `__`
/// (reserved for internal topics).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 bytes");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not names");
    }
    if name.starts_with("__") {
        return invalid("names starting with '__' are reserved");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Internal topics (`__` names) are the broker's own: clients neither delete nor alter them.
fn refuse_internal(name: &str) -> Result<(), TopicError> {
    if name.starts_with("__") {
        return Err(TopicError::InvalidName {
            name: name.into(),
            reason: "internal topics cannot be changed by clients",
        });
    }
    Ok(())
}

fn stored(config: &TopicConfig) -> Vec<StoredEntry> {
    config
        .overrides()
        .into_iter()
        .map(|(key, value)| StoredEntry { key, value })
        .collect()
}

fn config_from(entries: &[StoredEntry]) -> Result<TopicConfig, ConfigError> {
    TopicConfig::from_entries(entries.iter().map(|e| (e.key.as_str(), e.value.as_str())))
}

/// The cluster's metadata as of some applied index of the controller log. Owned by the
/// controller shard of each voter.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    topics: BTreeMap<String, TopicSpec>,
    /// Topic id → name, for events that name a topic by id.
    names: BTreeMap<u64, String>,
    brokers: BTreeMap<u32, BrokerRecord>,
    next_topic_id: u64,
    /// Producer ids below this are reserved in the log.
    producer_ids_reserved: u64,
    /// The access rules (see `crate::security::acl`).
    acls: std::collections::BTreeSet<crate::protocol::Acl>,
    /// SCRAM credentials by user name (see `crate::security::scram`).
    users: BTreeMap<String, crate::protocol::UserCredential>,
    /// Byte-rate quotas by entity (see `crate::security::quota`).
    quotas: BTreeMap<crate::protocol::QuotaEntity, crate::protocol::Quota>,
}

/// The snapshot format: the events that rebuild the image.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct ImageSnapshot {
    events: Vec<MetadataEvent>,
}

impl MetadataImage {
    pub fn new() -> MetadataImage {
        MetadataImage {
            next_topic_id: 1,
            ..MetadataImage::default()
        }
    }

    /// Applies a committed event. Deterministic: every voter gets the same image from the
    /// same events. An event that does not fit the image (its topic is gone) changes
    /// nothing and is not an error; an event no honest controller writes is refused whole.
    pub fn apply(&mut self, event: MetadataEvent) -> Result<(), TopicError> {
        match event {
            MetadataEvent::TopicCreated {
                name,
                topic_id,
                partitions,
                config,
                created_ms,
                replicas,
            } => {
                let config = config_from(&config)?;
                if replicas.len() != partitions as usize || replicas.iter().any(|r| r.is_empty()) {
                    return Err(TopicError::Storage(format!(
                        "topic {name}: {} placements for {partitions} partitions",
                        replicas.len()
                    )));
                }
                if self.topics.contains_key(&name) {
                    return Ok(());
                }
                self.next_topic_id = self.next_topic_id.max(topic_id + 1);
                let placement = replicas
                    .into_iter()
                    .map(|replicas| PartitionState {
                        leader: replicas.first().copied(),
                        leader_epoch: 0,
                        in_sync: replicas.clone(),
                        eligible: Vec::new(),
                        target: None,
                        replicas,
                    })
                    .collect();
                let spec = TopicSpec {
                    name: name.clone(),
                    topic_id,
                    partitions,
                    config,
                    created_ms,
                    placement,
                };
                self.names.insert(topic_id, name.clone());
                self.topics.insert(name, spec);
            }
            MetadataEvent::TopicDeleted { name, topic_id } => {
                if self
                    .topics
                    .get(&name)
                    .is_some_and(|t| t.topic_id == topic_id)
                {
                    self.topics.remove(&name);
                    self.names.remove(&topic_id);
                }
            }
            MetadataEvent::TopicConfigReplaced {
                name,
                topic_id,
                config,
            } => {
                let config = config_from(&config)?;
                if let Some(topic) = self
                    .topics
                    .get_mut(&name)
                    .filter(|t| t.topic_id == topic_id)
                {
                    topic.config = config;
                }
            }
            MetadataEvent::ProducerIdsReserved { next } => {
                self.producer_ids_reserved = self.producer_ids_reserved.max(next);
            }
            MetadataEvent::TopicIdsUsed { next } => {
                self.next_topic_id = self.next_topic_id.max(next);
            }
            MetadataEvent::BrokerRegistered {
                broker,
                host,
                port,
                shard_ports,
                incarnation,
            } => {
                let known = self.brokers.get(&broker);
                let fenced = known.is_some_and(|b| b.fenced);
                let restarted = known.is_some_and(|b| b.incarnation != incarnation);
                self.brokers.insert(
                    broker,
                    BrokerRecord {
                        broker,
                        host,
                        port,
                        shard_ports,
                        fenced,
                        incarnation,
                    },
                );
                if restarted {
                    self.each_partition(|_, state| {
                        if state.leader == Some(broker) {
                            state.leader_epoch += 1;
                        }
                    });
                }
            }
            MetadataEvent::BrokerFenced { broker, fenced } => {
                let Some(record) = self.brokers.get_mut(&broker) else {
                    return Ok(());
                };
                record.fenced = fenced;
                let live: BTreeSet<u32> = self
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .map(|b| b.broker)
                    .collect();
                self.each_partition(|config, state| {
                    let leaderless = state.leader.is_none_or(|l| !live.contains(&l));
                    if leaderless {
                        elect(state, &live, config);
                    } else if fenced && state.in_sync.contains(&broker) {
                        // A fenced follower leaves the in-sync set at once: the leader's
                        // high watermark no longer waits for it.
                        let kept = state
                            .in_sync
                            .iter()
                            .copied()
                            .filter(|&b| b != broker)
                            .collect();
                        state.set_in_sync(kept, config.min_insync_replicas);
                    }
                });
            }
            MetadataEvent::PartitionChanged {
                topic_id,
                partition,
                leader,
                leader_epoch,
                in_sync,
            } => {
                let Some(name) = self.names.get(&topic_id) else {
                    return Ok(());
                };
                let topic = self.topics.get_mut(name).expect("names and topics agree");
                let min_in_sync = topic.config.min_insync_replicas;
                if let Some(state) = topic.placement.get_mut(partition as usize) {
                    let known = |b: &u32| state.replicas.contains(b);
                    if leader.as_ref().is_some_and(|l| !known(l)) || !in_sync.iter().all(known) {
                        return Err(TopicError::Storage(format!(
                            "partition {name}/{partition}: leader or in-sync replica outside its replicas"
                        )));
                    }
                    state.leader = leader;
                    state.leader_epoch = leader_epoch;
                    state.set_in_sync(in_sync, min_in_sync);
                }
            }
            MetadataEvent::PartitionAltered {
                topic_id,
                partition,
                expected_epoch,
                leader,
                leader_epoch,
                in_sync,
            } => {
                let current = self
                    .partition_mut(topic_id, partition)
                    .map(|state| state.leader_epoch);
                if current == Some(expected_epoch) {
                    return self.apply(MetadataEvent::PartitionChanged {
                        topic_id,
                        partition,
                        leader,
                        leader_epoch,
                        in_sync,
                    });
                }
            }
            MetadataEvent::ReassignmentStarted {
                topic_id,
                partition,
                target,
            } => {
                let known: BTreeSet<u32> = self.brokers.keys().copied().collect();
                let Some(state) = self.partition_mut(topic_id, partition) else {
                    return Ok(());
                };
                let distinct: BTreeSet<u32> = target.iter().copied().collect();
                if target.is_empty()
                    || distinct.len() != target.len()
                    || !distinct.is_subset(&known)
                {
                    return Err(TopicError::Storage(format!(
                        "a reassignment to {target:?}: not distinct known brokers"
                    )));
                }
                for broker in &target {
                    if !state.replicas.contains(broker) {
                        state.replicas.push(*broker);
                    }
                }
                state.target = Some(target);
            }
            MetadataEvent::ReassignmentCompleted {
                topic_id,
                partition,
            } => {
                let live: BTreeSet<u32> = self
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .map(|b| b.broker)
                    .collect();
                let Some((config, state)) = self.partition_and_config_mut(topic_id, partition)
                else {
                    return Ok(());
                };
                let Some(target) = state.target.take() else {
                    return Ok(());
                };
                let in_sync = state
                    .in_sync
                    .iter()
                    .copied()
                    .filter(|b| target.contains(b))
                    .collect();
                state.replicas = target;
                state.set_in_sync(in_sync, config.min_insync_replicas);
                state.eligible.retain(|b| state.replicas.contains(b));
                if state.leader.is_some_and(|l| !state.replicas.contains(&l)) {
                    state.leader = None;
                    elect(state, &live, &config);
                    if state.leader.is_none() {
                        // `elect` bumps the epoch only when a leader changes to another.
                        state.leader_epoch += 1;
                    }
                }
            }
            MetadataEvent::PartitionEligible {
                topic_id,
                partition,
                eligible,
            } => {
                let Some(state) = self.partition_mut(topic_id, partition) else {
                    return Ok(());
                };
                if !eligible.iter().all(|b| state.replicas.contains(b)) {
                    return Err(TopicError::Storage(format!(
                        "partition {partition} of topic {topic_id}: eligible replica outside its replicas"
                    )));
                }
                state.eligible = eligible;
            }
            MetadataEvent::UserUpserted { credential } => {
                if !self.users.contains_key(&credential.name)
                    && self.users.len() >= crate::constants::USERS_MAX
                {
                    return Err(TopicError::Storage(format!(
                        "more than {} users",
                        crate::constants::USERS_MAX
                    )));
                }
                self.users.insert(credential.name.clone(), credential);
            }
            MetadataEvent::UserDeleted { name } => {
                self.users.remove(&name);
            }
            MetadataEvent::QuotaSet { quota } => {
                if quota.produce_bytes_per_s.is_none() && quota.fetch_bytes_per_s.is_none() {
                    self.quotas.remove(&quota.entity);
                } else if self.quotas.len() < crate::constants::QUOTAS_MAX
                    || self.quotas.contains_key(&quota.entity)
                {
                    self.quotas.insert(quota.entity.clone(), quota);
                } else {
                    return Err(TopicError::Storage(format!(
                        "more than {} quotas",
                        crate::constants::QUOTAS_MAX
                    )));
                }
            }
            MetadataEvent::AclsAltered { add, remove } => {
                for acl in &remove {
                    self.acls.remove(acl);
                }
                if self.acls.len() + add.len() > crate::constants::ACLS_MAX {
                    return Err(TopicError::Storage(format!(
                        "more than {} access rules",
                        crate::constants::ACLS_MAX
                    )));
                }
                self.acls.extend(add);
            }
        }
        Ok(())
    }

    /// The byte-rate quotas.
    pub fn quotas(&self) -> impl Iterator<Item = &crate::protocol::Quota> {
        self.quotas.values()
    }

    /// The users' stored credentials.
    pub fn users(&self) -> impl Iterator<Item = &crate::protocol::UserCredential> {
        self.users.values()
    }

    /// The access rules.
    pub fn acls(&self) -> impl Iterator<Item = &crate::protocol::Acl> {
        self.acls.iter()
    }

    fn partition_mut(&mut self, topic_id: u64, partition: u32) -> Option<&mut PartitionState> {
        let name = self.names.get(&topic_id)?;
        self.topics
            .get_mut(name)?
            .placement
            .get_mut(partition as usize)
    }

    fn partition_and_config_mut(
        &mut self,
        topic_id: u64,
        partition: u32,
    ) -> Option<(TopicConfig, &mut PartitionState)> {
        let name = self.names.get(&topic_id)?;
        let topic = self.topics.get_mut(name)?;
        let config = topic.config.clone();
        Some((config, topic.placement.get_mut(partition as usize)?))
    }

    /// Calls `change` with every partition's state (and its topic's config).
    fn each_partition(&mut self, mut change: impl FnMut(&TopicConfig, &mut PartitionState)) {
        for topic in self.topics.values_mut() {
            for state in topic.placement.iter_mut() {
                change(&topic.config, state);
            }
        }
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicSpec> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: u64) -> Option<&TopicSpec> {
        self.names.get(&topic_id).and_then(|n| self.topics.get(n))
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values()
    }

    pub fn broker(&self, broker: u32) -> Option<&BrokerRecord> {
        self.brokers.get(&broker)
    }

    pub fn producer_ids_reserved(&self) -> u64 {
        self.producer_ids_reserved
    }

    /// Checks a creation and places its replicas, without making it: each partition's
    /// replicas are `factor` distinct live brokers, the leaders spread round the brokers.
    pub fn plan_create(
        &self,
        name: &str,
        partitions: u32,
        factor: u32,
        entries: &[(String, String)],
        created_ms: i64,
    ) -> Result<MetadataEvent, TopicError> {
        validate_topic_name(name)?;
        self.plan_create_any(name, partitions, factor, entries, created_ms)
    }

    /// As `plan_create`, for an internal topic (a `__` name, which clients may not use).
    pub fn plan_create_internal(
        &self,
        name: &str,
        partitions: u32,
        factor: u32,
        entries: &[(String, String)],
        created_ms: i64,
    ) -> Result<MetadataEvent, TopicError> {
        assert!(name.starts_with("__"), "internal topics have '__' names");
        self.plan_create_any(name, partitions, factor, entries, created_ms)
    }

    fn plan_create_any(
        &self,
        name: &str,
        partitions: u32,
        factor: u32,
        entries: &[(String, String)],
        created_ms: i64,
    ) -> Result<MetadataEvent, TopicError> {
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let config =
            TopicConfig::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        if self.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        let live: Vec<u32> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.broker)
            .collect();
        if factor == 0 || factor as usize > live.len() {
            return Err(TopicError::InvalidReplicationFactor {
                factor,
                live: live.len(),
            });
        }
        // Start each topic's round at a different broker, so that many small topics do
        // not all lead on the first one.
        let first = crc32c::crc32c(name.as_bytes()) as usize;
        let replicas = (0..partitions as usize)
            .map(|p| {
                (0..factor as usize)
                    .map(|r| live[(first + p + r) % live.len()])
                    .collect()
            })
            .collect();
        Ok(MetadataEvent::TopicCreated {
            name: name.into(),
            topic_id: self.next_topic_id,
            partitions,
            config: stored(&config),
            created_ms,
            replicas,
        })
    }

    /// The event that deletes a topic (never an internal one).
    pub fn plan_delete(&self, name: &str) -> Result<MetadataEvent, TopicError> {
        refuse_internal(name)?;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| TopicError::NotFound(name.into()))?;
        Ok(MetadataEvent::TopicDeleted {
            name: name.into(),
            topic_id: topic.topic_id,
        })
    }

    /// The event that sets and resets configuration entries of a topic; all or nothing.
    /// With `validate_only` the checked result is returned and no event.
    pub fn plan_alter(
        &self,
        name: &str,
        set: &[(String, String)],
        reset: &[String],
    ) -> Result<MetadataEvent, TopicError> {
        refuse_internal(name)?;
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| TopicError::NotFound(name.into()))?;
        let mut config = topic.config.clone();
        for (key, value) in set {
            config.set(key, value)?;
        }
        for key in reset {
            config.reset(key)?;
        }
        Ok(MetadataEvent::TopicConfigReplaced {
            name: name.into(),
            topic_id: topic.topic_id,
            config: stored(&config),
        })
    }

    /// The events that rebuild this image from nothing.
    fn events(&self) -> Vec<MetadataEvent> {
        let mut events = vec![
            MetadataEvent::ProducerIdsReserved {
                next: self.producer_ids_reserved,
            },
            MetadataEvent::TopicIdsUsed {
                next: self.next_topic_id,
            },
        ];
        for broker in self.brokers.values() {
            events.push(MetadataEvent::BrokerRegistered {
                broker: broker.broker,
                host: broker.host.clone(),
                port: broker.port,
                shard_ports: broker.shard_ports.clone(),
                incarnation: broker.incarnation,
            });
            if broker.fenced {
                events.push(MetadataEvent::BrokerFenced {
                    broker: broker.broker,
                    fenced: true,
                });
            }
        }
        for topic in self.topics.values() {
            events.push(MetadataEvent::TopicCreated {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
                partitions: topic.partitions,
                config: stored(&topic.config),
                created_ms: topic.created_ms,
                replicas: topic.placement.iter().map(|p| p.replicas.clone()).collect(),
            });
            for (partition, state) in topic.placement.iter().enumerate() {
                let fresh = state.leader == state.replicas.first().copied()
                    && state.leader_epoch == 0
                    && state.in_sync == state.replicas;
                if !fresh {
                    events.push(MetadataEvent::PartitionChanged {
                        topic_id: topic.topic_id,
                        partition: partition as u32,
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                        in_sync: state.in_sync.clone(),
                    });
                }
                if let Some(target) = &state.target {
                    events.push(MetadataEvent::ReassignmentStarted {
                        topic_id: topic.topic_id,
                        partition: partition as u32,
                        target: target.clone(),
                    });
                }
                // After its `PartitionChanged`, which derives eligible replicas of its own.
                if !fresh || !state.eligible.is_empty() {
                    events.push(MetadataEvent::PartitionEligible {
                        topic_id: topic.topic_id,
                        partition: partition as u32,
                        eligible: state.eligible.clone(),
                    });
                }
            }
        }
        for quota in self.quotas.values() {
            events.push(MetadataEvent::QuotaSet {
                quota: quota.clone(),
            });
        }
        for credential in self.users.values() {
            events.push(MetadataEvent::UserUpserted {
                credential: credential.clone(),
            });
        }
        if !self.acls.is_empty() {
            events.push(MetadataEvent::AclsAltered {
                add: self.acls.iter().cloned().collect(),
                remove: Vec::new(),
            });
        }
        events
    }

    /// The image as snapshot bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snapshot = ImageSnapshot {
            events: self.events(),
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot)
            .expect("serializing to memory")
            .to_vec()
    }

    /// An image from snapshot bytes (empty bytes: the empty image).
    pub fn from_snapshot(bytes: &[u8]) -> Result<MetadataImage, MetadataError> {
        let mut image = MetadataImage::new();
        if bytes.is_empty() {
            return Ok(image);
        }
        let snapshot =
            rkyv::from_bytes::<ImageSnapshot, rkyv::rancor::Error>(bytes).map_err(|e| {
                MetadataError::Corrupt {
                    offset: 0,
                    reason: format!("metadata snapshot: {e}"),
                }
            })?;
        for event in snapshot.events {
            image.apply(event).map_err(|e| MetadataError::Corrupt {
                offset: 0,
                reason: format!("metadata snapshot: {e}"),
            })?;
        }
        Ok(image)
    }
}

/// Decodes an event from a committed Raft entry (checked: it came from a peer or the disk).
pub fn decode_event(bytes: &[u8]) -> Result<MetadataEvent, String> {
    rkyv::from_bytes::<MetadataEvent, rkyv::rancor::Error>(bytes).map_err(|e| e.to_string())
}

/// Encodes an event for a Raft proposal.
pub fn encode_event(event: &MetadataEvent) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(event)
        .expect("serializing to memory")
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_brokers(ids: &[u32]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for &broker in ids {
            image
                .apply(MetadataEvent::BrokerRegistered {
                    broker,
                    host: "127.0.0.1".into(),
                    port: 9000 + broker as u16,
                    shard_ports: vec![],
                    incarnation: 1,
                })
                .unwrap();
        }
        image
    }

    fn fence(image: &mut MetadataImage, broker: u32, fenced: bool) {
        image
            .apply(MetadataEvent::BrokerFenced { broker, fenced })
            .unwrap();
    }

    fn state(image: &MetadataImage, name: &str) -> PartitionState {
        image.topic(name).unwrap().placement[0].clone()
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_in_sync_set_and_the_last_one_standing_returns() {
        let mut image = with_brokers(&[0, 1, 2]);
        let spec = create(&mut image, "t", 1, 3);
        let first = spec.placement[0].clone();
        let leader = first.leader.unwrap();
        fence(&mut image, leader, true);
        let after = state(&image, "t");
        let second = after.leader.unwrap();
        assert_ne!(second, leader);
        assert_eq!(after.leader_epoch, first.leader_epoch + 1);
        assert!(!after.in_sync.contains(&leader), "{after:?}");
        // The next leader goes too: the third replica leads alone.
        fence(&mut image, second, true);
        let third = state(&image, "t");
        assert_eq!(third.in_sync.len(), 1);
        assert_eq!(third.leader_epoch, first.leader_epoch + 2);
        let last = third.leader.unwrap();
        // The last one standing goes: no leader, and it stays the only eligible one.
        fence(&mut image, last, true);
        let offline = state(&image, "t");
        assert_eq!(offline.leader, None);
        assert_eq!(offline.in_sync, vec![last]);
        // The first leader returns: it may lack acknowledged writes, so it does not lead.
        fence(&mut image, leader, false);
        assert_eq!(state(&image, "t").leader, None);
        // The last in-sync replica returns: it leads at a new epoch.
        fence(&mut image, last, false);
        let back = state(&image, "t");
        assert_eq!(back.leader, Some(last));
        assert_eq!(back.leader_epoch, offline.leader_epoch + 1);
    }

    #[test]
    fn replicas_that_left_below_min_insync_stay_eligible_and_fenced_followers_leave() {
        let mut image = with_brokers(&[0, 1, 2]);
        let event = image
            .plan_create("e", 1, 3, &entries(&[("min.insync.replicas", "2")]), 1)
            .unwrap();
        image.apply(event).unwrap();
        let first = state(&image, "e");
        let leader = first.leader.unwrap();
        let followers: Vec<u32> = first
            .replicas
            .iter()
            .copied()
            .filter(|&b| b != leader)
            .collect();
        // A fenced follower leaves the in-sync set; it was not needed: not eligible.
        fence(&mut image, followers[0], true);
        let one_gone = state(&image, "e");
        assert_eq!(one_gone.leader, Some(leader));
        assert!(!one_gone.in_sync.contains(&followers[0]));
        assert!(one_gone.eligible.is_empty());
        // The next leaves the set below min.insync.replicas: it stays eligible.
        fence(&mut image, followers[1], true);
        let below = state(&image, "e");
        assert_eq!(below.in_sync, vec![leader]);
        assert_eq!(below.eligible, vec![followers[1]]);
        // The leader dies too: nobody leads; the eligible one returns and leads alone,
        // and the old leader becomes eligible in turn.
        fence(&mut image, leader, true);
        assert_eq!(state(&image, "e").leader, None);
        fence(&mut image, followers[0], false);
        assert_eq!(
            state(&image, "e").leader,
            None,
            "a replica that was not needed"
        );
        fence(&mut image, followers[1], false);
        let back = state(&image, "e");
        assert_eq!(back.leader, Some(followers[1]));
        assert_eq!(back.in_sync, vec![followers[1]]);
        assert_eq!(back.eligible, vec![leader]);
        // A snapshot keeps the eligible replicas.
        let again = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(state(&again, "e"), back);
        // The in-sync set back at min.insync.replicas clears them.
        image
            .apply(MetadataEvent::PartitionChanged {
                topic_id: image.topic("e").unwrap().topic_id,
                partition: 0,
                leader: back.leader,
                leader_epoch: back.leader_epoch,
                in_sync: vec![followers[1], followers[0]],
            })
            .unwrap();
        assert!(state(&image, "e").eligible.is_empty());
    }

    /// The followers of partition 0 of `spec` leave its in-sync set.
    fn leader_alone_in_sync(image: &mut MetadataImage, spec: &TopicSpec) {
        let state = &spec.placement[0];
        image
            .apply(MetadataEvent::PartitionChanged {
                topic_id: spec.topic_id,
                partition: 0,
                leader: state.leader,
                leader_epoch: state.leader_epoch,
                in_sync: state.leader.into_iter().collect(),
            })
            .unwrap();
    }

    #[test]
    fn an_unclean_election_needs_the_topic_to_allow_it() {
        let mut image = with_brokers(&[0, 1]);
        let event = image
            .plan_create(
                "u",
                1,
                2,
                &entries(&[("unclean.leader.election.enable", "true")]),
                1,
            )
            .unwrap();
        image.apply(event).unwrap();
        let spec = image.topic("u").unwrap().clone();
        let leader = spec.placement[0].leader.unwrap();
        let other = spec.placement[0]
            .replicas
            .iter()
            .copied()
            .find(|&b| b != leader)
            .unwrap();
        // The follower left the in-sync set, then the leader died.
        leader_alone_in_sync(&mut image, &spec);
        fence(&mut image, leader, true);
        let after = state(&image, "u");
        assert_eq!(
            (after.leader, after.in_sync.clone()),
            (Some(other), vec![other])
        );
        // The same without the topic's consent leaves the partition without a leader.
        let mut image = with_brokers(&[0, 1]);
        let spec = create(&mut image, "c", 1, 2);
        let leader = spec.placement[0].leader.unwrap();
        leader_alone_in_sync(&mut image, &spec);
        fence(&mut image, leader, true);
        assert_eq!(state(&image, "c").leader, None);
    }

    #[test]
    fn a_restarted_leader_leads_at_a_new_epoch() {
        let mut image = with_brokers(&[0, 1, 2]);
        let spec = create(&mut image, "r", 1, 3);
        let leader = spec.placement[0].leader.unwrap();
        let record = image.broker(leader).unwrap().clone();
        let register = |incarnation| MetadataEvent::BrokerRegistered {
            broker: leader,
            host: record.host.clone(),
            port: record.port,
            shard_ports: vec![],
            incarnation,
        };
        image.apply(register(1)).unwrap();
        assert_eq!(
            state(&image, "r").leader_epoch,
            0,
            "the same run: no new epoch"
        );
        image.apply(register(2)).unwrap();
        let after = state(&image, "r");
        assert_eq!((after.leader, after.leader_epoch), (Some(leader), 1));
        // A snapshot rebuilds the same image.
        let again = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(state(&again, "r"), after);
    }

    fn create(image: &mut MetadataImage, name: &str, partitions: u32, factor: u32) -> TopicSpec {
        let event = image.plan_create(name, partitions, factor, &[], 1).unwrap();
        image.apply(event).unwrap();
        image.topic(name).unwrap().clone()
    }

    #[test]
    fn replicas_are_placed_on_distinct_live_brokers_and_leaders_spread() {
        let mut image = with_brokers(&[1, 2, 3]);
        let topic = create(&mut image, "orders", 6, 3);
        let mut leaders = std::collections::BTreeMap::new();
        for state in &topic.placement {
            let mut distinct = state.replicas.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct, [1, 2, 3]);
            assert_eq!(state.in_sync, state.replicas);
            *leaders.entry(state.leader.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert!(matches!(
            image.plan_create("more", 1, 4, &[], 1),
            Err(TopicError::InvalidReplicationFactor { factor: 4, live: 3 })
        ));
        image
            .apply(MetadataEvent::BrokerFenced {
                broker: 3,
                fenced: true,
            })
            .unwrap();
        assert!(image.plan_create("more", 1, 3, &[], 1).is_err());
        let two = create(&mut image, "two", 4, 2);
        assert!(two.placement.iter().all(|p| !p.replicas.contains(&3)));
    }

    #[test]
    fn the_image_survives_a_snapshot() {
        let mut image = with_brokers(&[1, 2, 3]);
        let orders = create(&mut image, "orders", 8, 3);
        create(&mut image, "gone", 1, 1);
        let delete = image.plan_delete("gone").unwrap();
        image.apply(delete).unwrap();
        let alter = image
            .plan_alter("orders", &entries(&[("retention.ms", "60000")]), &[])
            .unwrap();
        image.apply(alter).unwrap();
        image
            .apply(MetadataEvent::PartitionChanged {
                topic_id: orders.topic_id,
                partition: 2,
                leader: Some(orders.placement[2].replicas[1]),
                leader_epoch: 1,
                in_sync: orders.placement[2].replicas[1..].to_vec(),
            })
            .unwrap();
        image
            .apply(MetadataEvent::ProducerIdsReserved { next: 2000 })
            .unwrap();
        image
            .apply(MetadataEvent::BrokerFenced {
                broker: 2,
                fenced: true,
            })
            .unwrap();
        let back = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(
            back.topics().collect::<Vec<_>>(),
            image.topics().collect::<Vec<_>>()
        );
        assert_eq!(
            back.brokers().collect::<Vec<_>>(),
            image.brokers().collect::<Vec<_>>()
        );
        assert_eq!(back.producer_ids_reserved(), 2000);
        // Topic ids are never reused, even for a topic deleted before the snapshot.
        let again = back.plan_create("gone", 1, 1, &[], 1).unwrap();
        let MetadataEvent::TopicCreated { topic_id, .. } = again else {
            unreachable!()
        };
        assert!(topic_id > orders.topic_id + 1);
        assert!(MetadataImage::from_snapshot(b"not a snapshot").is_err());
    }

    #[test]
    fn bad_topic_requests_are_refused() {
        let image = with_brokers(&[1]);
        for name in [
            "",
            ".",
            "..",
            "__internal",
            "has space",
            "slash/name",
            &"x".repeat(250),
        ] {
            assert!(
                matches!(
                    image.plan_create(name, 1, 1, &[], 1),
                    Err(TopicError::InvalidName { .. })
                ),
                "{name:?}"
            );
        }
        assert!(matches!(
            image.plan_create("t", 0, 1, &[], 1),
            Err(TopicError::InvalidPartitions(0))
        ));
        assert!(matches!(
            image.plan_create("t", TOPIC_PARTITIONS_MAX + 1, 1, &[], 1),
            Err(TopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            image.plan_create("t", 1, 1, &entries(&[("bogus", "1")]), 1),
            Err(TopicError::Config(_))
        ));
        assert!(matches!(
            image.plan_delete("t"),
            Err(TopicError::NotFound(_))
        ));
        let mut image = image;
        create(&mut image, "t", 1, 1);
        assert!(image
            .plan_alter(
                "t",
                &entries(&[("segment.ms", "1"), ("segment.bytes", "5")]),
                &[]
            )
            .is_err());
        // An event naming a replica outside the partition's replicas is refused whole.
        let topic_id = image.topic("t").unwrap().topic_id;
        assert!(image
            .apply(MetadataEvent::PartitionChanged {
                topic_id,
                partition: 0,
                leader: Some(9),
                leader_epoch: 1,
                in_sync: vec![9],
            })
            .is_err());
        assert_eq!(image.topic("t").unwrap().placement[0].leader, Some(1));
    }

    #[test]
    fn access_rules_are_kept_and_survive_a_snapshot() {
        use crate::protocol::{Acl, AclOperation, ResourceKind};
        let rule = |principal: &str| Acl {
            principal: principal.into(),
            resource: ResourceKind::Topic,
            name: "orders".into(),
            operation: AclOperation::Read,
        };
        let mut image = MetadataImage::new();
        image
            .apply(MetadataEvent::AclsAltered {
                add: vec![rule("alice"), rule("bob")],
                remove: Vec::new(),
            })
            .unwrap();
        image
            .apply(MetadataEvent::AclsAltered {
                add: Vec::new(),
                remove: vec![rule("bob"), rule("nobody")],
            })
            .unwrap();
        assert_eq!(
            image.acls().cloned().collect::<Vec<_>>(),
            vec![rule("alice")]
        );
        let again = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(
            again.acls().cloned().collect::<Vec<_>>(),
            vec![rule("alice")]
        );
        let catalog = super::super::Catalog::from_image(1, 0, &again);
        assert_eq!(catalog.acls().rules(), &[rule("alice")]);
    }
}
