//! One client connection to a broker: pipelined requests matched to responses by
//! correlation id. Runs on a glommio executor; owned by one task set (not `Send`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::sync::Semaphore;

use super::error::ClientError;
use crate::constants::CLIENT_CONNECT_TIMEOUT_MS;
use crate::net::send_what_fits;
use crate::protocol::{
    decode_response, encode_request_head, negotiate, supported_apis, ApiKey, DecodedResponse,
    FrameReader, HandshakeRequest, NegotiatedVersions, Request, Response,
};
use crate::tls::{BoxedStream, ClientTls};

/// Room a request's head (header and body) is given up front, per batch of its trailer and
/// once more: enough for a produce request's entry per batch (its topic name, partition,
/// sizes), so that the head is rarely copied as it grows. A guess, not a limit.
const REQUEST_FIELDS_BYTES_GUESS: usize = 128;

type Waiter = oneshot::Sender<Result<DecodedResponse, ClientError>>;

/// The connection's writing half, and its socket itself when the stream is plain TCP: a
/// request then goes out with one vectored `sendmsg` (`crate::net::send_now`), its batches
/// not copied into the frame. Kept together, so that the descriptor is used only while the
/// half that keeps the socket open is held.
struct Writer {
    half: WriteHalf<BoxedStream>,
    plain_fd: Option<std::os::fd::RawFd>,
}

struct Inner {
    /// Unique among this thread's connections (fetch sessions live and die with one).
    id: u64,
    address: SocketAddr,
    /// Taken while a request is written (under `write_lock`).
    writer: RefCell<Option<Writer>>,
    write_lock: Semaphore,
    in_flight: Semaphore,
    pending: RefCell<HashMap<u32, Waiter>>,
    next_correlation_id: Cell<u32>,
    versions: RefCell<Option<NegotiatedVersions>>,
    broken: RefCell<Option<String>>,
}

/// A connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    inner: Rc<Inner>,
}

impl Connection {
    /// Connects (over TLS when `tls` is given) and performs the handshake (version
    /// negotiation).
    pub async fn connect(
        address: SocketAddr,
        client_id: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Connection, ClientError> {
        Connection::connect_as(address, client_id, tls, None).await
    }

    /// As `connect`, then authenticates with SCRAM-SHA-256 when `login` is given.
    pub async fn connect_as(
        address: SocketAddr,
        client_id: &str,
        tls: Option<&ClientTls>,
        login: Option<&crate::security::Login>,
    ) -> Result<Connection, ClientError> {
        let connection = Connection::open(address, client_id, tls).await?;
        if let Some(login) = login {
            connection.authenticate(login).await?;
        }
        Ok(connection)
    }

    /// The SCRAM-SHA-256 exchange (two round trips); the broker closes the connection when
    /// it fails.
    async fn authenticate(&self, login: &crate::security::Login) -> Result<(), ClientError> {
        use crate::security::scram::{ClientExchange, MECHANISM};
        let timeout = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
        let step = |bytes: Vec<u8>| async move {
            let request = Request::SaslAuthenticate(crate::protocol::SaslAuthenticateRequest {
                mechanism: MECHANISM.to_string(),
                bytes,
            });
            match self.request_within(&request, &[], timeout).await?.response {
                Response::SaslAuthenticate(response) if response.error.is_ok() => {
                    Ok(response.bytes)
                }
                Response::SaslAuthenticate(response) => Err(ClientError::from_code(
                    response.error,
                    format!("as {}: {}", login.user, response.message),
                )),
                other => Err(ClientError::Protocol(format!(
                    "SaslAuthenticate answered with {:?}",
                    other.api_key()
                ))),
            }
        };
        let (mut exchange, first) = ClientExchange::start(&login.user, &login.password);
        let server_first = step(first).await?;
        let client_final = exchange
            .respond(&server_first)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let server_final = step(client_final).await?;
        exchange
            .verify(&server_final)
            .map_err(|e| ClientError::Protocol(format!("the broker's SCRAM signature: {e}")))
    }

    async fn open(
        address: SocketAddr,
        client_id: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Connection, ClientError> {
        let timeout = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
        let (stream, plain_fd) = crate::tls::connect_with_fd(address, timeout, tls)
            .await
            .map_err(|e| ClientError::Io(format!("connecting to {address}: {e}")))?;
        let (reader, writer) = futures_lite::io::split(stream);
        thread_local! {
            static NEXT_ID: Cell<u64> = const { Cell::new(1) };
        }
        let id = NEXT_ID.with(|next| next.replace(next.get() + 1));
        let inner = Rc::new(Inner {
            id,
            address,
            writer: RefCell::new(Some(Writer {
                half: writer,
                plain_fd,
            })),
            write_lock: Semaphore::new(1),
            in_flight: Semaphore::new(crate::constants::IN_FLIGHT_REQUESTS_MAX as u64),
            pending: RefCell::new(HashMap::new()),
            next_correlation_id: Cell::new(1),
            versions: RefCell::new(None),
            broken: RefCell::new(None),
        });
        glommio::spawn_local(read_responses(Rc::downgrade(&inner), reader, plain_fd)).detach();
        let connection = Connection { inner };
        let handshake = Request::Handshake(HandshakeRequest {
            client_id: client_id.to_string(),
            client_software_version: env!("CARGO_PKG_VERSION").to_string(),
            supported: supported_apis(),
        });
        let timeout = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
        match connection
            .request_within(&handshake, &[], timeout)
            .await?
            .response
        {
            Response::Handshake(response) => {
                let versions = negotiate(&supported_apis(), &response.supported);
                *connection.inner.versions.borrow_mut() = Some(versions);
                Ok(connection)
            }
            other => Err(ClientError::Protocol(format!(
                "handshake answered with {:?}",
                other.api_key()
            ))),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    /// Which connection this is: no other connection of this thread has the same id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The version of `api` both sides speak (`None` before the handshake, or when the
    /// broker speaks no version this build does).
    pub fn version(&self, api: ApiKey) -> Option<u16> {
        self.inner.versions.borrow().as_ref()?.version(api)
    }

    pub fn is_broken(&self) -> bool {
        self.inner.broken.borrow().is_some()
    }

    fn version_for(&self, api: ApiKey) -> Result<u16, ClientError> {
        match &*self.inner.versions.borrow() {
            None => Ok(0),
            Some(versions) => versions.version(api).ok_or_else(|| {
                ClientError::Protocol(format!("the broker does not speak {}", api.name()))
            }),
        }
    }

    /// Sends a request (with its trailer of batches) and waits for its response. A broker
    /// `ErrorResponse` becomes `ClientError::Broker`.
    pub async fn request(
        &self,
        request: &Request,
        trailer: &[&[u8]],
    ) -> Result<DecodedResponse, ClientError> {
        if let Some(reason) = &*self.inner.broken.borrow() {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        let _slot = self
            .inner
            .in_flight
            .acquire_permit(1)
            .await
            .map_err(|_| ClientError::Disconnected("closed".into()))?;
        let correlation_id = self.inner.next_correlation_id.get();
        self.inner
            .next_correlation_id
            .set(correlation_id.wrapping_add(1));
        let trailer_bytes: usize = trailer.iter().map(|piece| piece.len()).sum();
        let mut head = Vec::with_capacity(REQUEST_FIELDS_BYTES_GUESS * (1 + trailer.len()));
        let version = self.version_for(request.api_key())?;
        encode_request_head(&mut head, correlation_id, version, request, trailer_bytes)
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let (waiter, response) = oneshot::channel();
        self.inner
            .pending
            .borrow_mut()
            .insert(correlation_id, waiter);
        {
            let _write = self
                .inner
                .write_lock
                .acquire_permit(1)
                .await
                .map_err(|_| ClientError::Disconnected("closed".into()))?;
            let mut writer = self
                .inner
                .writer
                .borrow_mut()
                .take()
                .ok_or_else(|| ClientError::Disconnected("writer gone".into()))?;
            let written = write_frame(&mut writer, &head, trailer).await;
            *self.inner.writer.borrow_mut() = Some(writer);
            if let Err(error) = written {
                self.inner.pending.borrow_mut().remove(&correlation_id);
                let reason = format!("writing to {}: {error}", self.inner.address);
                self.inner.broken.replace(Some(reason.clone()));
                return Err(ClientError::Disconnected(reason));
            }
        }
        let decoded = response
            .await
            .map_err(|_| ClientError::Disconnected("connection closed".into()))??;
        if let Response::Error(error) = &decoded.response {
            return Err(ClientError::Broker {
                code: error.error,
                message: error.message.clone(),
            });
        }
        Ok(decoded)
    }

    /// `request`, given up after `timeout`: the connection is then broken (a broker that
    /// stopped answering, a paused process) and every request on it fails, so the caller
    /// connects again, perhaps elsewhere.
    pub async fn request_within(
        &self,
        request: &Request,
        trailer: &[&[u8]],
        timeout: Duration,
    ) -> Result<DecodedResponse, ClientError> {
        within(timeout, self.request(request, trailer))
            .await
            .unwrap_or_else(|| {
                let message = format!(
                    "{}: no answer to {} within {timeout:?}",
                    self.inner.address,
                    request.api_key()
                );
                self.inner.broken.replace(Some(message.clone()));
                for (_, waiter) in self.inner.pending.borrow_mut().drain() {
                    let _ = waiter.send(Err(ClientError::Disconnected(message.clone())));
                }
                Err(ClientError::Timeout(message))
            })
    }
}

/// `work`'s output, or `None` when it takes longer than `timeout` (it is then dropped).
pub async fn within<T>(timeout: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}

/// Writes one request frame, its head then its trailer's batches: at once with one vectored
/// `sendmsg` when the socket is plain TCP and takes it all, else what is left through the
/// stream, in one write (one TLS record per 16 KiB, not one per batch). The caller holds the
/// connection's write lock.
async fn write_frame(writer: &mut Writer, head: &[u8], trailer: &[&[u8]]) -> std::io::Result<()> {
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(1 + trailer.len());
    pieces.push(head);
    pieces.extend_from_slice(trailer);
    let rest = send_what_fits(writer.plain_fd, &pieces)?;
    match rest.as_slice() {
        [] => return Ok(()),
        [piece] => writer.half.write_all(piece).await?,
        pieces => writer.half.write_all(&pieces.concat()).await?,
    }
    writer.half.flush().await
}

async fn read_responses(
    inner: std::rc::Weak<Inner>,
    mut reader: ReadHalf<BoxedStream>,
    plain_fd: Option<std::os::fd::RawFd>,
) {
    let mut frames = FrameReader::new();
    let mut inbound = crate::net::Inbound::new(plain_fd);
    let reason = 'outer: loop {
        let read = inbound.read(&mut frames, &mut reader).await;
        let Some(inner) = inner.upgrade() else { return };
        match read {
            Ok(0) => break "closed by the broker".to_string(),
            Err(error) => break format!("reading: {error}"),
            Ok(_) => {}
        }
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    let correlation_id = frame.header().correlation_id;
                    let decoded =
                        decode_response(frame).map_err(|e| ClientError::Protocol(e.to_string()));
                    match inner.pending.borrow_mut().remove(&correlation_id) {
                        Some(waiter) => {
                            let _ = waiter.send(decoded);
                        }
                        None => {
                            break 'outer format!("response to unknown request {correlation_id}")
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => break 'outer format!("bad frame from the broker: {error}"),
            }
        }
    };
    if let Some(inner) = inner.upgrade() {
        let message = format!("{}: {reason}", inner.address);
        inner.broken.replace(Some(message.clone()));
        for (_, waiter) in inner.pending.borrow_mut().drain() {
            let _ = waiter.send(Err(ClientError::Disconnected(message.clone())));
        }
    }
}
