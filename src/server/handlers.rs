//! Request handlers: one function per api, turning a decoded request into a response (and,
//! for fetch, the trailer of batches that follows it).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::context::ShardContext;
use super::fetch_session::{FetchSessions, SessionRefusal, Wanted};
use super::route::route;
use super::work::wait_for_data;
use crate::cluster::{AdminRequest, Catalog, TopicSpec};
use crate::constants::{FETCH_WAIT_MS_MAX, FRAME_TRAILER_BYTES_MAX, PRODUCE_TIMEOUT_MS_MAX};
use crate::group::GroupRequest;
use crate::protocol::{
    supported_apis, BrokerMetadata, ConfigEntry, DecodedRequest, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribedConfigEntry, ErrorCode, FetchPartitionResponse, FetchRequest,
    FetchResponse, HandshakeResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, PartitionMetadata, ProducePartitionResponse, ProduceResponse, Request,
    Response, TopicConfigs, TopicMetadata,
};
use crate::replication::Leadership;
use crate::shard::messages::{
    FetchOutcome, FetchWork, ListOffsetsWork, ProduceWork, ShardMessage, WaitWork,
};

/// A response and the batches that follow it on the wire.
pub struct Reply {
    pub response: Response,
    pub trailer: Vec<Bytes>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            trailer: Vec::new(),
        }
    }
}

/// Handles one decoded request of `principal` on this shard; `sessions` are its
/// connection's fetch sessions.
pub async fn handle(
    context: &ShardContext,
    principal: &str,
    sessions: &RefCell<FetchSessions>,
    decoded: DecodedRequest,
) -> Reply {
    if context.stopping.get() {
        return Response::Error(crate::protocol::ErrorResponse::new(
            ErrorCode::BrokerShuttingDown,
            "the broker is shutting down",
        ))
        .into();
    }
    if let Err(refusal) = super::authorize::check(context, principal, &decoded.request) {
        return Response::Error(refusal).into();
    }
    let partition_batches = decoded.partition_batches;
    // The controller's and groups' futures are large (4-11 KiB, against 1-2 KiB for produce
    // and fetch) and rare: boxed, so that every request's task is not sized for them (the
    // task is allocated and its future copied on every request).
    let admin = |request| Box::pin(super::controller::forward(context, request));
    let group = |request| Box::pin(super::groups::forward(context, request));
    match decoded.request {
        Request::Handshake(_) => Response::Handshake(HandshakeResponse {
            error: ErrorCode::None,
            broker_id: context.broker_id(),
            supported: supported_apis(),
        })
        .into(),
        Request::Metadata(request) => {
            Response::Metadata(metadata(context, principal, request)).into()
        }
        Request::AlterAcls(r) => admin(AdminRequest::AlterAcls(r)).await.into(),
        Request::AlterUsers(r) => admin(AdminRequest::AlterUsers(r)).await.into(),
        Request::AlterQuotas(r) => admin(AdminRequest::AlterQuotas(r)).await.into(),
        Request::DescribeQuotas(_) => {
            Response::DescribeQuotas(crate::protocol::DescribeQuotasResponse {
                error: ErrorCode::None,
                message: String::new(),
                quotas: context.catalog().quotas().cloned().collect(),
            })
            .into()
        }
        Request::DescribeUsers(_) => {
            Response::DescribeUsers(crate::protocol::DescribeUsersResponse {
                error: ErrorCode::None,
                message: String::new(),
                users: context
                    .catalog()
                    .users()
                    .map(|u| crate::protocol::UserListing {
                        name: u.name.clone(),
                        mechanism: crate::security::scram::MECHANISM.to_string(),
                        iterations: u.iterations,
                    })
                    .collect(),
            })
            .into()
        }
        // A connection's own business (`super::connection`): never dispatched here.
        Request::SaslAuthenticate(_) => Response::Error(crate::protocol::ErrorResponse::new(
            ErrorCode::InvalidRequest,
            "SaslAuthenticate is answered by the connection",
        ))
        .into(),
        Request::DescribeAcls(_) => Response::DescribeAcls(crate::protocol::DescribeAclsResponse {
            error: ErrorCode::None,
            message: String::new(),
            acls: context.catalog().acls().rules().to_vec(),
        })
        .into(),
        Request::Produce(request) => {
            Response::Produce(produce(context, request, partition_batches).await).into()
        }
        Request::Fetch(request) => fetch(context, principal, sessions, request).await,
        Request::ListOffsets(request) => {
            Response::ListOffsets(list_offsets(context, request).await).into()
        }
        Request::DescribeConfigs(request) => {
            Response::DescribeConfigs(describe_configs(context, request)).into()
        }
        Request::CreateTopics(r) => admin(AdminRequest::CreateTopics(r)).await.into(),
        Request::DeleteTopics(r) => admin(AdminRequest::DeleteTopics(r)).await.into(),
        Request::AlterConfigs(r) => admin(AdminRequest::AlterConfigs(r)).await.into(),
        Request::InitProducerId(r) => Response::InitProducerId(
            Box::pin(super::controller::init_producer_id(context, r)).await,
        )
        .into(),
        Request::FindCoordinator(request) => {
            super::groups::find_coordinator(context, &request).into()
        }
        Request::ListGroups(_) => super::groups::list_groups(context).await.into(),
        Request::JoinGroup(r) => group(GroupRequest::Join(r)).await.into(),
        Request::Heartbeat(r) => group(GroupRequest::Heartbeat(r)).await.into(),
        Request::LeaveGroup(r) => group(GroupRequest::Leave(r)).await.into(),
        Request::OffsetCommit(r) => group(GroupRequest::Commit(r)).await.into(),
        Request::OffsetFetch(r) => group(GroupRequest::FetchOffsets(r)).await.into(),
        Request::DescribeGroup(r) => group(GroupRequest::Describe(r)).await.into(),
        Request::ResetOffsets(r) => group(GroupRequest::Reset(r)).await.into(),
        Request::DescribeCluster(_) => {
            Response::DescribeCluster(super::controller::describe_cluster(context).await).into()
        }
        Request::ElectLeader(request) => {
            Response::ElectLeader(Box::pin(super::controller::elect_leader(context, request)).await)
                .into()
        }
        Request::ReassignPartition(request) => Response::ReassignPartition(
            Box::pin(super::controller::reassign_partition(context, request)).await,
        )
        .into(),
        Request::OffsetsForLeaderEpoch(request) => Response::OffsetsForLeaderEpoch(
            crate::replication::leader::answer_epochs(context, request),
        )
        .into(),
        Request::ReplicaFetch(request) => {
            let (response, trailer) =
                crate::replication::leader::answer_fetch(context, request).await;
            Reply {
                response: Response::ReplicaFetch(response),
                trailer,
            }
        }
    }
}

fn metadata(context: &ShardContext, principal: &str, request: MetadataRequest) -> MetadataResponse {
    let visible = |name: &str| super::authorize::may_describe_topic(context, principal, name);
    let catalog = context.catalog();
    let describe = |topic: &TopicSpec| TopicMetadata {
        name: topic.name.clone(),
        error: ErrorCode::None,
        partitions: (0..topic.partitions)
            .map(|partition| {
                let state = topic.partition(partition);
                let leader = state.and_then(|s| s.leader);
                let shard = match leader {
                    Some(leader) if leader != context.broker_id() => {
                        crate::replication::owning_shard(&catalog, leader, &topic.name, partition)
                    }
                    _ => context.ownership.partition_shard(&topic.name, partition),
                };
                PartitionMetadata {
                    partition,
                    error: if leader.is_some() {
                        ErrorCode::None
                    } else {
                        ErrorCode::NotLeaderOrFollower
                    },
                    leader_broker: leader,
                    shard: shard as u16,
                    leader_epoch: state.map_or(0, |s| s.leader_epoch),
                    replicas: state.map_or_else(Vec::new, |s| s.replicas.clone()),
                    in_sync_replicas: state.map_or_else(Vec::new, |s| s.in_sync.clone()),
                }
            })
            .collect(),
        configs: topic
            .config
            .overrides()
            .into_iter()
            .map(|(k, v)| ConfigEntry::new(k, v))
            .collect(),
    };
    let topics = match request.topics {
        // Internal topics (the offsets log) are listed only when asked for by name.
        None => catalog
            .topics()
            .filter(|t| !t.name.starts_with("__") && visible(&t.name))
            .map(|t| describe(t))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match catalog.topic(&name) {
                // Hidden whether it exists or not: the answer tells nothing of which.
                _ if !visible(&name) => TopicMetadata {
                    name,
                    error: ErrorCode::TopicAuthorizationFailed,
                    partitions: Vec::new(),
                    configs: Vec::new(),
                },
                Some(topic) => describe(topic),
                None => TopicMetadata {
                    name,
                    error: ErrorCode::UnknownTopicOrPartition,
                    partitions: Vec::new(),
                    configs: Vec::new(),
                },
            })
            .collect(),
    };
    // This broker's own addresses are the live ones: the catalogue may still hold those
    // of before a restart until the next heartbeat registers the new ones.
    let mut brokers: Vec<BrokerMetadata> = catalog
        .brokers()
        .filter(|b| b.broker != context.broker_id())
        .map(|b| BrokerMetadata {
            broker_id: b.broker,
            host: b.host.clone(),
            port: b.port,
            shard_ports: b.shard_ports.clone(),
        })
        .collect();
    brokers.push(BrokerMetadata {
        broker_id: context.broker_id(),
        host: context.advertised.host.clone(),
        port: context.advertised.port,
        shard_ports: context.advertised.shard_ports.clone(),
    });
    brokers.sort_by_key(|b| b.broker_id);
    MetadataResponse {
        brokers,
        shard_count: context.shard_count() as u16,
        topics,
    }
}

/// Looks a partition up in the catalogue.
fn find(catalog: &Catalog, topic: &str, partition: u32) -> Option<Arc<TopicSpec>> {
    catalog
        .topic(topic)
        .filter(|t| partition < t.partitions)
        .cloned()
}

async fn produce(
    context: &ShardContext,
    request: crate::protocol::ProduceRequest,
    batches: Vec<bytes::BytesMut>,
) -> ProduceResponse {
    let catalog = context.catalog();
    let acks = request.acks().unwrap_or(crate::protocol::Acks::All);
    let timeout = Duration::from_millis(u64::from(request.timeout_ms).min(PRODUCE_TIMEOUT_MS_MAX));
    let mut responses: Vec<Option<ProducePartitionResponse>> = Vec::new();
    let mut work = Vec::new();
    for (entry, share) in request.partitions.into_iter().zip(batches) {
        match find(&catalog, &entry.topic, entry.partition) {
            Some(topic) => {
                responses.push(None);
                work.push(ProduceWork {
                    topic,
                    partition: entry.partition,
                    batches: share,
                    acks,
                    timeout,
                    leader_epoch: entry.leader_epoch,
                });
            }
            None => responses.push(Some(ProducePartitionResponse {
                topic: entry.topic,
                partition: entry.partition,
                error: ErrorCode::UnknownTopicOrPartition,
                base_offset: 0,
                log_append_time_ms: -1,
                log_start_offset: 0,
                message: "no such topic or partition".into(),
            })),
        }
    }
    let mut outcomes = route(context, work).await.into_iter();
    let partitions = responses
        .into_iter()
        .map(|known| {
            known.unwrap_or_else(|| outcomes.next().expect("one outcome per routed share"))
        })
        .collect();
    ProduceResponse {
        partitions,
        throttle_ms: 0,
    }
}

/// Reads every partition; while fewer than `min_bytes` came back and the client's wait has
/// not ended, waits until any asked-for partition has data past what was read and reads
/// again. It answers early when the response budget is full, or when a wait brought no more
/// bytes than the read before it (nothing new arrived: the wait ended, or the partition it
/// woke for cannot be read here any more). A request on a fetch session reads the session's
/// partitions, and its answer carries only those with news (`fetch_session`).
async fn fetch(
    context: &ShardContext,
    principal: &str,
    sessions: &RefCell<FetchSessions>,
    request: FetchRequest,
) -> Reply {
    let catalog = context.catalog();
    let may_read = |topic: &str| {
        context.authorizer.allows(
            catalog.acls(),
            principal,
            crate::protocol::ResourceKind::Topic,
            topic,
            crate::protocol::AclOperation::Read,
        )
    };
    let find =
        |topic: &TopicSpec, partition| context.replication.leadership((topic.topic_id, partition));
    let planned = {
        let mut sessions = sessions.borrow_mut();
        sessions.serve(principal);
        sessions.plan(&catalog, &request, may_read, find)
    };
    let plan = match planned {
        Ok(plan) => plan,
        Err(SessionRefusal::Session(error)) => return session_refused(error),
        Err(SessionRefusal::Unauthorized(topic)) => {
            return Response::Error(crate::protocol::ErrorResponse::new(
                ErrorCode::TopicAuthorizationFailed,
                &format!("{principal} may not Read Topic {topic}"),
            ))
            .into();
        }
    };
    let wait = Duration::from_millis(u64::from(request.max_wait_ms).min(FETCH_WAIT_MS_MAX));
    let deadline = context.clock.now() + wait;
    let mut attempt = 0;
    let mut previous_total = 0usize;
    loop {
        let candidates;
        let wanted: &[Wanted] = if plan.incremental {
            let found = sessions.borrow_mut().candidates(&plan);
            let Some(found) = found else {
                // Another request closed or used the session meanwhile.
                return session_refused(ErrorCode::FetchSessionNotFound);
            };
            candidates = found;
            &candidates
        } else {
            &plan.wanted
        };
        let outcomes = read_partitions(context, wanted, request.max_bytes).await;
        let mut partitions = Vec::with_capacity(wanted.len());
        let mut chunks_of = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        let mut waits = Vec::new();
        let mut returned_data = Vec::new();
        let mut local_with_data = Vec::new();
        let mut budget_full = false;
        for (entry, outcome) in wanted.iter().zip(outcomes) {
            let (mut response, mut chunks) = (outcome.response, outcome.chunks);
            // Whole batches only, within the budget (the first data always goes, as a read
            // always returns at least one batch); what is left out comes on the next fetch.
            let bytes = response.batch_bytes as usize;
            let over_budget = total > 0 && total + bytes > request.max_bytes as usize;
            if over_budget || total + bytes > FRAME_TRAILER_BYTES_MAX {
                response.batch_bytes = 0;
                chunks.clear();
                budget_full = true;
            }
            total += response.batch_bytes as usize;
            if let (true, Some(slot)) = (response.batch_bytes > 0, entry.slot) {
                returned_data.push(slot);
            }
            // A partition is watched for data past what this read saw: past the fetch
            // offset when it returned nothing, past its high watermark when it returned
            // batches (a wait for `min_bytes` wants more of them too).
            let readable = response.error == ErrorCode::None;
            let watch_from = if response.batch_bytes == 0 {
                entry.offset
            } else {
                response.high_watermark
            };
            // An incremental fetch watches the partitions led here all at once, below.
            let local = entry.current_local().filter(|_| plan.incremental);
            match (readable, local, &entry.topic) {
                (true, Some(leadership), _) if response.batch_bytes > 0 => {
                    local_with_data.push((leadership.clone(), watch_from));
                }
                (true, None, Ok(topic)) => {
                    waits.push((topic.clone(), entry.partition, watch_from));
                }
                _ => {}
            }
            partitions.push(response);
            chunks_of.push(chunks);
        }
        let satisfied = budget_full || total >= request.min_bytes.max(1) as usize;
        // After a wait: the wait is over, or nothing new came (what woke it cannot be read).
        let no_progress =
            attempt > 0 && (total <= previous_total || context.clock.now() >= deadline);
        previous_total = total;
        let local_waits = if plan.incremental && !satisfied && !no_progress && !wait.is_zero() {
            returned_data.sort_unstable();
            let mut watched = sessions.borrow().idle_local(&plan, &returned_data);
            watched.extend(local_with_data);
            watched
        } else {
            Vec::new()
        };
        let nothing_to_wait_for = waits.is_empty() && local_waits.is_empty();
        if satisfied || no_progress || wait.is_zero() || nothing_to_wait_for {
            let keep = sessions.borrow_mut().answer(&plan, wanted, &partitions);
            let mut partitions: Vec<Option<FetchPartitionResponse>> =
                partitions.into_iter().map(Some).collect();
            let mut chunks_of: Vec<Option<Vec<Bytes>>> = chunks_of.into_iter().map(Some).collect();
            let mut kept = Vec::with_capacity(keep.len());
            let mut trailer = Vec::new();
            for index in keep {
                kept.push(partitions[index].take().expect("each entry is kept once"));
                trailer.extend(chunks_of[index].take().expect("each entry is kept once"));
            }
            let response = Response::Fetch(FetchResponse {
                throttle_ms: 0,
                partitions: kept,
                error: ErrorCode::None,
                session_id: plan.session_id,
            });
            return Reply { response, trailer };
        }
        attempt += 1;
        let local = async {
            if local_waits.is_empty() {
                std::future::pending::<()>().await
            } else {
                wait_led_here(&local_waits).await
            }
        };
        let elsewhere = async {
            if waits.is_empty() {
                std::future::pending::<()>().await
            } else {
                wait_anywhere(context, waits, deadline).await
            }
        };
        super::work::with_deadline(deadline, futures_lite::future::or(local, elsewhere)).await;
    }
}

fn session_refused(error: ErrorCode) -> Reply {
    Response::Fetch(FetchResponse {
        throttle_ms: 0,
        partitions: Vec::new(),
        error,
        session_id: 0,
    })
    .into()
}

/// Reads each wanted partition once, one outcome per entry in order: partitions this
/// shard leads (as a session knows them) in place, the rest routed to their shards.
async fn read_partitions(
    context: &ShardContext,
    wanted: &[Wanted],
    max_bytes: u32,
) -> Vec<FetchOutcome> {
    // Every partition may read a fair share of the response's budget; what comes back is
    // then trimmed to the budget, in order.
    let known_count = wanted.iter().filter(|w| w.topic.is_ok()).count().max(1);
    let share = (max_bytes as usize / known_count).max(1);
    let mut outcomes: Vec<Option<FetchOutcome>> = Vec::with_capacity(wanted.len());
    let mut reads = Vec::new();
    let mut routed = Vec::new();
    let mut routed_at = Vec::new();
    for (index, entry) in wanted.iter().enumerate() {
        let topic = match &entry.topic {
            Ok(topic) => topic,
            Err(name) => {
                outcomes.push(Some(FetchOutcome {
                    response: FetchPartitionResponse::without_data(
                        name.clone(),
                        entry.partition,
                        ErrorCode::UnknownTopicOrPartition,
                    ),
                    chunks: Vec::new(),
                }));
                continue;
            }
        };
        let work = FetchWork {
            topic: topic.clone(),
            partition: entry.partition,
            offset: entry.offset,
            max_bytes: (entry.max_bytes as usize).min(share) as u32,
            leader_epoch: entry.leader_epoch,
        };
        match entry.current_local() {
            Some(leadership) => match super::work::caught_up(&leadership.log, &work) {
                Some(outcome) => outcomes.push(Some(outcome)),
                None => {
                    reads.push((index, leadership.clone(), work));
                    outcomes.push(None);
                }
            },
            None => {
                routed_at.push(index);
                routed.push(work);
                outcomes.push(None);
            }
        }
    }
    let reads = reads
        .into_iter()
        .map(|(index, leadership, work)| async move {
            let outcome = super::work::fetch_read(context, &leadership.log, &work).await;
            (index, outcome)
        });
    let (read, routed) = futures::join!(futures::future::join_all(reads), route(context, routed));
    for (index, outcome) in read {
        outcomes[index] = Some(outcome);
    }
    for (index, outcome) in routed_at.into_iter().zip(routed) {
        outcomes[index] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every partition was answered, read or routed"))
        .collect()
}

/// Waits until any of these partitions this shard leads has data past its offset (or its
/// leadership ended). A log is looked at again only once it changed: the waker stays
/// registered with the others.
async fn wait_led_here(waits: &[(Rc<Leadership>, u64)]) {
    let mut seen: Vec<Option<u64>> = vec![None; waits.len()];
    let mut registered: Option<std::task::Waker> = None;
    std::future::poll_fn(|cx| {
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Another waker: register it everywhere.
            seen.iter_mut().for_each(|seen| *seen = None);
            registered = Some(cx.waker().clone());
        }
        for ((leadership, offset), seen) in waits.iter().zip(&mut seen) {
            let log = &leadership.log;
            if *seen == Some(log.change_count()) {
                continue;
            }
            if leadership.is_deposed() || *offset < log.high_watermark() {
                return std::task::Poll::Ready(());
            }
            *seen = Some(log.wake_on_change(cx.waker()));
        }
        std::task::Poll::Pending
    })
    .await
}

/// Waits until any of the partitions (on any shard) has data past its offset, or `deadline`.
async fn wait_anywhere(
    context: &ShardContext,
    waits: Vec<(Arc<TopicSpec>, u32, u64)>,
    deadline: Instant,
) {
    let grouped = context.ownership.by_shard(waits, |(topic, partition, _)| {
        (topic.name.as_str(), *partition)
    });
    // Local partitions are waited on here; remote ones by a wait on their shard.
    let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> =
        Vec::new();
    for (shard, waits) in grouped {
        let waits: Vec<_> = waits.into_iter().map(|(_, wait)| wait).collect();
        if shard == context.shard_id {
            futures.push(Box::pin(async move {
                wait_for_data(context, &waits, deadline).await
            }));
        } else {
            futures.push(Box::pin(async move {
                let wait = deadline.saturating_duration_since(context.clock.now());
                let work = WaitWork { waits, wait };
                // A shard that is gone has nothing to wait for: the fetch reads again.
                let _ = context.mesh.call(shard, work, ShardMessage::Wait).await;
            }));
        }
    }
    super::work::with_deadline(deadline, futures::future::select_all(futures)).await;
}

async fn list_offsets(context: &ShardContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let catalog = context.catalog();
    let mut known = Vec::new();
    let mut work = Vec::new();
    for entry in &request.partitions {
        let topic = find(&catalog, &entry.topic, entry.partition);
        if let Some(topic) = &topic {
            work.push(ListOffsetsWork {
                topic: topic.clone(),
                partition: entry.partition,
                spec: entry.spec,
            });
        }
        known.push(topic.is_some());
    }
    let mut outcomes = route(context, work).await.into_iter();
    let partitions = request
        .partitions
        .into_iter()
        .zip(known)
        .map(|(entry, known)| {
            if !known {
                return crate::protocol::ListOffsetsPartitionResponse {
                    topic: entry.topic,
                    partition: entry.partition,
                    error: ErrorCode::UnknownTopicOrPartition,
                    offset: 0,
                    timestamp_ms: -1,
                };
            }
            outcomes.next().expect("one outcome per routed partition")
        })
        .collect();
    ListOffsetsResponse { partitions }
}

fn describe_configs(
    context: &ShardContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let catalog = context.catalog();
    let topics = request
        .topics
        .into_iter()
        .map(|name| match catalog.topic(&name) {
            Some(topic) => TopicConfigs {
                topic: name,
                error: ErrorCode::None,
                entries: topic
                    .config
                    .entries()
                    .into_iter()
                    .map(|(key, value, is_default)| DescribedConfigEntry {
                        key,
                        value,
                        is_default,
                    })
                    .collect(),
            },
            None => TopicConfigs {
                topic: name,
                error: ErrorCode::UnknownTopicOrPartition,
                entries: Vec::new(),
            },
        })
        .collect();
    DescribeConfigsResponse { topics }
}
