//! The simulated world: every account's stream as a pure function of (seed, account, position).
//!
//! # How positions are laid out
//!
//! Positions are grouped in blocks of [`BLOCK`] (1024). Every block has the same *composition*,
//! derived once from the rates: so many edit slots, delete slots, re-delivery slots, and, for each
//! chat, so many message and service slots. Which position of a block gets which slot is a keyed
//! permutation of the block (a 4-round Feistel network over 10 bits, keyed by seed, account and
//! block), so the order looks random but is invertible. That makes Telegram's message-id counters
//! computable without replaying the stream: the id of the message at position `n` is the number of
//! id-consuming slots of its id space in earlier blocks (`block × per-block count`) plus those
//! before `n` in its own block (at most one block of permutation evaluations).
//!
//! References to earlier messages are confined so that the world stays consistent without state:
//! edits and replies point at earlier messages of the same block, deletions point at messages of
//! the previous block (each message at most once: an injective map from delete slots to
//! pairs of message slots), so nothing is edited or replied to after it was deleted, and nothing is deleted
//! twice. Re-deliveries repeat a position at most [`DUPLICATE_REACH`] back.
//!
//! # Time
//!
//! World time advances one second per position: position `n` happens at
//! [`EPOCH_US`]` + n s + jitter` (jitter below one second). So an edit's `edit_version` (the edit
//! date in unix seconds) is unique per position and always later than the message it edits.
//! Pacing on the wall clock is separate: see [`SimulatedWorld::schedule`].

use std::ops::Range;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::SimulatorConfig;
use super::text::{self, Pii, PiiKind, below, chance};
use crate::config::ConfigError;
use crate::event::{
    Chat, ChatKind, Event, EventKind, SCHEMA_VERSION, Sender, Source, TELEGRAM_SERVICE_CHAT,
    event_id, marked_chat_id,
};
use crate::telegram::gateway::AccountInfo;

/// Positions per block; every block has the same composition of slots.
pub const BLOCK: u64 = 1 << BLOCK_BITS;
const BLOCK_BITS: u32 = 10;
const HALF_BITS: u32 = BLOCK_BITS / 2;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const FEISTEL_ROUNDS: usize = 4;

/// How far back (in positions, within the block) an edit looks for a message to edit.
pub const EDIT_REACH: u64 = 64;
/// How far back (in positions) a re-delivery looks for the position it repeats.
pub const DUPLICATE_REACH: u64 = 64;
/// World time of position 0: 2026-01-01T00:00:00Z in unix microseconds.
pub const EPOCH_US: i64 = 1_767_225_600_000_000;
/// The user id of simulated account 0; account `i` is `FIRST_ACCOUNT_ID + i`.
pub const FIRST_ACCOUNT_ID: u64 = 1_000_000;

/// Chance that a message in a private chat is outgoing (sent by the account itself).
const OUTGOING_PRIVATE: f64 = 0.35;
/// Chance that a message in a group-like chat is sent by the account itself.
const OUTGOING_GROUP: f64 = 0.15;
/// Chance that a message replies to an earlier one of its chat (and topic).
const REPLY_CHANCE: f64 = 0.2;
/// Chance, in percent, that a deletion update removes a second message.
const SECOND_DELETE_PERCENT: u64 = 30;

// Salts that separate the structural hash streams.
const SALT_ACCOUNT: u64 = 0x6163_636f_756e_7400;
const SALT_PERM: u64 = 0x7065_726d_7574_6500;
const SALT_CHAT: u64 = 0x6368_6174_0000_0000;
const SALT_BASE: u64 = 0x6261_7365_0000_0000;
const SALT_TIME: u64 = 0x7469_6d65_0000_0000;
const SALT_TOPIC: u64 = 0x746f_7069_6300_0000;
const SALT_EDIT: u64 = 0x6564_6974_0000_0000;
const SALT_DELETE: u64 = 0x6465_6c65_7465_0000;
const SALT_DUP: u64 = 0x6475_7000_0000_0000;
const SALT_CONTENT: u64 = 0x636f_6e74_656e_7400;
const SALT_MEMBER: u64 = 0x6d65_6d62_6572_0000;

/// splitmix64's finalizer: a cheap, well-mixed, platform-independent hash step.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash2(a: u64, b: u64) -> u64 {
    mix64(a ^ mix64(b))
}

/// The keyed permutation of one block's offsets (a balanced Feistel network on 10 bits).
struct Perm {
    keys: [u64; FEISTEL_ROUNDS],
}

impl Perm {
    fn new(account_key: u64, block: u64) -> Self {
        let k = hash2(account_key ^ SALT_PERM, block);
        let mut keys = [0; FEISTEL_ROUNDS];
        for (r, key) in keys.iter_mut().enumerate() {
            *key = hash2(k, r as u64);
        }
        Perm { keys }
    }

    fn round(&self, r: usize, half: u64) -> u64 {
        mix64(self.keys[r] ^ half) & HALF_MASK
    }

    /// Offset in the block → index in the layout.
    fn forward(&self, offset: u64) -> u64 {
        let (mut l, mut r) = (offset >> HALF_BITS, offset & HALF_MASK);
        for round in 0..FEISTEL_ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        (l << HALF_BITS) | r
    }

    /// Index in the layout → offset in the block.
    fn inverse(&self, index: u64) -> u64 {
        let (mut l, mut r) = (index >> HALF_BITS, index & HALF_MASK);
        for round in (0..FEISTEL_ROUNDS).rev() {
            (l, r) = (r ^ self.round(round, l), l);
        }
        (l << HALF_BITS) | r
    }

    /// How many offsets below `offset` map into `range` (the cheaper of the two ways to count).
    fn count_before(&self, range: &Range<u64>, offset: u64) -> u64 {
        let len = range.end - range.start;
        if offset <= len {
            (0..offset)
                .filter(|&o| range.contains(&self.forward(o)))
                .count() as u64
        } else {
            range.clone().filter(|&x| self.inverse(x) < offset).count() as u64
        }
    }
}

/// The part a chat plays in a simulated account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatRole {
    /// Telegram's service notifications, chat 777000 (login codes).
    TelegramService,
    /// A one-to-one chat with another user.
    Private,
    /// A basic group.
    Group,
    /// A supergroup without topics.
    Supergroup,
    /// A supergroup with forum topics.
    Forum,
    /// A broadcast channel: posts carry no sender.
    Channel,
}

impl ChatRole {
    /// The Telegram chat kind of this role.
    pub fn kind(self) -> ChatKind {
        match self {
            ChatRole::TelegramService | ChatRole::Private => ChatKind::Private,
            ChatRole::Group => ChatKind::Group,
            ChatRole::Supergroup | ChatRole::Forum => ChatKind::Supergroup,
            ChatRole::Channel => ChatKind::Channel,
        }
    }

    /// Private chats and basic groups share the account's message-id counter.
    pub fn uses_account_counter(self) -> bool {
        matches!(self.kind(), ChatKind::Private | ChatKind::Group)
    }

    /// Relative share of message slots.
    fn weight(self) -> u64 {
        match self {
            ChatRole::TelegramService => 1,
            ChatRole::Private => 12,
            ChatRole::Group => 16,
            ChatRole::Supergroup | ChatRole::Forum => 20,
            ChatRole::Channel => 8,
        }
    }

    fn has_service_messages(self) -> bool {
        !matches!(self, ChatRole::TelegramService | ChatRole::Private)
    }
}

/// The roles of an account's chats, in layout order (account-counter chats first).
fn roles(chats: usize) -> Vec<ChatRole> {
    const BASE: [ChatRole; 6] = [
        ChatRole::TelegramService,
        ChatRole::Private,
        ChatRole::Group,
        ChatRole::Supergroup,
        ChatRole::Forum,
        ChatRole::Channel,
    ];
    const EXTRA: [ChatRole; 8] = [
        ChatRole::Private,
        ChatRole::Group,
        ChatRole::Private,
        ChatRole::Supergroup,
        ChatRole::Private,
        ChatRole::Channel,
        ChatRole::Group,
        ChatRole::Private,
    ];
    let mut roles: Vec<ChatRole> = BASE
        .into_iter()
        .chain(EXTRA.into_iter().cycle())
        .take(chats.max(BASE.len()))
        .collect();
    roles.sort_by_key(|r| !r.uses_account_counter());
    roles
}

/// Splits `total` by `weights` (largest remainder, ties to the lower index).
fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<u64> = weights.iter().map(|w| total * w / sum).collect();
    let mut left = total - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(total * weights[i] % sum), i));
    for i in order {
        if left == 0 {
            break;
        }
        if weights[i] > 0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// One chat's slots in the block layout: `messages` message slots, then `services` service slots.
#[derive(Debug, Clone)]
struct ChatSlots {
    role: ChatRole,
    start: u64,
    messages: u64,
    services: u64,
}

impl ChatSlots {
    fn all(&self) -> Range<u64> {
        self.start..self.start + self.messages + self.services
    }
    fn messages(&self) -> Range<u64> {
        self.start..self.start + self.messages
    }
}

/// The composition of every block: `[edits][deletes][re-deliveries][chat slots…]`.
#[derive(Debug, Clone)]
struct Layout {
    edits: u64,
    deletes: u64,
    duplicates: u64,
    /// Chat slots, account-counter chats first.
    chats: Vec<ChatSlots>,
    /// Layout indices of the chats that use the account's message-id counter.
    account_counter: Range<u64>,
    /// Step of the injective map from delete ordinals to pairs of id-consuming slots (coprime with
    /// the number of pairs).
    delete_step: u64,
}

/// What kind of slot an index of the layout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Edit,
    Delete(u64),
    Duplicate,
    Message(usize),
    Service(usize),
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Layout {
    fn new(cfg: &SimulatorConfig) -> Layout {
        let count = |rate: f64| (rate * BLOCK as f64).round() as u64;
        let (edits, deletes, duplicates, services) = (
            count(cfg.edit_rate),
            count(cfg.delete_rate),
            count(cfg.duplicate_rate),
            count(cfg.service_rate),
        );
        let roles = roles(cfg.chats_per_account as usize);
        let consuming = BLOCK - edits - deletes - duplicates;
        let messages_total = consuming - services;
        // Every chat has at least one message slot per block.
        let weights: Vec<u64> = roles.iter().map(|r| r.weight()).collect();
        let mut messages = apportion(messages_total - roles.len() as u64, &weights);
        messages.iter_mut().for_each(|m| *m += 1);
        let service_weights: Vec<u64> = roles
            .iter()
            .map(|r| u64::from(r.has_service_messages()))
            .collect();
        let service_counts = apportion(services, &service_weights);

        let mut start = edits + deletes + duplicates;
        let consuming_start = start;
        let mut account_end = start;
        let mut chats = Vec::with_capacity(roles.len());
        for ((role, messages), services) in roles.into_iter().zip(messages).zip(service_counts) {
            chats.push(ChatSlots {
                role,
                start,
                messages,
                services,
            });
            start += messages + services;
            if role.uses_account_counter() {
                account_end = start;
            }
        }
        let pairs = consuming / 2;
        let mut delete_step = (pairs as f64 * 0.618) as u64 | 1;
        while gcd(delete_step, pairs) != 1 {
            delete_step += 1;
        }
        Layout {
            edits,
            deletes,
            duplicates,
            chats,
            account_counter: consuming_start..account_end,
            delete_step,
        }
    }

    fn consuming(&self) -> Range<u64> {
        self.edits + self.deletes + self.duplicates..BLOCK
    }

    fn slot(&self, index: u64) -> Slot {
        let c = self.consuming().start;
        if index < self.edits {
            Slot::Edit
        } else if index < self.edits + self.deletes {
            Slot::Delete(index - self.edits)
        } else if index < c {
            Slot::Duplicate
        } else {
            let chat = self.chat_of(index);
            if index < self.chats[chat].start + self.chats[chat].messages {
                Slot::Message(chat)
            } else {
                Slot::Service(chat)
            }
        }
    }

    fn chat_of(&self, index: u64) -> usize {
        self.chats
            .partition_point(|s| s.start <= index)
            .saturating_sub(1)
    }
}

/// What a position of an account's stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionKind {
    /// A new message.
    Message,
    /// A new service message (joins, pins, title changes…).
    Service,
    /// An edit of the message created at position `of`.
    Edit {
        /// Position of the edited message.
        of: u64,
    },
    /// A deletion of the messages created at positions `of` (one update, one or two events).
    Delete {
        /// Positions of the deleted messages.
        of: Vec<u64>,
    },
    /// A re-delivery of the events of position `of` (never itself a re-delivery).
    Duplicate {
        /// The position whose events are repeated.
        of: u64,
    },
    /// An update that carries no events (a delete or edit slot with nothing to refer to).
    Quiet,
}

/// The ground truth of one position: its kind, its events, and the personal data in its text.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionEvents {
    /// The position in the account's stream.
    pub position: u64,
    /// What happens at this position.
    pub kind: PositionKind,
    /// The events, with `source` [`Source::Live`] and `observed_at_us` equal to the world time of
    /// the position (the gateway overwrites both when it emits them).
    pub events: Vec<Event>,
    /// The personal data embedded in the text, if any (copied from the origin for re-deliveries).
    pub pii: Option<Pii>,
}

/// One of an account's chats, as the world defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimChat {
    /// Index among the account's chats (layout order).
    pub index: usize,
    /// The part it plays.
    pub role: ChatRole,
    /// The chat as it appears in events.
    pub chat: Chat,
    /// The bare (unmarked) id.
    pub bare_id: i64,
    /// Forum topics as (root message id, title); empty outside the forum.
    pub topics: Vec<(String, String)>,
}

/// Everything about one chat that events need, derived on demand.
struct ChatInfo {
    index: usize,
    role: ChatRole,
    key: u64,
    bare: i64,
    title: String,
}

impl ChatInfo {
    fn chat(&self) -> Chat {
        Chat {
            kind: self.role.kind(),
            id: marked_chat_id(self.role.kind(), self.bare),
            title: Some(self.title.clone()),
        }
    }

    fn members(&self) -> u64 {
        3 + self.key % 10
    }

    fn member(&self, j: u64) -> Sender {
        let h = hash2(self.key ^ SALT_MEMBER, j);
        Sender {
            id: (5_000_000_000 + (h % 10_000_000) * 64 + j % 64).to_string(),
            display_name: Some(text::person_name(h)),
            is_self: false,
        }
    }
}

/// An account, as the generator needs it.
struct Account {
    key: u64,
    id: String,
}

/// The deterministic world behind every simulated account.
#[derive(Debug, Clone)]
pub struct SimulatedWorld {
    cfg: SimulatorConfig,
    layout: Layout,
}

impl SimulatedWorld {
    /// Builds the world of `cfg` (validated first: the layout relies on the rate limits).
    pub fn new(cfg: SimulatorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        Ok(SimulatedWorld { cfg, layout })
    }

    /// The configuration the world was built from.
    pub fn config(&self) -> &SimulatorConfig {
        &self.cfg
    }

    /// Number of simulated accounts.
    pub fn accounts(&self) -> u32 {
        self.cfg.accounts
    }

    /// The Telegram user id of account `index`.
    pub fn account_id(&self, index: u32) -> String {
        (FIRST_ACCOUNT_ID + u64::from(index)).to_string()
    }

    /// The index of the account with user id `id`, if it is one of this world's accounts.
    pub fn account_index(&self, id: &str) -> Option<u32> {
        if id.starts_with('0') || id.starts_with('+') {
            return None;
        }
        let n: u64 = id.parse().ok()?;
        let index = n.checked_sub(FIRST_ACCOUNT_ID)?;
        u32::try_from(index).ok().filter(|&i| i < self.cfg.accounts)
    }

    /// The user ids of all accounts, in index order.
    pub fn account_ids(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.cfg.accounts).map(|i| self.account_id(i))
    }

    /// Who account `index` is, as `Gateway::connect` reports it.
    pub fn account_info(&self, index: u32) -> AccountInfo {
        let a = self.account(index);
        AccountInfo {
            account_id: a.id,
            display_name: Some(text::person_name(a.key)),
            username: Some(text::handle(a.key)),
        }
    }

    /// The chats of account `index`, in layout order.
    pub fn chats(&self, index: u32) -> Vec<SimChat> {
        let a = self.account(index);
        (0..self.layout.chats.len())
            .map(|c| {
                let info = self.chat_info(&a, c);
                let topics = if info.role == ChatRole::Forum {
                    self.topics(&a, c)
                        .iter()
                        .enumerate()
                        .map(|(i, id)| (id.to_string(), text::topic_title(i).to_string()))
                        .collect()
                } else {
                    Vec::new()
                };
                SimChat {
                    index: c,
                    role: info.role,
                    chat: info.chat(),
                    bare_id: info.bare,
                    topics,
                }
            })
            .collect()
    }

    /// Wall-clock offset of position `n` from position 0 at `rate`, with bursts: every
    /// `burst_every` positions, `burst_size` of them arrive at once and the rest of the cycle is
    /// spread evenly, so the long-run rate stays `rate`.
    pub fn schedule(&self, n: u64) -> Duration {
        let rate = self.cfg.rate;
        let every = self.cfg.burst_every;
        let secs = if every == 0 {
            n as f64 / rate
        } else {
            let size = self.cfg.burst_size.clamp(1, every);
            let (cycle, k) = (n / every, n % every);
            let within = if k < size {
                0.0
            } else {
                (k - size + 1) as f64 * every as f64 / (every - size + 1) as f64
            };
            (cycle as f64 * every as f64 + within) / rate
        };
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// The ground truth of position `n` of account `index`'s stream.
    pub fn event_at(&self, index: u32, n: u64) -> PositionEvents {
        let a = self.account(index);
        self.position(&a, n)
    }

    /// Every unique event of positions `0..upto` of account `index`, in stream order (re-deliveries
    /// excluded): what a loss-free, duplicate-free pipeline must deliver.
    pub fn expected(&self, index: u32, upto: u64) -> impl Iterator<Item = Event> + '_ {
        let a = self.account(index);
        (0..upto).flat_map(move |n| {
            let p = self.position(&a, n);
            match p.kind {
                PositionKind::Duplicate { .. } => Vec::new(),
                _ => p.events,
            }
        })
    }

    /// Messages (and service messages) of chat `chat_id` created before position `before`, with a
    /// message id above `after_message_id`, oldest first, at most `limit`; `None` if the account
    /// has no such chat. Events are as created (edits and deletions are not applied) and marked
    /// [`Source::Backfill`], so they carry the same `event_id` as the live originals.
    pub fn history(
        &self,
        index: u32,
        chat_id: &str,
        after_message_id: Option<u64>,
        before: u64,
        limit: usize,
    ) -> Option<Vec<Event>> {
        let a = self.account(index);
        let c = (0..self.layout.chats.len()).find(|&c| {
            let info = self.chat_info(&a, c);
            marked_chat_id(info.role.kind(), info.bare) == chat_id
        })?;
        let slots = &self.layout.chats[c];
        let (counter, base) = self.counter(&a, c);
        let per_block = counter.end - counter.start;
        let after = after_message_id.unwrap_or(0);
        let mut block = after.saturating_sub(base + 1) / per_block;
        let mut out = Vec::new();
        while out.len() < limit && block.saturating_mul(BLOCK) < before {
            let perm = Perm::new(a.key, block);
            let mut offsets: Vec<(u64, bool)> = slots
                .all()
                .map(|x| (perm.inverse(x), x >= slots.start + slots.messages))
                .collect();
            offsets.sort_unstable();
            for (offset, service) in offsets {
                let n = block * BLOCK + offset;
                if n >= before || out.len() >= limit {
                    break;
                }
                let (mut event, _) = self.new_message(&a, c, n, service);
                if event.message_id.parse::<u64>().is_ok_and(|id| id > after) {
                    event.source = Source::Backfill;
                    out.push(event);
                }
            }
            block += 1;
        }
        Some(out)
    }

    // -----------------------------------------------------------------------------------------

    fn account(&self, index: u32) -> Account {
        Account {
            key: hash2(hash2(self.cfg.seed, SALT_ACCOUNT), u64::from(index)),
            id: self.account_id(index),
        }
    }

    fn slot_at(&self, a: &Account, n: u64) -> Slot {
        let perm = Perm::new(a.key, n / BLOCK);
        self.layout.slot(perm.forward(n % BLOCK))
    }

    fn chat_info(&self, a: &Account, c: usize) -> ChatInfo {
        let role = self.layout.chats[c].role;
        let key = hash2(a.key ^ SALT_CHAT, c as u64);
        let spread = (key % 10_000_000) as i64 * 64 + c as i64;
        let (bare, title) = match role {
            ChatRole::TelegramService => (777_000, "Telegram".to_string()),
            ChatRole::Private => (5_000_000_000 + spread, text::person_name(key)),
            ChatRole::Group => (100_000_000 + spread, text::group_title(key)),
            ChatRole::Supergroup => (1_400_000_000 + spread, text::group_title(key)),
            ChatRole::Forum => (1_400_000_000 + spread, text::forum_title(key)),
            ChatRole::Channel => (1_400_000_000 + spread, text::channel_title(key)),
        };
        ChatInfo {
            index: c,
            role,
            key,
            bare,
            title,
        }
    }

    /// The layout range that feeds chat `c`'s message-id counter, and the counter's base.
    fn counter(&self, a: &Account, c: usize) -> (Range<u64>, u64) {
        if self.layout.chats[c].role.uses_account_counter() {
            let base = 10_000 + hash2(a.key ^ SALT_BASE, u64::MAX) % 990_000;
            (self.layout.account_counter.clone(), base)
        } else {
            let base = 100 + hash2(a.key ^ SALT_BASE, c as u64) % 99_900;
            (self.layout.chats[c].all(), base)
        }
    }

    /// Message id of the message created at position `n` (which must be a slot of chat `c`).
    fn message_id(&self, a: &Account, c: usize, n: u64) -> u64 {
        let (block, offset) = (n / BLOCK, n % BLOCK);
        let (counter, base) = self.counter(a, c);
        let per_block = counter.end - counter.start;
        let perm = Perm::new(a.key, block);
        base + block * per_block + perm.count_before(&counter, offset) + 1
    }

    /// Root message ids of the forum's topics (General is 1); all below the forum's first id.
    fn topics(&self, a: &Account, c: usize) -> [u64; 4] {
        let (_, base) = self.counter(a, c);
        let step = base / 4;
        [1, 1 + step, 1 + 2 * step, 1 + 3 * step]
    }

    fn topic_of(&self, a: &Account, c: usize, n: u64) -> u64 {
        let topics = self.topics(a, c);
        topics[(hash2(a.key ^ SALT_TOPIC, n) % topics.len() as u64) as usize]
    }

    fn at_us(&self, a: &Account, n: u64) -> i64 {
        let jitter = (hash2(a.key ^ SALT_TIME, n) % 1_000_000) as i64;
        EPOCH_US
            .saturating_add((n as i64).saturating_mul(1_000_000))
            .saturating_add(jitter)
    }

    fn content_rng(&self, a: &Account, n: u64) -> ChaCha8Rng {
        let k = hash2(a.key ^ SALT_CONTENT, n);
        let mut seed = [0u8; 32];
        for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&hash2(k, i as u64).to_le_bytes());
        }
        ChaCha8Rng::from_seed(seed)
    }

    fn self_sender(&self, a: &Account) -> Sender {
        Sender {
            id: a.id.clone(),
            display_name: Some(text::person_name(a.key)),
            is_self: true,
        }
    }

    fn position(&self, a: &Account, n: u64) -> PositionEvents {
        match self.slot_at(a, n) {
            slot @ (Slot::Message(c) | Slot::Service(c)) => {
                let service = matches!(slot, Slot::Service(_));
                let (event, pii) = self.new_message(a, c, n, service);
                PositionEvents {
                    position: n,
                    kind: if service {
                        PositionKind::Service
                    } else {
                        PositionKind::Message
                    },
                    events: vec![event],
                    pii,
                }
            }
            Slot::Edit => self.edit(a, n),
            Slot::Delete(ordinal) => self.delete(a, n, ordinal),
            Slot::Duplicate => match self.duplicate_origin(a, n) {
                Some(of) => {
                    let origin = self.position(a, of);
                    PositionEvents {
                        position: n,
                        kind: PositionKind::Duplicate { of },
                        events: origin.events,
                        pii: origin.pii,
                    }
                }
                None => quiet(n),
            },
        }
    }

    /// The message created at position `n` in chat `c`, and the personal data in its text.
    fn new_message(&self, a: &Account, c: usize, n: u64, service: bool) -> (Event, Option<Pii>) {
        let info = self.chat_info(a, c);
        let chat = info.chat();
        let mut rng = self.content_rng(a, n);
        let message_id = self.message_id(a, c, n).to_string();
        let at = self.at_us(a, n);
        let topic = (info.role == ChatRole::Forum).then(|| self.topic_of(a, c, n));

        let sender = match info.role {
            ChatRole::TelegramService => Some(Sender {
                id: TELEGRAM_SERVICE_CHAT.to_string(),
                display_name: Some("Telegram".to_string()),
                is_self: false,
            }),
            ChatRole::Private => Some(if chance(&mut rng, OUTGOING_PRIVATE) {
                self.self_sender(a)
            } else {
                Sender {
                    id: info.bare.to_string(),
                    display_name: Some(info.title.clone()),
                    is_self: false,
                }
            }),
            ChatRole::Channel => None,
            ChatRole::Group | ChatRole::Supergroup | ChatRole::Forum => {
                Some(if chance(&mut rng, OUTGOING_GROUP) {
                    self.self_sender(a)
                } else {
                    info.member(below(&mut rng, info.members()))
                })
            }
        };

        let mut pii = None;
        let mut media = None;
        let mut reply_to = None;
        let text = if service {
            let actor = sender.as_ref().and_then(|s| s.display_name.clone());
            let other = info.member(below(&mut rng, info.members()));
            let other = other.display_name.unwrap_or_default();
            text::service_text(&mut rng, actor.as_deref(), &other, &info.title)
        } else if info.role == ChatRole::TelegramService {
            let (text, p) = text::pii_sentence(&mut rng, PiiKind::LoginCode);
            pii = Some(p);
            text
        } else {
            let with_pii = chance(&mut rng, self.cfg.pii_rate);
            let mut text = if chance(&mut rng, self.cfg.media_rate) {
                let (m, carries_text) = text::media(&mut rng, with_pii);
                let caption = if carries_text {
                    text::media_text(&mut rng, m.kind)
                } else {
                    String::new()
                };
                media = Some(m);
                caption
            } else if info.role == ChatRole::Channel {
                text::channel_post(&mut rng)
            } else {
                text::message_text(&mut rng)
            };
            if with_pii {
                let kind =
                    PiiKind::IN_CHATS[below(&mut rng, PiiKind::IN_CHATS.len() as u64) as usize];
                let (sentence, p) = text::pii_sentence(&mut rng, kind);
                (text, pii) = if text.is_empty() {
                    (sentence, Some(p))
                } else if chance(&mut rng, 0.5) {
                    (format!("{sentence} {text}"), Some(p))
                } else {
                    let by = text.len() + 1;
                    (format!("{text} {sentence}"), Some(p.shifted(by)))
                };
            }
            if info.role != ChatRole::Channel && chance(&mut rng, REPLY_CHANCE) {
                reply_to = self.reply_target(a, &info, n, topic, &mut rng);
            }
            text
        };

        let kind = if service {
            EventKind::Service
        } else {
            EventKind::Message
        };
        let event = Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id(&a.id, &chat.id, &message_id, kind, 0),
            account_id: a.id.clone(),
            kind,
            chat,
            sender,
            message_id,
            topic_id: topic.map(|t| t.to_string()),
            reply_to: reply_to.map(|r| r.to_string()),
            sent_at_us: at,
            edit_version: 0,
            text,
            media,
            source: Source::Live,
            observed_at_us: at,
        };
        (event, pii)
    }

    /// An earlier (same block) non-service message of the same chat and topic, by message id.
    fn reply_target(
        &self,
        a: &Account,
        info: &ChatInfo,
        n: u64,
        topic: Option<u64>,
        rng: &mut ChaCha8Rng,
    ) -> Option<u64> {
        let (block, offset) = (n / BLOCK, n % BLOCK);
        let perm = Perm::new(a.key, block);
        let slots = &self.layout.chats[info.index];
        let candidate = |x: &u64| {
            let o = perm.inverse(*x);
            o < offset && topic.is_none_or(|t| self.topic_of(a, info.index, block * BLOCK + o) == t)
        };
        let count = slots.messages().filter(candidate).count() as u64;
        if count == 0 {
            return None;
        }
        let pick = below(rng, count) as usize;
        let x = slots.messages().filter(candidate).nth(pick)?;
        Some(self.message_id(a, info.index, block * BLOCK + perm.inverse(x)))
    }

    fn edit(&self, a: &Account, n: u64) -> PositionEvents {
        let Some(of) = self.edit_target(a, n) else {
            return quiet(n);
        };
        let Slot::Message(c) = self.slot_at(a, of) else {
            return quiet(n);
        };
        let (mut event, _) = self.new_message(a, c, of, false);
        let mut rng = self.content_rng(a, n);
        let mut text = text::message_text(&mut rng);
        let mut pii = None;
        if chance(&mut rng, self.cfg.pii_rate) {
            let kind = PiiKind::IN_CHATS[below(&mut rng, PiiKind::IN_CHATS.len() as u64) as usize];
            let (sentence, p) = text::pii_sentence(&mut rng, kind);
            pii = Some(p.shifted(text.len() + 1));
            text = format!("{text} {sentence}");
        }
        let at = self.at_us(a, n);
        event.kind = EventKind::Edit;
        event.edit_version = (at / 1_000_000) as u64;
        event.text = text;
        event.observed_at_us = at;
        event.event_id = event.expected_id();
        PositionEvents {
            position: n,
            kind: PositionKind::Edit { of },
            events: vec![event],
            pii,
        }
    }

    /// An earlier message of the same block to edit (not a service message, not a login code).
    fn edit_target(&self, a: &Account, n: u64) -> Option<u64> {
        let (block, offset) = (n / BLOCK, n % BLOCK);
        if offset == 0 {
            return None;
        }
        let perm = Perm::new(a.key, block);
        let editable = |o: &u64| {
            matches!(self.layout.slot(perm.forward(*o)),
                Slot::Message(c) if self.layout.chats[c].role != ChatRole::TelegramService)
        };
        let reach = offset.min(EDIT_REACH);
        let start = offset - 1 - hash2(a.key ^ SALT_EDIT, n) % reach;
        (0..=start)
            .rev()
            .chain(start + 1..offset)
            .find(editable)
            .map(|o| block * BLOCK + o)
    }

    fn delete(&self, a: &Account, n: u64, ordinal: u64) -> PositionEvents {
        let block = n / BLOCK;
        if block == 0 {
            return quiet(n);
        }
        let prev = Perm::new(a.key, block - 1);
        let consuming = self.layout.consuming();
        let pairs = (consuming.end - consuming.start) / 2;
        // Delete slot `ordinal` owns the pair of adjacent id-consuming slots `pair` (usually one
        // chat): an injective map, so no message is deleted twice.
        let pair = (hash2(a.key ^ SALT_DELETE, block) + ordinal * self.layout.delete_step) % pairs;
        let target = |index: u64| {
            let chat = self.layout.chat_of(index);
            ((block - 1) * BLOCK + prev.inverse(index), chat)
        };
        let first = target(consuming.start + 2 * pair);
        let second = target(consuming.start + 2 * pair + 1);
        let mut targets = vec![first];
        let same_update = |x: usize, y: usize| {
            let (rx, ry) = (self.layout.chats[x].role, self.layout.chats[y].role);
            x == y || (rx.uses_account_counter() && ry.uses_account_counter())
        };
        if hash2(a.key ^ SALT_DELETE, n) % 100 < SECOND_DELETE_PERCENT
            && same_update(first.1, second.1)
        {
            targets.push(second);
        }
        let at = self.at_us(a, n);
        let mut events: Vec<Event> = targets
            .iter()
            .map(|&(p, c)| {
                let chat = self.chat_info(a, c).chat();
                let message_id = self.message_id(a, c, p).to_string();
                Event {
                    schema_version: SCHEMA_VERSION,
                    event_id: event_id(&a.id, &chat.id, &message_id, EventKind::Delete, 0),
                    account_id: a.id.clone(),
                    kind: EventKind::Delete,
                    chat,
                    sender: None,
                    message_id,
                    topic_id: None,
                    reply_to: None,
                    sent_at_us: at,
                    edit_version: 0,
                    text: String::new(),
                    media: None,
                    source: Source::Live,
                    observed_at_us: at,
                }
            })
            .collect();
        events.sort_by_key(|e| e.message_id.parse::<u64>().unwrap_or(0));
        targets.sort_unstable();
        PositionEvents {
            position: n,
            kind: PositionKind::Delete {
                of: targets.into_iter().map(|(p, _)| p).collect(),
            },
            events,
            pii: None,
        }
    }

    /// The position a re-delivery at `n` repeats: up to [`DUPLICATE_REACH`] back, following
    /// re-deliveries to their origin.
    fn duplicate_origin(&self, a: &Account, n: u64) -> Option<u64> {
        let mut m = n;
        loop {
            if m == 0 {
                return None;
            }
            m = m - 1 - hash2(a.key ^ SALT_DUP, m) % m.min(DUPLICATE_REACH);
            if self.slot_at(a, m) != Slot::Duplicate {
                return Some(m);
            }
        }
    }
}

fn quiet(n: u64) -> PositionEvents {
    PositionEvents {
        position: n,
        kind: PositionKind::Quiet,
        events: Vec::new(),
        pii: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feistel_is_a_permutation_and_inverse_undoes_it() {
        let perm = Perm::new(42, 7);
        let mut seen = vec![false; BLOCK as usize];
        for o in 0..BLOCK {
            let x = perm.forward(o);
            assert!(x < BLOCK);
            assert!(!seen[x as usize]);
            seen[x as usize] = true;
            assert_eq!(perm.inverse(x), o);
        }
    }

    #[test]
    fn both_ways_of_counting_agree() {
        let perm = Perm::new(9, 3);
        for range in [0..10, 100..700, 1000..1024] {
            for offset in [0, 1, 5, 11, 600, 1023, 1024] {
                let naive = (0..offset)
                    .filter(|&o| range.contains(&perm.forward(o)))
                    .count() as u64;
                assert_eq!(perm.count_before(&range, offset), naive);
            }
        }
    }

    #[test]
    fn layout_fills_the_block_and_gives_every_chat_a_message_slot() {
        let cfg = SimulatorConfig {
            chats_per_account: 20,
            ..SimulatorConfig::default()
        };
        let layout = Layout::new(&cfg);
        let last = layout.chats.last().map(|s| s.all().end);
        assert_eq!(last, Some(BLOCK));
        assert!(layout.chats.iter().all(|s| s.messages >= 1));
        assert_eq!(layout.chats.len(), 20);
        let pairs = (layout.consuming().end - layout.consuming().start) / 2;
        assert_eq!(gcd(layout.delete_step, pairs), 1);
        assert!(
            layout.deletes <= pairs,
            "every delete slot owns its own pair"
        );
    }
}
