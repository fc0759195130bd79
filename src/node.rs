//! One running tgingest node: the parts started in order, and stopped in reverse.
//!
//! Start-up: data dir → master key → NATS (the embedded server, or the configured URL) → bus
//! set-up → event log (with a `node.start` audit record) → root supervisor → the log's copy in
//! `TG_AUDIT` (`audit_stream`: shipping, and anchoring what the copy holds).
//! Shut-down writes a flushed `node.stop` record, stops the actors, then NATS.
//!
//! With [`NodeOptions::stop`], a SIGINT/SIGTERM that arrives during start-up aborts it between
//! steps (what was started is stopped again, nothing is left half-written) with
//! [`NodeError::Stopped`]. The embedded nats-server runs in its own process group, so a
//! terminal's Ctrl-C reaches only the node, which stops it last, after the pipeline has drained.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::accounts::budget::LoginBudget;
use crate::accounts::login::{GrammersLogin, LoginBackend};
use crate::accounts::registry::{MarkEnded, Registry};
use crate::accounts::{AccountsControl, ControlParts};
use crate::admin::AdminServer;
use crate::admin::principals::TokenKey;
pub use crate::audit_stream::{AnchorRecord, latest_anchor};
use crate::audit_stream::{AuditShipping, ShipState, ShipperParts};
use crate::bus::{BUCKET_LEASES, Bus, BusError, SetupReport};
use crate::cluster::controller::Controller;
use crate::cluster::gate::Gate;
use crate::cluster::record::Records;
use crate::cluster::runner::NodeAccounts;
use crate::config::Config;
use crate::credentials::{MASTER_KEY_CREDENTIAL, SecretFile};
use crate::event::{Chat, Event};
use crate::eventlog::{
    Anchor, AuditEntry, ChainKey, ChainKeyOrigin, Durability, EventLog, EventLogError,
};
use crate::keys::{
    GENERATED_KEY_FILE, KeyError, KeyOrigin, KeyPurpose, KeySources, MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV, MasterKey,
};
use crate::nats_server::encryption::StoreEncryption;
use crate::nats_server::{NatsServer, NatsServerError, ServerOptions, find_binary};
use crate::pipeline::replay::{ReplayParts, Replays};
use crate::pipeline::{self, AccountParts, PipelineParts, PipelineStats};
use crate::policy::Policy;
use crate::stop::StopSignals;
use crate::supervision::{RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::switchboard::McpClient;
use crate::telegram::gateway::{AccountInfo, Cursor, GatewayError, GatewayFactory, SourceUpdate};
use crate::telegram::route::{ConnectRoute, GatePasses};
use crate::telegram::simulated::{SimulatedFactory, SimulatedWorld, SimulatorFaults};
use futures::future::BoxFuture;

/// How long a stopping node waits for its event log's last records to reach `TG_AUDIT`.
const SHIP_ON_STOP: Duration = Duration::from_secs(5);

/// Why a node could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("embedded NATS: {0}")]
    NatsServer(#[from] NatsServerError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("cannot start the root supervisor: {0}")]
    Supervisor(String),
    #[error("a start-up task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot set up the Switchboard client: {0}")]
    Switchboard(String),
    #[error("cannot start the pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("admin API: {0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("accounts: {0}")]
    Accounts(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("stopped by {0} during start-up")]
    Stopped(&'static str),
}

/// What a node is built from besides its config: the parts that talk to Telegram.
#[derive(Default)]
pub struct NodeOptions {
    /// Makes the gateways of registry accounts; default: none configured (an account that
    /// starts fails with a clear error until the grammers adapter is plugged in here).
    pub gateway_factory: Option<Arc<dyn GatewayFactory>>,
    /// Performs interactive logins; default: grammers with `telegram.api_id`/`api_hash`.
    pub login_backend: Option<Arc<dyn LoginBackend>>,
    /// Stop signals installed before start-up: one arriving aborts the start-up, and the
    /// running node waits on them. Default: none during start-up, installed when it runs.
    pub stop: Option<StopSignals>,
}

/// `Err(Stopped)` once a stop signal has arrived.
fn check_stop(stop: Option<&StopSignals>) -> Result<(), NodeError> {
    match stop.and_then(StopSignals::received) {
        Some(which) => Err(NodeError::Stopped(which)),
        None => Ok(()),
    }
}

/// Runs a start-up `step`, abandoned (dropped) if a stop signal comes first. Only steps that
/// leave nothing half-done when dropped go through here: connecting, JetStream set-up (which is
/// idempotent); never a write to the event log.
async fn unless_stopped<T>(
    stop: Option<&StopSignals>,
    step: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Result<T, NodeError> {
    check_stop(stop)?;
    let Some(stop) = stop else {
        return step.await;
    };
    tokio::select! {
        biased;
        which = stop.wait() => Err(NodeError::Stopped(which)),
        result = step => result,
    }
}

/// Resolves the master key the way every command does: `TGINGEST_MASTER_KEY`, then
/// `TGINGEST_MASTER_KEY_FILE`, then the systemd credential `tgingest-master-key`, then
/// `security.master_key_file`, then (embedded mode only) the key file in the data dir, generated
/// on first run when `generate` is set.
pub fn master_key(config: &Config, generate: bool) -> Result<(MasterKey, KeyOrigin), KeyError> {
    let env_value = std::env::var(MASTER_KEY_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(zeroize::Zeroizing::new);
    let env_file = std::env::var_os(MASTER_KEY_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let credential = SecretFile::credential(MASTER_KEY_CREDENTIAL);
    let config_file = &config.security.master_key_file;
    let generated = config.node.data_dir.join(GENERATED_KEY_FILE);
    let fallback =
        (config.embedded_nats() && (generate || generated.exists())).then_some(generated.as_path());
    MasterKey::resolve(KeySources {
        env_value: env_value.as_deref().map(String::as_str),
        env_file: env_file.as_deref(),
        credential: credential.as_ref().map(SecretFile::path),
        config_file: Some(config_file.as_path()).filter(|p| !p.as_os_str().is_empty()),
        generate_at: fallback,
    })
}

/// How the embedded nats-server is started on this config's store, encrypted with `encryption`.
pub fn embedded_server_options(
    config: &Config,
    encryption: StoreEncryption,
) -> Result<ServerOptions, NatsServerError> {
    let binary = find_binary(Some(&config.nats.embedded.binary))?;
    let mut options = ServerOptions::new(binary, config.nats_store_dir(), &config.node_id());
    options.encryption = Some(encryption);
    Ok(options)
}

/// The nats-server this node started, restarted on the same port if it dies (until the node
/// begins to stop).
struct EmbeddedNats {
    server: Arc<Mutex<NatsServer>>,
    watcher: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl EmbeddedNats {
    async fn start(config: &Config, key: &MasterKey) -> Result<EmbeddedNats, NodeError> {
        let mut options = embedded_server_options(config, StoreEncryption::new(key))?;
        options.port = config.nats.embedded.port;
        let server = tokio::task::spawn_blocking(move || NatsServer::start(options))
            .await
            .map_err(|e| NodeError::Task(e.to_string()))??;
        tracing::info!(url = %server.url(), pid = server.pid(), "embedded nats-server started");
        let server = Arc::new(Mutex::new(server));
        let stopping = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch(server.clone(), stopping.clone()));
        Ok(EmbeddedNats {
            server,
            watcher,
            stopping,
        })
    }

    /// From now on a server that exits stays down: the node is stopping, and a server that
    /// went (a signal to the whole control group) must not be started again meanwhile.
    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        self.server.lock().map(|s| s.url()).unwrap_or_default()
    }

    async fn stop(self) {
        self.begin_stop();
        self.watcher.abort();
        let server = self.server;
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut s) = server.lock() {
                s.stop();
            }
        })
        .await;
        tracing::info!("embedded nats-server stopped");
    }
}

/// Restarts the embedded server when it exits on its own, with growing pauses between tries.
async fn watch(server: Arc<Mutex<NatsServer>>, stopping: Arc<AtomicBool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let alive = server.lock().map(|mut s| s.is_running()).unwrap_or(true);
        if stopping.load(Ordering::SeqCst) {
            if !alive {
                tracing::warn!(
                    "embedded nats-server exited while the node stops; not restarting it"
                );
            }
            return;
        }
        if alive {
            backoff = Duration::from_secs(1);
            continue;
        }
        tracing::error!("embedded nats-server exited; restarting it on the same port");
        metrics::counter!("tgingest_embedded_nats_restarts_total").increment(1);
        let handle = server.clone();
        let stopping_now = stopping.clone();
        let result = tokio::task::spawn_blocking(move || match handle.lock() {
            // Checked again under the lock: the node may have begun to stop meanwhile.
            Ok(_) if stopping_now.load(Ordering::SeqCst) => None,
            Ok(mut s) => Some(s.restart()),
            Err(_) => None,
        })
        .await;
        match result {
            Ok(Some(Ok(()))) => tracing::info!("embedded nats-server is back"),
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, retry_in = ?backoff, "embedded nats-server did not restart");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ => return,
        }
    }
}

/// A started node.
pub struct Node {
    pub config: Config,
    pub node_id: String,
    pub bus: Bus,
    pub setup: SetupReport,
    pub eventlog: Arc<EventLog>,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Registry accounts: import, login, consent, pause, resume, remove (what the admin API calls).
    pub accounts: Arc<AccountsControl>,
    /// Operator replays from `TG_CLEAN` (what `/v1/replays` calls).
    pub replays: Arc<Replays>,
    admin: Option<AdminServer>,
    /// This node's share of the cluster (`cluster.enabled`).
    cluster: Option<ClusterNode>,
    supervisor_done: tokio::task::JoinHandle<()>,
    /// Copies the event log to `TG_AUDIT` and anchors what the copy holds.
    shipping: AuditShipping,
    verifying: Option<tokio::task::JoinHandle<()>>,
    poller: crate::observability::MetricsPoller,
    embedded: Option<EmbeddedNats>,
    stop: Option<StopSignals>,
}

impl Node {
    /// Starts every part in order; on failure, what was started is stopped again.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        Node::start_with(config, NodeOptions::default()).await
    }

    /// [`Node::start`] with the given Telegram parts (tests pass simulated ones).
    ///
    /// The start-up's state machine lives on the heap: in a debug build it is large enough to
    /// overflow a 2 MiB thread stack (a test's, or a runtime worker's) wherever it is awaited.
    pub async fn start_with(config: Config, options: NodeOptions) -> Result<Node, NodeError> {
        Box::pin(Node::start_inner(config, options)).await
    }

    async fn start_inner(config: Config, options: NodeOptions) -> Result<Node, NodeError> {
        let node_id = config.node_id();
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;

        let (key, origin) = master_key(&config, true)?;
        match &origin {
            KeyOrigin::Generated(path) => tracing::warn!(
                path = %path.display(),
                "generated a master key for the embedded default; production must supply its own ({MASTER_KEY_ENV} or security.master_key_file)"
            ),
            KeyOrigin::File(path) => tracing::info!(path = %path.display(), "master key from file"),
            KeyOrigin::Credential(path) => tracing::info!(
                path = %path.display(),
                "master key from the systemd credential {MASTER_KEY_CREDENTIAL}"
            ),
            KeyOrigin::Env => tracing::info!("master key from {MASTER_KEY_ENV}"),
        }

        let stop = options.stop.clone();
        let stop = stop.as_ref();
        check_stop(stop)?;
        crate::telemetry::set_log_id_key(*key.derive(KeyPurpose::LogIdHash).bytes());
        let metrics_handle = crate::observability::install_recorder(register_metric_zeros);
        crate::observability::set_per_account(config.admin.per_account_metrics);
        // Not abandoned midway: the server would be left to the blocking pool. It is stopped
        // again below if a stop came meanwhile.
        let embedded = if config.embedded_nats() {
            Some(EmbeddedNats::start(&config, &key).await?)
        } else {
            None
        };
        let url = embedded
            .as_ref()
            .map_or_else(|| config.nats.url.clone(), EmbeddedNats::url);
        let started = async {
            let client_name = format!("tgingest-{node_id}");
            let bus = unless_stopped(stop, async {
                Ok(Bus::connect(&url, &config.nats, &client_name).await?)
            })
            .await?;
            let setup = match unless_stopped(stop, async { Ok(bus.setup(&config).await?) }).await {
                Ok(setup) => setup,
                Err(e) => {
                    let _ = bus.client.drain().await;
                    return Err(e);
                }
            };
            for (name, applied) in &setup.items {
                tracing::info!(%name, ?applied, "bus set-up");
            }
            // The chain key is random and sealed under the master key, so rotating the master
            // key leaves the log verifiable; older logs keep their derived key (migrated here).
            if let Err(e) = check_stop(stop) {
                let _ = bus.client.drain().await;
                return Err(e);
            }
            let (chain_key, chain_origin) = ChainKey::open_or_create(&config.eventlog_dir(), &key)?;
            if chain_origin != ChainKeyOrigin::Opened {
                tracing::info!(origin = ?chain_origin, "event-log chain key written sealed");
            }
            let eventlog = Arc::new(EventLog::open(&config.eventlog_dir(), chain_key.bytes())?);
            let details = BTreeMap::from([
                ("version".to_string(), crate::VERSION.to_string()),
                (
                    "nats".to_string(),
                    if embedded.is_some() {
                        "embedded".into()
                    } else {
                        "external".into()
                    },
                ),
            ]);
            eventlog
                .audit(&audit("node.start", &node_id, details), Durability::Flushed)
                .await?;
            Ok::<_, NodeError>((bus, setup, eventlog))
        }
        .await;
        let (bus, setup, eventlog) = match started {
            Ok(parts) => parts,
            Err(e) => {
                if let Some(nats) = embedded {
                    nats.stop().await;
                }
                return Err(e);
            }
        };

        let s = &config.supervision;
        let policy = RestartPolicy {
            max_restarts: s.max_restarts,
            window: s.window.into(),
            backoff_initial: s.backoff_initial.into(),
            backoff_max: s.backoff_max.into(),
            jitter: s.jitter,
        };
        let args = SupervisorArgs::new(format!("{node_id}/root"), policy, Vec::new());
        let (supervisor, supervisor_done) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| NodeError::Supervisor(e.to_string()))?;

        let accounts = async {
            check_stop(stop)?;
            let registry = Registry::open(&bus)
                .await
                .map_err(|e| NodeError::Accounts(e.to_string()))?;
            let sessions = crate::telegram::session::SessionStore::open(&bus, key.clone())
                .await
                .map_err(|e| NodeError::Accounts(e.to_string()))?;
            let budget = LoginBudget::open(&data_dir, config.telegram.login_attempts_per_day)
                .map_err(|e| NodeError::Accounts(e.to_string()))?;
            let backend = options.login_backend.clone().unwrap_or_else(|| {
                Arc::new(GrammersLogin::new(
                    config.telegram.api_id,
                    config.telegram.api_hash.expose(),
                ))
            });
            // In a cluster every Telegram connection goes through the fence gate, with the pass
            // of the account's claim; without one, a client refuses to connect.
            let passes = GatePasses::default();
            let route = if config.cluster.enabled {
                ConnectRoute::Gated(passes.clone())
            } else {
                ConnectRoute::Direct
            };
            let factory = match options.gateway_factory.clone() {
                Some(factory) => factory,
                None => grammers_factory(&config, &bus, &key, route).await?,
            };
            let control = Arc::new(AccountsControl::new(ControlParts {
                node_id: node_id.clone(),
                registry: registry.clone(),
                sessions,
                eventlog: eventlog.clone(),
                supervisor: supervisor.clone(),
                account_parts: AccountParts {
                    node_id: node_id.clone(),
                    factory,
                    bus: bus.clone(),
                    eventlog: eventlog.clone(),
                    stats: Arc::new(PipelineStats::default()),
                    flood: crate::pipeline::account::FloodSettings::from_config(&config.telegram),
                    ended: Some(Arc::new(MarkEnded(registry.clone()))),
                },
                backend,
                budget,
                phone_key: key
                    .derive(KeyPurpose::LogIdHash)
                    .derive("tgingest 2026-11 phone number hash v1"),
                clustered: config.cluster.enabled,
            }));
            // Not fatal: the node must come up so an operator can fix the registry through the API.
            match control.reconcile().await {
                Ok(started) => tracing::info!(started, "registry accounts started"),
                Err(e) => tracing::error!(error = %e,
                    "cannot start the registry accounts; the node runs without them"),
            }
            let cluster = if config.cluster.enabled {
                Some(
                    unless_stopped(
                        stop,
                        ClusterNode::start(&config, &bus, &node_id, control.clone(), passes),
                    )
                    .await?,
                )
            } else {
                None
            };
            let ops = crate::admin::Ops {
                metrics: metrics_handle.clone(),
                bus: bus.clone(),
                switchboard_url: config.switchboard.url.clone(),
                node_id: node_id.clone(),
                cluster: cluster
                    .as_ref()
                    .map(|c| (c.records.clone(), c.controller.snapshots())),
            };
            let replays = Arc::new(Replays::new(ReplayParts {
                bus: bus.clone(),
                eventlog: eventlog.clone(),
                switchboard: config.switchboard.clone(),
                node_id: node_id.clone(),
            }));
            let admin = async {
                check_stop(stop)?;
                Ok::<_, NodeError>(
                    AdminServer::start(
                        &config.admin,
                        &data_dir,
                        TokenKey::new(key.derive(KeyPurpose::AdminToken)),
                        control.clone(),
                        replays.clone(),
                        Some(ops),
                    )
                    .await?,
                )
            }
            .await;
            match admin {
                Ok(admin) => Ok::<_, NodeError>((control, replays, admin, cluster)),
                Err(e) => {
                    if let Some(cluster) = cluster {
                        cluster.leave().await;
                    }
                    Err(e)
                }
            }
        }
        .await;
        let (accounts, replays, admin, cluster) = match accounts {
            Ok(parts) => parts,
            Err(e) => {
                supervisor.stop(Some("node failed to start".into()));
                let _ = tokio::time::timeout(Duration::from_secs(10), supervisor_done).await;
                let _ = bus.client.drain().await;
                if let Some(nats) = embedded {
                    nats.stop().await;
                }
                return Err(e);
            }
        };

        let poller = crate::observability::MetricsPoller::start(
            bus.clone(),
            crate::observability::poller::POLL_EVERY,
        );
        let shipping = AuditShipping::start(ShipperParts {
            bus: bus.clone(),
            eventlog: eventlog.clone(),
            node_id: node_id.clone(),
            master: key.clone(),
            anchor_every: config.eventlog.anchor_interval.into(),
        });
        let verify_every: Duration = config.eventlog.verify_interval.into();
        let verifying = (!verify_every.is_zero()).then(|| {
            tokio::spawn(verify_periodically(
                bus.clone(),
                eventlog.clone(),
                node_id.clone(),
                verify_every,
            ))
        });
        Ok(Node {
            config,
            node_id,
            bus,
            setup,
            eventlog,
            supervisor,
            accounts,
            replays,
            admin,
            cluster,
            supervisor_done,
            shipping,
            verifying,
            poller,
            embedded,
            stop: options.stop,
        })
    }

    /// Follows the copying of the event log to `TG_AUDIT` (what was shipped, anchored, refused).
    pub fn audit_shipping(&self) -> tokio::sync::watch::Receiver<ShipState> {
        self.shipping.state()
    }

    /// The address the admin API listens on, if it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Starts the pipeline stages; with `simulator.accounts > 0` the accounts are simulated.
    pub async fn start_pipeline(&self) -> Result<Arc<PipelineStats>, NodeError> {
        self.start_pipeline_with(false).await
    }

    /// [`Node::start_pipeline`], keeping Switchboard's answer per event when
    /// `record_acknowledged` is set (the demo's comparison with its ground truth).
    pub async fn start_pipeline_with(
        &self,
        record_acknowledged: bool,
    ) -> Result<Arc<PipelineStats>, NodeError> {
        let policy = Arc::new(Policy::new(&self.config.policy)?);
        let client = McpClient::new(&self.config.switchboard)
            .map_err(|e| NodeError::Switchboard(e.to_string()))?;
        let (factory, accounts): (Arc<dyn GatewayFactory>, Vec<String>) =
            if self.config.simulator.accounts > 0 {
                let world = Arc::new(SimulatedWorld::new(self.config.simulator.clone())?);
                let accounts = world.account_ids().collect();
                (
                    Arc::new(SimulatedFactory::new(world, SimulatorFaults::new())),
                    accounts,
                )
            } else {
                (Arc::new(NoAccounts), Vec::new())
            };
        tracing::info!(accounts = accounts.len(), "starting the pipeline");
        Ok(pipeline::start(
            self.host(),
            PipelineParts {
                factory,
                accounts,
                policy,
                client,
                record_acknowledged,
            },
        )
        .await?)
    }

    /// The parts of this node the pipeline runs in.
    pub fn host(&self) -> pipeline::Host<'_> {
        pipeline::Host {
            node_id: &self.node_id,
            config: &self.config,
            bus: &self.bus,
            eventlog: &self.eventlog,
            supervisor: &self.supervisor,
            accounts: &self.accounts,
        }
    }

    /// The URL of the NATS server in use.
    pub fn nats_url(&self) -> &str {
        self.bus.url()
    }

    /// Runs until SIGINT/SIGTERM, or until the root supervisor gives up (an error).
    pub async fn run_until_signal(mut self) -> Result<(), NodeError> {
        let stop = match self.stop.clone() {
            Some(stop) => stop,
            None => StopSignals::install().map_err(|e| {
                NodeError::Task(format!("cannot install the SIGINT/SIGTERM handlers: {e}"))
            })?,
        };
        let escalated = tokio::select! {
            _ = stop.wait() => false,
            _ = &mut self.supervisor_done => true,
        };
        self.shutdown().await?;
        if escalated {
            return Err(NodeError::Supervisor(
                "the root supervisor gave up after repeated failures".into(),
            ));
        }
        Ok(())
    }

    /// Stops every part in reverse order; the `node.stop` record is flushed before NATS goes.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if let Some(nats) = &self.embedded {
            nats.begin_stop();
        }
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        // Hand every account off first, while NATS and the pipeline still take its last events.
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
        self.replays.stop_all().await;
        if let Some(verifying) = &self.verifying {
            verifying.abort();
        }
        self.poller.stop();
        self.supervisor.stop(Some("node shutting down".into()));
        let _ = tokio::time::timeout(Duration::from_secs(10), self.supervisor_done).await;
        let result = self
            .eventlog
            .audit(
                &audit("node.stop", &self.node_id, BTreeMap::new()),
                Durability::Flushed,
            )
            .await;
        // The stream copy and the anchor take in `node.stop`, unless NATS is away too long.
        self.shipping.finish(SHIP_ON_STOP).await;
        let _ = self.bus.client.flush().await;
        // Close the connection for every clone, so nothing reconnects to a server being stopped.
        let _ = self.bus.client.drain().await;
        if let Some(nats) = self.embedded {
            nats.stop().await;
        }
        result.map(|_| ()).map_err(NodeError::from)
    }
}

/// This node's part in the cluster: the controller that claims, starts and hands off its
/// accounts, and the gate their connections go through.
struct ClusterNode {
    records: Records,
    controller: Controller,
    _gate: Arc<Gate>,
}

impl ClusterNode {
    /// Acquires the node lease (waiting out a previous process under the same node id) and
    /// starts deciding.
    async fn start(
        config: &Config,
        bus: &Bus,
        node_id: &str,
        control: Arc<AccountsControl>,
        passes: GatePasses,
    ) -> Result<ClusterNode, NodeError> {
        let cluster_error = |e: &dyn std::fmt::Display| NodeError::Cluster(e.to_string());
        let records = Records::open(
            bus,
            BUCKET_LEASES,
            config.kv.lease_ttl.into(),
            config.cluster.renew_every.into(),
        )
        .await
        .map_err(|e| cluster_error(&e))?;
        let gate = Arc::new(Gate::start().await.map_err(|e| cluster_error(&e))?);
        let runner = Arc::new(NodeAccounts::new(control, passes));
        let controller = Controller::start(
            records.clone(),
            config.cluster.clone(),
            node_id.to_string(),
            runner,
            gate.clone(),
        )
        .await
        .map_err(|e| cluster_error(&e))?;
        tracing::info!(node = node_id, gate = %gate.addr(), "cluster node lease held; sharing the accounts");
        Ok(ClusterNode {
            records,
            controller,
            _gate: gate,
        })
    }

    /// Hands every account off and gives the node lease up.
    async fn leave(self) {
        self.controller.leave().await;
    }
}

/// Real accounts: the grammers adapter over sealed sessions in `TG_SESSIONS`. Without
/// `telegram.api_id` there is none, and an account that starts fails saying so.
async fn grammers_factory(
    config: &Config,
    bus: &Bus,
    key: &MasterKey,
    route: ConnectRoute,
) -> Result<Arc<dyn GatewayFactory>, NodeError> {
    use crate::telegram::grammers::gateway::{
        GrammersFactory, GrammersSettings, SessionOpener, session_error,
    };
    use crate::telegram::session::{LiveSessionOptions, SealedSession, SessionStore};

    let Ok(mut settings) = GrammersSettings::from_config(&config.telegram) else {
        return Ok(Arc::new(NoAccounts));
    };
    settings.route = route;
    let store = Arc::new(
        SessionStore::open(bus, key.clone())
            .await
            .map_err(|e| NodeError::Accounts(e.to_string()))?,
    );
    let opener: SessionOpener<SealedSession> = Arc::new(move |account: &str, owner| {
        let (store, account, owner) = (store.clone(), account.to_string(), owner.clone());
        Box::pin(async move {
            SealedSession::load_as(store, &account, &owner, LiveSessionOptions::default())
                .await
                .map(Arc::new)
                .map_err(session_error)
        })
    });
    Ok(Arc::new(GrammersFactory::new(settings, opener)))
}

/// The factory when this node runs no accounts of its own (its stages still drain the bus).
/// It is never asked for a gateway, since no account actor is started.
struct NoAccounts;

impl GatewayFactory for NoAccounts {
    fn create(&self, _account_id: &str) -> Box<dyn crate::telegram::gateway::Gateway> {
        Box::new(NoGateway)
    }
}

/// A gateway that refuses every call: what an account without a configured source gets.
struct NoGateway;

impl crate::telegram::gateway::Gateway for NoGateway {
    fn connect(&mut self) -> BoxFuture<'_, Result<AccountInfo, GatewayError>> {
        Box::pin(async {
            Err(GatewayError::Revoked(
                "no Telegram API credentials are configured (telegram.api_id, env TELEGRAM_API_ID)"
                    .into(),
            ))
        })
    }
    fn catch_up(&mut self, _: Option<Cursor>) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async { Ok(()) })
    }
    fn next_update(&mut self) -> BoxFuture<'_, Result<Option<SourceUpdate>, GatewayError>> {
        Box::pin(async { Ok(None) })
    }
    fn commit(&mut self, _: Cursor) -> BoxFuture<'_, Result<(), GatewayError>> {
        Box::pin(async { Ok(()) })
    }
    fn history(
        &mut self,
        _: Chat,
        _: Option<String>,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<Event>, GatewayError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn audit(action: &str, actor: &str, details: BTreeMap<String, String>) -> AuditEntry {
    AuditEntry {
        action: action.into(),
        actor: actor.into(),
        account_id: None,
        details,
    }
}

/// Verifies the event log in the background every `every`: the records appended since the last
/// check, and that the log still holds the head anchored in JetStream. Sets
/// `tgingest_eventlog_verify_ok`, whose alert is how an operator learns of a damaged log.
async fn verify_periodically(bus: Bus, eventlog: Arc<EventLog>, node_id: String, every: Duration) {
    let mut verified = Anchor::EMPTY;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let anchor = match latest_anchor(&bus, &node_id)
            .await
            .and_then(|record| record.map(|r| r.anchor()).transpose())
        {
            Ok(anchor) => anchor,
            Err(e) => {
                tracing::debug!(error = %e, "no anchor to verify against this time");
                None
            }
        };
        let log = eventlog.clone();
        let from = verified;
        let checked =
            tokio::task::spawn_blocking(move || log.verify_since(&from, anchor.as_ref())).await;
        match checked {
            Ok((report, head)) if report.ok => verified = head,
            Ok((report, _)) => tracing::error!(
                first_bad_seq = ?report.first_bad_seq,
                reason = report.reason.as_deref().unwrap_or(""),
                "the event log does not verify; run `tgingest audit verify --anchored`"
            ),
            Err(e) => tracing::warn!(error = %e, "event-log verification did not finish"),
        }
    }
}

/// The zero series of the layers the node is built from (every label value known up front), so
/// dashboards and alerts see a real 0 before the first restart, revocation or stale write.
/// Here, not in `observability`, which every layer uses and which therefore uses none of them.
fn register_metric_zeros() {
    use metrics::counter;
    crate::pipeline::stats::register_zeros();
    for kind in ["checkpoint", "session"] {
        counter!(crate::cluster::fenced::METRIC_STALE_OWNER_WRITES, "kind" => kind).increment(0);
    }
    for kind in [
        "account",
        "dedupe",
        "filter",
        "delivery",
        "heartbeat",
        "supervisor",
    ] {
        counter!(crate::supervision::METRIC_RESTARTS, "actor_kind" => kind).increment(0);
    }
    counter!(crate::policy::SCOPE_DROPS_TOTAL, "rule" => "deny_chats").increment(0);
    counter!(crate::policy::REDACTIONS_TOTAL, "kind" => "phone").increment(0);
    crate::cluster::controller::register_zeros();
}
