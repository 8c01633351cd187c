//! Data replication: leader → followers, pulled by the followers, shard to shard.
//!
//! ```text
//!  follower broker, shard f                      leader broker, shard l (owns the partition)
//!  ┌──────────────────────────┐  ReplicaFetch    ┌──────────────────────────────────────┐
//!  │ session (leader, l):     │ ───────────────▶ │ Leadership per partition:            │
//!  │  every partition it      │  fetch offsets,  │  followers' log ends and durable     │
//!  │  follows from there, one │  durable offsets │  offsets → high watermark cap        │
//!  │  request, 2 in flight    │ ◀─────────────── │  caught-up times → in-sync set       │
//!  │  batches appended as     │  batches as      │  (changes go to the controller)      │
//!  │  received                │  stored, leader  └──────────────────────────────────────┘
//!  └──────────────────────────┘  high watermark
//! ```
//!
//! Roles come from the catalogue (the controller's placement: replicas, leader, epoch,
//! in-sync set); every catalogue change re-derives them (`catalog_changed`). The
//! follower's shard owns its replica and the leader's shard owns the leader's, and the
//! follower talks to that shard's own port: no core is crossed on either side.
//!
//! `acks=all` waits for the high watermark: the lowest offset every in-sync replica holds
//! durably under its flush policy. Below `min.insync.replicas` in-sync replicas, `acks=all`
//! writes are refused (`NotEnoughReplicas`) and the high watermark stands still.
//!
//! Failover: the controller moves a fenced leader's partitions to a live in-sync replica
//! at a new leader epoch (`crate::cluster::metadata`). Every batch carries the epoch it was
//! appended at, and each log keeps where its epochs start (`crate::log::epochs`). A replica
//! that starts following (after a failover, a handover or its own restart) first asks the
//! leader where its last epoch ends there (`OffsetsForLeaderEpoch`) and cuts exactly the
//! suffix that diverges, before it fetches. A leader refuses fetches and produces that
//! name another epoch (`FencedLeaderEpoch` for an older one, `UnknownLeaderEpoch` for a
//! newer), so an old leader cut off from the others cannot move its high watermark: no
//! follower fetches from it at its epoch.

pub mod follower;
pub mod leader;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{Catalog, TopicSpec};
use crate::log::AppendFence;
use crate::server::context::ShardContext;
use crate::server::partitions::PartitionKey;

pub use leader::Leadership;

/// What this shard is for one partition replica it holds.
#[derive(Clone)]
pub enum Role {
    Leader(Rc<Leadership>),
    Follower { leader: Option<u32>, epoch: u32 },
}

/// One shard's replication state.
pub struct Replication {
    roles: RefCell<HashMap<PartitionKey, Role>>,
    sessions: RefCell<HashMap<(u32, usize), Rc<follower::Session>>>,
    /// Catalogue changes are taken one at a time, in order.
    changing: glommio::sync::Semaphore,
    /// The version of the last catalogue whose roles are in place.
    settled: std::cell::Cell<u64>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            roles: RefCell::default(),
            sessions: RefCell::default(),
            changing: glommio::sync::Semaphore::new(1),
            settled: std::cell::Cell::new(0),
        }
    }
}

impl Replication {
    /// The version of the last catalogue whose roles are in place (0: none yet). A shard
    /// serves only once its first catalogue has settled.
    pub fn settled_version(&self) -> u64 {
        self.settled.get()
    }

    /// Waits until a catalogue change that is settling now has settled.
    pub async fn wait_settled(&self) {
        let _turn = self
            .changing
            .acquire_permit(1)
            .await
            .expect("the catalogue gate is never closed");
    }

    /// Sets (or, with `None`, forgets) a partition's role. A leadership replaced by
    /// anything else is deposed: its waiting `acks=all` writes are answered at once.
    fn set_role(&self, key: PartitionKey, role: Option<Role>) {
        let old = match role {
            Some(role) => self.roles.borrow_mut().insert(key, role),
            None => self.roles.borrow_mut().remove(&key),
        };
        if let Some(Role::Leader(old)) = old {
            let kept = matches!(self.roles.borrow().get(&key), Some(Role::Leader(new)) if Rc::ptr_eq(new, &old));
            if !kept {
                old.depose();
            }
        }
    }

    pub fn role(&self, key: PartitionKey) -> Option<Role> {
        self.roles.borrow().get(&key).cloned()
    }

    pub fn leadership(&self, key: PartitionKey) -> Option<Rc<Leadership>> {
        match self.roles.borrow().get(&key) {
            Some(Role::Leader(leadership)) => Some(leadership.clone()),
            _ => None,
        }
    }

    pub fn leaderships(&self) -> Vec<Rc<Leadership>> {
        self.roles
            .borrow()
            .values()
            .filter_map(|role| match role {
                Role::Leader(leadership) => Some(leadership.clone()),
                Role::Follower { .. } => None,
            })
            .collect()
    }
}

/// The shard of `broker` that owns `partition` of `topic`.
pub fn owning_shard(catalog: &Catalog, broker: u32, topic: &str, partition: u32) -> usize {
    let shards = catalog
        .broker(broker)
        .map_or(1, |b| b.shard_ports.len().max(1));
    crate::shard::placement::shard_of(topic, partition, shards)
}

/// Re-derives this shard's roles after a catalogue change: leads what the catalogue says
/// it leads, follows the rest of what it holds, forgets what it no longer holds.
pub async fn catalog_changed(context: &ShardContext, new: &Arc<Catalog>) {
    let _one_at_a_time = context
        .replication
        .changing
        .acquire_permit(1)
        .await
        .expect("the catalogue gate is never closed");
    if new.version <= context.replication.settled.get() {
        return;
    }
    settle(context, new).await;
    context.replication.settled.set(new.version);
}

async fn settle(context: &ShardContext, new: &Arc<Catalog>) {
    let me = context.broker_id();
    let mut held: Vec<(Arc<TopicSpec>, u32)> = Vec::new();
    for topic in new.topics() {
        for (partition, state) in topic.placement.iter().enumerate() {
            let partition = partition as u32;
            if state.replicas.contains(&me)
                && context.ownership.partition_shard(&topic.name, partition) == context.shard_id
            {
                held.push((topic.clone(), partition));
            }
        }
    }
    let held_keys: std::collections::HashSet<PartitionKey> =
        held.iter().map(|(t, p)| (t.topic_id, *p)).collect();
    // Forget what is no longer held (a deleted topic).
    let gone: Vec<PartitionKey> = context
        .replication
        .roles
        .borrow()
        .keys()
        .filter(|key| !held_keys.contains(key))
        .copied()
        .collect();
    let offsets_topic = new
        .topic(crate::constants::OFFSETS_TOPIC_NAME)
        .map(|t| t.topic_id);
    for key in gone {
        let led = matches!(context.replication.role(key), Some(Role::Leader(_)));
        if led && Some(key.0) == offsets_topic {
            context.groups.abandon(key.1);
        }
        context.replication.set_role(key, None);
        follower::unfollow(context, key);
        if new.topics().any(|t| t.topic_id == key.0) {
            // The topic lives on elsewhere: its replicas moved away from this broker.
            context.partitions.drop_partition(key).await;
        }
    }
    // Partitions whose leader came back on another address are followed again below.
    for key in follower::readdress(context, new) {
        context.replication.set_role(key, None);
    }
    let offsets_id = new
        .topic(crate::constants::OFFSETS_TOPIC_NAME)
        .map(|t| t.topic_id);
    // Open (recover) the replicas not open yet, `REPLICAS_OPENED_AT_ONCE` at a time.
    use futures::StreamExt;
    let opened: Vec<_> = futures::stream::iter(held)
        .map(|(topic, partition)| async move {
            let log = context.partitions.get(&topic, partition).await;
            (topic, partition, log)
        })
        .buffered(crate::constants::REPLICAS_OPENED_AT_ONCE)
        .collect()
        .await;
    for (topic, partition, log) in opened {
        let state = topic
            .partition(partition)
            .expect("held partitions exist")
            .clone();
        let key = (topic.topic_id, partition);
        let current = context.replication.role(key);
        let log = match log {
            Ok(log) => log,
            Err(error) => {
                tracing::error!(topic = %topic.name, partition, %error, "cannot open a replica");
                continue;
            }
        };
        // A restarted broker leads only once the controller knows this run (its
        // registration moved what it leads to a new epoch, so no replica can take a batch
        // of this run for one of the run before).
        let registered = new
            .broker(me)
            .is_some_and(|b| b.incarnation == context.advertised.incarnation);
        if state.leader == Some(me) && !registered {
            tracing::debug!(topic = %topic.name, partition, "leading once this run is registered");
            log.set_fence(AppendFence::Closed);
            follower::unfollow(context, key);
            context.replication.set_role(
                key,
                Some(Role::Follower {
                    leader: None,
                    epoch: state.leader_epoch,
                }),
            );
            continue;
        }
        if state.leader == Some(me) {
            match current {
                Some(Role::Leader(leadership)) if leadership.epoch == state.leader_epoch => {
                    leadership.update(&topic, &state, new.applied);
                }
                _ => {
                    follower::unfollow(context, key);
                    log.set_fence(AppendFence::Leader(state.leader_epoch));
                    let leadership = Rc::new(Leadership::new(
                        topic.clone(),
                        partition,
                        me,
                        &state,
                        log.clone(),
                    ));
                    leadership.recompute_high_watermark();
                    tracing::debug!(topic = %topic.name, partition, epoch = state.leader_epoch, "leading");
                    context
                        .replication
                        .set_role(key, Some(Role::Leader(leadership)));
                    if Some(topic.topic_id) == offsets_id {
                        // This shard now coordinates the groups of this offsets partition.
                        if let Err(error) = context.groups.adopt(partition, log.clone()).await {
                            tracing::error!(partition, %error, "cannot load an offsets partition");
                        }
                    }
                }
            }
        } else {
            let was_leader = matches!(current, Some(Role::Leader(_)));
            let same = matches!(current, Some(Role::Follower { leader, epoch }) if leader == state.leader && epoch == state.leader_epoch);
            if same {
                continue;
            }
            if was_leader && Some(topic.topic_id) == offsets_id {
                context.groups.abandon(partition);
            }
            log.set_fence(match state.leader {
                Some(_) => AppendFence::Follower(state.leader_epoch),
                None => AppendFence::Closed,
            });
            context.replication.set_role(
                key,
                Some(Role::Follower {
                    leader: state.leader,
                    epoch: state.leader_epoch,
                }),
            );
            follower::unfollow(context, key);
            if let Some(leader) = state.leader {
                tracing::debug!(topic = %topic.name, partition, leader, epoch = state.leader_epoch, "following");
                follower::follow(
                    context,
                    new,
                    &topic,
                    partition,
                    leader,
                    state.leader_epoch,
                    log,
                );
            }
        }
    }
}
