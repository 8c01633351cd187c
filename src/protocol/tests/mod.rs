//! Tests across the codec: round trips of every message, frames read from a stream, limits.

mod group_strategies;
mod limits;
mod round_trip;
mod strategies;

use super::*;

/// Reads `stream` through a reader in pieces of the given sizes (cycled).
pub(crate) fn read_frames(stream: &[u8], sizes: &[usize]) -> Vec<Frame> {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    let mut position = 0;
    let mut size = sizes.iter().cycle();
    while position < stream.len() {
        let space = reader.buffer_to_fill();
        let n = space
            .len()
            .min(*size.next().unwrap())
            .min(stream.len() - position);
        space[..n].copy_from_slice(&stream[position..position + n]);
        reader.filled(n);
        position += n;
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    reader.finish().unwrap();
    frames
}

/// Trailer shares as the body claims them: share `i` is `batch_bytes[i]` bytes of value
/// `i + 1`, so a wrong split shows.
fn shares(batch_bytes: impl Iterator<Item = u32>) -> Vec<Vec<u8>> {
    batch_bytes
        .enumerate()
        .map(|(index, bytes)| vec![index as u8 + 1; bytes as usize])
        .collect()
}

fn request_shares(request: &Request) -> Vec<Vec<u8>> {
    match request {
        Request::Produce(produce) => shares(produce.partitions.iter().map(|p| p.batch_bytes)),
        _ => Vec::new(),
    }
}

fn response_shares(response: &Response) -> Vec<Vec<u8>> {
    match response {
        Response::Fetch(fetch) => shares(fetch.partitions.iter().map(|p| p.batch_bytes)),
        _ => Vec::new(),
    }
}
