//! Chain heads in `TG_ANCHORS`, one per node id: what a verification of the node's log (on disk
//! or in the stream copy) must reach, so a log cut short or rewritten is caught.

use crate::bus::{BUCKET_ANCHORS, Bus};
use crate::eventlog::Anchor;

/// The chain head as stored in `TG_ANCHORS` under the node id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnchorRecord {
    /// The seq of the anchored record.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// When it was anchored, in microseconds since the Unix epoch.
    pub at_us: i64,
}

impl AnchorRecord {
    /// The anchored head, as the event log compares it.
    pub fn anchor(&self) -> Result<Anchor, String> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut hash)
            .map_err(|_| "anchor hash is not 64 hex characters".to_string())?;
        Ok(Anchor {
            seq: self.seq,
            hash,
        })
    }
}

/// Records `head` as the anchor of `node_id`.
pub async fn write_anchor(bus: &Bus, node_id: &str, head: &Anchor) -> Result<(), String> {
    let record = AnchorRecord {
        seq: head.seq,
        hash: hex::encode(head.hash),
        at_us: crate::event::now_us(),
    };
    let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    let kv = bus
        .js
        .get_key_value(BUCKET_ANCHORS)
        .await
        .map_err(|e| e.to_string())?;
    kv.put(node_id, body.into())
        .await
        .map_err(|e| e.to_string())?;
    metrics::gauge!("tgingest_eventlog_anchored_seq").set(head.seq as f64);
    Ok(())
}

/// The newest anchor of `node_id`, if any.
pub async fn latest_anchor(bus: &Bus, node_id: &str) -> Result<Option<AnchorRecord>, String> {
    let kv = bus
        .js
        .get_key_value(BUCKET_ANCHORS)
        .await
        .map_err(|e| e.to_string())?;
    let Some(bytes) = kv.get(node_id).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("anchor of {node_id} is not valid: {e}"))
}
