//! Comparison scenarios: in each durability class, shardline (the class's profile and
//! acks) and then every peer, each run on a fresh server, the runs in scenario order. A
//! `half-max` run takes half of what the same system reached in the class's `max` run. A
//! peer that cannot meet a class is recorded as skipped, with the reason.

use crate::broker::DataDir;
use crate::peers::{peer_setting, Durability, Peer, PeerInstall, PeerProcess};
use crate::results::RunResult;
use crate::scenario::{RunSpec, HALF_MAX_RATE};
use crate::session::{set_usage, Session};

/// The acks a peer's loadgen asks for: every peer waits for its acknowledgement (what it
/// means is the class's server setting).
const PEER_ACKS: &str = "all";
/// Messages per second a `half-max` run asks for at least.
const HALF_MAX_RATE_MIN: f64 = 1.0;

/// Every comparison of the session's scenario, shardline first in each.
pub fn run_all(session: &Session, peers: &[Peer], install: &PeerInstall) -> Vec<RunResult> {
    let scenario = session.scenario;
    let mut results = Vec::new();
    for comparison in &scenario.comparisons {
        let class = comparison.durability;
        let profile_label = format!("shardline-{}", comparison.profile);
        let mut systems = vec![None];
        systems.extend(peers.iter().copied().map(Some));
        for system in systems {
            let mut earlier: Vec<RunResult> = Vec::new();
            for run in &scenario.runs {
                let label = format!("{}-{}", class.name(), run.label());
                let name = system.map_or(profile_label.as_str(), |peer| peer.name());
                let mut result = session.empty_result_labelled(name, &label, run, &scenario.topic);
                result.durability = Some(class.name().into());
                if let Some(peer) = system {
                    result.system = peer.system().into();
                    result.acks = PEER_ACKS.into();
                    match peer_setting(peer, class) {
                        Ok(setting) => result.durability_setting = Some(setting),
                        Err(reason) => result.skipped = Some(reason),
                    }
                }
                if result.skipped.is_some() {
                    results.push(result);
                    continue;
                }
                let resolved = resolve_rate(run, &earlier);
                match (system, resolved) {
                    (_, Err(error)) => result.errors.push(error),
                    (None, Ok(run)) => {
                        result.rate = run.rate.clone();
                        result.acks = comparison.acks.clone();
                        let flush_mode =
                            profile_flush_mode(&session.profile_path(&comparison.profile));
                        result.durability_setting = Some(shardline_setting(
                            &comparison.profile,
                            flush_mode.as_deref(),
                            &comparison.acks,
                            class,
                        ));
                        let progress =
                            format!("shardline {} [{}]", comparison.profile, class.name());
                        session.shardline_run(&mut result, &comparison.profile, &progress, &run);
                    }
                    (Some(peer), Ok(run)) => {
                        result.rate = run.rate.clone();
                        peer_run(session, &mut result, peer, class, install, &run);
                    }
                }
                earlier.push(result.clone());
                results.push(result);
            }
            if system == Some(Peer::Kafka) {
                if let Some(result) = producer_perf_result(session, class, &earlier, install) {
                    results.push(result);
                }
            }
        }
    }
    results
}

/// The name of Kafka's own producer benchmark in the report (a peer row of its own).
pub const PRODUCER_PERF_NAME: &str = "kafka-producer-perf";

/// Kafka's `ProducerPerformance` in `class` on a fresh server, as a `max` run: as many
/// records as the harness's Kafka run sent at max (warm-up included), so it runs about as
/// long. `None` when the scenario has no `max` run.
fn producer_perf_result(
    session: &Session,
    class: Durability,
    kafka_runs: &[RunResult],
    install: &PeerInstall,
) -> Option<RunResult> {
    use crate::peers::producer_perf;
    let scenario = session.scenario;
    let max = scenario.runs.iter().find(|run| run.rate == "max")?;
    let label = format!("{}-{}", class.name(), max.label());
    let mut result =
        session.empty_result_labelled(PRODUCER_PERF_NAME, &label, max, &scenario.topic);
    result.durability = Some(class.name().into());
    result.system = Peer::Kafka.system().into();
    result.acks = PEER_ACKS.into();
    result.rate = max.rate.clone();
    match peer_setting(Peer::Kafka, class) {
        Ok(setting) => {
            result.durability_setting = Some(format!(
                "{setting}; Kafka's own ProducerPerformance, produce only (no consumer)"
            ))
        }
        Err(reason) => {
            result.skipped = Some(reason);
            return Some(result);
        }
    }
    let seconds = scenario.warmup_s + scenario.duration_s;
    let records = kafka_runs
        .iter()
        .find(|run| run.rate == "max" && run.succeeded())
        .map(|run| (run.throughput_messages_per_s * seconds) as u64)
        .filter(|&records| records > 0)
        .unwrap_or(producer_perf::RECORDS_DEFAULT);
    let record_bytes = scenario.message_bytes as u64;
    let topic = result.topic.clone();
    let log = session.run_dir(&result).join("producer-perf.log");
    peer_server_run(
        session,
        &mut result,
        Peer::Kafka,
        class,
        install,
        |session, result, address| {
            session.progress(&format!(
                "{PRODUCER_PERF_NAME} [{}]: {records} records of {record_bytes} bytes",
                class.name()
            ));
            let timeout = std::time::Duration::from_secs_f64(
                (seconds * producer_perf::RUN_TIME_FACTOR).max(producer_perf::RUN_SECONDS_MIN),
            );
            // Kafka's tool does not create its topic (the loadgen does, for its own runs).
            let topic_log = log.with_file_name("topic.log");
            let outcome = crate::peers::create_kafka_topic(
                install,
                address,
                &topic,
                scenario.partitions,
                &topic_log,
            )
            .and_then(|_| crate::peers::java_and_classpath(install))
            .and_then(|(java, classpath)| {
                let arguments =
                    producer_perf::arguments(&topic, records, record_bytes, address, PEER_ACKS);
                producer_perf::run(&java, &classpath, &arguments, &log, timeout)
            });
            match outcome {
                Ok(summary) => producer_perf::record(result, &summary),
                Err(error) => result.errors.push(error),
            }
        },
    );
    Some(result)
}

/// The flush mode (`[storage] flush.mode`) of the profile at `path`: `"interval"` when the
/// file leaves it out (the broker's default, balanced), `None` when it cannot be read.
pub fn profile_flush_mode(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let profile: toml::Value = toml::from_str(&text).ok()?;
    match profile.get("storage").and_then(|s| s.get("flush")) {
        None => Some("interval".into()),
        Some(flush) => flush.get("mode")?.as_str().map(str::to_string),
    }
}

/// How shardline meets `class` with `profile` (whose flush mode is `flush_mode`) and `acks`:
/// what an acknowledgement means there, from the flush policy, not from the class's name.
pub fn shardline_setting(
    profile: &str,
    flush_mode: Option<&str>,
    acks: &str,
    class: Durability,
) -> String {
    let meaning = match (acks, flush_mode) {
        ("none", _) => "acks=none: answered once accepted, before any write".to_string(),
        (_, Some("never")) => format!(
            "acks={acks}: answered once written to the segment (O_DIRECT), not synced (flush never)"
        ),
        (_, Some(mode)) => format!(
            "acks={acks}: answered once fdatasynced under the profile's flush policy ({mode})"
        ),
        (_, None) => "see the profile".to_string(),
    };
    let mismatch = match (class, flush_mode) {
        (Durability::Fsync, Some("never")) => " [does not fdatasync: not this class]",
        (Durability::NoFsync, Some(mode)) if mode != "never" && acks != "none" => {
            " [fdatasyncs before answering: stricter than this class]"
        }
        _ => "",
    };
    format!("shardline profile {profile}, {meaning}{mismatch}")
}

/// `run`, with a `half-max` rate replaced by half the throughput of the `max` run among
/// `earlier` (the same system's runs in this class).
pub fn resolve_rate(run: &RunSpec, earlier: &[RunResult]) -> Result<RunSpec, String> {
    if run.rate != HALF_MAX_RATE {
        return Ok(run.clone());
    }
    let max = earlier
        .iter()
        .find(|r| r.rate == "max")
        .ok_or_else(|| format!("run {}: no max run before it", run.label()))?;
    if !max.succeeded() || max.throughput_messages_per_s <= 0.0 {
        return Err(format!(
            "run {}: the max run ({}) did not succeed, so half of it is unknown",
            run.label(),
            max.run
        ));
    }
    let rate = (max.throughput_messages_per_s / 2.0)
        .floor()
        .max(HALF_MAX_RATE_MIN);
    Ok(RunSpec {
        name: Some(run.label()),
        rate: format!("{rate:.0}"),
        ..run.clone()
    })
}

/// One peer run into `result` (whose setting for `class` is known): a fresh server (every
/// node of it), its topic when the harness makes it (the Kafka cluster's replicated one),
/// one loadgen run against every node's address, the server's usage, a stop.
fn peer_run(
    session: &Session,
    result: &mut RunResult,
    peer: Peer,
    class: Durability,
    install: &PeerInstall,
    run: &RunSpec,
) {
    let label = format!("{} [{}]", peer.name(), class.name());
    peer_server_run(
        session,
        result,
        peer,
        class,
        install,
        |session, result, address| session.load(result, address, &label, run),
    );
}

/// `work` against a fresh server of `peer` in `class` (every node of it, its topic made),
/// then the server's usage and a stop.
fn peer_server_run(
    session: &Session,
    result: &mut RunResult,
    peer: Peer,
    class: Durability,
    install: &PeerInstall,
    work: impl FnOnce(&Session, &mut RunResult, &str),
) {
    let label = format!("{} [{}]", peer.name(), class.name());
    session.progress(&format!(
        "{label} run {}: starting {}",
        result.run,
        peer.name()
    ));
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
    let log_path = session.run_dir(result).join(format!("{}.log", peer.name()));
    if let Some(parent) = log_path.parent() {
        if let Err(error) = std::fs::create_dir_all(parent) {
            result
                .errors
                .push(format!("creating {}: {error}", parent.display()));
            return;
        }
    }
    let mut server = match PeerProcess::start(peer, class, &data.0, &log_path, install, None) {
        Ok(server) => server,
        Err(error) => {
            result.errors.push(error);
            return;
        }
    };
    match server.create_topic(&result.topic, session.scenario.partitions, install) {
        Ok(Some(description)) => session.progress(&format!(
            "{label} run {}: topic {} on {} nodes:\n{}",
            result.run,
            result.topic,
            server.node_count(),
            description.trim_end()
        )),
        Ok(None) => {}
        Err(error) => result.errors.push(error),
    }
    let address = server.address.clone();
    if result.errors.is_empty() {
        work(session, result, &address);
    }
    match server.usage() {
        Ok(usage) => set_usage(result, None, usage),
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
    session.progress(&format!("{label} run {}: done", result.run));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    fn spec(rate: &str) -> RunSpec {
        RunSpec {
            name: None,
            rate: rate.into(),
            warmup_s: None,
            duration_s: None,
        }
    }

    #[test]
    fn half_max_is_half_the_same_systems_max_throughput() {
        let mut max = run_result("kafka", "fsync-max", 500);
        max.rate = "max".into();
        max.throughput_messages_per_s = 40_001.0;
        let resolved = resolve_rate(&spec(HALF_MAX_RATE), &[max.clone()]).expect("known");
        assert_eq!(resolved.rate, "20000");
        assert_eq!(
            resolved.label(),
            "rate-half-max",
            "the label keeps the spec's name"
        );
        assert_eq!(
            resolve_rate(&spec("5000"), &[]).expect("plain").rate,
            "5000"
        );
        max.lost = 1;
        let error = resolve_rate(&spec(HALF_MAX_RATE), &[max]).expect_err("failed max");
        assert!(error.contains("did not succeed"), "{error}");
        assert!(resolve_rate(&spec(HALF_MAX_RATE), &[]).is_err());
    }

    #[test]
    fn every_peer_setting_that_names_its_acks_names_the_acks_peers_ask_for() {
        let acks = format!("acks={PEER_ACKS}");
        for peer in Peer::ALL {
            for class in [Durability::Fsync, Durability::NoFsync] {
                let Ok(setting) = peer_setting(peer, class) else {
                    continue;
                };
                if setting.contains("acks=") {
                    assert!(setting.contains(&acks), "{setting}");
                }
            }
            if let Some(deployment) = peer.kafka_deployment("4.1.1") {
                assert!(
                    !deployment.contains("acks=") || deployment.contains(&acks),
                    "{deployment}"
                );
            }
        }
    }

    #[test]
    fn shardline_states_what_its_acks_mean_from_the_flush_policy() {
        let fsync = shardline_setting("durable", Some("every-batch"), "all", Durability::Fsync);
        assert!(
            fsync.contains("durable") && fsync.contains("fdatasynced"),
            "{fsync}"
        );
        assert!(!fsync.contains('['), "{fsync}");
        let behind =
            shardline_setting("write-behind", Some("never"), "leader", Durability::NoFsync);
        assert!(
            behind.contains("not synced") && !behind.contains('['),
            "{behind}"
        );
        // acks=leader under a policy that syncs waits for the sync: the report says so,
        // and that it is stricter than the class.
        let synced = shardline_setting(
            "throughput",
            Some("interval"),
            "leader",
            Durability::NoFsync,
        );
        assert!(
            synced.contains("fdatasynced") && synced.contains("stricter"),
            "{synced}"
        );
        let weaker = shardline_setting("write-behind", Some("never"), "all", Durability::Fsync);
        assert!(weaker.contains("not this class"), "{weaker}");
        assert!(shardline_setting("x", None, "all", Durability::Fsync).contains("see the profile"));
    }

    /// Every built-in comparison runs shardline with a profile whose flush policy belongs to
    /// its class: fsync classes sync, no-fsync classes do not.
    #[test]
    fn built_in_comparisons_use_a_profile_of_their_class() {
        let tuning = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning");
        let mut seen = 0;
        for (name, _) in crate::scenario::BUILT_IN {
            let scenario = crate::scenario::Scenario::load(name).expect("built in");
            for comparison in &scenario.comparisons {
                let path = tuning.join(format!("{}.toml", comparison.profile));
                let mode = profile_flush_mode(&path)
                    .unwrap_or_else(|| panic!("{}: no flush mode", path.display()));
                let syncs = mode != "never";
                assert_eq!(
                    syncs,
                    comparison.durability == Durability::Fsync,
                    "{name}: {:?} with {} ({mode})",
                    comparison.durability,
                    comparison.profile
                );
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} comparisons");
    }

    #[test]
    fn a_profile_without_a_flush_mode_has_the_default_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bare = dir.path().join("bare.toml");
        std::fs::write(&bare, "name = \"bare\"\n").expect("write");
        assert_eq!(profile_flush_mode(&bare).as_deref(), Some("interval"));
        let never = dir.path().join("never.toml");
        std::fs::write(
            &never,
            "[storage]\nflush = { mode = \"never\", write_delay_us = 0 }\n",
        )
        .expect("write");
        assert_eq!(profile_flush_mode(&never).as_deref(), Some("never"));
        assert_eq!(profile_flush_mode(&dir.path().join("missing.toml")), None);
    }
}
