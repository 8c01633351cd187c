//! A history checker for fault-injection tests, after Jepsen's Kafka queue workload.
//!
//! A test records what its clients did and saw: sends, acknowledgements (acks=all), failed
//! sends, consumer reads and deliberate seeks, notes marking each fault it injected, and at
//! the end, after the faults healed, a complete read of every partition from its earliest
//! offset. [`History::check`] then looks for the anomalies Jepsen found in Kafka-compatible
//! logs (inconsistent offsets, duplicates and lost messages in Redpanda 21.10; acknowledged
//! writes lost after crashes in NATS JetStream 2.10), which its checker calls lost-write,
//! duplicate, inconsistent-offsets and nonmonotonic-poll:
//!
//! - **lost**: a value was acknowledged but is absent from the final read;
//! - **duplicated**: a value sits at two or more places, in the final read or across acks
//!   and reads (a failed send stored once is fine: a failure is indeterminate);
//! - **reordered**: in a partition's final read, one producer's values are out of sequence
//!   order, though each producer sends to a partition in increasing sequence order;
//! - **divergent offset**: acks, reads or the final read saw one (partition, offset) hold
//!   two different values, or a value was acked at one offset but sits at another;
//! - **backwards**: a consumer read an offset at or below the one it read before on that
//!   partition, with no seek in between.
//!
//! Values are `p{producer}-{seq}` ([`value`]), unique in a run, so every event about one
//! can be found again. A failed check's [`Report`] prints each anomaly with the smallest
//! history that shows it: the events touching its value, offset or consumer, and the fault
//! notes between them, timed from the start of the history.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Anomalies a report prints with their histories; the rest are only counted.
const REPORT_ANOMALIES_SHOWN_MAX: usize = 10;

/// The value producer `producer` sends as its `seq`th message: `p{producer}-{seq}`.
pub fn value(producer: u32, seq: u64) -> String {
    format!("p{producer}-{seq}")
}

/// The (producer, seq) a [`value`] encodes, or `None` for anything else.
pub fn parse_value(value: &str) -> Option<(u32, u64)> {
    let (producer, seq) = value.strip_prefix('p')?.split_once('-')?;
    Some((producer.parse().ok()?, seq.parse().ok()?))
}

/// One offset of one partition of the topic under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub partition: u32,
    pub offset: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "partition {} offset {}", self.partition, self.offset)
    }
}

/// A value seen at a place, by an ack, a read or the final read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub place: Place,
    pub value: String,
}

impl Sighting {
    pub fn new(partition: u32, offset: u64, value: &str) -> Self {
        let place = Place { partition, offset };
        Sighting {
            place,
            value: value.to_string(),
        }
    }
}

impl fmt::Display for Sighting {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} at {}", self.value, self.place)
    }
}

/// Something a client did or saw, or a fault the test injected.
#[derive(Clone, Debug)]
enum Event {
    Send {
        producer: u32,
        partition: u32,
        value: String,
    },
    Ack(Sighting),
    Fail {
        value: String,
        reason: String,
    },
    Read {
        consumer: u32,
        sighting: Sighting,
    },
    Seek {
        consumer: u32,
        place: Place,
    },
    FinalRead(Sighting),
    Note(String),
}

impl Event {
    fn sighting(&self) -> Option<&Sighting> {
        match self {
            Event::Ack(sighting) | Event::FinalRead(sighting) => Some(sighting),
            Event::Read { sighting, .. } => Some(sighting),
            _ => None,
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            Event::Send { value, .. } | Event::Fail { value, .. } => Some(value),
            _ => self.sighting().map(|sighting| sighting.value.as_str()),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Event::Send {
                producer,
                partition,
                value,
            } => {
                write!(
                    f,
                    "send   {value} to partition {partition} by producer {producer}"
                )
            }
            Event::Ack(sighting) => write!(f, "ack    {sighting}"),
            Event::Fail { value, reason } => write!(f, "fail   {value}: {reason}"),
            Event::Read { consumer, sighting } => {
                write!(f, "read   {sighting} by consumer {consumer}")
            }
            Event::Seek { consumer, place } => write!(f, "seek   consumer {consumer} to {place}"),
            Event::FinalRead(sighting) => write!(f, "final  {sighting}"),
            Event::Note(text) => write!(f, "note   {text}"),
        }
    }
}

/// Every event of a test in the order it was recorded; an event's global sequence number
/// is its index. The test's clients share it through a [`Recorder`].
#[derive(Debug)]
pub struct History {
    start: Instant,
    events: Vec<(Instant, Event)>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            events: Vec::new(),
        }
    }
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, event: Event) {
        self.events.push((Instant::now(), event));
    }

    /// A producer invoked a send of `value` (which must be one of its own) to `partition`.
    pub fn send(&mut self, producer: u32, partition: u32, value: &str) {
        let parsed = parse_value(value);
        assert!(
            matches!(parsed, Some((owner, _)) if owner == producer),
            "producer {producer} sends {value:?}, which is not `p{producer}-{{seq}}`"
        );
        let value = value.to_string();
        self.record(Event::Send {
            producer,
            partition,
            value,
        });
    }

    /// The broker acknowledged `value` at `offset`.
    pub fn ack(&mut self, partition: u32, offset: u64, value: &str) {
        self.record(Event::Ack(Sighting::new(partition, offset, value)));
    }

    /// The send of `value` returned an error: it may or may not be stored.
    pub fn fail(&mut self, value: &str, reason: impl fmt::Display) {
        let (value, reason) = (value.to_string(), reason.to_string());
        self.record(Event::Fail { value, reason });
    }

    /// A consumer read `value` at `offset`.
    pub fn read(&mut self, consumer: u32, partition: u32, offset: u64, value: &str) {
        let sighting = Sighting::new(partition, offset, value);
        self.record(Event::Read { consumer, sighting });
    }

    /// A consumer repositioned deliberately (a restart, a rewind): its next read may go back.
    pub fn seek(&mut self, consumer: u32, partition: u32, offset: u64) {
        let place = Place { partition, offset };
        self.record(Event::Seek { consumer, place });
    }

    /// The end-of-test read of every partition from its earliest offset found `value` here.
    pub fn final_read(&mut self, partition: u32, offset: u64, value: &str) {
        self.record(Event::FinalRead(Sighting::new(partition, offset, value)));
    }

    /// A fault or other marker (`kill -9 broker 2`), printed in reports for context.
    pub fn note(&mut self, text: impl fmt::Display) {
        self.record(Event::Note(text.to_string()));
    }

    /// The history's counts, or every anomaly it holds.
    /// The longest time between two acknowledgements on `partition` after `since`.
    pub fn longest_ack_gap_after(&self, since: Instant, partition: u32) -> Duration {
        let times = self.events.iter().filter_map(|(at, event)| match event {
            Event::Ack(sighting) if *at > since && sighting.place.partition == partition => {
                Some(*at)
            }
            _ => None,
        });
        let mut longest = Duration::ZERO;
        let mut previous: Option<Instant> = None;
        for at in times {
            if let Some(before) = previous {
                longest = longest.max(at - before);
            }
            previous = Some(at);
        }
        longest
    }

    /// When the first acknowledgement after `since` on `partition` came.
    pub fn first_ack_after(&self, since: Instant, partition: u32) -> Option<Instant> {
        self.events.iter().find_map(|(at, event)| match event {
            Event::Ack(sighting) if *at > since && sighting.place.partition == partition => {
                Some(*at)
            }
            _ => None,
        })
    }

    pub fn check(&self) -> Result<Summary, Report> {
        let summary = self.summary();
        let mut anomalies = self.value_anomalies();
        anomalies.extend(self.reorderings());
        anomalies.extend(self.divergent_offsets());
        anomalies.extend(self.backwards_reads());
        if anomalies.is_empty() {
            return Ok(summary);
        }
        let shown = shown_anomalies(&anomalies)
            .into_iter()
            .map(|index| (index, self.excerpt(&anomalies[index])))
            .collect();
        let events = self.events.len();
        Err(Report {
            summary,
            events,
            anomalies,
            shown,
        })
    }

    fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for (_, event) in &self.events {
            match event {
                Event::Send { .. } => summary.sent += 1,
                Event::Ack(_) => summary.acked += 1,
                Event::Fail { .. } => summary.failed += 1,
                Event::Read { .. } => summary.read += 1,
                Event::FinalRead(sighting) => {
                    let partition = sighting.place.partition;
                    *summary.final_per_partition.entry(partition).or_default() += 1;
                    summary.final_values += 1;
                }
                Event::Seek { .. } | Event::Note(_) => {}
            }
        }
        summary
    }

    /// Lost, duplicated and acked-elsewhere values, in the order each value first appeared.
    fn value_anomalies(&self) -> Vec<Anomaly> {
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut seen: Vec<(&str, Vec<(Place, Source)>)> = Vec::new();
        for (_, event) in &self.events {
            let Some(value) = event.value() else { continue };
            let slot = *slots.entry(value).or_insert_with(|| {
                seen.push((value, Vec::new()));
                seen.len() - 1
            });
            let (sighting, source) = match event {
                Event::Ack(sighting) => (sighting, Source::Ack),
                Event::Read { sighting, .. } => (sighting, Source::Read),
                Event::FinalRead(sighting) => (sighting, Source::Final),
                _ => continue,
            };
            if !seen[slot].1.contains(&(sighting.place, source)) {
                seen[slot].1.push((sighting.place, source));
            }
        }
        seen.into_iter()
            .flat_map(|(value, places)| judge_value(value, &places))
            .collect()
    }

    /// Descents in each producer's sequence within each partition's final read.
    fn reorderings(&self) -> Vec<Anomaly> {
        let mut partitions: BTreeMap<u32, Vec<&Sighting>> = BTreeMap::new();
        for (_, event) in &self.events {
            if let Event::FinalRead(sighting) = event {
                let partition = sighting.place.partition;
                partitions.entry(partition).or_default().push(sighting);
            }
        }
        let mut anomalies = Vec::new();
        for (_, mut sightings) in partitions {
            sightings.sort_by_key(|sighting| sighting.place.offset);
            let mut last: HashMap<u32, (u64, &Sighting)> = HashMap::new();
            for after in sightings {
                let Some((producer, seq)) = parse_value(&after.value) else {
                    continue;
                };
                if let Some(&(before_seq, before)) = last.get(&producer) {
                    if seq < before_seq {
                        let (before, after) = (before.clone(), after.clone());
                        anomalies.push(Anomaly::Reordered { before, after });
                    }
                }
                last.insert(producer, (seq, after));
            }
        }
        anomalies
    }

    /// Places that acks, reads and the final read saw holding different values.
    fn divergent_offsets(&self) -> Vec<Anomaly> {
        let mut first: HashMap<Place, &str> = HashMap::new();
        let mut divergent: BTreeMap<Place, Vec<&str>> = BTreeMap::new();
        for sighting in self.events.iter().filter_map(|(_, event)| event.sighting()) {
            let (place, value) = (sighting.place, sighting.value.as_str());
            let held = *first.entry(place).or_insert(value);
            if held != value {
                let values = divergent.entry(place).or_insert_with(|| vec![held]);
                if !values.contains(&value) {
                    values.push(value);
                }
            }
        }
        divergent
            .into_iter()
            .map(|(place, values)| {
                let values = values.into_iter().map(String::from).collect();
                Anomaly::Divergent { place, values }
            })
            .collect()
    }

    /// Reads at or below the same consumer's previous read of the partition, with no seek
    /// between them.
    fn backwards_reads(&self) -> Vec<Anomaly> {
        let mut previous: HashMap<(u32, u32), (usize, Place)> = HashMap::new();
        let mut anomalies = Vec::new();
        for (sequence, (_, event)) in self.events.iter().enumerate() {
            match event {
                Event::Seek { consumer, place } => {
                    previous.remove(&(*consumer, place.partition));
                }
                Event::Read { consumer, sighting } => {
                    let (consumer, then) = (*consumer, sighting.place);
                    let last = previous.insert((consumer, then.partition), (sequence, then));
                    if let Some((previous_sequence, previous)) = last {
                        if then.offset <= previous.offset {
                            let sequences = (previous_sequence, sequence);
                            let backwards = Anomaly::Backwards {
                                consumer,
                                previous,
                                then,
                                sequences,
                            };
                            anomalies.push(backwards);
                        }
                    }
                }
                _ => {}
            }
        }
        anomalies
    }

    /// The events that show `anomaly`, with the notes between the first and last of them.
    fn excerpt(&self, anomaly: &Anomaly) -> Vec<String> {
        let touching: Vec<usize> = (0..self.events.len())
            .filter(|&sequence| anomaly.touches(sequence, &self.events[sequence].1))
            .collect();
        let (Some(&first), Some(&last)) = (touching.first(), touching.last()) else {
            return Vec::new();
        };
        // A loss happens after the ack: any fault up to the end of the history may cause it.
        let last = match anomaly {
            Anomaly::Lost { .. } => self.events.len() - 1,
            _ => last,
        };
        let shown = (first..=last).filter(|&sequence| {
            let is_note = matches!(self.events[sequence].1, Event::Note(_));
            is_note || touching.binary_search(&sequence).is_ok()
        });
        shown.map(|sequence| self.line(sequence)).collect()
    }

    fn line(&self, sequence: usize) -> String {
        let (at, event) = &self.events[sequence];
        let since_start_ms = at.duration_since(self.start).as_secs_f64() * 1000.0;
        format!("#{sequence:<7} {since_start_ms:>10.1} ms  {event}")
    }
}

/// Which kind of event saw a value at a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Ack,
    Read,
    Final,
}

/// The anomalies of one value, from every place it was acked, read or finally read.
fn judge_value(value: &str, seen: &[(Place, Source)]) -> Vec<Anomaly> {
    let acked = distinct_places(seen, |source| source == Source::Ack);
    let stored = distinct_places(seen, |source| source != Source::Ack);
    let mut all = distinct_places(seen, |_| true);
    let in_final = seen.iter().any(|&(_, source)| source == Source::Final);
    let acked_sighting = |place: Place| Sighting::new(place.partition, place.offset, value);
    let mut anomalies = Vec::new();
    if let (Some(&place), false) = (acked.first(), in_final) {
        let acked = acked_sighting(place);
        anomalies.push(Anomaly::Lost { acked });
    }
    if acked.len() == 1 && stored.len() == 1 && acked[0] != stored[0] {
        let (acked, stored_at) = (acked_sighting(acked[0]), stored[0]);
        anomalies.push(Anomaly::AckedElsewhere { acked, stored_at });
    } else if all.len() > 1 {
        all.sort();
        let value = value.to_string();
        anomalies.push(Anomaly::Duplicated { value, places: all });
    }
    anomalies
}

/// The distinct places of those seen by a source that passes `keep`.
fn distinct_places(seen: &[(Place, Source)], keep: impl Fn(Source) -> bool) -> Vec<Place> {
    let mut places: Vec<Place> = Vec::new();
    for &(place, source) in seen {
        if keep(source) && !places.contains(&place) {
            places.push(place);
        }
    }
    places
}

/// Which anomalies a report prints: the first of every kind, then the earliest others.
fn shown_anomalies(anomalies: &[Anomaly]) -> Vec<usize> {
    let (mut kinds, mut shown, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for (index, anomaly) in anomalies.iter().enumerate() {
        if kinds.contains(&anomaly.kind()) {
            others.push(index);
        } else {
            kinds.push(anomaly.kind());
            shown.push(index);
        }
    }
    shown.extend(others);
    shown.truncate(REPORT_ANOMALIES_SHOWN_MAX);
    shown.sort();
    shown
}

/// Something the history shows the broker did wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Acknowledged, then absent from the final read.
    Lost { acked: Sighting },
    /// Acked, read or finally read at more than one place.
    Duplicated { value: String, places: Vec<Place> },
    /// In a partition's final read, a producer's later value sits before its earlier one.
    Reordered { before: Sighting, after: Sighting },
    /// One place seen holding different values.
    Divergent { place: Place, values: Vec<String> },
    /// Acknowledged at one place, but read or finally read at another.
    AckedElsewhere { acked: Sighting, stored_at: Place },
    /// A consumer read `then` at or below its `previous` read of the partition, with no seek
    /// between them; `sequences` are the two reads' sequence numbers in the history.
    Backwards {
        consumer: u32,
        previous: Place,
        then: Place,
        sequences: (usize, usize),
    },
}

impl Anomaly {
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::Lost { .. } => "lost",
            Anomaly::Duplicated { .. } => "duplicated",
            Anomaly::Reordered { .. } => "reordered",
            Anomaly::Divergent { .. } | Anomaly::AckedElsewhere { .. } => "divergent offset",
            Anomaly::Backwards { .. } => "backwards",
        }
    }

    /// Whether the event at `sequence` belongs in this anomaly's excerpt.
    fn touches(&self, sequence: usize, event: &Event) -> bool {
        let has_value = |wanted: &str| event.value() == Some(wanted);
        let seen_at = event.sighting().map(|sighting| sighting.place);
        match self {
            Anomaly::Lost { acked } => {
                let final_there = matches!(event, Event::FinalRead(s) if s.place == acked.place);
                has_value(&acked.value) || final_there
            }
            Anomaly::Duplicated { value, .. } => has_value(value),
            Anomaly::Reordered { before, after } => {
                has_value(&before.value) || has_value(&after.value)
            }
            Anomaly::Divergent { place, values } => {
                seen_at == Some(*place) || values.iter().any(|value| has_value(value))
            }
            Anomaly::AckedElsewhere { acked, .. } => {
                has_value(&acked.value) || seen_at == Some(acked.place)
            }
            Anomaly::Backwards {
                consumer,
                previous,
                sequences,
                ..
            } => {
                let within = (sequences.0..=sequences.1).contains(&sequence);
                let position = match event {
                    Event::Read { consumer, sighting } => Some((*consumer, sighting.place)),
                    Event::Seek { consumer, place } => Some((*consumer, *place)),
                    _ => None,
                };
                let same = |(reader, at): (u32, Place)| {
                    reader == *consumer && at.partition == previous.partition
                };
                within && position.is_some_and(same)
            }
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Anomaly::Lost { acked } => write!(f, "{acked} was acked, not in the final read"),
            Anomaly::Duplicated { value, places } => {
                let places: Vec<String> = places.iter().map(Place::to_string).collect();
                write!(f, "{value} is at {}", places.join(", "))
            }
            Anomaly::Reordered { before, after } => write!(f, "{before} sits before {after}"),
            Anomaly::Divergent { place, values } => {
                write!(f, "{place} holds {}", values.join(", "))
            }
            Anomaly::AckedElsewhere { acked, stored_at } => {
                write!(f, "{acked} was acked, but it is at {stored_at}")
            }
            Anomaly::Backwards {
                consumer,
                previous,
                then,
                ..
            } => write!(
                f,
                "consumer {consumer} read {then} after offset {}, with no seek between",
                previous.offset
            ),
        }
    }
}

/// What a history held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: usize,
    pub acked: usize,
    pub failed: usize,
    pub read: usize,
    pub final_values: usize,
    pub final_per_partition: BTreeMap<u32, usize>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let partitions: Vec<String> = self
            .final_per_partition
            .iter()
            .map(|(partition, count)| format!("partition {partition}: {count}"))
            .collect();
        write!(
            f,
            "sent {}, acked {}, failed {}, read {}, final {} ({})",
            self.sent,
            self.acked,
            self.failed,
            self.read,
            self.final_values,
            partitions.join(", ")
        )
    }
}

/// Every anomaly a check found, and the excerpts of history showing the ones it prints.
#[derive(Clone)]
pub struct Report {
    pub summary: Summary,
    pub anomalies: Vec<Anomaly>,
    events: usize,
    shown: Vec<(usize, Vec<String>)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for anomaly in &self.anomalies {
            *kinds.entry(anomaly.kind()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        let found = self.anomalies.len();
        let noun = if found == 1 { "anomaly" } else { "anomalies" };
        writeln!(
            f,
            "history check found {found} {noun} ({})",
            kinds.join(", ")
        )?;
        writeln!(f, "history: {} events; {}", self.events, self.summary)?;
        for (index, excerpt) in &self.shown {
            writeln!(f, "\n{}. {}", index + 1, self.anomalies[*index])?;
            for line in excerpt {
                writeln!(f, "    {line}")?;
            }
        }
        let hidden = found - self.shown.len();
        if hidden > 0 {
            writeln!(f, "\n... and {hidden} more not shown")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cheap, cloneable handle on one shared [`History`], for the test's client tasks.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<History>>);

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The history, even if a client panicked while recording: its events are still true.
    fn history(&self) -> MutexGuard<'_, History> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn send(&self, producer: u32, partition: u32, value: &str) {
        self.history().send(producer, partition, value);
    }

    pub fn ack(&self, partition: u32, offset: u64, value: &str) {
        self.history().ack(partition, offset, value);
    }

    pub fn fail(&self, value: &str, reason: impl fmt::Display) {
        self.history().fail(value, reason);
    }

    pub fn read(&self, consumer: u32, partition: u32, offset: u64, value: &str) {
        self.history().read(consumer, partition, offset, value);
    }

    pub fn seek(&self, consumer: u32, partition: u32, offset: u64) {
        self.history().seek(consumer, partition, offset);
    }

    pub fn final_read(&self, partition: u32, offset: u64, value: &str) {
        self.history().final_read(partition, offset, value);
    }

    pub fn note(&self, text: impl fmt::Display) {
        self.history().note(text);
    }

    pub fn check(&self) -> Result<Summary, Report> {
        self.history().check()
    }

    /// The longest time between two acknowledgements on `partition` after `since`.
    pub fn longest_ack_gap_after(&self, since: Instant, partition: u32) -> Duration {
        self.history().longest_ack_gap_after(since, partition)
    }

    /// When the first acknowledgement after `since` on `partition` came (failover time).
    pub fn first_ack_after(&self, since: Instant, partition: u32) -> Option<Instant> {
        self.history().first_ack_after(since, partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anomalies of a history that must fail its check, and its printed report.
    fn failed_check(history: &History) -> (Vec<Anomaly>, String) {
        let report = history.check().expect_err("the history holds an anomaly");
        let printed = report.to_string();
        assert_eq!(
            printed,
            format!("{report:?}"),
            "Debug prints what Display does"
        );
        (report.anomalies, printed)
    }

    /// `producer` sends its `seq`th value to `partition` and has it acked at `offset`.
    fn sent_and_acked(history: &mut History, producer: u32, partition: u32, seq: u64, offset: u64) {
        history.send(producer, partition, &value(producer, seq));
        history.ack(partition, offset, &value(producer, seq));
    }

    fn at(offset: u64) -> Place {
        Place {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn values_round_trip_and_others_do_not_parse() {
        assert_eq!(value(3, 17), "p3-17");
        assert_eq!(parse_value(&value(3, 17)), Some((3, 17)));
        for other in ["", "p", "p3", "p3-", "q3-17", "p-17", "p3-x"] {
            assert_eq!(parse_value(other), None, "{other:?}");
        }
    }

    #[test]
    fn clean_history_with_failures_and_seeks_passes() {
        let recorder = Recorder::new();
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for seq in 0..3 {
                        recorder.send(producer, producer, &value(producer, seq));
                        recorder.ack(producer, seq, &value(producer, seq));
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().expect("producer thread");
        }
        recorder.send(0, 0, "p0-3");
        recorder.note("kill -9 broker 2");
        recorder.fail("p0-3", "timed out"); // never stored
        recorder.send(0, 0, "p0-4");
        recorder.fail("p0-4", "connection reset"); // stored once, at offset 3
        for offset in 0..2 {
            recorder.read(7, 0, offset, &value(0, offset));
        }
        recorder.seek(7, 0, 0);
        for offset in 0..3 {
            recorder.read(7, 0, offset, &value(0, offset));
        }
        recorder.read(7, 0, 3, "p0-4");
        for seq in 0..3 {
            recorder.final_read(0, seq, &value(0, seq));
            recorder.final_read(1, seq, &value(1, seq));
        }
        recorder.final_read(0, 3, "p0-4");

        let summary = recorder.check().expect("a clean history passes");
        assert_eq!((summary.sent, summary.acked, summary.failed), (8, 6, 2));
        assert_eq!((summary.read, summary.final_values), (6, 7));
        assert_eq!(
            summary.final_per_partition,
            BTreeMap::from([(0, 4), (1, 3)])
        );
        assert!(summary
            .to_string()
            .contains("final 7 (partition 0: 4, partition 1: 3)"));
    }

    #[test]
    fn acked_value_missing_from_final_read_is_lost() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 0, 0);
        sent_and_acked(&mut history, 1, 0, 1, 1);
        history.note("kill -9 broker 2");
        history.final_read(0, 0, "p1-0");

        let (anomalies, printed) = failed_check(&history);
        let acked = Sighting::new(0, 1, "p1-1");
        assert_eq!(anomalies, vec![Anomaly::Lost { acked }]);
        assert!(
            printed.contains("lost: p1-1 at partition 0 offset 1 was acked"),
            "{printed}"
        );
        assert!(
            printed.contains("note   kill -9 broker 2"),
            "the fault after the ack: {printed}"
        );
        assert!(
            !printed.contains("p1-0"),
            "only the lost value's events: {printed}"
        );
    }

    #[test]
    fn value_twice_in_final_read_is_duplicated() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 0, 0);
        history.final_read(0, 0, "p1-0");
        history.final_read(0, 1, "p1-0");

        let (anomalies, printed) = failed_check(&history);
        let places = vec![at(0), at(1)];
        assert_eq!(
            anomalies,
            vec![Anomaly::Duplicated {
                value: "p1-0".into(),
                places
            }]
        );
        assert!(
            printed.contains("duplicated: p1-0 is at partition 0 offset 0, partition 0 offset 1")
        );
    }

    #[test]
    fn failed_value_read_at_two_offsets_is_duplicated() {
        let mut history = History::new();
        history.send(1, 0, "p1-0");
        history.fail("p1-0", "timed out");
        history.read(1, 0, 4, "p1-0");
        history.read(2, 0, 5, "p1-0");
        history.final_read(0, 4, "p1-0");

        let (anomalies, printed) = failed_check(&history);
        let places = vec![at(4), at(5)];
        assert_eq!(
            anomalies,
            vec![Anomaly::Duplicated {
                value: "p1-0".into(),
                places
            }]
        );
        assert!(
            printed.contains("read   p1-0 at partition 0 offset 5 by consumer 2"),
            "{printed}"
        );
    }

    #[test]
    fn producer_values_out_of_sequence_order_are_reordered() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 1, 0);
        sent_and_acked(&mut history, 2, 0, 0, 1);
        sent_and_acked(&mut history, 1, 0, 0, 2);
        for (offset, value) in ["p1-1", "p2-0", "p1-0"].into_iter().enumerate() {
            history.final_read(0, offset as u64, value);
        }

        let (anomalies, printed) = failed_check(&history);
        let (before, after) = (Sighting::new(0, 0, "p1-1"), Sighting::new(0, 2, "p1-0"));
        assert_eq!(anomalies, vec![Anomaly::Reordered { before, after }]);
        assert!(
            printed.contains("p1-1 at partition 0 offset 0 sits before p1-0"),
            "{printed}"
        );
        assert!(
            !printed.contains("p2-0"),
            "only the reordered values' events: {printed}"
        );
    }

    #[test]
    fn one_offset_holding_two_values_is_divergent() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 0, 0);
        history.send(2, 0, "p2-0");
        history.fail("p2-0", "not leader");
        history.read(1, 0, 0, "p2-0");
        history.note("partition heals");
        history.final_read(0, 0, "p1-0");

        let (anomalies, printed) = failed_check(&history);
        let values = vec!["p1-0".to_string(), "p2-0".to_string()];
        assert_eq!(
            anomalies,
            vec![Anomaly::Divergent {
                place: at(0),
                values
            }]
        );
        assert!(printed.contains("divergent offset: partition 0 offset 0 holds p1-0, p2-0"));
        assert!(printed.contains("note   partition heals"), "{printed}");
    }

    #[test]
    fn value_stored_away_from_its_acked_offset_is_divergent() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 0, 5);
        history.final_read(0, 0, "p1-0");

        let (anomalies, printed) = failed_check(&history);
        let acked = Sighting::new(0, 5, "p1-0");
        assert_eq!(
            anomalies,
            vec![Anomaly::AckedElsewhere {
                acked,
                stored_at: at(0)
            }]
        );
        assert_eq!(anomalies[0].kind(), "divergent offset");
        assert!(
            printed.contains("p1-0 at partition 0 offset 5 was acked, but it is at partition 0")
        );
    }

    #[test]
    fn rereading_without_a_seek_is_backwards() {
        let mut history = History::new();
        sent_and_acked(&mut history, 1, 0, 0, 0);
        sent_and_acked(&mut history, 1, 0, 1, 1);
        history.read(3, 0, 0, "p1-0");
        history.read(3, 0, 1, "p1-1");
        history.read(4, 0, 0, "p1-0");
        history.read(3, 0, 1, "p1-1");
        history.final_read(0, 0, "p1-0");
        history.final_read(0, 1, "p1-1");

        let (anomalies, printed) = failed_check(&history);
        let (previous, then, sequences) = (at(1), at(1), (5, 7));
        let backwards = Anomaly::Backwards {
            consumer: 3,
            previous,
            then,
            sequences,
        };
        assert_eq!(anomalies, vec![backwards]);
        assert!(printed.contains("consumer 3 read partition 0 offset 1 after offset 1"));
        assert!(!printed.contains("p1-0"), "only the two reads: {printed}");
    }

    #[test]
    fn report_shows_every_kind_and_counts_the_rest() {
        let mut history = History::new();
        for seq in 0..15 {
            sent_and_acked(&mut history, 1, 0, seq, seq);
        }
        history.read(1, 0, 3, "p1-3");
        history.read(1, 0, 2, "p1-2");

        let (anomalies, printed) = failed_check(&history);
        assert_eq!(anomalies.len(), 16);
        assert!(printed.starts_with("history check found 16 anomalies (1 backwards, 15 lost)"));
        assert!(printed.contains("\n16. backwards: consumer 1"), "{printed}");
        assert!(printed.contains("... and 6 more not shown"), "{printed}");
        assert!(!printed.contains("\n10. "), "{printed}");
    }
}
