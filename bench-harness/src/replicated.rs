//! Replicated scenarios: the same load against each cluster of `[replication]` in turn
//! (one broker with topics of one replica, three brokers with three ...), every run on a
//! fresh `shardline cluster local` with the scenario's topic created by the harness with
//! the cluster's replication factor and `min.insync.replicas`. A `half-max` run takes half
//! of what the same cluster reached in its `max` run. Then each peer cluster of the
//! scenario (`--peers kafka-cluster`) gets the same runs (`replicated_peer`).

use std::path::Path;

use crate::broker::{DataDir, ProcessUsage};
use crate::cluster::{admin, ClusterLaunch, LocalCluster};
use crate::comparison::resolve_rate;
use crate::peers::{Peer, PeerInstall};
use crate::replicated_peer;
use crate::results::{ClusterRun, RunResult};
use crate::scenario::{ClusterSpec, Replication, RunSpec};
use crate::session::Session;

const MICROS_PER_SECOND: f64 = 1_000_000.0;

/// Every (profile, cluster, run) of the session's replicated scenario, in that order, then
/// every run of each of `peers` (peer clusters, each once whatever the profiles).
pub fn run_all(
    session: &Session,
    replication: &Replication,
    peers: &[Peer],
    install: &PeerInstall,
) -> Vec<RunResult> {
    let scenario = session.scenario;
    let mut results = Vec::new();
    for profile in &scenario.profiles {
        for spec in &replication.clusters {
            let label = spec.label(profile);
            let mut earlier: Vec<RunResult> = Vec::new();
            for run in &scenario.runs {
                let mut result =
                    session.empty_result_labelled(&label, &run.label(), run, &scenario.topic);
                result.cluster = Some(ClusterRun {
                    tuning_profile: profile.clone(),
                    spec: spec.clone(),
                    cores_per_broker: replication.cores_per_broker,
                    ..ClusterRun::default()
                });
                match resolve_rate(run, &earlier) {
                    Ok(run) => {
                        result.rate = run.rate.clone();
                        cluster_run(session, &mut result, &run);
                    }
                    Err(error) => result.errors.push(error),
                }
                earlier.push(result.clone());
                results.push(result);
            }
        }
    }
    for &peer in peers {
        results.extend(replicated_peer::run_all(session, peer, install));
    }
    results
}

/// User plus system CPU seconds of this process's children that have been waited for
/// (the loadgen, once it exited), from getrusage(RUSAGE_CHILDREN).
pub fn waited_children_cpu_s() -> f64 {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds =
        |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / MICROS_PER_SECOND;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Into `result`: a fresh cluster, the topic, one loadgen run against every broker, each
/// broker's CPU during the load, a clean stop.
fn cluster_run(session: &Session, result: &mut RunResult, run: &RunSpec) {
    let cluster_run = result
        .cluster
        .clone()
        .expect("a replicated run has its cluster");
    let spec = &cluster_run.spec;
    let label = format!("{} ({} brokers)", result.profile, spec.brokers);
    session.progress(&format!("{label} run {}: starting the cluster", result.run));
    let run_dir = session.run_dir(result);
    if let Err(error) = std::fs::create_dir_all(&run_dir) {
        result
            .errors
            .push(format!("creating {}: {error}", run_dir.display()));
        return;
    }
    // Declared before the cluster, so dropped (removed) after it stopped.
    let data = match DataDir::create(
        &session.data_parent,
        &format!("{}-{}", result.profile, result.run),
    ) {
        Ok(data) => data,
        Err(error) => {
            result.errors.push(error);
            return;
        }
    };
    let launch = ClusterLaunch {
        brokers: spec.brokers,
        data_dir: data.0.clone(),
        base_port: 0,
        cores_per_broker: cluster_run.cores_per_broker,
        profile: session.profile_path(&cluster_run.tuning_profile),
    };
    let cpus = session.broker_cpus();
    let admin_log = run_dir.join("cluster-admin.log");
    let mut cluster = match LocalCluster::start(
        session.shardline(),
        &launch,
        cpus,
        &run_dir.join("cluster.log"),
        &admin_log,
    ) {
        Ok(cluster) => cluster,
        Err(error) => {
            result.errors.push(error);
            return;
        }
    };
    if let Some(cluster_run) = result.cluster.as_mut() {
        cluster_run.bootstrap = cluster.bootstrap.clone();
    }
    let topic = create_topic(session, &cluster, result, spec, &admin_log);
    if let Err(error) = topic {
        result.errors.push(error);
    } else {
        let usage = || cluster.usage();
        measure_load(session, &cluster.bootstrap, usage, result, &label, run);
    }
    if !result.errors.is_empty() {
        result
            .errors
            .push(format!("cluster log tail:\n{}", cluster.log_tail()));
    }
    if let Err(error) = cluster.stop() {
        result.errors.push(error);
    }
    drop(data);
    session.progress(&format!("{label} run {}: done", result.run));
}

/// The scenario's topic on `cluster`, replicated as `spec` says, every replica in sync.
fn create_topic(
    session: &Session,
    cluster: &LocalCluster,
    result: &RunResult,
    spec: &ClusterSpec,
    admin_log: &Path,
) -> Result<(), String> {
    let description = admin::create_replicated_topic(
        session.shardline(),
        &cluster.bootstrap,
        &result.topic,
        session.scenario.partitions,
        spec,
        admin_log,
    )?;
    session.progress(&format!(
        "{} run {}: topic {} ready on {}:\n{}",
        result.profile,
        result.run,
        result.topic,
        cluster.bootstrap,
        description.trim_end()
    ));
    Ok(())
}

/// One loadgen run against the cluster at `bootstrap`, with every node's CPU (`usage`, node
/// by node) and the loadgen's over it.
pub fn measure_load(
    session: &Session,
    bootstrap: &str,
    usage: impl Fn() -> Result<Vec<ProcessUsage>, String>,
    result: &mut RunResult,
    label: &str,
    run: &RunSpec,
) {
    let before = usage();
    let loadgen_before = waited_children_cpu_s();
    session.load(result, bootstrap, label, run);
    let loadgen_cpu_s = waited_children_cpu_s() - loadgen_before;
    match (before, usage()) {
        (Ok(before), Ok(after)) => set_cluster_usage(result, &before, &after, loadgen_cpu_s),
        (Err(error), _) | (_, Err(error)) => result.errors.push(error),
    }
}

/// Each broker's CPU between `before` and `after`, their sum, the sum of their peak RSS,
/// and the loadgen's CPU, into `result`.
pub fn set_cluster_usage(
    result: &mut RunResult,
    before: &[ProcessUsage],
    after: &[ProcessUsage],
    loadgen_cpu_s: f64,
) {
    assert_eq!(before.len(), after.len(), "{before:?} {after:?}");
    let node_cpu_s: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(before, after)| after.cpu_s - before.cpu_s)
        .collect();
    result.broker_cpu_s = Some(node_cpu_s.iter().sum());
    result.broker_peak_rss_mib = Some(after.iter().map(|usage| usage.peak_rss_mib).sum());
    if let Some(cluster) = result.cluster.as_mut() {
        cluster.node_cpu_s = node_cpu_s;
        cluster.loadgen_cpu_s = Some(loadgen_cpu_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    #[test]
    fn cluster_usage_is_per_node_during_the_load_and_summed() {
        let mut result = run_result("balanced-3-brokers-rf3", "rate-max", 500);
        result.cluster = Some(ClusterRun::default());
        let usage = |cpu_s: f64, peak_rss_mib: f64| ProcessUsage {
            cpu_s,
            peak_rss_mib,
        };
        let before = [usage(1.0, 50.0), usage(2.0, 60.0), usage(0.5, 70.0)];
        let after = [usage(5.0, 80.0), usage(4.0, 90.0), usage(3.5, 100.0)];
        set_cluster_usage(&mut result, &before, &after, 7.25);
        assert_eq!(result.broker_cpu_s, Some(9.0));
        assert_eq!(result.broker_peak_rss_mib, Some(270.0));
        let cluster = result.cluster.expect("kept");
        assert_eq!(cluster.node_cpu_s, [4.0, 2.0, 3.0]);
        assert_eq!(cluster.loadgen_cpu_s, Some(7.25));
    }

    #[test]
    fn waited_children_cpu_grows_once_a_child_that_worked_is_waited_for() {
        let before = waited_children_cpu_s();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        assert!(waited_children_cpu_s() > before);
    }
}
