//! The pipeline: account actors → `TG_RAW` → dedupe → scope filter and redaction → `TG_CLEAN` →
//! Switchboard delivery (in batch mode: `TG_CLEAN` → batcher → `TG_BATCH` → delivery, see
//! [`batcher`]). Each stage acknowledges upstream only after the step below it is
//! durable (invariant 1), and each has a bounded window (invariant 6). Every stage is a child of
//! the node's root supervisor. Operator replays from `TG_CLEAN` are in [`replay`]; what a change of
//! `switchboard.mode` leaves behind is handed over at start-up by [`mode_switch`].

pub mod account;
pub mod batcher;
pub mod clean;
pub mod delivery;
pub mod handoff;
pub mod heartbeat;
pub mod mode_switch;
pub mod replay;
pub mod seen;
pub mod shared_seen;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};

pub use stats::{PipelineStats, StatsSnapshot};

use self::account::{AccountActor, AccountArgs};
use self::batcher::{BatcherActor, BatcherArgs};
use self::clean::{DedupeActor, DedupeArgs, FilterActor, FilterArgs};
use self::delivery::{DeliveryActor, DeliveryArgs, DeliverySource};
use self::heartbeat::{HeartbeatActor, HeartbeatArgs};
use crate::bus::Bus;
use crate::config::DeliveryMode;
use crate::eventlog::EventLog;
use crate::policy::Policy;
use crate::supervision::{ChildSpec, Restart, SupervisorCallError, SupervisorMsg, start_child};
use crate::switchboard::McpClient;
use crate::telegram::gateway::GatewayFactory;

/// What the pipeline is built from, besides the node.
pub struct PipelineParts {
    /// Makes each account's gateway (simulated, or grammers).
    pub factory: Arc<dyn GatewayFactory>,
    /// Account ids to run on this node.
    pub accounts: Vec<String>,
    pub policy: Arc<Policy>,
    pub client: McpClient,
    /// Keep Switchboard's answer per event in [`PipelineStats::acknowledged`] (the demo's
    /// ground-truth comparison; it grows with every event, so off for a node).
    pub record_acknowledged: bool,
}

/// Events in flight per account before it stops pulling from its source.
pub const ACCOUNT_WINDOW: usize = 512;
/// Messages the dedupe stage pulls at once.
pub const DEDUPE_BATCH: usize = 512;

/// The parts of the node the pipeline runs in (borrowed from it, so the pipeline does not
/// depend on the node that starts it).
pub struct Host<'a> {
    pub node_id: &'a str,
    pub config: &'a crate::config::Config,
    pub bus: &'a Bus,
    pub eventlog: &'a Arc<EventLog>,
    /// The node's root supervisor: every stage is its child.
    pub supervisor: &'a ActorRef<SupervisorMsg>,
    /// The registry accounts (the heartbeat reports them).
    pub accounts: &'a Arc<crate::accounts::AccountsControl>,
}

/// Why the pipeline did not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Stage(#[from] SupervisorCallError),
    /// The delivery mode changed and what the other mode left cannot be handed over.
    #[error(transparent)]
    ModeSwitch(#[from] mode_switch::ModeSwitchError),
}

/// Starts every stage under the node's root supervisor; returns the shared counters. The
/// delivery stages start once what the other delivery mode left is handed over
/// ([`mode_switch`]).
pub async fn start(
    node: Host<'_>,
    parts: PipelineParts,
) -> Result<Arc<PipelineStats>, PipelineError> {
    let stats = Arc::new(PipelineStats {
        acknowledged: parts.record_acknowledged.then(stats::AckLedger::default),
        ..PipelineStats::default()
    });
    let sup = node.supervisor;

    let filter_name = format!("{}/filter", node.node_id);
    let filter_args = FilterArgs {
        policy: parts.policy,
        bus: node.bus.clone(),
        eventlog: node.eventlog.clone(),
        stats: stats.clone(),
        node_id: node.node_id.to_string(),
    };
    let registered = filter_name.clone();
    start_child(
        sup,
        ChildSpec::new("filter", "filter", Restart::Permanent, move |supervisor| {
            let (name, args) = (registered.clone(), filter_args.clone());
            async move {
                Ok(
                    Actor::spawn_linked(Some(name), FilterActor, args, supervisor)
                        .await?
                        .0
                        .get_cell(),
                )
            }
        }),
    )
    .await?;

    let dedupe = DedupeArgs {
        bus: node.bus.clone(),
        seen_dir: node.config.node.data_dir.join("dedupe"),
        horizon: node.config.dedupe.horizon.into(),
        filter_name,
        stats: stats.clone(),
        batch: DEDUPE_BATCH,
        shared: node.config.cluster.enabled,
    };
    start_child(
        sup,
        ChildSpec::actor("dedupe", "dedupe", Restart::Permanent, DedupeActor, dedupe),
    )
    .await?;

    let heartbeat_interval: Duration = node.config.switchboard.heartbeat_interval.into();
    // Always on (not only with simulated accounts): registry accounts imported or consented
    // later must heartbeat too, and the roster is asked afresh every round.
    if !heartbeat_interval.is_zero() {
        let roster = heartbeat::NodeRoster {
            simulated: parts.accounts.clone(),
            stats: stats.clone(),
            accounts: node.accounts.clone(),
        };
        let args = HeartbeatArgs {
            client: parts.client.clone(),
            roster: Arc::new(roster),
            endpoint_template: node.config.switchboard.endpoint_identity.clone(),
            interval: heartbeat_interval,
            stats: stats.clone(),
        };
        start_child(
            sup,
            ChildSpec::actor(
                "heartbeat",
                "heartbeat",
                Restart::Permanent,
                HeartbeatActor,
                args,
            ),
        )
        .await?;
    }

    let batches = node.config.switchboard.mode == DeliveryMode::ConversationBatches;
    let delivery = DeliveryArgs {
        bus: node.bus.clone(),
        client: parts.client,
        config: node.config.switchboard.clone(),
        eventlog: node.eventlog.clone(),
        stats: stats.clone(),
        node_id: node.node_id.to_string(),
        source: match batches {
            true => DeliverySource::EventsBesideBatches,
            false => DeliverySource::Events,
        },
    };
    mode_switch::hand_over(&DeliveryArgs {
        source: DeliverySource::Events,
        ..delivery.clone()
    })
    .await?;
    if batches {
        let batcher = BatcherArgs {
            bus: node.bus.clone(),
            config: node.config.switchboard.batches.clone(),
            stats: stats.clone(),
        };
        start_child(
            sup,
            ChildSpec::actor(
                "batcher",
                "batcher",
                Restart::Permanent,
                BatcherActor,
                batcher,
            ),
        )
        .await?;
        let batch_delivery = DeliveryArgs {
            source: DeliverySource::Batches,
            ..delivery.clone()
        };
        start_child(
            sup,
            ChildSpec::actor(
                "batch-delivery",
                "delivery",
                Restart::Permanent,
                DeliveryActor,
                batch_delivery,
            ),
        )
        .await?;
    }
    start_child(
        sup,
        ChildSpec::actor(
            "delivery",
            "delivery",
            Restart::Permanent,
            DeliveryActor,
            delivery,
        ),
    )
    .await?;

    let account_parts = AccountParts {
        node_id: node.node_id.to_string(),
        factory: parts.factory.clone(),
        bus: node.bus.clone(),
        eventlog: node.eventlog.clone(),
        stats: stats.clone(),
        flood: account::FloodSettings::from_config(&node.config.telegram),
        ended: None,
    };
    for account_id in parts.accounts {
        start_account(sup, &account_parts, &account_id, 0).await?;
    }
    Ok(stats)
}

/// What an account actor is built from, besides its account id.
#[derive(Clone)]
pub struct AccountParts {
    /// The node the actor runs on (part of its registered name).
    pub node_id: String,
    /// Makes the account's gateway (simulated, or grammers).
    pub factory: Arc<dyn GatewayFactory>,
    pub bus: Bus,
    pub eventlog: Arc<EventLog>,
    pub stats: Arc<PipelineStats>,
    /// How the account actors treat flood waits.
    pub flood: account::FloodSettings,
    /// Where an account whose session ended for good is recorded (the registry's mark).
    pub ended: Option<Arc<dyn account::EndedSink>>,
}

/// The supervisor's child name of an account's actor (the id is hashed, as in logs).
pub fn account_child_name(account_id: &str) -> String {
    format!("account/{}", crate::telemetry::hash_id(account_id))
}

/// The name an account's actor is registered under, for `ActorRef::where_is`.
pub fn account_actor_name(node_id: &str, account_id: &str) -> String {
    format!("{node_id}/{}", account_child_name(account_id))
}

/// Starts one account actor under `sup` (transient: restarted after failures, not after a clean
/// stop); it is registered as [`account_actor_name`] so its status can be asked for. `epoch` is
/// the owner's epoch (the account claim's; 0 on a single node): the actor's state writes carry it.
pub async fn start_account(
    sup: &ActorRef<SupervisorMsg>,
    parts: &AccountParts,
    account_id: &str,
    epoch: u64,
) -> Result<(), SupervisorCallError> {
    let args = AccountArgs {
        account_id: account_id.to_string(),
        node_id: parts.node_id.clone(),
        factory: parts.factory.clone(),
        bus: parts.bus.clone(),
        eventlog: parts.eventlog.clone(),
        stats: parts.stats.clone(),
        window: ACCOUNT_WINDOW,
        checkpoint_every: Duration::from_secs(1),
        checkpoint_after_events: ACCOUNT_WINDOW as u64,
        flood: parts.flood,
        epoch,
        ended: parts.ended.clone(),
    };
    let registered = account_actor_name(&parts.node_id, account_id);
    start_child(
        sup,
        ChildSpec::new(
            account_child_name(account_id),
            "account",
            Restart::Transient,
            move |supervisor| {
                let (name, args) = (registered.clone(), args.clone());
                async move {
                    Ok(
                        Actor::spawn_linked(Some(name), AccountActor, args, supervisor)
                            .await?
                            .0
                            .get_cell(),
                    )
                }
            },
        ),
    )
    .await
}
