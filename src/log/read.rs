//! Reads: whole batches by offset, bounded by bytes and by an upper offset, and the offset
//! for a timestamp.
//!
//! A read is served from memory when it can (batches not yet written, then the shard's
//! cache of recent batches) and otherwise from the segment with one direct-IO read. Batches
//! read from disk are checked (header and CRC) before they are handed out.

use std::ops::Deref;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::ReadResult;

use super::error::ReadError;
use super::flush::segment_file;
use super::index::{OffsetIndex, TimeIndex};
use super::io::read_small_file;
use super::partition::{Partition, PartitionLog};
use super::segment::{
    relative_offset, scan_batches, segment_path, ScanStop, SegmentIndexes, OFFSET_INDEX_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::constants::{
    BATCH_HEADER_BYTES, INDEX_INTERVAL_BYTES, READ_BYTES_MAX, READ_WINDOW_MIN_BYTES,
};
use crate::record::{check_header, BatchHeader};

/// A run of whole batches: a cached or pending batch, or a slice of one disk read.
pub enum ReadChunk {
    Memory(Bytes),
    Disk(ReadResult),
}

impl Deref for ReadChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadChunk::Memory(bytes) => bytes,
            ReadChunk::Disk(read) => read,
        }
    }
}

/// The result of a read: whole batches covering `[first_offset, next_offset)`, in order.
/// Empty when the reader is caught up.
#[derive(Default)]
pub struct ReadBatches {
    pub chunks: Vec<ReadChunk>,
    /// The base offset of the first batch (at or below the offset asked for).
    pub first_offset: u64,
    /// The offset to read from next.
    pub next_offset: u64,
}

impl ReadBatches {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}

/// How many times a read that raced a truncation is retried before giving up.
const READ_RETRIES_MAX: u32 = 3;

impl PartitionLog {
    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes` (but
    /// always at least one batch), and only batches that end at or below `upper_offset`
    /// (a high watermark; `u64::MAX` for none).
    pub async fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_offset: u64,
    ) -> Result<ReadBatches, ReadError> {
        let mut attempt = 0;
        loop {
            let layout = self.inner.state.borrow().layout_version;
            let result = self.read_once(offset, max_bytes, upper_offset).await;
            let raced = self.inner.state.borrow().layout_version != layout;
            if !raced || attempt == READ_RETRIES_MAX {
                return result;
            }
            attempt += 1;
        }
    }

    async fn read_once(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_offset: u64,
    ) -> Result<ReadBatches, ReadError> {
        let partition = &self.inner;
        let (limit, written_offset) = {
            let state = partition.state.borrow();
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(ReadError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
                });
            }
            (state.next_offset.min(upper_offset), state.written_offset)
        };
        let mut out = ReadBatches {
            chunks: Vec::new(),
            first_offset: offset,
            next_offset: offset,
        };
        if offset >= limit {
            return Ok(out);
        }
        let metrics = &partition.shard.metrics;
        if offset >= written_offset {
            collect_pending(partition, offset, limit, max_bytes, &mut out);
            metrics.cache_hits.set(metrics.cache_hits.get() + 1);
            return Ok(out);
        }
        let mut cached = Vec::new();
        let from_cache = partition.shard.cache.borrow().collect(
            partition.id,
            offset,
            limit,
            max_bytes,
            &mut cached,
        );
        if let Some(next_offset) = from_cache {
            if let Some(first) = cached.first().and_then(|b| BatchHeader::decode(b)) {
                out.first_offset = first.base_offset;
            }
            let taken: usize = cached.iter().map(|b| b.len()).sum();
            out.chunks.extend(cached.into_iter().map(ReadChunk::Memory));
            out.next_offset = next_offset;
            if next_offset >= written_offset && taken < max_bytes {
                let mut rest = ReadBatches::default();
                collect_pending(partition, next_offset, limit, max_bytes - taken, &mut rest);
                if rest.first_offset == next_offset {
                    out.next_offset = rest.next_offset.max(out.next_offset);
                    out.chunks.extend(rest.chunks);
                }
            }
            metrics.cache_hits.set(metrics.cache_hits.get() + 1);
            return Ok(out);
        }
        metrics.cache_misses.set(metrics.cache_misses.get() + 1);
        read_from_disk(partition, offset, limit, max_bytes).await
    }

    /// The base offset of the first batch whose timestamp is at or after `timestamp_ms`
    /// (producer time, or append time for log-append-time batches); `None` when every
    /// batch is older.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, ReadError> {
        let partition = &self.inner;
        let candidate = {
            let state = partition.state.borrow();
            state
                .segments
                .values()
                .find(|s| s.max_timestamp_ms >= timestamp_ms && !s.is_empty())
                .map(|s| (s.base_offset, s.next_offset))
        };
        let Some((base_offset, segment_end)) = candidate else {
            let state = partition.state.borrow();
            let pending = state.pending.iter().find(|b| {
                BatchHeader::decode(&b.bytes)
                    .is_some_and(|h| h.index_timestamp_ms() >= timestamp_ms)
            });
            return Ok(pending.map(|b| b.base_offset));
        };
        let mut position = with_indexes(partition, base_offset, |indexes| {
            u64::from(indexes.offsets.lookup(indexes.times.lookup(timestamp_ms)))
        })
        .await?;
        let mut expected = None;
        loop {
            let read = read_window(partition, base_offset, position, READ_BYTES_MAX).await?;
            let start_offset = expected.unwrap_or_else(|| {
                BatchHeader::decode(&read).map_or(base_offset, |h| h.base_offset)
            });
            let mut found = None;
            let scan = scan_batches(&read, position, start_offset, |batch| {
                if found.is_none() && batch.header.index_timestamp_ms() >= timestamp_ms {
                    found = Some(batch.header.base_offset);
                }
            });
            if let Some(offset) = found {
                return Ok(Some(offset));
            }
            match scan.stop {
                ScanStop::Partial { .. } if scan.next_offset < segment_end => {
                    position += scan.valid_bytes as u64;
                    expected = Some(scan.next_offset);
                }
                _ => return Ok(None),
            }
        }
    }
}

/// Takes pending (unwritten) batches from the one holding `offset`.
fn collect_pending(
    partition: &Partition,
    offset: u64,
    limit: u64,
    max_bytes: usize,
    out: &mut ReadBatches,
) {
    let state = partition.state.borrow();
    let first = state.pending.partition_point(|b| b.next_offset <= offset);
    let mut taken = 0usize;
    for (i, batch) in state.pending.range(first..).enumerate() {
        let fits = taken == 0 || taken + batch.bytes.len() <= max_bytes;
        if batch.next_offset > limit || !fits {
            break;
        }
        if i == 0 {
            out.first_offset = batch.base_offset;
        }
        taken += batch.bytes.len();
        out.next_offset = batch.next_offset;
        out.chunks.push(ReadChunk::Memory(batch.bytes.clone()));
    }
}

/// Answers `lookup` from a segment's indexes without copying them: in place for the active
/// segment, from its index files for a closed one (loaded once and kept while the segment's
/// file stays in the shard's open-file table).
pub(super) async fn with_indexes<T>(
    partition: &Partition,
    base_offset: u64,
    lookup: impl Fn(&SegmentIndexes) -> T,
) -> Result<T, ReadError> {
    {
        let state = partition.state.borrow();
        let segment = state
            .segments
            .get(&base_offset)
            .ok_or_else(|| vanished(&state, base_offset))?;
        if let Some(active) = &segment.active {
            return Ok(lookup(&active.indexes));
        }
    }
    let key = (partition.id, base_offset);
    if let Some(indexes) = partition.shard.files.borrow_mut().indexes(key) {
        return Ok(lookup(&indexes));
    }
    let size = segment_size(partition, base_offset)?;
    let indexes = Rc::new(load_indexes(&partition.dir, base_offset, size).unwrap_or_default());
    segment_file(partition, base_offset).await?;
    partition
        .shard
        .files
        .borrow_mut()
        .set_indexes(key, indexes.clone());
    Ok(lookup(&indexes))
}

/// Loads a closed segment's index files; `None` when either is missing or does not match.
pub(super) fn load_indexes(
    dir: &std::path::Path,
    base_offset: u64,
    size: u64,
) -> Option<SegmentIndexes> {
    let offsets = read_small_file(&segment_path(dir, base_offset, OFFSET_INDEX_SUFFIX)).ok()??;
    let times = read_small_file(&segment_path(dir, base_offset, TIME_INDEX_SUFFIX)).ok()??;
    Some(SegmentIndexes {
        offsets: OffsetIndex::decode(&offsets, base_offset, size).ok()?,
        times: TimeIndex::decode(&times, base_offset, size).ok()?,
    })
}

/// A segment removed while a read was under way (retention, truncation): the read is
/// retried by `read`, or reported as out of range.
fn vanished(state: &super::partition::State, offset: u64) -> ReadError {
    ReadError::OffsetOutOfRange {
        offset,
        log_start: state.log_start_offset,
        log_end: state.next_offset,
    }
}

fn segment_size(partition: &Partition, base_offset: u64) -> Result<u64, ReadError> {
    let state = partition.state.borrow();
    let segment = state
        .segments
        .get(&base_offset)
        .ok_or_else(|| vanished(&state, base_offset))?;
    Ok(segment.size)
}

async fn read_window(
    partition: &Partition,
    base_offset: u64,
    position: u64,
    length: usize,
) -> Result<ReadResult, ReadError> {
    let size = segment_size(partition, base_offset)?;
    let length = length.min(size.saturating_sub(position) as usize);
    let file = segment_file(partition, base_offset).await?;
    Ok(file.read_at(position, length).await?)
}

async fn read_from_disk(
    partition: &Partition,
    offset: u64,
    limit: u64,
    max_bytes: usize,
) -> Result<ReadBatches, ReadError> {
    let (base_offset, segment_size) = {
        let state = partition.state.borrow();
        let (_, segment) = state
            .segments
            .range(..=offset)
            .next_back()
            .expect("offsets at or above the log start lie in a segment");
        (segment.base_offset, segment.size)
    };
    let relative = relative_offset(base_offset, offset);
    let mut position = with_indexes(partition, base_offset, |indexes| {
        u64::from(indexes.offsets.lookup(relative))
    })
    .await?;
    let path = partition.segment_path(base_offset);
    let corrupt = |position: u64, reason| ReadError::Corrupt {
        path: path.clone(),
        position,
        reason,
    };
    // The batches asked for plus the index gap before them; a first batch larger than this
    // is read again whole below.
    let mut window =
        (max_bytes + INDEX_INTERVAL_BYTES as usize).clamp(READ_WINDOW_MIN_BYTES, READ_BYTES_MAX);
    loop {
        let read = read_window(partition, base_offset, position, window).await?;
        // Walk batch headers to the one holding `offset`.
        let mut at = 0usize;
        let mut first = None;
        while at + BATCH_HEADER_BYTES <= read.len() {
            let header = check_header(&read[at..]).map_err(|e| corrupt(position + at as u64, e))?;
            if header.next_offset() > offset {
                first = Some(at);
                break;
            }
            at += header.batch_length as usize;
        }
        let Some(first) = first else {
            if at == 0 && position < segment_size {
                let reason = crate::record::BatchError::TooShort { len: read.len() };
                return Err(corrupt(position, reason));
            }
            if position + (at as u64) < segment_size {
                // The holder starts past this window: move up to it.
                position += at as u64;
                continue;
            }
            // Past the segment's data: the offset is in the next segment (or a gap).
            return Ok(ReadBatches {
                chunks: Vec::new(),
                first_offset: offset,
                next_offset: offset,
            });
        };
        let mut end = first;
        let mut next_offset = offset;
        let mut first_offset = offset;
        while end + BATCH_HEADER_BYTES <= read.len() {
            let header = BatchHeader::decode(&read[end..]).expect("length checked");
            let length = header.batch_length as usize;
            let fits = end == first || end - first + length <= max_bytes;
            if end + length > read.len() || header.next_offset() > limit || !fits {
                break;
            }
            crate::record::check_header_and_crc(&read[end..end + length])
                .map_err(|e| corrupt(position + end as u64, e))?;
            if end == first {
                first_offset = header.base_offset;
            }
            next_offset = header.next_offset();
            end += length;
        }
        if end == first {
            let header = BatchHeader::decode(&read[first..]).expect("length checked");
            if header.next_offset() > limit {
                return Ok(ReadBatches {
                    chunks: Vec::new(),
                    first_offset: offset,
                    next_offset: offset,
                });
            }
            if first == 0
                && read.len() < header.batch_length as usize
                && window >= header.batch_length as usize
            {
                // The file ends inside a batch that the segment's size says is whole.
                let reason = crate::record::BatchError::TooShort { len: read.len() };
                return Err(corrupt(position, reason));
            }
            // The first batch is cut by the window: read again from it, whole.
            position += first as u64;
            window = (header.batch_length as usize).max(window);
            continue;
        }
        let slice = ReadResult::slice(&read, first, end - first).expect("slice within the read");
        return Ok(ReadBatches {
            chunks: vec![ReadChunk::Disk(slice)],
            first_offset,
            next_offset,
        });
    }
}
