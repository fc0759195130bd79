//! `GET /v1/cluster`: the live nodes, which accounts each owns, and the accounts nobody owns with
//! why (see [`crate::cluster::status`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};

use super::authz::{Caller, Routes};
use super::error::ApiError;
use super::principals::{ALL_GROUPS, Privilege};
use crate::accounts::AccountsControl;
use crate::cluster::controller::Snapshots;
use crate::cluster::record::Records;
use crate::cluster::status::{self, ClusterStatus};

/// What the route reads.
#[derive(Clone)]
pub struct ClusterApi {
    /// This node's id.
    pub node: String,
    pub control: Arc<AccountsControl>,
    /// The lease records and this node's controller; `None` when `cluster.enabled` is off.
    pub cluster: Option<(Records, Snapshots)>,
}

pub(super) fn routes() -> Routes<ClusterApi> {
    Routes::new("/v1").route(Method::GET, "/cluster", Privilege::View, cluster_status)
}

/// Every node and account of the cluster: `view` on `*` (it names accounts of every group).
async fn cluster_status(
    State(api): State<ClusterApi>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require(Privilege::View, ALL_GROUPS)?;
    let Some((records, snapshots)) = &api.cluster else {
        return Ok(Json(ClusterStatus {
            enabled: false,
            node: api.node.clone(),
            here: None,
            nodes: Vec::new(),
            owned: Vec::new(),
            unowned: Vec::new(),
        }));
    };
    let registry =
        api.control.registry().list().await.map_err(|e| {
            ApiError::new(503, "unavailable", format!("cannot list the accounts: {e}"))
        })?;
    let with_session = api.control.with_session().await.map_err(ApiError::from)?;
    let (nodes, owned, unowned) = status::read(records, &registry, &with_session)
        .await
        .map_err(|e| ApiError::new(503, "unavailable", e.to_string()))?;
    Ok(Json(ClusterStatus {
        enabled: true,
        node: api.node.clone(),
        here: Some(snapshots.get()),
        nodes,
        owned,
        unowned,
    }))
}
