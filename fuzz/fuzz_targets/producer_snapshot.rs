//! Arbitrary bytes into the producer-state snapshot decoder. It may refuse, never panic;
//! whatever it accepts encodes back to exactly the same bytes (the encoding is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::constants::PRODUCERS_PER_PARTITION_MAX;
use shardline::log::producers::{ProducerStateTable, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes behind a valid magic, version and crc, so mutations reach the
    // producer entries instead of stopping at the checksum.
    let mut fixed = SNAPSHOT_MAGIC.to_vec();
    fixed.extend_from_slice(&[SNAPSHOT_VERSION, 0, 0, 0]);
    fixed.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    fixed.extend_from_slice(data);
    check(&fixed);
});

fn check(bytes: &[u8]) {
    if let Ok((up_to_offset, table)) = ProducerStateTable::decode_snapshot(bytes) {
        assert!(table.len() <= PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(table.encode_snapshot(up_to_offset), bytes);
    }
}
