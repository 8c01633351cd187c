//! Record-batch costs on the produce and fetch paths: building a batch (producer),
//! validating it (broker, once per arriving batch) and reading every key and value out of a
//! fetched buffer (consumer). 64 messages of 1 KiB with 16-byte keys per batch, codec none
//! and lz4. Throughput is message bytes (keys + values), so the three stages compare.
//!
//! Criterion keeps its JSON estimates per benchmark under `target/criterion/`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::record::reader::{records_checked, BatchIter};
use shardline::record::validate::validate_slice;
use shardline::record::{header, BatchBuilder, Codec};

const MESSAGES_PER_BATCH: usize = 64;
const VALUE_BYTES: usize = 1024;
const KEY_BYTES: usize = 16;
/// Batches in the fetched buffer the read benchmark walks.
const BATCHES_PER_FETCH: usize = 16;
const BATCH_CAPACITY_BYTES: usize = 80 * 1024;

struct Message {
    timestamp_ms: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Log-line-like values: words from a small vocabulary and random numbers, so lz4 finds
/// some but not all redundancy (roughly 2-3x).
fn messages(rng: &mut StdRng) -> Vec<Message> {
    const WORDS: [&str; 16] = [
        "GET",
        "POST",
        "/api/v1/orders",
        "/api/v1/users",
        "status=200",
        "status=404",
        "latency_ms=",
        "user_id=",
        "region=eu-west-1",
        "region=us-east-2",
        "cache=hit",
        "cache=miss",
        "trace=",
        "bytes=",
        "agent=curl/8.5",
        "agent=Mozilla/5.0",
    ];
    (0..MESSAGES_PER_BATCH)
        .map(|i| {
            let mut value = Vec::with_capacity(VALUE_BYTES + 32);
            while value.len() < VALUE_BYTES {
                value.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
                value.extend_from_slice(rng.gen_range(0u32..1_000_000).to_string().as_bytes());
                value.push(b' ');
            }
            value.truncate(VALUE_BYTES);
            let key = format!("user-{:011}", rng.gen_range(0u64..100_000_000_000)).into_bytes();
            assert_eq!(key.len(), KEY_BYTES);
            Message {
                timestamp_ms: 1_700_000_000_000 + i as i64,
                key,
                value,
            }
        })
        .collect()
}

fn build(codec: Codec, messages: &[Message]) -> bytes::BytesMut {
    let mut builder = BatchBuilder::with_capacity(codec, BATCH_CAPACITY_BYTES);
    for message in messages {
        builder
            .push(
                message.timestamp_ms,
                Some(&message.key),
                &message.value,
                &[],
            )
            .expect("message fits");
    }
    builder.finish().expect("batch fits")
}

fn payload_bytes() -> u64 {
    (MESSAGES_PER_BATCH * (KEY_BYTES + VALUE_BYTES)) as u64
}

fn bench_build(c: &mut Criterion, messages: &[Message]) {
    let mut group = c.benchmark_group("build");
    group.throughput(Throughput::Bytes(payload_bytes()));
    for codec in [Codec::None, Codec::Lz4] {
        group.bench_function(BenchmarkId::from_parameter(format!("{codec:?}")), |b| {
            b.iter(|| build(codec, black_box(messages)))
        });
    }
    group.finish();
}

fn bench_validate(c: &mut Criterion, messages: &[Message]) {
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(payload_bytes()));
    for codec in [Codec::None, Codec::Lz4] {
        let batch = build(codec, messages);
        eprintln!(
            "{codec:?} batch: {} bytes for {} payload bytes",
            batch.len(),
            payload_bytes()
        );
        group.bench_function(BenchmarkId::from_parameter(format!("{codec:?}")), |b| {
            b.iter(|| validate_slice(black_box(&batch)).expect("valid"))
        });
    }
    group.finish();
}

/// Reads every key and value of every batch in a fetched buffer.
fn read_all(fetched: &[u8], scratch: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for item in BatchIter::new(fetched) {
        let (header, batch) = item.expect("valid batch");
        let records = records_checked(&header, batch, scratch).expect("valid body");
        for view in records.iter() {
            bytes += view.key.map_or(0, |key| black_box(key).len()) + black_box(view.value).len();
        }
    }
    bytes
}

fn bench_read(c: &mut Criterion, rng: &mut StdRng) {
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(
        payload_bytes() * BATCHES_PER_FETCH as u64,
    ));
    for codec in [Codec::None, Codec::Lz4] {
        let mut fetched = Vec::new();
        for index in 0..BATCHES_PER_FETCH {
            let mut batch = build(codec, &messages(rng));
            header::stamp(&mut batch, (index * MESSAGES_PER_BATCH) as u64, 1, 0);
            fetched.extend_from_slice(&batch);
        }
        let mut scratch = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(format!("{codec:?}")), |b| {
            b.iter(|| read_all(black_box(&fetched), &mut scratch))
        });
    }
    group.finish();
}

fn record_batch(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let messages = messages(&mut rng);
    bench_build(c, &messages);
    bench_validate(c, &messages);
    bench_read(c, &mut rng);
}

criterion_group!(benches, record_batch);
criterion_main!(benches);
