//! A shard's budget of open segment files (and of loaded indexes of closed segments).
//!
//! Ten thousand partitions on a shard must not hold ten thousand descriptors, nor the
//! indexes of every closed segment in memory. Segment files are opened on demand and kept
//! in a least-recently-used table of bounded size; evicting an entry drops the shard's
//! handle (an IO still in flight keeps its own clone until it completes) and any indexes
//! loaded for that segment.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::cache::PartitionId;
use super::io::SegmentFile;
use super::segment::SegmentIndexes;

/// (partition, segment base offset).
pub type SegmentKey = (PartitionId, u64);

struct Entry {
    file: SegmentFile,
    indexes: Option<Rc<SegmentIndexes>>,
    last_use: u64,
}

/// Owned by one shard; shared by its partitions through `Rc<RefCell<_>>`.
pub struct OpenFiles {
    capacity: usize,
    clock: u64,
    entries: HashMap<SegmentKey, Entry>,
    by_use: BTreeMap<u64, SegmentKey>,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "open file budget must be positive");
        OpenFiles {
            capacity,
            clock: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn touch(&mut self, key: SegmentKey) -> Option<&mut Entry> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(&key)?;
        self.by_use.remove(&entry.last_use);
        entry.last_use = clock;
        self.by_use.insert(clock, key);
        Some(entry)
    }

    /// The open file of a segment, if it is open.
    pub fn get(&mut self, key: SegmentKey) -> Option<SegmentFile> {
        self.touch(key).map(|e| e.file.clone())
    }

    /// The loaded indexes of a closed segment, if loaded.
    pub fn indexes(&mut self, key: SegmentKey) -> Option<Rc<SegmentIndexes>> {
        self.touch(key).and_then(|e| e.indexes.clone())
    }

    pub fn insert(&mut self, key: SegmentKey, file: SegmentFile) {
        self.remove(key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.by_use.insert(self.clock, key);
        self.entries.insert(
            key,
            Entry {
                file,
                indexes: None,
                last_use: self.clock,
            },
        );
    }

    /// Attaches loaded indexes to an open segment (ignored if it was evicted meanwhile).
    pub fn set_indexes(&mut self, key: SegmentKey, indexes: Rc<SegmentIndexes>) {
        if let Some(entry) = self.touch(key) {
            entry.indexes = Some(indexes);
        }
    }

    pub fn remove(&mut self, key: SegmentKey) {
        if let Some(entry) = self.entries.remove(&key) {
            self.by_use.remove(&entry.last_use);
        }
    }

    pub fn remove_partition(&mut self, partition: PartitionId) {
        let keys: Vec<SegmentKey> = self
            .entries
            .keys()
            .filter(|k| k.0 == partition)
            .copied()
            .collect();
        for key in keys {
            self.remove(key);
        }
    }
}
