//! Routing partition work: each item goes to the shard that owns its partition — run here
//! when that is this shard, otherwise batched into one mesh call per destination shard —
//! and the outcomes come back in the order of the items, typed per operation.

use std::sync::Arc;

use super::context::ShardContext;
use crate::cluster::TopicSpec;
use crate::protocol::{
    ErrorCode, FetchPartitionResponse, ListOffsetsPartitionResponse, ProducePartitionResponse,
};
use crate::shard::messages::{
    FetchOutcome, FetchWork, ListOffsetsWork, ProduceWork, ShardHandler, ShardMessage,
};
use crate::shard::Call;

/// The mesh message constructor that carries a batch of `W` to another shard.
pub type Wrap<W> = fn(Call<Vec<W>, Vec<<W as PartitionOp>::Outcome>>) -> ShardMessage;

/// One kind of partition work: what it returns, how it travels, how it fails.
#[allow(async_fn_in_trait)] // Shard-local futures: never sent across threads.
pub trait PartitionOp: Sized + Send + 'static {
    type Outcome: Send + 'static;
    /// The mesh message that carries a batch of these to another shard.
    const WRAP: Wrap<Self>;

    fn topic_partition(&self) -> (&Arc<TopicSpec>, u32);
    /// The outcome of an item that could not be carried out at all.
    fn failed(
        topic: &TopicSpec,
        partition: u32,
        error: ErrorCode,
        message: String,
    ) -> Self::Outcome;
    /// Carries out items on this (their owning) shard; one outcome per item, in order.
    async fn run_here(context: &ShardContext, items: Vec<Self>) -> Vec<Self::Outcome>;
}

impl PartitionOp for ProduceWork {
    type Outcome = ProducePartitionResponse;
    const WRAP: Wrap<Self> = ShardMessage::Produce;

    fn topic_partition(&self) -> (&Arc<TopicSpec>, u32) {
        (&self.topic, self.partition)
    }

    fn failed(
        topic: &TopicSpec,
        partition: u32,
        error: ErrorCode,
        message: String,
    ) -> Self::Outcome {
        ProducePartitionResponse {
            topic: topic.name.clone(),
            partition,
            error,
            base_offset: 0,
            log_append_time_ms: -1,
            log_start_offset: 0,
            message,
        }
    }

    async fn run_here(context: &ShardContext, items: Vec<Self>) -> Vec<Self::Outcome> {
        context.produce(items).await
    }
}

impl PartitionOp for FetchWork {
    type Outcome = FetchOutcome;
    const WRAP: Wrap<Self> = ShardMessage::Fetch;

    fn topic_partition(&self) -> (&Arc<TopicSpec>, u32) {
        (&self.topic, self.partition)
    }

    fn failed(topic: &TopicSpec, partition: u32, error: ErrorCode, _: String) -> Self::Outcome {
        FetchOutcome {
            response: FetchPartitionResponse::without_data(topic.name.clone(), partition, error),
            chunks: Vec::new(),
        }
    }

    async fn run_here(context: &ShardContext, items: Vec<Self>) -> Vec<Self::Outcome> {
        context.fetch(items).await
    }
}

impl PartitionOp for ListOffsetsWork {
    type Outcome = ListOffsetsPartitionResponse;
    const WRAP: fn(Call<Vec<Self>, Vec<Self::Outcome>>) -> ShardMessage = ShardMessage::ListOffsets;

    fn topic_partition(&self) -> (&Arc<TopicSpec>, u32) {
        (&self.topic, self.partition)
    }

    fn failed(topic: &TopicSpec, partition: u32, error: ErrorCode, _: String) -> Self::Outcome {
        ListOffsetsPartitionResponse {
            topic: topic.name.clone(),
            partition,
            error,
            offset: 0,
            timestamp_ms: -1,
        }
    }

    async fn run_here(context: &ShardContext, items: Vec<Self>) -> Vec<Self::Outcome> {
        context.list_offsets(items).await
    }
}

/// Runs every item on the shard that owns its partition and returns the outcomes in the
/// order of `items`. A shard that cannot be reached (it is shutting down) gives its items
/// the retriable `BrokerShuttingDown`.
pub async fn route<W: PartitionOp>(context: &ShardContext, items: Vec<W>) -> Vec<W::Outcome> {
    let mut outcomes: Vec<Option<W::Outcome>> = items.iter().map(|_| None).collect();
    let grouped = context.ownership.by_shard(items, |item| {
        let (topic, partition) = item.topic_partition();
        (topic.name.as_str(), partition)
    });
    let mut here = None;
    let mut remote = Vec::new();
    let mut remote_items: Vec<Vec<(usize, Arc<TopicSpec>, u32)>> = Vec::new();
    for (shard, items) in grouped {
        let (indexes, items): (Vec<usize>, Vec<W>) = items.into_iter().unzip();
        if shard == context.shard_id {
            here = Some((indexes, items));
        } else {
            remote_items.push(
                indexes
                    .iter()
                    .zip(&items)
                    .map(|(&index, item)| {
                        let (topic, partition) = item.topic_partition();
                        (index, topic.clone(), partition)
                    })
                    .collect(),
            );
            remote.push((shard, items));
        }
    }
    let local = async {
        match here {
            Some((indexes, items)) => Some((indexes, W::run_here(context, items).await)),
            None => None,
        }
    };
    let (local, replies) = futures::join!(local, context.mesh.call_each(remote, W::WRAP));
    if let Some((indexes, results)) = local {
        place(&mut outcomes, indexes, results);
    }
    for (items, (shard, reply)) in remote_items.into_iter().zip(replies) {
        match reply {
            Ok(results) => place(
                &mut outcomes,
                items.into_iter().map(|(index, _, _)| index).collect(),
                results,
            ),
            Err(error) => {
                for (index, topic, partition) in items {
                    let message = format!("shard {shard}: {error}");
                    outcomes[index] = Some(W::failed(
                        &topic,
                        partition,
                        ErrorCode::BrokerShuttingDown,
                        message,
                    ));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every item was routed to exactly one shard"))
        .collect()
}

fn place<T>(outcomes: &mut [Option<T>], indexes: Vec<usize>, results: Vec<T>) {
    assert_eq!(indexes.len(), results.len(), "one outcome per item");
    for (index, result) in indexes.into_iter().zip(results) {
        outcomes[index] = Some(result);
    }
}
