//! Writing a frame to a socket in one system call: its head and every batch of its trailer
//! go out with one non-blocking vectored `sendmsg`, straight from where they lie (the
//! batches are not copied into the frame first). Used by the broker for its responses and
//! by the client for its requests, on plain TCP; TLS must go through its stream.
//!
//! Receiving without waiting into a buffer's unused capacity (`receive_now`), so that the
//! frame reader need not zero-fill the space first.

use std::io::IoSlice;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, MsgFlags};

use crate::constants::SEND_IOVECS_MAX;

/// Writes as much of `pieces` (in order) as the socket takes now, without waiting, in one
/// vectored `sendmsg` per `SEND_IOVECS_MAX` pieces. Returns the bytes written: all of them,
/// or fewer when the socket's buffer filled (the caller writes the rest and may wait).
pub fn send_now(fd: RawFd, pieces: &[&[u8]]) -> std::io::Result<usize> {
    let mut written = 0;
    for group in pieces.chunks(SEND_IOVECS_MAX) {
        // On the stack: no allocation per response.
        let mut slices = [IoSlice::new(&[]); SEND_IOVECS_MAX];
        let mut count = 0;
        for piece in group.iter().filter(|piece| !piece.is_empty()) {
            slices[count] = IoSlice::new(piece);
            count += 1;
        }
        let slices = &slices[..count];
        let wanted: usize = group.iter().map(|piece| piece.len()).sum();
        if wanted == 0 {
            continue;
        }
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(fd, slices, &[], flags, None) {
            Ok(count) => {
                written += count;
                if count < wanted {
                    break;
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => break,
            Err(errno) => return Err(std::io::Error::from(errno)),
        }
    }
    Ok(written)
}

/// Sends what the socket takes of `pieces` now (`send_now`, when `plain_fd` is the socket of
/// a plain TCP stream; nothing is sent without one) and returns what is left, in order, for
/// the caller to write through its stream (empty when all went).
pub fn send_what_fits<'a>(
    plain_fd: Option<RawFd>,
    pieces: &[&'a [u8]],
) -> std::io::Result<Vec<&'a [u8]>> {
    let sent = match plain_fd {
        Some(fd) => send_now(fd, pieces)?,
        None => 0,
    };
    Ok(skip_bytes(pieces, sent))
}

/// Receives what socket `fd` holds now, without waiting, into `buffer`'s unused capacity
/// (at most `limit` bytes), and extends `buffer` by it: `Ok(Some(n))` for `n` bytes (`0` at
/// the end of the stream), `Ok(None)` when nothing is waiting. A `buffer` without unused
/// capacity, or a `limit` of 0, is an error.
pub fn receive_now(
    fd: RawFd,
    buffer: &mut bytes::BytesMut,
    limit: usize,
) -> std::io::Result<Option<usize>> {
    let spare = buffer.spare_capacity_mut();
    let spare_bytes = spare.len().min(limit);
    if spare_bytes == 0 {
        // 0 would read as the end of the stream.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no unused capacity to receive into",
        ));
    }
    loop {
        // SAFETY: `recv` writes at most `spare_bytes <= spare.len()` bytes at `spare`'s
        // start, which is memory `buffer` owns and does not use; it returns how many it
        // wrote, or -1.
        let received = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare_bytes,
                libc::MSG_DONTWAIT,
            )
        };
        if let Ok(count) = usize::try_from(received) {
            // SAFETY: the first `count <= spare.len()` bytes after the length were just
            // written by `recv`, so they are initialized and within the capacity.
            unsafe { buffer.set_len(buffer.len() + count) };
            return Ok(Some(count));
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(None),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(error),
        }
    }
}

/// Reads a connection's inbound bytes into its `FrameReader`. On a plain socket, bytes that
/// are already waiting are received straight into the reader's unused capacity
/// (`FrameReader::receive_now`: nothing is zero-filled for them); the stream's read is used
/// to wait, through a window the reader lends (`buffer_to_fill`). After a read that did not
/// fill its window the socket is taken to be drained, and the next call waits through the
/// stream at once (no extra system call to find nothing waiting).
#[derive(Debug)]
pub struct Inbound {
    plain_fd: Option<RawFd>,
    drained: bool,
    /// Bytes taken with `receive_now` (the rest came through the stream).
    received_directly: u64,
}

impl Inbound {
    /// `plain_fd` is the socket of a plain TCP stream; `None` over TLS (its bytes must be
    /// decrypted by the stream).
    pub fn new(plain_fd: Option<RawFd>) -> Inbound {
        Inbound {
            plain_fd,
            drained: true,
            received_directly: 0,
        }
    }

    /// Bytes received straight into the reader's unused capacity so far.
    pub fn received_directly(&self) -> u64 {
        self.received_directly
    }

    /// Reads at least one byte into `frames` (waiting for it through `stream` if none is
    /// waiting) and returns how many; 0 at the end of the stream. Take every frame with
    /// `next_frame` before calling again.
    pub async fn read<R: futures_lite::AsyncRead + Unpin>(
        &mut self,
        frames: &mut crate::protocol::FrameReader,
        stream: &mut R,
    ) -> std::io::Result<usize> {
        use futures_lite::AsyncReadExt;
        if let (Some(fd), false) = (self.plain_fd, self.drained) {
            if let Some(received) = frames.receive_now(fd)? {
                self.drained = !received.filled_space;
                self.received_directly += received.count as u64;
                return Ok(received.count);
            }
        }
        let space = frames.buffer_to_fill();
        let window = space.len();
        match stream.read(space).await {
            Ok(count) => {
                frames.filled(count);
                self.drained = count < window;
                Ok(count)
            }
            Err(error) => {
                frames.filled(0);
                Err(error)
            }
        }
    }
}

/// `pieces` without their first `skip` bytes.
pub fn skip_bytes<'a>(pieces: &[&'a [u8]], mut skip: usize) -> Vec<&'a [u8]> {
    let mut rest = Vec::with_capacity(pieces.len());
    for piece in pieces {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        rest.push(&piece[skip..]);
        skip = 0;
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Every frame of a stream that is all waiting, through `Inbound` with and without the
    /// socket: the first read waits through the stream and fills its window, so with the
    /// socket the rest is received directly; without it everything goes through the stream.
    #[test]
    fn inbound_cuts_the_same_frames_through_the_socket_and_the_stream() {
        use crate::constants::FRAME_READ_CHUNK_BYTES;
        use crate::protocol::{FrameHeader, FrameReader};
        use std::io::Write;
        let frame = |id: u32, trailer: usize| {
            let mut bytes = FrameHeader::new(1, 0, id, false, 3, trailer)
                .encode()
                .to_vec();
            bytes.extend_from_slice(b"abc");
            bytes.extend((0..trailer).map(|i| (i % 251) as u8 ^ id as u8));
            bytes
        };
        let expected = vec![
            frame(1, 10),
            frame(2, FRAME_READ_CHUNK_BYTES + 1000),
            frame(3, 0),
            frame(4, 3000),
        ];
        for direct in [true, false] {
            let (mut tx, rx) = UnixStream::pair().unwrap();
            // All of it waits before the first read (well within the socket's buffer).
            tx.write_all(&expected.concat()).unwrap();
            drop(tx);
            let mut inbound = Inbound::new(direct.then(|| rx.as_raw_fd()));
            let mut stream = futures::io::AllowStdIo::new(rx.try_clone().unwrap());
            let mut frames = FrameReader::new();
            let mut got = Vec::new();
            loop {
                let read = futures_lite::future::block_on(inbound.read(&mut frames, &mut stream));
                if read.unwrap() == 0 {
                    break;
                }
                while let Some(frame) = frames.next_frame().unwrap() {
                    got.push(frame.as_bytes().to_vec());
                }
            }
            frames.finish().unwrap();
            assert_eq!(got, expected, "direct {direct}");
            let total: usize = expected.iter().map(Vec::len).sum();
            let directly = inbound.received_directly() as usize;
            if direct {
                assert!(directly > 0 && directly < total, "{directly} of {total}");
            } else {
                assert_eq!(directly, 0);
            }
        }
    }

    #[test]
    fn send_now_writes_every_piece_in_order_in_one_call() {
        let (left, mut right) = UnixStream::pair().unwrap();
        let pieces: Vec<Vec<u8>> = (0..(SEND_IOVECS_MAX + 5))
            .map(|i| vec![(i % 251) as u8; i % 7])
            .collect();
        let slices: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
        let written = send_now(left.as_raw_fd(), &slices).unwrap();
        let expected: Vec<u8> = pieces.concat();
        assert_eq!(written, expected.len());
        drop(left);
        let mut received = Vec::new();
        right.read_to_end(&mut received).unwrap();
        assert_eq!(received, expected);
    }

    #[test]
    fn send_now_stops_without_waiting_when_the_socket_is_full() {
        let (left, mut right) = UnixStream::pair().unwrap();
        let big = vec![7u8; 8 << 20];
        let written = send_now(left.as_raw_fd(), &[&big, b"tail"]).unwrap();
        assert!(
            written < big.len(),
            "a socket pair takes less than 8 MiB at once"
        );
        let rest = skip_bytes(&[&big, b"tail"], written);
        assert_eq!(
            rest.iter().map(|p| p.len()).sum::<usize>(),
            big.len() + 4 - written
        );
        assert_eq!(rest.last().unwrap(), b"tail");
        let mut first = vec![0u8; written];
        right.read_exact(&mut first).unwrap();
        assert!(first.iter().all(|&b| b == 7));
    }

    #[test]
    fn skip_bytes_cuts_across_pieces() {
        let pieces: [&[u8]; 3] = [b"abc", b"", b"defg"];
        assert_eq!(skip_bytes(&pieces, 0), vec![&b"abc"[..], b"defg"]);
        assert_eq!(skip_bytes(&pieces, 2), vec![&b"c"[..], b"defg"]);
        assert_eq!(skip_bytes(&pieces, 3), vec![&b"defg"[..]]);
        assert_eq!(skip_bytes(&pieces, 5), vec![&b"fg"[..]]);
        assert!(skip_bytes(&pieces, 7).is_empty());
    }
}
