//! `shardline-bench` end to end: a tiny scenario (two profiles, one 2 s run each) starts and
//! stops real brokers, drives them with `shardline-loadgen`, and leaves a report whose
//! markdown table agrees with its JSON, with parseable HdrHistogram files, SVG and PNG plots
//! (latency by percentile, throughput over time, throughput bars), and no acknowledged
//! message lost or doubled.
//!
//! The harness and the loadgen are other packages' binaries (no `CARGO_BIN_EXE_` for them),
//! so the test builds them with Cargo into the same target directory and profile.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{build_workspace_binaries, hgrm_rows, shardline_binary};

pub(super) const TINY_SCENARIO: &str = r#"
name = "tiny"
description = "integration test: two profiles, one short open-loop run"
profiles = ["latency", "balanced"]
topic = "bench-test"
partitions = 2
producers = 1
consumers = 1
message_bytes = 256
acks = "all"
warmup_s = 0.5
duration_s = 2.0

[[runs]]
rate = "1000"
"#;

/// Total count of an HdrHistogram percentile distribution file, after checking its shape.
fn hgrm_total_count(path: &Path) -> f64 {
    hgrm_rows(path).last().expect("rows")[2]
}

/// Data rows of the markdown table, as cells.
fn table_rows(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter(|line| {
            line.starts_with("| ") && !line.starts_with("| profile") && !line.starts_with("| ---")
        })
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

fn latency_ms(result: &Value, latency: &str, name: &str) -> String {
    let us = result[latency][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{latency}.{name} in {result}"));
    format!("{:.3}", us as f64 / 1000.0)
}

#[test]
fn bench_harness_runs_a_tiny_scenario_and_its_report_agrees_with_itself() {
    let binaries = build_workspace_binaries(&["shardline-loadgen", "shardline-bench"]);
    let work = tempfile::tempdir().expect("tempdir");
    let scenario = work.path().join("tiny.toml");
    std::fs::write(&scenario, TINY_SCENARIO).expect("scenario written");
    let out = work.path().join("report");
    let output = Command::new(binaries.join("shardline-bench"))
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .arg("--shardline")
        .arg(shardline_binary())
        .arg("--loadgen")
        .arg(binaries.join("shardline-loadgen"))
        .arg("--tuning-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning"))
        .arg("--data-parent")
        .arg(work.path())
        .arg("--no-pin")
        .output()
        .expect("shardline-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shardline-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("report.md") && stdout.contains("| latency |"),
        "{stdout}"
    );
    assert!(
        stderr.contains("latency (1/2)") && stderr.contains("balanced (2/2)"),
        "{stderr}"
    );

    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("json"))
            .expect("report.json parses");
    assert!(
        report["machine"]["nproc"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert!(report["machine"]["kernel"].is_string(), "{report}");
    assert_eq!(report["scenario"]["partitions"], 2, "{report}");
    let results = report["results"].as_array().expect("results");
    let rows = table_rows(&markdown);
    assert_eq!(results.len(), 2, "{report}");
    assert_eq!(rows.len(), results.len(), "{markdown}");
    for (row, result) in rows.iter().zip(results) {
        assert_eq!(
            row[0],
            result["profile"].as_str().expect("profile"),
            "{markdown}"
        );
        assert_eq!(row[1], "rate-1000");
        let messages = result["throughput_messages_per_s"].as_f64().expect("msg/s");
        assert!(messages > 0.0, "{result}");
        assert_eq!(row[2], format!("{messages:.0}"));
        let megabytes = result["throughput_megabytes_per_s"].as_f64().expect("MB/s");
        assert_eq!(row[3], format!("{megabytes:.2}"));
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
                assert_eq!(row[column + i], latency_ms(result, latency, name), "{name}");
            }
        }
        assert_eq!(result["integrity_checked"], true, "{result}");
        assert_eq!(result["lost"], 0, "{result}");
        assert_eq!(result["duplicated"], 0, "{result}");
        assert_eq!(row[16], "0/0");
        let cpu_s = result["broker_cpu_s"].as_f64().expect("cpu");
        let rss_mib = result["broker_peak_rss_mib"].as_f64().expect("rss");
        assert!(cpu_s > 0.0 && rss_mib > 0.0, "{result}");
        assert_eq!(row[17], format!("{cpu_s:.2}"));
        assert_eq!(row[18], format!("{rss_mib:.1}"));
        for file in ["produce_hgrm", "end_to_end_hgrm"] {
            let path = out.join(result[file].as_str().expect("hgrm path"));
            assert!(hgrm_total_count(&path) > 0.0, "{}", path.display());
        }
    }
    let plots: Vec<&str> = report["plots"]
        .as_array()
        .expect("plots")
        .iter()
        .map(|plot| plot.as_str().expect("name"))
        .collect();
    for expected in [
        "latency-produce-rate-1000",
        "latency-e2e-rate-1000",
        "throughput-time-rate-1000",
        "throughput",
    ] {
        for extension in ["svg", "png"] {
            let name = format!("{expected}.{extension}");
            assert!(plots.contains(&name.as_str()), "{name} in {plots:?}");
        }
    }
    for plot in plots {
        let bytes = std::fs::read(out.join(plot)).expect("plot written");
        if plot.ends_with(".svg") {
            assert!(bytes.starts_with(b"<svg"), "{plot}");
        } else {
            assert_eq!(png_dimensions(&bytes), Some((960, 600)), "{plot}");
            assert!(bytes.len() > 10_000, "{plot}: {} bytes", bytes.len());
        }
    }
    // The timeline behind the throughput-over-time plot: about one sample a second.
    let timeline = results[0]["timeline"].as_array().expect("timeline");
    assert!(timeline.len() >= 2, "{timeline:?}");
}

/// Width and height from a PNG's signature and IHDR chunk.
fn png_dimensions(png: &[u8]) -> Option<(u32, u32)> {
    if png.get(1..4)? != b"PNG" || png.get(12..16)? != b"IHDR" {
        return None;
    }
    let word = |at: usize| Some(u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?));
    Some((word(16)?, word(20)?))
}

const TINY_REPLICATED_SCENARIO: &str = r#"
name = "tiny-replicated"
description = "integration test: one broker, then three replicating; max, then half of max"
profiles = ["balanced"]
topic = "bench-replicated"
partitions = 3
producers = 1
consumers = 1
message_bytes = 256
acks = "all"
warmup_s = 0.5
duration_s = 1.5

[replication]
cores_per_broker = 1

[[replication.clusters]]
brokers = 1
replication_factor = 1
min_insync_replicas = 1

[[replication.clusters]]
brokers = 3
replication_factor = 3
min_insync_replicas = 2

[[runs]]
rate = "max"

[[runs]]
rate = "half-max"
"#;

/// Pids of the processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(text))
        })
        .collect()
}

#[test]
fn bench_harness_compares_one_broker_with_three_replicating_and_leaves_nothing_behind() {
    let binaries = build_workspace_binaries(&["shardline-loadgen", "shardline-bench"]);
    let work = tempfile::tempdir().expect("tempdir");
    let scenario = work.path().join("tiny-replicated.toml");
    std::fs::write(&scenario, TINY_REPLICATED_SCENARIO).expect("scenario written");
    let out = work.path().join("report");
    let data_parent = work.path().join("data");
    let output = Command::new(binaries.join("shardline-bench"))
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .arg("--shardline")
        .arg(shardline_binary())
        .arg("--loadgen")
        .arg(binaries.join("shardline-loadgen"))
        .arg("--tuning-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning"))
        .arg("--data-parent")
        .arg(&data_parent)
        .arg("--no-pin")
        .output()
        .expect("shardline-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shardline-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("## Replication"), "{stdout}");
    let leftovers = processes_mentioning(&data_parent.display().to_string());
    assert!(leftovers.is_empty(), "brokers left behind: {leftovers:?}");
    let data_left: Vec<_> = std::fs::read_dir(&data_parent)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(data_left.is_empty(), "data left behind: {data_left:?}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("json"))
            .expect("report.json parses");
    let results = report["results"].as_array().expect("results");
    let labels: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["profile"].as_str().expect("profile"),
                r["run"].as_str().expect("run"),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("balanced-1-broker-rf1", "rate-max"),
            ("balanced-1-broker-rf1", "rate-half-max"),
            ("balanced-3-brokers-rf3", "rate-max"),
            ("balanced-3-brokers-rf3", "rate-half-max"),
        ]
    );
    for result in results {
        assert_eq!(result["integrity_checked"], true, "{result}");
        assert_eq!(result["lost"], 0, "{result}");
        let cluster = &result["cluster"];
        let brokers = cluster["spec"]["brokers"].as_u64().expect("brokers") as usize;
        assert_eq!(
            cluster["bootstrap"]
                .as_str()
                .expect("bootstrap")
                .split(',')
                .count(),
            brokers,
            "{result}"
        );
        let node_cpu_s = cluster["node_cpu_s"].as_array().expect("per node");
        assert_eq!(node_cpu_s.len(), brokers, "{result}");
        assert!(
            node_cpu_s
                .iter()
                .all(|s| s.as_f64().is_some_and(|s| s > 0.0)),
            "{result}"
        );
        assert!(cluster["loadgen_cpu_s"].as_f64().is_some_and(|s| s > 0.0));
    }
    // Half of max is half of what the same cluster reached at max.
    for (max, half) in [(&results[0], &results[1]), (&results[2], &results[3])] {
        let reached = max["throughput_messages_per_s"].as_f64().expect("msg/s");
        let asked: f64 = half["rate"]
            .as_str()
            .expect("rate")
            .parse()
            .expect("number");
        assert_eq!(asked, (reached / 2.0).floor(), "{half}");
    }
    let ratios = report["replication_ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 2, "{report}");
    let three_max = results[2]["throughput_messages_per_s"]
        .as_f64()
        .expect("msg/s");
    let one_max = results[0]["throughput_messages_per_s"]
        .as_f64()
        .expect("msg/s");
    let ratio = ratios[0]["throughput_ratio"].as_f64().expect("a ratio");
    assert!((ratio - three_max / one_max).abs() < 1e-9, "{ratio}");
    assert!(
        ratios[0]["produce_p99_9_ratio"].as_f64().is_some(),
        "{report}"
    );
    let cluster_log = out.join("runs/balanced-3-brokers-rf3/rate-max/cluster.log");
    let log = std::fs::read_to_string(&cluster_log).expect("cluster log");
    for node in 0..3 {
        assert!(
            log.contains(&format!("node {node} stopped (exit status: 0)")),
            "{log}"
        );
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(
        markdown.contains("| rate-max | balanced-3-brokers-rf3 ÷ balanced-1-broker-rf1 |"),
        "{markdown}"
    );
    for plot in [
        "latency-produce-rate-max.svg",
        "latency-e2e-rate-half-max.png",
    ] {
        assert!(out.join(plot).is_file(), "{plot}");
    }
}
