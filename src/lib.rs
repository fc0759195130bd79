//! tgingest: ingests what a set of Telegram user accounts can see and delivers it, normalized,
//! deduplicated, scope-filtered and redacted, to a downstream ingest hub (first: Switchboard).
//!
//! Where things are:

/// The copy of every node's event log in `TG_AUDIT`: shipping it, anchoring it, verifying it.
pub mod audit_stream;
/// JetStream: connection, streams, KV buckets, idempotent setup.
pub mod bus;
/// The `tgingest` command line.
pub mod cli;
/// The one binary encoding (format byte + bincode 2) of stored and bus payloads.
pub mod codec;
/// Typed configuration from `config/*.toml` plus environment overrides, with precise errors.
pub mod config;
pub mod config_error;
/// Secret files: operator-managed ones and systemd credentials.
pub mod credentials;
/// The normalized `Event` and its deterministic id.
pub mod event;
/// The append-only, blake3-chained audit and checkpoint log over sled.
pub mod eventlog;
/// The master key and the sub-keys derived from it.
pub mod keys;
/// Finding, spawning and stopping `nats-server` processes (embedded mode and tests).
pub mod nats_server;
/// One running node: its parts started in order and stopped in reverse.
pub mod node;
/// Metrics: the Prometheus recorder, the JetStream poller, per-account progress.
pub mod observability;
/// SIGINT/SIGTERM, caught from the start of `tgingest run` on.
pub mod stop;
/// One-for-one restarts with intensity limits, backoff and escalation for ractor actors.
pub mod supervision;
/// Logging and process-wide set-up.
pub mod telemetry;

/// Accounts as operators see them: lifecycle states, registry, login and consent.
pub mod accounts;
/// The admin HTTP server: health, and the account and login API.
pub mod admin;
/// One owner per account across nodes: node leases, fencing, membership, claims, assignment.
pub mod cluster;
/// The pipeline stages, as supervised actors.
pub mod pipeline;
/// Scope filtering (which events may leave) and redaction (what text may leave).
pub mod policy;
/// Switchboard: the ingest.v1 envelope, the MCP client, and a fake for tests and the demo.
pub mod switchboard;
/// The gateway to Telegram (trait) and its implementations.
pub mod telegram;

/// `tgingest demo`: the whole path on the embedded default, checked against the ground truth.
pub mod demo;

/// This build's version, as reported by `--version` and in heartbeats.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
