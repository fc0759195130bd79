//! The account actor's lifecycle against a real nats-server and the real pipeline, with faults
//! injected into the simulated source: flood waits park an account (or are waited out in place)
//! without stopping the others and without a crash; revoked and duplicated sessions stop for
//! good; network errors restart. Everything acknowledged before a fault arrives exactly once.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use support::TestNats;
use support::eventually_some as eventually;
use support::rig::{nats_and_switchboard, node_config, simulation};
use tgingest::accounts::Lifecycle;
use tgingest::config::Config;
use tgingest::event::{Event, now_us};
use tgingest::eventlog::{AuditEntry, RecordKind};
use tgingest::node::Node;
use tgingest::pipeline::account::{
    AUDIT_DUPLICATED, AUDIT_FLOOD_WAIT, AUDIT_REVOKED, AccountActor, AccountArgs, AccountStatus,
    FloodSettings, SOURCE_SCOPE,
};
use tgingest::pipeline::{ACCOUNT_WINDOW, PipelineParts, PipelineStats};
use tgingest::policy::{Decision, Policy};
use tgingest::supervision::{ChildSpec, ChildState, ChildStatus, Restart, start_child};
use tgingest::switchboard::{FakeSwitchboard, McpClient};
use tgingest::telegram::simulated::{
    CallRecord, Fault, FaultCall, SimulatedFactory, SimulatedWorld, SimulatorConfig,
    SimulatorFaults,
};

/// Waits up to this threshold are waited out in place; PEER_FLOOD parks this long.
const FLOOD: FloodSettings = FloodSettings {
    sleep_max: Duration::from_secs(3),
    peer_flood_park: Duration::from_secs(4),
};
const WAIT: Duration = Duration::from_secs(60);

/// A node running the pipeline with simulated accounts whose faults the test controls, each
/// account actor registered under a name so the test can ask it for its status.
struct States {
    node: Option<Node>,
    stats: Arc<PipelineStats>,
    fake: FakeSwitchboard,
    world: Arc<SimulatedWorld>,
    faults: SimulatorFaults,
    policy: Policy,
    config: Config,
    /// Account id → registered actor name.
    registered: HashMap<String, String>,
    _nats: TestNats,
    _dir: tempfile::TempDir,
}

impl States {
    async fn start(sim: SimulatorConfig, before: impl FnOnce(&SimulatorFaults, &[String])) -> Self {
        let (nats, fake) = nats_and_switchboard().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = node_config(&nats.url(), &fake.mcp_url(), dir.path(), sim);
        let policy = Policy::new(&config.policy).expect("policy");
        let world = Arc::new(SimulatedWorld::new(config.simulator.clone()).expect("world"));
        let faults = SimulatorFaults::new();
        let factory = SimulatedFactory::new(world.clone(), faults.clone());
        let accounts: Vec<String> = world.account_ids().collect();
        before(&faults, &accounts);

        let node = Node::start(config.clone()).await.expect("node");
        // The stages below the accounts, as the node starts them...
        let stats = tgingest::pipeline::start(
            node.host(),
            PipelineParts {
                factory: Arc::new(factory.clone()),
                accounts: Vec::new(),
                policy: Arc::new(Policy::new(&config.policy).expect("policy")),
                client: McpClient::new(&config.switchboard).expect("client"),
                record_acknowledged: false,
            },
        )
        .await
        .expect("pipeline");
        // ... and the accounts as `pipeline::start` adds them, but registered by name.
        let mut registered = HashMap::new();
        for account_id in &accounts {
            let args = AccountArgs {
                account_id: account_id.clone(),
                node_id: node.node_id.clone(),
                factory: Arc::new(factory.clone()),
                bus: node.bus.clone(),
                eventlog: node.eventlog.clone(),
                stats: stats.clone(),
                window: ACCOUNT_WINDOW,
                checkpoint_every: Duration::from_secs(1),
                checkpoint_after_events: ACCOUNT_WINDOW as u64,
                flood: FLOOD,
                epoch: 0,
                ended: None,
            };
            let name = format!("{}/account/{account_id}", node.node_id);
            let registered_name = name.clone();
            let spec = ChildSpec::new(
                child_name(account_id),
                "account",
                Restart::Transient,
                move |supervisor| {
                    let (name, args) = (registered_name.clone(), args.clone());
                    async move {
                        Ok(
                            Actor::spawn_linked(Some(name), AccountActor, args, supervisor)
                                .await?
                                .0
                                .get_cell(),
                        )
                    }
                },
            );
            start_child(&node.supervisor, spec)
                .await
                .expect("account started");
            registered.insert(account_id.clone(), name);
        }
        States {
            node: Some(node),
            stats,
            fake,
            world,
            faults,
            policy,
            config,
            registered,
            _nats: nats,
            _dir: dir,
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    fn accounts(&self) -> Vec<String> {
        self.world.account_ids().collect()
    }

    /// The account actor's observable state, or `None` if it is not running.
    async fn status(&self, account_id: &str) -> Option<AccountStatus> {
        support::rig::account_status(self.registered[account_id].clone()).await
    }

    /// The supervisor's view of the account's actor.
    async fn child(&self, account_id: &str) -> ChildStatus {
        tgingest::supervision::status(&self.node().supervisor)
            .await
            .expect("supervisor status")
            .child(&child_name(account_id))
            .cloned()
            .expect("account child")
    }

    /// Audit records of `action` about `account_id`.
    fn audits(&self, action: &str, account_id: &str) -> Vec<AuditEntry> {
        self.node()
            .eventlog
            .records()
            .filter_map(Result::ok)
            .filter(|r| r.kind == RecordKind::Audit)
            .filter_map(|r| tgingest::codec::decode::<AuditEntry>(&r.body).ok())
            .filter(|e| e.action == action && e.account_id.as_deref() == Some(account_id))
            .collect()
    }

    /// The source position checkpointed for `account_id` (everything before it was acked).
    fn checkpointed(&self, account_id: &str) -> u64 {
        self.node()
            .eventlog
            .latest_checkpoint(account_id, SOURCE_SCOPE)
            .expect("checkpoint index")
            .map_or(0, |cp| cp.position.parse().expect("a simulated cursor"))
    }

    /// What must arrive from positions `0..upto` of `account_id`, after the policy.
    fn expected_of(&self, account_id: &str, upto: u64) -> HashMap<String, Event> {
        let index = self.world.account_index(account_id).expect("account");
        self.world
            .expected(index, upto)
            .filter_map(|e| match self.policy.decide_owned(e) {
                Decision::Keep { event, .. } => Some((event.event_id.clone(), event)),
                Decision::Drop { .. } => None,
            })
            .collect()
    }

    /// What must arrive from every account's whole stream.
    fn expected(&self) -> HashMap<String, Event> {
        let upto = self.config.simulator.messages_per_account;
        self.accounts()
            .iter()
            .flat_map(|a| self.expected_of(a, upto))
            .collect()
    }

    /// Event ids the fake Switchboard stored, with how often each was stored.
    fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for accepted in self.fake.accepted() {
            let id = accepted.envelope["payload"]["raw"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *out.entry(id).or_default() += 1;
        }
        out
    }

    /// Waits until every event of `expected` is stored, then checks none is stored twice and
    /// nothing outside `all` arrived.
    async fn assert_delivered_once(
        &self,
        expected: &HashMap<String, Event>,
        all: &HashMap<String, Event>,
    ) {
        eventually("everything delivered", WAIT, || async {
            let delivered = self.delivered();
            expected
                .keys()
                .all(|id| delivered.contains_key(id))
                .then_some(())
        })
        .await;
        // Give re-sends a moment to show up, then compare.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let delivered = self.delivered();
        assert_eq!(
            self.fake.stored_twice(),
            0,
            "Switchboard stored an event twice"
        );
        assert!(delivered.values().all(|n| *n == 1), "delivered twice");
        let unexpected = delivered.keys().filter(|id| !all.contains_key(*id)).count();
        assert_eq!(unexpected, 0, "events arrived that should not have");
    }

    async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

fn child_name(account_id: &str) -> String {
    format!("account/{}", tgingest::telemetry::hash_id(account_id))
}

/// Waits until `account_id` has published and had acknowledged at least one update.
async fn wait_some_acked(s: &States, account_id: &str) {
    eventually("the first PubAcks", WAIT, || async {
        s.status(account_id)
            .await
            .filter(|st| st.acked.is_some() && st.last_event_us.is_some())
            .map(|_| ())
    })
    .await;
}

/// When the reads (`next_update` calls) after the one that the injected fault failed were made.
fn reads_after_the_fault(calls: &[CallRecord]) -> Vec<i64> {
    let reads: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| c.call == FaultCall::NextUpdate)
        .collect();
    let faulted = reads
        .iter()
        .position(|c| c.faulted)
        .expect("the fault fired on a read");
    reads[faulted + 1..].iter().map(|c| c.at_us).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_flood_wait_parks_one_account_while_the_others_flow_then_resumes_by_itself() {
    let mut s = States::start(simulation(2, 500, 80.0, 41), |_, _| {}).await;
    let accounts = s.accounts();
    let (parked, other) = (&accounts[0], &accounts[1]);
    wait_some_acked(&s, parked).await;

    let seconds = 6;
    s.faults.record_calls(parked);
    let injected_us = now_us();
    s.faults.inject(
        Some(parked),
        FaultCall::NextUpdate,
        Fault::FloodWait { seconds },
    );
    let until_us = eventually("the account to park", WAIT, || async {
        match s.status(parked).await?.lifecycle {
            Lifecycle::FloodWait { until_us } => Some(until_us),
            _ => None,
        }
    })
    .await;
    let parked_seen_us = now_us();
    let wait_us = seconds as i64 * 1_000_000;
    assert!(
        until_us >= injected_us + wait_us && until_us <= parked_seen_us + wait_us,
        "until {until_us} is not {seconds}s after the fault"
    );
    // Parked, it still answers (Status goes through the same mailbox as the PubAcks).
    let status = s.status(parked).await.expect("a parked account answers");
    assert_eq!(status.flood_wait_until_us, Some(until_us));
    assert_eq!(status.lifecycle.name(), "flood_wait");

    // PubAcks and checkpoints go on while parked: what was read before gets committed.
    eventually("the checkpoint to catch up while parked", WAIT, || async {
        let st = s.status(parked).await?;
        assert_eq!(st.lifecycle.name(), "flood_wait", "resumed too early");
        (st.in_flight == 0 && st.acked.is_some() && st.committed == st.acked).then_some(())
    })
    .await;

    let audits = s.audits(AUDIT_FLOOD_WAIT, parked);
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0].details["seconds"], seconds.to_string());
    assert_eq!(audits[0].details["until_us"], until_us.to_string());
    assert_eq!(audits[0].details["kind"], "flood_wait");
    assert_eq!(s.stats.lifecycles.counts()["flood_wait"], 1);

    // The other account keeps flowing meanwhile.
    let other_before = s.status(other).await.expect("other").acked;
    eventually("the other account to progress", WAIT, || async {
        let now = s.status(other).await?;
        (now.acked != other_before || now.source_ended).then_some(())
    })
    .await;

    // It resumes by itself, not before `until`, without a restart.
    eventually("the account to resume", WAIT, || async {
        let st = s.status(parked).await?;
        (st.lifecycle.name() != "flood_wait").then_some(())
    })
    .await;
    assert!(now_us() >= until_us, "resumed before the wait was over");
    // The parked one read nothing while parked: its next read after the one that failed with
    // the flood wait came at `until` or later (read from the source's own record of its calls,
    // so this holds whenever the test gets to look).
    eventually("a read after resuming", WAIT, || async {
        let reads = reads_after_the_fault(&s.faults.calls(parked));
        (!reads.is_empty()).then_some(())
    })
    .await;
    let reads = reads_after_the_fault(&s.faults.calls(parked));
    assert!(
        reads[0] >= until_us,
        "a parked account read on: a read {} µs before the wait was over",
        until_us - reads[0]
    );
    let child = s.child(parked).await;
    assert_eq!(child.state, ChildState::Running);
    assert_eq!(child.restarts, 0);

    let expected = s.expected();
    s.assert_delivered_once(&expected, &expected).await;
    assert_eq!(s.stats.flood_waits.get(), 1);
    assert_eq!(s.stats.flood_wait_seconds.get(), seconds);
    assert_eq!(s.stats.lifecycles.counts()["flood_wait"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_flood_wait_is_waited_out_in_place_without_a_state_change() {
    let mut s = States::start(simulation(1, 400, 80.0, 43), |_, _| {}).await;
    let account = &s.accounts()[0];
    wait_some_acked(&s, account).await;
    // As long as a wait can be and still be waited out in place.
    let seconds = FLOOD.sleep_max.as_secs();
    s.faults.inject(
        Some(account),
        FaultCall::NextUpdate,
        Fault::FloodWait { seconds },
    );
    // While the wait is on, the account says when it ends but stays in its state.
    let status = eventually("the short wait", WAIT, || async {
        s.status(account)
            .await
            .filter(|st| st.flood_wait_until_us.is_some())
    })
    .await;
    assert!(
        matches!(status.lifecycle, Lifecycle::Running | Lifecycle::CatchingUp),
        "{:?}",
        status.lifecycle
    );
    let expected = s.expected();
    s.assert_delivered_once(&expected, &expected).await;
    assert!(s.audits(AUDIT_FLOOD_WAIT, account).is_empty());
    assert_eq!(s.stats.flood_waits.get(), 1);
    let child = s.child(account).await;
    assert_eq!((child.state, child.restarts), (ChildState::Running, 0));
    let status = s.status(account).await.expect("status");
    assert_eq!(status.lifecycle, Lifecycle::Running);
    assert_eq!(status.flood_wait_until_us, None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_flood_while_connecting_parks_for_the_configured_time_then_connects() {
    let started_us = now_us();
    let mut s = States::start(simulation(1, 200, 100.0, 45), |faults, accounts| {
        faults.inject(Some(&accounts[0]), FaultCall::Connect, Fault::PeerFlood);
    })
    .await;
    let account = &s.accounts()[0];
    let until_us = eventually("the account to park", WAIT, || async {
        match s.status(account).await?.lifecycle {
            Lifecycle::FloodWait { until_us } => Some(until_us),
            _ => None,
        }
    })
    .await;
    let park_us = FLOOD.peer_flood_park.as_micros() as i64;
    assert!(until_us >= started_us + park_us && until_us <= now_us() + park_us);
    let audits = s.audits(AUDIT_FLOOD_WAIT, account);
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].details["kind"], "peer_flood");

    let expected = s.expected();
    s.assert_delivered_once(&expected, &expected).await;
    assert!(now_us() >= until_us);
    let child = s.child(account).await;
    assert_eq!((child.state, child.restarts), (ChildState::Running, 0));
    assert_eq!(s.stats.flood_waits.get(), 1);
    s.stop().await;
}

/// A terminal fault mid-stream: the state, the audit record, no restart, and everything acked
/// before it delivered exactly once.
async fn terminal(fault: Fault, state: &str, action: &str, rpc: &str) {
    let mut s = States::start(simulation(2, 2000, 100.0, 47), |_, _| {}).await;
    let accounts = s.accounts();
    let (account, other) = (&accounts[0], &accounts[1]);
    wait_some_acked(&s, account).await;
    s.faults
        .inject(Some(account), FaultCall::NextUpdate, fault.clone());

    let reason = eventually("the child to fail for good", WAIT, || async {
        match s.child(account).await.state {
            ChildState::FailedPermanently { reason } => Some(reason),
            _ => None,
        }
    })
    .await;
    assert!(reason.contains(state), "{reason}");
    let lifecycle = s.stats.lifecycles.of(account).expect("still tallied");
    assert_eq!(lifecycle.name(), state);
    assert!(lifecycle.is_terminal());
    assert_eq!(s.stats.lifecycles.counts()[state], 1);
    let audits = s.audits(action, account);
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert!(audits[0].details["rpc"].contains(rpc), "{audits:?}");

    // Well past the restart backoff, it is still not restarted.
    let backoff: Duration = s.config.supervision.backoff_initial.into();
    tokio::time::sleep(backoff * 3).await;
    let child = s.child(account).await;
    assert!(
        matches!(child.state, ChildState::FailedPermanently { .. }),
        "{child:?}"
    );
    assert_eq!(child.restarts, 0);
    assert!(s.status(account).await.is_none(), "the actor is gone");
    // The other account is unaffected.
    assert_eq!(s.child(other).await.state, ChildState::Running);

    // Everything acknowledged (checkpointed) before the fault arrives exactly once; nothing
    // else of this account's stream beyond what was read can arrive.
    let upto = s.checkpointed(account);
    assert!(upto > 0, "nothing was checkpointed before the fault");
    let acked = s.expected_of(account, upto);
    let all = s.expected();
    s.assert_delivered_once(&acked, &all).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_stops_for_good_and_keeps_what_was_acked() {
    terminal(Fault::Revoked, "revoked", AUDIT_REVOKED, "SESSION_REVOKED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_auth_key_stops_for_good_and_keeps_what_was_acked() {
    terminal(
        Fault::Duplicated,
        "duplicated",
        AUDIT_DUPLICATED,
        "AUTH_KEY_DUPLICATED",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_error_restarts_the_account_and_loses_nothing() {
    let mut s = States::start(simulation(2, 500, 100.0, 49), |_, _| {}).await;
    let accounts = s.accounts();
    let account = &accounts[0];
    wait_some_acked(&s, account).await;
    s.faults
        .inject(Some(account), FaultCall::NextUpdate, Fault::Network);
    eventually("a restart", WAIT, || async {
        let child = s.child(account).await;
        (child.restarts >= 1 && child.state == ChildState::Running).then_some(())
    })
    .await;
    assert!(s.stats.reconnects.get() >= 1);
    // The new actor catches up from the checkpoint and goes live again.
    eventually("the restarted account to run", WAIT, || async {
        (s.status(account).await?.lifecycle == Lifecycle::Running).then_some(())
    })
    .await;
    let expected = s.expected();
    s.assert_delivered_once(&expected, &expected).await;
    // The tally holds each account once, however often it restarted.
    let counts = s.stats.lifecycles.counts();
    assert_eq!(
        counts.values().sum::<u64>(),
        accounts.len() as u64,
        "{counts:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_while_connecting_is_terminal_too() {
    let mut s = States::start(simulation(1, 100, 100.0, 51), |faults, accounts| {
        faults.inject(Some(&accounts[0]), FaultCall::Connect, Fault::Revoked);
    })
    .await;
    let account = &s.accounts()[0];
    eventually("the child to fail for good", WAIT, || async {
        matches!(
            s.child(account).await.state,
            ChildState::FailedPermanently { .. }
        )
        .then_some(())
    })
    .await;
    assert_eq!(s.audits(AUDIT_REVOKED, account).len(), 1);
    let backoff: Duration = s.config.supervision.backoff_initial.into();
    tokio::time::sleep(backoff * 3).await;
    let child = s.child(account).await;
    assert!(matches!(child.state, ChildState::FailedPermanently { .. }));
    assert_eq!(child.restarts, 0);
    assert!(s.delivered().is_empty());
    assert_eq!(s.stats.lifecycles.counts()["revoked"], 1);
    s.stop().await;
}
