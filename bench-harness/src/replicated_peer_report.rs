//! The replication section's peer part: a peer cluster (`kafka-cluster`: 3 Kafka KRaft
//! brokers, replication factor 3, `min.insync.replicas=2`, `acks=all`) run by run beside
//! the shardline cluster of the same shape under each tuning profile, then the ratios
//! shardline ÷ peer: throughput at `max`, and produce-ack and end-to-end p99.9 at half of
//! each one's own max (the same relative load); below them, every run's three ratios.

use serde::Serialize;

use crate::comparison_report::{HALF_MAX_RUN, MAX_RUN};
use crate::peers::Peer;
use crate::replicated_report::{
    cluster_row, distinct, micros, ratio, table, times, tuning_profile, CLUSTER_TABLE_HEADER,
};
use crate::results::RunResult;

/// shardline's cluster ÷ the peer's in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRatio {
    pub run: String,
    /// msg/s ÷ msg/s.
    pub throughput_ratio: Option<f64>,
    /// Produce-ack p99.9 ÷ produce-ack p99.9.
    pub produce_p99_9_ratio: Option<f64>,
    /// End-to-end p99.9 ÷ end-to-end p99.9.
    pub end_to_end_p99_9_ratio: Option<f64>,
}

/// A shardline cluster against a peer cluster of the same shape, under one tuning profile.
/// A ratio is `None` when either run failed or lacks the value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerClusterRatio {
    /// shardline's tuning profile.
    pub profile: String,
    /// shardline's cluster (`balanced-3-brokers-rf3`) and the peer's (`kafka-cluster`).
    pub shardline: String,
    pub peer: String,
    /// The shape both share.
    pub brokers: u32,
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
    /// The peer's durability class and the settings by which it meets it.
    pub durability: Option<String>,
    pub durability_setting: Option<String>,
    /// Why the peer did not run, when it did not.
    pub skipped: Option<String>,
    /// shardline's msg/s at `max` ÷ the peer's.
    pub throughput_ratio_at_max: Option<f64>,
    /// shardline's produce-ack p99.9 at half its max ÷ the peer's at half its own max.
    pub produce_p99_9_ratio_at_half_max: Option<f64>,
    /// The same for end-to-end p99.9.
    pub end_to_end_p99_9_ratio_at_half_max: Option<f64>,
    pub runs: Vec<RunRatio>,
}

/// Whether `result` is a run on a peer's cluster.
fn is_peer_cluster(result: &RunResult) -> bool {
    result.system != "shardline" && result.cluster.is_some()
}

/// shardline's cluster ÷ the peer's in `theirs`'s run (`None`: shardline has no such run).
fn run_ratio(results: &[RunResult], shardline: &str, theirs: &RunResult) -> Option<RunRatio> {
    let mine = results
        .iter()
        .find(|r| r.profile == shardline && r.run == theirs.run)?;
    let both = mine.succeeded() && theirs.succeeded();
    let measure = |value: fn(&RunResult) -> f64| both.then(|| ratio(mine, theirs, value)).flatten();
    Some(RunRatio {
        run: theirs.run.clone(),
        throughput_ratio: measure(|r| r.throughput_messages_per_s),
        produce_p99_9_ratio: measure(|r| micros(r.produce_latency.p99_9_us)),
        end_to_end_p99_9_ratio: measure(|r| micros(r.end_to_end_latency.p99_9_us)),
    })
}

/// Every (tuning profile, peer cluster) pair whose shardline cluster has the peer's shape,
/// with its ratios (empty without peer clusters).
pub fn peer_cluster_ratios(results: &[RunResult]) -> Vec<PeerClusterRatio> {
    let peers = distinct(results, |r| is_peer_cluster(r).then(|| r.profile.clone()));
    let mut ratios = Vec::new();
    for profile in distinct(results, tuning_profile) {
        for peer in &peers {
            let peer_runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| is_peer_cluster(r) && r.profile == *peer)
                .collect();
            let Some(spec) = peer_runs
                .first()
                .and_then(|r| r.cluster.as_ref())
                .map(|c| c.spec.clone())
            else {
                continue;
            };
            let Some(shardline) = results
                .iter()
                .find(|r| {
                    tuning_profile(r).as_deref() == Some(profile.as_str())
                        && r.cluster.as_ref().is_some_and(|c| c.spec == spec)
                })
                .map(|r| r.profile.clone())
            else {
                continue;
            };
            let runs: Vec<RunRatio> = peer_runs
                .iter()
                .filter_map(|theirs| run_ratio(results, &shardline, theirs))
                .collect();
            let at = |run: &str| runs.iter().find(|r| r.run == run);
            let first = peer_runs[0];
            ratios.push(PeerClusterRatio {
                profile: profile.clone(),
                shardline,
                peer: peer.clone(),
                brokers: spec.brokers,
                replication_factor: spec.replication_factor,
                min_insync_replicas: spec.min_insync_replicas,
                durability: first.durability.clone(),
                durability_setting: first.durability_setting.clone(),
                skipped: first.skipped.clone(),
                throughput_ratio_at_max: at(MAX_RUN).and_then(|r| r.throughput_ratio),
                produce_p99_9_ratio_at_half_max: at(HALF_MAX_RUN)
                    .and_then(|r| r.produce_p99_9_ratio),
                end_to_end_p99_9_ratio_at_half_max: at(HALF_MAX_RUN)
                    .and_then(|r| r.end_to_end_p99_9_ratio),
                runs,
            });
        }
    }
    ratios
}

/// The rows of `pair`, run by run: shardline's cluster, then the peer's.
fn side_by_side_rows(results: &[RunResult], pair: &PeerClusterRatio) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for theirs in results
        .iter()
        .filter(|r| is_peer_cluster(r) && r.profile == pair.peer)
    {
        if let Some(mine) = results
            .iter()
            .find(|r| r.profile == pair.shardline && r.run == theirs.run)
        {
            rows.push(cluster_row(mine));
        }
        rows.push(cluster_row(theirs));
    }
    rows
}

/// What the peer is and how it meets its class, as one paragraph.
fn peer_paragraph(pair: &PeerClusterRatio, kafka_version: Option<&str>) -> String {
    let deployment = Peer::parse(&pair.peer)
        .ok()
        .zip(kafka_version)
        .and_then(|(peer, version)| peer.kafka_deployment(version));
    let mut text = format!("`{}`", pair.peer);
    if let Some(deployment) = deployment {
        text.push_str(&format!(": {deployment}"));
    }
    if let (Some(class), Some(setting)) = (&pair.durability, &pair.durability_setting) {
        text.push_str(&format!(
            ". Durability class {class}, as shardline's acks=all here (every in-sync replica \
             has fdatasynced the batch): {setting}"
        ));
    }
    text.push_str(".\n\n");
    text
}

/// The markdown peer part of the replication section (empty without peer clusters).
pub fn peer_cluster_section(results: &[RunResult], kafka_version: Option<&str>) -> String {
    let ratios = peer_cluster_ratios(results);
    if ratios.is_empty() {
        return String::new();
    }
    let mut text =
        String::from("### shardline's cluster beside a peer cluster of the same shape\n\n");
    text.push_str(
        "The same load against a peer's cluster of as many brokers, the topic at the same \
         replication factor and `min.insync.replicas`, made by the harness, producers with \
         acks=all; each run on a fresh cluster, its nodes where shardline's brokers ran, \
         `half-max` at half of the peer's own max. CPU as above: over the load only, summed \
         and per node, and the loadgen's. A fresh JVM compiles its hot paths during the \
         first seconds: the peer's `throughput-time-<run>` plot shows whether it still \
         sped up after the warm-up. Ratios are shardline ÷ peer: throughput at `max`, p99.9 \
         at half of each one's own max (each at the same relative load).\n\n",
    );
    for pair in &ratios {
        text.push_str(&format!("**{} beside {}**. ", pair.shardline, pair.peer));
        text.push_str(&peer_paragraph(pair, kafka_version));
        if let Some(reason) = &pair.skipped {
            text.push_str(&format!("{}: skipped: {reason}\n\n", pair.peer));
            continue;
        }
        text.push_str(&table(
            &CLUSTER_TABLE_HEADER,
            &side_by_side_rows(results, pair),
            4,
        ));
        text.push_str(&format!(
            "\n{} ÷ {}: throughput at max {}; p99.9 at half of each one's max: produce-ack \
             {}, end-to-end {}.\n\n",
            pair.shardline,
            pair.peer,
            times(pair.throughput_ratio_at_max),
            times(pair.produce_p99_9_ratio_at_half_max),
            times(pair.end_to_end_p99_9_ratio_at_half_max),
        ));
        let rows: Vec<Vec<String>> = pair
            .runs
            .iter()
            .map(|run| {
                vec![
                    run.run.clone(),
                    times(run.throughput_ratio),
                    times(run.produce_p99_9_ratio),
                    times(run.end_to_end_p99_9_ratio),
                ]
            })
            .collect();
        text.push_str(&table(
            &["run", "throughput", "produce p99.9", "e2e p99.9"],
            &rows,
            1,
        ));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated_report::tests::{fixture, result};

    const SETTING: &str = "Kafka (KRaft), 3 brokers ...: log.flush.interval.messages=1";

    /// A run of the Kafka cluster (3 brokers, factor 3, min.insync.replicas 2).
    fn kafka(run: &str, msg_per_s: f64, p99_9_ms: u64) -> RunResult {
        let mut kafka = result(3, run, msg_per_s, p99_9_ms);
        kafka.system = "kafka".into();
        kafka.profile = "kafka-cluster".into();
        kafka.durability = Some("fsync".into());
        kafka.durability_setting = Some(SETTING.into());
        if let Some(cluster) = kafka.cluster.as_mut() {
            cluster.tuning_profile = String::new();
            cluster.cores_per_broker = 0;
            cluster.node_cpu_s = vec![2.25, 2.5, 2.75];
        }
        kafka
    }

    /// shardline's 1 and 3 brokers (3 brokers: 25,000 msg/s at max, p99.9 40 ms, then 20
    /// ms at half), then Kafka's 3 (10,000 msg/s, p99.9 80 ms, then 50 ms at half).
    fn with_kafka() -> Vec<RunResult> {
        let mut results = fixture();
        results.push(kafka("rate-max", 10_000.0, 80));
        results.push(kafka("rate-half-max", 5_000.0, 50));
        results
    }

    #[test]
    fn ratios_are_shardlines_cluster_of_the_same_shape_over_the_peers() {
        let ratios = peer_cluster_ratios(&with_kafka());
        assert_eq!(ratios.len(), 1, "{ratios:?}");
        let pair = &ratios[0];
        assert_eq!(
            (
                pair.profile.as_str(),
                pair.shardline.as_str(),
                pair.peer.as_str()
            ),
            ("balanced", "balanced-3-brokers-rf3", "kafka-cluster")
        );
        assert_eq!(
            (
                pair.brokers,
                pair.replication_factor,
                pair.min_insync_replicas
            ),
            (3, 3, 2)
        );
        assert_eq!(pair.durability.as_deref(), Some("fsync"));
        assert_eq!(pair.throughput_ratio_at_max, Some(2.5));
        assert_eq!(pair.produce_p99_9_ratio_at_half_max, Some(0.4));
        assert_eq!(pair.end_to_end_p99_9_ratio_at_half_max, Some(0.4));
        assert_eq!(pair.runs.len(), 2);
        assert_eq!(pair.runs[0].run, "rate-max");
        assert_eq!(pair.runs[0].produce_p99_9_ratio, Some(0.5));
        assert_eq!(pair.runs[1].throughput_ratio, Some(2.5));
        assert!(peer_cluster_ratios(&fixture()).is_empty());
    }

    #[test]
    fn a_failed_run_on_either_side_gives_no_ratio_for_that_run() {
        let mut results = with_kafka();
        results[4].lost = 1;
        let pair = &peer_cluster_ratios(&results)[0];
        assert_eq!(pair.throughput_ratio_at_max, None);
        assert_eq!(pair.produce_p99_9_ratio_at_half_max, Some(0.4));
        let mut results = with_kafka();
        results[3].errors.push("loadgen exited with 1".into());
        let pair = &peer_cluster_ratios(&results)[0];
        assert_eq!(pair.throughput_ratio_at_max, Some(2.5));
        assert_eq!(pair.produce_p99_9_ratio_at_half_max, None);
        assert_eq!(pair.end_to_end_p99_9_ratio_at_half_max, None);
    }

    #[test]
    fn a_peer_without_a_shardline_cluster_of_its_shape_has_no_ratios() {
        let results: Vec<RunResult> = with_kafka()
            .into_iter()
            .filter(|r| r.profile != "balanced-3-brokers-rf3")
            .collect();
        assert!(peer_cluster_ratios(&results).is_empty());
    }

    #[test]
    fn the_section_puts_the_clusters_side_by_side_and_states_the_ratios() {
        let text = peer_cluster_section(&with_kafka(), Some("4.1.1"));
        assert!(
            text.contains(
                "`kafka-cluster`: Kafka 4.1.1, KRaft, 3 brokers, replication factor 3, \
                 acks=all, min.insync.replicas=2"
            ),
            "{text}"
        );
        assert!(text.contains(SETTING), "{text}");
        let shardline_max = "| balanced-3-brokers-rf3 | 3 broker(s), factor 3, \
                             min.insync.replicas 2 | rate-max | 20000 | 25000 |";
        let kafka_max = "| kafka-cluster | 3 broker(s), factor 3, min.insync.replicas 2 | \
                         rate-max | 20000 | 10000 | 20.35 | 0.100 | 0.300 | 80.000 | 0.100 | \
                         0.300 | 160.000 | 0/0 | 3.46 | 2.25 / 2.50 / 2.75 | 4.00 |";
        let shardline_half = "| balanced-3-brokers-rf3 | 3 broker(s), factor 3, \
                              min.insync.replicas 2 | rate-half-max |";
        let at = |row: &str| text.find(row).unwrap_or_else(|| panic!("{row} in {text}"));
        assert!(at(shardline_max) < at(kafka_max), "{text}");
        assert!(at(kafka_max) < at(shardline_half), "{text}");
        assert!(!text.contains("balanced-1-broker-rf1"), "{text}");
        assert!(
            text.contains(
                "balanced-3-brokers-rf3 ÷ kafka-cluster: throughput at max 2.50x; p99.9 at \
                 half of each one's max: produce-ack 0.400x, end-to-end 0.400x."
            ),
            "{text}"
        );
        assert!(
            text.contains("| rate-max | 2.50x | 0.500x | 0.500x |"),
            "{text}"
        );
        assert!(peer_cluster_section(&fixture(), Some("4.1.1")).is_empty());
    }

    #[test]
    fn a_skipped_peer_says_why_and_shows_no_numbers() {
        let mut results = fixture();
        for run in ["rate-max", "rate-half-max"] {
            let mut skipped = kafka(run, 0.0, 0);
            skipped.skipped = Some("shardline-loadgen cannot drive kafka".into());
            results.push(skipped);
        }
        let pair = &peer_cluster_ratios(&results)[0];
        assert_eq!(pair.throughput_ratio_at_max, None);
        let text = peer_cluster_section(&results, None);
        assert!(
            text.contains("kafka-cluster: skipped: shardline-loadgen cannot drive kafka"),
            "{text}"
        );
        assert!(!text.contains("| kafka-cluster |"), "{text}");
        assert!(!text.contains("throughput at max"), "{text}");
    }
}
