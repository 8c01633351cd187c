//! The tuning profiles in `tuning/` against real processes: `shardline tuning check` reports
//! every check and passes on this machine, and a broker starts, serves an acknowledged
//! write and stops cleanly with each profile.

use std::path::PathBuf;

use crate::harness::{cli, Broker};

/// Every profile shipped in `tuning/`.
const PROFILES: [&str; 4] = ["balanced", "latency", "throughput", "durable"];

/// The checks `shardline tuning check` reports, one line each.
const CHECKS: [&str; 9] = [
    "io_uring",
    "memlock",
    "cpu_governor",
    "cpu_sharing",
    "wake_latency",
    "disk_scheduler",
    "transparent_hugepages",
    "open_files",
    "o_direct",
];

fn profile_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(format!("{name}.toml"))
}

#[test]
fn tuning_check_reports_every_check_and_passes_on_this_machine() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let profile = profile_path("balanced");
    let output = cli(
        &[
            "tuning",
            "check",
            "--profile",
            profile.to_str().expect("utf-8 path"),
            "--data-dir",
            data_dir.path().to_str().expect("utf-8 path"),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for check in CHECKS {
        let line = stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no line for {check}:\n{report}"));
        let status = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["ok", "warn", "fail", "unknown"].contains(&status),
            "{check} has status {status}:\n{report}"
        );
    }
    // io_uring and O_DIRECT work here, so nothing fails.
    assert!(output.status.success(), "exit {}:\n{report}", output.status);
    for check in ["io_uring", "o_direct"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check} is not ok:\n{report}"
        );
    }
    assert!(stdout.contains("profile balanced"), "{report}");
    assert_eq!(
        std::fs::read_dir(data_dir.path()).unwrap().count(),
        0,
        "the check leaves nothing behind:\n{report}"
    );
}

#[test]
fn tuning_check_refuses_a_profile_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("typo.toml");
    std::fs::write(&bad, "[storage]\nflsh = 1\n").expect("profile written");
    let output = cli(
        &["tuning", "check", "--profile", bad.to_str().unwrap()],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("typo.toml"), "{stderr}");
}

#[test]
fn a_broker_starts_and_acknowledges_a_write_with_every_profile() {
    for name in PROFILES {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let profile = profile_path(name);
        let mut broker = Broker::start(
            data_dir.path(),
            &["--profile", profile.to_str().expect("utf-8 path")],
        );
        assert!(
            broker.log().contains(&format!("profile={name}")),
            "{name}: the start line names the profile:\n{}",
            broker.log()
        );
        let address = broker.broker_arg();
        let created = cli(
            &[
                "topic",
                "create",
                "--broker",
                &address,
                "--topic",
                "tuned",
                "--partitions",
                "2",
            ],
            None,
        );
        assert!(created.status.success(), "{name}: {created:?}");
        let produced = cli(
            &[
                "produce", "--broker", &address, "--topic", "tuned", "--acks", "all",
            ],
            Some(b"one\ntwo\nthree\n"),
        );
        assert!(
            produced.status.success(),
            "{name}: acks=all produce failed: {produced:?}\n{}",
            broker.log()
        );
        assert!(broker.stop(), "{name}: SIGTERM exits 0:\n{}", broker.log());
    }
}
