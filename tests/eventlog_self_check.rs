//! The node verifies its own event log in the background, so `tgingest_eventlog_verify_ok` (and
//! its alert) means something in production, not only after `audit verify` or the demo.
//!
//! Its own test binary: the gauge is process-wide, and other tests verify logs themselves.

mod support;

use std::time::Duration;

use support::rig::{node_config, simulation};
use support::{TestNats, eventually};
use tgingest::bus::BUCKET_ANCHORS;
use tgingest::config::Dur;
use tgingest::node::{AnchorRecord, Node, latest_anchor};

/// The gauge's value as the Prometheus endpoint would show it, if it was set.
fn verify_gauge() -> Option<f64> {
    let text = tgingest::observability::handle()?.render();
    text.lines()
        .find_map(|line| line.strip_prefix("tgingest_eventlog_verify_ok "))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_verifies_its_log_in_the_background_and_catches_an_anchor_it_lost() {
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config(
        &nats.url(),
        "http://127.0.0.1:9/mcp",
        dir.path(),
        simulation(0, 0, 1.0, 1),
    );
    config.eventlog.verify_interval = Dur::secs(1);
    config.eventlog.anchor_interval = Dur::secs(3600); // only the anchor at start-up
    let node = Node::start(config.clone()).await.expect("node");

    assert!(
        eventually(Duration::from_secs(30), || verify_gauge() == Some(1.0)).await,
        "the node never verified its log: gauge {:?}",
        verify_gauge()
    );

    // Records appended since are verified too, and against the anchor in JetStream: one that
    // the local log does not hold (a rewritten log, as far as the node can tell) turns it to 0.
    let mut anchored = None;
    for _ in 0..500 {
        anchored = latest_anchor(&node.bus, &node.node_id).await.unwrap();
        if anchored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let anchored = anchored.expect("the start-up anchor");
    let forged = AnchorRecord {
        hash: "00".repeat(32),
        ..anchored
    };
    let kv = node.bus.js.get_key_value(BUCKET_ANCHORS).await.unwrap();
    kv.put(&node.node_id, serde_json::to_vec(&forged).unwrap().into())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || verify_gauge() == Some(0.0)).await,
        "a log that lost its anchor still reads as verified"
    );
    node.shutdown().await.expect("clean shutdown");
}
