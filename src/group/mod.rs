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
//! - `request`: the requests a coordinator serves and the group code's errors.
//!
//! Which shard coordinates a group is the ownership map's answer (`crate::shard::ownership`).
//!
//! This module knows the log and the protocol's message types, never the network: the
//! server routes each group request to its coordinator shard and calls in here.

pub mod assignor;
pub mod coordinator;
pub mod membership;
pub mod offsets;
pub mod offsets_log;
pub mod request;

pub use assignor::{Strategy, TopicPartition};
pub use coordinator::{Coordinator, GroupSnapshot};
pub use request::{CoordinatorError, GroupRequest, OffsetLogError};
