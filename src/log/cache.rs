//! A shard's cache of recently written batches, so that caught-up readers never touch disk.
//!
//! Batches enter when they have been written to their segment (unwritten batches are served
//! from the partition's pending queue instead), so evicting one is always safe: it is on
//! disk. The cache holds `Bytes` handles to the very buffers that were appended: no copy.
//! Eviction is first-in first-out across all partitions of the shard, by a byte budget.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Identifies a partition log within its shard.
pub type PartitionId = u64;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: Bytes,
}

/// Owned by one shard; shared by its partitions through `Rc<RefCell<_>>`.
#[derive(Debug)]
pub struct BatchCache {
    budget_bytes: usize,
    used_bytes: usize,
    /// Insertion order across partitions: (partition, base offset). Entries whose batch was
    /// already dropped (truncation, retention) are skipped when they reach the front.
    order: VecDeque<(PartitionId, u64)>,
    partitions: HashMap<PartitionId, VecDeque<CachedBatch>>,
}

impl BatchCache {
    pub fn new(budget_bytes: usize) -> Self {
        BatchCache {
            budget_bytes,
            used_bytes: 0,
            order: VecDeque::new(),
            partitions: HashMap::new(),
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Adds a batch written after every batch already cached for its partition.
    pub fn insert(&mut self, partition: PartitionId, batch: CachedBatch) {
        if batch.bytes.len() > self.budget_bytes {
            return;
        }
        let batches = self.partitions.entry(partition).or_default();
        if let Some(last) = batches.back() {
            if last.next_offset != batch.base_offset {
                // Not contiguous (a truncation happened): start over for this partition.
                self.used_bytes -= batches.iter().map(|b| b.bytes.len()).sum::<usize>();
                batches.clear();
            }
        }
        self.used_bytes += batch.bytes.len();
        self.order.push_back((partition, batch.base_offset));
        batches.push_back(batch);
        self.evict();
    }

    fn evict(&mut self) {
        while self.used_bytes > self.budget_bytes {
            let Some((partition, base_offset)) = self.order.pop_front() else {
                break;
            };
            let Some(batches) = self.partitions.get_mut(&partition) else {
                continue;
            };
            if batches
                .front()
                .is_some_and(|b| b.base_offset == base_offset)
            {
                let batch = batches.pop_front().expect("front checked");
                self.used_bytes -= batch.bytes.len();
                if batches.is_empty() {
                    self.partitions.remove(&partition);
                }
            }
        }
    }

    /// Appends to `out` the cached batches of `partition` from the one holding `offset`, up
    /// to `max_bytes` (at least one batch) and only batches that end at or below
    /// `limit_offset`. Returns the offset after the last batch given, or `None` when the
    /// cache does not hold `offset`.
    pub fn collect(
        &self,
        partition: PartitionId,
        offset: u64,
        limit_offset: u64,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
    ) -> Option<u64> {
        let batches = self.partitions.get(&partition)?;
        let first = batches.partition_point(|b| b.next_offset <= offset);
        let holder = batches.get(first)?;
        if holder.base_offset > offset {
            return None;
        }
        let mut next = offset;
        let mut taken = 0usize;
        for batch in batches.range(first..) {
            let fits = taken == 0 || taken + batch.bytes.len() <= max_bytes;
            if batch.next_offset > limit_offset || !fits {
                break;
            }
            taken += batch.bytes.len();
            next = batch.next_offset;
            out.push(batch.bytes.clone());
        }
        Some(next)
    }

    /// Drops the partition's batches holding any offset at or above `offset`.
    pub fn truncate_from(&mut self, partition: PartitionId, offset: u64) {
        if let Some(batches) = self.partitions.get_mut(&partition) {
            while batches.back().is_some_and(|b| b.next_offset > offset) {
                let batch = batches.pop_back().expect("back checked");
                self.used_bytes -= batch.bytes.len();
            }
        }
    }

    /// Drops the partition's batches entirely below `offset` (retention).
    pub fn drop_below(&mut self, partition: PartitionId, offset: u64) {
        if let Some(batches) = self.partitions.get_mut(&partition) {
            while batches.front().is_some_and(|b| b.next_offset <= offset) {
                let batch = batches.pop_front().expect("front checked");
                self.used_bytes -= batch.bytes.len();
            }
        }
    }

    pub fn remove_partition(&mut self, partition: PartitionId) {
        if let Some(batches) = self.partitions.remove(&partition) {
            self.used_bytes -= batches.iter().map(|b| b.bytes.len()).sum::<usize>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, count: u64, len: usize) -> CachedBatch {
        CachedBatch {
            base_offset: base,
            next_offset: base + count,
            bytes: Bytes::from(vec![7u8; len]),
        }
    }

    #[test]
    fn serves_contiguous_batches_within_limits() {
        let mut cache = BatchCache::new(10_000);
        for i in 0..5 {
            cache.insert(1, batch(i * 10, 10, 100));
        }
        let mut out = Vec::new();
        assert_eq!(cache.collect(1, 15, 50, 250, &mut out), Some(30));
        assert_eq!(out.len(), 2);
        out.clear();
        // The first batch is always given, even over max_bytes.
        assert_eq!(cache.collect(1, 0, 50, 1, &mut out), Some(10));
        out.clear();
        // Nothing past the limit offset.
        assert_eq!(cache.collect(1, 0, 25, 10_000, &mut out), Some(20));
        assert_eq!(cache.collect(1, 50, 60, 100, &mut Vec::new()), None);
        assert_eq!(cache.collect(2, 0, 60, 100, &mut Vec::new()), None);
    }

    #[test]
    fn evicts_oldest_first_across_partitions_within_budget() {
        let mut cache = BatchCache::new(1_000);
        for i in 0..20u64 {
            cache.insert(i % 2, batch(i / 2 * 10, 10, 100));
            assert!(cache.used_bytes() <= 1_000);
        }
        assert_eq!(cache.collect(0, 0, u64::MAX, 100, &mut Vec::new()), None);
        assert!(cache
            .collect(0, 90, u64::MAX, 100, &mut Vec::new())
            .is_some());
        assert!(cache
            .collect(1, 90, u64::MAX, 100, &mut Vec::new())
            .is_some());
    }

    #[test]
    fn truncation_and_retention_release_bytes() {
        let mut cache = BatchCache::new(10_000);
        for i in 0..5 {
            cache.insert(1, batch(i * 10, 10, 100));
        }
        cache.truncate_from(1, 30);
        assert_eq!(cache.used_bytes(), 300);
        assert_eq!(cache.collect(1, 30, u64::MAX, 1000, &mut Vec::new()), None);
        cache.drop_below(1, 10);
        assert_eq!(cache.used_bytes(), 200);
        // A new batch after a truncation point replaces a non-contiguous tail.
        cache.insert(1, batch(100, 1, 50));
        assert_eq!(cache.used_bytes(), 50);
        cache.remove_partition(1);
        assert_eq!(cache.used_bytes(), 0);
    }
}
