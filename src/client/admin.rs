//! Topic administration and offset lookups.

use std::rc::Rc;

use super::cluster::Cluster;
use super::error::ClientError;
use crate::protocol::{
    AlterConfigsRequest, AlterTopicConfigs, ConfigEntry, CreatableTopic, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribedConfigEntry, ElectLeaderRequest, ErrorCode, ListOffsetsPartition, ListOffsetsRequest,
    OffsetSpec, ReassignPartitionRequest, Request, Response, TopicMetadata,
};

/// How long the broker may take over a topic change.
const ADMIN_TIMEOUT_MS: u32 = 30_000;

/// Admin operations over a cluster connection.
#[derive(Clone)]
pub struct Admin {
    cluster: Rc<Cluster>,
}

fn check(code: ErrorCode, message: &str) -> Result<(), ClientError> {
    if code == ErrorCode::None {
        Ok(())
    } else {
        Err(ClientError::from_code(code, message))
    }
}

fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected response {:?}", response.api_key()))
}

fn admin_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(crate::constants::ADMIN_REQUEST_TIMEOUT_MS)
}

impl Admin {
    pub fn new(cluster: Rc<Cluster>) -> Admin {
        Admin { cluster }
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Sends an admin request to a bootstrap broker: the next one when one does not
    /// answer within `ADMIN_REQUEST_TIMEOUT_MS`.
    pub(crate) async fn call(&self, request: Request) -> Result<Response, ClientError> {
        Ok(self
            .cluster
            .request_any(&request, admin_timeout())
            .await?
            .response)
    }

    /// Creates a topic with the cluster's default replication factor.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        self.create_topic_replicated(name, partitions, 0, configs)
            .await
    }

    /// Creates a topic with `replication_factor` replicas per partition (0: the cluster's
    /// default).
    pub async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| ConfigEntry::new(k.clone(), v.clone()))
                    .collect(),
            }],
            validate_only: false,
            timeout_ms: ADMIN_TIMEOUT_MS,
        });
        match self.call(request).await? {
            Response::CreateTopics(response) => {
                let result = response
                    .topics
                    .first()
                    .ok_or_else(|| ClientError::Protocol("empty create response".into()))?;
                check(result.error, &result.message)?;
                self.cluster.invalidate_metadata();
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Creates the topic unless it exists (created concurrently counts as existing) and
    /// returns its partition count, which may differ from `partitions` if it existed.
    pub async fn ensure_topic(&self, name: &str, partitions: u32) -> Result<u32, ClientError> {
        match self.cluster.topic(name).await {
            Ok(_) => {}
            Err(ClientError::UnknownTopic(_)) => {
                match self.create_topic(name, partitions, &[]).await {
                    Ok(())
                    | Err(ClientError::Broker {
                        code: ErrorCode::TopicAlreadyExists,
                        ..
                    }) => {}
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        }
        let existing = self.cluster.topic(name).await?.partitions.len() as u32;
        if existing == 0 {
            return Err(ClientError::UnknownTopic(format!(
                "{name} has no partitions"
            )));
        }
        Ok(existing)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: ADMIN_TIMEOUT_MS,
        });
        match self.call(request).await? {
            Response::DeleteTopics(response) => {
                let result = response
                    .topics
                    .first()
                    .ok_or_else(|| ClientError::Protocol("empty delete response".into()))?;
                check(result.error, &result.message)?;
                self.cluster.invalidate_metadata();
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Every topic with its partitions (fresh metadata).
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        Ok(self.cluster.refresh_metadata().await?.topics.clone())
    }

    pub async fn describe_configs(
        &self,
        name: &str,
    ) -> Result<Vec<DescribedConfigEntry>, ClientError> {
        match self
            .call(Request::DescribeConfigs(DescribeConfigsRequest {
                topics: vec![name.to_string()],
            }))
            .await?
        {
            Response::DescribeConfigs(response) => {
                let topic = response
                    .topics
                    .into_iter()
                    .next()
                    .ok_or_else(|| ClientError::Protocol("empty describe response".into()))?;
                check(topic.error, name)?;
                Ok(topic.entries)
            }
            other => Err(unexpected(&other)),
        }
    }

    pub async fn alter_configs(
        &self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), ClientError> {
        let request = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterTopicConfigs {
                name: name.to_string(),
                set: set
                    .iter()
                    .map(|(k, v)| ConfigEntry::new(k.clone(), v.clone()))
                    .collect(),
                delete: delete.to_vec(),
            }],
            validate_only: false,
        });
        match self.call(request).await? {
            Response::AlterConfigs(response) => {
                let result = response
                    .topics
                    .first()
                    .ok_or_else(|| ClientError::Protocol("empty alter response".into()))?;
                check(result.error, &result.message)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The offset for `spec` in one partition (earliest, latest = high watermark, or the
    /// first batch at or after a timestamp).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<u64, ClientError> {
        let connection = self.cluster.connection_for(topic, partition).await?;
        let request = Request::ListOffsets(ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.to_string(),
                partition,
                spec,
            }],
        });
        match connection
            .request_within(&request, &[], admin_timeout())
            .await?
            .response
        {
            Response::ListOffsets(response) => {
                let entry = response
                    .partitions
                    .first()
                    .ok_or_else(|| ClientError::Protocol("empty list offsets response".into()))?;
                check(entry.error, topic)?;
                Ok(entry.offset)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The controller quorum and the brokers, as the asked broker sees them.
    pub async fn describe_cluster(&self) -> Result<DescribeClusterResponse, ClientError> {
        match self
            .call(Request::DescribeCluster(DescribeClusterRequest {}))
            .await?
        {
            Response::DescribeCluster(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves a partition's leadership to `to` (or the next live in-sync replica).
    pub async fn elect_leader(
        &self,
        topic: &str,
        partition: u32,
        to: Option<u32>,
    ) -> Result<(), ClientError> {
        let request = Request::ElectLeader(ElectLeaderRequest {
            topic: topic.to_string(),
            partition,
            to,
        });
        match self.call(request).await? {
            Response::ElectLeader(response) => {
                check(response.error, &response.message)?;
                self.cluster.invalidate_metadata();
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Starts moving a partition's replicas to `replicas` (the first the preferred
    /// leader); the switch happens once the new ones are in sync.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<(), ClientError> {
        let request = Request::ReassignPartition(ReassignPartitionRequest {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
        });
        match self.call(request).await? {
            Response::ReassignPartition(response) => {
                check(response.error, &response.message)?;
                self.cluster.invalidate_metadata();
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Adds and removes access rules (one bad rule refuses the whole change).
    pub async fn alter_acls(
        &self,
        add: Vec<crate::protocol::Acl>,
        remove: Vec<crate::protocol::Acl>,
    ) -> Result<(), ClientError> {
        let request = Request::AlterAcls(crate::protocol::AlterAclsRequest { add, remove });
        match self.call(request).await? {
            Response::AlterAcls(response) => check(response.error, &response.message),
            other => Err(unexpected(&other)),
        }
    }

    /// Every access rule.
    pub async fn describe_acls(&self) -> Result<Vec<crate::protocol::Acl>, ClientError> {
        let request = Request::DescribeAcls(crate::protocol::DescribeAclsRequest {});
        match self.call(request).await? {
            Response::DescribeAcls(response) => {
                check(response.error, &response.message)?;
                Ok(response.acls)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Stores and removes users' SCRAM credentials.
    pub async fn alter_users(
        &self,
        upsert: Vec<crate::protocol::UserCredential>,
        delete: Vec<String>,
    ) -> Result<(), ClientError> {
        let request = Request::AlterUsers(crate::protocol::AlterUsersRequest { upsert, delete });
        match self.call(request).await? {
            Response::AlterUsers(response) => check(response.error, &response.message),
            other => Err(unexpected(&other)),
        }
    }

    /// Every user (names and mechanisms, never keys).
    pub async fn describe_users(&self) -> Result<Vec<crate::protocol::UserListing>, ClientError> {
        let request = Request::DescribeUsers(crate::protocol::DescribeUsersRequest {});
        match self.call(request).await? {
            Response::DescribeUsers(response) => {
                check(response.error, &response.message)?;
                Ok(response.users)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Sets quotas (a quota with no limit removes it).
    pub async fn alter_quotas(&self, set: Vec<crate::protocol::Quota>) -> Result<(), ClientError> {
        let request = Request::AlterQuotas(crate::protocol::AlterQuotasRequest { set });
        match self.call(request).await? {
            Response::AlterQuotas(response) => check(response.error, &response.message),
            other => Err(unexpected(&other)),
        }
    }

    /// Every quota.
    pub async fn describe_quotas(&self) -> Result<Vec<crate::protocol::Quota>, ClientError> {
        let request = Request::DescribeQuotas(crate::protocol::DescribeQuotasRequest {});
        match self.call(request).await? {
            Response::DescribeQuotas(response) => {
                check(response.error, &response.message)?;
                Ok(response.quotas)
            }
            other => Err(unexpected(&other)),
        }
    }
}
