//! Partition work carried out on the shard that owns the partition, whether the request
//! arrived there or was forwarded there over the mesh (`super::route`).
//!
//! Everything that crosses shards is `Send`: batches travel as `bytes::Bytes`, which
//! cached batches already are, so a forwarded fetch served from the cache copies nothing;
//! only batches read from disk (a glommio read buffer, bound to its shard) are copied once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::context::ShardContext;
use crate::cluster::TopicSpec;
use crate::constants::BATCH_ZERO_COPY_BYTES_MIN;
use crate::log::producers::ProducerStateError;
use crate::log::{AppendError, PartitionLog, ReadChunk, ReadError};
use crate::protocol::{
    Acks, ErrorCode, FetchPartitionResponse, ListOffsetsPartitionResponse, OffsetSpec,
    ProducePartitionResponse,
};
use crate::record::header::peek_batch_length;
use crate::record::{validate, BatchError};
use crate::replication::Leadership;
use crate::shard::messages::{FetchOutcome, FetchWork, ListOffsetsWork, ProduceWork};

fn append_error_code(error: &AppendError) -> ErrorCode {
    match error {
        AppendError::Fenced(_) | AppendError::Closed => ErrorCode::StorageError,
        AppendError::Truncated { .. }
        | AppendError::NotContiguous { .. }
        | AppendError::NotAllowed { .. } => ErrorCode::NotLeaderOrFollower,
        AppendError::Producer(refused) => match refused {
            ProducerStateError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            ProducerStateError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            _ => ErrorCode::InvalidProducerFields,
        },
    }
}

/// Splits a partition's share of a produce request into batches and validates each; the
/// first bad batch refuses the whole share (nothing of it is appended). A batch stays where
/// it arrived (a view of the request's receive buffer) unless it is smaller than
/// `BATCH_ZERO_COPY_BYTES_MIN`: such a batch is copied out, so that small batches kept in
/// the log's cache do not each keep a whole receive chunk alive.
fn split_batches(mut share: BytesMut) -> Result<Vec<crate::record::ValidatedBatch>, BatchError> {
    let mut batches = Vec::new();
    while !share.is_empty() {
        let length =
            peek_batch_length(&share).ok_or(BatchError::TooShort { len: share.len() })? as usize;
        if length > share.len() || length == 0 {
            return Err(BatchError::LengthMismatch {
                declared: length as u32,
                available: share.len(),
            });
        }
        let batch = share.split_to(length);
        let batch = if length < BATCH_ZERO_COPY_BYTES_MIN {
            BytesMut::from(&batch[..])
        } else {
            batch
        };
        batches.push(validate(batch)?);
    }
    if batches.is_empty() {
        return Err(BatchError::TooShort { len: 0 });
    }
    Ok(batches)
}

fn batch_error_code(error: &BatchError) -> ErrorCode {
    match error {
        BatchError::TooLarge { .. } => ErrorCode::BatchTooLarge,
        _ => ErrorCode::CorruptBatch,
    }
}

/// Appends one request's share of a partition: every batch, in order. Returns the first
/// batch's base offset and append time, and the last offset.
async fn append_share(
    log: &PartitionLog,
    batches: BytesMut,
    deadline: Instant,
    leader_epoch: u32,
) -> Result<(u64, i64, u64), (ErrorCode, String)> {
    let batches = split_batches(batches).map_err(|e| (batch_error_code(&e), e.to_string()))?;
    let mut first = None;
    let mut last_offset = 0;
    for batch in batches {
        // A timer only for an append that has to wait for space.
        let appended = if log.has_room_for(batch.len()) {
            log.append(batch, leader_epoch).await
        } else {
            with_deadline(deadline, log.append(batch, leader_epoch))
                .await
                .ok_or((
                    ErrorCode::Backpressure,
                    "the partition's write queue stayed full".to_string(),
                ))?
        };
        let info = appended.map_err(|e| (append_error_code(&e), e.to_string()))?;
        first.get_or_insert((info.base_offset, info.append_time_ms));
        last_offset = info.last_offset;
    }
    let (base_offset, append_time_ms) = first.expect("a share has at least one batch");
    Ok((base_offset, append_time_ms, last_offset))
}

/// This shard's leadership of a partition, or why it cannot take its writes and reads.
/// `epoch` is the leader epoch the client believes in, when it says.
pub fn leadership_of(
    context: &ShardContext,
    topic: &TopicSpec,
    partition: u32,
    epoch: Option<u32>,
) -> Result<std::rc::Rc<Leadership>, (ErrorCode, String)> {
    let leadership = context
        .replication
        .leadership((topic.topic_id, partition))
        .ok_or_else(|| {
            let leader = topic.partition(partition).and_then(|p| p.leader);
            (
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} does not lead {}/{partition} (leader: {leader:?})",
                    context.broker_id(),
                    topic.name
                ),
            )
        })?;
    match epoch {
        Some(epoch) if epoch != leadership.epoch => {
            let code = if epoch < leadership.epoch {
                ErrorCode::FencedLeaderEpoch
            } else {
                ErrorCode::UnknownLeaderEpoch
            };
            Err((
                code,
                format!(
                    "{}/{partition} is led at epoch {} here, not {epoch}",
                    topic.name, leadership.epoch
                ),
            ))
        }
        _ => Ok(leadership),
    }
}

/// Waits until `last_offset` is as safe as `acks` asks: `none` at once; `leader` once
/// durable on this broker under the partition's flush policy; `all` once below the high
/// watermark, that is durable on every in-sync replica (with one replica, the same as
/// `leader`).
async fn wait_acknowledged(
    log: &PartitionLog,
    last_offset: u64,
    acks: Acks,
    expiry: Expiry,
    timeout: Duration,
) -> Result<(), (ErrorCode, String)> {
    let waited = match acks {
        Acks::None => Some(Ok(())),
        Acks::Leader => until_expired(expiry, log.wait_durable(last_offset)).await,
        Acks::All => until_expired(expiry, log.wait_high_watermark(last_offset)).await,
    };
    match waited {
        None => {
            tracing::warn!(
                dir = %log.dir().display(),
                last_offset,
                state = %log.writer_state(),
                "a produce was not acknowledged within {timeout:?}"
            );
            Err((
                ErrorCode::RequestTimedOut,
                format!("not acknowledged within {timeout:?}"),
            ))
        }
        Some(Err(error)) => Err((append_error_code(&error), error.to_string())),
        Some(Ok(())) => Ok(()),
    }
}

/// One timer for every share of a request on this shard, started when first awaited. A
/// timer per share cost a glommio timer (and a re-arm of its io_uring timeout) per partition
/// per request.
type Expiry = futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>;

fn expiry_at(deadline: Instant) -> Expiry {
    let sleep: futures::future::LocalBoxFuture<'static, ()> = Box::pin(async move {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await
    });
    futures::FutureExt::shared(sleep)
}

/// `future`'s output, or `None` once `expiry` fired first.
async fn until_expired<T>(
    expiry: Expiry,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        expiry.await;
        None
    })
    .await
}

/// The indexes of `items` grouped by partition, each group in the order of `items`, the
/// groups in the order of their first item.
fn by_partition(items: &[ProduceWork]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<(u64, u32), usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let key = (item.topic.topic_id, item.partition);
        let group = *group_of.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    groups
}

/// Carries out produce work on this shard. Shares of one partition are appended strictly in
/// request order (one after the other), then acknowledged together; different partitions
/// proceed concurrently.
pub async fn produce_all(
    context: &ShardContext,
    mut items: Vec<ProduceWork>,
) -> Vec<ProducePartitionResponse> {
    let groups = by_partition(&items);
    // Each share's batches, taken (not copied) by the append of its partition's group.
    let shares: Vec<std::cell::Cell<BytesMut>> = items
        .iter_mut()
        .map(|item| std::cell::Cell::new(std::mem::take(&mut item.batches)))
        .collect();
    let shares = &shares;
    // The shares come from one request, with its timeout; it runs from here.
    let timeout = items
        .iter()
        .map(|item| item.timeout)
        .max()
        .unwrap_or_default();
    let deadline = context.clock.now() + timeout;
    let expiry = &expiry_at(deadline);
    let items = &items;
    let per_partition = groups.into_iter().map(|indexes| async move {
        let first = &items[indexes[0]];
        let refuse = |failure: (ErrorCode, String)| {
            let answers = indexes.iter().map(|&i| (i, Err(failure.clone()))).collect();
            (answers, None)
        };
        let leadership =
            match leadership_of(context, &first.topic, first.partition, first.leader_epoch) {
                Ok(leadership) => leadership,
                Err(failure) => return refuse(failure),
            };
        if indexes.iter().any(|&i| items[i].acks == Acks::All) && !leadership.enough_in_sync() {
            return refuse((
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{} in-sync replicas {:?}, min.insync.replicas is {}",
                    leadership.in_sync().len(),
                    leadership.in_sync(),
                    leadership.min_in_sync()
                ),
            ));
        }
        let log = leadership.log.clone();
        let mut appended = Vec::with_capacity(indexes.len());
        for &index in &indexes {
            let item = &items[index];
            let batches = shares[index].take();
            let share_bytes = batches.len() as u64;
            let result = append_share(&log, batches, deadline, leadership.epoch).await;
            let (messages, bytes) = match &result {
                Ok((base, _, last)) => (last + 1 - base, share_bytes),
                Err(_) => (0, 0),
            };
            let key = (item.topic.topic_id, item.partition);
            context.metrics.produced(key, messages, bytes);
            appended.push((index, result));
        }
        let acknowledged = appended.into_iter().map(|(index, result)| {
            let (log, leadership) = (&log, &leadership);
            async move {
                let item = &items[index];
                let result = match result {
                    Ok((base, time, last)) => {
                        // A leader deposed meanwhile answers at once: the client retries
                        // at the new leader (an idempotent retry of a batch the new
                        // leader holds gets its offset back).
                        let acknowledged =
                            wait_acknowledged(log, last, item.acks, expiry.clone(), timeout);
                        let deposed = async {
                            leadership.wait_deposed().await;
                            Err((
                                ErrorCode::NotLeaderOrFollower,
                                "leadership moved before the write was acknowledged".into(),
                            ))
                        };
                        futures_lite::future::or(acknowledged, deposed)
                            .await
                            .map(|()| (base, time))
                    }
                    Err(error) => Err(error),
                };
                (index, result)
            }
        });
        let answers = futures::future::join_all(acknowledged).await;
        (answers, Some(log.log_start_offset()))
    });
    let mut responses: Vec<Option<ProducePartitionResponse>> = items.iter().map(|_| None).collect();
    for (answers, log_start_offset) in futures::future::join_all(per_partition).await {
        for (index, result) in answers {
            let item = &items[index];
            let mut response = ProducePartitionResponse {
                topic: item.topic.name.clone(),
                partition: item.partition,
                error: ErrorCode::None,
                base_offset: 0,
                log_append_time_ms: -1,
                log_start_offset: log_start_offset.unwrap_or(0),
                message: String::new(),
            };
            match result {
                Ok((base_offset, append_time_ms)) => {
                    response.base_offset = base_offset;
                    response.log_append_time_ms = append_time_ms;
                }
                Err((error, message)) => {
                    response.error = error;
                    response.message = message;
                }
            }
            responses[index] = Some(response);
        }
    }
    responses
        .into_iter()
        .map(|response| response.expect("every share is answered"))
        .collect()
}

/// Runs `future` until `deadline`; `None` if the deadline came first.
pub async fn with_deadline<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(remaining).await;
        None
    })
    .await
}

/// The offset up to which consumers may read: what every in-sync replica holds durably
/// under its flush policy.
pub fn high_watermark(log: &PartitionLog) -> u64 {
    log.high_watermark()
}

/// Whole batches from `offset`, and how many messages they hold.
async fn read(
    log: &PartitionLog,
    offset: u64,
    max_bytes: u32,
) -> Result<(Vec<Bytes>, u64), ReadError> {
    if max_bytes == 0 {
        // No budget left in the response: nothing is read (a read returns at least a batch).
        return Ok((Vec::new(), 0));
    }
    let read = log
        .read(offset, max_bytes as usize, high_watermark(log))
        .await?;
    let messages = read.next_offset.saturating_sub(read.first_offset);
    let chunks = read
        .chunks
        .into_iter()
        .map(|chunk| match chunk {
            ReadChunk::Memory(bytes) => bytes,
            ReadChunk::Disk(read) => Bytes::copy_from_slice(&read),
        })
        .collect();
    Ok((chunks, messages))
}

async fn list_offset(log: &PartitionLog, spec: &OffsetSpec) -> Result<(u64, i64), ReadError> {
    Ok(match spec {
        OffsetSpec::Earliest => (log.log_start_offset(), -1),
        OffsetSpec::Latest => (high_watermark(log), -1),
        OffsetSpec::Timestamp(timestamp) => match log.offset_for_timestamp(*timestamp).await? {
            Some(offset) => (offset.min(high_watermark(log)), *timestamp),
            None => (high_watermark(log), -1),
        },
    })
}

/// Fetches partitions on this (their owning) shard, one outcome per item in order. A
/// partition with nothing to read (an error, or a position at its high watermark, the
/// usual case for most partitions of a consumer that keeps up) is answered at once; only
/// the others wait for their reads, all together.
pub async fn fetch_all(context: &ShardContext, work: Vec<FetchWork>) -> Vec<FetchOutcome> {
    let mut outcomes = Vec::with_capacity(work.len());
    let mut reads = Vec::new();
    for work in work {
        match fetch_at_once(context, &work) {
            Ok(outcome) => outcomes.push(Some(outcome)),
            Err(log) => {
                reads.push((outcomes.len(), log, work));
                outcomes.push(None);
            }
        }
    }
    let reads = reads
        .into_iter()
        .map(|(index, log, work)| async move { (index, fetch_read(context, &log, &work).await) });
    for (index, outcome) in futures::future::join_all(reads).await {
        outcomes[index] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every partition was answered or read"))
        .collect()
}

fn without_data(work: &FetchWork, error: ErrorCode) -> FetchPartitionResponse {
    FetchPartitionResponse::without_data(work.topic.name.clone(), work.partition, error)
}

/// The outcome of a fetch that needs no read, or the log to read.
fn fetch_at_once(context: &ShardContext, work: &FetchWork) -> Result<FetchOutcome, PartitionLog> {
    let log = match leadership_of(context, &work.topic, work.partition, work.leader_epoch) {
        Ok(leadership) => leadership.log.clone(),
        Err((error, _)) => {
            let response = without_data(work, error);
            return Ok(FetchOutcome {
                response,
                chunks: Vec::new(),
            });
        }
    };
    caught_up(&log, work).ok_or(log)
}

/// The answer for a partition whose position is at its high watermark (nothing to read),
/// or `None` when there is something to read, or a position out of range.
pub fn caught_up(log: &PartitionLog, work: &FetchWork) -> Option<FetchOutcome> {
    let high_watermark = high_watermark(log);
    let log_start_offset = log.log_start_offset();
    if work.offset != high_watermark || work.offset < log_start_offset {
        return None;
    }
    let mut response = without_data(work, ErrorCode::None);
    response.high_watermark = high_watermark;
    response.last_stable_offset = high_watermark;
    response.log_start_offset = log_start_offset;
    Some(FetchOutcome {
        response,
        chunks: Vec::new(),
    })
}

/// Reads one partition for a fetch.
pub async fn fetch_read(
    context: &ShardContext,
    log: &PartitionLog,
    work: &FetchWork,
) -> FetchOutcome {
    let mut response = without_data(work, ErrorCode::None);
    let chunks = match read(log, work.offset, work.max_bytes).await {
        Ok((chunks, messages)) => {
            if messages > 0 {
                let bytes = chunks.iter().map(|c| c.len() as u64).sum();
                let key = (work.topic.topic_id, work.partition);
                context.metrics.fetched(key, messages, bytes);
            }
            chunks
        }
        Err(ReadError::OffsetOutOfRange { .. }) => {
            response.error = ErrorCode::OffsetOutOfRange;
            Vec::new()
        }
        Err(_) => {
            response.error = ErrorCode::StorageError;
            Vec::new()
        }
    };
    response.high_watermark = high_watermark(log);
    response.last_stable_offset = response.high_watermark;
    response.log_start_offset = log.log_start_offset();
    response.batch_bytes = chunks.iter().map(|c| c.len() as u32).sum();
    FetchOutcome { response, chunks }
}

/// Looks an offset up in one partition, on this (its owning) shard.
pub async fn list_offsets(
    context: &ShardContext,
    work: ListOffsetsWork,
) -> ListOffsetsPartitionResponse {
    let mut response = ListOffsetsPartitionResponse {
        topic: work.topic.name.clone(),
        partition: work.partition,
        error: ErrorCode::None,
        offset: 0,
        timestamp_ms: -1,
    };
    match leadership_of(context, &work.topic, work.partition, None) {
        Ok(leadership) => match list_offset(&leadership.log, &work.spec).await {
            Ok((offset, timestamp)) => {
                response.offset = offset;
                response.timestamp_ms = timestamp;
            }
            Err(_) => response.error = ErrorCode::StorageError,
        },
        Err((error, _)) => response.error = error,
    }
    response
}

/// Waits (up to `deadline`) until any of `offsets` on this shard's partitions has data
/// beyond it that a consumer may read.
pub async fn wait_for_data(
    context: &ShardContext,
    waits: &[(Arc<TopicSpec>, u32, u64)],
    deadline: Instant,
) {
    let mut futures = Vec::new();
    for (topic, partition, offset) in waits {
        if let Ok(leadership) = leadership_of(context, topic, *partition, None) {
            let log = leadership.log.clone();
            let offset = *offset;
            futures.push(Box::pin(async move {
                let _ = log.wait_high_watermark(offset).await;
            }));
        }
    }
    if futures.is_empty() {
        glommio::timer::sleep(deadline.saturating_duration_since(context.clock.now())).await;
        return;
    }
    with_deadline(deadline, futures::future::select_all(futures)).await;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::log::{FaultPlan, FlushPolicy, LogConfig, LogShard, ShardLogConfig};
    use crate::record::{BatchBuilder, Codec};

    /// `acks=leader` answers once the batch is durable on the leader under its flush
    /// policy (here: synced), not merely written. (Today's log publishes a round's written
    /// and synced offsets together, after its sync, so this pins the contract for a log
    /// that publishes writes sooner.)
    #[test]
    fn acks_leader_waits_until_the_batch_is_durable_under_the_flush_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let faults = Rc::new(FaultPlan::default());
                let shard = LogShard::new(ShardLogConfig {
                    faults: Some(faults.clone()),
                    ..ShardLogConfig::default()
                });
                let config = LogConfig {
                    flush: FlushPolicy::EveryBatch,
                    ..LogConfig::default()
                };
                let log = shard.open_partition(&path, config).await.unwrap();
                faults.stall_syncs.set(true);
                let mut builder = BatchBuilder::new(Codec::None);
                builder.push(1, None, b"value", &[]).unwrap();
                let bytes = builder.finish().unwrap();
                let timeout = Duration::from_secs(30);
                let deadline = Instant::now() + timeout;
                let (_, _, last) = append_share(&log, bytes, deadline, 0).await.unwrap();
                let acked = Rc::new(Cell::new(false));
                let waiting = {
                    let (log, acked) = (log.clone(), acked.clone());
                    glommio::spawn_local(async move {
                        let result = wait_acknowledged(
                            &log,
                            last,
                            Acks::Leader,
                            expiry_at(deadline),
                            timeout,
                        )
                        .await;
                        acked.set(true);
                        result
                    })
                };
                glommio::timer::sleep(Duration::from_millis(100)).await;
                assert!(!acked.get(), "acknowledged before the batch was synced");
                faults.stall_syncs.set(false);
                waiting.await.unwrap();
                assert!(log.durable_offset() > last);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn share(topic: &Arc<TopicSpec>, partition: u32) -> ProduceWork {
        ProduceWork {
            topic: topic.clone(),
            partition,
            batches: BytesMut::new(),
            acks: Acks::All,
            timeout: Duration::from_secs(1),
            leader_epoch: None,
        }
    }

    /// Two shares of one partition in one request are appended in request order: they are
    /// one group, in order, whatever lies between them.
    #[test]
    fn shares_of_one_partition_stay_in_request_order() {
        let topic = |name: &str, topic_id| {
            Arc::new(TopicSpec {
                name: name.into(),
                topic_id,
                partitions: 4,
                config: Default::default(),
                created_ms: 0,
                placement: Vec::new(),
            })
        };
        let (a, b) = (topic("a", 1), topic("b", 2));
        let items = vec![
            share(&a, 0),
            share(&b, 0),
            share(&a, 1),
            share(&a, 0),
            share(&b, 0),
            share(&a, 0),
        ];
        assert_eq!(
            by_partition(&items),
            vec![vec![0, 3, 5], vec![1, 4], vec![2]]
        );
    }
}
