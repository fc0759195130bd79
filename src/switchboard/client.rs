//! The MCP client: the `initialize` → `notifications/initialized` → `tools/call` subset of
//! JSON-RPC over both transports Switchboard serves, written directly on reqwest.
//!
//! Why not `rmcp`: its 3.x line has no legacy SSE client, and deployed Switchboards are
//! addressed as `…/sse`; the subset needed here is three messages; and owning the exchange gives
//! the properties the delivery actor relies on — one bound (`request_timeout`) over the whole
//! call, one automatic re-initialize-and-resend when the server has forgotten the session (a
//! restart), errors classified as transient or permanent, and no retries of its own.
//!
//! - **Streamable HTTP** (any URL not ending in `/sse`): every message is a `POST` to the URL;
//!   the reply is `application/json` or an SSE body; the `mcp-session-id` header of the
//!   `initialize` reply is echoed as `Mcp-Session-Id` with `MCP-Protocol-Version`. A `404`, or a
//!   `400` that mentions the session, to a request that carried a session id means the session
//!   is gone.
//! - **Legacy SSE** (`…/sse`): `GET` opens the downstream; its `endpoint` event names the URL
//!   each message is POSTed to (`202`); responses come back on the stream, matched by JSON-RPC
//!   id. A closed stream, or a `404` from the message URL, means the session is gone.
//!
//! Resending after a lost session is safe: the server never saw the call (or, if the stream broke
//! after it did, the envelope's idempotency key turns the resend into `duplicate: true`).
//! Message text is never logged; error strings the server returns may quote the envelope, so
//! callers should not log them verbatim either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use super::answer::{
    header_str, json_reply, parse_heartbeat, parse_ingest, response_to, rpc_result, status_error,
    tool_body,
};
use super::link::{self, LinkError};
use super::sse::SseParser;
use super::{HEARTBEAT_TOOL, INGEST_TOOL, MCP_PROTOCOL_VERSION};
use crate::config::SwitchboardConfig;

/// Which MCP transport a client speaks, chosen from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST` per message (`…/mcp`).
    StreamableHttp,
    /// `GET …/sse` downstream plus `POST …/messages/?session_id=…` upstream.
    LegacySse,
}

impl Transport {
    /// The transport a URL asks for: a path ending in `/sse` is legacy SSE.
    pub fn for_url(url: &Url) -> Transport {
        if url.path().trim_end_matches('/').ends_with("/sse") {
            Transport::LegacySse
        } else {
            Transport::StreamableHttp
        }
    }
}

/// What Switchboard answered to one `ingest` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestReply {
    /// Stored now (`duplicate: false`) or earlier (`duplicate: true`): either way, delivered.
    Accepted { request_id: String, duplicate: bool },
    /// `status: "error"`: the envelope is invalid. Permanent: dead-letter, do not retry.
    Rejected { error: String },
}

/// Why a call produced no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Connection refused or broken, HTTP error status, stream ended early: retry later.
    #[error("switchboard transport error: {0}")]
    Transport(String),
    /// The tool answered `isError: true` (missing argument, database failure): retry later.
    #[error("switchboard tool error: {0}")]
    ToolError(String),
    /// A reply this client cannot read (not JSON-RPC, a JSON-RPC error, an unknown status):
    /// resending the same request will not make it readable.
    #[error("switchboard protocol error: {0}")]
    Protocol(String),
    /// No answer within `switchboard.request_timeout`: retry later (the key makes it safe).
    #[error("switchboard call timed out")]
    Timeout,
    /// `413`: the request is larger than Switchboard, or a proxy in front of it, takes. The same
    /// envelope will never fit: the caller dead-letters it instead of retrying.
    #[error("switchboard refused the request as too large (HTTP 413): {0}")]
    TooLarge(String),
    /// `401`/`403`: Switchboard (or a proxy in front of it) refused the bearer token. Kept for
    /// retry, as the events must not be lost, but only the operator can fix it.
    #[error(
        "switchboard refused the bearer token ({0}); check switchboard.auth_token_file (or \
         auth_token) against the token Switchboard expects, then restart the node"
    )]
    Unauthorized(String),
    /// The TLS handshake failed on Switchboard's certificate: a configuration error (the URL,
    /// `switchboard.ca_file`, or the server's certificate), retried as events must not be lost.
    #[error(
        "switchboard's TLS certificate did not verify: {0}; check that switchboard.ca_file holds \
         the CA that signed it and that switchboard.url names a host it is issued for"
    )]
    Tls(String),
    /// `429`: slow down; `retry_after` is the server's (or proxy's) `Retry-After`, if given.
    #[error("switchboard asked to slow down (HTTP 429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
}

impl CallError {
    /// Whether resending the same envelope later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, CallError::Protocol(_) | CallError::TooLarge(_))
    }

    /// The `kind` label of `connector_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Transport(_) => "transport",
            CallError::ToolError(_) => "tool_error",
            CallError::Protocol(_) => "protocol",
            CallError::Timeout => "timeout",
            CallError::TooLarge(_) => "too_large",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Unauthorized(_) => "unauthorized",
            CallError::Tls(_) => "tls",
        }
    }

    /// Whether only the operator can fix it (token, certificate): worth a warning, not a debug line.
    pub fn is_configuration(&self) -> bool {
        matches!(self, CallError::Unauthorized(_) | CallError::Tls(_))
    }
}

/// Why a client could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum NewClientError {
    #[error("switchboard.url {url:?} is not an http(s) URL: {reason}")]
    Url { url: String, reason: String },
    #[error("building the HTTP client failed: {0}")]
    Http(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(
        "switchboard.ca_file is set but switchboard.url {url:?} is not https://: the CA would \
         check nothing"
    )]
    CaWithoutTls { url: String },
}

/// An MCP client bound to one Switchboard; cheap to clone, shared by concurrent callers (the
/// caller bounds how many calls are in flight).
#[derive(Clone)]
pub struct McpClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("url", &self.inner.url.as_str())
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    url: Url,
    transport: Transport,
    /// `Bearer …`, marked sensitive (never shown by `Debug`).
    auth: Option<HeaderValue>,
    timeout: Duration,
    next_id: AtomicU64,
    /// The current session; replaced under this lock so concurrent callers share one handshake.
    session: Mutex<Option<Arc<Session>>>,
}

enum Session {
    Http(HttpSession),
    Sse(SseSession),
}

impl Session {
    fn usable(&self) -> bool {
        match self {
            Session::Http(_) => true,
            Session::Sse(s) => !s.pending.is_closed(),
        }
    }
}

struct HttpSession {
    /// `None` when the server runs stateless (no `mcp-session-id` header).
    id: Option<String>,
    protocol_version: String,
}

struct SseSession {
    post_url: Url,
    pending: Arc<Pending>,
    _reader: AbortOnDrop,
}

/// The stream reader lives exactly as long as its session (or a handshake that failed).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls awaiting their response on the SSE stream; `None` once the stream has ended.
struct Pending {
    calls: StdMutex<Option<HashMap<u64, oneshot::Sender<Value>>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<Value>>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, id: u64) -> Option<oneshot::Receiver<Value>> {
        let (tx, rx) = oneshot::channel();
        self.lock().as_mut()?.insert(id, tx);
        Some(rx)
    }

    fn forget(&self, id: u64) {
        if let Some(calls) = self.lock().as_mut() {
            calls.remove(&id);
        }
    }

    fn resolve(&self, id: u64, response: Value) {
        let tx = self.lock().as_mut().and_then(|calls| calls.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(response);
        }
    }

    /// The stream ended: every waiting call learns the session is gone.
    fn close(&self) {
        self.lock().take();
    }

    fn is_closed(&self) -> bool {
        self.lock().is_none()
    }
}

/// Unregisters a pending call when its future is dropped (timeout, cancellation).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.forget(self.id);
    }
}

/// Internal outcome: either a final error or "the server forgot this session".
enum Fail {
    Call(CallError),
    SessionGone(String),
}

impl From<CallError> for Fail {
    fn from(e: CallError) -> Self {
        Fail::Call(e)
    }
}

impl Fail {
    fn into_call_error(self) -> CallError {
        match self {
            Fail::Call(e) => e,
            Fail::SessionGone(why) => CallError::Transport(format!("session lost again: {why}")),
        }
    }
}

fn transport_error(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        CallError::Timeout
    } else if let Some(problem) = link::certificate_problem(&e) {
        CallError::Tls(problem)
    } else {
        CallError::Transport(e.without_url().to_string())
    }
}

/// `tools/call` parameters, borrowed: the envelope is serialized once, straight into the body.
#[derive(Serialize)]
struct ToolCall<'a> {
    name: &'a str,
    arguments: &'a Value,
}

/// One JSON-RPC request (with an id) or notification (without).
#[derive(Serialize)]
struct RpcMessage<'a, P> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a P>,
}

/// The request body for one message.
fn rpc_message<P: Serialize>(
    id: Option<u64>,
    method: &str,
    params: Option<&P>,
) -> Result<Bytes, CallError> {
    let message = RpcMessage {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|e| CallError::Protocol(format!("cannot encode {method}: {e}")))
}

impl McpClient {
    /// A client for `cfg.url`; nothing is sent until the first call.
    pub fn new(cfg: &SwitchboardConfig) -> Result<McpClient, NewClientError> {
        crate::telemetry::install_crypto_provider();
        let bad = |reason: String| NewClientError::Url {
            url: cfg.url.clone(),
            reason,
        };
        let url = Url::parse(&cfg.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        let timeout: Duration = cfg.request_timeout.0;
        let mut http =
            reqwest::Client::builder().connect_timeout(timeout.min(Duration::from_secs(10)));
        if !cfg.ca_file.as_os_str().is_empty() {
            if url.scheme() != "https" {
                return Err(NewClientError::CaWithoutTls {
                    url: cfg.url.clone(),
                });
            }
            // Only the operator's CA: a private Switchboard's certificate is checked against
            // the CA that issued it, not against every CA the system trusts.
            http = http.tls_certs_only(link::trust_roots(&cfg.ca_file)?);
        }
        let http = http
            .build()
            .map_err(|e| NewClientError::Http(e.to_string()))?;
        let auth = link::bearer_header(cfg)?;
        Ok(McpClient {
            inner: Arc::new(Inner {
                http,
                transport: Transport::for_url(&url),
                url,
                auth,
                timeout,
                next_id: AtomicU64::new(1),
                session: Mutex::new(None),
            }),
        })
    }

    /// The transport chosen from the URL.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// Submits one `ingest.v1` envelope. Emits `connector_ingest_submissions_total{status}`
    /// (`accepted`, `duplicate`, `rejected`, `error`), `connector_ingest_latency_seconds` and,
    /// on failure, `connector_errors_total{kind}` ([`CallError::kind`]; `session_lost` counts
    /// automatic re-initializations).
    pub async fn ingest(&self, envelope: &Value) -> Result<IngestReply, CallError> {
        let started = Instant::now();
        let reply = self
            .call_tool(INGEST_TOOL, envelope)
            .await
            .and_then(|body| parse_ingest(&body));
        metrics::histogram!("connector_ingest_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        let status = match &reply {
            Ok(IngestReply::Accepted {
                duplicate: false, ..
            }) => "accepted",
            Ok(IngestReply::Accepted {
                duplicate: true, ..
            }) => "duplicate",
            Ok(IngestReply::Rejected { .. }) => "rejected",
            Err(_) => "error",
        };
        metrics::counter!("connector_ingest_submissions_total", "status" => status).increment(1);
        if let Err(e) = &reply {
            metrics::counter!("connector_errors_total", "kind" => e.kind()).increment(1);
        }
        reply
    }

    /// Sends one `connector.heartbeat.v1`; a rejection (`status: "error"`) is a `Protocol` error.
    pub async fn heartbeat(&self, heartbeat: &Value) -> Result<(), CallError> {
        let result = self.call_tool(HEARTBEAT_TOOL, heartbeat).await;
        let result = result.and_then(|body| parse_heartbeat(&body));
        if let Err(e) = &result {
            metrics::counter!("connector_errors_total", "kind" => e.kind()).increment(1);
        }
        result
    }

    /// Calls a tool and returns its JSON body (from `structuredContent`, else `content[0].text`).
    pub async fn call_tool(&self, name: &str, arguments: &Value) -> Result<Value, CallError> {
        let params = ToolCall { name, arguments };
        let call = async {
            let result = self.request_resuming("tools/call", &params).await?;
            tool_body(result)
        };
        let result = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        match &result {
            Ok(_) => link::note_outcome(self.inner.url.as_str(), None),
            Err(e) if e.is_configuration() => {
                link::note_outcome(self.inner.url.as_str(), Some(e.to_string()))
            }
            Err(_) => {}
        }
        result
    }

    /// One request; if the session turns out to be gone, one new handshake and one resend.
    async fn request_resuming(
        &self,
        method: &str,
        params: &impl Serialize,
    ) -> Result<Value, CallError> {
        let session = self.session().await?;
        match self.request(&session, method, params).await {
            Ok(v) => Ok(v),
            Err(Fail::Call(e)) => Err(e),
            Err(Fail::SessionGone(why)) => {
                tracing::info!(reason = %why, "switchboard session lost; re-initializing");
                metrics::counter!("connector_errors_total", "kind" => "session_lost").increment(1);
                self.invalidate(&session).await;
                let session = self.session().await?;
                self.request(&session, method, params)
                    .await
                    .map_err(Fail::into_call_error)
            }
        }
    }

    /// The current session, or a new one after a handshake.
    async fn session(&self) -> Result<Arc<Session>, CallError> {
        let mut current = self.inner.session.lock().await;
        if let Some(s) = current.as_ref().filter(|s| s.usable()) {
            return Ok(s.clone());
        }
        *current = None;
        let session = Arc::new(match self.inner.transport {
            Transport::StreamableHttp => Session::Http(self.http_handshake().await?),
            Transport::LegacySse => Session::Sse(self.sse_handshake().await?),
        });
        *current = Some(session.clone());
        Ok(session)
    }

    /// Forgets `session` unless another caller already replaced it.
    async fn invalidate(&self, session: &Arc<Session>) {
        let mut current = self.inner.session.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
        }
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn initialize_params() -> Value {
        json!({
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "tgingest", "version": crate::VERSION },
        })
    }

    /// Sends a request over an established session and returns its `result`.
    async fn request(
        &self,
        session: &Session,
        method: &str,
        params: &impl Serialize,
    ) -> Result<Value, Fail> {
        let id = self.next_id();
        let message = rpc_message(Some(id), method, Some(params))?;
        let response = match session {
            Session::Http(s) => self.http_post(Some(s), Some(id), message).await?.1,
            Session::Sse(s) => self.sse_post(s, Some(id), message).await?,
        };
        let response = response.ok_or_else(|| {
            CallError::Protocol(format!("no response to {method} (HTTP 202 without a body)"))
        })?;
        Ok(rpc_result(response, id)?)
    }

    // -- streamable HTTP ------------------------------------------------------------------------

    async fn http_handshake(&self) -> Result<HttpSession, CallError> {
        let id = self.next_id();
        let init = rpc_message(Some(id), "initialize", Some(&Self::initialize_params()))?;
        let (session_id, response) = self
            .http_post(None, Some(id), init)
            .await
            .map_err(Fail::into_call_error)?;
        let response = response
            .ok_or_else(|| CallError::Protocol("initialize got no response body".into()))?;
        let result = rpc_result(response, id)?;
        let session = HttpSession {
            id: session_id,
            protocol_version: negotiated_version(&result),
        };
        let initialized = rpc_message(None, "notifications/initialized", None::<&()>)?;
        self.http_post(Some(&session), None, initialized)
            .await
            .map_err(Fail::into_call_error)?;
        tracing::debug!(
            transport = "streamable_http",
            "switchboard session initialized"
        );
        Ok(session)
    }

    /// POSTs one message; returns the session id header (if any) and the response to `id`.
    async fn http_post(
        &self,
        session: Option<&HttpSession>,
        id: Option<u64>,
        message: Bytes,
    ) -> Result<(Option<String>, Option<Value>), Fail> {
        let mut req = self
            .inner
            .http
            .post(self.inner.url.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(message);
        let mut sent_session = false;
        if let Some(s) = session {
            if let Some(sid) = &s.id {
                req = req.header("Mcp-Session-Id", sid);
                sent_session = true;
            }
            req = req.header("MCP-Protocol-Version", &s.protocol_version);
        }
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let session_id = header_str(resp.headers(), "mcp-session-id");
        if !status.is_success() {
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            let gone = status == StatusCode::NOT_FOUND
                || (status == StatusCode::BAD_REQUEST && text.to_lowercase().contains("session"));
            if sent_session && gone {
                return Err(Fail::SessionGone(format!("HTTP {status}")));
            }
            return Err(status_error(status, &headers, &text).into());
        }
        let Some(id) = id else {
            return Ok((session_id, None));
        };
        if status == StatusCode::ACCEPTED {
            return Ok((session_id, None));
        }
        let is_sse = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            let bytes = resp.bytes().await.map_err(transport_error)?;
            return Ok((session_id, Some(json_reply(&bytes)?)));
        }
        let mut parser = SseParser::default();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport_error)?;
            let events = parser
                .push(&chunk)
                .map_err(|e| CallError::Transport(e.to_string()))?;
            for ev in events {
                if let Some(v) = response_to(&ev.event, &ev.data, id) {
                    return Ok((session_id, Some(v)));
                }
            }
        }
        Err(CallError::Transport("reply stream ended before the response".into()).into())
    }

    // -- legacy SSE -----------------------------------------------------------------------------

    async fn sse_handshake(&self) -> Result<SseSession, CallError> {
        let mut req = self
            .inner
            .http
            .get(self.inner.url.clone())
            .header(ACCEPT, "text/event-stream");
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            return Err(status_error(status, &headers, &text));
        }
        let pending = Arc::new(Pending {
            calls: StdMutex::new(Some(HashMap::new())),
        });
        let (endpoint_tx, endpoint_rx) = oneshot::channel();
        let reader = AbortOnDrop(tokio::spawn(read_sse_stream(
            resp,
            pending.clone(),
            endpoint_tx,
        )));
        let endpoint = endpoint_rx.await.map_err(|_| {
            CallError::Transport("SSE stream ended before its endpoint event".into())
        })?;
        let post_url = self.inner.url.join(endpoint.trim()).map_err(|e| {
            CallError::Protocol(format!("endpoint event {endpoint:?} is not a URL: {e}"))
        })?;
        let session = SseSession {
            post_url,
            pending,
            _reader: reader,
        };

        let id = self.next_id();
        let init = rpc_message(Some(id), "initialize", Some(&Self::initialize_params()))?;
        let response = self
            .sse_post(&session, Some(id), init)
            .await
            .map_err(Fail::into_call_error)?
            .ok_or_else(|| CallError::Protocol("initialize got no response".into()))?;
        rpc_result(response, id)?;
        let initialized = rpc_message(None, "notifications/initialized", None::<&()>)?;
        self.sse_post(&session, None, initialized)
            .await
            .map_err(Fail::into_call_error)?;
        tracing::debug!(transport = "legacy_sse", "switchboard session initialized");
        Ok(session)
    }

    /// POSTs one message to the session's endpoint and, for a request, awaits its response on
    /// the stream (registered before sending: the response may overtake the `202`).
    async fn sse_post(
        &self,
        session: &SseSession,
        id: Option<u64>,
        message: Bytes,
    ) -> Result<Option<Value>, Fail> {
        let waiting = match id {
            Some(id) => {
                let rx = session
                    .pending
                    .register(id)
                    .ok_or_else(|| Fail::SessionGone("SSE stream closed".into()))?;
                Some((
                    rx,
                    PendingGuard {
                        pending: &session.pending,
                        id,
                    },
                ))
            }
            None => None,
        };
        let mut req = self
            .inner
            .http
            .post(session.post_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(message);
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Fail::SessionGone("message endpoint answered 404".into()));
        }
        if !status.is_success() {
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            return Err(status_error(status, &headers, &text).into());
        }
        let Some((rx, _guard)) = waiting else {
            return Ok(None);
        };
        match rx.await {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(Fail::SessionGone(
                "SSE stream closed while awaiting the response".into(),
            )),
        }
    }
}

/// Reads the legacy SSE downstream until it ends: the endpoint event first, then responses.
async fn read_sse_stream(
    resp: reqwest::Response,
    pending: Arc<Pending>,
    endpoint_tx: oneshot::Sender<String>,
) {
    let mut endpoint_tx = Some(endpoint_tx);
    let mut parser = SseParser::default();
    let mut body = resp.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        let events = match parser.push(&chunk) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "dropping the switchboard SSE stream");
                break;
            }
        };
        for ev in events {
            if ev.event == "endpoint" {
                if let Some(tx) = endpoint_tx.take() {
                    let _ = tx.send(ev.data);
                }
                continue;
            }
            if ev.event != "message" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let is_response = v.get("result").is_some() || v.get("error").is_some();
            if let (true, Some(id)) = (is_response, v.get("id").and_then(Value::as_u64)) {
                pending.resolve(id, v);
            }
        }
    }
    tracing::debug!("switchboard SSE stream ended");
    pending.close();
}

/// The protocol version the server chose (the header value for later requests).
fn negotiated_version(init_result: &Value) -> String {
    init_result["protocolVersion"]
        .as_str()
        .unwrap_or(MCP_PROTOCOL_VERSION)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_url_path() {
        let t = |u: &str| Transport::for_url(&Url::parse(u).unwrap());
        assert_eq!(t("http://h:41100/sse"), Transport::LegacySse);
        assert_eq!(t("http://h:41100/sse/"), Transport::LegacySse);
        assert_eq!(t("http://h:41100/mcp"), Transport::StreamableHttp);
        assert_eq!(t("http://h:41100/"), Transport::StreamableHttp);
    }

    #[test]
    fn only_protocol_errors_are_permanent() {
        assert!(CallError::Transport("x".into()).is_transient());
        assert!(CallError::ToolError("x".into()).is_transient());
        assert!(CallError::Timeout.is_transient());
        assert!(!CallError::Protocol("x".into()).is_transient());
    }
}
