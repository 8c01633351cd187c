//! The internal listener: how controller voters talk. It runs on the controller shard of
//! each voter (observers, brokers that are not voters, only call out) and carries two kinds
//! of frames:
//!
//! ```text
//!  Raft(WireMessage)          voter → voter, one way (the Raft group's own traffic)
//!  Call{id, ControllerCall}   any broker → the controller leader (admin changes, producer
//!  Reply{id, applied, reply}    ids, heartbeats, in-sync set changes, elections, and
//!                               an observer's image requests)
//! ```
//!
//! A frame is `[u32 length][rkyv archive of InternalFrame]`, read with checked access and
//! at most `INTERNAL_FRAME_BYTES_MAX` long; a bad frame closes its connection and touches
//! nothing else. Raft messages to a peer wait in a bounded queue per peer and are dropped
//! when it is full or the peer is down (Raft resends). A call opens its own connection.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rkyv::{Archive, Deserialize, Serialize};

use super::context::ShardContext;
use crate::cluster::controller::{ControllerCall, ControllerReply};
use crate::cluster::observer::MetadataSource;
use crate::cluster::raft::WireMessage;
use crate::constants::{
    CONTROLLER_CALL_ATTEMPTS, CONTROLLER_CALL_RETRY_MS, CONTROLLER_CALL_TIMEOUT_MS,
    CONTROLLER_PEER_QUEUE_MAX, INTERNAL_CONNECT_TIMEOUT_MS, INTERNAL_FRAME_BYTES_MAX,
};
use crate::tls::BoxedStream;

/// One frame of the internal listener.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub enum InternalFrame {
    Raft(WireMessage),
    Call {
        id: u64,
        call: ControllerCall,
    },
    /// `applied`: the leader's applied index when it answered; the caller waits until its
    /// own controller has applied as much, so that what the reply promises is visible here.
    Reply {
        id: u64,
        applied: u64,
        reply: ControllerReply,
    },
}

/// Why an internal frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the limit of {INTERNAL_FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("an invalid frame: {0}")]
    Invalid(String),
}

/// The Raft id of a node (node ids start at 0; Raft's at 1).
pub fn raft_id(node: u32) -> u64 {
    u64::from(node) + 1
}

pub fn node_of(raft_id: u64) -> u32 {
    (raft_id.saturating_sub(1)) as u32
}

pub fn encode(frame: &InternalFrame) -> Vec<u8> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(frame).expect("serializing to memory");
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes one frame body (checked).
pub fn decode(body: &[u8]) -> Result<InternalFrame, InternalError> {
    rkyv::from_bytes::<InternalFrame, rkyv::rancor::Error>(body)
        .map_err(|e| InternalError::Invalid(e.to_string()))
}

pub async fn read_frame(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
) -> Result<InternalFrame, InternalError> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > INTERNAL_FRAME_BYTES_MAX {
        return Err(InternalError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    decode(&body)
}

/// Raft messages waiting for one peer.
#[derive(Default)]
struct PeerQueue {
    messages: RefCell<VecDeque<WireMessage>>,
    waker: RefCell<Option<Waker>>,
    dropped: std::cell::Cell<u64>,
}

/// The controller's peers: where each voter's internal listener is, and a queue each.
pub struct Peers {
    addresses: HashMap<u64, SocketAddr>,
    queues: HashMap<u64, Rc<PeerQueue>>,
    /// How this node reaches the others' internal listeners (TLS when they use it).
    tls: Option<crate::tls::ClientTls>,
}

impl Peers {
    /// `voters`: raft id → internal address, this node included (it gets no queue).
    pub fn new(
        voters: &[(u64, SocketAddr)],
        me: u64,
        tls: Option<crate::tls::ClientTls>,
    ) -> Rc<Peers> {
        Rc::new(Peers {
            tls,
            addresses: voters.iter().copied().collect(),
            queues: voters
                .iter()
                .filter(|(id, _)| *id != me)
                .map(|(id, _)| (*id, Rc::new(PeerQueue::default())))
                .collect(),
        })
    }

    pub fn address(&self, raft_id: u64) -> Option<SocketAddr> {
        self.addresses.get(&raft_id).copied()
    }

    pub fn voters(&self) -> impl Iterator<Item = (u64, SocketAddr)> + '_ {
        self.addresses.iter().map(|(id, a)| (*id, *a))
    }

    /// Queues a Raft message for its peer (dropped if the queue is full).
    pub fn send(&self, to: u64, message: WireMessage) {
        let Some(queue) = self.queues.get(&to) else {
            return;
        };
        let mut messages = queue.messages.borrow_mut();
        if messages.len() >= CONTROLLER_PEER_QUEUE_MAX {
            queue.dropped.set(queue.dropped.get() + 1);
            return;
        }
        messages.push_back(message);
        drop(messages);
        if let Some(waker) = queue.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Starts one sender task per peer; they run until `stop`.
    pub fn start(self: &Rc<Self>, stop: Rc<dyn Fn() -> bool>) {
        for (&id, queue) in &self.queues {
            let address = self.addresses[&id];
            let tls = self.tls.clone();
            glommio::spawn_local(send_to_peer(address, tls, queue.clone(), stop.clone())).detach();
        }
    }
}

async fn send_to_peer(
    address: SocketAddr,
    tls: Option<crate::tls::ClientTls>,
    queue: Rc<PeerQueue>,
    stop: Rc<dyn Fn() -> bool>,
) {
    let mut stream: Option<BoxedStream> = None;
    let mut warned = false;
    while !stop() {
        // Wait for messages (or check `stop` now and then).
        let has = poll_fn(|cx| {
            if !queue.messages.borrow().is_empty() {
                return Poll::Ready(true);
            }
            *queue.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let woke = futures_lite::future::or(has, async {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            false
        })
        .await;
        if !woke {
            continue;
        }
        if stream.is_none() {
            let timeout = Duration::from_millis(INTERNAL_CONNECT_TIMEOUT_MS);
            match crate::tls::connect(address, timeout, tls.as_ref()).await {
                Ok(connected) => {
                    if warned {
                        tracing::info!(%address, "controller peer reachable again");
                    }
                    warned = false;
                    stream = Some(connected);
                }
                Err(error) => {
                    if !warned {
                        tracing::warn!(%address, %error, "controller peer unreachable");
                        warned = true;
                    }
                    // Raft resends what matters: drop what waits rather than replay stale
                    // messages later.
                    queue.messages.borrow_mut().clear();
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let batch: Vec<WireMessage> = queue.messages.borrow_mut().drain(..).collect();
        let mut bytes = Vec::new();
        for message in batch {
            bytes.extend_from_slice(&encode(&InternalFrame::Raft(message)));
        }
        let connection = stream.as_mut().expect("connected above");
        let written = async {
            connection.write_all(&bytes).await?;
            connection.flush().await
        };
        if let Err(error) = written.await {
            tracing::debug!(%address, %error, "controller peer connection lost");
            stream = None;
        }
    }
}

/// The write half of a connection, written by one task at a time.
struct Writer {
    half: RefCell<Option<futures_lite::io::WriteHalf<BoxedStream>>>,
    lock: glommio::sync::Semaphore,
}

impl Writer {
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let _turn = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|_| std::io::Error::other("writer closed"))?;
        let mut half = self
            .half
            .borrow_mut()
            .take()
            .ok_or_else(|| std::io::Error::other("connection broken"))?;
        let written = async {
            half.write_all(bytes).await?;
            half.flush().await
        }
        .await;
        if written.is_ok() {
            *self.half.borrow_mut() = Some(half);
        }
        written
    }
}

/// Serves one connection of the internal listener (on the controller shard).
pub async fn serve(context: Rc<ShardContext>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let stream: BoxedStream = match &context.tls {
        None => Box::new(stream),
        Some(tls) => {
            let timeout = Duration::from_millis(INTERNAL_CONNECT_TIMEOUT_MS * 4);
            match tls.accept_internal(stream, timeout).await {
                // Under authorization, only principals that may do anything (the brokers)
                // may speak here.
                Ok((_, name))
                    if context.authorizer.enabled()
                        && !name
                            .as_deref()
                            .is_some_and(|n| context.authorizer.is_super_user(n)) =>
                {
                    tracing::warn!(
                        ?peer,
                        ?name,
                        "internal connection refused: not a super user"
                    );
                    return;
                }
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(?peer, %error, "internal TLS handshake failed: connection closed");
                    return;
                }
            }
        }
    };
    let (mut reader, half) = futures_lite::io::split(stream);
    let writer = Rc::new(Writer {
        half: RefCell::new(Some(half)),
        lock: glommio::sync::Semaphore::new(1),
    });
    let Some(node) = context.controller.as_ref().map(|c| c.node().clone()) else {
        return;
    };
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(InternalError::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return
            }
            Err(error) => {
                tracing::warn!(?peer, %error, "internal connection closed");
                return;
            }
        };
        match frame {
            InternalFrame::Raft(message) => match message.into_raft(node.node_id()) {
                Ok(message) => node.step(message),
                Err(error) => {
                    tracing::warn!(?peer, %error, "refused a raft message: connection closed");
                    return;
                }
            },
            InternalFrame::Call { id, call } => {
                let context = context.clone();
                let writer = writer.clone();
                let node = node.clone();
                glommio::spawn_local(async move {
                    let controller = context.controller.as_ref().expect("checked above");
                    let reply = controller.call(call).await;
                    let applied = node.status().applied;
                    let frame = InternalFrame::Reply { id, applied, reply };
                    if let Err(error) = writer.write(&encode(&frame)).await {
                        tracing::debug!(?peer, %error, "a controller reply was not delivered");
                    }
                })
                .detach();
            }
            InternalFrame::Reply { .. } => {
                tracing::warn!(?peer, "a reply nobody asked for: connection closed");
                return;
            }
        }
    }
}

/// Sends one call to the voter at `address` on a connection of its own and waits for the
/// reply. (Public for the tests that probe who the internal listener refuses.)
pub async fn call_over_network(
    address: SocketAddr,
    tls: Option<&crate::tls::ClientTls>,
    call: &ControllerCall,
    timeout: Duration,
) -> Result<(ControllerReply, u64), String> {
    let exchange = async {
        let connect_timeout = Duration::from_millis(INTERNAL_CONNECT_TIMEOUT_MS);
        let mut stream = crate::tls::connect(address, connect_timeout, tls)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let frame = InternalFrame::Call {
            id: 1,
            call: call.clone(),
        };
        let sent = async {
            stream.write_all(&encode(&frame)).await?;
            stream.flush().await
        };
        sent.await
            .map_err(|e| format!("sending to {address}: {e}"))?;
        match read_frame(&mut stream).await {
            Ok(InternalFrame::Reply { applied, reply, .. }) => Ok((reply, applied)),
            Ok(_) => Err(format!(
                "{address} answered with something else than a reply"
            )),
            Err(error) => Err(format!("reading the reply of {address}: {error}")),
        }
    };
    crate::server::work::with_deadline(Instant::now() + timeout, exchange)
        .await
        .unwrap_or_else(|| Err(format!("{address} did not answer within {timeout:?}")))
}

/// Runs a call on the controller leader, wherever it is; on the controller shard. Retries
/// while leadership settles. Returns the reply and the applied index it was given at.
pub async fn call_leader(
    context: &ShardContext,
    call: ControllerCall,
) -> Result<(ControllerReply, u64), String> {
    let metadata = context
        .metadata()
        .expect("controller calls run on the controller shard");
    let peers = context
        .peers
        .as_ref()
        .expect("the controller shard has its peers");
    // An observer remembers who answered as the leader (a voter's Raft node knows).
    let remember = |leader: Option<u64>| {
        if let Some(observer) = &context.observer {
            observer.set_leader(leader);
        }
    };
    let timeout = Duration::from_millis(CONTROLLER_CALL_TIMEOUT_MS);
    let mut hint: Option<u64> = None;
    let mut last_error = String::from("no controller leader yet");
    let voters: Vec<u64> = {
        let mut voters: Vec<u64> = peers.voters().map(|(id, _)| id).collect();
        voters.sort_unstable();
        voters
    };
    for attempt in 0..CONTROLLER_CALL_ATTEMPTS {
        let target = hint
            .or(metadata.leader())
            .unwrap_or(voters[attempt % voters.len()]);
        let answer = match &context.controller {
            Some(controller) if target == metadata.node_id() => {
                let reply = controller.call(call.clone()).await;
                Ok((reply, metadata.applied()))
            }
            _ => match peers.address(target) {
                Some(address) => {
                    call_over_network(address, peers.tls.as_ref(), &call, timeout).await
                }
                None => Err(format!("node {} is not a voter", node_of(target))),
            },
        };
        match answer {
            Ok((ControllerReply::NotLeader { leader }, _)) => {
                last_error = format!("node {} does not lead the controller", node_of(target));
                hint = leader.filter(|&l| l != target);
                remember(hint);
            }
            Ok(answer) => {
                remember(Some(target));
                return Ok(answer);
            }
            Err(error) => {
                last_error = error;
                hint = None;
                remember(None);
            }
        }
        if context.stopping.get() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(CONTROLLER_CALL_RETRY_MS)).await;
    }
    Err(format!("the controller could not be reached: {last_error}"))
}

/// Waits (bounded) until this broker's metadata has applied `applied`.
pub async fn wait_applied(metadata: MetadataSource<'_>, applied: u64) {
    let deadline = Instant::now() + Duration::from_millis(CONTROLLER_CALL_TIMEOUT_MS);
    while metadata.applied() < applied && Instant::now() < deadline {
        let seen = metadata.version();
        crate::server::work::with_deadline(deadline, metadata.changed(seen)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frame = InternalFrame::Reply {
            id: 7,
            applied: 42,
            reply: ControllerReply::NotLeader { leader: Some(3) },
        };
        let bytes = encode(&frame);
        assert_eq!(
            u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        let back = decode(&bytes[4..]).unwrap();
        assert!(matches!(
            back,
            InternalFrame::Reply {
                id: 7,
                applied: 42,
                reply: ControllerReply::NotLeader { leader: Some(3) }
            }
        ));
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&bytes[4..bytes.len() - 1]).is_err());
    }
}
