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
use crate::keys::KeyPurpose;
use crate::node::{self, Node};

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
    /// Account commands (list, add, import, consent, pause, resume, remove), through the running
    /// node's admin API
    Accounts(crate::accounts::client::AccountsArgs),
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
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Read texts (one per line) or JSONL events on stdin; print each decision and redacted text
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
        // The demo's own progress line and summary are the output; logs only for trouble.
        cfg.logging.level = "warn".into();
    }
    match &cli.command {
        Command::Config(ConfigCommand::Check) => return config_check(&loaded),
        Command::Policy(PolicyCommand::Test(args)) => return policy_test(&cfg, args),
        _ => {}
    }
    crate::telemetry::init_logging(cfg.logging.format, &cfg.logging.level);
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
            Command::Accounts(args) => crate::accounts::client::run(&cfg, args).await,
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
        Err(_) if c.embedded_nats() => println!(
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
    let node = match Node::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = node.start_pipeline().await {
        eprintln!("error: {e}");
        let _ = node.shutdown().await;
        return ExitCode::FAILURE;
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
    let chain_key = key.derive(KeyPurpose::EventLogChain);
    let dir = cfg.eventlog_dir();
    let report = if args.anchored {
        let anchor = match fetch_anchor(&cfg).await {
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
    match report {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            if report.ok {
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

/// Reads this node's anchored chain head, starting the embedded server on its store if needed.
async fn fetch_anchor(cfg: &Config) -> Result<Option<Anchor>, String> {
    let node_id = cfg.node_id();
    let mut server = None;
    let url = if cfg.embedded_nats() {
        let binary = crate::nats_server::find_binary(Some(&cfg.nats.embedded.binary))
            .map_err(|e| e.to_string())?;
        let options =
            crate::nats_server::ServerOptions::new(binary, cfg.nats_store_dir(), &node_id);
        let s = tokio::task::spawn_blocking(move || crate::nats_server::NatsServer::start(options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let url = s.url();
        server = Some(s);
        url
    } else {
        cfg.nats.url.clone()
    };
    let result = async {
        let bus = crate::bus::Bus::connect(&url, &cfg.nats, "tgingest-audit")
            .await
            .map_err(|e| e.to_string())?;
        let Some(record) = node::latest_anchor(&bus, &node_id).await? else {
            return Ok(None);
        };
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&record.hash, &mut hash)
            .map_err(|_| "anchor hash is not 64 hex characters".to_string())?;
        Ok(Some(Anchor {
            seq: record.seq,
            hash,
        }))
    }
    .await;
    if let Some(s) = server {
        let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    }
    result
}
