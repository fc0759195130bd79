//! The scripted Telegram world behind the fake DC: users, chats, messages and update sequences.
//!
//! Numbering follows Telegram's rules:
//! * private chats and basic groups share **one message-id counter and one pts per account**, so
//!   the same message has a different id for each participant;
//! * every channel (broadcast, supergroup, forum) has its **own message ids and pts**, shared by
//!   all members;
//! * every pts-carrying event is kept in a log so `updates.getDifference` and
//!   `updates.getChannelDifference` can replay what a client missed.
//!
//! Messages are stored viewer-neutral and rendered per viewing account (`out`, `is_self`, ids).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use grammers_tl_types as tl;

/// Identifies a chat in the fake world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatId {
    /// The private chat between two users (order does not matter).
    Private(i64, i64),
    /// A basic group (`chat`).
    Group(i64),
    /// A channel: broadcast, supergroup or forum supergroup.
    Channel(i64),
}

/// What kind of channel to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// A broadcast channel: posts have no sender.
    Broadcast,
    /// A supergroup (`megagroup`).
    Supergroup,
    /// A supergroup with forum topics enabled.
    Forum,
}

/// Handle to a message sent through [`World::send_message`]: its id as each account sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// The chat it was sent to.
    pub chat: ChatId,
    /// Message id per account that can see it (the same id for every member of a channel).
    pub ids: BTreeMap<i64, i32>,
}

impl SentMessage {
    /// The id this message has for `account`, if that account can see it.
    pub fn id_for(&self, account: i64) -> Option<i32> {
        self.ids.get(&account).copied()
    }
}

/// Extra options for [`World::send_message`].
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Reply to this message id (as the *sender* sees it for private/basic groups; channel ids
    /// are shared).
    pub reply_to: Option<i32>,
    /// Forum topic id (only for forum supergroups; 1 or `None` is General).
    pub topic: Option<i32>,
    /// Push a full `updates` (with users and chats) even where Telegram would use the short form.
    pub force_full: bool,
    /// Record the message (pts advances) but push nothing: a lost update the client can only
    /// recover through `getDifference` once it notices the gap.
    pub skip_push: bool,
}

/// Limits that decide between a full, sliced and too-long difference.
#[derive(Clone, Debug)]
pub struct WorldLimits {
    /// At most this many events per `updates.differenceSlice`.
    pub difference_slice: usize,
    /// A common-box gap larger than this gives `updates.differenceTooLong`.
    pub difference_too_long: i32,
    /// A channel gap larger than this gives `updates.channelDifferenceTooLong`.
    pub channel_difference_too_long: i32,
}

impl Default for WorldLimits {
    fn default() -> Self {
        Self {
            difference_slice: 100,
            difference_too_long: 10_000,
            channel_difference_too_long: 1_000,
        }
    }
}

/// A reason a request about the world failed, sent to the client as `rpc_error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFailure {
    /// HTTP-like code (400, 401, 420…).
    pub code: i32,
    /// Telegram's error name, e.g. `CHANNEL_PRIVATE`.
    pub message: String,
}

impl RpcFailure {
    /// Builds a failure.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Seconds since the Unix epoch, as Telegram dates are.
pub fn now() -> i32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i32)
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
struct UserRec {
    id: i64,
    access_hash: i64,
    first_name: String,
    username: Option<String>,
    /// Digits only, as Telegram's `user.phone` carries it; accounts have one, plain users none.
    phone: Option<String>,
}

/// Viewer-neutral message data.
#[derive(Clone, Debug)]
struct MsgData {
    id: i32,
    chat: ChatId,
    sender: Option<i64>,
    date: i32,
    text: String,
    edit_date: Option<i32>,
    reply_to: Option<i32>,
    topic: Option<i32>,
    topic_created: Option<String>,
}

#[derive(Clone, Debug)]
enum EventKind {
    New(i32),
    Edit(i32),
    Delete(Vec<i32>),
}

#[derive(Clone, Debug)]
struct Event {
    date: i32,
    pts: i32,
    pts_count: i32,
    kind: EventKind,
}

#[derive(Debug)]
struct Account {
    pts: i32,
    qts: i32,
    seq: i32,
    next_msg_id: i32,
    log: Vec<Event>,
    messages: BTreeMap<i32, MsgData>,
}

#[derive(Debug)]
struct Group {
    title: String,
    members: BTreeSet<i64>,
    date: i32,
}

#[derive(Debug)]
struct Channel {
    access_hash: i64,
    title: String,
    kind: ChannelKind,
    members: BTreeSet<i64>,
    date: i32,
    pts: i32,
    next_msg_id: i32,
    log: Vec<Event>,
    messages: BTreeMap<i32, MsgData>,
}

/// A pushed update for one account, ready to serialize.
#[derive(Clone, Debug)]
pub struct Push {
    /// The account that receives it.
    pub account: i64,
    /// The `Updates` object as Telegram would push it.
    pub updates: tl::enums::Updates,
}

/// All state of the fake Telegram.
#[derive(Debug)]
pub struct World {
    limits: WorldLimits,
    users: BTreeMap<i64, UserRec>,
    accounts: BTreeMap<i64, Account>,
    groups: BTreeMap<i64, Group>,
    channels: BTreeMap<i64, Channel>,
    next_user_id: i64,
    next_chat_id: i64,
    next_channel_id: i64,
}

fn access_hash_for(id: i64, salt: i64) -> i64 {
    // Deterministic, non-zero, and different per peer kind.
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) ^ salt) | 1
}

fn notify_settings() -> tl::enums::PeerNotifySettings {
    tl::types::PeerNotifySettings {
        show_previews: None,
        silent: None,
        mute_until: None,
        ios_sound: None,
        android_sound: None,
        other_sound: None,
        stories_muted: None,
        stories_hide_sender: None,
        stories_ios_sound: None,
        stories_android_sound: None,
        stories_other_sound: None,
    }
    .into()
}

fn user_peer(id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id: id }.into()
}

fn chat_peer(id: i64) -> tl::enums::Peer {
    tl::types::PeerChat { chat_id: id }.into()
}

fn channel_peer(id: i64) -> tl::enums::Peer {
    tl::types::PeerChannel { channel_id: id }.into()
}

/// A `message` with every layer-230 field listed once, so the rest of the module stays short.
#[allow(clippy::too_many_arguments)]
fn plain_message(
    id: i32,
    out: bool,
    post: bool,
    from_id: Option<tl::enums::Peer>,
    peer_id: tl::enums::Peer,
    reply_to: Option<tl::enums::MessageReplyHeader>,
    date: i32,
    text: String,
    edit_date: Option<i32>,
) -> tl::enums::Message {
    tl::types::Message {
        out,
        mentioned: false,
        media_unread: false,
        silent: false,
        post,
        from_scheduled: false,
        legacy: false,
        edit_hide: false,
        pinned: false,
        noforwards: false,
        invert_media: false,
        video_processing_pending: false,
        paid_suggested_post_stars: false,
        reactions: None,
        id,
        from_id,
        from_rank: None,
        from_boosts_applied: None,
        peer_id,
        saved_peer_id: None,
        fwd_from: None,
        via_bot_id: None,
        reply_to,
        date,
        message: text,
        media: None,
        reply_markup: None,
        entities: None,
        views: if post { Some(1) } else { None },
        forwards: if post { Some(0) } else { None },
        replies: None,
        edit_date,
        post_author: None,
        grouped_id: None,
        restriction_reason: None,
        ttl_period: None,
        quick_reply_shortcut_id: None,
        offline: false,
        via_business_bot_id: None,
        guestchat_via_from: None,
        effect: None,
        factcheck: None,
        report_delivery_until_date: None,
        paid_message_stars: None,
        paid_suggested_post_ton: false,
        suggested_post: None,
        schedule_repeat_period: None,
        summary_from_language: None,
        rich_message: None,
    }
    .into()
}

fn reply_header(
    reply_to: Option<i32>,
    topic: Option<i32>,
) -> Option<tl::enums::MessageReplyHeader> {
    let topic = topic.filter(|&t| t != 1);
    if reply_to.is_none() && topic.is_none() {
        return None;
    }
    // In a forum, a message in topic T without a reply points at T; a reply inside T points at
    // the replied message and carries T as `reply_to_top_id`.
    let (msg_id, top_id) = match (reply_to, topic) {
        (Some(r), Some(t)) if r != t => (Some(r), Some(t)),
        (Some(r), _) => (Some(r), None),
        (None, Some(t)) => (Some(t), None),
        (None, None) => (None, None),
    };
    Some(
        tl::types::MessageReplyHeader {
            reply_to_scheduled: false,
            forum_topic: topic.is_some(),
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
        .into(),
    )
}

impl World {
    /// An empty world with the given difference limits.
    pub fn new(limits: WorldLimits) -> Self {
        Self {
            limits,
            users: BTreeMap::new(),
            accounts: BTreeMap::new(),
            groups: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_user_id: 1_000_001,
            next_chat_id: 5_000_001,
            next_channel_id: 1_700_000_001,
        }
    }

    /// Adds a user without an account (someone the accounts can talk to).
    pub fn add_user(&mut self, first_name: &str) -> i64 {
        let id = self.next_user_id;
        self.next_user_id += 1;
        self.users.insert(
            id,
            UserRec {
                id,
                access_hash: access_hash_for(id, 0x5555),
                first_name: first_name.to_owned(),
                username: Some(format!("{}_{id}", first_name.to_lowercase())),
                phone: None,
            },
        );
        id
    }

    /// Adds a user that is also a logged-in account (it gets its own pts and message ids).
    pub fn add_account(&mut self, first_name: &str) -> i64 {
        let id = self.add_user(first_name);
        self.accounts.insert(
            id,
            Account {
                pts: 1,
                qts: 0,
                seq: 0,
                next_msg_id: 1,
                log: Vec::new(),
                messages: BTreeMap::new(),
            },
        );
        id
    }

    /// Gives user `id` a phone number (digits only), shown in the `user` objects clients get.
    pub fn set_phone(&mut self, id: i64, phone: &str) {
        if let Some(user) = self.users.get_mut(&id) {
            user.phone = Some(phone.to_owned());
        }
    }

    /// Whether `id` is an account (as opposed to a plain user).
    pub fn is_account(&self, id: i64) -> bool {
        self.accounts.contains_key(&id)
    }

    /// The access hash the fake hands out for a user.
    pub fn user_access_hash(&self, id: i64) -> Option<i64> {
        self.users.get(&id).map(|u| u.access_hash)
    }

    /// The access hash the fake hands out for a channel.
    pub fn channel_access_hash(&self, id: i64) -> Option<i64> {
        self.channels.get(&id).map(|c| c.access_hash)
    }

    /// Creates a basic group with the given members.
    pub fn create_group(&mut self, title: &str, members: &[i64]) -> ChatId {
        let id = self.next_chat_id;
        self.next_chat_id += 1;
        self.groups.insert(
            id,
            Group {
                title: title.to_owned(),
                members: members.iter().copied().collect(),
                date: now(),
            },
        );
        ChatId::Group(id)
    }

    /// Creates a channel of the given kind with the given members.
    pub fn create_channel(&mut self, title: &str, kind: ChannelKind, members: &[i64]) -> ChatId {
        let id = self.next_channel_id;
        self.next_channel_id += 1;
        self.channels.insert(
            id,
            Channel {
                access_hash: access_hash_for(id, 0x3333),
                title: title.to_owned(),
                kind,
                members: members.iter().copied().collect(),
                date: now(),
                pts: 1,
                // In a forum, id 1 is the General topic (Telegram's channel-creation service
                // message, which the fake does not store), so real topics start at 2.
                next_msg_id: if kind == ChannelKind::Forum { 2 } else { 1 },
                log: Vec::new(),
                messages: BTreeMap::new(),
            },
        );
        ChatId::Channel(id)
    }

    /// The current `(pts, qts, date, seq)` of an account, as `updates.getState` reports it.
    pub fn state(&self, account: i64) -> Option<tl::types::updates::State> {
        self.accounts
            .get(&account)
            .map(|a| tl::types::updates::State {
                pts: a.pts,
                qts: a.qts,
                date: now(),
                seq: a.seq,
                unread_count: 0,
            })
    }

    /// The current pts of a channel.
    pub fn channel_pts(&self, channel: i64) -> Option<i32> {
        self.channels.get(&channel).map(|c| c.pts)
    }

    /// Advances an account's pts by `n` without any event, so the next update shows a gap.
    pub fn skip_pts(&mut self, account: i64, n: i32) {
        if let Some(a) = self.accounts.get_mut(&account) {
            a.pts += n;
        }
    }

    /// Advances a channel's pts by `n` without any event.
    pub fn skip_channel_pts(&mut self, channel: i64, n: i32) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.pts += n;
        }
    }

    fn members(&self, chat: ChatId) -> Vec<i64> {
        match chat {
            ChatId::Private(a, b) => {
                if a == b {
                    vec![a]
                } else {
                    vec![a, b]
                }
            }
            ChatId::Group(id) => self
                .groups
                .get(&id)
                .map(|g| g.members.iter().copied().collect())
                .unwrap_or_default(),
            ChatId::Channel(id) => self
                .channels
                .get(&id)
                .map(|c| c.members.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Creates a forum topic (a `messageActionTopicCreate` service message whose id is the topic
    /// id) and returns the pushes plus the topic id.
    pub fn create_topic(
        &mut self,
        channel: i64,
        from: i64,
        title: &str,
    ) -> Option<(i32, Vec<Push>)> {
        let sent = self.insert_message(
            ChatId::Channel(channel),
            Some(from),
            String::new(),
            &SendOptions::default(),
            Some(title.to_owned()),
        )?;
        let id = sent.0.ids.values().next().copied()?;
        Some((id, sent.1))
    }

    /// Sends a text message and returns its ids plus the updates to push to online accounts.
    pub fn send_message(
        &mut self,
        chat: ChatId,
        from: i64,
        text: &str,
        options: &SendOptions,
    ) -> Option<(SentMessage, Vec<Push>)> {
        let sender = match chat {
            ChatId::Channel(id) if self.channels.get(&id)?.kind == ChannelKind::Broadcast => None,
            _ => Some(from),
        };
        self.insert_message(chat, sender, text.to_owned(), options, None)
    }

    fn insert_message(
        &mut self,
        chat: ChatId,
        sender: Option<i64>,
        text: String,
        options: &SendOptions,
        topic_created: Option<String>,
    ) -> Option<(SentMessage, Vec<Push>)> {
        let date = now();
        let mut ids = BTreeMap::new();
        let mut pushes = Vec::new();
        match chat {
            ChatId::Channel(cid) => {
                let members = self.members(chat);
                let ch = self.channels.get_mut(&cid)?;
                let id = ch.next_msg_id;
                ch.next_msg_id += 1;
                ch.pts += 1;
                let pts = ch.pts;
                let topic = if ch.kind == ChannelKind::Forum {
                    options.topic
                } else {
                    None
                };
                ch.messages.insert(
                    id,
                    MsgData {
                        id,
                        chat,
                        sender,
                        date,
                        text,
                        edit_date: None,
                        reply_to: options.reply_to,
                        topic,
                        topic_created,
                    },
                );
                ch.log.push(Event {
                    date,
                    pts,
                    pts_count: 1,
                    kind: EventKind::New(id),
                });
                let accounts: Vec<i64> = members
                    .into_iter()
                    .filter(|m| self.accounts.contains_key(m))
                    .collect();
                for m in accounts {
                    ids.insert(m, id);
                    let message = self.render_channel_message(cid, id, m)?;
                    pushes.push(Push {
                        account: m,
                        updates: self.full_updates(
                            m,
                            vec![
                                tl::types::UpdateNewChannelMessage {
                                    message,
                                    pts,
                                    pts_count: 1,
                                }
                                .into(),
                            ],
                            false,
                        ),
                    });
                }
            }
            ChatId::Private(..) | ChatId::Group(_) => {
                let from = sender?;
                let members = self.members(chat);
                if members.is_empty() {
                    return None;
                }
                let short = !options.force_full && options.reply_to.is_none();
                for m in members {
                    let Some(acc) = self.accounts.get_mut(&m) else {
                        continue;
                    };
                    let id = acc.next_msg_id;
                    acc.next_msg_id += 1;
                    acc.pts += 1;
                    let pts = acc.pts;
                    acc.messages.insert(
                        id,
                        MsgData {
                            id,
                            chat,
                            sender: Some(from),
                            date,
                            text: text.clone(),
                            edit_date: None,
                            reply_to: options.reply_to,
                            topic: None,
                            topic_created: None,
                        },
                    );
                    acc.log.push(Event {
                        date,
                        pts,
                        pts_count: 1,
                        kind: EventKind::New(id),
                    });
                    ids.insert(m, id);
                    let out = m == from;
                    let updates = if short {
                        match chat {
                            ChatId::Private(a, b) => {
                                let other = if out {
                                    if a == from { b } else { a }
                                } else {
                                    from
                                };
                                tl::types::UpdateShortMessage {
                                    out,
                                    mentioned: false,
                                    media_unread: false,
                                    silent: false,
                                    id,
                                    user_id: other,
                                    message: text.clone(),
                                    pts,
                                    pts_count: 1,
                                    date,
                                    fwd_from: None,
                                    via_bot_id: None,
                                    reply_to: None,
                                    entities: None,
                                    ttl_period: None,
                                }
                                .into()
                            }
                            ChatId::Group(gid) => tl::types::UpdateShortChatMessage {
                                out,
                                mentioned: false,
                                media_unread: false,
                                silent: false,
                                id,
                                from_id: from,
                                chat_id: gid,
                                message: text.clone(),
                                pts,
                                pts_count: 1,
                                date,
                                fwd_from: None,
                                via_bot_id: None,
                                reply_to: None,
                                entities: None,
                                ttl_period: None,
                            }
                            .into(),
                            ChatId::Channel(_) => return None,
                        }
                    } else {
                        let message = self.render_common_message(m, id)?;
                        self.full_updates(
                            m,
                            vec![
                                tl::types::UpdateNewMessage {
                                    message,
                                    pts,
                                    pts_count: 1,
                                }
                                .into(),
                            ],
                            true,
                        )
                    };
                    pushes.push(Push {
                        account: m,
                        updates,
                    });
                }
            }
        }
        Some((SentMessage { chat, ids }, pushes))
    }

    /// Edits a message for everyone who can see it.
    pub fn edit_message(&mut self, msg: &SentMessage, text: &str) -> Vec<Push> {
        let date = now();
        let mut pushes = Vec::new();
        match msg.chat {
            ChatId::Channel(cid) => {
                let Some(&id) = msg.ids.values().next() else {
                    return pushes;
                };
                let Some(ch) = self.channels.get_mut(&cid) else {
                    return pushes;
                };
                let Some(m) = ch.messages.get_mut(&id) else {
                    return pushes;
                };
                m.text = text.to_owned();
                m.edit_date = Some(date);
                ch.pts += 1;
                let pts = ch.pts;
                ch.log.push(Event {
                    date,
                    pts,
                    pts_count: 1,
                    kind: EventKind::Edit(id),
                });
                for acc in self.members(msg.chat) {
                    if !self.accounts.contains_key(&acc) {
                        continue;
                    }
                    if let Some(message) = self.render_channel_message(cid, id, acc) {
                        pushes.push(Push {
                            account: acc,
                            updates: self.full_updates(
                                acc,
                                vec![
                                    tl::types::UpdateEditChannelMessage {
                                        message,
                                        pts,
                                        pts_count: 1,
                                    }
                                    .into(),
                                ],
                                false,
                            ),
                        });
                    }
                }
            }
            _ => {
                for (&acc_id, &id) in &msg.ids {
                    let Some(acc) = self.accounts.get_mut(&acc_id) else {
                        continue;
                    };
                    let Some(m) = acc.messages.get_mut(&id) else {
                        continue;
                    };
                    m.text = text.to_owned();
                    m.edit_date = Some(date);
                    acc.pts += 1;
                    let pts = acc.pts;
                    acc.log.push(Event {
                        date,
                        pts,
                        pts_count: 1,
                        kind: EventKind::Edit(id),
                    });
                    if let Some(message) = self.render_common_message(acc_id, id) {
                        pushes.push(Push {
                            account: acc_id,
                            updates: self.full_updates(
                                acc_id,
                                vec![
                                    tl::types::UpdateEditMessage {
                                        message,
                                        pts,
                                        pts_count: 1,
                                    }
                                    .into(),
                                ],
                                true,
                            ),
                        });
                    }
                }
            }
        }
        pushes
    }

    /// Deletes messages (all from the same chat) for everyone.
    pub fn delete_messages(&mut self, msgs: &[SentMessage]) -> Vec<Push> {
        let date = now();
        let mut pushes = Vec::new();
        let Some(first) = msgs.first() else {
            return pushes;
        };
        match first.chat {
            ChatId::Channel(cid) => {
                let members = self.members(first.chat);
                let Some(ch) = self.channels.get_mut(&cid) else {
                    return pushes;
                };
                let ids: Vec<i32> = msgs
                    .iter()
                    .filter(|m| m.chat == first.chat)
                    .filter_map(|m| m.ids.values().next().copied())
                    .filter(|id| ch.messages.remove(id).is_some())
                    .collect();
                if ids.is_empty() {
                    return pushes;
                }
                ch.pts += ids.len() as i32;
                let pts = ch.pts;
                ch.log.push(Event {
                    date,
                    pts,
                    pts_count: ids.len() as i32,
                    kind: EventKind::Delete(ids.clone()),
                });
                let accounts: Vec<i64> = members
                    .into_iter()
                    .filter(|m| self.accounts.contains_key(m))
                    .collect();
                for acc in accounts {
                    pushes.push(Push {
                        account: acc,
                        updates: self.full_updates(
                            acc,
                            vec![
                                tl::types::UpdateDeleteChannelMessages {
                                    channel_id: cid,
                                    messages: ids.clone(),
                                    pts,
                                    pts_count: ids.len() as i32,
                                }
                                .into(),
                            ],
                            false,
                        ),
                    });
                }
            }
            _ => {
                let mut per_account: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
                for m in msgs {
                    for (&acc, &id) in &m.ids {
                        per_account.entry(acc).or_default().push(id);
                    }
                }
                for (acc_id, ids) in per_account {
                    let Some(acc) = self.accounts.get_mut(&acc_id) else {
                        continue;
                    };
                    let ids: Vec<i32> = ids
                        .into_iter()
                        .filter(|id| acc.messages.remove(id).is_some())
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    acc.pts += ids.len() as i32;
                    let pts = acc.pts;
                    acc.log.push(Event {
                        date,
                        pts,
                        pts_count: ids.len() as i32,
                        kind: EventKind::Delete(ids.clone()),
                    });
                    pushes.push(Push {
                        account: acc_id,
                        updates: tl::types::UpdateShort {
                            update: tl::types::UpdateDeleteMessages {
                                messages: ids.clone(),
                                pts,
                                pts_count: ids.len() as i32,
                            }
                            .into(),
                            date,
                        }
                        .into(),
                    });
                }
            }
        }
        pushes
    }

    /// `updates` with the users and chats the contained messages mention. Common-box updates
    /// bump the account's `seq` like Telegram does; channel updates carry `seq = 0`.
    fn full_updates(
        &mut self,
        account: i64,
        updates: Vec<tl::enums::Update>,
        bump_seq: bool,
    ) -> tl::enums::Updates {
        let mut users = BTreeSet::new();
        let mut chats = BTreeSet::new();
        for u in &updates {
            let msg = match u {
                tl::enums::Update::NewMessage(u) => Some(&u.message),
                tl::enums::Update::EditMessage(u) => Some(&u.message),
                tl::enums::Update::NewChannelMessage(u) => Some(&u.message),
                tl::enums::Update::EditChannelMessage(u) => Some(&u.message),
                tl::enums::Update::DeleteChannelMessages(u) => {
                    chats.insert(ChatId::Channel(u.channel_id));
                    None
                }
                _ => None,
            };
            if let Some(m) = msg {
                collect_peers(m, &mut users, &mut chats);
            }
        }
        users.insert(account);
        let seq = if bump_seq {
            match self.accounts.get_mut(&account) {
                Some(a) => {
                    a.seq += 1;
                    a.seq
                }
                None => 0,
            }
        } else {
            0
        };
        tl::types::Updates {
            updates,
            users: self.render_users(account, &users),
            chats: self.render_chats(&chats),
            date: now(),
            seq,
        }
        .into()
    }

    fn render_common_message(&self, viewer: i64, id: i32) -> Option<tl::enums::Message> {
        let m = self.accounts.get(&viewer)?.messages.get(&id)?;
        let from = m.sender?;
        let out = from == viewer;
        let reply_to = reply_header(m.reply_to, None);
        Some(match m.chat {
            ChatId::Private(a, b) => {
                let other = if out {
                    if a == viewer { b } else { a }
                } else {
                    from
                };
                plain_message(
                    id,
                    out,
                    false,
                    None,
                    user_peer(other),
                    reply_to,
                    m.date,
                    m.text.clone(),
                    m.edit_date,
                )
            }
            ChatId::Group(gid) => plain_message(
                id,
                out,
                false,
                Some(user_peer(from)),
                chat_peer(gid),
                reply_to,
                m.date,
                m.text.clone(),
                m.edit_date,
            ),
            ChatId::Channel(_) => return None,
        })
    }

    fn render_channel_message(&self, cid: i64, id: i32, viewer: i64) -> Option<tl::enums::Message> {
        let ch = self.channels.get(&cid)?;
        let m = ch.messages.get(&id)?;
        let post = ch.kind == ChannelKind::Broadcast;
        let out = m.sender == Some(viewer);
        if let Some(title) = &m.topic_created {
            return Some(
                tl::types::MessageService {
                    out,
                    mentioned: false,
                    media_unread: false,
                    reactions_are_possible: false,
                    silent: false,
                    post: false,
                    legacy: false,
                    id,
                    from_id: m.sender.map(user_peer),
                    peer_id: channel_peer(cid),
                    saved_peer_id: None,
                    reply_to: None,
                    date: m.date,
                    action: tl::types::MessageActionTopicCreate {
                        title_missing: false,
                        title: title.clone(),
                        icon_color: 0x6FB9F0,
                        icon_emoji_id: None,
                    }
                    .into(),
                    reactions: None,
                    ttl_period: None,
                }
                .into(),
            );
        }
        Some(plain_message(
            id,
            out,
            post,
            if post { None } else { m.sender.map(user_peer) },
            channel_peer(cid),
            reply_header(m.reply_to, m.topic),
            m.date,
            m.text.clone(),
            m.edit_date,
        ))
    }

    fn render_users(&self, viewer: i64, ids: &BTreeSet<i64>) -> Vec<tl::enums::User> {
        ids.iter()
            .filter_map(|id| self.users.get(id))
            .map(|u| {
                tl::types::User {
                    is_self: u.id == viewer,
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
                    id: u.id,
                    access_hash: Some(u.access_hash),
                    first_name: Some(u.first_name.clone()),
                    last_name: None,
                    username: u.username.clone(),
                    phone: u.phone.clone(),
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
            })
            .collect()
    }

    fn render_chats(&self, ids: &BTreeSet<ChatId>) -> Vec<tl::enums::Chat> {
        ids.iter()
            .filter_map(|chat| match *chat {
                ChatId::Group(id) => self.groups.get(&id).map(|g| {
                    tl::types::Chat {
                        creator: false,
                        left: false,
                        deactivated: false,
                        call_active: false,
                        call_not_empty: false,
                        noforwards: false,
                        id,
                        title: g.title.clone(),
                        photo: tl::enums::ChatPhoto::Empty,
                        participants_count: g.members.len() as i32,
                        date: g.date,
                        version: 1,
                        migrated_to: None,
                        admin_rights: None,
                        default_banned_rights: None,
                    }
                    .into()
                }),
                ChatId::Channel(id) => self.channels.get(&id).map(|c| {
                    tl::types::Channel {
                        creator: false,
                        left: false,
                        broadcast: c.kind == ChannelKind::Broadcast,
                        verified: false,
                        megagroup: c.kind != ChannelKind::Broadcast,
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
                        forum: c.kind == ChannelKind::Forum,
                        stories_hidden: false,
                        stories_hidden_min: false,
                        stories_unavailable: false,
                        signature_profiles: false,
                        autotranslation: false,
                        broadcast_messages_allowed: false,
                        monoforum: false,
                        forum_tabs: false,
                        id,
                        access_hash: Some(c.access_hash),
                        title: c.title.clone(),
                        username: None,
                        photo: tl::enums::ChatPhoto::Empty,
                        date: c.date,
                        restriction_reason: None,
                        admin_rights: None,
                        banned_rights: None,
                        default_banned_rights: None,
                        participants_count: Some(c.members.len() as i32),
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
                }),
                ChatId::Private(..) => None,
            })
            .collect()
    }

    fn peers_of(
        &self,
        viewer: i64,
        messages: &[tl::enums::Message],
        extra_chats: impl IntoIterator<Item = ChatId>,
    ) -> (Vec<tl::enums::User>, Vec<tl::enums::Chat>) {
        let mut users = BTreeSet::new();
        let mut chats: BTreeSet<ChatId> = extra_chats.into_iter().collect();
        for m in messages {
            collect_peers(m, &mut users, &mut chats);
        }
        users.insert(viewer);
        (self.render_users(viewer, &users), self.render_chats(&chats))
    }

    // ---- requests -------------------------------------------------------------------------

    /// `users.getUsers`: `inputUserSelf` and `inputUser` (unknown ids are skipped).
    pub fn get_users(&self, viewer: i64, ids: &[tl::enums::InputUser]) -> Vec<tl::enums::User> {
        let set: BTreeSet<i64> = ids
            .iter()
            .filter_map(|u| match u {
                tl::enums::InputUser::UserSelf => Some(viewer),
                tl::enums::InputUser::User(u) => Some(u.user_id),
                tl::enums::InputUser::FromMessage(u) => Some(u.user_id),
                tl::enums::InputUser::Empty => None,
            })
            .collect();
        self.render_users(viewer, &set)
    }

    /// `messages.getChats` / `channels.getChannels`.
    pub fn get_chats(&self, ids: impl IntoIterator<Item = ChatId>) -> Vec<tl::enums::Chat> {
        self.render_chats(&ids.into_iter().collect())
    }

    /// `updates.getDifference` for an account's common box.
    pub fn get_difference(
        &self,
        viewer: i64,
        req: &tl::functions::updates::GetDifference,
    ) -> Result<tl::enums::updates::Difference, RpcFailure> {
        let acc = self
            .accounts
            .get(&viewer)
            .ok_or_else(|| RpcFailure::new(401, "AUTH_KEY_UNREGISTERED"))?;
        let date = now();
        if req.pts >= acc.pts {
            return Ok(tl::types::updates::DifferenceEmpty { date, seq: acc.seq }.into());
        }
        let gap = acc.pts - req.pts;
        let too_long =
            gap > self.limits.difference_too_long || req.pts_total_limit.is_some_and(|l| gap > l);
        if too_long {
            return Ok(tl::types::updates::DifferenceTooLong { pts: acc.pts }.into());
        }
        let pending: Vec<&Event> = acc.log.iter().filter(|e| e.pts > req.pts).collect();
        let slice = pending.len() > self.limits.difference_slice;
        let taken = if slice {
            &pending[..self.limits.difference_slice]
        } else {
            &pending[..]
        };
        let mut new_messages = Vec::new();
        let mut other_updates = Vec::new();
        for e in taken {
            match &e.kind {
                EventKind::New(id) => {
                    if let Some(m) = self.render_common_message(viewer, *id) {
                        new_messages.push(m);
                    }
                }
                EventKind::Edit(id) => {
                    if let Some(m) = self.render_common_message(viewer, *id) {
                        other_updates.push(
                            tl::types::UpdateEditMessage {
                                message: m,
                                pts: e.pts,
                                pts_count: e.pts_count,
                            }
                            .into(),
                        );
                    }
                }
                EventKind::Delete(ids) => other_updates.push(
                    tl::types::UpdateDeleteMessages {
                        messages: ids.clone(),
                        pts: e.pts,
                        pts_count: e.pts_count,
                    }
                    .into(),
                ),
            }
        }
        let mut referenced = new_messages.clone();
        for u in &other_updates {
            if let tl::enums::Update::EditMessage(u) = u {
                referenced.push(u.message.clone());
            }
        }
        // Like Telegram, hint at channels with activity since the client's last known date:
        // grammers then fetches their difference if it tracks them (it ignores the hint for
        // channels without a stored pts).
        let hinted: Vec<i64> = if slice {
            Vec::new()
        } else {
            self.channels
                .iter()
                .filter(|(_, c)| c.members.contains(&viewer))
                .filter(|(_, c)| c.log.last().is_some_and(|e| e.date >= req.date))
                .map(|(&id, _)| id)
                .collect()
        };
        for &channel_id in &hinted {
            other_updates.push(
                tl::types::UpdateChannelTooLong {
                    channel_id,
                    pts: None,
                }
                .into(),
            );
        }
        let (users, chats) = self.peers_of(
            viewer,
            &referenced,
            hinted.iter().map(|&id| ChatId::Channel(id)),
        );
        let state_pts = if slice {
            taken.last().map(|e| e.pts).unwrap_or(acc.pts)
        } else {
            acc.pts
        };
        let state = tl::types::updates::State {
            pts: state_pts,
            qts: acc.qts,
            date,
            seq: acc.seq,
            unread_count: 0,
        }
        .into();
        Ok(if slice {
            tl::types::updates::DifferenceSlice {
                new_messages,
                new_encrypted_messages: Vec::new(),
                other_updates,
                chats,
                users,
                intermediate_state: state,
            }
            .into()
        } else {
            tl::types::updates::Difference {
                new_messages,
                new_encrypted_messages: Vec::new(),
                other_updates,
                chats,
                users,
                state,
            }
            .into()
        })
    }

    fn member_channel(
        &self,
        viewer: i64,
        channel: &tl::enums::InputChannel,
    ) -> Result<(i64, &Channel), RpcFailure> {
        let (id, hash) = match channel {
            tl::enums::InputChannel::Channel(c) => (c.channel_id, Some(c.access_hash)),
            tl::enums::InputChannel::FromMessage(c) => (c.channel_id, None),
            tl::enums::InputChannel::Empty => {
                return Err(RpcFailure::new(400, "CHANNEL_INVALID"));
            }
        };
        let ch = self
            .channels
            .get(&id)
            .ok_or_else(|| RpcFailure::new(400, "CHANNEL_INVALID"))?;
        if hash.is_some_and(|h| h != ch.access_hash) {
            return Err(RpcFailure::new(400, "CHANNEL_INVALID"));
        }
        if !ch.members.contains(&viewer) {
            return Err(RpcFailure::new(406, "CHANNEL_PRIVATE"));
        }
        Ok((id, ch))
    }

    fn channel_dialog(&self, cid: i64, ch: &Channel) -> tl::enums::Dialog {
        tl::types::Dialog {
            pinned: false,
            unread_mark: false,
            view_forum_as_messages: false,
            peer: channel_peer(cid),
            top_message: ch.messages.keys().next_back().copied().unwrap_or(0),
            read_inbox_max_id: 0,
            read_outbox_max_id: 0,
            unread_count: 0,
            unread_mentions_count: 0,
            unread_reactions_count: 0,
            unread_poll_votes_count: 0,
            notify_settings: notify_settings(),
            pts: Some(ch.pts),
            draft: None,
            folder_id: None,
            ttl_period: None,
        }
        .into()
    }

    /// `updates.getChannelDifference`.
    pub fn get_channel_difference(
        &self,
        viewer: i64,
        req: &tl::functions::updates::GetChannelDifference,
    ) -> Result<tl::enums::updates::ChannelDifference, RpcFailure> {
        let (cid, ch) = self.member_channel(viewer, &req.channel)?;
        if req.pts >= ch.pts {
            return Ok(tl::types::updates::ChannelDifferenceEmpty {
                r#final: true,
                pts: ch.pts,
                timeout: Some(30),
            }
            .into());
        }
        if ch.pts - req.pts > self.limits.channel_difference_too_long {
            let limit = req.limit.max(1) as usize;
            let messages: Vec<tl::enums::Message> = ch
                .messages
                .keys()
                .rev()
                .take(limit)
                .filter_map(|&id| self.render_channel_message(cid, id, viewer))
                .collect();
            let (users, chats) = self.peers_of(viewer, &messages, [ChatId::Channel(cid)]);
            return Ok(tl::types::updates::ChannelDifferenceTooLong {
                r#final: true,
                timeout: Some(30),
                dialog: self.channel_dialog(cid, ch),
                messages,
                chats,
                users,
            }
            .into());
        }
        let limit = if req.limit <= 0 {
            100
        } else {
            req.limit as usize
        };
        let pending: Vec<&Event> = ch.log.iter().filter(|e| e.pts > req.pts).collect();
        let last = pending.len() <= limit;
        let taken = &pending[..pending.len().min(limit)];
        let mut new_messages = Vec::new();
        let mut other_updates = Vec::new();
        for e in taken {
            match &e.kind {
                EventKind::New(id) => {
                    if let Some(m) = self.render_channel_message(cid, *id, viewer) {
                        new_messages.push(m);
                    }
                }
                EventKind::Edit(id) => {
                    if let Some(m) = self.render_channel_message(cid, *id, viewer) {
                        other_updates.push(
                            tl::types::UpdateEditChannelMessage {
                                message: m,
                                pts: e.pts,
                                pts_count: e.pts_count,
                            }
                            .into(),
                        );
                    }
                }
                EventKind::Delete(ids) => other_updates.push(
                    tl::types::UpdateDeleteChannelMessages {
                        channel_id: cid,
                        messages: ids.clone(),
                        pts: e.pts,
                        pts_count: e.pts_count,
                    }
                    .into(),
                ),
            }
        }
        let mut referenced = new_messages.clone();
        for u in &other_updates {
            if let tl::enums::Update::EditChannelMessage(u) = u {
                referenced.push(u.message.clone());
            }
        }
        let (users, chats) = self.peers_of(viewer, &referenced, [ChatId::Channel(cid)]);
        let pts = if last {
            ch.pts
        } else {
            taken.last().map(|e| e.pts).unwrap_or(ch.pts)
        };
        Ok(tl::types::updates::ChannelDifference {
            r#final: last,
            pts,
            timeout: Some(30),
            new_messages,
            other_updates,
            chats,
            users,
        }
        .into())
    }

    fn resolve_peer(&self, viewer: i64, peer: &tl::enums::InputPeer) -> Result<ChatId, RpcFailure> {
        match peer {
            tl::enums::InputPeer::PeerSelf => Ok(ChatId::Private(viewer, viewer)),
            tl::enums::InputPeer::User(u) => {
                if !self.users.contains_key(&u.user_id) {
                    return Err(RpcFailure::new(400, "PEER_ID_INVALID"));
                }
                Ok(ChatId::Private(viewer, u.user_id))
            }
            tl::enums::InputPeer::UserFromMessage(u) => Ok(ChatId::Private(viewer, u.user_id)),
            tl::enums::InputPeer::Chat(c) => {
                let g = self
                    .groups
                    .get(&c.chat_id)
                    .ok_or_else(|| RpcFailure::new(400, "CHAT_ID_INVALID"))?;
                if !g.members.contains(&viewer) {
                    return Err(RpcFailure::new(400, "CHAT_ID_INVALID"));
                }
                Ok(ChatId::Group(c.chat_id))
            }
            tl::enums::InputPeer::Channel(c) => {
                let ch = tl::enums::InputChannel::Channel(tl::types::InputChannel {
                    channel_id: c.channel_id,
                    access_hash: c.access_hash,
                });
                self.member_channel(viewer, &ch)
                    .map(|(id, _)| ChatId::Channel(id))
            }
            tl::enums::InputPeer::ChannelFromMessage(c) => Ok(ChatId::Channel(c.channel_id)),
            tl::enums::InputPeer::Empty => Err(RpcFailure::new(400, "PEER_ID_INVALID")),
        }
    }

    /// Message ids (descending) and dates of a chat as `viewer` sees it.
    fn history_ids(&self, viewer: i64, chat: ChatId) -> Vec<(i32, i32)> {
        match chat {
            ChatId::Channel(cid) => self
                .channels
                .get(&cid)
                .map(|c| c.messages.values().rev().map(|m| (m.id, m.date)).collect())
                .unwrap_or_default(),
            _ => self
                .accounts
                .get(&viewer)
                .map(|a| {
                    a.messages
                        .values()
                        .rev()
                        .filter(|m| same_chat(m.chat, chat))
                        .map(|m| (m.id, m.date))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn render(&self, viewer: i64, chat: ChatId, id: i32) -> Option<tl::enums::Message> {
        match chat {
            ChatId::Channel(cid) => self.render_channel_message(cid, id, viewer),
            _ => self.render_common_message(viewer, id),
        }
    }

    /// `messages.getHistory` with Telegram's offset semantics: the page starts at the first
    /// message older than `offset_id` (or `offset_date`), shifted by `add_offset` (negative
    /// values move towards newer messages), holds up to `limit` messages, and keeps only ids
    /// strictly between `min_id` and `max_id` (each bound ignored when zero; the bounds filter
    /// the page, they do not move it).
    pub fn get_history(
        &self,
        viewer: i64,
        req: &tl::functions::messages::GetHistory,
    ) -> Result<tl::enums::messages::Messages, RpcFailure> {
        let chat = self.resolve_peer(viewer, &req.peer)?;
        let all = self.history_ids(viewer, chat);
        let start = if req.offset_id > 0 {
            all.iter()
                .position(|&(id, _)| id < req.offset_id)
                .unwrap_or(all.len())
        } else if req.offset_date > 0 {
            all.iter()
                .position(|&(_, d)| d < req.offset_date)
                .unwrap_or(all.len())
        } else {
            0
        } as i64;
        let limit = req.limit.clamp(0, 100) as i64;
        let from = (start + req.add_offset as i64).max(0);
        let to = (start + req.add_offset as i64 + limit).clamp(0, all.len() as i64);
        let page: Vec<i32> = if from < to {
            all[from as usize..to as usize]
                .iter()
                .map(|&(id, _)| id)
                .filter(|&id| req.min_id <= 0 || id > req.min_id)
                .filter(|&id| req.max_id <= 0 || id < req.max_id)
                .collect()
        } else {
            Vec::new()
        };
        let messages: Vec<tl::enums::Message> = page
            .iter()
            .filter_map(|&id| self.render(viewer, chat, id))
            .collect();
        let extra = match chat {
            ChatId::Private(..) => None,
            other => Some(other),
        };
        let (mut users, chats) = self.peers_of(viewer, &messages, extra);
        if let ChatId::Private(a, b) = chat {
            let other = if a == viewer { b } else { a };
            if !users.iter().any(|u| u_id(u) == other) {
                users.extend(self.render_users(viewer, &BTreeSet::from([other])));
            }
        }
        let count = all.len() as i32;
        Ok(match chat {
            ChatId::Channel(cid) => tl::types::messages::ChannelMessages {
                inexact: false,
                pts: self.channel_pts(cid).unwrap_or(0),
                count,
                offset_id_offset: None,
                messages,
                topics: Vec::new(),
                chats,
                users,
            }
            .into(),
            _ if messages.len() as i32 >= count => tl::types::messages::Messages {
                messages,
                topics: Vec::new(),
                chats,
                users,
            }
            .into(),
            _ => tl::types::messages::MessagesSlice {
                inexact: false,
                count,
                next_rate: None,
                offset_id_offset: None,
                search_flood: None,
                messages,
                topics: Vec::new(),
                chats,
                users,
            }
            .into(),
        })
    }

    /// `messages.getDialogs`: every chat the account is in, newest top message first.
    pub fn get_dialogs(
        &self,
        viewer: i64,
        req: &tl::functions::messages::GetDialogs,
    ) -> Result<tl::enums::messages::Dialogs, RpcFailure> {
        let acc = self
            .accounts
            .get(&viewer)
            .ok_or_else(|| RpcFailure::new(401, "AUTH_KEY_UNREGISTERED"))?;
        // (date, top id, chat) per dialog
        let mut tops: BTreeMap<ChatId, (i32, i32)> = BTreeMap::new();
        for m in acc.messages.values() {
            let key = normalize(m.chat);
            let e = tops.entry(key).or_insert((0, 0));
            if m.id > e.1 {
                *e = (m.date, m.id);
            }
        }
        for (&gid, g) in &self.groups {
            if g.members.contains(&viewer) {
                tops.entry(ChatId::Group(gid)).or_insert((g.date, 0));
            }
        }
        for (&cid, c) in &self.channels {
            if c.members.contains(&viewer) {
                let top = c
                    .messages
                    .values()
                    .next_back()
                    .map(|m| (m.date, m.id))
                    .unwrap_or((c.date, 0));
                tops.insert(ChatId::Channel(cid), top);
            }
        }
        let mut list: Vec<(ChatId, i32, i32)> =
            tops.into_iter().map(|(c, (d, id))| (c, d, id)).collect();
        list.sort_by_key(|d| std::cmp::Reverse((d.1, d.2, d.0)));
        let total = list.len();
        let offset_chat = match &req.offset_peer {
            tl::enums::InputPeer::Empty => None,
            p => self.resolve_peer(viewer, p).ok().map(normalize),
        };
        let start = match offset_chat.and_then(|c| list.iter().position(|d| d.0 == c)) {
            Some(pos) => pos + 1,
            None if req.offset_date > 0 => list
                .iter()
                .position(|d| d.1 < req.offset_date)
                .unwrap_or(list.len()),
            None => 0,
        };
        let limit = req.limit.clamp(1, 100) as usize;
        let page: Vec<(ChatId, i32, i32)> = list.into_iter().skip(start).take(limit).collect();
        let mut dialogs = Vec::new();
        let mut messages = Vec::new();
        let mut extra = Vec::new();
        for &(chat, _, top) in &page {
            let peer = match chat {
                ChatId::Private(a, b) => user_peer(if a == viewer { b } else { a }),
                ChatId::Group(g) => {
                    extra.push(chat);
                    chat_peer(g)
                }
                ChatId::Channel(c) => {
                    extra.push(chat);
                    if let Some(ch) = self.channels.get(&c) {
                        dialogs.push(self.channel_dialog(c, ch));
                        if let Some(m) = self.render(viewer, chat, top) {
                            messages.push(m);
                        }
                    }
                    continue;
                }
            };
            if let ChatId::Private(a, b) = chat {
                let other = if a == viewer { b } else { a };
                extra.push(ChatId::Private(other, other));
            }
            dialogs.push(
                tl::types::Dialog {
                    pinned: false,
                    unread_mark: false,
                    view_forum_as_messages: false,
                    peer,
                    top_message: top,
                    read_inbox_max_id: 0,
                    read_outbox_max_id: 0,
                    unread_count: 0,
                    unread_mentions_count: 0,
                    unread_reactions_count: 0,
                    unread_poll_votes_count: 0,
                    notify_settings: notify_settings(),
                    pts: None,
                    draft: None,
                    folder_id: None,
                    ttl_period: None,
                }
                .into(),
            );
            if let Some(m) = self.render(viewer, chat, top) {
                messages.push(m);
            }
        }
        let private_users: BTreeSet<i64> = extra
            .iter()
            .filter_map(|c| match c {
                ChatId::Private(a, _) => Some(*a),
                _ => None,
            })
            .collect();
        let (mut users, chats) = self.peers_of(
            viewer,
            &messages,
            extra
                .into_iter()
                .filter(|c| !matches!(c, ChatId::Private(..))),
        );
        let known: BTreeSet<i64> = users.iter().map(u_id).collect();
        let missing: BTreeSet<i64> = private_users.difference(&known).copied().collect();
        users.extend(self.render_users(viewer, &missing));
        Ok(if start + page.len() >= total && start == 0 {
            tl::types::messages::Dialogs {
                dialogs,
                messages,
                chats,
                users,
            }
            .into()
        } else {
            tl::types::messages::DialogsSlice {
                count: total as i32,
                dialogs,
                messages,
                chats,
                users,
            }
            .into()
        })
    }

    /// `messages.getForumTopics`: General (id 1) plus every created topic, most recently
    /// active first; `offset_topic` continues after that topic; `q` filters titles.
    pub fn get_forum_topics(
        &self,
        viewer: i64,
        req: &tl::functions::messages::GetForumTopics,
    ) -> Result<tl::enums::messages::ForumTopics, RpcFailure> {
        let ChatId::Channel(cid) = self.resolve_peer(viewer, &req.peer)? else {
            return Err(RpcFailure::new(400, "CHANNEL_INVALID"));
        };
        let ch = self
            .channels
            .get(&cid)
            .ok_or_else(|| RpcFailure::new(400, "CHANNEL_INVALID"))?;
        if ch.kind != ChannelKind::Forum {
            return Err(RpcFailure::new(400, "CHANNEL_FORUM_MISSING"));
        }
        // (id, title, date, creator)
        let mut topics: Vec<(i32, String, i32, Option<i64>)> =
            vec![(1, "General".to_owned(), ch.date, None)];
        topics.extend(ch.messages.values().filter_map(|m| {
            m.topic_created
                .as_ref()
                .map(|t| (m.id, t.clone(), m.date, m.sender))
        }));
        if let Some(q) = req.q.as_deref().filter(|q| !q.is_empty()) {
            let q = q.to_lowercase();
            topics.retain(|t| t.1.to_lowercase().contains(&q));
        }
        let top_of = |topic: i32| {
            ch.messages
                .values()
                .filter(|m| {
                    let t = if m.topic_created.is_some() {
                        m.id
                    } else {
                        m.topic.unwrap_or(1)
                    };
                    t == topic
                })
                .map(|m| m.id)
                .max()
                .unwrap_or(0)
        };
        let mut listed: Vec<(i32, String, i32, Option<i64>, i32)> = topics
            .into_iter()
            .map(|(id, title, date, from)| (id, title, date, from, top_of(id)))
            .collect();
        listed.sort_by_key(|t| std::cmp::Reverse((t.4, t.0)));
        let count = listed.len() as i32;
        let start = if req.offset_topic > 0 {
            listed
                .iter()
                .position(|t| t.0 == req.offset_topic)
                .map(|p| p + 1)
                .unwrap_or(listed.len())
        } else {
            0
        };
        let limit = req.limit.clamp(1, 100) as usize;
        let page: Vec<_> = listed.into_iter().skip(start).take(limit).collect();
        let messages: Vec<tl::enums::Message> = page
            .iter()
            .filter(|t| t.4 > 0)
            .filter_map(|t| self.render_channel_message(cid, t.4, viewer))
            .collect();
        let topics = page
            .into_iter()
            .map(|(id, title, date, from, top)| {
                tl::types::ForumTopic {
                    my: from == Some(viewer),
                    closed: false,
                    pinned: false,
                    short: false,
                    hidden: false,
                    title_missing: false,
                    id,
                    date,
                    peer: channel_peer(cid),
                    title,
                    icon_color: 0x6FB9F0,
                    icon_emoji_id: None,
                    top_message: top,
                    read_inbox_max_id: 0,
                    read_outbox_max_id: 0,
                    unread_count: 0,
                    unread_mentions_count: 0,
                    unread_reactions_count: 0,
                    unread_poll_votes_count: 0,
                    from_id: from.map(user_peer).unwrap_or_else(|| channel_peer(cid)),
                    notify_settings: notify_settings(),
                    draft: None,
                }
                .into()
            })
            .collect();
        let (users, chats) = self.peers_of(viewer, &messages, [ChatId::Channel(cid)]);
        Ok(tl::types::messages::ForumTopics {
            order_by_create_date: false,
            count,
            topics,
            messages,
            chats,
            users,
            pts: ch.pts,
        }
        .into())
    }

    /// `messages.getMessages` / `channels.getMessages` by id (missing ids give `messageEmpty`).
    pub fn get_messages(
        &self,
        viewer: i64,
        channel: Option<&tl::enums::InputChannel>,
        ids: &[tl::enums::InputMessage],
    ) -> Result<tl::enums::messages::Messages, RpcFailure> {
        let chat_id = match channel {
            Some(c) => Some(self.member_channel(viewer, c)?.0),
            None => None,
        };
        let messages: Vec<tl::enums::Message> = ids
            .iter()
            .map(|m| match m {
                tl::enums::InputMessage::Id(m) => m.id,
                _ => 0,
            })
            .map(|id| {
                let found = match chat_id {
                    Some(cid) => self.render_channel_message(cid, id, viewer),
                    None => self.render_common_message(viewer, id),
                };
                found.unwrap_or_else(|| tl::types::MessageEmpty { id, peer_id: None }.into())
            })
            .collect();
        let (users, chats) = self.peers_of(viewer, &messages, chat_id.map(ChatId::Channel));
        Ok(match chat_id {
            Some(cid) => tl::types::messages::ChannelMessages {
                inexact: false,
                pts: self.channel_pts(cid).unwrap_or(0),
                count: messages.len() as i32,
                offset_id_offset: None,
                messages,
                topics: Vec::new(),
                chats,
                users,
            }
            .into(),
            None => tl::types::messages::Messages {
                messages,
                topics: Vec::new(),
                chats,
                users,
            }
            .into(),
        })
    }
}

fn u_id(u: &tl::enums::User) -> i64 {
    match u {
        tl::enums::User::Empty(u) => u.id,
        tl::enums::User::User(u) => u.id,
    }
}

fn normalize(chat: ChatId) -> ChatId {
    match chat {
        ChatId::Private(a, b) if a > b => ChatId::Private(b, a),
        other => other,
    }
}

fn same_chat(a: ChatId, b: ChatId) -> bool {
    normalize(a) == normalize(b)
}

fn collect_peers(m: &tl::enums::Message, users: &mut BTreeSet<i64>, chats: &mut BTreeSet<ChatId>) {
    let (from, peer) = match m {
        tl::enums::Message::Message(m) => (m.from_id.as_ref(), Some(&m.peer_id)),
        tl::enums::Message::Service(m) => (m.from_id.as_ref(), Some(&m.peer_id)),
        tl::enums::Message::Empty(m) => (None, m.peer_id.as_ref()),
    };
    for p in from.into_iter().chain(peer) {
        match p {
            tl::enums::Peer::User(u) => {
                users.insert(u.user_id);
            }
            tl::enums::Peer::Chat(c) => {
                chats.insert(ChatId::Group(c.chat_id));
            }
            tl::enums::Peer::Channel(c) => {
                chats.insert(ChatId::Channel(c.channel_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn history(
        w: &World,
        viewer: i64,
        peer: tl::enums::InputPeer,
        offset_id: i32,
        add_offset: i32,
        limit: i32,
        max_id: i32,
        min_id: i32,
    ) -> Vec<i32> {
        let req = tl::functions::messages::GetHistory {
            peer,
            offset_id,
            offset_date: 0,
            add_offset,
            limit,
            max_id,
            min_id,
            hash: 0,
        };
        let msgs = match w.get_history(viewer, &req).expect("history") {
            tl::enums::messages::Messages::Messages(m) => m.messages,
            tl::enums::messages::Messages::Slice(m) => m.messages,
            tl::enums::messages::Messages::ChannelMessages(m) => m.messages,
            tl::enums::messages::Messages::NotModified(_) => Vec::new(),
        };
        msgs.iter()
            .map(|m| match m {
                tl::enums::Message::Message(m) => m.id,
                tl::enums::Message::Service(m) => m.id,
                tl::enums::Message::Empty(m) => m.id,
            })
            .collect()
    }

    fn channel_with_posts(n: i32) -> (World, i64, tl::enums::InputPeer) {
        let mut w = World::new(WorldLimits::default());
        let alice = w.add_account("Alice");
        let ChatId::Channel(cid) = w.create_channel("C", ChannelKind::Broadcast, &[alice]) else {
            unreachable!()
        };
        for i in 0..n {
            w.send_message(
                ChatId::Channel(cid),
                alice,
                &format!("{i}"),
                &SendOptions::default(),
            );
        }
        let peer = tl::types::InputPeerChannel {
            channel_id: cid,
            access_hash: w.channel_access_hash(cid).expect("hash"),
        }
        .into();
        (w, alice, peer)
    }

    #[test]
    fn history_offsets_follow_telegram_semantics() {
        let (w, a, peer) = channel_with_posts(30);
        // newest first, limit
        assert_eq!(
            history(&w, a, peer.clone(), 0, 0, 3, 0, 0),
            vec![30, 29, 28]
        );
        // offset_id is exclusive: messages older than it
        assert_eq!(history(&w, a, peer.clone(), 10, 0, 3, 0, 0), vec![9, 8, 7]);
        // add_offset skips; negative values move to newer messages (offset_id included)
        assert_eq!(history(&w, a, peer.clone(), 10, 2, 3, 0, 0), vec![7, 6, 5]);
        assert_eq!(
            history(&w, a, peer.clone(), 10, -3, 3, 0, 0),
            vec![12, 11, 10]
        );
        // min_id / max_id are exclusive bounds that filter the page; they do not move it
        // (clients such as Telethon move offset_id to max_id themselves)
        assert_eq!(history(&w, a, peer.clone(), 10, -3, 3, 0, 10), vec![12, 11]);
        assert_eq!(history(&w, a, peer.clone(), 0, 0, 5, 28, 0), vec![27, 26]);
        assert_eq!(history(&w, a, peer.clone(), 0, 0, 100, 6, 2), vec![5, 4, 3]);
        // past the oldest message
        assert_eq!(history(&w, a, peer, 1, 0, 10, 0, 0), Vec::<i32>::new());
    }

    #[test]
    fn private_ids_are_per_account_and_channel_ids_are_shared() {
        let mut w = World::new(WorldLimits::default());
        let a = w.add_account("A");
        let b = w.add_account("B");
        let g = w.create_group("G", &[a]);
        w.send_message(g, a, "only a sees this", &SendOptions::default());
        let (sent, pushes) = w
            .send_message(ChatId::Private(a, b), a, "hi", &SendOptions::default())
            .expect("sent");
        assert_eq!(sent.id_for(a), Some(2));
        assert_eq!(sent.id_for(b), Some(1));
        assert_eq!(pushes.len(), 2);
        assert_eq!(w.state(a).map(|s| s.pts), Some(3));
        assert_eq!(w.state(b).map(|s| s.pts), Some(2));
        let c = w.create_channel("C", ChannelKind::Supergroup, &[a, b]);
        let (sent, _) = w
            .send_message(c, b, "x", &SendOptions::default())
            .expect("sent");
        assert_eq!(sent.id_for(a), sent.id_for(b));
    }

    #[test]
    fn difference_is_empty_full_sliced_or_too_long() {
        let mut w = World::new(WorldLimits {
            difference_slice: 2,
            difference_too_long: 4,
            channel_difference_too_long: 4,
        });
        let a = w.add_account("A");
        let u = w.add_user("U");
        let req = |pts| tl::functions::updates::GetDifference {
            pts,
            pts_limit: None,
            pts_total_limit: None,
            date: 1,
            qts: 0,
            qts_limit: None,
        };
        assert!(matches!(
            w.get_difference(a, &req(1)),
            Ok(tl::enums::updates::Difference::Empty(_))
        ));
        for i in 0..4 {
            w.send_message(
                ChatId::Private(a, u),
                u,
                &format!("{i}"),
                &SendOptions::default(),
            );
        }
        match w.get_difference(a, &req(1)) {
            Ok(tl::enums::updates::Difference::Slice(d)) => {
                assert_eq!(d.new_messages.len(), 2);
                let tl::enums::updates::State::State(s) = d.intermediate_state;
                assert_eq!(s.pts, 3);
            }
            other => panic!("{other:?}"),
        }
        match w.get_difference(a, &req(3)) {
            Ok(tl::enums::updates::Difference::Difference(d)) => {
                assert_eq!(d.new_messages.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        w.skip_pts(a, 1);
        assert!(matches!(
            w.get_difference(a, &req(1)),
            Ok(tl::enums::updates::Difference::TooLong(d)) if d.pts == 6
        ));
    }
}
