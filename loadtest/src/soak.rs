//! `crash-soak` (`[crash] enabled = true`): seeded kill -9s while every account produces, first
//! of a single node (cluster off: the node is started again at once and its accounts resume on
//! it), then of a node of the cluster (the victim is started again at once; its accounts run
//! again on whichever node takes them). Each kill waits until the previous one's accounts run
//! again, then a seeded pause of 0.5–1.5 x `interval`. Bounded by the kill counts and
//! `max_time`. Time to resume after each kill (kill → every account of the victim on a new
//! MTProto session, as the fake DC sees it), p50 / max per phase; at the end, event by event:
//! lost, stored twice, unexpected, overlaps.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tgingest::cluster::local::{p50_max, time_to_resume};

use crate::fakedc::{Driver, wait_listening};
use crate::nodes::{Rig, Verdict};
use crate::scenario::{CrashPlan, Scenario};

/// How long the nodes may take to settle before the cluster phase's first kill.
const SETTLE: Duration = Duration::from_secs(120);

/// One phase's kills.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    pub kills: usize,
    /// Kills whose victim owned at least one account (only those have a time to resume).
    pub measured: usize,
    /// Kills after which some account of the victim did not run again within the timeout.
    pub not_resumed: usize,
    /// Kill → every account of the victim running again, p50 / max over the kills.
    pub resume_p50_s: f64,
    pub resume_max_s: f64,
    pub wall_s: f64,
    /// Every kill's time to resume (seconds), in order.
    pub resume_s: Vec<f64>,
}

/// What `crash-soak` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub scenario: Scenario,
    /// The plan as run (seed and counts after the environment overrides).
    pub plan: CrashPlan,
    pub accounts: usize,
    pub rate_per_account: f64,
    pub phases: Vec<Phase>,
    /// `max_time` ran out before every kill was made.
    pub stopped_by_max_time: bool,
    pub verdict: Verdict,
    pub ok: bool,
}

/// Runs the soak; the rig's guards stop every process on any exit.
pub async fn run(
    scn: &Scenario,
    bin: &std::path::Path,
    out: &std::path::Path,
    say: &impl Fn(String),
) -> anyhow::Result<SoakReport> {
    let plan = scn.crash.overridden().map_err(anyhow::Error::msg)?;
    let n = scn.simulator.accounts as usize;
    let rate = scn.simulator.rate;
    say(format!(
        "seed {} (TGINGEST_LOADTEST_SEED overrides), {} single-node kills then {} cluster kills (TGINGEST_LOADTEST_KILLS overrides the total)",
        plan.seed, plan.single_kills, plan.cluster_kills
    ));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seed);
    let mut rig = Rig::start(bin, out, n, plan.timings).await?;
    let all: BTreeSet<i64> = rig.layout.accounts.iter().copied().collect();
    let deadline = Instant::now() + plan.max_time.0;
    let limit = plan.resume_timeout.0;

    // Phase 1: one node, cluster off.
    rig.start_node("single", false).await?;
    rig.import_accounts().await?;
    wait_listening(
        &rig.dc,
        &rig.layout.accounts,
        Instant::now() + SETTLE,
        say,
        || Ok(()),
    )
    .await?;
    let driver = Driver::start(
        rig.dc.clone(),
        rig.layout.clone(),
        rig.policy.clone(),
        rate,
        None,
    );
    let mut phases = Vec::new();
    let mut single = Phase {
        name: "single node".into(),
        ..Phase::default()
    };
    let started = Instant::now();
    for i in 0..plan.single_kills {
        if Instant::now() >= deadline {
            break;
        }
        pause(&mut rng, &plan).await;
        let from = rig.dc.handovers().len();
        let at = rig.kill("single");
        rig.start_node("single", false).await?;
        let resumed = time_to_resume(&rig.dc, from, &all, at, limit).await;
        record(&mut single, &resumed, all.len());
        progress(say, &single, i);
    }
    single.wall_s = started.elapsed().as_secs_f64();
    finish_phase(&mut single);
    say(summary(&single));
    phases.push(single);
    rig.reap("single", Duration::from_secs(30));

    // Phase 2: a node of the cluster.
    let names: Vec<String> = (0..plan.nodes)
        .map(|i| format!("node-{}", (b'a' + i as u8) as char))
        .collect();
    for name in &names {
        rig.start_node(name, true).await?;
    }
    rig.wait_settled(SETTLE).await?;
    let mut cluster = Phase {
        name: format!("a node of {}", names.len()),
        ..Phase::default()
    };
    let started = Instant::now();
    for i in 0..plan.cluster_kills {
        if Instant::now() >= deadline {
            break;
        }
        pause(&mut rng, &plan).await;
        rig.check_alive()?;
        let victim = names[rng.random_range(0..names.len())].clone();
        let owned = rig.owners().await;
        let orphans: BTreeSet<i64> = owned
            .iter()
            .filter(|(_, node)| **node == victim)
            .filter_map(|(a, _)| a.parse().ok())
            .collect();
        let from = rig.dc.handovers().len();
        let at = rig.kill(&victim);
        rig.start_node(&victim, true).await?;
        let resumed = time_to_resume(&rig.dc, from, &orphans, at, limit).await;
        record(&mut cluster, &resumed, orphans.len());
        progress(say, &cluster, i);
    }
    cluster.wall_s = started.elapsed().as_secs_f64();
    finish_phase(&mut cluster);
    say(summary(&cluster));
    phases.push(cluster);
    let stopped_by_max_time = Instant::now() >= deadline;

    let sent = driver.finish().await?;
    rig.add_expected(sent);
    let verdict = rig.finish(scn.drain_timeout.0).await;
    let ok = verdict.ok() && verdict.drained && phases.iter().all(|p| p.not_resumed == 0);
    Ok(SoakReport {
        scenario: scn.clone(),
        plan,
        accounts: n,
        rate_per_account: rate,
        phases,
        stopped_by_max_time,
        verdict,
        ok,
    })
}

/// The seeded pause before a kill: 0.5–1.5 x `interval`.
async fn pause(rng: &mut impl Rng, plan: &CrashPlan) {
    let f: f64 = rng.random_range(0.5..1.5);
    tokio::time::sleep(plan.interval.0.mul_f64(f)).await;
}

fn record(phase: &mut Phase, resumed: &std::collections::BTreeMap<i64, Duration>, of: usize) {
    phase.kills += 1;
    if of == 0 {
        return;
    }
    phase.measured += 1;
    if resumed.len() < of {
        phase.not_resumed += 1;
    }
    let last = resumed.values().max().copied().unwrap_or_default();
    phase.resume_s.push(last.as_secs_f64());
}

fn finish_phase(phase: &mut Phase) {
    let (p50, max) = p50_max(
        phase
            .resume_s
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect(),
    );
    phase.resume_p50_s = p50.as_secs_f64();
    phase.resume_max_s = max.as_secs_f64();
}

fn progress(say: &impl Fn(String), phase: &Phase, i: usize) {
    if (i + 1).is_multiple_of(10) {
        say(format!(
            "{}: {} kills, last resumed after {:.2}s",
            phase.name,
            phase.kills,
            phase.resume_s.last().copied().unwrap_or_default()
        ));
    }
}

fn summary(p: &Phase) -> String {
    format!(
        "{}: {} kills in {:.0}s ({} with accounts to move), time to resume p50 {:.2}s max {:.2}s, {} not resumed within the timeout",
        p.name, p.kills, p.wall_s, p.measured, p.resume_p50_s, p.resume_max_s, p.not_resumed
    )
}

/// The summary printed on stdout.
pub fn render(r: &SoakReport) -> String {
    let mut s = format!(
        "crash-soak: seed {}, {} accounts x {} msg/s, timings {:?}, {}\n",
        r.plan.seed,
        r.accounts,
        r.rate_per_account,
        r.plan.timings,
        if r.ok { "OK" } else { "FAILED" }
    );
    for p in &r.phases {
        s += &format!("  {}\n", summary(p));
    }
    if r.stopped_by_max_time {
        s += "  stopped by max_time before every kill was made\n";
    }
    let v = &r.verdict;
    s += &format!(
        "  events: {} expected, {} lost, {} stored twice, {} unexpected; overlaps {}\n",
        v.expected, v.lost, v.stored_twice, v.unexpected, v.overlaps
    );
    s
}
