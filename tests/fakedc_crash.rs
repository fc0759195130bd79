//! `kill -9` of a node whose accounts are real grammers clients loses nothing and stores nothing
//! twice: the Telegram update state is committed only after the events it covers are durable.
//!
//! The fake Telegram DC, a real nats-server and the fake Switchboard live in this test process and
//! outlive every crash; the node is the real binary (`tgingest run`). Its accounts are imported
//! (Telethon strings pointing at the fake DC) and consented through the admin API, as an operator
//! would. Messages are sent continuously into private chats, a basic group and a supergroup while
//! the node is killed with SIGKILL six times at seeded moments, down for a seeded while, and
//! restarted; what was sent while it was down arrives through catch-up. The DC is rude all the
//! while (pushes sent twice, late, or cut mid-frame) and each restart meets one more fault: a
//! FLOOD_WAIT on `getDifference`, a stalled `getDifference`, a dropped connection on
//! `getState`. The seed is `$TGINGEST_CRASH_SEED` or a fresh one, printed; `$TGINGEST_CRASH_KILLS`
//! makes a longer soak. A loss is reported with the stages the event reached. Ground truth: the
//! event id of every sent message, per account that sees it, computed with `event::event_id` as
//! the normalizer does.

mod support;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::dc_traffic::{DcAccounts, Sender, msg_ids_in};
use support::{TestNats, signal, tgingest_bin};
use tgingest::event::ChatKind;
use tgingest::keys::MasterKey;
use tgingest::switchboard::FakeSwitchboard;
use tgingest::telegram::fakedc::{FakeDc, Fault, PushFaults};

/// Kills per run, unless `$TGINGEST_CRASH_KILLS` says otherwise (a longer soak).
const KILLS: usize = 6;
const ACCOUNTS: usize = 3;

/// The node process; killed if the test fails before it is stopped.
struct NodeProcess(Option<Child>);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_node(
    nats: &TestNats,
    fake: &FakeSwitchboard,
    dir: &std::path::Path,
    admin: &str,
    log: &std::path::Path,
) -> NodeProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = std::process::Command::new(tgingest_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TGINGEST_NODE_ID", "fakedc-crash-node")
        .env("TGINGEST_NODE_DATA_DIR", dir.join("data"))
        .env("TGINGEST_MASTER_KEY_FILE", dir.join("master.key"))
        .env("TGINGEST_NATS_URL", nats.url())
        .env("SWITCHBOARD_MCP_URL", fake.mcp_url())
        .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
        .env("TGINGEST_ADMIN_LISTEN", admin)
        .env("TELEGRAM_API_ID", "1")
        .env("TGINGEST_LOGGING_LEVEL", "info,async_nats=warn")
        .env("TGINGEST_LOGGING_FORMAT", "json")
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tgingest run");
    NodeProcess(Some(child))
}

/// Waits until the log shows `n` node start-ups.
async fn wait_running(log: &std::path::Path, n: usize) {
    let up = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("tgingest node running").count() >= n {
            return;
        }
        assert!(Instant::now() < up, "node did not come up: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every account has its update stream subscribed on the fake DC.
async fn wait_listening(dc: &FakeDc, accounts: &[i64]) {
    let up = Instant::now() + Duration::from_secs(60);
    while !accounts.iter().all(|a| dc.subscribed_connections(*a) > 0) {
        assert!(
            Instant::now() < up,
            "accounts did not connect to the fake DC"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The parts a crash test runs its node against; they outlive every crash.
struct Rig {
    nats: TestNats,
    fake: FakeSwitchboard,
    dc: Arc<FakeDc>,
    dir: tempfile::TempDir,
    admin: String,
    log: std::path::PathBuf,
    world: DcAccounts,
}

impl Rig {
    /// Starts the parts and a node, and imports and consents `accounts` accounts (each with a
    /// private chat, all in one chat of each `shared` kind); returns once all of them listen.
    async fn start(accounts: usize, shared: &[ChatKind]) -> (Rig, NodeProcess) {
        tgingest::telemetry::install_crypto_provider();
        let nats = TestNats::start();
        let (fake, dc) = support::dc_traffic::start_fakes().await;
        let dir = tempfile::tempdir().expect("temp dir");
        MasterKey::generate_file(&dir.path().join("master.key")).expect("master key");
        let admin = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").to_string()
        };
        let world = DcAccounts::create(&dc, accounts, shared);
        let log = dir.path().join("node.log");
        let rig = Rig {
            nats,
            fake,
            dc,
            dir,
            admin,
            log,
            world,
        };
        let node = rig.start_node(1).await;
        rig.world
            .import_and_consent(
                &support::admin_http(&support::generated_admin_token(
                    &rig.dir.path().join("data"),
                )),
                &rig.admin,
            )
            .await;
        rig.wait_listening().await;
        (rig, node)
    }

    /// Starts the node for the `nth` time and waits until it runs.
    async fn start_node(&self, nth: usize) -> NodeProcess {
        let node = start_node(
            &self.nats,
            &self.fake,
            self.dir.path(),
            &self.admin,
            &self.log,
        );
        wait_running(&self.log, nth).await;
        node
    }

    async fn wait_listening(&self) {
        wait_listening(&self.dc, &self.world.ids).await;
    }

    /// Stops the fake DC and the fake Switchboard (the node is stopped by the test).
    async fn stop(self) {
        let dc = Arc::try_unwrap(self.dc).ok().expect("no sender left");
        dc.stop().await;
        self.fake.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_real_grammers_clients_loses_nothing_and_stores_nothing_twice() {
    let (rig, mut node) = Rig::start(ACCOUNTS, &[ChatKind::Group, ChatKind::Supergroup]).await;
    let Rig {
        nats,
        fake,
        dc,
        log,
        world,
        ..
    } = &rig;

    let seed = support::crash_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    dc.set_push_faults(PushFaults {
        seed,
        duplicate: 0.1,
        delay: 0.1,
        max_delay: Duration::from_millis(500),
        cut_mid_frame: 0.01,
    });
    // The sender: ~60 messages/s round-robin over the chats, until told to stop.
    let sender = Sender::start(dc.clone(), world.targets.clone(), Duration::from_millis(16));

    let kills: usize = std::env::var("TGINGEST_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS);
    for kill in 0..kills {
        let delay = Duration::from_millis(rng.random_range(300..2500));
        tokio::time::sleep(delay).await;
        let mut child = node.0.take().expect("node running");
        assert!(
            child.try_wait().expect("status").is_none(),
            "tgingest exited on its own before kill {} (seed {seed})",
            kill + 1
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        eprintln!(
            "kill {} after {delay:?}: {} sent, {} stored so far",
            kill + 1,
            sender.sent(),
            fake.stats().stored
        );
        // Down for a moment while messages keep coming: they must arrive through catch-up.
        let at_kill = sender.sent();
        // ... past one more fault of the DC.
        match kill % 3 {
            0 => dc.flood_wait("updates.getDifference", 2, 1),
            1 => dc.stall("updates.getDifference", Duration::from_secs(1), 1),
            _ => dc.inject("updates.getState", Fault::DropConnection, 1),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        node = rig.start_node(kill + 2).await;
        rig.wait_listening().await;
        let while_down = sender.sent() - at_kill;
        eprintln!("  {while_down} messages sent while the node was down or reconnecting");
        assert!(while_down > 0, "catch-up after a crash was not exercised");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sender.sent();
    let described = sender.stop_described().await;
    let expected: HashSet<String> = described.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !expected.is_subset(&fake.stored_event_ids()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut child = node.0.take().expect("node running");
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().expect("reaped");

    let got = fake.stored_event_ids();
    let lost = expected.difference(&got).count();
    let unexpected = got.difference(&expected).count();
    eprintln!(
        "after {kills} kills: {sent} messages sent, {} events expected, {} stored, {lost} lost, {} stored twice, {unexpected} unexpected",
        expected.len(),
        fake.stats().stored,
        fake.stored_twice()
    );
    eprintln!("push faults: {:?}", dc.push_fault_stats());
    let stored_twice = fake.stored_twice();
    if lost > 0 {
        // Where each lost event stopped, before the (long) node log.
        let raw = msg_ids_in(&nats.url(), "TG_RAW").await;
        let clean = msg_ids_in(&nats.url(), "TG_CLEAN").await;
        let dead = msg_ids_in(&nats.url(), "TG_DLQ").await;
        for id in expected.difference(&got) {
            eprintln!(
                "lost: {} (in TG_RAW: {}, in TG_CLEAN: {}, dead-lettered: {})",
                described[id],
                raw.contains(id),
                clean.contains(id),
                dead.contains(id)
            );
        }
        eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
    }
    rig.stop().await;
    assert_eq!(lost, 0, "events lost (seed {seed})");
    assert_eq!(
        unexpected, 0,
        "events stored that were never sent (seed {seed})"
    );
    assert_eq!(stored_twice, 0, "an event was stored twice (seed {seed})");
    assert!(
        status.success(),
        "the final node did not stop cleanly: {status}"
    );
}
