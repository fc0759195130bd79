//! `connector.heartbeat` to Switchboard: one per account endpoint every
//! `switchboard.heartbeat_interval`, with that account's own counters and its real state.
//!
//! Who heartbeats is asked afresh every round from a [`Roster`] (the node's simulated accounts
//! and its registry accounts), so an account imported, consented, paused or revoked after
//! start-up is reported as it stands. Heartbeats are sent from detached tasks with the client's
//! timeout, at most one round in flight, so a slow or failing Switchboard never holds up
//! ingestion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use uuid::Uuid;

use super::PipelineStats;
use super::stats::LifecycleTally;
use crate::accounts::{AccountsControl, Lifecycle};
use crate::switchboard::{
    ConnectorState, HeartbeatCounters, McpClient, endpoint_identity, heartbeat,
};

/// One account to heartbeat for this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account_id: String,
    /// Where the account stands (turned into the heartbeat's state by [`reported_status`]).
    pub lifecycle: Lifecycle,
    /// The account side's counters (`source_api_calls`, `checkpoint_saves`); the delivery
    /// side's come from the pipeline's own counters.
    pub source: HeartbeatCounters,
}

/// Who heartbeats, and in which state; asked once per round.
pub trait Roster: Send + Sync {
    /// The accounts to report this round.
    fn members(&self) -> BoxFuture<'_, Vec<Member>>;
}

/// The node's roster: the simulated accounts the pipeline runs, and every consented registry
/// account (running, flood-waiting, paused or revoked).
pub struct NodeRoster {
    /// Simulated account ids (their actors track into `lifecycles`).
    pub simulated: Vec<String>,
    pub stats: Arc<PipelineStats>,
    pub accounts: Arc<AccountsControl>,
}

impl Roster for NodeRoster {
    fn members(&self) -> BoxFuture<'_, Vec<Member>> {
        Box::pin(async move {
            let mut members = simulated_members(&self.simulated, &self.stats);
            match self.accounts.reported_states().await {
                Ok(registry) => members.extend(registry),
                Err(e) => tracing::warn!(error = %e,
                    "cannot read the registry; this heartbeat round covers simulated accounts only"),
            }
            members
        })
    }
}

fn simulated_members(ids: &[String], stats: &PipelineStats) -> Vec<Member> {
    ids.iter()
        .map(|id| Member {
            account_id: id.clone(),
            lifecycle: lifecycle_or_connecting(&stats.lifecycles, id),
            source: stats.accounts.get(id),
        })
        .collect()
}

/// The tallied state; an account without an actor right now is between restarts.
fn lifecycle_or_connecting(tally: &LifecycleTally, id: &str) -> Lifecycle {
    tally.of(id).unwrap_or(Lifecycle::Connecting)
}

/// The connector state and error message a heartbeat reports for an account in `lifecycle`.
pub fn reported_status(lifecycle: &Lifecycle) -> (ConnectorState, Option<String>) {
    match lifecycle {
        Lifecycle::Running | Lifecycle::CatchingUp => (ConnectorState::Healthy, None),
        Lifecycle::FloodWait { until_us } => (
            ConnectorState::Degraded,
            Some(format!(
                "flood wait: Telegram asked to pause until {}",
                crate::accounts::control::fmt_us(Some(*until_us))
            )),
        ),
        Lifecycle::Paused => (
            ConnectorState::Degraded,
            Some("paused by an operator".to_string()),
        ),
        Lifecycle::Revoked { reason } => (
            ConnectorState::Error,
            Some(format!(
                "session revoked ({reason}); the account needs a new login or import"
            )),
        ),
        Lifecycle::Duplicated => (
            ConnectorState::Error,
            Some(
                "auth key used from two places at once (AUTH_KEY_DUPLICATED); the account needs a new login or import"
                    .to_string(),
            ),
        ),
        Lifecycle::Connecting => (
            ConnectorState::Degraded,
            Some("connecting to Telegram".to_string()),
        ),
        Lifecycle::PendingConsent | Lifecycle::AwaitingCode | Lifecycle::AwaitingPassword { .. } => (
            ConnectorState::Degraded,
            Some(format!("not ingesting: {}", lifecycle.name())),
        ),
        Lifecycle::Stopped => (
            ConnectorState::Error,
            Some("not running on this node".to_string()),
        ),
    }
}

/// What the heartbeat actor needs.
#[derive(Clone)]
pub struct HeartbeatArgs {
    pub client: McpClient,
    pub roster: Arc<dyn Roster>,
    pub endpoint_template: String,
    pub interval: Duration,
    pub stats: Arc<PipelineStats>,
}

/// Messages of the heartbeat actor.
pub enum HeartbeatMsg {
    /// Send one round (sent to itself every interval).
    Tick,
}

/// The heartbeat actor's state.
pub struct HeartbeatState {
    args: HeartbeatArgs,
    instance_id: Uuid,
    started: Instant,
    round_in_flight: Arc<AtomicBool>,
}

/// Sends heartbeats; a child of the node's supervisor.
#[derive(Clone, Copy, Default)]
pub struct HeartbeatActor;

impl Actor for HeartbeatActor {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        args: HeartbeatArgs,
    ) -> Result<HeartbeatState, ActorProcessingErr> {
        myself.cast(HeartbeatMsg::Tick)?;
        myself.send_interval(args.interval, || HeartbeatMsg::Tick);
        Ok(HeartbeatState {
            args,
            instance_id: Uuid::new_v4(),
            started: Instant::now(),
            round_in_flight: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<HeartbeatMsg>,
        _: HeartbeatMsg,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        if state.round_in_flight.swap(true, Ordering::AcqRel) {
            tracing::debug!("previous heartbeat round still running; skipping this one");
            return Ok(());
        }
        let (args, instance_id, uptime_s, busy) = (
            state.args.clone(),
            state.instance_id,
            state.started.elapsed().as_secs(),
            state.round_in_flight.clone(),
        );
        tokio::spawn(async move {
            for member in args.roster.members().await {
                let endpoint = endpoint_identity(&args.endpoint_template, &member.account_id);
                let delivered = args.stats.accounts.get(&member.account_id);
                let counters = HeartbeatCounters {
                    source_api_calls: member.source.source_api_calls,
                    checkpoint_saves: member.source.checkpoint_saves,
                    ..delivered
                };
                let (connector_state, error) = reported_status(&member.lifecycle);
                let beat = heartbeat(
                    &endpoint,
                    instance_id,
                    &counters,
                    uptime_s,
                    connector_state,
                    error.as_deref(),
                );
                match args.client.heartbeat(&beat).await {
                    Ok(()) => {
                        metrics::counter!("tgingest_heartbeats_total", "result" => "accepted")
                            .increment(1)
                    }
                    Err(e) => {
                        metrics::counter!("tgingest_heartbeats_total", "result" => "failed")
                            .increment(1);
                        tracing::debug!(error = %e, "heartbeat not accepted");
                    }
                }
            }
            busy.store(false, Ordering::Release);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_and_catching_up_accounts_report_healthy() {
        for lifecycle in crate::accounts::lifecycle::one_of_each() {
            let (state, message) = reported_status(&lifecycle);
            let healthy = matches!(lifecycle, Lifecycle::Running | Lifecycle::CatchingUp);
            assert_eq!(state == ConnectorState::Healthy, healthy, "{lifecycle:?}");
            // Every state but healthy says why, so Switchboard's registry is actionable.
            assert_eq!(message.is_none(), healthy, "{lifecycle:?}");
        }
        let (state, message) = reported_status(&Lifecycle::Revoked {
            reason: "SESSION_REVOKED".into(),
        });
        assert_eq!(state, ConnectorState::Error);
        assert!(message.unwrap_or_default().contains("SESSION_REVOKED"));
    }
}
