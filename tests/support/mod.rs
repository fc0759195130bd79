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

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started.
    unsafe { libc::kill(pid as i32, sig) };
}

pub mod canary;
pub mod proxy;
pub mod rig;
