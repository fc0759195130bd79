//! The account actor: one per account, from its source to `TG_RAW`.
//!
//! A reader task owns the [`Gateway`] and hands updates over a bounded channel, so when the
//! publish window is full the reader stops pulling from the source (invariant 6; Telegram's
//! catch-up recovers the rest). The actor publishes every event with `Nats-Msg-Id = event_id`,
//! takes the PubAcks strictly in order, and commits the source cursor — a flushed checkpoint in
//! the event log, then `Gateway::commit` — only past updates whose every event has a PubAck
//! (invariant 1). A publish that fails is sent again; the Msg-Id makes that idempotent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::mpsc;

use super::PipelineStats;
use crate::bus::{Bus, raw_subject};
use crate::event::Event;
use crate::eventlog::{Checkpoint, EventLog};
use crate::supervision::PermanentFailure;
use crate::telegram::gateway::{Cursor, GatewayError, GatewayFactory, SourceUpdate};

/// Checkpoint scope of the source cursor in the event log.
pub const SOURCE_SCOPE: &str = "source";

/// What an account actor needs; cloned at every (re)start.
#[derive(Clone)]
pub struct AccountArgs {
    pub account_id: String,
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
}

/// Messages of the account actor.
pub enum AccountMsg {
    /// Connect and start reading (sent to itself after start).
    Start,
    /// Do one step of work (sent to itself).
    Pump,
    /// Report the observable state.
    Status(RpcReplyPort<AccountStatus>),
}

/// The observable state of one account actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountStatus {
    pub account_id: String,
    pub state: &'static str,
    pub in_flight: usize,
    pub committed: Option<String>,
    pub acked: Option<String>,
    pub source_ended: bool,
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

/// The account actor's state.
pub struct AccountState {
    args: AccountArgs,
    updates: Option<mpsc::Receiver<Result<Option<SourceUpdate>, GatewayError>>>,
    commits: Option<mpsc::UnboundedSender<Cursor>>,
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
}

fn ack_future(
    pending: Pending,
    fut: AckFuture,
) -> BoxFuture<'static, (Pending, Result<PublishAck, PublishError>)> {
    Box::pin(async move {
        let result = fut.await;
        (pending, result)
    })
}

/// Sends one publish; the returned future resolves to its PubAck.
async fn publish(
    js: &async_nats::jetstream::Context,
    pending: &Pending,
) -> Result<AckFuture, PublishError> {
    let message = PublishMessage::build()
        .payload(pending.payload.clone())
        .message_id(&pending.event_id);
    let ack = js.send_publish(pending.subject.clone(), message).await?;
    Ok(std::future::IntoFuture::into_future(ack))
}

impl AccountState {
    /// Publishes one update's events and remembers its cursor.
    async fn take_update(&mut self, update: SourceUpdate) -> Result<(), ActorProcessingErr> {
        self.args.stats.produced.add(update.events.len() as u64);
        self.args
            .stats
            .accounts
            .update(&self.args.account_id, |c| c.source_api_calls += 1);
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

    /// Sends one publish, retrying with backoff while the bus refuses it (NATS down).
    async fn publish_until_sent(&mut self, pending: &Pending) -> AckFuture {
        loop {
            match publish(&self.args.bus.js, pending).await {
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

    /// Handles the oldest PubAck; a failed one is published again at the front of the line.
    async fn take_ack(&mut self, pending: Pending, result: Result<PublishAck, PublishError>) {
        match result {
            Ok(ack) => {
                if ack.duplicate {
                    self.args.stats.duplicates_bus_raw.add(1);
                    metrics::counter!("tgingest_dedupe_drops_total", "layer" => "bus_raw")
                        .increment(1);
                } else {
                    self.args.stats.published_raw.add(1);
                }
                if let Some(front) = self.open_updates.front_mut() {
                    front.1 = front.1.saturating_sub(1);
                }
                self.acked_since_commit += 1;
                self.close_finished_updates();
            }
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

    /// Checkpoints the acknowledged cursor (flushed) and only then tells the source.
    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        self.last_commit = Instant::now();
        self.acked_since_commit = 0;
        let Some(cursor) = self.acked.clone() else {
            return Ok(());
        };
        if self.committed.as_ref() == Some(&cursor) {
            return Ok(());
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
        self.args
            .stats
            .accounts
            .update(&self.args.account_id, |c| c.checkpoint_saves += 1);
        self.committed = Some(cursor);
        Ok(())
    }
}

fn to_pending(event: &Event) -> Result<Pending, ActorProcessingErr> {
    Ok(Pending {
        subject: raw_subject(&event.account_id, event.chat.kind),
        event_id: event.event_id.clone(),
        payload: crate::codec::encode(event)?.into(),
    })
}

/// Owns the gateway: reads updates into the bounded channel, applies commits in between.
async fn read_source(
    mut gateway: Box<dyn crate::telegram::gateway::Gateway>,
    updates: mpsc::Sender<Result<Option<SourceUpdate>, GatewayError>>,
    mut commits: mpsc::UnboundedReceiver<Cursor>,
) {
    loop {
        let mut latest = None;
        while let Ok(cursor) = commits.try_recv() {
            latest = Some(cursor);
        }
        if let Some(cursor) = latest
            && let Err(e) = gateway.commit(cursor).await
        {
            let _ = updates.send(Err(e)).await;
            return;
        }
        let next = gateway.next_update().await;
        let stop = !matches!(next, Ok(Some(_)));
        if updates.send(next).await.is_err() || stop {
            // Keep applying commits after the source ended, so the last one reaches it.
            while let Some(cursor) = commits.recv().await {
                let _ = gateway.commit(cursor).await;
            }
            return;
        }
    }
}

fn gateway_failure(e: GatewayError) -> ActorProcessingErr {
    if e.is_permanent() {
        Box::new(PermanentFailure::new(e.to_string()))
    } else {
        Box::new(e)
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
        Ok(AccountState {
            args,
            updates: None,
            commits: None,
            _reader: None,
            acks: FuturesOrdered::new(),
            open_updates: VecDeque::new(),
            acked: None,
            committed: None,
            last_commit: Instant::now(),
            source_ended: false,
            publish_backoff: Duration::from_millis(100),
            acked_since_commit: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AccountMsg>,
        msg: AccountMsg,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountMsg::Start => {
                let mut gateway = state.args.factory.create(&state.args.account_id);
                gateway.connect().await.map_err(gateway_failure)?;
                let resume = state
                    .args
                    .eventlog
                    .latest_checkpoint(&state.args.account_id, SOURCE_SCOPE)?
                    .map(|cp| Cursor(cp.position));
                state.committed = resume.clone();
                state.acked = resume.clone();
                gateway.catch_up(resume).await.map_err(gateway_failure)?;
                let (tx, rx) = mpsc::channel(state.args.window.max(1));
                let (commit_tx, commit_rx) = mpsc::unbounded_channel();
                state._reader = Some(AbortOnDrop(tokio::spawn(read_source(
                    gateway, tx, commit_rx,
                ))));
                state.updates = Some(rx);
                state.commits = Some(commit_tx);
                myself.cast(AccountMsg::Pump)?;
            }
            AccountMsg::Pump => {
                self.pump(state).await?;
                if !(state.source_ended && state.acks.is_empty() && state.acked == state.committed)
                {
                    myself.cast(AccountMsg::Pump)?;
                } else {
                    tracing::info!(account = %crate::telemetry::hash_id(&state.args.account_id), "source ended; everything committed");
                }
            }
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
                    in_flight: state.acks.len(),
                    committed: state.committed.as_ref().map(|c| c.0.clone()),
                    acked: state.acked.as_ref().map(|c| c.0.clone()),
                    source_ended: state.source_ended,
                });
            }
        }
        Ok(())
    }
}

impl AccountActor {
    /// One step: take a PubAck, or an update if the window has room, or commit when due.
    async fn pump(&self, state: &mut AccountState) -> Result<(), ActorProcessingErr> {
        let room = state.acks.len() < state.args.window && !state.source_ended;
        let due = state.checkpoint_due();
        let step = {
            let Some(updates) = state.updates.as_mut() else {
                return Ok(());
            };
            let acks = &mut state.acks;
            let waiting = !acks.is_empty();
            tokio::select! {
                biased;
                Some((pending, result)) = acks.next(), if waiting => Step::Ack(pending, result),
                next = updates.recv(), if room => Step::Update(next),
                _ = tokio::time::sleep(due) => Step::Tick,
            }
        };
        match step {
            Step::Ack(pending, result) => state.take_ack(pending, result).await,
            Step::Update(Some(Ok(Some(update)))) => state.take_update(update).await?,
            Step::Update(Some(Ok(None)) | None) => state.source_ended = true,
            Step::Update(Some(Err(GatewayError::FloodWait { seconds }))) => {
                tracing::warn!(seconds, "source asks to wait; pausing this account");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            Step::Update(Some(Err(e))) => return Err(gateway_failure(e)),
            Step::Tick => {}
        }
        if state.checkpoint_due().is_zero() || (state.source_ended && state.acks.is_empty()) {
            state.commit().await?;
        }
        Ok(())
    }
}

/// What one pump step found.
enum Step {
    Ack(Pending, Result<PublishAck, PublishError>),
    Update(Option<Result<Option<SourceUpdate>, GatewayError>>),
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
