//! Arbitrary bytes into the frame reader and both decoders. Nothing may panic; whatever
//! decodes must encode again to a frame that decodes to the same message.
//!
//! Two paths per input: the bytes as a raw stream (fed in pieces whose sizes come from the
//! input), and the bytes wrapped in a valid frame header, so that mutations reach the rkyv
//! body checks and the trailer split instead of stopping at the header. The raw stream is
//! also written through a socket pair and received with `receive_now` (the path of a plain
//! TCP connection, into space that was never zero-filled): it must cut the same frames and
//! fail the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::protocol::{
    decode_request, decode_response, encode_request, encode_response, ApiKey, Frame, FrameHeader,
    FrameReader,
};

fuzz_target!(|data: &[u8]| {
    let fed = stream(data);
    assert_eq!(fed, received(data), "feed and receive_now cut the stream differently");
    wrapped(data);
});

/// The frames a stream cut into, and whether it ended broken.
type Cut = (Vec<Vec<u8>>, bool);

fn stream(data: &[u8]) -> Cut {
    let Some((&piece_seed, mut input)) = data.split_first() else {
        return (Vec::new(), false);
    };
    let piece_bytes = usize::from(piece_seed % 64) + 1;
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    while !input.is_empty() {
        let n = reader.feed(&input[..input.len().min(piece_bytes)]);
        input = &input[n..];
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    decode(&frame);
                    frames.push(frame.as_bytes().to_vec());
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(reader.finish().is_err());
                    return (frames, true);
                }
            }
        }
    }
    (frames, reader.finish().is_err())
}

/// `stream`, through a socket pair: written in the same pieces, received with `receive_now`.
fn received(data: &[u8]) -> Cut {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let Some((&piece_seed, input)) = data.split_first() else {
        return (Vec::new(), false);
    };
    if input.is_empty() {
        return (Vec::new(), false);
    }
    let piece_bytes = usize::from(piece_seed % 64) + 1;
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    rx.set_nonblocking(true).expect("non-blocking");
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut sent = 0;
    loop {
        if sent < input.len() {
            let n = piece_bytes.min(input.len() - sent);
            tx.write_all(&input[sent..sent + n]).expect("the socket takes a fuzz input");
            sent += n;
            if sent == input.len() {
                tx.shutdown(std::net::Shutdown::Write).expect("shutdown");
            }
        }
        match reader.receive_now(rx.as_raw_fd()).expect("receiving") {
            None => continue,
            Some(received) if received.count == 0 => return (frames, reader.finish().is_err()),
            Some(_) => loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => frames.push(frame.as_bytes().to_vec()),
                    Ok(None) => break,
                    Err(_) => {
                        assert!(reader.finish().is_err());
                        return (frames, true);
                    }
                }
            },
        }
    }
}

/// `data` = api selector, direction and version (bit 0: response; bit 1: the api's newest
/// version, else its oldest), trailer length (2 bytes), then body and trailer.
fn wrapped(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let api = match usize::from(data[0]) % (ApiKey::REQUESTS.len() + 1) {
        index if index < ApiKey::REQUESTS.len() => ApiKey::REQUESTS[index],
        _ => ApiKey::Error,
    };
    let is_response = data[1] & 1 == 1;
    let versions = api.versions();
    let version = if data[1] & 2 == 2 {
        versions.max
    } else {
        versions.min
    };
    let rest = &data[4..];
    let trailer_length = usize::from(u16::from_le_bytes([data[2], data[3]])).min(rest.len());
    let body_length = rest.len() - trailer_length;
    if body_length > shardline::constants::BODY_BYTES_MAX {
        return;
    }
    let header = FrameHeader::new(
        api.as_u16(),
        version,
        1,
        is_response,
        body_length,
        trailer_length,
    );
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(rest);
    decode(&whole_frame(&bytes));
}

/// The one frame `bytes` holds, read through a `FrameReader`.
fn whole_frame(bytes: &[u8]) -> Frame {
    let mut reader = FrameReader::new();
    let mut input = bytes;
    loop {
        let n = reader.feed(input);
        input = &input[n..];
        if let Some(frame) = reader.next_frame().expect("a valid frame") {
            assert!(input.is_empty(), "one frame, nothing after it");
            reader.finish().expect("nothing after the frame");
            return frame;
        }
        assert!(!input.is_empty(), "a whole frame");
    }
}

fn decode(frame: &Frame) {
    let trailer_length = frame.header().trailer_length();
    if let Ok(decoded) = decode_request(frame.clone()) {
        let parts: Vec<&[u8]> = decoded.partition_batches.iter().map(|b| &b[..]).collect();
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), trailer_length);
        let mut again = Vec::new();
        encode_request(
            &mut again,
            decoded.correlation_id(),
            decoded.header.api_version,
            &decoded.request,
            &parts,
        )
        .expect("a decoded request encodes again");
        let frame = whole_frame(&again);
        let redecoded = decode_request(frame).expect("a re-encoded request decodes");
        assert_eq!(redecoded.request, decoded.request);
        assert_eq!(redecoded.partition_batches, decoded.partition_batches);
    }
    if let Ok(decoded) = decode_response(frame.clone()) {
        let parts: Vec<&[u8]> = decoded.partition_batches.iter().map(|b| &b[..]).collect();
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), trailer_length);
        let mut again = Vec::new();
        encode_response(
            &mut again,
            decoded.correlation_id(),
            decoded.header.api_version,
            &decoded.response,
            &parts,
        )
        .expect("a decoded response encodes again");
        let frame = whole_frame(&again);
        let redecoded = decode_response(frame).expect("a re-encoded response decodes");
        assert_eq!(redecoded.response, decoded.response);
        assert_eq!(redecoded.partition_batches, decoded.partition_batches);
    }
}
