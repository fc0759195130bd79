//! The node lease: one record per node in `TG_LEASES` (`node.<id>`), rewritten by compare-and-set
//! every `cluster.renew_every`, that every account claim of the node hangs on.
//!
//! Renewal costs a few writes per node whatever its number of accounts. The holder keeps a
//! [`Fence`]: valid until `self_fence_after` past the *send* instant of its last successful
//! renewal, on its own monotonic clock. Once that instant passes the fence is down for good: a
//! renewal that succeeds afterwards (a process resumed after SIGSTOP) does not raise it again,
//! because other nodes may already have taken its accounts; only a new acquisition, with a new
//! generation that old claims do not name, makes the node an owner again (client-go's
//! RenewDeadline, Temporal's range id).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::lock;
use super::record::{RecordError, Records, Versioned};
use crate::config::ClusterConfig;

/// KV key of a node's lease record.
pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

/// Who holds a node lease: the node id, the process (boot) and how many times that process
/// acquired it. Account claims name all three, so a claim from before a re-acquisition (or a
/// restart under the same node id) is recognisably stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holder {
    pub node: String,
    pub boot: String,
    pub generation: u64,
}

/// Whether a node is running or has left cleanly (its accounts all released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Live,
    Left,
}

/// The record of a node lease, as `tgingest cluster status` and other nodes read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(flatten)]
    pub holder: Holder,
    pub state: NodeState,
    /// Takes no new accounts and hands its own off (stopping or being upgraded).
    pub draining: bool,
    /// Accounts this node is willing to run at most (0 = no limit of its own).
    pub capacity: u32,
    /// Wall-clock time of this write, for people only: no decision reads it.
    pub written_at: String,
}

/// Why the node lease could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("node lease acquisition was cancelled")]
    Cancelled,
}

/// The holder's view of its lease: valid until a deadline on the monotonic clock, and once
/// down, down for good.
#[derive(Clone)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

struct FenceInner {
    holder: Holder,
    acquired_at: u64,
    deadline: Mutex<Option<Instant>>,
    down: watch::Sender<bool>,
}

impl Fence {
    pub(crate) fn new(holder: Holder, acquired_at: u64, deadline: Instant) -> Fence {
        Fence {
            inner: Arc::new(FenceInner {
                holder,
                acquired_at,
                deadline: Mutex::new(Some(deadline)),
                down: watch::channel(false).0,
            }),
        }
    }

    /// The lease this fence guards.
    pub fn holder(&self) -> &Holder {
        &self.inner.holder
    }

    /// Revision of the node record this acquisition wrote (claims keep it).
    pub fn acquired_at(&self) -> u64 {
        self.inner.acquired_at
    }

    /// Whether this node may still talk to Telegram for its accounts; check it right before
    /// every frame sent. Lowers the fence when its deadline has passed.
    pub fn is_up(&self) -> bool {
        let now = Instant::now();
        let deadline = lock(&self.inner.deadline);
        match *deadline {
            Some(d) if now < d => true,
            Some(_) => {
                self.take_down(deadline);
                false
            }
            None => false,
        }
    }

    /// When the fence comes down unless renewed (`None`: it is down).
    pub fn deadline(&self) -> Option<Instant> {
        *lock(&self.inner.deadline)
    }

    /// Resolves once the fence is down.
    pub async fn lowered(&self) {
        let mut rx = self.inner.down.subscribe();
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            let deadline = self.deadline();
            match deadline {
                None => return,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => { self.is_up(); }
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }

    /// Lowers the fence now (the lease was lost or given up).
    pub fn lower(&self) {
        self.take_down(lock(&self.inner.deadline));
    }

    /// Moves the deadline to `sent + valid_for` if the renewal sent at `sent` went out while the
    /// fence was still up; returns whether it is up now.
    fn extend(&self, sent: Instant, valid_for: Duration) -> bool {
        let mut deadline = lock(&self.inner.deadline);
        match *deadline {
            Some(d) if sent < d => {
                *deadline = Some((sent + valid_for).max(d));
                true
            }
            _ => {
                self.take_down(deadline);
                false
            }
        }
    }

    /// Clears the deadline (under the lock the caller decided with) and tells the waiters.
    fn take_down(&self, mut deadline: std::sync::MutexGuard<'_, Option<Instant>>) {
        *deadline = None;
        drop(deadline);
        self.inner.down.send_replace(true);
    }
}

/// A held node lease and its renewal task; dropping it stops renewing (the fence then comes
/// down by itself at its deadline).
pub struct NodeLease {
    records: Records,
    /// Shared with the renewal task, which writes the latest version at every renewal.
    record: Arc<Mutex<NodeRecord>>,
    revision: Arc<Mutex<u64>>,
    fence: Fence,
    renewer: tokio::task::JoinHandle<()>,
}

impl NodeLease {
    /// Takes the node lease of `node` for this process (`boot`).
    ///
    /// A record of another process that is live is taken only after it stayed unchanged for a
    /// whole `cluster.lease` on this node's clock (that process has fenced itself by then); a
    /// record left cleanly, or none, is taken at once. `generation` must grow with each
    /// acquisition by the same process.
    pub async fn acquire(
        records: Records,
        config: &ClusterConfig,
        node: &str,
        boot: &str,
        generation: u64,
        capacity: u32,
        cancel: &watch::Receiver<bool>,
    ) -> Result<NodeLease, LeaseError> {
        let key = node_key(node);
        let lease: Duration = config.lease.into();
        let poll: Duration = config.renew_every.into();
        let mut seen: Option<(u64, Instant)> = None;
        let record = NodeRecord {
            holder: Holder {
                node: node.to_string(),
                boot: boot.to_string(),
                generation,
            },
            state: NodeState::Live,
            draining: false,
            capacity,
            written_at: String::new(),
        };
        loop {
            if *cancel.borrow() {
                return Err(LeaseError::Cancelled);
            }
            let current: Versioned<NodeRecord> = match records.read(&key).await {
                Ok(c) => c,
                Err(e @ RecordError::Read { .. }) => {
                    // A leader election or a reconnect: the answer comes back soon.
                    tracing::warn!(error = %e, "cannot read the node lease; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let free_now = match &current.value {
                None => true,
                Some(r) => r.state == NodeState::Left || r.holder.boot == boot,
            };
            let quiet_long_enough = match seen {
                Some((rev, since)) if rev == current.revision => since.elapsed() >= lease,
                _ => {
                    if let Some(r) = &current.value
                        && !free_now
                    {
                        tracing::warn!(
                            node,
                            holder_boot = %r.holder.boot,
                            written_at = %r.written_at,
                            "another process holds this node id's lease; waiting until it has not renewed for cluster.lease"
                        );
                    }
                    seen = Some((current.revision, Instant::now()));
                    false
                }
            };
            if free_now || quiet_long_enough {
                let sent = Instant::now();
                let mut record = record.clone();
                record.written_at = jiff::Timestamp::now().to_string();
                match records.write(&key, &record, current.revision).await {
                    Ok(revision) => {
                        let fence = Fence::new(
                            record.holder.clone(),
                            revision,
                            sent + Duration::from(config.self_fence_after),
                        );
                        metrics::counter!("tgingest_cluster_node_lease_acquired_total")
                            .increment(1);
                        let revision = Arc::new(Mutex::new(revision));
                        let record = Arc::new(Mutex::new(record));
                        let renewer = tokio::spawn(renew(
                            records.clone(),
                            record.clone(),
                            revision.clone(),
                            fence.clone(),
                            config.clone(),
                        ));
                        return Ok(NodeLease {
                            records,
                            record,
                            revision,
                            fence,
                            renewer,
                        });
                    }
                    Err(RecordError::Conflict { .. }) => seen = None,
                    Err(e @ RecordError::Unknown { .. }) => {
                        tracing::warn!(error = %e, "node lease write had no answer; reading it back");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The fence of this lease.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Who holds it.
    pub fn holder(&self) -> &Holder {
        self.fence.holder()
    }

    /// Marks the node as leaving (it takes no new accounts) or not; written at the next renewal.
    pub fn set_draining(&self, draining: bool) {
        lock(&self.record).draining = draining;
    }

    /// Gives the lease up cleanly: call only once every client of this node is closed and its
    /// claims are released. Other nodes may then take the node id and its accounts at once.
    pub async fn release(self) -> Result<(), RecordError> {
        self.renewer.abort();
        self.fence.lower();
        let mut record = lock(&self.record).clone();
        record.state = NodeState::Left;
        record.written_at = jiff::Timestamp::now().to_string();
        let key = node_key(&record.holder.node);
        let expected = *lock(&self.revision);
        self.records
            .write(&key, &record, expected)
            .await
            .map(|_| ())
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Rewrites the record every `renew_every` until the fence comes down: a conflict (someone else
/// wrote this node's key) lowers it at once, silence lowers it at its deadline.
async fn renew(
    records: Records,
    shared: Arc<Mutex<NodeRecord>>,
    revision: Arc<Mutex<u64>>,
    fence: Fence,
    config: ClusterConfig,
) {
    let key = node_key(&fence.holder().node);
    let every: Duration = config.renew_every.into();
    let valid_for: Duration = config.self_fence_after.into();
    let mut record = lock(&shared).clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = fence.lowered() => break,
        }
        if !fence.is_up() {
            break;
        }
        let sent = Instant::now();
        let expected = *lock(&revision);
        record = lock(&shared).clone();
        record.written_at = jiff::Timestamp::now().to_string();
        let outcome = tokio::select! {
            outcome = records.write(&key, &record, expected) => outcome,
            _ = fence.lowered() => break,
        };
        match outcome {
            Ok(new_revision) => {
                *lock(&revision) = new_revision;
                if !fence.extend(sent, valid_for) {
                    tracing::error!(node = %record.holder.node, "node lease renewed after its fence deadline; every account stays stopped until the lease is acquired again");
                    break;
                }
                metrics::counter!("tgingest_cluster_node_lease_renewals_total").increment(1);
            }
            Err(RecordError::Conflict { .. }) => {
                // The write may have been applied before an earlier timeout: ours if the record
                // read back is exactly what this process wrote.
                if let Ok(Versioned {
                    value: Some(stored),
                    revision: r,
                }) = records.read::<NodeRecord>(&key).await
                    && stored.holder == record.holder
                    && stored.state == record.state
                    && r > expected
                {
                    *lock(&revision) = r;
                    continue;
                }
                tracing::error!(node = %record.holder.node, "another process wrote this node's lease; stopping every account");
                fence.lower();
                break;
            }
            Err(e) => {
                metrics::counter!("tgingest_cluster_node_lease_renew_failures_total").increment(1);
                tracing::warn!(error = %e, "node lease renewal failed; retrying");
            }
        }
    }
    metrics::counter!("tgingest_cluster_self_fences_total").increment(1);
    tracing::warn!(node = %record.holder.node, generation = record.holder.generation, "node lease fence is down");
}
