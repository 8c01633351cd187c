//! Arbitrary bytes as a segment file and as index files: the scanner recovery and reads run
//! over segments (`scan_batches`) and the index-file decoders (`OffsetIndex::decode`,
//! `TimeIndex::decode`) must never panic nor loop, and what they accept must be consistent.
//!
//! Input: the first 8 bytes are the offset the scan expects the first batch to have
//! (little-endian; 0 when the input is shorter), the rest is the file. Each input is scanned
//! as given, then expecting the first header's own base offset, then again with every batch
//! checksum along the chain of length fields made correct, so that mutations get past the
//! CRC to the framing and continuity checks. Index decoding is likewise tried with the
//! caller's base and size, with the file's own, and with its entry checksum made correct.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::constants::{BATCH_BYTES_MAX, BATCH_HEADER_BYTES};
use shardline::log::index::{OffsetIndex, TimeIndex};
use shardline::log::segment::{scan_batches, ScanStop};
use shardline::record::header::{self, field};
use shardline::record::{check_header_and_crc, BatchHeader};

const EXPECTED_OFFSET_BYTES: usize = 8;
/// Index file header: magic 4 | version 1 | reserved 3 | base 8 | size 8 | count 4 | crc 4.
const INDEX_BASE_AT: usize = 8;
const INDEX_SIZE_AT: usize = 16;
const INDEX_CRC_AT: usize = 28;
const INDEX_HEADER_BYTES: usize = 32;

fuzz_target!(|data: &[u8]| {
    let (expected, file) = match data.split_first_chunk::<EXPECTED_OFFSET_BYTES>() {
        Some((expected, file)) => (u64::from_le_bytes(*expected), file),
        None => (0, data),
    };
    let own_base = BatchHeader::decode(file).map_or(expected, |h| h.base_offset);
    check_scan(file, expected);
    check_scan(file, own_base);
    check_scan(&with_batch_crcs_fixed(file), own_base);

    check_index_decoding(file, expected, file.len() as u64);
    if file.len() >= INDEX_HEADER_BYTES {
        let own_base = le_u64(&file[INDEX_BASE_AT..]);
        let own_size = le_u64(&file[INDEX_SIZE_AT..]);
        check_index_decoding(file, own_base, own_size);
        check_index_decoding(&with_index_crc_fixed(file), own_base, own_size);
    }
});

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// Scans `file` and checks that what the scan reports is what the bytes hold.
fn check_scan(file: &[u8], expected: u64) {
    let mut batches = Vec::new();
    let scan = scan_batches(file, 0, expected, |batch| batches.push(batch));
    assert!(scan.valid_bytes <= file.len());
    let mut position = 0u64;
    let mut next_offset = expected;
    for batch in &batches {
        assert_eq!(batch.position, position, "batches are back to back");
        assert_eq!(
            batch.header.base_offset, next_offset,
            "offsets are continuous"
        );
        let start = position as usize;
        let bytes = &file[start..start + batch.header.batch_length as usize];
        assert_eq!(check_header_and_crc(bytes).as_ref(), Ok(&batch.header));
        position += u64::from(batch.header.batch_length);
        next_offset = batch.header.next_offset();
    }
    assert_eq!(
        position, scan.valid_bytes as u64,
        "valid bytes are the batches found"
    );
    assert_eq!(scan.next_offset, next_offset);
    let rest = file.len() - scan.valid_bytes;
    match &scan.stop {
        ScanStop::End => assert_eq!(rest, 0, "End means everything was consumed"),
        ScanStop::Partial { needed } => {
            assert!(rest > 0 && *needed > 0);
            assert!(rest + needed <= BATCH_BYTES_MAX.max(BATCH_HEADER_BYTES));
        }
        ScanStop::Invalid(_) => assert!(rest > 0),
        ScanStop::Discontinuity {
            expected: wanted,
            found,
        } => {
            assert!(rest > 0);
            assert_eq!(*wanted, next_offset);
            assert_ne!(wanted, found);
        }
    }
    // A scan resumed at the last batch boundary stops where the whole scan stopped.
    if let Some(last) = batches.last() {
        let from = last.position as usize;
        let resumed = scan_batches(
            &file[from..],
            last.position,
            last.header.base_offset,
            |_| {},
        );
        assert_eq!(resumed.stop, scan.stop);
        assert_eq!(from + resumed.valid_bytes, scan.valid_bytes);
        assert_eq!(resumed.next_offset, scan.next_offset);
    }
}

/// `file` with the checksum of every batch on the chain of length fields from its start
/// recomputed (the chain ends at the first length that is too short or runs past the end).
fn with_batch_crcs_fixed(file: &[u8]) -> Vec<u8> {
    let mut fixed = file.to_vec();
    let mut at = 0usize;
    while let Some(length) = header::peek_batch_length(&fixed[at..]) {
        let length = length as usize;
        if length < BATCH_HEADER_BYTES || length > fixed.len() - at {
            break;
        }
        let crc = header::compute_crc(&fixed[at..at + length]);
        fixed[at + field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        at += length;
    }
    fixed
}

/// `file` with its index-file checksum (CRC32C of the entries) made correct.
fn with_index_crc_fixed(file: &[u8]) -> Vec<u8> {
    // `compute_crc` covers bytes [CRC_START, len): put the entries there.
    let mut shifted = vec![0u8; field::CRC_START];
    shifted.extend_from_slice(&file[INDEX_HEADER_BYTES..]);
    let crc = header::compute_crc(&shifted);
    let mut fixed = file.to_vec();
    fixed[INDEX_CRC_AT..INDEX_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    fixed
}

/// Decodes `file` as both index kinds; whatever decodes must look up without panicking and
/// encode back to the very same bytes.
fn check_index_decoding(file: &[u8], base_offset: u64, segment_bytes: u64) {
    if let Ok(index) = OffsetIndex::decode(file, base_offset, segment_bytes) {
        for probe in [0, 1, u32::MAX / 2, u32::MAX] {
            let position = index.lookup(probe);
            assert!(
                u64::from(position) < segment_bytes.max(1),
                "lookup points into the segment"
            );
        }
        assert_eq!(
            index.encode(base_offset, segment_bytes),
            file,
            "offset index round trip"
        );
    }
    if let Ok(index) = TimeIndex::decode(file, base_offset, segment_bytes) {
        for probe in [i64::MIN, -1, 0, 1_700_000_000_000, i64::MAX] {
            std::hint::black_box(index.lookup(probe));
        }
        std::hint::black_box(index.max_timestamp_ms());
        assert_eq!(
            index.encode(base_offset, segment_bytes),
            file,
            "time index round trip"
        );
    }
}
