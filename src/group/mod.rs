//! Consumer groups: point-to-point delivery inside a group, publish-subscribe across
//! groups, and the committed offsets that let a group resume.
//!
//! - `assignor`: range, round-robin and cooperative-sticky assignment (pure).
//! - `membership`: one group's members, generations and the handing over of partitions
//!   (pure; the clock is passed in).
//! - `offsets`: the offset record format and the in-memory table.
//! - `offsets_log`: a partition of the offsets log on the shard's storage engine, with
//!   replay and snapshots.
//! - `coordinator`: a shard's groups and offsets partitions.
//!
//! This module knows the log and the protocol's message types, never the network: the
//! server routes each group request to its coordinator shard and calls in here.

pub mod assignor;
pub mod coordinator;
pub mod membership;
pub mod offsets;
pub mod offsets_log;

pub use assignor::{Strategy, TopicPartition};
pub use coordinator::{coordinator_shard, offsets_partition, Coordinator, GroupSnapshot};
