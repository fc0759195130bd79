//! Switchboard heartbeats for registry accounts (the ones `tgingest run` ingests from): every
//! consented account heartbeats, including accounts imported and consented after start-up, and
//! each reports its real state — running, parked by a flood wait, revoked, paused — while an
//! account without consent is not reported at all.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::rig::{nats_and_switchboard, node_config};
use tgingest::accounts::ImportFormat;
use tgingest::accounts::login::Sensitive;
use tgingest::config::Dur;
use tgingest::node::{Node, NodeOptions};
use tgingest::switchboard::{FakeSwitchboard, endpoint_identity};
use tgingest::telegram::simulated::{
    Fault, FaultCall, SimulatedFactory, SimulatedWorld, SimulatorConfig, SimulatorFaults,
};

const RUNNING: &str = "1000000";
const FLOODED: &str = "1000001";
const REVOKED: &str = "1000002";
const PAUSED: &str = "1000003";
/// Imported, never consented.
const NO_CONSENT: &str = "1000004";

/// The newest heartbeat of each endpoint: (state, error message).
fn latest(fake: &FakeSwitchboard) -> HashMap<String, (String, String)> {
    let text = |beat: &Value, at: &str| {
        beat.pointer(at)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    fake.heartbeats()
        .iter()
        .map(|beat| {
            (
                text(beat, "/connector/endpoint_identity"),
                (
                    text(beat, "/status/state"),
                    text(beat, "/status/error_message"),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consented_registry_account_heartbeats_its_real_state() {
    let (nats, fake) = nats_and_switchboard().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // No simulated accounts in the pipeline: only registry accounts, all added after start-up.
    let mut config = node_config(
        &nats.url(),
        &fake.mcp_url(),
        dir.path(),
        SimulatorConfig::default(),
    );
    // Far below the production minimum, so the test sees several rounds quickly.
    config.switchboard.heartbeat_interval = Dur(Duration::from_millis(300));
    let world = SimulatedWorld::new(SimulatorConfig {
        accounts: 5,
        rate: 50.0,
        ..SimulatorConfig::default()
    })
    .expect("world");
    let faults = SimulatorFaults::new();
    faults.inject(
        Some(FLOODED),
        FaultCall::Connect,
        Fault::FloodWait { seconds: 3600 },
    );
    faults.inject(Some(REVOKED), FaultCall::Connect, Fault::Revoked);
    let node = Node::start_with(
        config.clone(),
        NodeOptions {
            gateway_factory: Some(Arc::new(SimulatedFactory::new(
                Arc::new(world),
                faults.clone(),
            ))),
            login_backend: None,
            ..NodeOptions::default()
        },
    )
    .await
    .expect("node starts");
    let stats = node.start_pipeline().await.expect("pipeline");

    let addr = "149.154.167.51:443".parse().expect("addr");
    for (i, id) in [RUNNING, FLOODED, REVOKED, PAUSED, NO_CONSENT]
        .into_iter()
        .enumerate()
    {
        let session = tgingest::demo::telethon_session_string(2, addr, &[i as u8 + 1; 256]);
        node.accounts
            .import(
                ImportFormat::Telethon,
                &Sensitive::new(session),
                Some(id),
                None,
                "test",
            )
            .await
            .expect("import");
        if id != NO_CONSENT {
            node.accounts
                .consent(id, "the test", "heartbeat states", "test")
                .await
                .expect("consent");
        }
    }
    node.accounts.pause(PAUSED, "test").await.expect("pause");

    let endpoint = |id: &str| endpoint_identity(&config.switchboard.endpoint_identity, id);
    let wanted = |beats: &HashMap<String, (String, String)>| {
        let is = |id: &str, state: &str, says: &str| {
            beats
                .get(&endpoint(id))
                .is_some_and(|(s, message)| s == state && message.contains(says))
        };
        is(RUNNING, "healthy", "")
            && is(FLOODED, "degraded", "flood wait")
            && is(REVOKED, "error", "SESSION_REVOKED")
            && is(PAUSED, "degraded", "paused")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wanted(&latest(&fake)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let beats = latest(&fake);
    assert!(wanted(&beats), "{beats:#?}");
    assert!(
        !beats.contains_key(&endpoint(NO_CONSENT)),
        "an account without consent is reported: {beats:#?}"
    );
    // The running account's heartbeats carry its own counters from both sides: what Switchboard
    // accepted (the delivery stage) and what it asked Telegram for (its actor).
    let counters = |fake: &FakeSwitchboard| {
        let mut latest = (0, 0);
        for beat in fake.heartbeats() {
            if beat.pointer("/connector/endpoint_identity") == Some(&Value::from(endpoint(RUNNING)))
            {
                let n = |at: &str| beat.pointer(at).and_then(Value::as_u64).unwrap_or(0);
                latest = (
                    n("/counters/messages_ingested"),
                    n("/counters/source_api_calls"),
                );
            }
        }
        latest
    };
    while counters(&fake).0 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ingested, api_calls) = counters(&fake);
    let accepted = stats.delivered.get() + stats.resend_duplicates.get();
    assert!(
        ingested > 0 && ingested <= accepted,
        "{ingested} of {accepted}"
    );
    assert!(api_calls > 0, "source_api_calls {api_calls}");
    node.shutdown().await.expect("shutdown");
    fake.stop().await;
}
