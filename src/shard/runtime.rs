//! Starting the shards: one glommio executor per shard, each on its own thread, pinned to a
//! core when asked, all joined in a full mesh of channels for cross-shard messages.

use std::future::Future;
use std::time::Duration;

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
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{thread_index}"))
            .io_memory(config.io_memory_bytes)
            .spin_before_park(config.spin_before_park);
        let handle = builder
            .spawn(move || async move {
                let (shard_id, mesh) = match mesh {
                    Some(builder) => {
                        let (senders, receivers) =
                            builder.join().await.expect("every shard joins the mesh");
                        (senders.peer_id(), Some(MeshEnds { senders, receivers }))
                    }
                    None => (0, None),
                };
                body(ShardStart {
                    shard_id,
                    shard_count,
                    mesh,
                })
                .await
            })
            .map_err(|e| format!("cannot start shard thread {thread_index}: {e}"))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(handles.len());
    for (thread_index, handle) in handles.into_iter().enumerate() {
        let result = handle
            .join()
            .map_err(|e| format!("shard thread {thread_index} failed: {e}"))?;
        results.push(result);
    }
    Ok(results)
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
