//! What `GET /v1/cluster` and `tgingest cluster status` show: the nodes, which accounts each
//! owns, and the accounts nobody owns, with why.
//!
//! Read from the records as the server has them at one instant: a node counts as live while its
//! record says so and has not expired, and an account as owned while its claim is held under
//! that node's current lease. That is what an operator needs to see; the decisions themselves
//! are taken on each node's own clock (see [`super::membership`]), so for up to a lease after a
//! crash this view can still show the dead node as live.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use serde::Serialize;

use super::claims::{ClaimRecord, ClaimState};
use super::controller::Snapshot;
use super::lease::{NodeRecord, NodeState};
use super::record::Records;
use crate::accounts::Lifecycle;
use crate::accounts::registry::{AccountRecord, Desired};

/// One node as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Accounts whose claim is held under this node's current lease.
    pub accounts: Vec<String>,
}

/// An account and the node holding it.
#[derive(Debug, Clone, Serialize)]
pub struct Owned {
    pub account: String,
    pub node: String,
    /// Grows by one at every change of owner.
    pub epoch: u64,
}

/// Why an account runs nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Unowned {
    /// Its owner has not recorded consent.
    NoConsent,
    /// Telegram revoked its session (`error`: the RPC error, e.g. `SESSION_REVOKED`); it needs a
    /// new login or import.
    Revoked { error: String, since_us: i64 },
    /// Its auth key was used from two places at once (AUTH_KEY_DUPLICATED); it needs a new
    /// login or import.
    Duplicated { since_us: i64 },
    /// An operator paused it.
    Paused,
    /// No sealed session (imported or logged in) to run it with.
    NoSession,
    /// It may run, but every live node announced a capacity and together they run as many
    /// accounts as that allows (`capacity`, summed); it waits for a node with room.
    NoCapacity { capacity: u64 },
    /// It may run, and no live node holds it yet: claimed by a node that is gone (a taker waits
    /// a whole lease), released for `target`, or not claimed yet.
    WaitingForLease {
        #[serde(skip_serializing_if = "Option::is_none")]
        last_owner: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
}

/// An account nobody owns.
#[derive(Debug, Clone, Serialize)]
pub struct UnownedAccount {
    pub account: String,
    #[serde(flatten)]
    pub why: Unowned,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Whether this node takes part (`cluster.enabled`).
    pub enabled: bool,
    /// The node that answered.
    pub node: String,
    /// What its controller runs now (absent when the cluster is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub here: Option<Snapshot>,
    pub nodes: Vec<NodeStatus>,
    pub owned: Vec<Owned>,
    pub unowned: Vec<UnownedAccount>,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the cluster's records in {bucket}: {message}")]
pub struct StatusError {
    pub bucket: String,
    pub message: String,
}

/// Reads the node and claim records of `records`, and places every account of `registry`
/// (`with_session`: the accounts that have a sealed session).
pub async fn read(
    records: &Records,
    registry: &[AccountRecord],
    with_session: &BTreeSet<String>,
) -> Result<(Vec<NodeStatus>, Vec<Owned>, Vec<UnownedAccount>), StatusError> {
    let failed = |e: &dyn std::fmt::Display| StatusError {
        bucket: crate::bus::BUCKET_LEASES.to_string(),
        message: e.to_string(),
    };
    let keys: Vec<String> = records
        .store()
        .keys()
        .await
        .map_err(|e| failed(&e))?
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    let mut nodes: BTreeMap<String, NodeRecord> = BTreeMap::new();
    let mut claims: BTreeMap<String, ClaimRecord> = BTreeMap::new();
    for key in keys {
        if let Some(node) = key.strip_prefix("node.") {
            if let Some(r) = records
                .read::<NodeRecord>(&key)
                .await
                .map_err(|e| failed(&e))?
                .value
            {
                nodes.insert(node.to_string(), r);
            }
        } else if let Some(account) = key.strip_prefix("acct.")
            && let Some(c) = records
                .read::<ClaimRecord>(&key)
                .await
                .map_err(|e| failed(&e))?
                .value
        {
            claims.insert(account.to_string(), c);
        }
    }
    let holds = |c: &ClaimRecord| {
        c.state == ClaimState::Held
            && nodes
                .get(&c.holder.node)
                .is_some_and(|n| n.state == NodeState::Live && n.holder == c.holder)
    };
    let mut owned = Vec::new();
    let mut unowned = Vec::new();
    let live: Vec<&NodeRecord> = nodes
        .values()
        .filter(|n| n.state == NodeState::Live && !n.draining)
        .collect();
    // Room is limited only when every live node announced a capacity.
    let capacity = (!live.is_empty() && live.iter().all(|n| n.capacity > 0))
        .then(|| live.iter().map(|n| u64::from(n.capacity)).sum::<u64>());
    let held = registry
        .iter()
        .filter(|r| claims.get(&r.account_id).is_some_and(&holds))
        .count() as u64;
    for record in registry {
        let account = &record.account_id;
        let claim = claims.get(account);
        if let Some(c) = claim.filter(|c| holds(c)) {
            owned.push(Owned {
                account: account.clone(),
                node: c.holder.node.clone(),
                epoch: c.epoch,
            });
            continue;
        }
        let why = if record.consent.is_none() {
            Unowned::NoConsent
        } else if let Some(ended) = &record.ended {
            match &ended.state {
                Lifecycle::Duplicated => Unowned::Duplicated {
                    since_us: ended.at_us,
                },
                Lifecycle::Revoked { reason } => Unowned::Revoked {
                    error: reason.clone(),
                    since_us: ended.at_us,
                },
                other => Unowned::Revoked {
                    error: other.name().to_string(),
                    since_us: ended.at_us,
                },
            }
        } else if record.desired == Desired::Paused {
            Unowned::Paused
        } else if !with_session.contains(account) {
            Unowned::NoSession
        } else if let Some(capacity) = capacity.filter(|c| held >= *c) {
            Unowned::NoCapacity { capacity }
        } else {
            Unowned::WaitingForLease {
                last_owner: claim.map(|c| c.holder.node.clone()),
                target: claim.and_then(|c| c.target.clone()),
            }
        };
        unowned.push(UnownedAccount {
            account: account.clone(),
            why,
        });
    }
    let nodes = nodes
        .into_iter()
        .map(|(node, record)| NodeStatus {
            accounts: owned
                .iter()
                .filter(|o| o.node == node)
                .map(|o| o.account.clone())
                .collect(),
            record,
        })
        .collect();
    Ok((nodes, owned, unowned))
}
