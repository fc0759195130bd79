//! What can go wrong reading or verifying a node's stream copy, naming the node and the step.

use crate::eventlog::EventLogError;

/// Why a node's stream copy could not be read or checked (a chain that reads but does not
/// verify is a failed [`crate::eventlog::VerifyReport`], not one of these).
#[derive(Debug, thiserror::Error)]
pub enum AuditStreamError {
    /// The node id cannot be a subject token or a KV key.
    #[error("node id {0:?} is not valid: use 1 to 64 letters, digits, `-` or `_`")]
    BadNodeId(String),
    /// A JetStream call failed.
    #[error("cannot {doing} for node {node}: {message}")]
    Nats {
        node: String,
        doing: &'static str,
        message: String,
    },
    /// `TG_ANCHORS` holds no anchor for the node, so the end of its chain cannot be vouched for.
    #[error(
        "no anchor for node {node} in TG_ANCHORS: the node never shipped a record (or the node \
         id is wrong)"
    )]
    NoAnchor { node: String },
    /// The anchor in `TG_ANCHORS` does not decode.
    #[error("the anchor of node {node} in TG_ANCHORS is not valid: {problem}")]
    BadAnchor { node: String, problem: String },
    /// `TG_ANCHORS` holds no sealed chain key for the node.
    #[error(
        "no chain key for node {node} in TG_ANCHORS (key {key}): the node never shipped its \
         log, or the entry was removed"
    )]
    NoChainKey { node: String, key: String },
    /// The sealed chain key does not open (another master key, or tampered with).
    #[error(transparent)]
    ChainKey(#[from] EventLogError),
    /// The stream copy stopped arriving before its last message.
    #[error(
        "reading the stream copy of node {node} stalled after stream sequence {after} (its last \
         is {last}); try again"
    )]
    ReadStalled { node: String, after: u64, last: u64 },
}

impl AuditStreamError {
    /// A failed JetStream call while `doing` something for `node`.
    pub(super) fn nats(node: &str, doing: &'static str, e: impl std::fmt::Display) -> Self {
        AuditStreamError::Nats {
            node: node.to_string(),
            doing,
            message: e.to_string(),
        }
    }
}
