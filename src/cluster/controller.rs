//! The controller: the one writer of the topic catalogue. It runs on the controller shard
//! (`crate::shard::ownership`), applies admin changes (create, delete, alter config) to the
//! durable metadata store, and returns the new catalogue for the server to publish to every
//! shard. It knows the store and the protocol's admin messages, not the network or the mesh.

use std::cell::Cell;
use std::sync::Arc;

use super::catalog::Catalog;
use super::metadata::{MetadataError, MetadataStore, TopicError, TopicSpec};
use crate::log::LogShard;
use crate::protocol::{
    AlterConfigsRequest, AlterConfigsResponse, AlterConfigsResult, CreateTopicResult,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicResult, DeleteTopicsRequest,
    DeleteTopicsResponse, ErrorCode, InitProducerIdRequest, InitProducerIdResponse, Response,
};

/// A catalogue change a client asked for.
#[derive(Debug)]
pub enum AdminRequest {
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    AlterConfigs(AlterConfigsRequest),
}

/// What a change produced: the answer for the client, and the catalogue every shard must
/// install (with the topics whose partitions they must drop) before the client hears it.
pub struct AdminOutcome {
    pub response: Response,
    pub catalog: Arc<Catalog>,
    pub deleted: Vec<Arc<TopicSpec>>,
}

/// The controller. Owned by the controller shard.
pub struct Controller {
    store: glommio::sync::RwLock<MetadataStore>,
    /// The version of the last catalogue handed out.
    version: Cell<u64>,
}

impl Controller {
    /// Opens (replaying) the durable catalogue in `<data_dir>/__metadata`.
    pub async fn open(
        data_dir: &std::path::Path,
        storage: &LogShard,
    ) -> Result<Controller, MetadataError> {
        let store = MetadataStore::open(data_dir, storage).await?;
        Ok(Controller {
            store: glommio::sync::RwLock::new(store),
            version: Cell::new(0),
        })
    }

    /// The catalogue as it stands, as a new version (published at start).
    pub async fn catalog(&self) -> Arc<Catalog> {
        let store = self
            .store
            .read()
            .await
            .expect("catalogue lock never closed");
        self.next_catalog(&store)
    }

    fn next_catalog(&self, store: &MetadataStore) -> Arc<Catalog> {
        self.version.set(self.version.get() + 1);
        Arc::new(Catalog::new(self.version.get(), store.topics().cloned()))
    }

    /// Applies one admin request; the outcome's catalogue must be published before the
    /// response is sent, so that a client told "created" can use the topic on any shard.
    pub async fn handle(&self, request: AdminRequest) -> AdminOutcome {
        let mut store = self
            .store
            .write()
            .await
            .expect("catalogue lock never closed");
        let mut deleted = Vec::new();
        let response = match request {
            AdminRequest::CreateTopics(request) => {
                Response::CreateTopics(create_topics(&mut store, request).await)
            }
            AdminRequest::DeleteTopics(request) => {
                Response::DeleteTopics(delete_topics(&mut store, request, &mut deleted).await)
            }
            AdminRequest::AlterConfigs(request) => {
                Response::AlterConfigs(alter_configs(&mut store, request).await)
            }
        };
        let catalog = self.next_catalog(&store);
        AdminOutcome {
            response,
            catalog,
            deleted,
        }
    }

    /// Hands out a new idempotent producer id (epoch 0), reserved durably first.
    pub async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut store = self
            .store
            .write()
            .await
            .expect("catalogue lock never closed");
        match store.next_producer_id().await {
            Ok(producer_id) => {
                tracing::debug!(producer_id, client_id = %request.client_id, "producer id handed out");
                InitProducerIdResponse {
                    error: ErrorCode::None,
                    message: String::new(),
                    producer_id,
                    producer_epoch: 0,
                }
            }
            Err(error) => InitProducerIdResponse {
                error: ErrorCode::StorageError,
                message: error.to_string(),
                producer_id: -1,
                producer_epoch: -1,
            },
        }
    }

    /// Flushes and closes the metadata log (graceful shutdown).
    pub async fn close(&self) -> Result<(), MetadataError> {
        let store = self
            .store
            .read()
            .await
            .expect("catalogue lock never closed");
        store.close().await
    }
}

fn topic_error_code(error: &TopicError) -> ErrorCode {
    match error {
        TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
        TopicError::NotFound(_) => ErrorCode::UnknownTopicOrPartition,
        TopicError::InvalidName { .. } => ErrorCode::InvalidTopicName,
        TopicError::InvalidPartitions(_) => ErrorCode::InvalidPartitionCount,
        TopicError::Config(_) => ErrorCode::InvalidConfig,
        TopicError::Storage(_) => ErrorCode::StorageError,
    }
}

fn outcome(error: Option<&TopicError>) -> (ErrorCode, String) {
    match error {
        None => (ErrorCode::None, String::new()),
        Some(error) => (topic_error_code(error), error.to_string()),
    }
}

async fn create_topics(
    store: &mut MetadataStore,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let entries: Vec<(String, String)> = topic
            .configs
            .into_iter()
            .map(|c| (c.key, c.value))
            .collect();
        let result = if topic.replication_factor > 1 {
            Err((
                ErrorCode::InvalidReplicationFactor,
                "this broker runs alone: replication factor must be 1".to_string(),
            ))
        } else if request.validate_only {
            store
                .check_create(&topic.name, topic.partitions, &entries)
                .map(|_| ())
                .map_err(|e| outcome(Some(&e)))
        } else {
            store
                .create_topic(&topic.name, topic.partitions, &entries)
                .await
                .map(|_| ())
                .map_err(|e| outcome(Some(&e)))
        };
        let (error, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
        results.push(CreateTopicResult {
            name: topic.name,
            error,
            message,
        });
    }
    CreateTopicsResponse { topics: results }
}

async fn delete_topics(
    store: &mut MetadataStore,
    request: DeleteTopicsRequest,
    deleted: &mut Vec<Arc<TopicSpec>>,
) -> DeleteTopicsResponse {
    let mut results = Vec::new();
    for name in request.names {
        let result = store.delete_topic(&name).await;
        let (error, message) = outcome(result.as_ref().err());
        if let Ok(topic) = result {
            deleted.push(Arc::new(topic));
        }
        results.push(DeleteTopicResult {
            name,
            error,
            message,
        });
    }
    DeleteTopicsResponse { topics: results }
}

async fn alter_configs(
    store: &mut MetadataStore,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let set: Vec<(String, String)> = topic.set.into_iter().map(|c| (c.key, c.value)).collect();
        let result = store
            .alter_config(&topic.name, &set, &topic.delete, request.validate_only)
            .await;
        let (error, message) = outcome(result.as_ref().err());
        results.push(AlterConfigsResult {
            topic: topic.name,
            error,
            message,
        });
    }
    AlterConfigsResponse { topics: results }
}
