//! Fetch sessions (the protocol side is in `protocol::messages::fetch`): the partitions a
//! consumer fetches again and again, remembered per connection, so that its requests list
//! only what changed and the answers only what has news. At a thousand partitions a full
//! fetch spends most of its work on partitions that have nothing new.
//!
//! A session also remembers this shard's leadership of each partition it leads (the usual
//! case: clients fetch each partition from its owning shard's port). An incremental fetch
//! looks at such a partition's high watermark in place, and passes over it without a read,
//! a routed work item or an answer entry when nothing changed since the session last
//! reported it. Everything else is fetched like any partition. A leadership that ended, or
//! a new catalogue, makes the session look the partition up again.
//!
//! A connection keeps at most `FETCH_SESSIONS_PER_CONNECTION_MAX` sessions (opening one
//! more evicts the least recently used), and a shard at most
//! `FETCH_SESSION_PARTITIONS_PER_SHARD_MAX` session partitions over all its connections:
//! past that it declines to open sessions (the fetch is still answered in full, without
//! one) and closes a session that would grow. Sessions end with their connection, or when
//! it authenticates again as another principal; a session that two requests used at once
//! is closed.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{Catalog, TopicSpec};
use crate::constants::{FETCH_SESSIONS_PER_CONNECTION_MAX, FETCH_SESSION_PARTITIONS_PER_SHARD_MAX};
use crate::protocol::{
    next_session_epoch, ErrorCode, FetchPartition, FetchPartitionResponse, FetchRequest,
    SESSIONLESS_EPOCH,
};
use crate::replication::Leadership;

/// How many session partitions a shard holds, over all its connections.
#[derive(Debug, Default, Clone)]
pub struct SessionBudget(Rc<Cell<usize>>);

impl SessionBudget {
    pub fn in_use(&self) -> usize {
        self.0.get()
    }

    fn take(&self, count: usize) -> bool {
        let used = self.0.get();
        if used + count > FETCH_SESSION_PARTITIONS_PER_SHARD_MAX {
            return false;
        }
        self.0.set(used + count);
        true
    }

    fn give_back(&self, count: usize) {
        let used = self.0.get();
        assert!(used >= count, "a session gives back only what it took");
        self.0.set(used - count);
    }
}

/// Finds this shard's leadership of a partition (`None` when another shard or broker
/// leads it, or nobody does).
pub trait FindLeadership: Fn(&TopicSpec, u32) -> Option<Rc<Leadership>> {}
impl<F: Fn(&TopicSpec, u32) -> Option<Rc<Leadership>>> FindLeadership for F {}

/// One partition a fetch reads: from the request, or from its session.
#[derive(Clone)]
pub struct Wanted {
    /// The topic, or its name when the catalog does not have it (or not this partition).
    pub topic: Result<Arc<TopicSpec>, String>,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
    pub leader_epoch: Option<u32>,
    /// This shard's leadership of the partition, when a session knows it and it is
    /// current: read here, without routing.
    pub local: Option<Rc<Leadership>>,
    /// In an incremental fetch: which session partition this is.
    pub slot: Option<usize>,
}

impl fmt::Debug for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = match &self.topic {
            Ok(topic) => topic.name.as_str(),
            Err(name) => name.as_str(),
        };
        f.debug_struct("Wanted")
            .field("topic", &topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("local", &self.local.is_some())
            .field("slot", &self.slot)
            .finish()
    }
}

impl Wanted {
    /// The local leadership to read from, if it is still current for this fetch.
    pub fn current_local(&self) -> Option<&Rc<Leadership>> {
        self.local.as_ref().filter(|leadership| {
            !leadership.is_deposed()
                && self
                    .leader_epoch
                    .is_none_or(|epoch| epoch == leadership.epoch)
        })
    }
}

/// What a fetch request asks for, once its session (if any) is applied.
#[derive(Debug)]
pub struct FetchPlan {
    /// A full fetch's partitions, in request order (an incremental fetch asks the session
    /// for its `candidates` at each read).
    pub wanted: Vec<Wanted>,
    /// The session the answer names (0: none).
    pub session_id: u32,
    /// Answer only partitions with news (an incremental request); else all, in order.
    pub incremental: bool,
    /// The session's `generation` when this plan was made.
    generation: u64,
    /// Where this incremental fetch starts in the session's partitions.
    start: usize,
}

#[derive(Debug)]
struct SessionPartition {
    wanted: Wanted,
    /// The high watermark and log start offset the session's last answer carried.
    reported: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Session {
    id: u32,
    /// The epoch the next incremental request must carry.
    next_epoch: u32,
    partitions: Vec<SessionPartition>,
    slots: HashMap<(String, u32), usize>,
    /// The catalog the topics were resolved (and authorized) against.
    catalog: Arc<Catalog>,
    /// Where the next incremental answer starts, so a tight byte budget does not always
    /// favour the same partitions.
    rotation: usize,
    /// Changes whenever the session is used, so an answer that finishes after a later
    /// request began does not record what it reported.
    generation: u64,
    last_used: u64,
}

/// The fetch sessions of one connection.
#[derive(Debug)]
pub struct FetchSessions {
    sessions: Vec<Session>,
    /// Who opened them: a connection that authenticates again as someone else loses them.
    principal: String,
    budget: SessionBudget,
    next_id: u32,
    /// Counts uses, for least-recently-used eviction and generations.
    clock: u64,
}

/// Why a fetch's session could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Answered with this top-level error and no partitions.
    Session(ErrorCode),
    /// The principal may no longer read this topic of the session (the session is closed):
    /// the request is refused whole.
    Unauthorized(String),
}

fn name_of(topic: &Result<Arc<TopicSpec>, String>) -> &str {
    match topic {
        Ok(topic) => topic.name.as_str(),
        Err(name) => name.as_str(),
    }
}

fn name_key(topic: &Result<Arc<TopicSpec>, String>, partition: u32) -> (String, u32) {
    (name_of(topic).to_string(), partition)
}

fn resolve(catalog: &Catalog, name: &str, partition: u32) -> Result<Arc<TopicSpec>, String> {
    catalog
        .topic(name)
        .filter(|topic| partition < topic.partitions)
        .cloned()
        .ok_or_else(|| name.to_string())
}

fn wanted(catalog: &Catalog, entry: &FetchPartition) -> Wanted {
    Wanted {
        topic: resolve(catalog, &entry.topic, entry.partition),
        partition: entry.partition,
        offset: entry.fetch_offset,
        max_bytes: entry.partition_max_bytes,
        leader_epoch: entry.leader_epoch,
        local: None,
        slot: None,
    }
}

/// Looks the partition's local leadership up again.
fn find_local(wanted: &mut Wanted, find: &impl FindLeadership) {
    wanted.local = match &wanted.topic {
        Ok(topic) => find(topic, wanted.partition),
        Err(_) => None,
    };
}

impl FetchSessions {
    pub fn new(budget: SessionBudget) -> FetchSessions {
        FetchSessions {
            sessions: Vec::new(),
            principal: String::new(),
            budget,
            next_id: 1,
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Closes every session when the connection's principal is not the one they were
    /// opened for (their access was checked for that one).
    pub fn serve(&mut self, principal: &str) {
        if self.principal != principal {
            let ids: Vec<u32> = self.sessions.iter().map(|s| s.id).collect();
            for id in ids {
                self.close(id);
            }
            self.principal = principal.to_string();
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn close(&mut self, id: u32) {
        if let Some(index) = self.sessions.iter().position(|s| s.id == id) {
            let session = self.sessions.swap_remove(index);
            self.budget.give_back(session.partitions.len());
        }
    }

    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.sessions.iter().any(|s| s.id == id) {
                return id;
            }
        }
    }

    /// Applies `request` to this connection's sessions (opening, closing or updating
    /// one) and says what to fetch, or why the session could not be used. `authorized`
    /// says whether the principal may still read a topic; it is asked only when the
    /// catalog changed since a session last checked. `find` looks up this shard's
    /// leadership of a session partition.
    pub fn plan(
        &mut self,
        catalog: &Arc<Catalog>,
        request: &FetchRequest,
        authorized: impl Fn(&str) -> bool,
        find: impl FindLeadership,
    ) -> Result<FetchPlan, SessionRefusal> {
        let full = |session_id| FetchPlan {
            wanted: request
                .partitions
                .iter()
                .map(|entry| wanted(catalog, entry))
                .collect(),
            session_id,
            incremental: false,
            generation: 0,
            start: 0,
        };
        match (request.session_id, request.session_epoch) {
            (id, SESSIONLESS_EPOCH) => {
                self.close(id);
                Ok(full(0))
            }
            (id, 0) => {
                self.close(id);
                let mut plan = full(0);
                plan.session_id = self.open(catalog, &plan.wanted, &find);
                Ok(plan)
            }
            (id, epoch) => self.incremental(catalog, request, id, epoch, authorized, &find),
        }
    }

    /// Opens a session of `wanted`'s known partitions; 0 when there is no room.
    fn open(
        &mut self,
        catalog: &Arc<Catalog>,
        wanted: &[Wanted],
        find: &impl FindLeadership,
    ) -> u32 {
        let mut partitions = Vec::with_capacity(wanted.len());
        let mut slots = HashMap::with_capacity(wanted.len());
        for entry in wanted.iter().filter(|entry| entry.topic.is_ok()) {
            let key = name_key(&entry.topic, entry.partition);
            let mut entry = entry.clone();
            find_local(&mut entry, find);
            // A partition listed twice: the later entry counts, as in an incremental update.
            match slots.get(&key) {
                Some(&slot) => partitions[slot] = fresh(entry),
                None => {
                    slots.insert(key, partitions.len());
                    partitions.push(fresh(entry));
                }
            }
        }
        if partitions.is_empty() {
            return 0;
        }
        if self.sessions.len() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|s| s.last_used)
                .map(|s| s.id)
                .expect("a full list has a least recently used session");
            self.close(oldest);
        }
        if !self.budget.take(partitions.len()) {
            return 0;
        }
        let id = self.allocate_id();
        let now = self.tick();
        self.sessions.push(Session {
            id,
            next_epoch: 1,
            partitions,
            slots,
            catalog: catalog.clone(),
            rotation: 0,
            generation: now,
            last_used: now,
        });
        id
    }

    fn incremental(
        &mut self,
        catalog: &Arc<Catalog>,
        request: &FetchRequest,
        id: u32,
        epoch: u32,
        authorized: impl Fn(&str) -> bool,
        find: &impl FindLeadership,
    ) -> Result<FetchPlan, SessionRefusal> {
        let now = self.tick();
        let Some(index) = self.sessions.iter().position(|s| s.id == id) else {
            return Err(SessionRefusal::Session(ErrorCode::FetchSessionNotFound));
        };
        if self.sessions[index].next_epoch != epoch {
            self.close(id);
            return Err(SessionRefusal::Session(ErrorCode::InvalidFetchSessionEpoch));
        }
        let session = &mut self.sessions[index];
        session.next_epoch = next_session_epoch(epoch);
        session.last_used = now;
        session.generation = now;
        for forgotten in &request.forgotten {
            let key = (forgotten.topic.clone(), forgotten.partition);
            if let Some(slot) = session.slots.remove(&key) {
                session.partitions.swap_remove(slot);
                if let Some(moved) = session.partitions.get(slot) {
                    let moved_key = name_key(&moved.wanted.topic, moved.wanted.partition);
                    session.slots.insert(moved_key, slot);
                }
                self.budget.give_back(1);
            }
        }
        let mut added = 0;
        for entry in &request.partitions {
            let mut entry = wanted(catalog, entry);
            find_local(&mut entry, find);
            let key = name_key(&entry.topic, entry.partition);
            match session.slots.get(&key) {
                // What the session reported stays: the client knows it.
                Some(&slot) => session.partitions[slot].wanted = entry,
                None => {
                    session.slots.insert(key, session.partitions.len());
                    session.partitions.push(fresh(entry));
                    added += 1;
                }
            }
        }
        if added > 0 && !self.budget.take(added) {
            // The session grew past what the shard holds: it is closed, and the client
            // starts again with a full fetch (answered without a session if still no room).
            let session = self.sessions.swap_remove(index);
            self.budget.give_back(session.partitions.len() - added);
            return Err(SessionRefusal::Session(ErrorCode::FetchSessionNotFound));
        }
        let session = &mut self.sessions[index];
        if !Arc::ptr_eq(&session.catalog, catalog) {
            // Topics may have been deleted or created, leaders moved, access rules changed.
            let mut names: Vec<&str> = session
                .partitions
                .iter()
                .map(|p| name_of(&p.wanted.topic))
                .collect();
            names.sort_unstable();
            names.dedup();
            if let Some(refused) = names.into_iter().find(|name| !authorized(name)) {
                let refused = refused.to_string();
                self.close(id);
                return Err(SessionRefusal::Unauthorized(refused));
            }
            let session = &mut self.sessions[index];
            for partition in &mut session.partitions {
                let wanted = &mut partition.wanted;
                wanted.topic = resolve(catalog, name_of(&wanted.topic), wanted.partition);
                find_local(wanted, find);
            }
            session.catalog = catalog.clone();
        }
        let session = &mut self.sessions[index];
        for partition in &mut session.partitions {
            // A leadership that ended may have come back at a newer epoch, and one this
            // shard did not hold yet (a catalogue is applied before the roles it gives)
            // may be here now: a lookup is cheap beside routing the partition.
            let stale = match &partition.wanted.local {
                Some(leadership) => leadership.is_deposed(),
                None => true,
            };
            if stale {
                find_local(&mut partition.wanted, find);
            }
        }
        let start = session.rotation;
        session.rotation = session.rotation.wrapping_add(1);
        Ok(FetchPlan {
            wanted: Vec::new(),
            session_id: id,
            incremental: true,
            generation: now,
            start,
        })
    }

    fn current(&self, plan: &FetchPlan) -> Option<&Session> {
        self.sessions
            .iter()
            .find(|s| s.id == plan.session_id && s.generation == plan.generation)
    }

    /// The partitions an incremental fetch reads now: every partition of the session except
    /// those led here that have nothing to read and nothing new to report. `None` when the
    /// session was closed, or used by another request meanwhile (then it is closed: two
    /// requests at once on one session leave it in doubt).
    pub fn candidates(&mut self, plan: &FetchPlan) -> Option<Vec<Wanted>> {
        if self.current(plan).is_none() {
            self.close(plan.session_id);
            return None;
        }
        let session = self.current(plan)?;
        let count = session.partitions.len();
        let mut out = Vec::new();
        for i in 0..count {
            let slot = (plan.start.wrapping_add(i)) % count;
            let partition = &session.partitions[slot];
            if let Some(leadership) = partition.wanted.current_local() {
                let log = &leadership.log;
                let news = (log.high_watermark(), log.log_start_offset());
                let idle = partition.wanted.offset == news.0 && partition.wanted.offset >= news.1;
                if idle && partition.reported == Some(news) {
                    continue;
                }
            }
            let mut wanted = partition.wanted.clone();
            wanted.slot = Some(slot);
            out.push(wanted);
        }
        Some(out)
    }

    /// The session's partitions led here and their positions, except the slots in
    /// `returned_data` (sorted): what an incremental fetch with too little to answer watches.
    /// Those that received data since they were read are included too: the watch then ends
    /// at once and the fetch reads again.
    pub fn idle_local(
        &self,
        plan: &FetchPlan,
        returned_data: &[usize],
    ) -> Vec<(Rc<Leadership>, u64)> {
        let Some(session) = self.current(plan) else {
            return Vec::new();
        };
        session
            .partitions
            .iter()
            .enumerate()
            .filter(|(slot, _)| returned_data.binary_search(slot).is_err())
            .filter_map(|(_, partition)| {
                let leadership = partition.wanted.current_local()?;
                Some((leadership.clone(), partition.wanted.offset))
            })
            .collect()
    }

    /// Records what an answer to `plan` carried, and keeps only the entries worth sending:
    /// for an incremental fetch those with batches, an error, or a high watermark or log
    /// start offset the session has not reported yet; for a full one all of them. Returns
    /// the indexes of `responses` to send. `wanted` are the entries `responses` answer.
    pub fn answer(
        &mut self,
        plan: &FetchPlan,
        wanted: &[Wanted],
        responses: &[FetchPartitionResponse],
    ) -> Vec<usize> {
        let session = self
            .sessions
            .iter_mut()
            .find(|s| s.id == plan.session_id && plan.session_id != 0);
        if !plan.incremental {
            if let Some(session) = session {
                for (entry, response) in wanted.iter().zip(responses) {
                    let key = name_key(&entry.topic, entry.partition);
                    if let Some(&slot) = session.slots.get(&key) {
                        if response.error == ErrorCode::None {
                            session.partitions[slot].reported =
                                Some((response.high_watermark, response.log_start_offset));
                        }
                    }
                }
            }
            return (0..responses.len()).collect();
        }
        let mut current = session.filter(|s| s.generation == plan.generation);
        let mut keep = Vec::new();
        for (index, (entry, response)) in wanted.iter().zip(responses).enumerate() {
            let news = (response.high_watermark, response.log_start_offset);
            let slot = entry
                .slot
                .expect("an incremental fetch's entries name their slots");
            let reported = current
                .as_ref()
                .and_then(|s| s.partitions.get(slot))
                .and_then(|p| p.reported);
            let send = response.batch_bytes > 0
                || response.error != ErrorCode::None
                || reported != Some(news);
            if send {
                keep.push(index);
                if let Some(session) = current.as_mut() {
                    if response.error == ErrorCode::None {
                        session.partitions[slot].reported = Some(news);
                    }
                }
            }
        }
        keep
    }
}

fn fresh(wanted: Wanted) -> SessionPartition {
    SessionPartition {
        wanted,
        reported: None,
    }
}

impl Drop for FetchSessions {
    fn drop(&mut self) {
        let held: usize = self.sessions.iter().map(|s| s.partitions.len()).sum();
        self.budget.give_back(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(partitions: u32) -> Arc<Catalog> {
        let topic = TopicSpec {
            name: "t".into(),
            topic_id: 1,
            partitions,
            config: Default::default(),
            created_ms: 0,
            placement: Vec::new(),
        };
        Arc::new(Catalog::new(1, [topic]))
    }

    fn entry(partition: u32, offset: u64) -> FetchPartition {
        FetchPartition {
            topic: "t".into(),
            partition,
            fetch_offset: offset,
            partition_max_bytes: 1024,
            leader_epoch: Some(0),
        }
    }

    fn request(id: u32, epoch: u32, partitions: Vec<FetchPartition>) -> FetchRequest {
        FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            isolation: crate::protocol::IsolationLevel::HighWatermark,
            partitions,
            session_id: id,
            session_epoch: epoch,
            forgotten: Vec::new(),
        }
    }

    fn answer(wanted: &Wanted, high_watermark: u64, batch_bytes: u32) -> FetchPartitionResponse {
        FetchPartitionResponse {
            topic: "t".into(),
            partition: wanted.partition,
            error: ErrorCode::None,
            high_watermark,
            log_start_offset: 0,
            last_stable_offset: high_watermark,
            batch_bytes,
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    /// Answers `wanted` with each partition's (high watermark, batch bytes) from `news`,
    /// and returns the partitions the answer keeps, in order.
    fn answered(
        sessions: &mut FetchSessions,
        plan: &FetchPlan,
        wanted: &[Wanted],
        news: impl Fn(u32) -> (u64, u32),
    ) -> Vec<u32> {
        let responses: Vec<_> = wanted
            .iter()
            .map(|w| {
                let (high_watermark, bytes) = news(w.partition);
                answer(w, high_watermark, bytes)
            })
            .collect();
        let mut kept: Vec<u32> = sessions
            .answer(plan, wanted, &responses)
            .into_iter()
            .map(|i| responses[i].partition)
            .collect();
        kept.sort_unstable();
        kept
    }

    /// No partition is led by this shard in these tests: every one is read as routed.
    fn elsewhere(_: &TopicSpec, _: u32) -> Option<Rc<Leadership>> {
        None
    }

    /// The entries a fetch on `plan` reads.
    fn read_by(sessions: &mut FetchSessions, plan: &FetchPlan) -> Vec<Wanted> {
        if plan.incremental {
            sessions.candidates(plan).expect("the session is current")
        } else {
            plan.wanted.clone()
        }
    }

    fn partitions_of(wanted: &[Wanted]) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = wanted.iter().map(|w| (w.partition, w.offset)).collect();
        out.sort_unstable();
        out
    }

    /// Opens a session of partitions 0..4 at offset 10 and answers it with high watermark 10.
    fn opened(sessions: &mut FetchSessions, catalog: &Arc<Catalog>) -> u32 {
        let full = request(0, 0, (0..4).map(|p| entry(p, 10)).collect());
        let plan = sessions.plan(catalog, &full, all, elsewhere).unwrap();
        assert!(!plan.incremental);
        assert_ne!(plan.session_id, 0);
        let responses: Vec<_> = plan.wanted.iter().map(|w| answer(w, 10, 0)).collect();
        let kept = sessions.answer(&plan, &plan.wanted, &responses);
        assert_eq!(kept, vec![0, 1, 2, 3]);
        plan.session_id
    }

    #[test]
    fn an_incremental_fetch_reads_the_whole_session_and_answers_only_news() {
        let catalog = catalog(8);
        let budget = SessionBudget::default();
        let mut sessions = FetchSessions::new(budget.clone());
        let id = opened(&mut sessions, &catalog);
        assert_eq!(budget.in_use(), 4);

        // Partition 1 moved on, partition 6 is new, partition 3 is forgotten.
        let mut incremental = request(id, 1, vec![entry(1, 15), entry(6, 0)]);
        incremental
            .forgotten
            .push(crate::protocol::ForgottenPartition {
                topic: "t".into(),
                partition: 3,
            });
        let plan = sessions
            .plan(&catalog, &incremental, all, elsewhere)
            .unwrap();
        assert!(plan.incremental);
        assert_eq!(plan.session_id, id);
        let wanted = read_by(&mut sessions, &plan);
        assert_eq!(
            partitions_of(&wanted),
            vec![(0, 10), (1, 15), (2, 10), (6, 0)]
        );
        assert_eq!(budget.in_use(), 4);
        // Only partition 2 has batches; partition 6 was never reported; the rest are as
        // reported (0 at 10; 1 at 10, where its position now is 15 but nothing changed).
        let kept = answered(&mut sessions, &plan, &wanted, |partition| match partition {
            2 => (20, 500),
            6 => (0, 0),
            _ => (10, 0),
        });
        assert_eq!(kept, vec![2, 6]);

        // The next epoch: nothing changed anywhere, so nothing is answered; a changed high
        // watermark is news even without batches.
        let next = request(id, 2, vec![entry(2, 20)]);
        let plan = sessions.plan(&catalog, &next, all, elsewhere).unwrap();
        let wanted = read_by(&mut sessions, &plan);
        let kept = answered(&mut sessions, &plan, &wanted, |partition| match partition {
            0 => (11, 0),
            2 => (20, 0),
            6 => (0, 0),
            _ => (10, 0),
        });
        assert_eq!(kept, vec![0]);
    }

    #[test]
    fn a_wrong_epoch_closes_the_session_and_an_unknown_one_is_not_found() {
        let catalog = catalog(4);
        let budget = SessionBudget::default();
        let mut sessions = FetchSessions::new(budget.clone());
        let id = opened(&mut sessions, &catalog);
        let refused = sessions.plan(&catalog, &request(id, 2, Vec::new()), all, elsewhere);
        assert_eq!(
            refused.unwrap_err(),
            SessionRefusal::Session(ErrorCode::InvalidFetchSessionEpoch)
        );
        assert_eq!(budget.in_use(), 0);
        let refused = sessions.plan(&catalog, &request(id, 1, Vec::new()), all, elsewhere);
        assert_eq!(
            refused.unwrap_err(),
            SessionRefusal::Session(ErrorCode::FetchSessionNotFound)
        );
        let refused = sessions.plan(&catalog, &request(0, 1, Vec::new()), all, elsewhere);
        assert_eq!(
            refused.unwrap_err(),
            SessionRefusal::Session(ErrorCode::FetchSessionNotFound)
        );
    }

    #[test]
    fn a_session_used_by_two_requests_at_once_is_closed() {
        let catalog = catalog(4);
        let mut sessions = FetchSessions::new(SessionBudget::default());
        let id = opened(&mut sessions, &catalog);
        let first = sessions
            .plan(&catalog, &request(id, 1, Vec::new()), all, elsewhere)
            .unwrap();
        let second = sessions
            .plan(&catalog, &request(id, 2, Vec::new()), all, elsewhere)
            .unwrap();
        // The first request reads after the second began: the session is in doubt.
        assert!(sessions.candidates(&first).is_none());
        assert!(sessions.is_empty());
        assert!(sessions.candidates(&second).is_none());
    }

    #[test]
    fn another_principal_on_the_connection_loses_its_sessions() {
        let catalog = catalog(4);
        let budget = SessionBudget::default();
        let mut sessions = FetchSessions::new(budget.clone());
        sessions.serve("alice");
        let id = opened(&mut sessions, &catalog);
        sessions.serve("alice");
        assert_eq!(sessions.len(), 1);
        sessions.serve("bob");
        assert!(sessions.is_empty());
        assert_eq!(budget.in_use(), 0);
        let refused = sessions.plan(&catalog, &request(id, 1, Vec::new()), all, elsewhere);
        assert_eq!(
            refused.unwrap_err(),
            SessionRefusal::Session(ErrorCode::FetchSessionNotFound)
        );
    }

    #[test]
    fn closing_reopening_and_sessionless_fetches() {
        let catalog = catalog(4);
        let budget = SessionBudget::default();
        let mut sessions = FetchSessions::new(budget.clone());
        let id = opened(&mut sessions, &catalog);
        // Epoch 0 with the id: closed and another opened.
        let again = sessions
            .plan(&catalog, &request(id, 0, vec![entry(0, 0)]), all, elsewhere)
            .unwrap();
        assert_ne!(again.session_id, 0);
        assert_ne!(again.session_id, id);
        assert_eq!((sessions.len(), budget.in_use()), (1, 1));
        // Sessionless with the id: closed, and none opened.
        let plain = sessions
            .plan(
                &catalog,
                &request(again.session_id, SESSIONLESS_EPOCH, vec![entry(0, 0)]),
                all,
                elsewhere,
            )
            .unwrap();
        assert_eq!(plain.session_id, 0);
        assert!(!plain.incremental);
        assert_eq!((sessions.len(), budget.in_use()), (0, 0));
        // A full fetch of only unknown partitions opens nothing.
        let unknown = sessions
            .plan(&catalog, &request(0, 0, vec![entry(9, 0)]), all, elsewhere)
            .unwrap();
        assert_eq!(unknown.session_id, 0);
        assert!(unknown.wanted[0].topic.is_err());
    }

    #[test]
    fn a_connection_keeps_its_most_recent_sessions_and_gives_back_their_partitions() {
        let catalog = catalog(4);
        let budget = SessionBudget::default();
        let mut sessions = FetchSessions::new(budget.clone());
        let first = opened(&mut sessions, &catalog);
        let mut ids = vec![first];
        for _ in 1..FETCH_SESSIONS_PER_CONNECTION_MAX {
            ids.push(opened(&mut sessions, &catalog));
        }
        // Using the first makes the second the least recently used.
        sessions
            .plan(&catalog, &request(first, 1, Vec::new()), all, elsewhere)
            .unwrap();
        let newest = opened(&mut sessions, &catalog);
        assert_eq!(sessions.len(), FETCH_SESSIONS_PER_CONNECTION_MAX);
        assert_eq!(budget.in_use(), 4 * FETCH_SESSIONS_PER_CONNECTION_MAX);
        assert_eq!(
            sessions
                .plan(&catalog, &request(ids[1], 1, Vec::new()), all, elsewhere)
                .unwrap_err(),
            SessionRefusal::Session(ErrorCode::FetchSessionNotFound)
        );
        assert!(sessions
            .plan(&catalog, &request(first, 2, Vec::new()), all, elsewhere)
            .is_ok());
        assert!(sessions
            .plan(&catalog, &request(newest, 1, Vec::new()), all, elsewhere)
            .is_ok());
        drop(sessions);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_full_shard_answers_without_a_session_and_closes_one_that_would_grow() {
        let catalog = catalog(8);
        let budget = SessionBudget::default();
        assert!(budget.take(FETCH_SESSION_PARTITIONS_PER_SHARD_MAX - 5));
        let mut sessions = FetchSessions::new(budget.clone());
        let id = opened(&mut sessions, &catalog);
        let full = request(0, 0, (0..4).map(|p| entry(p, 0)).collect());
        let declined = sessions.plan(&catalog, &full, all, elsewhere).unwrap();
        assert_eq!(declined.session_id, 0);
        assert_eq!(declined.wanted.len(), 4);
        let grow = request(id, 1, (4..8).map(|p| entry(p, 0)).collect());
        assert_eq!(
            sessions.plan(&catalog, &grow, all, elsewhere).unwrap_err(),
            SessionRefusal::Session(ErrorCode::FetchSessionNotFound)
        );
        assert_eq!(budget.in_use(), FETCH_SESSION_PARTITIONS_PER_SHARD_MAX - 5);
    }

    #[test]
    fn a_changed_catalog_is_checked_again_for_access_and_topics() {
        let before = catalog(4);
        let mut sessions = FetchSessions::new(SessionBudget::default());
        let id = opened(&mut sessions, &before);
        // The same catalog is not asked about again.
        let never = |_: &str| -> bool { panic!("asked with an unchanged catalog") };
        sessions
            .plan(&before, &request(id, 1, Vec::new()), never, elsewhere)
            .unwrap();
        // A new catalog where the topic has 2 partitions: 2 and 3 are unknown now.
        let after = catalog(2);
        let plan = sessions
            .plan(&after, &request(id, 2, Vec::new()), all, elsewhere)
            .unwrap();
        let unknown: Vec<u32> = read_by(&mut sessions, &plan)
            .iter()
            .filter(|w| w.topic.is_err())
            .map(|w| w.partition)
            .collect();
        assert_eq!(unknown.len(), 2);
        assert!(unknown.iter().all(|&p| p >= 2));
        // Access taken away: the session is refused and closed.
        let later = catalog(4);
        let refused = sessions.plan(
            &later,
            &request(id, 3, Vec::new()),
            |_: &str| false,
            elsewhere,
        );
        assert_eq!(
            refused.unwrap_err(),
            SessionRefusal::Unauthorized("t".into())
        );
        assert!(sessions.is_empty());
    }
}
