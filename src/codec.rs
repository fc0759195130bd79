//! The one binary encoding of everything tgingest stores or puts on the bus.
//!
//! Every payload starts with a format byte, so the encoding can change in this module alone:
//! readers dispatch on the byte, and unknown formats are refused with a clear error instead of
//! being misread. Format 1 is bincode 2 (serde, standard varint config) with a size limit.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format byte of bincode 2 with `config::standard()`.
pub const FORMAT_BINCODE2: u8 = 1;

/// Largest payload the decoder accepts, so a corrupt length prefix cannot allocate gigabytes.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be turned into a value (or back).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty input: expected a format byte")]
    Empty,
    #[error("unknown format byte {0:#04x}: this build reads format {FORMAT_BINCODE2:#04x}")]
    UnknownFormat(u8),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
    #[error("cannot encode value: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Encodes `value` in the current format, format byte first.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_BINCODE2];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes bytes written by [`encode`]; refuses unknown formats and trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&format, payload) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_BINCODE2 {
        return Err(CodecError::UnknownFormat(format));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::TrailingBytes(payload.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        id: String,
        n: u64,
        tags: Vec<Option<i32>>,
    }

    fn sample() -> Sample {
        Sample {
            id: "-1001234".into(),
            n: 42,
            tags: vec![Some(-7), None],
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes[0], FORMAT_BINCODE2);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample());
    }

    #[test]
    fn refuses_unknown_format_empty_input_and_trailing_bytes() {
        let mut bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
        bytes.push(0);
        assert_eq!(decode::<Sample>(&bytes), Err(CodecError::TrailingBytes(1)));
        bytes[0] = 9;
        assert_eq!(decode::<Sample>(&bytes), Err(CodecError::UnknownFormat(9)));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode::<Sample>(&bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }
}
