//! `shardline-loadgen` against a real broker: a short open-loop run with two producers and
//! one consumer exits 0, and its JSON report and HdrHistogram files are complete and say
//! that no acknowledged message was lost or doubled; so do a run over 20 topics and a run
//! whose consumers share the partitions through a consumer group.
//!
//! The loadgen is another package's binary (no `CARGO_BIN_EXE_` for it), so the test builds
//! it with Cargo into the same target directory and profile as this test binary.

use std::process::Command;

use crate::harness::{build_workspace_binaries, hgrm_rows, Broker};

#[test]
fn loadgen_open_loop_run_loses_nothing_and_writes_json_and_hdr_files() {
    let binary = build_workspace_binaries(&["shardline-loadgen"]).join("shardline-loadgen");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(data_dir.path(), &[]);
    let json_path = out_dir.path().join("run.json");
    let hdr_dir = out_dir.path().join("hdr");
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
    assert!(
        stdout.contains("produce-ack") && stdout.contains("end-to-end"),
        "{stdout}"
    );

    let report = read_report(&json_path);
    let results = &report["results"];
    let count = |name: &str| result_count(&report, name);
    assert_eq!(results["integrity_checked"], true, "{report}");
    assert_eq!(count("lost"), 0, "{report}");
    assert_eq!(count("duplicated"), 0, "{report}");
    assert_eq!(count("out_of_order"), 0, "{report}");
    assert!(count("acknowledged") > 0, "{report}");
    assert_eq!(count("consumed"), count("acknowledged"), "{report}");
    assert!(count("measured_acknowledged") > 0, "{report}");
    // The run went on for its duration and then ended by itself: a second of the timeline
    // for each second of the 2.5 s measured, and no more than warm-up, run and drain.
    let seconds = results["timeline"].as_array().map_or(0, Vec::len);
    assert!((2..=6).contains(&seconds), "{seconds} seconds in {report}");
    assert_eq!(report["parameters"]["producers"], 2, "{report}");
    assert!(report["machine"]["nproc"].as_u64().is_some(), "{report}");

    for name in ["produce-ack.hgrm", "end-to-end.hgrm"] {
        let rows = hgrm_rows(&hdr_dir.join(name));
        let total = rows.last().expect("rows")[2];
        assert!(total > 0.0, "{name} has samples");
    }
    // The interval log: a header, then one "start,length,max,histogram" line per interval.
    let log = std::fs::read_to_string(hdr_dir.join("produce-ack.hlog")).expect("interval log");
    assert!(log.contains("#[StartTime: "), "{log}");
    let intervals = log
        .lines()
        .filter(|line| line.split(',').count() == 4 && !line.starts_with('#'))
        .filter(|line| !line.starts_with("\"StartTimestamp\""))
        .count();
    assert!(intervals >= 2, "one line per second of the run: {log}");
    assert!(broker.stop(), "broker stops cleanly");
}

/// The JSON report the loadgen wrote to `path`.
fn read_report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written"))
        .expect("json parses")
}

/// A count in the report's results.
fn result_count(report: &serde_json::Value, name: &str) -> u64 {
    report["results"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Runs the loadgen against `broker` with `args` (plus `--json`); asserts it succeeded and
/// checked everything with nothing lost, doubled or reordered; returns the JSON report.
fn run_checked(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let binary = build_workspace_binaries(&["shardline-loadgen"]).join("shardline-loadgen");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let json_path = out_dir.path().join("run.json");
    let output = Command::new(&binary)
        .args(["--broker", &broker.broker_arg()])
        .args(args)
        .arg("--json")
        .arg(&json_path)
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
    let report = read_report(&json_path);
    let results = &report["results"];
    assert_eq!(results["integrity_checked"], true, "{report}");
    for name in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(results[name], 0, "{name}: {report}");
    }
    assert!(
        results["acknowledged"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert_eq!(results["consumed"], results["acknowledged"], "{report}");
    report
}

#[test]
fn loadgen_over_twenty_topics_creates_them_and_loses_nothing_per_topic_partition() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(data_dir.path(), &[]);
    let report = run_checked(
        &broker,
        &[
            "--topic",
            "many",
            "--topics",
            "20",
            "--partitions",
            "2",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--rate",
            "2000",
            "--message-bytes",
            "64-2048",
            "--warmup-s",
            "0.2",
            "--duration-s",
            "1.5",
        ],
    );
    assert_eq!(report["parameters"]["topics"], 20, "{report}");
    // Sizes drawn from a range: the report names the range and its mean.
    assert_eq!(report["parameters"]["message_bytes"], "64-2048", "{report}");
    assert_eq!(
        report["parameters"]["message_bytes_mean"], 1056.0,
        "{report}"
    );
    let timeline = report["results"]["timeline"].as_array().expect("timeline");
    assert!(!timeline.is_empty(), "{report}");
    let listed = Command::new(crate::harness::shardline_binary())
        .args(["topic", "list", "--broker", &broker.broker_arg()])
        .output()
        .expect("topic list runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for topic in ["many-0", "many-7", "many-19"] {
        assert!(listed.contains(topic), "{topic} in {listed}");
    }
    assert!(!listed.contains("many-20"), "{listed}");
    assert!(broker.stop(), "broker stops cleanly");
}

#[test]
fn loadgen_consumers_in_a_group_share_the_partitions_and_lose_nothing() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(data_dir.path(), &[]);
    let args = [
        "--topic",
        "grouped",
        "--partitions",
        "6",
        "--producers",
        "1",
        "--consumers",
        "2",
        "--consumer-group",
        "loadgen-test",
        "--rate",
        "2000",
        "--message-bytes",
        "128",
        "--warmup-s",
        "0.2",
        "--duration-s",
        "1.5",
    ];
    let report = run_checked(&broker, &args);
    assert_eq!(
        report["parameters"]["consumer_group"], "loadgen-test",
        "{report}"
    );
    assert_eq!(report["results"]["group_ownership_changes"], 0, "{report}");
    // Again with the same group: its committed offsets are reset to the log ends, so the
    // first run's messages are not read again (they would count as duplicates).
    run_checked(&broker, &args);
    assert!(broker.stop(), "broker stops cleanly");
}

/// With its broker killed mid-run, an open-loop load generator ends within `--drain-s` of
/// the run's end, failing, and accounts for every message due: each was acknowledged, or
/// failed (refused, unanswered, or never handed to the producer because its buffer stayed
/// full). Before `--drain-s` bounded the sending, it went on sending what was due as its
/// producer's buffer freed, and ran for many minutes.
#[test]
fn with_its_broker_killed_the_load_generator_ends_within_its_drain_and_counts_every_message() {
    const RATE: u64 = 20_000;
    let binary = build_workspace_binaries(&["shardline-loadgen"]).join("shardline-loadgen");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(data_dir.path(), &[]);
    let json_path = out_dir.path().join("run.json");
    // 16 KiB messages at 20,000 a second fill the producer's 64 MiB buffer in a fraction
    // of a second once the broker is gone.
    let mut loadgen = Command::new(&binary)
        .args(["--broker", &broker.broker_arg()])
        .args(["--topic", "killed", "--partitions", "4"])
        .args(["--producers", "1", "--consumers", "0", "--acks", "leader"])
        .args(["--rate", &RATE.to_string(), "--message-bytes", "16384"])
        .args(["--warmup-s", "0.5", "--duration-s", "4", "--drain-s", "4"])
        .arg("--json")
        .arg(&json_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(2));
    broker.kill();
    // The run ends 4.5 s in, then at most 4 s of sending and 4 s of drain: 60 s is a cap
    // far past that, and far short of the minutes the run took before. (The producer
    // answers a batch about every 3 s, each freeing room for more sends: a limit counted
    // from each send, not from the run's end, would keep the run going.)
    let cap = std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = loadgen.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > cap {
            let _ = loadgen.kill();
            let _ = loadgen.wait();
            panic!("the load generator still ran {cap:?} after it started");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let output = loadgen.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !status.success(),
        "a run that lost its broker fails:\n{stderr}"
    );
    let report = read_report(&json_path);
    let results = &report["results"];
    let count = |name: &str| result_count(&report, name);
    let (sent, acknowledged, failed) = (
        count("sent"),
        count("acknowledged"),
        count("produce_errors"),
    );
    assert!(
        acknowledged > 0,
        "messages before the kill were stored: {report}"
    );
    assert_eq!(
        acknowledged + failed,
        RATE * 9 / 2,
        "every message due in the 4.5 s was acknowledged or failed: {report}"
    );
    assert!(
        acknowledged + failed > sent,
        "some messages due were never handed to the producer: {report}"
    );
    assert!(
        results["errors"].to_string().contains("producer 0"),
        "the failures are reported: {report}"
    );
}
