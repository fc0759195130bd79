//! The admin HTTP server: health, and the account and login API that `tgingest accounts` uses.
//!
//! The node owns the event log exclusively (sled locks its directory), so every operator action
//! goes through this API and is audited by the node, naming the principal that asked. Routes, and
//! the privilege each needs on the account's group ([`endpoints`] lists them):
//!
//! - `GET /healthz` → 200 `ok` (the process is alive; open)
//! - `GET /readyz` → 200 `ready` / 200 `degraded` (Switchboard unreachable) / 503 `not_ready`
//!   (NATS down, streams missing), JSON with every check and its reason ([`ops`]; open)
//! - `GET /metrics` → the Prometheus exposition (catalogue: `docs/metrics.md`; `view` on `*`)
//! - `GET /v1/accounts` (those the caller may `view`), `GET /v1/accounts/{id}` (`view`),
//!   `POST /v1/accounts/import` (`login`), `POST /v1/accounts/{id}/consent|pause|resume`
//!   (`manage`), `DELETE /v1/accounts/{id}` (`remove`), `POST /v1/accounts/{id}/group` (`admin`)
//! - `POST /v1/logins`, `POST /v1/logins/{id}/code|password`, `DELETE /v1/logins/{id}` (`login`)
//! - `POST /v1/replays`, `GET /v1/replays`, `GET /v1/replays/{id}`, `DELETE /v1/replays/{id}`
//!   (`replay`)
//! - `GET /v1/cluster` (`view` on `*`), `GET /v1/principals` (`admin` on `*`)
//!
//! Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>` of a principal
//! ([`principals`]; [`authz`] checks it). There is always at least one: without
//! `[[admin.principals]]` the single-token mode's `admin`, whose token the node generates into the
//! data dir when none is configured. A non-loopback listen address with only a generated token
//! is refused at start.

pub mod accounts;
pub mod authz;
pub mod cluster;
pub mod error;
pub mod logins;
pub mod ops;
pub mod principals;
pub mod replay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::accounts::AccountsControl;
use crate::config::{AdminConfig, Config};
use crate::credentials::{ADMIN_TOKEN_CREDENTIAL, SecretFile};
use crate::pipeline::replay::Replays;
use authz::{Caller, Endpoint, Guard, Limits, Routes};
pub use error::ApiError;
pub use ops::Ops;
use principals::{
    ALL_GROUPS, GENERATED_TOKEN_FILE, Grant, PrincipalError, PrincipalSources, Principals,
    Privilege, TokenKey, TokenOrigin,
};

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
        "admin.listen {addr} is not a loopback address, and neither admin.token_file nor          admin.principals is set: only the token generated into the data dir would guard it. Set          admin.token_file (TGINGEST_ADMIN_TOKEN_FILE) to a file holding a bearer token (or pass          the systemd credential tgingest-admin-token), or configure [[admin.principals]], or          listen on 127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error(transparent)]
    Principals(#[from] PrincipalError),
}

/// Environment variable naming the token file (the generic override of `admin.token_file`).
const TOKEN_FILE_ENV: &str = "TGINGEST_ADMIN_TOKEN_FILE";

/// Where the single-token mode's bearer token comes from, the first one set winning:
/// `TGINGEST_ADMIN_TOKEN_FILE` (already in `cfg.token_file`), the systemd credential
/// `tgingest-admin-token`, then `admin.token_file` from the config file; `None`: none configured.
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

/// The token file the node generates when nothing else is configured: `<data_dir>/admin.token`.
pub fn generated_token_file(config: &Config) -> PathBuf {
    config.node.data_dir.join(GENERATED_TOKEN_FILE)
}

/// The token a client of the admin API sends: the file `flag` names (`--token-file`), else the
/// single-token mode's ([`token_file`]), else the one the node generated into the data dir (so
/// `tgingest accounts list` on the node's machine, as its user, needs nothing more); `None` when
/// there is none of them.
pub fn client_token(
    config: &Config,
    flag: Option<&Path>,
) -> Result<Option<zeroize::Zeroizing<String>>, PrincipalError> {
    let file = match flag {
        Some(path) => Some(SecretFile::Plain {
            label: "--token-file",
            path: path.to_path_buf(),
        }),
        None => token_file(&config.admin).or_else(|| {
            let generated = generated_token_file(config);
            generated.exists().then_some(SecretFile::Plain {
                label: "admin token file",
                path: generated,
            })
        }),
    };
    file.map(|f| principals::read_token(&f)).transpose()
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

async fn not_found() -> ApiError {
    ApiError::new(
        404,
        "not_found",
        "no such route; see the admin API routes in the README",
    )
}

/// One principal as `GET /v1/principals` shows it (never its token or hash).
#[derive(Debug, Serialize)]
pub struct PrincipalView {
    pub name: String,
    pub grants: Vec<Grant>,
}

fn principal_routes() -> Routes<Principals> {
    Routes::new("/v1").route(
        Method::GET,
        "/principals",
        Privilege::Admin,
        list_principals,
    )
}

async fn list_principals(
    State(principals): State<Principals>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<PrincipalView>>, ApiError> {
    caller.require(Privilege::Admin, ALL_GROUPS)?;
    Ok(Json(
        principals
            .list()
            .map(|p| PrincipalView {
                name: p.name.clone(),
                grants: p.grants.clone(),
            })
            .collect(),
    ))
}

/// Every route behind a token, with the privilege it needs (the RBAC matrix test walks this).
pub fn endpoints() -> Vec<Endpoint> {
    let mut all = Vec::new();
    all.extend_from_slice(accounts::routes().endpoints());
    all.extend_from_slice(logins::routes().endpoints());
    all.extend_from_slice(replay::routes().endpoints());
    all.extend_from_slice(cluster::routes().endpoints());
    all.extend_from_slice(principal_routes().endpoints());
    all.extend_from_slice(ops::metrics_routes().endpoints());
    all
}

/// The whole router: `/healthz` and `/readyz` open, `/v1/…` and `/metrics` behind the
/// principals' tokens. Without `ops` there is no `/readyz`, `/metrics` or `/v1/cluster`.
pub fn router(
    control: Arc<AccountsControl>,
    replays: Arc<Replays>,
    guard: Guard,
    ops: Option<Ops>,
) -> Router {
    let mut v1 = Router::new()
        .merge(accounts::routes().with_state(control.clone()))
        .merge(logins::routes().with_state(control.clone()))
        .merge(principal_routes().with_state(guard.principals.clone()))
        .merge(replay::routes().with_state(replay::ReplayApi {
            replays,
            control: control.clone(),
        }));
    if let Some(ops) = &ops {
        v1 = v1
            .merge(cluster::routes().with_state(cluster::ClusterApi {
                node: ops.node_id.clone(),
                control,
                cluster: ops.cluster.clone(),
            }))
            .merge(ops::metrics_routes().with_state(ops.clone()));
    }
    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        guard,
        authz::authenticate,
    ));
    let mut app = Router::new().route("/healthz", get(healthz)).merge(v1);
    if let Some(ops) = ops {
        app = app.merge(ops::readyz_routes(ops));
    }
    app.fallback(not_found)
}

/// The principals of a node with config `cfg` and data dir `data_dir`, their tokens hashed under
/// `key`, and where the single-token mode's token came from.
pub fn load_principals(
    cfg: &AdminConfig,
    data_dir: &Path,
    key: TokenKey,
) -> Result<(Principals, TokenOrigin), PrincipalError> {
    Principals::load(
        PrincipalSources {
            configured: &cfg.principals,
            token_file: token_file(cfg),
            generate_at: &data_dir.join(GENERATED_TOKEN_FILE),
        },
        key,
    )
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `cfg.listen` and serves; `None` when `cfg.listen` is empty (off). Tokens are hashed
    /// under `key`; a token is generated into `data_dir` when none is configured.
    pub async fn start(
        cfg: &AdminConfig,
        data_dir: &Path,
        key: TokenKey,
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
        if cfg.principals.is_empty() && token_file(cfg).is_none() && !addr.ip().is_loopback() {
            return Err(AdminError::TokenRequired { addr });
        }
        let (principals, origin) = load_principals(cfg, data_dir, key)?;
        match &origin {
            TokenOrigin::Generated(path) => tracing::warn!(path = %path.display(),
                "generated the admin API token (principal admin); `tgingest accounts` run as this user finds it there"),
            TokenOrigin::DataDir(path) => {
                tracing::info!(path = %path.display(), "admin API token from the data dir")
            }
            TokenOrigin::File(file) => {
                tracing::info!(file = %file, "admin API token (principal admin)")
            }
            TokenOrigin::Configured => {}
        }
        let names: Vec<&str> = principals.list().map(|p| p.name.as_str()).collect();
        tracing::info!(principals = ?names, "admin API principals");
        let guard = Guard {
            principals,
            limits: Arc::new(Limits::new(
                cfg.login_attempts_per_hour,
                cfg.replays_per_hour,
            )),
        };
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
        let app = router(control, replays, guard, ops);
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
