//! Conversation-history batches (`switchboard.mode = "conversation_batches"`) end to end, through
//! the real binary, a real nats-server and the fake Switchboard: every kept new message reaches
//! Switchboard inside exactly one stored batch, edits, deletions and service events arrive one
//! by one, and a Switchboard outage longer than a flush interval drops nothing (the butlers
//! connector drops its buffer there).

mod support;

use std::time::Duration;

use support::batches::{kept, simulation, start_batch_node, stop_and_check};
use support::eventually_some;

/// Records in `TG_BATCH` so far (0 before the stream exists).
async fn recorded_batches(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("TG_BATCH").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_message_is_in_exactly_one_stored_batch() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = simulation(2, 400.0, 600, 17);
    let kept = kept(&sim);
    let log = dir.path().join("node.log");
    let mut node = start_batch_node(&nats, &fake, dir.path(), &log, &sim, 1, 40);
    let report = stop_and_check(&mut node, &fake, &kept, &log, Duration::from_secs(90)).await;
    let new_messages = kept
        .iter()
        .filter(|e| tgingest::pipeline::batcher::batchable(e))
        .count() as u64;
    assert!(
        report.batches > 0 && report.batches < new_messages / 5,
        "one call per batch, not per message: {report:?}, {new_messages} new messages"
    );
    // No batch is larger than max_messages.
    for a in fake.accepted() {
        if let Some(history) = a.envelope.pointer("/payload/raw/conversation_history") {
            let new = history
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["is_new"] == true)
                .count();
            assert!((1..=40).contains(&new), "{new} members");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchboard_outage_longer_than_a_flush_interval_drops_nothing() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = simulation(2, 100.0, 800, 23);
    let kept = kept(&sim);
    let log = dir.path().join("node.log");
    let mut node = start_batch_node(&nats, &fake, dir.path(), &log, &sim, 1, 200);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // Some batches arrive; then Switchboard goes away.
    eventually_some("a first stored batch", Duration::from_secs(60), || async {
        (fake.batches_stored() > 0).then_some(())
    })
    .await;
    fake.stop().await;
    let stored_before = fake.batches_stored();
    let recorded_at_stop = recorded_batches(&js).await;
    // The outage lasts until three more flushes (1 s apart) were recorded without Switchboard:
    // the buffered messages are in TG_BATCH, not in a process's memory.
    eventually_some(
        "three batches recorded during the outage",
        Duration::from_secs(60),
        || async { (recorded_batches(&js).await >= recorded_at_stop + 3).then_some(()) },
    )
    .await;
    assert_eq!(fake.batches_stored(), stored_before, "Switchboard was away");
    fake.restart().await.unwrap();

    let report = stop_and_check(&mut node, &fake, &kept, &log, Duration::from_secs(120)).await;
    assert_eq!(
        report.batches,
        recorded_batches(&js).await,
        "every recorded batch stored once"
    );
}
