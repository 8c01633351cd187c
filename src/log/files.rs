//! A shard's budget of open segment files (and of loaded indexes of closed segments).
//!
//! Ten thousand partitions on a shard must not hold ten thousand descriptors, nor the
//! indexes of every closed segment in memory. Every open segment file holds one slot of a
//! per-shard semaphore of `open_files_max` slots, given back when its last handle drops.
//! Open files are kept in a least-recently-used table; to open another when no slot is
//! free, the least recently used idle files (held by the table alone) are closed, and if
//! every open file is in use the opener waits. Evicting an entry also drops any indexes
//! loaded for that segment. No task waits for a slot while holding one, so waiting ends.

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
    slots: Rc<glommio::sync::Semaphore>,
    clock: u64,
    entries: HashMap<SegmentKey, Entry>,
    by_use: BTreeMap<u64, SegmentKey>,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "open file budget must be positive");
        OpenFiles {
            capacity,
            slots: Rc::new(glommio::sync::Semaphore::new(capacity as u64)),
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

    /// Closes the least recently used file that nothing but this table holds; returns
    /// whether one was closed.
    fn evict_one_idle(&mut self) -> bool {
        let idle = self
            .by_use
            .iter()
            .find(|(_, key)| self.entries[key].file.is_idle())
            .map(|(&last_use, &key)| (last_use, key));
        match idle {
            Some((last_use, key)) => {
                self.by_use.remove(&last_use);
                self.entries.remove(&key);
                true
            }
            None => false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Segment files open right now, in use or idle.
    pub fn open_count(&self) -> usize {
        self.capacity - self.slots.available() as usize
    }

    pub fn insert(&mut self, key: SegmentKey, file: SegmentFile) {
        self.remove(key);
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

/// A slot for one more open segment file: free, freed by closing an idle file, or waited for.
pub async fn acquire_slot(files: &std::cell::RefCell<OpenFiles>) -> glommio::sync::StaticPermit {
    loop {
        let slots = files.borrow().slots.clone();
        if let Ok(permit) = slots.try_acquire_static_permit(1) {
            return permit;
        }
        let evicted = files.borrow_mut().evict_one_idle();
        if !evicted {
            glommio::timer::sleep(std::time::Duration::from_millis(
                crate::constants::OPEN_FILE_SLOT_RETRY_MS,
            ))
            .await;
        }
    }
}
