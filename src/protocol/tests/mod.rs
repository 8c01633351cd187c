//! Tests across the codec: round trips of every message, frames read from a stream, limits.

mod limits;
mod round_trip;
mod strategies;

use super::*;

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
