//! The normalizer against the REAL grammers update pipeline: synthetic layer TL updates are
//! pushed into `Client::stream_updates` (a client on a `MemorySession` whose sender runner is
//! never started, so nothing leaves the process), and the `Update`s it yields are normalized.

use std::sync::Arc;
use std::time::Duration;

use grammers_client::Client;
use grammers_client::client::UpdateStream;
use grammers_client::tl;
use grammers_client::update::Update;
use grammers_mtsender::{SenderPool, UpdatesConfiguration};
use grammers_session::storages::MemorySession;
use grammers_session::updates::UpdatesLike;
use tokio::sync::mpsc;

use tgingest::event::{
    ChatKind, Event, EventKind, Media, MediaKind, Sender, Source, event_id, marked_chat_id,
};
use tgingest::telegram::normalize::{MessageIndex, NormalizeContext, normalize};

const ME: i64 = 4242;
const ALICE: i64 = 1001;
const GROUP: i64 = 555;
const SUPER: i64 = 777;
const CHANNEL: i64 = 888;
const FORUM: i64 = 999;
const DATE: i32 = 1_700_000_000;

// ---- TL helpers: every field of the layer written once ----

fn peer_user(id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id: id }.into()
}
fn peer_chat(id: i64) -> tl::enums::Peer {
    tl::types::PeerChat { chat_id: id }.into()
}
fn peer_channel(id: i64) -> tl::enums::Peer {
    tl::types::PeerChannel { channel_id: id }.into()
}

fn message(id: i32, peer: tl::enums::Peer, text: &str) -> tl::types::Message {
    tl::types::Message {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        post: false,
        from_scheduled: false,
        legacy: false,
        edit_hide: false,
        pinned: false,
        noforwards: false,
        invert_media: false,
        offline: false,
        video_processing_pending: false,
        paid_suggested_post_stars: false,
        paid_suggested_post_ton: false,
        id,
        from_id: None,
        from_boosts_applied: None,
        from_rank: None,
        peer_id: peer,
        saved_peer_id: None,
        fwd_from: None,
        via_bot_id: None,
        via_business_bot_id: None,
        guestchat_via_from: None,
        reply_to: None,
        date: DATE,
        message: text.to_string(),
        media: None,
        reply_markup: None,
        entities: None,
        views: None,
        forwards: None,
        replies: None,
        edit_date: None,
        post_author: None,
        grouped_id: None,
        reactions: None,
        restriction_reason: None,
        ttl_period: None,
        quick_reply_shortcut_id: None,
        effect: None,
        factcheck: None,
        report_delivery_until_date: None,
        paid_message_stars: None,
        suggested_post: None,
        schedule_repeat_period: None,
        summary_from_language: None,
        rich_message: None,
    }
}

fn service(id: i32, peer: tl::enums::Peer, from: i64) -> tl::enums::Message {
    tl::types::MessageService {
        out: false,
        mentioned: false,
        media_unread: false,
        reactions_are_possible: false,
        silent: false,
        post: false,
        legacy: false,
        id,
        from_id: Some(peer_user(from)),
        peer_id: peer,
        saved_peer_id: None,
        reply_to: None,
        date: DATE,
        action: tl::types::MessageActionChatEditTitle {
            title: "New".into(),
        }
        .into(),
        reactions: None,
        ttl_period: None,
    }
    .into()
}

fn reply_header(
    msg_id: Option<i32>,
    top_id: Option<i32>,
    forum: bool,
) -> tl::enums::MessageReplyHeader {
    tl::types::MessageReplyHeader {
        reply_to_scheduled: false,
        forum_topic: forum,
        quote: false,
        reply_to_ephemeral: false,
        reply_to_msg_id: msg_id,
        reply_to_peer_id: None,
        reply_from: None,
        reply_media: None,
        reply_to_top_id: top_id,
        quote_text: None,
        quote_entities: None,
        quote_offset: None,
        todo_item_id: None,
        poll_option: None,
    }
    .into()
}

fn user(id: i64, name: &str) -> tl::enums::User {
    tl::types::User {
        is_self: id == ME,
        contact: false,
        mutual_contact: false,
        deleted: false,
        bot: false,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id,
        access_hash: Some(1),
        first_name: Some(name.into()),
        last_name: None,
        username: None,
        phone: None,
        photo: None,
        status: None,
        bot_info_version: None,
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    }
    .into()
}

fn basic_group(id: i64, title: &str) -> tl::enums::Chat {
    tl::types::Chat {
        creator: false,
        left: false,
        deactivated: false,
        call_active: false,
        call_not_empty: false,
        noforwards: false,
        id,
        title: title.into(),
        photo: tl::enums::ChatPhoto::Empty,
        participants_count: 3,
        date: DATE,
        version: 1,
        migrated_to: None,
        admin_rights: None,
        default_banned_rights: None,
    }
    .into()
}

fn channel(id: i64, title: &str, megagroup: bool, forum: bool) -> tl::enums::Chat {
    tl::types::Channel {
        creator: false,
        left: false,
        broadcast: !megagroup,
        verified: false,
        megagroup,
        restricted: false,
        signatures: false,
        min: false,
        scam: false,
        has_link: false,
        has_geo: false,
        slowmode_enabled: false,
        call_active: false,
        call_not_empty: false,
        fake: false,
        gigagroup: false,
        noforwards: false,
        join_to_send: false,
        join_request: false,
        forum,
        stories_hidden: false,
        stories_hidden_min: false,
        stories_unavailable: false,
        signature_profiles: false,
        autotranslation: false,
        broadcast_messages_allowed: false,
        monoforum: false,
        forum_tabs: false,
        id,
        access_hash: Some(2),
        title: title.into(),
        username: None,
        photo: tl::enums::ChatPhoto::Empty,
        date: DATE,
        restriction_reason: None,
        admin_rights: None,
        banned_rights: None,
        default_banned_rights: None,
        participants_count: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        emoji_status: None,
        level: None,
        subscription_until_date: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_monoforum_id: None,
        linked_community_id: None,
    }
    .into()
}

fn document(mime: &str, size: i64, name: Option<&str>) -> tl::enums::MessageMedia {
    let mut attributes = Vec::new();
    if let Some(n) = name {
        attributes.push(
            tl::types::DocumentAttributeFilename {
                file_name: n.into(),
            }
            .into(),
        );
    }
    tl::types::MessageMediaDocument {
        nopremium: false,
        spoiler: false,
        video: false,
        round: false,
        voice: false,
        document: Some(
            tl::types::Document {
                id: 1,
                access_hash: 1,
                file_reference: vec![],
                date: DATE,
                mime_type: mime.into(),
                size,
                thumbs: None,
                video_thumbs: None,
                dc_id: 2,
                attributes,
            }
            .into(),
        ),
        alt_documents: None,
        video_cover: None,
        video_timestamp: None,
        ttl_seconds: None,
    }
    .into()
}

fn photo(size: i32) -> tl::enums::MessageMedia {
    tl::types::MessageMediaPhoto {
        spoiler: false,
        live_photo: false,
        photo: Some(
            tl::types::Photo {
                has_stickers: false,
                id: 1,
                access_hash: 1,
                file_reference: vec![],
                date: DATE,
                sizes: vec![
                    tl::types::PhotoSize {
                        r#type: "x".into(),
                        w: 800,
                        h: 600,
                        size,
                    }
                    .into(),
                ],
                video_sizes: None,
                dc_id: 2,
            }
            .into(),
        ),
        ttl_seconds: None,
        video: None,
    }
    .into()
}

// ---- the real pipeline ----

struct Harness {
    tx: mpsc::Sender<UpdatesLike>,
    stream: UpdateStream,
    pts: i32,
    channel_pts: std::collections::HashMap<i64, i32>,
    ctx: NormalizeContext,
    index: MessageIndex,
    _client: Client,
}

impl Harness {
    async fn new() -> Self {
        let session = Arc::new(MemorySession::default());
        let SenderPool {
            runner: _runner,
            handle,
            updates: _,
        } = SenderPool::new(session, 1);
        let client = Client::new(handle);
        let (tx, rx) = mpsc::channel(64);
        let stream = client
            .stream_updates(rx, UpdatesConfiguration { catch_up: false })
            .await
            .expect("stream");
        Harness {
            tx,
            stream,
            pts: 0,
            channel_pts: Default::default(),
            ctx: NormalizeContext::new(ME.to_string(), Source::Live),
            index: MessageIndex::new(100),
            _client: client,
        }
    }

    fn next_pts(&mut self, channel: Option<i64>) -> i32 {
        let p = match channel {
            Some(c) => self.channel_pts.entry(c).or_insert(0),
            None => &mut self.pts,
        };
        *p += 1;
        *p
    }

    /// Sends one update in an `updates` container and normalizes what comes out.
    async fn push(
        &mut self,
        update: tl::enums::Update,
        users: Vec<tl::enums::User>,
        chats: Vec<tl::enums::Chat>,
    ) -> Vec<Event> {
        let update = self.fetch(update, users, chats).await;
        let events = normalize(&update, &self.ctx, &mut self.index);
        for e in &events {
            e.validate().expect("valid event");
        }
        events
    }

    /// Sends one update in an `updates` container and returns what the real stream yields.
    async fn fetch(
        &mut self,
        update: tl::enums::Update,
        users: Vec<tl::enums::User>,
        chats: Vec<tl::enums::Chat>,
    ) -> Update {
        let container = tl::types::Updates {
            updates: vec![update],
            users,
            chats,
            date: DATE,
            seq: 0,
        };
        self.tx
            .send(UpdatesLike::Updates(container.into()))
            .await
            .expect("send");
        tokio::time::timeout(Duration::from_secs(5), self.stream.next())
            .await
            .expect("an update within 5s")
            .expect("update")
    }

    async fn new_message(
        &mut self,
        m: tl::enums::Message,
        channel: Option<i64>,
        users: Vec<tl::enums::User>,
        chats: Vec<tl::enums::Chat>,
    ) -> Vec<Event> {
        let pts = self.next_pts(channel);
        let u = match channel {
            Some(_) => tl::types::UpdateNewChannelMessage {
                message: m,
                pts,
                pts_count: 1,
            }
            .into(),
            None => tl::types::UpdateNewMessage {
                message: m,
                pts,
                pts_count: 1,
            }
            .into(),
        };
        self.push(u, users, chats).await
    }
}

fn one(mut events: Vec<Event>) -> Event {
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0)
}

fn id_of(e: &Event) -> String {
    event_id(
        &e.account_id,
        &e.chat.id,
        &e.message_id,
        e.kind,
        e.edit_version,
    )
}

#[tokio::test]
async fn private_incoming_and_outgoing() {
    let mut h = Harness::new().await;
    let m = message(10, peer_user(ALICE), "hi");
    let e = one(h
        .new_message(m.into(), None, vec![user(ALICE, "Alice")], vec![])
        .await);
    assert_eq!(e.kind, EventKind::Message);
    assert_eq!(e.chat.kind, ChatKind::Private);
    assert_eq!(e.chat.id, ALICE.to_string());
    assert_eq!(e.account_id, ME.to_string());
    assert_eq!(
        e.sender,
        Some(Sender {
            id: ALICE.to_string(),
            display_name: Some("Alice".into()),
            is_self: false
        })
    );
    assert_eq!(e.message_id, "10");
    assert_eq!(e.text, "hi");
    assert_eq!(e.sent_at_us, i64::from(DATE) * 1_000_000);
    assert_eq!(
        (e.topic_id.as_deref(), e.reply_to.as_deref(), &e.media),
        (None, None, &None)
    );
    assert_eq!(e.edit_version, 0);
    assert_eq!(e.source, Source::Live);
    assert_eq!(e.event_id, id_of(&e));

    let mut m = message(11, peer_user(ALICE), "reply");
    m.out = true;
    m.reply_to = Some(reply_header(Some(10), None, false));
    let e = one(h
        .new_message(m.into(), None, vec![user(ALICE, "Alice")], vec![])
        .await);
    assert_eq!(e.chat.id, ALICE.to_string());
    assert_eq!(
        e.sender,
        Some(Sender {
            id: ME.to_string(),
            display_name: None,
            is_self: true
        })
    );
    assert_eq!(e.reply_to.as_deref(), Some("10"));
}

#[tokio::test]
async fn basic_group_and_service_message() {
    let mut h = Harness::new().await;
    let mut m = message(20, peer_chat(GROUP), "group hi");
    m.from_id = Some(peer_user(ALICE));
    let e = one(h
        .new_message(
            m.into(),
            None,
            vec![user(ALICE, "Alice")],
            vec![basic_group(GROUP, "G")],
        )
        .await);
    assert_eq!(e.chat.kind, ChatKind::Group);
    assert_eq!(e.chat.id, format!("-{GROUP}"));
    assert_eq!(e.chat.title.as_deref(), Some("G"));
    assert_eq!(e.sender.as_ref().unwrap().id, ALICE.to_string());
    assert!(!e.sender.as_ref().unwrap().is_self);

    let s = service(21, peer_chat(GROUP), ME);
    let e = one(h
        .new_message(s, None, vec![user(ME, "Me")], vec![basic_group(GROUP, "G")])
        .await);
    assert_eq!(e.kind, EventKind::Service);
    assert_eq!(e.chat.id, format!("-{GROUP}"));
    assert_eq!(e.text, "");
    assert!(e.sender.as_ref().unwrap().is_self);
    assert_eq!(e.sender.as_ref().unwrap().id, ME.to_string());
}

#[tokio::test]
async fn supergroup_and_broadcast_channel_post() {
    let mut h = Harness::new().await;
    let mut m = message(5, peer_channel(SUPER), "sg");
    m.from_id = Some(peer_user(ALICE));
    let e = one(h
        .new_message(
            m.into(),
            Some(SUPER),
            vec![user(ALICE, "Alice")],
            vec![channel(SUPER, "SG", true, false)],
        )
        .await);
    assert_eq!(e.chat.kind, ChatKind::Supergroup);
    assert_eq!(e.chat.id, marked_chat_id(ChatKind::Supergroup, SUPER));
    assert_eq!(e.chat.id, format!("-1000000000{SUPER}"));
    assert_eq!(e.sender.as_ref().unwrap().id, ALICE.to_string());
    assert_eq!(e.topic_id, None);

    let mut m = message(6, peer_channel(CHANNEL), "post");
    m.post = true;
    let e = one(h
        .new_message(
            m.into(),
            Some(CHANNEL),
            vec![],
            vec![channel(CHANNEL, "News", false, false)],
        )
        .await);
    assert_eq!(e.chat.kind, ChatKind::Channel);
    assert_eq!(e.chat.id, format!("-1000000000{CHANNEL}"));
    assert_eq!(e.chat.title.as_deref(), Some("News"));
    assert_eq!(e.sender, None);
}

#[tokio::test]
async fn forum_topics_and_general() {
    let mut h = Harness::new().await;
    let chats = || vec![channel(FORUM, "Forum", true, true)];
    // a message in topic 42 (not a reply): the header names the topic root
    let mut m = message(50, peer_channel(FORUM), "in topic");
    m.from_id = Some(peer_user(ALICE));
    m.reply_to = Some(reply_header(Some(42), None, true));
    let e = one(h
        .new_message(m.into(), Some(FORUM), vec![user(ALICE, "A")], chats())
        .await);
    assert_eq!(e.topic_id.as_deref(), Some("42"));
    assert_eq!(e.reply_to, None);
    // a reply to message 50 inside topic 42
    let mut m = message(51, peer_channel(FORUM), "reply in topic");
    m.from_id = Some(peer_user(ALICE));
    m.reply_to = Some(reply_header(Some(50), Some(42), true));
    let e = one(h
        .new_message(m.into(), Some(FORUM), vec![user(ALICE, "A")], chats())
        .await);
    assert_eq!(e.topic_id.as_deref(), Some("42"));
    assert_eq!(e.reply_to.as_deref(), Some("50"));
    // no header in a forum: General
    let mut m = message(52, peer_channel(FORUM), "general");
    m.from_id = Some(peer_user(ALICE));
    let e = one(h
        .new_message(m.into(), Some(FORUM), vec![user(ALICE, "A")], chats())
        .await);
    assert_eq!(e.topic_id.as_deref(), Some("1"));
    assert_eq!(e.chat.kind, ChatKind::Supergroup);
}

#[tokio::test]
async fn edit_has_edit_date_as_version_and_its_own_id() {
    let mut h = Harness::new().await;
    let m = message(30, peer_user(ALICE), "v1");
    let original = one(h
        .new_message(m.into(), None, vec![user(ALICE, "A")], vec![])
        .await);

    let mut m = message(30, peer_user(ALICE), "v2");
    m.edit_date = Some(DATE + 60);
    let pts = h.next_pts(None);
    let u = tl::types::UpdateEditMessage {
        message: m.into(),
        pts,
        pts_count: 1,
    }
    .into();
    let e = one(h.push(u, vec![user(ALICE, "A")], vec![]).await);
    assert_eq!(e.kind, EventKind::Edit);
    assert_eq!(e.edit_version, (DATE + 60) as u64);
    assert_eq!(e.message_id, original.message_id);
    assert_eq!(e.chat.id, original.chat.id);
    assert_eq!(e.text, "v2");
    assert_ne!(e.event_id, original.event_id);
    assert_eq!(e.event_id, id_of(&e));

    // channel edit
    let mut m = message(7, peer_channel(CHANNEL), "post v2");
    m.post = true;
    m.edit_date = Some(DATE + 5);
    let pts = h.next_pts(Some(CHANNEL));
    let u = tl::types::UpdateEditChannelMessage {
        message: m.into(),
        pts,
        pts_count: 1,
    }
    .into();
    let e = one(h
        .push(u, vec![], vec![channel(CHANNEL, "News", false, false)])
        .await);
    assert_eq!((e.kind, e.chat.kind), (EventKind::Edit, ChatKind::Channel));
    assert_eq!(e.edit_version, (DATE + 5) as u64);
}

#[tokio::test]
async fn deletions_in_a_channel_and_in_a_private_chat_via_the_index() {
    let mut h = Harness::new().await;
    h.ctx.channel_kinds.insert(CHANNEL, ChatKind::Channel);
    let pts = h.next_pts(Some(CHANNEL));
    let u = tl::types::UpdateDeleteChannelMessages {
        channel_id: CHANNEL,
        messages: vec![3, 4],
        pts,
        pts_count: 2,
    }
    .into();
    let events = h
        .push(u, vec![], vec![channel(CHANNEL, "News", false, false)])
        .await;
    assert_eq!(events.len(), 2);
    for (e, id) in events.iter().zip(["3", "4"]) {
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.chat.kind, ChatKind::Channel);
        assert_eq!(e.chat.id, format!("-1000000000{CHANNEL}"));
        assert_eq!(e.message_id, id);
        assert_eq!(e.sender, None);
    }

    // a private message is seen, then deleted together with an id never seen
    let m = message(40, peer_user(ALICE), "soon gone");
    one(h
        .new_message(m.into(), None, vec![user(ALICE, "A")], vec![])
        .await);
    let pts = h.next_pts(None) + 1;
    h.pts = pts;
    let u = tl::types::UpdateDeleteMessages {
        messages: vec![40, 999_999],
        pts,
        pts_count: 2,
    }
    .into();
    let update = h.fetch(u, vec![], vec![]).await;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let events =
        metrics::with_local_recorder(&recorder, || normalize(&update, &h.ctx, &mut h.index));
    let unresolved: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "tgingest_unresolved_deletions_total")
        .map(|(.., v)| v)
        .collect();
    assert_eq!(
        unresolved,
        vec![metrics_util::debugging::DebugValue::Counter(1)]
    );
    let e = one(events);
    e.validate().unwrap();
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.chat.kind, ChatKind::Private);
    assert_eq!(e.chat.id, ALICE.to_string());
    assert_eq!(e.message_id, "40");
    assert_eq!(e.event_id, id_of(&e));
}

#[tokio::test]
async fn media_with_caption_and_without_text() {
    let mut h = Harness::new().await;
    let mut m = message(60, peer_user(ALICE), "caption");
    m.media = Some(document("application/pdf", 12_345, Some("report.pdf")));
    let e = one(h
        .new_message(m.into(), None, vec![user(ALICE, "A")], vec![])
        .await);
    assert_eq!(e.text, "caption");
    assert_eq!(
        e.media,
        Some(Media {
            kind: MediaKind::Document,
            mime_type: Some("application/pdf".into()),
            size_bytes: Some(12_345),
            file_name: Some("report.pdf".into()),
        })
    );

    let mut m = message(61, peer_user(ALICE), "");
    m.media = Some(photo(4_096));
    let e = one(h
        .new_message(m.into(), None, vec![user(ALICE, "A")], vec![])
        .await);
    assert_eq!(e.text, "");
    assert_eq!(
        e.media,
        Some(Media {
            kind: MediaKind::Photo,
            mime_type: Some("image/jpeg".into()),
            size_bytes: Some(4_096),
            file_name: None,
        })
    );
}

#[test]
fn index_is_bounded_and_evicts_the_oldest() {
    let mut idx = MessageIndex::new(2);
    idx.record(1, "5".into(), ChatKind::Private);
    idx.record(2, "-6".into(), ChatKind::Group);
    idx.record(3, "7".into(), ChatKind::Private);
    assert_eq!(idx.len(), 2);
    assert_eq!(idx.resolve(1), None);
    assert_eq!(idx.resolve(2), Some(("-6", ChatKind::Group)));
    assert_eq!(idx.resolve(3), Some(("7", ChatKind::Private)));
}

// ---- the adapter's update groups, through the real stream ----

/// Every source update's cursor covers exactly the updates handed out so far — never one more
/// (a crash would lose it: the state would already be past it) — and nothing is lost or split
/// out of order, whatever way the containers happen to be grouped.
#[tokio::test]
async fn cursors_cover_exactly_what_was_handed_out() {
    use tgingest::telegram::grammers::cursor::GrammersCursor;
    use tgingest::telegram::grammers::gateway::{GroupReader, UpdateTaker};

    let session = Arc::new(MemorySession::default());
    let SenderPool {
        runner: _runner,
        handle,
        updates: _,
    } = SenderPool::new(session, 1);
    let client = Client::new(handle);
    let (tx, rx) = mpsc::channel(1024);
    let stream = client
        .stream_updates(rx, UpdatesConfiguration { catch_up: false })
        .await
        .expect("stream");
    let mut reader = GroupReader::spawn(stream, client.clone());
    let mut taker = UpdateTaker::new(&ME.to_string(), GrammersCursor::default());

    // 60 containers of 1 to 5 messages; every few containers the sender pauses, so the reader
    // sees both lone containers and several ready at once.
    let mut pts = 0;
    for i in 0..60u32 {
        let size = 1 + (i * 7 + 3) % 5;
        let updates = (0..size)
            .map(|_| {
                pts += 1;
                tl::types::UpdateNewMessage {
                    message: message(pts, peer_user(ALICE), "x").into(),
                    pts,
                    pts_count: 1,
                }
                .into()
            })
            .collect();
        let container = tl::types::Updates {
            updates,
            users: vec![user(ALICE, "Alice")],
            chats: vec![],
            date: DATE,
            seq: 0,
        };
        tx.send(UpdatesLike::Updates(container.into()))
            .await
            .expect("send");
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let mut handed = 0;
    let mut ids = Vec::new();
    let mut largest_group = 0;
    while handed < pts {
        let group = tokio::time::timeout(Duration::from_secs(5), reader.recv())
            .await
            .expect("a group within 5s")
            .expect("stream open")
            .expect("no stream error");
        handed += group.len() as i32;
        largest_group = largest_group.max(group.len());
        let update = taker.take(group);
        let cursor = GrammersCursor::decode(&update.cursor).expect("a grammers cursor");
        assert_eq!(
            cursor.state.pts, handed,
            "the cursor must cover exactly the {handed} updates handed out"
        );
        assert_eq!(cursor.high_water[&ALICE.to_string()], handed);
        ids.extend(
            update
                .events
                .iter()
                .map(|e| e.message_id.parse::<i32>().unwrap()),
        );
    }
    assert_eq!(ids, (1..=pts).collect::<Vec<_>>(), "all, once, in order");
    assert!(
        largest_group > 1,
        "a container of several updates is one group"
    );
}
