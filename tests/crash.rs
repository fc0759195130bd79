//! `kill -9` of the tgingest process at random moments loses nothing and stores nothing twice.
//!
//! A real nats-server and the fake Switchboard (in this test process) outlive every crash; the
//! node is the real binary, killed with SIGKILL 20 times at seeded random points while three
//! simulated accounts produce (every fourth kill during start-up: NATS connect, bus set-up,
//! event-log open, account start), then left to drain. The seed is `$TGINGEST_CRASH_SEED`, or
//! a fresh one that the test prints and every failure names. The ground truth comes from the same seeded
//! simulation, so losses and double stores are counted event by event.

mod support;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::{TestNats, signal, tgingest_bin};
use tgingest::demo::expected_after_policy;
use tgingest::keys::MasterKey;
use tgingest::policy::{Policy, PolicyConfig};
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

const KILLS: usize = 20;
/// Every this many kills, one lands during start-up (before the node says it is running).
const STARTUP_KILL_EVERY: usize = 4;

/// The seed of the kill moments: `$TGINGEST_CRASH_SEED`, or a fresh one, printed so a failure
/// can be repeated.
fn seed() -> u64 {
    let seed = std::env::var("TGINGEST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash seed {seed} (TGINGEST_CRASH_SEED={seed} repeats this run)");
    seed
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
    let sim = simulation();
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = std::process::Command::new(tgingest_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TGINGEST_NODE_ID", "crash-node")
        .env("TGINGEST_NODE_DATA_DIR", dir.join("data"))
        .env("TGINGEST_MASTER_KEY_FILE", dir.join("master.key"))
        .env("TGINGEST_NATS_URL", nats.url())
        .env("SWITCHBOARD_MCP_URL", fake.mcp_url())
        .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
        .env("TGINGEST_ADMIN_LISTEN", "");
    support::simulate(&mut cmd, &sim)
        .env("TGINGEST_LOGGING_LEVEL", "info,async_nats=warn")
        .env("TGINGEST_LOGGING_FORMAT", "json")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tgingest run")
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
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    MasterKey::generate_file(&dir.path().join("master.key")).unwrap();
    let expected = expected();
    let seed = seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let log = dir.path().join("node.log");
    // How long the last start-up took, so start-up kills land inside one.
    let mut startup = Duration::from_millis(200);
    for kill in 0..KILLS {
        let started = Instant::now();
        let mut child = start_node(&nats, &fake, dir.path(), &log);
        let (phase, after) = if kill % STARTUP_KILL_EVERY == STARTUP_KILL_EVERY - 1 {
            // During start-up: NATS connect, bus set-up, event-log open, account start.
            let after = startup.mul_f64(rng.random_range(0.0..1.0));
            tokio::time::sleep(after).await;
            ("start-up", after)
        } else {
            // While the pipeline runs: after the node says it is running, a random delay.
            let up = Instant::now() + Duration::from_secs(30);
            // `start_node` truncates the log, so this line is this start's.
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("tgingest node running")
            {
                assert!(
                    Instant::now() < up,
                    "node did not come up (seed {seed}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            startup = started.elapsed();
            let after = Duration::from_millis(rng.random_range(0..2000));
            tokio::time::sleep(after).await;
            ("running", after)
        };
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "tgingest exited on its own before kill {} (seed {seed}): {status}",
                kill + 1
            );
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        eprintln!(
            "kill {:>2} ({phase}), {:>4} ms in, {:>5} ms after spawn: {} of {} delivered so far",
            kill + 1,
            after.as_millis(),
            started.elapsed().as_millis(),
            delivered(&fake).len(),
            expected.len()
        );
    }

    let mut child = start_node(&nats, &fake, dir.path(), &log);
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
        "after {KILLS} kills: {} expected, {} stored, {} lost, {} stored twice, {} re-sends answered as duplicates",
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

    // The event log, written through 20 crashes, still verifies.
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
