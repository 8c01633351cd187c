//! A peer cluster beside a replicated scenario's shardline clusters (`--scenario
//! replicated --peers kafka-cluster`): Kafka at the same setting, 3 KRaft nodes with the
//! scenario's topic at replication factor 3 and `min.insync.replicas=2`, producers with
//! `acks=all`. It gets the scenario's load and runs, each on a fresh cluster, a `half-max`
//! run at half of what the same peer reached at `max`; its nodes run where shardline's
//! brokers ran (the brokers' CPUs when pinned); each node's CPU and the loadgen's are read
//! over the load only, as for shardline's clusters. `replicated_peer_report` sets it beside
//! the shardline cluster of the same shape.
//!
//! The peer runs in the `fsync` class. Every shardline profile answers `acks=all` only once
//! every in-sync replica holds the batch durably under its flush policy, and every profile
//! fdatasyncs before that (the high watermark is the lowest offset every in-sync replica has
//! synced). Kafka's match is `log.flush.interval.messages=1` on every node: every replica
//! fsyncs every append, and `acks=all` answers once every in-sync replica has appended it.
//!
//! When the peer cannot run here (a loadgen built without the peer drivers, Kafka not
//! installed), each of its runs is recorded as skipped with the reason, and the scenario's
//! shardline runs stand as they are.

use crate::broker::DataDir;
use crate::comparison::resolve_rate;
use crate::loadgen::loadgen_drives;
use crate::peers::{peer_setting, Durability, Peer, PeerInstall, PeerProcess};
use crate::replicated::measure_load;
use crate::results::{ClusterRun, RunResult};
use crate::scenario::{RunSpec, PEER_CLUSTER_ACKS};
use crate::session::Session;

/// The durability class a peer cluster runs in beside shardline's `acks=all` clusters.
pub const PEER_CLUSTER_DURABILITY: Durability = Durability::Fsync;

/// Every run of `peer` (a peer that replicates), in the scenario's order.
pub fn run_all(session: &Session, peer: Peer, install: &PeerInstall) -> Vec<RunResult> {
    let scenario = session.scenario;
    let spec = peer
        .cluster_spec()
        .unwrap_or_else(|| panic!("{peer:?}: the scenario admits only peers that replicate"));
    let setting = peer_setting(peer, PEER_CLUSTER_DURABILITY);
    let runnable = setting
        .clone()
        .and_then(|_| loadgen_drives(session.loadgen(), peer.system()))
        .and_then(|()| install.check(peer));
    if let Err(reason) = &runnable {
        session.progress(&format!("{}: skipped: {reason}", peer.name()));
    }
    let mut results = Vec::new();
    let mut earlier: Vec<RunResult> = Vec::new();
    for run in &scenario.runs {
        let mut result =
            session.empty_result_labelled(peer.name(), &run.label(), run, &scenario.topic);
        result.system = peer.system().into();
        result.acks = PEER_CLUSTER_ACKS.into();
        result.durability = Some(PEER_CLUSTER_DURABILITY.name().into());
        result.durability_setting = setting.clone().ok();
        result.cluster = Some(ClusterRun {
            spec: spec.clone(),
            ..ClusterRun::default()
        });
        if let Err(reason) = &runnable {
            result.skipped = Some(reason.clone());
            results.push(result);
            continue;
        }
        match resolve_rate(run, &earlier) {
            Ok(run) => {
                result.rate = run.rate.clone();
                peer_cluster_run(session, &mut result, peer, install, &run);
            }
            Err(error) => result.errors.push(error),
        }
        earlier.push(result.clone());
        results.push(result);
    }
    results
}

/// Into `result`: a fresh peer cluster, its replicated topic, one loadgen run against every
/// node, each node's CPU during the load, a stop.
fn peer_cluster_run(
    session: &Session,
    result: &mut RunResult,
    peer: Peer,
    install: &PeerInstall,
    run: &RunSpec,
) {
    let label = format!("{} [{}]", peer.name(), PEER_CLUSTER_DURABILITY.name());
    session.progress(&format!("{label} run {}: starting the cluster", result.run));
    let run_dir = session.run_dir(result);
    if let Err(error) = std::fs::create_dir_all(&run_dir) {
        result
            .errors
            .push(format!("creating {}: {error}", run_dir.display()));
        return;
    }
    // Declared before the server, so dropped (removed) after it stopped.
    let data = match DataDir::create(
        &session.data_parent,
        &format!("{}-{}", peer.name(), result.run),
    ) {
        Ok(data) => data,
        Err(error) => {
            result.errors.push(error);
            return;
        }
    };
    let log_path = run_dir.join(format!("{}.log", peer.name()));
    let mut server = match PeerProcess::start(
        peer,
        PEER_CLUSTER_DURABILITY,
        &data.0,
        &log_path,
        install,
        session.broker_cpus(),
    ) {
        Ok(server) => server,
        Err(error) => {
            result.errors.push(error);
            return;
        }
    };
    if let Some(cluster) = result.cluster.as_mut() {
        cluster.bootstrap = server.address.clone();
    }
    let partitions = session.scenario.partitions;
    match server.create_topic(&result.topic, partitions, install) {
        Ok(Some(description)) => {
            session.progress(&format!(
                "{label} run {}: topic {} ready on {}:\n{}",
                result.run,
                result.topic,
                server.address,
                description.trim_end()
            ));
            let usage = || server.node_usage();
            measure_load(session, &server.address, usage, result, &label, run);
        }
        Ok(None) => result.errors.push(format!(
            "{} made no replicated topic: the harness makes a peer cluster's topic",
            peer.name()
        )),
        Err(error) => result.errors.push(error),
    }
    if !result.errors.is_empty() {
        result
            .errors
            .push(format!("{} log tail:\n{}", peer.name(), server.log_tail()));
    }
    if let Err(error) = server.stop() {
        result.errors.push(error);
    }
    drop(data);
    session.progress(&format!("{label} run {}: done", result.run));
}
