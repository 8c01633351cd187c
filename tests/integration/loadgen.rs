//! `shardline-loadgen` against a real broker: a short open-loop run with two producers and
//! one consumer exits 0, and its JSON report and HdrHistogram files are complete and say
//! that no acknowledged message was lost or doubled.
//!
//! The loadgen is another package's binary (no `CARGO_BIN_EXE_` for it), so the test builds
//! it with Cargo into the same target directory and profile as this test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::Broker;

/// The whole loadgen run, warm-up and drain included, must finish within this.
const LOADGEN_TIME_MAX: Duration = Duration::from_secs(60);

/// Builds `shardline-loadgen` next to this test binary (`<target>/<profile>/deps/..`) and
/// returns its path.
fn loadgen_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "shardline-loadgen"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building shardline-loadgen: {status}");
    let binary = profile_dir.join("shardline-loadgen");
    assert!(binary.exists(), "{} after the build", binary.display());
    binary
}

/// Rows of an HdrHistogram percentile distribution file: four numeric columns each, the
/// 100 % row without its `1/(1-Percentile)` column.
fn percentile_rows(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("hgrm file reads");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"],
        "{text}"
    );
    let rows: Vec<Vec<f64>> = lines
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.split_whitespace()
                .map(|field| field.parse::<f64>().unwrap_or_else(|_| panic!("{line}")))
                .collect()
        })
        .collect();
    let (last, body) = rows.split_last().expect("at least one row");
    assert!(body.iter().all(|row| row.len() == 4), "{text}");
    assert_eq!(last.len(), 3, "{text}");
    assert_eq!(last[1], 1.0, "{text}");
    assert!(text.contains("#[Max"), "{text}");
    rows
}

#[test]
fn loadgen_open_loop_run_loses_nothing_and_writes_json_and_hdr_files() {
    let binary = loadgen_binary();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(data_dir.path(), &[]);
    let json_path = out_dir.path().join("run.json");
    let hdr_dir = out_dir.path().join("hdr");
    let started = Instant::now();
    let output = Command::new(&binary)
        .args(["--broker", &broker.broker_arg()])
        .args(["--topic", "loadgen-test", "--partitions", "4"])
        .args(["--producers", "2", "--consumers", "1", "--acks", "all"])
        .args(["--rate", "2000", "--message-bytes", "256"])
        .args(["--warmup-s", "0.5", "--duration-s", "2.5"])
        .arg("--json")
        .arg(&json_path)
        .arg("--hdr-dir")
        .arg(&hdr_dir)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen failed ({}):\n{stdout}\n{stderr}\nbroker log:\n{}",
        output.status,
        broker.log()
    );
    assert!(started.elapsed() < LOADGEN_TIME_MAX);
    assert!(
        stdout.contains("produce-ack") && stdout.contains("end-to-end"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written"))
            .expect("json parses");
    let results = &report["results"];
    let count = |name: &str| {
        results[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    assert_eq!(results["integrity_checked"], true, "{report}");
    assert_eq!(count("lost"), 0, "{report}");
    assert_eq!(count("duplicated"), 0, "{report}");
    assert_eq!(count("out_of_order"), 0, "{report}");
    assert!(count("acknowledged") > 0, "{report}");
    assert_eq!(count("consumed"), count("acknowledged"), "{report}");
    assert!(count("measured_acknowledged") > 0, "{report}");
    assert_eq!(report["parameters"]["producers"], 2, "{report}");
    assert!(report["machine"]["nproc"].as_u64().is_some(), "{report}");

    for name in ["produce-ack.hgrm", "end-to-end.hgrm"] {
        let rows = percentile_rows(&hdr_dir.join(name));
        let total = rows.last().expect("rows")[2];
        assert!(total > 0.0, "{name} has samples");
    }
    assert!(broker.stop(), "broker stops cleanly");
}
