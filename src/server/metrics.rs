//! The metrics endpoint: `GET /metrics` on `--metrics-listen`, served by the controller
//! shard's executor (no other runtime in the broker). Each scrape asks every shard for its
//! numbers over the mesh (one fan-out), encodes them (`crate::metrics`) and closes the
//! connection. Anything else gets 404 or 400; a client that does not finish its request
//! within `METRICS_REQUEST_TIMEOUT_MS` is dropped.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::context::ShardContext;
use super::work::with_deadline;
use crate::constants::{METRICS_REQUEST_BYTES_MAX, METRICS_REQUEST_TIMEOUT_MS};
use crate::metrics::ShardStats;
use crate::shard::messages::{ShardHandler, ShardMessage};

/// Every shard's numbers, this one's included.
pub async fn gather(context: &ShardContext) -> Vec<ShardStats> {
    let others = context.mesh.others().map(|shard| (shard, ())).collect();
    let replies = context.mesh.call_each(others, ShardMessage::Stats).await;
    let mut shards: Vec<ShardStats> = replies
        .into_iter()
        .filter_map(|(_, reply)| reply.ok())
        .collect();
    shards.push(context.stats());
    shards.sort_by_key(|stats| stats.shard);
    shards
}

/// Reads the request head (up to the blank line), bounded in bytes and time.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS);
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > METRICS_REQUEST_BYTES_MAX {
            return None;
        }
        match with_deadline(deadline, stream.read(&mut chunk)).await {
            Some(Ok(count)) if count > 0 => head.extend_from_slice(&chunk[..count]),
            _ => return None,
        }
    }
    Some(head)
}

/// Answers one scrape (or refuses it) and closes the connection.
pub async fn answer(context: Rc<ShardContext>, mut stream: TcpStream) {
    let response = match read_head(&mut stream).await {
        None => response("400 Bad Request", "text/plain", "bad request\n".into()),
        Some(head) => {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let mut words = line.split(|&b| b == b' ');
            match (words.next(), words.next()) {
                (Some(b"GET"), Some(b"/metrics")) => {
                    match crate::metrics::encode(&gather(&context).await) {
                        Ok(text) => response(
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ),
                        Err(error) => response(
                            "500 Internal Server Error",
                            "text/plain",
                            format!("{error}\n"),
                        ),
                    }
                }
                (Some(_), Some(_)) => {
                    response("404 Not Found", "text/plain", "try /metrics\n".into())
                }
                _ => response("400 Bad Request", "text/plain", "bad request\n".into()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS);
    let _ = with_deadline(deadline, async {
        stream.write_all(&response).await?;
        stream.close().await
    })
    .await;
}

fn response(status: &str, content_type: &str, body: String) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}
