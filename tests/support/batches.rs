//! Batch mode (`switchboard.mode = "conversation_batches"`) through the real binary: starting a
//! node on the simulator, and checking exactly-once per message inside the fake's batches.

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

use tgingest::event::Event;
use tgingest::pipeline::batcher::batchable;
use tgingest::policy::{Policy, PolicyConfig};
use tgingest::switchboard::FakeSwitchboard;
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

use super::TestNats;

/// The variables of batch mode: flush every `flush_s` seconds, batches of at most
/// `max_messages`, and a 2 s ack wait (redeliveries after a kill come back sooner than with the
/// 5 s default).
pub fn batch_env(flush_s: u64, max_messages: u32) -> Vec<(&'static str, String)> {
    vec![
        (
            "TGINGEST_SWITCHBOARD_MODE",
            "conversation_batches".to_string(),
        ),
        ("TELEGRAM_USER_FLUSH_INTERVAL_S", flush_s.to_string()),
        (
            "TELEGRAM_USER_BUFFER_MAX_MESSAGES",
            max_messages.to_string(),
        ),
        ("TGINGEST_NATS_ACK_WAIT", "2s".to_string()),
    ]
}

/// Starts `tgingest run` in batch mode ([`batch_env`]) on `sim`; its log (JSON) goes to `log`.
pub fn start_batch_node(
    nats: &TestNats,
    fake: &FakeSwitchboard,
    dir: &std::path::Path,
    log: &std::path::Path,
    sim: &SimulatorConfig,
    flush_s: u64,
    max_messages: u32,
) -> Child {
    let extra = batch_env(flush_s, max_messages);
    super::spawn_sim_node(nats, fake, dir, log, sim, "batch-node", &extra)
}

/// The events the policy keeps from `sim` (the ground truth).
pub fn kept(sim: &SimulatorConfig) -> Vec<Event> {
    let world = SimulatedWorld::new(sim.clone()).expect("world");
    let policy = Policy::new(&PolicyConfig::default()).expect("policy");
    tgingest::demo::expected_after_policy(&world, &policy, sim.messages_per_account).collect()
}

/// The fake's member key of a batched event (`endpoint|chat|message id`).
pub fn member_key(event: &Event) -> String {
    format!(
        "telegram:user:{}|{}|{}",
        event.account_id, event.chat.id, event.message_id
    )
}

/// How the fake's record compares with the ground truth in batch mode.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Kept events not stored (in a batch, or on their own).
    pub lost: usize,
    /// Kept new messages in no stored batch.
    pub not_in_a_batch: usize,
    /// Kept new messages in two or more stored batches.
    pub in_two_batches: usize,
    /// Stored batch members nobody expected.
    pub unexpected_members: usize,
    /// Events stored twice (by `payload.raw.event_id(s)`).
    pub stored_twice: usize,
    /// Kept new messages that also arrived as single envelopes.
    pub sent_as_singles: usize,
    pub batches: u64,
}

impl BatchReport {
    /// Whether every kept event arrived, every new message inside exactly one batch.
    pub fn exactly_once(&self) -> bool {
        self.lost == 0
            && self.not_in_a_batch == 0
            && self.in_two_batches == 0
            && self.unexpected_members == 0
            && self.stored_twice == 0
            && self.sent_as_singles == 0
    }
}

/// Compares what `fake` stored with `kept`.
pub fn report(fake: &FakeSwitchboard, kept: &[Event]) -> BatchReport {
    let stored = fake.stored_event_ids();
    let members = fake.batch_members();
    let singles: HashSet<String> = fake
        .accepted()
        .iter()
        .filter_map(|a| {
            a.envelope
                .pointer("/payload/raw/event_id")?
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let batched: Vec<&Event> = kept.iter().filter(|e| batchable(e)).collect();
    let keys: HashSet<String> = batched.iter().map(|e| member_key(e)).collect();
    BatchReport {
        lost: kept
            .iter()
            .filter(|e| !stored.contains(&e.event_id))
            .count(),
        not_in_a_batch: batched
            .iter()
            .filter(|e| !members.contains_key(&member_key(e)))
            .count(),
        in_two_batches: members.values().filter(|n| **n > 1).count(),
        unexpected_members: members.keys().filter(|k| !keys.contains(*k)).count(),
        stored_twice: fake.stored_twice(),
        sent_as_singles: batched
            .iter()
            .filter(|e| singles.contains(&e.event_id))
            .count(),
        batches: fake.batches_stored(),
    }
}

/// Waits (up to `within`) until every kept event is stored; whether they all were.
pub async fn all_stored(fake: &FakeSwitchboard, kept: &[Event], within: Duration) -> bool {
    let up = Instant::now() + within;
    loop {
        let stored = fake.stored_event_ids();
        if kept.iter().all(|e| stored.contains(&e.event_id)) {
            return true;
        }
        if Instant::now() > up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record in `TG_BATCH`: the recorded batches.
pub async fn recorded(nats_url: &str) -> Vec<tgingest::switchboard::batch::Batch> {
    super::stream_messages(nats_url, "TG_BATCH")
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("a batch record"))
        .collect()
}

/// Event ids that more than one record of `batches` holds as a member.
pub fn members_in_two_records(batches: &[tgingest::switchboard::batch::Batch]) -> Vec<String> {
    let mut seen = HashSet::new();
    batches
        .iter()
        .flat_map(|b| b.members())
        .filter(|m| !seen.insert(m.event_id.clone()))
        .map(|m| m.event_id.clone())
        .collect()
}

/// A simulation of `accounts` accounts at `rate` positions/s, `messages` each, seeded.
pub fn simulation(accounts: u32, rate: f64, messages: u64, seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        accounts,
        rate,
        messages_per_account: messages,
        seed,
        ..SimulatorConfig::default()
    }
}

/// Waits (up to `within`) until every kept event is stored, stops `node` (SIGTERM), and checks
/// that everything arrived, every new message inside exactly one batch, and that the node
/// stopped cleanly (its `log` in the failure message); returns the report.
pub async fn stop_and_check(
    node: &mut Child,
    fake: &FakeSwitchboard,
    kept: &[Event],
    log: &std::path::Path,
    within: Duration,
) -> BatchReport {
    let arrived = all_stored(fake, kept, within).await;
    super::signal(node.id(), libc::SIGTERM);
    let status = super::wait_exit(node, Duration::from_secs(30));
    let report = report(fake, kept);
    eprintln!("{report:?}");
    assert!(arrived, "{report:?}\n{}", super::log_text(log));
    assert!(report.exactly_once(), "{report:?}");
    assert!(status.success(), "{status}");
    report
}
