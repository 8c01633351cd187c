//! Latency of durability: what a durable append costs next to the fdatasync under it.
//!
//! Cases, each `OPERATIONS` measured operations after `WARM_UP_OPERATIONS` unmeasured ones:
//!
//! - `bare_write_fdatasync`: a 4 KiB O_DIRECT write at the next position of a preallocated
//!   file (as the log's segments are) and an fdatasync, with glommio's `DmaFile` directly,
//!   one after another. The floor a durable append stands on.
//! - `bare_overwrite_fdatasync`: the same over blocks written before (no unwritten extents to
//!   convert), to show what the preallocation costs the sync.
//! - `bare_tail_rewrite_fdatasync`: 8 KiB writes that rewrite the last page written and add
//!   the next, + fdatasync, as one IO. The log once wrote small appends this way; on ext4 such
//!   a write spans a written and an unwritten extent, io_uring punts it to a worker thread,
//!   and on a busy CPU it waits a scheduler tick (~4 ms). The log now writes the tail page as
//!   an IO of its own (see `log::flush::write_run`); this case keeps the contrast visible.
//! - `durable_append`: a ~4 KiB batch appended under the `every-batch` policy, then
//!   `wait_durable`, one after another.
//! - `durable_append_8_concurrent`: the same by `CONCURRENT_APPENDERS` tasks at once, each
//!   doing `OPERATIONS` (group commit shares writes and syncs between them).
//!
//! Prints a table and writes `target/bench-reports/log_latency.json` (machine, parameters,
//! percentiles, and the ratio of the durable append's p99 to the bare fdatasync's p99; the
//! target is at most `P99_RATIO_TARGET_MAX`).
//!
//! Run: `cargo bench --bench log_latency`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use shardline::log::{FlushPolicy, IoStats, LogConfig, LogShard, PartitionLog, ShardLogConfig};
use shardline::record::{validate, BatchBuilder, Codec, ValidatedBatch};

const OPERATIONS: usize = 2000;
const WARM_UP_OPERATIONS: usize = 100;
/// The bare write's size: one IO page.
const WRITE_BYTES: usize = 4096;
const CONCURRENT_APPENDERS: usize = 8;
/// A batch of this many records of `VALUE_BYTES` comes to about 4 KiB.
const RECORDS_PER_BATCH: usize = 4;
const VALUE_BYTES: usize = 960;
const KEY_BYTES: usize = 16;
const LEADER_EPOCH: u32 = 1;
/// glommio's registered IO memory (memlock is 8 MiB on the bench machine).
const IO_MEMORY_BYTES: usize = 1024 * 1024;
/// Where the temporary files go (ext4, O_DIRECT capable).
const TEMP_PARENT: &str = "/tmp";
/// The target: a durable append's p99 within this factor of a bare fdatasync's.
const P99_RATIO_TARGET_MAX: f64 = 2.0;
/// Histogram range: 1 ns to 60 s, 3 significant digits.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
const HISTOGRAM_DIGITS: u8 = 3;
const REPORT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-reports");
const REPORT_NAME: &str = "log_latency.json";

const _: () = assert!(WRITE_BYTES as u64 % shardline::constants::IO_ALIGNMENT_BYTES == 0);

/// One case's measured latencies and what its writer did.
struct CaseResult {
    name: &'static str,
    description: &'static str,
    histogram: Histogram<u64>,
    elapsed: Duration,
    /// The log's IO counters and the appends they cover (warm-up included).
    io_stats: Option<(IoStats, usize)>,
}

impl CaseResult {
    fn quantile_us(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1e3
    }

    fn max_us(&self) -> f64 {
        self.histogram.max() as f64 / 1e3
    }
}

const QUANTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99_9", 0.999),
];

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_DIGITS).expect("histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(nanos.clamp(1, LATENCY_NS_MAX));
}

/// A ~4 KiB batch, validated, as a producer would send it.
fn small_batch(sequence: usize) -> ValidatedBatch {
    let mut builder = BatchBuilder::new(Codec::None);
    for i in 0..RECORDS_PER_BATCH {
        let key = format!("key-{:012}", sequence % 1_000_000).into_bytes();
        assert_eq!(key.len(), KEY_BYTES);
        let value = vec![(sequence + i) as u8; VALUE_BYTES];
        builder
            .push(1_700_000_000_000, Some(&key), &value, &[])
            .expect("record fits");
    }
    validate(builder.finish().expect("batch builds")).expect("built batches validate")
}

fn every_batch_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::EveryBatch,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// What a bare case writes before each fdatasync.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BareMode {
    /// The next page of a preallocated file (unwritten extents, as in a new segment).
    Fresh,
    /// The next page of a file whose blocks were all written before.
    Overwrite,
    /// Two pages from the last one written: rewriting it and adding the next, as the log
    /// does when it rewrites the partial tail page in front of a small batch.
    TailRewrite,
}

impl BareMode {
    fn name(self) -> (&'static str, &'static str) {
        match self {
            BareMode::Fresh => (
                "bare_write_fdatasync",
                "4 KiB O_DIRECT write into preallocated space + fdatasync",
            ),
            BareMode::Overwrite => (
                "bare_overwrite_fdatasync",
                "4 KiB O_DIRECT rewrite of written blocks + fdatasync",
            ),
            BareMode::TailRewrite => (
                "bare_tail_rewrite_fdatasync",
                "8 KiB O_DIRECT write: last page again + next page (preallocated) + fdatasync",
            ),
        }
    }

    fn pages(self) -> usize {
        if self == BareMode::TailRewrite {
            2
        } else {
            1
        }
    }
}

/// Writes and fdatasyncs at increasing page positions of a fresh file preallocated like a
/// segment, one operation after another, as `mode` says.
async fn bare_case(dir: &Path, mode: BareMode) -> CaseResult {
    let (name, description) = mode.name();
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .dma_open(&path)
        .await
        .expect("bare file opens");
    let total_operations = WARM_UP_OPERATIONS + OPERATIONS;
    let file_bytes = ((total_operations + mode.pages()) * WRITE_BYTES) as u64;
    file.pre_allocate(file_bytes, false)
        .await
        .expect("bare file preallocates");
    if mode == BareMode::Overwrite {
        for operation in 0..total_operations {
            write_pages(&file, operation, 1).await;
        }
        file.fdatasync().await.expect("fdatasync");
    }
    let mut histogram = new_histogram();
    let started = Instant::now();
    for operation in 0..total_operations {
        let began = Instant::now();
        write_pages(&file, operation, mode.pages()).await;
        file.fdatasync().await.expect("fdatasync");
        if operation >= WARM_UP_OPERATIONS {
            record(&mut histogram, began.elapsed());
        }
    }
    let elapsed = started.elapsed();
    file.close().await.expect("bare file closes");
    std::fs::remove_file(&path).expect("bare file is removed");
    CaseResult {
        name,
        description,
        histogram,
        elapsed,
        io_stats: None,
    }
}

/// Writes `pages` pages from page `first_page`.
async fn write_pages(file: &DmaFile, first_page: usize, pages: usize) {
    let length = pages * WRITE_BYTES;
    let mut buffer = file.alloc_dma_buffer(length);
    buffer.as_bytes_mut().fill(first_page as u8);
    let written = file
        .write_at(buffer, (first_page * WRITE_BYTES) as u64)
        .await
        .expect("pages written");
    assert_eq!(written, length, "short write");
}

/// `operations` appends, each waited durable before the next; latencies go to `histogram`
/// once `warm_up` appends are done.
async fn appender(
    log: PartitionLog,
    batches: Vec<ValidatedBatch>,
    warm_up: usize,
    histogram: Rc<RefCell<Histogram<u64>>>,
) {
    for (operation, batch) in batches.into_iter().enumerate() {
        let began = Instant::now();
        let info = log
            .append(batch, LEADER_EPOCH)
            .await
            .expect("append succeeds");
        log.wait_durable(info.last_offset)
            .await
            .expect("append becomes durable");
        if operation >= warm_up {
            record(&mut histogram.borrow_mut(), began.elapsed());
        }
    }
}

async fn append_case(dir: &Path, appenders: usize) -> CaseResult {
    let log_dir = dir.join(format!("log-{appenders}"));
    let shard = LogShard::new(ShardLogConfig::default());
    let log = shard
        .open_partition(&log_dir, every_batch_config())
        .await
        .expect("log opens");
    let per_appender = WARM_UP_OPERATIONS + OPERATIONS;
    let batches: Vec<Vec<ValidatedBatch>> = (0..appenders)
        .map(|a| {
            (0..per_appender)
                .map(|i| small_batch(a * per_appender + i))
                .collect()
        })
        .collect();
    let histogram = Rc::new(RefCell::new(new_histogram()));
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batches| {
            let task = appender(log.clone(), batches, WARM_UP_OPERATIONS, histogram.clone());
            glommio::spawn_local(task)
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = started.elapsed();
    let io_stats = Some((log.io_stats(), appenders * per_appender));
    log.close().await.expect("log closes");
    std::fs::remove_dir_all(&log_dir).expect("log directory is removed");
    let histogram = Rc::try_unwrap(histogram)
        .expect("appenders are done")
        .into_inner();
    let (name, description) = if appenders == 1 {
        (
            "durable_append",
            "~4 KiB batch append (every-batch) + wait_durable, one at a time",
        )
    } else {
        (
            "durable_append_8_concurrent",
            "the same by 8 concurrent appenders (group commit)",
        )
    };
    CaseResult {
        name,
        description,
        histogram,
        elapsed,
        io_stats,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split(':').nth(1))
        .map_or_else(|| "?".into(), |model| model.trim().to_string())
}

/// The filesystem type and device of the mount holding `path` (longest matching mount point).
fn filesystem_of(path: &Path) -> (String, String) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 3).then(|| (fields[0], fields[1], fields[2]))
        })
        .filter(|(_, mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _)| mount_point.len())
        .map_or_else(
            || ("?".into(), "?".into()),
            |(device, _, fs_type)| (fs_type.to_string(), device.to_string()),
        )
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn case_json(case: &CaseResult) -> String {
    let mut out = format!(
        "{{\"name\": {}, \"description\": {}, \"operations\": {}, \"elapsed_ms\": {:.1}",
        json_string(case.name),
        json_string(case.description),
        case.histogram.len(),
        case.elapsed.as_secs_f64() * 1e3
    );
    for (label, quantile) in QUANTILES {
        let _ = write!(
            out,
            ", \"latency_us_{label}\": {:.1}",
            case.quantile_us(quantile)
        );
    }
    let _ = write!(out, ", \"latency_us_max\": {:.1}", case.max_us());
    if let Some((stats, _)) = case.io_stats {
        let _ = write!(
            out,
            ", \"write_rounds\": {}, \"writes\": {}, \"syncs\": {}, \"bytes_written\": {}",
            stats.write_rounds, stats.writes, stats.syncs, stats.bytes_written
        );
    }
    out.push('}');
    out
}

fn report_json(cases: &[CaseResult], batch_bytes: usize, ratio: f64, temp_dir: &Path) -> String {
    let (fs_type, device) = filesystem_of(temp_dir);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let config = every_batch_config();
    let tuning = std::env::var("SHARDLINE_TUNING_PROFILE").unwrap_or_else(|_| "none".into());
    let cases: Vec<String> = cases
        .iter()
        .map(|c| format!("    {}", case_json(c)))
        .collect();
    format!(
        "{{\n  \"bench\": \"log_latency\",\n  \"unix_time_s\": {},\n  \"machine\": {{\"nproc\": {nproc}, \
         \"kernel\": {}, \"cpu\": {}, \"filesystem\": {}, \"device\": {}}},\n  \
         \"tuning_profile\": {},\n  \"parameters\": {{\"operations\": {OPERATIONS}, \
         \"warm_up_operations\": {WARM_UP_OPERATIONS}, \"bare_write_bytes\": {WRITE_BYTES}, \
         \"batch_bytes\": {batch_bytes}, \"records_per_batch\": {RECORDS_PER_BATCH}, \
         \"concurrent_appenders\": {CONCURRENT_APPENDERS}, \"flush_policy\": \"every-batch\", \
         \"segment_bytes\": {}, \"preallocate_bytes\": {}, \"io_memory_bytes\": {IO_MEMORY_BYTES}, \
         \"placement\": \"unbound\", \"temp_dir\": {}}},\n  \"cases\": [\n{}\n  ],\n  \
         \"p99_ratio_durable_append_to_bare_fdatasync\": {ratio:.3},\n  \
         \"p99_ratio_target_max\": {P99_RATIO_TARGET_MAX},\n  \"p99_ratio_within_target\": {}\n}}\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        json_string(&read_trimmed("/proc/sys/kernel/osrelease")),
        json_string(&cpu_model()),
        json_string(&fs_type),
        json_string(&device),
        json_string(&tuning),
        config.segment_bytes,
        config.preallocate_bytes,
        json_string(&temp_dir.display().to_string()),
        cases.join(",\n"),
        ratio <= P99_RATIO_TARGET_MAX,
    )
}

fn print_table(cases: &[CaseResult]) {
    println!(
        "{:<30} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "case", "ops", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "ops/sync"
    );
    for case in cases {
        let per_sync = case.io_stats.map_or_else(
            || "-".to_string(),
            |(stats, appends)| format!("{:.2}", appends as f64 / stats.syncs.max(1) as f64),
        );
        println!(
            "{:<30} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12}",
            case.name,
            case.histogram.len(),
            case.quantile_us(0.50),
            case.quantile_us(0.90),
            case.quantile_us(0.99),
            case.quantile_us(0.999),
            case.max_us(),
            per_sync
        );
    }
}

fn main() {
    let temp = tempfile::Builder::new()
        .prefix("shardline-latency-")
        .tempdir_in(TEMP_PARENT)
        .expect("temporary directory under /tmp");
    let dir: PathBuf = temp.path().to_path_buf();
    let batch_bytes = small_batch(0).len();
    let run_dir = dir.clone();
    let cases = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move {
            vec![
                bare_case(&run_dir, BareMode::Fresh).await,
                bare_case(&run_dir, BareMode::Overwrite).await,
                bare_case(&run_dir, BareMode::TailRewrite).await,
                append_case(&run_dir, 1).await,
                append_case(&run_dir, CONCURRENT_APPENDERS).await,
            ]
        })
        .expect("executor starts")
        .join()
        .expect("latency cases complete");

    println!(
        "batch: {batch_bytes} bytes; {OPERATIONS} measured operations per case (per appender)"
    );
    print_table(&cases);
    let p99_us = |name: &str| {
        let case = cases
            .iter()
            .find(|c| c.name == name)
            .expect("every case ran");
        case.quantile_us(0.99)
    };
    let ratio = p99_us("durable_append") / p99_us("bare_write_fdatasync");
    let verdict = if ratio <= P99_RATIO_TARGET_MAX {
        "within"
    } else {
        "OVER"
    };
    println!(
        "p99 durable_append / p99 bare_write_fdatasync = {ratio:.2} ({verdict} the {P99_RATIO_TARGET_MAX}x target)"
    );

    let report = report_json(&cases, batch_bytes, ratio, &dir);
    let report_dir = Path::new(REPORT_DIR);
    std::fs::create_dir_all(report_dir).expect("report directory");
    let report_path = report_dir.join(REPORT_NAME);
    std::fs::write(&report_path, report).expect("report written");
    println!("report: {}", report_path.display());
}
