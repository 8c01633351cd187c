//! What one producer's acknowledgements add up to, whatever system it drives: the
//! acknowledged sequences, the failures, and the produce-ack latency of the measured
//! messages (from each message's intended send time). Owned by the one thread that sees
//! the acknowledgements (a glommio executor for shardline, a tokio current-thread runtime
//! for the peers); never shared between threads.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::payload::Header;
use crate::producer::ProducerReport;
use crate::stats::{new_histogram, Bitset, Live, Plan, NANOS_PER_MICRO};

pub struct Tally {
    plan: Plan,
    live: Arc<Live>,
    acked: RefCell<Bitset>,
    acknowledged: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    measured_acknowledged: Cell<u64>,
    last_measured_ack_unix_ns: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
}

impl Tally {
    pub fn new(plan: Plan, live: Arc<Live>) -> Tally {
        Tally {
            plan,
            live,
            acked: RefCell::new(Bitset::default()),
            acknowledged: Cell::new(0),
            failed: Cell::new(0),
            first_error: RefCell::new(None),
            measured_acknowledged: Cell::new(0),
            last_measured_ack_unix_ns: Cell::new(0),
            latency_us: RefCell::new(new_histogram()),
        }
    }

    /// Messages acknowledged or failed so far.
    pub fn resolved(&self) -> u64 {
        self.acknowledged.get() + self.failed.get()
    }

    pub fn acknowledge(&self, header: &Header) {
        let now_unix_ns = self.plan.clock.now_unix_ns();
        let latency_us = now_unix_ns.saturating_sub(header.intended_unix_ns) / NANOS_PER_MICRO;
        let before = self.acked.borrow_mut().insert(header.sequence);
        assert!(!before, "sequence {} acknowledged twice", header.sequence);
        self.acknowledged.set(self.acknowledged.get() + 1);
        Live::add(&self.live.acknowledged, 1);
        self.live.record_produce_latency(latency_us);
        if self.plan.is_measured(header.intended_unix_ns) {
            self.measured_acknowledged
                .set(self.measured_acknowledged.get() + 1);
            self.last_measured_ack_unix_ns.set(now_unix_ns);
            self.latency_us.borrow_mut().saturating_record(latency_us);
        }
    }

    pub fn fail(&self, count: u64, error: &str) {
        self.failed.set(self.failed.get() + count);
        Live::add(&self.live.errors, count);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| error.to_string());
    }

    /// The report of producer `producer`, which sent `sent` messages. Takes the sequences
    /// and the histogram out (a delivery still pending after the drain may hold the tally).
    pub fn take_report(&self, producer: u32, sent: u64) -> ProducerReport {
        ProducerReport {
            producer,
            sent,
            acknowledged: self.acknowledged.get(),
            errors: self.failed.get(),
            first_error: self.first_error.borrow().clone(),
            acked: self.acked.take(),
            measured_acknowledged: self.measured_acknowledged.get(),
            last_measured_ack_unix_ns: self.last_measured_ack_unix_ns.get(),
            latency_us: self.latency_us.replace(new_histogram()),
        }
    }
}
