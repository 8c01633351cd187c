//! Arbitrary bytes into the group offsets log's record decoder. It may refuse, never panic;
//! whatever it accepts encodes back to bytes that decode to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::group::offsets::{OffsetRecord, OFFSET_RECORD_VERSION};

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes behind the right version byte, so mutations reach the archive check.
    let mut versioned = vec![OFFSET_RECORD_VERSION];
    versioned.extend_from_slice(data);
    check(&versioned);
});

fn check(bytes: &[u8]) {
    if let Ok(record) = OffsetRecord::decode(bytes) {
        assert_eq!(OffsetRecord::decode(&record.encode()), Ok(record));
    }
}
