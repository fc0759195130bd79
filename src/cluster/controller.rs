//! The ownership controller of one node: holds the node lease, and decides, every
//! `cluster.renew_every`, which accounts this node takes, hands off or lets go.
//!
//! Each round:
//! 1. a fence that came down shuts every gate pass here at once (the node aborts if that hangs
//!    past the margin left before anyone may take over), then stops the clients; the lease is
//!    then acquired again under a new generation, which the old claims do not name;
//! 2. the wanted accounts are placed over the accepting live nodes with [`assign`], starting from
//!    where the claims say they run;
//! 3. accounts placed here are claimed when free (never claimed, released, or held by a node that
//!    is gone) and started once their lock-delay has passed, at most `connects_per_second`;
//! 4. accounts placed elsewhere are handed off, at most `move_batch` per round and only once the
//!    set of live nodes has been stable for `stable_after`: stopped (checkpoint written, client
//!    closed), their gate pass closed, then released naming the node that should take them —
//!    several at a time, each released as soon as its own client is down.
//!
//! A wrong view only causes churn: the claims' compare-and-set decides, and the gate keeps a
//! client whose claim or fence is gone from reaching Telegram.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use super::assign::assign;
use super::claims::{self, Claim, ClaimRecord, ClaimState, Taken};
use super::gate::Gate;
use super::lease::{Fence, LeaseError, NodeLease};
use super::lock;
use super::membership::{HolderStatus, Membership, View};
use super::record::{RecordError, Records};
use crate::config::ClusterConfig;

/// What the controller asks of the node it runs in.
pub trait AccountRunner: Send + Sync + 'static {
    /// The accounts that should run somewhere in the cluster (consented, not paused, session
    /// not ended). `live` is this round's view of the nodes that take accounts (this one
    /// included): the runner speaks (heartbeats, gauges) for the accounts that run nowhere
    /// and rank it first among them, so exactly one node does.
    fn wanted<'a>(&'a self, live: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// Starts the account's client here; `proxy` is the gate URL it must connect through,
    /// `epoch` the claim's (what the account's state writes carry).
    fn start(&self, account: &str, proxy: String, epoch: u64) -> BoxFuture<'_, Result<(), String>>;
    /// Stops the account's client here and returns once it is closed and its state written.
    fn stop(&self, account: &str) -> BoxFuture<'_, ()>;
}

/// A running controller's view, for `GET /v1/cluster` and tests.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Accounts running here, with their claim epochs.
    pub running: BTreeMap<String, u64>,
    /// Whether the node lease's fence is down (nothing runs here until it is acquired again).
    pub fenced: bool,
    /// The generation of the node lease held now.
    pub generation: u64,
}

/// Reads a controller's current [`Snapshot`].
#[derive(Clone)]
pub struct Snapshots(Arc<Mutex<Snapshot>>);

impl Snapshots {
    /// What runs here now.
    pub fn get(&self) -> Snapshot {
        lock(&self.0).clone()
    }
}

/// Handle of a running controller.
pub struct Controller {
    snapshot: Arc<Mutex<Snapshot>>,
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Acquires the node lease of `node` and starts deciding.
    pub async fn start(
        records: Records,
        config: ClusterConfig,
        node: String,
        runner: Arc<dyn AccountRunner>,
        gate: Arc<Gate>,
    ) -> Result<Controller, LeaseError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let boot = uuid::Uuid::new_v4().to_string();
        let lease = NodeLease::acquire(
            records.clone(),
            &config,
            &node,
            &boot,
            1,
            config.capacity,
            &stop_rx,
        )
        .await?;
        let membership = Membership::start(records.clone(), &config, &node, stop_rx.clone()).await;
        let claims_view = ClaimsView::start(records.clone(), stop_rx.clone());
        let snapshot = Arc::new(Mutex::new(Snapshot {
            generation: 1,
            ..Snapshot::default()
        }));
        let state = State {
            records,
            config,
            node,
            boot,
            runner,
            gate,
            membership,
            claims_view,
            lease: Some(lease),
            held: BTreeMap::new(),
            last_live: Vec::new(),
            generation: 1,
            stable_since: Instant::now(),
            next_connect: Instant::now(),
            snapshot: snapshot.clone(),
        };
        let task = tokio::spawn(run(state, stop_rx));
        Ok(Controller {
            snapshot,
            stop_tx,
            task,
        })
    }

    /// What runs here now.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.snapshot).clone()
    }

    /// A handle that reads [`Controller::snapshot`] without the controller (for the admin API).
    pub fn snapshots(&self) -> Snapshots {
        Snapshots(self.snapshot.clone())
    }

    /// Hands every account off (stopped, released for its next owner), then gives the node
    /// lease up: a graceful leave.
    pub async fn leave(self) {
        self.stop_tx.send_replace(true);
        let _ = self.task.await;
    }

    /// Stops deciding at once and leaves everything as it is, as a crash would (the accounts'
    /// clients are the caller's to kill).
    pub fn abandon(self) {
        self.task.abort();
    }
}

struct State {
    records: Records,
    config: ClusterConfig,
    node: String,
    boot: String,
    runner: Arc<dyn AccountRunner>,
    gate: Arc<Gate>,
    membership: Membership,
    claims_view: ClaimsView,
    lease: Option<NodeLease>,
    held: BTreeMap<String, Claim>,
    last_live: Vec<String>,
    /// The generation of the last acquisition attempt (the next one is one more).
    generation: u64,
    stable_since: Instant,
    next_connect: Instant,
    snapshot: Arc<Mutex<Snapshot>>,
}

async fn run(mut s: State, mut stop: watch::Receiver<bool>) {
    let every: Duration = s.config.renew_every.into();
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(fence) = s.lease.as_ref().map(|l| l.fence().clone()) else {
            fenced(&mut s).await;
            continue;
        };
        // A fence that comes down interrupts the round at once: every step of a round leaves
        // `held` naming whatever client it may have started, so nothing is left running.
        let lowered = async move { fence.lowered().await };
        let fence_down = tokio::select! {
            biased;
            _ = lowered => true,
            _ = async {
                round(&mut s).await;
                tokio::time::sleep(every).await;
            } => false,
            _ = stop.changed() => false,
        };
        if fence_down {
            fenced(&mut s).await;
        }
    }
    leave(&mut s).await;
}

/// One decision round.
async fn round(s: &mut State) {
    let Some(fence) = s.lease.as_ref().map(|l| l.fence().clone()) else {
        return;
    };
    if !fence.is_up() {
        return;
    }
    let view = s.membership.view();
    let live: Vec<String> = view.accepting().iter().map(|n| n.to_string()).collect();
    if live != s.last_live {
        s.last_live = live.clone();
        s.stable_since = Instant::now();
    }
    let wanted = match s.runner.wanted(&live).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the accounts; keeping things as they are");
            return;
        }
    };
    let wanted_set: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();

    // Accounts held here that nobody wants any more (paused, removed): stop and let go.
    let unwanted: Vec<String> = s
        .held
        .keys()
        .filter(|a| !wanted_set.contains(a.as_str()))
        .cloned()
        .collect();
    let unwanted = unwanted.into_iter().map(|a| (a, None)).collect();
    hand_off_all(s, &fence, unwanted, Reason::Unwanted).await;

    let claims = s.claims_view.snapshot();
    let mut current: BTreeMap<&str, &str> = BTreeMap::new();
    for (account, c) in &claims {
        let alive = c.state == ClaimState::Held
            && s.membership.holder_status(&c.holder, c.holder_acquired_at) == HolderStatus::Alive;
        if alive {
            current.insert(account.as_str(), c.holder.node.as_str());
        }
    }
    for account in s.held.keys() {
        current.insert(account.as_str(), s.node.as_str());
    }
    let nodes: Vec<&str> = live.iter().map(String::as_str).collect();
    let accounts: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let capacity = capacities(&view);
    let target = assign(&accounts, &current, &nodes, &capacity, s.config.load_factor);
    let unowned = accounts
        .iter()
        .filter(|a| !current.contains_key(*a))
        .count();
    metrics::gauge!(METRIC_UNOWNED).set(unowned as f64);
    metrics::gauge!(METRIC_LIVE_NODES).set(view.live.len() as f64);

    // Take what is placed here: at most a round's worth of connects (`connects_per_second`
    // over `renew_every`), claimed together so their lock-delays run at once, then started
    // one by one at the pace Telegram tolerates.
    let lock_delay: Duration = s.config.lock_delay.into();
    let every: Duration = s.config.renew_every.into();
    let per_second = s.config.connects_per_second.max(1);
    let pace = Duration::from_secs(1) / per_second;
    let budget = ((every.as_secs_f64() * f64::from(per_second)) as usize).max(1);
    let mine: Vec<String> = target
        .iter()
        .filter(|(a, n)| **n == s.node && !s.held.contains_key(*a))
        .map(|(a, _)| a.clone())
        .collect();
    let mut taken = Vec::new();
    for account in mine {
        if taken.len() >= budget || !fence.is_up() {
            break;
        }
        match claims::take(&s.records, &s.membership, &fence, &account, lock_delay).await {
            Ok(Taken::Mine(claim)) => {
                // Tracked before it starts, so a fence coming down mid-start stops it too.
                s.held.insert(account.clone(), claim.clone());
                taken.push(claim);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot take a claim now"),
        }
    }
    publish(s, &fence);
    if let Some(latest) = taken.iter().map(|c| c.connect_after).max() {
        tokio::time::sleep_until(latest).await;
    }
    for claim in taken {
        tokio::time::sleep_until(s.next_connect).await;
        s.next_connect = Instant::now() + pace;
        let account = claim.account;
        let proxy = s.gate.open(&account, fence.clone());
        match s.runner.start(&account, proxy, claim.epoch).await {
            Ok(()) => {
                metrics::counter!("tgingest_cluster_accounts_started_total").increment(1);
                if let Some(since) = claim.orphaned_since {
                    metrics::histogram!(METRIC_FAILOVER_SECONDS)
                        .record(since.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "an account claimed here did not start; releasing it");
                hand_off(s, &fence, &account, None, Reason::StartFailed).await;
            }
        }
    }

    // Hand off what is placed elsewhere, a batch at a time, once the view is stable.
    if s.stable_since.elapsed() >= Duration::from(s.config.stable_after) {
        let moving: Vec<(String, Option<String>)> = s
            .held
            .keys()
            .filter_map(|a| {
                target
                    .get(a)
                    .filter(|n| **n != s.node)
                    .map(|n| (a.clone(), Some(n.to_string())))
            })
            .take(s.config.move_batch)
            .collect();
        hand_off_all(s, &fence, moving, Reason::Rebalance).await;
    }
    publish(s, &fence);
}

/// Why an account is handed off (the `reason` label of [`METRIC_HANDOFFS`]).
#[derive(Debug, Clone, Copy)]
enum Reason {
    /// Placed on another node (a node joined, or the load cap).
    Rebalance,
    /// This node leaves (SIGTERM).
    Leave,
    /// Paused, removed, no longer consented, or its session ended (revoked, duplicated).
    Unwanted,
    /// Claimed here but its actor did not start.
    StartFailed,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::Rebalance,
        Reason::Leave,
        Reason::Unwanted,
        Reason::StartFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::Rebalance => "rebalance",
            Reason::Leave => "leave",
            Reason::Unwanted => "unwanted",
            Reason::StartFailed => "start_failed",
        }
    }
}

/// Accounts this node stopped and released, by [`Reason`].
pub const METRIC_HANDOFFS: &str = "tgingest_cluster_handoffs_total";
/// Accounts this node stopped without releasing them: `fenced` (its fence came down) or
/// `claim_taken` (its release found the claim already someone else's).
pub const METRIC_ACCOUNTS_LOST: &str = "tgingest_cluster_accounts_lost_total";
/// From the last renewal this node saw of a vanished owner to the account running here.
pub use crate::observability::METRIC_FAILOVER_SECONDS;
/// Wanted accounts that no live node holds, as this node sees it.
pub const METRIC_UNOWNED: &str = "tgingest_cluster_unowned_accounts";
/// Live nodes in this node's view.
pub const METRIC_LIVE_NODES: &str = "tgingest_cluster_live_nodes";

/// Registers the controller's series at zero, so dashboards and alerts see a real 0 on every
/// node (a node with `cluster.enabled` off keeps them at 0).
pub fn register_zeros() {
    for reason in Reason::ALL {
        metrics::counter!(METRIC_HANDOFFS, "reason" => reason.label()).increment(0);
    }
    for reason in ["fenced", "claim_taken"] {
        metrics::counter!(METRIC_ACCOUNTS_LOST, "reason" => reason).increment(0);
    }
    for name in [
        "tgingest_cluster_self_fences_total",
        "tgingest_cluster_node_lease_renewals_total",
        "tgingest_cluster_node_lease_renew_failures_total",
        "tgingest_cluster_gate_frames_dropped_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [
        "tgingest_cluster_owned_accounts",
        METRIC_UNOWNED,
        METRIC_LIVE_NODES,
    ] {
        metrics::gauge!(name).set(0.0);
    }
    // Rendered as buckets (observability's latency histograms), each at 0 until a failover.
    let _ = metrics::histogram!(METRIC_FAILOVER_SECONDS);
}

/// Accounts handed off at once: enough that a node leaving with thousands of accounts does not
/// keep the last of them waiting for all the others, few enough not to flood the supervisor.
const HAND_OFF_CONCURRENCY: usize = 32;

/// Stops one account here, closes its gate pass and releases its claim (for `to`, if given).
async fn hand_off(s: &mut State, fence: &Fence, account: &str, to: Option<&str>, reason: Reason) {
    hand_off_all(
        s,
        fence,
        vec![(account.to_string(), to.map(str::to_string))],
        reason,
    )
    .await;
}

/// Hands `moves` (account, next owner) off, up to [`HAND_OFF_CONCURRENCY`] at a time: each
/// account's claim is released as soon as its own client is down, so none waits for the others.
async fn hand_off_all(
    s: &mut State,
    fence: &Fence,
    moves: Vec<(String, Option<String>)>,
    reason: Reason,
) {
    let jobs: Vec<_> = moves
        .into_iter()
        .filter_map(|(account, to)| {
            let claim = s.held.get(&account).cloned()?;
            let (runner, gate, records) = (s.runner.clone(), s.gate.clone(), s.records.clone());
            let (fence, snapshot) = (fence.clone(), s.snapshot.clone());
            Some(async move {
                // Still in `held` meanwhile: an interruption leaves it for `fenced` to stop.
                runner.stop(&account).await;
                gate.close(&account).await;
                // Shown as gone before the claim is let go, so no view has it on two nodes.
                lock(&snapshot).running.remove(&account);
                release(&records, &fence, &claim, to.as_deref(), reason).await;
                account
            })
        })
        .collect();
    let done: Vec<String> = futures::stream::iter(jobs)
        .buffer_unordered(HAND_OFF_CONCURRENCY)
        .collect()
        .await;
    for account in done {
        s.held.remove(&account);
    }
    publish(s, fence);
}

/// Releases a claim whose client is down, counting how it went.
async fn release(
    records: &Records,
    fence: &Fence,
    claim: &Claim,
    to: Option<&str>,
    reason: Reason,
) {
    match claims::release(records, fence, claim, to).await {
        Ok(_) => metrics::counter!(METRIC_HANDOFFS, "reason" => reason.label()).increment(1),
        Err(e @ RecordError::Conflict { .. }) => {
            metrics::counter!(METRIC_ACCOUNTS_LOST, "reason" => "claim_taken").increment(1);
            tracing::warn!(error = %e, "a claim released here was no longer this node's");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot release a claim; it moves once this node's lease is gone")
        }
    }
}

/// The fence came down: stop everything now, then acquire the lease again.
async fn fenced(s: &mut State) {
    let held: Vec<String> = s.held.keys().cloned().collect();
    // Telegram must not hear from these clients any more; the gate already refuses their
    // frames. If closing and stopping them hangs past the margin before a taker may connect,
    // die instead.
    let margin = Duration::from(s.config.lease)
        .saturating_sub(Duration::from(s.config.self_fence_after))
        / 2;
    let gate = s.gate.clone();
    let shut = tokio::time::timeout(margin, async {
        for account in &held {
            gate.close(account).await;
        }
    })
    .await;
    if shut.is_err() {
        tracing::error!("shutting the connections of a fenced node hung; aborting the process");
        std::process::abort();
    }
    // Nothing of theirs reaches Telegram any more; now stop the clients (checkpoints are
    // refused by then if another node has claimed the accounts' state).
    let stops: Vec<_> = held
        .iter()
        .map(|account| {
            let (runner, account) = (s.runner.clone(), account.clone());
            async move { runner.stop(&account).await }
        })
        .collect();
    futures::stream::iter(stops)
        .buffer_unordered(HAND_OFF_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    metrics::counter!(METRIC_ACCOUNTS_LOST, "reason" => "fenced").increment(held.len() as u64);
    s.held.clear();
    s.lease = None;
    publish_fenced(s);
    s.generation += 1;
    let generation = s.generation;
    let never = watch::channel(false).1;
    match NodeLease::acquire(
        s.records.clone(),
        &s.config,
        &s.node,
        &s.boot,
        generation,
        s.config.capacity,
        &never,
    )
    .await
    {
        Ok(lease) => {
            tracing::info!(node = %s.node, generation, "node lease acquired again");
            s.lease = Some(lease);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot acquire the node lease again; retrying");
            tokio::time::sleep(Duration::from(s.config.renew_every)).await;
        }
    }
}

/// The graceful leave: no new accounts, hand everything off, give the lease up.
async fn leave(s: &mut State) {
    let Some(lease) = s.lease.take() else {
        return;
    };
    lease.set_draining(true);
    let fence = lease.fence().clone();
    let view = s.membership.view();
    let others: Vec<&str> = view
        .accepting()
        .into_iter()
        .filter(|n| *n != s.node)
        .collect();
    let held: Vec<String> = s.held.keys().cloned().collect();
    let accounts: Vec<&str> = held.iter().map(String::as_str).collect();
    let capacity = capacities(&view);
    let target = assign(
        &accounts,
        &BTreeMap::new(),
        &others,
        &capacity,
        s.config.load_factor,
    );
    let moves = held
        .iter()
        .map(|a| (a.clone(), target.get(a).map(|n| n.to_string())))
        .collect();
    hand_off_all(s, &fence, moves, Reason::Leave).await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "cannot mark the node lease released; others wait it out");
    }
    publish_fenced(s);
}

/// What each live node announced it can run (absent: no record, so no limit known).
fn capacities(view: &View) -> BTreeMap<&str, usize> {
    view.live
        .iter()
        .filter_map(|m| Some((m.node.as_str(), m.record.as_ref()?.capacity as usize)))
        .collect()
}

fn publish(s: &State, fence: &Fence) {
    let mut snap = lock(&s.snapshot);
    snap.running = s.held.iter().map(|(a, c)| (a.clone(), c.epoch)).collect();
    snap.fenced = !fence.is_up();
    snap.generation = fence.holder().generation;
    metrics::gauge!("tgingest_cluster_owned_accounts").set(s.held.len() as f64);
}

fn publish_fenced(s: &State) {
    let mut snap = lock(&s.snapshot);
    snap.running.clear();
    snap.fenced = true;
    metrics::gauge!("tgingest_cluster_owned_accounts").set(0.0);
}

/// Every account claim, kept current by a watch on `acct.*`.
#[derive(Clone)]
struct ClaimsView {
    claims: Arc<Mutex<BTreeMap<String, ClaimRecord>>>,
}

impl ClaimsView {
    fn start(records: Records, stop: watch::Receiver<bool>) -> ClaimsView {
        let claims: Arc<Mutex<BTreeMap<String, ClaimRecord>>> = Arc::default();
        let c = claims.clone();
        tokio::spawn(async move {
            records
                .clone()
                .follow("acct.*", stop, |entry| {
                    let Some(account) = entry.key.strip_prefix("acct.") else {
                        return;
                    };
                    match records.decode::<ClaimRecord>(
                        &entry.key,
                        entry.operation,
                        &entry.value,
                        entry.revision,
                    ) {
                        Ok(v) => {
                            let mut map = lock(&c);
                            match v.value {
                                Some(r) => map.insert(account.to_string(), r),
                                None => map.remove(account),
                            };
                        }
                        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable claim"),
                    }
                })
                .await;
        });
        ClaimsView { claims }
    }

    fn snapshot(&self) -> BTreeMap<String, ClaimRecord> {
        lock(&self.claims).clone()
    }
}
