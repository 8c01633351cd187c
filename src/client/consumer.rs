//! The consumer: tracks a position per assigned partition, fetches from the shard that
//! owns each partition (one fetch per connection, all connections at once, each on a fetch
//! session so that a request lists only partitions whose position changed and an answer
//! only partitions with news), fetches the next round ahead while the caller processes
//! this one, and hands out records that point into the fetched buffers (no copy for
//! uncompressed batches).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::admin::Admin;
use super::cluster::Cluster;
use super::connection::Connection;
use super::error::ClientError;
use crate::protocol::{
    next_session_epoch, ApiKey, ErrorCode, FetchPartition, FetchPartitionResponse, FetchRequest,
    ForgottenPartition, IsolationLevel, OffsetSpec, Request, Response, SESSIONLESS_EPOCH,
};
use crate::record::reader::records_checked;
use crate::record::{BatchError, BatchHeader, BatchIter, RecordView};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(u64),
    /// The first batch at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// How a consumer fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch that has less than `min_bytes`.
    pub max_wait: Duration,
    /// The broker answers a fetch once this many bytes of batches are there (over all its
    /// partitions), or at the end of `max_wait`. Counted per request: a consumer sends one
    /// fetch per broker connection, so a shard-aware one counts per shard. 1 (the default)
    /// answers as soon as anything is there; more gives fewer, larger fetches, for less CPU
    /// per message on both sides, at up to `max_wait` of latency.
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub partition_max_bytes: u32,
    /// Keep the next fetch in flight while the caller processes the current one.
    pub fetch_ahead: bool,
    /// Where to go when a position falls outside the log (retention deleted it).
    pub reset_to: StartFrom,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 16 * 1024 * 1024,
            partition_max_bytes: 2 * 1024 * 1024,
            fetch_ahead: true,
            reset_to: StartFrom::Earliest,
        }
    }
}

/// One partition's share of a fetch: whole batches, starting at or before `position`.
///
/// Every batch's header and checksum are checked once, when the answer arrives; reading the
/// records (`Fetched::for_each`) checks each body and does not checksum the batch again.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: u32,
    /// The first offset the consumer asked for (earlier records in the batches are skipped).
    pub position: u64,
    pub high_watermark: u64,
    /// The fetched bytes: the checked batches, then whatever followed them (a partial batch
    /// cut by the fetch's size limit, or the batch that failed its check and what follows).
    batches: Bytes,
    /// The header of each checked batch, in order from the start of `batches`.
    checked: Vec<BatchHeader>,
    /// Why the batch after the checked ones was refused, if one was.
    failure: Option<BatchError>,
}

impl FetchedPartition {
    fn new(
        topic: String,
        partition: u32,
        position: u64,
        high_watermark: u64,
        batches: Bytes,
    ) -> FetchedPartition {
        let mut checked = Vec::new();
        let mut failure = None;
        for item in BatchIter::new(&batches) {
            match item {
                Ok((header, _)) => checked.push(header),
                Err(error) => failure = Some(error),
            }
        }
        FetchedPartition {
            topic,
            partition,
            position,
            high_watermark,
            batches,
            checked,
            failure,
        }
    }

    /// The bytes the broker returned for this partition.
    pub fn batches(&self) -> &Bytes {
        &self.batches
    }

    /// The offset after the last checked batch (`position` when there is none).
    fn next_position(&self) -> u64 {
        self.checked
            .iter()
            .map(BatchHeader::next_offset)
            .fold(self.position, u64::max)
    }
}

/// What one poll returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub partitions: Vec<FetchedPartition>,
}

impl Fetched {
    pub fn is_empty(&self) -> bool {
        self.partitions.iter().all(|p| p.batches.is_empty())
    }

    /// Calls `each` for every record at or past its partition's position, in offset order
    /// per partition. Keys and values borrow the fetched buffers.
    pub fn for_each(
        &self,
        mut each: impl FnMut(&str, u32, RecordView<'_>),
    ) -> Result<usize, ClientError> {
        let mut count = 0;
        let mut scratch = Vec::new();
        for part in &self.partitions {
            let mut start = 0;
            for header in &part.checked {
                let end = start + header.batch_length as usize;
                let batch_records =
                    records_checked(header, &part.batches[start..end], &mut scratch)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                start = end;
                for record in batch_records.iter().filter(|r| r.offset >= part.position) {
                    each(&part.topic, part.partition, record);
                    count += 1;
                }
            }
            if let Some(error) = &part.failure {
                return Err(ClientError::Protocol(format!(
                    "fetched a bad batch: {error}"
                )));
            }
        }
        Ok(count)
    }
}

type Positions = BTreeMap<(String, u32), u64>;

/// A fetch round in flight.
type Round = glommio::Task<Result<Fetched, ClientError>>;

/// What one round fetches from one broker: each partition's key and wish, in key order.
type AddressWants<'a> = Vec<(&'a (String, u32), Wanted)>;

/// A consumer of assigned partitions. Runs on a glommio executor.
pub struct Consumer {
    cluster: Rc<Cluster>,
    config: ConsumerConfig,
    /// Shared with the round fetched ahead (changed copy-on-write).
    positions: Rc<Positions>,
    ahead: Option<(Rc<Positions>, Round)>,
    /// Counts fetch rounds, to rotate the order of partitions in requests.
    rounds: usize,
    /// One fetch session per broker connection.
    sessions: Sessions,
}

/// The consumer's half of a fetch session with one broker connection (see
/// `protocol::messages::fetch`).
#[derive(Debug)]
enum Session {
    /// The next request on it is incremental.
    Open {
        connection: u64,
        id: u32,
        /// The epoch the next request carries.
        epoch: u32,
        /// What the broker's session holds for each partition, in key order.
        known: Vec<((String, u32), Wanted)>,
    },
    /// A request on it failed, was answered with an error, or was abandoned (its round was
    /// dropped): the next request closes it and opens another.
    Stale { connection: u64, id: u32 },
}

/// What a fetch asks of one partition, as a session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    offset: u64,
    max_bytes: u32,
    leader_epoch: u32,
}

/// Fetch sessions by broker address.
type Sessions = Rc<RefCell<HashMap<SocketAddr, Session>>>;

fn fetch_partition(key: &(String, u32), wanted: Wanted) -> FetchPartition {
    FetchPartition {
        topic: key.0.clone(),
        partition: key.1,
        fetch_offset: wanted.offset,
        partition_max_bytes: wanted.max_bytes,
        leader_epoch: Some(wanted.leader_epoch),
    }
}

/// One fetch per connection for every assigned partition, on a fetch session where the
/// broker speaks them (then a request lists only what changed since the last one, and the
/// answer only partitions with news). A full request lists its partitions starting
/// `rotation` places further along, so that when a response's byte budget leaves some
/// partitions out, it is not always the same ones (on a session the broker rotates).
async fn fetch_round(
    cluster: Rc<Cluster>,
    config: ConsumerConfig,
    sessions: Sessions,
    positions: Rc<Positions>,
    rotation: usize,
) -> Result<Fetched, ClientError> {
    let mut per_address: BTreeMap<SocketAddr, AddressWants<'_>> = BTreeMap::new();
    for (key, &offset) in positions.iter() {
        let (address, epoch) = cluster.leader_for(&key.0, key.1).await?;
        per_address.entry(address).or_default().push((
            key,
            Wanted {
                offset,
                max_bytes: config.partition_max_bytes,
                leader_epoch: epoch,
            },
        ));
    }
    let requests = per_address.into_iter().map(|(address, wanted)| {
        let cluster = cluster.clone();
        let (config, sessions) = (&config, &sessions);
        async move {
            let connection = cluster.connection(address).await?;
            fetch_from(&connection, config, sessions, &wanted, rotation).await
        }
    });
    let mut fetched = Fetched::default();
    for answer in futures::future::join_all(requests).await {
        for (entry, batches) in answer? {
            if entry.error != ErrorCode::None {
                return Err(ClientError::from_code(
                    entry.error,
                    format!("{}/{}", entry.topic, entry.partition),
                ));
            }
            let Some(&position) = positions.get(&(entry.topic.clone(), entry.partition)) else {
                return Err(ClientError::Protocol(format!(
                    "a fetch answered {}/{}, which it did not ask for",
                    entry.topic, entry.partition
                )));
            };
            fetched.partitions.push(FetchedPartition::new(
                entry.topic,
                entry.partition,
                position,
                entry.high_watermark,
                batches,
            ));
        }
    }
    Ok(fetched)
}

/// Whether the session holds exactly the wanted partitions (both in key order).
fn same_keys(held: &[((String, u32), Wanted)], wanted: &[(&(String, u32), Wanted)]) -> bool {
    held.len() == wanted.len()
        && held
            .iter()
            .zip(wanted)
            .all(|(held, wanted)| held.0 == *wanted.0)
}

/// An incremental request's partitions (new to the session or changed) and forgotten
/// partitions, from what the session holds and what is wanted (both in key order).
fn session_changes(
    held: &[((String, u32), Wanted)],
    wanted: &[(&(String, u32), Wanted)],
    same_keys: bool,
) -> (Vec<FetchPartition>, Vec<ForgottenPartition>) {
    if same_keys {
        // The usual case: the same partitions, some of them moved on.
        let changed = held
            .iter()
            .zip(wanted)
            .filter(|(held, wanted)| held.1 != wanted.1)
            .map(|(_, (key, want))| fetch_partition(key, *want))
            .collect();
        return (changed, Vec::new());
    }
    let (mut changed, mut forgotten) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (0, 0);
    while h < held.len() || w < wanted.len() {
        match (held.get(h), wanted.get(w)) {
            (Some(held_entry), Some((key, want))) if held_entry.0 == **key => {
                if held_entry.1 != *want {
                    changed.push(fetch_partition(key, *want));
                }
                h += 1;
                w += 1;
            }
            (Some(held_entry), Some((key, _))) if held_entry.0 < **key => {
                forgotten.push(forget(&held_entry.0));
                h += 1;
            }
            (Some(held_entry), None) => {
                forgotten.push(forget(&held_entry.0));
                h += 1;
            }
            (_, Some((key, want))) => {
                changed.push(fetch_partition(key, *want));
                w += 1;
            }
            (None, None) => unreachable!("the loop runs while either has entries"),
        }
    }
    (changed, forgotten)
}

fn forget(key: &(String, u32)) -> ForgottenPartition {
    ForgottenPartition {
        topic: key.0.clone(),
        partition: key.1,
    }
}

/// One fetch from one broker connection: incremental on an open session, else full (and
/// opening a session when the broker speaks them). A session the broker no longer has, or
/// whose epoch it refuses, is dropped and the fetch is made again in full. `wanted` is in
/// key order; a full request lists it from `rotation` places along.
async fn fetch_from(
    connection: &Connection,
    config: &ConsumerConfig,
    sessions: &Sessions,
    wanted: &[(&(String, u32), Wanted)],
    rotation: usize,
) -> Result<Vec<(FetchPartitionResponse, Bytes)>, ClientError> {
    let address = connection.address();
    let speaks_sessions = connection.version(ApiKey::Fetch).is_some_and(|v| v >= 1);
    // A broker holds a fetch at most `max_wait`; past it (and a margin) it is not
    // answering at all.
    let timeout =
        config.max_wait + Duration::from_millis(crate::constants::CLIENT_ANSWER_MARGIN_MS);
    loop {
        let session = sessions.borrow_mut().remove(&address);
        let mut known = None;
        let mut request = FetchRequest {
            max_wait_ms: u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX),
            min_bytes: config.min_bytes,
            max_bytes: config.max_bytes,
            isolation: IsolationLevel::HighWatermark,
            partitions: Vec::new(),
            session_id: 0,
            session_epoch: SESSIONLESS_EPOCH,
            forgotten: Vec::new(),
        };
        match session {
            Some(Session::Open {
                connection: on,
                id,
                epoch,
                known: held,
            }) if on == connection.id() && speaks_sessions => {
                let same = same_keys(&held, wanted);
                (request.partitions, request.forgotten) = session_changes(&held, wanted, same);
                request.session_id = id;
                request.session_epoch = epoch;
                known = Some((held, same));
            }
            session => {
                request.session_id = match session {
                    Some(Session::Open {
                        connection: on, id, ..
                    })
                    | Some(Session::Stale { connection: on, id })
                        if on == connection.id() =>
                    {
                        id
                    }
                    _ => 0,
                };
                request.session_epoch = if speaks_sessions {
                    0
                } else {
                    SESSIONLESS_EPOCH
                };
                let start = rotation % wanted.len().max(1);
                let rotated = wanted[start..].iter().chain(&wanted[..start]);
                request.partitions = rotated
                    .map(|(key, want)| fetch_partition(key, *want))
                    .collect();
            }
        }
        if request.session_id != 0 {
            // Until an answer says otherwise, the session is in doubt.
            sessions.borrow_mut().insert(
                address,
                Session::Stale {
                    connection: connection.id(),
                    id: request.session_id,
                },
            );
        }
        let request = Request::Fetch(request);
        let response = connection.request_within(&request, &[], timeout).await?;
        let Request::Fetch(sent) = request else {
            unreachable!("built as a fetch")
        };
        let shares = response.partition_batches;
        let Response::Fetch(fetch) = response.response else {
            return Err(ClientError::Protocol(
                "fetch answered with another api".into(),
            ));
        };
        let incremental = known.is_some();
        match fetch.error {
            ErrorCode::None => {}
            ErrorCode::FetchSessionNotFound | ErrorCode::InvalidFetchSessionEpoch
                if incremental =>
            {
                // The broker dropped the session: start again in full.
                tracing::debug!(%address, error = %fetch.error, "fetch session lost");
                sessions.borrow_mut().remove(&address);
                continue;
            }
            error => {
                return Err(ClientError::from_code(
                    error,
                    format!("fetch from {address}"),
                ));
            }
        }
        if incremental && fetch.session_id != sent.session_id {
            return Err(ClientError::Protocol(format!(
                "an incremental fetch on session {} was answered for session {}",
                sent.session_id, fetch.session_id
            )));
        }
        let failed = fetch.partitions.iter().any(|p| p.error != ErrorCode::None);
        if fetch.session_id == 0 {
            sessions.borrow_mut().remove(&address);
        } else if !failed {
            // The broker's session now holds exactly what was wanted.
            let held = match known {
                Some((mut held, true)) => {
                    for (held, (_, want)) in held.iter_mut().zip(wanted) {
                        held.1 = *want;
                    }
                    held
                }
                _ => wanted
                    .iter()
                    .map(|(key, want)| ((*key).clone(), *want))
                    .collect(),
            };
            let epoch = if incremental {
                next_session_epoch(sent.session_epoch)
            } else {
                1
            };
            sessions.borrow_mut().insert(
                address,
                Session::Open {
                    connection: connection.id(),
                    id: fetch.session_id,
                    epoch,
                    known: held,
                },
            );
        } else {
            // A partition's error ends the round; the next one starts the session over.
            sessions.borrow_mut().insert(
                address,
                Session::Stale {
                    connection: connection.id(),
                    id: fetch.session_id,
                },
            );
        }
        return Ok(fetch.partitions.into_iter().zip(shares).collect());
    }
}

impl Consumer {
    pub fn new(cluster: Rc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            positions: Rc::new(BTreeMap::new()),
            ahead: None,
            rounds: 0,
            sessions: Sessions::default(),
        }
    }

    async fn resolve(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<u64, ClientError> {
        let admin = Admin::new(self.cluster.clone());
        match start {
            StartFrom::Offset(offset) => Ok(offset),
            StartFrom::Earliest => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await
            }
            StartFrom::Latest => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await
            }
            StartFrom::Timestamp(ms) => {
                admin
                    .list_offset(topic, partition, OffsetSpec::Timestamp(ms))
                    .await
            }
        }
    }

    /// Assigns partitions of a topic (all of them when `partitions` is `None`).
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: Option<Vec<u32>>,
        start: StartFrom,
    ) -> Result<(), ClientError> {
        let metadata = self.cluster.topic(topic).await?;
        let partitions =
            partitions.unwrap_or_else(|| metadata.partitions.iter().map(|p| p.partition).collect());
        for partition in partitions {
            let offset = self.resolve(topic, partition, start).await?;
            Rc::make_mut(&mut self.positions).insert((topic.to_string(), partition), offset);
        }
        self.ahead = None;
        Ok(())
    }

    /// Moves a partition's position (it must be assigned).
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: StartFrom,
    ) -> Result<(), ClientError> {
        let key = (topic.to_string(), partition);
        if !self.positions.contains_key(&key) {
            return Err(ClientError::InvalidInput(format!(
                "{topic}/{partition} is not assigned"
            )));
        }
        let offset = self.resolve(topic, partition, to).await?;
        Rc::make_mut(&mut self.positions).insert(key, offset);
        self.ahead = None;
        Ok(())
    }

    /// Stops consuming a partition (its position is forgotten).
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        let key = (topic.to_string(), partition);
        if self.positions.contains_key(&key) {
            Rc::make_mut(&mut self.positions).remove(&key);
            self.ahead = None;
        }
    }

    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// Fetches the next records of every assigned partition (waiting up to `max_wait` when
    /// there are none) and advances the positions past them.
    pub async fn poll(&mut self) -> Result<Fetched, ClientError> {
        if self.positions.is_empty() {
            return Ok(Fetched::default());
        }
        let fetched = match self.ahead.take() {
            // Whatever changes the positions besides a poll drops the round fetched ahead.
            Some((positions, task)) if Rc::ptr_eq(&positions, &self.positions) => {
                drop(positions);
                task.await
            }
            _ => {
                self.rounds += 1;
                fetch_round(
                    self.cluster.clone(),
                    self.config.clone(),
                    self.sessions.clone(),
                    self.positions.clone(),
                    self.rounds,
                )
                .await
            }
        };
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                message,
            }) => {
                // Some position fell outside its log: move every stale one and try again next poll.
                tracing::warn!(%message, "position out of range; resetting");
                let assigned: Vec<(String, u32)> = self.positions.keys().cloned().collect();
                let admin = Admin::new(self.cluster.clone());
                for (topic, partition) in assigned {
                    let start = admin
                        .list_offset(&topic, partition, OffsetSpec::Earliest)
                        .await?;
                    let end = admin
                        .list_offset(&topic, partition, OffsetSpec::Latest)
                        .await?;
                    let position = self.positions[&(topic.clone(), partition)];
                    if position < start || position > end {
                        let reset = self
                            .resolve(&topic, partition, self.config.reset_to)
                            .await?;
                        Rc::make_mut(&mut self.positions).insert((topic, partition), reset);
                    }
                }
                return Ok(Fetched::default());
            }
            Err(error) if error.is_retriable() => {
                // Leadership moved or a broker is away: learn where the partitions are now
                // and try again next poll.
                tracing::debug!(%error, "fetch failed; refreshing metadata");
                self.cluster.invalidate_metadata();
                glommio::timer::sleep(crate::constants::CONSUMER_RETRY_BACKOFF).await;
                return Ok(Fetched::default());
            }
            Err(error) => return Err(error),
        };
        for part in &fetched.partitions {
            let key = (part.topic.clone(), part.partition);
            let next = part.next_position();
            Rc::make_mut(&mut self.positions).insert(key, next);
        }
        if self.config.fetch_ahead {
            let positions = self.positions.clone();
            self.rounds += 1;
            let task = glommio::spawn_local(fetch_round(
                self.cluster.clone(),
                self.config.clone(),
                self.sessions.clone(),
                positions.clone(),
                self.rounds,
            ));
            self.ahead = Some((positions, task));
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(offset: u64) -> Wanted {
        Wanted {
            offset,
            max_bytes: 100,
            leader_epoch: 1,
        }
    }

    fn changes(
        held: &[((String, u32), Wanted)],
        wanted: &[(&(String, u32), Wanted)],
    ) -> (Vec<FetchPartition>, Vec<ForgottenPartition>) {
        session_changes(held, wanted, same_keys(held, wanted))
    }

    fn key(topic: &str, partition: u32) -> (String, u32) {
        (topic.to_string(), partition)
    }

    fn names(changed: &[FetchPartition]) -> Vec<(String, u32, u64)> {
        changed
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.fetch_offset))
            .collect()
    }

    #[test]
    fn a_session_request_lists_new_and_changed_partitions_and_forgets_the_rest() {
        let held = vec![
            (key("a", 0), want(5)),
            (key("a", 1), want(5)),
            (key("b", 0), want(5)),
        ];
        // The same partitions: only the moved one is listed.
        let keys = [key("a", 0), key("a", 1), key("b", 0)];
        let wanted: Vec<_> = keys
            .iter()
            .zip([5, 9, 5])
            .map(|(k, o)| (k, want(o)))
            .collect();
        let (changed, forgotten) = changes(&held, &wanted);
        assert_eq!(names(&changed), vec![("a".into(), 1, 9)]);
        assert!(forgotten.is_empty());
        // A partition gone (a/1), one new before the rest (a/0 stays, 0/0 new), one new
        // after (c/3), and one moved (b/0).
        let keys = [key("0", 0), key("a", 0), key("b", 0), key("c", 3)];
        let wanted: Vec<_> = keys
            .iter()
            .zip([0, 5, 7, 1])
            .map(|(k, o)| (k, want(o)))
            .collect();
        let (changed, forgotten) = changes(&held, &wanted);
        assert_eq!(
            names(&changed),
            vec![("0".into(), 0, 0), ("b".into(), 0, 7), ("c".into(), 3, 1)]
        );
        assert_eq!(
            forgotten,
            vec![ForgottenPartition {
                topic: "a".into(),
                partition: 1
            }]
        );
        // Everything forgotten.
        let (changed, forgotten) = changes(&held, &[]);
        assert!(changed.is_empty());
        assert_eq!(forgotten.len(), 3);
        // A new leader epoch is a change too.
        let keys = [key("a", 0), key("a", 1), key("b", 0)];
        let mut wanted: Vec<_> = keys.iter().map(|k| (k, want(5))).collect();
        wanted[2].1.leader_epoch = 2;
        let (changed, _) = changes(&held, &wanted);
        assert_eq!(names(&changed), vec![("b".into(), 0, 5)]);
    }

    /// A batch of `values` at `base_offset`, as a broker would return it.
    fn batch_at(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = crate::record::BatchBuilder::new(crate::record::Codec::None);
        for value in values {
            builder.push(1_000, None, value.as_bytes(), &[]).unwrap();
        }
        let mut batch = builder.finish().unwrap();
        crate::record::header::stamp(&mut batch, base_offset, 1, 2_000);
        batch.to_vec()
    }

    fn read(fetched: &Fetched) -> (Vec<(u64, String)>, Result<usize, ClientError>) {
        let mut seen = Vec::new();
        let result = fetched.for_each(|_, _, record| {
            seen.push((
                record.offset,
                String::from_utf8_lossy(record.value).into_owned(),
            ))
        });
        (seen, result)
    }

    #[test]
    fn a_fetched_partition_yields_its_good_batches_then_the_bad_ones_error() {
        let mut bytes = batch_at(10, &["a", "b"]);
        bytes.extend(batch_at(12, &["c"]));
        let mut bad = batch_at(13, &["d", "e"]);
        let last = bad.len() - 1;
        bad[last] ^= 0x01; // the checksum no longer matches
        bytes.extend(bad);
        bytes.extend(batch_at(15, &["f"]));
        let part = FetchedPartition::new("t".into(), 0, 11, 16, Bytes::from(bytes));
        // The position moves past the good batches only: the bad one is fetched again.
        assert_eq!(part.next_position(), 13);
        let (seen, result) = read(&Fetched {
            partitions: vec![part],
        });
        assert_eq!(seen, vec![(11, "b".into()), (12, "c".into())]);
        let error = result.expect_err("the bad batch is reported");
        assert!(error.to_string().contains("bad batch"), "{error}");
    }

    #[test]
    fn a_partial_batch_at_the_end_of_a_fetch_is_left_for_the_next() {
        let mut bytes = batch_at(0, &["a"]);
        let next = batch_at(1, &["b", "c"]);
        bytes.extend(&next[..next.len() - 3]);
        let part = FetchedPartition::new("t".into(), 0, 0, 3, Bytes::from(bytes));
        assert_eq!(part.next_position(), 1);
        let (seen, result) = read(&Fetched {
            partitions: vec![part],
        });
        assert_eq!(seen, vec![(0, "a".into())]);
        assert_eq!(result.unwrap(), 1);
    }
}
