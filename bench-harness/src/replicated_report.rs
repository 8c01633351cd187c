//! The report's replication section: per shardline cluster and run, throughput and
//! produce-ack and end-to-end p50, p99 and p99.9, the brokers' and the loadgen's CPU; then,
//! for each cluster after the first (the baseline, one broker in the built-in scenario) and
//! each run, the ratios cluster ÷ baseline of throughput and of p99.9 (produce-ack and
//! end-to-end); then any peer cluster beside shardline's (`replicated_peer_report`).

use serde::Serialize;

use crate::replicated_peer_report;
use crate::report::latency_ms;
use crate::results::RunResult;

/// One cluster against the baseline in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterRatio {
    /// The brokers' tuning profile.
    pub profile: String,
    pub run: String,
    /// The baseline's label (`balanced-1-broker-rf1`) and broker count.
    pub baseline: String,
    pub baseline_brokers: u32,
    pub cluster: String,
    pub brokers: u32,
    /// The cluster's msg/s ÷ the baseline's.
    pub throughput_ratio: Option<f64>,
    /// The cluster's produce-ack p99.9 ÷ the baseline's.
    pub produce_p99_9_ratio: Option<f64>,
    /// The cluster's end-to-end p99.9 ÷ the baseline's.
    pub end_to_end_p99_9_ratio: Option<f64>,
}

/// `results`' distinct values of `key` (skipping `None`), in order of appearance.
pub fn distinct(results: &[RunResult], key: impl Fn(&RunResult) -> Option<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for value in results.iter().filter_map(key) {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// The tuning profile of a shardline cluster's run (`None`: not one).
pub fn tuning_profile(result: &RunResult) -> Option<String> {
    result
        .cluster
        .as_ref()
        .filter(|_| is_shardline_cluster(result))
        .map(|c| c.tuning_profile.clone())
}

/// Whether `result` is a run on a shardline cluster.
pub fn is_shardline_cluster(result: &RunResult) -> bool {
    result.system == "shardline" && result.cluster.is_some()
}

fn brokers(result: &RunResult) -> u32 {
    result.cluster.as_ref().map_or(0, |c| c.spec.brokers)
}

/// `mine ÷ theirs` when both values are positive.
pub fn ratio(
    mine: &RunResult,
    theirs: &RunResult,
    value: impl Fn(&RunResult) -> f64,
) -> Option<f64> {
    let (mine, theirs) = (value(mine), value(theirs));
    (mine > 0.0 && theirs > 0.0).then(|| mine / theirs)
}

pub fn micros(latency: Option<u64>) -> f64 {
    latency.map_or(0.0, |us| us as f64)
}

/// The ratios of every cluster after the first to the first, per profile and run (empty
/// without clusters). A ratio is `None` when either run failed or lacks the value.
pub fn cluster_ratios(results: &[RunResult]) -> Vec<ClusterRatio> {
    let mut ratios = Vec::new();
    for profile in distinct(results, tuning_profile) {
        let of_profile: Vec<&RunResult> = results
            .iter()
            .filter(|r| tuning_profile(r).as_deref() == Some(profile.as_str()))
            .collect();
        let clusters = distinct(results, |r| {
            (tuning_profile(r).as_deref() == Some(profile.as_str())).then(|| r.profile.clone())
        });
        let Some((baseline, others)) = clusters.split_first() else {
            continue;
        };
        let find = |cluster: &str, run: &str| {
            of_profile
                .iter()
                .copied()
                .find(|r| r.profile == cluster && r.run == run)
        };
        let runs = distinct(results, |r| (r.profile == *baseline).then(|| r.run.clone()));
        for cluster in others {
            for run in &runs {
                let (Some(theirs), Some(mine)) = (find(baseline, run), find(cluster, run)) else {
                    continue;
                };
                let both = mine.succeeded() && theirs.succeeded();
                let measure = |value: fn(&RunResult) -> f64| {
                    both.then(|| ratio(mine, theirs, value)).flatten()
                };
                ratios.push(ClusterRatio {
                    profile: profile.clone(),
                    run: run.clone(),
                    baseline: baseline.clone(),
                    baseline_brokers: brokers(theirs),
                    cluster: cluster.clone(),
                    brokers: brokers(mine),
                    throughput_ratio: measure(|r| r.throughput_messages_per_s),
                    produce_p99_9_ratio: measure(|r| micros(r.produce_latency.p99_9_us)),
                    end_to_end_p99_9_ratio: measure(|r| micros(r.end_to_end_latency.p99_9_us)),
                });
            }
        }
    }
    ratios
}

pub const CLUSTER_TABLE_HEADER: [&str; 16] = [
    "cluster",
    "replication",
    "run",
    "rate",
    "msg/s",
    "MB/s",
    "produce p50",
    "p99",
    "p99.9",
    "e2e p50",
    "p99",
    "p99.9",
    "lost/dup",
    "broker CPU s",
    "per broker",
    "loadgen CPU s",
];

pub fn cluster_row(result: &RunResult) -> Vec<String> {
    let (replication, per_broker, loadgen) = match &result.cluster {
        Some(cluster) => (
            format!(
                "{} broker(s), factor {}, min.insync.replicas {}",
                cluster.spec.brokers,
                cluster.spec.replication_factor,
                cluster.spec.min_insync_replicas
            ),
            cluster
                .node_cpu_s
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" / "),
            cluster
                .loadgen_cpu_s
                .map_or("-".into(), |s| format!("{s:.2}")),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let integrity = result.integrity_text();
    vec![
        result.profile.clone(),
        replication,
        result.run.clone(),
        result.rate.clone(),
        format!("{:.0}", result.throughput_messages_per_s),
        format!("{:.2}", result.throughput_megabytes_per_s),
        latency_ms(result.produce_latency.p50_us),
        latency_ms(result.produce_latency.p99_us),
        latency_ms(result.produce_latency.p99_9_us),
        latency_ms(result.end_to_end_latency.p50_us),
        latency_ms(result.end_to_end_latency.p99_us),
        latency_ms(result.end_to_end_latency.p99_9_us),
        if result.succeeded() {
            integrity
        } else {
            format!("{integrity} FAILED")
        },
        result
            .broker_cpu_s
            .map_or("-".into(), |s| format!("{s:.2}")),
        per_broker,
        loadgen,
    ]
}

/// A markdown table; the first `text_columns` columns left-aligned, the rest right.
pub fn table(header: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    let mut text = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < text_columns { "---" } else { "---:" })
        .collect();
    text.push_str(&format!("| {} |\n", align.join(" | ")));
    for row in rows {
        text.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    text
}

/// A ratio with two decimals, or three significant digits when below 1 (a cluster at 1 %
/// of the baseline reads 0.00972x, not 0.01x).
pub fn times(value: Option<f64>) -> String {
    const SIGNIFICANT_DIGITS: i32 = 3;
    const DECIMALS_MAX: i32 = 8;
    value.map_or("-".into(), |v| {
        let decimals = if v >= 1.0 || v <= 0.0 {
            2
        } else {
            (SIGNIFICANT_DIGITS - 1 - v.log10().floor() as i32).clamp(2, DECIMALS_MAX) as usize
        };
        format!("{v:.decimals$}x")
    })
}

/// The markdown replication section of `results` (empty when no run went to a cluster);
/// `kafka_version` names the release of a Kafka peer cluster.
pub fn replication_section(results: &[RunResult], kafka_version: Option<&str>) -> String {
    let clustered: Vec<&RunResult> = results.iter().filter(|r| is_shardline_cluster(r)).collect();
    if clustered.is_empty() {
        return String::new();
    }
    let mut text = String::from("## Replication: each cluster against the first\n\n");
    text.push_str(
        "Each run on a fresh `shardline cluster local` (every broker a controller voter); \
         the harness created the topic with the cluster's replication factor and \
         `min.insync.replicas` (`topic create --replication-factor N --config \
         min.insync.replicas=M`) and waited until every partition had a leader and all its \
         replicas in sync. With acks=all a produce is answered once every in-sync replica \
         holds the batch (the high watermark), and consumers read below it. Latency in ms, \
         corrected for coordinated omission; broker CPU is over the load only (summed, then \
         per broker, node 0 first), loadgen CPU is its producers' and consumers'.\n\n",
    );
    let rows: Vec<Vec<String>> = clustered.iter().map(|r| cluster_row(r)).collect();
    text.push_str(&table(&CLUSTER_TABLE_HEADER, &rows, 4));
    let ratios = cluster_ratios(results);
    if !ratios.is_empty() {
        text.push_str(
            "\nRatios cluster ÷ baseline (the first cluster), run by run. At `half-max` each \
             cluster runs at half of its own max, so the throughput ratio there repeats the \
             max one and the p99.9 ratios compare each at the same relative load.\n\n",
        );
        let rows: Vec<Vec<String>> = ratios
            .iter()
            .map(|ratio| {
                vec![
                    ratio.run.clone(),
                    format!("{} ÷ {}", ratio.cluster, ratio.baseline),
                    times(ratio.throughput_ratio),
                    times(ratio.produce_p99_9_ratio),
                    times(ratio.end_to_end_p99_9_ratio),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "run",
                "clusters",
                "throughput",
                "produce p99.9",
                "e2e p99.9",
            ],
            &rows,
            2,
        ));
    }
    text.push('\n');
    text.push_str(&replicated_peer_report::peer_cluster_section(
        results,
        kafka_version,
    ));
    text
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::results::tests::run_result;
    use crate::results::ClusterRun;
    use crate::scenario::ClusterSpec;

    /// A run of shardline's balanced cluster of `brokers` (end-to-end p99.9 twice the
    /// produce one).
    pub fn result(brokers: u32, run: &str, msg_per_s: f64, p99_9_ms: u64) -> RunResult {
        let spec = ClusterSpec {
            brokers,
            replication_factor: brokers as u16,
            min_insync_replicas: brokers.min(2) as u16,
        };
        let mut result = run_result(&spec.label("balanced"), run, 100);
        result.throughput_messages_per_s = msg_per_s;
        result.produce_latency.p99_9_us = Some(p99_9_ms * 1000);
        result.end_to_end_latency.p99_9_us = Some(p99_9_ms * 2000);
        result.cluster = Some(ClusterRun {
            tuning_profile: "balanced".into(),
            spec,
            cores_per_broker: 1,
            bootstrap: "127.0.0.1:1".into(),
            node_cpu_s: vec![1.5; brokers as usize],
            loadgen_cpu_s: Some(4.0),
        });
        result
    }

    /// One broker and three, each at max and half of max.
    pub fn fixture() -> Vec<RunResult> {
        vec![
            result(1, "rate-max", 100_000.0, 10),
            result(1, "rate-half-max", 50_000.0, 4),
            result(3, "rate-max", 25_000.0, 40),
            result(3, "rate-half-max", 12_500.0, 20),
        ]
    }

    #[test]
    fn ratios_are_each_cluster_over_the_first_run_by_run() {
        let ratios = cluster_ratios(&fixture());
        assert_eq!(ratios.len(), 2, "{ratios:?}");
        let max = &ratios[0];
        assert_eq!(
            (
                max.run.as_str(),
                max.baseline.as_str(),
                max.cluster.as_str()
            ),
            (
                "rate-max",
                "balanced-1-broker-rf1",
                "balanced-3-brokers-rf3"
            )
        );
        assert_eq!((max.baseline_brokers, max.brokers), (1, 3));
        assert_eq!(max.throughput_ratio, Some(0.25));
        assert_eq!(max.produce_p99_9_ratio, Some(4.0));
        assert_eq!(max.end_to_end_p99_9_ratio, Some(4.0));
        let half = &ratios[1];
        assert_eq!(half.run, "rate-half-max");
        assert_eq!(half.throughput_ratio, Some(0.25));
        assert_eq!(half.produce_p99_9_ratio, Some(5.0));
        assert!(cluster_ratios(&[run_result("latency", "max", 1)]).is_empty());
    }

    #[test]
    fn small_ratios_keep_three_significant_digits() {
        assert_eq!(times(Some(0.009_716)), "0.00972x");
        assert_eq!(times(Some(0.25)), "0.250x");
        assert_eq!(times(Some(4.0)), "4.00x");
        assert_eq!(times(Some(109.96)), "109.96x");
        assert_eq!(times(None), "-");
    }

    #[test]
    fn a_failed_run_gives_no_ratio() {
        let mut results = fixture();
        results[2].lost = 1;
        let ratios = cluster_ratios(&results);
        assert_eq!(ratios[0].throughput_ratio, None);
        assert_eq!(ratios[0].produce_p99_9_ratio, None);
        assert_eq!(ratios[1].throughput_ratio, Some(0.25));
        results[1].produce_latency.p99_9_us = None;
        assert_eq!(cluster_ratios(&results)[1].produce_p99_9_ratio, None);
    }

    #[test]
    fn the_section_has_a_row_per_run_and_a_ratio_row_per_cluster_and_run() {
        let text = replication_section(&fixture(), None);
        assert!(
            text.contains(
                "| balanced-3-brokers-rf3 | 3 broker(s), factor 3, min.insync.replicas 2 | \
                 rate-max | 20000 | 25000 | 20.35 | 0.100 | 0.300 | 40.000 | 0.100 | 0.300 | \
                 80.000 | 0/0 | 3.46 | 1.50 / 1.50 / 1.50 | 4.00 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| rate-max | balanced-3-brokers-rf3 ÷ balanced-1-broker-rf1 | 0.250x | 4.00x | \
                 4.00x |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| rate-half-max | balanced-3-brokers-rf3 ÷ balanced-1-broker-rf1 | 0.250x | 5.00x |"),
            "{text}"
        );
        assert!(replication_section(&[run_result("latency", "max", 1)], None).is_empty());
    }

    #[test]
    fn a_peer_cluster_is_neither_a_cluster_row_nor_in_the_ratios_to_the_baseline() {
        let mut results = fixture();
        let mut kafka = result(3, "rate-max", 30_000.0, 50);
        kafka.system = "kafka".into();
        kafka.profile = "kafka-cluster".into();
        if let Some(cluster) = kafka.cluster.as_mut() {
            cluster.tuning_profile = String::new();
        }
        results.push(kafka);
        assert_eq!(cluster_ratios(&results), cluster_ratios(&fixture()));
        let text = replication_section(&results, None);
        let first_table = text
            .split("\n\nRatios cluster")
            .next()
            .expect("a first part");
        assert!(!first_table.contains("| kafka-cluster |"), "{text}");
        assert!(
            text.contains("| kafka-cluster | 3 broker(s), factor 3"),
            "the peer part lists it: {text}"
        );
    }
}
