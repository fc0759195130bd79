//! Three `tgingest run` processes on a three-server NATS cluster (R3 streams and buckets), each
//! started from the shipped `config/production.example.toml` (cluster on, admin token) with only
//! machine-specific values overridden, over the fake Telegram DC and the fake Switchboard (which
//! live in the test process and outlive every node). Ownership timings are shortened (lease 3 s, renewal every 300 ms, fence after
//! 1.5 s) so the same rules play out in seconds.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tgingest::keys::MasterKey;
use tgingest::nats_server::cluster::NatsCluster;
use tgingest::switchboard::FakeSwitchboard;
use tgingest::telegram::fakedc::FakeDc;

use super::{binary, tgingest_bin};

use tgingest::cluster::local::per_node;

/// One `tgingest run`; killed if the test fails before it is stopped.
pub struct NodeProcess {
    pub name: String,
    pub admin: String,
    pub log: std::path::PathBuf,
    pub child: Option<Child>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The admin API's bearer token of every node ([`Rig::http`] sends it).
pub const ADMIN_TOKEN: &str = "cluster-test-admin-token";

fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A three-server NATS cluster, the fake Switchboard and the fake DC, outliving every node.
pub struct Rig {
    pub nats: NatsCluster,
    pub fake: FakeSwitchboard,
    pub dc: Arc<FakeDc>,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start() -> Rig {
        tgingest::telemetry::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = NatsCluster::start(binary(), &dir.path().join("nats"), 3).expect("NATS cluster");
        assert!(
            nats.wait_until_formed(Duration::from_secs(30))
                .await
                .is_some(),
            "the three servers never formed a JetStream cluster"
        );
        let (fake, dc) = super::dc_traffic::start_fakes().await;
        MasterKey::generate_file(&dir.path().join("master.key")).expect("master key");
        write_private(&dir.path().join("admin.token"), ADMIN_TOKEN);
        Rig {
            nats,
            fake,
            dc,
            dir,
        }
    }

    /// A client of the nodes' admin APIs (it carries their token).
    pub fn http(&self) -> reqwest::Client {
        super::admin_http(ADMIN_TOKEN)
    }

    /// Waits (up to 2 minutes) until the fake Switchboard stored every event of `expected`.
    pub async fn wait_stored(&self, expected: &HashSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && !expected.is_subset(&self.fake.stored_event_ids()) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the fakes, then asserts, event by event against `expected`, that nothing was lost
    /// or stored twice, and that no auth key was used by two MTProto sessions at once.
    pub async fn check(self, sent: u64, expected: &HashSet<String>, nodes: &[NodeProcess]) {
        let got = self.fake.stored_event_ids();
        let lost = expected.difference(&got).count();
        let unexpected = got.difference(expected).count();
        let twice = self.fake.stored_twice();
        let overlaps = self.dc.overlaps();
        eprintln!(
            "{sent} messages sent, {} events expected, {} stored, {lost} lost, {twice} stored twice, {unexpected} unexpected, {} overlaps",
            expected.len(),
            self.fake.stats().stored,
            overlaps.len()
        );
        if lost > 0 || !overlaps.is_empty() {
            for n in nodes {
                eprintln!(
                    "--- {} ---\n{}",
                    n.name,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                );
            }
        }
        let dc = Arc::try_unwrap(self.dc)
            .ok()
            .expect("every user of the fake DC is gone");
        dc.stop().await;
        self.fake.stop().await;
        assert!(
            overlaps.is_empty(),
            "an auth key was used by two sessions at once: {overlaps:?}"
        );
        assert_eq!(lost, 0, "events lost");
        assert_eq!(unexpected, 0, "events stored that were never sent");
        assert_eq!(twice, 0, "an event was stored twice");
    }

    /// Starts `tgingest run` as node `name`, with the cluster on and the shortened timings.
    pub fn start_node(&self, name: &str) -> NodeProcess {
        let admin = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").to_string()
        };
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        // The shipped production example, with only what is specific to this machine
        // overridden: paths, loopback addresses without TLS, the shortened timings.
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
        let child = std::process::Command::new(tgingest_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TGINGEST_NODE_ID", name)
            .env("TGINGEST_NODE_DATA_DIR", self.dir.path().join(name))
            .env(
                "TGINGEST_MASTER_KEY_FILE",
                self.dir.path().join("master.key"),
            )
            .env("TGINGEST_NATS_URL", self.nats.url())
            .env("TGINGEST_NATS_TLS_REQUIRED", "false")
            .envs(tgingest::cluster::local::SHORT_TIMINGS)
            .env("SWITCHBOARD_MCP_URL", self.fake.mcp_url())
            .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
            .env("TGINGEST_ADMIN_LISTEN", &admin)
            .env(
                "TGINGEST_ADMIN_TOKEN_FILE",
                self.dir.path().join("admin.token"),
            )
            .env("TELEGRAM_API_ID", "1")
            // Every client makes a request 2 s after it connects and every 10 s after (the
            // hole check's dialogs), so a client that outlived its claim talks, and the DC's
            // overlap oracle hears it; a revoked session is noticed as fast.
            .env("TGINGEST_TELEGRAM_HOLE_CHECK_INTERVAL", "10s")
            .env("TGINGEST_TELEGRAM_HOLE_GRACE", "2s")
            .arg("--config")
            .arg(example)
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
    pub async fn wait_running(&self) {
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

    pub async fn status(&self, http: &reqwest::Client) -> Option<Value> {
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

    /// The sum of every series of counter or gauge `name` on the node's `/metrics` (0 when absent
    /// or the node does not answer).
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        self.metric_with(http, name, "").await
    }

    /// As [`metric`](Self::metric), over the series whose labels contain `label` (for example
    /// `state="revoked"`).
    pub async fn metric_with(&self, http: &reqwest::Client, name: &str, label: &str) -> f64 {
        let Ok(resp) = http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
        else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

/// Accounts per owning node, as `GET /v1/cluster` of `node` shows them.
pub async fn owners(http: &reqwest::Client, node: &NodeProcess) -> BTreeMap<String, String> {
    let Some(status) = node.status(http).await else {
        return BTreeMap::new();
    };
    tgingest::cluster::local::owners(&status)
}

/// Waits until every account is owned, by exactly the nodes in `nodes`, none above its
/// bounded-load share (1.25 x the mean), every account listening on the fake DC, and nothing has
/// moved for two seconds (the rebalancing is over); returns the owners.
pub async fn wait_settled(
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
        let listening = accounts.iter().all(|a| dc.subscribed_connections(*a) == 1);
        let placed = tgingest::cluster::local::placed(&owned, accounts.len(), nodes) && listening;
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
