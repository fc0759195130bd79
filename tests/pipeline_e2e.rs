//! The whole pipeline in one process against a real nats-server and the fake Switchboard:
//! everything the policy allows arrives exactly once, with the right envelope; nothing else does.

mod support;

use std::time::Duration;

use support::rig::{Rig, simulation};
use tgingest::bus::{STREAM_CLEAN, STREAM_DLQ};
use tgingest::event::{Event, EventKind, TELEGRAM_SERVICE_CHAT};
use tgingest::switchboard::{Faults, envelope};

const WAIT: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds; fails naming `what` after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allowed_event_arrives_exactly_once_with_the_right_envelope() {
    let mut rig = Rig::start(simulation(3, 400, 400.0, 7), |_| {}).await;
    assert!(
        rig.wait_all_delivered(WAIT).await,
        "not everything arrived: {:?}",
        rig.stats.snapshot()
    );
    // Give stragglers (re-sends) a moment, then compare sets exactly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expected = rig.expected();
    let delivered = rig.delivered();
    assert_eq!(rig.fake.stored_twice(), 0);
    assert!(delivered.values().all(|n| *n == 1), "stored twice");
    let unexpected: Vec<_> = delivered
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} events arrived that the policy should have stopped",
        unexpected.len()
    );
    assert_eq!(delivered.len(), expected.len());

    // The envelope is the mapping of the redacted event (observed_at aside, which is emission time).
    for accepted in rig.fake.accepted() {
        let id = accepted.envelope["payload"]["raw"]["event_id"]
            .as_str()
            .unwrap();
        let want = envelope(&expected[id], &rig.config.switchboard);
        for pointer in [
            "/source",
            "/sender",
            "/control",
            "/event/external_event_id",
            "/event/external_thread_id",
            "/payload/normalized_text",
        ] {
            assert_eq!(
                accepted.envelope.pointer(pointer),
                want.pointer(pointer),
                "{pointer} of {id}"
            );
        }
    }
    let snapshot = rig.stats.snapshot();
    assert!(
        snapshot.duplicates_dropped.values().sum::<u64>() > 0,
        "the simulation re-delivers; some must be dropped: {snapshot:?}"
    );
    assert!(snapshot.redacted.values().sum::<u64>() > 0, "{snapshot:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_chats_never_reach_tg_clean_and_pii_never_leaves() {
    let mut rig = Rig::start(simulation(2, 400, 400.0, 11), |_| {}).await;
    assert!(rig.wait_all_delivered(WAIT).await);
    let clean = rig.read_stream(STREAM_CLEAN).await;
    assert!(!clean.is_empty());
    for message in &clean {
        let event: Event = tgingest::codec::decode(&message.payload).unwrap();
        assert_ne!(
            event.chat.id, TELEGRAM_SERVICE_CHAT,
            "the login-code chat reached TG_CLEAN"
        );
        assert_ne!(
            event.kind,
            EventKind::Service,
            "service messages are dropped by default"
        );
    }
    // Every piece of personal data the simulation embedded is gone from what Switchboard got.
    // The message's own text: normalized_text without its trailing `[tg:<chat>:<msg>]` line
    // (ids and timestamps elsewhere in the envelope can contain any digit run by chance).
    let delivered_text: Vec<String> = rig
        .fake
        .accepted()
        .iter()
        .map(|a| {
            let text = a.envelope["payload"]["normalized_text"]
                .as_str()
                .unwrap_or_default();
            text.rsplit_once("\n[tg:")
                .map_or(text, |(body, _)| body)
                .to_string()
        })
        .collect();
    let sim = &rig.config.simulator;
    let mut checked = 0;
    for i in 0..sim.accounts {
        for n in 0..sim.messages_per_account {
            if let Some(pii) = rig.world.event_at(i, n).pii {
                checked += 1;
                assert!(
                    delivered_text.iter().all(|t| !t.contains(&pii.value)),
                    "{:?} leaked",
                    pii.kind
                );
            }
        }
    }
    assert!(checked > 10, "the simulation should embed personal data");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchboard_down_for_a_while_then_back_loses_nothing() {
    let mut rig = Rig::start(simulation(2, 600, 150.0, 21), |_| {}).await;
    until("the first deliveries", || rig.stats.delivered.get() > 0).await;
    rig.fake.stop().await;
    // Once one attempt failed, no call from before the stop can still be settling.
    let retries = rig.stats.retries.get();
    until("an attempt to fail", || rig.stats.retries.get() > retries).await;
    let stored_before = rig.delivered().len();
    let counted_before = rig.stats.delivered.get();
    let retries = rig.stats.retries.get();
    // Something could arrive: events are waiting and delivery keeps trying them.
    until("delivery to keep trying", || {
        rig.stats.retries.get() >= retries + 3
    })
    .await;
    assert_eq!(
        rig.delivered().len(),
        stored_before,
        "nothing can arrive while Switchboard is down"
    );
    assert_eq!(
        rig.stats.delivered.get(),
        counted_before,
        "the pipeline counted deliveries while Switchboard was down"
    );
    rig.fake.restart().await.unwrap();
    assert!(
        rig.wait_all_delivered(WAIT).await,
        "{:?}",
        rig.stats.snapshot()
    );
    assert_eq!(rig.fake.stored_twice(), 0);
    let retries = rig.stats.retries.get();
    assert!(retries > 0, "the outage must have caused retries");
    // Backoff bounds the retries: at most ~ (in-flight calls) × (doublings to 30 s + outage / 30 s).
    assert!(
        retries < 8 * 20,
        "retries not bounded by the backoff: {retries}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_invalid_envelope_is_dead_lettered_and_does_not_block_the_stream() {
    let mut rig = Rig::start(simulation(1, 300, 300.0, 5), |_| {}).await;
    let js = rig.node.as_ref().unwrap().bus.js.clone();
    // An event Switchboard must refuse (empty message id), straight into TG_CLEAN,
    // and bytes that are no event at all into TG_RAW.
    let mut bad = rig.expected().into_values().next().unwrap();
    bad.message_id = String::new();
    bad.event_id = "bad-envelope".into();
    js.publish(
        format!("tg.clean.{}", bad.account_id),
        tgingest::codec::encode(&bad).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    js.publish("tg.raw.1.private", "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert!(
        rig.wait_all_delivered(WAIT).await,
        "the stream is blocked: {:?}",
        rig.stats.snapshot()
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut dlq = Vec::new();
    while std::time::Instant::now() < deadline {
        dlq = rig.read_stream(STREAM_DLQ).await;
        if dlq.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| {
            m.headers
                .as_ref()
                .and_then(|h| h.get("Tgingest-Reason"))
                .map(|v| v.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("Invalid ingest.v1 envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("undecodable TG_RAW message")),
        "{reasons:?}"
    );
    assert!(rig.stats.dead_lettered.get() >= 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_stream_is_survived() {
    // Acks lost with the connection are redelivered after each stage's ack_wait (30 s), so
    // recovery can take about a minute; the bound is generous because the property is that it
    // happens by itself, not how fast.
    let mut rig = Rig::start(simulation(2, 800, 200.0, 33), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| rig.nats.server.restart()).unwrap();
    assert!(
        rig.wait_all_delivered(Duration::from_secs(180)).await,
        "{:?}",
        rig.stats.snapshot()
    );
    assert_eq!(rig.fake.stored_twice(), 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_endpoint_sends_valid_heartbeats_with_its_own_counters() {
    let mut rig = Rig::start(simulation(2, 200, 400.0, 3), |c| {
        c.switchboard.heartbeat_interval = tgingest::config::Dur::secs(10);
    })
    .await;
    assert!(rig.wait_all_delivered(WAIT).await);
    // The first round goes out at start; every endpoint must be there, accepted by the fake's
    // strict validation (a rejected heartbeat is not recorded).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let endpoints = |rig: &Rig| -> std::collections::HashSet<String> {
        rig.fake
            .heartbeats()
            .iter()
            .filter_map(|h| {
                h.pointer("/connector/endpoint_identity")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    };
    while std::time::Instant::now() < deadline && endpoints(&rig).len() < 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want: std::collections::HashSet<String> = rig
        .world
        .account_ids()
        .map(|id| format!("telegram:user:{id}"))
        .collect();
    assert_eq!(endpoints(&rig), want);
    // Counters are per account: once a round after the deliveries is in, each endpoint reports
    // what its own account delivered (at most, since a round can start mid-stream), never the
    // node's total.
    let stored_per_endpoint = |rig: &Rig| -> std::collections::HashMap<String, u64> {
        let mut counts = std::collections::HashMap::new();
        for a in rig.fake.accepted() {
            let endpoint = a
                .envelope
                .pointer("/source/endpoint_identity")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            *counts.entry(endpoint.to_string()).or_default() += 1;
        }
        counts
    };
    let latest_ingested = |rig: &Rig| -> std::collections::HashMap<String, u64> {
        let mut latest = std::collections::HashMap::new();
        for beat in rig.fake.heartbeats() {
            let endpoint = beat
                .pointer("/connector/endpoint_identity")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let ingested = beat
                .pointer("/counters/messages_ingested")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            latest.insert(endpoint.to_string(), ingested);
        }
        latest
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while std::time::Instant::now() < deadline && latest_ingested(&rig).values().any(|n| *n == 0) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stored = stored_per_endpoint(&rig);
    let total: u64 = stored.values().sum();
    for (endpoint, ingested) in latest_ingested(&rig) {
        assert!(
            ingested > 0,
            "{endpoint}: no heartbeat after the deliveries"
        );
        assert!(
            ingested <= stored[&endpoint],
            "{endpoint} reports {ingested}, its account stored {}",
            stored[&endpoint]
        );
        assert!(ingested < total, "{endpoint} reports the node's total");
    }
    rig.stop().await;
}

/// Switchboard as rude as reality, all at once: answers in another order than asked (seeded
/// jitter), connections cut before and after the call took effect, replies cut half-way, a
/// proxy in front answering 502 and 429, database errors, and the real server's racy dedupe
/// (look up, a round trip, insert), under which two calls with one key in flight would both be
/// stored. Every event still arrives exactly once, and the fake never sees two calls with one
/// key inside it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rude_switchboard_still_gets_every_event_exactly_once_and_never_one_key_twice_at_once() {
    let mut rig = Rig::start(simulation(2, 300, 300.0, 33), |_| {}).await;
    rig.fake.set_faults(Faults {
        latency: Duration::from_millis(2),
        latency_jitter: Duration::from_millis(40),
        drop_probability: 0.03,
        drop_after_processing: true,
        tool_error_probability: 0.03,
        truncate_count: 15,
        proxy_status: 502,
        proxy_count: 10,
        racy_dedupe: true,
        ..Faults::default()
    });
    until("the proxy's 502s and the cut replies", || {
        let s = rig.fake.stats();
        s.proxy_answers >= 10 && s.truncated >= 15
    })
    .await;
    let mut faults = rig.fake.faults();
    faults.proxy_status = 429;
    faults.proxy_count = 5;
    rig.fake.set_faults(faults);
    assert!(
        rig.wait_all_delivered(WAIT).await,
        "not everything arrived: {:?} / fake {:?}",
        rig.stats.snapshot(),
        rig.fake.stats()
    );
    // Something more could arrive (retries of calls cut after they were stored): read on
    // until no call has come for a second.
    let mut calls = rig.fake.stats().calls_received;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rig.fake.stats().calls_received;
        if now == calls {
            break;
        }
        calls = now;
    }
    let stats = rig.fake.stats();
    eprintln!("fake: {stats:?}");
    assert!(
        stats.dropped > 0 && stats.tool_errors > 0 && stats.duplicates > 0,
        "the faults did not fire: {stats:?}"
    );
    assert_eq!((stats.proxy_answers, stats.truncated), (15, 15));
    let overlapping = rig.fake.overlapping_keys();
    assert!(
        overlapping.is_empty(),
        "{} times two calls with one key were inside Switchboard at once, e.g. {:?}",
        overlapping.len(),
        &overlapping[..overlapping.len().min(3)]
    );
    assert_eq!(rig.fake.stored_twice(), 0);
    let expected = rig.expected();
    let delivered = rig.delivered();
    assert_eq!(delivered.len(), expected.len());
    assert!(delivered.values().all(|n| *n == 1), "stored twice");
    assert!(delivered.keys().all(|id| expected.contains_key(id)));
    assert!(
        rig.read_stream(STREAM_DLQ).await.is_empty(),
        "nothing is refused"
    );
    rig.stop().await;
}

/// A proxy in front answering 413 for an envelope: that envelope will never fit, so it goes to
/// `TG_DLQ` with the status named instead of holding a delivery slot forever, and the rest flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_a_proxy_refuses_as_too_large_is_dead_lettered_and_the_rest_flows() {
    let mut rig = Rig::start(simulation(1, 300, 300.0, 34), |_| {}).await;
    until("the first deliveries", || rig.stats.delivered.get() > 0).await;
    rig.fake.set_faults(Faults {
        proxy_status: 413,
        proxy_count: 1,
        ..Faults::default()
    });
    let mut dlq = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while dlq.is_empty() && std::time::Instant::now() < deadline {
        dlq = rig.read_stream(STREAM_DLQ).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dlq.len(), 1, "one envelope parked");
    let reason = dlq[0]
        .headers
        .as_ref()
        .and_then(|h| h.get("Tgingest-Reason"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(reason.contains("413"), "{reason}");
    let parked: Event = tgingest::codec::decode(&dlq[0].payload).expect("the event is kept");
    let rest: Vec<String> = rig
        .expected()
        .into_keys()
        .filter(|id| *id != parked.event_id)
        .collect();
    assert!(
        rig.wait_delivered(rest.iter(), WAIT).await,
        "{:?}",
        rig.stats.snapshot()
    );
    assert!(!rig.delivered().contains_key(&parked.event_id));
    assert_eq!(rig.stats.dead_lettered.get(), 1);
    rig.stop().await;
}
