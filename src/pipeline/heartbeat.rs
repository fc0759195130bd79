//! `connector.heartbeat` to Switchboard: one per account endpoint every
//! `switchboard.heartbeat_interval`, with that account's own counters.
//!
//! Heartbeats are sent from detached tasks with the client's timeout, at most one round in
//! flight, so a slow or failing Switchboard never holds up ingestion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use uuid::Uuid;

use super::PipelineStats;
use crate::switchboard::{ConnectorState, McpClient, endpoint_identity, heartbeat};

/// What the heartbeat actor needs.
#[derive(Clone)]
pub struct HeartbeatArgs {
    pub client: McpClient,
    pub accounts: Vec<String>,
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
            for account in &args.accounts {
                let endpoint = endpoint_identity(&args.endpoint_template, account);
                let counters = args.stats.accounts.get(account);
                let beat = heartbeat(
                    &endpoint,
                    instance_id,
                    &counters,
                    uptime_s,
                    ConnectorState::Healthy,
                    None,
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
