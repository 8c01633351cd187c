//! Group requests: each goes to its group's coordinator shard (forwarded over the mesh when
//! it arrived elsewhere), which answers with the topic catalogue's partition counts and,
//! for lag and resets, the partitions' offsets from the shards that own them.

use std::collections::{BTreeMap, BTreeSet};

use super::context::ShardContext;
use super::route::route;
use crate::group::offsets::OffsetRecord;
use crate::group::GroupRequest;
use crate::protocol::{
    DescribeGroupRequest, DescribeGroupResponse, ErrorCode, ErrorResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupState, ListGroupsResponse, OffsetSpec, PartitionLag,
    ResetOffsetsRequest, ResetOffsetsResponse, ResetResult, ResetTo, Response,
};
use crate::shard::messages::{ListOffsetsWork, ShardHandler, ShardMessage};

fn error_response(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorResponse::new(code, message))
}

/// Sends a group request to its coordinator shard (or runs it, on that shard).
pub async fn forward(context: &ShardContext, request: GroupRequest) -> Response {
    let coordinator = context.ownership.group_coordinator(request.group());
    if coordinator == context.shard_id {
        return coordinate(context, request).await;
    }
    context
        .mesh
        .call(coordinator, request, ShardMessage::Group)
        .await
        .unwrap_or_else(|error| {
            error_response(
                ErrorCode::BrokerShuttingDown,
                &format!("the coordinator: {error}"),
            )
        })
}

/// Runs a group request on its coordinator shard (this one).
pub async fn coordinate(context: &ShardContext, request: GroupRequest) -> Response {
    let coordinator = &context.groups;
    if !coordinator.is_loaded() {
        return error_response(
            ErrorCode::CoordinatorLoading,
            "the coordinator is loading offsets",
        );
    }
    if !coordinator.coordinates(request.group()) {
        return error_response(
            ErrorCode::NotCoordinator,
            &format!(
                "broker {} shard {} does not coordinate group '{}' (its offsets partition is led elsewhere)",
                context.broker_id(),
                context.shard_id,
                request.group()
            ),
        );
    }
    match request {
        GroupRequest::Join(join) => {
            let counts = partition_counts(context, join.topics.iter());
            Response::JoinGroup(coordinator.join(join, &counts))
        }
        GroupRequest::Heartbeat(heartbeat) => {
            let counts = group_counts(context, &heartbeat.group);
            Response::Heartbeat(coordinator.heartbeat(heartbeat, &counts))
        }
        GroupRequest::Leave(leave) => {
            let counts = group_counts(context, &leave.group);
            Response::LeaveGroup(coordinator.leave(leave, &counts))
        }
        GroupRequest::Commit(commit) => {
            let counts = partition_counts(context, commit.offsets.iter().map(|o| &o.topic));
            Response::OffsetCommit(coordinator.commit(commit, &counts).await)
        }
        GroupRequest::FetchOffsets(fetch) => {
            Response::OffsetFetch(coordinator.fetch_offsets(fetch))
        }
        GroupRequest::Describe(describe) => {
            Response::DescribeGroup(describe_group(context, describe).await)
        }
        GroupRequest::Reset(reset) => Response::ResetOffsets(reset_offsets(context, reset).await),
    }
}

/// The partition counts of these topics, for those that exist.
pub fn partition_counts<'a>(
    context: &ShardContext,
    topics: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, u32> {
    let catalog = context.catalog();
    topics
        .filter_map(|name| catalog.topic(name).map(|t| (name.clone(), t.partitions)))
        .collect()
}

fn group_counts(context: &ShardContext, group: &str) -> BTreeMap<String, u32> {
    let topics = context.groups.subscribed_topics(group);
    partition_counts(context, topics.iter())
}

/// Removes expired members everywhere on this shard (the sweeper calls it).
pub fn sweep(context: &ShardContext) {
    context
        .groups
        .sweep(|topics: &BTreeSet<String>| partition_counts(context, topics.iter()));
}

/// Tells a client which broker and shard coordinate a group: the leader of the group's
/// partition of the offsets log, and its owning shard there. Any shard answers.
pub fn find_coordinator(context: &ShardContext, find: &FindCoordinatorRequest) -> Response {
    let catalog = context.catalog();
    let partition = crate::shard::Ownership::offsets_partition(&find.group);
    let leader = catalog
        .topic(crate::constants::OFFSETS_TOPIC_NAME)
        .and_then(|topic| topic.partition(partition))
        .and_then(|state| state.leader);
    let Some(broker) = leader.and_then(|leader| catalog.broker(leader)) else {
        return error_response(
            ErrorCode::CoordinatorLoading,
            "the offsets log has no leader yet (the cluster is starting, or its brokers are away)",
        );
    };
    let shard = crate::replication::owning_shard(
        &catalog,
        broker.broker,
        crate::constants::OFFSETS_TOPIC_NAME,
        partition,
    );
    // This broker's own addresses are the live ones (the catalogue may hold older ones).
    let (host, port, shard_ports) = if broker.broker == context.broker_id() {
        let advertised = &context.advertised;
        (&advertised.host, advertised.port, &advertised.shard_ports)
    } else {
        (&broker.host, broker.port, &broker.shard_ports)
    };
    Response::FindCoordinator(FindCoordinatorResponse {
        error: ErrorCode::None,
        broker_id: broker.broker,
        host: host.clone(),
        port,
        shard: shard as u16,
        shard_port: shard_ports.get(shard).copied().unwrap_or(0),
    })
}

/// Every shard's groups, asked of all shards at once and merged.
pub async fn list_groups(context: &ShardContext) -> Response {
    let others = context.mesh.others().map(|shard| (shard, ())).collect();
    let (here, replies) = futures::join!(
        async { context.list_groups() },
        context.mesh.call_each(others, ShardMessage::ListGroups)
    );
    let mut groups = Vec::new();
    let parts = std::iter::once((context.shard_id, Ok(here))).chain(replies);
    for (shard, reply) in parts {
        match reply {
            Ok(Ok(listed)) => groups.extend(listed),
            Ok(Err(error)) => {
                return error_response(error.code(), &format!("shard {shard}: {error}"))
            }
            Err(error) => return error_response(ErrorCode::BrokerShuttingDown, &error.to_string()),
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    Response::ListGroups(ListGroupsResponse {
        error: ErrorCode::None,
        groups,
    })
}

/// Asks the owning shards for offsets of partitions (`None` where the partition is gone).
pub(super) async fn lookup_offsets(
    context: &ShardContext,
    partitions: &[(String, u32)],
    spec: OffsetSpec,
) -> Vec<Option<u64>> {
    let catalog = context.catalog();
    let mut work = Vec::new();
    let mut known = Vec::new();
    for (topic, partition) in partitions {
        match catalog.topic(topic).filter(|t| *partition < t.partitions) {
            Some(spec_topic) => {
                known.push(true);
                work.push(ListOffsetsWork {
                    topic: spec_topic.clone(),
                    partition: *partition,
                    spec,
                });
            }
            None => known.push(false),
        }
    }
    let outcomes = route(context, work).await;
    // Partitions led by other brokers are asked of their leaders.
    let mut answers: Vec<Option<u64>> = Vec::with_capacity(outcomes.len());
    for response in outcomes {
        let answer = match response.error {
            ErrorCode::None => Some(response.offset),
            ErrorCode::NotLeaderOrFollower => {
                remote_offset(context, &catalog, &response.topic, response.partition, spec).await
            }
            _ => None,
        };
        answers.push(answer);
    }
    let mut answers = answers.into_iter();
    known
        .into_iter()
        .map(|known| {
            if !known {
                return None;
            }
            answers.next().expect("one outcome per routed partition")
        })
        .collect()
}

/// Asks a partition's leader broker for an offset (group lag in a cluster).
async fn remote_offset(
    context: &ShardContext,
    catalog: &crate::cluster::Catalog,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Option<u64> {
    use std::net::ToSocketAddrs;
    let leader = catalog.topic(topic)?.partition(partition)?.leader?;
    if leader == context.broker_id() {
        return None;
    }
    let broker = catalog.broker(leader)?;
    let address = (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let connection =
        crate::client::connection::Connection::connect(address, "group-lag", context.client_tls())
            .await
            .ok()?;
    let request = crate::protocol::Request::ListOffsets(crate::protocol::ListOffsetsRequest {
        partitions: vec![crate::protocol::ListOffsetsPartition {
            topic: topic.to_string(),
            partition,
            spec,
        }],
    });
    match connection.request(&request, &[]).await.ok()?.response {
        Response::ListOffsets(answer) => answer
            .partitions
            .first()
            .filter(|p| p.error == ErrorCode::None)
            .map(|p| p.offset),
        _ => None,
    }
}

async fn describe_group(
    context: &ShardContext,
    request: DescribeGroupRequest,
) -> DescribeGroupResponse {
    let shard = context.shard_id as u16;
    let Some(snapshot) = context.groups.describe(&request.group) else {
        return DescribeGroupResponse {
            error: ErrorCode::None,
            message: "no such group (no members, no offsets)".into(),
            group: request.group,
            state: GroupState::Empty,
            generation: 0,
            strategy: None,
            coordinator_shard: shard,
            members: Vec::new(),
            partitions: Vec::new(),
        };
    };
    // Every partition of a subscribed topic, and every partition with a committed offset.
    let catalog = context.catalog();
    let mut keys: BTreeSet<(String, u32)> = snapshot.committed.keys().cloned().collect();
    for topic in &snapshot.subscribed {
        if let Some(spec) = catalog.topic(topic) {
            keys.extend((0..spec.partitions).map(|p| (topic.clone(), p)));
        }
    }
    let keys: Vec<(String, u32)> = keys.into_iter().collect();
    let ends = lookup_offsets(context, &keys, OffsetSpec::Latest).await;
    let starts = lookup_offsets(context, &keys, OffsetSpec::Earliest).await;
    let partitions = keys
        .into_iter()
        .zip(ends.into_iter().zip(starts))
        .map(|(key, (end, start))| {
            let committed = snapshot.committed.get(&key).copied();
            let lag = match (end, committed.or(start)) {
                (Some(end), Some(from)) => end.saturating_sub(from) as i64,
                _ => -1,
            };
            PartitionLag {
                owner: snapshot.owners.get(&key).cloned(),
                topic: key.0,
                partition: key.1,
                committed,
                high_watermark: end.map(|e| e as i64).unwrap_or(-1),
                lag,
            }
        })
        .collect();
    DescribeGroupResponse {
        error: ErrorCode::None,
        message: String::new(),
        group: request.group,
        state: snapshot.state,
        generation: snapshot.generation,
        strategy: snapshot.strategy,
        coordinator_shard: shard,
        members: snapshot.members,
        partitions,
    }
}

async fn reset_offsets(
    context: &ShardContext,
    request: ResetOffsetsRequest,
) -> ResetOffsetsResponse {
    let refused = |code: ErrorCode, message: String| ResetOffsetsResponse {
        error: code,
        message,
        partitions: Vec::new(),
    };
    if context.groups.has_members(&request.group) {
        return refused(
            ErrorCode::GroupNotEmpty,
            format!("group {} has members: stop them first", request.group),
        );
    }
    let Some(topic) = context.catalog().topic(&request.topic).cloned() else {
        return refused(
            ErrorCode::UnknownTopicOrPartition,
            format!("no topic {}", request.topic),
        );
    };
    let partitions: Vec<u32> = request
        .partitions
        .clone()
        .unwrap_or_else(|| (0..topic.partitions).collect());
    let keys: Vec<(String, u32)> = partitions
        .iter()
        .map(|&p| (request.topic.clone(), p))
        .collect();
    let resolved = match request.to {
        ResetTo::Spec(spec) => lookup_offsets(context, &keys, spec).await,
        ResetTo::Offset(offset) => {
            let starts = lookup_offsets(context, &keys, OffsetSpec::Earliest).await;
            let ends = lookup_offsets(context, &keys, OffsetSpec::Latest).await;
            starts
                .into_iter()
                .zip(ends)
                .map(|(start, end)| Some(offset.clamp(start?, end?)))
                .collect()
        }
    };
    let now_ms = context.clock.wall_ms();
    let mut results = Vec::new();
    let mut records = Vec::new();
    for (&partition, offset) in partitions.iter().zip(resolved) {
        match offset {
            Some(offset) => {
                records.push(OffsetRecord {
                    group: request.group.clone(),
                    topic: request.topic.clone(),
                    partition,
                    offset,
                    metadata: "reset".into(),
                    commit_time_ms: now_ms,
                });
                results.push(ResetResult {
                    partition,
                    error: ErrorCode::None,
                    offset,
                });
            }
            None => results.push(ResetResult {
                partition,
                error: ErrorCode::UnknownTopicOrPartition,
                offset: 0,
            }),
        }
    }
    if !request.dry_run {
        if let Err(error) = context.groups.store_reset(&request.group, records).await {
            return refused(error.code(), error.to_string());
        }
        tracing::info!(group = %request.group, topic = %request.topic, to = ?request.to, "offsets reset");
    }
    ResetOffsetsResponse {
        error: ErrorCode::None,
        message: String::new(),
        partitions: results,
    }
}
