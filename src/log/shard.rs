//! What all partition logs of one shard share: the recent-batch cache, the open-file budget
//! and the fault plan. One `LogShard` per glommio executor; it is `!Send` by design.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::cache::{BatchCache, PartitionId};
use super::error::LogIoError;
use super::files::OpenFiles;
use super::io::FaultPlan;
use super::{LogConfig, OpenError, PartitionLog};
use crate::clock::ClockRef;
use crate::constants::{BATCH_CACHE_BYTES_DEFAULT, OPEN_SEGMENT_FILES_DEFAULT};

/// Shard-wide storage settings.
#[derive(Debug, Clone)]
pub struct ShardLogConfig {
    /// Byte budget of the recent-batch cache.
    pub cache_bytes: usize,
    /// Segment files kept open at once.
    pub open_files_max: usize,
    /// Faults to inject (tests only).
    pub faults: Option<Rc<FaultPlan>>,
    /// The glommio task queue writers (flushes) run in; `None`: the appender's own queue.
    pub flush_queue: Option<glommio::TaskQueueHandle>,
    /// The clock append times, segment ages and retention read.
    pub clock: ClockRef,
    /// Whether the shard's partitions flush in shard-wide rounds (`super::rounds`); else
    /// each flushes on its own.
    pub shard_flush_rounds: bool,
    /// The shard journal (`super::journal`), if on: partitions whose policy syncs commit
    /// their batches there and write their segments later. Replay it before opening.
    pub journal: Option<super::journal::JournalConfig>,
}

impl Default for ShardLogConfig {
    fn default() -> Self {
        ShardLogConfig {
            cache_bytes: BATCH_CACHE_BYTES_DEFAULT,
            open_files_max: OPEN_SEGMENT_FILES_DEFAULT,
            faults: None,
            flush_queue: None,
            clock: crate::clock::system(),
            shard_flush_rounds: true,
            journal: None,
        }
    }
}

/// What a shard's logs measure of their own IO and reads (recorded shard-locally).
#[derive(Debug)]
pub struct LogShardMetrics {
    /// How long each flush round's writes took (rounds that wrote).
    pub write_latency: crate::metrics::histogram::Histogram,
    /// How long each fdatasync took.
    pub sync_latency: crate::metrics::histogram::Histogram,
    /// Bytes written by each flush round that wrote.
    pub flush_round_bytes: crate::metrics::histogram::Histogram,
    /// Reads served from memory (batches not yet written, or the recent-batch cache).
    pub cache_hits: Cell<u64>,
    /// Reads that went to a segment file.
    pub cache_misses: Cell<u64>,
}

impl Default for LogShardMetrics {
    fn default() -> Self {
        LogShardMetrics {
            write_latency: crate::metrics::histogram::Histogram::latency(),
            sync_latency: crate::metrics::histogram::Histogram::latency(),
            flush_round_bytes: crate::metrics::histogram::Histogram::sizes(),
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
        }
    }
}

/// `LogShardMetrics` at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogShardSnapshot {
    pub write_latency: crate::metrics::histogram::HistogramSnapshot,
    pub sync_latency: crate::metrics::histogram::HistogramSnapshot,
    pub flush_round_bytes: crate::metrics::histogram::HistogramSnapshot,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Shard-wide flush rounds started, and the partition flushes they held in all.
    pub flush_rounds: u64,
    pub flush_round_members: u64,
    /// The shard journal's counts (all zero without one).
    pub journal: super::journal::JournalStats,
}

pub(crate) struct ShardResources {
    pub metrics: LogShardMetrics,
    /// Devices (st_dev) on which glommio's polled-IO probe has been settled.
    pub probed_devices: RefCell<std::collections::HashSet<u64>>,
    pub cache: RefCell<BatchCache>,
    pub files: RefCell<OpenFiles>,
    pub faults: Option<Rc<FaultPlan>>,
    pub flush_queue: Option<glommio::TaskQueueHandle>,
    pub clock: ClockRef,
    pub rounds: Rc<super::rounds::FlushRounds>,
    pub journal: Option<Rc<super::journal::Journal>>,
    next_partition_id: Cell<PartitionId>,
}

/// Starts a task in `queue` (the flush queue), or in the current one when there is none.
fn spawn_in(
    queue: Option<glommio::TaskQueueHandle>,
    task: impl std::future::Future<Output = ()> + 'static,
) {
    match queue {
        Some(queue) => match glommio::spawn_local_into(task, queue) {
            Ok(task) => {
                task.detach();
            }
            Err(error) => panic!("the flush task queue is gone: {error}"),
        },
        None => {
            glommio::spawn_local(task).detach();
        }
    }
}

impl ShardResources {
    /// Starts a partition's writer task in the flush task queue.
    pub fn spawn_flusher(&self, flusher: impl std::future::Future<Output = ()> + 'static) {
        spawn_in(self.flush_queue, flusher);
    }

    pub fn allocate_partition_id(&self) -> PartitionId {
        let id = self.next_partition_id.get();
        self.next_partition_id.set(id + 1);
        id
    }
}

/// A shard's storage: opens partition logs that share its cache and file budget.
#[derive(Clone)]
pub struct LogShard {
    resources: Rc<ShardResources>,
}

impl LogShard {
    pub fn new(config: ShardLogConfig) -> Self {
        let flush_queue = config.flush_queue;
        let journal = config.journal.map(|journal| {
            Rc::new(super::journal::Journal::new(
                journal,
                config.faults.clone(),
                Box::new(move |task| spawn_in(flush_queue, task)),
            ))
        });
        LogShard {
            resources: Rc::new(ShardResources {
                metrics: LogShardMetrics::default(),
                probed_devices: RefCell::new(Default::default()),
                cache: RefCell::new(BatchCache::new(config.cache_bytes)),
                files: RefCell::new(OpenFiles::new(config.open_files_max.max(1))),
                faults: config.faults,
                flush_queue: config.flush_queue,
                clock: config.clock,
                rounds: Rc::new(super::rounds::FlushRounds::new(config.shard_flush_rounds)),
                journal,
                next_partition_id: Cell::new(0),
            }),
        }
    }

    /// Opens (recovering) or creates the partition log in `dir`.
    pub async fn open_partition(
        &self,
        dir: &Path,
        config: LogConfig,
    ) -> Result<PartitionLog, OpenError> {
        PartitionLog::open(self.resources.clone(), dir, config).await
    }

    /// The clock this shard's logs read.
    pub fn clock(&self) -> &ClockRef {
        &self.resources.clock
    }

    /// Removes a directory tree (a deleted topic's partition) off the shard's thread.
    pub async fn remove_dir_all(&self, path: PathBuf) -> Result<(), LogIoError> {
        super::io::remove_dir_all(path, self.resources.faults.as_deref()).await
    }

    /// Segment files open right now (held by the shard's table or by IO in progress).
    pub fn open_files(&self) -> usize {
        self.resources.files.borrow().open_count()
    }

    /// The shard's journal, for tests that drive it directly.
    #[cfg(test)]
    pub(super) fn journal(&self) -> Option<Rc<super::journal::Journal>> {
        self.resources.journal.clone()
    }

    /// The shard's IO and read measurements so far.
    pub fn metrics(&self) -> LogShardSnapshot {
        let metrics = &self.resources.metrics;
        let (flush_rounds, flush_round_members) = self.resources.rounds.counts();
        LogShardSnapshot {
            flush_rounds,
            flush_round_members,
            journal: self
                .resources
                .journal
                .as_ref()
                .map(|journal| journal.stats())
                .unwrap_or_default(),
            write_latency: metrics.write_latency.snapshot(),
            sync_latency: metrics.sync_latency.snapshot(),
            flush_round_bytes: metrics.flush_round_bytes.snapshot(),
            cache_hits: metrics.cache_hits.get(),
            cache_misses: metrics.cache_misses.get(),
        }
    }

    /// Bytes held by the recent-batch cache right now.
    pub fn cache_bytes(&self) -> usize {
        self.resources.cache.borrow().used_bytes()
    }
}
