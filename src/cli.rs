//! The `tgingest` command line: parsing, and the exit codes scripts rely on.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (a failed verification, a node
//! that stopped on an error); 2 the command could not run as asked (bad config, bad flags, no key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, CONFIG_ENV, Config, LogFormat};
use crate::eventlog::{self, Anchor};
use crate::keys::MasterKey;
use crate::nats_server::encryption::StoreEncryption;
use crate::node::{self, Node};

/// `tgingest cluster`, a client of the admin API.
pub mod cluster;
/// `tgingest replay`, a client of the admin API.
pub mod replay;

#[derive(Parser, Debug)]
#[command(
    name = "tgingest",
    version,
    about = "Ingest what Telegram user accounts can see, deliver it deduplicated and redacted to Switchboard",
    long_about = "tgingest runs one node of an ingest cluster: account actors publish normalized Telegram \
events to NATS JetStream; dedupe, scope-filter/redaction and delivery stages carry them to Switchboard; \
a chained event log records what was done.\n\nWith no NATS URL configured, tgingest starts its own \
nats-server (the embedded default), so `tgingest demo` works on a fresh machine.",
    after_help = "Exit codes: 0 success, 1 a problem was found (failed verification, node error), 2 bad \
config or usage.\nConfiguration: --config FILE, or $TGINGEST_CONFIG, else built-in defaults; every key can be \
overridden by TGINGEST_<SECTION>_<KEY> (see `tgingest config check`)."
)]
struct Cli {
    /// Config file (TOML); default: $TGINGEST_CONFIG, else built-in defaults
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format (overrides logging.format)
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter such as info or tgingest=debug (overrides logging.level; RUST_LOG wins)
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run this node until SIGINT/SIGTERM
    Run,
    /// Run the whole path on the embedded default with simulated accounts, then print a summary
    Demo(DemoArgs),
    /// Configuration commands
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Event-log commands
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Policy commands
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Master-key commands (run them with the node stopped)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Account commands (list, add, import, consent, pause, resume, remove), through the running
    /// node's admin API
    Accounts(crate::accounts::client::AccountsArgs),
    /// Re-deliver what TG_CLEAN holds to Switchboard (after Switchboard lost data), through the
    /// running node's admin API; Switchboard answers what it still has as duplicates
    Replay(replay::ReplayArgs),
    /// Cluster commands (status), through the running node's admin API
    Cluster(cluster::ClusterArgs),
    /// Admin API commands (token hashes for [[admin.principals]])
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Read a principal's token on stdin and print the token_hash to put in its
    /// [[admin.principals]] entry (keyed with this node's master key: run it again after
    /// `keys rotate`)
    HashToken,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the config and print the effective values (secrets masked); exit 2 when invalid
    Check,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify the hash chain of the event log; prints {"ok":…,"verified":N,…}, exit 1 when broken
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Data dir holding the event log (default: node.data_dir)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Also compare with the chain head anchored in JetStream, to catch a truncated or rewritten log
    #[arg(long)]
    anchored: bool,
    /// Verify node ID's chain from its copy in the TG_AUDIT stream (NATS at nats.url), with no
    /// data dir: links, order, no gaps, the chain key sealed in TG_ANCHORS, and the node's anchor
    #[arg(long, value_name = "ID", conflicts_with_all = ["data_dir", "anchored"])]
    node: Option<String>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Simulated accounts
    #[arg(long, default_value_t = 3)]
    accounts: u32,
    /// Messages per second per account
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How long to produce, such as 10s or 2m
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Deliver to this Switchboard instead of the built-in fake
    #[arg(long, value_name = "URL")]
    switchboard_url: Option<String>,
    /// Keep state here instead of in a temporary directory
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed of the simulation (same seed, same messages)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long to wait for the last deliveries after the sources end
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Where messages come from: `simulated` accounts, or real grammers clients on an
    /// in-process fake Telegram DC (`fake-dc`)
    #[arg(long, value_enum, default_value_t = DemoSourceArg::Simulated)]
    source: DemoSourceArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DemoSourceArg {
    Simulated,
    FakeDc,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Read samples on stdin (text lines, {"text": …, "id": …} objects, or JSON events); print
    /// each decision and redacted text
    Test(PolicyTestArgs),
}

#[derive(Args, Debug)]
struct PolicyTestArgs {
    /// One JSON object per line instead of text
    #[arg(long)]
    json: bool,
    /// Account whose policy applies (and that plain-text lines are attributed to)
    #[arg(long, default_value = "1")]
    account: String,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match load_config(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = loaded.config.clone();
    if let Some(format) = cli.log_format {
        cfg.logging.format = format;
    }
    if let Some(level) = &cli.log_level {
        cfg.logging.level = level.clone();
    } else if matches!(cli.command, Command::Demo(_)) {
        // The demo's own progress line and summary are the output; logs only for trouble. The
        // fake DC's notes on clients hanging up (the node's shutdown) are not trouble.
        cfg.logging.level = "warn,tgingest::telegram::fakedc=error".into();
    }
    match &cli.command {
        Command::Config(ConfigCommand::Check) => return config_check(&loaded),
        Command::Policy(PolicyCommand::Test(args)) => return policy_test(&cfg, args),
        _ => {}
    }
    crate::telemetry::set_log_bodies(cfg.logging.bodies);
    crate::telemetry::init_logging(cfg.logging.format, &cfg.logging.level);
    if cfg.logging.bodies {
        tracing::warn!("logging.bodies is on: debug log lines carry message texts (redacted)");
    }
    crate::telemetry::install_crypto_provider();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run => run(cfg).await,
            Command::Demo(args) => demo(cfg, args).await,
            Command::Audit(AuditCommand::Verify(args)) => audit_verify(cfg, args).await,
            Command::Keys(KeysCommand::Rotate(args)) => keys_rotate(cfg, args).await,
            Command::Accounts(args) => crate::accounts::client::run(&cfg, args).await,
            Command::Replay(args) => replay::run(&cfg, args).await,
            Command::Cluster(args) => cluster::run(&cfg, args).await,
            Command::Admin(AdminCommand::HashToken) => hash_token(&cfg),
            Command::Config(_) | Command::Policy(_) => ExitCode::SUCCESS,
        }
    })
}

fn load_config(flag: Option<&Path>) -> Result<config::Loaded, config::ConfigError> {
    let from_env = std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let file = flag.map(Path::to_path_buf).or(from_env);
    config::load(file.as_deref(), std::env::vars())
}

fn config_check(loaded: &config::Loaded) -> ExitCode {
    let source = loaded.file.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    println!("# config OK: {source}");
    for (var, key) in &loaded.env_overrides {
        println!("# {key} set by environment variable {var}");
    }
    let c = &loaded.config;
    if c.embedded_nats() {
        println!(
            "# NATS: embedded nats-server, store {}",
            c.nats_store_dir().display()
        );
    }
    match node::master_key(c, false) {
        Ok((_, origin)) => println!("# master key: {origin:?}"),
        Err(crate::keys::KeyError::Missing) if c.embedded_nats() => println!(
            "# master key: none yet; the embedded default will generate {}",
            c.node
                .data_dir
                .join(crate::keys::GENERATED_KEY_FILE)
                .display()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    print!("{}", c.to_masked_toml());
    ExitCode::SUCCESS
}

async fn run(cfg: Config) -> ExitCode {
    // First: from here on SIGINT/SIGTERM stop the node cleanly instead of killing it, start-up
    // included.
    let stop = match crate::stop::StopSignals::install() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = node::NodeOptions {
        stop: Some(stop.clone()),
        ..node::NodeOptions::default()
    };
    let node = match Node::start_with(cfg, options).await {
        Ok(n) => n,
        Err(node::NodeError::Stopped(signal)) => {
            tracing::info!(signal, "stopped during start-up");
            return ExitCode::SUCCESS;
        }
        // Refused credentials, a certificate that does not verify, a subject the NATS user may
        // not use: retrying cannot fix these, configuration can.
        Err(node::NodeError::Bus(e)) if e.is_config_problem() => {
            tracing::error!(error = %e, "cannot start: NATS refused the link");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if stop.received().is_none()
        && let Err(e) = node.start_pipeline().await
    {
        eprintln!("error: {e}");
        let _ = node.shutdown().await;
        // A mode switch that needs the operator (another node still in batch mode, a damaged
        // or missing TG_BATCH) cannot run as asked; anything else may pass on a retry.
        return match e {
            node::NodeError::Pipeline(crate::pipeline::PipelineError::ModeSwitch(e))
                if e.needs_the_operator() =>
            {
                ExitCode::from(2)
            }
            _ => ExitCode::FAILURE,
        };
    }
    tracing::info!(node = %node.node_id, nats = %node.nats_url(), "tgingest node running");
    match node.run_until_signal().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(mut cfg: Config, args: DemoArgs) -> ExitCode {
    let _keep_alive;
    cfg.node.data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => match tempfile::Builder::new().prefix("tgingest-demo-").tempdir() {
            Ok(dir) => {
                let path = dir.path().to_path_buf();
                _keep_alive = dir;
                path
            }
            Err(e) => {
                eprintln!("error: cannot create a temporary data dir: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let plan = crate::demo::DemoPlan {
        accounts: args.accounts,
        rate: args.rate,
        duration: args.duration,
        seed: args.seed,
        switchboard_url: args.switchboard_url.clone(),
        drain_timeout: args.drain_timeout,
        progress: !args.json,
        source: match args.source {
            DemoSourceArg::Simulated => crate::demo::DemoSource::Simulated,
            DemoSourceArg::FakeDc => crate::demo::DemoSource::FakeDc,
        },
    };
    match crate::demo::run(cfg, &plan).await {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            } else {
                print!("{}", crate::demo::render(&summary));
            }
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policy_test(cfg: &Config, args: &PolicyTestArgs) -> ExitCode {
    let policy = match crate::policy::Policy::new(&cfg.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    match crate::policy::run_policy_test(
        &policy,
        stdin.lock(),
        stdout.lock(),
        args.json,
        &args.account,
    ) {
        Ok(summary) => {
            eprintln!(
                "{} lines: {} kept, {} dropped, {} unreadable",
                summary.lines, summary.kept, summary.dropped, summary.errors
            );
            if summary.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn audit_verify(mut cfg: Config, args: VerifyArgs) -> ExitCode {
    if let Some(node_id) = args.node {
        return audit_verify_node(cfg, &node_id).await;
    }
    if let Some(dir) = args.data_dir {
        cfg.node.data_dir = dir;
    }
    let key = match node::master_key(&cfg, false) {
        Ok((key, _)) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = cfg.eventlog_dir();
    // The chain key is sealed under the master key beside the log (older logs: derived from it).
    let chain_key = match eventlog::ChainKey::open(&dir, &key) {
        Ok(chain_key) => chain_key.bytes(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = if args.anchored {
        let anchor = match fetch_anchor(&cfg, &key).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                eprintln!("error: no anchor for node {} in JetStream", cfg.node_id());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: cannot read the anchor: {e}");
                return ExitCode::from(2);
            }
        };
        eventlog::verify_dir_against(&dir, chain_key, &anchor)
    } else {
        eventlog::verify_dir(&dir, chain_key)
    };
    print_verdict(report, |r| r.ok)
}

/// Prints a verification's report as one JSON line and exits 0 when `ok` says it passed, 1 when
/// it did not; an error (nothing could be verified) goes to stderr with exit 2.
fn print_verdict<R: serde::Serialize, E: std::fmt::Display>(
    report: Result<R, E>,
    ok: fn(&R) -> bool,
) -> ExitCode {
    match report {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            if ok(&report) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `audit verify --node ID`: the node's chain as `TG_AUDIT` holds it, against its anchor; no
/// data dir. Prints the report as JSON; exit 1 when the chain does not verify, 2 when it could
/// not be checked (no master key, no NATS, no anchor or chain key for the node).
async fn audit_verify_node(cfg: Config, node_id: &str) -> ExitCode {
    let key = match node::master_key(&cfg, false) {
        Ok((key, _)) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let verified = with_bus(
        &cfg,
        StoreEncryption::new(&key),
        "tgingest-audit",
        |e| e,
        async |bus| {
            crate::audit_stream::verify_node(bus, node_id, &key)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    print_verdict(verified, |r| r.report.ok)
}

/// Reads this node's anchored chain head, starting the embedded server on its store if needed.
async fn fetch_anchor(cfg: &Config, key: &MasterKey) -> Result<Option<Anchor>, String> {
    let node_id = cfg.node_id();
    with_bus(
        cfg,
        StoreEncryption::new(key),
        "tgingest-audit",
        |e| e,
        async |bus| {
            let Some(record) = node::latest_anchor(bus, &node_id).await? else {
                return Ok(None);
            };
            record.anchor().map(Some)
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// `tgingest keys rotate`

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Re-seal every Telegram session and the event-log chain key under a new master key
    #[command(
        long_about = "Re-seals every session in the TG_SESSIONS bucket and the event-log chain key \
(eventlog/chain.key) from the current master key to the one in --new-key-file, and records \
`keys.rotated` in the event log. The current key comes from where every command takes it: \
TGINGEST_MASTER_KEY, TGINGEST_MASTER_KEY_FILE, the systemd credential tgingest-master-key or \
security.master_key_file (or the embedded default's \
master.key in the data dir). With the embedded default it also re-encrypts the JetStream store \
under the new key (the old one serves as nats-server's previous key while it does).\n\nStop the node first: this command needs the event log to itself and \
refuses while a node holds it. Every other node that shares the TG_SESSIONS bucket (and so the \
master key) must be stopped too, and all of them restarted with the new key. It is safe to run \
again after an interruption: whatever is already sealed under the new key is left as it is. \
Afterwards, start the node with the new key; the old one no longer opens the sessions or the \
chain key.\n\nNote: the hashes that stand for ids in log lines \
(LogIdHash) are derived from the master key, so they change with it: log lines written before and \
after the rotation no longer share hashed ids."
    )]
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
struct RotateArgs {
    /// File holding the new master key: 64 hex characters, readable by its owner only (chmod 600)
    #[arg(long, value_name = "PATH")]
    new_key_file: PathBuf,
}

/// Why `keys rotate` stopped; says what to do about it.
#[derive(Debug, thiserror::Error)]
enum KeysRotateError {
    #[error("current master key: {0}")]
    CurrentKey(crate::keys::KeyError),
    #[error("new master key: {0}")]
    NewKey(crate::keys::KeyError),
    #[error(
        "the new master key in {} is the key already in use, so there is nothing to rotate; \
         to rotate, generate a new one (`openssl rand -hex 32 > new.key && chmod 600 new.key`); \
         to finish an interrupted rotation, run it again with the old key as the current key",
        path.display()
    )]
    SameKey { path: PathBuf },
    #[error(
        "the event log at {} is in use: stop the node first (keys rotate needs the node stopped)",
        dir.display()
    )]
    NodeRunning { dir: PathBuf },
    #[error(transparent)]
    EventLog(eventlog::EventLogError),
    #[error("cannot reach NATS to re-seal the sessions: {0}")]
    Nats(String),
    #[error(transparent)]
    Sessions(#[from] crate::telegram::session::StoreError),
}

impl KeysRotateError {
    fn exit_code(&self) -> ExitCode {
        match self {
            KeysRotateError::CurrentKey(_)
            | KeysRotateError::NewKey(_)
            | KeysRotateError::SameKey { .. }
            | KeysRotateError::NodeRunning { .. } => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

impl From<eventlog::EventLogError> for KeysRotateError {
    fn from(e: eventlog::EventLogError) -> Self {
        match e {
            eventlog::EventLogError::InUse { dir } => KeysRotateError::NodeRunning { dir },
            e => KeysRotateError::EventLog(e),
        }
    }
}

/// What a rotation did.
#[derive(Debug)]
struct RotationSummary {
    sessions: crate::telegram::session::RotateReport,
    chain_key: eventlog::SealedUnder,
    /// Every node's chain key in `TG_ANCHORS` (the copies `audit verify --node` opens).
    chain_keys: crate::audit_stream::ResealReport,
    audit_seq: u64,
    new_key_file: PathBuf,
    old_origin: crate::keys::KeyOrigin,
    /// The embedded server's store was re-encrypted (no external NATS).
    store_reencrypted: bool,
}

impl RotationSummary {
    fn render(&self) -> String {
        let chain_key = match self.chain_key {
            eventlog::SealedUnder::Old => "re-sealed under the new key",
            eventlog::SealedUnder::New => "already under the new key",
            eventlog::SealedUnder::NoFile => "written, sealed under the new key",
        };
        let next = match &self.old_origin {
            crate::keys::KeyOrigin::File(path) | crate::keys::KeyOrigin::Generated(path) => {
                format!(
                    "replace {} with {} (keep it mode 0600), or point TGINGEST_MASTER_KEY_FILE at it",
                    path.display(),
                    self.new_key_file.display()
                )
            }
            crate::keys::KeyOrigin::Credential(path) => format!(
                "replace the file that LoadCredential={}:… loads (now at {}) with {}, then restart the unit",
                crate::credentials::MASTER_KEY_CREDENTIAL,
                path.display(),
                self.new_key_file.display()
            ),
            crate::keys::KeyOrigin::Env => format!(
                "set {} to the new key (from {})",
                crate::keys::MASTER_KEY_ENV,
                self.new_key_file.display()
            ),
        };
        format!(
            "master key rotated\n\
             \x20 sessions re-sealed:              {}\n\
             \x20 sessions already under new key:  {}\n\
             \x20 event-log chain key:             {chain_key}\n\
             \x20 chain keys in TG_ANCHORS:        {} re-sealed, {} already new, {} opened with neither key\n\
             \x20 embedded JetStream store:        {}\n\
             \x20 audit record:                    keys.rotated (seq {})\n\
             next: before starting the node, {next}.\n\
             the old key no longer opens the sessions, the chain key or the embedded store; \
             hashed ids in log lines \
             change with the key.\n",
            self.sessions.resealed.len(),
            self.sessions.already_new.len(),
            self.chain_keys.resealed.len(),
            self.chain_keys.already_new.len(),
            self.chain_keys.unopenable.len(),
            if self.store_reencrypted {
                "re-encrypted under the new key"
            } else {
                "none (external NATS)"
            },
            self.audit_seq,
        )
    }
}

/// `tgingest admin hash-token`: the token on stdin (its first line) → its `token_hash`.
fn hash_token(cfg: &Config) -> ExitCode {
    let key = match node::master_key(cfg, false) {
        Ok((key, _)) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut line = zeroize::Zeroizing::new(String::new());
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("error: cannot read the token from standard input: {e}");
        return ExitCode::from(2);
    }
    let token = line.trim();
    if token.is_empty() {
        eprintln!(
            "error: no token on standard input; pipe one in (e.g. from `openssl rand -hex 32`)"
        );
        return ExitCode::from(2);
    }
    let key =
        crate::admin::principals::TokenKey::new(key.derive(crate::keys::KeyPurpose::AdminToken));
    println!("{}", key.token_hash(token));
    ExitCode::SUCCESS
}

async fn keys_rotate(cfg: Config, args: RotateArgs) -> ExitCode {
    match rotate_master_key(&cfg, &args.new_key_file).await {
        Ok(summary) => {
            print!("{}", summary.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Re-seals the chain key and every session from the current master key to the one in
/// `new_key_file`, holding the event log (so no node runs meanwhile), then records `keys.rotated`.
/// Each step skips what an interrupted earlier run already moved to the new key.
async fn rotate_master_key(
    cfg: &Config,
    new_key_file: &Path,
) -> Result<RotationSummary, KeysRotateError> {
    let (old, old_origin) = node::master_key(cfg, false).map_err(KeysRotateError::CurrentKey)?;
    let new = crate::keys::MasterKey::read_file(new_key_file).map_err(KeysRotateError::NewKey)?;
    if old.same_as(&new) {
        return Err(KeysRotateError::SameKey {
            path: new_key_file.to_path_buf(),
        });
    }
    let dir = cfg.eventlog_dir();
    let (chain_key, chain_under) = eventlog::ChainKey::open_for_rotation(&dir, &old, &new)?;
    // Holding the log open is holding sled's lock: a running node shows here, and none can start
    // until the rotation is done.
    let log = eventlog::EventLog::open(&dir, chain_key.bytes())?;

    // The embedded store is re-encrypted under the new key as the server starts (the old one is
    // its previous key), so the node's next start needs the new key only.
    let encryption = StoreEncryption::rotating(&old, &new);
    let (sessions, chain_keys) = with_bus(
        cfg,
        encryption,
        "tgingest-keys",
        KeysRotateError::Nats,
        async |bus| {
            bus.setup(cfg)
                .await
                .map_err(|e| KeysRotateError::Nats(e.to_string()))?;
            let store = crate::telegram::session::SessionStore::open(bus, old.clone()).await?;
            let sessions = store.rotate(&old, &new).await?;
            // Every node's copy in TG_ANCHORS, so dead nodes' stream copies stay verifiable.
            let chain_keys = crate::audit_stream::reseal_chain_keys(bus, &old, &new)
                .await
                .map_err(|e| KeysRotateError::Nats(e.to_string()))?;
            Ok((sessions, chain_keys))
        },
    )
    .await?;

    if chain_under != eventlog::SealedUnder::New {
        chain_key.seal_to(&dir, &new)?;
    }
    let under = match chain_under {
        eventlog::SealedUnder::Old => "resealed",
        eventlog::SealedUnder::New => "already_new",
        eventlog::SealedUnder::NoFile => "written",
    };
    // Counts only: nothing here identifies a key.
    let details = std::collections::BTreeMap::from([
        (
            "sessions_resealed".to_string(),
            sessions.resealed.len().to_string(),
        ),
        (
            "sessions_already_new".to_string(),
            sessions.already_new.len().to_string(),
        ),
        ("chain_key".to_string(), under.to_string()),
        (
            "stream_chain_keys_resealed".to_string(),
            chain_keys.resealed.len().to_string(),
        ),
    ]);
    let entry = eventlog::AuditEntry {
        action: "keys.rotated".into(),
        actor: "operator".into(),
        account_id: None,
        details,
    };
    let audit_seq = log.audit(&entry, eventlog::Durability::Flushed).await?;
    Ok(RotationSummary {
        sessions,
        chain_key: chain_under,
        chain_keys,
        audit_seq,
        new_key_file: new_key_file.to_path_buf(),
        old_origin,
        store_reencrypted: cfg.embedded_nats(),
    })
}

/// Runs `work` on a bus connection: the configured NATS, or the embedded server started on the
/// node's store (encrypted with `encryption`) for the duration (the node itself is stopped).
/// `nats_error` turns a failure to reach NATS into the caller's error.
async fn with_bus<T, E>(
    cfg: &Config,
    encryption: StoreEncryption,
    client_name: &str,
    nats_error: fn(String) -> E,
    work: impl AsyncFnOnce(&crate::bus::Bus) -> Result<T, E>,
) -> Result<T, E> {
    let nats = |e: &dyn std::fmt::Display| nats_error(e.to_string());
    let mut server = None;
    let url = if cfg.embedded_nats() {
        let options = node::embedded_server_options(cfg, encryption).map_err(|e| nats(&e))?;
        let s = tokio::task::spawn_blocking(move || crate::nats_server::NatsServer::start(options))
            .await
            .map_err(|e| nats(&e))?
            .map_err(|e| nats(&e))?;
        let url = s.url();
        server = Some(s);
        url
    } else {
        cfg.nats.url.clone()
    };
    let result = async {
        let bus = crate::bus::Bus::connect(&url, &cfg.nats, client_name)
            .await
            .map_err(|e| nats(&e))?;
        work(&bus).await
    }
    .await;
    if let Some(s) = server {
        let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    }
    result
}
