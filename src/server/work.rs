//! Partition work: what a request asks of one partition, carried out on the shard that owns
//! it, whether the request arrived there or was forwarded there over the mesh.
//!
//! Everything here is `Send` (it crosses shards): batches travel as `bytes::Bytes`, which
//! cached batches already are, so a forwarded fetch served from the cache copies nothing;
//! only batches read from disk (a glommio read buffer, bound to its shard) are copied once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::context::ShardContext;
use crate::cluster::TopicSpec;
use crate::log::{AppendError, PartitionLog, ReadChunk, ReadError};
use crate::protocol::{
    Acks, ErrorCode, FetchPartitionResponse, ListOffsetsPartitionResponse, OffsetSpec,
    ProducePartitionResponse,
};
use crate::record::header::peek_batch_length;
use crate::record::{validate, BatchError};

/// One partition's share of a request.
#[derive(Debug)]
pub enum PartitionWork {
    Produce {
        topic: Arc<TopicSpec>,
        partition: u32,
        batches: Bytes,
        acks: Acks,
        timeout: Duration,
    },
    Fetch {
        topic: Arc<TopicSpec>,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    },
    ListOffsets {
        topic: Arc<TopicSpec>,
        partition: u32,
        spec: OffsetSpec,
    },
}

impl PartitionWork {
    /// The outcome of this work when it cannot be carried out at all.
    pub fn failed(&self, error: ErrorCode) -> PartitionOutcome {
        let (topic, partition) = self.topic_partition();
        let topic = topic.name.clone();
        match self {
            PartitionWork::Produce { .. } => PartitionOutcome::Produce(ProducePartitionResponse {
                topic,
                partition,
                error,
                base_offset: 0,
                log_append_time_ms: -1,
                log_start_offset: 0,
                message: error.to_string(),
            }),
            PartitionWork::Fetch { .. } => PartitionOutcome::Fetch(
                FetchPartitionResponse {
                    topic,
                    partition,
                    error,
                    high_watermark: 0,
                    log_start_offset: 0,
                    last_stable_offset: 0,
                    batch_bytes: 0,
                },
                Vec::new(),
            ),
            PartitionWork::ListOffsets { .. } => {
                PartitionOutcome::ListOffsets(ListOffsetsPartitionResponse {
                    topic,
                    partition,
                    error,
                    offset: 0,
                    timestamp_ms: -1,
                })
            }
        }
    }

    pub fn topic_partition(&self) -> (&Arc<TopicSpec>, u32) {
        match self {
            PartitionWork::Produce {
                topic, partition, ..
            }
            | PartitionWork::Fetch {
                topic, partition, ..
            }
            | PartitionWork::ListOffsets {
                topic, partition, ..
            } => (topic, *partition),
        }
    }
}

/// The outcome of one partition's work.
#[derive(Debug)]
pub enum PartitionOutcome {
    Produce(ProducePartitionResponse),
    Fetch(FetchPartitionResponse, Vec<Bytes>),
    ListOffsets(ListOffsetsPartitionResponse),
}

fn storage_error(error: &impl std::fmt::Display) -> (ErrorCode, String) {
    (ErrorCode::StorageError, error.to_string())
}

fn append_error_code(error: &AppendError) -> ErrorCode {
    match error {
        AppendError::Fenced(_) | AppendError::Closed => ErrorCode::StorageError,
        AppendError::Truncated { .. } => ErrorCode::NotLeaderOrFollower,
    }
}

/// Splits a partition's share of a produce request into batches and validates each; the
/// first bad batch refuses the whole share (nothing of it is appended).
fn split_batches(share: &Bytes) -> Result<Vec<crate::record::ValidatedBatch>, BatchError> {
    let mut batches = Vec::new();
    let mut rest: &[u8] = share;
    while !rest.is_empty() {
        let length =
            peek_batch_length(rest).ok_or(BatchError::TooShort { len: rest.len() })? as usize;
        if length > rest.len() || length == 0 {
            return Err(BatchError::LengthMismatch {
                declared: length as u32,
                available: rest.len(),
            });
        }
        batches.push(validate(BytesMut::from(&rest[..length]))?);
        rest = &rest[length..];
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

async fn produce(
    log: &PartitionLog,
    batches: &Bytes,
    acks: Acks,
    timeout: Duration,
) -> Result<(u64, i64), (ErrorCode, String)> {
    let batches = split_batches(batches).map_err(|e| (batch_error_code(&e), e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut first = None;
    let mut last_offset = 0;
    for batch in batches {
        let append = log.append(batch, 0);
        let info = with_deadline(deadline, append)
            .await
            .ok_or((
                ErrorCode::Backpressure,
                "the partition's write queue stayed full".to_string(),
            ))?
            .map_err(|e| (append_error_code(&e), e.to_string()))?;
        first.get_or_insert((info.base_offset, info.append_time_ms));
        last_offset = info.last_offset;
    }
    let waited = match acks {
        Acks::None => Some(Ok(())),
        Acks::Leader => with_deadline(deadline, log.wait_written(last_offset)).await,
        Acks::All => with_deadline(deadline, log.wait_durable(last_offset)).await,
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
        Some(Ok(())) => Ok(first.expect("at least one batch")),
    }
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

/// The offset up to which consumers may read: what is durable under the flush policy.
pub fn high_watermark(log: &PartitionLog) -> u64 {
    log.durable_offset()
}

async fn fetch(log: &PartitionLog, offset: u64, max_bytes: u32) -> Result<Vec<Bytes>, ReadError> {
    if max_bytes == 0 {
        // No budget left in the response: nothing is read (a read returns at least a batch).
        return Ok(Vec::new());
    }
    let read = log
        .read(offset, max_bytes as usize, high_watermark(log))
        .await?;
    Ok(read
        .chunks
        .into_iter()
        .map(|chunk| match chunk {
            ReadChunk::Memory(bytes) => bytes,
            ReadChunk::Disk(read) => Bytes::copy_from_slice(&read),
        })
        .collect())
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

/// Carries out one partition's work on this (its owning) shard.
pub async fn execute(context: &ShardContext, work: PartitionWork) -> PartitionOutcome {
    let (topic, partition) = work.topic_partition();
    let (topic, partition) = (topic.clone(), partition);
    let log = context.partitions.get(&topic, partition).await;
    match work {
        PartitionWork::Produce {
            batches,
            acks,
            timeout,
            ..
        } => {
            let mut response = ProducePartitionResponse {
                topic: topic.name.clone(),
                partition,
                error: ErrorCode::None,
                base_offset: 0,
                log_append_time_ms: -1,
                log_start_offset: 0,
                message: String::new(),
            };
            let result = match &log {
                Ok(log) => produce(log, &batches, acks, timeout).await,
                Err(error) => Err(storage_error(error)),
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
            if let Ok(log) = &log {
                response.log_start_offset = log.log_start_offset();
            }
            PartitionOutcome::Produce(response)
        }
        PartitionWork::Fetch {
            offset, max_bytes, ..
        } => {
            let mut response = FetchPartitionResponse {
                topic: topic.name.clone(),
                partition,
                error: ErrorCode::None,
                high_watermark: 0,
                log_start_offset: 0,
                last_stable_offset: 0,
                batch_bytes: 0,
            };
            let log = match log {
                Ok(log) => log,
                Err(_) => {
                    response.error = ErrorCode::StorageError;
                    return PartitionOutcome::Fetch(response, Vec::new());
                }
            };
            let chunks = match fetch(&log, offset, max_bytes).await {
                Ok(chunks) => chunks,
                Err(ReadError::OffsetOutOfRange { .. }) => {
                    response.error = ErrorCode::OffsetOutOfRange;
                    Vec::new()
                }
                Err(_) => {
                    response.error = ErrorCode::StorageError;
                    Vec::new()
                }
            };
            response.high_watermark = high_watermark(&log);
            response.last_stable_offset = response.high_watermark;
            response.log_start_offset = log.log_start_offset();
            response.batch_bytes = chunks.iter().map(|c| c.len() as u32).sum();
            PartitionOutcome::Fetch(response, chunks)
        }
        PartitionWork::ListOffsets { spec, .. } => {
            let mut response = ListOffsetsPartitionResponse {
                topic: topic.name.clone(),
                partition,
                error: ErrorCode::None,
                offset: 0,
                timestamp_ms: -1,
            };
            match log {
                Ok(log) => match list_offset(&log, &spec).await {
                    Ok((offset, timestamp)) => {
                        response.offset = offset;
                        response.timestamp_ms = timestamp;
                    }
                    Err(_) => response.error = ErrorCode::StorageError,
                },
                Err(_) => response.error = ErrorCode::StorageError,
            }
            PartitionOutcome::ListOffsets(response)
        }
    }
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
        if let Ok(log) = context.partitions.get(topic, *partition).await {
            let offset = *offset;
            futures.push(Box::pin(async move {
                let _ = log.wait_durable(offset).await;
            }));
        }
    }
    if futures.is_empty() {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return;
    }
    with_deadline(deadline, futures::future::select_all(futures)).await;
}
