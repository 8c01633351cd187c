//! Starting the shards: one glommio executor per shard, each on its own thread, pinned to a
//! core when asked, all joined in a full mesh of channels for cross-shard messages.
//!
//! # The reactor watchdog
//!
//! A parked glommio executor sleeps in `io_uring_enter` on its main ring, woken by a poll of
//! its latency ring, where its next timer is an `IORING_OP_TIMEOUT`. On this kernel that
//! wake-up is sometimes lost: idle brokers were found with both shards asleep in
//! `io_uring_enter` long past their timers, deaf to SIGTERM (its flag is polled by a
//! timer) until a debugger's attach interrupted the syscall, after which they went on at
//! once. Under load the same loss holds a shard's completed IO until something else wakes
//! it, which fits the 30 s stalls seen under a disk hog. So every shard runs a heartbeat
//! task (a timer every `HEARTBEAT_MS`), and a plain watchdog thread interrupts the
//! executor thread of any shard whose heartbeat is `STALL_MS` late with a signal (SIGURG,
//! whose handler does nothing): `io_uring_enter` returns `EINTR`, glommio reaps its rings
//! and runs its timers. A heartbeat may also be late because a task held the CPU; the
//! nudge is then harmless (the handler restarts interrupted syscalls).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{LocalExecutorBuilder, Placement};

use crate::constants::MESH_CHANNEL_CAPACITY;

/// How the shards run. Built from the command line and the tuning profile.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub shard_count: usize,
    /// Pin shard `i` to `cpus[i]`; `None` leaves the executors unpinned.
    pub cpus: Option<Vec<usize>>,
    /// glommio io memory (registered buffers) per shard.
    pub io_memory_bytes: usize,
    /// How long an idle executor spins before it parks (0: park at once).
    pub spin_before_park: Duration,
}

/// A shard's raw ends of the mesh (absent when there is a single shard); `super::mesh`
/// wraps them.
pub struct MeshEnds<T: Send + 'static> {
    pub senders: Senders<T>,
    pub receivers: Receivers<T>,
}

/// What a shard's body gets when its executor starts. A shard's id is its index in the
/// mesh (glommio numbers peers in the order they join), so ids are dense from 0.
pub struct ShardStart<T: Send + 'static> {
    pub shard_id: usize,
    pub shard_count: usize,
    pub mesh: Option<MeshEnds<T>>,
    /// What the reactor watchdog knows of this shard (its nudges, for the stats).
    pub watch: Arc<ShardWatch>,
}

/// How often a shard's heartbeat task runs.
const HEARTBEAT_MS: u64 = 50;
/// A heartbeat this late gets the shard's thread interrupted.
const STALL_MS: u64 = 250;
/// How often the watchdog looks.
const WATCH_MS: u64 = 50;

/// One shard as the reactor watchdog sees it.
#[derive(Debug, Default)]
pub struct ShardWatch {
    /// The executor thread's kernel thread id (0 until it runs, or once it ended).
    tid: AtomicI32,
    /// Milliseconds since the watchdog's start at the last heartbeat.
    heartbeat_ms: AtomicU64,
    /// Times the watchdog interrupted this shard's thread.
    nudges: AtomicU64,
}

impl ShardWatch {
    /// Times the watchdog interrupted this shard's sleeping reactor.
    pub fn nudges(&self) -> u64 {
        self.nudges.load(Ordering::Relaxed)
    }
}

/// The watchdog thread over every shard of a `run_shards`; ends with `stop`.
struct ReactorWatchdog {
    shards: Vec<Arc<ShardWatch>>,
    started: Instant,
    stopped: Arc<AtomicBool>,
}

impl ReactorWatchdog {
    fn new(shard_count: usize) -> ReactorWatchdog {
        // SIGURG is ignored by default; a handler (which only sets an unused flag, and is
        // installed with SA_RESTART) makes it interrupt a sleeping io_uring_enter. Once per
        // process, however many times shards are started.
        static HANDLER: std::sync::Once = std::sync::Once::new();
        HANDLER.call_once(|| {
            let flag = Arc::new(AtomicBool::new(false));
            if let Err(error) = signal_hook::flag::register(signal_hook::consts::SIGURG, flag) {
                tracing::warn!(%error, "no SIGURG handler: the reactor watchdog cannot wake shards");
            }
        });
        ReactorWatchdog {
            shards: (0..shard_count).map(|_| Arc::default()).collect(),
            started: Instant::now(),
            stopped: Arc::default(),
        }
    }

    fn now_ms(started: Instant) -> u64 {
        started.elapsed().as_millis() as u64
    }

    /// Runs on the shard's executor: records its thread and beats until the executor ends.
    fn beat(watch: Arc<ShardWatch>, started: Instant) {
        watch
            .tid
            .store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
        watch
            .heartbeat_ms
            .store(Self::now_ms(started), Ordering::SeqCst);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
                watch
                    .heartbeat_ms
                    .store(Self::now_ms(started), Ordering::SeqCst);
            }
        })
        .detach();
    }

    fn spawn(&self) -> std::thread::JoinHandle<()> {
        let shards = self.shards.clone();
        let started = self.started;
        let stopped = self.stopped.clone();
        std::thread::Builder::new()
            .name("reactor-watchdog".into())
            .spawn(move || {
                let pid = nix::unistd::getpid().as_raw();
                while !stopped.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(WATCH_MS));
                    let now = Self::now_ms(started);
                    for (shard, watch) in shards.iter().enumerate() {
                        let tid = watch.tid.load(Ordering::SeqCst);
                        let late = now.saturating_sub(watch.heartbeat_ms.load(Ordering::SeqCst));
                        if tid == 0 || late < STALL_MS {
                            continue;
                        }
                        // SAFETY: tgkill only sends a signal; a thread that ended meanwhile
                        // (its id is checked against this process) gets nothing.
                        let sent =
                            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGURG) };
                        if sent == 0 {
                            let nudges = watch.nudges.fetch_add(1, Ordering::Relaxed) + 1;
                            if nudges.is_power_of_two() {
                                tracing::warn!(
                                    shard,
                                    late_ms = late,
                                    nudges,
                                    "a shard's reactor slept past its timers: interrupted it"
                                );
                            }
                        }
                        // Give it a full period before the next look.
                        watch.heartbeat_ms.store(now, Ordering::SeqCst);
                    }
                }
            })
            .expect("the watchdog thread starts")
    }
}

/// Large allocations (write buffers that do not fit glommio's registered io memory) stay
/// in the heap arena below this size instead of each being a fresh `mmap`, which would be
/// page-faulted and zeroed again on every flush (measured: half the append throughput).
const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 32 * 1024 * 1024;
/// Free heap above this size is returned to the kernel (not after every large free).
const MALLOC_TRIM_THRESHOLD_BYTES: i32 = 256 * 1024 * 1024;

/// Tunes the C allocator for the broker's buffer pattern; call once at start.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called before shards start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES);
    }
}

/// The io memory each shard may register so that all of them fit under `memlock_bytes`.
pub fn io_memory_per_shard(memlock_bytes: u64, shard_count: usize, wanted: usize) -> usize {
    // Leave a quarter of the lock limit for io_uring rings and other users.
    let share = (memlock_bytes / 4 * 3) / shard_count.max(1) as u64;
    wanted
        .min(usize::try_from(share).unwrap_or(usize::MAX))
        .max(64 * 1024)
}

/// The process's locked-memory limit in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) => soft,
        Err(_) => 8 * 1024 * 1024,
    }
}

/// Starts every shard and waits for all of them to finish; returns their results in shard
/// order. `body` runs once per shard, on that shard's executor.
pub fn run_shards<T, R, F, Fut>(config: &RuntimeConfig, body: F) -> Result<Vec<R>, String>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(ShardStart<T>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    assert!(config.shard_count > 0, "at least one shard");
    let watchdog = ReactorWatchdog::new(config.shard_count);
    let watchdog_thread = watchdog.spawn();
    // The watchdog ends with this call, also when a shard cannot start.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop_watchdog = StopOnDrop(watchdog.stopped.clone());
    let mesh = (config.shard_count > 1)
        .then(|| MeshBuilder::<T, Full>::full(config.shard_count, MESH_CHANNEL_CAPACITY));
    let mut handles = Vec::with_capacity(config.shard_count);
    for thread_index in 0..config.shard_count {
        let placement = match &config.cpus {
            Some(cpus) => Placement::Fixed(cpus[thread_index]),
            None => Placement::Unbound,
        };
        let mesh = mesh.clone();
        let body = body.clone();
        let shard_count = config.shard_count;
        let watch = watchdog.shards[thread_index].clone();
        let started = watchdog.started;
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{thread_index}"))
            .io_memory(config.io_memory_bytes)
            .spin_before_park(config.spin_before_park);
        let handle = builder
            .spawn(move || async move {
                ReactorWatchdog::beat(watch.clone(), started);
                let (shard_id, mesh) = match mesh {
                    Some(builder) => {
                        let (senders, receivers) =
                            builder.join().await.expect("every shard joins the mesh");
                        (senders.peer_id(), Some(MeshEnds { senders, receivers }))
                    }
                    None => (0, None),
                };
                let result = body(ShardStart {
                    shard_id,
                    shard_count,
                    mesh,
                    watch: watch.clone(),
                })
                .await;
                watch.tid.store(0, Ordering::SeqCst);
                result
            })
            .map_err(|e| format!("cannot start shard thread {thread_index}: {e}"))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(handles.len());
    let mut failed = None;
    for (thread_index, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(result) => results.push(result),
            Err(e) => {
                failed.get_or_insert(format!("shard thread {thread_index} failed: {e}"));
            }
        }
    }
    drop(stop_watchdog);
    let _ = watchdog_thread.join();
    match failed {
        Some(error) => Err(error),
        None => Ok(results),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_memory_fits_the_lock_limit() {
        assert_eq!(io_memory_per_shard(8 << 20, 2, 4 << 20), 3 << 20);
        assert_eq!(io_memory_per_shard(8 << 20, 1, 2 << 20), 2 << 20);
        assert_eq!(io_memory_per_shard(u64::MAX, 4, 2 << 20), 2 << 20);
    }

    /// A shard whose heartbeat is late (here its thread is held by a blocking sleep, as a
    /// reactor that slept past its timers would be) is interrupted by the watchdog and
    /// counted; the interrupted thread goes on unharmed (the blocking sleep still lasts its
    /// whole time).
    #[test]
    fn the_watchdog_interrupts_a_shard_whose_heartbeat_is_late() {
        let config = RuntimeConfig {
            shard_count: 2,
            cpus: None,
            io_memory_bytes: 256 * 1024,
            spin_before_park: Duration::ZERO,
        };
        let results =
            run_shards::<u64, (usize, u64, Duration), _, _>(&config, |start| async move {
                let began = Instant::now();
                if start.shard_id == 0 {
                    std::thread::sleep(Duration::from_millis(4 * STALL_MS));
                } else {
                    glommio::timer::sleep(Duration::from_millis(4 * STALL_MS)).await;
                }
                // Let the other shard finish its own wait before this one ends.
                glommio::timer::sleep(Duration::from_millis(2 * HEARTBEAT_MS)).await;
                (start.shard_id, start.watch.nudges(), began.elapsed())
            })
            .unwrap();
        let held = results.iter().find(|r| r.0 == 0).unwrap();
        assert!(held.1 >= 1, "the held shard was nudged: {results:?}");
        assert!(
            held.2 >= Duration::from_millis(4 * STALL_MS),
            "the blocking sleep was not cut short: {results:?}"
        );
    }

    #[test]
    fn shards_start_join_the_mesh_and_exchange_messages() {
        let config = RuntimeConfig {
            shard_count: 2,
            cpus: None,
            io_memory_bytes: 256 * 1024,
            spin_before_park: Duration::ZERO,
        };
        let results = run_shards::<u64, (usize, u64), _, _>(&config, |start| async move {
            let mesh = start.mesh.expect("two shards have a mesh");
            let peer = 1 - start.shard_id;
            mesh.senders
                .send_to(peer, start.shard_id as u64 + 10)
                .await
                .unwrap();
            let got = mesh.receivers.recv_from(peer).await.unwrap().unwrap();
            (start.shard_id, got)
        })
        .unwrap();
        let mut results = results;
        results.sort_unstable();
        assert_eq!(results, vec![(0, 11), (1, 10)]);
    }
}
