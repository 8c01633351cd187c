//! What one shard of a running broker holds. How it reaches the other shards is the mesh
//! (`crate::shard::mesh`); who owns what is the ownership map (`crate::shard::ownership`);
//! what this shard does with each message from the mesh is the [`ShardHandler`] below.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::partitions::Partitions;
use super::profile::Profile;
use crate::clock::ClockRef;
use crate::cluster::{AdminRequest, Catalog, Controller};
use crate::group::{CoordinatorError, GroupRequest};
use crate::metrics::{PartitionStats, ShardStats};
use crate::protocol::{
    GroupListing, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsPartitionResponse,
    ProducePartitionResponse, Response,
};
use crate::shard::messages::{
    CatalogUpdate, FetchOutcome, FetchWork, ListOffsetsWork, ProduceWork, ShardHandler,
    ShardMessage, WaitWork,
};
use crate::shard::{Mesh, Ownership};

/// Addresses clients are told about.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
    pub shard_ports: Vec<u16>,
    /// This run of the broker (see `MetadataEvent::BrokerRegistered`).
    pub incarnation: u64,
}

/// Counts requests being handled; each holds an [`InFlightGuard`], which counts itself out
/// when dropped, so a request task cancelled half-way (its connection died) is counted out
/// too and a graceful shutdown does not wait for it.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Rc<Cell<usize>>);

/// One request in flight; dropping it counts the request out.
#[derive(Debug)]
pub struct InFlightGuard(Rc<Cell<usize>>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0.set(self.0.get() + 1);
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.get()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let count = self.0.get();
        assert!(count > 0, "an in-flight request is counted out once");
        self.0.set(count - 1);
    }
}

/// One shard's state. Owned by that shard's executor; shared by its tasks through `Rc`.
pub struct ShardContext {
    pub shard_id: usize,
    /// What the reactor watchdog knows of this shard.
    pub watch: std::sync::Arc<crate::shard::runtime::ShardWatch>,
    pub ownership: Ownership,
    pub advertised: Advertised,
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub clock: ClockRef,
    pub partitions: Partitions,
    pub catalog: RefCell<Arc<Catalog>>,
    pub mesh: Mesh<ShardMessage>,
    /// The replicas this shard leads and follows.
    pub replication: crate::replication::Replication,
    /// The consumer groups this shard coordinates.
    pub groups: crate::group::Coordinator,
    /// The controller; present on the controller shard only.
    pub controller: Option<Controller>,
    /// The metadata image of a broker that is not a voter; on its controller shard only
    /// (where a voter has `controller`).
    pub observer: Option<std::rc::Rc<crate::cluster::observer::Observer>>,
    /// The controller's peers (voters and their internal listeners); on the controller
    /// shard only.
    pub peers: Option<std::rc::Rc<super::internal::Peers>>,
    /// Set by the signal handler; every shard watches it.
    pub shutdown_requested: Arc<AtomicBool>,
    /// Set once this broker's controlled shutdown is over: its Raft node and peers stop.
    pub controller_stopped: Arc<AtomicBool>,
    /// This shard has begun shutting down: it accepts nothing new.
    pub stopping: Cell<bool>,
    pub open_connections: Cell<usize>,
    /// Requests being handled right now (shutdown waits for them).
    pub in_flight_requests: InFlight,
    /// Other shards that reported ready (counted on the controller).
    pub ready_shards: Arc<AtomicUsize>,
    /// What the request path counts for the metrics endpoint.
    pub metrics: super::metrics::ShardMetrics,
    /// The io memory glommio was given, per shard.
    pub io_memory_bytes: usize,
    /// TLS on the client and internal listeners, and for this broker's connections to
    /// other brokers; `None`: plaintext.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Whether access rules are enforced, and who may do anything.
    pub authorizer: crate::security::Authorizer,
    /// Clients must authenticate (SCRAM, or a client certificate) before anything else.
    pub sasl_required: bool,
    /// Quota buckets of the clients of this shard.
    pub throttle: crate::security::quota::Throttle,
    /// The fetch-session partitions this shard's connections hold.
    pub fetch_sessions: super::fetch_session::SessionBudget,
}

impl ShardContext {
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn broker_id(&self) -> u32 {
        self.ownership.broker_id()
    }

    pub fn shard_count(&self) -> usize {
        self.ownership.shard_count()
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Relaxed)
    }

    pub fn is_controller(&self) -> bool {
        self.ownership.controller() == self.shard_id
    }

    /// The committed offsets of the groups this shard coordinates (for the metrics).
    fn group_offsets(&self) -> Vec<crate::metrics::GroupOffset> {
        let Ok(listings) = self.groups.list_if_loaded() else {
            return Vec::new();
        };
        let mut offsets = Vec::new();
        for listing in listings {
            let Some(snapshot) = self.groups.describe(&listing.group) else {
                continue;
            };
            for ((topic, partition), committed) in snapshot.committed {
                offsets.push(crate::metrics::GroupOffset {
                    group: listing.group.clone(),
                    topic,
                    partition,
                    committed,
                });
            }
        }
        offsets
    }

    /// How this broker connects to other brokers (TLS when its listeners use it).
    pub fn client_tls(&self) -> Option<&crate::tls::ClientTls> {
        self.tls.as_ref().and_then(|tls| tls.client())
    }

    /// The metadata this broker holds: its voter's or its observer's. On the controller
    /// shard only.
    pub fn metadata(&self) -> Option<crate::cluster::observer::MetadataSource<'_>> {
        use crate::cluster::observer::MetadataSource;
        match (&self.controller, &self.observer) {
            (Some(controller), _) => Some(MetadataSource::Voter(controller.node())),
            (None, Some(observer)) => Some(MetadataSource::Observer(observer)),
            (None, None) => None,
        }
    }
}

impl ShardHandler for ShardContext {
    async fn apply_catalog(&self, update: CatalogUpdate) {
        super::controller::apply_catalog(self, update).await
    }

    async fn run_controller(&self, request: AdminRequest) -> Response {
        super::controller::run(self, request).await
    }

    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        super::controller::init_producer_id_here(self, request).await
    }

    fn describe_cluster(&self) -> crate::protocol::DescribeClusterResponse {
        super::controller::describe_cluster_here(self)
    }

    async fn call_controller(
        &self,
        call: crate::cluster::controller::ControllerCall,
    ) -> Result<(crate::cluster::controller::ControllerReply, u64), String> {
        super::internal::call_leader(self, call).await
    }

    async fn produce(&self, work: Vec<ProduceWork>) -> Vec<ProducePartitionResponse> {
        super::work::produce_all(self, work).await
    }

    async fn fetch(&self, work: Vec<FetchWork>) -> Vec<FetchOutcome> {
        super::work::fetch_all(self, work).await
    }

    async fn list_offsets(&self, work: Vec<ListOffsetsWork>) -> Vec<ListOffsetsPartitionResponse> {
        let lookups = work.into_iter().map(|w| super::work::list_offsets(self, w));
        futures::future::join_all(lookups).await
    }

    async fn wait_for_data(&self, work: WaitWork) {
        let deadline = self.clock.now() + work.wait;
        super::work::wait_for_data(self, &work.waits, deadline).await
    }

    async fn coordinate(&self, request: GroupRequest) -> Response {
        super::groups::coordinate(self, request).await
    }

    fn list_groups(&self) -> Result<Vec<GroupListing>, CoordinatorError> {
        self.groups.list_if_loaded()
    }

    fn stats(&self) -> ShardStats {
        let catalog = self.catalog();
        let names: std::collections::HashMap<u64, &str> = catalog
            .topics()
            .map(|topic| (topic.topic_id, topic.name.as_str()))
            .collect();
        let partitions = self
            .partitions
            .all()
            .into_iter()
            .filter_map(|((topic_id, partition), log)| {
                let topic = names.get(&topic_id)?;
                let io = log.io_stats();
                Some(PartitionStats {
                    topic: topic.to_string(),
                    partition,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.log_end_offset(),
                    high_watermark: super::work::high_watermark(&log),
                    size_bytes: log.size_bytes(),
                    writes: io.writes,
                    bytes_written: io.bytes_written,
                    syncs: io.syncs,
                    write_rounds: io.write_rounds,
                    slow_flush_rounds: io.slow_rounds,
                    segments_rolled: io.segments_rolled,
                    producers: log.producer_count(),
                    pending_bytes: log.pending_bytes(),
                    traffic: self.metrics.traffic((topic_id, partition)),
                    leader: self
                        .replication
                        .leadership((topic_id, partition))
                        .map(|leadership| leadership.stats()),
                })
            })
            .collect();
        let storage = self.partitions.storage();
        ShardStats {
            shard: self.shard_id,
            open_connections: self.open_connections.get(),
            requests_in_flight: self.in_flight_requests.count(),
            cache_bytes: storage.cache_bytes(),
            open_files: storage.open_files(),
            partitions,
            request_latency: self.metrics.request_latency(),
            io: Some(storage.metrics()),
            connections_accepted: self.metrics.connections_accepted.get(),
            connections_refused: self.metrics.connections_refused.get(),
            reactor_nudges: self.watch.nudges(),
            tls_handshakes_failed: self.metrics.tls_handshakes_failed.get(),
            authentications_failed: self.metrics.authentications_failed.get(),
            throttling: self.metrics.throttling(),
            group_offsets: self.group_offsets(),
        }
    }

    fn shard_ready(&self, shard: usize, partitions: usize) {
        tracing::debug!(shard, partitions, "shard ready");
        self.ready_shards.fetch_add(1, Ordering::SeqCst);
    }
}
