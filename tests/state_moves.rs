//! The state that moves with an account (issue 13, item 5): its source cursor is in
//! `TG_CHECKPOINTS`, readable by every node and written only by the account's current owner. A
//! stale owner's checkpoint write is refused and stops its account actor; a node whose data dir
//! was lost resumes from the store; a data dir from before the store still resumes from its own
//! event log. Against a real nats-server, with simulated accounts under a real node's supervisor.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::rig::{nats_and_switchboard, node_config, simulation};
use tgingest::bus::{Bus, STREAM_RAW};
use tgingest::cluster::checkpoints::CheckpointStore;
use tgingest::cluster::fenced::{FencedError, Owner};
use tgingest::config::{Config, NatsConfig};
use tgingest::eventlog::{AuditEntry, Checkpoint, RecordKind};
use tgingest::node::Node;
use tgingest::pipeline::account::{AUDIT_STALE_OWNER, AccountStatus, FloodSettings, SOURCE_SCOPE};
use tgingest::pipeline::{
    AccountParts, PipelineStats, account_actor_name, account_child_name, start_account,
};
use tgingest::supervision::{ChildState, stop_child};
use tgingest::telegram::gateway::Cursor;
use tgingest::telegram::simulated::{
    SimulatedFactory, SimulatedWorld, SimulatorConfig, SimulatorFaults,
};

/// Upper bound for any wait on observable state; generous because CI machines have 2 cores.
const WAIT: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Some`, failing the test after [`WAIT`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> F,
) -> T {
    support::eventually_some(what, WAIT, probe).await
}

/// A nats-server, the fake Switchboard and one simulated account, for nodes to run it on.
struct Setup {
    _nats: support::TestNats,
    _fake: tgingest::switchboard::FakeSwitchboard,
    dir: tempfile::TempDir,
    config: Config,
    world: Arc<SimulatedWorld>,
    factory: SimulatedFactory,
    account: String,
}

impl Setup {
    async fn new(sim: SimulatorConfig) -> Setup {
        let (nats, fake) = nats_and_switchboard().await;
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(&nats.url(), &fake.mcp_url(), dir.path(), sim.clone());
        let world = Arc::new(SimulatedWorld::new(sim).unwrap());
        let factory = SimulatedFactory::new(world.clone(), SimulatorFaults::new());
        let account = world.account_ids().next().expect("an account");
        Setup {
            _nats: nats,
            _fake: fake,
            dir,
            config,
            world,
            factory,
            account,
        }
    }
}

/// Starts `account`'s actor on `node` as the owner of `epoch`; returns its counters.
async fn run_account(
    node: &Node,
    factory: &SimulatedFactory,
    account: &str,
    epoch: u64,
) -> Arc<PipelineStats> {
    let stats = Arc::new(PipelineStats::default());
    let parts = AccountParts {
        node_id: node.node_id.clone(),
        factory: Arc::new(factory.clone()),
        bus: node.bus.clone(),
        eventlog: node.eventlog.clone(),
        stats: stats.clone(),
        flood: FloodSettings::default(),
        ended: None,
    };
    start_account(&node.supervisor, &parts, account, epoch)
        .await
        .expect("account started");
    stats
}

/// The account actor's observable state, or `None` if it is not running.
async fn status(node: &Node, account: &str) -> Option<AccountStatus> {
    support::rig::account_status(account_actor_name(&node.node_id, account)).await
}

/// Waits until the account's source has ended and everything it produced is committed.
async fn wait_finished(node: &Node, account: &str) -> AccountStatus {
    eventually(
        "the account's source ended and everything is committed",
        || status(node, account),
    )
    .await;
    eventually("everything committed", || async {
        status(node, account)
            .await
            .filter(|s| s.source_ended && s.in_flight == 0 && s.committed == s.acked)
    })
    .await
}

/// Events the source hands out from position `from` to the end (re-deliveries included).
fn produced_from(world: &SimulatedWorld, account: &str, from: u64) -> u64 {
    let index = world.account_index(account).expect("account");
    (from..world.config().messages_per_account)
        .map(|n| world.event_at(index, n).events.len() as u64)
        .sum()
}

/// Messages in `TG_RAW`.
async fn raw_messages(node: &Node) -> u64 {
    let mut stream = node.bus.js.get_stream(STREAM_RAW).await.expect("TG_RAW");
    stream.info().await.expect("TG_RAW info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owners_checkpoint_write_is_refused_once_a_newer_epoch_claimed_it() {
    let nats = support::TestNats::start();
    let bus = Bus::connect(&nats.url(), &NatsConfig::default(), "state-moves")
        .await
        .expect("connect");
    bus.setup(&Config::default()).await.expect("setup");
    let store = CheckpointStore::open(&bus).await.expect("TG_CHECKPOINTS");
    let (old, new) = (Owner::new(1, "node-a"), Owner::new(2, "node-b"));
    let cursor = |c: &str| Cursor(c.to_string());

    let (mut old_writer, resume) = store.claim("acct", &old, None).await.unwrap();
    assert_eq!(resume, None);
    old_writer.write(&cursor("10")).await.unwrap();

    // The new owner resumes from what the old one stored, not from its own node's log.
    let (mut new_writer, resume) = store.claim("acct", &new, Some(cursor("3"))).await.unwrap();
    assert_eq!(resume, Some(cursor("10")));

    // The old owner, still running, is refused before the new one has written anything...
    let err = old_writer.write(&cursor("15")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            FencedError::StaleOwner {
                mine: 1,
                stored: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer owner"), "{err}");
    // ... for good, and cannot take the record back.
    assert_eq!(old_writer.write(&cursor("16")).await.unwrap_err(), err);
    let err = store.claim("acct", &old, None).await.unwrap_err();
    assert!(matches!(err, FencedError::StaleOwner { .. }), "{err}");

    new_writer.write(&cursor("20")).await.unwrap();
    let stored = store.get("acct").await.unwrap().expect("a checkpoint");
    assert_eq!(
        (stored.cursor, stored.epoch, stored.node.as_str()),
        (Some(cursor("20")), 2, "node-b")
    );

    // With nothing stored yet, the claim takes the node's own latest checkpoint and stores it.
    let (_, resume) = store
        .claim("older-acct", &old, Some(cursor("7")))
        .await
        .unwrap();
    assert_eq!(resume, Some(cursor("7")));
    let stored = store.get("older-acct").await.unwrap().expect("stored");
    assert_eq!((stored.cursor, stored.epoch), (Some(cursor("7")), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_actor_stops_for_good_once_a_newer_owner_claimed_its_checkpoint() {
    // A source that runs for far longer than the test.
    let setup = Setup::new(simulation(1, 1_000_000, 200.0, 21)).await;
    let account = &setup.account;
    let node = Node::start(setup.config.clone()).await.expect("node");
    run_account(&node, &setup.factory, account, 1).await;
    eventually("a first checkpoint", || async {
        status(&node, account).await.and_then(|s| s.committed)
    })
    .await;

    // Another node takes the account over (epoch 2) while this one still runs it.
    let store = CheckpointStore::open(&node.bus).await.unwrap();
    let (_writer, taken_at) = store
        .claim(account, &Owner::new(2, "node-b"), None)
        .await
        .unwrap();
    assert!(taken_at.is_some());

    // Its next checkpoint is refused, and the actor stops without a restart.
    let reason = eventually("the account actor failed permanently", || async {
        let status = tgingest::supervision::status(&node.supervisor)
            .await
            .expect("supervisor status");
        match status.child(&account_child_name(account)).map(|c| &c.state) {
            Some(ChildState::FailedPermanently { reason }) => Some(reason.clone()),
            _ => None,
        }
    })
    .await;
    assert!(reason.contains("stale owner"), "{reason}");
    let stored = store.get(account).await.unwrap().expect("a checkpoint");
    assert_eq!(
        (stored.cursor, stored.epoch, stored.node.as_str()),
        (taken_at, 2, "node-b"),
        "the stale owner wrote nothing after the claim"
    );
    let audited = node
        .eventlog
        .records()
        .filter_map(Result::ok)
        .filter(|r| r.kind == RecordKind::Audit)
        .filter_map(|r| tgingest::codec::decode::<AuditEntry>(&r.body).ok())
        .any(|e| {
            e.action == AUDIT_STALE_OWNER && e.account_id.as_deref() == Some(account.as_str())
        });
    assert!(audited, "an account.stale_owner audit record");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_dir_was_lost_resumes_from_the_store_and_loses_or_repeats_nothing() {
    let setup = Setup::new(simulation(1, 1_500, 1_000.0, 22)).await;
    let (world, factory, account) = (&setup.world, &setup.factory, &setup.account);
    let end = world.config().messages_per_account;
    let mut config = setup.config.clone();

    // The first life of the node: stopped mid-stream, a few hundred positions in.
    let node = Node::start(config.clone()).await.expect("node");
    run_account(&node, factory, account, 0).await;
    eventually("a few hundred positions committed", || async {
        status(&node, account)
            .await
            .and_then(|s| s.committed)
            .filter(|c| c.parse::<u64>().is_ok_and(|n| n >= 300))
    })
    .await;
    stop_child(&node.supervisor, &account_child_name(account))
        .await
        .expect("account stopped");
    let left_at: u64 = node
        .eventlog
        .latest_checkpoint(account, SOURCE_SCOPE)
        .unwrap()
        .expect("a checkpoint")
        .position
        .parse()
        .unwrap();
    assert!(left_at < end, "stopped mid-stream");
    node.shutdown().await.expect("clean shutdown");

    // The node comes back with an empty data dir.
    config.node.data_dir = setup.dir.path().join("data-after-loss");
    let node = Node::start(config).await.expect("node, again");
    assert!(
        node.eventlog
            .latest_checkpoint(account, SOURCE_SCOPE)
            .unwrap()
            .is_none()
    );
    let stats = run_account(&node, factory, account, 0).await;
    let done = wait_finished(&node, account).await;
    assert_eq!(done.committed, Some(end.to_string()));

    // It read its source from where the account left off: nothing before that again...
    assert_eq!(
        stats.produced.get(),
        produced_from(world, account, left_at),
        "resumed from position {left_at}"
    );
    // ... and nothing lost: every event of the stream is in TG_RAW, once.
    let index = world.account_index(account).unwrap();
    assert_eq!(
        raw_messages(&node).await,
        world.expected(index, end).count() as u64
    );
    let store = CheckpointStore::open(&node.bus).await.unwrap();
    let stored = store.get(account).await.unwrap().expect("a checkpoint");
    assert_eq!(stored.cursor, Some(Cursor(end.to_string())));
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_before_the_store_resumes_from_its_own_event_log() {
    let setup = Setup::new(simulation(1, 400, 2_000.0, 23)).await;
    let (world, factory, account) = (&setup.world, &setup.factory, &setup.account);
    let node = Node::start(setup.config.clone()).await.expect("node");
    node.eventlog
        .checkpoint(&Checkpoint {
            account_id: account.clone(),
            scope: SOURCE_SCOPE.to_string(),
            position: "250".to_string(),
        })
        .await
        .unwrap();

    let stats = run_account(&node, factory, account, 0).await;
    wait_finished(&node, account).await;
    assert_eq!(stats.produced.get(), produced_from(world, account, 250));
    let store = CheckpointStore::open(&node.bus).await.unwrap();
    let stored = store.get(account).await.unwrap().expect("a checkpoint");
    assert_eq!(
        stored.cursor,
        Some(Cursor(world.config().messages_per_account.to_string()))
    );
    node.shutdown().await.expect("clean shutdown");
}
