//! The report's peer section: per durability class, every system's numbers with the
//! setting by which it meets the class, and shardline's ratio to each peer and to the best
//! one: throughput at `max` (shardline ÷ peer; the target is at least 2) and produce p99.9
//! at half of each system's own max (shardline ÷ peer; the target is at most 0.5).

use serde::Serialize;

use crate::peers::Peer;
use crate::report::latency_ms;
use crate::results::RunResult;

/// The label of the closed-loop run whose throughput is compared.
pub const MAX_RUN: &str = "rate-max";
/// The label of the open-loop run at half of max whose p99.9 is compared.
pub const HALF_MAX_RUN: &str = "rate-half-max";
/// The targets: shardline's throughput at least this many times the best peer's,
/// its p99.9 at half max at most this fraction of the best peer's.
pub const THROUGHPUT_RATIO_TARGET: f64 = 2.0;
pub const P99_9_RATIO_TARGET: f64 = 0.5;

/// shardline against one peer in one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRatio {
    pub peer: String,
    /// shardline's max throughput ÷ the peer's.
    pub throughput_ratio: Option<f64>,
    /// shardline's produce p99.9 at half its max ÷ the peer's at half its max.
    pub p99_9_ratio: Option<f64>,
    pub skipped: Option<String>,
}

/// One durability class: the ratios and the verdict against the best peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassRatios {
    pub durability: String,
    pub shardline: String,
    pub peers: Vec<PeerRatio>,
    /// The peer with the highest max throughput, and it.
    pub best_peer_throughput: Option<(String, f64)>,
    /// The peer with the lowest p99.9 at half max, and it (µs).
    pub best_peer_p99_9_us: Option<(String, u64)>,
    pub throughput_vs_best: Option<f64>,
    pub p99_9_vs_best: Option<f64>,
    pub throughput_target_met: Option<bool>,
    pub p99_9_target_met: Option<bool>,
}

/// The durability classes of `results`, in order of appearance.
fn classes(results: &[RunResult]) -> Vec<String> {
    let mut classes: Vec<String> = Vec::new();
    for class in results.iter().filter_map(|r| r.durability.clone()) {
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    classes
}

/// The run of `system` (profile name for shardline) in `class` labelled `<class>-<run>`.
fn find<'a>(
    results: &'a [RunResult],
    class: &str,
    profile: &str,
    run: &str,
) -> Option<&'a RunResult> {
    let label = format!("{class}-{run}");
    results
        .iter()
        .find(|r| r.durability.as_deref() == Some(class) && r.profile == profile && r.run == label)
}

fn throughput(result: Option<&RunResult>) -> Option<f64> {
    result
        .filter(|r| r.succeeded() && r.throughput_messages_per_s > 0.0)
        .map(|r| r.throughput_messages_per_s)
}

fn p99_9_us(result: Option<&RunResult>) -> Option<u64> {
    result
        .filter(|r| r.succeeded())
        .and_then(|r| r.produce_latency.p99_9_us)
        .filter(|&us| us > 0)
}

fn ratio(mine: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    Some(mine? / theirs?)
}

/// The ratios of every class in `results` (empty without comparisons).
pub fn class_ratios(results: &[RunResult]) -> Vec<ClassRatios> {
    let mut all = Vec::new();
    for class in classes(results) {
        let in_class = |r: &&RunResult| r.durability.as_deref() == Some(class.as_str());
        let Some(shardline) = results
            .iter()
            .filter(in_class)
            .find(|r| r.system == "shardline")
            .map(|r| r.profile.clone())
        else {
            continue;
        };
        let mine_throughput = throughput(find(results, &class, &shardline, MAX_RUN));
        let mine_p99_9 = p99_9_us(find(results, &class, &shardline, HALF_MAX_RUN));
        let mut peer_names: Vec<String> = Vec::new();
        for result in results
            .iter()
            .filter(in_class)
            .filter(|r| r.system != "shardline")
        {
            if !peer_names.contains(&result.profile) {
                peer_names.push(result.profile.clone());
            }
        }
        let mut peers = Vec::new();
        let mut best_throughput: Option<(String, f64)> = None;
        let mut best_p99_9: Option<(String, u64)> = None;
        for peer in peer_names {
            let max_run = find(results, &class, &peer, MAX_RUN);
            let theirs_throughput = throughput(max_run);
            let theirs_p99_9 = p99_9_us(find(results, &class, &peer, HALF_MAX_RUN));
            if let Some(value) = theirs_throughput {
                if best_throughput
                    .as_ref()
                    .is_none_or(|(_, best)| value > *best)
                {
                    best_throughput = Some((peer.clone(), value));
                }
            }
            if let Some(value) = theirs_p99_9 {
                if best_p99_9.as_ref().is_none_or(|(_, best)| value < *best) {
                    best_p99_9 = Some((peer.clone(), value));
                }
            }
            peers.push(PeerRatio {
                throughput_ratio: ratio(mine_throughput, theirs_throughput),
                p99_9_ratio: ratio(
                    mine_p99_9.map(|us| us as f64),
                    theirs_p99_9.map(|us| us as f64),
                ),
                skipped: max_run.and_then(|r| r.skipped.clone()),
                peer,
            });
        }
        let throughput_vs_best = ratio(mine_throughput, best_throughput.as_ref().map(|b| b.1));
        let p99_9_vs_best = ratio(
            mine_p99_9.map(|us| us as f64),
            best_p99_9.as_ref().map(|b| b.1 as f64),
        );
        all.push(ClassRatios {
            durability: class,
            shardline,
            peers,
            best_peer_throughput: best_throughput,
            best_peer_p99_9_us: best_p99_9,
            throughput_vs_best,
            p99_9_vs_best,
            throughput_target_met: throughput_vs_best.map(|r| r >= THROUGHPUT_RATIO_TARGET),
            p99_9_target_met: p99_9_vs_best.map(|r| r <= P99_9_RATIO_TARGET),
        });
    }
    all
}

fn times(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.2}x"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "unknown",
    }
}

const PEER_TABLE_HEADER: [&str; 11] = [
    "system",
    "durability setting",
    "run",
    "rate",
    "msg/s",
    "MB/s",
    "produce p50",
    "p99",
    "p99.9",
    "e2e p99",
    "lost/dup",
];

fn peer_row(result: &RunResult) -> Vec<String> {
    let setting = result.durability_setting.clone().unwrap_or_default();
    if let Some(reason) = &result.skipped {
        let mut row = vec![result.profile.clone(), format!("n/a: {reason}")];
        row.push(result.run.clone());
        row.extend(std::iter::repeat_n(
            "-".to_string(),
            PEER_TABLE_HEADER.len() - 3,
        ));
        return row;
    }
    let integrity = result.integrity_text();
    vec![
        result.profile.clone(),
        setting,
        result.run.clone(),
        result.rate.clone(),
        format!("{:.0}", result.throughput_messages_per_s),
        format!("{:.2}", result.throughput_megabytes_per_s),
        latency_ms(result.produce_latency.p50_us),
        latency_ms(result.produce_latency.p99_us),
        latency_ms(result.produce_latency.p99_9_us),
        latency_ms(result.end_to_end_latency.p99_us),
        if result.succeeded() {
            integrity
        } else {
            format!("{integrity} FAILED")
        },
    ]
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 3 { "---" } else { "---:" })
        .collect();
    text.push_str(&format!("| {} |\n", align.join(" | ")));
    for row in rows {
        text.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    text
}

/// The markdown peer section of `results` (empty when no run was in a comparison).
pub fn peer_section(results: &[RunResult], kafka_version: Option<&str>) -> String {
    let ratios = class_ratios(results);
    if ratios.is_empty() {
        return String::new();
    }
    let mut text = String::from("## Peer brokers at equal durability\n\n");
    text.push_str(
        "Every peer is driven by shardline-loadgen through its standard Rust client (Kafka: \
         rdkafka/librdkafka; NATS: async-nats; Redis: redis) with the same payload, the same \
         open-loop schedule (latency from the intended send time), the same HDR histograms \
         and the same loss/duplicate/order checks, each on a fresh server on loopback. \
         Ratios are shardline ÷ peer: throughput at `max` (target ≥ 2), produce p99.9 at \
         half of each system's own max (target ≤ 0.5).",
    );
    if let Some(version) = kafka_version {
        let ran = |peer: &Peer| results.iter().any(|r| r.profile == peer.name());
        for peer in Peer::ALL.iter().filter(|peer| ran(peer)) {
            if let Some(deployment) = peer.kafka_deployment(version) {
                text.push_str(&format!(" `{}`: {deployment}.", peer.name()));
            }
        }
    }
    text.push_str("\n\n");
    for class in &ratios {
        let meaning = match class.durability.as_str() {
            "fsync" => crate::peers::Durability::Fsync.meaning(),
            "no-fsync" => crate::peers::Durability::NoFsync.meaning(),
            _ => "",
        };
        text.push_str(&format!("### {}: {meaning}\n\n", class.durability));
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter(|r| r.durability.as_deref() == Some(class.durability.as_str()))
            .map(peer_row)
            .collect();
        text.push_str(&table(&PEER_TABLE_HEADER, &rows));
        text.push('\n');
        let ratio_rows: Vec<Vec<String>> = class
            .peers
            .iter()
            .map(|peer| match &peer.skipped {
                Some(_) => vec![peer.peer.clone(), "n/a".into(), "n/a".into()],
                None => vec![
                    peer.peer.clone(),
                    times(peer.throughput_ratio),
                    times(peer.p99_9_ratio),
                ],
            })
            .collect();
        text.push_str(&table(
            &[
                "peer",
                "throughput: shardline ÷ peer (max)",
                "p99.9: shardline ÷ peer (half max)",
            ],
            &ratio_rows,
        ));
        let best_throughput = class
            .best_peer_throughput
            .as_ref()
            .map_or("-".into(), |(peer, value)| {
                format!("{peer} {value:.0} msg/s")
            });
        let best_p99_9 = class
            .best_peer_p99_9_us
            .as_ref()
            .map_or("-".into(), |(peer, us)| {
                format!("{peer} {} ms", latency_ms(Some(*us)))
            });
        text.push_str(&format!(
            "\nAgainst the best peer ({}): throughput {} is {} (target ≥ {THROUGHPUT_RATIO_TARGET}x: \
             {}); p99.9 at half max {} is {} (target ≤ {P99_9_RATIO_TARGET}x: {}).\n\n",
            class.shardline,
            best_throughput,
            times(class.throughput_vs_best),
            verdict(class.throughput_target_met),
            best_p99_9,
            times(class.p99_9_vs_best),
            verdict(class.p99_9_target_met),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    fn result(system: &str, class: &str, run: &str, msg_per_s: f64, p99_9_us: u64) -> RunResult {
        let profile = if system == "shardline" {
            "shardline-durable"
        } else {
            system
        };
        let mut result = run_result(profile, &format!("{class}-{run}"), 100);
        result.system = system.into();
        result.durability = Some(class.into());
        result.durability_setting = Some(format!("{system} setting"));
        result.throughput_messages_per_s = msg_per_s;
        result.produce_latency.p99_9_us = Some(p99_9_us);
        result
    }

    fn fixture() -> Vec<RunResult> {
        let mut nats = result("nats", "fsync", MAX_RUN, 0.0, 0);
        nats.skipped = Some("no fsync setting in 2.9".into());
        vec![
            result("shardline", "fsync", MAX_RUN, 90_000.0, 9_000),
            result("shardline", "fsync", HALF_MAX_RUN, 45_000.0, 2_000),
            result("kafka", "fsync", MAX_RUN, 30_000.0, 50_000),
            result("kafka", "fsync", HALF_MAX_RUN, 15_000.0, 5_000),
            result("redis", "fsync", MAX_RUN, 40_000.0, 40_000),
            result("redis", "fsync", HALF_MAX_RUN, 20_000.0, 8_000),
            nats,
        ]
    }

    #[test]
    fn ratios_are_shardline_over_each_peer_and_the_best_peer() {
        let ratios = class_ratios(&fixture());
        assert_eq!(ratios.len(), 1);
        let class = &ratios[0];
        assert_eq!(class.shardline, "shardline-durable");
        let kafka = &class.peers[0];
        assert_eq!(kafka.peer, "kafka");
        assert_eq!(kafka.throughput_ratio, Some(3.0));
        assert_eq!(kafka.p99_9_ratio, Some(0.4));
        let nats = class
            .peers
            .iter()
            .find(|p| p.peer == "nats")
            .expect("listed");
        assert!(nats.skipped.is_some() && nats.throughput_ratio.is_none());
        assert_eq!(class.best_peer_throughput, Some(("redis".into(), 40_000.0)));
        assert_eq!(class.best_peer_p99_9_us, Some(("kafka".into(), 5_000)));
        assert_eq!(class.throughput_vs_best, Some(2.25));
        assert_eq!(class.p99_9_vs_best, Some(0.4));
        assert_eq!(class.throughput_target_met, Some(true));
        assert_eq!(class.p99_9_target_met, Some(true));
    }

    #[test]
    fn a_failed_run_gives_no_ratio_and_the_target_is_unknown() {
        let mut results = fixture();
        results[0].lost = 1;
        let class = &class_ratios(&results)[0];
        assert_eq!(class.peers[0].throughput_ratio, None);
        assert_eq!(class.throughput_target_met, None);
        assert_eq!(class.p99_9_target_met, Some(true));
    }

    #[test]
    fn the_section_states_each_setting_and_marks_skipped_peers() {
        let text = peer_section(&fixture(), Some("4.1.1"));
        assert!(
            text.contains("### fsync: acknowledged once on stable storage"),
            "{text}"
        );
        assert!(
            text.contains("| kafka | kafka setting | fsync-rate-max |"),
            "{text}"
        );
        assert!(
            text.contains("| nats | n/a: no fsync setting in 2.9 |"),
            "{text}"
        );
        assert!(text.contains("| kafka | 3.00x | 0.40x |"), "{text}");
        assert!(text.contains("| nats | n/a | n/a |"), "{text}");
        assert!(
            text.contains("redis 40000 msg/s is 2.25x (target ≥ 2x: met)"),
            "{text}"
        );
        assert!(
            text.contains(" `kafka`: Kafka 4.1.1, KRaft, one combined broker and controller."),
            "{text}"
        );
        assert!(!text.contains("kafka-cluster"), "{text}");
        assert!(peer_section(&[run_result("latency", "max", 1)], None).is_empty());
    }

    #[test]
    fn the_section_says_how_the_kafka_cluster_replicates_when_it_ran() {
        let mut cluster = result("kafka", "fsync", MAX_RUN, 20_000.0, 80_000);
        cluster.profile = "kafka-cluster".into();
        let mut results = fixture();
        results.push(cluster);
        let text = peer_section(&results, Some("4.1.1"));
        assert!(
            text.contains(
                " `kafka-cluster`: Kafka 4.1.1, KRaft, 3 brokers, replication factor 3, \
                 acks=all, min.insync.replicas=2 ("
            ),
            "{text}"
        );
        assert!(text.contains("| kafka-cluster | 4.50x |"), "{text}");
    }
}
