//! A nats-server killed with SIGKILL mid-stream: the node restarts it, every stage resumes, and
//! nothing is lost or stored twice, event by event against the simulator's ground truth.

mod support;

use std::time::{Duration, Instant};

use support::rig::{node_config, simulation};
use support::{children_of, eventually, process_alive, signal};
use tgingest::demo::expected_after_policy;
use tgingest::node::Node;
use tgingest::policy::Policy;
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::simulated::SimulatedWorld;

/// The embedded nats-server of this test process (the only child of that name).
fn embedded_nats_pid() -> Option<u32> {
    children_of(std::process::id())
        .into_iter()
        .find(|(_, comm)| comm == "nats-server")
        .map(|(pid, _)| pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_embedded_nats_server_loses_nothing_and_stores_nothing_twice() {
    tgingest::telemetry::install_crypto_provider();
    tgingest::telemetry::init_logging(tgingest::config::LogFormat::Human, "warn");
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    let dir = tempfile::tempdir().unwrap();
    let sim = simulation(3, 2500, 250.0, 12);
    let mut config = node_config("", &fake.mcp_url(), dir.path(), sim);
    config.nats.url = String::new(); // the embedded server, which the node restarts
    // Recovery must not hang on timeouts: a PubAck or pull batch lost with the old server is
    // given up at the reconnect, not when a request timeout runs out. With this one, waiting
    // for it would outlast the test's deadline below.
    config.nats.request_timeout = tgingest::config::Dur::secs(600);
    let policy = Policy::new(&config.policy).unwrap();
    let world = SimulatedWorld::new(config.simulator.clone()).unwrap();
    let expected: std::collections::HashSet<String> =
        expected_after_policy(&world, &policy, config.simulator.messages_per_account)
            .map(|e| e.event_id)
            .collect();

    let node = Node::start(config).await.expect("node");
    let port: u16 = node
        .nats_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the NATS url");
    node.start_pipeline().await.expect("pipeline");

    // Mid-stream: a tenth of the events stored, most still to come.
    let stored = || fake.stats().stored as usize;
    assert!(
        eventually(Duration::from_secs(60), || stored() >= expected.len() / 10).await,
        "the pipeline did not get going: {} stored",
        stored()
    );
    let old_pid = embedded_nats_pid().expect("the embedded nats-server runs");
    signal(old_pid, libc::SIGKILL);
    let killed_at = Instant::now();
    let before = stored();

    // The node notices and starts a new server on the same port.
    let back = eventually(Duration::from_secs(30), || {
        embedded_nats_pid().is_some_and(|pid| pid != old_pid)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(back, "the node did not restart its nats-server");
    let back_at = Instant::now();
    let stored_when_back = stored();
    assert!(
        eventually(Duration::from_secs(120), || stored() > stored_when_back).await,
        "nothing delivered after the server came back"
    );
    let resumed = back_at.elapsed();
    eprintln!(
        "nats-server SIGKILL: back after {:?}; first event delivered {:?} after that \
         (stored: {before} at the kill, {stored_when_back} when back, of {})",
        back_at - killed_at,
        resumed,
        expected.len()
    );

    assert!(
        eventually(Duration::from_secs(180), || fake
            .stored_event_ids()
            .is_superset(&expected))
        .await,
        "not every event arrived"
    );
    node.shutdown().await.expect("clean shutdown");
    assert!(!process_alive(old_pid));
    let got = fake.stored_event_ids();
    let lost = expected.difference(&got).count();
    let unexpected = got.difference(&expected).count();
    assert_eq!(lost, 0, "{lost} events lost");
    assert_eq!(
        unexpected, 0,
        "{unexpected} events the policy stops arrived"
    );
    assert_eq!(fake.stored_twice(), 0, "an event was stored twice");
    assert_eq!(fake.stats().stored as usize, expected.len());
}
