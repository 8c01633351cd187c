//! `--disk-hog`: a writer that competes with the brokers for the disk during a scenario.
//!
//! One thread writes 1 MiB blocks into a file beside the brokers' data directories (so the
//! same filesystem and device) and fdatasyncs every `SYNC_EVERY_BYTES`, wrapping at
//! `FILE_BYTES` so the file never grows past that. It runs from before the first broker
//! starts until the last run ends, and the report says how much it wrote. The point is the
//! scenario's loss and duplicate columns under device contention: an acknowledged message
//! must survive, and a producer retry after a slow write must not store it twice.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

const BLOCK_BYTES: usize = 1024 * 1024;
/// fdatasync after this many bytes written (the writeback and journal work a sync forces is
/// what slows the brokers' own syncs).
const SYNC_EVERY_BYTES: u64 = 64 * 1024 * 1024;
/// The file is rewritten from its start past this size.
const FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// What the hog did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct HogTotals {
    pub path: String,
    pub bytes_written: u64,
    pub fdatasyncs: u64,
    pub elapsed_s: f64,
    pub mib_per_s: f64,
}

impl HogTotals {
    /// One line for the report's head.
    pub fn describe(&self) -> String {
        format!(
            "Disk hog: beside the brokers, one thread wrote {:.1} GiB in {:.0} s ({:.0} MiB/s, \
             1 MiB writes, fdatasync every {} MiB, {} syncs) to `{}`.",
            self.bytes_written as f64 / (1u64 << 30) as f64,
            self.elapsed_s,
            self.mib_per_s,
            SYNC_EVERY_BYTES >> 20,
            self.fdatasyncs,
            self.path
        )
    }
}

/// A running hog; `stop` ends it and reports its totals. Dropped without `stop` (the
/// harness panicked), it still stops and removes its file.
pub struct DiskHog {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(u64, u64), String>>>,
    started: Instant,
}

impl DiskHog {
    /// Starts writing into `dir/disk-hog` (the directory is made if missing).
    pub fn start(dir: &Path) -> Result<DiskHog, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("disk-hog");
        let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let writing = path.clone();
        let thread = std::thread::Builder::new()
            .name("disk-hog".into())
            .spawn(move || write_until(file, &writing, &flag))
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                format!("starting the disk hog: {e}")
            })?;
        Ok(DiskHog {
            path,
            stop,
            thread: Some(thread),
            started: Instant::now(),
        })
    }

    /// Stops the writer, removes its file and returns what it did; an IO error of the writer
    /// is the error (the scenario then did not run under the contention it claims).
    pub fn stop(mut self) -> Result<HogTotals, String> {
        let (bytes_written, fdatasyncs) = self.end()?;
        let elapsed_s = self.started.elapsed().as_secs_f64();
        Ok(HogTotals {
            path: self.path.display().to_string(),
            bytes_written,
            fdatasyncs,
            elapsed_s,
            mib_per_s: bytes_written as f64 / (1u64 << 20) as f64 / elapsed_s.max(1e-9),
        })
    }

    fn end(&mut self) -> Result<(u64, u64), String> {
        self.stop.store(true, Ordering::Relaxed);
        let joined = self.thread.take().map(JoinHandle::join);
        let _ = std::fs::remove_file(&self.path);
        match joined {
            Some(Ok(totals)) => totals.map_err(|error| format!("the disk hog failed: {error}")),
            Some(Err(_)) => Err("the disk hog's thread panicked".to_string()),
            None => Err("the disk hog was already stopped".to_string()),
        }
    }
}

impl Drop for DiskHog {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.end();
        }
    }
}

fn write_until(mut file: File, path: &Path, stop: &AtomicBool) -> Result<(u64, u64), String> {
    // Not zeros: a filesystem could treat runs of zeros specially.
    let block: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let (mut written, mut syncs, mut position, mut unsynced) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if position >= FILE_BYTES {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| format!("seeking to the start of {}: {e}", path.display()))?;
            position = 0;
        }
        file.write_all(&block)
            .map_err(|e| format!("writing {} at {position}: {e}", path.display()))?;
        position += BLOCK_BYTES as u64;
        written += BLOCK_BYTES as u64;
        unsynced += BLOCK_BYTES as u64;
        if unsynced >= SYNC_EVERY_BYTES {
            file.sync_data()
                .map_err(|e| format!("fdatasync of {}: {e}", path.display()))?;
            syncs += 1;
            unsynced = 0;
        }
    }
    Ok((written, syncs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hog_writes_syncs_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let hog = DiskHog::start(dir.path()).unwrap();
        // Until it has written enough to have synced at least once.
        let file = dir.path().join("disk-hog");
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) < SYNC_EVERY_BYTES + 1 {
            assert!(Instant::now() < deadline, "the hog wrote too little");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let totals = hog.stop().unwrap();
        assert!(totals.bytes_written > SYNC_EVERY_BYTES, "{totals:?}");
        assert!(totals.fdatasyncs >= 1, "{totals:?}");
        assert!(!file.exists(), "the hog's file is removed when it stops");
        assert!(totals.describe().contains("fdatasync every 64 MiB"));
    }

    #[test]
    fn a_hog_dropped_without_stop_still_stops_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk-hog");
        let hog = DiskHog::start(dir.path()).unwrap();
        assert!(file.exists());
        drop(hog);
        assert!(
            !file.exists(),
            "the hog's file is removed when it is dropped"
        );
    }
}
