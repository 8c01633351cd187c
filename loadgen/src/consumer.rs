//! One consumer: its own unpinned glommio executor thread, reading the partitions
//! `p % consumers == consumer` from their log end at the start of the run. It checks each
//! loadgen message's header (no sequence twice, per producer and partition in order),
//! measures end-to-end latency from the intended send time, and once every producer is
//! done reads on to the log end and stops.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use hdrhistogram::Histogram;
use shardline::client::{Admin, Cluster, Consumer, ConsumerConfig, StartFrom};
use shardline::protocol::OffsetSpec;

use crate::payload::Header;
use crate::stats::{new_histogram, Bitset, Live, Plan, CLIENT_ID, NANOS_PER_MICRO};

/// How long the broker may hold a fetch with nothing new; short, so the end is noticed.
pub const FETCH_WAIT_MAX: Duration = Duration::from_millis(100);
/// How long reading up to the log end may take once the producers are done.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(60);
/// How often a consumer without partitions checks whether the run is over.
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one consumer hands the main thread when it is done.
#[derive(Debug)]
pub struct ConsumerReport {
    pub consumer: u32,
    pub partitions: Vec<u32>,
    pub consumed: u64,
    pub measured_consumed: u64,
    /// When the last measured message was consumed (Unix ns; 0: none was).
    pub last_measured_consume_unix_ns: u64,
    /// Records without a loadgen header (or of an unknown producer).
    pub foreign: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Per producer, the sequences consumed.
    pub seen: Vec<Bitset>,
    /// End-to-end latency of the measured messages.
    pub latency_us: Histogram<u64>,
    pub first_error: Option<String>,
}

/// Events a consumer thread sends: ready (positioned at the log end), then its report.
#[derive(Debug)]
pub enum ConsumerEvent {
    Ready(u32),
    Done(Box<ConsumerReport>),
}

/// Starts consumer `consumer`'s thread.
pub fn spawn(
    plan: Plan,
    consumer: u32,
    live: Arc<Live>,
    events: Sender<ConsumerEvent>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let for_body = events.clone();
        let report = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("consumer-{consumer}"))
            .io_memory(shardline::constants::CLI_IO_MEMORY_BYTES)
            .spawn(move || async move { consume(plan, consumer, live, for_body).await })
            .map_err(|e| format!("cannot start an io_uring executor: {e}"))
            .and_then(|handle| handle.join().map_err(|e| format!("executor failed: {e}")));
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                let mut report = ConsumerReport::new(consumer, Vec::new(), 0);
                report.first_error = Some(error);
                // It never got ready: say so, or the main thread would wait for it.
                let _ = events.send(ConsumerEvent::Ready(consumer));
                report
            }
        };
        let _ = events.send(ConsumerEvent::Done(Box::new(report)));
    })
}

impl ConsumerReport {
    pub fn new(consumer: u32, partitions: Vec<u32>, producers: u32) -> ConsumerReport {
        ConsumerReport {
            consumer,
            partitions,
            consumed: 0,
            measured_consumed: 0,
            last_measured_consume_unix_ns: 0,
            foreign: 0,
            duplicated: 0,
            out_of_order: 0,
            seen: vec![Bitset::default(); producers as usize],
            latency_us: new_histogram(),
            first_error: None,
        }
    }
}

/// Checks and measures each consumed record (for every system alike).
pub struct Checker {
    /// Messages intended in this window are measured (see `Live::window`).
    pub window: std::ops::Range<u64>,
    pub report: ConsumerReport,
    /// The highest sequence seen per (producer, partition).
    last: HashMap<(u32, u32), u64>,
}

impl Checker {
    #[cfg_attr(not(feature = "peers"), allow(dead_code))]
    pub fn new(window: std::ops::Range<u64>, report: ConsumerReport) -> Checker {
        Checker {
            window,
            report,
            last: HashMap::new(),
        }
    }

    pub fn observe(&mut self, partition: u32, value: &[u8], now_unix_ns: u64) {
        let report = &mut self.report;
        let Some(header) = Header::read(value) else {
            report.foreign += 1;
            return;
        };
        let Some(seen) = report.seen.get_mut(header.producer as usize) else {
            report.foreign += 1;
            return;
        };
        report.consumed += 1;
        if seen.insert(header.sequence) {
            report.duplicated += 1;
            return;
        }
        let last = self.last.entry((header.producer, partition)).or_insert(0);
        if header.sequence < *last {
            report.out_of_order += 1;
        } else {
            *last = header.sequence;
        }
        if self.window.contains(&header.intended_unix_ns) {
            report.measured_consumed += 1;
            report.last_measured_consume_unix_ns = now_unix_ns;
            let latency_ns = now_unix_ns.saturating_sub(header.intended_unix_ns);
            report
                .latency_us
                .saturating_record(latency_ns / NANOS_PER_MICRO);
        }
    }
}

async fn log_ends(
    cluster: &std::rc::Rc<Cluster>,
    topic: &str,
    partitions: &[u32],
) -> Result<Vec<u64>, String> {
    let admin = Admin::new(cluster.clone());
    let mut ends = Vec::new();
    for &partition in partitions {
        let end = admin
            .list_offset(topic, partition, OffsetSpec::Latest)
            .await
            .map_err(|e| format!("log end of {topic}/{partition}: {e}"))?;
        ends.push(end);
    }
    Ok(ends)
}

async fn consume(
    plan: Plan,
    consumer_id: u32,
    live: Arc<Live>,
    events: Sender<ConsumerEvent>,
) -> ConsumerReport {
    let args = &plan.args;
    let partitions: Vec<u32> = (0..plan.partitions)
        .filter(|p| p % args.consumers == consumer_id)
        .collect();
    let mut checker = Checker {
        window: live.window(),
        report: ConsumerReport::new(consumer_id, partitions.clone(), args.producers),
        last: HashMap::new(),
    };
    let result = read_until_done(&plan, &partitions, &live, &events, &mut checker).await;
    // Ready may not have been sent when setting up failed; a second one is ignored.
    let _ = events.send(ConsumerEvent::Ready(consumer_id));
    if let Err(error) = result {
        checker.report.first_error = Some(error);
    }
    checker.report
}

async fn read_until_done(
    plan: &Plan,
    partitions: &[u32],
    live: &Live,
    events: &Sender<ConsumerEvent>,
    checker: &mut Checker,
) -> Result<(), String> {
    let args = &plan.args;
    let topic = args.topic.as_str();
    let cluster =
        Cluster::new(&args.broker, CLIENT_ID, args.shard_routing()).map_err(|e| e.to_string())?;
    let config = ConsumerConfig {
        max_wait: FETCH_WAIT_MAX,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(cluster.clone(), config);
    if !partitions.is_empty() {
        consumer
            .assign(topic, Some(partitions.to_vec()), StartFrom::Latest)
            .await
            .map_err(|e| format!("assigning {topic} {partitions:?}: {e}"))?;
    }
    let _ = events.send(ConsumerEvent::Ready(checker.report.consumer));
    let mut targets: Option<(Vec<u64>, Instant)> = None;
    loop {
        if targets.is_none() && live.producers_done.load(Ordering::Acquire) {
            let ends = log_ends(&cluster, topic, partitions).await?;
            targets = Some((ends, Instant::now() + DRAIN_TIME_MAX));
        }
        if let Some((ends, deadline)) = &targets {
            let reached = partitions.iter().zip(ends).all(|(&partition, &end)| {
                consumer
                    .position(topic, partition)
                    .is_some_and(|position| position >= end)
            });
            if reached {
                // Stop only when the log did not grow meanwhile (acks=none appends late).
                let now_ends = log_ends(&cluster, topic, partitions).await?;
                if &now_ends == ends {
                    return Ok(());
                }
                let deadline = *deadline;
                targets = Some((now_ends, deadline));
                continue;
            }
            if Instant::now() >= *deadline {
                return Err(format!(
                    "not at the log end of {topic} {partitions:?} after {DRAIN_TIME_MAX:?}"
                ));
            }
        }
        if partitions.is_empty() {
            glommio::timer::sleep(IDLE_POLL_INTERVAL).await;
            continue;
        }
        let fetched = consumer.poll().await.map_err(|e| format!("poll: {e}"))?;
        let now_unix_ns = plan.clock.now_unix_ns();
        checker.window = live.window();
        let before = checker.report.consumed;
        fetched
            .for_each(|_, partition, record| checker.observe(partition, record.value, now_unix_ns))
            .map_err(|e| format!("reading records: {e}"))?;
        Live::add(&live.consumed, checker.report.consumed - before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{value_template, HEADER_BYTES};

    fn value(producer: u32, sequence: u64, intended_unix_ns: u64) -> Vec<u8> {
        let mut value = value_template(HEADER_BYTES + 8);
        Header {
            producer,
            sequence,
            intended_unix_ns,
        }
        .write(&mut value);
        value
    }

    #[test]
    fn checker_counts_duplicates_reordering_and_foreign_records() {
        let mut checker = Checker {
            window: 1_000..2_000,
            report: ConsumerReport::new(0, vec![0, 1], 2),
            last: HashMap::new(),
        };
        checker.observe(0, &value(0, 0, 500), 1_000);
        checker.observe(0, &value(0, 2, 1_500), 2_500);
        checker.observe(0, &value(0, 1, 1_200), 3_000); // behind sequence 2 on partition 0
        checker.observe(0, &value(0, 2, 1_500), 3_000); // again
        checker.observe(1, &value(0, 3, 1_600), 3_000); // another partition: in order
        checker.observe(1, &value(7, 0, 1_600), 3_000); // unknown producer
        checker.observe(1, b"not a loadgen value", 3_000);
        let report = &checker.report;
        assert_eq!(report.consumed, 5);
        assert_eq!(report.duplicated, 1);
        assert_eq!(report.out_of_order, 1);
        assert_eq!(report.foreign, 2);
        // Sequence 0 was intended before the window (warm-up): not measured.
        assert_eq!(report.measured_consumed, 3);
        assert_eq!(report.latency_us.max(), 1);
        assert_eq!(report.last_measured_consume_unix_ns, 3_000);
    }
}
