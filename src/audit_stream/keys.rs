//! The sealed chain keys in `TG_ANCHORS`: `chain-key.<node id>` holds the node's event-log chain
//! key sealed under the master key and bound to the node id, so an auditor with the master key
//! can verify a node's stream copy after the node's data dir (and its `chain.key`) is gone.

use std::path::PathBuf;

use futures::TryStreamExt;

use super::error::AuditStreamError;
use crate::bus::{BUCKET_ANCHORS, Bus};
use crate::eventlog::{ChainKey, EventLogError};
use crate::keys::MasterKey;

/// Prefix of the chain-key entries in `TG_ANCHORS` (the anchors themselves are keyed by the
/// bare node id, which cannot contain a `.`).
pub const CHAIN_KEY_PREFIX: &str = "chain-key.";

/// The `TG_ANCHORS` key of `node_id`'s sealed chain key.
pub fn chain_key_entry(node_id: &str) -> String {
    format!("{CHAIN_KEY_PREFIX}{node_id}")
}

/// Where an entry lives, as the chain-key errors name it.
pub(super) fn entry_place(node_id: &str) -> PathBuf {
    PathBuf::from(format!("{BUCKET_ANCHORS}/{}", chain_key_entry(node_id)))
}

/// The current sealed value and revision of `node_id`'s entry, if it holds one.
pub(super) async fn sealed_entry(
    bus: &Bus,
    node_id: &str,
) -> Result<Option<(bytes::Bytes, u64)>, AuditStreamError> {
    let kv = bus
        .js
        .get_key_value(BUCKET_ANCHORS)
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "open TG_ANCHORS", e))?;
    let entry = kv
        .entry(chain_key_entry(node_id))
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "read the chain key", e))?;
    Ok(entry
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        .map(|e| (e.value, e.revision)))
}

/// The chain key of `node_id` from `TG_ANCHORS`, opened with `master`.
pub async fn read_chain_key(
    bus: &Bus,
    node_id: &str,
    master: &MasterKey,
) -> Result<ChainKey, AuditStreamError> {
    super::check_node_id(node_id)?;
    let Some((sealed, _)) = sealed_entry(bus, node_id).await? else {
        return Err(AuditStreamError::NoChainKey {
            node: node_id.to_string(),
            key: chain_key_entry(node_id),
        });
    };
    Ok(ChainKey::unseal_for_node(
        &entry_place(node_id),
        master,
        node_id,
        &sealed,
    )?)
}

/// What a master-key rotation did to the chain keys in `TG_ANCHORS`, by node id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Opened with the old key and written sealed under the new one.
    pub resealed: Vec<String>,
    /// Already under the new key (an earlier, interrupted rotation got there).
    pub already_new: Vec<String>,
    /// Opened with neither key: left as they are (their chains cannot be verified with either).
    pub unopenable: Vec<String>,
}

/// Re-seals every node's chain key in `TG_ANCHORS` from `old` to `new` (compare-and-set on the
/// revision read, so a node writing its entry meanwhile is not overwritten), for
/// `tgingest keys rotate`: without it a dead node's chain could not be verified with the new key.
pub async fn reseal_chain_keys(
    bus: &Bus,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<ResealReport, AuditStreamError> {
    let all = "every node";
    let kv = bus
        .js
        .get_key_value(BUCKET_ANCHORS)
        .await
        .map_err(|e| AuditStreamError::nats(all, "open TG_ANCHORS", e))?;
    let mut nodes: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| AuditStreamError::nats(all, "list TG_ANCHORS", e))?
        .try_collect::<Vec<String>>()
        .await
        .map_err(|e| AuditStreamError::nats(all, "list TG_ANCHORS", e))?
        .into_iter()
        .filter_map(|k| k.strip_prefix(CHAIN_KEY_PREFIX).map(str::to_string))
        .collect();
    nodes.sort();
    let mut report = ResealReport::default();
    for node in nodes {
        let Some((sealed, revision)) = sealed_entry(bus, &node).await? else {
            continue;
        };
        let place = entry_place(&node);
        match ChainKey::unseal_for_node(&place, old, &node, &sealed) {
            Ok(key) => {
                let resealed = key.seal_for_node(new, &node)?;
                kv.update(chain_key_entry(&node), resealed.into(), revision)
                    .await
                    .map_err(|e| AuditStreamError::nats(&node, "re-seal the chain key", e))?;
                report.resealed.push(node);
            }
            Err(EventLogError::ChainKeyWrongMaster { .. }) => {
                if ChainKey::unseal_for_node(&place, new, &node, &sealed).is_ok() {
                    report.already_new.push(node);
                } else {
                    report.unopenable.push(node);
                }
            }
            Err(_) => report.unopenable.push(node),
        }
    }
    Ok(report)
}
