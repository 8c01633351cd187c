//! The controller: the one writer of the cluster's metadata. It runs on the controller
//! shard of every voter (`crate::shard::ownership`); the voter that leads the Raft group
//! (`super::raft`) takes every change, checks it against the metadata image, proposes it
//! and answers once it is committed and applied. The others answer `NotLeader` and the
//! server forwards to the leader. It knows the image, the Raft node and the protocol's
//! admin messages, not the network or the mesh.
//!
//! It also keeps brokers' liveness: every broker heartbeats the leader; one silent for
//! its session timeout (`--broker-session-timeout-ms`) is fenced in the log (and unfenced when it returns).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::{Archive, Deserialize, Serialize};

use super::catalog::Catalog;
use super::metadata::{MetadataEvent, TopicError};
use super::raft::{ControllerNode, ProposeError};
use crate::constants::{
    OBSERVER_FETCH_WAIT_MS, OFFSETS_PARTITIONS, OFFSETS_SEGMENT_AGE_MS, OFFSETS_SEGMENT_BYTES,
    OFFSETS_TOPIC_NAME, PRODUCER_ID_BLOCK,
};
use crate::protocol::{
    AlterConfigsRequest, AlterConfigsResponse, AlterConfigsResult, CreateTopicResult,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicResult, DeleteTopicsRequest,
    DeleteTopicsResponse, ErrorCode, InitProducerIdRequest, InitProducerIdResponse,
};

/// A catalogue change a client asked for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum AdminRequest {
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    AlterConfigs(AlterConfigsRequest),
    AlterAcls(crate::protocol::AlterAclsRequest),
    AlterUsers(crate::protocol::AlterUsersRequest),
    AlterQuotas(crate::protocol::AlterQuotasRequest),
}

/// A broker's heartbeat: who it is and where clients reach it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub broker: u32,
    pub host: String,
    pub port: u16,
    pub shard_ports: Vec<u16>,
    /// A new value at every start of the broker.
    pub incarnation: u64,
}

/// A partition leader's request to change the in-sync set (it shrank or grew).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    pub topic_id: u64,
    pub partition: u32,
    /// The leader asking, and the epoch it leads at: a stale leader's request is refused.
    pub leader: u32,
    pub leader_epoch: u32,
    pub in_sync: Vec<u32>,
}

/// Move a partition's leadership (a clean handover) to `to`, or to the next in-sync
/// replica after the current leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ElectLeader {
    pub topic: String,
    pub partition: u32,
    pub to: Option<u32>,
}

/// Move a partition's replicas to `replicas` (see `MetadataEvent::ReassignmentStarted`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reassign {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
}

/// A broker stopping gracefully asks to be fenced first (a controlled shutdown): the
/// partitions it leads move to other in-sync replicas at once, instead of after its
/// session times out. Its heartbeats from the same run no longer unfence it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    pub broker: u32,
    pub incarnation: u64,
}

/// Everything the controller leader is asked.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum ControllerCall {
    Admin(AdminRequest),
    InitProducerId(InitProducerIdRequest),
    Heartbeat(BrokerHeartbeat),
    AlterPartition(AlterPartition),
    ElectLeader(ElectLeader),
    ControlledShutdown(Leaving),
    Reassign(Reassign),
    /// An observer (a broker that is not a voter) asks for the metadata image once the
    /// leader has applied past `after` (see `super::observer`).
    FetchImage {
        after: u64,
    },
}

/// The controller's answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum ControllerReply {
    CreateTopics(CreateTopicsResponse),
    DeleteTopics(DeleteTopicsResponse),
    AlterConfigs(AlterConfigsResponse),
    AlterAcls(crate::protocol::AlterAclsResponse),
    AlterUsers(crate::protocol::AlterUsersResponse),
    AlterQuotas(crate::protocol::AlterQuotasResponse),
    InitProducerId(InitProducerIdResponse),
    /// For heartbeats, partition changes and elections.
    Done {
        error: ErrorCode,
        message: String,
    },
    /// The image at applied index `applied`, or `None` when nothing past the index the
    /// observer holds was applied within `OBSERVER_FETCH_WAIT_MS`.
    Image {
        applied: u64,
        snapshot: Option<Vec<u8>>,
    },
    /// This voter does not lead; ask `leader` (a node id) if known.
    NotLeader {
        leader: Option<u64>,
    },
}

impl ControllerReply {
    fn done(result: Result<(), (ErrorCode, String)>) -> ControllerReply {
        match result {
            Ok(()) => ControllerReply::Done {
                error: ErrorCode::None,
                message: String::new(),
            },
            Err((error, message)) => ControllerReply::Done { error, message },
        }
    }
}

/// The controller of one voter. Owned by the controller shard.
pub struct Controller {
    node: Rc<ControllerNode>,
    /// Changes are checked and proposed one at a time, so each is checked against an
    /// image that holds every change before it.
    changes: glommio::sync::Semaphore,
    /// The next producer id to hand out, and the term it belongs to: a new leader starts
    /// past every id reserved before it.
    next_producer_id: Cell<(u64, u64)>,
    /// When each broker was last heard from (on the leader), and the term that started
    /// the clock (a new leader gives every broker a fresh session).
    heard: RefCell<(u64, HashMap<u32, Instant>)>,
    /// Runs of brokers that are shutting down (see `Leaving`).
    leaving: RefCell<std::collections::HashSet<(u32, u64)>>,
    default_replication_factor: u32,
    session_timeout: Duration,
}

fn topic_error_code(error: &TopicError) -> ErrorCode {
    match error {
        TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
        TopicError::NotFound(_) => ErrorCode::UnknownTopicOrPartition,
        TopicError::InvalidName { .. } => ErrorCode::InvalidTopicName,
        TopicError::InvalidPartitions(_) => ErrorCode::InvalidPartitionCount,
        TopicError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
        TopicError::Config(_) => ErrorCode::InvalidConfig,
        TopicError::Storage(_) => ErrorCode::StorageError,
    }
}

fn propose_error(error: ProposeError) -> (ErrorCode, String) {
    let code = match error {
        ProposeError::NotLeader { .. } => ErrorCode::NotController,
        ProposeError::TimedOut(_) => ErrorCode::RequestTimedOut,
        ProposeError::Refused(_) => ErrorCode::InvalidRequest,
        ProposeError::Stopped(_) => ErrorCode::StorageError,
    };
    (code, error.to_string())
}

impl Controller {
    pub fn new(
        node: Rc<ControllerNode>,
        default_replication_factor: u32,
        session_timeout_ms: u64,
    ) -> Controller {
        Controller {
            node,
            changes: glommio::sync::Semaphore::new(1),
            next_producer_id: Cell::new((0, 0)),
            heard: RefCell::new((0, HashMap::new())),
            leaving: RefCell::default(),
            default_replication_factor,
            session_timeout: Duration::from_millis(session_timeout_ms),
        }
    }

    pub fn node(&self) -> &Rc<ControllerNode> {
        &self.node
    }

    /// The catalogue every shard serves from, as of the image now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::new(Catalog::from_image(
            self.node.version(),
            self.node.applied(),
            &self.node.image(),
        ))
    }

    /// Answers a call on the leader; `NotLeader` elsewhere, and on a new leader until it
    /// has applied what earlier leaders committed (the caller asks again).
    pub async fn call(&self, call: ControllerCall) -> ControllerReply {
        if !self.node.leads_with_current_image() {
            return ControllerReply::NotLeader {
                leader: self.node.leader(),
            };
        }
        if let ControllerCall::FetchImage { after } = call {
            // Read-only: it does not wait behind changes being checked and proposed.
            return self.fetch_image(after).await;
        }
        let _one_at_a_time = self
            .changes
            .acquire_permit(1)
            .await
            .expect("the change gate is never closed");
        match call {
            ControllerCall::Admin(AdminRequest::CreateTopics(request)) => {
                ControllerReply::CreateTopics(self.create_topics(request).await)
            }
            ControllerCall::Admin(AdminRequest::DeleteTopics(request)) => {
                ControllerReply::DeleteTopics(self.delete_topics(request).await)
            }
            ControllerCall::Admin(AdminRequest::AlterConfigs(request)) => {
                ControllerReply::AlterConfigs(self.alter_configs(request).await)
            }
            ControllerCall::Admin(AdminRequest::AlterAcls(request)) => {
                let (error, message) = match self.alter_acls(request).await {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(failure) => failure,
                };
                ControllerReply::AlterAcls(crate::protocol::AlterAclsResponse { error, message })
            }
            ControllerCall::Admin(AdminRequest::AlterUsers(request)) => {
                let (error, message) = match self.alter_users(request).await {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(failure) => failure,
                };
                ControllerReply::AlterUsers(crate::protocol::AlterUsersResponse { error, message })
            }
            ControllerCall::Admin(AdminRequest::AlterQuotas(request)) => {
                let (error, message) = match self.alter_quotas(request).await {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(failure) => failure,
                };
                ControllerReply::AlterQuotas(crate::protocol::AlterQuotasResponse {
                    error,
                    message,
                })
            }
            ControllerCall::InitProducerId(request) => {
                ControllerReply::InitProducerId(self.init_producer_id(request).await)
            }
            ControllerCall::Heartbeat(heartbeat) => {
                ControllerReply::done(self.heartbeat(heartbeat).await)
            }
            ControllerCall::AlterPartition(change) => {
                ControllerReply::done(self.alter_partition(change).await)
            }
            ControllerCall::ElectLeader(elect) => {
                ControllerReply::done(self.elect_leader(elect).await)
            }
            ControllerCall::ControlledShutdown(leaving) => {
                ControllerReply::done(self.controlled_shutdown(leaving).await)
            }
            ControllerCall::Reassign(reassign) => {
                ControllerReply::done(self.reassign(reassign).await)
            }
            ControllerCall::FetchImage { after } => self.fetch_image(after).await,
        }
    }

    /// Sets quotas, each checked first: one bad one refuses them all.
    async fn alter_quotas(
        &self,
        request: crate::protocol::AlterQuotasRequest,
    ) -> Result<(), (ErrorCode, String)> {
        for quota in &request.set {
            crate::security::quota::check(quota).map_err(|m| (ErrorCode::InvalidRequest, m))?;
        }
        for quota in request.set {
            self.propose(MetadataEvent::QuotaSet { quota }).await?;
        }
        Ok(())
    }

    /// Stores and removes users' credentials, each checked first: one bad one refuses all.
    async fn alter_users(
        &self,
        request: crate::protocol::AlterUsersRequest,
    ) -> Result<(), (ErrorCode, String)> {
        for credential in &request.upsert {
            crate::security::scram::check_credential(credential).map_err(|message| {
                (
                    ErrorCode::InvalidRequest,
                    format!("{}: {message}", credential.name),
                )
            })?;
        }
        for credential in request.upsert {
            self.propose(MetadataEvent::UserUpserted { credential })
                .await?;
        }
        for name in request.delete {
            self.propose(MetadataEvent::UserDeleted { name }).await?;
        }
        Ok(())
    }

    /// Adds and removes access rules, each checked first: one bad rule refuses them all.
    async fn alter_acls(
        &self,
        request: crate::protocol::AlterAclsRequest,
    ) -> Result<(), (ErrorCode, String)> {
        let check = |acls: Vec<crate::protocol::Acl>| {
            acls.iter()
                .map(crate::security::acl::normalize)
                .collect::<Result<Vec<_>, String>>()
                .map_err(|message| (ErrorCode::InvalidRequest, message))
        };
        let add = check(request.add)?;
        let remove = check(request.remove)?;
        self.propose(MetadataEvent::AclsAltered { add, remove })
            .await
    }

    /// The image once this leader has applied past `after`, waiting a bounded time for it.
    async fn fetch_image(&self, after: u64) -> ControllerReply {
        let deadline = Instant::now() + Duration::from_millis(OBSERVER_FETCH_WAIT_MS);
        while self.node.status().applied <= after && Instant::now() < deadline {
            let seen = self.node.version();
            crate::server::work::with_deadline(deadline, self.node.changed(seen)).await;
            if !self.node.leads_with_current_image() {
                return ControllerReply::NotLeader {
                    leader: self.node.leader(),
                };
            }
        }
        let applied = self.node.status().applied;
        let snapshot = (applied > after).then(|| self.node.image().to_snapshot());
        ControllerReply::Image { applied, snapshot }
    }

    async fn propose(&self, event: MetadataEvent) -> Result<(), (ErrorCode, String)> {
        self.node.propose(&event).await.map_err(propose_error)
    }

    async fn create_topics(&self, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut results = Vec::new();
        for topic in request.topics {
            let entries: Vec<(String, String)> = topic
                .configs
                .into_iter()
                .map(|c| (c.key, c.value))
                .collect();
            let factor = match topic.replication_factor {
                0 => self.default_replication_factor,
                factor => u32::from(factor),
            };
            let planned = self.node.image().plan_create(
                &topic.name,
                topic.partitions,
                factor,
                &entries,
                crate::clock::system().wall_ms(),
            );
            let result = match planned {
                Err(error) => Err((topic_error_code(&error), error.to_string())),
                Ok(_) if request.validate_only => Ok(()),
                Ok(event) => self.propose(event).await,
            };
            let (error, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
            results.push(CreateTopicResult {
                name: topic.name,
                error,
                message,
            });
        }
        CreateTopicsResponse { topics: results }
    }

    async fn delete_topics(&self, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut results = Vec::new();
        for name in request.names {
            let planned = self.node.image().plan_delete(&name);
            let result = match planned {
                Err(error) => Err((topic_error_code(&error), error.to_string())),
                Ok(event) => self.propose(event).await,
            };
            let (error, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
            results.push(DeleteTopicResult {
                name,
                error,
                message,
            });
        }
        DeleteTopicsResponse { topics: results }
    }

    async fn alter_configs(&self, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut results = Vec::new();
        for topic in request.topics {
            let set: Vec<(String, String)> =
                topic.set.into_iter().map(|c| (c.key, c.value)).collect();
            let planned = self
                .node
                .image()
                .plan_alter(&topic.name, &set, &topic.delete);
            let result = match planned {
                Err(error) => Err((topic_error_code(&error), error.to_string())),
                Ok(_) if request.validate_only => Ok(()),
                Ok(event) => self.propose(event).await,
            };
            let (error, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
            results.push(AlterConfigsResult {
                topic: topic.name,
                error,
                message,
            });
        }
        AlterConfigsResponse { topics: results }
    }

    /// Hands out a new idempotent producer id (epoch 0), reserved durably first: ids are
    /// reserved in the log in blocks, so neither a restart nor a new leader repeats one.
    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let term = self.node.term();
        let (mut next, at_term) = self.next_producer_id.get();
        let reserved = self.node.image().producer_ids_reserved();
        if at_term != term {
            next = reserved;
        }
        let result = if next >= reserved {
            self.propose(MetadataEvent::ProducerIdsReserved {
                next: next + PRODUCER_ID_BLOCK,
            })
            .await
        } else {
            Ok(())
        };
        match result.and_then(|()| {
            i64::try_from(next)
                .map_err(|_| (ErrorCode::StorageError, "producer ids exhausted".into()))
        }) {
            Ok(producer_id) => {
                self.next_producer_id.set((next + 1, term));
                tracing::debug!(producer_id, client_id = %request.client_id, "producer id handed out");
                InitProducerIdResponse {
                    error: ErrorCode::None,
                    message: String::new(),
                    producer_id,
                    producer_epoch: 0,
                }
            }
            Err((error, message)) => InitProducerIdResponse {
                error,
                message,
                producer_id: -1,
                producer_epoch: -1,
            },
        }
    }

    async fn heartbeat(&self, heartbeat: BrokerHeartbeat) -> Result<(), (ErrorCode, String)> {
        self.note_heard(heartbeat.broker);
        let known = self.node.image().broker(heartbeat.broker).cloned();
        let changed = known.as_ref().is_none_or(|b| {
            b.host != heartbeat.host
                || b.port != heartbeat.port
                || b.shard_ports != heartbeat.shard_ports
                || b.incarnation != heartbeat.incarnation
        });
        if changed {
            tracing::info!(broker = heartbeat.broker, host = %heartbeat.host, port = heartbeat.port, "broker registered");
            self.propose(MetadataEvent::BrokerRegistered {
                broker: heartbeat.broker,
                host: heartbeat.host,
                port: heartbeat.port,
                shard_ports: heartbeat.shard_ports,
                incarnation: heartbeat.incarnation,
            })
            .await?;
        }
        let leaving = self
            .leaving
            .borrow()
            .contains(&(heartbeat.broker, heartbeat.incarnation));
        if known.is_some_and(|b| b.fenced) && !leaving {
            tracing::info!(broker = heartbeat.broker, "broker is back: unfenced");
            self.propose(MetadataEvent::BrokerFenced {
                broker: heartbeat.broker,
                fenced: false,
            })
            .await?;
        }
        self.create_offsets_log().await
    }

    /// Creates the offsets log (the internal topic that holds consumer groups' offsets)
    /// once enough brokers are live to give it the default replication factor.
    async fn create_offsets_log(&self) -> Result<(), (ErrorCode, String)> {
        let planned = {
            let image = self.node.image();
            if image.topic(OFFSETS_TOPIC_NAME).is_some() {
                return Ok(());
            }
            let live = image.brokers().filter(|b| !b.fenced).count();
            if live < self.default_replication_factor as usize {
                return Ok(());
            }
            let entries: Vec<(String, String)> = [
                ("segment.bytes", OFFSETS_SEGMENT_BYTES.to_string()),
                ("segment.ms", OFFSETS_SEGMENT_AGE_MS.to_string()),
                ("retention.ms", "-1".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            image.plan_create_internal(
                OFFSETS_TOPIC_NAME,
                OFFSETS_PARTITIONS,
                self.default_replication_factor,
                &entries,
                crate::clock::system().wall_ms(),
            )
        };
        let event = planned.map_err(|e| (topic_error_code(&e), e.to_string()))?;
        tracing::info!(
            partitions = OFFSETS_PARTITIONS,
            replication_factor = self.default_replication_factor,
            "creating the offsets log"
        );
        self.propose(event).await
    }

    fn note_heard(&self, broker: u32) {
        let term = self.node.term();
        let mut heard = self.heard.borrow_mut();
        if heard.0 != term {
            // A new leader: every broker starts a fresh session now.
            let now = Instant::now();
            let brokers: Vec<u32> = self.node.image().brokers().map(|b| b.broker).collect();
            heard.0 = term;
            heard.1 = brokers.into_iter().map(|b| (b, now)).collect();
        }
        heard.1.insert(broker, Instant::now());
    }

    /// On the leader: fences brokers whose heartbeats stopped. Called periodically.
    pub async fn fence_silent_brokers(&self) {
        if !self.node.leads_with_current_image() {
            return;
        }
        self.note_heard_nobody();
        let session = self.session_timeout;
        let silent: Vec<u32> = {
            let heard = self.heard.borrow();
            self.node
                .image()
                .brokers()
                .filter(|b| !b.fenced)
                .filter(|b| {
                    heard
                        .1
                        .get(&b.broker)
                        .is_none_or(|at| at.elapsed() > session)
                })
                .map(|b| b.broker)
                .collect()
        };
        for broker in silent {
            let _gate = self
                .changes
                .acquire_permit(1)
                .await
                .expect("the change gate is never closed");
            tracing::warn!(broker, "broker missed its session: fenced");
            if let Err((_, error)) = self
                .propose(MetadataEvent::BrokerFenced {
                    broker,
                    fenced: true,
                })
                .await
            {
                tracing::warn!(broker, %error, "fencing a broker failed");
            }
        }
    }

    fn note_heard_nobody(&self) {
        let term = self.node.term();
        if self.heard.borrow().0 != term {
            let now = Instant::now();
            let brokers: Vec<u32> = self.node.image().brokers().map(|b| b.broker).collect();
            *self.heard.borrow_mut() = (term, brokers.into_iter().map(|b| (b, now)).collect());
        }
    }

    async fn alter_partition(&self, change: AlterPartition) -> Result<(), (ErrorCode, String)> {
        let current = {
            let image = self.node.image();
            let topic = image.topic_by_id(change.topic_id).ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("no topic with id {}", change.topic_id),
            ))?;
            topic.partition(change.partition).cloned().ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("{} has no partition {}", topic.name, change.partition),
            ))?
        };
        if current.leader != Some(change.leader) || current.leader_epoch != change.leader_epoch {
            return Err((
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "broker {} at epoch {} does not lead (leader {:?} at epoch {})",
                    change.leader, change.leader_epoch, current.leader, current.leader_epoch
                ),
            ));
        }
        if !change.in_sync.contains(&change.leader)
            || !change.in_sync.iter().all(|b| current.replicas.contains(b))
        {
            return Err((
                ErrorCode::InvalidRequest,
                "the in-sync set must hold the leader and only replicas".into(),
            ));
        }
        if current.in_sync == change.in_sync {
            return Ok(());
        }
        // A joiner must be alive: a fenced replica may have lost what it fetched, and the
        // leader drops its wish on this refusal (which is final: nothing was proposed).
        let fenced_joiner = {
            let image = self.node.image();
            change
                .in_sync
                .iter()
                .copied()
                .filter(|b| !current.in_sync.contains(b))
                .find(|&b| image.broker(b).is_none_or(|record| record.fenced))
        };
        if let Some(joiner) = fenced_joiner {
            return Err((
                ErrorCode::IneligibleReplica,
                format!("replica {joiner} is not alive: it cannot join the in-sync set"),
            ));
        }
        tracing::info!(topic_id = change.topic_id, partition = change.partition, from = ?current.in_sync, to = ?change.in_sync, "in-sync set changed");
        self.propose(MetadataEvent::PartitionAltered {
            topic_id: change.topic_id,
            partition: change.partition,
            expected_epoch: current.leader_epoch,
            leader: current.leader,
            leader_epoch: current.leader_epoch,
            in_sync: change.in_sync,
        })
        .await?;
        self.complete_reassignments_now().await
    }

    async fn reassign(&self, reassign: Reassign) -> Result<(), (ErrorCode, String)> {
        let (topic_id, state) = {
            let image = self.node.image();
            let topic = image.topic(&reassign.topic).ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", reassign.topic),
            ))?;
            let state = topic.partition(reassign.partition).cloned().ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("{} has no partition {}", reassign.topic, reassign.partition),
            ))?;
            let mut distinct = reassign.replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if reassign.replicas.is_empty() || distinct.len() != reassign.replicas.len() {
                return Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replicas {:?}: one or more distinct brokers",
                        reassign.replicas
                    ),
                ));
            }
            if let Some(unknown) = reassign
                .replicas
                .iter()
                .find(|&&b| image.broker(b).is_none_or(|r| r.fenced))
            {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("broker {unknown} is not a live registered broker"),
                ));
            }
            if state.target.is_some() {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!(
                        "{}/{} is already moving to {:?}",
                        reassign.topic,
                        reassign.partition,
                        state.target.unwrap_or_default()
                    ),
                ));
            }
            (topic.topic_id, state)
        };
        if state.replicas == reassign.replicas {
            return Ok(());
        }
        tracing::info!(topic = %reassign.topic, partition = reassign.partition, from = ?state.replicas, to = ?reassign.replicas, "reassignment started");
        self.propose(MetadataEvent::ReassignmentStarted {
            topic_id,
            partition: reassign.partition,
            target: reassign.replicas,
        })
        .await?;
        self.complete_reassignments_now().await
    }

    /// Completes every reassignment whose target replicas are all in sync.
    async fn complete_reassignments_now(&self) -> Result<(), (ErrorCode, String)> {
        let done: Vec<(u64, u32)> = {
            let image = self.node.image();
            image
                .topics()
                .flat_map(|topic| {
                    topic
                        .placement
                        .iter()
                        .enumerate()
                        .filter(|(_, state)| {
                            state
                                .target
                                .as_ref()
                                .is_some_and(|t| t.iter().all(|b| state.in_sync.contains(b)))
                        })
                        .map(move |(partition, _)| (topic.topic_id, partition as u32))
                })
                .collect()
        };
        for (topic_id, partition) in done {
            tracing::info!(topic_id, partition, "reassignment complete");
            self.propose(MetadataEvent::ReassignmentCompleted {
                topic_id,
                partition,
            })
            .await?;
        }
        Ok(())
    }

    /// On the leader: completes reassignments whose new replicas caught up. Called
    /// periodically.
    pub async fn complete_reassignments(&self) {
        if !self.node.leads_with_current_image() {
            return;
        }
        let _gate = self
            .changes
            .acquire_permit(1)
            .await
            .expect("the change gate is never closed");
        if let Err((_, error)) = self.complete_reassignments_now().await {
            tracing::warn!(%error, "completing a reassignment failed");
        }
    }

    async fn controlled_shutdown(&self, leaving: Leaving) -> Result<(), (ErrorCode, String)> {
        self.leaving
            .borrow_mut()
            .insert((leaving.broker, leaving.incarnation));
        let fenced = self
            .node
            .image()
            .broker(leaving.broker)
            .is_none_or(|b| b.fenced);
        if fenced {
            return Ok(());
        }
        tracing::info!(
            broker = leaving.broker,
            "controlled shutdown: fenced, its partitions move"
        );
        self.propose(MetadataEvent::BrokerFenced {
            broker: leaving.broker,
            fenced: true,
        })
        .await
    }

    async fn elect_leader(&self, elect: ElectLeader) -> Result<(), (ErrorCode, String)> {
        let (topic_id, current) = {
            let image = self.node.image();
            let topic = image.topic(&elect.topic).ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{}' does not exist", elect.topic),
            ))?;
            let state = topic.partition(elect.partition).cloned().ok_or((
                ErrorCode::UnknownTopicOrPartition,
                format!("{} has no partition {}", elect.topic, elect.partition),
            ))?;
            (topic.topic_id, state)
        };
        let live = |b: &u32| self.node.image().broker(*b).is_some_and(|r| !r.fenced);
        let to = match elect.to {
            Some(to) => to,
            None => {
                // The next in-sync replica after the current leader, in replica order.
                let at = current
                    .leader
                    .and_then(|l| current.replicas.iter().position(|&r| r == l))
                    .unwrap_or(0);
                let n = current.replicas.len();
                (1..=n)
                    .map(|i| current.replicas[(at + i) % n])
                    .find(|b| current.in_sync.contains(b) && live(b) && Some(*b) != current.leader)
                    .ok_or((
                        ErrorCode::NotEnoughReplicas,
                        "no other live in-sync replica to lead".to_string(),
                    ))?
            }
        };
        if !current.in_sync.contains(&to) || !live(&to) {
            return Err((
                ErrorCode::NotEnoughReplicas,
                format!("broker {to} is not a live in-sync replica of the partition"),
            ));
        }
        if current.leader == Some(to) {
            return Ok(());
        }
        tracing::info!(topic = %elect.topic, partition = elect.partition, from = ?current.leader, to, epoch = current.leader_epoch + 1, "leader handed over");
        self.propose(MetadataEvent::PartitionAltered {
            topic_id,
            partition: elect.partition,
            expected_epoch: current.leader_epoch,
            leader: Some(to),
            leader_epoch: current.leader_epoch + 1,
            in_sync: current.in_sync,
        })
        .await
    }
}
