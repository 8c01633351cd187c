//! Sparse per-segment indexes: offset → file position, and timestamp → offset.
//!
//! The active segment keeps its indexes in memory and rebuilds them from the segment at
//! recovery; a segment's index files are written once, when it is closed (rolled or the log
//! is closed), and checked when loaded. Any mismatch makes the log rebuild them by scanning.
//!
//! Index file (`NNNNNNNNNNNNNNNNNNNN.index` and `.timeindex`), little-endian:
//!
//! ```text
//! offset size field
//!  0     4    magic            b"SLOX" (offset index) or b"SLTX" (time index)
//!  4     1    version          1
//!  5     3    reserved         0
//!  8     8    base_offset      u64  the segment's base offset
//! 16     8    segment_bytes    u64  length of the segment file the index describes
//! 24     4    entry_count      u32
//! 28     4    crc32c           u32  of the entries
//! 32     ...  entries, entry_count × ENTRY_BYTES
//!
//! offset index entry (8 bytes):  relative_offset u32 | position u32
//! time index entry  (12 bytes):  timestamp_ms i64    | relative_offset u32
//! ```

use crate::constants::INDEX_INTERVAL_BYTES;

const FILE_HEADER_BYTES: usize = 32;
const VERSION: u8 = 1;
const OFFSET_MAGIC: [u8; 4] = *b"SLOX";
const TIME_MAGIC: [u8; 4] = *b"SLTX";
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Why an index file was not usable (the caller rebuilds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFileError {
    #[error("index file is shorter than its header or its entries")]
    Truncated,
    #[error("index file has the wrong magic or version")]
    BadMagic,
    #[error("index file describes base offset {found}, expected {expected}")]
    WrongSegment { expected: u64, found: u64 },
    #[error("index file describes {found} segment bytes, the segment has {expected}")]
    Stale { expected: u64, found: u64 },
    #[error("index file checksum mismatch")]
    Checksum,
    #[error("index entries are not increasing or point past the segment")]
    BadEntries,
}

/// Sparse offset index of one segment. Owned by the segment (and so by its shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    /// (offset relative to the segment base, byte position), strictly increasing in both.
    entries: Vec<(u32, u32)>,
    bytes_since_entry: u32,
}

impl OffsetIndex {
    /// Notes a batch written at `position` whose first offset is `relative_offset`.
    pub fn on_batch(&mut self, relative_offset: u32, position: u32, batch_bytes: u32) {
        if position > 0 && self.bytes_since_entry >= INDEX_INTERVAL_BYTES {
            let increasing = self
                .entries
                .last()
                .is_none_or(|&(o, p)| relative_offset > o && position > p);
            assert!(
                increasing,
                "index entry ({relative_offset}, {position}) after {self:?}"
            );
            self.entries.push((relative_offset, position));
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(batch_bytes);
    }

    /// The byte position from which to scan for `relative_offset`: the last entry at or
    /// below it, or 0.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let after = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if after == 0 {
            0
        } else {
            self.entries[after - 1].1
        }
    }

    /// Drops every entry at or past `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.entries.truncate(keep);
        self.bytes_since_entry = INDEX_INTERVAL_BYTES;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self, base_offset: u64, segment_bytes: u64) -> Vec<u8> {
        let mut entries = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.entries {
            entries.extend_from_slice(&offset.to_le_bytes());
            entries.extend_from_slice(&position.to_le_bytes());
        }
        encode_file(
            OFFSET_MAGIC,
            base_offset,
            segment_bytes,
            self.entries.len(),
            entries,
        )
    }

    pub fn decode(
        bytes: &[u8],
        base_offset: u64,
        segment_bytes: u64,
    ) -> Result<OffsetIndex, IndexFileError> {
        let entries = decode_file(
            OFFSET_MAGIC,
            OFFSET_ENTRY_BYTES,
            bytes,
            base_offset,
            segment_bytes,
        )?;
        let entries: Vec<(u32, u32)> = entries
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|e| (le_u32(&e[0..4]), le_u32(&e[4..8])))
            .collect();
        let increasing = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let in_segment = entries
            .iter()
            .all(|&(_, p)| p > 0 && u64::from(p) < segment_bytes);
        if !increasing || !in_segment {
            return Err(IndexFileError::BadEntries);
        }
        Ok(OffsetIndex {
            entries,
            bytes_since_entry: INDEX_INTERVAL_BYTES,
        })
    }
}

/// Sparse time index of one segment: the running maximum timestamp and where it was reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    /// (timestamp ms, offset relative to the segment base), strictly increasing in both.
    entries: Vec<(i64, u32)>,
    bytes_since_entry: u32,
}

impl TimeIndex {
    /// Notes a batch whose index timestamp is `timestamp_ms` and first offset `relative_offset`.
    pub fn on_batch(&mut self, timestamp_ms: i64, relative_offset: u32, batch_bytes: u32) {
        let newer = self
            .entries
            .last()
            .is_none_or(|&(t, o)| timestamp_ms > t && relative_offset > o);
        let due = self.entries.is_empty() || self.bytes_since_entry >= INDEX_INTERVAL_BYTES;
        if newer && due {
            self.entries.push((timestamp_ms, relative_offset));
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(batch_bytes);
    }

    /// Records the segment's maximum timestamp at close, at its last relative offset, so a
    /// reopened segment knows its newest timestamp from the index alone.
    pub fn seal(&mut self, max_timestamp_ms: i64, last_relative_offset: u32) {
        match self.entries.last_mut() {
            None => self.entries.push((max_timestamp_ms, last_relative_offset)),
            Some(last) if max_timestamp_ms > last.0 && last_relative_offset > last.1 => {
                self.entries.push((max_timestamp_ms, last_relative_offset))
            }
            Some(last) => last.0 = last.0.max(max_timestamp_ms),
        }
    }

    /// The newest timestamp in the index (after `seal`, the segment's maximum).
    pub fn max_timestamp_ms(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    /// The relative offset from which to scan for the first batch with a timestamp at or
    /// after `timestamp_ms`: the last entry whose timestamp is below it, or 0.
    pub fn lookup(&self, timestamp_ms: i64) -> u32 {
        let below = self.entries.partition_point(|&(t, _)| t < timestamp_ms);
        if below == 0 {
            0
        } else {
            self.entries[below - 1].1
        }
    }

    /// Drops every entry at or past `relative_offset` (after a truncation).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(_, o)| o < relative_offset);
        self.entries.truncate(keep);
        self.bytes_since_entry = INDEX_INTERVAL_BYTES;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self, base_offset: u64, segment_bytes: u64) -> Vec<u8> {
        let mut entries = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.entries {
            entries.extend_from_slice(&timestamp.to_le_bytes());
            entries.extend_from_slice(&offset.to_le_bytes());
        }
        encode_file(
            TIME_MAGIC,
            base_offset,
            segment_bytes,
            self.entries.len(),
            entries,
        )
    }

    pub fn decode(
        bytes: &[u8],
        base_offset: u64,
        segment_bytes: u64,
    ) -> Result<TimeIndex, IndexFileError> {
        let entries = decode_file(
            TIME_MAGIC,
            TIME_ENTRY_BYTES,
            bytes,
            base_offset,
            segment_bytes,
        )?;
        let entries: Vec<(i64, u32)> = entries
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|e| (le_u64(&e[0..8]) as i64, le_u32(&e[8..12])))
            .collect();
        if !entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        {
            return Err(IndexFileError::BadEntries);
        }
        Ok(TimeIndex {
            entries,
            bytes_since_entry: INDEX_INTERVAL_BYTES,
        })
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

fn encode_file(
    magic: [u8; 4],
    base_offset: u64,
    segment_bytes: u64,
    entry_count: usize,
    entries: Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_BYTES + entries.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&segment_bytes.to_le_bytes());
    let count = u32::try_from(entry_count).expect("index entry count fits u32");
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&entries).to_le_bytes());
    assert_eq!(out.len(), FILE_HEADER_BYTES);
    out.extend_from_slice(&entries);
    out
}

fn decode_file(
    magic: [u8; 4],
    entry_bytes: usize,
    bytes: &[u8],
    base_offset: u64,
    segment_bytes: u64,
) -> Result<&[u8], IndexFileError> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(IndexFileError::Truncated);
    }
    if bytes[0..4] != magic || bytes[4] != VERSION || bytes[5..8] != [0, 0, 0] {
        return Err(IndexFileError::BadMagic);
    }
    let found_base = le_u64(&bytes[8..16]);
    if found_base != base_offset {
        return Err(IndexFileError::WrongSegment {
            expected: base_offset,
            found: found_base,
        });
    }
    let found_bytes = le_u64(&bytes[16..24]);
    if found_bytes != segment_bytes {
        return Err(IndexFileError::Stale {
            expected: segment_bytes,
            found: found_bytes,
        });
    }
    let count = le_u32(&bytes[24..28]) as usize;
    let entries = &bytes[FILE_HEADER_BYTES..];
    if count.checked_mul(entry_bytes) != Some(entries.len()) {
        return Err(IndexFileError::Truncated);
    }
    if crc32c::crc32c(entries) != le_u32(&bytes[28..32]) {
        return Err(IndexFileError::Checksum);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Batches as (relative offset, position, length), laid end to end.
    fn layout(lengths: &[u32]) -> Vec<(u32, u32, u32)> {
        let mut out = Vec::new();
        let (mut offset, mut position) = (0u32, 0u32);
        for &length in lengths {
            out.push((offset, position, length));
            offset += 3;
            position += length;
        }
        out
    }

    proptest! {
        #[test]
        fn offset_lookup_never_passes_the_target(lengths in proptest::collection::vec(80u32..20_000, 1..200)) {
            let batches = layout(&lengths);
            let mut index = OffsetIndex::default();
            for &(offset, position, length) in &batches {
                index.on_batch(offset, position, length);
            }
            for &(offset, position, _) in &batches {
                for target in [offset, offset + 1, offset + 2] {
                    let found = index.lookup(target);
                    prop_assert!(found <= position, "lookup({target}) = {found} past batch at {position}");
                    // The entry found is a batch start.
                    prop_assert!(batches.iter().any(|b| b.1 == found));
                    // Never more than one interval (plus a batch) behind.
                    prop_assert!(position - found <= INDEX_INTERVAL_BYTES + 20_000);
                }
            }
            let segment_bytes = batches.last().map(|b| u64::from(b.1 + b.2)).unwrap();
            let decoded = OffsetIndex::decode(&index.encode(7, segment_bytes), 7, segment_bytes).unwrap();
            prop_assert_eq!(&decoded.entries, &index.entries);
        }

        #[test]
        fn time_lookup_finds_a_start_at_or_before_the_first_newer_batch(
            steps in proptest::collection::vec((0i64..50, 80u32..9000), 1..200)) {
            let mut index = TimeIndex::default();
            let mut batches = Vec::new();
            let (mut timestamp, mut offset) = (1_000i64, 0u32);
            for &(step, length) in &steps {
                timestamp += step;
                index.on_batch(timestamp, offset, length);
                batches.push((timestamp, offset));
                offset += 2;
            }
            for probe in 990..timestamp + 2 {
                let start = index.lookup(probe);
                if let Some(&(_, first_newer)) = batches.iter().find(|b| b.0 >= probe) {
                    prop_assert!(start <= first_newer);
                }
            }
            let decoded = TimeIndex::decode(&index.encode(0, 5), 0, 5).unwrap();
            prop_assert_eq!(&decoded.entries, &index.entries);
        }

        #[test]
        fn garbage_index_files_are_refused_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = OffsetIndex::decode(&bytes, 0, 1 << 20);
            let _ = TimeIndex::decode(&bytes, 0, 1 << 20);
        }
    }

    #[test]
    fn index_file_checks_catch_each_kind_of_damage() {
        let mut index = OffsetIndex::default();
        for i in 0..100u32 {
            index.on_batch(i, i * 5000, 5000);
        }
        assert!(index.len() > 50);
        let good = index.encode(100, 500_000);
        assert!(OffsetIndex::decode(&good, 100, 500_000).is_ok());
        assert_eq!(
            OffsetIndex::decode(&good, 101, 500_000),
            Err(IndexFileError::WrongSegment {
                expected: 101,
                found: 100
            })
        );
        assert_eq!(
            OffsetIndex::decode(&good, 100, 400_000),
            Err(IndexFileError::Stale {
                expected: 400_000,
                found: 500_000
            })
        );
        assert_eq!(
            OffsetIndex::decode(&good[..good.len() - 1], 100, 500_000),
            Err(IndexFileError::Truncated)
        );
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            OffsetIndex::decode(&flipped, 100, 500_000),
            Err(IndexFileError::Checksum)
        );
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(
            OffsetIndex::decode(&magic, 100, 500_000),
            Err(IndexFileError::BadMagic)
        );
        // Entries pointing past the segment are refused even with a valid checksum.
        assert_eq!(
            OffsetIndex::decode(&good, 100, 1000).unwrap_err(),
            IndexFileError::Stale {
                expected: 1000,
                found: 500_000
            }
        );
        let short = index.encode(100, 1000);
        assert_eq!(
            OffsetIndex::decode(&short, 100, 1000),
            Err(IndexFileError::BadEntries)
        );
        // A time index file is not an offset index file.
        assert_eq!(
            OffsetIndex::decode(&TimeIndex::default().encode(100, 5), 100, 5),
            Err(IndexFileError::BadMagic)
        );
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_cut() {
        let mut index = OffsetIndex::default();
        for i in 0..10u32 {
            index.on_batch(i * 10, i * 4096, 4096);
        }
        index.truncate_to_position(4 * 4096);
        assert_eq!(index.lookup(1_000), 3 * 4096);
        let mut time = TimeIndex::default();
        for i in 0..10u32 {
            time.on_batch(i64::from(i) * 100, i * 10, 4096);
        }
        time.truncate_to_offset(40);
        assert_eq!(time.lookup(i64::MAX), 30);
    }
}
