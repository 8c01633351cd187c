//! Request handlers: one function per api, turning a decoded request into a response (and,
//! for fetch, the trailer of batches that follows it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use super::catalog::Catalog;
use super::context::{ShardContext, ShardMessage, CONTROLLER_SHARD};
use super::work::{wait_for_data, PartitionOutcome, PartitionWork};
use crate::cluster::{TopicError, TopicSpec};
use crate::constants::FRAME_TRAILER_BYTES_MAX;
use crate::protocol::{
    supported_apis, AlterConfigsRequest, AlterConfigsResponse, AlterConfigsResult, BrokerMetadata,
    ConfigEntry, CreateTopicResult, CreateTopicsRequest, CreateTopicsResponse, DecodedRequest,
    DeleteTopicResult, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribedConfigEntry, ErrorCode, FetchPartitionResponse, FetchRequest,
    FetchResponse, HandshakeResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, PartitionMetadata, ProducePartitionResponse, ProduceResponse, Request,
    Response, TopicConfigs, TopicMetadata,
};

/// The longest a produce may wait for its acknowledgement, whatever the client asks.
const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// The longest a fetch may wait for data, whatever the client asks.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

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

/// Handles one decoded request on this shard.
pub async fn handle(context: &ShardContext, decoded: DecodedRequest) -> Reply {
    if context.stopping.get() {
        return Response::Error(crate::protocol::ErrorResponse::new(
            ErrorCode::BrokerShuttingDown,
            "the broker is shutting down",
        ))
        .into();
    }
    let partition_batches = decoded.partition_batches;
    match decoded.request {
        Request::Handshake(_) => Response::Handshake(HandshakeResponse {
            error: ErrorCode::None,
            broker_id: context.broker_id,
            supported: supported_apis(),
        })
        .into(),
        Request::Metadata(request) => Response::Metadata(metadata(context, request)).into(),
        Request::Produce(request) => {
            Response::Produce(produce(context, request, partition_batches).await).into()
        }
        Request::Fetch(request) => fetch(context, request).await,
        Request::ListOffsets(request) => {
            Response::ListOffsets(list_offsets(context, request).await).into()
        }
        Request::DescribeConfigs(request) => {
            Response::DescribeConfigs(describe_configs(context, request)).into()
        }
        request @ (Request::CreateTopics(_)
        | Request::DeleteTopics(_)
        | Request::AlterConfigs(_)) => to_controller(context, request).await.into(),
        request @ (Request::FindCoordinator(_)
        | Request::JoinGroup(_)
        | Request::Heartbeat(_)
        | Request::LeaveGroup(_)
        | Request::OffsetCommit(_)
        | Request::OffsetFetch(_)
        | Request::ListGroups(_)
        | Request::DescribeGroup(_)
        | Request::ResetOffsets(_)) => super::groups::handle(context, request).await.into(),
    }
}

fn metadata(context: &ShardContext, request: MetadataRequest) -> MetadataResponse {
    let catalog = context.catalog();
    let describe = |topic: &TopicSpec| TopicMetadata {
        name: topic.name.clone(),
        error: ErrorCode::None,
        partitions: (0..topic.partitions)
            .map(|partition| PartitionMetadata {
                partition,
                error: ErrorCode::None,
                leader_broker: Some(context.broker_id),
                shard: context.owner_of(&topic.name, partition) as u16,
                leader_epoch: 0,
                replicas: vec![context.broker_id],
                in_sync_replicas: vec![context.broker_id],
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
        None => catalog.topics().map(|t| describe(t)).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match catalog.topic(&name) {
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
    MetadataResponse {
        brokers: vec![BrokerMetadata {
            broker_id: context.broker_id,
            host: context.advertised.host.clone(),
            port: context.advertised.port,
            shard_ports: context.advertised.shard_ports.clone(),
        }],
        shard_count: context.shard_count as u16,
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
    batches: Vec<Bytes>,
) -> ProduceResponse {
    let catalog = context.catalog();
    let acks = request.acks().unwrap_or(crate::protocol::Acks::All);
    let timeout = Duration::from_millis(u64::from(request.timeout_ms)).min(PRODUCE_TIMEOUT_MAX);
    let mut responses: Vec<Option<ProducePartitionResponse>> = Vec::new();
    let mut work = Vec::new();
    for (entry, share) in request.partitions.into_iter().zip(batches) {
        match find(&catalog, &entry.topic, entry.partition) {
            Some(topic) => {
                responses.push(None);
                work.push(PartitionWork::Produce {
                    topic,
                    partition: entry.partition,
                    batches: share,
                    acks,
                    timeout,
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
    let mut outcomes = context.route(work).await.into_iter();
    let partitions = responses
        .into_iter()
        .map(|known| {
            known.unwrap_or_else(|| match outcomes.next() {
                Some(PartitionOutcome::Produce(response)) => response,
                other => panic!("produce work gave {other:?}"),
            })
        })
        .collect();
    ProduceResponse {
        partitions,
        throttle_ms: 0,
    }
}

fn unknown_fetch(topic: String, partition: u32) -> FetchPartitionResponse {
    FetchPartitionResponse {
        topic,
        partition,
        error: ErrorCode::UnknownTopicOrPartition,
        high_watermark: 0,
        log_start_offset: 0,
        last_stable_offset: 0,
        batch_bytes: 0,
    }
}

/// Reads every partition once; if fewer than `min_bytes` came back and the client is
/// willing to wait, waits until any asked-for partition has new data (or the wait ends) and
/// reads again.
async fn fetch(context: &ShardContext, request: FetchRequest) -> Reply {
    let catalog = context.catalog();
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let mut known = Vec::new();
    for entry in &request.partitions {
        known.push(find(&catalog, &entry.topic, entry.partition));
    }
    let mut attempt = 0;
    loop {
        // Every partition may read a fair share of the response's budget; what comes back
        // is then trimmed to the budget below, in request order.
        let known_count = known.iter().flatten().count().max(1);
        let share = (request.max_bytes as usize / known_count).max(1);
        let mut work = Vec::new();
        for (entry, topic) in request.partitions.iter().zip(&known) {
            if let Some(topic) = topic {
                let max_bytes = (entry.partition_max_bytes as usize).min(share);
                work.push(PartitionWork::Fetch {
                    topic: topic.clone(),
                    partition: entry.partition,
                    offset: entry.fetch_offset,
                    max_bytes: max_bytes as u32,
                });
            }
        }
        let mut outcomes = context.route(work).await.into_iter();
        let mut partitions = Vec::new();
        let mut trailer = Vec::new();
        let mut total = 0usize;
        let mut waits = Vec::new();
        for (entry, topic) in request.partitions.iter().zip(&known) {
            if topic.is_none() {
                partitions.push(unknown_fetch(entry.topic.clone(), entry.partition));
                continue;
            }
            let Some(PartitionOutcome::Fetch(mut response, mut chunks)) = outcomes.next() else {
                panic!("fetch work gave another outcome");
            };
            // Whole batches only, within the budget (the first data always goes, as a read
            // always returns at least one batch); what is left out comes on the next fetch.
            let bytes = response.batch_bytes as usize;
            let over_budget = total > 0 && total + bytes > request.max_bytes as usize;
            if over_budget || total + bytes > FRAME_TRAILER_BYTES_MAX {
                response.batch_bytes = 0;
                chunks.clear();
            }
            total += response.batch_bytes as usize;
            if response.error == ErrorCode::None && response.batch_bytes == 0 {
                waits.push((
                    topic.clone().expect("known"),
                    entry.partition,
                    entry.fetch_offset,
                ));
            }
            partitions.push(response);
            trailer.extend(chunks);
        }
        let satisfied = total >= request.min_bytes.max(1) as usize;
        if satisfied || attempt > 0 || wait.is_zero() || waits.is_empty() {
            let response = Response::Fetch(FetchResponse {
                throttle_ms: 0,
                partitions,
            });
            return Reply { response, trailer };
        }
        attempt += 1;
        wait_anywhere(context, waits, deadline).await;
    }
}

/// Waits until any of the partitions (on any shard) has data past its offset, or `deadline`.
async fn wait_anywhere(
    context: &ShardContext,
    waits: Vec<(Arc<TopicSpec>, u32, u64)>,
    deadline: Instant,
) {
    let mut per_shard: Vec<Vec<(Arc<TopicSpec>, u32, u64)>> =
        (0..context.shard_count).map(|_| Vec::new()).collect();
    for wait in waits {
        let owner = context.owner_of(&wait.0.name, wait.1);
        per_shard[owner].push(wait);
    }
    // Local partitions are waited on here; remote ones by a zero-byte long fetch there.
    let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> =
        Vec::new();
    for (shard, waits) in per_shard.into_iter().enumerate() {
        if waits.is_empty() {
            continue;
        }
        if shard == context.shard_id {
            futures.push(Box::pin(async move {
                wait_for_data(context, &waits, deadline).await
            }));
        } else {
            futures.push(Box::pin(async move {
                let (reply, woken) = oneshot::channel();
                let wait = deadline.saturating_duration_since(Instant::now());
                if context
                    .send(shard, ShardMessage::Wait { waits, wait, reply })
                    .await
                    .is_ok()
                {
                    let _ = woken.await;
                }
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
            work.push(PartitionWork::ListOffsets {
                topic: topic.clone(),
                partition: entry.partition,
                spec: entry.spec,
            });
        }
        known.push(topic.is_some());
    }
    let mut outcomes = context.route(work).await.into_iter();
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
            match outcomes.next() {
                Some(PartitionOutcome::ListOffsets(response)) => response,
                other => panic!("list offsets work gave {other:?}"),
            }
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

/// Sends a catalogue change to the controller shard (or runs it, on that shard).
async fn to_controller(context: &ShardContext, request: Request) -> Response {
    if context.shard_id == CONTROLLER_SHARD {
        return controller_handle(context, request).await;
    }
    let (reply, response) = oneshot::channel();
    if context
        .send(CONTROLLER_SHARD, ShardMessage::Admin { request, reply })
        .await
        .is_err()
    {
        return shutting_down();
    }
    response.await.unwrap_or_else(|_| shutting_down())
}

fn shutting_down() -> Response {
    Response::Error(crate::protocol::ErrorResponse::new(
        ErrorCode::BrokerShuttingDown,
        "the controller is gone",
    ))
}

fn topic_error_code(error: &TopicError) -> ErrorCode {
    match error {
        TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
        TopicError::NotFound(_) => ErrorCode::UnknownTopicOrPartition,
        TopicError::InvalidName { .. } => ErrorCode::InvalidTopicName,
        TopicError::InvalidPartitions(_) => ErrorCode::InvalidPartitionCount,
        TopicError::Config(_) => ErrorCode::InvalidConfig,
        TopicError::Storage(_) => ErrorCode::StorageError,
    }
}

fn outcome(error: Option<&TopicError>) -> (ErrorCode, String) {
    match error {
        None => (ErrorCode::None, String::new()),
        Some(error) => (topic_error_code(error), error.to_string()),
    }
}

/// On the controller shard: applies a catalogue change, then publishes the new catalogue to
/// every shard and waits until all have applied it, so that a client told "created" can
/// use the topic on any shard at once.
pub async fn controller_handle(context: &ShardContext, request: Request) -> Response {
    let store = context
        .controller
        .as_ref()
        .expect("the controller shard holds the catalogue");
    let mut store = store.write().await.expect("catalogue lock never closed");
    let mut deleted = Vec::new();
    let response = match request {
        Request::CreateTopics(CreateTopicsRequest {
            topics,
            validate_only,
            ..
        }) => {
            let mut results = Vec::new();
            for topic in topics {
                let entries: Vec<(String, String)> = topic
                    .configs
                    .into_iter()
                    .map(|c| (c.key, c.value))
                    .collect();
                let result = if topic.replication_factor > 1 {
                    Err((
                        ErrorCode::InvalidReplicationFactor,
                        "this broker runs alone: replication factor must be 1".to_string(),
                    ))
                } else if validate_only {
                    store
                        .check_create(&topic.name, topic.partitions, &entries)
                        .map(|_| ())
                        .map_err(|e| outcome(Some(&e)))
                } else {
                    store
                        .create_topic(&topic.name, topic.partitions, &entries)
                        .await
                        .map(|_| ())
                        .map_err(|e| outcome(Some(&e)))
                };
                let (error, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
                results.push(CreateTopicResult {
                    name: topic.name,
                    error,
                    message,
                });
            }
            Response::CreateTopics(CreateTopicsResponse { topics: results })
        }
        Request::DeleteTopics(DeleteTopicsRequest { names, .. }) => {
            let mut results = Vec::new();
            for name in names {
                let result = store.delete_topic(&name).await;
                let (error, message) = outcome(result.as_ref().err());
                if let Ok(topic) = result {
                    deleted.push(Arc::new(topic));
                }
                results.push(DeleteTopicResult {
                    name,
                    error,
                    message,
                });
            }
            Response::DeleteTopics(DeleteTopicsResponse { topics: results })
        }
        Request::AlterConfigs(AlterConfigsRequest {
            topics,
            validate_only,
        }) => {
            let mut results = Vec::new();
            for topic in topics {
                let set: Vec<(String, String)> =
                    topic.set.into_iter().map(|c| (c.key, c.value)).collect();
                let result = store
                    .alter_config(&topic.name, &set, &topic.delete, validate_only)
                    .await;
                let (error, message) = outcome(result.as_ref().err());
                results.push(AlterConfigsResult {
                    topic: topic.name,
                    error,
                    message,
                });
            }
            Response::AlterConfigs(AlterConfigsResponse { topics: results })
        }
        other => panic!("not a catalogue change: {:?}", other.api_key()),
    };
    let version = context.catalog().version + 1;
    let catalog = Arc::new(Catalog::new(version, store.topics().cloned()));
    drop(store);
    publish(context, catalog, deleted).await;
    response
}

/// Installs a new catalogue on every shard (this one included) and waits for all.
pub async fn publish(context: &ShardContext, catalog: Arc<Catalog>, deleted: Vec<Arc<TopicSpec>>) {
    let mut acknowledgements = Vec::new();
    for shard in 0..context.shard_count {
        if shard == context.shard_id {
            continue;
        }
        let (applied, done) = oneshot::channel();
        let message = ShardMessage::Catalog {
            catalog: catalog.clone(),
            deleted: deleted.clone(),
            applied,
        };
        if context.send(shard, message).await.is_ok() {
            acknowledgements.push(done);
        }
    }
    apply_catalog(context, catalog, &deleted).await;
    for done in acknowledgements {
        let _ = done.await;
    }
}

/// Installs a catalogue on this shard and drops the partitions of deleted topics.
pub async fn apply_catalog(
    context: &ShardContext,
    catalog: Arc<Catalog>,
    deleted: &[Arc<TopicSpec>],
) {
    if catalog.version >= context.catalog().version {
        *context.catalog.borrow_mut() = catalog;
    }
    for topic in deleted {
        context.partitions.drop_topic(topic).await;
    }
}
