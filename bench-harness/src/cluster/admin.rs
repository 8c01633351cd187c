//! The `shardline` admin commands the harness runs against a local cluster, and what it
//! reads from their output: `cluster status --format json` (is there a controller leader,
//! is every broker registered and alive), `topic create --replication-factor N --config
//! min.insync.replicas=M`, and `topic describe` (is every partition led and fully in
//! sync), whose text is:
//!
//! ```text
//! topic replicated: 8 partitions
//! partition<TAB>leader<TAB>epoch<TAB>replicas<TAB>in-sync<TAB>shard<TAB>start<TAB>high-watermark
//! 0<TAB>1<TAB>1<TAB>1,2,0<TAB>1,2,0<TAB>0<TAB>0<TAB>0
//! config:
//!   min.insync.replicas = 2 (set)
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenario::ClusterSpec;

/// How long one admin command may take (its client has its own, shorter timeouts).
const ADMIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN_COMMAND_POLL: Duration = Duration::from_millis(20);
/// How long a new cluster may take to bring every replica of the new topic in sync.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC_READY_POLL: Duration = Duration::from_millis(200);
/// How the CLI names the broker's refusal of a topic that exists (`ErrorCode`'s name).
const TOPIC_EXISTS_ERROR: &str = "TopicAlreadyExists";
/// The topic configuration key that says how many replicas `acks=all` needs in sync.
const MIN_INSYNC_REPLICAS_KEY: &str = "min.insync.replicas";

/// Runs `shardline <args>` to the end (killed after `ADMIN_COMMAND_TIMEOUT`), with its
/// command line and output appended to `log_path`; its stdout, or an error with its
/// stderr.
pub fn run_admin(shardline: &Path, args: &[String], log_path: &Path) -> Result<String, String> {
    let mut child = Command::new(shardline)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", shardline.display()))?;
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            pipe.map(|pipe| {
                BufReader::new(pipe)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
        })
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + ADMIN_COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for shardline {}: {e}", args.join(" ")))?
        {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(ADMIN_COMMAND_POLL);
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    writeln!(log, "$ shardline {}\n{stdout}\n{stderr}", args.join(" "))
        .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!(
            "shardline {} exited with {status}: {}",
            args.join(" "),
            stderr.trim()
        )),
        None => Err(format!(
            "shardline {} ran past {ADMIN_COMMAND_TIMEOUT:?}; killed",
            args.join(" ")
        )),
    }
}

/// `cluster status` arguments for the cluster at `bootstrap`.
pub fn status_args(bootstrap: &str) -> Vec<String> {
    [
        "cluster", "status", "--broker", bootstrap, "--format", "json",
    ]
    .map(String::from)
    .to_vec()
}

/// Whether `cluster status --format json` shows a controller leader and `brokers` voters,
/// each registered and alive; else what is missing.
pub fn check_status(status: &Value, brokers: u32) -> Result<(), String> {
    if !status["controller_leader"].is_u64() {
        return Err("no controller leader yet".into());
    }
    let nodes = status["nodes"]
        .as_array()
        .ok_or_else(|| format!("no nodes in the cluster status: {status}"))?;
    let ready = nodes
        .iter()
        .filter(|node| {
            [&node["voter"], &node["registered"], &node["alive"]]
                .iter()
                .all(|flag| flag.as_bool() == Some(true))
        })
        .count();
    if ready != brokers as usize {
        return Err(format!(
            "{ready} of {brokers} brokers registered and alive: {}",
            Value::Array(nodes.clone())
        ));
    }
    Ok(())
}

/// `topic create` arguments: `partitions` partitions replicated as `spec` says.
pub fn create_topic_args(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    spec: &ClusterSpec,
) -> Vec<String> {
    vec![
        "topic".into(),
        "create".into(),
        "--broker".into(),
        bootstrap.into(),
        "--topic".into(),
        topic.into(),
        "--partitions".into(),
        partitions.to_string(),
        "--replication-factor".into(),
        spec.replication_factor.to_string(),
        "--config".into(),
        format!("{MIN_INSYNC_REPLICAS_KEY}={}", spec.min_insync_replicas),
    ]
}

/// `topic describe` arguments.
pub fn describe_topic_args(bootstrap: &str, topic: &str) -> Vec<String> {
    ["topic", "describe", "--broker", bootstrap, "--topic", topic]
        .map(String::from)
        .to_vec()
}

/// One partition as `topic describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: u32,
    /// `None` when the description says `none`.
    pub leader: Option<u32>,
    pub replicas: Vec<u32>,
    pub in_sync: Vec<u32>,
}

/// A topic as `topic describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub partition_count: u32,
    pub partitions: Vec<PartitionState>,
    /// `(key, value)` of every configuration line, set or default.
    pub configs: Vec<(String, String)>,
}

fn number(text: &str, what: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{what} '{text}' in the topic description: {e}"))
}

fn node_list(text: &str, what: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .filter(|id| !id.trim().is_empty())
        .map(|id| number(id, what))
        .collect()
}

/// Reads `topic describe` output for `topic`.
pub fn parse_description(text: &str, topic: &str) -> Result<TopicDescription, String> {
    let mut lines = text.lines();
    let heading = lines
        .next()
        .ok_or_else(|| format!("an empty description of topic '{topic}'"))?;
    let count = heading
        .strip_prefix(&format!("topic {topic}: "))
        .and_then(|rest| rest.strip_suffix(" partitions"))
        .ok_or_else(|| format!("not a description of topic '{topic}': '{heading}'"))?;
    let partition_count = number(count, "partition count")?;
    let mut partitions = Vec::new();
    let mut configs = Vec::new();
    let mut in_configs = false;
    for line in lines {
        if line.starts_with("partition\t") || line.trim().is_empty() {
            continue;
        }
        if line == "config:" {
            in_configs = true;
            continue;
        }
        if in_configs {
            let (key, rest) = line
                .trim()
                .split_once(" = ")
                .ok_or_else(|| format!("a config line without ' = ': '{line}'"))?;
            let value = rest.rsplit_once(" (").map_or(rest, |(value, _)| value);
            configs.push((key.to_string(), value.to_string()));
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        let [partition, leader, _epoch, replicas, in_sync, ..] = cells[..] else {
            return Err(format!(
                "a partition line of {} cells: '{line}'",
                cells.len()
            ));
        };
        partitions.push(PartitionState {
            partition: number(partition, "partition")?,
            leader: (leader != "none")
                .then(|| number(leader, "leader"))
                .transpose()?,
            replicas: node_list(replicas, "replica")?,
            in_sync: node_list(in_sync, "in-sync replica")?,
        });
    }
    Ok(TopicDescription {
        partition_count,
        partitions,
        configs,
    })
}

/// Whether `description` is `partitions` partitions replicated as `spec` asks, each with a
/// leader and every replica in sync; else what is missing.
pub fn check_description(
    description: &TopicDescription,
    partitions: u32,
    spec: &ClusterSpec,
) -> Result<(), String> {
    if description.partition_count != partitions
        || description.partitions.len() != partitions as usize
    {
        return Err(format!(
            "{} partitions ({} described), not {partitions}",
            description.partition_count,
            description.partitions.len()
        ));
    }
    let min_insync = description
        .configs
        .iter()
        .find(|(key, _)| key == MIN_INSYNC_REPLICAS_KEY)
        .map(|(_, value)| value.as_str());
    if min_insync != Some(spec.min_insync_replicas.to_string().as_str()) {
        return Err(format!(
            "{MIN_INSYNC_REPLICAS_KEY} is {min_insync:?}, not {}",
            spec.min_insync_replicas
        ));
    }
    let factor = usize::from(spec.replication_factor);
    for state in &description.partitions {
        if state.replicas.len() != factor {
            return Err(format!(
                "partition {} has {} replicas, not {factor}",
                state.partition,
                state.replicas.len()
            ));
        }
        if state.leader.is_none() || state.in_sync.len() != factor {
            return Err(format!("partition not yet ready: {state:?}"));
        }
    }
    Ok(())
}

/// Creates `topic` on the cluster at `bootstrap` with `partitions` partitions replicated as
/// `spec` says, and waits until every partition has a leader and every replica in sync;
/// returns the last description. Every command and its output go to `log_path`.
pub fn create_replicated_topic(
    shardline: &Path,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    spec: &ClusterSpec,
    log_path: &Path,
) -> Result<String, String> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut created = false;
    loop {
        // A creation refused because the topic exists is fine: an earlier attempt made it
        // (the description below checks that it is the topic asked for).
        let creation = if created {
            Ok(())
        } else {
            match run_admin(
                shardline,
                &create_topic_args(bootstrap, topic, partitions, spec),
                log_path,
            ) {
                Err(error) if !error.contains(TOPIC_EXISTS_ERROR) => Err(error),
                _ => Ok(()),
            }
        };
        created |= creation.is_ok();
        let outcome = creation.and_then(|()| {
            let text = run_admin(shardline, &describe_topic_args(bootstrap, topic), log_path)?;
            let description = parse_description(&text, topic)?;
            check_description(&description, partitions, spec).map(|()| text)
        });
        match outcome {
            Ok(text) => return Ok(text),
            Err(error) if Instant::now() > deadline => {
                return Err(format!(
                    "topic '{topic}' with {partitions} partitions of replication factor {} \
                     not ready within {TOPIC_READY_TIMEOUT:?}: {error} (log: {})",
                    spec.replication_factor,
                    log_path.display()
                ))
            }
            Err(_) => std::thread::sleep(TOPIC_READY_POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const THREE: ClusterSpec = ClusterSpec {
        brokers: 3,
        replication_factor: 3,
        min_insync_replicas: 2,
    };

    /// `topic describe` of a topic of 3 partitions on 3 brokers, as the CLI prints it.
    const DESCRIBED: &str = "topic r: 3 partitions\n\
        partition\tleader\tepoch\treplicas\tin-sync\tshard\tstart\thigh-watermark\n\
        0\t1\t1\t1,2,0\t1,2,0\t0\t0\t0\n\
        1\t2\t1\t2,0,1\t2,0,1\t0\t0\t17\n\
        2\t0\t1\t0,1,2\t0,1,2\t0\t0\t0\n\
        config:\n  \
        min.insync.replicas = 2 (set)\n  \
        retention.ms = 2592000000 (default)\n";

    #[test]
    fn admin_arguments_ask_for_the_specs_replication_and_json_status() {
        let create = create_topic_args("127.0.0.1:1,127.0.0.1:2", "r", 8, &THREE).join(" ");
        assert_eq!(
            create,
            "topic create --broker 127.0.0.1:1,127.0.0.1:2 --topic r --partitions 8 \
             --replication-factor 3 --config min.insync.replicas=2"
        );
        assert_eq!(
            status_args("127.0.0.1:1").join(" "),
            "cluster status --broker 127.0.0.1:1 --format json"
        );
        assert_eq!(
            describe_topic_args("127.0.0.1:1", "r").join(" "),
            "topic describe --broker 127.0.0.1:1 --topic r"
        );
    }

    #[test]
    fn a_description_reads_into_partitions_replicas_and_configs() {
        let description = parse_description(DESCRIBED, "r").expect("parses");
        assert_eq!(description.partition_count, 3);
        assert_eq!(
            description.partitions[1],
            PartitionState {
                partition: 1,
                leader: Some(2),
                replicas: vec![2, 0, 1],
                in_sync: vec![2, 0, 1],
            }
        );
        assert_eq!(
            description.configs[0],
            ("min.insync.replicas".to_string(), "2".to_string())
        );
        assert_eq!(check_description(&description, 3, &THREE), Ok(()));
        assert!(parse_description(DESCRIBED, "other").is_err());
        let leaderless = DESCRIBED.replace("2\t0\t1\t0,1,2", "2\tnone\t1\t0,1,2");
        let description = parse_description(&leaderless, "r").expect("parses");
        assert_eq!(description.partitions[2].leader, None);
    }

    #[test]
    fn a_topic_is_ready_only_fully_replicated_in_sync_led_and_configured() {
        let cases = [
            (
                DESCRIBED.replace("1,2,0\t1,2,0", "1,2,0\t1,2"),
                "not yet ready",
            ),
            (
                DESCRIBED.replace("0\t1\t1\t1,2,0", "0\tnone\t1\t1,2,0"),
                "not yet ready",
            ),
            (
                DESCRIBED.replace("1,2,0\t1,2,0", "1\t1"),
                "has 1 replicas, not 3",
            ),
            (
                DESCRIBED.replace("min.insync.replicas = 2", "min.insync.replicas = 1"),
                "min.insync.replicas is Some(\"1\"), not 2",
            ),
            (
                DESCRIBED.replace("3 partitions", "8 partitions"),
                "8 partitions (3 described), not 3",
            ),
        ];
        for (text, reason) in cases {
            let description = parse_description(&text, "r").expect("parses");
            let error = check_description(&description, 3, &THREE).expect_err(reason);
            assert!(error.contains(reason), "{error}");
        }
        let one = ClusterSpec {
            brokers: 1,
            replication_factor: 1,
            min_insync_replicas: 1,
        };
        let single = "topic s: 1 partitions\n\
            partition\tleader\tepoch\treplicas\tin-sync\tshard\tstart\thigh-watermark\n\
            0\t0\t0\t0\t0\t0\t0\t0\nconfig:\n  min.insync.replicas = 1 (set)\n";
        let description = parse_description(single, "s").expect("parses");
        assert_eq!(check_description(&description, 1, &one), Ok(()));
        assert!(check_description(&description, 1, &THREE).is_err());
    }

    #[test]
    fn a_cluster_is_ready_with_a_controller_leader_and_every_voter_alive() {
        let node = |node: u32, alive: bool| {
            json!({"node": node, "address": "127.0.0.1:1", "voter": true,
                   "alive": alive, "registered": true})
        };
        let status = |leader: Value, nodes: Vec<Value>| {
            json!({"answered_by": 0, "controller_leader": leader, "controller_term": 2,
                   "nodes": nodes, "under_replicated": [], "offline": []})
        };
        let ready = status(json!(1), vec![node(0, true), node(1, true), node(2, true)]);
        assert_eq!(check_status(&ready, 3), Ok(()));
        let no_leader = status(
            Value::Null,
            vec![node(0, true), node(1, true), node(2, true)],
        );
        let error = check_status(&no_leader, 3).expect_err("no leader");
        assert!(error.contains("no controller leader"), "{error}");
        let one_dead = status(json!(1), vec![node(0, true), node(1, false), node(2, true)]);
        let error = check_status(&one_dead, 3).expect_err("a dead node");
        assert!(error.contains("2 of 3 brokers"), "{error}");
        let two_known = status(json!(0), vec![node(0, true), node(1, true)]);
        assert!(check_status(&two_known, 3).is_err());
        assert_eq!(
            check_status(&status(json!(0), vec![node(0, true)]), 1),
            Ok(())
        );
    }
}
