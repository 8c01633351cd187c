//! The report directory: `report.md` (a table per scenario), `report.json` (machine,
//! parameters, every result) and the plots. Table numbers are formatted from the very
//! values written to `report.json`: latencies in ms with three decimals (µs / 1000),
//! throughput in msg/s (no decimals) and MB/s (two), CPU seconds (two), RSS MiB (one).

use std::path::Path;

use serde_json::{json, Value};

use crate::comparison_report;
use crate::replicated_peer_report;
use crate::replicated_report;
use crate::results::{Percentiles, RunResult};
use crate::scenario::Scenario;

const MICROS_PER_MILLI: f64 = 1_000.0;

/// Why there is no PNG next to each SVG (in the report's footer).
pub const PNG_NOTE: &str = "Plots are SVG only: rendering them to PNG needs a font for the \
    text, and the harness uses no system fonts and embeds none, so PNG is skipped.";

/// The table's header, one column per number.
pub const TABLE_HEADER: [&str; 19] = [
    "profile",
    "run",
    "msg/s",
    "MB/s",
    "produce p50",
    "p90",
    "p99",
    "p99.9",
    "p99.99",
    "max",
    "e2e p50",
    "p90",
    "p99",
    "p99.9",
    "p99.99",
    "max",
    "lost/dup",
    "broker CPU s",
    "peak RSS MiB",
];

pub fn latency_ms(value_us: Option<u64>) -> String {
    value_us.map_or("-".into(), |us| {
        format!("{:.3}", us as f64 / MICROS_PER_MILLI)
    })
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn latency_cells(latency: &Percentiles) -> Vec<String> {
    latency
        .in_order()
        .iter()
        .map(|&us| latency_ms(us))
        .collect()
}

/// The table row of one result, cell by cell.
pub fn table_row(result: &RunResult) -> Vec<String> {
    let mut cells = vec![
        result.profile.clone(),
        result.run.clone(),
        format!("{:.0}", result.throughput_messages_per_s),
        format!("{:.2}", result.throughput_megabytes_per_s),
    ];
    cells.extend(latency_cells(&result.produce_latency));
    cells.extend(latency_cells(&result.end_to_end_latency));
    let integrity = result.integrity_text();
    cells.push(if result.skipped.is_some() {
        "skipped".into()
    } else if result.succeeded() {
        integrity
    } else {
        format!("{integrity} FAILED")
    });
    cells.push(optional(result.broker_cpu_s, 2));
    cells.push(optional(result.broker_peak_rss_mib, 1));
    cells
}

/// A markdown table of `results`.
pub fn markdown_table(results: &[RunResult]) -> String {
    let mut text = format!("| {} |\n", TABLE_HEADER.join(" | "));
    let align: Vec<&str> = TABLE_HEADER
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 2 { "---" } else { "---:" })
        .collect();
    text.push_str(&format!("| {} |\n", align.join(" | ")));
    for result in results {
        text.push_str(&format!("| {} |\n", table_row(result).join(" | ")));
    }
    text
}

/// What the machine is, for comparing runs later.
pub fn machine(allowed_cpus: &[usize]) -> Value {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let meminfo_kib = |name: &str| {
        read("/proc/meminfo").and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        })
    };
    let cpu_model = read("/proc/cpuinfo").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
    });
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "allowed_cpus": allowed_cpus,
        "cpu_model": cpu_model,
        "kernel": read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        "hostname": read("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()),
        "memory_total_mib": meminfo_kib("MemTotal:").map(|kib| kib / 1024),
        "memory_available_mib_at_start": meminfo_kib("MemAvailable:").map(|kib| kib / 1024),
        "loadavg_at_end": read("/proc/loadavg").map(|s| s.trim().to_string()),
    })
}

/// Everything `report.json` holds besides the results.
pub struct ReportContext<'a> {
    pub scenario: &'a Scenario,
    /// The Kafka release, when Kafka was among the peers.
    pub kafka_version: Option<String>,
    pub machine: Value,
    pub placement: Value,
    pub started_unix_s: u64,
    pub elapsed_s: f64,
    pub plots: Vec<String>,
    /// What `--disk-hog` wrote, or why it failed, when it ran.
    pub disk_hog: Option<Result<crate::hog::HogTotals, String>>,
    /// What `--device-probe` measured, or why it could not, when it ran.
    pub device_probe: Option<Result<crate::device::DeviceProbe, String>>,
}

pub fn report_json(context: &ReportContext, results: &[RunResult]) -> Value {
    json!({
        "tool": "shardline-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": context.started_unix_s,
        "elapsed_s": context.elapsed_s,
        "machine": context.machine,
        "placement": context.placement,
        "scenario": context.scenario,
        "results": results,
        "comparisons": comparison_report::class_ratios(results),
        "replication_ratios": replicated_report::cluster_ratios(results),
        "peer_cluster_ratios": replicated_peer_report::peer_cluster_ratios(results),
        "kafka_version": context.kafka_version,
        "plots": context.plots,
        "disk_hog": match &context.disk_hog {
            None => Value::Null,
            Some(Ok(totals)) => json!(totals),
            Some(Err(error)) => json!({ "error": error }),
        },
        "device_probe": match &context.device_probe {
            None => Value::Null,
            Some(Ok(probe)) => json!(probe),
            Some(Err(error)) => json!({ "error": error }),
        },
        "png": PNG_NOTE,
    })
}

pub fn report_markdown(context: &ReportContext, results: &[RunResult]) -> String {
    let scenario = context.scenario;
    let machine = &context.machine;
    let mut text = format!(
        "# shardline-bench: {}\n\n{}\n\n",
        scenario.name, scenario.description
    );
    text.push_str(&format!(
        "Machine: {} CPUs ({}), kernel {}, {} MiB memory. Broker placement: {}.\n\n",
        machine["nproc"],
        machine["cpu_model"].as_str().unwrap_or("unknown CPU"),
        machine["kernel"].as_str().unwrap_or("unknown"),
        machine["memory_total_mib"],
        context.placement["description"].as_str().unwrap_or("-"),
    ));
    match &context.device_probe {
        None => {}
        Some(Ok(probe)) => text.push_str(&format!("{}\n\n", probe.describe())),
        Some(Err(error)) => text.push_str(&format!("Device probe: **failed** ({error}).\n\n")),
    }
    match &context.disk_hog {
        None => {}
        Some(Ok(hog)) => text.push_str(&format!("{}\n\n", hog.describe())),
        Some(Err(error)) => text.push_str(&format!(
            "Disk hog: **failed** ({error}); the runs after its failure had no disk \
             contention from it.\n\n"
        )),
    }
    text.push_str(&format!(
        "Workload: topic `{}`, {} partitions, {} producers, {} consumers, {} B messages, keys \
         {}, acks {}; warm-up {} s, measured {} s per run (unless the run says otherwise){}.\n\n",
        scenario.topic,
        scenario.partitions,
        scenario.producers,
        scenario.consumers,
        scenario.message_bytes,
        scenario.keys,
        if scenario.comparisons.is_empty() {
            scenario.acks.as_str()
        } else {
            "per comparison (below)"
        },
        scenario.warmup_s,
        scenario.duration_s,
        if scenario.broker_per_profile {
            "; the runs are consecutive phases against one broker per profile"
        } else if scenario.replication.is_some() {
            "; a fresh cluster per run (below)"
        } else {
            "; a fresh broker per run"
        },
    ));
    text.push_str(&format!("## {}\n\n", scenario.name));
    text.push_str(
        "Throughput: measured, acknowledged messages (MB = 10^6 B of values). Latency in \
         ms, corrected for coordinated omission; e2e = produce to consume.\n\n",
    );
    text.push_str(&markdown_table(results));
    text.push('\n');
    text.push_str(&comparison_report::peer_section(
        results,
        context.kafka_version.as_deref(),
    ));
    text.push_str(&replicated_report::replication_section(
        results,
        context.kafka_version.as_deref(),
    ));
    let failures: Vec<String> = results
        .iter()
        .filter(|result| result.skipped.is_none() && !result.succeeded())
        .map(|result| {
            format!(
                "- {} / {}: loadgen exit {:?}; {}",
                result.profile,
                result.run,
                result.loadgen_exit_code,
                result.errors.join("; ")
            )
        })
        .collect();
    if !failures.is_empty() {
        text.push_str(&format!("\n### Failures\n\n{}\n", failures.join("\n")));
    }
    if !context.plots.is_empty() {
        text.push_str("\n## Plots\n\n");
        for plot in &context.plots {
            text.push_str(&format!("![{plot}]({plot})\n\n"));
        }
    }
    text.push_str(&format!(
        "---\nEvery parameter and result is in `report.json`; HdrHistogram files are under \
         `runs/`. Total time {:.1} s. {PNG_NOTE}\n",
        context.elapsed_s
    ));
    text
}

/// The peer section alone (printed after the table).
pub fn peer_section(results: &[RunResult]) -> String {
    comparison_report::peer_section(results, None)
}

/// The replication section alone (printed after the table).
pub fn replication_section(results: &[RunResult]) -> String {
    replicated_report::replication_section(results, None)
}

pub fn write(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    fn context(scenario: &Scenario) -> ReportContext<'_> {
        ReportContext {
            scenario,
            kafka_version: None,
            machine: machine(&[0, 1]),
            placement: json!({"description": "unpinned"}),
            started_unix_s: 1,
            elapsed_s: 2.0,
            plots: vec!["latency-rate-20000.svg".into()],
            disk_hog: None,
            device_probe: None,
        }
    }

    /// The cells of every data row of the markdown table.
    fn table_rows(markdown: &str) -> Vec<Vec<String>> {
        markdown
            .lines()
            .filter(|line| line.starts_with('|'))
            .skip(2)
            .map(|line| {
                line.trim_matches('|')
                    .split('|')
                    .map(|cell| cell.trim().to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn markdown_numbers_match_the_json() {
        let scenario = Scenario::load("quick").expect("built in");
        let results = vec![
            run_result("latency", "rate-20000", 731),
            run_result("durable", "max", 12_345),
        ];
        let context = context(&scenario);
        let markdown = report_markdown(&context, &results);
        let json = report_json(&context, &results);
        let rows = table_rows(&markdown);
        assert_eq!(rows.len(), 2, "{markdown}");
        for (row, result) in rows
            .iter()
            .zip(json["results"].as_array().expect("results"))
        {
            assert_eq!(row.len(), TABLE_HEADER.len(), "{row:?}");
            assert_eq!(row[0], result["profile"].as_str().expect("profile"));
            assert_eq!(row[1], result["run"].as_str().expect("run"));
            let messages = result["throughput_messages_per_s"].as_f64().expect("f64");
            assert_eq!(row[2], format!("{messages:.0}"));
            let names = [
                "p50_us",
                "p90_us",
                "p99_us",
                "p99_9_us",
                "p99_99_us",
                "max_us",
            ];
            for (column, latency) in [(4, "produce_latency"), (10, "end_to_end_latency")] {
                for (i, name) in names.iter().enumerate() {
                    let us = result[latency][name].as_u64().expect("u64");
                    let ms: f64 = row[column + i].parse().expect("ms");
                    assert!(
                        (ms * 1000.0 - us as f64).abs() < 0.5,
                        "{name}: {ms} vs {us}"
                    );
                }
            }
            assert_eq!(row[16], "0/0");
            assert_eq!(row[17], "3.46");
            assert_eq!(row[18], "123.5");
        }
        assert!(markdown.contains("0.731 | 1.462 | 2.193"), "{markdown}");
        assert!(markdown.contains(PNG_NOTE));
        assert_eq!(json["machine"]["allowed_cpus"], json!([0, 1]));
        assert_eq!(json["scenario"]["partitions"], 8);
    }

    #[test]
    fn a_failed_run_is_marked_in_the_table_and_listed() {
        let scenario = Scenario::load("quick").expect("built in");
        let mut lossy = run_result("latency", "max", 500);
        lossy.lost = 3;
        let markdown = report_markdown(&context(&scenario), &[lossy]);
        assert!(markdown.contains("3/0 FAILED"), "{markdown}");
        assert!(markdown.contains("### Failures"), "{markdown}");
    }

    #[test]
    fn the_disk_hog_is_reported_and_so_is_its_failure() {
        let scenario = Scenario::load("quick").expect("built in");
        let results = vec![run_result("latency", "max", 500)];
        let mut context = context(&scenario);
        assert_absent(&context, &results, "Disk hog", "disk_hog");
        context.disk_hog = Some(Ok(crate::hog::HogTotals {
            path: "/data/disk-hog".into(),
            bytes_written: 3 << 30,
            fdatasyncs: 48,
            elapsed_s: 30.0,
            mib_per_s: 102.4,
        }));
        let markdown = report_markdown(&context, &results);
        assert!(
            markdown.contains("wrote 3.0 GiB in 30 s (102 MiB/s"),
            "{markdown}"
        );
        assert_eq!(
            report_json(&context, &results)["disk_hog"]["fdatasyncs"],
            48
        );
        context.disk_hog = Some(Err("writing /data/disk-hog at 0: No space left".into()));
        assert_failure_reported(
            &context,
            &results,
            "Disk hog: **failed** (writing",
            "disk_hog",
        );
    }

    /// Without the extra, neither the report's head (`head`) nor its JSON (`key`) has it.
    fn assert_absent(context: &ReportContext, results: &[RunResult], head: &str, key: &str) {
        assert!(report_json(context, results)[key].is_null());
        assert!(!report_markdown(context, results).contains(head));
    }

    /// The report's head says `head` (a failed extra's line) and its JSON has the extra's
    /// error under `key`.
    fn assert_failure_reported(
        context: &ReportContext,
        results: &[RunResult],
        head: &str,
        key: &str,
    ) {
        let markdown = report_markdown(context, results);
        assert!(markdown.contains(head), "{markdown}");
        let json = report_json(context, results);
        assert!(
            json[key]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }

    #[test]
    fn the_device_probe_is_reported_and_so_is_its_failure() {
        let scenario = Scenario::load("quick").expect("built in");
        let results = vec![run_result("latency", "max", 500)];
        let mut context = context(&scenario);
        assert_absent(&context, &results, "Device probe", "device_probe");
        context.device_probe = Some(Ok(crate::device::DeviceProbe {
            dir: "/data/device-probe".into(),
            block_bytes: 1 << 20,
            shared_file_threads: 16,
            synced_files: 8,
            fresh_bytes: 1 << 30,
            synced_bytes: 1 << 29,
            fresh_mib_per_s: 516.0,
            overwrite_mib_per_s: 1264.0,
            synced_mib_per_s: 221.0,
            synced_messages_per_s: 226_304.0,
            message_bytes: 1024,
        }));
        let markdown = report_markdown(&context, &results);
        assert!(
            markdown.contains(
                "1 MiB direct-IO writes): new blocks 516 MiB/s, blocks already written 1264 MiB/s"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("the payload of 226304 msg/s of 1024 B"),
            "{markdown}"
        );
        assert_eq!(
            report_json(&context, &results)["device_probe"]["synced_mib_per_s"],
            221.0
        );
        context.device_probe = Some(Err("opening /data/x for direct IO: Invalid argument".into()));
        assert_failure_reported(
            &context,
            &results,
            "Device probe: **failed** (opening /data/x for direct IO",
            "device_probe",
        );
    }

    #[test]
    fn missing_latencies_print_as_dashes() {
        assert_eq!(latency_ms(None), "-");
        assert_eq!(latency_ms(Some(1)), "0.001");
    }
}
