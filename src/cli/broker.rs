//! `shardline broker`: run a broker until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::server::{run_broker, BrokerOptions, Profile};

/// The main port when neither a flag nor the config file names one.
const LISTEN_DEFAULT: &str = "127.0.0.1:9092";

#[derive(Args, Debug, Default)]
pub struct BrokerArgs {
    /// This broker's node id in the cluster (the same as --broker-id).
    #[arg(long, conflicts_with = "broker_id")]
    node_id: Option<u32>,
    /// The controller's voters, `ID@HOST:PORT,...` (the internal listener of each; this
    /// node binds its own entry). Leave out for a one-node cluster.
    #[arg(long, value_delimiter = ',')]
    controller_voters: Option<Vec<String>>,
    /// The address clients are told to use, `HOST:PORT` (default: the listen address).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Replicas of topics created without a replication factor (default: the smaller of 3
    /// and the number of voters).
    #[arg(long)]
    default_replication_factor: Option<u32>,
    /// Applied controller log entries between two controller snapshots (each compacts
    /// the log; a voter that fell behind past one catches up from it) [default: 1000].
    #[arg(long)]
    controller_snapshot_every: Option<u64>,
    /// How long a broker may go without heartbeating the controller before it is fenced
    /// and the partitions it leads fail over [default: 6000].
    #[arg(long)]
    broker_session_timeout_ms: Option<u64>,
    /// How often each shard applies retention (`retention.ms`, `retention.bytes`) and
    /// expires idle producers [default: 300000].
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// TLS on the client and internal listeners: this broker's certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (mutual TLS; PEM).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// The CA this broker trusts when it connects to other brokers (default: --tls-client-ca).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Require clients to authenticate: SCRAM-SHA-256 (`shardline user`), or a client
    /// certificate from --tls-client-ca (then optional for the others).
    #[arg(long)]
    sasl: bool,
    /// Enforce access rules (`shardline acl`): what no rule allows is refused.
    #[arg(long)]
    authorization: bool,
    /// Principals that may do anything, comma separated (client certificate common names;
    /// under mutual TLS, include the brokers' own).
    #[arg(long, value_delimiter = ',')]
    super_users: Option<Vec<String>>,
    /// A broker config file (TOML; keys as the flags below, in snake case). Flags given on
    /// the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the broker keeps its data (created if missing; one broker per directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the main port, shared by every shard [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A tuning profile (TOML); see tuning/.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Number of shards (one per core); default: every CPU this process may use.
    #[arg(long)]
    cores: Option<usize>,
    /// Pin shards to these CPUs, comma separated (implies --cores).
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Shard i also listens on this port + i (default: ephemeral ports, in metadata).
    #[arg(long)]
    shard_port_base: Option<u16>,
    /// This broker's id [default: 0].
    #[arg(long)]
    broker_id: Option<u32>,
    /// The host clients are told to connect to (default: the listen address's IP).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Serve Prometheus metrics over HTTP on this address (`GET /metrics`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// The broker config file. Every key is optional; unknown keys are refused. Relative paths
/// are relative to the file's directory.
#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct BrokerConfigFile {
    node_id: Option<u32>,
    controller_voters: Option<Vec<String>>,
    advertised_listener: Option<String>,
    default_replication_factor: Option<u32>,
    controller_snapshot_every: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
    retention_check_interval_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    authorization: Option<bool>,
    super_users: Option<Vec<String>>,
    sasl: Option<bool>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    profile: Option<PathBuf>,
    cores: Option<usize>,
    cpus: Option<Vec<usize>>,
    /// `false` is `--no-pin`.
    pin: Option<bool>,
    shard_port_base: Option<u16>,
    broker_id: Option<u32>,
    advertised_host: Option<String>,
    metrics_listen: Option<SocketAddr>,
}

impl BrokerConfigFile {
    fn load(path: &Path) -> Result<BrokerConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read broker config {}: {e}", path.display()))?;
        let mut file: BrokerConfigFile = toml::from_str(&text)
            .map_err(|e| format!("bad broker config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for relative in [
            &mut file.data_dir,
            &mut file.profile,
            &mut file.tls_cert,
            &mut file.tls_key,
            &mut file.tls_client_ca,
            &mut file.tls_ca,
        ]
        .into_iter()
        .flatten()
        {
            if relative.is_relative() {
                *relative = base.join(&*relative);
            }
        }
        Ok(file)
    }
}

impl BrokerArgs {
    /// The flags over the config file (when one is named): a flag given wins.
    fn merged(mut self) -> Result<BrokerArgs, String> {
        let Some(path) = self.config.take() else {
            return Ok(self);
        };
        let file = BrokerConfigFile::load(&path)?;
        Ok(BrokerArgs {
            node_id: self.node_id.or(file.node_id),
            controller_voters: self.controller_voters.or(file.controller_voters),
            advertised_listener: self.advertised_listener.or(file.advertised_listener),
            default_replication_factor: self
                .default_replication_factor
                .or(file.default_replication_factor),
            controller_snapshot_every: self
                .controller_snapshot_every
                .or(file.controller_snapshot_every),
            broker_session_timeout_ms: self
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms),
            retention_check_interval_ms: self
                .retention_check_interval_ms
                .or(file.retention_check_interval_ms),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            tls_ca: self.tls_ca.or(file.tls_ca),
            authorization: self.authorization || file.authorization == Some(true),
            sasl: self.sasl || file.sasl == Some(true),
            super_users: self.super_users.or(file.super_users),
            config: Some(path),
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            profile: self.profile.or(file.profile),
            cores: self.cores.or(file.cores),
            cpus: self.cpus.or(file.cpus),
            no_pin: self.no_pin || file.pin == Some(false),
            shard_port_base: self.shard_port_base.or(file.shard_port_base),
            broker_id: self.broker_id.or(file.broker_id),
            advertised_host: self.advertised_host.or(file.advertised_host),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        })
    }
}

/// Parses `ID@HOST:PORT` voters; ids unique.
fn parse_voters(entries: &[String]) -> Result<Vec<(u32, SocketAddr)>, String> {
    use std::net::ToSocketAddrs;
    let mut voters: Vec<(u32, SocketAddr)> = Vec::new();
    for entry in entries {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| format!("controller voter '{entry}': expected ID@HOST:PORT"))?;
        let id: u32 = id
            .parse()
            .map_err(|_| format!("controller voter '{entry}': '{id}' is not a node id"))?;
        let address = address
            .to_socket_addrs()
            .map_err(|e| format!("controller voter '{entry}': {e}"))?
            .next()
            .ok_or_else(|| format!("controller voter '{entry}': resolves to nothing"))?;
        if voters.iter().any(|(known, _)| *known == id) {
            return Err(format!("controller voter {id} is listed twice"));
        }
        voters.push((id, address));
    }
    if !voters.is_empty() && !matches!(voters.len(), 1 | 3 | 5) {
        return Err(format!(
            "{} controller voters: a controller quorum has 1, 3 or 5 voters",
            voters.len()
        ));
    }
    Ok(voters)
}

/// Splits `HOST:PORT`.
fn parse_listener(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("advertised listener '{text}': expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("advertised listener '{text}': '{port}' is not a port"))?;
    if host.is_empty() {
        return Err(format!("advertised listener '{text}': no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

pub fn run(args: BrokerArgs) -> Result<(), String> {
    let args = args.merged()?;
    let data_dir = args
        .data_dir
        .clone()
        .ok_or("--data-dir (or data_dir in --config) is required")?;
    let listen = match args.listen {
        Some(listen) => listen,
        None => LISTEN_DEFAULT.parse().expect("the default address parses"),
    };
    let profile = match &args.profile {
        Some(path) => Profile::load(path).map_err(|e| e.to_string())?,
        None => Profile::default(),
    };
    let allowed = allowed_cpus();
    let (shard_count, cpus) = match (&args.cpus, args.cores) {
        (Some(cpus), _) => {
            if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(format!(
                    "--cpus names CPU {cpu}, which this process may not use (allowed: {allowed:?})"
                ));
            }
            (cpus.len(), Some(cpus.clone()))
        }
        (None, Some(0)) => return Err("--cores must be at least 1".into()),
        (None, Some(cores)) if cores > allowed.len() && !args.no_pin => {
            return Err(format!(
                "--cores {cores} but only {} CPUs are allowed; use --no-pin to oversubscribe",
                allowed.len()
            ));
        }
        (None, Some(cores)) => (cores, Some(allowed.iter().copied().take(cores).collect())),
        (None, None) => (allowed.len().max(1), Some(allowed.clone())),
    };
    if shard_count == 0 {
        return Err("no CPU to run a shard on".into());
    }
    let cpus = if args.no_pin { None } else { cpus };
    let controller_voters = parse_voters(args.controller_voters.as_deref().unwrap_or(&[]))?;
    let (advertised_host, advertised_port) = match &args.advertised_listener {
        Some(listener) => {
            let (host, port) = parse_listener(listener)?;
            (Some(host), Some(port))
        }
        None => (args.advertised_host.clone(), None),
    };
    let tls = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(cert), Some(key)) => Some(crate::tls::ServerTlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca.clone(),
            client_certificate_optional: args.sasl,
            ca: args.tls_ca.clone(),
        }),
        (None, None) if args.tls_client_ca.is_some() || args.tls_ca.is_some() => {
            return Err("--tls-client-ca and --tls-ca need --tls-cert and --tls-key".into())
        }
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if args.authorization && tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
        tracing::warn!("--authorization without mutual TLS: every client is ANONYMOUS");
    }
    run_broker(BrokerOptions {
        tls,
        authorization: args.authorization,
        sasl: args.sasl,
        super_users: args.super_users.clone().unwrap_or_default(),
        controller_voters,
        default_replication_factor: args.default_replication_factor.unwrap_or(0),
        controller_snapshot_every: args
            .controller_snapshot_every
            .unwrap_or(crate::constants::CONTROLLER_SNAPSHOT_EVERY_ENTRIES),
        broker_session_timeout_ms: match args.broker_session_timeout_ms {
            Some(ms) if ms < 2 * crate::constants::BROKER_HEARTBEAT_INTERVAL_MS => {
                return Err(format!(
                    "--broker-session-timeout-ms {ms}: must be at least twice the heartbeat interval ({} ms)",
                    crate::constants::BROKER_HEARTBEAT_INTERVAL_MS
                ))
            }
            Some(ms) => ms,
            None => crate::constants::BROKER_SESSION_TIMEOUT_MS,
        },
        retention_check_interval_ms: match args.retention_check_interval_ms {
            Some(ms) if ms < crate::constants::RETENTION_INTERVAL_MS_MIN => {
                return Err(format!(
                    "--retention-check-interval-ms {ms}: must be at least {} ms",
                    crate::constants::RETENTION_INTERVAL_MS_MIN
                ))
            }
            Some(ms) => ms,
            None => crate::constants::RETENTION_INTERVAL_MS,
        },
        advertised_port,
        data_dir,
        listen,
        first_shard_port: args.shard_port_base,
        shard_count,
        cpus,
        profile,
        broker_id: args.node_id.or(args.broker_id).unwrap_or(0),
        advertised_host,
        metrics_listen: args.metrics_listen,
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("broker.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_config_file_sets_what_flags_leave_out_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "data_dir = \"data\"\nlisten = \"127.0.0.1:9200\"\nprofile = \"/etc/p.toml\"\n\
             cores = 2\npin = false\nbroker_id = 7\nshard_port_base = 9300\n",
        );
        let merged = BrokerArgs {
            config: Some(path),
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            ..BrokerArgs::default()
        }
        .merged()
        .unwrap();
        assert_eq!(
            merged.data_dir,
            Some(dir.path().join("data")),
            "relative to the file"
        );
        assert_eq!(
            merged.listen,
            Some("127.0.0.1:9999".parse().unwrap()),
            "the flag wins"
        );
        assert_eq!(merged.profile, Some(PathBuf::from("/etc/p.toml")));
        assert_eq!((merged.cores, merged.no_pin), (Some(2), true));
        assert_eq!(
            (merged.broker_id, merged.shard_port_base),
            (Some(7), Some(9300))
        );
    }

    #[test]
    fn security_keys_are_read_from_the_file_with_paths_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "tls_cert = \"broker.crt\"\ntls_key = \"/keys/broker.key\"\ntls_client_ca = \"ca.pem\"\n\
             sasl = true\nauthorization = true\nsuper_users = [\"admin\", \"broker-0\"]\n\
             retention_check_interval_ms = 1000\n",
        );
        let merged = BrokerArgs {
            config: Some(path),
            ..BrokerArgs::default()
        }
        .merged()
        .unwrap();
        assert_eq!(merged.tls_cert, Some(dir.path().join("broker.crt")));
        assert_eq!(merged.tls_key, Some(PathBuf::from("/keys/broker.key")));
        assert_eq!(merged.tls_client_ca, Some(dir.path().join("ca.pem")));
        assert!(merged.sasl && merged.authorization);
        assert_eq!(
            merged.super_users,
            Some(vec!["admin".to_string(), "broker-0".to_string()])
        );
        assert_eq!(merged.retention_check_interval_ms, Some(1000));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("data_dr = \"x\"\n", "data_dr"),
            ("listen = \"nowhere\"\n", "listen"),
            ("shard_port_base = 70000\n", "shard_port_base"),
            ("cores = \"two\"\n", "cores"),
        ];
        for (text, key) in cases {
            let path = write(dir.path(), text);
            let error = BrokerArgs {
                config: Some(path),
                ..BrokerArgs::default()
            }
            .merged()
            .unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
        let missing = BrokerArgs {
            config: Some(dir.path().join("absent.toml")),
            ..BrokerArgs::default()
        };
        assert!(missing.merged().unwrap_err().contains("absent.toml"));
    }
}
