//! Writing a frame to a socket in one system call: its head and every batch of its trailer
//! go out with one non-blocking vectored `sendmsg`, straight from where they lie (the
//! batches are not copied into the frame first). Used by the broker for its responses and
//! by the client for its requests, on plain TCP; TLS must go through its stream.

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
