//! The server's side of the controller (`crate::cluster::Controller`): admin requests reach
//! the controller shard over the mesh, go to the controller leader (here or on another
//! voter, `super::internal`), and each new catalogue is published to every shard before
//! the client is answered.

use std::time::Duration;

use super::context::ShardContext;
use crate::cluster::controller::{ControllerCall, ControllerReply};
use crate::cluster::AdminRequest;
use crate::constants::BROKER_HEARTBEAT_INTERVAL_MS;
use crate::protocol::{
    ErrorCode, ErrorResponse, InitProducerIdRequest, InitProducerIdResponse, Response,
};
use crate::shard::messages::{CatalogUpdate, ShardHandler, ShardMessage};
use crate::shard::Call;

/// Runs `here` on the controller shard: at once when this is it, else as one mesh call;
/// `lost` answers when the controller shard cannot (it is stopping).
async fn on_controller_shard<Req, Rep, Fut>(
    context: &ShardContext,
    request: Req,
    wrap: fn(Call<Req, Rep>) -> ShardMessage,
    here: impl FnOnce(Req) -> Fut,
    lost: impl FnOnce(String) -> Rep,
) -> Rep
where
    Fut: std::future::Future<Output = Rep>,
{
    let controller = context.ownership.controller();
    if controller == context.shard_id {
        return here(request).await;
    }
    context
        .mesh
        .call(controller, request, wrap)
        .await
        .unwrap_or_else(|error| lost(format!("the controller shard: {error}")))
}

/// Sends an admin request to the controller shard (or runs it, on that shard).
pub async fn forward(context: &ShardContext, request: AdminRequest) -> Response {
    let here = |request| context.run_controller(request);
    on_controller_shard(context, request, ShardMessage::Admin, here, |message| {
        Response::Error(ErrorResponse::new(ErrorCode::BrokerShuttingDown, &message))
    })
    .await
}

/// Runs a call on the controller leader from any shard (through the controller shard).
pub async fn call(
    context: &ShardContext,
    call: ControllerCall,
) -> Result<(ControllerReply, u64), String> {
    let here = |call| context.call_controller(call);
    on_controller_shard(context, call, ShardMessage::Controller, here, Err).await
}

/// Asks the controller shard for a new producer id (or hands one out, on that shard).
pub async fn init_producer_id(
    context: &ShardContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let here = |request| context.init_producer_id(request);
    on_controller_shard(
        context,
        request,
        ShardMessage::InitProducerId,
        here,
        |message| InitProducerIdResponse {
            error: ErrorCode::BrokerShuttingDown,
            message,
            producer_id: -1,
            producer_epoch: -1,
        },
    )
    .await
}

/// What this broker's controller voter knows of the cluster (from any shard).
pub async fn describe_cluster(context: &ShardContext) -> crate::protocol::DescribeClusterResponse {
    let here = |()| async { describe_cluster_here(context) };
    on_controller_shard(context, (), ShardMessage::DescribeCluster, here, |error| {
        tracing::warn!(%error, "the controller shard did not answer");
        crate::protocol::DescribeClusterResponse {
            answered_by: context.broker_id(),
            controller_leader: None,
            controller_term: 0,
            committed_index: 0,
            applied_index: 0,
            snapshot_index: 0,
            log_entries: 0,
            log_bytes: 0,
            nodes: Vec::new(),
        }
    })
    .await
}

/// On the controller shard: the cluster as this voter sees it.
pub fn describe_cluster_here(context: &ShardContext) -> crate::protocol::DescribeClusterResponse {
    use super::internal::{node_of, raft_id};
    let metadata = context.metadata().expect("the controller shard");
    let status = metadata.status();
    let voters: Vec<u32> = context
        .peers
        .as_ref()
        .map(|p| p.voters().map(|(id, _)| node_of(id)).collect())
        .unwrap_or_default();
    let image = metadata.image();
    let mut nodes: Vec<crate::protocol::NodeStatus> = image
        .brokers()
        .map(|b| crate::protocol::NodeStatus {
            node: b.broker,
            host: b.host.clone(),
            port: b.port,
            voter: voters.contains(&b.broker),
            registered: true,
            alive: !b.fenced,
        })
        .collect();
    for &voter in &voters {
        if !nodes.iter().any(|n| n.node == voter) {
            let address = context
                .peers
                .as_ref()
                .and_then(|p| p.address(raft_id(voter)));
            nodes.push(crate::protocol::NodeStatus {
                node: voter,
                host: address.map_or_else(String::new, |a| a.ip().to_string()),
                port: 0,
                voter: true,
                registered: false,
                alive: false,
            });
        }
    }
    nodes.sort_by_key(|n| n.node);
    crate::protocol::DescribeClusterResponse {
        answered_by: context.broker_id(),
        controller_leader: status.leader.map(node_of),
        controller_term: status.term,
        committed_index: status.committed,
        applied_index: status.applied,
        snapshot_index: status.snapshot_index,
        log_entries: status.log_entries as u64,
        log_bytes: status.disk_bytes,
        nodes,
    }
}

/// Moves a partition's leadership through the controller leader (from any shard).
pub async fn elect_leader(
    context: &ShardContext,
    request: crate::protocol::ElectLeaderRequest,
) -> crate::protocol::ElectLeaderResponse {
    let elect = crate::cluster::controller::ElectLeader {
        topic: request.topic,
        partition: request.partition,
        to: request.to,
    };
    let (error, message) = call_done(context, ControllerCall::ElectLeader(elect)).await;
    crate::protocol::ElectLeaderResponse { error, message }
}

/// A controller call answered with `Done`, as its error and message.
async fn call_done(context: &ShardContext, controller_call: ControllerCall) -> (ErrorCode, String) {
    match call(context, controller_call).await {
        Ok((ControllerReply::Done { error, message }, _)) => (error, message),
        Ok((other, _)) => (
            ErrorCode::Unknown,
            format!("the controller answered {other:?}"),
        ),
        Err(message) => (ErrorCode::NotController, message),
    }
}

/// Moves a partition's replicas through the controller leader (from any shard).
pub async fn reassign_partition(
    context: &ShardContext,
    request: crate::protocol::ReassignPartitionRequest,
) -> crate::protocol::ReassignPartitionResponse {
    let reassign = crate::cluster::controller::Reassign {
        topic: request.topic,
        partition: request.partition,
        replicas: request.replicas,
    };
    let (error, message) = call_done(context, ControllerCall::Reassign(reassign)).await;
    crate::protocol::ReassignPartitionResponse { error, message }
}

/// On the controller shard: a producer id from the controller leader.
pub async fn init_producer_id_here(
    context: &ShardContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match super::internal::call_leader(context, ControllerCall::InitProducerId(request)).await {
        Ok((ControllerReply::InitProducerId(response), _)) => response,
        Ok((other, _)) => InitProducerIdResponse {
            error: ErrorCode::Unknown,
            message: format!("the controller answered {other:?}"),
            producer_id: -1,
            producer_epoch: -1,
        },
        Err(message) => InitProducerIdResponse {
            error: ErrorCode::NotController,
            message,
            producer_id: -1,
            producer_epoch: -1,
        },
    }
}

/// On the controller shard: has the leader apply the change, waits until this voter has
/// applied it too, publishes the new catalogue, answers.
pub async fn run(context: &ShardContext, request: AdminRequest) -> Response {
    let answer = super::internal::call_leader(context, ControllerCall::Admin(request)).await;
    let (reply, applied) = match answer {
        Ok(answer) => answer,
        Err(message) => {
            return Response::Error(ErrorResponse::new(ErrorCode::NotController, &message))
        }
    };
    let metadata = context
        .metadata()
        .expect("admin requests are only run on the controller shard");
    super::internal::wait_applied(metadata, applied).await;
    publish(
        context,
        CatalogUpdate {
            catalog: metadata.catalog(),
            deleted: Vec::new(),
        },
    )
    .await;
    match reply {
        ControllerReply::CreateTopics(response) => Response::CreateTopics(response),
        ControllerReply::DeleteTopics(response) => Response::DeleteTopics(response),
        ControllerReply::AlterConfigs(response) => Response::AlterConfigs(response),
        ControllerReply::AlterAcls(response) => Response::AlterAcls(response),
        ControllerReply::AlterUsers(response) => Response::AlterUsers(response),
        ControllerReply::AlterQuotas(response) => Response::AlterQuotas(response),
        other => Response::Error(ErrorResponse::new(
            ErrorCode::Unknown,
            &format!("the controller answered {other:?}"),
        )),
    }
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

/// On the controller shard: publishes the catalogue as the controller's image stands.
pub async fn publish_current(context: &ShardContext) {
    let metadata = context.metadata().expect("the controller shard");
    publish(
        context,
        CatalogUpdate {
            catalog: metadata.catalog(),
            deleted: Vec::new(),
        },
    )
    .await;
}

/// On the controller shard: publishes every change the controller applies (changes made
/// on other voters, in-sync set changes, fencing), until the shard stops.
pub async fn publish_changes(context: std::rc::Rc<ShardContext>) {
    let metadata = context.metadata().expect("the controller shard");
    let mut seen = metadata.version();
    while !context.stopping.get() {
        crate::server::work::with_deadline(
            std::time::Instant::now() + Duration::from_millis(500),
            metadata.changed(seen),
        )
        .await;
        if metadata.version() == seen {
            continue;
        }
        seen = metadata.version();
        publish_current(&context).await;
    }
}

/// Before a graceful stop, while still serving: when other live brokers can take over,
/// the controller shard asks to be fenced (`Leaving`), and every shard waits (a bounded
/// time) until its catalogue says so, by which time the partitions this broker led have
/// new leaders. Writes then move at once, instead of after the session timeout.
pub async fn controlled_shutdown(context: &ShardContext) {
    let me = context.broker_id();
    let catalog = context.catalog();
    let others = catalog.brokers().any(|b| b.broker != me && !b.fenced);
    let fenced = |context: &ShardContext| context.catalog().broker(me).is_none_or(|b| b.fenced);
    if !others || fenced(context) {
        return;
    }
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_millis(crate::constants::CONTROLLED_SHUTDOWN_MS);
    if context.metadata().is_some() {
        let leaving = ControllerCall::ControlledShutdown(crate::cluster::controller::Leaving {
            broker: me,
            incarnation: context.advertised.incarnation,
        });
        let asked = crate::client::connection::within(
            deadline.saturating_duration_since(std::time::Instant::now()),
            super::internal::call_leader(context, leaving),
        )
        .await;
        match asked {
            Some(Ok((
                ControllerReply::Done {
                    error: ErrorCode::None,
                    ..
                },
                _,
            ))) => {}
            other => {
                tracing::warn!(answer = ?other.map(|a| a.map(|r| r.0)), "controlled shutdown refused: stopping without it");
                return;
            }
        }
    }
    while !fenced(context) && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(crate::constants::SHUTDOWN_POLL_MS)).await;
    }
    tracing::info!(
        shard = context.shard_id,
        moved = fenced(context),
        took = ?started.elapsed(),
        "controlled shutdown"
    );
}

/// On the controller shard: heartbeats the controller leader (registering this broker
/// and its addresses), and on the leader fences brokers that went silent.
pub async fn heartbeat_loop(context: std::rc::Rc<ShardContext>) {
    let heartbeat = crate::cluster::controller::BrokerHeartbeat {
        broker: context.broker_id(),
        host: context.advertised.host.clone(),
        port: context.advertised.port,
        shard_ports: context.advertised.shard_ports.clone(),
        incarnation: context.advertised.incarnation,
    };
    let mut failing = false;
    while !context.stopping.get() {
        match super::internal::call_leader(&context, ControllerCall::Heartbeat(heartbeat.clone()))
            .await
        {
            Ok((ControllerReply::Done { error, message }, _)) if error != ErrorCode::None => {
                tracing::warn!(%error, %message, "the controller refused a heartbeat");
            }
            Ok(_) => {
                if failing {
                    tracing::info!("heartbeats reach the controller again");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "heartbeat failed");
                }
                failing = true;
            }
        }
        if let Some(controller) = &context.controller {
            controller.fence_silent_brokers().await;
            controller.complete_reassignments().await;
        }
        glommio::timer::sleep(Duration::from_millis(BROKER_HEARTBEAT_INTERVAL_MS)).await;
    }
}

/// On an observer's controller shard: keeps its metadata image up to date with the
/// controller leader's (a long poll, `ControllerCall::FetchImage`), until the shard stops.
pub async fn observe(context: std::rc::Rc<ShardContext>) {
    let observer = context
        .observer
        .clone()
        .expect("an observer's controller shard");
    let retry = Duration::from_millis(crate::constants::CONTROLLER_CALL_RETRY_MS);
    let mut failing = false;
    while !context.stopping.get() {
        let fetch = ControllerCall::FetchImage {
            after: observer.applied(),
        };
        let trouble = match super::internal::call_leader(&context, fetch).await {
            Ok((ControllerReply::Image { applied, snapshot }, _)) => match snapshot {
                Some(snapshot) => match observer.install(applied, &snapshot) {
                    Ok(_) => None,
                    Err(error) => Some(format!(
                        "the leader's image at {applied} is unreadable: {error}"
                    )),
                },
                None => None,
            },
            Ok((other, _)) => Some(format!("the controller answered {other:?}")),
            Err(error) => Some(error),
        };
        match trouble {
            None if failing => {
                tracing::info!(
                    applied = observer.applied(),
                    "the metadata image follows the controller again"
                );
                failing = false;
            }
            None => {}
            Some(error) => {
                if !failing {
                    tracing::warn!(%error, "the metadata image could not be fetched");
                }
                failing = true;
                glommio::timer::sleep(retry).await;
            }
        }
    }
}

/// Installs a catalogue on this shard and drops the partitions of deleted topics (topics
/// of the current catalogue missing from the new one).
pub async fn apply_catalog(context: &ShardContext, update: CatalogUpdate) {
    let current = context.catalog();
    if update.catalog.version <= current.version && current.version != 0 {
        // Already installed, perhaps still settling (another publish of the same version
        // got here first): answer only once its roles are in place.
        context.replication.wait_settled().await;
        return;
    }
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
    let deleted: Vec<_> = current
        .topics()
        .filter(|old| {
            update
                .catalog
                .topic(&old.name)
                .is_none_or(|new| new.topic_id != old.topic_id)
        })
        .cloned()
        .collect();
    *context.catalog.borrow_mut() = update.catalog.clone();
    for topic in deleted.iter().chain(update.deleted.iter()) {
        context.partitions.drop_topic(topic).await;
    }
    crate::replication::catalog_changed(context, &update.catalog).await;
}
