//! Full validation of a batch arriving from outside (a producer or a leader).
//!
//! Runs once per batch at the broker's door: header fields and checksum
//! (`check_header_and_crc`), then the body: decompressed if the header names a codec,
//! opened with rkyv's checked access, and compared with the header (record count, dense
//! offset deltas, timestamps inside the header's range with both ends attained, key and
//! header limits). After this the log never decodes the batch again; it only stamps the
//! broker-owned header fields in place.

use bytes::BytesMut;

use super::check::check_header_and_crc;
use super::header::BatchHeader;
use super::{body, BatchError};
use crate::constants::BATCH_HEADER_BYTES;

/// A batch that passed `validate`, with its decoded header. Owned by the shard that
/// validated it until the log takes the bytes.
#[derive(Debug)]
pub struct ValidatedBatch {
    bytes: BytesMut,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// The header as it was validated (before any stamping).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn into_bytes(self) -> BytesMut {
        self.bytes
    }
}

/// Validates one whole batch (exactly; no trailing bytes) and keeps its bytes.
pub fn validate(bytes: BytesMut) -> Result<ValidatedBatch, BatchError> {
    let header = validate_slice(&bytes)?;
    Ok(ValidatedBatch { bytes, header })
}

/// Validates one whole batch in place and returns its header.
pub fn validate_slice(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_header_and_crc(bytes)?;
    let mut scratch = Vec::new();
    body::open(&header, &bytes[BATCH_HEADER_BYTES..], &mut scratch)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::header::{self, field, Codec};
    use crate::record::BatchBuilder;

    fn small_batch(codec: Codec) -> BytesMut {
        let mut builder = BatchBuilder::new(codec);
        builder
            .push(1_000, Some(b"key-1"), b"value one", &[("trace", b"abc")])
            .unwrap();
        builder.push(1_002, None, b"", &[]).unwrap();
        builder
            .push(
                999,
                Some(b""),
                b"value three",
                &[("a-longer-header-key", b"")],
            )
            .unwrap();
        builder.finish().unwrap()
    }

    #[test]
    fn a_built_batch_validates_and_keeps_its_bytes() {
        for codec in [Codec::None, Codec::Lz4] {
            let bytes = small_batch(codec);
            let copy = bytes.clone();
            let batch = validate(bytes).unwrap();
            assert_eq!(batch.as_bytes(), &copy[..]);
            assert_eq!(batch.len(), copy.len());
            assert_eq!(batch.header().record_count, 3);
            assert_eq!(batch.header().first_timestamp_ms, 999);
            assert_eq!(batch.header().max_timestamp_ms, 1_002);
            assert_eq!(batch.header().codec(), Some(codec));
            assert_eq!(batch.into_bytes(), copy);
        }
    }

    #[test]
    fn every_single_byte_flip_outside_broker_fields_is_refused() {
        for codec in [Codec::None, Codec::Lz4] {
            let original = small_batch(codec);
            for at in 0..original.len() {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut bytes = original.clone();
                    bytes[at] ^= flip;
                    let result = validate_slice(&bytes);
                    let broker_owned = at < field::CRC
                        && !(field::BATCH_LENGTH..field::BATCH_LENGTH + 4).contains(&at);
                    if broker_owned {
                        assert!(
                            result.is_ok(),
                            "{codec:?} flip {flip:#x} at {at}: {result:?}"
                        );
                    } else {
                        assert!(result.is_err(), "{codec:?} flip {flip:#x} at {at} passed");
                    }
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for codec in [Codec::None, Codec::Lz4] {
            let original = small_batch(codec);
            for len in 0..original.len() {
                assert!(
                    validate_slice(&original[..len]).is_err(),
                    "{codec:?} len {len}"
                );
            }
            let mut longer = original.clone();
            longer.extend_from_slice(&[0]);
            assert!(validate_slice(&longer).is_err());
        }
    }

    #[test]
    fn stamped_batches_still_validate() {
        let mut bytes = small_batch(Codec::Lz4);
        header::stamp(&mut bytes, 41, 7, 123_456);
        let batch = validate(bytes).unwrap();
        assert_eq!(batch.header().base_offset, 41);
        assert_eq!(batch.header().leader_epoch, 7);
        assert_eq!(batch.header().append_time_ms, 123_456);
        assert_eq!(batch.header().last_offset(), 43);
    }

    #[test]
    fn a_body_that_lies_about_its_records_is_refused_even_with_a_good_crc() {
        let mut bytes = small_batch(Codec::None);
        // Claim one record more than the body holds, and fix up the CRC.
        bytes[field::RECORD_COUNT] += 1;
        bytes[field::LAST_OFFSET_DELTA] += 1;
        let crc = header::compute_crc(&bytes);
        bytes[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        let result = validate_slice(&bytes);
        assert!(
            matches!(result, Err(BatchError::BodyMismatch(_))),
            "{result:?}"
        );

        let mut bytes = small_batch(Codec::None);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40; // the root's record count
        let crc = header::compute_crc(&bytes);
        bytes[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        assert!(validate_slice(&bytes).is_err());
    }
}
