//! Arbitrary bytes into every batch decoder: `validate_slice`, `BatchIter` and `records`.
//! None may panic; whatever passes validation must be readable to the end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::constants::BATCH_HEADER_BYTES;
use shardline::record::header::{self, field};
use shardline::record::reader::{records, records_checked, BatchIter};
use shardline::record::validate::validate_slice;

fuzz_target!(|data: &[u8]| {
    decode(data);
    // The same bytes with a matching length and CRC, so mutations reach the body decoders
    // instead of stopping at the checksum.
    if data.len() >= BATCH_HEADER_BYTES && data.len() <= u32::MAX as usize {
        let mut fixed = data.to_vec();
        fixed[field::BATCH_LENGTH..][..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let crc = header::compute_crc(&fixed);
        fixed[field::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
        decode(&fixed);
    }
});

fn decode(data: &[u8]) {
    let validated = validate_slice(data);
    let mut scratch = Vec::new();
    match records(data, &mut scratch) {
        Ok(batch) => {
            assert!(validated.is_ok(), "records accepted what validate refused");
            read_all(&batch);
        }
        Err(_) => assert!(validated.is_err(), "validate accepted what records refused"),
    }

    let mut batches = BatchIter::new(data);
    for item in batches.by_ref() {
        let Ok((header, batch)) = item else { break };
        if let Ok(records) = records_checked(&header, batch, &mut scratch) {
            assert_eq!(records.len() as u32, header.record_count);
            read_all(&records);
        }
    }
    assert!(batches.position() <= data.len());
}

fn read_all(records: &shardline::record::reader::Records<'_>) {
    let header = records.header();
    for (index, view) in records.iter().enumerate() {
        // A batch may end exactly at u64::MAX, so no "next offset" is computed here.
        assert_eq!(view.offset - index as u64, header.base_offset);
        assert!(view.timestamp_ms >= header.first_timestamp_ms);
        assert!(view.timestamp_ms <= header.max_timestamp_ms);
        std::hint::black_box((view.key, view.value));
        for (key, value) in view.headers() {
            std::hint::black_box((key.len(), value.len()));
        }
    }
}
