//! Checking a chain: the pure walk over raw (key, value) pairs and the report it produces.
//!
//! The walk stops at the first record that fails and names it, so an auditor learns where the
//! record stops being trustworthy, not merely that something is wrong. It works on raw pairs in
//! key order so tests can tamper with every byte in memory, and so the on-disk and in-memory paths
//! are the same code.

use serde::Serialize;

use super::record::{Anchor, Record, ZERO_HASH, key_seq};
use crate::codec::decode;

/// Outcome of a verification, in the shape `tgingest audit verify` prints.
///
/// As JSON: `{"ok":true,"verified":N}` or `{"ok":false,"verified":N,"first_bad_seq":S,"reason":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether the whole log (and any head it was checked against) holds.
    pub ok: bool,
    /// How many records passed before the first bad one (all of them when `ok`).
    pub verified: u64,
    /// The seq of the first record that failed, or is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    /// Why that record failed, in a few words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl VerifyReport {
    /// Every one of `verified` records holds.
    pub fn passed(verified: u64) -> Self {
        VerifyReport {
            ok: true,
            verified,
            first_bad_seq: None,
            reason: None,
        }
    }

    /// Records before `first_bad_seq` hold; that one does not, for `reason`.
    pub fn failed(first_bad_seq: u64, reason: impl Into<String>) -> Self {
        VerifyReport {
            ok: false,
            verified: first_bad_seq.saturating_sub(1),
            first_bad_seq: Some(first_bad_seq),
            reason: Some(reason.into()),
        }
    }

    /// Sets the `tgingest_eventlog_verify_ok` gauge from this outcome.
    pub(super) fn publish(&self) {
        metrics::gauge!(super::METRIC_VERIFY_OK).set(if self.ok { 1.0 } else { 0.0 });
    }
}

/// A head that the log is checked against, besides its own chaining.
#[derive(Debug, Clone, Copy)]
pub(super) enum HeadCheck<'a> {
    /// The head in the meta tree, written with every record: the log must end exactly there.
    Meta(&'a Anchor),
    /// A head recorded elsewhere, possibly earlier: the log must reach it and agree with it.
    Anchor(&'a Anchor),
}

/// A raw log entry, or why it could not be read.
pub(super) type RawEntry = Result<(Vec<u8>, Vec<u8>), String>;

/// Verifies raw `log` tree entries, given in key order, against `chain_key`.
///
/// With `expected_head`, the log must also reach that seq and have that hash there; records past
/// it are allowed, since an anchor is a head recorded at some earlier time.
pub fn verify_entries(
    chain_key: &[u8; 32],
    entries: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
    expected_head: Option<&Anchor>,
) -> VerifyReport {
    let checks: Vec<HeadCheck<'_>> = expected_head.map(HeadCheck::Anchor).into_iter().collect();
    walk(chain_key, entries.map(Ok), &checks)
}

/// Verifies a copy of the log read from elsewhere (the stream copy in JetStream): like
/// [`verify_entries`], but an entry can be a reason it could not be read, reported at the record
/// it stands for, and the copy must reach `anchor` with the same hash there.
pub fn verify_copy(
    chain_key: &[u8; 32],
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), String>>,
    anchor: Option<&Anchor>,
) -> VerifyReport {
    let checks: Vec<HeadCheck<'_>> = anchor.map(HeadCheck::Anchor).into_iter().collect();
    walk(chain_key, entries, &checks)
}

/// The walk behind every verification; stops at the first failure.
pub(super) fn walk(
    chain_key: &[u8; 32],
    entries: impl Iterator<Item = RawEntry>,
    checks: &[HeadCheck<'_>],
) -> VerifyReport {
    walk_from(chain_key, Anchor::EMPTY, entries, checks)
}

/// Like [`walk`], for the records after `start` (a record already verified): the first entry
/// must be `start.seq + 1` and chain to `start.hash`.
pub(super) fn walk_from(
    chain_key: &[u8; 32],
    start: Anchor,
    entries: impl Iterator<Item = RawEntry>,
    checks: &[HeadCheck<'_>],
) -> VerifyReport {
    for check in checks {
        let (HeadCheck::Meta(head) | HeadCheck::Anchor(head)) = check;
        if head.seq == 0 && head.hash != ZERO_HASH {
            return VerifyReport::failed(1, "head at seq 0 has a non-zero hash");
        }
    }
    let mut prev = start;
    for entry in entries {
        match check_entry(chain_key, entry, &prev, checks) {
            Ok(head) => prev = head,
            Err(reason) => return VerifyReport::failed(prev.seq + 1, reason),
        }
    }
    let verified = prev.seq;
    for check in checks {
        let (HeadCheck::Meta(head) | HeadCheck::Anchor(head)) = check;
        if head.seq > verified {
            return VerifyReport::failed(
                verified + 1,
                format!("log truncated: head says {}", head.seq),
            );
        }
    }
    VerifyReport::passed(verified)
}

/// Checks the entry that should hold record `prev.seq + 1`; returns it as the new head.
fn check_entry(
    chain_key: &[u8; 32],
    entry: RawEntry,
    prev: &Anchor,
    checks: &[HeadCheck<'_>],
) -> Result<Anchor, String> {
    let expected = prev.seq + 1;
    let (key, value) = entry.map_err(|e| format!("cannot read the log: {e}"))?;
    match key_seq(&key) {
        None => return Err(format!("key of {} bytes is not a seq", key.len())),
        Some(k) if k > expected => return Err(format!("missing record {expected}")),
        Some(k) if k < expected => return Err(format!("key {k} out of order")),
        Some(_) => {}
    }
    for check in checks {
        if let HeadCheck::Meta(head) = check
            && expected > head.seq
        {
            return Err(format!(
                "record {expected} is past the head in meta (seq {})",
                head.seq
            ));
        }
    }
    let record: Record = decode(&value).map_err(|e| format!("record does not decode: {e}"))?;
    if record.seq != expected {
        return Err(format!("seq {} stored under key {expected}", record.seq));
    }
    if record.prev_hash != prev.hash {
        return Err(if expected == 1 {
            "prev_hash of the first record is not zero".to_string()
        } else {
            format!("prev_hash does not match record {}", prev.seq)
        });
    }
    let recomputed = record
        .expected_hash(chain_key)
        .map_err(|e| format!("record does not re-encode: {e}"))?;
    if recomputed != record.hash {
        return Err("hash mismatch".to_string());
    }
    for check in checks {
        let (head, what) = match check {
            HeadCheck::Meta(head) => (head, "the head in meta"),
            HeadCheck::Anchor(head) => (head, "the anchor"),
        };
        if head.seq == expected && head.hash != record.hash {
            return Err(format!("hash differs from {what}"));
        }
    }
    Ok(record.anchor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::eventlog::record::{RecordKind, seq_key};

    const KEY: [u8; 32] = [9; 32];

    fn chain(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = Anchor::EMPTY;
        (0..n)
            .map(|i| {
                let body = format!("body {i}").into_bytes();
                let record =
                    Record::next(&KEY, &head, 1000 + i as i64, RecordKind::Audit, body).unwrap();
                head = record.anchor();
                (seq_key(record.seq).to_vec(), encode(&record).unwrap())
            })
            .collect()
    }

    #[test]
    fn report_json_has_exactly_the_documented_shape() {
        let ok = serde_json::to_string(&VerifyReport::passed(12)).unwrap();
        assert_eq!(ok, r#"{"ok":true,"verified":12}"#);
        let bad = serde_json::to_string(&VerifyReport::failed(5, "hash mismatch")).unwrap();
        assert_eq!(
            bad,
            r#"{"ok":false,"verified":4,"first_bad_seq":5,"reason":"hash mismatch"}"#
        );
    }

    #[test]
    fn meta_head_must_be_the_exact_end_of_the_log() {
        let entries = chain(4);
        let head = |n: usize| {
            let record: Record = decode(&entries[n - 1].1).unwrap();
            record.anchor()
        };
        let run = |check: HeadCheck<'_>| walk(&KEY, entries.clone().into_iter().map(Ok), &[check]);
        assert_eq!(run(HeadCheck::Meta(&head(4))), VerifyReport::passed(4));
        assert_eq!(
            run(HeadCheck::Meta(&head(2))),
            VerifyReport::failed(3, "record 3 is past the head in meta (seq 2)")
        );
        assert_eq!(run(HeadCheck::Anchor(&head(2))), VerifyReport::passed(4));
        let forged = Anchor {
            seq: 3,
            hash: [1; 32],
        };
        assert_eq!(
            run(HeadCheck::Anchor(&forged)),
            VerifyReport::failed(3, "hash differs from the anchor")
        );
        let ahead = Anchor {
            seq: 6,
            hash: [1; 32],
        };
        assert_eq!(
            run(HeadCheck::Meta(&ahead)),
            VerifyReport::failed(5, "log truncated: head says 6")
        );
    }

    #[test]
    fn a_read_error_is_reported_at_the_record_it_hid() {
        let mut entries: Vec<RawEntry> = chain(3).into_iter().map(Ok).collect();
        entries[1] = Err("io error".into());
        assert_eq!(
            walk(&KEY, entries.into_iter(), &[]),
            VerifyReport::failed(2, "cannot read the log: io error")
        );
    }
}
