//! The `connector.heartbeat.v1` arguments: liveness and monotonic counters per endpoint.
//!
//! Switchboard rejects unknown keys here too, so the builder emits exactly the contract's keys.
//! Sending is the caller's business (every `heartbeat_interval`, per endpoint, never in the way of
//! ingestion): [`McpClient::heartbeat`](super::McpClient::heartbeat).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{CONNECTOR_TYPE, HEARTBEAT_SCHEMA};
use crate::event::{now_us, rfc3339_micros};

/// The connector's self-reported health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorState {
    Healthy,
    Degraded,
    Error,
}

impl ConnectorState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorState::Healthy => "healthy",
            ConnectorState::Degraded => "degraded",
            ConnectorState::Error => "error",
        }
    }
}

/// Counters since process start (Switchboard computes the deltas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatCounters {
    /// Envelopes Switchboard accepted (duplicates included).
    pub messages_ingested: u64,
    /// Envelopes given up on (dead-lettered).
    pub messages_failed: u64,
    /// Calls made to Telegram.
    pub source_api_calls: u64,
    /// Checkpoints persisted.
    pub checkpoint_saves: u64,
    /// Envelopes Switchboard answered as duplicates.
    pub dedupe_accepted: u64,
}

/// The heartbeat of one endpoint; `error_message` is sent only when given.
pub fn heartbeat(
    endpoint_identity: &str,
    instance_id: Uuid,
    counters: &HeartbeatCounters,
    uptime_s: u64,
    state: ConnectorState,
    error_message: Option<&str>,
) -> Value {
    json!({
        "schema_version": HEARTBEAT_SCHEMA,
        "connector": {
            "connector_type": CONNECTOR_TYPE,
            "endpoint_identity": endpoint_identity,
            "instance_id": instance_id.to_string(),
            "version": crate::VERSION,
        },
        "status": {
            "state": state.as_str(),
            "error_message": error_message,
            "uptime_s": uptime_s,
        },
        "counters": {
            "messages_ingested": counters.messages_ingested,
            "messages_failed": counters.messages_failed,
            "source_api_calls": counters.source_api_calls,
            "checkpoint_saves": counters.checkpoint_saves,
            "dedupe_accepted": counters.dedupe_accepted,
        },
        "sent_at": rfc3339_micros(now_us()),
    })
}
