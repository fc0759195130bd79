//! Counters every stage updates, readable in-process (the demo's summary and progress line,
//! tests) as well as through the metrics exporter.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::accounts::Lifecycle;

pub use crate::observability::METRIC_ACCOUNTS;

/// Sets [`METRIC_ACCOUNTS`] to 0 for every state, so each series exists from the start.
pub fn register_zeros() {
    for state in Lifecycle::NAMES {
        metrics::gauge!(METRIC_ACCOUNTS, "state" => state).set(0.0);
    }
}

/// One counter, both in-process and as a Prometheus metric.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latencies in microseconds, kept in log-spaced buckets (about 4 % apart) for percentiles.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: Mutex<BTreeMap<u32, u64>>,
}

impl LatencyHistogram {
    fn bucket(us: u64) -> u32 {
        ((us.max(1) as f64).ln() * 25.0) as u32
    }

    /// Records one latency.
    pub fn record(&self, us: u64) {
        if let Ok(mut b) = self.buckets.lock() {
            *b.entry(Self::bucket(us)).or_default() += 1;
        }
    }

    /// The latency below which `q` (0..=1) of the samples lie, in microseconds (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let Ok(b) = self.buckets.lock() else { return 0 };
        let total: u64 = b.values().sum();
        if total == 0 {
            return 0;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in b.iter() {
            seen += count;
            if seen >= target {
                return ((*bucket as f64 + 1.0) / 25.0).exp() as u64;
            }
        }
        0
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.lock().map(|b| b.values().sum()).unwrap_or(0)
    }
}

/// Counts by a label (rule, redaction kind).
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    pub fn add(&self, label: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_string()).or_default() += n;
        }
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Per-account counters reported in Switchboard heartbeats.
#[derive(Debug, Default)]
pub struct AccountCounters(
    Mutex<std::collections::HashMap<String, crate::switchboard::HeartbeatCounters>>,
);

impl AccountCounters {
    /// Applies `f` to the counters of `account_id`.
    pub fn update(
        &self,
        account_id: &str,
        f: impl FnOnce(&mut crate::switchboard::HeartbeatCounters),
    ) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(account_id.to_string()).or_default());
        }
    }

    /// The counters of `account_id` (zeros if it has none yet).
    pub fn get(&self, account_id: &str) -> crate::switchboard::HeartbeatCounters {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(account_id).copied())
            .unwrap_or_default()
    }
}

/// Which lifecycle state each account is in, and how many accounts are in each state (the gauge
/// [`METRIC_ACCOUNTS`]).
///
/// An account actor holds a [`LifecycleGuard`] for its lifetime; the tally changes only through
/// guards, under one lock, so the counts always equal the per-account states. When an actor goes
/// (stop, failure, panic) its guard's `Drop` takes it out of the tally, except in a terminal
/// state (`revoked`, `duplicated`): that account stays counted — it needs an operator — until a
/// new actor for it starts and takes its place.
#[derive(Debug, Default)]
pub struct LifecycleTally {
    inner: Mutex<TallyInner>,
}

#[derive(Debug, Default)]
struct TallyInner {
    next_token: u64,
    /// Account id → (token of the guard that owns the entry, its state).
    accounts: HashMap<String, (u64, Lifecycle)>,
    counts: HashMap<&'static str, u64>,
}

impl TallyInner {
    fn add(&mut self, state: &Lifecycle) {
        let count = self.counts.entry(state.name()).or_default();
        *count += 1;
        metrics::gauge!(METRIC_ACCOUNTS, "state" => state.name()).set(*count as f64);
    }

    fn remove(&mut self, state: &Lifecycle) {
        let count = self.counts.entry(state.name()).or_default();
        *count = count.saturating_sub(1);
        metrics::gauge!(METRIC_ACCOUNTS, "state" => state.name()).set(*count as f64);
    }
}

impl LifecycleTally {
    fn lock(&self) -> MutexGuard<'_, TallyInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts tracking `account_id` in `initial`, replacing whatever an earlier actor of the same
    /// account left behind; the account leaves the tally when the guard is dropped.
    pub fn track(self: &Arc<Self>, account_id: &str, initial: Lifecycle) -> LifecycleGuard {
        let mut inner = self.lock();
        inner.next_token += 1;
        let token = inner.next_token;
        if let Some((_, old)) = inner
            .accounts
            .insert(account_id.to_string(), (token, initial.clone()))
        {
            inner.remove(&old);
        }
        inner.add(&initial);
        LifecycleGuard {
            tally: self.clone(),
            account_id: account_id.to_string(),
            token,
            state: initial,
        }
    }

    /// Counts `account_id` in the terminal `state` its registry record keeps although no actor
    /// runs it (a revoked account is not started again after a restart, and still needs an
    /// operator). An actor's entry, if there is one, is left as it is; a later actor of the
    /// account takes this entry's place.
    pub fn hold_ended(&self, account_id: &str, state: &Lifecycle) {
        let mut inner = self.lock();
        if inner.accounts.contains_key(account_id) {
            return;
        }
        // Token 0 is never a guard's (they start at 1): no actor's drop can remove it.
        inner
            .accounts
            .insert(account_id.to_string(), (0, state.clone()));
        inner.add(state);
    }

    /// Takes `account_id` out of the tally whatever holds it (the account was removed, or in a
    /// cluster another node speaks for it now). Not for an account whose actor runs here.
    pub fn forget(&self, account_id: &str) {
        let mut inner = self.lock();
        if let Some((_, state)) = inner.accounts.remove(account_id) {
            inner.remove(&state);
        }
    }

    /// The state of `account_id`, if an actor tracks it (or left it in a terminal state).
    pub fn of(&self, account_id: &str) -> Option<Lifecycle> {
        self.lock()
            .accounts
            .get(account_id)
            .map(|(_, state)| state.clone())
    }

    /// Accounts per state, every state listed (zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let inner = self.lock();
        Lifecycle::NAMES
            .iter()
            .map(|name| (*name, inner.counts.get(name).copied().unwrap_or(0)))
            .collect()
    }

    fn set(&self, account_id: &str, token: u64, next: &Lifecycle) {
        let mut inner = self.lock();
        let old = match inner.accounts.get_mut(account_id) {
            Some((owner, state)) if *owner == token => std::mem::replace(state, next.clone()),
            // A newer actor of this account took over; this one no longer counts.
            _ => return,
        };
        inner.remove(&old);
        inner.add(next);
    }

    fn release(&self, account_id: &str, token: u64) {
        let mut inner = self.lock();
        let Some((owner, state)) = inner.accounts.get(account_id) else {
            return;
        };
        if *owner != token || state.is_terminal() {
            return;
        }
        if let Some((_, state)) = inner.accounts.remove(account_id) {
            inner.remove(&state);
            // Gone from this node (paused, removed, handed over): no longer idle or lagging here.
            crate::observability::progress::forget(account_id);
        }
    }
}

/// One account actor's entry in the [`LifecycleTally`]; dropping it takes the account out.
#[derive(Debug)]
pub struct LifecycleGuard {
    tally: Arc<LifecycleTally>,
    account_id: String,
    token: u64,
    state: Lifecycle,
}

impl LifecycleGuard {
    /// The state last set.
    pub fn state(&self) -> &Lifecycle {
        &self.state
    }

    /// Moves to `next`; returns the previous state if it changed (by name or data).
    pub fn set(&mut self, next: Lifecycle) -> Option<Lifecycle> {
        if self.state == next {
            return None;
        }
        self.tally.set(&self.account_id, self.token, &next);
        Some(std::mem::replace(&mut self.state, next))
    }
}

impl Drop for LifecycleGuard {
    fn drop(&mut self) {
        self.tally.release(&self.account_id, self.token);
    }
}

/// What Switchboard answered, event by event: kept by the delivery stage only when asked for
/// ([`PipelineParts::record_acknowledged`](super::PipelineParts)), since it grows with every
/// event. The demo compares it with its ground truth when the Switchboard is not its own fake.
#[derive(Debug, Default)]
pub struct AckLedger(Mutex<LedgerInner>);

#[derive(Debug, Default)]
struct LedgerInner {
    /// Event id → how often Switchboard answered "accepted, not a duplicate" (more than once
    /// means it stored the event twice).
    answers_new: HashMap<String, u32>,
    /// Event ids answered only as duplicates (already stored before).
    only_duplicate: std::collections::HashSet<String>,
    /// When the last answer came (µs since the epoch).
    last_at_us: Option<i64>,
}

impl AckLedger {
    fn lock(&self) -> MutexGuard<'_, LedgerInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that Switchboard acknowledged `event_id` (as new, or as a `duplicate`).
    pub fn record(&self, event_id: &str, duplicate: bool) {
        let mut inner = self.lock();
        if duplicate {
            if !inner.answers_new.contains_key(event_id) {
                inner.only_duplicate.insert(event_id.to_string());
            }
        } else {
            inner.only_duplicate.remove(event_id);
            *inner.answers_new.entry(event_id.to_string()).or_default() += 1;
        }
        inner.last_at_us = Some(crate::event::now_us());
    }

    /// How many of `expected` were not acknowledged (yet).
    pub fn missing(&self, expected: &std::collections::HashSet<String>) -> u64 {
        let inner = self.lock();
        expected
            .iter()
            .filter(|id| {
                !inner.answers_new.contains_key(*id) && !inner.only_duplicate.contains(*id)
            })
            .count() as u64
    }

    /// Every acknowledged event id.
    pub fn acknowledged(&self) -> std::collections::HashSet<String> {
        let inner = self.lock();
        inner
            .answers_new
            .keys()
            .chain(inner.only_duplicate.iter())
            .cloned()
            .collect()
    }

    /// Events Switchboard answered "accepted as new" more than once: by its own word, stored twice.
    pub fn stored_twice(&self) -> u64 {
        self.lock().answers_new.values().filter(|n| **n > 1).count() as u64
    }

    /// When the last acknowledgement came (µs since the epoch).
    pub fn last_at_us(&self) -> Option<i64> {
        self.lock().last_at_us
    }
}

/// What the pipeline has done since this process started.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events the sources produced (duplicate deliveries included).
    pub produced: Counter,
    /// Events JetStream stored in TG_RAW (a PubAck that was not a duplicate).
    pub published_raw: Counter,
    /// Events TG_RAW refused as repeats of a Nats-Msg-Id within its duplicate window.
    pub duplicates_bus_raw: Counter,
    /// Events the dedupe stage dropped because its seen-set knew them.
    pub duplicates_seen_set: Counter,
    /// Events the dedupe stage dropped because another copy holds their claim in `TG_SEEN`.
    pub duplicates_shared: Counter,
    /// Copies the dedupe stage could not decide in `TG_SEEN` (redelivered, not passed on).
    pub shared_errors: Counter,
    /// Events TG_CLEAN refused as Nats-Msg-Id repeats.
    pub duplicates_bus_clean: Counter,
    /// Events dropped by the scope filter, by rule.
    pub filtered: Labelled,
    /// Redactions applied, by detector.
    pub redacted: Labelled,
    /// Events published to TG_CLEAN.
    pub published_clean: Counter,
    /// Events Switchboard accepted as new.
    pub delivered: Counter,
    /// Events Switchboard answered as duplicates (re-sends after a crash or retry).
    pub resend_duplicates: Counter,
    /// Conversation-history batches recorded in `TG_BATCH` by this node's batcher.
    pub batches_recorded: Counter,
    /// Batch members the batcher dropped because a recorded batch already holds them
    /// (redeliveries after a crash, or another node's batch).
    pub batch_members_already_batched: Counter,
    /// Batch records refused because another batcher recorded one for the chat first (the
    /// compare-and-set on the chat's subject).
    pub batch_conflicts: Counter,
    /// Batches Switchboard accepted (as new or as duplicates): one MCP call each.
    pub batches_delivered: Counter,
    /// `ingest` calls made to Switchboard (retries included): one per event in `messages`
    /// mode, one per batch for batched messages.
    pub ingest_calls: Counter,
    /// Calls retried after a transient error.
    pub retries: Counter,
    /// Events dead-lettered to TG_DLQ.
    pub dead_lettered: Counter,
    /// Source timestamp (observed_at) to Switchboard acceptance.
    pub latency: LatencyHistogram,
    /// Per-account counters for heartbeats.
    pub accounts: AccountCounters,
    /// Accounts per lifecycle state (the gauge `tgingest_accounts{state}`).
    pub lifecycles: Arc<LifecycleTally>,
    /// Flood waits (FLOOD_WAIT and PEER_FLOOD) the account actors honoured.
    pub flood_waits: Counter,
    /// Seconds of those flood waits, in total.
    pub flood_wait_seconds: Counter,
    /// Account actors that failed on a network error and are reconnected by a restart.
    pub reconnects: Counter,
    /// Switchboard's answer per event, when the pipeline was asked to keep it.
    pub acknowledged: Option<AckLedger>,
}

/// A serializable copy of [`PipelineStats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub produced: u64,
    pub published_raw: u64,
    pub duplicates_dropped: BTreeMap<String, u64>,
    pub filtered: BTreeMap<String, u64>,
    pub redacted: BTreeMap<String, u64>,
    pub published_clean: u64,
    pub delivered: u64,
    pub resend_duplicates: u64,
    /// `ingest` calls made (retries included).
    pub ingest_calls: u64,
    /// Conversation-history batches Switchboard accepted (batch mode).
    pub batches_delivered: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub latency_ms: BTreeMap<String, f64>,
    /// Accounts per lifecycle state.
    pub accounts: BTreeMap<String, u64>,
    /// Flood waits honoured.
    pub flood_waits: u64,
    /// Account actors restarted after a network error.
    pub reconnects: u64,
}

impl PipelineStats {
    /// A consistent-enough copy for printing.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ms = |q| self.latency.quantile(q) as f64 / 1000.0;
        StatsSnapshot {
            produced: self.produced.get(),
            published_raw: self.published_raw.get(),
            duplicates_dropped: BTreeMap::from([
                ("bus_raw".to_string(), self.duplicates_bus_raw.get()),
                ("seen_set".to_string(), self.duplicates_seen_set.get()),
                ("shared".to_string(), self.duplicates_shared.get()),
                ("bus_clean".to_string(), self.duplicates_bus_clean.get()),
            ]),
            filtered: self.filtered.snapshot(),
            redacted: self.redacted.snapshot(),
            published_clean: self.published_clean.get(),
            delivered: self.delivered.get(),
            resend_duplicates: self.resend_duplicates.get(),
            ingest_calls: self.ingest_calls.get(),
            batches_delivered: self.batches_delivered.get(),
            retries: self.retries.get(),
            dead_lettered: self.dead_lettered.get(),
            latency_ms: BTreeMap::from([
                ("p50".to_string(), ms(0.50)),
                ("p90".to_string(), ms(0.90)),
                ("p99".to_string(), ms(0.99)),
                ("max".to_string(), ms(1.0)),
            ]),
            accounts: self
                .lifecycles
                .counts()
                .into_iter()
                .map(|(name, n)| (name.to_string(), n))
                .collect(),
            flood_waits: self.flood_waits.get(),
            reconnects: self.reconnects.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket_of_the_truth() {
        let h = LatencyHistogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        for (q, truth) in [(0.5, 5_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - truth).abs() / truth < 0.06, "q{q}: {got} vs {truth}");
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0);
    }

    #[test]
    fn the_ledger_counts_duplicates_as_acknowledged_and_new_twice_as_stored_twice() {
        let ledger = AckLedger::default();
        let expected: std::collections::HashSet<String> =
            ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(ledger.missing(&expected), 4);
        ledger.record("a", false);
        ledger.record("b", true);
        ledger.record("c", false);
        ledger.record("c", false);
        ledger.record("a", true);
        assert_eq!(ledger.missing(&expected), 1);
        assert_eq!(ledger.stored_twice(), 1);
        assert_eq!(ledger.acknowledged().len(), 3);
        assert!(ledger.last_at_us().is_some());
    }

    #[test]
    fn the_lifecycle_tally_follows_guards_and_cannot_drift() {
        let tally = Arc::new(LifecycleTally::default());
        let count = |name| tally.counts()[name];
        let mut a = tally.track("a", Lifecycle::Connecting);
        let mut b = tally.track("b", Lifecycle::Connecting);
        assert_eq!(count("connecting"), 2);
        assert_eq!(a.set(Lifecycle::Running), Some(Lifecycle::Connecting));
        assert_eq!(a.set(Lifecycle::Running), None);
        assert_eq!(count("running"), 1);
        assert_eq!(count("connecting"), 1);
        // A restart: the new actor's guard takes over before the old one is dropped.
        let b2 = tally.track("b", Lifecycle::Connecting);
        b.set(Lifecycle::Running);
        drop(b);
        assert_eq!(count("connecting"), 1);
        assert_eq!(count("running"), 1);
        assert_eq!(tally.of("b"), Some(Lifecycle::Connecting));
        drop(b2);
        assert_eq!(tally.of("b"), None);
        assert_eq!(count("connecting"), 0);
        // A terminal state outlives its actor, until a new actor replaces it.
        a.set(Lifecycle::Duplicated);
        drop(a);
        assert_eq!(count("duplicated"), 1);
        assert_eq!(count("running"), 0);
        let a2 = tally.track("a", Lifecycle::Connecting);
        assert_eq!(count("duplicated"), 0);
        drop(a2);
        assert!(tally.counts().values().all(|n| *n == 0));
        assert_eq!(tally.counts().len(), Lifecycle::NAMES.len());
    }

    #[test]
    fn an_ended_account_without_an_actor_is_counted_once_until_forgotten_or_replaced() {
        let tally = Arc::new(LifecycleTally::default());
        let revoked = Lifecycle::Revoked {
            reason: "SESSION_REVOKED".into(),
        };
        tally.hold_ended("1", &revoked);
        tally.hold_ended("1", &revoked);
        assert_eq!(tally.counts()["revoked"], 1);
        // A new login starts an actor: its entry replaces the held one.
        let guard = tally.track("1", Lifecycle::Connecting);
        assert_eq!(tally.counts()["revoked"], 0);
        assert_eq!(tally.counts()["connecting"], 1);
        drop(guard);
        assert_eq!(tally.counts()["connecting"], 0);
        tally.hold_ended("2", &Lifecycle::Duplicated);
        tally.forget("2");
        tally.forget("2");
        assert_eq!(tally.counts()["duplicated"], 0);
    }
}
