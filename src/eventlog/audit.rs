//! The body of an audit record: who did what to which account.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Something the service or an operator did, for auditors. Never message content, phone numbers or
/// raw ids of people: `details` holds only what log lines may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// What happened, e.g. `account.state` or `event.dropped`.
    pub action: String,
    /// Who did it: a node, an actor, or an operator.
    pub actor: String,
    /// The account it concerns, if any.
    pub account_id: Option<String>,
    /// Further facts, sorted by key so the encoding is deterministic.
    pub details: BTreeMap<String, String>,
}
