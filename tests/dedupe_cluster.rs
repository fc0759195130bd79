//! The dedupe stage when several nodes share `TG_RAW`: the same event id reaching two nodes'
//! dedupe stages is passed on once, the node-local horizon still holds past the shared TTL, and
//! an unavailable shared store makes the stage wait instead of passing events on unchecked.
//!
//! Also the benchmark behind the choice (`#[ignore]`d; see `tgingest::pipeline::shared_seen`):
//! `cargo test --release --locked --test dedupe_cluster -- --ignored --nocapture`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use bytes::Bytes;

use support::TestNats;
use support::cluster::{ClusterRig, timing};
use support::events::Message;
use support::rig::{nats_and_switchboard, node_config};
use tgingest::bus::{Applied, BUCKET_SEEN, Bus, STREAM_CLEAN, STREAM_RAW, raw_subject};
use tgingest::config::{Config, Dur, Storage};
use tgingest::event::{ChatKind, Event};
use tgingest::node::Node;
use tgingest::pipeline::PipelineStats;
use tgingest::pipeline::clean::DEDUPE_CONSUMER;
use tgingest::pipeline::seen::SeenSet;
use tgingest::pipeline::shared_seen::{Candidate, SharedSeen, Verdict};
use tgingest::switchboard::{FakeOptions, FakeSwitchboard};
use tgingest::telegram::simulated::SimulatorConfig;

const WAIT: Duration = Duration::from_secs(60);

/// Message `n` of one account in one supergroup.
fn event(n: u64) -> Event {
    Message {
        kind: ChatKind::Supergroup,
        bare_chat: 4_242,
        n,
        title: None,
        sender_name: None,
        text: format!("message {n}"),
    }
    .event()
}

/// Publishes one copy of `e` to `TG_RAW` as a source does, with `Nats-Msg-Id = msg_id`: a copy
/// sent again later (after `TG_RAW`'s duplicate window) is a new message there.
async fn publish_copy(bus: &Bus, e: &Event, msg_id: String) {
    let payload = tgingest::codec::encode(e).expect("encode").into();
    let ack = bus
        .publish_acked(raw_subject(&e.account_id, e.chat.kind), msg_id, payload)
        .await
        .expect("TG_RAW PubAck");
    assert!(!ack.duplicate, "each copy must reach TG_RAW");
}

/// One node's pipeline on the shared bus: no accounts, the test plays the source.
struct Pipeline {
    node: Option<Node>,
    stats: Arc<PipelineStats>,
}

impl Pipeline {
    async fn start(config: &Config) -> Pipeline {
        let node = Node::start(config.clone()).await.expect("node");
        let stats = node.start_pipeline().await.expect("pipeline");
        Pipeline {
            node: Some(node),
            stats,
        }
    }

    /// Copies this node's dedupe stage has decided, whichever way.
    fn decided(&self) -> u64 {
        let s = &self.stats;
        s.published_clean.get()
            + s.duplicates_bus_clean.get()
            + s.duplicates_seen_set.get()
            + s.duplicates_shared.get()
            + s.filtered.total()
    }

    async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A node of a cluster on `nats_url`: `base`'s streams, buckets and cluster timing, with
/// `cluster.enabled`; its own data dir and node id under `dir`.
fn cluster_node(nats_url: &str, fake: &FakeSwitchboard, dir: &Path, base: &Config) -> Config {
    let mut config = node_config(nats_url, &fake.mcp_url(), dir, SimulatorConfig::default());
    config.streams = base.streams.clone();
    config.kv = base.kv.clone();
    config.cluster = base.cluster.clone();
    config.cluster.enabled = true;
    config.dedupe = base.dedupe.clone();
    config.validate().expect("a valid cluster node config");
    config
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
async fn until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

/// The dedupe consumer's state, if it can be read.
async fn dedupe_consumer(bus: &Bus) -> Option<async_nats::jetstream::consumer::Info> {
    let stream = bus.js.get_stream(STREAM_RAW).await.ok()?;
    let mut consumer = stream
        .get_consumer::<pull::Config>(DEDUPE_CONSUMER)
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Whether the dedupe consumer has delivered and seen acknowledged everything in `TG_RAW`.
async fn raw_drained(bus: &Bus) -> bool {
    dedupe_consumer(bus)
        .await
        .is_some_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
}

/// Messages the dedupe consumer has delivered more than once and not yet seen acknowledged.
async fn redelivered(bus: &Bus) -> u64 {
    dedupe_consumer(bus)
        .await
        .map_or(0, |info| info.num_redelivered as u64)
}

/// The state and config of the stream behind `TG_SEEN`.
async fn seen_stream(bus: &Bus) -> async_nats::jetstream::stream::Info {
    let mut stream = bus
        .js
        .get_stream(format!("KV_{BUCKET_SEEN}"))
        .await
        .expect("TG_SEEN exists");
    stream.info().await.expect("TG_SEEN info").clone()
}

async fn messages_in(bus: &Bus, stream: &str) -> u64 {
    match bus.js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// Event ids the fake Switchboard stored, with how often each.
fn stored(fake: &FakeSwitchboard) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for accepted in fake.accepted() {
        let id = accepted.envelope["payload"]["raw"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *out.entry(id).or_default() += 1;
    }
    out
}

async fn test_bus(url: &str, config: &Config) -> Bus {
    Bus::connect(url, &config.nats, "dedupe-test")
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_reaching_two_nodes_dedupe_stages_is_passed_on_once() {
    tgingest::telemetry::install_crypto_provider();
    tgingest::telemetry::init_logging(tgingest::config::LogFormat::Human, "warn");
    let rig = ClusterRig::start().await;
    let url = rig.cluster.url();
    let fake = FakeSwitchboard::start(FakeOptions::default())
        .await
        .expect("fake switchboard");
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let configs: Vec<Config> = dirs
        .iter()
        .map(|d| cluster_node(&url, &fake, d.path(), &rig.config))
        .collect();
    let bus = test_bus(&url, &configs[0]).await;
    let first: Vec<Event> = (1..=20).map(event).collect();

    // Node A passes every event on once.
    let mut a = Pipeline::start(&configs[0]).await;
    for e in &first {
        publish_copy(&bus, e, e.event_id.clone()).await;
    }
    assert!(
        until(WAIT, || async {
            a.stats.published_clean.get() == 20 && raw_drained(&bus).await
        })
        .await,
        "node A did not pass the first copies on"
    );
    a.stop().await;

    // The source sends them all again (a new owner resuming from an older checkpoint, after
    // TG_RAW's duplicate window: new Msg-Ids there); node B's dedupe stage gets every copy.
    let mut b = Pipeline::start(&configs[1]).await;
    for e in &first {
        publish_copy(&bus, e, format!("{}:again", e.event_id)).await;
    }
    assert!(
        until(WAIT, || async { b.decided() == 20 }).await,
        "node B decided {} of 20 copies",
        b.decided()
    );
    assert_eq!(
        (
            b.stats.published_clean.get(),
            b.stats.duplicates_bus_clean.get()
        ),
        (0, 0),
        "node B passed on copies node A had passed on"
    );
    assert_eq!(b.stats.duplicates_shared.get(), 20);

    // Two nodes at once, each event sent twice, interleaved: each is passed on once, whichever
    // node gets which copy.
    let mut c = Pipeline::start(&configs[2]).await;
    let second: Vec<Event> = (101..=140).map(event).collect();
    for e in &second {
        publish_copy(&bus, e, e.event_id.clone()).await;
        publish_copy(&bus, e, format!("{}:again", e.event_id)).await;
    }
    assert!(
        until(WAIT, || async { b.decided() + c.decided() == 20 + 80 }).await,
        "nodes B and C decided {} of 100 copies",
        b.decided() + c.decided()
    );
    let passed = b.stats.published_clean.get() + c.stats.published_clean.get();
    let repeats = b.stats.duplicates_bus_clean.get() + c.stats.duplicates_bus_clean.get();
    assert_eq!((passed, repeats), (40, 0), "each event passed on once");
    assert_eq!(
        b.stats.shared_errors.get() + c.stats.shared_errors.get(),
        0,
        "every refused claim was recognized as one (nats-server answers it two ways)"
    );

    let all: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e.event_id.clone())
        .collect();
    assert!(
        until(WAIT, || async { stored(&fake).len() == all.len() }).await,
        "Switchboard stored {} of {} events",
        stored(&fake).len(),
        all.len()
    );
    let stored = stored(&fake);
    assert!(
        all.iter().all(|id| stored.get(id) == Some(&1)),
        "{stored:?}"
    );
    assert_eq!(messages_in(&bus, STREAM_CLEAN).await, 60);
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_cluster_node_sets_up_the_shared_bucket_and_its_age_is_the_shared_ttl() {
    let nats = TestNats::start();
    let mut config = short_window(&nats);
    let bus = test_bus(&nats.url(), &config).await;
    bus.setup(&config).await.expect("set-up of a single node");
    assert!(
        bus.js.get_key_value(BUCKET_SEEN).await.is_err(),
        "a single node must not pay for TG_SEEN"
    );
    config.cluster.enabled = true;
    let report = bus.setup(&config).await.expect("set-up of a cluster node");
    assert!(
        report
            .items
            .contains(&(BUCKET_SEEN.to_string(), Applied::Created))
    );
    let info = seen_stream(&bus).await;
    assert_eq!(info.config.max_age, Duration::from_secs(4));
    assert_eq!(info.config.max_messages_per_subject, 1);

    config.dedupe.shared_ttl = Dur(Duration::from_secs(60));
    let report = bus.setup(&config).await.expect("set-up again");
    assert!(
        report
            .items
            .contains(&(BUCKET_SEEN.to_string(), Applied::Updated))
    );
    let info = seen_stream(&bus).await;
    assert_eq!(info.config.max_age, Duration::from_secs(60));
}

/// A single-server bus with the shortened cluster timing and a short shared window.
fn short_window(nats: &TestNats) -> Config {
    let mut base = Config::default();
    base.nats.url = nats.url();
    base.cluster = timing();
    base.streams.raw.duplicate_window = Dur(Duration::from_secs(1));
    base.dedupe.shared_ttl = Dur(Duration::from_secs(4));
    base
}

/// One cluster node's pipeline on a single nats-server, with a test connection to the bus.
struct OneNode {
    node: Pipeline,
    bus: Bus,
    config: Config,
    fake: FakeSwitchboard,
    _nats: TestNats,
    _dir: tempfile::TempDir,
}

impl OneNode {
    /// Claims live for `shared_ttl`.
    async fn start(shared_ttl: Duration) -> OneNode {
        let (nats, fake) = nats_and_switchboard().await;
        let dir = tempfile::tempdir().unwrap();
        let mut base = short_window(&nats);
        base.dedupe.shared_ttl = Dur(shared_ttl);
        let config = cluster_node(&nats.url(), &fake, dir.path(), &base);
        let bus = test_bus(&nats.url(), &config).await;
        let node = Pipeline::start(&config).await;
        OneNode {
            node,
            bus,
            config,
            fake,
            _nats: nats,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_after_the_shared_window_is_still_dropped_by_the_node_that_passed_it_on() {
    let mut one = OneNode::start(Duration::from_secs(4)).await;
    let OneNode { node, bus, .. } = &mut one;
    let e = event(1);
    publish_copy(bus, &e, e.event_id.clone()).await;
    assert!(
        until(WAIT, || async { node.stats.published_clean.get() == 1 }).await,
        "the first copy was not passed on"
    );
    let seen = bus.js.get_key_value(BUCKET_SEEN).await.expect("TG_SEEN");
    assert!(
        seen.entry(&e.event_id).await.expect("read").is_some(),
        "the id was not claimed in the shared store"
    );
    assert!(
        until(WAIT, || async {
            matches!(seen.entry(&e.event_id).await, Ok(None))
        })
        .await,
        "the claim never expired"
    );

    publish_copy(bus, &e, format!("{}:again", e.event_id)).await;
    assert!(
        until(WAIT, || async { node.decided() == 2 }).await,
        "the second copy was not decided"
    );
    assert_eq!(
        node.stats.duplicates_seen_set.get(),
        1,
        "the local horizon dropped it"
    );
    assert_eq!(
        (
            node.stats.published_clean.get(),
            node.stats.duplicates_bus_clean.get()
        ),
        (1, 0)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_shared_store_is_unavailable_events_wait_and_none_is_lost() {
    let mut one = OneNode::start(Duration::from_secs(4)).await;
    let OneNode {
        node,
        bus,
        config,
        fake,
        ..
    } = &mut one;
    bus.js
        .delete_key_value(BUCKET_SEEN)
        .await
        .expect("remove TG_SEEN");

    let events: Vec<Event> = (1..=10).map(event).collect();
    for e in &events {
        publish_copy(bus, e, e.event_id.clone()).await;
    }
    assert!(
        until(WAIT, || async { node.stats.shared_errors.get() >= 20 }).await,
        "the dedupe stage never tried the shared store (errors: {})",
        node.stats.shared_errors.get()
    );
    assert_eq!(
        (
            node.stats.published_clean.get(),
            messages_in(bus, STREAM_CLEAN).await
        ),
        (0, 0),
        "events were passed on unchecked"
    );

    bus.setup(config).await.expect("TG_SEEN back");
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert!(
        until(WAIT, || async { stored(fake).len() == ids.len() }).await,
        "Switchboard stored {} of 10 events after the store came back",
        stored(fake).len()
    );
    let stored = stored(fake);
    assert!(
        ids.iter().all(|id| stored.get(id) == Some(&1)),
        "{stored:?}"
    );
    assert_eq!(node.stats.published_clean.get(), 10);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_event_was_not_yet_passed_on_lets_its_redelivery_through() {
    let mut one = OneNode::start(Duration::from_secs(300)).await;
    let OneNode {
        node, bus, config, ..
    } = &mut one;
    // TG_CLEAN stops taking tg.clean.>: every claim is made, no publish succeeds, and every
    // message comes again, now finding its own claim.
    let mut clean = bus.js.get_stream(STREAM_CLEAN).await.expect("TG_CLEAN");
    let mut parked = clean.info().await.expect("TG_CLEAN info").config.clone();
    parked.subjects = vec!["tg.clean-parked.>".into()];
    bus.js.update_stream(parked).await.expect("park TG_CLEAN");
    let events: Vec<Event> = (1..=10).map(event).collect();
    for e in &events {
        publish_copy(bus, e, e.event_id.clone()).await;
    }
    let seen = bus.js.get_key_value(BUCKET_SEEN).await.expect("TG_SEEN");
    assert!(
        until(WAIT, || async {
            let mut claimed = 0;
            for e in &events {
                claimed += usize::from(matches!(seen.entry(&e.event_id).await, Ok(Some(_))));
            }
            claimed == events.len()
        })
        .await,
        "not every event was claimed"
    );
    // Every message failed at least once after its claim, and came again.
    assert!(
        until(WAIT, || async {
            redelivered(bus).await >= events.len() as u64
        })
        .await,
        "the claimed messages were not redelivered (dropped as duplicates: {})",
        node.stats.duplicates_shared.get()
    );
    assert_eq!(node.stats.published_clean.get(), 0);

    bus.setup(config)
        .await
        .expect("TG_CLEAN takes tg.clean.> again");
    assert!(
        until(WAIT, || async { node.stats.published_clean.get() == 10 }).await,
        "{} of 10 claimed events passed on once TG_CLEAN was back (shared drops: {})",
        node.stats.published_clean.get(),
        node.stats.duplicates_shared.get()
    );
    assert_eq!(node.stats.duplicates_shared.get(), 0);
    assert_eq!(messages_in(bus, STREAM_CLEAN).await, 10);
    node.stop().await;
}

/// Resident memory of a process, in bytes (from `/proc`).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `n` ids shaped like event ids.
fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let h = blake3::hash(format!("{prefix}-{i}").as_bytes());
            hex::encode(&h.as_bytes()[..16])
        })
        .collect()
}

/// CPU seconds (user + system) a process has used so far, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// CPU seconds used so far by this process and by the servers `pids`.
fn cpu_now(pids: &[u32]) -> (f64, f64) {
    (
        cpu_seconds(std::process::id()),
        pids.iter().map(|p| cpu_seconds(*p)).sum(),
    )
}

/// Prints the rate, the wall time per event and the CPU per event of this process (the node's
/// side) and of the three servers together, between `cpu_before` and now.
fn report(what: &str, events: usize, took: Duration, pids: &[u32], cpu_before: (f64, f64)) {
    let us = took.as_secs_f64() * 1e6 / events as f64;
    let rate = events as f64 / took.as_secs_f64();
    let (client, servers) = cpu_now(pids);
    let per = |cpu: f64| cpu * 1e6 / events as f64;
    println!(
        "{what:<62} {rate:>9.0} events/s {us:>8.1} µs/event wall; CPU µs/event: node {:>6.1}, servers {:>6.1}",
        per(client - cpu_before.0),
        per(servers - cpu_before.1)
    );
}

/// Decides every id as the dedupe stage does, `in_flight` claims at a time, as copies in
/// `TG_RAW` from sequence `first` on; returns the time taken and asserts every answer is
/// `expect`.
async fn decide_all(
    shared: &SharedSeen,
    ids: &[String],
    (in_flight, first): (usize, u64),
    expect: Verdict,
) -> Duration {
    let started = Instant::now();
    for (n, chunk) in ids.chunks(in_flight).enumerate() {
        let copies: Vec<Candidate<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| Candidate {
                event_id: id,
                raw_sequence: first + (n * in_flight + i) as u64,
            })
            .collect();
        for verdict in shared.decide(&copies).await {
            assert_eq!(verdict.expect("decided"), expect);
        }
    }
    started.elapsed()
}

/// Three clustered servers with the streams and buckets set up at R3, and their pids.
async fn bench_cluster() -> (ClusterRig, Bus, Vec<u32>) {
    let mut rig = ClusterRig::start().await;
    let bus = rig.bus(&rig.cluster.url()).await;
    let pids = rig
        .cluster
        .servers()
        .iter()
        .filter_map(|s| s.pid())
        .collect();
    (rig, bus, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures (run with --ignored --nocapture)"]
async fn dedupe_cost_per_event_on_a_three_server_r3_cluster() {
    tgingest::telemetry::install_crypto_provider();
    println!(
        "three nats-servers on one host, R3, sync_interval: always (deploy/nats/cluster-node.conf)"
    );

    // 1. The shared store as the dedupe stage uses it (SharedSeen::decide), file and memory,
    //    each on a fresh cluster so the servers' memory growth is the keys' alone.
    for storage in [Storage::File, Storage::Memory] {
        let (rig, bus, pids) = bench_cluster().await;
        let mut config = rig.config.clone();
        config.cluster.enabled = true;
        config.dedupe.shared_storage = storage;
        bus.setup(&config).await.expect("TG_SEEN");
        let shared = SharedSeen::open(&bus).await.expect("open");
        let label = format!("{storage:?}").to_lowercase();

        let before: Vec<u64> = pids.iter().map(|p| rss_bytes(*p)).collect();
        let held = ids(&format!("{label}-held"), 300_000);
        decide_all(&shared, &held, (512, 1), Verdict::New).await;
        let after: Vec<u64> = pids.iter().map(|p| rss_bytes(*p)).collect();
        let per_key: Vec<i64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| ((*a as f64 - *b as f64) / held.len() as f64).round() as i64)
            .collect();
        let info = seen_stream(&bus).await;
        println!(
            "TG_SEEN {label}: server RSS growth per key held {per_key:?} bytes (each server); {} bytes stored per key",
            info.state.bytes / info.state.messages.max(1)
        );

        let sequential = ids(&format!("{label}-seq"), 1_000);
        let cpu = cpu_now(&pids);
        let took = decide_all(&shared, &sequential, (1, 1), Verdict::New).await;
        let what = format!("TG_SEEN {label}: create-if-absent, 1 in flight");
        report(&what, sequential.len(), took, &pids, cpu);
        for in_flight in [16, 64, 512] {
            let many = ids(&format!("{label}-{in_flight}"), 20_480);
            let cpu = cpu_now(&pids);
            let took = decide_all(&shared, &many, (in_flight, 1), Verdict::New).await;
            let what = format!("TG_SEEN {label}: create-if-absent, {in_flight} in flight");
            report(&what, many.len(), took, &pids, cpu);
        }
        let cpu = cpu_now(&pids);
        let took = decide_all(&shared, &sequential, (64, 1 << 40), Verdict::Duplicate).await;
        let what = format!("TG_SEEN {label}: a duplicate (refused, leader read), 64 in flight");
        report(&what, sequential.len(), took, &pids, cpu);
    }

    // 2. The node-local seen-set as the dedupe stage uses it: per batch of 512, a lookup per
    //    id, one mark batch and one flush. (Partitioning TG_RAW would cost only this.)
    let (_rig, bus, pids) = bench_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let seen = SeenSet::open(dir.path(), Duration::from_secs(7 * 86_400)).unwrap();
    let local = ids("local", 102_400);
    let (cpu, started) = (cpu_now(&pids), Instant::now());
    for batch in local.chunks(512) {
        for id in batch {
            assert!(!seen.contains(id).unwrap());
        }
        seen.mark_all(batch.iter().map(String::as_str)).unwrap();
        seen.flush().unwrap();
    }
    let what = "local seen-set: batch of 512 (lookups, mark, flush)";
    report(what, local.len(), started.elapsed(), &pids, cpu);

    // 3. A shared seen-log: one R3 append per batch of 512 ids (each node would then also write
    //    every other node's ids into its own seen-set: M x the local cost above).
    bus.js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH_SEEN_LOG".into(),
            subjects: vec!["bench.seen.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("stream");
    let logged = ids("log", 102_400);
    let (cpu, started) = (cpu_now(&pids), Instant::now());
    for batch in logged.chunks(512) {
        let payload = Bytes::from(batch.concat());
        bus.js
            .publish("bench.seen.node-1", payload)
            .await
            .expect("send")
            .await
            .expect("PubAck");
    }
    let what = "R3 stream append, one per batch of 512 ids";
    report(what, logged.len(), started.elapsed(), &pids, cpu);
}
