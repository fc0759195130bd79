//! `tgingest demo`: the whole path on the embedded default, measured against the ground truth.
//!
//! N simulated accounts produce at R messages/s for D seconds; a node (embedded NATS unless a URL
//! is configured) runs the pipeline into the built-in fake Switchboard (or a real one). Because
//! the simulation is deterministic, the demo knows exactly which events the policy must let
//! through, so "lost" and "stored twice" are counted event by event, not estimated.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bus::STREAM_CLEAN;
use crate::config::Config;
use crate::event::Event;
use crate::node::{Node, NodeError};
use crate::pipeline::delivery::DELIVERY_CONSUMER;
use crate::pipeline::{PipelineStats, StatsSnapshot};
use crate::policy::{Decision, Policy};
use crate::switchboard::{FakeOptions, FakeSwitchboard};
use crate::telegram::simulated::SimulatedWorld;

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    pub accounts: u32,
    pub rate: f64,
    pub duration: Duration,
    pub seed: u64,
    /// A real Switchboard instead of the built-in fake.
    pub switchboard_url: Option<String>,
    /// How long to wait for the last deliveries after the sources have ended.
    pub drain_timeout: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Simulated accounts (the default) or real grammers clients on a fake DC.
    pub source: DemoSource,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// `simulated` or `fake-dc`.
    pub source: String,
    pub accounts: u32,
    pub rate_per_account: f64,
    pub duration_s: f64,
    pub nats_url: String,
    pub switchboard: String,
    /// Events the policy lets through, from the ground truth.
    pub expected: u64,
    pub produced: u64,
    pub delivered: u64,
    pub filtered: std::collections::BTreeMap<String, u64>,
    pub redacted: std::collections::BTreeMap<String, u64>,
    pub duplicates_dropped: std::collections::BTreeMap<String, u64>,
    /// Events stored twice downstream (must be 0): counted in the built-in fake's store, or, with
    /// an external Switchboard, events it answered "accepted, not a duplicate" more than once.
    pub duplicates_delivered: Option<u64>,
    pub resends_answered_duplicate: u64,
    /// Expected events the built-in fake never stored; `None` with an external Switchboard,
    /// whose store the demo cannot read (see `not_acknowledged`).
    pub lost: Option<u64>,
    /// Expected events Switchboard did not acknowledge (accepted or duplicate) by the drain
    /// deadline, from the delivery stage's per-event record of its answers (must be 0).
    pub not_acknowledged: u64,
    /// Events that arrived although the policy should have stopped them (the fake's store, or
    /// the external Switchboard's acknowledgements).
    pub unexpected: Option<u64>,
    /// Messages the delivery stage had not settled in `TG_CLEAN` when the node stopped (must be
    /// 0); `None` when JetStream could not say.
    pub pending_at_stop: Option<u64>,
    /// Whether the wait ended because everything expected was acknowledged and nothing was
    /// pending; `false`: the drain deadline passed first.
    pub drained: bool,
    pub dead_lettered: u64,
    pub retries: u64,
    pub latency_ms: std::collections::BTreeMap<String, f64>,
    /// Events the node delivered (Switchboard accepted as new) per second, from the start to
    /// the last acknowledgement.
    pub throughput_per_s: f64,
    /// `switchboard.mode`: `messages` or `conversation_batches`.
    pub mode: crate::config::DeliveryMode,
    /// `ingest` calls the node made (retries included): one per event, or one per batch.
    pub ingest_calls: u64,
    /// Those calls per second, over the same window as `throughput_per_s`.
    pub ingest_calls_per_s: f64,
    /// Conversation-history batches Switchboard accepted (batch mode).
    pub batches: u64,
    pub elapsed_s: f64,
    pub eventlog_ok: bool,
    /// Peak resident memory of the demo process (`VmHWM`, KiB; Linux only). The embedded
    /// nats-server is a separate process and not included.
    pub peak_rss_kib: Option<u64>,
}

/// `VmHWM` of this process from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl DemoSummary {
    /// Whether the run kept the guarantees: everything expected acknowledged (and, with the
    /// built-in fake, stored), nothing stored twice, nothing leaked, nothing left behind.
    pub fn ok(&self) -> bool {
        self.lost.unwrap_or(0) == 0
            && self.not_acknowledged == 0
            && self.pending_at_stop == Some(0)
            && self.duplicates_delivered.unwrap_or(0) == 0
            && self.unexpected.unwrap_or(0) == 0
            && self.eventlog_ok
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the fake Switchboard: {0}")]
    Fake(std::io::Error),
    #[error("cannot start the fake Telegram DC: {0}")]
    FakeDc(std::io::Error),
    #[error("cannot set up a demo account: {0}")]
    Accounts(crate::accounts::ControlError),
    #[error("only {listening} of {accounts} accounts were listening before the drain timeout")]
    NotReady { listening: usize, accounts: usize },
    #[error("{FAKE_DC_SEED_ENV}={value:?} is not an unsigned 64-bit integer")]
    Seed { value: String },
}

/// The ground truth: every unique event the simulation produces for positions below `upto`,
/// as the policy lets it through (redacted); what must arrive downstream, each exactly once.
pub fn expected_after_policy<'a>(
    world: &'a SimulatedWorld,
    policy: &'a Policy,
    upto: u64,
) -> impl Iterator<Item = Event> + 'a {
    (0..world.accounts())
        .flat_map(move |i| world.expected(i, upto))
        .filter_map(|e| match policy.decide_owned(e) {
            Decision::Keep { event, .. } => Some(event),
            Decision::Drop { .. } => None,
        })
}

/// Runs the demo on `config` (whose data dir the caller chose).
pub async fn run(mut config: Config, plan: &DemoPlan) -> Result<DemoSummary, DemoError> {
    if plan.source == DemoSource::FakeDc {
        return run_fake_dc(config, plan).await;
    }
    let messages = ((plan.rate * plan.duration.as_secs_f64()).round() as u64).max(1);
    config.simulator.accounts = plan.accounts;
    config.simulator.rate = plan.rate;
    config.simulator.messages_per_account = messages;
    config.simulator.seed = plan.seed;
    // The demo's admin API takes any free port, so it runs beside a node on the default one.
    config.admin.listen = "127.0.0.1:0".into();
    let fake = switchboard_for(&mut config, plan).await?;
    config.validate()?;

    let world = SimulatedWorld::new(config.simulator.clone())?;
    let policy = Policy::new(&config.policy)?;
    let expected: HashSet<String> = expected_after_policy(&world, &policy, messages)
        .map(|e| e.event_id)
        .collect();

    let node = Node::start(config.clone()).await?;
    let stats = node.start_pipeline_with(true).await?;
    let started = Instant::now();
    let started_us = crate::event::now_us();
    let deadline = started + plan.duration + plan.drain_timeout;
    let target = expected.len() as u64;
    let sources_done = || stats.produced.get() > 0 && started.elapsed() >= plan.duration;
    let drain = await_delivery(
        &node,
        &stats,
        &expected,
        deadline,
        Duration::from_secs(1),
        sources_done,
        |arrived| {
            if plan.progress {
                progress_line(&stats, started, arrived, target);
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    if plan.progress {
        eprintln!();
    }
    let snapshot: StatsSnapshot = stats.snapshot();
    let eventlog_ok = node.eventlog.verify().ok;
    let nats_url = node.nats_url().to_string();
    node.shutdown().await?;
    let compared = compare(fake.as_ref(), &stats, &expected, &config.switchboard.url).await;
    Ok(DemoSummary {
        source: "simulated".into(),
        accounts: plan.accounts,
        rate_per_account: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        nats_url,
        switchboard: compared.switchboard,
        expected: target,
        produced: snapshot.produced,
        delivered: snapshot.delivered,
        filtered: snapshot.filtered,
        redacted: snapshot.redacted,
        duplicates_dropped: snapshot.duplicates_dropped,
        duplicates_delivered: compared.duplicates_delivered,
        resends_answered_duplicate: snapshot.resend_duplicates,
        lost: compared.lost,
        not_acknowledged: compared.not_acknowledged,
        unexpected: compared.unexpected,
        pending_at_stop: drain.pending,
        drained: drain.drained,
        dead_lettered: snapshot.dead_lettered,
        retries: snapshot.retries,
        latency_ms: snapshot.latency_ms,
        throughput_per_s: throughput(snapshot.delivered, &stats, started_us, elapsed),
        mode: config.switchboard.mode,
        ingest_calls: snapshot.ingest_calls,
        ingest_calls_per_s: throughput(snapshot.ingest_calls, &stats, started_us, elapsed),
        batches: snapshot.batches_delivered,
        elapsed_s: elapsed.as_secs_f64(),
        eventlog_ok,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// How the wait for the last deliveries ended.
struct Drain {
    /// Messages the delivery stage had not settled in `TG_CLEAN` at the end.
    pending: Option<u64>,
    /// Everything expected acknowledged and nothing pending (rather than the deadline).
    drained: bool,
}

/// Messages the delivery stage's consumer on `TG_CLEAN` has not settled: not yet handed out,
/// or handed out and not acknowledged. `None` when JetStream cannot say.
async fn delivery_backlog(node: &Node) -> Option<u64> {
    let backlog = |stream: &'static str, consumer: &'static str| async move {
        let stream = node.bus.js.get_stream(stream).await.ok()?;
        let info = stream.consumer_info(consumer).await.ok()?;
        Some(info.num_pending + info.num_ack_pending as u64)
    };
    let mut pending = backlog(STREAM_CLEAN, DELIVERY_CONSUMER).await?;
    // Batch mode: what the batcher holds, and what is recorded but not yet sent.
    if node.config.switchboard.mode == crate::config::DeliveryMode::ConversationBatches {
        pending += backlog(STREAM_CLEAN, crate::bus::BATCHER_CONSUMER).await?;
        pending += backlog(
            crate::bus::STREAM_BATCH,
            crate::bus::BATCH_DELIVERY_CONSUMER,
        )
        .await?;
    }
    Some(pending)
}

/// How many of `expected` Switchboard has acknowledged so far (none without the ledger).
fn acknowledged_of(stats: &PipelineStats, expected: &HashSet<String>) -> u64 {
    let missing = stats
        .acknowledged
        .as_ref()
        .map_or(expected.len() as u64, |ledger| ledger.missing(expected));
    expected.len() as u64 - missing
}

/// Waits, checking every `tick`, until the sources are `done`, every expected event is
/// acknowledged by Switchboard and the delivery consumer has nothing pending, or until
/// `deadline`; `progress` gets the number of expected events acknowledged so far.
async fn await_delivery(
    node: &Node,
    stats: &PipelineStats,
    expected: &HashSet<String>,
    deadline: Instant,
    tick: Duration,
    done: impl Fn() -> bool,
    mut progress: impl FnMut(u64),
) -> Drain {
    loop {
        let arrived = acknowledged_of(stats, expected);
        progress(arrived);
        let pending = delivery_backlog(node).await;
        if arrived == expected.len() as u64 && pending == Some(0) && done() {
            return Drain {
                pending,
                drained: true,
            };
        }
        if Instant::now() >= deadline {
            return Drain {
                pending,
                drained: false,
            };
        }
        tokio::time::sleep(tick).await;
    }
}

/// The demo's verdicts, from the built-in fake's store or the node's record of an external
/// Switchboard's answers.
struct Compared {
    switchboard: String,
    duplicates_delivered: Option<u64>,
    lost: Option<u64>,
    not_acknowledged: u64,
    unexpected: Option<u64>,
}

/// Compares `expected` with what arrived; stops the built-in `fake`.
async fn compare(
    fake: Option<&FakeSwitchboard>,
    stats: &PipelineStats,
    expected: &HashSet<String>,
    url: &str,
) -> Compared {
    let acknowledged = stats
        .acknowledged
        .as_ref()
        .map(|ledger| ledger.acknowledged())
        .unwrap_or_default();
    let not_acknowledged = expected.difference(&acknowledged).count() as u64;
    match fake {
        Some(f) => {
            let stored = f.stored_event_ids();
            let compared = Compared {
                switchboard: "built-in fake".to_string(),
                duplicates_delivered: Some(f.stored_twice() as u64),
                lost: Some(expected.difference(&stored).count() as u64),
                not_acknowledged,
                unexpected: Some(stored.difference(expected).count() as u64),
            };
            f.stop().await;
            compared
        }
        None => Compared {
            switchboard: url.to_string(),
            duplicates_delivered: stats.acknowledged.as_ref().map(|l| l.stored_twice()),
            lost: None,
            not_acknowledged,
            unexpected: Some(acknowledged.difference(expected).count() as u64),
        },
    }
}

/// Delivered events per second over the active part of the run: from `started_us` to the last
/// acknowledgement (not the drain wait), at most `elapsed`.
fn throughput(delivered: u64, stats: &PipelineStats, started_us: i64, elapsed: Duration) -> f64 {
    let active_s = stats
        .acknowledged
        .as_ref()
        .and_then(|ledger| ledger.last_at_us())
        .map(|last| (last - started_us) as f64 / 1e6)
        .unwrap_or(elapsed.as_secs_f64())
        .clamp(0.001, elapsed.as_secs_f64().max(0.001));
    delivered as f64 / active_s
}

fn progress_line(stats: &Arc<PipelineStats>, started: Instant, arrived: u64, target: u64) {
    eprint!(
        "\r[{:>4.0}s] produced {:>8}  delivered {:>8}/{:<8}  filtered {:>6}  duplicates dropped {:>6}  p99 {:>6.1} ms ",
        started.elapsed().as_secs_f64(),
        stats.produced.get(),
        arrived,
        target,
        stats.filtered.total(),
        stats.duplicates_bus_raw.get()
            + stats.duplicates_seen_set.get()
            + stats.duplicates_shared.get()
            + stats.duplicates_bus_clean.get(),
        stats.latency.quantile(0.99) as f64 / 1000.0,
    );
}

/// Points `config` at the real Switchboard the plan names, or starts the built-in fake and
/// points it there (returned, so the demo can count what it stored).
async fn switchboard_for(
    config: &mut Config,
    plan: &DemoPlan,
) -> Result<Option<FakeSwitchboard>, DemoError> {
    match &plan.switchboard_url {
        Some(url) => {
            config.switchboard.url = url.clone();
            Ok(None)
        }
        None => {
            let fake = FakeSwitchboard::start(FakeOptions::default())
                .await
                .map_err(DemoError::Fake)?;
            config.switchboard.url = fake.mcp_url();
            Ok(Some(fake))
        }
    }
}

/// The summary as a human reads it.
pub fn render(s: &DemoSummary) -> String {
    let map = |m: &std::collections::BTreeMap<String, u64>| {
        if m.values().all(|v| *v == 0) {
            "none".to_string()
        } else {
            m.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let opt = |v: Option<u64>| {
        v.map_or_else(
            || "unknown (external Switchboard)".to_string(),
            |v| v.to_string(),
        )
    };
    let lat = |k: &str| s.latency_ms.get(k).copied().unwrap_or(0.0);
    format!(
        "tgingest demo: {} {} accounts x {} msg/s x {}s ({})\n\
         \x20 NATS                        {}\n\
         \x20 Switchboard                 {}\n\
         \x20 produced                    {}\n\
         \x20 expected after policy       {}\n\
         \x20 delivered                   {}\n\
         \x20 filtered                    {}\n\
         \x20 redacted                    {}\n\
         \x20 duplicates dropped          {}\n\
         \x20 duplicates delivered        {}\n\
         \x20 re-sends answered duplicate {}\n\
         \x20 lost                        {}\n\
         \x20 not acknowledged            {} of {}\n\
         \x20 pending in TG_CLEAN at stop {}\n\
         \x20 dead-lettered               {}\n\
         \x20 retries                     {}\n\
         \x20 latency p50 / p99 / max     {:.1} / {:.1} / {:.1} ms\n\
         \x20 throughput                  {:.0} events/s over {:.1}s\n\
         \x20 ingest calls                {} ({:.0}/s; mode {}, {} batches)\n\
         \x20 event log                   {}\n\
         \x20 peak RSS (this process)     {}\n",
        s.source,
        s.accounts,
        s.rate_per_account,
        s.duration_s,
        if s.ok() { "OK" } else { "PROBLEMS FOUND" },
        s.nats_url,
        s.switchboard,
        s.produced,
        s.expected,
        s.delivered,
        map(&s.filtered),
        map(&s.redacted),
        map(&s.duplicates_dropped),
        opt(s.duplicates_delivered),
        s.resends_answered_duplicate,
        opt(s.lost),
        s.not_acknowledged,
        s.expected,
        match (s.pending_at_stop, s.drained) {
            (Some(n), true) => n.to_string(),
            (Some(n), false) => format!("{n} (the drain timeout passed first)"),
            (None, _) => "unknown (JetStream did not say)".to_string(),
        },
        s.dead_lettered,
        s.retries,
        lat("p50"),
        lat("p99"),
        lat("max"),
        s.throughput_per_s,
        s.elapsed_s,
        s.ingest_calls,
        s.ingest_calls_per_s,
        match s.mode {
            crate::config::DeliveryMode::Messages => "messages",
            crate::config::DeliveryMode::ConversationBatches => "conversation_batches",
        },
        s.batches,
        if s.eventlog_ok {
            "verified"
        } else {
            "VERIFY FAILED"
        },
        s.peak_rss_kib.map_or_else(
            || "unknown".to_string(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0)
        ),
    )
}

/// Where the demo's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoSource {
    /// The deterministic simulation inside the node (no Telegram client at all).
    #[default]
    Simulated,
    /// An in-process fake Telegram DC; every account runs the real grammers client against it.
    FakeDc,
}

/// Accounts that share one group, supergroup, broadcast channel and forum in the fake-DC demo.
const COHORT: usize = 5;

/// A Telethon `StringSession` for `auth_key` at `addr` (a fake DC): how the demo and tests import
/// fake-DC accounts through the same path (and audit records) as an operator, instead of
/// writing sessions and registry records behind the node's back.
pub fn telethon_session_string(
    dc_id: i32,
    addr: std::net::SocketAddr,
    auth_key: &[u8; 256],
) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(263);
    bytes.push(u8::try_from(dc_id).unwrap_or(2));
    match addr.ip() {
        std::net::IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&addr.port().to_be_bytes());
    bytes.extend_from_slice(auth_key);
    format!(
        "1{}",
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    )
}

/// Names the seed of the fake-DC demo's account secrets (a `u64`); unset, the seed is random.
///
/// Why a seed and not a file the demo writes: the log canary (`tests/log_canary.rs`) must know
/// every auth key, session string and phone the run has without asking the run under test to
/// report them; with the seed it derives them itself through [`fake_dc_account_key`] and
/// [`fake_dc_account_phone`], the functions the demo uses on the same path seeded or not.
pub const FAKE_DC_SEED_ENV: &str = "TGINGEST_DEMO_FAKE_DC_SEED";

/// Per-account generator of the fake-DC demo: seeded by `(seed, index)`, so every account's
/// secrets are known from the seed alone.
fn account_rng(seed: u64, index: usize) -> rand::rngs::StdRng {
    use rand::SeedableRng as _;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    rand::rngs::StdRng::from_seed(bytes)
}

/// The auth key the fake DC issues to demo account `index` under `seed`.
pub fn fake_dc_account_key(seed: u64, index: usize) -> [u8; 256] {
    use rand::Rng as _;
    let mut key = [0u8; 256];
    account_rng(seed, index).fill(&mut key[..]);
    key
}

/// The phone number (digits only, as Telegram's `user.phone`: E.164 without the `+`) of demo
/// account `index` under `seed`: in Telegram's test range `99966 2 XXXX`, last digits random.
pub fn fake_dc_account_phone(seed: u64, index: usize) -> String {
    use rand::Rng as _;
    let mut rng = account_rng(seed, index);
    // Past the key's bytes, so the phone is not a function of the key's first bytes.
    let mut key = [0u8; 256];
    rng.fill(&mut key[..]);
    format!("999662{:04}", rng.random_range(0..10_000u32))
}

/// The seed [`FAKE_DC_SEED_ENV`] names, or `None` when it is unset.
fn fake_dc_seed_from_env() -> Result<Option<u64>, DemoError> {
    match std::env::var(FAKE_DC_SEED_ENV) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| DemoError::Seed { value }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(DemoError::Seed {
            value: value.to_string_lossy().into_owned(),
        }),
    }
}

/// One chat the driver writes into, and which accounts see each message in it.
pub struct DriverChat {
    pub chat: crate::telegram::fakedc::ChatId,
    /// The non-account user who writes.
    pub from: i64,
    pub kind: crate::event::ChatKind,
    /// The marked chat id as the accounts see it.
    pub marked: String,
    pub members: Vec<i64>,
}

/// The fake-DC world of the demo (and of the loadtest's `fake-dc` source): `n` accounts, each
/// with a private chat with its own friend, and per cohort of five accounts one basic group,
/// supergroup, broadcast channel and forum written into by the cohort's writer.
pub struct FakeDcLayout {
    /// The accounts' user ids (also their tgingest account ids, as strings).
    pub accounts: Vec<i64>,
    /// Telethon session strings, one per account, for `POST /v1/accounts/import`.
    pub sessions: Vec<String>,
    pub chats: Vec<DriverChat>,
    /// Per account (index into `accounts`): the chats the driver writes into for it.
    pub chats_of: Vec<Vec<usize>>,
}

impl FakeDcLayout {
    /// Creates the accounts (secrets from a random seed), users and chats on `dc`.
    pub fn build(dc: &crate::telegram::fakedc::FakeDc, n: usize) -> FakeDcLayout {
        Self::build_seeded(dc, n, rand::random())
    }

    /// Creates the accounts, users and chats on `dc`; account `i` gets the auth key
    /// [`fake_dc_account_key`]`(seed, i)` and the phone [`fake_dc_account_phone`]`(seed, i)`.
    pub fn build_seeded(dc: &crate::telegram::fakedc::FakeDc, n: usize, seed: u64) -> FakeDcLayout {
        use crate::event::{ChatKind, marked_chat_id};
        use crate::telegram::fakedc::{ChannelKind, ChatId};
        let mut accounts = Vec::with_capacity(n);
        let mut sessions = Vec::with_capacity(n);
        for i in 0..n {
            let key = fake_dc_account_key(seed, i);
            let phone = fake_dc_account_phone(seed, i);
            let me = dc.add_account_with(&format!("Account {i}"), key, Some(&phone));
            accounts.push(me);
            sessions.push(telethon_session_string(dc.dc_id(), dc.addr(), &key));
        }
        // Each account: a private chat with its own friend; each cohort of accounts: one chat of
        // every other kind, written into by the cohort's friend.
        let mut chats_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut chats: Vec<DriverChat> = Vec::new();
        for (i, me) in accounts.iter().enumerate() {
            let friend = dc.add_user(&format!("Friend {i}"));
            chats_of[i].push(chats.len());
            chats.push(DriverChat {
                chat: ChatId::Private(*me, friend),
                from: friend,
                kind: ChatKind::Private,
                marked: marked_chat_id(ChatKind::Private, friend),
                members: vec![*me],
            });
        }
        for (c, cohort) in accounts.chunks(COHORT).enumerate() {
            let writer = dc.add_user(&format!("Writer {c}"));
            let mut members = cohort.to_vec();
            members.push(writer);
            let group = dc.create_group(&format!("Group {c}"), &members);
            let kinds = [
                (group, ChatKind::Group),
                (
                    dc.create_channel(&format!("Super {c}"), ChannelKind::Supergroup, &members),
                    ChatKind::Supergroup,
                ),
                (
                    dc.create_channel(&format!("News {c}"), ChannelKind::Broadcast, &members),
                    ChatKind::Channel,
                ),
                (
                    dc.create_channel(&format!("Forum {c}"), ChannelKind::Forum, &members),
                    ChatKind::Supergroup,
                ),
            ];
            for (chat, kind) in kinds {
                let bare = match chat {
                    ChatId::Group(id) | ChatId::Channel(id) => id,
                    ChatId::Private(_, other) => other,
                };
                let idx = chats.len();
                chats.push(DriverChat {
                    chat,
                    from: writer,
                    kind,
                    marked: marked_chat_id(kind, bare),
                    members: cohort.to_vec(),
                });
                for k in 0..cohort.len() {
                    chats_of[c * COHORT + k].push(idx);
                }
            }
        }
        FakeDcLayout {
            accounts,
            sessions,
            chats,
            chats_of,
        }
    }

    /// Sends the `turn`-th message driven for account index `a` (round-robin over its chats)
    /// and returns the event ids the policy lets through, one per account that sees it.
    pub fn send(
        &self,
        dc: &crate::telegram::fakedc::FakeDc,
        policy: &Policy,
        a: usize,
        turn: usize,
        text: &str,
    ) -> Vec<String> {
        let own = &self.chats_of[a];
        let chat = &self.chats[own[turn % own.len()]];
        let mut ids = Vec::new();
        if let Some(msg) = dc.send_message(
            chat.chat,
            chat.from,
            text,
            crate::telegram::fakedc::SendOptions::default(),
        ) {
            for member in &chat.members {
                if let Some(id) = msg.id_for(*member)
                    && let Some(event) = expected_event_id(policy, *member, chat, id)
                {
                    ids.push(event);
                }
            }
        }
        ids
    }
}

/// The event id the normalizer gives a new message `message_id` in `chat` seen by `account`,
/// if the policy lets such a message through (policy rules look at chat, kind and sender, not
/// at the text, so a stub event decides exactly).
pub fn expected_event_id(
    policy: &Policy,
    account: i64,
    chat: &DriverChat,
    message_id: i32,
) -> Option<String> {
    use crate::event::{Chat, EventKind, SCHEMA_VERSION, Sender, Source, event_id};
    let account_id = account.to_string();
    let message_id = message_id.to_string();
    let id = event_id(
        &account_id,
        &chat.marked,
        &message_id,
        EventKind::Message,
        0,
    );
    let stub = Event {
        schema_version: SCHEMA_VERSION,
        event_id: id.clone(),
        account_id,
        kind: EventKind::Message,
        chat: Chat {
            kind: chat.kind,
            id: chat.marked.clone(),
            title: None,
        },
        sender: (chat.kind != crate::event::ChatKind::Channel).then(|| Sender {
            id: chat.from.to_string(),
            display_name: None,
            is_self: false,
        }),
        message_id,
        topic_id: None,
        reply_to: None,
        sent_at_us: crate::event::now_us(),
        edit_version: 0,
        text: String::new(),
        media: None,
        source: Source::Live,
        observed_at_us: crate::event::now_us(),
    };
    match policy.decide_owned(stub) {
        Decision::Keep { .. } => Some(id),
        Decision::Drop { .. } => None,
    }
}

/// Runs the demo against an in-process fake Telegram DC with real grammers clients.
///
/// Ground truth: every message the driver sent, as the event id the normalizer computes for each
/// account that sees it (`event::event_id(account, chat, message id, message, 0)`), kept if the
/// policy keeps it; compared with the event ids the fake Switchboard stored.
pub async fn run_fake_dc(mut config: Config, plan: &DemoPlan) -> Result<DemoSummary, DemoError> {
    use crate::telegram::fakedc::{FakeDc, FakeDcConfig};

    config.simulator.accounts = 0;
    config.admin.listen = "127.0.0.1:0".into();
    if config.telegram.api_id <= 0 {
        // Any positive id: the fake DC does not check it, and it turns the grammers adapter on.
        config.telegram.api_id = 1;
    }
    // The accounts start before the driver does: nothing to backfill.
    config.telegram.backfill_window_h = 0;
    let seed = fake_dc_seed_from_env()?;
    let fake = switchboard_for(&mut config, plan).await?;
    config.validate()?;
    let policy = Policy::new(&config.policy)?;

    let dc = FakeDc::start(FakeDcConfig::default())
        .await
        .map_err(DemoError::FakeDc)?;
    if seed.is_some() {
        tracing::info!("fake dc: account secrets from {FAKE_DC_SEED_ENV}");
    }
    let layout = FakeDcLayout::build_seeded(
        &dc,
        plan.accounts.max(1) as usize,
        seed.unwrap_or_else(rand::random),
    );

    let node = match Node::start(config.clone()).await {
        Ok(node) => node,
        Err(e) => {
            dc.stop().await;
            return Err(e.into());
        }
    };
    let driven = drive_fake_dc(&node, &dc, plan, &layout, &policy).await;
    let eventlog_ok = node.eventlog.verify().ok;
    let nats_url = node.nats_url().to_string();
    let shutdown = node.shutdown().await.map_err(DemoError::from);
    dc.stop().await;
    let driven = match driven.and_then(|d| shutdown.map(|()| d)) {
        Ok(driven) => driven,
        Err(e) => {
            if let Some(f) = &fake {
                f.stop().await;
            }
            return Err(e);
        }
    };
    let snapshot = driven.stats.snapshot();
    let compared = compare(
        fake.as_ref(),
        &driven.stats,
        &driven.expected,
        &config.switchboard.url,
    )
    .await;
    Ok(DemoSummary {
        source: "fake-dc".into(),
        accounts: plan.accounts,
        rate_per_account: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        nats_url,
        switchboard: compared.switchboard,
        expected: driven.expected.len() as u64,
        // Messages the driver sent (each is seen by one or more accounts).
        produced: driven.sent,
        delivered: snapshot.delivered,
        filtered: snapshot.filtered,
        redacted: snapshot.redacted,
        duplicates_dropped: snapshot.duplicates_dropped,
        duplicates_delivered: compared.duplicates_delivered,
        resends_answered_duplicate: snapshot.resend_duplicates,
        lost: compared.lost,
        not_acknowledged: compared.not_acknowledged,
        unexpected: compared.unexpected,
        pending_at_stop: driven.drain.pending,
        drained: driven.drain.drained,
        dead_lettered: snapshot.dead_lettered,
        retries: snapshot.retries,
        latency_ms: snapshot.latency_ms,
        throughput_per_s: throughput(
            snapshot.delivered,
            &driven.stats,
            driven.started_us,
            driven.elapsed,
        ),
        mode: config.switchboard.mode,
        ingest_calls: snapshot.ingest_calls,
        ingest_calls_per_s: throughput(
            snapshot.ingest_calls,
            &driven.stats,
            driven.started_us,
            driven.elapsed,
        ),
        batches: snapshot.batches_delivered,
        elapsed_s: driven.elapsed.as_secs_f64(),
        eventlog_ok,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// What the driver sent and how the deliveries went.
struct Driven {
    /// Event ids that must arrive.
    expected: HashSet<String>,
    /// Messages sent.
    sent: u64,
    stats: Arc<PipelineStats>,
    /// When sending began (µs since the epoch).
    started_us: i64,
    /// From the start of sending to the end of the wait for deliveries.
    elapsed: Duration,
    drain: Drain,
}

async fn drive_fake_dc(
    node: &Node,
    dc: &crate::telegram::fakedc::FakeDc,
    plan: &DemoPlan,
    layout: &FakeDcLayout,
    policy: &Policy,
) -> Result<Driven, DemoError> {
    use crate::accounts::ImportFormat;
    use crate::accounts::login::Sensitive;
    /// The demo itself acts here, in-process, not through the admin API: its audit records name
    /// it as their principal.
    const DEMO_PRINCIPAL: &str = "demo";
    let accounts = &layout.accounts;
    let sessions = &layout.sessions;

    // The pipeline stages (no simulated accounts): they drain the bus into the Switchboard.
    let stats = node.start_pipeline_with(true).await?;
    for (me, session) in accounts.iter().zip(sessions) {
        let id = me.to_string();
        node.accounts
            .import(
                ImportFormat::Telethon,
                &Sensitive::new(session.clone()),
                Some(&id),
                None,
                DEMO_PRINCIPAL,
            )
            .await
            .map_err(DemoError::Accounts)?;
        node.accounts
            .consent(
                &id,
                "tgingest demo",
                "fake-dc demo accounts",
                DEMO_PRINCIPAL,
            )
            .await
            .map_err(DemoError::Accounts)?;
    }
    // Live only once every account listens (its update stream is subscribed on the fake DC).
    let ready_by = Instant::now() + plan.drain_timeout;
    loop {
        let listening = accounts
            .iter()
            .filter(|me| dc.subscribed_connections(**me) > 0)
            .count();
        if plan.progress {
            eprint!("\r accounts listening {listening}/{} ", accounts.len());
        }
        if listening == accounts.len() {
            if plan.progress {
                eprintln!();
            }
            break;
        }
        if Instant::now() >= ready_by {
            return Err(DemoError::NotReady {
                listening,
                accounts: accounts.len(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second for catch-up (getDifference) to settle before the first live message.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let started_us = crate::event::now_us();
    let total_rate = plan.rate * accounts.len() as f64;
    let mut expected = HashSet::new();
    let mut sent = 0u64;
    let mut turn = vec![0usize; accounts.len()];
    let mut next_account = 0usize;
    let tick = Duration::from_millis(50);
    let mut next_progress = Duration::ZERO;
    while started.elapsed() < plan.duration {
        let due = (total_rate * started.elapsed().as_secs_f64()) as u64;
        while sent < due {
            let a = next_account % accounts.len();
            next_account += 1;
            let text = format!("demo message {sent}");
            expected.extend(layout.send(dc, policy, a, turn[a], &text));
            turn[a] += 1;
            sent += 1;
        }
        if plan.progress && started.elapsed() >= next_progress {
            next_progress += Duration::from_secs(1);
            fake_dc_progress(started, sent, acknowledged_of(&stats, &expected), &expected);
        }
        tokio::time::sleep(tick).await;
    }
    // Wait for the deliveries whichever Switchboard it is: stopping the node now would leave
    // events in TG_CLEAN of a data dir about to be deleted.
    let deadline = Instant::now() + plan.drain_timeout;
    let drain = await_delivery(
        node,
        &stats,
        &expected,
        deadline,
        Duration::from_millis(500),
        || true,
        |arrived| {
            if plan.progress {
                fake_dc_progress(started, sent, arrived, &expected);
            }
        },
    )
    .await;
    if plan.progress {
        eprintln!();
    }
    Ok(Driven {
        expected,
        sent,
        stats,
        started_us,
        elapsed: started.elapsed(),
        drain,
    })
}

fn fake_dc_progress(started: Instant, sent: u64, arrived: u64, expected: &HashSet<String>) {
    eprint!(
        "\r[{:>4.0}s] sent {sent:>8}  acknowledged {arrived:>8}/{:<8} ",
        started.elapsed().as_secs_f64(),
        expected.len()
    );
}
