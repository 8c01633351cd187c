//! `shardline log ...`: offline inspection of partition log directories, and the hidden
//! `shardline debug log-writer` that crash tests kill at random moments.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::log::{FlushPolicy, LogConfig, LogShard, ShardLogConfig};
use crate::record::{validate, BatchBuilder, BatchIter, Codec};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Open (recovering) a partition log directory and report its segments and offsets.
    Inspect {
        /// The partition's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Also read every batch and check its checksum.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Append numbered records forever, printing `durable <offset>` after each durable batch.
    LogWriter(LogWriterArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FlushArg {
    EveryBatch,
    Interval,
    Bytes,
    /// Write behind, no fdatasync (the write-behind profile's policy): reported durable once
    /// written, which must survive the writer being killed.
    Never,
}

#[derive(Args)]
pub struct LogWriterArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum, default_value = "every-batch")]
    flush: FlushArg,
    /// Records per batch.
    #[arg(long, default_value_t = 16)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 512)]
    value_bytes: usize,
    /// Segment size (small values make rolls frequent).
    #[arg(long, default_value_t = 256 * 1024)]
    segment_bytes: u64,
    /// Batches whose durability is awaited at once.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Partitions written round-robin, in `<dir>/p<i>` (one shard: their flushes share the
    /// shard's flush rounds). With more than one, reports name the partition:
    /// `start <i> <offset>`, `durable <i> <offset>`.
    #[arg(long, default_value_t = 1)]
    partitions: usize,
    /// Bytes of a shard journal ring in `<dir>/journal` (0: no journal). The journal is
    /// replayed at start, before the partitions open, as the broker does.
    #[arg(long, default_value_t = 0)]
    journal_bytes: u64,
}

pub fn run_log(command: LogCommand) -> Result<(), String> {
    match command {
        LogCommand::Inspect { dir, verify } => inspect(dir, verify),
    }
}

pub fn run_debug(command: DebugCommand) -> Result<(), String> {
    match command {
        DebugCommand::LogWriter(args) => log_writer(args),
    }
}

fn inspect(dir: PathBuf, verify: bool) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    super::run_on_executor(move || async move {
        let started = std::time::Instant::now();
        let shard = LogShard::new(ShardLogConfig::default());
        let config = LogConfig {
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = shard
            .open_partition(&dir, config)
            .await
            .map_err(|e| e.to_string())?;
        println!("directory       {}", dir.display());
        println!("opened in       {:?}", started.elapsed());
        println!("segments        {}", log.segment_count());
        println!("bytes           {}", log.size_bytes());
        println!("log start       {}", log.log_start_offset());
        println!("log end         {}", log.log_end_offset());
        if verify {
            let (batches, records) = verify_all(&log).await?;
            println!("verified        {batches} batches, {records} records, all checksums good");
        }
        log.close().await.map_err(|e| e.to_string())
    })
}

async fn verify_all(log: &crate::log::PartitionLog) -> Result<(u64, u64), String> {
    let (mut batches, mut records) = (0u64, 0u64);
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log
            .read(offset, 1 << 20, u64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        if read.is_empty() {
            return Err(format!("no batch readable at offset {offset}"));
        }
        for chunk in &read.chunks {
            for item in BatchIter::new(chunk) {
                let (header, _) = item.map_err(|e| format!("at offset {offset}: {e}"))?;
                batches += 1;
                records += u64::from(header.record_count);
            }
        }
        offset = read.next_offset;
    }
    Ok((batches, records))
}

/// The value of the record at `offset`: its offset in decimal, then padding.
pub fn numbered_value(offset: u64, value_bytes: usize) -> Vec<u8> {
    let mut value = format!("{offset}:").into_bytes();
    value.resize(value_bytes.max(value.len()), b'.');
    value
}

fn log_writer(args: LogWriterArgs) -> Result<(), String> {
    if args.journal_bytes > 0 {
        let summary = crate::log::journal::replay_blocking(&args.dir)?;
        println!(
            "replayed {} {}",
            summary.batches_applied, summary.partitions
        );
    }
    super::run_on_executor(move || async move {
        let flush = match args.flush {
            FlushArg::EveryBatch => FlushPolicy::EveryBatch,
            FlushArg::Interval => FlushPolicy::Interval { interval_us: 1000 },
            FlushArg::Bytes => FlushPolicy::Bytes {
                bytes: 256 * 1024,
                max_delay_us: 2000,
            },
            FlushArg::Never => FlushPolicy::Never { write_delay_us: 0 },
        };
        let config = LogConfig {
            segment_bytes: args.segment_bytes,
            preallocate_bytes: 256 * 1024,
            retention_ms: None,
            flush,
            ..LogConfig::default()
        };
        let shard = LogShard::new(ShardLogConfig {
            journal: (args.journal_bytes > 0).then(|| crate::log::journal::JournalConfig {
                root: args.dir.clone(),
                shard: 0,
                capacity_bytes: args.journal_bytes,
                segment_write_delay: std::time::Duration::from_millis(
                    crate::constants::JOURNALED_WRITE_DELAY_MS,
                ),
            }),
            ..ShardLogConfig::default()
        });
        let many = args.partitions > 1;
        let mut logs = Vec::with_capacity(args.partitions.max(1));
        for index in 0..args.partitions.max(1) {
            let dir = if many {
                args.dir.join(format!("p{index}"))
            } else {
                args.dir.clone()
            };
            let log = shard
                .open_partition(&dir, config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let name = if many {
                format!("{index} ")
            } else {
                String::new()
            };
            println!("start {name}{}", log.log_end_offset());
            logs.push((std::rc::Rc::new(name), log));
        }
        if many {
            // How the shard's flush rounds went so far: `rounds <started> <members>`.
            let shard = shard.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    let metrics = shard.metrics();
                    println!(
                        "rounds {} {}",
                        metrics.flush_rounds, metrics.flush_round_members
                    );
                    if metrics.journal.commits > 0 {
                        println!(
                            "journal {} {}",
                            metrics.journal.commits, metrics.journal.checkpoints
                        );
                    }
                }
            })
            .detach();
        }
        let permits = std::rc::Rc::new(glommio::sync::Semaphore::new(args.in_flight as u64));
        for (name, log) in logs.iter().cycle() {
            let next = log.log_end_offset();
            let mut builder = BatchBuilder::new(Codec::None);
            for offset in next..next + args.records {
                let value = numbered_value(offset, args.value_bytes);
                builder
                    .push(crate::clock::system().wall_ms(), None, &value, &[])
                    .map_err(|e| e.to_string())?;
            }
            let batch = validate(builder.finish().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let permit = permits
                .clone()
                .acquire_static_permit(1)
                .await
                .map_err(|e| e.to_string())?;
            let info = log.append(batch, 1).await.map_err(|e| e.to_string())?;
            assert_eq!(info.base_offset, next, "a single appender owns the log");
            let (name, log) = (name.clone(), log.clone());
            glommio::spawn_local(async move {
                match log.wait_durable(info.last_offset).await {
                    Ok(()) => println!("durable {name}{}", info.last_offset),
                    Err(error) => {
                        eprintln!("append failed: {error}");
                        std::process::exit(2);
                    }
                }
                drop(permit);
            })
            .detach();
        }
        Ok(())
    })
}
