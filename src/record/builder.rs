//! Building a record batch on the producer side.
//!
//! `BatchBuilder` writes the body (the rkyv archive described in `body`) incrementally: each
//! `push` appends the record's out-of-line data (key, value, header strings and values, the
//! record's header array) straight into the output buffer, keeping only a small resolver per
//! record; `finish` appends the array of records and the root, then fills in the header and
//! the CRC. An uncompressed batch is therefore built in one buffer with one copy of each key
//! and value; an lz4 batch is built the same way and compressed once into the final buffer.
//! The result is byte for byte the archive `rkyv::to_bytes` writes for the same records.

use std::cell::Cell;
use std::fmt;

use bytes::BytesMut;
use rkyv::munge::munge;
use rkyv::rancor::{self, Fallible, Source, Strategy};
use rkyv::ser::allocator::Arena;
use rkyv::ser::sharing::Unshare;
use rkyv::ser::{Allocator, Positional, Serializer, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize, SerializeUnsized};

use super::body::{
    ArchivedBody, ArchivedRecord, ArchivedRecordHeader, ARCHIVED_BODY_ROOT_BYTES,
    ARCHIVED_RECORD_BYTES, ARCHIVED_RECORD_HEADER_BYTES, INLINE_STRING_BYTES_MAX,
};
use super::compression;
use super::header::{self, BatchHeader, Codec, MAGIC_RKYV_V1};
use super::BatchError;
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORDS_MAX, BATCH_UNCOMPRESSED_BYTES_MAX,
    RECORD_HEADERS_MAX, RECORD_HEADER_KEY_BYTES_MAX, RECORD_KEY_BYTES_MAX,
};

/// Header value for "no producer id / epoch / sequence" (idempotence not in use).
pub const PRODUCER_NONE: i64 = -1;

/// Builds one record batch. Owned by one producer (a client task); never shared.
pub struct BatchBuilder {
    codec: Codec,
    /// Uncompressed: header space followed by the body so far. lz4: the body so far.
    out: BytesMut,
    /// Where the body starts in `out`.
    body_start: usize,
    /// When `out` must grow, it grows once to this many bytes (or to what the record needs,
    /// if more) instead of doubling (0: doubling). See `with_growth_limit`.
    growth_limit_bytes: usize,
    pending: Vec<PendingRecord>,
    /// Scratch space rkyv needs while serializing a record's header array.
    arena: Arena,
    timestamp_min_ms: i64,
    timestamp_max_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("codec", &self.codec)
            .field("record_count", &self.pending.len())
            .field("estimated_bytes", &self.estimated_bytes())
            .field("timestamp_min_ms", &self.timestamp_min_ms)
            .field("timestamp_max_ms", &self.timestamp_max_ms)
            .field("producer_id", &self.producer_id)
            .finish()
    }
}

impl BatchBuilder {
    pub fn new(codec: Codec) -> BatchBuilder {
        BatchBuilder::with_capacity(codec, 0)
    }

    /// A builder whose buffer starts with room for a batch of about `bytes` bytes.
    pub fn with_capacity(codec: Codec, bytes: usize) -> BatchBuilder {
        let body_start = match codec {
            Codec::None => BATCH_HEADER_BYTES,
            Codec::Lz4 => 0,
        };
        let mut out = BytesMut::with_capacity(bytes.max(body_start));
        out.resize(body_start, 0);
        BatchBuilder {
            codec,
            out,
            body_start,
            growth_limit_bytes: 0,
            pending: Vec::new(),
            arena: Arena::new(),
            timestamp_min_ms: i64::MAX,
            timestamp_max_ms: i64::MIN,
            producer_id: PRODUCER_NONE,
            producer_epoch: PRODUCER_NONE as i16,
            base_sequence: PRODUCER_NONE as i32,
        }
    }

    /// When the buffer is full, grow it straight to `bytes` (what the caller will let the
    /// batch reach) rather than doubling it. A batch that outgrows its first guess is then
    /// copied once, not once per doubling, and never gets more room than it may use.
    pub fn with_growth_limit(mut self, bytes: usize) -> BatchBuilder {
        self.growth_limit_bytes = bytes;
        self
    }

    /// Sets the idempotent-producer fields of the header (`-1` each by default).
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn record_count(&self) -> u32 {
        self.pending.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The size the batch would have if finished now, uncompressed. An lz4 batch usually ends
    /// up smaller; a producer cutting batches at a size compares against this.
    pub fn estimated_bytes(&self) -> usize {
        self.uncompressed_bytes_with(self.body_bytes(), self.pending.len())
    }

    /// Appends one record. On error nothing was appended and the builder is still usable:
    /// `TooLarge` means the record does not fit in this batch (finish it and start another),
    /// `RecordTooLarge` means it fits in no batch.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), BatchError> {
        check_record_limits(key, headers)?;
        if self.pending.len() >= BATCH_RECORDS_MAX as usize {
            return Err(BatchError::BadRecordCount(BATCH_RECORDS_MAX + 1));
        }
        let record_bytes = out_of_line_bytes(key, value, headers);
        self.check_fits(record_bytes)?;
        let timestamp_min_ms = self.timestamp_min_ms.min(timestamp_ms);
        let timestamp_max_ms = self.timestamp_max_ms.max(timestamp_ms);
        if timestamp_max_ms.checked_sub(timestamp_min_ms).is_none() {
            return Err(BatchError::TimestampSpanTooLarge {
                min_ms: timestamp_min_ms,
                max_ms: timestamp_max_ms,
            });
        }

        let needed = self.out.len() + record_bytes;
        if needed > self.out.capacity() && self.growth_limit_bytes > self.out.capacity() {
            let mut grown = BytesMut::with_capacity(self.growth_limit_bytes.max(needed));
            grown.extend_from_slice(&self.out);
            self.out = grown;
        }
        let body_bytes_before = self.body_bytes();
        let resolver = self.serialize_out_of_line(key, value, headers)?;
        let written = self.body_bytes() - body_bytes_before;
        assert_eq!(
            written, record_bytes,
            "record size prediction is wrong: {self:?}"
        );

        self.timestamp_min_ms = timestamp_min_ms;
        self.timestamp_max_ms = timestamp_max_ms;
        self.pending.push(PendingRecord {
            timestamp_ms,
            value_len: value.len(),
            header_count: headers.len(),
            resolver: Cell::new(Some(resolver)),
        });
        Ok(())
    }

    /// Completes the batch: header (base offset, leader epoch and append time zero, for the
    /// broker to stamp), body, and the CRC last.
    pub fn finish(mut self) -> Result<BytesMut, BatchError> {
        if self.pending.is_empty() {
            return Err(BatchError::BadRecordCount(0));
        }
        self.serialize_records_and_root()?;
        let body_length_uncompressed = self.body_bytes();
        let mut batch = match self.codec {
            Codec::None => std::mem::take(&mut self.out),
            Codec::Lz4 => {
                let bound = compression::compressed_bytes_max(self.codec, body_length_uncompressed);
                let mut batch = BytesMut::with_capacity(BATCH_HEADER_BYTES + bound);
                batch.resize(BATCH_HEADER_BYTES, 0);
                compression::compress_into(self.codec, &self.out, &mut batch);
                batch
            }
        };
        if batch.len() > BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge {
                len: batch.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let record_count = self.record_count();
        let header = BatchHeader {
            base_offset: 0,
            batch_length: batch.len() as u32,
            leader_epoch: 0,
            append_time_ms: 0,
            crc: 0,
            magic: MAGIC_RKYV_V1,
            attributes: self.codec as u16,
            record_count,
            last_offset_delta: record_count - 1,
            first_timestamp_ms: self.timestamp_min_ms,
            max_timestamp_ms: self.timestamp_max_ms,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            body_length_uncompressed: body_length_uncompressed as u32,
        };
        header.encode(&mut batch);
        let crc = header::compute_crc(&batch);
        batch[header::field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        Ok(batch)
    }

    fn body_bytes(&self) -> usize {
        self.out.len() - self.body_start
    }

    /// The uncompressed batch size with `body_bytes` of out-of-line data and `records`
    /// records still to be laid out.
    fn uncompressed_bytes_with(&self, body_bytes: usize, records: usize) -> usize {
        BATCH_HEADER_BYTES + body_bytes + records * ARCHIVED_RECORD_BYTES + ARCHIVED_BODY_ROOT_BYTES
    }

    fn check_fits(&self, record_bytes: usize) -> Result<(), BatchError> {
        let len =
            self.uncompressed_bytes_with(self.body_bytes() + record_bytes, self.pending.len() + 1);
        let max = match self.codec {
            Codec::None => BATCH_BYTES_MAX,
            Codec::Lz4 => BATCH_UNCOMPRESSED_BYTES_MAX + BATCH_HEADER_BYTES,
        };
        if len > max {
            return Err(BatchError::TooLarge { len, max });
        }
        Ok(())
    }

    fn serialize_out_of_line(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<RecordResolver, BatchError> {
        let mut serializer = Serializer::new(
            BodyWriter {
                out: &mut self.out,
                body_start: self.body_start,
            },
            self.arena.acquire(),
            Unshare,
        );
        let serializer = Strategy::<_, rancor::Error>::wrap(&mut serializer);
        let serialize = |serializer: &mut Strategy<_, rancor::Error>| {
            let key = match key {
                Some(key) => Some((key.len(), BytesRef(key).serialize(serializer)?)),
                None => None,
            };
            let value = BytesRef(value).serialize(serializer)?;
            let headers = HeadersRef(headers).serialize(serializer)?;
            Ok::<_, rancor::Error>(RecordResolver {
                key,
                value,
                headers,
            })
        };
        serialize(serializer).map_err(|error| BatchError::RecordTooLarge(error.to_string()))
    }

    fn serialize_records_and_root(&mut self) -> Result<(), BatchError> {
        let root = BodyRoot {
            pending: &self.pending,
            timestamp_min_ms: self.timestamp_min_ms,
        };
        let mut serializer = Serializer::new(
            BodyWriter {
                out: &mut self.out,
                body_start: self.body_start,
            },
            self.arena.acquire(),
            Unshare,
        );
        rkyv::api::serialize_using::<_, rancor::Error>(&root, &mut serializer)
            .map_err(|error| BatchError::InvalidBody(error.to_string()))?;
        Ok(())
    }
}

fn check_record_limits(key: Option<&[u8]>, headers: &[(&str, &[u8])]) -> Result<(), BatchError> {
    if let Some(key) = key {
        if key.len() > RECORD_KEY_BYTES_MAX {
            return Err(BatchError::RecordTooLarge(format!(
                "key of {} bytes exceeds {RECORD_KEY_BYTES_MAX}",
                key.len()
            )));
        }
    }
    if headers.len() > RECORD_HEADERS_MAX {
        return Err(BatchError::RecordTooLarge(format!(
            "{} headers, more than {RECORD_HEADERS_MAX}",
            headers.len()
        )));
    }
    for (key, _) in headers {
        if key.len() > RECORD_HEADER_KEY_BYTES_MAX {
            return Err(BatchError::RecordTooLarge(format!(
                "header key of {} bytes exceeds {RECORD_HEADER_KEY_BYTES_MAX}",
                key.len()
            )));
        }
    }
    Ok(())
}

/// Bytes one record adds to the body before the record array: everything it points to.
fn out_of_line_bytes(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> usize {
    let headers_bytes: usize = headers
        .iter()
        .map(|(key, value)| {
            let key_out_of_line = if key.len() > INLINE_STRING_BYTES_MAX {
                key.len()
            } else {
                0
            };
            key_out_of_line + value.len() + ARCHIVED_RECORD_HEADER_BYTES
        })
        .sum();
    key.map_or(0, <[u8]>::len) + value.len() + headers_bytes
}

/// rkyv's writer over the builder's buffer; positions are relative to the body's start.
struct BodyWriter<'a> {
    out: &'a mut BytesMut,
    body_start: usize,
}

impl Positional for BodyWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.body_start
    }
}

impl<E> Writer<E> for BodyWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// What `finish` needs of a pushed record: its timestamp, its lengths and where its
/// out-of-line data went.
struct PendingRecord {
    timestamp_ms: i64,
    value_len: usize,
    header_count: usize,
    /// Taken exactly once, when `finish` lays out the record array.
    resolver: Cell<Option<RecordResolver>>,
}

struct RecordResolver {
    /// The key's length with where its bytes are; both or neither.
    key: Option<(usize, VecResolver)>,
    value: VecResolver,
    headers: VecResolver,
}

/// A borrowed byte string, archived as the `ArchivedVec<u8>` an owned `Vec<u8>` would be.
struct BytesRef<'a>(&'a [u8]);

impl Archive for BytesRef<'_> {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for BytesRef<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<u8>::serialize_from_slice(self.0, serializer)
    }
}

/// The length of a byte string already written, to resolve its `ArchivedVec<u8>` later.
struct BytesLen(usize);

impl Archive for BytesLen {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(self.0, resolver, out);
    }
}

/// A borrowed record header, archived as `ArchivedRecordHeader`.
struct HeaderRef<'a> {
    key: &'a str,
    value: &'a [u8],
}

impl Archive for HeaderRef<'_> {
    type Archived = ArchivedRecordHeader;
    type Resolver = (StringResolver, VecResolver);

    fn resolve(&self, resolver: Self::Resolver, out: Place<ArchivedRecordHeader>) {
        munge!(let ArchivedRecordHeader { key, value } = out);
        ArchivedString::resolve_from_str(self.key, resolver.0, key);
        ArchivedVec::resolve_from_len(self.value.len(), resolver.1, value);
    }
}

impl<S> Serialize<S> for HeaderRef<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
    str: SerializeUnsized<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let key = ArchivedString::serialize_from_str(self.key, serializer)?;
        let value = ArchivedVec::<u8>::serialize_from_slice(self.value, serializer)?;
        Ok((key, value))
    }
}

/// A record's borrowed headers, archived as `ArchivedVec<ArchivedRecordHeader>`.
struct HeadersRef<'a>(&'a [(&'a str, &'a [u8])]);

impl Archive for HeadersRef<'_> {
    type Archived = ArchivedVec<ArchivedRecordHeader>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S> Serialize<S> for HeadersRef<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
    str: SerializeUnsized<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let headers = self.0.iter().map(|&(key, value)| HeaderRef { key, value });
        ArchivedVec::serialize_from_iter::<HeaderRef<'_>, _, _>(headers, serializer)
    }
}

/// A pushed record at `finish` time, archived as `ArchivedRecord`. Its out-of-line data is
/// already written, so serializing it writes nothing and hands back the stored resolver.
struct RecordShape<'p> {
    pending: &'p PendingRecord,
    offset_delta: u32,
    timestamp_delta_ms: i64,
}

impl Archive for RecordShape<'_> {
    type Archived = ArchivedRecord;
    type Resolver = RecordResolver;

    fn resolve(&self, resolver: RecordResolver, out: Place<ArchivedRecord>) {
        munge!(let ArchivedRecord { offset_delta, timestamp_delta_ms, key, value, headers } = out);
        self.offset_delta.resolve((), offset_delta);
        self.timestamp_delta_ms.resolve((), timestamp_delta_ms);
        let (key_len, key_resolver) = match resolver.key {
            Some((len, key_resolver)) => (Some(BytesLen(len)), Some(key_resolver)),
            None => (None, None),
        };
        key_len.resolve(key_resolver, key);
        ArchivedVec::resolve_from_len(self.pending.value_len, resolver.value, value);
        ArchivedVec::resolve_from_len(self.pending.header_count, resolver.headers, headers);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for RecordShape<'_> {
    fn serialize(&self, _: &mut S) -> Result<RecordResolver, S::Error> {
        let resolver = self.pending.resolver.take();
        Ok(resolver.expect("each pushed record is laid out exactly once"))
    }
}

/// The body's root: the records pushed so far, archived as `ArchivedBody`.
struct BodyRoot<'p> {
    pending: &'p [PendingRecord],
    timestamp_min_ms: i64,
}

impl Archive for BodyRoot<'_> {
    type Archived = ArchivedBody;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedBody>) {
        ArchivedVec::resolve_from_len(self.pending.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for BodyRoot<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let timestamp_min_ms = self.timestamp_min_ms;
        let shapes = self
            .pending
            .iter()
            .enumerate()
            .map(move |(index, pending)| RecordShape {
                pending,
                offset_delta: index as u32,
                timestamp_delta_ms: pending.timestamp_ms - timestamp_min_ms,
            });
        ArchivedVec::serialize_from_iter::<RecordShape<'_>, _, _>(shapes, serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::body::{self, Record, RecordHeader};
    use crate::record::validate::validate_slice;
    use proptest::prelude::*;

    type Input = (i64, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn any_input() -> impl proptest::strategy::Strategy<Value = Input> {
        (
            -1_000_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(
                ("[a-z]{0,12}", proptest::collection::vec(any::<u8>(), 0..12)),
                0..4,
            ),
        )
    }

    fn build(codec: Codec, inputs: &[Input]) -> Result<BytesMut, BatchError> {
        let mut builder = BatchBuilder::new(codec);
        for (timestamp_ms, key, value, headers) in inputs {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            builder.push(*timestamp_ms, key.as_deref(), value, &headers)?;
        }
        builder.finish()
    }

    proptest! {
        #[test]
        fn the_body_is_exactly_the_rkyv_archive_of_the_records(
            inputs in proptest::collection::vec(any_input(), 1..16)
        ) {
            let batch = build(Codec::None, &inputs).unwrap();
            let min = inputs.iter().map(|input| input.0).min().unwrap();
            let records: Vec<Record> = inputs
                .iter()
                .enumerate()
                .map(|(index, (timestamp_ms, key, value, headers))| Record {
                    offset_delta: index as u32,
                    timestamp_delta_ms: timestamp_ms - min,
                    key: key.clone(),
                    value: value.clone(),
                    headers: headers
                        .iter()
                        .map(|(key, value)| RecordHeader { key: key.clone(), value: value.clone() })
                        .collect(),
                })
                .collect();
            prop_assert_eq!(&batch[BATCH_HEADER_BYTES..], &body::encode(&records)[..]);
        }

        #[test]
        fn estimated_bytes_is_the_uncompressed_size(
            inputs in proptest::collection::vec(any_input(), 1..16)
        ) {
            let mut builder = BatchBuilder::new(Codec::None);
            for (timestamp_ms, key, value, headers) in &inputs {
                let headers: Vec<(&str, &[u8])> =
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                builder.push(*timestamp_ms, key.as_deref(), value, &headers).unwrap();
            }
            let estimate = builder.estimated_bytes();
            prop_assert_eq!(builder.finish().unwrap().len(), estimate);
        }
    }

    #[test]
    fn header_fields_are_filled_in() {
        let mut builder = BatchBuilder::new(Codec::Lz4).with_producer(77, 3, 1_000);
        builder.push(50, Some(b"k"), &[7u8; 4096], &[]).unwrap();
        builder.push(20, None, &[7u8; 4096], &[]).unwrap();
        builder.push(90, None, b"v", &[]).unwrap();
        assert_eq!(builder.record_count(), 3);
        let estimate = builder.estimated_bytes();
        let batch = builder.finish().unwrap();
        assert!(
            batch.len() < estimate / 4,
            "lz4 did not compress: {} of {estimate}",
            batch.len()
        );
        let header = validate_slice(&batch).unwrap();
        assert_eq!(
            header,
            BatchHeader {
                base_offset: 0,
                batch_length: batch.len() as u32,
                leader_epoch: 0,
                append_time_ms: 0,
                crc: header::compute_crc(&batch),
                magic: MAGIC_RKYV_V1,
                attributes: Codec::Lz4 as u16,
                record_count: 3,
                last_offset_delta: 2,
                first_timestamp_ms: 20,
                max_timestamp_ms: 90,
                producer_id: 77,
                producer_epoch: 3,
                base_sequence: 1_000,
                body_length_uncompressed: (estimate - BATCH_HEADER_BYTES) as u32,
            }
        );
        assert_eq!(header.timestamp_type(), header::TimestampType::Create);
    }

    #[test]
    fn a_growth_limit_grows_the_buffer_once_and_changes_no_byte() {
        let limit = 64 * 1024;
        for codec in [Codec::None, Codec::Lz4] {
            let mut limited = BatchBuilder::with_capacity(codec, 2048).with_growth_limit(limit);
            let mut doubling = BatchBuilder::with_capacity(codec, 2048);
            let mut capacities = vec![limited.out.capacity()];
            for i in 0..50u8 {
                let value = [i; 1000];
                limited.push(i64::from(i), Some(&[i]), &value, &[]).unwrap();
                doubling
                    .push(i64::from(i), Some(&[i]), &value, &[])
                    .unwrap();
                if capacities.last() != Some(&limited.out.capacity()) {
                    capacities.push(limited.out.capacity());
                }
            }
            // One growth, straight to the limit (doubling from 2 KiB grows it several times).
            assert_eq!(capacities.len(), 2, "{codec:?}: {capacities:?}");
            assert!(capacities[1] >= limit, "{codec:?}: {capacities:?}");
            assert_eq!(limited.finish().unwrap(), doubling.finish().unwrap());
        }
    }

    #[test]
    fn producer_fields_default_to_none() {
        let mut builder = BatchBuilder::new(Codec::None);
        builder.push(0, None, b"", &[]).unwrap();
        let header = validate_slice(&builder.finish().unwrap()).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (-1, -1, -1)
        );
    }

    #[test]
    fn an_empty_batch_is_refused() {
        let result = BatchBuilder::new(Codec::None).finish();
        assert_eq!(result, Err(BatchError::BadRecordCount(0)));
    }

    #[test]
    fn record_limits_are_enforced_and_leave_the_builder_usable() {
        let mut builder = BatchBuilder::new(Codec::None);
        builder.push(1, Some(b"ok"), b"ok", &[]).unwrap();
        let before = builder.estimated_bytes();

        let long_key = vec![0u8; RECORD_KEY_BYTES_MAX + 1];
        let too_many_headers = vec![("h", &b""[..]); RECORD_HEADERS_MAX + 1];
        let long_header_key = "k".repeat(RECORD_HEADER_KEY_BYTES_MAX + 1);
        let results = [
            builder.push(2, Some(&long_key), b"", &[]),
            builder.push(2, None, b"", &too_many_headers),
            builder.push(2, None, b"", &[(long_header_key.as_str(), b"")]),
        ];
        for result in results {
            assert!(
                matches!(result, Err(BatchError::RecordTooLarge(_))),
                "{result:?}"
            );
        }
        let span = builder.push(i64::MIN, None, b"", &[]);
        assert!(
            matches!(span, Err(BatchError::TimestampSpanTooLarge { .. })),
            "{span:?}"
        );

        // Exactly at the limits is fine.
        let key = vec![1u8; RECORD_KEY_BYTES_MAX];
        let header_key = "k".repeat(RECORD_HEADER_KEY_BYTES_MAX);
        let headers = vec![(header_key.as_str(), &b"v"[..]); RECORD_HEADERS_MAX];
        assert_eq!(builder.estimated_bytes(), before);
        builder.push(3, Some(&key), b"", &headers).unwrap();
        let header = validate_slice(&builder.finish().unwrap()).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!((header.first_timestamp_ms, header.max_timestamp_ms), (1, 3));
    }

    #[test]
    fn a_record_that_would_overflow_the_batch_is_refused_without_harm() {
        let value = vec![9u8; 1024 * 1024];
        let mut builder = BatchBuilder::new(Codec::None);
        let mut pushed = 0;
        let error = loop {
            match builder.push(pushed, None, &value, &[]) {
                Ok(()) => pushed += 1,
                Err(error) => break error,
            }
        };
        assert!(
            matches!(
                error,
                BatchError::TooLarge {
                    max: BATCH_BYTES_MAX,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(pushed, 3);
        let batch = builder.finish().unwrap();
        assert!(batch.len() <= BATCH_BYTES_MAX);
        assert_eq!(validate_slice(&batch).unwrap().record_count, 3);
    }

    #[test]
    fn an_incompressible_lz4_batch_over_the_limit_is_refused_at_finish() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut noise = vec![0u8; 1024 * 1024];
        let mut builder = BatchBuilder::new(Codec::Lz4);
        for timestamp_ms in 0..5 {
            for byte in noise.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            builder.push(timestamp_ms, None, &noise, &[]).unwrap();
        }
        let result = builder.finish();
        assert!(
            matches!(result, Err(BatchError::TooLarge { .. })),
            "{result:?}"
        );
    }
}
