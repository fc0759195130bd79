//! The floor of this run: a reference pipeline that does only the bus and network work one event
//! costs in tgingest's design, on the same nats-server and against the same fake Switchboard,
//! measured before tgingest starts (so they do not compete). tgingest's throughput is reported
//! as a ratio to it: how close tgingest comes to the work its design cannot avoid.
//!
//! Per event, in three loops of this process (no actors, no policy, no event log, no seen-set):
//! 1. publish the event's `TG_RAW` encoding to a raw stream with `Nats-Msg-Id`, PubAcks awaited
//!    through a sliding window (as the account actors do);
//! 2. pull it from a durable consumer, publish the same bytes to a clean stream with the same
//!    Msg-Id, await the batch's PubAcks, ack the batch (as the dedupe and filter stages do);
//! 3. pull it from a durable consumer on the clean stream, decode it, build its `ingest.v1`
//!    envelope with tgingest's own builder, one MCP `tools/call` of `ingest` through tgingest's
//!    own client (one kept-alive connection pool), and ack it once Switchboard accepted it.
//!
//! The events are real ones (the run's simulated world after its policy), each made a new
//! message (its own message id and event id) so that Switchboard stores every one: the floor
//! includes one codec encode, one decode and one envelope per event, since the bytes on the wire
//! must be made somehow. The replay floor is an ordered consumer of the clean stream plus one
//! MCP call per event, after the fake forgot what the live floor stored (as the replay phase).
//!
//! The limits are the ones tgingest runs with (see [`Settings`]). The publisher may run at most
//! [`Settings::backlog`] events ahead of the last stage: every stage always has work (the load
//! saturates), but no CPU goes to a backlog that the bounded run never delivers.
//!
//! The floor uses its own streams and consumers and deletes them afterwards; the caller makes
//! the fake forget what the floor stored, so tgingest's run starts from the same state as before.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use serde::Serialize;
use tgingest::bus::Bus;
use tgingest::config::Config;
use tgingest::event::Event;
use tgingest::pipeline::clean::durable_consumer;
use tgingest::switchboard::{IngestReply, McpClient, envelope};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::procs::{NeighbourClock, NeighbourCpu, Neighbours};
use crate::remote_switchboard::RemoteSwitchboard;
use crate::scenario::FloorPlan;

const RAW: &str = "LOADTEST_FLOOR_RAW";
const CLEAN: &str = "LOADTEST_FLOOR_CLEAN";
const RAW_PREFIX: &str = "loadtest.floor.raw";
const CLEAN_PREFIX: &str = "loadtest.floor.clean";
/// How often the counters are read while the floor runs.
const POLL: Duration = Duration::from_millis(20);

/// The in-flight limits and fetch settings the floor runs with, each tgingest's own.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// PubAcks awaited at once by the publisher: tgingest's account actors each keep
    /// `tgingest::pipeline::ACCOUNT_WINDOW` in flight, and all of them share one JetStream
    /// context whose `max_ack_inflight` is `nats.max_ack_inflight` (`config.rs`, applied in
    /// `bus.rs`) with the filter stage's publishes: the smaller of accounts x window and
    /// `max_ack_inflight` less one raw → clean batch. (An un-awaited PubAck holds its slot, so a
    /// publisher that could take every slot would starve the raw → clean loop for good.)
    pub publish_window: usize,
    /// Messages the raw → clean loop pulls at once: `tgingest::pipeline::DEDUPE_BATCH` (the
    /// dedupe stage's fetch, `pipeline/clean.rs`, with `expires` 500 ms as there).
    pub dedupe_batch: usize,
    /// MCP calls in flight at once: `switchboard.max_inflight` (`config.rs`, the delivery
    /// actor's call slots in `pipeline/delivery.rs`, which fetches as many as are free, with
    /// `expires` 200 ms as there; the replay's slots in `pipeline/replay.rs` too).
    pub max_inflight: usize,
    /// Both consumers are made by `tgingest::pipeline::clean::durable_consumer`, the function
    /// tgingest's stages make theirs with (explicit acks, `ack_wait` = `nats.ack_wait`, its
    /// `max_ack_pending`).
    pub ack_wait_ms: u64,
    /// Events published and not yet through the last stage, at most.
    pub backlog: usize,
}

/// One floor figure: the sustained rate and what it cost per event, by process.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRate {
    /// Events fully through (Switchboard answered `accepted`) per second after the warm-up.
    pub events_per_s: f64,
    /// Events counted in the measured window, and its length.
    pub events: u64,
    pub window_s: f64,
    /// Events through in all (warm-up included).
    pub total_events: u64,
    /// Calls that did not come back `accepted` (0 on a fault-free fake).
    pub not_accepted: u64,
    /// CPU per event in the window: this process (the floor's loops), nats-server, the fake.
    pub driver_us_per_event: f64,
    pub nats_server_us_per_event: f64,
    pub fake_switchboard_us_per_event: f64,
}

/// The floor of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub settings: Settings,
    /// Publish → consume → publish → consume → MCP call.
    pub live: FloorRate,
    /// Ordered consume of the clean stream → MCP call (scenarios with a replay phase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<FloorRate>,
}

/// tgingest's throughput against the floor.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRatio {
    pub throughput_per_s: f64,
    pub floor_per_s: f64,
    /// throughput / floor.
    pub ratio: f64,
}

impl FloorRatio {
    /// `throughput` against `floor`.
    pub fn of(throughput: f64, floor: &FloorRate) -> FloorRatio {
        FloorRatio {
            throughput_per_s: throughput,
            floor_per_s: floor.events_per_s,
            ratio: throughput / floor.events_per_s.max(1e-9),
        }
    }
}

/// Up to `max` events the run's sources produce and its policy keeps (what `TG_CLEAN` carries),
/// round-robin over the accounts.
pub fn sample_events(
    world: &tgingest::telegram::simulated::SimulatedWorld,
    policy: &tgingest::policy::Policy,
    max: usize,
) -> Vec<Event> {
    use tgingest::policy::Decision;
    let accounts = world.accounts().clamp(1, 64);
    let mut out = Vec::with_capacity(max);
    for position in 0..(max as u64) {
        for account in 0..accounts {
            for event in world.event_at(account, position).events {
                if let Decision::Keep { event, .. } = policy.decide_owned(event) {
                    out.push(event);
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Event `i` of the floor: `pool[i % len]` made a new message (message id and event id of its
/// own), so Switchboard's idempotency key and content hash see a new event every time.
fn nth_event(pool: &[Event], i: u64) -> Event {
    let mut e = pool[(i % pool.len() as u64) as usize].clone();
    e.message_id = (1_000_000_000 + i).to_string();
    e.event_id = tgingest::event::event_id(
        &e.account_id,
        &e.chat.id,
        &e.message_id,
        e.kind,
        e.edit_version,
    );
    e.observed_at_us = tgingest::event::now_us();
    e
}

/// What the floor runs against.
pub struct Target<'a> {
    pub nats_url: &'a str,
    /// tgingest's config for this run (the same loader, the same variables).
    pub config: &'a Config,
    /// The run's accounts (the publish window scales with them).
    pub accounts: u32,
    pub fake: &'a RemoteSwitchboard,
    pub pids: Neighbours,
}

/// Measures the floor (and the replay floor when `replay`); deletes its streams and makes the
/// fake forget what it stored.
pub async fn measure(
    target: &Target<'_>,
    pool: &[Event],
    plan: &FloorPlan,
    replay: bool,
) -> anyhow::Result<Floor> {
    if pool.is_empty() {
        bail!("the floor has no events to send (the policy keeps none of the sample)");
    }
    let config = target.config;
    let bus = Bus::connect(target.nats_url, &config.nats, "loadtest-floor")
        .await
        .context("connect to nats-server for the floor")?;
    let client = McpClient::new(&config.switchboard).context("the floor's MCP client")?;
    let dedupe_batch = tgingest::pipeline::DEDUPE_BATCH;
    let shared = config.nats.max_ack_inflight as usize;
    let Some(publish_window) = publish_window(target.accounts, shared, dedupe_batch) else {
        bail!(
            "nats.max_ack_inflight ({shared}) leaves the floor's publisher no room beside a raw → clean batch of {dedupe_batch}"
        );
    };
    let max_inflight = config.switchboard.max_inflight.max(1) as usize;
    let settings = Settings {
        publish_window,
        dedupe_batch,
        max_inflight,
        ack_wait_ms: bus.ack_wait().as_millis() as u64,
        backlog: 2 * (publish_window + dedupe_batch) + max_inflight,
    };
    drop_streams(&bus).await;
    let result = run(&bus, &client, target, pool, plan, replay, &settings).await;
    drop_streams(&bus).await;
    target
        .fake
        .forget_all()
        .await
        .context("make the fake forget the floor's events")?;
    let (live, replay) = result?;
    Ok(Floor {
        settings,
        live,
        replay,
    })
}

/// The publisher's PubAck window: accounts x `ACCOUNT_WINDOW`, at most what one raw → clean
/// batch leaves of the context's `max_ack_inflight` (`None` if it leaves nothing). An
/// un-awaited PubAck holds its slot, so with more the publisher could hold every slot while the
/// raw → clean loop waits for one, and neither would move again.
fn publish_window(accounts: u32, max_ack_inflight: usize, batch: usize) -> Option<usize> {
    let room = max_ack_inflight.checked_sub(batch).filter(|r| *r > 0)?;
    Some(
        (accounts.max(1) as usize)
            .saturating_mul(tgingest::pipeline::ACCOUNT_WINDOW)
            .min(room),
    )
}

async fn drop_streams(bus: &Bus) {
    let _ = bus.js.delete_stream(RAW).await;
    let _ = bus.js.delete_stream(CLEAN).await;
}

async fn run(
    bus: &Bus,
    client: &McpClient,
    target: &Target<'_>,
    pool: &[Event],
    plan: &FloorPlan,
    replay: bool,
    settings: &Settings,
) -> anyhow::Result<(FloorRate, Option<FloorRate>)> {
    let streams = &target.config.streams;
    for (name, prefix, sc) in [
        (RAW, RAW_PREFIX, &streams.raw),
        (CLEAN, CLEAN_PREFIX, &streams.clean),
    ] {
        let subjects = format!("{prefix}.>");
        let cfg = tgingest::bus::stream_config(name, &subjects, sc, "the loadtest's floor");
        bus.js
            .create_stream(cfg)
            .await
            .with_context(|| format!("create the floor stream {name}"))?;
    }
    let counters = Arc::new(Counters::default());
    let credits = Arc::new(Semaphore::new(settings.backlog));
    let mut loops: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let sb = &target.config.switchboard;
    loops.spawn(publish(
        bus.clone(),
        pool.to_vec(),
        plan.max_events,
        settings.publish_window,
        credits.clone(),
    ));
    loops.spawn(raw_to_clean(bus.clone(), settings.dedupe_batch));
    let slots = Arc::new(Semaphore::new(settings.max_inflight));
    loops.spawn(deliver(
        bus.clone(),
        client.clone(),
        sb.clone(),
        slots.clone(),
        counters.clone(),
        credits,
    ));
    let live = watch(&mut loops, &counters, plan, plan.max_events, target.pids).await;
    loops.abort_all();
    while loops.join_next().await.is_some() {}
    settle(&slots, settings.max_inflight).await?;
    let live = live?;
    if !replay {
        return Ok((live, None));
    }
    target
        .fake
        .forget_all()
        .await
        .context("make the fake forget the live floor's events")?;
    let stream = bus.js.get_stream(CLEAN).await?;
    let available = stream.cached_info().state.messages;
    let counters = Arc::new(Counters::default());
    let slots = Arc::new(Semaphore::new(settings.max_inflight));
    loops.spawn(replay_clean(
        stream,
        client.clone(),
        sb.clone(),
        slots.clone(),
        counters.clone(),
    ));
    let replayed = watch(&mut loops, &counters, plan, available, target.pids).await;
    loops.abort_all();
    while loops.join_next().await.is_some() {}
    settle(&slots, settings.max_inflight).await?;
    Ok((live, Some(replayed?)))
}

/// Waits until no floor call is in flight: each holds one of `slots`' `max_inflight` permits,
/// and is spawned on its own so that stopping the loops does not cut it off. A call cut off
/// after its request left can still be stored by the fake (its handler runs on after the
/// client hung up) after `forget_all`, and shows up in tgingest's run as an event nobody sent:
/// a CI run once reported one. Waiting for every answer orders each store before the forget.
async fn settle(slots: &Semaphore, max_inflight: usize) -> anyhow::Result<()> {
    let all = u32::try_from(max_inflight).context("switchboard.max_inflight")?;
    match tokio::time::timeout(SETTLE_TIMEOUT, slots.acquire_many(all)).await {
        Ok(permits) => {
            drop(permits?);
            Ok(())
        }
        Err(_) => bail!(
            "the floor's Switchboard calls were still in flight {SETTLE_TIMEOUT:?} after it stopped"
        ),
    }
}

/// How long the floor waits for its last calls; the MCP client's own timeouts end each sooner.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Counters {
    /// Accepted by Switchboard (and acked, on the live path).
    done: AtomicU64,
    not_accepted: AtomicU64,
}

/// Runs until `plan.duration` has passed or `total` events are through (or a loop failed), and
/// measures the rate and CPU after `plan.warmup`.
async fn watch(
    loops: &mut JoinSet<anyhow::Result<()>>,
    counters: &Counters,
    plan: &FloorPlan,
    total: u64,
    pids: Neighbours,
) -> anyhow::Result<FloorRate> {
    let started = Instant::now();
    let (duration, warmup) = (plan.duration.0, plan.warmup.0);
    let mut mark: Option<(Instant, u64, NeighbourClock)> = None;
    // The rate's window ends at the last progress: a floor that ran out of events (the replay
    // floor reads a bounded stream) is not charged for the time it had nothing to do.
    let (mut last_done, mut last_progress) = (0, started);
    loop {
        tokio::time::sleep(POLL).await;
        if let Some(ended) = loops.try_join_next() {
            match ended {
                Ok(Err(e)) => return Err(e.context("the floor")),
                Err(e) if e.is_panic() => bail!("a floor loop panicked: {e}"),
                _ => {}
            }
        }
        let done = counters.done.load(Ordering::Relaxed);
        if done > last_done {
            (last_done, last_progress) = (done, Instant::now());
        }
        if mark.is_none() && started.elapsed() >= warmup {
            mark = Some((Instant::now(), done, NeighbourClock::start(pids)));
        }
        let settled = done + counters.not_accepted.load(Ordering::Relaxed);
        if started.elapsed() >= duration || settled >= total {
            break;
        }
    }
    let done = last_done;
    // A floor that ran out of events before the warm-up ended is measured from its start.
    let (t0, d0, cpu) = match mark {
        Some((t, d, clock)) if done > d => (t, d, clock.elapsed()),
        _ => (started, 0, NeighbourCpu::default()),
    };
    let events = done - d0;
    let window_s = last_progress.saturating_duration_since(t0).as_secs_f64();
    let per_event = |s: f64| s * 1e6 / events.max(1) as f64;
    Ok(FloorRate {
        events_per_s: events as f64 / window_s.max(1e-3),
        events,
        window_s,
        total_events: done,
        not_accepted: counters.not_accepted.load(Ordering::Relaxed),
        driver_us_per_event: per_event(cpu.driver_cpu_s),
        nats_server_us_per_event: per_event(cpu.nats_server_cpu_s),
        fake_switchboard_us_per_event: per_event(cpu.fake_switchboard_cpu_s),
    })
}

/// Publishes up to `max` events through a window of `window` PubAcks, one credit each.
async fn publish(
    bus: Bus,
    pool: Vec<Event>,
    max: u64,
    window: usize,
    credits: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let mut acks: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::with_capacity(window);
    for i in 0..max {
        // Waiting for credit, the PubAcks in the window are taken first: an un-awaited PubAck
        // holds one of the JetStream context's `max_ack_inflight` slots, which the raw → clean
        // loop shares (as tgingest's account actors take their PubAcks while they wait).
        let credit = match credits.try_acquire() {
            Ok(credit) => credit,
            Err(_) => {
                while let Some(ack) = acks.pop_front() {
                    ack.await.context("floor PubAck (raw)")?;
                }
                credits.acquire().await?
            }
        };
        credit.forget();
        let event = nth_event(&pool, i);
        let payload: bytes::Bytes = tgingest::codec::encode(&event)?.into();
        let subject = format!(
            "{RAW_PREFIX}.{}.{}",
            event.account_id,
            event.chat.kind.as_str()
        );
        acks.push_back(
            bus.send_with_id(&subject, &event.event_id, &payload)
                .await?,
        );
        if acks.len() >= window
            && let Some(oldest) = acks.pop_front()
        {
            oldest.await.context("floor PubAck (raw)")?;
        }
    }
    while let Some(ack) = acks.pop_front() {
        ack.await.context("floor PubAck (raw)")?;
    }
    Ok(())
}

/// Raw → clean: a batch pulled, every message published again with its Msg-Id, the PubAcks
/// awaited, the batch acked.
async fn raw_to_clean(bus: Bus, batch: usize) -> anyhow::Result<()> {
    let consumer = durable_consumer(&bus, RAW, "floor-dedupe")
        .await
        .map_err(|e| anyhow::anyhow!("the floor's raw consumer: {e}"))?;
    loop {
        let mut fetched = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("floor fetch (raw): {e}"))?;
        let mut messages = Vec::with_capacity(batch);
        while let Some(m) = fetched.next().await {
            messages.push(m.map_err(|e| anyhow::anyhow!("floor fetch (raw): {e}"))?);
        }
        let mut acks = Vec::with_capacity(messages.len());
        for m in &messages {
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let account = m.subject.split('.').nth(3).unwrap_or("0");
            let subject = format!("{CLEAN_PREFIX}.{account}");
            acks.push(bus.send_with_id(&subject, &id, &m.payload).await?);
        }
        for ack in acks {
            ack.await.context("floor PubAck (clean)")?;
        }
        for m in &messages {
            m.ack()
                .await
                .map_err(|e| anyhow::anyhow!("floor ack (raw): {e}"))?;
        }
    }
}

/// Clean → Switchboard: as many pulled as there are free call slots, one task per call, each
/// acked once Switchboard accepted it.
async fn deliver(
    bus: Bus,
    client: McpClient,
    sb: tgingest::config::SwitchboardConfig,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    credits: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let consumer = durable_consumer(&bus, CLEAN, "floor-switchboard")
        .await
        .map_err(|e| anyhow::anyhow!("the floor's clean consumer: {e}"))?;
    let sb = Arc::new(sb);
    loop {
        let free = slots.available_permits();
        if free == 0 {
            drop(slots.acquire().await?);
            continue;
        }
        let mut fetched = consumer
            .fetch()
            .max_messages(free)
            .expires(Duration::from_millis(200))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("floor fetch (clean): {e}"))?;
        while let Some(m) = fetched.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("floor fetch (clean): {e}"))?;
            let permit = slots.clone().acquire_owned().await?;
            let (client, sb, counters, credits) = (
                client.clone(),
                sb.clone(),
                counters.clone(),
                credits.clone(),
            );
            tokio::spawn(async move {
                if call(&client, &sb, &m.payload, &counters).await && m.ack().await.is_ok() {
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    credits.add_permits(1);
                }
                drop(permit);
            });
        }
    }
}

/// The replay floor: an ordered consumer of the clean stream from its start, one call per event,
/// `max_inflight` at once.
async fn replay_clean(
    stream: jetstream::stream::Stream,
    client: McpClient,
    sb: tgingest::config::SwitchboardConfig,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("the replay floor's ordered consumer")?;
    let mut messages = consumer
        .messages()
        .await
        .context("read the floor's clean stream")?;
    let sb = Arc::new(sb);
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let m = match messages.next().await {
            Some(m) => m.map_err(|e| anyhow::anyhow!("replay floor read: {e}"))?,
            None => bail!("the replay floor's consumer ended"),
        };
        let (client, sb, counters) = (client.clone(), sb.clone(), counters.clone());
        tokio::spawn(async move {
            if call(&client, &sb, &m.payload, &counters).await {
                counters.done.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
}

/// Decodes one clean message and submits its envelope; whether Switchboard accepted it as new.
async fn call(
    client: &McpClient,
    sb: &tgingest::config::SwitchboardConfig,
    payload: &[u8],
    counters: &Counters,
) -> bool {
    let accepted = match tgingest::codec::decode::<Event>(payload) {
        Ok(event) => matches!(
            client.ingest(&envelope(&event, sb)).await,
            Ok(IngestReply::Accepted {
                duplicate: false,
                ..
            })
        ),
        Err(_) => false,
    };
    if !accepted {
        counters.not_accepted.fetch_add(1, Ordering::Relaxed);
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_window_always_leaves_a_raw_to_clean_batch_its_slots() {
        // 50 accounts want 25,600 in flight; the shared 4,096 less a batch of 512 is the most.
        assert_eq!(publish_window(50, 4096, 512), Some(3584));
        // Few accounts: their own windows, which leave room anyway.
        assert_eq!(publish_window(2, 4096, 512), Some(1024));
        for accounts in [1, 7, 8, 9, 50, 10_000] {
            let w = publish_window(accounts, 4096, 512).expect("room");
            assert!(w + 512 <= 4096, "{accounts} accounts: window {w}");
        }
        assert_eq!(publish_window(50, 512, 512), None);
    }
}
