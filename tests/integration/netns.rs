//! Network namespaces made by a test: one per broker and a hub, joined by veth links to a
//! bridge in the hub. The test's own thread (and the clients and CLI commands it starts)
//! works from the hub; each broker process is started from inside its own namespace.
//! Traffic never leaves them. A broker is cut off from the others with blackhole routes
//! inside the namespaces, while clients still reach it.

use std::fs::File;
use std::process::Command;

use nix::sched::{setns, CloneFlags};

/// The namespaces of one test; removed on drop.
pub struct Netns {
    prefix: String,
    brokers: usize,
    /// The test thread's namespace before it moved to the hub.
    original: File,
}

/// Runs `ip` (or `tc`) with `args`; `Err` with its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

impl Netns {
    /// Makes the hub and `brokers` namespaces (`tag` keeps tests apart) and moves the
    /// calling thread into the hub. `Err` says why it cannot (not root, no `ip`, ...).
    pub fn create(tag: &str, brokers: usize) -> Result<Netns, String> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("cannot open this thread's network namespace: {e}"))?;
        let prefix = format!("sl{}{tag}", std::process::id() % 10_000);
        let netns = Netns {
            prefix,
            brokers,
            original,
        };
        netns.build()?;
        netns.enter(&netns.hub())?;
        Ok(netns)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    pub fn broker_ns(&self, broker: usize) -> String {
        format!("{}-b{broker}", self.prefix)
    }

    /// Broker `i`'s address.
    pub fn ip(&self, broker: usize) -> String {
        format!("10.231.0.{}", broker + 1)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub();
        run("ip", &["netns", "add", &hub])?;
        in_ns(&hub, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(
            &hub,
            &["ip", "addr", "add", "10.231.0.100/24", "dev", "br0"],
        )?;
        in_ns(&hub, &["ip", "link", "set", "br0", "up"])?;
        for broker in 0..self.brokers {
            let ns = self.broker_ns(broker);
            let (inside, outside) = (format!("vb{broker}"), format!("vh{broker}"));
            run("ip", &["netns", "add", &ns])?;
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
            in_ns(
                &hub,
                &[
                    "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                    "netns", &ns,
                ],
            )?;
            in_ns(&hub, &["ip", "link", "set", &outside, "master", "br0"])?;
            in_ns(&hub, &["ip", "link", "set", &outside, "up"])?;
            let address = format!("{}/24", self.ip(broker));
            in_ns(&ns, &["ip", "addr", "add", &address, "dev", &inside])?;
            in_ns(&ns, &["ip", "link", "set", &inside, "up"])?;
        }
        Ok(())
    }

    fn enter(&self, ns: &str) -> Result<(), String> {
        let file = File::open(format!("/var/run/netns/{ns}"))
            .map_err(|e| format!("cannot open namespace {ns}: {e}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns into {ns}: {e}"))
    }

    /// Runs `work` with the calling thread in broker `i`'s namespace (a process it starts
    /// lives there), then back in the hub.
    pub fn as_broker<T>(&self, broker: usize, work: impl FnOnce() -> T) -> T {
        self.enter(&self.broker_ns(broker))
            .expect("enter a broker's namespace");
        let result = work();
        self.enter(&self.hub()).expect("back to the hub");
        result
    }

    /// Cuts broker `i` off from the other brokers, both ways (blackhole routes on either
    /// side: no packet between them is delivered); clients in the hub still reach it.
    pub fn isolate(&self, broker: usize) {
        self.routes(broker, "add");
    }

    /// Undoes `isolate`.
    pub fn heal(&self, broker: usize) {
        self.routes(broker, "del");
    }

    fn routes(&self, broker: usize, change: &str) {
        for other in (0..self.brokers).filter(|&o| o != broker) {
            for (from, to) in [(broker, other), (other, broker)] {
                let address = format!("{}/32", self.ip(to));
                in_ns(
                    &self.broker_ns(from),
                    &["ip", "route", change, "blackhole", &address],
                )
                .expect("a blackhole route");
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = setns(&self.original, CloneFlags::CLONE_NEWNET);
        for broker in 0..self.brokers {
            let _ = run("ip", &["netns", "del", &self.broker_ns(broker)]);
        }
        let _ = run("ip", &["netns", "del", &self.hub()]);
    }
}
