//! The server's side of the controller (`crate::cluster::Controller`): admin requests reach
//! the controller shard over the mesh, and each new catalogue is published to every shard
//! before the client is answered.

use super::context::ShardContext;
use crate::cluster::AdminRequest;
use crate::protocol::{
    ErrorCode, ErrorResponse, InitProducerIdRequest, InitProducerIdResponse, Response,
};
use crate::shard::messages::{CatalogUpdate, ShardHandler, ShardMessage};

/// Sends an admin request to the controller shard (or runs it, on that shard).
pub async fn forward(context: &ShardContext, request: AdminRequest) -> Response {
    let controller = context.ownership.controller();
    if controller == context.shard_id {
        return context.run_controller(request).await;
    }
    context
        .mesh
        .call(controller, request, ShardMessage::Admin)
        .await
        .unwrap_or_else(|error| {
            Response::Error(ErrorResponse::new(
                ErrorCode::BrokerShuttingDown,
                &format!("the controller: {error}"),
            ))
        })
}

/// Asks the controller shard for a new producer id (or hands one out, on that shard).
pub async fn init_producer_id(
    context: &ShardContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let controller = context.ownership.controller();
    if controller == context.shard_id {
        return context.init_producer_id(request).await;
    }
    context
        .mesh
        .call(controller, request, ShardMessage::InitProducerId)
        .await
        .unwrap_or_else(|error| InitProducerIdResponse {
            error: ErrorCode::BrokerShuttingDown,
            message: format!("the controller: {error}"),
            producer_id: -1,
            producer_epoch: -1,
        })
}

/// On the controller shard: applies the change, publishes the new catalogue, answers.
pub async fn run(context: &ShardContext, request: AdminRequest) -> Response {
    let controller = context
        .controller
        .as_ref()
        .expect("admin requests are only run on the controller shard");
    let outcome = controller.handle(request).await;
    publish(
        context,
        CatalogUpdate {
            catalog: outcome.catalog,
            deleted: outcome.deleted,
        },
    )
    .await;
    outcome.response
}

/// Installs a new catalogue on every shard (this one included) and waits for all, so that
/// a client told "created" can use the topic on any shard at once.
pub async fn publish(context: &ShardContext, update: CatalogUpdate) {
    let others = context
        .mesh
        .others()
        .map(|shard| (shard, update.clone()))
        .collect();
    let (_, replies) = futures::join!(
        apply_catalog(context, update),
        context.mesh.call_each(others, ShardMessage::Catalog)
    );
    for (shard, reply) in replies {
        if let Err(error) = reply {
            tracing::warn!(shard, %error, "a shard did not apply the new catalogue");
        }
    }
}

/// Installs a catalogue on this shard and drops the partitions of deleted topics.
pub async fn apply_catalog(context: &ShardContext, update: CatalogUpdate) {
    let current = context.catalog();
    if update.catalog.version >= current.version {
        // Topic configs apply at once: the open partitions of a changed topic take the new
        // configuration (flush policy, segment size and age, retention).
        for topic in update.catalog.topics() {
            let changed = current
                .topic(&topic.name)
                .is_some_and(|old| old.topic_id == topic.topic_id && old.config != topic.config);
            if changed {
                context.partitions.reconfigure_topic(topic);
            }
        }
        *context.catalog.borrow_mut() = update.catalog;
    }
    for topic in &update.deleted {
        context.partitions.drop_topic(topic).await;
    }
}
