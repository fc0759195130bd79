//! `/metrics` (the Prometheus exposition) and `/readyz` (can this node do its work?).
//!
//! `/readyz` answers 200 with `status: "ready"` when NATS is connected and the streams exist;
//! 200 with `status: "degraded"` when, on top of that, Switchboard cannot be reached (events
//! queue durably in TG_CLEAN meanwhile, so the node still does useful work); and 503 with
//! `status: "not_ready"` when NATS is down or a stream is missing. Each check carries a reason.

use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use super::authz::{Caller, Routes};
use super::principals::{ALL_GROUPS, Privilege};
use crate::bus::{Bus, STREAM_CLEAN, STREAM_DLQ, STREAM_RAW};

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/metrics` and `/readyz` read.
#[derive(Clone)]
pub struct Ops {
    /// The recorder's handle; `/metrics` renders it.
    pub metrics: PrometheusHandle,
    /// The node's NATS connection.
    pub bus: Bus,
    /// Switchboard's URL (the readiness probe opens a TCP connection to its host and port).
    pub switchboard_url: String,
    /// This node's id (`GET /v1/cluster` names it).
    pub node_id: String,
    /// The lease records and this node's controller, when `cluster.enabled` is on.
    pub cluster: Option<(
        crate::cluster::record::Records,
        crate::cluster::controller::Snapshots,
    )>,
}

/// One check of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub reason: String,
}

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// `ready`, `degraded` or `not_ready`.
    pub status: &'static str,
    pub checks: Vec<Check>,
}

/// The `/metrics` route alone (mounted behind the principals' tokens): `view` on `*`, since its
/// series cover every account.
pub(super) fn metrics_routes() -> Routes<Ops> {
    Routes::new("").route(Method::GET, "/metrics", Privilege::View, metrics)
}

/// The `/readyz` route alone (always open: orchestrators probe it without credentials).
pub fn readyz_routes(ops: Ops) -> Router {
    Router::new().route("/readyz", get(readyz)).with_state(ops)
}

async fn metrics(State(ops): State<Ops>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = caller.require(Privilege::View, ALL_GROUPS) {
        return e.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let readiness = check(&ops).await;
    let code = if readiness.status == "not_ready" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(readiness)).into_response()
}

/// Runs every readiness check.
pub async fn check(ops: &Ops) -> Readiness {
    use async_nats::connection::State as Conn;
    let mut checks = Vec::new();
    let state = ops.bus.client.connection_state();
    let nats_ok = state == Conn::Connected;
    checks.push(Check {
        name: "nats",
        ok: nats_ok,
        reason: if nats_ok {
            format!("connected to {}", ops.bus.url())
        } else {
            format!(
                "NATS at {} is {state:?}; the client keeps reconnecting",
                ops.bus.url()
            )
        },
    });
    let mut streams_ok = nats_ok;
    let mut missing = Vec::new();
    if nats_ok {
        for name in [STREAM_RAW, STREAM_CLEAN, STREAM_DLQ] {
            match tokio::time::timeout(CHECK_TIMEOUT, ops.bus.js.get_stream(name)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => missing.push(format!("{name}: {e}")),
                Err(_) => missing.push(format!("{name}: no answer in {CHECK_TIMEOUT:?}")),
            }
        }
        streams_ok = missing.is_empty();
    }
    checks.push(Check {
        name: "streams",
        ok: streams_ok,
        reason: if !nats_ok {
            "not checked: NATS is not connected".into()
        } else if streams_ok {
            format!("{STREAM_RAW}, {STREAM_CLEAN}, {STREAM_DLQ} present")
        } else {
            format!(
                "missing or unreadable: {}; run `tgingest setup`",
                missing.join("; ")
            )
        },
    });
    let (sb_ok, sb_reason) = match crate::switchboard::refusal(&ops.switchboard_url) {
        Some(why) => (false, format!("{why}; events wait in TG_CLEAN")),
        None => switchboard_reachable(&ops.switchboard_url).await,
    };
    checks.push(Check {
        name: "switchboard",
        ok: sb_ok,
        reason: sb_reason,
    });
    let status = if !(nats_ok && streams_ok) {
        "not_ready"
    } else if !sb_ok {
        "degraded"
    } else {
        "ready"
    };
    Readiness { status, checks }
}

/// Opens (and closes) a TCP connection to Switchboard's host and port.
async fn switchboard_reachable(url: &str) -> (bool, String) {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return (false, format!("switchboard.url {url:?} is not a URL: {e}")),
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return (
            false,
            format!("switchboard.url {url:?} has no host or port"),
        );
    };
    let target = format!("{host}:{port}");
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(&target)).await {
        Ok(Ok(_)) => (true, format!("{target} accepts connections")),
        Ok(Err(e)) => (
            false,
            format!("cannot connect to Switchboard at {target}: {e}; events wait in TG_CLEAN"),
        ),
        Err(_) => (
            false,
            format!(
                "no answer from Switchboard at {target} in {CHECK_TIMEOUT:?}; events wait in TG_CLEAN"
            ),
        ),
    }
}
