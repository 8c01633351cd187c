//! group_bench: how long consumer-group rebalances take and what offset commits cost, on an
//! already running broker. A measurement tool, not a test: it reports, it asserts nothing.
//!
//! 1. `rebalance`: for each group size N in `--members` and each strategy (eager range,
//!    cooperative sticky), N members (all in this process, one glommio executor) join a
//!    group on a `--partitions`-partition topic and settle. Then one more member joins, and
//!    later one member leaves; each time the clock runs from the join (or the leave) until
//!    the coordinator reports the group Stable again. "Paused" counts the partitions that
//!    had no owner at some moment of the rebalance (sampled every `SAMPLE_INTERVAL`):
//!    eager rebalances pause every partition, cooperative ones only the moved ones.
//! 2. `commits`: `--commit-members` members share the partitions; together they commit
//!    `--commit-rate` commits/s (one partition's offset each, every member one commit at a
//!    time, open loop) for `--seconds`: commit latency percentiles from the intended time,
//!    and the broker's CPU time over that span against an idle span of the same length
//!    (from `/proc/<--broker-pid>/stat`).
//!
//! `cargo run --release --example group_bench -- --broker 127.0.0.1:9092 --broker-pid PID`

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use shardline::client::{Admin, ClientError, Cluster, GroupConfig, GroupConsumer};
use shardline::protocol::{AssignmentStrategy, GroupState};

/// How often the coordinator is asked for the group's state while a rebalance runs.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
/// The longest a rebalance may take before the run gives up.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker: String,
    /// The broker's process id, for its CPU time (commits phase).
    #[arg(long)]
    broker_pid: Option<u32>,
    #[arg(long, default_value_t = 100)]
    partitions: u32,
    /// Group sizes to measure (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "3,30")]
    members: Vec<usize>,
    /// How long each member's fetch may wait for data (bounds how soon a member acts on a
    /// rebalance when its partitions are idle).
    #[arg(long, default_value_t = 20)]
    fetch_wait_ms: u64,
    #[arg(long, default_value_t = 1000)]
    commit_rate: u64,
    /// Members sharing the commit rate (each commits its share one commit at a time).
    #[arg(long, default_value_t = 10)]
    commit_members: usize,
    /// Skip the rebalance phase.
    #[arg(long)]
    commits_only: bool,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// A member that polls in the background until told to stop.
struct Running {
    stop: Rc<std::cell::Cell<bool>>,
    task: glommio::Task<Result<(), ClientError>>,
}

fn member_config(
    args: &Args,
    group: &str,
    topic: &str,
    strategy: AssignmentStrategy,
) -> GroupConfig {
    let mut config = GroupConfig::new(group, &[topic]);
    config.strategy = strategy;
    config.session_timeout = Duration::from_secs(30);
    config.consumer.max_wait = Duration::from_millis(args.fetch_wait_ms);
    config
}

async fn start_member(cluster: Rc<Cluster>, config: GroupConfig) -> Result<Running, ClientError> {
    let mut member = GroupConsumer::join(cluster, config).await?;
    let stop = Rc::new(std::cell::Cell::new(false));
    let stopping = stop.clone();
    let task = glommio::spawn_local(async move {
        while !stopping.get() {
            member.poll().await?;
        }
        member.close().await
    });
    Ok(Running { stop, task })
}

async fn stop_member(member: Running) -> Result<(), ClientError> {
    member.stop.set(true);
    member.task.await
}

/// Waits until the group is Stable with `members` members; returns the time it took and the
/// partitions that were without an owner at some sample.
async fn wait_stable(
    admin: &Admin,
    group: &str,
    members: usize,
    partitions: u32,
) -> Result<(Duration, usize), String> {
    let started = Instant::now();
    let mut paused: BTreeSet<u32> = BTreeSet::new();
    loop {
        let described = admin
            .describe_group(group)
            .await
            .map_err(|e| e.to_string())?;
        for partition in &described.partitions {
            if partition.owner.is_none() && partition.partition < partitions {
                paused.insert(partition.partition);
            }
        }
        if described.state == GroupState::Stable && described.members.len() == members {
            return Ok((started.elapsed(), paused.len()));
        }
        if started.elapsed() > REBALANCE_TIMEOUT {
            return Err(format!("group {group} did not settle: {described:?}"));
        }
        glommio::timer::sleep(SAMPLE_INTERVAL).await;
    }
}

async fn rebalances(args: &Args, cluster: Rc<Cluster>, topic: &str) -> Result<Vec<String>, String> {
    let admin = Admin::new(cluster.clone());
    let mut rows = Vec::new();
    for &size in &args.members {
        for strategy in [
            AssignmentStrategy::Range,
            AssignmentStrategy::CooperativeSticky,
        ] {
            let group = format!("bench-{size}-{strategy:?}-{}", std::process::id());
            let mut running = Vec::new();
            for _ in 0..size {
                let config = member_config(args, &group, topic, strategy);
                running.push(
                    start_member(cluster.clone(), config)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let (initial, _) = wait_stable(&admin, &group, size, args.partitions).await?;
            let joined = Instant::now();
            let config = member_config(args, &group, topic, strategy);
            running.push(
                start_member(cluster.clone(), config)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let (_, join_paused) = wait_stable(&admin, &group, size + 1, args.partitions).await?;
            let join_total = joined.elapsed();
            let left = Instant::now();
            let leaving = running.remove(0);
            stop_member(leaving).await.map_err(|e| e.to_string())?;
            let (_, leave_paused) = wait_stable(&admin, &group, size, args.partitions).await?;
            let leave_total = left.elapsed();
            rows.push(format!(
                "| {size} | {strategy:?} | {:.0} | {:.0} | {join_paused} | {:.0} | {leave_paused} |",
                initial.as_secs_f64() * 1e3,
                join_total.as_secs_f64() * 1e3,
                leave_total.as_secs_f64() * 1e3,
            ));
            for member in running {
                stop_member(member).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(rows)
}

fn broker_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some((utime + stime) / ticks as f64)
}

/// One committing member: owns its share of the partitions and commits one of them at
/// `rate` commits/s, each timed from its intended time.
async fn committer(
    mut member: GroupConsumer,
    rate: f64,
    span: Duration,
    latency: Rc<RefCell<Histogram<u64>>>,
) -> Result<(u64, GroupConsumer), String> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let owned: Vec<(String, u32)> = member.owned().into_iter().collect();
    if owned.is_empty() {
        return Err("a committing member owns nothing".into());
    }
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < span {
        let due = started + interval.mul_f64(sent as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            glommio::timer::sleep(wait).await;
        }
        let (topic, partition) = &owned[(sent as usize) % owned.len()];
        member
            .seek(topic, *partition, sent + 1)
            .await
            .map_err(|e| e.to_string())?;
        member.commit().await.map_err(|e| e.to_string())?;
        // From the intended time, so a slow commit delays the next and shows up here.
        latency
            .borrow_mut()
            .record(due.elapsed().as_micros() as u64)
            .map_err(|e| e.to_string())?;
        sent += 1;
    }
    Ok((sent, member))
}

async fn commits(args: &Args, cluster: Rc<Cluster>, topic: &str) -> Result<String, String> {
    let group = format!("bench-commits-{}", std::process::id());
    let mut members = Vec::new();
    for _ in 0..args.commit_members {
        let mut config = member_config(args, &group, topic, AssignmentStrategy::CooperativeSticky);
        config.auto_commit = None;
        members.push(
            GroupConsumer::join(cluster.clone(), config)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    // Every member polls until the group is settled and the partitions are spread.
    let admin = Admin::new(cluster.clone());
    loop {
        for member in &mut members {
            member.poll().await.map_err(|e| e.to_string())?;
        }
        let described = admin
            .describe_group(&group)
            .await
            .map_err(|e| e.to_string())?;
        if described.state == GroupState::Stable && members.iter().all(|m| !m.owned().is_empty()) {
            break;
        }
    }
    let span = Duration::from_secs(args.seconds);
    let idle_start = args.broker_pid.and_then(broker_cpu_seconds);
    glommio::timer::sleep(span).await;
    let idle_end = args.broker_pid.and_then(broker_cpu_seconds);
    let latency = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let rate = args.commit_rate as f64 / members.len() as f64;
    let busy_start = args.broker_pid.and_then(broker_cpu_seconds);
    let started = Instant::now();
    let tasks: Vec<_> = members
        .into_iter()
        .map(|member| glommio::spawn_local(committer(member, rate, span, latency.clone())))
        .collect();
    let mut sent = 0;
    let mut done = Vec::new();
    for task in tasks {
        let (count, member) = task.await?;
        sent += count;
        done.push(member);
    }
    let elapsed = started.elapsed();
    let busy_end = args.broker_pid.and_then(broker_cpu_seconds);
    for mut member in done {
        member.close().await.map_err(|e| e.to_string())?;
    }
    let cpu = |start: Option<f64>, end: Option<f64>, over: Duration| match (start, end) {
        (Some(start), Some(end)) => format!("{:.1}%", (end - start) / over.as_secs_f64() * 100.0),
        _ => "n/a".to_string(),
    };
    let latency = latency.borrow();
    Ok(format!(
        "commits: {} members, {sent} commits in {:.2} s ({:.0}/s); latency from intended time p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; broker CPU (of one core) idle {} vs committing {}",
        args.commit_members,
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max(),
        cpu(idle_start, idle_end, span),
        cpu(busy_start, busy_end, elapsed),
    ))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(move || async move {
            let cluster = Cluster::new(&args.broker, "group-bench", true).map_err(|e| e.to_string())?;
            let topic = format!("group-bench-{}", std::process::id());
            Admin::new(cluster.clone())
                .ensure_topic(&topic, args.partitions)
                .await
                .map_err(|e| e.to_string())?;
            println!("topic {topic}: {} partitions; members' fetch wait {} ms", args.partitions, args.fetch_wait_ms);
            println!("| members | strategy | initial settle ms | +1 join ms | paused on join | -1 leave ms | paused on leave |");
            println!("|---|---|---|---|---|---|---|");
            if !args.commits_only {
                for row in rebalances(&args, cluster.clone(), &topic).await? {
                    println!("{row}");
                }
            }
            println!("{}", commits(&args, cluster, &topic).await?);
            Ok::<(), String>(())
        });
    match outcome
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()))
    {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) | Err(message) => {
            eprintln!("group_bench: {message}");
            ExitCode::FAILURE
        }
    }
}
