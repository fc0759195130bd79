//! The live nodes, as this node sees them: a watch on the node lease records, with liveness
//! decided on this node's own monotonic clock.
//!
//! A node counts as live while its record has changed within the last `cluster.lease`, or until
//! it wrote `Left`. A record that vanished (its TTL ran out on the server) is still live until a
//! whole lease has passed since it last changed: the server's clock never decides.
//!
//! Silence is measured against this node's own renewals as the watch delivers them, not against
//! the clock alone: a node cut off from NATS (or whose watch stalled) sees nobody renew, and
//! would otherwise judge every other node dead the moment it is back and steal accounts that are
//! running. So another node is silent for as long as *this* node's own record kept arriving
//! without that node's changing. Right after start-up nothing was observed, so every node counts
//! as live until this node has seen itself renew for a whole lease. And when this node's own
//! renewals arrive after a gap (it was blind: cut off, paused, its watch stalled), every other
//! node counts as just seen: the watch may deliver this node's newest record before another's,
//! and what was missed during the gap is no evidence of anyone's silence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Entry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::lease::{Holder, NodeRecord, NodeState};
use super::lock;
use super::record::Records;
use crate::config::ClusterConfig;

/// What is known of one node.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its last record (`None` once deleted or expired on the server).
    pub record: Option<NodeRecord>,
    pub revision: u64,
    /// When this node last saw the record change.
    pub changed_at: Instant,
}

/// Whether a claim's holder may still be running its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderStatus {
    /// Its lease is (or may be) renewed: its claims stand.
    Alive,
    /// It left, was replaced, or stayed silent for a whole lease here: it has fenced itself.
    Gone,
}

/// One node of a membership view.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub node: String,
    /// Its last record, if the server still has it.
    pub record: Option<NodeRecord>,
    /// Accepts new accounts (live and not draining).
    pub accepting: bool,
}

/// The live nodes at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    pub live: Vec<Member>,
}

impl View {
    /// Ids of the nodes that take accounts, sorted.
    pub fn accepting(&self) -> Vec<&str> {
        self.live
            .iter()
            .filter(|m| m.accepting)
            .map(|m| m.node.as_str())
            .collect()
    }

    /// The live member `node`, if it is live.
    pub fn live_member(&self, node: &str) -> Option<&Member> {
        self.live.iter().find(|m| m.node == node)
    }
}

/// A running membership watch.
#[derive(Clone)]
pub struct Membership {
    state: Arc<Mutex<BTreeMap<String, Observed>>>,
    lease: Duration,
    /// This node's id: its own renewals, as observed, are the clock silence is measured on.
    me: String,
    started: Instant,
}

impl Membership {
    /// Starts watching the node records of `records`' bucket; the task ends when `stop` is set
    /// or its sender dropped.
    pub async fn start(
        records: Records,
        config: &ClusterConfig,
        me: &str,
        stop: watch::Receiver<bool>,
    ) -> Membership {
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let lease: Duration = config.lease.into();
        let sight = Sight {
            me: me.to_string(),
            blind_after: Duration::from(config.renew_every) * 2,
            last_own: None,
        };
        tokio::spawn(follow(records, state.clone(), sight, stop));
        Membership {
            state,
            lease,
            me: me.to_string(),
            started: Instant::now(),
        }
    }

    /// The live nodes now.
    pub fn view(&self) -> View {
        let now = self.reference(Instant::now());
        let state = lock(&self.state);
        let mut view = View::default();
        for (node, o) in state.iter() {
            let left = o
                .record
                .as_ref()
                .is_some_and(|r| r.state == NodeState::Left);
            let quiet = now.saturating_duration_since(o.changed_at) >= self.lease;
            if !left && !quiet {
                view.live.push(Member {
                    node: node.clone(),
                    record: o.record.clone(),
                    accepting: o.record.as_ref().is_some_and(|r| !r.draining),
                });
            }
        }
        view
    }

    /// The instant silence is measured up to: when this node last saw its own record change
    /// (never later than `now`); before it ever did, the start of the watch.
    fn reference(&self, now: Instant) -> Instant {
        let state = lock(&self.state);
        state
            .get(&self.me)
            .map_or(self.started, |o| o.changed_at)
            .min(now)
    }

    /// What is known of `node`.
    pub fn observed(&self, node: &str) -> Option<Observed> {
        let state = lock(&self.state);
        state.get(node).cloned()
    }

    /// Whether the holder of a claim may still be talking to Telegram, as far as this node can
    /// tell now. `acquired_at` is the revision of the node record that holder's acquisition
    /// wrote (claims keep it), so a view that lags behind the claim is never read as a
    /// replacement.
    pub fn holder_status(&self, holder: &Holder, acquired_at: u64) -> HolderStatus {
        let now = self.reference(Instant::now());
        let Some(o) = self.observed(&holder.node) else {
            // Never seen: had it renewed since this node started watching, it would have been.
            return if now.saturating_duration_since(self.started) >= self.lease {
                HolderStatus::Gone
            } else {
                HolderStatus::Alive
            };
        };
        if o.revision < acquired_at {
            return HolderStatus::Alive;
        }
        match &o.record {
            // Taken over by a newer process or generation: that acquisition waited the old
            // one out (or the old one fenced itself and acquired again).
            Some(r) if r.holder != *holder => HolderStatus::Gone,
            Some(r) if r.state == NodeState::Left => HolderStatus::Gone,
            _ if now.saturating_duration_since(o.changed_at) >= self.lease => HolderStatus::Gone,
            _ => HolderStatus::Alive,
        }
    }
}

/// Follows every `node.*` record (see [`Records::follow`]).
async fn follow(
    records: Records,
    state: Arc<Mutex<BTreeMap<String, Observed>>>,
    mut sight: Sight,
    stop: watch::Receiver<bool>,
) {
    records
        .clone()
        .follow("node.*", stop, |entry| {
            apply(&records, &state, &mut sight, entry);
        })
        .await;
}

/// How well this node has been seeing: when its own record last arrived.
struct Sight {
    me: String,
    /// A longer wait between two of its own records means it was blind in between.
    blind_after: Duration,
    last_own: Option<Instant>,
}

fn apply(
    records: &Records,
    state: &Mutex<BTreeMap<String, Observed>>,
    sight: &mut Sight,
    entry: Entry,
) {
    let Some(node) = entry.key.strip_prefix("node.") else {
        return;
    };
    let record = match records.decode::<NodeRecord>(
        &entry.key,
        entry.operation,
        &entry.value,
        entry.revision,
    ) {
        Ok(v) => v.value,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable node lease record");
            return;
        }
    };
    let mut state = lock(state);
    let now = Instant::now();
    if node == sight.me {
        let blind = sight
            .last_own
            .is_none_or(|t| now.saturating_duration_since(t) > sight.blind_after);
        sight.last_own = Some(now);
        if blind {
            for o in state.values_mut() {
                o.changed_at = o.changed_at.max(now);
            }
        }
    }
    match state.get_mut(node) {
        // A watch restarted from history replays the last value: not a change.
        Some(o) if o.revision == entry.revision => {}
        Some(o) => {
            *o = Observed {
                record,
                revision: entry.revision,
                changed_at: now,
            }
        }
        None => {
            state.insert(
                node.to_string(),
                Observed {
                    record,
                    revision: entry.revision,
                    changed_at: now,
                },
            );
        }
    }
}
