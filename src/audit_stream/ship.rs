//! The node's background task that copies its event log to `tgingest.audit.<node id>`, in order,
//! and anchors what the copy holds.
//!
//! It trails the log: appends only publish the new head on a watch channel and never wait for
//! the task. Records are copied once they are on disk locally (the task flushes if they are not
//! yet), so a crash can never leave the copy with a record the restarted node no longer has.
//! Each publish expects the sequence of the node's previous message on the subject; after a
//! restart the task reads the subject's last message and goes on after it, once the local log
//! holds the same record there. NATS failures are retried with a growing pause, on the same
//! record: none is ever skipped.
//!
//! When the copy and the local log disagree (another record at the same index: the data dir was
//! replaced, or a second node runs under this id), nothing is overwritten: the task logs both
//! hashes, counts it, writes an `audit_stream.conflict` record locally, and stops shipping (and
//! anchoring, so the anchor of the chain already in the stream stays as it was).
//!
//! The anchor in `TG_ANCHORS` is the newest record the copy holds, written at most every
//! `eventlog.anchor_interval` (and at the end of [`AuditShipping::finish`]): so it never names a
//! record the copy or the local disk could still lack after a crash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use tokio::sync::watch;
use tokio::time::Instant;

use super::anchor::write_anchor;
use super::keys::{chain_key_entry, entry_place, sealed_entry};
use super::{
    METRIC_CONFLICTS_TOTAL, METRIC_LAG_RECORDS, METRIC_RETRIES_TOTAL, METRIC_SHIPPED_TOTAL,
};
use crate::bus::{BUCKET_ANCHORS, Bus, STREAM_AUDIT, audit_subject};
use crate::codec::decode;
use crate::eventlog::{Anchor, AuditEntry, ChainKey, Durability, EventLog, EventLogError, Record};
use crate::keys::MasterKey;

/// The first pause after a failed attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between attempts: the lag gauge is refreshed at least this often.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the shipping task needs.
pub struct ShipperParts {
    /// The node's connection.
    pub bus: Bus,
    /// The node's log, which the task trails.
    pub eventlog: Arc<EventLog>,
    /// The node id: the subject's last token and the anchor's key.
    pub node_id: String,
    /// Opens the chain key beside the log, and seals its copy in `TG_ANCHORS`.
    pub master: MasterKey,
    /// The least time between two anchors (`eventlog.anchor_interval`).
    pub anchor_every: Duration,
}

/// What the task is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipPhase {
    /// Finding where the stream copy ends.
    Starting,
    /// Copying, or caught up and waiting for the next record.
    Shipping,
    /// An attempt failed (NATS down or slow); the same step is tried again after a pause.
    Retrying {
        /// What failed, and why.
        error: String,
    },
    /// The stream copy and the local log disagree: nothing more is shipped or anchored.
    Stopped(Conflict),
    /// The task has ended ([`AuditShipping::finish`]).
    Finished,
}

/// How the stream copy and the local log disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The subject's newest message is record `index` with `stream_hash`, where the local log
    /// has `local_hash` (`None`: it does not reach that index); or the shipper expected that
    /// message at `expected_stream_seq` (another writer published after it).
    Record {
        /// The record's seq.
        index: u64,
        /// Where the subject's newest message is in `TG_AUDIT`.
        stream_seq: u64,
        /// The hash of the record there; `None` when the subject holds no message at all.
        stream_hash: Option<[u8; 32]>,
        /// The hash of the local record at `index`, if the local log holds one.
        local_hash: Option<[u8; 32]>,
        /// The stream sequence the shipper expected its previous message at (0 at start-up).
        expected_stream_seq: u64,
    },
    /// The subject's newest message does not decode as a record.
    Undecodable {
        /// Its sequence in `TG_AUDIT`.
        stream_seq: u64,
        /// Why it does not decode.
        problem: String,
    },
    /// `TG_ANCHORS` holds another chain key for this node id.
    ChainKey {
        /// Why it is not this log's.
        problem: String,
    },
}

fn hex_or_none(hash: Option<[u8; 32]>) -> String {
    hash.map_or_else(|| "none".to_string(), hex::encode)
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Record {
                index,
                stream_seq,
                stream_hash: None,
                local_hash,
                expected_stream_seq,
            } => write!(
                f,
                "the stream copy lost record {index} (hash {}), shipped at stream sequence \
                 {expected_stream_seq}: the subject holds no message now (stream sequence \
                 {stream_seq})",
                hex_or_none(*local_hash)
            ),
            Conflict::Record {
                index,
                stream_seq,
                stream_hash: Some(stream_hash),
                local_hash,
                expected_stream_seq,
            } if *local_hash == Some(*stream_hash) => write!(
                f,
                "record {index} (hash {}) is at stream sequence {stream_seq}, where the shipper \
                 expected its previous message at {expected_stream_seq}: another writer \
                 publishes to the subject",
                hex::encode(stream_hash)
            ),
            Conflict::Record {
                index,
                stream_seq,
                stream_hash: Some(stream_hash),
                local_hash,
                ..
            } => write!(
                f,
                "record {index} differs: the stream copy has hash {} (stream sequence \
                 {stream_seq}), the local log has {}; the data dir was replaced, or another node \
                 runs under this node id",
                hex::encode(stream_hash),
                hex_or_none(*local_hash)
            ),
            Conflict::Undecodable {
                stream_seq,
                problem,
            } => write!(
                f,
                "the subject's newest message (stream sequence {stream_seq}) is not a record: \
                 {problem}"
            ),
            Conflict::ChainKey { problem } => {
                write!(
                    f,
                    "the chain key in {BUCKET_ANCHORS} is not this log's: {problem}"
                )
            }
        }
    }
}

/// The task's observable state: tests and the node wait on it instead of sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipState {
    /// What it does now.
    pub phase: ShipPhase,
    /// The newest local record known to be in the stream copy ([`Anchor::EMPTY`] before any).
    pub shipped: Anchor,
    /// Its sequence in `TG_AUDIT` (0 before any).
    pub stream_seq: u64,
    /// The newest record this task anchored in `TG_ANCHORS`.
    pub anchored: Option<Anchor>,
}

/// The running task: its state, and how to end it.
pub struct AuditShipping {
    state: watch::Receiver<ShipState>,
    finish: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AuditShipping {
    /// Starts the task.
    pub fn start(parts: ShipperParts) -> AuditShipping {
        let subject = audit_subject(&parts.node_id);
        let head = parts.eventlog.watch_head();
        let (state_tx, state) = watch::channel(ShipState {
            phase: ShipPhase::Starting,
            shipped: Anchor::EMPTY,
            stream_seq: 0,
            anchored: None,
        });
        let (finish, finish_rx) = watch::channel(false);
        let shipper = Shipper {
            parts,
            subject,
            state: state_tx,
            finish: finish_rx,
            head,
        };
        AuditShipping {
            state,
            finish,
            task: Some(tokio::spawn(shipper.run())),
        }
    }

    /// Follows the task's state.
    pub fn state(&self) -> watch::Receiver<ShipState> {
        self.state.clone()
    }

    /// Ships what the log holds now, anchors it and ends the task; gives up (aborting it) after
    /// `within`, leaving the rest to the next start. Returns the state it ended in.
    pub async fn finish(mut self, within: Duration) -> ShipState {
        self.finish.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(within, &mut task).await.is_err()
        {
            task.abort();
            let state = self.state.borrow().clone();
            tracing::warn!(shipped = state.shipped.seq, phase = ?state.phase,
                "the event log's stream copy did not catch up before the node stopped; the rest \
                 is shipped at the next start");
        }
        self.state.borrow().clone()
    }
}

impl Drop for AuditShipping {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Why an attempt failed.
enum Failure {
    /// Try again after a pause.
    Transient(String),
    /// Stop shipping.
    Conflict(Conflict),
}

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(e.to_string())
}

struct Shipper {
    parts: ShipperParts,
    subject: String,
    state: watch::Sender<ShipState>,
    finish: watch::Receiver<bool>,
    head: watch::Receiver<Anchor>,
}

impl Shipper {
    async fn run(mut self) {
        if let Err(conflict) = self.ship().await {
            self.stop_on(conflict).await;
        }
        self.state.send_modify(|s| {
            if !matches!(s.phase, ShipPhase::Stopped(_)) {
                s.phase = ShipPhase::Finished;
            }
        });
    }

    /// Ships until finished; returns the conflict that stopped it, if one did.
    async fn ship(&mut self) -> Result<(), Conflict> {
        let this = &*self;
        let chain_key = this
            .retry("open the chain key", move || async move {
                ChainKey::open(this.parts.eventlog.dir(), &this.parts.master).map_err(transient)
            })
            .await?;
        let (shipped, stream_seq) = this
            .retry("read the end of the stream copy", move || this.resume())
            .await?;
        self.state.send_modify(|s| {
            s.shipped = shipped;
            s.stream_seq = stream_seq;
        });
        let key = &chain_key;
        this.retry("publish the sealed chain key", move || {
            this.publish_chain_key(key)
        })
        .await?;
        self.set_phase(ShipPhase::Shipping);
        tracing::info!(subject = %self.subject, shipped = shipped.seq, "shipping the event log to {STREAM_AUDIT}");

        let mut next_anchor = Instant::now();
        loop {
            let head = *self.head.borrow_and_update();
            let shipped = self.state.borrow().shipped;
            set_lag(&head, &shipped);
            if head.seq > shipped.seq {
                let this = &*self;
                let durable = this
                    .retry("flush the event log", move || async move {
                        this.parts.eventlog.durable_head().await.map_err(transient)
                    })
                    .await?;
                for seq in shipped.seq + 1..=durable.seq {
                    self.ship_record(seq).await?;
                    if Instant::now() >= next_anchor {
                        next_anchor = self.anchor().await;
                    }
                }
                continue;
            }
            let anchored = self.state.borrow().anchored;
            let unanchored = shipped.seq > 0 && anchored != Some(shipped);
            let finishing = *self.finish.borrow();
            if unanchored && (finishing || Instant::now() >= next_anchor) {
                next_anchor = self.anchor().await;
            }
            if finishing {
                return Ok(());
            }
            let unanchored = shipped.seq > 0 && self.state.borrow().anchored != Some(shipped);
            tokio::select! {
                changed = self.head.changed() => if changed.is_err() { return Ok(()) },
                () = tokio::time::sleep_until(next_anchor), if unanchored => {}
                _ = self.finish.changed() => {}
            }
        }
    }

    /// Runs `attempt` until it succeeds or finds a conflict, pausing longer after each failure.
    /// (A closure returning a future rather than an async closure: the latter's futures are not
    /// provably `Send` yet, and this one runs on a spawned task.)
    async fn retry<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, Conflict>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut pause = BACKOFF_FIRST;
        let mut failed = false;
        loop {
            match attempt().await {
                Ok(value) => {
                    if failed {
                        tracing::info!(subject = %self.subject, "{what}: succeeded again");
                        self.set_phase(ShipPhase::Shipping);
                    }
                    return Ok(value);
                }
                Err(Failure::Conflict(conflict)) => return Err(conflict),
                Err(Failure::Transient(error)) => {
                    metrics::counter!(METRIC_RETRIES_TOTAL).increment(1);
                    if !failed {
                        tracing::warn!(subject = %self.subject, %error, "cannot {what}; retrying");
                    }
                    failed = true;
                    self.set_phase(ShipPhase::Retrying {
                        error: format!("cannot {what}: {error}"),
                    });
                    set_lag(&self.parts.eventlog.head(), &self.state.borrow().shipped);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Where the copy ends: after the subject's newest message, if the local log holds the same
    /// record at its index (nothing shipped yet: the empty anchor at stream sequence 0).
    async fn resume(&self) -> Result<(Anchor, u64), Failure> {
        let Some((record, stream_seq)) = self.newest_in_stream().await? else {
            return Ok((Anchor::EMPTY, 0));
        };
        let local_hash = self.local_hash(record.seq)?;
        if local_hash == Some(record.hash) {
            return Ok((record.anchor(), stream_seq));
        }
        Err(Failure::Conflict(Conflict::Record {
            index: record.seq,
            stream_seq,
            stream_hash: Some(record.hash),
            local_hash,
            expected_stream_seq: 0,
        }))
    }

    /// The subject's newest message as a record, with its stream sequence (read from the
    /// stream's leader, which has every acknowledged message).
    async fn newest_in_stream(&self) -> Result<Option<(Record, u64)>, Failure> {
        let stream = self
            .parts
            .bus
            .js
            .get_stream(STREAM_AUDIT)
            .await
            .map_err(transient)?;
        let message = match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(transient(e)),
        };
        match decode::<Record>(&message.payload) {
            Ok(record) => Ok(Some((record, message.sequence))),
            Err(e) => Err(Failure::Conflict(Conflict::Undecodable {
                stream_seq: message.sequence,
                problem: e.to_string(),
            })),
        }
    }

    /// The hash of local record `seq`, if the log holds it.
    fn local_hash(&self, seq: u64) -> Result<Option<[u8; 32]>, Failure> {
        let Some(bytes) = self.parts.eventlog.raw_record(seq).map_err(transient)? else {
            return Ok(None);
        };
        let record: Record = decode(&bytes)
            .map_err(|e| transient(format!("local record {seq} does not decode: {e}")))?;
        Ok(Some(record.hash))
    }

    /// Makes sure `TG_ANCHORS` holds this log's chain key, sealed under the current master key.
    /// Called once the copy is known to be this log's (empty, or ending in a record the local
    /// log holds), so an entry that does not open with this master key (sealed under an older
    /// one) is re-sealed; one that opens to another key is a conflict.
    async fn publish_chain_key(&self, chain_key: &ChainKey) -> Result<(), Failure> {
        let node = &self.parts.node_id;
        let sealed = chain_key
            .seal_for_node(&self.parts.master, node)
            .map_err(transient)?;
        let kv = self
            .parts
            .bus
            .js
            .get_key_value(BUCKET_ANCHORS)
            .await
            .map_err(transient)?;
        let Some((found, revision)) = sealed_entry(&self.parts.bus, node)
            .await
            .map_err(transient)?
        else {
            return kv
                .create(chain_key_entry(node), sealed.into())
                .await
                .map(|_| ())
                .map_err(transient);
        };
        match ChainKey::unseal_for_node(&entry_place(node), &self.parts.master, node, &found) {
            Ok(key) if key.same_as(chain_key) => Ok(()),
            Ok(_) => Err(Failure::Conflict(Conflict::ChainKey {
                problem: "it opens to another key, so the stream copy under this node id was \
                          chained by another data dir"
                    .into(),
            })),
            Err(
                EventLogError::ChainKeyWrongMaster { .. } | EventLogError::ChainKeyMalformed { .. },
            ) => {
                tracing::info!(entry = %chain_key_entry(node),
                    "the chain key in {BUCKET_ANCHORS} does not open with this master key; re-sealing it");
                kv.update(chain_key_entry(node), sealed.into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(transient)
            }
            Err(e) => Err(transient(e)),
        }
    }

    /// Copies local record `seq` to the subject, expecting the previous one where it was put.
    async fn ship_record(&self, seq: u64) -> Result<(), Conflict> {
        let bytes = self
            .retry("read the event log", move || async move {
                self.parts
                    .eventlog
                    .raw_record(seq)
                    .map_err(transient)?
                    .ok_or_else(|| transient(format!("local record {seq} is missing")))
            })
            .await?;
        let raw = &bytes;
        let record: Record = self
            .retry("decode a local record", move || async move {
                decode(raw)
                    .map_err(|e| transient(format!("local record {seq} does not decode: {e}")))
            })
            .await?;
        let payload = bytes::Bytes::from(bytes);
        let (record_ref, payload_ref) = (&record, &payload);
        let stream_seq = self
            .retry("publish to the stream copy", move || {
                self.publish(record_ref, payload_ref.clone())
            })
            .await?;
        metrics::counter!(METRIC_SHIPPED_TOTAL).increment(1);
        self.state.send_modify(|s| {
            s.shipped = record.anchor();
            s.stream_seq = stream_seq;
        });
        set_lag(&self.parts.eventlog.head(), &record.anchor());
        Ok(())
    }

    /// One publish of `record`; returns its stream sequence. A refusal for the wrong last
    /// sequence is looked into: the record may be in already (its PubAck was lost), or another
    /// writer got there first.
    async fn publish(&self, record: &Record, payload: bytes::Bytes) -> Result<u64, Failure> {
        let bus = &self.parts.bus;
        let expected = self.state.borrow().stream_seq;
        let message = PublishMessage::build()
            .payload(payload)
            .expected_last_subject_sequence(expected);
        let sent_in = bus.connection_drops();
        let ack = bus
            .js
            .send_publish(self.subject.clone(), message)
            .await
            .map_err(transient)?;
        let acked = tokio::select! {
            acked = std::future::IntoFuture::into_future(ack) => acked,
            () = bus.dropped_since(sent_in) => {
                return Err(transient("the connection dropped before the PubAck"));
            }
        };
        match acked {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if crate::bus::wrong_last_sequence(&e) => {
                self.already_in(record, expected).await
            }
            Err(e) => Err(transient(e)),
        }
    }

    /// After a wrong-last-sequence refusal: the stream sequence of `record` if it is the
    /// subject's newest message already, else the conflict.
    async fn already_in(&self, record: &Record, expected: u64) -> Result<u64, Failure> {
        let Some((newest, stream_seq)) = self.newest_in_stream().await? else {
            if expected == 0 {
                // Refused as if the subject had a message, which is gone again: look again.
                return Err(transient("the subject changed while publishing"));
            }
            return Err(Failure::Conflict(Conflict::Record {
                index: record.seq - 1,
                stream_seq: 0,
                stream_hash: None,
                local_hash: Some(record.prev_hash),
                expected_stream_seq: expected,
            }));
        };
        if newest.seq == record.seq && newest.hash == record.hash {
            return Ok(stream_seq);
        }
        Err(Failure::Conflict(Conflict::Record {
            index: newest.seq,
            stream_seq,
            stream_hash: Some(newest.hash),
            local_hash: self.local_hash(newest.seq)?,
            expected_stream_seq: expected,
        }))
    }

    /// Anchors the newest shipped record; returns when the next anchor is due.
    async fn anchor(&self) -> Instant {
        let shipped = self.state.borrow().shipped;
        let node = &self.parts.node_id;
        match write_anchor(&self.parts.bus, node, &shipped).await {
            Ok(()) => {
                self.state.send_modify(|s| s.anchored = Some(shipped));
                Instant::now() + self.parts.anchor_every
            }
            Err(error) => {
                tracing::warn!(%error, "cannot anchor the event-log head to JetStream; will retry");
                Instant::now() + self.parts.anchor_every.min(BACKOFF_MAX)
            }
        }
    }

    /// Reports `conflict` (log line, counter, local audit record), then only follows the head
    /// for the lag gauge until finished.
    async fn stop_on(&mut self, conflict: Conflict) {
        let (index, stream_hash, local_hash) = match &conflict {
            Conflict::Record {
                index,
                stream_hash,
                local_hash,
                ..
            } => (*index, hex_or_none(*stream_hash), hex_or_none(*local_hash)),
            _ => (0, "none".into(), "none".into()),
        };
        metrics::counter!(METRIC_CONFLICTS_TOTAL).increment(1);
        tracing::error!(subject = %self.subject, index, %stream_hash, %local_hash, %conflict,
            "the event log's stream copy and the local log disagree; stopped shipping (nothing \
             is overwritten)");
        let entry = AuditEntry {
            action: "audit_stream.conflict".into(),
            actor: self.parts.node_id.clone(),
            account_id: None,
            details: BTreeMap::from([
                ("subject".to_string(), self.subject.clone()),
                ("index".to_string(), index.to_string()),
                ("stream_hash".to_string(), stream_hash),
                ("local_hash".to_string(), local_hash),
                ("reason".to_string(), conflict.to_string()),
            ]),
        };
        if let Err(e) = self.parts.eventlog.audit(&entry, Durability::Flushed).await {
            tracing::error!(error = %e, "cannot record the stream-copy conflict in the event log");
        }
        self.set_phase(ShipPhase::Stopped(conflict));
        let shipped = self.state.borrow().shipped;
        loop {
            set_lag(&self.head.borrow_and_update(), &shipped);
            if *self.finish.borrow() {
                return;
            }
            tokio::select! {
                changed = self.head.changed() => if changed.is_err() { return },
                _ = self.finish.changed() => {}
            }
        }
    }

    fn set_phase(&self, phase: ShipPhase) {
        self.state.send_modify(|s| s.phase = phase);
    }
}

fn set_lag(head: &Anchor, shipped: &Anchor) {
    metrics::gauge!(METRIC_LAG_RECORDS).set(head.seq.saturating_sub(shipped.seq) as f64);
}
