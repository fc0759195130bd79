//! The dedupe stage's cluster-wide answer: with `cluster.enabled`, an event id the node-local
//! seen-set does not know is claimed in the KV bucket `TG_SEEN` by a create-if-absent, and the
//! claim is the decision. The first copy of an event to claim its id is passed on; any other copy
//! that reaches any node while the claim lives (`dedupe.shared_ttl`) is dropped.
//!
//! # Why this design (issue 13, item 6)
//!
//! Every node pulls from the one durable consumer `dedupe` on `TG_RAW`, so the copies of an event
//! reach whichever node fetched next. Event ids are per account, so a duplicate always comes from
//! one account's source sending again: catch-up or backfill overlap, a restart, a new owner after
//! a failover resuming from the last checkpoint, or a redelivery. `TG_RAW`'s `Nats-Msg-Id` window
//! (2 minutes) already drops a copy published that soon after the first; the copies that reach
//! the dedupe stage are further apart, or the same message delivered again.
//!
//! Three ways were weighed, and their cost per event measured on a three-server R3 cluster with
//! `sync_interval: always` on the 2-core development box, release build (`cargo test --release
//! --test dedupe_cluster -- --ignored --nocapture`; the README's pipeline section has the
//! figures too):
//!
//! - **Partition `TG_RAW`** by account hash into P subjects, each partition's consumer owned by
//!   one node through the lease machinery, so a node-local seen-set stays valid. Per event it
//!   costs only the local seen-set (the cheapest), but a partition that moves (failover,
//!   rebalancing, a rolling restart) arrives at a node whose seen-set never saw it: the
//!   re-emissions that a failover causes are exactly the duplicates that then pass. It needs a
//!   shared answer for the window after a move anyway, plus partition ownership in
//!   `crate::cluster`, which is not wired into `run` yet.
//! - **A shared seen-log**: each node appends the ids it passed on, one R3 publish per batch,
//!   and applies every node's appends to its own seen-set. Cheapest on the bus, but every node
//!   then writes every id of the cluster (M× the local cost and disk), a node that starts must
//!   replay the log before its answers are complete, and the answer is only eventually
//!   consistent: two nodes can both pass a copy inside the propagation lag.
//! - **Share the seen-set in KV** (this module): one replicated, fsynced create-if-absent per
//!   event the local seen-set did not know. The stream leader orders the creates, so exactly one
//!   copy wins wherever the copies land, with no catch-up and nothing that must move with an
//!   account. Its costs: the write, and server memory. One claim alone takes 0.76–0.97 ms (a
//!   replicated fsync), so a batch's claims are all in flight at once: 30–51 µs per event with
//!   512 in flight (servers' CPU 30–58 µs), against 9–16 µs for the local seen-set and 3 µs for
//!   a shared log; a duplicate (refused, then read back) ~100 µs. nats-server keeps state per
//!   subject, so every id held costs each server about 500 bytes. Seven days of ids at 1,000
//!   events/s would be ~600 million keys, ~300 GB per server: the KV cannot hold the horizon.
//!   15 minutes at that rate cost ~450 MB per server.
//!
//! So the two are combined. The node-local seen-set (sled, `dedupe.horizon`, 7 days) answers
//! first, costs nothing on the bus, and holds the long horizon for the copies that land on the
//! node that passed the original. `TG_SEEN` holds every id for `dedupe.shared_ttl` (default 15
//! minutes), which covers the **cross-node window**: the time a duplicate takes to reach another
//! node. After a failover the new owner resumes from the last checkpoint (written every second)
//! once `cluster.lease` + `cluster.lock_delay` (22 s) have passed, and starts its accounts paced
//! at `cluster.connects_per_second` (1,667 accounts per node at 5/s: ~6 minutes); a
//! redelivery comes after `nats.ack_wait` (5 s) per attempt. A copy later than the shared TTL
//! lands on the original's node only about 1/M of the time (M nodes sharing the consumer);
//! elsewhere it is passed on, and Switchboard's idempotency key, the last layer, stores it once
//! (invariant 2) and counts it as a duplicate.
//! Partitioning can be added once partition ownership exists: it would make the local horizon
//! hold across nodes, and this window is what covers a partition's move.
//!
//! # What a claim means
//!
//! The value of a claim is the `TG_RAW` stream sequence of the copy that made it, and a copy is
//! passed on only after its claim is made or found to be its own. When the claim is refused, the
//! holder is read back from the stream leader: a different sequence is another copy (drop this
//! one); the same sequence is this very message, delivered again after an attempt that claimed
//! it but did not finish, or whose acknowledgement was lost (pass it on again: `TG_CLEAN`'s
//! `Nats-Msg-Id` window absorbs a repeat publish, and past it Switchboard's idempotency key). So a node dying between its claim and its
//! `TG_CLEAN` publish loses nothing: its message is redelivered and recognized. For the same
//! reason an id dropped here is *not* marked in the local seen-set: the copy holding the claim
//! may not have been passed on yet, and must not be refused when it comes back to this node.
//!
//! # When the store does not answer
//!
//! A copy whose claim fails (no answer, no bucket, a lost connection) is not passed on unchecked:
//! it is negatively acknowledged and redelivered, and the stage backs off. Losing nothing comes
//! first, and waiting keeps it: the message stays in `TG_RAW` for `streams.raw.max_age` (1 day),
//! the same bound as for any stall below the dedupe stage (`TG_CLEAN` or the filter down).
//! Duplicates come second, and passing on unchecked would let them through exactly when
//! failovers and re-emissions are likeliest. `TG_SEEN`
//! lives on the same NATS cluster as `TG_RAW` and `TG_CLEAN`, so it is rarely down alone; when
//! it is, `tgingest_dedupe_shared_errors_total` and the dedupe consumer's pending count show it.

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;

use crate::bus::{BUCKET_SEEN, Bus, wrong_last_sequence};

pub use crate::observability::{
    METRIC_SHARED_DECISIONS as METRIC_DECISIONS, METRIC_SHARED_ERRORS as METRIC_ERRORS,
};
/// Seconds to decide one batch in the shared store (all its claims in flight at once).
pub const METRIC_SECONDS: &str = "tgingest_dedupe_shared_seconds";

/// How often a refused claim is read back and, when no claim is found, made again. In a
/// cluster the leader refuses a create while another copy's create of the same key is still
/// being replicated, and until that one is applied the read finds nothing: each retry waits
/// twice as long as the last, from [`SETTLE_PAUSE`] (about 0.3 s in all).
const SETTLE_TRIES: u32 = 5;
/// The first wait before a refused claim that could not be read back is made again.
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// What the shared store answered for one copy of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No live claim on the id: this copy holds it now; pass it on.
    New,
    /// This very `TG_RAW` message holds the claim from an earlier delivery: pass it on again.
    Again,
    /// Another copy holds the claim: drop this one.
    Duplicate,
}

impl Verdict {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::New => "new",
            Verdict::Again => "again",
            Verdict::Duplicate => "duplicate",
        }
    }
}

/// Why a copy could not be decided (it is then redelivered, never passed on unchecked).
#[derive(Debug, thiserror::Error)]
pub enum SharedSeenError {
    #[error("cannot open {BUCKET_SEEN}: {message}")]
    Open { message: String },
    #[error("cannot claim event {event_id} in {BUCKET_SEEN}: {message}")]
    Claim { event_id: String, message: String },
    #[error("cannot read the claim on event {event_id} in {BUCKET_SEEN}: {message}")]
    Read { event_id: String, message: String },
    #[error(
        "the claim on event {event_id} in {BUCKET_SEEN} holds {value:?}, not a TG_RAW sequence"
    )]
    Corrupt { event_id: String, value: String },
    #[error(
        "the claim on event {event_id} in {BUCKET_SEEN} was refused {SETTLE_TRIES} times and then not found"
    )]
    Unsettled { event_id: String },
}

impl SharedSeenError {
    /// The metric label: which operation failed.
    pub fn op(&self) -> &'static str {
        match self {
            SharedSeenError::Open { .. } => "open",
            SharedSeenError::Claim { .. } | SharedSeenError::Unsettled { .. } => "claim",
            SharedSeenError::Read { .. } | SharedSeenError::Corrupt { .. } => "read",
        }
    }
}

/// One copy of an event to decide: its id and the `TG_RAW` stream sequence of its message.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub event_id: &'a str,
    pub raw_sequence: u64,
}

/// The bucket `TG_SEEN`, as the dedupe stage uses it.
#[derive(Clone)]
pub struct SharedSeen {
    bus: Bus,
    stream: Stream<()>,
}

impl SharedSeen {
    /// The bucket on `bus`. It is not looked up: a bucket missing now or later shows as failed
    /// claims, which wait for it.
    pub async fn open(bus: &Bus) -> Result<SharedSeen, SharedSeenError> {
        let stream = bus
            .js
            .get_stream_no_info(format!("KV_{BUCKET_SEEN}"))
            .await
            .map_err(|e| SharedSeenError::Open {
                message: e.to_string(),
            })?;
        Ok(SharedSeen {
            bus: bus.clone(),
            stream,
        })
    }

    /// Decides every copy, all claims (and the read-backs of refused ones) in flight at once;
    /// one answer per copy, in order.
    pub async fn decide(&self, copies: &[Candidate<'_>]) -> Vec<Result<Verdict, SharedSeenError>> {
        let mut sent = Vec::with_capacity(copies.len());
        for copy in copies {
            sent.push(self.send_claim(*copy).await);
        }
        let answers = copies.iter().zip(sent).map(|(copy, sent)| async move {
            let answer = match sent {
                Ok(ack) => Self::claim_answer(*copy, ack).await,
                Err(e) => Err(e),
            };
            self.settle(*copy, answer).await
        });
        futures::future::join_all(answers).await
    }

    /// Publishes the claim: the copy's sequence, accepted only if the key holds nothing.
    async fn send_claim(&self, copy: Candidate<'_>) -> Result<PublishAckFuture, SharedSeenError> {
        let message = PublishMessage::build()
            .payload(Bytes::from(copy.raw_sequence.to_string()))
            .expected_last_subject_sequence(0);
        self.bus
            .js
            .send_publish(subject_of(copy.event_id), message)
            .await
            .map_err(|e| claim_error(copy, &e))
    }

    /// `Ok(true)`: claimed; `Ok(false)`: the key holds a claim already.
    async fn claim_answer(
        copy: Candidate<'_>,
        ack: PublishAckFuture,
    ) -> Result<bool, SharedSeenError> {
        match ack.await {
            Ok(_) => Ok(true),
            Err(e) if wrong_last_sequence(&e) => Ok(false),
            Err(e) => Err(claim_error(copy, &e)),
        }
    }

    /// Turns a claim's answer into a verdict, reading the holder back when it was refused.
    async fn settle(
        &self,
        copy: Candidate<'_>,
        mut answer: Result<bool, SharedSeenError>,
    ) -> Result<Verdict, SharedSeenError> {
        for attempt in 0..SETTLE_TRIES {
            if answer? {
                return Ok(Verdict::New);
            }
            match self.holder(copy.event_id).await? {
                Some(holder) if holder == copy.raw_sequence => return Ok(Verdict::Again),
                Some(_) => return Ok(Verdict::Duplicate),
                // Another claim not applied yet, or one that expired since the refusal.
                None => {
                    tokio::time::sleep(SETTLE_PAUSE * 2u32.pow(attempt)).await;
                    let ack = self.send_claim(copy).await?;
                    answer = Self::claim_answer(copy, ack).await;
                }
            }
        }
        Err(SharedSeenError::Unsettled {
            event_id: copy.event_id.to_string(),
        })
    }

    /// The `TG_RAW` sequence holding the claim on `event_id`, read from the stream leader (a
    /// replica may lag); `None` when there is no claim.
    async fn holder(&self, event_id: &str) -> Result<Option<u64>, SharedSeenError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&subject_of(event_id))
            .await
        {
            Ok(message) => {
                let value = String::from_utf8_lossy(&message.payload);
                value
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| SharedSeenError::Corrupt {
                        event_id: event_id.to_string(),
                        value: value.chars().take(64).collect(),
                    })
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(SharedSeenError::Read {
                event_id: event_id.to_string(),
                message: e.to_string(),
            }),
        }
    }
}

fn claim_error(copy: Candidate<'_>, e: &dyn std::fmt::Display) -> SharedSeenError {
    SharedSeenError::Claim {
        event_id: copy.event_id.to_string(),
        message: e.to_string(),
    }
}

/// The KV key of an event id: the id itself when it is a plain token (every id tgingest makes is
/// 32 hex characters), otherwise `x` and the blake3 of it, so an id from a foreign producer can
/// never be a wildcard or span subject tokens (and, at 65 characters, never equals a real id).
pub fn key_of(event_id: &str) -> String {
    let plain = !event_id.is_empty()
        && event_id.len() <= 64
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        event_id.to_string()
    } else {
        format!("x{}", blake3::hash(event_id.as_bytes()).to_hex())
    }
}

fn subject_of(event_id: &str) -> String {
    format!("$KV.{BUCKET_SEEN}.{}", key_of(event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_its_own_key_and_anything_else_is_hashed_into_one_token() {
        let id = crate::event::event_id("42", "-1001", "7", crate::event::EventKind::Message, 0);
        assert_eq!(key_of(&id), id);
        for foreign in ["a.b", "*", ">", "", "a b", &"a".repeat(65)] {
            let key = key_of(foreign);
            assert_eq!(key.len(), 65, "{foreign:?} -> {key}");
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        }
        assert_ne!(key_of("a.b"), key_of("a_b"));
    }
}
