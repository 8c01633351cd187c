//! Consumer groups against real broker and consumer processes: a group shares a topic's
//! partitions (each message to one member, each partition to one member at a time), groups
//! are independent of each other, a killed member's partitions move after its session
//! timeout without skipping anything, committed offsets survive a `kill -9` of the broker,
//! static members come back without a rebalance, and bad or fenced group requests are
//! refused without harm.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardline::client::Cluster;
use shardline::protocol::{
    decode_response, encode_request, AssignmentStrategy, CommitOffset, ErrorCode, Frame,
    FrameHeader, FrameReader, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    MetadataRequest, OffsetCommitRequest, Request, Response, TopicPartitions,
};
use tempfile::TempDir;

use crate::harness::{cli, on_executor, shardline_binary, Broker};

/// How long a group may take to reach the expected membership.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a consumer process may run in any of these tests.
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(120);

/// A `shardline consume --group` process whose stdout (JSON lines) and stderr (ownership
/// lines) go to files.
struct Member {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Member {
    fn start(
        dir: &Path,
        name: &str,
        broker: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
    ) -> Member {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new(shardline_binary())
            .args([
                "consume", "--broker", broker, "--topic", topic, "--group", group, "--format",
                "json",
            ])
            .args(extra)
            .env("SHARDLINE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("consumer starts");
        Member {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Waits for the process to exit on its own; its exit must be a success.
    fn wait(&mut self) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + CONSUMER_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "consumer failed: {}", self.stderr_text());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("consumer ran too long: {}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// (partition, offset, value) of every record it printed.
    fn records(&self) -> Vec<(u32, u64, String)> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|json| {
                (
                    json["partition"].as_u64().expect("partition") as u32,
                    json["offset"].as_u64().expect("offset"),
                    json["value"].as_str().expect("value").to_string(),
                )
            })
            .collect()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its ownership changes: (generation, partitions, time in µs).
    fn ownership(&self) -> Vec<(u64, BTreeSet<String>, u64)> {
        self.stderr_text()
            .lines()
            .filter_map(|line| line.strip_prefix("ownership "))
            .map(|json| {
                let json: serde_json::Value = serde_json::from_str(json).expect("ownership json");
                let partitions = json["partitions"]
                    .as_array()
                    .expect("partitions")
                    .iter()
                    .map(|p| p.as_str().expect("name").to_string())
                    .collect();
                (
                    json["generation"].as_u64().expect("generation"),
                    partitions,
                    json["at_us"].as_u64().expect("at_us"),
                )
            })
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn create_topic(broker: &Broker, topic: &str, partitions: u32) {
    let partitions = partitions.to_string();
    let out = cli(
        &[
            "topic",
            "create",
            "--broker",
            &broker.broker_arg(),
            "--topic",
            topic,
            "--partitions",
            &partitions,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Produces `count` keyed messages whose values are `{tag}-{i}`.
fn produce(broker: &Broker, topic: &str, tag: &str, count: usize) {
    let input: String = (0..count).map(|i| format!("k{i}|{tag}-{i}\n")).collect();
    let out = cli(
        &[
            "produce",
            "--broker",
            &broker.broker_arg(),
            "--topic",
            topic,
            "--key-separator",
            "|",
            "--acks",
            "all",
        ],
        Some(input.as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `shardline group reset-offsets` for group `readers` of topic `ledger`.
fn reset_offsets(broker: &Broker, to: &str, extra: &[&str]) -> std::process::Output {
    let address = broker.broker_arg();
    let mut args = vec![
        "group",
        "reset-offsets",
        "--broker",
        &address,
        "--group",
        "readers",
        "--topic",
        "ledger",
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    cli(&args, None)
}

fn describe(broker: &Broker, group: &str) -> serde_json::Value {
    let out = cli(
        &[
            "group",
            "describe",
            "--broker",
            &broker.broker_arg(),
            "--group",
            group,
            "--format",
            "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("describe json")
}

/// Waits until the group is Stable with `members` members; returns the description.
fn wait_stable(broker: &Broker, group: &str, members: usize) -> serde_json::Value {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let described = describe(broker, group);
        let count = described["members"].as_array().map_or(0, Vec::len);
        if described["state"] == "Stable" && count == members {
            return described;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never became Stable with {members} members: {described}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No partition is owned by two members at once: neither within a generation, nor at any
/// instant (replaying every member's changes in time order).
fn assert_exclusive_ownership(members: &[&Member]) {
    let mut per_generation: BTreeMap<u64, BTreeMap<String, usize>> = BTreeMap::new();
    let mut events = Vec::new();
    for (index, member) in members.iter().enumerate() {
        for (generation, partitions, at_us) in member.ownership() {
            for partition in &partitions {
                let owners = per_generation.entry(generation).or_default();
                if let Some(other) = owners.insert(partition.clone(), index) {
                    assert_eq!(
                        other, index,
                        "{partition} owned by members {other} and {index} in generation {generation}"
                    );
                }
            }
            events.push((at_us, index, partitions));
        }
    }
    events.sort();
    let mut current: Vec<BTreeSet<String>> = vec![BTreeSet::new(); members.len()];
    for (at_us, index, partitions) in events {
        current[index] = partitions;
        for (other, owned) in current.iter().enumerate() {
            if other != index {
                let shared: Vec<&String> = owned.intersection(&current[index]).collect();
                assert!(
                    shared.is_empty(),
                    "at {at_us} µs members {index} and {other} both own {shared:?}"
                );
            }
        }
    }
}

#[test]
fn three_members_share_twelve_partitions_and_each_message_goes_to_exactly_one() {
    share_twelve_partitions_among_three("cooperative-sticky", 100_000);
}

#[test]
fn eager_round_robin_members_also_share_without_overlap() {
    share_twelve_partitions_among_three("round-robin", 20_000);
}

/// Three member processes of one group (`strategy`) on a 12-partition topic; `messages`
/// produced once they are stable; every message consumed by exactly one member, no
/// partition ever owned by two, nothing left uncommitted.
fn share_twelve_partitions_among_three(strategy: &str, messages: usize) {
    let dir = TempDir::new().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "shared", 12);
    let members: Vec<Member> = (0..3)
        .map(|i| {
            Member::start(
                dir.path(),
                &format!("member{i}"),
                &broker.broker_arg(),
                "shared",
                "workers",
                &["--idle-timeout-ms", "5000", "--strategy", strategy],
            )
        })
        .collect();
    let described = wait_stable(&broker, "workers", 3);
    for member in described["members"].as_array().unwrap() {
        let owned = member["owned"].as_str().unwrap();
        assert_eq!(
            owned.split(',').count(),
            4,
            "12 partitions over 3 members: {described}"
        );
    }
    produce(&broker, "shared", "m", messages);
    let mut members = members;
    for member in &mut members {
        member.wait();
    }
    let mut seen: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    let mut values = BTreeSet::new();
    for (index, member) in members.iter().enumerate() {
        let records = member.records();
        assert!(!records.is_empty(), "member {index} consumed nothing");
        for (partition, offset, value) in records {
            if let Some(other) = seen.insert((partition, offset), index) {
                panic!("{partition}@{offset} consumed by members {other} and {index}");
            }
            values.insert(value);
        }
    }
    assert_eq!(seen.len(), messages, "every message consumed");
    assert_eq!(values.len(), messages, "every value consumed");
    let refs: Vec<&Member> = members.iter().collect();
    assert_exclusive_ownership(&refs);
    // Everything is committed: no lag is left.
    let described = describe(&broker, "workers");
    for partition in described["partitions"].as_array().unwrap() {
        assert_eq!(partition["lag"], 0, "{described}");
    }
}

#[test]
fn two_groups_on_one_topic_each_receive_every_message() {
    const MESSAGES: usize = 5_000;
    let dir = TempDir::new().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "fanout", 4);
    produce(&broker, "fanout", "f", MESSAGES);
    for group in ["billing", "audit"] {
        let mut member = Member::start(
            dir.path(),
            group,
            &broker.broker_arg(),
            "fanout",
            group,
            &["--idle-timeout-ms", "1500"],
        );
        member.wait();
        let records = member.records();
        let unique: BTreeSet<(u32, u64)> = records.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(records.len(), MESSAGES, "group {group}");
        assert_eq!(unique.len(), MESSAGES, "group {group}: no duplicates");
    }
    let out = cli(&["group", "list", "--broker", &broker.broker_arg()], None);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("billing") && listing.contains("audit"),
        "{listing}"
    );
}

#[test]
fn a_killed_member_s_partitions_move_after_its_session_timeout_and_nothing_is_skipped() {
    const FIRST: usize = 5_000;
    const SECOND: usize = 5_000;
    let dir = TempDir::new().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "jobs", 6);
    let session = ["--session-timeout-ms", "2000", "--auto-commit-ms", "200"];
    let mut doomed = Member::start(
        dir.path(),
        "doomed",
        &broker.broker_arg(),
        "jobs",
        "crew",
        &[&session[..], &["--idle-timeout-ms", "60000"]].concat(),
    );
    let mut survivor = Member::start(
        dir.path(),
        "survivor",
        &broker.broker_arg(),
        "jobs",
        "crew",
        &[&session[..], &["--idle-timeout-ms", "8000"]].concat(),
    );
    wait_stable(&broker, "crew", 2);
    produce(&broker, "jobs", "a", FIRST);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while doomed.records().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the doomed member never consumed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill();
    produce(&broker, "jobs", "b", SECOND);
    survivor.wait();
    let doomed_records: BTreeSet<(u32, u64)> =
        doomed.records().iter().map(|r| (r.0, r.1)).collect();
    let survivor_records = survivor.records();
    let mut all: BTreeSet<(u32, u64)> = doomed_records.clone();
    let mut values: BTreeSet<String> = doomed.records().into_iter().map(|r| r.2).collect();
    for (partition, offset, value) in &survivor_records {
        let fresh = all.insert((*partition, *offset));
        assert!(
            fresh || doomed_records.contains(&(*partition, *offset)),
            "{partition}@{offset} delivered twice to the survivor"
        );
        values.insert(value.clone());
    }
    assert_eq!(values.len(), FIRST + SECOND, "nothing skipped");
    // The survivor took over every partition (its very last line, at exit, is empty).
    let ownership = survivor.ownership();
    assert!(
        ownership.iter().any(|(_, owned, _)| owned.len() == 6),
        "the survivor never owned every partition: {ownership:?}"
    );
}

#[test]
fn committed_offsets_survive_a_broker_kill_and_consumers_resume_there() {
    const MESSAGES: usize = 1_000;
    const FIRST_RUN: usize = 400;
    let dir = TempDir::new().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "ledger", 4);
    produce(&broker, "ledger", "l", MESSAGES);
    let first_run = FIRST_RUN.to_string();
    let mut first = Member::start(
        dir.path(),
        "first",
        &broker.broker_arg(),
        "ledger",
        "readers",
        &["--max-messages", &first_run],
    );
    first.wait();
    let committed = |broker: &Broker| -> u64 {
        describe(broker, "readers")["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["committed"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(committed(&broker), FIRST_RUN as u64);
    broker.kill();
    broker.restart();
    assert_eq!(
        committed(&broker),
        FIRST_RUN as u64,
        "offsets survive the kill"
    );
    // Resetting needs an empty group: a member blocks it.
    let mut second = Member::start(
        dir.path(),
        "second",
        &broker.broker_arg(),
        "ledger",
        "readers",
        &["--idle-timeout-ms", "1500"],
    );
    wait_stable(&broker, "readers", 1);
    let out = reset_offsets(&broker, "earliest", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GroupNotEmpty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    second.wait();
    let first_records: BTreeSet<(u32, u64)> = first.records().iter().map(|r| (r.0, r.1)).collect();
    let second_records: BTreeSet<(u32, u64)> =
        second.records().iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(first_records.len(), FIRST_RUN);
    assert_eq!(
        second_records.len(),
        MESSAGES - FIRST_RUN,
        "resumed where it committed"
    );
    assert!(first_records.is_disjoint(&second_records));
    // Once empty, the group can be sent back to the start.
    let out = reset_offsets(&broker, "earliest", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(committed(&broker), 0);
    // An explicit offset (clamped to the log) for one partition, and a timestamp.
    let reset = |to: &str, extra: &[&str]| {
        let out = reset_offsets(&broker, to, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        reset("offset:5", &["--partitions", "0"]).trim(),
        "ledger/0\t5"
    );
    assert_eq!(committed(&broker), 5);
    let far = reset("offset:999999", &["--partitions", "0"]);
    let high: u64 = far.trim().rsplit('\t').next().unwrap().parse().unwrap();
    assert!(
        high < 999_999 && high > 0,
        "clamped to the high watermark: {far}"
    );
    reset("timestamp:0", &[]);
    assert_eq!(committed(&broker), 0, "every record is after time 0");
    reset("latest", &[]);
    assert_eq!(committed(&broker), MESSAGES as u64);
}

#[test]
fn a_static_member_restarted_within_its_session_gets_its_partitions_back_without_a_rebalance() {
    let dir = TempDir::new().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "orders", 6);
    let flags = [
        "--session-timeout-ms",
        "20000",
        "--idle-timeout-ms",
        "60000",
    ];
    let static_flags = [&flags[..], &["--instance-id", "worker-a"]].concat();
    let mut a = Member::start(
        dir.path(),
        "a1",
        &broker.broker_arg(),
        "orders",
        "shop",
        &static_flags,
    );
    let _b = Member::start(
        dir.path(),
        "b",
        &broker.broker_arg(),
        "orders",
        "shop",
        &flags,
    );
    let before = wait_stable(&broker, "shop", 2);
    let worker_a = |described: &serde_json::Value| -> (String, String) {
        described["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["instance_id"] == "worker-a")
            .map(|m| {
                (
                    m["member_id"].as_str().unwrap().to_string(),
                    m["owned"].as_str().unwrap().to_string(),
                )
            })
            .expect("worker-a is a member")
    };
    let (old_id, old_owned) = worker_a(&before);
    a.kill();
    let _a2 = Member::start(
        dir.path(),
        "a2",
        &broker.broker_arg(),
        "orders",
        "shop",
        &static_flags,
    );
    // Stable again, with worker-a under its new member id.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let after = loop {
        let after = wait_stable(&broker, "shop", 2);
        if worker_a(&after).0 != old_id {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "worker-a never came back: {after}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        before["generation"], after["generation"],
        "no rebalance: {after}"
    );
    assert_eq!(worker_a(&after).1, old_owned, "{after}");
}

/// A raw connection for requests the client would never send.
struct Raw {
    stream: TcpStream,
    reader: FrameReader,
}

impl Raw {
    fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(broker.address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            stream,
            reader: FrameReader::new(),
        }
    }

    fn send_raw(&mut self, api: u16, body: &[u8]) -> Response {
        let header = FrameHeader::new(api, 0, 9, false, body.len(), 0);
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).expect("write");
        self.read()
    }

    fn send(&mut self, request: &Request) -> Response {
        let mut frame = Vec::new();
        encode_request(&mut frame, 1, 0, request, &[]).expect("encodes");
        self.stream.write_all(&frame).expect("write");
        self.read()
    }

    fn read(&mut self) -> Response {
        loop {
            if let Some(frame) = self.reader.next_frame().expect("valid frame") {
                let frame: Frame = frame;
                return decode_response(frame).expect("valid response").response;
            }
            let space = self.reader.buffer_to_fill();
            let n = self.stream.read(space).expect("read");
            assert!(n > 0, "the broker closed the connection");
            self.reader.filled(n);
        }
    }
}

fn join_request(group: &str, topics: Vec<String>, session_timeout_ms: u32) -> JoinGroupRequest {
    JoinGroupRequest {
        group: group.to_string(),
        member_id: String::new(),
        instance_id: None,
        client_id: "raw".into(),
        topics,
        strategy: AssignmentStrategy::CooperativeSticky,
        session_timeout_ms,
        rebalance_timeout_ms: 10_000,
    }
}

fn error_of(response: &Response) -> ErrorCode {
    match response {
        Response::Error(error) => error.error,
        Response::JoinGroup(r) => r.error,
        Response::Heartbeat(r) => r.error,
        Response::LeaveGroup(r) => r.error,
        Response::OffsetCommit(r) => r.error,
        other => panic!("unexpected response {other:?}"),
    }
}

#[test]
fn fenced_commits_and_malformed_group_requests_are_refused_and_the_broker_goes_on() {
    let dir = TempDir::new().unwrap();
    let broker = Broker::start(&dir.path().join("data"), &[]);
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(&broker);

    // Two members; each may commit only what it owns; a removed member may not commit.
    let join = |raw: &mut Raw| match raw.send(&Request::JoinGroup(join_request(
        "g",
        vec!["t".into()],
        10_000,
    ))) {
        Response::JoinGroup(joined) => {
            assert_eq!(joined.error, ErrorCode::None, "{joined:?}");
            joined.member_id
        }
        other => panic!("{other:?}"),
    };
    let first = join(&mut raw);
    let second = join(&mut raw);
    let heartbeat =
        |raw: &mut Raw, member: &str| match raw.send(&Request::Heartbeat(HeartbeatRequest {
            group: "g".into(),
            member_id: member.into(),
            generation: 2,
            owned: Vec::new(),
            acked_assignment: 0,
        })) {
            Response::Heartbeat(beat) => beat,
            other => panic!("{other:?}"),
        };
    let handed = heartbeat(&mut raw, &first);
    assert_eq!(handed.error, ErrorCode::None);
    let mine: Vec<u32> = handed
        .assignment
        .iter()
        .flat_map(|t| t.partitions.clone())
        .collect();
    assert_eq!(mine.len(), 2, "{handed:?}");
    let theirs: Vec<u32> = (0..4).filter(|p| !mine.contains(p)).collect();
    let commit = |member: &str, partition: u32| {
        Request::OffsetCommit(OffsetCommitRequest {
            group: "g".into(),
            member_id: member.into(),
            generation: 2,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition,
                offset: 0,
                metadata: String::new(),
            }],
        })
    };
    match raw.send(&commit(&first, mine[0])) {
        Response::OffsetCommit(r) => {
            assert_eq!(r.error, ErrorCode::None);
            assert_eq!(r.partitions[0].error, ErrorCode::None);
        }
        other => panic!("{other:?}"),
    }
    match raw.send(&commit(&first, theirs[0])) {
        Response::OffsetCommit(r) => {
            assert_eq!(r.partitions[0].error, ErrorCode::PartitionNotAssigned)
        }
        other => panic!("{other:?}"),
    }
    let left = raw.send(&Request::LeaveGroup(LeaveGroupRequest {
        group: "g".into(),
        member_id: second.clone(),
    }));
    assert_eq!(error_of(&left), ErrorCode::None);
    assert_eq!(
        error_of(&raw.send(&commit(&second, theirs[0]))),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        error_of(&raw.send(&commit("", theirs[0]))),
        ErrorCode::UnknownMemberId
    );
    let stale = raw.send(&Request::Heartbeat(HeartbeatRequest {
        group: "g".into(),
        member_id: second,
        generation: 2,
        owned: vec![TopicPartitions {
            topic: "t".into(),
            partitions: theirs.clone(),
        }],
        acked_assignment: 0,
    }));
    assert_eq!(error_of(&stale), ErrorCode::UnknownMemberId);

    // A standalone commit (no members) for a partition that does not exist is refused.
    let nowhere = Request::OffsetCommit(OffsetCommitRequest {
        group: "standalone".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![CommitOffset {
            topic: "t".into(),
            partition: 99,
            offset: 1,
            metadata: String::new(),
        }],
    });
    match raw.send(&nowhere) {
        Response::OffsetCommit(r) => {
            assert_eq!(r.partitions[0].error, ErrorCode::UnknownTopicOrPartition)
        }
        other => panic!("{other:?}"),
    }

    // Malformed: a bad group id, a session timeout out of range, too many topics, garbage.
    let bad_id =
        rkyv::to_bytes::<rkyv::rancor::Error>(&join_request("a/b", vec![], 10_000)).unwrap();
    assert_eq!(
        error_of(&raw.send_raw(21, &bad_id)),
        ErrorCode::InvalidGroupId
    );
    let bad_timeout = rkyv::to_bytes::<rkyv::rancor::Error>(&join_request("g", vec![], 1)).unwrap();
    assert_eq!(
        error_of(&raw.send_raw(21, &bad_timeout)),
        ErrorCode::InvalidSessionTimeout
    );
    let many: Vec<String> = (0..=shardline::constants::TOPICS_PER_REQUEST_MAX)
        .map(|i| format!("t{i}"))
        .collect();
    let too_many = rkyv::to_bytes::<rkyv::rancor::Error>(&join_request("g", many, 10_000)).unwrap();
    assert_eq!(
        error_of(&raw.send_raw(21, &too_many)),
        ErrorCode::InvalidRequest
    );
    // ListGroups (26) has an empty body: there are no bytes in it to be wrong.
    for api in (20..=28u16).filter(|&api| api != 26) {
        assert_eq!(
            error_of(&raw.send_raw(api, &[0xAB; 37])),
            ErrorCode::InvalidRequest,
            "api {api}"
        );
    }

    // The connection and the broker still work.
    assert!(matches!(
        raw.send(&Request::Metadata(MetadataRequest { topics: None })),
        Response::Metadata(_)
    ));
    let address = broker.broker_arg();
    let topics = on_executor(move || async move {
        let cluster = Cluster::new(&address, "check", true).unwrap();
        shardline::client::Admin::new(cluster)
            .list_topics()
            .await
            .unwrap()
            .len()
    });
    assert_eq!(topics, 1);
}
