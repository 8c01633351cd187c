//! `FrameReader`: cuts a byte stream into frames. It does no IO itself, except that
//! `receive_now` takes what a plain socket already holds (one non-blocking `recv`).
//!
//! The connection task asks for space (`buffer_to_fill`), reads into it from the socket,
//! reports how much arrived (`filled`), then takes every complete frame (`next_frame`) before
//! asking for space again:
//!
//! ```text
//! loop {
//!     let n = socket.read(reader.buffer_to_fill()).await?;
//!     if n == 0 { return reader.finish(); }            // end of stream
//!     reader.filled(n);
//!     while let Some(frame) = reader.next_frame()? {    // FrameError: close
//!         handle(frame);
//!     }
//! }
//! ```
//!
//! On a plain socket the connection may instead let the reader receive by itself, without
//! waiting (`receive_now`): the kernel then writes straight into the buffer's unused
//! capacity, which is never zero-filled first. `buffer_to_fill` (for TLS, and for the wait
//! when the socket was drained) hands out at most `FRAME_READ_WINDOW_BYTES` at a time and
//! zero-fills only what it hands out for the first time.
//!
//! Memory: the receive buffer is a region of one allocation, used front to back. Small
//! frames share a region of `FRAME_READ_CHUNK_BYTES`; a frame larger than that gets a region
//! of exactly its own size, allocated only after its header was checked, so a lying length
//! above `FRAME_BYTES_MAX` is refused before anything is allocated for it. The reader thus
//! holds at most `max(FRAME_READ_CHUNK_BYTES, length of the frame being read)` bytes. Moving
//! to a new region copies only the bytes of the frame in progress that the old one holds
//! (at most a chunk). After a frame larger than a chunk the reader expects another (a
//! producer's requests are alike): it receives the next header alone, into a region of a
//! header's size, so that a large frame's region is allocated before any of its body
//! arrives and only the header is copied into it. A small frame after all costs one more
//! `recv` of its body, and the reader goes back to filling whole chunks. Each `Frame` handed
//! out is a `BytesMut` view of its region (writable,
//! disjoint from every other frame's): it keeps that allocation alive (the whole chunk, for a
//! small frame) until it and every share cut from it are dropped.

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use bytes::BytesMut;

use super::frame::{decode_frame_header, field, Frame, FrameError, FrameHeader};
use crate::constants::{FRAME_HEADER_BYTES, FRAME_READ_CHUNK_BYTES, FRAME_READ_WINDOW_BYTES};

/// What one `FrameReader::receive_now` took from its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received; 0 at the end of the stream.
    pub count: usize,
    /// They filled all the space offered, so more may be waiting.
    pub filled_space: bool,
}

/// Incremental frame decoder of one connection's inbound stream; owned by the connection's
/// task on its shard.
pub struct FrameReader {
    /// The current region: its length is the received data, starting at a frame boundary;
    /// its capacity is the space for more.
    region: BytesMut,
    /// `region.len()` outside of a fill; kept apart because `buffer_to_fill` lends more.
    filled: usize,
    /// The first `initialized` bytes of the region (`>= filled`) have been written (zeros or
    /// received bytes), so they may be lent as `&mut [u8]` again without zero-filling.
    initialized: usize,
    /// The checked header of the frame at the start of the region, once its 20 bytes are in.
    pending: Option<FrameHeader>,
    /// The last frame handed out was larger than a chunk: receive the next header alone.
    header_first: bool,
    /// Bytes copied from one region to the next so far: the part of a frame received before
    /// its region was known to be too small (shown by `Debug`, checked by the tests).
    moved_bytes: u64,
    /// The stream is broken; every later call reports this again.
    failed: Option<FrameError>,
}

impl Default for FrameReader {
    fn default() -> FrameReader {
        FrameReader::new()
    }
}

impl fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("region_bytes", &self.region.len())
            .field("region_capacity", &self.region.capacity())
            .field("filled", &self.filled)
            .field("initialized", &self.initialized)
            .field("pending", &self.pending)
            .field("header_first", &self.header_first)
            .field("moved_bytes", &self.moved_bytes)
            .field("failed", &self.failed)
            .finish()
    }
}

impl FrameReader {
    /// A reader at the start of a stream. Allocates nothing until space is asked for.
    pub fn new() -> FrameReader {
        FrameReader {
            region: BytesMut::new(),
            filled: 0,
            initialized: 0,
            pending: None,
            header_first: false,
            moved_bytes: 0,
            failed: None,
        }
    }

    /// Receiving stops at the end of the next header (the frame before it was large).
    fn header_alone(&self) -> bool {
        self.header_first && self.pending.is_none()
    }

    /// The most bytes the next receive may take: up to the end of the header when it comes
    /// alone, else no limit beyond the space offered.
    fn receive_limit(&self) -> usize {
        if self.header_alone() {
            FRAME_HEADER_BYTES - self.filled
        } else {
            usize::MAX
        }
    }

    /// Bytes received but not yet handed out as a frame.
    pub fn buffered_bytes(&self) -> usize {
        self.filled
    }

    /// The correlation id in the header at the start of the buffered bytes, once all its
    /// bytes are in, even of a header `next_frame` refused: a server echoes it in the one
    /// `ErrorResponse` it sends before closing. `None` while the header is incomplete.
    pub fn buffered_correlation_id(&self) -> Option<u32> {
        let at = field::CORRELATION_ID;
        (self.filled >= FRAME_HEADER_BYTES)
            .then(|| u32::from_le_bytes(self.region[at..at + 4].try_into().expect("four bytes")))
    }

    /// Bytes needed before `next_frame` can make progress: a header, or the whole frame.
    fn bytes_needed(&self) -> usize {
        match self.pending {
            Some(header) => header.frame_bytes(),
            None => FRAME_HEADER_BYTES,
        }
    }

    /// Makes the region's capacity hold the frame in progress (or its header): when it does
    /// not, moves the bytes received so far into a new region of `max(needed, chunk)` bytes,
    /// allocated without zero-filling.
    fn make_room(&mut self) {
        assert!(
            self.failed.is_none() && self.filled < self.bytes_needed(),
            "take frames with next_frame before asking for space: {self:?}"
        );
        // Space lent by `buffer_to_fill` and never reported (a read that failed or was
        // dropped) holds no data: only `filled` bytes were received.
        self.region.truncate(self.filled);
        let needed = self.bytes_needed();
        if self.region.capacity() < needed {
            // A header received alone gets a region of its own size: if its frame is large,
            // the frame's region follows at once; if small, a chunk.
            let capacity = if self.header_alone() {
                needed
            } else {
                needed.max(FRAME_READ_CHUNK_BYTES)
            };
            let mut region = BytesMut::with_capacity(capacity);
            region.extend_from_slice(&self.region[..self.filled]);
            self.moved_bytes += self.filled as u64;
            self.region = region;
            self.initialized = self.filled;
        }
    }

    /// Space to receive into; never empty, at most `FRAME_READ_WINDOW_BYTES`. Report what was
    /// written with `filled`. The bytes received so far must not already hold a complete
    /// header or frame (take every frame with `next_frame` until it returns `Ok(None)`
    /// first); a call that breaks this, or one after a `FrameError`, is a programmer error
    /// and panics.
    pub fn buffer_to_fill(&mut self) -> &mut [u8] {
        self.make_room();
        let end = self
            .region
            .capacity()
            .min(self.filled + FRAME_READ_WINDOW_BYTES)
            .min(self.filled.saturating_add(self.receive_limit()));
        if self.initialized < end {
            let spare = self.region.spare_capacity_mut();
            let from = self.initialized - self.filled;
            spare[from..end - self.filled].fill(MaybeUninit::new(0));
            self.initialized = end;
        }
        // SAFETY: the first `initialized` bytes of the region's capacity were all written
        // (by zero-filling above or earlier, or by received data: see `initialized`), and
        // `end <= initialized <= capacity`.
        unsafe { self.region.set_len(end) };
        &mut self.region[self.filled..]
    }

    /// Records that `n` bytes were written at the start of the last `buffer_to_fill` slice.
    pub fn filled(&mut self, n: usize) {
        assert!(
            n <= self.region.len() - self.filled,
            "filled {n} bytes into a smaller buffer: {self:?}"
        );
        self.filled += n;
        self.region.truncate(self.filled);
    }

    /// Receives what the plain socket `fd` holds now into the region's unused capacity
    /// (never zero-filled for it), without waiting: `Ok(None)` when nothing was waiting
    /// (then wait for the socket with `buffer_to_fill` and a read). A count of 0 is the end
    /// of the stream. Same precondition as `buffer_to_fill`.
    pub fn receive_now(&mut self, fd: RawFd) -> std::io::Result<Option<Received>> {
        self.make_room();
        let limit = self.receive_limit();
        let offered = (self.region.capacity() - self.filled).min(limit);
        let received = crate::net::receive_now(fd, &mut self.region, limit)?;
        self.filled = self.region.len();
        self.initialized = self.initialized.max(self.filled);
        Ok(received.map(|count| Received {
            count,
            filled_space: count == offered,
        }))
    }

    /// Copies as much of `bytes` as the reader accepts now and returns how many it took:
    /// none while a complete header or frame waits for `next_frame` (or after a
    /// `FrameError`), else at least one.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || self.failed.is_some() || self.filled >= self.bytes_needed() {
            return 0;
        }
        let space = self.buffer_to_fill();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the reason the stream
    /// is broken (then the connection must be closed; the error repeats on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let header = match self.pending {
            Some(header) => header,
            None => {
                if self.filled < FRAME_HEADER_BYTES {
                    return Ok(None);
                }
                match decode_frame_header(&self.region[..FRAME_HEADER_BYTES]) {
                    Ok(header) => *self.pending.insert(header),
                    Err(error) => {
                        self.failed = Some(error.clone());
                        return Err(error);
                    }
                }
            }
        };
        let frame_bytes = header.frame_bytes();
        if self.filled < frame_bytes {
            return Ok(None);
        }
        let bytes = self.region.split_to(frame_bytes);
        self.filled -= frame_bytes;
        self.initialized -= frame_bytes;
        self.pending = None;
        self.header_first = frame_bytes > FRAME_READ_CHUNK_BYTES;
        Ok(Some(Frame::from_parts(header, bytes)))
    }

    /// At the end of the stream: `Ok` if it ended at a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.filled > 0 {
            return Err(FrameError::EndOfStreamInFrame {
                buffered: self.filled,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::FRAME_BYTES_MAX;

    /// A frame with an opaque body and trailer (the reader does not look inside).
    fn frame(correlation_id: u32, body: &[u8], trailer: &[u8]) -> Vec<u8> {
        let header = FrameHeader::new(1, 0, correlation_id, false, body.len(), trailer.len());
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(trailer);
        bytes
    }

    fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let frames = vec![
            frame(1, b"", b""),
            frame(2, b"body", b"trailer bytes"),
            frame(3, &[7; 300], &[9; FRAME_READ_CHUNK_BYTES + 5]),
            frame(4, b"x", b""),
        ];
        (frames.concat(), frames)
    }

    /// Feeds `input` through `feed`, taking every frame as soon as it is complete.
    fn feed_all(
        reader: &mut FrameReader,
        mut input: &[u8],
        frames: &mut Vec<Frame>,
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            let n = reader.feed(input);
            input = &input[n..];
            while let Some(frame) = reader.next_frame()? {
                frames.push(frame);
            }
        }
        Ok(())
    }

    #[test]
    fn frames_split_at_every_boundary_are_reassembled() {
        let (input, expected) = stream();
        for split in 0..=input.len() {
            let mut reader = FrameReader::new();
            let mut frames = Vec::new();
            feed_all(&mut reader, &input[..split], &mut frames).unwrap();
            feed_all(&mut reader, &input[split..], &mut frames).unwrap();
            reader.finish().unwrap();
            let got: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
            let want: Vec<&[u8]> = expected.iter().map(|f| &f[..]).collect();
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn frames_read_in_small_and_odd_pieces_are_reassembled() {
        let (input, expected) = stream();
        for sizes in [
            &[1][..],
            &[2],
            &[3, 17],
            &[19, 1, 20],
            &[4096],
            &[usize::MAX],
        ] {
            let frames = crate::protocol::tests::read_frames(&input, sizes);
            assert_eq!(frames.len(), expected.len(), "{sizes:?}");
            for (frame, want) in frames.iter().zip(&expected) {
                assert_eq!(frame.as_bytes(), &want[..], "{sizes:?}");
            }
        }
    }

    #[test]
    fn small_frames_share_a_chunk_and_large_frames_get_exact_regions() {
        let mut reader = FrameReader::new();
        assert_eq!(reader.buffer_to_fill().len(), FRAME_READ_CHUNK_BYTES);

        let large = frame(5, b"b", &[1; 3 * FRAME_READ_CHUNK_BYTES]);
        let n = reader.feed(&large);
        assert_eq!(n, FRAME_READ_CHUNK_BYTES);
        assert!(reader.next_frame().unwrap().is_none());
        // Header checked: the next region is exactly the frame, lent a window at a time.
        assert_eq!(reader.buffer_to_fill().len(), FRAME_READ_WINDOW_BYTES);
        reader.filled(0);
        assert_eq!(reader.region.capacity(), large.len());
        let mut at = n;
        while at < large.len() {
            at += reader.feed(&large[at..]);
        }
        let frame = reader.next_frame().unwrap().unwrap();
        assert_eq!(frame.as_bytes(), &large[..]);
        assert_eq!(frame.header().trailer_length(), 3 * FRAME_READ_CHUNK_BYTES);
        reader.finish().unwrap();
    }

    #[test]
    fn lending_space_zero_fills_only_the_window_lent() {
        let large = frame(6, b"b", &[3; 8 * FRAME_READ_WINDOW_BYTES]);
        let mut reader = FrameReader::new();
        let n = reader.feed(&large[..FRAME_HEADER_BYTES + 10]);
        assert!(reader.next_frame().unwrap().is_none());
        assert_eq!(reader.buffer_to_fill().len(), FRAME_READ_WINDOW_BYTES);
        assert_eq!(reader.initialized, n + FRAME_READ_WINDOW_BYTES);
        // Lending again after 5 bytes arrived zero-fills only the 5 bytes the window moved.
        reader.filled(5);
        assert_eq!(reader.buffer_to_fill().len(), FRAME_READ_WINDOW_BYTES);
        assert_eq!(reader.initialized, n + 5 + FRAME_READ_WINDOW_BYTES);
        reader.filled(0);
        assert!(reader.region.capacity() >= large.len());
    }

    #[test]
    fn space_lent_and_never_reported_is_not_taken_for_data() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let input = frame(7, b"body", b"trailer");
        let mut reader = FrameReader::new();
        reader.feed(&input[..3]);
        // A read is lent space, then dropped (or fails) without `filled`.
        reader.buffer_to_fill()[..4].copy_from_slice(b"junk");
        tx.write_all(&input[3..]).unwrap();
        let received = reader.receive_now(rx.as_raw_fd()).unwrap().unwrap();
        assert_eq!(received.count, input.len() - 3);
        assert_eq!(reader.next_frame().unwrap().unwrap().as_bytes(), &input[..]);
    }

    /// Writes `input` into one end of a socket pair in pieces of `sizes`, receiving on the
    /// other with `receive_now` only.
    fn receive_all(input: &[u8], sizes: &[usize]) -> Vec<Frame> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut reader = FrameReader::new();
        let mut frames = Vec::new();
        let mut sent = 0;
        let mut size = sizes.iter().cycle();
        let mut ended = false;
        while !ended {
            if sent < input.len() {
                let n = (*size.next().unwrap()).min(input.len() - sent);
                tx.write_all(&input[sent..sent + n]).unwrap();
                sent += n;
                if sent == input.len() {
                    tx.shutdown(std::net::Shutdown::Write).unwrap();
                }
            }
            loop {
                match reader.receive_now(rx.as_raw_fd()).unwrap() {
                    None => break,
                    Some(Received { count: 0, .. }) => {
                        ended = true;
                        break;
                    }
                    Some(received) => {
                        assert!(received.count > 0);
                        while let Some(frame) = reader.next_frame().unwrap() {
                            frames.push(frame);
                        }
                    }
                }
            }
        }
        reader.finish().unwrap();
        frames
    }

    #[test]
    fn frames_received_from_a_socket_are_reassembled() {
        let (input, expected) = stream();
        for sizes in [
            &[1][..],
            &[7, 300],
            &[4096],
            &[FRAME_READ_CHUNK_BYTES + 3],
            &[1 << 20],
        ] {
            let frames = receive_all(&input, sizes);
            let got: Vec<&[u8]> = frames.iter().map(|f| f.as_bytes()).collect();
            let want: Vec<&[u8]> = expected.iter().map(|f| &f[..]).collect();
            assert_eq!(got, want, "{sizes:?}");
        }
    }

    /// After a large frame the next header is received alone, so the next large frame's
    /// region is allocated before its body arrives: of two large frames waiting back to
    /// back, only the first has the part it put in a chunk copied into its own region.
    #[test]
    fn a_large_frame_after_a_large_frame_is_received_into_its_own_region() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let expected = [
            frame(1, b"small", b"1"),
            frame(2, b"", &[2; FRAME_READ_CHUNK_BYTES + 1000]),
            frame(3, b"", &[3; FRAME_READ_CHUNK_BYTES + 2000]),
            frame(4, b"small", b"4"),
            frame(5, b"small", b"5"),
        ];
        // All of it waits before the first receive (within a socket pair's buffer).
        tx.write_all(&expected.concat()).unwrap();
        tx.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        while reader
            .receive_now(rx.as_raw_fd())
            .unwrap()
            .expect("all waiting")
            .count
            > 0
        {
            while let Some(frame) = reader.next_frame().unwrap() {
                got.push(frame.as_bytes().to_vec());
            }
        }
        reader.finish().unwrap();
        assert_eq!(got, expected);
        // Frame 2 moved what the first chunk held of it; frame 3 only its header, and frame 4
        // (small, after a large one) its header into a chunk.
        let moved = reader.moved_bytes as usize;
        assert!(
            moved <= FRAME_READ_CHUNK_BYTES + 3 * FRAME_HEADER_BYTES,
            "{moved} bytes moved"
        );
        assert!(moved > FRAME_READ_CHUNK_BYTES / 2, "{moved} bytes moved");
    }

    #[test]
    fn receiving_reports_nothing_waiting_a_full_space_and_the_end() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let fd = rx.as_raw_fd();
        let mut reader = FrameReader::new();
        assert_eq!(reader.receive_now(fd).unwrap(), None);
        // A frame a little larger than a chunk, all waiting (well within a socket's buffer).
        let large = frame(9, b"", &[5; FRAME_READ_CHUNK_BYTES + 1000]);
        tx.write_all(&large).unwrap();
        let full = |count| {
            Some(Received {
                count,
                filled_space: true,
            })
        };
        // The first chunk is filled; its header asks for a region of the whole frame.
        assert_eq!(
            reader.receive_now(fd).unwrap(),
            full(FRAME_READ_CHUNK_BYTES)
        );
        assert!(reader.next_frame().unwrap().is_none());
        let rest = large.len() - FRAME_READ_CHUNK_BYTES;
        let received = reader.receive_now(fd).unwrap().unwrap();
        assert_eq!(received.count, rest);
        assert_eq!(reader.next_frame().unwrap().unwrap().as_bytes(), &large[..]);
        // A small frame after a large one: its header comes alone (the space offered is the
        // header's, and it is filled), then the rest into a fresh chunk, nothing of the chunk
        // written beyond it.
        let small = frame(10, b"x", b"y");
        tx.write_all(&small).unwrap();
        assert_eq!(reader.receive_now(fd).unwrap(), full(FRAME_HEADER_BYTES));
        assert!(reader.next_frame().unwrap().is_none());
        let received = reader.receive_now(fd).unwrap().unwrap();
        assert_eq!(received.count, small.len() - FRAME_HEADER_BYTES);
        assert!(!received.filled_space);
        assert_eq!(reader.initialized, small.len());
        assert!(reader.region.capacity() > small.len());
        assert_eq!(reader.next_frame().unwrap().unwrap().as_bytes(), &small[..]);
        assert_eq!(reader.receive_now(fd).unwrap(), None);
        drop(tx);
        let end = Received {
            count: 0,
            filled_space: false,
        };
        assert_eq!(reader.receive_now(fd).unwrap(), Some(end));
        reader.finish().unwrap();
    }

    #[test]
    fn a_lying_length_is_refused_before_allocation() {
        let mut bytes = frame(1, b"", b"");
        bytes[..4].copy_from_slice(&(FRAME_BYTES_MAX as u32 + 1).to_le_bytes());
        let mut reader = FrameReader::new();
        assert_eq!(reader.feed(&bytes), FRAME_HEADER_BYTES);
        let error = reader.next_frame().unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { .. }), "{error}");
        assert_eq!(reader.next_frame(), Err(error.clone()));
        assert_eq!(reader.feed(b"more"), 0);
        assert_eq!(reader.finish(), Err(error));
        assert!(reader.region.capacity() <= FRAME_READ_CHUNK_BYTES);
    }

    #[test]
    fn a_refused_header_still_shows_its_correlation_id() {
        let mut bytes = frame(0xC0FF_EE01, b"", b"");
        bytes[..4].copy_from_slice(&(FRAME_BYTES_MAX as u32 + 1).to_le_bytes());
        let mut reader = FrameReader::new();
        reader.feed(&bytes[..FRAME_HEADER_BYTES - 1]);
        assert_eq!(reader.buffered_correlation_id(), None);
        reader.feed(&bytes[FRAME_HEADER_BYTES - 1..]);
        assert!(reader.next_frame().is_err());
        assert_eq!(reader.buffered_correlation_id(), Some(0xC0FF_EE01));
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_reported() {
        let bytes = frame(1, b"abc", b"");
        for cut in 1..bytes.len() {
            let mut reader = FrameReader::new();
            reader.feed(&bytes[..cut]);
            assert_eq!(reader.next_frame(), Ok(None));
            assert_eq!(
                reader.finish(),
                Err(FrameError::EndOfStreamInFrame { buffered: cut })
            );
        }
    }

    #[test]
    #[should_panic(expected = "take frames with next_frame")]
    fn asking_for_space_with_a_frame_waiting_is_a_programmer_error() {
        let mut reader = FrameReader::new();
        reader.feed(&frame(1, b"", b""));
        reader.buffer_to_fill();
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            let mut bytes = vec![0u8; 64];
            for byte in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            // Keep lengths small often enough to reach the frame path.
            if state % 2 == 0 {
                bytes[..4].copy_from_slice(&((state >> 8) as u32 % 64).to_le_bytes());
            }
            let mut reader = FrameReader::new();
            let mut frames = Vec::new();
            if feed_all(&mut reader, &bytes, &mut frames).is_ok() {
                let consumed: usize = frames.iter().map(|f| f.as_bytes().len()).sum();
                assert_eq!(consumed + reader.buffered_bytes(), bytes.len());
            }
        }
    }
}
