//! One client connection: frames in, responses out as they are ready.
//!
//! The reader decodes frames and starts a task per request, up to the in-flight bound; the
//! writer writes each response, followed by its batches, as soon as its task finishes,
//! whatever the order the requests came in (clients match responses by correlation id).
//! A response that closes the connection goes after the answers to every earlier request.
//! When the client stops reading its responses, the writer stalls, the in-flight slots run
//! out, and the reader stops reading requests: memory stays bounded. A client that stalls
//! in the middle of a frame, or never drains its responses, is disconnected after a timeout.
//! A frame that breaks the framing rules gets one error response, then the connection is
//! closed; a whole frame with a bad body gets an error response and the connection goes on.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use super::context::ShardContext;
use super::fetch_session::FetchSessions;
use super::handlers::{handle, Reply};
use super::socket::Deadline;
use super::work::with_deadline;
use crate::net::send_what_fits;
use crate::protocol::{
    decode_request, encode_error_response, encode_response_head, ErrorCode, Frame, FrameReader,
    Request, Response,
};

/// An encoded response: header and body, then the batches.
struct Encoded {
    head: Vec<u8>,
    trailer: Vec<Bytes>,
    /// Close the connection after writing this one.
    last: bool,
}

fn encode(correlation_id: u32, api_version: u16, reply: Reply) -> Encoded {
    let trailer_length = reply.trailer.iter().map(|b| b.len()).sum();
    let mut head = Vec::new();
    match encode_response_head(
        &mut head,
        correlation_id,
        api_version,
        &reply.response,
        trailer_length,
    ) {
        Ok(()) => Encoded {
            head,
            trailer: reply.trailer,
            last: false,
        },
        Err(error) => {
            tracing::error!(%error, "a response could not be encoded");
            head.clear();
            encode_error_response(
                &mut head,
                correlation_id,
                ErrorCode::Unknown,
                &error.to_string(),
            );
            Encoded {
                head,
                trailer: Vec::new(),
                last: false,
            }
        }
    }
}

/// Who a connection is: its principal (the client certificate's common name, a SCRAM user,
/// or `ANONYMOUS`), whether it has authenticated, and a SCRAM exchange under way.
struct Authentication {
    principal: Rc<str>,
    authenticated: bool,
    exchange: Option<crate::security::scram::ServerExchange>,
    /// The client id of the handshake (for client-id quotas).
    client_id: Option<Rc<str>>,
}

/// How long a produce or fetch answer waits for its quota (`crate::security::quota`), with
/// its `throttle_ms` set; zero when no quota applies or the client is under it.
fn throttle(
    context: &ShardContext,
    authentication: &Authentication,
    reply: &mut Reply,
    request_bytes: u64,
) -> std::time::Duration {
    use crate::protocol::{QuotaEntity, QuotaEntityKind};
    use crate::security::quota::Direction;
    let catalog = context.catalog();
    if !catalog.has_quotas() {
        // The common case: no entity has a quota, nothing to count or allocate.
        return std::time::Duration::ZERO;
    }
    let (direction, bytes) = match &reply.response {
        Response::Produce(_) => (Direction::Produce, request_bytes),
        Response::Fetch(_) => (
            Direction::Fetch,
            reply.trailer.iter().map(|b| b.len() as u64).sum(),
        ),
        _ => return std::time::Duration::ZERO,
    };
    let principal = QuotaEntity {
        kind: QuotaEntityKind::Principal,
        name: authentication.principal.to_string(),
    };
    let client = authentication.client_id.as_ref().map(|id| QuotaEntity {
        kind: QuotaEntityKind::ClientId,
        name: id.to_string(),
    });
    let quota = catalog
        .quota(&principal)
        .or_else(|| client.as_ref().and_then(|c| catalog.quota(c)));
    let Some(quota) = quota else {
        return std::time::Duration::ZERO;
    };
    let rate = match direction {
        Direction::Produce => quota.produce_bytes_per_s,
        Direction::Fetch => quota.fetch_bytes_per_s,
    };
    let Some(rate) = rate else {
        return std::time::Duration::ZERO;
    };
    // This shard's share: a client's partitions spread over every shard.
    let share = (rate / context.shard_count() as u64).max(1);
    let delay = context
        .throttle
        .record(&quota.entity, direction, bytes, share, Instant::now());
    if !delay.is_zero() {
        let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        match &mut reply.response {
            Response::Produce(response) => response.throttle_ms = ms,
            Response::Fetch(response) => response.throttle_ms = ms,
            _ => {}
        }
        context
            .metrics
            .throttled(&quota.entity.name, direction.name(), delay);
    }
    delay
}

fn error_encoded(correlation_id: u32, error: ErrorCode, message: &str, last: bool) -> Encoded {
    let mut head = Vec::new();
    encode_error_response(&mut head, correlation_id, error, message);
    Encoded {
        head,
        trailer: Vec::new(),
        last,
    }
}

/// One step of a SCRAM exchange; a failure closes the connection.
fn sasl_step(
    context: &ShardContext,
    authentication: &RefCell<Authentication>,
    request: crate::protocol::SaslAuthenticateRequest,
) -> (Response, bool) {
    use crate::security::scram::{ServerExchange, MECHANISM};
    let mut state = authentication.borrow_mut();
    let failed = |message: String| {
        let response = crate::protocol::SaslAuthenticateResponse {
            error: ErrorCode::SaslAuthenticationFailed,
            message,
            bytes: Vec::new(),
        };
        (Response::SaslAuthenticate(response), true)
    };
    if request.mechanism != MECHANISM {
        return failed(format!(
            "mechanism {} is not supported (only {MECHANISM})",
            request.mechanism
        ));
    }
    let answer = match state.exchange.take() {
        None => {
            let catalog = context.catalog();
            ServerExchange::start(&request.bytes, |name| catalog.user(name).cloned()).map(
                |(exchange, bytes)| {
                    state.exchange = Some(exchange);
                    bytes
                },
            )
        }
        Some(exchange) => exchange.finish(&request.bytes).map(|(name, bytes)| {
            tracing::debug!(user = %name, "authenticated");
            state.principal = Rc::from(name.as_str());
            state.authenticated = true;
            bytes
        }),
    };
    match answer {
        Ok(bytes) => {
            let response = crate::protocol::SaslAuthenticateResponse {
                error: ErrorCode::None,
                message: String::new(),
                bytes,
            };
            (Response::SaslAuthenticate(response), false)
        }
        Err(error) => {
            let metrics = &context.metrics.authentications_failed;
            metrics.set(metrics.get() + 1);
            failed(error.to_string())
        }
    }
}

fn start_request(
    context: &Rc<ShardContext>,
    authentication: &Rc<RefCell<Authentication>>,
    sessions: &Rc<RefCell<FetchSessions>>,
    frame: Frame,
) -> glommio::Task<Encoded> {
    let authentication = authentication.clone();
    let sessions = sessions.clone();
    let correlation_id = frame.header().correlation_id;
    let api_version = frame.header().api_version;
    let context = context.clone();
    // Counted out when the task ends or is dropped unfinished (its connection died).
    let in_flight = context.in_flight_requests.enter();
    let api = frame.header().api_key;
    let request_bytes = frame.header().trailer_length() as u64;
    let started = Instant::now();
    glommio::spawn_local(async move {
        let _in_flight = in_flight;
        let encoded = match decode_request(frame) {
            Ok(decoded) => match decoded.request {
                Request::SaslAuthenticate(request) => {
                    let (response, last) = sasl_step(&context, &authentication, request);
                    let mut encoded = encode(correlation_id, api_version, response.into());
                    encoded.last = last;
                    encoded
                }
                Request::Handshake(ref handshake) => {
                    let principal = {
                        let mut state = authentication.borrow_mut();
                        state.client_id = Some(Rc::from(handshake.client_id.as_str()));
                        state.principal.clone()
                    };
                    encode(
                        correlation_id,
                        api_version,
                        handle(&context, &principal, &sessions, decoded).await,
                    )
                }
                _ if !authentication.borrow().authenticated => error_encoded(
                    correlation_id,
                    ErrorCode::AuthenticationRequired,
                    "this broker requires authentication (SCRAM-SHA-256, or a client certificate)",
                    true,
                ),
                _ => {
                    let principal = authentication.borrow().principal.clone();
                    let mut reply = handle(&context, &principal, &sessions, decoded).await;
                    let delay = throttle(
                        &context,
                        &authentication.borrow(),
                        &mut reply,
                        request_bytes,
                    );
                    if !delay.is_zero() {
                        glommio::timer::sleep(delay).await;
                    }
                    encode(correlation_id, api_version, reply)
                }
            },
            Err(error) => error_encoded(
                correlation_id,
                error.error_code(),
                &error.to_string(),
                false,
            ),
        };
        context.metrics.request_done(api, started.elapsed());
        encoded
    })
}

/// A request the reader started, with the in-flight slot it holds until its response is
/// written (none for the refusal that closes the connection).
struct Started {
    task: glommio::Task<Encoded>,
    slot: Option<StaticPermit>,
}

/// A finished request: its arrival number, its response and its slot.
type Answer = (u64, Encoded, Option<StaticPermit>);

/// What a connection's writer waits for next.
enum Next {
    /// A request the reader started (`None`: the reader is done).
    Request(Option<Started>),
    /// A running request finished.
    Answer(Option<Answer>),
}

/// A request being served, with its arrival number on the connection.
struct Numbered {
    sequence: u64,
    started: Started,
}

impl Future for Numbered {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Answer> {
        let sequence = self.sequence;
        let encoded = std::task::ready!(Pin::new(&mut self.started.task).poll(context));
        Poll::Ready((sequence, encoded, self.started.slot.take()))
    }
}

/// The requests a connection is serving. They are numbered as they arrive and may finish
/// in any order: each response is written as soon as it is ready, so an answer that waits
/// for a write or a sync (or a fetch waiting for data) does not hold back the answers to
/// later requests on other partitions. Clients match responses by correlation id.
#[derive(Default)]
struct Running {
    arrived: u64,
    pending: BTreeSet<u64>,
    tasks: FuturesUnordered<Numbered>,
}

impl Running {
    fn start(&mut self, started: Started) {
        let sequence = self.arrived;
        self.arrived += 1;
        self.pending.insert(sequence);
        self.tasks.push(Numbered { sequence, started });
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The arrival number of the earliest request still running.
    fn earliest(&self) -> Option<u64> {
        self.pending.first().copied()
    }

    /// The next request to finish, whichever it is (`None`: none is running).
    async fn next(&mut self) -> Option<Answer> {
        let done = self.tasks.next().await?;
        self.pending.remove(&done.0);
        Some(done)
    }
}

/// Writes one response: at once with one vectored `sendmsg` when the socket is plain TCP
/// and takes it all (the common case, no timer), else what is left through the stream,
/// which may wait for the client, up to `write_stall_timeout`.
async fn write_response(
    writer: &mut futures_lite::io::WriteHalf<crate::tls::BoxedStream>,
    plain_fd: Option<std::os::fd::RawFd>,
    encoded: &Encoded,
    write_stall_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(1 + encoded.trailer.len());
    pieces.push(&encoded.head);
    pieces.extend(encoded.trailer.iter().map(|piece| &piece[..]));
    let rest = send_what_fits(plain_fd, &pieces)?;
    if rest.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + write_stall_timeout;
    let written = with_deadline(deadline, async {
        if let [piece] = rest.as_slice() {
            writer.write_all(piece).await?;
            return writer.flush().await;
        }
        // Small pieces are gathered before they are written: over TLS every write is at
        // least one record of its own, and on plain TCP one system call.
        let mut out = futures_lite::io::BufWriter::with_capacity(
            crate::constants::RESPONSE_WRITE_GATHER_BYTES,
            &mut *writer,
        );
        for piece in rest {
            out.write_all(piece).await?;
        }
        out.flush().await
    })
    .await;
    written.unwrap_or_else(|| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take its response in time",
        ))
    })
}

/// Serves one connection until the client closes it, breaks the framing, or times out.
pub async fn serve(context: Rc<ShardContext>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if context.open_connections.get() >= crate::constants::CONNECTIONS_PER_SHARD_MAX {
        tracing::warn!(%peer, open = context.open_connections.get(), "connection refused: the shard is at its connection limit");
        context
            .metrics
            .connections_refused
            .set(context.metrics.connections_refused.get() + 1);
        return;
    }
    let _ = stream.set_nodelay(true);
    // Plain TCP responses are sent with one vectored `sendmsg` on the socket itself
    // (`crate::net::send_now`); TLS must go through its stream.
    let plain_fd = context
        .tls
        .is_none()
        .then(|| std::os::fd::AsRawFd::as_raw_fd(&stream));
    let (stream, certificate_name): (crate::tls::BoxedStream, Option<String>) = match &context.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let timeout = context.profile.network.frame_completion_timeout();
            match tls.accept(stream, timeout).await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed: connection closed");
                    let failed = &context.metrics.tls_handshakes_failed;
                    failed.set(failed.get() + 1);
                    return;
                }
            }
        }
    };
    // A client certificate is an identity; without one, SCRAM may give one (and must, when
    // the broker requires authentication).
    let authentication = Rc::new(RefCell::new(Authentication {
        authenticated: certificate_name.is_some() || !context.sasl_required,
        principal: Rc::from(
            certificate_name
                .as_deref()
                .unwrap_or(crate::security::ANONYMOUS),
        ),
        exchange: None,
        client_id: None,
    }));
    let sessions = Rc::new(RefCell::new(FetchSessions::new(
        context.fetch_sessions.clone(),
    )));
    context
        .metrics
        .connections_accepted
        .set(context.metrics.connections_accepted.get() + 1);
    context
        .open_connections
        .set(context.open_connections.get() + 1);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let in_flight = context
        .profile
        .network
        .in_flight_requests_max
        .clamp(1, crate::constants::IN_FLIGHT_REQUESTS_MAX);
    // A request holds one of `in_flight` slots from before it starts until its response is
    // written: with every slot taken the reader stops reading. The queue never fills (it
    // has room for every slot), so the reader hands a request over without waiting for the
    // writer to run.
    let slots = Rc::new(Semaphore::new(in_flight as u64));
    let (queue, responses) = local_channel::new_bounded::<Started>(in_flight);
    // Dropped when the writer stops. The reader watches it as well: it may be waiting for a
    // slot, and a client that never reads is exactly one that keeps every slot taken.
    let (writer_alive, writer_gone) = oneshot::channel::<()>();
    let network = &context.profile.network;
    let (write_stall_timeout, frame_completion_timeout, idle_timeout) = (
        network.write_stall_timeout(),
        network.frame_completion_timeout(),
        network.idle_timeout(),
    );

    let writing = glommio::spawn_local(async move {
        let _writer_alive = writer_alive;
        let mut running = Running::default();
        let mut receiving = true;
        loop {
            let next = if receiving {
                if running.is_empty() {
                    Next::Request(responses.recv().await)
                } else {
                    // Finished responses first: they are what the client waits for.
                    futures_lite::future::or(async { Next::Answer(running.next().await) }, async {
                        Next::Request(responses.recv().await)
                    })
                    .await
                }
            } else if running.is_empty() {
                break;
            } else {
                Next::Answer(running.next().await)
            };
            let (sequence, encoded, _slot) = match next {
                Next::Request(Some(started)) => {
                    running.start(started);
                    continue;
                }
                Next::Request(None) => {
                    receiving = false;
                    continue;
                }
                Next::Answer(Some(answer)) => answer,
                Next::Answer(None) => continue,
            };
            if encoded.last {
                // The connection closes after this response: the answers to the requests
                // that came before it go first; those after it are dropped unanswered.
                while running.earliest().is_some_and(|first| first < sequence) {
                    let (done, answer, _slot) = running.next().await.expect("one is running");
                    if done < sequence
                        && write_response(&mut writer, plain_fd, &answer, write_stall_timeout)
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                let _ = write_response(&mut writer, plain_fd, &encoded, write_stall_timeout).await;
                break;
            }
            if write_response(&mut writer, plain_fd, &encoded, write_stall_timeout)
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = writer.close().await;
    });

    let mut frames = FrameReader::new();
    let mut inbound = crate::net::Inbound::new(plain_fd);
    // When the frame partly buffered now began to arrive: it must be whole within
    // the frame completion timeout of that, however its bytes trickle in.
    let mut frame_started: Option<Instant> = None;
    // Set while a read waits (never while the reader waits for room in the queue, which
    // is the broker's doing); one watchdog enforces it (no timer per read).
    let read_deadline = Deadline::default();
    let reading = async {
        loop {
            read_deadline.set(Some(match frame_started {
                Some(started) => started + frame_completion_timeout,
                None => Instant::now() + idle_timeout,
            }));
            let read = inbound.read(&mut frames, &mut reader).await;
            read_deadline.set(None);
            match read {
                Err(_) => break "read failed",
                Ok(0) => break "closed by the client",
                Ok(_) => {}
            }
            let mut broken = None;
            let mut took_frame = false;
            loop {
                match frames.next_frame() {
                    Ok(Some(frame)) => {
                        took_frame = true;
                        let Ok(slot) = slots.acquire_static_permit(1).await else {
                            broken = Some("writer gone");
                            break;
                        };
                        let started = Started {
                            task: start_request(&context, &authentication, &sessions, frame),
                            slot: Some(slot),
                        };
                        if queue.send(started).await.is_err() {
                            broken = Some("writer gone");
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let mut head = Vec::new();
                        let correlation_id = frames.buffered_correlation_id().unwrap_or(0);
                        encode_error_response(
                            &mut head,
                            correlation_id,
                            error.error_code(),
                            &error.to_string(),
                        );
                        let last = glommio::spawn_local(async move {
                            Encoded {
                                head,
                                trailer: Vec::new(),
                                last: true,
                            }
                        });
                        let _ = queue
                            .send(Started {
                                task: last,
                                slot: None,
                            })
                            .await;
                        broken = Some("bad frame");
                        break;
                    }
                }
            }
            if let Some(reason) = broken {
                break reason;
            }
            frame_started = match frames.buffered_bytes() {
                0 => None,
                // A new frame began in this read (its clock starts after any wait for room in
                // the queue, which is the broker's doing, not the client's).
                _ if took_frame || frame_started.is_none() => Some(Instant::now()),
                _ => frame_started,
            };
        }
    };
    let timed_out = async {
        read_deadline.expired(frame_completion_timeout).await;
        "timed out"
    };
    let reason = futures_lite::future::or(futures_lite::future::or(reading, timed_out), async {
        let _ = writer_gone.await;
        "writer gone"
    })
    .await;
    drop(queue);
    writing.await;
    tracing::debug!(%peer, reason, "connection closed");
    context
        .open_connections
        .set(context.open_connections.get() - 1);
}
