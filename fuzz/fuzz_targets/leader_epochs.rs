//! Arbitrary bytes into the leader-epoch file decoder. It may refuse, never panic;
//! whatever it accepts holds rising epochs and offsets and encodes back to exactly the
//! same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::log::epochs::EpochCache;

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes behind a valid magic and with a valid checksum, so mutations reach
    // the entries instead of stopping at the checksum.
    let mut fixed = b"SLE1".to_vec();
    fixed.extend_from_slice(data);
    let crc = crc32c::crc32c(&fixed);
    fixed.extend_from_slice(&crc.to_le_bytes());
    check(&fixed);
});

fn check(bytes: &[u8]) {
    if let Ok((upto, cache)) = EpochCache::decode(bytes) {
        let entries = cache.entries();
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(entries.iter().all(|&(_, start)| start <= upto));
        assert_eq!(cache.encode(upto), bytes);
    }
}
