//! Operator replay from `TG_CLEAN` through the admin API, on the whole pipeline (real
//! nats-server, simulated accounts, the fake Switchboard): after Switchboard lost everything, a
//! replay stores every expected event exactly once again; without the loss, everything comes
//! back as a duplicate; permanent rejections are counted and dead-lettered; `since`/`until` and
//! `account` bound what is re-sent; bad requests get a 400 naming the field, and a second replay
//! while one runs gets a 409.

mod accounts_support;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use accounts_support::{Api, audits};
use serde_json::{Value, json};
use support::rig::{Rig, simulation};
use tgingest::bus::{STREAM_CLEAN, STREAM_DLQ};
use tgingest::event::Event;
use tgingest::switchboard::envelope;

const WAIT: Duration = Duration::from_secs(60);

/// A pipeline with its admin API on, everything delivered once.
async fn delivered_rig(accounts: u32, positions: u64, seed: u64) -> Rig {
    let rig = Rig::start(
        simulation(accounts, positions, positions as f64, seed),
        |c| c.admin.listen = "127.0.0.1:0".into(),
    )
    .await;
    assert!(
        rig.wait_all_delivered(WAIT).await,
        "the first delivery did not finish: {:?}",
        rig.stats.snapshot()
    );
    // Stragglers (re-sends) settle; then the fake holds exactly the ground truth.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&rig, &rig.expected().into_keys().collect::<Vec<_>>());
    rig
}

fn api(rig: &Rig) -> Api {
    Api::new(rig.node.as_ref().expect("node"))
}

/// Every id in `want` is stored exactly once, and nothing else is.
fn assert_exactly_once(rig: &Rig, want: &[String]) {
    let delivered = rig.delivered();
    let lost: Vec<_> = want
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    let unexpected: Vec<_> = delivered.keys().filter(|id| !want.contains(id)).collect();
    assert!(
        lost.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "lost {}, stored twice {}, unexpected {} (of {} wanted)",
        lost.len(),
        twice.len(),
        unexpected.len(),
        want.len()
    );
    assert_eq!(rig.fake.stored_twice(), 0);
}

/// `TG_CLEAN` in order: (stream sequence, publish time in ns, event).
async fn clean_stream(rig: &Rig) -> Vec<(u64, i128, Event)> {
    let messages = rig.read_stream(STREAM_CLEAN).await;
    let total = rig
        .node
        .as_ref()
        .unwrap()
        .bus
        .js
        .get_stream(STREAM_CLEAN)
        .await
        .unwrap();
    assert_eq!(
        messages.len() as u64,
        total.cached_info().state.messages,
        "all of TG_CLEAN read"
    );
    messages
        .iter()
        .map(|m| {
            let info = m.info().unwrap();
            let (seq, at) = (info.stream_sequence, info.published.unix_timestamp_nanos());
            (seq, at, tgingest::codec::decode(&m.payload).unwrap())
        })
        .collect()
}

/// Starts a replay; panics unless the node answers 202.
async fn start_replay(api: &Api, body: Value) -> Value {
    let (status, progress) = api.send("POST", "/v1/replays", Some(body)).await;
    assert_eq!(status, 202, "{progress}");
    assert_eq!(progress["state"], "running", "{progress}");
    progress
}

/// Polls a replay until it is no longer running.
async fn wait_replay(api: &Api, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, p) = api.send("GET", &format!("/v1/replays/{id}"), None).await;
        assert_eq!(status, 200, "{p}");
        if p["state"] != "running" {
            return p;
        }
        assert!(Instant::now() < deadline, "replay still running: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(ns: i128) -> String {
    jiff::Timestamp::from_nanosecond(ns).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_switchboard_lost_everything_a_replay_stores_every_event_exactly_once_again() {
    let mut rig = delivered_rig(3, 300, 5).await;
    let expected = rig.expected();
    let clean = clean_stream(&rig).await;
    assert_eq!(
        clean.len(),
        expected.len(),
        "TG_CLEAN holds the ground truth"
    );
    let first_copy: HashMap<String, Value> = rig
        .fake
        .accepted()
        .into_iter()
        .map(|a| {
            (
                a.envelope["payload"]["raw"]["event_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                a.envelope,
            )
        })
        .collect();

    rig.fake.forget_all();
    assert!(rig.fake.accepted().is_empty() && rig.fake.stats().stored == 0);
    let api = api(&rig);
    let started = start_replay(&api, json!({"since": null, "from_sequence": null})).await;
    let id = started["id"].as_str().unwrap().to_string();
    let done = wait_replay(&api, &id).await;

    assert_eq!(done["state"], "finished", "{done}");
    assert_exactly_once(&rig, &expected.keys().cloned().collect::<Vec<_>>());
    let n = expected.len() as u64;
    assert_eq!(done["scanned"], n, "{done}");
    assert_eq!(done["accepted"], n, "{done}");
    assert_eq!(done["duplicates"], 0, "{done}");
    assert_eq!(done["rejected"], 0, "{done}");
    assert_eq!(done["first_sequence"], clean[0].0, "{done}");
    assert_eq!(done["last_sequence"], clean.last().unwrap().0, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");

    // The same envelopes as the first delivery (observed_at aside, which is emission time).
    for accepted in rig.fake.accepted() {
        let id = accepted.envelope["payload"]["raw"]["event_id"]
            .as_str()
            .unwrap();
        let want = envelope(&expected[id], &rig.config.switchboard);
        for pointer in ["/source", "/sender", "/control", "/event", "/payload"] {
            assert_eq!(
                accepted.envelope.pointer(pointer),
                first_copy[id].pointer(pointer),
                "{pointer} of {id} differs from the first delivery"
            );
        }
        for pointer in [
            "/control",
            "/payload/normalized_text",
            "/event/external_event_id",
        ] {
            assert_eq!(accepted.envelope.pointer(pointer), want.pointer(pointer));
        }
    }

    // Audited with its counts.
    let node = rig.node.as_ref().unwrap();
    let records = audits(node);
    let started_rec = records
        .iter()
        .find(|a| a.action == "replay.started")
        .expect("replay.started audited");
    assert_eq!(started_rec.details["replay_id"], id);
    let finished = records
        .iter()
        .find(|a| a.action == "replay.finished")
        .expect("replay.finished audited");
    let details: &BTreeMap<String, String> = &finished.details;
    assert_eq!(details["state"], "finished");
    assert_eq!(details["accepted"], n.to_string());
    assert_eq!(details["scanned"], n.to_string());
    assert!(node.eventlog.verify().ok);

    let (status, list) = api.send("GET", "/v1/replays", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["replays"].as_array().unwrap().len(), 1, "{list}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_into_a_switchboard_that_kept_everything_counts_only_duplicates() {
    let mut rig = delivered_rig(2, 300, 9).await;
    let expected = rig.expected();
    let stored_before = rig.fake.stats().stored;
    let api = api(&rig);
    let started = start_replay(&api, json!({"from_sequence": 1})).await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;

    assert_eq!(done["state"], "finished", "{done}");
    let n = expected.len() as u64;
    assert_eq!(done["scanned"], n, "{done}");
    assert_eq!(done["duplicates"], n, "{done}");
    assert_eq!(done["accepted"], 0, "{done}");
    assert_eq!(done["rejected"], 0, "{done}");
    assert_eq!(
        rig.fake.stats().stored,
        stored_before,
        "nothing stored twice"
    );
    assert_exactly_once(&rig, &expected.keys().cloned().collect::<Vec<_>>());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_switchboard_now_refuses_are_counted_rejected_and_dead_lettered() {
    let mut rig = delivered_rig(1, 100, 21).await;
    let n = rig.expected().len();
    rig.fake.forget_all();
    // An older server: today's `source.channel` is an invalid envelope there, for good.
    rig.fake.set_channels(vec!["telegram".into()]);
    let api = api(&rig);
    let started = start_replay(&api, json!({})).await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;

    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["rejected"], n as u64, "{done}");
    assert_eq!(done["accepted"], 0, "{done}");
    assert!(rig.fake.accepted().is_empty());
    let dlq = rig.read_stream(STREAM_DLQ).await;
    assert_eq!(dlq.len(), n, "each rejected event is parked in TG_DLQ once");
    assert!(dlq.iter().all(|m| m.headers.as_ref().is_some_and(|h| {
        h.get(tgingest::pipeline::clean::REASON_HEADER)
            .is_some_and(|r| r.as_str().contains("source.channel"))
    })));
    let parked_by_replay = audits(rig.node.as_ref().unwrap())
        .iter()
        .filter(|a| a.action == "delivery.dead_letter" && a.actor.ends_with("/replay"))
        .count();
    assert_eq!(parked_by_replay, n);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_until_and_account_bound_what_a_replay_re_sends() {
    let mut rig = delivered_rig(3, 300, 13).await;
    let clean = clean_stream(&rig).await;
    let api = api(&rig);

    // A window of stream positions [a, b], given as the publish times of a and b.
    let (a, b) = (clean.len() / 4, clean.len() * 3 / 4);
    assert!(
        clean[a - 1].1 < clean[a].1 && clean[b].1 < clean[b + 1].1,
        "neighbouring publish times coincide; pick other positions"
    );
    rig.fake.forget_all();
    let started = start_replay(
        &api,
        json!({"since": rfc3339(clean[a].1), "until": rfc3339(clean[b].1)}),
    )
    .await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "finished", "{done}");
    let window: Vec<String> = clean[a..=b]
        .iter()
        .map(|(_, _, e)| e.event_id.clone())
        .collect();
    assert_exactly_once(&rig, &window);
    assert_eq!(done["scanned"], window.len() as u64, "{done}");
    assert_eq!(done["first_sequence"], clean[a].0, "{done}");

    // One account only.
    let account = clean[0].2.account_id.clone();
    rig.fake.forget_all();
    let started = start_replay(&api, json!({"from_sequence": 1, "account": account})).await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "finished", "{done}");
    let mine: Vec<String> = clean
        .iter()
        .filter(|(_, _, e)| e.account_id == account)
        .map(|(_, _, e)| e.event_id.clone())
        .collect();
    assert!(!mine.is_empty() && mine.len() < clean.len());
    assert_exactly_once(&rig, &mine);
    assert_eq!(done["scanned"], mine.len() as u64, "{done}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replay_requests_get_a_400_naming_the_field_and_a_second_replay_a_409() {
    let mut rig = delivered_rig(2, 300, 17).await;
    let api = api(&rig);
    let future = rfc3339(jiff::Timestamp::now().as_nanosecond() + 3_600_000_000_000);
    for (body, field) in [
        (json!({"since": "yesterday"}), "since"),
        (json!({"until": "2026-13-01T00:00:00Z"}), "until"),
        (
            json!({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
            "until",
        ),
        (json!({"since": future}), "since"),
        (
            json!({"since": "2026-01-01T00:00:00Z", "from_sequence": 3}),
            "from_sequence",
        ),
        (json!({"from_sequence": "three"}), "from_sequence"),
        (json!({"from_sequence": 0}), "from_sequence"),
        (json!({"from_sequence": 1_000_000_000u64}), "from_sequence"),
        (json!({"account": "no-such-account"}), "account"),
        (json!({"account": "1.>"}), "account"),
        (json!({"sinse": "2026-01-01T00:00:00Z"}), "sinse"),
    ] {
        let (status, err) = api.send("POST", "/v1/replays", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {err}");
        assert_eq!(err["code"], "bad_request", "{err}");
        let text = err["error"].as_str().unwrap();
        assert!(
            text.contains(field),
            "{body}: {text:?} does not name {field}"
        );
    }
    let (status, list) = api.send("GET", "/v1/replays", None).await;
    assert_eq!(
        (status, list["replays"].as_array().unwrap().len()),
        (200, 0)
    );

    // A slow Switchboard keeps the first replay running while the second is asked for.
    rig.fake.set_latency(Duration::from_millis(200));
    let first = start_replay(&api, json!({})).await;
    let id = first["id"].as_str().unwrap();
    let (status, err) = api.send("POST", "/v1/replays", Some(json!({}))).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["code"], "replay_running");
    assert!(err["error"].as_str().unwrap().contains(id), "{err}");

    let (status, _) = api.send("DELETE", &format!("/v1/replays/{id}"), None).await;
    assert_eq!(status, 202);
    let done = wait_replay(&api, id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let (status, _) = api.send("DELETE", &format!("/v1/replays/{id}"), None).await;
    assert_eq!(status, 409, "a finished replay cannot be cancelled");
    let (status, _) = api.send("GET", "/v1/replays/no-such-id", None).await;
    assert_eq!(status, 404);

    // Once it ended, a new one may start: here through the CLI, which follows it to the end.
    rig.fake.set_latency(Duration::ZERO);
    let (code, stdout, stderr) = cli(&rig, &api.base, &["--from-sequence", "1"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("finished: scanned"), "{stdout}");
    // What `journalctl --since` and `kubectl logs --since` taught operators works too.
    let (code, stdout, stderr) = cli(&rig, &api.base, &["--since", "1h", "--until", "0s"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("finished: scanned"), "{stdout}");
    let (code, _, stderr) = cli(&rig, &api.base, &["--since", "yesterday"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("since") && stderr.contains("RFC 3339") && stderr.contains("2h"),
        "{stderr}"
    );
    rig.stop().await;
    let (code, _, stderr) = cli(&rig, &api.base, &["--from-sequence", "1"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no tgingest node answers"), "{stderr}");
}

/// Runs `tgingest replay <args> --admin-url <base>`; returns exit code, stdout, stderr.
async fn cli(rig: &Rig, base: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = support::tgingest_cmd(&rig.dir.path().join("cli"));
    let token = rig.config.node.data_dir.join("admin.token");
    cmd.arg("replay").args(args).args(["--admin-url", base]);
    cmd.arg("--token-file").arg(token);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run tgingest replay"))
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Batch mode: a replay re-sends the recorded batches unchanged (same envelopes, same keys) and
/// never a batched message on its own; Switchboard that kept them answers duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_batch_mode_a_replay_re_sends_the_recorded_batches_unchanged() {
    use support::batches::report;
    use tgingest::config::DeliveryMode;
    let rig = Rig::start(simulation(2, 300, 300.0, 7), |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.switchboard.mode = DeliveryMode::ConversationBatches;
        c.switchboard.batches.flush_interval_s = 1;
        c.switchboard.batches.max_messages = 40;
    })
    .await;
    let kept: Vec<Event> = rig.expected().into_values().collect();
    assert!(
        support::batches::all_stored(&rig.fake, &kept, WAIT).await,
        "{:?}",
        report(&rig.fake, &kept)
    );
    let first = report(&rig.fake, &kept);
    assert!(first.exactly_once() && first.batches > 0, "{first:?}");
    let batches = |rig: &Rig| -> BTreeMap<String, Value> {
        rig.fake
            .accepted()
            .into_iter()
            .filter(|a| a.envelope["control"]["payload_type"] == "conversation_history")
            .map(|a| {
                let key = a.envelope["control"]["idempotency_key"].as_str().unwrap();
                (key.to_string(), a.envelope)
            })
            .collect()
    };
    let before = batches(&rig);

    rig.fake.forget_all();
    let api = api(&rig);
    let started = start_replay(&api, json!({})).await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "finished", "{done}");
    let again = report(&rig.fake, &kept);
    assert!(again.exactly_once(), "{again:?}");
    assert_eq!(batches(&rig), before, "the very same batch envelopes");
    assert_eq!(done["rejected"], 0, "{done}");

    // Switchboard kept them: everything is a duplicate.
    let started = start_replay(&api, json!({})).await;
    let done = wait_replay(&api, started["id"].as_str().unwrap()).await;
    assert_eq!(done["accepted"], 0, "{done}");
    assert!(
        done["duplicates"].as_u64().unwrap() >= before.len() as u64,
        "{done}"
    );
    assert_eq!(rig.fake.stored_twice(), 0);
}
