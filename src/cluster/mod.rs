//! The cluster: one owner per account across nodes.
//!
//! - [`lease`]: each node's lease record, renewed by compare-and-set, and the [`lease::Fence`]
//!   that stops the node's clients once renewals have failed for `cluster.self_fence_after`;
//! - [`membership`]: the live nodes, judged on this node's monotonic clock;
//! - [`claims`]: which node lease each account hangs on, with an epoch per change of owner;
//! - [`controller`]: one node's decisions: take, start, hand off, stop on a fence;
//! - [`assign`]: which node should own which account (rendezvous hashing, bounded load);
//! - [`gate`]: the SOCKS5 proxy every Telegram connection of the node goes through, open for an
//!   account only while its claim stands and the fence is up;
//! - [`runner`]: the node's accounts as the controller starts and stops them;
//! - [`status`]: the nodes, who owns which account, and why the others run nowhere;
//! - [`record`]: the compare-and-set KV writes (with `Nats-TTL`) they all use;
//! - [`local`]: what tests and the loadtest share about running nodes on one machine;
//! - [`fenced`]: account state written only by the account's owner (epoch-stamped
//!   compare-and-set, refused once a newer owner has written): the session, and
//! - [`checkpoints`]: each account's source cursor in `TG_CHECKPOINTS`, which moves with it.
//!
//! The rules they keep (see `DESIGN.md`, invariant 3): a taker acts only after a whole lease of
//! silence on its own clock plus a lock-delay; the old owner has stopped its clients well before
//! (its fence comes down at `self_fence_after`, a margin under the lease); a server-side expiry
//! never counts as free.

pub mod assign;
pub mod checkpoints;
pub mod claims;
pub mod controller;
pub mod fenced;
pub mod gate;
pub mod lease;
pub mod local;
pub mod membership;
pub mod record;
pub mod runner;
pub mod status;

/// Locks a mutex, recovering the data if a panic elsewhere poisoned it: everything the cluster
/// keeps behind one is plain data that a half-done update cannot leave inconsistent.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
