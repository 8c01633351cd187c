//! `shardline cluster status`: the controller quorum, the brokers and the partitions that
//! lack replicas or a leader. `shardline cluster local`: a cluster of brokers on loopback
//! in one command.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client_tools::{error_text, BrokerArg, FormatArg};
use crate::client::Admin;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The nodes (alive or not), the controller leader and its term, and the
    /// under-replicated and offline partitions.
    Status {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
    },
    /// Start a cluster of brokers on loopback (every one a controller voter) and run it
    /// until Ctrl-C.
    Local(LocalArgs),
}

#[derive(Args)]
pub struct LocalArgs {
    /// How many brokers: 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Node i keeps its data in DIR/node-i.
    #[arg(long)]
    data_dir: PathBuf,
    /// Node i listens for clients on BASE+i and for its controller peers on BASE+100+i.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Shards per broker (each broker is unpinned: they share this machine's cores).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// A tuning profile for every broker.
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// One partition that lacks something.
#[derive(serde::Serialize)]
struct PartitionIssue {
    topic: String,
    partition: u32,
    leader: Option<u32>,
    replicas: Vec<u32>,
    in_sync: Vec<u32>,
}

#[derive(serde::Serialize)]
struct StatusReport {
    answered_by: u32,
    controller_leader: Option<u32>,
    controller_term: u64,
    committed_index: u64,
    applied_index: u64,
    snapshot_index: u64,
    nodes: Vec<NodeReport>,
    under_replicated: Vec<PartitionIssue>,
    offline: Vec<PartitionIssue>,
}

#[derive(serde::Serialize)]
struct NodeReport {
    node: u32,
    address: String,
    voter: bool,
    alive: bool,
    registered: bool,
}

pub fn run_cluster(command: ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Status { broker, format } => {
            super::run_on_executor(move || async move { status(&broker, format).await })
        }
        ClusterCommand::Local(args) => local(args),
    }
}

async fn status(broker: &super::client_tools::BrokerArg, format: FormatArg) -> Result<(), String> {
    let cluster = broker.cluster(false)?;
    let admin = Admin::new(cluster.clone());
    let described = admin.describe_cluster().await.map_err(error_text)?;
    let metadata = cluster.refresh_metadata().await.map_err(error_text)?;
    let alive = |node: u32| described.nodes.iter().any(|n| n.node == node && n.alive);
    let mut under_replicated = Vec::new();
    let mut offline = Vec::new();
    for topic in &metadata.topics {
        for partition in &topic.partitions {
            let issue = || PartitionIssue {
                topic: topic.name.clone(),
                partition: partition.partition,
                leader: partition.leader_broker,
                replicas: partition.replicas.clone(),
                in_sync: partition.in_sync_replicas.clone(),
            };
            if partition.leader_broker.is_none_or(|l| !alive(l)) {
                offline.push(issue());
            } else if partition.in_sync_replicas.len() < partition.replicas.len() {
                under_replicated.push(issue());
            }
        }
    }
    let report = StatusReport {
        answered_by: described.answered_by,
        controller_leader: described.controller_leader,
        controller_term: described.controller_term,
        committed_index: described.committed_index,
        applied_index: described.applied_index,
        snapshot_index: described.snapshot_index,
        nodes: described
            .nodes
            .iter()
            .map(|n| NodeReport {
                node: n.node,
                address: format!("{}:{}", n.host, n.port),
                voter: n.voter,
                alive: n.alive,
                registered: n.registered,
            })
            .collect(),
        under_replicated,
        offline,
    };
    if format == FormatArg::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(error_text)?
        );
        return Ok(());
    }
    let leader = report.controller_leader.map_or_else(
        || "none (election under way?)".to_string(),
        |l| l.to_string(),
    );
    println!(
        "controller leader: node {leader}, term {} (answered by node {}; committed {}, applied {}, snapshot at {})",
        report.controller_term,
        report.answered_by,
        report.committed_index,
        report.applied_index,
        report.snapshot_index
    );
    println!("node\taddress\tvoter\tstate");
    for node in &report.nodes {
        let state = match (node.registered, node.alive) {
            (false, _) => "never registered",
            (true, true) => "alive",
            (true, false) => "dead (fenced)",
        };
        println!(
            "{}\t{}\t{}\t{state}",
            node.node,
            node.address,
            if node.voter { "yes" } else { "no" }
        );
    }
    let list = |ids: &[u32]| {
        ids.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "under-replicated partitions: {}",
        report.under_replicated.len()
    );
    for p in &report.under_replicated {
        println!(
            "  {}/{}: replicas {}, in sync {}",
            p.topic,
            p.partition,
            list(&p.replicas),
            list(&p.in_sync)
        );
    }
    println!("offline partitions: {}", report.offline.len());
    for p in &report.offline {
        println!(
            "  {}/{}: leader {:?}, replicas {}",
            p.topic,
            p.partition,
            p.leader,
            list(&p.replicas)
        );
    }
    Ok(())
}

/// Stops every child with SIGTERM and waits for it.
fn stop_all(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter() {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    for (node, child) in children.iter_mut() {
        match child.wait() {
            Ok(status) => println!("node {node} stopped ({status})"),
            Err(error) => eprintln!("node {node}: {error}"),
        }
    }
}

fn local(args: LocalArgs) -> Result<(), String> {
    if !matches!(args.brokers, 1 | 3 | 5) {
        return Err(format!(
            "--brokers {}: a controller quorum has 1, 3 or 5 voters",
            args.brokers
        ));
    }
    let last = u32::from(args.base_port) + 100 + args.brokers;
    if last > u32::from(u16::MAX) {
        return Err(format!(
            "--base-port {} leaves no room for the ports",
            args.base_port
        ));
    }
    let program = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let voters: Vec<String> = (0..args.brokers)
        .map(|i| format!("{i}@127.0.0.1:{}", u32::from(args.base_port) + 100 + i))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(error_text)?;
    }
    let mut children: Vec<(u32, Child)> = Vec::new();
    for i in 0..args.brokers {
        let dir = args.data_dir.join(format!("node-{i}"));
        let listen = format!("127.0.0.1:{}", u32::from(args.base_port) + i);
        let mut command = Command::new(&program);
        command
            .arg("broker")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(&listen)
            .arg("--node-id")
            .arg(i.to_string())
            .arg("--controller-voters")
            .arg(voters.join(","))
            .arg("--cores")
            .arg(args.cores.to_string())
            .arg("--no-pin");
        if let Some(profile) = &args.profile {
            command.arg("--profile").arg(profile);
        }
        match command.spawn() {
            Ok(child) => {
                println!(
                    "node {i}: clients on {listen}, controller on 127.0.0.1:{}, data in {}",
                    u32::from(args.base_port) + 100 + i,
                    dir.display()
                );
                children.push((i, child));
            }
            Err(error) => {
                stop_all(&mut children);
                return Err(format!("cannot start node {i}: {error}"));
            }
        }
    }
    let bootstrap: Vec<String> = (0..args.brokers)
        .map(|i| format!("127.0.0.1:{}", u32::from(args.base_port) + i))
        .collect();
    println!("bootstrap brokers: {}", bootstrap.join(","));
    println!("Ctrl-C stops every node.");
    let mut failed = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for (node, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                failed = Some(format!("node {node} exited ({status})"));
            }
        }
        if failed.is_some() {
            break;
        }
    }
    stop_all(&mut children);
    match failed {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}
