//! `shardline broker`: run a broker until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::server::{run_broker, BrokerOptions, Profile};

#[derive(Args)]
pub struct BrokerArgs {
    /// Where the broker keeps its data (created if missing; one broker per directory).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the main port, shared by every shard.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
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
    #[arg(long, default_value_t = 0)]
    broker_id: u32,
    /// The host clients are told to connect to (default: the listen address's IP).
    #[arg(long)]
    advertised_host: Option<String>,
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
    run_broker(BrokerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        first_shard_port: args.shard_port_base,
        shard_count,
        cpus,
        profile,
        broker_id: args.broker_id,
        advertised_host: args.advertised_host,
    })
    .map_err(|e| e.to_string())
}
