//! CreateTopics (api 5) and DeleteTopics (api 6). Each topic succeeds or fails on its own;
//! the response has one result per requested topic, in request order.

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use super::configs::ConfigEntry;
use crate::constants::{
    PARTITIONS_PER_REQUEST_MAX, PARTITIONS_PER_TOPIC_MAX, REPLICAS_PER_PARTITION_MAX,
    TOPICS_PER_REQUEST_MAX,
};

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CreateTopicsRequest {
    pub topics: Vec<CreatableTopic>,
    /// Check the topics and report what would happen, but create nothing.
    pub validate_only: bool,
    /// How long to wait for the topics to be created everywhere; 0 answers as soon as the
    /// creation is accepted.
    pub timeout_ms: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CreatableTopic {
    pub name: String,
    /// 1 ..= PARTITIONS_PER_TOPIC_MAX.
    pub partitions: u32,
    /// Replicas per partition; 0 asks for the cluster default.
    pub replication_factor: u16,
    /// Entries that override the defaults.
    pub configs: Vec<ConfigEntry>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CreateTopicsResponse {
    pub topics: Vec<CreateTopicResult>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CreateTopicResult {
    pub name: String,
    pub error: ErrorCode,
    /// Why it failed, for humans; empty on success.
    pub message: String,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
    /// How long to wait for the deletion to be accepted everywhere; 0 answers at once.
    pub timeout_ms: u32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeleteTopicsResponse {
    pub topics: Vec<DeleteTopicResult>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeleteTopicResult {
    pub name: String,
    pub error: ErrorCode,
    /// Why it failed, for humans; empty on success.
    pub message: String,
}

impl CheckArchived for ArchivedCreateTopicsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        let mut partition_count = 0u64;
        for topic in self.topics.iter() {
            limits::topic(&topic.name)?;
            let partitions = topic.partitions.to_native();
            if partitions == 0 || partitions as usize > PARTITIONS_PER_TOPIC_MAX {
                return Err(ProtocolError::InvalidPartitionCount(partitions));
            }
            partition_count += u64::from(partitions);
            limits::count(
                "partitions in the request",
                partition_count as usize,
                PARTITIONS_PER_REQUEST_MAX,
            )?;
            let replication_factor = topic.replication_factor.to_native();
            if replication_factor as usize > REPLICAS_PER_PARTITION_MAX {
                return Err(ProtocolError::InvalidReplicationFactor(replication_factor));
            }
            limits::config_entries(&topic.configs)?;
        }
        Ok(())
    }
}

impl CheckArchived for ArchivedCreateTopicsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        for topic in self.topics.iter() {
            limits::topic(&topic.name)?;
            limits::message(&topic.message)?;
        }
        Ok(())
    }
}

impl CheckArchived for ArchivedDeleteTopicsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::topics(&self.names, TOPICS_PER_REQUEST_MAX)
    }
}

impl CheckArchived for ArchivedDeleteTopicsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        for topic in self.topics.iter() {
            limits::topic(&topic.name)?;
            limits::message(&topic.message)?;
        }
        Ok(())
    }
}
