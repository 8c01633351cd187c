//! Tests of the partition log against real files (O_DIRECT on a temporary directory).

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::segment::{segment_path, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use super::*;
use crate::record::{validate, BatchBuilder, BatchIter, Codec, ValidatedBatch};

/// Runs a test body on an unpinned glommio executor with a small io memory (memlock is 8 MiB).
fn run<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(body)
        .expect("executor starts")
        .join()
        .expect("test body completes");
}

/// A batch of `count` records whose values name their (partition-local) sequence number.
fn batch(first_sequence: u64, count: u64, value_bytes: usize) -> ValidatedBatch {
    batch_at(first_sequence, count, value_bytes, 1_000)
}

fn batch_at(
    first_sequence: u64,
    count: u64,
    value_bytes: usize,
    timestamp_ms: i64,
) -> ValidatedBatch {
    let mut builder = BatchBuilder::new(Codec::None);
    for sequence in first_sequence..first_sequence + count {
        let mut value = format!("value-{sequence}-").into_bytes();
        value.resize(value_bytes.max(value.len()), b'x');
        let key = format!("key-{}", sequence % 7);
        builder
            .push(timestamp_ms, Some(key.as_bytes()), &value, &[])
            .expect("record fits");
    }
    validate(builder.finish().expect("batch builds")).expect("built batches validate")
}

/// Opens (recovering) the partition in `dir` on a fresh shard, so nothing is cached.
async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    LogShard::new(ShardLogConfig::default())
        .open_partition(dir, config)
        .await
        .expect("the partition opens")
}

fn small_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        preallocate_bytes: 64 * 1024,
        flush,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Reads the whole log from `from`, checking every batch, and returns the sequence numbers
/// found in the values, in order, with their offsets.
async fn read_all(log: &PartitionLog, from: u64) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let mut offset = from;
    let mut scratch = Vec::new();
    loop {
        let read = log
            .read(offset, 64 * 1024, u64::MAX)
            .await
            .expect("read succeeds");
        if read.is_empty() {
            break;
        }
        assert!(
            read.next_offset > offset,
            "read made no progress at {offset}"
        );
        for chunk in &read.chunks {
            let mut batches = BatchIter::new(chunk);
            for item in &mut batches {
                let (header, bytes) = item.expect("returned batches are valid");
                let records = crate::record::reader::records(bytes, &mut scratch).expect("records");
                for record in records.iter() {
                    if record.offset < offset {
                        continue;
                    }
                    let text = std::str::from_utf8(record.value).expect("utf8 value");
                    let sequence: u64 = text.split('-').nth(1).unwrap().parse().unwrap();
                    found.push((record.offset, sequence));
                }
                assert!(header.next_offset() <= read.next_offset);
            }
            assert!(!batches.has_partial_tail(), "reads return whole batches");
        }
        offset = read.next_offset;
    }
    found
}

fn assert_dense(found: &[(u64, u64)], first_offset: u64, count: u64) {
    assert_eq!(found.len() as u64, count, "record count");
    for (i, &(offset, sequence)) in found.iter().enumerate() {
        assert_eq!(offset, first_offset + i as u64, "offsets are dense");
        assert_eq!(
            sequence, offset,
            "record at offset {offset} holds sequence {sequence}"
        );
    }
}

async fn append_sequences(
    log: &PartitionLog,
    from: u64,
    batches: u64,
    per_batch: u64,
    value_bytes: usize,
) {
    let mut last = 0;
    for i in 0..batches {
        let info = log
            .append(batch(from + i * per_batch, per_batch, value_bytes), 1)
            .await
            .unwrap();
        assert_eq!(info.base_offset, from + i * per_batch);
        last = info.last_offset;
    }
    log.wait_durable(last).await.expect("durable");
}

#[test]
fn appended_batches_read_back_dense_from_memory_and_disk_under_every_policy() {
    for policy in [
        FlushPolicy::EveryBatch,
        FlushPolicy::Bytes {
            bytes: 32 * 1024,
            max_delay_us: 2_000,
        },
        FlushPolicy::Interval { interval_us: 500 },
        FlushPolicy::Never {
            write_delay_us: 500,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let shard = LogShard::new(ShardLogConfig::default());
            let log = shard
                .open_partition(&path, small_config(policy))
                .await
                .unwrap();
            append_sequences(&log, 0, 300, 5, 300).await;
            assert!(log.segment_count() > 1, "{policy:?}: small segments roll");
            assert_dense(&read_all(&log, 0).await, 0, 1500);
            // A read from the middle starts with the batch holding the offset.
            let middle = read_all(&log, 777).await;
            assert_eq!(middle.first(), Some(&(777, 777)));
            log.close().await.unwrap();

            // A new shard has an empty cache: everything comes from disk.
            let shard = LogShard::new(ShardLogConfig::default());
            let log = shard
                .open_partition(&path, small_config(policy))
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 1500);
            assert_dense(&read_all(&log, 0).await, 0, 1500);
            assert_dense(&read_all(&log, 1234).await, 1234, 266);
        });
    }
}

#[test]
fn concurrent_appends_share_writes_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = LogShard::new(ShardLogConfig::default());
        let log = shard
            .open_partition(&path, small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..200u64)
            .map(|_| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let info = log.append(batch(0, 1, 100), 1).await.unwrap();
                    log.wait_durable(info.last_offset).await.unwrap();
                    info.base_offset
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.push(task.await);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..200).collect::<Vec<_>>());
        let stats = log.io_stats();
        assert!(stats.syncs >= 1);
        assert!(
            stats.syncs < 200,
            "200 concurrent durable appends took {} syncs",
            stats.syncs
        );
        assert_eq!(log.durable_offset(), 200);
    });
}

#[test]
fn reopening_cuts_a_torn_tail_and_keeps_every_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = LogShard::new(ShardLogConfig::default());
        let log = shard
            .open_partition(&path, small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        append_sequences(&log, 0, 10, 3, 200).await;
        let data_bytes = log.size_bytes() as usize;
        log.close().await.unwrap();
        let segment = segment_path(&path, 0, LOG_SUFFIX);
        // The active segment keeps its preallocated space (zeros) after the data.
        let whole = std::fs::read(&segment).unwrap();
        assert!(whole.len() >= data_bytes && whole[data_bytes..].iter().all(|&b| b == 0));
        let whole = &whole[..data_bytes];
        let batch_bytes = whole.len() / 10;

        // Cut the file in the middle of the last batch (a torn write), which the last
        // recovery point before the crash did not yet cover.
        std::fs::write(&segment, &whole[..whole.len() - batch_bytes / 2]).unwrap();
        let point = super::checkpoint::RecoveryPoint {
            segment_base: 0,
            position: (whole.len() - batch_bytes) as u64,
            next_offset: 27,
        };
        std::fs::write(super::checkpoint::path(&path), point.encode()).unwrap();
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        assert_eq!(log.log_end_offset(), 27);
        assert_dense(&read_all(&log, 0).await, 0, 27);
        // Appends continue right after the cut, and survive another reopen.
        append_sequences(&log, 27, 1, 3, 200).await;
        log.close().await.unwrap();
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        assert_dense(&read_all(&log, 0).await, 0, 30);
        log.close().await.unwrap();
    });
}

/// Damages the active segment's data (ten one-record batches, without the preallocated
/// zeros after them) with `damage`, reopens, and returns the recovered end offset. The
/// recovery point is removed first: a crash before the damaged bytes were ever checkpointed.
fn recover_after(damage: impl FnOnce(&Path, &mut Vec<u8>) + Send + 'static) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (sender, receiver) = std::sync::mpsc::channel();
    run(move || async move {
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        append_sequences(&log, 0, 10, 1, 1000).await;
        let data_bytes = log.size_bytes() as usize;
        log.close().await.unwrap();
        let segment = segment_path(&path, 0, LOG_SUFFIX);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.truncate(data_bytes);
        damage(&path, &mut bytes);
        std::fs::write(&segment, &bytes).unwrap();
        std::fs::remove_file(super::checkpoint::path(&path)).unwrap();
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        let found = read_all(&log, 0).await;
        assert_dense(&found, 0, log.log_end_offset());
        sender.send(log.log_end_offset()).unwrap();
    });
    receiver.recv().unwrap()
}

#[test]
fn corruption_in_the_active_segment_cuts_at_the_first_bad_batch() {
    let batch_bytes = |bytes: &Vec<u8>| bytes.len() / 10;
    // A flipped byte in the body of batch 6.
    assert_eq!(
        recover_after(move |_, b| {
            let n = batch_bytes(b);
            b[6 * n + 500] ^= 0x40
        }),
        6
    );
    // A batch whose length lies (points past the file).
    assert_eq!(
        recover_after(move |_, b| {
            let n = batch_bytes(b);
            b[4 * n + 8..4 * n + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        }),
        4
    );
    // A batch whose length lies (shorter than it is).
    assert_eq!(
        recover_after(move |_, b| {
            let n = batch_bytes(b);
            b[3 * n + 8..3 * n + 12].copy_from_slice(&100u32.to_le_bytes());
        }),
        3
    );
    // A batch with a wrong base offset (not following its predecessor).
    assert_eq!(
        recover_after(move |_, b| {
            let n = batch_bytes(b);
            b[8 * n] ^= 1
        }),
        8
    );
    // Garbage appended after the last batch.
    assert_eq!(recover_after(|_, b| b.extend_from_slice(&[0xA5; 3000])), 10);
    // The whole file is garbage.
    assert_eq!(
        recover_after(|_, b| b.iter_mut().for_each(|x| *x = 0x5A)),
        0
    );
    // An empty file.
    assert_eq!(recover_after(|_, b| b.clear()), 0);
}

#[test]
fn garbage_or_missing_indexes_are_rebuilt_and_lookups_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 400, 2, 1000).await;
        let segments = log.segment_count();
        assert!(segments >= 3, "{segments} segments");
        log.close().await.unwrap();
        let first_index = segment_path(&path, 0, OFFSET_INDEX_SUFFIX);
        assert!(first_index.exists(), "closed segments have index files");
        std::fs::write(&first_index, b"garbage that is not an index").unwrap();
        std::fs::remove_file(segment_path(&path, 0, TIME_INDEX_SUFFIX)).unwrap();

        let log = open(&path, config).await;
        assert_eq!(log.segment_count(), segments);
        assert!(
            segment_path(&path, 0, TIME_INDEX_SUFFIX).exists(),
            "index rebuilt on open"
        );
        for start in [0, 1, 99, 100, 401, 799] {
            let found = read_all(&log, start).await;
            assert_eq!(found.first().map(|f| f.0), Some(start));
            assert_dense(&found, start, 800 - start);
        }
    });
}

#[test]
fn a_corrupt_closed_segment_without_indexes_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 200, 4, 500).await;
        log.close().await.unwrap();
        let first = segment_path(&path, 0, LOG_SUFFIX);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[5000] ^= 0xFF;
        std::fs::write(&first, bytes).unwrap();
        std::fs::remove_file(segment_path(&path, 0, OFFSET_INDEX_SUFFIX)).unwrap();
        let error = LogShard::new(ShardLogConfig::default())
            .open_partition(&path, config)
            .await
            .expect_err("a corrupt closed segment is reported");
        let message = error.to_string();
        assert!(
            message.contains("00000000000000000000.log") && message.contains("corrupt"),
            "{message}"
        );
    });
}

#[test]
fn a_corrupt_batch_read_from_disk_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 200, 4, 500).await;
        log.close().await.unwrap();
        let first = segment_path(&path, 0, LOG_SUFFIX);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[3000] ^= 0xFF;
        std::fs::write(&first, bytes).unwrap();
        let log = open(&path, config).await;
        let error = log
            .read(0, 1 << 20, u64::MAX)
            .await
            .err()
            .expect("corruption detected");
        assert!(matches!(error, ReadError::Corrupt { .. }), "{error}");
    });
}

#[test]
fn reads_by_timestamp_find_the_first_batch_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        // Batch i holds offsets [2i, 2i+2) with timestamp 10_000 + 10 i.
        for i in 0..400u64 {
            log.append(batch_at(2 * i, 2, 400, 10_000 + 10 * i as i64), 1)
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() > 1);
        for (timestamp, expected) in [
            (0, Some(0)),
            (10_000, Some(0)),
            (10_001, Some(2)),
            (10_050, Some(10)),
            (13_990, Some(798)),
            (13_991, None),
        ] {
            assert_eq!(
                log.offset_for_timestamp(timestamp).await.unwrap(),
                expected,
                "timestamp {timestamp}"
            );
        }
        log.close().await.unwrap();
        let log = open(&path, small_config(FlushPolicy::EveryBatch)).await;
        assert_eq!(
            log.offset_for_timestamp(12_345).await.unwrap(),
            Some(2 * 235)
        );
        assert_eq!(
            log.offset_for_timestamp(10_000 + 10 * 399).await.unwrap(),
            Some(798)
        );
    });
}

#[test]
fn truncation_removes_the_suffix_durably_and_appends_continue_from_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 300, 5, 300).await;
        let segments = log.segment_count();
        // Inside a batch: the whole batch holding 1003 goes.
        assert_eq!(log.truncate_to(1003).await.unwrap(), 1000);
        assert_eq!(log.log_end_offset(), 1000);
        assert!(log.segment_count() < segments);
        assert_dense(&read_all(&log, 0).await, 0, 1000);
        assert!(matches!(
            log.read(1001, 100, u64::MAX).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        append_sequences(&log, 1000, 10, 5, 300).await;
        assert_dense(&read_all(&log, 990).await, 990, 60);
        // At a segment base.
        let second_base = {
            let state = log.inner.state.borrow();
            *state.segments.keys().nth(1).unwrap()
        };
        assert_eq!(log.truncate_to(second_base).await.unwrap(), second_base);
        assert_eq!(log.segment_count(), 2);
        log.close().await.unwrap();
        let log = open(&path, config).await;
        assert_eq!(log.log_end_offset(), second_base);
        assert_dense(&read_all(&log, 0).await, 0, second_base);
        // Out of range.
        assert!(log.truncate_to(second_base + 1).await.is_err());
    });
}

#[test]
fn a_waiter_for_a_truncated_offset_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = LogShard::new(ShardLogConfig::default());
        let log = shard
            .open_partition(&path, small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        append_sequences(&log, 0, 4, 5, 100).await;
        let waiter = |offset| {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_durable(offset).await })
        };
        let beyond_cut = waiter(25);
        let below_cut = waiter(7);
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.truncate_to(10).await.unwrap(), 10);
        assert!(below_cut.await.is_ok());
        let error = beyond_cut
            .await
            .expect_err("offset 25 was not yet appended when the log was cut");
        assert!(
            matches!(
                error,
                AppendError::Truncated {
                    offset: 25,
                    log_end: 10
                }
            ),
            "{error}"
        );
        // A wait that starts after the cut concerns the new batches at those offsets.
        let after_cut = waiter(12);
        append_sequences(&log, 10, 1, 5, 100).await;
        assert!(after_cut.await.is_ok());
        assert_dense(&read_all(&log, 0).await, 0, 15);
    });
}

#[test]
fn retention_deletes_whole_old_segments_and_reads_below_start_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = small_config(FlushPolicy::EveryBatch);
        config.retention_bytes = Some(600 * 1024);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 400, 10, 500).await;
        let before = log.size_bytes();
        assert!(before > 600 * 1024);
        let outcome = log.enforce_retention().await.unwrap();
        assert!(outcome.segments_deleted > 0);
        assert!(
            log.size_bytes() >= 600 * 1024 - config.segment_bytes,
            "kept about the retention size"
        );
        assert!(log.size_bytes() < before);
        let start = log.log_start_offset();
        assert_eq!(start, outcome.log_start_offset);
        assert!(!segment_path(&path, 0, LOG_SUFFIX).exists());
        match log.read(start - 1, 100, u64::MAX).await {
            Err(ReadError::OffsetOutOfRange { log_start, .. }) => assert_eq!(log_start, start),
            other => panic!(
                "expected out of range, got {:?}",
                other.map(|r| r.next_offset)
            ),
        }
        assert_dense(&read_all(&log, start).await, start, 4000 - start);

        // By time: everything closed is older than an hour from now.
        config.retention_bytes = None;
        config.retention_ms = Some(3_600_000);
        log.close().await.unwrap();
        let clock = crate::clock::ManualClock::new();
        let log = LogShard::new(ShardLogConfig {
            clock: clock.clone(),
            ..ShardLogConfig::default()
        })
        .open_partition(&path, config)
        .await
        .unwrap();
        assert_eq!(
            log.log_start_offset(),
            start,
            "the start offset survives a reopen"
        );
        clock.advance(Duration::from_secs(2 * 3600));
        let outcome = log.enforce_retention().await.unwrap();
        assert!(outcome.segments_deleted > 0);
        assert_eq!(log.segment_count(), 1, "only the active segment is left");
        let active_base = log.log_start_offset();
        assert_dense(
            &read_all(&log, active_base).await,
            active_base,
            4000 - active_base,
        );
    });
}

#[test]
fn a_failed_write_fences_the_partition_and_nothing_unwritten_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let faults = Rc::new(FaultPlan::default());
        let shard = LogShard::new(ShardLogConfig {
            faults: Some(faults.clone()),
            ..ShardLogConfig::default()
        });
        let log = shard
            .open_partition(&path, small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        append_sequences(&log, 0, 5, 2, 100).await;
        faults.writes_before_failure.set(Some(0));
        let info = log.append(batch(10, 2, 100), 1).await.unwrap();
        let error = log
            .wait_durable(info.last_offset)
            .await
            .expect_err("the write failed");
        assert!(matches!(error, AppendError::Fenced(_)), "{error}");
        assert!(error.to_string().contains("injected write failure"));
        assert_eq!(
            log.durable_offset(),
            10,
            "nothing past the failure is durable"
        );
        assert!(log.fenced().is_some());
        faults.writes_before_failure.set(None);
        assert!(matches!(
            log.append(batch(12, 1, 10), 1).await,
            Err(AppendError::Fenced(_))
        ));
    });
}

#[test]
fn a_failed_sync_fences_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let faults = Rc::new(FaultPlan::default());
        let shard = LogShard::new(ShardLogConfig {
            faults: Some(faults.clone()),
            ..ShardLogConfig::default()
        });
        let log = shard
            .open_partition(&path, small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        append_sequences(&log, 0, 5, 2, 100).await;
        faults.fail_syncs.set(true);
        let info = log.append(batch(10, 2, 100), 1).await.unwrap();
        assert!(matches!(
            log.wait_durable(info.last_offset).await,
            Err(AppendError::Fenced(_))
        ));
        assert_eq!(log.durable_offset(), 10);
        faults.fail_syncs.set(false);
        assert!(matches!(
            log.append(batch(12, 1, 10), 1).await,
            Err(AppendError::Fenced(_))
        ));
    });
}

#[test]
fn appends_wait_for_room_while_the_disk_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let faults = Rc::new(FaultPlan::default());
        let shard = LogShard::new(ShardLogConfig {
            faults: Some(faults.clone()),
            ..ShardLogConfig::default()
        });
        let mut config = small_config(FlushPolicy::EveryBatch);
        config.segment_bytes = 64 * 1024 * 1024;
        let log = shard.open_partition(&path, config).await.unwrap();
        faults.stall_writes.set(true);
        let producer = {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut last = 0;
                for i in 0..100u64 {
                    last = log
                        .append(batch(i * 10, 10, 20_000), 1)
                        .await
                        .unwrap()
                        .last_offset;
                }
                last
            })
        };
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let pending = log.inner.state.borrow().pending_bytes;
        assert!(
            pending <= crate::constants::PARTITION_PENDING_BYTES_MAX,
            "pending {pending}"
        );
        assert!(
            log.log_end_offset() < 1000,
            "the producer is held back while the disk stalls"
        );
        faults.stall_writes.set(false);
        let last = producer.await;
        log.wait_durable(last).await.unwrap();
        assert_dense(&read_all(&log, 0).await, 0, 1000);
    });
}

#[test]
fn many_partitions_on_one_shard_keep_open_files_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = LogShard::new(ShardLogConfig {
            open_files_max: 64,
            ..ShardLogConfig::default()
        });
        let mut config = small_config(FlushPolicy::Interval { interval_us: 1000 });
        config.preallocate_bytes = 4096;
        let mut logs = Vec::new();
        for p in 0..300 {
            logs.push(
                shard
                    .open_partition(&path.join(format!("p{p}")), config.clone())
                    .await
                    .unwrap(),
            );
            assert!(shard.open_files() <= 64);
        }
        // Every partition flushes at once; sample the open files while they do.
        let peak = Rc::new(std::cell::Cell::new(0usize));
        let sampling = Rc::new(std::cell::Cell::new(true));
        let monitor = {
            let (shard, peak, sampling) = (shard.clone(), peak.clone(), sampling.clone());
            glommio::spawn_local(async move {
                while sampling.get() {
                    peak.set(peak.get().max(shard.open_files()));
                    glommio::timer::sleep(Duration::from_micros(100)).await;
                }
            })
        };
        for round in 0..3u64 {
            for log in &logs {
                log.append(batch(round * 2, 2, 100), 1).await.unwrap();
            }
        }
        for log in &logs {
            log.wait_durable(5).await.unwrap();
        }
        sampling.set(false);
        monitor.await;
        assert!(peak.get() <= 64, "{} files open at once", peak.get());
        assert!(peak.get() > 0);
        for log in logs.iter().step_by(37) {
            assert_dense(&read_all(log, 0).await, 0, 6);
        }
        assert!(shard.open_files() <= 64);
    });
}

#[test]
fn bad_configuration_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = LogShard::new(ShardLogConfig::default());
        let mut config = LogConfig {
            segment_bytes: 100,
            ..LogConfig::default()
        };
        let error = shard
            .open_partition(&path, config.clone())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("segment_bytes"), "{error}");
        config.segment_bytes = 1 << 20;
        config.flush = FlushPolicy::Interval { interval_us: 0 };
        assert!(shard.open_partition(&path, config).await.is_err());
    });
}

#[test]
fn the_active_segment_rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = small_config(FlushPolicy::EveryBatch);
        config.segment_age_ms = 40;
        let log = open(&path, config).await;
        append_sequences(&log, 0, 3, 1, 10).await;
        assert_eq!(log.segment_count(), 1, "young segments do not roll");
        glommio::timer::sleep(Duration::from_millis(60)).await;
        append_sequences(&log, 3, 1, 1, 10).await;
        assert_eq!(
            log.segment_count(),
            2,
            "an old segment rolls at the next write"
        );
        assert_eq!(log.io_stats().segments_rolled, 1);
        assert_dense(&read_all(&log, 0).await, 0, 4);
    });
}

#[test]
fn damage_below_the_recovery_point_is_an_open_error_not_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        append_sequences(&log, 0, 10, 1, 1000).await;
        let data_bytes = log.size_bytes() as usize;
        log.close().await.unwrap();
        let point = super::checkpoint::RecoveryPoint::decode(
            &std::fs::read(super::checkpoint::path(&path)).unwrap(),
        )
        .expect("close writes the recovery point");
        assert_eq!((point.position, point.next_offset), (data_bytes as u64, 10));
        // A flipped byte in the body of batch 4: synced, acknowledged data.
        let segment = segment_path(&path, 0, LOG_SUFFIX);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[4 * (data_bytes / 10) + 500] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let error = LogShard::new(ShardLogConfig::default())
            .open_partition(&path, config.clone())
            .await
            .expect_err("acknowledged data is not cut away");
        let message = error.to_string();
        assert!(
            message.contains("recovery point") && message.contains("00000000000000000000.log"),
            "{message}"
        );
        // The file is untouched: an operator can still inspect or repair it.
        assert_eq!(
            std::fs::read(&segment).unwrap()[..data_bytes],
            bytes[..data_bytes]
        );
        // Truncation moves the recovery point with the cut, so a later open is clean.
        bytes[4 * (data_bytes / 10) + 500] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let log = open(&path, config.clone()).await;
        assert_eq!(log.truncate_to(6).await.unwrap(), 6);
        drop(log);
        let log = open(&path, config).await;
        assert_eq!(log.log_end_offset(), 6);
        assert_dense(&read_all(&log, 0).await, 0, 6);
    });
}

/// A partition whose disk stalls (writes wait) with offsets 0-299 pending: three 2.4 MB
/// batches, 7.2 of the 8 MiB of pending bytes it may hold.
async fn nearly_full_behind_a_stalled_disk(path: &Path) -> (Rc<FaultPlan>, PartitionLog) {
    let faults = Rc::new(FaultPlan::default());
    let shard = LogShard::new(ShardLogConfig {
        faults: Some(faults.clone()),
        ..ShardLogConfig::default()
    });
    let mut config = small_config(FlushPolicy::EveryBatch);
    config.segment_bytes = 64 * 1024 * 1024;
    let log = shard.open_partition(path, config).await.unwrap();
    faults.stall_writes.set(true);
    for i in 0..3u64 {
        log.append(batch(i * 100, 100, 24_000), 1).await.unwrap();
    }
    (faults, log)
}

/// Appends `batch` in a task of its own (it may wait for space).
fn spawn_append(
    log: &PartitionLog,
    batch: ValidatedBatch,
) -> glommio::Task<Result<AppendInfo, AppendError>> {
    let log = log.clone();
    glommio::spawn_local(async move { log.append(batch, 1).await })
}

/// Appends waiting for space are admitted in the order they were called: a small batch
/// that would fit at once does not overtake a large one already waiting (two shares of one
/// partition in one produce request, or pipelined requests, keep their order).
#[test]
fn appends_waiting_for_space_keep_their_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (faults, log) = nearly_full_behind_a_stalled_disk(&path).await;
        let large = spawn_append(&log, batch(300, 100, 24_000));
        glommio::timer::sleep(Duration::from_millis(20)).await;
        // 100 kB would fit beside the pending bytes, but the large batch waits before it.
        let small = spawn_append(&log, batch(400, 10, 10_000));
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.log_end_offset(), 300, "both wait while the disk stalls");
        faults.stall_writes.set(false);
        let large = large.await.unwrap();
        let small = small.await.unwrap();
        assert_eq!(large.base_offset, 300, "the large batch kept its place");
        assert_eq!(small.base_offset, 400, "the small one came after it");
        log.wait_durable(small.last_offset).await.unwrap();
        assert_dense(&read_all(&log, 0).await, 0, 410);
    });
}

/// An append that gives up waiting for space (its request timed out) leaves the queue, and
/// the appends behind it go on.
#[test]
fn a_cancelled_append_gives_up_its_place_for_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (faults, log) = nearly_full_behind_a_stalled_disk(&path).await;
        let abandoned = spawn_append(&log, batch(300, 100, 24_000));
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let behind = spawn_append(&log, batch(300, 10, 10_000));
        glommio::timer::sleep(Duration::from_millis(20)).await;
        drop(abandoned);
        faults.stall_writes.set(false);
        let behind = behind.await.unwrap();
        assert_eq!(behind.base_offset, 300);
        log.wait_durable(behind.last_offset).await.unwrap();
        assert_dense(&read_all(&log, 0).await, 0, 310);
    });
}

/// Deleting segments (retention, truncation) unlinks files off the shard's thread: while a
/// slow unlink runs, the shard's other tasks keep running.
#[test]
fn slow_segment_removal_does_not_stall_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let faults = Rc::new(FaultPlan::default());
        let shard = LogShard::new(ShardLogConfig {
            faults: Some(faults.clone()),
            ..ShardLogConfig::default()
        });
        let mut config = small_config(FlushPolicy::EveryBatch);
        config.retention_bytes = Some(300 * 1024);
        let log = shard.open_partition(&path, config).await.unwrap();
        append_sequences(&log, 0, 200, 10, 500).await;
        faults
            .remove_delay
            .set(Duration::from_millis(REMOVE_DELAY_MS));
        let ticks = Rc::new(std::cell::Cell::new(0u64));
        let ticker = {
            let ticks = ticks.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    ticks.set(ticks.get() + 1);
                }
            })
        };
        let before = ticks.get();
        let outcome = log.enforce_retention().await.unwrap();
        let during = ticks.get() - before;
        drop(ticker);
        assert!(outcome.segments_deleted >= 2, "{outcome:?}");
        // A blocked shard would tick about never while the removals sleep.
        let removal_ms = REMOVE_DELAY_MS * outcome.segments_deleted as u64;
        assert!(
            during >= removal_ms / 10,
            "the shard ticked {during} times during {removal_ms} ms of removals"
        );
    });
}

/// How long each injected removal takes in `slow_segment_removal_does_not_stall_the_shard`.
const REMOVE_DELAY_MS: u64 = 200;

/// The append fence: a leader's append at another epoch, a follower's append from another
/// leader, and a follower's cut for another leader are refused; the epochs appended are
/// noted, cut with the log and rebuilt on reopen.
#[test]
fn the_append_fence_refuses_other_roles_and_epochs_are_kept_with_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config(FlushPolicy::EveryBatch)).await;
        log.set_fence(AppendFence::Leader(3));
        assert!(matches!(
            log.append(batch(0, 2, 10), 2).await,
            Err(AppendError::NotAllowed { .. })
        ));
        log.append(batch(0, 2, 10), 3).await.unwrap();
        log.set_fence(AppendFence::Follower(5));
        assert!(matches!(
            log.append(batch(2, 2, 10), 3).await,
            Err(AppendError::NotAllowed { .. })
        ));
        // A follower appends the leader's batches as stamped (epoch 5 at offset 2).
        let mut stamped = batch(2, 2, 10).into_bytes();
        crate::record::header::stamp(&mut stamped, 2, 5, 1);
        let replicated = || crate::record::validate(stamped.clone()).unwrap();
        assert!(matches!(
            log.append_replicated(replicated(), 4).await,
            Err(AppendError::NotAllowed { .. })
        ));
        log.append_replicated(replicated(), 5).await.unwrap();
        assert_eq!(log.epochs().entries(), &[(3, 0), (5, 2)]);
        assert!(log.truncate_following(2, 4).await.is_err());
        assert_eq!(log.log_end_offset(), 4);
        log.set_fence(AppendFence::Closed);
        assert!(log.append(batch(4, 1, 10), 0).await.is_err());
        log.close().await.unwrap();
        let reopened = open(dir.path(), small_config(FlushPolicy::EveryBatch)).await;
        assert_eq!(reopened.epochs().entries(), &[(3, 0), (5, 2)]);
        assert_eq!(reopened.end_of_epoch(4), (Some(3), 2));
        reopened.truncate_to(2).await.unwrap();
        assert_eq!(reopened.last_epoch(), Some(3));
        reopened.close().await.unwrap();
        // Without the saved file, the epochs come back from the batch headers.
        std::fs::remove_file(epochs::path(dir.path())).unwrap();
        let rebuilt = open(dir.path(), small_config(FlushPolicy::EveryBatch)).await;
        assert_eq!(rebuilt.epochs().entries(), &[(3, 0)]);
        rebuilt.close().await.unwrap();
    });
}

#[test]
fn a_follower_behind_its_leaders_log_start_starts_again_there() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(dir.path(), config.clone()).await;
        append_sequences(&log, 0, 300, 5, 300).await;
        assert!(log.segment_count() > 1);
        // Not past the end: refused, nothing changes.
        assert!(log.reset_to(1500).await.is_err());
        assert!(log.reset_to(100).await.is_err());
        assert_eq!(log.log_end_offset(), 1500);
        // A follower of another epoch may not.
        log.set_fence(AppendFence::Follower(7));
        assert!(log.reset_following(5000, 6).await.is_err());
        assert_eq!(log.reset_following(5000, 7).await.unwrap(), 5000);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5000, 5000));
        assert_eq!(log.segment_count(), 1);
        assert!(log.epochs().entries().is_empty());
        assert!(matches!(
            log.read(0, 100, u64::MAX).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // The leader's batches append from there.
        let mut stamped = batch(0, 3, 10).into_bytes();
        crate::record::header::stamp(&mut stamped, 5000, 7, 1);
        log.append_replicated(crate::record::validate(stamped).unwrap(), 7)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 5003);
        log.close().await.unwrap();
        // It all survives a reopen: the old segments are gone from the directory.
        let reopened = open(dir.path(), config).await;
        assert_eq!(
            (reopened.log_start_offset(), reopened.log_end_offset()),
            (5000, 5003)
        );
        assert_eq!(reopened.epochs().entries(), &[(7, 5000)]);
        assert_eq!(read_all(&reopened, 5000).await.len(), 3);
        reopened.close().await.unwrap();
    });
}

/// A shard with a journal over `root` (ring of the minimum size).
fn journaled_shard(root: &Path) -> LogShard {
    LogShard::new(journaled_shard_config(root))
}

/// A [`journaled_shard`] whose IO obeys the returned fault plan.
fn journaled_shard_with_faults(root: &Path) -> (LogShard, Rc<FaultPlan>) {
    let faults = Rc::new(FaultPlan::default());
    let shard = LogShard::new(ShardLogConfig {
        faults: Some(faults.clone()),
        ..journaled_shard_config(root)
    });
    (shard, faults)
}

/// The configuration of [`journaled_shard`].
fn journaled_shard_config(root: &Path) -> ShardLogConfig {
    ShardLogConfig {
        journal: Some(journal::JournalConfig {
            root: root.to_path_buf(),
            shard: 0,
            capacity_bytes: journal::JOURNAL_BYTES_MIN,
            // Long, so that the checks of unwritten batches do not race the segment writes
            // (checkpoints and 1 MiB of unwritten batches still write them).
            segment_write_delay: Duration::from_secs(60),
        }),
        ..ShardLogConfig::default()
    }
}

/// Opens partitions `p0..p<count>` under `root` on `shard`, syncing every batch.
async fn open_partitions(shard: &LogShard, root: &Path, count: usize) -> Vec<PartitionLog> {
    let mut logs = Vec::new();
    for p in 0..count {
        let dir = root.join(format!("p{p}"));
        logs.push(
            shard
                .open_partition(&dir, small_config(FlushPolicy::EveryBatch))
                .await
                .expect("the partition opens"),
        );
    }
    logs
}

/// Batches made durable by the journal alone (the process "dies" before their segment
/// writes) come back by replay, on every partition, in order and once; replay removes the
/// journal.
#[test]
fn journaled_batches_come_back_by_replay_after_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let shard = journaled_shard(&path);
        let logs = open_partitions(&shard, &path, 3).await;
        for round in 0..5u64 {
            for log in &logs {
                let info = log.append(batch(round * 4, 4, 100), 0).await.unwrap();
                log.wait_durable(info.last_offset).await.unwrap();
            }
        }
        for log in &logs {
            assert_eq!(log.durable_offset(), 20);
            // Durable by the journal, not yet in the segment (written within 50 ms).
            assert!(log.written_offset() < 20, "{}", log.writer_state());
        }
        assert!(shard.metrics().journal.commits > 0);
        // No close: the executor ends with the batches only in memory and the journal.
    });
    let summary = journal::replay_blocking(root.path()).unwrap();
    assert_eq!(summary.partitions, 3, "{summary:?}");
    assert!(!root
        .path()
        .join(journal::JOURNAL_DIR)
        .join("shard-0.journal")
        .exists());
    let path = root.path().to_path_buf();
    run(move || async move {
        for p in 0..3 {
            let log = open(
                &path.join(format!("p{p}")),
                small_config(FlushPolicy::EveryBatch),
            )
            .await;
            let found = read_all(&log, 0).await;
            let sequences: Vec<u64> = found.iter().map(|&(_, s)| s).collect();
            assert_eq!(sequences, (0..20).collect::<Vec<_>>(), "partition {p}");
        }
    });
    // A second replay finds nothing to do.
    assert_eq!(
        journal::replay_blocking(root.path())
            .unwrap()
            .batches_applied,
        0
    );
}

/// Replay never brings back what a truncation cut: the batches after the cut are the new
/// ones, not the journaled ones the cut removed.
#[test]
fn replay_honours_a_truncation_between_journaled_batches() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let shard = journaled_shard(&path);
        let log = shard
            .open_partition(&path.join("p"), small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        for i in 0..10u64 {
            let info = log.append(batch(i, 1, 100), 0).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        assert_eq!(log.truncate_to(5).await.unwrap(), 5);
        for i in 0..3u64 {
            let info = log.append(batch(100 + i, 1, 100), 0).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        assert!(log.written_offset() < 8, "{}", log.writer_state());
    });
    let summary = journal::replay_blocking(root.path()).unwrap();
    assert_eq!(summary.batches_applied, 3, "{summary:?}");
    let path = root.path().to_path_buf();
    run(move || async move {
        let log = open(&path.join("p"), small_config(FlushPolicy::EveryBatch)).await;
        let sequences: Vec<u64> = read_all(&log, 0).await.iter().map(|&(_, s)| s).collect();
        assert_eq!(sequences, vec![0, 1, 2, 3, 4, 100, 101, 102]);
    });
}

/// A ring much smaller than what is written: checkpoints write the segments and free room,
/// commits wait for them when they must, and after a crash replay still restores every
/// durable batch.
#[test]
fn the_journal_ring_wraps_through_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let shard = journaled_shard(&path);
        let logs = open_partitions(&shard, &path, 4).await;
        // 4 x 300 batches of ~16 KiB: about 19 MiB through an 8 MiB ring.
        for i in 0..300u64 {
            let mut waits = Vec::new();
            for log in &logs {
                let info = log.append(batch(i, 1, 16 * 1024), 0).await.unwrap();
                waits.push((log.clone(), info.last_offset));
            }
            for (log, offset) in waits {
                log.wait_durable(offset).await.unwrap();
            }
        }
        let stats = shard.metrics().journal;
        assert!(stats.checkpoints >= 2, "{stats:?}");
        assert!(stats.bytes > 2 * journal::JOURNAL_BYTES_MIN, "{stats:?}");
    });
    journal::replay_blocking(root.path()).unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        for p in 0..4 {
            let log = open(
                &path.join(format!("p{p}")),
                small_config(FlushPolicy::EveryBatch),
            )
            .await;
            let sequences: Vec<u64> = read_all(&log, 0).await.iter().map(|&(_, s)| s).collect();
            assert_eq!(sequences, (0..300).collect::<Vec<_>>(), "partition {p}");
        }
    });
}

/// A journal commit has no fdatasync of its own: the journal file is opened `O_DSYNC`, so
/// its write is the sync. Checked on the open descriptor (`/proc/self/fdinfo`), since a
/// missing flag would lose acknowledged batches only on power loss.
#[test]
fn the_journal_file_is_opened_for_durable_writes() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let shard = journaled_shard(&path);
        let logs = open_partitions(&shard, &path, 1).await;
        let info = logs[0].append(batch(0, 1, 100), 0).await.unwrap();
        logs[0].wait_durable(info.last_offset).await.unwrap();
        assert_eq!(shard.metrics().journal.commits, 1);
        let journal_file = path.join(journal::JOURNAL_DIR).join("shard-0.journal");
        let flags = open_flags_of(&journal_file).expect("the journal file is open");
        assert_ne!(
            flags & libc::O_DSYNC,
            0,
            "journal opened with flags {flags:o}"
        );
        assert_ne!(
            flags & libc::O_DIRECT,
            0,
            "journal opened with flags {flags:o}"
        );
        // The segment files are not: their writes are synced by the flush round.
        let segment = segment_path(&path.join("p0"), 0, LOG_SUFFIX);
        let flags = open_flags_of(&segment).expect("the segment is open");
        assert_eq!(
            flags & libc::O_DSYNC,
            0,
            "segment opened with flags {flags:o}"
        );
    });
}

/// The `flags` of this process's open descriptor of `file`, from `/proc/self/fdinfo`.
fn open_flags_of(file: &Path) -> Option<i32> {
    let file = std::fs::canonicalize(file).ok()?;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(file.as_path()) {
            continue;
        }
        let fd = entry.file_name();
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd)).ok()?;
        let flags = info.lines().find_map(|line| line.strip_prefix("flags:"))?;
        return i32::from_str_radix(flags.trim(), 8).ok();
    }
    None
}

/// A checkpoint writes and fdatasyncs the segments of all its partitions at once, so that
/// their syncs reach the device together: with the syncs stalled, every partition's sync is
/// waiting at the same time. One after another, a checkpoint of 500 partitions outlasted
/// the commits that fill half the ring, and commits waited for room.
#[test]
fn a_journal_checkpoint_syncs_its_partitions_together() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let (shard, faults) = journaled_shard_with_faults(&path);
        let logs = open_partitions(&shard, &path, 4).await;
        for (i, log) in logs.iter().enumerate() {
            let info = log.append(batch(i as u64, 1, 100), 0).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
            assert_eq!(log.written_offset(), 0, "journaled, not yet in its segment");
        }
        faults.stall_syncs.set(true);
        shard.journal().expect("journaled shard").start_checkpoint();
        let mut most = 0;
        for _ in 0..2000 {
            most = most.max(faults.syncs_stalled.get());
            if most == logs.len() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(most, logs.len(), "syncs in flight together");
        assert_eq!(shard.metrics().journal.checkpoints, 0);
        faults.stall_syncs.set(false);
        for _ in 0..2000 {
            if shard.metrics().journal.checkpoints == 1 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(shard.metrics().journal.checkpoints, 1);
        for log in &logs {
            assert_eq!(log.written_offset(), 1, "{}", log.writer_state());
        }
    });
}

/// The journal's write is its sync, so the fault plan's sync faults apply to it: a stalled
/// sync holds the commit (and the acknowledgment) back, a failed one fences the partition.
#[test]
fn journal_commits_obey_the_fault_plans_sync_faults() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let (shard, faults) = journaled_shard_with_faults(&path);
        let logs = open_partitions(&shard, &path, 1).await;
        let log = logs[0].clone();
        let info = log.append(batch(0, 1, 100), 0).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();

        faults.stall_syncs.set(true);
        let info = log.append(batch(1, 1, 100), 0).await.unwrap();
        let waiting = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_durable(info.last_offset).await })
        };
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            log.durable_offset(),
            1,
            "durable while the sync was stalled"
        );
        faults.stall_syncs.set(false);
        waiting.await.unwrap();
        assert_eq!(log.durable_offset(), 2);

        faults.fail_syncs.set(true);
        let info = log.append(batch(2, 1, 100), 0).await.unwrap();
        assert!(matches!(
            log.wait_durable(info.last_offset).await,
            Err(AppendError::Fenced(_))
        ));
        assert_eq!(log.durable_offset(), 2);
    });
}

/// A journal left by an earlier run is never overwritten: a shard that did not replay it
/// fails its first commit instead.
#[test]
fn a_journal_not_replayed_is_not_overwritten() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(journal::JOURNAL_DIR)).unwrap();
    let left = root
        .path()
        .join(journal::JOURNAL_DIR)
        .join("shard-0.journal");
    std::fs::write(&left, b"an earlier run's journal").unwrap();
    let path = root.path().to_path_buf();
    run(move || async move {
        let shard = journaled_shard(&path);
        let log = shard
            .open_partition(&path.join("p"), small_config(FlushPolicy::EveryBatch))
            .await
            .unwrap();
        let info = log.append(batch(0, 1, 10), 0).await.unwrap();
        assert!(log.wait_durable(info.last_offset).await.is_err());
    });
    assert_eq!(std::fs::read(&left).unwrap(), b"an earlier run's journal");
}

#[test]
fn a_new_partition_has_a_recovery_point_that_later_ones_replace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(FlushPolicy::EveryBatch);
        let log = open(&path, config.clone()).await;
        let read_point = || {
            super::checkpoint::RecoveryPoint::decode(
                &std::fs::read(super::checkpoint::path(&path)).unwrap(),
            )
        };
        let made = read_point().expect("made with the partition");
        assert_eq!(
            (made.segment_base, made.position, made.next_offset),
            (0, 0, 0)
        );
        append_sequences(&log, 0, 10, 1, 1000).await;
        let data_bytes = log.size_bytes();
        log.close().await.unwrap();
        let closed = read_point().expect("close writes the recovery point");
        assert_eq!((closed.position, closed.next_offset), (data_bytes, 10));
        // A file longer than a recovery point (not written by this code) is cut to size
        // when one is written over it, and reads back as that one.
        let longer = [closed.encode(), vec![0xAB; 100]].concat();
        std::fs::write(super::checkpoint::path(&path), &longer).unwrap();
        assert_eq!(
            read_point(),
            None,
            "the longer file is not a recovery point"
        );
        super::io::overwrite_small_file(&super::checkpoint::path(&path), closed.encode(), true)
            .await
            .unwrap();
        assert_eq!(read_point(), Some(closed));
    });
}
