//! The one place that knows the binary format.
//!
//! Every blob starts with [`FORMAT_VERSION`], followed by the value in
//! bincode 2 (standard configuration: little-endian, varint integers). Decoding
//! checks the version byte, bounds every allocation by [`MAX_BLOB`], and
//! refuses trailing bytes, so random, truncated or foreign input is an
//! [`Error::Decode`], never a panic or a huge allocation.
//!
//! bincode is not self-describing: types encoded here must not use
//! `#[serde(flatten)]`, `untagged`, internally tagged enums or
//! `skip_serializing_if`, and enum variants are only ever added at the end.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Version of the binary format; the first byte of every blob.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on what one blob may claim to hold (bytes). Protects the
/// decoder from length prefixes in random input.
pub const MAX_BLOB: usize = 512 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BLOB>()
}

/// Decodes `body` with a claim limit that follows the input's size.
/// bincode claims the in-memory size of every value it reads (a string its
/// length, an integer its width: at most 16 bytes for one byte of input),
/// so a valid blob claims at most 16 times its length; the limit is the
/// smallest size class at or above that. bincode allocates a string's
/// claimed length before reading it: the limit stops a 10-byte blob
/// claiming 512 MiB before that allocation.
fn decode_limited<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), Error> {
    fn with<T: DeserializeOwned, const N: usize>(body: &[u8]) -> Result<(T, usize), Error> {
        bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<N>())
            .map_err(|e| match e {
                bincode::error::DecodeError::LimitExceeded => Error::Decode(format!(
                    "a length prefix claims more than the limit of {N} bytes for a blob of {} bytes",
                    body.len()
                )),
                e => Error::Decode(e.to_string()),
            })
    }
    const CLAIM_PER_BYTE: usize = 16;
    match body.len().saturating_mul(CLAIM_PER_BYTE) {
        n if n <= 4 << 10 => with::<T, { 4 << 10 }>(body),
        n if n <= 64 << 10 => with::<T, { 64 << 10 }>(body),
        n if n <= 1 << 20 => with::<T, { 1 << 20 }>(body),
        n if n <= 16 << 20 => with::<T, { 16 << 20 }>(body),
        _ => with::<T, MAX_BLOB>(body),
    }
}

/// Encodes `value` as `[FORMAT_VERSION, bincode...]`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// The length of [`encode`]'s output for `value`, without the format byte
/// and without keeping the bytes (they are counted, then dropped). 0 for a
/// value that cannot be encoded (none of this crate's types).
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    bincode::serde::encode_into_std_write(value, &mut std::io::sink(), config()).unwrap_or(0)
}

/// Decodes a blob made by [`encode`]. Wrong version, truncated input, bad
/// contents and trailing bytes are all errors; a length prefix claiming
/// more than the blob holds is refused before anything that size is
/// allocated.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| Error::Decode("empty input".into()))?;
    if version != FORMAT_VERSION {
        return Err(Error::Decode(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let (value, used) = decode_limited(body)?;
    if used != body.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the value",
            body.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrong_version_is_an_error() {
        let mut blob = encode(&42u64).expect("encode");
        blob[0] = FORMAT_VERSION + 1;
        assert!(
            matches!(decode::<u64>(&blob), Err(Error::Decode(m)) if m.contains("format version"))
        );
        assert!(decode::<u64>(&[]).is_err());
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding_less_the_version_byte() {
        let v = (7u64, "x".repeat(300), vec![u64::MAX; 3], Some(1u8));
        assert_eq!(encoded_len(&v) + 1, encode(&v).expect("encode").len());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut blob = encode(&7u32).expect("encode");
        blob.push(0);
        assert!(matches!(decode::<u32>(&blob), Err(Error::Decode(m)) if m.contains("trailing")));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // version, then a varint length of u64::MAX for a Vec<u8>.
        let blob = [
            FORMAT_VERSION,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(decode::<Vec<u8>>(&blob).is_err());
    }

    #[test]
    fn strings_and_byte_strings_of_every_size_round_trip() {
        for n in [0, 4000, 5000, 70_000, 2 << 20, 20 << 20] {
            let v = (vec![7u8; n], "x".repeat(n / 2), vec!["y".repeat(n / 4); 2]);
            let blob = encode(&v).expect("encode");
            assert_eq!(
                decode::<(Vec<u8>, String, Vec<String>)>(&blob).expect("decode"),
                v
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Vec<String>>(&bytes);
            let _ = decode::<(u64, Option<String>, Vec<u32>)>(&bytes);
        }
    }
}
