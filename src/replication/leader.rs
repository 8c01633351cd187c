//! The leader's side: what each follower has, the high watermark, the in-sync set, and the
//! answer to a follower's fetch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cluster::controller::{AlterPartition, ControllerCall, ControllerReply};
use crate::cluster::{PartitionState, TopicSpec};
use crate::log::{PartitionLog, ReadChunk};
use crate::protocol::{
    EpochAnswer, ErrorCode, FetchPartitionResponse, OffsetsForLeaderEpochRequest,
    OffsetsForLeaderEpochResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use crate::server::context::ShardContext;
use crate::server::work::with_deadline;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log end offset, from its last fetch.
    log_end: u64,
    /// What it holds durably.
    durable: u64,
    /// When it last held everything the leader held.
    caught_up_at: Instant,
    /// The leader's log end at the follower's previous fetch, and when that was.
    previous_leader_end: u64,
    previous_fetch_at: Instant,
}

/// An in-sync change asked of the controller.
#[derive(Debug, Clone)]
struct PendingChange {
    in_sync: Vec<u32>,
    /// The controller answered that it holds this set, as of this log index: a catalogue
    /// at or past it shows the controller's decision.
    done_at: Option<u64>,
}

/// This shard leads a partition at `epoch`.
pub struct Leadership {
    pub topic: RefCell<Arc<TopicSpec>>,
    pub partition: u32,
    pub epoch: u32,
    pub me: u32,
    pub log: PartitionLog,
    replicas: RefCell<Vec<u32>>,
    in_sync: RefCell<Vec<u32>>,
    followers: RefCell<HashMap<u32, Progress>>,
    /// A task is asking the controller for an in-sync change (it asks until it gets a
    /// final answer, or this leadership ends).
    change_in_flight: Cell<bool>,
    /// A caught-up follower's wish to join the in-sync set, sent by the watcher.
    wanted: RefCell<Option<Vec<u32>>>,
    /// An in-sync set this leader asked the controller for, whose fate no catalogue has
    /// shown yet: the high watermark counts its members too until then. A replica the
    /// controller may already count as in sync (and may elect) must hold what this leader
    /// acknowledges, and an answer lost on the way (a timeout, a controller failover) says
    /// nothing about whether the change was committed.
    pending: RefCell<Option<PendingChange>>,
    /// The controller log index of the last catalogue this leadership took.
    seen_applied: Cell<u64>,
    /// This shard no longer leads at this epoch.
    deposed: Cell<bool>,
}

impl Leadership {
    pub fn new(
        topic: Arc<TopicSpec>,
        partition: u32,
        me: u32,
        state: &PartitionState,
        log: PartitionLog,
    ) -> Leadership {
        let now = Instant::now();
        // A new leader gives every follower a fresh lag clock.
        let followers = state
            .replicas
            .iter()
            .filter(|&&b| b != me)
            .map(|&b| {
                (
                    b,
                    Progress {
                        log_end: 0,
                        durable: 0,
                        caught_up_at: now,
                        previous_leader_end: 0,
                        previous_fetch_at: now,
                    },
                )
            })
            .collect();
        Leadership {
            topic: RefCell::new(topic),
            partition,
            epoch: state.leader_epoch,
            me,
            log,
            replicas: RefCell::new(state.replicas.clone()),
            in_sync: RefCell::new(state.in_sync.clone()),
            followers: RefCell::new(followers),
            change_in_flight: Cell::new(false),
            wanted: RefCell::new(None),
            pending: RefCell::new(None),
            seen_applied: Cell::new(0),
            deposed: Cell::new(false),
        }
    }

    /// Whether this leadership ended.
    pub fn is_deposed(&self) -> bool {
        self.deposed.get()
    }

    /// This leadership ended (another leader, another epoch, or the topic is gone).
    pub fn depose(&self) {
        self.deposed.set(true);
        self.log.wake_waiters();
    }

    /// Resolves once the leadership ended. Waits on the log's own waiter list (drained at
    /// every change), so that a waiter gone away leaves nothing behind.
    pub async fn wait_deposed(&self) {
        std::future::poll_fn(|cx| {
            if self.deposed.get() {
                return std::task::Poll::Ready(());
            }
            self.log.wake_on_change(cx.waker());
            std::task::Poll::Pending
        })
        .await
    }

    /// Takes a new catalogue's view of the partition (same leader, same epoch); `applied`
    /// is the controller log index the catalogue was built at.
    ///
    /// A change asked for stays pending (and counted in the high watermark) until a
    /// catalogue shows its fate: one whose in-sync set holds every member asked for, or
    /// one at or past the index at which the controller answered it done. A catalogue of
    /// some other change, published while ours is still being committed, leaves it be.
    pub fn update(&self, topic: &Arc<TopicSpec>, state: &PartitionState, applied: u64) {
        *self.topic.borrow_mut() = topic.clone();
        *self.replicas.borrow_mut() = state.replicas.clone();
        *self.in_sync.borrow_mut() = state.in_sync.clone();
        self.seen_applied.set(self.seen_applied.get().max(applied));
        let settled = self.pending.borrow().as_ref().is_some_and(|pending| {
            pending.in_sync.iter().all(|b| state.in_sync.contains(b))
                || pending.done_at.is_some_and(|at| applied >= at)
        });
        if settled {
            self.pending.borrow_mut().take();
        }
        self.recompute_high_watermark();
    }

    /// The controller answered the pending change done as of log index `at`.
    fn change_done(&self, at: u64) {
        if self.seen_applied.get() >= at {
            // The catalogue that shows it came first.
            self.pending.borrow_mut().take();
        } else if let Some(pending) = self.pending.borrow_mut().as_mut() {
            pending.done_at = Some(at);
        }
        self.recompute_high_watermark();
    }

    /// The controller refused the pending change for good: nothing was committed.
    fn change_refused(&self) {
        self.pending.borrow_mut().take();
        self.recompute_high_watermark();
    }

    /// Whether a new in-sync change may be asked for: none is being asked, and the last
    /// one's fate is known.
    fn may_ask(&self) -> bool {
        !self.change_in_flight.get() && self.pending.borrow().is_none()
    }

    /// The replicas as this leader sees them, for the metrics.
    pub fn stats(&self) -> crate::metrics::LeaderStats {
        let end = self.log.log_end_offset();
        let mut follower_lag: Vec<(u32, u64)> = self
            .followers
            .borrow()
            .iter()
            .map(|(&broker, progress)| (broker, end.saturating_sub(progress.log_end)))
            .collect();
        follower_lag.sort_unstable();
        crate::metrics::LeaderStats {
            replicas: self.replicas.borrow().len(),
            in_sync: self.in_sync.borrow().len(),
            min_in_sync: self.min_in_sync(),
            follower_lag,
        }
    }

    pub fn in_sync(&self) -> Vec<u32> {
        self.in_sync.borrow().clone()
    }

    pub fn replicas(&self) -> Vec<u32> {
        self.replicas.borrow().clone()
    }

    pub fn min_in_sync(&self) -> usize {
        self.topic.borrow().config.min_insync_replicas as usize
    }

    fn lag_max(&self) -> Duration {
        Duration::from_millis(self.topic.borrow().config.replica_lag_time_max_ms)
    }

    /// Whether an `acks=all` write may be taken: enough replicas are in sync.
    pub fn enough_in_sync(&self) -> bool {
        self.in_sync.borrow().len() >= self.min_in_sync()
    }

    /// Sets the log's high-watermark cap from the in-sync followers' durable offsets. The
    /// high watermark never moves back, and stands still below `min.insync.replicas`.
    pub fn recompute_high_watermark(&self) {
        if self.replicas.borrow().len() <= 1 {
            self.log.set_high_watermark_cap(None);
            return;
        }
        if self.log.high_watermark_cap().is_none() {
            // A log just opened (a restart) knows no high watermark: it starts at the log
            // start and moves as the followers report, never at the log end (which may
            // hold what no follower has).
            self.log
                .set_high_watermark_cap(Some(self.log.log_start_offset()));
        }
        let current = self.log.high_watermark();
        let in_sync = self.in_sync.borrow();
        let pending = self.pending.borrow();
        let followers = self.followers.borrow();
        let floor = in_sync
            .iter()
            .chain(pending.iter().flat_map(|p| &p.in_sync))
            .filter(|&&b| b != self.me)
            .map(|b| followers.get(b).map_or(0, |p| p.durable))
            .min();
        let cap = if in_sync.len() < self.min_in_sync() {
            current
        } else {
            floor.unwrap_or(u64::MAX)
        };
        self.log.set_high_watermark_cap(Some(cap.max(current)));
    }

    /// Records a follower's fetch. Returns the in-sync set to ask the controller for, if
    /// the follower caught up and should join it.
    fn fetched(&self, replica: u32, fetch_offset: u64, durable: u64) -> Option<Vec<u32>> {
        let now = Instant::now();
        let leader_end = self.log.log_end_offset();
        {
            let mut followers = self.followers.borrow_mut();
            let progress = followers.entry(replica).or_insert(Progress {
                log_end: 0,
                durable: 0,
                caught_up_at: now,
                previous_leader_end: 0,
                previous_fetch_at: now,
            });
            progress.log_end = fetch_offset;
            progress.durable = durable;
            if fetch_offset >= leader_end {
                progress.caught_up_at = now;
            } else if fetch_offset >= progress.previous_leader_end {
                progress.caught_up_at = progress.caught_up_at.max(progress.previous_fetch_at);
            }
            progress.previous_leader_end = leader_end;
            progress.previous_fetch_at = now;
        }
        self.recompute_high_watermark();
        let in_sync = self.in_sync.borrow();
        // It joins once it holds durably everything acknowledged so far.
        let joins = !in_sync.contains(&replica) && durable >= self.log.high_watermark();
        if joins && self.may_ask() {
            let mut grown = in_sync.clone();
            grown.push(replica);
            grown.sort_unstable();
            return Some(grown);
        }
        None
    }

    /// The in-sync set without followers that lagged longer than the lag time, if any did.
    fn shrunk(&self) -> Option<Vec<u32>> {
        if !self.may_ask() {
            return None;
        }
        let lag_max = self.lag_max();
        let followers = self.followers.borrow();
        let in_sync = self.in_sync.borrow();
        let kept: Vec<u32> = in_sync
            .iter()
            .copied()
            .filter(|b| {
                *b == self.me
                    || followers
                        .get(b)
                        .is_some_and(|p| p.caught_up_at.elapsed() <= lag_max)
            })
            .collect();
        (kept.len() < in_sync.len()).then_some(kept)
    }

    fn alter(&self, in_sync: Vec<u32>) -> AlterPartition {
        AlterPartition {
            topic_id: self.topic.borrow().topic_id,
            partition: self.partition,
            leader: self.me,
            leader_epoch: self.epoch,
            in_sync,
        }
    }
}

/// Asks the controller for an in-sync change, in a task of its own, until it gets a final
/// answer or this leadership ends. An unclear outcome (no answer, a timeout, a controller
/// that lost its leadership meanwhile) is asked again: the change may have been committed,
/// so its members stay counted (`Leadership::pending`) until a catalogue settles it.
fn request_change(context: &Rc<ShardContext>, leadership: &Rc<Leadership>, in_sync: Vec<u32>) {
    leadership.change_in_flight.set(true);
    *leadership.pending.borrow_mut() = Some(PendingChange {
        in_sync: in_sync.clone(),
        done_at: None,
    });
    leadership.recompute_high_watermark();
    let change = leadership.alter(in_sync);
    let context = context.clone();
    let leadership = leadership.clone();
    glommio::spawn_local(async move {
        let mut attempts = 0u32;
        while !leadership.deposed.get() && !context.stopping.get() {
            attempts += 1;
            let answer = crate::server::controller::call(
                &context,
                ControllerCall::AlterPartition(change.clone()),
            )
            .await;
            match answer {
                Ok((ControllerReply::Done { error, .. }, applied)) => match error {
                    ErrorCode::None => {
                        leadership.change_done(applied);
                        break;
                    }
                    ErrorCode::IneligibleReplica
                    | ErrorCode::InvalidRequest
                    | ErrorCode::UnknownTopicOrPartition => {
                        tracing::warn!(?change, ?error, "the controller refused an in-sync change");
                        leadership.change_refused();
                        break;
                    }
                    ErrorCode::FencedLeaderEpoch => {
                        // Another leader or epoch: this leadership is ending. Its members
                        // stay counted until the catalogue that deposes it arrives.
                        tracing::info!(?change, "an in-sync change found a newer leader epoch");
                        break;
                    }
                    _ => {
                        if attempts == 1 {
                            tracing::warn!(?change, ?error, "an in-sync change has no clear answer yet: asking again");
                        }
                    }
                },
                Ok((reply, _)) => {
                    tracing::warn!(?change, ?reply, "the controller answered an in-sync change with another reply");
                    leadership.change_refused();
                    break;
                }
                Err(error) => {
                    if attempts == 1 {
                        tracing::warn!(?change, %error, "an in-sync change did not reach the controller: asking again");
                    }
                }
            }
            glommio::timer::sleep(Duration::from_millis(
                crate::constants::CONTROLLER_CALL_RETRY_MS,
            ))
            .await;
        }
        leadership.change_in_flight.set(false);
    })
    .detach();
}

/// Every `interval`, drops followers that lag too long from the in-sync sets this shard
/// leads. Runs until the shard stops.
pub async fn watch_in_sync(context: Rc<ShardContext>, interval: Duration) {
    while !context.stopping.get() {
        glommio::timer::sleep(interval).await;
        for leadership in context.replication.leaderships() {
            let wanted = leadership.wanted.borrow_mut().take();
            if let Some(grown) = wanted.filter(|_| leadership.may_ask()) {
                request_change(&context, &leadership, grown);
                continue;
            }
            if let Some(kept) = leadership.shrunk() {
                tracing::warn!(
                    topic = %leadership.topic.borrow().name,
                    partition = leadership.partition,
                    from = ?leadership.in_sync(),
                    to = ?kept,
                    "a follower lags: leaving the in-sync set"
                );
                request_change(&context, &leadership, kept);
            }
        }
    }
}

fn refused(topic: &str, partition: u32, error: ErrorCode) -> FetchPartitionResponse {
    FetchPartitionResponse::without_data(topic.to_string(), partition, error)
}

/// Answers a follower's fetch on this (the owning) shard.
pub async fn answer_fetch(
    context: &ShardContext,
    request: ReplicaFetchRequest,
) -> (ReplicaFetchResponse, Vec<Bytes>) {
    let catalog = context.catalog();
    let deadline = Instant::now()
        + Duration::from_millis(
            u64::from(request.max_wait_ms).min(crate::constants::FETCH_WAIT_MS_MAX),
        );
    // Which entries this shard may serve, with their leadership.
    let mut served: Vec<Option<Rc<Leadership>>> = Vec::with_capacity(request.partitions.len());
    let mut responses = Vec::with_capacity(request.partitions.len());
    for entry in &request.partitions {
        let topic = catalog
            .topic(&entry.topic)
            .filter(|t| entry.partition < t.partitions);
        let Some(topic) = topic else {
            responses.push(refused(
                &entry.topic,
                entry.partition,
                ErrorCode::UnknownTopicOrPartition,
            ));
            served.push(None);
            continue;
        };
        let leadership = context
            .replication
            .leadership((topic.topic_id, entry.partition));
        let error = match &leadership {
            None => Some(ErrorCode::NotLeaderOrFollower),
            Some(l) if entry.leader_epoch < l.epoch => Some(ErrorCode::FencedLeaderEpoch),
            Some(l) if entry.leader_epoch > l.epoch => Some(ErrorCode::UnknownLeaderEpoch),
            Some(l) if !l.replicas().contains(&request.replica) || request.replica == l.me => {
                Some(ErrorCode::NotLeaderOrFollower)
            }
            Some(_) => None,
        };
        if let Some(error) = error {
            responses.push(refused(&entry.topic, entry.partition, error));
            served.push(None);
            continue;
        }
        let leadership = leadership.expect("checked above");
        if let Some(grown) =
            leadership.fetched(request.replica, entry.fetch_offset, entry.durable_offset)
        {
            tracing::info!(topic = %entry.topic, partition = entry.partition, replica = request.replica, "a follower caught up: joining the in-sync set");
            *leadership.wanted.borrow_mut() = Some(grown);
        }
        responses.push(refused(&entry.topic, entry.partition, ErrorCode::None));
        served.push(Some(leadership));
    }
    // Long poll: wait until any served partition has something past the follower's end.
    let has_data = |served: &[Option<Rc<Leadership>>]| {
        served.iter().zip(&request.partitions).any(|(l, e)| {
            l.as_ref()
                .is_some_and(|l| l.log.log_end_offset() > e.fetch_offset)
        })
    };
    if !has_data(&served) && request.max_wait_ms > 0 {
        let waits: Vec<_> = served
            .iter()
            .zip(&request.partitions)
            .filter_map(|(l, e)| {
                let log = l.as_ref()?.log.clone();
                let offset = e.fetch_offset;
                Some(Box::pin(async move {
                    let _ = log.wait_appended(offset).await;
                }))
            })
            .collect();
        if !waits.is_empty() {
            with_deadline(deadline, futures::future::select_all(waits)).await;
        }
    }
    let mut budget = request.max_bytes as usize;
    let mut trailer = Vec::new();
    for ((response, leadership), entry) in
        responses.iter_mut().zip(&served).zip(&request.partitions)
    {
        let Some(leadership) = leadership else {
            continue;
        };
        let log = &leadership.log;
        response.high_watermark = log.high_watermark();
        response.log_start_offset = log.log_start_offset();
        response.last_stable_offset = log.log_end_offset();
        let max = (entry.partition_max_bytes as usize).min(budget);
        if max == 0 || entry.fetch_offset >= log.log_end_offset() {
            if entry.fetch_offset > log.log_end_offset() {
                response.error = ErrorCode::OffsetOutOfRange;
            }
            continue;
        }
        match log.read(entry.fetch_offset, max, u64::MAX).await {
            Ok(read) => {
                for chunk in read.chunks {
                    let bytes = match chunk {
                        ReadChunk::Memory(bytes) => bytes,
                        ReadChunk::Disk(read) => Bytes::copy_from_slice(&read),
                    };
                    response.batch_bytes += bytes.len() as u32;
                    budget = budget.saturating_sub(bytes.len());
                    trailer.push(bytes);
                }
            }
            Err(crate::log::ReadError::OffsetOutOfRange { .. }) => {
                response.error = ErrorCode::OffsetOutOfRange;
            }
            Err(error) => {
                tracing::warn!(topic = %entry.topic, partition = entry.partition, %error, "a replica fetch read failed");
                response.error = ErrorCode::StorageError;
            }
        }
    }
    (
        ReplicaFetchResponse {
            partitions: responses,
        },
        trailer,
    )
}

/// Answers a follower's leader-epoch queries on this (the owning) shard: where the
/// follower's last epoch ends here.
pub fn answer_epochs(
    context: &ShardContext,
    request: OffsetsForLeaderEpochRequest,
) -> OffsetsForLeaderEpochResponse {
    let catalog = context.catalog();
    let partitions = request
        .partitions
        .into_iter()
        .map(|query| {
            let leadership = catalog
                .topic(&query.topic)
                .filter(|t| query.partition < t.partitions)
                .and_then(|t| {
                    context
                        .replication
                        .leadership((t.topic_id, query.partition))
                });
            let error = match &leadership {
                None => ErrorCode::NotLeaderOrFollower,
                Some(l) if query.leader_epoch < l.epoch => ErrorCode::FencedLeaderEpoch,
                Some(l) if query.leader_epoch > l.epoch => ErrorCode::UnknownLeaderEpoch,
                Some(l) if !l.replicas().contains(&request.replica) => {
                    ErrorCode::NotLeaderOrFollower
                }
                Some(_) => ErrorCode::None,
            };
            let (epoch, end_offset) = match (&leadership, error) {
                (Some(l), ErrorCode::None) => l.log.end_of_epoch(query.epoch),
                _ => (None, 0),
            };
            EpochAnswer {
                topic: query.topic,
                partition: query.partition,
                error,
                epoch,
                end_offset,
            }
        })
        .collect();
    OffsetsForLeaderEpochResponse { partitions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::TopicConfig;
    use crate::log::{LogConfig, LogShard};

    fn state(in_sync: &[u32]) -> PartitionState {
        PartitionState {
            replicas: vec![1, 0, 2],
            leader: Some(1),
            leader_epoch: 3,
            in_sync: in_sync.to_vec(),
            eligible: Vec::new(),
            target: None,
        }
    }

    fn with_leadership(check: impl FnOnce(Leadership, Arc<TopicSpec>) + Send + 'static) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let log = LogShard::new(Default::default())
                    .open_partition(&path, LogConfig::default())
                    .await
                    .unwrap();
                let topic = Arc::new(TopicSpec {
                    name: "t".into(),
                    topic_id: 1,
                    partitions: 1,
                    config: TopicConfig {
                        min_insync_replicas: 2,
                        ..TopicConfig::default()
                    },
                    created_ms: 0,
                    placement: vec![state(&[1, 2])],
                });
                let leadership = Leadership::new(topic.clone(), 0, 1, &state(&[1, 2]), log);
                check(leadership, topic);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Leader 1 with {1, 2} in sync, broker 2 at 10 and broker 0 (catching up) at 4, asks
    /// for {0, 1, 2}: from then on broker 0's 4 bounds the high watermark.
    fn asked_to_add_broker_0(leadership: &Leadership) {
        leadership.fetched(2, 10, 10);
        leadership.fetched(0, 4, 4);
        leadership.recompute_high_watermark();
        assert_eq!(leadership.log.high_watermark_cap(), Some(10));
        leadership.change_in_flight.set(true);
        *leadership.pending.borrow_mut() = Some(PendingChange {
            in_sync: vec![0, 1, 2],
            done_at: None,
        });
        leadership.fetched(2, 12, 12);
        assert_eq!(
            leadership.log.high_watermark_cap(),
            Some(4),
            "broker 0 counts"
        );
    }

    /// A replica joining the in-sync set counts toward the high watermark from the moment
    /// the leader asks, until a catalogue shows the controller's decision: a catalogue of
    /// some other change in between must not drop it (the controller may already count the
    /// replica and elect it).
    #[test]
    fn a_pending_join_counts_until_the_controller_decides() {
        with_leadership(|leadership, topic| {
            asked_to_add_broker_0(&leadership);
            // A catalogue of another change (same in-sync set) keeps the request.
            leadership.update(&topic, &state(&[1, 2]), 7);
            leadership.fetched(2, 14, 14);
            assert_eq!(
                leadership.log.high_watermark_cap(),
                Some(4),
                "still pending"
            );
            assert!(!leadership.may_ask());
            // The controller's decision arrives: the request is settled.
            leadership.update(&topic, &state(&[0, 1, 2]), 8);
            assert!(leadership.pending.borrow().is_none());
            leadership.fetched(0, 14, 14);
            assert_eq!(leadership.log.high_watermark_cap(), Some(14));
        });
    }

    /// The controller may remove a replica itself (a fenced follower) while the leader's
    /// join is on its way: that catalogue does not settle the join, which the controller
    /// may still commit. Only a catalogue at or past the index the controller answered the
    /// join done at does, whatever it shows.
    #[test]
    fn a_join_is_settled_by_the_catalogue_past_its_answer_not_by_another_change() {
        with_leadership(|leadership, topic| {
            asked_to_add_broker_0(&leadership);
            // The controller fences broker 2: {1} alone, the join still unanswered.
            leadership.update(&topic, &state(&[1]), 9);
            assert!(
                leadership.pending.borrow().is_some(),
                "not settled by a removal"
            );
            // The answer: done at index 11; a catalogue at 10 does not settle it...
            leadership.change_done(11);
            leadership.update(&topic, &state(&[1]), 10);
            assert!(leadership.pending.borrow().is_some());
            // ...the one at 11 does, even if it shows another set (broker 0 since fenced).
            leadership.update(&topic, &state(&[1]), 11);
            assert!(leadership.pending.borrow().is_none());
        });
    }

    /// An answer that arrives after the catalogue showing it settles the join at once; a
    /// final refusal drops it; an unclear answer (none) keeps it counted.
    #[test]
    fn a_join_answered_late_or_refused_is_settled_and_an_unanswered_one_is_not() {
        with_leadership(|leadership, topic| {
            asked_to_add_broker_0(&leadership);
            leadership.update(&topic, &state(&[1, 2]), 20);
            leadership.change_done(20);
            assert!(leadership.pending.borrow().is_none(), "already shown");
            leadership.change_in_flight.set(false);
            asked_to_add_broker_0(&leadership);
            leadership.change_refused();
            assert!(leadership.pending.borrow().is_none());
            leadership.change_in_flight.set(false);
            asked_to_add_broker_0(&leadership);
            // No answer at all: many catalogues later, still counted.
            for applied in 21..30 {
                leadership.update(&topic, &state(&[1, 2]), applied);
            }
            leadership.fetched(2, 30, 30);
            assert_eq!(leadership.log.high_watermark_cap(), Some(4));
        });
    }
}
