//! `--device-probe`: what the brokers' disk can do, measured before the first broker starts,
//! so that a report says when a run was bound by the device rather than by the broker.
//!
//! Three measurements, in a scratch directory under the data parent (the same filesystem and
//! device as the brokers), each with 1 MiB direct-IO writes from several threads:
//! - **fresh**: 16 threads write a new, preallocated file once (blocks the device has not
//!   held data in: on a thin-provisioned virtual disk mounted with `discard`, the host
//!   allocates each one as it is first written);
//! - **overwrite**: the same 16 threads write the same file again (blocks already written);
//! - **synced**: 8 threads each write their own new file, with an fdatasync after every
//!   write. This is the shape of a broker's flush round at 8 partitions under a syncing
//!   policy. It is a reference point for syncing profiles, not a hard limit: a broker that
//!   writes more per sync, or syncs one journal for many partitions, can differ from it.
//!
//! A probe that cannot run (a filesystem that refuses direct IO, a full disk) is reported
//! with its reason; it does not fail the session, because the runs do not depend on it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

const BLOCK_BYTES: usize = 1024 * 1024;
/// Direct IO's buffer alignment, as the broker's (`IO_ALIGNMENT_BYTES`).
const ALIGNMENT_BYTES: usize = 4096;
const _: () = assert!(BLOCK_BYTES % ALIGNMENT_BYTES == 0);
/// Writers of the fresh and overwrite measurements (the queue depth they keep).
const SHARED_FILE_THREADS: usize = 16;
/// Files of the synced measurement, one writer each (a flush round of 8 partitions).
const SYNCED_FILES: usize = 8;
/// What the broker uses for its data files; a probe without it would measure the page cache.
const DIRECT_IO: i32 = libc::O_DIRECT;

/// How much each measurement writes, in total over its threads.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSize {
    pub fresh_bytes: u64,
    pub synced_bytes: u64,
}

impl ProbeSize {
    /// 2.5 GiB written (at most 1 GiB of space at once): 5-10 s on the 2-core development VM.
    pub const REPORT: ProbeSize = ProbeSize {
        fresh_bytes: 1024 * 1024 * 1024,
        synced_bytes: 512 * 1024 * 1024,
    };
}

/// What the device did, in MiB/s of data written, and how it was asked.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceProbe {
    pub dir: String,
    pub block_bytes: usize,
    pub shared_file_threads: usize,
    pub synced_files: usize,
    /// Bytes written by the fresh and by the overwrite measurement (each), and by the synced
    /// one.
    pub fresh_bytes: u64,
    pub synced_bytes: u64,
    pub fresh_mib_per_s: f64,
    pub overwrite_mib_per_s: f64,
    pub synced_mib_per_s: f64,
    /// `synced_mib_per_s` as messages of the scenario's size, payload only (no batch or
    /// index overhead).
    pub synced_messages_per_s: f64,
    pub message_bytes: u64,
}

impl DeviceProbe {
    /// One line for the report's head.
    pub fn describe(&self) -> String {
        format!(
            "Device probe (`{}`, {} MiB direct-IO writes): new blocks {:.0} MiB/s, blocks \
             already written {:.0} MiB/s ({} threads); {} files each written and fdatasynced \
             in turn {:.0} MiB/s, the payload of {:.0} msg/s of {} B (a reference for profiles \
             that sync).",
            self.dir,
            self.block_bytes as f64 / (1u64 << 20) as f64,
            self.fresh_mib_per_s,
            self.overwrite_mib_per_s,
            self.shared_file_threads,
            self.synced_files,
            self.synced_mib_per_s,
            self.synced_messages_per_s,
            self.message_bytes
        )
    }
}

/// Runs the probe in `parent/device-probe` and removes what it wrote.
pub fn probe(parent: &Path, size: ProbeSize, message_bytes: u64) -> Result<DeviceProbe, String> {
    let dir = parent.join("device-probe");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let measured = measure(&dir, size);
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        eprintln!(
            "shardline-bench: could not remove the device probe's {}: {error}",
            dir.display()
        );
    }
    let (fresh, overwrite, synced) = measured?;
    Ok(DeviceProbe {
        dir: dir.display().to_string(),
        block_bytes: BLOCK_BYTES,
        shared_file_threads: SHARED_FILE_THREADS,
        synced_files: SYNCED_FILES,
        fresh_bytes: size.fresh_bytes,
        synced_bytes: size.synced_bytes,
        fresh_mib_per_s: fresh,
        overwrite_mib_per_s: overwrite,
        synced_mib_per_s: synced,
        synced_messages_per_s: synced * (1u64 << 20) as f64 / message_bytes.max(1) as f64,
        message_bytes,
    })
}

fn measure(dir: &Path, size: ProbeSize) -> Result<(f64, f64, f64), String> {
    let block = AlignedBlock::new();
    let blocks = (size.fresh_bytes / BLOCK_BYTES as u64).max(1);
    let path = dir.join("shared");
    let file = open_direct(&path)?;
    preallocate(&file, &path, blocks * BLOCK_BYTES as u64)?;
    let fresh = write_shared(&file, &path, &block, blocks, SHARED_FILE_THREADS)?;
    let overwrite = write_shared(&file, &path, &block, blocks, SHARED_FILE_THREADS)?;
    drop(file);
    // Its space is freed before the synced measurement (`probe` removes the directory anyway).
    let _ = std::fs::remove_file(&path);
    let per_file = (size.synced_bytes / BLOCK_BYTES as u64 / SYNCED_FILES as u64).max(1);
    let synced = write_synced(dir, &block, per_file, SYNCED_FILES)?;
    Ok((fresh, overwrite, synced))
}

/// `threads` threads write `blocks` blocks of `file` between them, then one fdatasync;
/// MiB/s over the whole.
fn write_shared(
    file: &File,
    path: &Path,
    block: &AlignedBlock,
    blocks: u64,
    threads: usize,
) -> Result<f64, String> {
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= blocks {
                            return Ok(());
                        }
                        let at = index * BLOCK_BYTES as u64;
                        file.write_all_at(block.bytes(), at)
                            .map_err(|e| format!("writing {} at {at}: {e}", path.display()))?;
                    }
                })
            })
            .collect();
        joined(workers)
    })?;
    file.sync_data()
        .map_err(|e| format!("fdatasync of {}: {e}", path.display()))?;
    Ok(mib_per_s(blocks * BLOCK_BYTES as u64, started))
}

/// `files` threads, each with its own new preallocated file: write a block, fdatasync,
/// `blocks` times; MiB/s over all of them.
fn write_synced(
    dir: &Path,
    block: &AlignedBlock,
    blocks: u64,
    files: usize,
) -> Result<f64, String> {
    let mut opened = Vec::with_capacity(files);
    for index in 0..files {
        let path = dir.join(format!("synced-{index}"));
        let file = open_direct(&path)?;
        preallocate(&file, &path, blocks * BLOCK_BYTES as u64)?;
        opened.push((file, path));
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = opened
            .iter()
            .map(|(file, path)| {
                scope.spawn(move || -> Result<(), String> {
                    for index in 0..blocks {
                        let at = index * BLOCK_BYTES as u64;
                        file.write_all_at(block.bytes(), at)
                            .map_err(|e| format!("writing {} at {at}: {e}", path.display()))?;
                        file.sync_data()
                            .map_err(|e| format!("fdatasync of {}: {e}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        joined(workers)
    })?;
    Ok(mib_per_s(
        blocks * files as u64 * BLOCK_BYTES as u64,
        started,
    ))
}

/// Waits for every worker; the first error, if any.
fn joined(
    workers: Vec<std::thread::ScopedJoinHandle<'_, Result<(), String>>>,
) -> Result<(), String> {
    let mut outcome = Ok(());
    for worker in workers {
        let result = worker
            .join()
            .unwrap_or(Err("a probe thread panicked".into()));
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

fn mib_per_s(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn open_direct(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(DIRECT_IO)
        .open(path)
        .map_err(|e| format!("opening {} for direct IO: {e}", path.display()))
}

/// Reserves the file's space up front, as the broker does for its segments.
fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let length = libc::off_t::try_from(bytes).map_err(|_| format!("{bytes} B is too large"))?;
    // SAFETY: a valid open descriptor; fallocate only reads its arguments.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if result != 0 {
        return Err(format!(
            "preallocating {} B of {}: {}",
            bytes,
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One 1 MiB block at a 4096-byte boundary (direct IO needs an aligned buffer), filled with
/// a pattern rather than zeros (a device or filesystem could treat zeros specially).
struct AlignedBlock {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let mut storage: Vec<u8> = (0..BLOCK_BYTES + ALIGNMENT_BYTES)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let start = storage.as_mut_ptr().align_offset(ALIGNMENT_BYTES);
        AlignedBlock { storage, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + BLOCK_BYTES]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_aligned_and_whole() {
        let block = AlignedBlock::new();
        assert_eq!(block.bytes().as_ptr() as usize % ALIGNMENT_BYTES, 0);
        assert_eq!(block.bytes().len(), BLOCK_BYTES);
        assert!(block.bytes().iter().any(|&b| b != 0));
    }

    #[test]
    fn a_small_probe_measures_and_removes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let size = ProbeSize {
            fresh_bytes: 16 * BLOCK_BYTES as u64,
            synced_bytes: 8 * BLOCK_BYTES as u64,
        };
        let probed = probe(dir.path(), size, 1024);
        assert!(
            !dir.path().join("device-probe").exists(),
            "the probe removes its directory, whether it measured or not"
        );
        let probe = match probed {
            Ok(probe) => probe,
            // The test's temporary directory may be on a filesystem that refuses direct IO:
            // the probe must then say so.
            Err(error) => {
                assert!(error.contains("direct IO"), "{error}");
                return;
            }
        };
        for rate in [
            probe.fresh_mib_per_s,
            probe.overwrite_mib_per_s,
            probe.synced_mib_per_s,
        ] {
            assert!(rate.is_finite() && rate > 0.0, "{probe:?}");
        }
        assert!(
            (probe.synced_messages_per_s - probe.synced_mib_per_s * 1024.0).abs() < 1e-6,
            "{probe:?}"
        );
        assert!(probe.describe().contains("msg/s of 1024 B"));
        assert_eq!(probe.fresh_bytes, 16 * BLOCK_BYTES as u64);
    }

    #[test]
    fn a_probe_that_cannot_write_says_why() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the probe's directory should go.
        let parent = dir.path().join("not-a-directory");
        std::fs::write(&parent, b"x").unwrap();
        let error = probe(&parent, ProbeSize::REPORT, 1024).unwrap_err();
        assert!(error.contains("creating"), "{error}");
    }
}
