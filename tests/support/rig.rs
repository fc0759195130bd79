//! An in-process pipeline for tests: a real nats-server, a node with simulated accounts, and the
//! fake Switchboard, with the ground truth of what should arrive.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tgingest::config::Config;
use tgingest::demo::expected_after_policy;
use tgingest::event::Event;
use tgingest::keys::MasterKey;
use tgingest::node::Node;
use tgingest::pipeline::PipelineStats;
use tgingest::policy::Policy;
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

use super::TestNats;

/// The observable state of the account actor registered as `name`, or `None` if it is not
/// running.
pub async fn account_status(name: String) -> Option<tgingest::pipeline::account::AccountStatus> {
    use ractor::rpc::CallResult;
    use tgingest::pipeline::account::AccountMsg;
    let actor: ractor::ActorRef<AccountMsg> = ractor::registry::where_is(name)?.into();
    match actor
        .call(AccountMsg::Status, Some(Duration::from_secs(3)))
        .await
    {
        Ok(CallResult::Success(status)) => Some(status),
        _ => None,
    }
}

/// A running pipeline and everything around it; stopped when dropped.
pub struct Rig {
    pub node: Option<Node>,
    pub stats: Arc<PipelineStats>,
    pub fake: FakeSwitchboard,
    pub world: Arc<SimulatedWorld>,
    pub policy: Policy,
    pub config: Config,
    pub nats: TestNats,
    pub dir: tempfile::TempDir,
}

/// A small simulation: `accounts` accounts, `messages` positions each, fast.
pub fn simulation(accounts: u32, messages: u64, rate: f64, seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        accounts,
        messages_per_account: messages,
        rate,
        seed,
        ..SimulatorConfig::default()
    }
}

/// A config for a node on `nats` delivering to `fake`, with its own data dir and key.
pub fn node_config(
    nats_url: &str,
    switchboard_url: &str,
    dir: &std::path::Path,
    sim: SimulatorConfig,
) -> Config {
    let mut config = Config::default();
    config.node.id = format!("rig-{}", rand::random::<u32>());
    config.node.data_dir = dir.join("data");
    config.nats.url = nats_url.to_string();
    config.switchboard.url = switchboard_url.to_string();
    config.switchboard.heartbeat_interval = tgingest::config::Dur::secs(0);
    config.admin.listen = String::new();
    let key = dir.join("master.key");
    if !key.exists() {
        MasterKey::generate_file(&key).expect("master key");
    }
    config.security.master_key_file = key;
    config.simulator = sim;
    config
}

/// What every in-process pipeline test starts with: TLS and logging set up, a nats-server and
/// the fake Switchboard.
pub async fn nats_and_switchboard() -> (TestNats, FakeSwitchboard) {
    tgingest::telemetry::install_crypto_provider();
    tgingest::telemetry::init_logging(tgingest::config::LogFormat::Human, "warn");
    let nats = TestNats::start();
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    (nats, fake)
}

impl Rig {
    /// Starts NATS, the fake Switchboard and a node running the simulation in `sim`.
    pub async fn start(sim: SimulatorConfig, tweak: impl FnOnce(&mut Config)) -> Rig {
        let (nats, fake) = nats_and_switchboard().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = node_config(&nats.url(), &fake.mcp_url(), dir.path(), sim);
        tweak(&mut config);
        let policy = Policy::new(&config.policy).expect("policy");
        let world = Arc::new(SimulatedWorld::new(config.simulator.clone()).expect("world"));
        let node = Node::start(config.clone()).await.expect("node");
        let stats = node.start_pipeline().await.expect("pipeline");
        Rig {
            node: Some(node),
            stats,
            fake,
            world,
            policy,
            config,
            nats,
            dir,
        }
    }

    /// What must arrive: every unique event of the simulation that the policy keeps, redacted.
    pub fn expected(&self) -> HashMap<String, Event> {
        expected_after_policy(
            &self.world,
            &self.policy,
            self.config.simulator.messages_per_account,
        )
        .map(|e| (e.event_id.clone(), e))
        .collect()
    }

    /// Event ids the fake Switchboard stored, with how often each was stored.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for accepted in self.fake.accepted() {
            let id = accepted.envelope["payload"]["raw"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *out.entry(id).or_default() += 1;
        }
        out
    }

    /// Waits until every expected event is stored (true) or `timeout` passes (false).
    pub async fn wait_all_delivered(&self, timeout: Duration) -> bool {
        let expected = self.expected();
        self.wait_delivered(expected.keys(), timeout).await
    }

    /// Waits until every event id in `ids` is stored (true) or `timeout` passes (false): for
    /// tests whose expected set does not come from [`Rig::expected`].
    pub async fn wait_delivered<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String> + Clone,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let delivered = self.delivered();
            if ids.clone().into_iter().all(|id| delivered.contains_key(id)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Every message currently in `stream`, in order, with its headers.
    pub async fn read_stream(&self, stream: &str) -> Vec<async_nats::jetstream::Message> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        use futures::StreamExt;
        let js = &self.node.as_ref().expect("node running").bus.js;
        let stream = js.get_stream(stream).await.unwrap();
        let total = stream.cached_info().state.messages;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < total {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => out.push(m),
                _ => break,
            }
        }
        out
    }

    /// Stops the node (clean shutdown).
    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}
