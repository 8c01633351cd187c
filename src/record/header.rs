//! The fixed header in front of every record batch.
//!
//! ```text
//! offset size field                     owner    covered by crc
//!  0     8    base_offset      u64      broker   no   (stamped at append)
//!  8     4    batch_length     u32      producer no   (header + body, bytes)
//! 12     4    leader_epoch     u32      broker   no   (stamped at append)
//! 16     8    append_time_ms   i64      broker   no   (stamped at append)
//! 24     4    crc32c           u32      producer no   (CRC32C of bytes [28, batch_length))
//! 28     1    magic            u8       producer yes  (body format; 1 = rkyv body v1)
//! 29     1    reserved         u8       -        yes  (must be 0)
//! 30     2    attributes       u16      producer yes  (bits 0-2 codec, bit 3 timestamp type)
//! 32     4    record_count     u32      producer yes
//! 36     4    last_offset_delta u32     producer yes  (record_count - 1)
//! 40     8    first_timestamp_ms i64    producer yes
//! 48     8    max_timestamp_ms i64      producer yes
//! 56     8    producer_id      i64      producer yes  (-1: none; reserved for idempotence)
//! 64     2    producer_epoch   i16      producer yes  (-1: none)
//! 66     2    reserved         u16      -        yes  (must be 0)
//! 68     4    base_sequence    i32      producer yes  (-1: none)
//! 72     4    body_length_uncompressed u32 producer yes (length of the body once decompressed)
//! 76     4    reserved         u32      -        yes  (must be 0)
//! 80     ...  body (batch_length - 80 bytes; rkyv archive, compressed per codec)
//! ```
//!
//! All integers are little-endian. The broker owns the first 24 bytes: it writes them in
//! place when a batch is appended, so the checksum deliberately starts after them and a
//! stamped batch still verifies. Offsets, epochs, timestamps and producer sequences are always
//! read from this header, whatever body format the magic byte names.

use crate::constants::BATCH_HEADER_BYTES;

/// Byte offsets of each header field, each built from the one before it.
pub mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = BASE_OFFSET + 8;
    pub const LEADER_EPOCH: usize = BATCH_LENGTH + 4;
    pub const APPEND_TIME_MS: usize = LEADER_EPOCH + 4;
    pub const CRC: usize = APPEND_TIME_MS + 8;
    pub const MAGIC: usize = CRC + 4;
    pub const RESERVED_A: usize = MAGIC + 1;
    pub const ATTRIBUTES: usize = RESERVED_A + 1;
    pub const RECORD_COUNT: usize = ATTRIBUTES + 2;
    pub const LAST_OFFSET_DELTA: usize = RECORD_COUNT + 4;
    pub const FIRST_TIMESTAMP_MS: usize = LAST_OFFSET_DELTA + 4;
    pub const MAX_TIMESTAMP_MS: usize = FIRST_TIMESTAMP_MS + 8;
    pub const PRODUCER_ID: usize = MAX_TIMESTAMP_MS + 8;
    pub const PRODUCER_EPOCH: usize = PRODUCER_ID + 8;
    pub const RESERVED_B: usize = PRODUCER_EPOCH + 2;
    pub const BASE_SEQUENCE: usize = RESERVED_B + 2;
    pub const BODY_LENGTH_UNCOMPRESSED: usize = BASE_SEQUENCE + 4;
    pub const RESERVED_C: usize = BODY_LENGTH_UNCOMPRESSED + 4;
    pub const END: usize = RESERVED_C + 4;
    /// First byte the CRC covers.
    pub const CRC_START: usize = MAGIC;
}

const _: () = assert!(field::END == BATCH_HEADER_BYTES);

/// The one body format this version writes: records as an rkyv archive.
pub const MAGIC_RKYV_V1: u8 = 1;

/// Compression codec of a batch body (attribute bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    None = 0,
    Lz4 = 1,
}

impl Codec {
    const MASK: u16 = 0b111;

    pub fn from_attributes(attributes: u16) -> Option<Codec> {
        match attributes & Self::MASK {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// Which clock a batch's timestamps come from (attribute bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer when the record was created.
    Create,
    /// Set by the broker at append (`append_time_ms`).
    LogAppend,
}

const TIMESTAMP_TYPE_BIT: u16 = 1 << 3;
/// Attribute bits that this version understands; any other bit set is invalid.
pub const ATTRIBUTES_KNOWN_MASK: u16 = Codec::MASK | TIMESTAMP_TYPE_BIT;

/// The decoded header of one record batch. Plain data; owned by whoever decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub leader_epoch: u32,
    pub append_time_ms: i64,
    pub crc: u32,
    pub magic: u8,
    pub attributes: u16,
    pub record_count: u32,
    pub last_offset_delta: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub body_length_uncompressed: u32,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

impl BatchHeader {
    /// Decodes the header fields from the first `BATCH_HEADER_BYTES` of `bytes`.
    /// Returns `None` when fewer bytes are given. No field is validated here.
    pub fn decode(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: u64_at(bytes, field::BASE_OFFSET),
            batch_length: u32_at(bytes, field::BATCH_LENGTH),
            leader_epoch: u32_at(bytes, field::LEADER_EPOCH),
            append_time_ms: u64_at(bytes, field::APPEND_TIME_MS) as i64,
            crc: u32_at(bytes, field::CRC),
            magic: bytes[field::MAGIC],
            attributes: u16_at(bytes, field::ATTRIBUTES),
            record_count: u32_at(bytes, field::RECORD_COUNT),
            last_offset_delta: u32_at(bytes, field::LAST_OFFSET_DELTA),
            first_timestamp_ms: u64_at(bytes, field::FIRST_TIMESTAMP_MS) as i64,
            max_timestamp_ms: u64_at(bytes, field::MAX_TIMESTAMP_MS) as i64,
            producer_id: u64_at(bytes, field::PRODUCER_ID) as i64,
            producer_epoch: u16_at(bytes, field::PRODUCER_EPOCH) as i16,
            base_sequence: u32_at(bytes, field::BASE_SEQUENCE) as i32,
            body_length_uncompressed: u32_at(bytes, field::BODY_LENGTH_UNCOMPRESSED),
        })
    }

    /// Writes every field into the first `BATCH_HEADER_BYTES` of `out` (reserved bytes zeroed).
    pub fn encode(&self, out: &mut [u8]) {
        assert!(
            out.len() >= BATCH_HEADER_BYTES,
            "header needs {BATCH_HEADER_BYTES} bytes"
        );
        let out = &mut out[..BATCH_HEADER_BYTES];
        out.fill(0);
        out[field::BASE_OFFSET..][..8].copy_from_slice(&self.base_offset.to_le_bytes());
        out[field::BATCH_LENGTH..][..4].copy_from_slice(&self.batch_length.to_le_bytes());
        out[field::LEADER_EPOCH..][..4].copy_from_slice(&self.leader_epoch.to_le_bytes());
        out[field::APPEND_TIME_MS..][..8].copy_from_slice(&self.append_time_ms.to_le_bytes());
        out[field::CRC..][..4].copy_from_slice(&self.crc.to_le_bytes());
        out[field::MAGIC] = self.magic;
        out[field::ATTRIBUTES..][..2].copy_from_slice(&self.attributes.to_le_bytes());
        out[field::RECORD_COUNT..][..4].copy_from_slice(&self.record_count.to_le_bytes());
        out[field::LAST_OFFSET_DELTA..][..4].copy_from_slice(&self.last_offset_delta.to_le_bytes());
        out[field::FIRST_TIMESTAMP_MS..][..8]
            .copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        out[field::MAX_TIMESTAMP_MS..][..8].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        out[field::PRODUCER_ID..][..8].copy_from_slice(&self.producer_id.to_le_bytes());
        out[field::PRODUCER_EPOCH..][..2].copy_from_slice(&self.producer_epoch.to_le_bytes());
        out[field::BASE_SEQUENCE..][..4].copy_from_slice(&self.base_sequence.to_le_bytes());
        out[field::BODY_LENGTH_UNCOMPRESSED..][..4]
            .copy_from_slice(&self.body_length_uncompressed.to_le_bytes());
    }

    /// The offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    pub fn codec(&self) -> Option<Codec> {
        Codec::from_attributes(self.attributes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppend
        } else {
            TimestampType::Create
        }
    }

    /// The timestamp a time index should use for this batch.
    pub fn index_timestamp_ms(&self) -> i64 {
        match self.timestamp_type() {
            TimestampType::Create => self.max_timestamp_ms,
            TimestampType::LogAppend => self.append_time_ms,
        }
    }
}

/// Computes the CRC32C a batch must carry: over bytes `[CRC_START, len)`.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[field::CRC_START..])
}

/// Writes the broker-owned fields in place. The CRC stays valid: it does not cover them.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: u32, append_time_ms: i64) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "stamping a batch shorter than its header"
    );
    batch[field::BASE_OFFSET..][..8].copy_from_slice(&base_offset.to_le_bytes());
    batch[field::LEADER_EPOCH..][..4].copy_from_slice(&leader_epoch.to_le_bytes());
    batch[field::APPEND_TIME_MS..][..8].copy_from_slice(&append_time_ms.to_le_bytes());
}

/// Reads only the batch length, for framing a stream of batches.
pub fn peek_batch_length(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= field::BATCH_LENGTH + 4).then(|| u32_at(bytes, field::BATCH_LENGTH))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_header() -> impl Strategy<Value = BatchHeader> {
        (
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<i64>(),
                any::<u32>(),
                any::<u8>(),
            ),
            (
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
                any::<i64>(),
                any::<i64>(),
            ),
            (any::<i64>(), any::<i16>(), any::<i32>(), any::<u32>()),
        )
            .prop_map(|(a, b, c)| BatchHeader {
                base_offset: a.0,
                batch_length: a.1,
                leader_epoch: a.2,
                append_time_ms: a.3,
                crc: a.4,
                magic: a.5,
                attributes: b.0,
                record_count: b.1,
                last_offset_delta: b.2,
                first_timestamp_ms: b.3,
                max_timestamp_ms: b.4,
                producer_id: c.0,
                producer_epoch: c.1,
                base_sequence: c.2,
                body_length_uncompressed: c.3,
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(header in any_header()) {
            let mut bytes = [0xAAu8; BATCH_HEADER_BYTES];
            header.encode(&mut bytes);
            prop_assert_eq!(BatchHeader::decode(&bytes), Some(header));
        }

        #[test]
        fn stamping_keeps_the_crc_valid(body in proptest::collection::vec(any::<u8>(), 0..512),
                                        offset in any::<u64>(), epoch in any::<u32>(), now in any::<i64>()) {
            let mut batch = vec![0u8; BATCH_HEADER_BYTES];
            batch.extend_from_slice(&body);
            let crc = compute_crc(&batch);
            stamp(&mut batch, offset, epoch, now);
            prop_assert_eq!(compute_crc(&batch), crc);
            let header = BatchHeader::decode(&batch).unwrap();
            prop_assert_eq!(header.base_offset, offset);
            prop_assert_eq!(header.leader_epoch, epoch);
            prop_assert_eq!(header.append_time_ms, now);
        }
    }

    #[test]
    fn decode_refuses_short_input() {
        assert_eq!(BatchHeader::decode(&[0u8; BATCH_HEADER_BYTES - 1]), None);
        assert_eq!(peek_batch_length(&[0u8; 11]), None);
    }

    #[test]
    fn codec_rejects_unknown_values() {
        assert_eq!(Codec::from_attributes(0), Some(Codec::None));
        assert_eq!(Codec::from_attributes(1), Some(Codec::Lz4));
        assert_eq!(Codec::from_attributes(2), None);
        assert_eq!(Codec::from_attributes(7 | TIMESTAMP_TYPE_BIT), None);
    }
}
