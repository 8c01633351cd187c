//! The record body: the records of one batch as an rkyv archive.
//!
//! A body (after decompression, when the header names a codec) is exactly the rkyv archive
//! of a `Vec<Record>`, as `rkyv::to_bytes` would write it. rkyv is built `unaligned` and
//! `little_endian`: every archived type has alignment 1, so the archive can be read in
//! place wherever the batch sits in a larger buffer, and the bytes mean the same on every
//! machine. Integers are little-endian; relative pointers are signed 32-bit offsets from the
//! pointer's own position; lengths are unsigned 32-bit.
//!
//! rkyv writes dependencies before the values that point at them, so the root comes last:
//!
//! ```text
//! body offset                 content
//! 0                           out-of-line data of record 0: key bytes, value bytes,
//!                               header key strings longer than 8 bytes (shorter ones are
//!                               stored inline), header value bytes, then record 0's
//!                               array of ArchivedRecordHeader (16 bytes each:
//!                               key string 8, value vec 8)
//! ...                         the same for records 1 .. n-1, in order
//! len - 8 - 37 n              ArchivedRecord x n, contiguous (37 bytes each):
//!                                +0  offset_delta        u32   (record i has delta i)
//!                                +4  timestamp_delta_ms  i64   (>= 0, from first_timestamp_ms)
//!                                +12 key                 u8 tag (0 none, 1 some) + vec (8)
//!                                +21 value               vec (8)
//!                                +29 headers             vec (8)
//! len - 8                     root: ArchivedVec<ArchivedRecord>
//!                                +0  relative pointer to the records   i32
//!                                +4  record count                      u32
//! ```
//!
//! A "vec" is `(relative pointer i32, length u32)`; a string is rkyv's `ArchivedString`
//! (8 bytes, inline up to 8 bytes of UTF-8). `BatchBuilder` writes this layout incrementally
//! and a test checks it is byte for byte what `rkyv::to_bytes` writes for the same records.
//!
//! A record's timestamp is `header.first_timestamp_ms + timestamp_delta_ms`, and
//! `first_timestamp_ms` is the smallest timestamp in the batch (not necessarily the first
//! record's), so deltas are never negative. Offsets, epochs and producer sequences are never
//! read from the body: they live in the header.

use rkyv::rancor;
use rkyv::vec::ArchivedVec;

use super::compression;
use super::header::{BatchHeader, Codec};
use super::BatchError;
use crate::constants::{RECORD_HEADERS_MAX, RECORD_HEADER_KEY_BYTES_MAX, RECORD_KEY_BYTES_MAX};

/// One record as it is archived in a body. Owned form, used to describe and test the format;
/// producers use `BatchBuilder`, consumers read `ArchivedRecord`s in place via `reader`.
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Record {
    /// Offset of the record relative to the batch's base offset.
    pub offset_delta: u32,
    /// Timestamp relative to the batch's `first_timestamp_ms`.
    pub timestamp_delta_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<RecordHeader>,
}

/// One application header of a record (a key and an opaque value).
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RecordHeader {
    pub key: String,
    pub value: Vec<u8>,
}

/// The archived root of a body.
pub type ArchivedBody = ArchivedVec<ArchivedRecord>;

/// Size of one archived record in the body.
pub const ARCHIVED_RECORD_BYTES: usize = std::mem::size_of::<ArchivedRecord>();
/// Size of one archived record header in the body.
pub const ARCHIVED_RECORD_HEADER_BYTES: usize = std::mem::size_of::<ArchivedRecordHeader>();
/// Size of the body's root (the archived vector of records).
pub const ARCHIVED_BODY_ROOT_BYTES: usize = std::mem::size_of::<ArchivedBody>();
/// rkyv stores header keys up to this many bytes inside the archived string itself.
pub const INLINE_STRING_BYTES_MAX: usize = 8;

// The `unaligned` feature is what lets a body be read in place anywhere in a buffer.
const _: () = assert!(std::mem::align_of::<ArchivedRecord>() == 1);
const _: () = assert!(std::mem::align_of::<ArchivedRecordHeader>() == 1);
const _: () = assert!(std::mem::align_of::<ArchivedBody>() == 1);
const _: () = assert!(ARCHIVED_RECORD_BYTES == 37);
const _: () = assert!(ARCHIVED_RECORD_HEADER_BYTES == 16);
const _: () = assert!(ARCHIVED_BODY_ROOT_BYTES == 8);

/// Encodes records the plain way (`rkyv::to_bytes`). The reference encoder: tests compare
/// `BatchBuilder`'s incremental output with it.
#[allow(
    clippy::ptr_arg,
    reason = "the archive root is a `Vec<Record>`, not a slice"
)]
pub fn encode(records: &Vec<Record>) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(records)
        .expect("serializing owned records into memory cannot fail")
        .to_vec()
}

/// Checks and opens the body of a batch whose header (and checksum) were already checked:
/// decompresses it into `scratch` if the header names a codec, runs rkyv's checked access,
/// and checks that the records agree with the header (`check_against_header`).
pub fn open<'a>(
    header: &BatchHeader,
    body: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a ArchivedBody, BatchError> {
    let codec = header
        .codec()
        .ok_or(BatchError::UnknownAttributes(header.attributes))?;
    let plain: &'a [u8] = match codec {
        Codec::None => body,
        Codec::Lz4 => {
            let length = header.body_length_uncompressed as usize;
            compression::decompress_into(codec, body, length, scratch)?;
            scratch
        }
    };
    let records = access(plain)?;
    check_against_header(records, header)?;
    Ok(records)
}

/// rkyv's checked access of an uncompressed body. Safe on any bytes.
pub fn access(body: &[u8]) -> Result<&ArchivedBody, BatchError> {
    rkyv::access::<ArchivedBody, rancor::Error>(body)
        .map_err(|error| BatchError::InvalidBody(error.to_string()))
}

/// Checks that archived records agree with their header: the count, offset deltas exactly
/// `0..n`, every timestamp inside `[first_timestamp_ms, max_timestamp_ms]` with both ends
/// attained, and the key and header limits.
pub fn check_against_header(
    records: &ArchivedBody,
    header: &BatchHeader,
) -> Result<(), BatchError> {
    if records.len() != header.record_count as usize {
        return Err(BatchError::BodyMismatch(format!(
            "header says {} records, body holds {}",
            header.record_count,
            records.len()
        )));
    }
    let mut timestamp_min_ms = i64::MAX;
    let mut timestamp_max_ms = i64::MIN;
    for (index, record) in records.iter().enumerate() {
        let offset_delta = record.offset_delta.to_native();
        if offset_delta as usize != index {
            return Err(BatchError::BodyMismatch(format!(
                "record {index} has offset delta {offset_delta}"
            )));
        }
        let delta_ms = record.timestamp_delta_ms.to_native();
        let timestamp_ms = header
            .first_timestamp_ms
            .checked_add(delta_ms)
            .filter(|&t| delta_ms >= 0 && t <= header.max_timestamp_ms)
            .ok_or_else(|| {
                BatchError::BodyMismatch(format!(
                    "record {index} has timestamp delta {delta_ms} outside [{}, {}]",
                    header.first_timestamp_ms, header.max_timestamp_ms
                ))
            })?;
        timestamp_min_ms = timestamp_min_ms.min(timestamp_ms);
        timestamp_max_ms = timestamp_max_ms.max(timestamp_ms);
        check_record_limits(index, record)?;
    }
    if timestamp_min_ms != header.first_timestamp_ms || timestamp_max_ms != header.max_timestamp_ms
    {
        return Err(BatchError::BodyMismatch(format!(
            "records span timestamps [{timestamp_min_ms}, {timestamp_max_ms}], header says [{}, {}]",
            header.first_timestamp_ms, header.max_timestamp_ms
        )));
    }
    Ok(())
}

fn check_record_limits(index: usize, record: &ArchivedRecord) -> Result<(), BatchError> {
    if let Some(key) = record.key.as_ref() {
        if key.len() > RECORD_KEY_BYTES_MAX {
            return Err(BatchError::RecordTooLarge(format!(
                "record {index} key of {} bytes exceeds {RECORD_KEY_BYTES_MAX}",
                key.len()
            )));
        }
    }
    if record.headers.len() > RECORD_HEADERS_MAX {
        return Err(BatchError::RecordTooLarge(format!(
            "record {index} has {} headers, more than {RECORD_HEADERS_MAX}",
            record.headers.len()
        )));
    }
    for header in record.headers.iter() {
        if header.key.len() > RECORD_HEADER_KEY_BYTES_MAX {
            return Err(BatchError::RecordTooLarge(format!(
                "record {index} header key of {} bytes exceeds {RECORD_HEADER_KEY_BYTES_MAX}",
                header.key.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                offset_delta: 0,
                timestamp_delta_ms: 5,
                key: Some(b"k".to_vec()),
                value: b"first".to_vec(),
                headers: vec![RecordHeader {
                    key: "a-header-key-longer-than-inline".into(),
                    value: b"v".to_vec(),
                }],
            },
            Record {
                offset_delta: 1,
                timestamp_delta_ms: 0,
                key: None,
                value: Vec::new(),
                headers: Vec::new(),
            },
        ]
    }

    fn header_for(records: &[Record], first_ms: i64) -> BatchHeader {
        let deltas = records.iter().map(|r| r.timestamp_delta_ms);
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            leader_epoch: 0,
            append_time_ms: 0,
            crc: 0,
            magic: 1,
            attributes: 0,
            record_count: records.len() as u32,
            last_offset_delta: records.len() as u32 - 1,
            first_timestamp_ms: first_ms,
            max_timestamp_ms: first_ms + deltas.max().unwrap(),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            body_length_uncompressed: 0,
        }
    }

    #[test]
    fn encoded_body_is_accessible_in_place_at_any_alignment() {
        let bytes = encode(&sample());
        for shift in 0..8 {
            let mut shifted = vec![0xEEu8; shift];
            shifted.extend_from_slice(&bytes);
            let records = access(&shifted[shift..]).unwrap();
            assert_eq!(records.len(), 2);
            assert_eq!(records[0].value.as_slice(), b"first");
            assert_eq!(
                records[0].headers[0].key.as_str(),
                "a-header-key-longer-than-inline"
            );
            assert!(records[1].key.is_none());
        }
    }

    #[test]
    fn body_matching_its_header_passes() {
        let records = sample();
        let bytes = encode(&records);
        let archived = access(&bytes).unwrap();
        check_against_header(archived, &header_for(&records, 1_000)).unwrap();
    }

    #[test]
    fn body_disagreeing_with_its_header_is_refused() {
        let records = sample();
        let bytes = encode(&records);
        let archived = access(&bytes).unwrap();
        let good = header_for(&records, 1_000);

        let more_records = BatchHeader {
            record_count: 3,
            last_offset_delta: 2,
            ..good
        };
        let max_not_attained = BatchHeader {
            max_timestamp_ms: good.max_timestamp_ms + 1,
            ..good
        };
        let max_too_small = BatchHeader {
            max_timestamp_ms: good.max_timestamp_ms - 1,
            ..good
        };
        let overflowing = BatchHeader {
            first_timestamp_ms: i64::MAX - 1,
            max_timestamp_ms: i64::MAX,
            ..good
        };
        for header in [more_records, max_not_attained, max_too_small, overflowing] {
            assert!(
                matches!(
                    check_against_header(archived, &header),
                    Err(BatchError::BodyMismatch(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn offset_deltas_must_be_dense() {
        let mut records = sample();
        records[1].offset_delta = 2;
        let bytes = encode(&records);
        let header = header_for(&records, 0);
        let result = check_against_header(access(&bytes).unwrap(), &header);
        assert!(
            matches!(result, Err(BatchError::BodyMismatch(_))),
            "{result:?}"
        );
    }

    #[test]
    fn oversized_keys_and_headers_in_a_body_are_refused() {
        let mut long_key = sample();
        long_key[0].key = Some(vec![0; RECORD_KEY_BYTES_MAX + 1]);
        let mut many_headers = sample();
        many_headers[0].headers = vec![
            RecordHeader {
                key: "h".into(),
                value: vec![]
            };
            RECORD_HEADERS_MAX + 1
        ];
        let mut long_header_key = sample();
        long_header_key[0].headers[0].key = "x".repeat(RECORD_HEADER_KEY_BYTES_MAX + 1);
        for records in [long_key, many_headers, long_header_key] {
            let bytes = encode(&records);
            let result = check_against_header(access(&bytes).unwrap(), &header_for(&records, 0));
            assert!(
                matches!(result, Err(BatchError::RecordTooLarge(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn garbage_bodies_are_refused_not_trusted() {
        for body in [
            &[][..],
            &[0u8; 3][..],
            &[0xFFu8; 8][..],
            &[1, 0, 0, 0, 1, 0, 0, 0][..],
        ] {
            assert!(access(body).is_err(), "{body:?}");
        }
    }
}
