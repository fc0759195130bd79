//! Batch mode survives `kill -9`: every kept new message ends up inside exactly one stored
//! batch, no batch is recorded or stored twice, and nothing is lost.
//!
//! A real nats-server and the fake Switchboard (in this test process) outlive every crash; the
//! node is the real binary in `switchboard.mode = "conversation_batches"` (flush every second,
//! at most 30 messages a batch), killed with SIGKILL at seeded random moments: during start-up,
//! while running, and right after a batch was recorded in `TG_BATCH` (its PubAck taken, its
//! members not yet acknowledged on `TG_CLEAN`: the moment a naive batcher would re-form the
//! batch with other bounds), then twice while idle. The seed is `$TGINGEST_CRASH_SEED`, or a
//! fresh one that the test prints and every failure names. Besides what Switchboard stored, the
//! test reads every record in `TG_BATCH` and checks that no two hold the same member.

mod support;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::batches::{
    all_stored, kept, members_in_two_records, recorded, report, start_batch_node,
};
use support::{KillOnDrop, signal, wait_log};
use tgingest::telegram::simulated::SimulatorConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    StartUp,
    Running,
    AfterRecord,
    Idle,
}

const PHASES: [Phase; 3] = [Phase::StartUp, Phase::Running, Phase::AfterRecord];
const ROUNDS: usize = 7;
const IDLE_KILLS: usize = 2;
const UP: Duration = Duration::from_secs(30);
const MARKER: Duration = Duration::from_secs(3);
const FLUSH_S: u64 = 1;
const MAX_MESSAGES: u32 = 30;

fn simulation() -> SimulatorConfig {
    support::batches::simulation(3, 300.0, 1500, 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_batch_mode_puts_every_message_in_exactly_one_batch() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = simulation();
    let kept = kept(&sim);
    let seed = support::crash_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let log = dir.path().join("node.log");
    let start = || {
        KillOnDrop(start_batch_node(
            &nats,
            &fake,
            dir.path(),
            &log,
            &sim,
            FLUSH_S,
            MAX_MESSAGES,
        ))
    };

    let mut startup = Duration::from_millis(300);
    let mut missed = Vec::new();
    let plan = PHASES
        .iter()
        .cycle()
        .take(PHASES.len() * ROUNDS)
        .chain([Phase::Idle; IDLE_KILLS].iter());
    for (kill, phase) in plan.enumerate() {
        let phase = *phase;
        let started = Instant::now();
        let mut child = start();
        let died = |what: &str| {
            let log = support::log_text(&log);
            format!("{what} (kill {}, {phase:?}, seed {seed}): {log}", kill + 1)
        };
        if phase != Phase::StartUp {
            assert!(
                wait_log(&log, &["tgingest node running"], 0, UP).await,
                "{}",
                died("node did not come up")
            );
            startup = started.elapsed();
        }
        let after = match phase {
            Phase::StartUp => startup.mul_f64(rng.random_range(0.0..1.0)),
            Phase::Running => Duration::from_millis(rng.random_range(0..1500)),
            // A batch is recorded; its members' acks are on their way.
            Phase::AfterRecord => {
                let from = std::fs::read_to_string(&log).map_or(0, |t| t.len());
                if !wait_log(&log, &["batch recorded"], from, MARKER).await {
                    missed.push(kill + 1);
                }
                Duration::from_micros(rng.random_range(0..2000))
            }
            Phase::Idle => {
                all_stored(&fake, &kept, Duration::from_secs(60)).await;
                Duration::from_millis(rng.random_range(0..1000))
            }
        };
        tokio::time::sleep(after).await;
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("{}", died(&format!("tgingest exited on its own: {status}")));
        }
        child.0.kill().expect("SIGKILL");
        child.0.wait().unwrap();
        eprintln!(
            "kill {:>2} ({phase:?}), {:>4} ms in: {} batches stored",
            kill + 1,
            after.as_millis(),
            fake.batches_stored()
        );
    }
    eprintln!("kills whose 'batch recorded' marker did not show first: {missed:?}");

    let mut child = start();
    assert!(
        wait_log(&log, &["tgingest node running"], 0, UP).await,
        "the final node did not come up (seed {seed})"
    );
    let arrived = all_stored(&fake, &kept, Duration::from_secs(120)).await;
    signal(child.0.id(), libc::SIGTERM);
    let status = child.0.wait().unwrap();

    let report = report(&fake, &kept);
    let records = recorded(&nats.url()).await;
    let twice = members_in_two_records(&records);
    eprintln!(
        "after {} kills: {report:?}; {} records in TG_BATCH; {} re-sends answered as duplicates",
        PHASES.len() * ROUNDS + IDLE_KILLS,
        records.len(),
        fake.stats().duplicates
    );
    assert!(arrived, "not everything arrived (seed {seed}): {report:?}");
    assert!(report.exactly_once(), "seed {seed}: {report:?}");
    assert!(
        twice.is_empty(),
        "seed {seed}: {} members recorded in two batches",
        twice.len()
    );
    assert_eq!(
        report.batches,
        records.len() as u64,
        "seed {seed}: every recorded batch stored exactly once"
    );
    assert!(
        status.success(),
        "the final node did not stop cleanly: {status}"
    );
}
