//! Reading batches and records on the consumer side, without copying.
//!
//! A fetch returns zero or more whole batches back to back, possibly followed by the first
//! part of one more (a fetch is cut at a byte budget, not at a batch boundary). `BatchIter`
//! walks such a buffer, checking each batch's header and CRC, and reports a torn tail
//! instead of failing on it. `records` opens one batch: an uncompressed body is read in
//! place (rkyv's checked access, since the bytes come from outside the process), a
//! compressed one is decompressed into a caller's scratch buffer, which a consumer reuses
//! from batch to batch. Keys, values and headers are borrowed from the buffer either way.

use super::body::{self, ArchivedBody, ArchivedRecord, ArchivedRecordHeader};
use super::check::{check_header, check_header_and_crc};
use super::header::{self, BatchHeader};
use super::BatchError;
use crate::constants::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES};

/// Iterates the whole batches of a fetched buffer. Owned by the consumer reading it.
///
/// Yields each batch's checked header and its bytes. Iteration ends cleanly at the end of the
/// buffer or at a partial batch whose available bytes are consistent with a batch (see
/// `remainder`); at a batch that is invalid it yields one error and then ends.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    buffer: &'a [u8],
    position: usize,
    state: IterState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IterState {
    Running,
    /// Ended at the end of the buffer or at a partial batch.
    Ended,
    /// Ended at an invalid batch, after yielding its error.
    Failed,
}

impl<'a> BatchIter<'a> {
    pub fn new(buffer: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            buffer,
            position: 0,
            state: IterState::Running,
        }
    }

    /// The bytes not yielded as batches: after a clean end, the partial batch at the tail
    /// (empty if there was none); after an error, the invalid batch onward.
    pub fn remainder(&self) -> &'a [u8] {
        &self.buffer[self.position..]
    }

    /// Whether iteration ended cleanly at a partial batch (false until it has ended).
    pub fn has_partial_tail(&self) -> bool {
        self.state == IterState::Ended && !self.remainder().is_empty()
    }

    /// Whether iteration ended at an invalid batch.
    pub fn failed(&self) -> bool {
        self.state == IterState::Failed
    }

    /// Bytes of whole batches yielded so far.
    pub fn position(&self) -> usize {
        self.position
    }

    fn next_batch(&mut self) -> Option<Result<(BatchHeader, &'a [u8]), BatchError>> {
        let rest = self.remainder();
        if rest.is_empty() {
            return None;
        }
        if rest.len() < BATCH_HEADER_BYTES {
            // Too little to check the header; only an impossible length is known to be wrong.
            return match header::peek_batch_length(rest).map(|length| length as usize) {
                Some(length) if length < BATCH_HEADER_BYTES => {
                    Some(Err(BatchError::TooShort { len: length }))
                }
                Some(length) if length > BATCH_BYTES_MAX => Some(Err(BatchError::TooLarge {
                    len: length,
                    max: BATCH_BYTES_MAX,
                })),
                _ => None,
            };
        }
        let header = match check_header(rest) {
            Ok(header) => header,
            Err(error) => return Some(Err(error)),
        };
        let length = header.batch_length as usize;
        if length > rest.len() {
            return None;
        }
        let batch = &rest[..length];
        Some(check_header_and_crc(batch).map(|header| {
            self.position += length;
            (header, batch)
        }))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state != IterState::Running {
            return None;
        }
        let item = self.next_batch();
        match item {
            Some(Ok(_)) => {}
            Some(Err(_)) => self.state = IterState::Failed,
            None => self.state = IterState::Ended,
        }
        item
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

/// The records of one batch, borrowed from the batch (or from the scratch buffer its body
/// was decompressed into). Owned by the consumer reading them.
#[derive(Debug)]
pub struct Records<'a> {
    header: BatchHeader,
    records: &'a ArchivedBody,
}

/// Opens one whole batch: checks its header, CRC and body, decompressing into `scratch` if
/// needed (`scratch` is cleared first and can be reused for the next batch).
pub fn records<'a>(batch: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<Records<'a>, BatchError> {
    let header = check_header_and_crc(batch)?;
    open(header, batch, scratch)
}

/// Like `records`, for a batch whose header and CRC were already checked, as `BatchIter`
/// does: skips the second CRC pass. `header` must be the one checked for these bytes; a
/// header that differs from the bytes' is refused. The body is still fully checked.
pub fn records_checked<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Records<'a>, BatchError> {
    let in_bytes = BatchHeader::decode(batch).ok_or(BatchError::TooShort { len: batch.len() })?;
    if in_bytes != *header || header.batch_length as usize != batch.len() {
        return Err(BatchError::BodyMismatch(format!(
            "header {header:?} is not the header of these {} bytes",
            batch.len()
        )));
    }
    open(*header, batch, scratch)
}

fn open<'a>(
    header: BatchHeader,
    batch: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Records<'a>, BatchError> {
    let records = body::open(&header, &batch[BATCH_HEADER_BYTES..], scratch)?;
    Ok(Records { header, records })
}

impl<'a> Records<'a> {
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in offset order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordView<'a>> + 'a {
        let base_offset = self.header.base_offset;
        let first_timestamp_ms = self.header.first_timestamp_ms;
        self.records.iter().enumerate().map(move |(index, record)| {
            RecordView::new(base_offset, first_timestamp_ms, index, record)
        })
    }
}

/// One record, borrowed from a fetched buffer (or a decompressed body).
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    headers: &'a [ArchivedRecordHeader],
}

impl<'a> RecordView<'a> {
    fn new(
        base_offset: u64,
        first_timestamp_ms: i64,
        index: usize,
        record: &'a ArchivedRecord,
    ) -> RecordView<'a> {
        // `body::check_against_header` proved: delta == index, first + delta does not
        // overflow, and base + last delta does not overflow (`check_header`).
        RecordView {
            offset: base_offset + index as u64,
            timestamp_ms: first_timestamp_ms + record.timestamp_delta_ms.to_native(),
            key: record.key.as_ref().map(|key| key.as_slice()),
            value: record.value.as_slice(),
            headers: record.headers.as_slice(),
        }
    }

    /// The record's headers, as `(key, value)`, in the order the producer gave them.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers
            .iter()
            .map(|header| (header.key.as_str(), header.value.as_slice()))
    }

    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::header::{field, Codec};
    use crate::record::validate::validate;
    use crate::record::BatchBuilder;
    use bytes::BytesMut;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Input {
        timestamp_ms: i64,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
    }

    fn any_input() -> impl proptest::strategy::Strategy<Value = Input> {
        (
            -1_000_000_000_000i64..1_000_000_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(
                (".{0,20}", proptest::collection::vec(any::<u8>(), 0..16)),
                0..5,
            ),
        )
            .prop_map(|(timestamp_ms, key, value, headers)| Input {
                timestamp_ms,
                key,
                value,
                headers,
            })
    }

    fn any_codec() -> impl proptest::strategy::Strategy<Value = Codec> {
        prop_oneof![Just(Codec::None), Just(Codec::Lz4)]
    }

    fn build(codec: Codec, inputs: &[Input]) -> BytesMut {
        let mut builder = BatchBuilder::new(codec);
        for input in inputs {
            let headers: Vec<(&str, &[u8])> = input
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            builder
                .push(
                    input.timestamp_ms,
                    input.key.as_deref(),
                    &input.value,
                    &headers,
                )
                .unwrap();
        }
        builder.finish().unwrap()
    }

    fn read_back(view: RecordView<'_>) -> Input {
        Input {
            timestamp_ms: view.timestamp_ms,
            key: view.key.map(<[u8]>::to_vec),
            value: view.value.to_vec(),
            headers: view
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    fn simple_batch(codec: Codec, first_timestamp_ms: i64, count: usize) -> BytesMut {
        let inputs: Vec<Input> = (0..count)
            .map(|i| Input {
                timestamp_ms: first_timestamp_ms + i as i64,
                key: Some(format!("key-{i}").into_bytes()),
                value: format!("value-{i}-").repeat(8).into_bytes(),
                headers: vec![("h".into(), vec![i as u8])],
            })
            .collect();
        build(codec, &inputs)
    }

    proptest! {
        #[test]
        fn records_round_trip_through_validate_stamp_and_read(
            inputs in proptest::collection::vec(any_input(), 1..24),
            codec in any_codec(),
            base_offset in 0u64..u64::MAX / 2,
        ) {
            let bytes = build(codec, &inputs);
            let mut bytes = validate(bytes).unwrap().into_bytes();
            header::stamp(&mut bytes, base_offset, 3, 1_700_000_000_000);
            let header = validate(bytes.clone()).unwrap().header().to_owned();
            prop_assert_eq!(header.base_offset, base_offset);

            let mut scratch = Vec::new();
            let records = records(&bytes, &mut scratch).unwrap();
            prop_assert_eq!(records.len(), inputs.len());
            prop_assert_eq!(records.header(), &header);
            for (index, (view, input)) in records.iter().zip(&inputs).enumerate() {
                prop_assert_eq!(view.offset, base_offset + index as u64);
                prop_assert_eq!(view.header_count(), input.headers.len());
                prop_assert_eq!(&read_back(view), input);
            }
        }

        #[test]
        fn batch_iter_yields_whole_batches_and_stops_cleanly_at_a_torn_tail(
            codecs in proptest::collection::vec(any_codec(), 0..5),
            tail_codec in any_codec(),
            cut_permille in 0usize..1000,
        ) {
            let mut buffer = Vec::new();
            let mut next_offset = 0;
            for (i, codec) in codecs.iter().enumerate() {
                let mut batch = simple_batch(*codec, i as i64 * 100, i + 1);
                header::stamp(&mut batch, next_offset, 1, 0);
                next_offset += i as u64 + 1;
                buffer.extend_from_slice(&batch);
            }
            let whole = buffer.len();
            let tail = simple_batch(tail_codec, 0, 3);
            let cut = tail.len() * cut_permille / 1000;
            buffer.extend_from_slice(&tail[..cut]);

            let mut batches = BatchIter::new(&buffer);
            let mut scratch = Vec::new();
            let mut expected_offset = 0;
            let mut count = 0;
            for item in batches.by_ref() {
                let (header, bytes) = item.unwrap();
                prop_assert_eq!(header.base_offset, expected_offset);
                let records = records_checked(&header, bytes, &mut scratch).unwrap();
                for view in records.iter() {
                    prop_assert_eq!(view.offset, expected_offset);
                    expected_offset += 1;
                }
                count += 1;
            }
            prop_assert_eq!(count, codecs.len());
            prop_assert_eq!(batches.position(), whole);
            prop_assert_eq!(batches.remainder(), &tail[..cut]);
            prop_assert_eq!(batches.has_partial_tail(), cut > 0);
            prop_assert!(!batches.failed());
        }

        #[test]
        fn body_corruption_behind_a_fixed_up_crc_never_panics(
            codec in any_codec(),
            at_permille in 0usize..1000,
            flip in 1u8..=255,
        ) {
            let mut bytes = simple_batch(codec, 5, 3);
            let at = BATCH_HEADER_BYTES + (bytes.len() - BATCH_HEADER_BYTES) * at_permille / 1000;
            bytes[at] ^= flip;
            let crc = header::compute_crc(&bytes);
            bytes[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
            let mut scratch = Vec::new();
            let validated = crate::record::validate::validate_slice(&bytes);
            match records(&bytes, &mut scratch) {
                Ok(records) => {
                    prop_assert!(validated.is_ok());
                    // Whatever passed the checks must be readable without panicking.
                    for view in records.iter() {
                        let _ = (view.key, view.value, view.headers().count());
                    }
                }
                Err(_) => prop_assert!(validated.is_err()),
            }
        }
    }

    #[test]
    fn an_invalid_batch_ends_iteration_with_one_error() {
        let good = simple_batch(Codec::None, 0, 2);
        let mut bad = simple_batch(Codec::Lz4, 0, 2);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut buffer = good.to_vec();
        buffer.extend_from_slice(&bad);
        buffer.extend_from_slice(&good);

        let mut batches = BatchIter::new(&buffer);
        assert!(batches.next().unwrap().is_ok());
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::CrcMismatch { .. }))
        ));
        assert!(batches.next().is_none());
        assert!(batches.failed());
        assert!(!batches.has_partial_tail());
        assert_eq!(batches.position(), good.len());
        assert_eq!(batches.remainder().len(), bad.len() + good.len());
    }

    #[test]
    fn a_tail_with_an_impossible_length_is_an_error_not_a_partial_batch() {
        let mut tail = [0u8; 20];
        tail[field::BATCH_LENGTH..][..4].copy_from_slice(&10u32.to_le_bytes());
        let mut batches = BatchIter::new(&tail);
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::TooShort { len: 10 }))
        ));
        assert!(batches.next().is_none());
        assert!(batches.failed());
        assert!(!batches.has_partial_tail());
        assert_eq!(batches.remainder(), &tail[..]);

        tail[field::BATCH_LENGTH..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut batches = BatchIter::new(&tail);
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::TooLarge { .. }))
        ));

        tail[field::BATCH_LENGTH..][..4].copy_from_slice(&100u32.to_le_bytes());
        let mut batches = BatchIter::new(&tail);
        assert!(batches.next().is_none());
        assert!(batches.has_partial_tail());
        assert!(!batches.failed());

        let mut torn_header = simple_batch(Codec::None, 0, 1);
        torn_header[field::MAGIC] = 9;
        let mut batches = BatchIter::new(&torn_header[..BATCH_HEADER_BYTES + 3]);
        assert!(matches!(
            batches.next(),
            Some(Err(BatchError::UnknownMagic(9)))
        ));

        let mut batches = BatchIter::new(&[]);
        assert!(batches.next().is_none());
        assert!(!batches.has_partial_tail());
    }

    #[test]
    fn uncompressed_values_are_borrowed_from_the_fetched_buffer() {
        let bytes = simple_batch(Codec::None, 0, 4);
        let range = bytes.as_ptr_range();
        let mut scratch = Vec::new();
        let records = records(&bytes, &mut scratch).unwrap();
        for view in records.iter() {
            assert!(range.contains(&view.value.as_ptr()));
            assert!(range.contains(&view.key.unwrap().as_ptr()));
        }
        assert_eq!(scratch.capacity(), 0);
    }

    #[test]
    fn a_header_that_is_not_the_batchs_own_is_refused() {
        let bytes = simple_batch(Codec::None, 0, 2);
        let other = simple_batch(Codec::None, 7, 2);
        let other_header = check_header_and_crc(&other).unwrap();
        let mut scratch = Vec::new();
        let result = records_checked(&other_header, &bytes, &mut scratch);
        assert!(
            matches!(result, Err(BatchError::BodyMismatch(_))),
            "{result:?}"
        );
    }
}
