//! The live grammers session of one account: state in memory, saved sealed to TG_SESSIONS by a
//! debounced writer, flushed on demand, driven through grammers itself, against a real nats-server.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use grammers_client::Client;
use grammers_mtsender::{SenderPool, UpdatesConfiguration};
use grammers_session::types::{
    ChannelKind, ChannelState, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use grammers_session::{Session, SessionData};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::TestNats;
use tgingest::bus::{BUCKET_SESSIONS, Bus};
use tgingest::cluster::fenced::{FencedError, METRIC_STALE_OWNER_WRITES, Owner};
use tgingest::config::Config;
use tgingest::keys::MasterKey;
use tgingest::telegram::session::{
    LiveSessionError, LiveSessionOptions, METRIC_SESSION_WRITE_ERRORS, SealedSession, SessionError,
    SessionStore, StoreError, custom_dc_option,
};

/// Upper bound for any wait on observable state; generous because CI machines have 2 cores.
const DEADLINE: Duration = Duration::from_secs(20);
const MASTER: [u8; 32] = [0x42; 32];
const AUTH_KEY: [u8; 256] = [0xa5; 256];

// One global DebuggingRecorder for this test binary (the writer emits from tokio tasks); its
// snapshots reset counters, so they are folded into running totals.
struct Metrics {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<String, u64>>,
}

fn counter(name: &str) -> u64 {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    let m = METRICS.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        Metrics {
            snapshotter,
            totals: Mutex::new(HashMap::new()),
        }
    });
    let mut totals = m.totals.lock().expect("metrics lock");
    for (key, _, _, value) in m.snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            *totals.entry(key.key().name().to_owned()).or_default() += n;
        }
    }
    totals.get(name).copied().unwrap_or(0)
}

async fn bus(nats: &TestNats) -> Bus {
    let bus = Bus::connect(&nats.url(), &Config::default().nats, "test")
        .await
        .expect("connect");
    bus.setup(&Config::default()).await.expect("setup");
    bus
}

async fn store(bus: &Bus, key: [u8; 32]) -> Arc<SessionStore> {
    Arc::new(
        SessionStore::open(bus, MasterKey::from_bytes(key))
            .await
            .expect("open store"),
    )
}

/// The KV revision of the account's entry: with one key in a fresh bucket, the number of writes.
async fn revision(bus: &Bus, account: &str) -> u64 {
    let kv = bus.js.get_key_value(BUCKET_SESSIONS).await.unwrap();
    kv.entry(account).await.unwrap().map_or(0, |e| e.revision)
}

fn options(write_delay: Duration) -> LiveSessionOptions {
    LiveSessionOptions { write_delay }
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn user(id: i64, hash: i64) -> PeerInfo {
    PeerInfo::User {
        id,
        auth: Some(PeerAuth::from_hash(hash)),
        bot: Some(false),
        is_self: None,
    }
}

fn channel(id: i64, hash: i64) -> PeerInfo {
    PeerInfo::Channel {
        id,
        auth: Some(PeerAuth::from_hash(hash)),
        kind: Some(ChannelKind::Megagroup),
    }
}

fn fresh_session(
    store: Arc<SessionStore>,
    account: &str,
    delay: Duration,
) -> impl Future<Output = Result<SealedSession, LiveSessionError>> {
    let dc = custom_dc_option(2, "127.0.0.1:4430".parse().unwrap(), Some(AUTH_KEY));
    SealedSession::create_for_dc(store, account, 2, dc, options(delay))
}

#[tokio::test]
async fn state_survives_a_round_trip_through_the_store() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = fresh_session(store.clone(), "acct-rt", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(session.home_dc_id().unwrap(), 2);

    session.set_home_dc_id(4).await.unwrap();
    let dc4 = custom_dc_option(4, "127.0.0.2:4431".parse().unwrap(), Some([7; 256]));
    session.set_dc_option(&dc4).await.unwrap();
    session.cache_peer(user(1001, 11)).await.unwrap();
    session.cache_peer(channel(2002, 22)).await.unwrap();
    session
        .cache_peer(PeerInfo::User {
            id: 4242,
            auth: Some(PeerAuth::from_hash(42)),
            bot: Some(false),
            is_self: Some(true),
        })
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::All(UpdatesState {
            pts: 10,
            qts: 20,
            date: 30,
            seq: 40,
            channels: vec![ChannelState { id: 2002, pts: 5 }],
        }))
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Primary {
            pts: 11,
            date: 31,
            seq: 41,
        })
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Secondary { qts: 21 })
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Channel { id: 3003, pts: 7 })
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Channel { id: 2002, pts: 6 })
        .await
        .unwrap();
    assert!(session.status().dirty);
    session.flush().await.unwrap();
    assert!(!session.status().dirty);
    drop(session);

    let again = SealedSession::load(store, "acct-rt", LiveSessionOptions::default())
        .await
        .unwrap();
    assert_eq!(again.home_dc_id().unwrap(), 4);
    assert_eq!(again.dc_option(4).unwrap(), Some(dc4));
    assert_eq!(
        again.dc_option(2).unwrap().unwrap().auth_key,
        Some(AUTH_KEY)
    );
    assert_eq!(again.dc_option(1).unwrap(), None, "only the custom DCs");
    let peer = |id| again.peer(id);
    assert_eq!(
        peer(PeerId::user(1001).unwrap()).await.unwrap(),
        Some(user(1001, 11))
    );
    assert_eq!(
        peer(PeerId::channel(2002).unwrap()).await.unwrap(),
        Some(channel(2002, 22))
    );
    let me = peer(PeerId::self_user()).await.unwrap();
    assert!(
        matches!(me, Some(PeerInfo::User { id: 4242, .. })),
        "{me:?}"
    );
    assert_eq!(again.snapshot().user_id, Some(4242));
    assert_eq!(
        again.updates_state().await.unwrap(),
        UpdatesState {
            pts: 11,
            qts: 21,
            date: 31,
            seq: 41,
            channels: vec![
                ChannelState { id: 3003, pts: 7 },
                ChannelState { id: 2002, pts: 6 }
            ],
        }
    );
    assert!(
        !again.status().dirty,
        "a loaded session has nothing to save"
    );
    // Debug shows neither the auth key nor the peers.
    let debug = format!("{again:?}");
    assert!(!debug.contains("a5") && !debug.contains("1001"), "{debug}");
}

#[tokio::test]
async fn a_burst_of_peer_caching_is_written_a_few_times_not_a_thousand() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = fresh_session(store.clone(), "acct-burst", Duration::from_millis(500))
        .await
        .unwrap();
    let created = revision(&bus, "acct-burst").await;
    assert_eq!(session.status().last_revision, Some(created));

    for id in 1..=1000 {
        session.cache_peer(user(id, id * 7)).await.unwrap();
    }
    eventually("the burst is saved", || !session.status().dirty).await;
    let writes = revision(&bus, "acct-burst").await - created;
    assert!(
        (1..=3).contains(&writes),
        "1000 cache_peer calls gave {writes} KV revisions"
    );
    assert_eq!(session.status().writes, writes);
    let saved = store.get("acct-burst").await.unwrap().unwrap();
    assert_eq!(saved.peer_infos.len(), 1000);

    // Caching what is already known changes nothing and writes nothing.
    session.cache_peer(user(5, 35)).await.unwrap();
    assert!(!session.status().dirty);
}

#[tokio::test]
async fn flush_makes_the_latest_state_visible_to_another_store_at_once() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    // The writer would wait an hour; only flush can have written.
    let session = fresh_session(store, "acct-flush", Duration::from_secs(3600))
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::Primary {
            pts: 77,
            date: 1,
            seq: 2,
        })
        .await
        .unwrap();
    session.cache_peer(channel(9, 99)).await.unwrap();
    session.flush().await.unwrap();

    let other_bus = Bus::connect(&nats.url(), &Config::default().nats, "other")
        .await
        .unwrap();
    let other = SessionStore::open(&other_bus, MasterKey::from_bytes(MASTER))
        .await
        .unwrap();
    let seen = other.get("acct-flush").await.unwrap().unwrap();
    assert_eq!(seen.updates_state.pts, 77);
    assert_eq!(seen.peer_infos, vec![channel(9, 99)]);
    assert_eq!(seen, session.snapshot());
    // Nothing left to write: flushing again writes nothing.
    let writes = session.status().writes;
    session.flush().await.unwrap();
    assert_eq!(session.status().writes, writes);
}

#[tokio::test]
async fn a_wrong_master_key_cannot_open_it_and_an_existing_one_is_not_replaced() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = fresh_session(store.clone(), "acct-key", Duration::from_secs(1))
        .await
        .unwrap();
    drop(session);

    let wrong = self::store(&bus, [0x43; 32]).await;
    let err = SealedSession::load(wrong, "acct-key", LiveSessionOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LiveSessionError::Store(StoreError::Session(SessionError::Unseal { .. }))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("wrong master key"), "{err}");

    let err = fresh_session(store.clone(), "acct-key", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LiveSessionError::Store(StoreError::AlreadyExists { .. })
        ),
        "{err}"
    );
    let err = SealedSession::load(store, "acct-none", LiveSessionOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LiveSessionError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_write_is_counted_surfaced_and_retried() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = fresh_session(store.clone(), "acct-fail", Duration::from_millis(200))
        .await
        .unwrap();
    let errors_before = counter(METRIC_SESSION_WRITE_ERRORS);

    // Without its bucket, every write fails.
    bus.js
        .delete_key_value(BUCKET_SESSIONS)
        .await
        .expect("delete bucket");
    session.cache_peer(user(1, 1)).await.unwrap();
    let err = session.flush().await.unwrap_err();
    assert!(matches!(err, LiveSessionError::Write { .. }), "{err}");
    assert!(err.to_string().contains("acct-fail"), "{err}");
    let status = session.status();
    assert!(status.dirty && status.write_errors >= 1, "{status:?}");
    assert!(status.last_error.is_some());
    assert!(counter(METRIC_SESSION_WRITE_ERRORS) > errors_before);

    // The writer keeps trying; once the bucket is back, the change lands without another call.
    bus.setup(&Config::default()).await.expect("setup again");
    eventually("the retried write lands", || !session.status().dirty).await;
    assert_eq!(session.status().last_error, None);
    let saved = store.get("acct-fail").await.unwrap().unwrap();
    assert_eq!(saved.peer_infos, vec![user(1, 1)]);
}

#[tokio::test]
async fn dropping_the_session_saves_what_is_pending_and_stops_the_writer() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = fresh_session(store.clone(), "acct-drop", Duration::from_secs(3600))
        .await
        .unwrap();
    session.cache_peer(user(3, 33)).await.unwrap();
    drop(session);
    // The writer task held the only other reference to the store.
    eventually("the writer task ends", || Arc::strong_count(&store) == 1).await;
    let saved = store.get("acct-drop").await.unwrap().unwrap();
    assert_eq!(saved.peer_infos, vec![user(3, 33)]);
}

#[tokio::test]
async fn grammers_drives_the_session_through_its_own_client_and_update_stream() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let session = Arc::new(
        fresh_session(store.clone(), "acct-grammers", Duration::from_secs(3600))
            .await
            .unwrap(),
    );
    // A real pool and client on the session; the runner is never started, so nothing connects.
    let pool = SenderPool::new(session.clone(), 1);
    let erased = pool.handle.session.clone();
    let client = Client::new(pool.handle.clone());

    // grammers' own import into our session; then read back through the pool's erased session.
    let mut data = SessionData {
        home_dc: 2,
        ..SessionData::default()
    };
    data.dc_options.clear();
    data.dc_options
        .insert(2, session.dc_option(2).unwrap().expect("custom DC"));
    for peer in [user(1001, 11), channel(2002, 22)] {
        data.peer_infos.insert(peer.id(), peer);
    }
    data.updates_state = UpdatesState {
        pts: 100,
        qts: 3,
        date: 1_700_000_000,
        seq: 9,
        channels: vec![ChannelState { id: 2002, pts: 50 }],
    };
    data.import_to(&*session).await.unwrap();
    let peer_ref = erased
        .peer_ref(PeerId::channel(2002).unwrap())
        .await
        .unwrap()
        .expect("cached channel");
    assert_eq!(peer_ref.auth, PeerAuth::from_hash(22));

    // The update stream loads the state from the session (catch-up) and writes it back on sync.
    let stream = client
        .stream_updates(pool.updates, UpdatesConfiguration { catch_up: true })
        .await
        .unwrap();
    session
        .set_update_state(UpdateState::All(UpdatesState::default()))
        .await
        .unwrap();
    stream.sync_update_state().await.unwrap();
    assert_eq!(session.updates_state().await.unwrap(), data.updates_state);

    // What the adapter does after a committed update state: flush, and it is in the store.
    session.flush().await.unwrap();
    let saved = store.get("acct-grammers").await.unwrap().unwrap();
    assert_eq!(saved.updates_state, data.updates_state);
    assert_eq!(saved.peer_infos.len(), 2);
    assert_eq!(saved, session.snapshot());
}

#[tokio::test]
async fn a_session_loaded_again_elsewhere_refuses_the_earlier_holders_writes() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    drop(
        fresh_session(store.clone(), "acct-twice", Duration::from_secs(3600))
            .await
            .unwrap(),
    );
    let first = SealedSession::load(store.clone(), "acct-twice", options(DEADLINE))
        .await
        .unwrap();
    // Another process loads the same session (the account was started again elsewhere)...
    let second = SealedSession::load(store.clone(), "acct-twice", options(DEADLINE))
        .await
        .unwrap();
    second.cache_peer(user(2, 2)).await.unwrap();
    second.flush().await.unwrap();
    // ... so the first one's write must not land on top of it.
    first.cache_peer(user(1, 1)).await.unwrap();
    assert!(first.flush().await.is_err(), "{:?}", first.status());
    let saved = store.get("acct-twice").await.unwrap().unwrap();
    assert_eq!(saved.peer_infos, vec![user(2, 2)]);
}

#[tokio::test]
async fn a_stale_owners_session_write_is_refused_once_a_newer_owner_loaded_it() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let store = store(&bus, MASTER).await;
    let account = "acct-moved";
    drop(
        fresh_session(store.clone(), account, Duration::from_secs(3600))
            .await
            .unwrap(),
    );
    let (old, new) = (Owner::new(1, "node-a"), Owner::new(2, "node-b"));
    let old_session = SealedSession::load_as(store.clone(), account, &old, options(DEADLINE))
        .await
        .unwrap();
    let new_session = SealedSession::load_as(store.clone(), account, &new, options(DEADLINE))
        .await
        .unwrap();
    let stale_before = counter(METRIC_STALE_OWNER_WRITES);

    // The old owner still runs; the new one has loaded the session but written nothing yet.
    old_session.cache_peer(user(1, 1)).await.unwrap();
    let err = old_session.flush().await.unwrap_err();
    assert!(
        matches!(
            &err,
            LiveSessionError::Refused {
                source: FencedError::StaleOwner {
                    mine: 1,
                    stored: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(old_session.status().refused.is_some());
    let refused = tokio::time::timeout(DEADLINE, old_session.refused())
        .await
        .expect("the refusal is signalled");
    assert!(
        matches!(refused, FencedError::StaleOwner { .. }),
        "{refused}"
    );
    assert!(counter(METRIC_STALE_OWNER_WRITES) > stale_before);
    // It stays refused, and cannot load the session back either.
    old_session.cache_peer(user(5, 5)).await.unwrap();
    assert!(old_session.flush().await.is_err());
    let err = SealedSession::load_as(store.clone(), account, &old, options(DEADLINE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LiveSessionError::Refused {
                source: FencedError::StaleOwner { .. },
                ..
            }
        ),
        "{err}"
    );

    // The new owner's writes land, and nothing of the old owner's.
    new_session.cache_peer(user(2, 2)).await.unwrap();
    new_session.flush().await.unwrap();
    assert_eq!(
        store.get(account).await.unwrap().unwrap().peer_infos,
        vec![user(2, 2)]
    );

    // An operator replacing the session (a new login) keeps the owner's epoch: the running
    // session is refused (and must load it again), the old owner still is.
    let mut login = store.get(account).await.unwrap().unwrap();
    login.peer_infos = vec![user(3, 3)];
    store.put(account, &login).await.unwrap();
    new_session.cache_peer(user(4, 4)).await.unwrap();
    let err = new_session.flush().await.unwrap_err();
    assert!(
        matches!(
            &err,
            LiveSessionError::Refused {
                source: FencedError::Replaced { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        SealedSession::load_as(store.clone(), account, &old, options(DEADLINE))
            .await
            .is_err()
    );
    let reloaded = SealedSession::load_as(store.clone(), account, &new, options(DEADLINE))
        .await
        .unwrap();
    assert_eq!(reloaded.snapshot().peer_infos, vec![user(3, 3)]);
}
