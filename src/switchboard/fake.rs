//! A fake Switchboard: the MCP surface tgingest talks to, strict where the real one is strict,
//! with faults on command and a record of everything that arrived.
//!
//! What it does, on one loopback port:
//! - both transports: streamable HTTP on `/mcp` (sessions by `mcp-session-id`; replies as an SSE
//!   body like FastMCP's default, or as JSON with [`FakeOptions::json_response`]) and legacy SSE
//!   on `/sse` + `/messages/?session_id=…` (`202`, responses on the stream);
//! - the handshake, `ping`, `tools/list` (`ingest`, `connector.heartbeat`), `tools/call`;
//! - `ingest` with the contract's validation (see `validate.rs`) and reply table: invalid →
//!   `isError: false` + `{"status":"error","error":"Invalid ingest.v1 envelope: …"}`, a missing
//!   top-level argument → `isError: true`; every refusal's text is multi-line, long and
//!   non-ASCII, shaped like the real server's pydantic reports;
//! - dedupe by `control.idempotency_key` (scoped by channel and endpoint) or else
//!   `external_event_id` (scoped by channel, provider, endpoint), then the content-hash quirk
//!   (`normalized_text` + `sender.identity` + hour of `observed_at`, per channel and endpoint),
//!   switchable;
//! - `connector.heartbeat` validation and reply, `GET /health`;
//! - faults, settable while running ([`Faults`]): latency with seeded jitter (concurrent calls
//!   answered out of order), `isError: true` answers (count or seeded probability), cut
//!   connections (count or probability; before or after the call took effect), replies cut
//!   half-way through the body, an `initialize` that never answers, a proxy in front answering
//!   502/503/504/429/413 with nginx's HTML pages, the real server's racy dedupe (look up, a round
//!   trip, insert: two concurrent calls with one key are both stored), and
//!   [`stop`](FakeSwitchboard::stop) / [`restart`](FakeSwitchboard::restart) on the same port —
//!   sessions are lost, stored records are kept, as with a Postgres-backed server;
//! - an oracle: [`overlapping_keys`](FakeSwitchboard::overlapping_keys), the dedupe keys that
//!   ever had two `ingest` calls inside the server at once.
//!
//! What it does NOT cover: Postgres (storage is in memory; "stored" means recorded), triage and
//! routing (`triage_decision` is always `pass_through`, never a real decision), ingestion
//! policies and tiers beyond validating them, the `passive`-tier and sender-detail version
//! differences beyond the [`FakeOptions`] switches, JSON-RPC batches, resumable streams
//! (`Last-Event-ID`), the standalone `GET /mcp` stream, server-initiated requests, and
//! performance (it is one in-process axum server; do not read throughput from it).
//!
//! Optionally, what a deployment puts in front of it: TLS with a given certificate
//! ([`FakeOptions::tls`]), and a required bearer token ([`FakeOptions::auth_token`]; by default
//! the `Authorization` header is ignored, as the real server ignores it) on every route but
//! `/health`, answered `401` with the MCP SDK's `invalid_token` body otherwise.

mod conn;
mod validate;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::conn::{Conn, KillableListener, LiveConns};
use super::{HEARTBEAT_TOOL, INGEST_TOOL};

/// Protocol versions the fake negotiates (newest first).
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

/// Behaviour fixed at start (some switchable later).
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Port on 127.0.0.1; 0 picks a free one (kept across restarts).
    pub port: u16,
    /// Accepted `source.channel` values: `telegram_user_client` (current servers); use
    /// `telegram` to play a server from before mid-March 2026.
    pub channels: Vec<String>,
    /// Accept `sender.display_name`/`chat_type`/`participant_count` (servers from April 2026).
    pub sender_details: bool,
    /// The content-hash duplicate check of real servers (see [`FakeSwitchboard::set_content_hash_dedupe`]).
    pub content_hash_dedupe: bool,
    /// Accept conversation-history batches (`control.payload_type`, `sender.participants`,
    /// `sender.owner_sender_id`: servers from late March 2026 on; older ones refuse the keys).
    pub conversation_batches: bool,
    /// Streamable-HTTP replies as `application/json` instead of an SSE body.
    pub json_response: bool,
    /// Seed of the fault probabilities.
    pub seed: u64,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<FakeTls>,
    /// Require `Authorization: Bearer <token>` on every MCP request (both transports).
    pub auth_token: Option<String>,
}

/// The certificate an HTTPS fake serves (PEM), made by the test.
#[derive(Clone)]
pub struct FakeTls {
    /// The server certificate, then any intermediates.
    pub cert_chain_pem: String,
    /// Its private key (PKCS#8 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for FakeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeTls { .. }")
    }
}

impl FakeTls {
    /// The acceptor serving this certificate.
    fn acceptor(&self) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
        };
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate chain", &e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad("private key", &e))?;
        crate::telemetry::install_crypto_provider();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad("server certificate", &e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            port: 0,
            channels: vec!["telegram_user_client".into()],
            sender_details: true,
            content_hash_dedupe: true,
            conversation_batches: true,
            json_response: false,
            seed: 0,
            tls: None,
            auth_token: None,
        }
    }
}

/// Faults applied to `tools/call` (never to the handshake), settable at any time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added before every tool call is answered.
    pub latency: Duration,
    /// Chance of answering `isError: true` instead of running the tool.
    pub tool_error_probability: f64,
    /// The next this-many tool calls answer `isError: true`.
    pub tool_error_count: u32,
    /// Chance of cutting the connection instead of answering.
    pub drop_probability: f64,
    /// The next this-many tool calls get their connection cut.
    pub drop_count: u32,
    /// Cut after the call took effect (stored, reply lost) instead of before.
    pub drop_after_processing: bool,
    /// Up to this much more latency per call, drawn (seeded) per call: concurrent calls are
    /// answered in another order than they were sent.
    pub latency_jitter: Duration,
    /// The next this-many `initialize` requests are never answered (the server hangs in the
    /// handshake until the client gives up or the server stops).
    pub hang_initialize_count: u32,
    /// The next this-many tool calls on streamable HTTP take effect, then their reply is cut
    /// half-way through the body (`200`, headers and part of the body, then a reset).
    pub truncate_count: u32,
    /// The next `proxy_count` POSTs (any message) are answered by "a proxy in front" with this
    /// status and an HTML page, and never reach the server: 502, 503, 504, 429 (with
    /// `Retry-After`), 413.
    pub proxy_status: u16,
    pub proxy_count: u32,
    /// Dedupe as a real server does it: look the key up, then (after an await) insert, not
    /// under one lock, so two concurrent calls with one key may both be stored.
    pub racy_dedupe: bool,
}

/// An envelope the fake stored.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_id: String,
    pub received_at: jiff::Timestamp,
    pub envelope: Value,
}

/// Which dedupe rule answered `duplicate: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateReason {
    /// Same idempotency key (or external event id without a key).
    Key,
    /// Same text + sender + hour as a stored envelope (the content-hash quirk): not stored.
    ContentHash,
}

/// An envelope answered as a duplicate (and not stored).
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// The stored envelope's `request_id` that was returned.
    pub request_id: String,
    pub reason: DuplicateReason,
    pub received_at: jiff::Timestamp,
    pub envelope: Value,
}

/// A call refused: `status: "error"` (invalid) or, with `is_error`, `isError: true` (missing
/// top-level argument).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub tool: String,
    pub error: String,
    pub is_error: bool,
    pub received_at: jiff::Timestamp,
    pub arguments: Value,
}

/// Counts of everything that happened (records survive restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Envelopes stored.
    pub stored: u64,
    /// Envelopes answered `duplicate: true` (both rules).
    pub duplicates: u64,
    /// Of those, by the content-hash quirk.
    pub content_hash_duplicates: u64,
    /// Calls answered `status: "error"`.
    pub rejected: u64,
    /// Calls answered `isError: true` (injected or missing argument).
    pub tool_errors: u64,
    /// Connections cut by the drop fault.
    pub dropped: u64,
    /// Heartbeats accepted.
    pub heartbeats: u64,
    /// MCP sessions opened (both transports).
    pub sessions_opened: u64,
    /// `tools/call` requests received (counted on arrival, before latency or faults), so a
    /// test can wait until a call is in flight instead of sleeping.
    pub calls_received: u64,
    /// Calls that were waiting out the latency when the server stopped: cut unanswered.
    pub calls_cut_by_stop: u64,
    /// Replies cut half-way by the truncate fault.
    pub truncated: u64,
    /// POSTs answered by the "proxy in front".
    pub proxy_answers: u64,
    /// `initialize` requests left hanging.
    pub hung_initializes: u64,
    /// Requests answered `401` for a missing or wrong bearer token.
    pub unauthorized: u64,
}

/// One `ingest` call inside the server, counted per dedupe key while it is handled (the
/// oracle for "never two calls with one key in flight"); leaves on drop, so a cancelled
/// handler leaves too.
struct InFlight {
    shared: Arc<Shared>,
    key: Option<String>,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, params: &Value) -> InFlight {
        let key = (params["name"] == INGEST_TOOL)
            .then(|| dedupe_key(&params["arguments"]))
            .filter(|k| !k.is_empty());
        if let Some(k) = &key {
            let mut store = lock(&shared.store);
            let n = store.in_flight.entry(k.clone()).or_default();
            *n += 1;
            if *n > 1 {
                store.overlapping_keys.push(k.clone());
            }
        }
        InFlight {
            shared: shared.clone(),
            key,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            let mut store = lock(&self.shared.store);
            if let Some(n) = store.in_flight.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    store.in_flight.remove(k);
                }
            }
        }
    }
}

impl Store {
    /// Counts a stored conversation-history batch: each new member by endpoint, chat and
    /// message id, and each of its `payload.raw.event_ids` as a stored event (twice = a member
    /// in two stored batches, or a batch member also stored on its own).
    fn record_batch(&mut self, envelope: &Value) {
        if envelope["control"]["payload_type"] != super::batch::PAYLOAD_TYPE {
            return;
        }
        self.batches_stored += 1;
        let endpoint = str_at(envelope, "source", "endpoint_identity").to_string();
        let chat = str_at(envelope, "event", "external_thread_id").to_string();
        let history = envelope["payload"]["raw"]["conversation_history"].as_array();
        for entry in history.into_iter().flatten() {
            if entry["is_new"] == true {
                let id = entry["message_id"].as_str().unwrap_or_default();
                *self
                    .batch_members
                    .entry(format!("{endpoint}|{chat}|{id}"))
                    .or_default() += 1;
            }
        }
        let ids = envelope["payload"]["raw"]["event_ids"].as_array();
        for id in ids.into_iter().flatten().filter_map(Value::as_str) {
            if !self.stored_event_ids.insert(id.to_string()) {
                self.stored_twice += 1;
            }
        }
    }

    /// The stored record an envelope is a duplicate of, and by which rule.
    fn earlier(
        &self,
        key: &str,
        hash: &str,
        content_hash: bool,
    ) -> Option<(String, DuplicateReason)> {
        match self.by_key.get(key) {
            Some(rid) => Some((rid.clone(), DuplicateReason::Key)),
            None if content_hash => self
                .by_hash
                .get(hash)
                .map(|rid| (rid.clone(), DuplicateReason::ContentHash)),
            None => None,
        }
    }
}

#[derive(Default)]
struct Store {
    accepted: Vec<Accepted>,
    by_key: HashMap<String, String>,
    by_hash: HashMap<String, String>,
    duplicates: Vec<Duplicate>,
    rejections: Vec<Rejection>,
    heartbeats: Vec<Value>,
    stats: FakeStats,
    stored_event_ids: HashSet<String>,
    stored_twice: usize,
    /// Per batch member (`endpoint|chat|message id`), how many stored batches hold it new.
    batch_members: HashMap<String, u32>,
    /// Conversation-history batches stored.
    batches_stored: u64,
    /// `ingest` calls being handled now, per dedupe key.
    in_flight: HashMap<String, u32>,
    /// Keys that had two `ingest` calls in the server at once (whatever became of them).
    overlapping_keys: Vec<String>,
}

/// State that outlives server runs.
struct Shared {
    opts: Mutex<FakeOptions>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    store: Mutex<Store>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A legacy-SSE session: its downstream and whether `initialize` has been seen.
struct SseSession {
    tx: mpsc::UnboundedSender<Value>,
    initialized: bool,
}

/// State of one server run: lost on stop, like a real server's memory.
struct Run {
    http_sessions: Mutex<HashSet<String>>,
    sse_sessions: Mutex<HashMap<String, SseSession>>,
    stopped: watch::Receiver<bool>,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    run: Arc<Run>,
}

struct Running {
    task: JoinHandle<()>,
    live: LiveConns,
    stop_tx: watch::Sender<bool>,
    run: Arc<Run>,
}

impl Running {
    /// Stops accepting, cuts every connection, ends every SSE stream, forgets the sessions.
    fn halt(&self) {
        let _ = self.stop_tx.send(true);
        self.task.abort();
        conn::cut_all(&self.live);
        lock(&self.run.sse_sessions).clear();
        lock(&self.run.http_sessions).clear();
    }
}

/// The fake server (see the module docs for what it covers and what it does not).
pub struct FakeSwitchboard {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for FakeSwitchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSwitchboard")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeSwitchboard {
    fn drop(&mut self) {
        if let Some(r) = lock(&self.running).take() {
            r.halt();
        }
    }
}

impl FakeSwitchboard {
    /// Starts serving on 127.0.0.1 (`opts.port`, 0 = a free port).
    pub async fn start(opts: FakeOptions) -> std::io::Result<FakeSwitchboard> {
        let shared = Arc::new(Shared {
            rng: Mutex::new(StdRng::seed_from_u64(opts.seed)),
            opts: Mutex::new(opts.clone()),
            faults: Mutex::new(Faults::default()),
            store: Mutex::new(Store::default()),
        });
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port)))?;
        let addr = listener.local_addr()?;
        let fake = FakeSwitchboard {
            shared,
            addr,
            running: Mutex::new(None),
        };
        fake.serve(listener)?;
        Ok(fake)
    }

    /// Starts with default options on a free port.
    pub async fn start_default() -> std::io::Result<FakeSwitchboard> {
        Self::start(FakeOptions::default()).await
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let tls = match &lock(&self.shared.opts).tls {
            Some(tls) => Some(tls.acceptor()?),
            None => None,
        };
        let live = LiveConns::default();
        let (stop_tx, stopped) = watch::channel(false);
        let run = Arc::new(Run {
            http_sessions: Mutex::new(HashSet::new()),
            sse_sessions: Mutex::new(HashMap::new()),
            stopped,
        });
        let state = AppState {
            shared: self.shared.clone(),
            run: run.clone(),
        };
        let app = Router::new()
            .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
            .route("/sse", get(sse_get))
            .route("/messages/", post(messages_post))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_token,
            ))
            .route("/health", get(health))
            .with_state(state);
        let listener = KillableListener {
            inner: listener,
            live: live.clone(),
            tls,
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Conn>()).await;
        });
        *lock(&self.running) = Some(Running {
            task,
            live,
            stop_tx,
            run,
        });
        Ok(())
    }

    /// Stops the server: the port closes, connections and SSE streams are cut, sessions are
    /// forgotten. Records are kept.
    pub async fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(r) = running {
            r.halt();
            let _ = r.task.await;
        }
    }

    /// Stops (if running) and serves again on the same port with no sessions.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let mut attempt = 0;
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(e) if attempt >= 50 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener)?;
        Ok(())
    }

    /// Whether it is serving (between `stop` and `restart` it is not).
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn base_url(&self) -> String {
        let scheme = if lock(&self.shared.opts).tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The streamable-HTTP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url())
    }

    /// The legacy SSE endpoint.
    pub fn sse_url(&self) -> String {
        format!("{}/sse", self.base_url())
    }

    /// Dedupe keys that had two `ingest` calls inside the server at once: each is a moment a
    /// real server's look-up-then-insert could store one envelope twice.
    pub fn overlapping_keys(&self) -> Vec<String> {
        lock(&self.shared.store).overlapping_keys.clone()
    }

    /// Replaces all faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// The faults in force (counts decrease as they are used).
    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).clone()
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Latency added to every tool call.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// The next `n` tool calls answer `isError: true`.
    pub fn fail_next(&self, n: u32) {
        lock(&self.shared.faults).tool_error_count = n;
    }

    /// The next `n` tool calls get their connection cut before they take effect.
    pub fn drop_next(&self, n: u32) {
        let mut f = lock(&self.shared.faults);
        f.drop_count = n;
        f.drop_after_processing = false;
    }

    /// Switches the content-hash duplicate check (on in real servers).
    pub fn set_content_hash_dedupe(&self, on: bool) {
        lock(&self.shared.opts).content_hash_dedupe = on;
    }

    /// Accepts only these `source.channel` values from now on (others are refused as invalid
    /// envelopes): plays a server of another version, e.g. to provoke permanent rejections.
    pub fn set_channels(&self, channels: Vec<String>) {
        lock(&self.shared.opts).channels = channels;
    }

    /// Stored envelopes, in arrival order.
    pub fn accepted(&self) -> Vec<Accepted> {
        lock(&self.shared.store).accepted.clone()
    }

    /// Envelopes answered as duplicates.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        lock(&self.shared.store).duplicates.clone()
    }

    /// Refused calls with their reasons.
    pub fn rejections(&self) -> Vec<Rejection> {
        lock(&self.shared.store).rejections.clone()
    }

    /// Accepted heartbeats.
    pub fn heartbeats(&self) -> Vec<Value> {
        lock(&self.shared.store).heartbeats.clone()
    }

    /// Counts of everything so far.
    pub fn stats(&self) -> FakeStats {
        lock(&self.shared.store).stats
    }

    /// Stored envelopes whose `payload.raw.event_id` had already been stored: tgingest must
    /// keep this at 0 (an event reaching Switchboard's storage twice).
    pub fn stored_twice(&self) -> usize {
        lock(&self.shared.store).stored_twice
    }

    /// Conversation-history batches stored.
    pub fn batches_stored(&self) -> u64 {
        lock(&self.shared.store).batches_stored
    }

    /// Per new member of a stored batch (`endpoint|chat|message id`), how many stored batches
    /// hold it: exactly-once means every count is 1.
    pub fn batch_members(&self) -> HashMap<String, u32> {
        lock(&self.shared.store).batch_members.clone()
    }

    /// Forgets everything stored, as a Switchboard restored from an empty backup: records,
    /// dedupe keys and counts (sessions and faults stay). For replay tests.
    pub fn forget_all(&self) {
        *lock(&self.shared.store) = Store::default();
    }

    /// The `payload.raw.event_id`s of every stored envelope, and the `payload.raw.event_ids` of
    /// every stored batch (what tests and the demo compare with the ground truth).
    pub fn stored_event_ids(&self) -> std::collections::HashSet<String> {
        lock(&self.shared.store).stored_event_ids.clone()
    }

    /// When the newest envelope was stored.
    pub fn last_stored_at(&self) -> Option<jiff::Timestamp> {
        lock(&self.shared.store)
            .accepted
            .last()
            .map(|a| a.received_at)
    }

    /// Sessions open now (both transports).
    pub fn live_sessions(&self) -> usize {
        lock(&self.running).as_ref().map_or(0, |r| {
            lock(&r.run.http_sessions).len() + lock(&r.run.sse_sessions).len()
        })
    }
}

/// A listener that can be re-bound on the same port right after a stop.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

// -- the MCP layer ----------------------------------------------------------------------------

/// With [`FakeOptions::auth_token`], refuses a request without that bearer token the way the
/// MCP SDK's `RequireAuthMiddleware` in front of a real server does.
async fn require_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wanted = lock(&state.shared.opts).auth_token.clone();
    if let Some(token) = wanted {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            lock(&state.shared.store).stats.unauthorized += 1;
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    r#"Bearer error="invalid_token", error_description="Authentication required""#,
                )],
                axum::Json(json!({
                    "error": "invalid_token",
                    "error_description": "Authentication required",
                })),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// What became of one JSON-RPC message.
enum Outcome {
    Reply(Value),
    /// A notification or a client response: nothing to answer.
    NoReply,
    /// Cut the connection without answering.
    Cut,
}

impl Shared {
    /// Whether this tool call's connection is to be cut (and whether after processing).
    fn take_drop(&self) -> Option<bool> {
        let mut f = lock(&self.faults);
        let hit = if f.drop_count > 0 {
            f.drop_count -= 1;
            true
        } else {
            f.drop_probability > 0.0 && lock(&self.rng).random::<f64>() < f.drop_probability
        };
        hit.then_some(f.drop_after_processing)
    }

    /// Takes one from the counter `pick` chooses; whether there was one.
    fn take_count(&self, pick: impl FnOnce(&mut Faults) -> &mut u32) -> bool {
        let mut f = lock(&self.faults);
        let n = pick(&mut f);
        let hit = *n > 0;
        *n = n.saturating_sub(1);
        hit
    }

    /// The status the proxy in front answers this POST with, if it takes it.
    fn take_proxy(&self) -> Option<u16> {
        let mut f = lock(&self.faults);
        if f.proxy_count == 0 || f.proxy_status == 0 {
            return None;
        }
        f.proxy_count -= 1;
        lock(&self.store).stats.proxy_answers += 1;
        Some(f.proxy_status)
    }

    /// This call's latency: the fixed part and a seeded draw of the jitter.
    fn latency(&self) -> Duration {
        let f = lock(&self.faults).clone();
        if f.latency_jitter.is_zero() {
            return f.latency;
        }
        f.latency + f.latency_jitter.mul_f64(lock(&self.rng).random::<f64>())
    }

    fn take_tool_error(&self) -> bool {
        let mut f = lock(&self.faults);
        if f.tool_error_count > 0 {
            f.tool_error_count -= 1;
            return true;
        }
        f.tool_error_probability > 0.0 && lock(&self.rng).random::<f64>() < f.tool_error_probability
    }
}

/// Ends every refusal of a tool call: Switchboard's errors are multi-line and may quote
/// non-ASCII input, so every refusal the fake gives is too, whatever the input was.
const REFUSAL_TRAILER: &str = "\n  ↳ nothing was stored — «fake Switchboard»";

/// The injected `isError: true` answer: a database failure as SQLAlchemy reports it, over
/// several lines.
const INJECTED_TOOL_ERROR: &str = "Error executing tool: injected fault (database unavailable)\n\
    (psycopg.OperationalError) connection failed: server closed the connection unexpectedly\n\
    \tThis probably means the server terminated abnormally\n\
    \tbefore or while processing the request.\n\
    (Background on this error at: https://sqlalche.me/e/20/e3q8)";

fn rpc_reply(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn tool_ok(body: Value) -> Value {
    json!({
        "content": [{ "type": "text", "text": body.to_string() }],
        "structuredContent": body,
        "isError": false,
    })
}

fn tool_error(text: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": true })
}

impl AppState {
    /// Answers one JSON-RPC message (faults apply to `tools/call` only).
    async fn handle(&self, msg: &Value, conn: Option<&Conn>) -> Outcome {
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            return Outcome::NoReply;
        };
        let id = match msg.get("id") {
            Some(id) => id.clone(),
            None => return Outcome::NoReply,
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Outcome::Reply(rpc_error(
                &id,
                -32600,
                "Invalid Request: jsonrpc must be 2.0",
            ));
        }
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match method {
            "initialize" if self.shared.take_count(|f| &mut f.hang_initialize_count) => {
                lock(&self.shared.store).stats.hung_initializes += 1;
                let mut stopped = self.run.stopped.clone();
                let _ = stopped.wait_for(|s| *s).await;
                Outcome::Cut
            }
            "initialize" => {
                let asked = params["protocolVersion"].as_str().unwrap_or("");
                let version = PROTOCOL_VERSIONS
                    .iter()
                    .find(|v| **v == asked)
                    .unwrap_or(&PROTOCOL_VERSIONS[0]);
                Outcome::Reply(rpc_reply(
                    &id,
                    json!({
                        "protocolVersion": version,
                        "capabilities": { "tools": { "listChanged": false } },
                        "serverInfo": { "name": "fake-switchboard", "version": crate::VERSION },
                    }),
                ))
            }
            "ping" => Outcome::Reply(rpc_reply(&id, json!({}))),
            "tools/list" => Outcome::Reply(rpc_reply(&id, json!({ "tools": tools() }))),
            "tools/call" => self.tool_call(&id, &params, conn).await,
            _ => Outcome::Reply(rpc_error(&id, -32601, "Method not found")),
        }
    }

    /// A tool call on streamable HTTP: maybe cut, else answered.
    async fn tool_call(&self, id: &Value, params: &Value, conn: Option<&Conn>) -> Outcome {
        lock(&self.shared.store).stats.calls_received += 1;
        if let Some(conn) = conn
            && let Some(after) = self.shared.take_drop()
        {
            lock(&self.shared.store).stats.dropped += 1;
            if after {
                self.run_tool(params).await;
            }
            conn.cut();
            return Outcome::Cut;
        }
        self.tool_answer(id, params).await
    }

    /// A tool call past the drop decision: latency, injected tool errors, then the tool.
    async fn tool_answer(&self, id: &Value, params: &Value) -> Outcome {
        let _in_flight = InFlight::enter(&self.shared, params);
        let latency = self.shared.latency();
        if !latency.is_zero() {
            let mut stopped = self.run.stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep(latency) => {}
                _ = stopped.wait_for(|s| *s) => {
                    lock(&self.shared.store).stats.calls_cut_by_stop += 1;
                    return Outcome::Cut;
                }
            }
        }
        if self.shared.take_tool_error() {
            lock(&self.shared.store).stats.tool_errors += 1;
            return Outcome::Reply(rpc_reply(
                id,
                tool_error(&format!("{INJECTED_TOOL_ERROR}{REFUSAL_TRAILER}")),
            ));
        }
        match self.run_tool(params).await {
            Some(result) => Outcome::Reply(rpc_reply(id, result)),
            None => Outcome::Reply(rpc_error(
                id,
                -32602,
                &format!("Unknown tool: {}{REFUSAL_TRAILER}", params["name"]),
            )),
        }
    }

    /// Runs a tool; `None` for an unknown tool name.
    async fn run_tool(&self, params: &Value) -> Option<Value> {
        let name = params["name"].as_str().unwrap_or("");
        let empty = Map::new();
        let args = params["arguments"].as_object().unwrap_or(&empty);
        match name {
            INGEST_TOOL => Some(self.ingest(args).await),
            HEARTBEAT_TOOL => Some(self.heartbeat(args)),
            _ => None,
        }
    }

    fn refuse_missing(
        &self,
        tool: &str,
        args: &Map<String, Value>,
        required: &[&str],
    ) -> Option<Value> {
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| !args.contains_key(*k))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let error = format!(
            "{}{REFUSAL_TRAILER}",
            validate::missing_arguments(tool, args, &missing)
        );
        let mut store = lock(&self.shared.store);
        store.stats.tool_errors += 1;
        store.rejections.push(Rejection {
            tool: tool.into(),
            error: error.clone(),
            is_error: true,
            received_at: jiff::Timestamp::now(),
            arguments: Value::Object(args.clone()),
        });
        Some(tool_error(&error))
    }

    fn reject(&self, tool: &str, args: &Map<String, Value>, error: String) -> Value {
        let error = format!("{error}{REFUSAL_TRAILER}");
        let mut store = lock(&self.shared.store);
        store.stats.rejected += 1;
        store.rejections.push(Rejection {
            tool: tool.into(),
            error: error.clone(),
            is_error: false,
            received_at: jiff::Timestamp::now(),
            arguments: Value::Object(args.clone()),
        });
        tool_ok(json!({ "status": "error", "error": error }))
    }

    async fn ingest(&self, args: &Map<String, Value>) -> Value {
        if let Some(err) = self.refuse_missing(INGEST_TOOL, args, validate::INGEST_REQUIRED) {
            return err;
        }
        let opts = lock(&self.shared.opts).clone();
        if let Err(e) = validate::ingest(args, &opts) {
            return self.reject(
                INGEST_TOOL,
                args,
                format!("Invalid ingest.v1 envelope: {e}"),
            );
        }
        let envelope = Value::Object(args.clone());
        let key = dedupe_key(&envelope);
        let hash = content_hash_key(&envelope);
        let now = jiff::Timestamp::now();
        let racy = lock(&self.shared.faults).racy_dedupe;
        let mut earlier = None;
        if racy {
            // The real server's order: a SELECT, a database round trip, then the INSERT.
            earlier = lock(&self.shared.store).earlier(&key, &hash, opts.content_hash_dedupe);
            if earlier.is_none() {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        let mut store = lock(&self.shared.store);
        if !racy {
            earlier = store.earlier(&key, &hash, opts.content_hash_dedupe);
        }
        if let Some((request_id, reason)) = earlier {
            store.stats.duplicates += 1;
            if reason == DuplicateReason::ContentHash {
                store.stats.content_hash_duplicates += 1;
            }
            store.duplicates.push(Duplicate {
                request_id: request_id.clone(),
                reason,
                received_at: now,
                envelope,
            });
            return tool_ok(accepted_body(&request_id, true));
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        store.by_key.insert(key, request_id.clone());
        store
            .by_hash
            .entry(hash)
            .or_insert_with(|| request_id.clone());
        if let Some(event_id) = envelope["payload"]["raw"]["event_id"].as_str()
            && !store.stored_event_ids.insert(event_id.to_string())
        {
            store.stored_twice += 1;
        }
        store.record_batch(&envelope);
        store.stats.stored += 1;
        store.accepted.push(Accepted {
            request_id: request_id.clone(),
            received_at: now,
            envelope,
        });
        tool_ok(accepted_body(&request_id, false))
    }

    fn heartbeat(&self, args: &Map<String, Value>) -> Value {
        if let Some(err) = self.refuse_missing(HEARTBEAT_TOOL, args, validate::HEARTBEAT_REQUIRED) {
            return err;
        }
        if let Err(e) = validate::heartbeat(args) {
            return self.reject(
                HEARTBEAT_TOOL,
                args,
                format!("Invalid connector.heartbeat.v1 envelope: {e}"),
            );
        }
        let mut store = lock(&self.shared.store);
        store.stats.heartbeats += 1;
        store.heartbeats.push(Value::Object(args.clone()));
        tool_ok(json!({
            "status": "accepted",
            "server_time": jiff::Timestamp::now().to_string(),
        }))
    }
}

fn accepted_body(request_id: &str, duplicate: bool) -> Value {
    json!({
        "request_id": request_id,
        "status": "accepted",
        "duplicate": duplicate,
        "triage_decision": if duplicate { Value::Null } else { json!("pass_through") },
        "triage_target": null,
    })
}

fn str_at<'a>(v: &'a Value, a: &str, b: &str) -> &'a str {
    v[a][b].as_str().unwrap_or("").trim()
}

/// Switchboard's primary key: the idempotency key per channel and endpoint, else the external
/// event id per channel, provider and endpoint (placeholder ids fall back to the content hash).
fn dedupe_key(env: &Value) -> String {
    let channel = str_at(env, "source", "channel");
    let endpoint = str_at(env, "source", "endpoint_identity");
    if let Some(key) = env["control"]["idempotency_key"]
        .as_str()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return format!("idem:{channel}:{endpoint}:{key}");
    }
    let event_id = str_at(env, "event", "external_event_id");
    if !matches!(
        event_id.to_lowercase().as_str(),
        "placeholder" | "unknown" | "none" | ""
    ) {
        let provider = str_at(env, "source", "provider");
        return format!("event:{channel}:{provider}:{endpoint}:{event_id}");
    }
    content_hash_key(env)
}

/// The secondary key: text + sender + the hour of `observed_at` (as written, in its own offset).
fn content_hash_key(env: &Value) -> String {
    let channel = str_at(env, "source", "channel");
    let endpoint = str_at(env, "source", "endpoint_identity");
    let sender = str_at(env, "sender", "identity");
    let text = str_at(env, "payload", "normalized_text");
    let hour: String = str_at(env, "event", "observed_at")
        .chars()
        .take(13)
        .filter(char::is_ascii_digit)
        .collect();
    let digest = blake3::hash(format!("{text}:{sender}").as_bytes());
    let digest = &digest.to_hex()[..16];
    format!("hash:{channel}:{endpoint}:{sender}:{hour}:{digest}")
}

fn tools() -> Value {
    let object = |required: &[&str]| json!({ "type": "object", "required": required, "additionalProperties": true });
    json!([
        {
            "name": INGEST_TOOL,
            "description": "Submit one ingest.v1 envelope.",
            "inputSchema": object(validate::INGEST_REQUIRED),
        },
        {
            "name": HEARTBEAT_TOOL,
            "description": "Report connector liveness (connector.heartbeat.v1).",
            "inputSchema": object(validate::HEARTBEAT_REQUIRED),
        },
    ])
}

// -- HTTP handlers ----------------------------------------------------------------------------

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

fn json_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "jsonrpc": "2.0", "id": "server-error",
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /mcp`: streamable HTTP.
async fn mcp_post(
    State(state): State<AppState>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(status) = state.shared.take_proxy() {
        return proxy_page(status);
    }
    let accept = header(&headers, "accept").unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return json_error(
            StatusCode::NOT_ACCEPTABLE,
            -32600,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
        );
    }
    if !header(&headers, "content-type").is_some_and(|ct| ct.starts_with("application/json")) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32600,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, -32700, "Parse error");
    };
    if !msg.is_object() {
        return json_error(StatusCode::BAD_REQUEST, -32600, "Batches are not supported");
    }
    let session_id = if msg["method"] == "initialize" {
        let sid = uuid::Uuid::new_v4().simple().to_string();
        lock(&state.run.http_sessions).insert(sid.clone());
        lock(&state.shared.store).stats.sessions_opened += 1;
        sid
    } else {
        let Some(sid) = header(&headers, "mcp-session-id") else {
            return json_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Bad Request: Missing session ID",
            );
        };
        if !lock(&state.run.http_sessions).contains(sid) {
            return json_error(StatusCode::NOT_FOUND, -32600, "Session not found");
        }
        if let Some(v) = header(&headers, "mcp-protocol-version")
            && !PROTOCOL_VERSIONS.contains(&v)
        {
            return json_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Bad Request: Unsupported protocol version",
            );
        }
        sid.to_string()
    };
    let outcome = state.handle(&msg, Some(&conn)).await;
    let truncate = matches!(outcome, Outcome::Reply(_))
        && msg["method"] == "tools/call"
        && state.shared.take_count(|f| &mut f.truncate_count);
    let mut response = match outcome {
        Outcome::NoReply => StatusCode::ACCEPTED.into_response(),
        Outcome::Cut => {
            conn.cut();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Outcome::Reply(v) if lock(&state.shared.opts).json_response => {
            axum::Json(v).into_response()
        }
        Outcome::Reply(v) => (
            [(header::CONTENT_TYPE, "text/event-stream")],
            format!("event: message\ndata: {v}\n\n"),
        )
            .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        response.headers_mut().insert("mcp-session-id", v);
    }
    if truncate {
        lock(&state.shared.store).stats.truncated += 1;
        return cut_half_way(response).await;
    }
    response
}

/// `response` with only the first half of its body, then a reset (the stream fails, so hyper
/// aborts the connection instead of ending the body cleanly).
async fn cut_half_way(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let chunks = futures::stream::iter([
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reply cut half-way by the fake",
        )),
    ]);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from_stream(chunks))
}

/// What a reverse proxy in front of Switchboard answers when it does not pass a request on:
/// nginx's HTML error pages (429 with `Retry-After`).
fn proxy_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx/1.24.0 (Ubuntu)</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut response = (status, [(header::CONTENT_TYPE, "text/html")], page).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `GET /mcp`: the optional standalone stream is not offered.
async fn mcp_get() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// `DELETE /mcp`: ends a session.
async fn mcp_delete(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match header(&headers, "mcp-session-id") {
        Some(sid) if lock(&state.run.http_sessions).remove(sid) => StatusCode::OK.into_response(),
        Some(_) => json_error(StatusCode::NOT_FOUND, -32600, "Session not found"),
        None => json_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Bad Request: Missing session ID",
        ),
    }
}

/// Removes an SSE session when its stream is dropped (client gone or server stopped).
struct SessionGuard {
    run: Arc<Run>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.run.sse_sessions).remove(&self.id);
    }
}

/// `GET /sse`: opens a legacy session; the first event names the message endpoint.
async fn sse_get(State(state): State<AppState>) -> Response {
    let sid = uuid::Uuid::new_v4().simple().to_string();
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    lock(&state.run.sse_sessions).insert(
        sid.clone(),
        SseSession {
            tx,
            initialized: false,
        },
    );
    lock(&state.shared.store).stats.sessions_opened += 1;
    let endpoint = SseEvent::default()
        .event("endpoint")
        .data(format!("/messages/?session_id={sid}"));
    let guard = SessionGuard {
        run: state.run.clone(),
        id: sid,
    };
    let messages = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let v = rx.recv().await?;
        let ev = SseEvent::default().event("message").data(v.to_string());
        Some((ev, (rx, guard)))
    });
    let stream = futures::stream::once(async move { endpoint })
        .chain(messages)
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `POST /messages/?session_id=…`: one message of a legacy session, answered on its stream.
async fn messages_post(
    State(state): State<AppState>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(status) = state.shared.take_proxy() {
        return proxy_page(status);
    }
    let Some(sid) = query.get("session_id").cloned() else {
        return plain(StatusCode::BAD_REQUEST, "session_id is required");
    };
    let initialized = match lock(&state.run.sse_sessions).get(&sid) {
        Some(s) => s.initialized,
        None => return plain(StatusCode::NOT_FOUND, "Could not find session"),
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "Could not parse message");
    };
    let method = msg["method"].as_str().unwrap_or("").to_string();
    if method == "tools/call" {
        lock(&state.shared.store).stats.calls_received += 1;
        if !initialized {
            push(
                &state,
                &sid,
                rpc_error(
                    &msg["id"],
                    -32600,
                    "Received request before initialization was complete",
                ),
            );
            return plain(StatusCode::ACCEPTED, "Accepted");
        }
        // Cutting happens before the 202; everything else answers later, on the stream.
        if let Some(after) = state.shared.take_drop() {
            lock(&state.shared.store).stats.dropped += 1;
            if after {
                state.run_tool(&msg["params"]).await;
            }
            conn.cut();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let task_state = state.clone();
        tokio::spawn(async move {
            let outcome = task_state.tool_answer(&msg["id"], &msg["params"]).await;
            if let Outcome::Reply(v) = outcome {
                push(&task_state, &sid, v);
            }
        });
        return plain(StatusCode::ACCEPTED, "Accepted");
    }
    if method == "initialize"
        && let Some(s) = lock(&state.run.sse_sessions).get_mut(&sid)
    {
        s.initialized = true;
    }
    if let Outcome::Reply(v) = state.handle(&msg, None).await {
        push(&state, &sid, v);
    }
    plain(StatusCode::ACCEPTED, "Accepted")
}

/// Sends a message down a legacy session's stream (gone sessions swallow it).
fn push(state: &AppState, sid: &str, v: Value) {
    if let Some(s) = lock(&state.run.sse_sessions).get(sid) {
        let _ = s.tx.send(v);
    }
}
