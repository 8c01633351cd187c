//! The broker: listeners, connections, request handlers, and a shard's life from start to
//! graceful shutdown. It joins the protocol (`crate::protocol`), the shard runtime
//! (`crate::shard`: ownership map and mesh), the controller and catalogue (`crate::cluster`) and the log (`crate::log`).

pub mod authorize;
pub mod broker;
pub mod connection;
pub mod context;
pub mod controller;
pub mod error;
pub mod fetch_session;
pub mod groups;
pub mod handlers;
pub mod internal;
pub mod listeners;
pub mod metrics;
pub mod partitions;
pub mod profile;
pub mod route;
pub mod socket;
pub mod work;

pub use broker::{run_broker, BrokerOptions};
pub use error::{BrokerError, ProfileError};
pub use profile::Profile;
