//! Shared helpers for the integration tests: real nats-server processes on free loopback ports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tgingest::nats_server::{NatsServer, ServerOptions, find_binary};

/// A nats-server with its own temporary store; stopped (then the store removed) when dropped.
pub struct TestNats {
    pub server: NatsServer,
    pub dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts a JetStream server on a free port.
    pub fn start() -> TestNats {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = NatsServer::start(ServerOptions::new(
            binary(),
            dir.path().join("store"),
            "test",
        ))
        .expect("start nats-server");
        TestNats { server, dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// The nats-server binary, or a panic saying how to get one.
pub fn binary() -> PathBuf {
    find_binary(None).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Polls `cond` every 10 ms, without blocking the runtime, until it holds or `timeout` passes;
/// returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Polls the async `check` every 50 ms until it yields a value, or panics naming `what` after
/// `timeout`.
pub async fn eventually_some<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets the environment that makes `tgingest run` play the simulation `sim`.
pub fn simulate<'a>(
    cmd: &'a mut std::process::Command,
    sim: &tgingest::telegram::simulated::SimulatorConfig,
) -> &'a mut std::process::Command {
    cmd.env("TGINGEST_SIMULATOR_ACCOUNTS", sim.accounts.to_string())
        .env("TGINGEST_SIMULATOR_RATE", sim.rate.to_string())
        .env(
            "TGINGEST_SIMULATOR_MESSAGES_PER_ACCOUNT",
            sim.messages_per_account.to_string(),
        )
        .env("TGINGEST_SIMULATOR_SEED", sim.seed.to_string())
}

/// `tgingest run` on `data_dir`, its log going to `log` (created anew).
pub fn spawn_run(data_dir: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    tgingest_cmd(data_dir)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn tgingest run")
}

/// The path of the built `tgingest` binary.
pub fn tgingest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tgingest"))
}

/// Child processes of `pid` as (pid, command name), from /proc.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((child, comm));
        }
    }
    out
}

/// A `tgingest` command with a clean environment (PATH kept) and the given data dir.
pub fn tgingest_cmd(data_dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(tgingest_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TGINGEST_NODE_DATA_DIR", data_dir)
        .env("TGINGEST_NODE_ID", "test-node")
        .env("TGINGEST_ADMIN_LISTEN", "");
    if let Some(bin) = std::env::var_os("TGINGEST_NATS_SERVER") {
        cmd.env("TGINGEST_NATS_SERVER", bin);
    }
    cmd
}

/// An HTTP client that sends `token` as the bearer token of every request (a client of a node's
/// admin API).
pub fn admin_http(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// The token a node with data dir `data_dir` generated for its admin API (single-token mode),
/// waiting (up to 30 s) for the node to write it.
pub fn generated_admin_token(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("admin.token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return text.trim().to_string(),
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => panic!("no admin token at {}: {other:?}", path.display()),
        }
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started.
    unsafe { libc::kill(pid as i32, sig) };
}

pub mod batches;
pub mod canary;
pub mod certs;
pub mod counters;
pub mod dc_traffic;
pub mod events;
pub mod nodes;
pub mod proxy;
pub mod rig;

/// Whether `pid` has a handler installed for signal `sig` (`SigCgt` in /proc/<pid>/status).
pub fn catches_signal(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// Pids of the nats-server processes whose command line mentions `dir` (wherever they are in
/// the process tree: an orphan is reparented).
pub fn nats_servers_under(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("nats-server") && cmdline.contains(&needle) && process_alive(*pid)
        })
        .collect()
}

/// Waits up to `timeout` for `child` to exit; kills it (and fails) if it does not.
pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
pub mod cluster;

/// The seed of a crash test's kill moments: `$TGINGEST_CRASH_SEED`, or a fresh one, printed so
/// a failure can be repeated.
pub fn crash_seed() -> u64 {
    let seed = std::env::var("TGINGEST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash seed {seed} (TGINGEST_CRASH_SEED={seed} repeats this run)");
    seed
}

/// What a test of `tgingest run` processes needs around them: a nats-server, the fake
/// Switchboard (in the test process), and a temp dir holding a fresh master key.
pub async fn node_stage() -> (
    TestNats,
    tgingest::switchboard::FakeSwitchboard,
    tempfile::TempDir,
) {
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let fake = tgingest::switchboard::FakeSwitchboard::start(Default::default())
        .await
        .expect("fake switchboard");
    let dir = tempfile::tempdir().expect("temp dir");
    tgingest::keys::MasterKey::generate_file(&dir.path().join("master.key")).expect("master key");
    (nats, fake, dir)
}

/// A second node's temp dir beside `dir` (a [`node_stage`] dir), holding the same master key.
pub fn second_node_dir(dir: &std::path::Path) -> tempfile::TempDir {
    let other = tempfile::tempdir().expect("temp dir");
    std::fs::copy(dir.join("master.key"), other.path().join("master.key")).expect("master key");
    other
}

/// Starts `tgingest run` as node `node_id` on the simulation `sim`, with its data and master key
/// in `dir`, against `nats` and `fake`, plus the `extra` variables; its JSON log goes to `log`
/// (debug for the account actors and the batcher, whose lines tests wait for).
pub fn spawn_sim_node(
    nats: &TestNats,
    fake: &tgingest::switchboard::FakeSwitchboard,
    dir: &std::path::Path,
    log: &std::path::Path,
    sim: &tgingest::telegram::simulated::SimulatorConfig,
    node_id: &str,
    extra: &[(&str, String)],
) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = std::process::Command::new(tgingest_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TGINGEST_NODE_ID", node_id)
        .env("TGINGEST_NODE_DATA_DIR", dir.join("data"))
        .env("TGINGEST_MASTER_KEY_FILE", dir.join("master.key"))
        .env("TGINGEST_NATS_URL", nats.url())
        .env("SWITCHBOARD_MCP_URL", fake.mcp_url())
        .env("TGINGEST_SWITCHBOARD_HEARTBEAT_INTERVAL", "0s")
        .env("TGINGEST_ADMIN_LISTEN", "")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
    simulate(&mut cmd, sim)
        .env(
            "TGINGEST_LOGGING_LEVEL",
            "info,async_nats=warn,tgingest::pipeline::account=debug,tgingest::pipeline::batcher=debug",
        )
        .env("TGINGEST_LOGGING_FORMAT", "json")
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tgingest run")
}

/// Waits until the log (truncated at each start), past its byte `from`, has a line containing
/// every one of `needles`; false after `within`. Polled every millisecond.
pub async fn wait_log(
    log: &std::path::Path,
    needles: &[&str],
    from: usize,
    within: Duration,
) -> bool {
    let up = Instant::now() + within;
    while Instant::now() < up {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .get(from..)
            .is_some_and(|t| t.lines().any(|l| needles.iter().all(|n| l.contains(n))))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// The text of a node's log file, for a failure message (empty if unreadable).
pub fn log_text(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits (up to 60 s) until every one of `kept` is stored in `fake`, then stops `node` with
/// SIGTERM and checks it stopped cleanly (its `log` in the failure message).
pub async fn all_stored_then_stop(
    node: &mut std::process::Child,
    fake: &tgingest::switchboard::FakeSwitchboard,
    kept: &[tgingest::event::Event],
    log: &std::path::Path,
) {
    let arrived = batches::all_stored(fake, kept, Duration::from_secs(60)).await;
    signal(node.id(), libc::SIGTERM);
    let status = wait_exit(node, Duration::from_secs(30));
    assert!(arrived && status.success(), "{status}\n{}", log_text(log));
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves none
/// behind (after a clean exit the kill finds nothing to do).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every message `stream` holds, read with an ordered consumer; none when there is no such
/// stream.
pub async fn stream_messages(nats_url: &str, stream: &str) -> Vec<async_nats::jetstream::Message> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("connect"));
    let mut out = Vec::new();
    let Ok(stream) = js.get_stream(stream).await else {
        return out;
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    if consumer.cached_info().num_pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.expect("messages");
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let pending = message.info().expect("info").pending;
        out.push(message);
        if pending == 0 {
            break;
        }
    }
    out
}
