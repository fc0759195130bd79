//! Several `tgingest run` nodes on one machine, for the `cluster-failover` and `crash-soak`
//! scenarios: a three-server NATS cluster (R3 streams and buckets), the fake Switchboard and the
//! fake Telegram DC in this process (they outlive every node; the CPU these scenarios report is
//! the nodes' and the NATS servers' read from `/proc`, which the fakes here do not blur, so they
//! were not moved to processes of their own as the single-node runs' are), and nodes started
//! from the shipped `config/production.example.toml` with only machine-specific values overridden (and
//! the shortened ownership timings of `tgingest::cluster::local` when the scenario asks), as
//! `tests/support/nodes.rs` starts them. Also samples the write counts of the `TG_LEASES` and
//! `TG_CHECKPOINTS` buckets (their streams' last sequence) over time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tgingest::cluster::local::{SHORT_TIMINGS, owners, placed};
use tgingest::demo::FakeDcLayout;
use tgingest::keys::MasterKey;
use tgingest::nats_server::cluster::NatsCluster;
use tgingest::policy::Policy;
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::fakedc::{FakeDc, FakeDcConfig};

use crate::admin::{call_as, free_addr, wait_up};
use crate::fakedc::{Sent, import_and_consent};
use crate::procs::{Tgingest, proc_sample};
use crate::scenario::Timings;
use crate::truth::Origin;

/// The admin API's bearer token of every node.
const ADMIN_TOKEN: &str = "loadtest-cluster-admin-token";

/// The shipped production example every node runs from.
fn production_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.example.toml")
}

/// `n` node names: node-a, node-b, …
pub fn node_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("node-{}", (b'a' + (i % 26) as u8) as char))
        .collect()
}

/// One running node.
pub struct Node {
    /// Its admin API's address (loopback).
    pub admin: String,
    /// The process (stopped when dropped).
    pub proc: Tgingest,
}

/// The NATS cluster, the fakes, the accounts and the nodes.
pub struct Rig {
    pub nats: NatsCluster,
    pub fake: FakeSwitchboard,
    pub dc: Arc<FakeDc>,
    pub layout: Arc<FakeDcLayout>,
    pub policy: Arc<Policy>,
    pub nodes: BTreeMap<String, Node>,
    tmp: tempfile::TempDir,
    bin: PathBuf,
    out: PathBuf,
    timings: Timings,
    kv: KvSampler,
    /// Everything the drivers sent so far.
    expected: HashMap<String, Origin>,
    pub started: Instant,
}

impl Rig {
    /// Starts the NATS cluster, the fakes and `accounts` fake-DC accounts (no node yet).
    pub async fn start(
        bin: &Path,
        out: &Path,
        accounts: usize,
        timings: Timings,
    ) -> anyhow::Result<Rig> {
        let tmp = tempfile::tempdir().context("temp dir")?;
        let binary = tgingest::nats_server::find_binary(None)?;
        let nats = NatsCluster::start(binary, &tmp.path().join("nats"), 3)
            .context("start the three-server NATS cluster")?;
        if nats
            .wait_until_formed(Duration::from_secs(30))
            .await
            .is_none()
        {
            bail!("the three NATS servers never formed a JetStream cluster");
        }
        let fake = FakeSwitchboard::start(FakeOptions::default())
            .await
            .context("start the fake Switchboard")?;
        let dc = Arc::new(
            FakeDc::start(FakeDcConfig::default())
                .await
                .context("start the fake Telegram DC")?,
        );
        let layout = Arc::new(FakeDcLayout::build(&dc, accounts));
        MasterKey::generate_file(&tmp.path().join("master.key")).context("master key")?;
        let token = tmp.path().join("admin.token");
        std::fs::write(&token, ADMIN_TOKEN).context("write the admin token")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
        }
        let mut rig = Rig {
            kv: KvSampler::start(&nats.url()).await?,
            nats,
            fake,
            dc,
            layout,
            policy: Arc::new(Policy::new(&Default::default())?),
            nodes: BTreeMap::new(),
            tmp,
            bin: bin.to_path_buf(),
            out: out.to_path_buf(),
            timings,
            expected: HashMap::new(),
            started: Instant::now(),
        };
        // The ground truth must keep what the nodes' policy (the example's) keeps.
        let loaded = tgingest::config::load(Some(&production_example()), rig.env("probe", true))
            .context("the production example with the loadtest's overrides")?;
        rig.policy = Arc::new(Policy::new(&loaded.config.policy).context("policy")?);
        Ok(rig)
    }

    /// A node's environment: machine-specific values, the timings, the cluster on or off.
    fn env(&self, name: &str, cluster: bool) -> Vec<(String, String)> {
        let dir = self.tmp.path();
        let mut env: Vec<(String, String)> = [
            ("TGINGEST_NODE_ID", name.to_string()),
            (
                "TGINGEST_NODE_DATA_DIR",
                dir.join(name).display().to_string(),
            ),
            (
                "TGINGEST_MASTER_KEY_FILE",
                dir.join("master.key").display().to_string(),
            ),
            ("TGINGEST_NATS_URL", self.nats.url()),
            ("TGINGEST_NATS_TLS_REQUIRED", "false".into()),
            ("SWITCHBOARD_MCP_URL", self.fake.mcp_url()),
            ("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s".into()),
            (
                "TGINGEST_ADMIN_TOKEN_FILE",
                dir.join("admin.token").display().to_string(),
            ),
            ("TELEGRAM_API_ID", "1".into()),
            // Every client makes a request every 10 s, so a client that outlived its claim
            // talks, and the DC's overlap oracle hears it.
            ("TGINGEST_TELEGRAM_HOLE_CHECK_INTERVAL", "10s".into()),
            ("TGINGEST_CLUSTER_ENABLED", cluster.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.timings == Timings::Short {
            env.extend(
                SHORT_TIMINGS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
        }
        env
    }

    /// Starts node `name` (cluster on or off) and waits until its admin API answers.
    pub async fn start_node(&mut self, name: &str, cluster: bool) -> anyhow::Result<()> {
        let admin = free_addr()?;
        let mut env = self.env(name, cluster);
        env.push(("TGINGEST_ADMIN_LISTEN".into(), admin.clone()));
        let mut proc = Tgingest::start_node(
            &self.bin,
            &production_example(),
            &env,
            &self.out.join(format!("{name}.log")),
        )?;
        wait_up(&admin, &mut proc)
            .await
            .with_context(|| format!("node {name}"))?;
        self.nodes.insert(name.to_string(), Node { admin, proc });
        Ok(())
    }

    /// Imports and consents every account through any node.
    pub async fn import_accounts(&self) -> anyhow::Result<()> {
        let admin = &self.any_node()?.admin;
        import_and_consent(
            admin,
            Some(ADMIN_TOKEN),
            &self.layout.accounts,
            &self.layout.sessions,
        )
        .await
    }

    fn any_node(&self) -> anyhow::Result<&Node> {
        self.nodes.values().next().context("no node is running")
    }

    /// kill -9 of node `name` (reaped); returns when it was sent.
    pub fn kill(&mut self, name: &str) -> Instant {
        let at = Instant::now();
        if let Some(mut node) = self.nodes.remove(name) {
            node.proc.kill();
        }
        at
    }

    /// SIGTERM to node `name` without waiting (it hands its accounts over); returns when it
    /// was sent. [`Rig::reap`] waits for the exit.
    pub fn terminate(&mut self, name: &str) -> Instant {
        let at = Instant::now();
        if let Some(node) = self.nodes.get(name) {
            node.proc.terminate();
        }
        at
    }

    /// Waits (up to `grace`, then SIGKILL) until node `name` exited.
    pub fn reap(&mut self, name: &str, grace: Duration) {
        if let Some(mut node) = self.nodes.remove(name) {
            node.proc.stop(grace);
        }
    }

    /// Fails when a node this rig started has exited without being told to.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, node) in &mut self.nodes {
            node.proc
                .check_alive()
                .with_context(|| format!("node {name} (see {name}.log)"))?;
        }
        Ok(())
    }

    /// Account id → owning node, as any running node's `GET /v1/cluster` shows it.
    pub async fn owners(&self) -> BTreeMap<String, String> {
        for node in self.nodes.values() {
            if let Ok((200, body)) =
                call_as(&node.admin, Some(ADMIN_TOKEN), "GET", "/v1/cluster", None).await
                && let Ok(status) = serde_json::from_str(&body)
            {
                return owners(&status);
            }
        }
        BTreeMap::new()
    }

    /// The accounts node `name` owns, as [`Rig::owners`] shows them.
    pub async fn accounts_of(&self, name: &str) -> BTreeSet<i64> {
        self.owners()
            .await
            .iter()
            .filter(|(_, node)| *node == name)
            .filter_map(|(a, _)| a.parse().ok())
            .collect()
    }

    /// Waits (up to `limit`) until every account is owned by exactly the running nodes, none
    /// above its bounded-load share, every account listening once on the fake DC, and nothing
    /// has moved for two seconds; returns the owners.
    pub async fn wait_settled(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let deadline = Instant::now() + limit;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut last: Option<(BTreeMap<String, String>, Instant)> = None;
        loop {
            self.check_alive()?;
            let owned = self.owners().await;
            let ok = placed(&owned, self.layout.accounts.len(), &names)
                && self
                    .layout
                    .accounts
                    .iter()
                    .all(|a| self.dc.subscribed_connections(*a) == 1);
            match &last {
                Some((before, since)) if ok && *before == owned => {
                    if since.elapsed() >= Duration::from_secs(2) {
                        return Ok(owned);
                    }
                }
                _ => last = ok.then(|| (owned.clone(), Instant::now())),
            }
            if Instant::now() >= deadline {
                bail!(
                    "the accounts never settled on {names:?} within {limit:?}: {:?}",
                    tgingest::cluster::local::per_node(&owned)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a driver's ground truth to the run's.
    pub fn add_expected(&mut self, sent: Sent) {
        self.expected.extend(sent.0);
    }

    /// Waits (up to `limit`) until every event of `ids` is stored; returns when they were.
    pub async fn wait_stored(&self, ids: &HashSet<String>, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if ids.is_subset(&self.fake.stored_event_ids()) {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU seconds so far of the running nodes and the NATS servers.
    pub fn cpu_s(&mut self) -> f64 {
        let nodes: f64 = self
            .nodes
            .values()
            .filter_map(|n| proc_sample(n.proc.pid()))
            .map(|p| p.cpu_s)
            .sum();
        let nats: f64 = self
            .nats
            .servers()
            .iter()
            .filter_map(|s| s.pid().and_then(proc_sample))
            .map(|p| p.cpu_s)
            .sum();
        nodes + nats
    }

    /// The `TG_LEASES` and `TG_CHECKPOINTS` write rates between two instants.
    pub fn kv_rate(&self, from: Instant, to: Instant) -> KvRate {
        self.kv.rate(from, to)
    }

    /// The KV samples so far, for the report's plot.
    pub fn kv_samples(&self) -> Vec<KvSample> {
        self.kv.samples(self.started)
    }

    /// Waits for the last deliveries, stops every node and the fakes, and checks event by
    /// event against everything sent: lost, stored twice, unexpected, and overlaps.
    pub async fn finish(mut self, drain: Duration) -> Verdict {
        let ids: HashSet<String> = self.expected.keys().cloned().collect();
        let drained = self.wait_stored(&ids, drain).await.is_some();
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.reap(&name, Duration::from_secs(15));
        }
        let got = self.fake.stored_event_ids();
        let overlaps = self.dc.overlaps();
        let verdict = Verdict {
            expected: ids.len() as u64,
            stored: self.fake.stats().stored,
            lost: ids.difference(&got).count() as u64,
            stored_twice: self.fake.stored_twice() as u64,
            unexpected: got.difference(&ids).count() as u64,
            overlaps: overlaps.len() as u64,
            overlap_details: overlaps.iter().take(20).map(|o| format!("{o:?}")).collect(),
            drained,
        };
        self.kv.stop();
        self.fake.stop().await;
        if let Ok(dc) = Arc::try_unwrap(self.dc) {
            dc.stop().await;
        }
        verdict
    }
}

/// The end-of-run check, event by event against everything the drivers sent.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub expected: u64,
    pub stored: u64,
    pub lost: u64,
    pub stored_twice: u64,
    pub unexpected: u64,
    /// Requests from an older MTProto session after a newer one started on the same auth key.
    pub overlaps: u64,
    pub overlap_details: Vec<String>,
    /// Every expected event arrived before the drain timeout.
    pub drained: bool,
}

impl Verdict {
    /// Nothing lost, stored twice or unexpected, and no overlap.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.stored_twice == 0 && self.unexpected == 0 && self.overlaps == 0
    }
}

/// One sample of the buckets' streams: seconds since the rig started and their last sequence
/// (every KV write is one message).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KvSample {
    pub t: f64,
    pub leases_seq: u64,
    pub checkpoints_seq: u64,
}

/// Writes per second to each bucket over a window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KvRate {
    pub window_s: f64,
    pub leases_per_s: f64,
    pub checkpoints_per_s: f64,
}

/// Polls both buckets' streams every 250 ms.
struct KvSampler {
    samples: Arc<Mutex<Vec<(Instant, u64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl KvSampler {
    async fn start(url: &str) -> anyhow::Result<KvSampler> {
        let servers = url
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<async_nats::ServerAddr>, _>>()
            .with_context(|| format!("NATS server list {url}"))?;
        let client = async_nats::connect(servers)
            .await
            .with_context(|| format!("connect to NATS at {url}"))?;
        let js = async_nats::jetstream::new(client);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let seq = |name: String| {
                    let js = js.clone();
                    async move {
                        match js.get_stream(&name).await {
                            Ok(mut s) => s.info().await.map_or(0, |i| i.state.last_sequence),
                            Err(_) => 0,
                        }
                    }
                };
                loop {
                    let leases = seq(format!("KV_{}", tgingest::bus::BUCKET_LEASES)).await;
                    let checkpoints =
                        seq(format!("KV_{}", tgingest::bus::BUCKET_CHECKPOINTS)).await;
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push((
                        Instant::now(),
                        leases,
                        checkpoints,
                    ));
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        Ok(KvSampler { samples, task })
    }

    fn rate(&self, from: Instant, to: Instant) -> KvRate {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let first = samples.iter().find(|s| s.0 >= from);
        let last = samples.iter().rev().find(|s| s.0 <= to);
        match (first, last) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                KvRate {
                    window_s: dt,
                    leases_per_s: b.1.saturating_sub(a.1) as f64 / dt,
                    checkpoints_per_s: b.2.saturating_sub(a.2) as f64 / dt,
                }
            }
            _ => KvRate::default(),
        }
    }

    fn samples(&self, since: Instant) -> Vec<KvSample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| KvSample {
                t: s.0.saturating_duration_since(since).as_secs_f64(),
                leases_seq: s.1,
                checkpoints_seq: s.2,
            })
            .collect()
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for KvSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
