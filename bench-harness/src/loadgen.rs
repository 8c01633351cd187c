//! Running `shardline-loadgen` for one run: its flags from the scenario, its output into the
//! run's directory, its live lines forwarded to stderr with a prefix.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::scenario::{RunSpec, Scenario};

/// Time a run may take beyond its warm-up and duration (start-up, topic creation, drain).
const LOADGEN_GRACE: Duration = Duration::from_secs(90);
const LOADGEN_POLL: Duration = Duration::from_millis(50);
/// How to build a loadgen that drives the peers.
const PEER_LOADGEN_BUILD: &str = "cargo build --release -p shardline-loadgen --features peers";

/// Where a run's files go, relative to the report directory.
pub struct RunFiles {
    pub dir: PathBuf,
    pub json: PathBuf,
    pub hdr_dir: PathBuf,
    pub log: PathBuf,
}

impl RunFiles {
    pub fn new(profile: &str, run: &str) -> RunFiles {
        let dir = Path::new("runs").join(profile).join(run);
        RunFiles {
            json: dir.join("loadgen.json"),
            hdr_dir: dir.join("hdr"),
            log: dir.join("loadgen.log"),
            dir,
        }
    }
}

/// Which system a run drives and the acks it asks for.
pub struct Target<'a> {
    pub system: &'a str,
    pub acks: &'a str,
    /// The tuning profile whose `[client]` producer settings the loadgen applies
    /// (shardline runs).
    pub profile: Option<&'a std::path::Path>,
}

/// The loadgen's command line for `run` of `scenario` against `broker`.
pub fn loadgen_args(
    scenario: &Scenario,
    run: &RunSpec,
    topic: &str,
    broker: &str,
    target: &Target,
) -> Vec<String> {
    let system = (target.system != "shardline").then(|| ("--system", target.system.to_string()));
    let topics = (scenario.topics > 1).then(|| ("--topics", scenario.topics.to_string()));
    let group = scenario
        .consumer_group
        .as_ref()
        .map(|group| ("--consumer-group", group.clone()));
    let profile = target
        .profile
        .map(|path| ("--profile", path.display().to_string()));
    let pairs = system
        .into_iter()
        .chain(topics)
        .chain(group)
        .chain(profile)
        .chain([
            ("--broker", broker.to_string()),
            ("--topic", topic.to_string()),
            ("--partitions", scenario.partitions.to_string()),
            ("--producers", scenario.producers.to_string()),
            ("--consumers", scenario.consumers.to_string()),
            ("--message-bytes", scenario.message_bytes.to_string()),
            ("--keys", scenario.keys.clone()),
            ("--acks", target.acks.to_string()),
            ("--rate", run.rate.clone()),
            ("--warmup-s", scenario.warmup_s(run).to_string()),
            ("--duration-s", scenario.duration_s(run).to_string()),
        ]);
    pairs
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

/// Runs the loadgen with `args` plus `--json` and `--hdr-dir` into `files` (under
/// `report_dir`), optionally pinned to `cpus`. Returns its exit status.
pub fn run_loadgen(
    binary: &Path,
    args: &[String],
    report_dir: &Path,
    files: &RunFiles,
    cpus: Option<&[usize]>,
    time_max: Duration,
    progress_prefix: &str,
) -> Result<ExitStatus, String> {
    let dir = report_dir.join(&files.dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log_path = report_dir.join(&files.log);
    let mut log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    writeln!(log, "$ {} {}", binary.display(), args.join(" "))
        .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    let mut command = Command::new(binary);
    if let Some(cpus) = cpus {
        pin_to(&mut command, cpus);
    }
    let mut child = command
        .args(args)
        .arg("--json")
        .arg(report_dir.join(&files.json))
        .arg("--hdr-dir")
        .arg(report_dir.join(&files.hdr_dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("loadgen stdout is not piped")?;
    let stderr = child.stderr.take().ok_or("loadgen stderr is not piped")?;
    let stdout_reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let prefix = progress_prefix.to_string();
    let stderr_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix} {line}");
            lines.push(line);
        }
        lines
    });
    let deadline = Instant::now() + time_max + LOADGEN_GRACE;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for loadgen: {e}"))?
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "loadgen ran past {:?}; killed",
                time_max + LOADGEN_GRACE
            ));
        }
        std::thread::sleep(LOADGEN_POLL);
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    writeln!(
        log,
        "{}\n--- stderr ---\n{}",
        stdout.join("\n"),
        stderr.join("\n")
    )
    .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    Ok(status)
}

/// Whether the loadgen at `binary` can drive `system` (the peers need a build with the
/// feature `peers`), asked with `--list-systems`; else why not and how to get one that can.
pub fn loadgen_drives(binary: &Path, system: &str) -> Result<(), String> {
    let output = Command::new(binary)
        .arg("--list-systems")
        .output()
        .map_err(|e| format!("starting {} --list-systems: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} does not answer --list-systems (built before that flag?): rebuild it with \
             `{PEER_LOADGEN_BUILD}`",
            binary.display()
        ));
    }
    if stdout.lines().any(|line| line.trim() == system) {
        return Ok(());
    }
    Err(format!(
        "{} cannot drive {system} (it drives: {}): it was built without the peer drivers; \
         rebuild it with `{PEER_LOADGEN_BUILD}`",
        binary.display(),
        stdout.split_whitespace().collect::<Vec<_>>().join(", ")
    ))
}

/// Runs the child on `cpus` only (sched_setaffinity between fork and exec).
pub fn pin_to(command: &mut Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores CPUs beyond its size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: the closure only makes one async-signal-safe system call.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_flags_come_from_the_scenario_and_the_run() {
        let spike = Scenario::load("spike").expect("built in");
        let target = Target {
            system: "shardline",
            acks: &spike.acks,
            profile: None,
        };
        let args = loadgen_args(&spike, &spike.runs[1], "spike-1", "127.0.0.1:9", &target);
        let text = args.join(" ");
        assert!(
            text.contains("--broker 127.0.0.1:9 --topic spike-1 --partitions 8"),
            "{text}"
        );
        assert!(
            text.contains("--rate 50000 --warmup-s 0 --duration-s 4"),
            "{text}"
        );
        assert!(text.contains("--keys round-robin --acks all"), "{text}");
        assert!(!text.contains("--system"), "{text}");
        assert!(
            !text.contains("--topics") && !text.contains("--consumer-group"),
            "{text}"
        );
        let many = Scenario::load("many-topics").expect("built in");
        let text = loadgen_args(&many, &many.runs[0], "many", "127.0.0.1:9", &target).join(" ");
        assert!(text.starts_with("--topics 10000 --broker"), "{text}");
        let mut grouped = many.clone();
        grouped.consumer_group = Some("bench".into());
        let text = loadgen_args(&grouped, &grouped.runs[0], "m", "127.0.0.1:9", &target).join(" ");
        assert!(text.contains("--consumer-group bench --broker"), "{text}");
        let tuned = Target {
            profile: Some(std::path::Path::new("tuning/throughput.toml")),
            ..target
        };
        let text = loadgen_args(&spike, &spike.runs[1], "t", "127.0.0.1:9", &tuned).join(" ");
        assert!(
            text.contains("--profile tuning/throughput.toml --broker"),
            "{text}"
        );
        let kafka = Target {
            system: "kafka",
            acks: "leader",
            profile: None,
        };
        let text = loadgen_args(&spike, &spike.runs[1], "t", "127.0.0.1:9", &kafka).join(" ");
        assert!(
            text.starts_with("--system kafka --broker 127.0.0.1:9"),
            "{text}"
        );
        assert!(text.contains("--acks leader"), "{text}");
    }

    /// An executable shell script `body` in `dir`, standing in for a loadgen.
    fn fake_loadgen(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("executable");
        path
    }

    #[test]
    fn a_loadgen_drives_a_peer_only_when_it_lists_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let with_peers = fake_loadgen(
            dir.path(),
            "with-peers",
            "[ \"$1\" = --list-systems ] && printf 'shardline\\nkafka\\nnats\\nredis\\n'",
        );
        assert_eq!(loadgen_drives(&with_peers, "kafka"), Ok(()));
        let without = fake_loadgen(dir.path(), "without", "echo shardline");
        let error = loadgen_drives(&without, "kafka").expect_err("no kafka");
        assert!(
            error.contains("cannot drive kafka (it drives: shardline)")
                && error.contains("--features peers"),
            "{error}"
        );
        let old = fake_loadgen(dir.path(), "old", "echo 'unexpected argument' >&2; exit 2");
        let error = loadgen_drives(&old, "kafka").expect_err("no --list-systems");
        assert!(error.contains("does not answer --list-systems"), "{error}");
        let missing = loadgen_drives(&dir.path().join("absent"), "kafka").expect_err("absent");
        assert!(missing.contains("starting"), "{missing}");
    }
}
