//! Three `tgingest run` processes share 30 real grammers accounts on a three-server NATS
//! cluster: a node that joins takes about a third of the accounts and nothing else moves; a node
//! killed with SIGKILL has every one of its accounts running elsewhere within a lease and 5 s; a
//! node stopped with SIGTERM hands its accounts over. Through all of it, no auth key is ever
//! used by two MTProto sessions at once (the fake DC's overlap oracle), and event by event
//! against what was sent, nothing is lost and nothing is stored twice.
//!
//! The fake DC, the NATS cluster and the fake Switchboard live in this test process and outlive
//! every node. Ownership timings are shortened (lease 3 s, renewal every 300 ms, fence after
//! 1.5 s) so the same rules play out in seconds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::dc_traffic::{DcAccounts, Sender};
use support::{binary, signal, tgingest_bin};
use tgingest::event::ChatKind;
use tgingest::keys::MasterKey;
use tgingest::nats_server::cluster::NatsCluster;
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::fakedc::{FakeDc, FakeDcConfig};

const ACCOUNTS: usize = 30;
const LEASE: Duration = Duration::from_secs(3);

/// One `tgingest run`; killed if the test fails before it is stopped.
struct NodeProcess {
    name: String,
    admin: String,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Rig {
    nats_url: String,
    switchboard: String,
    dir: std::path::PathBuf,
}

impl Rig {
    fn start_node(&self, name: &str) -> NodeProcess {
        let admin = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").to_string()
        };
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = std::process::Command::new(tgingest_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TGINGEST_NODE_ID", name)
            .env("TGINGEST_NODE_DATA_DIR", self.dir.join(name))
            .env("TGINGEST_MASTER_KEY_FILE", self.dir.join("master.key"))
            .env("TGINGEST_NATS_URL", &self.nats_url)
            .env("TGINGEST_STREAMS_RAW_REPLICAS", "3")
            .env("TGINGEST_STREAMS_CLEAN_REPLICAS", "3")
            .env("TGINGEST_STREAMS_DLQ_REPLICAS", "3")
            .env("TGINGEST_KV_REPLICAS", "3")
            .env("TGINGEST_KV_LEASE_TTL", "6s")
            .env("TGINGEST_CLUSTER_ENABLED", "true")
            .env("TGINGEST_CLUSTER_LEASE", "3s")
            .env("TGINGEST_CLUSTER_RENEW_EVERY", "300ms")
            .env("TGINGEST_CLUSTER_SELF_FENCE_AFTER", "1500ms")
            .env("TGINGEST_CLUSTER_LOCK_DELAY", "200ms")
            .env("TGINGEST_CLUSTER_STABLE_AFTER", "1s")
            .env("TGINGEST_CLUSTER_CONNECTS_PER_SECOND", "50")
            .env("SWITCHBOARD_MCP_URL", &self.switchboard)
            .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
            .env("TGINGEST_ADMIN_LISTEN", &admin)
            .env("TELEGRAM_API_ID", "1")
            .env("TGINGEST_LOGGING_LEVEL", "info,async_nats=warn")
            .env("TGINGEST_LOGGING_FORMAT", "json")
            .arg("run")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn tgingest run");
        NodeProcess {
            name: name.to_string(),
            admin,
            log,
            child: Some(child),
        }
    }
}

impl NodeProcess {
    /// Waits until this process logged that it runs.
    async fn wait_running(&self) {
        let up = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("tgingest node running") {
                return;
            }
            assert!(Instant::now() < up, "{} did not come up: {text}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self, http: &reqwest::Client) -> Option<Value> {
        let resp = http
            .get(format!("http://{}/v1/cluster", self.admin))
            .send()
            .await
            .ok()?;
        let ok = resp.status().is_success();
        let text = resp.text().await.ok()?;
        if !ok {
            eprintln!("{}: GET /v1/cluster: {text}", self.name);
            return None;
        }
        serde_json::from_str(&text).ok()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

/// Accounts per owning node, as `GET /v1/cluster` of `node` shows them.
async fn owners(http: &reqwest::Client, node: &NodeProcess) -> BTreeMap<String, String> {
    let Some(status) = node.status(http).await else {
        return BTreeMap::new();
    };
    status["owned"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["account"].as_str().unwrap_or_default().to_string(),
                o["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until every account is owned, by exactly the nodes in `nodes`, none above its
/// bounded-load share (1.25 x the mean), every account listening on the fake DC, and nothing has
/// moved for two seconds (the rebalancing is over); returns the owners.
async fn wait_settled(
    http: &reqwest::Client,
    dc: &FakeDc,
    accounts: &[i64],
    ask: &NodeProcess,
    nodes: &[&str],
) -> BTreeMap<String, String> {
    let cap = (1.25 * accounts.len() as f64 / nodes.len() as f64).ceil() as usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last: Option<(BTreeMap<String, String>, Instant)> = None;
    loop {
        let owned = owners(http, ask).await;
        let counts = per_node(&owned);
        let by: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
        let listening = accounts.iter().all(|a| dc.subscribed_connections(*a) == 1);
        let placed = owned.len() == accounts.len()
            && by == nodes.iter().copied().collect()
            && counts.values().all(|n| *n <= cap)
            && listening;
        match &last {
            Some((before, since)) if placed && *before == owned => {
                if since.elapsed() >= Duration::from_secs(2) {
                    return owned;
                }
            }
            _ => last = placed.then(|| (owned.clone(), Instant::now())),
        }
        assert!(
            Instant::now() < deadline,
            "the accounts never settled on {nodes:?}: {counts:?} (cap {cap}), all listening: {listening}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to `limit` after `since`) until each of `accounts` has a new MTProto session on
/// the fake DC (a hand-over after index `from` of its log); returns when each did, from `since`.
async fn time_to_resume(
    dc: &FakeDc,
    from: usize,
    accounts: &BTreeSet<i64>,
    since: Instant,
    limit: Duration,
) -> BTreeMap<i64, Duration> {
    let mut resumed = BTreeMap::new();
    while resumed.len() < accounts.len() && since.elapsed() < limit {
        let elapsed = since.elapsed();
        for h in &dc.handovers()[from..] {
            if accounts.contains(&h.user) {
                resumed.entry(h.user).or_insert(elapsed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    resumed
}

fn per_node(owned: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for node in owned.values() {
        *n.entry(node.clone()).or_default() += 1;
    }
    n
}

fn p50_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (
        v.get(v.len() / 2).copied().unwrap_or_default(),
        v.last().copied().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_accounts_through_join_kill_and_leave_with_no_overlap_loss_or_duplicate()
{
    tgingest::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsCluster::start(binary(), &dir.path().join("nats"), 3).expect("NATS cluster");
    assert!(
        nats.wait_until_formed(Duration::from_secs(30))
            .await
            .is_some(),
        "the three servers never formed a JetStream cluster"
    );
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    let dc = Arc::new(
        FakeDc::start(FakeDcConfig::default())
            .await
            .expect("fake DC"),
    );
    MasterKey::generate_file(&dir.path().join("master.key")).expect("master key");
    let rig = Rig {
        nats_url: nats.url(),
        switchboard: fake.mcp_url(),
        dir: dir.path().to_path_buf(),
    };

    // Ground truth: 30 accounts, each with a private chat, all in one supergroup.
    let world = DcAccounts::create(&dc, ACCOUNTS, &[ChatKind::Supergroup]);
    let accounts = world.ids.clone();

    let http = reqwest::Client::new();
    let mut nodes = vec![rig.start_node("node-a")];
    nodes[0].wait_running().await;
    world.import_and_consent(&http, &nodes[0].admin).await;
    nodes.push(rig.start_node("node-b"));
    nodes[1].wait_running().await;
    let before_join = wait_settled(&http, &dc, &accounts, &nodes[0], &["node-a", "node-b"]).await;
    eprintln!("two nodes: {:?}", per_node(&before_join));

    // The sender: ~50 messages/s round-robin over the chats, until told to stop.
    let sender = Sender::start(dc.clone(), world.targets.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Join: about a third moves, each to the new node; nothing moves between the old two.
    let handovers_before = dc.handovers().len();
    nodes.push(rig.start_node("node-c"));
    nodes[2].wait_running().await;
    let after_join = wait_settled(
        &http,
        &dc,
        &accounts,
        &nodes[0],
        &["node-a", "node-b", "node-c"],
    )
    .await;
    let moved: BTreeSet<String> = dc.handovers()[handovers_before..]
        .iter()
        .map(|h| h.user.to_string())
        .collect();
    let on_c: BTreeSet<String> = after_join
        .iter()
        .filter(|(_, n)| *n == "node-c")
        .map(|(a, _)| a.clone())
        .collect();
    eprintln!(
        "join: {} accounts moved (fake DC hand-overs), {:?} now",
        moved.len(),
        per_node(&after_join)
    );
    assert_eq!(
        moved, on_c,
        "the accounts that changed session on the DC are not exactly those the new node took"
    );
    assert!(
        (ACCOUNTS / 5..=ACCOUNTS / 2).contains(&moved.len()),
        "a joining node took {} of {ACCOUNTS} accounts, not about a third",
        moved.len()
    );

    // Kill -9 the node with the most accounts: each of them runs elsewhere within lease + 5 s.
    let counts = per_node(&after_join);
    let victim_name = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, _)| n.clone())
        .expect("a node");
    let victim = nodes
        .iter()
        .position(|n| n.name == victim_name)
        .expect("victim");
    let handovers_before = dc.handovers().len();
    let killed_at = Instant::now();
    let mut child = nodes[victim].child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let orphans: BTreeSet<i64> = accounts
        .iter()
        .copied()
        .filter(|a| after_join.get(&a.to_string()) == Some(&victim_name))
        .collect();
    let bound = LEASE + Duration::from_secs(5);
    let resumed = time_to_resume(&dc, handovers_before, &orphans, killed_at, bound * 4).await;
    let (p50, max) = p50_max(resumed.values().copied().collect());
    eprintln!(
        "kill -9 of {victim_name} ({} accounts): resumed elsewhere p50 {p50:?}, max {max:?}",
        orphans.len()
    );
    assert_eq!(
        resumed.len(),
        orphans.len(),
        "not every account of the killed node resumed elsewhere"
    );
    assert!(
        max <= bound,
        "an account of the killed node took {max:?} to resume (bound {bound:?})"
    );

    // SIGTERM another node: it hands its accounts over; the third takes everything.
    let leaver = (0..nodes.len())
        .find(|i| *i != victim)
        .expect("another node");
    let survivor = (0..nodes.len())
        .find(|i| *i != victim && *i != leaver)
        .expect("a third node");
    let settled = wait_settled(&http, &dc, &accounts, &nodes[survivor], &{
        let mut live: Vec<&str> = [&nodes[leaver].name, &nodes[survivor].name]
            .iter()
            .map(|s| s.as_str())
            .collect();
        live.sort();
        live
    })
    .await;
    let leaving: BTreeSet<i64> = settled
        .iter()
        .filter(|(_, n)| **n == nodes[leaver].name)
        .filter_map(|(a, _)| a.parse().ok())
        .collect();
    let handovers_before = dc.handovers().len();
    let left_at = Instant::now();
    signal(nodes[leaver].pid(), libc::SIGTERM);
    let handed = time_to_resume(
        &dc,
        handovers_before,
        &leaving,
        left_at,
        Duration::from_secs(30),
    )
    .await;
    let mut child = nodes[leaver].child.take().expect("running");
    let left = child.wait().expect("reaped");
    let survivor_name = nodes[survivor].name.clone();
    wait_settled(
        &http,
        &dc,
        &accounts,
        &nodes[survivor],
        &[survivor_name.as_str()],
    )
    .await;
    let moved: BTreeSet<i64> = dc.handovers()[handovers_before..]
        .iter()
        .map(|h| h.user)
        .collect();
    let (p50, max) = p50_max(handed.values().copied().collect());
    eprintln!(
        "SIGTERM of {}: its {} accounts resumed on {survivor_name} after p50 {p50:?}, max {max:?}",
        nodes[leaver].name,
        leaving.len(),
    );
    assert!(
        left.success(),
        "the leaving node did not stop cleanly: {left}"
    );
    assert_eq!(
        moved, leaving,
        "a graceful leave moved other accounts than the leaver's"
    );
    assert!(
        max <= Duration::from_secs(5),
        "a hand-off on SIGTERM took {max:?} (bound 5 s)"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sender.sent();
    let expected = sender.stop().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !expected.is_subset(&fake.stored_event_ids()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    signal(nodes[survivor].pid(), libc::SIGTERM);
    let last = nodes[survivor]
        .child
        .take()
        .expect("running")
        .wait()
        .expect("reaped");

    let got = fake.stored_event_ids();
    let lost = expected.difference(&got).count();
    let unexpected = got.difference(&expected).count();
    let overlaps = dc.overlaps();
    eprintln!(
        "{} messages sent, {} events expected, {} stored, {lost} lost, {} stored twice, {unexpected} unexpected, {} overlaps",
        sent,
        expected.len(),
        fake.stats().stored,
        fake.stored_twice(),
        overlaps.len()
    );
    if lost > 0 || !overlaps.is_empty() {
        for n in &nodes {
            eprintln!(
                "--- {} ---\n{}",
                n.name,
                std::fs::read_to_string(&n.log).unwrap_or_default()
            );
        }
    }
    let dc = Arc::try_unwrap(dc).ok().expect("sender gone");
    dc.stop().await;
    fake.stop().await;
    assert!(
        overlaps.is_empty(),
        "an auth key was used by two sessions at once: {overlaps:?}"
    );
    assert_eq!(lost, 0, "events lost");
    assert_eq!(unexpected, 0, "events stored that were never sent");
    assert_eq!(fake.stored_twice(), 0, "an event was stored twice");
    assert!(last.success(), "the last node did not stop cleanly: {last}");
}
