//! Permanent rejections through the whole pipeline (real nats-server, a node with simulated
//! accounts, the fake Switchboard): Switchboard's real-shaped refusals — multi-line pydantic
//! reports quoting non-ASCII input — end in `TG_DLQ` once each, with the reason on one header
//! line and an audit record, and nothing is redelivered.

mod accounts_support;
mod support;

use std::time::{Duration, Instant};

use accounts_support::audits;
use support::rig::{Rig, simulation};
use tgingest::bus::{MAX_HEADER_VALUE, STREAM_CLEAN, STREAM_DLQ};
use tgingest::event::Event;
use tgingest::pipeline::clean::REASON_HEADER;
use tgingest::pipeline::delivery::DELIVERY_CONSUMER;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_rejection_is_dead_lettered_once_with_an_audit_record_and_not_redelivered() {
    // The README's `CONNECTOR_CHANNEL=telegram` against a current server, which only knows
    // `telegram_user_client`: every envelope is refused with a pydantic report.
    let mut rig = Rig::start(simulation(1, 40, 400.0, 31), |c| {
        c.switchboard.channel = "telegram".into();
    })
    .await;
    let n = rig.expected().len();
    assert!(n > 5, "the simulation should produce events: {n}");

    let deadline = Instant::now() + WAIT;
    while rig.stats.dead_lettered.get() < n as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} rejected events were dead-lettered: {:?}",
            rig.stats.dead_lettered.get(),
            rig.stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What the fake answered is a real-shaped, multi-line, non-ASCII report.
    let rejections = rig.fake.rejections();
    assert!(rejections.iter().all(|r| {
        r.error.lines().count() > 3
            && r.error.contains("For further information visit")
            && !r.error.is_ascii()
    }));

    // Every rejected event is in TG_DLQ once, with the whole reason on one bounded header line.
    let dlq = rig.read_stream(STREAM_DLQ).await;
    assert_eq!(dlq.len(), n, "each rejected event is parked once");
    for message in &dlq {
        let event: Event = tgingest::codec::decode(&message.payload).expect("the parked event");
        assert!(!event.event_id.is_empty());
        let reason = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REASON_HEADER))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        assert!(!reason.contains(['\r', '\n']), "{reason}");
        assert!(reason.len() <= MAX_HEADER_VALUE, "{}", reason.len());
        for part in [
            "Invalid ingest.v1 envelope: 1 validation error for IngestEnvelopeV1\\nsource.channel\\n  Input should be 'telegram_user_client'",
            "input_value='telegram', input_type=str]",
            "For further information visit https://errors.pydantic.dev/",
            "«fake Switchboard»",
        ] {
            assert!(reason.contains(part), "{part:?} missing from {reason}");
        }
    }

    // An audit record per dead letter, pointing at its TG_DLQ message, without the reason.
    let node = rig.node.as_ref().expect("node running");
    let parked: Vec<_> = audits(node)
        .into_iter()
        .filter(|a| a.action == "delivery.dead_letter" && a.actor.ends_with("/delivery"))
        .collect();
    assert_eq!(parked.len(), n);
    let mut sequences: Vec<u64> = parked
        .iter()
        .map(|a| a.details["dlq_sequence"].parse().expect("a sequence"))
        .collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(
        sequences.len(),
        n,
        "each record names its own TG_DLQ message"
    );
    assert!(parked.iter().all(|a| !a.details.contains_key("reason")));

    // Settled for good: nothing pending or unacknowledged on TG_CLEAN, nothing redelivered, and
    // Switchboard saw each event once.
    let stream = node.bus.js.get_stream(STREAM_CLEAN).await.unwrap();
    let info = stream.consumer_info(DELIVERY_CONSUMER).await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending, info.num_redelivered),
        (0, 0, 0),
        "{info:?}"
    );
    assert_eq!(rejections.len(), n, "each event was sent once");
    rig.stop().await;
}
