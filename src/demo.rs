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

use crate::config::Config;
use crate::event::Event;
use crate::node::{Node, NodeError};
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
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
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
    /// Events stored twice downstream (must be 0); `None` with a real Switchboard.
    pub duplicates_delivered: Option<u64>,
    pub resends_answered_duplicate: u64,
    /// Expected events that never arrived; `None` with a real Switchboard.
    pub lost: Option<u64>,
    /// Events that arrived although the policy should have stopped them; `None` with a real one.
    pub unexpected: Option<u64>,
    pub dead_lettered: u64,
    pub retries: u64,
    pub latency_ms: std::collections::BTreeMap<String, f64>,
    /// Delivered events per second over the whole run (first event to last delivery).
    pub throughput_per_s: f64,
    pub elapsed_s: f64,
    pub eventlog_ok: bool,
}

impl DemoSummary {
    /// Whether the run kept the guarantees: nothing lost, nothing stored twice, nothing leaked.
    pub fn ok(&self) -> bool {
        self.lost.unwrap_or(0) == 0
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
    let messages = ((plan.rate * plan.duration.as_secs_f64()).round() as u64).max(1);
    config.simulator.accounts = plan.accounts;
    config.simulator.rate = plan.rate;
    config.simulator.messages_per_account = messages;
    config.simulator.seed = plan.seed;
    // The demo's admin API takes any free port, so it runs beside a node on the default one.
    config.admin.listen = "127.0.0.1:0".into();
    let fake = match &plan.switchboard_url {
        Some(url) => {
            config.switchboard.url = url.clone();
            None
        }
        None => {
            let fake = FakeSwitchboard::start(FakeOptions::default())
                .await
                .map_err(DemoError::Fake)?;
            config.switchboard.url = fake.mcp_url();
            Some(fake)
        }
    };
    config.validate()?;

    let world = SimulatedWorld::new(config.simulator.clone())?;
    let policy = Policy::new(&config.policy)?;
    let expected: HashSet<String> = expected_after_policy(&world, &policy, messages)
        .map(|e| e.event_id)
        .collect();

    let node = Node::start(config.clone()).await?;
    let stats = node.start_pipeline().await?;
    let started = Instant::now();
    let started_us = crate::event::now_us();
    let deadline = started + plan.duration + plan.drain_timeout;
    let target = expected.len() as u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let arrived = match &fake {
            Some(f) => f.stats().stored,
            None => stats.delivered.get() + stats.resend_duplicates.get(),
        };
        if plan.progress {
            progress_line(&stats, started, arrived, target);
        }
        let sources_done = stats.produced.get() > 0 && started.elapsed() >= plan.duration;
        if (arrived >= target && sources_done) || Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = started.elapsed();
    if plan.progress {
        eprintln!();
    }
    let snapshot: StatsSnapshot = stats.snapshot();
    let eventlog_ok = node.eventlog.verify().ok;
    let nats_url = node.nats_url().to_string();
    node.shutdown().await?;

    let (duplicates_delivered, lost, unexpected, switchboard, last_delivery) = match &fake {
        Some(f) => {
            let delivered = f.stored_event_ids();
            let lost = expected.difference(&delivered).count() as u64;
            let unexpected = delivered.difference(&expected).count() as u64;
            let last = f.last_stored_at();
            f.stop().await;
            (
                Some(f.stored_twice() as u64),
                Some(lost),
                Some(unexpected),
                "built-in fake".to_string(),
                last,
            )
        }
        None => (None, None, None, config.switchboard.url.clone(), None),
    };
    // Throughput over the active part of the run: start to the last delivery (not the drain wait).
    let active_s = last_delivery
        .map(|last| (last.as_microsecond() - started_us) as f64 / 1e6)
        .unwrap_or(elapsed.as_secs_f64())
        .clamp(0.001, elapsed.as_secs_f64().max(0.001));
    Ok(DemoSummary {
        accounts: plan.accounts,
        rate_per_account: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        nats_url,
        switchboard,
        expected: target,
        produced: snapshot.produced,
        delivered: snapshot.delivered,
        filtered: snapshot.filtered,
        redacted: snapshot.redacted,
        duplicates_dropped: snapshot.duplicates_dropped,
        duplicates_delivered,
        resends_answered_duplicate: snapshot.resend_duplicates,
        lost,
        unexpected,
        dead_lettered: snapshot.dead_lettered,
        retries: snapshot.retries,
        latency_ms: snapshot.latency_ms,
        throughput_per_s: snapshot.delivered as f64 / active_s,
        elapsed_s: elapsed.as_secs_f64(),
        eventlog_ok,
    })
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
            + stats.duplicates_bus_clean.get(),
        stats.latency.quantile(0.99) as f64 / 1000.0,
    );
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
        "tgingest demo: {} accounts x {} msg/s x {}s ({})\n\
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
         \x20 dead-lettered               {}\n\
         \x20 retries                     {}\n\
         \x20 latency p50 / p99 / max     {:.1} / {:.1} / {:.1} ms\n\
         \x20 throughput                  {:.0} events/s over {:.1}s\n\
         \x20 event log                   {}\n",
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
        s.dead_lettered,
        s.retries,
        lat("p50"),
        lat("p99"),
        lat("max"),
        s.throughput_per_s,
        s.elapsed_s,
        if s.eventlog_ok {
            "verified"
        } else {
            "VERIFY FAILED"
        },
    )
}
