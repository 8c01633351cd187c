//! Which shard owns a partition: a deterministic function of the topic name, the partition
//! and the shard count, so every shard (and, through metadata, every client) agrees without
//! asking.

/// The shard that owns `partition` of `topic` on a broker with `shard_count` shards.
pub fn shard_of(topic: &str, partition: u32, shard_count: usize) -> usize {
    assert!(shard_count > 0, "a broker has at least one shard");
    let topic_hash = crc32c::crc32c(topic.as_bytes());
    // Spread consecutive partitions of a topic round-robin from a topic-dependent start.
    let start = topic_hash as usize % shard_count;
    (start + partition as usize) % shard_count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_a_topics_partitions() {
        assert_eq!(shard_of("orders", 5, 4), shard_of("orders", 5, 4));
        let mut counts = [0usize; 4];
        for partition in 0..100 {
            counts[shard_of("orders", partition, 4)] += 1;
        }
        assert_eq!(counts, [25, 25, 25, 25]);
        assert!((0..50).all(|p| shard_of("t", p, 1) == 0));
    }
}
