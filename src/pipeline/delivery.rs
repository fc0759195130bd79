//! From `TG_CLEAN` to Switchboard: the delivery actor.
//!
//! It pulls from the durable consumer `switchboard` only as many messages as it has free call
//! slots (`switchboard.max_inflight`; Switchboard has no backpressure signal of its own), and
//! runs one task per message. A message is acknowledged only after Switchboard answered
//! `accepted` (a duplicate counts: it is already stored). A permanent rejection — Switchboard's
//! own, or a 413 (the envelope is larger than Switchboard or a proxy in front takes) — goes to
//! `TG_DLQ` with its reason and an audit record, then is acknowledged so it does not block the
//! stream. Transport errors and `isError:true` are retried with exponential backoff and jitter
//! (never sooner than a 429's `Retry-After`), with progress acks so JetStream does not redeliver
//! a message that is still being worked on: one envelope is never in two calls at once.
//!
//! In batch mode (`switchboard.mode = "conversation_batches"`) two of these run: one on
//! `TG_CLEAN` that sends edits, deletions and service events one by one and leaves new
//! messages to the batcher ([`super::batcher`]), and one on `TG_BATCH` (durable consumer
//! `switchboard_batches`) that sends each recorded batch, unchanged, as one envelope.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::PipelineStats;
use super::batcher::batchable;
use super::clean::{REASON_HEADER, durable_consumer, take_batch};
use crate::bus::{
    BATCH_DELIVERY_CONSUMER, Bus, STREAM_BATCH, STREAM_CLEAN, dlq_subject, header_value,
};
use crate::config::SwitchboardConfig;
use crate::event::{Event, now_us};
use crate::eventlog::{AuditEntry, Durability, EventLog};
use crate::observability as obs;
use crate::switchboard::batch::{Batch, batch_envelope};
use crate::switchboard::{CallError, IngestReply, McpClient, envelope};

pub use crate::bus::DELIVERY_CONSUMER;

/// What the delivery actor needs.
#[derive(Clone)]
pub struct DeliveryArgs {
    pub bus: Bus,
    pub client: McpClient,
    pub config: SwitchboardConfig,
    pub eventlog: Arc<EventLog>,
    pub stats: Arc<PipelineStats>,
    pub node_id: String,
    /// What this delivery actor reads and sends.
    pub source: DeliverySource,
}

/// What a delivery actor reads and sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverySource {
    /// Every `TG_CLEAN` event as its own envelope (`messages` mode).
    Events,
    /// `TG_CLEAN` events the batcher does not take (batch mode).
    EventsBesideBatches,
    /// The batches recorded in `TG_BATCH` (batch mode).
    Batches,
}

/// Messages of the delivery actor.
pub enum DeliveryMsg {
    /// Fill free call slots from the consumer (sent to itself).
    Pump,
}

/// The delivery actor's state; dropping it aborts the calls in flight (they are redelivered).
pub struct DeliveryState {
    args: Arc<DeliveryArgs>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

/// The delivery actor.
#[derive(Clone, Copy, Default)]
pub struct DeliveryActor;

impl Actor for DeliveryActor {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = DeliveryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DeliveryMsg>,
        args: DeliveryArgs,
    ) -> Result<DeliveryState, ActorProcessingErr> {
        let max_inflight = args.config.max_inflight as usize;
        let consumer = match args.source {
            DeliverySource::Batches => {
                durable_consumer(&args.bus, STREAM_BATCH, BATCH_DELIVERY_CONSUMER).await?
            }
            _ => durable_consumer(&args.bus, STREAM_CLEAN, DELIVERY_CONSUMER).await?,
        };
        myself.cast(DeliveryMsg::Pump)?;
        Ok(DeliveryState {
            args: Arc::new(args),
            consumer,
            slots: Arc::new(Semaphore::new(max_inflight)),
            tasks: JoinSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DeliveryMsg>,
        msg: DeliveryMsg,
        state: &mut DeliveryState,
    ) -> Result<(), ActorProcessingErr> {
        let DeliveryMsg::Pump = msg;
        while let Some(done) = state.tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a delivery task failed; its message will be redelivered");
            }
        }
        let free = state.slots.available_permits();
        if free == 0 {
            // Wait for a slot instead of spinning; every call slot busy is backpressure.
            let waited = Instant::now();
            let _ = tokio::time::timeout(Duration::from_millis(200), state.tasks.join_next()).await;
            metrics::histogram!(obs::METRIC_BACKPRESSURE, "stage" => "delivery")
                .record(waited.elapsed().as_secs_f64());
        } else if let Err(e) = fill_slots(state, free).await {
            tracing::warn!(error = %e, "cannot fetch from TG_CLEAN; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        myself.cast(DeliveryMsg::Pump)?;
        Ok(())
    }
}

async fn fill_slots(state: &mut DeliveryState, free: usize) -> Result<(), ActorProcessingErr> {
    let bus = &state.args.bus;
    let drops = bus.connection_drops();
    let batch = state
        .consumer
        .fetch()
        .max_messages(free)
        .expires(Duration::from_millis(200))
        .messages()
        .await?;
    for message in take_batch(bus, drops, batch).await? {
        let permit = state.slots.clone().acquire_owned().await?;
        let args = state.args.clone();
        state.tasks.spawn(async move {
            deliver(&args, message).await;
            drop(permit);
        });
    }
    Ok(())
}

/// Delivers one message until Switchboard accepts or rejects it.
async fn deliver(args: &DeliveryArgs, message: jetstream::Message) {
    if args.source == DeliverySource::Batches {
        return deliver_batch(args, message).await;
    }
    let event: Event = match crate::codec::decode(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            return dead_letter(
                args,
                &message,
                None,
                &format!("undecodable TG_CLEAN message: {e}"),
            )
            .await;
        }
    };
    if args.source == DeliverySource::EventsBesideBatches && batchable(&event) {
        // The batcher's: it reaches Switchboard inside a recorded batch.
        if let Err(e) = message.ack().await {
            tracing::debug!(error = %e, "ack of a batched message on TG_CLEAN failed; it comes again");
        }
        return;
    }
    let envelope = envelope(&event, &args.config);
    match settle(args, &message, &envelope).await {
        Settled::Accepted { duplicate } => {
            if duplicate {
                args.stats.resend_duplicates.add(1);
            } else {
                args.stats.delivered.add(1);
            }
            args.stats.accounts.update(&event.account_id, |c| {
                c.messages_ingested += 1;
                c.dedupe_accepted += u64::from(duplicate);
            });
            if let Some(ledger) = &args.stats.acknowledged {
                ledger.record(&event.event_id, duplicate);
            }
            let latency = now_us().saturating_sub(event.observed_at_us).max(0) as u64;
            args.stats.latency.record(latency);
            metrics::histogram!("tgingest_end_to_end_latency_seconds").record(latency as f64 / 1e6);
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack on TG_CLEAN failed; Switchboard will answer the redelivery as a duplicate");
            }
        }
        Settled::Rejected(error) => dead_letter(args, &message, Some(&event), &error).await,
    }
}

/// Sends `envelope`, the content of `message`, until Switchboard settles it, with progress acks
/// on `message` meanwhile.
async fn settle(
    args: &DeliveryArgs,
    message: &jetstream::Message,
    envelope: &serde_json::Value,
) -> Settled {
    let progress = Progress {
        every: args.bus.progress_every(),
        send: move || async move {
            let _ = message.ack_with(AckKind::Progress).await;
        },
    };
    ingest_until_settled(&args.client, envelope, &args.stats, progress).await
}

/// Delivers one recorded batch (one MCP call); its members count as delivered events.
async fn deliver_batch(args: &DeliveryArgs, message: jetstream::Message) {
    let batch: Batch = match serde_json::from_slice(&message.payload) {
        Ok(b) => b,
        Err(e) => {
            let reason = format!("undecodable TG_BATCH record: {e}");
            return dead_letter(args, &message, None, &reason).await;
        }
    };
    let envelope = batch_envelope(&batch, &args.config);
    match settle(args, &message, &envelope).await {
        Settled::Accepted { duplicate } => {
            args.stats.batches_delivered.add(1);
            let members = batch.members().count() as u64;
            if duplicate {
                args.stats.resend_duplicates.add(members);
            } else {
                args.stats.delivered.add(members);
            }
            args.stats.accounts.update(&batch.account_id, |c| {
                c.messages_ingested += members;
                c.dedupe_accepted += if duplicate { members } else { 0 };
            });
            if let Some(ledger) = &args.stats.acknowledged {
                for member in batch.members() {
                    ledger.record(&member.event_id, duplicate);
                }
            }
            let latency = now_us().saturating_sub(batch.flushed_at_us).max(0) as u64;
            metrics::histogram!("tgingest_batch_delivery_latency_seconds")
                .record(latency as f64 / 1e6);
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack on TG_BATCH failed; Switchboard will answer the redelivery as a duplicate");
            }
        }
        Settled::Rejected(error) => dead_letter(args, &message, None, &error).await,
    }
}

/// How Switchboard settled one envelope.
pub(crate) enum Settled {
    /// Stored, or already stored (`duplicate`).
    Accepted { duplicate: bool },
    /// Refused for good, with Switchboard's reason.
    Rejected(String),
}

/// What to run, and how often, while a message is still being delivered.
pub(crate) struct Progress<F> {
    pub every: Duration,
    /// Tells JetStream not to redeliver yet (a progress ack); nothing for a replay.
    pub send: F,
}

/// The pause after a message's first failed call; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between calls for one message.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Calls `ingest` until Switchboard accepts or rejects `envelope`. Transport errors and
/// `isError:true` are retried with exponential backoff and jitter; `progress.send` runs every
/// `progress.every` until then, during a call as well as between retries, so a slow Switchboard
/// never lets the message's ack wait run out.
pub(crate) async fn ingest_until_settled<F, Fut>(
    client: &McpClient,
    envelope: &serde_json::Value,
    stats: &PipelineStats,
    mut progress: Progress<F>,
) -> Settled
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut next_progress = tokio::time::Instant::now() + progress.every;
    loop {
        let attempt = Instant::now();
        stats.ingest_calls.add(1);
        let call = client.ingest(envelope);
        tokio::pin!(call);
        let reply = loop {
            tokio::select! {
                reply = &mut call => break reply,
                () = tokio::time::sleep_until(next_progress) => {
                    (progress.send)().await;
                    next_progress = tokio::time::Instant::now() + progress.every;
                }
            }
        };
        metrics::histogram!(obs::METRIC_DELIVERY_LATENCY).record(attempt.elapsed().as_secs_f64());
        let result = match &reply {
            Ok(IngestReply::Accepted {
                duplicate: false, ..
            }) => "accepted",
            Ok(IngestReply::Accepted {
                duplicate: true, ..
            }) => "duplicate",
            Ok(IngestReply::Rejected { .. }) => "rejected",
            Err(_) => "retried",
        };
        metrics::counter!(obs::METRIC_DELIVERIES, "result" => result).increment(1);
        match reply {
            Ok(IngestReply::Accepted { duplicate, .. }) => return Settled::Accepted { duplicate },
            Ok(IngestReply::Rejected { error }) => return Settled::Rejected(error),
            // The envelope will never fit through: park it rather than hold a slot forever.
            Err(e @ CallError::TooLarge(_)) => return Settled::Rejected(e.to_string()),
            Err(e) => {
                stats.retries.add(1);
                metrics::counter!("tgingest_delivery_retries_total").increment(1);
                // Only the operator can fix a refused token or certificate: say so at warn,
                // once per backoff step of each message (at most every 30 s once backed off).
                if e.is_configuration() && (backoff == FIRST_BACKOFF || backoff == MAX_BACKOFF) {
                    tracing::warn!(error = %e, retry_in = ?backoff, "Switchboard refused the link; the event is kept and retried");
                } else {
                    tracing::debug!(error = %e, retry_in = ?backoff, "Switchboard call failed; retrying");
                }
                let jitter = 0.8 + rand::random::<f64>() * 0.4;
                let asked = match &e {
                    CallError::RateLimited { retry_after, .. } => retry_after.unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                let pause = tokio::time::sleep(backoff.mul_f64(jitter).max(asked));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        () = tokio::time::sleep_until(next_progress) => {
                            (progress.send)().await;
                            next_progress = tokio::time::Instant::now() + progress.every;
                        }
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Parks a message Switchboard refused for good in `TG_DLQ` (with the reason), audits it, and
/// acknowledges it so the stream moves on. If the DLQ publish fails, the message is left for
/// redelivery instead: nothing is lost.
async fn dead_letter(
    args: &DeliveryArgs,
    message: &jetstream::Message,
    event: Option<&Event>,
    reason: &str,
) {
    let actor = format!("{}/delivery", args.node_id);
    match park_rejected(args, &actor, message, event, reason).await {
        Ok(()) => {
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(ParkError::Publish(e)) => {
            tracing::error!(error = %e, "cannot dead-letter a rejected message; it will be redelivered");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
        Err(ParkError::Audit(e)) => {
            tracing::error!(error = %e, "cannot audit a dead letter; leaving the message for redelivery");
        }
    }
}

/// Why a rejected message could not be parked.
pub(crate) enum ParkError {
    /// The `TG_DLQ` publish failed: nothing was parked.
    Publish(String),
    /// Parked, but the audit record could not be written.
    Audit(String),
}

/// Publishes a `TG_CLEAN` message Switchboard refused for good to `TG_DLQ` with the reason (one
/// line in [`REASON_HEADER`], see [`header_value`]), and records `delivery.dead_letter` (by
/// `actor`, with the `TG_DLQ` sequence) in the event log; counts it when both held.
pub(crate) async fn park_rejected(
    args: &DeliveryArgs,
    actor: &str,
    message: &jetstream::Message,
    event: Option<&Event>,
    reason: &str,
) -> Result<(), ParkError> {
    let account = event.map_or_else(
        || {
            message
                .subject
                .split('.')
                .nth(2)
                .unwrap_or("unknown")
                .to_string()
        },
        |e| e.account_id.clone(),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(REASON_HEADER, header_value(reason));
    let mut publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers);
    if let Some(e) = event {
        publish = publish.message_id(&e.event_id);
    }
    let stored = match args
        .bus
        .js
        .send_publish(dlq_subject(&account), publish)
        .await
    {
        Ok(ack) => ack.await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let parked = stored.map_err(ParkError::Publish)?;
    // Where the reason is (the TG_DLQ sequence), never the reason itself: Switchboard's errors
    // quote the envelope, and audit records carry no message content.
    let details = BTreeMap::from([
        (
            "event_id".to_string(),
            event.map(|e| e.event_id.clone()).unwrap_or_default(),
        ),
        ("stage".to_string(), "switchboard".to_string()),
        ("dlq_sequence".to_string(), parked.sequence.to_string()),
    ]);
    let entry = AuditEntry {
        action: "delivery.dead_letter".into(),
        actor: actor.to_string(),
        account_id: Some(account),
        details,
    };
    args.eventlog
        .audit(&entry, Durability::Flushed)
        .await
        .map_err(|e| ParkError::Audit(e.to_string()))?;
    args.stats.dead_lettered.add(1);
    if let Some(e) = event {
        args.stats
            .accounts
            .update(&e.account_id, |c| c.messages_failed += 1);
    }
    metrics::counter!("tgingest_dead_letters_total", "stage" => "switchboard").increment(1);
    tracing::warn!("Switchboard rejected an event permanently; it is in TG_DLQ with the reason");
    Ok(())
}
