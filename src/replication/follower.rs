//! The follower's side: one replica-fetch session per (leader broker, leader shard), run
//! by the shard that owns the followed replicas.
//!
//! A session keeps at most one data fetch in flight (a long poll for everything it follows
//! from that shard) and at most one progress report (a fetch that asks for no bytes and
//! does not wait, sent when what it holds durably has grown since it last told the
//! leader, on a second connection so that it never queues behind the long poll). The leader moves the high watermark on either. Batches are validated (checksum)
//! and appended exactly as received; a batch already held is skipped, and one that does not
//! start where the log ends stops that partition's share (the next fetch asks again).
//! Memory is bounded by one fetch's `REPLICA_FETCH_BYTES_MAX`, and the appends' own
//! backpressure (pending bytes per partition) holds the next fetch back.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::client::connection::Connection;
use crate::cluster::{Catalog, TopicSpec};
use crate::constants::{
    REPLICA_FETCH_BACKOFF_MS, REPLICA_FETCH_BYTES_MAX, REPLICA_FETCH_PARTITION_BYTES_MAX,
    REPLICA_FETCH_WAIT_MS,
};
use crate::log::epochs::follower_cut;
use crate::log::PartitionLog;
use crate::protocol::{
    DecodedResponse, EpochQuery, ErrorCode, OffsetsForLeaderEpochRequest, ReplicaFetchPartition,
    ReplicaFetchRequest, Request, Response,
};
use crate::record::header::{peek_batch_length, BatchHeader};
use crate::record::validate;
use crate::server::context::ShardContext;
use crate::server::partitions::PartitionKey;

/// A followed partition.
struct Followed {
    topic: Arc<TopicSpec>,
    partition: u32,
    epoch: u32,
    log: PartitionLog,
    /// Not asked for again before this (after an error).
    backoff_until: Option<Instant>,
    /// Its divergent suffix (if any) is cut: batches may be fetched.
    reconciled: bool,
}

/// One session: the partitions followed from one leader shard.
pub struct Session {
    leader: u32,
    shard: usize,
    address: SocketAddr,
    partitions: RefCell<HashMap<PartitionKey, Followed>>,
    closed: Cell<bool>,
    /// TLS to the leader, when the brokers use it.
    tls: Option<crate::tls::ClientTls>,
}

/// Follows `partition` of `topic` from `leader` at `epoch`.
pub fn follow(
    context: &ShardContext,
    catalog: &Catalog,
    topic: &Arc<TopicSpec>,
    partition: u32,
    leader: u32,
    epoch: u32,
    log: PartitionLog,
) {
    let shard = super::owning_shard(catalog, leader, &topic.name, partition);
    let key = (topic.topic_id, partition);
    let followed = Followed {
        topic: topic.clone(),
        partition,
        epoch,
        log,
        backoff_until: None,
        reconciled: false,
    };
    let existing = context
        .replication
        .sessions
        .borrow()
        .get(&(leader, shard))
        .cloned();
    if let Some(session) = existing {
        session.partitions.borrow_mut().insert(key, followed);
        return;
    }
    let Some(address) = leader_address(catalog, leader, shard) else {
        tracing::warn!(
            leader,
            "the leader's address is not known yet: following later"
        );
        return;
    };
    let session = Rc::new(Session {
        leader,
        shard,
        address,
        partitions: RefCell::new(HashMap::from([(key, followed)])),
        closed: Cell::new(false),
        tls: context.client_tls().cloned(),
    });
    context
        .replication
        .sessions
        .borrow_mut()
        .insert((leader, shard), session.clone());
    tracing::info!(leader, shard, %address, "replica-fetch session started");
    glommio::spawn_local(run(
        session,
        context.broker_id(),
        address,
        context.shutdown_requested.clone(),
    ))
    .detach();
}

/// Stops following a partition (its session ends with its last partition).
pub fn unfollow(context: &ShardContext, key: PartitionKey) {
    let mut sessions = context.replication.sessions.borrow_mut();
    let mut emptied = Vec::new();
    for (id, session) in sessions.iter() {
        let mut partitions = session.partitions.borrow_mut();
        if partitions.remove(&key).is_some() && partitions.is_empty() {
            session.closed.set(true);
            emptied.push(*id);
        }
    }
    for id in emptied {
        sessions.remove(&id);
    }
}

/// Ends the sessions whose leader moved to another address (it restarted elsewhere) and
/// returns the partitions they followed, to be followed again.
pub fn readdress(context: &ShardContext, catalog: &Catalog) -> Vec<PartitionKey> {
    let mut sessions = context.replication.sessions.borrow_mut();
    let moved: Vec<(u32, usize)> = sessions
        .iter()
        .filter(|(_, s)| leader_address(catalog, s.leader, s.shard).is_some_and(|a| a != s.address))
        .map(|(id, _)| *id)
        .collect();
    let mut keys = Vec::new();
    for id in moved {
        if let Some(session) = sessions.remove(&id) {
            tracing::info!(leader = session.leader, old = %session.address, "the leader moved: following it at its new address");
            session.closed.set(true);
            keys.extend(session.partitions.borrow().keys().copied());
        }
    }
    keys
}

fn leader_address(catalog: &Catalog, leader: u32, shard: usize) -> Option<SocketAddr> {
    let broker = catalog.broker(leader)?;
    let port = broker
        .shard_ports
        .get(shard)
        .copied()
        .unwrap_or(broker.port);
    (broker.host.as_str(), port).to_socket_addrs().ok()?.next()
}

/// A fetched partition and the epoch it was fetched at.
type Fetched = (PartitionKey, u32);

type Pending = LocalBoxFuture<'static, (bool, Vec<Fetched>, Result<DecodedResponse, String>)>;

/// Builds a fetch of every partition not backing off; `report` asks for no bytes and no
/// wait (a progress report).
fn fetch(
    session: &Session,
    connection: &Connection,
    me: u32,
    report: bool,
    reported: &mut HashMap<PartitionKey, u64>,
) -> Option<Pending> {
    let now = Instant::now();
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    for (key, followed) in session.partitions.borrow().iter() {
        if !followed.reconciled || followed.backoff_until.is_some_and(|until| until > now) {
            continue;
        }
        let durable = followed.log.durable_offset();
        reported.insert(*key, durable);
        keys.push((*key, followed.epoch));
        entries.push(ReplicaFetchPartition {
            topic: followed.topic.name.clone(),
            partition: followed.partition,
            leader_epoch: followed.epoch,
            fetch_offset: followed.log.log_end_offset(),
            durable_offset: durable,
            partition_max_bytes: if report {
                0
            } else {
                REPLICA_FETCH_PARTITION_BYTES_MAX
            },
        });
    }
    if entries.is_empty() {
        return None;
    }
    let request = Request::ReplicaFetch(ReplicaFetchRequest {
        replica: me,
        max_wait_ms: if report { 0 } else { REPLICA_FETCH_WAIT_MS },
        max_bytes: if report { 0 } else { REPLICA_FETCH_BYTES_MAX },
        partitions: entries,
    });
    let connection = connection.clone();
    Some(
        async move {
            let answer = connection
                .request_within(&request, &[], answer_timeout())
                .await
                .map_err(|e| e.to_string());
            (report, keys, answer)
        }
        .boxed_local(),
    )
}

/// How long a leader may take to answer a follower (its long poll, and a margin): past
/// it the leader is not answering (paused, cut off) and the connection is given up.
fn answer_timeout() -> Duration {
    Duration::from_millis(
        u64::from(REPLICA_FETCH_WAIT_MS) + crate::constants::CLIENT_ANSWER_MARGIN_MS,
    )
}

/// Resolves when some followed partition holds more durably than it last reported.
async fn durable_progress(session: &Session, reported: &HashMap<PartitionKey, u64>) {
    let waits: Vec<_> = session
        .partitions
        .borrow()
        .iter()
        // Partitions not fetched yet (reconciling, backing off) have nothing to report.
        .filter(|(key, followed)| followed.reconciled && reported.contains_key(key))
        .map(|(key, followed)| {
            let log = followed.log.clone();
            let from = reported.get(key).copied().unwrap_or(0);
            async move {
                if log.wait_durable(from).await.is_err() {
                    // Truncated or closed under us: report, but not in a tight loop.
                    glommio::timer::sleep(Duration::from_millis(REPLICA_FETCH_BACKOFF_MS)).await;
                }
            }
            .boxed_local()
        })
        .collect();
    if waits.is_empty() {
        std::future::pending::<()>().await;
    }
    futures::future::select_all(waits).await;
}

async fn run(session: Rc<Session>, me: u32, address: SocketAddr, shutdown: Arc<AtomicBool>) {
    let backoff = Duration::from_millis(REPLICA_FETCH_BACKOFF_MS);
    let mut connection: Option<Connection> = None;
    // Progress reports go on a connection of their own: a broker answers a connection's
    // requests in order, and a report queued behind the data long poll would wait for it.
    let mut report_connection: Option<Connection> = None;
    let mut data: Option<Pending> = None;
    let mut report: Option<Pending> = None;
    let mut reported: HashMap<PartitionKey, u64> = HashMap::new();
    let mut warned = false;
    while !session.closed.get() && !shutdown.load(Ordering::Relaxed) {
        let live = match &connection {
            Some(c) if !c.is_broken() => c.clone(),
            _ => {
                data = None;
                report = None;
                report_connection = None;
                match Connection::connect(address, &format!("replica-{me}"), session.tls.as_ref())
                    .await
                {
                    Ok(c) => {
                        if warned {
                            tracing::info!(leader = session.leader, %address, "leader reachable again");
                        }
                        warned = false;
                        connection = Some(c.clone());
                        c
                    }
                    Err(error) => {
                        if !warned {
                            tracing::warn!(leader = session.leader, %address, %error, "cannot reach the leader");
                            warned = true;
                        }
                        glommio::timer::sleep(backoff).await;
                        continue;
                    }
                }
            }
        };
        if let Err(error) = reconcile(&session, address, me).await {
            tracing::debug!(leader = session.leader, %error, "leader epochs not reconciled");
            glommio::timer::sleep(backoff).await;
            continue;
        }
        if data.is_none() {
            data = fetch(&session, &live, me, false, &mut reported);
            if data.is_none() {
                // Everything backs off (or nothing is followed yet).
                glommio::timer::sleep(backoff).await;
                continue;
            }
        }
        enum Event {
            Answer((bool, Vec<Fetched>, Result<DecodedResponse, String>)),
            Progress,
        }
        let reporting = report.is_some();
        let event = {
            let data_future = data.as_mut().expect("set above");
            let answer = async {
                match report.as_mut() {
                    Some(report_future) => {
                        futures_lite::future::or(data_future, report_future).await
                    }
                    None => data_future.await,
                }
            };
            if !reporting {
                futures_lite::future::or(answer.map(Event::Answer), async {
                    durable_progress(&session, &reported).await;
                    Event::Progress
                })
                .await
            } else {
                Event::Answer(answer.await)
            }
        };
        match event {
            Event::Progress => {
                let reporter = match &report_connection {
                    Some(c) if !c.is_broken() => Some(c.clone()),
                    _ => Connection::connect(
                        address,
                        &format!("replica-report-{me}"),
                        session.tls.as_ref(),
                    )
                    .await
                    .ok(),
                };
                report_connection = reporter.clone();
                let reporter = reporter.unwrap_or_else(|| live.clone());
                report = fetch(&session, &reporter, me, true, &mut reported);
            }
            Event::Answer((was_report, keys, answer)) => {
                if was_report {
                    report = None;
                } else {
                    data = None;
                }
                match answer {
                    Ok(response) => apply(&session, &keys, &response).await,
                    Err(error) => {
                        tracing::debug!(leader = session.leader, %error, "replica fetch failed");
                        connection = None;
                        glommio::timer::sleep(backoff).await;
                    }
                }
            }
        }
    }
    tracing::debug!(
        leader = session.leader,
        shard = session.shard,
        "replica-fetch session ended"
    );
}

/// Appends what a response brought and takes the leader's high watermark.
async fn apply(session: &Session, keys: &[Fetched], response: &DecodedResponse) {
    let Some(partitions) = response.fetch_partitions() else {
        tracing::warn!(
            leader = session.leader,
            "a replica fetch answered with another api"
        );
        return;
    };
    for (index, (entry, batches)) in partitions.enumerate() {
        let Some((key, fetched_at)) = keys.get(index).copied() else {
            break;
        };
        // Only for the same following (a partition followed anew since must reconcile
        // before it takes batches).
        let followed = session
            .partitions
            .borrow()
            .get(&key)
            .filter(|f| f.reconciled && f.epoch == fetched_at)
            .map(|f| (f.log.clone(), f.topic.name.clone(), f.partition));
        let Some((log, topic, partition)) = followed else {
            continue;
        };
        match entry.error {
            ErrorCode::None => {}
            ErrorCode::OffsetOutOfRange => {
                let leader_end = entry.last_stable_offset;
                let leader_start = entry.log_start_offset;
                if log.log_end_offset() > leader_end && leader_end >= log.log_start_offset() {
                    tracing::warn!(%topic, partition, ours = log.log_end_offset(), leader_end, "this replica is ahead of its leader: truncating");
                    let _ = log.truncate_following(leader_end, fetched_at).await;
                } else if log.log_end_offset() < leader_start && leader_start <= leader_end {
                    // What this replica would fetch next is gone from the leader (retention
                    // deleted it): start again where the leader's log starts.
                    tracing::warn!(%topic, partition, ours = log.log_end_offset(), leader_start, "this replica ends before its leader's log starts: starting again there");
                    if let Err(error) = log.reset_following(leader_start, fetched_at).await {
                        tracing::warn!(%topic, partition, %error, "the replica could not start again");
                        back_off(session, key);
                    }
                } else {
                    back_off(session, key);
                }
                continue;
            }
            error => {
                tracing::debug!(%topic, partition, %error, "the leader refused a partition");
                back_off(session, key);
                continue;
            }
        }
        if let Err(reason) = append_all(&log, batches, fetched_at).await {
            tracing::warn!(%topic, partition, %reason, "replicated batches not appended");
            back_off(session, key);
        }
        log.set_high_watermark_cap(Some(entry.high_watermark));
    }
}

/// Cuts the divergent suffix of every partition followed anew: asks the leader where each
/// one's last epoch ends there and cuts (`crate::log::epochs::follower_cut`), again until
/// the epochs agree. A partition the leader refuses backs off and is asked again later.
async fn reconcile(session: &Session, address: SocketAddr, me: u32) -> Result<(), String> {
    let mut connection: Option<Connection> = None;
    for _ in 0..crate::constants::RECONCILE_ROUNDS_MAX {
        let now = Instant::now();
        let pending: Vec<(PartitionKey, EpochQuery, PartitionLog)> = {
            let mut partitions = session.partitions.borrow_mut();
            let mut pending = Vec::new();
            for (key, followed) in partitions.iter_mut() {
                if followed.reconciled || followed.backoff_until.is_some_and(|u| u > now) {
                    continue;
                }
                match followed.log.last_epoch() {
                    // An empty log shares everything it holds.
                    None => followed.reconciled = true,
                    Some(epoch) => pending.push((
                        *key,
                        EpochQuery {
                            topic: followed.topic.name.clone(),
                            partition: followed.partition,
                            leader_epoch: followed.epoch,
                            epoch,
                        },
                        followed.log.clone(),
                    )),
                }
            }
            pending
        };
        if pending.is_empty() {
            return Ok(());
        }
        let live = match &connection {
            Some(c) => c.clone(),
            None => {
                let c = Connection::connect(
                    address,
                    &format!("replica-epochs-{me}"),
                    session.tls.as_ref(),
                )
                .await
                .map_err(|e| e.to_string())?;
                connection = Some(c.clone());
                c
            }
        };
        let request = Request::OffsetsForLeaderEpoch(OffsetsForLeaderEpochRequest {
            replica: me,
            partitions: pending.iter().map(|(_, q, _)| q.clone()).collect(),
        });
        let answer = live
            .request_within(&request, &[], answer_timeout())
            .await
            .map_err(|e| e.to_string())?;
        let Response::OffsetsForLeaderEpoch(answer) = answer.response else {
            return Err("the leader answered epochs with another api".into());
        };
        for ((key, query, log), answer) in pending.into_iter().zip(answer.partitions) {
            let answers_it = answer.topic == query.topic && answer.partition == query.partition;
            // The leader's epoch at or below ours: one above it is no answer.
            let sane = answer.epoch.is_none_or(|epoch| epoch <= query.epoch);
            if !answers_it || !sane {
                tracing::warn!(topic = %query.topic, partition = query.partition, ?answer, "an unusable epoch answer");
                back_off(session, key);
                continue;
            }
            let still = session
                .partitions
                .borrow()
                .get(&key)
                .is_some_and(|f| !f.reconciled && f.epoch == query.leader_epoch);
            if !still {
                continue;
            }
            if answer.error != ErrorCode::None {
                tracing::debug!(topic = %query.topic, partition = query.partition, error = %answer.error, "the leader refused an epoch query");
                back_off(session, key);
                continue;
            }
            let end = log.log_end_offset();
            let (cut, done) = follower_cut(&log.epochs(), end, (answer.epoch, answer.end_offset));
            let cut = cut.max(log.log_start_offset());
            if cut < end {
                tracing::info!(topic = %query.topic, partition = query.partition, from = end, to = cut, our_epoch = query.epoch, leader_epoch = ?answer.epoch, "cutting the suffix that diverges from the leader");
                if let Err(error) = log.truncate_following(cut, query.leader_epoch).await {
                    tracing::error!(topic = %query.topic, partition = query.partition, %error, "truncation failed");
                    back_off(session, key);
                    continue;
                }
            }
            if done || log.last_epoch().is_none() {
                if let Some(followed) = session.partitions.borrow_mut().get_mut(&key) {
                    followed.reconciled = true;
                }
            }
        }
    }
    // Each round cuts at least one epoch off, so this many rounds mean something is off:
    // whatever is still unreconciled backs off and starts again later.
    let stuck: Vec<PartitionKey> = session
        .partitions
        .borrow()
        .iter()
        .filter(|(_, f)| !f.reconciled)
        .map(|(key, _)| *key)
        .collect();
    for key in stuck {
        back_off(session, key);
    }
    Ok(())
}

fn back_off(session: &Session, key: PartitionKey) {
    if let Some(followed) = session.partitions.borrow_mut().get_mut(&key) {
        followed.backoff_until =
            Some(Instant::now() + Duration::from_millis(REPLICA_FETCH_BACKOFF_MS));
    }
}

/// Appends a share of batches as received: skips those held, stops at a gap.
async fn append_all(log: &PartitionLog, batches: &Bytes, epoch: u32) -> Result<(), String> {
    let mut rest = batches.clone();
    while !rest.is_empty() {
        let length = peek_batch_length(&rest)
            .map(|l| l as usize)
            .filter(|&l| l > 0 && l <= rest.len())
            .ok_or("a batch length runs past the share")?;
        let one = rest.split_to(length);
        let header = BatchHeader::decode(&one).ok_or("an undecodable batch header")?;
        let last = header.base_offset + u64::from(header.last_offset_delta);
        let end = log.log_end_offset();
        if last < end {
            continue;
        }
        if header.base_offset != end {
            if header.base_offset < end {
                // Our batches and the leader's do not line up: ours past this point are
                // not the leader's. Cut them and fetch again.
                tracing::warn!(dir = %log.dir().display(), leader_base = header.base_offset, ours = end, "diverged from the leader: truncating");
                log.truncate_following(header.base_offset, epoch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let batch = validate(BytesMut::from(&one[..])).map_err(|e| e.to_string())?;
        log.append_replicated(batch, epoch)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
