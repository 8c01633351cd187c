//! Crash tests of the partition log: a writer process is killed with SIGKILL at random
//! moments, again and again; after each kill the log is reopened and every batch whose
//! durability the writer reported must be there, intact, once and in order. The flush
//! policies take turns, `never` (the write-behind profile's) included: there "durable" means
//! written, and a write must survive the process being killed. One writer
//! writes one partition; another writes many partitions of one shard, whose flushes share
//! the shard's flush rounds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use shardline::log::{LogConfig, LogShard, ReadError, ShardLogConfig};
use shardline::record::reader::records;
use shardline::record::BatchIter;

use crate::harness::{on_executor, seed, shardline_binary};

const ROUNDS: usize = 24;
const NO_REPORT: u64 = u64::MAX;

/// What one run of the writer reported before it was killed, by partition (0 for a
/// writer of one partition).
#[derive(Default)]
struct Reports {
    /// The log end offset the writer found on start.
    start: HashMap<usize, u64>,
    /// The highest offset reported durable.
    durable: HashMap<usize, u64>,
    /// The shard's flush rounds started, and their members, last reported.
    rounds: (u64, u64),
}

impl Reports {
    fn start(&self) -> u64 {
        self.start.get(&0).copied().unwrap_or(NO_REPORT)
    }

    fn durable(&self) -> u64 {
        self.durable.get(&0).copied().unwrap_or(NO_REPORT)
    }
}

/// The longest a crash test waits, past its kill time, for the writer's reports.
const REPORT_WAIT_MAX: Duration = Duration::from_secs(20);

fn run_writer_and_kill(dir: &Path, flush: &str, kill_after: Duration, extra: &[&str]) -> Reports {
    run_writer_and_kill_once_reported(dir, flush, kill_after, extra, 0)
}

/// Like `run_writer_and_kill`, but after `kill_after` also waits (up to
/// `REPORT_WAIT_MAX`) until `partitions_reported` partitions have reported an offset
/// durable, so that a slow, busy machine still kills the writer in the middle of real
/// work. The writer keeps appending all the while, so the kill still lands mid-flush.
fn run_writer_and_kill_once_reported(
    dir: &Path,
    flush: &str,
    kill_after: Duration,
    extra: &[&str],
    partitions_reported: usize,
) -> Reports {
    let mut child = Command::new(shardline_binary())
        .args(["debug", "log-writer", "--dir"])
        .arg(dir)
        .args(["--flush", flush])
        .args(extra)
        .env("SHARDLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let reports = Arc::new(Mutex::new(Reports::default()));
    let reader = {
        let reports = reports.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                let numbers: Vec<u64> = words
                    .iter()
                    .skip(1)
                    .map(|n| n.parse().expect("numbers in writer reports"))
                    .collect();
                let (partition, number) = match numbers[..] {
                    [number] => (0, number),
                    [partition, number] => (partition as usize, number),
                    _ => continue,
                };
                let mut reports = reports.lock().unwrap();
                if words[0] == "rounds" {
                    reports.rounds = (partition as u64, number);
                    continue;
                }
                match words[0] {
                    "start" => {
                        reports.start.insert(partition, number);
                    }
                    "durable" => {
                        let seen = reports.durable.entry(partition).or_insert(number);
                        *seen = (*seen).max(number);
                    }
                    _ => {}
                }
            }
        })
    };
    std::thread::sleep(kill_after);
    let waited = std::time::Instant::now();
    while reports.lock().unwrap().durable.len() < partitions_reported
        && waited.elapsed() < REPORT_WAIT_MAX
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reap the writer");
    assert!(!status.success(), "the writer runs until killed");
    reader.join().expect("report reader");
    Arc::try_unwrap(reports)
        .ok()
        .expect("the reader is done")
        .into_inner()
        .unwrap()
}

/// Reopens the log and checks every record; returns the log end offset.
fn verify(dir: &Path) -> u64 {
    let dir = dir.to_path_buf();
    on_executor(move || async move {
        let shard = LogShard::new(ShardLogConfig::default());
        let config = LogConfig {
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = shard
            .open_partition(&dir, config)
            .await
            .expect("the log reopens");
        let end = log.log_end_offset();
        let mut offset = 0;
        let mut scratch = Vec::new();
        while offset < end {
            let read = log
                .read(offset, 4 << 20, u64::MAX)
                .await
                .expect("reads succeed");
            assert!(
                !read.is_empty(),
                "nothing readable at {offset} below the end {end}"
            );
            for chunk in &read.chunks {
                for item in BatchIter::new(chunk) {
                    let (_, batch) = item.expect("every batch is intact");
                    for record in records(batch, &mut scratch).expect("records decode").iter() {
                        let text = std::str::from_utf8(record.value).expect("utf8");
                        let written: u64 = text.split(':').next().unwrap().parse().unwrap();
                        assert_eq!(record.offset, offset, "records are dense and once");
                        assert_eq!(written, offset, "record at {offset} holds value {written}");
                        offset += 1;
                    }
                }
            }
        }
        assert_eq!(offset, end);
        // Nothing past the end (a torn tail) is readable.
        match log.read(end + 1, 1024, u64::MAX).await {
            Err(ReadError::OffsetOutOfRange { .. }) => {}
            other => panic!("read past the end gave {:?}", other.map(|r| r.next_offset)),
        }
        log.close().await.expect("close");
        end
    })
}

#[test]
fn acknowledged_appends_survive_kill_9_during_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partition");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("kill_9_during_group_commit"));
    let mut rounds_with_reports = 0;
    let mut end = 0;
    for round in 0..ROUNDS {
        let flush = ["every-batch", "interval", "bytes", "never"][round % 4];
        let kill_after = Duration::from_millis(rng.gen_range(30..400));
        let reports = run_writer_and_kill(&path, flush, kill_after, &[]);
        if reports.start() != NO_REPORT {
            assert_eq!(
                reports.start(),
                end,
                "round {round}: the writer starts at the verified end"
            );
        }
        end = verify(&path);
        if reports.durable() != NO_REPORT {
            rounds_with_reports += 1;
            assert!(
                end > reports.durable(),
                "round {round} ({flush}, killed after {kill_after:?}): offset {} was reported \
                 durable but the log ends at {end}",
                reports.durable()
            );
        }
    }
    assert!(
        rounds_with_reports >= ROUNDS / 2,
        "only {rounds_with_reports} rounds reported durability"
    );
    eprintln!("kill_9_during_group_commit: {rounds_with_reports}/{ROUNDS} rounds reported durability; {end} records verified");
    assert!(end > 1000, "the writers made progress: {end} records");
}

/// After a kill: every partition `p<i>` under `dir` started where the last check ended, and
/// now holds every offset reported durable. Updates `ends`; returns the reports checked.
fn check_partitions(dir: &Path, context: &str, reports: &Reports, ends: &mut [u64]) -> usize {
    let mut checked = 0;
    for (partition, end) in ends.iter_mut().enumerate() {
        if let Some(&start) = reports.start.get(&partition) {
            assert_eq!(
                start, *end,
                "{context}: partition {partition} starts at the verified end"
            );
        }
        *end = verify(&dir.join(format!("p{partition}")));
        if let Some(&durable) = reports.durable.get(&partition) {
            checked += 1;
            assert!(
                *end > durable,
                "{context}: partition {partition} had offset {durable} reported durable but ends at {end}"
            );
        }
    }
    checked
}

/// The log writer's arguments for the many-partition crash tests: small batches, many in
/// flight, so that every kill lands among flushes of many partitions.
fn many_partitions_writer(partitions: &str) -> Vec<&str> {
    vec![
        "--partitions",
        partitions,
        "--records",
        "4",
        "--in-flight",
        "256",
    ]
}

/// Many partitions of one shard, killed again and again while their flushes share the
/// shard's flush rounds (writes of every member, then every member's sync): every offset
/// reported durable on every partition is there after each kill, intact and once.
#[test]
fn acknowledged_appends_on_many_partitions_survive_kill_9_during_shard_flush_rounds() {
    const PARTITIONS: usize = 40;
    const KILLS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("kill_9_during_shard_flush_rounds"));
    let mut ends = vec![0u64; PARTITIONS];
    let mut reported = 0;
    let mut shared_rounds = 0;
    let partitions = PARTITIONS.to_string();
    for kill in 0..KILLS {
        let flush = ["every-batch", "interval", "bytes", "never"][kill % 4];
        let kill_after = Duration::from_millis(rng.gen_range(100..600));
        let reports = run_writer_and_kill_once_reported(
            dir.path(),
            flush,
            kill_after,
            &many_partitions_writer(&partitions),
            PARTITIONS,
        );
        let (rounds, members) = reports.rounds;
        if members > rounds {
            shared_rounds += 1;
        }
        let context = format!("kill {kill} ({flush}, after {kill_after:?})");
        reported += check_partitions(dir.path(), &context, &reports, &mut ends);
    }
    let total: u64 = ends.iter().sum();
    eprintln!("kill_9_during_shard_flush_rounds: {reported} partition reports checked over {KILLS} kills; {total} records verified");
    assert!(
        reported >= PARTITIONS * KILLS / 2,
        "only {reported} partition reports of durability"
    );
    assert!(
        ends.iter().all(|&end| end > 0),
        "every partition made progress: {ends:?}"
    );
    assert!(
        shared_rounds >= KILLS / 2,
        "flush rounds held several partitions in only {shared_rounds} of {KILLS} runs"
    );
}

/// Many partitions with a shard journal, killed again and again: durability comes from the
/// journal's one write and fdatasync per commit, the segments are written up to 50 ms
/// later, so a kill leaves batches that only the journal holds. Replay (what a broker
/// runs at start) brings every offset reported durable back, intact and once.
#[test]
fn acknowledged_appends_survive_kill_9_with_a_shard_journal_by_replay() {
    const PARTITIONS: usize = 40;
    const KILLS: usize = 9;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("kill_9_with_a_shard_journal"));
    let mut ends = vec![0u64; PARTITIONS];
    let mut reported = 0;
    let mut replayed_runs = 0;
    let mut replayed_batches = 0;
    let partitions = PARTITIONS.to_string();
    for kill in 0..KILLS {
        let flush = ["every-batch", "interval", "bytes"][kill % 3];
        let kill_after = Duration::from_millis(rng.gen_range(150..700));
        let mut arguments = many_partitions_writer(&partitions);
        // 8 MiB: small enough that runs wrap the ring through checkpoints.
        arguments.extend(["--journal-bytes", "8388608"]);
        let reports = run_writer_and_kill_once_reported(
            dir.path(),
            flush,
            kill_after,
            &arguments,
            PARTITIONS,
        );
        let summary = shardline::log::journal::replay_blocking(dir.path()).expect("replay");
        if summary.batches_applied > 0 {
            replayed_runs += 1;
            replayed_batches += summary.batches_applied;
        }
        let context = format!("kill {kill} ({flush}, after {kill_after:?})");
        reported += check_partitions(dir.path(), &context, &reports, &mut ends);
    }
    let total: u64 = ends.iter().sum();
    eprintln!("kill_9_with_a_shard_journal: {reported} partition reports checked over {KILLS} kills; {replayed_batches} batches replayed in {replayed_runs} runs; {total} records verified");
    assert!(
        reported >= PARTITIONS * KILLS / 2,
        "only {reported} partition reports of durability"
    );
    // The kills must catch batches that only the journal held, or this proves nothing.
    assert!(
        replayed_runs >= KILLS / 2,
        "replay restored batches after only {replayed_runs} of {KILLS} kills"
    );
}
