//! Opening a partition's directory: recovery is the ordinary start.
//!
//! - Closed segments were synced and trimmed before the next segment was created, so their
//!   data is trusted; their index files are checked (magic, base, length, CRC, order) and
//!   rebuilt by a scan when missing or stale. A closed segment whose scan does not reach its
//!   end, or whose offsets do not meet the next segment's, is corruption: opening fails
//!   with a message naming the file and byte, rather than silently dropping later data.
//! - The active (last) segment is scanned from its start: every batch's header, CRC and
//!   offset continuity are checked, and the file is cut at the first torn or invalid batch.
//!   Everything before the cut was written whole; everything a durable flush reported is
//!   before it, since a reported flush waited for its write and fdatasync.
//! - The recovered tail is fdatasynced, so what recovery found is durable from then on.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use super::cache::PartitionId;
use super::error::{LogIoError, OpenError};
use super::io::{remove_file, sync_directory, SegmentFile};
use super::partition::State;
use super::read::load_indexes;
use super::segment::{
    parse_segment_name, scan_batches, segment_path, ActiveSegment, Scan, ScanStop, Segment,
    SegmentIndexes, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX,
};
use super::shard::ShardResources;
use crate::constants::{IO_ALIGNMENT_BYTES, READ_BYTES_MAX};

/// What a scan of a whole segment file learned.
pub(super) struct FileScan {
    pub scan: Scan,
    pub indexes: SegmentIndexes,
    pub max_timestamp_ms: i64,
    pub first_append_time_ms: Option<i64>,
    /// The bytes of the last partial IO page of the valid data.
    pub tail_page: Vec<u8>,
}

/// Scans `[0, length)` of a segment file in windows, checking every batch.
pub(super) async fn scan_file(
    file: &SegmentFile,
    base_offset: u64,
    length: u64,
) -> Result<FileScan, LogIoError> {
    let mut indexes = SegmentIndexes::default();
    let mut max_timestamp_ms = i64::MIN;
    let mut first_append_time_ms = None;
    let mut position = 0u64;
    let mut next_offset = base_offset;
    let mut tail_page = Vec::new();
    let stop = loop {
        let window = (length - position).min(READ_BYTES_MAX as u64) as usize;
        if window == 0 {
            break ScanStop::End;
        }
        let read = file.read_at(position, window).await?;
        let scan = scan_batches(&read, position, next_offset, |batch| {
            indexes.on_batch(base_offset, batch.position, &batch.header);
            max_timestamp_ms = max_timestamp_ms.max(batch.header.index_timestamp_ms());
            first_append_time_ms.get_or_insert(batch.header.append_time_ms);
        });
        let valid_end = position + scan.valid_bytes as u64;
        let page_start = valid_end - valid_end % IO_ALIGNMENT_BYTES;
        if page_start >= position {
            tail_page = read[(page_start - position) as usize..scan.valid_bytes].to_vec();
        } else {
            tail_page.extend_from_slice(&read[..scan.valid_bytes]);
            let keep = (valid_end - page_start) as usize;
            tail_page.drain(..tail_page.len() - keep);
        }
        position = valid_end;
        next_offset = scan.next_offset;
        let more_to_read = position < length && read.len() == window;
        match scan.stop {
            ScanStop::Partial { .. } | ScanStop::End if more_to_read && scan.valid_bytes > 0 => {}
            stop => break stop,
        }
    };
    Ok(FileScan {
        scan: Scan {
            valid_bytes: position as usize,
            next_offset,
            stop,
        },
        indexes,
        max_timestamp_ms,
        first_append_time_ms,
        tail_page,
    })
}

fn inconsistent(dir: &Path, reason: String) -> OpenError {
    OpenError::Inconsistent {
        path: dir.to_path_buf(),
        reason,
    }
}

/// Lists segment base offsets, removing index files whose segment is gone.
fn list_segments(dir: &Path) -> Result<Vec<u64>, OpenError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogIoError::new("listing", dir, 0, e))?;
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogIoError::new("listing", dir, 0, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, LOG_SUFFIX) {
            bases.push(base);
        } else if let Some(base) = parse_segment_name(name, OFFSET_INDEX_SUFFIX)
            .or_else(|| parse_segment_name(name, TIME_INDEX_SUFFIX))
        {
            index_files.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            remove_file(&path)?;
        }
    }
    Ok(bases)
}

fn file_length(path: &Path) -> Result<u64, LogIoError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| LogIoError::new("sizing", path, 0, e))
}

/// A closed segment's bookkeeping: from its index files, or by a scan when they are unusable.
async fn recover_closed(
    shard: &ShardResources,
    dir: &Path,
    base: u64,
    next_base: u64,
) -> Result<Segment, OpenError> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let size = file_length(&path)?;
    let closed = |max_timestamp_ms| Segment {
        base_offset: base,
        size,
        next_offset: next_base,
        max_timestamp_ms,
        first_append_time_ms: None,
        active: None,
    };
    if let Some(indexes) = load_indexes(dir, base, size) {
        if let Some(max_timestamp_ms) = indexes.times.max_timestamp_ms() {
            return Ok(closed(max_timestamp_ms));
        }
    }
    tracing::info!(segment = %path.display(), "rebuilding missing or stale indexes");
    let slot = super::files::acquire_slot(&shard.files).await;
    let file = SegmentFile::open(&path, shard.faults.clone(), Some(slot)).await?;
    let found = scan_file(&file, base, size).await?;
    if found.scan.valid_bytes as u64 != size || found.scan.next_offset != next_base {
        return Err(inconsistent(
            dir,
            format!(
                "closed segment {} is corrupt at byte {} ({:?}); its batches end at offset {} \
                 but the next segment starts at {next_base}",
                path.display(),
                found.scan.valid_bytes,
                found.scan.stop,
                found.scan.next_offset
            ),
        ));
    }
    let mut indexes = found.indexes;
    indexes.times.seal(
        found.max_timestamp_ms,
        super::segment::relative_offset(base, next_base - 1),
    );
    super::io::write_small_file(
        &segment_path(dir, base, OFFSET_INDEX_SUFFIX),
        indexes.offsets.encode(base, size),
    )
    .await?;
    super::io::write_small_file(
        &segment_path(dir, base, TIME_INDEX_SUFFIX),
        indexes.times.encode(base, size),
    )
    .await?;
    Ok(closed(found.max_timestamp_ms))
}

/// The active segment: scanned whole, cut at its first invalid batch, synced.
async fn recover_active(dir: &Path, base: u64, file: &SegmentFile) -> Result<Segment, OpenError> {
    let physical = file.size().await?;
    let found = scan_file(file, base, physical).await?;
    let valid = found.scan.valid_bytes as u64;
    let point = super::io::read_small_file(&super::checkpoint::path(dir))?
        .and_then(|bytes| super::checkpoint::RecoveryPoint::decode(&bytes))
        .filter(|point| point.segment_base == base);
    if let Some(point) = point.filter(|point| valid < point.position) {
        return Err(inconsistent(
            dir,
            format!(
                "synced data in {} is damaged at byte {valid} ({:?}), below the recovery point at \
                 byte {} (offset {}): refusing to cut acknowledged data",
                segment_path(dir, base, LOG_SUFFIX).display(),
                found.scan.stop,
                point.position,
                point.next_offset
            ),
        ));
    }
    if valid < physical {
        let torn = !matches!(
            found.scan.stop,
            ScanStop::Invalid(crate::record::BatchError::TooShort { len: 0 }) | ScanStop::End
        );
        if torn {
            tracing::warn!(dir = %dir.display(), base, valid, stop = ?found.scan.stop,
                "cutting the active segment at its first invalid batch");
        }
        file.truncate(valid).await?;
    }
    // Space is reserved again by the first write (none for a partition that stays idle).
    let preallocated_to = valid;
    file.sync().await?;
    Ok(Segment {
        base_offset: base,
        size: valid,
        next_offset: found.scan.next_offset,
        max_timestamp_ms: found.max_timestamp_ms,
        first_append_time_ms: found.first_append_time_ms,
        active: Some(ActiveSegment {
            indexes: found.indexes,
            tail_page: found.tail_page,
            preallocated_to,
        }),
    })
}

/// Opens `dir` (creating it and a first segment if new) and returns the recovered state.
pub(super) async fn recover(
    shard: &Rc<ShardResources>,
    id: PartitionId,
    dir: &Path,
) -> Result<State, OpenError> {
    std::fs::create_dir_all(dir).map_err(|e| LogIoError::new("creating directory", dir, 0, e))?;
    let device = std::os::unix::fs::MetadataExt::dev(
        &std::fs::metadata(dir).map_err(|e| LogIoError::new("inspecting", dir, 0, e))?,
    );
    if shard.probed_devices.borrow_mut().insert(device) {
        super::io::settle_iopoll_probe(dir).await?;
    }
    let mut bases = list_segments(dir)?;
    if bases.is_empty() {
        let path = segment_path(dir, 0, LOG_SUFFIX);
        // Created and closed at once (the slot goes back with it); reopened below.
        let slot = super::files::acquire_slot(&shard.files).await;
        SegmentFile::create(&path, shard.faults.clone(), Some(slot)).await?;
        // The recovery point's file is made with the partition (nothing synced yet is
        // true of an empty log), so that the first real one overwrites it in place rather
        // than creating a file on the flush path. A point left from segments no longer
        // here is removed first; the new one is not synced: lost, it only means recovery
        // knows less, as when it is missing.
        let point_path = super::checkpoint::path(dir);
        super::io::remove_file(&point_path)?;
        let empty = super::checkpoint::RecoveryPoint {
            segment_base: 0,
            position: 0,
            next_offset: 0,
        };
        let _slot = super::files::acquire_slot(&shard.files).await;
        super::io::overwrite_small_file(&point_path, empty.encode(), false).await?;
        sync_directory(dir).await?;
        bases.push(0);
    }
    let mut segments = BTreeMap::new();
    for pair in bases.windows(2) {
        let segment = recover_closed(shard, dir, pair[0], pair[1]).await?;
        segments.insert(pair[0], segment);
    }
    let last = *bases.last().expect("at least one segment");
    let slot = super::files::acquire_slot(&shard.files).await;
    let file = SegmentFile::open(
        &segment_path(dir, last, LOG_SUFFIX),
        shard.faults.clone(),
        Some(slot),
    )
    .await?;
    let active = recover_active(dir, last, &file).await?;
    shard.files.borrow_mut().insert((id, last), file);
    let next_offset = active.next_offset;
    segments.insert(last, active);
    let log_start_offset = bases[0];
    Ok(State {
        segments,
        log_start_offset,
        next_offset,
        written_offset: next_offset,
        synced_offset: next_offset,
        segment_synced_offset: next_offset,
        first_journaled_at: None,
        pending: VecDeque::new(),
        pending_bytes: 0,
        first_pending_at: None,
        flusher_running: false,
        flush_now: false,
        sync_requested: false,
        flusher_waker: None,
        waiters: Vec::new(),
        wakes: 0,
        space_queue: VecDeque::new(),
        next_space_ticket: 0,
        producers: Default::default(),
        producer_snapshot_at: None,
        epochs: Default::default(),
        fence: Default::default(),
        fenced: None,
        closed: false,
        generation: 0,
        layout_version: 0,
        truncations: VecDeque::new(),
        io_stats: Default::default(),
        high_watermark_cap: None,
        recovery_point_written_at: None,
    })
}
