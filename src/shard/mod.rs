//! The shard runtime: one glommio executor per core, each owning a disjoint set of
//! partitions, talking to the others only by messages on a channel mesh.

pub mod placement;
pub mod runtime;

pub use placement::shard_of;
pub use runtime::{run_shards, RuntimeConfig, ShardStart};
