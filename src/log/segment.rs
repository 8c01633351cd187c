//! Segments: one file of whole, back-to-back record batches, named by its base offset.
//!
//! ```text
//! <partition dir>/00000000000000000000.log        batches [0, N)
//!                 00000000000000000000.index      sparse offset index (written at close)
//!                 00000000000000000000.timeindex  sparse time index   (written at close)
//!                 0000000000000000N.log ...       the next segment, base offset N
//! ```
//!
//! A segment file is a sequence of batches with no framing of its own: each batch's header
//! carries its length. Batch `k+1` starts where batch `k` ends and its base offset is batch
//! `k`'s next offset. The active segment's file is preallocated ahead of the writer, so its
//! physical size is larger than its data; the data ends at the first header that is not a
//! valid batch (zeros, a torn write, garbage). Closed segments are truncated to their data.

use std::path::{Path, PathBuf};

use super::index::{OffsetIndex, TimeIndex};
use crate::constants::BATCH_HEADER_BYTES;
use crate::record::{check_header, check_header_and_crc, BatchError, BatchHeader};

pub const LOG_SUFFIX: &str = "log";
pub const OFFSET_INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
const NAME_DIGITS: usize = 20;

/// The path of a segment's file with the given suffix.
pub fn segment_path(dir: &Path, base_offset: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.{suffix}"))
}

/// The base offset named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str, suffix: &str) -> Option<u64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A segment's indexes. The active segment owns them in memory; a closed segment's are
/// loaded from their files on demand and held by the shard's open-file cache.
#[derive(Debug, Clone, Default)]
pub struct SegmentIndexes {
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
}

impl SegmentIndexes {
    /// Notes one batch placed at `position` in a segment with `base_offset`.
    pub fn on_batch(&mut self, base_offset: u64, position: u64, header: &BatchHeader) {
        let relative = relative_offset(base_offset, header.base_offset);
        let position = u32::try_from(position).expect("segment positions fit u32");
        self.offsets
            .on_batch(relative, position, header.batch_length);
        self.times
            .on_batch(header.index_timestamp_ms(), relative, header.batch_length);
    }
}

/// `offset - base_offset` as stored in indexes.
pub fn relative_offset(base_offset: u64, offset: u64) -> u32 {
    assert!(
        offset >= base_offset,
        "offset {offset} below segment base {base_offset}"
    );
    u32::try_from(offset - base_offset).unwrap_or(u32::MAX)
}

/// What a segment's in-memory bookkeeping holds. Owned by its partition (one shard).
#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// Bytes of whole valid batches in the file.
    pub size: u64,
    /// The offset after the segment's last batch (`base_offset` when empty).
    pub next_offset: u64,
    /// The largest index timestamp of its batches; `i64::MIN` when empty.
    pub max_timestamp_ms: i64,
    /// Append time of its first batch, for roll by age; `None` when empty.
    pub first_append_time_ms: Option<i64>,
    /// Present only on the active segment.
    pub active: Option<ActiveSegment>,
}

/// The writer's state of the active segment.
#[derive(Debug, Default)]
pub struct ActiveSegment {
    pub indexes: SegmentIndexes,
    /// The bytes of the last, partial IO page (`size` rounded down to the alignment .. `size`),
    /// rewritten in front of the next write.
    pub tail_page: Vec<u8>,
    /// The file is allocated up to here.
    pub preallocated_to: u64,
}

impl Segment {
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Accounts for a batch placed at the current end.
    pub fn on_batch(&mut self, header: &BatchHeader) {
        assert_eq!(
            header.base_offset, self.next_offset,
            "batch out of order in {self:?}"
        );
        let position = self.size;
        if let Some(active) = &mut self.active {
            active.indexes.on_batch(self.base_offset, position, header);
        }
        self.size += u64::from(header.batch_length);
        self.next_offset = header.next_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.index_timestamp_ms());
        if self.first_append_time_ms.is_none() {
            self.first_append_time_ms = Some(header.append_time_ms);
        }
    }
}

/// One batch found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedBatch {
    pub position: u64,
    pub header: BatchHeader,
}

/// Why a scan stopped before the end of its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// Every byte given was consumed by whole batches.
    End,
    /// The buffer ends inside a batch (or its header): more bytes are needed to go on.
    Partial { needed: usize },
    /// The bytes at the stop position are not a valid batch (zeros, garbage, bad checksum).
    Invalid(BatchError),
    /// A valid batch whose base offset does not follow its predecessor.
    Discontinuity { expected: u64, found: u64 },
}

/// The outcome of scanning a buffer of batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of whole valid batches from the start of the buffer.
    pub valid_bytes: usize,
    pub next_offset: u64,
    pub stop: ScanStop,
}

/// Scans `bytes`, which start at file position `position` with a batch whose base offset
/// must be `expected_offset`, calling `on_batch` for every whole valid batch. Never panics.
pub fn scan_batches(
    bytes: &[u8],
    position: u64,
    expected_offset: u64,
    mut on_batch: impl FnMut(ScannedBatch),
) -> Scan {
    let mut at = 0usize;
    let mut next_offset = expected_offset;
    let stop = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break ScanStop::End;
        }
        if rest.len() < BATCH_HEADER_BYTES {
            // A run of zeros is preallocated space, not a torn header.
            if rest.iter().all(|&b| b == 0) {
                break ScanStop::Invalid(BatchError::TooShort { len: 0 });
            }
            break ScanStop::Partial {
                needed: BATCH_HEADER_BYTES - rest.len(),
            };
        }
        let header = match check_header(rest) {
            Ok(header) => header,
            Err(error) => break ScanStop::Invalid(error),
        };
        let length = header.batch_length as usize;
        if rest.len() < length {
            break ScanStop::Partial {
                needed: length - rest.len(),
            };
        }
        let header = match check_header_and_crc(&rest[..length]) {
            Ok(header) => header,
            Err(error) => break ScanStop::Invalid(error),
        };
        if header.base_offset != next_offset {
            break ScanStop::Discontinuity {
                expected: next_offset,
                found: header.base_offset,
            };
        }
        on_batch(ScannedBatch {
            position: position + at as u64,
            header,
        });
        next_offset = header.next_offset();
        at += length;
    };
    Scan {
        valid_bytes: at,
        next_offset,
        stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        let path = segment_path(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name, LOG_SUFFIX), Some(42));
        assert_eq!(parse_segment_name(name, OFFSET_INDEX_SUFFIX), None);
        assert_eq!(parse_segment_name("42.log", LOG_SUFFIX), None);
        assert_eq!(
            parse_segment_name("0000000000000000004x.log", LOG_SUFFIX),
            None
        );
        assert_eq!(
            parse_segment_name("99999999999999999999.log", LOG_SUFFIX),
            None
        );
    }

    #[test]
    fn scanning_zeros_and_short_garbage_stops_cleanly() {
        let scan = scan_batches(&[0u8; 4096], 0, 0, |_| panic!("no batch in zeros"));
        assert_eq!(scan.valid_bytes, 0);
        assert!(matches!(scan.stop, ScanStop::Invalid(_)));
        let scan = scan_batches(&[1u8; 10], 0, 0, |_| panic!("no batch in garbage"));
        assert_eq!(
            scan.stop,
            ScanStop::Partial {
                needed: BATCH_HEADER_BYTES - 10
            }
        );
        assert_eq!(scan_batches(&[], 0, 5, |_| ()).stop, ScanStop::End);
    }
}
