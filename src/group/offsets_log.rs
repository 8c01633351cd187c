//! One partition of the offsets log: commits appended as record batches, replayed into an
//! `OffsetTable` on open, and kept short by snapshots.
//!
//! A snapshot appends every live entry again at the tail (so the tail alone holds the
//! whole table), waits until it is durable, and then deletes every segment wholly below
//! where it began. Replay on open therefore reads at most one segment from before the last
//! snapshot, the snapshot itself and the commits since: restart time follows the number of
//! live entries, not the history of commits. Snapshots and commits exclude each other (a
//! commit in flight while a snapshot starts could otherwise be missed by the snapshot and
//! then deleted with its segment).

use std::cell::{Cell, RefCell};
use std::path::Path;

use crate::constants::{OFFSETS_RECORDS_PER_BATCH_MAX, OFFSETS_SNAPSHOT_RECORDS_MIN};
use crate::log::{LogConfig, LogShard, PartitionLog};
use crate::record::{validate, BatchBuilder, BatchIter, Codec};

use super::offsets::{OffsetRecord, OffsetTable};
use super::request::OffsetLogError;

/// Owned by the coordinator's shard.
pub struct OffsetLog {
    log: PartitionLog,
    table: RefCell<OffsetTable>,
    /// Commits hold it shared; a snapshot holds it alone.
    gate: glommio::sync::RwLock<()>,
    records_since_snapshot: Cell<u64>,
    snapshot_running: Cell<bool>,
}

/// What replay found, for the log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayStats {
    pub records: u64,
    pub skipped: u64,
    pub entries: usize,
}

impl OffsetLog {
    /// Takes an open partition log (the shard leads it) and replays it into the table.
    pub async fn adopt(log: PartitionLog) -> Result<(OffsetLog, ReplayStats), OffsetLogError> {
        let mut table = OffsetTable::default();
        let stats = replay(&log, &mut table).await?;
        let offsets = OffsetLog {
            log,
            table: RefCell::new(table),
            gate: glommio::sync::RwLock::new(()),
            records_since_snapshot: Cell::new(stats.records),
            snapshot_running: Cell::new(false),
        };
        Ok((offsets, stats))
    }

    /// Opens (recovers) the partition and replays it into the table.
    pub async fn open(
        storage: &LogShard,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(OffsetLog, ReplayStats), OffsetLogError> {
        let log = storage
            .open_partition(dir, config)
            .await
            .map_err(|e| OffsetLogError::Open {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        OffsetLog::adopt(log).await
    }

    pub fn table(&self) -> std::cell::Ref<'_, OffsetTable> {
        self.table.borrow()
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    /// Appends the records, waits until they are durable, then applies them. On error
    /// nothing is applied (what reached the log may still be replayed after a restart: a
    /// commit that failed may have happened, as with any storage).
    pub async fn commit(&self, records: Vec<OffsetRecord>) -> Result<(), OffsetLogError> {
        if records.is_empty() {
            return Ok(());
        }
        let _shared = self.gate.read().await.map_err(|_| self.closed())?;
        let positions = append_records(&self.log, &records).await?;
        let count = positions.len() as u64;
        let mut table = self.table.borrow_mut();
        for (record, position) in records.into_iter().zip(positions) {
            table.apply(record, position);
        }
        self.records_since_snapshot
            .set(self.records_since_snapshot.get() + count);
        Ok(())
    }

    /// Whether enough has been appended since the last snapshot to write a new one.
    pub fn snapshot_due(&self) -> bool {
        let live = self.table.borrow().len() as u64;
        let threshold = OFFSETS_SNAPSHOT_RECORDS_MIN.max(live.saturating_mul(2));
        !self.snapshot_running.get() && self.records_since_snapshot.get() >= threshold
    }

    /// Writes every live entry at the tail and drops the segments wholly before it.
    pub async fn snapshot(&self) -> Result<(), OffsetLogError> {
        if self.snapshot_running.replace(true) {
            return Ok(());
        }
        let result = self.snapshot_exclusive().await;
        self.snapshot_running.set(false);
        result
    }

    fn closed(&self) -> OffsetLogError {
        OffsetLogError::Closed {
            dir: self.log.dir().to_path_buf(),
        }
    }

    async fn snapshot_exclusive(&self) -> Result<(), OffsetLogError> {
        let _alone = self.gate.write().await.map_err(|_| self.closed())?;
        let start = self.log.log_end_offset();
        let records = self.table.borrow().records();
        let count = records.len();
        let positions = append_records(&self.log, &records).await?;
        {
            let mut table = self.table.borrow_mut();
            for (record, position) in records.into_iter().zip(positions) {
                table.apply(record, position);
            }
        }
        self.records_since_snapshot.set(0);
        let deleted =
            self.log
                .delete_segments_below(start)
                .await
                .map_err(|e| OffsetLogError::Compact {
                    dir: self.log.dir().to_path_buf(),
                    offset: start,
                    reason: e.to_string(),
                })?;
        tracing::info!(
            dir = %self.log.dir().display(),
            entries = count,
            snapshot_offset = start,
            segments_deleted = deleted.segments_deleted,
            "offsets snapshot written"
        );
        Ok(())
    }

    pub async fn close(&self) -> Result<(), OffsetLogError> {
        self.log.close().await.map_err(|e| OffsetLogError::Close {
            dir: self.log.dir().to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Appends records in batches and waits until the last is durable; returns each record's
/// log offset.
async fn append_records(
    log: &PartitionLog,
    records: &[OffsetRecord],
) -> Result<Vec<u64>, OffsetLogError> {
    let dir = || log.dir().to_path_buf();
    let build = |e: &dyn std::fmt::Display| OffsetLogError::Build {
        dir: dir(),
        reason: e.to_string(),
    };
    let now = log.clock().wall_ms();
    let mut positions = Vec::with_capacity(records.len());
    let mut last = None;
    for chunk in records.chunks(OFFSETS_RECORDS_PER_BATCH_MAX) {
        let mut builder = BatchBuilder::new(Codec::None);
        for record in chunk {
            builder
                .push(now, Some(record.group.as_bytes()), &record.encode(), &[])
                .map_err(|e| build(&e))?;
        }
        let bytes = builder.finish().map_err(|e| build(&e))?;
        let batch = validate(bytes).map_err(|e| build(&e))?;
        let info = log
            // Stamped with this replica's leader epoch (0 outside replication); refused
            // once it no longer leads.
            .append(batch, log.appending_epoch().unwrap_or(0))
            .await
            .map_err(|e| OffsetLogError::Append {
                dir: dir(),
                reason: e.to_string(),
            })?;
        positions.extend(info.base_offset..=info.last_offset);
        last = Some(info.last_offset);
    }
    if let Some(last) = last {
        log.wait_high_watermark(last)
            .await
            .map_err(|e| OffsetLogError::Sync {
                dir: dir(),
                reason: e.to_string(),
            })?;
    }
    assert_eq!(positions.len(), records.len(), "one position per record");
    Ok(positions)
}

fn replay_error(log: &PartitionLog, offset: u64, error: &dyn std::fmt::Display) -> OffsetLogError {
    OffsetLogError::Replay {
        dir: log.dir().to_path_buf(),
        offset,
        reason: error.to_string(),
    }
}

/// Reads the whole log into `table`. A record that does not decode is skipped with a
/// warning (the batch around it passed its CRC, so this is a bug or a future format, not a
/// torn write).
async fn replay(
    log: &PartitionLog,
    table: &mut OffsetTable,
) -> Result<ReplayStats, OffsetLogError> {
    let mut stats = ReplayStats::default();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut scratch = Vec::new();
    while offset < end {
        let read = log
            .read(offset, crate::constants::LOG_REPLAY_READ_BYTES, end)
            .await
            .map_err(|e| replay_error(log, offset, &e))?;
        if read.is_empty() {
            break;
        }
        for chunk in &read.chunks {
            for item in BatchIter::new(chunk) {
                let (_, batch) = item.map_err(|e| replay_error(log, offset, &e))?;
                let records = crate::record::reader::records(batch, &mut scratch)
                    .map_err(|e| replay_error(log, offset, &e))?;
                for record in records.iter().filter(|r| r.offset >= offset) {
                    stats.records += 1;
                    match OffsetRecord::decode(record.value) {
                        Ok(decoded) => table.apply(decoded, record.offset),
                        Err(error) => {
                            stats.skipped += 1;
                            tracing::warn!(offset = record.offset, %error, "skipping an offset record");
                        }
                    }
                }
            }
        }
        assert!(read.next_offset > offset, "replay makes progress");
        offset = read.next_offset;
    }
    stats.entries = table.len();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FlushPolicy, ShardLogConfig};
    use glommio::{LocalExecutorBuilder, Placement};

    fn run<Fut>(body: impl FnOnce() -> Fut + Send + 'static)
    where
        Fut: std::future::Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(body)
            .expect("executor starts")
            .join()
            .expect("test body completes");
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: crate::constants::SEGMENT_BYTES_MIN,
            segment_age_ms: 3_600_000,
            retention_ms: None,
            retention_bytes: None,
            flush: FlushPolicy::EveryBatch,
            preallocate_bytes: 64 * 1024,
        }
    }

    fn record(group: usize, partition: u32, offset: u64) -> OffsetRecord {
        OffsetRecord {
            group: format!("group-{group}"),
            topic: "orders".into(),
            partition,
            offset,
            metadata: String::new(),
            commit_time_ms: 1,
        }
    }

    async fn open(dir: &Path) -> OffsetLog {
        let shard = LogShard::new(ShardLogConfig::default());
        OffsetLog::open(&shard, dir, config())
            .await
            .expect("opens")
            .0
    }

    #[test]
    fn commits_replay_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = open(&path).await;
            log.commit(vec![record(1, 0, 10), record(1, 1, 20)])
                .await
                .unwrap();
            log.commit(vec![record(1, 0, 15), record(2, 0, 5)])
                .await
                .unwrap();
            log.close().await.unwrap();
            let log = open(&path).await;
            let table = log.table();
            assert_eq!(
                table.get("group-1", "orders", 0).map(|c| c.offset),
                Some(15)
            );
            assert_eq!(
                table.get("group-1", "orders", 1).map(|c| c.offset),
                Some(20)
            );
            assert_eq!(table.get("group-2", "orders", 0).map(|c| c.offset), Some(5));
            assert_eq!(table.len(), 3);
        });
    }

    #[test]
    fn snapshots_keep_the_log_short_and_the_table_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = open(&path).await;
            let mut snapshots = 0;
            let mut expected = std::collections::BTreeMap::new();
            // 3 groups x 4 partitions committed over and over: 12 live entries.
            for round in 0..(OFFSETS_SNAPSHOT_RECORDS_MIN / 12 + 1) * 3 {
                let records: Vec<OffsetRecord> = (0..3)
                    .flat_map(|group| (0..4).map(move |p| record(group, p, round * 10 + p as u64)))
                    .collect();
                for r in &records {
                    expected.insert((r.group.clone(), r.partition), r.offset);
                }
                log.commit(records).await.unwrap();
                if log.snapshot_due() {
                    log.snapshot().await.unwrap();
                    snapshots += 1;
                }
            }
            assert!(snapshots >= 2, "{snapshots} snapshots");
            let segments = log.log().segment_count();
            let bytes = log.log().size_bytes();
            log.close().await.unwrap();
            // Without snapshots ~3 x 20,000 records (~4 MB) would stay; with them, at most
            // the records since the last snapshot and one segment before it.
            assert!(segments <= 40, "{segments} segments");
            assert!(bytes < 3 * 1024 * 1024, "{bytes} bytes");
            let log = open(&path).await;
            assert!(
                log.log().log_start_offset() > 0,
                "old segments were deleted"
            );
            let table = log.table();
            assert_eq!(table.len(), 12);
            for ((group, partition), offset) in expected {
                assert_eq!(
                    table.get(&group, "orders", partition).map(|c| c.offset),
                    Some(offset)
                );
            }
        });
    }
}
