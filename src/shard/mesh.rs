//! The mesh: how work crosses cores. Every shard holds one sender to every other shard and
//! one receiver from each; nothing else crosses a core.
//!
//! ```text
//!   shard a ── tell / call / call_each ──▶ bounded channel (a→b) ──▶ shard b's receive loop
//!      ▲                                                                 │ takes a permit of
//!      │                                                                 │ the message's class,
//!      └──────────────── typed reply (oneshot per Call) ◀── handler ◀────┘ runs it as a task
//! ```
//!
//! - A request/response is a [`Call`]: the request and a oneshot for its reply, typed per
//!   operation. The message enum's variant fixes both types, so a reply can never be of the
//!   wrong kind and nothing is matched by position.
//! - Fan-out ([`Mesh::call_each`]) sends to many shards at once and joins the replies.
//! - Backpressure: a receiving shard runs at most a bounded number of messages of each class
//!   from each source at once ([`MESH_WORK_IN_FLIGHT_PER_SOURCE`], [`MESH_WAITS_PER_SOURCE`]).
//!   When they are taken it stops reading that source's channel, the channel
//!   ([`MESH_CHANNEL_CAPACITY`]) fills, and the sender's `send` waits. Long waits (a fetch
//!   parked until data arrives) have their own budget, so they never starve ordinary work.
//! - Callers batch per destination (one message carries every item for a shard).
//!
//! The messages themselves, and the one dispatcher that hands each to its handler, are in
//! `super::messages`.

use std::future::Future;
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;

use crate::constants::{
    MESH_CHANNEL_CAPACITY, MESH_WAITS_PER_SOURCE, MESH_WORK_IN_FLIGHT_PER_SOURCE,
};

const _: () = assert!(MESH_CHANNEL_CAPACITY > 0 && MESH_WORK_IN_FLIGHT_PER_SOURCE > 0);

/// A request and the way back for its reply.
pub struct Call<Req, Rep> {
    pub request: Req,
    reply: oneshot::Sender<Rep>,
}

impl<Req, Rep> Call<Req, Rep> {
    fn new(request: Req) -> (Call<Req, Rep>, oneshot::Receiver<Rep>) {
        let (reply, replied) = oneshot::channel();
        (Call { request, reply }, replied)
    }

    /// Runs `handler` on the request and sends back what it returns (a caller that gave up
    /// waiting is not an error).
    pub async fn answer<Fut: Future<Output = Rep>>(self, handler: impl FnOnce(Req) -> Fut) {
        let Call { request, reply } = self;
        let _ = reply.send(handler(request).await);
    }
}

/// Why a message did not get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error("shard {shard} is gone (it is shutting down)")]
    ShardGone { shard: usize },
    #[error("shard {shard} dropped the request without answering (it is shutting down)")]
    NoReply { shard: usize },
}

/// Which in-flight budget a message takes on its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageClass {
    /// Work that finishes on its own (appends, reads, group and catalogue changes).
    Work,
    /// A wait that may last until its deadline (a long-polling fetch).
    Wait,
}

/// What the mesh carries.
pub trait MeshMessage: Send + 'static {
    fn class(&self) -> MessageClass;
}

/// One shard's ends of the mesh. Owned by that shard.
pub struct Mesh<M: MeshMessage> {
    shard_id: usize,
    shard_count: usize,
    /// Absent when the broker has a single shard.
    senders: Option<Senders<M>>,
}

impl<M: MeshMessage> Mesh<M> {
    pub fn new(shard_id: usize, shard_count: usize, senders: Option<Senders<M>>) -> Mesh<M> {
        assert!(
            senders.is_some() || shard_count == 1,
            "{shard_count} shards need a mesh"
        );
        Mesh {
            shard_id,
            shard_count,
            senders,
        }
    }

    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Every other shard.
    pub fn others(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.shard_count).filter(move |&shard| shard != self.shard_id)
    }

    /// Sends a one-way message (waits while the destination's channel is full).
    pub async fn tell(&self, shard: usize, message: M) -> Result<(), MeshError> {
        assert_ne!(shard, self.shard_id, "local work is not sent over the mesh");
        assert!(shard < self.shard_count, "no shard {shard}: {self:?}");
        let senders = self.senders.as_ref().expect("several shards have a mesh");
        senders
            .send_to(shard, message)
            .await
            .map_err(|_| MeshError::ShardGone { shard })
    }

    /// Sends `request` to `shard` as the message `wrap` makes of it, and waits for the reply.
    pub async fn call<Req, Rep>(
        &self,
        shard: usize,
        request: Req,
        wrap: fn(Call<Req, Rep>) -> M,
    ) -> Result<Rep, MeshError> {
        let (call, replied) = Call::new(request);
        self.tell(shard, wrap(call)).await?;
        replied.await.map_err(|_| MeshError::NoReply { shard })
    }

    /// Sends each request to its shard, all at once, and returns each shard's reply.
    pub async fn call_each<Req, Rep>(
        &self,
        requests: Vec<(usize, Req)>,
        wrap: fn(Call<Req, Rep>) -> M,
    ) -> Vec<(usize, Result<Rep, MeshError>)> {
        let calls = requests
            .into_iter()
            .map(|(shard, request)| async move { (shard, self.call(shard, request, wrap).await) });
        futures::future::join_all(calls).await
    }
}

impl<M: MeshMessage> std::fmt::Debug for Mesh<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("shard_id", &self.shard_id)
            .field("shard_count", &self.shard_count)
            .finish()
    }
}

/// Receives from every other shard until they all hang up, running each message as a task
/// in `queue` through `handle`, within the per-source, per-class in-flight bounds.
pub fn serve<M, F, Fut>(
    mut receivers: Receivers<M>,
    queue: TaskQueueHandle,
    handle: F,
) -> Result<(), glommio::GlommioError<()>>
where
    M: MeshMessage,
    F: Fn(M) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    for (_, stream) in receivers.streams() {
        let handle = handle.clone();
        let work = Rc::new(Semaphore::new(MESH_WORK_IN_FLIGHT_PER_SOURCE as u64));
        let waits = Rc::new(Semaphore::new(MESH_WAITS_PER_SOURCE as u64));
        glommio::spawn_local_into(
            async move {
                while let Some(message) = stream.recv().await {
                    let budget = match message.class() {
                        MessageClass::Work => &work,
                        MessageClass::Wait => &waits,
                    };
                    // The semaphore is never closed, so a permit always comes.
                    let Ok(permit) = budget.acquire_static_permit(1).await else {
                        return;
                    };
                    let handle = handle.clone();
                    glommio::spawn_local(async move {
                        handle(message).await;
                        drop(permit);
                    })
                    .detach();
                }
            },
            queue,
        )?
        .detach();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;
    use crate::shard::{run_shards, RuntimeConfig};

    enum TestMessage {
        Double(Call<u64, u64>),
        Hold(Call<(), ()>),
    }

    impl MeshMessage for TestMessage {
        fn class(&self) -> MessageClass {
            MessageClass::Work
        }
    }

    fn two_shards() -> RuntimeConfig {
        RuntimeConfig {
            shard_count: 2,
            cpus: None,
            io_memory_bytes: 256 * 1024,
            spin_before_park: Duration::ZERO,
        }
    }

    #[test]
    fn calls_are_typed_and_fan_out_joins_every_reply() {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let results = run_shards::<TestMessage, Vec<u64>, _, _>(&two_shards(), move |start| {
            let finished = finished.clone();
            async move {
                let raw = start.mesh.expect("two shards");
                let mesh = Mesh::new(start.shard_id, 2, Some(raw.senders));
                let queue = glommio::executor().current_task_queue();
                serve(raw.receivers, queue, |message| async move {
                    match message {
                        TestMessage::Double(call) => call.answer(|n| async move { n * 2 }).await,
                        TestMessage::Hold(call) => call.answer(|()| async {}).await,
                    }
                })
                .unwrap();
                let peer = 1 - start.shard_id;
                let mut got = Vec::new();
                for n in 1..=3 {
                    got.push(mesh.call(peer, n, TestMessage::Double).await.unwrap());
                }
                let fanned = mesh
                    .call_each(vec![(peer, 10), (peer, 20)], TestMessage::Double)
                    .await;
                got.extend(fanned.into_iter().map(|(_, reply)| reply.unwrap()));
                // Serve the other shard until it is done asking too.
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while finished.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                got
            }
        })
        .unwrap();
        for got in results {
            assert_eq!(got, vec![2, 4, 6, 20, 40]);
        }
    }

    /// A receiver whose in-flight budget is taken stops reading: the sender's channel fills
    /// and its sends wait, instead of the receiver spawning without bound.
    #[test]
    fn a_flooded_shard_makes_its_sender_wait() {
        let sent_before_release =
            run_shards::<TestMessage, usize, _, _>(&two_shards(), |start| async move {
                let raw = start.mesh.expect("two shards");
                let mesh = Rc::new(Mesh::new(start.shard_id, 2, Some(raw.senders)));
                let release = Rc::new(Semaphore::new(0));
                let queue = glommio::executor().current_task_queue();
                let gate = release.clone();
                serve(raw.receivers, queue, move |message| {
                    let gate = gate.clone();
                    async move {
                        if let TestMessage::Hold(call) = message {
                            // Held until the test lets go: it keeps its permit.
                            let _ = gate.acquire(1).await;
                            call.answer(|()| async {}).await;
                        }
                    }
                })
                .unwrap();
                if start.shard_id == 1 {
                    // The receiver: waits for the sender to stall, then releases everything.
                    glommio::timer::sleep(Duration::from_millis(300)).await;
                    release.signal(u64::MAX / 2);
                    glommio::timer::sleep(Duration::from_millis(300)).await;
                    return 0;
                }
                let sent = Rc::new(Cell::new(0usize));
                let total = MESH_WORK_IN_FLIGHT_PER_SOURCE + MESH_CHANNEL_CAPACITY + 50;
                let counter = sent.clone();
                let sender = mesh.clone();
                let sending = glommio::spawn_local(async move {
                    let mut replies = Vec::new();
                    for _ in 0..total {
                        let (call, replied) = Call::new(());
                        sender.tell(1, TestMessage::Hold(call)).await.unwrap();
                        counter.set(counter.get() + 1);
                        replies.push(replied);
                    }
                    futures::future::join_all(replies).await;
                });
                glommio::timer::sleep(Duration::from_millis(200)).await;
                let stalled_at = sent.get();
                sending.await;
                assert_eq!(sent.get(), total, "every message went through in the end");
                stalled_at
            })
            .unwrap();
        let stalled_at = sent_before_release[0].max(sent_before_release[1]);
        assert!(
            stalled_at <= MESH_WORK_IN_FLIGHT_PER_SOURCE + MESH_CHANNEL_CAPACITY + 1,
            "the sender got {stalled_at} messages through before the receiver freed any"
        );
        assert!(stalled_at >= MESH_WORK_IN_FLIGHT_PER_SOURCE, "{stalled_at}");
    }
}
