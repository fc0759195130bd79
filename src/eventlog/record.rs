//! One chained record, how its hash is computed, and how seqs are laid out as sled keys.
//!
//! The hash input is a separate encoding of every field except `hash`, so changing any stored
//! byte other than the hash breaks the recomputation, and changing the hash breaks the comparison.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};

/// The hash that precedes the first record.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// What a record's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// An encoded [`AuditEntry`](super::AuditEntry): something the service did.
    Audit,
    /// An encoded [`Checkpoint`](super::Checkpoint): how far an upstream source was consumed.
    Checkpoint,
}

impl RecordKind {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Audit => "audit",
            RecordKind::Checkpoint => "checkpoint",
        }
    }
}

/// One entry of the log as stored: its place, its content, and its link to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// What the body holds.
    pub kind: RecordKind,
    /// The encoded audit entry or checkpoint.
    pub body: Vec<u8>,
    /// The hash of record `seq - 1` ([`ZERO_HASH`] for the first record).
    pub prev_hash: [u8; 32],
    /// Keyed blake3 over every other field; see [`chain_hash`].
    pub hash: [u8; 32],
}

/// A chain head: the last seq and its hash, recorded elsewhere (meta tree, JetStream) so that
/// truncation or a rewrite of the log can be caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The seq of the head record (0 for an empty log).
    pub seq: u64,
    /// The hash of that record ([`ZERO_HASH`] for an empty log).
    pub hash: [u8; 32],
}

impl Anchor {
    /// The head of an empty log.
    pub const EMPTY: Anchor = Anchor {
        seq: 0,
        hash: ZERO_HASH,
    };
}

/// The fields a record's hash covers, in a fixed order.
#[derive(Serialize)]
struct Chained<'a> {
    seq: u64,
    ts_ms: i64,
    kind: RecordKind,
    body: &'a [u8],
    prev_hash: &'a [u8; 32],
}

/// `blake3::keyed_hash(chain_key, encode(seq, ts_ms, kind, body, prev_hash))`.
pub fn chain_hash(
    chain_key: &[u8; 32],
    seq: u64,
    ts_ms: i64,
    kind: RecordKind,
    body: &[u8],
    prev_hash: &[u8; 32],
) -> Result<[u8; 32], CodecError> {
    let input = codec::encode(&Chained {
        seq,
        ts_ms,
        kind,
        body,
        prev_hash,
    })?;
    Ok(blake3::keyed_hash(chain_key, &input).into())
}

impl Record {
    /// Builds the record that follows `prev` and computes its hash.
    pub fn next(
        chain_key: &[u8; 32],
        prev: &Anchor,
        ts_ms: i64,
        kind: RecordKind,
        body: Vec<u8>,
    ) -> Result<Record, CodecError> {
        let seq = prev.seq + 1;
        let hash = chain_hash(chain_key, seq, ts_ms, kind, &body, &prev.hash)?;
        Ok(Record {
            seq,
            ts_ms,
            kind,
            body,
            prev_hash: prev.hash,
            hash,
        })
    }

    /// Recomputes the hash from the other fields.
    pub fn expected_hash(&self, chain_key: &[u8; 32]) -> Result<[u8; 32], CodecError> {
        chain_hash(
            chain_key,
            self.seq,
            self.ts_ms,
            self.kind,
            &self.body,
            &self.prev_hash,
        )
    }

    /// This record as a chain head.
    pub fn anchor(&self) -> Anchor {
        Anchor {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// The sled key of a seq: big-endian, so key order is seq order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The seq a sled key stands for, if it is one.
pub fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [3; 32];

    fn first() -> Record {
        Record::next(
            &KEY,
            &Anchor::EMPTY,
            1_700_000_000_000,
            RecordKind::Audit,
            b"x".to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn hash_covers_every_field_but_itself() {
        let rec = first();
        assert_eq!(rec.expected_hash(&KEY).unwrap(), rec.hash);
        let variants = [
            Record {
                seq: 2,
                ..rec.clone()
            },
            Record {
                ts_ms: rec.ts_ms + 1,
                ..rec.clone()
            },
            Record {
                kind: RecordKind::Checkpoint,
                ..rec.clone()
            },
            Record {
                body: b"y".to_vec(),
                ..rec.clone()
            },
            Record {
                prev_hash: [1; 32],
                ..rec.clone()
            },
        ];
        for changed in variants {
            assert_ne!(
                changed.expected_hash(&KEY).unwrap(),
                rec.hash,
                "{changed:?}"
            );
        }
        assert_ne!(rec.expected_hash(&[4; 32]).unwrap(), rec.hash);
    }

    #[test]
    fn seq_keys_sort_like_seqs_and_round_trip() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(key_seq(&seq_key(u64::MAX - 1)), Some(u64::MAX - 1));
        assert_eq!(key_seq(b"short"), None);
    }
}
