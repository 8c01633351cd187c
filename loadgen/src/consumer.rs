//! One consumer: its own unpinned glommio executor thread, reading its share of the run's
//! topic-partitions (every `consumers`-th; for one topic the partitions
//! `p % consumers == consumer`) from their log end at the start of the run. It checks each
//! loadgen message's header (no sequence twice, per producer and topic-partition in
//! order), measures end-to-end latency from the intended send time, and once every
//! producer is done reads on to the log end and stops. With `--consumer-group` the
//! partitions come from the group's coordinator instead (`group.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use shardline::client::{Consumer, ConsumerConfig, StartFrom};

use crate::payload::Header;
use crate::stats::{new_histogram, Bitset, Live, Plan, NANOS_PER_MICRO};
use crate::topics;

/// How long a consumer's fetch (a peer's poll) may wait with nothing new, in milliseconds;
/// short, so the end is noticed. shardline consumers take theirs from
/// `--fetch-max-wait-ms`, which defaults to this.
pub const FETCH_WAIT_MAX_MS: u32 = 100;

/// The shardline consumers' fetch settings (`--fetch-min-bytes`, `--fetch-max-wait-ms`).
pub fn consumer_config(args: &crate::args::Args) -> ConsumerConfig {
    ConsumerConfig {
        max_wait: Duration::from_millis(u64::from(args.fetch_max_wait_ms)),
        min_bytes: args.fetch_min_bytes,
        ..ConsumerConfig::default()
    }
}

/// How often a consumer without partitions checks whether the run is over.
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one consumer hands the main thread when it is done.
#[derive(Debug)]
pub struct ConsumerReport {
    pub consumer: u32,
    /// What it read: for one topic, partition numbers; with `--topics`, indexes into the
    /// run's topic-partitions; in a group, nothing (the coordinator decided).
    pub partitions: Vec<u32>,
    /// With `--consumer-group`: how often what this member owns changed after the start.
    pub ownership_changes: u64,
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
            ownership_changes: 0,
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
    /// The highest sequence seen per (producer, topic index, partition). FxHash: looked up
    /// for every record, with keys the run made itself.
    last: FxHashMap<(u32, u32, u32), u64>,
}

impl Checker {
    pub fn new(window: std::ops::Range<u64>, report: ConsumerReport) -> Checker {
        Checker {
            window,
            report,
            last: FxHashMap::default(),
        }
    }

    /// `observe_in` topic 0 (drivers of one topic).
    #[cfg_attr(not(feature = "peers"), allow(dead_code))]
    pub fn observe(&mut self, partition: u32, value: &[u8], now_unix_ns: u64) {
        self.observe_in(0, partition, value, now_unix_ns);
    }

    /// Checks and measures one record of topic `topic` (index into the run's topics).
    pub fn observe_in(&mut self, topic: u32, partition: u32, value: &[u8], now_unix_ns: u64) {
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
        let last = self
            .last
            .entry((header.producer, topic, partition))
            .or_insert(0);
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

async fn consume(
    plan: Plan,
    consumer_id: u32,
    live: Arc<Live>,
    events: Sender<ConsumerEvent>,
) -> ConsumerReport {
    let args = &plan.args;
    if args.consumer_group.is_some() {
        return crate::group::consume(plan, consumer_id, live, events).await;
    }
    let all = topics::topic_partitions(plan.topics.len(), plan.partitions);
    let pairs = topics::consumer_share(&all, args.consumers, consumer_id);
    let indexes = if plan.topics.len() == 1 {
        pairs.iter().map(|&(_, partition)| partition).collect()
    } else {
        (0..all.len() as u32)
            .filter(|index| index % args.consumers == consumer_id)
            .collect()
    };
    let mut checker = Checker::new(
        live.window(),
        ConsumerReport::new(consumer_id, indexes, args.producers),
    );
    let result = read_until_done(&plan, &pairs, &live, &events, &mut checker).await;
    // Ready may not have been sent when setting up failed; a second one is ignored.
    let _ = events.send(ConsumerEvent::Ready(consumer_id));
    if let Err(error) = result {
        checker.report.first_error = Some(error);
    }
    checker.report
}

/// Topic name to its index in the run's topics.
pub fn topic_indexes(topics: &[String]) -> HashMap<String, u32> {
    topics
        .iter()
        .enumerate()
        .map(|(index, name)| (name.clone(), index as u32))
        .collect()
}

/// Assigns `pairs` (topic index, partition) to `consumer` at their log ends, topic by topic.
async fn assign_at_end(
    consumer: &mut Consumer,
    topics: &[String],
    pairs: &[(u32, u32)],
) -> Result<(), String> {
    for chunk in pairs.chunk_by(|a, b| a.0 == b.0) {
        let topic = &topics[chunk[0].0 as usize];
        let partitions: Vec<u32> = chunk.iter().map(|&(_, partition)| partition).collect();
        consumer
            .assign(topic, Some(partitions.clone()), StartFrom::Latest)
            .await
            .map_err(|e| format!("assigning {topic} {partitions:?}: {e}"))?;
    }
    Ok(())
}

async fn read_until_done(
    plan: &Plan,
    pairs: &[(u32, u32)],
    live: &Live,
    events: &Sender<ConsumerEvent>,
    checker: &mut Checker,
) -> Result<(), String> {
    let args = &plan.args;
    let topics = &plan.topics;
    let indexes = topic_indexes(topics);
    let cluster = args.cluster()?;
    let config = crate::consumer::consumer_config(args);
    let mut consumer = Consumer::new(cluster.clone(), config);
    assign_at_end(&mut consumer, topics, pairs).await?;
    let _ = events.send(ConsumerEvent::Ready(checker.report.consumer));
    let mut targets: Option<(Vec<u64>, Instant)> = None;
    loop {
        if targets.is_none() && live.producers_done.load(Ordering::Acquire) {
            let ends = topics::log_ends(&cluster, topics, pairs).await?;
            targets = Some((ends, Instant::now() + args.drain()));
        }
        if let Some((ends, deadline)) = &targets {
            let reached = pairs.iter().zip(ends).all(|(&(topic, partition), &end)| {
                consumer
                    .position(&topics[topic as usize], partition)
                    .is_some_and(|position| position >= end)
            });
            if reached {
                // Stop only when the log did not grow meanwhile (acks=none appends late).
                let now_ends = topics::log_ends(&cluster, topics, pairs).await?;
                if &now_ends == ends {
                    return Ok(());
                }
                let deadline = *deadline;
                targets = Some((now_ends, deadline));
                continue;
            }
            if Instant::now() >= *deadline {
                return Err(format!(
                    "not at the log end of {} topic-partitions after {:?}",
                    pairs.len(),
                    args.drain()
                ));
            }
        }
        if pairs.is_empty() {
            glommio::timer::sleep(IDLE_POLL_INTERVAL).await;
            continue;
        }
        let fetched = consumer.poll().await.map_err(|e| format!("poll: {e}"))?;
        observe_fetched(plan, live, checker, &indexes, &fetched)?;
    }
}

/// Checks every record of `fetched` and adds them to the live count; returns, per
/// (topic index, partition) that had records, the offset after the last one.
pub fn observe_fetched(
    plan: &Plan,
    live: &Live,
    checker: &mut Checker,
    indexes: &HashMap<String, u32>,
    fetched: &shardline::client::Fetched,
) -> Result<FxHashMap<(u32, u32), u64>, String> {
    let now_unix_ns = plan.clock.now_unix_ns();
    checker.window = live.window();
    let before = checker.report.consumed;
    let mut unknown_topic = None;
    let mut read_to: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    // A partition's records all name their topic with the same string: look its index up
    // once per run of records, not once per record.
    let mut last_topic: Option<(*const u8, usize, Option<u32>)> = None;
    let mut index_of = |topic: &str| match last_topic {
        Some((ptr, len, index)) if ptr == topic.as_ptr() && len == topic.len() => index,
        _ => {
            let index = indexes.get(topic).copied();
            last_topic = Some((topic.as_ptr(), topic.len(), index));
            index
        }
    };
    fetched
        .for_each(|topic, partition, record| match index_of(topic) {
            Some(index) => {
                checker.observe_in(index, partition, record.value, now_unix_ns);
                let next = read_to.entry((index, partition)).or_insert(0);
                *next = (*next).max(record.offset + 1);
            }
            None => unknown_topic = Some(topic.to_string()),
        })
        .map_err(|e| format!("reading records: {e}"))?;
    Live::add(&live.consumed, checker.report.consumed - before);
    match unknown_topic {
        Some(topic) => Err(format!("fetched records of topic {topic}, not of this run")),
        None => Ok(read_to),
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
        let mut checker = Checker::new(1_000..2_000, ConsumerReport::new(0, vec![0, 1], 2));
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

    #[test]
    fn order_is_checked_per_topic_partition() {
        let mut checker = Checker::new(0..u64::MAX, ConsumerReport::new(0, vec![0], 1));
        // Producer 0 rotates over two topics of one partition: each topic sees its own
        // increasing sequences, interleaved with the other's.
        checker.observe_in(0, 0, &value(0, 0, 1), 2);
        checker.observe_in(1, 0, &value(0, 1, 1), 2);
        checker.observe_in(0, 0, &value(0, 2, 1), 2);
        checker.observe_in(1, 0, &value(0, 3, 1), 2);
        assert_eq!(checker.report.out_of_order, 0);
        checker.observe_in(1, 0, &value(0, 2, 1), 2); // duplicate of topic 0's, not reorder
        assert_eq!(checker.report.duplicated, 1);
        checker.observe_in(1, 0, &value(0, 1, 1), 2); // seen already: a duplicate too
        assert_eq!(checker.report.duplicated, 2);
        let indexes = topic_indexes(&["a-0".to_string(), "a-1".to_string()]);
        assert_eq!(indexes["a-1"], 1);
    }
}
