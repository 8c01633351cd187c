//! The ownership map: the one place that answers "who owns this?" for everything a broker
//! serves. Every other module asks it; none computes placement itself.
//!
//! ```text
//!  what                      owner                         how it is decided
//!  ───────────────────────   ───────────────────────────   ────────────────────────────────────
//!  partition replica         broker + shard                broker: the controller's placement
//!  (topic, p)                                              (replicas, leader, in `Catalog`);
//!                                                          shard = (crc32c(topic) + p) % that
//!                                                          broker's shard count
//!  consumer group g          the shard owning __offsets/n  n = crc32c(g) % OFFSETS_PARTITIONS,
//!                                                          then placed like any partition
//!  controller (catalogue)    shard CONTROLLER_SHARD        fixed
//! ```
//!
//! The map is plain data (`Copy`), the same on every shard of a broker, so asking it needs
//! no message. How work reaches the owner is the mesh's business (`super::mesh`).

use std::sync::Arc;

use crate::cluster::{Catalog, TopicSpec};
use crate::constants::{OFFSETS_PARTITIONS, OFFSETS_TOPIC_NAME};

use super::placement::shard_of;

/// The shard that runs the controller (the topic catalogue).
pub const CONTROLLER_SHARD: usize = 0;

/// Where a partition replica lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub broker: u32,
    pub shard: usize,
}

/// Who owns what on one broker. Held by every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    broker_id: u32,
    shard_count: usize,
}

impl Ownership {
    pub fn new(broker_id: u32, shard_count: usize) -> Ownership {
        assert!(shard_count > 0, "a broker has at least one shard");
        Ownership {
            broker_id,
            shard_count,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// The shard that owns `partition` of `topic`.
    pub fn partition_shard(&self, topic: &str, partition: u32) -> usize {
        shard_of(topic, partition, self.shard_count)
    }

    /// The broker and shard that own `partition` of `topic`.
    pub fn partition_owner(&self, topic: &str, partition: u32) -> Owner {
        Owner {
            broker: self.broker_id,
            shard: self.partition_shard(topic, partition),
        }
    }

    /// The partition of the offsets log that holds `group`'s offsets.
    pub fn offsets_partition(group: &str) -> u32 {
        crc32c::crc32c(group.as_bytes()) % OFFSETS_PARTITIONS
    }

    /// The shard that owns partition `partition` of the offsets log.
    pub fn offsets_partition_shard(&self, partition: u32) -> usize {
        self.partition_shard(OFFSETS_TOPIC_NAME, partition)
    }

    /// The shard that coordinates `group`.
    pub fn group_coordinator(&self, group: &str) -> usize {
        self.offsets_partition_shard(Self::offsets_partition(group))
    }

    /// The shard that runs the controller.
    pub fn controller(&self) -> usize {
        CONTROLLER_SHARD
    }

    /// Every (topic, partition) of `catalog` with a replica on this broker that `shard`
    /// owns.
    pub fn partitions_of(&self, catalog: &Catalog, shard: usize) -> Vec<(Arc<TopicSpec>, u32)> {
        let mut owned = Vec::new();
        for topic in catalog.topics() {
            for partition in 0..topic.partitions {
                let here = topic
                    .partition(partition)
                    .is_none_or(|p| p.replicas.contains(&self.broker_id));
                if here && self.partition_shard(&topic.name, partition) == shard {
                    owned.push((topic.clone(), partition));
                }
            }
        }
        owned
    }

    /// Groups `items` by the shard that owns each one's partition, keeping each item's
    /// index in `items`; shards with nothing are left out. Within a shard, items keep
    /// their order.
    pub fn by_shard<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        topic_partition: impl Fn(&T) -> (&str, u32),
    ) -> Vec<(usize, Vec<(usize, T)>)> {
        let mut per_shard: Vec<Vec<(usize, T)>> =
            (0..self.shard_count).map(|_| Vec::new()).collect();
        for (index, item) in items.into_iter().enumerate() {
            let (topic, partition) = topic_partition(&item);
            let shard = self.partition_shard(topic, partition);
            per_shard[shard].push((index, item));
        }
        per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_coordinated_where_its_offsets_partition_lives() {
        let map = Ownership::new(1, 4);
        for group in ["billing", "audit", "g-17"] {
            let partition = Ownership::offsets_partition(group);
            assert!(partition < OFFSETS_PARTITIONS);
            assert_eq!(
                map.group_coordinator(group),
                map.partition_shard(OFFSETS_TOPIC_NAME, partition)
            );
        }
    }

    #[test]
    fn partitions_are_owned_once_and_grouped_in_order() {
        let map = Ownership::new(7, 3);
        let items: Vec<(String, u32)> = (0..30).map(|p| ("orders".to_string(), p)).collect();
        let grouped = map.by_shard(items, |(t, p)| (t.as_str(), *p));
        let mut seen: Vec<usize> = grouped
            .iter()
            .flat_map(|(_, items)| items.iter().map(|(index, _)| *index))
            .collect();
        for (shard, items) in &grouped {
            assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "order kept");
            assert!(items
                .iter()
                .all(|(_, (t, p))| map.partition_owner(t, *p).shard == *shard));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        assert_eq!(map.partition_owner("orders", 0).broker, 7);
        assert_eq!(map.controller(), CONTROLLER_SHARD);
    }
}
