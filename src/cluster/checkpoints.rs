//! The account state that moves with the account: its acknowledged source cursor, in the KV
//! bucket `TG_CHECKPOINTS` (key: the account id), readable by every node and written only by the
//! account's current owner ([`super::fenced`]: stamped with the owner's epoch, compare-and-set on
//! the revision).
//!
//! The cursor is the whole resume point: for the grammers gateway it also holds the pending
//! backfill tasks and the highest message id seen per chat (`telegram::grammers::cursor`), so
//! nothing a new owner needs stays in one node's sled. The node-local event log keeps its own
//! checkpoint records as the audit of what this node did; it is read only when this store has
//! nothing for the account yet (a data dir from before this store), and a node whose data dir was
//! lost resumes from here.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::fenced::{FencedError, FencedKv, FencedWriter, Owner, StateKind};
use crate::bus::{BUCKET_CHECKPOINTS, Bus};
use crate::telegram::gateway::Cursor;

/// The stored record (JSON); the owner's epoch and node are in its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The source cursor every event up to which has a PubAck; `None` before the first one.
    pub cursor: Option<String>,
    /// Wall-clock time of the write, for people only.
    pub written_at: String,
}

/// An account's checkpoint as stored, with who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub cursor: Option<Cursor>,
    pub epoch: u64,
    pub node: String,
    pub revision: u64,
}

/// The `TG_CHECKPOINTS` bucket.
#[derive(Clone)]
pub struct CheckpointStore {
    kv: FencedKv,
}

fn encode(cursor: Option<&Cursor>) -> Bytes {
    let record = CheckpointRecord {
        cursor: cursor.map(|c| c.0.clone()),
        written_at: jiff::Timestamp::now().to_string(),
    };
    // A struct of two strings always serializes.
    Bytes::from(serde_json::to_vec(&record).unwrap_or_default())
}

fn decode(account: &str, revision: u64, value: &[u8]) -> Result<Option<Cursor>, FencedError> {
    serde_json::from_slice::<CheckpointRecord>(value)
        .map(|r| r.cursor.map(Cursor))
        .map_err(|e| FencedError::Corrupt {
            kind: StateKind::Checkpoint,
            account: account.to_string(),
            revision,
            message: e.to_string(),
        })
}

impl CheckpointStore {
    /// Opens the bucket (created by [`Bus::setup`]).
    pub async fn open(bus: &Bus) -> Result<CheckpointStore, FencedError> {
        Ok(CheckpointStore {
            kv: FencedKv::open(bus, BUCKET_CHECKPOINTS, StateKind::Checkpoint).await?,
        })
    }

    /// The account's checkpoint as the stream leader has it; `None` when there is none.
    pub async fn get(&self, account: &str) -> Result<Option<StoredCheckpoint>, FencedError> {
        let latest = self.kv.read(account).await?;
        let Some(value) = latest.value else {
            return Ok(None);
        };
        Ok(Some(StoredCheckpoint {
            cursor: decode(account, latest.revision, &value)?,
            epoch: latest.stamp.epoch,
            node: latest.stamp.node,
            revision: latest.revision,
        }))
    }

    /// Takes the account's checkpoint over as `owner` (refused when a newer owner has written)
    /// and returns the writer for its later checkpoints with the cursor to resume from: the
    /// stored one, or `local` (this node's event log) when the store has none yet, which the
    /// claim then stores.
    pub async fn claim(
        &self,
        account: &str,
        owner: &Owner,
        local: Option<Cursor>,
    ) -> Result<(CheckpointWriter, Option<Cursor>), FencedError> {
        let mut resume = None;
        let (writer, _) = self
            .kv
            .claim(account, owner, |stored| {
                let stored = match stored {
                    Some(value) => decode(account, 0, value)?,
                    None => None,
                };
                resume = stored.or_else(|| local.clone());
                Ok::<_, FencedError>(encode(resume.as_ref()))
            })
            .await?;
        Ok((CheckpointWriter { writer }, resume))
    }
}

/// The owner's writes of one account's checkpoint.
#[derive(Debug)]
pub struct CheckpointWriter {
    writer: FencedWriter,
}

impl CheckpointWriter {
    /// Stores `cursor` as the account's checkpoint. A refusal (a newer owner, or a replaced
    /// record) is final: the account must stop here.
    pub async fn write(&mut self, cursor: &Cursor) -> Result<u64, FencedError> {
        self.writer.write(encode(Some(cursor))).await
    }

    /// The owner's epoch this writer stamps.
    pub fn epoch(&self) -> u64 {
        self.writer.epoch()
    }
}
