//! grammers updates → normalized [`Event`]s.
//!
//! Everything is read from the raw TL message (`message.raw`) where grammers' helpers could
//! panic (`peer_id()` on peerless empty messages, `Document::name()` on documents without a
//! document), and from the update's peer map only for what it alone knows (megagroup vs
//! broadcast, forum flag, titles and names). Nothing here logs message text or ids.

use std::collections::{HashMap, HashSet, VecDeque};

use grammers_client::peer::Peer;
use grammers_client::tl;
use grammers_client::update::Update;

use crate::event::{
    Chat, ChatKind, Event, EventKind, Media, MediaKind, SCHEMA_VERSION, Sender, Source, event_id,
    marked_chat_id, now_us,
};

/// Counter of private/basic-group deletions whose chat could not be resolved.
pub const UNRESOLVED_DELETIONS_METRIC: &str = "tgingest_unresolved_deletions_total";

/// What normalization needs to know beyond the update itself.
#[derive(Debug, Clone)]
pub struct NormalizeContext {
    /// The ingesting account's Telegram user id (decimal string).
    pub account_id: String,
    /// How these updates reached us.
    pub source: Source,
    /// Known kinds of channels by bare id (from dialogs), used when the update's peer map does
    /// not carry the channel: `Supergroup` or `Channel`.
    pub channel_kinds: HashMap<i64, ChatKind>,
    /// Bare ids of channels known to be forums (topics enabled).
    pub forums: HashSet<i64>,
}

impl NormalizeContext {
    /// A context with no prior knowledge of chats.
    pub fn new(account_id: impl Into<String>, source: Source) -> Self {
        NormalizeContext {
            account_id: account_id.into(),
            source,
            channel_kinds: HashMap::new(),
            forums: HashSet::new(),
        }
    }
}

/// Message id → chat for the common message box (private chats and basic groups), where
/// `updateDeleteMessages` carries only message ids.
///
/// Choice: an in-memory map bounded to the last `capacity` ids recorded, evicting the oldest
/// recorded first (FIFO; a message is recorded when it is first seen, and deletions mostly hit
/// recent messages). Common-box message ids are unique per account, so the id alone is a key.
/// Memory is `capacity` × (id + marked id string + kind), a few MB at 100 000. It is not
/// persisted: after a restart, deletions of messages seen before it are unresolvable and
/// counted (see [`normalize`]).
#[derive(Debug, Clone)]
pub struct MessageIndex {
    capacity: usize,
    map: HashMap<i32, (String, ChatKind)>,
    order: VecDeque<i32>,
}

impl MessageIndex {
    /// An empty index holding at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        MessageIndex {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers that common-box message `id` lives in `chat_id` (marked) of `kind`.
    pub fn record(&mut self, id: i32, chat_id: String, kind: ChatKind) {
        if self.map.insert(id, (chat_id, kind)).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The chat of common-box message `id`, if it was recorded and not evicted.
    pub fn resolve(&self, id: i32) -> Option<(&str, ChatKind)> {
        self.map.get(&id).map(|(c, k)| (c.as_str(), *k))
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no ids are held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Turns one grammers update into the events it means (none for updates that are not about
/// messages). New and edited common-box messages are recorded in `index`.
///
/// Deletions in private chats and basic groups carry only message ids; those not in `index`
/// are counted in [`UNRESOLVED_DELETIONS_METRIC`] and skipped. Guessing a chat would attach
/// a deletion to the wrong conversation, and emitting a chat-less delete would break the
/// `Event` contract (every event belongs to a chat); an honest count lets operators size the
/// index instead.
pub fn normalize(update: &Update, ctx: &NormalizeContext, index: &mut MessageIndex) -> Vec<Event> {
    match update {
        Update::NewMessage(m) => message_event(m, false, ctx, index).into_iter().collect(),
        Update::MessageEdited(m) => message_event(m, true, ctx, index).into_iter().collect(),
        Update::MessageDeleted(d) => {
            let date = d.state.date;
            match d.channel_id() {
                Some(channel_id) => {
                    let kind = ctx
                        .channel_kinds
                        .get(&channel_id)
                        .copied()
                        .unwrap_or(ChatKind::Channel);
                    let chat_id = marked_chat_id(kind, channel_id);
                    d.messages()
                        .iter()
                        .map(|id| delete_event(ctx, chat_id.clone(), kind, *id, date))
                        .collect()
                }
                None => {
                    let mut out = Vec::new();
                    let mut unresolved = 0u64;
                    for id in d.messages() {
                        match index.resolve(*id) {
                            Some((chat_id, kind)) => {
                                out.push(delete_event(ctx, chat_id.to_string(), kind, *id, date))
                            }
                            None => unresolved += 1,
                        }
                    }
                    if unresolved > 0 {
                        metrics::counter!(UNRESOLVED_DELETIONS_METRIC).increment(unresolved);
                        tracing::debug!(unresolved, "deletions without a known chat skipped");
                    }
                    out
                }
            }
        }
        _ => Vec::new(),
    }
}

fn delete_event(
    ctx: &NormalizeContext,
    chat_id: String,
    kind: ChatKind,
    message_id: i32,
    date: i32,
) -> Event {
    let message_id = message_id.to_string();
    let observed = now_us();
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(&ctx.account_id, &chat_id, &message_id, EventKind::Delete, 0),
        account_id: ctx.account_id.clone(),
        kind: EventKind::Delete,
        chat: Chat {
            kind,
            id: chat_id,
            title: None,
        },
        sender: None,
        message_id,
        topic_id: None,
        reply_to: None,
        // A deletion has no send time of its own: the update's date, else when it was seen.
        sent_at_us: if date > 0 {
            i64::from(date) * 1_000_000
        } else {
            observed
        },
        edit_version: 0,
        text: String::new(),
        media: None,
        source: ctx.source,
        observed_at_us: observed,
    }
}

/// The fields shared by `message` and `messageService`.
struct RawView<'a> {
    id: i32,
    peer: &'a tl::enums::Peer,
    from: Option<&'a tl::enums::Peer>,
    out: bool,
    post: bool,
    date: i32,
    edit_date: Option<i32>,
    reply_to: Option<&'a tl::enums::MessageReplyHeader>,
    text: &'a str,
    media: Option<&'a tl::enums::MessageMedia>,
    service: bool,
}

fn raw_view(raw: &tl::enums::Message) -> Option<RawView<'_>> {
    match raw {
        tl::enums::Message::Empty(_) => None,
        tl::enums::Message::Message(m) => Some(RawView {
            id: m.id,
            peer: &m.peer_id,
            from: m.from_id.as_ref(),
            out: m.out,
            post: m.post,
            date: m.date,
            edit_date: m.edit_date,
            reply_to: m.reply_to.as_ref(),
            text: &m.message,
            media: m.media.as_ref(),
            service: false,
        }),
        tl::enums::Message::Service(m) => Some(RawView {
            id: m.id,
            peer: &m.peer_id,
            from: m.from_id.as_ref(),
            out: m.out,
            post: m.post,
            date: m.date,
            edit_date: None,
            reply_to: m.reply_to.as_ref(),
            text: "",
            media: None,
            service: true,
        }),
    }
}

fn message_event(
    msg: &grammers_client::update::Message,
    edited: bool,
    ctx: &NormalizeContext,
    index: &mut MessageIndex,
) -> Option<Event> {
    normalize_message(msg, edited, ctx, index)
}

/// Turns one message (from an update, or read from history for a backfill) into its event;
/// `None` for empty messages. `edited` makes it an edit event versioned by its edit date.
pub fn normalize_message(
    msg: &grammers_client::message::Message,
    edited: bool,
    ctx: &NormalizeContext,
    index: &mut MessageIndex,
) -> Option<Event> {
    // Empty messages (with or without a peer) carry nothing to ingest; skipping them here also
    // keeps grammers' panicking `peer_id()` out of reach.
    let raw = raw_view(&msg.raw)?;
    // Safe now: the raw message has a peer, so `peer()` cannot hit grammers' `expect`.
    let peer = msg.peer();

    let (kind, bare, forum) = match raw.peer {
        tl::enums::Peer::User(u) => (ChatKind::Private, u.user_id, false),
        tl::enums::Peer::Chat(c) => (ChatKind::Group, c.chat_id, false),
        tl::enums::Peer::Channel(c) => {
            let (kind, forum) = channel_kind(peer, c.channel_id, raw.post, ctx);
            (kind, c.channel_id, forum)
        }
    };
    if bare <= 0 || raw.id <= 0 {
        return None;
    }
    let chat_id = marked_chat_id(kind, bare);
    if matches!(kind, ChatKind::Private | ChatKind::Group) {
        index.record(raw.id, chat_id.clone(), kind);
    }

    let sender = sender(&raw, kind, peer, msg, ctx);
    let (topic_id, reply_to) = topic_and_reply(raw.reply_to, forum);
    let event_kind = if raw.service {
        EventKind::Service
    } else if edited {
        EventKind::Edit
    } else {
        EventKind::Message
    };
    // Telegram has no edit counter; the edit date orders versions. An edit update without an
    // edit date (reactions, view counts) shares version 0 with its like, so it deduplicates.
    let edit_version = if event_kind == EventKind::Edit {
        raw.edit_date.map_or(0, |d| u64::try_from(d).unwrap_or(0))
    } else {
        0
    };
    let message_id = raw.id.to_string();
    let title = match kind {
        ChatKind::Private => None,
        _ => peer.and_then(Peer::name).map(str::to_string),
    };
    Some(Event {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(
            &ctx.account_id,
            &chat_id,
            &message_id,
            event_kind,
            edit_version,
        ),
        account_id: ctx.account_id.clone(),
        kind: event_kind,
        chat: Chat {
            kind,
            id: chat_id,
            title,
        },
        sender,
        message_id,
        topic_id,
        reply_to,
        sent_at_us: i64::from(raw.date) * 1_000_000,
        edit_version,
        text: raw.text.to_string(),
        media: raw.media.and_then(media),
        source: ctx.source,
        observed_at_us: now_us(),
    })
}

/// Supergroup or broadcast channel, and whether it is a forum: the update's own chat data
/// first, then what the context knows, then the message's `post` flag.
fn channel_kind(
    peer: Option<&Peer>,
    bare: i64,
    post: bool,
    ctx: &NormalizeContext,
) -> (ChatKind, bool) {
    let from_ctx_forum = ctx.forums.contains(&bare);
    match peer {
        Some(Peer::Group(g)) => {
            let forum = matches!(&g.raw, tl::enums::Chat::Channel(c) if c.forum);
            (ChatKind::Supergroup, forum || from_ctx_forum)
        }
        Some(Peer::Channel(_)) => (ChatKind::Channel, false),
        Some(Peer::Community(_)) => (ChatKind::Supergroup, from_ctx_forum),
        _ => {
            let kind = ctx.channel_kinds.get(&bare).copied().unwrap_or(if post {
                ChatKind::Channel
            } else {
                ChatKind::Supergroup
            });
            (kind, from_ctx_forum)
        }
    }
}

fn sender(
    raw: &RawView<'_>,
    kind: ChatKind,
    peer: Option<&Peer>,
    msg: &grammers_client::message::Message,
    ctx: &NormalizeContext,
) -> Option<Sender> {
    let own = || Sender {
        id: ctx.account_id.clone(),
        display_name: None,
        is_self: true,
    };
    match raw.from {
        Some(tl::enums::Peer::User(u)) => {
            let id = u.user_id.to_string();
            let is_self = id == ctx.account_id;
            let display_name = msg
                .sender()
                .and_then(Peer::name)
                .map(str::to_string)
                .filter(|_| !is_self);
            Some(Sender {
                id,
                display_name,
                is_self,
            })
        }
        Some(tl::enums::Peer::Channel(c)) => Some(Sender {
            id: marked_chat_id(ChatKind::Channel, c.channel_id),
            display_name: msg.sender().and_then(Peer::name).map(str::to_string),
            is_self: false,
        }),
        Some(tl::enums::Peer::Chat(c)) => Some(Sender {
            id: marked_chat_id(ChatKind::Group, c.chat_id),
            display_name: None,
            is_self: false,
        }),
        // Since layer 119 private messages omit from_id: the sender is the peer, or (outgoing)
        // the account itself, which grammers reports as the `PeerId::self_user()` sentinel.
        None if kind == ChatKind::Private => {
            if raw.out {
                Some(own())
            } else if let tl::enums::Peer::User(u) = raw.peer {
                Some(Sender {
                    id: u.user_id.to_string(),
                    display_name: peer.and_then(Peer::name).map(str::to_string),
                    is_self: u.user_id.to_string() == ctx.account_id,
                })
            } else {
                None
            }
        }
        None => None,
    }
}

/// Topic and reply target from the reply header. In a forum, a header with `forum_topic` names
/// the topic (`reply_to_top_id`, or `reply_to_msg_id` when the message replies to the topic
/// root itself, which is then not a reply); no such header means the General topic (id 1).
fn topic_and_reply(
    header: Option<&tl::enums::MessageReplyHeader>,
    forum: bool,
) -> (Option<String>, Option<String>) {
    let positive = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v.to_string());
    match header {
        Some(tl::enums::MessageReplyHeader::Header(h)) => {
            if h.forum_topic {
                let topic = positive(h.reply_to_top_id.or(h.reply_to_msg_id));
                let reply = if h.reply_to_top_id.is_some() {
                    positive(h.reply_to_msg_id)
                } else {
                    None
                };
                (topic.or_else(|| forum.then(|| "1".to_string())), reply)
            } else {
                let topic = forum.then(|| "1".to_string());
                (topic, positive(h.reply_to_msg_id))
            }
        }
        _ => (forum.then(|| "1".to_string()), None),
    }
}

fn media(m: &tl::enums::MessageMedia) -> Option<Media> {
    use tl::enums::MessageMedia as M;
    let bare = |kind| Media {
        kind,
        mime_type: None,
        size_bytes: None,
        file_name: None,
    };
    Some(match m {
        M::Empty => return None,
        M::Photo(p) => {
            let size = match &p.photo {
                Some(tl::enums::Photo::Photo(photo)) => photo
                    .sizes
                    .iter()
                    .filter_map(|s| match s {
                        tl::enums::PhotoSize::Size(s) => u64::try_from(s.size).ok(),
                        tl::enums::PhotoSize::Progressive(s) => {
                            s.sizes.iter().filter_map(|v| u64::try_from(*v).ok()).max()
                        }
                        _ => None,
                    })
                    .max(),
                _ => None,
            };
            Media {
                kind: MediaKind::Photo,
                mime_type: Some("image/jpeg".to_string()),
                size_bytes: size,
                file_name: None,
            }
        }
        M::Document(d) => match &d.document {
            Some(tl::enums::Document::Document(doc)) => {
                let mut kind = if d.voice {
                    MediaKind::Voice
                } else if d.video || d.round {
                    MediaKind::Video
                } else {
                    MediaKind::Document
                };
                let mut file_name = None;
                for attr in &doc.attributes {
                    match attr {
                        tl::enums::DocumentAttribute::Sticker(_) => kind = MediaKind::Sticker,
                        tl::enums::DocumentAttribute::Audio(a) if kind == MediaKind::Document => {
                            kind = if a.voice {
                                MediaKind::Voice
                            } else {
                                MediaKind::Audio
                            }
                        }
                        tl::enums::DocumentAttribute::Video(_) if kind == MediaKind::Document => {
                            kind = MediaKind::Video
                        }
                        tl::enums::DocumentAttribute::Filename(f) => {
                            file_name = Some(f.file_name.clone())
                        }
                        _ => {}
                    }
                }
                Media {
                    kind,
                    mime_type: Some(doc.mime_type.clone()).filter(|m| !m.is_empty()),
                    size_bytes: u64::try_from(doc.size).ok(),
                    file_name: file_name.filter(|f| !f.is_empty()),
                }
            }
            _ => bare(MediaKind::Document),
        },
        M::Contact(_) => bare(MediaKind::Contact),
        M::Geo(_) | M::GeoLive(_) | M::Venue(_) => bare(MediaKind::Location),
        M::Poll(_) => bare(MediaKind::Poll),
        M::WebPage(_) => bare(MediaKind::WebPage),
        _ => bare(MediaKind::Other),
    })
}
