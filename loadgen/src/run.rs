//! The main thread's part of a run: set the topic up, start the consumers and producers,
//! print the live line each second, collect the reports and compare what was acknowledged
//! with what was consumed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::consumer::{ConsumerEvent, ConsumerReport};
use crate::driver::Driver;
use crate::producer::ProducerReport;
use crate::report::{self, Results};
use crate::schedule::{Clock, NANOS_PER_SECOND};
use crate::stats::{new_histogram, Live, Plan};
use crate::timeline::Ticker;
use crate::topics;
use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError};

/// Time between live lines.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Between starting the producer threads and their first message, so they start together.
const START_DELAY: Duration = Duration::from_millis(200);
/// How long consumers may take to position themselves.
const READY_TIME_MAX: Duration = Duration::from_secs(30);

pub fn run(args: &Args, driver: &dyn Driver) -> Result<Results, String> {
    let partitions = driver.ensure_topic(args)?;
    let live = Arc::new(Live::new());
    let clock = Clock::new();
    let mut plan = Plan {
        args: args.clone(),
        topics: topics::topic_names(&args.topic, args.topics),
        partitions,
        clock,
        start_unix_ns: 0,
        measure_from_unix_ns: 0,
        end_unix_ns: 0,
    };
    let (consumer_events, consumer_inbox) = unbounded();
    let mut consumer_threads = Vec::new();
    for consumer_id in 0..args.consumers {
        consumer_threads.push(driver.spawn_consumer(
            plan.clone(),
            consumer_id,
            live.clone(),
            consumer_events.clone(),
        ));
    }
    drop(consumer_events);
    let mut consumer_reports = wait_ready(&consumer_inbox, args.consumers)?;
    // In a group, the producers start once the coordinator has settled who reads what.
    let group_starts = match &args.consumer_group {
        Some(_) if args.consumers > 0 => {
            driver.wait_group_stable(&plan)?;
            Some(driver.log_ends(&plan)?)
        }
        _ => None,
    };

    let seconds_ns = |s: f64| (s * NANOS_PER_SECOND as f64) as u64;
    plan.start_unix_ns = clock.now_unix_ns() + seconds_ns(START_DELAY.as_secs_f64());
    plan.measure_from_unix_ns = plan.start_unix_ns + seconds_ns(args.warmup_s);
    plan.end_unix_ns = plan.measure_from_unix_ns + seconds_ns(args.duration_s);
    live.measure_from_unix_ns
        .store(plan.measure_from_unix_ns, Ordering::Release);
    live.end_unix_ns.store(plan.end_unix_ns, Ordering::Release);
    live.start_unix_ns
        .store(plan.start_unix_ns, Ordering::Release);
    let (producer_reports, producer_inbox) = unbounded();
    let mut producer_threads = Vec::new();
    for producer_id in 0..args.producers {
        producer_threads.push(driver.spawn_producer(
            plan.clone(),
            producer_id,
            live.clone(),
            producer_reports.clone(),
        ));
    }
    drop(producer_reports);
    let mut ticker = Ticker::new();
    let mut producer_reports = watch_producers(&plan, &live, &producer_inbox, &mut ticker);
    live.producers_done.store(true, Ordering::Release);
    let drain_error = match &group_starts {
        Some(starts) => drain_group(&plan, &live, driver, starts, &mut ticker).err(),
        None => None,
    };
    watch_consumers(
        &plan,
        &live,
        &consumer_inbox,
        &mut ticker,
        &mut consumer_reports,
    );
    for thread in producer_threads.into_iter().chain(consumer_threads) {
        if thread.join().is_err() {
            return Err("a producer or consumer thread panicked".into());
        }
    }
    producer_reports.sort_by_key(|r| r.producer);
    consumer_reports.sort_by_key(|r| r.consumer);
    let mut results = compare(args, partitions, &producer_reports, &consumer_reports);
    if let Some(error) = drain_error {
        // Not read to the end: what is missing may still be in the log, so no loss verdict.
        results.errors.push(error);
        results.checked = false;
    }
    let seconds_since_measure_from = |last_unix_ns: u64| {
        let span_ns = last_unix_ns.saturating_sub(plan.measure_from_unix_ns);
        (span_ns as f64 / NANOS_PER_SECOND as f64).max(args.duration_s)
    };
    results.produce_seconds = seconds_since_measure_from(
        producer_reports
            .iter()
            .map(|r| r.last_measured_ack_unix_ns)
            .max()
            .unwrap_or(0),
    );
    results.consume_seconds = seconds_since_measure_from(
        consumer_reports
            .iter()
            .map(|r| r.last_measured_consume_unix_ns)
            .max()
            .unwrap_or(0),
    );
    results.timeline = ticker.samples;
    results.produce_intervals = ticker.produce_intervals;
    Ok(results)
}

/// Waits until every consumer is positioned; returns the reports of those that gave up.
fn wait_ready(
    inbox: &Receiver<ConsumerEvent>,
    consumers: u32,
) -> Result<Vec<ConsumerReport>, String> {
    let deadline = Instant::now() + READY_TIME_MAX;
    let mut ready = HashSet::new();
    let mut done = Vec::new();
    while ready.len() < consumers as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(left) {
            Ok(ConsumerEvent::Ready(consumer)) => {
                ready.insert(consumer);
            }
            Ok(ConsumerEvent::Done(report)) => {
                ready.insert(report.consumer);
                done.push(*report);
            }
            Err(_) => return Err(format!("consumers not ready after {READY_TIME_MAX:?}")),
        }
    }
    Ok(done)
}

/// Prints a live line each second until every producer has reported; returns the reports.
fn watch_producers(
    plan: &Plan,
    live: &Live,
    inbox: &Receiver<ProducerReport>,
    ticker: &mut Ticker,
) -> Vec<ProducerReport> {
    let producers = plan.args.producers as usize;
    let mut reports = Vec::new();
    let mut next_line = Instant::now() + LIVE_INTERVAL;
    while reports.len() < producers {
        match inbox.recv_timeout(next_line.saturating_duration_since(Instant::now())) {
            Ok(report) => reports.push(report),
            Err(RecvTimeoutError::Timeout) => {
                let interval = ticker.tick(plan, live);
                eprintln!(
                    "{}",
                    report::live_line(&interval, plan.args.message_bytes.mean_bytes())
                );
                next_line = Instant::now() + LIVE_INTERVAL;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    reports
}

/// How often the main thread looks whether a group has read everything.
const GROUP_DRAIN_POLL: Duration = Duration::from_millis(50);

/// Once the producers are done, in a group: waits until the members have read every
/// topic-partition to its log end (printing the live line each second), then tells them to
/// stop. Gives up (and stops them) after `--drain-s`.
fn drain_group(
    plan: &Plan,
    live: &Live,
    driver: &dyn Driver,
    starts: &[u64],
    ticker: &mut Ticker,
) -> Result<(), String> {
    let pairs = topics::topic_partitions(plan.topics.len(), plan.partitions);
    let deadline = Instant::now() + plan.args.drain();
    let mut next_line = Instant::now() + LIVE_INTERVAL;
    let mut ends = driver.log_ends(plan);
    let outcome = loop {
        let current = match &ends {
            Ok(current) => current,
            Err(error) => break Err(error.clone()),
        };
        if live.group.read_to_ends(&pairs, starts, current) {
            // Stop only when the logs did not grow meanwhile (acks=none appends late).
            let now = driver.log_ends(plan);
            if now.as_ref() == Ok(current) {
                break Ok(());
            }
            ends = now;
            continue;
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "the group did not read {} topic-partitions to their ends in {:?}",
                pairs.len(),
                plan.args.drain()
            ));
        }
        if Instant::now() >= next_line {
            let interval = ticker.tick(plan, live);
            eprintln!(
                "{}",
                report::live_line(&interval, plan.args.message_bytes.mean_bytes())
            );
            next_line = Instant::now() + LIVE_INTERVAL;
        }
        std::thread::sleep(GROUP_DRAIN_POLL);
    };
    live.group.stop.store(true, Ordering::Release);
    outcome
}

/// Once the producers are done: prints a live line each second while the consumers read
/// up to the log end, until every consumer has reported (into `reports`).
fn watch_consumers(
    plan: &Plan,
    live: &Live,
    inbox: &Receiver<ConsumerEvent>,
    ticker: &mut Ticker,
    reports: &mut Vec<ConsumerReport>,
) {
    let mut next_line = Instant::now() + LIVE_INTERVAL;
    loop {
        match inbox.recv_timeout(next_line.saturating_duration_since(Instant::now())) {
            Ok(ConsumerEvent::Done(report)) => reports.push(*report),
            Ok(ConsumerEvent::Ready(_)) => {}
            Err(RecvTimeoutError::Timeout) => {
                let interval = ticker.tick(plan, live);
                eprintln!(
                    "{}",
                    report::live_line(&interval, plan.args.message_bytes.mean_bytes())
                );
                next_line = Instant::now() + LIVE_INTERVAL;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Adds the reports up and compares, per producer, the acknowledged sequences with the
/// consumed ones.
fn compare(
    args: &Args,
    partitions: u32,
    producers: &[ProducerReport],
    consumers: &[ConsumerReport],
) -> Results {
    let mut results = Results {
        partitions,
        sent: 0,
        acknowledged: 0,
        produce_errors: 0,
        measured_acknowledged: 0,
        produce_seconds: args.duration_s,
        consumed: 0,
        measured_consumed: 0,
        consume_seconds: args.duration_s,
        foreign: 0,
        lost: 0,
        first_lost: None,
        duplicated: 0,
        out_of_order: 0,
        consumed_not_acknowledged: 0,
        errors: Vec::new(),
        produce_latency_us: new_histogram(),
        end_to_end_latency_us: new_histogram(),
        checked: args.consumers > 0 && consumers.iter().all(|c| c.first_error.is_none()),
        timeline: Vec::new(),
        produce_intervals: Vec::new(),
        ownership_changes: 0,
    };
    for report in producers {
        results.sent += report.sent;
        results.acknowledged += report.acknowledged;
        results.produce_errors += report.errors;
        results.measured_acknowledged += report.measured_acknowledged;
        results
            .produce_latency_us
            .add(&report.latency_us)
            .expect("every latency histogram has the same bounds");
        if let Some(error) = &report.first_error {
            results.errors.push(format!(
                "producer {}: {} failed, first: {error}",
                report.producer, report.errors
            ));
        }
    }
    for report in consumers {
        results.consumed += report.consumed;
        results.measured_consumed += report.measured_consumed;
        results.foreign += report.foreign;
        results.duplicated += report.duplicated;
        results.out_of_order += report.out_of_order;
        results.ownership_changes += report.ownership_changes;
        results
            .end_to_end_latency_us
            .add(&report.latency_us)
            .expect("every latency histogram has the same bounds");
        if let Some(error) = &report.first_error {
            results.errors.push(format!(
                "consumer {} ({}): {error}",
                report.consumer,
                assignment_text(&report.partitions)
            ));
        }
    }
    if results.checked {
        check_delivery(&mut results, producers, consumers);
    }
    results
}

/// A consumer's partitions for an error message (a count when there are many).
fn assignment_text(partitions: &[u32]) -> String {
    const LISTED_MAX: usize = 16;
    if partitions.len() <= LISTED_MAX {
        format!("partitions {partitions:?}")
    } else {
        format!("{} topic-partitions", partitions.len())
    }
}

fn check_delivery(
    results: &mut Results,
    producers: &[ProducerReport],
    consumers: &[ConsumerReport],
) {
    for producer in producers {
        let index = producer.producer as usize;
        let mut seen = crate::stats::Bitset::default();
        for consumer in consumers {
            let Some(theirs) = consumer.seen.get(index) else {
                continue;
            };
            // Partitions are split between consumers: a sequence seen by two is a duplicate.
            results.duplicated += seen.count_common(theirs);
            seen.union_with(theirs);
        }
        let lost = producer.acked.count_missing_from(&seen);
        if lost > 0 && results.first_lost.is_none() {
            results.first_lost = producer
                .acked
                .first_missing_from(&seen)
                .map(|sequence| (producer.producer, sequence));
        }
        results.lost += lost;
        results.consumed_not_acknowledged += seen.count_missing_from(&producer.acked);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::stats::Bitset;

    fn producer_report(producer: u32, acked: &[u64]) -> ProducerReport {
        let mut bits = Bitset::default();
        for &sequence in acked {
            bits.insert(sequence);
        }
        ProducerReport {
            producer,
            sent: acked.len() as u64,
            acknowledged: acked.len() as u64,
            errors: 0,
            first_error: None,
            acked: bits,
            measured_acknowledged: 0,
            last_measured_ack_unix_ns: 0,
            latency_us: new_histogram(),
        }
    }

    fn consumer_report(consumer: u32, seen: &[(u32, u64)]) -> ConsumerReport {
        let mut report = ConsumerReport::new(consumer, vec![consumer], 2);
        for &(producer, sequence) in seen {
            report.seen[producer as usize].insert(sequence);
        }
        report
    }

    #[test]
    fn an_acknowledged_message_nobody_consumed_is_lost_and_fails_the_run() {
        let args = Args::parse_from(["shardline-loadgen", "--producers", "2", "--consumers", "2"]);
        let producers = [producer_report(0, &[0, 1, 2]), producer_report(1, &[0, 1])];
        let consumers = [
            consumer_report(0, &[(0, 0), (0, 2), (1, 0)]),
            // Producer 1's sequence 0 also reached the other consumer: a duplicate.
            consumer_report(1, &[(1, 0), (1, 1), (1, 5)]),
        ];
        let results = compare(&args, 2, &producers, &consumers);
        assert!(results.checked);
        assert_eq!(results.lost, 1, "{results:?}");
        assert_eq!(results.first_lost, Some((0, 1)));
        assert_eq!(results.duplicated, 1, "{results:?}");
        assert_eq!(results.consumed_not_acknowledged, 1, "{results:?}");
        assert!(results.integrity_failed());
    }

    #[test]
    fn every_acknowledged_message_consumed_once_passes() {
        let args = Args::parse_from(["shardline-loadgen", "--producers", "2", "--consumers", "1"]);
        let producers = [producer_report(0, &[0, 1]), producer_report(1, &[0])];
        let consumers = [consumer_report(0, &[(0, 0), (0, 1), (1, 0)])];
        let results = compare(&args, 1, &producers, &consumers);
        assert!(
            results.checked && !results.integrity_failed(),
            "{results:?}"
        );
    }
}
