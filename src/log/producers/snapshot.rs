//! The producer-state snapshot: the table as it stood after the log below `up_to_offset`,
//! so that a restart replays only the log above it.
//!
//! Little-endian throughout:
//!
//! ```text
//! offset size field
//!  0     4    magic            b"SLPS"
//!  4     1    version          1
//!  5     3    reserved         0
//!  8     4    crc32c           u32  of bytes [12, end)
//! 12     8    up_to_offset     u64  the table reflects every batch below this offset
//! 20     4    producer_count   u32  at most PRODUCERS_PER_PARTITION_MAX
//! 24     ...  producer_count producers, producer ids strictly ascending:
//!
//!   +0   8    producer_id      i64  >= 0
//!   +8   8    last_active_ms   i64
//!  +16   2    epoch            i16  >= 0
//!  +18   1    batch_count      u8   at most PRODUCER_BATCHES_REMEMBERED
//!  +19   1    reserved         0
//!  +20   ...  batch_count batches, oldest first, each following the one before:
//!
//!     +0   4  first_sequence   i32  >= 0
//!     +4   4  last_sequence    i32  first_sequence + (last_offset - base_offset), wrapping
//!     +8   8  base_offset      u64
//!    +16   8  last_offset      u64  >= base_offset, less than BATCH_RECORDS_MAX past it
//!    +24   8  append_time_ms   i64
//! ```
//!
//! The encoding is canonical (ascending ids, no slack), so whatever decodes encodes back
//! to the same bytes. Every count is checked against its limit and against the bytes left
//! before anything is allocated for it.

use std::collections::{HashMap, VecDeque};

use super::{sequence_add, ProducerState, ProducerStateTable, RememberedBatch};
use crate::constants::{
    BATCH_RECORDS_MAX, PRODUCERS_PER_PARTITION_MAX, PRODUCER_BATCHES_REMEMBERED,
};

/// The first bytes of every producer-state snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SLPS";
/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Byte offsets of the header fields, each built from the one before it.
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = MAGIC + 4;
    pub const RESERVED: usize = VERSION + 1;
    pub const CRC: usize = RESERVED + 3;
    pub const UP_TO_OFFSET: usize = CRC + 4;
    pub const PRODUCER_COUNT: usize = UP_TO_OFFSET + 8;
    pub const END: usize = PRODUCER_COUNT + 4;
    /// First byte the CRC covers.
    pub const CRC_START: usize = CRC + 4;
}

const HEADER_BYTES: usize = field::END;
/// A producer entry without its batches.
const PRODUCER_BYTES: usize = 8 + 8 + 2 + 1 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

const _: () = assert!(HEADER_BYTES == 24);
const _: () = assert!(PRODUCER_BYTES == 20 && BATCH_BYTES == 32);

/// Why a snapshot was refused. The caller then rebuilds the state from the whole log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("producer snapshot of {len} bytes is shorter than its {HEADER_BYTES}-byte header")]
    TooShort { len: usize },
    #[error("producer snapshot has magic {found:?}, not {SNAPSHOT_MAGIC:?}")]
    BadMagic { found: [u8; 4] },
    #[error(
        "producer snapshot version {found} is not supported (this build reads {SNAPSHOT_VERSION})"
    )]
    UnsupportedVersion { found: u8 },
    #[error("producer snapshot header has non-zero reserved bytes")]
    ReservedNotZero,
    #[error("producer snapshot crc32c is {stored:#010x}, its bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("producer snapshot lists {count} producers; more than the limit of {max} or than its {available} bytes of entries can hold")]
    TooManyProducers {
        count: u32,
        max: usize,
        available: usize,
    },
    #[error("producer snapshot ends inside its entry {index} at byte {at}: {needed} bytes needed, {available} left")]
    Truncated {
        index: usize,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("producer snapshot has {count} bytes after its last producer")]
    TrailingBytes { count: usize },
    #[error("producer snapshot lists producer {producer_id} after producer {previous_id}: ids must ascend")]
    ProducersNotAscending { producer_id: i64, previous_id: i64 },
    #[error(
        "producer snapshot has producer {producer_id} with epoch {epoch}, reserved byte {reserved}"
    )]
    InvalidProducer {
        producer_id: i64,
        epoch: i16,
        reserved: u8,
    },
    #[error("producer snapshot has producer {producer_id} with {count} batches (at most {PRODUCER_BATCHES_REMEMBERED})")]
    TooManyBatches { producer_id: i64, count: u8 },
    #[error("producer snapshot has producer {producer_id} epoch {epoch} batch of sequences {first_sequence}..={last_sequence} at offsets {base_offset}..={last_offset}: {reason}")]
    InvalidBatch {
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
        base_offset: u64,
        last_offset: u64,
        reason: &'static str,
    },
}

pub(super) fn encode(table: &ProducerStateTable, up_to_offset: u64) -> Vec<u8> {
    let mut ids: Vec<i64> = table.producers.keys().copied().collect();
    ids.sort_unstable();
    let batches: usize = table.producers.values().map(|s| s.batches.len()).sum();
    let mut out =
        Vec::with_capacity(HEADER_BYTES + ids.len() * PRODUCER_BYTES + batches * BATCH_BYTES);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&[SNAPSHOT_VERSION, 0, 0, 0]);
    out.extend_from_slice(&[0; 4]); // crc32c, filled in below
    out.extend_from_slice(&up_to_offset.to_le_bytes());
    let count =
        u32::try_from(ids.len()).expect("the table is bounded by PRODUCERS_PER_PARTITION_MAX");
    out.extend_from_slice(&count.to_le_bytes());
    for id in ids {
        let state = &table.producers[&id];
        let batch_count =
            u8::try_from(state.batches.len()).expect("at most PRODUCER_BATCHES_REMEMBERED");
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&state.last_active_ms.to_le_bytes());
        out.extend_from_slice(&state.epoch.to_le_bytes());
        out.extend_from_slice(&[batch_count, 0]);
        for batch in &state.batches {
            out.extend_from_slice(&batch.first_sequence.to_le_bytes());
            out.extend_from_slice(&batch.last_sequence.to_le_bytes());
            out.extend_from_slice(&batch.base_offset.to_le_bytes());
            out.extend_from_slice(&batch.last_offset.to_le_bytes());
            out.extend_from_slice(&batch.append_time_ms.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out[field::CRC_START..]);
    out[field::CRC..field::CRC_START].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<(u64, ProducerStateTable), SnapshotError> {
    let (up_to_offset, count) = decode_header(bytes)?;
    let mut reader = Reader {
        bytes,
        at: HEADER_BYTES,
        index: 0,
    };
    let mut producers = HashMap::with_capacity(count);
    let mut previous_id = None;
    for index in 0..count {
        reader.index = index;
        let (producer_id, state) = decode_producer(&mut reader)?;
        if let Some(previous_id) = previous_id.filter(|&previous| previous >= producer_id) {
            return Err(SnapshotError::ProducersNotAscending {
                producer_id,
                previous_id,
            });
        }
        previous_id = Some(producer_id);
        producers.insert(producer_id, state);
    }
    let trailing = bytes.len() - reader.at;
    if trailing != 0 {
        return Err(SnapshotError::TrailingBytes { count: trailing });
    }
    Ok((up_to_offset, ProducerStateTable { producers }))
}

/// Checks the header and the crc; returns `up_to_offset` and the producer count, the
/// count already bounded by the limit and by the bytes that follow.
fn decode_header(bytes: &[u8]) -> Result<(u64, usize), SnapshotError> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Err(SnapshotError::TooShort { len: bytes.len() });
    };
    let mut reader = Reader {
        bytes: header,
        at: 0,
        index: 0,
    };
    let found: [u8; 4] = reader.array()?;
    if found != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic { found });
    }
    let [version] = reader.array()?;
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    if reader.array::<3>()? != [0; 3] {
        return Err(SnapshotError::ReservedNotZero);
    }
    let stored = u32::from_le_bytes(reader.array()?);
    let computed = crc32c::crc32c(&bytes[field::CRC_START..]);
    if stored != computed {
        return Err(SnapshotError::CrcMismatch { stored, computed });
    }
    let up_to_offset = u64::from_le_bytes(reader.array()?);
    let count = u32::from_le_bytes(reader.array()?);
    let available = bytes.len() - HEADER_BYTES;
    let max = PRODUCERS_PER_PARTITION_MAX.min(available / PRODUCER_BYTES);
    match usize::try_from(count) {
        Ok(count) if count <= max => Ok((up_to_offset, count)),
        _ => Err(SnapshotError::TooManyProducers {
            count,
            max: PRODUCERS_PER_PARTITION_MAX,
            available,
        }),
    }
}

fn decode_producer(reader: &mut Reader<'_>) -> Result<(i64, ProducerState), SnapshotError> {
    let producer_id = i64::from_le_bytes(reader.array()?);
    let last_active_ms = i64::from_le_bytes(reader.array()?);
    let epoch = i16::from_le_bytes(reader.array()?);
    let [batch_count, reserved] = reader.array()?;
    if producer_id < 0 || epoch < 0 || reserved != 0 {
        return Err(SnapshotError::InvalidProducer {
            producer_id,
            epoch,
            reserved,
        });
    }
    if usize::from(batch_count) > PRODUCER_BATCHES_REMEMBERED {
        return Err(SnapshotError::TooManyBatches {
            producer_id,
            count: batch_count,
        });
    }
    let mut batches: VecDeque<RememberedBatch> =
        VecDeque::with_capacity(PRODUCER_BATCHES_REMEMBERED);
    for _ in 0..batch_count {
        let batch = RememberedBatch {
            first_sequence: i32::from_le_bytes(reader.array()?),
            last_sequence: i32::from_le_bytes(reader.array()?),
            base_offset: u64::from_le_bytes(reader.array()?),
            last_offset: u64::from_le_bytes(reader.array()?),
            append_time_ms: i64::from_le_bytes(reader.array()?),
        };
        if let Err(reason) = check_batch(&batch, batches.back()) {
            return Err(SnapshotError::InvalidBatch {
                producer_id,
                epoch,
                first_sequence: batch.first_sequence,
                last_sequence: batch.last_sequence,
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
                reason,
            });
        }
        batches.push_back(batch);
    }
    let state = ProducerState {
        epoch,
        batches,
        last_active_ms,
    };
    Ok((producer_id, state))
}

/// What `record` guarantees of every remembered batch, given the one before it.
fn check_batch(
    batch: &RememberedBatch,
    previous: Option<&RememberedBatch>,
) -> Result<(), &'static str> {
    if batch.first_sequence < 0 || batch.last_sequence < 0 {
        return Err("negative sequence");
    }
    let delta = batch
        .last_offset
        .checked_sub(batch.base_offset)
        .ok_or("last offset below base offset")?;
    let delta = u32::try_from(delta)
        .ok()
        .filter(|&delta| delta < BATCH_RECORDS_MAX)
        .ok_or("more offsets than a batch holds")?;
    if sequence_add(batch.first_sequence, delta) != batch.last_sequence {
        return Err("sequence range does not match offset range");
    }
    if let Some(previous) = previous {
        if batch.first_sequence != sequence_add(previous.last_sequence, 1) {
            return Err("does not follow the batch before it");
        }
        if batch.base_offset <= previous.last_offset {
            return Err("offsets do not follow the batch before it");
        }
    }
    Ok(())
}

/// Reads fixed-size fields front to back; running out is `Truncated`, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The producer entry being read, for the error.
    index: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let available = self.bytes.len() - self.at;
        let field = self
            .bytes
            .get(self.at..)
            .and_then(|rest| rest.get(..N))
            .and_then(|field| <[u8; N]>::try_from(field).ok())
            .ok_or(SnapshotError::Truncated {
                index: self.index,
                at: self.at,
                needed: N,
                available,
            })?;
        self.at += N;
        Ok(field)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::log::producers::tests::header;

    /// One `record` (or truncation) used to build arbitrary valid tables.
    #[derive(Debug, Clone)]
    enum Build {
        Record {
            producer_id: i64,
            epoch: i16,
            /// `None`: the producer's next sequence (or 0); else this one.
            sequence: Option<i32>,
            count: u32,
            time_ms: i64,
        },
        Truncate {
            back: u64,
        },
    }

    fn any_build() -> impl Strategy<Value = Build> {
        let record = (
            0..40i64,
            0..3i16,
            prop_oneof![3 => Just(None), 1 => (0..=i32::MAX).prop_map(Some)],
            1..BATCH_RECORDS_MAX.min(20),
            any::<i64>(),
        )
            .prop_map(
                |(producer_id, epoch, sequence, count, time_ms)| Build::Record {
                    producer_id,
                    epoch,
                    sequence,
                    count,
                    time_ms,
                },
            );
        prop_oneof![10 => record, 1 => (0..50u64).prop_map(|back| Build::Truncate { back })]
    }

    fn any_table() -> impl Strategy<Value = ProducerStateTable> {
        (any::<u64>(), proptest::collection::vec(any_build(), 0..80)).prop_map(|(start, builds)| {
            let mut table = ProducerStateTable::new();
            let mut log_end = start % (u64::MAX / 2);
            for build in builds {
                match build {
                    Build::Record {
                        producer_id,
                        epoch,
                        sequence,
                        count,
                        time_ms,
                    } => {
                        let next = table.producer(producer_id).and_then(|p| p.next_sequence());
                        let sequence = sequence.or(next).unwrap_or(0);
                        let batch = header(producer_id, epoch, sequence, count);
                        table
                            .record(&batch, log_end, time_ms, time_ms)
                            .expect("valid fields");
                        log_end += u64::from(count);
                    }
                    Build::Truncate { back } => {
                        log_end = log_end.saturating_sub(back);
                        table.truncate_to(log_end);
                    }
                }
            }
            table
        })
    }

    /// `body` (everything after the crc) behind a valid magic, version and crc.
    fn with_valid_crc(body: &[u8]) -> Vec<u8> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&[SNAPSHOT_VERSION, 0, 0, 0]);
        bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(table in any_table(), up_to_offset in any::<u64>()) {
            let bytes = table.encode_snapshot(up_to_offset);
            let decoded = decode(&bytes);
            prop_assert_eq!(&decoded, &Ok((up_to_offset, table)));
            let (_, table) = decoded.expect("decoded above");
            prop_assert_eq!(table.encode_snapshot(up_to_offset), bytes);
        }

        #[test]
        fn every_flipped_bit_is_detected(table in any_table(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = table.encode_snapshot(7);
            let at = flip.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(decode(&bytes).is_err(), "flip of bit {} at byte {}", bit, at);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            // Behind a valid header, so the bytes reach the entry decoder.
            let bytes = with_valid_crc(&bytes);
            if let Ok((up_to_offset, table)) = decode(&bytes) {
                prop_assert_eq!(table.encode_snapshot(up_to_offset), bytes);
            }
        }

        #[test]
        fn every_cut_of_a_snapshot_is_refused(table in any_table(), cut in any::<prop::sample::Index>()) {
            let bytes = table.encode_snapshot(0);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn the_layout_is_the_one_drawn() {
        let mut table = ProducerStateTable::new();
        table
            .record(&header(9, 2, 5, 3), 100, -4, 77)
            .expect("record");
        let bytes = table.encode_snapshot(0x0102);
        let mut expected = Vec::new();
        expected.extend_from_slice(&0x0102u64.to_le_bytes()); // up_to_offset
        expected.extend_from_slice(&1u32.to_le_bytes()); // producer_count
        expected.extend_from_slice(&9i64.to_le_bytes()); // producer_id
        expected.extend_from_slice(&77i64.to_le_bytes()); // last_active_ms
        expected.extend_from_slice(&2i16.to_le_bytes()); // epoch
        expected.extend_from_slice(&[1, 0]); // batch_count, reserved
        expected.extend_from_slice(&5i32.to_le_bytes()); // first_sequence
        expected.extend_from_slice(&7i32.to_le_bytes()); // last_sequence
        expected.extend_from_slice(&100u64.to_le_bytes()); // base_offset
        expected.extend_from_slice(&102u64.to_le_bytes()); // last_offset
        expected.extend_from_slice(&(-4i64).to_le_bytes()); // append_time_ms
        assert_eq!(bytes, with_valid_crc(&expected));
        assert_eq!(
            ProducerStateTable::new().encode_snapshot(0).len(),
            HEADER_BYTES
        );
    }

    #[test]
    fn header_damage_is_named() {
        let good = ProducerStateTable::new().encode_snapshot(0);
        assert_eq!(decode(&good[..3]), Err(SnapshotError::TooShort { len: 3 }));
        let mut bytes = good.clone();
        bytes[0] = b'X';
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::BadMagic { .. })
        ));
        let mut bytes = good.clone();
        bytes[field::VERSION] = 2;
        assert_eq!(
            decode(&bytes),
            Err(SnapshotError::UnsupportedVersion { found: 2 })
        );
        let mut bytes = good.clone();
        bytes[field::RESERVED] = 1;
        assert_eq!(decode(&bytes), Err(SnapshotError::ReservedNotZero));
        let mut bytes = good;
        bytes[field::UP_TO_OFFSET] ^= 1;
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn a_producer_count_beyond_the_bytes_is_refused_before_allocating() {
        let mut body = 0u64.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&[0; PRODUCER_BYTES * 2]);
        assert_eq!(
            decode(&with_valid_crc(&body)),
            Err(SnapshotError::TooManyProducers {
                count: u32::MAX,
                max: PRODUCERS_PER_PARTITION_MAX,
                available: PRODUCER_BYTES * 2
            })
        );
    }

    #[test]
    fn entries_that_record_could_not_have_made_are_refused() {
        let mut table = ProducerStateTable::new();
        for (id, sequence) in [(4, 0), (4, 1), (6, 0)] {
            let base_offset = u64::try_from(id * 10 + i64::from(sequence)).expect("small");
            table
                .record(&header(id, 0, sequence, 1), base_offset, 0, 0)
                .expect("record");
        }
        let good = table.encode_snapshot(0);
        let first_producer = HEADER_BYTES;
        let first_batch = first_producer + PRODUCER_BYTES;
        let second_batch = first_batch + BATCH_BYTES;
        let second_producer = second_batch + BATCH_BYTES;
        let damage = |at: usize, value: &[u8]| {
            let mut bytes = good.clone();
            bytes[at..at + value.len()].copy_from_slice(value);
            decode(&with_valid_crc(&bytes[field::CRC_START..]))
        };
        assert!(matches!(
            damage(second_producer, &4i64.to_le_bytes()),
            Err(SnapshotError::ProducersNotAscending {
                producer_id: 4,
                previous_id: 4
            })
        ));
        assert!(matches!(
            damage(first_producer, &(-1i64).to_le_bytes()),
            Err(SnapshotError::InvalidProducer {
                producer_id: -1,
                ..
            })
        ));
        assert!(matches!(
            damage(first_producer + 18, &[6]),
            Err(SnapshotError::TooManyBatches {
                producer_id: 4,
                count: 6
            })
        ));
        assert!(matches!(
            damage(second_batch, &[5, 0, 0, 0, 5, 0, 0, 0]),
            Err(SnapshotError::InvalidBatch {
                reason: "does not follow the batch before it",
                ..
            })
        ));
        assert!(matches!(
            damage(first_batch + 4, &3i32.to_le_bytes()),
            Err(SnapshotError::InvalidBatch {
                reason: "sequence range does not match offset range",
                ..
            })
        ));
        let mut longer = good[field::CRC_START..].to_vec();
        longer.push(0);
        assert_eq!(
            decode(&with_valid_crc(&longer)),
            Err(SnapshotError::TrailingBytes { count: 1 })
        );
    }
}
