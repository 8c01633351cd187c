//! Record-batch costs on the produce and fetch paths: building a batch (producer),
//! validating it (broker, once per arriving batch) and reading every key and value out of a
//! fetched buffer (consumer). 64 messages of 1 KiB with 16-byte keys per batch, codec none
//! and lz4. Throughput is message bytes (keys + values), so the three stages compare.
//! `produce_path` is the producer's own work per message, counted in messages: hash the key
//! to one of 8 partitions, write the message into that partition's batch, close each batch
//! at 64 messages (stamped with a producer id and sequence) and encode the produce request
//! that carries the batches (its head; the batches go out as they are).
//!
//! Criterion keeps its JSON estimates per benchmark under `target/criterion/`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::client::partition_for_key;
use shardline::protocol::{encode_request_head, ProducePartition, ProduceRequest, Request};
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

/// Partitions the `produce_path` benchmark spreads its messages over.
const PRODUCE_PARTITIONS: u32 = 8;

/// The producer's work for `rounds` x 64 messages (see the module notes); returns the
/// request heads' bytes, so that nothing is optimised away.
fn produce_path(messages: &[Message], rounds: usize) -> usize {
    let mut open: Vec<Option<BatchBuilder>> = (0..PRODUCE_PARTITIONS).map(|_| None).collect();
    let mut closed: Vec<(u32, bytes::BytesMut)> = Vec::new();
    let mut sequences = [0i32; PRODUCE_PARTITIONS as usize];
    let mut head_bytes = 0;
    for round in 0..rounds {
        for message in messages {
            let partition = partition_for_key(&message.key, PRODUCE_PARTITIONS);
            let slot = &mut open[partition as usize];
            let builder = slot.get_or_insert_with(|| {
                BatchBuilder::with_capacity(Codec::None, BATCH_CAPACITY_BYTES)
            });
            builder
                .push(
                    message.timestamp_ms + round as i64,
                    Some(&message.key),
                    &message.value,
                    &[],
                )
                .expect("message fits");
            if builder.record_count() as usize == MESSAGES_PER_BATCH {
                let builder = slot.take().expect("just pushed");
                let sequence = &mut sequences[partition as usize];
                let base = *sequence;
                *sequence += MESSAGES_PER_BATCH as i32;
                let stamped = builder.with_producer(7, 0, base);
                closed.push((partition, stamped.finish().expect("batch fits")));
            }
        }
        if closed.len() >= PRODUCE_PARTITIONS as usize {
            let request = Request::Produce(ProduceRequest {
                acks: 1,
                timeout_ms: 30_000,
                partitions: closed
                    .iter()
                    .map(|(partition, batch)| ProducePartition {
                        topic: "bench".to_string(),
                        partition: *partition,
                        batch_bytes: batch.len() as u32,
                        leader_epoch: Some(0),
                    })
                    .collect(),
            });
            let trailer_bytes = closed.iter().map(|(_, batch)| batch.len()).sum();
            let mut head = Vec::with_capacity(1024);
            encode_request_head(&mut head, 1, 0, &request, trailer_bytes).expect("encodes");
            head_bytes += head.len();
            closed.clear();
        }
    }
    head_bytes
}

fn bench_produce_path(c: &mut Criterion, messages: &[Message]) {
    const ROUNDS: usize = 16;
    let mut group = c.benchmark_group("produce_path");
    group.throughput(Throughput::Elements((ROUNDS * messages.len()) as u64));
    group.bench_function("1KiB-8-partitions", |b| {
        b.iter(|| produce_path(black_box(messages), ROUNDS))
    });
    group.finish();
}

fn record_batch(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let messages = messages(&mut rng);
    bench_produce_path(c, &messages);
    bench_build(c, &messages);
    bench_validate(c, &messages);
    bench_read(c, &mut rng);
}

criterion_group!(benches, record_batch);
criterion_main!(benches);
