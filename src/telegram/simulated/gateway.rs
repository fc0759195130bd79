//! The simulated account behind the [`Gateway`] trait, its factory, and injected faults.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::world::SimulatedWorld;
use crate::event::{Chat, Event, Source, now_us};
use crate::telegram::gateway::{
    AccountInfo, Cursor, Gateway, GatewayError, GatewayFactory, SourceUpdate,
};

/// After a resume from cursor `c`, positions `c .. c + CATCH_UP_POSITIONS` are delivered at once
/// and marked [`Source::CatchUp`] — what getDifference would return after downtime. The gateway
/// tracks nothing across restarts, so this fixed allowance stands in for "what was missed".
pub const CATCH_UP_POSITIONS: u64 = 64;

/// A failure to inject into a gateway call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Fails with [`GatewayError::FloodWait`].
    FloodWait {
        /// Seconds Telegram asks to wait.
        seconds: u64,
    },
    /// Fails with [`GatewayError::PeerFlood`] (`PEER_FLOOD`: limited for an unstated while).
    PeerFlood,
    /// Fails with [`GatewayError::Network`].
    Network,
    /// Fails with [`GatewayError::Revoked`] (`SESSION_REVOKED`).
    Revoked,
    /// Fails with [`GatewayError::Duplicated`] (`AUTH_KEY_DUPLICATED`).
    Duplicated,
    /// Hangs this long (on tokio time), then the call proceeds normally.
    Stall(Duration),
}

/// Which gateway call a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCall {
    /// Whichever call comes next.
    Any,
    /// [`Gateway::connect`].
    Connect,
    /// [`Gateway::catch_up`].
    CatchUp,
    /// [`Gateway::next_update`].
    NextUpdate,
    /// [`Gateway::commit`].
    Commit,
    /// [`Gateway::history`].
    History,
}

#[derive(Debug)]
struct Planned {
    account_id: Option<String>,
    call: FaultCall,
    fault: Fault,
}

/// One gateway call of an account whose calls are recorded ([`SimulatorFaults::record_calls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// Which call.
    pub call: FaultCall,
    /// When it was made (µs since the epoch), before any injected fault or stall.
    pub at_us: i64,
    /// Whether an injected fault fired on it.
    pub faulted: bool,
}

#[derive(Debug, Default)]
struct FaultQueue {
    /// Length of `queue`, readable without the lock (the common case is an empty queue).
    pending: AtomicUsize,
    queue: Mutex<VecDeque<Planned>>,
    /// Number of accounts in `recorded`, readable without the lock (usually none).
    recording: AtomicUsize,
    recorded: Mutex<HashMap<String, Vec<CallRecord>>>,
}

/// A shared handle that makes upcoming gateway calls fail or stall, for tests of the account
/// actor. Each injected fault fires once, on the first matching call, in injection order.
#[derive(Debug, Clone, Default)]
pub struct SimulatorFaults {
    inner: Arc<FaultQueue>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimulatorFaults {
    /// A handle with no faults planned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call of any gateway fail with `fault`.
    pub fn fail_next(&self, fault: Fault) {
        self.inject(None, FaultCall::Any, fault);
    }

    /// Makes the next `call` of the gateway of `account_id` (any account if `None`) fail with
    /// `fault`.
    pub fn inject(&self, account_id: Option<&str>, call: FaultCall, fault: Fault) {
        let mut queue = lock(&self.inner.queue);
        queue.push_back(Planned {
            account_id: account_id.map(str::to_string),
            call,
            fault,
        });
        self.inner.pending.store(queue.len(), Ordering::Release);
    }

    /// Faults planned and not yet fired.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Drops every planned fault.
    pub fn clear(&self) {
        let mut queue = lock(&self.inner.queue);
        queue.clear();
        self.inner.pending.store(0, Ordering::Release);
    }

    /// Records every later gateway call of `account_id` (which call, when, whether a fault
    /// fired), so a test can check afterwards what the account did during a span of time
    /// instead of sampling its state at a moment that may already be past that span.
    pub fn record_calls(&self, account_id: &str) {
        let mut recorded = lock(&self.inner.recorded);
        recorded.entry(account_id.to_string()).or_default();
        self.inner
            .recording
            .store(recorded.len(), Ordering::Release);
    }

    /// The calls of `account_id` recorded so far, oldest first (none unless
    /// [`SimulatorFaults::record_calls`] was called for it).
    pub fn calls(&self, account_id: &str) -> Vec<CallRecord> {
        lock(&self.inner.recorded)
            .get(account_id)
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, account_id: &str, call: FaultCall, faulted: bool) {
        if self.inner.recording.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(calls) = lock(&self.inner.recorded).get_mut(account_id) {
            calls.push(CallRecord {
                call,
                at_us: now_us(),
                faulted,
            });
        }
    }

    fn take(&self, account_id: &str, call: FaultCall) -> Option<Fault> {
        if self.inner.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = lock(&self.inner.queue);
        let at = queue.iter().position(|p| {
            p.account_id.as_deref().is_none_or(|a| a == account_id)
                && (p.call == FaultCall::Any || p.call == call)
        })?;
        let planned = queue.remove(at);
        self.inner.pending.store(queue.len(), Ordering::Release);
        planned.map(|p| p.fault)
    }

    async fn check(&self, account_id: &str, call: FaultCall) -> Result<(), GatewayError> {
        let fault = self.take(account_id, call);
        self.record(account_id, call, fault.is_some());
        match fault {
            None => Ok(()),
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Some(Fault::FloodWait { seconds }) => Err(GatewayError::FloodWait { seconds }),
            Some(Fault::PeerFlood) => Err(GatewayError::PeerFlood),
            Some(Fault::Network) => Err(GatewayError::Network(
                "connection reset (simulated)".to_string(),
            )),
            Some(Fault::Revoked) => Err(GatewayError::Revoked(
                "SESSION_REVOKED (simulated)".to_string(),
            )),
            Some(Fault::Duplicated) => Err(GatewayError::Duplicated),
        }
    }
}

/// Committed positions by account index, shared by the gateways of one factory.
type CommitBook = Arc<Mutex<HashMap<u32, u64>>>;

/// Where a started stream stands.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The next position to hand out.
    next: u64,
    /// Positions below this are catch-up: delivered at once, marked [`Source::CatchUp`].
    catch_up_until: u64,
    /// When `catch_up` was called plus the account's [`phase`]; live positions are paced from
    /// here.
    started: Instant,
}

/// Where in the tick interval (1 / rate) account `index`'s live positions fall: the accounts'
/// phases are spread evenly over it (account `i` of `n` at `i / n` of the interval), so a fleet
/// started together does not tick together — ten thousand idle accounts would otherwise all
/// wake in the same instant, and latency would measure the drain of that burst. Deterministic:
/// the same index and config give the same phase; account 0's is 0.
fn phase(world: &SimulatedWorld, index: u32) -> Duration {
    let cfg = world.config();
    let share = f64::from(index) / f64::from(cfg.accounts.max(1));
    Duration::try_from_secs_f64(share / cfg.rate).unwrap_or(Duration::ZERO)
}

/// One simulated account behind the [`Gateway`] trait: replays its world stream from a cursor
/// (the next position, in decimal), paced at the configured rate on tokio time.
///
/// `catch_up(None)` starts at position 0 (the world begins with the account's first start);
/// `catch_up(Some(c))` re-delivers from position `c`, the first [`CATCH_UP_POSITIONS`] at once and
/// marked [`Source::CatchUp`], then paces live positions from the moment of the call plus the
/// account's phase (accounts spread evenly over the tick interval: see [`phase`]). `history`
/// sees the positions before the current one. Calls out of order (no `connect` before
/// `catch_up`, no `catch_up` before `next_update`, a commit beyond what was handed out or behind
/// an earlier commit) fail with [`GatewayError::Other`], so account-actor bugs surface in tests.
#[derive(Debug)]
pub struct SimulatedGateway {
    world: Arc<SimulatedWorld>,
    account_id: String,
    index: Option<u32>,
    faults: SimulatorFaults,
    commits: CommitBook,
    connected: bool,
    stream: Option<Stream>,
    committed: Option<u64>,
}

fn parse_position(what: &str, text: &str) -> Result<u64, GatewayError> {
    text.parse().map_err(|_| {
        GatewayError::Other(format!(
            "{what} {text:?} is not a simulated cursor (a decimal position)"
        ))
    })
}

impl SimulatedGateway {
    /// The gateway of `account_id` in `world` (connect fails as revoked if there is no such
    /// account), with its own fault handle and commit record.
    pub fn new(world: Arc<SimulatedWorld>, account_id: &str, faults: SimulatorFaults) -> Self {
        Self::with_commits(world, account_id, faults, CommitBook::default())
    }

    fn with_commits(
        world: Arc<SimulatedWorld>,
        account_id: &str,
        faults: SimulatorFaults,
        commits: CommitBook,
    ) -> Self {
        let index = world.account_index(account_id);
        SimulatedGateway {
            world,
            account_id: account_id.to_string(),
            index,
            faults,
            commits,
            connected: false,
            stream: None,
            committed: None,
        }
    }

    /// The last position committed through this gateway.
    pub fn committed(&self) -> Option<u64> {
        self.committed
    }

    /// The next position this gateway will hand out (0 before `catch_up`).
    pub fn position(&self) -> u64 {
        self.stream.map_or(0, |s| s.next)
    }

    fn connected_index(&self) -> Result<u32, GatewayError> {
        match (self.connected, self.index) {
            (true, Some(index)) => Ok(index),
            _ => Err(GatewayError::Other(
                "simulated gateway: call connect first".to_string(),
            )),
        }
    }

    async fn do_connect(&mut self) -> Result<AccountInfo, GatewayError> {
        self.faults
            .check(&self.account_id, FaultCall::Connect)
            .await?;
        let index = self.index.ok_or_else(|| {
            GatewayError::Revoked("AUTH_KEY_UNREGISTERED (not a simulated account)".to_string())
        })?;
        self.connected = true;
        Ok(self.world.account_info(index))
    }

    async fn do_catch_up(&mut self, from: Option<Cursor>) -> Result<(), GatewayError> {
        self.faults
            .check(&self.account_id, FaultCall::CatchUp)
            .await?;
        let index = self.connected_index()?;
        let (next, catch_up_until) = match from {
            None => (0, 0),
            Some(Cursor(c)) => {
                let next = parse_position("cursor", &c)?;
                (next, next.saturating_add(CATCH_UP_POSITIONS))
            }
        };
        self.stream = Some(Stream {
            next,
            catch_up_until,
            started: Instant::now() + phase(&self.world, index),
        });
        Ok(())
    }

    async fn do_next_update(&mut self) -> Result<Option<SourceUpdate>, GatewayError> {
        self.faults
            .check(&self.account_id, FaultCall::NextUpdate)
            .await?;
        let index = self.connected_index()?;
        let stream = self.stream.ok_or_else(|| {
            GatewayError::Other("simulated gateway: call catch_up first".to_string())
        })?;
        let n = stream.next;
        let limit = self.world.config().messages_per_account;
        if limit != 0 && n >= limit {
            return Ok(None);
        }
        let live = n >= stream.catch_up_until;
        if live {
            let offset = self
                .world
                .schedule(n)
                .saturating_sub(self.world.schedule(stream.catch_up_until));
            if let Some(due) = stream.started.checked_add(offset)
                && Instant::now() < due
            {
                tokio::time::sleep_until(due).await;
            }
        }
        // Nothing changes before this point, so dropping the future while it sleeps loses nothing.
        let mut position = self.world.event_at(index, n);
        let observed = now_us();
        let source = if live { Source::Live } else { Source::CatchUp };
        for e in &mut position.events {
            e.source = source;
            e.observed_at_us = observed;
        }
        if let Some(s) = &mut self.stream {
            s.next = n + 1;
        }
        Ok(Some(SourceUpdate {
            events: position.events,
            cursor: Cursor((n + 1).to_string()),
        }))
    }

    async fn do_commit(&mut self, cursor: Cursor) -> Result<(), GatewayError> {
        self.faults
            .check(&self.account_id, FaultCall::Commit)
            .await?;
        let index = self.connected_index()?;
        let at = parse_position("cursor", &cursor.0)?;
        let handed_out = self.position();
        if at > handed_out {
            return Err(GatewayError::Other(format!(
                "commit of position {at} beyond what was handed out ({handed_out})"
            )));
        }
        if let Some(prev) = self.committed
            && at < prev
        {
            return Err(GatewayError::Other(format!(
                "commit of position {at} goes back behind {prev}"
            )));
        }
        self.committed = Some(at);
        lock(&self.commits).insert(index, at);
        Ok(())
    }

    async fn do_history(
        &mut self,
        chat: Chat,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Event>, GatewayError> {
        self.faults
            .check(&self.account_id, FaultCall::History)
            .await?;
        let index = self.connected_index()?;
        let after = after
            .map(|a| parse_position("after_message_id", &a))
            .transpose()?;
        let mut events = self
            .world
            .history(index, &chat.id, after, self.position(), limit)
            .ok_or_else(|| GatewayError::Other("CHANNEL_INVALID (no such chat)".to_string()))?;
        let observed = now_us();
        for e in &mut events {
            e.observed_at_us = observed;
        }
        Ok(events)
    }
}

impl Gateway for SimulatedGateway {
    fn connect(&mut self) -> BoxFuture<'_, Result<AccountInfo, GatewayError>> {
        Box::pin(self.do_connect())
    }

    fn catch_up(&mut self, from: Option<Cursor>) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.do_catch_up(from))
    }

    fn next_update(&mut self) -> BoxFuture<'_, Result<Option<SourceUpdate>, GatewayError>> {
        Box::pin(self.do_next_update())
    }

    fn commit(&mut self, cursor: Cursor) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(self.do_commit(cursor))
    }

    fn history(
        &mut self,
        chat: Chat,
        after_message_id: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Event>, GatewayError>> {
        Box::pin(self.do_history(chat, after_message_id, limit))
    }
}

/// Makes [`SimulatedGateway`]s that share one world, one fault handle and one commit record.
#[derive(Debug, Clone)]
pub struct SimulatedFactory {
    world: Arc<SimulatedWorld>,
    faults: SimulatorFaults,
    commits: CommitBook,
}

impl SimulatedFactory {
    /// A factory over `world`, injecting faults from `faults`.
    pub fn new(world: Arc<SimulatedWorld>, faults: SimulatorFaults) -> Self {
        SimulatedFactory {
            world,
            faults,
            commits: CommitBook::default(),
        }
    }

    /// The shared world (ground truth for the demo and tests).
    pub fn world(&self) -> &Arc<SimulatedWorld> {
        &self.world
    }

    /// The shared fault handle.
    pub fn faults(&self) -> &SimulatorFaults {
        &self.faults
    }

    /// The gateway of `account_id`, as a concrete type.
    pub fn gateway(&self, account_id: &str) -> SimulatedGateway {
        SimulatedGateway::with_commits(
            self.world.clone(),
            account_id,
            self.faults.clone(),
            self.commits.clone(),
        )
    }

    /// The last position committed for `account_id` by any gateway of this factory.
    pub fn committed(&self, account_id: &str) -> Option<u64> {
        let index = self.world.account_index(account_id)?;
        lock(&self.commits).get(&index).copied()
    }
}

impl GatewayFactory for SimulatedFactory {
    fn create(&self, account_id: &str) -> Box<dyn Gateway> {
        Box::new(self.gateway(account_id))
    }
}
