//! `shardline topic ...`, `shardline produce`, `shardline consume`: the client from the shell.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};

use crate::client::{
    Admin, Cluster, Consumer, ConsumerConfig, Fetched, Producer, ProducerConfig, StartFrom,
};
use crate::protocol::{Acks, OffsetSpec};

/// Lines read from stdin that may wait for the producer.
const STDIN_LINES_QUEUED: usize = 4096;

#[derive(Args)]
pub struct BrokerArg {
    /// The broker to talk to (several, comma separated, are tried in turn).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(super) broker: String,
    #[command(flatten)]
    pub(super) tls: SecurityArgs,
}

/// How a client reaches brokers that listen with TLS.
#[derive(Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// Connect over TLS, trusting brokers whose certificate this CA issued (PEM).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate to present (brokers that require mutual TLS; PEM).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Check the broker's certificate for this name instead of the broker's IP address.
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Authenticate as this user (SCRAM-SHA-256); the password comes from
    /// --sasl-password-file, else the SHARDLINE_SASL_PASSWORD environment variable.
    #[arg(long)]
    pub sasl_user: Option<String>,
    /// A file whose first line is the password of --sasl-user.
    #[arg(long, requires = "sasl_user")]
    pub sasl_password_file: Option<std::path::PathBuf>,
}

impl SecurityArgs {
    /// The SCRAM login these flags ask for (`None`: no SCRAM).
    pub fn login(&self) -> Result<Option<crate::security::Login>, String> {
        let Some(user) = &self.sasl_user else {
            return Ok(None);
        };
        let password = match &self.sasl_password_file {
            Some(path) => read_password(path)?,
            None => std::env::var("SHARDLINE_SASL_PASSWORD").map_err(|_| {
                "--sasl-user needs --sasl-password-file or SHARDLINE_SASL_PASSWORD".to_string()
            })?,
        };
        Ok(Some(crate::security::Login {
            user: user.clone(),
            password,
        }))
    }

    /// The client TLS these flags ask for (`None`: plaintext).
    pub fn client_tls(&self) -> Result<Option<crate::tls::ClientTls>, String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        crate::tls::ClientTls::new(ca, identity, self.tls_server_name.as_deref())
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl BrokerArg {
    /// The cluster behind `--broker`, over TLS and with SCRAM when asked.
    pub(super) fn cluster(&self, shard_aware: bool) -> Result<Rc<Cluster>, String> {
        let tls = self.tls.client_tls()?;
        let login = self.tls.login()?;
        Cluster::with_security(&self.broker, "shardline-cli", shard_aware, tls, login)
            .map_err(error_text)
    }
}

/// The first line of a password file.
pub(super) fn read_password(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the password file {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(format!("{}: the first line is empty", path.display()));
    }
    Ok(password)
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition, on distinct brokers (default: the cluster's, the
        /// smaller of 3 and the number of controller voters).
        #[arg(long, default_value_t = 0)]
        replication_factor: u16,
        /// A topic config entry `key=value` (repeatable), e.g. retention.ms=3600000.
        #[arg(long = "config", value_parser = parse_entry)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Show a topic's partitions (owning shard, offsets) and configuration.
    Describe {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
    },
    /// Move a partition's leadership to another in-sync replica (a clean handover).
    Elect {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// The broker to lead (default: the next live in-sync replica).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Move a partition's replicas to other brokers: the new replicas catch up, then the
    /// set switches (a leader outside it hands over). Returns once started; `topic
    /// describe` shows the replicas.
    Reassign {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// The brokers to hold the partition, comma separated; the first leads by
        /// preference.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
    },
    /// Delete a topic and its data.
    Delete {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
    },
    /// Change a topic's configuration.
    Alter {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        topic: String,
        /// `key=value` to set (repeatable).
        #[arg(long = "set", value_parser = parse_entry)]
        set: Vec<(String, String)>,
        /// A key to return to its default (repeatable).
        #[arg(long = "reset")]
        reset: Vec<String>,
    },
}

fn parse_entry(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not key=value"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

/// `shardline produce --retries` by default: 10 tries after the first, 2.75 s of backoff
/// with the producer's defaults (the library's producer retries until its delivery timeout).
pub const CLI_PRODUCE_RETRIES_DEFAULT: u32 = 10;

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    broker: BrokerArg,
    #[arg(long)]
    topic: String,
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// Split each line at the first SEP: the key before it, the value after.
    #[arg(long)]
    key_separator: Option<String>,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Tries after the first for a refused or unanswered batch, before its lines are
    /// reported failed. The default gives up within seconds, as a console tool should;
    /// pass a large number to wait out a leader election (up to the producer's 2-minute
    /// delivery timeout).
    #[arg(long, default_value_t = CLI_PRODUCE_RETRIES_DEFAULT)]
    retries: u32,
    /// Connect to the broker's main port only (no shard-aware routing).
    #[arg(long)]
    no_shard_routing: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FromArg {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FormatArg {
    Text,
    Json,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub(super) broker: BrokerArg,
    #[arg(long)]
    pub(super) topic: String,
    /// Consume as a member of this consumer group: the group's members share the topic's
    /// partitions, and the group's committed offsets say where to start (`--from` applies
    /// only to partitions the group never committed).
    #[arg(long)]
    pub(super) group: Option<String>,
    #[command(flatten)]
    pub(super) membership: super::group_tools::MembershipArgs,
    #[arg(long, value_enum, default_value = "earliest")]
    pub(super) from: FromArg,
    /// Stop after this many messages.
    #[arg(long)]
    pub(super) max_messages: Option<u64>,
    /// Stop once no message has arrived for this long.
    #[arg(long)]
    pub(super) idle_timeout_ms: Option<u64>,
    #[arg(long, value_enum, default_value = "text")]
    pub(super) format: FormatArg,
    #[arg(long)]
    pub(super) no_shard_routing: bool,
}

pub(super) fn error_text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// An admin client for the CLI's topic commands.
fn cli_admin(broker: &BrokerArg) -> Result<Admin, String> {
    Ok(Admin::new(broker.cluster(false)?))
}

pub fn run_topic(command: TopicCommand) -> Result<(), String> {
    super::run_on_executor(move || async move {
        match command {
            TopicCommand::Create {
                broker,
                topic,
                partitions,
                replication_factor,
                configs,
            } => {
                let admin = cli_admin(&broker)?;
                admin
                    .create_topic_replicated(&topic, partitions, replication_factor, &configs)
                    .await
                    .map_err(error_text)?;
                println!("created topic {topic} with {partitions} partitions");
            }
            TopicCommand::List { broker } => {
                let admin = cli_admin(&broker)?;
                for topic in admin.list_topics().await.map_err(error_text)? {
                    println!("{}\t{} partitions", topic.name, topic.partitions.len());
                }
            }
            TopicCommand::Describe { broker, topic } => describe(&broker, &topic).await?,
            TopicCommand::Elect {
                broker,
                topic,
                partition,
                to,
            } => {
                let admin = cli_admin(&broker)?;
                admin
                    .elect_leader(&topic, partition, to)
                    .await
                    .map_err(error_text)?;
                println!("leadership of {topic}/{partition} moved");
            }
            TopicCommand::Reassign {
                broker,
                topic,
                partition,
                replicas,
            } => {
                let admin = cli_admin(&broker)?;
                admin
                    .reassign_partition(&topic, partition, &replicas)
                    .await
                    .map_err(error_text)?;
                println!("{topic}/{partition} is moving to replicas {replicas:?}");
            }
            TopicCommand::Delete { broker, topic } => {
                let admin = cli_admin(&broker)?;
                admin.delete_topic(&topic).await.map_err(error_text)?;
                println!("deleted topic {topic}");
            }
            TopicCommand::Alter {
                broker,
                topic,
                set,
                reset,
            } => {
                let admin = cli_admin(&broker)?;
                admin
                    .alter_configs(&topic, &set, &reset)
                    .await
                    .map_err(error_text)?;
                println!("altered topic {topic}");
            }
        }
        Ok(())
    })
}

async fn describe(broker: &BrokerArg, name: &str) -> Result<(), String> {
    let cluster = broker.cluster(false)?;
    let admin = Admin::new(cluster.clone());
    let topic = cluster.topic(name).await.map_err(error_text)?;
    println!("topic {name}: {} partitions", topic.partitions.len());
    println!("partition\tleader\tepoch\treplicas\tin-sync\tshard\tstart\thigh-watermark");
    let list = |ids: &[u32]| {
        ids.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for partition in &topic.partitions {
        // A leader that cannot be reached (down, or moving) leaves its offsets unknown; the
        // rest of the table still stands.
        let admin = &admin;
        let offset = |spec| async move {
            match admin.list_offset(name, partition.partition, spec).await {
                Ok(offset) => offset.to_string(),
                Err(error) => {
                    eprintln!(
                        "partition {}: offsets unknown: {error}",
                        partition.partition
                    );
                    "?".to_string()
                }
            }
        };
        let start = offset(OffsetSpec::Earliest).await;
        let end = offset(OffsetSpec::Latest).await;
        let leader = partition
            .leader_broker
            .map_or_else(|| "none".to_string(), |l| l.to_string());
        println!(
            "{}\t{leader}\t{}\t{}\t{}\t{}\t{start}\t{end}",
            partition.partition,
            partition.leader_epoch,
            list(&partition.replicas),
            list(&partition.in_sync_replicas),
            partition.shard
        );
    }
    println!("config:");
    for entry in admin.describe_configs(name).await.map_err(error_text)? {
        let origin = if entry.is_default { "default" } else { "set" };
        println!("  {} = {} ({origin})", entry.key, entry.value);
    }
    Ok(())
}

/// Reads stdin on its own thread (blocking reads must not stall the executor).
fn stdin_lines() -> crossbeam::channel::Receiver<std::io::Result<String>> {
    let (sender, receiver) = crossbeam::channel::bounded(STDIN_LINES_QUEUED);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if sender.send(line).is_err() || failed {
                break;
            }
        }
    });
    receiver
}

pub fn run_produce(args: ProduceArgs) -> Result<(), String> {
    super::run_on_executor(move || async move {
        let cluster = args
            .broker
            .cluster(!args.no_shard_routing)
            .map_err(error_text)?;
        cluster.topic(&args.topic).await.map_err(error_text)?;
        let config = ProducerConfig {
            acks: match args.acks {
                AcksArg::None => Acks::None,
                AcksArg::Leader => Acks::Leader,
                AcksArg::All => Acks::All,
            },
            linger: Duration::from_millis(args.linger_ms),
            batch_bytes: args.batch_bytes,
            retries: args.retries,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(cluster, config);
        let lines = stdin_lines();
        let acknowledged = Rc::new(std::cell::Cell::new(0u64));
        let first_error: Rc<std::cell::RefCell<Option<String>>> = Rc::default();
        let mut sent = 0u64;
        loop {
            let line = match lines.try_recv() {
                Ok(line) => line.map_err(|e| format!("reading stdin: {e}"))?,
                Err(crossbeam::channel::TryRecvError::Empty) => {
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                Err(crossbeam::channel::TryRecvError::Disconnected) => break,
            };
            let (key, value) = match &args.key_separator {
                Some(separator) => match line.split_once(separator.as_str()) {
                    Some((key, value)) => (Some(key.as_bytes()), value.as_bytes()),
                    None => (None, line.as_bytes()),
                },
                None => (None, line.as_bytes()),
            };
            sent += 1;
            match producer.send(&args.topic, key, value).await {
                Ok(delivery) => {
                    let acknowledged = acknowledged.clone();
                    let first_error = first_error.clone();
                    glommio::spawn_local(async move {
                        match delivery.wait().await {
                            Ok(_) => acknowledged.set(acknowledged.get() + 1),
                            Err(error) => {
                                first_error.borrow_mut().get_or_insert(error.to_string());
                            }
                        }
                    })
                    .detach();
                }
                Err(error) => {
                    first_error.borrow_mut().get_or_insert(error.to_string());
                }
            }
        }
        producer.flush().await;
        // Deliveries resolve just after their batch completes; let those tasks run.
        glommio::timer::sleep(Duration::from_millis(1)).await;
        let acknowledged = acknowledged.get();
        eprintln!("acknowledged {acknowledged} of {sent} messages");
        let first_error = first_error.borrow().clone();
        match first_error {
            Some(error) => Err(format!(
                "{} messages not acknowledged; first error: {error}",
                sent - acknowledged
            )),
            None if acknowledged < sent => {
                Err(format!("{} messages not acknowledged", sent - acknowledged))
            }
            None => Ok(()),
        }
    })
}

/// Per partition, the offset after the last record printed.
pub(super) type PrintedUpTo = BTreeMap<(String, u32), u64>;

/// Prints the records of one poll, one line each, until `consumed` reaches `limit`.
/// Returns how many it printed and, per partition, the offset after the last one printed.
pub(super) fn print_records(
    fetched: &Fetched,
    format: FormatArg,
    consumed: &mut u64,
    limit: u64,
) -> Result<(usize, PrintedUpTo), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    let mut printed = BTreeMap::new();
    let mut count = 0;
    fetched
        .for_each(|topic, partition, record| {
            if *consumed >= limit || write_error.is_some() {
                return;
            }
            *consumed += 1;
            count += 1;
            printed.insert((topic.to_string(), partition), record.offset + 1);
            let line = match format {
                FormatArg::Text => text_of(record.value),
                FormatArg::Json => serde_json::json!({
                    "partition": partition,
                    "offset": record.offset,
                    "key": record.key.map(text_of),
                    "value": text_of(record.value),
                    "timestamp": record.timestamp_ms,
                })
                .to_string(),
            };
            if let Err(error) = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())
            {
                write_error = Some(error);
            }
        })
        .map_err(error_text)?;
    match write_error {
        Some(error) => Err(format!("writing stdout: {error}")),
        None => Ok((count, printed)),
    }
}

pub(super) fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn run_consume(args: ConsumeArgs) -> Result<(), String> {
    if args.group.is_some() {
        return super::group_tools::run_group_consume(args);
    }
    super::run_on_executor(move || async move {
        let cluster = args
            .broker
            .cluster(!args.no_shard_routing)
            .map_err(error_text)?;
        let config = ConsumerConfig {
            max_wait: Duration::from_millis(200),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(cluster, config);
        let start = match args.from {
            FromArg::Earliest => StartFrom::Earliest,
            FromArg::Latest => StartFrom::Latest,
        };
        consumer
            .assign(&args.topic, None, start)
            .await
            .map_err(error_text)?;
        let limit = args.max_messages.unwrap_or(u64::MAX);
        let idle = args.idle_timeout_ms.map(Duration::from_millis);
        let mut consumed = 0u64;
        let mut last_message = Instant::now();
        while consumed < limit {
            let fetched = consumer.poll().await.map_err(error_text)?;
            let (count, _) = print_records(&fetched, args.format, &mut consumed, limit)?;
            if count > 0 {
                last_message = Instant::now();
            } else if idle.is_some_and(|idle| last_message.elapsed() >= idle) {
                break;
            }
        }
        eprintln!("consumed {consumed} messages");
        Ok(())
    })
}
