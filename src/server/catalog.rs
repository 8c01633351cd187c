//! The topic catalogue as every shard sees it: an immutable snapshot, replaced whole when
//! the controller shard commits a change, shared across shards by `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cluster::TopicSpec;
use crate::shard::shard_of;

/// An immutable view of every topic. Cheap to share; replaced, never mutated.
#[derive(Debug, Default)]
pub struct Catalog {
    topics: BTreeMap<String, Arc<TopicSpec>>,
    /// Bumped with every change, so shards can tell which snapshot is newer.
    pub version: u64,
}

impl Catalog {
    pub fn new(version: u64, topics: impl IntoIterator<Item = TopicSpec>) -> Catalog {
        let topics = topics
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(t)))
            .collect();
        Catalog { topics, version }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicSpec>> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicSpec>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Every (topic, partition) that `shard` owns.
    pub fn owned_by(&self, shard: usize, shard_count: usize) -> Vec<(Arc<TopicSpec>, u32)> {
        let mut owned = Vec::new();
        for topic in self.topics.values() {
            for partition in 0..topic.partitions {
                if shard_of(&topic.name, partition, shard_count) == shard {
                    owned.push((topic.clone(), partition));
                }
            }
        }
        owned
    }
}
