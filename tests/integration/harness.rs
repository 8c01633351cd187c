//! Shared helpers: the binary under test, a glommio executor for in-process checks, seeds.

use std::future::Future;
use std::path::PathBuf;

/// The broker and CLI binary: this build's, or `SHARDLINE_TEST_BINARY` (a copy, so that a
/// long loop of a test is not changed under it by a rebuild).
pub fn shardline_binary() -> PathBuf {
    std::env::var_os("SHARDLINE_TEST_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_shardline")),
        PathBuf::from,
    )
}

/// Runs `body` on an unpinned glommio executor (tests never pin cores) and returns its value.
pub fn on_executor<T, F, Fut>(body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(body)
        .expect("executor starts")
        .join()
        .expect("executor body completes")
}

/// A seed for randomized tests: `SHARDLINE_TEST_SEED` to replay one, else from the clock.
/// Printed so that a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHARDLINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("{test}: SHARDLINE_TEST_SEED={seed}");
    seed
}

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a CLI command may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// A real `shardline broker` process on loopback, on its own data directory. Killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    log: Arc<(Mutex<String>, Condvar)>,
}

impl Broker {
    /// Starts a broker with two unpinned shards (tests never pin cores) plus `extra` flags,
    /// and waits until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--cores", "2", "--no-pin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut broker = Broker {
            child: None,
            address: "127.0.0.1:1".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            args,
            log: Arc::new((Mutex::new(String::new()), Condvar::new())),
        };
        broker.launch();
        broker
    }

    /// Starts a broker with exactly `args` (after `--data-dir`), and waits until it
    /// listens.
    pub fn start_exact(data_dir: &Path, args: &[String]) -> Broker {
        let mut broker = Broker {
            child: None,
            address: "127.0.0.1:1".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            args: args.to_vec(),
            log: Arc::new((Mutex::new(String::new()), Condvar::new())),
        };
        broker.launch();
        broker
    }

    /// Sends `signal` to the broker process (SIGSTOP, SIGCONT ...).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.pid().expect("the broker runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
    }

    fn launch(&mut self) {
        let mut child = Command::new(shardline_binary())
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("SHARDLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        self.log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (text, changed) = &*log;
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                changed.notify_all();
            }
        });
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        let (text, changed) = &*self.log;
        let mut guard = text.lock().unwrap();
        let address = loop {
            if let Some(rest) = guard.split("listening on ").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                break address
                    .parse::<SocketAddr>()
                    .expect("listening address parses");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("broker exited with {status} before listening:\n{}", *guard);
            }
            if Instant::now() >= deadline {
                // Not left running behind the failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker did not start listening:\n{}", *guard);
            }
            guard = changed
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap()
                .0;
        };
        drop(guard);
        self.address = address;
        self.child = Some(child);
    }

    /// The broker process's id while it runs (for checks under /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.id())
    }

    pub fn broker_arg(&self) -> String {
        self.address.to_string()
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// SIGTERM, then waits; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("broker ignored SIGTERM for 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Starts again on the same data directory (a new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `shardline` CLI with `args` (and `stdin`), failing the test if it hangs.
/// Output is drained while it runs, so a large output cannot fill the pipe and stall it.
pub fn cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(shardline_binary())
        .args(args)
        .env("SHARDLINE_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardline {args:?} hung for {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Writes a tuning profile file with the given TOML and returns its path.
pub fn profile_file(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\n{toml}")).expect("profile written");
    path
}

/// Builds the binaries of workspace `packages` next to this test binary
/// (`<target>/<profile>/deps/..`) and returns the directory that holds them.
///
/// It builds every binary and test of the workspace, not only those packages: that is the
/// selection `cargo test --workspace` resolves features for, so the libraries it already
/// built are reused and only the missing binaries are linked (seconds). A `cargo build -p`
/// of the packages alone resolves features differently and compiled glommio, raft and
/// shardline over again: two to three minutes of the suite on the 2-core VM.
pub fn build_workspace_binaries(packages: &[&str]) -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    // What `cargo test` sets for this test binary must not reach the inner build: ring's
    // build script watches CARGO_MANIFEST_DIR, and a different value there rebuilt ring,
    // rustls and everything above them, twice per suite (once here, once back by the next
    // `cargo test`).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_test = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || matches!(
                &*name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            );
        if set_by_cargo_test {
            build.env_remove(&*name);
        }
    }
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {packages:?}: {status}");
    for package in packages {
        let binary = profile_dir.join(package);
        assert!(binary.is_file(), "{} was not built", binary.display());
    }
    profile_dir.to_path_buf()
}

/// Rows of an HdrHistogram percentile distribution (`.hgrm`) file, after checking its
/// shape: the classic header, four numeric columns per row, and a last (100 %) row
/// without its `1/(1-Percentile)` column.
pub fn hgrm_rows(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("hgrm file reads");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"],
        "{text}"
    );
    let rows: Vec<Vec<f64>> = lines
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.split_whitespace()
                .map(|field| field.parse::<f64>().unwrap_or_else(|_| panic!("{line}")))
                .collect()
        })
        .collect();
    let (last, body) = rows.split_last().expect("at least one row");
    assert!(body.iter().all(|row| row.len() == 4), "{text}");
    assert_eq!(last.len(), 3, "{text}");
    assert_eq!(last[1], 1.0, "{text}");
    assert!(text.contains("#[Max"), "{text}");
    rows
}
