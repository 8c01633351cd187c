//! One producer: its own unpinned glommio executor thread, its own client connections.
//! With `--topics N` message `i` goes to topic `(i + producer) % N`.
//! Open loop (`--rate N`): message `i` is due at its `RateSchedule` time whatever happened
//! before. Closed loop (`--rate max`): at most `--outstanding` messages unacknowledged.
//! Produce-ack latency runs from the intended send time (the send call in closed loop).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use glommio::sync::{Semaphore, StaticPermit};
use hdrhistogram::Histogram;
use shardline::client::{ClientError, Producer, RecordMetadata};

use crate::args::Rate;
use crate::keys::KeyPicker;
use crate::payload::{value_template, Header};
use crate::schedule::{Clock, RateSchedule};
use crate::stats::{new_histogram, Bitset, Live, Plan};
use crate::tally::Tally;
use crate::topics;

/// Messages a sender queues before it yields its task queue, so the reactor can move the
/// socket IO (a glommio task that never waits starves the reactor).
pub const SEND_BURST_MESSAGES: u64 = 64;
/// `--pace-us` by default. Measured on the 2-core VM (latency profile, 8 partitions, 20k
/// msg/s, acks all, one consumer; 5 interleaved pairs): produce p50 3.04 ms median at 100 µs
/// against 3.93 ms sleeping until every message's own due time, every pair lower; the
/// producer thread's CPU at 150k msg/s fell by 16%.
pub const PACE_US_DEFAULT: u64 = 100;
/// The longest `--pace-us`: 100 ms, past which a producer's bursts would be its schedule.
pub const PACE_US_MAX: u64 = 100_000;

const _: () = assert!(PACE_US_DEFAULT <= PACE_US_MAX);
/// How often the drain checks whether every delivery resolved.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_micros(500);
/// Seeds each producer's key generator apart from the others.
pub const KEY_SEED_BASE: u64 = 0x5EED_0000;

const _: () = assert!(SEND_BURST_MESSAGES > 0);

/// What one producer hands the main thread when it is done.
#[derive(Debug)]
pub struct ProducerReport {
    pub producer: u32,
    pub sent: u64,
    pub acknowledged: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The sequences the broker acknowledged.
    pub acked: Bitset,
    /// Acknowledged messages intended inside the measured window.
    pub measured_acknowledged: u64,
    /// When the last measured message was acknowledged (Unix ns; 0: none was).
    pub last_measured_ack_unix_ns: u64,
    /// Produce-ack latency of the measured messages.
    pub latency_us: Histogram<u64>,
}

impl ProducerReport {
    pub fn failed(producer: u32, error: String) -> ProducerReport {
        ProducerReport {
            producer,
            sent: 0,
            acknowledged: 0,
            errors: 1,
            first_error: Some(error),
            acked: Bitset::default(),
            measured_acknowledged: 0,
            last_measured_ack_unix_ns: 0,
            latency_us: new_histogram(),
        }
    }
}

/// Starts producer `producer`'s thread; its report arrives on `reports`.
pub fn spawn(
    plan: Plan,
    producer: u32,
    live: Arc<Live>,
    reports: Sender<ProducerReport>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let report = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("producer-{producer}"))
            .io_memory(shardline::constants::CLI_IO_MEMORY_BYTES)
            .spawn(move || async move { produce(plan, producer, live).await })
            .map_err(|e| format!("cannot start an io_uring executor: {e}"))
            .and_then(|handle| handle.join().map_err(|e| format!("executor failed: {e}")))
            .unwrap_or_else(|error| ProducerReport::failed(producer, error));
        // The main thread only stops listening once it has every report.
        let _ = reports.send(report);
    })
}

/// What to do with a message's outcome: count it, and give back `permit` (a closed-loop
/// window slot). Runs as the producer's delivery callback, so a message costs no task.
fn watch(
    tally: Rc<Tally>,
    header: Header,
    permit: Option<StaticPermit>,
) -> impl FnOnce(Result<RecordMetadata, ClientError>) + 'static {
    move |outcome| {
        match outcome {
            Ok(_) => tally.acknowledge(&header),
            Err(error) => tally.fail(1, &error.to_string()),
        }
        drop(permit);
    }
}

async fn produce(plan: Plan, producer_id: u32, live: Arc<Live>) -> ProducerReport {
    let args = plan.args.clone();
    let cluster = match args.cluster() {
        Ok(cluster) => cluster,
        Err(error) => return ProducerReport::failed(producer_id, error),
    };
    let producer = Producer::new(cluster, args.producer_config());
    let tally = Rc::new(Tally::new(plan.clone(), live));
    let schedule = match args.rate {
        Rate::PerSecond(rate) => Some(RateSchedule::new(
            plan.start_unix_ns,
            rate,
            producer_id,
            args.producers,
        )),
        Rate::Max => None,
    };
    let window = Rc::new(Semaphore::new(args.outstanding));
    let pace = Duration::from_micros(args.pace_us);
    let mut keys = KeyPicker::new(
        args.keys,
        args.key_count,
        KEY_SEED_BASE + u64::from(producer_id),
    );
    let mut value = value_template(args.message_bytes.max_bytes());
    // A send still waiting for room in the producer's buffer then gives up.
    let stop_sending_unix_ns = plan
        .end_unix_ns
        .saturating_add(u64::try_from(args.drain().as_nanos()).unwrap_or(u64::MAX));
    glommio::timer::sleep(plan.clock.until(plan.start_unix_ns)).await;
    let mut sequence = 0u64;
    loop {
        let (intended_unix_ns, permit) = match &schedule {
            Some(schedule) => (schedule.intended_unix_ns(sequence), None),
            None => {
                // A closed loop waits for a free slot of its window until the run's end
                // at most (a broker that stopped answering frees none).
                let acquire = window.acquire_static_permit(1);
                let Some(acquired) = by(&plan.clock, plan.end_unix_ns, acquire).await else {
                    break;
                };
                let permit = acquired.expect("the window semaphore is never closed");
                (plan.clock.now_unix_ns(), Some(permit))
            }
        };
        if intended_unix_ns >= plan.end_unix_ns {
            break;
        }
        if let Some(wait) = plan.clock.pace_wait(intended_unix_ns, pace) {
            glommio::timer::sleep(wait).await;
        } else if sequence % SEND_BURST_MESSAGES == 0 {
            glommio::executor().yield_task_queue_now().await;
        }
        let header = Header {
            producer: producer_id,
            sequence,
            intended_unix_ns,
        };
        header.write(&mut value);
        let topic = &plan.topics[topics::topic_of(sequence, producer_id, plan.topics.len())];
        let bytes = args.message_bytes.for_message(producer_id, sequence);
        let on_delivery = watch(tally.clone(), header, permit);
        let send = producer.send_with(topic, keys.key(sequence), &value[..bytes], on_delivery);
        // A send that waits for room in the producer's buffer waits at most until
        // `--drain-s` after the run's end: a broker that stopped answering must not keep
        // the load generator sending for good.
        let Some(sent) = by(&plan.clock, stop_sending_unix_ns, send).await else {
            break;
        };
        if let Err(error) = sent {
            tally.fail(1, &error.to_string());
        }
        sequence += 1;
    }
    drain(&producer, &tally, sequence, args.drain()).await;
    // Messages due before the end that never got into the producer (its buffer stayed
    // full): failed, after the ones sent (whose first error says why).
    if let Some(schedule) = &schedule {
        let unsent = schedule
            .due_before(plan.end_unix_ns)
            .saturating_sub(sequence);
        if unsent > 0 {
            tally.fail(
                unsent,
                &format!(
                    "{unsent} messages not sent within {:?} of the run's end",
                    args.drain()
                ),
            );
        }
    }
    tally.take_report(producer_id, sequence)
}

/// `future`'s output, or `None` once `unix_ns` has passed without it. Polled once first,
/// so a future that is ready at once (most sends, most window slots) costs no timer.
async fn by<T>(clock: &Clock, unix_ns: u64, future: impl Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    if let Some(output) = futures_lite::future::poll_once(&mut future).await {
        return Some(output);
    }
    let passed = async {
        glommio::timer::sleep(clock.until(unix_ns)).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, passed).await
}

/// Sends what is still open and waits until each of `sent` messages resolved; the ones
/// still unanswered after `limit` (the flush included) count as failed.
async fn drain(producer: &Producer, tally: &Tally, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    // The flush waits for every answer, which a broker that is gone delays until the
    // producer's delivery timeout: it gets no longer than the drain itself.
    futures_lite::future::or(producer.flush(), glommio::timer::sleep(limit)).await;
    while tally.resolved() < sent {
        if Instant::now() >= deadline {
            let unanswered = sent - tally.resolved();
            tally.fail(
                unanswered,
                &format!("{unanswered} messages unanswered after {limit:?}"),
            );
            return;
        }
        glommio::timer::sleep(DRAIN_POLL_INTERVAL).await;
    }
}
