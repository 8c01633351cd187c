//! A `shardline broker` process started and stopped by the harness, and what /proc says
//! about its CPU time and memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM.
const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const BROKER_STOP_POLL: Duration = Duration::from_millis(20);
/// Broker shards in every run.
pub const BROKER_SHARDS: usize = 2;
const BYTES_PER_KIB: u64 = 1024;

/// A running broker; killed on drop if not stopped.
pub struct BrokerProcess {
    child: Option<Child>,
    pub address: String,
    log: mpsc::Receiver<String>,
    log_lines: Vec<String>,
}

/// What /proc said about the broker just before it was stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU seconds over the broker's life.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM).
    pub peak_rss_mib: f64,
}

/// How the broker is placed on CPUs.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Unpinned,
    Pinned(Vec<usize>),
}

impl BrokerProcess {
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        profile: &Path,
        placement: &Placement,
        extra: &[String],
    ) -> Result<BrokerProcess, String> {
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--profile")
            .arg(profile)
            .args(extra);
        match placement {
            Placement::Unpinned => {
                command.args(["--cores", &BROKER_SHARDS.to_string(), "--no-pin"]);
            }
            Placement::Pinned(cpus) => {
                let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
                command.args(["--cpus", &list.join(",")]);
            }
        }
        let mut child = command
            .env("SHARDLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("broker stderr is not piped")?;
        let (sender, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut broker = BrokerProcess {
            child: Some(child),
            address: String::new(),
            log,
            log_lines: Vec::new(),
        };
        broker.address = broker.wait_until_listening()?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            match self.log.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let address = listening_address(&line);
                    self.log_lines.push(line);
                    if let Some(address) = address {
                        return Ok(address);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "broker exited before listening:\n{}",
                        self.log_text()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "broker did not listen within {BROKER_START_TIMEOUT:?}:\n{}",
                    self.log_text()
                ));
            }
        }
    }

    /// Everything the broker logged so far.
    pub fn log_text(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.log_lines.push(line);
        }
        self.log_lines.join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time and peak RSS so far, from /proc/<pid>/stat and /proc/<pid>/status.
    pub fn usage(&self) -> Result<ProcessUsage, String> {
        process_usage(self.pid().ok_or("broker is not running")?)
    }

    /// SIGTERM, then waits; an error unless it exits with status 0 in time.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "SIGTERM to broker {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| format!("waiting for broker: {e}"))?
            {
                if status.success() {
                    return Ok(());
                }
                return Err(format!(
                    "broker exited with {status} after SIGTERM:\n{}",
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "broker ignored SIGTERM for {BROKER_STOP_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(BROKER_STOP_POLL);
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU time and peak RSS so far of process `pid`, from /proc/<pid>/stat and status.
pub fn process_usage(pid: u32) -> Result<ProcessUsage, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_s <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    Ok(ProcessUsage {
        cpu_s: cpu_ticks(&stat)? as f64 / ticks_per_s as f64,
        peak_rss_mib: peak_rss_kib(&status)? as f64 / BYTES_PER_KIB as f64,
    })
}

/// `ADDR` from a log line containing `listening on ADDR ...`.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split_whitespace().next().map(str::to_string)
}

/// utime + stime (fields 14 and 15) of /proc/<pid>/stat; the command name may hold spaces,
/// so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Result<u64, String> {
    let after_name = stat.rsplit_once(')').ok_or("no ')' in /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|text| text.parse().ok())
            .ok_or(format!("field {n} of /proc stat is missing: {stat}"))
    };
    Ok(field(14)? + field(15)?)
}

/// VmHWM (kB) from /proc/<pid>/status.
fn peak_rss_kib(status: &str) -> Result<u64, String> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|text| text.parse().ok())
        .ok_or("no VmHWM in /proc status".into())
}

/// Where the broker and the load generator run: on a machine with at least four CPUs the
/// broker's shards are pinned to the first ones and the loadgen gets the rest; on smaller
/// machines nothing is pinned (they share every CPU).
pub fn placement(allowed_cpus: &[usize]) -> (Placement, Option<Vec<usize>>) {
    const CPUS_FOR_SEPARATION_MIN: usize = 2 * BROKER_SHARDS;
    if allowed_cpus.len() < CPUS_FOR_SEPARATION_MIN {
        return (Placement::Unpinned, None);
    }
    let (broker, loadgen) = allowed_cpus.split_at(BROKER_SHARDS);
    (Placement::Pinned(broker.to_vec()), Some(loadgen.to_vec()))
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..count).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// A temporary data directory under `parent`, removed on drop.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn create(parent: &Path, name: &str) -> Result<DataDir, String> {
        let path = parent.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(DataDir(path))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (shard line) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Ok(325));
    }

    #[test]
    fn peak_rss_is_vm_hwm() {
        let status = "Name:\tshardline\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(peak_rss_kib(status), Ok(2048));
    }

    #[test]
    fn this_process_usage_is_readable() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        assert!(cpu_ticks(&stat).is_ok());
        assert!(peak_rss_kib(&status).expect("hwm") > 0);
    }

    #[test]
    fn listening_address_is_the_word_after_listening_on() {
        let line = "2026 INFO listening on 127.0.0.1:4321 (2 shards, profile=latency)";
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:4321"));
        assert_eq!(listening_address("starting"), None);
    }

    #[test]
    fn placement_separates_broker_and_loadgen_only_with_four_cpus() {
        assert_eq!(placement(&[0, 1]), (Placement::Unpinned, None));
        assert_eq!(
            placement(&[0, 1, 2, 3, 4, 5]),
            (Placement::Pinned(vec![0, 1]), Some(vec![2, 3, 4, 5]))
        );
    }
}
