//! Structural checks of a batch that need only its header and its checksum.
//!
//! The log runs these on every batch it scans at recovery and on every batch it reads back
//! from disk; the full validation of a batch arriving from outside (`validate`) runs them
//! first and then checks the body.

use super::header::{self, BatchHeader, Codec, ATTRIBUTES_KNOWN_MASK, MAGIC_RKYV_V1};
use super::BatchError;
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, BATCH_UNCOMPRESSED_BYTES_MAX,
};

/// Checks that `bytes` is exactly one well-formed batch whose checksum matches.
pub fn check_header_and_crc(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_header(bytes)?;
    if header.batch_length as usize != bytes.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.batch_length,
            available: bytes.len(),
        });
    }
    let actual = header::compute_crc(bytes);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// Checks the header fields alone (the body may not be present yet, as when scanning).
pub fn check_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(bytes).ok_or(BatchError::TooShort { len: bytes.len() })?;
    let length = header.batch_length as usize;
    if length < BATCH_HEADER_BYTES {
        return Err(BatchError::TooShort { len: length });
    }
    if length > BATCH_BYTES_MAX {
        return Err(BatchError::TooLarge {
            len: length,
            max: BATCH_BYTES_MAX,
        });
    }
    if header.magic != MAGIC_RKYV_V1 {
        return Err(BatchError::UnknownMagic(header.magic));
    }
    if header.attributes & !ATTRIBUTES_KNOWN_MASK != 0 || header.codec().is_none() {
        return Err(BatchError::UnknownAttributes(header.attributes));
    }
    let reserved_zero = bytes[header::field::RESERVED_A] == 0
        && bytes[header::field::RESERVED_B..header::field::RESERVED_B + 2] == [0, 0]
        && bytes[header::field::RESERVED_C..header::field::RESERVED_C + 4] == [0, 0, 0, 0];
    if !reserved_zero {
        return Err(BatchError::ReservedNotZero);
    }
    if header.record_count == 0 || header.record_count > BATCH_RECORDS_MAX {
        return Err(BatchError::BadRecordCount(header.record_count));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::BadLastOffsetDelta {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.first_timestamp_ms > header.max_timestamp_ms {
        return Err(BatchError::BadTimestamps {
            first_ms: header.first_timestamp_ms,
            max_ms: header.max_timestamp_ms,
        });
    }
    let body_length = length - BATCH_HEADER_BYTES;
    let uncompressed = header.body_length_uncompressed as usize;
    let body_length_ok = match header.codec() {
        Some(Codec::None) => uncompressed == body_length,
        _ => uncompressed <= BATCH_UNCOMPRESSED_BYTES_MAX,
    };
    if !body_length_ok {
        return Err(BatchError::BadUncompressedLength {
            declared: header.body_length_uncompressed,
            body_length,
        });
    }
    // `next_offset()` (last offset + 1) must be representable.
    if header
        .base_offset
        .checked_add(u64::from(header.last_offset_delta) + 1)
        .is_none()
    {
        return Err(BatchError::OffsetOverflow(header.base_offset));
    }
    Ok(header)
}
