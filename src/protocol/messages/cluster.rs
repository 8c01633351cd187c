//! DescribeCluster (api 41): the controller quorum and the brokers, as the asked broker's
//! controller voter sees them. ElectLeader (api 42): move a partition's leadership to
//! another in-sync replica (a clean handover), through the controller. ReassignPartition
//! (api 44): move a partition's replicas to other brokers; the new ones catch up, then
//! the set switches.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::{BROKERS_PER_RESPONSE_MAX, HOST_BYTES_MAX};

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeClusterRequest {}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeClusterResponse {
    /// The broker that answered.
    pub answered_by: u32,
    /// The controller leader's node id, if one is known.
    pub controller_leader: Option<u32>,
    pub controller_term: u64,
    /// The answering voter's view of the controller log.
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub log_entries: u64,
    pub log_bytes: u64,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NodeStatus {
    pub node: u32,
    pub host: String,
    pub port: u16,
    pub voter: bool,
    /// Registered with the controller (it heartbeated at least once).
    pub registered: bool,
    /// Heartbeating within its session (not fenced).
    pub alive: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ElectLeaderRequest {
    pub topic: String,
    pub partition: u32,
    /// The broker to lead; `None`: the next live in-sync replica after the current leader.
    pub to: Option<u32>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ElectLeaderResponse {
    pub error: ErrorCode,
    pub message: String,
}

impl CheckArchived for ArchivedDescribeClusterRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl CheckArchived for ArchivedDescribeClusterResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("cluster nodes", self.nodes.len(), BROKERS_PER_RESPONSE_MAX)?;
        for node in self.nodes.iter() {
            limits::string("node host", &node.host, HOST_BYTES_MAX)?;
        }
        Ok(())
    }
}

impl CheckArchived for ArchivedElectLeaderRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::topic(&self.topic)
    }
}

impl CheckArchived for ArchivedElectLeaderResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string(
            "message",
            &self.message,
            crate::constants::ERROR_MESSAGE_BYTES_MAX,
        )
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReassignPartitionRequest {
    pub topic: String,
    pub partition: u32,
    /// The brokers to hold the partition, the first the preferred leader.
    pub replicas: Vec<u32>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReassignPartitionResponse {
    pub error: ErrorCode,
    pub message: String,
}

impl CheckArchived for ArchivedReassignPartitionRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::topic(&self.topic)?;
        limits::count("replicas", self.replicas.len(), BROKERS_PER_RESPONSE_MAX)
    }
}

impl CheckArchived for ArchivedReassignPartitionResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::string(
            "message",
            &self.message,
            crate::constants::ERROR_MESSAGE_BYTES_MAX,
        )
    }
}
