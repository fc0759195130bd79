//! Switching `switchboard.mode` on a node that holds data: at start-up, before its delivery
//! stages, a node finishes what the other mode left (the hand-over), so an operator changes the
//! mode and restarts, or a killed node restarts, and no message is lost or stored twice.
//!
//! Which mode owns `TG_CLEAN`'s new messages ([`batchable`]) is told by one durable consumer:
//! the batcher's (`batcher`) exists exactly while batch mode owns them. The delivery consumer
//! (`switchboard`) serves both modes; in batch mode it acknowledges new messages unsent.
//!
//! **To `messages`** (`batcher` exists; `B` is its ack floor, `D` the delivery consumer's, `L`
//! `TG_CLEAN`'s last sequence):
//! 1. every batch recorded in `TG_BATCH` past `switchboard_batches`' ack floor is sent,
//!    unchanged (same key: what Switchboard has comes back as a duplicate);
//! 2. `TG_CLEAN` from `min(B, D) + 1` to `L` is read in order. A new message past `B` is sent on
//!    its own unless a recorded batch of its chat holds it ([`recorded_members`]); anything
//!    else past `D` is sent as delivery sends it. Below both floors all was settled: new
//!    messages up to `B` are in recorded batches, the rest up to `D` delivered or dead-lettered;
//! 3. `switchboard` is re-created to start at `L + 1` (it would send again, on their own, new
//!    messages up to `L` it had not acknowledged: step 2 settled those);
//! 4. `switchboard_batches`, then `batcher` are deleted: the hand-over is done.
//!
//! **To `conversation_batches`** (no `batcher`, but a `switchboard` consumer: `messages` mode
//! delivered from `TG_CLEAN`): the old path is drained by stream sequence. Every new message
//! from `D + 1` to `L` is sent on its own, as `messages` mode would have (if it had been sent
//! but not acknowledged: a duplicate), then `switchboard_batches` (if missing: at `TG_BATCH`'s
//! end, whose records step 1 of an earlier hand-over sent) and `batcher` are created, the
//! batcher starting at `L + 1`: it never sees a message `messages` mode may have sent. The
//! delivery consumer goes on in batch mode and sends the rest up to `L` as before. Without any
//! consumer `TG_CLEAN` was never delivered from, and the batcher starts at its beginning.
//!
//! **A crash at any point** gives exactly once all the same. A hand-over acknowledges nothing
//! and changes a consumer only after the sends it stands for are settled, and the marker
//! (`batcher`'s existence) changes last, so a node killed during one does it again on its next
//! start. Doing it again is harmless: no batcher runs meanwhile, records are final, so every
//! message is judged as before and re-sent under the same key, which Switchboard answers as a
//! duplicate. Killed between steps 3 and 4, the next pass starts at `min(B, D') + 1 <= B + 1`,
//! and what lies past `B` below the new floor `D'` was settled by the first pass. Killed
//! between the deletion and the creation of step 3, `D` is 0 and the pass re-sends all of
//! `TG_CLEAN` (duplicates); between the deletions of step 4, every record (duplicates).
//!
//! **Refused**, with an error that says what to do, when going on could lose or duplicate: a
//! `TG_BATCH` record that is not a batch in a chat the pass needs (its members are unknown), a
//! missing `TG_BATCH`, and a batcher still pulling from `batcher` (another node still in batch
//! mode). Nodes of a cluster share these consumers, so they switch together: stop them all,
//! change the mode, start them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;

use super::batcher::{self, BatcherError, batchable, recorded_members};
use super::clean::{self, durable_consumer_with};
use super::delivery::{DeliveryArgs, Settled};
use super::replay::{Position, Range, RangeStep, Scan, park_if_rejected, scan_range, settle};
use crate::bus::{
    BATCH_DELIVERY_CONSUMER, BATCHER_CONSUMER, DELIVERY_CONSUMER, STREAM_BATCH, STREAM_CLEAN,
};
use crate::config::DeliveryMode;
use crate::event::Event;
use crate::observability::METRIC_HANDOVER_SENDS;
use crate::switchboard::batch::{Batch, batch_envelope};
use crate::switchboard::envelope;

/// Why a node does not start in the configured mode. Nothing was lost: the other mode's state
/// is still there for the next start.
#[derive(Debug, thiserror::Error)]
pub enum ModeSwitchError {
    #[error("switching to {mode} mode: {message}; start again once NATS answers")]
    Bus { mode: &'static str, message: String },
    #[error(
        "switching to messages mode: {0}. Which messages reached Switchboard inside batches is \
         unknown, so none of that chat is sent on its own: restore or remove that TG_BATCH \
         record (after checking where its members went), or start in conversation_batches mode"
    )]
    Records(#[from] BatcherError),
    #[error(
        "switching to messages mode: TG_BATCH is gone ({0}), so which messages reached \
         Switchboard inside batches is unknown: restore it, or start in conversation_batches mode"
    )]
    NoRecords(String),
    #[error(
        "switching to messages mode: a batcher is still pulling from TG_CLEAN (consumer \
         `batcher`, {waiting} pull requests waiting): another node still runs in \
         conversation_batches mode. Stop every node, then start them all in messages mode"
    )]
    BatcherRunning { waiting: usize },
}

impl ModeSwitchError {
    /// Starting again as it is cannot help: the operator must act first (everything but a bus
    /// that did not answer).
    pub fn needs_the_operator(&self) -> bool {
        !matches!(self, ModeSwitchError::Bus { .. })
    }
}

/// What one hand-over did (logged at its end).
#[derive(Default)]
struct Tally {
    singles: AtomicU64,
    batches: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    /// New messages not sent on their own because a recorded batch holds them.
    already_batched: AtomicU64,
}

impl Tally {
    fn count(&self, kind: &'static str, result: &'static str) {
        let sent = match kind {
            "batch" => &self.batches,
            _ => &self.singles,
        };
        sent.fetch_add(1, Ordering::Relaxed);
        match result {
            "duplicate" => self.duplicates.fetch_add(1, Ordering::Relaxed),
            "rejected" => self.rejected.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        metrics::counter!(METRIC_HANDOVER_SENDS, "kind" => kind, "result" => result).increment(1);
    }

    /// Logs what the hand-over into `mode` did; the mode's consumer starts at `starts_at`.
    fn report(&self, mode: &str, starts_at: u64) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        tracing::info!(
            batches = get(&self.batches),
            singles = get(&self.singles),
            already_batched = get(&self.already_batched),
            duplicates = get(&self.duplicates),
            rejected = get(&self.rejected),
            starts_at,
            "switched to {mode} mode: what the other mode left is delivered"
        );
    }
}

/// One hand-over under way: how it sends, and what it counted.
struct HandOver {
    args: Arc<DeliveryArgs>,
    actor: String,
    tally: Arc<Tally>,
    mode: &'static str,
}

/// Finishes what the other mode left, before the delivery stages of `args.config.mode` start
/// (see the module docs). `args` are the delivery stage's.
pub async fn hand_over(args: &DeliveryArgs) -> Result<(), ModeSwitchError> {
    let mode = match args.config.mode {
        DeliveryMode::Messages => "messages",
        DeliveryMode::ConversationBatches => "conversation_batches",
    };
    let hand = HandOver {
        args: Arc::new(args.clone()),
        actor: format!("{}/mode-switch", args.node_id),
        tally: Arc::default(),
        mode,
    };
    match args.config.mode {
        DeliveryMode::Messages => hand.to_messages().await,
        DeliveryMode::ConversationBatches => hand.to_batches().await,
    }
}

impl HandOver {
    fn bus_error(&self, what: &str, e: &dyn std::fmt::Display) -> ModeSwitchError {
        ModeSwitchError::Bus {
            mode: self.mode,
            message: format!("{what}: {e}"),
        }
    }

    /// The consumer `name` of `stream`, or `None` when the server says it does not exist. Any
    /// other failure (a timeout, no responders) is an error: taking a bus that did not answer
    /// for an absent consumer would pick the wrong hand-over.
    async fn consumer(
        &self,
        stream: &jetstream::stream::Stream,
        name: &str,
    ) -> Result<Option<jetstream::consumer::Info>, ModeSwitchError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        match stream.consumer_info(name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.bus_error(&format!("cannot read the consumer {name}"), &e)),
        }
    }

    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, ModeSwitchError> {
        let js = &self.args.bus.js;
        js.get_stream(name)
            .await
            .map_err(|e| self.bus_error(&format!("cannot open {name}"), &e))
    }

    /// `stream`'s first and last sequence.
    async fn bounds(
        &self,
        stream: &mut jetstream::stream::Stream,
    ) -> Result<(u64, u64), ModeSwitchError> {
        let info = stream
            .info()
            .await
            .map_err(|e| self.bus_error("cannot read a stream's state", &e))?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// Reads `stream` from sequence `from` to `end` and runs what `steps` makes of each message.
    async fn scan(
        &self,
        stream: &jetstream::stream::Stream,
        name: &'static str,
        from: u64,
        end: u64,
        steps: &mut impl RangeStep,
    ) -> Result<(), ModeSwitchError> {
        if from > end {
            return Ok(());
        }
        let range = Range {
            name,
            filter_subject: String::new(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            end,
            inflight: self.args.config.max_inflight as usize,
        };
        scan_range(stream, &range, steps)
            .await
            .map_err(|e| self.bus_error(&format!("cannot read {name}"), &e))
    }

    /// Sends `message` once more (its `envelope`, or dead-letters it for `Err`'s reason), and
    /// counts how Switchboard took it.
    fn resend(
        &self,
        kind: &'static str,
        message: jetstream::Message,
        event: Option<Event>,
        envelope: Result<serde_json::Value, String>,
    ) -> Scan {
        let (args, tally, actor) = (self.args.clone(), self.tally.clone(), self.actor.clone());
        Scan::Run(Box::pin(async move {
            let settled = match envelope {
                Ok(envelope) => settle(&args, &envelope).await,
                Err(reason) => Settled::Rejected(reason),
            };
            let result = park_if_rejected(&args, &actor, &message, event.as_ref(), settled).await;
            tally.count(kind, result);
        }))
    }

    /// Sends the event `message` holds on its own, as `messages` mode does.
    fn resend_event(&self, message: jetstream::Message, event: Event) -> Scan {
        let envelope = envelope(&event, &self.args.config);
        self.resend("single", message, Some(event), Ok(envelope))
    }

    /// Batch mode takes over from `messages` mode (see the module docs).
    async fn to_batches(&self) -> Result<(), ModeSwitchError> {
        let mut clean = self.stream(STREAM_CLEAN).await?;
        if self.consumer(&clean, BATCHER_CONSUMER).await?.is_some() {
            return Ok(());
        }
        let Some(delivery) = self.consumer(&clean, DELIVERY_CONSUMER).await? else {
            return self.create_batch_consumers(DeliverPolicy::All).await;
        };
        let floor = delivery.ack_floor.stream_sequence;
        let (first, end) = self.bounds(&mut clean).await?;
        let from = (floor + 1).max(first);
        tracing::info!(
            from,
            to = end,
            "switching to conversation_batches mode: sending on their own the new messages \
             messages mode left"
        );
        let mut steps = EachMessage(|message: jetstream::Message, _: Position| {
            match crate::codec::decode::<Event>(&message.payload) {
                Ok(event) if batchable(&event) => self.resend_event(message, event),
                // The delivery consumer goes on sending these in batch mode.
                _ => Scan::Skip,
            }
        });
        self.scan(&clean, STREAM_CLEAN, from, end, &mut steps)
            .await?;
        self.create_batch_consumers(DeliverPolicy::ByStartSequence {
            start_sequence: end + 1,
        })
        .await?;
        self.tally.report(self.mode, end + 1);
        Ok(())
    }

    /// Creates `switchboard_batches` (if missing, at `TG_BATCH`'s end: an earlier hand-over sent
    /// every record) and then `batcher`, the marker, at `batcher_start`.
    async fn create_batch_consumers(
        &self,
        batcher_start: DeliverPolicy,
    ) -> Result<(), ModeSwitchError> {
        let bus = &self.args.bus;
        let mut batches = self.stream(STREAM_BATCH).await?;
        let (_, end) = self.bounds(&mut batches).await?;
        let create = |stream, name, max_ack_pending, start| async move {
            durable_consumer_with(bus, stream, name, max_ack_pending, start)
                .await
                .map(drop)
                .map_err(|e| self.bus_error(&format!("cannot create the consumer {name}"), &e))
        };
        let after_records = DeliverPolicy::ByStartSequence {
            start_sequence: end + 1,
        };
        create(
            STREAM_BATCH,
            BATCH_DELIVERY_CONSUMER,
            clean::MAX_ACK_PENDING,
            after_records,
        )
        .await?;
        create(
            STREAM_CLEAN,
            BATCHER_CONSUMER,
            batcher::MAX_ACK_PENDING,
            batcher_start,
        )
        .await
    }

    /// `messages` mode takes over from batch mode (see the module docs).
    async fn to_messages(&self) -> Result<(), ModeSwitchError> {
        let mut clean = self.stream(STREAM_CLEAN).await?;
        let Some(batcher) = self.consumer(&clean, BATCHER_CONSUMER).await? else {
            return Ok(());
        };
        self.refuse_if_a_batcher_runs(&mut clean).await?;
        let mut batches = match self.args.bus.js.get_stream(STREAM_BATCH).await {
            Ok(stream) => stream,
            // Only the server's word that it is gone calls for the operator; a bus that did not
            // answer is asked again at the next start.
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Err(ModeSwitchError::NoRecords(e.to_string()));
            }
            Err(e) => return Err(self.bus_error(&format!("cannot open {STREAM_BATCH}"), &e)),
        };
        let batched_floor = batcher.ack_floor.stream_sequence;
        let delivered_floor = self
            .consumer(&clean, DELIVERY_CONSUMER)
            .await?
            .map_or(0, |info| info.ack_floor.stream_sequence);
        let (first, end) = self.bounds(&mut clean).await?;
        tracing::info!(
            batched_floor,
            delivered_floor,
            to = end,
            "switching to messages mode: delivering what conversation_batches mode left"
        );

        // 1. The recorded batches not yet delivered, unchanged.
        let sent_from = self
            .consumer(&batches, BATCH_DELIVERY_CONSUMER)
            .await?
            .map_or(1, |info| info.ack_floor.stream_sequence + 1);
        let (records_first, records_end) = self.bounds(&mut batches).await?;
        let mut records = EachMessage(|message: jetstream::Message, _: Position| {
            let envelope = serde_json::from_slice::<Batch>(&message.payload)
                .map(|batch| batch_envelope(&batch, &self.args.config))
                .map_err(|e| format!("undecodable TG_BATCH record: {e}"));
            self.resend("batch", message, None, envelope)
        });
        let from = sent_from.max(records_first);
        self.scan(&batches, STREAM_BATCH, from, records_end, &mut records)
            .await?;

        // 2. What neither a recorded batch nor the delivery consumer settled, on its own.
        let mut steps = ToMessages {
            hand: self,
            batched_floor,
            delivered_floor,
            recorded: HashMap::new(),
            failure: None,
        };
        let from = (batched_floor.min(delivered_floor) + 1).max(first);
        self.scan(&clean, STREAM_CLEAN, from, end, &mut steps)
            .await?;
        if let Some(failure) = steps.failure {
            return Err(failure);
        }

        // 3. and 4. The delivery consumer past it all; then the batch mode's consumers go.
        self.delete_consumer(&clean, DELIVERY_CONSUMER).await?;
        let after = DeliverPolicy::ByStartSequence {
            start_sequence: end + 1,
        };
        durable_consumer_with(
            &self.args.bus,
            STREAM_CLEAN,
            DELIVERY_CONSUMER,
            clean::MAX_ACK_PENDING,
            after,
        )
        .await
        .map_err(|e| self.bus_error("cannot re-create the delivery consumer", &e))?;
        self.delete_consumer(&batches, BATCH_DELIVERY_CONSUMER)
            .await?;
        self.delete_consumer(&clean, BATCHER_CONSUMER).await?;
        self.tally.report(self.mode, end + 1);
        Ok(())
    }

    /// Deletes the consumer `name` of `stream` if it exists.
    async fn delete_consumer(
        &self,
        stream: &jetstream::stream::Stream,
        name: &str,
    ) -> Result<(), ModeSwitchError> {
        if self.consumer(stream, name).await?.is_none() {
            return Ok(());
        }
        stream
            .delete_consumer(name)
            .await
            .map(drop)
            .map_err(|e| self.bus_error(&format!("cannot delete the consumer {name}"), &e))
    }

    /// Refuses while another process pulls from `batcher`. A batcher keeps a pull request
    /// waiting almost all the time (each expires after 200 ms, and the next follows at once);
    /// those of a killed node are gone 200 ms after it died, so only what is seen after that
    /// counts.
    async fn refuse_if_a_batcher_runs(
        &self,
        clean: &mut jetstream::stream::Stream,
    ) -> Result<(), ModeSwitchError> {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for _ in 0..20 {
            if let Ok(info) = clean.consumer_info(BATCHER_CONSUMER).await
                && info.num_waiting > 0
            {
                return Err(ModeSwitchError::BatcherRunning {
                    waiting: info.num_waiting,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// A [`RangeStep`] made of a closure.
struct EachMessage<F>(F);

impl<F: FnMut(jetstream::Message, Position) -> Scan> RangeStep for EachMessage<F> {
    async fn step(&mut self, message: jetstream::Message, at: Position) -> Scan {
        (self.0)(message, at)
    }
}

/// Step 2 of the hand-over to `messages` mode (see the module docs).
struct ToMessages<'a> {
    hand: &'a HandOver,
    /// The batcher's ack floor: new messages up to it are in recorded batches.
    batched_floor: u64,
    /// The delivery consumer's ack floor: the rest up to it is settled.
    delivered_floor: u64,
    /// Per (account, chat), the members of its recorded batches.
    recorded: HashMap<(String, String), HashSet<String>>,
    /// Why the pass stopped early.
    failure: Option<ModeSwitchError>,
}

impl RangeStep for ToMessages<'_> {
    async fn step(&mut self, message: jetstream::Message, at: Position) -> Scan {
        let event = match crate::codec::decode::<Event>(&message.payload) {
            Ok(event) => event,
            Err(_) if at.sequence <= self.delivered_floor => return Scan::Skip,
            Err(e) => {
                let reason = format!("undecodable TG_CLEAN message: {e}");
                return self.hand.resend("single", message, None, Err(reason));
            }
        };
        if !batchable(&event) {
            return match at.sequence > self.delivered_floor {
                true => self.hand.resend_event(message, event),
                false => Scan::Skip,
            };
        }
        if at.sequence <= self.batched_floor {
            return Scan::Skip;
        }
        let chat = (event.account_id.clone(), event.chat.id.clone());
        if !self.recorded.contains_key(&chat) {
            let bus = &self.hand.args.bus;
            match recorded_members(bus, &event.account_id, &event.chat).await {
                Ok(members) => {
                    self.recorded.insert(chat.clone(), members);
                }
                Err(e) => {
                    self.failure = Some(e.into());
                    return Scan::Stop;
                }
            }
        }
        if self
            .recorded
            .get(&chat)
            .is_some_and(|members| members.contains(&event.event_id))
        {
            self.hand
                .tally
                .already_batched
                .fetch_add(1, Ordering::Relaxed);
            return Scan::Skip;
        }
        self.hand.resend_event(message, event)
    }
}
