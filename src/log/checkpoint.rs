//! The recovery point of a partition: how far its active segment was known to be synced.
//!
//! Recovery scans the active segment and cuts it at the first invalid batch. Past the
//! recovery point such a batch is a torn write (never acknowledged as durable), and cutting
//! it is right. Below the recovery point the bytes were synced and reported durable, so an
//! invalid batch there is damage to acknowledged data: opening fails with the file and byte
//! instead of cutting it away.
//!
//! Made with the partition (an empty log's point, not synced), then rewritten in place (no
//! truncation, so its sync flushes the data alone) at most once per
//! `RECOVERY_POINT_INTERVAL_MS` (10 s) after a sync, after a truncation, and at close. A
//! missing, torn or damaged file only means recovery knows less (it then cuts at the first
//! invalid batch); a truncation that removes segments removes the point first.
//!
//! File `recovery-point` in the partition directory, little-endian:
//!
//! ```text
//! offset size field
//!  0     4    magic          b"SLRP"
//!  4     1    version        1
//!  5     3    reserved       0
//!  8     8    segment_base   u64  base offset of the active segment it describes
//! 16     8    position       u64  bytes of that segment synced
//! 24     8    next_offset    u64  the offset after the last synced batch
//! 32     4    crc32c         u32  of bytes [0, 32)
//! ```

use std::path::{Path, PathBuf};

/// How often, at most, a partition's recovery point is rewritten.
/// Each write is a small file and an fdatasync per partition, so it stays rare; data synced
/// since the last one is still recovered, only damage to it would be cut rather than refused.
pub use crate::constants::RECOVERY_POINT_INTERVAL_MS;

const FILE_NAME: &str = "recovery-point";
const MAGIC: [u8; 4] = *b"SLRP";
const VERSION: u8 = 1;
const BYTES: usize = 36;

/// A synced position in the active segment. Plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl RecoveryPoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BYTES);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, 0, 0, 0]);
        out.extend_from_slice(&self.segment_base.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a recovery point; `None` for anything that is not exactly a valid one.
    pub fn decode(bytes: &[u8]) -> Option<RecoveryPoint> {
        if bytes.len() != BYTES
            || bytes[0..4] != MAGIC
            || bytes[4] != VERSION
            || bytes[5..8] != [0; 3]
        {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[32..36].try_into().ok()?);
        if crc32c::crc32c(&bytes[..32]) != crc {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Some(RecoveryPoint {
            segment_base: u64_at(8),
            position: u64_at(16),
            next_offset: u64_at(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn recovery_points_round_trip(base in any::<u64>(), position in any::<u64>(), next in any::<u64>()) {
            let point = RecoveryPoint { segment_base: base, position, next_offset: next };
            prop_assert_eq!(RecoveryPoint::decode(&point.encode()), Some(point));
        }

        #[test]
        fn damaged_recovery_points_are_ignored(flip in 0usize..BYTES, bit in 0u8..8) {
            let mut bytes = RecoveryPoint { segment_base: 5, position: 4096, next_offset: 77 }.encode();
            bytes[flip] ^= 1 << bit;
            prop_assert_eq!(RecoveryPoint::decode(&bytes), None);
        }
    }

    #[test]
    fn short_or_long_files_are_ignored() {
        let bytes = RecoveryPoint {
            segment_base: 0,
            position: 1,
            next_offset: 1,
        }
        .encode();
        assert_eq!(RecoveryPoint::decode(&bytes[..BYTES - 1]), None);
        assert_eq!(
            RecoveryPoint::decode(&[bytes.as_slice(), &[0]].concat()),
            None
        );
        assert_eq!(RecoveryPoint::decode(&[]), None);
    }
}
