//! Partition-log throughput: appends under each flush policy, and reads from the shard's
//! cache and from disk.
//!
//! - `append/<policy>`: batches of 64 messages of 1 KiB (16-byte keys, ~66 KiB a batch)
//!   appended to one partition by a producer that keeps up to `APPENDS_IN_FLIGHT_MAX`
//!   batches unacknowledged (it waits for the oldest to be durable before appending another),
//!   so group commit has something to group. The timed region runs from the first append to
//!   the durability of the last. Batches are built and validated before the clock starts:
//!   this measures the log, not the producer or the broker's door.
//! - `read/cache`, `read/disk`: 1 MiB reads (`max_bytes`) of a ~256 MiB log, from the tail
//!   the shard's cache holds, and through a fresh shard (empty cache) from the segment.
//!
//! Everything runs on one unpinned glommio executor driven from the bench thread; each
//! append measurement writes a fresh partition in a temporary directory under `/tmp` that is
//! removed afterwards. Sample counts and times are set here, so the whole bench stays within
//! a few minutes and writes a few GB. Criterion keeps its estimates under `target/criterion/`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use shardline::log::{
    FlushPolicy, IoStats, LogConfig, LogShard, PartitionLog, ReadChunk, ShardLogConfig,
};
use shardline::record::{validate, BatchBuilder, Codec, ValidatedBatch};

const MESSAGES_PER_BATCH: usize = 64;
const VALUE_BYTES: usize = 1024;
const KEY_BYTES: usize = 16;
const BATCH_CAPACITY_BYTES: usize = 80 * 1024;
/// Offsets a batch takes: one per message.
const OFFSETS_PER_BATCH: u64 = MESSAGES_PER_BATCH as u64;
const LEADER_EPOCH: u32 = 1;

/// Batches a producer appends before it waits for the oldest of them to be durable.
const APPENDS_IN_FLIGHT_MAX: usize = 64;
/// Batches appended per criterion iteration (~16.6 MiB).
const BATCHES_PER_ITERATION: usize = 256;
/// Batches built and validated ahead of one timed run; bounds the bench's memory (~133 MiB).
/// A measurement of more batches is several timed runs, each ending durable.
const BATCHES_PREPARED_MAX: usize = 2048;

/// Large enough that a measurement rarely rolls a segment.
const SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// glommio's registered IO memory (memlock is 8 MiB on the bench machine).
const IO_MEMORY_BYTES: usize = 1024 * 1024;
/// Where the temporary partition directories go (ext4, O_DIRECT capable).
const TEMP_PARENT: &str = "/tmp";

/// Size of the log the read benchmarks read.
const READ_LOG_BYTES: usize = 256 * 1024 * 1024;
const READ_MAX_BYTES: usize = 1024 * 1024;
/// The cached tail the cache benchmark reads: half the default 64 MiB cache budget, so that
/// the tail is surely all cached.
const CACHE_TAIL_BYTES: usize = 32 * 1024 * 1024;

const SAMPLES: usize = 10;
/// Short, so that the four policies together write a few GB rather than tens.
const APPEND_WARM_UP: Duration = Duration::from_millis(200);
const APPEND_MEASUREMENT: Duration = Duration::from_millis(500);
const READ_WARM_UP: Duration = Duration::from_millis(500);
const READ_MEASUREMENT: Duration = Duration::from_secs(3);

const POLICIES: [(&str, FlushPolicy); 4] = [
    ("every-batch", FlushPolicy::EveryBatch),
    (
        "bytes",
        FlushPolicy::Bytes {
            bytes: 1024 * 1024,
            max_delay_us: 1_000,
        },
    ),
    ("interval", FlushPolicy::Interval { interval_us: 1_000 }),
    (
        "never",
        FlushPolicy::Never {
            write_delay_us: 1_000,
        },
    ),
];

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor starts")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shardline-bench-")
        .tempdir_in(TEMP_PARENT)
        .expect("temporary directory under /tmp")
}

fn log_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// One batch of `MESSAGES_PER_BATCH` messages, unstamped, as a producer sends it.
fn template_batch() -> bytes::BytesMut {
    let mut builder = BatchBuilder::with_capacity(Codec::None, BATCH_CAPACITY_BYTES);
    for i in 0..MESSAGES_PER_BATCH {
        let key = format!("user-{i:011}").into_bytes();
        assert_eq!(key.len(), KEY_BYTES);
        let value: Vec<u8> = (0..VALUE_BYTES).map(|j| (i * 31 + j) as u8).collect();
        builder
            .push(1_700_000_000_000 + i as i64, Some(&key), &value, &[])
            .expect("record fits");
    }
    builder.finish().expect("batch builds")
}

/// `count` independent copies of the template, validated (the log takes them by value).
fn prepare(template: &[u8], count: usize) -> Vec<ValidatedBatch> {
    (0..count)
        .map(|_| validate(bytes::BytesMut::from(template)).expect("the template validates"))
        .collect()
}

/// Appends `batches` keeping at most `APPENDS_IN_FLIGHT_MAX` not yet durable, and waits for
/// the last to be durable. Returns the time from the first append to that.
async fn append_run(log: &PartitionLog, batches: Vec<ValidatedBatch>) -> Duration {
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(APPENDS_IN_FLIGHT_MAX);
    for batch in batches {
        if in_flight.len() == APPENDS_IN_FLIGHT_MAX {
            let oldest = in_flight.pop_front().expect("the window is full");
            log.wait_durable(oldest)
                .await
                .expect("appended batches become durable");
        }
        let info = log
            .append(batch, LEADER_EPOCH)
            .await
            .expect("append succeeds");
        in_flight.push_back(info.last_offset);
    }
    if let Some(&last) = in_flight.back() {
        log.wait_durable(last)
            .await
            .expect("appended batches become durable");
    }
    started.elapsed()
}

/// Appends `batch_count` batches in timed runs of at most `BATCHES_PREPARED_MAX`; returns the
/// summed time of the runs.
fn append_timed(
    executor: &LocalExecutor,
    log: &PartitionLog,
    template: &[u8],
    batch_count: usize,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = batch_count;
    while left > 0 {
        let run = left.min(BATCHES_PREPARED_MAX);
        let batches = prepare(template, run);
        elapsed += executor.run(append_run(log, batches));
        left -= run;
    }
    elapsed
}

fn append_benches(c: &mut Criterion) {
    // As the broker does at start (see `tune_allocator`); set SHARDLINE_DEFAULT_MALLOC=1 to
    // measure with glibc's defaults instead.
    if std::env::var_os("SHARDLINE_DEFAULT_MALLOC").is_none() {
        shardline::shard::runtime::tune_allocator();
    }
    let executor = executor();
    let template = template_batch();
    let batch_bytes = template.len();
    let mut group = c.benchmark_group("append");
    group
        .throughput(Throughput::Bytes(
            (batch_bytes * BATCHES_PER_ITERATION) as u64,
        ))
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(APPEND_WARM_UP)
        .measurement_time(APPEND_MEASUREMENT);
    for (name, policy) in POLICIES {
        // IO counters of the last measurement, to show how well group commit grouped.
        let last_stats = Cell::new((IoStats::default(), Duration::ZERO));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = temp_dir();
                let shard = LogShard::new(ShardLogConfig::default());
                let log = executor
                    .run(shard.open_partition(dir.path(), log_config(policy)))
                    .expect("partition opens");
                let batch_count = iters as usize * BATCHES_PER_ITERATION;
                let elapsed = append_timed(&executor, &log, &template, batch_count);
                last_stats.set((log.io_stats(), elapsed));
                executor.run(log.close()).expect("partition closes");
                elapsed
            })
        });
        let (stats, elapsed) = last_stats.get();
        if stats.write_rounds > 0 {
            print_io_stats(name, &stats, elapsed);
        }
    }
    group.finish();
}

fn print_io_stats(name: &str, stats: &IoStats, elapsed: Duration) {
    let rounds = stats.write_rounds.max(1);
    eprintln!(
        "append/{name}: last measurement {:.0} MiB in {:.1} ms: {} write rounds ({:.0} KiB each), \
         {} writes, {} syncs, {} segments rolled",
        stats.bytes_written as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64() * 1e3,
        stats.write_rounds,
        stats.bytes_written as f64 / rounds as f64 / 1024.0,
        stats.writes,
        stats.syncs,
        stats.segments_rolled,
    );
}

/// A log of `READ_LOG_BYTES` in `dir`, written through `shard` and left open (its recent
/// tail in the shard's cache). Returns it with the number of batches written.
fn write_read_log(
    executor: &LocalExecutor,
    shard: &LogShard,
    dir: &Path,
    template: &[u8],
) -> (PartitionLog, usize) {
    let policy = FlushPolicy::Interval { interval_us: 1_000 };
    let log = executor
        .run(shard.open_partition(dir, log_config(policy)))
        .expect("partition opens");
    let batch_count = READ_LOG_BYTES.div_ceil(template.len());
    append_timed(executor, &log, template, batch_count);
    executor.run(log.flush()).expect("log flushes");
    (log, batch_count)
}

/// Reads `iters` times `max_bytes` from `first_batch` on, wrapping to `first_batch` at the end
/// of the log. Every timed read returns exactly `batches_per_read` batches, from memory or from
/// disk as `from_disk` says. Returns the time spent in the reads.
async fn read_run(
    log: &PartitionLog,
    first_batch: usize,
    batch_count: usize,
    batches_per_read: usize,
    from_disk: bool,
    iters: u64,
) -> Duration {
    let wrap_offset = first_batch as u64 * OFFSETS_PER_BATCH;
    let end_offset = batch_count as u64 * OFFSETS_PER_BATCH;
    let read_offsets = batches_per_read as u64 * OFFSETS_PER_BATCH;
    let mut offset = wrap_offset;
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        if offset + read_offsets > end_offset {
            offset = wrap_offset;
        }
        let started = Instant::now();
        let read = log
            .read(offset, READ_MAX_BYTES, u64::MAX)
            .await
            .expect("read succeeds");
        elapsed += started.elapsed();
        assert_eq!(
            read.next_offset,
            offset + read_offsets,
            "a read returns whole batches"
        );
        let all_from_disk = read.chunks.iter().all(|c| matches!(c, ReadChunk::Disk(_)));
        let all_from_memory = read
            .chunks
            .iter()
            .all(|c| matches!(c, ReadChunk::Memory(_)));
        assert!(
            if from_disk {
                all_from_disk
            } else {
                all_from_memory
            },
            "read source"
        );
        std::hint::black_box(read.bytes());
        offset = read.next_offset;
    }
    elapsed
}

fn read_benches(c: &mut Criterion) {
    let executor = executor();
    let template = template_batch();
    let batch_bytes = template.len();
    let batches_per_read = READ_MAX_BYTES / batch_bytes;
    let dir = temp_dir();
    let writer_shard = LogShard::new(ShardLogConfig::default());
    let (log, batch_count) = write_read_log(&executor, &writer_shard, dir.path(), &template);
    let mut group = c.benchmark_group("read");
    group
        .throughput(Throughput::Bytes((batches_per_read * batch_bytes) as u64))
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(READ_WARM_UP)
        .measurement_time(READ_MEASUREMENT);

    let tail_first_batch = batch_count - CACHE_TAIL_BYTES / batch_bytes;
    group.bench_function("cache", |b| {
        b.iter_custom(|iters| {
            let run = read_run(
                &log,
                tail_first_batch,
                batch_count,
                batches_per_read,
                false,
                iters,
            );
            executor.run(run)
        })
    });
    executor.run(log.close()).expect("partition closes");

    // A fresh shard has an empty cache: every read goes to the segment file.
    let reader_shard = LogShard::new(ShardLogConfig::default());
    let policy = FlushPolicy::Interval { interval_us: 1_000 };
    let log = executor
        .run(reader_shard.open_partition(dir.path(), log_config(policy)))
        .expect("partition reopens");
    group.bench_function("disk", |b| {
        b.iter_custom(|iters| {
            executor.run(read_run(
                &log,
                0,
                batch_count,
                batches_per_read,
                true,
                iters,
            ))
        })
    });
    executor.run(log.close()).expect("partition closes");
    group.finish();
}

criterion_group!(benches, append_benches, read_benches);
criterion_main!(benches);
