//! The record batch: the unit of everything.
//!
//! A producer builds a batch (`builder`); the same bytes travel the wire, are validated once
//! by the broker (`validate`), are stamped in place with the broker-owned header fields
//! (`header::stamp`), land on disk, are replicated and are read by consumers (`reader`)
//! without being decoded and re-encoded in between.
//!
//! A batch is a fixed 80-byte header (diagram in `header`) followed by a body: an rkyv
//! archive of the records, optionally compressed as a whole (lz4). rkyv is built with its
//! `unaligned` and `little_endian` features, so an archive can be accessed wherever it sits
//! in a larger buffer, and the bytes mean the same on every machine.
//!
//! This module knows no files and no network.

pub mod body;
pub mod builder;
pub mod check;
mod compression;
pub mod header;
pub mod reader;
pub mod validate;

pub use builder::BatchBuilder;
pub use check::{check_header, check_header_and_crc};
pub use header::{BatchHeader, Codec, TimestampType};
pub use reader::{BatchIter, RecordView};
pub use validate::{validate, ValidatedBatch};

/// Why a batch was refused. Every variant is an operating error (bad input), never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch of {len} bytes is shorter than its 80-byte header")]
    TooShort { len: usize },
    #[error("batch length field says {declared} bytes but {available} bytes are present")]
    LengthMismatch { declared: u32, available: usize },
    #[error("batch of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unknown batch magic byte {0}")]
    UnknownMagic(u8),
    #[error("unknown batch attribute bits {0:#06x}")]
    UnknownAttributes(u16),
    #[error("reserved batch header bytes are not zero")]
    ReservedNotZero,
    #[error("batch record count {0} is outside 1..=BATCH_RECORDS_MAX")]
    BadRecordCount(u32),
    #[error("batch has {record_count} records but last offset delta {last_offset_delta}")]
    BadLastOffsetDelta {
        record_count: u32,
        last_offset_delta: u32,
    },
    #[error("batch first timestamp {first_ms} is after its max timestamp {max_ms}")]
    BadTimestamps { first_ms: i64, max_ms: i64 },
    #[error("batch declares {declared} uncompressed body bytes for a {body_length}-byte body")]
    BadUncompressedLength { declared: u32, body_length: usize },
    #[error("record timestamps from {min_ms} to {max_ms} ms span more than i64 milliseconds")]
    TimestampSpanTooLarge { min_ms: i64, max_ms: i64 },
    #[error("batch base offset {0} overflows with its last offset delta")]
    OffsetOverflow(u64),
    #[error("batch checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("batch body could not be decompressed: {0}")]
    Decompression(String),
    #[error("batch body is not a valid record archive: {0}")]
    InvalidBody(String),
    #[error("batch body disagrees with its header: {0}")]
    BodyMismatch(String),
    #[error("record is too large: {0}")]
    RecordTooLarge(String),
}
