//! The stream copy of every node's event log: each node appends its chained records, in order,
//! to its own subject of `TG_AUDIT`, so an auditor can verify a node's chain from JetStream
//! alone, after the node and its data dir are gone (`tgingest audit verify --node ID`).
//!
//! Why a copy and not only anchors: an anchor proves the head of a log that still exists; when
//! the node's disk is lost, so is everything the anchor vouched for. The copy is itself a chain
//! with no gaps: every publish expects the subject's previous sequence
//! (`Nats-Expected-Last-Subject-Sequence`), so JetStream refuses a second writer or a skipped
//! record. The bytes are the local log's own encoded records, so verifying the copy is the same
//! walk as verifying the log on disk, with the same chain key, which is kept sealed under the
//! master key in `TG_ANCHORS` (`chain-key.<node id>`) for that purpose.
//!
//! Parts: [`ship`] (the node's background task that copies and anchors), [`verify`] (reading a
//! node's copy back and checking it), [`keys`] (the sealed chain keys in `TG_ANCHORS`) and
//! [`anchor`] (the chain heads in `TG_ANCHORS`).

mod anchor;
mod error;
mod keys;
mod ship;
mod verify;

pub use anchor::{AnchorRecord, latest_anchor, write_anchor};
pub use error::AuditStreamError;
pub use keys::{
    CHAIN_KEY_PREFIX, ResealReport, chain_key_entry, read_chain_key, reseal_chain_keys,
};
pub use ship::{AuditShipping, Conflict, ShipPhase, ShipState, ShipperParts};
pub use verify::{NodeVerifyReport, verify_node};

/// Counter of records copied to `TG_AUDIT`.
pub const METRIC_SHIPPED_TOTAL: &str = "tgingest_audit_stream_shipped_total";
/// Gauge of records in the local log that are not in `TG_AUDIT` yet.
pub const METRIC_LAG_RECORDS: &str = "tgingest_audit_stream_lag_records";
/// Counter of disagreements between the stream copy and the local log (shipping stops on one).
pub const METRIC_CONFLICTS_TOTAL: &str = "tgingest_audit_stream_conflicts_total";
/// Counter of attempts that failed on NATS (or a local read) and were tried again.
pub const METRIC_RETRIES_TOTAL: &str = "tgingest_audit_stream_retries_total";

/// A node id that can name a subject token and a KV key: 1 to 64 letters, digits, `-` or `_`
/// (what `node.id` allows; the host-name fallback is cut to the same).
pub(crate) fn check_node_id(node_id: &str) -> Result<(), AuditStreamError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 64
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AuditStreamError::BadNodeId(node_id.to_string()))
    }
}
