//! What every peer driver shares, so that a peer is timed exactly as shardline is.
//!
//! A peer producer is two threads. The *schedule thread* is a plain thread that waits for
//! each message's intended send time with `std::thread::sleep` (nanosleep: tens of µs of
//! slack, where tokio's timer would round every wait up to a whole millisecond and charge
//! the peer for it; at least `--pace-us`, as shardline's producer) and hands `(sequence,
//! intended time)` over a channel. The *client thread* runs the peer's client on a tokio
//! current-thread runtime: it writes the same payload header as shardline's producer, picks
//! the same keys, sends, and records each acknowledgement in the same `Tally` from the
//! intended send time. Closed loop (`--rate max`): the schedule thread takes a window slot
//! before each message and the acknowledgement gives it back, so at most `--outstanding`
//! are unanswered.
//!
//! A peer consumer is one thread with a tokio current-thread runtime; every record goes
//! through the same `Checker` as shardline's consumer.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::partition_for;
use crate::args::Rate;
use crate::consumer::{Checker, ConsumerEvent, ConsumerReport, FETCH_WAIT_MAX_MS};
use crate::keys::KeyPicker;
use crate::payload::{value_template, Header};
use crate::producer::{ProducerReport, KEY_SEED_BASE};
use crate::schedule::RateSchedule;
use crate::stats::{Live, Plan};
use crate::tally::Tally;

/// How often the drain checks whether every acknowledgement arrived (tokio's timer has
/// millisecond granularity; the drain is not measured).
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How often a consumer without partitions checks whether the run is over.
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Resolves once the peer acknowledged one message (or refused it).
pub type AckFuture = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// A peer's producer client on the client thread's runtime.
pub trait PeerProducer {
    /// Hands one message to the client, in sequence order; the returned future resolves
    /// once the peer acknowledged it. `partition` is `partition_for` of the key, for peers
    /// without a partitioner of their own.
    async fn send(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<AckFuture, String>;
}

/// A peer's consumer client for some partitions, positioned at their end when made.
pub trait PeerConsumer {
    /// Waits at most `wait` for records and hands each (partition, value) to `observe`.
    async fn poll(
        &mut self,
        wait: Duration,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), String>;

    /// `None` once every record in the partitions has been read, else what is still
    /// unread (asked once the producers are done, so every acknowledged message is in).
    async fn behind(&mut self) -> Result<Option<String>, String>;
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))
}

/// Runs `future` on a fresh current-thread runtime (setup: topics, streams).
pub fn block_on<F: Future>(future: F) -> Result<F::Output, String> {
    Ok(runtime()?.block_on(future))
}

/// A message the schedule thread found due.
struct Due {
    sequence: u64,
    intended_unix_ns: u64,
}

/// Starts producer `producer`: its client thread (which starts the schedule thread).
pub fn spawn_producer<P, C, F>(
    plan: Plan,
    producer: u32,
    live: Arc<Live>,
    reports: Sender<ProducerReport>,
    connect: C,
) -> JoinHandle<()>
where
    P: PeerProducer + 'static,
    C: FnOnce(Plan) -> F + Send + 'static,
    F: Future<Output = Result<P, String>> + 'static,
{
    std::thread::spawn(move || {
        let report = runtime()
            .map(|runtime| {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, produce(plan, producer, live, connect))
            })
            .unwrap_or_else(|error| ProducerReport::failed(producer, error));
        let _ = reports.send(report);
    })
}

async fn produce<P, C, F>(
    plan: Plan,
    producer_id: u32,
    live: Arc<Live>,
    connect: C,
) -> ProducerReport
where
    P: PeerProducer + 'static,
    C: FnOnce(Plan) -> F,
    F: Future<Output = Result<P, String>>,
{
    let args = plan.args.clone();
    let mut client = match connect(plan.clone()).await {
        Ok(client) => client,
        Err(error) => return ProducerReport::failed(producer_id, error),
    };
    let tally = Rc::new(Tally::new(plan.clone(), live));
    let closed_loop = args.rate == Rate::Max;
    let window_slots = usize::try_from(args.outstanding).unwrap_or(usize::MAX);
    let (window_return, window) = bounded::<()>(window_slots);
    if closed_loop {
        for _ in 0..window_slots {
            let _ = window_return.send(());
        }
    }
    let (due_sender, mut due_inbox) = unbounded_channel();
    let schedule_thread = {
        let plan = plan.clone();
        std::thread::spawn(move || schedule(&plan, producer_id, &window, &due_sender))
    };
    let mut keys = KeyPicker::new(
        args.keys,
        args.key_count,
        KEY_SEED_BASE + u64::from(producer_id),
    );
    let mut value = value_template(args.message_bytes.max_bytes());
    let mut dispatched = 0u64;
    while let Some(due) = due_inbox.recv().await {
        let header = Header {
            producer: producer_id,
            sequence: due.sequence,
            intended_unix_ns: due.intended_unix_ns,
        };
        header.write(&mut value);
        let key = keys.key(due.sequence);
        let partition = partition_for(key, due.sequence, plan.partitions);
        let slot = closed_loop.then(|| window_return.clone());
        let bytes = args.message_bytes.for_message(producer_id, due.sequence);
        match client.send(partition, key, &value[..bytes]).await {
            Ok(ack) => {
                let tally = tally.clone();
                tokio::task::spawn_local(async move {
                    match ack.await {
                        Ok(()) => tally.acknowledge(&header),
                        Err(error) => tally.fail(1, &error),
                    }
                    if let Some(slot) = slot {
                        let _ = slot.send(());
                    }
                });
            }
            Err(error) => {
                tally.fail(1, &error);
                if let Some(slot) = slot {
                    let _ = slot.send(());
                }
            }
        }
        dispatched += 1;
    }
    if schedule_thread.join().is_err() {
        tally.fail(0, "the schedule thread panicked");
    }
    drain(&tally, dispatched, plan.args.drain()).await;
    tally.take_report(producer_id, dispatched)
}

/// The schedule thread: hands each message over at its intended send time (open loop),
/// or as soon as a window slot is free (closed loop), until the run's end.
fn schedule(plan: &Plan, producer: u32, window: &Receiver<()>, due: &UnboundedSender<Due>) {
    let args = &plan.args;
    let schedule = match args.rate {
        Rate::PerSecond(rate) => Some(RateSchedule::new(
            plan.start_unix_ns,
            rate,
            producer,
            args.producers,
        )),
        Rate::Max => None,
    };
    let pace = Duration::from_micros(args.pace_us);
    std::thread::sleep(plan.clock.until(plan.start_unix_ns));
    let mut sequence = 0u64;
    loop {
        let intended_unix_ns = match &schedule {
            Some(schedule) => schedule.intended_unix_ns(sequence),
            None => {
                if window
                    .recv_timeout(plan.clock.until(plan.end_unix_ns))
                    .is_err()
                {
                    break;
                }
                plan.clock.now_unix_ns()
            }
        };
        if intended_unix_ns >= plan.end_unix_ns {
            break;
        }
        if let Some(wait) = plan.clock.pace_wait(intended_unix_ns, pace) {
            std::thread::sleep(wait);
        }
        let message = Due {
            sequence,
            intended_unix_ns,
        };
        if due.send(message).is_err() {
            break;
        }
        sequence += 1;
    }
}

/// Waits until each of `sent` messages resolved; the ones still unanswered after `limit`
/// count as failed.
async fn drain(tally: &Tally, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while tally.resolved() < sent {
        if Instant::now() >= deadline {
            let unanswered = sent - tally.resolved();
            tally.fail(
                unanswered,
                &format!("{unanswered} messages unanswered after {limit:?}"),
            );
            return;
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}

/// Starts consumer `consumer_id`, reading the partitions `p % consumers == consumer_id`.
pub fn spawn_consumer<K, C, F>(
    plan: Plan,
    consumer_id: u32,
    live: Arc<Live>,
    events: Sender<ConsumerEvent>,
    connect: C,
) -> JoinHandle<()>
where
    K: PeerConsumer,
    C: FnOnce(Plan, Vec<u32>) -> F + Send + 'static,
    F: Future<Output = Result<K, String>>,
{
    std::thread::spawn(move || {
        let args = &plan.args;
        let partitions: Vec<u32> = (0..plan.partitions)
            .filter(|p| p % args.consumers == consumer_id)
            .collect();
        let report = ConsumerReport::new(consumer_id, partitions.clone(), args.producers);
        let mut checker = Checker::new(live.window(), report);
        let result = runtime().and_then(|runtime| {
            runtime.block_on(read_until_done(
                &plan,
                partitions,
                &live,
                &events,
                &mut checker,
                connect,
            ))
        });
        // Ready may not have been sent when setting up failed; a second one is ignored.
        let _ = events.send(ConsumerEvent::Ready(consumer_id));
        if let Err(error) = result {
            checker.report.first_error = Some(error);
        }
        let _ = events.send(ConsumerEvent::Done(Box::new(checker.report)));
    })
}

async fn read_until_done<K, C, F>(
    plan: &Plan,
    partitions: Vec<u32>,
    live: &Live,
    events: &Sender<ConsumerEvent>,
    checker: &mut Checker,
    connect: C,
) -> Result<(), String>
where
    K: PeerConsumer,
    C: FnOnce(Plan, Vec<u32>) -> F,
    F: Future<Output = Result<K, String>>,
{
    let consumer_id = checker.report.consumer;
    if partitions.is_empty() {
        let _ = events.send(ConsumerEvent::Ready(consumer_id));
        while !live.producers_done.load(Ordering::Acquire) {
            tokio::time::sleep(IDLE_POLL_INTERVAL).await;
        }
        return Ok(());
    }
    let mut client = connect(plan.clone(), partitions.clone()).await?;
    let _ = events.send(ConsumerEvent::Ready(consumer_id));
    let mut deadline = None;
    let clock = plan.clock;
    loop {
        if live.producers_done.load(Ordering::Acquire) {
            let drain = plan.args.drain();
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + drain);
            let Some(behind) = client.behind().await? else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not at the end of partitions {partitions:?} after {drain:?}: \
                     {behind}"
                ));
            }
        }
        checker.window = live.window();
        let before = checker.report.consumed;
        client
            .poll(
                Duration::from_millis(u64::from(FETCH_WAIT_MAX_MS)),
                &mut |partition, value| {
                    checker.observe(partition, value, clock.now_unix_ns());
                },
            )
            .await?;
        Live::add(&live.consumed, checker.report.consumed - before);
    }
}
