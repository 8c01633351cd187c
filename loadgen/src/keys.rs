//! Message keys: none, round-robin, uniform random or Zipf-distributed over `--key-count`
//! keys. A small seeded generator, so a run's keys do not depend on an outside crate.

use crate::args::KeyMode;

/// Zipf exponent: key `k` (1-based rank) is chosen with weight `1 / k^s`.
pub const ZIPF_EXPONENT: f64 = 1.0;

/// SplitMix64: fast, seeded, good enough to pick keys.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`, by binary
/// search over the cumulative weights (n is a key count, a few thousand at most in practice).
#[derive(Debug, Clone)]
pub struct ZipfSampler {
    cumulative: Vec<f64>,
}

impl ZipfSampler {
    pub fn new(n: u32, exponent: f64) -> Self {
        assert!(n > 0, "zipf over no keys");
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / f64::from(rank).powf(exponent);
                total
            })
            .collect();
        ZipfSampler { cumulative }
    }

    pub fn sample(&self, random: &mut SplitMix64) -> usize {
        let total = *self.cumulative.last().expect("at least one key");
        let target = random.next_f64() * total;
        let rank = self.cumulative.partition_point(|&c| c <= target);
        rank.min(self.cumulative.len() - 1)
    }
}

/// Picks the key of each message of one producer.
pub struct KeyPicker {
    mode: KeyMode,
    keys: Vec<Vec<u8>>,
    random: SplitMix64,
    zipf: Option<ZipfSampler>,
}

impl KeyPicker {
    pub fn new(mode: KeyMode, key_count: u32, seed: u64) -> Self {
        let keys = (0..key_count)
            .map(|k| format!("key-{k}").into_bytes())
            .collect();
        let zipf = (mode == KeyMode::Zipf).then(|| ZipfSampler::new(key_count, ZIPF_EXPONENT));
        KeyPicker {
            mode,
            keys,
            random: SplitMix64::new(seed),
            zipf,
        }
    }

    /// The key of message `sequence` (`None` in mode none).
    pub fn key(&mut self, sequence: u64) -> Option<&[u8]> {
        let index = match self.mode {
            KeyMode::None => return None,
            KeyMode::RoundRobin => (sequence % self.keys.len() as u64) as usize,
            KeyMode::Random => (self.random.next_u64() % self.keys.len() as u64) as usize,
            KeyMode::Zipf => self
                .zipf
                .as_ref()
                .expect("built in zipf mode")
                .sample(&mut self.random),
        };
        Some(&self.keys[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_rank_frequencies_follow_one_over_rank() {
        let sampler = ZipfSampler::new(100, 1.0);
        let mut random = SplitMix64::new(42);
        let mut counts = [0u64; 100];
        let draws = 200_000;
        for _ in 0..draws {
            counts[sampler.sample(&mut random)] += 1;
        }
        // H(100) ≈ 5.187: rank 1 has ≈ 19.3 %, rank 2 half of it, rank 10 a tenth.
        let share = |rank: usize| counts[rank] as f64 / draws as f64;
        assert!((share(0) - 0.1928).abs() < 0.01, "{}", share(0));
        assert!((share(0) / share(1) - 2.0).abs() < 0.15);
        assert!((share(0) / share(9) - 10.0).abs() < 1.5);
    }

    #[test]
    fn round_robin_cycles_and_none_has_no_key() {
        let mut picker = KeyPicker::new(KeyMode::RoundRobin, 3, 1);
        let picked: Vec<Vec<u8>> = (0..4)
            .map(|s| picker.key(s).expect("keyed").to_vec())
            .collect();
        assert_eq!(picked[0], picked[3]);
        assert_ne!(picked[0], picked[1]);
        assert!(KeyPicker::new(KeyMode::None, 3, 1).key(0).is_none());
    }
}
