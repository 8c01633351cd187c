//! Crash tests of the partition log: a writer process is killed with SIGKILL at random
//! moments, again and again; after each kill the log is reopened and every batch whose
//! durability the writer reported must be there, intact, once and in order.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use shardline::log::{LogConfig, LogShard, ReadError, ShardLogConfig};
use shardline::record::reader::records;
use shardline::record::BatchIter;

use crate::harness::{on_executor, seed, shardline_binary};

const ROUNDS: usize = 24;
const NO_REPORT: u64 = u64::MAX;

/// What one run of the writer reported before it was killed.
struct Reports {
    /// The log end offset the writer found on start.
    start: u64,
    /// The highest offset reported durable (`NO_REPORT` if none).
    durable: u64,
}

fn run_writer_and_kill(dir: &Path, flush: &str, kill_after: Duration) -> Reports {
    let mut child = Command::new(shardline_binary())
        .args(["debug", "log-writer", "--dir"])
        .arg(dir)
        .args(["--flush", flush])
        .env("SHARDLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let start = Arc::new(AtomicU64::new(NO_REPORT));
    let durable = Arc::new(AtomicU64::new(NO_REPORT));
    let reader = {
        let (start, durable) = (start.clone(), durable.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                let (Some(word), Some(number)) = (words.next(), words.next()) else {
                    continue;
                };
                let number: u64 = number.parse().expect("numbers in writer reports");
                match word {
                    "start" => start.store(number, Ordering::SeqCst),
                    "durable" => {
                        let seen = durable.load(Ordering::SeqCst);
                        if seen == NO_REPORT || number > seen {
                            durable.store(number, Ordering::SeqCst);
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reap the writer");
    assert!(!status.success(), "the writer runs until killed");
    reader.join().expect("report reader");
    Reports {
        start: start.load(Ordering::SeqCst),
        durable: durable.load(Ordering::SeqCst),
    }
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
        let flush = ["every-batch", "interval", "bytes"][round % 3];
        let kill_after = Duration::from_millis(rng.gen_range(30..400));
        let reports = run_writer_and_kill(&path, flush, kill_after);
        if reports.start != NO_REPORT {
            assert_eq!(
                reports.start, end,
                "round {round}: the writer starts at the verified end"
            );
        }
        end = verify(&path);
        if reports.durable != NO_REPORT {
            rounds_with_reports += 1;
            assert!(
                end > reports.durable,
                "round {round} ({flush}, killed after {kill_after:?}): offset {} was reported \
                 durable but the log ends at {end}",
                reports.durable
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
