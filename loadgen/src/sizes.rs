//! How big each message's value is: one fixed size, or sizes spread uniformly over a range
//! (`--message-bytes 1024` or `--message-bytes 100-4096`).
//!
//! A message's size is a pure function of its producer and sequence number, so two runs
//! with the same flags send the same sizes, and no random state is shared between threads.

use std::fmt;
use std::str::FromStr;

use crate::payload::HEADER_BYTES;

/// The largest value the load generator sends (the broker's batches hold far more).
pub const MESSAGE_BYTES_MAX: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageSize {
    Fixed(usize),
    /// Every size in `min..=max` equally likely.
    Uniform {
        min: usize,
        max: usize,
    },
}

impl MessageSize {
    pub fn min_bytes(self) -> usize {
        match self {
            MessageSize::Fixed(bytes) => bytes,
            MessageSize::Uniform { min, .. } => min,
        }
    }

    pub fn max_bytes(self) -> usize {
        match self {
            MessageSize::Fixed(bytes) => bytes,
            MessageSize::Uniform { max, .. } => max,
        }
    }

    /// The expected size, for MB/s figures.
    pub fn mean_bytes(self) -> f64 {
        (self.min_bytes() + self.max_bytes()) as f64 / 2.0
    }

    /// The size of message `sequence` of `producer`.
    pub fn for_message(self, producer: u32, sequence: u64) -> usize {
        match self {
            MessageSize::Fixed(bytes) => bytes,
            MessageSize::Uniform { min, max } => {
                let span = (max - min + 1) as u64;
                min + (mix(u64::from(producer) << 40 ^ sequence) % span) as usize
            }
        }
    }

    pub fn check(self) -> Result<(), String> {
        if self.min_bytes() < HEADER_BYTES {
            return Err(format!(
                "--message-bytes must be at least {HEADER_BYTES} (the payload header)"
            ));
        }
        if self.max_bytes() > MESSAGE_BYTES_MAX {
            return Err(format!(
                "--message-bytes must be at most {MESSAGE_BYTES_MAX}"
            ));
        }
        Ok(())
    }
}

/// splitmix64's finaliser: a well-spread hash of a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl FromStr for MessageSize {
    type Err = String;

    fn from_str(text: &str) -> Result<MessageSize, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|e| format!("message size '{text}': {e} (expected N or MIN-MAX)"))
        };
        match text.split_once('-') {
            None => Ok(MessageSize::Fixed(number(text)?)),
            Some((min, max)) => {
                let (min, max) = (number(min)?, number(max)?);
                if min > max {
                    return Err(format!("message size '{text}': MIN is above MAX"));
                }
                Ok(if min == max {
                    MessageSize::Fixed(min)
                } else {
                    MessageSize::Uniform { min, max }
                })
            }
        }
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageSize::Fixed(bytes) => write!(f, "{bytes}"),
            MessageSize::Uniform { min, max } => write!(f, "{min}-{max}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_fixed_or_a_range() {
        assert_eq!("1024".parse(), Ok(MessageSize::Fixed(1024)));
        assert_eq!(
            "100-4096".parse(),
            Ok(MessageSize::Uniform {
                min: 100,
                max: 4096
            })
        );
        assert_eq!("64-64".parse(), Ok(MessageSize::Fixed(64)));
        for bad in ["", "x", "10-", "-10", "20-10", "1.5"] {
            assert!(bad.parse::<MessageSize>().is_err(), "{bad}");
        }
        assert_eq!(
            MessageSize::Uniform {
                min: 100,
                max: 4096
            }
            .to_string(),
            "100-4096"
        );
    }

    #[test]
    fn uniform_sizes_stay_in_range_cover_it_and_repeat() {
        let size = MessageSize::Uniform { min: 100, max: 199 };
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0usize;
        for sequence in 0..20_000 {
            let bytes = size.for_message(3, sequence);
            assert!((100..=199).contains(&bytes), "{bytes}");
            assert_eq!(bytes, size.for_message(3, sequence), "deterministic");
            seen.insert(bytes);
            total += bytes;
        }
        assert_eq!(seen.len(), 100, "every size in the range occurs");
        let mean = total as f64 / 20_000.0;
        assert!((mean - size.mean_bytes()).abs() < 2.0, "mean {mean}");
    }

    #[test]
    fn sizes_below_the_header_or_above_the_maximum_are_refused() {
        assert!(MessageSize::Fixed(HEADER_BYTES - 1).check().is_err());
        assert!(MessageSize::Uniform { min: 10, max: 100 }.check().is_err());
        assert!(MessageSize::Fixed(MESSAGE_BYTES_MAX + 1).check().is_err());
        assert!(MessageSize::Uniform { min: 24, max: 4096 }.check().is_ok());
    }
}
