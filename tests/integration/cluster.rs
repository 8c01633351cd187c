//! Clusters of real brokers on loopback, each on its own 127.0.0.x address: replication
//! across a leader handover, the high watermark under paused followers, the controller
//! through the loss of a voter, and bad input on the cluster's own listeners.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::harness::{cli, Broker};

/// The controller listener's port on each broker's own address.
pub(super) const CONTROLLER_PORT: u16 = 9093;

pub(super) struct TestCluster {
    pub(super) brokers: Vec<Broker>,
    _dir: tempfile::TempDir,
}

/// The controller voters `0..n`, node i on `host(i)`, as `--controller-voters` takes them.
pub(super) fn voters(n: usize, host: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", host(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A one-shard broker's flags: node `node` listening on `host:port`, among `voters`.
pub(super) fn broker_args(
    host: &str,
    port: u16,
    node: usize,
    voters: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        format!("{host}:{port}"),
        "--cores".into(),
        "1".into(),
        "--no-pin".into(),
        "--node-id".into(),
        node.to_string(),
        "--controller-voters".into(),
        voters.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub(super) fn ip(subnet: u8, node: usize) -> String {
    format!("127.0.{subnet}.{}", node + 1)
}

impl TestCluster {
    /// `n` brokers (1 shard each), node i on 127.0.`subnet`.(i+1): clients on an ephemeral
    /// port, the controller on `CONTROLLER_PORT`. Every test uses its own `subnet`.
    pub(super) fn start(subnet: u8, n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_on(subnet, n, 0, extra)
    }

    /// A cluster of brokers started elsewhere (in network namespaces, say), on `dir`.
    pub(super) fn from_parts(brokers: Vec<Broker>, dir: tempfile::TempDir) -> TestCluster {
        TestCluster { brokers, _dir: dir }
    }

    /// As `start`, with clients on `port` of each broker's address (0: ephemeral); a fixed
    /// port keeps the bootstrap list valid across restarts.
    pub(super) fn start_on(subnet: u8, n: usize, port: u16, extra: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let host = |i| ip(subnet, i);
        let voters = voters(n, host);
        let brokers = (0..n)
            .map(|i| {
                let args = broker_args(&host(i), port, i, &voters, extra);
                Broker::start_exact(&dir.path().join(format!("node-{i}")), &args)
            })
            .collect();
        let cluster = TestCluster { brokers, _dir: dir };
        cluster.wait_for_status(Duration::from_secs(30), |status| {
            status.contains("controller leader: node") && status.matches("\talive").count() == n
        });
        cluster
    }

    pub(super) fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .filter(|b| b.pid().is_some())
            .map(|b| b.broker_arg())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(super) fn status(&self) -> String {
        let output = cli(&["cluster", "status", "--broker", &self.bootstrap()], None);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub(super) fn wait_for_status(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not get there; status:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `topic describe` rows: partition → (leader, epoch, replicas, in-sync, high watermark).
    pub(super) fn describe(&self, topic: &str) -> BTreeMap<u32, Row> {
        self.wait_for_partitions(topic, Duration::from_secs(30), |_| true)
    }

    pub(super) fn wait_for_partitions(
        &self,
        topic: &str,
        timeout: Duration,
        done: impl Fn(&BTreeMap<u32, Row>) -> bool,
    ) -> BTreeMap<u32, Row> {
        let deadline = Instant::now() + timeout;
        loop {
            // A describe may fail while leadership moves (a leader not yet serving).
            let (rows, output) = describe_rows(&self.bootstrap(), topic);
            if output.status.success() && !rows.is_empty() && done(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "partitions of {topic} did not get there: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) leader: Option<u32>,
    pub(super) epoch: u32,
    pub(super) replicas: Vec<u32>,
    pub(super) in_sync: Vec<u32>,
    pub(super) high_watermark: u64,
}

pub(super) fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    factor: u32,
    configs: &[&str],
) {
    let partitions = partitions.to_string();
    let factor = factor.to_string();
    let mut args = vec![
        "topic",
        "create",
        "--broker",
        bootstrap,
        "--topic",
        topic,
        "--partitions",
        &partitions,
        "--replication-factor",
        &factor,
    ];
    for config in configs {
        args.push("--config");
        args.push(config);
    }
    let output = cli(&args, None);
    assert!(output.status.success(), "{output:?}");
}

pub(super) fn produce(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    lines: &str,
) -> std::process::Output {
    cli(
        &[
            "produce",
            "--broker",
            bootstrap,
            "--topic",
            topic,
            "--acks",
            acks,
            "--key-separator",
            ":",
        ],
        Some(lines.as_bytes()),
    )
}

/// Every message of a topic as (partition, offset, key, value), read from the leaders.
fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<(u32, u64, String, String)> {
    consume_json(bootstrap, topic, None, expected, 5000)
        .into_iter()
        .map(|value| {
            (
                value["partition"].as_u64().unwrap() as u32,
                value["offset"].as_u64().unwrap(),
                value["key"].as_str().unwrap_or_default().to_string(),
                value["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `consume --format json` (as a member of `group` when given) until `count` messages, or
/// `idle_ms` without one; one JSON object a message.
fn consume_json(
    bootstrap: &str,
    topic: &str,
    group: Option<&str>,
    count: usize,
    idle_ms: u64,
) -> Vec<serde_json::Value> {
    let (count, idle_ms) = (count.to_string(), idle_ms.to_string());
    let mut args = vec!["consume", "--broker", bootstrap, "--topic", topic];
    if let Some(group) = group {
        args.extend(["--group", group]);
    }
    args.extend([
        "--format",
        "json",
        "--max-messages",
        &count,
        "--idle-timeout-ms",
        &idle_ms,
    ]);
    let output = cli(&args, None);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a json line"))
        .collect()
}

/// Checks that `read` holds every `sent` (key, value) once, and each key's values in the
/// order sent (values are `v<n>`, n increasing per key).
fn check_once_in_order(sent: &[(String, String)], read: &[(u32, u64, String, String)]) {
    let mut by_key: HashMap<&str, Vec<(u32, u64, u64)>> = HashMap::new();
    for (partition, offset, key, value) in read {
        let n: u64 = value[1..].parse().unwrap();
        by_key
            .entry(key)
            .or_default()
            .push((*partition, *offset, n));
    }
    let mut seen = std::collections::HashSet::new();
    for (_, _, _, value) in read {
        assert!(seen.insert(value.clone()), "{value} read twice");
    }
    assert_eq!(read.len(), sent.len(), "every message once");
    for (key, mut entries) in by_key {
        let partitions: std::collections::HashSet<u32> = entries.iter().map(|e| e.0).collect();
        assert_eq!(partitions.len(), 1, "key {key} stays on one partition");
        entries.sort_by_key(|e| e.1);
        let values: Vec<u64> = entries.iter().map(|e| e.2).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(values, sorted, "key {key} is read in the order it was sent");
    }
}

/// Whether a broker's data directory holds a replica of the partition.
pub(super) fn holds_replica(data_dir: &Path, topic: &str, partition: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(data_dir.join("topics")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{topic}."))
            && entry.path().join(partition.to_string()).exists()
    })
}

/// The partition's segment files of one replica, concatenated in offset order.
pub(super) fn replica_bytes(data_dir: &Path, topic: &str, partition: u32) -> Vec<u8> {
    let topics = data_dir.join("topics");
    let topic_dir: PathBuf = std::fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{topic}."))
        })
        .expect("the topic's directory");
    let dir = topic_dir.join(partition.to_string());
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let mut bytes = Vec::new();
    for segment in segments {
        bytes.extend(std::fs::read(segment).unwrap());
    }
    // Preallocated space past the last batch reads as zeros.
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

#[test]
fn replication_factor_three_keeps_every_acknowledged_write_across_leader_handovers() {
    let mut cluster = TestCluster::start(71, 3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "orders", 4, 3, &["min.insync.replicas=2"]);
    let mut sent: Vec<(String, String)> = Vec::new();
    fn round(cluster: &TestCluster, sent: &mut Vec<(String, String)>, first: usize, count: usize) {
        let mut lines = String::new();
        for n in first..first + count {
            let key = format!("k{}", n % 37);
            let value = format!("v{n}");
            lines.push_str(&format!("{key}:{value}\n"));
            sent.push((key, value));
        }
        let output = produce(&cluster.bootstrap(), "orders", "all", &lines);
        assert!(output.status.success(), "{output:?}");
    }
    round(&cluster, &mut sent, 0, 3000);
    let before = cluster.describe("orders");
    // Hand every partition's leadership to each of its other replicas in turn, writing
    // between handovers, and read everything back from each new leader.
    for step in 1..=2 {
        for (partition, row) in &before {
            let to = row.replicas[step % row.replicas.len()];
            let output = cli(
                &[
                    "topic",
                    "elect",
                    "--broker",
                    &cluster.bootstrap(),
                    "--topic",
                    "orders",
                    "--partition",
                    &partition.to_string(),
                    "--to",
                    &to.to_string(),
                ],
                None,
            );
            assert!(output.status.success(), "{output:?}");
        }
        let expected_leaders: BTreeMap<u32, Option<u32>> = before
            .iter()
            .map(|(p, row)| (*p, Some(row.replicas[step % row.replicas.len()])))
            .collect();
        cluster.wait_for_partitions("orders", Duration::from_secs(20), |rows| {
            rows.iter()
                .all(|(p, r)| r.leader == expected_leaders[p] && r.epoch == step as u32)
        });
        round(&cluster, &mut sent, step * 3000, 3000);
        let read = consume_all(&cluster.bootstrap(), "orders", sent.len());
        check_once_in_order(&sent, &read);
    }
    // Every replica in sync and at the same high watermark, then byte for byte the same.
    let rows = cluster.wait_for_partitions("orders", Duration::from_secs(20), |rows| {
        rows.values().all(|r| r.in_sync.len() == 3)
    });
    let total: u64 = rows.values().map(|r| r.high_watermark).sum();
    assert_eq!(total, sent.len() as u64);
    // Let followers fetch the last high watermark, then stop everyone cleanly.
    std::thread::sleep(Duration::from_secs(1));
    for broker in &mut cluster.brokers {
        assert!(broker.stop(), "a clean stop:\n{}", broker.log());
    }
    for partition in rows.keys() {
        let copies: Vec<Vec<u8>> = cluster
            .brokers
            .iter()
            .map(|b| replica_bytes(&b.data_dir, "orders", *partition))
            .collect();
        assert!(!copies[0].is_empty());
        for copy in &copies[1..] {
            assert!(copy == &copies[0], "partition {partition}: replicas differ");
        }
    }
}

#[test]
fn paused_followers_leave_the_in_sync_set_and_below_min_insync_writes_are_refused() {
    // Five voters, so that the controller keeps a majority with two brokers paused.
    let cluster = TestCluster::start(72, 5, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic(
        &bootstrap,
        "guarded",
        1,
        3,
        &["min.insync.replicas=2", "replica.lag.time.max.ms=1500"],
    );
    let row = cluster.describe("guarded")[&0].clone();
    let leader = row.leader.unwrap();
    let followers: Vec<u32> = row
        .replicas
        .iter()
        .copied()
        .filter(|&b| b != leader)
        .collect();
    let lines = |from: usize| {
        (from..from + 50)
            .map(|n| format!("k:v{n}\n"))
            .collect::<String>()
    };
    assert!(produce(&bootstrap, "guarded", "all", &lines(0))
        .status
        .success());

    cluster.brokers[followers[0] as usize].signal(Signal::SIGSTOP);
    cluster.wait_for_partitions("guarded", Duration::from_secs(20), |rows| {
        rows[&0].in_sync.len() == 2 && !rows[&0].in_sync.contains(&followers[0])
    });
    let bootstrap = cluster
        .brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 != followers[0])
        .map(|(_, b)| b.broker_arg())
        .collect::<Vec<_>>()
        .join(",");
    let output = produce(&bootstrap, "guarded", "all", &lines(50));
    assert!(
        output.status.success(),
        "writes go on with one follower paused: {output:?}"
    );

    cluster.brokers[followers[1] as usize].signal(Signal::SIGSTOP);
    let bootstrap = cluster
        .brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| !followers.contains(&(*i as u32)))
        .map(|(_, b)| b.broker_arg())
        .collect::<Vec<_>>()
        .join(",");
    let shrunk = cluster_describe_via(&bootstrap, "guarded", Duration::from_secs(20), |row| {
        row.in_sync == vec![leader]
    });
    let high_watermark = shrunk.high_watermark;
    assert_eq!(high_watermark, 100);
    let refused = produce(&bootstrap, "guarded", "all", &lines(100));
    assert!(
        !refused.status.success(),
        "acks=all must be refused: {refused:?}"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("NotEnoughReplicas"), "{stderr}");
    // A write the leader alone takes (acks=leader) stays above the high watermark: no
    // consumer sees it.
    let alone = produce(&bootstrap, "guarded", "leader", "k:alone\n");
    assert!(alone.status.success(), "{alone:?}");
    let row = cluster_describe_via(&bootstrap, "guarded", Duration::from_secs(5), |_| true);
    assert_eq!(
        row.high_watermark, high_watermark,
        "the high watermark stands still"
    );
    let read = consume_all(&bootstrap, "guarded", 1000);
    assert_eq!(
        read.len(),
        100,
        "nothing above the high watermark is visible"
    );
    assert!(read.iter().all(|r| r.3 != "alone"));

    for &follower in &followers {
        cluster.brokers[follower as usize].signal(Signal::SIGCONT);
    }
    let row = cluster_describe_via(&bootstrap, "guarded", Duration::from_secs(30), |row| {
        row.in_sync.len() == 3
    });
    assert_eq!(
        row.high_watermark, 101,
        "the leader-only write is replicated once they return"
    );
}

fn cluster_describe_via(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = Instant::now() + timeout;
    loop {
        let (rows, output) = describe_rows(bootstrap, topic);
        if let Some(row) = rows.get(&0).filter(|r| done(r)) {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/0 did not get there: {rows:?}\n{output:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The rows of `topic describe` (and the command's output, for failures).
pub(super) fn describe_rows(
    bootstrap: &str,
    topic: &str,
) -> (BTreeMap<u32, Row>, std::process::Output) {
    describe_rows_with(bootstrap, topic, &[])
}

/// `describe_rows` with more flags (TLS, say).
pub(super) fn describe_rows_with(
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> (BTreeMap<u32, Row>, std::process::Output) {
    let mut args = vec!["topic", "describe", "--broker", bootstrap, "--topic", topic];
    args.extend(extra);
    let output = cli(&args, None);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // "topic T: N partitions": a table missing a row (a leader that could not be reached
    // shows `?` offsets) is no table: the caller asks again.
    let expected: Option<usize> = stdout
        .lines()
        .next()
        .and_then(|line| line.rsplit(": ").next())
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    let rows = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            let partition: u32 = cells.first()?.parse().ok()?;
            let ids = |cell: &str| -> Vec<u32> {
                cell.split(',').filter_map(|id| id.parse().ok()).collect()
            };
            Some((
                partition,
                Row {
                    leader: cells[1].parse().ok(),
                    epoch: cells[2].parse().ok()?,
                    replicas: ids(cells[3]),
                    in_sync: ids(cells[4]),
                    high_watermark: cells[7].parse().ok()?,
                },
            ))
        })
        .collect::<BTreeMap<u32, Row>>();
    let rows = match expected {
        Some(n) if rows.len() == n => rows,
        _ => BTreeMap::new(),
    };
    (rows, output)
}

#[test]
fn the_controller_survives_a_dead_voter_which_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::start(73, 3, &["--controller-snapshot-every", "16"]);
    create_topic(
        &cluster.bootstrap(),
        "before",
        3,
        3,
        &["replica.lag.time.max.ms=1500"],
    );
    // Kill the controller leader itself.
    let status = cluster.status();
    let leader: usize = status
        .split("controller leader: node ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|id| id.parse().ok())
        .expect("a controller leader");
    cluster.brokers[leader].kill();
    let status = cluster.wait_for_status(Duration::from_secs(30), |status| {
        status.contains("controller leader: node")
            && !status.contains("controller leader: node none")
            && status.contains("dead (fenced)")
    });
    assert!(
        status.contains(&format!("{leader}\t")) && status.contains("dead (fenced)"),
        "{status}"
    );
    // Topics can still be created: enough of them that the leader snapshots past the dead
    // voter's log.
    for i in 0..24 {
        create_topic(&cluster.bootstrap(), &format!("while-down-{i}"), 1, 2, &[]);
    }
    cluster.brokers[leader].restart();
    let status = cluster.wait_for_status(Duration::from_secs(30), |status| {
        status.matches("\talive").count() == 3
    });
    assert!(!status.contains("dead"), "{status}");
    // It catches up from the leader's snapshot (its log is compacted past where this voter
    // stopped), and then knows every topic: ask it alone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = cluster.brokers[leader].log();
        let output = cli(
            &[
                "topic",
                "list",
                "--broker",
                &cluster.brokers[leader].broker_arg(),
            ],
            None,
        );
        let listed = String::from_utf8_lossy(&output.stdout).into_owned();
        if log.contains("installed a controller snapshot from the leader")
            && listed.lines().count() == 25
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted voter did not catch up from a snapshot:\n{listed}\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It came back on a new client port: replication to and from it resumes (followers of
    // the partitions it leads find it at its new address) and stays in sync.
    let lines: String = (0..30).map(|n| format!("k{n}:v{n}\n")).collect();
    let output = produce(&cluster.bootstrap(), "before", "all", &lines);
    assert!(output.status.success(), "{output:?}");
    cluster.wait_for_partitions("before", Duration::from_secs(20), |rows| {
        rows.values().all(|r| r.in_sync.len() == 3)
            && rows.values().map(|r| r.high_watermark).sum::<u64>() == 30
    });
    std::thread::sleep(Duration::from_secs(3));
    let rows = cluster.describe("before");
    assert!(
        rows.values().all(|r| r.in_sync.len() == 3),
        "every replica stays in sync past the lag time: {rows:?}"
    );
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Whether the peer closed the connection (read returns 0 or an error) within `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn bad_input_on_the_cluster_listeners_is_refused_without_effect() {
    let cluster = TestCluster::start(74, 3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "kept", 1, 3, &[]);
    assert!(produce(&bootstrap, "kept", "all", "k:v0\nk:v1\n")
        .status
        .success());
    let before = cluster.describe("kept");

    // The controller listener: garbage, an oversized length, a truncated frame.
    let controller: SocketAddr = format!("{}:{CONTROLLER_PORT}", ip(74, 0)).parse().unwrap();
    for bytes in [
        frame(b"certainly not an rkyv archive"),
        u32::MAX.to_le_bytes().to_vec(),
        frame(&[0u8; 3]),
    ] {
        let mut stream = TcpStream::connect(controller).unwrap();
        stream.write_all(&bytes).unwrap();
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)),
            "the controller listener closes a connection that sent garbage"
        );
    }

    // The replica-fetch api on a shard port: a malformed body, and a fetch for a
    // partition the asked broker does not lead.
    let row = &before[&0];
    let follower = *row
        .replicas
        .iter()
        .find(|&&b| Some(b) != row.leader)
        .unwrap();
    let address = cluster.brokers[follower as usize].address;
    let answers = super::broker_bad_input::replica_fetch_exchange(address, "kept", 0, row.epoch);
    assert!(
        ["InvalidRequest", "InvalidTopicName"].contains(&answers.malformed.as_str()),
        "a malformed replica fetch is refused: {}",
        answers.malformed
    );
    assert_eq!(
        answers.not_leader, "NotLeaderOrFollower",
        "a fetch from a broker that does not lead is refused"
    );

    // Nothing changed: same leaders, epochs, in-sync sets and high watermarks, and the
    // cluster still serves.
    assert_eq!(cluster.describe("kept"), before);
    assert!(produce(&bootstrap, "kept", "all", "k:v2\n")
        .status
        .success());
    assert_eq!(consume_all(&bootstrap, "kept", 3).len(), 3);
}

/// Values a group member read (`consume --group ... --format json`).
pub(super) fn consume_group(
    bootstrap: &str,
    topic: &str,
    group: &str,
    count: usize,
) -> Vec<String> {
    consume_json(bootstrap, topic, Some(group), count, 10_000)
        .into_iter()
        .map(|value| value["value"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn group_offsets_are_replicated_and_kept_across_a_coordinator_handover() {
    let cluster = TestCluster::start(75, 3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "work", 3, 3, &[]);
    let lines: String = (0..300).map(|n| format!("k{}:v{n}\n", n % 11)).collect();
    assert!(produce(&bootstrap, "work", "all", &lines).status.success());

    let first = consume_group(&bootstrap, "work", "workers", 120);
    assert_eq!(first.len(), 120);

    // Hand the group's offsets partition to another replica: a new coordinator.
    let partition = shardline::shard::Ownership::offsets_partition("workers");
    let offsets = cluster.describe("__offsets");
    let row = &offsets[&partition];
    assert_eq!(
        row.replicas.len(),
        3,
        "the offsets log is replicated: {row:?}"
    );
    let to = *row
        .replicas
        .iter()
        .find(|&&b| Some(b) != row.leader)
        .unwrap();
    let output = cli(
        &[
            "topic",
            "elect",
            "--broker",
            &bootstrap,
            "--topic",
            "__offsets",
            "--partition",
            &partition.to_string(),
            "--to",
            &to.to_string(),
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    cluster.wait_for_partitions("__offsets", Duration::from_secs(20), |rows| {
        rows[&partition].leader == Some(to)
    });

    // The new coordinator knows what was committed: the group goes on where it stopped.
    let second = consume_group(&bootstrap, "work", "workers", 180);
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "nothing read twice across the handover");
    assert_eq!(total, 300, "everything read once");
    let described = cli(
        &[
            "group", "describe", "--broker", &bootstrap, "--group", "workers", "--format", "json",
        ],
        None,
    );
    assert!(described.status.success(), "{described:?}");
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    let lag: i64 = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap())
        .sum();
    assert_eq!(lag, 0, "{described}");
}

#[test]
fn cluster_local_starts_three_brokers_that_replicate_and_stop_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(super::harness::shardline_binary())
        .args([
            "cluster",
            "local",
            "--brokers",
            "3",
            "--base-port",
            "19460",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("SHARDLINE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let bootstrap = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
        if let Some(list) = line.strip_prefix("bootstrap brokers: ") {
            break list.trim().to_string();
        }
    };
    assert_eq!(bootstrap, "127.0.0.1:19460,127.0.0.1:19461,127.0.0.1:19462");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cli(&["cluster", "status", "--broker", &bootstrap], None);
        let text = String::from_utf8_lossy(&status.stdout);
        if text.matches("\talive").count() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    create_topic(&bootstrap, "local", 2, 3, &[]);
    assert!(produce(&bootstrap, "local", "all", "a:1\nb:2\nc:3\n")
        .status
        .success());
    assert_eq!(consume_all(&bootstrap, "local", 3).len(), 3);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "cluster local did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert_eq!(
        rest.matches("stopped (exit status: 0)").count(),
        3,
        "{rest}"
    );
}

/// A partition whose leader's retention deleted its first segments moves to a new broker:
/// the new replica, which would fetch from offset 0, starts its log where the leader's
/// starts instead, catches up, and serves every message the leader still held. The new
/// broker is an observer of a one-voter controller.
#[test]
fn a_new_replica_starts_at_its_leaders_log_start_after_retention() {
    // One voter and one observer (a quorum has an odd size).
    let dir = tempfile::tempdir().unwrap();
    let host = |i| ip(76, i);
    let voters = voters(1, host);
    let brokers = (0..2)
        .map(|i| {
            let extra = ["--retention-check-interval-ms", "200"];
            let args = broker_args(&host(i), 0, i, &voters, &extra);
            Broker::start_exact(&dir.path().join(format!("node-{i}")), &args)
        })
        .collect();
    let cluster = TestCluster::from_parts(brokers, dir);
    cluster.wait_for_status(Duration::from_secs(30), |status| {
        status.matches("\talive").count() == 2
    });
    let bootstrap = cluster.bootstrap();
    create_topic(
        &bootstrap,
        "trimmed",
        1,
        1,
        &["segment.bytes=65536", "retention.bytes=200000"],
    );
    let value = |n: usize| format!("v{n}-{}", "x".repeat(200));
    let total = 3000;
    for first in (0..total).step_by(500) {
        let lines: String = (first..first + 500)
            .map(|n| format!("k:{}\n", value(n)))
            .collect();
        let output = produce(&bootstrap, "trimmed", "all", &lines);
        assert!(output.status.success(), "{output:?}");
    }
    // Retention runs: the first message still held is past offset 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_held = loop {
        let first = consume_json(&bootstrap, "trimmed", None, 1, 2000)[0]["offset"]
            .as_u64()
            .unwrap();
        if first > 0 {
            break first;
        }
        assert!(Instant::now() < deadline, "retention deleted nothing");
        std::thread::sleep(Duration::from_millis(300));
    };
    let row = cluster.describe("trimmed")[&0].clone();
    let from = row.replicas[0];
    let to = 1 - from;
    let reassign = |replicas: &str| {
        let output = cli(
            &[
                "topic",
                "reassign",
                "--broker",
                &bootstrap,
                "--topic",
                "trimmed",
                "--partition",
                "0",
                "--replicas",
                replicas,
            ],
            None,
        );
        assert!(output.status.success(), "{output:?}");
    };
    // Onto both, then off the old leader: the new replica must catch up for either step.
    reassign(&format!("{from},{to}"));
    cluster.wait_for_partitions("trimmed", Duration::from_secs(30), |rows| {
        rows[&0].in_sync.len() == 2
    });
    reassign(&to.to_string());
    cluster.wait_for_partitions("trimmed", Duration::from_secs(30), |rows| {
        rows[&0].replicas == [to] && rows[&0].leader == Some(to)
    });
    let log = cluster.brokers[to as usize].log();
    assert!(
        log.contains("ends before its leader's log starts")
            && !log.contains("could not start again"),
        "{log}"
    );
    let read = consume_json(&bootstrap, "trimmed", None, total, 3000);
    let offsets: Vec<u64> = read.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert!(
        offsets[0] >= first_held && offsets[0] > 0,
        "the new leader starts at {}",
        offsets[0]
    );
    assert_eq!(*offsets.last().unwrap(), total as u64 - 1);
    for (message, offset) in read.iter().zip(offsets[0]..) {
        assert_eq!(message["offset"].as_u64(), Some(offset), "dense offsets");
        assert_eq!(
            message["value"].as_str(),
            Some(value(offset as usize).as_str())
        );
    }
}

/// A broker that was down while a partition moved off it and a topic it held was deleted
/// removes both directories when it starts again, before it serves.
#[test]
fn replicas_dropped_while_a_broker_was_down_are_removed_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let host = |i| ip(77, i);
    let voters = voters(1, host);
    let brokers = (0..2)
        .map(|i| {
            let args = broker_args(&host(i), 0, i, &voters, &[]);
            Broker::start_exact(&dir.path().join(format!("node-{i}")), &args)
        })
        .collect();
    let mut cluster = TestCluster::from_parts(brokers, dir);
    cluster.wait_for_status(Duration::from_secs(30), |status| {
        status.matches("\talive").count() == 2
    });
    let bootstrap = cluster.bootstrap();
    for topic in ["moving", "doomed", "kept"] {
        create_topic(&bootstrap, topic, 1, 2, &[]);
        let output = produce(&bootstrap, topic, "all", "k:one\nk:two\n");
        assert!(output.status.success(), "{output:?}");
    }
    let data_dir = cluster.brokers[1].data_dir.clone();
    cluster.wait_for_partitions("kept", Duration::from_secs(20), |rows| {
        rows[&0].in_sync.len() == 2
    });
    for topic in ["moving", "doomed", "kept"] {
        assert!(holds_replica(&data_dir, topic, 0), "{topic}");
    }
    assert!(cluster.brokers[1].stop(), "a clean stop");
    let bootstrap = cluster.bootstrap();
    cluster.wait_for_partitions("moving", Duration::from_secs(20), |rows| {
        rows[&0].in_sync == [0]
    });
    let output = cli(
        &[
            "topic",
            "reassign",
            "--broker",
            &bootstrap,
            "--topic",
            "moving",
            "--partition",
            "0",
            "--replicas",
            "0",
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    let output = cli(
        &[
            "topic", "delete", "--broker", &bootstrap, "--topic", "doomed",
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    cluster.wait_for_partitions("moving", Duration::from_secs(20), |rows| {
        rows[&0].replicas == [0]
    });
    // Down, it still holds them.
    assert!(holds_replica(&data_dir, "moving", 0) && holds_replica(&data_dir, "doomed", 0));
    cluster.brokers[1].restart();
    cluster.wait_for_status(Duration::from_secs(30), |status| {
        status.matches("\talive").count() == 2
    });
    assert!(
        !holds_replica(&data_dir, "moving", 0),
        "the moved replica is gone"
    );
    assert!(
        !holds_replica(&data_dir, "doomed", 0),
        "the deleted topic is gone"
    );
    assert!(holds_replica(&data_dir, "kept", 0), "what it holds stays");
    let rows = cluster.wait_for_partitions("kept", Duration::from_secs(20), |rows| {
        rows[&0].in_sync.len() == 2
    });
    assert_eq!(rows[&0].high_watermark, 2);
}
