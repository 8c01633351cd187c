//! Apache Kafka 4.x in KRaft mode: one process that is both broker and controller, run
//! from the jars `install.sh` resolved from Maven Central (`kafka_2.13` and its runtime
//! dependencies) with `java -cp 'libs/*'`: `kafka.tools.StorageTool format`, then
//! `kafka.Kafka server.properties`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{free_port, spawn_logged, Durability, PeerInstall};

/// The Kafka release install.sh fetches by default (`KAFKA_VERSION` there, `--kafka-version`
/// here).
pub const KAFKA_VERSION_DEFAULT: &str = "4.1.1";
/// A fixed KRaft cluster id: base64url (no padding) of the 16 bytes "shardline-bench1".
const CLUSTER_ID: &str = "c2hhcmRsaW5lLWJlbmNoMQ";
/// JVM flags of Kafka's own `kafka-server-start.sh` (heap) and `kafka-run-class.sh` (GC).
const JVM_FLAGS: [&str; 8] = [
    "-Xms1g",
    "-Xmx1g",
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

/// `server.properties` of a single combined broker and controller on loopback.
pub fn server_properties(
    data_dir: &Path,
    port: u16,
    controller_port: u16,
    durability: Durability,
) -> String {
    let mut text = format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         log.dirs={}\n\
         num.partitions=1\n\
         default.replication.factor=1\n\
         min.insync.replicas=1\n\
         offsets.topic.replication.factor=1\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n",
        data_dir.join("kafka-logs").display()
    );
    if durability == Durability::Fsync {
        text.push_str("log.flush.interval.messages=1\n");
    }
    text
}

/// Writes the configuration, formats the storage and returns the broker's command.
pub fn prepare(
    dir: &Path,
    port: u16,
    durability: Durability,
    install: &PeerInstall,
    log_path: &Path,
) -> Result<Command, String> {
    let libs = libs_dir(install)?;
    let java = super::find_program("java")?;
    let controller_port = free_port()?;
    let properties = dir.join("server.properties");
    std::fs::write(
        &properties,
        server_properties(dir, port, controller_port, durability),
    )
    .map_err(|e| format!("writing {}: {e}", properties.display()))?;
    let classpath = format!("{}/*", libs.display());
    let mut format = Command::new(&java);
    format
        .arg("-cp")
        .arg(&classpath)
        .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
        .arg(&properties);
    let status = spawn_logged(format, log_path)?
        .wait()
        .map_err(|e| format!("waiting for Kafka's storage format: {e}"))?;
    if !status.success() {
        return Err(format!(
            "Kafka's storage format exited with {status} (log: {})",
            log_path.display()
        ));
    }
    let mut broker = Command::new(java);
    broker
        .args(JVM_FLAGS)
        .arg("-cp")
        .arg(classpath)
        .arg("kafka.Kafka")
        .arg(properties);
    Ok(broker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_properties_are_one_kraft_node_on_loopback_and_fsync_only_when_asked() {
        let text = server_properties(Path::new("/tmp/k"), 9092, 9093, Durability::Fsync);
        for line in [
            "process.roles=broker,controller",
            "controller.quorum.voters=1@127.0.0.1:9093",
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            "log.dirs=/tmp/k/kafka-logs",
            "log.flush.interval.messages=1",
            "auto.create.topics.enable=false",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let default = server_properties(Path::new("/tmp/k"), 9092, 9093, Durability::NoFsync);
        assert!(!default.contains("log.flush"), "{default}");
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
