//! A running peer: one server process per node (one for most peers, `CLUSTER_NODES` for
//! `kafka-cluster`), each in a process group of its own, started on loopback and waited
//! for until every node accepts connections; stopped with SIGTERM to every group (SIGKILL
//! after `PEER_STOP_TIMEOUT`), killed on drop if not stopped, and killed by the kernel if
//! the harness dies first (`PR_SET_PDEATHSIG`: a process group of its own no longer gets
//! the terminal's Ctrl-C).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::kafka::{self, KraftLayout, Replication, CLUSTER_NODES};
use super::{kafka_topic, nats, peer_setting, redis, Durability, Peer, PeerInstall};
use crate::broker::{process_usage, ProcessUsage};
use crate::loadgen::pin_to;
use crate::process_group::{kill_and_reap, signal_group, spawn_group_leader};

/// The signal a peer's server gets from the kernel should the harness die first.
const PEER_PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGKILL;

/// How long a peer may take until every node accepts connections.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(90);
const PEER_START_POLL: Duration = Duration::from_millis(100);
/// How long a peer may take to exit after SIGTERM (a Kafka node that outlives the
/// cluster's quorum gives up its graceful Raft shutdown after 5 s).
const PEER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const PEER_STOP_POLL: Duration = Duration::from_millis(50);
/// Log lines of a failed peer quoted in an error, per node.
const LOG_TAIL_LINES: usize = 20;
/// The interface every peer listens on.
const LOOPBACK: &str = "127.0.0.1";

/// How to start one node of a peer.
pub struct NodeLaunch {
    pub command: Command,
    /// Where clients reach the node: `HOST:PORT`.
    pub address: String,
    pub log_path: PathBuf,
}

/// One started node.
struct PeerNode {
    /// `kafka-cluster node 2`, or the peer's name when it has one node.
    label: String,
    address: String,
    /// `None` once stopped.
    child: Option<Child>,
    log_path: PathBuf,
}

/// A running peer; killed on drop if not stopped.
pub struct PeerProcess {
    pub peer: Peer,
    /// Where clients connect: `HOST:PORT`, or a cluster's bootstrap list, comma separated
    /// (librdkafka's `bootstrap.servers` takes it as it is).
    pub address: String,
    nodes: Vec<PeerNode>,
    /// The peer's own log (a cluster's topic tool writes there; its nodes log beside it).
    log_path: PathBuf,
}

impl PeerProcess {
    /// Starts `peer` in `durability` with its data under `dir` (which must exist) and its
    /// output appended to `log_path` (a cluster's nodes: `<stem>-node<id>.log` beside it),
    /// every node on `cpus` only when given, and waits until every node accepts
    /// connections.
    pub fn start(
        peer: Peer,
        durability: Durability,
        dir: &Path,
        log_path: &Path,
        install: &PeerInstall,
        cpus: Option<&[usize]>,
    ) -> Result<PeerProcess, String> {
        peer_setting(peer, durability)?;
        let single = |command: Command, port: u16| NodeLaunch {
            command,
            address: format!("{LOOPBACK}:{port}"),
            log_path: log_path.to_path_buf(),
        };
        let launches = match peer {
            Peer::Kafka | Peer::KafkaCluster => {
                let layout = kraft_layout(peer)?;
                let launches = kafka::prepare(dir, &layout, durability, install, log_path)?;
                let addresses: Vec<&str> = launches.iter().map(|l| l.address.as_str()).collect();
                assert_eq!(
                    addresses.join(","),
                    layout.bootstrap_servers(),
                    "{layout:?}"
                );
                launches
            }
            Peer::Nats => {
                let port = free_port()?;
                vec![single(nats::prepare(dir, port)?, port)]
            }
            Peer::Redis => {
                let port = free_port()?;
                vec![single(redis::prepare(dir, port, durability)?, port)]
            }
        };
        let addresses: Vec<&str> = launches.iter().map(|l| l.address.as_str()).collect();
        let mut process = PeerProcess {
            peer,
            address: addresses.join(","),
            nodes: Vec::new(),
            log_path: log_path.to_path_buf(),
        };
        let node_count = launches.len();
        for (index, mut launch) in launches.into_iter().enumerate() {
            if let Some(cpus) = cpus {
                pin_to(&mut launch.command, cpus);
            }
            let label = if node_count == 1 {
                peer.name().to_string()
            } else {
                format!("{} node {}", peer.name(), index + 1)
            };
            // On an error here, `process` drops and kills the nodes started so far.
            let child =
                spawn_group_leader(launch.command, &launch.log_path, PEER_PARENT_DEATH_SIGNAL)?;
            process.nodes.push(PeerNode {
                label,
                address: launch.address,
                child: Some(child),
                log_path: launch.log_path,
            });
        }
        process.wait_until_accepting()?;
        Ok(process)
    }

    /// How many server processes the peer runs.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Waits until every node accepts connections, failing early if one exits.
    fn wait_until_accepting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        let mut waiting: Vec<usize> = (0..self.nodes.len()).collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for index in waiting {
                let node = &mut self.nodes[index];
                let address: SocketAddr = node
                    .address
                    .parse()
                    .map_err(|e| format!("{} address {}: {e}", node.label, node.address))?;
                if TcpStream::connect_timeout(&address, PEER_START_POLL).is_ok() {
                    continue;
                }
                if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                    let label = node.label.clone();
                    return Err(format!(
                        "{label} exited with {status} before accepting connections:\n{}",
                        self.log_tail()
                    ));
                }
                still.push(index);
            }
            if still.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let late: Vec<&str> = still
                    .iter()
                    .map(|&i| self.nodes[i].label.as_str())
                    .collect();
                return Err(format!(
                    "{} did not accept connections within {PEER_START_TIMEOUT:?}:\n{}",
                    late.join(", "),
                    self.log_tail()
                ));
            }
            std::thread::sleep(PEER_START_POLL);
            waiting = still;
        }
        Ok(())
    }

    /// Creates the run's topic where the loadgen's own creation would not do: the
    /// `kafka-cluster` peer's topic needs its replication (the loadgen creates Kafka topics
    /// with one replica, and uses a topic that already exists as it is); returns the
    /// topic's description. Other peers: nothing to do (`None`), the loadgen creates it.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        install: &PeerInstall,
    ) -> Result<Option<String>, String> {
        let Some(replication) = self.topic_replication() else {
            return Ok(None);
        };
        kafka_topic::create_replicated_topic(
            install,
            &self.address,
            topic,
            partitions,
            replication,
            &self.log_path,
        )
        .map(Some)
    }

    /// The replication the harness creates the peer's topics with, if it creates them.
    fn topic_replication(&self) -> Option<Replication> {
        (self.peer == Peer::KafkaCluster).then_some(Replication {
            factor: kafka::CLUSTER_REPLICATION_FACTOR,
            min_insync_replicas: kafka::CLUSTER_MIN_INSYNC_REPLICAS,
        })
    }

    /// The last lines of every node's log (each under its label when there are several).
    pub fn log_tail(&self) -> String {
        let tails: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                if self.nodes.len() == 1 {
                    tail
                } else {
                    format!(
                        "--- {} ({}) ---\n{tail}",
                        node.label,
                        node.log_path.display()
                    )
                }
            })
            .collect();
        tails.join("\n")
    }

    /// CPU seconds and peak RSS of the peer: for a cluster, the sums over its nodes (the
    /// RSS is then the sum of each node's peak, an upper bound of the cluster's).
    pub fn usage(&self) -> Result<ProcessUsage, String> {
        let mut total = ProcessUsage {
            cpu_s: 0.0,
            peak_rss_mib: 0.0,
        };
        for usage in self.node_usage()? {
            total.cpu_s += usage.cpu_s;
            total.peak_rss_mib += usage.peak_rss_mib;
        }
        Ok(total)
    }

    /// CPU seconds and peak RSS of every node so far, in node order.
    pub fn node_usage(&self) -> Result<Vec<ProcessUsage>, String> {
        self.nodes
            .iter()
            .map(|node| {
                let pid = node.child.as_ref().map(Child::id);
                process_usage(pid.ok_or_else(|| format!("{} is not running", node.label))?)
            })
            .collect()
    }

    /// SIGTERM to every node's process group, then waits for all (SIGKILL to the groups
    /// still there after `PEER_STOP_TIMEOUT`). A peer's exit status on SIGTERM varies (the
    /// JVM exits 143), so only a kill is an error.
    pub fn stop(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut running: Vec<(String, Child)> = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                if let Err(error) = signal_group(&child, libc::SIGTERM) {
                    errors.push(format!("SIGTERM to {}: {error}", node.label));
                }
                running.push((node.label.clone(), child));
            }
        }
        let deadline = Instant::now() + PEER_STOP_TIMEOUT;
        while !running.is_empty() {
            let mut still = Vec::new();
            for (label, mut child) in running {
                match child.try_wait() {
                    Ok(Some(_)) => {}
                    Ok(None) if Instant::now() > deadline => {
                        kill_and_reap(&mut child);
                        errors.push(format!(
                            "{label} ignored SIGTERM for {PEER_STOP_TIMEOUT:?}; killed"
                        ));
                    }
                    Ok(None) => still.push((label, child)),
                    Err(error) => {
                        kill_and_reap(&mut child);
                        errors.push(format!("waiting for {label}: {error}"));
                    }
                }
            }
            running = still;
            if !running.is_empty() {
                std::thread::sleep(PEER_STOP_POLL);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                kill_and_reap(&mut child);
            }
        }
    }
}

/// The nodes and ports of a Kafka peer, on ports free a moment ago.
fn kraft_layout(peer: Peer) -> Result<KraftLayout, String> {
    if peer == Peer::KafkaCluster {
        let ports = free_ports(2 * CLUSTER_NODES)?;
        let ports = ports.try_into().map_err(|p| format!("free ports {p:?}"))?;
        return Ok(KraftLayout::cluster(ports));
    }
    assert_eq!(peer, Peer::Kafka);
    let ports = free_ports(2)?;
    Ok(KraftLayout::single([ports[0], ports[1]]))
}

/// `count` distinct ports on 127.0.0.1 that were free a moment ago (all bound at once, so
/// none is handed out twice).
pub fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((LOOPBACK, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("finding {count} free ports: {e}"))?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|address| address.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("finding {count} free ports: {e}"))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    Ok(free_ports(1)?[0])
}

/// `program` on PATH, or an error saying how to install it.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{program} is not installed: run bench-harness/peers/install.sh"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set to run the tests that start real peers (installed by `install.sh`): tens of
    /// seconds and three JVMs, so never by default.
    const LIVE_PEERS_VARIABLE: &str = "SHARDLINE_BENCH_LIVE_PEERS";

    fn live_peers_wanted(test: &str) -> bool {
        let wanted = std::env::var_os(LIVE_PEERS_VARIABLE).is_some_and(|v| v == "1");
        if !wanted {
            eprintln!("{test}: skipped (set {LIVE_PEERS_VARIABLE}=1 to start real peers)");
        }
        wanted
    }

    #[test]
    fn a_kafka_cluster_starts_replicates_a_topic_and_stops_cleanly() {
        if !live_peers_wanted("a_kafka_cluster_starts_replicates_a_topic_and_stops_cleanly") {
            return;
        }
        let install = PeerInstall::from_env(kafka::KAFKA_VERSION_DEFAULT);
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let log_path = dir.path().join("kafka-cluster.log");
        let started = Instant::now();
        let mut cluster = PeerProcess::start(
            Peer::KafkaCluster,
            Durability::Fsync,
            &data,
            &log_path,
            &install,
            None,
        )
        .expect("the cluster starts");
        eprintln!(
            "3 nodes accepting after {:?}: {}",
            started.elapsed(),
            cluster.address
        );
        assert_eq!(cluster.node_count(), CLUSTER_NODES);
        assert_eq!(cluster.address.split(',').count(), CLUSTER_NODES);
        for node in &cluster.nodes {
            let pid = node.child.as_ref().expect("running").id();
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
            let arguments: Vec<&[u8]> = command_line.split(|&b| b == 0).collect();
            assert!(arguments.contains(&&b"-Xmx512m"[..]), "{}", node.label);
            assert!(node.log_path.is_file(), "{}", node.log_path.display());
        }
        let topic_started = Instant::now();
        let description = cluster
            .create_topic("live", 8, &install)
            .expect("a replicated topic")
            .expect("the harness makes the cluster's topic");
        eprintln!(
            "topic ready after {:?}:\n{description}",
            topic_started.elapsed()
        );
        let parsed = kafka_topic::parse_description(&description, "live").expect("parses");
        assert_eq!(parsed.replication_factor, kafka::CLUSTER_REPLICATION_FACTOR);
        let leaders: std::collections::BTreeSet<Option<u32>> =
            parsed.partitions.iter().map(|p| p.leader).collect();
        assert!(
            leaders.len() > 1,
            "leaders spread over the nodes: {leaders:?}"
        );
        let usage = cluster.usage().expect("usage");
        assert!(usage.peak_rss_mib > 0.0 && usage.cpu_s > 0.0, "{usage:?}");
        let nodes = cluster.node_usage().expect("usage per node");
        assert_eq!(nodes.len(), CLUSTER_NODES);
        assert!(nodes.iter().all(|node| node.cpu_s > 0.0), "{nodes:?}");
        let pids: Vec<u32> = cluster
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect();
        let stopping = Instant::now();
        cluster.stop().expect("every node stops on SIGTERM");
        eprintln!("stopped after {:?}", stopping.elapsed());
        for pid in pids {
            let pgid = libc::pid_t::try_from(pid).expect("a pid");
            // SAFETY: kill(2) with signal 0 only checks whether the group has a process.
            assert_ne!(
                unsafe { libc::kill(-pgid, 0) },
                0,
                "group {pid} outlived the stop"
            );
        }
        drop(cluster);
        dir.close().expect("temp dir removed");
    }

    #[test]
    fn free_ports_are_real_and_distinct() {
        assert!(free_port().expect("a port") > 0);
        let mut ports = free_ports(2 * CLUSTER_NODES).expect("ports");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2 * CLUSTER_NODES, "{ports:?}");
        assert!(ports.iter().all(|&port| port > 0));
    }

    #[test]
    fn stop_ends_the_whole_process_group_of_a_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("sh.log");
        // A shell that leaves a child in its group, as a launcher script would.
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 300 & echo child $!; wait"]);
        let child =
            spawn_group_leader(command, &log_path, PEER_PARENT_DEATH_SIGNAL).expect("starts");
        let leader = child.id();
        let mut process = PeerProcess {
            peer: Peer::Redis,
            address: format!("{LOOPBACK}:1"),
            nodes: vec![PeerNode {
                label: "sh".into(),
                address: format!("{LOOPBACK}:1"),
                child: Some(child),
                log_path: log_path.clone(),
            }],
            log_path: log_path.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: libc::pid_t = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(pid) = text.lines().find_map(|l| l.strip_prefix("child ")) {
                break pid.trim().parse().expect("a pid");
            }
            assert!(Instant::now() < deadline, "no child in:\n{text}");
            std::thread::sleep(PEER_STOP_POLL);
        };
        // SAFETY: getpgid(2) only reads a process's group.
        assert_eq!(unsafe { libc::getpgid(grandchild) }, leader as libc::pid_t);
        process.stop().expect("stops");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The grandchild is not ours to reap: it is gone once kill(pid, 0) fails or it is
        // a zombie waiting for init.
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let gone = stat.map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sleep {grandchild} outlived the stop"
            );
            std::thread::sleep(PEER_STOP_POLL);
        }
    }
}
