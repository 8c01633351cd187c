//! The header every loadgen message carries at the start of its value, so a consumer can
//! check order and loss and measure end-to-end latency without asking the producers.
//!
//! ```text
//! offset  bytes  field
//!      0      4  magic "SLG1" (also the format version)
//!      4      4  producer id, u32 little-endian
//!      8      8  sequence within the producer, u64 little-endian (0, 1, 2, ...)
//!     16      8  intended send time, ns since the Unix epoch, u64 little-endian
//!     24      -  padding up to --message-bytes
//! ```

/// Marks a loadgen value; a value without it is counted as foreign and not checked.
pub const MAGIC: [u8; 4] = *b"SLG1";
const PRODUCER_OFFSET: usize = MAGIC.len();
const SEQUENCE_OFFSET: usize = PRODUCER_OFFSET + 4;
const INTENDED_OFFSET: usize = SEQUENCE_OFFSET + 8;
pub const HEADER_BYTES: usize = INTENDED_OFFSET + 8;

const _: () = assert!(HEADER_BYTES == 24);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub producer: u32,
    pub sequence: u64,
    pub intended_unix_ns: u64,
}

impl Header {
    /// Writes the header into the start of `value` (the padding is left as it is).
    pub fn write(&self, value: &mut [u8]) {
        assert!(
            value.len() >= HEADER_BYTES,
            "value of {} bytes",
            value.len()
        );
        value[..PRODUCER_OFFSET].copy_from_slice(&MAGIC);
        value[PRODUCER_OFFSET..SEQUENCE_OFFSET].copy_from_slice(&self.producer.to_le_bytes());
        value[SEQUENCE_OFFSET..INTENDED_OFFSET].copy_from_slice(&self.sequence.to_le_bytes());
        value[INTENDED_OFFSET..HEADER_BYTES].copy_from_slice(&self.intended_unix_ns.to_le_bytes());
    }

    /// The header of a loadgen value; `None` for anything else.
    pub fn read(value: &[u8]) -> Option<Header> {
        if value.len() < HEADER_BYTES || value[..PRODUCER_OFFSET] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| {
            value
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let u64_at = |at: usize| {
            value
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        Some(Header {
            producer: u32_at(PRODUCER_OFFSET)?,
            sequence: u64_at(SEQUENCE_OFFSET)?,
            intended_unix_ns: u64_at(INTENDED_OFFSET)?,
        })
    }
}

/// A value of `bytes` bytes with a fixed padding pattern; its header is overwritten per send.
pub fn value_template(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i * 31 + 7) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_foreign_values_are_refused() {
        let mut value = value_template(100);
        let header = Header {
            producer: 7,
            sequence: u64::MAX - 3,
            intended_unix_ns: 1_700_000_000_123_456_789,
        };
        header.write(&mut value);
        assert_eq!(Header::read(&value), Some(header));
        assert_eq!(Header::read(&value[..HEADER_BYTES - 1]), None);
        assert_eq!(Header::read(b"hello world, not a loadgen value"), None);
    }
}
