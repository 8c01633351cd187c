//! Apache Kafka 4.x in KRaft mode, run from the jars `install.sh` resolved from Maven
//! Central (`kafka_2.13` and its runtime dependencies) with `java -cp 'libs/*'`:
//! `kafka.tools.StorageTool format` for every node, then `kafka.Kafka server.properties`.
//!
//! Two layouts, both on loopback, every node a combined broker and controller:
//!
//! - `kafka`: one node, the only voter of the metadata quorum; topics of 1 replica.
//! - `kafka-cluster`: `CLUSTER_NODES` nodes, all voters of one static quorum
//!   (`controller.quorum.voters`), their storage formatted with the one `CLUSTER_ID`;
//!   topics of `CLUSTER_REPLICATION_FACTOR` replicas with `min.insync.replicas` at
//!   `CLUSTER_MIN_INSYNC_REPLICAS` (the topic itself is created by `kafka_topic`).
//!
//! Every node has its own directory `<dir>/node-<id>/` (its `server.properties` and its
//! `kafka-logs/`, which also holds the metadata log) and its own broker and controller
//! ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{spawn_logged, Durability, NodeLaunch, PeerInstall};

/// The Kafka release install.sh fetches by default (`KAFKA_VERSION` there, `--kafka-version`
/// here).
pub const KAFKA_VERSION_DEFAULT: &str = "4.1.1";
/// A fixed KRaft cluster id: base64url (no padding) of the 16 bytes "shardline-bench1".
/// Every node of a cluster is formatted with it.
const CLUSTER_ID: &str = "c2hhcmRsaW5lLWJlbmNoMQ";
/// The interface every node listens on.
const LOOPBACK: &str = "127.0.0.1";
/// The node id of the first node; the others follow.
const NODE_ID_FIRST: u32 = 1;

/// Nodes of the `kafka-cluster` peer.
pub const CLUSTER_NODES: usize = 3;
/// Replicas of every partition of the `kafka-cluster` peer's topics, internal ones too.
pub const CLUSTER_REPLICATION_FACTOR: u32 = 3;
/// In-sync replicas an `acks=all` produce needs on the `kafka-cluster` peer.
pub const CLUSTER_MIN_INSYNC_REPLICAS: u32 = 2;
/// JVM heap of the single node: Kafka's own `kafka-server-start.sh` default (1 GiB).
const SINGLE_NODE_HEAP_MIB: u32 = 1024;
/// JVM heap of each cluster node: three JVMs share a 2-core, 24 GiB machine with shardline
/// and the load generator (an idle node's RSS is about 350 MiB with this heap).
const CLUSTER_NODE_HEAP_MIB: u32 = 512;
/// The most heap all of the cluster's JVMs together may ask for.
const CLUSTER_HEAP_MIB_MAX: u32 = 2048;
/// JVM flags besides the heap: those of Kafka's own `kafka-run-class.sh` (GC, headless).
const JVM_FLAGS: [&str; 6] = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];
/// The marker install.sh leaves once every jar is in place.
const COMPLETE_MARKER: &str = ".complete";

const _: () = assert!(CLUSTER_ID.len() == 22);
// acks=all keeps answering with one replica down, and a majority of voters survives it.
const _: () = assert!(CLUSTER_MIN_INSYNC_REPLICAS < CLUSTER_REPLICATION_FACTOR);
const _: () = assert!(CLUSTER_MIN_INSYNC_REPLICAS > CLUSTER_REPLICATION_FACTOR / 2);
const _: () = assert!(CLUSTER_REPLICATION_FACTOR as usize <= CLUSTER_NODES);
const _: () = assert!(CLUSTER_NODE_HEAP_MIB * CLUSTER_NODES as u32 <= CLUSTER_HEAP_MIB_MAX);

/// The jar directory of `install`'s Kafka version, or how to get it.
pub fn libs_dir(install: &PeerInstall) -> Result<PathBuf, String> {
    let libs = install
        .cache_dir
        .join(format!("kafka-{}", install.kafka_version))
        .join("libs");
    if libs.join(COMPLETE_MARKER).is_file() {
        Ok(libs)
    } else {
        Err(format!(
            "Kafka {} is not installed in {}: run `KAFKA_VERSION={} \
             bench-harness/peers/install.sh kafka`",
            install.kafka_version,
            libs.display(),
            install.kafka_version
        ))
    }
}

/// `java` and the classpath of `install`'s jars.
pub fn java_and_classpath(install: &PeerInstall) -> Result<(PathBuf, String), String> {
    let libs = libs_dir(install)?;
    let java = super::find_program("java")?;
    Ok((java, format!("{}/*", libs.display())))
}

/// How many replicas a topic gets and how many must be in sync for `acks=all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub factor: u32,
    pub min_insync_replicas: u32,
}

/// One node on loopback: its id (also its voter id) and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KraftNode {
    pub node_id: u32,
    /// Clients and the other brokers (replica fetches) connect here.
    pub broker_port: u16,
    /// The metadata quorum (Raft) talks here.
    pub controller_port: u16,
}

impl KraftNode {
    pub fn broker_address(&self) -> String {
        format!("{LOOPBACK}:{}", self.broker_port)
    }

    /// `<dir>/node-<id>`: the node's configuration and logs.
    pub fn dir(&self, dir: &Path) -> PathBuf {
        dir.join(format!("node-{}", self.node_id))
    }
}

/// A KRaft deployment on loopback: every node a combined broker and controller and a voter
/// of the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KraftLayout {
    pub nodes: Vec<KraftNode>,
    pub replication: Replication,
    pub heap_mib: u32,
}

impl KraftLayout {
    /// The `kafka` peer: one node, topics of one replica. `ports`: broker, controller.
    pub fn single(ports: [u16; 2]) -> KraftLayout {
        let replication = Replication {
            factor: 1,
            min_insync_replicas: 1,
        };
        KraftLayout::from_ports(&ports, replication, SINGLE_NODE_HEAP_MIB)
    }

    /// The `kafka-cluster` peer. `ports`: each node's broker port, then its controller
    /// port, node by node.
    pub fn cluster(ports: [u16; 2 * CLUSTER_NODES]) -> KraftLayout {
        let replication = Replication {
            factor: CLUSTER_REPLICATION_FACTOR,
            min_insync_replicas: CLUSTER_MIN_INSYNC_REPLICAS,
        };
        KraftLayout::from_ports(&ports, replication, CLUSTER_NODE_HEAP_MIB)
    }

    fn from_ports(ports: &[u16], replication: Replication, heap_mib: u32) -> KraftLayout {
        assert!(
            !ports.is_empty() && ports.len() % 2 == 0,
            "two ports per node: {ports:?}"
        );
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            ports.len(),
            "ports must be distinct: {ports:?}"
        );
        let nodes: Vec<KraftNode> = ports
            .chunks_exact(2)
            .zip(NODE_ID_FIRST..)
            .map(|(pair, node_id)| KraftNode {
                node_id,
                broker_port: pair[0],
                controller_port: pair[1],
            })
            .collect();
        assert!(
            replication.factor as usize <= nodes.len()
                && replication.min_insync_replicas <= replication.factor,
            "{replication:?} on {} nodes",
            nodes.len()
        );
        KraftLayout {
            nodes,
            replication,
            heap_mib,
        }
    }

    /// `controller.quorum.voters`: `id@host:controller_port` of every node.
    pub fn quorum_voters(&self) -> String {
        let voters: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}@{LOOPBACK}:{}", node.node_id, node.controller_port))
            .collect();
        voters.join(",")
    }

    /// The clients' `bootstrap.servers`: every node's broker address.
    pub fn bootstrap_servers(&self) -> String {
        let addresses: Vec<String> = self.nodes.iter().map(KraftNode::broker_address).collect();
        addresses.join(",")
    }

    /// The JVM's flags for each node: a fixed heap of `heap_mib`, then `JVM_FLAGS`.
    pub fn jvm_flags(&self) -> Vec<String> {
        let heap = [
            format!("-Xms{}m", self.heap_mib),
            format!("-Xmx{}m", self.heap_mib),
        ];
        heap.into_iter()
            .chain(JVM_FLAGS.iter().map(|flag| flag.to_string()))
            .collect()
    }
}

/// `server.properties` of `node` of `layout`, with its logs under `node_dir`.
pub fn server_properties(
    layout: &KraftLayout,
    node: &KraftNode,
    node_dir: &Path,
    durability: Durability,
) -> String {
    let Replication {
        factor,
        min_insync_replicas,
    } = layout.replication;
    let mut text = format!(
        "process.roles=broker,controller\n\
         node.id={}\n\
         controller.quorum.voters={}\n\
         listeners=PLAINTEXT://{LOOPBACK}:{},CONTROLLER://{LOOPBACK}:{}\n\
         advertised.listeners=PLAINTEXT://{}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         log.dirs={}\n\
         num.partitions=1\n\
         default.replication.factor={factor}\n\
         min.insync.replicas={min_insync_replicas}\n\
         offsets.topic.replication.factor={factor}\n\
         transaction.state.log.replication.factor={factor}\n\
         transaction.state.log.min.isr={min_insync_replicas}\n\
         share.coordinator.state.topic.replication.factor={factor}\n\
         share.coordinator.state.topic.min.isr={min_insync_replicas}\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n",
        node.node_id,
        layout.quorum_voters(),
        node.broker_port,
        node.controller_port,
        node.broker_address(),
        node_dir.join("kafka-logs").display()
    );
    if durability == Durability::Fsync {
        text.push_str("log.flush.interval.messages=1\n");
    }
    text
}

/// The log of node `node_id` of `node_count`: `log_path` itself for a single node, else
/// `<stem>-node<id>.<extension>` beside it.
pub fn node_log_path(log_path: &Path, node_id: u32, node_count: usize) -> PathBuf {
    if node_count == 1 {
        return log_path.to_path_buf();
    }
    let stem = log_path
        .file_stem()
        .map_or("kafka".into(), |stem| stem.to_string_lossy());
    let name = match log_path.extension() {
        Some(extension) => format!("{stem}-node{node_id}.{}", extension.to_string_lossy()),
        None => format!("{stem}-node{node_id}"),
    };
    log_path.with_file_name(name)
}

/// Writes every node's configuration, formats every node's storage with `CLUSTER_ID` (the
/// formats run side by side) and returns each node's server command, address and log.
pub fn prepare(
    dir: &Path,
    layout: &KraftLayout,
    durability: Durability,
    install: &PeerInstall,
    log_path: &Path,
) -> Result<Vec<NodeLaunch>, String> {
    let (java, classpath) = java_and_classpath(install)?;
    let mut launches = Vec::new();
    let mut formats = Vec::new();
    for node in &layout.nodes {
        let node_dir = node.dir(dir);
        std::fs::create_dir_all(&node_dir)
            .map_err(|e| format!("creating {}: {e}", node_dir.display()))?;
        let properties = node_dir.join("server.properties");
        std::fs::write(
            &properties,
            server_properties(layout, node, &node_dir, durability),
        )
        .map_err(|e| format!("writing {}: {e}", properties.display()))?;
        let node_log = node_log_path(log_path, node.node_id, layout.nodes.len());
        let mut format = Command::new(&java);
        format
            .arg("-cp")
            .arg(&classpath)
            .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
            .arg(&properties);
        formats.push((
            node.node_id,
            spawn_logged(format, &node_log)?,
            node_log.clone(),
        ));
        let mut server = Command::new(&java);
        server
            .args(layout.jvm_flags())
            .arg("-cp")
            .arg(&classpath)
            .arg("kafka.Kafka")
            .arg(&properties);
        launches.push(NodeLaunch {
            command: server,
            address: node.broker_address(),
            log_path: node_log,
        });
    }
    for (node_id, mut format, node_log) in formats {
        let status = format
            .wait()
            .map_err(|e| format!("waiting for Kafka node {node_id}'s storage format: {e}"))?;
        if !status.success() {
            return Err(format!(
                "Kafka node {node_id}'s storage format exited with {status} (log: {})",
                node_log.display()
            ));
        }
    }
    Ok(launches)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The key-value pairs of a properties text; a key set twice is a failure (Kafka
    /// would silently take the last one).
    fn properties(text: &str) -> HashMap<&str, &str> {
        let mut map = HashMap::new();
        for line in text.lines() {
            let (key, value) = line.split_once('=').expect("key=value");
            assert!(map.insert(key, value).is_none(), "{key} twice:\n{text}");
        }
        map
    }

    fn cluster() -> KraftLayout {
        KraftLayout::cluster([9100, 9101, 9102, 9103, 9104, 9105])
    }

    #[test]
    fn server_properties_are_one_kraft_node_on_loopback_and_fsync_only_when_asked() {
        let layout = KraftLayout::single([9092, 9093]);
        let node = &layout.nodes[0];
        let text = server_properties(&layout, node, Path::new("/tmp/k"), Durability::Fsync);
        for line in [
            "process.roles=broker,controller",
            "node.id=1",
            "controller.quorum.voters=1@127.0.0.1:9093",
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            "log.dirs=/tmp/k/kafka-logs",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "log.flush.interval.messages=1",
            "auto.create.topics.enable=false",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        properties(&text);
        let default = server_properties(&layout, node, Path::new("/tmp/k"), Durability::NoFsync);
        assert!(!default.contains("log.flush"), "{default}");
        assert_eq!(layout.bootstrap_servers(), "127.0.0.1:9092");
        assert!(layout.jvm_flags().contains(&"-Xmx1024m".to_string()));
    }

    #[test]
    fn cluster_nodes_share_one_quorum_of_three_voters_on_their_controller_ports() {
        let layout = cluster();
        assert_eq!(layout.nodes.len(), CLUSTER_NODES);
        assert_eq!(
            layout.quorum_voters(),
            "1@127.0.0.1:9101,2@127.0.0.1:9103,3@127.0.0.1:9105"
        );
        assert_eq!(
            layout.bootstrap_servers(),
            "127.0.0.1:9100,127.0.0.1:9102,127.0.0.1:9104"
        );
        for node in &layout.nodes {
            let text = server_properties(
                &layout,
                node,
                &node.dir(Path::new("/tmp/c")),
                Durability::NoFsync,
            );
            let map = properties(&text);
            assert_eq!(
                map["controller.quorum.voters"],
                layout.quorum_voters(),
                "{text}"
            );
            assert_eq!(map["process.roles"], "broker,controller");
        }
    }

    #[test]
    fn each_cluster_node_has_its_own_id_ports_and_log_dir() {
        let layout = cluster();
        let expected = [
            (1, 9100, 9101, "/tmp/c/node-1/kafka-logs"),
            (2, 9102, 9103, "/tmp/c/node-2/kafka-logs"),
            (3, 9104, 9105, "/tmp/c/node-3/kafka-logs"),
        ];
        for (node, (id, broker, controller, logs)) in layout.nodes.iter().zip(expected) {
            let text = server_properties(
                &layout,
                node,
                &node.dir(Path::new("/tmp/c")),
                Durability::Fsync,
            );
            let map = properties(&text);
            assert_eq!(map["node.id"], id.to_string(), "{text}");
            assert_eq!(
                map["listeners"],
                format!("PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}"),
                "{text}"
            );
            assert_eq!(
                map["advertised.listeners"],
                format!("PLAINTEXT://127.0.0.1:{broker}"),
                "{text}"
            );
            assert_eq!(map["log.dirs"], logs, "{text}");
            assert_eq!(map["log.flush.interval.messages"], "1", "{text}");
        }
    }

    #[test]
    fn cluster_topics_replicate_three_times_and_acks_all_needs_two_in_sync() {
        let layout = cluster();
        let node = &layout.nodes[1];
        let text = server_properties(&layout, node, Path::new("/tmp/c"), Durability::NoFsync);
        let map = properties(&text);
        for (key, value) in [
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("offsets.topic.replication.factor", "3"),
            ("transaction.state.log.replication.factor", "3"),
            ("transaction.state.log.min.isr", "2"),
            ("share.coordinator.state.topic.replication.factor", "3"),
            ("share.coordinator.state.topic.min.isr", "2"),
            ("auto.create.topics.enable", "false"),
        ] {
            assert_eq!(map[key], value, "{key}:\n{text}");
        }
        assert!(!map.contains_key("log.flush.interval.messages"), "{text}");
    }

    #[test]
    fn cluster_jvms_have_a_small_fixed_heap() {
        let flags = cluster().jvm_flags();
        assert_eq!(flags[..2], ["-Xms512m", "-Xmx512m"]);
        assert_eq!(flags.iter().filter(|f| f.starts_with("-Xmx")).count(), 1);
        assert!(flags.contains(&"-XX:+UseG1GC".to_string()));
    }

    #[test]
    #[should_panic(expected = "ports must be distinct")]
    fn a_layout_refuses_a_port_twice() {
        KraftLayout::cluster([9100, 9101, 9102, 9101, 9104, 9105]);
    }

    #[test]
    fn cluster_nodes_log_beside_the_peer_log() {
        let log = Path::new("/r/runs/kafka-cluster/x/kafka-cluster.log");
        assert_eq!(
            node_log_path(log, 2, CLUSTER_NODES),
            Path::new("/r/runs/kafka-cluster/x/kafka-cluster-node2.log")
        );
        assert_eq!(node_log_path(log, 1, 1), log);
    }

    #[test]
    fn a_missing_install_says_how_to_install() {
        let install = PeerInstall {
            kafka_version: "4.1.1".into(),
            cache_dir: PathBuf::from("/nonexistent"),
        };
        let error = libs_dir(&install).expect_err("not installed");
        assert!(error.contains("install.sh kafka"), "{error}");
    }
}
