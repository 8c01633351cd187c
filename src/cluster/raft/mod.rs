//! The controller's Raft group: TiKV's `raft` crate (sans-IO: `RawNode` is driven by
//! `tick`, `step` and `ready`) driven from one glommio task on the controller shard.
//!
//! ```text
//!  peer frames ──step──▶ ┌────────────┐ ──ready──▶ messages to peers (transport)
//!  proposals ──propose─▶ │  RawNode   │            entries + hard state → disk, synced
//!  100 ms timer ──tick─▶ └────────────┘            committed events → MetadataImage
//! ```
//!
//! See `docs/raft-choice.md` for why this crate. The voters are fixed at start
//! (`--controller-voters`); every voter boots from the same initial snapshot, so no
//! configuration change is ever proposed (and no protobuf is ever parsed).

// raft's protobuf messages carry hidden bookkeeping fields; they are built by assignment.
#![allow(clippy::field_reassign_with_default)]

pub mod node;
pub mod storage;
pub mod wire;

pub use node::{ControllerNode, ProposeError, RaftOptions, RaftStatus};
pub use storage::{RaftDisk, RaftStorageError};
pub use wire::{WireError, WireMessage};
