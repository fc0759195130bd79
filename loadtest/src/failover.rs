//! `cluster-failover` (`[cluster] enabled = true`): in one run, the throughput of 1, 2 and 3
//! nodes on the same three-server NATS cluster, the accounts per node, then kill -9s and SIGTERM
//! hand-offs of the nodes in turn while every account produces: failover time per killed node
//! (kill → every one of its accounts runs again elsewhere, as the fake DC sees the new MTProto
//! session), hand-off time, the `TG_LEASES` / `TG_CHECKPOINTS` write rates in steady state and
//! during each failover, and at the end, event by event: lost, stored twice, overlaps.
//!
//! On one 2-core machine the nodes, the three NATS servers and the fake DC share the cores, so
//! more nodes show the cost of coordination, not a speed-up; the report says so.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tgingest::cluster::local::{p50_max, per_node, time_to_resume};

use crate::fakedc::Driver;
use crate::nodes::{KvRate, KvSample, Rig, Verdict, node_names};
use crate::report::Plot;
use crate::scenario::{Scenario, Timings};

/// How long the nodes may take to settle after a start, a kill or a stop.
const SETTLE: Duration = Duration::from_secs(120);

/// One node count's throughput phase.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub nodes: usize,
    pub accounts_per_node: BTreeMap<String, usize>,
    /// Messages/s per account offered.
    pub rate_per_account: f64,
    pub events: u64,
    /// Events / (first driven message → every event stored).
    pub events_per_s: f64,
    /// CPU of the nodes and the three NATS servers over the same span, per event.
    pub cpu_us_per_event: f64,
    pub drained: bool,
}

/// One kill -9 or SIGTERM.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    pub node: String,
    pub accounts: usize,
    pub resumed: usize,
    /// Signal → the last of its accounts running again elsewhere.
    pub all_resumed_s: f64,
    /// Per account: signal → running again, p50 / max.
    pub account_p50_s: f64,
    pub account_max_s: f64,
    /// The fake DC's silence per account between the old session's last request and the new
    /// one's first, p50 / max.
    pub dc_gap_p50_s: f64,
    pub dc_gap_max_s: f64,
    /// KV writes/s from the signal until every account ran again.
    pub kv: KvRate,
}

/// What `cluster-failover` reports.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub scenario: Scenario,
    pub note: String,
    pub accounts: usize,
    pub rate_per_account: f64,
    pub timings: Timings,
    pub throughput: Vec<Throughput>,
    pub steady_kv: KvRate,
    pub kills: Vec<Move>,
    /// Per killed node: kill → all of its accounts running elsewhere, p50 / max.
    pub failover_p50_s: f64,
    pub failover_max_s: f64,
    pub handoffs: Vec<Move>,
    pub handoff_p50_s: f64,
    pub handoff_max_s: f64,
    pub verdict: Verdict,
    pub kv_samples: Vec<KvSample>,
    pub ok: bool,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the scenario; the rig's guards stop every process on any exit.
pub async fn run(
    scn: &Scenario,
    bin: &std::path::Path,
    out: &std::path::Path,
    say: &impl Fn(String),
) -> anyhow::Result<FailoverReport> {
    let plan = &scn.cluster;
    let n = scn.simulator.accounts as usize;
    let rate = scn.simulator.rate;
    let phase_rate = if plan.throughput_rate > 0.0 {
        plan.throughput_rate
    } else {
        rate
    };
    let mut rig = Rig::start(bin, out, n, plan.timings).await?;
    let names = node_names(plan.nodes);
    say(format!(
        "NATS cluster of 3 at {}; {n} accounts on the fake DC; timings {:?}",
        rig.nats.url(),
        plan.timings
    ));

    // Throughput with 1, 2, 3 nodes: the same offered load for `duration` each.
    let mut throughput = Vec::new();
    for (k, name) in names.iter().enumerate() {
        rig.start_node(name, true).await?;
        if k == 0 {
            rig.import_accounts().await?;
        }
        let owned = rig.wait_settled(SETTLE).await?;
        let counts = per_node(&owned);
        say(format!("{} node(s) settled: {counts:?}", k + 1));
        let cpu0 = rig.cpu_s();
        let t0 = Instant::now();
        let driver = Driver::start(
            rig.dc.clone(),
            rig.layout.clone(),
            rig.policy.clone(),
            phase_rate,
            Some(scn.duration.0),
        );
        while !driver.is_finished() {
            rig.check_alive()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sent = driver.finish().await?;
        let ids: HashSet<String> = sent.0.keys().cloned().collect();
        let done = rig.wait_stored(&ids, scn.drain_timeout.0).await;
        let span = done.unwrap_or_else(Instant::now) - t0;
        let cpu = rig.cpu_s() - cpu0;
        let events = ids.len() as u64;
        let t = Throughput {
            nodes: k + 1,
            accounts_per_node: counts,
            rate_per_account: phase_rate,
            events,
            events_per_s: events as f64 / secs(span).max(1e-9),
            cpu_us_per_event: cpu * 1e6 / events.max(1) as f64,
            drained: done.is_some(),
        };
        say(format!(
            "{} node(s): {} events in {:.1}s = {:.0}/s, {:.0} CPU µs/event (nodes + NATS)",
            t.nodes,
            events,
            secs(span),
            t.events_per_s,
            t.cpu_us_per_event
        ));
        throughput.push(t);
        rig.add_expected(sent);
    }

    // Failover and hand-off while every account produces.
    let driver = Driver::start(
        rig.dc.clone(),
        rig.layout.clone(),
        rig.policy.clone(),
        rate,
        None,
    );
    let steady_from = Instant::now();
    tokio::time::sleep(plan.steady_window.0).await;
    let steady_kv = rig.kv_rate(steady_from, Instant::now());
    say(format!(
        "steady state: TG_LEASES {:.2} writes/s, TG_CHECKPOINTS {:.2} writes/s",
        steady_kv.leases_per_s, steady_kv.checkpoints_per_s
    ));
    let mut kills = Vec::new();
    for i in 0..plan.kills {
        let victim = names[i % names.len()].clone();
        kills.push(move_node(&mut rig, &victim, true, plan.resume_timeout.0, say).await?);
    }
    let mut handoffs = Vec::new();
    for i in 0..plan.handoffs {
        let victim = names[i % names.len()].clone();
        handoffs.push(move_node(&mut rig, &victim, false, plan.resume_timeout.0, say).await?);
    }
    let sent = driver.finish().await?;
    rig.add_expected(sent);
    let kv_samples = rig.kv_samples();
    let verdict = rig.finish(scn.drain_timeout.0).await;
    let span = |v: &[Move]| {
        p50_max(
            v.iter()
                .map(|m| Duration::from_secs_f64(m.all_resumed_s))
                .collect(),
        )
    };
    let (failover_p50, failover_max) = span(&kills);
    let (handoff_p50, handoff_max) = span(&handoffs);
    let ok = verdict.ok()
        && verdict.drained
        && kills
            .iter()
            .chain(&handoffs)
            .all(|m| m.resumed == m.accounts);
    Ok(FailoverReport {
        scenario: scn.clone(),
        note: "All nodes, the three NATS servers, the fake DC and the fake Switchboard share one \
               machine's cores: more nodes show the cost of coordination (leases, claims, \
               checkpoints replicated three times), not a speed-up."
            .into(),
        accounts: n,
        rate_per_account: rate,
        timings: plan.timings,
        throughput,
        steady_kv,
        kills,
        failover_p50_s: secs(failover_p50),
        failover_max_s: secs(failover_max),
        handoffs,
        handoff_p50_s: secs(handoff_p50),
        handoff_max_s: secs(handoff_max),
        verdict,
        kv_samples,
        ok,
    })
}

/// Kills (`crash`) or stops node `victim`, measures how its accounts run again elsewhere,
/// starts it again and waits until the accounts settled.
async fn move_node(
    rig: &mut Rig,
    victim: &str,
    crash: bool,
    limit: Duration,
    say: &impl Fn(String),
) -> anyhow::Result<Move> {
    let orphans = rig.accounts_of(victim).await;
    let from = rig.dc.handovers().len();
    let at = if crash {
        rig.kill(victim)
    } else {
        rig.terminate(victim)
    };
    let resumed = time_to_resume(&rig.dc, from, &orphans, at, limit).await;
    let done = Instant::now();
    if !crash {
        rig.reap(victim, Duration::from_secs(30));
    }
    let gaps: Vec<Duration> = rig
        .dc
        .handovers()
        .get(from..)
        .unwrap_or_default()
        .iter()
        .filter(|h| orphans.contains(&h.user))
        .map(|h| h.gap)
        .collect();
    let (p50, max) = p50_max(resumed.values().copied().collect());
    let (gap_p50, gap_max) = p50_max(gaps);
    let m = Move {
        node: victim.to_string(),
        accounts: orphans.len(),
        resumed: resumed.len(),
        all_resumed_s: secs(max),
        account_p50_s: secs(p50),
        account_max_s: secs(max),
        dc_gap_p50_s: secs(gap_p50),
        dc_gap_max_s: secs(gap_max),
        kv: rig.kv_rate(at, done),
    };
    say(format!(
        "{} {victim}: {}/{} accounts ran again elsewhere, p50 {:.2}s max {:.2}s (DC silence p50 {:.2}s max {:.2}s); KV {:.1} lease + {:.1} checkpoint writes/s",
        if crash { "kill -9" } else { "SIGTERM" },
        m.resumed,
        m.accounts,
        m.account_p50_s,
        m.account_max_s,
        m.dc_gap_p50_s,
        m.dc_gap_max_s,
        m.kv.leases_per_s,
        m.kv.checkpoints_per_s
    ));
    rig.start_node(victim, true)
        .await
        .with_context(|| format!("start {victim} again"))?;
    rig.wait_settled(SETTLE).await?;
    Ok(m)
}

/// `report.svg`: the buckets' writes per second over the run (the throughput phases, the steady
/// window, then the kills and hand-offs).
pub fn plot(r: &FailoverReport) -> Plot {
    let rate = |seq: fn(&KvSample) -> u64| {
        r.kv_samples
            .windows(2)
            .filter(|w| w[1].t > w[0].t)
            .map(|w| {
                let per_s = seq(&w[1]).saturating_sub(seq(&w[0])) as f64 / (w[1].t - w[0].t);
                (w[1].t, per_s)
            })
            .collect::<Vec<_>>()
    };
    Plot {
        title: format!(
            "cluster-failover: KV writes/s ({} accounts; failover p50 {:.1}s max {:.1}s; {})",
            r.accounts,
            r.failover_p50_s,
            r.failover_max_s,
            if r.ok { "OK" } else { "FAILED" }
        ),
        x_desc: "s since the NATS cluster started",
        y_desc: "writes/s",
        series: vec![
            ("TG_LEASES", rate(|s| s.leases_seq)),
            ("TG_CHECKPOINTS", rate(|s| s.checkpoints_seq)),
        ],
    }
}

/// The summary printed on stdout.
pub fn render(r: &FailoverReport) -> String {
    let mut s = format!(
        "cluster-failover: {} accounts x {} msg/s, timings {:?}, {}\n",
        r.accounts,
        r.rate_per_account,
        r.timings,
        if r.ok { "OK" } else { "FAILED" }
    );
    for t in &r.throughput {
        s += &format!(
            "  {} node(s) at {} msg/s per account: {:?}; {:.0} events/s, {:.0} CPU µs/event (nodes + NATS){}\n",
            t.nodes,
            t.rate_per_account,
            t.accounts_per_node,
            t.events_per_s,
            t.cpu_us_per_event,
            if t.drained { "" } else { " (not drained)" }
        );
    }
    s += &format!("  ({})\n", r.note);
    s += &format!(
        "  failover (kill -9 → every account elsewhere): p50 {:.2}s max {:.2}s over {} kills\n",
        r.failover_p50_s,
        r.failover_max_s,
        r.kills.len()
    );
    s += &format!(
        "  hand-off (SIGTERM → every account elsewhere): p50 {:.2}s max {:.2}s over {} stops\n",
        r.handoff_p50_s,
        r.handoff_max_s,
        r.handoffs.len()
    );
    s += &format!(
        "  KV writes/s steady: TG_LEASES {:.2}, TG_CHECKPOINTS {:.2}; during failovers: {}\n",
        r.steady_kv.leases_per_s,
        r.steady_kv.checkpoints_per_s,
        r.kills
            .iter()
            .map(|m| format!("{:.1}+{:.1}", m.kv.leases_per_s, m.kv.checkpoints_per_s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let v = &r.verdict;
    s += &format!(
        "  events: {} expected, {} lost, {} stored twice, {} unexpected; overlaps {}\n",
        v.expected, v.lost, v.stored_twice, v.unexpected, v.overlaps
    );
    s
}
