//! Cluster metadata: topics, their configuration and placement, and the controller that
//! changes them.
//!
//! The metadata is a Raft log of events (`raft`: TiKV's `raft` crate, our storage and
//! driver) applied to an image (`metadata`) by every controller voter; the controller
//! (`controller`) checks and proposes changes. A one-broker cluster is a one-voter group.
//! This module knows the log and the image, not the network.

pub mod catalog;
pub mod controller;
pub mod metadata;
pub mod observer;
pub mod raft;
pub mod topic_config;

pub use catalog::Catalog;
pub use controller::{AdminRequest, Controller};
pub use metadata::{
    BrokerRecord, MetadataError, MetadataEvent, MetadataImage, PartitionState, TopicError,
    TopicSpec,
};
pub use topic_config::{ConfigError, TopicConfig};
