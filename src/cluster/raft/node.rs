//! One voter of the controller's Raft group: the `RawNode`, its disk, the metadata image it
//! applies committed events to, and the proposals waiting to be applied.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use raft::eraftpb::{EntryType, HardState, Message};
use raft::{RawNode, StateRole};

use super::storage::{
    raft_entry, raft_snapshot, stored_entry, stored_snapshot, LogRecord, RaftDisk,
    RaftStorageError, RaftStore, StoredSnapshot,
};
use super::wire::WireMessage;
use crate::cluster::metadata::{
    decode_event, encode_event, MetadataEvent, MetadataImage, TopicError,
};
use crate::constants::{
    CONTROLLER_ELECTION_TICKS, CONTROLLER_HEARTBEAT_TICKS, CONTROLLER_PROPOSAL_TIMEOUT_MS,
    CONTROLLER_TICK_MS,
};

/// How a voter is set up.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// This node's id (non-zero).
    pub node_id: u64,
    /// Every voter's id, this one included.
    pub voters: Vec<u64>,
    /// Applied entries between two snapshots.
    pub snapshot_every: u64,
}

/// Why a proposal did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the proposal was not committed within {0:?} (leadership may have moved)")]
    TimedOut(Duration),
    #[error("the event was refused: {0}")]
    Refused(String),
    #[error("the controller stopped: {0}")]
    Stopped(String),
}

/// What `cluster status` shows of the Raft group, from this voter's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub role: &'static str,
    pub committed: u64,
    pub applied: u64,
    /// The last entry this voter holds (committed or not).
    pub last_index: u64,
    pub snapshot_index: u64,
    pub log_entries: usize,
    pub disk_bytes: u64,
}

type Outcome = Result<(), ProposeError>;

enum Input {
    Step(Message),
    Propose(Vec<u8>, u64),
}

/// One voter. Owned by the controller shard; shared by its tasks through `Rc`.
pub struct ControllerNode {
    node_id: u64,
    raw: RefCell<RawNode<RaftStore>>,
    store: RaftStore,
    disk: RaftDisk,
    image: RefCell<MetadataImage>,
    applied: Cell<u64>,
    /// Bumped by every applied batch of events; watchers wake on it.
    version: Cell<u64>,
    watchers: RefCell<Vec<Waker>>,
    inputs: RefCell<VecDeque<Input>>,
    driver: RefCell<Option<Waker>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_proposal: Cell<u64>,
    /// Where messages for peers go (the transport).
    send: Box<dyn Fn(u64, WireMessage)>,
    stopped: RefCell<Option<String>>,
    snapshot_every: u64,
}

fn proposal_context(node_id: u64, sequence: u64) -> Vec<u8> {
    let mut context = node_id.to_le_bytes().to_vec();
    context.extend_from_slice(&sequence.to_le_bytes());
    context
}

fn parse_context(context: &[u8]) -> Option<(u64, u64)> {
    if context.len() != 16 {
        return None;
    }
    let node = u64::from_le_bytes(context[..8].try_into().ok()?);
    let sequence = u64::from_le_bytes(context[8..].try_into().ok()?);
    Some((node, sequence))
}

fn slog_discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl ControllerNode {
    /// Opens the voter's log in `dir` (bootstrapping it on first start with the empty
    /// image and the voter set) and builds the node. `send` carries messages to peers.
    pub async fn open(
        dir: &Path,
        options: &RaftOptions,
        send: Box<dyn Fn(u64, WireMessage)>,
    ) -> Result<ControllerNode, RaftStorageError> {
        let (disk, recovered) = RaftDisk::open(dir)?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovered.torn_bytes,
                "cut a torn record from the end of the controller log"
            );
        }
        let snapshot = match recovered.snapshot {
            Some(snapshot) => {
                let mut voters = snapshot.voters.clone();
                voters.sort_unstable();
                let mut wanted = options.voters.clone();
                wanted.sort_unstable();
                if voters != wanted {
                    return Err(RaftStorageError::Corrupt {
                        path: dir.to_path_buf(),
                        reason: format!(
                            "this controller log belongs to voters {voters:?}, not {wanted:?} (voters cannot change)"
                        ),
                    });
                }
                snapshot
            }
            None => {
                // Every voter boots from the same snapshot: index 1, term 1, no events.
                let snapshot = StoredSnapshot {
                    index: 1,
                    term: 1,
                    voters: options.voters.clone(),
                    learners: Vec::new(),
                    data: MetadataImage::new().to_snapshot(),
                };
                disk.install_snapshot(
                    snapshot.clone(),
                    (snapshot.term, 0, snapshot.index),
                    Vec::new(),
                )
                .await?;
                snapshot
            }
        };
        let image = MetadataImage::from_snapshot(&snapshot.data).map_err(|e| {
            RaftStorageError::Corrupt {
                path: dir.join("snapshot"),
                reason: e.to_string(),
            }
        })?;
        let mut hard_state = HardState::default();
        let (term, vote, commit) =
            recovered
                .hard_state
                .unwrap_or((snapshot.term, 0, snapshot.index));
        hard_state.term = term.max(snapshot.term);
        hard_state.vote = vote;
        hard_state.commit = commit.max(snapshot.index);
        let entries: Vec<_> = recovered
            .entries
            .iter()
            .map(|e| raft_entry(e).expect("replay checked the entry kinds"))
            .collect();
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        hard_state.commit = hard_state.commit.min(last);
        let applied = snapshot.index;
        let store = RaftStore::new(raft_snapshot(&snapshot), hard_state, entries);
        let config = raft::Config {
            id: options.node_id,
            election_tick: CONTROLLER_ELECTION_TICKS,
            heartbeat_tick: CONTROLLER_HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        config.validate().map_err(|e| RaftStorageError::Corrupt {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let raw = RawNode::new(&config, store.clone(), &slog_discard()).map_err(|e| {
            RaftStorageError::Corrupt {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let node = ControllerNode {
            node_id: options.node_id,
            raw: RefCell::new(raw),
            store,
            disk,
            image: RefCell::new(image),
            applied: Cell::new(applied),
            version: Cell::new(1),
            watchers: RefCell::new(Vec::new()),
            inputs: RefCell::new(VecDeque::new()),
            driver: RefCell::new(None),
            pending: RefCell::new(HashMap::new()),
            next_proposal: Cell::new(1),
            send,
            stopped: RefCell::new(None),
            snapshot_every: options.snapshot_every.max(1),
        };
        if options.voters == [options.node_id] {
            // Alone: no one to wait for.
            let _ = node.raw.borrow_mut().campaign();
        }
        Ok(node)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The leader this voter knows of.
    pub fn leader(&self) -> Option<u64> {
        self.leader_of(&self.raw.borrow())
    }

    pub fn is_leader(&self) -> bool {
        self.raw.borrow().raft.state == StateRole::Leader
    }

    /// Leads and has applied an entry of its own term, so its image holds every change
    /// committed before it led: only then are changes checked against that image.
    pub fn leads_with_current_image(&self) -> bool {
        let raw = self.raw.borrow();
        raw.raft.state == StateRole::Leader
            && raw
                .raft
                .raft_log
                .term(self.applied.get())
                .is_ok_and(|term| term == raw.raft.term)
    }

    pub fn term(&self) -> u64 {
        self.raw.borrow().raft.term
    }

    pub fn status(&self) -> RaftStatus {
        let raw = self.raw.borrow();
        RaftStatus {
            node_id: self.node_id,
            leader: self.leader_of(&raw),
            term: raw.raft.term,
            role: match raw.raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            },
            committed: raw.raft.raft_log.committed,
            applied: self.applied.get(),
            last_index: raw.raft.raft_log.last_index(),
            snapshot_index: self.store.snapshot_index(),
            log_entries: self.store.entry_count(),
            disk_bytes: self.disk.size_bytes(),
        }
    }

    fn leader_of(&self, raw: &RawNode<RaftStore>) -> Option<u64> {
        (raw.raft.leader_id != raft::INVALID_ID).then_some(raw.raft.leader_id)
    }

    /// The metadata as of the last applied event.
    pub fn image(&self) -> std::cell::Ref<'_, MetadataImage> {
        self.image.borrow()
    }

    /// The index of the last event applied to the image.
    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// Bumped each time applied events change the image.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Waits until the image's version passes `seen`.
    pub async fn changed(&self, seen: u64) {
        poll_fn(|cx| {
            if self.version.get() > seen || self.stopped.borrow().is_some() {
                return Poll::Ready(());
            }
            self.watchers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Takes a message from a peer.
    pub fn step(&self, message: Message) {
        self.inputs.borrow_mut().push_back(Input::Step(message));
        self.wake_driver();
    }

    /// Proposes an event and waits until it is committed and applied here. Only the
    /// leader accepts proposals.
    pub async fn propose(&self, event: &MetadataEvent) -> Outcome {
        if let Some(reason) = self.stopped.borrow().clone() {
            return Err(ProposeError::Stopped(reason));
        }
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        let sequence = self.next_proposal.get();
        self.next_proposal.set(sequence + 1);
        let (sender, receiver) = oneshot::channel();
        self.pending.borrow_mut().insert(sequence, sender);
        self.inputs
            .borrow_mut()
            .push_back(Input::Propose(encode_event(event), sequence));
        self.wake_driver();
        let timeout = Duration::from_millis(CONTROLLER_PROPOSAL_TIMEOUT_MS);
        let outcome =
            crate::server::work::with_deadline(std::time::Instant::now() + timeout, receiver).await;
        match outcome {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(ProposeError::Stopped("proposal dropped".into())),
            None => {
                self.pending.borrow_mut().remove(&sequence);
                Err(ProposeError::TimedOut(timeout))
            }
        }
    }

    fn wake_driver(&self) {
        if let Some(waker) = self.driver.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Drives the node until `stop` says so: ticks, inputs, readies. Run as one task.
    pub async fn run(self: Rc<Self>, stop: impl Fn() -> bool) {
        let tick = Duration::from_millis(CONTROLLER_TICK_MS);
        let mut next_tick = std::time::Instant::now() + tick;
        while !stop() {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            let woken = poll_fn(|cx| {
                if !self.inputs.borrow().is_empty() {
                    return Poll::Ready(());
                }
                *self.driver.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            });
            futures_lite::future::or(woken, glommio::timer::sleep(wait)).await;
            if std::time::Instant::now() >= next_tick {
                self.raw.borrow_mut().tick();
                next_tick = std::time::Instant::now() + tick;
            }
            let inputs: Vec<Input> = self.inputs.borrow_mut().drain(..).collect();
            for input in inputs {
                let mut raw = self.raw.borrow_mut();
                match input {
                    Input::Step(message) => {
                        if let Err(error) = raw.step(message) {
                            tracing::debug!(%error, "raft refused a message");
                        }
                    }
                    Input::Propose(data, sequence) => {
                        let context = proposal_context(self.node_id, sequence);
                        if let Err(error) = raw.propose(context, data) {
                            let leader = self.leader_of(&raw);
                            drop(raw);
                            tracing::debug!(%error, "raft refused a proposal");
                            if let Some(sender) = self.pending.borrow_mut().remove(&sequence) {
                                let _ = sender.send(Err(ProposeError::NotLeader { leader }));
                            }
                        }
                    }
                }
            }
            if let Err(error) = self.handle_ready().await {
                tracing::error!(%error, "the controller log failed: this voter stops");
                *self.stopped.borrow_mut() = Some(error.to_string());
                self.wake_watchers();
                for (_, sender) in self.pending.borrow_mut().drain() {
                    let _ = sender.send(Err(ProposeError::Stopped(error.to_string())));
                }
                return;
            }
        }
    }

    fn send_all(&self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            (self.send)(to, WireMessage::from_raft(&message));
        }
    }

    async fn handle_ready(&self) -> Result<(), RaftStorageError> {
        if !self.raw.borrow().has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.borrow_mut().ready();
        self.send_all(ready.take_messages());
        if !ready.snapshot().data.is_empty() || ready.snapshot().get_metadata().index > 0 {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(snapshot).await?;
        }
        self.apply(ready.take_committed_entries());
        let mut records = Vec::new();
        if !ready.entries().is_empty() {
            records.push(LogRecord::Entries(
                ready.entries().iter().map(stored_entry).collect(),
            ));
        }
        if let Some(hard_state) = ready.hs() {
            records.push(LogRecord::HardState {
                term: hard_state.term,
                vote: hard_state.vote,
                commit: hard_state.commit,
            });
        }
        self.disk.append(records).await?;
        self.store.append(ready.entries());
        if let Some(hard_state) = ready.hs() {
            self.store.set_hard_state(hard_state.clone());
        }
        self.send_all(ready.take_persisted_messages());
        let mut light = self.raw.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit);
            // Not needed for safety (a restarted voter learns the commit index again), but
            // a restart then applies everything committed before it serves.
            let hard_state = self.store.hard_state();
            self.disk
                .append(vec![LogRecord::HardState {
                    term: hard_state.term,
                    vote: hard_state.vote,
                    commit,
                }])
                .await?;
        }
        self.send_all(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.borrow_mut().advance_apply();
        self.maybe_compact().await
    }

    async fn install_snapshot(
        &self,
        snapshot: raft::eraftpb::Snapshot,
    ) -> Result<(), RaftStorageError> {
        let image = MetadataImage::from_snapshot(&snapshot.data).map_err(|e| {
            RaftStorageError::Corrupt {
                path: "snapshot from the leader".into(),
                reason: e.to_string(),
            }
        })?;
        let index = snapshot.get_metadata().index;
        let hard_state = self.store.hard_state();
        self.disk
            .install_snapshot(
                stored_snapshot(&snapshot),
                (
                    hard_state.term.max(snapshot.get_metadata().term),
                    hard_state.vote,
                    index,
                ),
                Vec::new(),
            )
            .await?;
        self.store.apply_snapshot(snapshot);
        *self.image.borrow_mut() = image;
        self.applied.set(index);
        tracing::info!(index, "installed a controller snapshot from the leader");
        self.bump_version();
        Ok(())
    }

    fn apply(&self, entries: Vec<raft::eraftpb::Entry>) {
        if entries.is_empty() {
            return;
        }
        for entry in entries {
            self.applied.set(entry.index);
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let outcome = match decode_event(&entry.data) {
                Ok(event) => self
                    .image
                    .borrow_mut()
                    .apply(event)
                    .map_err(|e: TopicError| ProposeError::Refused(e.to_string())),
                Err(reason) => Err(ProposeError::Refused(format!(
                    "undecodable event: {reason}"
                ))),
            };
            if let Err(error) = &outcome {
                tracing::warn!(index = entry.index, %error, "a committed metadata event changed nothing");
            }
            if let Some((node, sequence)) = parse_context(&entry.context) {
                if node == self.node_id {
                    if let Some(sender) = self.pending.borrow_mut().remove(&sequence) {
                        let _ = sender.send(outcome);
                    }
                }
            }
        }
        self.bump_version();
    }

    fn bump_version(&self) {
        self.version.set(self.version.get() + 1);
        self.wake_watchers();
    }

    fn wake_watchers(&self) {
        for waker in self.watchers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    async fn maybe_compact(&self) -> Result<(), RaftStorageError> {
        let applied = self.applied.get();
        if applied < self.store.snapshot_index() + self.snapshot_every {
            return Ok(());
        }
        self.snapshot_now().await
    }

    /// Snapshots the image at the applied index and compacts the log (also used by the
    /// controller's cost benchmark). Returns how long it took.
    pub async fn snapshot_now(&self) -> Result<(), RaftStorageError> {
        let applied = self.applied.get();
        if applied <= self.store.snapshot_index() {
            return Ok(());
        }
        let data = self.image.borrow().to_snapshot();
        let (snapshot, later) = self.store.compact(applied, data);
        let hard_state = self.store.hard_state();
        self.disk
            .install_snapshot(
                stored_snapshot(&snapshot),
                (hard_state.term, hard_state.vote, hard_state.commit),
                later.iter().map(stored_entry).collect(),
            )
            .await?;
        tracing::debug!(index = applied, "controller snapshot taken");
        Ok(())
    }
}
