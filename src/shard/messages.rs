//! What crosses cores, and the one dispatcher that hands each message to its handler.
//!
//! ```text
//!  message        from                    to                         reply
//!  ─────────────  ──────────────────────  ─────────────────────────  ───────────────────────
//!  Catalog        controller shard        every other shard          () once applied
//!  Admin          any shard (a client's   controller shard           the admin response
//!                 create/delete/alter)
//!  InitProducerId any shard               controller shard           a new producer id
//!  Produce        shard a request hit     shard owning the partitions one response per item
//!  Fetch          "                       "                          one outcome per item
//!  ListOffsets    "  (also group describe "                          one response per item
//!                 and reset on the coordinator)
//!  Wait           shard holding a fetch   shard owning the partitions () once data or deadline
//!  Group          any shard               the group's coordinator    the group response
//!  ListGroups     the shard a ListGroups  every other shard          that shard's groups
//!                 hit (fan-out)
//!  Stats          the metrics endpoint's  every other shard          that shard's numbers
//!                 shard (fan-out)
//!  Ready          every shard at start    controller shard           none (one-way)
//! ```
//!
//! Items for one destination travel in one message (batched per destination). Who owns a
//! partition, a group or the controller is `super::ownership`'s answer; how messages travel
//! and how they push back is `super::mesh`. The server implements [`ShardHandler`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::mesh::{Call, MeshMessage, MessageClass};
use crate::cluster::controller::{ControllerCall, ControllerReply};
use crate::cluster::{AdminRequest, Catalog, TopicSpec};
use crate::group::{CoordinatorError, GroupRequest};
use crate::metrics::ShardStats;
use crate::protocol::{
    Acks, FetchPartitionResponse, GroupListing, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsPartitionResponse, OffsetSpec, ProducePartitionResponse, Response,
};

/// One partition's share of a produce request.
#[derive(Debug)]
pub struct ProduceWork {
    pub topic: Arc<TopicSpec>,
    pub partition: u32,
    /// One or more whole batches, exactly as the client sent them: a writable view of the
    /// request's receive buffer, where the log stamps each batch's header.
    pub batches: bytes::BytesMut,
    pub acks: Acks,
    pub timeout: Duration,
    /// The leader epoch the client believes in, when it says.
    pub leader_epoch: Option<u32>,
}

/// One partition's share of a fetch request.
#[derive(Debug)]
pub struct FetchWork {
    pub topic: Arc<TopicSpec>,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
    /// The leader epoch the client believes in, when it says.
    pub leader_epoch: Option<u32>,
}

/// What a fetch of one partition returns: the response and the batches behind it.
#[derive(Debug)]
pub struct FetchOutcome {
    pub response: FetchPartitionResponse,
    pub chunks: Vec<Bytes>,
}

/// One partition's share of a list-offsets request.
#[derive(Debug)]
pub struct ListOffsetsWork {
    pub topic: Arc<TopicSpec>,
    pub partition: u32,
    pub spec: OffsetSpec,
}

/// Wait until any of these partitions has data past its offset, or for `wait`.
#[derive(Debug)]
pub struct WaitWork {
    pub waits: Vec<(Arc<TopicSpec>, u32, u64)>,
    pub wait: Duration,
}

/// A new catalogue from the controller, and the topics it deleted.
#[derive(Debug, Clone)]
pub struct CatalogUpdate {
    pub catalog: Arc<Catalog>,
    pub deleted: Vec<Arc<TopicSpec>>,
}

/// A message from one shard to another.
pub enum ShardMessage {
    Catalog(Call<CatalogUpdate, ()>),
    Admin(Call<AdminRequest, Response>),
    InitProducerId(Call<InitProducerIdRequest, InitProducerIdResponse>),
    /// What this broker's controller voter knows of the cluster.
    DescribeCluster(Call<(), crate::protocol::DescribeClusterResponse>),
    /// A call for the controller leader (in-sync set changes from partition leaders).
    Controller(Call<ControllerCall, Result<(ControllerReply, u64), String>>),
    Produce(Call<Vec<ProduceWork>, Vec<ProducePartitionResponse>>),
    Fetch(Call<Vec<FetchWork>, Vec<FetchOutcome>>),
    ListOffsets(Call<Vec<ListOffsetsWork>, Vec<ListOffsetsPartitionResponse>>),
    Wait(Call<WaitWork, ()>),
    Group(Call<GroupRequest, Response>),
    ListGroups(Call<(), Result<Vec<GroupListing>, CoordinatorError>>),
    Stats(Call<(), ShardStats>),
    /// A shard has recovered its partitions and is serving (to the controller, for the log).
    Ready {
        shard: usize,
        partitions: usize,
    },
}

impl MeshMessage for ShardMessage {
    fn class(&self) -> MessageClass {
        match self {
            ShardMessage::Wait(_) => MessageClass::Wait,
            _ => MessageClass::Work,
        }
    }
}

/// What a shard does with each message. The server's shard context implements it.
#[allow(async_fn_in_trait)] // Shard-local futures: never sent across threads.
pub trait ShardHandler {
    async fn apply_catalog(&self, update: CatalogUpdate);
    async fn run_controller(&self, request: AdminRequest) -> Response;
    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse;
    fn describe_cluster(&self) -> crate::protocol::DescribeClusterResponse;
    async fn call_controller(&self, call: ControllerCall)
        -> Result<(ControllerReply, u64), String>;
    async fn produce(&self, work: Vec<ProduceWork>) -> Vec<ProducePartitionResponse>;
    async fn fetch(&self, work: Vec<FetchWork>) -> Vec<FetchOutcome>;
    async fn list_offsets(&self, work: Vec<ListOffsetsWork>) -> Vec<ListOffsetsPartitionResponse>;
    async fn wait_for_data(&self, work: WaitWork);
    async fn coordinate(&self, request: GroupRequest) -> Response;
    fn list_groups(&self) -> Result<Vec<GroupListing>, CoordinatorError>;
    fn stats(&self) -> ShardStats;
    fn shard_ready(&self, shard: usize, partitions: usize);
}

/// The dispatcher: hands a message from the mesh to its handler and sends the reply back.
pub async fn dispatch<H: ShardHandler>(handler: &H, message: ShardMessage) {
    match message {
        ShardMessage::Catalog(call) => call.answer(|u| handler.apply_catalog(u)).await,
        ShardMessage::Admin(call) => call.answer(|r| handler.run_controller(r)).await,
        ShardMessage::InitProducerId(call) => call.answer(|r| handler.init_producer_id(r)).await,
        ShardMessage::Controller(call) => call.answer(|c| handler.call_controller(c)).await,
        ShardMessage::DescribeCluster(call) => {
            call.answer(|()| async { handler.describe_cluster() }).await
        }
        ShardMessage::Produce(call) => call.answer(|w| handler.produce(w)).await,
        ShardMessage::Fetch(call) => call.answer(|w| handler.fetch(w)).await,
        ShardMessage::ListOffsets(call) => call.answer(|w| handler.list_offsets(w)).await,
        ShardMessage::Wait(call) => call.answer(|w| handler.wait_for_data(w)).await,
        ShardMessage::Group(call) => call.answer(|r| handler.coordinate(r)).await,
        ShardMessage::ListGroups(call) => call.answer(|()| async { handler.list_groups() }).await,
        ShardMessage::Stats(call) => call.answer(|()| async { handler.stats() }).await,
        ShardMessage::Ready { shard, partitions } => handler.shard_ready(shard, partitions),
    }
}
