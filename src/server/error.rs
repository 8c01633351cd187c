//! What can stop a broker from starting, serving or shutting down cleanly. Every variant
//! says what failed and where (the path, the address, the shard).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cluster::MetadataError;
use crate::group::{CoordinatorError, OffsetLogError};

/// Why a profile was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad profile {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("bad profile {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("bad profile: {0}")]
    Check(String),
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot {operation} {address}: {source}")]
    Socket {
        operation: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("shard ports from {first} overflow (for {shard_count} shards)")]
    PortOverflow { first: u16, shard_count: usize },
}

/// Why a broker failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot {operation} data directory {path}: {source}")]
    DataDir {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another broker ({source})")]
    DataDirLocked { path: PathBuf, source: nix::Error },
    #[error("cannot handle signal {signal}: {source}")]
    Signal { signal: i32, source: std::io::Error },
    #[error("cannot start shard thread {shard}: {reason}")]
    ShardThread { shard: usize, reason: String },
    #[error("shard {shard}: cannot start its task queues or mesh: {reason}")]
    Runtime { shard: usize, reason: String },
    #[error("shard {shard}: the catalogue: {source}")]
    Metadata { shard: usize, source: MetadataError },
    #[error("shard {shard}: the controller: {source}")]
    Controller {
        shard: usize,
        source: crate::cluster::raft::RaftStorageError,
    },
    #[error("cluster configuration: {0}")]
    Cluster(String),
    #[error("shard {shard}: opening partition {topic}/{partition}: {reason}")]
    Partition {
        shard: usize,
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("shard {shard}: group offsets: {source}")]
    Offsets {
        shard: usize,
        source: OffsetLogError,
    },
    #[error("shard {shard}: stopped before the catalogue arrived")]
    StoppedEarly { shard: usize },
    #[error("shard {shard}: closing: {failures:?}")]
    Close { shard: usize, failures: Vec<String> },
    #[error("shard {shard}: closing the group coordinator: {source}")]
    CloseGroups {
        shard: usize,
        source: CoordinatorError,
    },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Shards(Vec<BrokerError>),
}
