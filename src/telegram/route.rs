//! How an account's Telegram connections reach the network: directly (one node, nothing else
//! can own the account), or only through the pass the cluster's fence gate issued for it.
//!
//! In a cluster a client must never dial Telegram itself: the gate is what stops its frames the
//! moment the node's claim on the account or its lease is gone. So a gated route with no pass
//! for an account refuses to connect rather than falling back to a direct connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The route of every Telegram connection of a node.
#[derive(Clone, Debug, Default)]
pub enum ConnectRoute {
    /// Straight to Telegram (a node that is not part of a cluster).
    #[default]
    Direct,
    /// Through the proxy URL of the account's current gate pass, or not at all.
    Gated(GatePasses),
}

/// The proxy URL of each account's current gate pass on this node.
#[derive(Clone, Default)]
pub struct GatePasses {
    passes: Arc<Mutex<HashMap<String, String>>>,
}

impl GatePasses {
    /// Records the pass `account`'s next connections must use (replacing an older one).
    pub fn grant(&self, account: &str, proxy_url: String) {
        self.lock().insert(account.to_string(), proxy_url);
    }

    /// Forgets `account`'s pass: its next connection attempt is refused here.
    pub fn revoke(&self, account: &str) {
        self.lock().remove(account);
    }

    /// The proxy URL `account` must connect through, if it holds a pass.
    pub fn get(&self, account: &str) -> Option<String> {
        self.lock().get(account).cloned()
    }

    /// How many accounts hold a pass.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no account holds a pass.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // Plain data: a panic elsewhere cannot leave it half-updated.
        self.passes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shows how many passes there are, never their URLs (each carries its claim's secret).
impl std::fmt::Debug for GatePasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatePasses")
            .field("passes", &self.len())
            .finish()
    }
}

/// Why an account may not connect on this route.
#[derive(Debug, thiserror::Error)]
#[error(
    "account {account} holds no gate pass on this node (it is not owned here, or its claim was let go); refusing to connect to Telegram"
)]
pub struct NoPass {
    /// The account, hashed as in logs.
    pub account: String,
}

impl ConnectRoute {
    /// The proxy to connect `account` through: `None` for a direct connection.
    pub fn proxy_for(&self, account: &str) -> Result<Option<String>, NoPass> {
        match self {
            ConnectRoute::Direct => Ok(None),
            ConnectRoute::Gated(passes) => passes.get(account).map(Some).ok_or_else(|| NoPass {
                account: crate::telemetry::hash_id(account),
            }),
        }
    }
}
