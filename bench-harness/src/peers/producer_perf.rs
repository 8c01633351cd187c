//! Kafka measured by its own producer benchmark, `org.apache.kafka.tools.ProducerPerformance`
//! (in the `kafka-tools` jar that `install.sh` fetches), beside the harness's loadgen run of
//! Kafka: the same server settings for the durability class, the same topic shape, the same
//! message size, acks, batch size and linger as the loadgen's Kafka driver. It produces only
//! (no consumer shares the cores), so it is Kafka's best case; the report ranks it with the
//! other peers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::results::{Percentiles, RunResult};

/// The producer settings of the loadgen's Kafka driver when no profile sets them
/// (`loadgen/src/driver/mod.rs`): 256 KiB batches, 1 ms linger, no compression.
pub const BATCH_BYTES: u64 = 262_144;
pub const LINGER_MS: u64 = 1;
/// The tool's main class.
pub const MAIN_CLASS: &str = "org.apache.kafka.tools.ProducerPerformance";
/// Records to send when nothing tells how fast Kafka is here (about 10 s at 100k msg/s).
pub const RECORDS_DEFAULT: u64 = 1_000_000;
/// How long the tool may run: this many times the scenario's load time, and at least
/// `RUN_SECONDS_MIN` (the JVM starts, and the topic's metadata arrives).
pub const RUN_TIME_FACTOR: f64 = 4.0;
pub const RUN_SECONDS_MIN: f64 = 60.0;

/// The tool's final line: how many records, at what rate, and the latency percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub records: u64,
    pub records_per_s: f64,
    pub megabytes_per_s: f64,
    pub average_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
}

/// The arguments after `java -cp CLASSPATH`.
pub fn arguments(
    topic: &str,
    records: u64,
    record_bytes: u64,
    bootstrap: &str,
    acks: &str,
) -> Vec<String> {
    let mut arguments = vec![
        MAIN_CLASS.to_string(),
        "--topic".into(),
        topic.into(),
        "--num-records".into(),
        records.to_string(),
        "--record-size".into(),
        record_bytes.to_string(),
        "--throughput".into(),
        "-1".into(),
        "--producer-props".into(),
    ];
    arguments.extend([
        format!("bootstrap.servers={bootstrap}"),
        format!("acks={acks}"),
        format!("batch.size={BATCH_BYTES}"),
        format!("linger.ms={LINGER_MS}"),
        "compression.type=none".into(),
    ]);
    arguments
}

/// The number before `unit` in `text` ("12.5 ms avg latency" → 12.5 for "ms avg latency").
fn number_before(text: &str, unit: &str) -> Option<f64> {
    let before = &text[..text.find(unit)?];
    before.trim_end().rsplit([' ', '(']).next()?.parse().ok()
}

/// The summary in the tool's output: its last line with percentiles, e.g. `1000000 records
/// sent, 123456.7 records/sec (120.56 MB/sec), 12.34 ms avg latency, 456.00 ms max
/// latency, 10 ms 50th, 30 ms 95th, 40 ms 99th, 50 ms 99.9th.`
pub fn parse_summary(output: &str) -> Option<Summary> {
    let line = output.lines().rev().find(|line| line.contains(" 99.9th"))?;
    Some(Summary {
        records: number_before(line, "records sent")? as u64,
        records_per_s: number_before(line, "records/sec")?,
        megabytes_per_s: number_before(line, "MB/sec")?,
        average_ms: number_before(line, "ms avg latency")?,
        max_ms: number_before(line, "ms max latency")?,
        p50_ms: number_before(line, "ms 50th")?,
        p95_ms: number_before(line, "ms 95th")?,
        p99_ms: number_before(line, "ms 99th")?,
        p99_9_ms: number_before(line, "ms 99.9th")?,
    })
}

/// Microseconds of `ms`.
fn micros(ms: f64) -> Option<u64> {
    Some((ms * 1000.0).round() as u64)
}

/// Fills `result` from `summary`: throughput and produce latency; nothing is consumed, so
/// there is no end-to-end latency and no loss check.
pub fn record(result: &mut RunResult, summary: &Summary) {
    result.throughput_messages_per_s = summary.records_per_s;
    result.throughput_megabytes_per_s = summary.megabytes_per_s;
    result.produce_latency = Percentiles {
        count: summary.records,
        p50_us: micros(summary.p50_ms),
        p90_us: None,
        p99_us: micros(summary.p99_ms),
        p99_9_us: micros(summary.p99_9_ms),
        p99_99_us: None,
        max_us: micros(summary.max_ms),
    };
    result.integrity_checked = false;
    result.produce_only = true;
    // The tool is this row's load generator, and it ended well.
    result.loadgen_exit_code = Some(0);
}

/// Runs the tool to the end (it stops after `records`), its output in `log`; killed, and
/// an error, if it is still running after `timeout`.
pub fn run(
    java: &Path,
    classpath: &str,
    arguments: &[String],
    log: &Path,
    timeout: Duration,
) -> Result<Summary, String> {
    let output = std::fs::File::create(log)
        .map_err(|error| format!("creating {}: {error}", log.display()))?;
    let errors = output
        .try_clone()
        .map_err(|error| format!("{}: {error}", log.display()))?;
    let mut child = Command::new(java)
        .arg("-cp")
        .arg(classpath)
        .args(arguments)
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(errors))
        .spawn()
        .map_err(|error| format!("starting {}: {error}", java.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{MAIN_CLASS} still running after {timeout:?}: killed (see {})",
                    log.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(error) => return Err(format!("waiting for {MAIN_CLASS}: {error}")),
        }
    };
    let text = std::fs::read_to_string(log)
        .map_err(|error| format!("reading {}: {error}", log.display()))?;
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        return Err(format!(
            "{MAIN_CLASS} exited with {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    parse_summary(&text).ok_or_else(|| {
        format!(
            "{MAIN_CLASS} printed no summary line (see {})",
            log.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
412345 records sent, 82469.0 records/sec (80.54 MB/sec), 180.3 ms avg latency, 611.0 ms max latency.
1000000 records sent, 95238.095238 records/sec (93.01 MB/sec), 161.53 ms avg latency, 611.00 ms max latency, 150 ms 50th, 290 ms 95th, 350 ms 99th, 420 ms 99.9th.
";

    #[test]
    fn the_final_line_is_parsed_into_rate_and_percentiles() {
        let summary = parse_summary(OUTPUT).expect("a summary");
        assert_eq!(summary.records, 1_000_000);
        assert!((summary.records_per_s - 95_238.095238).abs() < 1e-6);
        assert_eq!(summary.megabytes_per_s, 93.01);
        assert_eq!(summary.average_ms, 161.53);
        assert_eq!(summary.max_ms, 611.0);
        assert_eq!(
            (
                summary.p50_ms,
                summary.p95_ms,
                summary.p99_ms,
                summary.p99_9_ms
            ),
            (150.0, 290.0, 350.0, 420.0)
        );
    }

    #[test]
    fn a_recorded_summary_is_a_successful_produce_only_run() {
        let mut result = RunResult::default();
        assert!(!result.succeeded(), "an empty result has not run");
        record(&mut result, &parse_summary(OUTPUT).unwrap());
        assert!(result.succeeded(), "{result:?}");
        assert_eq!(result.integrity_text(), "n/a: produce only");
        assert_eq!(result.produce_latency.p99_9_us, Some(420_000));
        assert_eq!(result.throughput_messages_per_s.round(), 95_238.0);
        result.errors.push("the tool failed".into());
        assert!(!result.succeeded());
    }

    #[test]
    fn progress_lines_alone_or_garbage_are_no_summary() {
        assert_eq!(parse_summary(OUTPUT.lines().next().unwrap()), None);
        assert_eq!(parse_summary(""), None);
        assert_eq!(parse_summary("x ms 99.9th"), None);
    }

    #[test]
    fn the_arguments_match_the_loadgen_kafka_shape() {
        let arguments = arguments("t", 5, 1024, "127.0.0.1:9092", "all");
        assert_eq!(arguments[0], MAIN_CLASS);
        let joined = arguments.join(" ");
        for wanted in [
            "--topic t",
            "--num-records 5",
            "--record-size 1024",
            "--throughput -1",
            "bootstrap.servers=127.0.0.1:9092",
            "acks=all",
            "batch.size=262144",
            "linger.ms=1",
            "compression.type=none",
        ] {
            assert!(joined.contains(wanted), "{wanted} in {joined}");
        }
    }
}
