//! Consumers in a consumer group (`--consumer-group G`): each consumer thread joins G as a
//! `GroupConsumer` on the run's topics, and the broker's coordinator hands out the
//! partitions (cooperative sticky). The checks are the consumers' usual ones.
//!
//! Who owns a partition can change during the run, so no consumer can tell on its own when
//! it has read everything. Instead each consumer publishes, per topic-partition, the offset
//! after the last record it checked (`GroupProgress`); the main thread compares that with
//! the log ends once the producers are done and raises `stop` when every partition is read
//! to its end. The consumers then commit and leave the group.
//!
//! Duplicates: a member commits every second, before giving a partition back and on
//! leaving. If a partition moves while its member has checked records it has not committed
//! (it died, or missed its session timeout), the next owner reads them again from the
//! committed offset, and the checker counts them as duplicated. The report gives the
//! number of ownership changes after the producers started beside the duplicates; in a run
//! without failures both are zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam::channel::Sender;
use shardline::client::{GroupConfig, GroupConsumer, StartFrom};

use crate::consumer::{observe_fetched, topic_indexes, Checker, ConsumerEvent, ConsumerReport};
use crate::stats::{Live, Plan};

/// What the group's consumers have read, for the main thread to decide when they stop.
#[derive(Debug, Default)]
pub struct GroupProgress {
    /// Per (topic index, partition): the offset after the last record checked.
    read_to: Mutex<HashMap<(u32, u32), u64>>,
    /// Set by the main thread once every partition is read to its end (or it gave up).
    pub stop: AtomicBool,
}

impl GroupProgress {
    /// Records that `pair` was read up to (not including) `next_offset`.
    pub fn read(&self, pair: (u32, u32), next_offset: u64) {
        if let Ok(mut read_to) = self.read_to.lock() {
            let entry = read_to.entry(pair).or_insert(0);
            *entry = (*entry).max(next_offset);
        }
    }

    /// Whether every pair is read to its end: `ends[i]` of `pairs[i]`, where `starts[i]` was
    /// the end before the producers started (a partition nobody wrote to needs no read).
    pub fn read_to_ends(&self, pairs: &[(u32, u32)], starts: &[u64], ends: &[u64]) -> bool {
        let Ok(read_to) = self.read_to.lock() else {
            return false;
        };
        pairs
            .iter()
            .zip(starts.iter().zip(ends))
            .all(|(pair, (&start, &end))| {
                end <= start || read_to.get(pair).is_some_and(|&read| read >= end)
            })
    }
}

/// Consumer `consumer_id` as a member of the group: joins, reports ready, checks what the
/// coordinator hands it until told to stop, then commits and leaves.
pub async fn consume(
    plan: Plan,
    consumer_id: u32,
    live: Arc<Live>,
    events: Sender<ConsumerEvent>,
) -> ConsumerReport {
    let mut checker = Checker::new(
        live.window(),
        ConsumerReport::new(consumer_id, Vec::new(), plan.args.producers),
    );
    let result = member_until_stopped(&plan, &live, &events, &mut checker).await;
    let _ = events.send(ConsumerEvent::Ready(consumer_id));
    if let Err(error) = result {
        checker.report.first_error = Some(error);
    }
    checker.report
}

fn group_config(plan: &Plan, group: &str) -> GroupConfig {
    let topics: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
    GroupConfig {
        // The loadgen resets the group's offsets to the log ends before the run (see the
        // driver), so this only matters for partitions the group never committed.
        start_from: StartFrom::Latest,
        consumer: crate::consumer::consumer_config(&plan.args),
        ..GroupConfig::new(group, &topics)
    }
}

async fn member_until_stopped(
    plan: &Plan,
    live: &Live,
    events: &Sender<ConsumerEvent>,
    checker: &mut Checker,
) -> Result<(), String> {
    let args = &plan.args;
    let group = args
        .consumer_group
        .as_deref()
        .ok_or("a group consumer without --consumer-group")?;
    let cluster = args.cluster()?;
    let mut member = GroupConsumer::join(cluster, group_config(plan, group))
        .await
        .map_err(|e| format!("joining group {group}: {e}"))?;
    let _ = events.send(ConsumerEvent::Ready(checker.report.consumer));
    let indexes = topic_indexes(&plan.topics);
    while !live.group.stop.load(Ordering::Acquire) {
        let fetched = member.poll().await.map_err(|e| format!("poll: {e}"))?;
        // Ownership settles before the producers start; what changes after counts.
        let start_unix_ns = live.start_unix_ns.load(Ordering::Acquire);
        checker.report.ownership_changes += member
            .take_changes()
            .iter()
            .filter(|change| unix_ns(change.at) >= start_unix_ns)
            .count() as u64;
        let read_to = observe_fetched(plan, live, checker, &indexes, &fetched)?;
        for (pair, next_offset) in read_to {
            live.group.read(pair, next_offset);
        }
    }
    member
        .commit()
        .await
        .map_err(|e| format!("committing in group {group}: {e}"))?;
    member
        .close()
        .await
        .map_err(|e| format!("leaving group {group}: {e}"))
}

fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_read_to_their_ends_or_had_nothing_new() {
        let progress = GroupProgress::default();
        let pairs = [(0, 0), (0, 1), (1, 0)];
        let starts = [10, 0, 5];
        let ends = [20, 0, 7];
        // (0, 1) had nothing new; the others are not read yet.
        assert!(!progress.read_to_ends(&pairs, &starts, &ends));
        progress.read((0, 0), 20);
        progress.read((1, 0), 6);
        assert!(!progress.read_to_ends(&pairs, &starts, &ends));
        progress.read((1, 0), 7);
        progress.read((1, 0), 3); // an older poll: the furthest read counts
        assert!(progress.read_to_ends(&pairs, &starts, &ends));
    }
}
