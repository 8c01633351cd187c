//! Whole-body compression of a batch.
//!
//! `Codec::Lz4` is the lz4 *block* format (no frame, no size prefix): the batch header
//! already stores the uncompressed length (`body_length_uncompressed`), which decompression
//! requires to match exactly. Decompression never panics on garbage and never allocates
//! more than `BATCH_UNCOMPRESSED_BYTES_MAX`, nor more than lz4 could possibly produce from
//! the given input.

use super::header::Codec;
use super::BatchError;
use crate::constants::BATCH_UNCOMPRESSED_BYTES_MAX;

/// lz4 expands at most about 255 times: a match costs at least one byte per 255 bytes it
/// produces. Anything claiming more is refused before allocating.
const LZ4_EXPANSION_MAX: usize = 255;
/// Slack on top of that ratio for the shortest inputs (a literal-only block).
const LZ4_EXPANSION_SLACK_BYTES: usize = 64;

/// Compresses `input` with `codec`. `Codec::None` returns a copy.
#[allow(dead_code, reason = "one-shot form; the builder uses `compress_into`")]
pub fn compress(codec: Codec, input: &[u8]) -> Vec<u8> {
    match codec {
        Codec::None => input.to_vec(),
        Codec::Lz4 => lz4_flex::block::compress(input),
    }
}

/// The most bytes `compress_into` may append for `input_len` bytes of input.
pub fn compressed_bytes_max(codec: Codec, input_len: usize) -> usize {
    match codec {
        Codec::None => input_len,
        Codec::Lz4 => lz4_flex::block::get_maximum_output_size(input_len),
    }
}

/// Compresses `input` and appends the result to `out`, returning the compressed length.
pub fn compress_into(codec: Codec, input: &[u8], out: &mut bytes::BytesMut) -> usize {
    match codec {
        Codec::None => {
            out.extend_from_slice(input);
            input.len()
        }
        Codec::Lz4 => {
            let start = out.len();
            out.resize(start + compressed_bytes_max(codec, input.len()), 0);
            let written = lz4_flex::block::compress_into(input, &mut out[start..])
                .expect("lz4 output buffer is sized by get_maximum_output_size");
            out.truncate(start + written);
            written
        }
    }
}

/// Decompresses `input`, which must expand to exactly `uncompressed_len` bytes.
#[allow(
    dead_code,
    reason = "one-shot form; batches are opened with `decompress_into`"
)]
pub fn decompress(
    codec: Codec,
    input: &[u8],
    uncompressed_len: usize,
) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    decompress_into(codec, input, uncompressed_len, &mut out)?;
    Ok(out)
}

/// Like `decompress`, into a caller's buffer (cleared first) so it can be reused.
pub fn decompress_into(
    codec: Codec,
    input: &[u8],
    uncompressed_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    out.clear();
    if uncompressed_len > BATCH_UNCOMPRESSED_BYTES_MAX {
        return Err(BatchError::Decompression(format!(
            "uncompressed length {uncompressed_len} exceeds {BATCH_UNCOMPRESSED_BYTES_MAX}"
        )));
    }
    match codec {
        Codec::None => {
            if input.len() != uncompressed_len {
                return Err(length_mismatch(input.len(), uncompressed_len));
            }
            out.extend_from_slice(input);
        }
        Codec::Lz4 => {
            let possible = input
                .len()
                .saturating_mul(LZ4_EXPANSION_MAX)
                .saturating_add(LZ4_EXPANSION_SLACK_BYTES);
            if uncompressed_len > possible {
                return Err(BatchError::Decompression(format!(
                    "{} lz4 bytes cannot expand to {uncompressed_len} bytes",
                    input.len()
                )));
            }
            out.resize(uncompressed_len, 0);
            let written = lz4_flex::block::decompress_into(input, out)
                .map_err(|error| BatchError::Decompression(error.to_string()))?;
            if written != uncompressed_len {
                out.clear();
                return Err(length_mismatch(written, uncompressed_len));
            }
        }
    }
    Ok(())
}

fn length_mismatch(actual: usize, declared: usize) -> BatchError {
    BatchError::Decompression(format!(
        "body expands to {actual} bytes, header declares {declared}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lz4_round_trips(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let compressed = compress(Codec::Lz4, &input);
            prop_assert_eq!(decompress(Codec::Lz4, &compressed, input.len())?, input.clone());
            let mut appended = bytes::BytesMut::from(&b"prefix"[..]);
            let written = compress_into(Codec::Lz4, &input, &mut appended);
            prop_assert_eq!(&appended[6..], &compressed[..]);
            prop_assert_eq!(written, compressed.len());
        }

        #[test]
        fn lz4_garbage_is_an_error_or_exact(input in proptest::collection::vec(any::<u8>(), 0..256),
                                            declared in 0usize..70_000) {
            if let Ok(out) = decompress(Codec::Lz4, &input, declared) {
                prop_assert_eq!(out.len(), declared);
            }
        }
    }

    #[test]
    fn the_expansion_bound_admits_the_most_compressible_input() {
        for len in [
            0,
            1,
            15,
            16,
            1000,
            65_536,
            4 << 20,
            BATCH_UNCOMPRESSED_BYTES_MAX,
        ] {
            let zeros = vec![0u8; len];
            let compressed = compress(Codec::Lz4, &zeros);
            assert_eq!(
                decompress(Codec::Lz4, &compressed, len).unwrap(),
                zeros,
                "{len}"
            );
        }
    }

    #[test]
    fn wrong_declared_length_is_refused() {
        let compressed = compress(Codec::Lz4, b"hello hello hello hello");
        assert!(decompress(Codec::Lz4, &compressed, 22).is_err());
        assert!(decompress(Codec::Lz4, &compressed, 24).is_err());
        assert!(decompress(Codec::None, b"abc", 2).is_err());
    }

    #[test]
    fn declared_lengths_past_the_limit_are_refused_before_allocating() {
        let result = decompress(
            Codec::Lz4,
            &[0u8; 1 << 20],
            BATCH_UNCOMPRESSED_BYTES_MAX + 1,
        );
        assert!(matches!(result, Err(BatchError::Decompression(_))));
        let result = decompress(Codec::Lz4, &[0x1F, 0, 0], 1 << 20);
        assert!(matches!(result, Err(BatchError::Decompression(_))));
    }
}
