//! A shard's open partition logs: opened (recovered) at start for every partition the shard
//! owns, opened on first use for topics created later, closed and removed when a topic is
//! deleted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use crate::cluster::TopicSpec;
use crate::log::{FlushPolicy, LogShard, OpenError, PartitionLog};

/// (topic id, partition).
pub type PartitionKey = (u64, u32);

/// Owned by one shard.
pub struct Partitions {
    data_dir: PathBuf,
    storage: LogShard,
    profile_flush: FlushPolicy,
    preallocate_bytes: u64,
    open: RefCell<HashMap<PartitionKey, PartitionLog>>,
    /// Opens under way, so two requests for a new partition open it once.
    opening: RefCell<HashMap<PartitionKey, Rc<glommio::sync::Semaphore>>>,
}

impl Partitions {
    pub fn new(
        data_dir: PathBuf,
        storage: LogShard,
        profile_flush: FlushPolicy,
        preallocate_bytes: u64,
    ) -> Self {
        Partitions {
            data_dir,
            storage,
            profile_flush,
            preallocate_bytes,
            open: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashMap::new()),
        }
    }

    pub fn storage(&self) -> &LogShard {
        &self.storage
    }

    pub fn len(&self) -> usize {
        self.open.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.borrow().is_empty()
    }

    /// The open log of a partition, opening (recovering) it if needed.
    pub async fn get(&self, topic: &TopicSpec, partition: u32) -> Result<PartitionLog, OpenError> {
        let key = (topic.topic_id, partition);
        if let Some(log) = self.open.borrow().get(&key) {
            return Ok(log.clone());
        }
        let gate = self
            .opening
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1)))
            .clone();
        let _permit = gate
            .acquire_permit(1)
            .await
            .expect("open gate never closed");
        if let Some(log) = self.open.borrow().get(&key) {
            return Ok(log.clone());
        }
        let config = topic
            .config
            .log_config(self.profile_flush, self.preallocate_bytes);
        let dir = topic.partition_dir(&self.data_dir, partition);
        let log = self.storage.open_partition(&dir, config).await?;
        self.open.borrow_mut().insert(key, log.clone());
        self.opening.borrow_mut().remove(&key);
        Ok(log)
    }

    /// Gives every open partition of `topic` the topic's current configuration.
    pub fn reconfigure_topic(&self, topic: &TopicSpec) {
        let config = topic
            .config
            .log_config(self.profile_flush, self.preallocate_bytes);
        let logs: Vec<PartitionLog> = self
            .open
            .borrow()
            .iter()
            .filter(|((topic_id, _), _)| *topic_id == topic.topic_id)
            .map(|(_, log)| log.clone())
            .collect();
        for log in logs {
            if let Err(error) = log.reconfigure(config.clone()) {
                // The controller checked the config; a refusal here is a bug, not input.
                tracing::error!(dir = %log.dir().display(), %error, "topic config not applied");
            }
        }
    }

    /// Every open log (for shutdown, retention, metrics).
    pub fn all(&self) -> Vec<(PartitionKey, PartitionLog)> {
        self.open
            .borrow()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Closes every open partition of a deleted topic and removes its directories.
    pub async fn drop_topic(&self, topic: &TopicSpec) {
        let logs: Vec<PartitionLog> = {
            let mut open = self.open.borrow_mut();
            let keys: Vec<PartitionKey> = open
                .keys()
                .filter(|k| k.0 == topic.topic_id)
                .copied()
                .collect();
            keys.iter().filter_map(|k| open.remove(k)).collect()
        };
        for log in logs {
            if let Err(error) = log.close().await {
                tracing::warn!(dir = %log.dir().display(), %error, "closing a deleted topic's partition");
            }
            if let Err(error) = self.storage.remove_dir_all(log.dir().to_path_buf()).await {
                tracing::warn!(dir = %log.dir().display(), %error, "removing a deleted topic's partition");
            }
        }
    }

    /// Closes a partition this broker no longer holds (its replicas moved away) and
    /// removes its directory.
    pub async fn drop_partition(&self, key: PartitionKey) {
        let Some(log) = self.open.borrow_mut().remove(&key) else {
            return;
        };
        if let Err(error) = log.close().await {
            tracing::warn!(dir = %log.dir().display(), %error, "closing a moved-away replica");
        }
        if let Err(error) = self.storage.remove_dir_all(log.dir().to_path_buf()).await {
            tracing::warn!(dir = %log.dir().display(), %error, "removing a moved-away replica");
        }
        tracing::info!(dir = %log.dir().display(), "replica moved away: removed");
    }

    /// At start, before any partition is opened: removes the directories of partitions
    /// this broker no longer holds (moved away, or their topic deleted, while it was down).
    /// `mine` says whether this shard owns a (topic, partition); a topic directory whose
    /// topic is gone is removed whole by the shard that owns its partition 0. Synchronous on
    /// purpose: nothing can open a directory between the check and its removal.
    pub fn remove_strays(
        &self,
        catalog: &crate::cluster::Catalog,
        broker: u32,
        mine: impl Fn(&str, u32) -> bool,
    ) {
        let topics = self.data_dir.join("topics");
        let Ok(entries) = std::fs::read_dir(&topics) else {
            return;
        };
        for entry in entries.flatten() {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let Some((name, id)) = dir_name.rsplit_once('.') else {
                continue;
            };
            let Ok(topic_id) = id.parse::<u64>() else {
                continue;
            };
            let topic = catalog
                .topic(name)
                .filter(|topic| topic.topic_id == topic_id);
            let Some(topic) = topic else {
                if mine(name, 0) {
                    remove_stray(&entry.path(), "its topic was deleted");
                }
                continue;
            };
            let Ok(partitions) = std::fs::read_dir(entry.path()) else {
                continue;
            };
            for partition_entry in partitions.flatten() {
                let Ok(partition) = partition_entry.file_name().to_string_lossy().parse::<u32>()
                else {
                    continue;
                };
                let held = partition < topic.partitions
                    && topic
                        .partition(partition)
                        .is_none_or(|p| p.replicas.contains(&broker));
                let key = (topic_id, partition);
                let open = self.open.borrow().contains_key(&key)
                    || self.opening.borrow().contains_key(&key);
                if !held && !open && mine(name, partition) {
                    remove_stray(&partition_entry.path(), "its replicas moved away");
                }
            }
        }
    }

    /// Flushes and closes every partition (graceful shutdown).
    /// Up to `SHUTDOWN_CLOSE_CONCURRENCY` partitions close at once: their flushes, syncs and
    /// small files overlap instead of queueing one partition behind another.
    pub async fn close_all(&self) -> Result<(), Vec<String>> {
        use futures::StreamExt;
        let logs: Vec<PartitionLog> = self.open.borrow_mut().drain().map(|(_, log)| log).collect();
        let failures: Vec<String> = futures::stream::iter(logs)
            .map(|log| async move {
                log.close()
                    .await
                    .err()
                    .map(|error| format!("{}: {error}", log.dir().display()))
            })
            .buffer_unordered(crate::constants::SHUTDOWN_CLOSE_CONCURRENCY)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

fn remove_stray(dir: &std::path::Path, why: &str) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "removed a replica this broker no longer holds: {why}")
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "could not remove a replica this broker no longer holds")
        }
    }
}
