//! What a run found, as a human table (stdout), a JSON report (`--json`) and HdrHistogram
//! percentile distribution files (`--hdr-dir`), plus the live line printed each second.
//!
//! Units: MB is 10^6 bytes of message values (keys and framing not counted); latencies are
//! kept in µs and printed in ms.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::args::Args;

const BYTES_PER_MB: f64 = 1e6;
const MICROS_PER_MILLI: f64 = 1_000.0;
/// Percentiles in the table and the JSON report.
const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];
/// Percentile steps per halving of the distance to 100 % in the distribution files (as
/// HdrHistogram's `outputPercentileDistribution` default).
const PERCENTILE_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The outcome of the whole run, assembled by the main thread.
#[derive(Debug)]
pub struct Results {
    pub partitions: u32,
    pub sent: u64,
    pub acknowledged: u64,
    pub produce_errors: u64,
    pub measured_acknowledged: u64,
    /// From the end of the warm-up to the last acknowledgement of a measured message (at
    /// least `--duration-s`): an overloaded open loop acknowledges after its schedule ends.
    pub produce_seconds: f64,
    pub consumed: u64,
    pub measured_consumed: u64,
    /// As `produce_seconds`, to the last measured message consumed.
    pub consume_seconds: f64,
    pub foreign: u64,
    pub lost: u64,
    /// The first lost message, as (producer, sequence).
    pub first_lost: Option<(u32, u64)>,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Consumed although the producer saw the send fail (at-least-once retries).
    pub consumed_not_acknowledged: u64,
    pub errors: Vec<String>,
    pub produce_latency_us: Histogram<u64>,
    pub end_to_end_latency_us: Histogram<u64>,
    pub checked: bool,
    /// With `--consumer-group`: how often a member's partitions changed after the producers
    /// started (a duplicate can only come from such a change).
    pub ownership_changes: u64,
    /// The live lines' intervals (about one a second), warm-up and drain included.
    pub timeline: Vec<crate::timeline::Sample>,
    /// Per-interval produce-ack latency, written as an HdrHistogram interval log.
    pub produce_intervals: Vec<crate::timeline::IntervalHistogram>,
}

impl Results {
    /// Whether the run broke a delivery promise: an acknowledged message lost or doubled.
    pub fn integrity_failed(&self) -> bool {
        self.lost > 0 || self.duplicated > 0 || self.out_of_order > 0
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn megabytes_per_second(count: u64, seconds: f64, args: &Args) -> f64 {
    per_second(count, seconds) * args.message_bytes.mean_bytes() / BYTES_PER_MB
}

fn ms(value_us: u64) -> f64 {
    value_us as f64 / MICROS_PER_MILLI
}

/// What happened since the last live line.
#[derive(Debug)]
pub struct Interval {
    pub elapsed_s: f64,
    pub phase: &'static str,
    pub seconds: f64,
    pub acknowledged: u64,
    pub consumed: u64,
    /// Produce errors over the whole run so far.
    pub errors: u64,
    pub produce_latency_us: Histogram<u64>,
}

pub fn live_line(interval: &Interval, message_bytes: f64) -> String {
    let rate = interval.acknowledged as f64 / interval.seconds;
    let latency = &interval.produce_latency_us;
    format!(
        "[{:6.1}s {:<7}] produce {rate:>9.0} msg/s {:>8.2} MB/s  p50 {:>8.3} ms  \
         p99 {:>8.3} ms  consume {:>9.0} msg/s  errors {}",
        interval.elapsed_s,
        interval.phase,
        rate * message_bytes / BYTES_PER_MB,
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        interval.consumed as f64 / interval.seconds,
        interval.errors,
    )
}

fn latency_row(name: &str, histogram: &Histogram<u64>) -> String {
    let mut row = format!("{name:<22}");
    if histogram.is_empty() {
        row.push_str("  (no samples)");
        return row;
    }
    for (_, quantile) in QUANTILES {
        row.push_str(&format!(
            " {:>9.3}",
            ms(histogram.value_at_quantile(quantile))
        ));
    }
    row.push_str(&format!(
        " {:>9.3} {:>9}",
        ms(histogram.max()),
        histogram.len()
    ));
    row
}

pub fn print_table(results: &Results, args: &Args) {
    let topics = match args.topics {
        Some(count) => format!(
            "topics {}-0 .. {}-{} ({count} topics of {} partitions)",
            args.topic,
            args.topic,
            count - 1,
            results.partitions
        ),
        None => format!("topic {} ({} partitions)", args.topic, results.partitions),
    };
    println!(
        "shardline-loadgen: system {} broker {} {topics}, {} producers, {} consumers, \
         {} B messages, keys {:?}, acks {:?}, rate {}, warm-up {} s, measured {} s",
        args.system.name(),
        args.broker,
        args.producers,
        args.consumers,
        args.message_bytes,
        args.keys,
        args.acks,
        args.rate,
        args.warmup_s,
        args.duration_s
    );
    if let Ok(settings) = crate::driver::client_settings(args) {
        let text: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("client settings: {}", text.join(", "));
    }
    println!(
        "throughput (measured messages): produce {:.0} msg/s {:.2} MB/s, consume {:.0} msg/s \
         {:.2} MB/s (over {:.2} s and {:.2} s)",
        per_second(results.measured_acknowledged, results.produce_seconds),
        megabytes_per_second(results.measured_acknowledged, results.produce_seconds, args),
        per_second(results.measured_consumed, results.consume_seconds),
        megabytes_per_second(results.measured_consumed, results.consume_seconds, args),
        results.produce_seconds,
        results.consume_seconds,
    );
    let mut header = format!("{:<22}", "latency (ms)");
    for (name, _) in QUANTILES {
        header.push_str(&format!(" {name:>9}"));
    }
    header.push_str(&format!(" {:>9} {:>9}", "max", "count"));
    println!("{header}");
    println!(
        "{}",
        latency_row("produce-ack", &results.produce_latency_us)
    );
    println!(
        "{}",
        latency_row("end-to-end", &results.end_to_end_latency_us)
    );
    println!(
        "messages: sent {} acknowledged {} produce errors {} consumed {} foreign {}",
        results.sent,
        results.acknowledged,
        results.produce_errors,
        results.consumed,
        results.foreign
    );
    if results.checked {
        println!(
            "integrity: lost {} duplicated {} out-of-order {} (consumed but not acknowledged {})",
            results.lost,
            results.duplicated,
            results.out_of_order,
            results.consumed_not_acknowledged
        );
        if let Some(group) = &args.consumer_group {
            println!(
                "consumer group {group}: {} ownership changes after the producers started \
                 (a message checked but not committed before its partition moved is \
                 delivered again and counted as duplicated)",
                results.ownership_changes
            );
        }
    } else {
        println!("integrity: not checked (no consumers, or a consumer failed)");
    }
    for error in &results.errors {
        println!("error: {error}");
    }
    if results.integrity_failed() {
        let first = results.first_lost.map_or(String::new(), |(p, s)| {
            format!(" (first lost: producer {p} sequence {s})")
        });
        println!(
            "!!!!! INTEGRITY FAILURE: {} acknowledged messages lost, {} duplicated, {} out of \
             order{first} !!!!!",
            results.lost, results.duplicated, results.out_of_order
        );
    }
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("count".into(), json!(histogram.len()));
    if !histogram.is_empty() {
        for (name, quantile) in QUANTILES {
            let key = format!("{}_us", name.replace('.', "_"));
            object.insert(key, json!(histogram.value_at_quantile(quantile)));
        }
        object.insert("max_us".into(), json!(histogram.max()));
        object.insert("min_us".into(), json!(histogram.min()));
        object.insert("mean_us".into(), json!(histogram.mean()));
    }
    Value::Object(object)
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
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_end": read("/proc/loadavg"),
    })
}

fn client_settings_json(args: &Args) -> Value {
    let settings = crate::driver::client_settings(args).unwrap_or_default();
    Value::Object(
        settings
            .into_iter()
            .map(|(name, value)| (name.to_string(), Value::String(value)))
            .collect(),
    )
}

pub fn report_json(results: &Results, args: &Args, started_unix_s: u64) -> Value {
    let config = args.producer_config();
    json!({
        "tool": "shardline-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": started_unix_s,
        "machine": machine(),
        "parameters": {
            "system": args.system.name(),
            "client_settings": client_settings_json(args),
            "broker": args.broker,
            "topic": args.topic,
            "topics": args.topics.unwrap_or(1),
            "topic_names": if args.topics.is_some() {
                format!("{}-0 .. {}-{}", args.topic, args.topic, args.topics.unwrap_or(1) - 1)
            } else {
                args.topic.clone()
            },
            "consumer_group": args.consumer_group,
            "partitions": results.partitions,
            "producers": args.producers,
            "consumers": args.consumers,
            "message_bytes": args.message_bytes.to_string(),
            "message_bytes_mean": args.message_bytes.mean_bytes(),
            "keys": format!("{:?}", args.keys).to_lowercase(),
            "key_count": args.key_count,
            "acks": format!("{:?}", args.acks).to_lowercase(),
            "batch_bytes": config.batch_bytes,
            "linger_us": u64::try_from(config.linger.as_micros()).unwrap_or(u64::MAX),
            "rate": args.rate.to_string(),
            "outstanding": args.outstanding,
            "pace_us": args.pace_us,
            "warmup_s": args.warmup_s,
            "duration_s": args.duration_s,
            "drain_s": args.drain_s,
            "shard_routing": args.shard_routing(),
        },
        "results": {
            "sent": results.sent,
            "acknowledged": results.acknowledged,
            "produce_errors": results.produce_errors,
            "measured_acknowledged": results.measured_acknowledged,
            "produce_seconds": results.produce_seconds,
            "produce_messages_per_second":
                per_second(results.measured_acknowledged, results.produce_seconds),
            "produce_megabytes_per_second":
                megabytes_per_second(results.measured_acknowledged, results.produce_seconds, args),
            "consumed": results.consumed,
            "measured_consumed": results.measured_consumed,
            "consume_seconds": results.consume_seconds,
            "consume_messages_per_second":
                per_second(results.measured_consumed, results.consume_seconds),
            "consume_megabytes_per_second":
                megabytes_per_second(results.measured_consumed, results.consume_seconds, args),
            "foreign": results.foreign,
            "integrity_checked": results.checked,
            "lost": results.lost,
            "duplicated": results.duplicated,
            "out_of_order": results.out_of_order,
            "group_ownership_changes": results.ownership_changes,
            "consumed_not_acknowledged": results.consumed_not_acknowledged,
            "produce_latency": latency_json(&results.produce_latency_us),
            "end_to_end_latency": latency_json(&results.end_to_end_latency_us),
            "errors": results.errors,
            "timeline": crate::timeline::timeline_json(&results.timeline),
        },
    })
}

/// Writes `histogram` (in µs) as HdrHistogram's classic percentile distribution, values in
/// ms: `Value Percentile TotalCount 1/(1-Percentile)` rows, the 100 % row without the last
/// column, then the `#[Mean ...]` footer. HdrHistogram's plotter reads this format.
pub fn write_percentile_distribution(
    histogram: &Histogram<u64>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(PERCENTILE_TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value = ms(step.value_iterated_to());
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )?;
            } else {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(histogram.sigfig())))
        .log2()
        .ceil()
        .exp2();
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / MICROS_PER_MILLI,
        histogram.stdev() / MICROS_PER_MILLI
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        ms(histogram.max()),
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets as u64
    )
}

/// Writes `produce-ack.hgrm` and `end-to-end.hgrm` into `dir` (created when missing).
pub fn write_hdr_files(results: &Results, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, histogram) in [
        ("produce-ack", &results.produce_latency_us),
        ("end-to-end", &results.end_to_end_latency_us),
    ] {
        let path = dir.join(format!("{name}.hgrm"));
        let mut text = Vec::new();
        write_percentile_distribution(histogram, &mut text)
            .and_then(|()| std::fs::write(&path, &text))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let path = dir.join("produce-ack.hlog");
    let log = interval_log(&results.produce_intervals)?;
    std::fs::write(&path, log).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The intervals as an HdrHistogram interval log (V2 compressed histograms, values in µs,
/// max column in ms), which HdrHistogram's log tools (HistogramLogProcessor,
/// HistogramLogAnalyzer) read.
pub fn interval_log(intervals: &[crate::timeline::IntervalHistogram]) -> Result<Vec<u8>, String> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = intervals.first().map_or(0, |i| i.start_unix_ns);
    let start_time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(start);
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("shardline-loadgen produce-ack latency, values in microseconds")
        .with_start_time(start_time)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| format!("starting the interval log: {e}"))?;
    for interval in intervals {
        writer
            .write_histogram(
                &interval.latency_us,
                std::time::Duration::from_nanos(interval.start_unix_ns.saturating_sub(start)),
                std::time::Duration::from_secs_f64(interval.seconds),
                None,
            )
            .map_err(|e| format!("writing the interval log: {e:?}"))?;
    }
    drop(writer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn percentile_distribution_has_four_numeric_columns_and_ends_at_the_max() {
        let mut histogram = new_histogram();
        for value_us in 1..=10_000u64 {
            histogram.record(value_us).expect("in range");
        }
        let mut text = Vec::new();
        write_percentile_distribution(&histogram, &mut text).expect("writes to memory");
        let text = String::from_utf8(text).expect("utf-8");
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|line| {
                line.split_whitespace()
                    .map(|field| field.parse::<f64>().expect("numeric"))
                    .collect()
            })
            .collect();
        let (last, body) = rows.split_last().expect("rows");
        assert!(body.iter().all(|row| row.len() == 4), "{text}");
        assert_eq!(last.len(), 3, "{text}");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!((last[0] - 10.0).abs() < 0.01, "max 10 ms: {text}");
        assert!(text.contains("#[Max"));
    }

    #[test]
    fn the_interval_log_reads_back_with_hdrhistogram_s_own_parser() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        use hdrhistogram::serialization::Deserializer;
        let intervals: Vec<crate::timeline::IntervalHistogram> = (0..3u64)
            .map(|i| {
                let mut latency_us = new_histogram();
                for value in 1..=(100 * (i + 1)) {
                    latency_us.record(value * 10).expect("in range");
                }
                crate::timeline::IntervalHistogram {
                    start_unix_ns: 1_700_000_000_000_000_000 + i * 1_000_000_000,
                    seconds: 1.0,
                    latency_us,
                }
            })
            .collect();
        let log = interval_log(&intervals).expect("writes");
        let mut counts = Vec::new();
        let mut deserializer = Deserializer::new();
        for entry in IntervalLogIterator::new(&log) {
            if let LogEntry::Interval(interval) = entry.expect("a valid log line") {
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    interval.encoded_histogram(),
                )
                .expect("base64");
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut std::io::Cursor::new(bytes))
                    .expect("a V2 histogram");
                counts.push(histogram.len());
            }
        }
        assert_eq!(counts, vec![100, 200, 300]);
    }
}
