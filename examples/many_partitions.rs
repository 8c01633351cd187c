//! Ten thousand partitions on one shard: what opening, appending to, reading and closing them
//! costs in time, memory, file descriptors and disk.
//!
//! Phases, each measured when it ends (elapsed, VmRSS, VmHWM, open descriptors, the shard's
//! open segment files and cache bytes), plus the most descriptors a watcher task saw open
//! during the phase:
//!
//! 1. `create`: open `PARTITIONS` new partition logs on one shard, `CONCURRENCY` at a time.
//! 2. `append+durable`: append one small batch to each, then wait until each is durable.
//! 3. `read (cache)`: read each partition's batch back (from the shard's cache) and check it.
//! 4. `close`: close every log.
//! 5. `reopen`: open every log again through a fresh shard (recovery, empty cache).
//! 6. `read (disk)`: read each batch back from its segment file and check it.
//! 7. `close again`.
//!
//! The shard keeps its default budget of open segment files (`OPEN_SEGMENT_FILES_DEFAULT`), so
//! most partitions' files are closed and reopened on demand. Disk usage (allocated and
//! apparent) is measured after the appends. The temporary directory under `/tmp` is removed
//! at the end.
//!
//! Run: `cargo run --release --example many_partitions`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardline::log::{FlushPolicy, LogConfig, LogShard, PartitionLog, ShardLogConfig};
use shardline::record::reader::records;
use shardline::record::{validate, BatchBuilder, BatchIter, Codec, ValidatedBatch};

const PARTITIONS: usize = 10_000;
/// Opens, reads and closes in flight at once (a broker starting up does not go one by one).
const CONCURRENCY: usize = 64;
const SEGMENT_BYTES: u64 = 1024 * 1024;
const PREALLOCATE_BYTES: u64 = 64 * 1024;
const FLUSH_INTERVAL_US: u64 = 1_000;
const VALUE_BYTES: usize = 100;
const LEADER_EPOCH: u32 = 1;
const READ_MAX_BYTES: usize = 64 * 1024;
/// glommio's registered IO memory (memlock is 8 MiB on this machine).
const IO_MEMORY_BYTES: usize = 1024 * 1024;
/// Where the temporary partition directories go (ext4, O_DIRECT capable).
const TEMP_PARENT: &str = "/tmp";
/// Bytes per `st_blocks` unit.
const STAT_BLOCK_BYTES: u64 = 512;
/// How often the descriptor watcher counts `/proc/self/fd` for a phase's peak.
const FD_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        preallocate_bytes: PREALLOCATE_BYTES,
        retention_ms: None,
        flush: FlushPolicy::Interval {
            interval_us: FLUSH_INTERVAL_US,
        },
        ..LogConfig::default()
    }
}

fn partition_dir(root: &Path, partition: usize) -> PathBuf {
    root.join(format!("topic-{partition:05}"))
}

fn value_of(partition: usize) -> Vec<u8> {
    let mut value = format!("partition-{partition:05}-").into_bytes();
    value.resize(VALUE_BYTES, b'x');
    value
}

fn batch_for(partition: usize) -> ValidatedBatch {
    let mut builder = BatchBuilder::new(Codec::None);
    let key = format!("key-{partition:05}");
    builder
        .push(
            1_700_000_000_000,
            Some(key.as_bytes()),
            &value_of(partition),
            &[],
        )
        .expect("fits");
    validate(builder.finish().expect("batch builds")).expect("built batches validate")
}

/// Runs `work(i)` for every `i` in `0..count`, at most `CONCURRENCY` at once.
async fn for_each_concurrently<F, Fut>(count: usize, work: F)
where
    F: Fn(usize) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let next = Rc::new(Cell::new(0usize));
    let work = Rc::new(work);
    let workers: Vec<_> = (0..CONCURRENCY.min(count))
        .map(|_| {
            let next = next.clone();
            let work = work.clone();
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= count {
                        break;
                    }
                    next.set(i + 1);
                    work(i).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
}

type Logs = Rc<RefCell<Vec<Option<PartitionLog>>>>;

async fn open_all(shard: &LogShard, root: &Path) -> Vec<PartitionLog> {
    let logs: Logs = Rc::new(RefCell::new(vec![None; PARTITIONS]));
    let (shard, root, slots) = (shard.clone(), root.to_path_buf(), logs.clone());
    for_each_concurrently(PARTITIONS, move |i| {
        let (shard, dir, slots) = (shard.clone(), partition_dir(&root, i), slots.clone());
        async move {
            let log = shard
                .open_partition(&dir, log_config())
                .await
                .expect("partition opens");
            slots.borrow_mut()[i] = Some(log);
        }
    })
    .await;
    let logs = logs.take();
    logs.into_iter()
        .map(|log| log.expect("every partition opened"))
        .collect()
}

async fn append_all(logs: &[PartitionLog]) {
    let mut last_offsets = Vec::with_capacity(logs.len());
    for (i, log) in logs.iter().enumerate() {
        let info = log
            .append(batch_for(i), LEADER_EPOCH)
            .await
            .expect("append succeeds");
        last_offsets.push(info.last_offset);
    }
    for (log, last) in logs.iter().zip(last_offsets) {
        log.wait_durable(last)
            .await
            .expect("append becomes durable");
    }
}

async fn read_all(logs: &[PartitionLog]) {
    let logs: Rc<Vec<PartitionLog>> = Rc::new(logs.to_vec());
    let count = logs.len();
    for_each_concurrently(count, move |i| {
        let logs = logs.clone();
        async move { check_read(&logs[i], i).await }
    })
    .await;
}

async fn check_read(log: &PartitionLog, partition: usize) {
    let read = log
        .read(0, READ_MAX_BYTES, u64::MAX)
        .await
        .expect("read succeeds");
    assert_eq!(
        (read.first_offset, read.next_offset),
        (0, 1),
        "partition {partition}"
    );
    assert_eq!(read.chunks.len(), 1, "partition {partition}: one batch");
    let mut batches = BatchIter::new(&read.chunks[0]);
    let (_, bytes) = batches
        .next()
        .expect("one batch")
        .expect("the batch is valid");
    let mut scratch = Vec::new();
    let batch = records(bytes, &mut scratch).expect("the batch's records decode");
    let record = batch.iter().next().expect("one record");
    assert_eq!(
        record.value,
        value_of(partition).as_slice(),
        "partition {partition}"
    );
}

async fn close_all(logs: Vec<PartitionLog>) {
    let logs = Rc::new(logs);
    let count = logs.len();
    for_each_concurrently(count, move |i| {
        let logs = logs.clone();
        async move { logs[i].close().await.expect("partition closes") }
    })
    .await;
}

/// Process-wide measurements taken at the end of a phase.
struct Sample {
    phase: &'static str,
    elapsed: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    fds: usize,
    /// The most descriptors the watcher saw open during the phase.
    fds_peak: usize,
    shard_open_files: usize,
    shard_cache_bytes: usize,
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// Counts open descriptors every `FD_SAMPLE_INTERVAL` in a background task, keeping the peak.
struct FdWatch {
    peak: Rc<Cell<usize>>,
    stop: Rc<Cell<bool>>,
    task: glommio::task::JoinHandle<()>,
}

impl FdWatch {
    fn start() -> FdWatch {
        let (peak, stop) = (Rc::new(Cell::new(open_fds())), Rc::new(Cell::new(false)));
        let (task_peak, task_stop) = (peak.clone(), stop.clone());
        let task = glommio::spawn_local(async move {
            while !task_stop.get() {
                task_peak.set(task_peak.get().max(open_fds()));
                glommio::timer::sleep(FD_SAMPLE_INTERVAL).await;
            }
        })
        .detach();
        FdWatch { peak, stop, task }
    }

    /// The peak since the last call, starting a new phase at the current count.
    fn take_peak(&self) -> usize {
        let now = open_fds();
        self.peak.replace(now).max(now)
    }

    async fn stop(self) {
        self.stop.set(true);
        self.task.await;
    }
}

fn sample(phase: &'static str, started: Instant, shard: &LogShard, watch: &FdWatch) -> Sample {
    Sample {
        phase,
        elapsed: started.elapsed(),
        rss_kib: status_kib("VmRSS"),
        hwm_kib: status_kib("VmHWM"),
        fds: open_fds(),
        fds_peak: watch.take_peak(),
        shard_open_files: shard.open_files(),
        shard_cache_bytes: shard.cache_bytes(),
    }
}

/// (allocated bytes, apparent bytes, files) under `root`.
fn disk_usage(root: &Path) -> (u64, u64, usize) {
    let mut totals = (0, 0, 0);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                totals.0 += metadata.blocks() * STAT_BLOCK_BYTES;
                totals.1 += metadata.len();
                totals.2 += 1;
            }
        }
    }
    totals
}

async fn run(root: PathBuf) -> (Vec<Sample>, (u64, u64, usize)) {
    let shard = LogShard::new(ShardLogConfig::default());
    let watch = FdWatch::start();
    let mut samples = vec![sample("start", Instant::now(), &shard, &watch)];

    let started = Instant::now();
    let logs = open_all(&shard, &root).await;
    samples.push(sample("create", started, &shard, &watch));

    let started = Instant::now();
    append_all(&logs).await;
    samples.push(sample("append+durable", started, &shard, &watch));
    let usage = disk_usage(&root);

    let started = Instant::now();
    read_all(&logs).await;
    samples.push(sample("read (cache)", started, &shard, &watch));

    let started = Instant::now();
    close_all(logs).await;
    samples.push(sample("close", started, &shard, &watch));

    let shard = LogShard::new(ShardLogConfig::default());
    let started = Instant::now();
    let logs = open_all(&shard, &root).await;
    samples.push(sample("reopen", started, &shard, &watch));

    let started = Instant::now();
    read_all(&logs).await;
    samples.push(sample("read (disk)", started, &shard, &watch));

    let started = Instant::now();
    close_all(logs).await;
    samples.push(sample("close again", started, &shard, &watch));
    watch.stop().await;
    (samples, usage)
}

fn main() {
    let temp = tempfile::Builder::new()
        .prefix("shardline-many-partitions-")
        .tempdir_in(TEMP_PARENT)
        .expect("temporary directory under /tmp");
    let root = temp.path().to_path_buf();
    let (samples, (allocated, apparent, files)) = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || run(root))
        .expect("executor starts")
        .join()
        .expect("the run completes");

    println!(
        "{PARTITIONS} partitions on one shard (open-file budget {}), {CONCURRENCY} operations \
         in flight, segment {SEGMENT_BYTES} B, preallocate {PREALLOCATE_BYTES} B, \
         interval {FLUSH_INTERVAL_US} us",
        shardline::constants::OPEN_SEGMENT_FILES_DEFAULT
    );
    println!(
        "{:<16} {:>10} {:>12} {:>12} {:>8} {:>9} {:>12} {:>12}",
        "phase",
        "elapsed_ms",
        "VmRSS_MiB",
        "VmHWM_MiB",
        "fds",
        "fds_peak",
        "shard_files",
        "cache_KiB"
    );
    for s in &samples {
        println!(
            "{:<16} {:>10.1} {:>12.1} {:>12.1} {:>8} {:>9} {:>12} {:>12.1}",
            s.phase,
            s.elapsed.as_secs_f64() * 1e3,
            s.rss_kib as f64 / 1024.0,
            s.hwm_kib as f64 / 1024.0,
            s.fds,
            s.fds_peak,
            s.shard_open_files,
            s.shard_cache_bytes as f64 / 1024.0,
        );
    }
    println!(
        "disk after appends: {:.1} MiB allocated, {:.1} MiB apparent, {files} files \
         ({:.1} KiB allocated per partition)",
        allocated as f64 / (1024.0 * 1024.0),
        apparent as f64 / (1024.0 * 1024.0),
        allocated as f64 / 1024.0 / PARTITIONS as f64,
    );
    drop(temp);
}
