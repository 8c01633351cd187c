//! Which partition a message goes to: a stable hash of its key, so a key always maps to the
//! same partition (and per-key order holds); keyless messages stick to one partition per
//! batch and move on to the next, so they spread evenly without tiny batches.

/// The partition of `key` among `partitions`: CRC32C of the key bytes, modulo the count.
/// Stable across processes, versions and platforms.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    crc32c::crc32c(key) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_stably_and_spread() {
        assert_eq!(
            partition_for_key(b"user-42", 8),
            partition_for_key(b"user-42", 8)
        );
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
