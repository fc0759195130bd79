//! The seam between an account actor and Telegram (or a stand-in for it).
//!
//! Invariant 1 lives here: a source hands out updates with a [`Cursor`], and only learns that they
//! are durable downstream when the account actor calls [`Gateway::commit`] — after the PubAck of
//! every event up to that cursor. For grammers that is `sync_update_state()`; for the simulated
//! source it is the position to resume from. A source must be able to resume from any cursor it
//! handed out, re-delivering what came after it (the layers downstream drop the repeats).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::cluster::fenced::Owner;
use crate::event::{Chat, Event};

/// An opaque resume position, stored in the event log's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(pub String);

/// Who the account is, once connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Telegram user id of the account.
    pub account_id: String,
    pub display_name: Option<String>,
    pub username: Option<String>,
}

/// One step of the source: zero or more events (an update can carry several, e.g. a deletion of
/// several messages) and the cursor that is safe to commit once they are all durable.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUpdate {
    pub events: Vec<Event>,
    pub cursor: Cursor,
}

/// What went wrong talking to the source, sorted by what the account actor must do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Telegram asks us to wait this long (FLOOD_WAIT_X, SLOWMODE_WAIT_X).
    #[error("flood wait of {seconds}s")]
    FloodWait { seconds: u64 },
    /// Telegram limits this account for an unstated while, typically hours (PEER_FLOOD): park
    /// it for the configured time instead of retrying.
    #[error("peer flood: Telegram limits this account for a while")]
    PeerFlood,
    /// The session is gone for good (AUTH_KEY_UNREGISTERED, SESSION_REVOKED, USER_DEACTIVATED);
    /// holds the RPC name.
    #[error("session revoked: {0}")]
    Revoked(String),
    /// The auth key was used from two places at once (AUTH_KEY_DUPLICATED).
    #[error("auth key duplicated")]
    Duplicated,
    /// This node may not connect the account (its cluster claim is not here or was let go):
    /// stop without restarting; the owner runs it.
    #[error("not owned here: {0}")]
    NotOwned(String),
    /// A newer owner wrote the account's state (its session): this node no longer owns the
    /// account, so its client must stop here for good.
    #[error("stale owner: {0}")]
    StaleOwner(String),
    /// Connection trouble; reconnect with backoff.
    #[error("network: {0}")]
    Network(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl GatewayError {
    /// Errors a restart cannot fix (the supervisor must not restart the account).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            GatewayError::Revoked(_)
                | GatewayError::Duplicated
                | GatewayError::NotOwned(_)
                | GatewayError::StaleOwner(_)
        )
    }
}

/// One account's connection to Telegram (or a stand-in).
///
/// Methods take `&mut self` and are awaited one at a time by the owning account actor.
pub trait Gateway: Send + 'static {
    /// Connects (and logs in with the stored session); returns who the account is.
    fn connect(&mut self) -> BoxFuture<'_, Result<AccountInfo, GatewayError>>;

    /// Starts delivering from `from` (what came after it is re-delivered, marked as catch-up), or
    /// from now when `None` (a first start).
    fn catch_up(&mut self, from: Option<Cursor>) -> BoxFuture<'_, Result<(), GatewayError>>;

    /// The next update; `Ok(None)` when the source has ended for good (a finite simulation).
    fn next_update(&mut self) -> BoxFuture<'_, Result<Option<SourceUpdate>, GatewayError>>;

    /// Everything up to `cursor` is durable downstream; the source may forget it.
    fn commit(&mut self, cursor: Cursor) -> BoxFuture<'_, Result<(), GatewayError>>;

    /// Messages of `chat` after `after_message_id` (oldest first, at most `limit`), for backfill.
    fn history(
        &mut self,
        chat: Chat,
        after_message_id: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Event>, GatewayError>>;
}

/// Makes the gateway of one account; the account actor calls it at every (re)start.
pub trait GatewayFactory: Send + Sync + 'static {
    fn create(&self, account_id: &str) -> Box<dyn Gateway>;

    /// Makes the gateway of an account this node runs as `owner` (the claim's epoch); a source
    /// whose stored state is written only by the owner (the grammers session) stamps its writes
    /// with it. Sources without such state are made by [`GatewayFactory::create`].
    fn create_owned(&self, account_id: &str, owner: &Owner) -> Box<dyn Gateway> {
        let _ = owner;
        self.create(account_id)
    }
}
