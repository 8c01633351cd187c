//! What one shard of a running broker holds, and how it reaches the other shards.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use super::catalog::Catalog;
use super::partitions::Partitions;
use super::profile::Profile;
use super::work::{self, PartitionOutcome, PartitionWork};
use crate::cluster::{MetadataStore, TopicSpec};
use crate::protocol::{Request, Response};
use crate::shard::shard_of;

/// The shard that runs the controller (the topic catalogue).
pub const CONTROLLER_SHARD: usize = 0;

/// A message from one shard to another.
pub enum ShardMessage {
    /// From the controller: a new catalogue. Partitions of `deleted` topics are closed and
    /// removed; `applied` is answered once done.
    Catalog {
        catalog: Arc<Catalog>,
        deleted: Vec<Arc<TopicSpec>>,
        applied: oneshot::Sender<()>,
    },
    /// To the controller: a catalogue change (create, delete, alter config).
    Admin {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// Partition work for the shard that owns the partitions, batched per destination.
    Partitions {
        work: Vec<PartitionWork>,
        reply: oneshot::Sender<Vec<PartitionOutcome>>,
    },
    /// Answer once any of these partitions (owned by the receiver) has data past the offset,
    /// or after `wait` (a long-polling fetch on another shard).
    Wait {
        waits: Vec<(Arc<TopicSpec>, u32, u64)>,
        wait: std::time::Duration,
        reply: oneshot::Sender<()>,
    },
    /// A group request for the group's coordinator (this shard), or a part of ListGroups.
    Group {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A shard has recovered its partitions and is serving (to the controller, for the log).
    Ready { shard: usize, partitions: usize },
}

/// Addresses clients are told about.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
    pub shard_ports: Vec<u16>,
}

/// One shard's state. Owned by that shard's executor; shared by its tasks through `Rc`.
pub struct ShardContext {
    pub shard_id: usize,
    pub shard_count: usize,
    pub broker_id: u32,
    pub advertised: Advertised,
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub partitions: Partitions,
    pub catalog: RefCell<Arc<Catalog>>,
    pub senders: Option<Senders<ShardMessage>>,
    /// The consumer groups this shard coordinates.
    pub groups: crate::group::Coordinator,
    /// The topic catalogue; present on the controller shard only.
    pub controller: Option<glommio::sync::RwLock<MetadataStore>>,
    /// Set by the signal handler; every shard watches it.
    pub shutdown_requested: Arc<AtomicBool>,
    /// This shard has begun shutting down: it accepts nothing new.
    pub stopping: Cell<bool>,
    pub open_connections: Cell<usize>,
    /// Requests being handled right now (shutdown waits for them).
    pub in_flight_requests: Cell<usize>,
    /// Other shards that reported ready (counted on the controller).
    pub ready_shards: Arc<std::sync::atomic::AtomicUsize>,
}

impl ShardContext {
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn owner_of(&self, topic: &str, partition: u32) -> usize {
        shard_of(topic, partition, self.shard_count)
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Relaxed)
    }

    /// Sends a message to another shard (waits while its channel is full).
    pub async fn send(&self, shard: usize, message: ShardMessage) -> Result<(), String> {
        assert_ne!(shard, self.shard_id, "local work is not sent over the mesh");
        let senders = self
            .senders
            .as_ref()
            .expect("a broker with several shards has a mesh");
        senders
            .send_to(shard, message)
            .await
            .map_err(|_| format!("shard {shard} is gone"))
    }

    /// Runs every piece of work on the shard that owns its partition — locally when that is
    /// this shard, otherwise as one message per destination shard — and returns the outcomes
    /// in the order of `work`.
    pub async fn route(&self, work: Vec<PartitionWork>) -> Vec<PartitionOutcome> {
        let count = work.len();
        let mut per_shard: Vec<Vec<(usize, PartitionWork)>> =
            (0..self.shard_count).map(|_| Vec::new()).collect();
        for (index, item) in work.into_iter().enumerate() {
            let (topic, partition) = item.topic_partition();
            let owner = self.owner_of(&topic.name, partition);
            per_shard[owner].push((index, item));
        }
        let mut remote = Vec::new();
        let mut local = Vec::new();
        let mut unanswered: Vec<Option<PartitionOutcome>> = (0..count).map(|_| None).collect();
        for (shard, items) in per_shard.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (indexes, items): (Vec<usize>, Vec<PartitionWork>) = items.into_iter().unzip();
            for (&index, item) in indexes.iter().zip(&items) {
                unanswered[index] =
                    Some(item.failed(crate::protocol::ErrorCode::BrokerShuttingDown));
            }
            if shard == self.shard_id {
                local.push((indexes, items));
            } else {
                let (reply, outcome) = oneshot::channel();
                let sent = self
                    .send(shard, ShardMessage::Partitions { work: items, reply })
                    .await;
                remote.push((indexes, sent.map(|()| outcome)));
            }
        }
        let mut outcomes: Vec<Option<PartitionOutcome>> = (0..count).map(|_| None).collect();
        for (indexes, items) in local {
            let results =
                futures::future::join_all(items.into_iter().map(|item| work::execute(self, item)))
                    .await;
            for (index, outcome) in indexes.into_iter().zip(results) {
                outcomes[index] = Some(outcome);
            }
        }
        for (indexes, outcome) in remote {
            let results = match outcome {
                Ok(receiver) => receiver.await.ok(),
                Err(_) => None,
            };
            if let Some(results) = results {
                for (index, outcome) in indexes.into_iter().zip(results) {
                    outcomes[index] = Some(outcome);
                }
            }
        }
        // A shard that stopped answering (it is shutting down) yields a retriable error.
        outcomes
            .into_iter()
            .zip(unanswered)
            .map(|(outcome, failed)| outcome.or(failed).expect("every index has work"))
            .collect()
    }
}
