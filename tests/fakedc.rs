//! The fake Telegram DC against the real, unmodified grammers 0.11 client.
//!
//! Every test starts its own server on a random loopback port, bounds each wait with a timeout
//! and stops the server at the end (and `Drop` stops it if the test fails).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use grammers_client::client::ClientConfiguration;
use grammers_client::update::Update;
use grammers_client::{Client, InvocationError};
use grammers_mtsender::{
    AutoSleep, ConnectionParams, NoRetries, RetryPolicy, SenderPool, SenderPoolFatHandle,
    UpdatesConfiguration,
};
use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{PeerId, PeerKind};
use grammers_tl_types as tl;
use tgingest::telegram::fakedc::{
    ChannelKind, ChatId, FakeDc, FakeDcConfig, SendOptions, WorldLimits,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` every 20 ms until it holds (bounded by [`WAIT`]).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// What a test needs to know about one update.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    New {
        id: i32,
        chat: PeerId,
        sender: Option<PeerId>,
        text: String,
        outgoing: bool,
        topic: Option<i32>,
        service: bool,
    },
    Edited {
        id: i32,
        chat: PeerId,
        text: String,
    },
    Deleted {
        channel: Option<i64>,
        ids: Vec<i32>,
    },
    Other,
}

impl Seen {
    fn text(&self) -> Option<&str> {
        match self {
            Seen::New { text, .. } | Seen::Edited { text, .. } => Some(text),
            _ => None,
        }
    }
}

fn topic_of(m: &grammers_client::message::Message) -> Option<i32> {
    match m.reply_header() {
        Some(tl::enums::MessageReplyHeader::Header(h)) if h.forum_topic => {
            h.reply_to_top_id.or(h.reply_to_msg_id)
        }
        _ => None,
    }
}

fn summarize(u: &Update) -> Seen {
    match u {
        Update::NewMessage(m) => Seen::New {
            id: m.id(),
            chat: m.peer_id(),
            sender: m.sender_id(),
            text: m.text().to_owned(),
            outgoing: m.outgoing(),
            topic: topic_of(m),
            service: m.action().is_some(),
        },
        Update::MessageEdited(m) => Seen::Edited {
            id: m.id(),
            chat: m.peer_id(),
            text: m.text().to_owned(),
        },
        Update::MessageDeleted(d) => Seen::Deleted {
            channel: d.channel_id(),
            ids: d.messages().to_vec(),
        },
        _ => Seen::Other,
    }
}

/// A grammers client wired to the fake DC, with its update stream drained by a task.
struct TestClient {
    client: Client,
    handle: SenderPoolFatHandle,
    session: Arc<MemorySession>,
    runner: JoinHandle<()>,
    stream_task: Option<JoinHandle<()>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

fn params(retry: Box<dyn RetryPolicy>) -> ConnectionParams {
    ConnectionParams {
        device_model: "fakedc-test".into(),
        system_version: "linux".into(),
        app_version: "0.1".into(),
        retry_policy: retry,
        updates_channel_capacity: NonZeroUsize::new(10_000).expect("non-zero"),
        ..Default::default()
    }
}

impl TestClient {
    /// Starts a pool + client over `session`; with `stream`, also drains
    /// `stream_updates(catch_up: true)` into [`TestClient::seen`].
    async fn start(session: Arc<MemorySession>, retry: Box<dyn RetryPolicy>, stream: bool) -> Self {
        let SenderPool {
            runner,
            handle,
            updates,
        } = SenderPool::with_configuration(Arc::clone(&session), 12345, params(retry));
        let client = Client::with_configuration(
            handle.clone(),
            ClientConfiguration {
                auto_cache_peers: true,
            },
        );
        let runner = tokio::spawn(runner.run());
        let (tx, seen) = mpsc::unbounded_channel();
        let stream_task = if stream {
            let mut stream = client
                .stream_updates(updates, UpdatesConfiguration { catch_up: true })
                .await
                .expect("update stream");
            Some(tokio::spawn(async move {
                loop {
                    match stream.next().await {
                        Ok(u) => {
                            if tx.send(summarize(&u)).is_err() {
                                break;
                            }
                            let _ = stream.sync_update_state().await;
                        }
                        Err(e) => {
                            eprintln!("update stream ended: {e}");
                            break;
                        }
                    }
                }
            }))
        } else {
            None
        };
        Self {
            client,
            handle,
            session,
            runner,
            stream_task,
            seen,
        }
    }

    /// Waits for the next update whose summary satisfies `pred`, skipping others.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        within(what, async {
            loop {
                match self.seen.recv().await {
                    Some(s) if pred(&s) => return s,
                    Some(_) => continue,
                    None => panic!("update stream closed while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Collects updates until every text in `texts` has been seen once.
    async fn collect_texts(&mut self, texts: &[&str]) -> Vec<Seen> {
        let mut got = Vec::new();
        within("all expected texts", async {
            while !texts
                .iter()
                .all(|t| got.iter().any(|s: &Seen| s.text() == Some(*t)))
            {
                match self.seen.recv().await {
                    Some(s) => got.push(s),
                    None => panic!("update stream closed; got {got:?}"),
                }
            }
        })
        .await;
        got
    }

    /// Disconnects and waits for the runner to finish.
    async fn quit(self) -> Arc<MemorySession> {
        self.handle.quit();
        if let Some(t) = self.stream_task {
            t.abort();
        }
        let _ = within("runner to stop", self.runner).await;
        self.session
    }
}

fn find<'a>(seen: &'a [Seen], text: &str) -> &'a Seen {
    seen.iter()
        .find(|s| s.text() == Some(text))
        .unwrap_or_else(|| panic!("no update with text {text:?} in {seen:?}"))
}

async fn start_dc(config: FakeDcConfig) -> FakeDc {
    FakeDc::start(config).await.expect("fake dc starts")
}

fn session_for(dc: &FakeDc, account: i64, key: [u8; 256]) -> Arc<MemorySession> {
    Arc::new(MemorySession::from(dc.session_data(account, key)))
}

#[tokio::test]
async fn get_me_and_get_state_work_over_encrypted_mtproto() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;

    let me = within("get_me", tc.client.get_me()).await.expect("get_me");
    assert_eq!(me.id().bare_id(), Some(alice));
    assert_eq!(me.first_name(), Some("Alice"));
    assert!(me.is_self());

    let tl::enums::updates::State::State(state) = within(
        "getState",
        tc.client.invoke(&tl::functions::updates::GetState {}),
    )
    .await
    .expect("getState");
    assert_eq!(state.pts, dc.state(alice).expect("state").pts);
    assert!(
        within("is_authorized", tc.client.is_authorized())
            .await
            .expect("is_authorized")
    );

    // The service layer did its job: the client started without the salt, was corrected, and
    // the server announced the new session; getConfig pointed the session back at us.
    let stats = dc.protocol_stats();
    assert!(stats.bad_salts >= 1, "{stats:?}");
    assert!(stats.new_sessions >= 1, "{stats:?}");
    assert_eq!(dc.request_count("help.getConfig"), 1);
    assert_eq!(dc.request_count("users.getUsers"), 1);
    assert_eq!(dc.request_count("updates.getState"), 2);
    let option = tc
        .session
        .dc_option(dc.dc_id())
        .expect("session readable")
        .expect("dc option");
    assert_eq!(option.ipv4.port(), dc.addr().port());
    assert_eq!(dc.unimplemented_calls(), Vec::<String>::new());

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn live_messages_of_every_chat_kind_arrive_as_new_message() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let group = dc.create_group("Group", &[alice, bob]);
    let supergroup = dc.create_channel("Super", ChannelKind::Supergroup, &[alice, bob]);
    let broadcast = dc.create_channel("News", ChannelKind::Broadcast, &[alice, bob]);
    let forum = dc.create_channel("Forum", ChannelKind::Forum, &[alice, bob]);

    let mut tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;

    let private = ChatId::Private(alice, bob);
    let opts = SendOptions::default;
    let p = dc
        .send_message(private, bob, "hi alice", opts())
        .expect("sent");
    dc.send_message(private, alice, "hi bob", opts())
        .expect("sent");
    let g = dc
        .send_message(group, bob, "group hello", opts())
        .expect("sent");
    dc.send_message(
        group,
        bob,
        "group reply",
        SendOptions {
            reply_to: g.id_for(alice),
            ..SendOptions::default()
        },
    )
    .expect("sent");
    dc.send_message(supergroup, bob, "super hello", opts())
        .expect("sent");
    dc.send_message(broadcast, bob, "news post", opts())
        .expect("sent");
    let topic = dc.create_topic(forum, bob, "Topic A").expect("topic");
    dc.send_message(
        forum,
        bob,
        "in topic",
        SendOptions {
            topic: Some(topic),
            ..SendOptions::default()
        },
    )
    .expect("sent");
    dc.send_message(forum, bob, "in general", opts())
        .expect("sent");

    let seen = tc
        .collect_texts(&[
            "hi alice",
            "hi bob",
            "group hello",
            "group reply",
            "super hello",
            "news post",
            "in topic",
            "in general",
        ])
        .await;

    let (ChatId::Group(gid), ChatId::Channel(sid), ChatId::Channel(bid), ChatId::Channel(fid)) =
        (group, supergroup, broadcast, forum)
    else {
        panic!("unexpected chat ids");
    };
    match find(&seen, "hi alice") {
        Seen::New {
            id,
            chat,
            sender,
            outgoing,
            ..
        } => {
            assert_eq!(Some(*id), p.id_for(alice));
            assert_eq!(chat.kind(), PeerKind::User);
            assert_eq!(chat.bare_id(), Some(bob));
            assert_eq!(sender.and_then(|s| s.bare_id()), Some(bob));
            assert!(!outgoing);
        }
        other => panic!("{other:?}"),
    }
    match find(&seen, "hi bob") {
        Seen::New {
            chat,
            sender,
            outgoing,
            ..
        } => {
            assert_eq!(chat.bare_id(), Some(bob));
            assert!(*outgoing);
            // grammers reports our own private messages with the self sentinel.
            assert_eq!(*sender, Some(PeerId::self_user()));
        }
        other => panic!("{other:?}"),
    }
    for (text, kind, bare, sender) in [
        ("group hello", PeerKind::Chat, gid, Some(bob)),
        ("group reply", PeerKind::Chat, gid, Some(bob)),
        ("super hello", PeerKind::Channel, sid, Some(bob)),
        ("news post", PeerKind::Channel, bid, None),
        ("in topic", PeerKind::Channel, fid, Some(bob)),
    ] {
        match find(&seen, text) {
            Seen::New {
                chat, sender: s, ..
            } => {
                assert_eq!(chat.kind(), kind, "{text}");
                assert_eq!(chat.bare_id(), Some(bare), "{text}");
                assert_eq!(s.and_then(|s| s.bare_id()), sender, "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(find(&seen, "in topic"), Seen::New { topic: Some(t), .. } if *t == topic));
    assert!(matches!(
        find(&seen, "in general"),
        Seen::New { topic: None, .. }
    ));
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::New { id, service: true, .. } if *id == topic)),
        "topic creation arrives as a service message: {seen:?}"
    );
    // catch_up = true asks for one (empty) difference at start; after that, live pushes only.
    assert_eq!(dc.request_count("updates.getDifference"), 1);
    assert_eq!(dc.unimplemented_calls(), Vec::<String>::new());

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn edits_and_deletions_arrive() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let group = dc.create_group("Group", &[alice, bob]);
    let channel = dc.create_channel("Super", ChannelKind::Supergroup, &[alice, bob]);
    let mut tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;

    let private = ChatId::Private(alice, bob);
    let p = dc
        .send_message(private, bob, "typo", SendOptions::default())
        .expect("sent");
    let g = dc
        .send_message(group, bob, "to delete", SendOptions::default())
        .expect("sent");
    let c = dc
        .send_message(channel, bob, "channel typo", SendOptions::default())
        .expect("sent");
    let c2 = dc
        .send_message(channel, bob, "channel to delete", SendOptions::default())
        .expect("sent");
    tc.collect_texts(&["typo", "to delete", "channel typo", "channel to delete"])
        .await;

    dc.edit_message(&p, "fixed");
    dc.edit_message(&c, "channel fixed");
    dc.delete_messages(std::slice::from_ref(&g));
    dc.delete_messages(std::slice::from_ref(&c2));

    let edited = tc
        .wait_for(
            "private edit",
            |s| matches!(s, Seen::Edited { text, .. } if text == "fixed"),
        )
        .await;
    assert!(matches!(edited, Seen::Edited { id, .. } if Some(id) == p.id_for(alice)));
    tc.wait_for(
        "channel edit",
        |s| matches!(s, Seen::Edited { text, .. } if text == "channel fixed"),
    )
    .await;
    let g_id = g.id_for(alice).expect("alice sees it");
    tc.wait_for(
        "group deletion",
        |s| matches!(s, Seen::Deleted { channel: None, ids } if ids == &vec![g_id]),
    )
    .await;
    let ChatId::Channel(cid) = channel else {
        panic!("channel");
    };
    let c2_id = c2.id_for(alice).expect("alice sees it");
    tc.wait_for("channel deletion", |s| {
        matches!(s, Seen::Deleted { channel: Some(ch), ids } if *ch == cid && ids == &vec![c2_id])
    })
    .await;
    // Only the start-up catch-up difference; no gap was seen.
    assert_eq!(dc.request_count("updates.getDifference"), 1);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn messages_sent_while_offline_arrive_through_get_difference() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let group = dc.create_group("Group", &[alice, bob]);
    let channel = dc.create_channel("Super", ChannelKind::Supergroup, &[alice, bob]);
    let private = ChatId::Private(alice, bob);

    // First run: see one message per box, persist the update state (the stream task syncs after
    // each update), then go offline.
    let mut first =
        TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", first.client.get_me())
        .await
        .expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(private, bob, "online private", SendOptions::default());
    dc.send_message(channel, bob, "online channel", SendOptions::default());
    first
        .collect_texts(&["online private", "online channel"])
        .await;
    // Give the stream task the moment it needs to persist the state after the last update.
    let session = Arc::clone(&first.session);
    let channel_pts = dc.channel_pts(channel).expect("pts");
    until("channel state persisted", || {
        futures::executor::block_on(session.updates_state())
            .map(|s| s.channels.iter().any(|c| c.pts == channel_pts))
            .unwrap_or(false)
    })
    .await;
    let session = first.quit().await;
    until("disconnect", || dc.subscribed_connections(alice) == 0).await;

    // While offline: every kind of event, in both boxes.
    let gone = dc
        .send_message(
            group,
            bob,
            "offline group, deleted later",
            SendOptions::default(),
        )
        .expect("sent");
    dc.send_message(private, bob, "offline private", SendOptions::default());
    dc.send_message(group, bob, "offline group", SendOptions::default());
    dc.send_message(channel, bob, "offline channel", SendOptions::default());
    dc.delete_messages(std::slice::from_ref(&gone));
    let before_diff = dc.request_count("updates.getDifference");

    // Second run: a new pool and client over the same session (it carries the old state).
    let mut second = TestClient::start(session, Box::new(NoRetries), true).await;
    let seen = second
        .collect_texts(&["offline private", "offline group", "offline channel"])
        .await;
    assert!(dc.request_count("updates.getDifference") > before_diff);
    assert!(dc.request_count("updates.getChannelDifference") >= 1);
    assert!(
        !seen.iter().any(|s| s.text() == Some("online private")),
        "already-seen messages are not replayed: {seen:?}"
    );
    let gone_id = gone.id_for(alice).expect("id");
    // A message sent and deleted while offline: the difference no longer contains the message
    // but carries the deletion (grammers yields other_updates before new_messages).
    let is_gone =
        |s: &Seen| matches!(s, Seen::Deleted { channel: None, ids } if ids.contains(&gone_id));
    assert!(
        !seen
            .iter()
            .any(|s| s.text() == Some("offline group, deleted later"))
    );
    if !seen.iter().any(is_gone) {
        second.wait_for("offline deletion", is_gone).await;
    }
    // And live updates flow again afterwards.
    until("resubscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(private, bob, "back online", SendOptions::default());
    second.collect_texts(&["back online"]).await;

    second.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn a_lost_update_is_a_pts_gap_filled_by_get_difference() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let channel = dc.create_channel("Super", ChannelKind::Supergroup, &[alice, bob]);
    let private = ChatId::Private(alice, bob);
    let mut tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(channel, bob, "channel first", SendOptions::default());
    tc.collect_texts(&["channel first"]).await;

    let lost = SendOptions {
        skip_push: true,
        ..SendOptions::default()
    };
    dc.send_message(private, bob, "lost private", lost.clone());
    dc.send_message(private, bob, "after the gap", SendOptions::default());
    dc.send_message(channel, bob, "lost channel", lost);
    dc.send_message(
        channel,
        bob,
        "channel after the gap",
        SendOptions::default(),
    );

    let seen = tc
        .collect_texts(&[
            "lost private",
            "after the gap",
            "lost channel",
            "channel after the gap",
        ])
        .await;
    assert_eq!(
        seen.iter()
            .filter(|s| s.text() == Some("after the gap"))
            .count(),
        1,
        "the update that revealed the gap is delivered once: {seen:?}"
    );
    assert!(dc.request_count("updates.getDifference") >= 1);
    assert!(dc.request_count("updates.getChannelDifference") >= 1);

    // A bare pts jump (events the account cannot see, as after `skip_pts`) is a gap too: the
    // client fetches a difference, finds only the new message, and moves on.
    let (diffs, channel_diffs) = (
        dc.request_count("updates.getDifference"),
        dc.request_count("updates.getChannelDifference"),
    );
    dc.skip_pts(alice, 3);
    dc.skip_channel_pts(channel, 3);
    dc.send_message(private, bob, "after a jump", SendOptions::default());
    dc.send_message(channel, bob, "channel after a jump", SendOptions::default());
    let seen = tc
        .collect_texts(&["after a jump", "channel after a jump"])
        .await;
    assert_eq!(
        seen.iter().filter(|s| s.text().is_some()).count(),
        2,
        "{seen:?}"
    );
    assert!(dc.request_count("updates.getDifference") > diffs);
    assert!(dc.request_count("updates.getChannelDifference") > channel_diffs);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn too_long_differences_skip_ahead_without_messages() {
    let dc = start_dc(FakeDcConfig {
        limits: WorldLimits {
            difference_slice: 100,
            difference_too_long: 5,
            channel_difference_too_long: 5,
        },
        ..FakeDcConfig::default()
    })
    .await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let channel = dc.create_channel("Busy", ChannelKind::Supergroup, &[alice, bob]);
    let private = ChatId::Private(alice, bob);

    let mut first =
        TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", first.client.get_me())
        .await
        .expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(channel, bob, "seen", SendOptions::default());
    first.collect_texts(&["seen"]).await;
    let session = Arc::clone(&first.session);
    until("channel state persisted", || {
        futures::executor::block_on(session.updates_state())
            .map(|s| !s.channels.is_empty())
            .unwrap_or(false)
    })
    .await;
    let session = first.quit().await;
    until("disconnect", || dc.subscribed_connections(alice) == 0).await;

    for i in 0..10 {
        dc.send_message(
            private,
            bob,
            &format!("missed private {i}"),
            SendOptions::default(),
        );
        dc.send_message(
            channel,
            bob,
            &format!("missed channel {i}"),
            SendOptions::default(),
        );
    }

    let mut second = TestClient::start(session, Box::new(NoRetries), true).await;
    until("both differences requested", || {
        dc.request_count("updates.getDifference") >= 1
            && dc.request_count("updates.getChannelDifference") >= 1
    })
    .await;
    until("resubscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(private, bob, "live private", SendOptions::default());
    dc.send_message(channel, bob, "live channel", SendOptions::default());
    let seen = second
        .collect_texts(&["live private", "live channel"])
        .await;
    // grammers jumps to the new pts and delivers none of the 20 missed messages: the adapter
    // must notice (dialog top_message vs. last stored id) and backfill with getHistory.
    assert!(
        !seen
            .iter()
            .any(|s| s.text().is_some_and(|t| t.starts_with("missed"))),
        "{seen:?}"
    );
    let ChatId::Channel(cid) = channel else {
        panic!("channel")
    };
    until("state saved at the new pts", || {
        let s = futures::executor::block_on(second.session.updates_state()).expect("state");
        s.pts == dc.state(alice).expect("state").pts
            && s.channels
                .iter()
                .any(|c| c.id == cid && Some(c.pts) == dc.channel_pts(channel))
    })
    .await;

    second.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn a_difference_larger_than_a_slice_arrives_in_slices() {
    let dc = start_dc(FakeDcConfig {
        limits: WorldLimits {
            difference_slice: 7,
            ..WorldLimits::default()
        },
        ..FakeDcConfig::default()
    })
    .await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let session = session_for(&dc, alice, key);
    for i in 0..20 {
        dc.send_message(
            ChatId::Private(alice, bob),
            bob,
            &format!("m{i}"),
            SendOptions::default(),
        );
    }
    let mut tc = TestClient::start(session, Box::new(NoRetries), true).await;
    let texts: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let seen = tc.collect_texts(&refs).await;
    let order: Vec<&str> = seen.iter().filter_map(Seen::text).collect();
    assert_eq!(order, refs, "slices keep pts order");
    assert_eq!(dc.request_count("updates.getDifference"), 3);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn flood_wait_is_surfaced_as_an_rpc_error_with_its_value() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;

    dc.flood_wait("users.getUsers", 7, 1);
    match within("get_me", tc.client.get_me()).await {
        Err(InvocationError::Rpc(e)) => {
            assert_eq!(e.code, 420);
            assert_eq!(e.name, "FLOOD_WAIT");
            assert_eq!(e.value, Some(7));
        }
        other => panic!("expected FLOOD_WAIT, got {other:?}"),
    }
    within("get_me", tc.client.get_me())
        .await
        .expect("the fault was used up");
    tc.quit().await;

    // grammers' default policy sleeps through short flood waits and retries once.
    let tc = TestClient::start(
        session_for(&dc, alice, key),
        Box::new(AutoSleep::default()),
        false,
    )
    .await;
    dc.flood_wait("updates.getState", 1, 1);
    within(
        "getState",
        tc.client.invoke(&tl::functions::updates::GetState {}),
    )
    .await
    .expect("retried after the wait");
    assert_eq!(dc.request_count("updates.getState"), 2);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn revoked_keys_give_the_telegram_errors() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");

    for (revoke, code, name) in [
        (
            FakeDc::revoke_key as fn(&FakeDc, i64),
            401,
            "AUTH_KEY_UNREGISTERED",
        ),
        (FakeDc::revoke_session, 401, "SESSION_REVOKED"),
        (FakeDc::duplicate_key, 406, "AUTH_KEY_DUPLICATED"),
    ] {
        revoke(&dc, alice);
        match within("get_me", tc.client.get_me()).await {
            Err(InvocationError::Rpc(e)) => {
                assert_eq!((e.code, e.name.as_str()), (code, name));
            }
            other => panic!("expected {name}, got {other:?}"),
        }
    }
    dc.revoke_key(alice);
    assert!(
        !within("is_authorized", tc.client.is_authorized())
            .await
            .expect("answered")
    );
    dc.restore_key(alice);
    within("get_me", tc.client.get_me())
        .await
        .expect("restored");

    // A key the server no longer knows at all: -404 on the next connection.
    dc.forget_key(alice);
    until("connection closed", || {
        dc.subscribed_connections(alice) == 0
    })
    .await;
    let err = within("get_me with a forgotten key", async {
        loop {
            // The first call may still race the closing connection.
            match tc.client.get_me().await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => break e,
            }
        }
    })
    .await;
    assert!(
        matches!(err, InvocationError::Io(_) | InvocationError::Transport(_)),
        "{err:?}"
    );

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn an_unknown_auth_key_is_refused_at_the_transport_level() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, _key) = dc.add_account("Alice");
    let tc = TestClient::start(
        session_for(&dc, alice, [7u8; 256]),
        Box::new(NoRetries),
        false,
    )
    .await;
    // The server answers -404; grammers then tries a fresh DH handshake, which the fake does
    // not implement, so the call fails instead of hanging.
    let err = within("get_me", tc.client.get_me())
        .await
        .expect_err("unknown key");
    assert!(
        matches!(err, InvocationError::Io(_) | InvocationError::Transport(_)),
        "{err:?}"
    );
    assert_eq!(dc.request_count("users.getUsers"), 0);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_and_updates_resume() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let private = ChatId::Private(alice, bob);
    let channel = dc.create_channel("Super", ChannelKind::Supergroup, &[alice, bob]);
    let mut tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    assert_eq!(dc.protocol_stats().connections, 1);
    dc.send_message(channel, bob, "channel before", SendOptions::default());
    tc.collect_texts(&["channel before"]).await;

    dc.drop_connections();
    // While the connection is down, messages are missed ...
    dc.send_message(private, bob, "while down", SendOptions::default());
    dc.send_message(channel, bob, "channel while down", SendOptions::default());
    // ... the client notices the closed connection, reconnects and asks for the difference.
    until("reconnect", || {
        dc.protocol_stats().connections >= 2 && dc.subscribed_connections(alice) == 1
    })
    .await;
    dc.send_message(private, bob, "after reconnect", SendOptions::default());
    // The channel message comes back because getDifference hints at the channel
    // (updateChannelTooLong) and grammers then asks for the channel's difference.
    tc.collect_texts(&["while down", "channel while down", "after reconnect"])
        .await;
    assert!(dc.request_count("updates.getDifference") >= 1);
    assert!(dc.request_count("updates.getChannelDifference") >= 1);
    within("get_me", tc.client.get_me())
        .await
        .expect("works again");

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn a_stalled_answer_arrives_late_and_other_calls_are_not_blocked() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");

    dc.stall("updates.getState", Duration::from_millis(800), 1);
    let started = tokio::time::Instant::now();
    let client = tc.client.clone();
    let slow = tokio::spawn(async move {
        client
            .invoke(&tl::functions::updates::GetState {})
            .await
            .map(|_| tokio::time::Instant::now())
    });
    until("stalled call received", || {
        dc.request_count("updates.getState") == 1
    })
    .await;
    within("get_me while stalled", tc.client.get_me())
        .await
        .expect("not blocked");
    let fast_done = tokio::time::Instant::now();
    let slow_done = within("stalled call", slow)
        .await
        .expect("task")
        .expect("answered");
    assert!(slow_done - started >= Duration::from_millis(800));
    assert!(fast_done < slow_done);

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn dialogs_history_and_gzip_both_ways() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let group = dc.create_group("Group", &[alice, bob]);
    let channel = dc.create_channel("Long", ChannelKind::Broadcast, &[alice, bob]);
    dc.send_message(
        ChatId::Private(alice, bob),
        bob,
        "dm",
        SendOptions::default(),
    );
    dc.send_message(group, bob, "g", SendOptions::default());
    for i in 1..=250 {
        dc.send_message(channel, bob, &format!("post {i}"), SendOptions::default());
    }
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;

    let mut dialogs = tc.client.iter_dialogs();
    let mut peers = Vec::new();
    while let Some(d) = within("dialogs", dialogs.next()).await.expect("dialogs") {
        peers.push(d.peer().id());
    }
    assert_eq!(peers.len(), 3, "{peers:?}");
    let ChatId::Channel(cid) = channel else {
        panic!("channel")
    };
    let channel_ref = tc
        .session
        .peer_ref(PeerId::channel_unchecked(cid))
        .await
        .expect("session")
        .expect("iter_dialogs cached the channel");
    // iter_dialogs also stored the channel's pts in the session's update state.
    let state = tc.session.updates_state().await.expect("state");
    assert!(state.channels.iter().any(|c| c.id == cid));

    let mut history = tc.client.iter_messages(channel_ref);
    let mut ids = Vec::new();
    while let Some(m) = within("history", history.next()).await.expect("history") {
        ids.push(m.id());
    }
    assert_eq!(ids, (1..=250).rev().collect::<Vec<_>>());

    let mut oldest_first = tc
        .client
        .iter_messages(channel_ref)
        .offset_id(200)
        .reverse(true);
    let mut ids = Vec::new();
    while let Some(m) = within("reverse history", oldest_first.next())
        .await
        .expect("history")
    {
        ids.push(m.id());
    }
    assert_eq!(ids, (201..=250).collect::<Vec<_>>());

    // Peers by id, as the adapter may need them.
    let ChatId::Group(gid) = group else {
        panic!("group")
    };
    let tl::enums::messages::Chats::Chats(chats) = within(
        "channels.getChannels",
        tc.client.invoke(&tl::functions::channels::GetChannels {
            id: vec![
                tl::types::InputChannel {
                    channel_id: cid,
                    access_hash: dc.channel_access_hash(channel).expect("hash"),
                }
                .into(),
            ],
        }),
    )
    .await
    .expect("getChannels") else {
        panic!("sliced chats")
    };
    assert!(
        matches!(&chats.chats[..], [tl::enums::Chat::Channel(c)] if c.id == cid && c.broadcast)
    );
    let tl::enums::messages::Chats::Chats(chats) = within(
        "messages.getChats",
        tc.client
            .invoke(&tl::functions::messages::GetChats { id: vec![gid] }),
    )
    .await
    .expect("getChats") else {
        panic!("sliced chats")
    };
    assert!(matches!(&chats.chats[..], [tl::enums::Chat::Chat(c)] if c.id == gid));
    let users = within(
        "users.getUsers",
        tc.client.invoke(&tl::functions::users::GetUsers {
            id: vec![
                tl::types::InputUser {
                    user_id: bob,
                    access_hash: 0,
                }
                .into(),
            ],
        }),
    )
    .await
    .expect("getUsers");
    assert!(matches!(&users[..], [tl::enums::User::User(u)] if u.id == bob && !u.is_self));

    // Oldest first from the very beginning, across several pages.
    let mut everything = tc.client.iter_messages(channel_ref).reverse(true);
    let mut ids = Vec::new();
    while let Some(m) = within("reverse history from the start", everything.next())
        .await
        .expect("history")
    {
        ids.push(m.id());
    }
    assert_eq!(ids, (1..=250).collect::<Vec<_>>());

    // 100 ids make a request over grammers' 512-byte compression threshold.
    let wanted: Vec<i32> = (1..=100).collect();
    let got = within(
        "get_messages_by_id",
        tc.client.get_messages_by_id(channel_ref, &wanted),
    )
    .await
    .expect("messages");
    assert_eq!(got.iter().filter(|m| m.is_some()).count(), 100);
    let stats = dc.protocol_stats();
    assert!(stats.gzip_received >= 1, "{stats:?}");
    assert_eq!(dc.unimplemented_calls(), Vec::<String>::new());

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn unknown_methods_are_answered_and_counted() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    let err = within(
        "help.getNearestDc",
        tc.client.invoke(&tl::functions::help::GetNearestDc {}),
    )
    .await
    .expect_err("not implemented");
    assert!(err.is("METHOD_NOT_IMPLEMENTED_FAKE_DC"), "{err:?}");
    assert_eq!(
        dc.unimplemented_calls(),
        vec!["help.getNearestDc".to_owned()]
    );

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn two_accounts_share_chats_with_their_own_numbering() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, alice_key) = dc.add_account("Alice");
    let (carol, carol_key) = dc.add_account("Carol");
    let group = dc.create_group("Both", &[alice, carol]);
    let channel = dc.create_channel("Shared", ChannelKind::Supergroup, &[alice, carol]);
    // Alice has an older message of her own, so her account-wide ids run ahead of Carol's.
    let solo = dc.create_group("Solo", &[alice]);
    dc.send_message(solo, alice, "note to self", SendOptions::default());

    let mut a = TestClient::start(
        session_for(&dc, alice, alice_key),
        Box::new(NoRetries),
        true,
    )
    .await;
    let mut c = TestClient::start(
        session_for(&dc, carol, carol_key),
        Box::new(NoRetries),
        true,
    )
    .await;
    within("alice get_me", a.client.get_me()).await.expect("me");
    within("carol get_me", c.client.get_me()).await.expect("me");
    until("both subscribed", || {
        dc.subscribed_connections(alice) == 1 && dc.subscribed_connections(carol) == 1
    })
    .await;

    let dm = dc
        .send_message(
            ChatId::Private(alice, carol),
            carol,
            "dm",
            SendOptions::default(),
        )
        .expect("sent");
    let g = dc
        .send_message(group, alice, "group", SendOptions::default())
        .expect("sent");
    let ch = dc
        .send_message(channel, carol, "channel", SendOptions::default())
        .expect("sent");
    let seen_a = a.collect_texts(&["dm", "group", "channel"]).await;
    let seen_c = c.collect_texts(&["dm", "group", "channel"]).await;

    let id = |seen: &[Seen], text: &str| match find(seen, text) {
        Seen::New { id, .. } => *id,
        other => panic!("{other:?}"),
    };
    assert_eq!(Some(id(&seen_a, "dm")), dm.id_for(alice));
    assert_eq!(Some(id(&seen_c, "dm")), dm.id_for(carol));
    assert_ne!(
        id(&seen_a, "dm"),
        id(&seen_c, "dm"),
        "per-account message ids"
    );
    assert_eq!(Some(id(&seen_a, "group")), g.id_for(alice));
    assert_eq!(Some(id(&seen_c, "group")), g.id_for(carol));
    assert_eq!(
        id(&seen_a, "channel"),
        id(&seen_c, "channel"),
        "per-channel ids"
    );
    assert_eq!(Some(id(&seen_a, "channel")), ch.id_for(alice));
    // The dm is incoming for Alice and outgoing for Carol.
    assert!(
        matches!(find(&seen_a, "dm"), Seen::New { outgoing: false, chat, .. } if chat.bare_id() == Some(carol))
    );
    assert!(
        matches!(find(&seen_c, "dm"), Seen::New { outgoing: true, chat, .. } if chat.bare_id() == Some(alice))
    );

    a.quit().await;
    c.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn the_raw_difference_answers_are_visible_to_a_direct_caller() {
    let dc = start_dc(FakeDcConfig {
        limits: WorldLimits {
            difference_slice: 100,
            difference_too_long: 3,
            channel_difference_too_long: 3,
        },
        ..FakeDcConfig::default()
    })
    .await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let channel = dc.create_channel("C", ChannelKind::Supergroup, &[alice, bob]);
    let start = dc.state(alice).expect("state");
    let channel_start = dc.channel_pts(channel).expect("pts");
    for i in 0..5 {
        dc.send_message(
            ChatId::Private(alice, bob),
            bob,
            &format!("{i}"),
            SendOptions::default(),
        );
        dc.send_message(channel, bob, &format!("c{i}"), SendOptions::default());
    }
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    let diff = within(
        "getDifference",
        tc.client.invoke(&tl::functions::updates::GetDifference {
            pts: start.pts,
            pts_limit: None,
            pts_total_limit: None,
            date: start.date,
            qts: 0,
            qts_limit: None,
        }),
    )
    .await
    .expect("difference");
    assert!(
        matches!(diff, tl::enums::updates::Difference::TooLong(ref d) if d.pts == start.pts + 5),
        "{diff:?}"
    );
    let ChatId::Channel(cid) = channel else {
        panic!("channel")
    };
    let diff = within(
        "getChannelDifference",
        tc.client
            .invoke(&tl::functions::updates::GetChannelDifference {
                force: false,
                channel: tl::types::InputChannel {
                    channel_id: cid,
                    access_hash: dc.channel_access_hash(channel).expect("hash"),
                }
                .into(),
                filter: tl::enums::ChannelMessagesFilter::Empty,
                pts: channel_start,
                limit: 100,
            }),
    )
    .await
    .expect("channel difference");
    match diff {
        tl::enums::updates::ChannelDifference::TooLong(d) => {
            // Telegram sends the latest messages and the dialog (with the new pts) here, but
            // grammers' message box drops these messages.
            assert_eq!(d.messages.len(), 5);
            let tl::enums::Dialog::Dialog(dialog) = d.dialog else {
                panic!("dialog")
            };
            assert_eq!(dialog.pts, dc.channel_pts(channel));
        }
        other => panic!("{other:?}"),
    }

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn without_catch_up_the_stream_starts_from_get_state_and_skips_the_past() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let private = ChatId::Private(alice, bob);
    let session = session_for(&dc, alice, key);
    dc.send_message(private, bob, "before start", SendOptions::default());

    let SenderPool {
        runner,
        handle,
        updates,
    } = SenderPool::with_configuration(Arc::clone(&session), 1, params(Box::new(NoRetries)));
    let client = Client::new(handle.clone());
    let runner = tokio::spawn(runner.run());
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: false })
        .await
        .expect("stream");
    let next = tokio::spawn(async move { stream.next().await.map(|u| summarize(&u)) });
    until("getState from the stream", || {
        dc.request_count("updates.getState") == 1
    })
    .await;
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(private, bob, "after start", SendOptions::default());
    let first = within("first update", next)
        .await
        .expect("task")
        .expect("update");
    assert_eq!(first.text(), Some("after start"));
    assert_eq!(dc.request_count("updates.getDifference"), 0);

    handle.quit();
    let _ = within("runner", runner).await;
    dc.stop().await;
}

/// Frames `payload` in the "full" transport as the `seq`-th packet of a connection.
fn full_frame(seq: i32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 12) as i32;
    let mut buf = Vec::new();
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Sends `bytes` on a fresh connection and returns what the server answers before closing.
async fn raw_exchange(dc: &FakeDc, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(dc.addr())
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    // The server must close the connection; reading to EOF proves it.
    within("server to close", s.read_to_end(&mut answer))
        .await
        .expect("read");
    answer
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");

    // Not a transport frame at all.
    assert!(raw_exchange(&dc, &[0xff; 64]).await.is_empty());
    // A frame with a bad checksum.
    let mut bad_crc = full_frame(0, &[1u8; 40]);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert!(raw_exchange(&dc, &bad_crc).await.is_empty());
    // An unknown auth key: the transport error -404, as Telegram sends it.
    let mut unknown = vec![9u8; 8];
    unknown.extend_from_slice(&[0u8; 16 + 32]);
    assert_eq!(
        raw_exchange(&dc, &full_frame(0, &unknown)).await,
        (-404i32).to_le_bytes()
    );
    // A plain (DH) message: no handshake here.
    assert!(
        raw_exchange(&dc, &full_frame(0, &[0u8; 40]))
            .await
            .is_empty()
    );
    // Correctly encrypted with Alice's key, but the decrypted message is garbage.
    let mut garbage = grammers_crypto::DequeBuffer::with_capacity(256, 64);
    garbage.extend([0x5au8; 48]);
    grammers_crypto::encrypt_data_v2(&mut garbage, &grammers_crypto::AuthKey::from_bytes(key));
    assert!(
        raw_exchange(&dc, &full_frame(0, &garbage[..]))
            .await
            .is_empty()
    );

    // The server is still fine.
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn a_flood_wait_during_catch_up_surfaces_from_the_stream_and_it_recovers() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let session = session_for(&dc, alice, key);
    dc.send_message(
        ChatId::Private(alice, bob),
        bob,
        "missed",
        SendOptions::default(),
    );
    dc.flood_wait("updates.getDifference", 3, 1);

    let SenderPool {
        runner,
        handle,
        updates,
    } = SenderPool::with_configuration(Arc::clone(&session), 1, params(Box::new(NoRetries)));
    let client = Client::new(handle.clone());
    let runner = tokio::spawn(runner.run());
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await
        .expect("stream");
    match within("first next()", stream.next()).await {
        Err(InvocationError::Rpc(e)) => {
            assert_eq!((e.name.as_str(), e.value), ("FLOOD_WAIT", Some(3)));
        }
        Err(e) => panic!("expected FLOOD_WAIT, got {e:?}"),
        Ok(u) => panic!("expected FLOOD_WAIT, got {:?}", summarize(&u)),
    }
    // The message box still wants the difference: the next call asks again and delivers.
    let u = within("second next()", stream.next())
        .await
        .expect("update");
    assert_eq!(summarize(&u).text(), Some("missed"));
    assert_eq!(dc.request_count("updates.getDifference"), 2);

    handle.quit();
    let _ = within("runner", runner).await;
    dc.stop().await;
}

#[tokio::test]
async fn stop_closes_connections_and_the_listener() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let addr = dc.addr();
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", tc.client.get_me()).await.expect("get_me");
    dc.stop().await;

    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let err = within("get_me after stop", tc.client.get_me())
        .await
        .expect_err("server is gone");
    assert!(
        matches!(err, InvocationError::Io(_) | InvocationError::Dropped(_)),
        "{err:?}"
    );
    tc.quit().await;
}

#[tokio::test]
async fn forum_topics_are_listed_with_their_top_messages() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let forum = dc.create_channel("Forum", ChannelKind::Forum, &[alice, bob]);
    let a = dc.create_topic(forum, bob, "Alpha").expect("topic");
    let b = dc.create_topic(forum, alice, "Beta").expect("topic");
    let in_a = dc
        .send_message(
            forum,
            bob,
            "in alpha",
            SendOptions {
                topic: Some(a),
                ..SendOptions::default()
            },
        )
        .expect("sent");
    let general = dc
        .send_message(forum, bob, "in general", SendOptions::default())
        .expect("sent");
    let tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    let ChatId::Channel(cid) = forum else {
        panic!("forum")
    };
    let tl::enums::messages::ForumTopics::Topics(t) = within(
        "messages.getForumTopics",
        tc.client.invoke(&tl::functions::messages::GetForumTopics {
            peer: tl::types::InputPeerChannel {
                channel_id: cid,
                access_hash: dc.channel_access_hash(forum).expect("hash"),
            }
            .into(),
            q: None,
            offset_date: 0,
            offset_id: 0,
            offset_topic: 0,
            limit: 10,
        }),
    )
    .await
    .expect("topics");
    let listed: Vec<(i32, String, i32)> = t
        .topics
        .iter()
        .map(|t| match t {
            tl::enums::ForumTopic::Topic(t) => (t.id, t.title.clone(), t.top_message),
            tl::enums::ForumTopic::Deleted(t) => (t.id, String::new(), 0),
        })
        .collect();
    let g = general.id_for(alice).expect("id");
    let ia = in_a.id_for(alice).expect("id");
    assert_eq!(
        listed,
        vec![
            (1, "General".to_owned(), g),
            (a, "Alpha".to_owned(), ia),
            (b, "Beta".to_owned(), b),
        ]
    );
    assert_eq!(t.count, 3);
    assert_eq!(dc.unimplemented_calls(), Vec::<String>::new());

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn syncing_after_the_first_update_of_a_difference_already_saves_its_end() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let session = session_for(&dc, alice, key);
    let start_pts = dc.state(alice).expect("state").pts;
    for i in 0..5 {
        dc.send_message(
            ChatId::Private(alice, bob),
            bob,
            &format!("m{i}"),
            SendOptions::default(),
        );
    }
    let SenderPool {
        runner,
        handle,
        updates,
    } = SenderPool::with_configuration(Arc::clone(&session), 1, params(Box::new(NoRetries)));
    let client = Client::new(handle.clone());
    let runner = tokio::spawn(runner.run());
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await
        .expect("stream");
    let first = within("first update", stream.next()).await.expect("update");
    assert_eq!(summarize(&first).text(), Some("m0"));
    if let Update::NewMessage(m) = &first {
        // Every message of a difference carries the state at the *end* of the difference.
        assert_eq!(
            m.state.message_box.as_ref().map(|b| b.pts()),
            Some(start_pts + 5)
        );
    }
    stream.sync_update_state().await.expect("sync");
    let saved = session.updates_state().await.expect("state");
    // Four messages are still buffered in the stream, but the session already says they were
    // handled: commit only after the buffered rest of a difference is durable, or a crash here
    // loses m1..m4.
    assert_eq!(saved.pts, start_pts + 5);

    handle.quit();
    let _ = within("runner", runner).await;
    dc.stop().await;
}

#[tokio::test]
async fn without_state_or_self_sentinel_full_updates_are_dropped() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let private = ChatId::Private(alice, bob);
    // A session as a plain MemorySession looks after a real login: the self user cached under
    // its own id only, and no update state.
    let mut data = dc.session_data(alice, key);
    data.peer_infos.remove(&PeerId::self_user());
    data.updates_state = Default::default();
    let session = Arc::new(MemorySession::from(data));
    let full = || SendOptions {
        force_full: true,
        ..SendOptions::default()
    };
    // The account's seq moves on while nobody listens.
    dc.send_message(private, bob, "old 1", full());
    dc.send_message(private, bob, "old 2", full());

    let SenderPool {
        runner,
        handle,
        updates,
    } = SenderPool::with_configuration(Arc::clone(&session), 1, params(Box::new(NoRetries)));
    let client = Client::new(handle.clone());
    let runner = tokio::spawn(runner.run());
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: false })
        .await
        .expect("stream");
    within("get_me", client.get_me()).await.expect("get_me");
    until("subscription", || dc.subscribed_connections(alice) == 1).await;
    dc.send_message(private, bob, "full form", full());
    dc.send_message(private, bob, "short form", SendOptions::default());
    let first = within("first update", stream.next()).await.expect("update");
    // The `updates` push (seq 3) looked like a seq gap to an empty message box with no common
    // entry to fetch a difference for, so grammers dropped it; the short push got through.
    assert_eq!(summarize(&first).text(), Some("short form"));
    assert_eq!(dc.request_count("updates.getState"), 0);
    assert_eq!(dc.request_count("updates.getDifference"), 0);

    handle.quit();
    let _ = within("runner", runner).await;
    dc.stop().await;
}

#[tokio::test]
async fn channel_pts_stored_by_iter_dialogs_survive_a_sync_only_if_loaded_first() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let channel = dc.create_channel("C", ChannelKind::Supergroup, &[alice, bob]);
    dc.send_message(channel, bob, "old post", SendOptions::default());
    let ChatId::Channel(cid) = channel else {
        panic!("channel")
    };
    let has_channel = |session: &MemorySession| {
        futures::executor::block_on(session.updates_state())
            .map(|s| s.channels.iter().any(|c| c.id == cid))
            .unwrap_or(false)
    };

    // Stream first, dialogs second: iter_dialogs writes the channel pts straight into the
    // session, but the message box (loaded when the stream was created) does not know it, and
    // the next sync_update_state replaces the session's state with the box's.
    let mut tc = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), true).await;
    let mut dialogs = tc.client.iter_dialogs();
    while within("dialogs", dialogs.next())
        .await
        .expect("dialogs")
        .is_some()
    {}
    assert!(has_channel(&tc.session));
    dc.send_message(
        ChatId::Private(alice, bob),
        bob,
        "triggers a sync",
        SendOptions::default(),
    );
    tc.collect_texts(&["triggers a sync"]).await;
    let session = Arc::clone(&tc.session);
    until("sync dropped the channel", || !has_channel(&session)).await;
    let session = tc.quit().await;

    // Dialogs first, stream second: the box loads the channel and keeps it.
    let SenderPool {
        runner,
        handle,
        updates,
    } = SenderPool::with_configuration(Arc::clone(&session), 1, params(Box::new(NoRetries)));
    let client = Client::new(handle.clone());
    let runner = tokio::spawn(runner.run());
    let mut dialogs = client.iter_dialogs();
    while within("dialogs", dialogs.next())
        .await
        .expect("dialogs")
        .is_some()
    {}
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await
        .expect("stream");
    dc.send_message(
        ChatId::Private(alice, bob),
        bob,
        "second sync",
        SendOptions::default(),
    );
    let u = within("update", stream.next()).await.expect("update");
    assert_eq!(summarize(&u).text(), Some("second sync"));
    stream.sync_update_state().await.expect("sync");
    assert!(has_channel(&session));

    handle.quit();
    let _ = within("runner", runner).await;
    dc.stop().await;
}

#[tokio::test]
async fn in_a_difference_edits_and_deletions_come_before_new_messages() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");
    let bob = dc.add_user("Bob");
    let session = session_for(&dc, alice, key);
    let private = ChatId::Private(alice, bob);
    let m = dc
        .send_message(private, bob, "draft", SendOptions::default())
        .expect("sent");
    dc.edit_message(&m, "final");

    let mut tc = TestClient::start(session, Box::new(NoRetries), true).await;
    let first = within("first", tc.seen.recv()).await.expect("update");
    let second = within("second", tc.seen.recv()).await.expect("update");
    let id = m.id_for(alice).expect("id");
    // The new message already has its edited text, and the edit is yielded first.
    assert!(
        matches!(&first, Seen::Edited { id: i, text, .. } if *i == id && text == "final"),
        "{first:?}"
    );
    assert!(
        matches!(&second, Seen::New { id: i, text, .. } if *i == id && text == "final"),
        "{second:?}"
    );

    tc.quit().await;
    dc.stop().await;
}

#[tokio::test]
async fn one_key_used_from_two_clients_at_once_is_an_overlap_answered_auth_key_duplicated() {
    let dc = start_dc(FakeDcConfig::default()).await;
    let (alice, key) = dc.add_account("Alice");

    // One owner, then another after the first closed: a hand-over, no overlap.
    let first = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", first.client.get_me())
        .await
        .expect("get_me");
    first.quit().await;
    let second = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", second.client.get_me())
        .await
        .expect("get_me");
    assert!(dc.overlaps().is_empty(), "{:?}", dc.overlaps());
    let handovers = dc.handovers();
    assert_eq!(handovers.len(), 1, "{handovers:?}");
    assert_eq!(handovers[0].user, alice);

    // A third client on the same key while the second still runs: the second (now the older
    // session) is refused as soon as it talks again, as Telegram does.
    let third = TestClient::start(session_for(&dc, alice, key), Box::new(NoRetries), false).await;
    within("get_me", third.client.get_me())
        .await
        .expect("get_me");
    match within("get_me", second.client.get_me()).await {
        Err(InvocationError::Rpc(e)) => {
            assert_eq!((e.code, e.name.as_str()), (406, "AUTH_KEY_DUPLICATED"));
        }
        other => panic!("the older session was answered {other:?}"),
    }
    let overlaps = dc.overlaps();
    assert!(!overlaps.is_empty());
    assert!(overlaps.iter().all(|o| o.user == alice));
    // The newer session is not the one refused.
    within("get_me", third.client.get_me())
        .await
        .expect("the newest session keeps working");
    second.quit().await;
    third.quit().await;
    dc.stop().await;
}
