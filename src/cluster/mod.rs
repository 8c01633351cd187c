//! Cluster metadata: topics, their configuration and placement, and the controller that
//! changes them.
//!
//! On a single broker the metadata store is a durable event log on the broker's own storage
//! engine (an internal partition); the Raft-replicated controller of a cluster will hold the
//! same events. This module knows the log, not the network.

pub mod catalog;
pub mod controller;
pub mod metadata;
pub mod topic_config;

pub use catalog::Catalog;
pub use controller::{AdminOutcome, AdminRequest, Controller};
pub use metadata::{MetadataError, MetadataStore, TopicError, TopicSpec};
pub use topic_config::{ConfigError, TopicConfig};
