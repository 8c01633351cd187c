//! shardline-bench: runs a named scenario (a workload and its runs) against each tuning
//! profile, starting a fresh broker for each run and stopping it afterwards, drives it with
//! `shardline-loadgen`, and writes a report directory: `report.md`, `report.json`, plots
//! (SVG and PNG: latency by percentile, throughput per run, throughput over time) and every
//! run's loadgen JSON and HdrHistogram files.
//!
//! The harness drives the broker from outside, through its binaries only. Scenarios with
//! `[[comparisons]]` (the built-in `peers`) also run peer brokers (Kafka with one node or a
//! replicating cluster of three, NATS JetStream, Redis Streams; installed by
//! `bench-harness/peers/install.sh`) at equal durability and report shardline's ratio to
//! each. Scenarios with `[replication]` (the built-in `replicated`) run each load on
//! clusters of shardline brokers (`shardline cluster local`) and report each cluster's
//! ratio to the first; with `--peers kafka-cluster` also on Kafka's 3-broker cluster at the
//! same setting, and report shardline's 3 brokers ÷ Kafka's 3.

mod broker;
mod cluster;
mod comparison;
mod comparison_report;
mod device;
mod figures;
mod hog;
mod loadgen;
mod peers;
mod plot;
mod plot_time;
mod process_group;
mod render;
mod replicated;
mod replicated_peer;
mod replicated_peer_report;
mod replicated_report;
mod report;
mod results;
mod scenario;
mod scrape;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "shardline-bench",
    about = "Runs a benchmark scenario against each tuning profile and writes a report \
             (markdown table, JSON, SVG and PNG plots of latency by percentile, throughput and \
             throughput over time)"
)]
pub struct Args {
    /// A built-in scenario (quick, omb-1-topic-100-partitions-1kb, spike, many-topics,
    /// peers, replicated) or a scenario file.
    #[arg(long, default_value = "quick")]
    pub scenario: String,
    /// Only these of the scenario's profiles, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub profiles: Option<Vec<String>>,
    /// The peers of a comparison scenario, comma separated (kafka, kafka-cluster, nats,
    /// redis; `none` for shardline alone), instead of the scenario's list. `kafka-cluster`
    /// is three Kafka nodes replicating every partition three times (acks=all,
    /// min.insync.replicas=2); with `--scenario replicated` it runs beside shardline's
    /// 3-broker cluster (the only peer that scenario takes).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// The Kafka release installed by `bench-harness/peers/install.sh` (its KAFKA_VERSION).
    #[arg(long, default_value = peers::KAFKA_VERSION_DEFAULT)]
    pub kafka_version: String,
    /// The report directory (default: target/bench-reports/<scenario>-<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The broker binary (default: `shardline` next to this binary).
    #[arg(long)]
    pub shardline: Option<PathBuf>,
    /// The load generator (default: `shardline-loadgen` next to this binary).
    #[arg(long)]
    pub loadgen: Option<PathBuf>,
    /// Where the tuning profiles are (default: ./tuning, else the repository's tuning/).
    #[arg(long)]
    pub tuning_dir: Option<PathBuf>,
    /// Never pin the broker's shards (tests; shared machines). By default they are pinned
    /// apart from the load generator when the machine has at least four CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Parent of the brokers' temporary data directories (default: the system temp dir).
    #[arg(long)]
    pub data_parent: Option<PathBuf>,
    /// Run the broker with TLS on its listeners (this certificate chain, PEM) and the load
    /// generator over TLS; with --tls-key and --tls-ca. Single-broker scenarios only.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA the load generator trusts (the one that issued --tls-cert; PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Have the load generator sign in as this SCRAM user: the harness creates the user on
    /// each broker it starts (with --sasl-password-file's password) before the load runs.
    #[arg(long, requires = "sasl_password_file")]
    pub sasl_user: Option<String>,
    /// The password of --sasl-user (the file's first line).
    #[arg(long, requires = "sasl_user")]
    pub sasl_password_file: Option<PathBuf>,
    /// Run a real Prometheus (on PATH) that scrapes every broker during the scenario, and
    /// plot the throughput it saw (scraped-throughput.svg/.png). Single-broker scenarios.
    #[arg(long)]
    pub prometheus: bool,
    /// Run a disk hog beside the brokers for the whole scenario: one thread writing 1 MiB
    /// blocks with an fdatasync every 64 MiB into the brokers' data parent (same device).
    /// The report says how much it wrote.
    #[arg(long)]
    pub disk_hog: bool,
    /// Before the first broker starts, measure what the data parent's device can write
    /// (new blocks, blocks already written, and 8 files each synced after every write; 2.5 GiB
    /// written, at most 1 GiB of space at once) and put it at the head of the report, as a
    /// reference for what a syncing profile can get from the device.
    #[arg(long)]
    pub device_probe: bool,
}

/// Exit status when the harness itself could not run (bad flags, missing binaries ...).
const EXIT_HARNESS_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    match session::run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("shardline-bench: some runs failed (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("shardline-bench: {error}");
            ExitCode::from(EXIT_HARNESS_ERROR)
        }
    }
}
