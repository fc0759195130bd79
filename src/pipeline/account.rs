//! The account actor: one per account, from its source to `TG_RAW`.
//!
//! A reader task owns the [`Gateway`] and hands updates over a bounded channel, so when the
//! publish window is full the reader stops pulling from the source (invariant 6; Telegram's
//! catch-up recovers the rest). The actor publishes every event with `Nats-Msg-Id = event_id`,
//! takes the PubAcks strictly in order, and commits the source cursor — to the account's record
//! in `TG_CHECKPOINTS` (which any node can read), a flushed checkpoint in this node's event log
//! (the audit of what it did), then `Gateway::commit` — only past updates whose every event has
//! a PubAck (invariant 1). A publish that fails is sent again; the Msg-Id makes that idempotent.
//! Each step waits for a PubAck, an update or the checkpoint timer; with no PubAck outstanding
//! and nothing to checkpoint the actor parks instead (no timer, its mailbox free) and the reader
//! wakes it when it hands over the next update ([`super::handoff`]), so an idle account costs
//! no wake-ups.
//!
//! The `TG_CHECKPOINTS` record is written only by the account's owner
//! ([`crate::cluster::checkpoints`]): at start the actor claims it with its epoch and resumes from
//! the cursor stored there (from its event log's latest checkpoint when the store has none yet,
//! a data dir from before the store), so a node whose data dir was lost resumes where the
//! account left off. Once a newer owner has written the record (or the session), the write is
//! refused and the actor stops for good (`stopped`, an `account.stale_owner` audit record): the
//! account runs elsewhere now.
//!
//! The actor tracks its [`Lifecycle`] (`connecting → catching_up → running`, and the side states
//! below), reports it in [`AccountStatus`], logs every transition and counts it in
//! `tgingest_accounts{state}` (through the [`LifecycleTally`](super::stats::LifecycleTally)).
//! What it does about each [`GatewayError`], from any gateway call:
//!
//! * `FloodWait` up to [`FloodSettings::sleep_max`]: waits in place — no state change;
//!   longer, and `PeerFlood` (for [`FloodSettings::peer_flood_park`]): parks the account in
//!   `flood_wait(until)` with an `account.flood_wait` audit record. Either way the reader stops
//!   reading and the actor schedules its own wake-up ([`AccountMsg::Resume`], or a new
//!   [`AccountMsg::Start`] if connecting was refused) with `send_after`, so it keeps taking
//!   PubAcks, checkpointing and answering [`AccountMsg::Status`] meanwhile.
//! * `Revoked` / `Duplicated`: takes the PubAcks still outstanding (bounded), checkpoints what
//!   they cover, records `account.revoked` / `account.duplicated`, and stops with a
//!   [`PermanentFailure`], so the supervisor never restarts it.
//! * `StaleOwner` (a newer owner wrote the session): stops for good as above, in `stopped`.
//! * `Network` (and anything else): settles the same way, then fails; the supervisor restarts it
//!   with backoff and it resumes from the checkpoint (`tgingest_reconnects_total`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::mpsc;

use super::PipelineStats;
use super::handoff;
use super::stats::LifecycleGuard;
use crate::accounts::Lifecycle;
use crate::bus::{Bus, raw_subject};
use crate::cluster::checkpoints::{CheckpointStore, CheckpointWriter};
use crate::cluster::fenced::{FencedError, Owner};
use crate::config::TelegramConfig;
use crate::event::{Event, Source, now_us};
use crate::eventlog::{AuditEntry, Checkpoint, Durability, EventLog};
use crate::observability as obs;
use crate::supervision::PermanentFailure;
use crate::telegram::gateway::{Cursor, Gateway, GatewayError, GatewayFactory, SourceUpdate};

/// Checkpoint scope of the source cursor in the event log.
pub const SOURCE_SCOPE: &str = "source";

pub use crate::observability::{
    METRIC_FLOOD_WAIT_SECONDS, METRIC_FLOOD_WAITS, METRIC_RECONNECTS, METRIC_TERMINAL,
};

/// Audit action of a parked account.
pub const AUDIT_FLOOD_WAIT: &str = "account.flood_wait";
/// Audit action of a revoked session.
pub const AUDIT_REVOKED: &str = "account.revoked";
/// Audit action of a duplicated auth key.
pub const AUDIT_DUPLICATED: &str = "account.duplicated";
/// Audit action of an account stopped because a newer owner wrote its state.
pub const AUDIT_STALE_OWNER: &str = "account.stale_owner";

/// How long a failing actor waits for the PubAcks still outstanding before it checkpoints.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest park honoured; Telegram's own waits stay far below it.
const MAX_PARK: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the account actors treat flood waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodSettings {
    /// Waits up to this long are waited out in place, without a state change
    /// (`telegram.flood_sleep_max`); longer ones park the account in `flood_wait`.
    pub sleep_max: Duration,
    /// How long PEER_FLOOD parks an account (`telegram.peer_flood_park`).
    pub peer_flood_park: Duration,
}

impl FloodSettings {
    /// The settings of the `[telegram]` config section.
    pub fn from_config(telegram: &TelegramConfig) -> Self {
        FloodSettings {
            sleep_max: telegram.flood_sleep_max.into(),
            peer_flood_park: telegram.peer_flood_park.into(),
        }
    }
}

impl Default for FloodSettings {
    fn default() -> Self {
        Self::from_config(&TelegramConfig::default())
    }
}

/// What an account actor needs; cloned at every (re)start.
#[derive(Clone)]
pub struct AccountArgs {
    pub account_id: String,
    /// The node the actor runs on (the owner its state writes name).
    pub node_id: String,
    pub factory: Arc<dyn GatewayFactory>,
    pub bus: Bus,
    pub eventlog: Arc<EventLog>,
    pub stats: Arc<PipelineStats>,
    /// Events published and not yet acknowledged, at most.
    pub window: usize,
    /// How often the acknowledged cursor is checkpointed and committed to the source.
    pub checkpoint_every: Duration,
    /// ... or sooner, once this many events were acknowledged since the last checkpoint, which
    /// bounds what a crash makes the source deliver again at high rates.
    pub checkpoint_after_events: u64,
    /// How flood waits are treated (from `[telegram]`).
    pub flood: FloodSettings,
    /// The owner's epoch: the account claim's epoch in a cluster, 0 on a single node. Every
    /// write of the account's state carries it and is refused once a newer owner has written.
    pub epoch: u64,
    /// Told when the session ends for good, before the actor stops (the registry marks it).
    pub ended: Option<Arc<dyn EndedSink>>,
}

/// Told when an account's session ended for good (`revoked` or `duplicated`), so that the
/// decision outlives the actor that saw it: no restart and no other node connects the key again.
pub trait EndedSink: Send + Sync {
    /// Records that `account_id` ended in `state`; waited for before the actor stops.
    fn ended<'a>(&'a self, account_id: &'a str, state: &'a Lifecycle) -> BoxFuture<'a, ()>;
}

/// Messages of the account actor.
pub enum AccountMsg {
    /// Connect and start reading (sent to itself after start, and after a flood wait that
    /// refused the connection).
    Start,
    /// Do one step of work (sent to itself).
    Pump,
    /// A flood wait is over: read from the source again (sent to itself with `send_after`).
    Resume,
    /// Report the observable state.
    Status(RpcReplyPort<AccountStatus>),
}

/// The observable state of one account actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountStatus {
    pub account_id: String,
    /// Coarse: `connecting`, `running` (reading) or `source_ended`; see `lifecycle`.
    pub state: &'static str,
    /// Where the account stands.
    pub lifecycle: Lifecycle,
    pub in_flight: usize,
    pub committed: Option<String>,
    pub acked: Option<String>,
    pub source_ended: bool,
    /// When the last update with events came from the source (µs since the epoch).
    pub last_event_us: Option<i64>,
    /// While a flood wait (short or parked) is in progress: when it ends (µs since the epoch).
    pub flood_wait_until_us: Option<i64>,
}

/// The actor (stateless; the state is [`AccountState`]).
#[derive(Clone, Copy, Default)]
pub struct AccountActor;

type AckFuture = BoxFuture<'static, Result<PublishAck, PublishError>>;

/// One event waiting for its PubAck, kept so it can be published again.
struct Pending {
    subject: String,
    event_id: String,
    payload: bytes::Bytes,
}

/// Stops the reader task when the actor goes, even after a panic (post_stop is skipped then).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the reader task hands the actor: an update, the end of the source, or an error.
type SourceItem = Result<Option<SourceUpdate>, GatewayError>;

/// The account actor's state.
pub struct AccountState {
    args: AccountArgs,
    flood: FloodSettings,
    /// This actor's entry in the shared lifecycle tally.
    lifecycle: LifecycleGuard,
    /// A gateway kept between `Start` attempts (a flood wait refused `connect` or `catch_up`),
    /// and whether it is connected.
    idle_gateway: Option<(Box<dyn Gateway>, bool)>,
    /// From the reader; the actor parks on it when it has nothing to wait for.
    updates: Option<handoff::Receiver<SourceItem>>,
    commits: Option<mpsc::UnboundedSender<Cursor>>,
    /// Lets the reader read again after a flood wait.
    resume: Option<mpsc::UnboundedSender<()>>,
    _reader: Option<AbortOnDrop>,
    /// PubAcks, in publish order, each with its event (for a re-publish).
    acks: FuturesOrdered<BoxFuture<'static, (Pending, Result<PublishAck, PublishError>)>>,
    /// Updates not yet fully acknowledged: their cursor and how many events still wait.
    open_updates: VecDeque<(Cursor, usize)>,
    acked: Option<Cursor>,
    committed: Option<Cursor>,
    last_commit: Instant,
    source_ended: bool,
    publish_backoff: Duration,
    /// Events acknowledged since the last checkpoint.
    acked_since_commit: u64,
    last_event_us: Option<i64>,
    /// The end of the flood wait in progress, if any.
    flood_wait_until_us: Option<i64>,
    /// The state to return to when a park ends.
    before_park: Option<Lifecycle>,
    /// This owner's writes of the account's `TG_CHECKPOINTS` record, once claimed at the first
    /// `Start`, with the cursor the claim found to resume from.
    checkpoints: Option<(CheckpointWriter, Option<Cursor>)>,
}

/// The PubAck of one publish, timed (`tgingest_publish_latency_seconds`) and counted in the
/// in-flight gauge (`tgingest_publish_inflight`) until it resolves or is dropped.
fn ack_future(
    pending: Pending,
    fut: AckFuture,
) -> BoxFuture<'static, (Pending, Result<PublishAck, PublishError>)> {
    struct InFlight;
    impl Drop for InFlight {
        fn drop(&mut self) {
            metrics::gauge!(obs::METRIC_PUBLISH_INFLIGHT).decrement(1.0);
        }
    }
    metrics::gauge!(obs::METRIC_PUBLISH_INFLIGHT).increment(1.0);
    let in_flight = InFlight;
    let started = Instant::now();
    Box::pin(async move {
        let result = fut.await;
        metrics::histogram!(obs::METRIC_PUBLISH_LATENCY).record(started.elapsed().as_secs_f64());
        drop(in_flight);
        (pending, result)
    })
}

/// Sends one publish; the returned future resolves to its PubAck, sending the event again if
/// the connection drops before that arrives ([`Bus::pub_ack_or_resend`]).
async fn publish(bus: &Bus, pending: &Pending) -> Result<AckFuture, PublishError> {
    let sent_in = bus.connection_drops();
    let ack = bus
        .send_with_id(&pending.subject, &pending.event_id, &pending.payload)
        .await?;
    let bus = bus.clone();
    let (subject, event_id, payload) = (
        pending.subject.clone(),
        pending.event_id.clone(),
        pending.payload.clone(),
    );
    Ok(Box::pin(async move {
        bus.pub_ack_or_resend(ack, sent_in, subject, event_id, payload)
            .await
    }))
}

impl AccountState {
    fn hashed_id(&self) -> String {
        crate::telemetry::hash_id(&self.args.account_id)
    }

    /// Moves to `next`, logging the transition (the tally updates the gauge).
    fn transition(&mut self, next: Lifecycle) {
        let name = next.name();
        if let Some(previous) = self.lifecycle.set(next) {
            tracing::info!(
                account = %self.hashed_id(),
                from = previous.name(),
                to = name,
                "account state"
            );
        }
    }

    /// Publishes one update's events and remembers its cursor.
    async fn take_update(&mut self, update: SourceUpdate) -> Result<(), ActorProcessingErr> {
        self.args.stats.produced.add(update.events.len() as u64);
        self.args
            .stats
            .accounts
            .update(&self.args.account_id, |c| c.source_api_calls += 1);
        if !update.events.is_empty() {
            self.last_event_us = Some(now_us());
            self.record_ingest(&update.events);
            let catching_up = update.events.iter().any(|e| e.source == Source::CatchUp);
            if !catching_up && self.lifecycle.state() == &Lifecycle::CatchingUp {
                self.transition(Lifecycle::Running);
            }
        }
        let count = update.events.len();
        for event in update.events {
            let pending = to_pending(&event)?;
            let fut = self.publish_until_sent(&pending).await;
            self.acks.push_back(ack_future(pending, fut));
        }
        self.open_updates.push_back((update.cursor, count));
        self.close_finished_updates();
        Ok(())
    }

    /// Counts the events of one update (by origin; per account when switched on) and records the
    /// account's progress for the poller.
    fn record_ingest(&self, events: &[Event]) {
        for origin in [Source::Live, Source::CatchUp, Source::Backfill] {
            let n = events.iter().filter(|e| e.source == origin).count() as u64;
            if n > 0 {
                let label = match origin {
                    Source::Live => "live",
                    Source::CatchUp => "catch_up",
                    Source::Backfill => "backfill",
                };
                metrics::counter!(obs::METRIC_EVENTS_INGESTED, "origin" => label).increment(n);
            }
        }
        if obs::per_account() {
            metrics::counter!(obs::METRIC_ACCOUNT_EVENTS, "account" => self.hashed_id())
                .increment(events.len() as u64);
        }
        obs::progress::record_events(&self.args.account_id, events.len() as u64, now_us());
    }

    /// Sends one publish, retrying with backoff while the bus refuses it (NATS down).
    async fn publish_until_sent(&mut self, pending: &Pending) -> AckFuture {
        loop {
            match publish(&self.args.bus, pending).await {
                Ok(fut) => {
                    self.publish_backoff = Duration::from_millis(100);
                    return fut;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?self.publish_backoff, "publish to TG_RAW failed; retrying");
                    metrics::counter!("tgingest_publish_retries_total", "stream" => "TG_RAW")
                        .increment(1);
                    tokio::time::sleep(self.publish_backoff).await;
                    self.publish_backoff = (self.publish_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Books one successful PubAck against the oldest open update.
    fn count_ack(&mut self, ack: &PublishAck) {
        if ack.duplicate {
            self.args.stats.duplicates_bus_raw.add(1);
            metrics::counter!("tgingest_dedupe_drops_total", "layer" => "bus_raw").increment(1);
        } else {
            self.args.stats.published_raw.add(1);
        }
        if let Some(front) = self.open_updates.front_mut() {
            front.1 = front.1.saturating_sub(1);
        }
        self.acked_since_commit += 1;
        self.close_finished_updates();
    }

    /// Handles the oldest PubAck; a failed one is published again at the front of the line.
    async fn take_ack(&mut self, pending: Pending, result: Result<PublishAck, PublishError>) {
        match result {
            Ok(ack) => self.count_ack(&ack),
            Err(e) => {
                tracing::warn!(error = %e, "no PubAck from TG_RAW; publishing again");
                metrics::counter!("tgingest_publish_retries_total", "stream" => "TG_RAW")
                    .increment(1);
                tokio::time::sleep(self.publish_backoff).await;
                self.publish_backoff = (self.publish_backoff * 2).min(Duration::from_secs(5));
                let fut = self.publish_until_sent(&pending).await;
                self.acks.push_front(ack_future(pending, fut));
            }
        }
    }

    fn close_finished_updates(&mut self) {
        while let Some((_, 0)) = self.open_updates.front() {
            if let Some((cursor, _)) = self.open_updates.pop_front() {
                self.acked = Some(cursor);
            }
        }
    }

    fn owner(&self) -> Owner {
        Owner::new(self.args.epoch, &self.args.node_id)
    }

    /// Claims the account's `TG_CHECKPOINTS` record as this owner (once per actor) and returns
    /// the cursor to resume from: the stored one, else this node's latest local checkpoint.
    async fn claim_checkpoints(&mut self) -> Result<Option<Cursor>, ActorProcessingErr> {
        if let Some((_, resume)) = &self.checkpoints {
            return Ok(resume.clone());
        }
        let local = self
            .args
            .eventlog
            .latest_checkpoint(&self.args.account_id, SOURCE_SCOPE)?
            .map(|cp| Cursor(cp.position));
        let store = CheckpointStore::open(&self.args.bus).await?;
        match store
            .claim(&self.args.account_id, &self.owner(), local)
            .await
        {
            Ok((writer, resume)) => {
                self.checkpoints = Some((writer, resume.clone()));
                Ok(resume)
            }
            Err(e @ FencedError::StaleOwner { .. }) => Err(self.stale_owner(&e.to_string()).await),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Checkpoints the acknowledged cursor — to `TG_CHECKPOINTS` as this owner, then flushed to
    /// the event log — and only then tells the source. A checkpoint the store did not answer is
    /// tried again at the next one; a refused one stops the actor.
    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        self.last_commit = Instant::now();
        self.acked_since_commit = 0;
        let Some(cursor) = self.acked.clone() else {
            return Ok(());
        };
        if self.committed.as_ref() == Some(&cursor) {
            return Ok(());
        }
        // The crash test places kills by this line (between PubAck and checkpoint, mid flush).
        tracing::debug!(account = %self.hashed_id(), "writing checkpoint");
        if let Some((writer, _)) = self.checkpoints.as_mut() {
            match writer.write(&cursor).await {
                Ok(_) => {}
                Err(e @ FencedError::StaleOwner { .. }) => {
                    return Err(self.stale_owner(&e.to_string()).await);
                }
                Err(e) if e.is_refusal() => return Err(Box::new(e)),
                Err(e) => {
                    tracing::warn!(account = %self.hashed_id(), error = %e,
                        "cannot store the checkpoint in TG_CHECKPOINTS; trying again at the next one");
                    return Ok(());
                }
            }
        }
        let checkpoint = Checkpoint {
            account_id: self.args.account_id.clone(),
            scope: SOURCE_SCOPE.to_string(),
            position: cursor.0.clone(),
        };
        self.args.eventlog.checkpoint(&checkpoint).await?;
        if let Some(commits) = &self.commits {
            let _ = commits.send(cursor.clone());
        }
        metrics::counter!("connector_checkpoint_saves_total").increment(1);
        let remaining: usize = self.open_updates.iter().map(|(_, n)| *n).sum();
        obs::progress::record_checkpoint(&self.args.account_id, now_us(), remaining as u64);
        self.args
            .stats
            .accounts
            .update(&self.args.account_id, |c| c.checkpoint_saves += 1);
        self.committed = Some(cursor);
        Ok(())
    }

    /// Before the actor stops: takes the PubAcks still outstanding (for at most
    /// [`SETTLE_TIMEOUT`], stopping at the first failed one) and checkpoints what they cover.
    /// Events without a PubAck stay uncommitted, so the source delivers them again.
    async fn settle(&mut self) -> Result<(), ActorProcessingErr> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while !self.acks.is_empty() {
            match tokio::time::timeout_at(deadline, self.acks.next()).await {
                Ok(Some((_, Ok(ack)))) => self.count_ack(&ack),
                Ok(Some((_, Err(e)))) => {
                    tracing::warn!(account = %self.hashed_id(), error = %e, "no PubAck while stopping; the rest stays uncommitted");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(account = %self.hashed_id(), in_flight = self.acks.len(), "PubAcks still outstanding while stopping; they stay uncommitted");
                    break;
                }
            }
        }
        self.commit().await
    }

    async fn audit(&mut self, action: &str, details: BTreeMap<String, String>) {
        let entry = AuditEntry {
            action: action.to_string(),
            actor: "account".to_string(),
            account_id: Some(self.args.account_id.clone()),
            details,
        };
        if let Err(e) = self.args.eventlog.audit(&entry, Durability::Flushed).await {
            // The state change still happens: an account must not keep running (or restart)
            // because the audit log is unwell. The log line says what the record would have.
            tracing::error!(account = %self.hashed_id(), action, error = %e, "cannot write the audit record");
        }
    }

    /// Honours a flood wait (or PEER_FLOOD) reported by any gateway call: nothing is read from
    /// the source until `wake` is delivered to this actor after the wait; a wait longer than
    /// [`FloodSettings::sleep_max`] (and every PEER_FLOOD) parks the account in `flood_wait`.
    async fn flood_wait(
        &mut self,
        myself: &ActorRef<AccountMsg>,
        error: &GatewayError,
        wake: fn() -> AccountMsg,
    ) {
        let (kind, wait, park) = match error {
            GatewayError::PeerFlood => ("peer_flood", self.flood.peer_flood_park, true),
            GatewayError::FloodWait { seconds } => {
                let wait = Duration::from_secs(*seconds);
                ("flood_wait", wait, wait > self.flood.sleep_max)
            }
            _ => return,
        };
        let wait = wait.min(MAX_PARK);
        let until_us = now_us().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
        self.flood_wait_until_us = Some(until_us);
        self.args.stats.flood_waits.add(1);
        self.args.stats.flood_wait_seconds.add(wait.as_secs());
        metrics::counter!(METRIC_FLOOD_WAITS, "kind" => kind).increment(1);
        metrics::counter!(METRIC_FLOOD_WAIT_SECONDS, "kind" => kind).increment(wait.as_secs());
        if park {
            if self.before_park.is_none() {
                self.before_park = Some(self.lifecycle.state().clone());
            }
            self.transition(Lifecycle::FloodWait { until_us });
            let details = BTreeMap::from([
                ("kind".to_string(), kind.to_string()),
                ("seconds".to_string(), wait.as_secs().to_string()),
                ("until_us".to_string(), until_us.to_string()),
            ]);
            self.audit(AUDIT_FLOOD_WAIT, details).await;
        } else {
            tracing::info!(account = %self.hashed_id(), seconds = wait.as_secs(), kind, "short flood wait; waiting in place");
        }
        myself.send_after(wait, wake);
    }

    /// Ends a flood wait: back to the state before it, and lets the reader read again.
    fn resume(&mut self) {
        self.flood_wait_until_us = None;
        if let Some(previous) = self.before_park.take() {
            self.transition(previous);
        }
        if let Some(resume) = &self.resume {
            let _ = resume.send(());
        }
    }

    /// The error the actor stops with for a gateway error that is not a wait: terminal errors
    /// are recorded and stop it for good; the rest make the supervisor restart it.
    async fn fail(&mut self, error: GatewayError) -> ActorProcessingErr {
        if let GatewayError::StaleOwner(why) = &error {
            // A newer owner has the account: nothing more is written here, not even a checkpoint.
            return self.stale_owner(why).await;
        }
        if let Err(e) = self.settle().await {
            tracing::error!(account = %self.hashed_id(), error = %e, "cannot checkpoint while stopping");
        }
        let (next, action, rpc) = match &error {
            GatewayError::Revoked(name) => (
                Lifecycle::Revoked {
                    reason: name.clone(),
                },
                AUDIT_REVOKED,
                name.clone(),
            ),
            GatewayError::Duplicated => (
                Lifecycle::Duplicated,
                AUDIT_DUPLICATED,
                "AUTH_KEY_DUPLICATED".to_string(),
            ),
            GatewayError::NotOwned(_) => {
                tracing::warn!(account = %self.hashed_id(), error = %error, "stopping an account this node does not own");
                return Box::new(PermanentFailure::new(error.to_string()));
            }
            GatewayError::Network(_) => {
                self.args.stats.reconnects.add(1);
                metrics::counter!(METRIC_RECONNECTS).increment(1);
                tracing::warn!(account = %self.hashed_id(), error = %error, "network error; the supervisor reconnects after a backoff");
                return Box::new(error);
            }
            _ => {
                tracing::warn!(account = %self.hashed_id(), error = %error, "gateway error; the supervisor restarts the account");
                return Box::new(error);
            }
        };
        let state = next.name();
        self.flood_wait_until_us = None;
        if let Some(sink) = &self.args.ended {
            sink.ended(&self.args.account_id, &next).await;
        }
        self.transition(next);
        metrics::counter!(METRIC_TERMINAL, "state" => state).increment(1);
        let details = BTreeMap::from([
            ("rpc".to_string(), rpc),
            ("committed".to_string(), self.committed_position()),
        ]);
        self.audit(action, details).await;
        tracing::error!(account = %self.hashed_id(), state, "account stopped for good; it needs a new login");
        Box::new(PermanentFailure::new(format!("account {state}: {error}")))
    }

    /// The committed cursor, for audit records ("" before the first commit).
    fn committed_position(&self) -> String {
        self.committed
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default()
    }

    /// Stops the actor for good because a newer owner wrote the account's state (`why`): the
    /// account runs elsewhere now, so it goes to `stopped` with an `account.stale_owner` record
    /// and the supervisor does not restart it.
    async fn stale_owner(&mut self, why: &str) -> ActorProcessingErr {
        self.flood_wait_until_us = None;
        self.transition(Lifecycle::Stopped);
        let details = BTreeMap::from([
            ("epoch".to_string(), self.args.epoch.to_string()),
            ("committed".to_string(), self.committed_position()),
        ]);
        self.audit(AUDIT_STALE_OWNER, details).await;
        tracing::warn!(account = %self.hashed_id(), epoch = self.args.epoch, error = why,
            "a newer owner wrote this account's state; it stops here");
        Box::new(PermanentFailure::new(format!("stale owner: {why}")))
    }
}

fn to_pending(event: &Event) -> Result<Pending, ActorProcessingErr> {
    Ok(Pending {
        subject: raw_subject(&event.account_id, event.chat.kind),
        event_id: event.event_id.clone(),
        payload: crate::codec::encode(event)?.into(),
    })
}

fn is_wait(e: &GatewayError) -> bool {
    matches!(e, GatewayError::FloodWait { .. } | GatewayError::PeerFlood)
}

/// Owns the gateway: reads updates into the bounded channel, applies commits in between.
///
/// After a flood wait it reports the error and reads nothing until the actor says `resume`
/// (commits that arrive meanwhile are applied after it). After any other error, or the end of
/// the source, it only applies commits until the actor goes.
async fn read_source(
    mut gateway: Box<dyn Gateway>,
    updates: handoff::Sender<SourceItem>,
    mut commits: mpsc::UnboundedReceiver<Cursor>,
    mut resume: mpsc::UnboundedReceiver<()>,
) {
    let mut latest: Option<Cursor> = None;
    loop {
        while let Ok(cursor) = commits.try_recv() {
            latest = Some(cursor);
        }
        if let Some(cursor) = latest.take()
            && let Err(e) = gateway.commit(cursor.clone()).await
        {
            if is_wait(&e) {
                latest = Some(cursor);
                if !wait_for_resume(e, &updates, &mut commits, &mut resume, &mut latest).await {
                    return;
                }
                continue;
            }
            let _ = updates.send(Err(e)).await;
            return;
        }
        match gateway.next_update().await {
            Err(e) if is_wait(&e) => {
                if !wait_for_resume(e, &updates, &mut commits, &mut resume, &mut latest).await {
                    return;
                }
            }
            Ok(Some(update)) => {
                if updates.send(Ok(Some(update))).await.is_err() {
                    return;
                }
            }
            end => {
                if updates.send(end).await.is_err() {
                    return;
                }
                // Keep applying commits after the source ended, so the last one reaches it.
                while let Some(cursor) = commits.recv().await {
                    let _ = gateway.commit(cursor).await;
                }
                return;
            }
        }
    }
}

/// Reports a flood wait and holds the reader until the actor resumes it; `false` when the actor
/// is gone.
async fn wait_for_resume(
    error: GatewayError,
    updates: &handoff::Sender<SourceItem>,
    commits: &mut mpsc::UnboundedReceiver<Cursor>,
    resume: &mut mpsc::UnboundedReceiver<()>,
    latest: &mut Option<Cursor>,
) -> bool {
    if updates.send(Err(error)).await.is_err() {
        return false;
    }
    loop {
        tokio::select! {
            go = resume.recv() => return go.is_some(),
            cursor = commits.recv() => match cursor {
                Some(cursor) => *latest = Some(cursor),
                None => return false,
            },
        }
    }
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AccountMsg>,
        args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        myself.cast(AccountMsg::Start)?;
        let lifecycle = args
            .stats
            .lifecycles
            .track(&args.account_id, Lifecycle::Connecting);
        tracing::info!(account = %crate::telemetry::hash_id(&args.account_id), to = "connecting", "account state");
        Ok(AccountState {
            flood: args.flood,
            args,
            lifecycle,
            idle_gateway: None,
            updates: None,
            commits: None,
            resume: None,
            _reader: None,
            acks: FuturesOrdered::new(),
            open_updates: VecDeque::new(),
            acked: None,
            committed: None,
            last_commit: Instant::now(),
            source_ended: false,
            publish_backoff: Duration::from_millis(100),
            acked_since_commit: 0,
            last_event_us: None,
            flood_wait_until_us: None,
            before_park: None,
            checkpoints: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        msg: AccountMsg,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountMsg::Start => self.start(&myself, state).await?,
            AccountMsg::Pump => {
                if self.pump(&myself, state).await? {
                    // Nothing to wait for: the reader casts the next `Pump` when it hands over.
                    if !state.updates.as_ref().is_none_or(|u| u.park()) {
                        myself.cast(AccountMsg::Pump)?;
                    }
                } else if !(state.source_ended
                    && state.acks.is_empty()
                    && state.acked == state.committed)
                {
                    myself.cast(AccountMsg::Pump)?;
                } else {
                    tracing::info!(account = %state.hashed_id(), "source ended; everything committed");
                }
            }
            AccountMsg::Resume => state.resume(),
            AccountMsg::Status(reply) => {
                let _ = reply.send(AccountStatus {
                    account_id: state.args.account_id.clone(),
                    state: if state.source_ended {
                        "source_ended"
                    } else if state.updates.is_some() {
                        "running"
                    } else {
                        "connecting"
                    },
                    lifecycle: state.lifecycle.state().clone(),
                    in_flight: state.acks.len(),
                    committed: state.committed.as_ref().map(|c| c.0.clone()),
                    acked: state.acked.as_ref().map(|c| c.0.clone()),
                    source_ended: state.source_ended,
                    last_event_us: state.last_event_us,
                    flood_wait_until_us: state.flood_wait_until_us,
                });
            }
        }
        Ok(())
    }
}

impl AccountActor {
    /// Connects, catches up from the checkpoint and starts the reader. A flood wait on the way
    /// schedules another `Start` after it (keeping the gateway); other errors stop the actor.
    async fn start(
        &self,
        myself: &ActorRef<AccountMsg>,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        state.flood_wait_until_us = None;
        if let Some(previous) = state.before_park.take() {
            state.transition(previous);
        }
        // The state first: a newer owner's claim stops this one before it connects.
        let resume = state.claim_checkpoints().await?;
        let (mut gateway, mut connected) = state.idle_gateway.take().unwrap_or_else(|| {
            let owner = state.owner();
            (
                state
                    .args
                    .factory
                    .create_owned(&state.args.account_id, &owner),
                false,
            )
        });
        let mut result = Ok(());
        if !connected {
            result = gateway.connect().await.map(|_| ());
            connected = result.is_ok();
        }
        if result.is_ok() {
            result = gateway.catch_up(resume.clone()).await;
        }
        if let Err(e) = result {
            if is_wait(&e) {
                state.idle_gateway = Some((gateway, connected));
                state.flood_wait(myself, &e, || AccountMsg::Start).await;
                return Ok(());
            }
            return Err(state.fail(e).await);
        }
        state.committed = resume.clone();
        state.acked = resume.clone();
        state.transition(if resume.is_some() {
            Lifecycle::CatchingUp
        } else {
            Lifecycle::Running
        });
        metrics::gauge!(obs::METRIC_PUBLISH_WINDOW).set(state.args.window as f64);
        let me = myself.clone();
        let (tx, rx) = handoff::channel(state.args.window, move || {
            let _ = me.cast(AccountMsg::Pump);
        });
        let (commit_tx, commit_rx) = mpsc::unbounded_channel();
        let (resume_tx, resume_rx) = mpsc::unbounded_channel();
        state._reader = Some(AbortOnDrop(tokio::spawn(read_source(
            gateway, tx, commit_rx, resume_rx,
        ))));
        state.updates = Some(rx);
        state.commits = Some(commit_tx);
        state.resume = Some(resume_tx);
        myself.cast(AccountMsg::Pump)?;
        Ok(())
    }

    /// One step: take a PubAck, or an update if the window has room, or commit when due.
    /// `true` when there was nothing to do and nothing to wait for but the source — no PubAck
    /// outstanding, nothing to checkpoint — so the actor parks instead of arming a timer.
    async fn pump(
        &self,
        myself: &ActorRef<AccountMsg>,
        state: &mut AccountState,
    ) -> Result<bool, ActorProcessingErr> {
        let room = state.acks.len() < state.args.window && !state.source_ended;
        // A full window is backpressure: the time until the next step is spent waiting on PubAcks.
        let blocked = (!room && !state.source_ended).then(Instant::now);
        let due = state.checkpoint_due();
        let step = {
            let Some(updates) = state.updates.as_mut() else {
                return Ok(false);
            };
            let acks = &mut state.acks;
            let waiting = !acks.is_empty();
            if !waiting && room && state.acked == state.committed {
                match updates.try_recv() {
                    Ok(item) => Step::Update(Some(item)),
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(true),
                    Err(mpsc::error::TryRecvError::Disconnected) => Step::Update(None),
                }
            } else {
                tokio::select! {
                    biased;
                    Some((pending, result)) = acks.next(), if waiting => Step::Ack(pending, result),
                    next = updates.recv(), if room => Step::Update(next),
                    _ = tokio::time::sleep(due) => Step::Tick,
                }
            }
        };
        if let Some(since) = blocked {
            metrics::histogram!(obs::METRIC_BACKPRESSURE, "stage" => "account")
                .record(since.elapsed().as_secs_f64());
        }
        match step {
            Step::Ack(pending, result) => state.take_ack(pending, result).await,
            Step::Update(Some(Ok(Some(update)))) => state.take_update(update).await?,
            Step::Update(Some(Ok(None)) | None) => {
                state.source_ended = true;
                if state.lifecycle.state() == &Lifecycle::CatchingUp {
                    state.transition(Lifecycle::Running);
                }
            }
            Step::Update(Some(Err(e))) if is_wait(&e) => {
                // The reader holds until `Resume`; meanwhile PubAcks and `Status` go on.
                state.flood_wait(myself, &e, || AccountMsg::Resume).await;
            }
            Step::Update(Some(Err(e))) => return Err(state.fail(e).await),
            Step::Tick => {}
        }
        if state.checkpoint_due().is_zero() || (state.source_ended && state.acks.is_empty()) {
            state.commit().await?;
        }
        Ok(false)
    }
}

/// What one pump step found.
enum Step {
    Ack(Pending, Result<PublishAck, PublishError>),
    Update(Option<SourceItem>),
    Tick,
}

impl AccountState {
    fn checkpoint_due(&self) -> Duration {
        if self.acked_since_commit >= self.args.checkpoint_after_events {
            return Duration::ZERO;
        }
        self.args
            .checkpoint_every
            .saturating_sub(self.last_commit.elapsed())
    }
}
