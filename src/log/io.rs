//! The log's one seam to the disk.
//!
//! Every read, write, sync, truncate and allocate of a segment goes through [`SegmentFile`],
//! which wraps a glommio `DmaFile` (O_DIRECT, io_uring) and attaches the path and offset to
//! every error. A [`FaultPlan`] shared through the shard's configuration lets tests make
//! writes or syncs fail at a chosen moment, to prove that a failed IO fences the partition.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::error::LogIoError;

/// Faults a test can inject into the IO of every partition of a shard.
/// Owned by the shard (single-threaded), shared by `Rc`.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Writes still allowed to succeed before every following write fails (`None`: no limit).
    pub writes_before_failure: Cell<Option<u64>>,
    /// When set, every fdatasync fails.
    pub fail_syncs: Cell<bool>,
    /// While set, writes wait before they are issued (a stalled disk).
    pub stall_writes: Cell<bool>,
    /// While set, fdatasyncs wait before they are issued (a slow cache flush).
    pub stall_syncs: Cell<bool>,
    /// Every file or directory removal takes this long (a slow unlink on a busy disk).
    pub remove_delay: Cell<std::time::Duration>,
    /// fdatasyncs waiting at the `stall_syncs` stall now (how many a test sees in flight).
    pub syncs_stalled: Cell<usize>,
}

/// How often a stalled write looks again.
const STALL_POLL: std::time::Duration = std::time::Duration::from_millis(1);

impl FaultPlan {
    fn write_allowed(&self) -> bool {
        match self.writes_before_failure.get() {
            None => true,
            Some(0) => false,
            Some(left) => {
                self.writes_before_failure.set(Some(left - 1));
                true
            }
        }
    }
}

fn injected(operation: &str) -> std::io::Error {
    std::io::Error::other(format!("injected {operation} failure"))
}

/// One open segment file. Owned by one shard; cloned handles share the descriptor and the
/// shard's open-file slot, which is given back when the last handle is dropped.
#[derive(Clone)]
pub struct SegmentFile {
    file: Rc<DmaFile>,
    path: Rc<PathBuf>,
    faults: Option<Rc<FaultPlan>>,
    _slot: Rc<Option<glommio::sync::StaticPermit>>,
    /// Opened `O_DSYNC`: a write is on stable storage when it completes.
    durable_writes: bool,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentFile({})", self.path.display())
    }
}

impl SegmentFile {
    /// Opens an existing segment for reading and writing, holding `slot` while open.
    pub async fn open(
        path: &Path,
        faults: Option<Rc<FaultPlan>>,
        slot: Option<glommio::sync::StaticPermit>,
    ) -> Result<Self, LogIoError> {
        Self::open_with(path, faults, slot, false, false).await
    }

    /// Creates a new, empty segment (fails if one exists at `path`), holding `slot`.
    pub async fn create(
        path: &Path,
        faults: Option<Rc<FaultPlan>>,
        slot: Option<glommio::sync::StaticPermit>,
    ) -> Result<Self, LogIoError> {
        Self::open_with(path, faults, slot, true, false).await
    }

    /// Creates a new, empty file (fails if one exists at `path`) whose every write is on
    /// stable storage when it completes: opened `O_DSYNC`, so a write carries its own
    /// fdatasync. One operation instead of a write and an fdatasync: the shard does not
    /// wait for the write's completion to issue the sync, and the sync does not go through
    /// io_uring's worker threads. Where the write lands on blocks already written and the
    /// device honours FUA (an overwrite of the journal's ring after its first lap), the
    /// kernel writes it through to the medium instead of flushing the device's whole
    /// cache. A write on such a file also obeys the fault plan's sync faults.
    pub async fn create_with_durable_writes(
        path: &Path,
        faults: Option<Rc<FaultPlan>>,
    ) -> Result<Self, LogIoError> {
        Self::open_with(path, faults, None, true, true).await
    }

    async fn open_with(
        path: &Path,
        faults: Option<Rc<FaultPlan>>,
        slot: Option<glommio::sync::StaticPermit>,
        create: bool,
        durable_writes: bool,
    ) -> Result<Self, LogIoError> {
        let operation = if create { "creating" } else { "opening" };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .custom_flags(if durable_writes { libc::O_DSYNC } else { 0 })
            .dma_open(path)
            .await
            .map_err(|e| LogIoError::new(operation, path, 0, e.into()))?;
        Ok(Self::wrap(file, path, faults, slot, durable_writes))
    }

    fn wrap(
        file: DmaFile,
        path: &Path,
        faults: Option<Rc<FaultPlan>>,
        slot: Option<glommio::sync::StaticPermit>,
        durable_writes: bool,
    ) -> Self {
        SegmentFile {
            file: Rc::new(file),
            path: Rc::new(path.to_path_buf()),
            faults,
            _slot: Rc::new(slot),
            durable_writes,
        }
    }

    /// Whether only one handle (the open-file table's) is left.
    pub fn is_idle(&self) -> bool {
        Rc::strong_count(&self.file) == 1
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn alloc_buffer(&self, size: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(size)
    }

    /// Writes a whole aligned buffer at an aligned position; a short write is an error.
    pub async fn write_at(&self, buffer: DmaBuffer, position: u64) -> Result<(), LogIoError> {
        let length = buffer.len();
        if let Some(faults) = &self.faults {
            while faults.stall_writes.get() || (self.durable_writes && faults.stall_syncs.get()) {
                glommio::timer::sleep(STALL_POLL).await;
            }
            if self.durable_writes && faults.fail_syncs.get() {
                return Err(LogIoError::new(
                    "writing (O_DSYNC)",
                    &self.path,
                    position,
                    injected("fdatasync"),
                ));
            }
            if !faults.write_allowed() {
                return Err(LogIoError::new(
                    "writing",
                    &self.path,
                    position,
                    injected("write"),
                ));
            }
        }
        let written = self
            .file
            .write_at(buffer, position)
            .await
            .map_err(|e| LogIoError::new("writing", &self.path, position, e.into()))?;
        if written != length {
            let short = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {length} bytes"),
            );
            return Err(LogIoError::new("writing", &self.path, position, short));
        }
        Ok(())
    }

    pub async fn sync(&self) -> Result<(), LogIoError> {
        if let Some(faults) = &self.faults {
            if faults.stall_syncs.get() {
                // Counted while it waits, however the wait ends (a dropped sync too).
                struct Stalled<'a>(&'a Cell<usize>);
                impl Drop for Stalled<'_> {
                    fn drop(&mut self) {
                        self.0.set(self.0.get() - 1);
                    }
                }
                faults.syncs_stalled.set(faults.syncs_stalled.get() + 1);
                let _stalled = Stalled(&faults.syncs_stalled);
                while faults.stall_syncs.get() {
                    glommio::timer::sleep(STALL_POLL).await;
                }
            }
        }
        if self.faults.as_ref().is_some_and(|f| f.fail_syncs.get()) {
            return Err(LogIoError::new(
                "syncing",
                &self.path,
                0,
                injected("fdatasync"),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| LogIoError::new("syncing", &self.path, 0, e.into()))
    }

    /// Reads up to `length` bytes at any position (alignment handled below us).
    pub async fn read_at(&self, position: u64, length: usize) -> Result<ReadResult, LogIoError> {
        self.file
            .read_at(position, length)
            .await
            .map_err(|e| LogIoError::new("reading", &self.path, position, e.into()))
    }

    pub async fn truncate(&self, length: u64) -> Result<(), LogIoError> {
        self.file
            .truncate(length)
            .await
            .map_err(|e| LogIoError::new("truncating", &self.path, length, e.into()))
    }

    /// Reserves space up to `length` bytes; the file's size grows to `length` (zeros).
    pub async fn preallocate(&self, length: u64) -> Result<(), LogIoError> {
        self.file
            .pre_allocate(length, false)
            .await
            .map_err(|e| LogIoError::new("preallocating", &self.path, length, e.into()))
    }

    pub async fn size(&self) -> Result<u64, LogIoError> {
        self.file
            .file_size()
            .await
            .map_err(|e| LogIoError::new("sizing", &self.path, 0, e.into()))
    }
}

/// Makes glommio learn whether the device under `dir` supports polled IO, from a file that
/// has data. glommio probes a device once, with a read at offset 0 of the first DMA file
/// opened on it, and caches the answer; on an empty file the kernel answers that read at
/// end-of-file before it looks at polling, so the probe wrongly concludes "pollable" and
/// every later read on that device fails with EOPNOTSUPP. Opening a non-empty file first
/// gives the probe a real read.
pub async fn settle_iopoll_probe(dir: &Path) -> Result<(), LogIoError> {
    const PROBE_NAME: &str = ".shardline-iopoll-probe";
    let path = dir.join(PROBE_NAME);
    std::fs::write(&path, [0u8; crate::constants::IO_ALIGNMENT_BYTES as usize])
        .map_err(|e| LogIoError::new("writing", &path, 0, e))?;
    let opened = DmaFile::open(&path).await;
    let removed = remove_file(&path);
    let file = opened.map_err(|e| LogIoError::new("opening", &path, 0, e.into()))?;
    file.close()
        .await
        .map_err(|e| LogIoError::new("closing", &path, 0, e.into()))?;
    removed
}

/// Writes a small file whole and syncs it (index files). Replaces any file at `path`.
pub async fn write_small_file(path: &Path, bytes: Vec<u8>) -> Result<(), LogIoError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(|e| LogIoError::new("creating", path, 0, e.into()))?;
    write_whole_at_start(&file, path, bytes).await?;
    sync_and_close(file, path, true).await
}

/// Writes a small file of fixed size over itself in place and syncs it (the recovery
/// point). Unlike `write_small_file` it does not truncate first: once the file has its size
/// and block, a sync flushes the data alone, not the file's metadata; a torn write is caught
/// by the content's own checksum. Like `write_small_file`, it bypasses the shard's IO fault
/// plan. A file longer than `bytes` (never written so) is cut to size.
/// With `sync` false the write is left to the kernel (a file made with its partition).
pub async fn overwrite_small_file(
    path: &Path,
    bytes: Vec<u8>,
    sync: bool,
) -> Result<(), LogIoError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(|e| LogIoError::new("opening", path, 0, e.into()))?;
    let length = bytes.len() as u64;
    write_whole_at_start(&file, path, bytes).await?;
    let size = file
        .file_size()
        .await
        .map_err(|e| LogIoError::new("inspecting", path, 0, e.into()))?;
    if size > length {
        file.truncate(length)
            .await
            .map_err(|e| LogIoError::new("truncating", path, length, e.into()))?;
    }
    sync_and_close(file, path, sync).await
}

/// Writes `bytes` at the start of a small file; a short write is an error.
async fn write_whole_at_start(
    file: &BufferedFile,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(), LogIoError> {
    let length = bytes.len();
    let written = file
        .write_at(bytes, 0)
        .await
        .map_err(|e| LogIoError::new("writing", path, 0, e.into()))?;
    if written != length {
        let short = std::io::Error::new(std::io::ErrorKind::WriteZero, "short write");
        return Err(LogIoError::new("writing", path, 0, short));
    }
    Ok(())
}

async fn sync_and_close(file: BufferedFile, path: &Path, sync: bool) -> Result<(), LogIoError> {
    if sync {
        file.fdatasync()
            .await
            .map_err(|e| LogIoError::new("syncing", path, 0, e.into()))?;
    }
    file.close()
        .await
        .map_err(|e| LogIoError::new("closing", path, 0, e.into()))
}

/// Reads a small file whole; `Ok(None)` when it does not exist.
pub fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>, LogIoError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogIoError::new("reading", path, 0, e)),
    }
}

/// Removes a file; a file already gone is not an error.
pub fn remove_file(path: &Path) -> Result<(), LogIoError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogIoError::new("removing", path, 0, e)),
    }
}

/// Removes files without blocking the shard: unlink runs on glommio's blocking thread pool
/// (it can take milliseconds on a busy filesystem). A file already gone is not an error.
pub async fn remove_files(
    paths: Vec<PathBuf>,
    faults: Option<&FaultPlan>,
) -> Result<(), LogIoError> {
    let delay = faults.map_or(std::time::Duration::ZERO, |f| f.remove_delay.get());
    glommio::executor()
        .spawn_blocking(move || {
            std::thread::sleep(delay);
            paths.iter().try_for_each(|path| remove_file(path))
        })
        .await
}

/// Removes a directory and everything in it, off the shard's thread (as [`remove_files`]).
pub async fn remove_dir_all(path: PathBuf, faults: Option<&FaultPlan>) -> Result<(), LogIoError> {
    let delay = faults.map_or(std::time::Duration::ZERO, |f| f.remove_delay.get());
    glommio::executor()
        .spawn_blocking(move || {
            std::thread::sleep(delay);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(LogIoError::new("removing directory", &path, 0, e)),
            }
        })
        .await
}

/// Makes directory entries (created, removed files) durable.
pub async fn sync_directory(path: &Path) -> Result<(), LogIoError> {
    let directory = glommio::io::Directory::open(path)
        .await
        .map_err(|e| LogIoError::new("opening directory", path, 0, e.into()))?;
    directory
        .sync()
        .await
        .map_err(|e| LogIoError::new("syncing directory", path, 0, e.into()))?;
    directory
        .close()
        .await
        .map_err(|e| LogIoError::new("closing directory", path, 0, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// A sync waiting at the fault plan's stall is counted while it waits, and no longer
    /// once it is dropped there (a test that counts syncs in flight must not see a ghost).
    #[test]
    fn a_stalled_sync_dropped_while_it_waits_is_no_longer_counted() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("segment");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(move || async move {
                let faults = Rc::new(FaultPlan::default());
                let file = SegmentFile::create(&path, Some(faults.clone()), None)
                    .await
                    .unwrap();
                faults.stall_syncs.set(true);
                let mut sync = Box::pin(file.sync());
                assert!((&mut sync).now_or_never().is_none(), "stalled");
                assert_eq!(faults.syncs_stalled.get(), 1);
                drop(sync);
                assert_eq!(faults.syncs_stalled.get(), 0);
                faults.stall_syncs.set(false);
                file.sync().await.unwrap();
                assert_eq!(faults.syncs_stalled.get(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
