//! The grammers adapter (`GrammersGateway`) end to end: the real grammers client, driven through
//! tgingest's `Gateway` trait, against the fake Telegram DC on loopback.
//!
//! What these prove: live messages of every chat kind become correct events; what was sent
//! while the account was away arrives on restart through catch-up, once; an update handed out
//! but never committed is handed out again after a restart (the update state moves only on
//! commit); a too-long difference, which grammers skips silently, is found by the hole check and
//! backfilled; the first start backfills history.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use grammers_session::SessionData;
use grammers_session::storages::MemorySession;
use tgingest::event::{ChatKind, EventKind, Source, marked_chat_id};
use tgingest::telegram::fakedc::{
    ChannelKind, ChatId, FakeDc, FakeDcConfig, PushFaults, SendOptions, WorldLimits,
};
use tgingest::telegram::gateway::{Cursor, Gateway, GatewayError, GatewayFactory, SourceUpdate};
use tgingest::telegram::grammers::gateway::{GrammersFactory, GrammersSettings, SessionOpener};
use tgingest::telegram::route::ConnectRoute;

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> GrammersSettings {
    GrammersSettings {
        api_id: 1,
        update_channel_capacity: 10_000,
        backfill_window: Duration::ZERO,
        backfill_max_per_chat: 1000,
        backfill_pace: Duration::from_millis(10),
        // Short, so that `assert_nothing_more` sees the hole check run twice after the last
        // expected event; the grace stays above the fake DC's delivery latency (a reconnect's
        // difference included), so a live or caught-up message is never taken for a hole.
        hole_check_interval: Duration::from_secs(1),
        hole_grace: Duration::from_secs(5),
        flood_sleep_max: Duration::from_secs(5),
        route: ConnectRoute::Direct,
    }
}

/// One account on the fake DC with a session that survives gateway restarts (in memory).
struct Account {
    dc: FakeDc,
    me: i64,
    settings: GrammersSettings,
    factory: GrammersFactory<MemorySession>,
}

impl Account {
    async fn new(limits: WorldLimits, settings: GrammersSettings) -> Account {
        Account::with_session(limits, settings, |_| {}).await
    }

    /// An account whose session is first changed by `edit`.
    async fn with_session(
        limits: WorldLimits,
        settings: GrammersSettings,
        edit: impl FnOnce(&mut SessionData),
    ) -> Account {
        let dc = FakeDc::start(FakeDcConfig {
            limits,
            ..FakeDcConfig::default()
        })
        .await
        .expect("fake DC");
        let (me, key) = dc.add_account("Me");
        let mut data = dc.session_data(me, key);
        edit(&mut data);
        let session = Arc::new(MemorySession::from(data));
        let opener: SessionOpener<MemorySession> = Arc::new(move |_account: &str, _owner| {
            let session = session.clone();
            Box::pin(async move { Ok(session) })
        });
        Account {
            dc,
            me,
            settings: settings.clone(),
            factory: GrammersFactory::new(settings, opener),
        }
    }

    async fn gateway(&self, from: Option<Cursor>) -> Box<dyn Gateway> {
        let mut gateway = self.factory.create(&self.me.to_string());
        let info = tokio::time::timeout(WAIT, gateway.connect())
            .await
            .expect("connect in time")
            .expect("connect");
        assert_eq!(info.account_id, self.me.to_string());
        tokio::time::timeout(WAIT, gateway.catch_up(from))
            .await
            .expect("catch up in time")
            .expect("catch up");
        gateway
    }
}

async fn next(gateway: &mut Box<dyn Gateway>) -> SourceUpdate {
    tokio::time::timeout(WAIT, gateway.next_update())
        .await
        .expect("an update in time")
        .expect("no gateway error")
        .expect("the source does not end")
}

/// Takes updates until `n` message events (new, edit, service) arrived; returns them all and the
/// cursor of the last update.
async fn take_messages(
    gateway: &mut Box<dyn Gateway>,
    n: usize,
) -> (Vec<tgingest::event::Event>, Cursor) {
    let mut events = Vec::new();
    let mut cursor = None;
    while events
        .iter()
        .filter(|e: &&tgingest::event::Event| e.kind != EventKind::Delete)
        .count()
        < n
    {
        let update = next(gateway).await;
        events.extend(update.events);
        cursor = Some(update.cursor);
    }
    (events, cursor.expect("at least one update"))
}

/// "Once" means nothing more arrives: after the expected events, reads on through the hole
/// check's grace and two of its intervals and fails on any event that still comes (a
/// duplicate handed out after a delay, a hole check re-fetching what already arrived).
async fn assert_nothing_more(acct: &Account, gateway: &mut Box<dyn Gateway>) {
    let settings = &acct.settings;
    let quiet = settings.hole_grace + 2 * settings.hole_check_interval + Duration::from_millis(500);
    let more = tokio::time::timeout(quiet, async {
        loop {
            let update = next(gateway).await;
            if !update.events.is_empty() {
                return update.events;
            }
        }
    })
    .await;
    if let Ok(events) = more {
        let seen: Vec<(&str, &String)> =
            events.iter().map(|e| (e.kind.as_str(), &e.text)).collect();
        panic!("events arrived after the expected ones: {seen:?}");
    }
}

/// Sends one private message from `from` and takes it: the gateway is live from here on.
async fn warm_up(acct: &Account, from: i64, gateway: &mut Box<dyn Gateway>) {
    acct.dc.send_message(
        ChatId::Private(acct.me, from),
        from,
        "warm-up",
        SendOptions::default(),
    );
    take_messages(gateway, 1).await;
}

fn texts(events: &[tgingest::event::Event]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Message)
        .map(|e| e.text.clone())
        .collect()
}

#[tokio::test]
async fn live_messages_of_every_chat_kind_become_events() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let group = dc.create_group("Group", &[acct.me, alice]);
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    let channel = dc.create_channel("News", ChannelKind::Broadcast, &[acct.me, alice]);
    let forum = dc.create_channel("Forum", ChannelKind::Forum, &[acct.me, alice]);
    let mut gateway = acct.gateway(None).await;
    // The stream starts with a getDifference (catch-up is on): what is sent before it answered
    // arrives through it, as catch-up. Once one message came, the stream is live.
    warm_up(&acct, alice, &mut gateway).await;

    let send = |chat, from, text: &str, options| {
        dc.send_message(chat, from, text, options)
            .expect("message sent")
    };
    send(
        ChatId::Private(acct.me, alice),
        alice,
        "p-in",
        SendOptions::default(),
    );
    send(
        ChatId::Private(acct.me, alice),
        acct.me,
        "p-out",
        SendOptions::default(),
    );
    send(group, alice, "g", SendOptions::default());
    send(supergroup, alice, "s", SendOptions::default());
    send(channel, alice, "c", SendOptions::default());
    let topic = dc.create_topic(forum, alice, "Topic").expect("topic");
    send(
        forum,
        alice,
        "f",
        SendOptions {
            topic: Some(topic),
            ..SendOptions::default()
        },
    );

    let (events, _) = take_messages(&mut gateway, 7).await;
    let by_text = |t: &str| {
        events
            .iter()
            .find(|e| e.text == t)
            .unwrap_or_else(|| panic!("no event with text {t}: {events:?}"))
    };
    let me = acct.me.to_string();
    let p_in = by_text("p-in");
    assert_eq!(
        (p_in.chat.kind, p_in.chat.id.as_str()),
        (ChatKind::Private, alice.to_string().as_str())
    );
    assert_eq!(
        p_in.sender.as_ref().map(|s| s.id.clone()),
        Some(alice.to_string())
    );
    let p_out = by_text("p-out");
    assert_eq!(
        p_out.sender.as_ref().map(|s| (s.id.clone(), s.is_self)),
        Some((me.clone(), true))
    );
    assert_eq!(by_text("g").chat.kind, ChatKind::Group);
    assert_eq!(by_text("s").chat.kind, ChatKind::Supergroup);
    assert_eq!(by_text("c").chat.kind, ChatKind::Channel);
    let f = by_text("f");
    assert_eq!(f.chat.kind, ChatKind::Supergroup);
    assert_eq!(f.topic_id, Some(topic.to_string()));
    for e in &events {
        e.validate().expect("valid event");
        assert_eq!(e.account_id, me);
        // Pushed, or fetched by getChannelDifference when grammers saw a gap first.
        assert!(
            matches!(e.source, Source::Live | Source::CatchUp),
            "{:?}",
            e.source
        );
    }
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn what_was_sent_while_away_arrives_once_after_a_restart() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    let mut gateway = acct.gateway(None).await;
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "before",
        SendOptions::default(),
    );
    let (_, cursor) = take_messages(&mut gateway, 1).await;
    gateway.commit(cursor.clone()).await.expect("commit");
    drop(gateway);

    for i in 0..30 {
        dc.send_message(
            ChatId::Private(acct.me, alice),
            alice,
            &format!("away-p{i}"),
            SendOptions::default(),
        );
        dc.send_message(
            supergroup,
            alice,
            &format!("away-s{i}"),
            SendOptions::default(),
        );
    }
    let mut gateway = acct.gateway(Some(cursor)).await;
    let (events, _) = take_messages(&mut gateway, 60).await;
    let expected: BTreeSet<String> = (0..30)
        .flat_map(|i| [format!("away-p{i}"), format!("away-s{i}")])
        .collect();
    assert_eq!(texts(&events), expected);
    assert_eq!(events.len(), 60, "each exactly once");
    assert!(events.iter().all(|e| e.source == Source::CatchUp));
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn an_update_handed_out_but_not_committed_is_handed_out_again() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let mut gateway = acct.gateway(None).await;
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "one",
        SendOptions::default(),
    );
    let (_, committed) = take_messages(&mut gateway, 1).await;
    gateway.commit(committed.clone()).await.expect("commit");
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "two",
        SendOptions::default(),
    );
    let (events, _) = take_messages(&mut gateway, 1).await;
    assert_eq!(texts(&events), BTreeSet::from(["two".to_string()]));
    // A crash here: "two" was handed out, never acknowledged downstream, never committed.
    drop(gateway);

    let mut gateway = acct.gateway(Some(committed)).await;
    let (events, _) = take_messages(&mut gateway, 1).await;
    assert_eq!(texts(&events), BTreeSet::from(["two".to_string()]));
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn a_too_long_difference_is_found_by_the_hole_check_and_backfilled() {
    let limits = WorldLimits {
        difference_too_long: 5,
        ..WorldLimits::default()
    };
    let mut s = settings();
    s.hole_grace = Duration::ZERO;
    s.hole_check_interval = Duration::from_secs(1);
    let acct = Account::new(limits, s).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let mut gateway = acct.gateway(None).await;
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "seen",
        SendOptions::default(),
    );
    let (_, cursor) = take_messages(&mut gateway, 1).await;
    gateway.commit(cursor.clone()).await.expect("commit");
    drop(gateway);

    // More than the too-long threshold while away: grammers gets differenceTooLong and skips.
    for i in 0..20 {
        dc.send_message(
            ChatId::Private(acct.me, alice),
            alice,
            &format!("gap{i}"),
            SendOptions::default(),
        );
    }
    let mut gateway = acct.gateway(Some(cursor)).await;
    let (events, _) = take_messages(&mut gateway, 20).await;
    let expected: BTreeSet<String> = (0..20).map(|i| format!("gap{i}")).collect();
    assert_eq!(texts(&events), expected);
    assert!(events.iter().all(|e| e.source == Source::Backfill));
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn the_first_start_backfills_the_window_oldest_first() {
    let mut s = settings();
    s.backfill_window = Duration::from_secs(3600);
    let acct = Account::new(WorldLimits::default(), s).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    for i in 0..150 {
        dc.send_message(
            supergroup,
            alice,
            &format!("old{i:03}"),
            SendOptions::default(),
        );
    }
    let mut gateway = acct.gateway(None).await;
    let (events, _) = take_messages(&mut gateway, 150).await;
    let got: Vec<String> = events.iter().map(|e| e.text.clone()).collect();
    let want: Vec<String> = (0..150).map(|i| format!("old{i:03}")).collect();
    assert_eq!(got, want, "all of the window, oldest first, once");
    assert!(events.iter().all(|e| e.source == Source::Backfill));
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

/// A new account's update state is asked for before its dialogs are read: a message sent while
/// the dialogs are on their way is then newer than the state (it arrives live) rather than
/// newer than the dialogs' snapshot and no newer than the state (neither the update stream nor
/// the backfill brought it).
#[tokio::test]
async fn a_message_sent_while_a_new_accounts_dialogs_are_read_arrives() {
    let mut s = settings();
    s.backfill_window = Duration::from_secs(3600);
    // Imported from a session string: no update state yet.
    let acct = Account::with_session(WorldLimits::default(), s, |data| {
        data.updates_state = Default::default();
    })
    .await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let chat = ChatId::Private(acct.me, alice);
    dc.send_message(chat, alice, "before", SendOptions::default());
    // The dialogs' answer is made when they are asked for and sent a second later.
    dc.stall("messages.getDialogs", Duration::from_secs(1), 1);
    let meanwhile = async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while dc.request_count("messages.getDialogs") == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the dialogs were never asked for"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dc.send_message(
            chat,
            alice,
            "while the dialogs are read",
            SendOptions::default(),
        );
    };
    let (mut gateway, ()) = tokio::join!(acct.gateway(None), meanwhile);
    // A later message in the same chat: the hole check, which compares a chat's newest message
    // with the newest one that arrived, cannot see the gap behind it.
    dc.send_message(chat, alice, "after", SendOptions::default());
    let (events, _) = take_messages(&mut gateway, 3).await;
    assert_eq!(
        texts(&events),
        ["before", "while the dialogs are read", "after"]
            .map(String::from)
            .into()
    );
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

// ---- Faults ----------------------------------------------------------------------------------

/// Settings whose hole check runs every second, so `next_update` makes an API call (the dialogs)
/// on its own: a fault on the account surfaces through the stream even without traffic.
fn probing_settings() -> GrammersSettings {
    let mut s = settings();
    s.hole_grace = Duration::ZERO;
    s.hole_check_interval = Duration::from_secs(1);
    s
}

/// The error the next `next_update` returns (updates that arrive first are skipped).
async fn next_error(gateway: &mut Box<dyn Gateway>) -> GatewayError {
    loop {
        match tokio::time::timeout(WAIT, gateway.next_update())
            .await
            .expect("an answer in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the source ended instead of failing"),
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn a_revoked_key_ends_the_gateway_with_a_permanent_revoked_error() {
    let acct = Account::new(WorldLimits::default(), probing_settings()).await;
    let mut gateway = acct.gateway(None).await;
    acct.dc.revoke_key(acct.me);
    let e = next_error(&mut gateway).await;
    assert!(
        matches!(&e, GatewayError::Revoked(name) if name.contains("AUTH_KEY_UNREGISTERED")),
        "{e:?}"
    );
    assert!(e.is_permanent());
    // A new gateway on the same session fails at connect, the same way.
    let mut fresh = acct.factory.create(&acct.me.to_string());
    let e = tokio::time::timeout(WAIT, fresh.connect())
        .await
        .expect("connect answers in time")
        .expect_err("connect fails");
    assert!(matches!(e, GatewayError::Revoked(_)), "{e:?}");
    drop(fresh);
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn a_revoked_session_fails_the_next_call_as_revoked() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let alice = acct.dc.add_user("Alice");
    let chat = acct
        .dc
        .create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    acct.dc
        .send_message(chat, alice, "hello", SendOptions::default());
    let mut gateway = acct.gateway(None).await;
    acct.dc.revoke_session(acct.me);
    let e = tokio::time::timeout(
        WAIT,
        gateway.history(
            tgingest::event::Chat {
                id: marked_chat_id(ChatKind::Supergroup, chat_bare_id(chat)),
                kind: ChatKind::Supergroup,
                title: None,
            },
            None,
            10,
        ),
    )
    .await
    .expect("history answers in time")
    .expect_err("history fails");
    assert!(
        matches!(&e, GatewayError::Revoked(name) if name.contains("SESSION_REVOKED")),
        "{e:?}"
    );
    assert!(e.is_permanent());
    drop(gateway);
    acct.dc.stop().await;
}

fn chat_bare_id(chat: ChatId) -> i64 {
    match chat {
        ChatId::Channel(id) => id,
        other => panic!("not a channel: {other:?}"),
    }
}

#[tokio::test]
async fn a_duplicated_key_ends_the_gateway_as_duplicated() {
    let acct = Account::new(WorldLimits::default(), probing_settings()).await;
    let mut gateway = acct.gateway(None).await;
    acct.dc.duplicate_key(acct.me);
    let e = next_error(&mut gateway).await;
    assert_eq!(e, GatewayError::Duplicated);
    assert!(e.is_permanent());
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn a_short_flood_wait_during_backfill_is_slept_and_the_backfill_completes() {
    let mut s = settings();
    s.backfill_window = Duration::from_secs(3600);
    let acct = Account::new(WorldLimits::default(), s).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    for i in 0..150 {
        dc.send_message(
            supergroup,
            alice,
            &format!("old{i:03}"),
            SendOptions::default(),
        );
    }
    dc.flood_wait("messages.getHistory", 2, 1);
    let started = std::time::Instant::now();
    let mut gateway = acct.gateway(None).await;
    let (events, _) = take_messages(&mut gateway, 150).await;
    let got: Vec<String> = events.iter().map(|e| e.text.clone()).collect();
    let want: Vec<String> = (0..150).map(|i| format!("old{i:03}")).collect();
    assert_eq!(got, want, "all of the window, oldest first, once");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the flood wait was slept inside grammers"
    );
    // The flooded request was retried: one more history call than the pages alone need.
    assert!(dc.request_count("messages.getHistory") >= 3);
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn a_flood_wait_above_the_sleep_limit_surfaces_as_flood_wait() {
    let mut s = settings();
    s.backfill_window = Duration::from_secs(3600);
    let acct = Account::new(WorldLimits::default(), s).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    for i in 0..10 {
        dc.send_message(
            supergroup,
            alice,
            &format!("old{i}"),
            SendOptions::default(),
        );
    }
    dc.flood_wait("messages.getHistory", 30, 1);
    let mut gateway = acct.gateway(None).await;
    let started = std::time::Instant::now();
    let e = next_error(&mut gateway).await;
    assert_eq!(e, GatewayError::FloodWait { seconds: 30 });
    assert!(!e.is_permanent());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not slept inside grammers"
    );
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn dropped_connections_mid_stream_lose_nothing_and_repeat_nothing() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    let mut gateway = acct.gateway(None).await;
    warm_up(&acct, alice, &mut gateway).await;
    let mut events = Vec::new();
    for i in 0..10 {
        dc.send_message(
            ChatId::Private(acct.me, alice),
            alice,
            &format!("a-p{i}"),
            SendOptions::default(),
        );
        dc.send_message(
            supergroup,
            alice,
            &format!("a-s{i}"),
            SendOptions::default(),
        );
    }
    events.extend(take_messages(&mut gateway, 20).await.0);
    let connections = dc.protocol_stats().connections;
    dc.drop_connections();
    for i in 0..10 {
        dc.send_message(
            ChatId::Private(acct.me, alice),
            alice,
            &format!("b-p{i}"),
            SendOptions::default(),
        );
        dc.send_message(
            supergroup,
            alice,
            &format!("b-s{i}"),
            SendOptions::default(),
        );
    }
    // Their pushes went nowhere (no connection was subscribed): they arrive because grammers
    // reconnects while the stream is polled and fetches the difference.
    events.extend(take_messages(&mut gateway, 20).await.0);
    assert!(
        dc.protocol_stats().connections > connections,
        "the client reconnected"
    );
    let want: BTreeSet<String> = (0..10)
        .flat_map(|i| {
            [
                format!("a-p{i}"),
                format!("a-s{i}"),
                format!("b-p{i}"),
                format!("b-s{i}"),
            ]
        })
        .collect();
    assert_eq!(texts(&events), want);
    assert_eq!(events.len(), want.len(), "each exactly once");
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

#[tokio::test]
async fn a_pts_gap_while_running_is_filled() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[acct.me, alice]);
    let mut gateway = acct.gateway(None).await;
    warm_up(&acct, alice, &mut gateway).await;
    let lost = SendOptions {
        skip_push: true,
        ..SendOptions::default()
    };
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "p-lost",
        lost.clone(),
    );
    dc.send_message(
        ChatId::Private(acct.me, alice),
        alice,
        "p-next",
        SendOptions::default(),
    );
    dc.send_message(supergroup, alice, "s-lost", lost);
    dc.send_message(supergroup, alice, "s-next", SendOptions::default());
    let (events, _) = take_messages(&mut gateway, 4).await;
    let want: BTreeSet<String> = ["p-lost", "p-next", "s-lost", "s-next"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(texts(&events), want);
    assert_eq!(events.len(), 4, "each exactly once");
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}

/// Pushes as rude as Telegram's: seeded, some sent twice, some held back behind later ones,
/// some connections reset half-way through a push frame (grammers reconnects and fetches the
/// difference). Non-ASCII texts in every chat kind. Each message still arrives exactly once,
/// and nothing more arrives after.
#[tokio::test]
async fn duplicated_late_and_cut_off_pushes_lose_nothing_and_repeat_nothing() {
    let acct = Account::new(WorldLimits::default(), settings()).await;
    let dc = &acct.dc;
    let alice = dc.add_user("Alice");
    let group = dc.create_group("Группа", &[acct.me, alice]);
    let supergroup = dc.create_channel("超级群", ChannelKind::Supergroup, &[acct.me, alice]);
    let mut gateway = acct.gateway(None).await;
    warm_up(&acct, alice, &mut gateway).await;
    let rude = PushFaults {
        seed: 20261207,
        duplicate: 0.2,
        delay: 0.2,
        max_delay: Duration::from_millis(300),
        cut_mid_frame: 0.0,
    };
    let chats = [ChatId::Private(acct.me, alice), group, supergroup];
    let mut want = BTreeSet::new();
    // Duplicated and late pushes, then one push whose frame is cut half-way (the connection
    // is subscribed: it just delivered the warm-up), then duplicated and late pushes again.
    for (round, cut) in [(0, false), (1, true), (2, false)] {
        dc.set_push_faults(PushFaults {
            cut_mid_frame: if cut { 1.0 } else { 0.0 },
            ..rude.clone()
        });
        let n = if cut { 1 } else { 30 };
        for i in 0..n {
            let text = format!("№{round}.{i} — привет, 世界 👋🏽 ‏שלום‏ é\u{301}");
            dc.send_message(chats[i % 3], alice, &text, SendOptions::default());
            want.insert(text);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (events, _) = take_messages(&mut gateway, want.len()).await;
    let faults = dc.push_fault_stats();
    eprintln!("push faults: {faults:?}");
    assert!(
        faults.duplicated > 0 && faults.delayed > 0 && faults.cut > 0,
        "every fault must fire for the test to mean anything: {faults:?}"
    );
    assert_eq!(texts(&events), want);
    assert_eq!(events.len(), want.len(), "each exactly once");
    assert_nothing_more(&acct, &mut gateway).await;
    drop(gateway);
    acct.dc.stop().await;
}
