//! The admin HTTP server: health, and the account and login API that `tgingest accounts` uses.
//!
//! The node owns the event log exclusively (sled locks its directory), so every operator action
//! goes through this API and is audited by the node. Routes:
//!
//! - `GET /healthz` → 200 `ok` (the process is alive)
//! - `GET /readyz` → 200 `ready` / 200 `degraded` (Switchboard unreachable) / 503 `not_ready`
//!   (NATS down, streams missing), JSON with every check and its reason ([`ops`])
//! - `GET /metrics` → the Prometheus exposition (catalogue: `docs/metrics.md`)
//! - `GET /v1/accounts`, `GET /v1/accounts/{id}`, `POST /v1/accounts/import`,
//!   `POST /v1/accounts/{id}/consent|pause|resume`, `DELETE /v1/accounts/{id}`
//! - `POST /v1/logins`, `POST /v1/logins/{id}/code|password`, `DELETE /v1/logins/{id}`
//! - `POST /v1/replays`, `GET /v1/replays`, `GET /v1/replays/{id}`, `DELETE /v1/replays/{id}`
//!
//! With a token (see [`token_file`]: `TGINGEST_ADMIN_TOKEN_FILE`, the systemd credential
//! `tgingest-admin-token`, or `admin.token_file`) every route but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>` (`/metrics` included: Prometheus sends it from a
//! `credentials_file`); a non-loopback listen address without a token is refused at start.

pub mod accounts;
pub mod cluster;
pub mod error;
pub mod logins;
pub mod ops;
pub mod replay;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use crate::accounts::AccountsControl;
use crate::config::AdminConfig;
use crate::credentials::{ADMIN_TOKEN_CREDENTIAL, SecretFile, SecretFileError};
use crate::pipeline::replay::Replays;
pub use error::ApiError;
pub use ops::Ops;

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin.listen {0:?} is not an address such as 127.0.0.1:9464")]
    BadAddress(String),
    #[error(
        "admin.listen {addr} is in use; set TGINGEST_ADMIN_LISTEN (or admin.listen) to a free address, or empty to turn the admin API off"
    )]
    InUse { addr: SocketAddr },
    #[error("cannot listen on admin.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "admin.listen {addr} is not a loopback address, and admin.token_file is not set: anyone \
         who reaches it could add accounts. Set admin.token_file (TGINGEST_ADMIN_TOKEN_FILE) to a \
         file holding a bearer token (or pass the systemd credential tgingest-admin-token), or listen \
         on 127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error(transparent)]
    TokenFile(#[from] SecretFileError),
    #[error("{file} is empty; put a long random token in it (e.g. `openssl rand -hex 32`)")]
    TokenEmpty { file: SecretFile },
}

/// Environment variable naming the token file (the generic override of `admin.token_file`).
const TOKEN_FILE_ENV: &str = "TGINGEST_ADMIN_TOKEN_FILE";

/// Where the bearer token comes from, the first one set winning: `TGINGEST_ADMIN_TOKEN_FILE`
/// (already in `cfg.token_file`), the systemd credential `tgingest-admin-token`, then
/// `admin.token_file` from the config file; `None`: no token.
pub fn token_file(cfg: &AdminConfig) -> Option<SecretFile> {
    let configured = (!cfg.token_file.as_os_str().is_empty()).then(|| SecretFile::Plain {
        label: "admin.token_file",
        path: cfg.token_file.clone(),
    });
    let from_env = std::env::var_os(TOKEN_FILE_ENV).is_some_and(|v| !v.is_empty());
    if from_env {
        return configured;
    }
    SecretFile::credential(ADMIN_TOKEN_CREDENTIAL).or(configured)
}

/// Reads the bearer token from `file` (first line, white space trimmed).
pub fn read_token(file: &SecretFile) -> Result<String, AdminError> {
    let text = file.read()?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(AdminError::TokenEmpty { file: file.clone() });
    }
    Ok(token)
}

/// Parses a request body as JSON without echoing any of it in the error.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(&e, expected))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token.as_deref() {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| {
            // Constant-time compare of equal-length hashes.
            blake3::hash(g.as_bytes()) == blake3::hash(expected.as_bytes())
        });
        if !ok {
            return ApiError::new(
                401,
                "unauthorized",
                "missing or wrong bearer token: send Authorization: Bearer <the token in admin.token_file>",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(
        404,
        "not_found",
        "no such route; see the admin API routes in the README",
    )
}

/// The whole router: `/healthz` and `/readyz` open, `/v1/…` and `/metrics` behind the token
/// (when one is configured). Without `ops` there is no `/readyz` or `/metrics`.
pub fn router(
    control: Arc<AccountsControl>,
    replays: Arc<Replays>,
    token: Option<String>,
    ops: Option<Ops>,
) -> Router {
    let token = Arc::new(token);
    let mut v1 = Router::new()
        .merge(accounts::routes())
        .merge(logins::routes())
        .with_state(control.clone())
        .merge(replay::routes().with_state(replays));
    if let Some(ops) = &ops {
        v1 = v1.merge(cluster::routes().with_state(cluster::ClusterApi {
            node: ops.node_id.clone(),
            control,
            cluster: ops.cluster.clone(),
        }));
    }
    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        token.clone(),
        require_token,
    ));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", v1);
    if let Some(ops) = ops {
        app = app.merge(ops::readyz_routes(ops.clone())).merge(
            ops::metrics_routes(ops)
                .layer(axum::middleware::from_fn_with_state(token, require_token)),
        );
    }
    app.fallback(not_found)
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `cfg.listen` and serves; `None` when `cfg.listen` is empty (off).
    pub async fn start(
        cfg: &AdminConfig,
        control: Arc<AccountsControl>,
        replays: Arc<Replays>,
        ops: Option<Ops>,
    ) -> Result<Option<AdminServer>, AdminError> {
        let listen = cfg.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| AdminError::BadAddress(listen.to_string()))?;
        let token = token_file(cfg).map(|f| read_token(&f)).transpose()?;
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(AdminError::TokenRequired { addr });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    AdminError::InUse { addr }
                } else {
                    AdminError::Bind { addr, source }
                }
            })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let app = router(control, replays, token, ops);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin server stopped on an error");
            }
        });
        tracing::info!(%addr, "admin API listening");
        Ok(Some(AdminServer {
            addr,
            stop: Some(stop),
            task,
        }))
    }

    /// The address it listens on (the real port when `admin.listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits (at most 5 s) for those under way.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
