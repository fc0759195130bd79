//! The [`AccountRunner`] of a real node: the registry's accounts, started and stopped through
//! [`AccountsControl`], each connecting to Telegram only through the gate pass of its claim.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::assign::ranking;
use super::controller::AccountRunner;
use crate::accounts::AccountsControl;
use crate::telegram::route::GatePasses;

/// Runs the accounts the controller claimed for this node.
pub struct NodeAccounts {
    control: Arc<AccountsControl>,
    passes: GatePasses,
}

impl NodeAccounts {
    /// Accounts of `control`, whose grammers clients read their proxy from `passes`.
    pub fn new(control: Arc<AccountsControl>, passes: GatePasses) -> Self {
        NodeAccounts { control, passes }
    }
}

impl AccountRunner for NodeAccounts {
    fn wanted<'a>(&'a self, live: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            let nodes: Vec<&str> = live.iter().map(String::as_str).collect();
            let me = self.control.node_id();
            let speaks_for = |account: &str| ranking(account, &nodes).first() == Some(&me);
            self.control
                .wanted(&speaks_for)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn start(&self, account: &str, proxy: String, epoch: u64) -> BoxFuture<'_, Result<(), String>> {
        let account = account.to_string();
        Box::pin(async move {
            // The pass first: the client's first connection already goes through the gate.
            self.passes.grant(&account, proxy);
            tracing::info!(account = %crate::telemetry::hash_id(&account), epoch, "starting an account claimed here");
            match self.control.start_owned(&account, epoch).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    self.passes.revoke(&account);
                    Err(e.to_string())
                }
            }
        })
    }

    fn stop(&self, account: &str) -> BoxFuture<'_, ()> {
        let account = account.to_string();
        Box::pin(async move {
            if let Err(e) = self.control.stop_owned(&account).await {
                tracing::warn!(account = %crate::telemetry::hash_id(&account), error = %e,
                    "cannot stop an account cleanly; its gate pass is closed anyway");
            }
            self.passes.revoke(&account);
        })
    }
}
