//! The wire protocol between clients and brokers: frames, api keys and versions, message
//! bodies, error codes. Sans-IO: this module knows neither the server nor the log; it turns
//! bytes into typed messages and back, and a connection task does the reading and writing.
//!
//! # Frames
//!
//! Every request and every response is one frame. All integers are little-endian.
//!
//! ```text
//! offset size field                    meaning
//!  0     4    frame_length     u32     bytes after this field: 16 + body_length + trailer
//!  4     2    api_key          u16     `ApiKey` (0xFFFF: ErrorResponse, responses only)
//!  6     2    api_version      u16     version of that api's body layout
//!  8     4    correlation_id   u32     chosen by the client, echoed in the response
//! 12     2    flags            u16     bit 0: response (else request); other bits 0
//! 14     2    reserved         u16     must be 0 (room for a format change)
//! 16     4    body_length      u32     bytes of the rkyv body
//! 20     ...  body             body_length bytes: rkyv archive of the message struct
//! 20+body_length  trailer      frame_length - 16 - body_length bytes, raw
//! ```
//!
//! Limits (`constants`, Protocol section): `16 <= frame_length <= FRAME_BYTES_MAX`,
//! `body_length <= min(BODY_BYTES_MAX, frame_length - 16)`. The api version plays the part
//! of a format version: a body layout never changes within a version.
//!
//! # Body
//!
//! The body is exactly the archive `rkyv::to_bytes` writes for the message struct of
//! `(api_key, api_version)` (see `messages`), its root at the end. rkyv is built with its
//! `unaligned` and `little_endian` features, so a body can be read in place at any offset.
//! A body from the network is always checked with rkyv's checked access, then against the
//! protocol's limits (topic names, list and string lengths), before anything is used.
//!
//! # Trailer
//!
//! Record batches are not re-encoded into the body: they follow it, verbatim, in the
//! trailer (produce requests, fetch responses; every other frame has an empty trailer). The
//! body lists one entry per partition with `batch_bytes`, the size of its share; the shares
//! follow each other in entry order and add up to exactly the trailer length:
//!
//! ```text
//! | header 20 | body (entries: p0 batch_bytes=a, p1 batch_bytes=b) | a bytes: p0 batches | b bytes: p1 batches |
//! ```
//!
//! A decoded message hands out each share as a `bytes::Bytes` slice of the frame, so batch
//! bytes are copied neither by the decoder nor on their way to the log.
//!
//! # Conversation
//!
//! A client opens a connection and sends `Handshake` (version 0, always supported); both
//! sides then pick per api the highest version both speak (`negotiate`). Requests are
//! pipelined: a client may have up to `IN_FLIGHT_REQUESTS_MAX` requests outstanding per
//! connection; every request gets exactly one response carrying its correlation id.
//!
//! # Errors
//!
//! * `FrameError` (a header breaks a rule, or the stream ends inside a frame): the stream
//!   can no longer be trusted to be at a frame boundary, so the connection is closed. The
//!   server may first send one `ErrorResponse` with `FrameError::error_code` (and the
//!   correlation id, if the header was readable).
//! * `ProtocolError` (a whole frame whose api, version or body is refused): the server
//!   answers with an `ErrorResponse` (`encode_error_response`, `ProtocolError::error_code`)
//!   and the connection goes on.
//! * Errors of the operation itself (unknown topic, not leader, ...) are `ErrorCode`s inside
//!   the api's own response, per topic or partition.

pub mod api;
pub mod codec;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod reader;

pub use api::{negotiate, supported_apis, ApiKey, NegotiatedVersions, VersionRange};
pub use codec::{
    decode_request, decode_response, encode_error_response, encode_request, encode_request_head,
    encode_response, encode_response_head, DecodedRequest, DecodedResponse,
};
pub use error::{EncodeError, ProtocolError, TopicNameError};
pub use error_code::ErrorCode;
pub use frame::{decode_frame_header, Frame, FrameError, FrameHeader};
pub use limits::check_topic_name;
pub use messages::*;
pub use reader::{FrameReader, Received};

#[cfg(test)]
mod tests;
