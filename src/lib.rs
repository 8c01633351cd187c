//! shardline: a thread-per-core, io_uring, persistent partitioned log broker.
//!
//! Where to look: `record` (the batch format), `log` (one partition's write-ahead log and a
//! shard's set of them), `constants` (every limit).

pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod constants;
pub mod group;
pub mod log;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod record;
pub mod replication;
pub mod security;
pub mod server;
pub mod shard;
pub mod tls;
