//! Verifying a node's chain from `TG_AUDIT` alone: the records of its subject, in stream order,
//! walked like the log on disk (links, order, no missing index, the keyed hash), and checked
//! against the node's anchor in `TG_ANCHORS`. Each message must also follow the subject's
//! previous one (its `Nats-Expected-Last-Subject-Sequence`), so a message removed and published
//! again shows even where the chain still links.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use serde::Serialize;

use super::anchor::{AnchorRecord, latest_anchor};
use super::error::AuditStreamError;
use super::keys::read_chain_key;
use crate::bus::{Bus, STREAM_AUDIT, audit_subject};
use crate::codec::decode;
use crate::eventlog::{Record, VerifyReport, verify_copy};
use crate::keys::MasterKey;

/// How long the reader waits for the next message before calling the read stalled.
const READ_STALL: Duration = Duration::from_secs(30);
/// Entries in flight between the reader and the walk.
const WALK_QUEUE: usize = 1024;

/// What `tgingest audit verify --node ID` prints: the walk's outcome, what was read, and the
/// anchor it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeVerifyReport {
    /// The chain's verdict, as for a log on disk.
    #[serde(flatten)]
    pub report: VerifyReport,
    /// The node whose chain this is.
    pub node: String,
    /// Where it was read.
    pub subject: String,
    /// Messages read from the subject.
    pub records: u64,
    /// The index of the first record read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// The index of the last record read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// The node's anchor in `TG_ANCHORS`, which the chain had to reach with the same hash.
    pub anchor: AnchorRecord,
}

/// What the reader saw besides the entries it handed to the walk.
#[derive(Default)]
struct Read {
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
}

type Entry = Result<(Vec<u8>, Vec<u8>), String>;

/// Verifies `node_id`'s chain as `TG_AUDIT` holds it, with the chain key sealed in `TG_ANCHORS`
/// (opened with `master`), against the node's latest anchor. Needs nothing of the node's disk.
pub async fn verify_node(
    bus: &Bus,
    node_id: &str,
    master: &MasterKey,
) -> Result<NodeVerifyReport, AuditStreamError> {
    super::check_node_id(node_id)?;
    // The anchor first: the shipper anchors only what the stream holds, so everything it names
    // is in the stream by the time the subject's end is read below.
    let anchor_record = latest_anchor(bus, node_id)
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "read the anchor", e))?
        .ok_or_else(|| AuditStreamError::NoAnchor {
            node: node_id.to_string(),
        })?;
    let anchor = anchor_record
        .anchor()
        .map_err(|problem| AuditStreamError::BadAnchor {
            node: node_id.to_string(),
            problem,
        })?;
    let chain_key = read_chain_key(bus, node_id, master).await?.bytes();
    let subject = audit_subject(node_id);
    let stream = bus
        .js
        .get_stream(STREAM_AUDIT)
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "open TG_AUDIT", e))?;
    let last = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
        Err(e) => {
            return Err(AuditStreamError::nats(
                node_id,
                "read the end of the subject",
                e,
            ));
        }
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(WALK_QUEUE);
    let walk = tokio::task::spawn_blocking(move || {
        verify_copy(
            &chain_key,
            std::iter::from_fn(|| rx.blocking_recv()),
            Some(&anchor),
        )
    });
    let read = read_subject(&stream, &subject, last, node_id, tx).await;
    let report = walk
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "finish the walk over the chain", e))?;
    let read = read?;
    Ok(NodeVerifyReport {
        report,
        node: node_id.to_string(),
        subject,
        records: read.records,
        first_seq: read.first_seq,
        last_seq: read.last_seq,
        anchor: anchor_record,
    })
}

/// Reads the subject's messages up to stream sequence `last` into `tx`, each as (the seq key
/// of the record it holds, its bytes), or as why it does not follow the message before it.
async fn read_subject(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    last: u64,
    node_id: &str,
    tx: tokio::sync::mpsc::Sender<Entry>,
) -> Result<Read, AuditStreamError> {
    let mut read = Read::default();
    if last == 0 {
        return Ok(read);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "read the subject", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| AuditStreamError::nats(node_id, "read the subject", e))?;
    let mut previous_stream_seq = 0u64;
    let mut previous_index = 0u64;
    let mut walking = true;
    while previous_stream_seq < last {
        let stalled = || AuditStreamError::ReadStalled {
            node: node_id.to_string(),
            after: previous_stream_seq,
            last,
        };
        let message = match tokio::time::timeout(READ_STALL, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(AuditStreamError::nats(node_id, "read the subject", e)),
            Ok(None) | Err(_) => return Err(stalled()),
        };
        let info = message
            .info()
            .map_err(|e| AuditStreamError::nats(node_id, "read a message's stream sequence", e))?;
        let (stream_seq, pending) = (info.stream_sequence, info.pending);
        let decoded = decode::<Record>(&message.payload).ok();
        let index = decoded.as_ref().map_or(previous_index + 1, |r| r.seq);
        read.records += 1;
        read.first_seq.get_or_insert(index);
        read.last_seq = Some(index);
        let follows = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        // A record out of line is the walk's to name ("missing record N"); one in line that was
        // not published right after the message before it was removed and published again.
        let entry = if index == previous_index + 1 && follows != Some(previous_stream_seq) {
            Err(format!(
                "stream message {stream_seq} (record {index}) follows stream message \
                 {previous_stream_seq} of the subject, but was published after {}: a message \
                 was removed, or it was not published by the node's shipper",
                follows.map_or_else(|| "no known message".to_string(), |f| f.to_string())
            ))
        } else {
            Ok((index.to_be_bytes().to_vec(), message.payload.to_vec()))
        };
        // Once the walk has stopped (at the first bad record) the rest is only counted.
        if walking && tx.send(entry).await.is_err() {
            walking = false;
        }
        previous_stream_seq = stream_seq;
        previous_index = index;
        if pending == 0 {
            break; // the subject's last message was removed after its end was read
        }
    }
    Ok(read)
}
