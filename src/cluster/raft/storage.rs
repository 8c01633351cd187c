//! The controller's Raft log on disk, and the in-memory view of it that `raft::RawNode`
//! reads (`RaftStore`, the `raft::Storage` implementation).
//!
//! Two files in `<data dir>/controller/`:
//!
//! ```text
//!  snapshot   one record: the state machine image at an applied index (written whole to a
//!             temporary file, synced, renamed over the old one)
//!  raft.log   records appended in order: a run of entries (a run starting at index i
//!             replaces every entry from i on, as Raft overwrites a follower's suffix), or
//!             a hard state (term, vote, commit)
//! ```
//!
//! A record is `[u32 length][u32 crc32c of the body][body]`, the body an rkyv archive read
//! with checked access (the disk is outside input). Replay stops at the first torn or bad
//! record and cuts the file there: a record that was not wholly synced was never
//! acknowledged to a peer. After a snapshot the log is rewritten without the entries it
//! covers (compaction), again through a temporary file and a rename.
//!
//! The files are written with ordinary buffered IO and `fdatasync` on glommio's blocking
//! thread pool: the controller writes a few records per metadata change, far from the data
//! path, and its shard's reactor never waits on a sync.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rkyv::{Archive, Deserialize, Serialize};

/// The longest record the controller log accepts on replay (a snapshot of a large catalogue
/// is the biggest).
pub const RAFT_RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why the controller's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the blocking IO pool failed: {0}")]
    Pool(String),
}

/// One Raft entry as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    /// 0 normal, 1 configuration change, 2 configuration change v2.
    pub kind: u8,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// A record of `raft.log`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Entries(Vec<StoredEntry>),
    HardState { term: u64, vote: u64, commit: u64 },
}

/// The `snapshot` file.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub data: Vec<u8>,
}

pub fn entry_kind(entry: &Entry) -> u8 {
    match entry.get_entry_type() {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

pub fn entry_type(kind: u8) -> Option<EntryType> {
    match kind {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

pub fn stored_entry(entry: &Entry) -> StoredEntry {
    StoredEntry {
        index: entry.index,
        term: entry.term,
        kind: entry_kind(entry),
        data: entry.data.to_vec(),
        context: entry.context.to_vec(),
    }
}

pub fn raft_entry(stored: &StoredEntry) -> Option<Entry> {
    let mut entry = Entry::default();
    entry.set_entry_type(entry_type(stored.kind)?);
    entry.index = stored.index;
    entry.term = stored.term;
    entry.data = stored.data.clone().into();
    entry.context = stored.context.clone().into();
    Some(entry)
}

pub fn raft_snapshot(stored: &StoredSnapshot) -> Snapshot {
    let mut conf_state = ConfState::default();
    conf_state.voters = stored.voters.clone();
    conf_state.learners = stored.learners.clone();
    let mut metadata = SnapshotMetadata::default();
    metadata.index = stored.index;
    metadata.term = stored.term;
    metadata.set_conf_state(conf_state);
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot.data = stored.data.clone().into();
    snapshot
}

pub fn stored_snapshot(snapshot: &Snapshot) -> StoredSnapshot {
    let metadata = snapshot.get_metadata();
    StoredSnapshot {
        index: metadata.index,
        term: metadata.term,
        voters: metadata.get_conf_state().voters.clone(),
        learners: metadata.get_conf_state().learners.clone(),
        data: snapshot.data.to_vec(),
    }
}

fn encode_record<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("serializing to memory");
    let mut record = Vec::with_capacity(body.len() + 8);
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

/// Splits `bytes` into record bodies; returns them and the length of the valid prefix.
fn split_records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut bodies = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if length > RAFT_RECORD_BYTES_MAX || bytes.len() - at - 8 < length {
            break;
        }
        let body = &bytes[at + 8..at + 8 + length];
        if crc32c::crc32c(body) != crc {
            break;
        }
        bodies.push(body);
        at += 8 + length;
    }
    (bodies, at)
}

/// What replay found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<StoredSnapshot>,
    pub hard_state: Option<(u64, u64, u64)>,
    pub entries: Vec<StoredEntry>,
    /// Bytes cut from the end of `raft.log` (a torn last record).
    pub torn_bytes: u64,
}

/// The two files; writes go through the blocking pool.
#[derive(Clone)]
pub struct RaftDisk {
    dir: PathBuf,
    log: Arc<Mutex<File>>,
}

fn io_error(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> RaftStorageError {
    let path = path.to_path_buf();
    move |source| RaftStorageError::Io {
        operation,
        path,
        source,
    }
}

impl RaftDisk {
    /// Opens (creating) the controller directory and replays what it holds.
    pub fn open(dir: &Path) -> Result<(RaftDisk, Recovered), RaftStorageError> {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let mut recovered = Recovered::default();
        let snapshot_path = dir.join("snapshot");
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let (bodies, _) = split_records(&bytes);
                let body = bodies.first().ok_or_else(|| RaftStorageError::Corrupt {
                    path: snapshot_path.clone(),
                    reason: "no whole record".into(),
                })?;
                let snapshot = rkyv::from_bytes::<StoredSnapshot, rkyv::rancor::Error>(body)
                    .map_err(|e| RaftStorageError::Corrupt {
                        path: snapshot_path.clone(),
                        reason: e.to_string(),
                    })?;
                recovered.snapshot = Some(snapshot);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("read", &snapshot_path)(error)),
        }
        let log_path = dir.join("raft.log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_error("open", &log_path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_error("read", &log_path))?;
        let (bodies, valid) = split_records(&bytes);
        let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.index);
        for body in bodies {
            let record = rkyv::from_bytes::<LogRecord, rkyv::rancor::Error>(body).map_err(|e| {
                RaftStorageError::Corrupt {
                    path: log_path.clone(),
                    reason: e.to_string(),
                }
            })?;
            match record {
                LogRecord::HardState { term, vote, commit } => {
                    recovered.hard_state = Some((term, vote, commit))
                }
                LogRecord::Entries(run) => {
                    if let Some(first) = run.first() {
                        recovered.entries.retain(|e| e.index < first.index);
                    }
                    recovered.entries.extend(run);
                }
            }
        }
        recovered.entries.retain(|e| e.index > snapshot_index);
        // Entries must follow the snapshot without a gap.
        for (expected, entry) in (snapshot_index + 1..).zip(recovered.entries.iter()) {
            if entry.index != expected || entry_type(entry.kind).is_none() {
                return Err(RaftStorageError::Corrupt {
                    path: log_path.clone(),
                    reason: format!("entry {} where {} was expected", entry.index, expected),
                });
            }
        }
        if valid < bytes.len() {
            recovered.torn_bytes = (bytes.len() - valid) as u64;
            file.set_len(valid as u64)
                .map_err(io_error("truncate", &log_path))?;
            file.sync_data().map_err(io_error("sync", &log_path))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(io_error("seek", &log_path))?;
        Ok((
            RaftDisk {
                dir: dir.to_path_buf(),
                log: Arc::new(Mutex::new(file)),
            },
            recovered,
        ))
    }

    async fn blocking<T: Send + 'static>(
        work: impl FnOnce() -> Result<T, RaftStorageError> + Send + 'static,
    ) -> Result<T, RaftStorageError> {
        glommio::executor().spawn_blocking(work).await
    }

    /// Appends records and syncs them.
    pub async fn append(&self, records: Vec<LogRecord>) -> Result<(), RaftStorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for record in &records {
            bytes.extend_from_slice(&encode_record(record));
        }
        let log = self.log.clone();
        let path = self.dir.join("raft.log");
        Self::blocking(move || {
            let mut file = log.lock().expect("raft log lock");
            file.write_all(&bytes).map_err(io_error("write", &path))?;
            file.sync_data().map_err(io_error("sync", &path))
        })
        .await
    }

    /// Writes a snapshot, then rewrites the log with only what follows it.
    pub async fn install_snapshot(
        &self,
        snapshot: StoredSnapshot,
        hard_state: (u64, u64, u64),
        later: Vec<StoredEntry>,
    ) -> Result<(), RaftStorageError> {
        let dir = self.dir.clone();
        let log = self.log.clone();
        Self::blocking(move || {
            let write_atomically = |name: &str, bytes: &[u8]| -> Result<File, RaftStorageError> {
                let path = dir.join(name);
                let temporary = dir.join(format!("{name}.tmp"));
                let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
                file.write_all(bytes)
                    .map_err(io_error("write", &temporary))?;
                file.sync_data().map_err(io_error("sync", &temporary))?;
                std::fs::rename(&temporary, &path).map_err(io_error("rename", &path))?;
                Ok(file)
            };
            write_atomically("snapshot", &encode_record(&snapshot))?;
            let (term, vote, commit) = hard_state;
            let mut bytes = encode_record(&LogRecord::HardState { term, vote, commit });
            if !later.is_empty() {
                bytes.extend_from_slice(&encode_record(&LogRecord::Entries(later)));
            }
            let mut guard = log.lock().expect("raft log lock");
            let new_log = write_atomically("raft.log", &bytes)?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error("sync", &dir))?;
            *guard = new_log;
            use std::io::Seek;
            guard
                .seek(std::io::SeekFrom::End(0))
                .map_err(io_error("seek", &dir))?;
            Ok(())
        })
        .await
    }

    /// Bytes the two files hold (for the controller's cost figures).
    pub fn size_bytes(&self) -> u64 {
        ["snapshot", "raft.log"]
            .iter()
            .filter_map(|name| std::fs::metadata(self.dir.join(name)).ok())
            .map(|m| m.len())
            .sum()
    }
}

struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, without gaps.
    entries: Vec<Entry>,
}

impl Core {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }
}

/// What `RawNode` reads: the log in memory. Clones share it.
#[derive(Clone)]
pub struct RaftStore {
    core: Rc<RefCell<Core>>,
}

impl RaftStore {
    /// A store holding `snapshot` and the entries after it.
    pub fn new(snapshot: Snapshot, hard_state: HardState, entries: Vec<Entry>) -> RaftStore {
        let conf_state = snapshot.get_metadata().get_conf_state().clone();
        RaftStore {
            core: Rc::new(RefCell::new(Core {
                hard_state,
                conf_state,
                snapshot,
                entries,
            })),
        }
    }

    /// Appends entries, replacing any from the first one's index on.
    pub fn append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let mut core = self.core.borrow_mut();
        assert!(
            first.index >= core.first_index(),
            "raft never overwrites compacted entries"
        );
        let keep = (first.index - core.first_index()) as usize;
        core.entries.truncate(keep);
        assert_eq!(
            core.last_index() + 1,
            first.index,
            "raft appends without gaps"
        );
        core.entries.extend_from_slice(entries);
    }

    pub fn set_hard_state(&self, hard_state: HardState) {
        self.core.borrow_mut().hard_state = hard_state;
    }

    pub fn hard_state(&self) -> HardState {
        self.core.borrow().hard_state.clone()
    }

    pub fn set_commit(&self, commit: u64) {
        self.core.borrow_mut().hard_state.commit = commit;
    }

    /// Replaces everything with a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: Snapshot) {
        let mut core = self.core.borrow_mut();
        let metadata = snapshot.get_metadata();
        core.hard_state.term = core.hard_state.term.max(metadata.term);
        core.hard_state.commit = metadata.index;
        core.conf_state = metadata.get_conf_state().clone();
        core.entries.clear();
        core.snapshot = snapshot;
    }

    /// Takes a snapshot of the state machine at `index` (applied) and drops the entries it
    /// covers. Returns it and the entries after it, for the disk.
    pub fn compact(&self, index: u64, data: Vec<u8>) -> (Snapshot, Vec<Entry>) {
        let mut core = self.core.borrow_mut();
        assert!(index >= core.snapshot_index() && index <= core.last_index());
        let term = if index == core.snapshot_index() {
            core.snapshot.get_metadata().term
        } else {
            core.entries[(index - core.first_index()) as usize].term
        };
        let mut metadata = SnapshotMetadata::default();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(core.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = data.into();
        let drop = (index + 1 - core.first_index()) as usize;
        core.entries.drain(..drop);
        core.snapshot = snapshot.clone();
        (snapshot, core.entries.clone())
    }

    pub fn snapshot_index(&self) -> u64 {
        self.core.borrow().snapshot_index()
    }

    pub fn entry_count(&self) -> usize {
        self.core.borrow().entries.len()
    }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.borrow();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.borrow();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - core.first_index()) as usize;
        let to = (high - core.first_index()) as usize;
        let mut entries = core.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.core.borrow();
        if index == core.snapshot_index() {
            return Ok(core.snapshot.get_metadata().term);
        }
        if index < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(index - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.core.borrow();
        if core.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(core.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_with_overwrites_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller");
        let entry = |index, term| StoredEntry {
            index,
            term,
            kind: 0,
            data: vec![index as u8],
            context: vec![],
        };
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn({
                let path = path.clone();
                move || async move {
                    let (disk, recovered) = RaftDisk::open(&path).unwrap();
                    assert!(recovered.entries.is_empty());
                    disk.append(vec![
                        LogRecord::Entries(vec![entry(1, 1), entry(2, 1), entry(3, 1)]),
                        LogRecord::HardState {
                            term: 2,
                            vote: 3,
                            commit: 1,
                        },
                        // A new leader overwrites from index 2.
                        LogRecord::Entries(vec![entry(2, 2)]),
                    ])
                    .await
                    .unwrap();
                }
            })
            .unwrap()
            .join()
            .unwrap();
        // A torn record at the end.
        let log = path.join("raft.log");
        let mut bytes = std::fs::read(&log).unwrap();
        let good = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
        std::fs::write(&log, &bytes).unwrap();
        let (_, recovered) = RaftDisk::open(&path).unwrap();
        assert_eq!(recovered.entries, vec![entry(1, 1), entry(2, 2)]);
        assert_eq!(recovered.hard_state, Some((2, 3, 1)));
        assert_eq!(recovered.torn_bytes, 10);
        assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, good);
    }

    #[test]
    fn a_snapshot_compacts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn({
                let path = path.clone();
                move || async move {
                    let (disk, _) = RaftDisk::open(&path).unwrap();
                    let entries: Vec<StoredEntry> = (1..=5)
                        .map(|index| StoredEntry {
                            index,
                            term: 1,
                            kind: 0,
                            data: vec![0; 100],
                            context: vec![],
                        })
                        .collect();
                    disk.append(vec![LogRecord::Entries(entries.clone())])
                        .await
                        .unwrap();
                    let snapshot = StoredSnapshot {
                        index: 4,
                        term: 1,
                        voters: vec![1, 2, 3],
                        learners: vec![],
                        data: b"image".to_vec(),
                    };
                    disk.install_snapshot(snapshot, (1, 1, 5), entries[4..].to_vec())
                        .await
                        .unwrap();
                    disk.append(vec![LogRecord::Entries(vec![StoredEntry {
                        index: 6,
                        term: 2,
                        kind: 0,
                        data: vec![],
                        context: vec![],
                    }])])
                    .await
                    .unwrap();
                }
            })
            .unwrap()
            .join()
            .unwrap();
        let (_, recovered) = RaftDisk::open(&path).unwrap();
        let snapshot = recovered.snapshot.unwrap();
        assert_eq!(
            (snapshot.index, snapshot.data.as_slice()),
            (4, &b"image"[..])
        );
        let indexes: Vec<u64> = recovered.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [5, 6]);
    }

    #[test]
    fn the_store_answers_raft_like_the_log_it_holds() {
        use raft::Storage;
        let mut metadata = SnapshotMetadata::default();
        metadata.index = 3;
        metadata.term = 2;
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        let entry = |index, term| {
            let mut e = Entry::default();
            e.index = index;
            e.term = term;
            e
        };
        let store = RaftStore::new(
            snapshot,
            HardState::default(),
            vec![entry(4, 2), entry(5, 3)],
        );
        assert_eq!(store.first_index().unwrap(), 4);
        assert_eq!(store.last_index().unwrap(), 5);
        assert_eq!(store.term(3).unwrap(), 2);
        assert_eq!(store.term(5).unwrap(), 3);
        assert!(store.term(2).is_err());
        assert!(store.term(6).is_err());
        store.append(&[entry(5, 4), entry(6, 4)]);
        assert_eq!(store.term(5).unwrap(), 4);
        let got = store
            .entries(4, 7, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 3);
        let (snap, later) = store.compact(5, b"x".to_vec());
        assert_eq!(snap.get_metadata().index, 5);
        assert_eq!(later.len(), 1);
        assert_eq!(store.first_index().unwrap(), 6);
        assert!(matches!(
            store.snapshot(6, 0),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
    }
}
