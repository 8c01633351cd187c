//! The replicated topic of the `kafka-cluster` peer, made with Kafka's own
//! `org.apache.kafka.tools.TopicCommand` (the `kafka-tools` jar): created with
//! `CLUSTER_REPLICATION_FACTOR` replicas and `min.insync.replicas`, then described until
//! every partition has a leader and every replica in sync. The load generator creates
//! Kafka topics with one replica; it finds this one already there and uses it.
//!
//! The description read is TopicCommand's `--describe` text: a tab-separated header line
//! (`Topic: T  TopicId: ..  PartitionCount: 8  ReplicationFactor: 3  Configs: k=v,..`),
//! then one line per partition (`  Topic: T  Partition: 0  Leader: 2  Replicas: 2,3,1
//! Isr: 2,3,1 ..`).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::kafka::{java_and_classpath, Replication};
use super::PeerInstall;

/// How long a new cluster may take to accept the topic and bring every replica in sync.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between two attempts (each attempt starts a JVM: about 1.5 s).
const TOPIC_READY_POLL: Duration = Duration::from_millis(500);
/// Kafka's admin tool.
const TOPIC_COMMAND: &str = "org.apache.kafka.tools.TopicCommand";

/// One partition as `--describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: u32,
    /// `None` when the description says `none` (no leader).
    pub leader: Option<u32>,
    pub replicas: Vec<u32>,
    pub in_sync: Vec<u32>,
}

/// A topic as `--describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub partition_count: u32,
    pub replication_factor: u32,
    /// The topic's own configuration (`Configs:`), as `key=value` entries.
    pub configs: Vec<String>,
    pub partitions: Vec<PartitionState>,
}

/// The `Key: value` fields of one tab-separated description line.
fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split('\t')
        .filter_map(|field| field.split_once(':'))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect()
}

fn field<'a>(fields: &[(&'a str, &'a str)], key: &str, line: &str) -> Result<&'a str, String> {
    fields
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
        .ok_or_else(|| format!("no '{key}' in the topic description line '{line}'"))
}

fn number(text: &str, what: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|e| format!("{what} '{text}' in the topic description: {e}"))
}

fn node_list(text: &str, what: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .filter(|id| !id.is_empty())
        .map(|id| number(id, what))
        .collect()
}

/// Reads TopicCommand's `--describe` output for `topic`.
pub fn parse_description(text: &str, topic: &str) -> Result<TopicDescription, String> {
    let mut header = None;
    let mut partitions = Vec::new();
    for line in text.lines() {
        let fields = fields(line);
        if fields.first() != Some(&("Topic", topic)) {
            continue;
        }
        if fields.iter().any(|(key, _)| *key == "Partition") {
            let leader = field(&fields, "Leader", line)?;
            partitions.push(PartitionState {
                partition: number(field(&fields, "Partition", line)?, "partition")?,
                leader: (leader != "none")
                    .then(|| number(leader, "leader"))
                    .transpose()?,
                replicas: node_list(field(&fields, "Replicas", line)?, "replica")?,
                in_sync: node_list(field(&fields, "Isr", line)?, "in-sync replica")?,
            });
        } else {
            let configs = field(&fields, "Configs", line)?;
            header = Some((
                number(field(&fields, "PartitionCount", line)?, "partition count")?,
                number(
                    field(&fields, "ReplicationFactor", line)?,
                    "replication factor",
                )?,
                configs
                    .split(',')
                    .filter(|entry| !entry.is_empty())
                    .map(str::to_string)
                    .collect(),
            ));
        }
    }
    let (partition_count, replication_factor, configs) =
        header.ok_or_else(|| format!("no description of topic '{topic}' in:\n{text}"))?;
    Ok(TopicDescription {
        partition_count,
        replication_factor,
        configs,
        partitions,
    })
}

/// Whether `description` is `partitions` partitions replicated as `replication` asks, each
/// with a leader and every replica in sync; else what is missing.
pub fn check_description(
    description: &TopicDescription,
    partitions: u32,
    replication: Replication,
) -> Result<(), String> {
    let factor = replication.factor;
    if description.partition_count != partitions
        || description.partitions.len() != partitions as usize
    {
        return Err(format!(
            "{} partitions ({} described), not {partitions}",
            description.partition_count,
            description.partitions.len()
        ));
    }
    if description.replication_factor != factor {
        return Err(format!(
            "replication factor {}, not {factor}",
            description.replication_factor
        ));
    }
    let min_insync = format!("min.insync.replicas={}", replication.min_insync_replicas);
    if !description.configs.contains(&min_insync) {
        return Err(format!(
            "configs {:?} lack {min_insync}",
            description.configs
        ));
    }
    for state in &description.partitions {
        let full =
            state.replicas.len() == factor as usize && state.in_sync.len() == factor as usize;
        if state.leader.is_none() || !full {
            return Err(format!("partition not yet ready: {state:?}"));
        }
    }
    Ok(())
}

/// Runs `command` to the end with its output appended to `log_path`; its stdout, or an
/// error with its output.
fn run_tool(mut command: Command, log_path: &Path) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    writeln!(log, "$ {command:?}\n{stdout}{stderr}")
        .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{TOPIC_COMMAND} exited with {}: {}",
            output.status,
            stderr.trim()
        ))
    }
}

/// Creates `topic` on the cluster at `bootstrap_servers` with `partitions` partitions of
/// `replication` and waits until every replica is in sync; returns the last description.
/// The tool's commands and output are appended to `log_path`.
pub fn create_replicated_topic(
    install: &PeerInstall,
    bootstrap_servers: &str,
    topic: &str,
    partitions: u32,
    replication: Replication,
    log_path: &Path,
) -> Result<String, String> {
    let (java, classpath) = java_and_classpath(install)?;
    let tool = |action: &[&str]| {
        let mut command = Command::new(&java);
        command
            .arg("-cp")
            .arg(&classpath)
            .arg(TOPIC_COMMAND)
            .args(["--bootstrap-server", bootstrap_servers, "--topic", topic])
            .args(action);
        command
    };
    let partitions_text = partitions.to_string();
    let factor_text = replication.factor.to_string();
    let min_insync = format!("min.insync.replicas={}", replication.min_insync_replicas);
    let create = [
        "--create",
        "--if-not-exists",
        "--partitions",
        &partitions_text,
        "--replication-factor",
        &factor_text,
        "--config",
        &min_insync,
    ];
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut created = false;
    loop {
        // `--if-not-exists`: a creation that timed out on our side but happened is fine.
        let creation = if created {
            Ok(())
        } else {
            run_tool(tool(&create), log_path).map(drop)
        };
        created |= creation.is_ok();
        let outcome = creation.and_then(|()| {
            let text = run_tool(tool(&["--describe"]), log_path)?;
            let description = parse_description(&text, topic)?;
            check_description(&description, partitions, replication).map(|()| text)
        });
        match outcome {
            Ok(text) => return Ok(text),
            Err(error) if Instant::now() > deadline => {
                return Err(format!(
                    "Kafka topic '{topic}' with {partitions} partitions of {replication:?} not \
                     ready within {TOPIC_READY_TIMEOUT:?}: {error} (log: {})",
                    log_path.display()
                ))
            }
            Err(_) => std::thread::sleep(TOPIC_READY_POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TopicCommand's `--describe` of a topic on the 3-node cluster (Kafka 4.1.1).
    const DESCRIBED: &str = "Topic: t1\tTopicId: IKb67Jr5Tt-oZ82oKCdN2g\tPartitionCount: 3\t\
        ReplicationFactor: 3\tConfigs: min.insync.replicas=2\n\
        \tTopic: t1\tPartition: 0\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,3,1\tElr: \tLastKnownElr: \n\
        \tTopic: t1\tPartition: 1\tLeader: 3\tReplicas: 3,1,2\tIsr: 3,1,2\tElr: \tLastKnownElr: \n\
        \tTopic: t1\tPartition: 2\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2,3\tElr: \tLastKnownElr: \n";

    const CLUSTER: Replication = Replication {
        factor: 3,
        min_insync_replicas: 2,
    };

    #[test]
    fn a_description_reads_into_partitions_replicas_and_configs() {
        let description = parse_description(DESCRIBED, "t1").expect("parses");
        assert_eq!(
            (description.partition_count, description.replication_factor),
            (3, 3)
        );
        assert_eq!(description.configs, ["min.insync.replicas=2"]);
        assert_eq!(
            description.partitions[1],
            PartitionState {
                partition: 1,
                leader: Some(3),
                replicas: vec![3, 1, 2],
                in_sync: vec![3, 1, 2],
            }
        );
        assert_eq!(check_description(&description, 3, CLUSTER), Ok(()));
        assert!(parse_description(DESCRIBED, "t2").is_err());
    }

    #[test]
    fn a_topic_is_ready_only_fully_replicated_in_sync_and_led() {
        let cases = [
            (DESCRIBED.replace("Isr: 3,1,2", "Isr: 3,1"), "not yet ready"),
            (
                DESCRIBED.replace("Leader: 1", "Leader: none"),
                "not yet ready",
            ),
            (
                DESCRIBED.replace("ReplicationFactor: 3", "ReplicationFactor: 1"),
                "replication factor 1",
            ),
            (
                DESCRIBED.replace("min.insync.replicas=2", "min.insync.replicas=1"),
                "lack min.insync.replicas=2",
            ),
            (
                DESCRIBED.replace("PartitionCount: 3", "PartitionCount: 8"),
                "partitions",
            ),
        ];
        for (text, reason) in cases {
            let description = parse_description(&text, "t1").expect("parses");
            let error = check_description(&description, 3, CLUSTER).expect_err(reason);
            assert!(error.contains(reason), "{error}");
        }
    }
}
