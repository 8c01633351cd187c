//! `shardline group list|describe|reset-offsets` and `shardline consume --group`.

use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};

use super::client_tools::{error_text, print_records, BrokerArg, ConsumeArgs, FormatArg, FromArg};
use crate::client::{Admin, GroupConfig, GroupConsumer, OwnershipChange, StartFrom};
use crate::protocol::{AssignmentStrategy, OffsetSpec, ResetTo, TopicPartitions};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum StrategyArg {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl From<StrategyArg> for AssignmentStrategy {
    fn from(strategy: StrategyArg) -> AssignmentStrategy {
        match strategy {
            StrategyArg::Range => AssignmentStrategy::Range,
            StrategyArg::RoundRobin => AssignmentStrategy::RoundRobin,
            StrategyArg::CooperativeSticky => AssignmentStrategy::CooperativeSticky,
        }
    }
}

/// How `consume --group` takes part in its group.
#[derive(Args, Debug)]
pub struct MembershipArgs {
    /// How the group spreads partitions (every member of a group must use the same).
    #[arg(long, value_enum, default_value = "cooperative-sticky")]
    strategy: StrategyArg,
    /// A stable id for this member: restarted within the session timeout, it gets its
    /// partitions back without a rebalance.
    #[arg(long)]
    instance_id: Option<String>,
    /// Missing heartbeats for this long removes the member.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Commit the consumed position this often (0: only on exit and before giving
    /// partitions back).
    #[arg(long, default_value_t = 1000)]
    auto_commit_ms: u64,
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List the groups the broker coordinates.
    List {
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Show a group's state, members, assignments, committed offsets and lag per partition.
    Describe {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        group: String,
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
    },
    /// Move a group's committed offsets of a topic (the group must have no members).
    ResetOffsets {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, timestamp:MS (ms since the epoch) or offset:N.
        #[arg(long, value_parser = parse_reset_to)]
        to: ResetTo,
        /// Only these partitions (comma separated); all by default.
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<u32>>,
        /// Show the new offsets without storing them.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_reset_to(text: &str) -> Result<ResetTo, String> {
    match text {
        "earliest" => return Ok(ResetTo::Spec(OffsetSpec::Earliest)),
        "latest" => return Ok(ResetTo::Spec(OffsetSpec::Latest)),
        _ => {}
    }
    let (kind, value) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}': expected earliest, latest, timestamp:MS or offset:N"))?;
    match kind {
        "timestamp" => value
            .parse::<i64>()
            .map(|ms| ResetTo::Spec(OffsetSpec::Timestamp(ms)))
            .map_err(|e| format!("timestamp '{value}': {e}")),
        "offset" => value
            .parse::<u64>()
            .map(ResetTo::Offset)
            .map_err(|e| format!("offset '{value}': {e}")),
        _ => Err(format!(
            "'{text}': expected earliest, latest, timestamp:MS or offset:N"
        )),
    }
}

fn admin(broker: &BrokerArg) -> Result<Admin, String> {
    Ok(Admin::new(broker.cluster(false).map_err(error_text)?))
}

fn partitions_text(lists: &[TopicPartitions]) -> String {
    let parts: Vec<String> = lists
        .iter()
        .flat_map(|l| l.partitions.iter().map(move |p| format!("{}/{p}", l.topic)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

pub fn run_group(command: GroupCommand) -> Result<(), String> {
    super::run_on_executor(move || async move {
        match command {
            GroupCommand::List { broker } => {
                let groups = admin(&broker)?.list_groups().await.map_err(error_text)?;
                println!("GROUP\tSTATE\tMEMBERS\tSTRATEGY");
                for group in groups {
                    let strategy = group
                        .strategy
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{}\t{:?}\t{}\t{strategy}",
                        group.group, group.state, group.members
                    );
                }
            }
            GroupCommand::Describe {
                broker,
                group,
                format,
            } => {
                let described = admin(&broker)?
                    .describe_group(&group)
                    .await
                    .map_err(error_text)?;
                if format == FormatArg::Json {
                    println!("{}", describe_json(&described));
                } else {
                    print_description(&described);
                }
            }
            GroupCommand::ResetOffsets {
                broker,
                group,
                topic,
                to,
                partitions,
                dry_run,
            } => {
                let results = admin(&broker)?
                    .reset_offsets(&group, &topic, partitions, to, dry_run)
                    .await
                    .map_err(error_text)?;
                let mut failed = 0;
                for result in &results {
                    if result.error.is_ok() {
                        println!("{topic}/{}\t{}", result.partition, result.offset);
                    } else {
                        failed += 1;
                        println!("{topic}/{}\t{}", result.partition, result.error);
                    }
                }
                let verb = if dry_run { "would reset" } else { "reset" };
                eprintln!(
                    "{verb} {} partitions of group {group}",
                    results.len() - failed
                );
                if failed > 0 {
                    return Err(format!("{failed} partitions could not be reset"));
                }
            }
        }
        Ok(())
    })
}

fn print_description(described: &crate::protocol::DescribeGroupResponse) {
    let strategy = described
        .strategy
        .map(|s| format!("{s:?}"))
        .unwrap_or_else(|| "-".into());
    println!(
        "group {}  state {:?}  generation {}  strategy {strategy}  coordinator shard {}",
        described.group, described.state, described.generation, described.coordinator_shard
    );
    if !described.message.is_empty() {
        println!("{}", described.message);
    }
    println!("MEMBER\tINSTANCE\tLAST_HEARTBEAT_MS\tOWNED\tTARGET");
    for member in &described.members {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            member.member_id,
            member.instance_id.as_deref().unwrap_or("-"),
            member.last_heartbeat_ms_ago,
            partitions_text(&member.owned),
            partitions_text(&member.target)
        );
    }
    println!("TOPIC\tPARTITION\tCOMMITTED\tHIGH_WATERMARK\tLAG\tOWNER");
    for partition in &described.partitions {
        let committed = partition
            .committed
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{committed}\t{}\t{}\t{}",
            partition.topic,
            partition.partition,
            partition.high_watermark,
            partition.lag,
            partition.owner.as_deref().unwrap_or("-")
        );
    }
}

fn describe_json(described: &crate::protocol::DescribeGroupResponse) -> serde_json::Value {
    let members: Vec<serde_json::Value> = described
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "owned": partitions_text(&m.owned),
                "target": partitions_text(&m.target),
                "last_heartbeat_ms_ago": m.last_heartbeat_ms_ago,
            })
        })
        .collect();
    let partitions: Vec<serde_json::Value> = described
        .partitions
        .iter()
        .map(|p| {
            serde_json::json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "high_watermark": p.high_watermark,
                "lag": p.lag,
                "owner": p.owner,
            })
        })
        .collect();
    serde_json::json!({
        "group": described.group,
        "state": format!("{:?}", described.state),
        "generation": described.generation,
        "strategy": described.strategy.map(|s| format!("{s:?}")),
        "members": members,
        "partitions": partitions,
    })
}

/// One stderr line per ownership change, for people and for tests:
/// `ownership {"generation":N,"partitions":["t/0",...],"at_us":T}`.
fn report_changes(changes: Vec<OwnershipChange>) {
    for change in changes {
        let partitions: Vec<String> = change
            .owned
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        let at_us = change
            .at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        eprintln!(
            "ownership {}",
            serde_json::json!({
                "generation": change.generation,
                "partitions": partitions,
                "at_us": at_us,
            })
        );
    }
}

/// `consume --group`: consume as a group member until the limit or the idle timeout,
/// then commit exactly what was printed and leave.
pub fn run_group_consume(args: ConsumeArgs) -> Result<(), String> {
    let group = args.group.clone().expect("called with a group");
    super::run_on_executor(move || async move {
        let cluster = args
            .broker
            .cluster(!args.no_shard_routing)
            .map_err(error_text)?;
        let mut config = GroupConfig::new(&group, &[args.topic.as_str()]);
        config.strategy = args.membership.strategy.into();
        config.instance_id = args.membership.instance_id.clone();
        config.session_timeout = Duration::from_millis(args.membership.session_timeout_ms);
        config.rebalance_timeout = config.session_timeout.max(Duration::from_secs(1));
        config.auto_commit = Some(Duration::from_millis(args.membership.auto_commit_ms))
            .filter(|interval| !interval.is_zero())
            .or(Some(Duration::from_secs(u64::MAX / 4)));
        config.start_from = match args.from {
            FromArg::Earliest => StartFrom::Earliest,
            FromArg::Latest => StartFrom::Latest,
        };
        let mut consumer = GroupConsumer::join(cluster, config)
            .await
            .map_err(error_text)?;
        eprintln!(
            "joined group {group} as {} (generation {})",
            consumer.member_id(),
            consumer.generation()
        );
        let limit = args.max_messages.unwrap_or(u64::MAX);
        let idle = args.idle_timeout_ms.map(Duration::from_millis);
        let mut consumed = 0u64;
        let mut last_message = Instant::now();
        while consumed < limit {
            let fetched = consumer.poll().await.map_err(error_text)?;
            report_changes(consumer.take_changes());
            let (count, printed) = print_records(&fetched, args.format, &mut consumed, limit)?;
            if consumed >= limit {
                // Stopped part-way: what was not printed must be delivered again.
                for part in &fetched.partitions {
                    let key = (part.topic.clone(), part.partition);
                    let next = printed.get(&key).copied().unwrap_or(part.position);
                    consumer
                        .seek(&part.topic, part.partition, next)
                        .await
                        .map_err(error_text)?;
                }
            }
            if count > 0 {
                last_message = Instant::now();
            } else if idle.is_some_and(|idle| last_message.elapsed() >= idle) {
                break;
            }
        }
        let closed = consumer.close().await;
        report_changes(consumer.take_changes());
        closed.map_err(error_text)?;
        eprintln!("consumed {consumed} messages");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse() {
        assert_eq!(
            parse_reset_to("earliest"),
            Ok(ResetTo::Spec(OffsetSpec::Earliest))
        );
        assert_eq!(
            parse_reset_to("latest"),
            Ok(ResetTo::Spec(OffsetSpec::Latest))
        );
        assert_eq!(
            parse_reset_to("timestamp:1700000000000"),
            Ok(ResetTo::Spec(OffsetSpec::Timestamp(1_700_000_000_000)))
        );
        assert_eq!(parse_reset_to("offset:42"), Ok(ResetTo::Offset(42)));
        for bad in ["", "first", "offset:", "offset:-1", "timestamp:x", "seek:4"] {
            assert!(parse_reset_to(bad).is_err(), "{bad}");
        }
    }
}
