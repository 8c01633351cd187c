//! The fault-injection suite: 3 brokers, replication factor 3, `min.insync.replicas=2`,
//! `acks=all`, producers and a consumer running throughout, while the test kills, pauses
//! and restarts brokers. Every send, acknowledgement and read goes into a history
//! (`super::history`) that is checked at the end for lost, duplicated, reordered and
//! divergent writes and for consumers going backwards; then the replicas of every
//! partition must agree byte for byte.
//!
//! The scenarios run one at a time (`ONE_AT_A_TIME`): each is a cluster of real processes,
//! and two at once on a 2-core machine would only measure the machine.
//!
//! `SHARDLINE_TEST_SEED` replays the randomized schedule; `SHARDLINE_FAULT_SECONDS` makes
//! it run longer than the CI default.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};

use shardline::client::{
    partition_for_key, Admin, Cluster, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartFrom,
};
use shardline::protocol::{Acks, OffsetSpec};

use super::cluster::{
    broker_args, create_topic, describe_rows, holds_replica, ip, replica_bytes, voters, Row,
    TestCluster,
};
use super::harness::{seed, Broker};
use super::history::{self, Recorder, Summary};
use super::netns::Netns;

/// The fault tests run one after another.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TOPIC: &str = "jepsen";
const PARTITIONS: u32 = 3;
const BROKERS: usize = 3;
/// Producers, two per partition.
const PRODUCERS: u32 = 6;
/// Every broker's client port on its own address (fixed, so the clients' bootstrap list
/// stays valid across restarts).
const CLIENT_PORT: u16 = 9092;
/// The brokers' session with the controller: a silent broker is fenced after this.
const SESSION_MS: &str = "2000";
/// Answers from a killed broker arrive within this of its death (see `failover_time`).
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(500);
/// How long the cluster may take to heal after a fault.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the randomized schedule runs unless `SHARDLINE_FAULT_SECONDS` says.
const RANDOM_SCHEDULE_SECONDS: u64 = 60;

/// A cluster under a workload, with its history.
struct Jepsen {
    cluster: TestCluster,
    recorder: Recorder,
    workload: Option<Workload>,
    bootstrap: String,
    /// The network namespaces the brokers run in, if any (dropped last).
    netns: Option<Netns>,
}

impl Jepsen {
    fn start(subnet: u8) -> Jepsen {
        Jepsen::start_with(subnet, BROKERS)
    }

    /// `brokers` brokers, every one a controller voter; the topic keeps replication
    /// factor 3.
    fn start_with(subnet: u8, brokers: usize) -> Jepsen {
        let cluster = TestCluster::start_on(
            subnet,
            brokers,
            CLIENT_PORT,
            &["--broker-session-timeout-ms", SESSION_MS],
        );
        Jepsen::run(cluster, bootstrap_of(subnet, brokers), None)
    }

    /// The workload on `cluster` (whose clients use `bootstrap`).
    fn run(cluster: TestCluster, bootstrap: String, netns: Option<Netns>) -> Jepsen {
        create_topic(
            &cluster.bootstrap(),
            TOPIC,
            PARTITIONS,
            3,
            &["min.insync.replicas=2", "replica.lag.time.max.ms=2000"],
        );
        cluster.wait_for_partitions(TOPIC, HEAL_TIMEOUT, healed);
        let recorder = Recorder::new();
        let workload = Workload::start(bootstrap.clone(), recorder.clone());
        let jepsen = Jepsen {
            cluster,
            recorder,
            workload: Some(workload),
            bootstrap,
            netns,
        };
        // Something is acknowledged before the first fault.
        jepsen.wait_for_acks(Instant::now(), Duration::from_secs(30));
        jepsen
    }

    fn rows(&self) -> BTreeMap<u32, Row> {
        self.cluster.describe(TOPIC)
    }

    /// The broker leading `partition` now (waiting for one, if none does).
    fn leader_of(&self, partition: u32) -> usize {
        let rows = self
            .cluster
            .wait_for_partitions(TOPIC, HEAL_TIMEOUT, |rows| {
                rows[&partition].leader.is_some()
            });
        rows[&partition].leader.expect("waited for") as usize
    }

    /// The controller's Raft leader (a node id, which is the broker's index).
    fn controller_leader(&self) -> usize {
        let status = self.cluster.wait_for_status(HEAL_TIMEOUT, |status| {
            status.contains("controller leader: node")
                && !status.contains("controller leader: node none")
        });
        status
            .split("controller leader: node ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|id| id.parse().ok())
            .expect("a controller leader")
    }

    /// Prints the last warnings and errors of every broker (when a wait times out or the
    /// checker finds an anomaly), and keeps every broker's whole log in a file under the
    /// target directory.
    fn show_warnings(&self) {
        let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "fault-logs-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        let _ = std::fs::create_dir_all(&kept);
        for (i, broker) in self.cluster.brokers.iter().enumerate() {
            let log = broker.log();
            let file = kept.join(format!("broker-{i}.log"));
            match std::fs::write(&file, &log) {
                Ok(()) => eprintln!("broker {i}'s whole log: {}", file.display()),
                Err(error) => eprintln!("broker {i}'s log not kept: {error}"),
            }
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["WARN", "ERROR", "truncat", "leader", "in-sync", "fenced"]
                        .iter()
                        .any(|word| l.contains(word))
                })
                .collect();
            let tail = &notable[notable.len().saturating_sub(60)..];
            eprintln!(
                "broker {i} ({} lines logged):\n{}",
                log.lines().count(),
                tail.join("\n")
            );
        }
    }

    /// Waits until every partition has a leader and all its replicas in sync; on a
    /// timeout, shows the brokers' warnings.
    fn wait_healed(&self) {
        let deadline = Instant::now() + HEAL_TIMEOUT;
        loop {
            let (rows, output) = describe_rows(&self.cluster.bootstrap(), TOPIC);
            if output.status.success() && healed(&rows) {
                return;
            }
            if Instant::now() > deadline {
                self.show_warnings();
                panic!("the cluster did not heal: {rows:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for an acknowledgement on any partition after `since`; returns when it came.
    fn wait_for_acks(&self, since: Instant, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let first = (0..PARTITIONS)
                .filter_map(|p| self.recorder.first_ack_after(since, p))
                .min();
            if let Some(at) = first {
                return at;
            }
            if Instant::now() > deadline {
                self.show_warnings();
                panic!("no write acknowledged since the fault; {:?}", self.rows());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How long after `killed_at` (the kill of `partition`'s leader) a new leader first
    /// acknowledged a write on it. Answers still on their way from the dead leader arrive
    /// within moments of the kill, and no new leader can exist before the session timeout,
    /// so the first acknowledgement past `IN_FLIGHT_GRACE` is the new leader's.
    fn failover_time(&self, killed_at: Instant, partition: u32) -> Duration {
        let deadline = Instant::now() + HEAL_TIMEOUT;
        loop {
            if let Some(at) = self
                .recorder
                .first_ack_after(killed_at + IN_FLIGHT_GRACE, partition)
            {
                return at - killed_at;
            }
            assert!(
                Instant::now() < deadline,
                "partition {partition} took no write since the fault; {:?}",
                self.rows()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn note(&self, text: impl std::fmt::Display) {
        eprintln!("fault: {text}");
        self.recorder.note(text);
    }

    fn kill(&mut self, broker: usize) {
        self.note(format!("kill -9 broker {broker}"));
        self.cluster.brokers[broker].kill();
    }

    fn restart(&mut self, broker: usize) {
        self.note(format!("restart broker {broker}"));
        self.start_again(broker);
    }

    /// Starts a stopped broker again (in its namespace, if it has one).
    fn start_again(&mut self, broker: usize) {
        let process = &mut self.cluster.brokers[broker];
        match &self.netns {
            Some(netns) => netns.as_broker(broker, || process.restart()),
            None => process.restart(),
        }
    }

    /// Heals, stops the workload, reads every partition in full, checks the history, then
    /// stops the brokers and compares their replicas byte for byte.
    fn finish(mut self) -> Summary {
        for broker in 0..self.cluster.brokers.len() {
            if self.cluster.brokers[broker].pid().is_none() {
                self.start_again(broker);
            }
        }
        self.wait_healed();
        self.note("healed");
        // Writes flow again after the last fault.
        self.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
        self.workload.take().expect("running").stop();
        // Every replica holds everything: the high watermark stands still and equals on
        // two looks a second apart.
        let mut last = None;
        let deadline = Instant::now() + HEAL_TIMEOUT;
        let settled = loop {
            let rows = self.rows();
            let marks: Vec<u64> = rows.values().map(|r| r.high_watermark).collect();
            if healed(&rows) && last.as_ref() == Some(&marks) {
                break rows;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle: {rows:?}"
            );
            last = Some(marks);
            std::thread::sleep(Duration::from_secs(1));
        };
        final_read(&self.bootstrap, &self.recorder);
        let checked = self.recorder.check();
        let summary = match checked {
            Ok(summary) => summary,
            Err(report) => {
                self.show_warnings();
                panic!("the history shows anomalies:\n{report}")
            }
        };
        eprintln!("history: {summary}");
        assert!(summary.acked > 0, "{summary}");
        let dirs: Vec<_> = self
            .cluster
            .brokers
            .iter_mut()
            .map(|broker| {
                assert!(broker.stop(), "a graceful stop:\n{}", broker.log());
                broker.data_dir.clone()
            })
            .collect();
        for (partition, row) in &settled {
            let holders = &row.replicas;
            let first = replica_bytes(&dirs[holders[0] as usize], TOPIC, *partition);
            assert!(!first.is_empty(), "partition {partition} holds data");
            for &broker in &holders[1..] {
                let other = replica_bytes(&dirs[broker as usize], TOPIC, *partition);
                assert!(
                    other == first,
                    "partition {partition}: broker {broker}'s replica ({} bytes) differs from broker {}'s ({} bytes)",
                    other.len(),
                    holders[0],
                    first.len()
                );
            }
        }
        summary
    }
}

/// Every partition has a leader and all its replicas in sync.
fn healed(rows: &BTreeMap<u32, Row>) -> bool {
    rows.len() == PARTITIONS as usize
        && rows
            .values()
            .all(|r| r.leader.is_some() && r.in_sync.len() == r.replicas.len())
}

fn bootstrap_of(subnet: u8, brokers: usize) -> String {
    (0..brokers)
        .map(|i| format!("{}:{CLIENT_PORT}", ip(subnet, i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A key of producer `i` that lands on partition `i % PARTITIONS`.
fn key_of(producer: u32) -> String {
    (0..)
        .map(|n| format!("k{producer}-{n}"))
        .find(|key| partition_for_key(key.as_bytes(), PARTITIONS) == producer % PARTITIONS)
        .expect("some key lands there")
}

/// Producers and a consumer on their own glommio executor (a thread of the test).
struct Workload {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Workload {
    fn start(bootstrap: String, recorder: Recorder) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .spawn(move || run_clients(bootstrap, recorder, flag))
                .expect("executor starts")
                .join()
                .expect("the clients finish");
        });
        Workload { stop, thread }
    }

    /// Stops sending and waits until every message sent is answered (acknowledged or
    /// failed).
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the workload thread");
    }
}

async fn run_clients(bootstrap: String, recorder: Recorder, stop: Arc<AtomicBool>) {
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            glommio::spawn_local(produce(
                bootstrap.clone(),
                i,
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let consumer = glommio::spawn_local(consume(bootstrap, recorder, stop));
    for producer in producers {
        producer.await;
    }
    consumer.await;
}

async fn produce(bootstrap: String, i: u32, recorder: Recorder, stop: Arc<AtomicBool>) {
    let cluster = Cluster::new(&bootstrap, &format!("fault-producer-{i}"), true).unwrap();
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            acks: Acks::All,
            request_timeout: Duration::from_secs(5),
            retries: 40,
            retry_backoff: Duration::from_millis(20),
            ..ProducerConfig::default()
        },
    );
    let key = key_of(i);
    let partition = partition_for_key(key.as_bytes(), PARTITIONS);
    let window = std::rc::Rc::new(glommio::sync::Semaphore::new(16));
    let mut answers = Vec::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let permit = window.acquire_static_permit(1).await.expect("open");
        let value = history::value(i, seq);
        seq += 1;
        recorder.send(i, partition, &value);
        match producer
            .send(TOPIC, Some(key.as_bytes()), value.as_bytes())
            .await
        {
            Ok(delivery) => {
                let recorder = recorder.clone();
                answers.push(glommio::spawn_local(async move {
                    let _permit = permit;
                    match delivery.wait().await {
                        Ok(meta) => recorder.ack(meta.partition, meta.offset, &value),
                        Err(error) => recorder.fail(&value, error),
                    }
                }));
            }
            Err(error) => recorder.fail(&value, error),
        }
        glommio::timer::sleep(Duration::from_millis(4)).await;
    }
    for answer in answers {
        answer.await;
    }
}

async fn consume(bootstrap: String, recorder: Recorder, stop: Arc<AtomicBool>) {
    let cluster = Cluster::new(&bootstrap, "fault-consumer", true).unwrap();
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig {
            max_wait: Duration::from_millis(200),
            ..ConsumerConfig::default()
        },
    );
    while consumer
        .assign(TOPIC, None, StartFrom::Earliest)
        .await
        .is_err()
    {
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll().await {
            Ok(fetched) => {
                let read = fetched.for_each(|_, partition, record| {
                    let value = String::from_utf8_lossy(record.value);
                    recorder.read(0, partition, record.offset, &value);
                });
                if let Err(error) = read {
                    panic!("the consumer read a bad batch: {error}");
                }
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Reads every partition from its start up to its high watermark into the history.
fn final_read(bootstrap: &str, recorder: &Recorder) {
    let (bootstrap, recorder) = (bootstrap.to_string(), recorder.clone());
    super::harness::on_executor(move || async move {
        let cluster = Cluster::new(&bootstrap, "fault-checker", true).unwrap();
        let admin = Admin::new(cluster.clone());
        let mut ends = BTreeMap::new();
        for partition in 0..PARTITIONS {
            let end = admin
                .list_offset(TOPIC, partition, OffsetSpec::Latest)
                .await
                .expect("the high watermark");
            ends.insert(partition, end);
        }
        let mut consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign(TOPIC, None, StartFrom::Earliest)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (0..PARTITIONS).any(|p| consumer.position(TOPIC, p).unwrap_or(0) < ends[&p]) {
            assert!(Instant::now() < deadline, "the final read did not finish");
            let fetched = consumer.poll().await.expect("the final read");
            fetched
                .for_each(|_, partition, record| {
                    if record.offset < ends[&partition] {
                        let value = String::from_utf8_lossy(record.value);
                        recorder.final_read(partition, record.offset, &value);
                    }
                })
                .expect("readable batches");
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Scenario 1: kill -9 the leader of a partition, again and again; each time a new leader
/// takes writes, and the killed broker comes back and catches up.
#[test]
fn kill_nine_the_partition_leader_ten_times() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start(81);
    let mut failovers = Vec::new();
    for round in 0..10u32 {
        let partition = round % PARTITIONS;
        let leader = jepsen.leader_of(partition);
        let killed_at = Instant::now();
        jepsen.kill(leader);
        failovers.push(jepsen.failover_time(killed_at, partition));
        jepsen.restart(leader);
        jepsen.wait_healed();
    }
    let mut sorted = failovers.clone();
    sorted.sort();
    eprintln!(
        "failover (kill -9 of the leader to the first acknowledged write on its partition), {} kills: p50 {:?}, max {:?}",
        sorted.len(),
        percentile(&sorted, 0.5),
        sorted[sorted.len() - 1]
    );
    jepsen.finish();
}

/// Scenario 2: SIGSTOP a leader past its session (it is fenced and replaced while it
/// still believes it leads), then SIGCONT it: it must not acknowledge anything at its
/// old epoch, and it cuts its divergent suffix and follows.
#[test]
fn sigstop_the_leader_past_its_session_then_resume_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let jepsen = Jepsen::start(82);
    for round in 0..3u32 {
        let partition = round % PARTITIONS;
        let leader = jepsen.leader_of(partition);
        let epoch = jepsen.rows()[&partition].epoch;
        jepsen.note(format!("SIGSTOP broker {leader}"));
        jepsen.cluster.brokers[leader].signal(Signal::SIGSTOP);
        jepsen
            .cluster
            .wait_for_partitions(TOPIC, HEAL_TIMEOUT, |rows| {
                rows[&partition].epoch > epoch && rows[&partition].leader != Some(leader as u32)
            });
        jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
        jepsen.note(format!("SIGCONT broker {leader}"));
        jepsen.cluster.brokers[leader].signal(Signal::SIGCONT);
        jepsen.wait_healed();
    }
    jepsen.finish();
}

/// Scenario 4: kill -9 the controller's Raft leader; another voter takes over and
/// failover keeps working through it.
#[test]
fn kill_nine_the_controller_leader() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start(84);
    for _ in 0..3 {
        let controller = jepsen.controller_leader();
        jepsen.kill(controller);
        let status = jepsen.cluster.wait_for_status(HEAL_TIMEOUT, |status| {
            status.contains("controller leader: node")
                && !status.contains("controller leader: node none")
                && !status.contains(&format!("controller leader: node {controller}"))
        });
        assert!(status.contains("controller leader"), "{status}");
        jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
        jepsen.restart(controller);
        jepsen.wait_healed();
    }
    jepsen.finish();
}

/// Scenario 5: kill -9 every broker at once and start them all again.
#[test]
fn restart_the_whole_cluster_at_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start(85);
    for _ in 0..2 {
        jepsen.note("kill -9 every broker");
        for broker in jepsen.cluster.brokers.iter_mut() {
            broker.kill();
        }
        for broker in 0..BROKERS {
            jepsen.restart(broker);
        }
        jepsen.wait_healed();
        jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
    }
    jepsen.finish();
}

/// Scenario 6: a follower that fell behind is killed while it catches up, twice.
#[test]
fn kill_a_follower_during_its_catch_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start(86);
    let leader = jepsen.leader_of(0);
    let follower = (leader + 1) % BROKERS;
    jepsen.kill(follower);
    // It falls behind by a few seconds of writes.
    std::thread::sleep(Duration::from_secs(4));
    for _ in 0..2 {
        jepsen.restart(follower);
        std::thread::sleep(Duration::from_millis(300));
        jepsen.kill(follower);
        std::thread::sleep(Duration::from_secs(2));
    }
    jepsen.restart(follower);
    jepsen.wait_healed();
    jepsen.finish();
}

/// One fault of the randomized schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    StopLeader,
    KillController,
    KillFollowerInCatchUp,
    RestartAll,
}

/// The faults above in a seeded random order with random pauses, for a bounded time
/// (`SHARDLINE_FAULT_SECONDS`, default `RANDOM_SCHEDULE_SECONDS`); replay a run with
/// its printed `SHARDLINE_TEST_SEED`.
#[test]
fn a_randomized_fault_schedule() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed("a_randomized_fault_schedule");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let seconds = std::env::var("SHARDLINE_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(RANDOM_SCHEDULE_SECONDS);
    let mut jepsen = Jepsen::start(87);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut faults = 0;
    while Instant::now() < until {
        let fault = match rng.gen_range(0..10) {
            0..=3 => Fault::KillLeader,
            4..=5 => Fault::StopLeader,
            6..=7 => Fault::KillController,
            8 => Fault::KillFollowerInCatchUp,
            _ => Fault::RestartAll,
        };
        let partition = rng.gen_range(0..PARTITIONS);
        let pause = Duration::from_millis(rng.gen_range(200..3000));
        match fault {
            Fault::KillLeader => {
                let leader = jepsen.leader_of(partition);
                jepsen.kill(leader);
                std::thread::sleep(pause);
                jepsen.restart(leader);
            }
            Fault::StopLeader => {
                let leader = jepsen.leader_of(partition);
                jepsen.note(format!("SIGSTOP broker {leader}"));
                jepsen.cluster.brokers[leader].signal(Signal::SIGSTOP);
                std::thread::sleep(pause * 2);
                jepsen.note(format!("SIGCONT broker {leader}"));
                jepsen.cluster.brokers[leader].signal(Signal::SIGCONT);
            }
            Fault::KillController => {
                let controller = jepsen.controller_leader();
                jepsen.kill(controller);
                std::thread::sleep(pause);
                jepsen.restart(controller);
            }
            Fault::KillFollowerInCatchUp => {
                let follower = (jepsen.leader_of(partition) + 1) % BROKERS;
                jepsen.kill(follower);
                std::thread::sleep(pause);
                jepsen.restart(follower);
                std::thread::sleep(Duration::from_millis(200));
                jepsen.kill(follower);
                jepsen.restart(follower);
            }
            Fault::RestartAll => {
                jepsen.note("kill -9 every broker");
                for broker in jepsen.cluster.brokers.iter_mut() {
                    broker.kill();
                }
                for broker in 0..BROKERS {
                    jepsen.restart(broker);
                }
            }
        }
        faults += 1;
        jepsen.note(format!("fault {faults} ({fault:?}) done"));
        jepsen.wait_healed();
    }
    let summary = jepsen.finish();
    eprintln!(
        "randomized schedule (seed {seed}, {seconds} s): survived {faults} faults; {summary}"
    );
}

/// Group coordinators and idempotent producers fail over with their partitions: kill -9
/// the coordinator of a group between two of its consumers' runs, and the leader of a
/// partition between an acknowledged batch and its retry.
#[test]
fn committed_offsets_and_producer_state_survive_a_leaders_kill() {
    use super::cluster::{consume_group, produce};
    use super::idempotence::{idempotent_batch, log_end, produce_raw};
    use shardline::protocol::{ErrorCode, InitProducerIdRequest, Request, Response};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start_on(
        88,
        BROKERS,
        CLIENT_PORT,
        &["--broker-session-timeout-ms", SESSION_MS],
    );
    let bootstrap = bootstrap_of(88, BROKERS);
    create_topic(&bootstrap, "work", 3, 3, &["min.insync.replicas=2"]);
    let lines: String = (0..300).map(|n| format!("k{}:v{n}\n", n % 11)).collect();
    assert!(produce(&bootstrap, "work", "all", &lines).status.success());
    let first = consume_group(&bootstrap, "work", "workers", 120);
    assert_eq!(first.len(), 120);
    // Kill the coordinator: the leader of the group's offsets partition.
    let partition = shardline::shard::Ownership::offsets_partition("workers");
    let coordinator = cluster.wait_for_partitions("__offsets", HEAL_TIMEOUT, |rows| {
        rows[&partition].leader.is_some()
    })[&partition]
        .leader
        .unwrap();
    cluster.brokers[coordinator as usize].kill();
    cluster.wait_for_partitions("__offsets", HEAL_TIMEOUT, |rows| {
        rows[&partition].leader.is_some_and(|l| l != coordinator)
    });
    let second = consume_group(&bootstrap, "work", "workers", 180);
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        total,
        "nothing read twice across the coordinator's death"
    );
    assert_eq!(total, 300, "everything read once");
    cluster.brokers[coordinator as usize].restart();
    cluster.wait_for_partitions("work", HEAL_TIMEOUT, healed);

    // An idempotent batch, acknowledged; its leader dies; the retry to the new leader is
    // recognised (same offset, stored once) and a batch past a gap is refused.
    create_topic(&bootstrap, "idem", 1, 3, &["min.insync.replicas=2"]);
    let rows = cluster.wait_for_partitions("idem", HEAL_TIMEOUT, |rows| {
        rows[&0].leader.is_some() && rows[&0].in_sync.len() == BROKERS
    });
    let leader = rows[&0].leader.unwrap() as usize;
    let (batch, gap) = {
        let bootstrap = bootstrap.clone();
        super::harness::on_executor(move || async move {
            let cluster = Cluster::new(&bootstrap, "idem", true).unwrap();
            let connection = cluster.connection_for("idem", 0).await.unwrap();
            let request = Request::InitProducerId(InitProducerIdRequest {
                client_id: "idem".into(),
            });
            let producer_id = match connection.request(&request, &[]).await.unwrap().response {
                Response::InitProducerId(answer) => answer.producer_id,
                other => panic!("init producer id answered with {other:?}"),
            };
            let batch = idempotent_batch(producer_id, 0, 0, 3);
            assert_eq!(
                produce_raw(&cluster, "idem", &batch).await,
                (ErrorCode::None, 0)
            );
            (batch, idempotent_batch(producer_id, 0, 7, 1))
        })
    };
    cluster.brokers[leader].kill();
    cluster.wait_for_partitions("idem", HEAL_TIMEOUT, |rows| {
        rows[&0].leader.is_some_and(|l| l as usize != leader)
    });
    super::harness::on_executor(move || async move {
        let cluster = Cluster::new(&bootstrap, "idem-retry", true).unwrap();
        assert_eq!(
            produce_raw(&cluster, "idem", &batch).await,
            (ErrorCode::None, 0),
            "the retry gets the original offset back"
        );
        assert_eq!(
            produce_raw(&cluster, "idem", &gap).await.0,
            ErrorCode::OutOfOrderSequence
        );
        assert_eq!(
            log_end(&cluster, "idem").await,
            3,
            "the batch is stored once"
        );
    });
}

/// A rolling restart: each broker in turn stops gracefully (a controlled shutdown moves
/// its leaderships first) and starts again; `acks=all` writes keep flowing apart from
/// the moves.
#[test]
fn a_rolling_restart_keeps_writes_flowing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start(83);
    let started = Instant::now();
    for broker in 0..BROKERS {
        jepsen.note(format!("graceful stop of broker {broker}"));
        assert!(
            jepsen.cluster.brokers[broker].stop(),
            "a graceful stop:\n{}",
            jepsen.cluster.brokers[broker].log()
        );
        for line in jepsen.cluster.brokers[broker].log().lines() {
            if line.contains("controlled shutdown") || line.contains("drain") {
                eprintln!("broker {broker}: {line}");
            }
        }
        jepsen.restart(broker);
        jepsen.wait_healed();
    }
    jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
    let gaps: Vec<Duration> = (0..PARTITIONS)
        .map(|p| jepsen.recorder.longest_ack_gap_after(started, p))
        .collect();
    eprintln!(
        "rolling restart of {BROKERS} brokers: the longest time without an acknowledged write, per partition: {gaps:?}"
    );
    jepsen.finish();
}

/// Scenario 3: the leader is cut off from the other brokers by a network partition
/// (drop rules inside its network namespace; clients still reach it), then healed. The
/// others elect a new leader; the old one cannot acknowledge an `acks=all` write (no
/// follower fetches from it at its epoch), and after the heal it cuts its divergent
/// suffix and follows. Skipped, with the reason, where namespaces cannot be made.
#[test]
fn a_network_partition_cuts_the_leader_off_then_heals() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let netns = match Netns::create("p", BROKERS) {
        Ok(netns) => netns,
        Err(reason) => {
            eprintln!("SKIPPED a_network_partition_cuts_the_leader_off_then_heals: network namespaces unavailable: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let voters = voters(BROKERS, |i| netns.ip(i));
    let brokers: Vec<Broker> = (0..BROKERS)
        .map(|i| {
            let args = broker_args(
                &netns.ip(i),
                CLIENT_PORT,
                i,
                &voters,
                &["--broker-session-timeout-ms", SESSION_MS],
            );
            netns.as_broker(i, || {
                Broker::start_exact(&dir.path().join(format!("node-{i}")), &args)
            })
        })
        .collect();
    let bootstrap = (0..BROKERS)
        .map(|i| format!("{}:{CLIENT_PORT}", netns.ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    let cluster = TestCluster::from_parts(brokers, dir);
    cluster.wait_for_status(HEAL_TIMEOUT, |status| {
        status.contains("controller leader: node") && status.matches("\talive").count() == BROKERS
    });
    let ips: Vec<String> = (0..BROKERS).map(|i| netns.ip(i)).collect();
    let jepsen = Jepsen::run(cluster, bootstrap, Some(netns));
    for round in 0..2u32 {
        let partition = round % PARTITIONS;
        let leader = jepsen.leader_of(partition);
        let epoch = jepsen.rows()[&partition].epoch;
        let majority = (0..BROKERS)
            .filter(|&b| b != leader)
            .map(|b| format!("{}:{CLIENT_PORT}", ips[b]))
            .collect::<Vec<_>>()
            .join(",");
        jepsen.note(format!("cut broker {leader} off from the others"));
        jepsen.netns.as_ref().unwrap().isolate(leader);
        let cut_at = Instant::now();
        // The majority elects another leader (asked of the majority: the cut-off broker
        // still believes it leads).
        let deadline = Instant::now() + HEAL_TIMEOUT;
        loop {
            let (rows, output) = describe_rows(&majority, TOPIC);
            if output.status.success()
                && !rows.is_empty()
                && rows[&partition].epoch > epoch
                && rows[&partition]
                    .leader
                    .is_some_and(|l| l as usize != leader)
            {
                break;
            }
            assert!(Instant::now() < deadline, "no new leader: {rows:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("partition: a new leader after {:?}", cut_at.elapsed());
        jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
        // Writes go on for a while on the majority side.
        std::thread::sleep(Duration::from_secs(3));
        jepsen.note(format!("heal broker {leader}"));
        jepsen.netns.as_ref().unwrap().heal(leader);
        jepsen.wait_healed();
    }
    jepsen.finish();
}

/// A fourth broker joins a running three-voter cluster as an observer (not a voter), and
/// `topic reassign` moves every partition onto it and off its leader: the new replica
/// catches up, the set switches, the old leader hands over and drops its copy, while writes
/// go on. The observer then follows a new controller leader after a kill -9.
#[test]
fn reassign_partitions_onto_a_fourth_broker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const SUBNET: u8 = 89;
    let dir = tempfile::tempdir().unwrap();
    // Three voters; the fourth broker is not one of them (it observes the controller's
    // metadata), so the running cluster takes it without changing its quorum.
    let voters = voters(3, |i| ip(SUBNET, i));
    let args = |i: usize| {
        broker_args(
            &ip(SUBNET, i),
            CLIENT_PORT,
            i,
            &voters,
            &[
                "--broker-session-timeout-ms",
                SESSION_MS,
                "--default-replication-factor",
                "3",
            ],
        )
    };
    let brokers: Vec<Broker> = (0..3)
        .map(|i| Broker::start_exact(&dir.path().join(format!("node-{i}")), &args(i)))
        .collect();
    let fourth_dir = dir.path().join("node-3");
    let cluster = TestCluster::from_parts(brokers, dir);
    cluster.wait_for_status(HEAL_TIMEOUT, |status| {
        status.contains("controller leader: node") && status.matches("\talive").count() == 3
    });
    let mut jepsen = Jepsen::run(cluster, bootstrap_of(SUBNET, 3), None);
    jepsen.note("a fourth broker joins");
    let fourth = Broker::start_exact(&fourth_dir, &args(3));
    jepsen.cluster.brokers.push(fourth);
    jepsen.cluster.wait_for_status(HEAL_TIMEOUT, |status| {
        status.matches("\talive").count() == 4 && status.contains("\tno\talive")
    });
    // The observer answers with the image it fetched: the same leader, itself alive.
    let observer = format!("{}:{CLIENT_PORT}", ip(SUBNET, 3));
    let output = super::harness::cli(&["cluster", "status", "--broker", &observer], None);
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && status.contains("answered by node 3")
            && status.contains(&format!(
                "controller leader: node {}",
                jepsen.controller_leader()
            )),
        "{output:?}"
    );
    let bootstrap = jepsen.bootstrap.clone();
    let started = Instant::now();
    for partition in 0..PARTITIONS {
        let row = jepsen.rows()[&partition].clone();
        let leader = row.leader.expect("a leader");
        let mut target = vec![3];
        target.extend(row.replicas.iter().copied().filter(|&b| b != leader));
        let list = target
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",");
        jepsen.note(format!("reassign partition {partition} to {list}"));
        let output = super::harness::cli(
            &[
                "topic",
                "reassign",
                "--broker",
                &bootstrap,
                "--topic",
                TOPIC,
                "--partition",
                &partition.to_string(),
                "--replicas",
                &list,
            ],
            None,
        );
        assert!(output.status.success(), "{output:?}");
        let rows = jepsen
            .cluster
            .wait_for_partitions(TOPIC, HEAL_TIMEOUT, |rows| {
                let row = &rows[&partition];
                row.replicas == target
                    && row.in_sync.len() == target.len()
                    && row.leader.is_some_and(|l| target.contains(&l))
            });
        assert!(
            rows[&partition].epoch > row.epoch,
            "the old leader handed over"
        );
        jepsen.wait_for_acks(Instant::now(), HEAL_TIMEOUT);
        // The old leader dropped its copy.
        let gone_from = jepsen.cluster.brokers[leader as usize].data_dir.clone();
        let deadline = Instant::now() + HEAL_TIMEOUT;
        while holds_replica(&gone_from, TOPIC, partition) {
            assert!(
                Instant::now() < deadline,
                "broker {leader} still holds partition {partition}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let gaps: Vec<Duration> = (0..PARTITIONS)
        .map(|p| jepsen.recorder.longest_ack_gap_after(started, p))
        .collect();
    eprintln!(
        "reassignment: the longest time without an acknowledged write, per partition: {gaps:?}"
    );
    // Bad reassignments are refused with a reason.
    for (replicas, expected) in [("9", "not a live registered broker"), ("1,1", "distinct")] {
        let output = super::harness::cli(
            &[
                "topic",
                "reassign",
                "--broker",
                &bootstrap,
                "--topic",
                TOPIC,
                "--partition",
                "0",
                "--replicas",
                replicas,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{replicas}: {stderr}"
        );
    }
    // The observer follows a new controller leader: the leader is killed, and a topic
    // created through the observer (forwarded to the new leader) shows in its own view.
    let old = jepsen.controller_leader();
    jepsen.kill(old);
    let deadline = Instant::now() + HEAL_TIMEOUT;
    loop {
        let output = super::harness::cli(&["cluster", "status", "--broker", &observer], None);
        let status = String::from_utf8_lossy(&output.stdout);
        if status.contains("controller leader: node")
            && !status.contains("controller leader: node none")
            && !status.contains(&format!("controller leader: node {old},"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new controller leader: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    create_topic(&observer, "made-through-the-observer", 2, 3, &[]);
    // Its partitions get leaders among the live brokers (one led by the killed broker moves
    // once that broker is fenced).
    let deadline = Instant::now() + HEAL_TIMEOUT;
    loop {
        let (rows, output) = describe_rows(&observer, "made-through-the-observer");
        if output.status.success() && rows.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{output:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    jepsen.finish();
}

/// Two failovers in a row: the leader is killed, and the one elected after it is killed
/// as soon as it leads. The last replica leads alone (writes wait for a second in-sync
/// replica); when both come back they cut what diverges across two epochs and catch up.
/// Five brokers, so that the controller keeps its quorum with two of them dead.
#[test]
fn two_fast_failovers_in_a_row() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut jepsen = Jepsen::start_with(90, 5);
    let first = jepsen.leader_of(0);
    let epoch = jepsen.rows()[&0].epoch;
    jepsen.kill(first);
    let rows = jepsen
        .cluster
        .wait_for_partitions(TOPIC, HEAL_TIMEOUT, |rows| {
            rows[&0].epoch > epoch && rows[&0].leader.is_some_and(|l| l as usize != first)
        });
    let second = rows[&0].leader.unwrap() as usize;
    jepsen.kill(second);
    let rows = jepsen
        .cluster
        .wait_for_partitions(TOPIC, HEAL_TIMEOUT, |rows| {
            rows[&0]
                .leader
                .is_some_and(|l| l as usize != first && l as usize != second)
        });
    assert!(rows[&0].epoch >= epoch + 2, "{rows:?}");
    jepsen.restart(first);
    jepsen.restart(second);
    jepsen.wait_healed();
    jepsen.finish();
}
