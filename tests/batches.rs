//! Conversation-history batches (`switchboard.mode = "conversation_batches"`) end to end, through
//! the real binary, a real nats-server and the fake Switchboard: every kept new message reaches
//! Switchboard inside exactly one stored batch, edits, deletions and service events arrive one
//! by one, and a Switchboard outage longer than a flush interval drops nothing (the butlers
//! connector drops its buffer there).

mod support;

use std::time::Duration;

use support::batches::{batch_env, kept, simulation, start_batch_node, stop_and_check};
use support::{KillOnDrop, eventually_some};

/// Records in `TG_BATCH` so far (0 before the stream exists).
async fn recorded_batches(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("TG_BATCH").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// The batcher's consumer on `TG_CLEAN`, if it exists yet.
async fn batcher_info(
    js: &async_nats::jetstream::Context,
) -> Option<async_nats::jetstream::consumer::Info> {
    let stream = js.get_stream("TG_CLEAN").await.ok()?;
    stream.consumer_info("batcher").await.ok()
}

/// Starts `tgingest run` as node `id` on `sim` with the given variables, killed if the test
/// fails.
fn spawner<'a>(
    nats: &'a support::TestNats,
    fake: &'a tgingest::switchboard::FakeSwitchboard,
    dir: &'a std::path::Path,
    log: &'a std::path::Path,
    sim: &'a tgingest::telegram::simulated::SimulatorConfig,
    id: &'a str,
) -> impl Fn(&[(&str, String)]) -> KillOnDrop + 'a {
    move |extra| {
        KillOnDrop(support::spawn_sim_node(
            nats, fake, dir, log, sim, id, extra,
        ))
    }
}

/// A nats-server, the fake Switchboard, and a batch-mode node on a simulation (flush every second).
struct Stage {
    nats: support::TestNats,
    fake: tgingest::switchboard::FakeSwitchboard,
    dir: tempfile::TempDir,
    kept: Vec<tgingest::event::Event>,
    log: std::path::PathBuf,
    node: KillOnDrop,
}

/// Starts a [`Stage`] on `sim`, batches of at most `max_messages`.
async fn stage(sim: &tgingest::telegram::simulated::SimulatorConfig, max_messages: u32) -> Stage {
    let (nats, fake, dir) = support::node_stage().await;
    let log = dir.path().join("node.log");
    let node = start_batch_node(&nats, &fake, dir.path(), &log, sim, 1, max_messages);
    Stage {
        kept: kept(sim),
        node: KillOnDrop(node),
        nats,
        fake,
        dir,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_message_is_in_exactly_one_stored_batch() {
    // Every part bound: one left out would be dropped here (the server stopped, the dir gone).
    let Stage {
        nats: _nats,
        fake,
        dir: _dir,
        kept,
        log,
        mut node,
    } = stage(&simulation(2, 400.0, 600, 17), 40).await;
    let report = stop_and_check(&mut node.0, &fake, &kept, &log, Duration::from_secs(90)).await;
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
    let Stage {
        nats,
        fake,
        dir: _dir,
        kept,
        log,
        mut node,
    } = stage(&simulation(2, 100.0, 800, 23), 200).await;
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

    let report = stop_and_check(&mut node.0, &fake, &kept, &log, Duration::from_secs(120)).await;
    assert_eq!(
        report.batches,
        recorded_batches(&js).await,
        "every recorded batch stored once"
    );
}

/// Two nodes share the batcher's durable consumer. Node A is frozen (SIGSTOP) with messages
/// buffered until JetStream redelivers them to node B, which batches and records them; thawed,
/// A flushes its stale buffer: the compare-and-set on the chat's `TG_BATCH` subject refuses it,
/// A reads B's records and drops what they hold. Every message is in exactly one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_batcher_whose_messages_went_to_another_never_records_them_again() {
    let sim = simulation(2, 200.0, 1200, 41);
    let Stage {
        nats,
        fake,
        dir,
        kept,
        log: log_a,
        node: mut a,
    } = stage(&sim, 10).await;
    let other = support::second_node_dir(dir.path());
    let log_b = other.path().join("b.log");
    let mut b =
        spawner(&nats, &fake, other.path(), &log_b, &sim, "batch-node-b")(&batch_env(1, 10));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let redelivered = || async {
        let info = batcher_info(&js).await?;
        Some(info.num_redelivered)
    };
    eventually_some(
        "batches from both nodes",
        Duration::from_secs(60),
        || async {
            let texts = [support::log_text(&log_a), support::log_text(&log_b)];
            texts
                .iter()
                .all(|t| t.contains("batch recorded"))
                .then_some(())
        },
    )
    .await;
    let before = redelivered().await.unwrap_or(0);
    support::signal(a.0.id(), libc::SIGSTOP);
    let recorded_at_stop = recorded_batches(&js).await;
    // A's buffered messages come back to B once A's progress acks stop; B records them.
    eventually_some(
        "A's messages redelivered to B and batched",
        Duration::from_secs(60),
        || async {
            let moved = redelivered().await.unwrap_or(0) > before;
            (moved && recorded_batches(&js).await >= recorded_at_stop + 5).then_some(())
        },
    )
    .await;
    support::signal(a.0.id(), libc::SIGCONT);

    support::all_stored_then_stop(&mut b.0, &fake, &kept, &log_b).await;
    let report = stop_and_check(&mut a.0, &fake, &kept, &log_a, Duration::from_secs(60)).await;
    let records = support::batches::recorded(&nats.url()).await;
    let twice = support::batches::members_in_two_records(&records);
    let conflicts = support::log_text(&log_a)
        .matches("the chat has a newer record")
        .count();
    eprintln!(
        "{} records; A met {conflicts} compare-and-set conflicts",
        records.len()
    );
    assert!(twice.is_empty(), "{} members in two records", twice.len());
    assert_eq!(report.batches, records.len() as u64, "{report:?}");
}

/// A node that delivered in `messages` mode and restarts in batch mode does not send again,
/// inside batches, what it already delivered one by one: the mode hand-over starts its batcher
/// past the end of `TG_CLEAN`, not at its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_batch_mode_does_not_re_send_what_was_delivered_one_by_one() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = simulation(2, 400.0, 400, 53);
    let kept = kept(&sim);
    let log = dir.path().join("node.log");
    let spawn = spawner(&nats, &fake, dir.path(), &log, &sim, "switch-node");
    let mut node = spawn(&[]);
    support::all_stored_then_stop(&mut node.0, &fake, &kept, &log).await;
    let stored = fake.stats().stored;

    // Batch mode on the same data: the sources have nothing new to give.
    let mut node = spawn(&batch_env(1, 40));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    eventually_some("the batcher caught up", Duration::from_secs(60), || async {
        let info = batcher_info(&js).await?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    support::signal(node.0.id(), libc::SIGTERM);
    let status = support::wait_exit(&mut node.0, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_eq!(recorded_batches(&js).await, 0, "nothing new, so no batch");
    assert_eq!(fake.stats().stored, stored, "nothing stored again");
    assert_eq!(fake.stored_twice(), 0);
}

/// With an hour's flush interval only a stop cuts batches: a graceful stop records everything
/// the batcher holds, and the restarted node sends those batches at once instead of buffering
/// the messages for another interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_records_the_buffers_and_the_restart_sends_them() {
    let (nats, fake, dir) = support::node_stage().await;
    let sim = simulation(2, 400.0, 300, 61);
    let kept = kept(&sim);
    let batchable: std::collections::HashSet<String> = kept
        .iter()
        .filter(|e| tgingest::pipeline::batcher::batchable(e))
        .map(|e| e.event_id.clone())
        .collect();
    let log = dir.path().join("node.log");
    let env = batch_env(3600, 5000);
    let spawn = || spawner(&nats, &fake, dir.path(), &log, &sim, "stop-node")(&env);
    let mut node = spawn();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // Every new message is held by the batcher (delivered to it, unacknowledged).
    eventually_some(
        "the batcher holds every new message",
        Duration::from_secs(60),
        || async {
            let info = batcher_info(&js).await?;
            (info.num_pending == 0 && info.num_ack_pending == batchable.len()).then_some(())
        },
    )
    .await;
    assert_eq!(recorded_batches(&js).await, 0, "nothing flushed yet");
    support::signal(node.0.id(), libc::SIGTERM);
    let status = support::wait_exit(&mut node.0, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", support::log_text(&log));
    let records = support::batches::recorded(&nats.url()).await;
    let members: std::collections::HashSet<String> = records
        .iter()
        .flat_map(|b| b.members().map(|m| m.event_id.clone()))
        .collect();
    assert!(
        members == batchable,
        "the stop recorded {} of the {} held messages ({} others)",
        members.intersection(&batchable).count(),
        batchable.len(),
        members.difference(&batchable).count()
    );

    let mut node = spawn();
    stop_and_check(&mut node.0, &fake, &kept, &log, Duration::from_secs(60)).await;
}
