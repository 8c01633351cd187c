//! The fixed 20-byte frame header, and one whole frame (diagram in the module above).
//!
//! A frame header that breaks a rule is a `FrameError`: the byte stream cannot be trusted to
//! be at a frame boundary any more, so the connection is closed (after at most one
//! `ErrorResponse` carrying `FrameError::error_code`).

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::api::ApiKey;
use super::error_code::ErrorCode;
use crate::constants::{BODY_BYTES_MAX, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Byte offsets of each frame header field, each built from the one before it.
pub mod field {
    pub const FRAME_LENGTH: usize = 0;
    pub const API_KEY: usize = FRAME_LENGTH + 4;
    pub const API_VERSION: usize = API_KEY + 2;
    pub const CORRELATION_ID: usize = API_VERSION + 2;
    pub const FLAGS: usize = CORRELATION_ID + 4;
    pub const RESERVED: usize = FLAGS + 2;
    pub const BODY_LENGTH: usize = RESERVED + 2;
    pub const BODY: usize = BODY_LENGTH + 4;
}

/// The header bytes `frame_length` counts: everything after the length field itself.
pub const FRAME_LENGTH_MIN: usize = FRAME_HEADER_BYTES - field::API_KEY;

/// Flag bit 0: the frame is a response (else a request).
pub const FLAG_RESPONSE: u16 = 1 << 0;
/// Flag bits this version defines; a frame with any other bit set is refused.
pub const FLAGS_KNOWN_MASK: u16 = FLAG_RESPONSE;

const _: () = assert!(field::BODY == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_LENGTH_MIN == 16);

/// Why a frame header (or a stream of frames) was refused. The connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame header needs {FRAME_HEADER_BYTES} bytes, {available} present")]
    Truncated { available: usize },
    #[error(
        "frame length {frame_length} is shorter than the {FRAME_LENGTH_MIN} header bytes it counts"
    )]
    TooShort { frame_length: u32 },
    #[error("frame length {frame_length} exceeds the maximum of {FRAME_BYTES_MAX} bytes")]
    TooLarge { frame_length: u32 },
    #[error(
        "frame body length {body_length} exceeds the body maximum of {BODY_BYTES_MAX} bytes \
         or the {frame_length}-byte frame"
    )]
    BodyTooLarge { body_length: u32, frame_length: u32 },
    #[error("unknown frame flag bits {0:#06x}")]
    UnknownFlags(u16),
    #[error("reserved frame header field is {0:#06x}, not zero")]
    ReservedNotZero(u16),
    #[error("frame declares {declared} bytes but {available} bytes are present")]
    LengthMismatch { declared: usize, available: usize },
    #[error("stream ended inside a frame, {buffered} bytes into it")]
    EndOfStreamInFrame { buffered: usize },
}

impl FrameError {
    /// The code for the `ErrorResponse` a server may send before closing the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } | FrameError::BodyTooLarge { .. } => {
                ErrorCode::FrameTooLarge
            }
            FrameError::Truncated { .. }
            | FrameError::TooShort { .. }
            | FrameError::UnknownFlags(_)
            | FrameError::ReservedNotZero(_)
            | FrameError::LengthMismatch { .. }
            | FrameError::EndOfStreamInFrame { .. } => ErrorCode::InvalidRequest,
        }
    }
}

/// A validated frame header. Plain data, owned by whoever decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Bytes after the length field: header rest (16) + body + trailer.
    pub frame_length: u32,
    /// The raw api key (`ApiKey::from_u16` may not know it).
    pub api_key: u16,
    pub api_version: u16,
    /// Chosen by the client, echoed by the server; matches a response to its request.
    pub correlation_id: u32,
    pub is_response: bool,
    pub body_length: u32,
}

impl FrameHeader {
    /// A header for a body and trailer of these sizes. Panics if the sizes break the frame
    /// limits (the encoder checks them first).
    pub fn new(
        api_key: u16,
        api_version: u16,
        correlation_id: u32,
        is_response: bool,
        body_length: usize,
        trailer_length: usize,
    ) -> FrameHeader {
        assert!(body_length <= BODY_BYTES_MAX, "body of {body_length} bytes");
        let frame_length = FRAME_LENGTH_MIN + body_length + trailer_length;
        assert!(
            frame_length <= FRAME_BYTES_MAX,
            "frame of {frame_length} bytes"
        );
        FrameHeader {
            frame_length: frame_length as u32,
            api_key,
            api_version,
            correlation_id,
            is_response,
            body_length: body_length as u32,
        }
    }

    /// The api, if this build knows the key.
    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::from_u16(self.api_key)
    }

    /// Size of the whole frame on the wire, length field included.
    pub fn frame_bytes(&self) -> usize {
        field::API_KEY + self.frame_length as usize
    }

    /// Where the body sits in the whole frame.
    pub fn body_range(&self) -> Range<usize> {
        FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + self.body_length as usize
    }

    /// Where the trailer sits in the whole frame (it runs to the end).
    pub fn trailer_range(&self) -> Range<usize> {
        self.body_range().end..self.frame_bytes()
    }

    pub fn trailer_length(&self) -> usize {
        self.trailer_range().len()
    }

    /// The 20 header bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let flags = if self.is_response { FLAG_RESPONSE } else { 0 };
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        put(
            &mut bytes,
            field::FRAME_LENGTH,
            &self.frame_length.to_le_bytes(),
        );
        put(&mut bytes, field::API_KEY, &self.api_key.to_le_bytes());
        put(
            &mut bytes,
            field::API_VERSION,
            &self.api_version.to_le_bytes(),
        );
        put(
            &mut bytes,
            field::CORRELATION_ID,
            &self.correlation_id.to_le_bytes(),
        );
        put(&mut bytes, field::FLAGS, &flags.to_le_bytes());
        put(
            &mut bytes,
            field::BODY_LENGTH,
            &self.body_length.to_le_bytes(),
        );
        bytes
    }
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decodes and checks the header at the start of `bytes` (which may hold more: the body, or
/// only part of it). Checks `16 <= frame_length <= FRAME_BYTES_MAX`,
/// `body_length <= min(BODY_BYTES_MAX, frame_length - 16)`, unknown flag bits and the
/// reserved field zero. The api key and version are not checked here (`decode_request` does,
/// and answers with an error response instead of closing).
pub fn decode_frame_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            available: bytes.len(),
        });
    }
    let frame_length = u32_at(bytes, field::FRAME_LENGTH);
    if (frame_length as usize) < FRAME_LENGTH_MIN {
        return Err(FrameError::TooShort { frame_length });
    }
    if frame_length as usize > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { frame_length });
    }
    let flags = u16_at(bytes, field::FLAGS);
    if flags & !FLAGS_KNOWN_MASK != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    let reserved = u16_at(bytes, field::RESERVED);
    if reserved != 0 {
        return Err(FrameError::ReservedNotZero(reserved));
    }
    let body_length = u32_at(bytes, field::BODY_LENGTH);
    let body_length_max = BODY_BYTES_MAX.min(frame_length as usize - FRAME_LENGTH_MIN);
    if body_length as usize > body_length_max {
        return Err(FrameError::BodyTooLarge {
            body_length,
            frame_length,
        });
    }
    Ok(FrameHeader {
        frame_length,
        api_key: u16_at(bytes, field::API_KEY),
        api_version: u16_at(bytes, field::API_VERSION),
        correlation_id: u32_at(bytes, field::CORRELATION_ID),
        is_response: flags & FLAG_RESPONSE != 0,
        body_length,
    })
}

/// One whole frame, header checked, owned (`BytesMut`) but not copied: the frame reader
/// cuts it from its receive buffer, and decoding cuts the trailer into the shares it hands
/// on (to a shard, a log, a consumer), which keep that buffer alive instead of copying it.
/// A produce request's batches stay writable, so the broker stamps its header fields into
/// them where they arrived.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    header: FrameHeader,
    /// The whole frame as on the wire, length field included.
    bytes: BytesMut,
}

impl Frame {
    /// A frame from a buffer holding exactly one frame.
    pub fn parse(bytes: impl Into<BytesMut>) -> Result<Frame, FrameError> {
        let bytes = bytes.into();
        let header = decode_frame_header(&bytes)?;
        if header.frame_bytes() != bytes.len() {
            return Err(FrameError::LengthMismatch {
                declared: header.frame_bytes(),
                available: bytes.len(),
            });
        }
        Ok(Frame { header, bytes })
    }

    /// A frame from a header already decoded from the start of `bytes`.
    pub(crate) fn from_parts(header: FrameHeader, bytes: BytesMut) -> Frame {
        assert_eq!(header.frame_bytes(), bytes.len(), "{header:?}");
        Frame { header, bytes }
    }

    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The whole frame as on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes.freeze()
    }

    /// The rkyv body.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.header.body_range()]
    }

    /// The trailer, taken from the frame without a copy (the frame keeps its header and
    /// body; taking it again gives nothing).
    pub fn take_trailer(&mut self) -> BytesMut {
        let start = self.header.trailer_range().start;
        self.bytes.split_off(start)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(frame_length: u32, flags: u16, reserved: u16, body_length: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; FRAME_HEADER_BYTES];
        put(&mut bytes, field::FRAME_LENGTH, &frame_length.to_le_bytes());
        put(&mut bytes, field::API_KEY, &2u16.to_le_bytes());
        put(&mut bytes, field::API_VERSION, &7u16.to_le_bytes());
        put(
            &mut bytes,
            field::CORRELATION_ID,
            &0xDEAD_BEEFu32.to_le_bytes(),
        );
        put(&mut bytes, field::FLAGS, &flags.to_le_bytes());
        put(&mut bytes, field::RESERVED, &reserved.to_le_bytes());
        put(&mut bytes, field::BODY_LENGTH, &body_length.to_le_bytes());
        bytes
    }

    #[test]
    fn header_layout_is_as_drawn() {
        let header = FrameHeader::new(2, 7, 0xDEAD_BEEF, true, 100, 50);
        assert_eq!(header.frame_length, 16 + 100 + 50);
        let bytes = header.encode();
        assert_eq!(bytes.to_vec(), header_bytes(166, 1, 0, 100));
        assert_eq!(decode_frame_header(&bytes), Ok(header));
        assert_eq!(header.frame_bytes(), 170);
        assert_eq!(header.body_range(), 20..120);
        assert_eq!(header.trailer_range(), 120..170);
        assert_eq!(header.api(), Some(ApiKey::Produce));
    }

    #[test]
    fn bad_headers_are_refused() {
        let max = FRAME_BYTES_MAX as u32;
        let cases = [
            (
                header_bytes(15, 0, 0, 0),
                FrameError::TooShort { frame_length: 15 },
            ),
            (
                header_bytes(0, 0, 0, 0),
                FrameError::TooShort { frame_length: 0 },
            ),
            (
                header_bytes(max + 1, 0, 0, 0),
                FrameError::TooLarge {
                    frame_length: max + 1,
                },
            ),
            (
                header_bytes(u32::MAX, 0, 0, 0),
                FrameError::TooLarge {
                    frame_length: u32::MAX,
                },
            ),
            (header_bytes(16, 2, 0, 0), FrameError::UnknownFlags(2)),
            (
                header_bytes(16, 0x8001, 0, 0),
                FrameError::UnknownFlags(0x8001),
            ),
            (header_bytes(16, 0, 1, 0), FrameError::ReservedNotZero(1)),
            (
                header_bytes(20, 0, 0, 5),
                FrameError::BodyTooLarge {
                    body_length: 5,
                    frame_length: 20,
                },
            ),
            (
                header_bytes(max, 0, 0, BODY_BYTES_MAX as u32 + 1),
                FrameError::BodyTooLarge {
                    body_length: BODY_BYTES_MAX as u32 + 1,
                    frame_length: max,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_frame_header(&bytes), Err(expected));
        }
        for len in 0..FRAME_HEADER_BYTES {
            assert_eq!(
                decode_frame_header(&header_bytes(16, 0, 0, 0)[..len]),
                Err(FrameError::Truncated { available: len })
            );
        }
    }

    #[test]
    fn limits_themselves_are_accepted() {
        let max = FRAME_BYTES_MAX as u32;
        assert!(decode_frame_header(&header_bytes(16, 0, 0, 0)).is_ok());
        assert!(decode_frame_header(&header_bytes(20, 0, 0, 4)).is_ok());
        assert!(decode_frame_header(&header_bytes(max, 1, 0, BODY_BYTES_MAX as u32)).is_ok());
    }

    #[test]
    fn frame_parse_checks_the_length_and_slices_body_and_trailer() {
        let header = FrameHeader::new(3, 0, 9, false, 2, 3);
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(b"bbttt");
        let mut frame = Frame::parse(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(frame.body(), b"bb");
        assert_eq!(frame.header(), &header);
        assert_eq!(&frame.take_trailer()[..], b"ttt");
        assert_eq!(frame.body(), b"bb");
        assert!(frame.take_trailer().is_empty());

        bytes.push(0);
        assert_eq!(
            Frame::parse(Bytes::from(bytes)),
            Err(FrameError::LengthMismatch {
                declared: 25,
                available: 26
            })
        );
    }
}
