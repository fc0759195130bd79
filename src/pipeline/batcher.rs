//! From `TG_CLEAN` to `TG_BATCH` (batch mode): the batcher cuts conversation-history batches.
//!
//! It pulls kept events from its durable consumer `batcher` and buffers every new message of a
//! chat ([`batchable`]) *unacknowledged*: the buffer lives in JetStream, not only in this
//! process (progress acks keep JetStream from redelivering it meanwhile). A chat is flushed
//! when its first buffered message has waited `switchboard.batches.flush_interval_s`, or as
//! soon as `max_messages` are buffered. A flush **records** the batch ([`Batch`], JSON) on the
//! chat's subject `tg.batch.<account>.<chat>` with `Nats-Msg-Id` = the batch key and
//! `Nats-Expected-Last-Subject-Sequence` = the last record this batcher knows of, and only
//! after that PubAck acknowledges the members on `TG_CLEAN`. The batch delivery stage sends
//! each record, unchanged, to Switchboard.
//!
//! Exactly once per message: before a chat's first flush, the batcher reads the chat's
//! recorded batches and knows every member they hold; a member that comes again (redelivered
//! after a crash, before its ack) is acknowledged and dropped, never put in a second batch. The
//! compare-and-set on the subject's last sequence makes that knowledge current: when another
//! batcher (another node, or an old instance still running after a hand-off) recorded a batch
//! for the chat first, the publish is refused, the new records are read, their members are
//! dropped from the buffer, and the rest is recorded. So a crash never re-forms a batch with
//! other bounds: a recorded batch is final, and what was not recorded was never sent.
//!
//! Edits, deletions and service events are not buffered: the delivery stage sends them one by
//! one from `TG_CLEAN` (it skips what [`batchable`] takes). Backfilled messages are new
//! messages like any other and are batched by the same rule.
//!
//! Context (`is_new = false`): up to `context_messages` earlier messages of the chat sent at
//! most `context_window_m` minutes before the oldest member, plus the messages members reply
//! to, one level deep, taken from a per-chat ring of recent *batched* members (rebuilt from the
//! recorded batches after a restart). It does not cover messages tgingest never passed on
//! (denied by the policy, sent before the account was added) nor replies to messages older than
//! the ring; the butlers connector asks Telegram for those, which a pipeline stage cannot.
//!
//! Limits: held messages count toward the consumer's `max_ack_pending`
//! ([`MAX_ACK_PENDING`]); at [`HELD_CAP`] the chat buffered longest is flushed early instead of
//! stalling. A graceful stop records the buffers (for up to `STOP_FLUSH`); after a crash the
//! flush clock of the redelivered members starts again. The set of
//! batched ids per chat grows with the chat's recorded history (bounded by `streams.batch`'s
//! `max_age`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::PipelineStats;
use super::clean::{durable_consumer_with, take_batch};
use crate::bus::{
    BATCHER_CONSUMER, Bus, STREAM_BATCH, STREAM_CLEAN, batch_subject, wrong_last_sequence,
};
use crate::config::BatchConfig;
use crate::event::{Chat, Event, EventKind, now_us};
use crate::switchboard::batch::{Batch, BatchEntry, id_order};

/// Messages the batcher's consumer may have delivered and not acknowledged: every buffered
/// message counts.
pub const MAX_ACK_PENDING: i64 = 50_000;
/// Buffered messages (all chats) at which the longest-waiting chat is flushed early, so the
/// consumer never stalls on [`MAX_ACK_PENDING`].
pub const HELD_CAP: usize = 40_000;
/// Messages pulled at once.
const FETCH: usize = 512;

/// Whether the batcher takes `event`: a new message in a chat whose id can name a subject.
/// Everything else goes to Switchboard one by one.
pub fn batchable(event: &Event) -> bool {
    event.kind == EventKind::Message
        && !event.chat.id.is_empty()
        && event
            .chat
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Why a flush could not record its batch (the members stay buffered and unacknowledged).
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    #[error("cannot record batch {key} on {subject}: {message}")]
    Record {
        key: String,
        subject: String,
        message: String,
    },
    #[error("cannot read the recorded batches of {subject}: {message}")]
    Read { subject: String, message: String },
    #[error("record {sequence} on {subject} is not a batch: {message}")]
    Decode {
        subject: String,
        sequence: u64,
        message: String,
    },
}

/// What the batcher needs.
#[derive(Clone)]
pub struct BatcherArgs {
    pub bus: Bus,
    pub config: BatchConfig,
    pub stats: Arc<PipelineStats>,
}

/// Messages of the batcher.
pub enum BatcherMsg {
    /// Pull, buffer, flush what is due (sent to itself).
    Pump,
}

/// One buffered message and its delivery (acknowledged once recorded).
struct Held {
    event: Event,
    message: jetstream::Message,
}

/// What the batcher knows of one chat.
struct ChatState {
    account_id: String,
    chat: Chat,
    /// Whether the recorded batches have been read.
    loaded: bool,
    /// Stream sequence of the chat's last record known (0: none).
    last_sequence: u64,
    /// Event ids some recorded batch holds as members.
    batched: HashSet<String>,
    /// Recent batched members, oldest first: the context source.
    ring: VecDeque<BatchEntry>,
    /// Buffered new messages, by message id.
    buffer: BTreeMap<(u64, String), Held>,
    /// When the oldest buffered message arrived (its flush clock).
    since: Option<Instant>,
}

impl ChatState {
    /// A chat whose recorded batches are not read yet.
    fn new(account_id: &str, chat: &Chat) -> ChatState {
        ChatState {
            account_id: account_id.to_string(),
            chat: chat.clone(),
            loaded: false,
            last_sequence: 0,
            batched: HashSet::new(),
            ring: VecDeque::new(),
            buffer: BTreeMap::new(),
            since: None,
        }
    }
}

/// The event ids every batch recorded for `chat` of `account_id` holds as members: messages
/// that reached (or will reach) Switchboard inside a batch, never to be sent again otherwise.
pub async fn recorded_members(
    bus: &Bus,
    account_id: &str,
    chat: &Chat,
) -> Result<HashSet<String>, BatcherError> {
    let mut state = ChatState::new(account_id, chat);
    read_records(bus, &mut state, 0).await?;
    Ok(state.batched)
}

/// The batcher's state.
pub struct BatcherState {
    args: BatcherArgs,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    chats: HashMap<(String, String), ChatState>,
    held: usize,
    next_progress: Instant,
    backoff: Duration,
}

/// The batcher actor.
#[derive(Clone, Copy, Default)]
pub struct BatcherActor;

impl Actor for BatcherActor {
    type Msg = BatcherMsg;
    type State = BatcherState;
    type Arguments = BatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BatcherMsg>,
        args: BatcherArgs,
    ) -> Result<BatcherState, ActorProcessingErr> {
        // A new consumer starts where the mode hand-over put it (see `super::mode_switch`),
        // or, on a fresh stream, at its start.
        let consumer = durable_consumer_with(
            &args.bus,
            STREAM_CLEAN,
            BATCHER_CONSUMER,
            MAX_ACK_PENDING,
            DeliverPolicy::All,
        )
        .await?;
        myself.cast(BatcherMsg::Pump)?;
        let next_progress = Instant::now() + args.bus.progress_every();
        Ok(BatcherState {
            args,
            consumer,
            chats: HashMap::new(),
            held: 0,
            next_progress,
            backoff: Duration::from_millis(100),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BatcherMsg>,
        msg: BatcherMsg,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let BatcherMsg::Pump = msg;
        match pump(state).await {
            Ok(()) => state.backoff = Duration::from_millis(100),
            Err(e) => {
                // Nothing was acknowledged that is not recorded: the buffer stays, and is
                // flushed again after the pause.
                tracing::warn!(error = %e, retry_in = ?state.backoff, "batcher: flush failed; retrying");
                tokio::time::sleep(state.backoff).await;
                state.backoff = (state.backoff * 2).min(Duration::from_secs(5));
            }
        }
        myself.cast(BatcherMsg::Pump)?;
        Ok(())
    }

    /// A graceful stop records what is buffered (as the butlers connector flushes on stop), so
    /// a restart does not wait a flush interval again; what cannot be recorded in
    /// [`STOP_FLUSH`] stays unacknowledged in `TG_CLEAN` and is batched after the restart.
    async fn post_stop(
        &self,
        _: ActorRef<BatcherMsg>,
        state: &mut BatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let keys: Vec<(String, String)> = state
            .chats
            .iter()
            .filter(|(_, c)| !c.buffer.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        let flush_all = async {
            for key in &keys {
                flush(state, key).await?;
            }
            Ok::<(), ActorProcessingErr>(())
        };
        match tokio::time::timeout(STOP_FLUSH, flush_all).await {
            Ok(Ok(())) => tracing::info!(chats = keys.len(), "batcher: buffers recorded on stop"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "batcher: cannot record the buffers on stop; they are batched after the restart")
            }
            Err(_) => tracing::warn!(
                "batcher: recording the buffers on stop took too long; the rest is batched after the restart"
            ),
        }
        Ok(())
    }
}

/// How long a graceful stop may spend recording the buffers.
const STOP_FLUSH: Duration = Duration::from_secs(5);

/// One round: pull, buffer, flush what is due, keep the held messages from redelivery.
async fn pump(state: &mut BatcherState) -> Result<(), ActorProcessingErr> {
    let room = HELD_CAP.saturating_sub(state.held).min(FETCH);
    if room > 0 {
        let bus = &state.args.bus;
        let drops = bus.connection_drops();
        let batch = state
            .consumer
            .fetch()
            .max_messages(room)
            .expires(Duration::from_millis(200))
            .messages()
            .await?;
        for message in take_batch(bus, drops, batch).await? {
            take(state, message).await?;
        }
    }
    let interval = Duration::from_secs(state.args.config.flush_interval_s);
    let max = state.args.config.max_messages as usize;
    let now = Instant::now();
    let mut due: Vec<(Instant, (String, String))> = state
        .chats
        .iter()
        .filter_map(|(key, chat)| {
            let since = chat.since?;
            (since + interval <= now || chat.buffer.len() >= max).then(|| (since, key.clone()))
        })
        .collect();
    // Past the cap, the chat waiting longest goes early: the consumer must not stall.
    if state.held >= HELD_CAP
        && due.is_empty()
        && let Some((since, key)) = state
            .chats
            .iter()
            .filter_map(|(k, c)| Some((c.since?, k.clone())))
            .min()
    {
        due.push((since, key));
    }
    due.sort();
    for (_, key) in due {
        flush(state, &key).await?;
    }
    if Instant::now() >= state.next_progress {
        for chat in state.chats.values() {
            for held in chat.buffer.values() {
                let _ = held.message.ack_with(AckKind::Progress).await;
            }
        }
        state.next_progress = Instant::now() + state.args.bus.progress_every();
    }
    Ok(())
}

/// Takes one `TG_CLEAN` delivery: acknowledges what is not the batcher's, drops what a recorded
/// batch holds, buffers the rest.
async fn take(
    state: &mut BatcherState,
    message: jetstream::Message,
) -> Result<(), ActorProcessingErr> {
    let event: Event = match crate::codec::decode(&message.payload) {
        Ok(e) => e,
        // The delivery stage reads the same message and dead-letters it.
        Err(_) => return ack(&message).await,
    };
    if !batchable(&event) {
        return ack(&message).await;
    }
    let key = (event.account_id.clone(), event.chat.id.clone());
    let chat = state
        .chats
        .entry(key.clone())
        .or_insert_with(|| ChatState::new(&event.account_id, &event.chat));
    if !chat.loaded {
        read_records(&state.args.bus, chat, ring_cap(&state.args.config)).await?;
        chat.loaded = true;
    }
    if chat.batched.contains(&event.event_id) {
        state.args.stats.batch_members_already_batched.add(1);
        return ack(&message).await;
    }
    // The newest title wins (a renamed chat).
    if event.chat.title.is_some() {
        chat.chat.title = event.chat.title.clone();
    }
    let slot = (id_order(&event.message_id).0, event.message_id.clone());
    if chat.buffer.insert(slot, Held { event, message }).is_none() {
        state.held += 1;
    }
    chat.since.get_or_insert_with(Instant::now);
    Ok(())
}

async fn ack(message: &jetstream::Message) -> Result<(), ActorProcessingErr> {
    message.ack().await?;
    Ok(())
}

/// The ring keeps enough recent members for the context and for replies to them.
fn ring_cap(config: &BatchConfig) -> usize {
    (config.context_messages as usize * 2).max(200)
}

/// Reads the chat's records after `chat.last_sequence`: their members become known as batched
/// (and fill the context ring), and buffered copies of them are acknowledged and dropped.
async fn read_records(
    bus: &Bus,
    chat: &mut ChatState,
    ring_cap: usize,
) -> Result<(), BatcherError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push::OrderedConfig};
    let subject = batch_subject(&chat.account_id, &chat.chat.id);
    let read = |e: &dyn std::fmt::Display| BatcherError::Read {
        subject: subject.clone(),
        message: e.to_string(),
    };
    let stream = bus
        .js
        .get_stream(STREAM_BATCH)
        .await
        .map_err(|e| read(&e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: bus.client.new_inbox(),
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: chat.last_sequence + 1,
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| read(&e))?;
    if consumer.cached_info().num_pending > 0 {
        let mut messages = consumer.messages().await.map_err(|e| read(&e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| read(&e))?;
            let info = message.info().map_err(|e| read(&e))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let batch: Batch =
                serde_json::from_slice(&message.payload).map_err(|e| BatcherError::Decode {
                    subject: subject.clone(),
                    sequence,
                    message: e.to_string(),
                })?;
            for member in batch.members() {
                chat.batched.insert(member.event_id.clone());
                chat.ring.push_back(BatchEntry {
                    is_new: false,
                    ..member.clone()
                });
            }
            chat.last_sequence = sequence;
            if pending == 0 {
                break;
            }
        }
    }
    while chat.ring.len() > ring_cap {
        chat.ring.pop_front();
    }
    Ok(())
}

/// Records the chat's buffer as batches of at most `max_messages`, each acknowledged upstream
/// once recorded (see the module docs for why a refused compare-and-set is safe to retry).
async fn flush(state: &mut BatcherState, key: &(String, String)) -> Result<(), ActorProcessingErr> {
    let config = state.args.config.clone();
    let cap = ring_cap(&config);
    let bus = state.args.bus.clone();
    let stats = state.args.stats.clone();
    let Some(chat) = state.chats.get_mut(key) else {
        return Ok(());
    };
    while !chat.buffer.is_empty() {
        // Copies another batcher recorded meanwhile are not ours to send again.
        let recorded: Vec<(u64, String)> = chat
            .buffer
            .iter()
            .filter(|(_, h)| chat.batched.contains(&h.event.event_id))
            .map(|(k, _)| k.clone())
            .collect();
        for slot in recorded {
            if let Some(held) = chat.buffer.remove(&slot) {
                state.held -= 1;
                stats.batch_members_already_batched.add(1);
                ack(&held.message).await?;
            }
        }
        if chat.buffer.is_empty() {
            break;
        }
        let (batch, taken) = {
            let members: Vec<&Event> = chat
                .buffer
                .values()
                .take(config.max_messages as usize)
                .map(|h| &h.event)
                .collect();
            (cut(chat, &members, &config), members.len())
        };
        let subject = batch_subject(&chat.account_id, &chat.chat.id);
        let payload: bytes::Bytes = serde_json::to_vec(&batch)?.into();
        let publish = PublishMessage::build()
            .payload(payload)
            .message_id(batch.msg_id())
            .expected_last_subject_sequence(chat.last_sequence);
        let recorded = match bus.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(ack) if !ack.duplicate => {
                chat.last_sequence = ack.sequence;
                tracing::debug!(
                    members = taken,
                    sequence = ack.sequence,
                    "batch recorded; acknowledging its members"
                );
                stats.batches_recorded.add(1);
                metrics::counter!("tgingest_batches_recorded_total").increment(1);
                let slots: Vec<(u64, String)> = chat.buffer.keys().take(taken).cloned().collect();
                for slot in slots {
                    if let Some(held) = chat.buffer.remove(&slot) {
                        state.held -= 1;
                        chat.batched.insert(held.event.event_id.clone());
                        chat.ring.push_back(BatchEntry::of(&held.event, false));
                        // A lost ack is harmless: the redelivery is dropped as batched.
                        let _ = held.message.ack().await;
                    }
                }
                while chat.ring.len() > cap {
                    chat.ring.pop_front();
                }
            }
            // Someone recorded first (this very key, or another batch of the chat): learn what,
            // then record the rest.
            Ok(_) => read_records(&bus, chat, cap).await?,
            Err(e) if wrong_last_sequence(&e) => {
                tracing::debug!(
                    expected = chat.last_sequence,
                    "batch not recorded: the chat has a newer record; reading it"
                );
                stats.batch_conflicts.add(1);
                read_records(&bus, chat, cap).await?
            }
            Err(e) => {
                return Err(BatcherError::Record {
                    key: batch.idempotency_key(),
                    subject,
                    message: e.to_string(),
                }
                .into());
            }
        }
    }
    chat.since = None;
    Ok(())
}

/// The batch of `members` (the oldest buffered messages of `chat`), with its context.
fn cut(chat: &ChatState, members: &[&Event], config: &BatchConfig) -> Batch {
    let ids: HashSet<&str> = members.iter().map(|e| e.message_id.as_str()).collect();
    let oldest = members.iter().map(|e| e.sent_at_us).min().unwrap_or(0);
    let window = i64::try_from(config.context_window_m)
        .unwrap_or(i64::MAX / 60_000_000)
        .saturating_mul(60_000_000);
    let mut shown: HashSet<&str> = HashSet::new();
    let mut context: Vec<BatchEntry> = chat
        .ring
        .iter()
        .rev()
        .filter(|e| {
            !ids.contains(e.message_id.as_str())
                && e.sent_at_us <= oldest
                && e.sent_at_us >= oldest.saturating_sub(window)
                && shown.insert(e.message_id.as_str())
        })
        .take(config.context_messages as usize)
        .cloned()
        .collect();
    for member in members {
        let Some(to) = member.reply_to.as_deref() else {
            continue;
        };
        if ids.contains(to) || context.iter().any(|e| e.message_id == to) {
            continue;
        }
        if let Some(e) = chat.ring.iter().rev().find(|e| e.message_id == to) {
            context.push(e.clone());
        }
    }
    let mut entries: Vec<BatchEntry> = members.iter().map(|e| BatchEntry::of(e, true)).collect();
    entries.extend(context);
    entries.sort_by(|a, b| id_order(&a.message_id).cmp(&id_order(&b.message_id)));
    Batch {
        account_id: chat.account_id.clone(),
        chat: chat.chat.clone(),
        flushed_at_us: now_us(),
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChatKind, SCHEMA_VERSION, Sender, Source, event_id};

    fn event(id: u64, sent_s: i64, reply_to: Option<&str>) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id("1", "-5", &id.to_string(), EventKind::Message, 0),
            account_id: "1".into(),
            kind: EventKind::Message,
            chat: Chat {
                kind: ChatKind::Group,
                id: "-5".into(),
                title: Some("G".into()),
            },
            sender: Some(Sender {
                id: "7".into(),
                display_name: Some("Ann".into()),
                is_self: false,
            }),
            message_id: id.to_string(),
            topic_id: None,
            reply_to: reply_to.map(str::to_string),
            sent_at_us: sent_s * 1_000_000,
            edit_version: 0,
            text: format!("m{id}"),
            media: None,
            source: Source::Live,
            observed_at_us: sent_s * 1_000_000,
        }
    }

    fn chat_with_ring(ring: &[Event]) -> ChatState {
        ChatState {
            loaded: true,
            ring: ring.iter().map(|e| BatchEntry::of(e, false)).collect(),
            ..ChatState::new("1", &ring[0].chat)
        }
    }

    #[test]
    fn context_is_the_last_n_within_the_window_plus_replied_to_messages() {
        // Ring: 1 (long ago), 2..=5 within the window.
        let ring = [
            event(1, 0, None),
            event(2, 10_000, None),
            event(3, 10_060, None),
            event(4, 10_120, None),
            event(5, 10_180, None),
        ];
        let chat = chat_with_ring(&ring);
        let config = BatchConfig {
            context_messages: 2,
            context_window_m: 35,
            ..BatchConfig::default()
        };
        let m6 = event(6, 10_240, Some("1"));
        let m7 = event(7, 10_300, Some("6"));
        let batch = cut(&chat, &[&m6, &m7], &config);
        let shown: Vec<(&str, bool)> = batch
            .entries
            .iter()
            .map(|e| (e.message_id.as_str(), e.is_new))
            .collect();
        assert_eq!(
            shown,
            [
                ("1", false),
                ("4", false),
                ("5", false),
                ("6", true),
                ("7", true)
            ],
            "two latest in the window, the replied-to 1 (outside it), members new"
        );
        assert_eq!(batch.idempotency_key(), "tg_batch:-5:6:7");
    }

    #[test]
    fn only_new_messages_in_a_chat_with_a_subject_safe_id_are_batched() {
        let mut e = event(1, 0, None);
        assert!(batchable(&e));
        e.kind = EventKind::Edit;
        assert!(!batchable(&e));
        let mut e = event(1, 0, None);
        e.chat.id = "a.b".into();
        assert!(!batchable(&e));
        e.chat.id = String::new();
        assert!(!batchable(&e));
    }
}
