//! Tests of the admission rules, `record`, expiry, eviction and truncation.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::constants::PRODUCERS_PER_PARTITION_MAX;

/// The header of a batch of `record_count` records from a producer (offsets unstamped).
pub(super) fn header(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    record_count: u32,
) -> BatchHeader {
    BatchHeader {
        base_offset: 0,
        batch_length: 80,
        leader_epoch: 0,
        append_time_ms: 0,
        crc: 0,
        magic: 1,
        attributes: 0,
        record_count,
        last_offset_delta: record_count - 1,
        first_timestamp_ms: 0,
        max_timestamp_ms: 0,
        producer_id,
        producer_epoch: epoch,
        base_sequence,
        body_length_uncompressed: 0,
    }
}

/// A partition leader in miniature: checks, "appends" (assigns offsets) and records.
#[derive(Default)]
struct Leader {
    table: ProducerStateTable,
    log_end: u64,
    now_ms: i64,
    /// Every appended batch: header, base offset, append time.
    log: Vec<(BatchHeader, u64, i64)>,
}

impl Leader {
    fn send(&mut self, header: BatchHeader) -> Result<Admission, ProducerStateError> {
        let admission = self.table.check(&header)?;
        if admission == Admission::Append {
            let base_offset = self.log_end;
            self.table
                .record(&header, base_offset, self.now_ms, self.now_ms)
                .expect("record accepts what check admitted");
            self.log.push((header, base_offset, self.now_ms));
            self.log_end += u64::from(header.record_count);
        }
        self.now_ms += 1;
        Ok(admission)
    }

    /// Appends a batch unchecked, as a follower or a replay would (to start a producer at
    /// any sequence).
    fn seed(&mut self, header: BatchHeader) {
        let base_offset = self.log_end;
        self.table
            .record(&header, base_offset, self.now_ms, self.now_ms)
            .expect("record accepts a well-formed batch");
        self.log.push((header, base_offset, self.now_ms));
        self.log_end += u64::from(header.record_count);
        self.now_ms += 1;
    }

    fn next_sequence(&self, producer_id: i64) -> Option<i32> {
        self.table.producer(producer_id)?.next_sequence()
    }
}

fn out_of_order(producer_id: i64, epoch: i16, expected: i32, received: i32) -> ProducerStateError {
    ProducerStateError::OutOfOrderSequence {
        producer_id,
        epoch,
        expected,
        received,
    }
}

#[test]
fn batches_without_a_producer_bypass_every_check() {
    let mut leader = Leader::default();
    for sequence in [-1, 7, -1, 0] {
        assert_eq!(
            leader.send(header(-1, -1, sequence, 3)),
            Ok(Admission::Append)
        );
    }
    assert!(leader.table.is_empty());
}

#[test]
fn an_unknown_producer_starts_at_sequence_zero() {
    let mut leader = Leader::default();
    assert_eq!(
        leader.send(header(7, 0, 42, 3)),
        Err(out_of_order(7, 0, 0, 42))
    );
    assert!(leader.table.is_empty(), "nothing recorded");
    assert_eq!(leader.send(header(7, 0, 0, 3)), Ok(Admission::Append));
    assert_eq!(leader.next_sequence(7), Some(3));
    assert_eq!(leader.send(header(7, 0, 3, 1)), Ok(Admission::Append));
}

#[test]
fn a_retry_returns_the_original_offsets() {
    let mut leader = Leader::default();
    leader.send(header(1, 0, 0, 3)).expect("first batch");
    leader.send(header(2, 0, 0, 4)).expect("another producer");
    leader.send(header(1, 0, 3, 2)).expect("second batch");
    let log_end = leader.log_end;
    assert_eq!(
        leader.send(header(1, 0, 0, 3)),
        Ok(Admission::Duplicate {
            base_offset: 0,
            last_offset: 2,
            append_time_ms: 0
        })
    );
    assert_eq!(
        leader.send(header(1, 0, 3, 2)),
        Ok(Admission::Duplicate {
            base_offset: 7,
            last_offset: 8,
            append_time_ms: 2
        })
    );
    assert_eq!(leader.log_end, log_end, "a retry appends nothing");
}

#[test]
fn the_sixth_previous_batch_is_no_longer_recognised() {
    let mut leader = Leader::default();
    for sequence in 0..6 {
        leader.send(header(1, 0, sequence, 1)).expect("in order");
    }
    assert_eq!(
        leader.send(header(1, 0, 0, 1)),
        Err(out_of_order(1, 0, 6, 0))
    );
    assert!(matches!(
        leader.send(header(1, 0, 1, 1)),
        Ok(Admission::Duplicate { base_offset: 1, .. })
    ));
}

#[test]
fn a_gap_is_refused() {
    let mut leader = Leader::default();
    leader.send(header(1, 0, 0, 2)).expect("first batch");
    let gap = leader
        .send(header(1, 0, 3, 1))
        .expect_err("sequence 2 is missing");
    assert_eq!(gap, out_of_order(1, 0, 2, 3));
    assert_eq!(
        gap.to_string(),
        "producer 1 epoch 0: expected sequence 2, received 3"
    );
    assert_eq!(leader.send(header(1, 0, 2, 1)), Ok(Admission::Append));
}

#[test]
fn a_range_overlapping_a_remembered_batch_is_out_of_order() {
    let mut leader = Leader::default();
    leader.send(header(1, 0, 0, 3)).expect("first batch");
    leader.send(header(1, 0, 3, 3)).expect("second batch");
    assert_eq!(
        leader.send(header(1, 0, 2, 2)),
        Err(out_of_order(1, 0, 6, 2))
    );
    assert_eq!(
        leader.send(header(1, 0, 0, 4)),
        Err(out_of_order(1, 0, 6, 0))
    );
    assert_eq!(
        leader.send(header(1, 0, 3, 4)),
        Err(out_of_order(1, 0, 6, 3))
    );
}

#[test]
fn a_stale_epoch_is_fenced() {
    let mut leader = Leader::default();
    leader.send(header(9, 2, 0, 1)).expect("first batch");
    let fenced = leader.send(header(9, 1, 1, 1)).expect_err("epoch 1 < 2");
    assert_eq!(
        fenced,
        ProducerStateError::ProducerFenced {
            producer_id: 9,
            current_epoch: 2,
            received: 1
        }
    );
    assert_eq!(
        fenced.to_string(),
        "producer 9 epoch 1 is fenced: the partition has seen epoch 2"
    );
}

#[test]
fn an_epoch_bump_starts_again_at_sequence_zero() {
    let mut leader = Leader::default();
    for sequence in [0, 2, 4] {
        leader.send(header(1, 0, sequence, 2)).expect("epoch 0");
    }
    assert_eq!(
        leader.send(header(1, 1, 6, 1)),
        Err(out_of_order(1, 1, 0, 6))
    );
    assert_eq!(leader.send(header(1, 1, 0, 1)), Ok(Admission::Append));
    let state = leader.table.producer(1).expect("known");
    assert_eq!((state.epoch(), state.batches().len()), (1, 1));
    // The old epoch's batches are neither duplicates nor acceptable any more.
    assert!(matches!(
        leader.send(header(1, 0, 0, 2)),
        Err(ProducerStateError::ProducerFenced { .. })
    ));
    assert_eq!(leader.send(header(1, 1, 1, 1)), Ok(Admission::Append));
}

#[test]
fn sequences_wrap_to_zero_after_i32_max() {
    let mut leader = Leader::default();
    leader.seed(header(1, 0, i32::MAX - 1, 4));
    let state = leader.table.producer(1).expect("known");
    let batch = state.batches().next().expect("one batch");
    assert_eq!(
        (batch.first_sequence, batch.last_sequence),
        (i32::MAX - 1, 1)
    );
    assert_eq!(leader.next_sequence(1), Some(2));
    assert!(matches!(
        leader.send(header(1, 0, i32::MAX - 1, 4)),
        Ok(Admission::Duplicate { .. })
    ));
    assert_eq!(leader.send(header(1, 0, 2, 1)), Ok(Admission::Append));

    leader.seed(header(2, 0, i32::MAX, 1));
    assert_eq!(leader.next_sequence(2), Some(0));
    assert_eq!(leader.send(header(2, 0, 0, 1)), Ok(Admission::Append));
}

#[test]
fn malformed_producer_fields_are_refused() {
    let mut table = ProducerStateTable::new();
    let cases = [
        (
            header(5, 0, -1, 1),
            ProducerStateError::InvalidSequence {
                producer_id: 5,
                epoch: 0,
                base_sequence: -1,
                last_offset_delta: 0,
            },
        ),
        (
            header(5, 0, 0, BATCH_RECORDS_MAX + 1),
            ProducerStateError::InvalidSequence {
                producer_id: 5,
                epoch: 0,
                base_sequence: 0,
                last_offset_delta: BATCH_RECORDS_MAX,
            },
        ),
        (
            header(5, -1, 0, 1),
            ProducerStateError::InvalidEpoch {
                producer_id: 5,
                epoch: -1,
            },
        ),
        (
            header(-2, 0, 0, 1),
            ProducerStateError::InvalidProducerId { producer_id: -2 },
        ),
    ];
    for (header, error) in cases {
        assert_eq!(table.check(&header), Err(error.clone()));
        assert_eq!(table.record(&header, 0, 0, 0), Err(error));
    }
    assert_eq!(
        table.record(&header(5, 0, 0, 2), u64::MAX, 0, 0),
        Err(ProducerStateError::OffsetOverflow {
            producer_id: 5,
            base_offset: u64::MAX,
            last_offset_delta: 1
        })
    );
    assert!(table.is_empty());
}

#[test]
fn idle_producers_expire() {
    let mut table = ProducerStateTable::new();
    table.record(&header(1, 0, 0, 1), 0, 0, 0).expect("record");
    table
        .record(&header(2, 0, 0, 1), 1, 100, 100)
        .expect("record");
    assert_eq!(table.expire(100, 100), 0, "idle exactly idle_ms stays");
    assert_eq!(table.expire(101, 100), 1);
    assert!(table.producer(1).is_none());
    assert!(table.producer(2).is_some());
    assert!(
        table.check(&header(1, 0, 77, 1)).is_err(),
        "forgotten: starts at 0"
    );
    assert_eq!(table.check(&header(1, 0, 0, 1)), Ok(Admission::Append));
}

#[test]
fn a_full_table_evicts_the_least_recently_active_producer() {
    let mut table = ProducerStateTable::new();
    let count = i64::try_from(PRODUCERS_PER_PARTITION_MAX).expect("fits");
    for id in 0..count {
        let offset = u64::try_from(id).expect("non-negative");
        table
            .record(&header(id, 0, 0, 1), offset, id, id)
            .expect("record");
    }
    // Producer 0 appends again, so producer 1 is now the least recently active.
    table
        .record(&header(0, 0, 1, 1), 1_000_000, count, count)
        .expect("record");
    table
        .record(&header(count, 0, 0, 1), 1_000_001, count + 1, count + 1)
        .expect("record");
    assert_eq!(table.len(), PRODUCERS_PER_PARTITION_MAX);
    assert!(table.producer(0).is_some());
    assert!(table.producer(1).is_none());
    assert!(table.producer(count).is_some());
}

#[test]
fn truncation_forgets_batches_at_and_above_the_offset() {
    let mut leader = Leader::default();
    leader.send(header(1, 3, 0, 3)).expect("offsets 0-2");
    leader.send(header(1, 3, 3, 2)).expect("offsets 3-4");
    leader.send(header(1, 3, 5, 5)).expect("offsets 5-9");
    leader.table.truncate_to(5);
    assert_eq!(leader.table.producer(1).expect("known").batches().len(), 2);
    // The truncated batch is no longer in the log: its retry is appended again.
    assert_eq!(leader.send(header(1, 3, 5, 5)), Ok(Admission::Append));

    leader.table.truncate_to(0);
    let state = leader
        .table
        .producer(1)
        .expect("a producer outlives its batches");
    assert_eq!((state.epoch(), state.next_sequence()), (3, None));
    assert_eq!(leader.send(header(1, 2, 0, 1)).map_err(|_| ()), Err(()));
    assert_eq!(leader.send(header(1, 3, 1234, 1)), Ok(Admission::Append));
    assert_eq!(leader.next_sequence(1), Some(1235));
}

/// A workload with several producers, retries, refusals, an epoch bump and a producer that
/// expired and came back with another sequence.
fn busy_leader() -> Leader {
    let mut leader = Leader::default();
    for round in 0..8 {
        for producer_id in [3, 11, 12] {
            let sequence = leader.next_sequence(producer_id).unwrap_or(0);
            leader
                .send(header(producer_id, 0, sequence, round + 1))
                .expect("in order");
        }
        let _ = leader.send(header(3, 0, 0, 1)); // an old retry: duplicate or out of order
        let _ = leader.send(header(11, 0, 1_000, 1)); // a gap: refused
    }
    leader.now_ms += 10_000;
    leader.send(header(12, 1, 0, 2)).expect("epoch bump");
    let sequence = leader.next_sequence(11).expect("known");
    leader.send(header(11, 0, sequence, 1)).expect("in order");
    assert_eq!(
        leader.table.expire(leader.now_ms, 5_000),
        1,
        "producer 3 expires"
    );
    assert!(
        leader.send(header(3, 0, 500, 2)).is_err(),
        "expired: it must start again at 0"
    );
    leader
        .send(header(3, 0, 0, 2))
        .expect("expired: starts again at 0");
    leader
}

#[test]
fn replay_through_record_rebuilds_the_live_table() {
    let leader = busy_leader();
    let mut replayed = ProducerStateTable::new();
    for (header, base_offset, append_time_ms) in &leader.log {
        replayed
            .record(header, *base_offset, *append_time_ms, *append_time_ms)
            .expect("replay accepts the log");
    }
    assert_eq!(replayed, leader.table);
}

#[test]
fn a_snapshot_plus_replay_of_the_rest_rebuilds_the_live_table() {
    let leader = busy_leader();
    let middle = leader.log.len() / 2;
    let mut prefix = ProducerStateTable::new();
    for (header, base_offset, time_ms) in &leader.log[..middle] {
        prefix
            .record(header, *base_offset, *time_ms, *time_ms)
            .expect("replay");
    }
    let up_to_offset = leader.log[middle].1;
    let bytes = prefix.encode_snapshot(up_to_offset);
    let (offset, mut table) = ProducerStateTable::decode_snapshot(&bytes).expect("decodes");
    assert_eq!(offset, up_to_offset);
    for (header, base_offset, time_ms) in leader.log.iter().filter(|entry| entry.1 >= offset) {
        table
            .record(header, *base_offset, *time_ms, *time_ms)
            .expect("replay");
    }
    assert_eq!(table, leader.table);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    /// The next batch of `count` records.
    Fresh { producer: usize, count: u32 },
    /// A retry of one of the producer's last `PRODUCER_BATCHES_REMEMBERED` batches.
    Retry { producer: usize, back: usize },
    /// A retry of a batch older than those.
    RetryForgotten { producer: usize, back: usize },
    /// A new epoch, starting again at sequence 0.
    BumpEpoch { producer: usize },
    /// A restart: the table goes through a snapshot.
    Restart,
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, 1..5u32).prop_map(|(producer, count)| Step::Fresh { producer, count }),
        4 => (0..3usize, 0..PRODUCER_BATCHES_REMEMBERED)
            .prop_map(|(producer, back)| Step::Retry { producer, back }),
        1 => (0..3usize, 0..10usize)
            .prop_map(|(producer, back)| Step::RetryForgotten { producer, back }),
        1 => (0..3usize).prop_map(|producer| Step::BumpEpoch { producer }),
        1 => Just(Step::Restart),
    ]
}

/// What the model knows of one producer: its epoch and every batch it sent in that epoch,
/// with the offsets the leader answered.
#[derive(Debug, Clone, Default)]
struct ModelProducer {
    epoch: i16,
    first_sequence: i32,
    sent: Vec<(BatchHeader, u64, u64)>,
}

fn model_step(
    leader: &mut Leader,
    producers: &mut [ModelProducer],
    appends: &mut HashMap<(i64, i16, i32), u32>,
    step: Step,
) {
    match step {
        Step::Fresh { producer, count } => {
            let model = &mut producers[producer];
            let sequence = model.sent.last().map_or(model.first_sequence, |(h, _, _)| {
                sequence_add(h.base_sequence, h.last_offset_delta + 1)
            });
            let id = i64::try_from(producer).expect("small");
            let batch = header(id, model.epoch, sequence, count);
            let base_offset = leader.log_end;
            if model.sent.is_empty() && sequence != 0 {
                // The leader takes a new producer's first batch only at sequence 0: one that
                // starts elsewhere (to cross the wrap) is seeded as a follower would take it.
                assert!(leader.table.check(&batch).is_err(), "{model:?}");
                leader.seed(batch);
            } else {
                assert_eq!(leader.send(batch), Ok(Admission::Append), "{model:?}");
            }
            *appends.entry((id, model.epoch, sequence)).or_default() += 1;
            model.sent.push((batch, base_offset, leader.log_end - 1));
        }
        Step::Retry { producer, back } => {
            let model = &producers[producer];
            let Some(index) = model.sent.len().checked_sub(1 + back) else {
                return;
            };
            let (batch, base_offset, last_offset) = model.sent[index];
            match leader.send(batch) {
                Ok(Admission::Duplicate {
                    base_offset: b,
                    last_offset: l,
                    ..
                }) => {
                    assert_eq!((b, l), (base_offset, last_offset), "{model:?}");
                }
                other => panic!("retry of {batch:?} gave {other:?}; {model:?}"),
            }
        }
        Step::RetryForgotten { producer, back } => {
            let model = &producers[producer];
            let back = PRODUCER_BATCHES_REMEMBERED + back;
            let Some(index) = model.sent.len().checked_sub(1 + back) else {
                return;
            };
            let result = leader.send(model.sent[index].0);
            assert!(
                matches!(result, Err(ProducerStateError::OutOfOrderSequence { .. })),
                "{result:?}"
            );
        }
        Step::BumpEpoch { producer } => {
            let model = &mut producers[producer];
            if model.sent.is_empty() {
                return;
            }
            *model = ModelProducer {
                epoch: model.epoch + 1,
                ..ModelProducer::default()
            };
        }
        Step::Restart => {
            let bytes = leader.table.encode_snapshot(leader.log_end);
            let (offset, table) = ProducerStateTable::decode_snapshot(&bytes).expect("decodes");
            assert_eq!((offset, &table), (leader.log_end, &leader.table));
            leader.table = table;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_distinct_batch_is_appended_exactly_once(
        first_sequences in proptest::collection::vec(prop_oneof![Just(0), (i32::MAX - 8)..=i32::MAX], 3),
        steps in proptest::collection::vec(any_step(), 0..120),
    ) {
        let mut leader = Leader::default();
        let mut producers: Vec<ModelProducer> = first_sequences
            .iter()
            .map(|&first_sequence| ModelProducer { first_sequence, ..ModelProducer::default() })
            .collect();
        let mut appends = HashMap::new();
        for step in steps {
            model_step(&mut leader, &mut producers, &mut appends, step);
        }
        prop_assert!(appends.values().all(|&count| count == 1), "{appends:?}");
        prop_assert_eq!(leader.log.len(), appends.len());
    }
}
