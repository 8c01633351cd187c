//! Committed offsets: the record format of the offsets log, and the in-memory table that
//! replaying the log rebuilds.
//!
//! Each commit is one record in a batch of the offsets log (an ordinary partition log on
//! the shard's storage engine, `<data>/__offsets/<n>`). The record's key is the group id;
//! its value is:
//!
//! ```text
//! byte 0        format version (1)
//! bytes 1..     rkyv archive (unaligned, little-endian) of OffsetRecord version 1:
//!                 group: String, topic: String, partition: u32, offset: u64,
//!                 metadata: String, commit_time_ms: i64
//! ```
//!
//! The last record for a (group, topic, partition) wins. A snapshot writes every live
//! entry again at the tail of the log, so everything before it may go (see `offsets_log`).

use std::collections::{BTreeMap, HashMap};

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

use crate::constants::{COMMIT_METADATA_BYTES_MAX, GROUP_ID_BYTES_MAX, TOPIC_NAME_BYTES_MAX};

/// The version byte in front of every offset record value.
pub const OFFSET_RECORD_VERSION: u8 = 1;

/// One committed offset, as stored.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
    pub commit_time_ms: i64,
}

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetRecordError {
    #[error("offset record is empty")]
    Empty,
    #[error("offset record has unknown format version {0}")]
    UnknownVersion(u8),
    #[error("offset record is not a valid archive: {0}")]
    InvalidArchive(String),
    #[error("offset record field {what} of {len} bytes exceeds {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl OffsetRecord {
    /// The record value: version byte, then the archive.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![OFFSET_RECORD_VERSION];
        let archive = rkyv::to_bytes::<rancor::Error>(self)
            .expect("serializing plain owned data into a Vec cannot fail");
        out.extend_from_slice(&archive);
        out
    }

    /// Reads a record value back, checking the archive (these bytes come from disk).
    pub fn decode(value: &[u8]) -> Result<OffsetRecord, OffsetRecordError> {
        let (&version, archive) = value.split_first().ok_or(OffsetRecordError::Empty)?;
        if version != OFFSET_RECORD_VERSION {
            return Err(OffsetRecordError::UnknownVersion(version));
        }
        let archived = rkyv::access::<ArchivedOffsetRecord, rancor::Error>(archive)
            .map_err(|e| OffsetRecordError::InvalidArchive(e.to_string()))?;
        let too_long = |what, len: usize, max| {
            (len > max).then_some(OffsetRecordError::TooLong { what, len, max })
        };
        if let Some(error) = too_long("group", archived.group.len(), GROUP_ID_BYTES_MAX)
            .or_else(|| too_long("topic", archived.topic.len(), TOPIC_NAME_BYTES_MAX))
            .or_else(|| {
                too_long(
                    "metadata",
                    archived.metadata.len(),
                    COMMIT_METADATA_BYTES_MAX,
                )
            })
        {
            return Err(error);
        }
        rkyv::deserialize::<OffsetRecord, rancor::Error>(archived)
            .map_err(|e| OffsetRecordError::InvalidArchive(e.to_string()))
    }
}

/// A committed offset in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub metadata: String,
    pub commit_time_ms: i64,
    /// Where in the offsets log this commit is: a later commit (by log position) always
    /// wins, whatever order their completions run in.
    pub log_offset: u64,
}

/// Every group's committed offsets of one offsets partition. Owned by the coordinator's
/// shard.
#[derive(Debug, Default)]
pub struct OffsetTable {
    groups: HashMap<String, BTreeMap<(String, u32), Committed>>,
    entries: usize,
}

impl OffsetTable {
    /// Applies a record found at `log_offset`, unless a later one is already applied.
    pub fn apply(&mut self, record: OffsetRecord, log_offset: u64) {
        let group = self.groups.entry(record.group).or_default();
        let key = (record.topic, record.partition);
        let committed = Committed {
            offset: record.offset,
            metadata: record.metadata,
            commit_time_ms: record.commit_time_ms,
            log_offset,
        };
        match group.get_mut(&key) {
            Some(existing) if existing.log_offset > log_offset => {}
            Some(existing) => *existing = committed,
            None => {
                group.insert(key, committed);
                self.entries += 1;
            }
        }
    }

    pub fn group(&self, group: &str) -> Option<&BTreeMap<(String, u32), Committed>> {
        self.groups.get(group)
    }

    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<&Committed> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    pub fn contains_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Groups with at least one stored offset.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Live (group, topic, partition) entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Every live entry as a record (for a snapshot), in a stable order.
    pub fn records(&self) -> Vec<OffsetRecord> {
        let mut groups: Vec<&String> = self.groups.keys().collect();
        groups.sort();
        let mut records = Vec::with_capacity(self.entries);
        for group in groups {
            for ((topic, partition), committed) in &self.groups[group] {
                records.push(OffsetRecord {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    offset: committed.offset,
                    metadata: committed.metadata.clone(),
                    commit_time_ms: committed.commit_time_ms,
                });
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(group: &str, partition: u32, offset: u64) -> OffsetRecord {
        OffsetRecord {
            group: group.into(),
            topic: "t".into(),
            partition,
            offset,
            metadata: String::new(),
            commit_time_ms: 7,
        }
    }

    #[test]
    fn records_round_trip() {
        let original = OffsetRecord {
            metadata: "processed by worker 3".into(),
            ..record("readers", 4, 1234)
        };
        assert_eq!(OffsetRecord::decode(&original.encode()), Ok(original));
    }

    #[test]
    fn bad_values_are_errors() {
        assert_eq!(OffsetRecord::decode(&[]), Err(OffsetRecordError::Empty));
        let mut value = record("g", 0, 1).encode();
        value[0] = 9;
        assert_eq!(
            OffsetRecord::decode(&value),
            Err(OffsetRecordError::UnknownVersion(9))
        );
        assert!(matches!(
            OffsetRecord::decode(&[OFFSET_RECORD_VERSION, 1, 2, 3]),
            Err(OffsetRecordError::InvalidArchive(_))
        ));
    }

    #[test]
    fn the_later_log_position_wins_whatever_the_apply_order() {
        let mut table = OffsetTable::default();
        table.apply(record("g", 0, 50), 11);
        table.apply(record("g", 0, 40), 10);
        assert_eq!(table.get("g", "t", 0).map(|c| c.offset), Some(50));
        table.apply(record("g", 0, 60), 12);
        assert_eq!(table.get("g", "t", 0).map(|c| c.offset), Some(60));
        table.apply(record("g", 1, 5), 13);
        table.apply(record("h", 1, 5), 14);
        assert_eq!(table.len(), 3);
        assert_eq!(table.records().len(), 3);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = OffsetRecord::decode(&bytes);
            let mut versioned = vec![OFFSET_RECORD_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = OffsetRecord::decode(&versioned);
        }

        #[test]
        fn flipped_bytes_never_panic(index in 0usize..200, bit in 0u8..8) {
            let mut value = record("group-name", 3, 99).encode();
            let index = index % value.len();
            value[index] ^= 1 << bit;
            let _ = OffsetRecord::decode(&value);
        }
    }
}
