//! The producer's outbox: batches that leave for the same broker address at about the same
//! time travel in one produce request.
//!
//! A partition's batch is handed to `Outbox::enqueue` with a ticket, and the outbox settles
//! the ticket with that partition's own outcome once the answer is in. The first batch for
//! an address opens a request, which departs once a pass over the executor's ready tasks has
//! added nothing more to it (at most `PRODUCE_GATHER_PASSES_MAX` passes): the batches that
//! one response or one linger tick released share the next request. One request per broker
//! round trip instead of one per batch is what lets a producer spread over hundreds of
//! partitions without paying a request (frame, task, response, system calls) on both sides
//! for every small batch. Handing a batch over is synchronous and settling a ticket is a
//! plain call, so a batch costs no task of its own: a request's one task sends it and
//! settles all its tickets.
//!
//! A request takes at most one batch per partition (the broker answers a request's
//! partitions together, and a partition's next batch must not depend on that), and at most
//! `PRODUCE_REQUEST_BYTES_MAX` of batches. A batch of `PRODUCE_GATHER_BATCH_BYTES_MAX` or more
//! already pays for its own request and goes alone: gathering such batches measured slower
//! (8 partitions, balanced profile, 1 MiB requests: 106-123k against 121-128k msg/s for one
//! request per batch, 3 runs each, interleaved).
//! Retries, sequences and per-partition order stay the producer's business: the outbox only
//! carries batches and hands each its own outcome (a broken connection or a timeout is every
//! batch's outcome).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::cluster::Cluster;
use super::error::ClientError;
use crate::constants::{
    PARTITIONS_PER_REQUEST_MAX, PRODUCE_GATHER_BATCH_BYTES_MAX, PRODUCE_GATHER_PASSES_MAX,
    PRODUCE_REQUEST_BYTES_MAX,
};
use crate::protocol::{ErrorCode, ProducePartition, ProduceRequest, Request, Response};

/// What the outbox hands a batch's outcome to: its base offset, or why it was not stored.
/// Settled exactly once, from the request's task, unless the executor drops that task.
pub(super) trait Ticket {
    fn settle(self, outcome: Result<u64, ClientError>);
}

/// Requests being gathered, one per broker address. Owned by one producer, on its executor.
pub(super) struct Outbox<T: Ticket> {
    cluster: Rc<Cluster>,
    acks: i8,
    /// The broker's own timeout for the acknowledgement.
    timeout_ms: u32,
    /// How long the client waits for the answer before it gives the connection up.
    answer_within: Duration,
    open: RefCell<HashMap<SocketAddr, Rc<RefCell<Gathering<T>>>>>,
}

/// A produce request being gathered.
struct Gathering<T> {
    partitions: Vec<ProducePartition>,
    batches: Vec<Bytes>,
    tickets: Vec<T>,
    /// The partitions in it, by topic.
    members: HashMap<String, HashSet<u32>>,
    bytes: usize,
}

impl<T> Default for Gathering<T> {
    fn default() -> Self {
        Gathering {
            partitions: Vec::new(),
            batches: Vec::new(),
            tickets: Vec::new(),
            members: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<T> Gathering<T> {
    /// Whether this batch may join (see the module notes).
    fn takes(&self, topic: &str, partition: u32, bytes: usize) -> bool {
        bytes < PRODUCE_GATHER_BATCH_BYTES_MAX
            && self.partitions.len() < PARTITIONS_PER_REQUEST_MAX
            && self.bytes + bytes <= PRODUCE_REQUEST_BYTES_MAX
            && !self
                .members
                .get(topic)
                .is_some_and(|partitions| partitions.contains(&partition))
    }
}

impl<T: Ticket + 'static> Outbox<T> {
    pub(super) fn new(
        cluster: Rc<Cluster>,
        acks: i8,
        timeout: Duration,
        answer_margin: Duration,
    ) -> Outbox<T> {
        Outbox {
            cluster,
            acks,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            answer_within: timeout + answer_margin,
            open: RefCell::new(HashMap::new()),
        }
    }

    /// Adds one partition's batch to the request leaving for `address` now (opening one if
    /// none can take it); `ticket` is settled with the batch's own outcome.
    pub(super) fn enqueue(
        self: &Rc<Self>,
        address: SocketAddr,
        leader_epoch: u32,
        topic: &str,
        partition: u32,
        batch: Bytes,
        ticket: T,
    ) {
        let opened = {
            let mut open = self.open.borrow_mut();
            let joinable = open
                .get(&address)
                .filter(|g| g.borrow().takes(topic, partition, batch.len()))
                .cloned();
            // A request that cannot take this batch departs as it is (its own task sends
            // it); the batch opens the next one, which a large batch keeps to itself.
            let (gathering, opened) = match joinable {
                Some(gathering) => (gathering, None),
                None => {
                    let gathering = Rc::new(RefCell::new(Gathering::default()));
                    if batch.len() < PRODUCE_GATHER_BATCH_BYTES_MAX {
                        open.insert(address, gathering.clone());
                    }
                    (gathering.clone(), Some(gathering))
                }
            };
            let mut gathering = gathering.borrow_mut();
            gathering.bytes += batch.len();
            gathering.partitions.push(ProducePartition {
                topic: topic.to_string(),
                partition,
                batch_bytes: batch.len() as u32,
                leader_epoch: Some(leader_epoch),
            });
            gathering.batches.push(batch);
            gathering.tickets.push(ticket);
            match gathering.members.get_mut(topic) {
                Some(partitions) => {
                    partitions.insert(partition);
                }
                None => {
                    gathering
                        .members
                        .insert(topic.to_string(), HashSet::from([partition]));
                }
            }
            opened
        };
        if let Some(gathering) = opened {
            let outbox = self.clone();
            glommio::spawn_local(async move { outbox.depart(address, gathering).await }).detach();
        }
    }

    /// Lets the request gather, then sends it and hands every batch its outcome.
    async fn depart(&self, address: SocketAddr, gathering: Rc<RefCell<Gathering<T>>>) {
        for _ in 0..PRODUCE_GATHER_PASSES_MAX {
            let before = gathering.borrow().partitions.len();
            futures_lite::future::yield_now().await;
            let after = gathering.borrow().partitions.len();
            // Full (it left the open table) or nothing joined in a whole pass: go.
            let open = self
                .open
                .borrow()
                .get(&address)
                .is_some_and(|g| Rc::ptr_eq(g, &gathering));
            if after == before || !open {
                break;
            }
        }
        {
            let mut open = self.open.borrow_mut();
            if open
                .get(&address)
                .is_some_and(|g| Rc::ptr_eq(g, &gathering))
            {
                open.remove(&address);
            }
        }
        let Gathering {
            partitions,
            batches,
            tickets,
            ..
        } = std::mem::take(&mut *gathering.borrow_mut());
        let count = partitions.len();
        let request = Request::Produce(ProduceRequest {
            acks: self.acks,
            timeout_ms: self.timeout_ms,
            partitions,
        });
        let trailer: Vec<&[u8]> = batches.iter().map(|b| &b[..]).collect();
        // The broker answers within the request's timeout; past it (and a margin) the
        // broker is not answering at all (paused, cut off): the connection is given up and
        // each sender retries, perhaps at another leader.
        let sent = async {
            let connection = self.cluster.connection(address).await?;
            connection
                .request_within(&request, &trailer, self.answer_within)
                .await
        }
        .await;
        let outcomes: Vec<Result<u64, ClientError>> = match sent.map(|answer| answer.response) {
            Ok(Response::Produce(produce)) if produce.partitions.len() == count => produce
                .partitions
                .into_iter()
                .map(|entry| {
                    if entry.error == ErrorCode::None {
                        Ok(entry.base_offset)
                    } else {
                        Err(ClientError::from_code(entry.error, entry.message))
                    }
                })
                .collect(),
            Ok(Response::Produce(produce)) => vec![
                Err(ClientError::Protocol(format!(
                    "a produce of {count} partitions answered with {}",
                    produce.partitions.len()
                )));
                count
            ],
            Ok(other) => vec![
                Err(ClientError::Protocol(format!(
                    "produce answered with {:?}",
                    other.api_key()
                )));
                count
            ],
            Err(error) => vec![Err(error); count],
        };
        for (ticket, outcome) in tickets.into_iter().zip(outcomes) {
            ticket.settle(outcome);
        }
    }
}
