//! The shard runtime: one glommio executor per core, each owning a disjoint set of
//! partitions, talking to the others only by messages on a channel mesh.
//!
//! Where to look:
//! - `ownership`: who owns what (partitions, group coordinators, the controller);
//! - `mesh`: how work crosses cores (typed calls, fan-out, backpressure);
//! - `messages`: what crosses cores, and the one dispatcher;
//! - `runtime`: starting the executors and joining them into the mesh;
//! - `placement`: the hash under the ownership map.

pub mod mesh;
pub mod messages;
pub mod ownership;
pub mod placement;
pub mod runtime;

pub use mesh::{Call, Mesh, MeshError};
pub use messages::ShardMessage;
pub use ownership::{Owner, Ownership, CONTROLLER_SHARD};
pub use placement::shard_of;
pub use runtime::{run_shards, RuntimeConfig, ShardStart};
