//! A cluster of shardline brokers on loopback, started with `shardline cluster local
//! --brokers N` (every broker a controller voter, unpinned, with its own data directory
//! `<data>/node-<i>`), for the replicated scenario.
//!
//! `cluster local` lays node i out on fixed ports from a base: clients on `base + i`, the
//! controller on `base + 100 + i`; the harness picks a base whose ports are all free. The
//! launcher leads a process group of its own and its brokers join it. It is ready once
//! `cluster status` shows a controller leader and every broker registered and alive.
//!
//! Stopping: SIGTERM to the launcher, which sends SIGTERM to every broker and waits for
//! each; the harness waits for the launcher, reads each broker's exit status from its log
//! (`node i stopped (exit status: 0)`), and kills whatever of the group is left. On drop
//! (a failure midway) the whole group is killed. Should the harness itself die, the kernel
//! sends the launcher SIGTERM (`PR_SET_PDEATHSIG`), and it stops its brokers as on Ctrl-C.

pub mod admin;

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::broker::{process_usage, ProcessUsage};
use crate::loadgen::pin_to;
use crate::process_group::{
    all_processes, kill_and_reap, living_group_members, signal_child, spawn_group_leader,
};

/// `cluster local`'s layout: node i's controller listens this far above its client port.
pub const CONTROLLER_PORT_OFFSET: u16 = 100;
/// Where the harness looks for a free base port: below Linux's default ephemeral range
/// (32768-60999), so that no outgoing connection holds one of the ports.
const BASE_PORT_LOW: u16 = 20_000;
const BASE_PORT_HIGH: u16 = 30_000;
/// Base ports tried before giving up.
const BASE_PORT_ATTEMPTS: u32 = 64;
/// Times a cluster is started afresh when its launcher exits during start-up (another
/// process took a port between the check and the bind).
const START_ATTEMPTS: u32 = 2;
/// How long a cluster may take until a controller leads and every broker is alive.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
const CLUSTER_READY_POLL: Duration = Duration::from_millis(200);
/// How long the launcher may take to stop its brokers (it waits for each in turn).
const CLUSTER_STOP_TIMEOUT: Duration = Duration::from_secs(60);
const CLUSTER_STOP_POLL: Duration = Duration::from_millis(50);
/// The signal the launcher gets from the kernel should the harness die first: SIGTERM,
/// on which it stops every broker.
const LAUNCHER_PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGTERM;
/// Log lines of a failed cluster quoted in an error.
const LOG_TAIL_LINES: usize = 40;
/// The interface every node listens on.
const LOOPBACK: &str = "127.0.0.1";

const _: () = assert!(BASE_PORT_LOW < BASE_PORT_HIGH);
const _: () = assert!(
    BASE_PORT_HIGH as u32 + CONTROLLER_PORT_OFFSET as u32 + 5 <= 32_768,
    "every port of a 5-broker cluster stays below the ephemeral range"
);

/// How to start one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterLaunch {
    pub brokers: u32,
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub cores_per_broker: usize,
    pub profile: PathBuf,
}

impl ClusterLaunch {
    /// `shardline`'s arguments for this cluster.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["cluster", "local", "--brokers"]
            .map(OsString::from)
            .to_vec();
        args.push(self.brokers.to_string().into());
        args.push("--data-dir".into());
        args.push(self.data_dir.clone().into());
        args.push("--base-port".into());
        args.push(self.base_port.to_string().into());
        args.push("--cores".into());
        args.push(self.cores_per_broker.to_string().into());
        args.push("--profile".into());
        args.push(self.profile.clone().into());
        args
    }

    /// Every port the cluster listens on: each node's client port, then each node's
    /// controller port.
    pub fn ports(&self) -> Vec<u16> {
        let clients = (0..self.brokers as u16).map(|i| self.base_port + i);
        let controllers =
            (0..self.brokers as u16).map(|i| self.base_port + CONTROLLER_PORT_OFFSET + i);
        clients.chain(controllers).collect()
    }

    /// The clients' bootstrap list: every node's client address, node 0 first.
    pub fn bootstrap(&self) -> String {
        let addresses: Vec<String> = (0..self.brokers as u16)
            .map(|i| format!("{LOOPBACK}:{}", self.base_port + i))
            .collect();
        addresses.join(",")
    }
}

/// The base port candidate `attempt` (of a sequence that starts at `seed`), inside
/// `[BASE_PORT_LOW, BASE_PORT_HIGH)`.
pub fn base_port_candidate(seed: u32, attempt: u32) -> u16 {
    let span = u32::from(BASE_PORT_HIGH - BASE_PORT_LOW);
    // A step coprime with the span visits every candidate before repeating.
    const STEP: u32 = 997;
    let offset = (seed.wrapping_add(attempt.wrapping_mul(STEP))) % span;
    BASE_PORT_LOW + offset as u16
}

/// Whether every one of `ports` on loopback can be bound now (all at once).
fn ports_free(ports: &[u16]) -> bool {
    let listeners: Result<Vec<TcpListener>, _> = ports
        .iter()
        .map(|&port| TcpListener::bind((LOOPBACK, port)))
        .collect();
    listeners.is_ok()
}

/// A base port whose `brokers` client and controller ports were all free a moment ago.
fn free_base_port(brokers: u32) -> Result<u16, String> {
    let seed = std::process::id().wrapping_mul(31).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for attempt in 0..BASE_PORT_ATTEMPTS {
        let base_port = base_port_candidate(seed, attempt);
        let probe = ClusterLaunch {
            brokers,
            data_dir: PathBuf::new(),
            base_port,
            cores_per_broker: 1,
            profile: PathBuf::new(),
        };
        if ports_free(&probe.ports()) {
            return Ok(base_port);
        }
    }
    Err(format!(
        "no base port in {BASE_PORT_LOW}..{BASE_PORT_HIGH} with {brokers} free client and \
         controller ports after {BASE_PORT_ATTEMPTS} tries"
    ))
}

/// `i` from the arguments `--node-id i` of a broker's command line.
pub fn node_id_argument(arguments: &[String]) -> Option<u32> {
    let at = arguments.iter().position(|a| a == "--node-id")?;
    arguments.get(at + 1)?.parse().ok()
}

/// The exit status `cluster local` printed for each node (`node i stopped (STATUS)`), by
/// node; `None` for a node it printed none for.
pub fn node_exit_statuses(log: &str, brokers: u32) -> Vec<Option<String>> {
    (0..brokers)
        .map(|node| {
            let prefix = format!("node {node} stopped (");
            log.lines()
                .rev()
                .filter_map(|line| line.strip_prefix(&prefix))
                .find_map(|rest| rest.strip_suffix(')'))
                .map(str::to_string)
        })
        .collect()
}

/// A running `shardline cluster local`; its whole process group is killed on drop if it
/// was not stopped.
pub struct LocalCluster {
    launcher: Option<Child>,
    /// The launcher's pid, which is also its process group's id.
    group_id: u32,
    pub brokers: u32,
    pub bootstrap: String,
    log_path: PathBuf,
}

impl LocalCluster {
    /// Starts `brokers` brokers on free ports, with the launcher's output appended to
    /// `log_path` and the admin commands' to `admin_log`, optionally on `cpus` only (the
    /// brokers inherit the launcher's affinity), and waits until it is ready.
    pub fn start(
        shardline: &Path,
        launch_without_port: &ClusterLaunch,
        cpus: Option<&[usize]>,
        log_path: &Path,
        admin_log: &Path,
    ) -> Result<LocalCluster, String> {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let launch = ClusterLaunch {
                base_port: free_base_port(launch_without_port.brokers)?,
                ..launch_without_port.clone()
            };
            let mut command = Command::new(shardline);
            command.args(launch.args()).env("SHARDLINE_LOG", "info");
            if let Some(cpus) = cpus {
                pin_to(&mut command, cpus);
            }
            let launcher = spawn_group_leader(command, log_path, LAUNCHER_PARENT_DEATH_SIGNAL)?;
            let mut cluster = LocalCluster {
                group_id: launcher.id(),
                launcher: Some(launcher),
                brokers: launch.brokers,
                bootstrap: launch.bootstrap(),
                log_path: log_path.to_path_buf(),
            };
            // On an error, `cluster` drops here and its group is killed.
            match cluster.wait_until_ready(shardline, admin_log) {
                Ok(()) => return Ok(cluster),
                Err(error) => failures.push(error),
            }
        }
        Err(failures.join("\n--- and then ---\n"))
    }

    fn wait_until_ready(&mut self, shardline: &Path, admin_log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        let args = admin::status_args(&self.bootstrap);
        loop {
            let outcome = admin::run_admin(shardline, &args, admin_log).and_then(|text| {
                let status = serde_json::from_str(&text)
                    .map_err(|e| format!("cluster status is not JSON ({e}): {text}"))?;
                admin::check_status(&status, self.brokers)
            });
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if let Some(Ok(Some(status))) = self.launcher.as_mut().map(Child::try_wait) {
                self.launcher = None;
                let left = kill_leftovers(self.group_id);
                return Err(format!(
                    "`cluster local` exited with {status} before the cluster was ready{}:\n{}",
                    if left.is_empty() {
                        String::new()
                    } else {
                        format!(" (processes {left:?} of it left behind; killed)")
                    },
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster at {} was not ready within {CLUSTER_READY_TIMEOUT:?}: \
                     {error}\n{}",
                    self.bootstrap,
                    self.log_tail()
                ));
            }
            std::thread::sleep(CLUSTER_READY_POLL);
        }
    }

    /// The brokers' pids, node 0 first (the launcher's children with `--node-id`).
    fn node_pids(&self) -> Result<Vec<u32>, String> {
        let mut nodes: Vec<(u32, u32)> = all_processes()
            .into_iter()
            .filter(|place| place.parent_pid == self.group_id && place.state != 'Z')
            .filter_map(|place| {
                let command_line = std::fs::read(format!("/proc/{}/cmdline", place.pid)).ok()?;
                let arguments: Vec<String> = command_line
                    .split(|&byte| byte == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                Some((node_id_argument(&arguments)?, place.pid))
            })
            .collect();
        nodes.sort_unstable();
        let ids: Vec<u32> = nodes.iter().map(|(id, _)| *id).collect();
        if ids != (0..self.brokers).collect::<Vec<_>>() {
            return Err(format!(
                "the launcher {} runs nodes {ids:?}, not 0..{}",
                self.group_id, self.brokers
            ));
        }
        Ok(nodes.into_iter().map(|(_, pid)| pid).collect())
    }

    /// CPU time and peak RSS of every broker so far, node 0 first.
    pub fn usage(&self) -> Result<Vec<ProcessUsage>, String> {
        self.node_pids()?.into_iter().map(process_usage).collect()
    }

    /// The last lines of the launcher's log (its brokers log there too).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// SIGTERM to the launcher, which stops every broker; waits for it. An error when it
    /// has to be killed, when it or a broker exits with a failure, or when anything of its
    /// group outlives it (then killed).
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut launcher) = self.launcher.take() else {
            return Ok(());
        };
        let mut errors = Vec::new();
        if let Err(error) = signal_child(&launcher, libc::SIGTERM) {
            errors.push(format!("SIGTERM to `cluster local`: {error}"));
        }
        let deadline = Instant::now() + CLUSTER_STOP_TIMEOUT;
        loop {
            match launcher.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        errors.push(format!("`cluster local` exited with {status}"));
                    }
                    break;
                }
                Ok(None) if Instant::now() > deadline => {
                    kill_and_reap(&mut launcher);
                    errors.push(format!(
                        "`cluster local` did not stop within {CLUSTER_STOP_TIMEOUT:?}; killed \
                         with its brokers"
                    ));
                    break;
                }
                Ok(None) => std::thread::sleep(CLUSTER_STOP_POLL),
                Err(error) => {
                    kill_and_reap(&mut launcher);
                    errors.push(format!("waiting for `cluster local`: {error}"));
                    break;
                }
            }
        }
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        for (node, status) in node_exit_statuses(&log, self.brokers).iter().enumerate() {
            match status.as_deref() {
                Some("exit status: 0") => {}
                Some(other) => errors.push(format!("node {node} stopped with {other}")),
                None => errors.push(format!("no exit status of node {node} in the log")),
            }
        }
        let left = kill_leftovers(self.group_id);
        if !left.is_empty() {
            errors.push(format!(
                "processes {left:?} of the cluster outlived `cluster local`; killed"
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{}", errors.join("; "), self.log_tail()))
        }
    }
}

/// SIGKILL to the living members of process group `group_id`, whose leader was reaped;
/// returns their pids (empty: nothing was left).
fn kill_leftovers(group_id: u32) -> Vec<u32> {
    let left = living_group_members(group_id);
    if let (false, Ok(group)) = (left.is_empty(), libc::pid_t::try_from(group_id)) {
        // SAFETY: kill(2) on a process group that still has members (so its id cannot have
        // been reused) and that our launcher led.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    left
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut launcher) = self.launcher.take() {
            kill_and_reap(&mut launcher);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClusterLaunch {
        ClusterLaunch {
            brokers: 3,
            data_dir: PathBuf::from("/tmp/c"),
            base_port: 21_000,
            cores_per_broker: 1,
            profile: PathBuf::from("tuning/balanced.toml"),
        }
    }

    #[test]
    fn cluster_local_arguments_carry_every_setting() {
        let args: Vec<String> = three()
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "cluster local --brokers 3 --data-dir /tmp/c --base-port 21000 --cores 1 \
             --profile tuning/balanced.toml"
        );
    }

    #[test]
    fn ports_and_bootstrap_follow_the_launchers_layout() {
        let launch = three();
        assert_eq!(
            launch.ports(),
            [21_000, 21_001, 21_002, 21_100, 21_101, 21_102]
        );
        assert_eq!(
            launch.bootstrap(),
            "127.0.0.1:21000,127.0.0.1:21001,127.0.0.1:21002"
        );
        let one = ClusterLaunch {
            brokers: 1,
            ..launch
        };
        assert_eq!(one.ports(), [21_000, 21_100]);
        assert_eq!(one.bootstrap(), "127.0.0.1:21000");
    }

    #[test]
    fn base_port_candidates_stay_in_range_and_differ() {
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 0..BASE_PORT_ATTEMPTS {
            let port = base_port_candidate(u32::MAX - 5, attempt);
            assert!((BASE_PORT_LOW..BASE_PORT_HIGH).contains(&port), "{port}");
            seen.insert(port);
        }
        assert_eq!(seen.len(), BASE_PORT_ATTEMPTS as usize);
        let base = free_base_port(3).expect("a free base port");
        assert!((BASE_PORT_LOW..BASE_PORT_HIGH).contains(&base), "{base}");
    }

    #[test]
    fn a_brokers_node_id_is_read_from_its_command_line() {
        let arguments: Vec<String> = "shardline broker --data-dir d/node-2 --node-id 2 --cores 1"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(node_id_argument(&arguments), Some(2));
        assert_eq!(node_id_argument(&arguments[..5]), None);
        assert_eq!(node_id_argument(&["--node-id".to_string()]), None);
    }

    #[test]
    fn every_nodes_exit_status_is_read_from_the_launchers_log() {
        let log = "node 0: clients on 127.0.0.1:21000\n\
                   node 0 stopped (exit status: 0)\n\
                   node 1 stopped (signal: 9 (SIGKILL))\n\
                   node 10 stopped (exit status: 0)\n";
        assert_eq!(
            node_exit_statuses(log, 3),
            [
                Some("exit status: 0".to_string()),
                Some("signal: 9 (SIGKILL)".to_string()),
                None
            ]
        );
    }
}
