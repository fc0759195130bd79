//! Switching `switchboard.mode` on a node that holds data loses nothing and stores nothing twice,
//! whether the node was stopped gracefully or killed (`kill -9`), also during the hand-over.
//!
//! A real nats-server and the fake Switchboard (in this test process) outlive every run; the
//! node is the real binary on one data dir, started alternately in `conversation_batches` and
//! `messages` mode while two simulated accounts produce, and stopped after a seeded random time
//! by SIGTERM, by SIGKILL while running, or by SIGKILL during its start-up (where the hand-over
//! from the other mode happens). The seed is `$TGINGEST_CRASH_SEED`, or a fresh one that the
//! test prints and every failure names. The oracle is the seeded simulation's kept events: each
//! is stored exactly once by the fake, on its own or as an `is_new` member of exactly one stored
//! batch, and every batch recorded in `TG_BATCH` is stored exactly once.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::batches::{all_stored, batch_env, kept, member_key, recorded};
use support::{KillOnDrop, signal, wait_log};
use tgingest::pipeline::batcher::batchable;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Graceful,
    Kill,
    KillInStartUp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Batches,
    Messages,
}

/// How each run ends (shuffled by the seed); the runs alternate modes, batches first.
const STOPS: [Stop; 9] = [
    Stop::Graceful,
    Stop::Kill,
    Stop::KillInStartUp,
    Stop::Graceful,
    Stop::Kill,
    Stop::KillInStartUp,
    Stop::Graceful,
    Stop::Kill,
    Stop::Kill,
];
const UP: Duration = Duration::from_secs(30);
const FLUSH_S: u64 = 1;
const MAX_MESSAGES: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_back_and_forth_through_crashes_stores_every_message_exactly_once() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = support::batches::simulation(2, 150.0, 2400, 71);
    let kept = kept(&sim);
    let seed = support::crash_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let log = dir.path().join("node.log");
    let start = |mode: Mode| {
        let env = match mode {
            Mode::Batches => batch_env(FLUSH_S, MAX_MESSAGES),
            Mode::Messages => vec![("TGINGEST_NATS_ACK_WAIT", "2s".to_string())],
        };
        KillOnDrop(support::spawn_sim_node(
            &nats,
            &fake,
            dir.path(),
            &log,
            &sim,
            "switch-node",
            &env,
        ))
    };

    let mut stops = STOPS;
    stops.shuffle(&mut rng);
    let began = Instant::now();
    let mut startup = Duration::from_millis(500);
    for (run, stop) in stops.iter().enumerate() {
        let mode = [Mode::Batches, Mode::Messages][run % 2];
        let started = Instant::now();
        let mut child = start(mode);
        let died = |what: &str| {
            let log = support::log_text(&log);
            format!(
                "{what} (run {}, {mode:?}, {stop:?}, seed {seed}): {log}",
                run + 1
            )
        };
        let after = if *stop == Stop::KillInStartUp {
            startup.mul_f64(rng.random_range(0.0..1.0))
        } else {
            assert!(
                wait_log(&log, &["tgingest node running"], 0, UP).await,
                "{}",
                died("node did not come up")
            );
            startup = started.elapsed();
            Duration::from_millis(rng.random_range(500..2500))
        };
        tokio::time::sleep(after).await;
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("{}", died(&format!("tgingest exited on its own: {status}")));
        }
        match stop {
            Stop::Graceful => {
                signal(child.0.id(), libc::SIGTERM);
                let status = support::wait_exit(&mut child.0, Duration::from_secs(30));
                assert!(
                    status.success(),
                    "{}",
                    died(&format!("unclean stop: {status}"))
                );
            }
            Stop::Kill | Stop::KillInStartUp => {
                child.0.kill().expect("SIGKILL");
                child.0.wait().unwrap();
            }
        }
        eprintln!(
            "run {} ({mode:?}, {stop:?}) stopped {:>4} ms in: {} events stored, {} batches",
            run + 1,
            after.as_millis(),
            fake.stored_event_ids().len(),
            fake.batches_stored()
        );
    }

    // The last run, in messages mode, takes over what the batch-mode run left.
    let mut child = start(Mode::Messages);
    assert!(
        wait_log(&log, &["tgingest node running"], 0, UP).await,
        "the final node did not come up (seed {seed}): {}",
        support::log_text(&log)
    );
    let arrived = all_stored(&fake, &kept, Duration::from_secs(60)).await;
    let handed_over = support::log_text(&log)
        .lines()
        .find(|l| l.contains("switched to messages mode"))
        .map(str::to_string);
    eprintln!("{handed_over:?}");
    assert!(handed_over.is_some(), "the final node logged no hand-over");
    signal(child.0.id(), libc::SIGTERM);
    let status = support::wait_exit(&mut child.0, Duration::from_secs(30));

    let stored = fake.stored_event_ids();
    let lost: Vec<&str> = kept
        .iter()
        .filter(|e| !stored.contains(&e.event_id))
        .map(|e| e.event_id.as_str())
        .collect();
    let expected_members: HashSet<String> = kept
        .iter()
        .filter(|e| batchable(e))
        .map(member_key)
        .collect();
    let members = fake.batch_members();
    let in_two_batches = members.values().filter(|n| **n > 1).count();
    let unexpected = members
        .keys()
        .filter(|k| !expected_members.contains(*k))
        .count();
    let records = recorded(&nats.url()).await;
    eprintln!(
        "{} kept events; {} stored, {} lost, {} stored twice, {in_two_batches} in two batches, \
         {} batches stored of {} recorded, {:.1} s (seed {seed})",
        kept.len(),
        stored.len(),
        lost.len(),
        fake.stored_twice(),
        fake.batches_stored(),
        records.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        arrived && lost.is_empty(),
        "seed {seed}: {} kept events never stored, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(
        fake.stored_twice(),
        0,
        "seed {seed}: events stored twice (singly and in a batch, or in two batches)"
    );
    assert_eq!(
        in_two_batches, 0,
        "seed {seed}: members in two stored batches"
    );
    assert_eq!(unexpected, 0, "seed {seed}: batch members nobody sent");
    assert_eq!(
        fake.batches_stored(),
        records.len() as u64,
        "seed {seed}: every recorded batch stored exactly once"
    );
    assert!(
        status.success(),
        "the final node did not stop cleanly: {status}"
    );
}

/// A node started in `messages` mode while another node still runs the batcher on the same
/// streams refuses to start, saying why and what to do, instead of taking the batcher's
/// messages from under it; the batch-mode node goes on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_mode_refuses_to_start_while_another_node_runs_the_batcher() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = support::batches::simulation(1, 100.0, 200, 73);
    let log_a = dir.path().join("a.log");
    let spawn = |dir: &std::path::Path, log: &std::path::Path, id: &str, env: &[(&str, String)]| {
        KillOnDrop(support::spawn_sim_node(
            &nats, &fake, dir, log, &sim, id, env,
        ))
    };
    let mut batches = spawn(dir.path(), &log_a, "batch-a", &batch_env(1, 40));
    assert!(
        wait_log(&log_a, &["tgingest node running"], 0, UP).await,
        "{}",
        support::log_text(&log_a)
    );
    let other = support::second_node_dir(dir.path());
    let log_b = other.path().join("b.log");
    let mut messages = spawn(other.path(), &log_b, "messages-b", &[]);
    let status = support::wait_exit(&mut messages.0, Duration::from_secs(30));
    let text = support::log_text(&log_b);
    assert_eq!(status.code(), Some(2), "it did not refuse as asked: {text}");
    assert!(
        text.contains("another node still runs in conversation_batches mode"),
        "{text}"
    );
    assert!(
        batches.0.try_wait().unwrap().is_none(),
        "{}",
        support::log_text(&log_a)
    );
    let kept = kept(&sim);
    support::all_stored_then_stop(&mut batches.0, &fake, &kept, &log_a).await;
    assert_eq!(fake.stored_twice(), 0);
}
