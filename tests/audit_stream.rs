//! Each node's chained event log, copied to its subject of `TG_AUDIT`: the copy is complete and
//! gap-free across restarts and NATS outages, `tgingest audit verify --node ID` verifies it with
//! nothing of the node's disk, catches a record removed or forged in the stream, and a second
//! writer on the same subject is refused.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use std::sync::Arc;
use support::proxy::{Mode, Proxy};
use support::rig::{node_config, simulation};
use support::{TestNats, tgingest_cmd};

use tgingest::audit_stream::{AuditShipping, Conflict, ShipPhase, ShipState, ShipperParts};
use tgingest::bus::{Bus, STREAM_AUDIT, audit_subject};
use tgingest::codec::{decode, encode};
use tgingest::config::{Config, Dur};
use tgingest::eventlog::{AuditEntry, ChainKey, Durability, EventLog, EventLogOptions, Record};
use tgingest::keys::MasterKey;
use tgingest::node::Node;

/// Long enough for anything a loaded 2-core machine does here; the tests wait on states.
const WAIT: Duration = Duration::from_secs(60);

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        action: "test.step".into(),
        actor: "test".into(),
        account_id: None,
        details: [("i".to_string(), i.to_string())].into(),
    }
}

/// A node config on `nats_url` with no accounts, its data dir and master key under `dir`.
fn config(nats_url: &str, dir: &Path, node_id: &str) -> Config {
    let mut config = node_config(
        nats_url,
        "http://127.0.0.1:9/mcp",
        dir,
        simulation(0, 0, 1.0, 1),
    );
    config.node.id = node_id.to_string();
    // Anchors follow the copy at most this often; the tests wait for the anchor.
    config.eventlog.anchor_interval = Dur::secs(1);
    config
}

async fn start(config: &Config) -> Node {
    tgingest::telemetry::install_crypto_provider();
    Node::start(config.clone()).await.expect("node starts")
}

/// Runs node `node_id` until its log (node.start, `n` records) is shipped and anchored, then
/// stops it cleanly (node.stop is shipped too); returns its config.
async fn run_node(nats_url: &str, dir: &Path, node_id: &str, n: usize) -> Config {
    let config = config(nats_url, dir, node_id);
    let node = start(&config).await;
    append(&node, n).await;
    shipped_and_anchored(&node).await;
    node.shutdown().await.expect("clean shutdown");
    config
}

/// Appends `n` lazy audit records (the shipper must flush them before shipping).
async fn append(node: &Node, n: usize) {
    for i in 0..n {
        node.eventlog
            .audit(&entry(i), Durability::Lazy)
            .await
            .expect("append");
    }
}

/// Waits until the shipper has shipped and anchored the log's current head.
async fn shipped_and_anchored(node: &Node) -> ShipState {
    let head = node.eventlog.head();
    let mut state = node.audit_shipping();
    let reached = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| s.shipped == head && s.anchored == Some(head)),
    )
    .await
    .is_ok();
    let now = state.borrow().clone();
    assert!(reached, "head {head:?} not shipped and anchored: {now:?}");
    now
}

/// Waits until the shipper has shipped the log's current head (not waiting for the anchor).
async fn caught_up_with_head(node: &Node) {
    let head = node.eventlog.head();
    let mut state = node.audit_shipping();
    state
        .wait_for(|s| s.shipped == head)
        .await
        .expect("the shipper's state");
}

/// `tgingest audit verify --node ID` through the binary, with the master key of `dir` and the
/// data dir set to one that does not exist.
fn verify_node(
    dir: &Path,
    nats_url: &str,
    node_id: &str,
) -> (Option<i32>, serde_json::Value, Output) {
    let out = tgingest_cmd(&dir.join("no-such-data-dir"))
        .env("TGINGEST_NATS_URL", nats_url)
        .env("TGINGEST_MASTER_KEY_FILE", dir.join("master.key"))
        .args(["audit", "verify", "--node", node_id])
        .output()
        .expect("run tgingest audit verify --node");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, out)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One message of a node's subject: its stream sequence, the sequence it expected before it,
/// and its payload.
struct Copied {
    stream_seq: u64,
    follows: Option<u64>,
    payload: Vec<u8>,
}

impl Copied {
    fn record(&self) -> Record {
        decode(&self.payload).expect("a record")
    }
}

/// Every message on `node_id`'s subject, in order.
async fn copied(nats_url: &str, node_id: &str) -> Vec<Copied> {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(STREAM_AUDIT).await.unwrap();
    let subject = audit_subject(node_id);
    let Ok(last) = stream.get_last_raw_message_by_subject(&subject).await else {
        return Vec::new();
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out: Vec<Copied> = Vec::new();
    while out.last().is_none_or(|m| m.stream_seq < last.sequence) {
        let m = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("the subject's messages arrive")
            .unwrap()
            .unwrap();
        out.push(Copied {
            stream_seq: m.info().unwrap().stream_sequence,
            follows: m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Expected-Last-Subject-Sequence"))
                .and_then(|v| v.as_str().parse().ok()),
            payload: m.payload.to_vec(),
        });
    }
    out
}

/// The log in `config`'s data dir, opened (no node may run on it) with its own chain key.
fn open_log(config: &Config) -> EventLog {
    let master = MasterKey::read_file(&config.security.master_key_file).unwrap();
    let key = ChainKey::open(&config.eventlog_dir(), &master).unwrap();
    EventLog::open(&config.eventlog_dir(), key.bytes()).unwrap()
}

/// The stored bytes of every record of the (closed) log in `config`'s data dir.
fn local_records(config: &Config) -> Vec<Vec<u8>> {
    let log = open_log(config);
    (1..=log.head().seq)
        .map(|seq| log.raw_record(seq).unwrap().expect("record"))
        .collect()
}

/// The copy holds exactly the local records, once each, in order, each published right after
/// the one before it.
fn assert_exact_copy(copy: &[Copied], local: &[Vec<u8>]) {
    let seqs: Vec<u64> = copy.iter().map(|m| m.record().seq).collect();
    let expected: Vec<u64> = (1..=local.len() as u64).collect();
    assert_eq!(seqs, expected, "record indexes in the stream copy");
    let mut previous = 0;
    for (m, bytes) in copy.iter().zip(local) {
        assert_eq!(
            &m.payload,
            bytes,
            "record {} is not the local bytes",
            m.record().seq
        );
        assert_eq!(m.follows, Some(previous), "stream message {}", m.stream_seq);
        previous = m.stream_seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_chain_is_in_the_stream_and_verifies_from_jetstream_after_its_data_dir_is_gone() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = run_node(&nats.url(), dir.path(), "gone-node", 25).await;

    let local = local_records(&config);
    assert!(
        local.len() >= 27,
        "node.start, 25, node.stop: {}",
        local.len()
    );
    assert_exact_copy(&copied(&nats.url(), "gone-node").await, &local);

    std::fs::remove_dir_all(&config.node.data_dir).unwrap();
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "gone-node");
    assert_eq!(code, Some(0), "{}", text(&out));
    let n = local.len() as u64;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["verified"], n, "{report}");
    assert_eq!(report["records"], n, "{report}");
    assert_eq!(report["first_seq"], 1, "{report}");
    assert_eq!(report["last_seq"], n, "{report}");
    assert_eq!(
        report["anchor"]["seq"], n,
        "node.stop is anchored: {report}"
    );
    assert_eq!(report["subject"], "tgingest.audit.gone-node", "{report}");

    // An unknown node is a question that cannot be answered (exit 2), not a broken chain.
    let (code, _, out) = verify_node(dir.path(), &nats.url(), "never-ran");
    assert_eq!(code, Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no anchor for node never-ran"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_stream_copy_fails_verification_naming_the_index() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);

    // Four nodes' chains, one tampered each way.
    for node_id in ["removed", "forged", "cut", "republished"] {
        run_node(&nats.url(), dir.path(), node_id, 8).await;
        let (code, _, out) = verify_node(dir.path(), &nats.url(), node_id);
        assert_eq!(code, Some(0), "before tampering: {}", text(&out));
    }
    let stream = js.get_stream(STREAM_AUDIT).await.unwrap();

    // Someone with rights on the stream deletes record 4 of one node.
    let copy = copied(&nats.url(), "removed").await;
    assert!(stream.delete_message(copy[3].stream_seq).await.unwrap());
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "removed");
    assert_eq!(code, Some(1), "{}", text(&out));
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_seq"], 4, "{report}");
    assert_eq!(report["verified"], 3, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("missing record 4"),
        "{report}"
    );

    // And replaces the other node's last record by a forged one, published in its place as the
    // shipper would (expecting the record before it), without the chain key.
    let copy = copied(&nats.url(), "forged").await;
    let (before_last, last) = (&copy[copy.len() - 2], &copy[copy.len() - 1]);
    let mut forged = last.record();
    forged.body = encode(&entry(999)).unwrap();
    assert!(stream.delete_message(last.stream_seq).await.unwrap());
    js.send_publish(
        audit_subject("forged"),
        PublishMessage::build()
            .payload(encode(&forged).unwrap().into())
            .expected_last_subject_sequence(before_last.stream_seq),
    )
    .await
    .unwrap()
    .await
    .expect("the forger's publish is accepted by JetStream");
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "forged");
    assert_eq!(code, Some(1), "{}", text(&out));
    assert_eq!(report["first_bad_seq"], forged.seq, "{report}");
    assert_eq!(report["reason"], "hash mismatch", "{report}");

    // The third loses its last record: what is left still links, but the anchor is past it.
    let copy = copied(&nats.url(), "cut").await;
    let last = copy[copy.len() - 1].record().seq;
    assert!(
        stream
            .delete_message(copy[copy.len() - 1].stream_seq)
            .await
            .unwrap()
    );
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "cut");
    assert_eq!(code, Some(1), "{}", text(&out));
    assert_eq!(report["first_bad_seq"], last, "{report}");
    assert_eq!(
        report["reason"],
        format!("log truncated: head says {last}"),
        "{report}"
    );

    // The fourth's last record is removed and its very bytes published again by someone else
    // (without expecting the record before it): the chain links, the subject's order does not.
    let copy = copied(&nats.url(), "republished").await;
    let last = &copy[copy.len() - 1];
    assert!(stream.delete_message(last.stream_seq).await.unwrap());
    js.send_publish(
        audit_subject("republished"),
        PublishMessage::build().payload(last.payload.clone().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "republished");
    assert_eq!(code, Some(1), "{}", text(&out));
    assert_eq!(report["first_bad_seq"], last.record().seq, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("was published after no known message"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_resumes_after_a_restart_without_gaps_or_duplicates() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let config = run_node(&nats.url(), dir.path(), "restarted", 5).await;

    // Records the copy lacks: appended while no node runs (as after a crash before shipping).
    {
        let log = open_log(&config);
        for i in 0..7 {
            log.audit(&entry(i), Durability::Flushed).await.unwrap();
        }
    }

    let node = start(&config).await;
    append(&node, 3).await;
    let state = shipped_and_anchored(&node).await;
    assert_eq!(state.phase, ShipPhase::Shipping);
    node.shutdown().await.expect("clean shutdown");

    let local = local_records(&config);
    assert_exact_copy(&copied(&nats.url(), "restarted").await, &local);
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "restarted");
    assert_eq!(code, Some(0), "{}", text(&out));
    assert_eq!(report["records"], local.len(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_rides_out_a_nats_outage_and_skips_nothing() {
    let nats = TestNats::start();
    let proxy = Proxy::start(nats.url().trim_start_matches("nats://").to_string()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&proxy.url(), dir.path(), "cut-off");
    let node = start(&config).await;
    append(&node, 3).await;
    shipped_and_anchored(&node).await;

    proxy.set(Mode::Cut);
    append(&node, 10).await;
    let mut state = node.audit_shipping();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s.phase, ShipPhase::Retrying { .. })),
    )
    .await
    .expect("the shipper notices the outage and retries")
    .expect("the shipper's state");
    assert!(state.borrow().shipped.seq < node.eventlog.head().seq);

    proxy.set(Mode::Pass);
    let state = shipped_and_anchored(&node).await;
    assert_eq!(state.phase, ShipPhase::Shipping);
    node.shutdown().await.expect("clean shutdown");
    assert_exact_copy(
        &copied(&nats.url(), "cut-off").await,
        &local_records(&config),
    );
}

/// A shipper on `log` as a node runs one, with its own connection.
async fn shipper(
    nats_url: &str,
    log: &Arc<EventLog>,
    node_id: &str,
    master: &MasterKey,
) -> AuditShipping {
    let bus = Bus::connect(nats_url, &Config::default().nats, "test")
        .await
        .expect("connect");
    bus.setup(&Config::default()).await.expect("bus set-up");
    AuditShipping::start(ShipperParts {
        bus,
        eventlog: log.clone(),
        node_id: node_id.to_string(),
        master: master.clone(),
        anchor_every: Duration::from_secs(1),
    })
}

async fn wait_phase(
    shipping: &AuditShipping,
    what: &str,
    cond: impl Fn(&ShipState) -> bool,
) -> ShipState {
    let mut state = shipping.state();
    let reached = tokio::time::timeout(WAIT, state.wait_for(|s| cond(s)))
        .await
        .is_ok();
    let now = state.borrow().clone();
    assert!(reached, "{what}: {now:?}");
    now
}

/// Two shippers on copies of one log (a data dir copied to a second machine) both resume at
/// the same record; the first to append ships, the other's publish expects the same previous
/// sequence and JetStream refuses it: it stops with the conflict, and the copy holds one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_for_the_same_node_subject_is_refused_by_jetstream() {
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    MasterKey::generate_file(&dir.path().join("master.key")).unwrap();
    let master = MasterKey::read_file(&dir.path().join("master.key")).unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    {
        let (key, _) = ChainKey::open_or_create(&one, &master).unwrap();
        let log = Arc::new(EventLog::open(&one, key.bytes()).unwrap());
        for i in 0..3 {
            log.audit(&entry(i), Durability::Lazy).await.unwrap();
        }
        let shipping = shipper(&nats.url(), &log, "copied", &master).await;
        wait_phase(&shipping, "the log is shipped", |s| s.shipped.seq == 3).await;
        shipping.finish(WAIT).await;
    }
    let copied_dir = std::process::Command::new("cp")
        .arg("-a")
        .arg(&one)
        .arg(&two)
        .status()
        .unwrap();
    assert!(copied_dir.success());

    let open = |dir: &Path| {
        let key = ChainKey::open(dir, &master).unwrap();
        Arc::new(EventLog::open(dir, key.bytes()).unwrap())
    };
    let (log_one, log_two) = (open(&one), open(&two));
    let first = shipper(&nats.url(), &log_one, "copied", &master).await;
    let second = shipper(&nats.url(), &log_two, "copied", &master).await;
    for shipping in [&first, &second] {
        wait_phase(shipping, "resumed at record 3", |s| {
            s.phase == ShipPhase::Shipping && s.shipped.seq == 3
        })
        .await;
    }
    let stream_seq_of_3 = first.state().borrow().stream_seq;

    let mine = log_one.audit(&entry(100), Durability::Lazy).await.unwrap();
    wait_phase(&first, "the first ships record 4", |s| {
        s.shipped.seq == mine
    })
    .await;
    let theirs = log_two.audit(&entry(200), Durability::Lazy).await.unwrap();
    assert_eq!(theirs, mine);
    let stopped = wait_phase(&second, "the second writer is refused", |s| {
        matches!(s.phase, ShipPhase::Stopped(_))
    })
    .await;
    let hash = |log: &EventLog, seq| {
        decode::<Record>(&log.raw_record(seq).unwrap().unwrap())
            .unwrap()
            .hash
    };
    assert_eq!(
        stopped.phase,
        ShipPhase::Stopped(Conflict::Record {
            index: 4,
            stream_seq: stream_seq_of_3 + 1,
            stream_hash: Some(hash(&log_one, 4)),
            local_hash: Some(hash(&log_two, 4)),
            expected_stream_seq: stream_seq_of_3,
        })
    );
    assert_eq!(
        stopped.shipped.seq, 3,
        "nothing of the second log reached the stream"
    );

    // The first goes on; the copy is its chain alone.
    let head = log_one.audit(&entry(101), Durability::Lazy).await.unwrap();
    wait_phase(&first, "the first ships on", |s| s.shipped.seq == head).await;
    first.finish(WAIT).await;
    second.finish(WAIT).await;
    let copy = copied(&nats.url(), "copied").await;
    let local: Vec<Vec<u8>> = (1..=head)
        .map(|seq| log_one.raw_record(seq).unwrap().unwrap())
        .collect();
    assert_exact_copy(&copy, &local);
    // The anchor and chain key the first wrote make the copy verifiable as well.
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "copied");
    assert_eq!(code, Some(0), "{}", text(&out));
    assert_eq!(report["records"], head, "{report}");

    // Writers that think the subject ends earlier, or is empty, are refused the same way.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for stale in [0, copy[0].stream_seq] {
        let refused = js
            .send_publish(
                audit_subject("copied"),
                PublishMessage::build()
                    .payload(copy[1].payload.clone().into())
                    .expected_last_subject_sequence(stale),
            )
            .await
            .unwrap()
            .await;
        assert!(refused.is_err(), "a publish expecting {stale} was stored");
    }
}

/// What the stream holds is on the local disk first: a crash right after shipping (here: the
/// log's files copied while it is open, with sled's background flush off) leaves a log that
/// still has every shipped record, so a restarted node never finds the copy ahead of its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_on_the_local_disk_before_it_reaches_the_stream() {
    tgingest::telemetry::install_crypto_provider();
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([0x24; 32]);
    let (live, image) = (dir.path().join("live"), dir.path().join("image"));
    let (key, _) = ChainKey::open_or_create(&live, &master).unwrap();
    let no_background_flush = EventLogOptions {
        background_flush_ms: None,
    };
    let log = Arc::new(EventLog::open_with(&live, key.bytes(), &no_background_flush).unwrap());
    let shipping = shipper(&nats.url(), &log, "durable", &master).await;
    let mut head = 0;
    for i in 0..3 {
        head = log.audit(&entry(i), Durability::Lazy).await.unwrap();
    }
    let shipped = wait_phase(&shipping, "the records are shipped", |s| {
        s.shipped.seq == head
    })
    .await;

    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&live)
        .arg(&image)
        .status()
        .unwrap();
    assert!(copied.success());
    let crashed = EventLog::open(&image, key.bytes()).unwrap();
    assert!(
        crashed.head().seq >= shipped.shipped.seq,
        "the crash image ends at {}, the stream has {}",
        crashed.head().seq,
        shipped.shipped.seq
    );
    let bytes = crashed.raw_record(shipped.shipped.seq).unwrap().unwrap();
    assert_eq!(decode::<Record>(&bytes).unwrap().hash, shipped.shipped.hash);
    shipping.finish(WAIT).await;
}

/// A node started under the id of another node, with its own data dir (or a node whose data
/// dir was replaced), finds a chain in the stream that its log does not hold: it stops
/// shipping, overwrites nothing (the other chain still verifies), and records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_is_not_its_stream_copy_stops_shipping_and_overwrites_nothing() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let first = start(&config(&nats.url(), dir.path(), "twin")).await;
    append(&first, 5).await;
    let shipped = shipped_and_anchored(&first).await;

    let second_dir = tempfile::tempdir().unwrap();
    let mut second_config = config(&nats.url(), second_dir.path(), "twin");
    second_config.security.master_key_file = dir.path().join("master.key");
    let second = start(&second_config).await;
    let mut state = second.audit_shipping();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s.phase, ShipPhase::Stopped(_))),
    )
    .await
    .expect("the second writer stops")
    .expect("the shipper's state");
    let phase = state.borrow().phase.clone();
    match phase {
        ShipPhase::Stopped(Conflict::Record {
            index,
            stream_hash,
            local_hash,
            ..
        }) => {
            assert_eq!(index, shipped.shipped.seq);
            assert_eq!(stream_hash, Some(shipped.shipped.hash));
            assert_eq!(local_hash, None, "the second log does not reach that index");
        }
        other => panic!("expected a record conflict, got {other:?}"),
    }
    let conflicts: Vec<AuditEntry> = second
        .eventlog
        .records()
        .map(|r| r.unwrap())
        .filter_map(|r| decode::<AuditEntry>(&r.body).ok())
        .filter(|e| e.action == "audit_stream.conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(
        conflicts[0].details["stream_hash"],
        hex::encode(shipped.shipped.hash)
    );

    // The first node goes on shipping as if nothing happened; the copy is its chain alone.
    append(&first, 4).await;
    shipped_and_anchored(&first).await;
    second.shutdown().await.expect("clean shutdown");
    first.shutdown().await.expect("clean shutdown");
    let (code, report, out) = verify_node(dir.path(), &nats.url(), "twin");
    assert_eq!(code, Some(0), "{}", text(&out));
    assert_eq!(report["ok"], true, "{report}");
}

/// Not a test: the cost of shipping, printed (run with `--ignored --nocapture`). Times `N` lazy
/// appends to a bare log and to a running node's log (whose shipper trails it), how long the
/// copy takes to catch up meanwhile, and how fast a node ships a backlog of `N` records written
/// while it was stopped (shipping alone, nothing else competing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
async fn shipping_cost_per_record() {
    const N: usize = 20_000;
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / N as f64;

    let bare = EventLog::open(&dir.path().join("bare"), [7; 32]).unwrap();
    let started = std::time::Instant::now();
    for i in 0..N {
        bare.audit(&entry(i), Durability::Lazy).await.unwrap();
    }
    let bare_append = started.elapsed();

    let config = config(&nats.url(), dir.path(), "bench");
    let node = start(&config).await;
    shipped_and_anchored(&node).await;
    let started = std::time::Instant::now();
    append(&node, N).await;
    let node_append = started.elapsed();
    caught_up_with_head(&node).await;
    let caught_up = started.elapsed();
    node.shutdown().await.expect("clean shutdown");
    println!(
        "{N} lazy audit records: bare log {:.1} µs/append; a node's log with its shipper \
         trailing {:.1} µs/append; the copy caught up {:.2} s after the first append",
        per(bare_append),
        per(node_append),
        caught_up.as_secs_f64(),
    );

    {
        let log = open_log(&config);
        for i in 0..N {
            log.audit(&entry(i), Durability::Lazy).await.unwrap();
        }
        log.flush().await.unwrap();
    }
    let node = start(&config).await;
    let started = std::time::Instant::now();
    caught_up_with_head(&node).await;
    let backlog = started.elapsed();
    node.shutdown().await.expect("clean shutdown");
    println!(
        "a backlog of {N} records shipped in {:.2} s: {:.1} µs/record, {:.0} records/s",
        backlog.as_secs_f64(),
        per(backlog),
        N as f64 / backlog.as_secs_f64()
    );
}
