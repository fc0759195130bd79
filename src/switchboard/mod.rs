//! Switchboard, the butlers platform's ingest hub: what tgingest sends it and how.
//!
//! - [`envelope`]: one [`Event`](crate::event::Event) → one `ingest.v1` envelope
//!   (`/work/shared/switchboard-contract.md` is the contract it follows).
//! - [`batch`]: one recorded conversation-history batch → one `conversation_history` envelope.
//! - [`McpClient`]: the MCP `tools/call` subset over streamable HTTP (`…/mcp`) or legacy SSE
//!   (`…/sse`), with automatic re-initialization when the server forgets the session.
//! - [`answer`]: reading what Switchboard answers (pure functions, property-tested).
//! - [`SseParser`]: the server-sent-events reader both transports use.
//! - [`heartbeat`](heartbeat::heartbeat): the `connector.heartbeat.v1` arguments.
//! - [`FakeSwitchboard`]: a strict in-process double (both transports, validation, dedupe, the
//!   content-hash quirk, fault injection, a record of what arrived) for tests, the demo and the
//!   loadtest.

pub mod answer;
pub mod batch;
mod client;
mod envelope;
mod fake;
mod heartbeat;
mod link;
mod sse;

pub use client::{CallError, IngestReply, McpClient, NewClientError, Transport};
pub use envelope::{
    body, endpoint_identity, envelope, idempotency_key, media_placeholder, normalized_text,
};
pub use fake::{
    Accepted, Duplicate, DuplicateReason, FakeOptions, FakeStats, FakeSwitchboard, FakeTls, Faults,
    Rejection,
};
pub use heartbeat::{ConnectorState, HeartbeatCounters, heartbeat};
pub use link::{LinkError, refusal};
pub use sse::{EventTooLarge, MAX_EVENT_BYTES, SseEvent, SseParser};

/// `connector.connector_type` in heartbeats: the butlers name of a Telegram user-account connector.
pub const CONNECTOR_TYPE: &str = "telegram_user_client";

/// The ingest tool's name.
pub const INGEST_TOOL: &str = "ingest";

/// The heartbeat tool's name.
pub const HEARTBEAT_TOOL: &str = "connector.heartbeat";

/// `schema_version` of an ingest envelope.
pub const INGEST_SCHEMA: &str = "ingest.v1";

/// `schema_version` of a heartbeat.
pub const HEARTBEAT_SCHEMA: &str = "connector.heartbeat.v1";

/// The MCP protocol version this client asks for (the server may answer with an older one).
pub const MCP_PROTOCOL_VERSION: &str = "2025-06-18";
