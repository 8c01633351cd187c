//! Server processes the harness starts in a process group of their own (a peer's node, a
//! `shardline cluster local` and the brokers it starts): spawned with their output in a
//! log file, signalled as a group, killed by the kernel should the harness die first
//! (`PR_SET_PDEATHSIG`: a process group of its own no longer gets the terminal's Ctrl-C),
//! and found again in /proc by parent or by group.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `signal` to the process group that `child` leads (`spawn_group_leader` made it a
/// leader).
pub fn signal_group(child: &Child, signal: libc::c_int) -> Result<(), String> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    // SAFETY: kill(2) on the group of our own child, which has not been reaped yet, so the
    // group id cannot have been reused.
    if unsafe { libc::kill(-pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// `signal` to our own child `child` alone.
pub fn signal_child(child: &Child, signal: libc::c_int) -> Result<(), String> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// SIGKILL to `child`'s process group (and to `child` itself, should the group be gone),
/// then reaps it.
pub fn kill_and_reap(child: &mut Child) {
    let _ = signal_group(child, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Opens `log_path` for appending and writes the command line of `command` to it.
fn open_log(command: &Command, log_path: &Path) -> Result<std::fs::File, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))
    };
    let mut log = open()?;
    writeln!(log, "$ {command:?}").map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    Ok(log)
}

/// Starts `command` with stdout and stderr appended to `log_path`.
pub fn spawn_logged(mut command: Command, log_path: &Path) -> Result<Child, String> {
    let log = open_log(&command, log_path)?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", command.get_program()))
}

/// As `spawn_logged`, for a server: the child leads a process group of its own (its own
/// children join it, so it can be stopped as a group), and the kernel sends it
/// `parent_death_signal` should the harness die before stopping it (SIGKILL for a server;
/// SIGTERM for a launcher that stops what it started on SIGTERM).
pub fn spawn_group_leader(
    mut command: Command,
    log_path: &Path,
    parent_death_signal: libc::c_int,
) -> Result<Child, String> {
    // SAFETY: getpid(2) only reads our own pid.
    let harness = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: the closure makes only async-signal-safe system calls and does not allocate.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, parent_death_signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The harness died between fork and prctl: the signal will never come.
            if libc::getppid() != harness {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    spawn_logged(command, log_path)
}

/// What /proc/<pid>/stat says of a process's place among processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessPlace {
    pub pid: u32,
    /// `R`, `S`, `Z` (a zombie: exited, not yet reaped) ...
    pub state: char,
    pub parent_pid: u32,
    pub group_id: u32,
}

/// Fields 1, 3, 4 and 5 of a /proc/<pid>/stat line (pid, state, ppid, pgrp); the command
/// name may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn process_place(stat: &str) -> Option<ProcessPlace> {
    let (head, rest) = stat.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent_pid = fields.next()?.parse().ok()?;
    let group_id = fields.next()?.parse().ok()?;
    Some(ProcessPlace {
        pid,
        state,
        parent_pid,
        group_id,
    })
}

/// Every process /proc shows now (those that vanish while it is read are left out).
pub fn all_processes() -> Vec<ProcessPlace> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| process_place(&stat))
        .collect()
}

/// The living (not zombie) processes of group `group_id`.
pub fn living_group_members(group_id: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|place| place.group_id == group_id && place.state != 'Z')
        .map(|place| place.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_pid_state_parent_and_group_past_a_strange_name() {
        let stat = "4242 (shard (line) x) S 4200 4100 4100 0 -1 4194560 100 0 0 0 250 75";
        assert_eq!(
            process_place(stat),
            Some(ProcessPlace {
                pid: 4242,
                state: 'S',
                parent_pid: 4200,
                group_id: 4100,
            })
        );
        assert_eq!(process_place("4242 (no fields)"), None);
        assert_eq!(process_place("garbage"), None);
    }

    #[test]
    fn this_process_is_among_all_processes_with_its_parent() {
        let me = std::process::id();
        let place = all_processes()
            .into_iter()
            .find(|p| p.pid == me)
            .expect("this process is in /proc");
        assert_eq!(place.parent_pid, std::os::unix::process::parent_id());
        // SAFETY: getpgrp(2) only reads our own group.
        let group = unsafe { libc::getpgrp() } as u32;
        assert_eq!(place.group_id, group);
        assert!(living_group_members(group).contains(&me));
    }
}
