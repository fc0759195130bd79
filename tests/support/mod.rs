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
