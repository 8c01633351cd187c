//! The leader-epoch cache of a partition: where each leader epoch's batches start.
//!
//! Every batch carries the epoch of the leader that appended it, and one leader writes each
//! epoch, so two replicas that hold a batch of epoch `e` ending at the same offset hold
//! the same log up to there. After a failover a follower finds the last epoch both logs
//! share and cuts exactly what follows it (the reasoning of Kafka's KIP-101 and KIP-279):
//! it asks the leader where the follower's last epoch ends on the leader
//! (`OffsetsForLeaderEpoch`), cuts there, and asks again until the epochs agree.
//!
//! The cache is rebuilt from batch headers, like the producer state: it is written to
//! `leader-epochs` at the same moments and offset as the producer snapshot
//! (`super::idempotence`), and on open the headers after that offset extend it.

use std::path::{Path, PathBuf};

/// The file in a partition directory.
pub const LEADER_EPOCHS_FILE: &str = "leader-epochs";

const MAGIC: &[u8; 4] = b"SLE1";
/// Entries a file may hold: one per leader epoch that wrote to the partition.
const ENTRIES_MAX: usize = 1 << 20;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(LEADER_EPOCHS_FILE)
}

/// `(epoch, first offset)` pairs, epochs and offsets rising.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(u32, u64)>,
}

impl EpochCache {
    /// Notes a batch of `epoch` at `base_offset` (batches arrive in offset order). A batch
    /// of an epoch older than the last is an old leader's, which only a divergent log can
    /// follow with; it is not noted.
    pub fn note(&mut self, epoch: u32, base_offset: u64) -> bool {
        match self.entries.last() {
            Some(&(last, _)) if last >= epoch => last == epoch,
            _ => {
                self.entries.push((epoch, base_offset));
                true
            }
        }
    }

    /// Forgets the epochs that start at or past `offset` (the log was cut there).
    pub fn truncate_to(&mut self, offset: u64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// The epoch of the last batch, if any batch was noted.
    pub fn last_epoch(&self) -> Option<u32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// The largest epoch at or below `epoch`, and the offset where it ends in a log that
    /// ends at `log_end` (the start of the next epoch, or the log end). `None` for the
    /// epoch when this log holds no epoch that old; the offset is then where its first
    /// epoch starts (nothing before it can be shared).
    pub fn end_of(&self, epoch: u32, log_end: u64) -> (Option<u32>, u64) {
        let at = self.entries.partition_point(|&(e, _)| e <= epoch);
        let end = self.entries.get(at).map_or(log_end, |&(_, start)| start);
        match at {
            0 => (None, end.min(log_end)),
            _ => (Some(self.entries[at - 1].0), end.min(log_end)),
        }
    }

    /// `MAGIC`, the offset the cache holds up to, the count, the entries, then CRC32C.
    pub fn encode(&self, upto: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(20 + self.entries.len() * 12);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&upto.to_le_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for &(epoch, start) in &self.entries {
            bytes.extend_from_slice(&epoch.to_le_bytes());
            bytes.extend_from_slice(&start.to_le_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The cache and the offset it holds up to, or why the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Result<(u64, EpochCache), String> {
        if bytes.len() < 20 || &bytes[..4] != MAGIC {
            return Err("not a leader-epoch file".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("checksum mismatch".into());
        }
        let upto = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        if count > ENTRIES_MAX || body.len() != 16 + count * 12 {
            return Err(format!("{count} entries do not fit {} bytes", body.len()));
        }
        let mut cache = EpochCache::default();
        for entry in body[16..].chunks_exact(12) {
            let epoch = u32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
            let start = u64::from_le_bytes(entry[4..].try_into().expect("8 bytes"));
            let rising = cache
                .entries
                .last()
                .is_none_or(|&(e, s)| e < epoch && s <= start);
            if !rising || start > upto {
                return Err(format!("entry ({epoch}, {start}) out of order"));
            }
            cache.entries.push((epoch, start));
        }
        Ok((upto, cache))
    }
}

/// One step of a follower's reconciliation: the leader answered `leader` (its largest
/// epoch at or below the follower's last, and where that epoch ends on the leader) for a
/// follower whose log is `mine` and ends at `log_end`. Returns where to cut, and whether
/// the logs then agree (else ask again with the new last epoch).
pub fn follower_cut(mine: &EpochCache, log_end: u64, leader: (Option<u32>, u64)) -> (u64, bool) {
    match leader {
        (None, leader_end) => (leader_end.min(log_end), true),
        (Some(epoch), leader_end) => match mine.end_of(epoch, log_end) {
            (Some(shared), my_end) if shared == epoch => (leader_end.min(my_end), true),
            (Some(_), my_end) => (my_end, false),
            (None, my_end) => (my_end, true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(u32, u64)]) -> EpochCache {
        let mut cache = EpochCache::default();
        for &(epoch, start) in entries {
            assert!(cache.note(epoch, start));
        }
        cache
    }

    #[test]
    fn an_epoch_ends_where_the_next_starts_or_at_the_log_end() {
        let c = cache(&[(0, 0), (2, 50), (5, 80)]);
        assert_eq!(c.end_of(0, 100), (Some(0), 50));
        assert_eq!(c.end_of(1, 100), (Some(0), 50));
        assert_eq!(c.end_of(2, 100), (Some(2), 80));
        assert_eq!(c.end_of(4, 100), (Some(2), 80));
        assert_eq!(c.end_of(5, 100), (Some(5), 100));
        assert_eq!(c.end_of(9, 100), (Some(5), 100));
        let later = cache(&[(3, 10)]);
        assert_eq!(later.end_of(2, 40), (None, 10));
        assert_eq!(EpochCache::default().end_of(7, 0), (None, 0));
    }

    #[test]
    fn noting_and_cutting_keep_epochs_rising() {
        let mut c = cache(&[(1, 0)]);
        assert!(c.note(1, 10), "the same epoch continues");
        assert!(!c.note(0, 20), "an older epoch is not noted");
        assert!(c.note(3, 30));
        assert_eq!(c.entries(), &[(1, 0), (3, 30)]);
        c.truncate_to(30);
        assert_eq!(c.last_epoch(), Some(1));
        c.truncate_to(0);
        assert_eq!(c.last_epoch(), None);
    }

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let c = cache(&[(0, 0), (4, 7), (9, 1000)]);
        let bytes = c.encode(2000);
        assert_eq!(EpochCache::decode(&bytes), Ok((2000, c.clone())));
        for cut in 0..bytes.len() {
            assert!(EpochCache::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(EpochCache::decode(&flipped).is_err(), "flip at {at}");
        }
    }

    /// Two logs written by the rules (one leader per epoch) and cut by the follower's loop
    /// agree on what remains.
    #[test]
    fn the_follower_loop_cuts_exactly_the_divergent_suffix() {
        // Offsets 0..40 epoch 0 shared; the follower then got 40..60 from a leader of
        // epoch 1 that the new leader never had; the leader wrote 40..50 at epoch 2 and
        // leads at 4 from 50.
        let leader = cache(&[(0, 0), (2, 40), (4, 50)]);
        let follower = cache(&[(0, 0), (1, 40), (3, 60)]);
        let (mut f, mut end) = (follower, 70u64);
        let mut rounds = 0;
        while let Some(last) = f.last_epoch() {
            rounds += 1;
            let (cut, done) = follower_cut(&f, end, leader.end_of(last, 55));
            f.truncate_to(cut);
            end = cut;
            if done {
                break;
            }
        }
        assert_eq!((end, rounds), (40, 2));
        assert_eq!(f.entries(), &[(0, 0)]);
        // A follower that holds only what the leader holds keeps all of it.
        let same = cache(&[(0, 0), (2, 40)]);
        assert_eq!(follower_cut(&same, 48, leader.end_of(2, 55)), (48, true));
        // One that holds more of the leader's epoch than the leader does cuts to the
        // leader's end of it.
        assert_eq!(follower_cut(&same, 53, leader.end_of(2, 55)), (50, true));
        // One whose epochs the leader never had cuts where the leader's log begins.
        let stranger = cache(&[(1, 0)]);
        assert_eq!(
            follower_cut(&stranger, 9, cache(&[(3, 0)]).end_of(1, 20)),
            (0, true)
        );
    }
}
