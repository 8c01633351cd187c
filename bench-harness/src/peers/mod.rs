//! Peer brokers measured beside shardline: Apache Kafka (KRaft, one combined broker and
//! controller, jars from Maven Central), NATS JetStream (Debian's `nats-server`, file
//! storage) and Redis Streams (Debian's `redis-server`, append-only file). They are
//! installed by `bench-harness/peers/install.sh`; the harness starts each on loopback, on
//! a free port, with its data in a temporary directory, and stops it after the run.
//!
//! Each peer runs in a *durability class* that shardline is compared in:
//!
//! | class | what an acknowledgement means | shardline | Kafka | NATS 2.9 | Redis |
//! |---|---|---|---|---|---|
//! | `fsync` | on stable storage (fsync before the ack) | `acks=all`, a profile that fdatasyncs before acking | `log.flush.interval.messages=1` | not available | `appendfsync always` |
//! | `no-fsync` | written to the OS or device, not synced: survives `kill -9`, not power loss | `acks=leader` | default (no flush) | default (sync every 2 min) | `appendfsync everysec` |
//!
//! NATS JetStream's `sync_interval: always` arrived in nats-server 2.10; Debian's 2.9.10
//! refuses the field, so NATS has no fsync-class run (the report says so).

mod kafka;
mod nats;
mod redis;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::broker::{process_usage, ProcessUsage};

pub use kafka::KAFKA_VERSION_DEFAULT;

/// How long a peer may take to accept connections.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(90);
const PEER_START_POLL: Duration = Duration::from_millis(100);
/// How long a peer may take to exit after SIGTERM.
const PEER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const PEER_STOP_POLL: Duration = Duration::from_millis(50);
/// Log lines of a failed peer quoted in an error.
const LOG_TAIL_LINES: usize = 20;

/// The peer brokers the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Kafka,
    Nats,
    Redis,
}

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Kafka, Peer::Nats, Peer::Redis];

    /// Also the loadgen's `--system`.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Kafka => "kafka",
            Peer::Nats => "nats",
            Peer::Redis => "redis",
        }
    }

    pub fn parse(name: &str) -> Result<Peer, String> {
        Peer::ALL
            .into_iter()
            .find(|peer| peer.name() == name)
            .ok_or_else(|| format!("no peer '{name}' (kafka, nats, redis)"))
    }
}

/// What an acknowledgement means, in every system of a comparison alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// On stable storage: fsync (or fdatasync) before the acknowledgement.
    Fsync,
    /// Written to the OS (or, for shardline's O_DIRECT, the device) and not synced:
    /// survives a process crash, not a power loss.
    NoFsync,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::NoFsync => "no-fsync",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Durability::Fsync => "acknowledged once on stable storage (fsync before the ack)",
            Durability::NoFsync => {
                "acknowledged once written, not synced: survives kill -9, not power loss"
            }
        }
    }
}

/// The server settings by which `peer` meets `durability`, or why it cannot.
pub fn peer_setting(peer: Peer, durability: Durability) -> Result<String, String> {
    match (peer, durability) {
        (Peer::Kafka, Durability::Fsync) => Ok(
            "Kafka (KRaft): log.flush.interval.messages=1 (fsync every append before the \
             response), producer acks=all, 1 replica"
                .into(),
        ),
        (Peer::Kafka, Durability::NoFsync) => Ok(
            "Kafka (KRaft): default flush (page cache, no fsync), producer acks=all, 1 replica"
                .into(),
        ),
        (Peer::Nats, Durability::Fsync) => Err(
            "nats-server 2.9.10 (Debian) has no fsync-per-write setting: `sync_interval: \
             always` arrived in 2.10 and 2.9 refuses the field"
                .into(),
        ),
        (Peer::Nats, Durability::NoFsync) => Ok(
            "nats-server 2.9.10: JetStream file storage, 1 replica, server's default sync \
             (fsync every 2 min, none before the PubAck)"
                .into(),
        ),
        (Peer::Redis, Durability::Fsync) => Ok(
            "redis-server: appendonly yes, appendfsync always (AOF fsynced before replies), \
             no RDB snapshots"
                .into(),
        ),
        (Peer::Redis, Durability::NoFsync) => Ok(
            "redis-server: appendonly yes, appendfsync everysec (AOF written before \
             replies, fsynced once a second), no RDB snapshots"
                .into(),
        ),
    }
}

/// Where a peer's installation is expected (Kafka's jars; the others are on PATH).
#[derive(Debug, Clone)]
pub struct PeerInstall {
    pub kafka_version: String,
    pub cache_dir: PathBuf,
}

impl PeerInstall {
    /// `$SHARDLINE_BENCH_CACHE`, else `$XDG_CACHE_HOME/shardline-bench`, else
    /// `~/.cache/shardline-bench` (as install.sh).
    pub fn from_env(kafka_version: &str) -> PeerInstall {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let cache_dir = var("SHARDLINE_BENCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("shardline-bench")))
            .or_else(|| var("HOME").map(|d| PathBuf::from(d).join(".cache/shardline-bench")))
            .unwrap_or_else(|| PathBuf::from(".cache/shardline-bench"));
        PeerInstall {
            kafka_version: kafka_version.to_string(),
            cache_dir,
        }
    }
}

/// A running peer; killed on drop if not stopped.
pub struct PeerProcess {
    pub peer: Peer,
    pub address: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl PeerProcess {
    /// Starts `peer` in `durability` with its data under `dir` (which must exist) and its
    /// output appended to `log_path`, and waits until it accepts connections.
    pub fn start(
        peer: Peer,
        durability: Durability,
        dir: &Path,
        log_path: &Path,
        install: &PeerInstall,
    ) -> Result<PeerProcess, String> {
        peer_setting(peer, durability)?;
        let port = free_port()?;
        let log_path = log_path.to_path_buf();
        let command = match peer {
            Peer::Kafka => kafka::prepare(dir, port, durability, install, &log_path)?,
            Peer::Nats => nats::prepare(dir, port)?,
            Peer::Redis => redis::prepare(dir, port, durability)?,
        };
        let address = format!("127.0.0.1:{port}");
        let child = spawn_logged(command, &log_path)?;
        let mut process = PeerProcess {
            peer,
            address,
            child: Some(child),
            log_path,
        };
        process.wait_until_accepting()?;
        Ok(process)
    }

    fn wait_until_accepting(&mut self) -> Result<(), String> {
        let address: SocketAddr = self.address.parse().map_err(|e| format!("{e}"))?;
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&address, PEER_START_POLL).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited with {status} before accepting connections:\n{}",
                        self.peer.name(),
                        self.log_tail()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not accept connections on {} within {PEER_START_TIMEOUT:?}:\n{}",
                    self.peer.name(),
                    self.address,
                    self.log_tail()
                ));
            }
            std::thread::sleep(PEER_START_POLL);
        }
    }

    /// The last lines of the peer's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    pub fn usage(&self) -> Result<ProcessUsage, String> {
        let pid = self.child.as_ref().map(Child::id);
        process_usage(pid.ok_or("peer is not running")?)
    }

    /// SIGTERM, then waits (SIGKILL after `PEER_STOP_TIMEOUT`). A peer's exit status on
    /// SIGTERM varies (the JVM exits 143), so only a kill is an error.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "SIGTERM to {} {pid}: {}",
                self.peer.name(),
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + PEER_STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(error) => return Err(format!("waiting for {}: {error}", self.peer.name())),
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} ignored SIGTERM for {PEER_STOP_TIMEOUT:?}; killed",
                    self.peer.name()
                ));
            }
            std::thread::sleep(PEER_STOP_POLL);
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `command` with stdout and stderr appended to `log_path`.
fn spawn_logged(mut command: Command, log_path: &Path) -> Result<Child, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))
    };
    let mut log = open()?;
    writeln!(log, "$ {command:?}").map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(open()?))
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", command.get_program()))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// `program` on PATH, or an error saying how to install it.
fn find_program(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{program} is not installed: run bench-harness/peers/install.sh"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_states_its_setting_or_why_it_has_none() {
        for peer in Peer::ALL {
            assert_eq!(Peer::parse(peer.name()), Ok(peer));
            let no_fsync = peer_setting(peer, Durability::NoFsync).expect("every peer");
            assert!(!no_fsync.is_empty());
        }
        let kafka = peer_setting(Peer::Kafka, Durability::Fsync).expect("kafka");
        assert!(kafka.contains("log.flush.interval.messages=1"), "{kafka}");
        let redis = peer_setting(Peer::Redis, Durability::Fsync).expect("redis");
        assert!(redis.contains("appendfsync always"), "{redis}");
        let nats = peer_setting(Peer::Nats, Durability::Fsync).expect_err("2.9 cannot");
        assert!(nats.contains("2.10"), "{nats}");
        assert!(Peer::parse("pulsar").is_err());
    }

    #[test]
    fn durability_classes_serialize_as_their_names() {
        for durability in [Durability::Fsync, Durability::NoFsync] {
            let json = serde_json::to_value(durability).expect("serializes");
            assert_eq!(json, serde_json::json!(durability.name()));
        }
    }

    #[test]
    fn a_free_port_is_a_real_port() {
        assert!(free_port().expect("a port") > 0);
    }
}
