//! `kill -9` of the tgingest process at random moments of every phase loses nothing and stores
//! nothing twice.
//!
//! A real nats-server and the fake Switchboard (in this test process) outlive every crash; the
//! node is the real binary, killed with SIGKILL at seeded random points of each phase in turn
//! while three simulated accounts produce: during start-up (NATS connect, bus set-up, event-log
//! open, account start), during catch-up (right after an account resumes from its checkpoint),
//! while running, between a checkpoint and the next (PubAcks taken, not yet checkpointed),
//! right after a checkpoint write began (mid flush), during a graceful shutdown (SIGTERM, then
//! SIGKILL part-way through it), and, at the end, while the source is idle (everything
//! produced). The seed is `$TGINGEST_CRASH_SEED`, or a fresh one that the test prints and every
//! failure names. The ground truth comes from the same seeded simulation, so losses and double
//! stores are counted event by event.
//!
//! Phases are found from the node's own log lines (`account state … catching_up`, `writing
//! checkpoint`), polled every millisecond: a kill lands in the phase, not at an exact
//! instruction.

mod support;

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::{TestNats, signal, tgingest_bin};
use tgingest::demo::expected_after_policy;
use tgingest::policy::{Policy, PolicyConfig};
use tgingest::switchboard::FakeSwitchboard;
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

/// The phases kills are placed in, in turn (see the module docs); then [`IDLE_KILLS`] more
/// while the source is idle.
const PHASES: [Phase; 6] = [
    Phase::StartUp,
    Phase::CatchUp,
    Phase::Running,
    Phase::AfterPubAck,
    Phase::MidCheckpoint,
    Phase::Shutdown,
];
const ROUNDS: usize = 3;
/// How long a start may take.
const UP: Duration = Duration::from_secs(30);
/// How long to wait for a phase's log line (none comes once everything is committed).
const MARKER: Duration = Duration::from_secs(5);
const IDLE_KILLS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    StartUp,
    CatchUp,
    Running,
    AfterPubAck,
    MidCheckpoint,
    Shutdown,
    Idle,
}

async fn wait_log(log: &std::path::Path, needles: &[&str], within: Duration) -> bool {
    support::wait_log(log, needles, 0, within).await
}

fn simulation() -> SimulatorConfig {
    SimulatorConfig {
        accounts: 3,
        rate: 300.0,
        messages_per_account: 4000,
        seed: 9,
        ..SimulatorConfig::default()
    }
}

/// Starts `tgingest run`; its log goes to `log`, so the test can tell when it is running.
fn start_node(
    nats: &TestNats,
    fake: &FakeSwitchboard,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> Child {
    support::spawn_sim_node(nats, fake, dir, log, &simulation(), "crash-node", &[])
}

fn expected() -> HashSet<String> {
    let sim = simulation();
    let world = SimulatedWorld::new(sim.clone()).unwrap();
    let policy = Policy::new(&PolicyConfig::default()).unwrap();
    expected_after_policy(&world, &policy, sim.messages_per_account)
        .map(|e| e.event_id)
        .collect()
}

fn delivered(fake: &FakeSwitchboard) -> HashSet<String> {
    fake.stored_event_ids()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_stores_nothing_twice() {
    let (nats, fake, dir) = support::node_stage().await;
    let expected = expected();
    let seed = support::crash_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let log = dir.path().join("node.log");
    // How long the last start-up and the last graceful stop took, so kills land inside one.
    let mut startup = Duration::from_millis(200);
    let mut shutdown = Duration::from_millis(200);
    let plan = PHASES
        .iter()
        .cycle()
        .take(PHASES.len() * ROUNDS)
        .chain([Phase::Idle; IDLE_KILLS].iter());
    let mut missed = Vec::new();
    for (kill, phase) in plan.enumerate() {
        let phase = *phase;
        let started = Instant::now();
        let mut child = start_node(&nats, &fake, dir.path(), &log);
        let died = |what: &str| {
            format!(
                "{what} (kill {}, {phase:?}, seed {seed}): {}",
                kill + 1,
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        };
        if phase != Phase::StartUp {
            assert!(
                wait_log(&log, &["tgingest node running"], UP).await,
                "{}",
                died("node did not come up")
            );
            startup = started.elapsed();
        }
        let after = match phase {
            Phase::StartUp => startup.mul_f64(rng.random_range(0.0..1.0)),
            // An account resumed from its checkpoint and reads what it missed.
            Phase::CatchUp => {
                if !wait_log(&log, &["\"to\":\"catching_up\""], MARKER).await {
                    missed.push(phase);
                }
                Duration::from_millis(rng.random_range(0..50))
            }
            Phase::Running => Duration::from_millis(rng.random_range(0..2000)),
            // A checkpoint was written; PubAcks keep coming until the next (1 s later).
            Phase::AfterPubAck => {
                if !wait_log(&log, &["writing checkpoint"], MARKER).await {
                    missed.push(phase);
                }
                Duration::from_millis(rng.random_range(100..900))
            }
            Phase::MidCheckpoint => {
                if !wait_log(&log, &["writing checkpoint"], MARKER).await {
                    missed.push(phase);
                }
                Duration::from_micros(rng.random_range(0..3000))
            }
            Phase::Shutdown => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                signal(child.id(), libc::SIGTERM);
                shutdown.mul_f64(rng.random_range(0.0..1.0))
            }
            Phase::Idle => {
                let up = Instant::now() + Duration::from_secs(120);
                while Instant::now() < up && !expected.is_subset(&delivered(&fake)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Duration::from_millis(rng.random_range(0..1000))
            }
        };
        tokio::time::sleep(after).await;
        let stopping = Instant::now();
        if let Some(status) = child.try_wait().unwrap() {
            // A SIGTERM may win the race: then the stop was graceful, and it is timed.
            assert!(
                phase == Phase::Shutdown && status.success(),
                "{}",
                died(&format!("tgingest exited on its own: {status}"))
            );
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        if phase == Phase::Shutdown {
            shutdown = shutdown.max(stopping.elapsed() + after);
        }
        eprintln!(
            "kill {:>2} ({phase:?}), {:>4} ms in, {:>5} ms after spawn: {} of {} delivered so far",
            kill + 1,
            after.as_millis(),
            started.elapsed().as_millis(),
            delivered(&fake).len(),
            expected.len()
        );
    }
    // A phase whose marker never showed was killed anyway (later); say so, do not hide it.
    eprintln!("phases whose marker did not show before the kill: {missed:?}");

    let mut child = start_node(&nats, &fake, dir.path(), &log);
    assert!(
        wait_log(&log, &["tgingest node running"], UP).await,
        "the final node did not come up (seed {seed})"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !expected.is_subset(&delivered(&fake)) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();

    let got = delivered(&fake);
    let lost: Vec<_> = expected.difference(&got).collect();
    let unexpected: Vec<_> = got.difference(&expected).collect();
    let stats = fake.stats();
    eprintln!(
        "after {} kills: {} expected, {} stored, {} lost, {} stored twice, {} re-sends answered as duplicates",
        PHASES.len() * ROUNDS + IDLE_KILLS,
        expected.len(),
        stats.stored,
        lost.len(),
        fake.stored_twice(),
        stats.duplicates
    );
    assert!(lost.is_empty(), "{} events lost (seed {seed})", lost.len());
    assert!(
        unexpected.is_empty(),
        "{} events arrived that the policy stops (seed {seed})",
        unexpected.len()
    );
    assert_eq!(
        fake.stored_twice(),
        0,
        "an event was stored twice (seed {seed})"
    );
    assert_eq!(stats.stored as usize, expected.len());
    assert!(
        status.success(),
        "the final node did not stop cleanly: {status}"
    );

    // The event log, written through every crash, still verifies.
    let out = std::process::Command::new(tgingest_bin())
        .env_clear()
        .env("TGINGEST_NODE_DATA_DIR", dir.path().join("data"))
        .env("TGINGEST_MASTER_KEY_FILE", dir.path().join("master.key"))
        .env("TGINGEST_NATS_URL", nats.url())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("\"ok\":true"),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // So does its copy in TG_AUDIT, shipped across the same crashes, and it is the whole log:
    // no record a crash took from the local log (only records on disk are shipped), none twice,
    // none missing.
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = std::process::Command::new(tgingest_bin())
        .env_clear()
        .env("TGINGEST_MASTER_KEY_FILE", dir.path().join("master.key"))
        .env("TGINGEST_NATS_URL", nats.url())
        .args(["audit", "verify", "--node", "crash-node"])
        .output()
        .unwrap();
    let copy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success() && copy["ok"] == true,
        "the stream copy (seed {seed}): {copy} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(copy["records"], local["verified"], "seed {seed}: {copy}");
}
