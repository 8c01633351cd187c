//! The `shardline` command line. Each subcommand lives in its own file; this one parses.

mod acl_tools;
mod broker;
mod client_tools;
mod quota_tools;
mod user_tools;
pub use client_tools::SecurityArgs;
mod cluster_tools;
mod group_tools;
mod log_tools;
mod tuning;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "A thread-per-core persistent log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log, as a tracing filter (`info`, `warn,shardline::log=debug`, ...); default:
    /// `SHARDLINE_LOG`, else `RUST_LOG`, else `info`.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// How log lines look on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker until SIGTERM or SIGINT.
    Broker(broker::BrokerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(client_tools::TopicCommand),
    /// List and describe consumer groups (members, assignments, offsets, lag); reset offsets.
    #[command(subcommand)]
    Group(group_tools::GroupCommand),
    /// Send each line of stdin as one message.
    Produce(client_tools::ProduceArgs),
    /// Print messages of a topic.
    Consume(client_tools::ConsumeArgs),
    /// SCRAM-SHA-256 users: create (or change a password), delete, list.
    #[command(subcommand)]
    User(user_tools::UserCommand),
    /// Produce and fetch byte-rate quotas per principal or client id.
    #[command(subcommand)]
    Quota(quota_tools::QuotaCommand),
    /// Access rules: who may do what to which topic, group or the cluster.
    #[command(subcommand)]
    Acl(acl_tools::AclCommand),
    /// The cluster: its status, or a local cluster for trying things out.
    #[command(subcommand)]
    Cluster(cluster_tools::ClusterCommand),
    /// Work with partition log directories directly (offline; the broker must not be using them).
    #[command(subcommand)]
    Log(log_tools::LogCommand),
    /// Check how this machine differs from what a tuning profile expects.
    #[command(subcommand)]
    Tuning(tuning::TuningCommand),
    /// Tools for tests of the storage engine.
    #[command(subcommand, hide = true)]
    Debug(log_tools::DebugCommand),
}

/// Parses the command line, runs the command, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = init_tracing(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("shardline: {message}");
        return ExitCode::FAILURE;
    }
    let outcome = match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Topic(command) => client_tools::run_topic(command),
        Command::Group(command) => group_tools::run_group(command),
        Command::Produce(args) => client_tools::run_produce(args),
        Command::Consume(args) => client_tools::run_consume(args),
        Command::Cluster(command) => cluster_tools::run_cluster(command),
        Command::Acl(command) => acl_tools::run_acl(command),
        Command::Quota(command) => quota_tools::run_quota(command),
        Command::User(command) => user_tools::run_user(command),
        Command::Log(command) => log_tools::run_log(command),
        Command::Tuning(command) => tuning::run_tuning(command),
        Command::Debug(command) => log_tools::run_debug(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shardline: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter: the flag, else `SHARDLINE_LOG`, else `RUST_LOG`, else `info`.
fn log_filter(flag: Option<&str>) -> Result<tracing_subscriber::EnvFilter, String> {
    let from_env = || {
        ["SHARDLINE_LOG", "RUST_LOG"]
            .iter()
            .find_map(|name| std::env::var(name).ok())
    };
    let directives = flag
        .map(str::to_string)
        .or_else(from_env)
        .unwrap_or_else(|| "info".to_string());
    tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| format!("bad log filter '{directives}': {e}"))
}

fn init_tracing(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = log_filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Runs `body` on one unpinned glommio executor with an io memory that fits an 8 MiB memlock.
pub(crate) fn run_on_executor<T, F, Fut>(body: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("shardline-cli")
        .io_memory(crate::constants::CLI_IO_MEMORY_BYTES)
        .spawn(body)
        .map_err(|e| format!("cannot start an io_uring executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?
}
