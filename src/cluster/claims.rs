//! Account claims: `acct.<account>` in `TG_LEASES` names the node lease an account hangs on and
//! the account's epoch, which grows by one at every change of owner.
//!
//! A claim is not renewed: it stands while the node lease it names does, so renewal costs stay
//! per node, and claims are written only when accounts move. A claim is taken by compare-and-set
//! on the revision that was read, so two takers can never both win; a taker takes a held claim
//! only once [`Membership::holder_status`] says its holder is gone, and then connects only after
//! `cluster.lock_delay` (Chubby's lock-delay: the old owner may have died mid-frame).

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

use super::lease::{Fence, Holder};
use super::membership::{HolderStatus, Membership};
use super::record::{RecordError, Records, Versioned};

/// KV key of an account's claim.
pub fn claim_key(account: &str) -> String {
    format!("acct.{account}")
}

/// Held by its owner, or let go (with the node meant to take it next, on a hand-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Held,
    Released,
}

/// The stored claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub account: String,
    /// The node lease this claim hangs on.
    pub holder: Holder,
    /// Revision of the node record that lease's acquisition wrote.
    pub holder_acquired_at: u64,
    /// Grows by one at every change of owner; every write of the account's state carries it.
    pub epoch: u64,
    pub state: ClaimState,
    /// On a release: the node that should take it next (others leave it alone for a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Wall-clock time of the write, for people only.
    pub written_at: String,
}

/// A claim this node holds.
#[derive(Debug, Clone)]
pub struct Claim {
    pub account: String,
    pub epoch: u64,
    pub revision: u64,
    /// Taken from a holder that vanished: when this node last saw that holder renew (the
    /// failover time of the account runs from there).
    pub orphaned_since: Option<Instant>,
    /// Do not connect before this instant (lock-delay after an owner that vanished).
    pub connect_after: Instant,
}

/// What taking a claim came to.
#[derive(Debug, Clone)]
pub enum Taken {
    /// It is ours (now, or already).
    Mine(Claim),
    /// Another live node holds it.
    Busy(Holder),
    /// Released for another node that is live; it gets the first go.
    Reserved(String),
}

/// Takes the claim on `account` for the lease behind `fence`, if it is free: never written, let
/// go, or held by a node that is gone. A lost race is [`Taken::Busy`] (or `Mine`, when the
/// winner was this very lease).
pub async fn take(
    records: &Records,
    membership: &Membership,
    fence: &Fence,
    account: &str,
    lock_delay: Duration,
) -> Result<Taken, RecordError> {
    let key = claim_key(account);
    let current: Versioned<ClaimRecord> = records.read(&key).await?;
    let me = fence.holder();
    let mut orphaned_since = None;
    let (epoch, delay) = match &current.value {
        None => (0, Duration::ZERO),
        Some(c) if c.holder == *me && c.state == ClaimState::Held => {
            return Ok(Taken::Mine(Claim {
                account: account.to_string(),
                epoch: c.epoch,
                revision: current.revision,
                connect_after: Instant::now(),
                orphaned_since: None,
            }));
        }
        Some(c) if c.state == ClaimState::Released => {
            if let Some(target) = &c.target
                && target != &me.node
                && membership
                    .view()
                    .live_member(target)
                    .is_some_and(|m| m.accepting)
            {
                return Ok(Taken::Reserved(target.clone()));
            }
            // Released by an owner that closed its client first: no lock-delay needed.
            (c.epoch, Duration::ZERO)
        }
        Some(c) => match membership.holder_status(&c.holder, c.holder_acquired_at) {
            HolderStatus::Alive => return Ok(Taken::Busy(c.holder.clone())),
            HolderStatus::Gone => {
                orphaned_since = membership.observed(&c.holder.node).map(|o| o.changed_at);
                (c.epoch, lock_delay)
            }
        },
    };
    if !fence.is_up() {
        return Ok(Taken::Busy(me.clone()));
    }
    let record = ClaimRecord {
        account: account.to_string(),
        holder: me.clone(),
        holder_acquired_at: fence.acquired_at(),
        epoch: epoch + 1,
        state: ClaimState::Held,
        target: None,
        written_at: jiff::Timestamp::now().to_string(),
    };
    match records
        .write_persistent(&key, &record, current.revision)
        .await
    {
        Ok(revision) => {
            metrics::counter!("tgingest_cluster_claims_taken_total").increment(1);
            Ok(Taken::Mine(Claim {
                account: account.to_string(),
                epoch: record.epoch,
                revision,
                connect_after: Instant::now() + delay,
                orphaned_since,
            }))
        }
        Err(RecordError::Conflict { .. }) => {
            // Lost the race (or our own earlier write went through): look again.
            let now: Versioned<ClaimRecord> = records.read(&key).await?;
            match now.value {
                Some(c) if c.holder == *me && c.epoch == record.epoch => Ok(Taken::Mine(Claim {
                    account: account.to_string(),
                    epoch: c.epoch,
                    revision: now.revision,
                    connect_after: Instant::now() + delay,
                    orphaned_since,
                })),
                Some(c) => Ok(Taken::Busy(c.holder)),
                None => Ok(Taken::Busy(me.clone())),
            }
        }
        Err(e) => Err(e),
    }
}

/// Lets a claim go: call only after the account's client is closed and its state written.
/// `target` names the node meant to take it next (a hand-off), if any.
pub async fn release(
    records: &Records,
    fence: &Fence,
    claim: &Claim,
    target: Option<&str>,
) -> Result<u64, RecordError> {
    let record = ClaimRecord {
        account: claim.account.clone(),
        holder: fence.holder().clone(),
        holder_acquired_at: fence.acquired_at(),
        epoch: claim.epoch,
        state: ClaimState::Released,
        target: target.map(str::to_string),
        written_at: jiff::Timestamp::now().to_string(),
    };
    let revision = records
        .write_persistent(&claim_key(&claim.account), &record, claim.revision)
        .await?;
    metrics::counter!("tgingest_cluster_claims_released_total").increment(1);
    Ok(revision)
}
