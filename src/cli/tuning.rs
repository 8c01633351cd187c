//! `shardline tuning check`: how this machine differs from what a tuning profile expects,
//! the way Redpanda's tuners check before they tune.
//!
//! Every check reads the machine and never changes it. The one write is the O_DIRECT probe:
//! a 4 KiB file in the data directory, removed at once. Each check prints one line with a
//! [`Status`], what it found and what to do; only a `fail` (the broker cannot work here)
//! makes the exit code non-zero. Each check is a reader of the machine plus a pure
//! `evaluate_*` function, so the judgement is unit-tested without the machine.

use std::fmt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::server::Profile;
use crate::shard::runtime::{io_memory_per_shard, memlock_limit_bytes};

#[derive(Subcommand)]
pub enum TuningCommand {
    /// Report how this machine differs from what a profile expects (changes nothing).
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The tuning profile to check against (default: the built-in defaults, `balanced`).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// The broker's data directory; its disk is checked (without it those checks are unknown).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards the broker will run (default: every CPU this process may use, as `broker`).
    #[arg(long)]
    cores: Option<usize>,
}

/// File descriptors a broker holds beyond its segment files: connections, listeners,
/// metadata and index writes.
const FILES_HEADROOM: u64 = 1024;
/// File descriptors each shard holds for itself: io_uring rings, eventfds, its listener.
const FILES_PER_SHARD: u64 = 16;
/// The size and alignment of the O_DIRECT probe write.
const PROBE_BYTES: usize = 4096;
/// How long the io_uring probe's timer sleeps.
const PROBE_TIMER: Duration = Duration::from_millis(1);
/// Wake-ups the wake-latency probe times (each after its sleeper has parked).
const WAKE_PROBES: usize = 200;
/// How long the wake-latency probe waits before each wake-up, so that the woken thread is
/// parked in the kernel (past any spinning in the channel) when it is woken.
const WAKE_PROBE_GAP: Duration = Duration::from_micros(500);
/// A median wake-up slower than this is reported: each park and wake of a shard costs it.
const WAKE_LATENCY_WARN: Duration = Duration::from_micros(50);
/// A profile whose shards spin this many times the median wake-up before they park stays
/// awake through gaps shorter than that, so a slow wake-up is not reported for it.
const WAKE_SPIN_FACTOR: u32 = 2;

const _: () = assert!(PROBE_BYTES as u64 == crate::constants::IO_ALIGNMENT_BYTES);

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As the profile expects.
    Ok,
    /// Works, but costs latency, throughput or memory; the advice says what to change.
    Warn,
    /// The broker cannot work here.
    Fail,
    /// The machine does not expose what the check reads.
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        })
    }
}

/// One check's outcome: a line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it (absent when there is nothing to do).
    pub advice: Option<String>,
}

impl Finding {
    fn new(check: &'static str, status: Status, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status,
            detail: detail.into(),
            advice: None,
        }
    }

    fn advise(mut self, advice: impl Into<String>) -> Finding {
        self.advice = Some(advice.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8}{:<23}{}", self.status, self.check, self.detail)?;
        match &self.advice {
            Some(advice) => write!(f, "; fix: {advice}"),
            None => Ok(()),
        }
    }
}

pub fn run_tuning(command: TuningCommand) -> Result<(), String> {
    match command {
        TuningCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> Result<(), String> {
    let (profile, source) = match &args.profile {
        Some(path) => (
            Profile::load(path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        ),
        None => (Profile::default(), "built-in defaults".to_string()),
    };
    let cpus = allowed_cpu_count();
    let shard_count = match args.cores {
        Some(0) => return Err("--cores must be at least 1".into()),
        Some(cores) => cores,
        None => cpus,
    };
    let data_dir = args.data_dir.as_deref().map(probe_dir).transpose()?;
    println!(
        "shardline tuning check: profile {} ({source}), {shard_count} shards, data dir {}",
        profile.name,
        args.data_dir
            .as_deref()
            .map_or("not given".into(), |d| d.display().to_string()),
    );
    let findings = [
        check_io_uring(),
        evaluate_memlock(
            memlock_limit_bytes(),
            shard_count,
            profile.runtime.io_memory_bytes,
        ),
        check_cpu_governor(),
        evaluate_cpu_sharing(cpus, shard_count, profile.runtime.spin_before_park_us),
        evaluate_wake_latency(probe_wake_latency(), profile.runtime.spin_before_park_us),
        check_disk_scheduler(data_dir.as_ref()),
        check_transparent_hugepages(),
        check_open_files(shard_count, profile.storage.open_files_max),
        check_o_direct(data_dir.as_ref()),
    ];
    for finding in &findings {
        println!("{finding}");
    }
    let count = |status| findings.iter().filter(|f| f.status == status).count();
    println!(
        "summary: {} ok, {} warn, {} fail, {} unknown",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Unknown)
    );
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| f.check)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ))
    }
}

/// CPUs this process may run on: the broker's default shard count.
fn allowed_cpu_count() -> usize {
    match allowed_cpus() {
        Some(cpus) => cpus.len().max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The CPUs this process may run on, in order; `None` when the affinity cannot be read.
fn allowed_cpus() -> Option<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    Some(
        (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
    )
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// `12 MiB`, `1.5 GiB`, `512 B`: sizes as people read them.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The selected word of a sysfs choice line: `none [mq-deadline] kyber` gives `mq-deadline`;
/// a line with one word and no brackets gives that word.
fn active_choice(line: &str) -> Option<&str> {
    if let Some(word) = line
        .split_whitespace()
        .find(|w| w.len() > 2 && w.starts_with('[') && w.ends_with(']'))
    {
        return Some(&word[1..word.len() - 1]);
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

// io_uring -----------------------------------------------------------------------------------

fn check_io_uring() -> Finding {
    let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    let disabled = read_trimmed("/proc/sys/kernel/io_uring_disabled");
    let probe = super::run_on_executor(|| async {
        glommio::timer::sleep(PROBE_TIMER).await;
        Ok(())
    });
    evaluate_io_uring(&kernel, disabled.as_deref(), probe)
}

/// `disabled` is `kernel.io_uring_disabled` (absent on kernels before 6.6); `probe` is
/// whether a glommio executor started and ran a timer.
fn evaluate_io_uring(kernel: &str, disabled: Option<&str>, probe: Result<(), String>) -> Finding {
    let sysctl = match disabled {
        Some(value) => format!("kernel.io_uring_disabled={value}"),
        None => "no io_uring_disabled sysctl".to_string(),
    };
    match probe {
        Ok(()) => Finding::new(
            "io_uring",
            Status::Ok,
            format!("kernel {kernel}, {sysctl}: a glommio executor started and ran a timer"),
        ),
        Err(error) => {
            let advice = match disabled {
                Some("2") => "sysctl -w kernel.io_uring_disabled=0".to_string(),
                Some("1") => "sysctl -w kernel.io_uring_disabled=0, or run the broker in the \
                              group named by kernel.io_uring_group"
                    .to_string(),
                _ => "glommio needs Linux 5.8 or later with io_uring; in a container, allow \
                      the io_uring syscalls (seccomp profile)"
                    .to_string(),
            };
            Finding::new(
                "io_uring",
                Status::Fail,
                format!("kernel {kernel}, {sysctl}: {error}"),
            )
            .advise(advice)
        }
    }
}

// memlock ------------------------------------------------------------------------------------

/// The broker gives each shard `io_memory_per_shard(limit, shards, wanted)`: the profile's
/// io memory, shrunk so that all shards fit in three quarters of the locked-memory limit.
fn evaluate_memlock(limit_bytes: u64, shard_count: usize, wanted_bytes: usize) -> Finding {
    let granted = io_memory_per_shard(limit_bytes, shard_count, wanted_bytes);
    let wanted = human_bytes(wanted_bytes as u64);
    if limit_bytes == u64::MAX {
        return Finding::new(
            "memlock",
            Status::Ok,
            format!("unlimited: each of {shard_count} shards gets its {wanted} io memory"),
        );
    }
    // The limit at which three quarters of it cover every shard's io memory.
    let needed_bytes = (wanted_bytes as u64 * shard_count as u64).div_ceil(3) * 4;
    let limit = human_bytes(limit_bytes);
    if granted >= wanted_bytes {
        Finding::new(
            "memlock",
            Status::Ok,
            format!(
                "limit {limit} covers {wanted} io memory x {shard_count} shards \
                 (needs {} with the quarter left for rings)",
                human_bytes(needed_bytes)
            ),
        )
    } else {
        Finding::new(
            "memlock",
            Status::Warn,
            format!(
                "limit {limit} is below the {} that {wanted} io memory x {shard_count} shards \
                 needs: the broker will shrink io memory to {} per shard",
                human_bytes(needed_bytes),
                human_bytes(granted as u64)
            ),
        )
        .advise(format!(
            "raise the locked-memory limit to at least {}: `ulimit -l {}`, LimitMEMLOCK= in \
             the systemd unit, or memlock in /etc/security/limits.conf",
            human_bytes(needed_bytes),
            needed_bytes.div_ceil(1024)
        ))
    }
}

// CPU frequency --------------------------------------------------------------------------------

/// One CPU's frequency settings, from `/sys/devices/system/cpu/cpuN/cpufreq`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpuFrequency {
    cpu: usize,
    governor: String,
    /// `scaling_max_freq` and `cpuinfo_max_freq` in kHz, when exposed.
    scaling_max_khz: Option<u64>,
    hardware_max_khz: Option<u64>,
}

fn check_cpu_governor() -> Finding {
    let mut cpus = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let cpufreq = entry.path().join("cpufreq");
            let Some(governor) = read_trimmed(cpufreq.join("scaling_governor")) else {
                continue;
            };
            let khz = |file: &str| read_trimmed(cpufreq.join(file)).and_then(|v| v.parse().ok());
            cpus.push(CpuFrequency {
                cpu,
                governor,
                scaling_max_khz: khz("scaling_max_freq"),
                hardware_max_khz: khz("cpuinfo_max_freq"),
            });
        }
    }
    cpus.sort_by_key(|c| c.cpu);
    evaluate_cpu_governor(&cpus)
}

fn evaluate_cpu_governor(cpus: &[CpuFrequency]) -> Finding {
    if cpus.is_empty() {
        return Finding::new(
            "cpu_governor",
            Status::Unknown,
            "cpufreq not exposed (usual on a virtual machine: the host sets the frequency)",
        )
        .advise("nothing here; on the host, use the performance governor");
    }
    let slow: Vec<&CpuFrequency> = cpus
        .iter()
        .filter(|c| c.governor != "performance")
        .collect();
    let capped: Vec<&CpuFrequency> = cpus
        .iter()
        .filter(|c| matches!((c.scaling_max_khz, c.hardware_max_khz), (Some(s), Some(h)) if s < h))
        .collect();
    let list = |cpus: &[&CpuFrequency]| {
        cpus.iter()
            .map(|c| c.cpu.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if !slow.is_empty() {
        let mut governors: Vec<&str> = slow.iter().map(|c| c.governor.as_str()).collect();
        governors.sort_unstable();
        governors.dedup();
        return Finding::new(
            "cpu_governor",
            Status::Warn,
            format!(
                "governor {} on cpus {}: cores clock down between requests and take time \
                 to ramp up",
                governors.join("/"),
                list(&slow)
            ),
        )
        .advise(concat!(
            "cpupower frequency-set -g performance ",
            "(or write performance to each cpufreq/scaling_governor)"
        ));
    }
    if !capped.is_empty() {
        return Finding::new(
            "cpu_governor",
            Status::Warn,
            format!(
                "governor performance, but scaling_max_freq is below the hardware maximum on \
                 cpus {}",
                list(&capped)
            ),
        )
        .advise("cpupower frequency-set -u <cpuinfo_max_freq>");
    }
    Finding::new(
        "cpu_governor",
        Status::Ok,
        format!("governor performance on all {} cpus", cpus.len()),
    )
}

// Disk scheduler ---------------------------------------------------------------------------------

/// The directory whose disk the broker will use: the data directory, or, when it does not
/// exist yet, its nearest existing parent (nothing is created).
#[derive(Debug, Clone)]
struct ProbeDir {
    path: PathBuf,
    /// Set when `path` is a parent standing in for a data directory that does not exist.
    missing: Option<PathBuf>,
}

impl ProbeDir {
    fn describe(&self) -> String {
        match &self.missing {
            Some(missing) => format!(
                "{} ({} does not exist yet)",
                self.path.display(),
                missing.display()
            ),
            None => self.path.display().to_string(),
        }
    }
}

fn probe_dir(data_dir: &Path) -> Result<ProbeDir, String> {
    let absolute = std::path::absolute(data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))?;
    let existing = absolute
        .ancestors()
        .find(|p| p.is_dir())
        .ok_or_else(|| format!("no existing directory above {}", absolute.display()))?;
    Ok(ProbeDir {
        path: existing.to_path_buf(),
        missing: (existing != absolute).then_some(absolute.clone()),
    })
}

fn check_disk_scheduler(dir: Option<&ProbeDir>) -> Finding {
    let Some(dir) = dir else {
        return Finding::new("disk_scheduler", Status::Unknown, "no --data-dir given")
            .advise("pass --data-dir DIR to check the disk the broker writes to");
    };
    let dev = match std::fs::metadata(&dir.path) {
        Ok(metadata) => metadata.dev(),
        Err(e) => {
            return Finding::new(
                "disk_scheduler",
                Status::Unknown,
                format!("cannot stat {}: {e}", dir.describe()),
            )
        }
    };
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let Ok(device) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else {
        return Finding::new(
            "disk_scheduler",
            Status::Unknown,
            format!(
                "{} is on device {major}:{minor}, which is not a block device (tmpfs, \
                 overlay, btrfs subvolume or network filesystem?)",
                dir.describe()
            ),
        );
    };
    // A partition has no queue of its own: its disk (the parent directory) has.
    let disk = if device.join("queue").is_dir() {
        device
    } else {
        device.parent().map(Path::to_path_buf).unwrap_or(device)
    };
    let name = disk
        .file_name()
        .map_or("?".into(), |n| n.to_string_lossy().into_owned());
    let rotational = read_trimmed(disk.join("queue/rotational")).as_deref() == Some("1");
    let scheduler = read_trimmed(disk.join("queue/scheduler"));
    evaluate_disk_scheduler(
        &format!("{name} ({major}:{minor})"),
        scheduler.as_deref(),
        rotational,
    )
}

fn evaluate_disk_scheduler(device: &str, scheduler: Option<&str>, rotational: bool) -> Finding {
    let kind = if rotational {
        "rotational"
    } else {
        "solid-state"
    };
    let Some(line) = scheduler else {
        return Finding::new(
            "disk_scheduler",
            Status::Ok,
            format!("{device}, {kind}: no IO scheduler (a bio-based device)"),
        );
    };
    let Some(active) = active_choice(line) else {
        return Finding::new(
            "disk_scheduler",
            Status::Unknown,
            format!("{device}: cannot read the scheduler from '{line}'"),
        );
    };
    let detail = format!("{device}, {kind}: scheduler {active}");
    let fix = format!(
        "echo none > /sys/block/{}/queue/scheduler (make it last with a udev rule)",
        device.split_whitespace().next().unwrap_or(device)
    );
    match (active, rotational) {
        ("none" | "noop", _) => Finding::new("disk_scheduler", Status::Ok, detail),
        ("mq-deadline", true) => Finding::new(
            "disk_scheduler",
            Status::Ok,
            format!(
                "{detail} (sensible for a spinning disk; if it is really an SSD or a virtual \
                 disk, none is better)"
            ),
        ),
        _ => Finding::new(
            "disk_scheduler",
            Status::Warn,
            format!(
                "{detail}: the broker already orders and batches its own IO (group commit, \
                 glommio shares); a kernel scheduler adds latency"
            ),
        )
        .advise(fix),
    }
}

// Transparent huge pages -------------------------------------------------------------------------

fn check_transparent_hugepages() -> Finding {
    let base = Path::new("/sys/kernel/mm/transparent_hugepage");
    evaluate_transparent_hugepages(
        read_trimmed(base.join("enabled")).as_deref(),
        read_trimmed(base.join("defrag")).as_deref(),
    )
}

fn evaluate_transparent_hugepages(enabled: Option<&str>, defrag: Option<&str>) -> Finding {
    let Some(enabled) = enabled.and_then(active_choice) else {
        return Finding::new(
            "transparent_hugepages",
            Status::Unknown,
            "/sys/kernel/mm/transparent_hugepage not exposed",
        );
    };
    let defrag = defrag.and_then(active_choice).unwrap_or("?");
    let detail = format!("enabled {enabled}, defrag {defrag}");
    match (enabled, defrag) {
        ("always", "always") => Finding::new(
            "transparent_hugepages",
            Status::Warn,
            format!("{detail}: a page fault may stall in direct compaction for milliseconds"),
        )
        .advise(
            "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag (or set enabled \
             to madvise)",
        ),
        _ => Finding::new(
            "transparent_hugepages",
            Status::Ok,
            format!("{detail}: no compaction stalls on the broker's page faults"),
        ),
    }
}

// Open files ---------------------------------------------------------------------------------

fn check_open_files(shard_count: usize, open_files_max: usize) -> Finding {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => evaluate_open_files(soft, hard, shard_count, open_files_max),
        Err(e) => Finding::new(
            "open_files",
            Status::Unknown,
            format!("getrlimit(RLIMIT_NOFILE): {e}"),
        ),
    }
}

fn evaluate_open_files(soft: u64, hard: u64, shard_count: usize, open_files_max: usize) -> Finding {
    let shards = shard_count as u64;
    let segments = open_files_max as u64 * shards;
    let needed = segments + FILES_PER_SHARD * shards + FILES_HEADROOM;
    let limit = if soft == u64::MAX {
        "unlimited".to_string()
    } else {
        soft.to_string()
    };
    let budget = format!(
        "{open_files_max} segment files x {shard_count} shards = {segments}, + {} for \
         connections, listeners and rings = {needed}",
        FILES_PER_SHARD * shards + FILES_HEADROOM
    );
    let advice = |target: u64| {
        let raise = if hard >= target {
            format!("raise the soft limit (the hard limit is {hard}): `ulimit -n {target}`")
        } else {
            format!("raise both limits: `ulimit -Hn {target}; ulimit -n {target}`")
        };
        format!(
            "{raise}, or LimitNOFILE={target} in the systemd unit; or lower storage.open_files_max"
        )
    };
    if soft >= needed {
        Finding::new(
            "open_files",
            Status::Ok,
            format!("limit {limit} covers {budget}"),
        )
    } else if soft < segments {
        Finding::new(
            "open_files",
            Status::Fail,
            format!(
                "limit {limit} is below the segment-file budget alone ({budget}): the \
                 broker would hit EMFILE before its own bound"
            ),
        )
        .advise(advice(needed))
    } else {
        Finding::new(
            "open_files",
            Status::Warn,
            format!("limit {limit} is below {budget}: many connections may hit EMFILE"),
        )
        .advise(advice(needed))
    }
}

// CPU sharing ------------------------------------------------------------------------------

/// Whether spinning shards leave CPUs for everything else on the machine. A shard that spins
/// before it parks holds its CPU through every idle gap; when the shards take every CPU, the
/// clients and other processes on the machine get only what the spinning leaves. That is
/// right for a broker with the machine to itself (the default shard count), so this check
/// never warns: it says what it found, and what to change where the machine is shared.
fn evaluate_cpu_sharing(cpus: usize, shard_count: usize, spin_before_park_us: u64) -> Finding {
    let detail = if spin_before_park_us == 0 {
        format!("{shard_count} shards on {cpus} CPUs park at once (no spinning)")
    } else if shard_count < cpus {
        format!(
            "{shard_count} shards spin up to {spin_before_park_us} µs on {cpus} CPUs; {} \
             left for other processes",
            cpus - shard_count
        )
    } else {
        format!(
            "{shard_count} shards spin up to {spin_before_park_us} µs on {cpus} CPUs, which \
             suits a broker with the machine to itself; where clients or other busy processes \
             share it and latency matters more than peak throughput, run fewer shards \
             (`shardline broker --cores`) or set runtime.spin_before_park_us = 0 (on a 2-core \
             VM with the load generator beside it, both together halved the latency profile's \
             produce p50 at 20k msg/s, while one shard took 7-17% less at max rate)"
        )
    };
    Finding::new("cpu_sharing", Status::Ok, detail)
}

// Wake latency -------------------------------------------------------------------------------

/// Where the wake-latency probe's two threads ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbePlacement {
    /// Each pinned to its own CPU, as two shards are.
    AcrossCpus,
    /// Both pinned to the one CPU this process may use.
    OneCpu,
    /// Wherever the kernel put them (the affinity could not be read or set).
    Unpinned,
}

/// What the wake-latency probe saw: the median and 90th percentile of how long a thread
/// parked in the kernel took to run once another thread woke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WakeLatency {
    median: Duration,
    p90: Duration,
    placement: ProbePlacement,
}

/// Times `WAKE_PROBES` wake-ups of a parked thread by a thread on another CPU (the first
/// two this process may use; both threads are the probe's own and are pinned only while
/// they run, and both sleep between wake-ups). `None` if a probe thread could not start.
/// A shard that runs out of work parks the same way, and every request that arrives while
/// it is parked waits this long before the broker sees it.
fn probe_wake_latency() -> Option<WakeLatency> {
    use std::sync::mpsc;
    use std::time::Instant;
    let cpus = allowed_cpus().unwrap_or_default();
    // The CPU each thread is pinned to (the prober's, the sleeper's), when known.
    let targets: Option<[usize; 2]> = match cpus[..] {
        [] => None,
        [only] => Some([only, only]),
        [first, second, ..] => Some([first, second]),
    };
    // Pins the calling thread to its target; whether that worked.
    let pin = move |index: usize| {
        let Some(targets) = targets else { return false };
        let mut set = nix::sched::CpuSet::new();
        set.set(targets[index]).is_ok()
            && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    };
    let (to_sleeper, sleeper_inbox) = mpsc::channel::<Instant>();
    let (to_prober, prober_inbox) = mpsc::channel::<Duration>();
    let sleeper = std::thread::Builder::new()
        .name("wake-probe-sleeper".into())
        .spawn(move || {
            let pinned = pin(1);
            while let Ok(sent_at) = sleeper_inbox.recv() {
                if to_prober.send(sent_at.elapsed()).is_err() {
                    break;
                }
            }
            pinned
        })
        .ok()?;
    let prober = std::thread::Builder::new()
        .name("wake-probe".into())
        .spawn(move || {
            let pinned = pin(0);
            let mut latencies = Vec::with_capacity(WAKE_PROBES);
            for _ in 0..WAKE_PROBES {
                std::thread::sleep(WAKE_PROBE_GAP);
                if to_sleeper.send(Instant::now()).is_err() {
                    break;
                }
                match prober_inbox.recv() {
                    Ok(latency) => latencies.push(latency),
                    Err(_) => break,
                }
            }
            (pinned, latencies)
        });
    let (prober_pinned, mut latencies) = prober.ok()?.join().ok()?;
    let sleeper_pinned = sleeper.join().unwrap_or(false);
    if latencies.len() < WAKE_PROBES {
        return None;
    }
    latencies.sort_unstable();
    let placement = match (prober_pinned && sleeper_pinned, targets) {
        (true, Some([a, b])) if a != b => ProbePlacement::AcrossCpus,
        (true, Some(_)) => ProbePlacement::OneCpu,
        _ => ProbePlacement::Unpinned,
    };
    Some(WakeLatency {
        median: latencies[latencies.len() / 2],
        p90: latencies[latencies.len() * 9 / 10],
        placement,
    })
}

/// Whether waking a parked thread on another CPU is fast here. Where it is not (deep CPU
/// idle states, some virtual machines), every request that finds its shard parked waits
/// that long first. Spinning before parking keeps a shard awake through short gaps.
fn evaluate_wake_latency(measured: Option<WakeLatency>, spin_before_park_us: u64) -> Finding {
    let Some(WakeLatency {
        median,
        p90,
        placement,
    }) = measured
    else {
        return Finding::new(
            "wake_latency",
            Status::Unknown,
            "the probe's threads did not run",
        );
    };
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let detail = format!(
        "a parked thread ran {:.0} µs after a wake-up from {} (median; p90 {:.0} µs, \
         {WAKE_PROBES} wake-ups)",
        micros(median),
        match placement {
            ProbePlacement::AcrossCpus => "another CPU",
            ProbePlacement::OneCpu => "its own CPU",
            ProbePlacement::Unpinned => "a thread the kernel placed",
        },
        micros(p90)
    );
    if median <= WAKE_LATENCY_WARN {
        return Finding::new("wake_latency", Status::Ok, detail);
    }
    let spin_needed = median * WAKE_SPIN_FACTOR;
    if Duration::from_micros(spin_before_park_us) >= spin_needed {
        return Finding::new(
            "wake_latency",
            Status::Ok,
            format!(
                "{detail}: slow, but the profile's shards spin {spin_before_park_us} µs \
                 before they park"
            ),
        );
    }
    Finding::new(
        "wake_latency",
        Status::Warn,
        format!(
            "{detail}: slow (deep CPU idle states, or a virtual machine); every request that \
             finds its shard parked waits this long before the broker sees it"
        ),
    )
    .advise(format!(
        "where latency matters, set runtime.spin_before_park_us to at least {}, at the cost \
         of a busy CPU per shard; on bare metal, limit the CPUs' idle states",
        spin_needed.as_nanos().div_ceil(1000)
    ))
}

// O_DIRECT -----------------------------------------------------------------------------------

/// One IO page, aligned as direct IO requires.
#[repr(C, align(4096))]
struct IoPage([u8; PROBE_BYTES]);

/// Removes the probe file however the probe ends.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn check_o_direct(dir: Option<&ProbeDir>) -> Finding {
    let Some(dir) = dir else {
        return Finding::new("o_direct", Status::Unknown, "no --data-dir given")
            .advise("pass --data-dir DIR to check the filesystem the broker writes to");
    };
    let path = dir
        .path
        .join(format!(".shardline-tuning-check-{}", std::process::id()));
    match probe_o_direct(&path) {
        Ok(()) => Finding::new(
            "o_direct",
            Status::Ok,
            format!(
                "{}: a 4 KiB O_DIRECT write, fdatasync and read back matched",
                dir.describe()
            ),
        ),
        Err(error) => Finding::new(
            "o_direct",
            Status::Fail,
            format!("{}: {error}", dir.describe()),
        )
        .advise(
            "put the data directory on a local ext4 or xfs filesystem the broker may write \
             (not tmpfs, overlayfs or a network filesystem)",
        ),
    }
}

/// Creates `path` with O_DIRECT, writes one page, fdatasyncs, reads it back and compares.
fn probe_o_direct(path: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => "the filesystem refuses O_DIRECT (open: EINVAL)".to_string(),
            _ => format!("cannot create {} with O_DIRECT: {e}", path.display()),
        })?;
    let _remove = RemoveOnDrop(path);
    let mut written = Box::new(IoPage([0; PROBE_BYTES]));
    for (i, byte) in written.0.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let count = file
        .write_at(&written.0, 0)
        .map_err(|e| format!("a 4 KiB aligned O_DIRECT write at offset 0 failed: {e}"))?;
    if count != PROBE_BYTES {
        return Err(format!(
            "a 4 KiB O_DIRECT write at offset 0 wrote {count} bytes"
        ));
    }
    file.sync_data()
        .map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))?;
    let mut read = Box::new(IoPage([0; PROBE_BYTES]));
    let count = file
        .read_at(&mut read.0, 0)
        .map_err(|e| format!("a 4 KiB O_DIRECT read at offset 0 failed: {e}"))?;
    if count != PROBE_BYTES || read.0 != written.0 {
        return Err(format!(
            "a 4 KiB O_DIRECT read at offset 0 returned {count} bytes that differ from \
             what was written"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::FlushPolicy;

    fn tuning_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning")
    }

    fn load(name: &str) -> Profile {
        Profile::load(&tuning_dir().join(format!("{name}.toml"))).expect("profile loads")
    }

    #[test]
    fn every_tuning_profile_loads_checks_and_names_itself() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(tuning_dir()).expect("tuning/ exists") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let profile = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                profile.check().expect("check passes");
                let stem = path.file_stem().expect("file name").to_string_lossy();
                assert_eq!(profile.name, stem, "{}", path.display());
                names.push(profile.name);
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "balanced",
                "durable",
                "latency",
                "throughput",
                "write-behind"
            ]
        );
    }

    #[test]
    fn balanced_profile_is_the_default() {
        assert_eq!(load("balanced"), Profile::default());
    }

    #[test]
    fn latency_and_durable_flush_every_batch_and_throughput_does_not() {
        assert_eq!(load("latency").storage.flush, FlushPolicy::EveryBatch);
        assert_eq!(load("durable").storage.flush, FlushPolicy::EveryBatch);
        let throughput = load("throughput").storage.flush;
        assert_ne!(throughput, FlushPolicy::EveryBatch);
        assert!(throughput.syncs(), "{throughput:?}");
        assert!(load("latency").runtime.spin_before_park_us >= 100);
    }

    /// The one profile that does not fdatasync: it writes as soon as the writer is free, and
    /// keeps no shard journal (which only serves policies that sync).
    #[test]
    fn write_behind_never_syncs_and_keeps_no_journal() {
        let profile = load("write-behind");
        assert_eq!(
            profile.storage.flush,
            FlushPolicy::Never { write_delay_us: 0 }
        );
        assert!(!profile.storage.flush.syncs());
        assert_eq!(profile.storage.shard_journal_bytes, 0);
        for name in ["balanced", "durable", "latency", "throughput"] {
            assert!(load(name).storage.flush.syncs(), "{name}");
        }
    }

    #[test]
    fn sysfs_choices_are_read_from_brackets() {
        assert_eq!(
            active_choice("none [mq-deadline] kyber bfq"),
            Some("mq-deadline")
        );
        assert_eq!(active_choice("[none] mq-deadline"), Some("none"));
        assert_eq!(active_choice("none"), Some("none"));
        assert_eq!(active_choice("none kyber"), None);
        assert_eq!(active_choice(""), None);
    }

    #[test]
    fn memlock_warns_only_when_io_memory_would_shrink() {
        let mib = 1024 * 1024;
        assert_eq!(evaluate_memlock(8 * mib, 2, 2 << 20).status, Status::Ok);
        assert_eq!(evaluate_memlock(u64::MAX, 64, 8 << 20).status, Status::Ok);
        let shrunk = evaluate_memlock(8 * mib, 2, 8 << 20);
        assert_eq!(shrunk.status, Status::Warn, "{shrunk}");
        assert!(shrunk.detail.contains("3 MiB per shard"), "{shrunk}");
        assert!(shrunk.advice.is_some());
    }

    #[test]
    fn wake_latency_warns_when_slow_unless_the_profile_spins_past_it() {
        let seen = |median: u64, p90: u64| {
            Some(WakeLatency {
                median: Duration::from_micros(median),
                p90: Duration::from_micros(p90),
                placement: ProbePlacement::AcrossCpus,
            })
        };
        let fast = evaluate_wake_latency(seen(28, 36), 0);
        assert_eq!(fast.status, Status::Ok);
        assert!(
            fast.detail
                .contains("28 µs after a wake-up from another CPU"),
            "{fast}"
        );
        let slow = evaluate_wake_latency(seen(110, 160), 0);
        assert_eq!(slow.status, Status::Warn);
        assert!(slow.detail.contains("110 µs") && slow.detail.contains("p90 160 µs"));
        let advice = slow.advice.expect("advice");
        assert!(
            advice.contains("spin_before_park_us to at least 220"),
            "{advice}"
        );
        // Spinning twice the wake-up covers it; a shorter spin does not.
        assert_eq!(evaluate_wake_latency(seen(90, 120), 200).status, Status::Ok);
        assert_eq!(
            evaluate_wake_latency(seen(110, 160), 200).status,
            Status::Warn
        );
        assert_eq!(evaluate_wake_latency(None, 0).status, Status::Unknown);
        // The advice names exactly the spin that the judgement accepts.
        let odd = evaluate_wake_latency(seen(123, 150), 0);
        let advice = odd.advice.expect("advice");
        assert!(advice.contains("at least 246,"), "{advice}");
        assert_eq!(
            evaluate_wake_latency(seen(123, 150), 246).status,
            Status::Ok
        );
        assert_eq!(
            evaluate_wake_latency(seen(123, 150), 245).status,
            Status::Warn
        );
        let unpinned = WakeLatency {
            placement: ProbePlacement::Unpinned,
            ..seen(28, 36).unwrap()
        };
        let unpinned = evaluate_wake_latency(Some(unpinned), 0);
        assert!(
            unpinned.detail.contains("a thread the kernel placed"),
            "{unpinned}"
        );
    }

    #[test]
    fn the_wake_latency_probe_times_every_wake_up_and_leaves_the_caller_unpinned() {
        let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        let seen = probe_wake_latency().expect("every wake-up was timed");
        assert!(seen.p90 < Duration::from_secs(1), "{seen:?}");
        let cpus = allowed_cpu_count();
        let expected = if cpus >= 2 {
            ProbePlacement::AcrossCpus
        } else {
            ProbePlacement::OneCpu
        };
        assert_eq!(seen.placement, expected, "{cpus} CPUs");
        let after = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        assert_eq!(before, after, "the probe pins only its own threads");
    }

    #[test]
    fn cpu_sharing_says_when_spinning_shards_take_every_cpu() {
        let every_cpu = evaluate_cpu_sharing(2, 2, 200);
        assert!(
            every_cpu
                .detail
                .contains("2 shards spin up to 200 µs on 2 CPUs, which suits"),
            "{every_cpu}"
        );
        assert!(every_cpu.detail.contains("--cores"), "{every_cpu}");
        // More shards than CPUs (an explicit --cores) leaves nothing either.
        assert!(evaluate_cpu_sharing(2, 4, 50).detail.contains("--cores"));
        let one_left = evaluate_cpu_sharing(4, 3, 50);
        assert!(
            one_left.detail.contains("1 left for other processes"),
            "{one_left}"
        );
        assert!(!one_left.detail.contains("--cores"), "{one_left}");
        let no_spin = evaluate_cpu_sharing(2, 2, 0);
        assert!(no_spin.detail.contains("park at once"), "{no_spin}");
        for finding in [every_cpu, one_left, no_spin] {
            assert_eq!(finding.status, Status::Ok, "{finding}");
            assert!(finding.advice.is_none(), "{finding}");
        }
    }

    #[test]
    fn open_files_fail_below_the_segment_budget_and_warn_below_the_headroom() {
        assert_eq!(
            evaluate_open_files(20_000, 20_000, 2, 1024).status,
            Status::Ok
        );
        assert_eq!(
            evaluate_open_files(2_500, 4_096, 2, 1024).status,
            Status::Warn
        );
        let fail = evaluate_open_files(1_024, 4_096, 2, 1024);
        assert_eq!(fail.status, Status::Fail, "{fail}");
        assert!(fail.advice.as_deref().unwrap_or("").contains("soft limit"));
        assert_eq!(
            evaluate_open_files(u64::MAX, u64::MAX, 64, 1 << 20).status,
            Status::Ok
        );
    }

    #[test]
    fn governors_other_than_performance_warn_and_absent_cpufreq_is_unknown() {
        let cpu = |cpu, governor: &str| CpuFrequency {
            cpu,
            governor: governor.into(),
            scaling_max_khz: Some(3_000_000),
            hardware_max_khz: Some(3_000_000),
        };
        assert_eq!(evaluate_cpu_governor(&[]).status, Status::Unknown);
        let fast = [cpu(0, "performance"), cpu(1, "performance")];
        assert_eq!(evaluate_cpu_governor(&fast).status, Status::Ok);
        let slow = evaluate_cpu_governor(&[cpu(0, "performance"), cpu(1, "powersave")]);
        assert_eq!(slow.status, Status::Warn);
        assert!(slow.detail.contains("powersave on cpus 1"), "{slow}");
        let mut capped = cpu(0, "performance");
        capped.scaling_max_khz = Some(1_000_000);
        assert_eq!(evaluate_cpu_governor(&[capped]).status, Status::Warn);
    }

    #[test]
    fn schedulers_other_than_none_warn_except_deadline_on_spinning_disks() {
        let judge = |line, rotational| {
            evaluate_disk_scheduler("vda (254:0)", Some(line), rotational).status
        };
        assert_eq!(judge("[none] mq-deadline kyber", false), Status::Ok);
        assert_eq!(judge("none [mq-deadline] kyber", true), Status::Ok);
        assert_eq!(judge("none [mq-deadline] kyber", false), Status::Warn);
        assert_eq!(judge("none mq-deadline [bfq]", true), Status::Warn);
        assert_eq!(
            evaluate_disk_scheduler("zram0 (252:0)", None, false).status,
            Status::Ok
        );
        let warn = evaluate_disk_scheduler("nvme0n1 (259:0)", Some("none [kyber]"), false);
        assert!(
            warn.advice
                .as_deref()
                .unwrap_or("")
                .contains("/sys/block/nvme0n1/"),
            "{warn}"
        );
    }

    #[test]
    fn huge_pages_warn_only_with_synchronous_defrag() {
        let judge = |enabled, defrag| evaluate_transparent_hugepages(enabled, defrag).status;
        assert_eq!(
            judge(Some("always [madvise] never"), Some("[madvise]")),
            Status::Ok
        );
        assert_eq!(
            judge(Some("[always] madvise never"), Some("[always] defer")),
            Status::Warn
        );
        assert_eq!(
            judge(Some("[always] madvise never"), Some("always [defer]")),
            Status::Ok
        );
        assert_eq!(judge(None, None), Status::Unknown);
    }

    #[test]
    fn a_failed_io_uring_probe_fails_with_advice() {
        let failed = evaluate_io_uring("6.8.0", Some("2"), Err("no ring".into()));
        assert_eq!(failed.status, Status::Fail);
        assert!(failed
            .advice
            .as_deref()
            .unwrap_or("")
            .contains("io_uring_disabled=0"));
        assert_eq!(evaluate_io_uring("6.8.0", None, Ok(())).status, Status::Ok);
    }

    #[test]
    fn a_missing_data_dir_is_probed_at_its_nearest_parent() {
        let temp = tempfile::tempdir().expect("tempdir");
        let missing = temp.path().join("a/b");
        let dir = probe_dir(&missing).expect("resolves");
        assert_eq!(dir.path, temp.path());
        assert_eq!(dir.missing.as_deref(), Some(missing.as_path()));
        let probed = check_o_direct(Some(&dir));
        assert!(!missing.exists(), "the check creates nothing");
        assert_eq!(
            std::fs::read_dir(temp.path()).unwrap().count(),
            0,
            "{probed}"
        );
    }

    #[test]
    fn human_bytes_reads_like_a_person_wrote_it() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(5_592_408), "5.3 MiB");
    }
}
