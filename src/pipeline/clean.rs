//! From `TG_RAW` to `TG_CLEAN`: the dedupe actor and the scope-filter/redaction actor.
//!
//! The dedupe actor pulls a batch from the durable consumer `dedupe`, drops what its persistent
//! seen-set knows, and hands the rest to the filter actor with a `call` — one batch in flight, so
//! the chain is bounded and a slow bus makes the dedupe actor wait instead of buffering. The
//! filter actor applies the policy, publishes survivors to `TG_CLEAN` (`Nats-Msg-Id = event_id`)
//! and answers once every PubAck is in; drops are audited (counts, never content) with a flushed
//! record first. Only then are the ids marked seen and the `TG_RAW` messages acknowledged.
//!
//! With `cluster.enabled`, the ids the local seen-set does not know are decided in the shared
//! bucket `TG_SEEN` before they go to the filter ([`super::shared_seen`], where the reasoning
//! is): a copy another node passed on within `dedupe.shared_ttl` is dropped, and one the store
//! cannot decide is redelivered, never passed on unchecked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::PipelineStats;
use super::seen::SeenSet;
use super::shared_seen::{self, Candidate, SharedSeen, Verdict};
use crate::bus::{Bus, STREAM_RAW, clean_subject, dlq_subject, header_value};
use crate::event::Event;
use crate::eventlog::{AuditEntry, Durability, EventLog};
use crate::policy::{Decision, Policy};

pub use crate::bus::DEDUPE_CONSUMER;
/// Header naming why a message was dead-lettered: the reason on one line, bounded (built with
/// [`header_value`], as every header carrying outside text must be).
pub const REASON_HEADER: &str = "Tgingest-Reason";

/// What happened to one event in the filter actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Stored in `TG_CLEAN` (or already there: a Msg-Id repeat).
    Published { duplicate: bool },
    /// Dropped by the scope filter under this rule (audited).
    Dropped { rule: String },
    /// Could not be published; leave it for redelivery.
    Failed(String),
}

/// Messages of the filter actor.
pub enum FilterMsg {
    /// Filter, redact and publish these events; answer one outcome per event, in order.
    Batch(Vec<Event>, RpcReplyPort<Vec<FilterOutcome>>),
}

/// What the filter actor needs.
#[derive(Clone)]
pub struct FilterArgs {
    pub policy: Arc<Policy>,
    pub bus: Bus,
    pub eventlog: Arc<EventLog>,
    pub stats: Arc<PipelineStats>,
    pub node_id: String,
}

/// The scope-filter and redaction actor.
#[derive(Clone, Copy, Default)]
pub struct FilterActor;

impl Actor for FilterActor {
    type Msg = FilterMsg;
    type State = FilterArgs;
    type Arguments = FilterArgs;

    async fn pre_start(
        &self,
        _: ActorRef<FilterMsg>,
        args: FilterArgs,
    ) -> Result<FilterArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<FilterMsg>,
        msg: FilterMsg,
        state: &mut FilterArgs,
    ) -> Result<(), ActorProcessingErr> {
        let FilterMsg::Batch(events, reply) = msg;
        let outcomes = filter_batch(state, events).await?;
        let _ = reply.send(outcomes);
        Ok(())
    }
}

async fn filter_batch(
    state: &FilterArgs,
    events: Vec<Event>,
) -> Result<Vec<FilterOutcome>, ActorProcessingErr> {
    let mut outcomes = Vec::with_capacity(events.len());
    let mut acks = Vec::new();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        match state.policy.decide_owned(event) {
            Decision::Drop { rule } => {
                let rule = rule.as_str().to_string();
                *drops.entry(rule.clone()).or_default() += 1;
                outcomes.push(FilterOutcome::Dropped { rule });
            }
            Decision::Keep { event, redactions } => {
                for (kind, count) in &redactions {
                    state.stats.redacted.add(kind.name(), u64::from(*count));
                }
                tracing::debug!(
                    event_id = %event.event_id,
                    text = %crate::telemetry::Body(&event.text),
                    "kept by the policy"
                );
                let payload: bytes::Bytes = crate::codec::encode(&event)?.into();
                let subject = clean_subject(&event.account_id);
                acks.push((outcomes.len(), subject, event.event_id.clone(), payload));
                outcomes.push(FilterOutcome::Failed("not published yet".into()));
            }
        }
    }
    // The drop decision is acted on (acked upstream) only after its audit record is on disk.
    if !drops.is_empty() {
        for (rule, n) in &drops {
            state.stats.filtered.add(rule, *n);
        }
        let details = drops
            .iter()
            .map(|(rule, n)| (format!("rule.{rule}"), n.to_string()))
            .collect();
        let entry = AuditEntry {
            action: "scope.drop".into(),
            actor: format!("{}/filter", state.node_id),
            account_id: None,
            details,
        };
        state.eventlog.audit(&entry, Durability::Flushed).await?;
    }
    let sent_in = state.bus.connection_drops();
    let mut pending = Vec::with_capacity(acks.len());
    for (index, subject, event_id, payload) in acks {
        let future = state.bus.send_with_id(&subject, &event_id, &payload).await;
        pending.push((index, subject, event_id, payload, future));
    }
    for (index, subject, event_id, payload, future) in pending {
        let mut result = match future {
            Ok(f) => state
                .bus
                .pub_ack_or_resend(
                    f,
                    sent_in,
                    subject.clone(),
                    event_id.clone(),
                    payload.clone(),
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // One immediate retry with the same Msg-Id (idempotent) before leaving it for redelivery.
        if result.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            result = state
                .bus
                .publish_acked(subject, event_id, payload)
                .await
                .map_err(|e| e.to_string());
        }
        outcomes[index] = match result {
            Ok(ack) => {
                if ack.duplicate {
                    state.stats.duplicates_bus_clean.add(1);
                    metrics::counter!("tgingest_dedupe_drops_total", "layer" => "bus_clean")
                        .increment(1);
                } else {
                    state.stats.published_clean.add(1);
                }
                FilterOutcome::Published {
                    duplicate: ack.duplicate,
                }
            }
            Err(e) => FilterOutcome::Failed(e),
        };
    }
    Ok(outcomes)
}

/// What the dedupe actor needs.
#[derive(Clone)]
pub struct DedupeArgs {
    pub bus: Bus,
    pub seen_dir: std::path::PathBuf,
    pub horizon: Duration,
    /// Name under which the filter actor is registered (looked up per batch, so a restarted
    /// filter is found again).
    pub filter_name: String,
    pub stats: Arc<PipelineStats>,
    pub batch: usize,
    /// Decide in the shared bucket `TG_SEEN` too (`cluster.enabled`).
    pub shared: bool,
}

/// Messages of the dedupe actor.
pub enum DedupeMsg {
    /// Pull and process one batch (sent to itself).
    Pump,
    /// Forget ids past the horizon (sent to itself periodically).
    Prune,
}

/// The dedupe actor's state.
pub struct DedupeState {
    args: DedupeArgs,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    seen: Arc<SeenSet>,
    shared: Option<SharedSeen>,
    idle_backoff: Duration,
}

/// The dedupe actor.
#[derive(Clone, Copy, Default)]
pub struct DedupeActor;

/// Messages a stage's consumer may have delivered and not yet acknowledged.
pub(crate) const MAX_ACK_PENDING: i64 = 20_000;

/// The durable pull consumer of a stage, created or brought in line with this config (its
/// `ack_wait` is `nats.ack_wait`).
pub async fn durable_consumer(
    bus: &Bus,
    stream: &str,
    name: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ActorProcessingErr> {
    use async_nats::jetstream::consumer::DeliverPolicy;
    durable_consumer_with(bus, stream, name, MAX_ACK_PENDING, DeliverPolicy::All).await
}

/// [`durable_consumer`] with its own `max_ack_pending` (the batcher holds messages unacked) and
/// where a new consumer starts (an existing one keeps its own: JetStream cannot change it).
pub async fn durable_consumer_with(
    bus: &Bus,
    stream: &str,
    name: &str,
    max_ack_pending: i64,
    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ActorProcessingErr> {
    let ack_wait = bus.ack_wait();
    let stream = bus.js.get_stream(stream).await?;
    let deliver_policy = match stream.consumer_info(name).await {
        Ok(info) => info.config.deliver_policy,
        Err(_) => deliver_policy,
    };
    let config = pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_ack_pending,
        max_deliver: -1,
        deliver_policy,
        ..Default::default()
    };
    Ok(stream.create_consumer(config).await?)
}

impl Actor for DedupeActor {
    type Msg = DedupeMsg;
    type State = DedupeState;
    type Arguments = DedupeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DedupeMsg>,
        args: DedupeArgs,
    ) -> Result<DedupeState, ActorProcessingErr> {
        let consumer = durable_consumer(&args.bus, STREAM_RAW, DEDUPE_CONSUMER).await?;
        let (dir, horizon) = (args.seen_dir.clone(), args.horizon);
        let seen =
            Arc::new(tokio::task::spawn_blocking(move || SeenSet::open(&dir, horizon)).await??);
        let shared = match args.shared {
            true => Some(SharedSeen::open(&args.bus).await?),
            false => None,
        };
        myself.cast(DedupeMsg::Pump)?;
        myself.send_interval(Duration::from_secs(60), || DedupeMsg::Prune);
        Ok(DedupeState {
            args,
            consumer,
            seen,
            shared,
            idle_backoff: Duration::from_millis(50),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DedupeMsg>,
        msg: DedupeMsg,
        state: &mut DedupeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DedupeMsg::Pump => {
                if let Err(e) = pump_dedupe(state).await {
                    tracing::warn!(error = %e, retry_in = ?state.idle_backoff, "dedupe stage: batch failed; retrying");
                    tokio::time::sleep(state.idle_backoff).await;
                    state.idle_backoff = (state.idle_backoff * 2).min(Duration::from_secs(5));
                } else {
                    state.idle_backoff = Duration::from_millis(50);
                }
                myself.cast(DedupeMsg::Pump)?;
            }
            DedupeMsg::Prune => {
                let seen = state.seen.clone();
                match tokio::task::spawn_blocking(move || seen.prune()).await? {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "dedupe seen-set pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dedupe seen-set prune failed"),
                }
            }
        }
        Ok(())
    }
}

/// One batch: fetch, drop known ids, filter and publish the rest, then mark and acknowledge.
async fn pump_dedupe(state: &mut DedupeState) -> Result<(), ActorProcessingErr> {
    let bus = &state.args.bus;
    let drops = bus.connection_drops();
    let batch = state
        .consumer
        .fetch()
        .max_messages(state.args.batch)
        .expires(Duration::from_millis(500))
        .messages()
        .await?;
    let messages = take_batch(bus, drops, batch).await?;
    if messages.is_empty() {
        return Ok(());
    }
    let mut fresh_ids = HashSet::new();
    let mut to_filter = Vec::new(); // (message index, event)
    let mut ack_now = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let event: Event = match crate::codec::decode(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                dead_letter_undecodable(&state.args.bus, message, &e.to_string()).await?;
                ack_now.push(i);
                continue;
            }
        };
        let seen = state.seen.contains(&event.event_id)?;
        if seen || !fresh_ids.insert(event.event_id.clone()) {
            state.args.stats.duplicates_seen_set.add(1);
            metrics::counter!("tgingest_dedupe_drops_total", "layer" => "seen_set").increment(1);
            ack_now.push(i);
        } else {
            to_filter.push((i, event));
        }
    }

    let mut failed = Vec::new();
    let mut undecided = None;
    if let Some(shared) = &state.shared
        && !to_filter.is_empty()
    {
        let decide = decide_shared(shared, &state.args.stats, &messages, to_filter);
        let decided = still_working_on(&messages, bus.progress_every(), decide).await;
        to_filter = decided.pass;
        ack_now.extend(decided.drop);
        failed.extend(decided.undecided);
        undecided = decided.error;
    }
    if !to_filter.is_empty() {
        let filter = ActorRef::<FilterMsg>::where_is(state.args.filter_name.clone())
            .ok_or_else(|| format!("filter actor {} is not running", state.args.filter_name))?;
        let (indexes, events): (Vec<usize>, Vec<Event>) = to_filter.into_iter().unzip();
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        // One batch in flight to the filter: the time the dedupe stage waits for it is its
        // backpressure.
        let waited = std::time::Instant::now();
        let call = async { ractor::call_t!(filter, FilterMsg::Batch, 60_000, events) };
        let outcomes = still_working_on(&messages, bus.progress_every(), call).await?;
        metrics::histogram!(
            crate::observability::METRIC_BACKPRESSURE,
            "stage" => "dedupe"
        )
        .record(waited.elapsed().as_secs_f64());
        let mut done_ids = Vec::new();
        for ((index, id), outcome) in indexes.into_iter().zip(ids).zip(outcomes) {
            match outcome {
                FilterOutcome::Failed(reason) => {
                    tracing::warn!(%reason, "event not published to TG_CLEAN; leaving it for redelivery");
                    failed.push(index);
                }
                _ => {
                    done_ids.push(id);
                    ack_now.push(index);
                }
            }
        }
        let seen = state.seen.clone();
        tokio::task::spawn_blocking(move || {
            seen.mark_all(done_ids.iter().map(String::as_str))?;
            seen.flush()
        })
        .await??;
    }

    for i in ack_now {
        messages[i].ack().await?;
    }
    for i in failed {
        messages[i]
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await?;
    }
    // The stage backs off while the shared store fails, instead of spinning on redeliveries.
    match undecided {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The shared store's answer for one batch.
struct SharedDecisions {
    /// Claimed by these copies (or by them on an earlier delivery): to the filter.
    pass: Vec<(usize, Event)>,
    /// Another copy holds the claim: acknowledged and dropped.
    drop: Vec<usize>,
    /// Not decided: redelivered.
    undecided: Vec<usize>,
    /// The first reason something was not decided.
    error: Option<shared_seen::SharedSeenError>,
}

/// Decides the copies the local seen-set did not know in `TG_SEEN`, counting each decision.
async fn decide_shared(
    shared: &SharedSeen,
    stats: &PipelineStats,
    messages: &[jetstream::Message],
    candidates: Vec<(usize, Event)>,
) -> SharedDecisions {
    let mut out = SharedDecisions {
        pass: Vec::new(),
        drop: Vec::new(),
        undecided: Vec::new(),
        error: None,
    };
    let mut asked = Vec::with_capacity(candidates.len());
    for (index, event) in candidates {
        match messages[index].info() {
            Ok(info) => asked.push((index, event, info.stream_sequence)),
            // Not a JetStream delivery: it cannot be acknowledged either; let it come again.
            Err(_) => out.undecided.push(index),
        }
    }
    let copies: Vec<Candidate<'_>> = asked
        .iter()
        .map(|(_, event, raw_sequence)| Candidate {
            event_id: &event.event_id,
            raw_sequence: *raw_sequence,
        })
        .collect();
    let started = std::time::Instant::now();
    let verdicts = shared.decide(&copies).await;
    metrics::histogram!(shared_seen::METRIC_SECONDS).record(started.elapsed().as_secs_f64());
    drop(copies);
    for ((index, event, _), verdict) in asked.into_iter().zip(verdicts) {
        match verdict {
            Ok(verdict) => {
                metrics::counter!(shared_seen::METRIC_DECISIONS, "decision" => verdict.name())
                    .increment(1);
                if verdict == Verdict::Duplicate {
                    stats.duplicates_shared.add(1);
                    metrics::counter!("tgingest_dedupe_drops_total", "layer" => "shared")
                        .increment(1);
                    out.drop.push(index);
                } else {
                    out.pass.push((index, event));
                }
            }
            Err(e) => {
                metrics::counter!(shared_seen::METRIC_ERRORS, "op" => e.op()).increment(1);
                stats.shared_errors.add(1);
                out.undecided.push(index);
                out.error.get_or_insert(e);
            }
        }
    }
    out
}

/// The messages of one pull batch. When the connection drops while the batch is open, it ends
/// there: the server that took the pull request is gone, so waiting for the batch to expire
/// (async-nats waits 5 s past `expires`) would only delay the next fetch.
pub(crate) async fn take_batch(
    bus: &Bus,
    drops: u64,
    mut batch: jetstream::consumer::pull::Batch,
) -> Result<Vec<jetstream::Message>, ActorProcessingErr> {
    let mut messages = Vec::new();
    loop {
        tokio::select! {
            next = batch.next() => match next {
                Some(message) => messages.push(message?),
                None => return Ok(messages),
            },
            () = bus.dropped_since(drops) => return Ok(messages),
        }
    }
}

/// Awaits `work` on `messages`, sending them progress acks every `every` meanwhile, so a slow
/// batch is not redelivered while it is still being worked on.
async fn still_working_on<T>(
    messages: &[jetstream::Message],
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                for message in messages {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

/// A `TG_RAW` message that is not an event goes to `TG_DLQ` with the reason, so nothing is lost
/// silently and the stream is not blocked.
async fn dead_letter_undecodable(
    bus: &Bus,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    tracing::error!(subject = %message.subject, %reason, "undecodable TG_RAW message; dead-lettering it");
    let account = message.subject.split('.').nth(2).unwrap_or("unknown");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        REASON_HEADER,
        header_value(&format!("undecodable TG_RAW message: {reason}")),
    );
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers);
    bus.js
        .send_publish(dlq_subject(account), publish)
        .await?
        .await?;
    // Counted once parked: a failed publish leaves the message for redelivery, not counted.
    metrics::counter!("tgingest_dead_letters_total", "stage" => "dedupe").increment(1);
    Ok(())
}
