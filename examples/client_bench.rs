//! client_bench: what the Rust client gets out of an already running broker, with and
//! without shard-aware routing. A measurement tool, not a test: it asserts nothing about
//! speed, it reports.
//!
//! For 1 KiB values whose keys send message `i` to partition `i % partitions`:
//!
//! 1. `produce`: closed loop with acks=all for `--seconds`; at most `--outstanding` messages
//!    are sent and not yet acknowledged. Throughput counts acknowledged messages over the
//!    time from the first send to the last acknowledgement.
//! 2. `latency`: open loop at `--rate` messages/s for `--seconds`. Message `i` is due at
//!    `start + i / rate`; its latency runs from that due time to the moment its delivery
//!    resolves, so a stalled sender (or a full producer buffer) shows up as latency instead
//!    of hiding it (no coordinated omission). `send_lag` is how late `send()` was called.
//! 3. `consume`: every record from the earliest offset to the high watermark seen when the
//!    phase starts, one consumer over all partitions.
//!
//! Each phase runs once per routing mode (`--shard-aware true|false|both`, default both:
//! not shard-aware first); all produce phases come first, then all latency phases, then
//! all consume phases, so both consume phases read the same data. A short closed-loop
//! warm-up opens each mode's connections before its first measurement. The client runs on
//! one unpinned glommio executor.
//!
//! Units: MB is 10^6 bytes of message values (keys and framing not counted); latencies are
//! in µs; `ratio` is shard-aware ÷ not shard-aware. The table goes to stdout, then the
//! report as one JSON object on the last line (also to `--json-out` when given).
//!
//! Run against a broker that is already listening:
//! `cargo run --release --example client_bench -- --broker 127.0.0.1:9092 --seconds 5`

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use glommio::sync::{Semaphore, StaticPermit};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use shardline::client::{
    partition_for_key, Admin, ClientError, Cluster, Consumer, ConsumerConfig, Delivery, Producer,
    ProducerConfig, RecordMetadata, StartFrom,
};
use shardline::protocol::{Acks, OffsetSpec};
use shardline::server::Profile;

/// Bytes in every message's value.
const VALUE_BYTES: usize = 1024;
/// Distinct keys per partition (message `i` uses key `(i / partitions) % KEYS_PER_PARTITION`
/// of partition `i % partitions`).
const KEYS_PER_PARTITION: usize = 64;
/// Candidate keys tried while finding `KEYS_PER_PARTITION` keys for every partition.
const KEY_CANDIDATES_MAX: u64 = 50_000_000;
const CLIENT_ID: &str = "client-bench";
/// Latency histograms: 1 µs to 10 minutes at 3 significant digits.
const LATENCY_US_LOWEST: u64 = 1;
const LATENCY_US_HIGHEST: u64 = 600_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Messages a sender queues before it yields its task queue, so the reactor can move the
/// socket IO (a glommio task that never waits starves the reactor).
const SEND_BURST_MESSAGES: u64 = 64;
/// Pause between phases, so one phase's tail (flushes, retries) does not land in the next.
const PHASE_PAUSE: Duration = Duration::from_millis(300);
/// How long waiting for the last deliveries of a phase may take.
const DRAIN_TIME_MAX: Duration = Duration::from_secs(60);
/// How often a drain checks whether every delivery resolved.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_micros(200);
/// How long reading the topic back may take before the consume phase gives up.
const CONSUME_TIME_MAX: Duration = Duration::from_secs(60);
const BYTES_PER_MB: f64 = 1e6;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

const _: () = assert!(LATENCY_US_LOWEST >= 1 && LATENCY_US_LOWEST < LATENCY_US_HIGHEST);
const _: () = assert!(SEND_BURST_MESSAGES > 0 && KEYS_PER_PARTITION > 0);

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Produce/latency/consume measurement of the shardline client against a running broker"
)]
struct Args {
    /// The broker's main address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker: String,
    /// The topic to use (created when missing).
    #[arg(long, default_value = "client-bench")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Length of the produce phase and of the latency phase, each, per routing mode.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Open-loop send rate of the latency phase, messages per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Messages sent and not yet acknowledged in the produce phase (closed loop).
    #[arg(long, default_value_t = 4096)]
    outstanding: u64,
    /// Route to the shard that owns a partition (`true`), through the main port (`false`),
    /// or measure both.
    #[arg(long, value_enum, default_value = "both")]
    shard_aware: Routing,
    /// Producer linger (default: the client's default).
    #[arg(long)]
    linger_us: Option<u64>,
    /// Producer batch size (default: the client's default).
    #[arg(long)]
    batch_bytes: Option<usize>,
    /// Which phases to run, comma separated (default: all three, in this order).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "produce,latency,consume"
    )]
    phases: Vec<Phase>,
    /// Closed-loop warm-up per routing mode before its first produce or latency phase.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// The tuning profile the broker runs with: only read and recorded in the report.
    #[arg(long)]
    broker_profile: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Routing {
    Both,
    True,
    False,
}

impl Routing {
    fn modes(self) -> Vec<bool> {
        match self {
            Routing::Both => vec![false, true],
            Routing::True => vec![true],
            Routing::False => vec![false],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Produce,
    Latency,
    Consume,
}

fn mode_name(shard_aware: bool) -> &'static str {
    if shard_aware {
        "shard_aware"
    } else {
        "not_shard_aware"
    }
}

/// The messages every phase sends. Built once, read by the bench's one executor.
struct Workload {
    topic: String,
    partitions: u32,
    /// `keys[p]` all hash to partition `p`.
    keys: Vec<Vec<Vec<u8>>>,
    value: Vec<u8>,
}

impl Workload {
    fn new(topic: &str, partitions: u32) -> Result<Workload, String> {
        assert!(partitions > 0, "a topic has at least one partition");
        let mut keys: Vec<Vec<Vec<u8>>> = vec![Vec::new(); partitions as usize];
        let mut missing = keys.len();
        for candidate in 0..KEY_CANDIDATES_MAX {
            let key = format!("key-{candidate}").into_bytes();
            let slot = &mut keys[partition_for_key(&key, partitions) as usize];
            if slot.len() < KEYS_PER_PARTITION {
                slot.push(key);
                if slot.len() == KEYS_PER_PARTITION {
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
        }
        if missing > 0 {
            return Err(format!(
                "found no {KEYS_PER_PARTITION} keys for each of {partitions} partitions \
                 among {KEY_CANDIDATES_MAX} candidates"
            ));
        }
        let value = (0..VALUE_BYTES).map(|i| (i * 31 + 7) as u8).collect();
        Ok(Workload {
            topic: topic.to_string(),
            partitions,
            keys,
            value,
        })
    }

    fn key(&self, index: u64) -> &[u8] {
        let partitions = u64::from(self.partitions);
        let partition = (index % partitions) as usize;
        let slot = ((index / partitions) % KEYS_PER_PARTITION as u64) as usize;
        &self.keys[partition][slot]
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(
        LATENCY_US_LOWEST,
        LATENCY_US_HIGHEST,
        LATENCY_SIGNIFICANT_DIGITS,
    )
    .expect("the latency histogram bounds are valid constants")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// What the delivery tasks of one phase saw. Owned by the bench's one executor.
struct Tally {
    acknowledged: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    last_delivery: Cell<Option<Instant>>,
    /// From each message's start (send call or due time) to its delivery.
    latency_us: RefCell<Histogram<u64>>,
}

impl Tally {
    fn new() -> Rc<Tally> {
        Rc::new(Tally {
            acknowledged: Cell::new(0),
            failed: Cell::new(0),
            first_error: RefCell::new(None),
            last_delivery: Cell::new(None),
            latency_us: RefCell::new(new_histogram()),
        })
    }

    fn resolved(&self) -> u64 {
        self.acknowledged.get() + self.failed.get()
    }

    fn record(&self, result: Result<RecordMetadata, ClientError>, since: Instant) {
        let now = Instant::now();
        match result {
            Ok(_) => {
                self.acknowledged.set(self.acknowledged.get() + 1);
                self.latency_us
                    .borrow_mut()
                    .saturating_record(micros(now - since));
            }
            Err(error) => self.fail(&error.to_string()),
        }
        self.last_delivery.set(Some(now));
    }

    fn fail(&self, error: &str) {
        self.failed.set(self.failed.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| error.to_string());
    }
}

/// Waits for a delivery in the background; `permit` (a closed-loop window slot) is given
/// back once it resolves.
fn watch(delivery: Delivery, tally: Rc<Tally>, since: Instant, permit: Option<StaticPermit>) {
    glommio::spawn_local(async move {
        let result = delivery.wait().await;
        tally.record(result, since);
        drop(permit);
    })
    .detach();
}

async fn send_one(
    producer: &Producer,
    workload: &Workload,
    index: u64,
    tally: &Rc<Tally>,
    since: Instant,
    permit: Option<StaticPermit>,
) {
    let key = workload.key(index);
    match producer
        .send(&workload.topic, Some(key), &workload.value)
        .await
    {
        Ok(delivery) => watch(delivery, tally.clone(), since, permit),
        Err(error) => tally.fail(&error.to_string()),
    }
}

/// Sends what is still open and waits until each of `sent` messages resolved; the ones
/// still unanswered after `DRAIN_TIME_MAX` count as failed.
async fn drain(producer: &Producer, tally: &Tally, sent: u64) {
    producer.flush().await;
    let deadline = Instant::now() + DRAIN_TIME_MAX;
    while tally.resolved() < sent {
        if Instant::now() >= deadline {
            let unanswered = sent - tally.resolved();
            tally.failed.set(tally.failed.get() + unanswered);
            tally.first_error.borrow_mut().get_or_insert_with(|| {
                format!("{unanswered} messages unanswered after {DRAIN_TIME_MAX:?}")
            });
            return;
        }
        glommio::timer::sleep(DRAIN_POLL_INTERVAL).await;
    }
}

/// One phase's results as named numbers (units last in each name), plus its first error.
#[derive(Debug, Default, Clone)]
struct PhaseReport {
    metrics: Vec<(&'static str, f64)>,
    first_error: Option<String>,
    /// Messages this phase saw acknowledged (none for a consume phase).
    acknowledged: u64,
}

fn rate(count: f64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// Closed loop: keeps `outstanding` messages unacknowledged for `duration`.
async fn produce_closed_loop(
    producer: &Producer,
    workload: &Workload,
    outstanding: u64,
    duration: Duration,
) -> PhaseReport {
    let window = Rc::new(Semaphore::new(outstanding));
    let tally = Tally::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let permit = window
            .acquire_static_permit(1)
            .await
            .expect("the window semaphore is never closed");
        send_one(
            producer,
            workload,
            sent,
            &tally,
            Instant::now(),
            Some(permit),
        )
        .await;
        sent += 1;
        if sent % SEND_BURST_MESSAGES == 0 {
            glommio::executor().yield_task_queue_now().await;
        }
    }
    drain(producer, &tally, sent).await;
    let elapsed = tally.last_delivery.get().unwrap_or(started) - started;
    let acknowledged = tally.acknowledged.get() as f64;
    let first_error = tally.first_error.borrow().clone();
    let latency = tally.latency_us.borrow();
    PhaseReport {
        metrics: vec![
            ("produce_messages", acknowledged),
            ("produce_errors", tally.failed.get() as f64),
            ("produce_seconds", elapsed.as_secs_f64()),
            ("produce_messages_per_second", rate(acknowledged, elapsed)),
            (
                "produce_megabytes_per_second",
                rate(acknowledged * VALUE_BYTES as f64, elapsed) / BYTES_PER_MB,
            ),
            (
                "produce_latency_us_p50",
                latency.value_at_quantile(0.5) as f64,
            ),
            (
                "produce_latency_us_p99",
                latency.value_at_quantile(0.99) as f64,
            ),
        ],
        first_error,
        acknowledged: tally.acknowledged.get(),
    }
}

/// Open loop: message `index` is due at `started + index / rate_per_second`.
async fn produce_open_loop(
    producer: &Producer,
    workload: &Workload,
    rate_per_second: u64,
    duration: Duration,
) -> PhaseReport {
    assert!(rate_per_second > 0, "checked with the arguments");
    let count = (rate_per_second as f64 * duration.as_secs_f64()) as u64;
    let tally = Tally::new();
    let mut send_lag_us = new_histogram();
    let started = Instant::now();
    let mut last_send = started;
    for index in 0..count {
        let due = started + Duration::from_nanos(index * NANOS_PER_SECOND / rate_per_second);
        let now = Instant::now();
        if due > now {
            glommio::timer::sleep(due - now).await;
        } else if index % SEND_BURST_MESSAGES == 0 {
            glommio::executor().yield_task_queue_now().await;
        }
        last_send = Instant::now();
        send_lag_us.saturating_record(micros(last_send.saturating_duration_since(due)));
        send_one(producer, workload, index, &tally, due, None).await;
    }
    drain(producer, &tally, count).await;
    let first_error = tally.first_error.borrow().clone();
    let latency = tally.latency_us.borrow();
    let percentile = |quantile: f64| latency.value_at_quantile(quantile) as f64;
    PhaseReport {
        metrics: vec![
            ("latency_rate_target_per_second", rate_per_second as f64),
            (
                "latency_rate_sent_per_second",
                rate(count as f64, last_send - started),
            ),
            (
                "latency_rate_acknowledged_per_second",
                rate(
                    tally.acknowledged.get() as f64,
                    tally.last_delivery.get().unwrap_or(started) - started,
                ),
            ),
            ("latency_messages", tally.acknowledged.get() as f64),
            ("latency_errors", tally.failed.get() as f64),
            ("latency_us_p50", percentile(0.5)),
            ("latency_us_p90", percentile(0.9)),
            ("latency_us_p99", percentile(0.99)),
            ("latency_us_p999", percentile(0.999)),
            ("latency_us_max", latency.max() as f64),
            ("latency_us_mean", latency.mean()),
            (
                "latency_send_lag_us_p99",
                send_lag_us.value_at_quantile(0.99) as f64,
            ),
            ("latency_send_lag_us_max", send_lag_us.max() as f64),
        ],
        first_error,
        acknowledged: tally.acknowledged.get(),
    }
}

/// The `[earliest, high watermark)` range of every partition, by partition.
async fn offset_ranges(
    cluster: &Rc<Cluster>,
    workload: &Workload,
) -> Result<Vec<(u64, u64)>, ClientError> {
    let admin = Admin::new(cluster.clone());
    let mut ranges = Vec::new();
    for partition in 0..workload.partitions {
        let earliest = admin
            .list_offset(&workload.topic, partition, OffsetSpec::Earliest)
            .await?;
        let latest = admin
            .list_offset(&workload.topic, partition, OffsetSpec::Latest)
            .await?;
        ranges.push((earliest, latest));
    }
    Ok(ranges)
}

/// Reads every partition from its earliest offset to the high watermark seen at the start.
async fn consume_all(cluster: Rc<Cluster>, workload: &Workload) -> Result<PhaseReport, String> {
    let ranges = offset_ranges(&cluster, workload)
        .await
        .map_err(|e| format!("listing offsets: {e}"))?;
    let expected: u64 = ranges.iter().map(|(start, end)| end - start).sum();
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    consumer
        .assign(&workload.topic, None, StartFrom::Earliest)
        .await
        .map_err(|e| format!("assigning: {e}"))?;
    let started = Instant::now();
    let mut records = 0u64;
    let mut value_bytes = 0u64;
    let mut first_error = None;
    let caught_up = |consumer: &Consumer| {
        ranges.iter().enumerate().all(|(partition, (_, end))| {
            consumer
                .position(&workload.topic, partition as u32)
                .is_some_and(|position| position >= *end)
        })
    };
    while !caught_up(&consumer) {
        if started.elapsed() > CONSUME_TIME_MAX {
            first_error = Some(format!("not caught up after {CONSUME_TIME_MAX:?}"));
            break;
        }
        let fetched = match consumer.poll().await {
            Ok(fetched) => fetched,
            Err(error) => {
                first_error = Some(format!("poll: {error}"));
                break;
            }
        };
        let counted = fetched.for_each(|_, partition, record| {
            if record.offset < ranges[partition as usize].1 {
                records += 1;
                value_bytes += record.value.len() as u64;
            }
        });
        if let Err(error) = counted {
            first_error = Some(format!("reading records: {error}"));
            break;
        }
    }
    let elapsed = started.elapsed();
    Ok(PhaseReport {
        metrics: vec![
            ("consume_messages", records as f64),
            ("consume_missing", expected.saturating_sub(records) as f64),
            ("consume_seconds", elapsed.as_secs_f64()),
            ("consume_messages_per_second", rate(records as f64, elapsed)),
            (
                "consume_megabytes_per_second",
                rate(value_bytes as f64, elapsed) / BYTES_PER_MB,
            ),
        ],
        first_error,
        acknowledged: 0,
    })
}

/// The sum of every partition's high watermark.
async fn log_end(cluster: &Rc<Cluster>, workload: &Workload) -> Result<u64, String> {
    let ranges = offset_ranges(cluster, workload)
        .await
        .map_err(|e| format!("listing offsets: {e}"))?;
    Ok(ranges.iter().map(|(_, end)| end).sum())
}

/// Creates the topic when it is missing; returns its partition count.
async fn ensure_topic(cluster: &Rc<Cluster>, topic: &str, partitions: u32) -> Result<u32, String> {
    let existing = Admin::new(cluster.clone())
        .ensure_topic(topic, partitions)
        .await
        .map_err(|e| format!("topic '{topic}': {e}"))?;
    if existing != partitions {
        eprintln!("note: topic '{topic}' already exists with {existing} partitions; using them");
    }
    Ok(existing)
}

/// The topic's configuration as the broker describes it.
async fn topic_configs(cluster: &Rc<Cluster>, topic: &str) -> Value {
    match Admin::new(cluster.clone()).describe_configs(topic).await {
        Ok(entries) => Value::Object(
            entries
                .into_iter()
                .map(|entry| (entry.key, Value::String(entry.value)))
                .collect(),
        ),
        Err(error) => json!({ "error": error.to_string() }),
    }
}

/// One routing mode's client side.
struct Mode {
    shard_aware: bool,
    cluster: Rc<Cluster>,
    producer: Producer,
    phases: Vec<PhaseReport>,
}

/// Everything the executor hands back.
struct Outcome {
    partitions: u32,
    topic_configs: Value,
    modes: Vec<(bool, Vec<PhaseReport>)>,
    /// Messages acknowledged over the whole run, warm-ups included.
    acknowledged: u64,
    /// Records the log grew by over the whole run (retried batches count twice).
    appended: u64,
}

fn producer_config(args: &Args) -> ProducerConfig {
    let defaults = ProducerConfig::default();
    ProducerConfig {
        acks: Acks::All,
        linger: args
            .linger_us
            .map_or(defaults.linger, Duration::from_micros),
        batch_bytes: args.batch_bytes.unwrap_or(defaults.batch_bytes),
        ..defaults
    }
}

async fn measure(args: Rc<Args>) -> Result<Outcome, String> {
    let bootstrap = Cluster::new(&args.broker, CLIENT_ID, true).map_err(|e| e.to_string())?;
    let partitions = ensure_topic(&bootstrap, &args.topic, args.partitions).await?;
    let topic_configs = topic_configs(&bootstrap, &args.topic).await;
    let workload = Workload::new(&args.topic, partitions)?;
    let phase = Duration::from_secs_f64(args.seconds);
    let mut modes = Vec::new();
    for shard_aware in args.shard_aware.modes() {
        let cluster =
            Cluster::new(&args.broker, CLIENT_ID, shard_aware).map_err(|e| e.to_string())?;
        let producer = Producer::new(cluster.clone(), producer_config(&args));
        modes.push(Mode {
            shard_aware,
            cluster,
            producer,
            phases: Vec::new(),
        });
    }
    let runs = |wanted: Phase| args.phases.contains(&wanted);
    let log_end_before = log_end(&bootstrap, &workload).await?;
    let mut acknowledged = 0;
    if runs(Phase::Produce) || runs(Phase::Latency) {
        for mode in &modes {
            eprintln!(
                "[{}] warm-up {} ms",
                mode_name(mode.shard_aware),
                args.warmup_ms
            );
            let warmup = Duration::from_millis(args.warmup_ms);
            let report =
                produce_closed_loop(&mode.producer, &workload, args.outstanding, warmup).await;
            acknowledged += report.acknowledged;
        }
        glommio::timer::sleep(PHASE_PAUSE).await;
    }
    if runs(Phase::Produce) {
        for mode in &mut modes {
            eprintln!("[{}] produce for {phase:?}", mode_name(mode.shard_aware));
            let report =
                produce_closed_loop(&mode.producer, &workload, args.outstanding, phase).await;
            acknowledged += report.acknowledged;
            mode.phases.push(report);
            glommio::timer::sleep(PHASE_PAUSE).await;
        }
    }
    if runs(Phase::Latency) {
        for mode in &mut modes {
            eprintln!(
                "[{}] latency at {} msg/s for {phase:?}",
                mode_name(mode.shard_aware),
                args.rate
            );
            let report = produce_open_loop(&mode.producer, &workload, args.rate, phase).await;
            acknowledged += report.acknowledged;
            mode.phases.push(report);
            glommio::timer::sleep(PHASE_PAUSE).await;
        }
    }
    let appended = log_end(&bootstrap, &workload)
        .await?
        .saturating_sub(log_end_before);
    if runs(Phase::Consume) {
        for mode in &mut modes {
            eprintln!("[{}] consume from earliest", mode_name(mode.shard_aware));
            let report = consume_all(mode.cluster.clone(), &workload).await?;
            mode.phases.push(report);
        }
    }
    Ok(Outcome {
        partitions,
        topic_configs,
        modes: modes
            .into_iter()
            .map(|mode| (mode.shard_aware, mode.phases))
            .collect(),
        acknowledged,
        appended,
    })
}

fn run_on_executor(args: Args) -> Result<Outcome, String> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("client-bench")
        .io_memory(shardline::constants::CLI_IO_MEMORY_BYTES)
        .spawn(move || async move { measure(Rc::new(args)).await })
        .map_err(|e| format!("cannot start an io_uring executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.partitions == 0 {
        return Err("--partitions must be positive".into());
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be a positive number".into());
    }
    if args.rate == 0 {
        return Err("--rate must be positive".into());
    }
    if args.outstanding == 0 {
        return Err("--outstanding must be positive".into());
    }
    Ok(())
}

fn first_line(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
}

fn machine() -> Value {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_string())
            .ok()
    };
    json!({
        "hostname": read("/proc/sys/kernel/hostname"),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu_model": first_line("/proc/cpuinfo", "model name"),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_end": read("/proc/loadavg"),
    })
}

fn broker_profile(path: &Option<PathBuf>) -> Value {
    let Some(path) = path else { return Value::Null };
    match Profile::load(path) {
        Ok(profile) => json!({
            "path": path.display().to_string(),
            "name": profile.name,
            "flush": serde_json::to_value(profile.storage.flush).unwrap_or(Value::Null),
            "spin_before_park_us": profile.runtime.spin_before_park_us,
        }),
        Err(error) => json!({ "path": path.display().to_string(), "error": error.to_string() }),
    }
}

fn metric_names(outcome: &Outcome) -> Vec<&'static str> {
    outcome
        .modes
        .first()
        .map(|(_, phases)| {
            phases
                .iter()
                .flat_map(|p| p.metrics.iter().map(|(name, _)| *name))
                .collect()
        })
        .unwrap_or_default()
}

fn metric(phases: &[PhaseReport], name: &str) -> Option<f64> {
    phases
        .iter()
        .flat_map(|p| p.metrics.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, value)| *value)
}

/// Shard-aware ÷ not shard-aware, when both ran and the divisor is not zero.
fn ratio(outcome: &Outcome, name: &str) -> Option<f64> {
    let find = |aware: bool| {
        outcome
            .modes
            .iter()
            .find(|(shard_aware, _)| *shard_aware == aware)
            .and_then(|(_, phases)| metric(phases, name))
    };
    match (find(true), find(false)) {
        (Some(aware), Some(unaware)) if unaware != 0.0 => Some(aware / unaware),
        _ => None,
    }
}

fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Above zero: records stored more than once (a batch retried after its answer was lost)
/// or stored although reported failed. Below zero: acknowledged records are missing.
fn appended_minus_acknowledged(outcome: &Outcome) -> i128 {
    i128::from(outcome.appended) - i128::from(outcome.acknowledged)
}

fn print_table(outcome: &Outcome, args: &Args) {
    println!(
        "client_bench: broker {} topic {} ({} partitions), {} B values, acks=all, \
         {} s phases, rate {} msg/s, {} outstanding",
        args.broker,
        args.topic,
        outcome.partitions,
        VALUE_BYTES,
        args.seconds,
        args.rate,
        args.outstanding
    );
    let both = outcome.modes.len() > 1;
    let mut header = format!("{:<32}", "metric");
    for (shard_aware, _) in &outcome.modes {
        header.push_str(&format!(" {:>16}", mode_name(*shard_aware)));
    }
    if both {
        header.push_str(&format!(" {:>8}", "ratio"));
    }
    println!("{header}");
    for name in metric_names(outcome) {
        let mut line = format!("{name:<32}");
        for (_, phases) in &outcome.modes {
            let value = metric(phases, name).map_or("-".into(), format_value);
            line.push_str(&format!(" {value:>16}"));
        }
        if both {
            let value = ratio(outcome, name).map_or("-".into(), |r| format!("{r:.2}"));
            line.push_str(&format!(" {value:>8}"));
        }
        println!("{line}");
    }
    println!(
        "run: {} messages acknowledged (warm-ups included), {} records appended, \
         appended - acknowledged = {}",
        outcome.acknowledged,
        outcome.appended,
        appended_minus_acknowledged(outcome)
    );
    for (shard_aware, phases) in &outcome.modes {
        for error in phases.iter().filter_map(|p| p.first_error.as_ref()) {
            println!("error [{}]: {error}", mode_name(*shard_aware));
        }
    }
}

fn report_json(outcome: &Outcome, args: &Args, started_unix_s: u64) -> Value {
    let mut results = Map::new();
    for (shard_aware, phases) in &outcome.modes {
        let mut values: Map<String, Value> = phases
            .iter()
            .flat_map(|p| p.metrics.iter())
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        let errors: Vec<&String> = phases
            .iter()
            .filter_map(|p| p.first_error.as_ref())
            .collect();
        values.insert("first_errors".into(), json!(errors));
        results.insert(mode_name(*shard_aware).into(), Value::Object(values));
    }
    let ratios: Map<String, Value> = metric_names(outcome)
        .into_iter()
        .filter_map(|name| ratio(outcome, name).map(|r| (name.to_string(), json!(r))))
        .collect();
    json!({
        "tool": "client_bench",
        "shardline_version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": started_unix_s,
        "machine": machine(),
        "parameters": {
            "broker": args.broker,
            "topic": args.topic,
            "partitions": outcome.partitions,
            "value_bytes": VALUE_BYTES,
            "keys_per_partition": KEYS_PER_PARTITION,
            "acks": "all",
            "seconds": args.seconds,
            "rate_per_second": args.rate,
            "outstanding": args.outstanding,
            "warmup_ms": args.warmup_ms,
            "phases": args.phases.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
            "linger_us": micros(producer_config(args).linger),
            "batch_bytes": producer_config(args).batch_bytes,
        },
        "broker_profile": broker_profile(&args.broker_profile),
        "topic_configs": outcome.topic_configs,
        "results": results,
        "run": {
            "messages_acknowledged": outcome.acknowledged,
            "records_appended": outcome.appended,
            "records_appended_minus_acknowledged": appended_minus_acknowledged(outcome) as i64,
        },
        "ratio_shard_aware_over_not": ratios,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = check_args(&args) {
        eprintln!("client_bench: {error}");
        return ExitCode::FAILURE;
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = args.clone();
    let outcome = match run_on_executor(args) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("client_bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    print_table(&outcome, &kept);
    let report = report_json(&outcome, &kept, started_unix_s);
    println!("{report}");
    if let Some(path) = &kept.json_out {
        if let Err(error) = std::fs::write(path, format!("{report:#}\n")) {
            eprintln!("client_bench: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let failed = outcome
        .modes
        .iter()
        .any(|(_, phases)| phases.iter().any(|p| p.first_error.is_some()));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
