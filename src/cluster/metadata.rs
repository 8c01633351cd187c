//! The durable topic catalogue of a broker.
//!
//! Every change is one event — topic created, deleted, configuration replaced — appended as a
//! one-record batch to an internal partition log (`<data dir>/__metadata`) with the
//! every-batch flush policy, and acknowledged only once durable. On start the log is
//! replayed. The value of each record is an rkyv archive of a [`MetadataEvent`], read back
//! with checked access (it comes from disk, so it is outside input).
//!
//! Owned by one shard (the controller shard); other shards learn of changes by message.

use std::collections::BTreeMap;
use std::path::Path;

use rkyv::{Archive, Deserialize, Serialize};

use super::topic_config::{ConfigError, TopicConfig};
use crate::log::{FlushPolicy, LogConfig, LogShard, PartitionLog};
use crate::record::reader::records;
use crate::record::{validate, BatchBuilder, BatchIter, Codec};

/// The longest topic name.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: u32 = 10_000;

/// A configuration entry as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub key: String,
    pub value: String,
}

/// One change to the catalogue, as stored in the metadata log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataEvent {
    TopicCreated {
        name: String,
        topic_id: u64,
        partitions: u32,
        config: Vec<StoredEntry>,
        created_ms: i64,
    },
    TopicDeleted {
        name: String,
        topic_id: u64,
    },
    TopicConfigReplaced {
        name: String,
        topic_id: u64,
        config: Vec<StoredEntry>,
    },
    /// Producer ids below `next` are handed out (or reserved): never hand them out again.
    ProducerIdsReserved {
        next: u64,
    },
}

/// A topic as the catalogue knows it. Plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    /// Unique for the broker's lifetime, never reused: a topic deleted and created again
    /// gets new partition directories.
    pub topic_id: u64,
    pub partitions: u32,
    pub config: TopicConfig,
    pub created_ms: i64,
}

impl TopicSpec {
    /// The directory of one of the topic's partitions under `data_dir`.
    pub fn partition_dir(&self, data_dir: &Path, partition: u32) -> std::path::PathBuf {
        data_dir
            .join("topics")
            .join(format!("{}.{}", self.name, self.topic_id))
            .join(partition.to_string())
    }

    /// The directory of all the topic's partitions under `data_dir`.
    pub fn topic_dir(&self, data_dir: &Path) -> std::path::PathBuf {
        data_dir
            .join("topics")
            .join(format!("{}.{}", self.name, self.topic_id))
    }
}

/// Why a catalogue change was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{0}' does not exist")]
    NotFound(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partition count {0}: must be within 1..={TOPIC_PARTITIONS_MAX}")]
    InvalidPartitions(u32),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("metadata storage failed: {0}")]
    Storage(String),
}

/// Why the catalogue could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("opening the metadata log: {0}")]
    Open(String),
    #[error("metadata log is corrupt at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("closing the metadata log: {0}")]
    Close(String),
}

/// Checks a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`, not starting `__`
/// (reserved for internal topics).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 bytes");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not names");
    }
    if name.starts_with("__") {
        return invalid("names starting with '__' are reserved");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn stored(config: &TopicConfig) -> Vec<StoredEntry> {
    config
        .overrides()
        .into_iter()
        .map(|(key, value)| StoredEntry { key, value })
        .collect()
}

fn config_from(entries: &[StoredEntry]) -> Result<TopicConfig, ConfigError> {
    TopicConfig::from_entries(entries.iter().map(|e| (e.key.as_str(), e.value.as_str())))
}

/// The topic catalogue. Owned by the controller shard.
pub struct MetadataStore {
    log: PartitionLog,
    clock: crate::clock::ClockRef,
    topics: BTreeMap<String, TopicSpec>,
    next_topic_id: u64,
    /// Producer ids below this are reserved in the log (durably).
    producer_ids_reserved: u64,
    /// The next producer id to hand out (below `producer_ids_reserved`, or a new block is
    /// reserved first).
    next_producer_id: u64,
}

impl MetadataStore {
    /// Opens (replaying) the catalogue kept in `<data_dir>/__metadata`.
    pub async fn open(data_dir: &Path, shard: &LogShard) -> Result<MetadataStore, MetadataError> {
        let config = LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            retention_ms: None,
            flush: FlushPolicy::EveryBatch,
            preallocate_bytes: 1024 * 1024,
            ..LogConfig::default()
        };
        let log = shard
            .open_partition(&data_dir.join("__metadata"), config)
            .await
            .map_err(|e| MetadataError::Open(e.to_string()))?;
        let mut store = MetadataStore {
            log,
            clock: shard.clock().clone(),
            topics: BTreeMap::new(),
            next_topic_id: 1,
            producer_ids_reserved: 0,
            next_producer_id: 0,
        };
        store.replay().await?;
        // Ids reserved before a restart may have been handed out: start past them.
        store.next_producer_id = store.producer_ids_reserved;
        Ok(store)
    }

    async fn replay(&mut self) -> Result<(), MetadataError> {
        let mut offset = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        let mut scratch = Vec::new();
        while offset < end {
            let corrupt = |offset, reason: String| MetadataError::Corrupt { offset, reason };
            let read = self
                .log
                .read(offset, crate::constants::LOG_REPLAY_READ_BYTES, u64::MAX)
                .await
                .map_err(|e| corrupt(offset, e.to_string()))?;
            if read.is_empty() {
                return Err(corrupt(
                    offset,
                    "no batch readable below the log end".into(),
                ));
            }
            for chunk in &read.chunks {
                for item in BatchIter::new(chunk) {
                    let (_, batch) = item.map_err(|e| corrupt(offset, e.to_string()))?;
                    let batch_records =
                        records(batch, &mut scratch).map_err(|e| corrupt(offset, e.to_string()))?;
                    for record in batch_records.iter() {
                        let event =
                            rkyv::from_bytes::<MetadataEvent, rkyv::rancor::Error>(record.value)
                                .map_err(|e| corrupt(record.offset, e.to_string()))?;
                        self.apply(event)
                            .map_err(|e| corrupt(record.offset, e.to_string()))?;
                    }
                }
            }
            offset = read.next_offset;
        }
        Ok(())
    }

    /// Applies an event to the in-memory catalogue (replay and live changes alike).
    fn apply(&mut self, event: MetadataEvent) -> Result<(), TopicError> {
        match event {
            MetadataEvent::TopicCreated {
                name,
                topic_id,
                partitions,
                config,
                created_ms,
            } => {
                let config = config_from(&config)?;
                self.next_topic_id = self.next_topic_id.max(topic_id + 1);
                let spec = TopicSpec {
                    name: name.clone(),
                    topic_id,
                    partitions,
                    config,
                    created_ms,
                };
                self.topics.insert(name, spec);
            }
            MetadataEvent::TopicDeleted { name, topic_id } => {
                if self
                    .topics
                    .get(&name)
                    .is_some_and(|t| t.topic_id == topic_id)
                {
                    self.topics.remove(&name);
                }
            }
            MetadataEvent::TopicConfigReplaced {
                name,
                topic_id,
                config,
            } => {
                let config = config_from(&config)?;
                if let Some(topic) = self
                    .topics
                    .get_mut(&name)
                    .filter(|t| t.topic_id == topic_id)
                {
                    topic.config = config;
                }
            }
            MetadataEvent::ProducerIdsReserved { next } => {
                self.producer_ids_reserved = self.producer_ids_reserved.max(next);
            }
        }
        Ok(())
    }

    /// Appends an event and waits until it is durable, then applies it.
    async fn commit(&mut self, event: MetadataEvent) -> Result<(), TopicError> {
        let storage = |e: String| TopicError::Storage(e);
        let value =
            rkyv::to_bytes::<rkyv::rancor::Error>(&event).map_err(|e| storage(e.to_string()))?;
        let mut builder = BatchBuilder::new(Codec::None);
        builder
            .push(self.clock.wall_ms(), None, &value, &[])
            .map_err(|e| storage(e.to_string()))?;
        let batch = validate(builder.finish().map_err(|e| storage(e.to_string()))?)
            .map_err(|e| storage(e.to_string()))?;
        let info = self
            .log
            .append(batch, 0)
            .await
            .map_err(|e| storage(e.to_string()))?;
        self.log
            .wait_durable(info.last_offset)
            .await
            .map_err(|e| storage(e.to_string()))?;
        self.apply(event)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicSpec> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.get(name)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Checks a creation without making it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: u32,
        entries: &[(String, String)],
    ) -> Result<TopicConfig, TopicError> {
        validate_topic_name(name)?;
        if partitions == 0 || partitions > TOPIC_PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let config =
            TopicConfig::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        if self.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.into()));
        }
        Ok(config)
    }

    /// Creates a topic durably and returns it.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        entries: &[(String, String)],
    ) -> Result<TopicSpec, TopicError> {
        let config = self.check_create(name, partitions, entries)?;
        let event = MetadataEvent::TopicCreated {
            name: name.into(),
            topic_id: self.next_topic_id,
            partitions,
            config: stored(&config),
            created_ms: self.clock.wall_ms(),
        };
        self.commit(event).await?;
        Ok(self.topics[name].clone())
    }

    /// Deletes a topic durably and returns what it was (its data is the caller's to remove).
    pub async fn delete_topic(&mut self, name: &str) -> Result<TopicSpec, TopicError> {
        let topic = self
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.into()))?;
        self.commit(MetadataEvent::TopicDeleted {
            name: name.into(),
            topic_id: topic.topic_id,
        })
        .await?;
        Ok(topic)
    }

    /// Sets and resets configuration entries of a topic durably; all or nothing.
    pub async fn alter_config(
        &mut self,
        name: &str,
        set: &[(String, String)],
        reset: &[String],
        validate_only: bool,
    ) -> Result<TopicSpec, TopicError> {
        let topic = self
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.into()))?;
        let mut config = topic.config.clone();
        for (key, value) in set {
            config.set(key, value)?;
        }
        for key in reset {
            config.reset(key)?;
        }
        if validate_only {
            return Ok(TopicSpec { config, ..topic });
        }
        let event = MetadataEvent::TopicConfigReplaced {
            name: name.into(),
            topic_id: topic.topic_id,
            config: stored(&config),
        };
        self.commit(event).await?;
        Ok(self.topics[name].clone())
    }

    /// A producer id never handed out before, on this catalogue's whole history: ids are
    /// reserved durably in blocks of `PRODUCER_ID_BLOCK`, so a restart skips the rest of a
    /// block rather than repeat an id.
    pub async fn next_producer_id(&mut self) -> Result<i64, TopicError> {
        if self.next_producer_id >= self.producer_ids_reserved {
            let next = self.next_producer_id + crate::constants::PRODUCER_ID_BLOCK;
            self.commit(MetadataEvent::ProducerIdsReserved { next })
                .await?;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        i64::try_from(id).map_err(|_| TopicError::Storage("producer ids exhausted".into()))
    }

    pub async fn close(&self) -> Result<(), MetadataError> {
        self.log
            .close()
            .await
            .map_err(|e| MetadataError::Close(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::ShardLogConfig;

    fn run<F, Fut>(body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(body)
            .unwrap()
            .join()
            .unwrap();
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topics_and_their_configs_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let shard = LogShard::new(ShardLogConfig::default());
            let mut store = MetadataStore::open(&path, &shard).await.unwrap();
            let orders = store
                .create_topic("orders", 8, &entries(&[("retention.ms", "60000")]))
                .await
                .unwrap();
            store.create_topic("gone", 1, &[]).await.unwrap();
            store.create_topic("payments", 3, &[]).await.unwrap();
            store.delete_topic("gone").await.unwrap();
            store
                .alter_config(
                    "payments",
                    &entries(&[("flush.mode", "every-batch")]),
                    &[],
                    false,
                )
                .await
                .unwrap();
            assert!(matches!(
                store.create_topic("orders", 2, &[]).await,
                Err(TopicError::AlreadyExists(_))
            ));
            store.close().await.unwrap();

            let shard = LogShard::new(ShardLogConfig::default());
            let mut store = MetadataStore::open(&path, &shard).await.unwrap();
            let names: Vec<_> = store.topics().map(|t| t.name.clone()).collect();
            assert_eq!(names, ["orders", "payments"]);
            assert_eq!(store.topic("orders").unwrap(), &orders);
            assert_eq!(
                store
                    .topic("payments")
                    .unwrap()
                    .config
                    .get("flush.mode")
                    .unwrap(),
                "every-batch"
            );
            // A re-created topic gets a new id (new directories).
            let again = store.create_topic("gone", 1, &[]).await.unwrap();
            assert!(again.topic_id > orders.topic_id);
        });
    }

    #[test]
    fn bad_topic_requests_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let shard = LogShard::new(ShardLogConfig::default());
            let mut store = MetadataStore::open(&path, &shard).await.unwrap();
            for name in [
                "",
                ".",
                "..",
                "__internal",
                "has space",
                "slash/name",
                &"x".repeat(250),
            ] {
                assert!(
                    matches!(
                        store.create_topic(name, 1, &[]).await,
                        Err(TopicError::InvalidName { .. })
                    ),
                    "{name:?}"
                );
            }
            assert!(matches!(
                store.create_topic("t", 0, &[]).await,
                Err(TopicError::InvalidPartitions(0))
            ));
            assert!(matches!(
                store.create_topic("t", TOPIC_PARTITIONS_MAX + 1, &[]).await,
                Err(TopicError::InvalidPartitions(_))
            ));
            assert!(matches!(
                store
                    .create_topic("t", 1, &entries(&[("bogus", "1")]))
                    .await,
                Err(TopicError::Config(_))
            ));
            assert!(matches!(
                store.delete_topic("t").await,
                Err(TopicError::NotFound(_))
            ));
            assert!(store.is_empty());
            store.create_topic("t", 1, &[]).await.unwrap();
            let refused = store
                .alter_config(
                    "t",
                    &entries(&[("segment.ms", "1"), ("segment.bytes", "5")]),
                    &[],
                    false,
                )
                .await;
            assert!(refused.is_err());
            assert_eq!(
                store.topic("t").unwrap().config,
                TopicConfig::default(),
                "all or nothing"
            );
        });
    }

    #[test]
    fn ten_thousand_topics_replay_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let shard = LogShard::new(ShardLogConfig::default());
            let mut store = MetadataStore::open(&path, &shard).await.unwrap();
            for i in 0..10_000 {
                store
                    .create_topic(&format!("topic-{i:05}"), 1, &[])
                    .await
                    .unwrap();
            }
            store.close().await.unwrap();
            let started = std::time::Instant::now();
            let store = MetadataStore::open(&path, &LogShard::new(ShardLogConfig::default()))
                .await
                .unwrap();
            assert_eq!(store.len(), 10_000);
            eprintln!("replayed 10,000 topics in {:?}", started.elapsed());
        });
    }
}
