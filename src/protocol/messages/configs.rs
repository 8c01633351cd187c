//! Topic configuration: DescribeConfigs (api 7) and AlterConfigs (api 8), and the key-value
//! entry that CreateTopics and Metadata use too. Keys and values are strings; which keys
//! exist and what values they take is the broker's business (`InvalidConfig` otherwise).

use rkyv::{Archive, Deserialize, Serialize};

use super::super::error::ProtocolError;
use super::super::error_code::ErrorCode;
use super::super::limits::{self, CheckArchived};
use crate::constants::TOPICS_PER_REQUEST_MAX;

/// One configuration entry, e.g. `retention.ms = 86400000`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
}

impl ConfigEntry {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> ConfigEntry {
        ConfigEntry {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeConfigsRequest {
    pub topics: Vec<String>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribeConfigsResponse {
    pub topics: Vec<TopicConfigs>,
}

/// Every configuration entry of one topic, defaults included.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopicConfigs {
    pub topic: String,
    pub error: ErrorCode,
    pub entries: Vec<DescribedConfigEntry>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DescribedConfigEntry {
    pub key: String,
    pub value: String,
    /// The value is the broker's default, not set on this topic.
    pub is_default: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterConfigsRequest {
    pub topics: Vec<AlterTopicConfigs>,
    /// Check the changes and report what would happen, but change nothing.
    pub validate_only: bool,
}

/// The changes to one topic's configuration; every change of a topic applies or none does.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterTopicConfigs {
    pub name: String,
    /// Entries to set (overriding the default).
    pub set: Vec<ConfigEntry>,
    /// Keys to return to their default.
    pub delete: Vec<String>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterConfigsResponse {
    pub topics: Vec<AlterConfigsResult>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlterConfigsResult {
    pub topic: String,
    pub error: ErrorCode,
    /// Why it failed, for humans; empty on success.
    pub message: String,
}

impl CheckArchived for ArchivedDescribeConfigsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::topics(&self.topics, TOPICS_PER_REQUEST_MAX)
    }
}

impl CheckArchived for ArchivedDescribeConfigsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        for topic in self.topics.iter() {
            limits::topic(&topic.topic)?;
            limits::config_count(topic.entries.len())?;
            for entry in topic.entries.iter() {
                limits::config_key(&entry.key)?;
                limits::config_value(&entry.value)?;
            }
        }
        Ok(())
    }
}

impl CheckArchived for ArchivedAlterConfigsRequest {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        for topic in self.topics.iter() {
            limits::topic(&topic.name)?;
            limits::config_entries(&topic.set)?;
            limits::config_count(topic.delete.len())?;
            topic.delete.iter().try_for_each(limits::config_key)?;
        }
        Ok(())
    }
}

impl CheckArchived for ArchivedAlterConfigsResponse {
    fn check(&self) -> Result<(), ProtocolError> {
        limits::count("topic list", self.topics.len(), TOPICS_PER_REQUEST_MAX)?;
        for topic in self.topics.iter() {
            limits::topic(&topic.topic)?;
            limits::message(&topic.message)?;
        }
        Ok(())
    }
}
