//! `crash-soak` (`[crash] enabled = true`): seeded kill -9s while every account produces, first
//! of a single node (cluster off: the node is started again at once and its accounts resume on
//! it), then of a node of the cluster (the victim is started again at once; its accounts run
//! again on whichever node takes them). Each kill waits until the previous one's accounts run
//! again, then a seeded pause of 0.5–1.5 x `interval`. Bounded by the kill counts and
//! `max_time`. Time to resume after each kill (kill → every account of the victim on a new
//! MTProto session, as the fake DC sees it), p50 / max per phase; at the end, event by event:
//! lost, stored twice, unexpected, overlaps.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tgingest::cluster::local::{p50_max, time_to_resume};

use crate::fakedc::{Driver, wait_listening};
use crate::nodes::{Rig, Verdict, node_names};
use crate::report::Plot;
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
    let deadline = Instant::now() + plan.max_time.0;

    // Phase 1: one node, cluster off.
    rig.start_node(SINGLE, false).await?;
    rig.import_accounts().await?;
    let (dc, accounts) = (&rig.dc, &rig.layout.accounts);
    wait_listening(
        accounts.len(),
        async || {
            Ok(accounts
                .iter()
                .filter(|me| dc.subscribed_connections(**me) > 0)
                .count())
        },
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
    let kills = Kills {
        deadline,
        plan: &plan,
        say,
    };
    phases.push(kills.phase(&mut rig, &Mode::Single, &mut rng).await?);
    rig.reap(SINGLE, Duration::from_secs(30));

    // Phase 2: a node of the cluster.
    let names = node_names(plan.nodes);
    for name in &names {
        rig.start_node(name, true).await?;
    }
    rig.wait_settled(SETTLE).await?;
    phases.push(
        kills
            .phase(&mut rig, &Mode::Cluster(names), &mut rng)
            .await?,
    );
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

/// The node of the single-node phase.
const SINGLE: &str = "single";

/// Whose kills a phase makes.
enum Mode {
    /// The one node, cluster off: all accounts restart with it.
    Single,
    /// A seeded one of these cluster nodes: its accounts move.
    Cluster(Vec<String>),
}

/// What every phase's kill loop shares.
struct Kills<'a, S> {
    deadline: Instant,
    plan: &'a CrashPlan,
    say: &'a S,
}

impl<S: Fn(String)> Kills<'_, S> {
    /// Makes the plan's kills of `mode` (until the deadline): each after a seeded pause, the
    /// victim started again at once, then waits until its accounts ran again.
    async fn phase(&self, rig: &mut Rig, mode: &Mode, rng: &mut impl Rng) -> anyhow::Result<Phase> {
        let (name, kills) = match mode {
            Mode::Single => ("single node".to_string(), self.plan.single_kills),
            Mode::Cluster(names) => (
                format!("a node of {}", names.len()),
                self.plan.cluster_kills,
            ),
        };
        let mut phase = Phase {
            name,
            ..Phase::default()
        };
        let started = Instant::now();
        for i in 0..kills {
            if Instant::now() >= self.deadline {
                break;
            }
            pause(rng, self.plan).await;
            rig.check_alive()?;
            let (victim, cluster, accounts) = match mode {
                Mode::Single => (
                    SINGLE.to_string(),
                    false,
                    rig.layout.accounts.iter().copied().collect(),
                ),
                Mode::Cluster(names) => {
                    let victim = names[rng.random_range(0..names.len())].clone();
                    let owned = rig.accounts_of(&victim).await;
                    (victim, true, owned)
                }
            };
            let from = rig.dc.handovers().len();
            let at = rig.kill(&victim);
            rig.start_node(&victim, cluster).await?;
            let resumed =
                time_to_resume(&rig.dc, from, &accounts, at, self.plan.resume_timeout.0).await;
            record(&mut phase, &resumed, accounts.len());
            progress(self.say, &phase, i);
        }
        phase.wall_s = started.elapsed().as_secs_f64();
        finish_phase(&mut phase);
        (self.say)(summary(&phase));
        Ok(phase)
    }
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

/// `report.svg`: the time to resume after each kill, per phase.
pub fn plot(r: &SoakReport) -> Plot {
    let phase = |i: usize| {
        r.phases
            .get(i)
            .map(|p| {
                p.resume_s
                    .iter()
                    .enumerate()
                    .map(|(k, s)| ((k + 1) as f64, *s))
                    .collect()
            })
            .unwrap_or_default()
    };
    Plot {
        title: format!(
            "crash-soak: time to resume after each kill -9 (seed {}; {})",
            r.plan.seed,
            if r.ok { "OK" } else { "FAILED" }
        ),
        x_desc: "kill",
        y_desc: "s until every account of the victim ran again",
        series: vec![
            ("single node", phase(0)),
            ("a node of the cluster", phase(1)),
        ],
    }
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
